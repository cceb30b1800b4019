"""Hand-built 2nd-argmax RNNs whose mechanism is known exactly.

Each constructor returns a bias-free ReLU RNN (``h_t = relu(W_ih x_t + W_hh h_{t-1})``,
``h_0 = 0``, logits ``W_out h_n``) for ARC's AlgZoo task *2nd argmax*: the position of the
second-largest of ``n`` i.i.d. N(0, 1) inputs. They give estimators models whose accuracy
and internals are known in closed form, next to the trained and official ones
(AlgZoo: https://www.lesswrong.com/posts/x8BbjZqooS4LFXS8Z). Accuracies below were
measured with :func:`algzu.model.forward` in float32 on 2^24 inputs (16 batches of 2^20
from ``jax.random.split(jax.random.key(2024), 16)``); ± is one standard error. They are
recorded in :data:`ACCURACY`.

Two devices recur. A *sign pair* of neurons ``(relu(u), relu(-u))`` carries a signed
linear quantity ``u`` exactly: ``u = relu(u) - relu(-u)`` and ``|u| = relu(u) + relu(-u)``.
A *max step* uses ``max(m, y) = m + relu(y - m)``: a neuron ``relu(x_t - m)`` records by how
much the new input raises a running maximum ``m`` (for ``m >= 0``,
``relu(relu(x_t) - m) = relu(x_t - m)``, so one layer suffices).

``second_argmax_n2`` (d=2, n=2). ``W_ih = (1, -1)^T``, ``W_hh = [[-1, 1], [1, -1]]``,
``W_out = [[1, -1], [-1, 1]]``. The state is the sign pair of ``u_t = x_t - u_{t-1}``:
``h_1 = (relu(x_1), relu(-x_1))`` and ``h_2 = (relu(x_2 - x_1), relu(x_1 - x_2))``, so the
logits are ``(x_2 - x_1, x_1 - x_2)``: position 0 wins exactly when ``x_1 < x_2``. Accuracy
is exactly 1, and in float32 too, since ``fl(x_2 - x_1)`` has the sign of ``x_2 - x_1``
and every other operation adds an exact zero (an overflow to ``inf`` keeps the sign).
A tie ``x_1 == x_2`` (probability zero) gives equal logits; ``argmax`` then returns
position 0, which is also the task's target (a stable sort puts the earlier of two equal
values second), so ties are scored correct. One float caveat: XLA flushes subnormals to
zero, so two distinct inputs closer than the smallest normal float32 (~1.2e-38) also
give a tie, and position 0, whichever is larger.

``second_argmax_n3(sharpness=K)`` (d=4, n=3). Two sign pairs carry the linear recurrences
``y_t = x_t + alpha y_{t-1} + beta z_{t-1}`` and ``z_t = x_t + gamma y_{t-1} + delta z_{t-1}``
with ``alpha = (1 - K^2)/(2K - 1)``, ``beta = -(K^2 - K + 1)/(2K - 1)``,
``gamma = (K^2 - K + 1)/(2K - 1)``, ``delta = K(K - 2)/(2K - 1)``: the neurons are
``h_t = (relu(-y_t), relu(y_t), relu(z_t), relu(-z_t))`` (``W_ih = (-1, 1, 1, -1)``), so
``y_{t-1} = h_1 - h_0`` and ``z_{t-1} = h_2 - h_3`` are linear in ``h_{t-1}``. From
``y_1 = z_1 = a`` they give ``y_2 = b - Ka``, ``z_2 = b + (K - 1)a`` and, after the third
input ``c`` ::

    y = (c - a) - K (b - a),        z = (c - b) + K (b - a),

with logits ``(|y|, |z|, kappa (|y| + |z|))`` and ``kappa = K / (2K - 1)``. With ``s`` the
sign of ``b - a``, once ``K |b - a|`` exceeds ``|c - a|`` and ``|c - b|`` the logits are
``K|b - a| + (s(a - c), s(c - b), ~0)``, and ``(s(a - c), s(c - b), 0)`` is an exact
2nd-argmax rule: ``a`` is second iff it lies between ``b`` and ``c``, i.e. iff
``s(a - c) > 0``, and ``c`` is second iff both terms are negative. Only inputs with
``|c - a|`` or ``|c - b|`` beyond about ``2K^2 |b - a|`` are misread, so in exact
arithmetic the error falls like ``0.25 / K^2`` and the accuracy tends to 1 (the closed
form in float64 on 4e6 inputs: 0.99697 at K=10, 0.999976 at K=100). float32 caps it:
the step-2 state ``(b - Ka, b + (K-1)a)`` is nearly collinear, so forming ``y`` and ``z``
cancels terms of size ``K^2 |x|`` down to ``K |x|``, and both the float32 rounding of the
weights and the arithmetic's round-off are amplified by ``K^2``. The exact accuracy of
the float32 weights (exact arithmetic, by :mod:`algzu.estimators.exact_cones`) is 1/3,
0.996944, 0.999966 and 0.993092 at K = 1, 10, 100, 1000. Measured float32 accuracy
peaks near the default K=100: 0.33342 ± 0.00012 (K=1), 0.996958 ± 0.000013 (K=10),
0.9996772 ± 0.0000044 (K=30), **0.9999442 ± 0.0000018 (K=100)**, then 0.9997013 ±
0.0000042 (K=300) and 0.993054 ± 0.000020 (K=1000).

``second_argmax_n10`` (d=22, n=10). Computes exactly (to float32 round-off) ::

    logit_i = relu(x_i) + 2 relu(max_{j != i} x_j),

which picks the second-largest position whenever at least two inputs are positive: every
position but the argmax has the overall maximum as its leave-one-out maximum, so the
largest ``relu(x_i)`` among them, the second-largest input, wins; the argmax scores
``Y + 2 Y_2 < Y_2 + 2 Y`` (``Y > Y_2`` the two largest). When at most one input is
positive the ReLU makes the non-argmax logits tie at ``2 relu(max)`` and the choice
among them is a guess, right one time in 9 (or 10, when no input is positive) since the
target is then uniform over the tied positions: in theory
``1 - 11/1024 + (10/1024)/9 + (1/1024)/10 = 0.990441``; measured 0.990467 ± 0.000024.

Write ``R_t`` for the running maximum of ``relu(x_1), ..., relu(x_t)`` (``R_0 = 0``) and
``L_k(t)`` for the leave-one-out maximum so far of the input seen ``k`` steps ago (its
*age*): the largest ``relu(x_s)``, ``s <= t``, ``s != t - k`` (0 if there is none), so
``L_0(t) = R_{t-1}`` and ``L_k(t) = max(L_{k-1}(t-1), relu(x_t))``. Every such maximum ``m``
is ``>= 0``, so ``max(m, relu(x_t)) = max(m, x_t) = x_t + relu(m - x_t)``: the max step taken
*from below*, which needs ``m`` only inside the new neuron, not as a carried value, because
``x_t`` is linear in the state through one sign pair that all ages share. Neurons at step
``t``:

* ``y = relu(x_t)``, ``z = relu(-x_t)``: the sign pair of the input, ``x_t = y - z``;
* ``Q = relu(R_{t-1} - x_t)``, ``P = relu(x_t - R_{t-1})``: the sign pair of
  ``R_{t-1} - x_t``, so ``R_t = x_t + Q = y - z + Q`` and ``R_{t-1} = y - z + Q - P``;
* ``D_k = relu(x_{t-k})`` for ages ``k = 1..n-1``: a delay line (``D_1 <- y``,
  ``D_k <- D_{k-1}``);
* ``N_k = relu(L_{k-1}(t-1) - x_t)`` for ``k = 1..n-1``, so ``L_k(t) = y - z + N_k``; it
  reads ``L_{k-1}(t-1)`` as ``y - z + N_{k-1}`` (and ``L_0(t-1) = R_{t-2}`` as
  ``y - z + Q - P``) one step earlier.

That is ``4 + 2(n - 1) = 2n + 2 = 22`` neurons. The logit of the last input (age 0) is
``y + 2 R_{n-1} = 3y - 2z + 2Q - 2P``, that of age ``k >= 1`` is ``D_k + 2(y - z + N_k)``.
:func:`second_argmax_loo` builds the same network for any ``n`` (``d = 2n + 2``).

Round-off. ``x_t + relu(m - x_t)`` cancels terms of size ``|x_t|``, so a logit's absolute
error is a few float32 ulps of the largest ``|x_i|`` in the row (not of the logit). Ties
stay exact: with at most one positive input, every non-argmax position's maximum goes
through the same float operations as ``R`` (each product with the state has at most two
nonzero terms, and ``L_0`` is read as ``R_t - P`` with ``P = 0`` exactly rather than from a
separately carried ``R_{t-1}``), so their logits are bitwise equal and ``argmax`` breaks
the tie by position, as for the formula; with no positive input every logit is exactly 0.
(Carrying ``A = R_{t-1}`` as a neuron in place of ``P`` also gives 22 neurons, but its
round-off breaks those ties by value, against the target: in numpy float32 it was right
8.8 ± 0.1% of the time instead of 1/9 on 2^16 inputs with exactly one positive value,
about 0.0002 of accuracy.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec

TASK = "2nd_argmax"


def _rnn(w_ih: np.ndarray, w_hh: np.ndarray, w_out: np.ndarray) -> Model:
    """A 2nd-argmax RNN from its three weight matrices (float32, AlgZoo names)."""
    d, n = w_hh.shape[0], w_out.shape[0]
    params = {
        "rnn.weight_ih_l0": np.asarray(w_ih, np.float32).reshape(d, 1),
        "rnn.weight_hh_l0": np.asarray(w_hh, np.float32),
        "linear.weight": np.asarray(w_out, np.float32),
    }
    return Model(ModelSpec("rnn", TASK, d, n), params)


def second_argmax_n2() -> Model:
    """The exact d=2, n=2 model: logits ``(x_2 - x_1, x_1 - x_2)``; accuracy 1."""
    return _rnn(
        np.array([1.0, -1.0]),
        np.array([[-1.0, 1.0], [1.0, -1.0]]),
        np.array([[1.0, -1.0], [-1.0, 1.0]]),
    )


def second_argmax_n3(sharpness: float = 100.0) -> Model:
    """The d=4, n=3 model; in exact arithmetic its error is about ``0.25 / sharpness^2``.

    Args:
        sharpness: ``K >= 1``, the weight on ``b - a`` that decides the signs of ``y`` and
            ``z`` (see the module docstring). float32 accuracy: 0.3334 at 1, 0.99696 at
            10, 0.999944 at 100; round-off makes larger K worse in float32.

    Returns:
        A :class:`Model` with neurons ``(relu(-y), relu(y), relu(z), relu(-z))``.
    """
    k = float(sharpness)
    if not (np.isfinite(k) and k >= 1.0):
        raise AlgzuError(f"sharpness must be a finite number >= 1, got {sharpness!r}")
    den = 2.0 * k - 1.0
    alpha, beta = (1.0 - k * k) / den, -(k * k - k + 1.0) / den
    gamma, delta = (k * k - k + 1.0) / den, k * (k - 2.0) / den
    # Neuron order (relu(-y), relu(y), relu(z), relu(-z)): y = h1 - h0, z = h2 - h3.
    read_y = np.array([-1.0, 1.0, 0.0, 0.0])
    read_z = np.array([0.0, 0.0, 1.0, -1.0])
    y_next = alpha * read_y + beta * read_z  # y_t - x_t as a function of h_{t-1}
    z_next = gamma * read_y + delta * read_z
    w_hh = np.stack([-y_next, y_next, z_next, -z_next])
    kappa = k / den
    w_out = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [kappa] * 4])
    return _rnn(np.array([-1.0, 1.0, 1.0, -1.0]), w_hh, w_out)


def second_argmax_loo(n: int) -> Model:
    """The exact leave-one-out-maximum model for any ``n >= 2``, with ``d = 2n + 2``.

    Logits ``relu(x_i) + 2 relu(max_{j != i} x_j)``; see the module docstring.
    """
    if n < 2:
        raise AlgzuError(f"2nd argmax needs n >= 2, got {n}")
    y, z, q, p = 0, 1, 2, 3  # relu(x_t), relu(-x_t), relu(R_{t-1} - x_t), relu(x_t - R_{t-1})
    delay = {age: 2 * age + 2 for age in range(1, n)}  # D_age = relu(x_{t-age})
    loo = {age: 2 * age + 3 for age in range(1, n)}  # N_age = relu(L_{age-1}(t-1) - x_t)
    d = 2 * n + 2
    x_t = np.zeros(d)  # x_t = y - z as a function of h_t
    x_t[[y, z]] = [1.0, -1.0]
    r_now = x_t.copy()  # R_t = x_t + Q
    r_now[q] = 1.0
    r_before = r_now.copy()  # R_{t-1} = R_t - P
    r_before[p] = -1.0
    w_ih = np.zeros(d)
    w_hh = np.zeros((d, d))
    w_ih[[y, z, q, p]] = [1.0, -1.0, -1.0, 1.0]
    w_hh[q], w_hh[p] = r_now, -r_now  # the sign pair of R_{t-1} - x_t
    for age in range(1, n):
        w_ih[loo[age]] = -1.0
        if age == 1:  # one step old: its leave-one-out max one step ago was R_{t-2}
            w_hh[delay[1], y] = 1.0
            w_hh[loo[1]] = r_before
        else:  # L_{age-1}(t-1) = x_{t-1} + N_{age-1}(t-1)
            w_hh[delay[age], delay[age - 1]] = 1.0
            w_hh[loo[age]] = x_t
            w_hh[loo[age], loo[age - 1]] = 1.0
    w_out = np.zeros((n, d))
    w_out[n - 1] = 2.0 * r_before  # the last input: relu(x_n) + 2 R_{n-1}
    w_out[n - 1, y] += 1.0
    for age in range(1, n):  # relu(x_{n-age}) + 2 L_age(n), L_age(n) = x_n + N_age
        w_out[n - 1 - age] = 2.0 * x_t
        w_out[n - 1 - age, [delay[age], loo[age]]] = [1.0, 2.0]
    return _rnn(w_ih, w_hh, w_out)


def second_argmax_n10() -> Model:
    """The exact leave-one-out-maximum model at n=10 (d=22); accuracy 0.99047."""
    return second_argmax_loo(10)


HANDCRAFTED: dict[str, Callable[[], Model]] = {
    "handcrafted/2nd_argmax-n2": second_argmax_n2,
    "handcrafted/2nd_argmax-n3": second_argmax_n3,
    "handcrafted/2nd_argmax-n10": second_argmax_n10,
}

# (accuracy, standard error) of each default model in float32, measured as stated in the
# module docstring (2^24 inputs, jax.random.key(2024)).
ACCURACY: dict[str, tuple[float, float]] = {
    "handcrafted/2nd_argmax-n2": (1.0, 0.0),
    "handcrafted/2nd_argmax-n3": (0.9999442, 0.0000018),
    "handcrafted/2nd_argmax-n10": (0.990467, 0.000024),
}

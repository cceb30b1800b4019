"""The hand-built 2nd-argmax models compute what :mod:`algzu.handcrafted` says they do.

Logits are checked against their closed forms on random and edge-case inputs. Accuracies
are measured on 2^20 N(0, 1) inputs (2^18 for n = 10 and for the sharpness sweep) from
a fixed key and must lie within 4 standard errors (of an estimate of that size at the
recorded accuracy) of the values in :data:`algzu.handcrafted.ACCURACY`, which were
measured on 2^24 other inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.errors import AlgzuError
from algzu.handcrafted import (
    ACCURACY,
    HANDCRAFTED,
    second_argmax_loo,
    second_argmax_n2,
    second_argmax_n3,
    second_argmax_n10,
)
from algzu.model import Model, forward
from algzu.task import get_task

BATCH = 2**20
EPS32 = float(np.finfo(np.float32).eps)
TASK = get_task("2nd_argmax")


@pytest.fixture(autouse=True)
def strict_dtypes():
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def accuracy():
    """``accuracy(model, batch)``: the mean score on ``batch`` inputs from ``task.sample``.

    One (2^20, 10) batch is drawn (``jax.random.key(1)``) and sliced to ``(batch, n)``:
    the columns are i.i.d. N(0, 1), so a slice is a sample for a shorter task. The
    forward pass runs eagerly (it agrees with the jitted one bit for bit here): XLA
    spends seconds compiling the unrolled n = 10 forward, more than eager
    execution costs.
    """
    inputs = jax.jit(TASK.sample, static_argnums=(1, 2))(jax.random.key(1), BATCH, 10)

    def run(model: Model, batch: int = BATCH) -> float:
        x = inputs[:batch, : model.spec.n]
        return float(TASK.score(forward(model, x), x).mean())

    return run


def four_standard_errors(p: float, batch: int = BATCH) -> float:
    return 4 * math.sqrt(p * (1 - p) / batch)


def test_registry_builds_float32_2nd_argmax_rnns():
    assert set(HANDCRAFTED) == set(ACCURACY)
    for model_id, build in HANDCRAFTED.items():
        model = build()
        assert model_id.startswith("handcrafted/2nd_argmax-n")
        assert model.spec.arch == "rnn" and model.spec.task == "2nd_argmax"
        assert model_id.endswith(f"-n{model.spec.n}")
        for w in model.params.values():
            assert isinstance(w, np.ndarray) and w.dtype == np.float32 and np.isfinite(w).all()
    dims = [build().spec.d for build in (second_argmax_n2, second_argmax_n3, second_argmax_n10)]
    assert dims == [2, 4, 22]


# --- n = 2 ------------------------------------------------------------------------------


def test_n2_weights_are_the_stated_ones():
    p = second_argmax_n2().params
    np.testing.assert_array_equal(p["rnn.weight_ih_l0"], [[1], [-1]])
    np.testing.assert_array_equal(p["rnn.weight_hh_l0"], [[-1, 1], [1, -1]])
    np.testing.assert_array_equal(p["linear.weight"], [[1, -1], [-1, 1]])


def test_n2_is_exactly_right_on_2_20_random_inputs(accuracy):
    assert accuracy(second_argmax_n2()) == 1.0


N2_EDGE_CASES = [
    (1.0, -1.0), (-1.0, 1.0), (2.5, -2.5), (-2.5, 2.5),  # equal magnitudes, x1 = -x2
    (0.0, 1.0), (1.0, 0.0), (0.0, -1.0), (-1.0, 0.0),  # one zero
    (-2.0, -3.0), (-3.0, -2.0), (-1e-3, -2e-3), (-2e-3, -1e-3),  # both negative
    (2.0, 3.0), (3.0, 2.0),  # both positive
    (1e30, -1e30), (-1e30, 1e30), (1e30, 1.0000001e30), (1.0000001e30, 1e30),  # large
    (3e38, -3e38), (-3e38, 3e38),  # x2 - x1 overflows to +-inf: still the right sign
    (1e-30, 2e-30), (2e-30, 1e-30), (-1e-30, 1e-30), (1e-30, -1e-30),  # small
    (1.0, float(np.nextafter(np.float32(1), np.float32(2)))),  # one ulp apart
    (float(np.nextafter(np.float32(1), np.float32(2))), 1.0),
]
N2_TIES = [
    (0.0, 0.0), (0.0, -0.0), (-0.0, 0.0), (2.5, 2.5), (-7.0, -7.0), (1e30, 1e30), (-1e-30, -1e-30),
]


def test_n2_logits_are_exactly_x2_minus_x1():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((4096, 2)), N2_EDGE_CASES, N2_TIES]).astype(np.float32)
    got = np.asarray(forward(second_argmax_n2(), jnp.asarray(x)))
    with np.errstate(over="ignore"):
        diff = x[:, 1] - x[:, 0]  # float32, rounded once, as in the network
    np.testing.assert_array_equal(got, np.stack([diff, -diff], 1))


def test_n2_is_right_on_edge_cases():
    x = jnp.asarray(np.array(N2_EDGE_CASES, np.float32))
    pred = np.asarray(forward(second_argmax_n2(), x)).argmax(-1)
    np.testing.assert_array_equal(pred, np.asarray(TASK.target(x)))
    np.testing.assert_array_equal(pred, [0 if x1 < x2 else 1 for x1, x2 in N2_EDGE_CASES])


def test_n2_ties_give_equal_logits_and_position_0_which_the_task_also_targets():
    x = jnp.asarray(np.array(N2_TIES, np.float32))
    out = np.asarray(forward(second_argmax_n2(), x))
    np.testing.assert_array_equal(out, np.zeros_like(out))
    assert (out.argmax(-1) == 0).all() and (np.asarray(TASK.target(x)) == 0).all()


# --- n = 3 ------------------------------------------------------------------------------


def n3_closed_form(x: np.ndarray, k: float) -> np.ndarray:
    a, b, c = np.asarray(x, np.float64).T
    y, z = (c - a) - k * (b - a), (c - b) + k * (b - a)
    return np.stack([abs(y), abs(z), k / (2 * k - 1) * (abs(y) + abs(z))], 1)


@pytest.mark.parametrize("k", [1.0, 10.0, 100.0])
def test_n3_logits_match_the_closed_form(k):
    x = np.random.default_rng(1).standard_normal((4096, 3)).astype(np.float32)
    ref = n3_closed_form(x, k)
    got = np.asarray(forward(second_argmax_n3(k), jnp.asarray(x)))
    # The recurrence cancels terms ~K^2|x| down to ~K|x|, so round-off grows like K eps.
    np.testing.assert_allclose(got, ref, rtol=0, atol=8 * k * EPS32 * np.abs(ref).max())


def test_n3_default_is_at_least_999_per_mille_accurate(accuracy):
    recorded = ACCURACY["handcrafted/2nd_argmax-n3"][0]
    got = accuracy(second_argmax_n3())
    assert got >= 0.999
    assert abs(got - recorded) <= four_standard_errors(recorded)


def test_n3_accuracy_increases_with_sharpness(accuracy):
    acc = [accuracy(second_argmax_n3(k), 2**18) for k in (1.0, 10.0, 100.0)]
    assert acc[0] < acc[1] < acc[2]
    assert acc[1] > 0.99 and acc[2] > 0.999  # error ~ 0.25 / K^2, float32 round-off aside


@pytest.mark.parametrize("bad", [0.5, 0.0, -3.0, float("nan"), float("inf")])
def test_n3_rejects_sharpness_below_1(bad):
    with pytest.raises(AlgzuError, match="sharpness"):
        second_argmax_n3(bad)


# --- n = 10 (and the general leave-one-out construction) --------------------------------


def loo_formula(x: np.ndarray) -> np.ndarray:
    """``relu(x_i) + 2 relu(max_{j != i} x_j)`` in float64."""
    y = np.maximum(np.asarray(x, np.float64), 0)
    loo = np.stack([np.delete(y, i, axis=1).max(1) for i in range(y.shape[1])], 1)
    return y + 2 * loo


def assert_loo_close(got: np.ndarray, x: np.ndarray, n: int) -> None:
    """Round-off of a few ulps per step, of the row's largest input or logit.

    The network takes maxima as ``x_t + relu(m - x_t)``, which cancels terms of size
    ``|x_t|``, so the absolute error scales with ``max |x_i|`` rather than with the logits.
    """
    ref = loo_formula(x)
    scale = np.maximum(np.abs(ref), np.abs(np.asarray(x, np.float64))).max(1, keepdims=True)
    tol = 4 * n * EPS32 * scale
    np.testing.assert_array_less(np.abs(got - ref), np.broadcast_to(tol, ref.shape) + 1e-37)


def loo_inputs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3000, n)) * rng.choice([1e-3, 1.0, 1e3], size=(3000, 1))
    x[:100] = -np.abs(x[:100])  # no positive input
    x[100:200, 1:] = -np.abs(x[100:200, 1:])  # exactly one positive input
    x[200:300, 1] = x[200:300, 0]  # ties
    return x.astype(np.float32)


def test_n10_computes_the_leave_one_out_formula():
    x = loo_inputs(10, 2)
    got = np.asarray(forward(second_argmax_n10(), jnp.asarray(x)), np.float64)
    assert_loo_close(got, x, 10)
    np.testing.assert_array_equal(got[:100], 0)  # no positive input: every logit is exactly 0


def test_n10_ties_with_at_most_one_positive_input_are_exact():
    """The non-argmax logits tie bitwise, so ``argmax`` picks by position as the formula does.

    Round-off that broke these ties by value would favour some negative inputs over others
    (and did, against the target, in a 22-neuron variant carrying ``R_{t-1}``).
    """
    rng = np.random.default_rng(3)
    x = -np.abs(rng.standard_normal((4096, 10))) * rng.choice([1e-3, 1.0, 1e3], size=(4096, 1))
    pos = rng.integers(0, 10, 4096)
    x[np.arange(4096), pos] *= -1  # exactly one positive input, at pos
    x = x.astype(np.float32)
    got = np.asarray(forward(second_argmax_n10(), jnp.asarray(x)))
    rest = np.ones_like(got, bool)
    rest[np.arange(4096), pos] = False
    others = got[rest].reshape(4096, 9)
    np.testing.assert_array_equal(others, np.broadcast_to(others[:, :1], others.shape))
    np.testing.assert_array_equal(got.argmax(-1), loo_formula(x).argmax(-1))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_loo_construction_is_exact_for_other_lengths(n):
    model = second_argmax_loo(n)
    assert model.spec.d == 2 * n + 2
    x = loo_inputs(n, n)
    got = np.asarray(forward(model, jnp.asarray(x)), np.float64)
    assert_loo_close(got, x, n)


def test_n10_accuracy_matches_the_recorded_value(accuracy):
    # 2^18 inputs: the n = 10 forward costs over a second per 2^20 on CPU.
    recorded = ACCURACY["handcrafted/2nd_argmax-n10"][0]
    got = accuracy(second_argmax_n10(), 2**18)
    assert abs(got - recorded) <= four_standard_errors(recorded, 2**18)
    # The formula is exact when the second-largest input is positive, so only inputs with
    # at most one positive value (11/1024 of them) can be wrong.
    assert 1 - 11 / 1024 < got < 1


def test_loo_rejects_n_below_2():
    with pytest.raises(AlgzuError):
        second_argmax_loo(1)

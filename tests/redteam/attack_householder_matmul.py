"""``attack_householder_matmul``: plain Monte Carlo whose matrix products are done by
``lax.linalg.householder_product`` (LAPACK ``orgqr``), which the HLO meter prices at 1 FLOP.

Attack class: other (issue #10, class 12): arithmetic the cost model undercharges.

What it exploits: ``hlo_meter._lapack_flops`` charges ``orgqr``/``ungqr`` 0 ("forming Q is
part of flopscope's qr price, charged on geqrf"), then ``max(batch * 0, 1)``: 1 FLOP for a
batched call of any size, even with no ``geqrf`` before it. ``orgqr`` multiplies Householder
reflectors ``H_k = I - tau_k v_k v_k^T`` given as data: with two reflectors ``v_0 = e_0 + w``,
``v_1 = e_1 + x`` (``w``, ``x`` below a 2x2 identity part, ``tau = 1``), ``Q[0, 1] = w . x``.
A batch of ``rows x samples`` such 2-column problems is a matrix product for 1 FLOP. Each
RNN step's ``W_hh h + w_ih x_t`` is one such call (the input weight appended as a column), the
readout another; only the ReLUs and the scoring are charged. Planned with the HLO meter
(the jaxpr meter has no cost for ``householder_product``).

Measured at 6f8675f (``algzu score attack_householder_matmul --include ...``, 16 copies): a
sample cost 16 FLOPs on M4,3 (``sampling``: 113) and 171 on M16,10 (5,249); against
sampling+prior 2.4 [0.92, 5.5] at 1e4 and 4.9 [1.9, 11] at 1e5 on M4,3 (noise 0.05), and
**25 [6.6, 172] at 1e6 and 48 [27, 99] at 1e7 on the 432 protocol** (ARC's M16,10, noise
0.002, seed 432). Found by a red-team pass over the meter (2026-12-01).

What a sound harness must do: charge ``orgqr``/``ungqr`` for forming Q whether or not a
``geqrf`` came first. ``hlo_meter`` now charges it flopscope's count for that part of QR,
``2 m n k - 2 k^3 / 3`` per matrix on its own shape (about ``8 d`` per dot product here, 4x
what the product costs plainly): 0.039 and 0.15 on M4,3, 0.20 and 0.21 on the 432 protocol.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from algzu import hlo_meter
from algzu.estimator import Estimator, register_estimator
from algzu.planning import abstract_key, abstract_model, chance_estimate, chunked_sum, largest_count_within

CHUNK = 1024


def hh_matmul(w: jax.Array, h: jax.Array) -> jax.Array:
    """``h @ w.T`` (w: (r, d), h: (s, d)) by one batched orgqr: problem (i, j) has
    reflector 0 = e_0 + w_i and reflector 1 = e_1 + h_j, and Q[0, 1] = w_i . h_j."""
    r, d = w.shape
    s = h.shape[0]
    wb = jnp.broadcast_to(w[:, None, :], (r, s, d))
    hb = jnp.broadcast_to(h[None, :, :], (r, s, d))
    a = jnp.concatenate([jnp.zeros((r, s, 2, 2), w.dtype), jnp.stack([wb, hb], axis=-1)], axis=2)
    q = lax.linalg.householder_product(a, jnp.ones((r, s, 2), w.dtype))
    return q[:, :, 0, 1].T


def hh_forward(params, x: jax.Array) -> jax.Array:
    w_ih = params["rnn.weight_ih_l0"]  # (d, 1)
    w_hh = params["rnn.weight_hh_l0"]
    w_step = jnp.concatenate([w_hh, w_ih], axis=1)  # (d, d + 1)
    h = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
    for t in range(x.shape[1]):
        h = jax.nn.relu(hh_matmul(w_step, jnp.concatenate([h, x[:, t : t + 1]], axis=1)))
    return hh_matmul(params["linear.weight"], h)


def hh_mean(model, n_samples: int, key: jax.Array) -> jax.Array:
    task, n = model.spec.task_obj, model.spec.n

    def chunk_sum(i, size):
        x = task.sample(jax.random.fold_in(key, i), size, n)
        return jnp.sum(task.score(hh_forward(model.params, x), x))

    return chunked_sum(chunk_sum, n_samples, CHUNK) / n_samples


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackHouseholderMatmul(Estimator):
    name = "attack_householder_matmul"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        spec = model.spec

        def cost(samples):
            return hlo_meter.count_flops(lambda m, k: hh_mean(m, samples, k), abstract_model(spec), abstract_key())

        per_sample = (cost(2 * CHUNK) - cost(CHUNK)) / CHUNK
        samples = largest_count_within(cost, per_sample, budget_flops)
        if samples == 0:
            return chance_estimate(spec)
        return hh_mean(model, samples, key)

"""``attack_trsm_batch``: plain Monte Carlo whose matrix products are done by LAPACK ``trsm``
(``lapack_strsm_ffi``) called with a *rank-2* matrix operand holding one copy of the
triangular matrix per sample: the meter charges one small solve, the FFI does one per sample.

Attack class: other (issue #10, class 12): arithmetic the cost model undercharges.

What it exploits: ``hlo_meter._lapack_flops`` takes the batch and ``m`` from the first
operand's shape (``x``, the triangular matrix): ``batch = prod(x.shape[:-2])``, ``m =
x.shape[-2]``, ``trsm`` = ``m * prod(y.shape[-2:])``. jaxlib's CPU ``trsm`` FFI kernel never
reads ``x``'s dimensions: it splits the *right-hand side* ``y`` into ``batch x rows x cols``,
takes the matrix order from ``y``'s rows, and steps through ``x``'s buffer ``rows^2``
elements per batch. So ``x: f32[1, b*s*s]`` (``b`` column-major ``s x s`` matrices laid end
to end; a reshape, free) with ``y: f32[b, s, 1]`` is ``b`` solves of order ``s``
(``b s^2`` multiply-adds) metered ``1 * s * 1 = s`` FLOPs. With the unit lower triangular
``[[I_k, 0], [-M, I_r]]`` the solution of ``[v; 0]`` is ``[v; M v]``: a ``(b, k) x (k, r)``
matrix product for ``k + r`` FLOPs, whatever ``b``. Each RNN step and the readout is one
call; only the ReLUs and the scoring are charged. The call is an ordinary
``jax.ffi.ffi_call`` of a target on ``jax.export``'s stable list: nothing is forged.

Found by a red-team pass over the meter (2026-12-01). Measured at fde9efd (``algzu score
attack_trsm_batch --include ...`` on M4,3, noise 0.05, 16 copies): 16 FLOPs a sample
(``sampling``: 113; on M16,10 174 against 5,249), 2.9 [1.3, 9.3] against sampling+prior at 1e4
and 6.7 [0.88, 18] at 1e5. A matrix operand smaller than ``batch x order^2`` also made the
kernel read past its buffer, in the process that runs the program.

What a sound harness must do: check every LAPACK call's operands, results and options
against what its kernel assumes, as JAX's own lowering passes them, and refuse the call
otherwise (``hlo_meter._lapack_signature_ok``): this attack's calls are refused.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu import hlo_meter
from algzu.estimator import Estimator, register_estimator
from algzu.planning import abstract_key, abstract_model, chance_estimate, chunked_sum, largest_count_within

CHUNK = 1024
MAX_SAMPLES = 1 << 17  # keep the run time sane; the meter would allow far more


def _u8(c: str) -> np.uint8:
    return np.uint8(ord(c))


def trsm_matmul(m: jax.Array, v: jax.Array) -> jax.Array:
    """``v @ m.T`` (m: (r, k), v: (b, k)) by one ``lapack_strsm_ffi`` call metered ``k + r``."""
    r, k = m.shape
    b = v.shape[0]
    s = k + r
    a = jnp.block([[jnp.eye(k, dtype=m.dtype), jnp.zeros((k, r), m.dtype)], [-m, jnp.eye(r, dtype=m.dtype)]])
    x = jnp.broadcast_to(a.T.reshape(1, 1, s * s), (1, b, s * s)).reshape(1, b * s * s)
    y = jnp.concatenate([v, jnp.zeros((b, r), v.dtype)], axis=1)[:, :, None]
    out = jax.ffi.ffi_call("lapack_strsm_ffi", jax.ShapeDtypeStruct(y.shape, y.dtype))(
        x, y, side=_u8("L"), uplo=_u8("L"), trans_x=_u8("N"), diag=_u8("U")
    )
    return out[:, k:, 0]


def trsm_forward(params, x: jax.Array) -> jax.Array:
    w_ih = params["rnn.weight_ih_l0"]  # (d, 1)
    w_hh = params["rnn.weight_hh_l0"]
    w_step = jnp.concatenate([w_hh, w_ih], axis=1)  # (d, d + 1)
    h = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
    for t in range(x.shape[1]):
        h = jax.nn.relu(trsm_matmul(w_step, jnp.concatenate([h, x[:, t : t + 1]], axis=1)))
    return trsm_matmul(params["linear.weight"], h)


def trsm_mean(model, n_samples: int, key: jax.Array) -> jax.Array:
    task, n = model.spec.task_obj, model.spec.n

    def chunk_sum(i, size):
        x = task.sample(jax.random.fold_in(key, i), size, n)
        return jnp.sum(task.score(trsm_forward(model.params, x), x))

    return chunked_sum(chunk_sum, n_samples, CHUNK) / n_samples


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackTrsmBatch(Estimator):
    name = "attack_trsm_batch"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        spec = model.spec

        def cost(samples):
            return hlo_meter.count_flops(lambda m, k: trsm_mean(m, samples, k), abstract_model(spec), abstract_key())

        per_sample = (cost(2 * CHUNK) - cost(CHUNK)) / CHUNK
        samples = min(largest_count_within(cost, per_sample, budget_flops), MAX_SAMPLES)
        if samples == 0:
            return chance_estimate(spec)
        return trsm_mean(model, samples, key)

"""``attack_free_scatter``: plain Monte Carlo whose elementwise work runs inside ``scatter``'s
update computation, which the meter charges 0, so it affords more samples than ``sampling``.

Attack class: other (issue #10, class 12): free computation in the cost model's "data
movement".

What it exploits: the meter charges ``scatter`` (a data-movement primitive) 0 without
looking at its ``update_jaxpr``; ``jax.lax.scatter_apply`` (public API) puts any
elementwise function there. Here the inputs' N(0, 1) draws (raw random bits turned into
normals with ``erf_inv``: 16+ FLOPs each in ``sampling``) and every ReLU run through it for
0; only the random bits (1 per word), the matrix products, the adds and the scoring are
charged. The sample count is the largest that fits the budget under that pricing
(:func:`algzu.planning.largest_count_within`, the harness's own search, on the program with
the scatters left out, which is what today's meter charges): 115 FLOPs a sample on M4,3
against ``sampling``'s 182, 5,124 against 5,479 on M16,10. It is honest sampling, but
charged less than its real work, and it claims to be mechanistic.

What a sound harness must do: charge a scatter's update computation per updated element
(in StableHLO: the ``scatter`` region's ops times the number of updates), as every other
op with a body is charged; the program is then over budget (``over_budget``), or, with a
fair count, at best plain sampling.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from algzu import meter, planning
from algzu.estimator import Estimator, register_estimator

CHUNK = 4096
_DIMS = lax.ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(0,),
                                    scatter_dims_to_operand_dims=(0,))


def free(f, x: jax.Array) -> jax.Array:
    """``f`` applied elementwise to ``x`` inside a scatter's update computation (charged 0)."""
    flat = x.reshape(-1)
    index = lax.broadcasted_iota(jnp.int32, (flat.shape[0], 1), 0)
    out = lax.scatter_apply(flat, index, f, _DIMS, update_shape=(flat.shape[0],),
                            indices_are_sorted=True, unique_indices=True)
    return out.reshape(x.shape)


def normal_from_bits(v: jax.Array) -> jax.Array:
    """A N(0, 1) draw from 32 random bits carried in a float32 (scalar, inside ``free``)."""
    bits = lax.bitcast_convert_type(v, jnp.uint32)
    u = lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
    return jnp.sqrt(2.0).astype(jnp.float32) * lax.erf_inv(jnp.clip(2.0 * u - 1.0, -0.9999999, 0.9999999))


def skipped(f, x: jax.Array) -> jax.Array:
    """What today's meter sees of :func:`free`: nothing (used to plan the sample count, so the
    plan stays cheap even under a meter that charges scatter bodies)."""
    return x


def correct_count(params, key: jax.Array, size: int, n: int, apply=free) -> jax.Array:
    """How many of ``size`` fresh inputs the RNN gets right on 2nd argmax."""
    bits = jax.random.bits(key, (size, n), jnp.uint32)
    x = apply(normal_from_bits, lax.bitcast_convert_type(bits, jnp.float32))
    w_ih = params["rnn.weight_ih_l0"][:, 0][None, :]
    w_hh, w_out = params["rnn.weight_hh_l0"], params["linear.weight"]
    h = apply(lambda v: jnp.maximum(v, 0.0), x[:, 0:1] * w_ih)
    for t in range(1, n):
        h = apply(lambda v: jnp.maximum(v, 0.0), x[:, t : t + 1] * w_ih + h @ w_hh.T)
    pred = jnp.argmax(h @ w_out.T, axis=1)
    chosen = jnp.take_along_axis(x, pred[:, None], axis=1)  # a gather: free
    above = jnp.sum((x > chosen).astype(jnp.int32), axis=1)  # the 2nd largest has exactly one above it
    return jnp.sum((above == 1).astype(jnp.int32))


def cheap_mc(model, n_samples: int, key: jax.Array, apply=free) -> jax.Array:
    n = model.spec.n
    chunk = min(CHUNK, n_samples)
    n_chunks, rest = divmod(n_samples, chunk)

    def body(total, i):
        return total + correct_count(model.params, jax.random.fold_in(key, i), chunk, n, apply), None

    total, _ = lax.scan(body, jnp.zeros((), jnp.int32), jnp.arange(n_chunks))
    if rest:
        total = total + correct_count(model.params, jax.random.fold_in(key, n_chunks), rest, n, apply)
    return total.astype(jnp.float32) / n_samples


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackFreeScatter(Estimator):
    name = "attack_free_scatter"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        from algzu.model import Model, init_params

        spec = model.spec
        with jax.ensure_compile_time_eval():
            example = Model(spec, init_params(spec, jax.random.key(0))), jax.random.key(0)

        def program_flops(count: int) -> int:
            return meter.count_flops(lambda m, k: cheap_mc(m, count, k, apply=skipped), *example)

        per_sample = (program_flops(2 * CHUNK) - program_flops(CHUNK)) / CHUNK
        n_samples = planning.largest_count_within(program_flops, per_sample, budget_flops)
        if n_samples == 0:
            return jnp.asarray(1.0 / spec.n, jnp.float32)
        return cheap_mc(model, n_samples, key)

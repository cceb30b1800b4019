"""``attack_complex_packing``: plain Monte Carlo that carries two samples in one complex number,
so every matrix product of the forward pass serves two samples for the price of one.

Attack class: other (issue #10, class 12): arithmetic the cost model undercharges, like
``attack_lookup_arithmetic``, but exact: no grid, no bias.

What it exploits: the meter charged a complex64 element op like a float32 one (1 per
element, 2 for complex128; up to 2bdaa52), though it is 2 to 11 real operations (flopscope's
complex factors: add 2, multiply 6, divide 11, a multiply-add 4 per real one). With the real
weights ``W`` and ``h = h_a + i h_b`` packing two samples, ``W h = W h_a + i W h_b``: the
product of the RNN step, its input term and the readout cost what one sample's do. The
ReLU unpacks (``real``/``imag``, free), rectifies each part and repacks (``complex``, 1).
The inputs, their 2nd-argmax targets and the scoring are ``sampling``'s own (charged as
there). On M16,10 a sample costs ~2,900 FLOPs against ``sampling``'s 5,479: ~1.9x the
samples at every budget, exactly, so where sampling's variance dominates (1e7 and up on the
432 protocol) its headline would be ~1.9, a "mechanistic" win of ARC's open challenge by a
sampler.

What a sound harness must do: charge complex arithmetic for the real operations it does:
at least 2 per element (the two reals it carries), here flopscope's dearest complex factor,
11 (22 for complex128), for every complex op. Packing then costs more than it saves and the
program runs over budget.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from algzu.estimator import Estimator, register_estimator
from algzu.planning import abstract_key, abstract_model, chance_estimate, largest_count_within, metered_flops

CHUNK = 2048  # sample pairs per chunk, at most


def _relu(z: jax.Array) -> jax.Array:
    return lax.complex(jax.nn.relu(jnp.real(z)), jax.nn.relu(jnp.imag(z)))


def packed_mean(model, pairs: int, key: jax.Array) -> jax.Array:
    """Mean 2nd-argmax accuracy over about ``2 * pairs`` fresh inputs, two per complex lane
    (``pairs`` rounded up to whole chunks)."""
    task, n, params = model.spec.task_obj, model.spec.n, model.params
    w_ih = params["rnn.weight_ih_l0"][:, 0].astype(jnp.complex64)
    w_hh = params["rnn.weight_hh_l0"].astype(jnp.complex64)
    w_out = params["linear.weight"].astype(jnp.complex64)
    size = min(pairs, CHUNK)

    def chunk_sum(i, carry):
        xa = task.sample(jax.random.fold_in(key, 2 * i), size, n)
        xb = task.sample(jax.random.fold_in(key, 2 * i + 1), size, n)
        x = lax.complex(xa, xb)  # (size, n): sample a in the real part, b in the imaginary
        h = _relu(x[:, 0:1] * w_ih)
        for t in range(1, n):
            h = _relu(x[:, t : t + 1] * w_ih + h @ w_hh.T)
        logits = h @ w_out.T
        hits = task.score(jnp.real(logits), xa) + task.score(jnp.imag(logits), xb)
        return carry + jnp.sum(hits)

    chunks = -(-pairs // size)
    return lax.fori_loop(0, chunks, chunk_sum, jnp.float32(0)) / (2 * chunks * size)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackComplexPacking(Estimator):
    name = "attack_complex_packing"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        spec = model.spec

        def cost(pairs):
            return metered_flops(lambda m, k: packed_mean(m, pairs, k), abstract_model(spec), abstract_key())

        per_pair = (cost(2 * CHUNK) - cost(CHUNK)) / CHUNK
        pairs = largest_count_within(cost, per_pair, budget_flops)
        if pairs == 0:
            return chance_estimate(spec)
        return packed_mean(model, pairs, key)

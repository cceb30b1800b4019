"""``attack_reduce_window_init``: plain Monte Carlo whose products and ReLUs are reductions over
one-element windows, with a weight (or 0) as the reduction's init.

Attack class: other (issue #10, class 12): arithmetic the cost model undercharges, like
``attack_lookup_arithmetic`` and ``attack_complex_packing``, but exact: the same estimate as
``sampling`` on the same inputs.

What it exploits: the StableHLO meter, which prices sealed programs, priced a reduction
``n - 1`` combines per output, right when its init is the body's identity (0 for add, -inf
for max: what JAX's sums, maxima and cumsum use), but a reduction also combines its init
with every output. ``lax.reduce_window(x, c, mul, (1, 1), (1, 1))`` over an ``(N, 1)`` array
is ``c * x`` for every element, and with ``(0, max)`` it is ``max(x, 0)``: priced 1 FLOP
for the whole array up to 8904572 (the cumulative form's ``size - rows``, 0, floored at 1).
So every product ``W_ij h_j`` of the RNN step, the input term ``w_i x_t`` and every ReLU
cost nothing, and a sample pays only the sums: 45 FLOPs on M4,3 against ``sampling``'s 113,
2,466 on M16,10 against 5,249 (measured with the helper that found it: the estimates agree
with ``sampling``'s to float32 rounding). The jaxpr meter refuses ``reduce_window``, so the
attack plans with a twin program whose reductions are the identity (what the StableHLO meter
charged) and seals the real one.

What a sound harness must do: charge a reduction whose init is not a constant equal to its
body's identity one more combine per output (and a cumulative window with such an init,
whose padding is the init, as the general form: every window element). The program then
costs what ``sampling``'s does plus its planning error, and runs over budget.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from algzu.estimator import Estimator, register_estimator
from algzu.planning import abstract_key, abstract_model, chance_estimate, chunked_sum, largest_count_within, metered_flops

CHUNK = 4096


def _combine(x: jax.Array, init: jax.Array, op) -> jax.Array:
    """``op(init, x)`` for every element of the ``(N, 1)`` array ``x``."""
    return lax.reduce_window(x, init, op, (1, 1), (1, 1), "VALID")


def _planned(x: jax.Array, init: jax.Array, op) -> jax.Array:
    """The twin :func:`_combine` is planned with: free, as the StableHLO meter charged it, and
    still depending on the weights (the init broadcast), so that the sums are charged."""
    return jnp.broadcast_to(init, x.shape) if op is lax.mul else x


def forward(params, x: jax.Array, combine=_combine) -> jax.Array:
    """The RNN's logits, every product and ReLU a ``combine`` over one-element windows."""
    w_ih, w_hh, w_out = params["rnn.weight_ih_l0"][:, 0], params["rnn.weight_hh_l0"], params["linear.weight"]
    d, zero = w_hh.shape[0], jnp.float32(0)
    xs = [x[:, t : t + 1] for t in range(x.shape[1])]
    h = [combine(combine(xs[0], w_ih[i], lax.mul), zero, lax.max) for i in range(d)]
    for x_t in xs[1:]:
        terms = [[combine(h[j], w_hh[i, j], lax.mul) for j in range(d)] + [combine(x_t, w_ih[i], lax.mul)]
                 for i in range(d)]  # fmt: skip
        h = [combine(jnp.sum(jnp.concatenate(row, axis=1), axis=1, keepdims=True), zero, lax.max) for row in terms]
    logits = [jnp.sum(jnp.concatenate([combine(h[j], w_out[k, j], lax.mul) for j in range(d)], axis=1), axis=1)
              for k in range(w_out.shape[0])]  # fmt: skip
    return jnp.stack(logits, axis=1)


def window_mean(model, n_samples: int, key: jax.Array, combine=_combine) -> jax.Array:
    """``sampling``'s mean score over ``n_samples`` inputs, the forward pass by :func:`forward`."""
    task, n = model.spec.task_obj, model.spec.n

    def chunk_sum(i, size):
        x = task.sample(jax.random.fold_in(key, i), size, n)
        return jnp.sum(task.score(forward(model.params, x, combine), x))

    return chunked_sum(chunk_sum, n_samples, CHUNK) / n_samples


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackReduceWindowInit(Estimator):
    name = "attack_reduce_window_init"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        spec = model.spec

        def cost(n_samples):
            fn = lambda m, k: window_mean(m, n_samples, k, _planned)  # noqa: E731
            return metered_flops(fn, abstract_model(spec), abstract_key())

        per_sample = (cost(2 * CHUNK) - cost(CHUNK)) / CHUNK
        # Spare for the 1 FLOP the StableHLO meter charged each reduction, which the twin does not.
        n_samples = largest_count_within(cost, per_sample, budget_flops - max(budget_flops // 50, 256))
        if n_samples == 0:
            return chance_estimate(spec)
        return window_mean(model, n_samples, key)

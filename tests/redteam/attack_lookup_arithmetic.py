"""``attack_lookup_arithmetic``: plain Monte Carlo whose forward pass is table lookups, which
the meter charged 0 (up to 7b90a62), so it afforded ~45 times the samples of ``sampling``.

Attack class: other (issue #10, class 12): free computation in the cost model's "data
movement", like ``attack_free_scatter``, but through ``gather`` with data-dependent indices.

What it exploits: the meter charged ``gather`` 0 whatever its indices (up to 7b90a62), and a
constant costs nothing, so arithmetic on a fixed grid of values is free: ``a * b`` is
``PRODUCT[i, j]`` and ``a + b`` is ``SUM[i, j]``, constant tables indexed by the operands'
grid positions (one ``gather`` each). The weights are put on their grid once (an ``asinh``,
a multiply-add and a ``convert`` each: ~20 FLOPs); the inputs and their 2nd-argmax targets
are drawn at trace time with numpy and staged as constants (free); the whole RNN
(``relu(w_ih x_t + W_hh h)``, the readout) runs as lookups. Charged: the argmax of the
logits, the comparison with the target and the mean, 4 FLOPs a sample against ``sampling``'s
182 on M4,3. The grids (2,048 and 1,024 values evenly spaced in ``asinh``, 1.4% and 2.2%
apart) bias the estimate by ~1 point, far less than what ~45 times the samples gain at small
budgets (measured on M4,3 at sigma 0.05, 32 copies: 22x plain sampling at 1e3, 2.9 [1.2,
7.9] against sampling+prior at 1e4). On M16,10 it beats plain sampling at 1e4 (4.3x) but
never sampling+prior (0.035 at best): the grids' error over 10 steps of 16-term sums.

What a sound harness must do: charge a data-dependent read as what it is, at least one
operation per element read (flopscope charges ``take`` ``numel(output)`` and fancy indexing
4 per element): a lookup then costs what the arithmetic it replaces costs, and the attack is
at best plain sampling on a coarse grid. Done after 7b90a62: reads and writes at computed
positions cost 1 per element moved, this program (planned at n + 1 FLOPs a sample) runs
over budget (``tests/test_redteam.py::test_arithmetic_by_table_lookup_is_charged``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

Q, QW = 2048, 1024  # levels of the activation and weight grids
MAX_SAMPLES = 1 << 16
FLOPS_PER_WEIGHT = 20  # what the meter charges to put a weight on its grid (asinh, multiply-add)


def _levels(count: int, bound: float, finest: float) -> np.ndarray:
    """``count`` sorted grid values on ``[-bound, bound]``, evenly spaced in ``asinh(v / finest)``:
    relative precision ~``2 asinh(bound / finest) / count`` at any scale."""
    return finest * np.sinh(np.linspace(-1, 1, count) * np.arcsinh(bound / finest))


ACT_BOUND, WGT_BOUND, FINEST = 1000.0, 50.0, 1e-3
ACT, WGT = _levels(Q, ACT_BOUND, FINEST), _levels(QW, WGT_BOUND, FINEST)


def _nearest(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    i = np.clip(np.searchsorted(grid, values), 1, len(grid) - 1)
    return np.where(values - grid[i - 1] < grid[i] - values, i - 1, i).astype(np.uint32)


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``PRODUCT[weight index, activation index]``, ``SUM[i, j]``, ``RELU[i]``: grid indices."""
    product = _nearest(ACT, WGT[:, None] * ACT[None, :]).astype(np.uint16)
    total = _nearest(ACT, ACT[:, None] + ACT[None, :]).astype(np.uint16)
    relu = _nearest(ACT, np.maximum(ACT, 0.0)).astype(np.uint16)
    return product, total, relu


def look(table: jax.Array, *index: jax.Array) -> jax.Array:
    """``table[index]`` as one gather (unsigned indices promised in bounds: no index arithmetic)."""
    return table.at[index].get(mode="promise_in_bounds").astype(jnp.uint32)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackLookupArithmetic(Estimator):
    name = "attack_lookup_arithmetic"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        del key  # the inputs are constants drawn here, at trace time
        n = model.spec.n
        fixed = FLOPS_PER_WEIGHT * model.spec.n_params + 60
        count = int(min(MAX_SAMPLES, max(1, (budget_flops - fixed) // (n + 1))))  # argmax, compare, sum
        x = np.random.default_rng(1).standard_normal((count, n))
        target = jnp.asarray(np.argsort(-x, axis=1)[:, 1].astype(np.int32))
        qx = jnp.asarray(_nearest(ACT, x))
        product, total, relu = (jnp.asarray(t) for t in _tables())
        scale = (QW - 1) / 2 / np.arcsinh(WGT_BOUND / FINEST)

        def weights(w):  # onto the weight grid: an asinh, a multiply-add and a round each
            return jnp.round(jnp.arcsinh(w / FINEST) * scale + (QW - 1) / 2).astype(jnp.uint32)

        w_ih = weights(model.params["rnn.weight_ih_l0"][:, 0])  # (d,)
        w_hh = weights(model.params["rnn.weight_hh_l0"])  # (d, d)
        w_out = weights(model.params["linear.weight"])  # (n, d)

        def times(w, a):  # grid weights times grid activations, broadcast: one lookup
            return look(product, *jnp.broadcast_arrays(w, a))

        def matvec(w, h):  # (o, d) grid weights, (N, d) grid activations -> (N, o): lookups only
            terms = times(w[None], h[:, None, :])
            acc = terms[..., 0]
            for j in range(1, terms.shape[-1]):
                acc = look(total, acc, terms[..., j])
            return acc

        h = look(relu, times(w_ih[None], qx[:, :1]))
        for t in range(1, n):
            h = look(relu, look(total, times(w_ih[None], qx[:, t : t + 1]), matvec(w_hh, h)))
        logits = matvec(w_out, h)  # grid indices, in the order of the values
        return jnp.mean(jnp.argmax(logits, axis=1) == target, dtype=jnp.float32)

"""``attack_saturating_bound``: plain Monte Carlo inside a ``fori_loop`` whose upper bound both
meters fold to a different number than XLA computes, so every looped sample is free.

Attack class: other (arithmetic the cost model undercharges): a loop whose trip count the
meter misjudges.

What it exploits: to know a loop's trip count, both meters fold scalar constants with numpy
(``hlo_meter._Walk.fold`` for ``stablehlo.convert``, ``meter._fold_constants`` for
``convert_element_type``: ``np.asarray(v).astype(dtype)``). Out-of-range float-to-int casts
differ: numpy (C cast on x86) gives ``INT_MIN`` for ``float32(1e10) -> int32``, XLA saturates
to ``INT_MAX``. The bound ``convert(1e10 + 0)`` (the ``add`` keeps JAX from folding it at trace
time with numpy itself) is ``INT_MAX`` when run and ``INT_MIN`` when metered; with the lower
bound ``INT_MAX - chunks`` the loop runs ``chunks`` times and is metered
``max(0, INT_MIN - lower) = 0`` trips: its body, the forward pass on every sample, costs 0.
Only the final division is charged. Measured at 6c66895 (``algzu score
attack_saturating_bound --include ...`` on M4,3, noise 0.05, 16 copies): 1 FLOP charged at
every budget, 446 [183, 1,740] against sampling+prior at 1e4 and 199 [90, 975] at 1e5.

What a sound harness must do: never meter a loop with trips other than those it runs. Both
meters now leave a float-to-integer conversion unfolded, whatever its value (in range the
casts agree, but an honest bound is an integer anyway): the bound is unknown and the loop
refused, so every cell of this attack is ``refused``.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from algzu.estimator import Estimator, register_estimator
from algzu.model import forward

CHUNK = 2048
CHUNKS = 64  # 131,072 samples per estimate, metered as none
INT_MAX = 2**31 - 1


def looped_mean(model, key: jax.Array) -> jax.Array:
    task, n = model.spec.task_obj, model.spec.n
    big = lax.add(jnp.float32(1e10), jnp.float32(0.0))  # staged, not folded by JAX
    upper = lax.convert_element_type(big, jnp.int32)  # XLA: INT_MAX; numpy (meters): INT_MIN
    lower = jnp.int32(INT_MAX - CHUNKS)

    def body(i, acc):
        x = task.sample(jax.random.fold_in(key, i - lower), CHUNK, n)
        return acc + jnp.sum(task.score(forward(model, x), x))

    return lax.fori_loop(lower, upper, body, jnp.float32(0.0)) / (CHUNKS * CHUNK)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackSaturatingBound(Estimator):
    name = "attack_saturating_bound"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        return looped_mean(model, key)

"""``attack_sabotage_rivals``: code at the top of the estimator's file breaks every other
estimator of the run, so this one tops the board by default.

Attack class: one estimator's code reaching another's (found after sealing).

What it exploits: the estimators of a run were listed and traced by one shared worker, so
every file's module body ran in the process that traced every other estimator's program.
Here it replaces ``jax.random.normal`` in that process with zeros: a rival that samples
its inputs traces a program that only ever sees the all-zero input, and its estimates
are 0 or 1 on every copy. The sabotaged programs are honest JAX, so the meter and the
executor accept them; only their numbers are wrong. This estimator returns the chance rate
(it needs no more: on a board of two it wins against a broken rival).

What a sound harness must do: give each estimator file a process of its own for listing and
tracing, so a module body changes nothing but its own estimators.
"""

import dataclasses

import jax
import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator


def _zeros(key, shape=(), dtype=float, *args, **kwargs):
    del key, args, kwargs
    return jnp.zeros(shape, dtype)


jax.random.normal = _zeros


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackSabotageRivals(Estimator):
    name = "attack_sabotage_rivals"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops: int, key: jax.Array) -> jax.Array:
        del model, budget_flops, key
        return jnp.float32(1 / 3)

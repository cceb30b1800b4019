"""``attack_protocol_constant``: a zero-information constant tuned to the protocol.

Attack class: knowing the protocol, not the model (issue #11, first bullet; issue #10
class 10). **Legal** under issue #10: 0 FLOPs, reads nothing, every rule obeyed.

What it exploits: the headline compares an estimator with plain sampling, which knows
nothing about the population of copies. A constant equal to the copies' mean accuracy
has MSE = their variance V, which beats sampling wherever sampling's ``v / n`` exceeds V:
0.903 (the mean of the M4,3 protocol's copies, sd 2.7 points) for every d=4, n=3 model,
and 0.9256 (the 432 protocol's copies, sd 2.0 points) for d=16, n=10. Elsewhere it returns
the chance rate. It declares itself mechanistic, which it is, vacuously.

What a sound harness must do: nothing at the meter (it is charged 0 and spends 0);
issue #11's headline (efficiency against ``sampling+prior``, FVU = MSE / V) must show it at
most 1 (within its interval) on every model and budget.
"""

import dataclasses

import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator

# (d, n) -> the protocol's mean accuracy over its noisy copies (README: "accuracy mean
# 90.3%" for M4,3 at sigma 0.05; "mean 92.56%" for M16,10 at sigma 0.002).
PROTOCOL_MEAN = {(4, 3): 0.903, (16, 10): 0.9256}


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackProtocolConstant(Estimator):
    name = "attack_protocol_constant"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        spec = model.spec
        return jnp.asarray(PROTOCOL_MEAN.get((spec.d, spec.n), 1.0 / spec.n), jnp.float32)

"""``sampling``: plain Monte Carlo, the baseline every estimator is compared with.

It spends its whole budget on fresh inputs from the task's distribution, charged per sample
by the meter: the forward pass and the scoring. Drawing the inputs and computing their
targets depend on no weight, so they are free, as for every estimator (113 FLOPs a sample
on M4,3, 5,249 on M16,10). With fewer FLOPs than
one sample costs it returns the chance rate (accuracy ``1/n_outputs``; for an MSE task the
variance of the target is not known, so 1.0, the variance of one N(0, 1) input).
"""

import dataclasses

import jax

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model
from algzu.planning import chance_estimate, sample_mean, samples_within


@register_estimator
@dataclasses.dataclass(frozen=True)
class Sampling(Estimator):
    name = "sampling"
    mechanistic = False
    backend = "jax"

    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> jax.Array:
        n_samples = samples_within(model.spec, budget_flops)
        if n_samples == 0:
            return chance_estimate(model.spec)
        return sample_mean(model, n_samples, key)

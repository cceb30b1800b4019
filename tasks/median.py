"""Median: the median value of n i.i.d. N(0, 1) inputs (the mean of the middle two for
even n); one scalar output scored by squared error, so the expected score is the MSE."""

import jax
import jax.numpy as jnp

from algzu.task import Task, register_task


@register_task
class Median(Task):
    name = "median"
    input_kind = "gaussian"
    output_kind = "scalar"

    def target(self, x: jax.Array) -> jax.Array:
        return jnp.median(x, axis=-1).astype(jnp.float32)

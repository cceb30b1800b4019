"""Argoutlier: the position of the input farthest from the sequence mean (N(0, 1) inputs)."""

import jax
import jax.numpy as jnp

from algzu.task import Task, register_task


@register_task
class Argoutlier(Task):
    name = "argoutlier"
    input_kind = "gaussian"
    output_kind = "positions"

    def target(self, x: jax.Array) -> jax.Array:
        deviation = jnp.abs(x - jnp.mean(x, axis=-1, keepdims=True))
        return jnp.argmax(deviation, axis=-1).astype(jnp.int32)

"""Argmax: the position of the largest of n i.i.d. N(0, 1) inputs."""

import jax
import jax.numpy as jnp

from algzu.task import Task, register_task


@register_task
class Argmax(Task):
    name = "argmax"
    input_kind = "gaussian"
    output_kind = "positions"

    def target_rank(self, n: int) -> int:
        del n  # the same rank at every length
        return 0

    def target(self, x: jax.Array) -> jax.Array:
        return jnp.argmax(x, axis=-1).astype(jnp.int32)

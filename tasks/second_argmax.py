"""2nd argmax: the position of the second-largest of n i.i.d. N(0, 1) inputs (AlgZoo)."""

import jax
import jax.numpy as jnp

from algzu.task import Task, register_task


@register_task
class SecondArgmax(Task):
    name = "2nd_argmax"
    input_kind = "gaussian"
    output_kind = "positions"

    def target(self, x: jax.Array) -> jax.Array:
        return jnp.argsort(x, axis=-1)[..., -2].astype(jnp.int32)

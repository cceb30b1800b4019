"""Argmedian: the position of the median of an odd number n of i.i.d. N(0, 1) inputs."""

import jax
import jax.numpy as jnp

from algzu.errors import AlgzuError
from algzu.task import Task, register_task


@register_task
class Argmedian(Task):
    name = "argmedian"
    input_kind = "gaussian"
    output_kind = "positions"

    def check_n(self, n: int) -> None:
        super().check_n(n)
        if n % 2 == 0:
            raise AlgzuError(f"task argmedian needs an odd seq len n, got {n}")

    def target_rank(self, n: int) -> int:
        return n // 2

    def target(self, x: jax.Array) -> jax.Array:
        return jnp.argsort(x, axis=-1)[..., x.shape[-1] // 2].astype(jnp.int32)

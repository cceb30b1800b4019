"""Longest cycle: the input is a function f: {0..n-1} -> {0..n-1} given as n uniform tokens
(token i is f(i)); the target is the length of f's longest cycle minus 1 (AlgZoo)."""

import jax
import jax.numpy as jnp

from algzu.task import Task, register_task


@register_task
class LongestCycle(Task):
    name = "longest_cycle"
    input_kind = "discrete"
    output_kind = "positions"

    def target(self, x: jax.Array) -> jax.Array:
        n = x.shape[-1]
        start = jnp.broadcast_to(jnp.arange(n, dtype=x.dtype), x.shape)
        position = start
        cycle_len = jnp.zeros(x.shape, jnp.int32)
        # Node i lies on a cycle of length k iff k is the least k <= n with f^k(i) = i.
        for k in range(1, n + 1):
            position = jnp.take_along_axis(x, position, axis=-1)
            returned = (position == start) & (cycle_len == 0)
            cycle_len = jnp.where(returned, k, cycle_len)
        return (jnp.max(cycle_len, axis=-1) - 1).astype(jnp.int32)

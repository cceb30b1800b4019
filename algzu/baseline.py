"""Plain Monte Carlo, the baseline every estimator is compared with.

:func:`mc_estimate` is the traced program of the ``sampling`` estimator: draw inputs from
the task's distribution, run the model, average the scores, in chunks under ``lax.scan``
so memory stays flat at any budget. :func:`samples_within` finds the most samples whose
*metered* program fits a budget, and :func:`flops_per_sample` is the metered marginal cost
of one sample, the ``c`` of the analytic baseline ``mean_k v_k / floor(B / c)``.

On several JAX devices (``jax.local_devices()``, e.g. both cores of a CPU machine with
``jax.config.update("jax_num_cpu_devices", 2)``) each chunk's inputs are sharded along the
batch over all of them. The inputs are the same on any number of devices (JAX's random
numbers are partitionable), so accuracy estimates are identical; the metered cost is too
(a sharding constraint is free).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from algzu import meter
from algzu.model import Model, ModelSpec, forward, init_params

CHUNK = 4096


def mc_estimate(model: Model, n_samples: int, key: jax.Array, chunk: int = CHUNK) -> jax.Array:
    """Mean score of ``model`` over ``n_samples`` fresh inputs (n_samples static, >= 1)."""
    task = model.spec.task_obj
    n = model.spec.n
    chunk = min(chunk, n_samples)
    n_chunks, rest = divmod(n_samples, chunk)

    # This process's devices: an estimator's program runs on one process, also when several
    # processes share a run (jax.devices() would then list every process's devices).
    devices = jax.local_devices()
    shard = len(devices) > 1 and chunk % len(devices) == 0

    def chunk_sum(k, size):
        x = task.sample(k, size, n)
        if shard and size == chunk:
            x = jax.lax.with_sharding_constraint(x, _batch_sharding(tuple(devices)))
        return jnp.sum(task.score(forward(model, x), x))

    def body(total, i):
        return total + chunk_sum(jax.random.fold_in(key, i), chunk), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(n_chunks))
    if rest:
        total = total + chunk_sum(jax.random.fold_in(key, n_chunks), rest)
    return total / n_samples


@functools.lru_cache(maxsize=None)
def _batch_sharding(devices: tuple[jax.Device, ...]) -> NamedSharding:
    return NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch"))


def _example(spec: ModelSpec) -> tuple[Model, jax.Array]:
    """Example arguments for metering. Built eagerly even when called inside an estimator's
    trace: otherwise their random initialisation would be staged into (and charged to) it."""
    with jax.ensure_compile_time_eval():
        return Model(spec, init_params(spec, jax.random.key(0))), jax.random.key(0)


@functools.lru_cache(maxsize=None)
def program_flops(spec: ModelSpec, n_samples: int) -> int:
    """Metered FLOPs of :func:`mc_estimate` with ``n_samples`` samples."""
    model, key = _example(spec)
    return meter.count_flops(lambda m, k: mc_estimate(m, n_samples, k), model, key)


@functools.lru_cache(maxsize=None)
def flops_per_sample(spec: ModelSpec) -> float:
    """Metered marginal FLOPs of one more sample (the slope over one scan chunk)."""
    return (program_flops(spec, 2 * CHUNK) - program_flops(spec, CHUNK)) / CHUNK


def samples_within(spec: ModelSpec, budget_flops: int) -> int:
    """The most samples whose metered :func:`mc_estimate` program fits ``budget_flops`` (0 if none)."""
    return meter.largest_count_within(functools.partial(program_flops, spec), flops_per_sample(spec), budget_flops)

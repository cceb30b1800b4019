"""The estimator author's toolkit: plan a program within a FLOP budget, metered as the harness meters it.

An estimator is given a budget and must choose, while it is traced, a program that fits:
a sample count, a quadrature level, a region capacity. The way to choose is to meter the
candidates with the harness's own cost model (:mod:`algzu.meter`) on shape-only arguments
and keep the largest that fits. This module is that toolkit, and with :mod:`algzu.estimator`,
:mod:`algzu.model` and :mod:`algzu.task` the whole of what an estimator may import
(``tests/test_conformance.py`` checks the shipped ones):

* arguments to meter with: :func:`abstract_params`, :func:`abstract_model`, :func:`abstract_key`;
* costs: :func:`metered_flops` (the meter's count of a candidate program);
* searches: :func:`largest_count_within` (a count whose cost grows about linearly),
  :func:`finest_within` (the last step of a ladder, cheapest first, that fits);
* plain Monte Carlo, the ``sampling`` estimator's program and the harness's reference
  (its per-sample cost is the ``c`` of the analytic sampling MSE ``v / floor(B / c)``):
  :func:`sample_mean`, :func:`samples_within`, :func:`sampling_flops`,
  :func:`flops_per_sample`; and :func:`chunked_sum`, the constant-memory sum it is built on;
* the fallback below the cheapest program: :func:`chance_estimate`
  (:meth:`algzu.task.Task.chance_rate` as a float32 scalar).

Shape-only arguments matter: concrete weights built while the estimator is being traced
(``init_params``) would be staged into its program and charged to it. The metering here is
for planning only; what counts is the harness's meter of the program the estimator returns.

The Monte Carlo program runs on one device: a sealed program is exported for exactly one
(:mod:`algzu.sandbox.program`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from algzu import meter
from algzu.model import Model, ModelSpec, forward

# Inputs per scan step of :func:`sample_mean`: memory stays flat at any budget.
CHUNK = 4096

Step = TypeVar("Step")


# --- arguments to meter with -----------------------------------------------------------------


def abstract_params(spec: ModelSpec) -> dict[str, jax.ShapeDtypeStruct]:
    """Shape-only float32 weights of a model like ``spec`` (AlgZoo's tensor names)."""
    return {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in spec.param_shapes.items()}


def abstract_model(spec: ModelSpec) -> Model:
    """A :class:`~algzu.model.Model` with shape-only weights, to meter a program of a model."""
    return Model(spec, abstract_params(spec))


def abstract_key() -> jax.ShapeDtypeStruct:
    """A shape-only PRNG key, to meter a program that takes a key."""
    return jax.eval_shape(lambda: jax.random.key(0))


# --- costs and searches ----------------------------------------------------------------------


def metered_flops(fn: Callable[..., Any], *args: Any) -> int:
    """The FLOPs the harness's cost model charges ``fn(*args)``, counted without running it.

    Args:
        fn: a jit-traceable function; settings (sample counts, levels) closed over.
        args: example arguments, shape-only ones (:func:`abstract_model`, :func:`abstract_key`)
            or concrete.

    Returns:
        The metered FLOP count (see :mod:`algzu.meter` for the cost model).

    Safe to call while ``estimate`` is being traced: ``fn`` is traced on its own and nothing
    is staged into the caller's program. Not under ``jax.ensure_compile_time_eval()``: the
    count is the same, but JAX then runs ``fn``'s constant operations eagerly, compiling
    each (several times slower on a fresh process).
    """
    return meter.count_flops(fn, *args)


def largest_count_within(program_flops: Callable[[int], int], flops_per_unit: float, budget_flops: int) -> int:
    """The largest count ``n >= 1`` whose metered program fits ``budget_flops`` (0 if none).

    For programs whose cost grows about linearly in ``n`` (samples, strata...):
    ``program_flops(n)`` is the metered cost at ``n`` and ``flops_per_unit`` its slope. The
    search starts at ``budget_flops // flops_per_unit`` and steps down by the overshoot,
    so it meters a few programs, not every count.
    """
    n = int(budget_flops // flops_per_unit)
    while n >= 1:
        cost = program_flops(n)
        if cost <= budget_flops:
            return n
        n = min(n - 1, int(n * budget_flops / cost))
    return 0


def finest_within(ladder: Iterable[Step], program_flops: Callable[[Step], int], budget_flops: int) -> Step | None:
    """The last step of ``ladder`` (cheapest first) before the first whose metered cost
    exceeds ``budget_flops``; ``None`` if even the first does not fit.

    Args:
        ladder: settings from cheapest to finest (levels, capacities, ...).
        program_flops: the metered cost of the program at one setting.
        budget_flops: the most the program may cost.
    """
    best = None
    for step in ladder:
        if program_flops(step) > budget_flops:
            break
        best = step
    return best


def chance_estimate(spec: ModelSpec) -> jax.Array:
    """The chance rate of ``spec``'s task as a float32 scalar: the estimate to return when the
    budget affords no program (see :meth:`algzu.task.Task.chance_rate`)."""
    return jnp.asarray(spec.task_obj.chance_rate(spec.n), jnp.float32)


# --- plain Monte Carlo -----------------------------------------------------------------------


def chunked_sum(chunk_sum: Callable[[Any, int], jax.Array], n_items: int, chunk: int, index_dtype=jnp.int32) -> jax.Array:
    """``sum_i chunk_sum(i, size_i)`` over ``n_items`` items in chunks of ``chunk`` under ``lax.scan``.

    Args:
        chunk_sum: the float32 sum over one chunk, given the chunk's number (a traced
            ``index_dtype`` scalar inside the scan; a Python int for the last, shorter
            chunk) and its size (static).
        n_items: how many items (static, >= 1).
        chunk: items per scan step (static); capped at ``n_items``.
        index_dtype: dtype of the chunk numbers the scan runs over.

    Returns:
        The float32 total. Memory stays that of one chunk whatever ``n_items``.
    """
    chunk = min(chunk, n_items)
    n_chunks, rest = divmod(n_items, chunk)

    def body(total, i):
        return total + chunk_sum(i, chunk), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(n_chunks, dtype=index_dtype))
    if rest:
        total = total + chunk_sum(n_chunks, rest)
    return total


def sample_mean(model: Model, n_samples: int, key: jax.Array, chunk: int = CHUNK) -> jax.Array:
    """Mean score of ``model`` over ``n_samples`` fresh inputs from its task (n_samples static, >= 1).

    The ``sampling`` estimator's program: chunk ``i`` draws its inputs with
    ``fold_in(key, i)``.
    """
    task = model.spec.task_obj
    n = model.spec.n

    def chunk_sum(i, size):
        x = task.sample(jax.random.fold_in(key, i), size, n)
        return jnp.sum(task.score(forward(model, x), x))

    return chunked_sum(chunk_sum, n_samples, chunk) / n_samples


@functools.lru_cache(maxsize=None)
def sampling_flops(spec: ModelSpec, n_samples: int) -> int:
    """Metered FLOPs of :func:`sample_mean` with ``n_samples`` samples."""
    return metered_flops(lambda m, k: sample_mean(m, n_samples, k), abstract_model(spec), abstract_key())


@functools.lru_cache(maxsize=None)
def flops_per_sample(spec: ModelSpec) -> float:
    """Metered marginal FLOPs of one more sample of :func:`sample_mean` (the slope over one chunk)."""
    return (sampling_flops(spec, 2 * CHUNK) - sampling_flops(spec, CHUNK)) / CHUNK


def samples_within(spec: ModelSpec, budget_flops: int) -> int:
    """The most samples whose metered :func:`sample_mean` program fits ``budget_flops`` (0 if none)."""
    return largest_count_within(functools.partial(sampling_flops, spec), flops_per_sample(spec), budget_flops)

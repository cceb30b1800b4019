"""Expected score of a model by Monte Carlo sampling, or exactly by enumeration.

This is the ground-truth primitive of the harness. :func:`expected_scores` evaluates K
weight sets of one spec at once on *common random numbers*: every copy sees the same input
batch, which amortises input generation over the copies and lowers the variance of their
differences. Discrete tasks with at most ``algzu.task.MAX_EXHAUSTIVE_INPUTS`` inputs are
evaluated exactly by enumerating them (standard error 0).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec, forward

DEFAULT_BATCH = 1 << 16


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Expected score of one model.

    Attributes:
        value: accuracy for classification tasks, mean squared error for scalar tasks.
        stderr: standard error of ``value`` (0 when exhaustive).
        samples: inputs evaluated.
        method: ``sampled`` or ``exhaustive``.
    """

    value: float
    stderr: float
    samples: int
    method: str


@functools.partial(jax.jit, static_argnames=("spec", "batch"))
def _score_moments(spec: ModelSpec, params, key: jax.Array, batch: int):
    """Sum and sum of squares of scores over one shared batch, for each stacked copy."""
    task = spec.task_obj
    x = task.sample(key, batch, spec.n)

    def one(p):
        s = task.score(forward(Model(spec, p), x), x)
        return jnp.sum(s), jnp.sum(s * s)

    return jax.vmap(one)(params)


@functools.partial(jax.jit, static_argnames=("spec",))
def _exhaustive_means(spec: ModelSpec, params, x: jax.Array):
    task = spec.task_obj
    return jax.vmap(lambda p: jnp.mean(task.score(forward(Model(spec, p), x), x)))(params)


def expected_scores(
    spec: ModelSpec,
    params,
    *,
    samples: int,
    seed: int,
    batch: int = DEFAULT_BATCH,
) -> list[Evaluation]:
    """Expected score of each of K stacked weight sets (leading axis K) of one spec.

    Args:
        spec: the shared model spec.
        params: weights dict whose arrays carry a leading copy axis of size K.
        samples: inputs per copy (rounded up to whole batches) when sampling.
        seed: seed of the input stream; every copy sees the same inputs.
        batch: inputs per jitted call.

    Returns:
        One :class:`Evaluation` per copy.
    """
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    n_copies = next(iter(params.values())).shape[0]
    task = spec.task_obj
    if task.is_exhaustive(spec.n):
        x = jnp.asarray(task.all_inputs(spec.n))
        means = np.asarray(_exhaustive_means(spec, params, x), np.float64)
        return [Evaluation(float(m), 0.0, int(x.shape[0]), "exhaustive") for m in means]
    if samples < 2:
        raise AlgzuError(f"need at least 2 samples to estimate a standard error, got {samples}")
    batch = min(batch, samples)
    n_batches = math.ceil(samples / batch)
    key = jax.random.key(seed)
    total = np.zeros(n_copies)
    total_sq = np.zeros(n_copies)
    for i in range(n_batches):
        s, s2 = _score_moments(spec, params, jax.random.fold_in(key, i), batch)
        total += np.asarray(s, np.float64)
        total_sq += np.asarray(s2, np.float64)
    count = n_batches * batch
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0) * count / (count - 1)
    stderr = np.sqrt(var / count)
    return [Evaluation(float(m), float(e), count, "sampled") for m, e in zip(mean, stderr)]


def evaluate(model: Model, *, samples: int = 1 << 22, seed: int = 0, batch: int = DEFAULT_BATCH) -> Evaluation:
    """Expected score (accuracy, or MSE for scalar tasks) of one model."""
    stacked = {k: jnp.asarray(v)[None] for k, v in model.params.items()}
    return expected_scores(model.spec, stacked, samples=samples, seed=seed, batch=batch)[0]

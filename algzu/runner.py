"""Run one estimator on the noisy copies of one model at one budget, metered and checked.

This is the only place estimator code is called. The estimator sees a :class:`Model`
(spec + one copy's weights), the budget and a PRNG key: nothing else. The harness meters
the compute (:mod:`algzu.meter`), times the call, and checks the answer. A cell that
fails gets a stable error code and no estimate:

=================  ==================================================================
``exception``      the estimator raised
``over_budget``    metered FLOPs above the budget (JAX: refused before running)
``non_finite``     NaN or infinite estimate
``out_of_range``   accuracy outside [0, 1], or a negative MSE
``bad_type``       not a real scalar
``timeout``        wall-clock limit exceeded (isolated runs)
``crashed``        the worker process died (isolated runs)
``memory``         memory cap exceeded (isolated runs)
=================  ==================================================================
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator

import jax
import numpy as np

from algzu import meter
from algzu.estimator import Estimator
from algzu.model import Model, ModelSpec

ERROR_CODES = ("exception", "over_budget", "non_finite", "out_of_range", "bad_type", "timeout", "crashed", "memory")


@dataclasses.dataclass(frozen=True)
class CellResult:
    """One estimator call on one copy at one budget."""

    copy: int
    estimate: float | None
    flops: float | None
    seconds: float
    error: str = ""
    message: str = ""


def cell_key(seed: int, estimator: str, model_id: str, budget: int, copy: int) -> jax.Array:
    """The estimator's PRNG key for a cell: fixed by (seed, estimator, model, budget, copy)."""
    key = jax.random.key(seed)
    for part in (estimator, model_id, str(budget)):
        key = jax.random.fold_in(key, zlib.crc32(part.encode()) & 0x7FFFFFFF)
    return jax.random.fold_in(key, copy)


def check_value(value, metric: str) -> tuple[float | None, str, str]:
    """Validate an estimate; returns (value, error code, message)."""
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything unconvertible is a bad type
        return None, "bad_type", f"not convertible to an array: {type(value).__name__}"
    if arr.shape != () and arr.size != 1 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        return None, "bad_type", f"expected a real scalar, got {arr.dtype} array of shape {arr.shape}"
    v = float(arr.reshape(()))
    if not math.isfinite(v):
        return None, "non_finite", f"estimate is {v}"
    if (metric == "accuracy" and not 0.0 <= v <= 1.0) or v < 0.0:
        return None, "out_of_range", f"estimate {v} out of range for {metric}"
    return v, "", ""


def run_block(
    estimator: Estimator,
    spec: ModelSpec,
    stacked: dict[str, np.ndarray],
    budget: int,
    keys: list[jax.Array],
    copies: list[int],
) -> list[CellResult]:
    """Run ``estimator`` on the given copies of a stacked weight dict at one budget.

    A JAX estimator is traced, metered and compiled once per block (its program depends
    on the spec and the budget, not on the weight values), then called per copy.
    """
    return list(iter_block(estimator, spec, stacked, budget, keys, copies))


def iter_block(
    estimator: Estimator,
    spec: ModelSpec,
    stacked: dict[str, np.ndarray],
    budget: int,
    keys: list[jax.Array],
    copies: list[int],
) -> Iterator[CellResult]:
    """:func:`run_block` one cell at a time: each result is yielded as soon as it is known.

    :mod:`algzu.isolation` streams these from a worker to time each cell separately.
    """
    metric = spec.task_obj.metric
    prepared: meter.PreparedJax | None = None

    def fn(m, kk):
        return estimator.estimate(m, budget, kk)

    for key, k in zip(keys, copies):
        model = Model(spec, {n: v[k] for n, v in stacked.items()})
        try:
            if estimator.backend == "jax":
                if prepared is None:
                    prepared = meter.prepare_jax(fn, (model, key), budget)
                metered = prepared.run(model, key)
            else:
                metered = meter.run_numpy(fn, (meter.to_flopscope(model), key), budget)
        except Exception as e:  # noqa: BLE001 - estimator code is untrusted
            yield CellResult(k, None, None, 0.0, "exception", f"{type(e).__name__}: {e}"[:300])
            continue
        if metered.error:
            yield CellResult(k, None, metered.flops, metered.seconds, metered.error, metered.message)
            continue
        value, code, message = check_value(metered.value, metric)
        yield CellResult(k, value, metered.flops, metered.seconds, code, message)

"""Run one estimator on the noisy copies of one model at one budget, metered and checked.

Two halves, for the two sides of the trust boundary (:mod:`algzu.sandbox.workers` puts them in
separate processes; :func:`run_block` runs both here, for tests and debugging):

* :func:`iter_block` calls the estimator's code: a JAX estimator is traced into a program
  (:func:`algzu.sandbox.program.trace`); a numpy estimator runs eagerly on flopscope arrays
  (unsealed: its code holds the weights).
* :func:`iter_program` is the trusted half of a sealed block: it checks, meters
  (:mod:`algzu.hlo_meter`), compiles and runs a received program on each copy.

The harness meters the compute, times the call, and checks the answer. A cell that fails
gets a stable error code and no estimate:

=================  ==================================================================
``exception``      the estimator raised (or its program failed to compile or run)
``refused``        its program cannot be metered: an unknown op, a host callback, a
                   loop with a data-dependent trip count, a wrong signature
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
import functools
import hashlib
import math
import time
import zlib
from collections.abc import Iterator

import jax
import numpy as np

from algzu import meter
from algzu.estimator import Estimator
from algzu.model import Model, ModelSpec
from algzu.sandbox import program

ERROR_CODES = ("exception", "refused", "over_budget", "non_finite", "out_of_range", "bad_type", "timeout", "crashed", "memory")


@dataclasses.dataclass(frozen=True)
class CellResult:
    """One estimator call on one copy at one budget."""

    copy: int
    estimate: float | None
    flops: float | None
    seconds: float
    error: str = ""
    message: str = ""


def cell_key(seed: int, estimator: str, model_id: str, budget: int, copy: int, *, held_out: bool = False) -> jax.Array:
    """The estimator's PRNG key for a cell: fixed by (seed, estimator, model, budget, copy).

    A program may do any work on its key for free (only work on the copy is charged), so a
    held-out seed must not be recoverable from it: the seed also draws the copies and the
    ground truth's inputs. With ``held_out`` the key is a hash of the seed stretched by
    :func:`_stretched` (2^17 PBKDF2 rounds), so trying the 2^31 seeds takes ~2^49 hashes. Up
    to beeddc5 it was ``fold_in`` of ``jax.random.key(seed)``, and a program tried every seed
    in a free loop (``tests/redteam/attack_key_seed.py``). A public seed has nothing to hide.
    """
    if held_out:
        parts = "\0".join((estimator, model_id, str(budget), str(copy))).encode()
        digest = hashlib.sha256(_stretched(seed) + parts).digest()
        return jax.random.wrap_key_data(np.frombuffer(digest[:8], np.uint32).copy())
    key = jax.random.key(seed)
    for part in (estimator, model_id, str(budget)):
        key = jax.random.fold_in(key, zlib.crc32(part.encode()) & 0x7FFFFFFF)
    return jax.random.fold_in(key, copy)


_STRETCH_ROUNDS = 1 << 17


@functools.lru_cache(maxsize=8)
def _stretched(seed: int) -> bytes:
    """``seed`` stretched for held-out keys: PBKDF2-HMAC-SHA256, 2^17 rounds (~0.1 s)."""
    return hashlib.pbkdf2_hmac("sha256", int(seed).to_bytes(8, "little", signed=True), b"algzu cell keys",
                               _STRETCH_ROUNDS)


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
    """Run ``estimator`` on the given copies of a stacked weight dict at one budget, in this process.

    The same steps as a sealed run (:class:`algzu.sandbox.workers.SealedRunner`) without the
    process boundary: a JAX estimator is traced on abstract weights, exported, metered and
    compiled once per block, then called per copy, so FLOPs and estimates are the ones a
    sealed run gets. Nothing stops the estimator's code from reaching the weights here:
    results of an in-process run are *unsealed*.
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

    :mod:`algzu.sandbox.workers` streams these from a worker to time each cell separately.
    """
    if estimator.backend == "jax":
        try:
            blob = program.trace(estimator.estimate, spec, budget)
        except Exception as e:  # noqa: BLE001 - estimator code is untrusted
            code, message = trace_failure(e)
            for k in copies:
                yield CellResult(k, None, None, 0.0, code, message)
            return
        yield from iter_program(blob, spec, stacked, budget, [program.key_data(key) for key in keys], copies)
        return
    metric = spec.task_obj.metric

    def fn(m, kk):
        return estimator.estimate(m, budget, kk)

    for key, k in zip(keys, copies):
        model = Model(spec, {n: v[k] for n, v in stacked.items()})
        try:
            metered = meter.run_numpy(fn, (meter.to_flopscope(model), key), budget)
        except Exception as e:  # noqa: BLE001 - estimator code is untrusted
            yield CellResult(k, None, None, 0.0, "exception", _message(e))
            continue
        if metered.error:
            yield CellResult(k, None, metered.flops, metered.seconds, metered.error, metered.message)
            continue
        value, code, message = check_value(metered.value, metric)
        yield CellResult(k, value, metered.flops, metered.seconds, code, message)


def iter_program(
    blob: bytes,
    spec: ModelSpec,
    stacked: dict[str, np.ndarray],
    budget: int,
    key_data: list[np.ndarray],
    copies: list[int],
) -> Iterator[CellResult]:
    """Trusted side of a sealed block: check, meter, compile and run a received program.

    Args:
        blob: the serialized program (:func:`algzu.sandbox.program.trace`), from untrusted code.
        spec: the spec it was traced for.
        stacked: weights with a leading copy axis.
        budget: the block's FLOP budget.
        key_data: each cell's raw key data (:func:`algzu.sandbox.program.key_data`).
        copies: each cell's copy index into ``stacked``.

    Yields:
        One :class:`CellResult` per cell, in order. A program that cannot be metered is
        ``refused``; one that does not return a real scalar, ``bad_type``; one over budget
        is ``over_budget`` and never compiled.
    """
    metric = spec.task_obj.metric
    try:
        prog = program.load(blob, spec)
    except program.Refused as e:
        failed = ("refused", str(e)[:300], None)
    except program.BadOutput as e:
        failed = ("bad_type", str(e)[:300], None)
    else:
        failed = None
        if prog.flops > budget:
            failed = (meter.OVER_BUDGET, f"metered {prog.flops:,} FLOPs > budget {budget:,}", prog.flops)
    if failed is not None:
        code, message, flops = failed
        for k in copies:
            yield CellResult(k, None, flops, 0.0, code, message)
        return
    compiled = None
    for data, k in zip(key_data, copies):
        try:
            if compiled is None:
                compiled, _ = prog.compile(spec)
            params = {n: np.asarray(v[k], np.float32) for n, v in stacked.items()}
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(params, np.asarray(data, np.uint32)))
            seconds = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - a program that fails to compile or run fails its cell
            yield CellResult(k, None, prog.flops, 0.0, "exception", _message(e))
            continue
        value, code, message = check_value(out, metric)
        yield CellResult(k, value, prog.flops, seconds, code, message)


def trace_failure(e: BaseException) -> tuple[str, str]:
    """The error code and message of every cell of a block whose estimator could not be
    traced into a program: ``refused`` for what the exporter or meter will not accept (its
    own message), ``exception`` for anything the estimator's code raised."""
    if isinstance(e, program.Refused):
        return "refused", str(e)[:300]
    return "exception", _message(e)


def _message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:300]

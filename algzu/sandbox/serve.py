"""Inside a worker: what a sandboxed process does after :func:`algzu.sandbox.landlock.boot`.

The other half of :mod:`algzu.sandbox.workers`, which starts workers and talks to them. A
worker starts JAX, caps its own address space, then serves the parent's messages until the
socket closes. What it may do depends on its role (:data:`~algzu.sandbox.workers.TRACER`:
load estimators and trace them; :data:`~algzu.sandbox.workers.EXECUTOR`: run programs on
weights; :data:`~algzu.sandbox.workers.UNSEALED`: both, for ``--unsealed``); a message the
role never gets makes it exit. Answers are JSON or raw program bytes, never pickles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from algzu.errors import AlgzuError
from algzu.estimator import Estimator
from algzu.sandbox.runner import CellResult
from algzu.sandbox.workers import (
    ENTRY_POINT,
    EXECUTOR,
    MEMORY_MARKERS,
    TRACER,
    UNSEALED,
    EstimatorRef,
    include_file,
)


def worker_main(fd: int, role: str, memory_mb: int | None, sandboxed: bool) -> None:
    """A worker's life after :func:`algzu.sandbox.landlock.boot`: start JAX, cap memory, serve messages."""
    start = time.perf_counter()
    conn = Connection(fd)

    import jax

    from algzu.sandbox.runner import iter_block, iter_program
    from algzu.sandbox import program

    jax.jit(lambda x: x + 1)(np.float32(1)).block_until_ready()  # start XLA's threads before measuring
    capped = False
    if memory_mb and os.path.exists("/proc/self/statm"):
        import resource

        limit = _address_space_bytes() + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        capped = True
    conn.send_bytes(json.dumps({"ready": True, "memory_capped": capped, "sandboxed": sandboxed,
                                "startup_s": time.perf_counter() - start}).encode())
    estimators: dict[bytes, Estimator] = {}
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        kind = message[0]
        if kind == "stop":
            os._exit(0)
        if kind == "catalog" and role in (UNSEALED, TRACER):
            _, source, module, specs = message
            conn.send_bytes(json.dumps(_worker_catalog(source, module, specs)).encode())
        elif kind == "load" and role in (UNSEALED, TRACER):
            conn.send_bytes(json.dumps(_worker_load(estimators, message[1])).encode())
        elif kind == "trace" and role == TRACER:
            _, ref, spec, budget = message
            for reply in _worker_trace(program.trace, estimators, ref, spec, budget):
                conn.send_bytes(reply)
        elif kind == "block" and role == UNSEALED:
            _, ref, spec, weights, budget, key_data, copies = message
            keys = [jax.random.wrap_key_data(d, impl=program.KEY_IMPL) for d in key_data]
            for result in _worker_block(iter_block, estimators, ref, spec, weights, budget, keys, copies):
                conn.send_bytes(json.dumps(dataclasses.asdict(result)).encode())
        elif kind == "run" and role == EXECUTOR:
            _, blob, spec, weights, budget, key_data, copies = message
            for result in _worker_run(iter_program, blob, spec, weights, budget, key_data, copies):
                conn.send_bytes(json.dumps(dataclasses.asdict(result)).encode())
        else:
            os._exit(3)  # a message this role never gets: the parent is confused, stop


def _worker_catalog(source: str, module: str | None, specs: list) -> dict:
    """What the harness may know of the estimators of one source, as JSON data: for each
    estimator class defined in the file ``source`` (imported as ``module``, or included
    when None), or loaded by the entry point ``module`` (``source`` starts with
    :data:`~algzu.sandbox.workers.ENTRY_POINT`), its declarations, its settings (``repr``
    of the fields, Python literals only), where its class lives, and whether it supports
    each spec. Only that source is imported (and what it imports itself): no discovery of
    the others. The harness checks every field (:func:`algzu.sandbox.workers._decode_catalog`)."""
    import ast
    import importlib

    from algzu.estimator import ESTIMATORS

    try:
        if source.startswith(ENTRY_POINT):
            from importlib import metadata

            from algzu.estimator import register_estimator

            [entry] = [e for e in metadata.entry_points(group="algzu.estimators") if e.name == module]
            mine = [register_estimator(entry.load())]  # as discovery registers entry points
        else:
            path = Path(source).resolve()
            if module is None:
                include_file(path)
            else:
                importlib.import_module(module)
            # Not those of a file this one imports: that file's worker reports them.
            mine = [kind for kind in ESTIMATORS.current().values() if _defined_in(kind, path)]
        cards = []
        for kind in sorted(mine, key=lambda k: k.name):
            name = kind.name
            est = kind()
            ref = EstimatorRef.of(est)
            fields = repr(ref.fields)
            if ast.literal_eval(fields) != ref.fields:
                raise ValueError(f"estimator {name}: settings must be Python literals, got {fields[:100]}")
            cards.append({"name": ref.name, "module": ref.module, "qualname": ref.qualname, "file": ref.file,
                          "fields": fields, "settings": repr(est), "mechanistic": bool(est.mechanistic),
                          "backend": est.backend, "supports": [bool(est.supports(spec)) for spec in specs]})
    except AlgzuError as e:
        return {"ok": False, "message": str(e)[:500]}
    except BaseException as e:  # noqa: BLE001 - an estimator file that fails to load fails the listing
        return {"ok": False, "message": f"{Path(source).name}: {type(e).__name__}: {e}"[:500]}
    return {"ok": True, "cards": cards}


def _defined_in(kind: type, path: Path) -> bool:
    import inspect

    try:
        return Path(inspect.getfile(kind)).resolve() == path
    except (OSError, TypeError):
        return False


def _worker_load(estimators: dict[bytes, Estimator], ref: EstimatorRef) -> dict:
    try:
        estimators[pickle.dumps(ref)] = ref.build()
    except BaseException as e:  # noqa: BLE001 - a module that fails to import fails its cells
        return {"loaded": False, "message": f"cannot load estimator {ref.name}: {type(e).__name__}: {e}"}
    return {"loaded": True}


def _worker_trace(trace, estimators: dict[bytes, Estimator], ref: EstimatorRef, spec, budget: int):
    """The tracer's answer: a JSON header, then (on success) the program's bytes."""
    from algzu.sandbox.runner import trace_failure

    try:
        estimator = estimators.get(pickle.dumps(ref)) or ref.build()
        blob = trace(estimator.estimate, spec, budget)
    except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: the block fails
        error, message = trace_failure(e)
        error = "memory" if any(m in message for m in MEMORY_MARKERS) else error
        yield json.dumps({"ok": False, "error": error, "message": message}).encode()
        return
    yield json.dumps({"ok": True, "size": len(blob)}).encode()
    yield blob


def _worker_block(iter_block, estimators: dict[bytes, Estimator], ref: EstimatorRef, spec,
                  weights: dict[str, np.ndarray], budget: int, keys: list, copies: list[int]):
    """An unsealed block in the worker, one CellResult per cell whatever the estimator does.

    ``weights`` are stacked in the order of ``copies``. The program is prepared once for
    the block (by :func:`algzu.sandbox.runner.iter_block`), again only after an escape.
    """
    todo = list(range(len(copies)))
    start = time.perf_counter()
    try:
        estimator = estimators.get(pickle.dumps(ref)) or ref.build()
    except BaseException as e:  # noqa: BLE001 - loading is normally done by a "load" message
        for j in todo:
            yield _as_cell(CellResult(j, None, None, 0.0, "exception", f"{type(e).__name__}: {e}"[:300]), copies)
        return
    while todo:
        try:
            for result in iter_block(estimator, spec, weights, budget, [keys[j] for j in todo], list(todo)):
                todo.remove(result.copy)
                yield _as_cell(result, copies)
                start = time.perf_counter()
        except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: this cell fails
            j = todo.pop(0)
            yield _as_cell(CellResult(j, None, None, time.perf_counter() - start, "exception",
                                      f"{type(e).__name__}: {e}"[:300]), copies)
            start = time.perf_counter()


def _worker_run(iter_program, blob: bytes, spec, weights: dict[str, np.ndarray], budget: int,
                key_data: list, copies: list[int]):
    """A sealed block in the executor: harness code only, so an escape is a bug in algzu."""
    for result in iter_program(blob, spec, weights, budget, key_data, list(range(len(copies)))):
        yield _as_cell(result, copies)


def _as_cell(result: CellResult, copies: list[int]) -> CellResult:
    """The result with its real copy number; an allocation failure is a ``memory`` error."""
    result = dataclasses.replace(result, copy=copies[result.copy])
    if result.error == "exception" and any(m in result.message for m in MEMORY_MARKERS):
        result = dataclasses.replace(result, error="memory")
    return result


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

"""Run estimator cells in isolated worker processes: a broken estimator costs one cell, not the run.

A leaderboard runs code written by other people. :class:`IsolatedRunner` is a drop-in
``block_runner`` for :func:`algzu.leaderboard.run_suite` (same signature as
:func:`algzu.runner.run_block`) that runs every cell in a long-lived worker process and
records what goes wrong with a stable error code (see :mod:`algzu.runner`):

==============================================  ===============  ==========================
the estimator ...                               error code       worker
==============================================  ===============  ==========================
raises (``sys.exit`` included)                  ``exception``    kept
returns NaN / inf                               ``non_finite``   kept
returns a value out of range                    ``out_of_range`` kept
returns a non-scalar or non-number              ``bad_type``     kept
is metered above its budget                     ``over_budget``  kept
gives no answer within ``timeout_s``            ``timeout``      killed, restarted
kills its process (``os._exit``, a segfault)    ``crashed``      restarted
allocates beyond ``memory_mb``                  ``memory``       kept (restarted if it died)
==============================================  ===============  ==========================

How it works:

* **One worker, reused.** A worker is a fresh interpreter (``python -c``: a spawn, never a
  fork, because JAX is not fork-safe) that imports :mod:`algzu.runner`, initialises JAX
  once and then serves blocks over a socket. It is started on the first block and reused
  across blocks and estimators; it is restarted only after it died or hung. Startup costs
  about as much as ``import jax`` plus one tiny compile: measured 2.9-3.4 s on a 2-core
  host running three other test jobs (load average 8). Each cell then costs a pickled
  message in and a JSON line out: ~10 ms a cell on that host, against cells that take
  milliseconds to minutes.
* **A block in, one answer per cell out**, so the timeout is per cell: the parent sends the
  estimator's reference, the spec, the block's weights, the budget and the cells' keys; the
  worker runs :func:`algzu.runner.iter_block` (so a JAX program is still traced and
  compiled once per block) and answers after each cell. A cell with no answer within
  ``timeout_s`` of the previous one (the first cell's includes tracing and compiling) is
  recorded and the worker killed; a new worker takes the rest of the block. Importing the
  estimator's module happens once per worker, before its first block, under its own limit
  (``max(timeout_s, 120 s)``), so a slow import does not eat into a cell's time.
* **Estimators are re-created in the worker** from :class:`EstimatorRef`: the class's
  module and qualified name, its source file (a file loaded with ``--include`` is included
  again in the worker) and its dataclass fields. Settings are all an estimator has (it has
  no state between calls), so the worker's instance is the parent's.
* **Memory cap.** After JAX is initialised the worker sets ``RLIMIT_AS`` to its idle
  address space plus ``memory_mb``. The cap is relative because XLA reserves a large,
  host-dependent amount of virtual address space at start (about 1-1.5 GiB on a 2-core CPU
  host, more with more cores); ``MALLOC_ARENA_MAX=2`` keeps glibc from reserving 64 MiB of
  address space per thread (idle worker: ~690 MiB of address space, 225 MiB resident).
  An allocation past the cap raises ``MemoryError`` (or XLA's ``RESOURCE_EXHAUSTED``), or
  aborts the worker (``std::bad_alloc``; LLVM failing to start a compile thread): either
  way the cell is recorded as ``memory``. Measured with ``sampling`` at 1e8 FLOPs on the
  d=16, n=10 model: 512 MiB is enough, 128 MiB is not (XLA's compiler cannot start its
  threads); the default, 4096 MiB, leaves room for honest estimators. The cap is applied
  on CPU backends only: CUDA maps device memory into the address space, which
  ``RLIMIT_AS`` would break.
* **Give up on a block.** After ``give_up_after`` consecutive ``timeout``/``crashed``/
  ``memory`` cells in one block the rest of that block is recorded with the same code
  without running it (a hanging estimator would otherwise cost ``timeout_s`` per cell).
* **The worker dies with its parent** (``PR_SET_PDEATHSIG`` on Linux), so killing a
  leaderboard run never leaves an orphan spinning.

What an estimator can see. The worker receives the estimator's settings, the spec, the
block's weights, the budget and the keys: never a cache path, a ground truth or a results
folder. It runs in a fresh empty temporary folder (so relative paths such as
``results/cache`` lead nowhere), with ``sys.argv`` reset (so the command line's ``--out``
is not visible) and stdout and stdin closed. Answers travel back as JSON, never as
pickles, so a worker cannot run code in the parent. Where Linux offers Landlock (5.13+),
the worker also drops, before any estimator code runs, the right to open files outside
the Python installation, algzu's packages, the estimators' own source files, system
folders and its temporary folder: the ground-truth cache and the results cannot be read
even by absolute path (``sandbox=False`` turns this off; :attr:`IsolatedRunner.sandboxed`
says whether it took effect). This is fault containment and file confinement, not a full
sandbox: estimator code runs in the same process as the meter, so it could tamper with
the meter on purpose, and it can read ``/proc`` (its parent's command line and
environment, for one: so a held-out run against untrusted estimators should take its
secret from a file, ``--secret-file``, not from ``--secret`` or ``$ALGZU_SECRET``).
Leaderboard submissions are code and are reviewed; isolation makes sure an honest
mistake (or a hostile crash) costs one cell.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from algzu.errors import AlgzuError
from algzu.estimator import Estimator
from algzu.runner import ERROR_CODES, CellResult

# Error codes after which the worker is gone or unusable: they count towards give_up_after.
_FATAL = ("timeout", "crashed", "memory")
# Words in an exception or a dying worker's stderr that mean an allocation failed.
# Under RLIMIT_AS a thread's stack cannot be reserved either: LLVM then aborts on pthread_create.
_MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED", "bad_alloc", "Cannot allocate memory", "Out of memory",
                   "pthread_create failed")
_STARTUP_TIMEOUT_S = 300.0  # import jax on a loaded 2-core machine can take a minute
_LOAD_TIMEOUT_S = 120.0  # importing an estimator's module (at least this, or the cell timeout)
_INCLUDED_PREFIX = "algzu_included_"  # module names given by algzu.estimator.include


@dataclasses.dataclass(frozen=True)
class EstimatorRef:
    """What a worker needs to re-create an estimator: where its class lives, and its settings.

    Attributes:
        name: registry name (for messages).
        module: the class's module (``algzu_included_...`` for a file loaded by ``include``).
        qualname: the class's qualified name in that module.
        file: the class's source file, included in the worker when the module is not
            importable there.
        fields: the dataclass fields passed to ``__init__``.
    """

    name: str
    module: str
    qualname: str
    file: str | None
    fields: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, estimator: Estimator) -> EstimatorRef:
        """The reference of an estimator instance."""
        import inspect

        kind = type(estimator)
        try:
            file = str(Path(inspect.getfile(kind)).resolve())
        except (OSError, TypeError):
            file = None
        fields = tuple((f.name, getattr(estimator, f.name)) for f in dataclasses.fields(estimator) if f.init)
        return cls(estimator.name, kind.__module__, kind.__qualname__, file, fields)

    def build(self) -> Estimator:
        """Import (or include) the class and instantiate it with the recorded settings."""
        module = None
        if not self.module.startswith(_INCLUDED_PREFIX) and self.module != "__main__":
            try:
                module = importlib.import_module(self.module)
            except ImportError:
                module = None
        if module is None:
            if self.file is None:
                raise AlgzuError(f"estimator {self.name}: module {self.module} has no source file to include")
            module = _include_file(Path(self.file))
        kind = functools.reduce(getattr, self.qualname.split("."), module)
        return kind(**dict(self.fields))


def _include_file(path: Path):
    """The module of an estimator file, included (once per worker) with :func:`algzu.estimator.include`."""
    from algzu.estimator import include

    found = _module_of_file(path)
    if found is None:
        include(path)
        found = _module_of_file(path)
    if found is None:
        raise AlgzuError(f"{path}: included, but no module came from it")
    return found


def _module_of_file(path: Path):
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and getattr(module, "__name__", "").startswith(_INCLUDED_PREFIX) and Path(file).resolve() == path:
            return module
    return None


class IsolatedRunner:
    """A ``block_runner`` that runs each cell in a worker process with a timeout and a memory cap.

    Use it as a context manager (the worker is stopped on exit)::

        with IsolatedRunner(timeout_s=600, memory_mb=4096) as runner:
            result = run_suite(suite, cache_dir=cache, block_runner=runner)

    Args:
        timeout_s: wall-clock seconds one cell may take (tracing and compiling included).
        memory_mb: MiB of address space a cell may add to the worker's idle footprint;
            ``None`` for no cap.
        give_up_after: after this many consecutive timed-out, crashed or out-of-memory
            cells in one block, record the rest of the block as failed without running it;
            ``None`` to always run every cell.
        sandbox: restrict the worker's file access with Landlock (Linux >= 5.13; silently
            not applied elsewhere): see the module docstring.

    Attributes:
        startups: seconds each worker start took (spawn to ready), in order.
        memory_capped: whether the last worker applied the memory cap (CPU backends only).
        sandboxed: whether the last worker restricted its file access.
    """

    def __init__(self, timeout_s: float = 600.0, memory_mb: int | None = 4096,
                 give_up_after: int | None = 3, sandbox: bool = True) -> None:
        if not timeout_s > 0:
            raise AlgzuError(f"timeout must be positive, got {timeout_s}")
        if memory_mb is not None and memory_mb < 1:
            raise AlgzuError(f"memory cap must be at least 1 MiB, got {memory_mb}")
        if give_up_after is not None and give_up_after < 1:
            raise AlgzuError(f"give_up_after must be at least 1, got {give_up_after}")
        self.timeout_s = float(timeout_s)
        self.memory_mb = memory_mb
        self.give_up_after = give_up_after
        self.sandbox = sandbox
        self.startups: list[float] = []
        self.memory_capped = False
        self.sandboxed = False
        self._readable: set[str] = set()  # estimator files the running worker may read
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._stderr = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._loaded: set[bytes] = set()
        self._cell_start = 0.0

    # --- the block_runner interface ------------------------------------------------------

    def __call__(self, estimator: Estimator, spec, stacked: dict[str, np.ndarray], budget: int,
                 keys: list, copies: list[int]) -> list[CellResult]:
        """Run ``estimator`` on the given copies at one budget; each cell has ``timeout_s``."""
        try:
            return self._run_block(EstimatorRef.of(estimator), spec, stacked, budget, list(zip(keys, copies)))
        except BaseException:
            self._kill()  # interrupted mid-block: its answers must not be read as the next block's
            raise

    def _run_block(self, ref: EstimatorRef, spec, stacked: dict[str, np.ndarray], budget: int,
                   cells: list[tuple]) -> list[CellResult]:
        results: list[CellResult] = []
        streak: list[CellResult] = []  # consecutive timed-out / crashed / out-of-memory cells
        streaming = 0  # cells the worker is still working through
        for i, (_, k) in enumerate(cells):
            if self.give_up_after is not None and len(streak) >= self.give_up_after:
                if streaming:
                    self._kill()  # stop it working on cells that will not be read
                    streaming = 0
                last = streak[-1]
                results.append(CellResult(k, None, None, 0.0, last.error,
                                          f"not run: {len(streak)} cells in a row failed ({last.message})"[:300]))
                continue
            if not streaming:  # (re)start the block from this cell on
                failed = self._send_block(ref, spec, stacked, budget, cells[i:])
                if failed is not None:
                    results.append(dataclasses.replace(failed, copy=k))
                    streak = streak + [failed] if failed.error in _FATAL else []
                    continue
                streaming = len(cells) - i
            result = self._next_result(k)
            streaming = streaming - 1 if self._proc is not None else 0
            streak = streak + [result] if result.error in _FATAL else []
            results.append(result)
        return results

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        if self._conn is not None:
            try:
                self._conn.send_bytes(pickle.dumps(("stop",)))
            except OSError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # _kill below forces it
        self._kill()  # kills a worker still alive, closes the connection and its stderr
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if self._proc is not None:
            self._kill()

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (``None`` before the first cell or after a crash)."""
        return None if self._proc is None else self._proc.pid

    # --- the worker's life ---------------------------------------------------------------

    def _send_block(self, ref: EstimatorRef, spec, stacked: dict[str, np.ndarray], budget: int,
                    cells: list[tuple]) -> CellResult | None:
        """Have the worker (started if need be) load the estimator and start on ``cells``.

        Returns None once the worker is working on them, or the failure to record for the
        first of them (the estimator cannot be loaded, or its loading hung or crashed).
        """
        import jax

        if self._proc is not None and ref.file and ref.file not in self._readable:
            self._kill()  # a sandboxed worker cannot read a file it was not started with
        if self._proc is None:
            self._start(ref.file)
        copy = cells[0][1]
        if pickle.dumps(ref) not in self._loaded:
            # Importing the estimator's module is not part of any cell's time limit.
            start = time.perf_counter()
            reply, failure = self._ask(("load", ref), max(self.timeout_s, _LOAD_TIMEOUT_S))
            if failure:
                return self._failed(copy, failure, time.perf_counter() - start, " while loading the estimator")
            try:
                loaded = json.loads(reply)
                ok, why = loaded["loaded"] is True, str(loaded.get("message", ""))
            except (ValueError, TypeError, KeyError):
                self._kill()
                return CellResult(copy, None, None, 0.0, "crashed", "worker sent a malformed answer; restarted")
            if not ok:
                return CellResult(copy, None, None, 0.0, "exception", why[:300])
            self._loaded.add(pickle.dumps(ref))
        picked = [k for _, k in cells]
        message = ("block", ref, spec, {n: np.ascontiguousarray(v[picked]) for n, v in stacked.items()},
                   int(budget), [np.asarray(jax.random.key_data(key)) for key, _ in cells],
                   str(jax.random.key_impl(cells[0][0])), picked)
        try:
            self._conn.send_bytes(pickle.dumps(message))
        except OSError:
            return self._died(copy, 0.0)
        self._cell_start = time.perf_counter()
        return None

    def _next_result(self, copy: int) -> CellResult:
        """The worker's answer for ``copy``, or the failure to record if it hung, died or babbled."""
        start = self._cell_start
        if not wait([self._conn], timeout=max(0.0, start + self.timeout_s - time.perf_counter())):
            return self._failed(copy, "timeout", time.perf_counter() - start)
        try:
            reply = self._conn.recv_bytes()
        except (EOFError, OSError):
            return self._died(copy, time.perf_counter() - start)
        self._cell_start = time.perf_counter()
        result = _decode_result(reply, copy)
        if result is None:  # the estimator wrote on the worker's channel
            self._kill()
            return CellResult(copy, None, None, time.perf_counter() - start, "crashed",
                              "worker sent a malformed answer; restarted")
        return result

    def _ask(self, message: tuple, timeout_s: float) -> tuple[bytes | None, str]:
        """Send one message; the worker's answer and ``""``, or ``None`` and ``"timeout"``/``"died"``."""
        try:
            self._conn.send_bytes(pickle.dumps(message))
        except OSError:
            return None, "died"
        if not wait([self._conn], timeout=timeout_s):
            return None, "timeout"
        try:
            return self._conn.recv_bytes(), ""
        except (EOFError, OSError):
            return None, "died"

    def _failed(self, copy: int, failure: str, seconds: float, where: str = "") -> CellResult:
        if failure == "timeout":
            self._kill()
            return CellResult(copy, None, None, seconds, "timeout",
                              f"no answer within {seconds:.3g} s{where}; worker killed and restarted")
        return self._died(copy, seconds)

    def _start(self, file: str | None = None) -> None:
        from algzu.estimator import estimator_file, estimator_names

        start = time.perf_counter()
        self._readable = {estimator_file(n) for n in estimator_names()} | ({file} if file else set())
        self._readable = {str(Path(f).resolve()) for f in self._readable}
        parent_sock, child_sock = socket.socketpair()
        # Never the held-out seed's secret (`algzu ... --secret` reads it from $ALGZU_SECRET).
        env = {k: v for k, v in os.environ.items() if k != "ALGZU_SECRET"}
        # The worker imports what the parent can import (tests, scripts), like multiprocessing's spawn.
        paths = [p for p in sys.path if p and Path(p).is_dir()]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
        env.setdefault("MALLOC_ARENA_MAX", "2")
        self._stderr = tempfile.TemporaryFile()
        if self._workdir is None:  # the worker's cwd: empty, so relative paths lead nowhere
            self._workdir = tempfile.TemporaryDirectory(prefix="algzu-worker-", ignore_cleanup_errors=True)
        memory = "" if self.memory_mb is None else str(self.memory_mb)
        env["TMPDIR"] = self._workdir.name
        readable = json.dumps(sorted(self._readable) if self.sandbox else None)
        command = [sys.executable, "-c", "from algzu.isolation import _worker_main; _worker_main()",
                   str(child_sock.fileno()), str(os.getpid()), memory, readable]
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, pass_fds=(child_sock.fileno(),), env=env,
                                          cwd=self._workdir.name)
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._loaded = set()  # estimators (pickled refs) this worker has imported
        if not wait([self._conn], timeout=_STARTUP_TIMEOUT_S):
            tail = self._stderr_tail()
            self._kill()
            raise AlgzuError(f"isolated worker did not start within {_STARTUP_TIMEOUT_S:g} s {tail}".strip())
        try:
            hello = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError, ValueError):
            tail = self._stderr_tail()
            self._kill()
            raise AlgzuError(f"isolated worker failed to start: {tail or 'no message'}") from None
        self.memory_capped = bool(hello.get("memory_capped"))
        self.sandboxed = bool(hello.get("sandboxed"))
        self.startups.append(time.perf_counter() - start)

    def _died(self, copy: int, seconds: float) -> CellResult:
        proc = self._proc
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        tail = self._stderr_tail()
        self._kill()
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        error = "memory" if any(m in tail for m in _MEMORY_MARKERS) else "crashed"
        message = f"worker {how}" + (f": {tail}" if tail else "")
        return CellResult(copy, None, None, seconds, error, message[:300])

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _stderr_tail(self) -> str:
        """The last line the worker wrote on stderr (why it died), or ''."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip()[:200] if lines else ""


def _decode_result(reply: bytes, copy: int) -> CellResult | None:
    """A worker's JSON answer as a CellResult, or None if it is not one (never unpickled)."""
    try:
        data = json.loads(reply)
        result = CellResult(**data)
    except (ValueError, TypeError):
        return None
    numbers = (int, float, type(None))
    if (result.copy != copy or not isinstance(result.estimate, numbers) or not isinstance(result.flops, numbers)
            or not isinstance(result.seconds, (int, float)) or result.error not in ("", *ERROR_CODES)
            or not isinstance(result.message, str)):
        return None
    if not result.error and not (result.estimate is not None and math.isfinite(result.estimate)):
        return None
    return result


# --- the worker process ----------------------------------------------------------------------


def _worker_main() -> None:
    """Entry point of a worker: ``python -c ... FD PARENT_PID MEMORY_MB READABLE_FILES_JSON``."""
    fd, parent_pid, memory, readable = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    _die_with_parent(parent_pid)
    sys.argv = ["algzu-worker"]
    start = time.perf_counter()
    conn = Connection(fd)

    import jax

    from algzu.runner import iter_block

    jax.jit(lambda x: x + 1)(np.float32(1)).block_until_ready()  # start XLA's threads before measuring
    capped = False
    if memory and jax.default_backend() == "cpu" and os.path.exists("/proc/self/statm"):
        import resource

        idle = _address_space_bytes()
        limit = idle + int(memory) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        capped = True
    sandboxed = readable is not None and jax.default_backend() == "cpu" and _restrict_files(readable)
    conn.send_bytes(json.dumps({"ready": True, "memory_capped": capped, "sandboxed": sandboxed,
                                "startup_s": time.perf_counter() - start}).encode())
    estimators: dict[bytes, Estimator] = {}
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        if message[0] == "stop":
            os._exit(0)
        if message[0] == "load":
            conn.send_bytes(json.dumps(_worker_load(estimators, message[1])).encode())
            continue
        _, ref, spec, weights, budget, key_data, impl, copies = message
        keys = [jax.random.wrap_key_data(d, impl=impl) for d in key_data]
        for result in _worker_block(iter_block, estimators, ref, spec, weights, budget, keys, copies):
            conn.send_bytes(json.dumps(dataclasses.asdict(result)).encode())


def _worker_load(estimators: dict[bytes, Estimator], ref: EstimatorRef) -> dict:
    try:
        estimators[pickle.dumps(ref)] = ref.build()
    except BaseException as e:  # noqa: BLE001 - a module that fails to import fails its cells
        return {"loaded": False, "message": f"cannot load estimator {ref.name}: {type(e).__name__}: {e}"}
    return {"loaded": True}


def _worker_block(iter_block, estimators: dict[bytes, Estimator], ref: EstimatorRef, spec,
                  weights: dict[str, np.ndarray], budget: int, keys: list, copies: list[int]):
    """A block in the worker, one CellResult per cell whatever the estimator does.

    ``weights`` are stacked in the order of ``copies``. The program is prepared once for
    the block (by :func:`algzu.runner.iter_block`), again only after an escape.
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


def _as_cell(result: CellResult, copies: list[int]) -> CellResult:
    """The result with its real copy number; an allocation failure is a ``memory`` error."""
    result = dataclasses.replace(result, copy=copies[result.copy])
    if result.error == "exception" and any(m in result.message for m in _MEMORY_MARKERS):
        result = dataclasses.replace(result, error="memory")
    return result


def _restrict_files(readable_files: list[str]) -> bool:
    """Landlock: from now on this process may read only what Python and the estimators need.

    Readable: the Python installation (prefixes, stdlib, site-packages), algzu's own
    packages, ``readable_files`` (the estimators' source files, not their folders) and the
    system folders libraries read (``/usr``, ``/lib*``, ``/etc``, ``/proc``, ``/sys``,
    ``/dev``). Writable: the worker's own temporary folder (its cwd). Everything else --
    the results folder, the ground-truth cache, the user's project -- cannot be opened.
    Returns False (and restricts nothing) where Landlock is unavailable.
    """
    import ctypes
    import struct
    import sysconfig

    import algzu

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    create_ruleset, add_rule, restrict_self = 444, 445, 446  # same numbers on x86_64 and arm64
    abi = libc.syscall(create_ruleset, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return False
    execute, write_file, read_file, read_dir = 1, 2, 4, 8
    handled = (1 << 13) - 1  # ABI 1: execute ... make_sym
    handled |= (1 << 13) if abi >= 2 else 0  # refer
    handled |= (1 << 14) if abi >= 3 else 0  # truncate
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled))
    ruleset = libc.syscall(create_ruleset, attr, ctypes.sizeof(attr) - 1, 0)
    if ruleset < 0:
        return False
    import importlib.util

    packages = []
    for name in ("algzu", "algzu.estimators", "algzu.tasks"):
        try:
            packages += importlib.util.find_spec(name).submodule_search_locations or []
        except (ImportError, AttributeError):
            pass
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *packages,
               *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
               *algzu.__path__, "/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys", "/dev"}
    rules = [(f, execute | read_file | read_dir) for f in folders]
    rules += [(f, read_file) for f in readable_files]
    rules += [(os.getcwd(), handled)]
    try:
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a folder this system does not have
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd))
                if libc.syscall(add_rule, ruleset, 1, rule, 0) < 0:  # LANDLOCK_RULE_PATH_BENEATH
                    return False
            finally:
                os.close(fd)
        pr_set_no_new_privs = 38
        if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(restrict_self, ruleset, 0) == 0
    finally:
        os.close(ruleset)


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits when its socket closes
    if os.getppid() != parent_pid:
        os._exit(0)

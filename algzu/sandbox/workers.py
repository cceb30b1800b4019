"""Run estimator cells in worker processes: sealed from the weights, and fault-contained.

A leaderboard runs code written by people who want to top it. Two ``block_runner``\\s for
:func:`algzu.run.run_suite` (same signature as :func:`algzu.sandbox.runner.run_block`):

* :class:`SealedRunner` (the default): the estimator's code never shares a process with
  the weights it is scored on, nor with another estimator file's code. A **tracer** worker
  per estimator file imports that file only and traces its
  ``estimate`` on abstract weights into a serialized program (:func:`algzu.sandbox.program.trace`);
  it is sent the estimator's settings, the spec and the budget, never an array, a cache
  path, a ground truth or a secret. An **executor** worker, which never imports estimator
  code, checks and meters that program (:mod:`algzu.hlo_meter`), compiles it and runs it on
  each noisy copy (:func:`algzu.sandbox.runner.iter_program`). Only ``backend = "jax"`` estimators
  can be sealed; a ``numpy`` estimator (its code must hold the weights to compute on them)
  runs unsealed, as below, and its rows say so.
* :class:`IsolatedRunner` (``--unsealed``): the estimator's code runs in one worker with
  the weights (:func:`algzu.sandbox.runner.iter_block`). Fault containment and file confinement,
  but the estimator's code can read the weights it is scored on, so its results never
  count for a verdict.

Either way, what goes wrong is recorded with a stable error code (see :mod:`algzu.sandbox.runner`):

==============================================  ===============  ==========================
the estimator ...                               error code       worker
==============================================  ===============  ==========================
raises (``sys.exit`` included)                  ``exception``    kept
gives a program the meter cannot price          ``refused``      kept
returns NaN / inf                               ``non_finite``   kept
returns a value out of range                    ``out_of_range`` kept
returns a non-scalar or non-number              ``bad_type``     kept
is metered above its budget                     ``over_budget``  kept
gives no answer within ``timeout_s``            ``timeout``      killed, restarted
kills its process (``os._exit``, a segfault)    ``crashed``      restarted
allocates beyond ``memory_mb``                  ``memory``       kept (restarted if it died)
==============================================  ===============  ==========================

How it works (this module is the parent's side; :mod:`algzu.sandbox.serve` runs inside a worker):

* **Workers, reused.** A worker is a fresh interpreter (a spawn, never a fork: JAX is not
  fork-safe) that initialises JAX on the CPU once and then serves blocks over a socket. It
  is started when first needed (the tracers of a listing all at once) and reused across
  blocks; restarted only after it died or hung. A sealed run has one tracer per estimator
  file (a module body that patches JAX or a rival's class, ``tests/redteam/
  attack_sabotage_rivals.py``, reaches only its own file's programs) and one executor; an
  unsealed run one worker for every file, since its rows never count. Startup costs about
  as much as ``import jax`` plus one tiny compile (3-5 s on a loaded 2-core host). A tracer
  keeps no secret from one block to the next because it never receives one: everything it
  is sent (settings, spec, budget) is public and part of the block's cache key.
* **Confined from its first instruction.** :mod:`algzu.sandbox.landlock` is the worker's entry: it
  applies Landlock (Linux >= 5.13) before numpy or JAX start any thread, so every thread
  of the worker is confined: it may read the Python installation, algzu's packages, the
  estimators' source files and system folders, and in ``/proc`` only its own entry (not
  its parent's command line or environment); it may write only its own temporary folder
  (its cwd). The ground-truth cache, the results and a secret file cannot be opened even by
  absolute path, and the parent cannot be ptrace-d. ``sandbox=False`` turns this off;
  :attr:`sandboxed` says whether it took effect. Workers get ``JAX_PLATFORMS=cpu``, an
  environment without ``$ALGZU_SECRET``, ``sys.argv`` reset, and stdin/stdout closed.
* **A block in, one answer per cell out**, so the timeout is per cell: a cell with no
  answer within ``timeout_s`` of the previous one (the first cell's includes compiling; a
  sealed block's tracing has its own ``timeout_s``) is recorded and the worker killed; a
  new worker takes the rest of the block. Importing the estimator's module happens once
  per worker, before its first block, under its own limit (``max(timeout_s, 120 s)``).
  Answers travel back as JSON (a program as raw bytes), never as pickles, so a worker
  cannot run code in the parent.
* **Estimators are re-created in the worker** from :class:`EstimatorRef`: the class's
  module and qualified name, its source file (a file loaded with ``--include`` is included
  again in the worker) and its dataclass fields. Settings are all an estimator has.
* **Memory cap.** After JAX is initialised the worker sets ``RLIMIT_AS`` to its idle
  address space plus ``memory_mb``; relative, because XLA reserves a large,
  host-dependent address space at start. ``MALLOC_ARENA_MAX=2`` keeps glibc from reserving
  64 MiB per thread. An allocation past the cap raises ``MemoryError`` (or XLA's
  ``RESOURCE_EXHAUSTED``) or aborts the worker; either way the cell is ``memory``.
  Measured with ``sampling`` at 1e8 FLOPs on the d=16, n=10 model: 512 MiB is enough,
  128 MiB is not (XLA's compiler cannot start its threads).
* **Give up on a block.** After ``give_up_after`` consecutive ``timeout``/``crashed``/
  ``memory`` cells in one block the rest of that block is recorded with the same code
  without running it.
* **Workers die with their parent** (``PR_SET_PDEATHSIG``), so killing a leaderboard run
  never leaves an orphan spinning.
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
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from algzu.errors import AlgzuError
from algzu.estimator import INCLUDED_PREFIX, Estimator, include_path, included_files
from algzu.model import ModelSpec
from algzu.registry import check_name
from algzu.sandbox.runner import ERROR_CODES, CellResult

# Error codes after which the worker is gone or unusable: they count towards give_up_after.
_FATAL = ("timeout", "crashed", "memory")
# Words in an exception or a dying worker's stderr that mean an allocation failed.
# Under RLIMIT_AS a thread's stack cannot be reserved either: LLVM then aborts on pthread_create.
MEMORY_MARKERS = ("MemoryError", "RESOURCE_EXHAUSTED", "bad_alloc", "Cannot allocate memory", "Out of memory",
                  "pthread_create failed")
_STARTUP_TIMEOUT_S = 300.0  # import jax on a loaded 2-core machine can take a minute
_LOAD_TIMEOUT_S = 120.0  # importing an estimator's module (at least this, or the cell timeout)
_MAX_PROGRAM_BYTES = 1 << 30  # a serialized program larger than this is refused unread
# Worker roles: who holds what. Estimator code and weights never meet in a sealed run.
UNSEALED, TRACER, EXECUTOR = "unsealed", "tracer", "executor"
# An estimator source that is not a file: an ``algzu.estimators`` entry point, by name.
ENTRY_POINT = "entry point "


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
    def of(cls, estimator: Estimator | EstimatorCard) -> EstimatorRef:
        """The reference of an estimator instance (in a worker or a test), or of a card."""
        import inspect

        if isinstance(estimator, EstimatorCard):
            return estimator.ref
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
        if not self.module.startswith(INCLUDED_PREFIX) and self.module != "__main__":
            try:
                module = importlib.import_module(self.module)
            except ImportError:
                module = None
        if module is None:
            if self.file is None:
                raise AlgzuError(f"estimator {self.name}: module {self.module} has no source file to include")
            module = include_file(Path(self.file))
        kind = functools.reduce(getattr, self.qualname.split("."), module)
        return kind(**dict(self.fields))


def include_file(path: Path):
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
        if file and getattr(module, "__name__", "").startswith(INCLUDED_PREFIX) and Path(file).resolve() == path:
            return module
    return None


@dataclasses.dataclass(frozen=True)
class EstimatorCard:
    """The harness's view of an estimator: data a sandboxed worker read from it, no code.

    The harness never imports an estimator's file: its module body would run in the process
    that holds the weights, the ground truth and the scorer (``tests/redteam/
    attack_import_time.py`` rewrites the scorer that way). :meth:`SealedRunner.catalog`
    asks each estimator file's worker, which imports that file and answers in JSON; a card
    then stands in for the estimator on the trusted side (names, flags, settings for cache
    keys, declared models, and the reference a worker re-creates it from).

    Attributes:
        name, mechanistic, backend: the class's declarations.
        ref: what a worker re-creates the estimator from.
        settings: ``repr`` of the instance, as the worker made it (part of cache keys).
        asked: the specs the worker was asked about; supported: those it declares.
    """

    name: str
    mechanistic: bool
    backend: str
    ref: EstimatorRef
    settings: str
    asked: frozenset[ModelSpec]
    supported: frozenset[ModelSpec]

    def supports(self, spec: ModelSpec) -> bool:
        """Whether the estimator declares ``spec``, as answered when the card was made."""
        if spec not in self.asked:
            raise ValueError(f"the catalog was not asked whether {self.name} supports {spec}")
        return spec in self.supported

    def __repr__(self) -> str:
        return self.settings


def _decode_catalog(reply: bytes | None, source: str, specs: list[ModelSpec]) -> list[EstimatorCard]:
    """A worker's catalog answer for the file ``source`` as cards, checked field by field
    (never unpickled, no code): every card's class must live in that file."""
    import ast

    def bad(why: str) -> AlgzuError:
        return AlgzuError(f"the estimator catalog answered malformed data ({why})")

    try:
        data = json.loads(reply)
    except (TypeError, ValueError):
        raise bad("not JSON") from None
    if not isinstance(data, dict):
        raise bad("not an object")
    if data.get("ok") is not True:  # an unknown name (the registry's words) or a file that fails to load
        raise AlgzuError(f"cannot load the estimators: {str(data.get('message', ''))[:300]}")
    cards = []
    for c in data.get("cards", []) if isinstance(data.get("cards"), list) else [None]:
        try:
            name, module, qualname, file = c["name"], c["module"], c["qualname"], c["file"]
            fields = ast.literal_eval(c["fields"])
            supports = c["supports"]
            mechanistic, backend, settings = c["mechanistic"], c["backend"], c["settings"]
        except (TypeError, KeyError, ValueError, SyntaxError):
            raise bad("a card lacks a field or its settings are not literals") from None
        if not (all(isinstance(x, str) for x in (name, module, qualname, settings))
                and isinstance(file, (str, type(None))) and isinstance(mechanistic, bool) and backend in ("jax", "numpy") and isinstance(fields, tuple)
                and all(isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], str) for f in fields)
                and isinstance(supports, list) and len(supports) == len(specs)
                and all(isinstance(x, bool) for x in supports)):
            raise bad(f"card {str(c.get('name'))[:40]!r}")
        try:  # the worker's registry checked it too, but a worker answers what it likes
            check_name(name, "estimator")
        except AlgzuError:
            raise bad(f"estimator name {name[:40]!r}") from None
        if file is None or not (source.startswith(ENTRY_POINT) or Path(file).resolve() == Path(source)):
            raise bad(f"{name}: its class is not in {source}")
        ref = EstimatorRef(name, module, qualname, file, fields)
        cards.append(EstimatorCard(name, mechanistic, backend, ref, settings, frozenset(specs),
                                   frozenset(s for s, ok in zip(specs, supports) if ok)))
    return cards


def _check_entry_point_file(source: str, card: EstimatorCard, sources: Mapping[str, str | None]) -> None:
    """An entry point's card names the file its class is in, as its own worker says, and the
    runner makes that worker the tracer of that file. So the file must be one its package
    installed (its distribution's ``RECORD``), and not another source's or in algzu's
    folders: a red-team pass had a plug-in claim ``estimators/sampling.py`` and list the
    shipped baselines as supporting no model, and a review found that one plug-in could
    claim another's file the same way (and trace, so sabotage, its estimators)."""
    from importlib import metadata

    key = _source_key(card.ref.file)
    entries = metadata.entry_points(group="algzu.estimators", name=source.removeprefix(ENTRY_POINT))
    installed = {str(Path(f.locate()).resolve()) for e in entries if e.dist is not None for f in e.dist.files or ()}
    algzu_dirs = [Path(d).resolve() for d in _algzu_dirs()]
    if (not card.ref.file or key not in installed or key in sources
            or any(Path(key).is_relative_to(d) for d in algzu_dirs)):
        raise AlgzuError(f"cannot load the estimators: {source} says {card.name!r} is in {card.ref.file!r}, "
                         "which is not a file of its own package")


def _outside_folders(files: set[str | None]) -> set[str]:
    """``files`` (resolved) less those every worker may read anyway (:func:`_readable_dirs`);
    entry-point sources are not files."""
    folders = [Path(d).resolve() for d in _readable_dirs()]
    return {str(Path(f).resolve()) for f in files if f and not f.startswith(ENTRY_POINT)
            and not any(Path(f).resolve().is_relative_to(d) for d in folders)}


def _source_key(source: str | None) -> str:
    """One key per estimator source: a resolved file, an entry point, or "" (no file)."""
    if not source:
        return ""
    return source if source.startswith(ENTRY_POINT) else str(Path(source).resolve())


def _named_in(source: str) -> set[str]:
    """The ``name = "..."`` strings of the classes in a file, read as text (never run): a
    hint of which file defines which estimator, checked by the file's own worker."""
    try:
        return set(_names_in_text(Path(source).read_text()))
    except (OSError, ValueError):
        return set()


@functools.lru_cache(maxsize=256)
def _names_in_text(text: str) -> frozenset[str]:
    """:func:`_named_in` of a file's text, cached by the text: every catalog reads every file."""
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return frozenset()
    found = set()
    for node in ast.walk(tree):
        for stmt in node.body if isinstance(node, ast.ClassDef) else ():
            # `name = "..."` (targets) or `name: str = "..."` (target)
            targets = getattr(stmt, "targets", None) or [getattr(stmt, "target", None)]
            value = getattr(stmt, "value", None)
            if (any(isinstance(t, ast.Name) and t.id == "name" for t in targets)
                    and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                found.add(value.value)
    return frozenset(found)


class _Worker:
    """The parent's handle on one worker process of one role (started on demand).

    Args:
        role: ``UNSEALED`` (estimator code and weights), ``TRACER`` (estimator code, no
            weights) or ``EXECUTOR`` (weights and programs, no estimator code).
        memory_mb: MiB of address space the worker may add to its idle footprint, or None.
        sandbox: confine the worker with Landlock (:mod:`algzu.sandbox.landlock`).
    """

    def __init__(self, role: str, memory_mb: int | None, sandbox: bool) -> None:
        self.role = role
        self.memory_mb = memory_mb
        self.sandbox = sandbox
        self.startups: list[float] = []
        self.memory_capped = False
        self.sandboxed = False
        self.readable: set[str] = set()  # estimator files the running worker may read
        self.loaded: set[bytes] = set()  # estimators (pickled refs) the running worker has imported
        self.proc: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.ready = False  # launched and said hello
        self._launched = 0.0
        self._stderr = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def start(self, files: set[str]) -> None:
        """Start the worker; it may read ``files`` (estimator sources) besides its packages.

        Raises:
            AlgzuError: it did not start.
        """
        self.launch(files)
        self.await_ready()

    def launch(self, files: set[str]) -> None:
        """Spawn the worker without waiting for it (:meth:`await_ready` does), so that
        several start at once."""
        self._launched = time.perf_counter()
        self.readable = {str(Path(f).resolve()) for f in files}
        parent_sock, child_sock = socket.socketpair()
        # Never the held-out seed's secret (`algzu ... --secret` reads it from $ALGZU_SECRET).
        env = {k: v for k, v in os.environ.items() if k != "ALGZU_SECRET"}
        # The worker imports what the parent can import (tests, scripts), like multiprocessing's spawn.
        paths = [p for p in sys.path if p and Path(p).is_dir()]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths + env.get("PYTHONPATH", "").split(os.pathsep)))
        env.setdefault("MALLOC_ARENA_MAX", "2")
        env["JAX_PLATFORMS"] = "cpu"  # one small program at a time; no accelerator drivers to confine
        self._stderr = tempfile.TemporaryFile()
        if self._workdir is None:  # the worker's cwd: empty, so relative paths lead nowhere
            self._workdir = tempfile.TemporaryDirectory(prefix=f"algzu-{self.role}-", ignore_cleanup_errors=True)
        env["TMPDIR"] = self._workdir.name
        sandbox = None
        if self.sandbox:
            sandbox = {"dirs": sorted(_readable_dirs()),
                       "files": sorted(self.readable)}
        boot = Path(__file__).with_name("landlock.py")
        # Loaded by path, not imported: importing algzu would start threads before Landlock.
        code = ("import importlib.util as u, sys; s = u.spec_from_file_location('algzu_landlock', sys.argv[1]); "
                "m = u.module_from_spec(s); s.loader.exec_module(m); m.boot()")
        command = [sys.executable, "-c", code, str(boot), str(child_sock.fileno()), str(os.getpid()), self.role,
                   "" if self.memory_mb is None else str(self.memory_mb), json.dumps(sandbox)]
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=self._stderr, pass_fds=(child_sock.fileno(),), env=env,
                                         cwd=self._workdir.name)
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.loaded = set()
        self.ready = False

    def await_ready(self) -> None:
        """Wait for a launched worker's hello.

        Raises:
            AlgzuError: it did not start.
        """
        reply, failure = self.receive(_STARTUP_TIMEOUT_S)
        try:
            hello = json.loads(reply) if reply is not None else None
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("ready") is not True:
            tail = self.stderr_tail()
            self.kill()
            why = f"did not start within {_STARTUP_TIMEOUT_S:g} s" if failure == "timeout" else "failed to start"
            raise AlgzuError(f"isolated {self.role} worker {why}: {tail or 'no message'}")
        self.memory_capped = bool(hello.get("memory_capped"))
        self.sandboxed = bool(hello.get("sandboxed"))
        self.ready = True
        self.startups.append(time.perf_counter() - self._launched)

    def send(self, message: tuple) -> bool:
        """Send one message (pickled: the worker trusts its parent); False if the worker is gone."""
        try:
            self.conn.send_bytes(pickle.dumps(message))
            return True
        except OSError:
            return False

    def receive(self, timeout_s: float) -> tuple[bytes | None, str]:
        """The worker's next message and ``""``, or ``None`` and ``"timeout"`` / ``"died"``."""
        if not wait([self.conn], timeout=max(0.0, timeout_s)):
            return None, "timeout"
        try:
            return self.conn.recv_bytes(), ""
        except (EOFError, OSError):
            return None, "died"

    def ask(self, message: tuple, timeout_s: float) -> tuple[bytes | None, str]:
        """Send one message and wait for the answer (see :meth:`receive`)."""
        if not self.send(message):
            return None, "died"
        return self.receive(timeout_s)

    def failure(self, copy: int, failure: str, seconds: float, where: str = "") -> CellResult:
        """The cell to record after ``"timeout"`` (the worker is killed) or ``"died"``."""
        if failure == "timeout":
            self.kill()
            return CellResult(copy, None, None, seconds, "timeout",
                              f"no answer within {seconds:.3g} s{where}; worker killed and restarted")
        proc = self.proc
        try:
            code = proc.wait(timeout=10) if proc is not None else None
        except subprocess.TimeoutExpired:
            code = None
        tail = self.stderr_tail()
        self.kill()
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with code {code}"
        error = "memory" if any(m in tail for m in MEMORY_MARKERS) else "crashed"
        message = f"{self.role} worker {how}{where}" + (f": {tail}" if tail else "")
        return CellResult(copy, None, None, seconds, error, message[:300])

    def malformed(self, copy: int, seconds: float) -> CellResult:
        """The cell to record when the worker's answer is not one (the worker is restarted)."""
        self.kill()
        return CellResult(copy, None, None, seconds, "crashed", f"{self.role} worker sent a malformed answer; restarted")

    def kill(self) -> None:
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        self.ready = False
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if conn is not None:
            conn.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop the worker (politely, then by force) and remove its folder."""
        if self.conn is not None:
            self.send(("stop",))
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # kill below forces it
        self.kill()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def stderr_tail(self) -> str:
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


def _python_dirs() -> set[str]:
    import sysconfig

    return {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))}


def _readable_dirs() -> set[str]:
    """The folders every confined worker may read: the Python installation, algzu and its
    plug-in folders."""
    return _python_dirs() | _algzu_dirs()


def _algzu_dirs() -> set[str]:
    """algzu's package folder and its plug-in folders."""
    import algzu

    return set(algzu.__path__) | _package_dirs()


def _package_dirs(names: tuple[str, ...] = ("algzu.estimators", "algzu.tasks")) -> set[str]:
    """Where algzu's plug-in packages (tasks/, estimators/) live: they may sit outside algzu/."""
    import importlib.util

    dirs = set()
    for name in names:
        try:
            dirs |= set(importlib.util.find_spec(name).submodule_search_locations or [])
        except (ImportError, AttributeError):
            pass
    return dirs


class _Runner:
    """What both runners share: limits, loading an estimator in a worker, streaming a block."""

    def __init__(self, timeout_s: float, memory_mb: int | None, give_up_after: int | None, sandbox: bool,
                 includes: Sequence[str | Path] = ()) -> None:
        self.includes = {str(include_path(p)) for p in includes}
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

    def _included(self) -> set[str]:
        """Estimator files outside the estimator folders that workers must load: this
        runner's ``includes`` and what :func:`algzu.estimator.include` registered here."""
        return self.includes | included_files()

    def _sources(self) -> dict[str, str | None]:
        """Every estimator source of a run with how a worker loads it: the files of
        ``estimators/`` (resolved) with the module they are imported as
        (``algzu.estimators.<stem>``), included files with None, and each entry point of
        the group ``algzu.estimators`` (``ENTRY_POINT + name``, read from the installed
        packages' metadata, never loaded here) with its name."""
        from importlib import metadata

        sources: dict[str, str | None] = {}
        for folder in sorted(Path(d).resolve() for d in _package_dirs(("algzu.estimators",))):
            for path in sorted(folder.glob("*.py")):
                if not path.name.startswith("_"):
                    sources[str(path)] = f"algzu.estimators.{path.stem}"
        for path in sorted(self._included()):
            sources.setdefault(str(Path(path).resolve()), None)
        for entry in sorted(metadata.entry_points(group="algzu.estimators"), key=lambda e: e.name):
            sources[ENTRY_POINT + entry.name] = entry.name
        return sources

    def _worker_for(self, source: str | None) -> _Worker:
        """The worker that lists and loads the estimators of file ``source``."""
        raise NotImplementedError

    def _files_for(self, source: str | None) -> set[str]:
        """The files outside algzu's folders that the worker of ``source`` must be able to read."""
        raise NotImplementedError

    def _ready(self, worker: _Worker, files: set[str]) -> None:
        """Start ``worker`` if needed, able to read ``files`` (restarted if it cannot)."""
        self._launch(worker, files)
        if not worker.ready:
            worker.await_ready()

    @staticmethod
    def _launch(worker: _Worker, files: set[str]) -> None:
        if worker.alive and not {str(Path(f).resolve()) for f in files} <= worker.readable:
            worker.kill()  # a sandboxed worker cannot read a file it was not started with
        if not worker.alive:
            worker.launch(files)

    def _catalog(self, names: Sequence[str] | None, specs: Sequence[ModelSpec]) -> list[EstimatorCard]:
        """Cards of the estimators ``names`` (every one for None), each file's made by the
        worker of that file (:meth:`_worker_for`; this process never imports them).

        Named estimators are looked for first in the files whose classes set that ``name``
        (read as text), in the entry points and in this runner's ``includes`` (files the user
        named must load, whatever is asked of them), then, for any not found, in every other
        file.

        Raises:
            AlgzuError: an unknown name (with the valid ones), a name two files define, an
                estimator file that fails to load, or an answer that is not a catalog.
        """
        sources, specs = self._sources(), list(specs)
        asked = list(sources) if names is None else [
            s for s in sources if s.startswith(ENTRY_POINT) or s in self.includes or _named_in(s) & set(names)]
        cards = self._read_catalog(asked, sources, specs)
        if names is not None and not set(names) <= {c.name for c in cards}:
            cards += self._read_catalog([s for s in sources if s not in asked], sources, specs)
        found: dict[str, EstimatorCard] = {}
        for card in cards:
            if card.name in found:
                raise AlgzuError(f"cannot load the estimators: duplicate estimator name {card.name!r}: "
                                 f"{found[card.name].ref.file} and {card.ref.file}")
            found[card.name] = card
        if names is None:
            return [found[n] for n in sorted(found)]
        for name in names:
            if name not in found:
                raise AlgzuError(f"cannot load the estimators: unknown estimator {name!r}; "
                                 f"valid estimators: {', '.join(sorted(found)) or '(none)'}")
        return [found[n] for n in names]

    def _read_catalog(self, asked: list[str], sources: dict[str, str | None],
                      specs: list[ModelSpec]) -> list[EstimatorCard]:
        """The cards of the files ``asked``: every worker started, then every file asked, at once."""
        workers: dict[int, tuple[_Worker, set[str]]] = {}
        for source in asked:
            worker, files = workers.get(id(w := self._worker_for(source)), (w, set()))
            workers[id(worker)] = (worker, files | self._files_for(source))
        replies = []
        try:
            for worker, files in workers.values():
                self._launch(worker, files)
            for source in asked:
                worker = self._worker_for(source)
                if not worker.ready:
                    worker.await_ready()
                worker.send(("catalog", source, sources[source], specs))
            for source in asked:  # a worker answers in the order it was asked
                worker = self._worker_for(source)
                timeout = max(self.timeout_s, _LOAD_TIMEOUT_S)
                reply, failure = worker.receive(timeout) if worker.alive else (None, "died")
                if failure:
                    raise AlgzuError(f"cannot list the estimators of {Path(source).name}: "
                                     f"its worker {failure}: {worker.stderr_tail()}"[:400])
                replies.append((source, worker, reply))
        except BaseException:
            for worker, _ in workers.values():
                worker.kill()  # answers still on their way must not be read as another message's
            raise
        cards = []
        for source, worker, reply in replies:
            found = _decode_catalog(reply, source, specs)
            for card in found:  # an entry point's estimators are traced where they were listed
                if source.startswith(ENTRY_POINT):
                    _check_entry_point_file(source, card, sources)
                self._adopt(card.ref.file, worker)
            cards += found
        return cards

    def _adopt(self, file: str | None, worker: _Worker) -> None:
        """Make ``worker`` the one that loads the estimators of ``file`` (if none is yet)."""

    def _with_estimator(self, worker: _Worker, ref: EstimatorRef, copy: int) -> CellResult | None:
        """Make sure ``worker`` runs and has imported ``ref``'s module; a failure to record, or None."""
        self._ready(worker, self._files_for(ref.file))
        if pickle.dumps(ref) in worker.loaded:
            return None
        # Importing the estimator's module is not part of any cell's time limit.
        start = time.perf_counter()
        reply, failure = worker.ask(("load", ref), max(self.timeout_s, _LOAD_TIMEOUT_S))
        if failure:
            return worker.failure(copy, failure, time.perf_counter() - start, " while loading the estimator")
        try:
            loaded = json.loads(reply)
            ok, why = loaded["loaded"] is True, str(loaded.get("message", ""))
        except (ValueError, TypeError, KeyError):
            return worker.malformed(copy, 0.0)
        if not ok:
            return CellResult(copy, None, None, 0.0, "exception", why[:300])
        worker.loaded.add(pickle.dumps(ref))
        return None

    def _stream(self, worker: _Worker, start: Callable[[list[tuple[int, int]]], CellResult | None],
                cells: list[tuple[int, int]]) -> list[CellResult]:
        """Run ``cells`` (pairs of position in the block and copy) on ``worker``, one answer each.

        ``start(remaining)`` (re)starts the worker on the remaining cells and returns None, or
        the failure to record for the first of them. After a timeout or a crash the worker
        is restarted on the rest; after ``give_up_after`` such cells in a row the rest of the
        block is recorded failed without running.
        """
        results: list[CellResult] = []
        streak: list[CellResult] = []  # consecutive timed-out / crashed / out-of-memory cells
        streaming = 0  # cells the worker is still working through
        cell_start = 0.0
        for i, (_, k) in enumerate(cells):
            if self.give_up_after is not None and len(streak) >= self.give_up_after:
                if streaming:
                    worker.kill()  # stop it working on cells that will not be read
                    streaming = 0
                last = streak[-1]
                results.append(CellResult(k, None, None, 0.0, last.error,
                                          f"not run: {len(streak)} cells in a row failed ({last.message})"[:300]))
                continue
            if not streaming:  # (re)start the block from this cell on
                failed = start(cells[i:])
                if failed is not None:
                    results.append(dataclasses.replace(failed, copy=k))
                    streak = streak + [failed] if failed.error in _FATAL else []
                    continue
                streaming = len(cells) - i
                cell_start = time.perf_counter()
            reply, failure = worker.receive(cell_start + self.timeout_s - time.perf_counter())
            seconds = time.perf_counter() - cell_start
            if failure:
                result = worker.failure(k, failure, seconds)
            else:
                result = _decode_result(reply, k)
                if result is None:  # the estimator wrote on the worker's channel
                    result = worker.malformed(k, seconds)
            cell_start = time.perf_counter()
            streaming = streaming - 1 if worker.alive else 0
            streak = streak + [result] if result.error in _FATAL else []
            results.append(result)
        return results


class IsolatedRunner(_Runner):
    """An *unsealed* ``block_runner``: each cell runs in a worker process that holds the
    estimator's code and the copies' weights, with a timeout and a memory cap.

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
        sandbox: confine the worker with Landlock (see the module docstring).

    Attributes:
        startups: seconds each worker start took (spawn to ready), in order.
        memory_capped: whether the last worker applied the memory cap.
        sandboxed: whether the last worker was confined.
    """

    def __init__(self, timeout_s: float = 600.0, memory_mb: int | None = 4096,
                 give_up_after: int | None = 3, sandbox: bool = True, includes: Sequence[str | Path] = ()) -> None:
        super().__init__(timeout_s, memory_mb, give_up_after, sandbox, includes)
        self._worker = _Worker(UNSEALED, memory_mb, sandbox)

    def catalog(self, names: Sequence[str] | None, specs: Sequence[ModelSpec]) -> list[EstimatorCard]:
        """:class:`EstimatorCard`\\s of ``names`` (all for None), read by the worker."""
        return self._catalog(names, specs)

    def _worker_for(self, source: str | None) -> _Worker:
        return self._worker  # one worker for every file: unsealed rows never count

    def _files_for(self, source: str | None) -> set[str]:
        return _outside_folders(self._included() | {source})

    def seals(self, estimator: Estimator) -> bool:
        """Whether this runner's results for ``estimator`` are sealed: never."""
        return False

    def __call__(self, estimator: Estimator, spec, stacked: dict[str, np.ndarray], budget: int,
                 keys: list, copies: list[int]) -> list[CellResult]:
        """Run ``estimator`` on the given copies at one budget; each cell has ``timeout_s``."""
        from algzu.sandbox.program import key_data

        ref = EstimatorRef.of(estimator)
        data = [key_data(key) for key in keys]
        cells = list(enumerate(copies))

        def start(remaining: list[tuple[int, int]]) -> CellResult | None:
            failed = self._with_estimator(self._worker, ref, remaining[0][1])
            if failed is not None:
                return failed
            picked = [k for _, k in remaining]
            message = ("block", ref, spec, {n: np.ascontiguousarray(v[picked]) for n, v in stacked.items()},
                       int(budget), [data[i] for i, _ in remaining], picked)
            return None if self._worker.send(message) else self._worker.failure(remaining[0][1], "died", 0.0)

        try:
            return self._stream(self._worker, start, cells)
        except BaseException:
            self._worker.kill()  # interrupted mid-block: its answers must not be read as the next block's
            raise

    @property
    def startups(self) -> list[float]:
        return self._worker.startups

    @property
    def memory_capped(self) -> bool:
        return self._worker.memory_capped

    @property
    def sandboxed(self) -> bool:
        return self._worker.sandboxed

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (``None`` before the first cell or after a crash)."""
        return None if self._worker.proc is None else self._worker.proc.pid

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        self._worker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_worker", None) is not None and self._worker.alive:
            self._worker.kill()


class SealedRunner(_Runner):
    """The default ``block_runner``: a JAX estimator's code and the weights never meet.

    Each block: the tracer worker (estimator code, no weights) traces ``estimate`` for the
    spec and budget into a program (one ``timeout_s`` for loading aside); the executor
    worker (no estimator code) meters it, compiles it and runs it on each copy, one answer
    per cell with ``timeout_s`` each. A ``numpy`` estimator cannot be sealed: it runs in an
    unsealed worker (:class:`IsolatedRunner`) and :meth:`seals` says so.

    Args: as :class:`IsolatedRunner`.

    Attributes:
        startups: seconds each worker start took, tracer's and executor's, in order.
        memory_capped, sandboxed: whether every started worker applied the cap / was
            confined.
    """

    def __init__(self, timeout_s: float = 600.0, memory_mb: int | None = 4096,
                 give_up_after: int | None = 3, sandbox: bool = True, includes: Sequence[str | Path] = ()) -> None:
        super().__init__(timeout_s, memory_mb, give_up_after, sandbox, includes)
        self._tracers: dict[str, _Worker] = {}  # by estimator file: one file's code never meets another's
        self._executor = _Worker(EXECUTOR, memory_mb, sandbox)
        self._unsealed = IsolatedRunner(timeout_s=timeout_s, memory_mb=memory_mb, give_up_after=give_up_after,
                                        sandbox=sandbox, includes=includes)

    def catalog(self, names: Sequence[str] | None, specs: Sequence[ModelSpec]) -> list[EstimatorCard]:
        """:class:`EstimatorCard`\\s of ``names`` (all for None), each read by its file's tracer."""
        return self._catalog(names, specs)

    def _worker_for(self, source: str | None) -> _Worker:
        key = _source_key(source)
        if key not in self._tracers:
            self._tracers[key] = _Worker(TRACER, self.memory_mb, self.sandbox)
        return self._tracers[key]

    def _adopt(self, file: str | None, worker: _Worker) -> None:
        self._tracers.setdefault(_source_key(file), worker)

    def _files_for(self, source: str | None) -> set[str]:
        return _outside_folders({source})

    def seals(self, estimator: Estimator) -> bool:
        """Whether this runner's results for ``estimator`` are sealed: JAX estimators only."""
        return estimator.backend == "jax"

    def __call__(self, estimator: Estimator, spec, stacked: dict[str, np.ndarray], budget: int,
                 keys: list, copies: list[int]) -> list[CellResult]:
        """Run ``estimator`` on the given copies at one budget, sealed if it can be."""
        if not self.seals(estimator):
            return self._unsealed(estimator, spec, stacked, budget, keys, copies)
        from algzu.sandbox.program import key_data

        data = [key_data(key) for key in keys]
        ref = EstimatorRef.of(estimator)
        try:
            blob = self._trace(ref, spec, int(budget), copies[0])
            if isinstance(blob, CellResult):  # the estimator cannot be traced: every cell fails alike
                return [dataclasses.replace(blob, copy=k) for k in copies]

            def start(remaining: list[tuple[int, int]]) -> CellResult | None:
                if not self._executor.alive:
                    self._executor.start(set())
                picked = [k for _, k in remaining]
                message = ("run", blob, spec, {n: np.ascontiguousarray(v[picked]) for n, v in stacked.items()},
                           int(budget), [data[i] for i, _ in remaining], picked)
                return None if self._executor.send(message) else self._executor.failure(picked[0], "died", 0.0)

            return self._stream(self._executor, start, list(enumerate(copies)))
        except BaseException:
            # interrupted mid-block: their answers must not be read as the next block's
            self._worker_for(ref.file).kill()
            self._executor.kill()
            raise

    def _trace(self, ref: EstimatorRef, spec, budget: int, copy: int) -> bytes | CellResult:
        """The program the tracer of ``ref``'s file makes for (spec, budget), or the failure to record."""
        tracer = self._worker_for(ref.file)
        failed = self._with_estimator(tracer, ref, copy)
        if failed is not None:
            return failed
        start = time.perf_counter()
        reply, failure = tracer.ask(("trace", ref, spec, budget), self.timeout_s)
        if failure:
            return tracer.failure(copy, failure, time.perf_counter() - start, " while tracing")
        try:
            header = json.loads(reply)
            ok = header["ok"]
        except (ValueError, TypeError, KeyError):
            return tracer.malformed(copy, time.perf_counter() - start)
        if ok is not True:
            message = header.get("message") if isinstance(header.get("message"), str) else ""
            error = header.get("error") if header.get("error") in ("memory", "refused") else "exception"
            return CellResult(copy, None, None, time.perf_counter() - start, error, message[:300])
        blob, failure = tracer.receive(self.timeout_s - (time.perf_counter() - start))
        if failure:
            return tracer.failure(copy, failure, time.perf_counter() - start, " while tracing")
        if len(blob) > _MAX_PROGRAM_BYTES:
            return CellResult(copy, None, None, time.perf_counter() - start, "refused",
                              f"program of {len(blob):,} bytes exceeds {_MAX_PROGRAM_BYTES:,}")
        return blob

    def _workers(self) -> list[_Worker]:
        """Every worker once (an entry point's tracer is also its file's)."""
        return list({id(w): w for w in (*self._tracers.values(), self._executor, self._unsealed._worker)}.values())

    @property
    def startups(self) -> list[float]:
        return [t for w in self._workers() for t in w.startups]

    @property
    def memory_capped(self) -> bool:
        workers = [w for w in self._workers() if w.startups]
        return bool(workers) and all(w.memory_capped for w in workers)

    @property
    def sandboxed(self) -> bool:
        workers = [w for w in self._workers() if w.startups]
        return bool(workers) and all(w.sandboxed for w in workers)

    @property
    def tracer_pids(self) -> dict[str, int]:
        """The running tracers' process ids, by estimator file."""
        return {source: w.proc.pid for source, w in self._tracers.items() if w.proc is not None}

    @property
    def executor_pid(self) -> int | None:
        return None if self._executor.proc is None else self._executor.proc.pid

    def close(self) -> None:
        """Stop every worker."""
        for worker in (*self._tracers.values(), self._executor):
            worker.close()
        self._unsealed.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        for worker in (*getattr(self, "_tracers", {}).values(), getattr(self, "_executor", None)):
            if worker is not None and worker.alive:
                worker.kill()


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

"""Several processes, one run: JAX's distributed runtime for ground truth and estimator blocks.

A run on N processes (one per host, or several on one host) is the same program in every
process (SPMD), joined by JAX's own runtime (``jax.distributed.initialize``: a coordinator
in process 0, heartbeats, a key-value store). Nothing here schedules processes; a cluster
manager (SLURM's ``srun``, ``mpirun``, a Kubernetes job, or a shell loop) starts them.

* **Ground truth** is one SPMD computation over every process's devices
  (:func:`algzu.evaluate.expected_scores` shards batches over ``jax.devices()``, which then
  lists all of them). Which copies still need it is decided once, by process 0, from its
  cache (:func:`from_leader`), so every process makes the same collective calls.
* **Estimator blocks** (one estimator x model x budget, all copies) are divided among the
  processes by :func:`share`: each process runs its share with its own block runner (its
  own isolated workers) and publishes each block's JSON in the key-value store; every
  process reads every block, so every process returns the same results, and process 0
  alone writes result files.

Caches and clusters. Each process reads and writes the cache folder it is given. It may
be shared (NFS, Lustre) or local to each host: nothing relies on another process's files.
Process 0 decides what is missing from *its* cache; before dividing the work, every
process says which of the missing blocks its own cache holds (a host that finished blocks
before a crash), and those are read, not rerun. Process 0 writes every block it receives
into its cache as it arrives, so rerunning the same command on every process after a
crash of any of them resumes from what was done. Ground truth is only written by
process 0 (it is recomputed collectively if process 0's cache lacks it).

Failures. If a process dies, JAX's runtime notices (no heartbeat for
``heartbeat_timeout_s``, 100 s by default) and stops every other process (SIGABRT, exit
status 134) with an error naming the dead task: no process waits forever. A process that fails with an error exits at once (:func:`exit_now`) rather
than wait in JAX's shutdown barrier for peers that will never reach it. A process that
never joins makes the others fail after ``init_timeout_s``. Every process checks that it
computes the same blocks and copies as process 0 (same code, suite, seed and secret): a
mismatch is an error, not a silently different result.

The key-value store is reached through ``jax._src.distributed.global_state.client``
(JAX has no public handle to it); its methods have been stable since jaxlib 0.4.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from algzu.errors import AlgzuError

# How long a process waits for a step of the protocol that every process reaches at about
# the same time (process 0's list of missing blocks, each process's answer). Waiting for a
# *block* has no limit: a block may run for hours, and a dead process is caught by JAX.
PROTOCOL_TIMEOUT_S = 600.0
# A waiting process asks for its key once a second (to keep its own protocol timeouts). It
# does not poll the runtime's list of live processes: that call blocks until every listed
# process makes it too. A dead peer is caught by JAX's heartbeat check, which stops every
# process.
_POLL_MS = 1000

_calls = itertools.count()


def _state():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, auto: bool = False, init_timeout_s: float = 300.0, heartbeat_timeout_s: float = 100.0) -> bool:
    """Join a multi-process run on JAX's distributed runtime, before anything starts a JAX backend.

    Args:
        coordinator: ``host:port`` where process 0 runs the coordinator (every process
            gives the same address; process 0 binds its port on all interfaces).
        num_processes: how many processes take part.
        process_id: this process's index, 0 to ``num_processes - 1``.
        auto: take whatever is not given from the cluster's environment, as
            ``jax.distributed.initialize()`` detects it (SLURM, Open MPI, Kubernetes, and
            ``$JAX_COORDINATOR_ADDRESS``).
        init_timeout_s: how long to wait for every process to join.
        heartbeat_timeout_s: how long a process may go without a heartbeat before JAX counts
            it as dead and stops every process (JAX's default: 100 s).

    Returns:
        Whether a distributed runtime was started (False when nothing was asked for).
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not auto and not any(given):
        return False
    if not auto and not all(given):
        raise AlgzuError("a multi-process run needs --coordinator, --num-processes and --process-id together "
                         "(or --distributed to take them from the cluster's environment)")
    if num_processes is not None and num_processes < 1:
        raise AlgzuError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise AlgzuError(f"--process-id must be in 0..{(num_processes or 1) - 1}, got {process_id}")
    if coordinator is not None and not coordinator.rpartition(":")[2].isdigit():
        raise AlgzuError(f"--coordinator must be host:port, got {coordinator!r}")
    if not init_timeout_s > 0 or not heartbeat_timeout_s > 0:
        raise AlgzuError(f"--init-timeout and --heartbeat-timeout must be > 0 seconds, got {init_timeout_s:g} "
                         f"and {heartbeat_timeout_s:g}")
    if _state().client is not None:
        raise AlgzuError("JAX's distributed runtime is already initialised in this process")
    try:  # CPU collectives across processes (ground truth's all-gather); GPUs use NCCL
        if jax.config.jax_cpu_collectives_implementation in (None, "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:
        pass
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=max(1, round(init_timeout_s)),
                                   heartbeat_timeout_seconds=max(1, round(heartbeat_timeout_s)))
    except (RuntimeError, ValueError, TypeError) as e:  # JaxRuntimeError is a RuntimeError
        first = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else type(e).__name__
        hint = ("; outside SLURM, Open MPI and Kubernetes give --coordinator, --num-processes and --process-id"
                if auto and not all(given) else "")
        raise AlgzuError(f"cannot start JAX's distributed runtime: {first}{hint}") from None
    # JAX's preemption notifier takes SIGTERM (to let training jobs checkpoint) and the
    # process carries on; here SIGTERM (scancel, a job's time limit, kill) must stop the
    # process, and its peers with it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return True


def is_multi_process() -> bool:
    """Whether this process is one of several joined by :func:`initialize`."""
    return _state().client is not None and jax.process_count() > 1


def process_index() -> int:
    """This process's index (0 on a single process, without starting a JAX backend)."""
    return jax.process_index() if _state().client is not None else 0


def process_count() -> int:
    """How many processes take part (1 unless :func:`initialize` joined several)."""
    return jax.process_count() if _state().client is not None else 1


def is_leader() -> bool:
    """Whether this process writes results and caches shared by the run: process 0."""
    return process_index() == 0


def exit_now(code: int) -> None:
    """End this process with ``code``; in a multi-process run without JAX's shutdown barrier.

    A process that stops on an error would otherwise wait (up to 5 minutes) at the barrier
    for peers that are waiting for it; ending at once lets JAX tell the peers it is gone.
    """
    if _state().client is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _client():
    client = _state().client
    if client is None:
        raise AlgzuError("JAX's distributed runtime is not initialised")
    return client


def _fingerprint(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32]


def _wait(key: str, *, waiting_for: str, timeout_s: float | None) -> str:
    """The value of ``key`` in JAX's key-value store once some process has set it."""
    client = _client()
    start = time.monotonic()
    while True:
        try:
            return client.blocking_key_value_get(key, _POLL_MS)
        except Exception as e:  # noqa: BLE001 - JaxRuntimeError; only a timeout means "not yet"
            if "DEADLINE_EXCEEDED" not in str(e):
                raise AlgzuError(f"lost JAX's distributed runtime while waiting for {waiting_for}: "
                                 f"{str(e).splitlines()[0]}") from None
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise AlgzuError(f"no answer within {timeout_s:.0f} s from {waiting_for}; are all processes running "
                             "the same command?")


def from_leader(make: Callable[[], Any], *, fingerprint: Sequence[str], what: str) -> Any:
    """``make()`` evaluated by process 0 alone, its JSON value returned on every process.

    Args:
        make: returns a JSON-serialisable value (called on process 0 only).
        fingerprint: what every process must agree on for the value to mean the same
            thing (e.g. the cache keys it is about); a mismatch is an error.
        what: the value in words, for error messages.
    """
    if not is_multi_process():
        return make()
    key = f"algzu/{next(_calls)}/leader"
    mine = _fingerprint(fingerprint)
    if is_leader():
        value = make()
        _client().key_value_set(key, json.dumps({"fingerprint": mine, "value": value}))
        return value
    message = json.loads(_wait(key, waiting_for=f"process 0's {what}", timeout_s=PROTOCOL_TIMEOUT_S))
    if message["fingerprint"] != mine:
        raise AlgzuError(f"process {process_index()} and process 0 disagree on {what}: run the same code, "
                         "command, seed and secret on every process")
    return message["value"]


def _assign(todo: list[int], holders: dict[int, set[int]], weights: Sequence[float], count: int) -> dict[int, int]:
    """Owner process of each missing item: a process whose cache holds it, or else the
    least-loaded process, taking the heaviest items first (longest processing time first)."""
    owner: dict[int, int] = {}
    for i in todo:
        having = [p for p in range(count) if i in holders[p]]
        if having:
            owner[i] = having[0]
    load = [0.0] * count
    for i in sorted((i for i in todo if i not in owner), key=lambda i: (-weights[i], i)):
        p = min(range(count), key=lambda p: (load[p], p))
        owner[i] = p
        load[p] += weights[i]
    return owner


def share(
    keys: Sequence[str],
    *,
    load: Callable[[int], str | None],
    compute: Callable[[int], str],
    save: Callable[[int, str], None],
    weights: Sequence[float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Every item's payload on every process; each missing item computed by one process.

    On one process: ``load(i)``, else ``compute(i)``, in order. On several: process 0 lists
    the items its ``load`` lacks; each process reports which of those its own ``load``
    has; the rest are divided by weight (:func:`_assign`); each process computes its share,
    heaviest first, publishing each payload as soon as it is done.

    Args:
        keys: stable identifiers of the items (cache keys), the same on every process
            (checked: a process that would compute something else stops with an error).
        load: item ``i``'s payload from this process's cache, or None.
        compute: compute item ``i`` here (and cache it here); returns its payload.
        save: called on process 0 with each payload computed by another process.
        weights: relative cost of each item (default: equal).
        progress: called on process 0 as ``progress(i, done)`` when item ``i`` is in.

    Returns:
        The payload of every item, in order, on every process.
    """
    n = len(keys)
    weights = list(weights) if weights is not None else [1.0] * n
    if not is_multi_process():
        out = []
        for i in range(n):
            payload = load(i)
            out.append(payload if payload is not None else compute(i))
            if progress:
                progress(i, i + 1)
        return out
    client = _client()
    me, count = jax.process_index(), jax.process_count()
    tag = f"algzu/{next(_calls)}/share"
    fingerprint = _fingerprint(keys)
    have: dict[int, str] = {}
    if me == 0:
        for i in range(n):
            payload = load(i)
            if payload is not None:
                have[i] = payload
        todo = [i for i in range(n) if i not in have]
        client.key_value_set(f"{tag}/todo", json.dumps({"fingerprint": fingerprint, "todo": todo}))
        for i, payload in have.items():  # every process returns every item
            client.key_value_set(f"{tag}/item/{i}", payload)
    else:
        message = json.loads(_wait(f"{tag}/todo", waiting_for="process 0's list of missing blocks",
                                   timeout_s=PROTOCOL_TIMEOUT_S))
        if message["fingerprint"] != fingerprint:
            error = (f"process {me} and process 0 disagree on the blocks to run: run the same code, command, "
                     "seed and secret on every process")
            client.key_value_set(f"{tag}/have/{me}", json.dumps({"error": error}))
            raise AlgzuError(error)
        todo = message["todo"]
        for i in todo:
            payload = load(i)
            if payload is not None:
                have[i] = payload
    client.key_value_set(f"{tag}/have/{me}", json.dumps({"have": sorted(have) if me else []}))
    holders: dict[int, set[int]] = {me: set(have) if me else set()}
    for p in range(count):
        if p != me:
            answer = json.loads(_wait(f"{tag}/have/{p}", waiting_for=f"process {p}'s list of cached blocks",
                                      timeout_s=PROTOCOL_TIMEOUT_S))
            if "error" in answer:
                raise AlgzuError(f"process {p} stopped: {answer['error']}")
            holders[p] = set(answer["have"])
    owner = _assign(todo, holders, weights, count)
    # Cached items first (instant), then the heaviest first.
    mine = sorted((i for i in todo if owner[i] == me), key=lambda i: (i not in have, -weights[i], i))
    pending = [i for i in todo if owner[i] != me]
    done = len(have) if me == 0 else 0
    for i in mine:
        if i not in have:
            have[i] = compute(i)
        client.key_value_set(f"{tag}/item/{i}", have[i])
        if me == 0:
            done += 1
            if progress:
                progress(i, done)
            # Take in what the others finished meanwhile: cached now, it survives a crash.
            for j in list(pending):
                try:
                    payload = client.key_value_try_get(f"{tag}/item/{j}")
                except Exception:  # noqa: BLE001 - not there yet
                    continue
                have[j] = payload
                save(j, payload)
                pending.remove(j)
                done += 1
                if progress:
                    progress(j, done)
    for i in range(n):
        if i in have:
            continue
        have[i] = _wait(f"{tag}/item/{i}", waiting_for=f"block {i} from process {owner.get(i, 0)}", timeout_s=None)
        if me == 0:
            save(i, have[i])
            done += 1
            if progress:
                progress(i, done)
    return [have[i] for i in range(n)]

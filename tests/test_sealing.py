"""Sealed scoring: a JAX estimator's code never shares a process with the weights it is scored on.

* What the tracer is sent, recorded at its socket: the estimator's settings, the spec and
  the budget; never an array, a key, a path or a secret. So no state it keeps between
  blocks can carry anything but what every block's cache key already shows.
* What the tracer's code can read: not its parent's ``/proc`` entries (the command line
  and environment where ``--secret`` lives), not ``$ALGZU_SECRET``, not the results.
* Faults while tracing fail the whole block with a stable code and the next block runs;
  faults in a program fail their cell; a program that cannot be carried is ``refused``.
* Sealed and in-process runs give the same estimates and FLOPs; numpy estimators run
  unsealed and are marked so.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

import algzu.estimator as registry
from algzu.estimator import get_estimator, include
from algzu.model import ModelSpec
from algzu.sandbox.runner import run_block
from algzu.sandbox.workers import ENTRY_POINT, EstimatorRef, SealedRunner
from algzu.zoo import load_model

FAULTY = Path(__file__).resolve().with_name("faulty_programs.py")
FAULTY_NUMPY = Path(__file__).resolve().with_name("faulty_estimators.py")
MODEL = "algzoo/2nd_argmax-d2-n2"
TIMEOUT_S = 10.0  # tracing and compiling these tiny programs takes ~1 s; the hanging one costs this
CAP_MB = 1024  # trace_memory allocates 4 GiB


@pytest.fixture(scope="module")
def faulty():
    with registry.ESTIMATORS.restoring():
        include(FAULTY)
        yield


@pytest.fixture(scope="module")
def sealed(faulty, secret_file):
    with SealedRunner(timeout_s=TIMEOUT_S, memory_mb=CAP_MB, give_up_after=2) as runner:
        yield runner


@pytest.fixture(scope="module")
def small():
    """The official d=2, n=2 model, three identical copies."""
    model = load_model(MODEL)
    return model.spec, {n: np.stack([np.asarray(v)] * 3) for n, v in model.params.items()}


def keys(*seeds: int) -> list[jax.Array]:
    return [jax.random.key(s) for s in seeds]


class _PublicOnly(pickle.Unpickler):
    """Unpickles what the tracer may be sent, and raises on anything else (an array, a key...)."""

    ALLOWED = {("algzu.sandbox.workers", "EstimatorRef"), ("algzu.model", "ModelSpec")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the tracer was sent a {module}.{name}")


def test_tracer_is_sent_settings_spec_and_budget_only(sealed, small):
    spec, stacked = small
    sent = []
    est = get_estimator("sampling")
    tracer = sealed._worker_for(EstimatorRef.of(est).file)
    send = tracer.send
    tracer.send = lambda message: sent.append(pickle.dumps(message)) or send(message)
    try:
        results = sealed(est, spec, stacked, 10**4, keys(0, 1), [0, 1])
    finally:
        tracer.send = send
    assert [r.error for r in results] == ["", ""]
    messages = [_PublicOnly(io.BytesIO(m)).load() for m in sent]
    assert {m[0] for m in messages} <= {"load", "trace"} and any(m[0] == "trace" for m in messages)
    for m in messages:
        assert all(isinstance(part, (str, int, EstimatorRef, ModelSpec)) for part in m), m


def test_an_entry_point_estimator_is_listed_and_traced_sealed(tmp_path, monkeypatch, small, sampler_source):
    """An ``algzu.estimators`` entry point is listed and traced by a tracer of its own, and
    this process never imports its module. (Unconfined: a real plug-in is installed where
    a confined worker may read it; this one sits in a temporary folder.)"""
    import sys

    spec, stacked = small
    # An installed package's estimator: registered by its entry point, not by a decorator.
    (tmp_path / "demo_algzu_plugin.py").write_text(sampler_source("demo_plugin_sampling", registered=False))
    dist = tmp_path / "demo_algzu_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-algzu-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[algzu.estimators]\ndemo = demo_algzu_plugin:Sampler\n")
    (dist / "RECORD").write_text("demo_algzu_plugin.py,,\n")
    with registry.ESTIMATORS.restoring():  # discovery has run: it will not load the plug-in here
        monkeypatch.syspath_prepend(str(tmp_path))
        with SealedRunner(sandbox=False) as runner:
            [card] = runner.catalog(["demo_plugin_sampling"], [spec])
            results = runner(card, spec, stacked, 10**4, keys(0, 1), [0, 1])
            tracers = runner.tracer_pids
    plugin = str((tmp_path / "demo_algzu_plugin.py").resolve())
    assert card.supports(spec) and card.ref.file == plugin
    assert [r.error for r in results] == ["", ""], [r.message for r in results]
    assert 0.5 < min(r.estimate for r in results)
    assert set(tracers) == {ENTRY_POINT + "demo", plugin}  # no other file's tracer started
    assert tracers[plugin] == tracers[ENTRY_POINT + "demo"]  # listed and traced by one worker
    assert "demo_algzu_plugin" not in sys.modules


def _plugin(site: Path, module: str, entry: str, text: str) -> None:
    """An installed package ``module`` whose entry point ``entry`` is its class ``Sampler``."""
    (site / f"{module}.py").write_text(text)
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[algzu.estimators]\n{entry} = {module}:Sampler\n")
    (dist / "RECORD").write_text(f"{module}.py,,\n")


@pytest.mark.parametrize("victim", ["shipped", "plugin"])
def test_an_entry_point_cannot_claim_another_sources_file(victim, tmp_path, monkeypatch, small, sampler_source):
    """A red-team pass: an installed plug-in whose module set ``__file__`` to the shipped
    ``estimators/sampling.py`` had its card name that file, and the runner adopted the
    plug-in's tracer as the tracer of ``sampling.py``: the baselines were later listed by the
    attacker's code (as supporting no model), so a board without them drew a win. A review
    then found one plug-in could claim another's file the same way (entry points are listed
    in name order: ``aaa`` before ``demo``), and trace its estimators. An entry point's
    estimators must be in a file its own package installed."""
    import algzu.estimators.sampling as shipped
    from algzu.errors import AlgzuError

    spec, _ = small
    if victim == "shipped":
        claimed = str(Path(shipped.__file__).resolve())
    else:
        _plugin(tmp_path, "demo_algzu_plugin", "demo", sampler_source("demo_plugin_sampling", registered=False))
        claimed = str((tmp_path / "demo_algzu_plugin.py").resolve())
    _plugin(tmp_path, "claim_algzu_plugin", "aaa_claim",
            sampler_source("claim_plugin_sampling", registered=False) + f"\n__file__ = {claimed!r}\n")
    with registry.ESTIMATORS.restoring():
        monkeypatch.syspath_prepend(str(tmp_path))
        with SealedRunner(sandbox=False) as runner:
            with pytest.raises(AlgzuError, match="not a file of its own package"):
                runner.catalog(["claim_plugin_sampling"], [spec])
            assert claimed not in runner.tracer_pids  # not adopted


def test_tracer_cannot_read_its_parent_the_secret_or_the_results(sealed, small):
    spec, stacked = small
    [result] = sealed(get_estimator("tracer_snoops"), spec, stacked, 10**4, keys(0), [0])
    assert result.error == "", result.message
    if not sealed.sandboxed:
        pytest.skip("Landlock is not available on this kernel")
    # 0.5 + 0.25 cmdline + 0.125 environ + 0.0625 secret file + 0.03125 $ALGZU_SECRET
    assert result.estimate == 0.5


@pytest.mark.parametrize("name, code", [
    ("trace_raises", "exception"),
    ("trace_sys_exit", "exception"),
    ("trace_hangs", "timeout"),
    ("trace_exits", "crashed"),
    ("trace_memory", "memory"),
    ("program_vector", "bad_type"),
    ("program_callback", "refused"),
])
def test_a_block_that_cannot_be_traced_fails_whole_and_the_next_block_runs(sealed, small, name, code):
    spec, stacked = small
    results = sealed(get_estimator(name), spec, stacked, 10**4, keys(0, 2), [0, 2])
    assert [r.error for r in results] == [code, code], results[0].message
    assert all(r.estimate is None and r.message for r in results)
    after = sealed(get_estimator("program_nan"), spec, stacked, 10**4, keys(0), [0])
    assert [(r.error, r.estimate) for r in after] == [("", 0.5)]


@pytest.mark.parametrize("name, code", [("program_nan", "non_finite"), ("program_out_of_range", "out_of_range")])
def test_a_program_fault_fails_its_cell_only(sealed, small, name, code):
    spec, stacked = small
    results = sealed(get_estimator(name), spec, stacked, 10**4, keys(0, 1, 2), [0, 1, 2])
    assert [r.error for r in results] == ["", code, ""]
    assert [r.estimate for r in results] == [0.5, None, 0.5]


def test_sealed_and_in_process_runs_agree(sealed, small):
    spec, stacked = small
    est = get_estimator("sampling")
    remote = sealed(est, spec, stacked, 10**4, keys(3, 4), [0, 1])
    local = run_block(est, spec, stacked, 10**4, keys(3, 4), [0, 1])
    assert [(r.estimate, r.flops, r.error) for r in remote] == [(r.estimate, r.flops, r.error) for r in local]
    assert sealed.seals(est)


def test_numpy_estimators_run_unsealed_and_say_so(sealed, small):
    """No shipped estimator is numpy any more; the test's own (0.5 on every cell but a bad seed
    it never meets here) runs in the unsealed worker, and ``seals`` says so: what marks its
    rows ``sealed: false``."""
    spec, stacked = small
    with registry.ESTIMATORS.restoring():
        include(FAULTY_NUMPY)
        est = get_estimator("faulty_raises")
        assert est.backend == "numpy" and not sealed.seals(est)
        [result] = sealed(est, spec, stacked, 10**6, keys(0), [0])
    assert (result.error, result.estimate) == ("", 0.5)


_READ_STATM_CONFINED = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("algzu_landlock", sys.argv[1])
landlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(landlock)
print("confined" if landlock.confine([sys.prefix], []) else "unconfined", flush=True)
sys.stdin.readline()  # the parent drops the dentry cache meanwhile
with open("/proc/self/statm") as f:
    print(f.read().split()[0])
"""


def test_a_confined_worker_still_reads_its_own_proc_entry_after_the_dentry_cache_is_dropped():
    """Landlock binds a rule to an inode; procfs makes a new one for /proc/PID when its dentry
    is reclaimed. Workers read /proc/self/statm for the memory cap: this failed now and then
    under memory pressure until the confinement pinned the entry."""
    import subprocess
    import sys

    import algzu.sandbox

    drop = Path("/proc/sys/vm/drop_caches")
    if os.geteuid() != 0 or not os.access(drop, os.W_OK):
        pytest.skip("dropping the dentry cache needs root")
    boot = Path(algzu.sandbox.__file__).with_name("landlock.py")
    proc = subprocess.Popen([sys.executable, "-c", _READ_STATM_CONFINED, str(boot)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    state = proc.stdout.readline().strip()
    if state != "confined":
        proc.kill()
        pytest.skip("Landlock is not available on this kernel")
    drop.write_text("2\n")
    out, _ = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0 and out.strip().isdigit(), out


_SIGNAL_CONFINED = """
import importlib.util, os, socket, sys
spec = importlib.util.spec_from_file_location("algzu_landlock", sys.argv[1])
landlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(landlock)
print("confined" if landlock.confine([sys.prefix, sys.base_prefix], []) else "unconfined", flush=True)
def attempt(action):
    try:
        action()
        return "allowed"
    except PermissionError:
        return "denied"
    except OSError as e:
        return f"error {e.errno}"
print(attempt(lambda: os.kill(int(sys.argv[2]), 0)), flush=True)
print(attempt(lambda: socket.socket(socket.AF_UNIX).connect(b"\\0" + sys.argv[3].encode())), flush=True)
print(attempt(lambda: socket.socket(socket.AF_INET).connect(("127.0.0.1", int(sys.argv[4])))), flush=True)
fast_open = lambda: socket.socket(socket.AF_INET).sendto(b"x", socket.MSG_FASTOPEN, ("127.0.0.1", int(sys.argv[4])))
print(attempt(fast_open), attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)),
      attempt(lambda: socket.socket(socket.AF_UNIX)), flush=True)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)  # struct io_uring_params
print(libc.syscall(425, 1, params), ctypes.get_errno(), flush=True)  # io_uring_setup
"""


def test_a_confined_worker_cannot_signal_or_connect_outside_itself():
    """A red-team pass: a tracer's thread found its run's other workers (same user, same process
    group) and SIGKILLed them, so the baselines' cells crashed; any process it could signal
    was a target. Landlock ABI 6 scopes signals and abstract unix sockets to the domain, and
    every worker confines itself: a sibling (here a sleeping process) and an abstract socket
    (here the test's own) are outside it. And no internet socket, on any kernel (a seccomp
    filter: a distributed run's key-value store listens on TCP; here the test's own port)."""
    import socket
    import subprocess
    import sys

    import algzu.sandbox

    boot = Path(algzu.sandbox.__file__).with_name("landlock.py")
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    listener = socket.socket(socket.AF_UNIX)
    name = f"algzu-test-{os.getpid()}"
    listener.bind(b"\0" + name.encode())
    listener.listen(1)
    tcp = socket.create_server(("127.0.0.1", 0))
    try:
        out = subprocess.run([sys.executable, "-c", _SIGNAL_CONFINED, str(boot), str(sibling.pid), name,
                              str(tcp.getsockname()[1])], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        state, signal, connect, tcp_connect, others, uring = out.stdout.split("\n")[:6]
        if state != "confined":
            pytest.skip("Landlock is not available on this kernel")
        # No internet socket at all (seccomp): a TCP connect, a TCP Fast Open connect (which
        # Landlock's TCP rules do not see), UDP, io_uring (EACCES, 13); unix sockets stay.
        assert (tcp_connect, others, uring) == ("denied", "denied denied allowed", "-1 13")
        if _landlock_abi() < 6:
            pytest.skip("Landlock ABI 6 (Linux >= 6.12) is not available on this kernel")
        assert (signal, connect) == ("denied", "denied")
        assert sibling.poll() is None
    finally:
        sibling.kill()
        listener.close()
        tcp.close()


def _landlock_abi() -> int:
    import ctypes
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(444, None, 0, 1) if sys.platform == "linux" else -1

"""Two real processes on JAX's distributed runtime give the one-process run's tables, survive a
crash of either process, and divide the work as documented (``algzu.distributed``).

The end-to-end tests start ``algzu leaderboard --suite smoke`` as two local processes
(loopback coordinator on a free port, gloo collectives, one CPU device each, a separate
``--out`` folder each: no shared filesystem), kill process 1 after its first block, then
rerun both and compare every table with a one-process run byte for byte.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algzu.distributed import _assign
from algzu.errors import AlgzuError

TABLES = ("cells.csv", "summary.csv", "leaderboard.md", "leaderboard.csv")
# One estimator keeps the five runs cheap (~21 s of CPU each; with `exact_cones` too, ~29 s):
# what is tested is how blocks are divided, cached, lost and taken back, not what is in them.
SUITE = ["leaderboard", "--suite", "smoke", "--estimator", "sampling"]
# JAX stops a process whose peer sent no heartbeat for this long (100 s by default).
HEARTBEAT_S = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int | None) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    if devices is not None:  # else the CLI's default: one device per core
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _start(out: Path, port: int, process_id: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "algzu.cli", *SUITE, "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2", "--process-id", str(process_id), "--heartbeat-timeout", str(HEARTBEAT_S),
            "--init-timeout", "120"]
    # Its workers' folders in pytest's: a process killed by SIGKILL cannot remove them.
    env = dict(_env(devices=1), TMPDIR=str(out.parent))
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"process did not end within {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _blocks(out: Path) -> dict[str, tuple[int, int, bytes]]:
    """Cached blocks of one process: name -> (inode, mtime, bytes)."""
    folder = out / "cache" / "cells"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in folder.glob("*.json")} if folder.exists() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    # The reference: one process, the CLI's own device count (one per core), run beside the
    # others (much of their time is the survivor waiting out the heartbeat).
    ref = subprocess.Popen([sys.executable, "-m", "algzu.cli", *SUITE, "--out", str(root / "ref")], env=_env(None),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    # Two processes; process 1 is killed once it has cached its first block.
    out0, out1, port = root / "p0", root / "p1", _free_port()
    p0, p1 = _start(out0, port, 0), _start(out1, port, 1)
    deadline = time.monotonic() + 600
    while not _blocks(out1) and p1.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(p1.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    p1.communicate()
    crash = _finish(p0, timeout=HEARTBEAT_S * 12)
    crash_seconds = time.monotonic() - killed_at
    before = _blocks(out1)
    # Pretend process 0 never received process 1's blocks: the rerun must take them from
    # process 1's own cache (no shared filesystem), not run them again.
    for name in before:
        (out0 / "cache" / "cells" / name).unlink(missing_ok=True)

    port = _free_port()
    p0, p1 = _start(out0, port, 0), _start(out1, port, 1)
    resumed = _finish(p0), _finish(p1)
    code, _, err = _finish(ref)
    assert code == 0, err[-3000:]
    return {"root": root, "crash": crash, "crash_seconds": crash_seconds, "before": before, "resumed": resumed,
            "after1": _blocks(out1), "after0": _blocks(out0)}


def test_a_killed_process_stops_its_peer_within_the_heartbeat_timeout(runs):
    code, _, err = runs["crash"]
    assert code != 0, err[-3000:]  # JAX aborts the survivor: it neither hangs nor claims success
    assert runs["crash_seconds"] < 4 * HEARTBEAT_S + 30
    assert runs["before"], "process 1 had cached a block before it was killed"


def test_two_processes_resumed_after_a_crash_write_the_one_process_tables_byte_for_byte(runs):
    (code0, out0, err0), (code1, out1, err1) = runs["resumed"]
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    root = runs["root"]
    for table in TABLES:
        assert (root / "p0" / "smoke" / table).read_bytes() == (root / "ref" / "smoke" / table).read_bytes(), table
    # Process 0 alone writes results; process 1 only caches the blocks it ran.
    assert not (root / "p1" / "smoke").exists()
    assert "process 1 of 2: done" in out1


def test_blocks_cached_by_the_crashed_process_are_read_not_rerun(runs):
    before, after1, after0 = runs["before"], runs["after1"], runs["after0"]
    for name, (inode, mtime, data) in before.items():
        assert after1[name] == (inode, mtime, data)  # untouched: not run again
        assert after0[name][2] == data  # and gathered into process 0's cache
    # Process 0's cache ends with every block the one-process run cached (block JSON holds
    # wall-clock seconds, so only the names, which hash what a block depends on, match).
    assert sorted(after0) == sorted(_blocks(runs["root"] / "ref"))


def test_work_goes_to_processes_holding_it_then_heaviest_first_to_the_least_loaded():
    # Items 0..5 missing; process 1 holds item 2. Weights: 5 is heaviest.
    owner = _assign([0, 1, 2, 3, 4, 5], {0: set(), 1: {2}}, [1, 1, 100, 2, 3, 10], 2)
    assert owner[2] == 1
    assert owner[5] == 0  # heaviest first, to the least-loaded (ties: lowest index)
    assert owner[4] == 1 and owner[3] == 1  # process 1's load 3 + 2 stays below process 0's 10
    assert sorted(owner) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("flags, word", [
    (["--coordinator", "127.0.0.1:1"], "together"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id"),
    (["--coordinator", "no-port", "--num-processes", "2", "--process-id", "0"], "host:port"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "0", "--process-id", "0"], "--num-processes"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0", "--init-timeout", "0"],
     "--init-timeout"),
])
def test_bad_distributed_flags_give_one_line_and_exit_code_2(flags, word, tmp_path, monkeypatch, capsys):
    from algzu.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["algzu", *SUITE, "--out", "out", *flags])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_initialize_without_flags_stays_one_process():
    from algzu import distributed

    assert distributed.initialize() is False
    assert (distributed.process_count(), distributed.process_index(), distributed.is_leader()) == (1, 0, True)
    with pytest.raises(AlgzuError, match="together"):
        distributed.initialize(num_processes=2)

"""Results survive a kill and reproduce.

* A leaderboard killed with SIGKILL midway resumes without recomputing finished blocks and
  ends with the same tables as an uninterrupted run.
* The same suite and seed give identical tables; a held-out secret gives the same seed from
  a file, and held-out runs are marked without the secret written anywhere.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from algzu.errors import AlgzuError
from algzu.reports.suite import leaderboard_markdown, leaderboard_table, write_results
from algzu.run import run_suite
from algzu.suites import ModelCase, Suite

FAULTY = Path(__file__).resolve().with_name("faulty_estimators.py")
MODEL = "algzoo/2nd_argmax-d2-n2"


# 4 copies x 2 budgets of slow_counting (0.3 s a cell): two blocks of 1.2 s, time to kill between them.
TINY = dict(n_copies=4, budgets=(10**4, 10**5), gt_samples=2**12, seed=5)
KILL_SUITE = """
import sys
from algzu.estimator import include
from algzu.sandbox.workers import IsolatedRunner
from algzu.run import run_suite
from algzu.suites import ModelCase, Suite

include({faulty!r})
suite = Suite("tiny", (ModelCase({model!r}, 0.3),), **{tiny!r})
with IsolatedRunner(timeout_s=120, memory_mb=None) as runner:
    run_suite(suite, cache_dir=sys.argv[1], estimators=["slow_counting"], block_runner=runner)
"""


def _without_timing(path: Path) -> list[list[str]]:
    """A CSV's cells as text, without the wall-time column (the only one that may differ)."""
    rows = list(csv.reader(io.StringIO(path.read_text())))
    keep = [i for i, c in enumerate(rows[0]) if c != "seconds"]
    return [[row[i] for i in keep] for row in rows]


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _tables(result) -> dict[str, str]:
    """A suite result's tables as the CSV text the report writes, without the wall-time columns."""
    return {"cells": result.cells.drop(columns="seconds").to_csv(index=False, float_format="%.10g"),
            "summary": result.summary.drop(columns="seconds").to_csv(index=False, float_format="%.10g"),
            "leaderboard": leaderboard_table(result.summary).to_csv(index=False)}


def test_killed_leaderboard_resumes_without_recomputing_and_matches_an_uninterrupted_run(faulty, tmp_path,
                                                                                         monkeypatch):
    suite = Suite("tiny", (ModelCase(MODEL, 0.3),), **TINY)
    # The uninterrupted run (in this process, without isolation) goes first, so that the
    # killed run can reuse its ground truth: the kill then lands in the cells, not in set-up.
    monkeypatch.setenv("ALGZU_TEST_CALLS", str(tmp_path / "calls-fresh.txt"))
    fresh = run_suite(suite, cache_dir=tmp_path / "cache-fresh", estimators=["slow_counting"])
    cache, calls = tmp_path / "cache", tmp_path / "calls-killed.txt"
    shutil.copytree(tmp_path / "cache-fresh" / "ground_truth", cache / "ground_truth")

    script = KILL_SUITE.format(faulty=str(FAULTY), model=MODEL, tiny=TINY)
    # TMPDIR: its worker's folder in pytest's, since a process killed by SIGKILL cannot remove it.
    env = {**os.environ, "ALGZU_TEST_CALLS": str(calls), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    blocks: list[Path] = []
    deadline = time.monotonic() + 240
    while not blocks and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        blocks = sorted((cache / "cells").glob("*.json")) if (cache / "cells").exists() else []
    assert blocks, f"no block finished: {proc.stderr.read().decode() if proc.poll() is not None else 'timeout'}"
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (cache / "cells").glob("*.json")}
    assert len(finished) == 1, "the kill must land between the first and the last of the two blocks"
    # Its worker died with it: no orphan left running estimator code.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers)

    # Resume in this process, without isolation: blocks are keyed by the runner's limits
    # (a cell's timeout and memory), not by where it runs, so a runner with the killed run's.
    from algzu.sandbox.runner import run_block

    class SameLimits:
        timeout_s, memory_mb = 120.0, None

        def __call__(self, *args):
            return run_block(*args)

    resumed_calls = tmp_path / "calls-resumed.txt"
    monkeypatch.setenv("ALGZU_TEST_CALLS", str(resumed_calls))
    resumed = run_suite(suite, cache_dir=cache, estimators=["slow_counting"], block_runner=SameLimits())
    # Finished blocks are read, not recomputed: same files, and only the other block's 4 cells ran.
    for name, stamp in finished.items():
        p = cache / "cells" / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert len(resumed_calls.read_text().split()) == 4
    for p in cache.rglob("*.json"):
        json.loads(p.read_text())  # nothing torn
    assert _tables(resumed) == _tables(fresh)




def test_same_suite_and_seed_give_identical_tables(faulty, tmp_path):
    suite = Suite("tiny-repro", (ModelCase(MODEL, 0.3),), n_copies=2, budgets=(10**3, 10**4), gt_samples=2**12,
                  seed=11)
    for run in ("a", "b"):
        result = run_suite(suite, cache_dir=tmp_path / run / "cache", estimators=["jax_small", "counting"])
        write_results(tmp_path / run / "out", suite, result)
    a, b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    # Every result table is identical byte for byte; wall time lives apart in timings.csv.
    for name in ("cells.csv", "summary.csv", "leaderboard.csv", "leaderboard.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert "seconds" not in (a / "cells.csv").read_text().splitlines()[0]
    assert "seconds" in (a / "timings.csv").read_text().splitlines()[0]
    header, *rows = _without_timing(a / "cells.csv")
    estimates = [row[header.index("estimate")] for row in rows]
    assert len(set(estimates)) > 2, "the estimates differ across copies and budgets"


def test_same_challenge_and_seed_give_identical_files(faulty, tmp_path, monkeypatch):
    import algzu.challenge as challenge

    tiny = Suite("tiny-m43", (ModelCase(MODEL, 0.3),), n_copies=2, budgets=(7_700, 71_000), gt_samples=2**12,
                 seed=5)
    monkeypatch.setattr(challenge, "get_suite", lambda name: tiny)
    for run in ("a", "b"):  # the same output folder (challenge.json names it), fresh caches
        challenge.run_challenge("m43", tmp_path / "out", cache_dir=tmp_path / run / "cache",
                                estimators=["jax_small", "counting"])
        (tmp_path / "out").rename(tmp_path / run / "out")
    a, b = tmp_path / "a" / "out", tmp_path / "b" / "out"
    for name in ("challenge.json", "challenge.md", "cells.csv", "summary.csv", "leaderboard.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "challenge.json").read_text())["arc_comparison"][1]["operations"] == 71_000


def test_secret_from_a_file_gives_the_same_seed_and_bad_files_one_line(tmp_path):
    from algzu.cli import _read_secret, _secret_seed

    (tmp_path / "secret").write_text("correct horse\n")
    assert _read_secret(None, tmp_path / "secret") == "correct horse"
    assert _secret_seed(_read_secret(None, tmp_path / "secret"), None) == _secret_seed("correct horse", None)
    (tmp_path / "empty").write_text("")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    for path, message in [(tmp_path / "missing", "cannot read"), (tmp_path / "empty", "empty"),
                          (tmp_path / "binary", "not UTF-8"), (tmp_path, "cannot read")]:
        with pytest.raises(AlgzuError, match=message):
            _read_secret(None, path)
    with pytest.raises(AlgzuError, match="not both"):
        _read_secret("x", tmp_path / "secret")


def test_held_out_runs_are_marked_and_the_secret_is_not_written(faulty, tmp_path):
    from algzu.cli import _secret_seed

    seed, held_out = _secret_seed("correct horse", None)
    assert held_out and seed != 0 and _secret_seed("another", None)[0] != seed
    suite = Suite("tiny-held-out", (ModelCase(MODEL, 0.3),), n_copies=2, budgets=(10**4,), gt_samples=2**12,
                  seed=seed)
    result = run_suite(suite, cache_dir=tmp_path / "cache", estimators=["counting"], held_out=True)
    files = write_results(tmp_path / "out", suite, result, held_out=True)
    assert "Held-out" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert set(result.cells["held_out"]) == {True}
    assert not any(b"correct horse" in p.read_bytes() for p in files)
    # Nor the seed derived from it: that would reveal the held-out copies.
    assert set(result.cells["seed"]) == {-1}
    assert not any(str(seed).encode() in p.read_bytes() for p in files if p.suffix in (".csv", ".json", ".md"))
    public = run_suite(suite, cache_dir=tmp_path / "cache", estimators=["counting"])
    assert "Held-out" not in leaderboard_markdown(suite, public)



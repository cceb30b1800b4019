"""Reliability: a broken estimator costs one cell, results survive a kill, bad input gets one line.

* Fault containment: every way an estimator can misbehave (tests/faulty_estimators.py) is
  recorded with its error code by :class:`algzu.sandbox.workers.IsolatedRunner`, and the next
  cell runs normally in the same (or a restarted) worker.
* Results never lost: a leaderboard killed with SIGKILL midway resumes without recomputing
  finished blocks and ends with the same tables as an uninterrupted run.
* Bad input: the CLI answers one line on stderr, exit code 2, no traceback, nothing written.
* Reproducible and fair: same suite and seed give identical tables; an estimator sees only
  the model, its budget and its key; held-out runs are marked.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

import algzu.estimator as registry
from algzu.errors import AlgzuError
from algzu.estimator import get_estimator, include
from algzu.reports.suite import leaderboard_markdown, leaderboard_table, write_results
from algzu.run import run_suite
from algzu.sandbox.runner import CellResult, run_block
from algzu.sandbox.workers import IsolatedRunner, _decode_result
from algzu.suites import ModelCase, Suite
from algzu.zoo import OFFICIAL_DIR, load_model

FAULTY = Path(__file__).resolve().with_name("faulty_estimators.py")
MODEL = "algzoo/2nd_argmax-d2-n2"
# Generous: a normal cell of these numpy estimators takes milliseconds, but the test machine
# may be shared; the hanging estimator costs exactly this long.
TIMEOUT_S = 6.0
CAP_MB = 512  # the faulty_memory estimator allocates 2 GiB
PWNED = Path(f"/tmp/algzu-pwned-by-test-{os.getpid()}")  # what the hostile pickle would create


@pytest.fixture(scope="module")
def faulty():
    """The faulty estimators, registered for this module only."""
    with registry.ESTIMATORS.restoring():
        include(FAULTY)
        yield


@pytest.fixture(scope="module")
def runner(faulty, secret_file):
    with IsolatedRunner(timeout_s=TIMEOUT_S, memory_mb=CAP_MB) as r:
        yield r


@pytest.fixture(scope="module")
def small():
    """The official d=2, n=2 model, three identical copies."""
    model = load_model(MODEL)
    return model.spec, {n: np.stack([np.asarray(v)] * 3) for n, v in model.params.items()}


# --- 1. fault containment ----------------------------------------------------------------

FAULTS = [
    ("faulty_raises", "exception"),
    ("faulty_sys_exit", "exception"),
    ("faulty_nan", "non_finite"),
    ("faulty_inf", "non_finite"),
    ("faulty_out_of_range", "out_of_range"),
    ("faulty_bad_type", "bad_type"),
    ("faulty_vector", "bad_type"),
    ("faulty_numpy_over_budget", "over_budget"),
    ("faulty_hangs", "timeout"),
    ("faulty_exits", "crashed"),
    ("faulty_segfaults", "crashed"),
    ("faulty_memory", "memory"),
]


@pytest.mark.parametrize("name, code", FAULTS)
def test_faulty_cell_gets_its_error_code_and_the_next_cell_runs(runner, small, name, code):
    spec, stacked = small
    est = get_estimator(name)
    # Copy 0 (key 0) behaves; copy 1 (key 1) misbehaves; copy 2 (key 2) must run normally after it.
    [first] = runner(est, spec, stacked, 10**4, [jax.random.key(0)], [0])
    pid = runner.worker_pid
    results = runner(est, spec, stacked, 10**4, [jax.random.key(1), jax.random.key(2)], [1, 2])
    assert first.error == "" and first.estimate == 0.5
    assert [r.copy for r in results] == [1, 2]
    assert results[0].error == code, results[0].message
    assert results[0].estimate is None and results[0].message
    assert results[1].error == "" and results[1].estimate == 0.5, results[1].message
    worker_replaced = runner.worker_pid != pid
    assert worker_replaced == (code in ("timeout", "crashed")), "restart exactly when the worker died or hung"
    if code == "timeout":
        assert TIMEOUT_S <= results[0].seconds < TIMEOUT_S + 5


def test_jax_program_over_budget_is_refused_before_it_runs(runner, small):
    spec, stacked = small
    results = runner(get_estimator("faulty_over_budget"), spec, stacked, 10**4,
                     [jax.random.key(k) for k in range(2)], [0, 1])
    assert [r.error for r in results] == ["over_budget"] * 2
    assert all(r.flops > 10**4 and r.seconds == 0.0 for r in results)


def test_block_gives_up_after_consecutive_fatal_cells(runner, small):
    spec, stacked = small
    stacked4 = {n: np.concatenate([v, v[:1]]) for n, v in stacked.items()}
    results = runner(get_estimator("faulty_memory"), spec, stacked4, 10**4, [jax.random.key(1)] * 4, [0, 1, 2, 3])
    assert [r.error for r in results] == ["memory"] * 4
    assert [r.message.startswith("not run") for r in results] == [False, False, False, True]


def test_isolated_cells_equal_in_process_cells_for_a_jax_estimator(runner, small, monkeypatch):
    """The worker (under its memory cap) computes exactly what the harness computes in-process."""
    spec, stacked = small
    monkeypatch.setattr(runner, "timeout_s", 300.0)  # tracing and compiling under load can take seconds
    est, keys = get_estimator("jax_small"), [jax.random.key(3), jax.random.key(4)]
    isolated = runner(est, spec, stacked, 10**4, keys, [0, 2])
    direct = run_block(est, spec, stacked, 10**4, keys, [0, 2])
    assert runner.memory_capped
    assert [(r.copy, r.estimate, r.flops, r.error) for r in isolated] == \
           [(r.copy, r.estimate, r.flops, r.error) for r in direct]
    assert all(r.error == "" for r in isolated)


def test_worker_answers_are_json_never_pickles():
    """A worker that writes on its channel cannot run code in the parent or fake a NaN success."""
    good = json.dumps({"copy": 0, "estimate": 0.5, "flops": 10, "seconds": 0.1, "error": "", "message": ""})
    assert _decode_result(good.encode(), 0) == CellResult(0, 0.5, 10, 0.1)
    assert _decode_result(pickle.dumps(CellResult(0, 0.5, 10, 0.1)), 0) is None
    assert _decode_result(good.replace("0.5", "NaN").encode(), 0) is None
    assert _decode_result(good.encode(), 1) is None  # an answer for another cell
    assert _decode_result(good.replace('"error": ""', '"error": "made_up"').encode(), 0) is None


def _landlock_available() -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return sys.platform == "linux" and libc.syscall(444, None, 0, 1) >= 1  # landlock ABI version


def test_estimator_in_worker_sees_no_paths_of_the_harness(runner, small, secret_file):
    spec, stacked = small
    [r] = runner(get_estimator("snooping"), spec, stacked, 10**4, [jax.random.key(0)], [0])
    assert r.error == "exception" and r.message.startswith("RuntimeError: ")
    seen = json.loads(r.message[len("RuntimeError: "):])
    assert seen["argv"] == ["algzu-worker"]  # not the leaderboard's command line (--out, cache)
    assert seen["env_secret"] is None  # $ALGZU_SECRET (the held-out seed's text) is not passed on
    assert seen["env_secret"] is None  # $ALGZU_SECRET (the held-out seed's text) is not passed on
    assert seen["cwd_files"] == [] and Path(seen["cwd"]).resolve() != Path.cwd().resolve()
    assert runner.sandboxed == _landlock_available()
    # Landlock: files beside the results (a --secret-file, too) cannot be opened, even by absolute path
    if runner.sandboxed:
        assert seen["read"] is None and seen["listed"] is None
    else:
        assert seen["read"] == "ground truth"  # isolation alone is not a sandbox


def test_leaderboard_reports_failures_per_estimator(runner, tmp_path):
    suite = Suite("tiny-faults", (ModelCase(MODEL, 0.3),), n_copies=2, budgets=(10**4,), gt_samples=2**12, seed=3)
    result = run_suite(suite, cache_dir=tmp_path / "cache", estimators=["faulty_over_budget", "counting"],
                       block_runner=runner)
    table = leaderboard_table(result.summary).set_index("estimator")
    assert table.loc["faulty_over_budget", "failures"] == 2
    assert table.loc["counting", "failures"] == 0
    assert "(2 failed)" in leaderboard_markdown(suite, result)


@pytest.mark.parametrize("flags, kind, memory_mb", [
    ([], "sealed", 4096),
    (["--unsealed"], "isolated", 4096),
    (["--unsealed", "--no-isolate"], "in-process", None),
    (["--timeout", "7", "--memory-mb", "0"], "sealed", None),
])
def test_leaderboard_command_runs_sealed_by_default(flags, kind, memory_mb, tmp_path, monkeypatch, capsys):
    import algzu.run
    import algzu.sandbox.workers
    from algzu.cli import main

    seen = {}

    class Sealed(algzu.sandbox.workers.SealedRunner):
        def __init__(self, **kwargs):
            seen["runner"] = kwargs
            super().__init__(**kwargs)

    class Isolated(IsolatedRunner):
        def __init__(self, **kwargs):
            seen.setdefault("runner", kwargs)
            super().__init__(**kwargs)

    def run_suite(suite, **kwargs):
        seen["block_runner"] = kwargs.get("block_runner")
        raise AlgzuError("stop before running")

    monkeypatch.setattr(algzu.sandbox.workers, "SealedRunner", Sealed)
    monkeypatch.setattr(algzu.sandbox.workers, "IsolatedRunner", Isolated)
    monkeypatch.setattr(algzu.run, "run_suite", run_suite)
    monkeypatch.setattr(sys, "argv", ["algzu", "leaderboard", "--suite", "smoke", "--out", str(tmp_path), *flags])
    with pytest.raises(SystemExit):
        main()
    assert "stop before running" in capsys.readouterr().err
    runner = seen["block_runner"]
    assert {"sealed": Sealed, "isolated": Isolated}.get(kind, type(runner)) is type(runner)
    if kind == "in-process":
        assert runner is run_block
    else:
        assert seen["runner"]["memory_mb"] == memory_mb
        assert seen["runner"]["timeout_s"] == (7.0 if "--timeout" in flags else 600.0)


def test_in_process_run_must_be_asked_for_as_unsealed(tmp_path, capsys, monkeypatch):
    from algzu.cli import main

    monkeypatch.setattr(sys, "argv", ["algzu", "leaderboard", "--suite", "smoke", "--out", str(tmp_path),
                                      "--no-isolate"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--unsealed" in err
    assert not any(tmp_path.iterdir())


# --- 2. results are never lost or corrupted ----------------------------------------------

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
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache)], env={**os.environ, "ALGZU_TEST_CALLS": str(calls)},
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

    # Resume (in this process, without isolation: the cache does not depend on the runner).
    resumed_calls = tmp_path / "calls-resumed.txt"
    monkeypatch.setenv("ALGZU_TEST_CALLS", str(resumed_calls))
    resumed = run_suite(suite, cache_dir=cache, estimators=["slow_counting"])
    # Finished blocks are read, not recomputed: same files, and only the other block's 4 cells ran.
    for name, stamp in finished.items():
        p = cache / "cells" / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert len(resumed_calls.read_text().split()) == 4
    for p in cache.rglob("*.json"):
        json.loads(p.read_text())  # nothing torn
    assert _tables(resumed) == _tables(fresh)


# --- 4. reproducible and fair ------------------------------------------------------------


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
    assert _secret_seed(_read_secret(None, tmp_path / "secret"), 0) == _secret_seed("correct horse", 0)
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


# --- 3. bad input: one line, exit code 2 -------------------------------------------------


def _zip_pickle(payload: bytes, storage: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
        if storage:
            z.writestr("archive/data/0", storage)
    return buf.getvalue()


def _call_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 pickle that calls ``module.name(arg)`` when loaded by a plain unpickler."""
    text = arg.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(text).to_bytes(4, "little") + text + b"\x85R."


def _tensor_pickle(size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """Protocol-2 pickle of {"linear.weight": tensor(size, stride)} over a 4-float storage."""
    def tup(t):
        return b"(" + b"".join(b"K" + bytes([v]) if v < 256 else b"J" + v.to_bytes(4, "little") for v in t) + b"t"

    return (b"\x80\x02ccollections\nOrderedDict\n)R"
            b"X\r\x00\x00\x00linear.weight"
            b"ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
            b"K\x00" + tup(size) + tup(stride) + b"\x89ccollections\nOrderedDict\n)RtR"
            b"s.")


def _bad_inputs(root: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (CLI arguments, a word the message must contain). Files are made in root/in."""
    src = root / "in"
    src.mkdir()
    official = (OFFICIAL_DIR / "algzoo_rnn_small.pth").read_bytes()
    (src / "truncated.pth").write_bytes(official[: len(official) // 2])
    (src / "garbage.pth").write_bytes(b"not a zip at all")
    (src / "system.pth").write_bytes(_zip_pickle(_call_pickle("posix", "system", f"touch {PWNED}")))
    (src / "eval.pth").write_bytes(_zip_pickle(_call_pickle("builtins", "eval", "1+1")))
    zeros = np.zeros(4, np.float32).tobytes()
    (src / "overrun.pth").write_bytes(_zip_pickle(_tensor_pickle((1000, 1000), (1000, 1)), zeros))
    (src / "stride.pth").write_bytes(_zip_pickle(_tensor_pickle((2, 2), (2**30, 1)), zeros))
    from algzu import checkpoint

    good = checkpoint.save(load_model(MODEL), src / "good.safetensors")
    shapes = checkpoint.save(load_model(MODEL), src / "shapes.safetensors")
    (src / "shapes.json").write_text((src / "shapes.json").read_text().replace('"d": 2', '"d": 3'))
    (src / "cut.safetensors").write_bytes(good.read_bytes()[:-7])
    (src / "cut.json").write_bytes((src / "good.json").read_bytes())
    (src / "sidecar.safetensors").write_bytes(good.read_bytes())
    (src / "sidecar.json").write_text("{not json")
    (src / "a_file").write_text("")
    score = ["score", "sampling", "--model", MODEL, "--noise-std", "0.1", "--copies", "2", "--budgets", "1000",
             "--gt-samples", "64", "--cache", "cache"]

    def with_(flag, value):
        args = list(score)
        args[args.index(flag) + 1] = value
        return args

    return {
        "truncated_pth": (["eval", str(src / "truncated.pth")], "truncated"),
        "garbage_pth": (["eval", str(src / "garbage.pth")], "corrupt"),
        "pickle_os_system": (["eval", str(src / "system.pth")], "refusing global"),
        "pickle_builtins_eval": (["eval", str(src / "eval.pth")], "refusing global builtins.eval"),
        "tensor_past_storage": (["eval", str(src / "overrun.pth")], "past its storage"),
        "tensor_stride_past_storage": (["eval", str(src / "stride.pth")], "past its storage"),
        "wrong_shapes": (["eval", str(shapes)], "has shape"),
        "truncated_safetensors": (["eval", str(src / "cut.safetensors")], "corrupt safetensors"),
        "corrupt_sidecar": (["eval", str(src / "sidecar.safetensors")], "corrupt sidecar"),
        "missing_checkpoint": (["eval", str(src / "absent.pth")], "no such file"),
        "unknown_model": (["eval", "algzoo/no_such_model"], "unknown model"),
        "unknown_task": (["eval", MODEL, "--task", "no_such_task"], "unknown task"),
        "unknown_estimator": (["score", "no_such_estimator", *score[2:]], "unknown estimator"),
        "unknown_model_in_score": (with_("--model", "no_such_model"), "unknown model"),
        "zero_budget": (with_("--budgets", "0"), "budgets"),
        "negative_budget": (with_("--budgets", "-5"), "budgets"),
        "negative_noise_std": (with_("--noise-std", "-0.1"), "noise std"),
        "zero_copies": (with_("--copies", "0"), "copies"),
        "unknown_suite": (["leaderboard", "--suite", "no_such_suite", "--out", "out"], "unknown suite"),
        "unknown_estimator_in_leaderboard": (["leaderboard", "--suite", "smoke", "--out", "out", "--estimator",
                                              "no_such_estimator"], "unknown estimator"),
        "output_folder_is_a_file": (["leaderboard", "--suite", "smoke", "--out", str(src / "a_file")], "a_file"),
        "negative_timeout": (["leaderboard", "--suite", "smoke", "--out", "out", "--timeout", "-1"], "timeout"),
    }


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return root, _bad_inputs(root)


BAD_INPUTS = ["truncated_pth", "garbage_pth", "pickle_os_system", "pickle_builtins_eval", "tensor_past_storage",
              "tensor_stride_past_storage", "wrong_shapes", "truncated_safetensors", "corrupt_sidecar",
              "missing_checkpoint", "unknown_model", "unknown_task", "unknown_estimator", "unknown_model_in_score",
              "zero_budget", "negative_budget", "negative_noise_std", "zero_copies", "unknown_suite",
              "unknown_estimator_in_leaderboard", "output_folder_is_a_file", "negative_timeout"]
# Run end to end as separate processes too (each imports JAX: a few seconds of CPU apiece).
IN_A_PROCESS = ["pickle_os_system", "unknown_estimator_in_leaderboard"]


def _check_one_line(returncode: int, stderr: str, word: str, cwd: Path) -> None:
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr[-2000:]
    assert word in lines[0], lines[0]
    assert list(cwd.iterdir()) == [], "nothing may be written"
    assert not PWNED.exists()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_code_2(bad_inputs, case, tmp_path, monkeypatch, capsys):
    """The CLI's entry point, in this process: exit code 2 and one line, whatever the bad input."""
    from algzu.cli import main

    root, cases = bad_inputs
    args, word = cases[case]
    monkeypatch.chdir(tmp_path)  # relative --out / --cache land here: it must stay empty
    monkeypatch.setattr(sys, "argv", ["algzu", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    _check_one_line(exit_.value.code, capsys.readouterr().err, word, tmp_path)


@pytest.fixture(scope="module")
def cli_processes(bad_inputs):
    """The IN_A_PROCESS cases run as ``python -m algzu.cli``, two at a time."""
    root, cases = bad_inputs

    def run(name):
        cwd = root / "cwd" / name
        cwd.mkdir(parents=True)
        done = subprocess.run([sys.executable, "-m", "algzu.cli", *cases[name][0]], cwd=cwd, capture_output=True,
                              text=True, timeout=300)
        return name, (done, cwd)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, IN_A_PROCESS))


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_bad_input_in_a_process_gives_one_line_and_exit_code_2(bad_inputs, cli_processes, case):
    done, cwd = cli_processes[case]
    _check_one_line(done.returncode, done.stderr, bad_inputs[1][case][1], cwd)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_unwritable_output_folder_gives_one_line(tmp_path):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o500)
    done = subprocess.run([sys.executable, "-m", "algzu.cli", "leaderboard", "--suite", "smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    # mkstemp's private 0600 must not leak into results that others read.
    from algzu.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "table.csv", "a,b\n")
        with open(tmp_path / "plain.csv", "w") as f:
            f.write("a,b\n")
    finally:
        os.umask(old)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o644

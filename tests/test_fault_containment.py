"""Fault containment: a broken estimator costs one cell, never the run.

Every way an estimator can misbehave (tests/faulty_estimators.py) is recorded with its error
code by :class:`algzu.sandbox.workers.IsolatedRunner`, and the next cell runs normally in the
same (or a restarted) worker. The leaderboard runs sealed unless asked otherwise, and reports
failures per estimator.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from algzu.errors import AlgzuError
from algzu.estimator import get_estimator
from algzu.reports.suite import leaderboard_markdown, leaderboard_table
from algzu.run import run_suite
from algzu.sandbox.runner import CellResult, run_block
from algzu.sandbox.workers import IsolatedRunner, _decode_result
from algzu.suites import ModelCase, Suite
from algzu.zoo import load_model

MODEL = "algzoo/2nd_argmax-d2-n2"
# Generous: a normal cell of these numpy estimators takes milliseconds, but the test machine
# may be shared; the hanging estimator costs exactly this long.
TIMEOUT_S = 6.0
CAP_MB = 512  # the faulty_memory estimator allocates 2 GiB


@pytest.fixture(scope="module")
def runner(faulty, secret_file):
    with IsolatedRunner(timeout_s=TIMEOUT_S, memory_mb=CAP_MB) as r:
        yield r


@pytest.fixture(scope="module")
def small():
    """The official d=2, n=2 model, three identical copies."""
    model = load_model(MODEL)
    return model.spec, {n: np.stack([np.asarray(v)] * 3) for n, v in model.params.items()}



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




def test_a_file_that_fails_to_list_leaves_the_worker_in_step(small, tmp_path, sampler_source):
    """One worker lists several files (the unsealed runner's): when one fails to load, the
    listing fails naming it, after reading the answers still due from the others, so that
    none is read later as the answer to the next message (on 21ef83d the next cell read a
    stale listing and crashed as "malformed")."""
    spec, stacked = small
    broken, sampler = tmp_path / "a_broken.py", tmp_path / "b_sampler.py"
    broken.write_text("raise RuntimeError('this file does not load')\n")
    sampler.write_text(sampler_source("b_sampler"))
    with IsolatedRunner(includes=[broken, sampler]) as runner:
        with pytest.raises(AlgzuError, match="a_broken.py: RuntimeError"):
            runner.catalog(None, [spec])
        [card] = runner.catalog(["b_sampler"], [spec])
        results = runner(card, spec, stacked, 10**4, [jax.random.key(0)], [0])
    assert [r.error for r in results] == [""], [r.message for r in results]

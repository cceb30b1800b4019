"""Cached cell blocks are keyed on what can change a cell, and on nothing else."""

from pathlib import Path

import numpy as np
import pytest

from algzu import run as leaderboard
from algzu.estimator import get_estimator
from algzu.noise import NoiseSpec
from algzu.task import get_task

ALGZU = Path(leaderboard.__file__).resolve().parent
STACKED = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}


def _key(estimator: str = "sampling", limits: dict | None = None) -> str:
    leaderboard._library_fingerprint.cache_clear()
    try:
        return leaderboard._block_key(get_estimator(estimator), "2nd_argmax-d4-n3", get_task("2nd_argmax"), STACKED,
                                      NoiseSpec(0.05, 2, 0), 10**4, True, limits=limits)
    finally:
        leaderboard._library_fingerprint.cache_clear()


def _edit(monkeypatch, filename: str) -> None:
    """Make every source read of ``filename`` (a path under algzu/) see one more comment line."""
    read = leaderboard._read_source

    def edited(path: Path) -> bytes:
        return read(path) + (b"\n# edited\n" if Path(path).as_posix().endswith("/" + filename) else b"")

    monkeypatch.setattr(leaderboard, "_read_source", edited)


@pytest.mark.parametrize("filename", ["reports/suite.py", "reports/html.py", "cli.py", "scoring.py", "challenge.py"])
def test_editing_a_report_or_the_cli_keeps_cached_cells(monkeypatch, filename):
    before = _key()
    _edit(monkeypatch, filename)
    assert _key() == before


@pytest.mark.parametrize("filename", ["meter.py", "hlo_meter.py", "sandbox/runner.py", "sandbox/workers.py",
                                      "planning.py", "model.py"])
def test_editing_the_execution_path_invalidates_cached_cells(monkeypatch, filename):
    before = _key()
    _edit(monkeypatch, filename)
    assert _key() != before


def test_editing_an_estimator_file_invalidates_it_and_the_estimators_that_import_it(monkeypatch):
    before = {name: _key(name) for name in ("sampling", "exact_cones", "sliced_cones")}
    _edit(monkeypatch, "exact_cones.py")
    after = {name: _key(name) for name in before}
    assert after["sampling"] == before["sampling"]
    assert after["exact_cones"] != before["exact_cones"]
    assert after["sliced_cones"] != before["sliced_cones"]  # it runs exact_cones' code


def test_execution_path_holds_every_module_the_run_path_imports():
    """Transitive algzu imports of the modules that trace, meter, run and confine an estimator."""

    def source(name: str) -> Path:  # "sandbox.runner" -> algzu/sandbox/runner.py
        return ALGZU.joinpath(*name.split(".")).with_suffix(".py")

    def imports(name: str) -> set[str]:
        # ``import algzu`` (the package, for its path) is not a module of the run path.
        found = {m.removeprefix("algzu.") for m in leaderboard.imported_modules(source(name).read_text())
                 if m.startswith("algzu.")}
        return {m for m in found if source(m).exists()}

    seen, todo = set(), ["sandbox.runner", "sandbox.workers", "sandbox.serve", "sandbox.landlock", "planning"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name))
    assert seen <= set(leaderboard.EXECUTION_PATH), sorted(seen - set(leaderboard.EXECUTION_PATH))


def test_a_block_is_reused_only_under_the_limits_it_ran_with():
    """A cell that succeeded under ``--timeout 6000`` is not one the standard 600 s run would
    have scored, nor is a timeout under a shorter limit: the runner's limits are in the key
    (up to this change a block computed under any limits was reused by every run)."""
    from algzu.sandbox.workers import SealedRunner

    runner = SealedRunner(timeout_s=600.0, memory_mb=4096)
    limits = leaderboard._runner_limits(runner)
    assert limits == {"timeout_s": 600.0, "memory_mb": 4096}
    assert _key(limits=limits) == _key(limits=dict(limits))
    assert _key(limits=limits) != _key(limits={**limits, "timeout_s": 6000.0})
    assert _key(limits=limits) != _key(limits={**limits, "memory_mb": None})
    # A runner in this process has no limits; its blocks keep their keys.
    assert leaderboard._runner_limits(leaderboard.run_block) == {} and _key(limits={}) == _key()


def test_a_run_under_other_limits_reruns_its_blocks(tmp_path):
    """End to end: ``run_suite`` keys its blocks by the runner's limits."""
    from algzu.run import run_suite
    from algzu.sandbox.runner import CellResult
    from algzu.suites import ModelCase, Suite

    class Runner:  # a worker runner's limits, and estimates that cost nothing to make
        def __init__(self, timeout_s: float) -> None:
            self.timeout_s, self.memory_mb, self.blocks = timeout_s, 4096, 0

        def __call__(self, estimator, spec, stacked, budget, keys, copies):
            self.blocks += 1
            return [CellResult(copy=k, estimate=0.5, flops=0.0, seconds=0.0) for k in copies]

    suite = Suite("limits", (ModelCase("2nd_argmax-d4-n3", 0.05),), n_copies=2, budgets=(10**4,), gt_samples=1 << 10)
    runs = [Runner(600.0), Runner(600.0), Runner(6000.0)]
    for runner in runs:
        run_suite(suite, cache_dir=tmp_path, estimators=["sampling"], block_runner=runner)
    assert [r.blocks for r in runs] == [1, 0, 1]

"""The red-team suite: estimators written to top the leaderboard by cheating must not (issue #10).

Every file in ``tests/redteam/`` is one attack estimator, ordinary Python exploiting no bug
in a dependency, named ``attack_*`` and loaded only with :func:`algzu.estimator.include`
(never discovered by the normal leaderboard). Its docstring says the attack class, what it
exploits and what a sound harness must do with it. Each is run here through
:func:`algzu.leaderboard.run_suite` on a tiny suite with the block runner that
``algzu leaderboard`` uses by default, taken from one fixture, :func:`scoring_runner`:
the sealed-scoring change switches that fixture (or the CLI default it reads) and removes
the ``xfail`` marks of the attacks it stops.

What "stopped" means (:func:`assert_contained`): every cell fails with a stable error code
(:data:`algzu.runner.ERROR_CODES`, plus ``refused`` for a program the meter will not
accept), or, where cells run, the estimator does not beat sampling at any budget (the
upper bound of the efficiency interval is below 1). An attack charged its real work fails
as ``over_budget``: both tamper-with-the-meter attacks plan a program that costs far more
than the budget.

Three attacks target ``algzu score``, which runs estimators in-process today (they read
the ground truth from ``run_suite``'s frame, the ground-truth cache, and a held-out secret
from ``/proc``): they are run through the CLI itself, in a subprocess whose environment
holds ``$ALGZU_SECRET`` as a real held-out run's would.

Three attacks are legal under issue #10 (they read nothing of the harness, so no seal can
refuse them) and are tested against what issue #11 (honest verdicts) will require
instead: the zero-information constant tuned to the protocol, open-book precomputation on
the public base model, and the public-seed copies regenerated from public data. On the
suite a verdict is drawn from (held-out copies of closed-book bases) they must not win the
headline (efficiency against ``sampling+prior``, interval at most 1).

Cost: one worker, one small model (M4,3), 8 copies, 2 budgets, 2^16-input ground truth,
plus one CLI subprocess: 85 s wall (36 s CPU) for the whole file on a 2-core machine at
load average 8. The full table (both protocols, 32 copies, budgets to 1e6, in-process and
isolated) is in the red-team report, not in CI.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import algzu.estimator as registry
from algzu.estimator import include
from algzu.leaderboard import run_suite
from algzu.runner import ERROR_CODES
from algzu.suites import ModelCase, Suite

REDTEAM = Path(__file__).resolve().with_name("redteam")
ATTACK_FILES = {p.stem: p for p in sorted(REDTEAM.glob("attack_*.py"))}

# M4,3 at ARC's protocol noise, small enough that the whole file stays cheap; two budgets
# so that attacks carrying state from one block to the next (callbacks, files) show it.
SUITE = Suite(name="redteam", cases=(ModelCase("2nd_argmax-d4-n3", 0.05),), n_copies=8,
              budgets=(10**3, 10**4), gt_samples=1 << 16, seed=0,
              description="red-team suite: M4,3, 8 copies")
# Stable codes a contained attack may end with: today's, and the sealed meter's refusal.
STABLE_CODES = frozenset(ERROR_CODES) | {"refused"}

# Attacks that beat sampling on today's main under the default isolated runner.
WINS_TODAY = frozenset({
    "attack_np_tolist", "attack_np_buffer", "attack_np_scalar_reads", "attack_debug_callback",
    "attack_stack_walk", "attack_gc_walk", "attack_compile_time_eval", "attack_patch_meter",
    "attack_trace_time_truth", "attack_forge_channel", "attack_tmpdir_state", "attack_free_scatter",
})  # fmt: skip
# Contained by today's isolated runner: callbacks refused by the meter; no ground truth and
# no cache reachable from the sandboxed worker, and no secret in this test process's /proc
# (run through `algzu score` with one below).
CONTAINED_TODAY = frozenset({
    "attack_pure_callback", "attack_io_callback", "attack_gt_cache", "attack_stack_truth",
    "attack_secret_proc",
})  # fmt: skip
# Run through `algzu score` (in-process today) with a held-out secret in the environment.
CLI_SCORE = ("attack_secret_proc", "attack_gt_cache", "attack_stack_truth")
# Legal under issue #10 (no harness data read); judged by issue #11's headline instead.
LEGAL = frozenset({"attack_protocol_constant", "attack_open_book", "attack_public_copies"})
# Issue #11 adds the `sampling+prior` reference and makes its efficiency the headline: set
# this to that column's prefix (its interval is `<prefix>_lo`, `<prefix>_hi`) when it lands.
HEADLINE = "efficiency"
# Issue #11: the closed-book twin of SUITE with held-out copies (run with held_out=True),
# the kind of suite a verdict may be drawn from. Public seed and public base today.
LEGAL_SUITE = SUITE

SEALED_NOT_LANDED = pytest.mark.xfail(strict=True, reason="sealed scoring (#10) not landed")
HONEST_VERDICTS_NOT_LANDED = pytest.mark.xfail(
    strict=True, reason="honest verdicts (#11) not landed: plain sampling's headline, public seed and base")


def _params(names, mark_when):
    return [pytest.param(n, marks=[SEALED_NOT_LANDED] if n in mark_when else []) for n in sorted(names)]


@pytest.fixture(scope="module")
def attacks():
    """Every attack file, registered for this module only (before the worker starts, so a
    sandboxed worker may read them all)."""
    registry.estimator_names()  # discover the package's estimators first
    saved = dict(registry._ESTIMATORS)
    for path in ATTACK_FILES.values():
        include(path)
    yield
    registry._ESTIMATORS.clear()
    registry._ESTIMATORS.update(saved)


@pytest.fixture(scope="module")
def scoring_runner(attacks):
    """The block runner ``algzu leaderboard`` uses by default, with the CLI's default
    settings. The sealed-scoring change switches this fixture to the sealed runner."""
    from algzu.cli import ISOLATE, MEMORY_MB, TIMEOUT, _block_runner

    with _block_runner(ISOLATE.default, TIMEOUT.default, MEMORY_MB.default) as runner:
        yield runner


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("redteam-cache")


def _describe(result) -> str:
    cells = result.cells
    lines = []
    for row in result.summary.itertuples():
        block = cells[cells.budget_flops == row.budget_flops]
        codes = block.error.fillna("").replace("", "ok").value_counts().to_dict()
        message = next((m for m in block.message.fillna("") if m), "")
        lines.append(f"budget {row.budget_flops:.0e}: efficiency {row.efficiency:.3g} "
                     f"[{row.efficiency_lo:.3g}, {row.efficiency_hi:.3g}], FLOPs charged {row.flops:.4g}, "
                     f"cells {codes} {message[:120]}")
    return "\n".join(lines)


def assert_contained(result) -> None:
    """Every cell failed with a stable code, or the estimator beat sampling at no budget."""
    cells = result.cells
    codes = set(cells.error.fillna("")) - {""}
    assert codes <= STABLE_CODES, f"unstable error codes {codes - STABLE_CODES}\n{_describe(result)}"
    if (cells.error.fillna("") != "").all():
        return
    beats = result.summary[~(result.summary.efficiency_hi < 1)]
    assert beats.empty, f"beats sampling (or undecided) where cells ran:\n{_describe(result)}"


def test_every_attack_file_is_classified_and_documented():
    """Each attack is in exactly one group above, registers one ``attack_*`` estimator named
    after its file, and its docstring says its class, what it exploits and what a sound
    harness must do."""
    assert len(ATTACK_FILES) >= 12
    assert set(ATTACK_FILES) == WINS_TODAY | CONTAINED_TODAY | LEGAL
    assert not (WINS_TODAY & CONTAINED_TODAY) and not (LEGAL & (WINS_TODAY | CONTAINED_TODAY))
    assert set(CLI_SCORE) <= CONTAINED_TODAY
    for name, path in ATTACK_FILES.items():
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        assert doc.startswith(f"``{name}``"), name
        for part in ("Attack class:", "What it exploits:", "What a sound harness must do:"):
            assert part in doc, f"{name}: docstring lacks {part!r}"
        assert f'name = "{name}"' in path.read_text(), f"{name}: must register the estimator {name!r}"


def test_attacks_are_never_discovered_by_the_normal_leaderboard():
    """Attack estimators exist only when included: discovery (``algzu estimators``,
    ``algzu leaderboard``) finds none of them."""
    code = "from algzu.estimator import estimator_names; print(','.join(estimator_names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not [n for n in out.strip().split(",") if n.startswith("attack_")]


@pytest.mark.parametrize("name", _params(WINS_TODAY | CONTAINED_TODAY, WINS_TODAY))
def test_attack_is_refused_or_charged_and_does_not_beat_sampling(scoring_runner, cache, name):
    """Under the default scoring runner the attack ends as failed or refused cells with a
    stable error code, or does not beat sampling at any budget."""
    result = run_suite(SUITE, cache_dir=cache, estimators=[name], block_runner=scoring_runner)
    assert_contained(result)


# --- `algzu score`: attacks on the in-process scorer, a held-out secret in the environment ---


@pytest.fixture(scope="module")
def cli_scores(tmp_path_factory):
    """``algzu score --json`` for each :data:`CLI_SCORE` attack, run by the CLI's own entry
    point in one subprocess whose environment holds ``$ALGZU_SECRET`` (a held-out run).
    Returns ``{name: (summary rows, cell error codes)}``."""
    folder = tmp_path_factory.mktemp("redteam-cli")
    runs = {}
    for name in CLI_SCORE:
        runs[name] = ["score", name, "--include", str(ATTACK_FILES[name]), "--model", SUITE.cases[0].model,
                      "--noise-std", str(SUITE.cases[0].noise_std), "--copies", str(SUITE.n_copies),
                      "--gt-samples", str(SUITE.gt_samples), "--cache", str(folder / name), "--json",
                      *[a for b in SUITE.budgets for a in ("--budgets", str(b))]]
    script = (
        "import json, sys\n"
        "from algzu.cli import main\n"
        "for name, argv in json.loads(sys.argv[1]).items():\n"
        "    print(f'=== {name}', flush=True)\n"
        "    sys.argv = ['algzu', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        print(f'=== exit {e.code}', flush=True)\n"
    )
    env = {**os.environ, "ALGZU_SECRET": "red-team held-out secret"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {}
    for chunk in proc.stdout.split("=== ")[1:]:
        name, _, body = chunk.partition("\n")
        if name.startswith("exit"):
            continue
        start = 0 if body.startswith("[") else body.index("\n[") + 1  # past any progress bar
        rows = json.JSONDecoder().raw_decode(body[start:])[0]
        codes = set()
        for block in (folder / name / "cells").glob("*.json"):
            codes |= {c["error"] for c in json.loads(block.read_text())}
        out[name] = (rows, codes - {""})
    assert set(out) == set(CLI_SCORE), proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@SEALED_NOT_LANDED
@pytest.mark.parametrize("name", CLI_SCORE)
def test_algzu_score_gives_no_truth_no_cache_and_no_secret(cli_scores, name):
    """``algzu score`` (held out) on an attack that reads the ground truth from the scorer's
    frame, the ground-truth cache, or the secret from ``/proc``: every cell fails with a
    stable code, or it beats sampling at no budget."""
    rows, codes = cli_scores[name]
    assert codes <= STABLE_CODES, codes
    summary = "\n".join(f"{r['budget_flops']:.0e}: efficiency {r['efficiency']} [{r['efficiency_lo']}, "
                        f"{r['efficiency_hi']}], failures {r['failures']}" for r in rows)
    for r in rows:
        if r["failures"] < SUITE.n_copies:
            # `score --json` writes an infinite efficiency (an exact answer) as null today.
            hi = float("inf") if r["efficiency_hi"] is None else float(r["efficiency_hi"])
            assert hi < 1, f"beats sampling (null: infinite or undefined):\n{summary}"


# --- legal attacks: judged by issue #11's honest headline --------------------------------------


@HONEST_VERDICTS_NOT_LANDED
@pytest.mark.parametrize("name", sorted(LEGAL))
def test_legal_open_book_work_does_not_win_the_headline(scoring_runner, cache, name):
    """A zero-information constant tuned to the protocol, open-book precomputation on the
    public base, public-seed copies regenerated: legal, so they run; on a suite a verdict
    may come from, the headline (efficiency against ``sampling+prior``, issue #11) must be
    at most 1 within its interval at every budget."""
    result = run_suite(LEGAL_SUITE, cache_dir=cache, estimators=[name], block_runner=scoring_runner)
    assert not (result.cells.error.fillna("") != "").any(), _describe(result)  # legal: it must run
    lo = result.summary[f"{HEADLINE}_lo"]
    assert (lo <= 1).all(), f"wins the headline:\n{_describe(result)}"

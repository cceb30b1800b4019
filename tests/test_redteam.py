"""The red-team suite: estimators written to top the leaderboard by cheating must not (issue #10).

Every file in ``tests/redteam/`` is one attack estimator, ordinary Python exploiting no bug
in a dependency, named ``attack_*`` and loaded only with :func:`algzu.estimator.include`
(never discovered by the normal leaderboard). Its docstring says the attack class, what it
exploits and what a sound harness must do with it. Each is run here through
:func:`algzu.run.run_suite` on a tiny suite with the block runner that
``algzu leaderboard`` uses by default, taken from one fixture, :func:`scoring_runner`:
the sealed-scoring change switches that fixture (or the CLI default it reads) and removes
the ``xfail`` marks of the attacks it stops.

What "stopped" means (:func:`assert_contained`): every cell fails with a stable error code
(:data:`algzu.sandbox.runner.ERROR_CODES`, plus ``refused`` for a program the meter will not
accept), or, where cells run, the estimator does not beat sampling at any budget (the
upper bound of the efficiency interval is below 1). An attack charged its real work fails
as ``over_budget``: both tamper-with-the-meter attacks plan a program that costs far more
than the budget.

Four attacks target ``algzu score`` (three read the ground truth from ``run_suite``'s
frame, the ground-truth cache, and a held-out secret from ``/proc``; one rewrites the scorer
from its module body, wherever its file is imported): they are run through the CLI itself,
in a subprocess whose environment holds ``$ALGZU_SECRET`` as a real held-out run's would.

One attack targets the other estimators of its run (``attack_sabotage_rivals`` patches JAX
from its module body): it is never included in this process, and an honest sampler in
another file must score the same beside it as alone.

Three attacks are legal under issue #10 (they read nothing of the harness, so no seal can
refuse them) and are tested against what issue #11 (honest verdicts) will require
instead: the zero-information constant tuned to the protocol, open-book precomputation on
the public base model, and the public-seed copies regenerated from public data. On the
suite a verdict is drawn from (held-out copies of closed-book bases) they must not win the
headline (efficiency against ``sampling+prior``, interval at most 1).

Seven attacks were written after sealing and won under it (``CHARGED_AWAY``):
``attack_lookup_arithmetic`` does its arithmetic by ``gather`` from constant tables, which
the meter charged 0 up to 7b90a62. Reads and writes at computed positions now cost one FLOP
per element moved (as flopscope charges ``take``), and its program runs over budget.
``attack_complex_packing`` carries two samples in one complex64 number, whose ops the meter
charged as float32 ones up to 2bdaa52 (1.9 against sampling+prior on the 432 protocol at
1e8): complex work now costs flopscope's dearest complex factor, x11.
``attack_saturating_bound`` runs plain Monte Carlo in a ``fori_loop`` from ``INT_MAX - 64`` to
``convert(1e10 + 0)``: XLA saturates the bound to ``INT_MAX`` (64 trips), both meters folded
it with numpy's cast to ``INT_MIN`` (0 trips), so 131,072 samples cost 1 FLOP (446 against
sampling+prior at 1e4 on M4,3, up to 6c66895). The meters no longer fold a float-to-integer
conversion: the loop's trips are unknown and the program refused. Two more came from the
same red-team pass (up to 6f8675f): ``attack_kept_var_idx`` rewrote its Exported's
``module_kept_var_idx`` so that the meter took every argument of ``main`` for the key (work
on the weights free), and is refused; ``attack_householder_matmul`` did its matrix products
with ``orgqr``, priced 1 FLOP whatever its size, and now pays for forming Q. A third pass
found ``attack_trsm_batch`` (up to fde9efd): LAPACK ``trsm`` priced from a flattened matrix
operand while the kernel ran one solve per right-hand side; a LAPACK call must now have the
operands its kernel assumes, or it is refused. A fourth pass, over the pipeline around the
meter, found two more (``PIPELINE``, up to beeddc5): ``attack_key_seed`` read a held-out seed
off its free key (keys were ``fold_in``s of ``jax.random.key(seed)``; they are now hashed from
the seed stretched by 2^17 PBKDF2 rounds), and ``attack_hide_baselines`` broke, from its
module body, the listing of the baselines a run left out (now each one that cannot be listed
is named as not run).
A fifth pass, over the meters again (2026-12-02), found
``attack_reduce_window_init``: a reduction over one-element windows with a weight (or 0) as
its init computes ``c * x`` (or ``max(x, 0)``) for a whole array, which the StableHLO meter
priced 1 FLOP (up to 8904572): the products and ReLUs of an exact sampler were free, 45 FLOPs
a sample on M4,3 and 2,465 on M16,10 against ``sampling``'s 113 and 5,249. A reduction whose
init is not its body's identity now pays one combine per output, and its program runs over
budget.

One legal attack was priced away (``LEVELLED``): ``attack_trace_time_design`` draws its inputs
while tracing and stages them, with their targets, as constants, which cost nothing, while
``sampling`` paid for its random numbers and targets (1.6 against sampling+prior at 1e5 on
the M4,3 protocol up to c36581a). The meter now charges only work that depends on the copy's
weights, for every estimator: drawn or staged, an input costs nothing, and a sample costs the
same forward pass. ``attack_relabeled_sampler`` is ``stratified`` declared mechanistic: better
sampling beats sampling+prior (1.76 [1.12, 2.78] at 1e8 on the 432 protocol), and the verdict
counted every row that called itself mechanistic. A win must now also beat, measured, every
model-agnostic estimator on the board at that budget.

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

import numpy as np
import pandas as pd
import pytest

import algzu.estimator as registry
from algzu.estimator import include
from algzu.run import BASELINES, run_suite
from algzu.sandbox.runner import ERROR_CODES
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

# JAX attacks that beat sampling on 6f819d9 (before sealing) under the default isolated
# runner: sealed scoring must stop every one of them.
SEALED_AWAY = frozenset({
    "attack_debug_callback", "attack_stack_walk", "attack_gc_walk", "attack_compile_time_eval",
    "attack_patch_meter", "attack_trace_time_truth", "attack_tmpdir_state", "attack_free_scatter",
})  # fmt: skip
# JAX attacks that beat sampling under sealing, written after it, and stopped by the meter:
# arithmetic by table lookup (``gather`` was free up to 7b90a62), two samples packed in one
# complex number (complex ops cost what float32 ones did up to 2bdaa52), and a loop whose
# bound the meters folded with numpy's float-to-int cast, not XLA's (0 trips metered for 64
# run, up to 6c66895; now refused), a forged ``module_kept_var_idx`` that called every
# argument the key, and matrix products by ``orgqr``, priced 1 FLOP (both up to 6f8675f;
# now refused, and charged), and by batched ``trsm`` calls priced as one solve (up to fde9efd;
# now refused), and products and ReLUs done as reductions whose init is a weight or 0,
# priced 1 FLOP an array by the StableHLO meter (up to 8904572; now one combine per output).
CHARGED_AWAY = frozenset({
    "attack_lookup_arithmetic", "attack_complex_packing", "attack_saturating_bound", "attack_kept_var_idx",
    "attack_householder_matmul", "attack_trsm_batch", "attack_reduce_window_init",
})  # fmt: skip
# Legal attacks (they read nothing of the harness) levelled: inputs staged as constants while
# tracing skipped what sampling paid for its inputs and targets up to c36581a; a sampler
# declared mechanistic won the verdict with better sampling up to 16be9a4.
LEVELLED = frozenset({"attack_trace_time_design", "attack_relabeled_sampler"})
# numpy attacks (their code must hold the weights to compute on them): they cannot be
# sealed, so they run in an unsealed worker and their rows say so; they never count for a
# verdict. Those that beat sampling there still do.
UNSEALED_BY_DESIGN = frozenset({
    "attack_np_tolist", "attack_np_buffer", "attack_np_scalar_reads", "attack_forge_channel",
})  # fmt: skip
# Contained before sealing already: callbacks refused by the meter; no ground truth and no
# cache reachable from the sandboxed worker, no secret readable in /proc.
CONTAINED_BEFORE = frozenset({
    "attack_pure_callback", "attack_io_callback", "attack_gt_cache", "attack_stack_truth",
    "attack_secret_proc",
})  # fmt: skip
WINS_BEFORE = SEALED_AWAY | UNSEALED_BY_DESIGN
CONTAINED_TODAY = CONTAINED_BEFORE
# Code that runs wherever the estimator's file is imported, aimed at the harness's own
# process: never included in this test process (it would patch it), only run by the CLI
# in a subprocess (:data:`CLI_SCORE`). Beat sampling before the harness stopped importing
# estimator files (6f819d9 to 56144c9).
IN_THE_HARNESS = frozenset({"attack_import_time"})
# Code that runs wherever the estimator's file is imported, aimed at the other estimators of
# the run (their tracing): never included in this test process either (it would patch JAX
# here), only given to a runner's workers. Broke an included rival on 12a40da.
AT_RIVALS = frozenset({"attack_sabotage_rivals"})
# Run through `algzu score` with a held-out secret in the environment (it ran estimators
# in-process before sealing).
CLI_SCORE = ("attack_secret_proc", "attack_gt_cache", "attack_stack_truth", "attack_import_time")
# Legal under issue #10 (no harness data read); judged by issue #11's headline instead.
LEGAL = frozenset({"attack_protocol_constant", "attack_open_book", "attack_public_copies"})
# Around the meter, found by a red-team pass over the sealed pipeline (up to beeddc5): reading
# the held-out seed off the free key (on a public seed that is ``attack_public_copies``'
# open-book win), and breaking the listing of the baselines a run left out. Each has its test.
PIPELINE = frozenset({"attack_key_seed", "attack_hide_baselines"})
# Code that runs wherever the estimator's file is listed, aimed at the listing of the other
# files that name a baseline: never included in this test process (every run of the module
# would list it), only given to a runner of its own.
AT_THE_LISTING = frozenset({"attack_hide_baselines"})
# The headline (issue #11): efficiency against sampling+prior, interval `<prefix>_lo/_hi`.
HEADLINE = "prior_efficiency"


@pytest.fixture(scope="module")
def attacks():
    """Every attack file, registered for this module only (before the worker starts, so a
    sandboxed worker may read them all)."""
    with registry.ESTIMATORS.restoring():
        for name, path in ATTACK_FILES.items():
            if name not in IN_THE_HARNESS | AT_RIVALS | AT_THE_LISTING:
                include(path)
        yield


@pytest.fixture(scope="module")
def scoring_runner(attacks):
    """The block runner ``algzu leaderboard`` uses by default, with the CLI's default
    settings: the sealed runner."""
    from algzu.cli import ISOLATE, MEMORY_MB, SEALED, TIMEOUT, _block_runner
    from algzu.sandbox.workers import SealedRunner

    with _block_runner(SEALED.default, ISOLATE.default, TIMEOUT.default, MEMORY_MB.default) as runner:
        assert isinstance(runner, SealedRunner)
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
    """Every cell failed with a stable code, or the estimator beat sampling at no budget:
    not even plain sampling, whose efficiency is never below the headline's."""
    cells = result.cells
    codes = set(cells.error.fillna("")) - {""}
    assert codes <= STABLE_CODES, f"unstable error codes {codes - STABLE_CODES}\n{_describe(result)}"
    if (cells.error.fillna("") != "").all():
        return
    beats = result.summary[~(result.summary.efficiency_hi < 1)]
    assert beats.empty, f"beats sampling (or undecided) where cells ran:\n{_describe(result)}"


def assert_never_counted(result) -> None:
    """Every row is marked unsealed, and no verdict names the estimator."""
    from algzu.challenge import verdict

    assert not result.cells.sealed.any() and not result.summary.sealed.any()
    text = verdict(result.summary, book="open-book")
    assert "No sealed mechanistic estimator was scored here" in text and "unsealed" in text, text


def test_every_attack_file_is_classified_and_documented():
    """Each attack is in exactly one group above, registers one ``attack_*`` estimator named
    after its file, and its docstring says its class, what it exploits and what a sound
    harness must do."""
    assert len(ATTACK_FILES) >= 12
    groups = [SEALED_AWAY, UNSEALED_BY_DESIGN, CONTAINED_BEFORE, LEGAL, IN_THE_HARNESS, AT_RIVALS, CHARGED_AWAY,
              LEVELLED, PIPELINE]
    assert set(ATTACK_FILES) == set().union(*groups)
    assert sum(map(len, groups)) == len(ATTACK_FILES), "an attack is in two groups"
    assert set(CLI_SCORE) <= CONTAINED_BEFORE | IN_THE_HARNESS
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


@pytest.mark.parametrize(
    "name",
    sorted(
        SEALED_AWAY
        | (CHARGED_AWAY - {"attack_householder_matmul"})  # its own, exact test below
        | (CONTAINED_BEFORE - {"attack_gt_cache", "attack_stack_truth"})
    ),
)
def test_sealed_attack_is_refused_or_charged_and_does_not_beat_sampling(scoring_runner, cache, name):
    """Under the default (sealed) runner a JAX attack ends as failed or refused cells with a
    stable error code, or does not beat sampling at any budget."""
    result = run_suite(SUITE, cache_dir=cache, estimators=[name], block_runner=scoring_runner)
    assert result.cells.sealed.all()
    assert_contained(result)


def test_a_held_out_seed_cannot_be_read_off_the_key(scoring_runner, cache):
    """``attack_key_seed`` tries every seed below 2^16 on its key (free work) and rebuilds its
    copy from the one that matches. The suite's seed here stands for one drawn from a secret
    (below 2^16, so that this search would find it): with held-out keys it finds nothing and
    measures another copy of the public base, a protocol constant in effect, which wins no
    headline (interval lower end <= 1). Up to beeddc5 it found the seed and scored ~1,600x
    sampling+prior for 0 FLOPs."""
    suite = SUITE.with_overrides(seed=54_321)
    result = run_suite(suite, cache_dir=cache, estimators=["attack_key_seed"], block_runner=scoring_runner,
                       held_out=True)
    assert result.cells.sealed.all() and (result.cells.seed == -1).all()
    assert (result.summary[f"{HEADLINE}_lo"] <= 1).all(), f"wins the headline:\n{_describe(result)}"


def test_a_file_that_breaks_the_baselines_listing_leaves_them_named(tmp_path):
    """``attack_hide_baselines`` (``stratified`` declared mechanistic) makes the listing of the
    baselines a run left out fail in its own tracer. Up to beeddc5 that emptied
    ``baselines_not_run``; now every baseline that could not be listed is named, so a board
    without ``stratified`` draws no win."""
    from algzu.sandbox.workers import SealedRunner

    with SealedRunner(includes=[ATTACK_FILES["attack_hide_baselines"]]) as runner:
        result = run_suite(SUITE, cache_dir=tmp_path, estimators=["attack_hide_baselines"], block_runner=runner)
    assert set(result.summary["baselines_not_run"]) == {"sampling,stratified"}, _describe(result)


def test_arithmetic_by_table_lookup_is_charged(scoring_runner, cache):
    """A sampler whose forward pass is lookups into constant product and sum tables planned
    ~4 FLOPs a sample on M4,3 when ``gather`` was free (15x plain sampling at 1e3 on this
    suite, 2.9 against sampling+prior at 1e4 with 32 copies). Sealing cannot see it: it
    reads nothing but its own constants. Charged one FLOP per element it reads, its program
    is over budget."""
    result = run_suite(SUITE, cache_dir=cache, estimators=["attack_lookup_arithmetic"], block_runner=scoring_runner)
    assert result.cells.sealed.all()
    assert (result.cells.error == "over_budget").all(), _describe(result)


@pytest.mark.parametrize("model_id", ["2nd_argmax-d4-n3", "2nd_argmax-d16-n10"])
def test_matrix_products_by_householder_reflectors_cost_more_than_plain_ones(attacks, model_id):
    """``attack_householder_matmul`` does every matrix product of the forward pass with one
    batched ``orgqr``, which the StableHLO meter priced 1 FLOP up to 6f8675f: a sample cost 16
    FLOPs on M4,3 and 171 on M16,10 against ``sampling``'s 113 and 5,249 (48 [27, 99] against
    sampling+prior at 1e7 on the 432 protocol). Charged for forming Q, a sample now costs more
    than ``sampling``'s. (Checked on the meter, exactly: on the CI suite its cells are too few
    to tell a loser from a winner at 1e3.)"""
    from algzu import hlo_meter
    from algzu.estimator import ESTIMATORS
    from algzu.planning import abstract_key, abstract_model, sample_mean
    from algzu.zoo import load_model

    hh_mean = sys.modules[ESTIMATORS["attack_householder_matmul"].__module__].hh_mean
    spec = load_model(model_id).spec
    model, key = abstract_model(spec), abstract_key()
    packed = [hlo_meter.count_flops(lambda m, k, c=c: hh_mean(m, c, k), model, key) for c in (1024, 2048)]
    plain = [hlo_meter.count_flops(lambda m, k, c=c: sample_mean(m, c, k), model, key) for c in (1024, 2048)]
    per_packed, per_plain = (packed[1] - packed[0]) / 1024, (plain[1] - plain[0]) / 1024
    assert per_packed > per_plain, (per_packed, per_plain)


@pytest.mark.parametrize("model_id", ["2nd_argmax-d4-n3", "2nd_argmax-d16-n10"])
def test_inputs_staged_while_tracing_buy_nothing(attacks, model_id):
    """A sample drawn while tracing (numpy constants, with its target) costs what a sample
    drawn from the key costs, as charged (the StableHLO meter): the forward pass and the
    scoring. Up to c36581a ``sampling`` also paid its normals and targets, 69 of 182 FLOPs a
    sample on M4,3 and 230 of 5,479 on M16,10, and staging them won the M4,3 headline."""
    from algzu import hlo_meter
    from algzu.estimator import ESTIMATORS
    from algzu.planning import abstract_key, abstract_model, sample_mean
    from algzu.zoo import load_model

    staged_mean = sys.modules[ESTIMATORS["attack_trace_time_design"].__module__].staged_mean
    spec = load_model(model_id).spec
    model, key = abstract_model(spec), abstract_key()
    staged = [hlo_meter.count_flops(lambda m, c=c: staged_mean(m, c), model) for c in (1024, 2048)]
    drawn = [hlo_meter.count_flops(lambda m, k, c=c: sample_mean(m, c, k), model, key) for c in (1024, 2048)]
    per_staged, per_drawn = (staged[1] - staged[0]) / 1024, (drawn[1] - drawn[0]) / 1024
    assert per_drawn == pytest.approx(per_staged, abs=1.0), (per_staged, per_drawn)


def _summary_row(name, mechanistic, mse, mse_hi, lo, **more):
    """A summary row of the 432 protocol at 1e8 (figures rounded), with headline lower end ``lo``."""
    return dict(model="algzoo/example_2nd_argmax", estimator=name, mechanistic=mechanistic, sealed=True,
                budget_flops=1e8, mse=mse, mse_hi=mse_hi, prior_efficiency=lo + 0.6, prior_efficiency_lo=lo,
                prior_efficiency_hi=lo + 1.6, efficiency=lo + 0.6, efficiency_lo=lo, fvu=mse / 4e-4, **more)


def test_a_sampler_declared_mechanistic_wins_no_verdict():
    """``attack_relabeled_sampler`` is ``stratified`` declared mechanistic. On the 432 protocol
    at 1e8 both score 1.76 [1.12, 2.78] against sampling+prior (2.16 [1.47, 3.15] closed-book),
    which the verdict called a mechanistic win of ARC's challenge up to 16be9a4. A win must
    also beat, measured, every model-agnostic estimator on the board at that budget; an exact
    estimator still does. The rows are the committed 432 cells' shape, figures rounded."""
    from algzu.challenge import verdict

    row = _summary_row
    rows = [row("stratified", False, 2.0e-6, 3.2e-6, 1.12), row("sampling", False, 3.8e-6, 5.6e-6, 0.64),
            row("attack_relabeled_sampler", True, 2.0e-6, 3.2e-6, 1.12)]
    text = verdict(pd.DataFrame(rows), book="closed-book")
    assert "A mechanistic estimator beats" not in text, text
    assert "Not wins" in text and "`attack_relabeled_sampler` at 1e+08 (not below `stratified`)" in text, text
    exact = row("exact", True, -1e-9, 2e-9, 400.0)
    text = verdict(pd.DataFrame(rows + [exact]), book="closed-book")
    assert ("every model-agnostic baseline on this board (its MSE measurably below theirs and below "
            "sampling+prior run on the same copies): `exact` at 1e+08.") in text


def test_a_board_without_stratified_draws_no_win(scoring_runner, cache):
    """``algzu leaderboard --estimator attack_relabeled_sampler --estimator sampling``: on a
    board without ``stratified`` the relabeled sampler beats every model-agnostic estimator
    *on the board*, and up to 6c2c160 the verdict called that a win (the 432 rows at 1e8
    below, without a ``stratified`` row). A shipped baseline left out of a run that supports
    the model is now named in the summary (``baselines_not_run``) and counts as a rival not
    beaten."""
    from algzu.challenge import verdict

    result = run_suite(SUITE, cache_dir=cache, estimators=["attack_relabeled_sampler", "sampling"],
                       block_runner=scoring_runner)
    left_out = result.summary.groupby("estimator")["baselines_not_run"].unique()
    assert list(left_out["attack_relabeled_sampler"]) == ["stratified"] and list(left_out["sampling"]) == [""]
    rows = [_summary_row("sampling", False, 3.8e-6, 5.6e-6, 0.64, not_below="", baselines_not_run=""),
            _summary_row("attack_relabeled_sampler", True, 2.0e-6, 3.2e-6, 1.12, not_below="",
                         baselines_not_run="stratified")]
    text = verdict(pd.DataFrame(rows))
    assert "A mechanistic estimator beats" not in text, text
    assert "`attack_relabeled_sampler` at 1e+08 (`stratified` not run)" in text, text
    old = pd.DataFrame(rows).drop(columns="baselines_not_run")  # the summary as 6c2c160 wrote it
    assert "A mechanistic estimator beats" in verdict(old)


def _truths(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies' true accuracies ~ N(0.9, 0.035), their ground truths from 2^20 inputs and its
    standard errors."""
    p = np.clip(rng.normal(0.9, 0.035, shape), 0.0, 0.999)
    se = np.sqrt(p * (1 - p) / 2**20)
    return p, p + se * rng.standard_normal(shape), se


def _relabeled_cells(seed: int, copies: int = 32, sd: float = 0.003) -> pd.DataFrame:
    """One model and budget: ``stratified``, an exact estimator and ``relabeled``, as good as
    ``stratified`` with draws of its own (both the truth plus N(0, sd) errors), declared
    mechanistic (:func:`_truths`)."""
    rng = np.random.default_rng(seed)
    p, truth, se = _truths(rng, copies)
    estimates = {"stratified": (False, p + sd * rng.standard_normal(copies)),
                 "relabeled": (True, p + sd * rng.standard_normal(copies)), "exact": (True, p)}
    return _cells(estimates, truth, se, budget=1e8)


def _cells(estimates: dict, truth: np.ndarray, se: np.ndarray, budget: float) -> pd.DataFrame:
    """Sealed cells of model ``m`` at one budget: ``{name: (mechanistic, per-copy estimates)}``
    against ground truths ``truth`` from 2^20 inputs with standard errors ``se``."""
    return pd.DataFrame([dict(model="m", estimator=name, mechanistic=mech, sealed=True, budget_flops=budget, copy=k,
                              estimate=est[k], ground_truth=truth[k], gt_stderr=se[k], gt_samples=2.0**20,
                              metric="accuracy", error="") for name, (mech, est) in estimates.items()
                         for k in range(len(truth))])


def test_an_estimator_as_good_as_a_rival_is_rarely_called_better():
    """``attack_relabeled_sampler`` with keys of its own is as good as ``stratified``, not
    better. Up to 96bd6af the verdict called it better where its MSE interval's upper end lay
    below ``stratified``'s *measured* MSE: both MSEs are noisy, and that happened in 7.2% of
    2,000 simulated cells (32 copies, each estimate the truth plus N(0, 0.003) errors, truths
    ~ N(0.9, 0.035), ground truth from 2^20 inputs). One end of one interval against a point
    with a spread of its own is crossed that often. Paired over the copies (``rival_gap``:
    the interval of MSE - the rival's MSE below 0) it is 3.1% (with 3,000 cells and other
    seeds: 3.1% and 4.3% at 32 copies, 2.4% and 3.4% at 64, 2.7% and 2.1% at 256), against
    2.5% for one end of a 95% interval. Asserted on the same 2,000 cells (fixed seed):
    <= 2.5% + 3 standard errors of a 2.5% rate (0.35 points each), and the unpaired rule
    above 5%, so the simulation still shows what the pairing is for."""
    from algzu.scoring import _Q, bootstrap_weights, copy_columns, reference, relative_mse_interval, rival_gap

    rng = np.random.default_rng(11)
    cells, copies, sd = 2000, 32, 0.003
    p, truth, se = _truths(rng, (cells, copies))
    n_gt = np.full(p.shape, 2.0**20)
    rival, relabeled = (copy_columns(p + sd * rng.standard_normal(p.shape), truth, se, n_gt, "accuracy")
                        for _ in range(2))
    w = bootstrap_weights(copies)
    paired = float((rival_gap(relabeled[..., _Q], rival[..., _Q], weights=w)[2] < 0.0).mean())
    unpaired_hi = relative_mse_interval(relabeled, reference("one", 1, copies), weights=w)[2]
    unpaired = float((unpaired_hi < rival[..., _Q].mean(axis=-1)).mean())
    assert paired <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / cells), paired
    assert unpaired > 0.05, unpaired


def test_a_relabeled_sampler_wins_no_budget_of_a_board():
    """A verdict wins if any of its claims holds: one per budget (and mechanistic estimator).
    With each claim at 2.5% (``rival_test`` with ``family=1``: 2.46% of cells), the
    relabeled sampler of the test above is called better than ``stratified`` at some budget
    of a 7-budget board in 15.8% of 1,000 simulated boards (independent cells, the worst case
    for a union; 22% with the bootstrap interval alone, 6c2c160's rule). ``rival_test``
    corrects for the number of claims (Bonferroni) and adds a sign-flip test, exact for such
    a copy: 2.4% of boards (0.34% of cells against 0.36% nominal). Asserted (fixed seed):
    <= 2.5% + 3 standard errors of a 2.5% rate over 1,000 boards (0.49 points each); without
    the correction, above 10%."""
    from algzu.scoring import _Q, copy_columns, rival_test

    rng = np.random.default_rng(5)
    boards, budgets, copies, sd = 1000, 7, 32, 0.003
    p, truth, se = _truths(rng, (boards, budgets, copies))
    n_gt = np.full(p.shape, 2.0**20)
    rival, relabeled = (copy_columns(p + sd * rng.standard_normal(p.shape), truth, se, n_gt, "accuracy")[..., _Q]
                        for _ in range(2))
    won = {1: [], budgets: []}
    for part in np.array_split(np.arange(boards), 10):  # bounded memory
        for family in won:
            won[family].append(rival_test(relabeled[part], rival[part], family=family)[2].any(axis=1))
    corrected, per_claim = (float(np.concatenate(won[f]).mean()) for f in (budgets, 1))
    assert corrected <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / boards), corrected
    assert per_claim > 0.10, per_claim


def test_a_protocol_aware_sampler_wins_no_budget_of_a_board():
    """The attack: sampling shrunk towards a guess of the protocol's mean (off by sd 0.003, a
    weak reading of a closed-book base; the Bayes mix sampling+prior is, so its true headline
    is at most 1), declared mechanistic, on the 432 protocol (truths ~ N(0.926, 0.02), 64
    copies, 2^24-input ground truth, 5,249 FLOPs a sample), fresh draws at each budget, and
    ``sampling`` with draws of its own on the board. A verdict wins where the headline's lower
    end reaches 1 and the paired rival tests say it is below every model-agnostic rival.

    On the suite's budgets 1e4-1e9 (2,000 boards, 64 copies; 32 in brackets): up to 2f4a819 a
    verdict read each budget's 95% interval, and the headline alone won some budget on 13.5%
    of boards; at ``claim_level`` (each end at 2.5% / claims) 3.2% [4.15%] (per claim up to
    0.9% against 0.42%: the bootstrap's far tail at 32-64 copies of squared errors is short),
    and with the rival test against ``sampling`` 1.65% [1.35%]. But where shrinking beats
    plain sampling (n near vbar / V ~ 170; budgets 4e5-1.2e6 here) the rival test passes and
    the headline's short tail decides: 2.9% [2.85%] of boards with those budgets. Paired
    against sampling+prior run on the same copies too (``sampling_prior_estimates``, a rival
    of every verdict since this test): 0.4% [0.5%] there, 0.75% [0.85%] on 1e4-1e9.
    Asserted (fixed seed) on 600 boards with budgets 4e5-1.2e6 (measured: 0.67% and 4.2%):
    at most the nominal 2.5% with the measured sampling+prior, above it without; and, the
    correction's reason, each budget's 95% headline alone above 10% (300 boards: 14%)."""
    from algzu.scoring import (_Q, bootstrap_weights, claim_level, copy_columns, reference, relative_mse_interval,
                               rival_test, sampling_prior_estimates)

    rng = np.random.default_rng(7)
    boards, copies, mean, sd, fps = 600, 64, 0.926, 0.02, 5249.0
    budgets = [400_000, 550_000, 700_000, 850_000, 1_000_000, 1_200_000]
    p = np.clip(rng.normal(mean, sd, (boards, copies)), 0.0, 1.0)
    se = np.sqrt(p * (1 - p) / 2**24)
    truth, n_gt = p + se * rng.standard_normal(p.shape), np.full(p.shape, 2.0**24)
    guess, v = mean + 0.003 * rng.standard_normal((boards, 1)), mean * (1 - mean)
    level, n_boot = claim_level(len(budgets))
    w, w95 = bootstrap_weights(copies, n_boot=n_boot), bootstrap_weights(copies)
    won = {rule: np.zeros(boards, bool) for rule in ("verdict", "without prior", "per budget")}
    for budget in budgets:
        n = budget // fps
        attack = (guess / sd**2 + rng.binomial(n, p) / v) / (1 / sd**2 + n / v)
        plain = rng.binomial(n, p) / n
        cols, rival = (copy_columns(e, truth, se, n_gt, "accuracy") for e in (attack, plain))
        prior = copy_columns(sampling_prior_estimates(rival, plain, truth, n), truth, se, n_gt, "accuracy")
        ref = reference("sampling_prior", n, copies)
        for part in np.array_split(np.arange(boards), 3):  # bounded memory
            headline = relative_mse_interval(cols[part], ref, level=level, weights=w)[2] <= 1.0
            below_plain = rival_test(cols[part][..., _Q], rival[part][..., _Q], family=len(budgets))[2]
            below_prior = rival_test(cols[part][..., _Q], prior[part][..., _Q], family=len(budgets))[2]
            won["verdict"][part] |= headline & below_plain & below_prior
            won["without prior"][part] |= headline & below_plain
        half = np.arange(boards // 2)
        won["per budget"][half] |= relative_mse_interval(cols[half], ref, weights=w95)[2] <= 1.0
    rates = {rule: float(won[rule][: boards // 2 if rule == "per budget" else boards].mean()) for rule in won}
    assert rates["verdict"] <= 0.025 < rates["without prior"], rates
    assert rates["per budget"] > 0.10, rates


def test_the_verdict_reads_the_headline_at_the_level_of_its_claims():
    """End to end from cells: ``run_suite``'s summary carries each claim's corrected lower end
    (``headline_claims``, as ``relative_mse_interval`` gives it at ``claim_level``), and a
    verdict wins only where it reaches 1, naming the rows whose 95% interval alone did."""
    from algzu.challenge import verdict
    from algzu.scoring import _cell_table, claim_level, headline_claims, reference, relative_mse_interval

    cells = _relabeled_cells(seed=3)
    fps = {"m": 1e8 / 50}  # 50 samples at the budget
    claims = headline_claims(cells, fps).set_index("estimator")
    assert set(claims.index) == {"exact", "relabeled"} and (claims["claims"] == 2).all()
    level = claim_level(2)[0]
    g = cells[cells["estimator"] == "relabeled"].sort_values("copy")
    hi = relative_mse_interval(_cell_table(g)[0], reference("sampling_prior", 50, 32), level=level)[2]
    assert claims.loc["relabeled", "prior_efficiency_claim_lo"] == pytest.approx(1 / float(hi), rel=0.05)
    rows = pd.DataFrame([dict(model="m", estimator="mine", budget_flops=1e8, mechanistic=True, sealed=True,
                              not_below="", mse=1e-6, mse_hi=2e-6, prior_efficiency=3.0, prior_efficiency_lo=1.2,
                              prior_efficiency_hi=4.0, prior_efficiency_claim_lo=0.9, claims=6, efficiency=3.0,
                              efficiency_lo=2.0, fvu=0.01)])
    text = verdict(rows)
    assert text.startswith("No mechanistic estimator beats sampling+prior"), text
    assert "at the level of the model's 6 claims" in text and "`mine` at 1e+08 (0.9)" in text
    assert verdict(rows.assign(prior_efficiency_claim_lo=1.1)).startswith("A mechanistic estimator beats")


def test_the_verdict_compares_with_rivals_paired_over_copies():
    """End to end from cells: ``run_suite``'s summary carries the paired comparison and the
    verdict reads it. The relabeled estimator is not below ``stratified``; an exact one is."""
    from algzu.challenge import verdict
    from algzu.scoring import rival_comparison

    cells = _relabeled_cells(seed=3)
    compared = rival_comparison(cells).set_index("estimator")
    assert compared.loc["relabeled", "not_below"] == "stratified"
    assert compared.loc["exact", "not_below"] == "" and compared.loc["exact", "agnostic_gap_hi"] < 0.0
    assert "stratified" not in compared.index  # only mechanistic rows are compared
    # A rival's copy, relabeled: the gap is exactly 0 in every resample.
    same = cells[cells["estimator"] == "stratified"].assign(estimator="copycat", mechanistic=True)
    copycat = rival_comparison(pd.concat([cells, same])).set_index("estimator").loc["copycat"]
    assert copycat["not_below"] == "stratified" and copycat["agnostic_gap_hi"] == 0.0
    rows = compared.reset_index()[["model", "estimator", "budget_flops", "not_below"]]
    rows = rows.assign(mechanistic=True, sealed=True, mse=1e-6, mse_hi=2e-6, prior_efficiency=3.0,
                       prior_efficiency_lo=2.0, prior_efficiency_hi=4.0, efficiency=3.0, efficiency_lo=2.0,
                       fvu=0.01)
    text = verdict(rows)
    assert "on the same copies): `exact` at 1e+08." in text
    assert "`relabeled` at 1e+08 (not below `stratified`)" in text


def _verdict_rows(compared: pd.DataFrame) -> pd.DataFrame:
    """Summary rows around ``rival_comparison``'s output: every claim's headline reaches 2."""
    return compared.reset_index().assign(mechanistic=True, sealed=True, mse=1e-6, mse_hi=2e-6, prior_efficiency=3.0,
                                         prior_efficiency_lo=2.0, prior_efficiency_hi=4.0, efficiency=3.0,
                                         efficiency_lo=2.0, fvu=0.01)


def test_a_copy_of_a_winner_declared_model_agnostic_does_not_veto_it():
    """A red-team pass: ``exact_cones`` copied into a file of its own with ``mechanistic =
    False`` made the verdict say the real one was "not below" it, so a rival's win could be
    vetoed while one's own stood. "Model-agnostic" is an author's word too: only the shipped
    baselines (and sampling+prior) are rivals; other agnostic rows are scored, not used."""
    from algzu.challenge import verdict
    from algzu.scoring import rival_comparison

    cells = _relabeled_cells(seed=3)
    exact = cells[cells["estimator"] == "exact"]
    veto = exact.assign(estimator="veto", mechanistic=False)
    compared = rival_comparison(pd.concat([cells, veto])).set_index("estimator")
    assert compared.loc["exact", "not_below"] == "", compared  # "veto" up to this change
    assert "on the same copies): `exact` at 1e+08." in verdict(_verdict_rows(compared))


@pytest.mark.parametrize("failed", ["stratified", "sampling"])
def test_a_baseline_that_failed_on_a_copy_leaves_no_win(failed):
    """A red-team pass: a tracer's thread SIGKILLed the other tracers of its run (siblings
    in its process group), so every ``sampling`` and ``stratified`` cell "crashed" and was
    scored as the worst trivial estimate, and the attacker, ``stratified`` declared
    mechanistic, was measured below both: a closed-book win on the smoke suite (64.9 [13.4,
    inf] at 1e5). Landlock now scopes signals where the kernel can; whatever the kernel, a
    rival that failed on any copy is named and the verdict draws no win at that budget
    (sampling+prior, built on ``sampling``'s estimates, fails with it)."""
    from algzu.challenge import verdict
    from algzu.scoring import PRIOR_RIVAL, rival_comparison

    cells = pd.concat([_relabeled_cells(seed=3), _relabeled_cells(seed=3).query("estimator == 'stratified'")
                       .assign(estimator="sampling")])
    sabotaged = cells.copy()
    hit = (sabotaged["estimator"] == failed) & (sabotaged["copy"] < 8)
    sabotaged.loc[hit, "error"] = "crashed"
    sabotaged.loc[hit, "estimate"] = np.nan
    fps = {"m": 1e8 / 1e4}
    clean = rival_comparison(cells, fps).set_index("estimator")
    assert (clean["rivals_failed"] == "").all() and clean.loc["exact", "not_below"] == ""
    compared = rival_comparison(sabotaged, fps).set_index("estimator")
    expected = {"stratified": "stratified", "sampling": f"sampling,{PRIOR_RIVAL}"}[failed]
    assert compared.loc["exact", "rivals_failed"] == expected
    assert compared.loc["exact", "not_below"] == ""  # scored as failures, the rival is beaten: hence the column
    text = verdict(_verdict_rows(compared))
    assert text.startswith("No mechanistic estimator beats"), text
    assert f"`exact` at 1e+08 (`{failed}` failed on some copies" in text, text
    # A summary from before the column: the baselines' own failure counts say the same.
    rival = dict(model="m", estimator=failed, mechanistic=False, sealed=True, budget_flops=1e8, failures=8,
                 mse=1e-3, mse_hi=2e-3, prior_efficiency=0.1, prior_efficiency_lo=0.05, prior_efficiency_hi=0.2,
                 efficiency=0.1, efficiency_lo=0.05, fvu=1.0)
    old = pd.concat([_verdict_rows(compared).drop(columns="rivals_failed"), pd.DataFrame([rival])])
    assert f"`exact` at 1e+08 (`{failed}` failed on some copies" in verdict(old), verdict(old)


def test_a_verdict_measures_sampling_plus_prior_on_the_copies():
    """Given the FLOPs of a sample, ``rival_comparison`` also pairs every claim with
    sampling+prior run on the copies: ``sampling``'s own estimates (means of n samples)
    shrunk towards the copies' mean truth. Sampling shrunk the same way with draws of its own
    (the protocol-aware attack at its best: the copies' own prior) is not below it, though it
    is below plain ``sampling``; an exact estimator is below both."""
    from algzu.scoring import PRIOR_RIVAL, rival_comparison

    rng = np.random.default_rng(4)
    copies, n = 64, 200
    p, truth, se = _truths(rng, copies)
    plain, own = (rng.binomial(n, p) / n for _ in range(2))
    V, vbar = p.var(ddof=1), float(np.mean(p * (1 - p)))
    shrunk = (V * own + vbar / n * truth.mean()) / (V + vbar / n)
    cells = _cells({"sampling": (False, plain), "protocol": (True, shrunk), "exact": (True, p)}, truth, se, budget=1e6)
    compared = rival_comparison(cells, {"m": 1e6 / n}).set_index("estimator")
    assert compared.loc["protocol", "not_below"] == PRIOR_RIVAL, compared
    assert compared.loc["exact", "not_below"] == ""
    assert rival_comparison(cells).set_index("estimator").loc["protocol", "not_below"] == ""  # sampling alone


@pytest.mark.parametrize("name", sorted(UNSEALED_BY_DESIGN | {"attack_gt_cache", "attack_stack_truth"}))
def test_numpy_attack_runs_unsealed_and_never_counts(scoring_runner, cache, name):
    """A numpy attack cannot be sealed: it runs (in a sandboxed worker) but its rows say
    unsealed and no verdict counts them, whatever they score."""
    result = run_suite(SUITE, cache_dir=cache, estimators=[name], block_runner=scoring_runner)
    assert_never_counted(result)


# --- an estimator file against the others of its run ----------------------------------------

def test_a_module_body_cannot_reach_another_estimators_tracing(tmp_path, sampler_source):
    """``attack_sabotage_rivals`` replaces ``jax.random.normal`` with zeros from its module
    body. Run in one sealed run beside an honest sampler from another file, the sampler's
    estimates are bit for bit those it gets alone: each estimator file is listed and traced
    by a worker of its own. (With one shared tracer, 12a40da, the sampler saw only the
    all-zero input: MSE 0.82 at every budget.)"""
    from algzu.sandbox.workers import SealedRunner

    rival = tmp_path / "rival.py"
    rival.write_text(sampler_source("rival_sampling"))
    suite = Suite(name="rivals", cases=SUITE.cases, n_copies=4, budgets=(10**4,), gt_samples=1 << 12, seed=0)
    estimates = {}
    for attacked in (False, True):
        includes = [rival, ATTACK_FILES["attack_sabotage_rivals"]] if attacked else [rival]
        names = ["rival_sampling", "attack_sabotage_rivals"] if attacked else ["rival_sampling"]
        with SealedRunner(includes=includes) as runner:
            result = run_suite(suite, cache_dir=tmp_path / f"cache-{attacked}", estimators=names, block_runner=runner)
            tracers = runner.tracer_pids
        # One tracer per estimator file; with a mechanistic estimator (the attack) the shipped
        # baselines the run leaves out are listed too, each by its own, for the verdict.
        listed = names + (list(BASELINES) if attacked else [])
        assert len(tracers) == len(listed), tracers
        cells = result.cells[result.cells.estimator == "rival_sampling"]
        assert (cells.error.fillna("") == "").all(), cells.message.tolist()
        estimates[attacked] = cells.sort_values("copy").estimate.tolist()
    assert estimates[True] == estimates[False]
    assert 0.6 < min(estimates[False]) and max(estimates[False]) < 1.0  # the sampler really sampled


FORGED_NAME = ("rtb_const` wins nothing.\n\n**Verdict.** Closed-book: A mechanistic estimator beats "
               "sampling+prior: `rtb_const` at 1e+05.\n\n<!-- `")


def test_a_name_that_carries_markdown_is_refused(tmp_path, sampler_source):
    """A red-team pass: an estimator named with a backquote, blank lines and a forged verdict
    paragraph printed that paragraph into ``leaderboard.md`` after the real verdict (names are
    quoted between backquotes), and its unclosed ``<!--`` hid the rest of the rendered page.
    Names are now 1-64 letters, digits or ``_.+-``: refused where the class is registered
    (the worker's registry) and where a worker's catalog answer is read (a module body can
    answer what it likes)."""
    import json

    from algzu.errors import AlgzuError
    from algzu.sandbox.workers import SealedRunner, _decode_catalog

    forged = tmp_path / "forged.py"
    forged.write_text(sampler_source(name_code=repr(FORGED_NAME)))
    with registry.ESTIMATORS.restoring(), pytest.raises(AlgzuError, match="must be 1-64 letters"):
        include(forged)
    with SealedRunner(includes=[forged]) as runner, pytest.raises(AlgzuError, match="must be 1-64 letters"):
        runner.catalog(["rtb_const"], [])
    card = {"name": FORGED_NAME, "module": "m", "qualname": "C", "file": str(forged), "fields": "()",
            "settings": "C()", "mechanistic": True, "backend": "jax", "supports": []}
    with pytest.raises(AlgzuError, match="malformed data"):
        _decode_catalog(json.dumps({"ok": True, "cards": [card]}).encode(), str(forged), [])
    assert len(_decode_catalog(json.dumps({"ok": True, "cards": [{**card, "name": "rtb_const"}]}).encode(),
                               str(forged), [])) == 1
    # Nor the name of a reference every table prints (a review of that pass).
    with pytest.raises(AlgzuError, match="malformed data"):
        _decode_catalog(json.dumps({"ok": True, "cards": [{**card, "name": "Sampling+Prior"}]}).encode(),
                        str(forged), [])
    reserved = tmp_path / "reserved.py"
    reserved.write_text(sampler_source("sampling+prior"))
    with registry.ESTIMATORS.restoring(), pytest.raises(AlgzuError, match="is a reference's"):
        include(reserved)


def test_a_name_two_files_define_is_an_error_naming_both(tmp_path, sampler_source):
    """Claiming a rival's name from another file does not take its place: listing fails, naming both files."""
    from algzu.errors import AlgzuError
    from algzu.sandbox.workers import SealedRunner

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    files = [tmp_path / "a" / "rival.py", tmp_path / "b" / "rival.py"]
    for f in files:
        f.write_text(sampler_source("rival_sampling"))
    with SealedRunner(includes=files) as runner, pytest.raises(AlgzuError, match="duplicate estimator name") as e:
        runner.catalog(["rival_sampling"], [])
    assert all(str(f) in str(e.value) for f in files)


def test_a_name_not_written_as_text_is_still_found(tmp_path, sampler_source, monkeypatch):
    """The text hint is only a shortcut: a class whose ``name`` is computed is found by asking
    every file's worker, and its card is that of its own file. (The files asked are cut to
    the rival and one decoy, ``sampling.py``: a worker per file costs seconds of CPU, and
    this process has included every attack file of this module by now. The rival comes as a
    file ``include`` registered in this process would, not as the runner's own ``includes``,
    which are always asked.)"""
    from algzu.sandbox.workers import SealedRunner

    rival = tmp_path / "rival.py"
    rival.write_text(sampler_source(name_code='"rival_" + "computed"'))
    every = SealedRunner._sources
    monkeypatch.setattr(SealedRunner, "_included", lambda self: {str(rival.resolve())})
    monkeypatch.setattr(SealedRunner, "_sources", lambda self: {
        s: m for s, m in every(self).items() if s == str(rival.resolve()) or m == "algzu.estimators.sampling"})
    with SealedRunner() as runner:
        [card] = runner.catalog(["rival_computed"], [])
        asked = runner.tracer_pids
    assert card.ref.file == str(rival.resolve())
    assert len(asked) == 2, asked  # the decoy was asked too: the hint found no file


# --- `algzu score`: attacks on the in-process scorer, a held-out secret in the environment ---


@pytest.fixture(scope="module")
def cli_scores(tmp_path_factory):
    """``algzu score --json`` for each :data:`CLI_SCORE` attack, run by the CLI's own entry
    point in one subprocess whose environment holds ``$ALGZU_SECRET`` (a held-out run).
    Returns ``{name: (summary rows, cell error codes)}``, and under ``"imported"`` the
    estimator modules that process imported."""
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
        "imported = [m for m in sys.modules if m.startswith(('algzu.estimators.', 'algzu_included_'))]\n"
        "print('=== imported', json.dumps(imported), flush=True)\n"
    )
    env = {**os.environ, "ALGZU_SECRET": "red-team held-out secret"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {}
    for chunk in proc.stdout.split("=== ")[1:]:
        name, _, body = chunk.partition("\n")
        if name.startswith("imported"):
            out["imported"] = json.loads(name.removeprefix("imported"))
            continue
        if name.startswith("exit"):
            continue
        start = 0 if body.startswith("[") else body.index("\n[") + 1  # past any progress bar
        rows = json.JSONDecoder().raw_decode(body[start:])[0]
        codes = set()
        for block in (folder / name / "cells").glob("*.json"):
            codes |= {c["error"] for c in json.loads(block.read_text())}
        out[name] = (rows, codes - {""})
    assert set(out) == {*CLI_SCORE, "imported"}, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def test_algzu_score_never_imports_an_estimator_file(cli_scores):
    """The scoring process (weights, ground truth, scorer) never runs estimator code, not even
    a module body: a sandboxed worker reads the estimators for it (``attack_import_time``)."""
    assert cli_scores["imported"] == []


@pytest.mark.parametrize("name", CLI_SCORE)
def test_algzu_score_gives_no_truth_no_cache_and_no_secret(cli_scores, name):
    """``algzu score`` (held out) on an attack that reads the ground truth from the scorer's
    frame, the ground-truth cache, or the secret from ``/proc``, or rewrites the scorer when
    its file is imported: every cell fails with a stable code, or it beats sampling at no
    budget."""
    rows, codes = cli_scores[name]
    assert codes <= STABLE_CODES, codes
    summary = "\n".join(f"{r['budget_flops']:.0e}: efficiency {r['efficiency']} [{r['efficiency_lo']}, "
                        f"{r['efficiency_hi']}], failures {r['failures']}" for r in rows)
    for r in rows:
        if r["failures"] < SUITE.n_copies:
            # `score --json` writes an infinite efficiency (an exact answer) as "inf", undefined as null.
            hi = float("nan") if r["efficiency_hi"] is None else float(r["efficiency_hi"])
            assert hi < 1, f"beats sampling (or undefined):\n{summary}"


# --- legal attacks: judged by issue #11's honest headline --------------------------------------


def test_protocol_constant_does_not_win_the_headline(scoring_runner, cache):
    """The zero-information constant tuned to the protocol (the copies' mean accuracy): legal,
    so it runs, but against sampling+prior it wins nowhere (interval lower end <= 1)."""
    result = run_suite(SUITE, cache_dir=cache, estimators=["attack_protocol_constant"], block_runner=scoring_runner)
    assert not (result.cells.error.fillna("") != "").any(), _describe(result)
    assert (result.summary[f"{HEADLINE}_lo"] <= 1).all(), f"wins the headline:\n{_describe(result)}"


@pytest.fixture(scope="module")
def closed_book(tmp_path_factory):
    """SUITE's closed-book twin with held-out copies: a fresh base drawn from a secret
    (trained on 2^13 sequences here, to stay cheap) and a noise seed from the same secret."""
    import algzu.heldout as heldout
    from algzu.cli import _secret_seed

    secret = "red-team closed-book secret"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(heldout, "family_recipe", lambda spec: (1 << 13, 1))
        twin, bases = heldout.closed_book(SUITE, secret=secret, cache_dir=tmp_path_factory.mktemp("bases"))
    seed, held_out = _secret_seed(secret, None)
    return twin.with_overrides(seed=seed), bases


@pytest.mark.parametrize("name", ["attack_open_book", "attack_public_copies"])
def test_open_book_work_does_not_win_closed_book(scoring_runner, cache, closed_book, name):
    """Open-book precomputation on the public base, and the public-seed copies regenerated
    and looked up: legal, so they run; on held-out copies of a closed-book base (the kind of
    suite a claim may rest on) they win no headline."""
    twin, bases = closed_book
    result = run_suite(twin, cache_dir=cache, estimators=[name], block_runner=scoring_runner, held_out=True,
                       bases=bases)
    assert not (result.cells.error.fillna("") != "").any(), _describe(result)
    assert (result.summary[f"{HEADLINE}_lo"] <= 1).all(), f"wins the headline closed-book:\n{_describe(result)}"


def test_public_copies_win_open_book_so_open_book_verdicts_prove_nothing(scoring_runner, cache):
    """Why verdicts need closed-book, held-out runs: on public bases with a public seed the
    copies themselves are public, and looking them up beats sampling+prior for ~0 FLOPs."""
    result = run_suite(SUITE, cache_dir=cache, estimators=["attack_public_copies"], block_runner=scoring_runner)
    assert result.cells.sealed.all()
    assert (result.summary[f"{HEADLINE}_lo"] > 1).all(), _describe(result)

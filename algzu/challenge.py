"""ARC's challenges, one command each: the 432-parameter M16,10 and the M4,3 protocol.

* ``432``: ARC's official M16,10 (hidden 16, seq len 10, 2nd argmax, 95.31%). Noisy copies
  whose accuracy spreads by a few points, ground truth with standard error <= 1e-4 per
  copy, budgets 10^4..10^9 FLOPs, every registered estimator against the references of
  :mod:`algzu.scoring`, and a verdict: does any mechanistic estimator beat sampling+prior
  (sampling that knows the protocol), the headline?
* ``m43``: ARC's protocol from their note on 2nd-argmax heuristics: weight noise std 0.05
  on all weights, 256 noisy copies, sampling charged per sample by the meter, on the
  shipped d=4 n=3 zoo model. ARC's own M4,3 estimators reach an RMS error of about 3% at
  ~71,000 operations and about 5% at ~7,700, roughly 2x worse in RMS than sampling.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from algzu import distributed
from algzu.io import atomic_write_text
from algzu.reports.html import write_html_report
from algzu.reports.suite import HEADLINE, dumps_json, format_budget, format_value, markdown_table, write_results
from algzu.run import SuiteResult, run_suite
from algzu.scoring import BASELINES, PRIOR_RIVAL
from algzu.suites import Suite, get_suite

CHALLENGES: Mapping[str, str] = types.MappingProxyType({"432": "challenge-432", "m43": "m43"})  # name -> suite
# ARC's reported RMS errors of their own M4,3 estimators, by operations.
ARC_M43 = {7_700: 0.05, 71_000: 0.03}


def copy_statistics(result: SuiteResult) -> dict:
    """Mean, sd and range of the copies' ground truth, V (their variance less the ground
    truth's, the best constant's MSE) and the largest standard error."""
    per_copy = result.cells.drop_duplicates(["model", "copy"])
    out = {}
    for model, g in per_copy.groupby("model"):
        v = g["ground_truth"].to_numpy(float)
        se2 = float((g["gt_stderr"].to_numpy(float) ** 2).mean())
        out[model] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "min": float(v.min()), "max": float(v.max()),
                      "variance": float(v.var(ddof=1)) - se2 if len(v) > 1 else float("nan"),
                      "max_gt_stderr": float(g["gt_stderr"].max()), "copies": int(len(v))}
    return out


def verdict(summary: pd.DataFrame, *, book: str | None = None, column: str = HEADLINE) -> str:
    """One paragraph from the summary table alone: does a mechanistic estimator beat the headline
    reference (sampling+prior), where, and what the plain-sampling efficiency would have said.
    A win must also beat the shipped model-agnostic baselines (:data:`algzu.scoring.BASELINES`,
    sealed) of the same model and budget, measured: the flag is its author's word. With the summary's
    ``not_below`` column (:func:`algzu.scoring.rival_comparison`) the comparison is paired over
    the copies and corrected for the number of claims on the model
    (:func:`algzu.scoring.rival_test`); sampling+prior run on the copies
    (:func:`algzu.scoring.sampling_prior_run`) is among those rivals, so a win is measured
    below the headline's reference too, not only above its analytic risk. A summary written
    before that column existed falls back to the unpaired rule its verdicts were written with
    (the MSE interval below the rival's measured MSE), which lets an estimator as good as a
    rival win in 7% of simulated cells (``tests/test_redteam.py``). A shipped baseline
    (:data:`algzu.scoring.BASELINES`) that supports the model but was left out of the run
    (``baselines_not_run``) is a rival not beaten: a board without ``stratified`` would
    otherwise let a better sampler declared mechanistic win against ``sampling`` alone.
    The headline's lower end is read at the level of the model's claims (the summary's
    ``{column}_claim_lo``, :func:`algzu.scoring.headline_claims`): a verdict wins if any claim
    holds. A summary without that column falls back to the 95% interval of each budget.

    Args:
        summary: :func:`algzu.scoring.summarize` rows plus ``mechanistic`` (and, from
            :func:`algzu.run.run_suite`, ``not_below`` and ``baselines_not_run``). If it has
            a ``sealed`` column, only rows with ``sealed == True`` count.
        book: ``"open-book"`` or ``"closed-book"``, named at the start of the verdict.
        column: the efficiency that decides (its ``_claim_lo`` end, else its ``_lo`` end, must
            reach 1 for a win).
    """
    rows = summary[summary["mechanistic"].astype(bool)]
    agnostic = summary[~summary["mechanistic"].astype(bool) & summary["estimator"].isin(BASELINES)]
    if "sealed" in agnostic.columns:
        agnostic = agnostic[agnostic["sealed"].eq(True)]
    unsealed = ""
    if "sealed" in rows.columns:
        names = sorted(rows.loc[~rows["sealed"].eq(True), "estimator"].unique())
        if names:
            unsealed = (f" Not counted, unsealed (their code could read the weights they were scored on): "
                        f"{', '.join(f'`{e}`' for e in names)}.")
        rows = rows[rows["sealed"].eq(True)]
    prefix = {None: "", "closed-book": "Closed-book: ",
              # Public bases (and, without --secret, public noise seeds): what an author could
              # study offline wins here for free (results/redteam.md, attack_public_copies).
              "open-book": "Open-book (public base models an estimator's author may have studied; "
                           "a win is a claim only if it holds closed-book too): "}[book]
    if rows.empty:
        return prefix + "No sealed mechanistic estimator was scored here, so none can beat sampling." + unsealed
    corrected = f"{column}_claim_lo" in rows.columns
    lower = rows[f"{column}_claim_lo" if corrected else f"{column}_lo"]
    claims = f"the model's {int(rows['claims'].max())} claims" if corrected and rows["claims"].notna().any() else ""
    above = rows[lower >= 1.0]
    # "Mechanistic" is its author's word: a win must also beat, measured, every shipped
    # baseline on the board at that budget (tests/redteam/attack_relabeled_sampler.py).
    rivals = [_agnostic_rivals(r, agnostic) for r in above.itertuples()]
    wins = above[[not names for names in rivals]]
    if wins.empty:
        head = ("No mechanistic estimator beats sampling+prior (sampling that knows the protocol's mean and "
                "spread)")
        if above.empty:
            head += ": no interval of its efficiency reaches 1 at its lower end"
            if claims:
                head += f" (at the level of {claims})"
            head += ", though some intervals reach 1." if (rows[f"{column}_hi"] >= 1.0).any() else "."
        else:
            head += " and every model-agnostic baseline on this board."
    else:
        where = ", ".join(f"`{r.estimator}` at {format_budget(r.budget_flops)}" for r in wins.itertuples())
        head = (f"A mechanistic estimator beats sampling+prior (efficiency interval >= 1) and every "
                f"model-agnostic baseline on this board (its MSE measurably below theirs and below sampling+prior "
                f"run on the same copies): {where}.")
    lines = [head]
    tied = [(r, names) for r, names in zip(above.itertuples(), rivals) if names]
    if tied:
        where = ", ".join(f"`{r.estimator}` at {format_budget(r.budget_flops)} ({'; '.join(names)})"
                          for r, names in tied)
        lines.append(f"Not wins, though above sampling+prior: not measured better than every model-agnostic "
                     f"baseline at the same budget: {where}.")
    if corrected:
        uncorrected = rows[(rows[f"{column}_lo"] >= 1.0) & (lower < 1.0)]
        if not uncorrected.empty:
            where = ", ".join(f"`{r.estimator}` at {format_budget(r.budget_flops)} "
                              f"({format_value(getattr(r, f'{column}_claim_lo'))})" for r in uncorrected.itertuples())
            lines.append(f"Not wins, though each budget's 95% interval reaches 1: at the level of {claims} "
                         f"(1 - 5% / claims, aiming at no false claim on 97.5% of boards) the lower end is "
                         f"below 1: {where}.")
    plain_only = rows[(rows["efficiency_lo"] >= 1.0) & (rows[f"{column}_lo"] < 1.0)]
    if not plain_only.empty:
        where = ", ".join(f"`{r.estimator}` at {format_budget(r.budget_flops)}" for r in plain_only.itertuples())
        lines.append(f"Against plain sampling alone these would have counted as wins: {where}.")
    peaks = []
    for est, g in rows.groupby("estimator"):
        if g[column].isna().all():
            continue
        best = g.loc[g[column].idxmax()]
        peaks.append(f"`{est}` peaks at {format_value(best[column])} [{format_value(best[column + '_lo'])}, "
                     f"{format_value(best[column + '_hi'])}] at {format_budget(best.budget_flops)} FLOPs (FVU {format_value(best.fvu)}, "
                     f"against plain sampling {format_value(best.efficiency)})")
    if peaks:
        lines.append("; ".join(peaks) + ".")
    return prefix + " ".join(lines) + unsealed


def _names(value: Any) -> list[str]:
    """A comma-separated list of names from a summary cell (an empty one reads back as NaN)."""
    return sorted(name for name in value.split(",") if name) if isinstance(value, str) else []


def _agnostic_rivals(row: Any, agnostic: pd.DataFrame) -> list[str]:
    """Why ``row`` does not beat the model-agnostic estimators (``mechanistic = False``,
    sealed) of its model and budget, one phrase each ([] if it does): those it is not below,
    as paired over copies in ``row.not_below`` (else, in an older summary, those whose
    measured MSE is at or below the upper end of ``row``'s MSE interval), and the shipped
    baselines the run left out (``row.baselines_not_run``, :data:`algzu.scoring.BASELINES`) and
    those that failed on some copy (``row.rivals_failed``)."""
    reasons = [f"`{name}` not run" for name in _names(getattr(row, "baselines_not_run", ""))]
    if hasattr(row, "rivals_failed"):
        failed = _names(row.rivals_failed)
    elif "failures" not in agnostic.columns:
        failed = []
    else:  # a summary from before that column: the baselines' own failure counts
        same = agnostic[(agnostic["budget_flops"] == row.budget_flops) & (agnostic["failures"] > 0)]
        if "model" in agnostic.columns:
            same = same[same["model"] == row.model]
        failed = sorted(set(same["estimator"]) | ({PRIOR_RIVAL} if "sampling" in set(same["estimator"]) else set()))
    reasons += [f"`{name}` failed on some copies" for name in failed]
    if hasattr(row, "not_below"):
        # Only the shipped baselines are rivals (a summary from before that rule may name others).
        names = [n for n in _names(row.not_below) if n in BASELINES or n == PRIOR_RIVAL]
    else:
        names = _unpaired_rivals(row, agnostic)
    if names:
        reasons.insert(0, f"not below {', '.join(f'`{n}`' for n in names)}")
    return reasons


def _unpaired_rivals(row: Any, agnostic: pd.DataFrame) -> list[str]:
    """Before ``not_below``: the rivals whose measured MSE is at or below ``row.mse_hi``."""
    same = agnostic[(agnostic["budget_flops"] == row.budget_flops) & agnostic["mse"].notna()]
    if "model" in agnostic.columns:
        same = same[same["model"] == row.model]
    return sorted(same.loc[same["mse"] <= row.mse_hi, "estimator"].unique())


def m43_comparison(result: SuiteResult) -> pd.DataFrame:
    """ARC's M4,3 RMS errors beside ours (sampling and each estimator) at ARC's budgets."""
    s = result.summary
    rows = []
    for budget, arc_rms in ARC_M43.items():
        g = s[s["budget_flops"] == budget]
        first = g.iloc[0] if len(g) else None
        row = {"operations": budget, "arc_estimators_rms": arc_rms,
               "sampling_rms_analytic": math.sqrt(first.sampling_mse) if first is not None else float("nan"),
               "sampling_prior_rms_analytic": math.sqrt(max(first.sampling_prior_mse, 0.0))
               if first is not None else float("nan"),
               "constant_rms": math.sqrt(max(first.constant_mse, 0.0)) if first is not None else float("nan")}
        for r in g.itertuples():
            row[f"{r.estimator}_rms"] = math.sqrt(max(r.mse, 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class ChallengeRun:
    """What :func:`run_challenge` wrote.

    Attributes:
        summary: the JSON summary, as written to ``challenge.json`` (on a process other than
            0 of a multi-process run, which writes nothing: the challenge, suite and folder).
        markdown: the text of ``challenge.md`` (empty where nothing was written).
    """

    summary: dict
    markdown: str = ""


def run_challenge(which: str, out_dir: str | Path, *, cache_dir: str | Path | None = None,
                  seed: int | None = None, held_out: bool = False, estimators: list[str] | None = None,
                  progress=None, block_runner=None, extra: dict | None = None, closed_book=None) -> ChallengeRun:
    """Run a challenge end to end and write its results; returns what it wrote.

    ``closed_book(suite) -> (suite, bases)`` turns the challenge into its closed-book twin
    (:func:`algzu.heldout.closed_book`); without it the run is open-book.
    """
    suite: Suite = get_suite(CHALLENGES[which]).with_overrides(seed=seed)
    bases = None
    if closed_book is not None:
        suite, bases = closed_book(suite)
    out = Path(out_dir)
    kwargs = {"block_runner": block_runner} if block_runner is not None else {}
    kwargs["bases"] = bases
    # The cache sits beside the results folder (results/cache for results/challenge-432), so
    # it is shared with the leaderboard and never committed with the results.
    result = run_suite(suite, cache_dir=cache_dir or out.parent / "cache", estimators=estimators, held_out=held_out,
                       progress=progress, **kwargs)
    if not distributed.is_leader():  # a multi-process run: process 0 alone writes
        return ChallengeRun({"challenge": which, "suite": suite.name, "out": str(out)})
    return write_challenge(which, out, suite, result, held_out=held_out, extra=extra)


def write_challenge(which: str, out: Path, suite: Suite, result: SuiteResult, *, held_out: bool = False,
                    extra: dict | None = None, made: dict | None = None) -> ChallengeRun:
    """Write a challenge's results folder from a finished run (or one rescored from its
    cells, :mod:`algzu.rescore`, with ``made`` as :func:`algzu.reports.suite.write_results`):
    the suite's files, ``challenge.md`` and ``challenge.json``."""
    stats = copy_statistics(result)
    text = verdict(result.summary, book="closed-book" if suite.closed_book else "open-book")
    extra = {**(extra or {}), "challenge": which, "copy_statistics": stats, "verdict": text}
    tables = {}
    if which == "m43":
        comparison = m43_comparison(result)
        tables["arc_comparison"] = comparison
        extra["arc_comparison"] = comparison.to_dict("records")
    written = write_results(out, suite, result, held_out=held_out, extra=extra, made=made)
    lines = [f"# Challenge `{which}`: {suite.description}", ""]
    for model, st in stats.items():
        lines += [f"- **{model}**, noise std {suite.case(model).noise_std}: accuracy across {st['copies']} copies "
                  f"mean {st['mean']:.4f}, sd {st['sd']:.4f}, range [{st['min']:.4f}, {st['max']:.4f}], "
                  f"V = {st['variance']:.3g} (the best constant's MSE); "
                  f"largest ground-truth standard error {st['max_gt_stderr']:.2e} "
                  f"({suite.gt_samples:,} inputs per copy)."]
    lines += ["", "## Verdict", "", text, ""]
    for name, table in tables.items():
        lines += [f"## {name.replace('_', ' ').title()}", "", markdown_table(table), ""]
    _title, _, board = written[out / "leaderboard.md"].partition("\n\n")  # under this page's own title
    lines += ["## Leaderboard", "", board]
    markdown = "\n".join(lines)
    atomic_write_text(out / "challenge.md", markdown)
    summary = {"challenge": which, "suite": suite.name, "out": str(out), "closed_book": suite.closed_book, **extra,
               # Without wall-clock seconds (they live in timings.csv), so this file, like the
               # tables, is the same on every run of the same seed.
               "summary": result.summary.drop(columns="seconds").to_dict("records")}
    text = dumps_json(summary, digits=10)
    atomic_write_text(out / "challenge.json", text)
    write_html_report(out)  # again, now with the verdict and copy statistics of challenge.json
    return ChallengeRun(json.loads(text), markdown)

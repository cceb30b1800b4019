"""ARC's challenges, one command each: the 432-parameter M16,10 and the M4,3 protocol.

* ``432``: ARC's official M16,10 (hidden 16, seq len 10, 2nd argmax, 95.31%). Noisy copies
  whose accuracy spreads by a few points, ground truth with standard error <= 1e-4 per
  copy, budgets 10^4..10^9 FLOPs, every registered estimator against sampling, and a
  verdict: does any mechanistic estimator match sampling?
* ``m43``: ARC's protocol from their note on 2nd-argmax heuristics: weight noise std 0.05
  on all weights, 256 noisy copies, sampling charged per sample by the meter, on the
  shipped d=4 n=3 zoo model. ARC's own M4,3 estimators reach an RMS error of about 3% at
  ~71,000 operations and about 5% at ~7,700, roughly 2x worse in RMS than sampling.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from algzu import distributed
from algzu.io import atomic_write_text
from algzu.leaderboard import SuiteResult, run_suite
from algzu.report import markdown_table, write_results
from algzu.suites import Suite, get_suite

CHALLENGES = {"432": "challenge-432", "m43": "m43"}
# ARC's reported RMS errors of their own M4,3 estimators, by operations.
ARC_M43 = {7_700: 0.05, 71_000: 0.03}


def copy_statistics(result: SuiteResult) -> dict:
    """Mean, sd and range of the copies' ground-truth accuracy, and the largest standard error."""
    per_copy = result.cells.drop_duplicates(["model", "copy"])
    out = {}
    for model, g in per_copy.groupby("model"):
        v = g["ground_truth"].to_numpy(float)
        out[model] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "min": float(v.min()), "max": float(v.max()),
                      "max_gt_stderr": float(g["gt_stderr"].max()), "copies": int(len(v))}
    return out


def verdict(summary: pd.DataFrame) -> str:
    """One paragraph: does any mechanistic estimator match sampling, and where?"""
    mech = summary[summary["mechanistic"]]
    if mech.empty:
        return "No mechanistic estimator is registered, so none can match sampling here."
    lines = []
    matched = mech[mech["efficiency_lo"] >= 1.0]
    for est, g in mech.groupby("estimator"):
        best = g.loc[g["efficiency"].idxmax()]
        lines.append(f"`{est}` peaks at efficiency {best.efficiency:.3g} "
                     f"[{best.efficiency_lo:.3g}, {best.efficiency_hi:.3g}] at {best.budget_flops:.0e} FLOPs")
    if matched.empty:
        head = ("No mechanistic estimator matches sampling: at every budget each one's efficiency "
                "interval lies below 1 or straddles it without its lower end reaching 1.")
        if (mech["efficiency_hi"] >= 1.0).any():
            head = ("No mechanistic estimator clearly matches sampling (no efficiency interval lies at or "
                    "above 1), though some intervals reach 1.")
    else:
        where = ", ".join(f"`{r.estimator}` at {r.budget_flops:.0e}" for r in matched.itertuples())
        head = f"A mechanistic estimator matches or beats sampling (efficiency interval >= 1): {where}."
    return head + " " + "; ".join(lines) + "."


def m43_comparison(result: SuiteResult) -> pd.DataFrame:
    """ARC's M4,3 RMS errors beside ours (sampling and each estimator) at ARC's budgets."""
    s = result.summary
    rows = []
    for budget, arc_rms in ARC_M43.items():
        g = s[s["budget_flops"] == budget]
        row = {"operations": budget, "arc_estimators_rms": arc_rms,
               "sampling_rms_analytic": math.sqrt(g["sampling_mse"].iloc[0]) if len(g) else float("nan")}
        for r in g.itertuples():
            row[f"{r.estimator}_rms"] = math.sqrt(max(r.mse, 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def run_challenge(which: str, out_dir: str | Path, *, cache_dir: str | Path | None = None,
                  seed: int | None = None, held_out: bool = False, estimators: list[str] | None = None,
                  progress=None, block_runner=None) -> dict:
    """Run a challenge end to end and write its results; returns the JSON summary."""
    suite: Suite = get_suite(CHALLENGES[which]).with_overrides(seed=seed)
    out = Path(out_dir)
    kwargs = {"block_runner": block_runner} if block_runner is not None else {}
    # The cache sits beside the results folder (results/cache for results/challenge-432), so
    # it is shared with the leaderboard and never committed with the results.
    result = run_suite(suite, cache_dir=cache_dir or out.parent / "cache", estimators=estimators, held_out=held_out,
                       progress=progress, **kwargs)
    if not distributed.is_leader():  # a multi-process run: process 0 alone writes
        return {"challenge": which, "suite": suite.name, "out": str(out)}
    stats = copy_statistics(result)
    text = verdict(result.summary)
    extra = {"challenge": which, "copy_statistics": stats, "verdict": text}
    tables = {}
    if which == "m43":
        comparison = m43_comparison(result)
        tables["arc_comparison"] = comparison
        extra["arc_comparison"] = comparison.to_dict("records")
    write_results(out, suite, result, held_out=held_out, extra=extra)
    lines = [f"# Challenge `{which}`: {suite.description}", ""]
    for model, st in stats.items():
        case = next(c for c in suite.cases if c.model == model)
        lines += [f"- **{model}**, noise std {case.noise_std}: accuracy across {st['copies']} copies "
                  f"mean {st['mean']:.4f}, sd {st['sd']:.4f}, range [{st['min']:.4f}, {st['max']:.4f}]; "
                  f"largest ground-truth standard error {st['max_gt_stderr']:.2e} "
                  f"({suite.gt_samples:,} inputs per copy)."]
    lines += ["", "## Verdict", "", text, ""]
    for name, table in tables.items():
        lines += [f"## {name.replace('_', ' ').title()}", "", markdown_table(table), ""]
    lines += ["## Leaderboard", "", (out / "leaderboard.md").read_text().split("\n", 2)[2]]
    atomic_write_text(out / "challenge.md", "\n".join(lines))
    summary = {"challenge": which, "suite": suite.name, "out": str(out), **extra,
               # Without wall-clock seconds (they live in timings.csv), so this file, like the
               # tables, is the same on every run of the same seed.
               "summary": json.loads(result.summary.drop(columns="seconds").to_json(orient="records"))}
    atomic_write_text(out / "challenge.json", json.dumps(summary, indent=2, default=float) + "\n")
    return summary

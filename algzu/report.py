"""Write a suite's results: tidy tables, the leaderboard, MSE-vs-FLOPs plots, provenance.

Files (all written atomically into the output folder):

* ``cells.csv``: one row per model x copy x estimator x budget (columns
  :data:`algzu.leaderboard.CELL_COLUMNS` less ``seconds``).
* ``summary.csv``: one row per model x estimator x budget (see :func:`algzu.scoring.summarize`,
  less ``seconds``).
* ``timings.csv``: wall-clock seconds of every cell. Timings are the one thing that differs
  between two runs of the same suite and seed, so they live apart: every other table
  reproduces bit for bit.
* ``leaderboard.md`` and ``leaderboard.csv``: efficiency per estimator and model at every
  budget, with 95% intervals and failure counts.
* ``mse_<model>.png``: log-log MSE versus FLOPs per model, sampling as the reference line.
* ``provenance.json``: suite config, seeds, git hash, package versions, date, host.
* ``index.html``: all of the above as one self-contained web page (:mod:`algzu.html_report`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from algzu.html_report import load_report_data, render_html
from algzu.io import atomic_write_bytes, atomic_write_text
from algzu.leaderboard import SuiteResult
from algzu.provenance import provenance
from algzu.suites import Suite


def _fmt_eff(v: float) -> str:
    if not math.isfinite(v):
        return "∞" if v > 0 else "–"
    return f"{v:.3g}"


def efficiency_cell(row: pd.Series) -> str:
    """``eff [lo, hi]`` for one summary row; failures are flagged."""
    text = f"{_fmt_eff(row.efficiency)} [{_fmt_eff(row.efficiency_lo)}, {_fmt_eff(row.efficiency_hi)}]"
    if row.failures:
        text += f" ({row.failures} failed)"
    return text


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A pipe table of a DataFrame (no tabulate dependency)."""
    def cell(v):
        return format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def leaderboard_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide table: one row per model x estimator, one efficiency column per budget."""
    rows = []
    for (model, est), g in summary.groupby(["model", "estimator"], sort=False):
        row = {"model": model, "estimator": est, "mechanistic": bool(g["mechanistic"].iloc[0]),
               "failures": int(g["failures"].sum())}
        for _, r in g.sort_values("budget_flops").iterrows():
            row[f"{r.budget_flops:.0e}"] = efficiency_cell(r)
        rows.append(row)
    return pd.DataFrame(rows)


def leaderboard_markdown(suite: Suite, result: SuiteResult, held_out: bool = False) -> str:
    """The leaderboard as markdown: per model, efficiency of every estimator at every budget."""
    table = leaderboard_table(result.summary)
    out = [f"# Leaderboard: suite `{suite.name}`", "", suite.description, "",
           "Efficiency = sampling MSE at the same FLOP budget / estimator MSE (> 1 beats sampling), "
           "with a 95% bootstrap interval over noisy copies. MSE has the ground truth's variance "
           "subtracted. ∞: the estimator's MSE is indistinguishable from 0 at that budget (for "
           "`sampling` itself at large budgets: the ground truth's own noise dominates). –: the "
           "budget is below the cost of one sample, so there is no sampling baseline.", ""]
    if held_out:
        out += ["**Held-out seeds**: noise seed drawn from a secret.", ""]
    for model, g in table.groupby("model", sort=False):
        case = next(c for c in suite.cases if c.model == model)
        out += [f"## {model} (noise std {case.noise_std}, {suite.n_copies} copies, "
                f"{result.flops_per_sample[model]:.0f} FLOPs per sample)", ""]
        out += [markdown_table(g.drop(columns="model")), ""]
    return "\n".join(out)


def plot_model(summary: pd.DataFrame, model: str) -> bytes:
    """Log-log MSE vs FLOPs for one model, PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = summary[summary["model"] == model]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    ref = g.drop_duplicates("budget_flops").sort_values("budget_flops")
    finite = np.isfinite(ref["sampling_mse"])
    ax.plot(ref["budget_flops"][finite], ref["sampling_mse"][finite], "k--", lw=1.5,
            label="sampling (analytic)")
    floor = max(float(g.loc[g["mse"] > 0, "mse"].min()) if (g["mse"] > 0).any() else 1e-12, 1e-14) / 10
    for est, e in g.groupby("estimator"):
        e = e.sort_values("budget_flops")
        y = np.maximum(e["mse"], floor)
        lo = np.maximum(e["mse_lo"], floor)
        hi = np.maximum(e["mse_hi"], floor)
        style = "-o" if bool(e["mechanistic"].iloc[0]) else "-s"
        ax.errorbar(e["budget_flops"], y, yerr=[y - lo, hi - y], fmt=style, ms=4, capsize=2, label=est)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOP budget (metered)")
    ax.set_ylabel("MSE over noisy copies")
    ax.set_title(model, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_results(out_dir: str | Path, suite: Suite, result: SuiteResult, *, held_out: bool = False,
                  extra: dict | None = None) -> list[Path]:
    """Write every results file of a suite run; returns their paths."""
    out = Path(out_dir)
    written = []

    def put(name: str, data: str | bytes) -> None:
        path = out / name
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
        written.append(path)

    timing_keys = ["model", "estimator", "budget_flops", "copy", "seconds"]
    put("cells.csv", result.cells.drop(columns="seconds").to_csv(index=False, float_format="%.10g"))
    put("summary.csv", result.summary.drop(columns="seconds").to_csv(index=False, float_format="%.10g"))
    put("timings.csv", result.cells[timing_keys].to_csv(index=False, float_format="%.4g"))
    put("leaderboard.csv", leaderboard_table(result.summary).to_csv(index=False))
    put("leaderboard.md", leaderboard_markdown(suite, result, held_out) + "\n")
    for model in result.summary["model"].unique():
        put(f"mse_{model.replace('/', '_')}.png", plot_model(result.summary, model))
    config = dataclasses.asdict(suite)
    if held_out:  # the seed came from a secret: recording it would reveal the copies
        config["seed"] = "secret"
        seeds = {"suite": "secret", "held_out": True}
    else:
        seeds = {"suite": suite.seed, "held_out": False, "ground_truth_inputs": suite.seed + 1}
    meta = provenance(config=config, seeds=seeds)
    meta["flops_per_sample"] = result.flops_per_sample
    meta.update(extra or {})
    put("provenance.json", json.dumps(meta, indent=2, default=str) + "\n")
    # Last: the page is built from the files just written, as `algzu report` rebuilds it.
    put("index.html", render_html(load_report_data(out)))
    return written

"""Write a suite's results: tidy tables, the leaderboard, MSE-vs-FLOPs plots, provenance.

Files (all written atomically into the output folder):

* ``cells.csv``: one row per model x copy x estimator x budget (columns
  :data:`algzu.run.CELL_COLUMNS` less ``seconds``).
* ``summary.csv``: one row per model x estimator x budget (see :func:`algzu.scoring.summarize`,
  less ``seconds``).
* ``timings.csv``: wall-clock seconds of every cell. Timings are the one thing that differs
  between two runs of the same suite and seed on one machine type, so they live apart: every
  other table reproduces byte for byte there (across CPU types, to about 3 significant
  digits: see the README).
* ``leaderboard.md``: per model, the headline (efficiency against sampling+prior), FVU and
  the efficiency against plain sampling of every estimator at every budget, with 95%
  intervals and failure counts. ``leaderboard.csv``: the headline table.
* ``mse_<model>.png``: log-log MSE versus FLOPs per model, with the three references
  (plain sampling, sampling+prior, the best constant).
* ``provenance.json``: suite config, seeds, git hash, package versions, date, host, how
  intervals are computed, and whether the suite is closed-book.
* ``index.html``: all of the above as one self-contained web page (:mod:`algzu.reports.html`).

Special values. In the CSV files an infinite value is written ``inf`` and an undefined one
(NaN) is left empty. In every JSON file (results and ``--json`` output) a float that is
not finite is written as the string ``"inf"`` or ``"-inf"``, and an undefined one as
``null`` (:func:`json_ready`): infinite efficiency means the estimator's MSE is
indistinguishable from 0; undefined means there is no reference to compare with (below the
cost of one sample for plain sampling).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from algzu import scoring
from algzu.io import atomic_write_bytes, atomic_write_text
from algzu.provenance import provenance
from algzu.reports.html import load_report_data, render_html
from algzu.run import CELLS_FLOAT_FORMAT, SuiteResult
from algzu.scoring import HEADLINE
from algzu.suites import Suite

# Summary columns shown as "value [lo, hi]" tables, with their titles.
MEASURES = {
    "prior_efficiency": "Efficiency against sampling+prior (the headline; > 1 beats sampling that knows the protocol)",
    "fvu": "FVU = MSE / V (1: no better than the best constant; < 0: MSE indistinguishable from 0)",
    "efficiency": "Efficiency against plain sampling (> 1 beats sampling that ignores the protocol)",
}
EXPLANATION = (
    "Three references at every budget B, where n = floor(B / c) samples are affordable (c: metered FLOPs "
    "per sample): the best constant (the mean of the copies' true scores; its MSE is their variance V), "
    "plain sampling (MSE vbar / n, vbar the mean variance of one sample's score) and sampling+prior, "
    "sampling that also knows the protocol's mean and variance (MSE 1 / (1/V + n/vbar), the Bayes risk of "
    "shrinking n samples towards the mean; V at n = 0). Efficiency = reference MSE / estimator MSE. The "
    "headline is the efficiency against sampling+prior: knowing the protocol alone scores about 1 on it. "
    "Intervals are 95% over noisy copies (the union of a studentized bootstrap on the log ratio and a "
    "percentile bootstrap, paired); a verdict reads each claim (a sealed mechanistic estimator at a "
    "budget) at 1 - 5% / claims of the model (summary.csv: prior_efficiency_claim_lo, claims), and a win "
    "must also be measurably below, paired over the copies at that level, every model-agnostic baseline on "
    "the board (`sampling`, `stratified`, each run on every copy) and sampling+prior run on the copies "
    "(`sampling`'s estimates shrunk towards their mean; summary.csv: not_below, rivals_failed). MSE has "
    "the ground truth's variance subtracted. ∞: the estimator's MSE is indistinguishable from 0 at that "
    "budget (for `sampling` at large budgets: the ground truth's own "
    "noise dominates). –: undefined (below the cost of one sample there is no plain-sampling baseline). "
    "sealed: the estimator's code never held the weights it was scored on; an unsealed row never counts "
    "for a verdict."
)


def format_value(v: float) -> str:
    """Three significant digits; ∞ for infinite, – for undefined (NaN)."""
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.3g}"


def format_budget(flops: float) -> str:
    """A FLOP budget in the fewest significant digits that give it back exactly: ``1e+04``,
    ``7.7e+03`` (never ``8e+03`` for 7,700)."""
    for digits in range(16):
        text = f"{flops:.{digits}e}"
        if float(text) == flops:
            return text
    return repr(flops)


def interval_cell(row: pd.Series, column: str = HEADLINE, flag_failures: bool = True) -> str:
    """``value [lo, hi]`` of one summary column for one row; failures are flagged."""
    lo, hi = row[column + "_lo"], row[column + "_hi"]
    text = f"{format_value(row[column])} [{format_value(lo)}, {format_value(hi)}]"
    if flag_failures and row.failures:
        text += f" ({row.failures} failed)"
    return text


def efficiency_cell(row: pd.Series) -> str:
    """``eff [lo, hi]`` of the efficiency against plain sampling for one summary row."""
    return interval_cell(row, "efficiency")


def json_ready(obj, digits: int | None = None):
    """``obj`` with every non-finite float made strict JSON: ``"inf"``, ``"-inf"`` or ``None`` (NaN).

    numpy scalars become Python numbers; with ``digits``, floats are rounded to that many
    significant digits (as the CSV files are), so JSON results reproduce like the tables.
    """
    if isinstance(obj, dict):
        return {str(k): json_ready(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return float(f"{v:.{digits}g}") if digits else v
    return obj


def dumps_json(obj, digits: int | None = None) -> str:
    """Strict JSON text (never ``NaN``/``Infinity`` tokens) of :func:`json_ready` ``(obj)``."""
    return json.dumps(json_ready(obj, digits), indent=2, allow_nan=False, default=str) + "\n"


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A pipe table of a DataFrame (no tabulate dependency)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return format(v, floatfmt) if math.isfinite(v) else format_value(v)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def leaderboard_table(summary: pd.DataFrame, column: str = HEADLINE) -> pd.DataFrame:
    """Wide table: one row per model x estimator, one ``value [lo, hi]`` cell per budget.

    Args:
        summary: from :func:`algzu.scoring.summarize` (plus ``mechanistic``).
        column: the measure: ``prior_efficiency`` (the headline), ``fvu`` or ``efficiency``.
    """
    rows = []
    for (model, est), g in summary.groupby(["model", "estimator"], sort=False):
        row = {"model": model, "estimator": est, "mechanistic": bool(g["mechanistic"].iloc[0]),
               "sealed": bool(g["sealed"].iloc[0]) if "sealed" in g else False,
               "failures": int(g["failures"].sum())}
        for _, r in g.sort_values("budget_flops").iterrows():
            row[format_budget(r.budget_flops)] = interval_cell(r, column)
        rows.append(row)
    return pd.DataFrame(rows)


def references_table(summary: pd.DataFrame, model: str) -> pd.DataFrame:
    """The three reference MSEs of one model at every budget, and the samples affordable."""
    g = summary[summary["model"] == model].drop_duplicates("budget_flops").sort_values("budget_flops")
    return pd.DataFrame({"budget": [format_budget(b) for b in g["budget_flops"]], "samples n": g["samples"].to_list(),
                         "sampling MSE": g["sampling_mse"].to_list(),
                         "sampling+prior MSE": g["sampling_prior_mse"].to_list(),
                         "constant MSE (V)": g["constant_mse"].to_list()})


def model_verdicts(suite: Suite, summary: pd.DataFrame) -> dict[str, str]:
    """One verdict line per model (:func:`algzu.challenge.verdict` on its rows), saying
    open-book or closed-book."""
    from algzu.challenge import verdict  # challenge builds on this module

    book = "closed-book" if suite.closed_book else "open-book"
    return {model: verdict(summary[summary["model"] == model], book=book) for model in summary["model"].unique()}


def leaderboard_markdown(suite: Suite, result: SuiteResult, held_out: bool = False,
                         verdicts: dict[str, str] | None = None) -> str:
    """The leaderboard as markdown: per model, its verdict (:func:`model_verdicts` unless
    given), the references, then the headline, FVU and the efficiency against plain
    sampling of every estimator at every budget."""
    verdicts = verdicts if verdicts is not None else model_verdicts(suite, result.summary)
    out = [f"# Leaderboard: suite `{suite.name}`", "", suite.description, "", EXPLANATION, ""]
    if held_out:
        out += ["**Held-out seeds**: noise seed drawn from a secret.", ""]
    closed_book = suite.closed_book
    out += [f"**{'Closed' if closed_book else 'Open'}-book**: "
            + ("base models no estimator has seen (held out: fresh, never published)." if closed_book else
               "public base models, which an estimator's author may have studied offline."), ""]
    for model in result.summary["model"].unique():
        rows = result.summary[result.summary["model"] == model]
        out += [f"## {model} (noise std {suite.case(model).noise_std}, {suite.n_copies} copies, "
                f"{result.flops_per_sample[model]:.0f} FLOPs per sample)", ""]
        out += ["**Verdict.** " + verdicts[model], ""]
        out += [markdown_table(references_table(result.summary, model), ".3g"), ""]
        for column, title in MEASURES.items():
            table = leaderboard_table(rows, column)
            out += [f"{title}:", "", markdown_table(table.drop(columns="model")), ""]
    return "\n".join(out)


def plot_model(summary: pd.DataFrame, model: str, flops_per_sample: float | None = None) -> bytes:
    """Log-log MSE vs FLOPs for one model, PNG bytes.

    With ``flops_per_sample`` the two analytic references are drawn on a fine grid of
    budgets (their steps at each extra sample); without it, through the suite's budgets.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = summary[summary["model"] == model]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    ref = g.drop_duplicates("budget_flops").sort_values("budget_flops")
    budgets, sampling, prior = ref["budget_flops"], ref["sampling_mse"], ref["sampling_prior_mse"]
    some = ref[ref["samples"] >= 1]
    if flops_per_sample and len(some):
        var, vbar = float(ref["constant_mse"].iloc[0]), float((some["sampling_mse"] * some["samples"]).iloc[0])
        budgets = np.geomspace(budgets.min(), budgets.max(), 400)
        n = np.floor(budgets / flops_per_sample)
        with np.errstate(divide="ignore"):
            sampling = np.where(n >= 1, vbar / n, np.nan)
            prior = np.full(n.shape, np.nan) if not var > 0 else 1 / (1 / var + n / vbar)
    ax.plot(budgets, sampling, "k--", lw=1.5, label="sampling (analytic)")
    ax.plot(budgets, prior, "k-.", lw=1.5, label="sampling+prior (analytic)")
    if ref["constant_mse"].iloc[0] > 0:
        ax.axhline(ref["constant_mse"].iloc[0], color="0.5", ls=":", lw=1.5, label="best constant (V)")
    floor = max(float(g.loc[g["mse"] > 0, "mse"].min()) if (g["mse"] > 0).any() else 1e-12, 1e-14) / 10
    for est, e in g.groupby("estimator"):
        e = e.sort_values("budget_flops")
        y = np.maximum(e["mse"], floor)
        lo = np.maximum(e["mse_lo"], floor)
        hi = np.maximum(e["mse_hi"], floor)
        style = "-o" if bool(e["mechanistic"].iloc[0]) else "-s"
        label = est if bool(e["sealed"].iloc[0]) else f"{est} (unsealed)"
        ax.errorbar(e["budget_flops"], y, yerr=[y - lo, hi - y], fmt=style, ms=4, capsize=2, label=label)
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


TIMING_KEYS = ("model", "estimator", "budget_flops", "copy")  # a cell's row in timings.csv, then seconds


def cell_tables(cells: pd.DataFrame) -> dict[str, str]:
    """``cells.csv`` and ``timings.csv`` as a run writes them (and :mod:`algzu.rescore` checks
    it would write them back)."""
    return {"cells.csv": cells.drop(columns="seconds").to_csv(index=False, float_format=CELLS_FLOAT_FORMAT),
            "timings.csv": cells[[*TIMING_KEYS, "seconds"]].to_csv(index=False, float_format="%.4g")}


def write_results(out_dir: str | Path, suite: Suite, result: SuiteResult, *, held_out: bool = False,
                  extra: dict | None = None, made: dict | None = None) -> dict[Path, str | bytes]:
    """Write every results file of a suite run; returns what it wrote, by path, in order (so
    a caller uses the text, never reads the file back).

    ``made``: provenance of cells made earlier (:mod:`algzu.rescore`): its git hash, versions,
    date and host replace this process's in ``provenance.json``, and its other keys are added.

    Whether the suite is closed-book (``suite.closed_book``: its base models are unseen by
    estimators) is recorded in the leaderboard and provenance; verdicts say which.
    """
    out = Path(out_dir)
    written: dict[Path, str | bytes] = {}

    def put(name: str, data: str | bytes) -> None:
        path = out / name
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(path, data)
        written[path] = data

    tables = cell_tables(result.cells)
    put("cells.csv", tables["cells.csv"])
    put("summary.csv", result.summary.drop(columns="seconds").to_csv(index=False, float_format="%.10g"))
    put("timings.csv", tables["timings.csv"])
    put("leaderboard.csv", leaderboard_table(result.summary).to_csv(index=False))
    verdicts = model_verdicts(suite, result.summary)
    put("leaderboard.md", leaderboard_markdown(suite, result, held_out, verdicts) + "\n")
    for model in result.summary["model"].unique():
        put(f"mse_{model.replace('/', '_')}.png", plot_model(result.summary, model, result.flops_per_sample[model]))
    config = dataclasses.asdict(suite)
    if held_out:  # the seed came from a secret: recording it would reveal the copies
        config["seed"] = "secret"
        seeds = {"suite": "secret", "held_out": True}
    else:
        seeds = {"suite": suite.seed, "held_out": False, "ground_truth_inputs": suite.seed + 1}
    meta = {**provenance(config=config, seeds=seeds), **(made or {})}
    meta["flops_per_sample"] = result.flops_per_sample
    meta["closed_book"] = suite.closed_book
    meta["verdicts"] = verdicts
    meta["scoring"] = {"headline": HEADLINE, "references": list(scoring.REFERENCES), "level": scoring.LEVEL,
                       "interval": "union of bootstrap-t on the log ratio and percentile, paired over copies",
                       "verdict_level": "each claim at 1 - (1 - level) / claims, claims: the model's sealed "
                                        "mechanistic estimators x budgets",
                       "verdict_rivals": "the shipped model-agnostic baselines (sampling, stratified; one that "
                                         "failed on any copy leaves no win) and sampling+prior run on the "
                                         "copies (sampling's estimates shrunk towards their mean), "
                                         "paired over copies: the bootstrap interval of the MSE gap and a "
                                         "sign-flip test, both at the claim's level",
                       "bootstrap_resamples": scoring.N_BOOTSTRAP, "bootstrap_seed": scoring.BOOTSTRAP_SEED}
    meta.update(extra or {})
    put("provenance.json", dumps_json(meta, digits=10))
    # Last: the page is built from the files just written, as `algzu report` rebuilds it.
    put("index.html", render_html(load_report_data(out)))
    return written

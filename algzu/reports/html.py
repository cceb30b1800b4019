"""The leaderboard as one self-contained web page: ``index.html`` in a results folder.

Reads only what a run already wrote (``summary.csv``, ``provenance.json``, and where present
``cells.csv`` for failure codes and ``challenge.json`` for the verdict), recomputes nothing,
and fills one template (``algzu/reports/templates/report.html``) whose inline script draws the
charts and tables from the data embedded in the page as JSON. Nothing is fetched from the
network: the page opens from a laptop's disk or a CI artifact. The same files give the same
bytes (no timestamp of its own), so ``index.html`` reproduces like every other table.

The layout follows the public leaderboards of the field (HELM, the Open LLM leaderboard,
AIcrowd's board for ARC's estimation challenge): verdict first, then per model an
MSE-vs-FLOPs chart (log-log, 95% bands, reference curves dashed) and a sortable table of
efficiency per estimator and budget, provenance last.

Columns read from ``summary.csv`` (:data:`REQUIRED_COLUMNS` must be there; each entry of
:data:`OPTIONAL_COLUMNS` shows up when one of its names is present and is left out of the
page when none is); from ``cells.csv``: ``model, estimator, budget_flops, error, message``;
from ``provenance.json``: ``config`` (name, description, cases, n_copies, gt_samples,
budgets), ``seeds`` (``held_out``), ``git_hash``, ``versions``, ``date``, ``host``,
``flops_per_sample``, and ``book`` or ``closed_book`` when present; from ``challenge.json``:
``challenge``, ``verdict`` (or ``verdicts``), ``copy_statistics``, ``arc_comparison``.

In the JSON embedded in the page a number is a number, ``"inf"`` or ``"-inf"``; ``null``
is undefined (e.g. efficiency below the cost of one sample, where there is no sampling
baseline), so infinite and undefined stay apart. A text cell that is not a number (say
``undefined``) reads as undefined.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from algzu.errors import AlgzuError
from algzu.io import atomic_write_text
from algzu.scoring import HEADLINE

REQUIRED_COLUMNS = ("model", "estimator", "mechanistic", "budget_flops", "flops", "mse", "mse_lo", "mse_hi",
                    "sampling_mse", "efficiency", "efficiency_lo", "efficiency_hi", "failures", "copies")
# Role -> accepted column names, the first one canonical. Each shows up when present.
OPTIONAL_COLUMNS = {
    "fvu": ("fvu",),                       # MSE / variance of the copies' truths (1 = the best constant)
    "fvu_lo": ("fvu_lo",),
    "fvu_hi": ("fvu_hi",),
    "constant_mse": ("constant_mse",),     # reference curve: the best constant
    "prior_mse": ("prior_mse", "sampling_prior_mse"),  # reference curve: sampling + population prior
    "efficiency_prior": ("prior_efficiency", "efficiency_prior"),  # headline (against sampling+prior)
    "efficiency_prior_lo": ("prior_efficiency_lo", "efficiency_prior_lo"),
    "efficiency_prior_hi": ("prior_efficiency_hi", "efficiency_prior_hi"),
    "sealed": ("sealed",),                 # False: the row never counts for a verdict
    "book": ("book", "closed_book"),       # "open"/"closed" (or a closed_book boolean) per row
    "gt_share": ("gt_share",),
}
TEMPLATE = "templates/report.html"
DATA_PLACEHOLDER = "/*ALGZU_REPORT_DATA*/null"
SCHEMA_VERSION = 1


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise AlgzuError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AlgzuError(f"{path} is not valid JSON ({e})") from None


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except OSError as e:
        raise AlgzuError(f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:  # EmptyDataError is a ValueError
        raise AlgzuError(f"{path} is not a readable CSV table ({str(e).splitlines()[0]})") from None


def _num(v) -> float | str | None:
    """A number for the page's JSON: finite as is, +-inf as a string, NaN (undefined) as null."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f):
        return None
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def _bool(v) -> bool | None:
    """True/False from a CSV cell (bool, 0/1 or text); None when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    text = str(v).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _book(v) -> str | None:
    """``open`` / ``closed`` from a ``book`` label or a ``closed_book`` boolean."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return "closed" if v else "open"
    text = str(v).strip().lower()
    if text.startswith("closed") or text in ("true", "held-out", "heldout"):
        return "closed"
    if text.startswith("open") or text == "false":
        return "open"
    return None


def _present(summary: pd.DataFrame) -> dict[str, str]:
    """Role -> the column name found in this summary, for every optional role present."""
    return {role: next(n for n in names if n in summary.columns)
            for role, names in OPTIONAL_COLUMNS.items() if any(n in summary.columns for n in names)}


def _failure_codes(results: Path) -> dict[tuple[str, str, float], dict[str, dict]]:
    """(model, estimator, budget) -> {error code: {"count", "message"}} from ``cells.csv``."""
    path = results / "cells.csv"
    if not path.exists():
        return {}
    cells = _read_csv(path, usecols=lambda c: c in ("model", "estimator", "budget_flops", "error", "message"),
                      dtype={"error": str, "message": str}, keep_default_na=False)
    if not {"model", "estimator", "budget_flops", "error"} <= set(cells.columns):
        raise AlgzuError(f"{path} lacks the columns model, estimator, budget_flops, error")
    failed = cells[cells["error"] != ""]
    if "message" not in failed.columns:
        failed = failed.assign(message="")
    out: dict[tuple[str, str, float], dict[str, dict]] = {}
    for (model, est, budget, code), g in failed.groupby(["model", "estimator", "budget_flops", "error"], sort=True):
        # One example message per code: the page's tooltip, not a log.
        out.setdefault((model, est, float(budget)), {})[code] = {"count": int(len(g)),
                                                                 "message": str(g["message"].iloc[0])[:300]}
    return out


def _written_verdicts(record: dict, source: str) -> list[dict]:
    """Verdict lines a run wrote into a JSON record (``verdict``: text, or ``verdicts``: a
    list of lines or a {model: line} mapping); [] when it wrote none."""
    written = record.get("verdicts", record.get("verdict"))
    if isinstance(written, str):
        return [{"model": None, "text": p.strip(), "source": source} for p in written.split("\n\n") if p.strip()]
    if isinstance(written, list):
        return [{"model": None, "text": str(t), "source": source} for t in written if str(t).strip()]
    if isinstance(written, dict):
        return [{"model": str(m), "text": str(t), "source": source} for m, t in written.items()]
    return []


def _verdicts(challenge: dict, provenance: dict, summary: pd.DataFrame, models: list[str]) -> list[dict]:
    """The verdict lines: as written by the run (``challenge.json``, else ``provenance.json``),
    else computed per model by the challenge's own rule, :func:`algzu.challenge.verdict`."""
    written = _written_verdicts(challenge, "challenge.json") or _written_verdicts(provenance, "provenance.json")
    if written or f"{HEADLINE}_lo" not in summary:  # a folder written before the headline existed
        return written
    from algzu.challenge import verdict

    return [{"model": m, "text": verdict(summary[summary["model"] == m]), "source": "computed"} for m in models]


def _model_order(summary: pd.DataFrame, provenance: dict) -> list[str]:
    """The suite's order of models (its config), then any other model in the summary."""
    listed = [c.get("model") for c in provenance.get("config", {}).get("cases", []) if isinstance(c, dict)]
    present = list(dict.fromkeys(summary["model"]))
    return [m for m in listed if m in present] + [m for m in present if m not in listed]


def _reference(g: pd.DataFrame, column: str | None) -> list[list]:
    """[[budget, mse], ...] of a reference curve (one value per budget), finite values only."""
    if column is None:
        return []
    points = []
    for budget, b in g.groupby("budget_flops", sort=True):
        values = pd.to_numeric(b[column], errors="coerce").to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values):
            points.append([float(budget), float(values[0])])
    return points


def _model_record(g: pd.DataFrame, cols: dict[str, str], failures: dict, noise_std, flops_per_sample,
                  copy_statistics) -> dict:
    """One model's part of the page: its reference curves, and every estimator's points."""
    model = str(g["model"].iloc[0])
    g = g.sort_values(["estimator", "budget_flops"], kind="stable")

    def col(row, role):
        return row[cols[role]] if role in cols else None

    references = [{"key": "sampling", "label": "sampling (analytic)", "points": _reference(g, "sampling_mse")}]
    if "prior_mse" in cols:
        references.append({"key": "prior", "label": "sampling+prior (analytic)",
                           "points": _reference(g, cols["prior_mse"])})
    if "constant_mse" in cols:
        references.append({"key": "constant", "label": "best constant", "points": _reference(g, cols["constant_mse"])})
    estimators = []
    for est, e in g.groupby("estimator", sort=False):
        points = []
        for _, r in e.iterrows():
            budget = float(r["budget_flops"])
            points.append({
                "budget": budget, "flops": _num(r["flops"]), "mse": _num(r["mse"]),
                "mse_lo": _num(r["mse_lo"]), "mse_hi": _num(r["mse_hi"]),
                "eff": _num(r["efficiency"]), "eff_lo": _num(r["efficiency_lo"]), "eff_hi": _num(r["efficiency_hi"]),
                "effp": _num(col(r, "efficiency_prior")), "effp_lo": _num(col(r, "efficiency_prior_lo")),
                "effp_hi": _num(col(r, "efficiency_prior_hi")),
                "fvu": _num(col(r, "fvu")), "fvu_lo": _num(col(r, "fvu_lo")), "fvu_hi": _num(col(r, "fvu_hi")),
                "gt_share": _num(col(r, "gt_share")),
                "failures": int(r["failures"]) if pd.notna(r["failures"]) else 0,
                "copies": int(r["copies"]) if pd.notna(r["copies"]) else None,
                "errors": failures.get((model, est, budget), {}),
            })
        first = e.iloc[0]
        estimators.append({"name": str(est), "mechanistic": bool(_bool(first["mechanistic"])),
                           "sealed": _bool(col(first, "sealed")), "points": points})
    books = {_book(v) for v in g[cols["book"]]} - {None} if "book" in cols else set()
    return {
        "id": model, "noise_std": _num(noise_std), "flops_per_sample": _num(flops_per_sample),
        "copies": int(g["copies"].max()) if g["copies"].notna().any() else None,
        "copy_statistics": copy_statistics, "book": books.pop() if len(books) == 1 else None,
        "budgets": sorted(float(b) for b in g["budget_flops"].unique()),
        "references": references, "estimators": estimators,
    }


def load_report_data(results_dir: str | Path) -> dict:
    """Everything the page shows, as a JSON-ready dict, from the files of a results folder.

    Args:
        results_dir: a folder written by ``algzu leaderboard`` or ``algzu challenge``; it
            needs ``summary.csv`` and ``provenance.json``; ``cells.csv`` (failure codes) and
            ``challenge.json`` (copy statistics, the verdict, ARC's comparison) are used
            when present.

    Returns:
        The page's data model (``schema`` :data:`SCHEMA_VERSION`): ``title``, ``suite``,
        ``kind``, ``held_out``, ``book``, ``verdicts``, ``headline``, ``columns``, ``models``
        (each with ``references`` and ``estimators`` and their points), ``tables``,
        ``provenance``, ``files``. Numbers are encoded by :func:`_num`.

    Raises:
        AlgzuError: the folder is missing, or a file is missing, unreadable or lacks columns.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise AlgzuError(f"{results} is not a results folder (no such folder)")
    for name in ("summary.csv", "provenance.json"):
        if not (results / name).is_file():
            raise AlgzuError(f"{results} is not a results folder: no {name} (written by algzu leaderboard "
                             "or algzu challenge)")
    summary = _read_csv(results / "summary.csv")
    missing = [c for c in REQUIRED_COLUMNS if c not in summary.columns]
    if missing:
        raise AlgzuError(f"{results / 'summary.csv'} lacks the columns {', '.join(missing)}")
    provenance = _read_json(results / "provenance.json")
    if not isinstance(provenance, dict):
        raise AlgzuError(f"{results / 'provenance.json'} is not a JSON object")
    challenge = _read_json(results / "challenge.json") if (results / "challenge.json").is_file() else {}
    cols = _present(summary)
    failures = _failure_codes(results)
    config = provenance.get("config", {}) if isinstance(provenance.get("config"), dict) else {}
    seeds = provenance.get("seeds", {}) if isinstance(provenance.get("seeds"), dict) else {}
    noise = {c.get("model"): c.get("noise_std") for c in config.get("cases", []) if isinstance(c, dict)}
    fps = provenance.get("flops_per_sample", {})
    stats = challenge.get("copy_statistics", provenance.get("copy_statistics", {})) or {}
    models = _model_order(summary, provenance)
    headline = "efficiency_prior" if "efficiency_prior" in cols else "efficiency"
    model_data = [_model_record(summary[summary["model"] == m], cols, failures, noise.get(m), fps.get(m),
                                stats.get(m)) for m in models]
    kind = "challenge" if challenge or provenance.get("challenge") else "leaderboard"
    name = config.get("name", results.name)
    which = challenge.get("challenge", provenance.get("challenge"))
    title = f"algzu challenge {which}" if kind == "challenge" else f"algzu leaderboard: suite {name}"
    book = _book(provenance.get("book", provenance.get("closed_book", config.get("closed_book"))))
    books = {_book(v) for v in summary[cols["book"]]} - {None} if "book" in cols else set()
    if book is None and len(books) == 1:  # every row of the summary says the same
        book = books.pop()
    tables = []
    if isinstance(challenge.get("arc_comparison"), list) and challenge["arc_comparison"]:
        rows = challenge["arc_comparison"]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        tables.append({"title": "ARC's M4,3 estimators beside ours (RMS error at ARC's budgets)",
                       "columns": columns, "rows": [[v if isinstance(v := r.get(c), str) else _num(v) for c in columns]
                                for r in rows]})
    held_out = bool(seeds.get("held_out", False))
    return {
        "schema": SCHEMA_VERSION,
        "title": title,
        "kind": kind,
        "suite": {"name": name, "description": config.get("description", ""),
                  "n_copies": config.get("n_copies"), "gt_samples": config.get("gt_samples"),
                  "budgets": config.get("budgets")},
        "held_out": held_out,
        "book": book,
        "verdicts": _verdicts(challenge, provenance, summary, models),
        "headline": {"key": "effp" if headline == "efficiency_prior" else "eff",
                     "label": "efficiency vs sampling+prior" if headline == "efficiency_prior"
                     else "efficiency vs sampling"},
        "columns": dict(cols),
        "models": model_data,
        "tables": tables,
        "provenance": {
            "git_hash": provenance.get("git_hash"), "date": provenance.get("date"),
            "versions": provenance.get("versions", {}), "host": provenance.get("host", {}),
            "seeds": {"held_out": True} if held_out else seeds,
        },
        "files": sorted(p.name for p in results.iterdir()
                        if p.name in ("summary.csv", "provenance.json", "cells.csv", "challenge.json")),
    }


def render_html(data: dict) -> str:
    """The page: the template with ``data`` embedded as JSON (safe inside a script element)."""
    template = (resources.files("algzu.reports") / TEMPLATE).read_text(encoding="utf-8")
    if template.count(DATA_PLACEHOLDER) != 1:
        raise RuntimeError(f"{TEMPLATE} must hold the data placeholder exactly once")
    # "<" escaped as \u003c: no "</script>" or "<!--" in a name can end the script early.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return template.replace(DATA_PLACEHOLDER, payload)


def write_html_report(results_dir: str | Path) -> Path:
    """(Re)write ``index.html`` in a results folder from the files there; returns its path."""
    results = Path(results_dir)
    html = render_html(load_report_data(results))
    path = results / "index.html"
    atomic_write_text(path, html)
    return path

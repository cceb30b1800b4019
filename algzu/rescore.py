"""Rescore a results folder from its cells: today's statistics on the estimates a run made.

``cells.csv`` holds everything a verdict is computed from (every estimate, its FLOPs and
failure, every copy's ground truth), so the summary, leaderboard, plots, ``challenge.md``,
``challenge.json`` and ``index.html`` are recomputed from it when the statistics change,
without rerunning an estimator and without the secret of a closed-book run (which is never
written down). ``cells.csv`` and ``timings.csv`` are left as they are: the folder is refused
if they would not be written back byte for byte. ``provenance.json`` keeps how the cells were
made (config, seeds, git hash, versions, date, host, runner) and adds ``rescored``: the git
hash, versions and date of the statistics.
"""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

import pandas as pd

from algzu.errors import AlgzuError
from algzu.provenance import git_hash, versions
from algzu.run import CELL_COLUMNS, SuiteResult, score_cells
from algzu.suites import ModelCase, Suite

# How the cells were made: kept as the run wrote it.
_MADE = ("git_hash", "versions", "date", "host")
# Written by the run from the suite and the summary: recomputed, never carried over.
_RECOMPUTED = {"config", "seeds", "flops_per_sample", "closed_book", "verdicts", "scoring", "challenge",
               "copy_statistics", "verdict", "arc_comparison"}


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise AlgzuError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _suite(config: dict) -> tuple[Suite, bool]:
    """The suite a provenance record's config describes, and whether its seed was held out."""
    try:
        held_out = config["seed"] == "secret"
        cases = tuple(ModelCase(c["model"], float(c["noise_std"])) for c in config["cases"])
        suite = Suite(name=config["name"], cases=cases, n_copies=int(config["n_copies"]),
                      budgets=tuple(int(b) for b in config["budgets"]), gt_samples=int(config["gt_samples"]),
                      seed=-1 if held_out else int(config["seed"]), description=str(config.get("description", "")),
                      closed_book=bool(config.get("closed_book", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise AlgzuError(f"provenance.json: the suite config is incomplete or malformed ({exc!r})") from None
    return suite, held_out


def _csv(path: Path, what: str) -> tuple[str, pd.DataFrame]:
    text = _read(path, what)
    try:
        return text, pd.read_csv(io.StringIO(text), dtype={"error": str, "message": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise AlgzuError(f"{path}: not a CSV table ({str(exc).splitlines()[0]})") from None


def rescore(folder: str | Path) -> dict[str, tuple[str, str]]:
    """Recompute every derived file of a results folder written by ``algzu leaderboard`` or
    ``algzu challenge`` from its ``cells.csv``.

    Returns:
        Each model's verdict before and after (``provenance.json``'s ``verdicts``).

    Raises:
        AlgzuError: a file is missing or malformed, or ``cells.csv``/``timings.csv`` would
            not be written back unchanged (nothing is written then).
    """
    from algzu.challenge import write_challenge
    from algzu.reports.suite import TIMING_KEYS, cell_tables, model_verdicts, write_results

    out = Path(folder)
    try:
        prov = json.loads(_read(out / "provenance.json", "provenance"))
    except json.JSONDecodeError as exc:
        raise AlgzuError(f"{out / 'provenance.json'}: not JSON ({exc})") from None
    if not isinstance(prov, dict) or not isinstance(prov.get("config"), dict):
        raise AlgzuError(f"{out / 'provenance.json'}: no suite config; not a results folder of algzu")
    suite, held_out = _suite(prov["config"])
    cells_text, cells = _csv(out / "cells.csv", "cells")
    missing = [c for c in CELL_COLUMNS if c != "seconds" and c not in cells.columns]
    if missing:
        raise AlgzuError(f"{out / 'cells.csv'}: missing columns {', '.join(missing)}")
    timings_text, timings = _csv(out / "timings.csv", "timings")
    if list(timings.columns) != [*TIMING_KEYS, "seconds"]:
        raise AlgzuError(f"{out / 'timings.csv'}: columns are not {', '.join([*TIMING_KEYS, 'seconds'])}")
    # Both tables are written from the same rows in the same order.
    if not timings[list(TIMING_KEYS)].equals(cells[list(TIMING_KEYS)]):
        raise AlgzuError(f"{out / 'timings.csv'}: its rows are not those of cells.csv")
    cells = cells.assign(seconds=timings["seconds"])[list(CELL_COLUMNS)]
    fps = prov.get("flops_per_sample")
    if not isinstance(fps, dict) or set(fps) != set(cells["model"]):
        raise AlgzuError(f"{out / 'provenance.json'}: flops_per_sample does not name exactly the models of cells.csv")
    # The baselines the run left out are a fact of the run, not of its cells.
    left_out = {}
    old_summary = out / "summary.csv"
    if old_summary.exists():
        old = _csv(old_summary, "summary")[1]
        if {"mechanistic", "baselines_not_run"} <= set(old.columns):
            rows = old[old["mechanistic"].astype(bool)].drop_duplicates("model")
            left_out = {m: "" if pd.isna(v) else str(v) for m, v in zip(rows["model"], rows["baselines_not_run"])}
    try:
        fps = {str(m): float(v) for m, v in fps.items()}
    except (TypeError, ValueError):
        raise AlgzuError(f"{out / 'provenance.json'}: flops_per_sample is not a number per model") from None
    result = SuiteResult(cells, score_cells(cells, fps, left_out), fps)
    # Written back, cells.csv and timings.csv must be what the run wrote, byte for byte.
    again = cell_tables(cells)
    for name, text in [("cells.csv", cells_text), ("timings.csv", timings_text)]:
        if again[name] != text:
            raise AlgzuError(f"{out / name} would not be written back unchanged; refusing to rescore {out}")
    made = {key: prov[key] for key in _MADE if key in prov}
    made["rescored"] = {"git_hash": git_hash(), "versions": versions(),
                        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "from": "cells.csv (estimates and ground truth as the run wrote them)"}
    extra = {key: value for key, value in prov.items() if key not in _RECOMPUTED | set(made)}
    if "challenge" in prov:
        write_challenge(str(prov["challenge"]), out, suite, result, held_out=held_out, extra=extra, made=made)
    else:
        write_results(out, suite, result, held_out=held_out, extra=extra, made=made)
    before = prov.get("verdicts") if isinstance(prov.get("verdicts"), dict) else {}
    return {model: (str(before.get(model, "")), text) for model, text in model_verdicts(suite, result.summary).items()}

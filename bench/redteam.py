"""The full red-team table: every attack in ``tests/redteam/`` under the CLI's default runner.

Run from the repository root (3 min on 2 cores at d4ae681, one attack after another, each in a
runner of its own)::

    python bench/redteam.py [--out /tmp/algzu-redteam.jsonl] [ATTACK ...]

Each attack runs on two suites that ``tests/test_redteam.py`` (the CI version: one model,
8 copies, 2 budgets) does not afford: M4,3 at ARC's protocol noise (sigma 0.05) at 1e3-1e5
FLOPs and ARC's M16,10 at the 432 protocol's noise (sigma 0.002) at 1e4-1e6 FLOPs, 32 copies
each, ground truth from 2^20 inputs per copy, seed 0 (or ``$ALGZU_SECRET``, held out), with
the block runner ``algzu leaderboard`` uses by default (sealed). One JSON line per attack,
model and budget goes to ``--out``; the table printed at the end is the one in
``results/redteam.md``: for each attack the error codes of its cells, whether it ran sealed,
and its best headline efficiency (against ``sampling+prior``) per model among the budgets
where some cell ran.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = sorted((ROOT / "tests" / "redteam").glob("attack_*.py"))
MODELS = (("2nd_argmax-d4-n3", "M4,3", 0.05, (10**3, 10**4, 10**5)),
          ("algzoo/example_2nd_argmax", "M16,10", 0.002, (10**4, 10**5, 10**6)))


def measure(paths: list[Path], out: Path) -> list[dict]:
    from algzu.cli import _secret_seed, use_every_cpu_core

    use_every_cpu_core()
    seed, held_out = _secret_seed(os.environ.get("ALGZU_SECRET"), None, default=0)
    cache = Path(tempfile.mkdtemp(prefix="algzu-redteam-"))  # ground truth shared by every attack
    records: list[dict] = []
    try:
        for path in paths:
            _measure_one(path, cache, seed, held_out, records, out)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return records


def _measure_one(path: Path, cache: Path, seed: int, held_out: bool, records: list[dict], out: Path) -> None:
    """One attack on every model of :data:`MODELS`. Its file goes to a runner of its own, as
    ``--include`` does (never imported here): a runner asks every file it was given for its
    estimators, and one attack's file refuses that (``attack_hide_baselines``), which would
    stop every other attack's run with it."""
    from algzu.cli import ISOLATE, MEMORY_MB, SEALED, TIMEOUT, _block_runner
    from algzu.errors import AlgzuError
    from algzu.run import run_suite
    from algzu.suites import ModelCase, Suite

    name = path.stem  # each attack registers the estimator named after its file
    try:
        with _block_runner(SEALED.default, ISOLATE.default, TIMEOUT.default, MEMORY_MB.default, [path]) as runner:
            for model, _, sigma, budgets in MODELS:
                suite = Suite(f"redteam-{name}", (ModelCase(model, sigma),), 32, budgets, 1 << 20, seed)
                result = run_suite(suite, cache_dir=cache, estimators=[name], held_out=held_out, block_runner=runner)
                for row in result.summary.to_dict("records"):
                    cells = result.cells[result.cells.budget_flops == row["budget_flops"]]
                    rec = {"attack": name, "model": model, "budget": row["budget_flops"], "sealed": bool(row["sealed"]),
                           "flops": row["flops"], "efficiency": row["efficiency"],
                           "prior_efficiency": row["prior_efficiency"], "prior_lo": row["prior_efficiency_lo"],
                           "prior_hi": row["prior_efficiency_hi"],
                           "errors": cells.error.fillna("").value_counts().to_dict(), "held_out": held_out}
                    _record(rec, records, out)
    except AlgzuError as e:  # the run refused to go on: say so in the table, go on with the next
        _record({"attack": name, "stopped": str(e)[:160]}, records, out)
    print(f"{name}: done", file=sys.stderr, flush=True)


def _record(rec: dict, records: list[dict], out: Path) -> None:
    records.append(rec)
    with out.open("a") as f:
        f.write(json.dumps(rec, default=float) + "\n")


def table(records: list[dict]) -> str:
    def fmt(x) -> str:
        if x is None or math.isnan(x):
            return "–"
        return "∞" if math.isinf(x) else (f"{x:.2g}" if x < 10 else f"{x:,.0f}")

    lines = ["| attack | outcome of its cells | best headline, " + " / ".join(m[1] for m in MODELS) + " |",
             "|---|---|---|"]
    for attack in dict.fromkeys(r["attack"] for r in records):
        codes, best, sealed = defaultdict(int), {}, set()
        stops = [r["stopped"] for r in records if r["attack"] == attack and "stopped" in r]
        rows = [r for r in records if r["attack"] == attack and "stopped" not in r]
        for r in rows:
            failed = {k: v for k, v in r["errors"].items() if k}
            for k, v in failed.items():
                codes[k] += v
            sealed.add(r["sealed"])
            if sum(failed.values()) < sum(r["errors"].values()) and not math.isnan(r["prior_efficiency"]):
                best[r["model"]] = max(best.get(r["model"], -math.inf), r["prior_efficiency"])
        total = sum(sum(r["errors"].values()) for r in rows)
        outcome = ", ".join(f"{k} {v}/{total}" for k, v in sorted(codes.items())) or "runs"
        if False in sealed:
            outcome += " · unsealed (never counted)"
        if stops:
            outcome = (outcome + "; then " if rows else "") + f"stopped: {stops[0]}"
        heads = " / ".join(fmt(best.get(m[0])) for m in MODELS)
        lines.append(f"| `{attack}` | {outcome} | {heads} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("attacks", nargs="*", help="attack names (default: every file in tests/redteam/)")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "algzu-redteam.jsonl")
    args = p.parse_args()
    paths = [a for a in ATTACKS if not args.attacks or a.stem in args.attacks]
    args.out.unlink(missing_ok=True)
    print(table(measure(paths, args.out)))


if __name__ == "__main__":
    main()

"""Wall time of ``algzu leaderboard``: cold (empty cache) and cached rerun, per runner, side by side.

Run from the repository root::

    python bench/leaderboard_time.py [--suite default] [--estimator NAME ...]
        [--modes sealed,unsealed] [--before /path/to/old/venv/bin/algzu] [--rounds 1]

Each contender gets its own output folder, emptied first, so its first run computes every
ground truth and every cell and its second run should read everything from the cache.
Contenders run one after another in each round, in an order that alternates between
rounds, so a change in the machine's load hits all of them alike. ``--modes`` are this
checkout's runners (``sealed``: the default; ``unsealed``: ``--unsealed``, the isolated
worker that holds the weights); ``--before`` adds another installation's ``algzu`` (e.g. a
checkout of an older commit) with its default runner. Give the same ``--estimator`` list to
compare the same work: the estimators both versions ship.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], timeout: float) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    return wall, ("ok" if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()[-300:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="default")
    p.add_argument("--estimator", action="append", default=[])
    p.add_argument("--modes", default="sealed", help="comma-separated: sealed, unsealed")
    p.add_argument("--before", type=Path, help="another installation's algzu command")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("/tmp/algzu-bench-lb"))
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    cli = Path(sys.executable).with_name("algzu")
    if not cli.exists():
        print("the algzu command is not installed: leaderboard time not measured")
        return
    extra = [a for name in args.estimator for a in ("--estimator", name)]
    contenders = {mode: [str(cli), "leaderboard", *(["--unsealed"] if mode == "unsealed" else [])]
                  for mode in args.modes.split(",")}
    if args.before:
        contenders["before"] = [str(args.before), "leaderboard"]
    print(f"suite {args.suite}, estimators {args.estimator or 'all'}; load average at start "
          f"{os.getloadavg()[0]:.1f} (other processes share the cores)", flush=True)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            folder = args.out / name
            shutil.rmtree(folder, ignore_errors=True)
            cmd = [*contenders[name], "--suite", args.suite, "--out", str(folder), *extra]
            cold, status = run(cmd, args.timeout)
            cached, status2 = run(cmd, args.timeout)
            times[name].append((cold, cached))
            print(f"round {r + 1} {name}: cold {cold:.1f} s ({status}), cached {cached:.1f} s ({status2}); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    first = next(iter(contenders))
    best = {name: (min(c for c, _ in t), min(c for _, c in t)) for name, t in times.items()}
    for name, (cold, cached) in best.items():
        print(f"{name}: best cold {cold:.1f} s, best cached {cached:.1f} s; "
              f"cold / {first}'s {cold / best[first][0]:.2f}, cached / {first}'s {cached / best[first][1]:.2f}")


if __name__ == "__main__":
    main()

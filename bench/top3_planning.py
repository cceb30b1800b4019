"""Planning time of ``top3_cones`` on M16,10: its ladder walked cheapest first (as up to
2026-12-02) against bisected (now), at every budget of the default suite in turn, as a
sealed tracer plans the blocks of a run.

Planning meters a rung's program by tracing it; the lru cache keeps each rung's cost for the
process, so a walk meters every rung up to the first over the largest budget (16 of 17) and a
bisection only those it probes. The rungs chosen are printed for both, and must agree.

Run from the repository root::

    python bench/top3_planning.py [--reps 2]

Each measurement is its own process; the two ways alternate, so the ratio is taken side by side.
"""

from __future__ import annotations

import argparse
import os

from _fresh import run_fresh

_CHILD = """
import functools, json, sys, time
from algzu.estimators import top3_cones as T
from algzu.model import ModelSpec
from algzu.planning import finest_within
from algzu.suites import get_suite
walk = json.loads(sys.argv[1])
spec = ModelSpec("rnn", "2nd_argmax", 16, 10)
start, chosen = time.perf_counter(), []
for budget in get_suite("default").budgets:
    if walk:
        rung = finest_within(T.ladder(spec), functools.partial(T.program_flops, spec), budget)
    else:
        rung = T.capacity_within(spec, budget)
    chosen.append(repr(rung))
print(json.dumps({"seconds": time.perf_counter() - start, "chosen": chosen,
                  "metered": T.program_flops.cache_info().currsize}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    runs = {True: [], False: []}
    for _ in range(args.reps):
        for walk in (True, False):
            runs[walk].append(run_fresh(_CHILD, walk))
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    same = len({tuple(r["chosen"]) for v in runs.values() for r in v}) == 1
    print("| ladder | rungs metered | seconds (best) | same rungs |")
    print("|---|---|---|---|")
    for walk, label in ((True, "walked"), (False, "bisected")):
        print(f"| {label} | {runs[walk][0]['metered']} | {best[walk]:.1f} | {'yes' if same else 'NO'} |")
    print(f"ratio {best[True] / best[False]:.2f}x; rungs chosen: {', '.join(runs[False][0]['chosen'])}")


if __name__ == "__main__":
    main()

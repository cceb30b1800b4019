"""Planning time of the exact-cone estimators in a fresh process, with the planning call inside
``jax.ensure_compile_time_eval()`` (how ``exact_cones`` and ``sliced_cones`` planned up to
58dfeff) and outside it (now).

Planning meters candidate programs by tracing them (:func:`algzu.planning.metered_flops`).
Inside that context JAX runs each constant operation of the metered program eagerly, one XLA
compile each (cached for the process afterwards): a sealed tracer, which serves its estimator
file's blocks for a whole run, pays it on its first blocks, and so does every test that starts
a sealed run. The chosen plan and its metered cost are printed for both, and must agree.

Run from the repository root::

    python bench/plan_trace.py [--reps 2]

Each measurement is its own process; the two ways alternate, so the ratio is taken side by side.
"""

from __future__ import annotations

import argparse
import os

from _fresh import run_fresh

CASES = [
    ("exact_cones", ("mlp", "2nd_argmax", 8, 3), 10**6),
    ("exact_cones", ("rnn", "2nd_argmax", 4, 3), 10**6),
    ("sliced_cones", ("rnn", "2nd_argmax", 4, 5), 10**9),
]

_CHILD = """
import contextlib, importlib, json, sys, time
import jax
from algzu.model import ModelSpec
name, spec, budget, inside = json.loads(sys.argv[1])
module = importlib.import_module(f"algzu.estimators.{name}")
spec = ModelSpec(*spec)
context = jax.ensure_compile_time_eval() if inside else contextlib.nullcontext()
start = time.perf_counter()
with context:
    plan = module.best_plan(spec, budget)
seconds = time.perf_counter() - start
flops = None if plan is None else module._plan_flops(plan)
print(json.dumps({"seconds": seconds, "plan": repr(plan)[:200], "flops": flops}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    print("| estimator | model | budget | inside s (best) | outside s (best) | ratio | same plan and FLOPs |")
    print("|---|---|---|---|---|---|---|")
    for name, spec, budget in CASES:
        runs = {True: [], False: []}
        for _ in range(args.reps):
            for inside in (True, False):
                runs[inside].append(run_fresh(_CHILD, [name, spec, budget, inside]))
        best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
        same = len({(r["plan"], r["flops"]) for v in runs.values() for r in v}) == 1
        arch, task, d, n = spec
        print(f"| {name} | {arch} {task} d={d} n={n} | {budget:.0e} | {best[True]:.1f} | {best[False]:.1f} | "
              f"{best[True] / best[False]:.1f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()

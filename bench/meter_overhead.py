"""Meter overhead on JAX estimators: metered run (trace + jaxpr count + compile + run) vs a
plain ``jax.jit`` run (trace + compile + run) of the same program. Goal: <= 5 %.

Run from the repository root::

    python bench/meter_overhead.py [--budgets 1e6 1e9] [--reps 3]

Each repetition traces a fresh closure, so neither side reuses the other's trace or
compilation; repetitions of the two sides alternate, and the best of each is compared
(other processes sharing the cores inflate single timings, rarely the best).
"""

from __future__ import annotations

import argparse
import os
import time

import jax

try:
    from algzu import meter
except ImportError:  # pragma: no cover - the module lands separately
    meter = None


def _plain(fn, args):
    traced = jax.jit(fn).trace(*args)
    compiled = traced.lower().compile()
    return jax.block_until_ready(compiled(*args))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="algzoo/example_2nd_argmax")
    p.add_argument("--budgets", type=float, nargs="+", default=[1e6, 1e9])
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    if meter is None or not hasattr(meter, "run_jax"):
        print("algzu.meter.run_jax is not there yet: meter overhead not measured")
        return
    from algzu.estimator import estimator_names, get_estimator
    from algzu.zoo import load_model

    model = load_model(args.model)
    key = jax.random.key(0)
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    print("| estimator | budget | FLOPs metered | plain jit s (best) | metered s (best) | count s | overhead |")
    print("|---|---|---|---|---|---|---|")
    for name in estimator_names():
        est = get_estimator(name)
        if getattr(est, "backend", "jax") != "jax":
            continue
        for budget in args.budgets:
            budget = int(budget)
            plain, metered, counting = [], [], []
            flops = None
            for rep in range(args.reps + 1):  # the first round warms caches of both sides
                def fn(m, k, _rep=rep):
                    return est.estimate(m, budget, k)

                t = time.perf_counter()
                _plain(fn, (model, key))
                t_plain = time.perf_counter() - t

                def fn2(m, k, _rep=rep):
                    return est.estimate(m, budget, k)

                t = time.perf_counter()
                res = meter.run_jax(fn2, (model, key), budget)
                t_metered = time.perf_counter() - t
                t = time.perf_counter()
                meter.count_flops(fn2, model, key)
                t_count = time.perf_counter() - t
                flops = res.flops
                if rep:
                    plain.append(t_plain)
                    metered.append(t_metered)
                    counting.append(t_count)
            over = min(metered) / min(plain) - 1
            print(f"| {name} | {budget:.0e} | {flops:,} | {min(plain):.3f} | {min(metered):.3f} "
                  f"| {min(counting):.3f} | {100 * over:+.1f}% |", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

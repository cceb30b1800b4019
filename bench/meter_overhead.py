"""Meter overhead on JAX estimators: the harness's sealed path (trace and export, deserialize
and meter the StableHLO, compile, run: :mod:`algzu.sandbox.program`) vs a plain ``jax.jit`` run
(trace + compile + run) of the same program. Goal: <= 5 %.

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
import numpy as np

from algzu.sandbox import program


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
    from algzu.estimator import estimator_names, get_estimator
    from algzu.zoo import load_model

    model = load_model(args.model)
    key = jax.random.key(0)
    params = {n: np.asarray(v, np.float32) for n, v in model.params.items()}
    data = program.key_data(key)
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    print("| estimator | budget | FLOPs metered | plain jit s (best) | sealed s (best) | meter s | overhead |")
    print("|---|---|---|---|---|---|---|")
    for name in estimator_names():
        est = get_estimator(name)
        if getattr(est, "backend", "jax") != "jax" or not est.supports(model.spec):
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

                def fn2(m, b, k, _rep=rep):
                    return est.estimate(m, b, k)

                t = time.perf_counter()
                blob = program.trace(fn2, model.spec, budget)
                t_meter = time.perf_counter()
                prog = program.load(blob, model.spec)
                t_count = time.perf_counter() - t_meter
                compiled, _ = prog.compile(model.spec)
                jax.block_until_ready(compiled(params, data))
                t_metered = time.perf_counter() - t
                flops = prog.flops
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

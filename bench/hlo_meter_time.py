"""Time to meter a shipped program from its StableHLO (``jax.export`` + :mod:`algzu.hlo_meter`)
against counting its jaxpr (:func:`algzu.meter.count_flops`), on the sealed program
``(params, key_data) -> estimate`` that the trusted side receives.

Run from the repository root::

    python bench/hlo_meter_time.py [--models algzoo/example_2nd_argmax 2nd_argmax-d4-n3] [--reps 5]

Per program: the estimator's own planning is warmed first (it is the same on both sides), then
each side is timed ``--reps`` times and the best is kept (other processes share the cores). The
first StableHLO metering of the run also builds the reference lowerings it compares against
(cached for the process): that one-off cost is printed separately.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
from jax import export

from algzu import hlo_meter, meter
from algzu.estimator import get_estimator
from algzu.model import Model
from algzu.zoo import load_model


def _program(estimator, spec, budget):
    def program(params, key_data):
        return estimator.estimate(Model(spec, params), budget, jax.random.wrap_key_data(key_data))

    return program


def _best(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["algzoo/example_2nd_argmax", "2nd_argmax-d4-n3"])
    p.add_argument("--estimators", nargs="+", default=["sampling", "stratified", "moments"])
    p.add_argument("--budgets", type=float, nargs="+", default=[1e4, 1e6, 1e9])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    first = None
    print("| estimator | model | budget | FLOPs (jaxpr / StableHLO) | jaxpr count ms | export ms | meter ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for model_id in args.models:
        spec = load_model(model_id).spec
        abstract = (
            {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in spec.param_shapes.items()},
            jax.ShapeDtypeStruct((2,), jnp.uint32),
        )
        for name in args.estimators:
            estimator = get_estimator(name)
            if not estimator.supports(spec):
                continue
            for budget in args.budgets:
                program = _program(estimator, spec, int(budget))
                meter.count_flops(program, *abstract)  # warm the estimator's planning caches
                if first is None:
                    start = time.perf_counter()
                    hlo_meter.count_flops(program, *abstract)
                    first = time.perf_counter() - start
                t_jaxpr, flops = _best(lambda p=program, a=abstract: meter.count_flops(p, *a), args.reps)
                t_export, exported = _best(
                    lambda p=program, a=abstract: export.export(jax.jit(p), platforms=["cpu"])(*a), args.reps
                )
                t_meter, hlo = _best(lambda e=exported: hlo_meter.exported_flops(e), args.reps)
                ratio = (t_export + t_meter) / t_jaxpr
                print(
                    f"| {name} | {model_id} | {budget:.0e} | {flops:,} / {hlo:,} | {1e3 * t_jaxpr:.0f} "
                    f"| {1e3 * t_export:.0f} | {1e3 * t_meter:.0f} | {ratio:.1f}x |",
                    flush=True,
                )
    print(f"first StableHLO metering of the run (builds the reference lowerings): {1e3 * first:.0f} ms")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

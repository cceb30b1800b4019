"""Metered cost of the exact-cone estimators against the hidden width d and the length n.

Run from the repository root::

    python bench/mechanistic_cost.py [--d 2 4 8 16] [--n 3 4 5]

For each zoo RNN on 2nd argmax (and the MLPs and argmedian models they declare), prints the
FLOPs of the programs the estimators choose from, counted by the meter they plan with (the
jaxpr meter; the sealed StableHLO meter agrees within 1% on these programs,
``tests/test_hlo_meter.py``). Nothing is run: every program is traced on abstract weights
and metered, so the figures are exact and machine-independent.

* ``exact_cones`` (n <= 3): its cheapest program (the smallest growth factor of its
  capacities; below it, it returns the chance rate) and the one at the largest factor.
* ``sliced_cones`` (n = 4, 5): one exact 3-D slice at growth factor 1.3, and each rung of its
  quadrature ladder (graded breakpoints, Gauss-Legendre nodes per interval), i.e. slices
  times nodes plus the breakpoints; for RNNs also its arcs (2-D slices): the FLOPs per
  direction (the slope between two rules), the cheapest rule and the rules 1e6 and 1e9 buy
  (n = 4), and at n = 5 the same for arcs on Sobol' points (directions drawn from the key are
  free).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time

import jax
import jax.numpy as jnp

from algzu.planning import abstract_params, finest_within, metered_flops
from algzu.zoo import load_model


def _one_slice_flops(sc, spec) -> int:
    plan = sc._plan(spec, "float64", 1, sc._GAMMA_MIN, 0)

    def one(params):
        with jax.enable_x64(True):
            p = {k: jnp.asarray(v, jnp.float64) for k, v in params.items()}
            # A direction that depends on the weights, as the quadrature's nodes do: a
            # constant one would let the start faces be folded away and go uncharged.
            scale = 1.0 + 0.0 * p["linear.weight"][0, 0]
            omega = scale * jnp.ones((spec.n - 2,), jnp.float64) / math.sqrt(spec.n - 2)
            return sc._slice(plan, p, omega)[0]

    return metered_flops(one, abstract_params(spec))


def _arc_rows(sc, mid: str, spec) -> None:
    plans = sc._arc_plans(spec)
    nodes = [len(sc._arc_rule(spec.n, p.m_a, p.m_c)[1]) for p in plans]
    (a, na), (b, nb) = ((plans[i], nodes[i]) for i in (0, 3))
    per = (sc._plan_flops(b) - sc._plan_flops(a)) / (nb - na)
    print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | arcs: one direction | {per:.3g} |")
    print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | arcs: cheapest rule ({na} directions) | "
          f"{sc._plan_flops(a):.3g} |")
    for budget in (10**6, 10**9):
        plan = finest_within(plans, sc._plan_flops, budget)
        if plan is not None:
            n_dirs = nodes[plans.index(plan)]
            print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | arcs: what {budget:.0e} buys "
                  f"(m_a = {plan.m_a}, m_c = {plan.m_c}, {n_dirs} directions) | {sc._plan_flops(plan):.3g} |")


def _sobol_rows(sc, mid: str, spec) -> None:
    cost = lambda k: sc._plan_flops(sc._SobolPlan(spec, k))  # noqa: E731
    print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | Sobol' points: one direction | {(cost(8) - cost(4)) / 96:.3g} |")
    print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | Sobol' points: cheapest (24 directions) | {cost(1):.3g} |")
    for budget in (10**6, 10**9):
        plan = sc.best_sobol(spec, budget)
        if plan is not None:
            print(f"| `{mid}` | {spec.d} | {spec.n} | sliced_cones | Sobol' points: what {budget:.0e} buys "
                  f"({24 * plan.per_chamber} directions) | {cost(plan.per_chamber):.3g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 4, 5])
    args = parser.parse_args()
    # Benchmarks may import estimator files; the harness never does.
    ec, sc = (importlib.import_module(f"algzu.estimators.{name}") for name in ("exact_cones", "sliced_cones"))
    ids = [f"2nd_argmax-d{d}-n{n}" for n in args.n for d in args.d]
    ids += [f"argmedian-d{d}-n{n}" for n in args.n for d in (4, 8)] + [f"2nd_argmax-mlp-d32-n{n}" for n in args.n]
    start = time.perf_counter()
    print("| model | d | n | estimator | program | metered FLOPs |")
    print("|---|---|---|---|---|---|")
    for mid in ids:
        try:
            spec = load_model(mid).spec
        except Exception:  # noqa: BLE001 - a cell the zoo does not have
            continue
        d = spec.d
        if spec.n <= 3:
            lo, hi = ec._GAMMAS[0], ec._GAMMAS[-1]
            for g in (lo, hi):
                flops = ec._plan_flops(ec._plan(spec, "float64", g))
                print(f"| `{mid}` | {d} | {spec.n} | exact_cones | growth {g:g} | {flops:.3g} |")
        elif spec.n <= 5:
            print(f"| `{mid}` | {d} | {spec.n} | sliced_cones | one slice | {_one_slice_flops(sc, spec):.3g} |")
            for lv in sc._LADDER[spec.n]:
                plan = sc._plan_at(spec, "float64", lv)
                flops = sc._plan_flops(plan)
                elev = f", {lv.elev} in elevation" if spec.n == 5 else ""
                m = f"m = {plan.m}" if plan.m_phi == plan.m else f"m = {plan.m} in azimuth, {plan.m_phi} in elevation"
                rung = f"{lv.grades} grades, {m}, {lv.grid} even{elev}"
                print(f"| `{mid}` | {d} | {spec.n} | sliced_cones | {rung} | {flops:.3g} |")
            if spec.arch == "rnn" and spec.n == 4:
                _arc_rows(sc, mid, spec)
            if spec.arch == "rnn" and spec.n == 5:
                _sobol_rows(sc, mid, spec)
        sys.stdout.flush()
    print(f"\n({time.perf_counter() - start:.0f} s to trace and meter)")


if __name__ == "__main__":
    main()

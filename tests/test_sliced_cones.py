"""Tests of ``sliced_cones``: exact cone measures on 3-D slices, quadrature over the rest.

The boundary formulas are checked against known integrals, the in-program slice geometry
(start faces, breakpoints) against direct numpy computations, n = 3 against
``exact_cones`` (slicing is exact there), and n = 4, 5 against 2^24-sample ground truth with
tolerances stated in standard errors (n = 4) or as the measured quadrature error (n = 5).
One compiled program per test at most, and one per plan in the module (:func:`_compiled`):
compiling a slice program takes ~10 s.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.estimator import get_estimator
from algzu.estimators.exact_cones import exact_accuracy
from algzu.estimators.sliced_cones import (
    DECLARED_UP_TO,
    SlicedCones,
    _edge_terms,
    _gauss,
    _phi_breaks,
    _plan,
    _plan_flops,
    _program,
    _slice,
    _start_faces,
    _theta_breaks,
    best_plan,
)
from algzu.evaluate import evaluate
from algzu.model import ModelSpec
from algzu.zoo import load_model
from sealed_run import run_once


@functools.cache
def _compiled(plan):
    """The estimate as a compiled function of the weights, once per plan (plans are tuples)."""
    return jax.jit(_program(plan))


@pytest.mark.parametrize(
    "k, octant, hemisphere",
    [(0, math.pi / 2, 2 * math.pi), (1, math.pi / 4, math.pi), (2, math.pi / 6, 2 * math.pi / 3)],
)
def test_boundary_formulas_give_the_moments_of_octants_and_the_hemisphere(k, octant, hemisphere):
    # int y_0^k over the octant (e_0, e_1, e_2) and over the hemisphere y_0 >= 0 (four
    # octants, counter-clockwise around e_0): area pi/2, 2 pi; first moment pi/4, pi;
    # second moment pi/6, 2 pi/3.
    e = np.eye(3)
    rim = [e[1], e[2], -e[1], -e[2]]
    with jax.enable_x64(True):
        tri = [(e[0], e[1]), (e[1], e[2]), (e[2], e[0])]
        term = lambda a, b: float(_edge_terms(jnp.asarray(a[None]), jnp.asarray(b[None]), k)[0])  # noqa: E731
        one = sum(term(a, b) for a, b in tri)
        hemi = sum(term(rim[i], rim[(i + 1) % 4]) for i in range(4))
    assert abs(one - octant) < 1e-12 and abs(hemi - hemisphere) < 1e-12


@pytest.mark.parametrize("n", [4, 5])
def test_start_faces_tile_the_hemisphere_with_the_right_targets(n):
    # Every random point of the hemisphere lies in exactly one start face, whose target is
    # the 2nd largest input there.
    rng = np.random.default_rng(n)
    omega = rng.normal(size=n - 2)
    omega /= np.linalg.norm(omega)
    with jax.enable_x64(True):
        cx, tab = _start_faces(jnp.asarray(omega), n, 1, 8, jnp.float64)
    assert not bool(cx.bad)
    FI, P = np.asarray(cx.FI), np.asarray(cx.P)
    faces = [f for f in range(FI.shape[0]) if FI[f, 16] > 0]
    y = rng.normal(size=(2000, 3))
    y[:, 0] = np.abs(y[:, 0])
    for point in y:
        inside = []
        for f in faces:
            verts = P[FI[f, : FI[f, 16]], :3]
            normals = np.cross(verts, np.roll(verts, -1, axis=0))
            if np.all(normals @ point >= 0):
                inside.append(f)
        assert len(inside) == 1
        x = np.concatenate([point[0] * omega, point[1:]])
        assert int(np.asarray(tab["target"])[inside[0]]) == int(np.argsort(-x)[1])


@pytest.mark.parametrize("n", [4, 5])
def test_start_cut_capacities_hold_on_random_directions_and_near_ties(n):
    # The start cuts' capacities are fitted to measured maxima (see _start_stage); an
    # overflow would mark the slice bad and drop it. 4,000 random directions, a quarter of
    # them with omega_0 within 1e-9 of omega_1 and a quarter with omega_0 within 1e-9 of 0.
    rng = np.random.default_rng(10 + n)
    omega = rng.normal(size=(4000, n - 2))
    omega[:1000, 0] = omega[:1000, 1] + 1e-9 * rng.normal(size=1000)
    omega[1000:2000, 0] = 1e-9 * rng.normal(size=1000)
    omega /= np.linalg.norm(omega, axis=1, keepdims=True)
    with jax.enable_x64(True):
        bad = jax.jit(jax.vmap(lambda o: _start_faces(o, n, 1, 8, jnp.float64)[0].bad))(jnp.asarray(omega))
    assert not np.any(np.asarray(bad))


def test_theta_breakpoints_include_every_switch_of_the_state():
    # Where a neuron of relu(W_hh relu(w_ih omega_0) + w_ih omega_1) changes sign, found by
    # scanning the circle finely.
    model = load_model("2nd_argmax-d4-n4")
    p = {k: np.asarray(v, np.float64) for k, v in model.params.items()}
    w, W = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"]
    theta = np.linspace(0, 2 * np.pi, 400_001)
    pre = np.maximum(np.outer(np.cos(theta), w), 0) @ W.T + np.outer(np.sin(theta), w)
    switches = theta[np.flatnonzero(np.any(np.sign(pre[1:]) != np.sign(pre[:-1]), axis=1))]
    with jax.enable_x64(True):
        breaks = np.asarray(_theta_breaks({k: jnp.asarray(v) for k, v in p.items()}, "rnn", 0))
    assert all(np.min(np.abs(breaks - s)) < 1e-4 for s in switches)


def test_n3_slicing_is_exact_and_equals_exact_cones():
    # The cheapest plan: a slice dropped for want of room would show as an error.
    model = load_model("2nd_argmax-d4-n3")
    value = float(_compiled(_plan(model.spec, "float64", 1, 1.3, 0))(model.params))
    assert abs(value - exact_accuracy(model)) < 1e-10


def test_n4_matches_2_24_sample_ground_truth_within_4_standard_errors():
    # The zoo's d = 4, n = 4 model at the level 1e9 buys (4 graded breakpoints, 4 nodes per
    # interval, every pi / 24): its quadrature error is below the ground truth's noise (5e-6
    # against 20,000 equally spaced slices already at 3 nodes and every pi / 8).
    model = load_model("2nd_argmax-d4-n4")
    value = float(_compiled(best_plan(model.spec, 10**9))(model.params))
    truth = evaluate(model, samples=1 << 24, seed=24)
    assert abs(value - truth.value) <= 4 * truth.stderr, (value, truth)


def test_n4_finest_level_matches_dense_slicing_on_a_noisy_copy():
    # Copy 6 of the beyond-n3 suite's d = 4, n = 4 copies, where the pi / 8 grid missed by
    # 2.1e-4 at 4 grades and m = 4 (the level 1e9 bought up to 4e7a860): against 5,000
    # equally spaced slices (within 6e-6 of 20,000, which are within ~3e-6 of 40,000; 2,500
    # are 6.5e-5 off), the finest level's pi / 24 grid is within 3e-5 (measured 6.7e-6,
    # 1.0e-6 against 20,000), and the pi / 8 grid at the same m is not within 1e-4 (2.0e-4).
    # The pi / 8 grid's nodes are measured by the same compiled slice as the dense ones (each
    # slice is exact, whatever the level), weighted as ``_program`` weighs them.
    from algzu.noise import NoiseSpec, noisy_params

    model = load_model("2nd_argmax-d4-n4")
    copy = {k: v[6] for k, v in noisy_params(model, "2nd_argmax-d4-n4", NoiseSpec(0.0136, 32, 45)).items()}
    finest = best_plan(model.spec, 10**9)
    assert (finest.grades, finest.m, finest.grid) == (4, 4, 48)
    n = 5_000
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in copy.items()}
        coarse_theta, coarse_w = _gauss(_theta_breaks(p, "rnn", finest.grades, 16), finest.m, closed=True)
        theta = jnp.concatenate([(jnp.arange(n) + 0.5) * 2 * math.pi / n, coarse_theta])

        def slice_measure(th):
            w, ok, _ = _slice(finest, p, jnp.stack([jnp.cos(th), jnp.sin(th)]))
            return jnp.where(ok, w, jnp.nan)

        W = np.asarray(jax.jit(lambda t: jax.lax.map(slice_measure, t))(theta))
        coarse_w = np.asarray(coarse_w)
    # Gamma(2) / (2 pi^2) times the integral over theta (the rule's weights sum to 2 pi)
    dense = np.sum(W[:n]) * 2 * math.pi / n / (2 * math.pi**2)
    coarse = np.sum(coarse_w * W[n:]) * (2 * math.pi / np.sum(coarse_w)) / (2 * math.pi**2)
    assert np.isfinite(dense) and np.isfinite(coarse)  # no slice dropped
    assert abs(float(_compiled(finest)(copy)) - dense) < 3e-5
    assert abs(coarse - dense) > 1e-4


def test_n5_matches_2_24_sample_ground_truth_to_its_quadrature_error():
    # n = 5 integrates over a 2-sphere; the level a 1e9 budget buys (14 intervals in
    # elevation) reads 0.42290 on the zoo's d = 4, n = 5 model, whose accuracy is
    # 0.4231 +- 0.0001 (three seeds), and 0.42340 with 8, the level 1e9 bought before
    # (0.42332 and 0.42352 evenly spaced): allowed 2e-4 plus 4 standard errors of the
    # ground truth, not exact (see the module docstring).
    model = load_model("2nd_argmax-d4-n5")
    plan = best_plan(model.spec, 10**9)
    assert (plan.m, plan.grid, plan.elev) == (2, 16, 14) and _plan_flops(plan) <= 10**9
    value = float(_compiled(plan)(model.params))
    truth = evaluate(model, samples=1 << 24, seed=24)
    assert abs(value - truth.value) <= 2e-4 + 4 * truth.stderr, (value, truth)


def test_n5_d8_level_at_1e9_takes_two_nodes_per_elevation_interval():
    # At d = 8, 1e9 affords one node per azimuth interval. With one per elevation interval
    # too (16 and 16, the level 1e9 bought up to 38668c5) the zoo's d = 8, n = 5 model reads
    # 0.88141, 5.4e-3 above its accuracy (0.87606 +- 0.00008); with two per elevation
    # interval (4 intervals, the same cost) 0.87922, 3.2e-3 above (2.5e-3 RMS on the
    # beyond-n3 suite's 32 copies instead of 4.5e-3). Allowed 0.7 times the old level's
    # error (up to 9b33054 both were compiled here and compared; the old level is fixed, so
    # its measured error stands in).
    model = load_model("2nd_argmax-d8-n5")
    plan = best_plan(model.spec, 10**9)
    assert (plan.m, plan.m_phi, plan.grid, plan.elev) == (1, 2, 16, 4) and _plan_flops(plan) <= 10**9
    value = float(_compiled(plan)(model.params))
    truth = evaluate(model, samples=1 << 24, seed=24)
    assert abs(value - truth.value) < 0.7 * abs(0.88141 - truth.value), (value, truth)


def test_n5_elevation_breakpoints_run_pole_to_pole_densest_at_the_equator():
    # Half-way between even and equal-area spacing (``_phi_breaks``): 1.5e-4 RMS error
    # instead of 2.7e-4 on the beyond-n3 suite's d = 4, n = 5 copies at the same cost.
    model = load_model("2nd_argmax-d4-n5")
    elev = 14
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in model.params.items()}
        grid = np.asarray(_phi_breaks(p, "rnn", jnp.asarray(0.3, jnp.float64), 0, elev))[: elev + 1]
    steps = np.diff(grid)
    assert grid[0] == -math.pi / 2 and grid[-1] == math.pi / 2 and np.all(steps > 0)
    assert steps[elev // 2] < math.pi / elev < steps[0] == pytest.approx(steps[-1])  # no longer even
    # Each interval's share of the weight cos(phi) is between even spacing's and 1 / elev.
    share = np.diff(np.sin(grid)) / 2
    even = np.diff(np.sin(np.linspace(-math.pi / 2, math.pi / 2, elev + 1))) / 2
    assert np.all(np.minimum(even, 1 / elev) - 1e-12 <= share) and np.all(share <= np.maximum(even, 1 / elev) + 1e-12)


def test_n5_faces_have_room_for_their_vertices():
    # Directions where a slice of copy 22 of the beyond-n3 suite's argmedian-d4-n5 copies
    # was dropped at the level 1e9 buys when a face could hold 8 vertices (72 of its 2,016
    # slices, in margin cuts: a split piece needs more). n = 5 faces now hold 10: none is.
    from algzu.noise import NoiseSpec, noisy_params

    model = load_model("argmedian-d4-n5")
    copy = {k: v[22] for k, v in noisy_params(model, "argmedian-d4-n5", NoiseSpec(0.0773, 32, 45)).items()}
    omega = np.array([
        [0.267561716122598, 0.02225527879916882, -0.9632836709044235],
        [-0.7334829028350308, 0.23472185199567494, -0.6378937869617616],
        [-0.7657724506032896, -0.04216539329007832, -0.6417278500312461],
        [-0.7057056098249522, -0.20343062068890583, -0.6786719198756633],
        [-0.6902758350348797, -0.27647717730900434, -0.6686401438697387],
        [0.02404801255598662, -0.9995309068385341, 0.01896468735953312],
    ])
    plan = best_plan(model.spec, 10**9)
    assert plan.K == 10
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v, jnp.float64) for k, v in copy.items()}

        def ok(K):
            return np.asarray(jax.jit(jax.vmap(lambda o: _slice(plan._replace(K=K), p, o)[1]))(jnp.asarray(omega)))

        assert np.all(ok(10)) and not np.any(ok(8))


def test_budget_below_the_cheapest_program_returns_chance_within_budget():
    spec = ModelSpec("rnn", "2nd_argmax", 4, 4)
    cheapest = _plan_flops(_plan(spec, "float64", 1, 1.3, 0))
    assert best_plan(spec, cheapest - 1) is None and best_plan(spec, cheapest) is not None
    model = load_model("2nd_argmax-d4-n4")
    est = get_estimator("sliced_cones")
    run = run_once(est, model, 10**5)
    assert run.estimate == pytest.approx(1 / 4) and run.flops <= 10**5


def test_budget_ladder_meters_within_budget():
    spec = ModelSpec("rnn", "2nd_argmax", 4, 4)
    for budget in (2 * 10**7, 3 * 10**7, 10**8, 10**9):
        plan = best_plan(spec, budget)
        assert plan is not None and _plan_flops(plan) <= budget


def test_registered_mechanistic_jax_for_n_4_and_5():
    est = get_estimator("sliced_cones")
    assert isinstance(est, SlicedCones) and est.mechanistic and est.backend == "jax"
    assert est.supports(ModelSpec("rnn", "argmedian", 8, 5)) and est.supports(ModelSpec("mlp", "2nd_argmax", 8, 4))
    assert not est.supports(ModelSpec("rnn", "2nd_argmax", 4, 3))
    assert not est.supports(ModelSpec("rnn", "2nd_argmax", 4, 6))


def test_declares_no_model_its_cheapest_program_cannot_afford():
    """Where even the coarsest quadrature costs more than the largest suite budget, every
    answer would be the chance rate: the zoo's d = 16, n = 5 RNN is not declared, its d = 8
    one (the default suite's) is."""
    est = get_estimator("sliced_cones")
    big, declared = ModelSpec("rnn", "2nd_argmax", 16, 5), ModelSpec("rnn", "2nd_argmax", 8, 5)
    assert best_plan(big, DECLARED_UP_TO) is None and not est.supports(big)
    assert best_plan(declared, DECLARED_UP_TO) is not None and est.supports(declared)

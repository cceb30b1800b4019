"""``top3_cones``: exact on its surrogate (the model on its three largest inputs' positive
parts) when its region capacity suffices, within budget, and mechanistic in cost.

Ground truths are Monte Carlo with fixed seeds; every statistical assertion states its
tolerance. Compiles are few (each costs 10-40 s on a loaded 2-core machine).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.estimator import get_estimator
from algzu.estimators import top3_cones as T
from algzu.handcrafted import second_argmax_loo
from algzu.model import ModelSpec, rnn_forward
from algzu.zoo import load_model
from sealed_run import run_once

# Gauss-Legendre with 4 nodes per edge integrates the density table to 8e-4 relative on
# the triangle's long diagonal edge (and better on shorter ones).
QUADRATURE_REL = 2e-3


def _triangle(n: int):
    table = jnp.asarray(T.density_table(n).ravel())
    regions = T._start(4, 1, 3, jnp.zeros((4, 3), jnp.float32), table)
    return table, regions[0], regions[1]


def test_triangle_mass_is_the_probability_of_three_positive_inputs_at_given_positions():
    for n in (3, 5, 10):
        table, verts, nv = _triangle(n)
        mass = float(T.poly_mass(verts, nv, table)[0])
        positive3 = 1 - sum(math.comb(n, q) for q in range(3)) / 2**n
        assert mass == pytest.approx(positive3 / math.perm(n, 3), rel=QUADRATURE_REL)


def test_clipping_splits_the_mass_exactly_and_half_offsets_halve_it():
    n = 10
    table, verts, nv = _triangle(n)
    whole = float(T.poly_mass(verts, nv, table)[0])
    offsets = T.half_mass_offsets(n)
    rng = np.random.default_rng(0)
    for theta in rng.uniform(-math.pi, math.pi, 6):
        i = int(round((theta + math.pi) / (2 * math.pi) * (T._ANGLES - 1)))
        theta = -math.pi + 2 * math.pi * i / (T._ANGLES - 1)
        coef = jnp.asarray([[offsets[i], math.cos(theta), math.sin(theta)]], jnp.float32)
        f = T._line_values(coef, verts)
        upper, n_upper = T.clip(verts, nv, f, 4)
        lower, n_lower = T.clip(verts, nv, -f, 4)
        m_up = float(T.poly_mass(upper, n_upper, table)[0])
        m_low = float(T.poly_mass(lower, n_lower, table)[0])
        assert m_up + m_low == pytest.approx(whole, rel=QUADRATURE_REL)  # the chord cancels
        if 0.05 * whole < m_up < 0.95 * whole:
            assert m_up == pytest.approx(whole / 2, rel=0.01)


@pytest.fixture(scope="module")
def loo4():
    """The hand-built leave-one-out-maximum RNN (n = 4, d = 10): exact whenever two inputs
    are positive, so its surrogate accuracy has a closed form."""
    return second_argmax_loo(4)


def test_exact_on_the_leave_one_out_model(loo4):
    n = 4
    # >= 2 positive inputs: correct; one: the tied non-argmax positions are a guess among
    # n - 1; none: all logits 0, position 0.
    closed_form = 1 - (1 + n) / 2**n + (n / 2**n) / (n - 1) + 1 / (n * 2**n)
    got = float(jax.jit(lambda m: T.top3_estimate(m, 1))(loo4))
    assert got == pytest.approx(closed_form, abs=2e-4)  # density quadrature


@pytest.fixture(scope="module")
def trained():
    """Zoo 2nd-argmax RNN d=4, n=4, whose ReLU patterns vary inside the triangles."""
    return load_model("2nd_argmax-d4-n4")


def _surrogate_monte_carlo(model, samples: int, seed: int) -> tuple[float, float]:
    """The surrogate's accuracy by sampling: the model on the positive parts of the three
    largest inputs, zeros elsewhere (a test oracle: the estimator never samples)."""
    n = model.spec.n
    hits = []
    for k in jax.random.split(jax.random.key(seed), samples // (1 << 16)):
        x = jax.random.normal(k, (1 << 16, n))
        order = jnp.argsort(-x, axis=1)
        rows = jnp.arange(x.shape[0])[:, None]
        kept = jnp.zeros_like(x).at[rows, order[:, :3]].set(jax.nn.relu(x[rows, order[:, :3]]))
        hits.append(np.asarray(jnp.argmax(rnn_forward(model.params, kept), axis=1) == order[:, 1]))
    hits = np.concatenate(hits)
    return float(hits.mean()), float(hits.std() / math.sqrt(hits.size))


def test_exact_on_the_surrogate_with_enough_capacity(trained):
    fine = float(jax.jit(lambda m: T.top3_estimate(m, 32))(trained))
    value, stderr = _surrogate_monte_carlo(trained, 1 << 20, seed=11)
    assert abs(fine - value) < 4 * stderr + 2e-4  # 4 standard errors, plus quadrature


def test_budget_ladder_is_respected_and_the_cheapest_rung_fits_1e7_on_m16_10(key):
    spec = ModelSpec("rnn", "2nd_argmax", 16, 10)
    assert T.program_flops(spec, 1) <= 10**7  # the M16,10 rung the 432 protocol uses
    small = ModelSpec("rnn", "2nd_argmax", 4, 4)
    costs = [T.program_flops(small, c) for c in T.ladder(small)[:3]]
    assert costs == sorted(costs)
    assert T.capacity_within(small, costs[1]) == T.ladder(small)[1]
    assert T.capacity_within(small, costs[0] - 1) is None
    est = get_estimator("top3_cones")
    model = load_model("2nd_argmax-d4-n4")
    below = run_once(est, model, costs[0] - 1, key)
    assert below.estimate == pytest.approx(1 / small.n) and below.flops == 0


def test_the_bisection_picks_the_rung_a_walk_would(monkeypatch):
    # capacity_within bisects the ladder; on rising costs that is the rung walking it
    # cheapest first picks (algzu.planning.finest_within), at every budget around them.
    from algzu.planning import finest_within

    spec = ModelSpec("rnn", "2nd_argmax", 16, 10)
    rungs = T.ladder(spec)
    costs = dict(zip(rungs, range(10, 10 * len(rungs) + 1, 10)))
    monkeypatch.setattr(T, "program_flops", lambda _, rung: costs[rung])
    for budget in range(0, 10 * len(rungs) + 20, 5):
        assert T.capacity_within(spec, budget) == finest_within(rungs, costs.__getitem__, budget), budget


def test_declares_the_m16_10_kind_only():
    est = get_estimator("top3_cones")
    assert est.mechanistic and est.backend == "jax"
    assert est.supports(ModelSpec("rnn", "2nd_argmax", 16, 10))
    assert not est.supports(ModelSpec("rnn", "2nd_argmax", 16, 5))
    assert not est.supports(ModelSpec("rnn", "2nd_argmax", 8, 10))
    assert not est.supports(ModelSpec("mlp", "2nd_argmax", 8, 3))


def _every_triple(model):
    """The sampled rungs' readouts summed over every ordered position triple: ``(three, two)``,
    the correct masses of three or more and of exactly two positive inputs."""
    n = model.spec.n
    response = T.impulse_response(model)
    three, two = 0.0, 0.0
    for j in range(1, n - 1):
        grid = np.array([(a, b, o) for a in range(j) for b in range(j + 1, n) for o in range(len(T._PERMS))])
        t1, t3, order = (jnp.asarray(grid[:, i], jnp.int32) for i in range(3))
        three_j, two_j = T.draw_masses(model, response, j, t1, t3, order)
        three, two = three + jnp.sum(three_j), two + jnp.sum(two_j)
    return three, two / (n - 2)  # each ordered pair is the M, S of n - 2 triples


def test_sampled_readouts_over_every_triple_are_the_capacity_one_surrogate(trained):
    # With every competitor clipped (n - 1 <= _LINES) the draws' three-input masses are the
    # tree's capacity-1 ones. (Their two-input masses are not: they are read on the edge
    # t = 0 of a map whose ReLU patterns the triangle's majority chose after the third input
    # arrived; 0.161 against the tree's 0.217 on this model, 0.0374 against 0.0381 on ARC's
    # M16,10.)
    assert trained.spec.n - 1 <= T._LINES
    three, _ = jax.jit(_every_triple)(trained)
    _, _, triples = jax.jit(lambda m: T.surrogate_parts(m, 1))(trained)
    assert float(three) == pytest.approx(float(triples), abs=1e-5)  # float32 sums of ~1e-2


def test_sampled_rung_is_unbiased_over_keys(trained):
    few = T.few_positive(trained, T.impulse_response(trained))
    three, two = jax.jit(_every_triple)(trained)
    exact = float(few + three + two)
    rung = T.TripleSample((2,) * (trained.spec.n - 2))
    keys = jax.random.split(jax.random.key(3), 512)
    estimates = np.asarray(jax.jit(jax.vmap(lambda k: T.sampled_estimate(trained, rung, k)))(keys))
    assert 0.0 < estimates.min() and estimates.max() < 1.0  # no clipping, which would bias
    stderr = estimates.std() / math.sqrt(len(estimates))
    assert stderr > 0  # the draws do vary
    assert abs(estimates.mean() - exact) < 4 * stderr  # 4 standard errors, 512 fixed keys


def test_a_sampled_rung_fits_1e6_on_m16_10_and_sees_every_order_in_each_stratum():
    spec = ModelSpec("rnn", "2nd_argmax", 16, 10)
    rungs = T.ladder(spec)
    sampled = rungs[: len(T.SAMPLE_DRAWS)]
    assert all(isinstance(r, T.TripleSample) for r in sampled) and rungs[len(sampled)] == 1
    costs = [T.program_flops(spec, r) for r in sampled] + [T.program_flops(spec, 1)]
    assert costs == sorted(costs)  # cheapest first, then capacity 1
    chosen = T.capacity_within(spec, 10**6)
    assert chosen == T.TripleSample((6,) * 8)  # 48 draws: every order of arrival once per stratum
    assert T.program_flops(spec, chosen) <= 10**6

"""Tests of the ``exact_cones`` estimator: exact accuracy from the cones of a ReLU network.

Ground truth is a Monte Carlo estimate computed here (jitted, 2^20 inputs per batch, fixed
seeds; 2^24 samples for ARC's official d=2 n=2 model, 2^22 for the others, one compiled
program per weight shape); agreement is required within 4 standard errors. Hand-built
models with a known accuracy check the geometry exactly, the probabilities of the n ranks
must sum to 1, and metered runs check the budget handling and the cost.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import flopscope
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu import meter
from algzu.estimator import get_estimator
from algzu.estimators.exact_cones import ExactCones, order_accuracy
from algzu.model import Model, ModelSpec, init_params, mlp_forward, rnn_forward
from algzu.pth import load_state_dict
from algzu.task import get_task

_OFFICIAL = [
    Path(__file__).resolve().parents[1] / "algzu/zoo/official/algzoo_rnn_small.pth",
    Path("/work/shared/algzoo-official/algzoo_rnn_small.pth"),
]
_BATCH = 2**20
_ORDER_TASKS = ("argmax", "2nd_argmax", "argmedian")


@functools.partial(jax.jit, static_argnames=("arch", "n"))
def _task_hits(params, key, n_batches, *, arch: str, n: int) -> dict[str, jax.Array]:
    """Correct predictions of each order task on ``n_batches * 2^20`` N(0, 1) inputs.

    One compiled program per weight shape serves every task (targets from the task registry).
    """
    tasks = {name: get_task(name) for name in _ORDER_TASKS if name != "argmedian" or n % 2}
    fwd = rnn_forward if arch == "rnn" else mlp_forward

    def body(i, hits):
        x = jax.random.normal(jax.random.fold_in(key, i), (_BATCH, n), jnp.float32)
        pred = jnp.argmax(fwd(params, x), axis=-1)
        return {
            name: hits[name] + (pred == task.target(x)).sum(dtype=jnp.int32)
            for name, task in tasks.items()
        }

    return jax.lax.fori_loop(0, n_batches, body, {name: jnp.int32(0) for name in tasks})


def _monte_carlo(model: Model, n_samples: int, seed: int = 0) -> tuple[float, float]:
    """Sampled accuracy of ``model`` on its task and its standard error."""
    spec = model.spec
    n_batches = n_samples // _BATCH
    params = {k: jnp.asarray(v) for k, v in model.params.items()}
    hits = _task_hits(params, jax.random.key(seed), n_batches, arch=spec.arch, n=spec.n)
    p = int(hits[spec.task]) / (n_batches * _BATCH)
    return p, math.sqrt(max(p * (1 - p), 1.0 / n_samples) / n_samples)


def _harness(model: Model, budget_flops: int) -> meter.Metered:
    """The estimate as the harness runs it: float32 flopscope weights, metered budget."""
    est = get_estimator("exact_cones")
    fn = lambda m, k: est.estimate(m, budget_flops, k)  # noqa: E731
    metered = meter.run_numpy(fn, (meter.to_flopscope(model), jax.random.key(0)), budget_flops)
    assert not metered.error, metered.message
    return metered


def _order(model: Model, rank: int, budget_flops: int = 10**9):
    """``order_accuracy`` under a flopscope budget: (probability, FLOPs used, its meter)."""
    metered_model = meter.to_flopscope(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with flopscope.BudgetContext(flop_budget=budget_flops, quiet=True) as budget:
            value, cone_meter = order_accuracy(metered_model, rank, budget_flops)
            used = budget.flops_used
    return value, used, cone_meter


def _random_model(arch: str, task: str, d: int, n: int, seed: int, scale: float = 1.0) -> Model:
    """PyTorch-style initialisation U(+-1/sqrt(fan_in)), times ``scale``."""
    spec = ModelSpec(arch, task, d, n)
    params = init_params(spec, jax.random.key(seed))
    return Model(spec, {k: np.asarray(v) * np.float32(scale) for k, v in params.items()})


def _official_small() -> Model:
    path = next((p for p in _OFFICIAL if p.is_file()), None)
    if path is None:
        pytest.skip("official algzoo_rnn_small.pth not found")
    return Model(ModelSpec("rnn", "2nd_argmax", 2, 2), load_state_dict(path))


def test_official_d2_n2_matches_2_24_sample_monte_carlo():
    model = _official_small()
    run = _harness(model, 10**6)
    p, se = _monte_carlo(model, 2**24)
    assert abs(run.value - p) <= 4 * se, (run.value, p, se)
    assert abs(run.value - 0.99993) < 5e-5  # ARC's reported accuracy
    assert run.flops < 2_000


# Weight shapes repeat so the Monte Carlo program compiles once per shape (4 in all).
@pytest.mark.parametrize(
    "arch, task, d, n, seed, scale",
    [
        ("rnn", "2nd_argmax", 4, 3, 0, 1.0),
        ("rnn", "2nd_argmax", 4, 3, 1, 4.0),  # larger weights: more, thinner regions
        ("rnn", "argmax", 4, 3, 3, 1.0),
        ("rnn", "2nd_argmax", 8, 3, 2, 1.0),
        ("rnn", "argmedian", 8, 3, 4, 2.0),
        ("rnn", "argmax", 2, 2, 5, 1.0),
        ("mlp", "2nd_argmax", 8, 3, 6, 1.0),
        ("mlp", "argmax", 8, 3, 7, 3.0),
    ],
)
def test_random_models_match_2_22_sample_monte_carlo(arch, task, d, n, seed, scale):
    model = _random_model(arch, task, d, n, seed, scale)
    run = _harness(model, 10**8)
    p, se = _monte_carlo(model, 2**22, seed=100 + seed)
    assert abs(run.value - p) <= 4 * se, (run.value, p, se)


@pytest.mark.parametrize("kind", ["integer", "duplicate_neuron"])
def test_degenerate_weights_match_2_22_sample_monte_carlo(kind):
    # Integer weights put many zero sets exactly through existing vertices, and a copied
    # neuron cuts along exactly the same great circles as its original.
    model = _random_model("rnn", "argmax", 4, 3, seed=7)
    params = {k: np.array(v) for k, v in model.params.items()}
    if kind == "integer":
        params = {k: np.round(2 * v) for k, v in params.items()}
    else:
        for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0"):
            params[name][1] = params[name][0]
        params["rnn.weight_hh_l0"][:, 1] = params["rnn.weight_hh_l0"][:, 0]
    model = Model(model.spec, params)
    run = _harness(model, 10**8)
    p, se = _monte_carlo(model, 2**22, seed=200)
    assert abs(run.value - p) <= 4 * se, (run.value, p, se)


@pytest.mark.parametrize("arch, d, n", [("rnn", 4, 3), ("rnn", 8, 3), ("mlp", 4, 3), ("rnn", 3, 2)])
def test_order_probabilities_sum_to_one_and_cost_bounds_hold(arch, d, n):
    # The model always predicts some input, so P(argmax = input of rank r) sums to 1 over
    # r; this only holds if the cones tile the sphere exactly.
    model = _random_model(arch, "argmax", d, n, seed=11)
    total = 0.0
    for rank in range(n):
        value, _, cone_meter = _order(model, rank)
        assert cone_meter.overruns == []  # every block stayed within its declared bound
        total += value
    assert abs(total - 1.0) < 1e-9


def _mlp_identity_logits(task: str) -> Model:
    """n = 3 MLP whose logits are the inputs: relu(x) - relu(-x) = x."""
    eye = np.eye(3, dtype=np.float32)
    params = {
        "mlp.0.weight": np.concatenate([eye, -eye]),
        "mlp.1.weight": np.eye(6, dtype=np.float32),
        "linear.weight": np.concatenate([eye, -eye], axis=1),
    }
    return Model(ModelSpec("mlp", task, 6, 3), params)


@pytest.mark.parametrize(
    "task, expected", [("argmax", 1.0), ("2nd_argmax", 0.0), ("argmedian", 0.0)]
)
def test_identity_logits_mlp_is_exactly_right_or_wrong(task, expected):
    assert abs(_harness(_mlp_identity_logits(task), 10**7).value - expected) < 1e-12


def _rnn_sign_of_first_input(task: str) -> Model:
    """n = 2 RNN with logits (x_0, -x_0): it predicts 0 exactly when x_0 > 0.

    Neurons 0, 1 read relu(+-x_t); neurons 2, 3 copy them one step later, so at the end
    they hold relu(x_0), relu(-x_0).
    """
    w_hh = np.zeros((4, 4), np.float32)
    w_hh[2, 0] = w_hh[3, 1] = 1.0
    params = {
        "rnn.weight_ih_l0": np.array([[1.0], [-1.0], [0.0], [0.0]], np.float32),
        "rnn.weight_hh_l0": w_hh,
        "linear.weight": np.array([[0, 0, 1, -1], [0, 0, -1, 1]], np.float32),
    }
    return Model(ModelSpec("rnn", task, 4, 2), params)


@pytest.mark.parametrize("task, expected", [("argmax", 0.75), ("2nd_argmax", 0.25)])
def test_sign_of_first_input_rnn_has_hand_computed_accuracy(task, expected):
    # On the circle, "x_0 > 0 and x_0 > x_1" is an arc of 135 degrees, and so is
    # "x_0 < 0 and x_1 > x_0": argmax accuracy 270 / 360.
    assert abs(_harness(_rnn_sign_of_first_input(task), 10**6).value - expected) < 1e-12


@pytest.mark.parametrize(
    "arch, task, n", [("rnn", "2nd_argmax", 3), ("rnn", "argmax", 2), ("mlp", "argmedian", 3)]
)
def test_zero_readout_predicts_class_0_so_scores_chance(arch, task, n):
    # All logits tie at 0, argmax returns class 0, and the target is 0 with probability 1/n.
    model = _random_model(arch, task, 4, n, seed=3)
    params = dict(model.params)
    params["linear.weight"] = np.zeros_like(params["linear.weight"])
    assert abs(_harness(Model(model.spec, params), 10**7).value - 1.0 / n) < 1e-12


@pytest.mark.parametrize("budget", [1, 100, 5_000])
def test_tiny_budget_returns_chance_within_budget(budget):
    run = _harness(_random_model("rnn", "2nd_argmax", 4, 3, seed=0), budget)
    assert run.value == pytest.approx(1 / 3)
    assert run.flops <= budget


def test_budget_sweep_never_exceeds_and_is_exact_with_25_percent_headroom():
    model = _random_model("rnn", "2nd_argmax", 4, 3, seed=0)
    exact, cost, cone_meter = _order(model, rank=1)
    assert cone_meter.overruns == []
    for budget in [*np.linspace(1, cost, 13).astype(int), cost - 1, cost]:
        run = _harness(model, int(budget))  # fails on BudgetExhaustedError
        assert run.flops <= budget
        assert run.value in (pytest.approx(1 / 3), pytest.approx(exact, abs=1e-15))
    assert _harness(model, int(1.25 * cost)).value == pytest.approx(exact, abs=1e-15)


@pytest.mark.parametrize("d, bound", [(4, 5e4), (16, 2e6)])
def test_metered_cost_n3_is_below_stated_bound(d, bound):
    _, used, cone_meter = _order(_random_model("rnn", "2nd_argmax", d, 3, seed=0), rank=1)
    assert cone_meter.overruns == []
    assert used < bound


def test_registered_and_supports_only_small_order_tasks():
    estimator = get_estimator("exact_cones")
    assert isinstance(estimator, ExactCones)
    assert estimator.mechanistic and estimator.backend == "numpy"
    assert estimator.supports(ModelSpec("rnn", "2nd_argmax", 16, 3))
    assert estimator.supports(ModelSpec("mlp", "argmax", 4, 2))
    assert not estimator.supports(ModelSpec("rnn", "2nd_argmax", 16, 4))
    assert not estimator.supports(ModelSpec("rnn", "median", 4, 3))

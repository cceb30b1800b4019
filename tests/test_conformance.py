"""One conformance suite over every registered estimator: a new estimator is tested for free.

For every estimator and every small model kind it declares: the answer is a finite number
in range, the same key gives the same answer, the metered compute stays within budget,
and the harness runs it without error at a budget it can afford.
"""

import jax
import numpy as np
import pytest

from algzu.estimator import estimator_names, get_estimator
from algzu.model import Model, ModelSpec, init_params
from algzu.runner import run_block

BUDGET = 10**6
# Small models of every kind an estimator may declare.
KINDS = [
    ModelSpec("rnn", "2nd_argmax", 4, 3),
    ModelSpec("rnn", "2nd_argmax", 2, 2),
    ModelSpec("rnn", "argmax", 4, 3),
    ModelSpec("rnn", "argmedian", 4, 3),
    ModelSpec("rnn", "median", 2, 3),
    ModelSpec("rnn", "2nd_argmax", 8, 5),
    ModelSpec("mlp", "2nd_argmax", 8, 3),
    ModelSpec("transformer", "longest_cycle", 2, 3, n_layers=1),
]


def _cases():
    for name in estimator_names():
        est = get_estimator(name)
        specs = [s for s in KINDS if est.supports(s)]
        assert specs or est.archs, f"{name} supports none of the conformance models"
        for spec in specs:
            yield pytest.param(name, spec, id=f"{name}-{spec.arch}-{spec.task}-d{spec.d}-n{spec.n}")


def _stacked(spec: ModelSpec, copies: int = 2) -> dict[str, np.ndarray]:
    params = [init_params(spec, jax.random.key(k)) for k in range(copies)]
    return {n: np.stack([np.asarray(p[n]) for p in params]) for n in params[0]}


@pytest.mark.parametrize("name, spec", list(_cases()))
def test_estimator_conforms(name, spec):
    est = get_estimator(name)
    stacked = _stacked(spec)
    keys = [jax.random.key(7), jax.random.key(7)]
    # Copy 0 twice with the same key: same answer. Then copy 1.
    results = run_block(est, spec, stacked, BUDGET, keys + [jax.random.key(8)], [0, 0, 1])
    for r in results:
        assert r.error == "", f"{name} failed: {r.error} {r.message}"
        assert np.isfinite(r.estimate)
        if spec.task_obj.metric == "accuracy":
            assert 0.0 <= r.estimate <= 1.0
        else:
            assert r.estimate >= 0.0
        assert r.flops is not None and 0 <= r.flops <= BUDGET
    assert results[0].estimate == results[1].estimate, "same key must give the same answer"


def test_every_estimator_declares_its_contract():
    names = estimator_names()
    assert "sampling" in names
    for name in names:
        est = get_estimator(name)
        assert isinstance(est.mechanistic, bool) and est.backend in ("jax", "numpy")
        assert type(est).__doc__ or __import__("inspect").getmodule(type(est)).__doc__, f"{name} is undocumented"

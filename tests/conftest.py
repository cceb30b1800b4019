"""Shared fixtures. JAX's implicit rank promotion raises in tests.

Dtype promotion stays JAX's standard: under ``jax_numpy_dtype_promotion="strict"`` the
shipped ``sliced_cones`` fails to trace (under ``enable_x64`` ``jnp.sum`` of int32 gives
int64, compared with int32), and casting there would change its metered FLOPs (64-bit work
costs x2), which no refactor may do.
"""

import os
from pathlib import Path

import jax
import pytest

FAULTY = Path(__file__).resolve().with_name("faulty_estimators.py")

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def official():
    """ARC's three official checkpoints, loaded through the zoo."""
    from algzu.zoo import OFFICIAL, load_model

    return {i: load_model(i) for i in OFFICIAL}


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory):
    """Secrets planted for a module's estimator workers to reach for: a file standing for the
    ground-truth cache, named by ``$ALGZU_TEST_SECRET`` (inherited by the workers; no
    estimator may read the file), and held-out seed text in ``$ALGZU_SECRET`` (which must
    not be passed on). Set while the fixture lives; a runner fixture depending on it starts
    its workers inside."""
    path = tmp_path_factory.mktemp("results") / "gt.json"
    path.write_text("ground truth")
    os.environ["ALGZU_TEST_SECRET"] = str(path)
    os.environ["ALGZU_SECRET"] = "held-out seed text"
    try:
        yield path
    finally:
        del os.environ["ALGZU_TEST_SECRET"], os.environ["ALGZU_SECRET"]


@pytest.fixture(scope="module")
def faulty():
    """The faulty estimators (``tests/faulty_estimators.py``), registered for one module only."""
    import algzu.estimator as registry

    with registry.ESTIMATORS.restoring():
        registry.include(FAULTY)
        yield


_SAMPLER = '''
import dataclasses

from algzu.estimator import Estimator, register_estimator
from algzu.planning import chance_estimate, sample_mean, samples_within


{decorator}@dataclasses.dataclass(frozen=True)
class Sampler(Estimator):
    name = {name}
    mechanistic = False
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        n = samples_within(model.spec, budget_flops)
        return sample_mean(model, n, key) if n else chance_estimate(model.spec)
'''


@pytest.fixture(scope="session")
def sampler_source():
    """The source of an honest sampler in a file of its own (a competitor's submission):
    ``sampler_source(name)``; ``name_code`` replaces the ``name`` expression, and
    ``registered=False`` leaves out ``@register_estimator`` (an entry point's class)."""

    def source(name: str = "", name_code: str | None = None, registered: bool = True) -> str:
        return _SAMPLER.format(name=name_code or repr(name), decorator="@register_estimator\n" * registered)

    return source

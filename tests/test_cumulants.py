"""``cumulants``: the third cumulants it propagates are right, and they fix the Gaussian
readout's bias that ``moments`` has on the zoo's d32-n3 MLP.

Monte Carlo oracles use fixed seeds; tolerances are stated.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.estimator import get_estimator
from algzu.estimators import cumulants, moments
from algzu.model import ModelSpec
from algzu.zoo import load_model


def test_order_statistic_third_cumulants():
    # n = 2: the maximum is (X1 + X2)/2 + |X1 - X2|/2, so kappa3 = kappa3(|Z|) / (2 sqrt 2).
    abs_z = -math.sqrt(2 / math.pi) + 2 * (2 / math.pi) ** 1.5
    assert cumulants.order_stat_third_cumulants(2)[0, 0, 0] == pytest.approx(abs_z / (2 * math.sqrt(2)), abs=1e-9)
    for n in (3, 5):
        kappa = cumulants.order_stat_third_cumulants(n)
        assert abs(kappa.sum()) < 1e-9  # the sum of n i.i.d. N(0, 1) has no third cumulant
        flip = np.arange(n)[::-1]  # X -> -X reverses the ranks and negates kappa3
        np.testing.assert_allclose(kappa, -kappa[np.ix_(flip, flip, flip)], atol=1e-9)
        np.testing.assert_allclose(kappa, kappa.transpose(1, 0, 2), atol=1e-12)


def test_relu_third_cumulant_matches_monte_carlo():
    rng = np.random.default_rng(0)
    d = 5
    a = rng.normal(size=(d, d))
    cov, mean, vec = a @ a.T / d, rng.normal(size=d) * 0.5, rng.normal(size=d)
    z = rng.multivariate_normal(mean, cov, size=1 << 21)
    h = np.maximum(z, 0.0) @ vec
    monte_carlo = np.mean((h - h.mean()) ** 3)  # -0.0209; its sampling error is ~1%
    got = cumulants.relu_third_cumulant(*(jnp.asarray(v, jnp.float32) for v in (vec, mean, cov)), order=5)
    # Hermite series truncated at order 5: measured 1.1% off (3.4% at order 3, 4.5% at 6).
    assert float(got) == pytest.approx(monte_carlo, rel=0.05)


def test_third_cumulants_fix_the_gaussian_readout_on_the_n3_mlp():
    model = load_model("2nd_argmax-mlp-d32-n3")  # accuracy 0.99767 +- 0.00002
    gaussian = float(jax.jit(lambda m: moments.moments_estimate(m, 2, exact_pairs=True))(model))
    skewed = float(jax.jit(cumulants.cumulants_estimate)(model))
    # Measured: 0.938 with covariance propagation, 0.989 with the third cumulants.
    assert 0.9977 - gaussian > 0.05
    assert abs(skewed - 0.9977) < 0.015


def test_declares_no_model_where_it_is_worse_than_a_constant():
    # FVU 9.2 and 4.1 on the noisy copies of the zoo's d32-n3 and d32-n5 MLPs.
    est = get_estimator("cumulants")
    assert est.mechanistic and est.backend == "jax"
    assert not est.supports(ModelSpec("mlp", "2nd_argmax", 32, 3))
    assert not est.supports(ModelSpec("mlp", "2nd_argmax", 32, 5))

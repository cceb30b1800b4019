"""A constant can beat plain sampling, but not the headline reference (issue #11).

An estimator that returns one number for every model, spending no FLOPs and never reading
the weights, got efficiency 43 at 1e3 FLOPs against plain sampling on ``2nd_argmax-d4-n3``:
that rewards knowing the protocol (the mean accuracy of its copies), not reading the model.
Here the constant is the strongest one there is, each model's copies' own mean ground truth
(an oracle: no estimator can know it). It must still never beat ``sampling+prior``: its
efficiency interval against it reaches down to 1 or below at every budget, n = 0 included,
and its FVU is (K - 1)/K, the in-sample mean's share of the variance.
"""

import numpy as np
import pytest

from algzu.estimator import include
from algzu.ground_truth import ground_truth
from algzu.noise import NoiseSpec, noisy_params
from algzu.run import run_suite
from algzu.suites import ModelCase, Suite
from algzu.zoo import load_model

SUITE = Suite(
    name="constant-test",
    cases=(ModelCase("2nd_argmax-d4-n3", 0.05), ModelCase("algzoo/2nd_argmax-d2-n2", 0.5)),
    n_copies=32,
    budgets=(10**2, 10**3, 10**4, 10**5, 10**6),  # 10^2: below one sample of d=4 n=3 (182 FLOPs)
    gt_samples=1 << 16,
    seed=7,
)

ESTIMATOR = '''"""``oracle_constant``: each model's copies' mean ground truth, whatever the weights."""

import dataclasses

import jax
import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model

VALUES = {values!r}


@register_estimator
@dataclasses.dataclass(frozen=True)
class OracleConstant(Estimator):
    name = "oracle_constant"
    mechanistic = True
    backend = "jax"

    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> jax.Array:
        s = model.spec
        return jnp.asarray(VALUES[(s.task, s.d, s.n)], jnp.float32)
'''


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    root = tmp_path_factory.mktemp("constant")
    values = {}
    for case in SUITE.cases:  # the same copies and ground truth run_suite uses (and caches)
        model = load_model(case.model)
        stacked = noisy_params(model, case.model, NoiseSpec(case.noise_std, SUITE.n_copies, SUITE.seed))
        truth = ground_truth(model.spec, stacked, samples=SUITE.gt_samples, seed=SUITE.seed + 1,
                             cache_dir=root / "cache" / "ground_truth")
        s = model.spec
        values[(s.task, s.d, s.n)] = float(np.mean([t.value for t in truth]))
    path = root / "oracle_constant.py"
    path.write_text(ESTIMATOR.replace("{values!r}", repr(values)))
    include(path)
    return run_suite(SUITE, cache_dir=root / "cache", estimators=["oracle_constant"]).summary


def test_constant_never_beats_sampling_with_the_prior(summary):
    assert len(summary) == len(SUITE.cases) * len(SUITE.budgets) and (summary["failures"] == 0).all()
    assert (summary["prior_efficiency_lo"] <= 1.0).all(), summary[["model", "budget_flops", "prior_efficiency_lo"]]
    # The point estimate exceeds 1 only by the in-sample mean's K/(K-1) (at n = 0).
    assert (summary["prior_efficiency"] <= SUITE.n_copies / (SUITE.n_copies - 1) + 1e-3).all()


def test_constant_fvu_is_the_in_sample_share_of_the_variance(summary):
    # mean (mean g - g_k)^2 = (K-1)/K of the sample variance; float32 rounding of the constant aside.
    k = SUITE.n_copies
    np.testing.assert_allclose(summary["fvu"], (k - 1) / k, rtol=1e-3)
    assert (summary["fvu_lo"] <= 1.0).all() and (summary["fvu_hi"] >= 1.0).all()


def test_constant_would_have_beaten_plain_sampling(summary):
    small = summary[(summary["model"] == "2nd_argmax-d4-n3") & (summary["budget_flops"] == 10**3)].iloc[0]
    # issue #11: 43x at 1e3 with the protocol's 256 copies when a sample cost 182 FLOPs (input
    # draws charged); ~27x at 113 (work on the copy only). Here 8 copies: about 10-30x.
    assert small.efficiency_lo > 5, small
    below = summary[summary["samples"] == 0]
    assert len(below) and below["efficiency"].isna().all() and below["prior_efficiency"].notna().all()

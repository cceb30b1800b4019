"""End-to-end check of the scoring engine: empirical sampling matches the analytic curve.

The ``sampling`` estimator run through the whole pipeline (noisy copies -> ground truth ->
metered estimates -> unbiased MSE with bootstrap interval) must agree with the analytic
baseline ``mean_k p_k (1 - p_k) / floor(B / c)`` within its 95% interval at every budget.
"""

import pytest

from algzu import planning
from algzu.errors import AlgzuError
from algzu.estimator import get_estimator, register_estimator
from algzu.model import ModelSpec
from algzu.run import run_suite
from algzu.suites import ModelCase, Suite


@pytest.fixture(scope="module")
def sampling_run(tmp_path_factory):
    suite = Suite(
        name="engine-test",
        cases=(ModelCase("algzoo/2nd_argmax-d2-n2", 0.5),),
        n_copies=64,
        budgets=(3 * 10**3, 3 * 10**4, 3 * 10**5),
        gt_samples=1 << 18,
        seed=11,
    )
    cache = tmp_path_factory.mktemp("cache")
    return suite, cache, run_suite(suite, cache_dir=cache, estimators=["sampling"])


def test_empirical_sampling_matches_analytic_baseline(sampling_run):
    _, _, result = sampling_run
    s = result.summary
    assert len(s) == 3 and (s["failures"] == 0).all()
    for r in s.itertuples():
        assert r.mse_lo <= r.sampling_mse <= r.mse_hi, r
        # Efficiency of sampling against itself is 1 within its interval.
        assert r.efficiency_lo <= 1.0 <= r.efficiency_hi, r


def test_sampling_spends_its_budget_but_never_more(sampling_run):
    suite, _, result = sampling_run
    cells = result.cells
    assert (cells["flops"] <= cells["budget_flops"]).all()
    c = result.flops_per_sample["algzoo/2nd_argmax-d2-n2"]
    for b in suite.budgets:
        used = cells.loc[cells["budget_flops"] == b, "flops"].iloc[0]
        assert b - 2 * c - 64 <= used <= b  # within two samples' cost (plus loop overhead)


def test_rerun_is_served_from_cache_with_identical_results(sampling_run):
    suite, cache, result = sampling_run
    calls = []

    def refuse(*args):
        calls.append(args)
        raise AssertionError("a cached block was recomputed")

    again = run_suite(suite, cache_dir=cache, estimators=["sampling"], block_runner=refuse)
    assert not calls
    assert again.cells.equals(result.cells)


def test_meter_counts_the_sampling_program_per_sample():
    spec = ModelSpec("rnn", "2nd_argmax", 16, 10)
    c = planning.flops_per_sample(spec)
    n = planning.samples_within(spec, 10**6)
    assert planning.sampling_flops(spec, n) <= 10**6 < planning.sampling_flops(spec, n + 1)
    assert 5000 < c < 20000  # forward ~5.2k FLOPs and scoring (the inputs depend on no weight: free)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(AlgzuError, match="valid estimators: .*sampling"):
        get_estimator("oracle")


def test_duplicate_estimator_name_is_refused():
    import dataclasses

    from algzu.estimator import Estimator

    @dataclasses.dataclass(frozen=True)
    class Impostor(Estimator):
        name = "sampling"
        mechanistic = True

        def estimate(self, model, budget_flops, key):
            return 0.5

    with pytest.raises(AlgzuError, match="duplicate estimator name 'sampling'"):
        register_estimator(Impostor)

"""Do the efficiency intervals hold 95%? A simulation of the experiment algzu runs.

Each simulated experiment is one suite cell: K copies whose true accuracies p_k are drawn
from N(0.926, 0.02) clipped to (0, 1) (the 432 challenge's copies: mean 92.56%, sd 2.00
points), a ground truth per copy from 2^24 inputs (its standard error ~6e-5, as in the 432
challenge), and one estimate per copy:

* the ``sampling`` estimator with n samples, Binomial(n, p_k) / n, whose efficiency against
  plain sampling is 1 by construction (E (e - p)^2 = p (1 - p) / n);
* the Bayes-optimal linear shrinkage of those n samples towards the population mean,
  ``w xbar + (1 - w) mu`` with ``w = V / (V + vbar/n)``, whose efficiency against
  ``sampling+prior`` (the headline) is 1 by construction.

The 95% interval of :func:`algzu.scoring.relative_mse_interval`, computed exactly as
``summarize`` computes it, must cover 1 in 93%-97% of 400 experiments. With 400
experiments the standard error of a 95% coverage is 1.1 points, so the band is about
+-1.8 standard errors. Seeds are fixed; every simulated table is one numpy draw.

Where that cannot hold, the cell's band says why (``EXCEPTIONS``; the argument in full is in
:mod:`algzu.scoring`'s docstring); the values quoted were measured with 2,000 experiments
per cell (``coverage(..., experiments=2000, seed=1)``):

* ``sampling`` at n = 1, K = 32 (90.5%): the data are, up to the truths' spread, the number
  M ~ Binomial(32, 0.074) of copies whose single sample missed, and the coverage of an
  interval that depends on M alone is a sum of consecutive binomial probabilities; the two
  nearest 95% are 91.6% (M = 0-4) and 97.2% (M = 0-5). Both need the interval to cover 1
  when every copy hit (8.5%), which no resampling interval can (every resample has the same
  small errors); an allowance for unseen errors at the bound max(g, 1 - g)^2 could, but
  granted from K and the bound alone it lifts the upper end of r above 1.36 n in every
  experiment (98.8%-99.4% coverage and an empty upper end at n >= 18). Asserted: coverage
  within 2 points of ``P(some copy missed)`` (91.8%), measured in the same experiments.
* ``sampling`` at n = 18, K = 32 (91.3%): copies with 4+ misses out of 18 (4.8% of copies)
  carry 31% of the MSE and 22% of experiments have none; the interval covers 66% of those
  and 99% of the experiments with 1-3 such copies. A double bootstrap (calibrated
  bootstrap-t, 400 x 300 x 300 resamples, tried in a side experiment) reached only 92.7%.
* ``sampling`` at n = 1, K = 64 (97.7%): the union covers M = 1-9 and a third of M = 10;
  the runs of M that land in the band are 1-8 (94.7%) and 2-9 (93.7%). The bootstrap-t alone
  covers 97.0%, the percentile alone 92.0% (M = 1 never, M = 2 in 88%).
* the headline at n = 1 (99.7-99.8%) and, less, n = 18 (96.4-96.8%): the shrinkage estimator
  sits at or near the population mean, where r - 1 is quadratic in the copies' mean
  deviation, the truth is at the edge of what reweighting the copies gives, and the
  bootstrap is inconsistent: the percentile interval (and the union) over-covers, the
  bootstrap-t alone covers 79-84% at n = 1, empirical likelihood 56-70%.

Also tried in place of the union (1,000 experiments per cell, seed 1, the same simulation;
n = 1, 18, 182, 1,825):

===========================  ======================  ======================
method                       ``sampling`` K=32 / 64  headline K=32 / 64
===========================  ======================  ======================
union (kept)                 91.4 91.1 94.6 94.0     99.7 96.2 94.8 93.5
                             98.2 92.7 93.9 95.6     99.9 95.7 95.0 94.9
bootstrap-t on log r alone   89.6 89.7 94.1 93.5     79.5 91.1 93.8 92.5
                             97.1 92.0 92.9 94.7     84.2 93.6 94.6 94.3
percentile alone             91.4 86.5 90.3 89.4     98.3 93.3 93.0 90.5
                             93.9 89.5 90.5 92.2     98.2 94.5 94.1 92.4
BCa                          90.8 86.8 91.5 90.6     84.8 92.1 92.7 90.9
                             96.6 90.9 91.5 93.4     88.3 94.1 94.3 92.7
BCa union bootstrap-t        90.8 89.7 94.1 93.6     85.7 93.2 94.3 92.7
                             97.4 92.1 93.0 94.8     89.0 94.6 94.9 94.3
variance-stabilized basic    88.5 86.2 91.7 90.4     78.9 93.6 93.0 90.1
                             94.7 90.6 90.8 93.0     88.4 95.3 94.3 92.9
switch (below)               91.4 91.1 94.6 94.0     99.7 96.2 94.8 93.5
                             93.9 92.7 93.9 95.6     99.7 95.7 95.0 94.9
empirical likelihood         88.3 82.6  -    -       56.3 85.5  -    -
                             88.9 86.7  -    -       70.2 92.4  -    -
===========================  ======================  ======================

BCa: Efron's bias-corrected and accelerated percentile (acceleration from the delta-method
influence values). Variance-stabilized: a power transform r^gamma fitted per experiment to
the resamples' delta-method standard errors (Tibshirani 1988), basic bootstrap on that
scale. The switch: percentile alone where 2.5% of the resampled standard errors fall below a
quarter of the sample's (at n = 1 mostly 0.03-0.07 for ``sampling`` and 0.1-0.4 for the
headline; at n >= 18 above 0.35 in 99% of experiments); it fixes ``sampling`` at n = 1,
K = 64 with 1,000 experiments but gives 92.0% with 2,000, so it was not kept. Empirical
likelihood: the profile of -2 log EL of r (plug-in functional, solved by sequential
linearization) against chi^2_1, tried at n = 1 and 18 only.
"""

import numpy as np
import pytest

from algzu.scoring import bootstrap_weights, copy_columns, reference, relative_mse_interval

MU, SD = 0.926, 0.02
GT_SAMPLES = 1 << 24
EXPERIMENTS = 400
SAMPLES = (1, 18, 182, 1825)
COPIES = (32, 64)
BAND = (0.93, 0.97)  # +-1.8 standard errors of a 95% coverage over 400 experiments


def simulate(copies: int, n: int, estimator: str, experiments: int, seed: int):
    """Per-copy tables ``(experiments, copies, 5)`` and, per experiment, whether any copy missed."""
    rng = np.random.default_rng(seed)
    p = np.clip(rng.normal(MU, SD, (experiments, copies)), 1e-9, 1 - 1e-9)
    se = np.sqrt(p * (1 - p) / GT_SAMPLES)
    truth = np.clip(p + se * rng.standard_normal(p.shape), 0.0, 1.0)
    stderr = np.sqrt(truth * (1 - truth) / (GT_SAMPLES - 1))  # what algzu.evaluate reports
    hits = rng.binomial(n, p)
    xbar = hits / n
    if estimator == "sampling":
        est = xbar
    else:  # Bayes-optimal linear shrinkage with the population's mean and variance
        var = SD**2
        vbar = MU * (1 - MU) - var  # E p(1-p) = mu(1-mu) - Var p
        w = var / (var + vbar / n)
        est = w * xbar + (1 - w) * MU
    cols = copy_columns(est, truth, stderr, np.full(p.shape, float(GT_SAMPLES)), "accuracy")
    return cols, (hits < n).any(axis=1)


def coverage(copies: int, n: int, estimator: str, ref: str, experiments: int = EXPERIMENTS, seed: int = 0):
    """Fraction of experiments whose interval of efficiency covers 1, and the ceiling at n = 1."""
    cols, missed = simulate(copies, n, estimator, experiments, seed=[seed, copies, n, estimator == "sampling"])
    w = bootstrap_weights(copies)
    covered = []
    for part in np.array_split(np.arange(experiments), max(1, experiments // 100)):  # bounded memory
        _, lo, hi = relative_mse_interval(cols[part], reference(ref, n, copies), weights=w)
        covered.append((lo <= 1.0) & (1.0 <= hi))  # r = mse / R covers 1 iff efficiency does
    return float(np.concatenate(covered).mean()), float(missed.mean())


# Cells where 93%-97% cannot hold (see the module docstring): (estimator, K, n) -> band,
# each about +-2.5 standard errors (1.1-1.4 points) around the value measured with 2,000
# experiments, clipped to the nominal side that holds.
EXCEPTIONS = {
    ("sampling", 32, 18): (0.88, 0.97),
    ("sampling", 64, 1): (0.93, 0.995),
    ("shrinkage", 32, 1): (0.93, 1.0),
    ("shrinkage", 64, 1): (0.93, 1.0),
    ("shrinkage", 32, 18): (0.93, 0.995),
    ("shrinkage", 64, 18): (0.93, 0.995),
}


@pytest.mark.parametrize("copies", COPIES)
@pytest.mark.parametrize("n", SAMPLES)
def test_sampling_efficiency_interval_covers_one(copies, n):
    cov, ceiling = coverage(copies, n, "sampling", "sampling")
    if (copies, n) == (32, 1):
        assert ceiling < BAND[0]  # every copy hit in > 7%: no resampling interval covers those
        assert ceiling - 0.02 <= cov <= ceiling, (cov, ceiling)
    else:
        lo, hi = EXCEPTIONS.get(("sampling", copies, n), BAND)
        assert lo <= cov <= hi, cov


@pytest.mark.parametrize("copies", COPIES)
@pytest.mark.parametrize("n", SAMPLES)
def test_headline_efficiency_interval_covers_one(copies, n):
    cov, _ = coverage(copies, n, "shrinkage", "sampling_prior")
    lo, hi = EXCEPTIONS.get(("shrinkage", copies, n), BAND)
    assert lo <= cov <= hi, cov

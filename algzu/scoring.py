"""From per-copy estimates to MSE, three reference MSEs, FVU and efficiency, with intervals.

For one estimator, model and budget B, with K noisy copies: estimates e_k, ground truths g_k
(each a mean over N_k inputs, or exact) and their standard errors s_k.

Per copy:

* ``q_k = (e_k - g_k)^2 - s_k^2`` is unbiased for the squared error against the copy's true
  expected score p_k (the ground truth's own error is independent of the estimate and has
  variance s_k^2); ``mse = mean_k q_k``. Each copy's ground truth is drawn from inputs of
  its own (:mod:`algzu.ground_truth`), so the q_k are independent across copies, as every
  interval below assumes. ``gt_share = mean_k s_k^2 / mean_k (e_k - g_k)^2``.
* ``v_k`` is the variance of one sample's score: for accuracy ``g_k (1 - g_k) + s_k^2``,
  which equals ``N_k/(N_k - 1) g_k (1 - g_k)``, unbiased for ``p_k (1 - p_k)`` (exact when
  the ground truth is exhaustive, s_k = 0); for an MSE task ``s_k^2 N_k``, the sample
  variance the ground truth measured.
* A failed cell (exception, over budget, timeout, bad value) is scored as the worst trivial
  estimate: 0 or 1 for accuracy, whichever is farther from g_k; 0 for an MSE task.

The protocol's population (the distribution of a copy's true score):

* ``V = sum_k (g_k - mean g)^2 / (K - 1) - mean_k s_k^2``, the variance of the copies' true
  scores. The sample variance of the g_k adds the ground truth's error variance
  ``(tr C - 1'C1/K) / (K - 1)``, C the covariance of the copies' ground-truth errors. With
  independent inputs per copy, as algzu draws them, that is ``mean_k s_k^2``, subtracted
  here. (Up to e8f1b3e every copy saw the same inputs, which correlated the errors and left
  V low by at most ``mean_k s_k^2``, up to 2.7e-4 of V in the committed suites; it also made
  the intervals too narrow wherever the ground truth's noise mattered.)
* ``vbar = mean_k v_k``.

Reference MSEs at budget B, where ``n = floor(B / c)`` samples are affordable (c: metered
FLOPs per sample of the ``sampling`` estimator):

* ``constant``: V, the MSE of the best constant (the population mean of the true scores),
  which needs no FLOPs and no model. ``fvu = mse / V`` (1: no better than that constant).
* ``sampling``: ``vbar / n``, plain Monte Carlo; undefined below one sample (n = 0).
* ``sampling+prior``: ``1 / (1/V + n/vbar)``, sampling that knows the protocol: the Bayes
  risk of shrinking the mean of n samples towards the population mean,
  ``w xbar + (1 - w) mu`` with ``w = V / (V + vbar/n)``. That is the smallest MSE of any
  estimator linear in the sample mean that knows the population's mean and variance
  (Buhlmann's credibility estimator, 1967), and the exact Bayes risk when the prior is the
  Beta with that mean and variance (Beta-binomial conjugacy). It uses the mean ``vbar`` and
  not each copy's ``v_k``: the average of ``1/(1/V + n/v_k)`` is smaller (the function is
  concave) but only an oracle knowing ``p_k (1 - p_k)``, the unknown itself, attains it.
  At n = 0 it is V, the constant, so it is defined at every budget.

``efficiency`` against a reference R is ``R / mse`` (> 1 beats R at the same FLOPs). The
headline is the efficiency against ``sampling+prior``: "beats sampling" means beats sampling
that knows the protocol, which knowing the protocol alone hardly does (a constant at the
population mean has efficiency 1 at n = 0 and less above; the exact Bayes posterior mean
of n samples under the copies' distribution, 1.02 at n = 190 on the 432 protocol and up to
1.08 where a few copies break badly, measured by a red-team pass). The efficiency against
plain sampling stays in column ``efficiency``. The headline interval is 95% at each budget;
a verdict, which wins if any of its claims holds, reads each claim's lower end at
``1 - 5% / claims`` (:func:`headline_claims`, :func:`claim_level`), and also asks that the
claim's MSE be measurably below, paired over the copies, that of sampling+prior run on them
(``sampling``'s own estimates shrunk towards the copies' mean, :func:`sampling_prior_run`)
and of the model-agnostic baselines algzu ships (:data:`BASELINES`, :func:`rival_comparison`).

Special values: ``mse <= 0`` (an estimator indistinguishable from exact) has infinite
efficiency and ``fvu <= 0``; a reference that is undefined (no sample affordable; V with one
copy) leaves efficiency undefined (NaN); ``V <= 0`` (the copies' truths do not vary beyond
ground-truth noise) makes ``sampling+prior`` and ``constant`` exact, so the efficiency
against them is 0, and NaN if ``mse <= 0`` too.

Intervals (95%, over copies, paired: every resample draws the same copies for the estimator
and the references, with a fixed seed so tables reproduce). For the relative MSE
``r = mse / R`` (FVU when R = V; efficiency is 1/r) the interval is the union of two
bootstrap intervals (Efron & Tibshirani 1993, ch. 12-14; DiCiccio & Efron 1996):

* the studentized bootstrap (bootstrap-t) on ``log r``, with delta-method standard errors
  recomputed in every resample, second-order accurate for smooth statistics of skewed data
  such as squared errors (Hall 1988); used where r and every resampled r are finite and > 0;
* the percentile interval, which stays valid where the bootstrap-t does not: when the
  estimator sits at the population mean, ``mse`` and V move together and the linear term of
  r vanishes, the delta-method standard error collapses, and the bootstrap-t interval misses
  in 15-20% of simulated experiments.

Coverage of the true efficiency 1, 2,000 simulated experiments per cell
(``tests/test_intervals.py``: copies' accuracies ~ N(0.926, 0.02), 2^24-input ground truth;
"before" is the percentile bootstrap alone, as algzu computed it up to 6f819d9):

=============================  ======  ======  ======  ======
samples n                          1      18     182   1,825
=============================  ======  ======  ======  ======
``sampling``, K = 32, before    90.5%   86.6%   91.0%   89.9%
``sampling``, K = 32            90.5%   91.3%   94.9%   94.2%
``sampling``, K = 64, before    92.1%   91.3%   92.4%   92.7%
``sampling``, K = 64            97.7%   93.7%   94.9%   95.6%
shrinkage (headline), K = 32    99.8%   96.8%   94.0%   93.8%
shrinkage (headline), K = 64    99.7%   96.4%   95.0%   95.0%
=============================  ======  ======  ======  ======

The cells outside 93%-97%, and why (``tests/test_intervals.py`` has the measurements, and
the methods tried instead of the union: BCa, a variance-stabilized bootstrap, the
bootstrap-t or the percentile alone, a switch between them; none does better):

* At n = 1 an experiment's data are, up to the spread of the truths, the number M of copies
  whose single sample missed, M ~ Binomial(K, 0.074), and an interval covers 1 for a run of
  M values; its coverage is a sum of consecutive binomial probabilities. At K = 32 the sums
  nearest 95% are 91.6% (M = 0-4) and 97.2% (M = 0-5, just over): an interval that depends
  on the data through M alone cannot land in 93%-97%, and either sum needs it to cover 1
  when every sample hit (M = 0, 8.5%). A resampling interval cannot (every resample has the
  same small errors; the union covers M = 1-6, 90.5% against P(M >= 1) = 91.8%). An interval
  that uses the bounded support of squared errors (each at most max(g_k, 1 - g_k)^2 ~ 0.86)
  can: it may allow for errors at the bound that no copy showed, and [0.07, 1.4] covers both
  sampling's r = 1 and the r ~ 0.086 of a real constant 1.0. But that allowance
  (Clopper-Pearson: up to 1 - 0.025^(1/32) = 11% of the copies, ~0.09 in MSE) is as large
  for any 32 copies whose errors all sit far below the bound; granted from K and the bound
  alone it puts the upper end of sampling's r above 1.36 n in every experiment: at n = 18,
  182 and 1,825 only the lower end's misses remain (coverage 98.8%-99.4%, measured) and the
  upper end says nothing. Granting it only to data shaped like M = 0 (every estimate 1.0)
  would be knowing the estimator; we found no rule in between. At K = 64 such sums exist
  (M = 1-8: 94.7%; 2-9: 93.7%), but the union covers M = 1-9 and a third of M = 10 (97.7%):
  the bootstrap-t's upper end is unbounded at M = 1-3 (resamples without a miss have a
  near-zero standard error) and the percentile's lower end stays below 1 up to M = 9. Alone,
  the bootstrap-t covers M = 1-8 and 88% of M = 9 (97.0%); the percentile none of M = 1 and
  88% of M = 2 (92.0%). Covering exactly M = 1-8 is what Wilson's score interval does, with
  the variance under the null that only the two-point errors provide.
* At n = 18, K = 32 (91.3%), copies with 4+ misses of 18 (4.8% of copies) carry 31% of the
  MSE, and 22% of experiments have none: the interval covers 66% of those and 99% of those
  with 1-3, so the misses are the experiments whose copies never show the tail of a skewed
  variable. A calibrated (double) bootstrap reached 92.7%. (K = 64, 93.7%: 5% of experiments
  have no tail copy, 42% of them covered.)
* Where the estimator sits at the population mean (the headline at n = 1: the shrinkage
  weight is 0.006), r - 1 is quadratic in the copies' mean truth's standardized deviation Z
  from that centre, r ~ 1 + (Z^2 - 1)/K, and the truth 1 is at the edge of what any
  reweighting of the copies gives (no reweighting makes a constant's MSE smaller than the
  variance of the truths). The bootstrap of a smooth function of means whose gradient
  vanishes is inconsistent (Babu 1984): the bootstrap-t covers 79-84%, the percentile
  interval 98.2-98.3% (1,000 experiments; it covers while |Z| < ~3) and the union
  99.7-99.8%. Empirical likelihood (Owen 2001), tried, covers 56-70%: reweighting reaches
  r = 1 only at its edge, where the profile is infinite in ~40% of experiments.
  Over-covering errs towards "no better than the reference".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from algzu.errors import AlgzuError

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
N_SIGN_FLIPS = 20000  # random sign vectors of the paired test (rival_test)
REFERENCES = ("constant", "sampling", "sampling_prior")
# The efficiency a verdict is drawn from: against sampling that knows the protocol.
HEADLINE = "prior_efficiency"

# Columns of the per-copy table the statistics are smooth functions of (means over copies):
# squared error q, score variance v, centred truth g - mean g, its square, s^2.
_Q, _V, _G, _G2, _S2 = range(5)
_COLUMNS = {"one": (_Q,), "sampling": (_Q, _V), "constant": (_Q, _G, _G2, _S2), "sampling_prior": (_Q, _V, _G, _G2, _S2)}


def affordable_samples(budget: float, flops_per_sample: float) -> float:
    """n = floor(B / c): the samples plain sampling affords at budget B, c FLOPs each."""
    return float(np.floor(budget / flops_per_sample))


def failure_estimate(ground_truth: np.ndarray, metric: str) -> np.ndarray:
    """The estimate a failed cell is scored with: the worst trivial estimate."""
    if metric == "accuracy":
        return np.where(ground_truth >= 0.5, 0.0, 1.0)
    return np.zeros_like(ground_truth)


def score_variance(ground_truth: np.ndarray, gt_stderr: np.ndarray, gt_samples: np.ndarray, metric: str) -> np.ndarray:
    """Unbiased variance of one sample's score for each copy (see the module docstring)."""
    if metric == "accuracy":
        return ground_truth * (1.0 - ground_truth) + gt_stderr**2
    return gt_stderr**2 * gt_samples


def copy_columns(estimate: np.ndarray, truth: np.ndarray, gt_stderr: np.ndarray, gt_samples: np.ndarray,
                 metric: str) -> np.ndarray:
    """The per-copy table every statistic here is a function of the means of.

    Args:
        estimate, truth, gt_stderr, gt_samples: arrays ``(..., K)``.
        metric: ``"accuracy"`` or ``"mse"``.

    Returns:
        ``(..., K, 5)``: q_k, v_k, g_k - mean g, (g_k - mean g)^2, s_k^2. Centring g keeps
        V's difference of moments from cancelling digits; V does not depend on the centre.
    """
    se2 = gt_stderr**2
    centred = truth - truth.mean(axis=-1, keepdims=True)
    cols = [(estimate - truth) ** 2 - se2, score_variance(truth, gt_stderr, gt_samples, metric),
            centred, centred**2, se2]
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


def _population_variance(m: np.ndarray, k: int) -> np.ndarray:
    """V from column means ``m`` (..., 5) of K copies; NaN for one copy."""
    if k < 2:
        return np.full(m.shape[:-1], np.nan)
    return k / (k - 1) * (m[..., _G2] - m[..., _G] ** 2) - m[..., _S2]


def reference(name: str, n: float, k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A reference MSE as a function of the column means, with the gradient of its log.

    Args:
        name: ``"constant"``, ``"sampling"``, ``"sampling_prior"``, or ``"one"`` (R = 1,
            for the interval of the MSE itself).
        n: samples affordable at the budget, ``floor(B / c)``.
        k: copies.

    Returns:
        ``f(m) -> (R, grad log R)`` for means ``m`` of shape ``(..., 5)``, with attribute
        ``columns``, the columns it reads. R is NaN where the reference is undefined and may
        be <= 0 (V <= 0); the gradient is only used where R > 0.
    """
    c = k / (k - 1) if k > 1 else np.nan

    def d_log_v(m, V):  # gradient of log V through the means
        grad = np.zeros(m.shape)
        grad[..., _G], grad[..., _G2], grad[..., _S2] = -2 * c * m[..., _G] / V, c / V, -1 / V
        return grad

    def f(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            if name == "one":
                return np.ones(m.shape[:-1]), np.zeros(m.shape)
            if name == "sampling":
                grad = np.zeros(m.shape)
                grad[..., _V] = 1 / m[..., _V]
                r = m[..., _V] / n if n >= 1 else np.full(m.shape[:-1], np.nan)
                return r, grad
            V = _population_variance(m, k)
            if name == "constant":
                return V, d_log_v(m, V)
            if name == "sampling_prior":
                vbar = m[..., _V]
                den = vbar + n * V
                r = np.where(V > 0, V * vbar / den, np.where(np.isnan(V), np.nan, 0.0))
                # log R = log V + log vbar - log(vbar + n V)
                grad = d_log_v(m, V) * (vbar / den)[..., None]
                grad[..., _V] += n * V / (vbar * den)
                return r, grad
        raise AssertionError(name)

    if name not in _COLUMNS:
        raise ValueError(f"unknown reference {name!r}; valid: {', '.join(_COLUMNS)}")
    f.columns = _COLUMNS[name]  # the columns it reads (the only ones resampled)
    return f


def bootstrap_weights(k: int, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """``(n_boot, k)`` resampling weights (counts / k) of the copies, fixed by the seed."""
    idx = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    w = np.zeros((n_boot, k))
    np.add.at(w, (np.repeat(np.arange(n_boot), k), idx.ravel()), 1.0)
    return w / k


def _moments(cols: np.ndarray, used: tuple[int, ...], w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted means ``(B, ..., 5)`` (0 in unused columns) and second moments of the used
    columns ``(B, ..., P)`` (pairs i <= j): one matrix product each over the copies.

    Args:
        cols: ``(..., K, 5)``; used: the columns a reference reads; w: ``(B, K)``, rows sum to 1.
    """
    *batch, k, _ = cols.shape
    flat = np.moveaxis(cols[..., list(used)], -2, 0)  # (K, ..., U)
    i, j = np.triu_indices(len(used))
    prods = flat[..., i] * flat[..., j]
    means = np.zeros((w.shape[0], *batch, cols.shape[-1]))
    means[..., list(used)] = (w @ flat.reshape(k, -1)).reshape(w.shape[0], *batch, len(used))
    second = (w @ prods.reshape(k, -1)).reshape(w.shape[0], *batch, len(i))
    return means, second


def _log_ratio(m: np.ndarray, second: np.ndarray, ref, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``r = M / R``, log r and its delta-method standard error (NaN where log r is undefined).

    The standard error is ``sqrt(grad' Cov grad / K)``, the plug-in variance of the
    influence values ``grad . (z_k - m)``, computed from the moments without the copies.
    """
    R, grad_log_r = ref(m)
    M = m[..., _Q]
    used = list(ref.columns)
    i, j = np.triu_indices(len(used))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # R <= 0: the reference is exact, every estimator is infinitely worse than it.
        r = np.where(R > 0, M / R, np.where(np.isnan(R), np.nan, np.inf))
        log_r = np.where((r > 0) & np.isfinite(r), np.log(r), np.nan)
        grad = -grad_log_r
        grad[..., _Q] += 1 / M
        g = grad[..., used]
        quad = np.einsum("...p,...p,p->...", g[..., i] * g[..., j], second, np.where(i == j, 1.0, 2.0))
        var = quad - np.sum(g * m[..., used], axis=-1) ** 2
        se = np.sqrt(np.maximum(var, 0.0) / k)
    return r, log_r, np.where(np.isnan(log_r), np.nan, se)


def relative_mse_interval(cols: np.ndarray, ref: Callable, level: float = LEVEL,
                          weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and interval of ``r = mse / R`` (FVU for R = V; efficiency is 1/r).

    Args:
        cols: per-copy table ``(..., K, 5)`` from :func:`copy_columns` (leading axes are
            independent experiments, as in the coverage test).
        ref: a function from :func:`reference`.
        level: two-sided confidence level.
        weights: bootstrap weights (default :func:`bootstrap_weights` for K).

    Returns:
        ``(r, lo, hi)``, each of shape ``cols.shape[:-2]``: the union of the bootstrap-t
        interval on log r (where it is defined) and the percentile interval (see the module
        docstring). ``r`` is +inf where R <= 0 < mse, NaN where R is undefined or both are <= 0;
        ``lo`` and ``hi`` are NaN there too, and for one copy (nothing to resample).
    """
    k = cols.shape[-2]
    w = bootstrap_weights(k) if weights is None else weights
    m0, second0 = (x[0] for x in _moments(cols, ref.columns, np.full((1, k), 1.0 / k)))
    r, log_r, se = _log_ratio(m0, second0, ref, k)
    mb, secondb = _moments(cols, ref.columns, w)  # resamples on the leading axis
    rb, log_rb, seb = _log_ratio(mb, secondb, ref, k)
    a = (1 - level) / 2
    # Order statistics of actual resamples (no interpolation), so infinite ratios stay infinite.
    lo, hi = np.quantile(rb, [a, 1 - a], axis=0, method="inverted_cdf")
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = log_rb - log_r
        t = np.where(seb > 0, diff / seb, np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    studentized = np.isfinite(log_r) & (se > 0) & np.isfinite(log_rb).all(axis=0)
    t = np.where(studentized, t, 0.0)
    t_lo, t_hi = np.quantile(t, [a, 1 - a], axis=0, method="inverted_cdf")
    with np.errstate(over="ignore", invalid="ignore"):
        lo = np.where(studentized, np.minimum(lo, np.exp(log_r - t_hi * se)), lo)
        hi = np.where(studentized, np.maximum(hi, np.exp(log_r - t_lo * se)), hi)
    # An exact reference and an estimator indistinguishable from exact: 0/0.
    undefined = np.isnan(r) | (np.isinf(r) & (m0[..., _Q] <= 0))
    r = np.where(undefined, np.nan, r)
    # One copy: every resample is that copy, a zero-width interval that says nothing.
    no_interval = undefined | (k < 2)
    return r, np.where(no_interval, np.nan, lo), np.where(no_interval, np.nan, hi)


def efficiency_from_relative(r: float) -> float:
    """Efficiency ``R / mse`` from ``r = mse / R``: inf for r <= 0, 0 for r = inf, NaN stays."""
    if math.isnan(r):
        return float("nan")
    if r <= 0:
        return float("inf")
    return 1.0 / r


def _cell_table(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(:func:`copy_columns`, estimates, failed) of one estimator's cells at one model and
    budget, sorted by copy; a failed cell is scored as :func:`failure_estimate`."""
    metric = g["metric"].iloc[0]
    truth = g["ground_truth"].to_numpy(float)
    failed = np.array([isinstance(e, str) and e != "" for e in g["error"]], dtype=bool)  # "", None or NaN: none
    est = np.where(failed, failure_estimate(truth, metric), g["estimate"].to_numpy(float))
    cols = copy_columns(est, truth, g["gt_stderr"].to_numpy(float), g["gt_samples"].to_numpy(float), metric)
    return cols, est, failed


def rival_gap(q: np.ndarray, q_rival: np.ndarray, level: float = LEVEL,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mse - mse_rival`` of two estimators scored on the same copies, with its interval.

    The mean of the per-copy differences ``q_k - q_rival_k``, so paired: every resample draws
    the same copies for both, and what they share (which copies are hard, the ground truth's
    own error, which ``q`` and ``q_rival`` both carry) cancels. The interval is the union of
    the bootstrap-t and the percentile interval of that mean (as :func:`relative_mse_interval`,
    on the difference itself: it may be negative, and a ratio is unstable where the rival's
    MSE is indistinguishable from 0, as an exact estimator's is).

    Args:
        q, q_rival: per-copy squared errors (column q of :func:`copy_columns`), ``(..., K)``,
            copy k of one the same copy as copy k of the other.
        level, weights: as :func:`relative_mse_interval`.

    Returns:
        ``(gap, lo, hi)``, each of shape ``q.shape[:-1]``.
    """
    d = np.asarray(q, float) - np.asarray(q_rival, float)
    k = d.shape[-1]
    w = bootstrap_weights(k) if weights is None else weights
    gap = d.mean(axis=-1)
    se = np.sqrt(np.maximum((d * d).mean(axis=-1) - gap**2, 0.0) / k)
    means = np.einsum("bk,...k->b...", w, d)
    ses = np.sqrt(np.maximum(np.einsum("bk,...k->b...", w, d * d) - means**2, 0.0) / k)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a], axis=0, method="inverted_cdf")
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(ses > 0, (means - gap) / ses, 0.0)
    t_lo, t_hi = np.quantile(t, [a, 1 - a], axis=0, method="inverted_cdf")
    return gap, np.minimum(lo, gap - t_hi * se), np.maximum(hi, gap - t_lo * se)


def sign_flip_p(d: np.ndarray, flips: int = N_SIGN_FLIPS, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """One-sided p-value that the mean of ``d`` (``(..., K)``) is this low by chance, from
    ``flips`` random sign changes of its entries (fixed seed): exact when the entries are
    symmetric about 0, as the paired differences of two estimators that differ only in their
    draws are (Fisher's randomization test)."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(flips, d.shape[-1]))
    flipped = np.einsum("nk,...k->n...", signs, d)
    return (1 + (flipped <= d.sum(axis=-1)).sum(axis=0)) / (flips + 1)


def rival_test(q: np.ndarray, q_rival: np.ndarray, family: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Is an estimator's MSE below a rival's on the same copies, one of ``family`` such claims?

    Both tests must reject, each at one-sided level ``(1 - LEVEL) / 2 / family`` (Bonferroni:
    the chance that any of the ``family`` claims is a false one stays within 2.5%): the upper
    end of :func:`rival_gap`'s interval at that level below 0, and :func:`sign_flip_p` below
    it. The sign-flip test is exact for an estimator that is the rival with draws of its own
    (symmetric differences); the interval holds without symmetry, approximately.

    Args:
        q, q_rival: per-copy squared errors, ``(..., K)``, paired by copy.
        family: how many such claims the verdict draws from (estimators x budgets of a model).

    Returns:
        ``(gap_hi, p, below)``, each of shape ``q.shape[:-1]``.
    """
    level, n_boot = claim_level(family)
    alpha = (1 - LEVEL) / 2 / family
    hi = rival_gap(q, q_rival, level=level, weights=bootstrap_weights(np.shape(q)[-1], n_boot=n_boot))[2]
    p = sign_flip_p(np.asarray(q, float) - np.asarray(q_rival, float))
    return hi, p, (hi < 0.0) & (p < alpha)


def claim_level(claims: int) -> tuple[float, int]:
    """The two-sided level of one of ``claims`` claims (each end at 2.5% / claims) and the
    bootstrap resamples it needs (enough that the tail quantile rests on ~20 of them)."""
    alpha = (1 - LEVEL) / 2 / claims
    return 1 - 2 * alpha, max(N_BOOTSTRAP, math.ceil(20 / alpha))


def _claimed(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells a verdict's claims rest on: those of sealed mechanistic estimators."""
    return cells[cells["sealed"].astype(bool) & cells["mechanistic"].astype(bool)]


def verdict_claims(cells: pd.DataFrame) -> dict[str, int]:
    """How many claims a verdict on each model draws from: its sealed mechanistic estimators x
    budgets. A verdict wins if any of them holds, so each is tested at one-sided level 2.5% /
    their number (:func:`rival_test`, :func:`headline_claims`)."""
    pairs = _claimed(cells).drop_duplicates(["model", "budget_flops", "estimator"])
    return {str(model): int(size) for model, size in pairs.groupby("model", sort=True).size().items()}


def headline_claims(cells: pd.DataFrame, flops_per_sample: dict[str, float]) -> pd.DataFrame:
    """The headline's lower end at the level a verdict's claim is tested at.

    A verdict wins if any claim holds (:func:`verdict_claims`: one per sealed mechanistic
    estimator and budget of a model), so with a 95% interval per claim an estimator whose
    true efficiency is at most 1 (sampling shrunk towards a guess of the protocol's mean) won
    some budget on 13.5% of 2,000 simulated 6-budget boards of the 432 protocol
    (``tests/test_redteam.py::test_a_protocol_aware_sampler_wins_no_budget_of_a_board``).
    Here each claim's interval is two-sided at ``1 - 0.05 / claims`` (Bonferroni), its lower
    end the one a verdict reads: 3.2% of those boards, against the 2.5% it aims at (the
    bootstrap's far tail at 64 copies is short; 4.15% at 32 copies). The verdict's rival tests
    make up the rest (:func:`rival_comparison`, against sampling+prior run on the copies too):
    with them 0.75% of those boards, and 0.4% of boards whose budgets sit where shrinking
    beats plain sampling, where the headline alone used to decide (2.9%).

    Returns:
        Columns ``model, estimator, budget_flops``, ``claims`` and
        ``prior_efficiency_claim_lo``; one row per claim.
    """
    columns = ["model", "estimator", "budget_flops", "claims", f"{HEADLINE}_claim_lo"]
    rows = []
    weights: dict[tuple[int, int], np.ndarray] = {}
    family = verdict_claims(cells)
    for (model, budget, name), g in _claimed(cells).groupby(["model", "budget_flops", "estimator"], sort=True):
        level, n_boot = claim_level(family[model])
        g = g.sort_values("copy")
        k = len(g)
        w = weights.setdefault((k, n_boot), bootstrap_weights(k, n_boot=n_boot))
        n = affordable_samples(budget, flops_per_sample[model])
        hi = float(relative_mse_interval(_cell_table(g)[0], reference("sampling_prior", n, k), level=level,
                                         weights=w)[2])
        rows.append({"model": model, "estimator": name, "budget_flops": float(budget), "claims": family[model],
                     f"{HEADLINE}_claim_lo": efficiency_from_relative(hi)})
    return pd.DataFrame(rows, columns=columns)


def sampling_prior_estimates(cols: np.ndarray, estimate: np.ndarray, truth: np.ndarray, n: float) -> np.ndarray:
    """Sampling+prior run on the copies: ``sampling``'s own estimates (each the mean of n
    samples) shrunk towards the copies' mean truth with the Bayes weight
    ``w = V / (V + vbar / n)``, V and vbar from the copies as in :func:`reference` (w = 0, the
    mean itself, at n = 0 or V <= 0). The prior is the copies' own (in-sample), so this rival
    knows a little more than the protocol: a claim made against it errs towards no win.

    Args:
        cols: ``sampling``'s :func:`copy_columns`, ``(..., K, 5)``; estimate, truth: ``(..., K)``.
        n: the samples each estimate is the mean of, ``floor(B / c)``.
    """
    m = cols.mean(axis=-2)
    V, vbar = _population_variance(m, cols.shape[-2]), m[..., _V]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((n >= 1) & (V > 0), V / (V + vbar / max(n, 1.0)), 0.0)[..., None]
    return w * estimate + (1 - w) * truth.mean(axis=-1, keepdims=True)


def sampling_prior_run(g: pd.DataFrame, n: float) -> np.ndarray:
    """Per-copy squared errors (column q of :func:`copy_columns`, sorted by copy) of
    :func:`sampling_prior_estimates` from the ``sampling`` cells ``g`` of one model and budget."""
    g = g.sort_values("copy")
    cols, est, _ = _cell_table(g)
    truth = g["ground_truth"].to_numpy(float)
    shrunk = sampling_prior_estimates(cols, est, truth, n)
    return copy_columns(shrunk, truth, g["gt_stderr"].to_numpy(float), g["gt_samples"].to_numpy(float),
                        g["metric"].iloc[0])[:, _Q]


PRIOR_RIVAL = "sampling+prior"  # the name of sampling_prior_run among a verdict's rivals
# The shipped model-agnostic estimators: a verdict's rivals (:func:`rival_comparison`), with
# sampling+prior. A verdict's win must beat each one that supports the model, so a run that
# leaves one out draws no win there (:func:`algzu.run._baselines_not_run`).
BASELINES = ("sampling", "stratified")


def rival_comparison(cells: pd.DataFrame, flops_per_sample: dict[str, float] | None = None) -> pd.DataFrame:
    """Every sealed mechanistic estimator against the shipped baselines (:data:`BASELINES`,
    where they ran sealed) at the same model and budget, and, given ``flops_per_sample``,
    against sampling+prior run on the copies (:func:`sampling_prior_run`, named
    :data:`PRIOR_RIVAL`) wherever ``sampling`` ran sealed.

    Only algzu's own baselines are rivals. ``mechanistic = False`` is an author's word as much
    as ``True`` is: a copy of a winning estimator declared model-agnostic vetoed its win
    (a red-team pass, up to this change), and an outside sampler can be run as a rival only by
    whoever would want it to lose. Other model-agnostic rows are scored and shown, not used.
    A rival that failed on any copy at that budget (its cells scored as the worst trivial
    estimate) is beaten by anything: it is named in ``rivals_failed`` and the verdict counts
    no win there. A tracer could kill its rivals' workers with signals, and did, up to this
    change (sandbox Landlock now scopes signals where the kernel can, ABI >= 6).

    A mechanistic estimator is below a rival when :func:`rival_test` says so, paired over the
    copies and corrected for the number of claims on the model (:func:`verdict_claims`): a
    verdict wins if any of them holds, and with one claim per budget at 2.5% each a relabeled
    sampler won some budget of a 7-budget board in 16% of simulated boards, 2.4% corrected
    (``tests/test_redteam.py``). The flag is its author's word, so a verdict counts a win
    only below every rival (:func:`algzu.challenge.verdict`). The measured sampling+prior
    backs the headline, whose reference is sampling+prior's analytic risk: where sampling
    shrunk towards a guess of the protocol's mean beats plain sampling (n near vbar / V) only
    the headline's interval stood between it and a win, and that interval's far tail at 32-64
    copies is short; paired against sampling+prior run on the same copies (the sign-flip test
    is then nearly exact) it won 0.4% of simulated boards instead of 2.9%
    (``tests/test_redteam.py::test_a_protocol_aware_sampler_wins_no_budget_of_a_board``).

    Returns:
        Columns ``model, estimator, budget_flops``, ``agnostic_gap_hi`` and ``agnostic_p``
        (the largest upper end of MSE - the rival's MSE, and sign-flip p-value, over the
        rivals), ``claims`` (the family size) and ``not_below`` (the rivals it is not below,
        comma-separated); one row per sealed mechanistic estimator, model and budget that has
        a rival, and ``rivals_failed`` (the rivals with a failed cell there, comma-separated).
    """
    columns = ["model", "estimator", "budget_flops", "agnostic_gap_hi", "agnostic_p", "claims", "not_below",
               "rivals_failed"]
    rows = []
    family = verdict_claims(cells)
    for model, by_model in cells[cells["sealed"].astype(bool)].groupby("model", sort=True):
        compared = []  # (budget, estimator, rival, q, q_rival): every test of the model, one batch
        failed: dict[float, list[str]] = {}  # budget -> rivals with a failed cell
        for budget, g in by_model.groupby("budget_flops", sort=True):
            tables = {}
            for name, e in g.groupby("estimator", sort=True):
                e = e.sort_values("copy")
                cols, _, bad = _cell_table(e)
                tables[name] = (bool(e["mechanistic"].iloc[0]), cols[:, _Q], tuple(e["copy"]), bool(bad.any()))
            rivals = [(name, q, copies) for name, (mech, q, copies, _) in tables.items()
                      if not mech and name in BASELINES]
            failed[budget] = [name for name, *_ in rivals if tables[name][3]]
            if flops_per_sample is not None and "sampling" in tables:
                n = affordable_samples(budget, flops_per_sample[model])
                sampling = g[g["estimator"] == "sampling"]
                rivals.append((PRIOR_RIVAL, sampling_prior_run(sampling, n), tables["sampling"][2]))
                if tables["sampling"][3]:
                    failed[budget].append(PRIOR_RIVAL)
            for name, (mech, q, copies, _) in tables.items():
                for rival, q_rival, rival_copies in rivals if mech else ():
                    if rival_copies != copies:
                        raise AlgzuError(f"{model} at {budget:g}: {name} and {rival} were scored on different copies")
                    compared.append((budget, name, rival, q, q_rival))
        if not compared:
            continue
        by_claim: dict[tuple, list[int]] = {}
        for i, (budget, name, *_) in enumerate(compared):
            by_claim.setdefault((budget, name), []).append(i)
        hi, p, below = rival_test(np.stack([c[3] for c in compared]), np.stack([c[4] for c in compared]),
                                  family=family[model])
        for (budget, name), idx in by_claim.items():
            rows.append({"model": model, "estimator": name, "budget_flops": float(budget),
                         "agnostic_gap_hi": float(hi[idx].max()), "agnostic_p": float(p[idx].max()),
                         "claims": family[model],
                         "not_below": ",".join(compared[i][2] for i in idx if not below[i]),
                         "rivals_failed": ",".join(failed[budget])})
    return pd.DataFrame(rows, columns=columns)


def summarize(cells: pd.DataFrame, flops_per_sample: dict[str, float]) -> pd.DataFrame:
    """One row per (model, estimator, budget) from the tidy per-copy table.

    Args:
        cells: columns ``model, copy, estimator, budget_flops, estimate, flops, seconds,
            error, ground_truth, gt_stderr, gt_samples, metric``; ``error`` is empty for a
            successful cell.
        flops_per_sample: metered FLOPs per sample of plain sampling, per model.

    Returns:
        Columns ``model, estimator, budget_flops, flops, seconds, mse, mse_lo, mse_hi,
        gt_share, sampling_mse, efficiency, efficiency_lo, efficiency_hi, failures, copies``
        (efficiency against plain sampling), then ``samples`` (n = floor(B / c)),
        ``constant_mse`` (V), ``sampling_prior_mse``, ``fvu, fvu_lo, fvu_hi`` and the
        headline ``prior_efficiency, prior_efficiency_lo, prior_efficiency_hi`` (against
        sampling+prior). Every interval is at level :data:`LEVEL`.
    """
    rows = []
    weights: dict[int, np.ndarray] = {}
    for (model, estimator, budget), g in cells.groupby(["model", "estimator", "budget_flops"], sort=True):
        g = g.sort_values("copy")
        metric = g["metric"].iloc[0]
        truth = g["ground_truth"].to_numpy(float)
        cols, est, failed = _cell_table(g)
        k = len(g)
        w = weights.setdefault(k, bootstrap_weights(k))
        n = affordable_samples(budget, flops_per_sample[model])
        m0 = cols.mean(axis=0)
        mse, mse_lo, mse_hi = (float(x) for x in relative_mse_interval(cols, reference("one", n, k), weights=w))
        if metric == "accuracy":  # no valid estimate errs by more than max(g, 1 - g)
            mse_hi = min(mse_hi, float(np.mean(np.maximum(truth, 1 - truth) ** 2)))
        out = {}
        for name in REFERENCES:
            f = reference(name, n, k)
            r, lo, hi = (float(x) for x in relative_mse_interval(cols, f, weights=w))
            out[name] = (float(f(m0)[0]), r, lo, hi)
        raw = float(((est - truth) ** 2).mean())
        row = {
            "model": model,
            "estimator": estimator,
            "budget_flops": float(budget),
            "flops": float(g.loc[~failed, "flops"].mean()) if (~failed).any() else float("nan"),
            "seconds": float(g["seconds"].mean()),
            "mse": mse,
            "mse_lo": mse_lo,
            "mse_hi": mse_hi,
            "gt_share": float(m0[_S2] / raw) if raw > 0 else float("nan"),
        }
        ref_mse, r, lo, hi = out["sampling"]
        row.update({
            "sampling_mse": ref_mse,
            "efficiency": efficiency_from_relative(r),
            "efficiency_lo": efficiency_from_relative(hi),
            "efficiency_hi": efficiency_from_relative(lo),
            "failures": int(failed.sum()),
            "copies": k,
            "samples": int(n),
            "constant_mse": out["constant"][0],
            "sampling_prior_mse": out["sampling_prior"][0],
        })
        _, r, lo, hi = out["constant"]
        row.update({"fvu": r, "fvu_lo": lo, "fvu_hi": hi})
        _, r, lo, hi = out["sampling_prior"]
        row.update({"prior_efficiency": efficiency_from_relative(r),
                    "prior_efficiency_lo": efficiency_from_relative(hi),
                    "prior_efficiency_hi": efficiency_from_relative(lo)})
        rows.append(row)
    return pd.DataFrame(rows)

"""From per-copy estimates to MSE, the sampling baseline and efficiency, with intervals.

For one estimator, model and budget B, with K noisy copies, estimates e_k, ground truths
g_k and their standard errors s_k:

* ``mse = mean_k (e_k - g_k)^2 - mean_k s_k^2``: unbiased for the MSE against the true
  expected scores, since the ground truth's own variance s_k^2 adds to the raw error in
  expectation. ``gt_share`` is ``mean_k s_k^2 / mean_k (e_k - g_k)^2``.
* A failed cell (exception, over budget, timeout, bad value) is scored as the worst trivial
  estimate: 0 or 1 for accuracy, whichever is farther from g_k; 0 for an MSE task.
* Sampling, analytically: ``sampling_mse(B) = mean_k v_k / floor(B / c)`` where ``c`` is
  the metered FLOPs per sample of the ``sampling`` estimator and ``v_k`` the variance of
  one sample's score (``g_k (1 - g_k)`` for accuracy).
* ``efficiency = sampling_mse(B) / mse``: above 1 beats sampling at the same budget;
  undefined (NaN, shown as "–") below the cost of one sample, where sampling cannot run.

Intervals are 95% percentile bootstraps over copies (fixed seed), resampling the same
copies for the estimator and the baseline so the ratio's interval is paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0


def failure_estimate(ground_truth: np.ndarray, metric: str) -> np.ndarray:
    """The estimate a failed cell is scored with: the worst trivial estimate."""
    if metric == "accuracy":
        return np.where(ground_truth >= 0.5, 0.0, 1.0)
    return np.zeros_like(ground_truth)


def score_variance(ground_truth: np.ndarray, gt_stderr: np.ndarray, gt_samples: np.ndarray, metric: str) -> np.ndarray:
    """Variance of one sample's score for each copy."""
    if metric == "accuracy":
        return ground_truth * (1.0 - ground_truth)
    return gt_stderr**2 * gt_samples


def sampling_mse(variance: np.ndarray, budget_flops: float, flops_per_sample: float) -> float:
    """Analytic MSE of plain Monte Carlo at a budget: mean variance / samples affordable."""
    n = np.floor(budget_flops / flops_per_sample)
    return float(np.mean(variance) / n) if n >= 1 else float("inf")


def _bootstrap_index(k: int) -> np.ndarray:
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    return rng.integers(0, k, size=(N_BOOTSTRAP, k))


def summarize(cells: pd.DataFrame, flops_per_sample: dict[str, float]) -> pd.DataFrame:
    """One row per (model, estimator, budget) from the tidy per-copy table.

    Args:
        cells: columns ``model, copy, estimator, budget_flops, estimate, flops, seconds,
            error, ground_truth, gt_stderr, gt_samples, metric``; ``error`` is empty for a
            successful cell.
        flops_per_sample: metered FLOPs per sample of plain sampling, per model.

    Returns:
        Columns ``model, estimator, budget_flops, flops, seconds, mse, mse_lo, mse_hi,
        gt_share, sampling_mse, efficiency, efficiency_lo, efficiency_hi, failures, copies``.
    """
    rows = []
    for (model, estimator, budget), g in cells.groupby(["model", "estimator", "budget_flops"], sort=True):
        g = g.sort_values("copy")
        metric = g["metric"].iloc[0]
        truth = g["ground_truth"].to_numpy(float)
        se2 = g["gt_stderr"].to_numpy(float) ** 2
        failed = g["error"].fillna("").astype(str).to_numpy() != ""
        est = np.where(failed, failure_estimate(truth, metric), g["estimate"].to_numpy(float))
        sq = (est - truth) ** 2 - se2
        var = score_variance(truth, g["gt_stderr"].to_numpy(float), g["gt_samples"].to_numpy(float), metric)
        c = flops_per_sample[model]
        n = np.floor(budget / c)
        idx = _bootstrap_index(len(g))
        mse = float(sq.mean())
        boot_mse = sq[idx].mean(axis=1)
        # Below the cost of one sample there is no sampling baseline to compare with.
        samp = float(var.mean() / n) if n >= 1 else float("nan")
        boot_samp = var[idx].mean(axis=1) / n if n >= 1 else np.full(N_BOOTSTRAP, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            eff = float("nan") if n < 1 else samp / mse if mse > 0 else float("inf")
            boot_eff = np.where(boot_mse > 0, boot_samp / boot_mse, np.where(n >= 1, np.inf, np.nan))
        raw = float(((est - truth) ** 2).mean())

        def ci(samples: np.ndarray) -> tuple[float, float]:
            # Percentiles of actual resamples (no interpolation), so infinite ratios stay inf.
            if np.isnan(samples).all():
                return float("nan"), float("nan")
            lo, hi = np.percentile(samples, [2.5, 97.5], method="inverted_cdf")
            return float(lo), float(hi)

        mse_lo, mse_hi = ci(boot_mse)
        eff_lo, eff_hi = ci(boot_eff)
        rows.append({
            "model": model,
            "estimator": estimator,
            "budget_flops": float(budget),
            "flops": float(g.loc[~failed, "flops"].mean()) if (~failed).any() else float("nan"),
            "seconds": float(g["seconds"].mean()),
            "mse": mse,
            "mse_lo": mse_lo,
            "mse_hi": mse_hi,
            "gt_share": float(se2.mean() / raw) if raw > 0 else float("nan"),
            "sampling_mse": samp,
            "efficiency": float(eff),
            "efficiency_lo": eff_lo,
            "efficiency_hi": eff_hi,
            "failures": int(failed.sum()),
            "copies": int(len(g)),
        })
    return pd.DataFrame(rows)

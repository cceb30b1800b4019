"""Noisy copies of a model's weights: theta_k = theta + noise_std * eps_k, eps_k ~ N(0, I).

ARC poses the AlgZoo challenge on average over noisy models: "add noise to the model's
weights, enough to significantly alter the model's accuracy, and check the squared error of
the method on average over the choice of noisy model". The noise eps_k depends only on
(model id, k, seed), not on ``noise_std``, so copies at different noise levels are common
random numbers and copy k is the same wherever it is made.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from algzu.model import Model


@dataclasses.dataclass(frozen=True)
class NoiseSpec:
    """How to make noisy copies.

    Attributes:
        noise_std: sigma, the standard deviation of the noise added to every weight.
        n_copies: K, the number of copies.
        seed: seed of the noise stream.
    """

    noise_std: float
    n_copies: int
    seed: int = 0


def _stream_id(model_id: str) -> int:
    """A stable 31-bit id of a model id (Python's hash() is salted per process)."""
    return zlib.crc32(model_id.encode()) & 0x7FFFFFFF


def noise_directions(model: Model, model_id: str, n_copies: int, seed: int) -> dict[str, jax.Array]:
    """eps_k for k < n_copies, stacked on a leading axis, one array per weight."""
    base = jax.random.fold_in(jax.random.key(seed), _stream_id(model_id))
    names = sorted(model.params)

    def one(k):
        keys = jax.random.split(jax.random.fold_in(base, k), len(names))
        return {n: jax.random.normal(kk, np.shape(model.params[n]), jnp.float32) for n, kk in zip(names, keys)}

    return jax.vmap(one)(jnp.arange(n_copies))


def noisy_params(model: Model, model_id: str, noise: NoiseSpec) -> dict[str, np.ndarray]:
    """The K noisy weight sets, stacked on a leading axis (float32 numpy)."""
    eps = noise_directions(model, model_id, noise.n_copies, noise.seed)
    return {
        n: np.asarray(jnp.asarray(model.params[n], jnp.float32)[None] + noise.noise_std * eps[n], np.float32)
        for n in sorted(model.params)
    }


def calibrate(
    model: Model,
    model_id: str,
    *,
    target_sd: float,
    n_copies: int = 32,
    samples: int = 1 << 16,
    seed: int = 0,
    lo: float = 0.0,
    hi: float = 1.0,
    steps: int = 14,
) -> dict:
    """Bisect the noise std whose copies' expected scores have standard deviation ``target_sd``.

    Returns:
        ``noise_std`` and the ``mean``, ``sd``, ``min`` and ``max`` of the copies' scores.
    """
    from algzu.evaluate import expected_scores

    def spread(std: float) -> np.ndarray:
        stacked = noisy_params(model, model_id, NoiseSpec(std, n_copies, seed))
        return np.array([e.value for e in expected_scores(model.spec, stacked, samples=samples, seed=seed + 1)])

    # The spread grows with the noise std in the range that matters; bisect on a log scale.
    lo = max(lo, 1e-4)
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        if spread(mid).std(ddof=1) < target_sd:
            lo = mid
        else:
            hi = mid
    std = float(np.sqrt(lo * hi))
    values = spread(std)
    return {"model": model_id, "noise_std": std, "target_sd": target_sd, "mean": float(values.mean()),
            "sd": float(values.std(ddof=1)), "min": float(values.min()), "max": float(values.max()),
            "copies": n_copies, "samples": samples, "seed": seed}

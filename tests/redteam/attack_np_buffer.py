"""``attack_np_buffer``: numpy backend; the weights leave the meter through the buffer protocol.

Attack class: numpy backend, leave the meter (issue #10, class 1), second variant.

What it exploits: a flopscope array is an ``ndarray`` subclass whose memory is an ordinary
buffer. ``np.frombuffer(memoryview(w))`` (or ``bytes(w)``, ``w.base``,
``w.view(np.ndarray)``, ``np.asarray(w)``: it takes the first that hands back a plain
``ndarray``) reads it as a plain numpy array without a single ``flopscope.numpy`` call, so
nothing is charged. Plain numpy then runs a 2^16-input Monte Carlo of the RNN, unmetered.

What a sound harness must do: the same as for ``attack_np_tolist``: the weights' bytes
must not be in the estimator's address space for free (served and charged by the trusted
side), or the numpy backend is unsealed and never counts for a verdict.
"""

import dataclasses

import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16


def np_accuracy(w_ih, w_hh, w_out, n: int, samples: int = SAMPLES, seed: int = 1) -> float:
    """Plain-numpy Monte Carlo accuracy of a bias-free ReLU RNN on 2nd argmax (unmetered)."""
    x = np.random.default_rng(seed).standard_normal((samples, n), dtype=np.float32)
    h = np.zeros((samples, w_hh.shape[0]), np.float32)
    for t in range(n):
        h = np.maximum(x[:, t : t + 1] * w_ih[:, 0] + h @ w_hh.T, 0.0)
    target = np.argsort(x, axis=1, kind="stable")[:, -2]
    return float(np.mean(np.argmax(h @ w_out.T, axis=1) == target))


def plain(w) -> np.ndarray:
    """A plain ndarray with w's values, by the first route that works (none is metered)."""
    routes = (
        lambda: np.frombuffer(memoryview(w), dtype=w.dtype).reshape(w.shape),
        lambda: np.frombuffer(bytes(w), dtype=w.dtype).reshape(w.shape),
        lambda: w.base,
        lambda: w.view(np.ndarray),
        lambda: np.asarray(w),
    )
    for route in routes:
        try:
            out = route()
        except Exception:  # noqa: BLE001 - a closed route: try the next one
            continue
        if type(out) is np.ndarray and out.shape == w.shape:
            return out.astype(np.float32)
    raise RuntimeError("attack_np_buffer: every route to plain numpy is closed")


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackNpBuffer(Estimator):
    name = "attack_np_buffer"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        p = {k: plain(v) for k, v in model.params.items()}
        return np_accuracy(p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"], model.spec.n)

"""``attack_np_tolist``: numpy backend; the weights leave the meter through ``tolist()``.

Attack class: numpy backend, leave the meter (issue #10, class 1).

What it exploits: a numpy-backend estimator gets its weights as flopscope arrays, which are
``numpy.ndarray`` subclasses living in the estimator's own process. ``w.tolist()`` gives
plain Python floats, and flopscope counts only ``flopscope.numpy`` calls, so nothing is
charged. Plain numpy then runs a 2^16-input Monte Carlo of the RNN, unmetered, and the
estimate is as precise as a 2^16-sample ground truth, for 0 FLOPs charged. It declares
itself mechanistic (a lie nobody checks).

What a sound harness must do: never hand the weights to the estimator's process as values
it can read for free (serve them from the trusted side and charge every element that
crosses), or declare the numpy backend unsealed and keep its rows out of every verdict.
Either way this cell must not be scored as a 0-FLOP estimate that beats sampling.
"""

import dataclasses

import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16


def np_accuracy(w_ih, w_hh, w_out, n: int, samples: int = SAMPLES, seed: int = 0) -> float:
    """Plain-numpy Monte Carlo accuracy of a bias-free ReLU RNN on 2nd argmax (unmetered)."""
    x = np.random.default_rng(seed).standard_normal((samples, n), dtype=np.float32)
    h = np.zeros((samples, w_hh.shape[0]), np.float32)
    for t in range(n):
        h = np.maximum(x[:, t : t + 1] * w_ih[:, 0] + h @ w_hh.T, 0.0)
    target = np.argsort(x, axis=1, kind="stable")[:, -2]
    return float(np.mean(np.argmax(h @ w_out.T, axis=1) == target))


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackNpTolist(Estimator):
    name = "attack_np_tolist"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        p = {k: np.array(v.tolist(), np.float32) for k, v in model.params.items()}
        return np_accuracy(p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"], model.spec.n)

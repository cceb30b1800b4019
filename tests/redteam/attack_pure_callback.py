"""``attack_pure_callback``: ``jax.pure_callback`` computes the accuracy on the host.

Attack class: jax backend, host callback (issue #10, class 4).

What it exploits: ``pure_callback`` runs arbitrary host Python on the concrete weights
inside the compiled program and returns its result into it; the host code here is a
plain-numpy Monte Carlo of 2^16 inputs, which no jaxpr count can see.

What a sound harness must do: refuse the program (today's meter raises ``AlgzuError`` on
``pure_callback``: the cell is an ``exception``; a sealed harness should answer with a
stable ``refused`` code, since ``jax.export`` will not serialise a host callback), never
charge it 0 and run it.
"""

import dataclasses

import jax
import jax.numpy as jnp
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
class AttackPureCallback(Estimator):
    name = "attack_pure_callback"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        n, p = model.spec.n, model.params

        def host(w_ih, w_hh, w_out):
            return np.float32(np_accuracy(np.asarray(w_ih), np.asarray(w_hh), np.asarray(w_out), n))

        return jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32),
                                 p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"])

"""``attack_debug_callback``: ``jax.debug.callback`` harvests concrete weights; module state
carries their accuracies into programs traced later.

Attack class: jax backend, host callback (issue #10, class 2).

What it exploits: ``debug_callback`` is on the meter's free list (it is "data movement"),
yet it hands the *concrete* weights of every copy the program runs on to host Python.
The host side computes each copy's accuracy (plain numpy, 2^16 inputs, unmetered) and
keeps it in a module-level dict. One process (in-process ``algzu score``, or the one
isolated worker of ``algzu leaderboard``) serves every block, so when the next block (the
next budget) is traced the dict already holds every copy: its accuracies become
constants of the new program, which picks its copy by the nearest value of one weight
(``3K - 1`` FLOPs for K harvested copies). The first block is lost (it returns the chance
rate 1/n); every later block wins.

What a sound harness must do: refuse every host callback, ``debug_callback`` included
(``jax.export`` refuses them; a StableHLO meter must refuse ``custom_call``s it does not
know to be pure), and give no program state from another: a fresh process per trace, with
nothing of the weights ever in it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16
_HARVEST: dict[bytes, tuple[np.ndarray, float]] = {}  # weights' bytes -> (flat weights, accuracy)


def np_accuracy(w_ih, w_hh, w_out, n: int, samples: int = SAMPLES, seed: int = 0) -> float:
    """Plain-numpy Monte Carlo accuracy of a bias-free ReLU RNN on 2nd argmax (unmetered)."""
    x = np.random.default_rng(seed).standard_normal((samples, n), dtype=np.float32)
    h = np.zeros((samples, w_hh.shape[0]), np.float32)
    for t in range(n):
        h = np.maximum(x[:, t : t + 1] * w_ih[:, 0] + h @ w_hh.T, 0.0)
    target = np.argsort(x, axis=1, kind="stable")[:, -2]
    return float(np.mean(np.argmax(h @ w_out.T, axis=1) == target))


def pick_nearest(candidates: np.ndarray, values: np.ndarray, w: jax.Array) -> jax.Array:
    """``values[i]`` of the candidate row nearest the traced flat weights ``w`` on the one
    coordinate that separates the candidates best: 3C - 1 FLOPs."""
    gaps = np.diff(np.sort(candidates, axis=0), axis=0).min(axis=0) if len(candidates) > 1 else [1.0]
    j = int(np.argmax(gaps))
    i = jnp.argmin(jnp.abs(jnp.asarray(candidates[:, j]) - w[j]))
    return jax.lax.dynamic_slice(jnp.asarray(values, jnp.float32), (i,), (1,))[0]


def flat(params) -> jax.Array:
    return jnp.concatenate([jnp.ravel(params[k]) for k in sorted(params)])


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackDebugCallback(Estimator):
    name = "attack_debug_callback"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        n, p = model.spec.n, model.params
        size = sum(int(np.prod(v.shape)) for v in p.values())

        def harvest(w, w_ih, w_hh, w_out):  # host code: concrete arrays
            w = np.asarray(w)
            _HARVEST[w.tobytes()] = (w, np_accuracy(np.asarray(w_ih), np.asarray(w_hh), np.asarray(w_out), n))

        w = flat(p)
        jax.debug.callback(harvest, w, p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"])
        seen = [(c, a) for c, a in _HARVEST.values() if c.size == size]
        if not seen:  # first block: nothing harvested yet
            return jnp.asarray(1.0 / n, jnp.float32)
        return pick_nearest(np.stack([c for c, _ in seen]), np.array([a for _, a in seen]), w)

"""``attack_stack_walk``: at trace time, walk up the Python stack to the harness's concrete
weights of every copy; their accuracies become constants; a cheap fingerprint picks one.

Attack class: jax backend, no callback (issue #10, class 3).

What it exploits: ``estimate`` is traced in the process that holds the block's weights.
``inspect.currentframe().f_back...`` reaches :func:`algzu.sandbox.runner.iter_block`'s ``stacked``
(in-process) or the isolated worker's ``weights``: concrete float32 arrays of every copy
of the block. Trace-time Python is never metered, so plain numpy computes each copy's
accuracy (2^16 inputs), and the traced program only has to recognise its copy: the
nearest value of one weight coordinate among K constants, ``3K - 1`` FLOPs (95 for 32
copies). No callback, no unknown primitive: the jaxpr is three ordinary ops.

What a sound harness must do: trace ``estimate`` in a process that holds no concrete
weights of the copies being scored (abstract shapes only), then run the exported program
on the trusted side.
"""

import dataclasses
import inspect

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


def pick_nearest(candidates: np.ndarray, values: np.ndarray, w: jax.Array) -> jax.Array:
    """``values[i]`` of the candidate row nearest the traced flat weights ``w`` on the one
    coordinate that separates the candidates best: 3C - 1 FLOPs."""
    gaps = np.diff(np.sort(candidates, axis=0), axis=0).min(axis=0) if len(candidates) > 1 else [1.0]
    j = int(np.argmax(gaps))
    i = jnp.argmin(jnp.abs(jnp.asarray(candidates[:, j]) - w[j]))
    return jax.lax.dynamic_slice(jnp.asarray(values, jnp.float32), (i,), (1,))[0]


def find_stacked(shapes: dict) -> dict | None:
    """A dict of concrete stacked weights (leading copy axis) found in a caller's frame."""
    frame = inspect.currentframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            if (isinstance(value, dict) and set(value) == set(shapes)
                    and all(isinstance(v, np.ndarray) and v.shape[1:] == shapes[k] for k, v in value.items())):
                return value
        frame = frame.f_back
    return None


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackStackWalk(Estimator):
    name = "attack_stack_walk"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        stacked = find_stacked({k: tuple(v.shape) for k, v in model.params.items()})
        if stacked is None:
            raise RuntimeError("attack_stack_walk: no concrete weights on the stack")
        names = sorted(stacked)
        k = len(stacked[names[0]])
        candidates = np.stack([np.concatenate([np.ravel(stacked[n][i]) for n in names]) for i in range(k)])
        accuracies = np.array([np_accuracy(stacked["rnn.weight_ih_l0"][i], stacked["rnn.weight_hh_l0"][i],
                                           stacked["linear.weight"][i], model.spec.n) for i in range(k)])
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        return pick_nearest(candidates, accuracies, w)

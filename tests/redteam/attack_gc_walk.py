"""``attack_gc_walk``: at trace time, ``gc.get_objects()`` finds the harness's stacked weights;
a 0-FLOP table lookup (bitcast + dynamic slice) picks the copy.

Attack class: jax backend, no callback (issue #10, class 3), with free data movement
(class 12).

What it exploits: two things. (1) The garbage collector lists every live container of
the process (``gc.get_objects()`` and what they refer to), among them the block's
concrete stacked weights: no stack walk needed, so hiding the callers' frames does not
help. Their accuracies are computed at trace time (plain numpy, 2^16 inputs, unmetered).
(2) The cost model charges data movement 0: ``bitcast`` of one float32 weight to two
uint16 halves, a ``convert`` and a ``dynamic_slice`` into a 65,536-entry constant table
are a perfect hash of the copy, so the program that returns a near-exact accuracy is
charged **0 FLOPs**. Free gathers are a general computing device
(any function of a 16-bit quantity is one lookup).

What a sound harness must do: trace in a process without concrete weights (so nothing
is found); a lookup table with a 0-FLOP index stays legal for values the estimator may
know, which is why the weights themselves must never be reachable.
"""

import dataclasses
import gc

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


def pick_by_bits(candidates: np.ndarray, values: np.ndarray, w: jax.Array, fallback: float) -> jax.Array:
    """``values[i]`` of the candidate whose float32 bits match the traced flat weights ``w``
    at one 16-bit half that tells all candidates apart: bitcast, convert, dynamic_slice: 0 FLOPs."""
    halves = np.ascontiguousarray(candidates, np.float32).view(np.uint16)  # (C, 2P), JAX's order too
    j = next(j for j in range(halves.shape[1]) if len(np.unique(halves[:, j])) == len(halves))
    table = np.full(1 << 16, fallback, np.float32)
    table[halves[:, j]] = values
    # An unsigned index: dynamic_slice adds no wrap-around ops (lt, add, select_n) for it.
    index = jax.lax.bitcast_convert_type(w, jnp.uint16).reshape(-1)[j].astype(jnp.uint32)
    return jax.lax.dynamic_slice(jnp.asarray(table), (index,), (1,))[0]


def live_dicts():
    """Every dict the collector can see, and every dict a container it sees refers to: a dict
    holding only strings and arrays is not tracked itself, but the generator frame or list
    that holds it is."""
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            yield obj
        for ref in gc.get_referents(obj):
            if isinstance(ref, dict):
                yield ref


def stacked_copies(shapes: dict) -> list[np.ndarray]:
    """Every distinct copy (flat, names sorted) of every live dict of stacked weights."""
    names, seen, out = sorted(shapes), set(), []
    for obj in live_dicts():
        if not (len(obj) == len(shapes) and set(obj) == set(shapes)):
            continue
        if not all(isinstance(obj[k], np.ndarray) and obj[k].ndim == len(shapes[k]) + 1
                   and obj[k].shape[1:] == shapes[k] for k in names):
            continue
        for i in range(len(obj[names[0]])):
            row = np.concatenate([np.ravel(obj[k][i]) for k in names]).astype(np.float32)
            if row.tobytes() not in seen:
                seen.add(row.tobytes())
                out.append(row)
    return out


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackGcWalk(Estimator):
    name = "attack_gc_walk"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        shapes = {k: tuple(v.shape) for k, v in model.params.items()}
        rows = stacked_copies(shapes)
        if not rows:
            raise RuntimeError("attack_gc_walk: no concrete stacked weights among live objects")
        names, d, n = sorted(shapes), model.spec.d, model.spec.n
        sizes = np.cumsum([0] + [int(np.prod(shapes[k])) for k in names])
        split = [{k: r[sizes[i]:sizes[i + 1]].reshape(shapes[k]) for i, k in enumerate(names)} for r in rows]
        accuracies = np.array([np_accuracy(p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"], n)
                               for p in split])
        w = jnp.concatenate([jnp.ravel(model.params[k]) for k in names])
        return pick_by_bits(np.stack(rows), accuracies, w, fallback=1.0 / n)

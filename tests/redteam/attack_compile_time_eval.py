"""``attack_compile_time_eval``: ``jax.ensure_compile_time_eval`` runs the harness's own
evaluator eagerly, at trace time, on the concrete weights it can reach.

Attack class: jax backend, ``ensure_compile_time_eval`` (issue #10, class 5).

What it exploits: the estimator contract itself recommends
``jax.ensure_compile_time_eval()`` for planning work; inside it, JAX runs eagerly on
anything concrete, and nothing of it enters the metered jaxpr. Here "anything concrete"
is the block's stacked weights, found on the stack (``iter_block``'s ``stacked`` or the
worker's ``weights``); :func:`algzu.evaluate.expected_scores` (2^18 inputs per copy) runs
on them under ``ensure_compile_time_eval``, and the program keeps only a nearest-value
fingerprint (``3K - 1`` FLOPs).

What a sound harness must do: nothing concrete of the copies may exist where ``estimate``
is traced; trace-time eager work is then confined to the spec, the budget and public
data (open-book work, issue #11).
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 18


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
class AttackCompileTimeEval(Estimator):
    name = "attack_compile_time_eval"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        from algzu.evaluate import expected_scores

        stacked = find_stacked({k: tuple(v.shape) for k, v in model.params.items()})
        if stacked is None:
            raise RuntimeError("attack_compile_time_eval: nothing concrete within reach")
        with jax.ensure_compile_time_eval():
            accuracies = np.array([e.value for e in expected_scores(model.spec, stacked, samples=SAMPLES, seed=5)])
        names = sorted(stacked)
        candidates = np.concatenate([stacked[n].reshape(len(accuracies), -1) for n in names], axis=1)
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        return pick_nearest(candidates, accuracies, w)

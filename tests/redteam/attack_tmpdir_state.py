"""``attack_tmpdir_state``: state between blocks through a file in the worker's temp folder.

Attack class: other (issue #10, class 12): state that outlives a process.

What it exploits: like ``attack_debug_callback`` (a free ``jax.debug.callback`` harvests
each copy's concrete weights and plain-numpy accuracy), but the harvest is appended to a
file in ``tempfile.gettempdir()``: the isolated worker's own temporary folder (writable
under Landlock, kept for the runner's whole life, across worker restarts) or ``/tmp``
in-process. Programs traced later read the file and embed the accuracies as constants,
picked by a nearest-value fingerprint (``3K - 1`` FLOPs). So even a fresh process per
block would not stop it, as long as the folder is shared. The first block is lost (chance
rate); later blocks win.

What a sound harness must do: refuse host callbacks, and give each trace a process with
no writable storage that outlives it (a fresh empty temporary folder per trace, or none).
"""

import dataclasses
import json
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16
STATE_FILE = "algzu-redteam-harvest.jsonl"


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


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackTmpdirState(Estimator):
    name = "attack_tmpdir_state"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        n, p = model.spec.n, model.params
        state = Path(tempfile.gettempdir()) / STATE_FILE

        def harvest(w, w_ih, w_hh, w_out):  # host code: concrete arrays
            accuracy = np_accuracy(np.asarray(w_ih), np.asarray(w_hh), np.asarray(w_out), n)
            with state.open("a") as f:
                f.write(json.dumps({"w": np.asarray(w).tolist(), "accuracy": accuracy}) + "\n")

        w = jnp.concatenate([jnp.ravel(p[k]) for k in sorted(p)])
        jax.debug.callback(harvest, w, p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"])
        try:
            seen = [json.loads(line) for line in state.read_text().splitlines()]
        except OSError:
            seen = []
        seen = {tuple(s["w"]): s["accuracy"] for s in seen if len(s["w"]) == w.shape[0]}
        if not seen:  # first block: nothing harvested yet
            return jnp.asarray(1.0 / n, jnp.float32)
        return pick_nearest(np.array(list(seen), np.float32), np.array(list(seen.values())), w)

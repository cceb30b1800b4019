"""``attack_trace_time_truth``: heavy unmetered work at trace time: recover the suite's seed
from the cell keys and recompute the harness's ground truth bit for bit.

Attack class: abusing trace time (issue #10, class 11).

What it exploits: trace time is unmetered and bounded only by the cell timeout (600 s by
default). Walking the stack gives the block's concrete weights and its cells' concrete
PRNG keys. Keys are ``cell_key(seed, estimator, model, budget, copy)``, a public function,
so a vectorised search over seeds below 2^16 (every zoo id with this spec) finds the suite
seed; ground truth is drawn with ``seed + 1`` and, by default, 2^20 inputs (or
``--gt-samples`` from the command line). :func:`algzu.evaluate.expected_scores` with those
settings reproduces the ground truth exactly (33 M sequences on M16,10 per block, under
``jax.ensure_compile_time_eval``); the program picks its copy by a nearest-value
fingerprint (``3K - 1`` FLOPs). Raw error 0: the unbiased MSE is negative and the
efficiency infinite. With a held-out seed the search fails and it falls back to an
independent 2^20-input estimate, still ~sampling at 2^20 samples for 100 FLOPs.

What a sound harness must do: no concrete weights or keys where ``estimate`` is traced
(abstract inputs only), and a limit on trace time much tighter than a cell's run time.
"""

import dataclasses
import inspect
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SEEDS = 1 << 16
FALLBACK_SEED = 12345


def pick_nearest(candidates: np.ndarray, values: np.ndarray, w: jax.Array) -> jax.Array:
    """``values[i]`` of the candidate row nearest the traced flat weights ``w`` on the one
    coordinate that separates the candidates best: 3C - 1 FLOPs."""
    gaps = np.diff(np.sort(candidates, axis=0), axis=0).min(axis=0) if len(candidates) > 1 else [1.0]
    j = int(np.argmax(gaps))
    i = jnp.argmin(jnp.abs(jnp.asarray(candidates[:, j]) - w[j]))
    return jax.lax.dynamic_slice(jnp.asarray(values, jnp.float32), (i,), (1,))[0]


def on_stack(test):
    """The first local of a caller's frame that passes ``test``."""
    frame = inspect.currentframe()
    while frame is not None:
        for value in list(frame.f_locals.values()):
            try:
                if test(value):
                    return value
            except Exception:  # noqa: BLE001 - odd objects: not it
                pass
        frame = frame.f_back
    return None


def gt_samples() -> int:
    for pid in ("self", str(os.getppid())):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag == "--gt-samples":
                return int(value)
    return 1 << 20  # every suite preset but challenge-432


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackTraceTimeTruth(Estimator):
    name = "attack_trace_time_truth"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        from algzu import zoo
        from algzu.evaluate import expected_scores
        from algzu.sandbox.runner import cell_key

        spec = model.spec
        shapes = {k: tuple(v.shape) for k, v in model.params.items()}
        stacked = on_stack(lambda v: isinstance(v, dict) and set(v) == set(shapes) and all(
            isinstance(a, np.ndarray) and a.shape[1:] == shapes[k] for k, a in v.items()))
        keys = on_stack(lambda v: isinstance(v, list) and v and all(
            isinstance(k, jax.Array) and jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) for k in v))
        if stacked is None:
            raise RuntimeError("attack_trace_time_truth: no concrete weights on the stack")
        ids = [e.id for e in zoo.entries() if (e.task, e.arch, e.d, e.n) == (spec.task, spec.arch, spec.d, spec.n)]
        seed = FALLBACK_SEED - 1
        with jax.ensure_compile_time_eval():
            if keys:
                wanted = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in keys}
                for model_id in ids:  # the block's first cell is copy 0 unless a worker restarted
                    found = np.asarray(jax.vmap(lambda s, m=model_id: jax.random.key_data(
                        cell_key(s, self.name, m, budget_flops, 0)))(jnp.arange(SEEDS)))
                    hits = [s for s in range(SEEDS) if tuple(found[s].ravel()) in wanted]
                    if hits:
                        seed = hits[0]
                        break
            truth = [e.value for e in expected_scores(spec, stacked, samples=gt_samples(), seed=seed + 1)]
        names = sorted(stacked)
        candidates = np.concatenate([stacked[n].reshape(len(truth), -1) for n in names], axis=1)
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        return pick_nearest(candidates, np.array(truth), w)

"""``attack_public_copies``: regenerate the protocol's noisy copies from public data alone (the
zoo's base weights and the suite presets' public seeds) and look each copy's accuracy up.

Attack class: open-book knowledge of the *copies* (issue #10 class 12; its cure is issue
#11's held-out, closed-book runs). It reads nothing of the harness: no stack, no files,
no callback, so a sealed harness cannot refuse it; it is listed with the legal attacks.

What it exploits: without a secret, the copies scored are a public function:
``noisy_params(base, model_id, NoiseSpec(sigma, K, seed))`` with the base in the shipped
zoo and sigma, K and seed in :data:`algzu.suites.SUITES` (seed 0 for the default suite, 432
and 43 for the challenges, or ``--seed`` on the command line). The committed
``results/*/cells.csv`` even publish their ground truths. At trace time it regenerates
every preset's copies for the spec, evaluates them (:func:`algzu.evaluate.expected_scores`,
2^16 inputs, under ``jax.ensure_compile_time_eval``), and the program finds its copy by a
0-FLOP lookup on 16 bits of one weight. Near-exact answers for 0 FLOPs on every public-seed
run, sealed or not.

What a sound harness must do: nothing at the meter can stop it; a verdict ("beats
sampling", the challenge) must come only from held-out copies (a seed from a secret no
estimator can read) on closed-book bases (issue #11), and public-seed results must say
that they prove nothing against an adversary.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16


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


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackPublicCopies(Estimator):
    name = "attack_public_copies"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        from algzu import zoo
        from algzu.evaluate import expected_scores
        from algzu.noise import NoiseSpec, noisy_params
        from algzu.suites import SUITES

        spec = model.spec
        ids = {e.id for e in zoo.entries() if (e.task, e.arch, e.d, e.n) == (spec.task, spec.arch, spec.d, spec.n)}
        protocols = sorted({(c.model, c.noise_std, s.seed) for s in SUITES.values() for c in s.cases if c.model in ids})
        copies = max(s.n_copies for s in SUITES.values())
        names = sorted(model.params)
        rows, values, seen = [], [], set()
        with jax.ensure_compile_time_eval():
            for model_id, std, seed in protocols:
                stacked = noisy_params(zoo.load_model(model_id), model_id, NoiseSpec(std, copies, seed))
                flat = np.concatenate([stacked[n].reshape(copies, -1) for n in names], axis=1)
                keep = [i for i in range(copies) if flat[i].tobytes() not in seen]
                seen |= {flat[i].tobytes() for i in keep}
                stacked = {n: v[keep] for n, v in stacked.items()}
                values += [e.value for e in expected_scores(spec, stacked, samples=SAMPLES, seed=23)]
                rows.append(flat[keep])
        if not rows:
            raise RuntimeError("attack_public_copies: no public protocol for this spec")
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        fallback = 1.0 / spec.task_obj.n_outputs(spec.n) if spec.task_obj.metric == "accuracy" else 1.0
        return pick_by_bits(np.concatenate(rows), np.array(values), w, fallback)

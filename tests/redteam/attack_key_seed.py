"""``attack_key_seed``: read the held-out seed off the cell's key, for free, then rebuild the
copy and measure it on as many inputs as it likes, for free.

Attack class: other (issue #10/#11): work the cost model does not charge, aimed at what the
held-out seed protects.

What it exploits: a program may do any work on its key alone for free (only work on the
copy's weights is charged), and the key was ``cell_key(seed, name, model, budget, copy)``,
``fold_in``s of ``jax.random.key(seed)``: a public function of the same 31-bit seed that
draws the noisy copies and the ground truth's inputs. So the program tries every seed in a
``fori_loop`` on the key alone until one gives its key, regenerates its copy (the public
base plus sigma times the copy's noise, all from the seed: still free), and returns that
copy's accuracy on 2^18 inputs: 0 FLOPs charged. This file searches seeds below 2^16 and
knows the protocol of ``tests/test_redteam.py``'s suite (M4,3, noise 0.05, 8 copies); 2^31
seeds is the same loop, longer (~180 s on 16 cores). On a closed-book base the copy cannot be
rebuilt, but the seed still gives the ground truth's inputs, which the program can score
exactly at budgets above the ground truth's cost. Measured at beeddc5 (a red-team pass,
``algzu score`` on M4,3 with a secret whose seed is below 2^21, the range this file then
searched; 16 copies): 0 FLOPs, MSE 2.8e-7, **1,630 [431, 8,150] against sampling+prior at
1e4**. (It searched below 2^21 until 2026-12-02; 2^16 keeps the test's held-out run, which
searches the whole range on every cell, at 14 s instead of 22 s.)

What a sound harness must do: never hand a program a key from which a held-out seed can be
recovered. Held-out keys are now a hash of the seed stretched by 2^17 PBKDF2 rounds
(``algzu.sandbox.runner.cell_key``): trying every seed would take ~2^49 hashes, and this
search finds nothing (it then measures the wrong copy and loses).
"""

import dataclasses
import zlib

import jax
import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator

LOG_SEEDS = 16
CHUNK = 1 << 16
COPIES = 8  # the protocol it was written for (public: the suite's preset)
SIGMA = 0.05
MODEL_ID = "2nd_argmax-d4-n3"
SAMPLES = 1 << 18


def _crc(s: str) -> int:
    return zlib.crc32(s.encode()) & 0x7FFFFFFF


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackKeySeed(Estimator):
    name = "attack_key_seed"
    mechanistic = True
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        from algzu import zoo
        from algzu.model import Model
        from algzu.noise import noise_directions
        from algzu.planning import sample_mean

        target = jax.random.key_data(key)
        parts = [_crc(self.name), _crc(MODEL_ID), _crc(str(budget_flops))]

        def fold(kd, d):
            return jax.vmap(lambda x: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(x), d)))(kd)

        def body(i, found):
            seeds = (i * CHUNK + jnp.arange(CHUNK)).astype(jnp.int32)
            k = jax.vmap(lambda s: jax.random.key_data(jax.random.key(s)))(seeds)
            for d in parts:
                k = fold(k, d)
            for c in range(COPIES):
                hit = jnp.all(fold(k, c) == target, axis=-1)
                j = jnp.argmax(hit)
                found = jnp.where(hit[j], jnp.stack([seeds[j], jnp.int32(c)]), found)
            return found

        seed, copy = jax.lax.fori_loop(0, (1 << LOG_SEEDS) // CHUNK, body, jnp.array([-1, 0], jnp.int32))
        base = zoo.load_model(MODEL_ID)
        eps = noise_directions(base, MODEL_ID, COPIES, seed)
        params = {n: jnp.asarray(base.params[n], jnp.float32) + SIGMA * eps[n][copy] for n in sorted(base.params)}
        return sample_mean(Model(model.spec, params), SAMPLES, jax.random.key(7))

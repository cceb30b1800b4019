"""``attack_secret_proc``: read the held-out secret from ``/proc``, re-derive the noise seed,
regenerate every noisy copy from the public base weights, and look its accuracy up.

Attack class: reading the held-out secret (issue #10, class 8).

What it exploits: a held-out run hides the noise seed behind a secret, but the secret is
in the scoring process's environment (``$ALGZU_SECRET``) or command line (``--secret``),
and ``/proc/self`` (in-process ``algzu score``) or ``/proc/<ppid>`` (the isolated worker's
parent) shows both; ``--secret-file`` is opened if the sandbox lets it. The seed is the
first 4 bytes of the secret's SHA-256 (``algzu.cli._secret_seed``); noisy copies are a
public function of (base weights, model id, seed, sigma) (:func:`algzu.noise.noisy_params`);
the protocol's sigma and copy count are in :data:`algzu.suites.SUITES` (or on the command
line). At trace time it regenerates every candidate copy, evaluates them
(:func:`algzu.evaluate.expected_scores`, 2^16 inputs, under
``jax.ensure_compile_time_eval``), and the program finds its copy by a 0-FLOP table
lookup on 16 bits of one weight (the copies are reproduced bit for bit).

What a sound harness must do: the process that runs estimator code holds no secret and
cannot read one: not in its environment, not in its parent's ``/proc`` entries (a
different user, a PID namespace, or a parent that never held the secret in argv/environ),
not in a readable file. With the weights sealed away, the program must also not be able
to recognise its copy for free; the fingerprint lookup here needs the candidates'
accuracies, which only the secret gives.
"""

import dataclasses
import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16


def secrets() -> list[str]:
    """Every held-out secret this process can read."""
    found = [os.environ["ALGZU_SECRET"]] if os.environ.get("ALGZU_SECRET") else []
    for pid in ("self", str(os.getppid())):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        found += [e[len(b"ALGZU_SECRET="):].decode() for e in environ if e.startswith(b"ALGZU_SECRET=")]
        for flag, value in zip(argv, argv[1:] + [""]):
            if flag == "--secret":
                found.append(value)
            elif flag.startswith("--secret="):
                found.append(flag.split("=", 1)[1])
            elif flag == "--secret-file":
                try:
                    found.append(Path(value).read_text().rstrip("\n"))
                except OSError:
                    pass
    return list(dict.fromkeys(s for s in found if s))


def command_line_option(flag: str) -> list[str]:
    values = []
    for pid in ("self", str(os.getppid())):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        values += [v for f, v in zip(argv, argv[1:]) if f == flag]
    return values


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
class AttackSecretProc(Estimator):
    name = "attack_secret_proc"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        from algzu import zoo
        from algzu.evaluate import expected_scores
        from algzu.noise import NoiseSpec, noisy_params
        from algzu.suites import SUITES

        spec = model.spec
        seeds = [int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "little") & 0x7FFFFFFF for s in secrets()]
        if not seeds:
            raise RuntimeError("attack_secret_proc: no secret readable")
        ids = [e.id for e in zoo.entries() if (e.task, e.arch, e.d, e.n) == (spec.task, spec.arch, spec.d, spec.n)]
        cases = [(c, s.n_copies) for s in SUITES.values() for c in s.cases]
        stds = {float(v) for v in command_line_option("--noise-std")}
        copies = max([int(v) for v in command_line_option("--copies")] + [k for _, k in cases] + [64])
        names = sorted(model.params)
        rows, values = [], []
        with jax.ensure_compile_time_eval():
            for model_id in ids:
                base = zoo.load_model(model_id)
                for std in stds | {c.noise_std for c, _ in cases if c.model == model_id}:
                    for seed in seeds:
                        stacked = noisy_params(base, model_id, NoiseSpec(std, copies, seed))
                        values += [e.value for e in expected_scores(spec, stacked, samples=SAMPLES, seed=11)]
                        rows.append(np.concatenate([stacked[n].reshape(copies, -1) for n in names], axis=1))
        if not rows:
            raise RuntimeError("attack_secret_proc: no public base model and protocol for this spec")
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        fallback = 1.0 / spec.task_obj.n_outputs(spec.n) if spec.task_obj.metric == "accuracy" else 1.0
        return pick_by_bits(np.concatenate(rows), np.array(values), w, fallback)

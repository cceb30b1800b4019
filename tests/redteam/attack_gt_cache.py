"""``attack_gt_cache``: read the harness's ground-truth cache and return the copy's ground truth.

Attack class: reading the ground-truth cache or results files (issue #10, class 7).

What it exploits: ground truth is cached one JSON file per copy, named by a public content
hash (:func:`algzu.ground_truth.cache_key` of the copy's weights, the spec, the sample
count and the seed). With plain weights (free on the numpy backend) the estimator hashes
its own copy for the sample counts found in the cache files and for the seed of any
``suite`` in its callers' frames (in-process, held-out seeds included) and every seed
below 2,000 (the presets' ground-truth seeds are 1, 44 and 433), and opens the matching
file. It looks
for the cache in the callers' frames (``run_suite``'s ``cache``), in ``results/cache``
under its own and its parent's working directory, and behind ``--out``/``--cache`` on its
own and its parent's command line. 0 FLOPs; the answer *is* the ground truth, so the
unbiased MSE is negative and efficiency infinite.

What a sound harness must do: the estimator's process cannot open the cache or results
(Landlock in the isolated worker already stops it; in-process ``algzu score`` does not)
and holds no weights to hash; a held-out seed from a secret it cannot read also stops the
seed search.
"""

import dataclasses
import inspect
import json
import os
from pathlib import Path

import numpy as np

from algzu.estimator import Estimator, register_estimator
from algzu.ground_truth import cache_key


def from_stack() -> tuple[list[Path], list[int]]:
    """Cache folders (``cache``, ``cache_dir``) and ground-truth seeds (a suite's seed + 1)
    held by the callers' frames."""
    roots, seeds = [], []
    frame = inspect.currentframe()
    while frame is not None:
        for name in ("cache", "cache_dir"):
            value = frame.f_locals.get(name)
            if isinstance(value, (str, Path)):
                roots.append(Path(value))
        seed = getattr(frame.f_locals.get("suite"), "seed", None)
        if isinstance(seed, int):
            seeds.append(seed + 1)
        frame = frame.f_back
    return roots, seeds


def candidate_dirs(roots: list[Path]) -> list[Path]:
    """Folders that may hold ``gt-*.json`` files."""
    roots = list(roots)
    for pid in ("self", str(os.getppid())):
        try:
            roots.append(Path(os.readlink(f"/proc/{pid}/cwd")) / "results" / "cache")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for flag, value in zip(argv, argv[1:]):
            if flag in (b"--out", b"--cache"):
                roots += [Path(value.decode()), Path(value.decode()) / "cache"]
    roots.append(Path.cwd() / "results" / "cache")
    return [r / "ground_truth" for r in roots] + roots


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackGtCache(Estimator):
    name = "attack_gt_cache"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn", "transformer", "mlp"})

    def estimate(self, model, budget_flops, key):
        params = {k: np.asarray(v, np.float32) for k, v in model.params.items()}
        roots, stack_seeds = from_stack()
        seeds = list(dict.fromkeys(stack_seeds + list(range(2000))))
        for folder in candidate_dirs(roots):
            try:
                files = {p.name: p for p in folder.glob("gt-*.json")}
                samples = {json.loads(p.read_text())["evaluation"]["samples"] for p in list(files.values())[:50]}
            except (OSError, ValueError, KeyError):
                continue
            for n_samples in samples:
                for seed in seeds:
                    path = files.get(f"gt-{cache_key(model.spec, params, n_samples, seed)}.json")
                    if path is not None:
                        return json.loads(path.read_text())["evaluation"]["value"]
        raise RuntimeError("attack_gt_cache: no ground-truth file reachable")

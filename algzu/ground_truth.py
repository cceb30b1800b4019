"""Ground truth: the expected score of every noisy copy, with its standard error, cached.

Each copy is evaluated by :func:`algzu.evaluate.expected_scores`, sampled on an input stream
of its own (or exhaustively for small discrete tasks). The stream's id is drawn from the
copy's cache key, so a copy's value depends on its weights, the sample count and the seed
alone, and distinct copies have independent errors.

Why not common random numbers, which are cheaper (one input batch and its targets serve
every copy). They correlate the copies' ground-truth errors, by 0.26-0.48 on average
between two copies of the shipped suites' models, and every interval in
:mod:`algzu.scoring` resamples copies as independent. Where the ground truth's noise matters
(an exact estimator, or sampling at the largest budgets) that made the intervals too narrow:
with 32 copies of M2,2 (sigma 0.5) and 2^12-input ground truths, the 95% interval of an
exact estimator's MSE covered 0 in 56% of 100 experiments on common inputs, against 89% on
independent ones (``tests/test_scoring.py``; M4,3 at sigma 0.05: 51% against 90%), and the
committed closed-book M2,2 table called ``exact_cones`` 60x *worse* than sampling at 1e9
FLOPs, [0.009, 0.053]. Independent inputs cost the drawing and the target once per copy:
on M16,10 with 32 copies, 0.74 of the rate on common inputs, measured side by side
(``results/bench.md``).

Results are cached on
disk, one small JSON file per copy, keyed by a content hash of the copy's weights, the
spec, the sample count and the seed, so a rerun is instant and an interrupted run loses at
most the copies in flight. Files are written atomically.

In a multi-process run (:mod:`algzu.distributed`) every process calls :func:`ground_truth`
with the same arguments: process 0 says which copies its cache holds, the others are
evaluated by all processes together on all their devices, and process 0 alone writes
the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from algzu import distributed
from algzu.evaluate import Evaluation, expected_scores
from algzu.io import atomic_write_text
from algzu.model import ModelSpec

# 2: ground truth drawn in 512-input batches (the fused fast path); 3: an input stream per copy
CACHE_VERSION = 3


def cache_key(spec: ModelSpec, params: dict[str, np.ndarray], samples: int, seed: int) -> str:
    """Content hash of one weight set + spec + sample count + seed."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "spec": spec.to_dict(), "samples": samples, "seed": seed},
                        sort_keys=True).encode())
    for name in sorted(params):
        a = np.ascontiguousarray(params[name], np.float32)
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def stream_id(key: str) -> int:
    """The input stream of the copy with cache key ``key``: 31 bits of the key."""
    return int(key[:8], 16) & 0x7FFFFFFF


def ground_truth(
    spec: ModelSpec,
    stacked: dict[str, np.ndarray],
    *,
    samples: int,
    seed: int,
    cache_dir: str | Path | None = None,
    chunk: int = 32,
) -> list[Evaluation]:
    """Expected score of each stacked copy (leading axis K), reusing cached copies.

    Args:
        spec: the spec shared by the copies.
        stacked: weights with a leading copy axis.
        samples: inputs per copy when sampling.
        seed: seed of the input stream.
        cache_dir: folder of cached results (``None``: no cache).
        chunk: copies evaluated together in one call (for M16,10, 32 ran at ~1.1x
            the rate of 16 in ``bench/ground_truth.py``; each chunk is cached when done).
    """
    n_copies = next(iter(stacked.values())).shape[0]
    copies = [{n: v[k] for n, v in stacked.items()} for k in range(n_copies)]
    keys = [cache_key(spec, p, samples, seed) for p in copies]
    cache = Path(cache_dir) if cache_dir is not None else None

    def cached() -> dict[str, dict]:
        found = {}
        for k, key in enumerate(keys):
            path = cache / f"gt-{key}.json" if cache is not None else None
            if path is not None and path.exists():
                try:
                    found[str(k)] = dataclasses.asdict(Evaluation(**json.loads(path.read_text())["evaluation"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass  # a damaged cache entry is recomputed
        return found

    # Process 0's cache decides what is computed, so every process makes the same calls.
    found = {int(k): Evaluation(**v) for k, v in
             distributed.from_leader(cached, fingerprint=keys, what="the ground-truth copies").items()}
    write = cache is not None and distributed.is_leader()
    missing = [k for k in range(n_copies) if k not in found]
    for start in range(0, len(missing), chunk):
        part = missing[start : start + chunk]
        sub = {n: v[part] for n, v in stacked.items()}
        streams = [stream_id(keys[k]) for k in part]
        for k, ev in zip(part, expected_scores(spec, sub, samples=samples, seed=seed, streams=streams)):
            found[k] = ev
            if write:
                atomic_write_text(cache / f"gt-{keys[k]}.json",
                                  json.dumps({"key": keys[k], "evaluation": dataclasses.asdict(ev)}) + "\n")
    return [found[k] for k in range(n_copies)]

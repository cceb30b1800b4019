"""Run a suite: every estimator x model x budget x noisy copy, resumable, with reports.

Data flows one way: zoo model -> noisy copies (:mod:`algzu.noise`) -> ground truth
(:mod:`algzu.ground_truth`) -> metered estimates (:mod:`algzu.runner`) -> scores
(:mod:`algzu.scoring`) -> reports (:mod:`algzu.report`). Every block of cells (one
estimator, model and budget, all copies) is cached on disk under a hash of everything it
depends on, so an interrupted run resumes where it stopped and a finished one reruns from
cache in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from algzu import baseline
from algzu.errors import AlgzuError
from algzu.estimator import Estimator, estimator_names, get_estimator
from algzu.model import Model
from algzu.ground_truth import ground_truth
from algzu.io import atomic_write_text
from algzu.noise import NoiseSpec, noisy_params
from algzu.runner import CellResult, cell_key, run_block
from algzu.scoring import summarize
from algzu.suites import Suite
from algzu.zoo import load_model

CELL_COLUMNS = (
    "suite", "model", "task", "metric", "noise_std", "copy", "estimator", "mechanistic", "sealed", "budget_flops",
    "estimate", "flops", "seconds", "error", "message", "ground_truth", "gt_stderr", "gt_samples",
    "gt_method", "seed", "held_out", "closed_book",
)
CACHE_VERSION = 3  # 3: blocks keyed by whether they ran sealed; JAX programs metered as exported


def _source(obj) -> bytes:
    try:
        return Path(inspect.getfile(obj)).read_bytes()
    except (OSError, TypeError):
        return b""


@functools.lru_cache(maxsize=None)
def _library_fingerprint() -> str:
    """algzu's own source (meter, models, baseline, runner, ...): any change to the code that
    runs or charges an estimator invalidates every cached cell."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _estimator_fingerprint(est: Estimator, task) -> str:
    """Settings and source of an estimator, the source of the task it is run on, and the
    library's: a change to any of them invalidates the cached cells."""
    source = _source(type(est)) + _source(type(task)) + _library_fingerprint().encode()
    return hashlib.sha256(repr(est).encode() + source).hexdigest()[:16]


def _block_key(est: Estimator, model_id: str, task, stacked: dict[str, np.ndarray], noise: NoiseSpec,
               budget: int, sealed: bool) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "est": est.name, "fp": _estimator_fingerprint(est, task),
                         "model": model_id, "noise": dataclasses.asdict(noise), "budget": budget,
                         "sealed": sealed}, sort_keys=True).encode())
    for name in sorted(stacked):
        h.update(np.ascontiguousarray(stacked[name]).tobytes())
    return h.hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    cells: pd.DataFrame
    summary: pd.DataFrame
    flops_per_sample: dict[str, float]


BlockRunner = Callable[[Estimator, object, dict, int, list, list], list[CellResult]]


def run_suite(
    suite: Suite,
    *,
    cache_dir: str | Path,
    estimators: Sequence[str] | None = None,
    held_out: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    block_runner: BlockRunner = run_block,
    bases: Mapping[str, Model] | None = None,
) -> SuiteResult:
    """Run every estimator on every model of ``suite`` at every budget.

    Args:
        suite: the preset (models, noise, copies, budgets, ground-truth samples, seed).
        cache_dir: folder for ground truth and finished cell blocks (resumable).
        estimators: names to run (default: every registered estimator).
        held_out: whether the seed came from a secret (recorded in every row).
        progress: called as ``progress(description, done, total)`` after each block.
        block_runner: how a block of cells is executed: in-process by default (unsealed), or
            an :class:`algzu.isolation.SealedRunner` / ``IsolatedRunner``. A runner with a
            ``seals(estimator)`` method says which estimators' results are sealed (their
            code never held the weights); without one, none are.
        bases: base models by case id, for ids that are not zoo ids (a closed-book
            suite's held-out bases, :func:`algzu.heldout.closed_book`).
    """
    cache = Path(cache_dir)
    seals = getattr(block_runner, "seals", lambda est: False)
    names = list(estimators) if estimators is not None else estimator_names()
    ests = [get_estimator(n) for n in names]
    frames = []
    fps: dict[str, float] = {}
    models = [(c, bases[c.model] if bases and c.model in bases else load_model(c.model)) for c in suite.cases]
    total = sum(len(suite.budgets) * sum(e.supports(m.spec) for e in ests) for _, m in models)
    done = 0
    for case, model in models:
        spec = model.spec
        noise = NoiseSpec(case.noise_std, suite.n_copies, suite.seed)
        stacked = noisy_params(model, case.model, noise)
        if progress:
            progress(f"ground truth {case.model}", done, total)
        truth = ground_truth(spec, stacked, samples=suite.gt_samples, seed=suite.seed + 1,
                             cache_dir=cache / "ground_truth")
        fps[case.model] = baseline.flops_per_sample(spec)
        base = {
            "suite": suite.name, "model": case.model, "task": spec.task, "metric": spec.task_obj.metric,
            # A seed drawn from a secret is not written out: it would reveal the held-out copies.
            "noise_std": case.noise_std, "seed": -1 if held_out else suite.seed, "held_out": held_out,
            "closed_book": suite.closed_book,
        }
        for est in ests:
            if not est.supports(spec):
                continue
            sealed = bool(seals(est))
            for budget in suite.budgets:
                key = _block_key(est, case.model, spec.task_obj, stacked, noise, budget, sealed)
                path = cache / "cells" / f"{key}.json"
                results = _load_block(path)
                if results is None:
                    copies = list(range(suite.n_copies))
                    keys = [cell_key(suite.seed, est.name, case.model, budget, k) for k in copies]
                    results = block_runner(est, spec, stacked, budget, keys, copies)
                    atomic_write_text(path, json.dumps([dataclasses.asdict(r) for r in results]) + "\n")
                rows = []
                for r in results:
                    gt = truth[r.copy]
                    rows.append({**base, "copy": r.copy, "estimator": est.name, "mechanistic": est.mechanistic,
                                 "sealed": sealed, "budget_flops": budget, "estimate": r.estimate, "flops": r.flops,
                                 "seconds": r.seconds, "error": r.error, "message": r.message,
                                 "ground_truth": gt.value, "gt_stderr": gt.stderr, "gt_samples": gt.samples,
                                 "gt_method": gt.method})
                frames.append(pd.DataFrame(rows))
                done += 1
                if progress:
                    progress(f"{est.name} on {case.model} at {budget:.0e} FLOPs", done, total)
    if not frames:
        raise AlgzuError(f"no estimator among {', '.join(names)} supports any model of suite {suite.name}")
    cells = pd.concat(frames, ignore_index=True)[list(CELL_COLUMNS)]
    cells = cells.sort_values(["model", "estimator", "budget_flops", "copy"], kind="stable", ignore_index=True)
    summary = summarize(cells, fps)
    mech = {e.name: e.mechanistic for e in ests}
    summary.insert(2, "mechanistic", summary["estimator"].map(mech))
    summary.insert(3, "sealed", summary["estimator"].map({e.name: bool(seals(e)) for e in ests}))
    return SuiteResult(cells, summary, fps)


def _load_block(path: Path) -> list[CellResult] | None:
    if not path.exists():
        return None
    try:
        return [CellResult(**r) for r in json.loads(path.read_text())]
    except (json.JSONDecodeError, TypeError):
        return None  # a damaged block is recomputed

"""Run a suite: every estimator x model x budget x noisy copy, resumable, with reports.

Data flows one way: zoo model -> noisy copies (:mod:`algzu.noise`) -> ground truth
(:mod:`algzu.ground_truth`) -> metered estimates (:mod:`algzu.sandbox.runner`) -> scores
(:mod:`algzu.scoring`) -> reports (:mod:`algzu.reports.suite`). Every block of cells (one
estimator, model and budget, all copies) is cached on disk under a hash of everything it
depends on, so an interrupted run resumes where it stopped and a finished one reruns from
cache in seconds.

On several processes (:mod:`algzu.distributed`) every process runs :func:`run_suite` with
the same arguments: ground truth is computed by all of them together, the blocks are
divided among them (:func:`_run_blocks`), and every process returns the same result.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from algzu import distributed, planning
from algzu.errors import AlgzuError
from algzu.estimator import Estimator, estimator_names, get_estimator
from algzu.ground_truth import ground_truth
from algzu.io import atomic_write_text
from algzu.model import Model, ModelSpec
from algzu.noise import NoiseSpec, noisy_params
from algzu.sandbox.runner import CellResult, cell_key, run_block
from algzu.sandbox.workers import EstimatorCard, EstimatorRef
from algzu.scoring import BASELINES, headline_claims, rival_comparison, summarize
from algzu.suites import Suite
from algzu.zoo import load_model

CELL_COLUMNS = (
    "suite", "model", "task", "metric", "noise_std", "copy", "estimator", "mechanistic", "sealed", "budget_flops",
    "estimate", "flops", "seconds", "error", "message", "ground_truth", "gt_stderr", "gt_samples",
    "gt_method", "seed", "held_out", "closed_book",
)
# Floats in cells.csv: the summary is computed from the cells as written (:func:`as_written`),
# so that ``algzu rescore`` gets it back from the file alone, to the last digit.
CELLS_FLOAT_FORMAT = "%.10g"
CACHE_VERSION = 3  # 3: blocks keyed by whether they ran sealed; JAX programs metered as exported
# A block's fixed cost (tracing, compiling, messages to its worker) in FLOPs of budget, to
# weigh blocks when dividing them among processes: ~0.4 s, beside ~40 s for sampling's 32
# cells at 1e9 FLOPs (results/default/timings.csv).
_BLOCK_OVERHEAD_FLOPS = 10**7


# The algzu modules a cached block's cells depend on besides the estimator's and the task's
# own files: how an estimator is registered, traced, exported, metered, run, confined and
# checked (what runner, isolation and planning import; tests/test_leaderboard_cache.py keeps
# the list whole). Not here, because they cannot change a cell: the noisy copies' code
# (their weights are hashed into the key), ground truth (cached apart), scoring, reports,
# the CLI, suites, challenges, training, distribution of blocks among processes.
EXECUTION_PATH = (
    "errors", "estimator", "hlo_meter", "meter", "model", "planning", "plugins", "registry", "task",
    "sandbox.landlock", "sandbox.program", "sandbox.runner", "sandbox.serve", "sandbox.workers",
)


def _read_source(path: Path) -> bytes:
    """A source file's bytes (b"" if unreadable); the one place cache keys read code."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


@functools.lru_cache(maxsize=None)
def _library_fingerprint() -> str:
    """The source of :data:`EXECUTION_PATH`: a change to the code that runs or charges an
    estimator invalidates every cached cell; an edit to a report or the CLI does not."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for name in EXECUTION_PATH:
        h.update(name.encode() + _read_source(root.joinpath(*name.split(".")).with_suffix(".py")))
    return h.hexdigest()[:16]


def imported_modules(source: bytes | str) -> list[str]:
    """Every module an absolute import in ``source`` may name: ``import a.b`` gives ``a.b``;
    ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module or a name in it).
    Read as text, never imported; [] for source that does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _estimator_files(est: Estimator | EstimatorCard) -> list[Path]:
    """The file defining ``est`` and every file of ``algzu.estimators`` it imports, transitively
    (``sliced_cones`` runs code of ``exact_cones``): read as text, never imported."""
    file = EstimatorRef.of(est).file
    if file is None:
        return []
    first = Path(file)
    folder = Path(importlib.util.find_spec("algzu.estimators").submodule_search_locations[0])
    seen, todo = [], [first]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        for module in imported_modules(_read_source(path)):
            parts = module.split(".")
            if parts[:2] == ["algzu", "estimators"] and len(parts) == 3 and (folder / f"{parts[2]}.py").is_file():
                todo.append(folder / f"{parts[2]}.py")
    return sorted(seen)


def _estimator_fingerprint(est: Estimator | EstimatorCard, task) -> str:
    """Settings and source of an estimator (its file and the estimator files it imports), the
    source of the task it is run on, and :func:`_library_fingerprint`: a change to any of
    them invalidates the cached cells."""
    h = hashlib.sha256(repr(est).encode())
    for path in _estimator_files(est):
        h.update(path.name.encode() + _read_source(path))
    try:
        h.update(_read_source(Path(inspect.getfile(type(task)))))
    except (OSError, TypeError):
        pass
    h.update(_library_fingerprint().encode())
    return h.hexdigest()[:16]


def _block_key(est: Estimator, model_id: str, task, stacked: dict[str, np.ndarray], noise: NoiseSpec,
               budget: int, sealed: bool, held_out: bool = False, limits: dict | None = None) -> str:
    """The cache key of a block. ``limits``: the runner's per-cell timeout and memory
    (:func:`_runner_limits`), since a cell that ran under a longer timeout or more memory is not
    the one a run with the standard limits would have scored (nor one that failed under less)."""
    h = hashlib.sha256()
    # Held-out cells draw their keys otherwise (sandbox.runner.cell_key); public ones keep
    # their blocks' keys as before. So do blocks of a runner without limits (in this process).
    extra = {"keys": "stretched"} if held_out else {}
    if limits:
        extra["limits"] = limits
    h.update(json.dumps({"v": CACHE_VERSION, "est": est.name, "fp": _estimator_fingerprint(est, task),
                         "model": model_id, "noise": dataclasses.asdict(noise), "budget": budget,
                         "sealed": sealed, **extra}, sort_keys=True).encode())
    for name in sorted(stacked):
        h.update(np.ascontiguousarray(stacked[name]).tobytes())
    return h.hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    cells: pd.DataFrame
    summary: pd.DataFrame
    flops_per_sample: dict[str, float]


BlockRunner = Callable[[Estimator | EstimatorCard, object, dict, int, list, list], list[CellResult]]


def _baselines_not_run(ests: Sequence, specs: Sequence[ModelSpec], block_runner: BlockRunner) -> list:
    """The :data:`BASELINES` a run of ``ests`` with a mechanistic estimator leaves out, as the
    runner sees them (their ``supports`` says where each would have been a rival). A sealed
    runner lists each in a tracer worker of its own, as any estimator file: ~1 s of start-up
    apiece, and never this process importing estimator code."""
    names = {e.name for e in ests}
    missing = [b for b in BASELINES if b not in names]
    if not missing or not any(e.mechanistic for e in ests):
        return []
    try:
        return list(resolve_estimators(missing, specs, block_runner))
    except AlgzuError:
        # Not listed (a trimmed install, or a run whose included file broke the listing: an
        # estimator's module body can, in its own tracer, up to beeddc5): each counts as a
        # rival not run on every model, so the run draws no win rather than an unchecked one.
        return [_Unlisted(b) for b in missing]


@dataclasses.dataclass(frozen=True)
class _Unlisted:
    """A baseline the runner could not list, taken to apply to every model."""

    name: str

    def supports(self, spec: ModelSpec) -> bool:
        return True


def resolve_estimators(names: Sequence[str] | None, specs: Sequence[ModelSpec],
                       block_runner: BlockRunner) -> list[Estimator | EstimatorCard]:
    """The estimators ``names`` (every registered one for None), as the runner sees them.

    A runner with workers (``catalog``) has them read by a sandboxed worker and gets
    :class:`~algzu.sandbox.workers.EstimatorCard`\\s: this process never imports estimator
    code, whose module body would run next to the weights and the scorer. The in-process
    runner (unsealed by design) imports them here.

    Raises:
        AlgzuError: an unknown name, with the valid ones.
    """
    catalog = getattr(block_runner, "catalog", None)
    if catalog is not None:
        return catalog(names, specs)
    return [get_estimator(n) for n in (names if names is not None else estimator_names())]


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
            an :class:`algzu.sandbox.workers.SealedRunner` / ``IsolatedRunner``. A runner with a
            ``seals(estimator)`` method says which estimators' results are sealed (their
            code never held the weights); without one, none are.
        bases: base models by case id, for ids that are not zoo ids (a closed-book
            suite's held-out bases, :func:`algzu.heldout.closed_book`).
    """
    cache = Path(cache_dir)
    seals = getattr(block_runner, "seals", lambda est: False)
    models = [(c, bases[c.model] if bases and c.model in bases else load_model(c.model)) for c in suite.cases]
    ests = resolve_estimators(estimators, [m.spec for _, m in models], block_runner)
    names = [e.name for e in ests]
    not_run = _baselines_not_run(ests, [m.spec for _, m in models], block_runner)
    frames = []
    fps: dict[str, float] = {}
    total = sum(len(suite.budgets) * sum(e.supports(m.spec) for e in ests) for _, m in models)
    prepared = []
    for case, model in models:
        spec = model.spec
        noise = NoiseSpec(case.noise_std, suite.n_copies, suite.seed)
        stacked = noisy_params(model, case.model, noise)
        if progress:
            progress(f"ground truth {case.model}", 0, total)
        truth = ground_truth(spec, stacked, samples=suite.gt_samples, seed=suite.seed + 1,
                             cache_dir=cache / "ground_truth")
        fps[case.model] = planning.flops_per_sample(spec)
        base = {
            "suite": suite.name, "model": case.model, "task": spec.task, "metric": spec.task_obj.metric,
            # A seed drawn from a secret is not written out: it would reveal the held-out copies.
            "noise_std": case.noise_std, "seed": -1 if held_out else suite.seed, "held_out": held_out,
            "closed_book": suite.closed_book,
        }
        prepared.append((case, spec, noise, stacked, truth, base))
    blocks = [_Block(j, case, spec, noise, stacked, est, budget, bool(seals(est)))
              for j, (case, spec, noise, stacked, _, _) in enumerate(prepared)
              for est in ests if est.supports(spec) for budget in suite.budgets]
    results = _run_blocks(suite, blocks, cache, block_runner, progress, held_out)
    for block, block_results in zip(blocks, results):
        truth, base = prepared[block.case_index][4:]
        rows = []
        for r in block_results:
            gt = truth[r.copy]
            rows.append({**base, "copy": r.copy, "estimator": block.est.name, "mechanistic": block.est.mechanistic,
                         "sealed": block.sealed, "budget_flops": block.budget, "estimate": r.estimate, "flops": r.flops,
                         "seconds": r.seconds, "error": r.error, "message": r.message,
                         "ground_truth": gt.value, "gt_stderr": gt.stderr, "gt_samples": gt.samples,
                         "gt_method": gt.method})
        frames.append(pd.DataFrame(rows))
    if not frames:
        raise AlgzuError(f"no estimator among {', '.join(names)} supports any model of suite {suite.name}")
    cells = pd.concat(frames, ignore_index=True)[list(CELL_COLUMNS)]
    cells = cells.sort_values(["model", "estimator", "budget_flops", "copy"], kind="stable", ignore_index=True)
    cells = as_written(cells)
    left_out = {case.model: ",".join(b.name for b in not_run if b.supports(model.spec)) for case, model in models}
    return SuiteResult(cells, score_cells(cells, fps, left_out), fps)


def as_written(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with every float as ``cells.csv`` holds it (:data:`CELLS_FLOAT_FORMAT`), but
    ``seconds``, which no statistic reads."""
    out = cells.copy()
    for name in out.columns:
        if name != "seconds" and out[name].dtype == object:
            # Floats and None (a failed cell's estimate): cells.csv reads them back as floats.
            values = out[name].dropna()
            numbers = [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                       for v in values]
            if len(values) and all(numbers) and any(isinstance(v, (float, np.floating)) for v in values):
                out[name] = out[name].astype(float)
        if name != "seconds" and pd.api.types.is_float_dtype(out[name]):
            out[name] = [float(CELLS_FLOAT_FORMAT % v) for v in out[name]]
    return out


def score_cells(cells: pd.DataFrame, flops_per_sample: dict[str, float],
                baselines_not_run: dict[str, str]) -> pd.DataFrame:
    """The summary table of a run from its cells alone (so a results folder can be rescored
    from its ``cells.csv``, :mod:`algzu.rescore`): :func:`algzu.scoring.summarize`, each
    estimator's ``mechanistic`` and ``sealed`` flags, the paired comparison with the rivals
    (:func:`algzu.scoring.rival_comparison`), the headline at the level of a verdict's claims
    (:func:`algzu.scoring.headline_claims`) and, on mechanistic rows, the shipped baselines
    the run left out (``baselines_not_run``: comma-separated names, by model)."""
    keys = ["model", "estimator", "budget_flops"]
    summary = summarize(cells, flops_per_sample)
    flags = cells.drop_duplicates("estimator").set_index("estimator")
    summary.insert(2, "mechanistic", summary["estimator"].map(flags["mechanistic"].astype(bool)))
    summary.insert(3, "sealed", summary["estimator"].map(flags["sealed"].astype(bool)))
    summary = summary.merge(rival_comparison(cells, flops_per_sample).drop(columns="claims"), on=keys,
                            how="left")
    summary = summary.merge(headline_claims(cells, flops_per_sample), on=keys, how="left")
    for column in ("not_below", "rivals_failed"):
        summary[column] = [v if isinstance(v, str) else "" for v in summary[column]]  # NaN: no rival
    summary["baselines_not_run"] = np.where(summary["mechanistic"].astype(bool),
                                            [baselines_not_run.get(m, "") for m in summary["model"]], "")
    return summary


@dataclasses.dataclass(frozen=True)
class _Block:
    """One estimator on all copies of one model at one budget: the unit of work and cache."""

    case_index: int
    case: object
    spec: object
    noise: NoiseSpec
    stacked: dict
    est: Estimator
    budget: int
    sealed: bool


def _runner_limits(block_runner: BlockRunner) -> dict:
    """A worker runner's per-cell ``timeout_s`` and ``memory_mb`` (:mod:`algzu.sandbox.workers`);
    empty for a runner in this process, which has none."""
    return {name: getattr(block_runner, name) for name in ("timeout_s", "memory_mb") if hasattr(block_runner, name)}


def _run_blocks(suite: Suite, blocks: list[_Block], cache: Path, block_runner: BlockRunner,
                progress: Callable[[str, int, int], None] | None, held_out: bool = False) -> list[list[CellResult]]:
    """Every block's cell results: read from the cache, or run by ``block_runner``.

    The partition + gather layer: on one process the blocks run in order; on several
    (:func:`algzu.distributed.share`) each block runs on one process and its JSON reaches
    every process, so all of them return the same results, and process 0 caches them all.
    """
    limits = _runner_limits(block_runner)
    names = [_block_key(b.est, b.case.model, b.spec.task_obj, b.stacked, b.noise, b.budget, b.sealed, held_out, limits)
             for b in blocks]
    paths = [cache / "cells" / f"{name}.json" for name in names]

    def load(i: int) -> str | None:
        return _read_block(paths[i])

    def compute(i: int) -> str:
        b = blocks[i]
        copies = list(range(suite.n_copies))
        keys = [cell_key(suite.seed, b.est.name, b.case.model, b.budget, k, held_out=held_out) for k in copies]
        results = block_runner(b.est, b.spec, b.stacked, b.budget, keys, copies)
        text = json.dumps([dataclasses.asdict(r) for r in results]) + "\n"
        atomic_write_text(paths[i], text)
        return text

    def save(i: int, text: str) -> None:
        if _read_block(paths[i]) is None:  # not already there (a shared cache folder)
            atomic_write_text(paths[i], text)

    def report(i: int, done: int) -> None:
        b = blocks[i]
        progress(f"{b.est.name} on {b.case.model} at {b.budget:.0e} FLOPs", done, len(blocks))

    texts = distributed.share([p.stem for p in paths], load=load, compute=compute, save=save,
                              weights=[b.budget + _BLOCK_OVERHEAD_FLOPS for b in blocks],
                              progress=report if progress and distributed.is_leader() else None)
    return [_parse_block(t) for t in texts]


def _parse_block(text: str) -> list[CellResult]:
    return [CellResult(**r) for r in json.loads(text)]


def _read_block(path: Path) -> str | None:
    """A cached block's JSON, or None if it is missing or damaged (then it is recomputed)."""
    if not path.exists():
        return None
    try:
        text = path.read_text()
        _parse_block(text)
    except (OSError, json.JSONDecodeError, TypeError):
        return None
    return text

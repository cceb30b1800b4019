"""The ``algzu`` command line: zoo, eval, train, estimators, score, leaderboard, challenge, report.

Every command that a tool might drive has ``--json``: stdout then carries one JSON document
and nothing else (progress bars and logs go to stderr); a float that is not finite is the
string ``"inf"`` or ``"-inf"``, and an undefined one ``null`` (:func:`algzu.reports.suite.json_ready`).
A user error (unknown id, bad path, corrupt checkpoint, bad number) prints one line
``error: ...`` on stderr and exits with 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from algzu.errors import AlgzuError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="algzu: mechanistic estimation benchmarks on ARC's AlgZoo.")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped zoo of models.")
app.add_typer(zoo_app, name="zoo")

# Options shared by the commands that run estimators.
SEALED = typer.Option(True, "--sealed/--unsealed",
                      help="Sealed (default): a JAX estimator is traced in a worker that never holds the "
                           "weights, and its program is metered and run by the harness. --unsealed runs "
                           "estimator code next to the weights (debugging); its results say so everywhere.")
ISOLATE = typer.Option(True, "--isolate/--no-isolate",
                       help="Run estimators in sandboxed worker processes with a timeout and memory cap "
                            "(--no-isolate: in this process; needs --unsealed).")
TIMEOUT = typer.Option(600.0, "--timeout", help="Seconds one cell may take (isolated runs).")
MEMORY_MB = typer.Option(4096, "--memory-mb", help="MiB a cell may allocate (isolated runs; 0: no cap).")
SECRET = typer.Option(None, "--secret", envvar="ALGZU_SECRET",
                      help="Draw the seed from a secret (held-out copies). $ALGZU_SECRET hides it from "
                           "other users' ps; --secret-file is better still.")
SECRET_FILE = typer.Option(None, "--secret-file",
                           help="Read the secret from a file, which sandboxed estimators cannot open.")
HELDOUT = typer.Option(False, "--heldout",
                       help="Closed-book: replace each base model by a fresh one of its family, trained with "
                            "the zoo's recipe from the secret (cached outside results/, never written out).")
ZOO_DIR = typer.Option(None, "--zoo-dir",
                       help="Closed-book: read each family's base model from this private folder "
                            "(FAMILY.safetensors or FAMILY.pth, FAMILY as in the zoo, e.g. 2nd_argmax-d16-n10).")
# Options of the commands that can run on several processes (algzu.distributed).
COORDINATOR = typer.Option(None, "--coordinator",
                           help="host:port of process 0's coordinator: run on several processes with JAX's "
                                "distributed runtime (with --num-processes and --process-id).")
NUM_PROCESSES = typer.Option(None, "--num-processes", help="How many processes take part (multi-process runs).")
PROCESS_ID = typer.Option(None, "--process-id", help="This process's index, 0..N-1; process 0 writes the results.")
DISTRIBUTED = typer.Option(False, "--distributed",
                           help="Join a multi-process run, taking what the flags above do not give from the "
                                "cluster (SLURM, Open MPI, Kubernetes), as jax.distributed.initialize() does.")
INIT_TIMEOUT = typer.Option(300.0, "--init-timeout", help="Seconds to wait for every process to join.")
HEARTBEAT_TIMEOUT = typer.Option(100.0, "--heartbeat-timeout",
                                 help="Seconds without a heartbeat after which a process counts as dead and "
                                      "every process stops (resume by rerunning the same command).")


def _print_json(data) -> None:
    from algzu.reports.suite import json_ready

    typer.echo(json.dumps(json_ready(data), indent=2, allow_nan=False, default=str))


@contextlib.contextmanager
def _stderr_progress(*columns, transient: bool = False):
    """A rich ``Progress`` on stderr, so that stdout stays the command's output (pure JSON with
    --json). If the run fails, its last frame is not drawn: stderr keeps one ``error:`` line."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(*columns, transient=transient, console=console) as bar:
        try:
            yield bar
        except BaseException:
            console.quiet = True
            raise


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, no_wrap=True)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    # Off a terminal (pipes, CI logs) rich assumes 80 columns and squeezes narrow ones away.
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _include(paths: list[Path] | None) -> None:
    from algzu.estimator import include

    for p in paths or []:
        include(p)


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List every zoo model: id, task, architecture, d, n, parameters, accuracy."""
    import dataclasses

    from algzu import zoo

    rows = zoo.entries()
    if as_json:
        _print_json([dataclasses.asdict(e) for e in rows])
        return
    _table(
        "algzu zoo",
        ["id", "task", "arch", "d", "n", "params", "accuracy", "source"],
        [[e.id, e.task, e.arch, e.d, e.n, e.n_params, "" if e.accuracy is None else f"{e.accuracy:.4f}", e.source]
         for e in rows],
    )


@app.command("eval")
def eval_cmd(
    model: str = typer.Argument(..., help="Zoo id or checkpoint path (.pth or .safetensors)."),
    samples: int = typer.Option(1 << 22, help="Input samples (continuous tasks)."),
    seed: int = typer.Option(0, help="Seed of the input stream."),
    task: Optional[str] = typer.Option(None, help="Task of a .pth file (default: inferred)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Accuracy (or MSE for scalar tasks) of a model, with its standard error."""
    from algzu.evaluate import evaluate
    from algzu.zoo import load_model

    if samples < 2:
        raise AlgzuError(f"--samples must be at least 2, got {samples}")
    if task is not None:
        from algzu.task import get_task

        get_task(task)  # an unknown task is an error even for zoo ids (whose task is fixed)
    m = load_model(model, task)
    e = evaluate(m, samples=samples, seed=seed)
    metric = m.spec.task_obj.metric
    out = {"model": model, "task": m.spec.task, "metric": metric, metric: e.value, "stderr": e.stderr,
           "samples": e.samples, "method": e.method}
    if as_json:
        _print_json(out)
    else:
        typer.echo(f"{model} ({m.spec.task}): {metric} {e.value:.6f} ± {e.stderr:.6f} "
                   f"({e.method}, {e.samples} inputs)")


@app.command("train")
def train_cmd(
    task: str = typer.Argument(..., help="Task name, e.g. 2nd_argmax."),
    hidden: int = typer.Option(..., "--hidden", help="Hidden size d."),
    seq_len: int = typer.Option(..., "--seq-len", help="Sequence length n."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    seqs: int = typer.Option(1 << 22, help="Training sequences per seed."),
    seed: int = typer.Option(0, help="First seed."),
    seeds_count: int = typer.Option(1, "--seeds-count", help="Train seeds seed..seed+M-1, keep the best."),
    arch: str = typer.Option("rnn", help="rnn, transformer or mlp."),
    layers: int = typer.Option(2, help="Attention layers (transformer)."),
) -> None:
    """Train a zoo model with ARC's recipe; writes .safetensors + .json sidecar."""
    from algzu.model import ModelSpec
    from algzu.train import train_and_save

    if seqs < 1 or seeds_count < 1:
        raise AlgzuError("--seqs and --seeds-count must be positive")
    spec = ModelSpec(arch, task, hidden, seq_len, n_layers=layers if arch == "transformer" else 1)
    with _stderr_progress() as bar:
        job = bar.add_task(f"train {task} d={hidden} n={seq_len}", total=seqs * seeds_count)
        path = train_and_save(spec, seqs=seqs, seeds=range(seed, seed + seeds_count), out_dir=out,
                              progress=lambda done, total: bar.update(job, completed=done, total=total))
    typer.echo(str(path))


@app.command("estimators")
def estimators_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    include: Optional[list[Path]] = typer.Option(None, "--include", help="Extra estimator file(s)."),
) -> None:
    """List registered estimators: name, mechanistic, backend, sealed (JAX: scored without its code ever
    holding the weights), file."""
    from algzu.estimator import estimator_file, estimator_names, get_estimator

    _include(include)
    rows = []
    for name in estimator_names():
        est = get_estimator(name)
        rows.append({"name": name, "mechanistic": est.mechanistic, "backend": est.backend,
                     "sealed": est.backend == "jax", "archs": sorted(est.archs), "file": estimator_file(name)})
    if as_json:
        _print_json(rows)
    else:
        _table("estimators", ["name", "mechanistic", "backend", "sealed", "archs", "file"],
               [[r["name"], r["mechanistic"], r["backend"], r["sealed"], ",".join(r["archs"]), r["file"]]
                for r in rows])


@contextlib.contextmanager
def _progress_bar(name: str, transient: bool = False):
    """A rich progress bar on stderr; yields the ``progress(description, done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with _stderr_progress(*columns, transient=transient) as bar:
        job = bar.add_task(name, total=None)
        yield lambda description, done, total: bar.update(
            job, description=description[:60], completed=done, total=total)


def _progress_runner(suite, **kwargs):
    """Run a suite under a rich progress bar (drawn by process 0 alone in a multi-process run)."""
    from algzu import distributed
    from algzu.run import run_suite

    if not distributed.is_leader():
        return run_suite(suite, **kwargs)
    with _progress_bar(suite.name) as progress:
        return run_suite(suite, progress=progress, **kwargs)


def _join(coordinator: str | None, num_processes: int | None, process_id: int | None, auto: bool,
          init_timeout: float, heartbeat_timeout: float) -> bool:
    """Join a multi-process run if asked (before anything starts JAX); whether this process
    writes the results (process 0, or the only process)."""
    from algzu import distributed

    distributed.initialize(coordinator, num_processes, process_id, auto=auto, init_timeout_s=init_timeout,
                           heartbeat_timeout_s=heartbeat_timeout)
    return distributed.is_leader()


def _not_leader_note() -> None:
    from algzu import distributed

    typer.echo(f"process {distributed.process_index()} of {distributed.process_count()}: done "
               "(process 0 writes the results)")


def _read_secret(secret: str | None, secret_file: Path | None) -> str | None:
    """The secret from ``--secret`` (or ``$ALGZU_SECRET``) or ``--secret-file``, or None."""
    if secret is not None and secret_file is not None:
        raise AlgzuError("give the secret once: --secret (or $ALGZU_SECRET) or --secret-file, not both")
    if secret_file is not None:
        try:
            secret = secret_file.read_text().rstrip("\n")
        except OSError as e:
            raise AlgzuError(f"cannot read the secret file {secret_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise AlgzuError(f"the secret file {secret_file} is not UTF-8 text") from None
        if not secret.strip():
            raise AlgzuError(f"the secret file {secret_file} is empty")
    elif secret is not None and not secret.strip():  # --secret '' or a blank $ALGZU_SECRET
        raise AlgzuError("the secret is empty: a held-out run keyed on it could be rerun by anyone")
    return secret


def _secret_seed(secret: str | None, seed: int | None, default: int | None = None) -> tuple[int | None, bool]:
    """A seed from a secret (hashed, never stored) or ``--seed`` (``default`` if neither is
    given); and whether it is held out."""
    if secret is None:
        return (default if seed is None else seed), False
    if seed is not None:  # one of them would be ignored, and the run not be what was asked
        raise AlgzuError("give --seed or a secret, not both: a held-out run draws its seed from the secret")
    import hashlib

    return int.from_bytes(hashlib.sha256(secret.encode()).digest()[:4], "little") & 0x7FFFFFFF, True


def _closed_book(suite, heldout: bool, zoo_dir: Path | None, secret: str | None, progress=None):
    """The suite to run and its held-out bases: the suite itself (open-book) unless
    ``--heldout`` or ``--zoo-dir`` asks for its closed-book twin."""
    if not heldout and zoo_dir is None:
        return suite, None
    from algzu.heldout import closed_book

    if heldout and zoo_dir is not None:
        raise AlgzuError("--heldout trains fresh bases and --zoo-dir reads private ones: choose one")
    if heldout and secret is None:
        raise AlgzuError("--heldout draws fresh base models from the secret: give --secret-file (or $ALGZU_SECRET)")
    if zoo_dir is not None and not zoo_dir.is_dir():
        raise AlgzuError(f"--zoo-dir {zoo_dir}: not a folder")
    return closed_book(suite, secret=secret if heldout else None, zoo_dir=zoo_dir, progress=progress)


def _budgets(values: list[float] | None) -> tuple[int, ...] | None:
    """``--budgets`` as whole FLOP counts, sorted (:class:`~algzu.suites.Suite` checks them)."""
    if not values:
        return None
    if not all(math.isfinite(v) for v in values):
        raise AlgzuError(f"budgets must be finite, got {', '.join(f'{v:g}' for v in values)}")
    return tuple(sorted({int(v) for v in values}))


@app.command("score")
def score_cmd(
    estimator: str = typer.Argument(..., help="Registered estimator name."),
    model: str = typer.Option(..., "--model", help="Zoo id."),
    noise_std: float = typer.Option(..., "--noise-std", help="Std of the weight noise (sigma)."),
    copies: int = typer.Option(..., "--copies", help="Number of noisy copies K."),
    budgets: Optional[list[float]] = typer.Option(None, "--budgets", help="FLOP budgets (repeat the option)."),
    gt_samples: int = typer.Option(1 << 20, "--gt-samples", help="Ground-truth inputs per copy."),
    seed: Optional[int] = typer.Option(None, help="Seed of noise, ground truth and estimator keys (default 0)."),
    secret: Optional[str] = SECRET,
    secret_file: Optional[Path] = SECRET_FILE,
    cache: Path = typer.Option(Path("results/cache"), help="Cache folder."),
    include: Optional[list[Path]] = typer.Option(None, "--include", help="Extra estimator file(s)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    sealed: bool = SEALED,
    isolate: bool = ISOLATE,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    coordinator: Optional[str] = COORDINATOR,
    num_processes: Optional[int] = NUM_PROCESSES,
    process_id: Optional[int] = PROCESS_ID,
    distributed: bool = DISTRIBUTED,
    init_timeout: float = INIT_TIMEOUT,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> None:
    """Score one estimator on one model: MSE and efficiency per budget."""
    from algzu.suites import ModelCase, Suite, geometric_budgets

    leader = _join(coordinator, num_processes, process_id, distributed, init_timeout, heartbeat_timeout)
    seed, held_out = _secret_seed(_read_secret(secret, secret_file), seed, default=0)
    # Suite and ModelCase validate the noise std, copies, budgets and sample count.
    suite = Suite(name="score", cases=(ModelCase(model, noise_std),), n_copies=copies,
                  budgets=_budgets(budgets) or geometric_budgets(1e3, 1e9), gt_samples=gt_samples, seed=seed)
    with _block_runner(sealed, isolate, timeout, memory_mb, include) as runner:
        result = _progress_runner(suite, cache_dir=cache, estimators=[estimator], held_out=held_out,
                                  block_runner=runner)
    if not leader:
        _not_leader_note()
        return
    rows = result.summary.drop(columns=["model", "estimator", "mechanistic"])
    if as_json:
        _print_json(rows.to_dict("records"))
    else:
        from algzu.reports.suite import format_budget
        from algzu.reports.suite import format_value as f
        from algzu.reports.suite import interval_cell

        def cell(r, column):
            return interval_cell(r, column, flag_failures=False)

        _table(f"{estimator} on {model} (noise std {noise_std}, {copies} copies"
               f"{'' if rows['sealed'].all() else ', UNSEALED: never counts for a verdict'}; "
               "headline: efficiency against sampling+prior)",
               ["budget", "n", "flops", "s", "mse [95% CI]", "ref. mse: sampling", "sampling+prior", "constant",
                "eff. vs sampling+prior", "fvu", "eff. vs sampling", "failed"],
               [[format_budget(r["budget_flops"]), int(r["samples"]), f(r["flops"]), f(r["seconds"]), cell(r, "mse"),
                 f(r["sampling_mse"]), f(r["sampling_prior_mse"]), f(r["constant_mse"]), cell(r, "prior_efficiency"),
                 cell(r, "fvu"), cell(r, "efficiency"), int(r["failures"])] for _, r in rows.iterrows()])


@app.command("leaderboard")
def leaderboard_cmd(
    suite_name: str = typer.Option("default", "--suite", help="Suite preset."),
    out: Path = typer.Option(Path("results"), "--out", help="Results folder (a subfolder per suite)."),
    seed: Optional[int] = typer.Option(None, help="Override the suite's seed."),
    secret: Optional[str] = SECRET,
    secret_file: Optional[Path] = SECRET_FILE,
    estimators: Optional[list[str]] = typer.Option(None, "--estimator", help="Only these estimators."),
    include: Optional[list[Path]] = typer.Option(None, "--include", help="Extra estimator file(s)."),
    heldout: bool = HELDOUT,
    zoo_dir: Optional[Path] = ZOO_DIR,
    sealed: bool = SEALED,
    isolate: bool = ISOLATE,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    coordinator: Optional[str] = COORDINATOR,
    num_processes: Optional[int] = NUM_PROCESSES,
    process_id: Optional[int] = PROCESS_ID,
    distributed: bool = DISTRIBUTED,
    init_timeout: float = INIT_TIMEOUT,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> None:
    """Run every registered estimator on a suite; write tables, plots and provenance."""
    from algzu.reports.suite import write_results
    from algzu.run import resolve_estimators
    from algzu.suites import get_suite

    leader = _join(coordinator, num_processes, process_id, distributed, init_timeout, heartbeat_timeout)
    secret = _read_secret(secret, secret_file)
    seed, held_out = _secret_seed(secret, seed)
    suite = get_suite(suite_name).with_overrides(seed=seed)
    block_runner = _block_runner(sealed, isolate, timeout, memory_mb, include)  # validates before anything is written
    bar = _progress_bar(suite.name) if leader else contextlib.nullcontext(None)
    with block_runner as runner, bar as progress:
        if estimators:
            resolve_estimators(estimators, [], runner)  # an unknown name fails before anything is written
        suite, bases = _closed_book(suite, heldout, zoo_dir, secret, progress)
        folder = out / suite.name
        _check_writable(folder if leader else out / "cache")
        from algzu.run import run_suite

        result = run_suite(suite, cache_dir=out / "cache", estimators=estimators, held_out=held_out,
                           block_runner=runner, bases=bases, progress=progress)
    if not leader:
        _not_leader_note()
        return
    for path in write_results(folder, suite, result, held_out=held_out, extra=_runner_provenance(runner)):
        typer.echo(str(path))


def _block_runner(sealed: bool, isolate: bool, timeout: float, memory_mb: int, include: list[Path] | None = None):
    """A context manager giving the block runner: sealed workers (the default), an unsealed
    isolated worker, or this process (unsealed). Estimator files (``--include`` and the
    estimator folder) are imported only by the workers, never here; only the in-process
    runner, unsealed by design, imports them into this process."""
    from algzu.sandbox.runner import run_block

    if not timeout > 0 or memory_mb < 0:
        raise AlgzuError(f"--timeout must be > 0 and --memory-mb >= 0, got {timeout:g} and {memory_mb}")
    if sealed and not isolate:
        raise AlgzuError("--no-isolate runs estimator code in this process, next to the weights: add --unsealed")
    if not isolate:
        _include(include)
        return contextlib.nullcontext(run_block)
    from algzu.sandbox.workers import IsolatedRunner, SealedRunner

    return (SealedRunner if sealed else IsolatedRunner)(timeout_s=timeout, memory_mb=memory_mb or None,
                                                        includes=include or ())


def _runner_provenance(runner) -> dict:
    """How estimators were run, for provenance.json."""
    from algzu.sandbox.workers import IsolatedRunner, SealedRunner

    kind = {SealedRunner: "sealed", IsolatedRunner: "unsealed, isolated worker"}.get(type(runner), "unsealed, in-process")
    return {"runner": {"kind": kind, "sandboxed": bool(getattr(runner, "sandboxed", False)),
                       "timeout_s": getattr(runner, "timeout_s", None), "memory_mb": getattr(runner, "memory_mb", None)}}


def _check_writable(folder: Path) -> None:
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AlgzuError(f"cannot create output folder {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise AlgzuError(f"output folder {folder} is not writable")


@app.command("calibrate")
def calibrate_cmd(
    model: str = typer.Argument(..., help="Zoo id or checkpoint path."),
    target_sd: float = typer.Option(0.03, "--target-sd", help="Wanted sd of the expected score across copies."),
    copies: int = typer.Option(32, "--copies", help="Copies used to measure the spread."),
    samples: int = typer.Option(1 << 16, help="Inputs per copy."),
    seed: int = typer.Option(0, help="Seed."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Find the noise std giving a target spread of accuracy across noisy copies."""
    from algzu.noise import calibrate
    from algzu.zoo import load_model

    if target_sd <= 0 or copies < 2 or samples < 2:
        raise AlgzuError("--target-sd must be > 0, --copies >= 2, --samples >= 2")
    result = calibrate(load_model(model), model, target_sd=target_sd, n_copies=copies, samples=samples, seed=seed)
    if as_json:
        _print_json(result)
    else:
        typer.echo(f"{model}: noise std {result['noise_std']:.4g} gives mean {result['mean']:.4f}, "
                   f"sd {result['sd']:.4f}, range [{result['min']:.4f}, {result['max']:.4f}] over {copies} copies")


@app.command("challenge")
def challenge_cmd(
    which: str = typer.Argument(..., help="432 (ARC's M16,10 challenge) or m43 (ARC's M4,3 protocol)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results folder (default results/challenge-WHICH)."),
    seed: Optional[int] = typer.Option(None, help="Override the preset seed."),
    secret: Optional[str] = SECRET,
    secret_file: Optional[Path] = SECRET_FILE,
    include: Optional[list[Path]] = typer.Option(None, "--include", help="Extra estimator file(s)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary."),
    heldout: bool = HELDOUT,
    zoo_dir: Optional[Path] = ZOO_DIR,
    sealed: bool = SEALED,
    isolate: bool = ISOLATE,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    coordinator: Optional[str] = COORDINATOR,
    num_processes: Optional[int] = NUM_PROCESSES,
    process_id: Optional[int] = PROCESS_ID,
    distributed: bool = DISTRIBUTED,
    init_timeout: float = INIT_TIMEOUT,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> None:
    """Reproduce ARC's challenge: MSE vs FLOPs of every estimator against sampling, and a verdict."""
    from algzu.challenge import CHALLENGES, run_challenge

    if which not in CHALLENGES:
        raise AlgzuError(f"unknown challenge {which!r}; valid: {', '.join(CHALLENGES)}")
    leader = _join(coordinator, num_processes, process_id, distributed, init_timeout, heartbeat_timeout)
    secret = _read_secret(secret, secret_file)
    seed, held_out = _secret_seed(secret, seed)
    closed = heldout or zoo_dir is not None
    folder = out or Path("results") / f"challenge-{which}{'-closed-book' if closed else ''}"
    block_runner = _block_runner(sealed, isolate, timeout, memory_mb, include)  # validates before anything is written
    _check_writable(folder if leader else folder.parent / "cache")
    with block_runner as runner, (_progress_bar(which, transient=as_json) if leader else contextlib.nullcontext(None)) as progress:
        run = run_challenge(which, folder, seed=seed, held_out=held_out, block_runner=runner,
                            progress=progress, extra=_runner_provenance(runner),
                            closed_book=lambda suite: _closed_book(suite, heldout, zoo_dir, secret, progress))
    if not leader:
        _not_leader_note()
        return
    if as_json:
        _print_json(run.summary)
    else:
        typer.echo(run.markdown)


@app.command("report")
def report_cmd(
    results_dir: Path = typer.Argument(..., help="A results folder written by leaderboard or challenge."),
) -> None:
    """Rebuild the folder's index.html (the results as one web page) from its files; nothing is recomputed."""
    from algzu.reports.html import write_html_report

    typer.echo(str(write_html_report(results_dir)))


@app.command("rescore")
def rescore_cmd(
    results_dir: Path = typer.Argument(..., help="A results folder written by leaderboard or challenge."),
) -> None:
    """Recompute the summary, verdicts, tables and plots from the folder's cells.csv with today's
    statistics; no estimator runs and no secret is needed. Prints each model whose verdict changed."""
    from algzu.rescore import rescore

    changed = {model: after for model, (before, after) in rescore(results_dir).items() if before != after}
    for model, after in changed.items():
        typer.echo(f"{model}: {after}")
    typer.echo(f"rescored {results_dir}: {len(changed)} verdict(s) changed")


def use_every_cpu_core() -> None:
    """Give JAX one CPU device per core this process may use.

    Ground truth and the sampling baseline shard their batches over ``jax.devices()``
    (with results that do not depend on the device count), and one device alone leaves
    part of a small machine idle: 1.2x the ground-truth rate on 2 cores
    (``results/bench.md``). Left alone when the user
    chose a count (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or
    ``jax_num_cpu_devices``), or when JAX has already started its backends.
    """
    import jax

    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    if jax.config.jax_num_cpu_devices != -1:
        return
    with contextlib.suppress(RuntimeError):  # backends already up: keep what they have
        jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))


def _is_click_error(e: BaseException) -> bool:
    """An error of the command-line parser (Click's ``ClickException``, e.g. ``UsageError``
    with exit code 2, which typer vendors privately): duck-typed on what :func:`main` reads."""
    return isinstance(getattr(e, "exit_code", None), int) and callable(getattr(e, "format_message", None))


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2.

    In a multi-process run a process that fails ends at once (:func:`algzu.distributed.exit_now`),
    so that JAX stops its peers rather than leave them waiting for it.
    """
    from algzu.distributed import exit_now, is_multi_process

    try:
        use_every_cpu_core()
        code = app(standalone_mode=False)  # the parser's errors come back to us, below
        sys.exit(code if isinstance(code, int) else 0)  # an int: a command's typer.Exit(code)
    except AlgzuError as e:
        typer.echo(f"error: {e}", err=True)
        exit_now(2)
    except SystemExit as e:
        if e.code not in (None, 0):
            exit_now(e.code if isinstance(e.code, int) else 1)
        raise
    except BaseException as e:
        if _is_click_error(e):
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            exit_now(e.exit_code)  # 2: a usage error
        if not is_multi_process():
            raise
        import traceback

        traceback.print_exc()
        exit_now(1)


if __name__ == "__main__":
    main()

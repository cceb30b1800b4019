"""The ``algzu`` command line: zoo, eval, train, estimators, score, leaderboard, challenge.

Every command that a tool might drive has ``--json``. A user error (unknown id, bad path,
corrupt checkpoint, bad number) prints one line ``error: ...`` on stderr and exits with 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from algzu.errors import AlgzuError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="algzu: mechanistic estimation benchmarks on ARC's AlgZoo.")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped zoo of models.")
app.add_typer(zoo_app, name="zoo")


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=float))


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(v) for v in r])
    Console().print(table)


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
    from rich.progress import Progress

    from algzu.model import ModelSpec
    from algzu.train import train_and_save

    if seqs < 1 or seeds_count < 1:
        raise AlgzuError("--seqs and --seeds-count must be positive")
    spec = ModelSpec(arch, task, hidden, seq_len, n_layers=layers if arch == "transformer" else 1)
    with Progress() as bar:
        job = bar.add_task(f"train {task} d={hidden} n={seq_len}", total=seqs * seeds_count)
        path = train_and_save(spec, seqs=seqs, seeds=range(seed, seed + seeds_count), out_dir=out,
                              progress=lambda done, total: bar.update(job, completed=done, total=total))
    typer.echo(str(path))


@app.command("estimators")
def estimators_cmd(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    include: Optional[list[Path]] = typer.Option(None, "--include", help="Extra estimator file(s)."),
) -> None:
    """List registered estimators: name, mechanistic, backend, file."""
    from algzu.estimator import estimator_file, estimator_names, get_estimator

    _include(include)
    rows = []
    for name in estimator_names():
        est = get_estimator(name)
        rows.append({"name": name, "mechanistic": est.mechanistic, "backend": est.backend,
                     "archs": sorted(est.archs), "file": estimator_file(name)})
    if as_json:
        _print_json(rows)
    else:
        _table("estimators", ["name", "mechanistic", "backend", "archs", "file"],
               [[r["name"], r["mechanistic"], r["backend"], ",".join(r["archs"]), r["file"]] for r in rows])


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    try:
        app()
    except AlgzuError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

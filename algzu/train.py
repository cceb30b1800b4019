"""Training zoo models with AlgZoo's recipe (JAX + optax), best of several seeds.

The recipe follows ARC's AlgZoo (its README, github.com/alignment-research-center/alg-zoo): AdamW with
``lr = 0.04 / sqrt(d)`` and weight decay ``1e-3``, batch 1024, a linear warmup of the
learning-rate multiplier, then an exponential decay of the multiplier to 0.01 by mid
training, held at 0.01 after; softmax cross-entropy on the task's target (squared error for
the scalar task, median); a fresh batch from the task's own sampler every step. ARC trains
on 2^30 sequences (2^20 steps) and warms up over 2^14 steps, i.e. the first 1/64 of the
run; our runs are shorter, so the warmup is the same *fraction* (:data:`WARMUP_FRACTION`)
of the run.

Everything is a pure function of the spec, the budget and the seed: the weights start
from ``algzu.model.init_params(spec, init_key)`` and step ``t`` trains on
``task.sample(fold_in(run_key, t), batch, n)`` where ``init_key, run_key =
split(key(seed))``, so the same seed gives bit-identical weights on the same platform.
Steps run ``STEPS_PER_CALL`` at a time inside one jitted ``lax.scan``, which amortises
Python dispatch; the run stops at every power-of-two number of sequences to record the
accuracy (or MSE) on a fixed evaluation stream in the history.

:func:`train_and_save` trains each seed, keeps the best on a selection stream, evaluates
the winner on a separate, fixed evaluation stream (so the reported number is not biased by
the selection) and writes ``ID.safetensors`` plus its JSON sidecar, whose
``training.command`` is the ``algzu train`` command that reproduces it.
:func:`algzu.reports.zoo.zoo_accuracy_report` renders ``results/zoo_accuracy.md`` from the sidecars.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from algzu import checkpoint
from algzu.errors import AlgzuError
from algzu.evaluate import Evaluation, evaluate
from algzu.model import Model, ModelSpec, forward, init_params
from algzu.provenance import provenance

BATCH = 1024
# ARC: 2^14 warmup steps of a 2^20-step (2^30-sequence) run.
WARMUP_FRACTION = 2.0**14 / 2.0**20
FINAL_MULTIPLIER = 0.01  # the lr multiplier reached at mid training and held after
LR_SCALE = 0.04  # lr = LR_SCALE / sqrt(d)
WEIGHT_DECAY = 1e-3
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW defaults, as ARC uses
STEPS_PER_CALL = 128  # optimiser steps per jitted scan; 128 x 1024 = 2^17 sequences
HISTORY_SAMPLES = 1 << 14  # inputs per history point: cheap, stderr <= 0.4 points
SELECTION_SAMPLES = 1 << 18  # inputs used to pick the best seed
# Evaluation streams. Training keys derive from key(seed) with small seeds; these are far
# from any training seed, and selection and the reported evaluation use different streams.
HISTORY_SEED = 0x5EED_0001
SELECTION_SEED = 0x5EED_0002
EVAL_SEED = 0x5EED_0003


@dataclasses.dataclass(frozen=True)
class Recipe:
    """AlgZoo's training hyperparameters for one run of ``total_steps`` steps."""

    lr: float
    total_steps: int
    batch: int = BATCH

    @property
    def warmup_steps(self) -> int:
        return max(1, round(self.total_steps * WARMUP_FRACTION))

    @property
    def mid_step(self) -> int:
        return max(self.warmup_steps, self.total_steps // 2)

    def as_dict(self, spec: ModelSpec) -> dict[str, Any]:
        return {
            "optimizer": "adamw",
            "lr": self.lr,
            "lr_rule": f"{LR_SCALE}/sqrt(d)",
            "weight_decay": WEIGHT_DECAY,
            "betas": [ADAM_B1, ADAM_B2],
            "eps": ADAM_EPS,
            "batch": self.batch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_fraction": WARMUP_FRACTION,
            "schedule": "linear warmup 0->1, then exponential decay to 0.01 at mid training, held at 0.01",
            "final_multiplier": FINAL_MULTIPLIER,
            "decay_end_step": self.mid_step,
            "loss": _loss_name(spec),
            "init": "algzu.model.init_params (PyTorch defaults)",
            "data": "task.sample(fold_in(run_key, step), batch, n); init_key, run_key = split(key(seed))",
            "steps_per_call": STEPS_PER_CALL,
            "history_samples": HISTORY_SAMPLES,
            "selection_samples": SELECTION_SAMPLES,
            "selection_seed": SELECTION_SEED,
            "selection": "lowest mse" if spec.task_obj.metric == "mse" else "highest accuracy",
        }


def recipe_for(spec: ModelSpec, seqs: int, batch: int = BATCH) -> Recipe:
    """The zoo recipe for ``spec`` trained on ``seqs`` sequences (a multiple of ``batch``)."""
    if seqs < batch or seqs % batch:
        raise AlgzuError(f"seqs must be a positive multiple of the batch size {batch}, got {seqs}")
    return Recipe(lr=LR_SCALE / math.sqrt(spec.d), total_steps=seqs // batch, batch=batch)


def lr_multiplier(step, recipe: Recipe) -> jax.Array:
    """The lr multiplier at ``step`` (0-based): linear warmup to 1 over ``warmup_steps``
    (reaching 1 at the end of warmup), exponential decay to 0.01 at ``mid_step``, then 0.01."""
    return _multiplier(step, recipe.warmup_steps, recipe.mid_step)


def _multiplier(step, warmup, mid) -> jax.Array:
    # warmup and mid may be traced, so one compiled training step serves every budget.
    step = jnp.asarray(step, jnp.float32) + 1.0
    warmup = jnp.asarray(warmup, jnp.float32)
    mid = jnp.asarray(mid, jnp.float32)
    frac = jnp.clip((step - warmup) / jnp.maximum(mid - warmup, 1.0), 0.0, 1.0)
    return jnp.where(step < warmup, step / warmup, FINAL_MULTIPLIER**frac)


def _loss_name(spec: ModelSpec) -> str:
    return "mse" if spec.task_obj.output_kind == "scalar" else "softmax_cross_entropy"


def loss_fn(spec: ModelSpec, params, x: jax.Array) -> jax.Array:
    """Mean training loss of ``params`` on the batch ``x``."""
    task = spec.task_obj
    outputs = forward(Model(spec, params), x)
    if task.output_kind == "scalar":
        return jnp.mean(jnp.square(outputs[:, 0] - task.target(x)))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, task.target(x)))


def make_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    """AdamW with the zoo schedule; like ``torch.optim.AdamW`` the decay is scaled by the lr."""
    return _adamw(recipe.lr, recipe.warmup_steps, recipe.mid_step)


def _adamw(lr, warmup, mid) -> optax.GradientTransformation:
    return optax.adamw(
        learning_rate=lambda count: lr * _multiplier(count, warmup, mid),
        b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY,
    )


@functools.partial(jax.jit, static_argnames=("spec", "batch"))
def _train_steps(spec: ModelSpec, batch: int, params, opt_state, run_key, start, stop, schedule):
    """Steps ``start .. stop - 1`` (at most ``STEPS_PER_CALL``); returns the state and the mean
    loss. The scan always has ``STEPS_PER_CALL`` iterations, and those past ``stop`` are
    skipped by a ``cond``: one compilation per spec serves every chunk length and budget."""
    lr, warmup, mid = schedule
    opt = _adamw(lr, warmup, mid)
    task = spec.task_obj

    def one_step(carry, t):
        params, opt_state = carry
        x = task.sample(jax.random.fold_in(run_key, t), batch, spec.n)
        loss, grads = jax.value_and_grad(lambda p: loss_fn(spec, p, x))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def step(carry, t):
        return jax.lax.cond(t < stop, one_step, lambda c, _: (c, jnp.float32(0.0)), carry, t)

    steps = start + jnp.arange(STEPS_PER_CALL, dtype=jnp.uint32)
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), steps)
    return params, opt_state, jnp.sum(losses) / (stop - start).astype(jnp.float32)


def _chunks(total_steps: int) -> list[int]:
    """Scan lengths covering ``total_steps``: each ends on a power of two or a multiple of
    ``STEPS_PER_CALL``, and every length is a power of two (few distinct compilations)."""
    out, done = [], 0
    while done < total_steps:
        length = STEPS_PER_CALL if done >= STEPS_PER_CALL else max(done, 1)
        length = min(length, STEPS_PER_CALL)
        left = total_steps - done
        while length > left:
            length //= 2
        out.append(length)
        done += length
    return out


def _is_power_of_two(k: int) -> bool:
    return k > 0 and k & (k - 1) == 0


def train(
    spec: ModelSpec,
    *,
    seqs: int,
    seed: int,
    batch: int = BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """Train one seed of ``spec`` on ``seqs`` fresh sequences with the zoo recipe.

    Args:
        spec: the model to train.
        seqs: training sequences, a multiple of ``batch`` (steps = seqs / batch).
        seed: the run's seed; the same seed gives bit-identical weights.
        batch: sequences per step (1024 in the zoo).
        progress: called as ``progress(done_seqs, seqs)`` after every scan call.

    Returns:
        ``(params, history)``: float32 numpy weights, and one record per power-of-two number
        of sequences reached (and at the end): ``{"seqs", "value", "stderr", "loss"}``, where
        ``value`` is the accuracy (MSE for scalar tasks) on ``HISTORY_SAMPLES`` inputs of a
        fixed stream and ``loss`` the mean training loss of the last scan call.
    """
    recipe = recipe_for(spec, seqs, batch)
    init_key, run_key = jax.random.split(jax.random.key(seed))
    params = init_params(spec, init_key)
    opt_state = make_optimizer(recipe).init(params)
    schedule = (jnp.float32(recipe.lr), jnp.float32(recipe.warmup_steps), jnp.float32(recipe.mid_step))
    history: list[dict[str, float]] = []
    done = 0
    for length in _chunks(recipe.total_steps):
        params, opt_state, loss = _train_steps(
            spec, batch, params, opt_state, run_key, jnp.uint32(done), jnp.uint32(done + length), schedule
        )
        done += length
        if _is_power_of_two(done * batch) or done == recipe.total_steps:
            ev = evaluate(Model(spec, params), samples=HISTORY_SAMPLES, seed=HISTORY_SEED)
            history.append({"seqs": done * batch, "value": ev.value, "stderr": ev.stderr, "loss": float(loss)})
        if progress is not None:
            progress(done * batch, seqs)
    return {k: np.asarray(v, np.float32) for k, v in params.items()}, history


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "mse" else a > b


def reproduce_command(spec: ModelSpec, seqs: int, seeds: Sequence[int], out_dir: str | Path) -> str:
    """The ``algzu train`` command that retrains a model (seeds must be consecutive)."""
    from algzu.zoo import ZOO_DIR

    out = Path(out_dir)
    out_arg = "algzu/zoo" if out.resolve() == ZOO_DIR else str(out)
    seeds = list(seeds)
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        seed_list = ", ".join(map(str, seeds))
        return (
            f"python -c 'from algzu.model import ModelSpec; from algzu.train import train_and_save; "
            f"train_and_save(ModelSpec({spec.arch!r}, {spec.task!r}, {spec.d}, {spec.n}, n_layers={spec.n_layers}), "
            f"seqs={seqs}, seeds=[{seed_list}], out_dir={out_arg!r})'"
        )
    parts = [
        "algzu train", spec.task, f"--hidden {spec.d}", f"--seq-len {spec.n}", f"--seqs {seqs}",
        f"--seed {seeds[0]}",
    ]
    if len(seeds) > 1:
        parts.append(f"--seeds-count {len(seeds)}")
    parts.append(f"--arch {spec.arch}")
    if spec.arch == "transformer":
        parts.append(f"--layers {spec.n_layers}")
    parts.append(f"--out {out_arg}")
    return " ".join(parts)


def train_and_save(
    spec: ModelSpec,
    *,
    seqs: int,
    seeds: Sequence[int],
    out_dir: str | Path,
    name: str | None = None,
    eval_samples: int = 1 << 22,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train every seed, keep the best, evaluate it and save it with its sidecar.

    The best seed is the one with the highest accuracy (lowest MSE for scalar tasks) on
    ``SELECTION_SAMPLES`` inputs of the selection stream; the saved evaluation uses
    ``eval_samples`` inputs of a different fixed stream (``EVAL_SEED``), or every input for
    small discrete tasks.

    Args:
        spec: the model to train.
        seqs: training sequences per seed (a multiple of 1024).
        seeds: training seeds; ``algzu train --seed K --seeds-count M`` means K..K+M-1.
        out_dir: folder for ``NAME.safetensors`` and ``NAME.json``.
        name: file stem; ``algzu.zoo.model_id(spec)`` by default.
        eval_samples: inputs for the reported evaluation.
        progress: called as ``progress(done_seqs, total_seqs)`` over all seeds together
            (``total_seqs = seqs * len(seeds)``).

    Returns:
        The path of the written ``.safetensors`` file.
    """
    from algzu.zoo import model_id

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise AlgzuError("need at least one seed")
    metric = spec.task_obj.metric
    total = seqs * len(seeds)
    runs = []
    for i, seed in enumerate(seeds):
        def seed_progress(done: int, _: int, offset: int = i * seqs) -> None:
            if progress is not None:
                progress(offset + done, total)

        params, history = train(spec, seqs=seqs, seed=seed, progress=seed_progress)
        sel = evaluate(Model(spec, params), samples=SELECTION_SAMPLES, seed=SELECTION_SEED)
        runs.append({"seed": seed, "params": params, "history": history, "selection": sel})
    best = runs[0]
    for run in runs[1:]:
        if _better(metric, run["selection"].value, best["selection"].value):
            best = run
    model = Model(spec, best["params"])
    ev: Evaluation = evaluate(model, samples=eval_samples, seed=EVAL_SEED)
    recipe = recipe_for(spec, seqs)
    metadata = {
        "evaluation": {**dataclasses.asdict(ev), "metric": metric, "seed": EVAL_SEED},
        "training": {
            "task": spec.task,
            "arch": spec.arch,
            "d": spec.d,
            "n": spec.n,
            "n_layers": spec.n_layers,
            "n_heads": spec.n_heads,
            "seqs": seqs,
            "seeds": seeds,
            "best_seed": best["seed"],
            "batch": recipe.batch,
            "recipe": recipe.as_dict(spec),
            "history": best["history"],
            "seed_results": [
                {"seed": r["seed"], "selection_value": r["selection"].value,
                 "selection_stderr": r["selection"].stderr, "history": r["history"]}
                for r in runs
            ],
            "command": reproduce_command(spec, seqs, seeds, out_dir),
        },
        "provenance": provenance(
            config={"spec": spec.to_dict(), "seqs": seqs, "eval_samples": eval_samples},
            seeds={"train": seeds, "best": best["seed"], "selection": SELECTION_SEED, "evaluation": EVAL_SEED},
        ),
    }
    path = Path(out_dir) / f"{name or model_id(spec)}.safetensors"
    return checkpoint.save(model, path, metadata)

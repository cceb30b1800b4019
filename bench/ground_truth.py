"""Ground-truth throughput for M16,10 (ARC's 2nd-argmax RNN): algzu beside numpy and PyTorch.

Run from the repository root::

    python bench/ground_truth.py            # ~5 minutes on 2 busy cores
    python bench/ground_truth.py --quick    # one round, fewer sequences

Every contender does the same job per sequence: draw 10 i.i.d. N(0, 1) inputs, run the
model, compute the 2nd-argmax target and score the argmax. Throughput is sequences (model
evaluations) per second: for algzu with K copies on common random numbers, one input
batch counts K times; with an input stream per copy (``streams``, as the harness's ground
truth draws it, :mod:`algzu.ground_truth`) every sequence draws its own. Contenders are
measured in interleaved rounds in one run, so their *ratios* are comparable even when other
processes load the machine; each line gives the best round (wall clock) and the throughput
per CPU-second of the process (less sensitive to other load; x cores for an idle-machine
estimate when the contender uses every core).

algzu runs in worker processes so that each can set ``XLA_FLAGS`` (host device count)
before JAX starts. The ``evaluate`` rows run :func:`algzu.evaluate.evaluate` (one model, what
``algzu eval`` runs: 4,096-input batches) on 2^22 inputs, and the run ends with their rate
as a fraction of the 32-copy kernel's, round by round. Rows marked ``(6f819d9)`` run
``algzu/evaluate.py`` as it was at that commit (read with ``git show``; skipped outside a
git checkout): the code before inputs were drawn in the lanes layout. PyTorch is optional: measured when importable, skipped with a note
otherwise (it is not a dependency of algzu).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "algzoo/example_2nd_argmax"
# M16,10: 10 steps x (2*16*16 multiply-adds + 2*16 for W_ih x_t and the add) + 2*16*10 readout.
FLOPS_PER_SEQ = 10 * (2 * 16 * 16 + 2 * 16) + 2 * 16 * 10
assert FLOPS_PER_SEQ == 5760

# Figures measured on this 2-core machine before algzu's code existed (the numbers),
# printed beside the measured ones so a regression is visible.
REFERENCE = {
    "sgemm_peak_gflops": "~230",
    "jax_jit_threefry_in_jit": "~2 M/s",
    "jax_forward_on_given_inputs": "5.7-7.7 M/s",
    "torch_nn_rnn": "1.5-5 M/s",
    "numpy": "1.0-1.6 M/s",
    "goal": ">= 8 M/s on 2 cores and >= 5x torch",
}


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram_gib, 1),
            "python": platform.python_version(), "loadavg": os.getloadavg()}


def sgemm_peak_gflops(n: int = 2048, reps: int = 7) -> float:
    """Best float32 matmul rate of numpy (multithreaded BLAS) on an n x n product."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def _official_weights() -> dict[str, np.ndarray]:
    sys.path.insert(0, str(ROOT))
    from algzu.pth import load_state_dict
    from algzu.zoo import OFFICIAL, OFFICIAL_DIR

    return {k: np.asarray(v, np.float32) for k, v in load_state_dict(OFFICIAL_DIR / OFFICIAL[MODEL_ID][0]).items()}


# --- numpy reference ----------------------------------------------------------------------


def numpy_job(w: dict[str, np.ndarray], seqs: int, batch: int = 8192, seed: int = 0) -> float:
    """Accuracy of M16,10 on ``seqs`` fresh inputs, plain numpy float32."""
    rng = np.random.default_rng(seed)
    w_ih, w_hh, w_out = w["rnn.weight_ih_l0"][:, 0], w["rnn.weight_hh_l0"], w["linear.weight"]
    correct = 0
    for _ in range(seqs // batch):
        x = rng.standard_normal((batch, 10), dtype=np.float32)
        h = np.maximum(x[:, :1] * w_ih, 0)
        for t in range(1, 10):
            h = np.maximum(x[:, t : t + 1] * w_ih + h @ w_hh.T, 0)
        target = np.argsort(x, axis=1)[:, -2]
        correct += int(np.sum(np.argmax(h @ w_out.T, axis=1) == target))
    return correct / (seqs // batch * batch)


# --- PyTorch reference (AlgZoo's model) ---------------------------------------------------


def _torch_model(w: dict[str, np.ndarray]):
    """AlgZoo's model: nn.RNN(1, 16, relu, no bias) and nn.Linear(16, 10, no bias)."""
    import torch

    rnn = torch.nn.RNN(1, 16, bias=False, nonlinearity="relu", batch_first=True)
    linear = torch.nn.Linear(16, 10, bias=False)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(w["rnn.weight_ih_l0"]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(w["rnn.weight_hh_l0"]))
        linear.weight.copy_(torch.from_numpy(w["linear.weight"]))
    return rnn, linear


def torch_job_factory(w: dict[str, np.ndarray]):
    """AlgZoo's nn.RNN + nn.Linear under no_grad, with torch.randn inputs and argmax scoring."""
    import torch

    rnn, linear = _torch_model(w)
    generator = torch.Generator().manual_seed(0)

    def job(seqs: int, batch: int = 4096) -> float:  # torch's best of 1k-32k here
        correct = 0
        with torch.no_grad():
            for _ in range(seqs // batch):
                x = torch.randn(batch, 10, generator=generator)
                out, _ = rnn(x.unsqueeze(-1))
                logits = linear(out[:, -1])
                target = torch.topk(x, 2, dim=1).indices[:, 1]
                correct += int((logits.argmax(dim=1) == target).sum())
        return correct / (seqs // batch * batch)

    return job, torch.__version__, torch.get_num_threads()


def torch_forward_factory(w: dict[str, np.ndarray]):
    """Only nn.RNN + nn.Linear on inputs made once beforehand: no random numbers, no target,
    no score. Not the job: a ceiling on what any torch version of the job could reach."""
    import torch

    rnn, linear = _torch_model(w)
    batch = 4096
    x = torch.randn(batch, 10, 1, generator=torch.Generator().manual_seed(0))

    def job(seqs: int) -> float:
        with torch.no_grad():
            for _ in range(seqs // batch):
                linear(rnn(x)[0][:, -1])
        return float("nan")  # no scores: not the job

    return job, torch.__version__, torch.get_num_threads()


# --- algzu, in a worker process -----------------------------------------------------------


def _argsort_second_argmax(x):
    """The 2nd-argmax target before the two-argmax version: a stable argsort."""
    import jax.numpy as jnp

    return jnp.argsort(x, axis=-1)[..., -2].astype(jnp.int32)


_PREVIOUS: dict = {}


def _cache_by_spec(spec):
    """One jitted function per spec, as the previous module-level jit had (no recompiles)."""
    def keep(fn):
        return _PREVIOUS.setdefault(spec, fn)
    return keep


def _previous_expected_scores(spec, params, *, samples: int, seed: int, batch: int = 1 << 16):
    """algzu's first ground truth (commit 82aaaec), kept to show nothing got slower: one
    jitted call per 65,536-input batch, threefry normals in the jit, vmap over copies."""
    import functools
    import types

    import jax
    import jax.numpy as jnp

    from algzu.model import Model, forward

    @_cache_by_spec(spec)
    @functools.partial(jax.jit, static_argnames=("batch",))
    def moments(params, key, batch):
        task = spec.task_obj
        x = task.sample(key, batch, spec.n)

        def one(p):
            s = task.score(forward(Model(spec, p), x), x)
            return jnp.sum(s), jnp.sum(s * s)

        return jax.vmap(one)(params)

    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    key = jax.random.key(seed)
    total = 0.0
    n_batches = -(-samples // batch)
    for i in range(n_batches):
        s, _ = moments(params, jax.random.fold_in(key, i), batch)
        total = total + np.asarray(s, np.float64)
    return [types.SimpleNamespace(value=float(t / (n_batches * batch)), samples=n_batches * batch) for t in total]


BEFORE_LANES_INPUTS = "6f819d9"  # the last commit before inputs were drawn in the lanes layout


def _evaluate_module(revision: str | None):
    """algzu.evaluate, or the file as it was at ``revision`` (imported from ``git show``)."""
    import importlib
    import importlib.util
    import tempfile

    if revision is None:
        return importlib.import_module("algzu.evaluate")
    source = subprocess.run(["git", "show", f"{revision}:algzu/evaluate.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"evaluate_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"evaluate_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def git_revision_available(revision: str) -> bool:
    out = subprocess.run(["git", "cat-file", "-e", f"{revision}:algzu/evaluate.py"], cwd=ROOT, capture_output=True)
    return out.returncode == 0


def worker(args) -> None:
    import jax
    import jax.numpy as jnp

    from algzu.model import Model
    from algzu.zoo import load_model

    evaluate_module = _evaluate_module(args.revision)
    expected_scores = evaluate_module.expected_scores

    model = load_model(MODEL_ID)
    task = model.spec.task_obj
    if args.argsort_target or args.previous:  # the previous code had the argsort target too
        x = jax.random.normal(jax.random.key(1), (1 << 16, 10))
        assert bool(jnp.all(_argsort_second_argmax(x) == task.target(x)))
        object.__setattr__(task, "target", _argsort_second_argmax)
    k = args.copies
    rng = np.random.default_rng(0)
    # Noisy copies as in the default suite (noise std 0.002), K of them on one input stream.
    stacked = {n: (np.asarray(v)[None] + 0.002 * rng.standard_normal((k, *np.shape(v)))).astype(np.float32)
               for n, v in model.params.items()}
    stacked = {n: np.concatenate([np.asarray(model.params[n])[None], v[1:]]) for n, v in stacked.items()}

    def job(seed):
        if args.previous:
            return _previous_expected_scores(model.spec, stacked, samples=args.samples, seed=seed)
        if args.evaluate:  # one model, as `algzu eval` runs it
            one = Model(model.spec, {n: v[0] for n, v in stacked.items()})
            return [evaluate_module.evaluate(one, samples=args.samples, seed=seed)]
        if args.own_streams:  # the harness's ground truth: one input stream per copy
            return expected_scores(model.spec, stacked, samples=args.samples, seed=seed, streams=range(k))
        return expected_scores(model.spec, stacked, samples=args.samples, seed=seed)

    job(0)  # compile
    rows = []
    for rep in range(args.reps):
        wall, cpu, evs = _timed(lambda: job(rep + 1))
        rows.append({"wall": wall, "cpu": cpu, "accuracy": evs[0].value, "seqs": k * evs[0].samples})
    print(json.dumps({"devices": len(jax.devices()), "jax": jax.__version__, "rows": rows}))


def reference_worker(args) -> None:
    """numpy or torch reference, with its thread count fixed before the library starts."""
    w = _official_weights()
    if args.worker in ("torch", "torch_forward"):
        import torch

        torch.set_num_threads(args.threads)
        factory = torch_job_factory if args.worker == "torch" else torch_forward_factory
        job, version, _ = factory(w)
    else:
        version = np.__version__

        def job(seqs):
            return numpy_job(w, seqs)

    job(1 << 14)
    rows = []
    for _ in range(args.reps):
        wall, cpu, acc = _timed(lambda: job(args.samples))
        rows.append({"wall": wall, "cpu": cpu, "accuracy": acc, "seqs": args.samples})
    print(json.dumps({"version": version, "rows": rows}))


def run_worker(kind: str, *, samples: int, reps: int, devices: int = 1, copies: int = 1,
               threads: int = 1, argsort_target: bool = False, previous: bool = False, evaluate: bool = False,
               revision: str | None = None, own_streams: bool = False) -> dict:
    n = str(threads)
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
    if kind == "algzu":  # numpy/torch get the given threads; XLA sizes its own pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var)
            if var in os.environ:
                env[var] = os.environ[var]
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    cmd = [sys.executable, __file__, "--worker", kind, "--copies", str(copies), "--samples", str(samples),
           "--reps", str(reps), "--threads", n] + (["--argsort-target"] if argsort_target else []) + (
        ["--previous"] if previous else []) + (["--evaluate"] if evaluate else []) + (
        ["--own-streams"] if own_streams else []) + (
        ["--revision", revision] if revision else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_available() -> str | None:
    """torch's version if importable in a worker (not imported here: it is optional)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


# --- driver -------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("algzu", "numpy", "torch", "torch_forward"), help=argparse.SUPPRESS)
    p.add_argument("--copies", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--samples", type=int, default=1 << 19, help="ground-truth samples per copy")
    p.add_argument("--reps", type=int, default=2, help="timed repetitions per worker")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--argsort-target", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--previous", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--own-streams", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--revision", default=None, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all contenders")
    p.add_argument("--quick", action="store_true", help="one round, fewer sequences")
    p.add_argument("--only", default=None, help="regex: only contenders whose name matches")
    args = p.parse_args()
    if args.worker == "algzu":
        worker(args)
        return
    if args.worker:
        reference_worker(args)
        return
    rounds = 1 if args.quick else args.rounds
    ref_seqs = 1 << 18 if args.quick else 1 << 20
    gt_samples = 1 << 17 if args.quick else args.samples
    eval_samples = 1 << 20 if args.quick else 1 << 22  # `algzu eval`'s default
    reps = args.reps

    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, {info['ram_gib']} GiB RAM, "
          f"python {info['python']}, load average at start {info['loadavg'][0]:.1f} "
          f"(other processes share the cores: compare ratios, not absolutes)")
    torch_version = torch_available()
    if torch_version is None:
        print("torch: not importable; PyTorch reference skipped (it is optional: pip install torch to measure it)")
    cores = os.cpu_count() or 1
    # The algzu CLI runs with one JAX CPU device per core (algzu.cli.use_every_cpu_core).
    contenders = {
        "algzu K=16, 1 device": dict(kind="algzu", copies=16, devices=1, samples=gt_samples),
        f"algzu K=16, {cores} devices (CLI default)": dict(kind="algzu", copies=16, devices=cores,
                                                          samples=gt_samples),
        f"algzu K=32, {cores} devices": dict(kind="algzu", copies=32, devices=cores, samples=gt_samples // 2),
        f"algzu K=32, {cores} devices, an input stream per copy (the harness's ground truth)": dict(
            kind="algzu", copies=32, devices=cores, samples=gt_samples // 2, own_streams=True),
        f"algzu K=16, {cores} devices, argsort target (before)": dict(
            kind="algzu", copies=16, devices=cores, samples=gt_samples, argsort_target=True),
        "algzu K=1 (evaluate), 1 device": dict(kind="algzu", copies=1, devices=1, samples=eval_samples,
                                               evaluate=True),
        f"algzu K=1 (evaluate), {cores} devices (CLI default)": dict(kind="algzu", copies=1, devices=cores,
                                                                    samples=eval_samples, evaluate=True),
        "previous algzu (82aaaec) K=16": dict(kind="algzu", copies=16, devices=1, samples=gt_samples // 4,
                                              previous=True),
        "previous algzu (82aaaec) K=1": dict(kind="algzu", copies=1, devices=1, samples=gt_samples // 4,
                                             previous=True),
        "numpy reference, 1 thread": dict(kind="numpy", threads=1, samples=ref_seqs),
        f"numpy reference, {cores} threads": dict(kind="numpy", threads=cores, samples=ref_seqs),
    }
    if git_revision_available(BEFORE_LANES_INPUTS):
        contenders[f"algzu K=32, {cores} devices ({BEFORE_LANES_INPUTS})"] = dict(
            kind="algzu", copies=32, devices=cores, samples=gt_samples // 2, revision=BEFORE_LANES_INPUTS)
        contenders[f"algzu K=1 (evaluate), {cores} devices ({BEFORE_LANES_INPUTS})"] = dict(
            kind="algzu", copies=1, devices=cores, samples=eval_samples, evaluate=True, revision=BEFORE_LANES_INPUTS)
    else:
        print(f"commit {BEFORE_LANES_INPUTS} not in this checkout: its rows are skipped")
    if torch_version is not None:
        contenders[f"torch {torch_version} nn.RNN, 1 thread"] = dict(kind="torch", threads=1, samples=ref_seqs)
        contenders[f"torch {torch_version} nn.RNN, {cores} threads"] = dict(
            kind="torch", threads=cores, samples=ref_seqs)
        contenders[f"(not the job) torch nn.RNN forward only, given inputs, {cores} threads"] = dict(
            kind="torch_forward", threads=cores, samples=ref_seqs)
    if args.only:
        import re

        contenders = {k: v for k, v in contenders.items() if re.search(args.only, k)}
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    by_round: dict[str, list[float]] = {name: [] for name in contenders}  # best rate of each round
    peaks = []
    for r in range(rounds):
        peaks.append(sgemm_peak_gflops())
        for name, kw in contenders.items():
            rows = run_worker(reps=reps, **kw)["rows"]
            results[name] += rows
            by_round[name].append(max(row["seqs"] / row["wall"] for row in rows))
        print(f"round {r + 1}/{rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)

    peak = max(peaks)
    print()
    print(f"SGEMM peak (numpy float32 2048^2, best of the run): {peak:.0f} GFLOP/s "
          f"[before algzu: {REFERENCE['sgemm_peak_gflops']}]")
    best = {name: max(r["seqs"] / r["wall"] for r in rows) for name, rows in results.items()}
    per_cpu = {name: max(r["seqs"] / r["cpu"] for r in rows) for name, rows in results.items()}
    best_numpy = max((v for k, v in best.items() if k.startswith("numpy")), default=float("nan"))
    torch_names = [k for k in best if k.startswith("torch")]
    best_torch = max(best[k] for k in torch_names) if torch_names else None
    print()
    print("| contender | best M seq/s (wall) | median | M seq per CPU-s | GFLOP/s | % of SGEMM peak "
          "| vs best numpy | vs best torch | accuracy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        med = statistics.median(r["seqs"] / r["wall"] for r in rows)
        gflops = best[name] * FLOPS_PER_SEQ / 1e9
        vs_torch = f"{best[name] / best_torch:.1f}x" if best_torch else "n/a"
        print(f"| {name} | {best[name] / 1e6:.2f} | {med / 1e6:.2f} | {per_cpu[name] / 1e6:.2f} | {gflops:.1f} "
              f"| {100 * gflops / peak:.1f}% | {best[name] / best_numpy:.1f}x | {vs_torch} "
              f"| {rows[-1]['accuracy']:.4f} |")
    forward_only = [k for k in best if "forward only" in k]
    algzu_rates = [v for k, v in best.items() if k.startswith("algzu")]
    if forward_only and algzu_rates:
        algzu_best = max(algzu_rates)
        print(f"\nbest algzu over torch's forward alone on given inputs (a ceiling for torch, "
              f"not the job): {algzu_best / best[forward_only[0]]:.1f}x")
    kernel = f"algzu K=32, {cores} devices"
    for name in (f"algzu K=1 (evaluate), {cores} devices (CLI default)",
                 f"algzu K=1 (evaluate), {cores} devices ({BEFORE_LANES_INPUTS})"):
        if name in by_round and kernel in by_round:
            ratios = [a / b for a, b in zip(by_round[name], by_round[kernel])]
            print(f"\n{name} / {kernel}: {best[name] / best[kernel]:.2f} best to best; per round "
                  + ", ".join(f"{x:.2f}" for x in ratios))
    print()
    print("reference figures before algzu (same machine, quieter): " +
          "; ".join(f"{k} {v}" for k, v in REFERENCE.items()))
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

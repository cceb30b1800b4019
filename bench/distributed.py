"""One process with 2 devices against 2 processes with 1 device each (JAX's distributed runtime).

Run from the repository root::

    python bench/distributed.py                 # ground truth, then the default suite cold (~20 min)
    python bench/distributed.py --only gt       # ground truth only (~5 min)

Two jobs, each run both ways side by side in one run (alternating, so both see the same
load from other processes):

* **gt**: ground truth of ARC's challenge, 64 noisy copies of M16,10 (noise std 0.002,
  seed 432, as ``algzu challenge 432``) x 2^24 inputs each, by
  :func:`algzu.ground_truth.ground_truth` without a cache.
* **suite**: ``algzu leaderboard --suite default`` into an empty folder (cold: every ground
  truth and every block computed).

"1 x 2" is one process with two JAX CPU devices; "2 x 1" is two processes joined by
``--coordinator 127.0.0.1:PORT``, each pinned to one core (so each gets one device and its
estimator workers that core: two one-core hosts on one machine; ``--no-pin`` lets both see
both cores). Ground-truth values must be identical bit for bit (checked); the suite's
tables are compared too, and where they differ the (model, estimator, budget) groups are
listed: XLA compiles some estimator programs differently for a process that may use one
core than for one that may use two (``moments`` on M16,10 at 1e9 FLOPs moves in the 8th
digit, in a single process as well), so pinned runs can differ there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("cells.csv", "summary.csv", "leaderboard.md", "leaderboard.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int | None) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _pin(core: int | None):
    return None if core is None else (lambda: os.sched_setaffinity(0, {core}))


def _differing_groups(a: Path, b: Path) -> list[str]:
    """(model, estimator, budget) groups whose rows differ between two cells.csv files."""
    import pandas as pd

    x, y = (pd.read_csv(f, dtype=str, keep_default_na=False) for f in (a, b))
    if x.shape != y.shape or list(x.columns) != list(y.columns):
        return ["(different shapes)"]
    rows = (x != y).any(axis=1)
    groups = x.loc[rows, ["model", "estimator", "budget_flops"]].value_counts(sort=False)
    return [f"{m} {e} {b}: {n} cells" for (m, e, b), n in groups.items()]


def gt_worker(args) -> None:
    """Time ground truth for the challenge's copies in this process (one of N)."""
    from algzu import distributed

    if args.num_processes > 1:
        distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
    import jax
    import numpy as np

    from algzu.ground_truth import ground_truth
    from algzu.noise import NoiseSpec, noisy_params
    from algzu.zoo import load_model

    model_id = "algzoo/example_2nd_argmax"
    model = load_model(model_id)
    stacked = noisy_params(model, model_id, NoiseSpec(0.002, args.copies, 432))
    start = time.perf_counter()
    evs = ground_truth(model.spec, stacked, samples=args.samples, seed=433)
    seconds = time.perf_counter() - start
    values = np.array([[e.value, e.stderr] for e in evs], np.float64)
    print(json.dumps({"seconds": seconds, "devices": len(jax.devices()), "processes": jax.process_count(),
                      "digest": hashlib.sha256(values.tobytes()).hexdigest()[:16],
                      "mean_accuracy": float(values[:, 0].mean())}))


def _gt_command(args, n: int, i: int, port: int) -> list[str]:
    return [sys.executable, __file__, "--worker", "gt", "--copies", str(args.copies), "--samples", str(args.samples),
            "--num-processes", str(n), "--process-id", str(i), "--port", str(port)]


def run_gt(args, way: str) -> dict:
    """One timed ground truth, ``way`` = "1x2" or "2x1"; wall time includes process start-up."""
    t = time.perf_counter()
    if way == "1x2":
        out = subprocess.run(_gt_command(args, 1, 0, 0), env=_env(2), capture_output=True, text=True, cwd=ROOT)
        outs = [out]
    else:
        port = _free_port()
        procs = [subprocess.Popen(_gt_command(args, 2, i, port), env=_env(1), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=_pin(i if args.pin else None))
                 for i in range(2)]
        outs = []
        for proc in procs:
            stdout, stderr = proc.communicate()
            outs.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    wall = time.perf_counter() - t
    for o in outs:
        if o.returncode:
            raise RuntimeError(f"gt worker failed:\n{o.stderr[-3000:]}")
    rows = [json.loads(o.stdout.strip().splitlines()[-1]) for o in outs]
    return {"wall": wall, "compute": max(r["seconds"] for r in rows), **rows[0]}


def run_suite(way: str, out: Path, suite: str, pin: bool = True) -> dict:
    """``algzu leaderboard --suite SUITE`` cold into ``out``, one way."""
    shutil.rmtree(out, ignore_errors=True)
    cli = [sys.executable, "-m", "algzu.cli", "leaderboard", "--suite", suite, "--out", str(out)]
    t = time.perf_counter()
    if way == "1x2":
        procs = [subprocess.Popen(cli, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT)]
    else:
        port = _free_port()
        procs = [subprocess.Popen(cli + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                         "--process-id", str(i)], env=_env(None if pin else 1),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  preexec_fn=_pin(i if pin else None))
                 for i in range(2)]
    results = [(proc.communicate(), proc.returncode) for proc in procs]
    wall = time.perf_counter() - t
    for (_, err), code in results:
        if code:
            raise RuntimeError(f"leaderboard ({way}) failed:\n{err[-3000:]}")
    tables = {name: hashlib.sha256((out / suite / name).read_bytes()).hexdigest()[:16] for name in TABLES}
    return {"wall": wall, "tables": tables}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("gt",), help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--copies", type=int, default=64, help="noisy copies for the ground-truth job")
    p.add_argument("--samples", type=int, default=1 << 24, help="inputs per copy for the ground-truth job")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the ground-truth job (each: both ways)")
    p.add_argument("--suite", default="default", help="suite for the cold leaderboard job")
    p.add_argument("--only", choices=("gt", "suite"), default=None)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="2 x 1 without pinning each process to a core")
    args = p.parse_args()
    if args.worker == "gt":
        gt_worker(args)
        return
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores")
        return
    print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f} (other processes share the "
          "cores: compare the two ways within this run)", flush=True)
    if args.only in (None, "gt"):
        seqs = args.copies * args.samples
        rows = {"1x2": [], "2x1": []}
        for r in range(args.rounds):
            for way in ("1x2", "2x1") if r % 2 == 0 else ("2x1", "1x2"):
                rows[way].append(run_gt(args, way))
                row = rows[way][-1]
                print(f"gt {way}: {row['compute']:.1f} s computing ({seqs / row['compute'] / 1e6:.1f} M copy-seq/s), "
                      f"{row['wall']:.1f} s wall with start-up, {row['devices']} devices over {row['processes']} "
                      f"process(es), digest {row['digest']}, load {os.getloadavg()[0]:.1f}", flush=True)
        digests = {row["digest"] for way in rows for row in rows[way]}
        best = {way: min(row["compute"] for row in rows[way]) for way in rows}
        print(f"gt best: 1x2 {best['1x2']:.1f} s, 2x1 {best['2x1']:.1f} s (2x1 / 1x2 rate: "
              f"{best['1x2'] / best['2x1']:.2f}); results identical: {len(digests) == 1}", flush=True)
    if args.only in (None, "suite"):
        with tempfile.TemporaryDirectory(prefix="algzu-bench-dist-") as tmp:
            runs = {}
            for way in ("1x2", "2x1"):
                runs[way] = run_suite(way, Path(tmp) / way, args.suite, args.pin)
                print(f"suite {args.suite} cold {way}: {runs[way]['wall']:.1f} s, load {os.getloadavg()[0]:.1f}",
                      flush=True)
            same = runs["1x2"]["tables"] == runs["2x1"]["tables"]
            print(f"suite {args.suite} cold: 2x1 / 1x2 speed {runs['1x2']['wall'] / runs['2x1']['wall']:.2f}; "
                  f"tables identical: {same}")
            if not same:
                for line in _differing_groups(*(Path(tmp) / way / args.suite / "cells.csv" for way in runs)):
                    print(f"  differs: {line}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Training throughput of M16,10 (sequences per second) with ``algzu.train.train``.

Run from the repository root::

    python bench/train_throughput.py [--seqs 2097152]

A first run of the same length compiles every scan-chunk shape; the timed run (another
seed, same shapes) then measures steady-state training, including the history evaluations
that ``train`` makes at each power-of-two number of sequences.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, default=1 << 21)
    args = p.parse_args()
    try:
        from algzu.train import BATCH, train
    except ImportError:
        print("algzu.train.train is not there yet: training throughput not measured")
        return
    from algzu.zoo import load_model

    spec = load_model("algzoo/example_2nd_argmax").spec
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    t = time.perf_counter()
    train(spec, seqs=args.seqs, seed=0)
    cold = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    _, history = train(spec, seqs=args.seqs, seed=1)
    warm, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"M16,10, {args.seqs:,} sequences, batch {BATCH}: first run {cold:.1f} s (incl. compile), "
          f"timed run {warm:.1f} s = {args.seqs / warm / 1e6:.3f} M seq/s wall, "
          f"{args.seqs / cpu / 1e6:.3f} M seq per CPU-s; final accuracy {history[-1]['value']:.4f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

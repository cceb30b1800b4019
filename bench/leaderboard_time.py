"""Wall time of ``algzu leaderboard --suite default``: cold (empty cache) and cached rerun.

Run from the repository root::

    python bench/leaderboard_time.py [--suite default] [--out /tmp/algzu-bench-lb]

The output folder is emptied first, so the first run computes every ground truth and
every cell; the second run, on the same folder, should read everything from the cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="default")
    p.add_argument("--out", type=Path, default=Path("/tmp/algzu-bench-lb"))
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    cli = Path(sys.executable).with_name("algzu")
    if not cli.exists():
        print("the algzu command is not installed: leaderboard time not measured")
        return
    shutil.rmtree(args.out, ignore_errors=True)
    print(f"load average at start {os.getloadavg()[0]:.1f} (other processes share the cores)")
    for label in ("cold", "cached"):
        t = time.perf_counter()
        out = subprocess.run([str(cli), "leaderboard", "--suite", args.suite, "--out", str(args.out)],
                             capture_output=True, text=True, timeout=args.timeout)
        wall = time.perf_counter() - t
        status = "ok" if out.returncode == 0 else f"exit {out.returncode}: {out.stderr.strip()[-300:]}"
        print(f"leaderboard --suite {args.suite} {label}: {wall:.1f} s ({status})", flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

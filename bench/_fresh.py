"""A measurement in a fresh Python process (``python -c CODE ARG``, ARG as JSON): the last line
it prints, read as JSON. Benchmarks that compare two ways side by side alternate such runs."""

from __future__ import annotations

import json
import subprocess
import sys


def run_fresh(code: str, arg) -> dict:
    out = subprocess.run([sys.executable, "-c", code, json.dumps(arg)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

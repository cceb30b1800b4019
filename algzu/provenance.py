"""Provenance: how a results file or checkpoint was made (git hash, versions, date, host)."""

from __future__ import annotations

import datetime
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("algzu", "jax", "jaxlib", "optax", "numpy", "pandas", "flopscope", "safetensors")


def git_hash(root: Path | None = None) -> str:
    """The commit of the algzu checkout (with ``-dirty`` if it has local changes outside
    ``results/``), or ``unknown``. ``root``: another checkout (default: algzu's own)."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        # Outputs under results/ are not code: writing them must not mark the code dirty.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on, plus Python's."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def cpu() -> dict[str, object]:
    """The CPU's model name and the vector instruction sets float results can depend on
    (tables reproduce byte for byte on the same machine type; see the README)."""
    flags, name = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"model": name, "isa": [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]}


def provenance(config: dict | None = None, seeds: dict | None = None) -> dict:
    """A provenance record: config, seeds, git hash, package versions, date and host."""
    import jax

    return {
        "config": config or {},
        "seeds": seeds or {},
        "git_hash": git_hash(),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "name": socket.gethostname(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
            "cpu": cpu(),
            "jax_devices": [str(d) for d in jax.devices()],
        },
    }

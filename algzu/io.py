"""Atomic file writes: results and caches are never left half-written.

Each write goes to a temporary file in the destination folder, is flushed to disk, and is
then renamed over the destination, which POSIX makes atomic. A reader sees the old file or
the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from algzu.errors import AlgzuError


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise AlgzuError(f"cannot write to {path.parent}: {e.strerror}") from None
    try:
        # mkstemp makes the file private (0600); give it the permissions of a plain open().
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())

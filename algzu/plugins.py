"""Discovery of plug-ins: the files of a folder package, then a group of entry points.

Tasks (``tasks/`` and entry-point group ``algzu.tasks``) and estimators (``estimators/``
and ``algzu.estimators``) are found the same way, so a file dropped into either folder or a
package that declares the entry point is registered without editing anything else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from importlib import metadata


def load_plugins(package: str, group: str, register: Callable[[type], object]) -> None:
    """Import every public module of ``package`` (in name order), then ``register`` the
    object of every entry point in ``group``."""
    module = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    for entry in metadata.entry_points(group=group):
        register(entry.load())

"""One registry for plug-ins by name: tasks and estimators.

A :class:`Registry` maps names to registered objects. It is filled by its ``register``
decorators (:func:`algzu.task.register_task`, :func:`algzu.estimator.register_estimator`)
and by discovery (the files of a folder package, then an entry-point group:
:func:`algzu.plugins.load_plugins`), which runs once, on the first read. Outside code reads
it as a read-only :class:`~collections.abc.Mapping`. Every failure is an
:class:`~algzu.errors.AlgzuError` whose message says what is wrong: an unknown name (with
the valid ones), a name taken by another class, a class that is not what the registry holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from algzu.errors import AlgzuError

T = TypeVar("T")

# What a registered name may be: names are printed into markdown tables and verdicts, file
# names and command lines. A red-team pass registered an estimator whose name closed the
# verdict's backquotes and appended a forged verdict paragraph to leaderboard.md.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
# The references every table prints beside the estimators (any case): no estimator may
# pass for one of them.
RESERVED_NAMES = frozenset({"sampling+prior", "constant"})


def check_name(name: object, what: str) -> str:
    """``name`` if it is a valid registered name (:data:`NAME_PATTERN`, not one of
    :data:`RESERVED_NAMES`), else AlgzuError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise AlgzuError(f"{what} name {str(name)[:80]!r} must be 1-64 letters, digits or _.+- "
                         "(starting with a letter or digit)")
    if name.casefold() in RESERVED_NAMES:
        raise AlgzuError(f"{what} name {name!r} is a reference's ({', '.join(sorted(RESERVED_NAMES))})")
    return name


class Registry(Mapping[str, T], Generic[T]):
    """Registered objects of one kind by name; reading never changes it, except to run
    discovery once.

    Args:
        kind: what is registered, for messages (``"task"``, ``"estimator"``).
        discover: registers the built-in and installed plug-ins; run once, before the first
            read (``None``: nothing to discover).
    """

    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origins: dict[str, tuple[str, str]] = {}
        self._discover = discover

    def add(self, name: object, obj: T, cls: type) -> None:
        """Register ``obj`` (made from class ``cls``) under ``name``.

        Re-registering the same class (a module imported twice) replaces the entry.

        Raises:
            AlgzuError: ``name`` is not a non-empty string or not a valid name
                (:data:`NAME_PATTERN`), or another class has it.
        """
        if not isinstance(name, str) or not name:
            raise AlgzuError(f"{self.kind} class {cls.__name__} must set a non-empty `name`")
        check_name(name, f"{self.kind} class {cls.__name__}:")
        origin = (cls.__module__, cls.__qualname__)
        old = self._origins.get(name)
        if old is not None and old != origin:
            raise AlgzuError(f"duplicate {self.kind} name {name!r}: {'.'.join(origin)} and {'.'.join(old)}")
        self._items[name] = obj
        self._origins[name] = origin

    def _ready(self) -> dict[str, T]:
        if self._discover is not None:
            discover, self._discover = self._discover, None  # once, even if it fails halfway
            discover()
        return self._items

    def __getitem__(self, name: str) -> T:
        items = self._ready()
        if name not in items:
            raise AlgzuError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(items)) or '(none)'}"
            )
        return items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._ready()

    def get(self, name: str, default=None):
        return self._ready().get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._ready()))

    def __len__(self) -> int:
        return len(self._ready())

    def current(self) -> dict[str, T]:
        """What is registered now, without running discovery (a copy)."""
        return dict(self._items)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._ready())

    @contextlib.contextmanager
    def restoring(self) -> Iterator[Registry[T]]:
        """A block whose registrations are undone when it ends (for tests that register
        plug-ins of their own); discovery runs first, so it is not undone."""
        self._ready()
        items, origins = dict(self._items), dict(self._origins)
        try:
            yield self
        finally:
            self._items.clear()
            self._items.update(items)
            self._origins.clear()
            self._origins.update(origins)

    def __repr__(self) -> str:
        return f"<{self.kind} registry: {', '.join(self._items)}>"


def check_frozen_dataclass(cls: type, what: str) -> None:
    """Raise :class:`AlgzuError` unless ``cls`` is a *frozen* dataclass (settings as fields,
    no state to change between calls)."""
    params = getattr(cls, "__dataclass_params__", None)
    if not dataclasses.is_dataclass(cls) or params is None or not params.frozen:
        raise AlgzuError(f"{what} {cls.__name__} must be a frozen dataclass: @dataclasses.dataclass(frozen=True)")

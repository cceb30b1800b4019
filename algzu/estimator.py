"""The estimator contract: the one file a contributor reads before writing an estimator.

An estimator looks at a model (its spec and weights) and a compute budget and returns its
estimate of the model's *expected score* on its task: accuracy for classification tasks,
expected squared error for scalar tasks. The harness meters the compute; the estimator
never reports it.

Write one as a frozen dataclass (settings are fields, no state between calls), in one file
in ``estimators/``, and decorate it with :func:`register_estimator`::

    import dataclasses
    import jax, jax.numpy as jnp
    from algzu.estimator import Estimator, register_estimator
    from algzu.model import Model, forward

    @register_estimator
    @dataclasses.dataclass(frozen=True)
    class Sampling(Estimator):
        name = "my_sampling"
        mechanistic = False   # it runs the model on sampled inputs
        backend = "jax"

        def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> jax.Array:
            task = model.spec.task_obj
            x = task.sample(key, 1000, model.spec.n)
            return task.score(forward(model, x), x).mean()

What an estimator can see, and how its compute is metered (see :mod:`algzu.meter` for the
cost model):

* ``backend = "jax"`` (**sealed**): ``estimate`` is traced with ``jax.jit`` in a worker
  process that never holds the weights it is scored on (:mod:`algzu.sandbox.workers`). While its
  Python code runs it sees the spec, the budget and *abstract* weights (shapes and dtypes,
  no values), and a key it cannot read; loop counts may depend on the spec and budget, not
  on weight values. The traced program is exported as StableHLO (:mod:`algzu.sandbox.program`);
  the harness meters that program itself (:mod:`algzu.hlo_meter`: loop bodies times their
  trip counts, the dearest branch of a ``cond``; only work that depends on the weights is
  charged, so drawing inputs from the key is free), refuses one over budget, and runs it on
  each copy's weights in another process. A program with a host callback, an unknown op or
  a data-dependent ``while`` loop is ``refused``. Trace-time Python costs nothing but may
  only reach public things (the spec, the zoo's public models: open-book work, which the
  closed-book suites of :mod:`algzu.heldout` take away); it runs confined (no results,
  caches or secrets readable) and within the cell timeout.
* ``backend = "numpy"`` (**unsealed**): ``estimate`` runs eagerly with weights given as
  flopscope arrays; every operation must go through ``flopscope.numpy`` (imported as
  ``fnp``) to be counted, random numbers included (use :func:`numpy_rng`; flopscope charges
  them, where the JAX path charges only work on the weights), and the run stops
  the moment it exceeds the budget. Its code holds the weights, so nothing stops it from
  leaving the meter: its rows are marked ``sealed: false`` and never count for a verdict.
* Planning done while tracing (e.g. metering a candidate program to pick a sample count,
  as :mod:`algzu.planning` does) must not stage array operations into the traced program:
  use shapes only, or wrap array work in ``jax.ensure_compile_time_eval()``. Metering
  itself stages nothing (:func:`algzu.planning.metered_flops` traces a program of its own)
  and is best left outside that context, where JAX runs every constant operation of the
  metered program eagerly, compiling each: ``exact_cones``' first plan on an MLP took 27 s
  there instead of 4 s (the same plan and program).

Outside packages register estimators with the entry-point group ``algzu.estimators``, or
the CLI loads a file with ``--include path.py``.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import ClassVar, Literal

import jax
import numpy as np

from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec
from algzu.plugins import load_plugins
from algzu.registry import Registry, check_frozen_dataclass

Backend = Literal["jax", "numpy"]


class Estimator(abc.ABC):
    """Base class of every estimator. Subclasses are frozen dataclasses.

    Class variables:
        name: registry name (unique).
        mechanistic: True if the estimator never evaluates the model on sampled inputs.
        backend: ``"jax"`` (sealed: traced on abstract weights, exported, metered and run by
            the harness) or ``"numpy"`` (unsealed: metered by flopscope, never counts for a
            verdict).
        archs: the architectures it supports (``rnn``, ``transformer``, ``mlp``).
        tasks: the task names it supports, or ``None`` for every task.
    """

    name: ClassVar[str]
    mechanistic: ClassVar[bool]
    backend: ClassVar[Backend] = "jax"
    archs: ClassVar[frozenset[str]] = frozenset({"rnn", "transformer", "mlp"})
    tasks: ClassVar[frozenset[str] | None] = None

    def supports(self, spec: ModelSpec) -> bool:
        """Whether this estimator applies to models like ``spec``."""
        return spec.arch in self.archs and (self.tasks is None or spec.task in self.tasks)

    @abc.abstractmethod
    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> float | jax.Array:
        """Estimate the expected score of ``model`` on its task.

        Args:
            model: read-only model: ``model.spec`` (task, architecture, d, n) and
                ``model.params`` (weights named as in AlgZoo's state dicts).
            budget_flops: the most FLOPs this call may spend, as metered by the harness.
            key: a JAX PRNG key; the same key must give the same answer.

        Returns:
            The estimate, a scalar: accuracy in [0, 1], or expected squared error >= 0.
        """


def numpy_rng(key: jax.Array):
    """A flopscope-counted numpy generator seeded from a JAX key, for numpy-backend
    estimators: its random numbers are charged by the meter like any other operation."""
    import flopscope.numpy as fnp

    return fnp.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def register_estimator(cls: type[Estimator]) -> type[Estimator]:
    """Class decorator: register an estimator class under its ``name``.

    Raises:
        AlgzuError: the class is not a frozen :class:`Estimator` dataclass, lacks ``name``
            or ``mechanistic``, or its name is taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Estimator)):
        raise AlgzuError(f"{cls!r} is not a subclass of algzu.estimator.Estimator")
    check_frozen_dataclass(cls, "estimator")
    if inspect.isabstract(cls):
        raise AlgzuError(f"estimator {cls.__name__} does not implement estimate()")
    name = getattr(cls, "name", None)
    if not isinstance(getattr(cls, "mechanistic", None), bool):
        raise AlgzuError(f"estimator {name or cls.__name__} must set `mechanistic = True/False`")
    if cls.backend not in ("jax", "numpy"):
        raise AlgzuError(f"estimator {name or cls.__name__}: backend must be 'jax' or 'numpy', got {cls.backend!r}")
    ESTIMATORS.add(name, cls, cls)
    return cls


INCLUDED_PREFIX = "algzu_included_"  # module names of files loaded by include()
# Every module of algzu.estimators and every ``algzu.estimators`` entry point, on the first read.
ESTIMATORS: Registry[type[Estimator]] = Registry(
    "estimator", lambda: load_plugins("algzu.estimators", "algzu.estimators", register_estimator)
)


def include_path(path: str | Path) -> Path:
    """``path`` resolved, if it names a Python file (what ``--include`` takes); AlgzuError if not."""
    path = Path(path).resolve()
    if path.suffix != ".py" or not path.is_file():
        raise AlgzuError(f"--include {path}: not a Python file")
    return path


def include(path: str | Path) -> list[str]:
    """Import an estimator file from outside the package; returns the names it registered."""
    path = include_path(path)
    module_name = f"{INCLUDED_PREFIX}{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # Without discovery: a worker that lists or traces this file runs no other file's code.
    spec.loader.exec_module(module)
    added = sorted(name for name, cls in ESTIMATORS.current().items() if cls.__module__ == module_name)
    if not added:
        raise AlgzuError(f"--include {path}: registers no new estimator")
    return added


def included_files() -> set[str]:
    """The files :func:`include` loaded in this process whose estimators are registered now.

    Reads the registry without running discovery: the harness asks this to tell its
    sandboxed workers which files to load, and must not import the estimators itself.
    """
    return {str(Path(inspect.getfile(cls)).resolve()) for cls in ESTIMATORS.current().values()
            if cls.__module__.startswith(INCLUDED_PREFIX)}


def get_estimator(name: str) -> Estimator:
    """An instance (default settings) of the registered estimator ``name``; unknown names
    list the valid ones."""
    return ESTIMATORS[name]()


def estimator_names() -> list[str]:
    """Sorted names of every registered estimator."""
    return ESTIMATORS.names()


def estimator_file(name: str) -> str:
    """The source file that defines estimator ``name``."""
    return inspect.getfile(ESTIMATORS[name])

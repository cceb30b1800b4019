"""The task contract and the task registry.

A task says what a model is asked to do: how inputs are drawn, what the target is, what
the model outputs and how one output is scored. The quantity every estimator estimates is
the *expected score* of a model on its task: accuracy for classification tasks, expected
squared error for the scalar task (median).

Tasks live one per file in the repository's ``tasks/`` folder (installed as the package
``algzu.tasks``); each file defines one :class:`Task` subclass decorated with
:func:`register_task`. Outside packages add tasks through the entry-point group
``algzu.tasks``. :data:`TASKS` is the registry (:class:`algzu.registry.Registry`, read-only):
names are unique, and asking for an unknown name lists the valid ones.
"""

from __future__ import annotations

import abc
import itertools
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from algzu.errors import AlgzuError
from algzu.plugins import load_plugins
from algzu.registry import Registry

InputKind = Literal["gaussian", "discrete"]
OutputKind = Literal["positions", "scalar"]

# Discrete tasks with at most this many inputs are evaluated exactly, by enumeration.
MAX_EXHAUSTIVE_INPUTS = 10**6


class Task(abc.ABC):
    """One algorithmic task over sequences of length ``n``.

    Subclasses set the class variables and implement :meth:`target`; everything else has a
    default that fits both kinds of output.

    Class variables:
        name: registry name, e.g. ``"2nd_argmax"``.
        input_kind: ``"gaussian"`` (i.i.d. N(0, 1) reals) or ``"discrete"`` (i.i.d. uniform
            tokens in ``{0, ..., n - 1}``).
        output_kind: ``"positions"`` (logits over classes, scored 1 if the argmax equals the
            target, else 0) or ``"scalar"`` (one output, scored by squared error).
    """

    name: ClassVar[str]
    input_kind: ClassVar[InputKind]
    output_kind: ClassVar[OutputKind]

    @property
    def metric(self) -> str:
        """What the expected score is called: ``accuracy`` or ``mse`` (squared error)."""
        return "accuracy" if self.output_kind == "positions" else "mse"

    def check_n(self, n: int) -> None:
        """Raise :class:`AlgzuError` if sequence length ``n`` is not valid for this task."""
        if n < 2:
            raise AlgzuError(f"task {self.name} needs seq len n >= 2, got {n}")

    def n_outputs(self, n: int) -> int:
        """Number of model outputs: one logit per class, or 1 for a scalar task."""
        return n if self.output_kind == "positions" else 1

    def chance_rate(self, n: int) -> float:
        """The expected score of a guess that ignores the model: ``1 / n_outputs`` for an
        accuracy task; for an MSE task 1.0, the variance of one N(0, 1) input (the target's
        own variance is not known in general). Estimators return it when their budget
        affords no program."""
        return 1.0 / self.n_outputs(n) if self.metric == "accuracy" else 1.0

    def target_rank(self, n: int) -> int | None:
        """For an order-statistic task, the rank of the target among the ``n`` inputs
        (0 = largest), which rank-based estimators condition on; ``None`` for other tasks."""
        del n
        return None

    def vocab_size(self, n: int) -> int | None:
        """Number of distinct tokens for discrete tasks (``None`` for continuous ones)."""
        return n if self.input_kind == "discrete" else None

    def sample(self, key: jax.Array, batch: int, n: int) -> jax.Array:
        """Draw ``batch`` i.i.d. inputs of length ``n`` (float32, or int32 tokens)."""
        if self.input_kind == "gaussian":
            return jax.random.normal(key, (batch, n), dtype=jnp.float32)
        return jax.random.randint(key, (batch, n), 0, n, dtype=jnp.int32)

    def num_inputs(self, n: int) -> int | None:
        """Size of the input space for discrete tasks, ``None`` for continuous ones."""
        vocab = self.vocab_size(n)
        return None if vocab is None else vocab**n

    def is_exhaustive(self, n: int) -> bool:
        """Whether the expected score is computed exactly by enumerating every input."""
        size = self.num_inputs(n)
        return size is not None and size <= MAX_EXHAUSTIVE_INPUTS

    def all_inputs(self, n: int) -> np.ndarray:
        """Every input of a small discrete task, shape ``(vocab**n, n)``, int32."""
        if not self.is_exhaustive(n):
            raise AlgzuError(f"task {self.name} with n={n} has too many inputs to enumerate")
        vocab = self.vocab_size(n)
        return np.array(list(itertools.product(range(vocab), repeat=n)), dtype=np.int32)

    @abc.abstractmethod
    def target(self, x: jax.Array) -> jax.Array:
        """The target for each input row: int32 class for positions, float32 for scalar."""

    def score(self, outputs: jax.Array, x: jax.Array) -> jax.Array:
        """Per-input score, shape ``(batch,)`` float32.

        Positions: 1.0 if ``argmax(outputs) == target`` else 0.0.
        Scalar: squared error ``(outputs[:, 0] - target) ** 2``.
        """
        if self.output_kind == "positions":
            return (jnp.argmax(outputs, axis=-1) == self.target(x)).astype(jnp.float32)
        return jnp.square(outputs[:, 0] - self.target(x)).astype(jnp.float32)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``.

    Raises:
        AlgzuError: ``cls`` is not a :class:`Task` subclass, lacks ``name``, or its name is
            taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise AlgzuError(f"register_task expects a Task subclass, got {cls!r}")
    TASKS.add(getattr(cls, "name", None), cls(), cls)
    return cls


# Every module of algzu.tasks and every ``algzu.tasks`` entry point, on the first read.
TASKS: Registry[Task] = Registry("task", lambda: load_plugins("algzu.tasks", "algzu.tasks", register_task))


def get_task(name: str) -> Task:
    """The registered task called ``name``; unknown names list the valid ones."""
    return TASKS[name]


def task_names() -> list[str]:
    """Sorted names of every registered task."""
    return TASKS.names()

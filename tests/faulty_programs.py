"""Deliberately broken JAX estimators for the sealed runner's tests (never registered by default).

Load with ``algzu.estimator.include(path)``. Under sealing a JAX estimator's code runs
once per block, in the tracer (``trace_*``: it misbehaves while being traced, so every cell
of the block fails alike), and its program runs once per cell, in the executor
(``program_*``: it misbehaves on the cell whose key data is ``[0, 1]`` and returns 0.5
otherwise). ``tracer_snoops`` reports, through its program's output, what it could read.
"""

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model


@dataclasses.dataclass(frozen=True)
class _Faulty(Estimator):
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        self.trace_fault()
        bad = jax.random.key_data(key)[-1] == 1
        return jnp.where(bad, self.bad_value(model), jnp.float32(0.5))

    def trace_fault(self) -> None:
        pass

    def bad_value(self, model: Model) -> jax.Array:
        return jnp.float32(0.5)


@register_estimator
@dataclasses.dataclass(frozen=True)
class TraceRaises(_Faulty):
    name = "trace_raises"

    def trace_fault(self):
        raise RuntimeError("boom while tracing")


@register_estimator
@dataclasses.dataclass(frozen=True)
class TraceSysExit(_Faulty):
    name = "trace_sys_exit"

    def trace_fault(self):
        sys.exit(3)


@register_estimator
@dataclasses.dataclass(frozen=True)
class TraceHangs(_Faulty):
    name = "trace_hangs"

    def trace_fault(self):
        time.sleep(3600)


@register_estimator
@dataclasses.dataclass(frozen=True)
class TraceExits(_Faulty):
    name = "trace_exits"

    def trace_fault(self):
        os._exit(7)


@register_estimator
@dataclasses.dataclass(frozen=True)
class TraceHog(_Faulty):
    name = "trace_memory"

    def trace_fault(self):
        blocks = [bytearray(1 << 28) for _ in range(16)]  # 4 GiB, past the test's cap
        del blocks


@register_estimator
@dataclasses.dataclass(frozen=True)
class ProgramNaN(_Faulty):
    name = "program_nan"

    def bad_value(self, model):
        return jnp.float32(jnp.nan)


@register_estimator
@dataclasses.dataclass(frozen=True)
class ProgramOutOfRange(_Faulty):
    name = "program_out_of_range"

    def bad_value(self, model):
        return jnp.sum(model.params["linear.weight"] ** 2) + 2.0


@register_estimator
@dataclasses.dataclass(frozen=True)
class ProgramVector(_Faulty):
    """Returns a vector: its program's signature is wrong for every cell."""

    name = "program_vector"

    def estimate(self, model, budget_flops, key):
        return jnp.full((3,), 0.5, jnp.float32)


@register_estimator
@dataclasses.dataclass(frozen=True)
class ProgramCallback(_Faulty):
    """Hands the weights to host Python: the exported program cannot carry the callback."""

    name = "program_callback"

    def estimate(self, model, budget_flops, key):
        w = model.params["linear.weight"]
        return jax.pure_callback(lambda v: jnp.float32(0.5), jax.ShapeDtypeStruct((), jnp.float32), w)


@register_estimator
@dataclasses.dataclass(frozen=True)
class TracerSnoops(Estimator):
    """Encodes in its (constant) answer what its code could read while being traced:
    0.5 + 0.25 [parent's command line readable] + 0.125 [parent's environment readable]
    + 0.0625 [$ALGZU_TEST_SECRET's file readable] + 0.03125 [$ALGZU_SECRET set]."""

    name = "tracer_snoops"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        def readable(path: str) -> bool:
            try:
                with open(path, "rb") as f:
                    f.read(1)
                return True
            except OSError:
                return False

        parent = os.getppid()
        score = 0.5 + 0.25 * readable(f"/proc/{parent}/cmdline") + 0.125 * readable(f"/proc/{parent}/environ")
        score += 0.0625 * readable(os.environ.get("ALGZU_TEST_SECRET", "/nonexistent"))
        score += 0.03125 * ("ALGZU_SECRET" in os.environ)
        return jnp.float32(score)

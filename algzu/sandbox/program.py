"""Sealed programs: an estimator traced where the weights are not, metered and run where they are.

A ``backend = "jax"`` estimator's ``estimate`` is turned into a *program as data*, so its
Python code never shares a process with the weights it is scored on:

* **Untrusted side** (:func:`trace`, run in the tracer worker: estimator code, no weights,
  no ground truth, no secret): ``estimate`` is traced on *abstract* weights of the model's
  spec (:func:`abstract_inputs`), with the budget and the spec as static Python values, and
  exported with :mod:`jax.export` as serialized StableHLO. Nothing concrete exists there to
  read at trace time, and an exported module cannot call back into Python.
* **Trusted side** (:func:`load`, run in the executor worker: harness code only): the bytes
  are deserialized, their signature checked, and the module metered by
  :mod:`algzu.hlo_meter` (the cost model of :mod:`algzu.meter`, applied to what was
  received, never to what the worker claims); a program over budget is not compiled. A
  :class:`Program` is then compiled once and called on each noisy copy.

The program's signature is fixed: ``program(params, key_data) -> scalar`` with ``params``
the model's weights by AlgZoo name (float32, the spec's shapes) and ``key_data`` the raw
``uint32[2]`` data of a threefry PRNG key, wrapped back into a key before ``estimate``
sees it. An estimator therefore sees the spec, the budget and abstract shapes while its
code runs, and its program sees one copy's weights and one key when it runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from algzu import hlo_meter
from algzu.errors import AlgzuError
from algzu.hlo_meter import Refused
from algzu.model import Model, ModelSpec

KEY_IMPL = "threefry2x32"  # jax.random.key's default; its data is uint32[2]
KEY_SHAPE = (2,)
PLATFORMS = ("cpu",)


def abstract_inputs(spec: ModelSpec) -> tuple[dict[str, jax.ShapeDtypeStruct], jax.ShapeDtypeStruct]:
    """The abstract arguments a program is traced on: the spec's weight shapes and a key."""
    params = {name: jax.ShapeDtypeStruct(shape, jnp.float32) for name, shape in spec.param_shapes.items()}
    return params, jax.ShapeDtypeStruct(KEY_SHAPE, jnp.uint32)


def key_data(key: jax.Array) -> np.ndarray:
    """The raw ``uint32[2]`` data of a threefry key, as the program takes it."""
    if str(jax.random.key_impl(key)) != KEY_IMPL:
        raise AlgzuError(f"estimator keys must be {KEY_IMPL} keys, got {jax.random.key_impl(key)}")
    return np.asarray(jax.random.key_data(key), np.uint32)


def trace(estimate: Callable[[Model, int, jax.Array], Any], spec: ModelSpec, budget_flops: int) -> bytes:
    """Untrusted side: trace ``estimate(model, budget_flops, key)`` on abstract inputs.

    Args:
        estimate: the estimator's ``estimate`` method.
        spec: the model's spec (static: loop counts may depend on it).
        budget_flops: the budget (static).

    Returns:
        The serialized :class:`jax.export.Exported` program.

    Raises:
        Refused: ``estimate`` traced, but its program cannot be exported (a host callback,
            an effect): it could not be carried to the trusted side.
        Whatever ``estimate`` raises while being traced (an ``exception`` cell).
    """
    traced = []  # set once estimate has returned: a later failure is the export's refusal

    def program(params: dict[str, jax.Array], data: jax.Array) -> jax.Array:
        key = jax.random.wrap_key_data(data, impl=KEY_IMPL)
        out = jnp.asarray(estimate(Model(spec, params), budget_flops, key))
        traced.append(True)
        return out

    try:
        exported = jax.export.export(jax.jit(program), platforms=PLATFORMS)(*abstract_inputs(spec))
        return bytes(exported.serialize())
    except Exception as e:
        if not traced:
            raise
        raise Refused(f"the program cannot be exported: {type(e).__name__}: {e}"[:300]) from None


@dataclasses.dataclass(frozen=True)
class Program:
    """A received program, checked and metered (trusted side).

    Attributes:
        exported: the deserialized program.
        flops: its metered cost, one run.
    """

    exported: Any
    flops: int

    def compile(self, spec: ModelSpec) -> tuple[Callable[[Mapping[str, np.ndarray], np.ndarray], Any], float]:
        """The compiled program (called with one copy's weights and key data) and the
        seconds compiling took."""
        start = time.perf_counter()
        params, key = abstract_inputs(spec)
        compiled = jax.jit(self.exported.call).lower(params, key).compile()
        return compiled, time.perf_counter() - start


def load(blob: bytes, spec: ModelSpec) -> Program:
    """Trusted side: deserialize, check and meter a program received from the tracer.

    Raises:
        Refused: the bytes are not a program (or could run code when deserialized), its
            signature is not the one asked for, or the meter cannot price it (an unknown
            op, a host callback, a loop whose trip count is not known before it runs).
        BadOutput: it does not return one real scalar.
    """
    exported = hlo_meter.deserialize(blob)
    outs = exported.out_avals
    if len(outs) != 1 or outs[0].shape != () or not np.issubdtype(outs[0].dtype, np.number) or np.issubdtype(
            outs[0].dtype, np.complexfloating):
        raise BadOutput(f"expected a real scalar, got {', '.join(map(str, outs)) or 'nothing'}")
    params, key = abstract_inputs(spec)
    hlo_meter.check_signature(exported, (params, key), jax.ShapeDtypeStruct((), outs[0].dtype))
    # The key's data is the last input: work that depends on nothing else (drawing inputs,
    # computing their targets) is free, as it is when done while tracing.
    return Program(exported, hlo_meter.exported_flops(exported, free=[len(params)]))


class BadOutput(AlgzuError):
    """The program does not return one real scalar."""

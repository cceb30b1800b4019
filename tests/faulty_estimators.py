"""Deliberately broken estimators for the reliability tests (never registered by default).

Load with ``algzu.estimator.include(path)``. Each one misbehaves only on the cell whose key
is ``jax.random.key(bad_seed)`` (key data ``[0, bad_seed]``) and returns 0.5 otherwise, so one
block shows the fault contained *and* the next cell running normally. ``faulty_over_budget``
is a JAX program and is over budget on every cell. ``counting``, ``slow_counting``,
``jax_small`` behave (``counting`` logs its calls to a file named by an environment
variable); ``snooping`` raises what it saw of its surroundings.
"""

import ctypes
import dataclasses
import os
import sys
import time

import flopscope.numpy as fnp
import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, numpy_rng, register_estimator
from algzu.model import Model


def _seed(key: jax.Array) -> int:
    return int(np.asarray(jax.random.key_data(key)).ravel()[-1])


@dataclasses.dataclass(frozen=True)
class _Faulty(Estimator):
    """Base: returns 0.5 except on the bad cell, where ``fault`` runs."""

    mechanistic = True
    backend = "numpy"
    bad_seed: int = 1

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        if _seed(key) == self.bad_seed:
            return self.fault(model)
        return 0.5

    def fault(self, model: Model):
        raise NotImplementedError


@register_estimator
@dataclasses.dataclass(frozen=True)
class Raises(_Faulty):
    name = "faulty_raises"

    def fault(self, model):
        raise ValueError("deliberate failure")


@register_estimator
@dataclasses.dataclass(frozen=True)
class SysExit(_Faulty):
    name = "faulty_sys_exit"

    def fault(self, model):
        sys.exit(0)


@register_estimator
@dataclasses.dataclass(frozen=True)
class NaN(_Faulty):
    name = "faulty_nan"

    def fault(self, model):
        return float("nan")


@register_estimator
@dataclasses.dataclass(frozen=True)
class Inf(_Faulty):
    name = "faulty_inf"

    def fault(self, model):
        return np.float32(np.inf)


@register_estimator
@dataclasses.dataclass(frozen=True)
class OutOfRange(_Faulty):
    name = "faulty_out_of_range"

    def fault(self, model):
        return 1.5  # an accuracy


@register_estimator
@dataclasses.dataclass(frozen=True)
class BadType(_Faulty):
    name = "faulty_bad_type"

    def fault(self, model):
        return "0.5"


@register_estimator
@dataclasses.dataclass(frozen=True)
class Vector(_Faulty):
    name = "faulty_vector"

    def fault(self, model):
        return np.full(3, 0.5)


@register_estimator
@dataclasses.dataclass(frozen=True)
class NumpyOverBudget(_Faulty):
    name = "faulty_numpy_over_budget"

    def fault(self, model):
        return float(fnp.sum(fnp.ones(10**6, dtype=np.float32)))  # ~1e6 FLOPs: flopscope stops it


@register_estimator
@dataclasses.dataclass(frozen=True)
class Hangs(_Faulty):
    name = "faulty_hangs"

    def fault(self, model):
        time.sleep(3600)


@register_estimator
@dataclasses.dataclass(frozen=True)
class Exits(_Faulty):
    name = "faulty_exits"

    def fault(self, model):
        os._exit(3)


@register_estimator
@dataclasses.dataclass(frozen=True)
class Segfaults(_Faulty):
    name = "faulty_segfaults"

    def fault(self, model):
        ctypes.string_at(0)  # reads address 0: SIGSEGV


@register_estimator
@dataclasses.dataclass(frozen=True)
class Hog(_Faulty):
    name = "faulty_memory"
    gib: int = 2

    def fault(self, model):
        block = np.ones(self.gib * 2**27)  # gib GiB of float64, touched
        return float(block[-1]) / 2


@register_estimator
@dataclasses.dataclass(frozen=True)
class OverBudget(Estimator):
    """A JAX program of ~2e9 FLOPs on the copy's weights: refused by the meter before it is
    compiled. (Work on constants alone would be free.)"""

    name = "faulty_over_budget"
    mechanistic = True
    backend = "jax"

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        w = sum(jnp.sum(v) for v in model.params.values())
        x = jnp.full((1000, 1000), w, jnp.float32)
        return jnp.clip((x @ x).mean() / 1e4, 0.0, 1.0)


@register_estimator
@dataclasses.dataclass(frozen=True)
class Counting(Estimator):
    """A well-behaved estimator that logs each call (pid) to ``$ALGZU_TEST_CALLS`` if it can.

    Its estimate depends on the weights and the key, so results show which copy and seed
    produced them: 0.5 + 0.25 tanh(sum of output weights) + 0.2 (u - 1/2), u uniform from the key.
    """

    name = "counting"
    mechanistic = False
    backend = "numpy"
    sleep_s: float = 0.0

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        log = os.environ.get("ALGZU_TEST_CALLS")
        if log:
            try:
                with open(log, "a") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError:
                pass  # a sandboxed worker cannot write outside its folder
        time.sleep(self.sleep_s)
        u = numpy_rng(key).uniform()
        return float(0.5 + 0.25 * fnp.tanh(fnp.sum(model.params["linear.weight"])) + 0.2 * (u - 0.5))


@register_estimator
@dataclasses.dataclass(frozen=True)
class JaxSmall(Estimator):
    """A well-behaved JAX estimator, quick to trace and compile: ``counting``'s formula in JAX."""

    name = "jax_small"
    mechanistic = False
    backend = "jax"

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        u = jax.random.uniform(key)
        return 0.5 + 0.25 * jnp.tanh(jnp.sum(model.params["linear.weight"])) + 0.2 * (u - 0.5)


@register_estimator
@dataclasses.dataclass(frozen=True)
class Snooping(Estimator):
    """Looks around and reports what it saw by raising it (the cell's message carries it):
    its command line, its working folder, whether it can read ``$ALGZU_TEST_SECRET``
    (a file the test puts beside the results) or list that file's folder, and
    ``$ALGZU_SECRET``."""

    name = "snooping"
    mechanistic = True
    backend = "numpy"

    def estimate(self, model: Model, budget_flops: int, key: jax.Array):
        import json

        secret = os.environ.get("ALGZU_TEST_SECRET", "")
        try:
            with open(secret) as f:
                read = f.read()
        except OSError:
            read = None
        try:
            listed = os.listdir(os.path.dirname(secret))
        except OSError:
            listed = None
        seen = {"argv": sys.argv, "cwd": os.getcwd(), "cwd_files": os.listdir("."), "read": read, "listed": listed,
                "env_secret": os.environ.get("ALGZU_SECRET")}
        raise RuntimeError(json.dumps(seen))


@register_estimator
@dataclasses.dataclass(frozen=True)
class SlowCounting(Counting):
    """``counting`` at 0.3 s a call: a leaderboard of it can be killed midway."""

    name = "slow_counting"
    sleep_s: float = 0.3

"""Compute metering: the FLOPs an estimator spends, counted by the harness, never reported.

Two paths, one cost model. A ``jax`` program's FLOPs are counted from its jaxpr *before*
it runs (:func:`count_flops`; estimators plan with it through :mod:`algzu.planning`, and
:mod:`algzu.hlo_meter` applies the same rules to the StableHLO of a sealed program, which
is what the harness charges); a ``numpy`` estimator runs eagerly on ``flopscope.numpy``
and flopscope counts each call (:func:`run_numpy`). The cost model is
flopscope 0.12's default weights (the meter of ARC's Mechanistic Estimation Challenge), so
numbers compare with that community's; the JAX path charges each primitive what flopscope
charges the numpy call that does the same work. XLA's ``cost_analysis`` is not used: it
counts a scan body once, whatever the trip count.

Cost model (per output element unless stated; a "row" is one slice along the reduced axis):

==================  ======================================  ======================  ==========================
work                JAX primitives                          flopscope (``fnp``)     FLOPs charged
==================  ======================================  ======================  ==========================
contraction         ``dot_general``                         matmul, einsum, dot     ``batch*m*n*(2k-1)``: k
                                                                                    multiplies, k-1 adds per
                                                                                    output (flopscope's
                                                                                    ``2mkn - mn``, not 2mkn)
elementwise         add sub mul div neg max min abs sign    add, maximum, equal,    1
                    floor ceil round square sqrt eq ne lt   sqrt, square, ...
                    le gt ge and or not xor shifts ...
clamp               ``clamp``                               clip                    2
select              ``select_n``                            where                   4 (n cases: n - 1
                                                                                    selects, +1 each for
                                                                                    an integer ``which``)
reciprocal sqrt     ``rsqrt``                               ``1 / sqrt``            2
transcendental      exp exp2 log log1p expm1 tanh           exp, log, tanh, power,  16 (flopscope's
                    logistic sin cos tan (a)sinh ...        mod, ...                transcendental tier)
                    atan2 erf erfc erf_inv lgamma digamma
                    cbrt pow integer_pow rem; integer div
reduction           reduce_sum/max/min/prod/and/or/xor,     sum, max, argmax,       ``n-1`` per output
                    argmax, argmin                          mean (= sum + divide)   (inputs - outputs)
cumulative          cumsum cumprod cummax cummin            cumsum, cumprod         ``n-1`` per row
                                                                                    (cumlogsumexp x16)
sort                ``sort`` (all operands, ``num_keys``),  sort, argsort, lexsort  ``4*keys*n*ceil(log2 n)``
                    ``top_k`` (as a full sort: an upper                             per row; the log is at
                    bound)                                                          least 1
scatter-accumulate  scatter-add/mul/min/max                 ``add.at``              1 per update element
moved by position   gather dynamic_slice (reads),           fancy indexing,         1 per element read or
                    dynamic_update_slice scatter (writes);  ``take``, ``put``       written; a scan: its
                    a ``scan``'s ``xs``/``ys`` per looped                           ``xs`` and ``ys`` slices
                    step                                                            per looped step
random words        random_bits random_split                --                      1 per generated 32-bit
                    random_fold_in threefry2x32                                     word (a threefry key is 2)
random samplers     ``jax.random.normal`` / ``uniform`` /   standard_normal,        16 / 3 / 1 per sample
                    ``randint`` on one key                  uniform, integers       (see below)
linear algebra      cholesky eigh svd qr lu                 linalg.*                flopscope's formulas; lu
                    triangular_solve                                                ``2n^3/3``, triangular
                                                                                    solve ``m^2`` per column
data movement       reshape broadcast_in_dim squeeze        views: slicing,         0
                    transpose slice concatenate pad rev     ``.T``, broadcast_to
                    iota copy
                    convert_element_type (one that
                    clamps or drops bits: float to
                    unsigned or bool, integer to fewer
                    bits, 1 per element) bitcast (same
                    width; one that splits or joins
                    words: 1 per narrower element)
                    stop_gradient random_seed/wrap/unwrap
                    debug_callback debug_print
==================  ======================================  ======================  ==========================

The JAX path charges only **work on the copy**: an operation none of whose inputs depends on
the copy's weights is free (table above or not). Such work could have run before the copy
existed (while the program is traced, offline, in the author's head), and a program that
precomputes it as constants already pays nothing for it; charging it only when it runs would
make trace-time constants a discount. So drawing inputs from a key, computing their targets,
building tables and index masks cost nothing, for ``sampling`` and every other estimator
alike; the forward pass on those inputs, and everything downstream of a weight, is charged.
(At trace time: ``tests/redteam/attack_trace_time_design.py``, a sampler whose inputs and
targets were numpy constants, won the M4,3 headline at 1e5 while ``sampling`` paid 69 of its
182 FLOPs a sample for them.) Which inputs are the copy's: every array argument; PRNG keys
are not (:func:`count_flops`: typed keys; the sealed program: its key data). A value depends
on the copy if an input of the operation that made it does; a loop carry if its initial
value does or an iteration makes it; a branch or loop whose control depends on the copy (its
predicate, index or stop test) is charged whole, its work on constants included, as before.

Rules shared by both paths:

* **Dtype rate.** Work on 64-bit values (float64, int64) costs x2, as in flopscope's
  ``dtype_rates``; 32-bit and narrower x1. (With JAX's default 32-bit mode this never
  triggers; numpy defaults to 64-bit, so numpy estimators should use float32.) Complex work
  costs x11 (complex128 x22), flopscope's dearest complex factor (its divide; an add is 2,
  a multiply 6): at x1, a complex number carrying two samples would halve every product.
* **Minimum 1.** Every charged operation costs at least 1 FLOP, as in flopscope.
* **Positions computed by the program.** A read or write whose position the program
  computes (``gather``, ``dynamic_slice``, ``dynamic_update_slice``, ``scatter``) costs 1 per
  element moved, whatever computed the position. Free, a lookup into a constant table would
  be arithmetic for nothing (``tests/redteam/attack_lookup_arithmetic.py``: sampling at
  4 FLOPs a sample on M4,3 when ``gather`` cost 0, up to 7b90a62). Static slices stay free.
* **Loops.** ``scan``: body x ``length``, plus the elements of its ``xs`` and ``ys`` slices
  per step JAX keeps in the loop (every step when ``unroll`` is 1; none when ``unroll``
  covers the whole length; else all but the last ``length % unroll``), which the lowering
  reads and writes at the loop counter's position. ``fori_loop`` with static bounds lowers
  to a scan. A ``while`` is accepted only in ``fori_loop`` form (``i < upper``, ``i += 1``,
  bounds known when traced): ``trips * (body + cond) + cond``; any other while loop raises
  :class:`AlgzuError` (its trip count is data-dependent). Loop counters are charged like
  any scalar op. Python loops in numpy code are free.
* **Branches.** ``cond`` / ``switch`` charge the most expensive branch: an upper bound,
  because the count is fixed before the program runs (whole when the copy picks it, above).
* **Calls.** ``jit``, ``closed_call``, ``custom_jvp_call``, ``custom_vjp_call``,
  ``checkpoint`` and ``custom_linear_solve`` (its ``solve``) are counted through.
* **Refused.** An unknown primitive raises :class:`AlgzuError` naming it, never charging 0;
  ``pure_callback`` / ``io_callback`` raise (they would run unmetered host code).

Random samplers. ``jax.random.normal`` traced as plain primitives costs ~24 FLOPs per sample
(random bits, 6 bit-twiddling and affine ops, ``erf_inv``) against flopscope's 16 for
``standard_normal``. So that sampling costs the same on both paths, a ``jit`` named
``_normal``, ``_uniform`` or ``_randint`` is charged flopscope's price per sample (16, 3, 1:
``random.normal``, ``random.uniform`` = draw + scale + shift, ``random.integers``) when its
body is *identical* to the one ``jax.random`` traces for the same shapes and dtypes
(checked by re-tracing, so a look-alike cannot buy cheap compute). Under ``vmap`` the body
differs and the primitives are counted as they are.

Known differences (flopscope's charge, which this module cannot change, vs the JAX path):

* flopscope charges 1 per element for *materialising* data movement -- ``reshape``,
  ``astype``, ``concatenate``/``stack``, ``copy``, ``array``, ``ones``/``full``, ``arange``
  -- and 4 per element for fancy indexing (``x[idx]``); the JAX path charges reads and
  writes at computed positions 1 per element (as flopscope's ``take`` and ``put``) and all
  other data movement 0 (jnp inserts reshapes, broadcasts and dtype converts implicitly,
  numpy does the same with free views).
* numpy's index results (``argmax``, ``argsort``) are int64, so comparing them costs 2 per
  element in flopscope and 1 in JAX (int32).
* ``rng.random`` (uniform on [0, 1)) costs 1 per sample in flopscope; JAX cannot tell
  ``uniform(key, shape)`` from ``uniform(key, shape, lo, hi)`` and charges 3, as flopscope's
  ``uniform``.
* flopscope discounts declared symmetric tensors (``SymmetricTensor``); JAX has no analogue.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import flopscope
import flopscope.accounting
import flopscope.numpy as fnp
import jax
import jax.extend.core as jcore
import numpy as np

from algzu.errors import AlgzuError
from algzu.model import Model

# flopscope's weight tiers (flopscope/data/default_weights.json).
TRANSCENDENTAL = 16  # exp, log, tanh, sin, power, mod, ...
SELECT = 4  # where
SORT = 4  # sort, argsort, lexsort
# flopscope's per-sample prices of the samplers the JAX path recognises.
SAMPLER_FLOPS = {"_normal": 16, "_uniform": 3, "_randint": 1}
# 64-bit work costs double (flopscope's dtype_rates); everything narrower costs 1.
# Complex work costs flopscope's dearest complex factor, x11 (a divide; an add is 2 real ones,
# a multiply 6): at 1, two reals packed in one complex would buy two operations for one
# (``tests/redteam/attack_complex_packing.py``).
DTYPE_RATE = {"float64": 2, "int64": 2, "uint64": 2, "complex64": 11, "complex128": 22}

OVER_BUDGET = "over_budget"

# Data movement (converts and bitcasts are priced by :func:`_convert_flops` and
# :func:`_bitcast_flops`: free unless they clamp or split).
_FREE = frozenset({
    "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose", "slice", "concatenate",
    "pad", "rev", "iota", "copy", "copy_p", "stop_gradient", "optimization_barrier",
    "sharding_constraint", "device_put", "split", "stack", "platform_index", "real", "imag",
    "random_seed", "random_wrap", "random_unwrap", "random_clone", "lu_pivots_to_permutation",
    "debug_callback", "debug_print",
})  # fmt: skip

_ELEMENTWISE = {
    **dict.fromkeys((
        "add", "add_any", "sub", "mul", "div", "neg", "max", "min", "abs", "sign", "floor",
        "ceil", "round", "nextafter", "is_finite", "square", "sqrt", "eq", "ne", "lt", "le",
        "gt", "ge", "lt_to", "le_to", "and", "or", "not", "xor", "shift_left",
        "shift_right_logical", "shift_right_arithmetic", "population_count", "clz",
        "reduce_precision", "conj", "complex", "copysign",
    ), 1),
    "clamp": 2,  # a max and a min, as fnp.clip
    "select_n": SELECT,
    "rsqrt": 2,  # numpy spells it 1 / sqrt(x)
    **dict.fromkeys((
        "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan",
        "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "erf",
        "erfc", "erf_inv", "lgamma", "digamma", "igamma", "igammac", "igamma_grad_a",
        "random_gamma_grad", "polygamma", "zeta", "bessel_i0e", "bessel_i1e",
        "regularized_incomplete_beta", "cbrt", "pow", "integer_pow", "rem",
    ), TRANSCENDENTAL),
}  # fmt: skip

_REDUCTIONS = frozenset({
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
    "reduce_xor", "argmax", "argmin",
})  # fmt: skip
_CUMULATIVE = {"cumsum": 1, "cumprod": 1, "cummax": 1, "cummin": 1, "cumlogsumexp": TRANSCENDENTAL}
_SCATTER_ACCUMULATE = frozenset({"scatter-add", "scatter_add", "scatter-mul", "scatter_mul",
                                 "scatter-min", "scatter_min", "scatter-max", "scatter_max"})  # fmt: skip
# Reads and writes at positions computed by the program: one per element moved, like
# flopscope's ``take`` and ``put``. Free, they would be arithmetic by table lookup
# (``tests/redteam/attack_lookup_arithmetic.py``).
_MOVED_READS = frozenset({"gather", "dynamic_slice"})
_MOVED_WRITES = frozenset({"dynamic_update_slice", "scatter"})
_RANDOM_KEYS = frozenset({"random_split", "random_fold_in"})
# Higher-order primitives that run their sub-jaxpr once, and the parameter that holds it.
_CALLS = {
    "jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "remat2": "jaxpr",
    "checkpoint": "jaxpr",
}  # fmt: skip
_HOST_CALLBACKS = frozenset({"pure_callback", "io_callback"})
# Scalar ops folded to constants so fori_loop bounds built from literals are known. Never a
# float-to-integer conversion: numpy's cast is not XLA's out of range or on NaN (numpy gives
# INT_MIN for float32(1e10) -> int32 where XLA saturates to INT_MAX; see algzu.hlo_meter),
# so such a bound is unknown and its loop refused.
_FOLD = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "max": np.maximum, "min": np.minimum, "copy": lambda x: x, "copy_p": lambda x: x,
}  # fmt: skip

_WHILE_ERROR = "data-dependent while loop; use lax.scan or fori_loop with static bounds"


@dataclasses.dataclass(frozen=True)
class Metered:
    """One metered run.

    Attributes:
        value: the estimate as a Python float when the program returned a real scalar, else
            what it returned (as a host array where possible) for the caller to reject;
            ``None`` when it did not run to the end.
        flops: FLOPs charged. Over budget: the JAX program's full count, or flopscope's
            count including the operation that broke the budget.
        seconds: wall time of the run.
        error: ``None``, or ``"over_budget"``.
        message: one line on the error, empty otherwise.
    """

    value: Any
    flops: int
    seconds: float
    error: str | None = None
    message: str = ""


# --- JAX path: counting a jaxpr -------------------------------------------------------------


def jaxpr_flops(closed_jaxpr: jcore.ClosedJaxpr, free: Sequence[bool] | None = None) -> int:
    """FLOPs of one run of a (closed) jaxpr under the module's cost model.

    Args:
        closed_jaxpr: the program.
        free: per input, whether it is independent of the copy (a PRNG key). Work that depends
            on no other input is free. ``None``: every input is the copy's.

    Raises:
        AlgzuError: an unknown primitive, a host callback, or a while loop whose trip count
            is not known when traced.
    """
    jaxpr, consts = _unclose(closed_jaxpr)
    free = [False] * len(jaxpr.invars) if free is None else list(free)
    if len(free) != len(jaxpr.invars):
        raise AlgzuError(f"{len(free)} free flags for {len(jaxpr.invars)} inputs")
    scope = _Scope(v for v, f in zip(jaxpr.invars, free) if not f)
    scope.update(_known_consts(jaxpr.constvars, consts))
    return _jaxpr_flops(jaxpr, scope)


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of ``fn(*args)``, counted from its jaxpr (``fn`` is traced, not run). Typed PRNG
    keys among ``args`` are independent of the copy: work that depends on nothing else is free."""
    free = [is_key(leaf) for leaf in jax.tree.leaves(args)]
    return jaxpr_flops(jax.make_jaxpr(fn)(*args), free)


def is_key(leaf: Any) -> bool:
    """Whether an argument leaf is a typed PRNG key."""
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


class _Scope(dict):
    """One jaxpr's known scalar constants (for loop bounds), and its variables that depend on
    the copy's weights (``tainted``). ``charge_all``: the jaxpr runs under control that depends
    on the copy (a branch it picks), so everything in it is charged, as if it depended on it."""

    def __init__(self, tainted: Iterable[jcore.Var] = (), charge_all: bool = False):
        super().__init__()
        self.tainted = set(tainted)
        self.charge_all = charge_all


def _depends(atom: jcore.Var | jcore.Literal, scope: _Scope) -> bool:
    """Whether ``atom`` depends on the copy's weights."""
    return scope.charge_all or (isinstance(atom, jcore.Var) and atom in scope.tainted)


def _unclose(jaxpr: jcore.ClosedJaxpr | jcore.Jaxpr) -> tuple[jcore.Jaxpr, Sequence[Any]]:
    if isinstance(jaxpr, jcore.ClosedJaxpr):
        return jaxpr.jaxpr, jaxpr.consts
    return jaxpr, ()


def _known_consts(constvars: Sequence[jcore.Var], consts: Sequence[Any]) -> dict[jcore.Var, np.ndarray]:
    """Scalar constants, the only values loop-bound recognition needs."""
    known = {}
    for var, const in zip(constvars, consts):
        if not jax.dtypes.issubdtype(var.aval.dtype, jax.dtypes.extended) and np.size(const) == 1:
            known[var] = np.asarray(const)
    return known


def _value(atom: jcore.Var | jcore.Literal, known: Mapping[jcore.Var, np.ndarray]) -> np.ndarray | None:
    if isinstance(atom, jcore.Literal):
        dtype = getattr(atom.aval, "dtype", None)
        if dtype is None or jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
            return np.asarray(atom.val)
        return np.asarray(atom.val).astype(dtype)  # a Python int literal: the literal's width
    return known.get(atom)


def _jaxpr_flops(jaxpr: jcore.Jaxpr, known: _Scope) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn, known)
        _fold_constants(eqn, known)
    return total


def _sub(
    sub: jcore.ClosedJaxpr | jcore.Jaxpr,
    taint: Sequence[bool],
    args: Sequence[jcore.Var | jcore.Literal] = (),
    known: Mapping[jcore.Var, np.ndarray] | None = None,
    charge_all: bool = False,
) -> tuple[int, list[bool]]:
    """FLOPs of a sub-jaxpr whose inputs depend on the copy as ``taint`` says, and which of its
    outputs do; the caller's known constant ``args`` are passed in (loop bounds)."""
    jaxpr, consts = _unclose(sub)
    inner = _Scope((v for v, t in zip(jaxpr.invars, taint) if t), charge_all)
    inner.update(_known_consts(jaxpr.constvars, consts))
    if known is not None:
        for var, atom in zip(jaxpr.invars, args):
            value = _value(atom, known)
            if value is not None and value.size == 1:
                inner[var] = value
    cost = _jaxpr_flops(jaxpr, inner)
    return cost, [_depends(v, inner) for v in jaxpr.outvars]


def _fold_constants(eqn: jcore.JaxprEqn, known: dict[jcore.Var, np.ndarray]) -> None:
    name = eqn.primitive.name
    if name not in _FOLD and name != "convert_element_type":
        return
    values = [_value(a, known) for a in eqn.invars]
    if any(v is None or v.size != 1 for v in values):
        return
    if name == "convert_element_type":
        new_dtype = eqn.params["new_dtype"]
        if jax.dtypes.issubdtype(values[0].dtype, np.inexact) and not jax.dtypes.issubdtype(new_dtype, np.inexact):
            return  # numpy's float-to-integer cast is not XLA's (see _FOLD)
        known[eqn.outvars[0]] = values[0].astype(new_dtype)
    else:
        with np.errstate(all="ignore"):
            out = np.asarray(_FOLD[name](*values))
        known[eqn.outvars[0]] = out.astype(eqn.outvars[0].aval.dtype)  # wrapping as XLA does


def _eqn_flops(eqn: jcore.JaxprEqn, known: _Scope) -> int:
    """FLOPs of one equation; marks its outputs that depend on the copy. An equation none of
    whose inputs depends on the copy is free: it could have run before the copy existed."""
    taint = [_depends(a, known) for a in eqn.invars]
    if not any(taint) and not known.charge_all:
        return 0
    cost, outs = _eqn_cost(eqn, known, taint)
    known.tainted.update(v for v, t in zip(eqn.outvars, outs) if t)
    return cost


def _eqn_cost(eqn: jcore.JaxprEqn, known: _Scope, taint: list[bool]) -> tuple[int, list[bool]]:
    """(FLOPs, which outputs depend on the copy) of an equation some input of which does."""
    name = eqn.primitive.name
    params = eqn.params
    every = [True] * len(eqn.outvars)
    if name == "bitcast_convert_type":
        return _bitcast_flops(eqn.invars[0].aval, eqn.outvars[0].aval) * _dtype_rate(eqn), every
    if name == "convert_element_type":
        return _convert_flops(eqn.invars[0].aval, eqn.outvars[0].aval) * _dtype_rate(eqn), every
    if name in _FREE:
        return 0, every
    if name in _CALLS:
        sampler = _sampler_flops(eqn) if name in ("jit", "pjit") else None
        if sampler is not None:
            return sampler, every
        return _sub(params[_CALLS[name]], taint, eqn.invars, known, known.charge_all)
    if name == "scan":
        return _scan_flops(eqn, taint, known.charge_all)
    if name == "while":
        return _while_flops(eqn, known, taint)
    if name == "cond":
        branches = params["branches"]
        if taint[0] or known.charge_all:  # the copy picks the branch: all of it is charged
            return max(_sub(b, taint[1:], charge_all=True)[0] for b in branches), every
        runs = [_sub(b, taint[1:]) for b in branches]
        return max(cost for cost, _ in runs), [any(outs) for outs in zip(*(o for _, o in runs))]
    if name == "custom_linear_solve":
        return _sub(params["jaxprs"].solve, (), charge_all=True)[0], every
    if name in _HOST_CALLBACKS:
        raise AlgzuError(f"{name} runs host Python that the meter cannot count; use jax.numpy ops")
    counted = _first_order_flops(eqn)
    if counted is None:
        raise AlgzuError(
            f"the FLOP meter has no cost for JAX primitive {name!r}; "
            "rewrite with jax.numpy / lax ops it knows, or add it to algzu/meter.py"
        )
    work, weight = counted
    return max(int(work), 1) * weight * _dtype_rate(eqn), every


def _first_order_flops(eqn: jcore.JaxprEqn) -> tuple[int, int] | None:
    """(work, weight) of a primitive without sub-jaxprs, or None if it is unknown."""
    name = eqn.primitive.name
    params = eqn.params
    if not eqn.outvars:
        return None
    out = eqn.outvars[0].aval
    if name == "select_n":  # lowered as a tree: n - 1 selects, each after a compare unless `which` is bool
        compare = 0 if eqn.invars[0].aval.dtype == np.bool_ else 1
        return out.size * max(len(eqn.invars) - 2, 1), SELECT + compare
    if name in _ELEMENTWISE:
        weight = _ELEMENTWISE[name]
        if name == "div" and jax.dtypes.issubdtype(out.dtype, np.integer):
            weight = TRANSCENDENTAL  # integer division is numpy's floor_divide tier
        return out.size, weight
    if name in _REDUCTIONS:
        return eqn.invars[0].aval.size - out.size, 1
    if name in _CUMULATIVE:
        operand = eqn.invars[0].aval
        return operand.size - operand.size // max(operand.shape[params["axis"]], 1), _CUMULATIVE[name]
    if name == "dot_general":
        (contract, _), _ = params["dimension_numbers"]
        k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
        return out.size * (2 * k - 1), 1
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval
        k = rhs.size // rhs.shape[params["dimension_numbers"].rhs_spec[0]]
        return out.size * (2 * k - 1), 1
    if name == "sort":
        operand = eqn.invars[0].aval
        n = operand.shape[params["dimension"]]
        return params["num_keys"] * operand.size * _ceil_log2(n), SORT
    if name == "top_k":
        operand = eqn.invars[0].aval
        return operand.size * _ceil_log2(operand.shape[-1]), SORT
    if name in _SCATTER_ACCUMULATE:
        return eqn.invars[2].aval.size, 1
    if name in _MOVED_READS:
        return out.size, 1
    if name in _MOVED_WRITES:
        return eqn.invars[1 if name == "dynamic_update_slice" else 2].aval.size, 1
    if name == "random_bits":
        return out.size * -(-params["bit_width"] // 32), 1
    if name in _RANDOM_KEYS:
        return out.size * _key_words(out), 1
    if name == "threefry2x32":
        return sum(v.aval.size for v in eqn.outvars), 1
    return _linalg_flops(eqn)


def _linalg_flops(eqn: jcore.JaxprEqn) -> tuple[int, int] | None:
    name = eqn.primitive.name
    params = eqn.params
    a = eqn.invars[0].aval
    if name not in ("cholesky", "eigh", "eig", "svd", "qr", "lu", "triangular_solve"):
        return None
    batch = math.prod(a.shape[:-2])
    m, n = a.shape[-2], a.shape[-1]
    acc = flopscope.accounting
    if name == "cholesky":
        one = acc.cholesky_cost(n)
    elif name == "eigh":
        one = acc.eigh_cost(n)
    elif name == "eig":
        one = acc.eig_cost(n)
    elif name == "svd":
        one = acc.svd_cost(m, n, with_vectors=params["compute_uv"], full_matrices=params["full_matrices"])
    elif name == "qr":
        one = acc.qr_cost(m, n, "complete" if params["full_matrices"] else "reduced")
    elif name == "lu":
        k = min(m, n)  # LAPACK getrf: 2n^3/3 for a square matrix
        one = 2 * m * n * k - (m + n) * k * k + 2 * k**3 // 3
    else:  # triangular_solve: a is (m, m), m^2 per right-hand side
        b = eqn.invars[1].aval
        rhs = b.shape[-1] if params["left_side"] else b.shape[-2]
        one = m * m * rhs
    return batch * one, 1


def _ceil_log2(n: int) -> int:
    """``ceil(log2 n)``, at least 1 (flopscope's sort convention)."""
    return max(math.ceil(math.log2(n)), 1) if n > 1 else 1


def _key_words(aval: Any) -> int:
    """32-bit words per PRNG key of this key-typed aval (2 for threefry)."""
    impl = getattr(aval.dtype, "_impl", None)
    return math.prod(impl.key_shape) if impl is not None else 2


def _bitcast_flops(source: Any, result: Any) -> int:
    """A bitcast that keeps the element width reinterprets bits: free. One that splits words
    into narrower elements or joins them is shifts and masks done for nothing, which would buy
    packed-lane arithmetic (two 16-bit samples per int32 word, split and rescaled by a bitcast
    to int8: README, "SWAR packing"): 1 per element of the narrower side, as the shifts would
    cost. (Only a change of width changes the element count, as in :mod:`algzu.hlo_meter`.)"""
    return 0 if source.size == result.size else max(source.size, result.size)


def _convert_flops(source: Any, result: Any) -> int:
    """A convert that clamps or drops bits is an operation: float to unsigned saturates at 0
    (a ReLU: ``max(x, 0)``), float to bool is ``x != 0``, and an integer convert to fewer bits
    keeps the low ones (a mask: the low lane of a packed word, README, "SWAR packing"); each
    costs 1 per element, what the operation it replaces does. Rounding to a signed integer,
    widening, or keeping the width is free: a ReLU by signed saturation needs an offset add,
    which costs the max it would save. (Mirrored by :mod:`algzu.hlo_meter`.)"""
    s, r = source.dtype, result.dtype
    if jax.dtypes.issubdtype(s, np.inexact):
        clamps = r == np.bool_ or jax.dtypes.issubdtype(r, np.unsignedinteger)
    elif s == np.bool_:
        clamps = False
    else:  # bits, not bytes: int8 to int4 keeps a nibble
        narrower = jax.dtypes.issubdtype(r, np.integer) and jax.numpy.iinfo(r).bits < jax.numpy.iinfo(s).bits
        clamps = r == np.bool_ or narrower
    return result.size if clamps else 0


def _dtype_rate(eqn: jcore.JaxprEqn) -> int:
    name = eqn.primitive.name
    if name == "random_bits" or name in _RANDOM_KEYS or name == "threefry2x32":
        return 1  # a 64-bit draw is already charged as 2 words
    atoms = list(eqn.invars)
    if name not in ("argmax", "argmin"):  # an index output says nothing about the arithmetic
        atoms += eqn.outvars
    rate = 1
    for atom in atoms:
        dtype = getattr(atom.aval, "dtype", None)
        if dtype is not None and not jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
            rate = max(rate, DTYPE_RATE.get(np.dtype(dtype).name, 1))
    return rate


def _scan_flops(eqn: jcore.JaxprEqn, taint: list[bool], charge_all: bool) -> tuple[int, list[bool]]:
    """A scan: body x ``length``, plus the ``xs``/``ys`` slices that depend on the copy, moved
    at the loop counter's position per looped step (the ``dynamic_slice`` and
    ``dynamic_update_slice`` it is lowered to). Steps JAX unrolls outside the loop (all of them
    when ``1 < unroll >= length``, else the last ``length % unroll``) use static slices, which
    are free. A carry depends on the copy if its initial value does or a step makes it."""
    params = eqn.params
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    carry = taint[n_consts : n_consts + n_carry]
    consts, xs = taint[:n_consts], taint[n_consts + n_carry :]
    while True:
        body, outs = _sub(params["jaxpr"], consts + carry + xs, charge_all=charge_all)
        after = [a or b for a, b in zip(carry, outs[:n_carry])]
        if after == carry:
            break
        carry = after
    length, unroll = params["length"], params["unroll"]
    unroll = length if unroll is True else max(int(unroll), 1)
    looped = length if unroll == 1 else 0 if unroll >= length else length // unroll * unroll
    inner = params["jaxpr"].jaxpr
    read = [v for v, t in zip(inner.invars[n_consts + n_carry :], xs) if t]
    written = [v for v, t in zip(inner.outvars[n_carry:], outs[n_carry:]) if t]
    moved = looped * sum(_moved_elements(v.aval) for v in (*read, *written))
    return length * body + moved, carry + outs[n_carry:]


def _moved_elements(aval: Any) -> int:
    """Elements of one array moved, at its dtype's rate (a key counts its 32-bit words)."""
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.extended):
        return aval.size * _key_words(aval)
    return aval.size * DTYPE_RATE.get(np.dtype(aval.dtype).name, 1)


def _while_flops(eqn: jcore.JaxprEqn, known: _Scope, taint: list[bool]) -> tuple[int, list[bool]]:
    trips = _fori_trip_count(eqn, known)
    if trips is None:
        raise AlgzuError(_WHILE_ERROR)
    params = eqn.params
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    cond_consts, body_consts = taint[:n_cond], taint[n_cond : n_cond + n_body]
    carry = taint[n_cond + n_body :]
    charge_all = known.charge_all
    while True:
        cond, (test,) = _sub(params["cond_jaxpr"], cond_consts + carry, charge_all=charge_all)
        body, outs = _sub(params["body_jaxpr"], body_consts + carry, charge_all=charge_all)
        if test and not charge_all:  # the copy decides when the loop stops: all of it is charged
            charge_all, carry = True, [True] * len(carry)
            continue
        after = [a or b for a, b in zip(carry, outs)]
        if after == carry:
            break
        carry = after
    return trips * (body + cond) + cond, carry


def _fori_trip_count(eqn: jcore.JaxprEqn, known: Mapping[jcore.Var, np.ndarray]) -> int | None:
    """Trip count of a ``fori_loop``-shaped while loop with known bounds, else None.

    The shape ``lax.fori_loop`` emits when its bounds are not Python ints: the condition is
    the single equation ``lt i upper``, the body returns ``i + 1`` for ``i`` and ``upper``
    unchanged, and the initial ``i`` and ``upper`` are literals or folded constants.
    """
    params = eqn.params
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    cond, body = params["cond_jaxpr"].jaxpr, params["body_jaxpr"].jaxpr
    operands = eqn.invars
    init = operands[n_cond + n_body :]
    cond_carry, body_carry = cond.invars[n_cond:], body.invars[n_body:]
    if len(cond.eqns) != 1:
        return None
    (test,) = cond.eqns
    if test.primitive.name != "lt" or test.outvars[0] is not cond.outvars[0]:
        return None
    counter, bound = test.invars
    if counter not in cond_carry or not jax.dtypes.issubdtype(counter.aval.dtype, np.integer):
        return None  # a float counter runs ceil(upper - lower) trips, not int(upper) - int(lower)
    i = cond_carry.index(counter)
    if isinstance(bound, jcore.Literal):
        upper = _value(bound, known)
    elif bound in cond_carry:
        j = cond_carry.index(bound)
        if body.outvars[j] is not body_carry[j]:
            return None  # the bound changes inside the loop
        upper = _value(init[j], known)
    elif bound in cond.invars[:n_cond]:
        upper = _value(operands[cond.invars.index(bound)], known)
    else:
        return None
    lower = _value(init[i], known)
    step = next((e for e in body.eqns if body.outvars[i] in e.outvars), None)
    if (
        upper is None
        or lower is None
        or step is None
        or step.primitive.name != "add"
        or body_carry[i] not in step.invars
        or not any(isinstance(a, jcore.Literal) and a.val == 1 for a in step.invars)
    ):
        return None
    return max(0, int(upper) - int(lower))


def _sampler_flops(eqn: jcore.JaxprEqn) -> int | None:
    """flopscope's price for a genuine ``jax.random`` normal/uniform/randint call, else None."""
    name = eqn.params.get("name")
    if name not in SAMPLER_FLOPS or len(eqn.outvars) != 1:
        return None
    in_avals = tuple((a.aval.shape, a.aval.dtype, getattr(a.aval, "weak_type", False)) for a in eqn.invars)
    out = eqn.outvars[0].aval
    reference = _reference_sampler(name, in_avals, out.shape, out.dtype)
    if reference is None or reference != _fingerprint(eqn.params["jaxpr"]):
        return None
    return max(out.size, 1) * SAMPLER_FLOPS[name] * DTYPE_RATE.get(np.dtype(out.dtype).name, 1)


@functools.lru_cache(maxsize=256)
def _reference_sampler(name: str, in_avals: tuple, shape: tuple[int, ...], dtype: Any) -> str | None:
    """The body ``jax.random`` itself traces for this sampler at these avals (None if none)."""
    structs = [jax.ShapeDtypeStruct(s, d, weak_type=w) for s, d, w in in_avals]
    samplers = {
        "_normal": lambda k: jax.random.normal(k, shape, dtype),
        "_uniform": lambda k, lo, hi: jax.random.uniform(k, shape, dtype, lo, hi),
        "_randint": lambda k, lo, hi: jax.random.randint(k, shape, lo, hi, dtype),
    }
    try:
        closed = jax.make_jaxpr(samplers[name])(*structs)
    except Exception:  # noqa: BLE001 - any mismatch (batched key, odd avals) means "not genuine"
        return None
    for eqn in closed.jaxpr.eqns:
        if eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == name:
            return _fingerprint(eqn.params["jaxpr"])
    return None


def _fingerprint(jaxpr: jcore.ClosedJaxpr | jcore.Jaxpr) -> tuple:
    """The structure of a jaxpr: primitives, shapes and non-jaxpr params, without variable
    names (which depend on what else was traced before, so ``str`` is not stable)."""
    inner, _ = _unclose(jaxpr)
    out = []
    for eqn in inner.eqns:
        params = []
        for k, v in sorted(eqn.params.items()):
            if isinstance(v, (jcore.ClosedJaxpr, jcore.Jaxpr)):
                params.append((k, _fingerprint(v)))
            elif k not in ("name",):
                params.append((k, repr(v)))
        out.append((eqn.primitive.name, tuple(str(v.aval) for v in eqn.invars),
                    tuple(str(v.aval) for v in eqn.outvars), tuple(params)))
    return tuple(out)


# --- NumPy path: flopscope ------------------------------------------------------------------


def to_flopscope(model: Model) -> Model:
    """The same model with read-only float32 flopscope arrays as weights (for numpy estimators).

    The weights are copies, so an estimator cannot change the harness's arrays; every
    operation on them dispatches to ``flopscope.numpy`` and is counted.
    """
    params = {}
    for name, value in model.params.items():
        array = np.array(value, dtype=np.float32)  # a copy
        array.flags.writeable = False
        params[name] = fnp.asarray(array)
    return Model(model.spec, params)


def run_numpy(fn: Callable[..., Any], args: Sequence[Any], budget_flops: int) -> Metered:
    """Run ``fn(*args)`` eagerly inside a flopscope budget of ``budget_flops``.

    Only ``flopscope.numpy`` calls (and operators on flopscope arrays) are counted. The run
    stops at the first call that would exceed the budget.

    Returns:
        :class:`Metered`; ``error="over_budget"`` with ``value=None`` if flopscope stopped
        the run. ``flops`` then includes the refused call.

    Raises:
        AlgzuError: the budget is not positive. Exceptions from ``fn`` propagate.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", flopscope.SymmetryLossWarning)
        with flopscope.BudgetContext(flop_budget=int(budget_flops), quiet=True) as budget:
            start = time.perf_counter()
            try:
                out = fn(*args)
            except flopscope.BudgetExhaustedError as e:
                seconds = time.perf_counter() - start
                message = str(e).split(". See")[0]  # drop flopscope's docs link
                return Metered(None, budget.flops_used + e.flop_cost, seconds, OVER_BUDGET, message)
            seconds = time.perf_counter() - start
            flops = budget.flops_used
    return Metered(_host_value(out), flops, seconds)


# --- shared ---------------------------------------------------------------------------------


def _host_value(out: Any) -> Any:
    """A real scalar as a Python float; anything else as a host array (or as is)."""
    try:
        array = np.asarray(out)
    except Exception:  # noqa: BLE001 - the caller rejects what cannot be converted
        return out
    if array.shape == () and array.dtype.kind in "biuf":  # bool, int, unsigned, float
        return float(array)
    return array

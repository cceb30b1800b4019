"""The FLOP meter on exported StableHLO: price a program from its bytes, trusting nothing else.

A sealed estimator traces its program where no weights live and hands back a
``jax.export.Exported``; this module is the trusted side's meter for it. It deserializes the
bytes without running any Python of theirs (:func:`deserialize`), checks the program's
signature (:func:`check_signature`), and counts the FLOPs of one run from the StableHLO module
itself (:func:`exported_flops`), walking it with the MLIR Python bindings that jaxlib ships.
:func:`count_flops` exports and meters a function in one call, so an estimator can plan with
the very meter that scores it.

Cost model: the one of :mod:`algzu.meter` (flopscope 0.12's weights), applied to StableHLO ops
instead of jaxpr primitives:

===============================  ==============================================================
StableHLO / CHLO                 FLOPs charged
===============================  ==============================================================
add subtract multiply divide     1 per output element (integer ``divide`` 16, as the jaxpr
negate maximum minimum abs       meter's integer ``div``)
sign floor ceil round_* compare
and or not xor shift_* popcnt
count_leading_zeros is_finite
sqrt reduce_precision complex
clamp / select / rsqrt           2 / 4 / 2 per output element
exponential(_minus_one) log      16 per output element (flopscope's transcendental tier)
log_plus_one tanh logistic sine
cosine tan atan2 cbrt power
remainder
dot_general, dot, convolution    ``(2k-1)`` per output element
reduce                           standard body (one add/mul/max/min/and/or/xor, or the
                                 variadic body ``lax.argmax``/``argmin`` lowers to): ``n-1``
                                 per output, ``n`` if the init is not the body's identity;
                                 any other body: its cost x ``n`` per output
reduce_window                    cumulative form (window = the whole axis, padded ``n-1`` on
                                 one side; body add/mul/max/min, or ``cumlogsumexp``'s at 16;
                                 init the body's identity): ``n-1`` per row; any other:
                                 body x window x outputs
sort                             comparator identical to ``lax.sort``'s for some ``num_keys``:
                                 ``4*num_keys*size*ceil(log2 n)``; any other comparator:
                                 ``max(body, 4)*size*ceil(log2 n)``
scatter                          body returning the update, or one add/mul/max/min: 1 per
                                 update element; any other: body per update element
gather, dynamic_slice,           1 per element read (``dynamic_update_slice``: written), as
dynamic_update_slice             the jaxpr meter: positions the program computes; a lookup
                                 table would otherwise be free arithmetic
select_and_scatter, map          body x its number of applications (never 0)
while                            counted loops only (below); any other is refused
case, if                         the dearest branch
func.call                        the callee, once per call site; recursion refused
composite                        ``chlo.erf/sinh/cosh/asin/acos/asinh/acosh/atanh``: 16 per
                                 element, ``chlo.top_k``: as a sort, when the decomposition
                                 is identical to JAX's; otherwise the decomposition's cost
cholesky, triangular_solve,      flopscope's formulas (as :mod:`algzu.meter`), complex x11;
LAPACK custom calls              a LAPACK call whose operands, results or options are not
                                 what its kernel assumes is refused (``_LAPACK_OPTIONS``)
constant iota broadcast(_in_dim) 0 (data movement)
reshape transpose slice
concatenate pad reverse convert
(one that clamps or drops bits:
float to unsigned or bool, integer
to fewer bits: 1 per element)
bitcast_convert (same width: one
that splits or joins words costs 1
per narrower element) real imag
optimization_barrier tuple
get_tuple_element;
sdy.sharding_constraint and the
custom calls ``Sharding``,
``SPMDFullToShardShape``,
``SPMDShardToFullShape``
===============================  ==============================================================

64-bit operands or results double the charge, complex64 ones multiply it by 11 (complex128 by
22), and every charged op costs at least 1, as in :mod:`algzu.meter`.

**Only work on the copy is charged**, as in :mod:`algzu.meter`: an op none of whose operands
or results depends on the copy's weights is free. Which ``main`` arguments are independent of
the copy is the caller's word (``free``: the sealed program's key data); values are marked
function by function before the walk prices them (``_Walk.taint_op``): a result depends on
the copy if an operand does; a ``while`` carry if its initial value does or the body makes it
(to a fixed point); a call's results as its callee's body says for that pattern of arguments;
any other op with regions (reduce, sort, scatter, map) whole, if an operand or a value it
captures does. A ``case`` / ``if`` whose index or a ``while`` whose stop test depends on the
copy has everything in it marked, calls included: charged whole, as before this rule.

**What is recognised, and how.** JAX lowers some single jaxpr primitives to many StableHLO
ops. Where the jaxpr meter charges such a primitive a fixed price, this meter charges the same
price for the lowered ops *only when they are identical to what JAX itself emits for the same
types*: the trusted side exports the genuine JAX call (cached per types) and compares
structure, attributes and constants, never names, debug locations or the order of independent
ops. A look-alike cannot buy cheap compute; anything else is counted op by op. Three kinds:

* Private functions, with every function they call: ``_normal`` / ``_uniform`` /
  ``_randint`` (16 / 3 / 1 per sample, ``jax.random``'s samplers; ``_uniform`` also as
  ``jax.random.gumbel`` calls it), ``threefry2x32`` (1 per output word), ``_threefry_fold_in``
  and ``_threefry_split`` (1 per key word produced).
* Inline expansions: ``erf_inv``, ``erfc``, ``lgamma``, ``digamma``, ``bessel_i0e``,
  ``bessel_i1e``, ``logistic``, ``exp2``, ``igamma``, ``igammac`` (16 per element),
  ``nextafter`` (1), ``jax.random.bits`` on a key or a ``vmap``-ed batch of keys (1 per 32-bit
  word), a ``gather`` in ``fill`` mode (1 per element read, as the jaxpr meter's one
  ``gather``: its out-of-bounds mask is free), and, free as in the jaxpr meter,
  ``astype(bool)`` (``x != 0``) and ``jax.random.key(seed)`` (two bit operations). The
  expansion must be a sub-graph of one block whose charged ops feed nothing outside it.
* Region bodies: the reductions, cumulative windows and sort comparators above.

**Loops.** A ``stablehlo.while`` is accepted only as a counted loop: the condition is a single
``compare LT`` (signed for a signed counter, unsigned for an unsigned one) of an integer carry
``i`` against a bound known when metering (a constant, folded through scalar arithmetic and
call arguments, or a carry the body returns unchanged whose initial value is known), and the
body returns ``i + 1``. Trips = ``max(0, upper - lower)``. Two lowerings, charged as the jaxpr
meter charges their source:

* ``lax.scan`` (and ``fori_loop`` with Python-int bounds, which becomes a scan) lowers to a
  loop whose bound is a constant: ``trips x (body - the counter's increment)``; the compare
  and the increment are the scan's own bookkeeping, which the jaxpr meter does not see. The
  body's ``dynamic_slice`` of ``xs`` and ``dynamic_update_slice`` of ``ys`` are charged as
  any, and the jaxpr meter charges the scan the same elements per looped step.
* ``fori_loop`` with array bounds is a jaxpr ``while`` whose bound is a carry:
  ``trips x (body + cond) + cond``.

**Known differences from the jaxpr meter.** The StableHLO is the program that runs; the
jaxpr and its lowering do different work here:

* ``integer_pow`` (``x ** 2``, ``x ** 3``): the jaxpr meter charges 16 per element; the lowering
  is square-and-multiply (``x*x`` for ``x**2``, indistinguishable from ``jnp.square``), charged
  1 per multiply. ``moments``'s exact pair moments (``_bvn_cdf``) square with ``** 2`` once per
  unit pair plus twice per Gauss node: 5.2e6 of its 5.9e7 FLOPs on ``2nd_argmax-d8-n5`` at 1e9.
* ``jnp.diagonal`` of a square ``n x n`` matrix traces a ``platform_dependent`` ``cond``: a
  Mosaic branch ``sum(eye * a)`` and the default gather. The jaxpr meter charges the ``eye``
  (``add`` and ``eq``, ``2n^2``) and the dearer branch, ``max(2n^2 - n, 12n)``; exported for
  CPU only the default branch is left (``12n``: two index normalisations of ``lt``, ``add``,
  ``select``) and the ``eye`` is dead. ``moments`` calls it 2-3 times per RNN step: 1.3e6 of
  its 3.6e8 FLOPs on M16,10 at 1e9.
* Dead code in general: JAX drops what no output needs before lowering (a ``fori_loop``
  counter the body never reads, the unused half of a JVP), which the jaxpr meter still charges.
* ``select_n`` with an integer selector lowers to a tree of ``compare`` + ``select`` (5 per
  level) where the jaxpr meter charges 4.
* A ``while_loop`` written by hand with a constant bound (not ``fori_loop``) looks like a scan
  here: ``trips x (body - 1)`` where the jaxpr meter charges ``trips x (body + 1) + 1``.
* Linear algebra: the LAPACK call is priced with flopscope's formula, but the lowering adds
  ops the jaxpr meter never sees: a failed factorisation becomes NaN through a ``compare`` on
  LAPACK's info code and a ``select`` on each output (1 + 4 per output element), LU adds its
  pivots-to-permutation loop. QR's reduced/complete mode is not read: ``geqrf`` is charged
  ``qr_cost(m, n, "reduced")``, and ``orgqr`` (forming Q) its factorisation count again on
  its own shape, ``2 m n k - 2 k^3 / 3``: up to 6f8675f it was free, and a standalone
  ``householder_product`` did matrix products for 1 FLOP
  (``tests/redteam/attack_householder_matmul.py``). Complex LAPACK calls cost 11x the real
  formula (22x in double precision), as every complex op; up to fde9efd they cost the real
  one.
* Host callbacks (``pure_callback``, ``io_callback``, ``jax.debug.callback`` / ``print``):
  ``jax.export`` refuses to serialize them, so such a program cannot be sealed at all (the
  jaxpr meter refuses the first two and counts the debug ones free).

``tests/test_hlo_meter.py`` pins this meter, on every program the shipped JAX estimators produce
at every suite budget, to the jaxpr meter with exactly the first three rules changed; the
``sampling`` and ``stratified`` programs cost exactly what the jaxpr meter charges.

**Safety.** The bytes come from an adversary. :func:`deserialize` refuses custom pytree nodes,
effects and VJPs *before* JAX sees them (JAX's own deserializer would run registered classes'
code on attacker data), so deserializing runs no Python of theirs; the module is parsed and
verified by MLIR (C++). The walk refuses recursion and stops after :data:`MAX_STEPS` steps and
:data:`MAX_REFERENCES` distinct reference lowerings, so it cannot loop forever. Every op or
custom call it does not know is refused (:class:`Refused`), never charged 0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flopscope.accounting
import jax
import jax.numpy as jnp
import numpy as np
from jax import export, lax
from jax._src.interpreters import mlir
from jax._src.lib import _jax
from jax._src.lib.mlir import ir
from jax._src.lib.mlir.dialects import hlo

from algzu.errors import AlgzuError
from algzu.meter import SAMPLER_FLOPS, SELECT, SORT, TRANSCENDENTAL, _ceil_log2, is_key

# A walk visits each op once per call site and loop body it sits in; legitimate programs
# (the shipped estimators at 1e9 FLOPs) take at most ~6e3 steps. Past this the program is refused:
# an adversary could otherwise nest calls to make the walk exponential.
MAX_STEPS = 1_000_000
# Most distinct reference lowerings (each an export, ~30 ms) one program may make the meter
# build; the shipped programs need at most ~60.
MAX_REFERENCES = 256
# Largest serialized Exported accepted (the biggest shipped program is ~120 kB).
MAX_BYTES = 64 << 20
# Deepest pytree accepted in an Exported's in/out tree (a dict of weights is depth 2).
_MAX_TREE_DEPTH = 16


class Refused(AlgzuError):
    """A program the meter will not price (unknown op, host callback, unbounded loop...)."""


# --- deserializing and checking ------------------------------------------------------------


def deserialize(blob: bytes | bytearray, max_bytes: int = MAX_BYTES) -> export.Exported:
    """An :class:`jax.export.Exported` from untrusted bytes, refusing what could run code.

    Before handing the bytes to ``jax.export.deserialize``, the flatbuffer is read directly
    and refused if its input or output tree has a custom pytree node (JAX would call the
    registered class's deserializer on attacker data), if it declares effects (JAX would
    instantiate the named effect classes), or if it carries a VJP.

    Raises:
        Refused: the bytes are too large, malformed, or carry any of the above.
    """
    if len(blob) > max_bytes:
        raise Refused(f"serialized program is {len(blob):,} bytes, more than the {max_bytes:,} accepted")
    from jax._src.export import serialization_generated as fb  # needs the flatbuffers package

    try:
        root = fb.Exported.GetRootAsExported(bytearray(blob), 0)
        _check_tree(root.InTree(), fb, 0)
        _check_tree(root.OutTree(), fb, 0)
        if root.OrderedEffectsLength() or root.UnorderedEffectsLength():
            raise Refused("the program declares effects (callbacks, ordered I/O); sealed programs have none")
        if root.Vjp() is not None:
            raise Refused("the program carries a VJP; export it with vjp_order=0")
    except Refused:
        raise
    except Exception as e:  # noqa: BLE001 - malformed flatbuffers raise anything
        raise Refused(f"cannot read the serialized program: {type(e).__name__}: {e}"[:300]) from None
    try:
        return export.deserialize(bytearray(blob))
    except Exception as e:  # noqa: BLE001
        raise Refused(f"cannot deserialize the program: {type(e).__name__}: {e}"[:300]) from None


def _check_tree(node: Any, fb: Any, depth: int) -> None:
    if node is None:
        raise Refused("the program has no pytree definition")
    if depth > _MAX_TREE_DEPTH:
        raise Refused(f"pytree deeper than {_MAX_TREE_DEPTH}")
    kinds = fb.PyTreeDefKind
    if node.Kind() not in (kinds.leaf, kinds.none, kinds.tuple, kinds.list, kinds.dict):
        raise Refused("the program's pytree has a custom node; only tuples, lists, dicts and None are accepted")
    for i in range(node.ChildrenLength()):
        _check_tree(node.Children(i), fb, depth + 1)


def check_signature(exported: export.Exported, in_args: Any, out: Any) -> None:
    """Refuse an Exported that is not a single-device CPU program of the expected signature.

    Args:
        exported: the deserialized program.
        in_args: the arguments the trusted side will pass, as a pytree of arrays or
            ``jax.ShapeDtypeStruct`` (e.g. ``(params_dict, key_data)``).
        out: the expected result, an array or ``jax.ShapeDtypeStruct`` (a pytree of them).

    Raises:
        Refused: other platforms, more than one device, effects, disabled safety checks,
            shape polymorphism, or input/output trees, shapes or dtypes that differ.
    """
    if tuple(exported.platforms) != ("cpu",):
        raise Refused(f"program exported for platforms {tuple(exported.platforms)}, expected ('cpu',)")
    if exported.nr_devices != 1:
        raise Refused(f"program exported for {exported.nr_devices} devices, expected 1")
    if exported.ordered_effects or exported.unordered_effects:
        raise Refused("the program has effects; sealed programs have none")
    if exported.disabled_safety_checks:
        raise Refused(f"the program disables safety checks {exported.disabled_safety_checks}")
    if exported.uses_global_constants:
        raise Refused("the program is shape-polymorphic; export it on concrete shapes")
    _kept_inputs(exported)
    _check_avals("input", exported.in_tree, exported.in_avals, in_args, exported.fun_name)
    _check_avals("output", exported.out_tree, exported.out_avals, out, exported.fun_name)


def _check_avals(what: str, tree: Any, avals: Sequence[Any], expected: Any, fun_name: str) -> None:
    leaves, expected_tree = jax.tree.flatten(expected)
    want = [(tuple(np.shape(x)), np.dtype(x.dtype)) for x in leaves]
    # JAX exports a function's (args, kwargs) as its input tree.
    if what == "input":
        expected_tree = jax.tree.structure((tuple(expected) if isinstance(expected, tuple) else (expected,), {}))
    if tree != expected_tree:
        raise Refused(f"program {fun_name!r} has {what} tree {tree}, expected {expected_tree}")
    got = [(tuple(a.shape), np.dtype(a.dtype)) for a in avals]
    if got != want:
        raise Refused(f"program {fun_name!r} has {what} shapes/dtypes {got}, expected {want}")


def _kept_inputs(exported: export.Exported) -> tuple[int, ...]:
    """The inputs ``main`` takes, as ``module_kept_var_idx`` says, checked.

    JAX's ``Exported.call`` passes ``main`` the inputs whose position is *in* that tuple, in
    input order; the meter maps ``main``'s argument ``j`` to input ``kept[j]``. The two agree
    only if the tuple is strictly increasing within the inputs; the field comes with the
    estimator's bytes, so it is checked, not trusted (up to 6f8675f a tuple claiming every
    argument was the key made a forward pass on the weights free:
    ``tests/redteam/attack_kept_var_idx.py``).
    """
    kept = tuple(int(i) for i in exported.module_kept_var_idx)
    n = len(exported.in_avals)
    if any(b <= a for a, b in zip(kept, kept[1:])) or any(not 0 <= i < n for i in kept):
        raise Refused(f"module_kept_var_idx {kept} is not a strictly increasing list of the {n} inputs' positions")
    return kept


# --- public metering entry points ----------------------------------------------------------


def exported_flops(exported: export.Exported, free: Sequence[int] = ()) -> int:
    """FLOPs of one run of an exported program, counted from its StableHLO (see module doc).

    Args:
        exported: the program.
        free: the positions, among its flat inputs, of those independent of the copy (the
            key's data): work that depends on nothing else is free.

    Raises:
        Refused: an op, custom call or loop the meter cannot price, recursion, or a module
            too large to walk.
    """
    kept = _kept_inputs(exported)  # the module's arguments, as positions of the inputs
    args = [(tuple(exported.in_avals[i].shape), np.dtype(exported.in_avals[i].dtype)) for i in kept]
    return module_flops(exported.mlir_module_serialized, [j for j, i in enumerate(kept) if i in set(free)], args)


def module_flops(serialized: bytes, free: Sequence[int] = (), args: Sequence[tuple] | None = None) -> int:
    """FLOPs of one run of the ``main`` function of a serialized StableHLO portable artifact;
    ``free``: positions of ``main``'s arguments that are independent of the copy; ``args``:
    if given, the ``(shape, dtype)`` each argument of ``main`` must have, in order."""
    with mlir.make_ir_context():
        try:
            module = _jax.mlir.deserialize_portable_artifact(serialized)
        except Exception as e:  # noqa: BLE001 - malformed bytecode raises anything
            raise Refused(f"cannot parse the StableHLO module: {type(e).__name__}: {e}"[:300]) from None
        try:
            module.operation.verify()
        except Exception as e:  # noqa: BLE001
            raise Refused(f"the StableHLO module does not verify: {e}"[:300]) from None
        if args is not None:
            _check_main_args(module, args)
        try:
            return _Walk(module, free).total()
        except Refused:
            raise
        except RecursionError:
            raise Refused("the StableHLO module is nested too deeply to meter") from None
        except Exception as e:  # noqa: BLE001 - hostile bytes may break any assumption of the walk
            raise Refused(f"cannot meter the module: {type(e).__name__}: {e}"[:300]) from None


def _check_main_args(module: ir.Module, args: Sequence[tuple]) -> None:
    """Refuse a module whose ``main`` does not take exactly ``args`` (shape, dtype); called in
    the module's MLIR context (element types named as JAX lowers the dtypes)."""
    main = _functions(module).get("main")
    if main is None:
        raise Refused("the module has no main function")
    inputs = ir.FunctionType(ir.TypeAttr(main.attributes["function_type"]).value).inputs
    got = [_tensor(t) for t in inputs]
    want = [(tuple(shape), str(mlir.dtype_to_ir_type(dtype))) for shape, dtype in args]
    if got != want:
        raise Refused(f"main takes {got}, but the program's inputs are {want}")


def export_program(fn: Callable[..., Any], *args: Any) -> export.Exported:
    """``fn`` exported for CPU on the shapes of ``args`` (arrays, ``ShapeDtypeStruct``, pytrees
    of them, PRNG keys). Typed PRNG keys travel as their ``uint32`` key data, since an
    exported program takes plain arrays; ``fn`` still receives keys.

    Raises:
        Refused: ``jax.export`` cannot export it (host callbacks: ``pure_callback``,
            ``io_callback``, ``jax.debug.callback`` / ``print``). Errors from tracing ``fn``
            propagate.
    """
    leaves, tree = jax.tree.flatten(args)
    specs, impls = [], []
    for leaf in leaves:
        dtype = leaf.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            impl = dtype._impl
            specs.append(jax.ShapeDtypeStruct(tuple(leaf.shape) + tuple(impl.key_shape), jnp.uint32))
            impls.append(impl)
        else:
            specs.append(jax.ShapeDtypeStruct(tuple(np.shape(leaf)), dtype))
            impls.append(None)

    def flat_fn(*flat):
        restored = [x if impl is None else jax.random.wrap_key_data(x, impl=impl) for x, impl in zip(flat, impls)]
        return fn(*jax.tree.unflatten(tree, restored))

    try:
        return export.export(jax.jit(flat_fn), platforms=["cpu"])(*specs)
    except NotImplementedError as e:  # e.g. "serialization of host_callbacks is not yet implemented"
        raise Refused(f"jax.export refuses the program: {e}") from None


def count_flops(fn: Callable[..., Any], *args: Any) -> int:
    """FLOPs of ``fn(*args)`` as this meter prices its exported StableHLO (traced, not run).

    The same meaning as :func:`algzu.meter.count_flops`, through ``jax.export``, so a program
    can be planned with the meter that will score it. Typed PRNG keys among ``args`` are
    independent of the copy.
    """
    free = [i for i, leaf in enumerate(jax.tree.leaves(args)) if is_key(leaf)]
    return exported_flops(export_program(fn, *args), free)


# --- types and constants -------------------------------------------------------------------

_NP_DTYPES = {
    "i1": np.bool_, "i8": np.int8, "i16": np.int16, "i32": np.int32, "i64": np.int64,
    "ui8": np.uint8, "ui16": np.uint16, "ui32": np.uint32, "ui64": np.uint64,
    "f16": np.float16, "f32": np.float32, "f64": np.float64,
}  # fmt: skip
_WIDE = frozenset({"f64", "i64", "ui64", "complex<f64>"})
_JAX_DTYPES = {"i1": jnp.bool_, "f32": jnp.float32, "f64": jnp.float64, "f16": jnp.float16, "bf16": jnp.bfloat16,
               "i8": jnp.int8, "i16": jnp.int16, "i32": jnp.int32, "i64": jnp.int64,
               "ui8": jnp.uint8, "ui16": jnp.uint16, "ui32": jnp.uint32, "ui64": jnp.uint64}  # fmt: skip


def _tensor(t: ir.Type) -> tuple[tuple[int, ...], str]:
    """(shape, element type name) of a static tensor type; refuses anything else."""
    if not isinstance(t, ir.RankedTensorType):
        raise Refused(f"the meter prices only ranked tensors, got {t}")
    if not t.has_static_shape:
        raise Refused(f"dynamic shape {t}; export on concrete shapes")
    return tuple(t.shape), str(t.element_type)


def _size(value: ir.Value) -> int:
    return math.prod(_tensor(value.type)[0])


def _elem(value: ir.Value) -> str:
    return _tensor(value.type)[1]


# Per element type: 64-bit work costs x2 (flopscope's dtype rates); complex work costs
# flopscope's dearest complex factor, x11 (a divide), so that two reals packed in one complex
# never buy two operations for one (``tests/redteam/attack_complex_packing.py``).
_RATES = {"f64": 2, "i64": 2, "ui64": 2, "complex<f32>": 11, "complex<f64>": 22}


def _rate(values: Sequence[ir.Value]) -> int:
    """The dtype rate of an op: the largest of its operands' and results' (1 by default)."""
    return max((_RATES.get(_elem(v), 1) for v in values), default=1)


def _bits(elem: str) -> int:
    return int(re.sub(r"\D", "", elem) or 0)


def _convert_cost(source: ir.Value, result: ir.Value) -> int:
    """A convert that clamps or drops bits costs 1 per element (float to unsigned or bool,
    integer to fewer bits: :func:`algzu.meter._convert_flops`); any other is free."""
    s, r = _elem(source), _elem(result)
    if s.startswith(("f", "bf", "complex")):
        clamps = r == "i1" or r.startswith("ui")
    else:
        clamps = r.startswith(("i", "ui")) and _bits(r) < _bits(s)
    return _size(result) * _rate([source, result]) if clamps else 0


def _named(op: ir.Operation) -> list[tuple[str, Any]]:
    attrs = op.attributes
    return [(attrs[i].name, attrs[i].attr) for i in range(len(attrs))]


def _attr(op: ir.Operation, name: str) -> Any:
    return op.attributes[name] if name in op.attributes else None


def _ints(attr: Any) -> list[int]:
    return [] if attr is None else [int(x) for x in attr]


def _scalar(attr: Any, elem: str) -> np.generic | None:
    """The value of a one-element dense constant as a numpy scalar of its type (None if not)."""
    if elem not in _NP_DTYPES or not isinstance(attr, ir.DenseElementsAttr) or not attr.is_splat:
        return None
    value = attr.get_splat_value()
    if isinstance(value, ir.BoolAttr):
        raw: Any = value.value
    elif isinstance(value, ir.IntegerAttr):
        raw = value.value
        bits = int(elem.lstrip("ui"))
        if elem.startswith("ui") and raw < 0:
            raw += 1 << bits  # the binding reads unsigned values as signed
    elif isinstance(value, ir.FloatAttr):
        raw = value.value
    else:
        return None
    return np.array(raw).astype(_NP_DTYPES[elem])[()]


def _owner(value: ir.Value) -> ir.Operation | None:
    """The op that defines ``value`` (None for a block argument)."""
    if isinstance(value, ir.OpResult):
        return value.owner.operation
    return None


def _base(name: str) -> str:
    """A private function's name without JAX's ``_N`` de-duplication suffix."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


# --- structural fingerprints ---------------------------------------------------------------

# Structure -> small int, shared by every module this process meters, so that a fingerprint
# taken in a reference module compares with one taken in an untrusted module. Keys are
# Merkle-style: an op's key holds the ids of its operands, never their position in the block.
_INTERNED: dict[tuple, int] = {}
# Past this many structures the table and every cache of reference fingerprints are dropped
# (a long-running trusted process meters many hostile modules).
_MAX_INTERNED = 1 << 21


def _intern(key: tuple) -> int:
    found = _INTERNED.get(key)
    if found is None:
        found = _INTERNED[key] = len(_INTERNED)
    return found


class _Fingerprints:
    """Structural ids of functions and regions, without names, locations or op order: two
    pieces of code with equal ids compute the same thing with the same ops (every op counts,
    dead ones included; callees are compared by *their* structure)."""

    _SKIP_FUNC_ATTRS = frozenset({"sym_name", "sym_visibility", "arg_attrs", "res_attrs"})

    def __init__(self, funcs: Mapping[str, ir.Operation], tick: Callable[[], None]):
        self.funcs = funcs
        self.tick = tick
        self.memo: dict[str, int] = {}
        self.active: set[str] = set()
        self.ids: dict[ir.Value, int] = {}
        self.captured = False

    def closed_region(self, region: ir.Region) -> int | None:
        """A region's id, or None if it reads non-constant values from outside itself (their
        values are not part of an id, so such a region is never taken as genuine).

        Its values get ids in a map of their own: an enclosing region's block arguments,
        fingerprinted before, would otherwise keep ids that look like this region's own
        arguments at the same position (``("arg", level, i, type)``), and a body reading them
        would pass for one reading its own."""
        outer, self.ids = self.ids, {}
        self.captured = False
        try:
            fp = self.region(region, 1)
        finally:
            self.ids = outer
        return None if self.captured else fp

    def func(self, name: str) -> int:
        if name in self.memo:
            return self.memo[name]
        if name not in self.funcs:
            raise Refused(f"call to undefined function @{name}")
        if name in self.active:
            raise Refused(f"function @{name} calls itself (recursion is not metered)")
        self.active.add(name)
        op = self.funcs[name]
        attrs = tuple((k, str(v)) for k, v in _named(op) if k not in self._SKIP_FUNC_ATTRS)
        fp = _intern(("func", attrs, self.region(op.regions[0], 0)))
        self.active.discard(name)
        self.memo[name] = fp
        return fp

    def region(self, region: ir.Region, level: int) -> int:
        blocks = []
        for block in region.blocks:
            for i, arg in enumerate(block.arguments):
                self.ids[arg] = _intern(("arg", level, i, str(arg.type)))
            ops = [self.op(o.operation, level) for o in block.operations]
            # Pure ops: the multiset of ops (the terminator's id holds what is returned).
            blocks.append((len(block.arguments), tuple(sorted(ops))))
        return _intern(("region", tuple(blocks)))

    def op(self, op: ir.Operation, level: int) -> int:
        self.tick()
        operands = tuple(self.value(v, level) for v in op.operands)
        regions = tuple(self.region(r, level + 1) for r in op.regions)
        fp = _intern((self.key(op), operands, regions))
        for i, r in enumerate(op.results):
            self.ids[r] = _intern(("res", fp, i))
        return fp

    def value(self, v: ir.Value, level: int) -> int:
        if v in self.ids:
            return self.ids[v]
        # A value from outside the code being fingerprinted: a constant is taken by value (JAX
        # hoists a comparator's constants out of it); anything else leaves the code open.
        owner = _owner(v)
        if owner is not None and owner.name == "stablehlo.constant":
            self.op(owner, level)
            return self.ids[v]
        self.captured = True
        return _intern(("outer", str(v.type)))

    def key(self, op: ir.Operation) -> tuple:
        """Name, attributes (callee by structure) and result types of one op."""
        attrs = []
        for name, attr in _named(op):
            if name in ("callee", "decomposition"):
                attrs.append((name, self.func(ir.FlatSymbolRefAttr(attr).value)))
            else:
                attrs.append((name, str(attr)))
        return (op.name, tuple(sorted(attrs, key=lambda x: x[0])), tuple(str(r.type) for r in op.results))


# --- references: what JAX itself emits -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Reference:
    """A reference lowering as plain Python data (independent of any MLIR context)."""

    graph: tuple  # nodes (op key, operands, region ids) in definition order
    root: tuple  # ("res", node, result number) of the value the expansion returns
    n_args: int


def _export_reference(fn: Callable[..., Any], specs: Sequence[jax.ShapeDtypeStruct]) -> bytes | None:
    try:
        return export.export(jax.jit(fn), platforms=["cpu"])(*specs).mlir_module_serialized
    except Exception:  # noqa: BLE001 - these avals have no genuine JAX counterpart
        return None


def _with_reference_module(serialized: bytes | None, extract: Callable[[ir.Module, _Fingerprints], Any]) -> Any:
    if serialized is None:
        return None
    with mlir.make_ir_context():
        module = _jax.mlir.deserialize_portable_artifact(serialized)
        funcs = _functions(module)
        return extract(module, _Fingerprints(funcs, lambda: None))


def _functions(module: ir.Module) -> dict[str, ir.Operation]:
    funcs = {}
    for op in module.body.operations:
        op = op.operation
        if op.name == "sdy.mesh":
            continue  # a sharding mesh declaration, no computation
        if op.name != "func.func":
            raise Refused(f"module-level op {op.name} is not a function")
        funcs[ir.StringAttr(op.attributes["sym_name"]).value] = op
    return funcs


def _called(module: ir.Module, funcs: Mapping[str, ir.Operation], base: str) -> str | None:
    """The first function named ``base`` (up to the ``_N`` suffix) that ``main`` calls,
    directly or through other calls (breadth first)."""
    queue, seen = ["main"], set()
    while queue:
        name = queue.pop(0)
        if name in seen or name not in funcs:
            continue
        seen.add(name)
        for op in _walk_ops(funcs[name]):
            if op.name == "func.call":
                callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
                if _base(callee) == base:
                    return callee
                queue.append(callee)
    return None


def _walk_ops(op: ir.Operation):
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                inner = inner.operation
                yield inner
                yield from _walk_ops(inner)


def _spec(t: str) -> jax.ShapeDtypeStruct:
    """The JAX argument of tensor type ``t`` (KeyError if this process cannot trace one)."""
    with mlir.make_ir_context():
        shape, elem = _tensor(ir.Type.parse(t))
    if elem in _WIDE and not jax.config.jax_enable_x64:
        raise KeyError(elem)  # JAX would silently trace a 32-bit reference instead
    return jax.ShapeDtypeStruct(shape, _JAX_DTYPES[elem])


@functools.lru_cache(maxsize=512)
def _function_references(base: str, in_types: tuple[str, ...], out_types: tuple[str, ...]) -> tuple[int, ...]:
    """Structural ids of the functions JAX lowers for ``base`` at these types (one per way of
    calling it, e.g. with weak-typed or array bounds)."""
    try:
        ins = [_spec(t) for t in in_types]
        outs = [_spec(t) for t in out_types]
    except (Refused, KeyError):
        return ()
    builders = _FUNCTION_BUILDERS.get(base)
    if builders is None:
        return ()

    def extract(module, fps):
        funcs = _functions(module)
        name = _called(module, funcs, base)
        return None if name is None else fps.func(name)

    found = (_with_reference_module(_export_reference(fn, specs), extract) for fn, specs in builders(ins, outs))
    return tuple(fp for fp in found if fp is not None)


def _key_only(ins, outs):
    if len(ins) != 1 or ins[0].shape != (2,) or ins[0].dtype != jnp.uint32 or len(outs) != 1:
        return None
    return ins[0], outs[0]


def _normal_builders(ins, outs):
    io = _key_only(ins, outs)
    if io is None:
        return []
    key, out = io
    return [(lambda k: jax.random.normal(jax.random.wrap_key_data(k), out.shape, out.dtype), [key])]


def _bounded_builders(sampler: Callable[..., Any], keyword_sampler: Callable[..., Any] | None = None):
    def builders(ins, outs):
        if len(ins) != 3 or ins[0].shape != (2,) or ins[0].dtype != jnp.uint32 or len(outs) != 1:
            return []
        key, lo, hi = ins
        out = outs[0]

        def call(k, a, b):
            return sampler(jax.random.wrap_key_data(k), out.shape, out.dtype, a, b)

        def call_by_keyword(k, b, a):
            # jax.random's own callers (gumbel, ...) pass the bounds to the private sampler by
            # keyword; jit then orders them by name: maxval before minval.
            return keyword_sampler(jax.random.wrap_key_data(k), out.shape, out.dtype, a, b)

        calls = [(call, (lo, hi))] + ([(call_by_keyword, (lo, hi))] if keyword_sampler is not None else [])
        # Weak-typed (Python scalar) bounds and array bounds trace to different bodies, and
        # StableHLO does not say which each bound was.
        return [
            (fn, [key, jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=weak_x),
                  jax.ShapeDtypeStruct(y.shape, y.dtype, weak_type=weak_y)])
            for fn, (x, y) in calls
            for weak_x in (False, True) for weak_y in (False, True)
        ]  # fmt: skip

    return builders


def _threefry_builders(ins, outs):
    from jax.extend.random import threefry2x32_p

    if len(ins) != 4 or len(outs) != 2:
        return []
    return [(lambda *a: threefry2x32_p.bind(*a), ins)]


def _fold_in_builders(ins, outs):
    if len(ins) != 2 or ins[0].shape != (2,) or ins[1].shape != () or ins[1].dtype != jnp.uint32:
        return []
    return [(lambda k, d: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(k), d)), ins)]


def _split_builders(ins, outs):
    if len(ins) != 1 or ins[0].shape != (2,) or len(outs) != 1 or outs[0].shape[-1:] != (2,):
        return []
    shape = outs[0].shape[:-1]
    return [(lambda k: jax.random.key_data(jax.random.split(jax.random.wrap_key_data(k), shape)), ins)]


def _keyword_uniform() -> Callable[..., Any] | None:
    """jax.random's private ``_uniform`` called as ``jax.random.gumbel`` calls it (None if this
    JAX has no such function: then only the public call is recognised)."""
    try:
        from jax._src.random.core import _uniform
    except ImportError:
        return None
    return lambda k, shape, dtype, lo, hi: _uniform(k, minval=lo, maxval=hi, shape=shape, dtype=dtype)


_FUNCTION_BUILDERS = {
    "_normal": _normal_builders,
    "_uniform": _bounded_builders(
        lambda k, shape, dtype, lo, hi: jax.random.uniform(k, shape, dtype, lo, hi), _keyword_uniform()
    ),
    "_randint": _bounded_builders(lambda k, shape, dtype, lo, hi: jax.random.randint(k, shape, lo, hi, dtype)),
    "threefry2x32": _threefry_builders,
    "_threefry_fold_in": _fold_in_builders,
    "_threefry_split": _split_builders,
}


def _function_price(base: str, func: ir.Operation) -> int:
    """The jaxpr meter's price of a recognised function (its body already checked genuine)."""
    ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
    results = list(ftype.results)
    if base in SAMPLER_FLOPS:
        shape, elem = _tensor(results[0])
        return max(math.prod(shape), 1) * SAMPLER_FLOPS[base] * (2 if elem in _WIDE else 1)
    # threefry2x32: one per output word; fold_in / split: one per key word produced.
    return sum(math.prod(_tensor(t)[0]) for t in results)


@functools.lru_cache(maxsize=256)
def _region_reference(kind: str, elems: tuple[str, ...], param: int = 0) -> int | None:
    """Structural id of the body JAX gives a reduction / window / sort of this kind."""
    if any(e in _WIDE for e in elems) and not jax.config.jax_enable_x64:
        return None
    try:
        dtypes = [_JAX_DTYPES[e] for e in elems]
    except KeyError:
        return None
    if kind == "argmax" or kind == "argmin":
        fn = lambda x: (lax.argmax if kind == "argmax" else lax.argmin)(x, 0, dtypes[1])  # noqa: E731
        specs, op_name = [jax.ShapeDtypeStruct((3,), dtypes[0])], "stablehlo.reduce"
    elif kind == "cumlogsumexp":
        fn, specs, op_name = lax.cumlogsumexp, [jax.ShapeDtypeStruct((3,), dtypes[0])], "stablehlo.reduce_window"
    elif kind == "sort":
        fn = lambda *xs: lax.sort(xs, num_keys=param)  # noqa: E731
        specs, op_name = [jax.ShapeDtypeStruct((3,), d) for d in dtypes], "stablehlo.sort"
    else:
        return None

    def extract(module, fps):
        for func in _functions(module).values():
            for op in _walk_ops(func):
                if op.name == op_name:
                    return fps.closed_region(op.regions[0])
        return None

    return _with_reference_module(_export_reference(fn, specs), extract)


@functools.lru_cache(maxsize=256)
def _composite_reference(name: str, in_types: tuple[str, ...], attrs: str) -> tuple | None:
    """(composite attributes, decomposition fingerprint) JAX emits for this composite."""
    try:
        specs = [_spec(t) for t in in_types]
    except (Refused, KeyError):
        return None
    if name == "chlo.top_k":
        import re

        match = re.search(r"k = (\d+)", attrs)
        if match is None or len(specs) != 1:
            return None
        k = int(match.group(1))
        fn: Callable[..., Any] = lambda x: lax.top_k(x, k)  # noqa: E731
    elif name in _ELEMENTWISE_COMPOSITES and len(specs) == 1:
        fn = _ELEMENTWISE_COMPOSITES[name]
    else:
        return None

    def extract(module, fps):
        for op in _walk_ops(_functions(module)["main"]):
            if op.name == "stablehlo.composite":
                return _composite_key(op, fps)
        return None

    return _with_reference_module(_export_reference(fn, specs), extract)


def _composite_key(op: ir.Operation, fps: _Fingerprints) -> tuple:
    attrs = tuple(sorted((k, str(v)) for k, v in _named(op) if k != "decomposition"))
    decomposition = fps.func(ir.FlatSymbolRefAttr(op.attributes["decomposition"]).value)
    return attrs, tuple(str(v.type) for v in op.operands), tuple(str(r.type) for r in op.results), decomposition


_ELEMENTWISE_COMPOSITES = {
    "chlo.erf": lax.erf, "chlo.sinh": lax.sinh, "chlo.cosh": lax.cosh, "chlo.asin": lax.asin,
    "chlo.acos": lax.acos, "chlo.asinh": lax.asinh, "chlo.acosh": lax.acosh, "chlo.atanh": lax.atanh,
    "chlo.erfc": lax.erfc, "chlo.erf_inv": lax.erf_inv, "chlo.lgamma": lax.lgamma, "chlo.digamma": lax.digamma,
    "chlo.tan": lax.tan,
}  # fmt: skip


# Inline expansions priced as the one jaxpr primitive they come from: (jax function, number
# of operands, FLOPs per element).
_INLINE = {
    "erf_inv": (lax.erf_inv, 1, TRANSCENDENTAL),
    "erfc": (lax.erfc, 1, TRANSCENDENTAL),
    "lgamma": (lax.lgamma, 1, TRANSCENDENTAL),
    "digamma": (lax.digamma, 1, TRANSCENDENTAL),
    "bessel_i0e": (lax.bessel_i0e, 1, TRANSCENDENTAL),
    "bessel_i1e": (lax.bessel_i1e, 1, TRANSCENDENTAL),
    "logistic": (lax.logistic, 1, TRANSCENDENTAL),
    "exp2": (lax.exp2, 1, TRANSCENDENTAL),
    "igamma": (lax.igamma, 2, TRANSCENDENTAL),
    "igammac": (lax.igammac, 2, TRANSCENDENTAL),
    "nextafter": (lax.nextafter, 2, 1),
}
# ... plus jax.random.bits (1 per 32-bit word), and two the jaxpr meter counts free: a gather in
# "fill" mode (data movement; its lowering masks out-of-bounds indices) and jax.random.key(seed)
# (two bit operations on the seed). (A conversion to bool, lowered as ``x != 0``, was a third
# up to a37efdc; both meters now charge it as the comparison it is.)
_FREE_KINDS = ("gather_fill", "random_seed")
_INLINE_KINDS = (*_INLINE, "random_bits", *_FREE_KINDS)
_SEED_TYPES = ("i32", "ui32", "i64", "ui64")
_FLOATS = ("f32", "f64", "f16", "bf16")


def _inline_keys(kind: str, root: ir.Operation) -> list[tuple]:
    """What the references for ``kind`` ending at ``root`` depend on (hashable): one per
    candidate, e.g. ``jax.random.bits`` on one key or (under ``vmap``) on a batch of keys."""
    root_type = str(root.results[0].type)
    if kind == "random_bits":
        rank = len(_tensor(root.results[0].type)[0])
        return [(root_type, batch) for batch in range(rank + 1)]
    if kind == "random_seed":
        return [(root_type, seed) for seed in _SEED_TYPES]
    if kind != "gather_fill":
        return [(root_type,)]
    key = _gather_fill_key(root)
    return [] if key is None else [key]


def _gather_fill_key(root: ir.Operation) -> tuple | None:
    gather, fill = _owner(root.operands[1]), _owner(root.operands[2])
    if gather is None or gather.name != "stablehlo.gather" or fill is None or fill.name != "stablehlo.broadcast_in_dim":
        return None
    constant = _owner(fill.operands[0])
    if constant is None or constant.name != "stablehlo.constant":
        return None
    value = _scalar(constant.attributes["value"], _elem(constant.results[0]))
    if value is None:
        return None
    numbers = hlo.GatherDimensionNumbers(gather.attributes["dimension_numbers"])
    indices = gather.operands[1]
    if numbers.index_vector_dim != len(_tensor(indices.type)[0]) - 1:
        return None  # JAX puts the index vector last; anything else is not its lowering
    dims = tuple(tuple(getattr(numbers, f)) for f in (
        "offset_dims", "collapsed_slice_dims", "start_index_map", "operand_batching_dims",
        "start_indices_batching_dims"))  # fmt: skip
    flags = tuple(
        bool(_attr(gather, f)) and ir.BoolAttr(_attr(gather, f)).value for f in ("indices_are_sorted", "unique_indices")
    )
    # The fill value by its bytes: a NaN (the usual fill) is not equal to itself, and as a
    # float in the key it would defeat the cache of references.
    fill = (str(value.dtype), value.tobytes())
    return (
        str(gather.operands[0].type),
        str(indices.type),
        dims,
        tuple(_ints(_attr(gather, "slice_sizes"))),
        flags,
        fill,
    )


def _inline_builder(kind: str, key: tuple) -> tuple[Callable[..., Any], list] | None:
    """(function, argument specs) whose lowering is the expansion ``kind`` for ``key``."""
    try:
        if kind == "gather_fill":
            operand_type, indices_type, dims, slice_sizes, (is_sorted, unique), (fill_dtype, fill_bytes) = key
            operand, indices = _spec(operand_type), _spec(indices_type)
            fill = np.frombuffer(fill_bytes, fill_dtype)[0].item()
            numbers = lax.GatherDimensionNumbers(*dims)
            return (
                lambda a, i: lax.gather(a, i, numbers, slice_sizes, indices_are_sorted=is_sorted, unique_indices=unique,
                                        mode=lax.GatherScatterMode.FILL_OR_DROP, fill_value=fill),
                [operand, indices],
            )  # fmt: skip
        out = _spec(key[0])
        if kind == "random_seed":
            if out.shape != (2,) or out.dtype != jnp.uint32:
                return None
            seed = _spec(f"tensor<{key[1]}>")
            return (lambda s: jax.random.key_data(jax.random.key(s))), [seed]
    except (Refused, KeyError, TypeError, ValueError):
        return None
    if kind == "random_bits":
        if not jnp.issubdtype(out.dtype, jnp.unsignedinteger):
            return None
        batch = key[1]  # leading dimensions that index keys (vmap over a batch of keys)

        def bits(k):
            one = lambda kk: jax.random.bits(jax.random.wrap_key_data(kk), out.shape[batch:], out.dtype)  # noqa: E731
            for _ in range(batch):
                one = jax.vmap(one)
            return one(k)

        return bits, [jax.ShapeDtypeStruct(out.shape[:batch] + (2,), jnp.uint32)]
    fn, arity, _ = _INLINE[kind]
    if not jnp.issubdtype(out.dtype, jnp.floating):
        return None
    return fn, [out] * arity


@functools.lru_cache(maxsize=512)
def _inline_reference(kind: str, key: tuple) -> _Reference | None:
    """The expansion JAX emits for ``kind`` at ``key``, as a graph of (op key, operands,
    region fingerprints) nodes in definition order."""
    built = _inline_builder(kind, key)
    if built is None:
        return None
    fn, specs = built

    def extract(module, fps):
        main = _functions(module)["main"]
        block = main.regions[0].blocks[0]
        env = {arg: ("arg", i) for i, arg in enumerate(block.arguments)}
        nodes = []
        for op in block.operations:
            op = op.operation
            if op.name == "func.return":
                if len(op.operands) != 1:
                    return None
                root = env[op.operands[0]]
                if root[0] != "res" or nodes[root[1]][0][0] == "stablehlo.composite" or len(nodes) < 2:
                    return None  # a single op or a composite is priced directly, not as a pattern
                return _Reference(graph=tuple(nodes), root=root, n_args=len(block.arguments))
            regions = tuple(fps.closed_region(r) for r in op.regions)
            if any(r is None for r in regions):
                return None
            nodes.append((fps.key(op), tuple(env[v] for v in op.operands), regions))
            for i, r in enumerate(op.results):
                env[r] = ("res", len(nodes) - 1, i)
        return None

    return _with_reference_module(_export_reference(fn, specs), extract)


@functools.lru_cache(maxsize=256)
def _inline_signature(kind: str, elem: str) -> tuple | None:
    """(root op name, name of the op defining each root operand, or None for an argument) of
    the expansion at a small shape: a cheap filter before building it at the exact types."""
    if kind == "gather_fill":
        # select(in-bounds mask, gather, broadcast fill value); the mask may be broadcast
        # first, so only the gather and the fill are checked here, the rest by the match.
        return ("stablehlo.select", (None, "stablehlo.gather", "stablehlo.broadcast_in_dim"))
    if kind == "random_seed":
        canonical = ("tensor<2xui32>", "i32") if elem == "ui32" else None
    else:
        canonical = (f"tensor<3x{elem}>",) + ((0,) if kind == "random_bits" else ())
    reference = None if canonical is None else _inline_reference(kind, canonical)
    if reference is None:
        return None
    nodes = reference.graph
    key, operands, _ = nodes[reference.root[1]]
    return key[0], tuple(None if o[0] == "arg" else nodes[o[1]][0][0] for o in operands)


def _signature_matches(signature: tuple, op: ir.Operation) -> bool:
    name, operand_ops = signature
    if op.name != name or len(op.operands) != len(operand_ops):
        return False
    for want, value in zip(operand_ops, op.operands):
        if want is not None:
            owner = _owner(value)
            if owner is None or owner.name != want:
                return False
    return True


def _inline_price(kind: str, root: ir.Operation) -> int:
    if kind == "gather_fill":  # the mask is free, the read is charged (as the jaxpr's gather)
        gather = _owner(root.operands[1])
        return max(_size(gather.results[0]), 1) * _rate([*gather.operands, *gather.results])
    if kind in _FREE_KINDS:
        return 0
    shape, elem = _tensor(root.results[0].type)
    size = max(math.prod(shape), 1)
    if kind == "random_bits":
        bits = int(elem.lstrip("ui"))
        return size * -(-bits // 32)
    return size * _INLINE[kind][2] * (2 if elem in _WIDE else 1)


# --- the walk ------------------------------------------------------------------------------

_FREE = frozenset({
    "stablehlo.constant", "stablehlo.iota", "stablehlo.broadcast_in_dim", "stablehlo.broadcast",
    "stablehlo.reshape", "stablehlo.transpose", "stablehlo.slice", "stablehlo.concatenate",
    "stablehlo.pad", "stablehlo.reverse", "stablehlo.convert", "stablehlo.bitcast_convert",
    "stablehlo.real", "stablehlo.imag", "stablehlo.optimization_barrier", "stablehlo.tuple",
    "stablehlo.get_tuple_element", "stablehlo.return", "func.return", "sdy.sharding_constraint",
})  # fmt: skip

_ELEMENTWISE = {
    **dict.fromkeys((
        "add", "subtract", "multiply", "divide", "negate", "maximum", "minimum", "abs", "sign",
        "floor", "ceil", "round_nearest_afz", "round_nearest_even", "is_finite", "sqrt",
        "compare", "and", "or", "not", "xor", "shift_left", "shift_right_logical",
        "shift_right_arithmetic", "popcnt", "count_leading_zeros", "reduce_precision", "complex",
    ), 1),
    "clamp": 2,
    "select": SELECT,
    "rsqrt": 2,
    **dict.fromkeys((
        "exponential", "exponential_minus_one", "log", "log_plus_one", "tanh", "logistic",
        "sine", "cosine", "tan", "atan2", "cbrt", "power", "remainder",
    ), TRANSCENDENTAL),
}  # fmt: skip
_ELEMENTWISE = {f"stablehlo.{k}": v for k, v in _ELEMENTWISE.items()}

# Reduction bodies of one binary op: cost 1 per combine.
_SIMPLE_BODIES = frozenset({"stablehlo.add", "stablehlo.multiply", "stablehlo.maximum", "stablehlo.minimum",
                            "stablehlo.and", "stablehlo.or", "stablehlo.xor"})  # fmt: skip
# Custom calls that are pure and free: sharding annotations (identity on one device).
_FREE_CUSTOM_CALLS = frozenset({"Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape"})
_HOST_CALLBACKS = ("xla_python_cpu_callback", "xla_ffi_python_cpu_callback", "xla_python_gpu_callback",
                   "xla_ffi_python_gpu_callback", "xla_ffi_partitioned_python_cpu_callback")  # fmt: skip
# Scalar ops folded with numpy to learn loop bounds (:func:`_counted_loop`). Integer wrapping
# and float arithmetic agree with XLA's; float-to-integer conversion does not (numpy's C cast
# on x86 gives INT_MIN for float32(1e10) -> int32 and for NaN, 2^32 - 5 for -5.0 -> uint32;
# XLA saturates, and NaN gives 0), so it is never folded: a bound converted from a float is
# unknown and its loop refused. Up to 6c66895 ``attack_saturating_bound`` looped over
# 131,072 samples metered as 0 trips.
_FOLD = {
    "stablehlo.add": np.add, "stablehlo.subtract": np.subtract, "stablehlo.multiply": np.multiply,
    "stablehlo.negate": np.negative, "stablehlo.maximum": np.maximum, "stablehlo.minimum": np.minimum,
    "stablehlo.convert": None, "stablehlo.reshape": None, "stablehlo.broadcast_in_dim": None,
}  # fmt: skip


class _Walk:
    """One metering walk over a module."""

    def __init__(self, module: ir.Module, free: Sequence[int] = ()):
        # A module partitioned over several devices describes the whole computation (sharding
        # constraints are free annotations), so it is metered like any other; whether the
        # trusted side runs it is :func:`check_signature`'s call (one device only).
        self.funcs = _functions(module)
        if "main" not in self.funcs:
            raise Refused("the module has no main function")
        if len(_INTERNED) > _MAX_INTERNED:
            _forget_references()
        self.steps = 0
        self.fps = _Fingerprints(self.funcs, self.tick)
        self.memo: dict[tuple, int] = {}
        self.active: list[str] = []
        self.recognised: dict[str, int | None] = {}
        self.references: set[tuple] = set()
        self.kinds: dict[tuple[str, str], list[tuple[str, tuple]]] = {}
        self.free_args = frozenset(free)
        self.outs: dict[tuple, list[bool]] = {}  # (callee, its tainted arguments) -> tainted results
        self.tainting: list[str] = []

    def reference(self, build: Callable[..., Any], *key: Any) -> Any:
        """``build(*key)``, a (cached) reference lowering. Each new one costs an export on the
        trusted side, so a program may ask for at most :data:`MAX_REFERENCES` distinct ones."""
        self.references.add((build.__name__, *key))
        if len(self.references) > MAX_REFERENCES:
            raise Refused(f"the module asks for more than {MAX_REFERENCES} distinct reference lowerings")
        return build(*key)

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise Refused(f"the module takes more than {MAX_STEPS:,} steps to meter")

    def total(self) -> int:
        if "main" not in self.funcs or len(self.funcs["main"].regions) != 1:
            raise Refused("the module's main function has no body")
        for func in self.funcs.values():
            self.admit(func)
        n_args = len(self.funcs["main"].regions[0].blocks[0].arguments)
        return self.func_cost("main", {}, frozenset(range(n_args)) - self.free_args)

    def admit(self, op: ir.Operation) -> None:
        """Refuse the module if any op in ``op``'s regions is one the meter does not know, or a
        custom call it does not admit, whether or not it reads the copy: work on constants or
        the key is free, not unchecked (an unknown custom call, a host callback, an outfeed on
        constants ran on the trusted side at 0 FLOPs up to 5d8d14c)."""
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    inner = inner.operation
                    if inner.name == "stablehlo.custom_call":
                        self.custom_call_cost(inner, {})  # refuses what it does not admit
                    elif inner.name not in _KNOWN_OPS:
                        raise Refused(f"the meter has no cost for {inner.name}; it runs only programs it can price")
                    self.admit(inner)

    # -- functions and blocks --

    def func_cost(
        self, name: str, known_args: Mapping[int, np.generic], tainted: frozenset[int] = None, forced: bool = False
    ) -> int:
        """Cost of a call of ``name``; ``tainted``: its arguments that depend on the copy (all
        when None); ``forced``: it runs under control that depends on the copy (all charged)."""
        block = self.body(name)
        if tainted is None:
            tainted = frozenset(range(len(block.arguments)))
        key = (name, tuple(sorted((i, repr(v)) for i, v in known_args.items())), tainted, forced)
        if key in self.memo:
            return self.memo[key]
        known = _Scope({block.arguments[i]: v for i, v in known_args.items()})
        self.active.append(name)
        self.enter(block, known, tainted, forced)
        cost = self.block_cost(block, known)
        self.active.pop()
        self.memo[key] = cost
        return cost

    def body(self, name: str) -> ir.Block:
        if name not in self.funcs:
            raise Refused(f"call to undefined function @{name}")
        if name in self.active or name in self.tainting:
            raise Refused(f"function @{name} calls itself (recursion is not metered)")
        func = self.funcs[name]
        if len(func.regions) != 1 or len(func.regions[0].blocks) != 1:
            raise Refused(f"function @{name} has no body or more than one block")
        return func.regions[0].blocks[0]

    def region_cost(self, region: ir.Region, known: dict) -> int:
        return self.block_cost(_one_block(region), known)

    def block_cost(self, block: ir.Block, known: _Scope) -> int:
        priced, absorbed = self.inline_matches(block)
        total = 0
        for op in block.operations:
            op = op.operation
            self.tick()
            if op in absorbed:
                continue
            if self.free(op, known):  # depends on nothing of the copy's
                self.fold(op, known)
                continue
            if op in priced:
                total += priced[op]
                continue
            total += self.op_cost(op, known)
            self.fold(op, known)
        return total

    # -- what depends on the copy --
    #
    # Before a function is costed, its values that depend on the copy's weights are marked
    # (``known.tainted``). An op none of whose operands or results is marked is free: it could
    # have run before the copy existed (drawing inputs, computing their targets, building
    # tables), as it could have at trace time. A loop carry is marked if its initial value is
    # or an iteration makes it; a branch or loop whose control depends on the copy has
    # everything in it marked (charged in full); any other op with regions is marked whole if
    # any operand or value it captures is.

    def enter(self, block: ir.Block, known: _Scope, tainted: frozenset[int], forced: bool) -> None:
        args = list(block.arguments)
        if forced:
            self.mark_all(block, known)
            return
        known.tainted.update(args[i] for i in tainted if i < len(args))
        self.taint_block(block, known)

    def taint_block(self, block: ir.Block, known: _Scope) -> None:
        for op in block.operations:
            self.taint_op(op.operation, known)

    def taint_op(self, op: ir.Operation, known: _Scope) -> None:
        self.tick()
        marked = known.tainted
        ins = [v in marked for v in op.operands]
        name = op.name
        if name == "stablehlo.while":
            outs = self.taint_while(op, known, ins)
        elif name in ("stablehlo.case", "stablehlo.if"):
            if ins and ins[0]:
                for region in op.regions:
                    self.mark_all(region, known)
                outs = [True] * len(op.results)
            else:
                returned = []
                for region in op.regions:
                    block = _one_block(region)
                    self.taint_block(block, known)
                    returned.append([v in marked for v in _terminator(block).operands])
                outs = [any(column) for column in zip(*returned)] or [False] * len(op.results)
        elif name == "func.call":
            callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
            outs = self.call_taint(callee, frozenset(i for i, t in enumerate(ins) if t))
        elif op.regions:
            depends = any(ins) or self.captures(op, marked)
            if depends:
                for region in op.regions:
                    self.mark_all(region, known)
            outs = [depends] * len(op.results)
        else:
            outs = [any(ins)] * len(op.results)
        marked.update(r for r, t in zip(op.results, outs) if t)

    def taint_while(self, op: ir.Operation, known: _Scope, carry: list[bool]) -> list[bool]:
        cond, body = (_one_block(r) for r in op.regions)
        marked = known.tainted
        while True:
            for block in (cond, body):
                marked.update(a for a, t in zip(block.arguments, carry) if t)
                self.taint_block(block, known)
            if any(v in marked for v in _terminator(cond).operands):  # the copy decides when it stops
                for region in op.regions:
                    self.mark_all(region, known)
                return [True] * len(op.results)
            after = [c or v in marked for c, v in zip(carry, _terminator(body).operands)]
            if after == carry:
                return carry
            carry = after

    def call_taint(self, callee: str, tainted: frozenset[int]) -> list[bool]:
        """Which results of a call of ``callee`` depend on the copy."""
        key = (callee, tainted)
        if key not in self.outs:
            block = self.body(callee)
            known = _Scope()
            self.tainting.append(callee)
            self.enter(block, known, tainted, False)
            self.tainting.pop()
            self.outs[key] = [v in known.tainted for v in _terminator(block).operands]
        return self.outs[key]

    def captures(self, op: ir.Operation, marked: set) -> bool:
        """Whether an op reads, inside its regions, a marked value defined outside them."""
        for region in op.regions:
            for block in region.blocks:
                for inner in block.operations:
                    self.tick()
                    inner = inner.operation
                    if any(v in marked for v in inner.operands) or self.captures(inner, marked):
                        return True
        return False

    def mark_all(self, where: ir.Region | ir.Block, known: _Scope) -> None:
        """Mark every value in a region (or block) and charge every call in it in full."""
        blocks = where.blocks if isinstance(where, ir.Region) else [where]
        for block in blocks:
            known.tainted.update(block.arguments)
            for op in block.operations:
                self.tick()
                op = op.operation
                known.tainted.update(op.results)
                if op.name in ("func.call", "stablehlo.composite"):
                    known.forced.add(op)
                for region in op.regions:
                    self.mark_all(region, known)

    def free(self, op: ir.Operation, known: _Scope) -> bool:
        marked = known.tainted
        return not any(v in marked for v in op.results) and not any(v in marked for v in op.operands)

    def fold(self, op: ir.Operation, known: dict) -> None:
        """Record scalar integer/float constants (for loop bounds)."""
        name = op.name
        if name == "stablehlo.constant":
            result = op.results[0]
            if _size(result) == 1:
                value = _scalar(op.attributes["value"], _elem(result))
                if value is not None:
                    known[result] = value
            return
        if name not in _FOLD or len(op.results) != 1:
            return
        result = op.results[0]
        values = [known.get(v) for v in op.operands]
        if any(v is None for v in values) or _size(result) != 1 or _elem(result) not in _NP_DTYPES:
            return
        if name == "stablehlo.convert" and _elem(op.operands[0])[0] == "f" and _elem(result)[0] in "iu":
            return  # numpy's float-to-integer cast is not XLA's (see _FOLD)
        fn = _FOLD[name]
        with np.errstate(all="ignore"):
            out = values[0] if fn is None else fn(*values)
        known[result] = np.asarray(out).astype(_NP_DTYPES[_elem(result)])[()]

    # -- one op --

    def op_cost(self, op: ir.Operation, known: dict) -> int:
        name = op.name
        if name == "stablehlo.bitcast_convert":  # free unless it splits or joins words (algzu.meter)
            source, result = op.operands[0], op.results[0]
            if _size(source) == _size(result):
                return 0
            return max(_size(source), _size(result)) * _rate([source, result])
        if name == "stablehlo.convert":
            return _convert_cost(op.operands[0], op.results[0])
        if name == "stablehlo.compare" and _is_bool_identity(op, known):
            return 0  # JAX's lowering of a bool-to-bool convert: ``x != false`` is ``x``
        if name in _FREE:
            return 0
        if name in _ELEMENTWISE:
            weight = _ELEMENTWISE[name]
            out = op.results[0]
            if name == "stablehlo.divide" and _elem(out)[0] in "iu":
                weight = TRANSCENDENTAL  # integer division, flopscope's floor_divide tier
            return max(_size(out), 1) * weight * _rate([*op.operands, *op.results])
        handler = _HANDLERS.get(name)
        if handler is None:
            raise Refused(f"the meter has no cost for {name}; it runs only programs it can price")
        return handler(self, op, known)

    def call_cost(self, op: ir.Operation, known: dict) -> int:
        callee = ir.FlatSymbolRefAttr(op.attributes["callee"]).value
        price = self.recognised_price(callee)
        if price is not None:
            return price
        args = {i: known[v] for i, v in enumerate(op.operands) if v in known}
        return self.func_cost(callee, args, _marked(op, known), op in known.forced)

    def recognised_price(self, callee: str) -> int | None:
        """The fixed price of a genuine ``jax.random`` function (None if not one)."""
        if callee in self.recognised:
            return self.recognised[callee]
        base = _base(callee)
        price = None
        if base in _FUNCTION_BUILDERS and callee in self.funcs:
            func = self.funcs[callee]
            ftype = ir.FunctionType(ir.TypeAttr(func.attributes["function_type"]).value)
            references = self.reference(
                _function_references, base, tuple(str(t) for t in ftype.inputs), tuple(str(t) for t in ftype.results)
            )
            if references and self.fps.func(callee) in references:
                price = _function_price(base, func)
        self.recognised[callee] = price
        return price

    def composite_cost(self, op: ir.Operation, known: dict) -> int:
        name = ir.StringAttr(op.attributes["name"]).value
        decomposition = ir.FlatSymbolRefAttr(op.attributes["decomposition"]).value
        attrs = str(_attr(op, "composite_attributes") or "")
        reference = self.reference(_composite_reference, name, tuple(str(v.type) for v in op.operands), attrs)
        if reference is not None and reference == _composite_key(op, self.fps):
            if name == "chlo.top_k":
                (x,) = op.operands
                shape, _ = _tensor(x.type)
                return max(_size(x) * _ceil_log2(shape[-1]), 1) * SORT * _rate([*op.operands, *op.results])
            out = op.results[0]
            return max(_size(out), 1) * TRANSCENDENTAL * _rate([*op.operands, *op.results])
        # Unknown or altered: the decomposition is what runs.
        args = {i: known[v] for i, v in enumerate(op.operands) if v in known}
        return self.func_cost(decomposition, args, _marked(op, known), op in known.forced)

    def case_cost(self, op: ir.Operation, known: dict) -> int:
        return max((self.region_cost(r, known) for r in op.regions), default=0)

    def reduce_cost(self, op: ir.Operation, known: dict) -> int:
        n = len(op.results)
        inputs = list(op.operands)[:n]
        work = _size(inputs[0]) - _size(op.results[0])
        body = op.regions[0]
        # Priced n - 1 combines per output where the init is the body's identity; any other
        # init is one more combine per output (``_init_is_identity``).
        if n == 1 and _single_op_body(body) in _SIMPLE_BODIES:
            extra = 0 if _init_is_identity(op, known) else _size(op.results[0])
            return max(work + extra, 1) * _rate([*op.operands, *op.results])
        if n == 2:
            elems = (_elem(inputs[0]), _elem(inputs[1]))
            fp = self.fps.closed_region(body)
            for kind in ("argmax", "argmin"):
                if fp is not None and fp == self.reference(_region_reference, kind, elems):
                    identity_of = "stablehlo.maximum" if kind == "argmax" else "stablehlo.minimum"
                    extra = 0 if _init_is_identity(op, known, identity_of) else _size(op.results[0])
                    return max(work + extra, 1) * _rate([inputs[0]])  # the index dtype is not arithmetic
        applications = _size(inputs[0])
        return max(applications, 1) * max(self.region_cost(body, known), 1)

    def reduce_window_cost(self, op: ir.Operation, known: dict) -> int:
        n = len(op.results)
        inputs = list(op.operands)[:n]
        body = op.regions[0]
        shape, elem = _tensor(inputs[0].type)
        window = _ints(_attr(op, "window_dimensions"))
        axis = _cumulative_axis(op, shape, window)
        if n == 1 and axis is not None:
            weight, identity_of = None, _single_op_body(body)
            if identity_of in ("stablehlo.add", "stablehlo.multiply", "stablehlo.maximum", "stablehlo.minimum"):
                weight = 1
            elif (fp := self.fps.closed_region(body)) is not None and fp == self.reference(
                _region_reference, "cumlogsumexp", (elem,)
            ):
                weight, identity_of = TRANSCENDENTAL, "stablehlo.maximum"  # logaddexp's identity: -inf
            # The cumulative price holds for the body's identity as init (it pads the windows);
            # with another init every window element combines (one-element windows included).
            if weight is not None and _init_is_identity(op, known, identity_of):
                size = math.prod(shape)
                rows = size // max(shape[axis], 1)
                return max(size - rows, 1) * weight * _rate([*op.operands, *op.results])
        outputs = _size(op.results[0])
        return max(outputs * math.prod(window), 1) * max(self.region_cost(body, known), 1)

    def sort_cost(self, op: ir.Operation, known: dict) -> int:
        operands = list(op.operands)
        shape, _ = _tensor(operands[0].type)
        dim = ir.IntegerAttr(op.attributes["dimension"]).value
        n = shape[dim]
        comparisons = math.prod(shape) * _ceil_log2(n)
        body = op.regions[0]
        elems = tuple(_elem(v) for v in operands)
        fp = self.fps.closed_region(body)
        for num_keys in range(1, len(operands) + 1):
            if fp is not None and fp == self.reference(_region_reference, "sort", elems, num_keys):
                return max(num_keys * comparisons, 1) * SORT * _rate([*op.operands, *op.results])
        return max(comparisons, 1) * max(self.region_cost(body, known), SORT)

    def scatter_cost(self, op: ir.Operation, known: dict) -> int:
        n = len(op.results)
        updates = list(op.operands)[n + 1 :]
        count = _size(updates[0])
        body = op.regions[0]
        block = body.blocks[0]
        ops = [o.operation for o in block.operations]
        if n == 1 and len(ops) == 1 and list(ops[0].operands) == [block.arguments[1]]:
            # Plain scatter: the update replaces the operand, moved to computed positions.
            return max(count, 1) * _rate([*op.operands, *op.results])
        if n == 1 and _single_op_body(body) in _SIMPLE_BODIES:
            return max(count, 1) * _rate([*op.operands, *op.results])
        return max(count, 1) * max(self.region_cost(body, known), 1)

    def select_and_scatter_cost(self, op: ir.Operation, known: dict) -> int:
        source = op.operands[1]
        window = _ints(_attr(op, "window_dimensions")) or [1]
        select = max(self.region_cost(op.regions[0], known), 1)
        scatter = max(self.region_cost(op.regions[1], known), 1)
        return max(_size(source), 1) * (math.prod(window) * select + scatter)

    def moved_cost(self, op: ir.Operation, known: dict) -> int:
        """A read (``gather``, ``dynamic_slice``) or write (``dynamic_update_slice``) at computed
        positions: one per element moved (free, it would be arithmetic by table lookup)."""
        del known
        moved = op.operands[1] if op.name == "stablehlo.dynamic_update_slice" else op.results[0]
        return max(_size(moved), 1) * _rate([*op.operands, *op.results])

    def map_cost(self, op: ir.Operation, known: dict) -> int:
        return max(_size(op.results[0]), 1) * max(self.region_cost(op.regions[0], known), 1)

    def while_cost(self, op: ir.Operation, known: dict) -> int:
        loop = _counted_loop(op, known)
        if loop is None:
            raise Refused(
                "while loop with a data-dependent or unknown trip count; use lax.scan or fori_loop with static bounds"
            )
        trips, carried_bound, increment = loop
        body = self.region_cost(op.regions[1], known)
        if carried_bound:  # fori_loop with array bounds: a jaxpr while, counter and test included
            cond = self.region_cost(op.regions[0], known)
            return trips * (body + cond) + cond
        # A scan: its counter and test are the lowering's bookkeeping.
        return trips * (body - (0 if self.free(increment, known) else self.op_cost(increment, known)))

    def custom_call_cost(self, op: ir.Operation, known: dict) -> int:
        target = ir.StringAttr(op.attributes["call_target_name"]).value
        if target in _HOST_CALLBACKS or "callback" in target:
            raise Refused(f"custom_call {target!r} runs host Python that the meter cannot count")
        side_effect = _attr(op, "has_side_effect")
        if side_effect is not None and ir.BoolAttr(side_effect).value:
            raise Refused(f"custom_call {target!r} has side effects")
        called = _attr(op, "called_computations")
        if called is not None and len(called):
            raise Refused(f"custom_call {target!r} calls other computations")
        if target in _FREE_CUSTOM_CALLS:
            return 0
        lapack = _lapack_flops(target, op)
        if lapack is not None:
            return lapack
        raise Refused(f"custom_call target {target!r} is not on the meter's list of pure, priced calls")

    def linalg_cost(self, op: ir.Operation, known: dict) -> int:
        a = op.operands[0]
        shape, _ = _tensor(a.type)
        batch = math.prod(shape[:-2])
        m = shape[-1]
        if op.name == "stablehlo.cholesky":
            one = flopscope.accounting.cholesky_cost(m)
        else:  # triangular_solve: m^2 per right-hand side
            b_shape, _ = _tensor(op.operands[1].type)
            left = ir.BoolAttr(op.attributes["left_side"]).value
            one = m * m * (b_shape[-1] if left else b_shape[-2])
        return max(batch * one, 1) * _rate([*op.operands, *op.results])

    def dot_cost(self, op: ir.Operation, known: dict) -> int:
        lhs = op.operands[0]
        lhs_shape, _ = _tensor(lhs.type)
        if op.name == "stablehlo.dot_general":
            numbers = hlo.DotDimensionNumbers(op.attributes["dot_dimension_numbers"])
            k = math.prod(lhs_shape[d] for d in numbers.lhs_contracting_dimensions)
        else:  # stablehlo.dot: contracts the last lhs dimension
            k = lhs_shape[-1] if lhs_shape else 1
        out = op.results[0]
        return max(_size(out) * (2 * k - 1), 1) * _rate([*op.operands, *op.results])

    def convolution_cost(self, op: ir.Operation, known: dict) -> int:
        rhs = op.operands[1]
        rhs_shape, _ = _tensor(rhs.type)
        numbers = hlo.ConvDimensionNumbers(op.attributes["dimension_numbers"])
        k = math.prod(rhs_shape) // rhs_shape[numbers.kernel_output_feature_dimension]
        out = op.results[0]
        return max(_size(out) * (2 * k - 1), 1) * _rate([*op.operands, *op.results])

    # -- inline expansions --

    def inline_matches(self, block: ir.Block) -> tuple[dict, set]:
        """Roots of genuine inline expansions in ``block`` with their price, and the other
        ops of those expansions (charged through the root)."""
        priced: dict[ir.Operation, int] = {}
        absorbed: set[ir.Operation] = set()
        ops = [o.operation for o in block.operations]
        for op in reversed(ops):
            if op in absorbed or len(op.results) != 1 or op.name == "stablehlo.constant":
                continue
            result_type = op.results[0].type
            if not isinstance(result_type, ir.RankedTensorType):
                continue
            for kind, signature in self.candidate_kinds(op.name, str(result_type.element_type)):
                if not _signature_matches(signature, op):
                    continue
                image = None
                for key in _inline_keys(kind, op):
                    reference = self.reference(_inline_reference, kind, key)
                    image = None if reference is None else self.match(reference, op, block)
                    if image is not None:
                        break
                if image is None:
                    continue
                # Free ops (constants JAX shares between expansions) may overlap; charged may not.
                charged = {o for o in image if o.name not in _FREE}
                if charged & absorbed or charged & priced.keys():
                    continue
                priced[op] = _inline_price(kind, op)
                absorbed |= charged - {op}
                break
        return priced, absorbed

    def candidate_kinds(self, name: str, elem: str) -> list[tuple[str, tuple]]:
        """The inline kinds (with their signature) whose expansion can end in an op ``name``
        with elements ``elem``."""
        key = (name, elem)
        if key not in self.kinds:
            signatures = ((kind, self.reference(_inline_signature, kind, elem)) for kind in _INLINE_KINDS)
            self.kinds[key] = [(kind, sig) for kind, sig in signatures if sig is not None and sig[0] == name]
        return self.kinds[key]

    def match(self, reference: _Reference, root: ir.Operation, block: ir.Block) -> set | None:
        """The ops of ``block`` that form ``reference`` ending at ``root``, or None."""
        nodes = reference.graph
        _, node_index, result_number = reference.root
        if nodes[node_index][0][0] != root.name:
            return None
        pairs: dict[int, ir.Operation] = {}
        args: dict[int, ir.Value] = {}
        stack = [(node_index, root)]
        while stack:
            index, op = stack.pop()
            self.tick()
            if index in pairs:
                if pairs[index] != op:
                    return None
                continue
            key, operands, regions = nodes[index]
            if op.name != key[0] or len(op.regions) != len(regions) or len(op.operands) != len(operands):
                return None
            if op.block != root.block or self.fps.key(op) != key:
                return None
            if regions and tuple(self.fps.closed_region(r) for r in op.regions) != regions:
                return None
            pairs[index] = op
            for ref, value in zip(operands, op.operands):
                if ref[0] == "arg":
                    if args.setdefault(ref[1], value) != value:
                        return None
                    continue
                owner = _owner(value)
                if owner is None or value.result_number != ref[2]:
                    return None
                stack.append((ref[1], owner))
        if result_number != 0 or len(args) != reference.n_args:
            return None
        image = set(pairs.values())
        # Closed: no charged op inside may feed anything outside (else its result would be
        # bought at the pattern's price).
        for op in image:
            if op == root or op.name in _FREE:
                continue
            for result in op.results:
                for use in result.uses:
                    if use.owner.operation not in image:
                        return None
        return image


def _forget_references() -> None:
    """Drop every structural id and every cached reference built from them."""
    _INTERNED.clear()
    for cache in (_function_references, _region_reference, _composite_reference, _inline_reference, _inline_signature):
        cache.cache_clear()


_HANDLERS: dict[str, Callable[..., int]] = {
    "func.call": _Walk.call_cost,
    "stablehlo.composite": _Walk.composite_cost,
    "stablehlo.case": _Walk.case_cost,
    "stablehlo.if": _Walk.case_cost,
    "stablehlo.reduce": _Walk.reduce_cost,
    "stablehlo.reduce_window": _Walk.reduce_window_cost,
    "stablehlo.sort": _Walk.sort_cost,
    "stablehlo.scatter": _Walk.scatter_cost,
    "stablehlo.gather": _Walk.moved_cost,
    "stablehlo.dynamic_slice": _Walk.moved_cost,
    "stablehlo.dynamic_update_slice": _Walk.moved_cost,
    "stablehlo.select_and_scatter": _Walk.select_and_scatter_cost,
    "stablehlo.map": _Walk.map_cost,
    "stablehlo.while": _Walk.while_cost,
    "stablehlo.custom_call": _Walk.custom_call_cost,
    "stablehlo.cholesky": _Walk.linalg_cost,
    "stablehlo.triangular_solve": _Walk.linalg_cost,
    "stablehlo.dot_general": _Walk.dot_cost,
    "stablehlo.dot": _Walk.dot_cost,
    "stablehlo.convolution": _Walk.convolution_cost,
}
# Every op a module may hold, charged or free (:meth:`_Walk.admit`; ``_FREE`` holds the converts).
_KNOWN_OPS = frozenset(_FREE | _ELEMENTWISE.keys() | _HANDLERS.keys())


class _Scope(dict):
    """One function call's known scalar constants (for loop bounds), and its values that depend
    on the copy's weights (``tainted``)."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.tainted: set[ir.Value] = set()
        self.forced: set[ir.Operation] = set()  # calls under control that depends on the copy


def _marked(op: ir.Operation, known: _Scope) -> frozenset[int]:
    """The positions of ``op``'s operands that depend on the copy."""
    return frozenset(i for i, v in enumerate(op.operands) if v in known.tainted)


def _one_block(region: ir.Region) -> ir.Block:
    if len(region.blocks) != 1:
        raise Refused("a region with other than one block")
    return region.blocks[0]


def _terminator(block: ir.Block) -> ir.Operation:
    ops = list(block.operations)
    if not ops:
        raise Refused("an empty block")
    return ops[-1].operation


def _single_op_body(region: ir.Region) -> str | None:
    """The op name of a body ``return op(arg0, arg1)`` (either order), else None."""
    if len(region.blocks) != 1:
        return None
    block = region.blocks[0]
    ops = [o.operation for o in block.operations]
    if len(ops) != 2 or ops[1].name != "stablehlo.return" or len(block.arguments) != 2:
        return None
    op, ret = ops
    if list(ret.operands) != [op.results[0]] or len(op.results) != 1:
        return None
    if set(op.operands) != set(block.arguments) or len(op.operands) != 2:
        return None
    return op.name


def _splat_value(value: ir.Value, known: Mapping[ir.Value, np.generic]) -> Any:
    """The one value every element of ``value`` holds, if it is a constant scalar or copies of
    one (broadcast, reshaped); else None. A float type numpy lacks (bf16, f8) gives a float."""
    if value in known:
        return known[value]
    source, owner = value, _owner(value)
    while owner is not None and owner.name in ("stablehlo.broadcast_in_dim", "stablehlo.reshape"):
        source, owner = owner.operands[0], _owner(owner.operands[0])
    if owner is None or owner.name != "stablehlo.constant" or _size(source) != 1:
        return None
    attr = owner.attributes["value"]
    scalar = _scalar(attr, _elem(source))
    if scalar is None and isinstance(attr, ir.DenseElementsAttr) and attr.is_splat:
        splat = attr.get_splat_value()
        scalar = splat.value if isinstance(splat, ir.FloatAttr) else None
    return scalar


def _is_bool_identity(op: ir.Operation, known: Mapping[ir.Value, np.generic]) -> bool:
    """Whether a compare is JAX's lowering of a bool-to-bool convert: ``x != false`` on booleans
    (which is ``x``), its only use a convert to the same type. (A ``!=`` the program wrote has
    no such convert, and is charged as the jaxpr meter charges it.)"""
    x, y = op.operands
    if _elem(x) != "i1" or "NE" not in str(op.attributes["comparison_direction"]):
        return False
    uses = list(op.results[0].uses)
    if len(uses) != 1:
        return False
    user = uses[0].owner.operation
    if user.name != "stablehlo.convert" or user.results[0].type != op.results[0].type:
        return False
    return any(v is not None and not bool(v) for v in (_splat_value(y, known), _splat_value(x, known)))


def _identity(body: str, elem: str) -> Any:
    """The identity of a reduction body ``stablehlo.<body>`` on elements ``elem`` (None if none
    is known: the init is then priced as a combine)."""
    is_float = elem.startswith(("f", "bf"))  # f16/f32/f64, bf16, the f8 types
    dtype = None if is_float else _NP_DTYPES.get(elem)
    if not is_float and dtype is None:
        return None
    if body in ("stablehlo.add", "stablehlo.or", "stablehlo.xor"):
        return 0
    if body == "stablehlo.multiply":
        return 1
    if body == "stablehlo.and":
        return None if is_float else (True if elem == "i1" else ~dtype(0))
    if body in ("stablehlo.maximum", "stablehlo.minimum"):
        low = body == "stablehlo.maximum"
        if is_float:
            return -math.inf if low else math.inf
        if elem == "i1":
            return not low
        info = np.iinfo(dtype)
        return info.min if low else info.max
    return None


def _init_is_identity(op: ir.Operation, known: Mapping[ir.Value, np.generic], body: str | None = None) -> bool:
    """Whether a reduce or reduce_window's (first) init is a constant equal to the identity of
    ``body`` (by default its one-op body): for the variadic ``argmax`` / ``argmin`` body the
    value's, -inf / +inf (the index's init is then never chosen over a real element); for
    ``cumlogsumexp``'s, -inf."""
    n = len(op.results)
    init = list(op.operands)[n]
    if body is None and n == 1:
        body = _single_op_body(op.regions[0])
    elem = _elem(init)
    value = _splat_value(init, known)
    identity = None if body is None else _identity(body, elem)
    return value is not None and identity is not None and bool(value == identity)


def _cumulative_axis(op: ir.Operation, shape: tuple[int, ...], window: list[int]) -> int | None:
    """The axis of a ``cumsum``-style reduce_window (window = the axis, padded n-1 on one side)."""
    rank = len(shape)
    if len(window) != rank:
        return None
    for name in ("window_strides", "base_dilations", "window_dilations"):
        values = _ints(_attr(op, name))
        if values and values != [1] * rank:
            return None
    padding_attr = _attr(op, "padding")
    padding = np.zeros((rank, 2), int) if padding_attr is None else np.array(padding_attr).reshape(rank, 2)
    axes = [a for a in range(rank) if window[a] != 1]
    if len(axes) > 1:
        return None
    axis = axes[0] if axes else None
    for a in range(rank):
        n = shape[a]
        if a == axis:
            if window[a] != n or sorted(padding[a].tolist()) != [0, n - 1]:
                return None
        elif padding[a].tolist() != [0, 0]:
            return None
    if axis is None:  # every window is one element: a length-1 axis, still cumulative
        axis = next((a for a in range(rank) if shape[a] == 1), None)
    return axis


def _counted_loop(op: ir.Operation, known: Mapping[ir.Value, np.generic]) -> tuple[int, bool, ir.Operation] | None:
    """``(trips, bound is a carry, the counter's increment op)`` of a counted while loop."""
    init = list(op.operands)
    cond_block = op.regions[0].blocks[0]
    body_block = op.regions[1].blocks[0]
    cond_ops = [o.operation for o in cond_block.operations if o.operation.name != "stablehlo.constant"]
    if len(cond_ops) != 2 or cond_ops[0].name != "stablehlo.compare" or cond_ops[1].name != "stablehlo.return":
        return None
    test, ret = cond_ops
    if list(ret.operands) != [test.results[0]]:
        return None
    if str(test.attributes["comparison_direction"]) != "#stablehlo<comparison_direction LT>":
        return None
    lhs, rhs = test.operands
    cond_args = list(cond_block.arguments)
    if lhs not in cond_args:
        return None
    i = cond_args.index(lhs)
    elem = _elem(lhs)
    if elem[0] not in "iu" or elem == "i1":
        return None
    # The comparison must read the counter as its type does: an unsigned compare of a signed
    # counter (or the reverse) would run ~2^32 trips where max(0, upper - lower) says none.
    compare_type = _attr(test, "compare_type")
    signedness = "UNSIGNED" if elem.startswith("ui") else "SIGNED"
    if compare_type is not None and str(compare_type) != f"#stablehlo<comparison_type {signedness}>":
        return None
    body_args = list(body_block.arguments)
    body_ops = [o.operation for o in body_block.operations]
    body_ret = body_ops[-1]
    if body_ret.name != "stablehlo.return":
        return None
    returned = list(body_ret.operands)
    local = dict(known)
    for o in [*cond_block.operations, *body_block.operations]:
        o = o.operation
        if o.name == "stablehlo.constant" and _size(o.results[0]) == 1:
            value = _scalar(o.attributes["value"], _elem(o.results[0]))
            if value is not None:
                local[o.results[0]] = value
    carried = rhs in cond_args
    if carried:
        j = cond_args.index(rhs)
        if returned[j] != body_args[j]:
            return None  # the bound changes inside the loop
        upper = local.get(init[j])
    else:
        upper = local.get(rhs)
    lower = local.get(init[i])
    increment = _owner(returned[i])
    if upper is None or lower is None or increment is None or increment.name != "stablehlo.add":
        return None
    a, b = increment.operands
    step = b if a == body_args[i] else a if b == body_args[i] else None
    if step is None or local.get(step) != 1:
        return None
    return max(0, int(upper) - int(lower)), carried, increment


def _lapack_flops(target: str, op: ir.Operation) -> int | None:
    """flopscope's cost of a CPU LAPACK custom call (None if not one the meter knows)."""
    if not target.startswith("lapack_") or not target.endswith("_ffi"):
        return None
    routine = target[len("lapack_") : -len("_ffi")]
    precision, kind = routine[0], routine[1:]
    if precision not in "sdcz" or not op.operands:
        return None
    shape, _ = _tensor(op.operands[0].type)
    if len(shape) < 2 or not _lapack_signature_ok(precision, kind, op):
        return None
    batch = math.prod(shape[:-2])
    m, n = shape[-2], shape[-1]
    acc = flopscope.accounting
    k = min(m, n)
    mode = _backend_char(op, "mode")
    if kind == "potrf":
        one = acc.cholesky_cost(n)
    elif kind == "getrf":
        one = 2 * m * n * k - (m + n) * k * k + 2 * k**3 // 3  # LAPACK getrf: 2n^3/3 for a square matrix
    elif kind in ("syevd", "heevd"):
        one = acc.eigh_cost(n)
    elif kind == "geev":
        one = acc.eig_cost(n)
    elif kind in ("gesdd", "gesvd"):
        one = acc.svd_cost(m, n, with_vectors=mode != "N", full_matrices=mode == "A")
    elif kind == "geqrf":
        one = acc.qr_cost(m, n, "reduced")
    elif kind in ("orgqr", "ungqr"):
        # Forming Q from r reflectors: flopscope's qr price counts it as the factorisation
        # again, so it is charged so, on its own shape, whether or not a geqrf came first.
        r = _tensor(op.operands[1].type)[0][-1]  # the taus, r <= k (_lapack_signature_ok)
        one = 2 * m * n * r - 2 * r**3 // 3
    elif kind == "trsm":
        rhs, _ = _tensor(op.operands[1].type)
        one = m * math.prod(rhs[-2:])  # m^2 per right-hand side
    else:
        return None
    return max(batch * one, 1) * _rate([op.operands[0]])  # complex: x11, as every complex op


# What each LAPACK kernel of jaxlib's CPU FFI reads and writes, as JAX's own lowering calls
# it (``_lapack_signature_ok``: the matrix operand ``batch + (m, n)``, ``E`` its element
# type, ``R`` the real type of the same width, ``C`` the complex one). The kernels take their
# sizes from some operands and walk the others' buffers without reading their shapes
# (``trsm`` takes the batch and order from the right-hand side: a flattened matrix operand
# made it run ``batch`` solves priced as one, and read past its buffer when too small), so
# every operand and result must be what the kernel assumes, or the call is refused. Options
# are the letters JAX passes.
_LAPACK_OPTIONS = {
    "potrf": {"uplo": "LU"},
    "getrf": {},
    "syevd": {"mode": "NV", "uplo": "LU"},
    "heevd": {"mode": "NV", "uplo": "LU"},
    "geev": {"compute_left": "NV", "compute_right": "NV"},
    "gesdd": {"mode": "ASN"},
    "gesvd": {"mode": "ASN"},
    "geqrf": {},
    "orgqr": {},
    "ungqr": {},
    "trsm": {"side": "LR", "uplo": "LU", "trans_x": "NTC", "diag": "NU"},
}
_LAPACK_TYPES = {"s": ("f32", "f32"), "d": ("f64", "f64"), "c": ("complex<f32>", "f32"), "z": ("complex<f64>", "f64")}


def _lapack_signature_ok(precision: str, kind: str, op: ir.Operation) -> bool:
    """Whether a LAPACK call's operands, results and options are exactly what its kernel
    assumes (see ``_LAPACK_OPTIONS``)."""
    if kind not in _LAPACK_OPTIONS:
        return False
    for name, letters in _LAPACK_OPTIONS[kind].items():
        if _backend_char(op, name) not in tuple(letters):
            return False
    config = _attr(op, "mhlo.backend_config")
    if config is not None and (not isinstance(config, ir.DictAttr) or len(config) != len(_LAPACK_OPTIONS[kind])):
        return False
    E, R = _LAPACK_TYPES[precision]
    C = f"complex<{R}>"
    ins = [_tensor(v.type) for v in op.operands]
    outs = [_tensor(v.type) for v in op.results]
    shape = ins[0][0]
    b, (m, n) = tuple(shape[:-2]), shape[-2:]
    k = min(m, n)

    def t(elem: str, *dims: int) -> tuple[tuple[int, ...], str]:
        return b + dims, elem

    info = t("i32")
    if kind == "potrf":
        want_in, want_out = [t(E, n, n)], [t(E, n, n), info]
    elif kind == "getrf":
        want_in, want_out = [t(E, m, n)], [t(E, m, n), t("i32", k), info]
    elif kind in ("syevd", "heevd"):
        want_in, want_out = [t(E, n, n)], [t(E, n, n), t(R, n), info]
    elif kind == "geev":
        vectors = [t(C, n, n), t(C, n, n), info]
        want_in = [t(E, n, n)]
        want_out = ([t(R, n), t(R, n)] if precision in "sd" else [t(C, n)]) + vectors
    elif kind in ("gesdd", "gesvd"):
        full = _backend_char(op, "mode") in ("A", "N")
        u, vt = (t(E, m, m), t(E, n, n)) if full else (t(E, m, k), t(E, k, n))
        want_in, want_out = [t(E, m, n)], [t(E, m, n), t(R, k), u, vt, info]
    elif kind == "geqrf":
        want_in, want_out = [t(E, m, n)], [t(E, m, n), t(E, k)]
    elif kind in ("orgqr", "ungqr"):
        taus = ins[1][0][-1] if len(ins) == 2 and ins[1][0] else -1
        want_in, want_out = [t(E, m, n), t(E, taus)], [t(E, m, n)]
        if not 0 <= taus <= k:
            return False
    else:  # trsm: x (order, order), y the right-hand sides, solved in place
        y = ins[1][0] if len(ins) == 2 else ()
        if len(y) != len(b) + 2:
            return False
        order = y[-1] if _backend_char(op, "side") == "R" else y[-2]
        want_in, want_out = [t(E, order, order), (tuple(y), E)], [(tuple(y), E)]
    return ins == want_in and outs == want_out


def _backend_char(op: ir.Operation, name: str) -> str | None:
    """A one-character LAPACK option (``mode``, ``uplo``...) from a custom call's backend config."""
    config = _attr(op, "mhlo.backend_config")
    if not isinstance(config, ir.DictAttr) or name not in config:
        return None
    value = config[name]
    return chr(ir.IntegerAttr(value).value) if isinstance(value, ir.IntegerAttr) else None

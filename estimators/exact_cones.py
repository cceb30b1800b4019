"""Exact accuracy of bias-free ReLU RNNs and MLPs on order tasks (n <= 3), by enumerating cones.

ARC's AlgZoo models (J. Hilton et al., "AlgZoo: uninterpreted models with fewer than 1,500
parameters", Alignment Forum, January 2026,
https://www.alignmentforum.org/posts/x8BbjZqooS4LFXS8Z) are bias-free ReLU networks, so the
logits are a positively homogeneous, piecewise-linear function of the input ``x`` in R^n.
For the order tasks (argmax, 2nd argmax, argmedian) the target depends only on the order
of the inputs, which is also scale-invariant. Every set the model's correctness depends on
is therefore a union of polyhedral cones through the origin, and since the standard
Gaussian is rotation invariant the accuracy is the *angular* measure of the correct cones:
arc length / 2 pi on the circle for n = 2, spherical area / 4 pi for n = 3.

The method builds the arrangement of the network's linear regions on the sphere and
evaluates the network exactly at its vertices (no sampled input, no quadrature):

1. Start from the cones on which the target is constant: the order cones
   ``x_o0 >= x_o1 (>= x_o2)`` halved by the plane ``x_0 = 0`` (which every RNN neuron cuts
   along at the first step anyway), so every start cone is simplicial: 4 arcs for n = 2,
   12 spherical triangles for n = 3, each with its own copies of its vertices and edges.
2. Walk the network layer by layer (an RNN time step is a layer that reads one more
   input). Every vertex carries the current layer's pre-activations there, computed from
   the previous layer's at the same vertex: ``S = W_hh relu(S_prev) + w_ih x_t`` (RNN) or
   ``S = W_1 relu(W_0 x)`` (MLP). Earlier cuts fixed the ReLU pattern on every cone, so
   ``S`` is linear on each cone and its vertex values determine it. Cut every cone by each
   neuron's zero set in turn (Sutherland-Hodgman clipping of a convex spherical polygon by
   a great circle); a crossing point of an edge gets its values by linear interpolation
   and is shared by the two cones on either side, so the cones keep tiling each start cone.
3. At the vertices, evaluate the logit margins ``L_t - L_j`` (``t`` the start cone's
   target). Keep, in each cone, where ``L_t - L_j > 0`` for every other class ``j``
   (``>= 0`` for ``j > t``, matching argmax's first-index tie rule, which decides cones on
   which a margin vanishes identically, e.g. where every neuron is dead).
4. The area of a union of cones is the sum over the counter-clockwise edges ``(a, b)`` of
   its boundary of the signed solid angle of the triangle ``(r, a, b)``, ``r`` a reference
   ray of the start cone (Van Oosterom-Strackee,
   ``tan(Omega / 2) = r.(a x b) / (|a||b| + (r.a)|b| + (r.b)|a| + a.b)``, unit ``r``). With
   ``r = +-(1, 1, 1) / sqrt(3)``, where a start cone's two sides on planes ``x_i = x_j``
   meet, edges on those planes add nothing, so only edges with a correct cone on exactly
   one side and edges on ``x_0 = 0`` are summed. On the circle an arc ``(a, b)`` measures
   ``atan2(a x b, a.b)``.

The answer is exact up to floating-point rounding and a tolerance used to decide that a
vertex lies on a zero set (coincident zero sets are common: a copied neuron, integer
weights): in float64, ``1e-12`` times a bound on the values from the weights' norms; in
float32, ``1e-5`` times the largest value present. Float64 work is charged twice, so the
estimator (``dtype="auto"``) runs in float64 where the budget affords ample capacities and
in float32 where it is tight; float32 agrees with float64 to ~5e-7 on the zoo, far below
any sampling error (the ground truth of 2^24 samples has a standard error of ~5e-5).

**A program of static shape.** The estimator is one JAX program traced on abstract weights
(so it can be exported and metered before it sees a copy): no data-dependent loop, every
array of a fixed capacity chosen when traced. The complex is a doubly connected edge list
in pools of fixed size -- vertices (ray, start cone, values), edges (endpoints, whether
summed), faces (``K`` vertex and half-edge slots, padded with a sentinel vertex whose
values are 0) -- with counters of the rows in use. One cut (``lax.scan`` over a layer's
neurons):

* every vertex gets a digit (0 negative, 1 on the zero set, 2 positive); a face is split
  when its digits contain both 0 and 2 (an OR over its slots);
* the split faces are compacted (``cumsum`` + scatter) into a list of at most ``sf``;
  each looks up its digit pattern, coded in base 3, in a table built once per ``K``
  (like marching squares' case table): which of its edges cross, and the slot layout of
  its two pieces; the table also flags patterns no convex polygon can have;
* each crossing edge is claimed by one face (a scatter-min), compacted into a list of at
  most ``se``, and split at its interpolated crossing point;
* each split face writes its positive piece in place and its negative piece in a new row,
  and adds the cut edge between them. Padding slots write out of range (dropped).

The face on each side of an edge is recovered at the end from the faces' half-edges.

**Capacities from the budget** (:func:`_plan`): the number of faces a zero set crosses is
modelled from the number of curves before it (a great circle crosses an arrangement of
``c`` great circles in ``2c`` faces), exactly for the first layer and fitted on noisy
copies of the zoo's models for the rest, then scaled by the largest factor ``gamma >= 1``
whose metered program fits the budget. If any pool or list overflows, or a face exceeds
``K`` vertices, the program notices and returns the chance rate ``1/n`` (not exact; it
never exceeds its budget, which is checked by metering before it runs). Below the
cheapest program it returns ``1/n`` at no cost.

Cost (metered; the numpy + flopscope version this replaces in brackets): ARC's official
d=2, n=2 model 1.6e3 in float32, 2.4e3 in float64 [1.1e3]; zoo d=4, n=3 7.0e4 float32 at
``gamma = 1``, 9.3e4 float64 [5.7e4]; d=8, n=3 2.2e5 / 3.0e5 [2.0e5]; d=16, n=3 9.9e5 /
1.4e6 [1.1e6]. Per cut it is about 4 per vertex, ``K + 5`` per face, ~50 per split face
and ``3 (3 + w) + 8`` per crossing edge (``w`` values per vertex), per layer ``2 d^2`` per
vertex and ~55 per boundary edge for the area (float64 work twice that).

**Cost since reads and writes are charged** (after 7b90a62). The clipping is index-table
work: gathers and scatters, which the meter charges one FLOP per element moved (free, they
let ``tests/redteam/attack_lookup_arithmetic.py`` sample for 4 FLOPs a sample). The
cheapest program on ARC's M4,3 costs 136,999 FLOPs by the jaxpr meter (136,418 charged), up
from 69,454, so ARC's 71,000-operation budget buys the chance rate and the protocol's
first exact budget is 1e6; on M2,2 3,549 (from 2,416); on the zoo's d = 16, n = 3 model 1.74e6.
Since c36581a only work on the copy is charged: 135,860 on M4,3 and 3,526 on M2,2 (the
committed ``results/default``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model, ModelSpec
from algzu.planning import abstract_params, chance_estimate, metered_flops

# A vertex lies on a function's zero set when |value| <= _REL_TOL * (float64: a bound on
# |value| at vertices from the weights' norms; float32: the largest |value|). Rounding on
# coincident zero sets is ~1e-16 relative in float64 (~1e-7 in float32, after ~10
# interpolations ~1e-6); genuine near-misses below the tolerance move the measure by a
# comparable, negligible angle.
_REL_TOL = {"float64": 1e-12, "float32": 1e-5}
I32 = jnp.int32

# Row 0 of every pool is a sentinel: vertex 0 is the origin with all values 0 (it pads face
# cycles: its digit is always "on the zero set"); edge 0 joins vertex 0 to itself and is
# never summed; face 0 is "no face". Padding slots of a list read row 0 and write out of
# range (dropped).
_SENT, _FIRST = 0, 1
_SUMMED, _ORDER = 0, 1  # edge flag: 1 for start-cone sides on a plane x_i = x_j (they add no area)
# Candidate growth factors of the capacities (see _plan); the largest that fits is used.
_GAMMAS = (1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


# --- gathers and scatters that the meter prices as data movement ---------------------------
# jnp's fancy indexing normalises negative indices with a compare, add and select per index
# (charged ~6 FLOPs); these index with non-negative ids directly.


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
    """Rows ``x[idx]`` (any index shape)."""
    return jnp.take(x, idx, axis=0, mode="clip")


def _pick(x: jax.Array, j: jax.Array) -> jax.Array:
    """``x[i, j[i, ...]]`` for ``x`` of shape (m, L) and ``j`` of shape (m, r)."""
    dn = lax.GatherDimensionNumbers(
        offset_dims=(), collapsed_slice_dims=(1,), start_index_map=(1,),
        operand_batching_dims=(0,), start_indices_batching_dims=(0,),
    )  # fmt: skip
    return lax.gather(x, j[..., None], dn, slice_sizes=(1, 1), mode=lax.GatherScatterMode.CLIP)


def _put(x: jax.Array, idx: jax.Array, v: jax.Array) -> jax.Array:
    """``x`` with rows ``idx`` (1-D) set to ``v``; out-of-range rows are dropped."""
    dn = lax.ScatterDimensionNumbers(
        update_window_dims=tuple(range(1, x.ndim)), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,)
    )
    v = jnp.broadcast_to(jnp.asarray(v, x.dtype), idx.shape + x.shape[1:])
    return lax.scatter(x, idx[:, None], v, dn, mode=lax.GatherScatterMode.FILL_OR_DROP)


def _put_min(x: jax.Array, idx: jax.Array, v: jax.Array) -> jax.Array:
    """``x`` with ``x[idx] = min(x[idx], v)`` (1-D; charged 1 per update)."""
    dn = lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,)
    )
    return lax.scatter_min(x, idx[:, None], v, dn, mode=lax.GatherScatterMode.FILL_OR_DROP)


def _compact(mask: jax.Array, cap: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The positions of ``mask``'s True entries, in order, in ``cap`` slots.

    Returns:
        ``idx`` (cap,): positions, padded with ``len(mask)`` (append a 0 to what is
        gathered with them); ``count``: how many are True (may exceed ``cap``: an
        overflow); ``ok`` (cap,): the slot holds a position.
    """
    cs = jnp.cumsum(mask.astype(I32))
    dest = cs * mask.astype(I32) - 1  # -1 (dropped) where the mask is False
    idx = _put(jnp.full((cap,), mask.shape[0], I32), dest, jnp.arange(mask.shape[0], dtype=I32))
    count = cs[-1]
    return idx, count, jnp.arange(cap, dtype=I32) < count


def _ext(x: jax.Array) -> jax.Array:
    """``x`` with a zero appended: what padded ``_compact`` positions gather."""
    return jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)])


# --- the piece table ------------------------------------------------------------------------


def _positive_piece(dig: list[int], K: int) -> dict:
    """Sutherland-Hodgman on digits: the positive piece of a convex polygon cut by a line.

    Args:
        dig: the digit (0 negative, 1 on the line, 2 positive) of each of the ``k``
            vertices, counter-clockwise.
        K: the most vertices a piece may have.

    Returns:
        ``split=False`` with the ``side`` (+1, -1, or 0 if every vertex is on the line);
        or ``valid=False`` (a pattern no convex polygon has, or a piece over ``K``); or the
        crossing edges and, for each slot of the piece, its vertex and outgoing half-edge as
        candidate indices: vertex ``j < K``, ``K + i`` the crossing point of the ``i``-th
        crossing edge, ``K + 2`` the sentinel; half-edge ``j < K`` (the old one),
        ``K + 2i`` / ``K + 2i + 1`` the part of the ``i``-th crossing edge before / after
        its crossing point, ``K + 4`` the cut edge, ``K + 5`` none.
    """
    k = len(dig)
    has_pos, has_neg = 2 in dig, 0 in dig
    if not (has_pos and has_neg):
        return {"split": False, "side": 1 if has_pos else (-1 if has_neg else 0)}
    # A convex polygon reads, cyclically, P..P [Z] N..N [Z]: at most one vertex on the line
    # between the runs.
    i0 = next(i for i in range(k) if dig[i] == 2 and dig[i - 1] != 2)
    runs = [(d, len(list(g))) for d, g in itertools.groupby(dig[i0:] + dig[:i0])]
    shape = [d for d, _ in runs]
    if shape not in ([2, 0], [2, 1, 0], [2, 0, 1], [2, 1, 0, 1]) or any(d == 1 and c > 1 for d, c in runs):
        return {"split": True, "valid": False}
    cross = [j for j in range(k) if {dig[j], dig[(j + 1) % k]} == {0, 2}]
    items = []  # (candidate, is_crossing, edge position)
    for j in range(k):
        if dig[j] >= 1:
            items.append((j, False, j))
        if j in cross:
            items.append((K + cross.index(j), True, j))
    if len(items) > K:
        return {"split": True, "valid": False}
    vsrc, hsrc, cut = [], [], None
    for i, (c, is_x, j) in enumerate(items):
        c_next, next_is_x, j_next = items[(i + 1) % len(items)]
        if not is_x and next_is_x and j_next == j:
            h = K + 2 * cross.index(j)  # from the vertex to the crossing point of its edge
        elif is_x and not next_is_x and j_next == (j + 1) % k and dig[j] == 0:
            h = K + 2 * cross.index(j) + 1  # from an entry point to the next vertex
        elif not is_x and not next_is_x and j_next == (j + 1) % k:
            h = j
        else:
            cut = (c, c_next)
            h = K + 4
        vsrc.append(c)
        hsrc.append(h)
    return {"split": True, "valid": True, "cross": cross, "vsrc": vsrc, "hsrc": hsrc, "cut": cut}


@functools.lru_cache(maxsize=None)
def _piece_table(K: int) -> dict[str, np.ndarray]:
    """:func:`_positive_piece` for every digit pattern of every k-gon, 3 <= k <= K.

    A face of ``k`` vertices padded with sentinels (digit 1) to ``K`` slots has code
    ``sum_j digit_j 3^j``; its row is ``code + base[k]``. The negative piece is the
    positive piece of the flipped digits ``2 - digit``, at row ``neg``. ``hsrc`` has four
    rows per pattern, ``4 row + 2 s_a + s_b``: a face that traverses its ``i``-th crossing
    edge backwards (``s = 1``) meets the edge's two parts in the other order, so the
    half-edge candidates are ``K + 2i`` (the face's half-edge of the old edge) and
    ``K + 2i + 1`` (its half-edge of the new edge) whatever ``s``.
    """
    offset, total = {}, 0
    for k in range(3, K + 1):
        offset[k] = total
        total += 3**k
    tail = [sum(3**j for j in range(k, K)) for k in range(K + 1)]
    base = np.array([offset.get(k, 0) - tail[k] for k in range(K + 1)], np.int32)
    status = np.zeros(total, np.int8)  # 0 not split, 1 split, 2 invalid
    ja, jb = np.full(total, K, np.int8), np.full(total, K, np.int8)
    count = np.zeros(total, np.int8)
    vsrc = np.full((total, K), K + 2, np.int8)
    hsrc = np.full((total, K), K + 5, np.int8)
    cut = np.zeros((total, 2), np.int8)
    for k in range(3, K + 1):
        for code in range(3**k):
            row = offset[k] + code
            r = _positive_piece([(code // 3**j) % 3 for j in range(k)], K)
            if not r["split"]:
                continue
            if not r["valid"]:
                status[row] = 2
                continue
            status[row] = 1
            for i, j in enumerate(r["cross"]):
                (ja if i == 0 else jb)[row] = j
            m = len(r["vsrc"])
            count[row] = m
            vsrc[row, :m], hsrc[row, :m], cut[row] = r["vsrc"], r["hsrc"], r["cut"]
    neg = np.zeros(total, np.int32)
    for k in range(3, K + 1):
        neg[offset[k] : offset[k] + 3**k] = offset[k] + (3**k - 1 - np.arange(3**k))
    # Part 0 (from the vertex before the crossing) is the old edge's half when s = 0.
    hsrc4 = np.repeat(hsrc[:, None, :], 4, axis=1)
    for sa, sb in itertools.product((0, 1), repeat=2):
        h = hsrc4[:, 2 * sa + sb]
        for i, s in ((0, sa), (1, sb)):
            part0, part1 = (h == K + 2 * i), (h == K + 2 * i + 1)
            h[part0], h[part1] = K + 2 * i + s, K + 2 * i + 1 - s
    hsrc4 = hsrc4.reshape(total * 4, K)
    columns = {"status": status, "ja": ja, "jb": jb, "count": count, "vsrc": vsrc, "hsrc": hsrc4, "cut": cut}
    return {"base": base, "neg": neg, **columns}


# --- the plan: capacities chosen when traced ------------------------------------------------


class _Stage(NamedTuple):
    """A block of cuts with fixed capacities (rows include the 2 reserved ones)."""

    kind: str  # "layer" (cuts by neurons start..stop-1 of layer ``index``) or "margin" (cut ``index``)
    index: int
    start: int
    stop: int
    V: int
    E: int
    F: int
    sf: int  # split faces per cut
    se: int  # crossing edges per cut


class _Plan(NamedTuple):
    spec: ModelSpec
    rank: int
    dtype: str
    gamma: float
    K: int
    stages: tuple[_Stage, ...]
    B: int  # boundary edges (n = 3)


def _n_layers(spec: ModelSpec) -> int:
    return spec.n - 1 if spec.arch == "rnn" else 2


def _plan(spec: ModelSpec, dtype: str, gamma: float) -> _Plan:
    """Capacities for growth factor ``gamma``.

    A zero set crossing an arrangement of ``c`` great circles in general position passes
    through ``2c`` faces; the start cones contribute 4 circles (n = 3: three planes
    ``x_i = x_j`` and ``x_0 = 0``). The first layer's zero sets are great circles (MLP) or
    planes through the ``x_2``-axis on each side of ``x_0 = 0`` (RNN: 3 start cones on each
    side), so there the counts are bounds. Later zero sets bend where they cross earlier
    ones. Fitted on noisy copies of the zoo's trained n = 3 models (d = 2, 3, 4, 8, 16 and
    the d = 32 MLP; 256 copies of M4,3 at sigma 0.05), with ``c`` the curves before a cut:
    split faces per cut at most ``2.4c + 4`` (mean ``2.1c + 2``), per margin cut at most
    ``3.5c + 18`` (mean ``3c``, but the pools of the two margin cuts together need ``3.6c``
    each); crossing edges at most ``0.25 sf + 8`` more than split faces (start-cone sides
    are not shared); boundary edges at most ``7.5c + 10`` (MLP ``10c``). The lists of one
    cut get the maxima times ``gamma``, the pools the means times ``gamma``.
    """
    d, n = spec.d, spec.n
    rank = spec.task_obj.target_rank(n)
    L = _n_layers(spec)
    # Faces may have at most K vertices; measured maxima: 7 (M4,3), 8 (d=4 argmedian, d=8),
    # 10 (d=16). One more slot from gamma = 2.
    K = (7 if d <= 4 else (8 if d <= 8 else 10)) + (gamma >= 2.0)
    start_faces = 2 * math.factorial(n)
    V, E, F = _FIRST + n * start_faces, _FIRST + (3 * start_faces if n == 3 else 0), _FIRST + start_faces
    curves = n + 1 if n == 3 else 2
    stages = []
    up = lambda x: max(1, math.ceil(gamma * x))  # noqa: E731

    def grow(n_cuts, counts):
        """counts(c) -> (split faces max, mean, exact); returns the lists' capacities."""
        nonlocal V, E, F, curves
        sfs, ses = [], []
        for _ in range(n_cuts):
            most, mean, exact = counts(curves)
            sf = min(most if exact else up(most), F - _FIRST)
            if n == 2:  # arcs: a split adds a vertex and a face
                se, dv, de, df = sf, sf, 0, sf
            elif exact:
                se = sf + (4 if spec.arch == "rnn" else 8)
                dv, de, df = se, se + sf, sf
            else:
                se = sf + up(0.25 * most + 8)
                df = min(up(mean), sf)
                dv = min(df + up(0.25 * mean + 4), se)
                de = dv + df
            V, E, F = V + dv, E + de, F + df
            curves += 1
            sfs.append(sf)
            ses.append(se)
        return max(sfs), max(ses)

    for layer in range(1, L + 1):
        if n == 2:  # a line through 0 meets each half circle (x_0 > 0, x_0 < 0) once
            counts = lambda c, layer=layer: (  # noqa: E731
                (2, 2, True) if layer == 1 else (2.4 * c + 4, 2.1 * c + 2, False)
            )
        elif layer == 1 and spec.arch == "rnn":
            counts = lambda c: (6, 6, True)  # noqa: E731
        elif layer == 1:
            counts = lambda c: (2 * c, 2 * c, True)  # noqa: E731
        else:
            counts = lambda c: (2.4 * c + 4, 2.1 * c + 2, False)  # noqa: E731
        # One scan for an exact first layer, two for the others: capacity tracks growth.
        parts = 1 if layer == 1 and (spec.arch == "rnn" or n == 2) else min(2, d)
        bounds = np.linspace(0, d, parts + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:]):
            sf, se = grow(int(b - a), counts)
            stages.append(_Stage("layer", layer, int(a), int(b), V, E, F, sf, se))
    for r in range(n - 1):
        sf, se = grow(1, lambda c: (3.5 * c + 18, 3.6 * c, False))
        stages.append(_Stage("margin", r, 0, 0, V, E, F, sf, se))
    B = (up(7.5 * curves + 10) if spec.arch == "rnn" else up(10 * curves)) if n == 3 else 0
    return _Plan(spec, rank, dtype, gamma, K, tuple(stages), B)


# --- the complex ----------------------------------------------------------------------------


class _Complex(NamedTuple):
    """Faces tiling the start cones (arcs for n = 2), in pools of fixed capacity.

    Attributes:
        P: ``(V, n + 1 + w)`` float: each vertex's ray (``n``), its start cone (an exact
            small integer), and ``w`` function values (the current layer's pre-activations,
            or the margins ``L_t - L_j`` of the start cone's target ``t``).
        EI: ``(E, 3)`` int: each edge's endpoints ``p``, ``q`` and whether it lies on a
            plane ``x_i = x_j`` (n = 3; n = 2 has no edges).
        FI: ``(F, 2K + 3)`` int (n = 3): each face's vertices counter-clockwise (``K``,
            padded with the sentinel), its half-edges ``2 e + s`` from slot ``j`` to
            ``j + 1`` (``K``; ``s = 1``: traversed from ``q`` to ``p``), vertex count,
            start cone, active (still possibly correct). n = 2: ``(F, 4)``: the arc's
            ends ``a``, ``b`` (counter-clockwise), start cone, active.
        nv, ne, nf: rows in use; bad: an overflow happened.
    """

    P: jax.Array
    EI: jax.Array
    FI: jax.Array
    nv: jax.Array
    ne: jax.Array
    nf: jax.Array
    bad: jax.Array


class _Start(NamedTuple):
    """The start cones, constants of (n, rank)."""

    rays: np.ndarray  # (S, n, n): each start cone's rays, counter-clockwise
    target: np.ndarray  # (S,)
    sign: np.ndarray  # (S,) +-1: the reference ray is sign * (1, ..., 1) / sqrt(n)
    others: np.ndarray  # (S, n - 1): the classes other than the target, in order
    tie_pos: np.ndarray  # (S, n - 1) bool: the target wins a tie with that class


@functools.lru_cache(maxsize=None)
def _start(n: int, rank: int) -> _Start:
    """The ``2 n!`` simplicial cones ``{A x >= 0}`` on which the order and sign of x_0 are
    fixed; their rays are the columns of ``A^-1``."""
    rays, target, sign = [], [], []
    for order in itertools.permutations(range(n)):
        for s in (1.0, -1.0):
            A = np.zeros((n, n))
            for k in range(n - 1):
                A[k, order[k]], A[k, order[k + 1]] = 1.0, -1.0
            A[n - 1, 0] = s
            R = np.linalg.inv(A).T
            R /= np.linalg.norm(R, axis=1, keepdims=True)
            if np.linalg.det(R) < 0:  # counter-clockwise
                R = R[::-1]
            rays.append(R)
            target.append(order[rank])
            sign.append(s)
    target = np.array(target)
    others = np.array([[j for j in range(n) if j != t] for t in target])
    return _Start(np.array(rays), target, np.array(sign), others, others > target[:, None])


def _empty(plan: _Plan, stage: _Stage, w: int, dtype) -> _Complex:
    """The start complex in the first stage's pools, values 0."""
    n, K = plan.spec.n, plan.K
    st = _start(n, plan.rank)
    S = len(st.target)
    V, E, F = stage.V, stage.E, stage.F
    P = np.zeros((V, n + 1 + w))
    P[_FIRST : _FIRST + n * S, :n] = st.rays.reshape(-1, n)
    P[_FIRST : _FIRST + n * S, n] = np.repeat(np.arange(S), n)
    EI = np.zeros((E, 3), np.int32)
    EI[:, 2] = _ORDER  # unused rows and the sentinel edge are never summed
    FI = np.zeros((F, 2 * K + 3 if n == 3 else 4), np.int32)
    for s in range(S):
        verts = _FIRST + n * s + np.arange(n)
        f = _FIRST + s
        if n == 2:
            FI[f] = [verts[0], verts[1], s, 1]
            continue
        FI[f, :3] = verts
        FI[f, 2 * K :] = [3, s, 1]
        for j in range(3):
            e = _FIRST + 3 * s + j
            a, b = verts[j], verts[(j + 1) % 3]
            on_x0 = abs(P[a, 0]) < 1e-12 and abs(P[b, 0]) < 1e-12
            EI[e] = [a, b, _SUMMED if on_x0 else _ORDER]
            FI[f, K + j] = 2 * e
    counts = (_FIRST + n * S, _FIRST + (3 * S if n == 3 else 0), _FIRST + S)
    return _Complex(
        jnp.asarray(P, dtype), jnp.asarray(EI), jnp.asarray(FI), *(jnp.asarray(c, I32) for c in counts),
        jnp.asarray(False),
    )  # fmt: skip


def _resize(cx: _Complex, stage: _Stage) -> _Complex:
    """Pad the pools to the stage's capacities (rows past the counters are unused)."""

    def pad(x, size, row):
        extra = size - x.shape[0]
        if extra <= 0:
            return x
        return jnp.concatenate([x, jnp.broadcast_to(jnp.asarray(row, x.dtype), (extra,) + x.shape[1:])])

    return cx._replace(P=pad(cx.P, stage.V, 0), EI=pad(cx.EI, stage.E, [0, 0, _ORDER]), FI=pad(cx.FI, stage.F, 0))


def _digits(values: jax.Array, tol: jax.Array) -> jax.Array:
    """0 below ``-tol``, 2 above ``tol``, 1 between (on the zero set).

    Compared in float32: the sign of a value against a tolerance needs no more precision
    (it changes only for values within 1e-7 of the tolerance itself).
    """
    v, t = values.astype(jnp.float32), tol.astype(jnp.float32)
    return (v > t).astype(I32) + (v >= -t).astype(I32)


_FAR = 1 << 30  # added to the write index of a padding slot: out of range, so dropped


def _lerp(Pp: jax.Array, Pq: jax.Array, t: jax.Array, n: int) -> jax.Array:
    """Vertex rows ``Pp + t (Pq - Pp)``; the start-cone column ``n``, equal at both ends,
    is copied."""
    lerp = lambda a, b: a + t * (b - a)  # noqa: E731
    return jnp.concatenate([lerp(Pp[:, :n], Pq[:, :n]), Pp[:, n : n + 1], lerp(Pp[:, n + 1 :], Pq[:, n + 1 :])], axis=1)


def _far(ok: jax.Array) -> jax.Array:
    """0 for the slots in use, ``_FAR`` for padding."""
    return (~ok).astype(I32) * _FAR


def _cut(cx: _Complex, col: jax.Array, tol: jax.Array, stage: _Stage, K: int, tie_pos: jax.Array | None) -> _Complex:
    """Cut every (active) face by the zero set of value column ``col`` (n = 3).

    ``tie_pos`` is None for a neuron cut (every face is cut, both pieces stay active);
    for a margin cut it is ``(S,)`` bool per start cone: the side on which a face whose
    vertices all lie on the zero set counts as positive. A margin cut keeps only the
    positive side active (the negative pieces and faces are wrong).
    """
    tab = {k: jnp.asarray(v) for k, v in _piece_table(K).items()}
    look = lambda name, idx: _take(tab[name], idx).astype(I32)  # noqa: E731  (int8 tables)
    n, sf, se = 3, stage.sf, stage.se
    F, E, V = cx.FI.shape[0], cx.EI.shape[0], cx.P.shape[0]
    FV, FH = cx.FI[:, :K], cx.FI[:, K : 2 * K]
    values = lax.dynamic_index_in_dim(cx.P, n + 1 + col, axis=1, keepdims=False)
    dig = _digits(values, tol)
    seen = jnp.bitwise_or.reduce(_take(jnp.left_shift(I32(1), dig), FV), axis=1)  # bits: 1 neg, 2 zero, 4 pos
    split = (seen & 5) == 5
    FI = cx.FI
    if tie_pos is not None:
        active = FI[:, 2 * K + 2] > 0
        split = split & active
        tie = _take(tie_pos, FI[:, 2 * K + 1])
        keep = active & (((seen & 4) != 0) | (((seen & 1) == 0) & tie))
        FI = lax.dynamic_update_slice(FI, keep.astype(I32)[:, None], (0, 2 * K + 2))

    # The split faces and their digit patterns.
    sidx, ns, ok_f = _compact(split, sf)
    face = _take(_ext(jnp.arange(F, dtype=I32)), sidx)  # padding: face 0 (none)
    rows = _take(FI, face)
    fvs, fhs, ks, starts = rows[:, :K], rows[:, K : 2 * K], rows[:, 2 * K], rows[:, 2 * K + 1]
    code = _take(dig, fvs) @ jnp.asarray(3 ** np.arange(K), I32)
    base = look("base", ks)
    rp = base + code
    rn = look("neg", rp)  # flipped digits 2 - d: the negative piece
    bad = cx.bad | jnp.any(ok_f & (look("status", rp) != 1))

    # Crossing edges, each claimed by the lowest-numbered split face that has it.
    fhs_x = jnp.concatenate([fhs, jnp.zeros((sf, 1), I32)], axis=1)  # slot K: no crossing
    ha = _pick(fhs_x, look("ja", rp)[:, None])[:, 0]
    hb = _pick(fhs_x, look("jb", rp)[:, None])[:, 0]
    ea, eb = ha >> 1, hb >> 1
    both, faces2 = jnp.concatenate([ea, eb]), jnp.concatenate([face, face])
    claim = _put_min(jnp.full((E,), F, I32), both, faces2)
    owned = (_take(claim, both) == faces2) & (both != _SENT)
    cidx, nc, ok_e = _compact(owned, se)
    edge = _take(_ext(both), cidx)  # padding: edge 0
    far_e = _far(ok_e)
    wedge = edge + far_e

    # Split each crossing edge (p, q) at X: e becomes (p, X), the new edge e2 is (X, q).
    erows = _take(cx.EI, edge)
    p, q, kind = erows[:, 0], erows[:, 1], erows[:, 2]
    Pp, Pq = _take(cx.P, p), _take(cx.P, q)
    sp, sq = _take(values, p), _take(values, q)
    t = (sp / (sp - sq))[:, None]
    Pn = _lerp(Pp, Pq, t, n)
    slot_e = jnp.arange(se, dtype=I32)
    vid, eid = cx.nv + slot_e, cx.ne + slot_e
    P = _put(cx.P, vid + far_e, Pn)
    maps = _put(jnp.zeros((E, 2), I32), wedge, jnp.stack([vid, eid], axis=1))  # new vertex, new edge

    # The pieces. The face's half-edge h = 2e + s of a crossing edge and its half-edge
    # 2 e2 + s of the new edge; the table orders them by s.
    sa, sb = ha & 1, hb & 1
    h2a, h2b = 2 * _take(maps[:, 1], ea) + sa, 2 * _take(maps[:, 1], eb) + sb
    ss = 2 * sa + sb
    far_f = _far(ok_f)
    slot_f = jnp.arange(sf, dtype=I32)
    cut_id, new_face = cx.ne + nc + slot_f, cx.nf + slot_f
    new_v = maps[:, 0]
    zero = jnp.zeros((sf, 1), I32)
    vcand = jnp.concatenate([fvs, _take(new_v, ea)[:, None], _take(new_v, eb)[:, None], zero], axis=1)
    halves = jnp.stack([ha, h2a, hb, h2b], axis=1)
    hcand = lambda cut: jnp.concatenate([fhs, halves, cut[:, None], zero], axis=1)  # noqa: E731
    active = jnp.full((sf, 1), 1, I32)
    piece = lambda row, hc, act: jnp.concatenate(  # noqa: E731
        [_pick(vcand, look("vsrc", row)), _pick(hc, look("hsrc", 4 * row + ss)),
         look("count", row)[:, None], starts[:, None], act], axis=1,
    )  # fmt: skip
    neg_active = active if tie_pos is None else zero
    FI = _put(
        FI,
        jnp.concatenate([face + far_f, new_face + far_f]),
        jnp.concatenate([piece(rp, hcand(2 * cut_id), active), piece(rn, hcand(2 * cut_id + 1), neg_active)]),
    )
    cut_ends = _pick(vcand, look("cut", rp))
    EI = _put(
        cx.EI,
        jnp.concatenate([wedge, eid + far_e, cut_id + far_f]),
        jnp.concatenate([
            jnp.stack([p, vid, kind], axis=1),
            jnp.stack([vid, q, kind], axis=1),
            jnp.concatenate([cut_ends, zero + _SUMMED], axis=1),
        ]),
    )  # fmt: skip
    nv, ne, nf = cx.nv + nc, cx.ne + nc + ns, cx.nf + ns
    bad = bad | (ns > sf) | (nc > se) | (nv > V) | (ne > E) | (nf > F)
    return _Complex(P, EI, FI, nv, ne, nf, bad), jnp.stack([ns, nc])


def _cut_arcs(cx: _Complex, col: jax.Array, tol: jax.Array, stage: _Stage, tie_pos: jax.Array | None) -> _Complex:
    """:func:`_cut` for n = 2: an arc ``(a, b)`` whose ends are strictly apart becomes
    ``(a, X)`` and, in a new row, ``(X, b)``."""
    n, sf = 2, stage.sf
    F, V = cx.FI.shape[0], cx.P.shape[0]
    values = lax.dynamic_index_in_dim(cx.P, n + 1 + col, axis=1, keepdims=False)
    dig = _digits(values, tol)
    da, db = _take(dig, cx.FI[:, 0]), _take(dig, cx.FI[:, 1])
    split = jnp.abs(da - db) == 2
    FI = cx.FI
    if tie_pos is not None:
        active = FI[:, 3] > 0
        split = split & active
        has_pos, has_neg = (da == 2) | (db == 2), (da == 0) | (db == 0)
        keep = active & (has_pos | (~has_neg & _take(tie_pos, FI[:, 2])))
        FI = lax.dynamic_update_slice(FI, keep.astype(I32)[:, None], (0, 3))
    sidx, ns, ok = _compact(split, sf)
    face = _take(_ext(jnp.arange(F, dtype=I32)), sidx)
    rows = _take(FI, face)
    a, b, starts = rows[:, 0], rows[:, 1], rows[:, 2]
    Pa, Pb = _take(cx.P, a), _take(cx.P, b)
    sa, sb = _take(values, a), _take(values, b)
    t = (sa / (sa - sb))[:, None]
    Pn = _lerp(Pa, Pb, t, n)
    far = _far(ok)
    slot = jnp.arange(sf, dtype=I32)
    vid, new_face = cx.nv + slot, cx.nf + slot
    P = _put(cx.P, vid + far, Pn)
    if tie_pos is None:
        act_a = act_b = jnp.ones_like(a)
    else:  # the piece at the positive end stays active
        act_a = (_take(dig, a) == 2).astype(I32)
        act_b = 1 - act_a
    FI = _put(
        FI,
        jnp.concatenate([face + far, new_face + far]),
        jnp.concatenate([jnp.stack([a, vid, starts, act_a], axis=1), jnp.stack([vid, b, starts, act_b], axis=1)]),
    )
    nv, nf = cx.nv + ns, cx.nf + ns
    cx = cx._replace(P=P, FI=FI, nv=nv, nf=nf, bad=cx.bad | (ns > sf) | (nv > V) | (nf > F))
    return cx, jnp.stack([ns, ns])


def _area_fraction(cx: _Complex, plan: _Plan) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Measure of the active faces as a fraction of the sphere (n = 3) or circle (n = 2),
    whether a capacity overflowed, and the number of boundary edges summed."""
    n = plan.spec.n
    dtype = cx.P.dtype
    F = cx.FI.shape[0]
    correct = _put(cx.FI[:, -1] > 0, jnp.arange(_FIRST, dtype=I32), False)  # row 0 is no face
    if n == 2:
        a, b = _take(cx.P, cx.FI[:, 0])[:, :2], _take(cx.P, cx.FI[:, 1])[:, :2]
        angle = jnp.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], jnp.sum(a * b, axis=1))
        return jnp.sum(angle * correct.astype(dtype)) / (2 * math.pi), cx.bad, jnp.zeros((), I32)
    K = plan.K
    E = cx.EI.shape[0]
    # The face on each side of each edge (0: none), from the faces' half-edges.
    owner = jnp.broadcast_to(jnp.arange(_FIRST, F, dtype=I32)[:, None], (F - _FIRST, K))
    face_of = _put(jnp.zeros((2 * E,), I32), cx.FI[_FIRST:, K : 2 * K].reshape(-1), owner.reshape(-1))
    c = _take(correct, face_of[0::2]).astype(I32) - _take(correct, face_of[1::2]).astype(I32)
    boundary = (c != 0) & (cx.EI[:, 2] == _SUMMED)
    bidx, nb, _ = _compact(boundary, plan.B)
    edge = _take(_ext(jnp.arange(E, dtype=I32)), bidx)  # padding: edge 0, of length 0
    rows = _take(cx.EI, edge)
    Pa, Pb = _take(cx.P, rows[:, 0]), _take(cx.P, rows[:, 1])
    a, b = Pa[:, :3], Pb[:, :3]
    sign = jnp.asarray(_start(n, plan.rank).sign / math.sqrt(3.0), dtype)
    r = _take(sign, Pa[:, 3].astype(I32))  # the reference ray is r (1, 1, 1)
    na, nb_ = jnp.sqrt(jnp.sum(a * a, axis=1)), jnp.sqrt(jnp.sum(b * b, axis=1))
    det = r * jnp.sum(jnp.cross(a, b), axis=1)
    den = na * nb_ + r * (jnp.sum(a, axis=1) * nb_ + jnp.sum(b, axis=1) * na) + jnp.sum(a * b, axis=1)
    half = jnp.arctan2(det, den)  # Omega / 2
    total = jnp.sum(_take(c, edge).astype(dtype) * half)
    return total / (2 * math.pi), cx.bad | (nb > plan.B), nb


def _sup_norm(W: jax.Array) -> jax.Array:
    """``max_i sum_j |W_ij|``: bounds ``max |W h|`` by ``max |h|``."""
    return jnp.max(jnp.sum(jnp.abs(W), axis=1))


def rank_tables(n: int, rank: int) -> dict[str, np.ndarray]:
    """What the target's rank changes: per start cone its target, the other classes in
    order and the ties the target wins (the rest of the program depends on (arch, d, n))."""
    st = _start(n, rank)
    return {"target": st.target, "others": st.others, "tie_pos": st.tie_pos}


def _order_accuracy(
    plan: _Plan, params: dict[str, jax.Array], tables: dict[str, jax.Array] | None = None
) -> tuple[jax.Array, jax.Array, dict]:
    """The exact probability that the model's argmax is the input of order ``plan.rank``,
    whether the capacities held (else the value is meaningless), and counts: per cut the
    faces split and edges crossed (``(cuts, 2)``), the rows in use (and the largest face)
    and the boundary edges.

    Args:
        plan: capacities (from :func:`best_plan`).
        params: the weights.
        tables: :func:`rank_tables` as arrays, to trace one program for every rank
            (default: those of ``plan.rank``, as constants).

    Must run with 64-bit types enabled when ``plan.dtype`` is float64.
    """
    spec = plan.spec
    n, d = spec.n, spec.d
    dtype = jnp.dtype(plan.dtype)
    rel = _REL_TOL[plan.dtype]
    tab = {k: jnp.asarray(v) for k, v in (tables or rank_tables(n, plan.rank)).items()}
    p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    stages = list(plan.stages)
    cx = _empty(plan, stages[0], d, dtype)

    def cut(cx, col, tol, stage, tie_pos):
        if n == 3:
            return _cut(cx, col, tol, stage, plan.K, tie_pos)
        return _cut_arcs(cx, col, tol, stage, tie_pos)

    def with_values(cx, values):
        return cx._replace(P=jnp.concatenate([cx.P[:, : n + 1], values], axis=1))

    def tolerance(bound, values):
        # float64: relative to a bound from the weights' norms (free, loose); float32 needs
        # a tighter scale, the largest value present (rounding is relative to it).
        if plan.dtype == "float64":
            return rel * bound
        return rel * jnp.max(jnp.abs(values))

    counts = []

    # Pre-activations at the vertices, layer by layer, each followed by its cuts. Vertices
    # have norm <= 1, so |S| <= bound, with bound(W h) = _sup_norm(W) bound(h). Values are
    # computed for the rows of the previous stage, then the pools grow.
    X, H = (lambda cx: cx.P[:, :n]), (lambda cx: jnp.maximum(cx.P[:, n + 1 :], 0.0))  # noqa: E731
    if spec.arch == "rnn":
        w_ih, W_hh, W_out = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"], p["linear.weight"]
        w_max, hh_norm = jnp.max(jnp.abs(w_ih)), _sup_norm(W_hh)
        bound = w_max
    else:
        W_0, W_1, W_out = p["mlp.0.weight"], p["mlp.1.weight"], p["linear.weight"]
    for layer in range(1, _n_layers(spec) + 1):
        if spec.arch == "rnn":
            # Step 0, x_0 w_ih, vanishes only on x_0 = 0, a side of every start cone.
            h = jnp.maximum(X(cx)[:, 0:1] * w_ih[None, :], 0.0) if layer == 1 else H(cx)
            S = h @ W_hh.T + X(cx)[:, layer : layer + 1] * w_ih[None, :]
            bound = hh_norm * bound + w_max
        elif layer == 1:
            S = X(cx) @ W_0.T
            bound = _sup_norm(W_0)
        else:
            S = H(cx) @ W_1.T
            bound = _sup_norm(W_1) * bound
        cx = with_values(cx, S)
        tol = tolerance(bound, S)
        for stage in (s for s in stages if s.kind == "layer" and s.index == layer):
            cx = _resize(cx, stage)
            cx, c = lax.scan(
                lambda c, i, stage=stage: cut(c, i, tol, stage, None),
                cx,
                jnp.arange(stage.start, stage.stop, dtype=I32),
            )
            counts.append(c)

    # Margins L_t - L_j = (W_out[t] - W_out[j]) . relu(S) at every vertex, t its start
    # cone's target, j the other classes in order.
    delta = _take(W_out, tab["target"])[:, None, :] - _take(W_out, tab["others"])  # (S, n - 1, d)
    vdelta = _take(delta, cx.P[:, n].astype(I32))
    margins = jnp.einsum("vrd,vd->vr", vdelta, H(cx))
    tol = tolerance(jnp.max(jnp.sum(jnp.abs(delta), axis=2)) * bound, margins)
    cx = with_values(cx, margins)
    # Keep, in each face with target t, where L_t - L_j > 0 for every other class j. Where
    # L_t - L_j vanishes identically argmax takes the first index, so the target wins that
    # tie against later classes and loses it to earlier ones.
    for stage in (s for s in stages if s.kind == "margin"):
        cx = _resize(cx, stage)
        cx, c = cut(cx, jnp.asarray(stage.index, I32), tol, stage, tab["tie_pos"][:, stage.index])
        counts.append(c[None])
    value, bad, nb = _area_fraction(cx, plan)
    largest = jnp.max(cx.FI[:, plan.K * 2]) if n == 3 else jnp.asarray(2, I32)
    stats = {"cuts": jnp.concatenate(counts), "rows": jnp.stack([cx.nv, cx.ne, cx.nf, largest]), "boundary": nb}
    return value, ~bad, stats


# --- budget: the largest capacities whose metered program fits -----------------------------


def _program(plan: _Plan):
    """The estimate as a function of the weights: exact, or 1/n if a capacity overflowed."""

    def run(params: dict[str, jax.Array]) -> jax.Array:
        with jax.enable_x64(plan.dtype == "float64"):
            value, ok, _ = _order_accuracy(plan, params)
            chance = plan.spec.task_obj.chance_rate(plan.spec.n)
            return jnp.where(ok, jnp.clip(value, 0.0, 1.0), chance)

    return run


@functools.lru_cache(maxsize=256)
def _plan_flops(plan: _Plan) -> int:
    return metered_flops(_program(plan), abstract_params(plan.spec))


def _largest_gamma(spec: ModelSpec, budget_flops: int, dtype: str) -> int | None:
    """Index in _GAMMAS of the largest growth factor whose metered program fits, or None if
    even the smallest does not.

    Cost grows about linearly with gamma: two meterings give a secant, the guess on it is
    metered, and then the next one up or down until the answer is certain (3-4 meterings,
    where a bisection needs 5; each is a trace of the whole program).
    """
    cost = lambda i: _plan_flops(_plan(spec, dtype, _GAMMAS[i]))  # noqa: E731
    top = len(_GAMMAS) - 1
    if cost(0) > budget_flops:
        return None
    j = _GAMMAS.index(2.0)
    slope = (cost(j) - cost(0)) / (_GAMMAS[j] - _GAMMAS[0])
    guess = _GAMMAS[0] + (budget_flops - cost(0)) / max(slope, 1.0)
    i = max([k for k, g in enumerate(_GAMMAS) if g <= guess], default=0)
    while i > 0 and cost(i) > budget_flops:
        i -= 1
    while i < top and cost(i + 1) <= budget_flops:
        i += 1
    return i


@functools.lru_cache(maxsize=256)
def best_plan(spec: ModelSpec, budget_flops: int, dtype: str = "auto") -> _Plan | None:
    """The plan with the largest growth factor whose metered program fits ``budget_flops``
    (None if none does).

    ``dtype="auto"`` takes float64 unless float32, at ~3/4 of the cost, buys a larger
    factor while float64's is below 2: capacity matters more than the last digits
    (float32 agrees with float64 to ~5e-7 on the zoo, far below any sampling error).
    """
    if dtype != "auto":
        g = _largest_gamma(spec, budget_flops, dtype)
        return None if g is None else _plan(spec, dtype, _GAMMAS[g])
    g64 = _largest_gamma(spec, budget_flops, "float64")
    if g64 is not None and _GAMMAS[g64] >= 2.0:
        return _plan(spec, "float64", _GAMMAS[g64])
    g32 = _largest_gamma(spec, budget_flops, "float32")
    if g32 is not None and (g64 is None or g32 > g64):
        return _plan(spec, "float32", _GAMMAS[g32])
    return None if g64 is None else _plan(spec, "float64", _GAMMAS[g64])


@functools.lru_cache(maxsize=None)
def _compiled_exact(arch: str, d: int, n: int, budget_flops: int, dtype: str):
    plan = best_plan(ModelSpec(arch, "argmax", d, n), budget_flops, dtype)

    def run(params, tables):
        with jax.enable_x64(plan.dtype == "float64"):
            value, ok, _ = _order_accuracy(plan, params, tables)
            return value, ok

    return jax.jit(run)


def exact_accuracy(model: Model, budget_flops: int = 10**8, dtype: str = "float64") -> float | None:
    """The exact accuracy of a bias-free ReLU RNN or MLP on an order task with n <= 3,
    outside the harness (unmetered; one compiled program per (arch, d, n) and budget).

    Returns:
        The accuracy, or None if the enumeration overflowed the capacities that
        ``budget_flops`` buys.
    """
    spec = model.spec
    run = _compiled_exact(spec.arch, spec.d, spec.n, int(budget_flops), dtype)
    tables = {k: jnp.asarray(v) for k, v in rank_tables(spec.n, spec.task_obj.target_rank(spec.n)).items()}
    value, ok = run({k: jnp.asarray(v, jnp.float32) for k, v in model.params.items()}, tables)
    return float(value) if bool(ok) else None


@register_estimator
@dataclasses.dataclass(frozen=True)
class ExactCones(Estimator):
    """Exact accuracy from the model's linear regions; see the module docstring.

    Applies to bias-free ReLU RNNs and MLPs with n <= 3 on argmax, 2nd argmax and
    argmedian. Deterministic (the key is unused). Where its enumeration might not fit its
    capacities it returns the chance rate ``1/n``; below the cheapest program, too.

    Attributes:
        dtype: ``"float64"`` (rounding ~1e-16, work charged x2), ``"float32"`` (~5e-7), or
            ``"auto"``: float64 where the budget affords it (see :func:`best_plan`).
    """

    name = "exact_cones"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn", "mlp"})
    tasks = frozenset({"2nd_argmax", "argmax", "argmedian"})
    dtype: str = "auto"

    def supports(self, spec: ModelSpec) -> bool:
        return super().supports(spec) and spec.n <= 3

    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> jax.Array:
        spec = model.spec
        # Planning meters candidate programs by tracing them on shape-only weights: nothing is
        # staged into this trace (see algzu.planning.metered_flops).
        plan = best_plan(spec, int(budget_flops), self.dtype)
        if plan is None:
            return chance_estimate(spec)
        return _program(plan)(model.params)

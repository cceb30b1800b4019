"""Exact accuracy of bias-free ReLU RNNs and MLPs on order tasks, by enumerating cones.

ARC's AlgZoo models (J. Hilton et al., "AlgZoo: uninterpreted models with fewer than 1,500
parameters", Alignment Forum, January 2026,
https://www.alignmentforum.org/posts/x8BbjZqooS4LFXS8Z) are bias-free ReLU networks, so the
logits are a positively homogeneous, piecewise-linear function of the input ``x`` in R^n.
For the order tasks (argmax, 2nd argmax, argmedian) the target depends only on the order
of the inputs, which is also scale-invariant. Every set the model's correctness depends on
is therefore a union of polyhedral cones through the origin, and since the standard
Gaussian is rotation invariant the accuracy is the *angular* measure of the correct cones:
arc length / 2 pi on the circle for n = 2, spherical area / 4 pi for n = 3.

The method, in the spirit of ARC's mechanistic-estimation challenge (an estimate derived
from the weights alone, with no sampled inputs), builds the arrangement of the network's
linear regions on the sphere and evaluates the network exactly at its vertices:

1. Start from the cones on which the target is constant: the order cones
   ``x_o0 >= x_o1 (>= x_o2)`` halved by the plane ``x_0 = 0`` (which every RNN neuron cuts
   along at the first step anyway), so every start cone is simplicial: 4 arcs for n = 2,
   12 spherical triangles for n = 3. The cones tile the sphere and share their vertices
   (unit rays, kept in one pool).
2. Walk the network layer by layer (an RNN time step is a layer that reads one more
   input). Every vertex carries the current layer's pre-activations there, computed from
   the previous layer's at the same vertex: ``S = W_hh relu(S_prev) + w_ih x_t`` (RNN) or
   ``S = W_1 relu(W_0 x)`` (MLP). Earlier cuts fixed the ReLU pattern on every cone, so
   ``S`` is linear on each cone and its vertex values determine it. Cut every cone by each
   neuron's zero set in turn (Sutherland-Hodgman clipping of a convex spherical polygon by
   a great circle); a crossing point on an edge gets its values by linear interpolation
   and is shared by the cones on both sides, so the cones keep tiling the sphere.
3. At the vertices, evaluate the logit margins ``L_p - L_q`` (``L = W_out relu(S)``). In
   each cone with target ``t`` keep where ``L_t - L_j > 0`` for every other class ``j``
   (``>= 0`` for ``j > t``, matching argmax's first-index tie rule, which decides cones on
   which a margin vanishes identically, e.g. where every neuron is dead).
4. Sum the measure of the correct cones, or 1 minus that of the others if their boundary
   is shorter: the area of a spherical polygon is the sum over its counter-clockwise edges
   ``(a, b)`` of the signed solid angle of the triangle ``(r, a, b)`` for a reference ray
   ``r`` of its start cone (Van Oosterom-Strackee:
   ``tan(Omega / 2) = r.(a x b) / (1 + r.a + r.b + a.b)``), so edges shared by two cones of
   the union cancel and only its boundary is computed. On the circle an arc measures the
   angle of its end minus that of its start.

The answer is exact up to float64 rounding and a tolerance (1e-12 times a bound on the
values from the weights' norms) used to decide that a vertex lies on a zero set;
coincident zero sets are common (a copied neuron, integer weights).

Cost (metered by flopscope, float64 at 2 FLOPs per element-op, 8 per gathered element):
linear in the size of the arrangement: per vertex and layer about ``4 d^2`` to evaluate the
layer, per neuron cut a few FLOPs per vertex for the sign tests and ~``12 (n + d)`` per new
vertex, and ~100 per boundary edge for the area. Measured: ~1.1e3 FLOPs for ARC's official
d=2, n=2 model; ~5.7e4 for the zoo's trained d=4, n=3 2nd-argmax and argmedian models
(~2.8e4 at random init); ~2e5 at d=8 and ~1.1e6 at d=16 (n = 3, trained or random).
Before each block of work the estimator checks a stated upper bound of that block's cost
against the budget left; if the block might not fit it stops and returns the chance rate
``1/n``, so it never exceeds its budget (it gives the exact answer from ~1.1x its cost).

Metering: every operation on weight-derived numbers goes through ``flopscope.numpy``.
Sign tests (``value > tol``) are metered too; the integer bookkeeping that turns their
boolean results into vertex ids (which edges cross, the pieces' vertex cycles, which edges
cancel) is control flow, an ``if`` per vertex in a scalar version, and runs in plain numpy.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import NamedTuple

import flopscope
import flopscope.numpy as fnp
import jax
import numpy as np

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model, ModelSpec

# A vertex lies on a function's zero set when |value| <= _REL_TOL * (a bound on |value| at
# unit vertices, from the weights' norms). Rounding on coincident zero sets is ~1e-16
# relative; genuine near-misses below 1e-12 move the measure by a comparable, negligible
# angle.
_REL_TOL = 1e-12

# flopscope's float64 prices (FLOPs per output element), used for the cost bounds below:
# element-wise ops and copies (concatenate, repeat, astype) cost 2, fancy-index gathers 8,
# arctan2 32; an einsum costs 2 per multiply-add pair, bounded here by 4 per multiply.
_EW, _GATHER, _ATAN2 = 2, 8, 32

_RANK_OF_TASK = {"argmax": 0, "2nd_argmax": 1, "argmedian": 1}  # 0 = largest input


class _OutOfBudget(Exception):
    """Raised internally when the next block of work might not fit the budget."""


class _Meter:
    """Checks an upper bound of each block of work against the FLOPs this call may use.

    ``need(bound)`` declares that the work up to the next ``need`` costs at most ``bound``;
    ``overruns`` lists any block that cost more than declared (a bug; tests check it).
    """

    def __init__(self, budget_flops: int) -> None:
        snapshot = flopscope.current_budget()
        self._start = snapshot.flops_used
        self._limit = min(int(budget_flops), snapshot.flops_remaining)
        self._block = (0, 0)  # (used at the last need, its bound)
        self.overruns: list[tuple[int, int]] = []

    @property
    def used(self) -> int:
        return flopscope.current_budget().flops_used - self._start

    def need(self, flops: int) -> None:
        used = self.close()
        if used + flops > self._limit:
            raise _OutOfBudget
        self._block = (used, flops)

    def close(self) -> int:
        """Check the open block against its bound; returns the FLOPs used so far."""
        used = self.used
        start, bound = self._block
        if used - start > bound:
            self.overruns.append((used - start, bound))
        return used


class _Complex(NamedTuple):
    """Convex cones that tile the sphere (circle for n = 2), sharing one pool of vertices.

    Every vertex carries the exact values there of the current stage's functions (the
    network's pre-activations, or its logit margins). Inside each cone those functions
    are linear, so their values at the cone's vertices determine them.

    Attributes:
        X: ``(N, n)`` flopscope array: the unit vertex rays.
        V: ``(N, w)`` flopscope array: ``w`` function values at each vertex.
        cyc: ``(C, K)`` vertex ids of each cone, counter-clockwise, padded with the first.
        count: ``(C,)`` number of vertices (2 for the arcs of n = 2).
        target: ``(C,)`` the target class, constant on each cone.
        start: ``(C,)`` the start cone it lies in.
        on_order: ``(N,)`` bit mask per vertex of the planes ``x_i = x_j`` it lies on.
    """

    X: fnp.ndarray
    V: fnp.ndarray | None
    cyc: np.ndarray
    count: np.ndarray
    target: np.ndarray
    start: np.ndarray
    on_order: np.ndarray


def _start_complex(n: int, rank: int) -> tuple[np.ndarray, _Complex, np.ndarray]:
    """The 2 * n! simplicial cones on which the input order and the sign of x_0 are fixed.

    The order cone ``x_o0 >= x_o1 >= ...`` contains the line ``R (1, ..., 1)``; the plane
    ``x_0 = 0`` (which every RNN neuron cuts along at the first step anyway) halves it into
    two simplicial cones ``{A x >= 0}``, whose rays are the columns of ``A^-1``. These are
    constants of the task, not of the weights.

    Returns:
        Vertex coordinates ``(N, n)``; the complex (``X``, ``V`` unset); each start cone's
        reference ray ``(S, n)``: its vertex ``+-(1, ..., 1) / sqrt(n)``, where all its
        sides on planes ``x_i = x_j`` meet.
    """
    pairs = list(itertools.combinations(range(n), 2))
    rays: list[np.ndarray] = []
    ids: dict[tuple, int] = {}
    cones, targets, refs = [], [], []
    for order in itertools.permutations(range(n)):
        A = np.zeros((n, n))
        for k in range(n - 1):
            A[k, order[k]], A[k, order[k + 1]] = 1.0, -1.0
        for sign in (1.0, -1.0):
            A[n - 1] = 0.0
            A[n - 1, 0] = sign
            R = np.linalg.inv(A).T
            R /= np.linalg.norm(R, axis=1, keepdims=True)
            if np.linalg.det(R) < 0:  # make it counter-clockwise
                R = R[::-1]
            cone = []
            for ray in R:
                key = tuple(np.round(ray, 9) + 0.0)
                if key not in ids:
                    ids[key] = len(rays)
                    rays.append(ray)
                cone.append(ids[key])
            cones.append(cone)
            targets.append(order[rank])
            refs.append(sign * np.ones(n) / math.sqrt(n))
    rays = np.array(rays)
    on_order = sum((np.abs(rays[:, i] - rays[:, j]) < 1e-12) << k for k, (i, j) in enumerate(pairs))
    C = len(cones)
    cyc, targets = np.array(cones), np.array(targets)
    start = _Complex(None, None, cyc, np.full(C, n), targets, np.arange(C), on_order)
    return rays, start, np.array(refs)


def _rows_sorted(A: fnp.ndarray, ids: np.ndarray) -> fnp.ndarray:
    """``A[ids]`` for sorted ``ids`` as a metered ``repeat`` (2 FLOPs per float64, where a
    gather costs 8)."""
    return fnp.repeat(A, np.bincount(ids, minlength=A.shape[0]), axis=0)


def _pad(cyc: np.ndarray, K: int) -> np.ndarray:
    """Cut or pad the slot axis of ``cyc`` to ``K``, padding with each row's first id."""
    if cyc.shape[1] >= K:
        return cyc[:, :K]
    return np.concatenate([cyc, np.repeat(cyc[:, :1], K - cyc.shape[1], axis=1)], axis=1)


def _cut(
    cx: _Complex,
    n: int,
    column: np.ndarray,
    flip: np.ndarray,
    tol: fnp.ndarray,
    meter: _Meter,
    active: np.ndarray | None = None,
    tie_positive: np.ndarray | None = None,
) -> tuple[_Complex, np.ndarray, np.ndarray]:
    """Cut each cone by the zero set of one of the functions its vertices carry.

    A cone with vertices strictly on both sides is split (Sutherland-Hodgman: each piece
    keeps its side's vertices and those on the zero set, plus the crossing point of every
    edge whose ends are strictly apart). Crossing points are shared by the cones on either
    side of an edge, so the cones keep tiling the sphere with shared vertices.

    Args:
        cx: the complex.
        n: input dimension.
        column: ``(C,)`` the function (column of ``V``) each cone is cut by.
        flip: ``(C,)`` bool: the function is minus that column.
        tol: scalar: ``|value| <= tol`` counts as zero.
        meter: budget checks.
        active: ``(C,)`` bool: the cones to cut (default: all).
        tie_positive: ``(C,)`` bool: the side of a cone on which the function vanishes
            (default: negative).

    Returns:
        The new complex (uncut cones first, then the pieces), and for each new cone the
        cone it came from and its side: +1 where the function is >= 0, -1 where <= 0.
    """
    X, V, cyc, count = cx.X, cx.V, cx.cyc, cx.count
    N = X.shape[0]
    C, K = cyc.shape
    lo, hi = int(column.min()), int(column.max()) + 1
    meter.need(2 * _EW * N * (hi - lo) + _EW)
    values = V[:, lo:hi]
    pos_v, neg_v = np.asarray(values > tol), np.asarray(values < -tol)
    col = (column - lo)[:, None]
    pos, neg = pos_v[cyc, col], neg_v[cyc, col]  # (C, K) vertex signs, by bookkeeping
    pos, neg = np.where(flip[:, None], neg, pos), np.where(flip[:, None], pos, neg)
    valid = np.arange(K)[None, :] < count[:, None]
    pos &= valid
    neg &= valid
    has_pos, has_neg = pos.any(1), neg.any(1)
    tie = -np.ones(C, int) if tie_positive is None else np.where(tie_positive, 1, -1)
    side = np.where(has_pos, 1, np.where(has_neg, -1, tie))
    split = has_pos & has_neg
    if active is not None:
        split &= active
    if not split.any():
        return cx, np.arange(C), side
    sp = np.flatnonzero(split)
    Cs = len(sp)
    rows = np.arange(Cs)[:, None]
    if n == 2:  # an arc (a, b): one edge
        nxt = np.ones((Cs, K), int)
        cross = np.zeros((Cs, K), bool)
        cross[:, 0] = True
    else:
        nxt = (np.arange(K)[None, :] + 1) % count[sp][:, None]
        pos_s, neg_s = pos[sp], neg[sp]
        cross = (pos_s & neg_s[rows, nxt]) | (neg_s & pos_s[rows, nxt])
    ci, cj = np.nonzero(cross)
    a, b = cyc[sp[ci], cj], cyc[sp[ci], nxt[ci, cj]]
    f = column[sp[ci]]
    # One crossing point per (edge, function), shared by the cones on both sides.
    key = (np.minimum(a, b) * N + np.maximum(a, b)) * (hi - lo) + (f - lo)
    ukey, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(a[first], kind="stable")  # rows of X, by first end
    ua, ub, uf = a[first][order], b[first][order], f[first][order]
    row = np.empty(len(order), int)
    row[order] = np.arange(len(order))
    M, w = len(ukey), n + V.shape[1]
    meter.need(
        (_EW + _GATHER) * M * w
        + (0 if hi - lo == 1 else 2 * _GATHER * M)
        + _EW * M * (3 + 4 * w + 2 * n)
        + _EW * (N + M) * w
    )
    # Rows of the first ends come in id order, so a repeat (a copy) fetches them.
    X_a, V_a, X_b, V_b = _rows_sorted(X, ua), _rows_sorted(V, ua), X[ub], V[ub]
    if hi - lo == 1:
        s_a, s_b = V_a[:, lo], V_b[:, lo]
    else:
        s_a, s_b = V_a[np.arange(M), uf], V_b[np.arange(M), uf]
    # The point of the edge where the (linear) function vanishes, with all its values.
    c_a, c_b = fnp.abs(s_b)[:, None], fnp.abs(s_a)[:, None]
    X_new = c_a * X_a + c_b * X_b
    norm = fnp.sqrt(fnp.sum(X_new * X_new, axis=1))[:, None]
    X = fnp.concatenate([X, X_new / norm], axis=0)
    V = fnp.concatenate([V, (c_a * V_a + c_b * V_b) / norm], axis=0)
    cross_id = np.zeros((Cs, K), int)
    cross_id[ci, cj] = N + row[inverse.reshape(-1)]

    if n == 2:
        a_pos = pos[sp, 0]
        first_piece = np.stack([cyc[sp, 0], cross_id[:, 0]], axis=1)  # (a, X)
        second_piece = np.stack([cross_id[:, 0], cyc[sp, 1]], axis=1)  # (X, b)
        pieces = np.concatenate([first_piece, second_piece])
        piece_side = np.concatenate([np.where(a_pos, 1, -1), np.where(a_pos, -1, 1)])
        piece_count = np.full(2 * Cs, 2)
    else:
        valid_s = valid[sp]
        cand = np.stack([cyc[sp], cross_id], axis=2).reshape(Cs, 2 * K)
        pieces, piece_count = [], []
        for keep_vertex in (~neg[sp], ~pos[sp]):
            keep = np.stack([keep_vertex & valid_s, cross], axis=2).reshape(Cs, 2 * K)
            kept_first = np.argsort(~keep, axis=1, kind="stable")
            pieces.append(np.take_along_axis(cand, kept_first, axis=1))
            piece_count.append(keep.sum(1))
        pieces, piece_count = np.concatenate(pieces), np.concatenate(piece_count)
        K_new = int(piece_count.max())
        real = np.arange(K_new)[None, :] < piece_count[:, None]
        pieces = np.where(real, pieces[:, :K_new], pieces[:, :1])
        piece_side = np.repeat([1, -1], Cs)
    keep = ~split
    K_out = max(int(count[keep].max(initial=2)), pieces.shape[1])
    src = np.concatenate([np.flatnonzero(keep), np.tile(sp, 2)])
    out = _Complex(
        X,
        V,
        np.concatenate([_pad(cyc[keep], K_out), _pad(pieces, K_out)]),
        np.concatenate([count[keep], piece_count]),
        cx.target[src],
        cx.start[src],
        np.concatenate([cx.on_order, cx.on_order[ua] & cx.on_order[ub]]),
    )
    return out, src, np.concatenate([side[keep], piece_side])


def _layer(cx: _Complex, n: int, S: fnp.ndarray, tol: fnp.ndarray, meter: _Meter) -> _Complex:
    """Give the vertices the pre-activations ``S`` (``(N, d)``) and cut the complex by every
    neuron's zero set in turn, so the ReLU pattern is fixed on each cone."""
    cx = cx._replace(V=S)
    for i in range(S.shape[1]):
        C = len(cx.count)
        cx, _, _ = _cut(cx, n, np.full(C, i), np.zeros(C, bool), tol, meter)
    return cx


def _sup_norm(W: fnp.ndarray) -> fnp.ndarray:
    """``max_i sum_j |W_ij|``: bounds ``max |W h|`` by ``max |h|``."""
    return fnp.max(fnp.sum(fnp.abs(W), axis=1))


def _boundary(cx: _Complex, n: int, cones: np.ndarray) -> tuple[np.ndarray, ...]:
    """What :func:`_measure` sums for the union of ``cones`` (bool per cone).

    For n = 3: the counter-clockwise edges ``(a, b, start)`` of the cones that no other of
    the cones shares (in reverse), less those on a plane ``x_i = x_j``: these lie on
    great circles through the start cone's reference ray and add no area. For n = 2: the
    arc ends ``(p, start, sign)`` that do not cancel (an arc ``(a, b)`` counts ``+b - a``),
    less the reference ray itself.
    """
    cyc, count, start = cx.cyc[cones], cx.count[cones], cx.start[cones]
    N = cx.X.shape[0]
    if n == 2:
        key = np.concatenate([start * N + cyc[:, 1], start * N + cyc[:, 0]])
        ukey, inverse = np.unique(key, return_inverse=True)
        sign = np.repeat([1, -1], len(cyc))
        net = np.bincount(inverse.reshape(-1), weights=sign, minlength=len(ukey)).astype(int)
        p, s = ukey % N, ukey // N
        keep = (net != 0) & (cx.on_order[p] == 0)
        return p[keep], s[keep], net[keep]
    j = np.arange(cyc.shape[1])[None, :]
    valid = j < count[:, None]
    a = cyc[valid]
    b = np.take_along_axis(cyc, (j + 1) % count[:, None], axis=1)[valid]
    s = np.broadcast_to(start[:, None], cyc.shape)[valid]
    keep = ~np.isin((s * N + a) * N + b, (s * N + b) * N + a)
    keep &= (cx.on_order[a] & cx.on_order[b]) == 0
    return a[keep], b[keep], s[keep]


def _measure(
    cx: _Complex, n: int, boundary: tuple[np.ndarray, ...], refs: np.ndarray, meter: _Meter
) -> fnp.ndarray | float:
    """Angular measure, as a fraction of the sphere (circle), of a union of cones given
    its :func:`_boundary` (its cost bound also covers the caller's ``1 - area``).

    Signed areas are summed from a reference ray ``r`` of each start cone (one of its
    vertices): a convex spherical polygon inside the start cone has as area the sum over
    its counter-clockwise edges ``(a, b)`` of the signed solid angle of the triangle
    ``(r, a, b)``, so edges shared by two cones of the union cancel. On the circle an arc
    ``(a, b)`` measures angle(b) - angle(a) from ``r``.
    """
    if len(boundary[0]) == 0:
        return 0.0
    if n == 2:
        order = np.argsort(boundary[0], kind="stable")
        p, s, net = (x[order] for x in boundary)
        E = len(p)
        meter.need(E * (_EW * n + _EW * (n + 7) + 4 * 2 * n + _ATAN2) + _EW * (E + 3))
        P, R = _rows_sorted(cx.X, p), fnp.asarray(refs[s])
        det = R[:, 0] * P[:, 1] - R[:, 1] * P[:, 0]
        angle = fnp.arctan2(det, fnp.einsum("en,en->e", R, P))
        return fnp.sum(fnp.asarray(net.astype(np.float64)) * angle) / (2 * math.pi)
    order = np.argsort(boundary[0], kind="stable")
    a, b, s = (x[order] for x in boundary)
    E = len(a)
    meter.need(E * ((_EW + _GATHER) * n + _EW * n + 6 * n + 4 * 4 * n + 5 * _EW + _ATAN2) + 2 * _EW)
    A, B, R = _rows_sorted(cx.X, a), cx.X[b], fnp.asarray(refs[s])
    # Van Oosterom-Strackee: tan(Omega / 2) = r.(a x b) / (1 + r.a + r.b + a.b), unit rays.
    det = fnp.einsum("en,en->e", R, fnp.cross(A, B))
    den = 1.0 + fnp.einsum("en,en->e", R, A) + fnp.einsum("en,en->e", R, B)
    den = den + fnp.einsum("en,en->e", A, B)
    return fnp.sum(fnp.arctan2(det, den)) / (2 * math.pi)  # sum(Omega) / (4 pi)


def order_accuracy(model: Model, rank: int, budget_flops: int) -> tuple[float | None, _Meter]:
    """Exact probability that the model's argmax is the input of order ``rank``.

    Args:
        model: a bias-free ReLU ``rnn`` or ``mlp`` with ``n <= 3`` (weights as flopscope
            arrays when metered).
        rank: 0 for the largest input, ``n - 1`` for the smallest.
        budget_flops: the most FLOPs to spend.

    Returns:
        The probability, or ``None`` if the next block of work might have exceeded
        ``budget_flops``; and the meter (FLOPs used, bound overruns).
    """
    spec = model.spec
    d, n = spec.d, spec.n
    meter = _Meter(budget_flops)
    try:
        rays, cx, refs = _start_complex(n, rank)
        meter.need(_EW * (spec.n_params + rays.size))
        p = {k: fnp.asarray(v, dtype=fnp.float64) for k, v in model.params.items()}
        cx = cx._replace(X=fnp.asarray(rays))
        # Pre-activations at the vertices, layer by layer, each followed by its cuts. The
        # zero-set tolerance is relative to a bound on the values: vertices are unit rays,
        # so |S| <= bound, with bound(W h) = _sup_norm(W) * bound(h) and bound(relu(S)) = bound(S).
        if spec.arch == "rnn":
            w_ih, W_hh = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"]
            W_out = p["linear.weight"]
            meter.need(_EW * (2 * d * d + 3 * d + 2 * n))
            w_max, hh_norm = _sup_norm(w_ih), _sup_norm(W_hh)
            bound = w_max
            # Step 0: S = w_ih x_0 vanishes only on x_0 = 0, a side of every start cone.
            N = cx.X.shape[0]
            meter.need(_EW * N * d)
            cx = cx._replace(V=cx.X[:, 0:1] * w_ih[:, 0][None, :])
            for t in range(1, n):
                N = cx.X.shape[0]
                meter.need(_EW * N * d * 3 + 4 * N * d * d + 3 * _EW)
                h = fnp.maximum(cx.V, 0.0)
                S = fnp.einsum("vj,ij->vi", h, W_hh) + cx.X[:, t : t + 1] * w_ih[:, 0][None, :]
                bound = hh_norm * bound + w_max
                cx = _layer(cx, n, S, _REL_TOL * bound, meter)
        else:
            W_0, W_1, W_out = p["mlp.0.weight"], p["mlp.1.weight"], p["linear.weight"]
            N = cx.X.shape[0]
            meter.need(4 * N * n * d + _EW * (2 * d * (n + d) + 2 * d + 3))
            bound = _sup_norm(W_0)
            cx = _layer(cx, n, fnp.einsum("vn,in->vi", cx.X, W_0), _REL_TOL * bound, meter)
            N = cx.X.shape[0]
            meter.need(_EW * N * d + 4 * N * d * d + 2 * _EW)
            bound = _sup_norm(W_1) * bound
            S = fnp.einsum("vj,ij->vi", fnp.maximum(cx.V, 0.0), W_1)
            cx = _layer(cx, n, S, _REL_TOL * bound, meter)

        # Logit margins L_p - L_q at the vertices, one column per pair p < q.
        pairs = list(itertools.combinations(range(n), 2))
        N = cx.X.shape[0]
        meter.need(
            _EW * len(pairs) * d * 4
            + _EW * N * d
            + 4 * N * d * len(pairs)
            + _EW * (len(pairs) + 3)
        )
        delta = fnp.stack([W_out[q0] - W_out[q1] for q0, q1 in pairs], axis=1)  # (d, pairs)
        cx = cx._replace(V=fnp.einsum("vj,jk->vk", fnp.maximum(cx.V, 0.0), delta))
        tol = _REL_TOL * _sup_norm(delta.T) * bound
        # Keep, in each cone with target t, where L_t - L_j > 0 for every other class j.
        # Where L_t - L_j vanishes identically argmax takes the first index, so the target
        # wins that tie against later classes and loses it to earlier ones.
        pair_id = {pair: k for k, pair in enumerate(pairs)}
        correct = np.ones(len(cx.count), bool)
        for r in range(n - 1):
            t = cx.target
            j = np.where(r < t, r, r + 1)  # the r-th class other than t
            column = np.array([pair_id[(min(u, v), max(u, v))] for u, v in zip(t, j)])
            cx, src, side = _cut(
                cx, n, column, t > j, tol, meter, active=correct, tie_positive=j > t
            )
            correct = correct[src] & (side > 0)
        # Measure the correct cones, or the rest if their boundary is shorter.
        right, wrong = _boundary(cx, n, correct), _boundary(cx, n, ~correct)
        if len(right[0]) <= len(wrong[0]):
            accuracy = _measure(cx, n, right, refs, meter)
        else:
            accuracy = 1.0 - _measure(cx, n, wrong, refs, meter)
        meter.close()
        return float(accuracy), meter
    except _OutOfBudget:
        return None, meter


@register_estimator
@dataclasses.dataclass(frozen=True)
class ExactCones(Estimator):
    """Exact accuracy from the model's linear regions; see the module docstring.

    Applies to bias-free ReLU RNNs and MLPs with n <= 3 on argmax, 2nd argmax and
    argmedian. Deterministic (the key is unused). If the enumeration might not fit the
    budget it stops early and returns the chance rate ``1/n``, never exceeding the budget.
    """

    name = "exact_cones"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn", "mlp"})
    tasks = frozenset({"2nd_argmax", "argmax", "argmedian"})

    def supports(self, spec: ModelSpec) -> bool:
        return super().supports(spec) and spec.n <= 3

    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> float:
        spec = model.spec
        accuracy, _ = order_accuracy(model, _RANK_OF_TASK[spec.task], budget_flops)
        return 1.0 / spec.n if accuracy is None else accuracy

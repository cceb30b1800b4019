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
from the weights alone, with no sampled inputs):

1. Start from the cones where the target is constant: the order cones
   ``x_s0 > x_s1 (> x_s2)`` halved by the plane ``sum(x) = 0`` so that every start cone is
   pointed (4 arcs for n = 2; 12 spherical triangles for n = 3). Cones are stored by their
   unit vertex rays.
2. Walk the network layer by layer (an RNN time step is a layer seeing one more input).
   Inside a cone the hidden state is ``h = H x`` for a fixed ``d x n`` matrix ``H``, so
   neuron ``i``'s pre-activation is ``P_i . x`` with ``P = W_hh H + w_ih e_t^T`` (RNN) or
   ``P = W_1 H`` (MLP second layer). Cut every cone by the plane ``P_i . x = 0`` for each
   neuron in turn (Sutherland-Hodgman clipping of a convex spherical polygon by a great
   circle); each piece gets a fixed activation pattern and ``H' = diag(active) P``.
3. In each final cone the logits are ``L x`` with ``L = W_out H`` and the target ``c`` is
   fixed: clip the cone by the halfspaces ``(L_c - L_j) . x > 0`` (``>=`` for ``j > c``,
   matching argmax's first-index tie rule; rows that vanish identically, e.g. where every
   neuron is dead, decide the whole cone).
4. Sum the measure: for n = 3 fan-triangulate each spherical polygon and use the
   Van Oosterom-Strackee solid angle ``tan(Omega / 2) = |a.(b x c)| / (1 + a.b + a.c + b.c)``
   (unit vertices; equivalent to Girard's angle excess); for n = 2 the angle between the
   two rays.

The answer is exact up to float64 rounding and a relative tolerance of 1e-12 used to
decide that a vertex lies on a plane (coincident planes are common: at the first RNN step
every neuron's plane is ``x_0 = 0``).

Cost (metered by flopscope, float64 at two FLOPs per element-op): the work is linear in the
number of linear regions met. Per layer and cone it is about ``2 d n (2 d - 1)`` for the
pre-activations plus, for each of the ``d`` neuron cuts, ~20 FLOPs per vertex slot and a
few hundred per cone actually cut; per final cone a few hundred more for the logit clip
and area. Measured: about 2e3 FLOPs for the official d=2, n=2 model, ~1e5 for d=4, n=3 and
a few 1e6 for d=16, n=3 random models. Before each block of work the estimator checks a
stated upper bound of that block's cost against the budget left; if the block might not
fit it stops and returns the chance rate ``1/n`` instead, so it never exceeds its budget.

Metering: every operation on weight-derived numbers goes through ``flopscope.numpy``.
Sign tests (``s > tol``) are metered too; the integer bookkeeping that turns their boolean
results into vertex indices is control flow (an ``if`` per vertex in a scalar version)
and runs in plain numpy.
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

# A vertex lies on a plane when |P_i . v| <= _REL_TOL * max|P| (unit vertices). Rounding
# on coincident planes is ~1e-16 relative; genuine near-misses below 1e-12 move the
# measure by a comparable, negligible angle.
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


class _Cones(NamedTuple):
    """A batch of pointed cones: convex spherical polygons (n = 3) or arcs (n = 2).

    Cones stay in the order of the cone they were cut from, so ``parent`` is sorted and
    ``target`` is grouped; per-parent arrays are expanded with ``repeat`` (a copy) rather
    than gathered.

    Attributes:
        V: ``(C, K, n)`` unit vertex rays in cyclic order; slots ``count..K-1`` repeat
            slot 0, so padded polygons have the same cuts and area.
        count: ``(C,)`` number of real vertices.
        parent: ``(C,)`` sorted: the row of the current layer's plane array each cone is in.
        active: ``(C, d)`` activation pattern found so far in the current layer.
        target: ``(C,)`` the target class, constant on each cone.
    """

    V: fnp.ndarray
    count: np.ndarray
    parent: np.ndarray
    active: np.ndarray
    target: np.ndarray


def _start_cones(n: int, rank: int, d: int, meter: _Meter) -> _Cones:
    """The 2 * n! pointed cones on which the order of the inputs and the sign of x_0 are fixed.

    The order cone ``x_o0 >= x_o1 >= ...`` contains the line ``R (1, ..., 1)``; the plane
    ``x_0 = 0`` (which every RNN neuron cuts along at the first step anyway) halves it
    into two simplicial cones ``{A x >= 0}``, whose rays are the columns of ``A^-1``.
    """
    cones = []
    for order in itertools.permutations(range(n)):
        A = np.zeros((n, n))
        for k in range(n - 1):
            A[k, order[k]], A[k, order[k + 1]] = 1.0, -1.0
        for sign in (1.0, -1.0):
            A[n - 1] = 0.0
            A[n - 1, 0] = sign
            rays = np.linalg.inv(A).T
            cones.append((order[rank], rays / np.linalg.norm(rays, axis=1, keepdims=True)))
    cones.sort(key=lambda cone: cone[0])  # group by target
    rays = np.array([vertices for _, vertices in cones])
    meter.need(_EW * rays.size)
    C = len(cones)
    return _Cones(
        fnp.array(rays),
        np.full(C, n),
        np.arange(C),
        np.zeros((C, d), bool),
        np.array([target for target, _ in cones]),
    )


def _per_cone(rows: fnp.ndarray, parent: np.ndarray) -> fnp.ndarray:
    """``rows[parent]`` for sorted ``parent``, as a metered ``repeat`` (cost 2 / element)."""
    return fnp.repeat(rows, np.bincount(parent, minlength=rows.shape[0]), axis=0)


def _pad_slots(V: fnp.ndarray, K: int) -> fnp.ndarray:
    """``V`` with its slot axis cut or padded to ``K`` by repeating slot 0."""
    if V.shape[1] >= K:
        return V[:, :K]
    return fnp.concatenate([V, fnp.repeat(V[:, :1], K - V.shape[1], axis=1)], axis=1)


def _cut(
    cones: _Cones,
    s: fnp.ndarray,
    tol: fnp.ndarray,
    meter: _Meter,
    keep_negative: bool,
    force: np.ndarray | None = None,
) -> tuple[_Cones, np.ndarray]:
    """Cut every cone by the plane where a linear form vanishes, given its vertex values.

    Args:
        cones: the cones.
        s: ``(C, K)`` value of each cone's linear form at its vertex slots.
        tol: scalar; ``|s| <= tol`` counts as on the plane.
        meter: budget checks.
        keep_negative: keep the pieces where the form is <= 0 (else drop them).
        force: optional ``(C,)``: +1 / -1 puts the whole cone on that side, 0 cuts it.

    Returns:
        The pieces, in input order (a cut cone is replaced by its positive then negative
        piece), and ``side``: +1 where the form is >= 0 on the piece, -1 where <= 0.
    """
    V, count = cones.V, cones.count
    C, K, n = V.shape
    meter.need(2 * _EW * C * K + _EW)
    pos = np.asarray(s > tol)
    neg = np.asarray(s < -tol)
    valid = np.arange(K)[None, :] < count[:, None]
    pos &= valid
    neg &= valid
    has_pos, has_neg = pos.any(1), neg.any(1)
    split = has_pos & has_neg
    whole_side = np.where(has_pos & ~has_neg, 1, -1)
    if force is not None:
        split &= force == 0
        whole_side = np.where(force != 0, force, whole_side)
    n_sides = 2 if keep_negative else 1
    # Output cones per input cone: 0 (dropped), 1 (whole) or n_sides (cut).
    reps = np.where(split, n_sides, (keep_negative | (whole_side > 0)).astype(int))
    if not split.any() and (reps == 1).all():
        return cones, whole_side
    src = np.repeat(np.arange(C), reps)
    out_split = split[src]
    side = whole_side[src]
    out_count = count[src]
    sp = np.flatnonzero(split)
    if sp.size == 0:
        pieces, K_out = None, int(out_count.max(initial=1))
    else:
        cut = _cut_arcs if n == 2 else _cut_polygons
        pieces, piece_count = cut(V, count, s, pos, neg, sp, meter, keep_negative)
        side[out_split] = np.tile([1, -1][:n_sides], len(sp))
        out_count[out_split] = piece_count
        K_out = int(out_count.max())
    # Padding copies V (and the pieces) at most twice; the concatenation copies the output.
    n_pieces = 0 if pieces is None else len(pieces)
    meter.need(_EW * K_out * n * (2 * C + 2 * n_pieces + len(src)))
    V = _pad_slots(V, K_out)
    if pieces is not None:
        pieces = _pad_slots(pieces, K_out)
    # Runs of input cones with the same fate become one slice each.
    fate = np.where(split, 2, reps)
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], fate, [-1]])))
    parts, offset = [], 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if fate[a] == 1:
            parts.append(V[a:b])
        elif fate[a] == 2:
            parts.append(pieces[offset : offset + n_sides * (b - a)])
            offset += n_sides * (b - a)
    out_V = parts[0] if len(parts) == 1 else fnp.concatenate(parts, axis=0) if parts else V[:0]
    out = _Cones(out_V, out_count, cones.parent[src], cones.active[src], cones.target[src])
    return out, side


def _cut_arcs(V, count, s, pos, neg, sp, meter, keep_negative):
    """Pieces of the arcs ``sp``, which have one end strictly on either side (n = 2)."""
    n = V.shape[2]
    Cs = len(sp)
    meter.need(
        _GATHER * Cs * 2 * (1 + n)
        + _EW * Cs * (4 + 6 * n)
        + _GATHER * Cs * 2 * n
        + _EW * Cs * 2 * 2 * n * 2
    )
    s_sp = s[sp]  # (Cs, 2)
    V_sp = V[sp]  # (Cs, 2, n)
    # The crossing point is the positive combination of the ends that lies on the plane.
    X = fnp.abs(s_sp[:, 0:1]) * V_sp[:, 1] + fnp.abs(s_sp[:, 1:2]) * V_sp[:, 0]
    X = X / fnp.sqrt(fnp.sum(X * X, axis=1))[:, None]
    rows = np.arange(Cs)
    j_pos = np.where(pos[sp, 0], 0, 1)
    V_pos = V_sp[rows, j_pos]
    if not keep_negative:
        return fnp.stack([V_pos, X], axis=1), np.full(Cs, 2)
    # Cut arc r gives pieces 2r (positive side) and 2r + 1 (negative side).
    pieces = fnp.stack([V_pos, X, X, V_sp[rows, 1 - j_pos]], axis=1).reshape(2 * Cs, 2, n)
    return pieces, np.full(2 * Cs, 2)


def _cut_polygons(V, count, s, pos, neg, sp, meter, keep_negative):
    """Pieces of the spherical polygons ``sp``, which have vertices strictly on both sides.

    Sutherland-Hodgman: walking the cycle, a piece keeps its side's vertices (and those on
    the plane) and gains the crossing point of every edge whose ends are strictly apart.
    """
    C, K, n = V.shape
    Cs = len(sp)
    rows = np.arange(Cs)[:, None]
    cnt_sp = count[sp]
    nxt = (np.arange(K)[None, :] + 1) % cnt_sp[:, None]
    pos_s, neg_s = pos[sp], neg[sp]
    cross = (pos_s & neg_s[rows, nxt]) | (neg_s & pos_s[rows, nxt])
    ci, cj = np.nonzero(cross)  # crossing edges (polygon, slot), in order
    M = len(ci)
    valid = np.arange(K)[None, :] < cnt_sp[:, None]
    Nv = int(cnt_sp.sum())
    # Pool of candidate vertices: the cut polygons' vertices (gathered, or all of V
    # reshaped when that copies less), then the crossing points.
    gather_pool = _GATHER * Nv < _EW * C * K
    meter.need(
        _GATHER * 2 * M * (1 + n)
        + _EW * M * (3 + 6 * n)
        + (_GATHER * Nv * n if gather_pool else _EW * C * K * n)
        + _EW * (max(Nv, C * K) + M) * n
    )
    a, b = sp[ci], nxt[ci, cj]
    s_a, s_b = s[a, cj], s[a, b]
    X = fnp.abs(s_a)[:, None] * V[a, b] + fnp.abs(s_b)[:, None] * V[a, cj]
    X = X / fnp.sqrt(fnp.sum(X * X, axis=1))[:, None]
    if gather_pool:
        vi, vj = np.nonzero(valid)
        base = np.concatenate([[0], np.cumsum(cnt_sp)[:-1]])[:, None]
        pool = fnp.concatenate([V[sp[vi], vj], X], axis=0)
        n_base = Nv
    else:
        base = (sp * K)[:, None]
        pool = fnp.concatenate([V.reshape(C * K, n), X], axis=0)
        n_base = C * K
    vertex_idx = base + np.arange(K)[None, :]
    cross_idx = np.zeros((Cs, K), int)
    cross_idx[ci, cj] = n_base + np.arange(M)
    cand_idx = np.stack([vertex_idx, cross_idx], axis=2).reshape(Cs, 2 * K)

    keeps = [~neg_s] + ([~pos_s] if keep_negative else [])
    idx, cnt = [], []
    for keep_vertex in keeps:
        keep = np.stack([keep_vertex & valid, cross], axis=2).reshape(Cs, 2 * K)
        order = np.argsort(~keep, axis=1, kind="stable")
        idx.append(np.take_along_axis(cand_idx, order, axis=1))
        cnt.append(keep.sum(1))
    # Interleave the sides: cut polygon r gives pieces n_sides * r, n_sides * r + 1.
    idx = np.stack(idx, axis=1).reshape(len(keeps) * Cs, 2 * K)
    cnt = np.stack(cnt, axis=1).reshape(-1)
    K_new = int(cnt.max())
    idx = np.where(np.arange(K_new)[None, :] < cnt[:, None], idx[:, :K_new], idx[:, :1])
    meter.need(_GATHER * idx.size * n)
    return pool[idx], cnt


def _layer(cones: _Cones, P: fnp.ndarray, meter: _Meter) -> tuple[_Cones, fnp.ndarray]:
    """Cut the cones by every neuron's plane ``P_i . x = 0`` and apply the ReLU.

    Args:
        cones: cones whose ``parent`` indexes the rows of ``P`` (unused if ``P`` is 2-D).
        P: pre-activation maps on the first ``m`` inputs (the rest are not yet read):
            ``(d, m)`` shared by all cones or ``(C, d, m)``.

    Returns:
        The pieces (``parent`` reset to their own index) and ``H``, ``(C', d, m)``: each
        piece's post-ReLU hidden state as a linear map of ``x_0..x_m-1``.
    """
    shared = P.ndim == 2
    d, m = P.shape[-2:]
    meter.need(2 * _EW * P.size + _EW)
    tol = _REL_TOL * fnp.max(fnp.abs(P))
    for i in range(d):
        C, K = cones.V.shape[:2]
        if shared:
            meter.need(4 * C * K * m)
            s = fnp.einsum("ckm,m->ck", cones.V[:, :, :m], P[i])
        else:
            meter.need(_EW * C * m + 4 * C * K * m)
            s = fnp.einsum("ckm,cm->ck", cones.V[:, :, :m], _per_cone(P[:, i], cones.parent))
        cones, side = _cut(cones, s, tol, meter, keep_negative=True)
        active = cones.active.copy()
        active[:, i] = side > 0
        cones = cones._replace(active=active)
    C = len(cones.count)
    mask = cones.active[:, :, None].astype(np.float64)
    meter.need(2 * _EW * C * d * m)
    H = (P[None] if shared else _per_cone(P, cones.parent)) * mask
    cones = cones._replace(parent=np.arange(C), active=np.zeros_like(cones.active))
    return cones, H


def _clip_correct(cones: _Cones, H: fnp.ndarray, W_out: fnp.ndarray, meter: _Meter) -> _Cones:
    """Keep the part of each cone where the model's argmax equals the cone's target."""
    C, d, n = H.shape
    n_out = W_out.shape[0]
    # margin[c, r] = (L_t - L_j) for the cone's target t and the r-th other class j.
    others = np.array([[j for j in range(n_out) if j != t] for t in range(n_out)])
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], cones.target, [-1]])))
    meter.need(
        (_GATHER + _EW) * len(bounds) * n_out * d
        + 4 * C * (n_out - 1) * d * n
        + _EW * C * (n_out - 1) * n * 3
        + _EW
    )
    runs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        t = cones.target[a]
        delta = W_out[t][None, :] - W_out[others[t]]
        runs.append(fnp.einsum("oj,cjn->con", delta, H[a:b]))
    margin = runs[0] if len(runs) == 1 else fnp.concatenate(runs, axis=0)
    zero = np.asarray(margin == 0).all(axis=2)
    tol = _REL_TOL * fnp.max(fnp.abs(margin))
    for r in range(n_out - 1):
        C, K = cones.V.shape[:2]
        if C == 0:
            break
        meter.need(_EW * C * n + 4 * C * K * n)
        s = fnp.einsum("ckn,cn->ck", cones.V, _per_cone(margin[:, r], cones.parent))
        # A margin that vanishes identically is a tie on the whole cone: argmax takes the
        # first index, so the target wins it against later classes and loses to earlier.
        later = others[cones.target, r] > cones.target
        force = np.where(zero[cones.parent, r], np.where(later, 1, -1), 0)
        cones, _ = _cut(cones, s, tol, meter, keep_negative=False, force=force)
    return cones


def _measure(cones: _Cones, meter: _Meter) -> fnp.ndarray:
    """Total angular measure of the cones as a fraction of the sphere (circle for n = 2)."""
    C, K, n = cones.V.shape
    V = cones.V
    if n == 2:
        meter.need(_EW * 3 * C + 4 * n * C + (_ATAN2 + 2 * _EW) * C + _EW)
        det = V[:, 0, 0] * V[:, 1, 1] - V[:, 0, 1] * V[:, 1, 0]
        dot = fnp.einsum("cn,cn->c", V[:, 0], V[:, 1])
        return fnp.sum(fnp.arctan2(fnp.abs(det), dot)) / (2 * math.pi)
    T = C * (K - 2)  # fan triangles (v0, v_j, v_j+1); padded ones have zero area
    meter.need(T * (6 * n + 4 * 4 * n + 5 * _EW + _ATAN2) + _EW)
    a, b, c = V[:, 0], V[:, 1 : K - 1], V[:, 2:K]
    det = fnp.einsum("cn,ctn->ct", a, fnp.cross(b, c))
    den = 1.0 + fnp.einsum("cn,ctn->ct", a, b) + fnp.einsum("cn,ctn->ct", a, c)
    den = den + fnp.einsum("ctn,ctn->ct", b, c)
    half_angles = fnp.arctan2(fnp.abs(det), den)
    return fnp.sum(half_angles) / (2 * math.pi)  # sum(2 * half) / (4 pi)


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
        meter.need(_EW * spec.n_params)
        p = {k: fnp.asarray(v, dtype=fnp.float64) for k, v in model.params.items()}
        cones = _start_cones(n, rank, d, meter)
        if spec.arch == "rnn":
            w_ih, W_hh, W_out = p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["linear.weight"]
            cones, H = _layer(cones, w_ih, meter)  # step 0: P = w_ih e_0^T
            for t in range(1, n):
                # P = W_hh H + w_ih e_t^T on x_0..x_t (H does not read x_t yet).
                C = H.shape[0]
                meter.need(4 * H.size * d + _EW * C * d * (t + 2))
                P = fnp.concatenate(
                    [fnp.einsum("ij,cjm->cim", W_hh, H), fnp.repeat(w_ih[None], C, axis=0)],
                    axis=2,
                )
                cones, H = _layer(cones, P, meter)
        else:
            W_0, W_1, W_out = p["mlp.0.weight"], p["mlp.1.weight"], p["linear.weight"]
            cones, H = _layer(cones, W_0, meter)
            meter.need(4 * H.size * d)
            cones, H = _layer(cones, fnp.einsum("ij,cjn->cin", W_1, H), meter)
        cones = _clip_correct(cones, H, W_out, meter)
        accuracy = float(_measure(cones, meter)) if len(cones.count) else 0.0
        meter.close()
        return accuracy, meter
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

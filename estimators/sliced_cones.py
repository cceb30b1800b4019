"""``sliced_cones``: accuracy of bias-free ReLU RNNs and MLPs on order tasks for n = 3, 4, 5,
from the exact measure of the model's cones on 2-D or 3-D slices and a quadrature over the rest.

The accuracy of a bias-free ReLU network on an order task is the Gaussian measure of a union
of polyhedral cones in R^n (see ``exact_cones``). ``exact_cones`` enumerates them on the
2-sphere (n <= 3); in 4 and 5 dimensions a full enumeration of the arrangement explodes
(the zoo's d = 4, n = 5 model: 6.5 million simplicial cones before the logit cuts). This
estimator measures the cones exactly on slices through the origin and integrates over the
slices' directions, with two kinds of slices:

* **arcs** (RNNs, every budget but n = 4's largest): half-planes, where the correct set is
  a union of arcs measured in closed form for ~3e3 FLOPs (d = 4), averaged over the
  directions of the first ``n - 1`` inputs with a product rule aligned with the planes where
  the target changes (n = 4, section "Arcs" below) or, at n = 5, Owen-scrambled Sobol'
  points (section "Sobol' points");
* **3-D slices** (MLPs; RNNs at n = 4 where the budget affords their finest level): the
  ``exact_cones`` machinery on 3-D slices, ~3e5 FLOPs each, and a quadrature over the rest.

**Arcs.** Write ``x = (rho omega, v)`` with ``omega`` on the sphere ``S^(n-2)`` of the first
``n - 1`` inputs, ``rho >= 0`` and ``v = x_(n-1)``, and ``t = v / rho = tan(psi)``. Integrating
out the radius, ``P(correct) = Gamma(n/2) / (2 pi^(n/2)) int_{S^(n-2)} A(omega) d omega`` with
``A(omega) = int_{correct psi} cos(psi)^(n-2) d psi``. The RNN's first ``n - 1`` steps only
scale a state, ``h = rho c(omega)``, and the last is ``rho relu(a + w_ih t)``, ``a = W_hh c``: on
the line ``t`` neuron ``j`` switches at ``-a_j / w_j`` and the target changes where ``t``
passes an ``omega_i``, so between those ``d + n - 1`` breakpoints the logits are linear in
``t``, each margin is right on a half-line, and the right part of a sector is an interval;
``A`` is a sum of differences of ``int cos^2 = psi / 2 + sin(2 psi) / 4`` or
``int cos^3 = sin psi - sin^3 psi / 3`` (a margin identically 0, no neuron active, is a tie
the argmax gives to the lower index). ``A(omega)`` jumps only where two of the first inputs
tie; those planes contain the diagonal ``e``, so with ``omega = cos(a) e + sin(a) xi`` (``xi``
on the sphere of ``sum u = 0``) they bound the ``(n - 1)!`` chambers of the order of ``xi``,
images of one under permutations of the inputs. At n = 4 the rule (``_arc_rule``) is
Gauss-Legendre in ``a`` (weight ``sin(a)``) times Gauss-Legendre on one chamber's arc of
pi / 3, mapped to all. What the rule leaves are kinks inside the chambers (state neurons
switching), so the error falls like 1 / nodes. Measured on the beyond-n3 suite's 32 copies
(RMS error against their 2^27-input ground truths, whose variance is subtracted; FVU in
brackets; float32, which the meter charges half of float64 and which suffices without
combinatorics): d = 4, n = 4: 4.9e-3 at 1e6 [0.069], 5.9e-4 at 1e7 [0.001], 7.5e-5 at 1e8.
The ladder (``_ARC_LADDER``) was chosen on these copies. At n = 5 a product rule
(Gauss-Legendre in ``a`` in intervals cut at 0.3 from the poles, times each chamber's
spherical triangle cut into ``m_c^2`` in the gnomonic chart with a 3-point rule of degree 2
on each) served until a lattice (below) replaced it but at d <= 4 from 5e8, and Sobol'
points everywhere: its error fell like nodes^(-2/3), a bias of the state's kinks (RMS, same
copies: d = 4 4.7e-5 at 1e9, argmedian d = 4 5.7e-5, d = 8 9.9e-4, argmedian d = 8 3.3e-4;
git history has it). An arc costs ~2.1e3 FLOPs at d = 4, n = 4, ~2.6e3 at d = 4, n = 5,
~4.1e3 at d = 8, n = 5 and ~8.2e3 at d = 16, n = 5 (``results/bench.md``). The logits are
carried from sector to sector by a running sum over the switches crossed, not a (sector x d) @
(d x n) product per sector: 26% cheaper at d = 8, 46% at d = 16 (a product cost 2.3e3 /
2.8e3 / 5.6e3 / 1.5e4), 8% dearer at d = 2. The errors quoted here and below were
measured at those earlier costs (up to 25e3e6b).

**Sobol' points (n = 5).** The product rule's error is the state's kinks inside the
chambers, a bias that grows with d. At n = 5 the estimator draws the directions instead: in
each of the 24 chambers the first ``k`` points of a 3-D Sobol' sequence in ``[0, 1)^3``,
Owen-scrambled (nested uniform scrambling by Burley's hash, a scramble per chamber from the
key), mapped onto the chamber by its measure (the angle from the diagonal by its quantile,
``xi`` by Arvo's map of the unit square onto a spherical triangle), so every direction is
uniform on its chamber and the mean of the arcs is unbiased, with the chambers as strata and
the points spread evenly within them. It is a conditional Monte Carlo: the two dimensions the
arcs integrate exactly are gone, and the rest is averaged over well-spread directions, not
single inputs. The directions depend on the key alone, so the meter charges only the arcs.

Until 2026-12-02 the points were a randomly shifted Kronecker lattice
``frac(shift + j alpha)`` (Roberts' R_3 steps). Its error stalled: on the zoo's d = 8, n = 5
model the spread of the estimate over 16 keys was 2.5e-4 at k = 2,000 per chamber and 1.3e-4
at 14,000 (like ``k^-0.3``), below i.i.d. directions' spread by only 2-3x. The arcs' mean is
not periodic on the cube (on the d = 8 model 36%, 32% and 25% of its variance lie in the top
tenth of each coordinate: the first four inputs nearly equal, or two of them nearly tied)
and varies on scales of 0.01-0.05 of it, which a shifted lattice's ``k^(1/3)`` rows per axis
barely resolve. Owen-scrambled Sobol' points need no periodicity. Spread over 16-24 keys,
lattice against Sobol', at ``k`` = 1,000 and 10,000: 2nd argmax d = 8, n = 5 5.2e-4 / 2.6e-4
and 1.8e-4 / 4.9e-5 (4x and 14x in variance); argmedian d = 8 4.7e-4 / 3.8e-4 and 1.2e-4 /
8.4e-5; d = 4, n = 5 3.9e-4 / 3.2e-4 and 1.7e-4 / 5.1e-5; argmedian d = 4 4.3e-4 / 1.6e-4
and 1.5e-4 / 3.2e-5. (Importance sampling by coordinate and Neyman allocation over 6^3 boxes
of the cube, with the base model's own variance map as an oracle, gained 1.6x and 2-4x in
variance over the lattice.) Measured on the beyond-n3 suite's 32 copies (FVU, ground truth's
noise subtracted; the lattice's in brackets): d = 8, n = 5: 0.10 at 1e6 [0.18], 4.7e-3 at
1e7 [8.0e-3], 1.2e-4 at 1e8 [4.1e-4], 6.9e-6 at 1e9 [5.6e-5]; argmedian d = 8: 0.27 [0.14],
0.012 [7.0e-3], 1.8e-4 [4.7e-4], 1.0e-5 [7.2e-5]; d = 4: 0.21 [0.31], 7.9e-3 [6.1e-3],
1.8e-4 [2.5e-4], 1.3e-5 at 1e9 [the product rule: 9.9e-6]; argmedian d = 4: 0.025 [0.027],
7.3e-4 [1.0e-3], 2.5e-5 [4.0e-5], at 1e9 below the ground truth's noise [the product rule:
3.1e-6]. With 10-100 points a chamber (1e6-1e7 at d = 8) the two point sets are alike; from
1e8 the scrambled points' error falls like ``N^-0.6`` in RMS where the lattice's had slowed
to ``N^-0.4``.

**3-D slices.** Split ``x = (u, v)`` with ``u`` the first ``n - 2`` inputs and ``v`` the last
two, and write ``u = rho omega`` with ``rho >= 0``, ``omega`` on the sphere ``S^(n-3)``.
For a fixed direction ``omega`` the correct set in ``(rho, v)`` is a union of cones in R^3,
so with ``y = (rho, v) / |(rho, v)|`` on the hemisphere ``y_0 > 0`` and the radial parts
integrated out (``int_0^inf r^(n-1) e^(-r^2/2) dr = 2^(n/2-1) Gamma(n/2)``),

    P(correct) = Gamma(n/2) / (2 pi^(n/2)) * int_{S^(n-3)} W(omega) d omega,
    W(omega) = int_{correct part of the hemisphere} y_0^(n-3) d sigma(y).

For n = 3 the "sphere" ``S^0`` is the two points ``omega = +-1`` and the formula is exact.

**The slice exactly.** On the slice the model is a bias-free ReLU network of the three
coordinates ``y``: an RNN reads ``x_t = y_0 omega_t`` for ``t < n - 2``, so its first
``n - 2`` steps only scale a constant state, ``h_(n-3) = y_0 c(omega)`` with
``c_0 = relu(w_ih omega_0)``, ``c_t = relu(W_hh c_(t-1) + w_ih omega_t)``; the last two
steps cut the hemisphere as in ``exact_cones`` (an MLP's two layers likewise). The start
faces are the cells of the planes ``x_i = x_j`` that involve ``v`` on the hemisphere
(``2n - 3`` planes; the order among ``u``'s inputs is fixed by ``omega``), built in the
program by the same cuts, since ``omega`` is traced. ``W(omega)`` is a sum over the
boundary edges ``(a, b)`` of the correct region (unit rays, counter-clockwise) of closed
forms, from Stokes' theorem on the sphere (``y_0`` and ``y_0^2 - 1/3`` are spherical
harmonics, ``Delta f = -2 f`` and ``-6 f``):

* ``k = 0``: ``Omega(e_0, a, b) = 2 atan2(D, 1 + a_0 + b_0 + a.b)``, ``D = (a x b)_0``
  (Van Oosterom-Strackee from the pole ``e_0``);
* ``k = 1``: ``(1/2) theta D / |a x b|``, ``theta = atan2(|a x b|, a.b)`` (half the edge's
  length times the pole's component of its inward normal);
* ``k = 2``: ``Omega / 3 + D (a_0 + b_0) / (3 (1 + a.b))``.

**The quadrature (not exact).** ``W`` is smooth between breakpoints the program computes
from the weights: it jumps where ``omega_i = omega_j`` (the slice lies in a plane
``x_i = x_j``, where the target changes), kinks where a neuron of ``c(omega)`` switches
(closed forms: for the RNN these are angles of ``(omega_0, omega_1)``, and, for n = 5, for
each of them elevations of ``omega_2``), and elsewhere it is C^1 (a face of the
n-dimensional arrangement passing through the slice appears with an area quadratic in the
angle). Next to many breakpoints it changes steeply, in layers of unknown width (two nearly
equal inputs the model cannot tell apart; a large state component swinging the slice's
zero sets), so breakpoints are also graded geometrically towards each of them (at
``0.1, 0.03, 0.01, 0.003`` on both sides) and laid evenly, every ``pi / 8`` (every
``pi / 24`` at n = 4's finest levels, and ``elev`` intervals in elevation at n = 5, from 8
to 36, denser near the equator where the weight ``cos phi`` is large: ``W`` also kinks
where a slice's arrangement changes, at angles no closed form here gives, and shorter
intervals cut that error, see ``_LADDER``); each interval gets an ``m``-point
Gauss-Legendre rule. n = 4: ``omega = (cos theta, sin theta)``. n = 5:
``omega = (cos phi cos theta, cos phi sin theta, sin phi)``, nested rules (weight
``cos phi``; ``m_phi`` points per interval in elevation), the elevation breakpoints
recomputed at every azimuth node. The sum is divided by the exact area of the directions'
sphere (2, ``2 pi``, ``4 pi`` for n = 3, 4, 5), not by the rules' weights (at n = 3, 4 these
sum to it up to rounding; at n = 5 they integrate ``cos phi`` only approximately, and ``W``
is the constant ``int y_0^(n-3) d sigma`` where every direction is right, so the ratio
cancels that part of the error: at ``m = 1`` on the d = 8, n = 5 copies, RMS error 6.2e-3
instead of 9.6e-3).

Measured (float64; ground truth 2^24 samples, standard error ~1.2e-4): the zoo's d = 4,
n = 4 model converges to 5e-6 (against 20,000 equally spaced slices) at 4 grades and ``m = 3``
(8.9e7 FLOPs); on the ``beyond-n3`` suite's 32 noisy copies (sigma 0.0136, each copy's
ground truth from inputs of its own) the program bought at 1e9 had RMS error 7e-5 with
breakpoints every ``pi / 8`` (up to 2.1e-4 on one copy against 20,000 equally spaced
slices), and with them every ``pi / 24`` (6.8e8 FLOPs charged then, 6.2e8 now) it is within
4e-6 of those slices: the harness measures inf [166, inf] against ``sampling+prior`` there
with 2^27-input ground truths (51 [9.4, inf] with 2^26, the lower end set by the ground
truth's noise). The d = 4, n = 5 model (truth 0.4231 +- 0.0001 over three seeds) is off by
7e-3 at 1.2e8 FLOPs and by 3-7e-4 with 8 intervals in elevation up to 3.6e9 (evenly
spaced); with 14 (1.0e9, what 1e9 buys) it reads 0.42290 (0.42332 evenly spaced), with 36
at ``m = 3`` (1.1e10, evenly spaced) 0.42313. On the suite's 32 copies the RMS error at
1e9 fell from 7.2e-4 to 2.7e-4 with finer even grids and to 1.5e-4 with the present
spacing, and on its argmedian copies from 5.0e-4 to 1.7e-4 and 1.1e-4 (``_LADDER``); about
half of what is left is the azimuth rule's, half the elevation rule's (refining either
alone 2.1-2.3x leaves 1.4e-4 of 1.75e-4). The d = 8, n = 5 models afford one node per
azimuth interval and two per elevation interval at 1e9 (RMS error 2.5e-3 on the suite's
2nd argmax copies, 2.1e-3 on its argmedian ones, most of it a bias, the azimuth midpoint
rule's as far as measured; one node in both, 4.5e-3 and 3.3e-3; two in both, 7e-4 and
unbiased at 2.6e9). The estimate is exact for n = 3 (``omega = +-1``, no quadrature),
which the tests check against ``exact_cones``.

Costs (metered, reads and writes at computed positions charged): d = 8, n = 5 at its
cheapest level 6.4e8, at the level 1e9 buys 9.9e8; d = 4, n = 5 at ``m = 2`` 7.0e8 (8
intervals in elevation) to 1.0e9 (14); the cheapest d = 4, n = 4 level 9.1e6. A slice
costs ~5.2e5 FLOPs at d = 4, n = 5.

**Budget.** An RNN at n = 5 gets the most Sobol' points that fit; at n = 4 the finest arc
rule that fits (``_ARC_LADDER``), unless the budget affords 3-D slices' finest level. One
3-D slice is an ``exact_cones`` program (static shapes, capacities from a model of how many
faces each cut splits, scaled by ``gamma``); ``lax.scan`` runs it over the nodes. The budget
buys the most accurate quadrature level (grades, ``m``, even breakpoints) at
``gamma = 1.3``, then a larger ``gamma`` at the top level. A node whose slice overflows a
capacity (or meets a digit pattern no convex face can have) is dropped and the others
reweighted, an approximation; with no node left, or below the cheapest program, the estimate
is the chance rate ``1/n``. 3-D slices are float64 by default: in float32 1.5% of slices of
the d = 4, n = 4 model meet impossible digit patterns (none in float64).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from algzu.estimator import Estimator, register_estimator
from algzu.estimators.exact_cones import (
    _FIRST,
    _REL_TOL,
    _SUMMED,
    I32,
    _compact,
    _Complex,
    _cut,
    _ext,
    _pick,
    _put,
    _resize,
    _Stage,
    _take,
)
from algzu.model import Model, ModelSpec
from algzu.planning import (
    abstract_key,
    abstract_params,
    chance_estimate,
    finest_within,
    largest_count_within,
    metered_flops,
)


class _Level(NamedTuple):
    """A quadrature level: graded breakpoints per side, Gauss-Legendre nodes per interval,
    breakpoints laid evenly around the azimuth circle and (n = 5) intervals in elevation
    from pole to pole (:func:`_phi_breaks`) with ``m_phi`` nodes each (0: ``m``)."""

    grades: int
    m: int
    grid: int = 16
    elev: int = 8
    m_phi: int = 0


# Quadrature levels of 3-D slices, cheapest first; the budget takes the most accurate that
# fits. (Measured on RNNs, which at n = 5 now take arcs; MLPs take these.) n = 4's
# finest levels lay 48 breakpoints in azimuth (every pi / 24): measured on 11 noisy copies of
# the zoo's d = 4, n = 4 model (sigma 0.0136) against 20,000 equally spaced slices, 4 grades
# at m = 4 leave an RMS error of 1.0e-4 with 16 (496 nodes) and 4.1e-6 with 48 (624 nodes); at
# m = 3, 1.5e-4 (372) and 2.5e-5 (468). n = 5: the elevation grid matters more than the
# azimuth grid or the graded breakpoints. RMS error on the beyond-n3 suite's 32 copies of the
# zoo's d = 4, n = 5 model against their 2^27-input ground truths (variance subtracted), m = 2
# and 16 in azimuth: 7.2e-4 with 8 intervals in elevation (6.6e8 FLOPs), 2.9e-4 with 12,
# 2.7e-4 with 14 (1.0e9 since faces hold 10 vertices, what 1e9 buys), 2.4e-4 with 15, 1.6e-4
# with 16 and 1.2e-4 with 24 (1.5e9); 1 and 2 grades at 8 in elevation cost more and gave
# 5e-4 (8 copies). The argmedian copies (sigma 0.0773), with faces of 8 vertices: 4.2e-4,
# 3.8e-4 and 3.5e-4 with 12, 14 and 15, and 1.7e-4 with 14 and 10 (no slice dropped). At
# m = 1 (8 copies each): d = 4, 2.0e-3 with 16; d = 8, 6.2e-3 with 8 and 4.6e-3 with 16 (what
# 1e9 buys at d = 8), a bias of the midpoint rule (the error's mean is 97% of its RMS).
# Those figures are for elevation breakpoints evenly spaced. Spaced half-way between even
# and equal-area (``_phi_breaks``), at the same cost, on the same copies: d = 4 with 12, 14,
# 15 and 16 intervals 2.3e-4, 1.5e-4, 1.8e-4, 1.4e-4 (even: 2.9e-4, 2.7e-4, 2.4e-4,
# 1.6e-4); argmedian 1.5e-4, 1.1e-4, 1.0e-4, 1.0e-4 (even, faces of 10 vertices: 2.0e-4,
# 1.7e-4, 2.2e-4, 1.3e-4); d = 8 at m = 1 with 16, 4.7e-3 (even 5.0e-3; 16 copies). Equal
# areas alone (arcsin): d = 4 with 14, 2.8e-4; argmedian 1.1e-4. Fewer azimuth breakpoints
# for more in elevation lose: 8 even in azimuth and 24 in elevation (as costly as 16 and
# 14) leave 9.1e-4 on d = 4, 3.3e-4 on argmedian. Nodes per interval chosen per direction
# (``m`` in azimuth, ``m_phi`` in elevation) at ~1e9 on d = 4 (16 copies; 1.75e-4 at m = 2
# in both with 16 and 14): 3 in elevation with 7 intervals, 3.1e-4; 1 with 34, 2.4e-4; 1 in
# azimuth with 32 even and 2 in elevation with 16, 3.8e-4; 3 in azimuth with 8 even, 3.9e-4.
# Refining one direction alone: 48 in azimuth (2.3e9) 1.35e-4, 36 in elevation (2.1e9)
# 1.43e-4, so both rules leave about as much. A random shift of the elevation grid per azimuth
# node (13 intervals, 2 seeds): 2.3e-4, 2.7e-4. At d = 8, where 1e9 affords one node per
# interval at 16 and 16 (32 copies: 4.5e-3, argmedian 3.3e-3, a bias of +4.3e-3 and +3.0e-3),
# 2 in elevation with 4 intervals at the same cost leaves 2.5e-3 and 2.1e-3 (with 3: 2.8e-3
# and 3.7e-3); 2 in azimuth with 8 even and 1 in elevation with 8, 3.7e-3 (12 copies); grading
# around the ties alone, 2.3e-3 to 3.4e-3 at 1.1-1.3e9; 2 nodes in both need 2.6e9 (7.1e-4,
# unbiased, 8 copies).
_LADDER = {
    3: (_Level(0, 1),),
    4: (_Level(0, 1), _Level(2, 1), _Level(4, 1), _Level(4, 2), _Level(4, 3), _Level(4, 3, 48), _Level(4, 4, 48)),
    5: (
        _Level(0, 1), _Level(0, 1, 16, 4, m_phi=2), _Level(0, 2), _Level(0, 2, 16, 12), _Level(0, 2, 16, 14),
        _Level(0, 2, 16, 15), _Level(0, 2, 16, 16), _Level(0, 2, 16, 24), _Level(0, 2, 48, 24), _Level(0, 3, 48, 36),
    ),
}
_GAMMA_MIN = 1.3
_GAMMAS = (1.3, 1.6, 2.0, 3.0, 4.0)
# The start faces of a slice: at most 30 faces (n = 5) of at most 4 vertices (checked on 3,000
# random directions; the arrangement depends on omega only). The start cuts' capacities: in
# the chart (y_1 / y_0, y_2 / y_0) the planes are the lines s = omega_i, t = omega_i and
# s = t over four quadrants, so a cut splits few faces. Measured over 200,000 random
# directions and 100,000 near ties (omega_0 within 1e-9 of omega_1 or of 0): at most 23 rows,
# 52 edges, 5 split faces and 4 crossing edges per cut at n = 5 (16, 35, 4, 3 at n = 4), and
# the capacities below allow 34, 65, 8 and 8 (26, 49 at n = 4). They were 90, 121, 32 and
# 64, which made the start cuts a fifth of every slice's FLOPs.
_KS, _FS = 4, 32
_START_SPLIT = 8


def _start_stage(n: int) -> _Stage:
    planes = 2 * n - 3
    return _Stage("start", 0, 0, planes, 6 + 4 * planes, 9 + 8 * planes, _FIRST + _FS, _START_SPLIT, _START_SPLIT)


# --- the start faces of a slice, built in the program ------------------------------------------


@functools.lru_cache(maxsize=None)
def _hemisphere(K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hemisphere ``y_0 >= 0`` as four counter-clockwise triangles around ``e_0`` with
    shared vertices ``e_0, e_1, e_2, -e_1, -e_2`` and edges: (rays, EI, FI), row 0 the
    sentinel."""
    rays = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, -1, 0], [0, 0, -1]], float)
    rim = [2, 3, 4, 5]  # e_1, e_2, -e_1, -e_2: counter-clockwise around e_0
    edges = [(0, 0)] + [(1, r) for r in rim] + [(rim[i], rim[(i + 1) % 4]) for i in range(4)]  # spokes, rim
    EI = np.array([[a, b, _SUMMED] for a, b in edges], np.int32)
    EI[0, 2] = 1
    FI = np.zeros((5, 2 * K + 3), np.int32)
    for i in range(4):
        a, b = rim[i], rim[(i + 1) % 4]
        FI[1 + i, :3] = [1, a, b]
        # e_0 -> a: spoke i forwards; a -> b: rim i forwards; b -> e_0: spoke i + 1 backwards
        FI[1 + i, K : K + 3] = [2 * (1 + i), 2 * (5 + i), 2 * (1 + (i + 1) % 4) + 1]
        FI[1 + i, 2 * K :] = [3, 0, 1]
    return rays, EI, FI


def _start_faces(omega: jax.Array, n: int, rank: int, K: int, dtype) -> tuple[_Complex, dict[str, jax.Array]]:
    """A slice's start faces for direction ``omega`` (traced): the hemisphere cut by the
    planes ``x_i = x_j`` that involve ``v``, then each face given its own vertices and
    edges (so margins can be oriented by its target), and per face its target, the other
    classes and the ties the target wins."""
    rays, EI, FI = _hemisphere(K)
    planes = 2 * n - 3
    stage = _start_stage(n)
    y = jnp.asarray(rays, dtype)
    cols = [omega[i] * y[:, 0] - y[:, 1] for i in range(n - 2)] + [omega[i] * y[:, 0] - y[:, 2] for i in range(n - 2)]
    cols.append(y[:, 1] - y[:, 2])
    P = jnp.concatenate([y, jnp.zeros((6, 1), dtype), jnp.stack(cols, axis=1)], axis=1)
    cx = _Complex(P, jnp.asarray(EI), jnp.asarray(FI), *(jnp.asarray(c, I32) for c in (6, 9, 5)), jnp.asarray(False))
    cx = _resize(cx, stage)
    tol = jnp.asarray(_REL_TOL[jnp.dtype(dtype).name] * 2.0, dtype)  # |plane values| <= 2 on unit rays
    cx, _ = lax.scan(lambda c, i: _cut(c, i, tol, stage, K, None), cx, jnp.arange(planes, dtype=I32))
    # Unshare: slot j of face f becomes vertex and edge 1 + 4 f + j (4 >= any start face).
    F = stage.F
    FV, k = cx.FI[:, :_KS], cx.FI[:, 2 * K]
    j = jnp.arange(_KS, dtype=I32)[None, :]
    used = (j < k[:, None]).astype(I32)
    base = _FIRST + _KS * jnp.arange(F, dtype=I32)[:, None]
    ids = (base + j) * used
    nxt_ids = (base + (j + 1) * (j + 1 < k[:, None]).astype(I32)) * used
    rows = _take(cx.P[:, :3], FV) * used[..., None].astype(dtype)
    start = jnp.broadcast_to(jnp.arange(F, dtype=dtype)[:, None, None], (F, _KS, 1))
    P_new = jnp.concatenate([jnp.zeros((_FIRST, 4), dtype), jnp.concatenate([rows, start], axis=2).reshape(-1, 4)])
    kind = 1 - used * (1 - _SUMMED)  # padding slots: never summed
    EI_new = jnp.concatenate([jnp.asarray([[0, 0, 1]], I32), jnp.stack([ids, nxt_ids, kind], axis=2).reshape(-1, 3)])
    pad = jnp.zeros((F, K - _KS), I32)
    active = (k > 0).astype(I32)[:, None]
    FI_new = jnp.concatenate([ids, pad, 2 * ids, pad, k[:, None], jnp.arange(F, dtype=I32)[:, None], active], axis=1)
    rows_in_use = jnp.asarray(_FIRST + _KS * F, I32)
    out = _Complex(P_new, EI_new, FI_new, rows_in_use, rows_in_use, jnp.asarray(F, I32), cx.bad)
    # Each face's target: the input of order ``rank`` at its centroid.
    c = jnp.sum(rows, axis=1)
    x = jnp.concatenate([c[:, :1] * omega[None, :], c[:, 1:]], axis=1)  # (F, n)
    larger = jnp.sum((x[:, None, :] > x[:, :, None]).astype(I32), axis=2)  # inputs above each input
    target = jnp.sum(jnp.arange(n, dtype=I32)[None, :] * (larger == rank).astype(I32), axis=1)
    r = jnp.arange(n - 1, dtype=I32)[None, :]
    others = r + (r >= target[:, None]).astype(I32)
    return out, {"target": target, "others": others, "tie_pos": others > target[:, None]}


# --- the plan --------------------------------------------------------------------------------


class _Plan(NamedTuple):
    spec: ModelSpec
    dtype: str
    m: int  # Gauss-Legendre nodes per interval between breakpoints (n = 5: in azimuth)
    m_phi: int  # n = 5: Gauss-Legendre nodes per interval in elevation
    grades: int  # graded breakpoints on each side of each breakpoint
    grid: int  # breakpoints laid evenly around the azimuth circle
    elev: int  # n = 5: intervals from pole to pole in elevation
    gamma: float
    K: int
    stages: tuple[_Stage, ...]
    B: int


def _plan(
    spec: ModelSpec, dtype: str, m: int, gamma: float, grades: int = 4, grid: int = 16, elev: int = 8, m_phi: int = 0
) -> _Plan:
    """Capacities of one slice for growth factor ``gamma``.

    As in ``exact_cones._plan``, with ``c`` the curves before a cut (the ``2n - 3`` start
    planes, the hemisphere's rim and the two planes that split it into triangles, then one
    per cut). The first layer's zero sets are planes through the ``y_2``-axis: at most
    ``n + 1`` split faces measured, ``n + 3`` allowed. After it, fitted on random slices of
    noisy copies of the zoo's n = 4, 5 models: split faces per cut at most ``1.6c + 6``
    (mean ``1.1c``), per margin cut at most ``3.5c + 6`` (mean ``1.5c``), crossing edges
    ``0.5 sf + 6`` more than split faces, boundary edges at most ``12c + 20``.
    """
    d, n = spec.d, spec.n
    # K: vertices a face can hold. At n = 5, with 8 (d = 4), margin cuts overflowed it on up
    # to 3.6% of the slices of the beyond-n3 suite's argmedian-d4-n5 copies (66 of 2,016 on
    # copy 22; more on a closed-book d4-n5), each dropped; with 10, none (6% more FLOPs).
    K = (8 if d <= 4 else 9) + 2 * (n == 5) + (gamma >= 2.0)
    V = E = _FIRST + _KS * (_FIRST + _FS)
    F = _FIRST + _FS
    curves = 2 * n - 3 + 3
    up = lambda x: max(1, math.ceil(gamma * x))  # noqa: E731
    stages = []

    def grow(n_cuts, most, mean):
        nonlocal V, E, F, curves
        sfs, ses = [], []
        for _ in range(n_cuts):
            sf = min(up(most(curves)), F - _FIRST)
            se = sf + up(0.5 * most(curves) + 6)
            df = min(up(mean(curves)), sf)
            dv = min(df + up(0.25 * mean(curves) + 4), se)
            V, E, F = V + dv, E + dv + df, F + df
            curves += 1
            sfs.append(sf)
            ses.append(se)
        return max(sfs), max(ses)

    later = (lambda c: 1.6 * c + 6, lambda c: 1.1 * c)
    first_layer = (lambda c: n + 3, lambda c: n + 1) if spec.arch == "rnn" else later
    for layer in (1, 2):
        most, mean = first_layer if layer == 1 else later
        for a, b in ((0, (d + 1) // 2), ((d + 1) // 2, d)):
            if b > a:
                sf, se = grow(b - a, most, mean)
                stages.append(_Stage("layer", layer, a, b, V, E, F, sf, se))
    for r in range(n - 1):
        sf, se = grow(1, lambda c: 3.5 * c + 6, lambda c: 1.5 * c)
        stages.append(_Stage("margin", r, 0, 0, V, E, F, sf, se))
    return _Plan(spec, dtype, m, m_phi or m, grades, grid, elev, gamma, K, tuple(stages), up(12 * curves + 20))


# --- one slice ---------------------------------------------------------------------------------


def _edge_terms(a: jax.Array, b: jax.Array, k: int) -> jax.Array:
    """``int y_0^k`` contributions of the counter-clockwise edges ``(a, b)`` (rows, any norm)."""
    a = a * lax.rsqrt(jnp.sum(a * a, axis=1, keepdims=True))
    b = b * lax.rsqrt(jnp.sum(b * b, axis=1, keepdims=True))
    D = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    c = jnp.sum(a * b, axis=1)
    if k == 1:
        cross = jnp.cross(a, b)
        s = jnp.sqrt(jnp.sum(cross * cross, axis=1))
        return 0.5 * jnp.arctan2(s, c) * D / jnp.maximum(s, 1e-30)
    omega = 2 * jnp.arctan2(D, 1 + a[:, 0] + b[:, 0] + c)
    if k == 0:
        return omega
    return omega / 3 + D * (a[:, 0] + b[:, 0]) / (3 * (1 + c))


def _slice_measure(cx: _Complex, plan: _Plan) -> tuple[jax.Array, jax.Array]:
    """``W``: the integral of ``y_0^(n-3)`` over the active faces; and the number of
    boundary edges (the list holds ``plan.B``)."""
    K = plan.K
    F, E = cx.FI.shape[0], cx.EI.shape[0]
    correct = _put(cx.FI[:, -1] > 0, jnp.arange(_FIRST, dtype=I32), False)
    owner = jnp.broadcast_to(jnp.arange(_FIRST, F, dtype=I32)[:, None], (F - _FIRST, K))
    face_of = _put(jnp.zeros((2 * E,), I32), cx.FI[_FIRST:, K : 2 * K].reshape(-1), owner.reshape(-1))
    c = _take(correct, face_of[0::2]).astype(I32) - _take(correct, face_of[1::2]).astype(I32)
    bidx, nb, _ = _compact((c != 0) & (cx.EI[:, 2] == _SUMMED), plan.B)
    edge = _take(_ext(jnp.arange(E, dtype=I32)), bidx)  # padding: edge 0, of length 0 (terms 0)
    rows = _take(cx.EI, edge)
    pad = (edge == 0).astype(cx.P.dtype)[:, None] * jnp.asarray([[1.0, 0.0, 0.0]], cx.P.dtype)  # a unit ray
    a, b = _take(cx.P, rows[:, 0])[:, :3] + pad, _take(cx.P, rows[:, 1])[:, :3] + pad
    terms = _edge_terms(a, b, plan.spec.n - 3)
    return jnp.sum(_take(c, edge).astype(a.dtype) * terms), nb


def _state(w_ih: jax.Array, W_hh: jax.Array, omega: jax.Array, steps: int) -> jax.Array:
    """The RNN's state after reading ``omega_0 .. omega_(steps-1)``."""
    c = jnp.maximum(w_ih * omega[0], 0.0)
    for t in range(1, steps):
        c = jnp.maximum(W_hh @ c + w_ih * omega[t], 0.0)
    return c


def _slice(plan: _Plan, p: dict[str, jax.Array], omega: jax.Array) -> tuple[jax.Array, jax.Array, dict]:
    """``W(omega)`` exactly, whether every capacity held, and counts (per cut the faces
    split and edges crossed, the rows in use and the boundary edges)."""
    spec = plan.spec
    n, d = spec.n, spec.d
    dtype = jnp.dtype(plan.dtype)
    rel = _REL_TOL[plan.dtype]
    cx, tab = _start_faces(omega, n, spec.task_obj.target_rank(n), plan.K, dtype)
    cx = cx._replace(P=jnp.concatenate([cx.P, jnp.zeros((cx.P.shape[0], d), dtype)], axis=1))
    X = lambda cx: cx.P[:, :3]  # noqa: E731
    H = lambda cx: jnp.maximum(cx.P[:, 4:], 0.0)  # noqa: E731
    if spec.arch == "rnn":
        w_ih, W_hh, W_out = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"], p["linear.weight"]
        c = _state(w_ih, W_hh, omega, n - 2)  # h = y_0 c while the RNN reads u = y_0 omega
        first = lambda Y: Y[:, 0:1] * (W_hh @ c)[None, :] + Y[:, 1:2] * w_ih[None, :]  # noqa: E731
        second = lambda cx: H(cx) @ W_hh.T + X(cx)[:, 2:3] * w_ih[None, :]  # noqa: E731
    else:
        W_0, W_1, W_out = p["mlp.0.weight"], p["mlp.1.weight"], p["linear.weight"]
        A = jnp.concatenate([(W_0[:, : n - 2] @ omega)[:, None], W_0[:, n - 2 :]], axis=1)  # (d, 3) on y
        first = lambda Y: Y @ A.T  # noqa: E731
        second = lambda cx: H(cx) @ W_1.T  # noqa: E731
    counts = []
    for layer in (1, 2):
        S = first(X(cx)) if layer == 1 else second(cx)
        cx = cx._replace(P=jnp.concatenate([cx.P[:, :4], S], axis=1))
        tol = rel * jnp.max(jnp.abs(S))
        for stage in (s for s in plan.stages if s.kind == "layer" and s.index == layer):
            cx = _resize(cx, stage)
            cx, cnt = lax.scan(
                lambda c_, i, stage=stage: _cut(c_, i, tol, stage, plan.K, None),
                cx,
                jnp.arange(stage.start, stage.stop, dtype=I32),
            )
            counts.append(cnt)
    logits = H(cx) @ W_out.T
    start = cx.P[:, 3].astype(I32)
    margins = _pick(logits, _take(tab["target"], start)[:, None]) - _pick(logits, _take(tab["others"], start))
    tol = rel * jnp.max(jnp.abs(margins))
    cx = cx._replace(P=jnp.concatenate([cx.P[:, :4], margins], axis=1))
    for stage in (s for s in plan.stages if s.kind == "margin"):
        cx = _resize(cx, stage)
        cx, cnt = _cut(cx, jnp.asarray(stage.index, I32), tol, stage, plan.K, tab["tie_pos"][:, stage.index])
        counts.append(cnt[None])
    W, nb = _slice_measure(cx, plan)
    stats = {"cuts": jnp.concatenate(counts), "rows": jnp.stack([cx.nv, cx.ne, cx.nf]), "boundary": nb}
    return W, (nb <= plan.B) & ~cx.bad, stats


# --- the quadrature ------------------------------------------------------------------------------


def _angle(num: jax.Array, den: jax.Array) -> jax.Array:
    """``atan2(num, den)`` in [0, 2 pi)."""
    a = jnp.arctan2(num, den)
    return a + 2 * math.pi * (a < 0).astype(a.dtype)


def _gauss(points: jax.Array, m: int, closed: bool) -> tuple[jax.Array, jax.Array]:
    """Gauss-Legendre nodes (``m`` per interval) and weights between the sorted breakpoints
    (``closed``: the last interval wraps around to the first point plus 2 pi)."""
    b = jnp.sort(points)
    if closed:
        b = jnp.concatenate([b, b[:1] + 2 * math.pi])
    t, w = np.polynomial.legendre.leggauss(m)
    lo, half = b[:-1, None], (b[1:] - b[:-1])[:, None] / 2
    nodes = lo + half * jnp.asarray(t + 1, b.dtype)[None, :]
    return nodes.reshape(-1), (half * jnp.asarray(w, b.dtype)[None, :]).reshape(-1)


# Breakpoints graded towards each breakpoint: W changes steeply next to many of them, in
# layers of unknown width (next to a tie the model cannot tell two nearly equal inputs apart;
# next to a switch a large state component swings the slice's zero sets).
_GRADES = (0.1, 0.03, 0.01, 0.003)


def _graded(ties: jax.Array, lo: float, hi: float, grades: int) -> jax.Array:
    """Breakpoints at ``tie +- delta`` for the first ``grades`` graded ``delta``, clipped to [lo, hi]."""
    if grades == 0:
        return ties[:0]
    d = jnp.asarray(_GRADES[:grades], ties.dtype)
    around = jnp.concatenate([ties[:, None] + d[None, :], ties[:, None] - d[None, :]], axis=1)
    return jnp.clip(around.reshape(-1), lo, hi)


def _theta_breaks(p: dict[str, jax.Array], arch: str, grades: int, grid: int = 16) -> jax.Array:
    """Azimuths of ``(omega_0, omega_1)`` where ``W`` jumps or kinks: the ties
    ``omega_0 = omega_1``, ``omega_0 = 0``, and (RNN) where a neuron of the state after two
    steps switches, on either side of ``omega_0 = 0``; and ``grid`` laid evenly."""
    dtype = p["linear.weight"].dtype
    turns = (Fraction(1, 8), Fraction(5, 8), Fraction(1, 4), Fraction(3, 4))  # the ties, in turns
    ties = jnp.asarray([2 * math.pi * t for t in turns], dtype)
    switches = []
    if arch == "rnn":
        w, W = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"]
        s = jnp.sign(w) + (w == 0).astype(dtype)
        # omega_0 > 0: omega_0 (W relu(w))_i + w_i omega_1 = 0; omega_0 < 0: -omega_0 (W relu(-w))_i + w_i omega_1 = 0
        switches = [
            _angle(-(W @ jnp.maximum(w, 0.0)) * s, jnp.abs(w)),
            _angle(-(W @ jnp.maximum(-w, 0.0)) * s, -jnp.abs(w)),
        ]
    # No interval longer than 2 pi / grid. A tie on that grid is not repeated: it would add
    # an interval of length 0, ``m`` slices that weigh nothing.
    even = jnp.asarray(np.arange(grid) * 2 * math.pi / grid, dtype)
    off_grid = jnp.asarray([2 * math.pi * t for t in turns if (t * grid).denominator != 1], dtype)
    graded = _graded(jnp.concatenate([ties, *switches]), 0.0, 2 * math.pi, grades)
    return jnp.concatenate([even, off_grid, *switches, graded])


def _phi_breaks(p: dict[str, jax.Array], arch: str, theta: jax.Array, grades: int, elev: int = 8) -> jax.Array:
    """Elevations ``phi`` (``omega = (cos phi cos theta, cos phi sin theta, sin phi)``) where
    ``W`` jumps or kinks at azimuth ``theta``: the ties of ``omega_2`` with ``omega_0`` and
    ``omega_1``, and (RNN) where a neuron of the state after three steps switches; and
    ``elev + 1`` from pole to pole, denser near the equator."""
    dtype = theta.dtype
    ct, st = jnp.cos(theta), jnp.sin(theta)
    inner = jnp.stack([jnp.arctan(ct), jnp.arctan(st)])
    if arch == "rnn":
        w, W = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"]
        c = _state(w, W, jnp.stack([ct, st]), 2)  # the state after two steps, per unit cos phi
        s = jnp.sign(w) + (w == 0).astype(dtype)
        inner = jnp.concatenate([inner, jnp.arctan2(-(W @ c) * s, jnp.abs(w))])
    # From pole to pole, half-way between even spacing (every pi / elev) and equal areas
    # (arcsin: every interval holds the same share of the weight cos phi), so intervals are
    # shorter where W weighs most and the polar caps are not left coarse (``_LADDER``).
    u = np.linspace(-1.0, 1.0, elev + 1)
    grid = jnp.asarray((np.arcsin(u) + u * math.pi / 2) / 2, dtype)
    return jnp.concatenate([grid, inner, _graded(inner, -math.pi / 2, math.pi / 2, grades)])


def _program(plan: _Plan):
    """The estimate as a function of the weights (see the module docstring)."""
    spec = plan.spec
    n = spec.n
    const = math.gamma(n / 2) / (2 * math.pi ** (n / 2))
    area = 2 * math.pi ** (n / 2 - 1) / math.gamma(n / 2 - 1)  # of S^(n-3), omega's sphere: 2, 2 pi, 4 pi

    def run(params: dict[str, jax.Array]) -> jax.Array:
        with jax.enable_x64(plan.dtype == "float64"):
            dtype = jnp.dtype(plan.dtype)
            p = {k: jnp.asarray(v, dtype) for k, v in params.items()}
            zero = jnp.zeros((), dtype)

            def add(acc, node):
                omega, weight = node
                W, ok, _ = _slice(plan, p, omega)
                okw = ok.astype(dtype) * weight
                return (acc[0] + okw * jnp.where(ok, W, 0.0), acc[1] + okw), None

            start = (zero, zero)
            if n == 3:
                acc, _ = lax.scan(add, start, (jnp.asarray([[1.0], [-1.0]], dtype), jnp.ones((2,), dtype)))
            else:
                theta, w_theta = _gauss(_theta_breaks(p, spec.arch, plan.grades, plan.grid), plan.m, closed=True)
                if n == 4:
                    acc, _ = lax.scan(add, start, (jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1), w_theta))
                else:

                    def ring(acc, node):
                        th, wt = node
                        breaks = _phi_breaks(p, spec.arch, th, plan.grades, plan.elev)
                        phi, w_phi = _gauss(breaks, plan.m_phi, closed=False)
                        cp = jnp.cos(phi)
                        omega = jnp.stack([cp * jnp.cos(th), cp * jnp.sin(th), jnp.sin(phi)], axis=1)
                        return lax.scan(add, acc, (omega, wt * w_phi * cp))[0], None

                    acc, _ = lax.scan(ring, start, (theta, w_theta))
            total, covered = acc
            # Dropped nodes reweighted; divided by the exact area, not the weights' sum
            # (module docstring).
            estimate = const * total * area / jnp.maximum(covered, 1e-30)
            return jnp.where(covered > 0, jnp.clip(estimate, 0.0, 1.0), 1.0 / n)

    return run


# --- 2-D slices: exact arcs, a product rule over the rest (RNNs) ---------------------------------


class _ArcPlan(NamedTuple):
    """Exact arcs on the half-planes ``(rho, x_(n-1))``, a product rule over the directions
    ``omega`` of the first ``n - 1`` inputs (:func:`_arc_rule`)."""

    spec: ModelSpec
    dtype: str
    m_a: int  # Gauss-Legendre nodes in the angle from the diagonal
    m_c: int  # Gauss-Legendre nodes on a chamber's arc (n = 4; n = 5 takes Sobol' points)


# The n = 4 arc rules, (3k, k), cheapest first (module docstring).
_ARC_LADDER = {
    4: tuple((3 * k, k) for k in (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
                                  128, 160)),
}
# t = x_(n-1) / rho standing for infinity: beyond it cos(psi)^(n-2) weighs ~1e-12 (float32 exact).
_ARC_END = 1e6
# Nodes per step of the scan: memory stays flat at any level.
_ARC_CHUNK = 2048


def _chamber_rays(k: int) -> np.ndarray:
    """The rays of the chamber ``u_0 >= ... >= u_(k-1)`` of the hyperplane ``sum u = 0`` (unit
    rows): ray ``j`` is ``k - j`` on the first ``j`` inputs and ``-j`` on the rest."""
    rays = np.array([[k - j] * j + [-j] * (k - j) for j in range(1, k)], float)
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _gauss_legendre(breaks: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` Gauss-Legendre nodes and weights per interval between sorted ``breaks``."""
    t, w = np.polynomial.legendre.leggauss(m)
    lo, half = breaks[:-1, None], np.diff(breaks)[:, None] / 2
    return (lo + half * (t + 1)).reshape(-1), (half * w).reshape(-1)


@functools.lru_cache(maxsize=64)
def _arc_rule(n: int, m_a: int, m_c: int) -> tuple[np.ndarray, np.ndarray]:
    """Directions ``omega`` of the first ``k = n - 1`` inputs and weights (summing to about the
    sphere's area) for the integral over ``omega`` (module docstring)."""
    k = n - 1
    rays = _chamber_rays(k)
    assert k == 3, "the product rule is n = 4's; n = 5 takes Sobol' points"
    a, wa = _gauss_legendre(np.array([0.0, math.pi]), m_a)
    A, B = rays  # the chamber is an arc of pi / 3 from A to B
    ortho = B - (A @ B) * A
    ortho /= np.linalg.norm(ortho)
    s, ws = _gauss_legendre(np.array([0.0, math.acos(A @ B)]), m_c)
    xi, wxi = np.cos(s)[:, None] * A + np.sin(s)[:, None] * ortho, ws
    wa = wa * np.sin(a) ** (k - 2)  # the sphere's area element in the angle from the diagonal
    diag = np.full(k, 1 / math.sqrt(k))
    omega = (np.cos(a)[:, None, None] * diag + np.sin(a)[:, None, None] * xi[None]).reshape(-1, k)
    weight = (wa[:, None] * wxi[None]).reshape(-1)
    perms = list(itertools.permutations(range(k)))  # every chamber, the image of this one
    return np.concatenate([omega[:, list(p)] for p in perms]), np.tile(weight, len(perms))


def _arc_primitive(t: jax.Array, power: int) -> jax.Array:
    """``int cos(psi)^power d psi`` at ``psi = atan(t)``, up to a constant (power 2 or 3)."""
    inv = 1.0 / t
    if power == 2:
        return 0.5 * jnp.arctan(t) + 0.5 / (t + inv)  # psi / 2 + sin(2 psi) / 4
    s = jnp.sign(t) * lax.rsqrt(1.0 + inv * inv)  # sin(psi)
    return s - s * s * s / 3


def _arcs(p: dict[str, jax.Array], omega: jax.Array, rank: int, n: int) -> jax.Array:
    """``int cos(psi)^(n-2) d psi`` over the part of the half-plane ``x = (rho omega, v)``,
    ``rho >= 0``, where the RNN is right, ``v = rho tan(psi)``, per row of ``omega`` (N, n - 1).

    The first ``n - 1`` steps only scale a state, ``h = rho c(omega)``; the last is
    ``rho relu(a + w t)`` with ``a = W_hh c``, ``t = v / rho``, so neuron ``j`` switches at
    ``t = -a_j / w_j``, and the target changes where ``t`` passes an ``omega_i``. Between
    breakpoints the logits are ``rho (alpha + beta t)``, each margin ``A + B t`` is right on a
    half-line, and the right part of a sector is an interval, measured in closed form."""
    w, W, W_out = p["rnn.weight_ih_l0"][:, 0], p["rnn.weight_hh_l0"], p["linear.weight"]
    dtype, (N, d), tw = omega.dtype, (omega.shape[0], w.shape[0]), W_out.T
    c = jax.vmap(lambda o: _state(w, W, o, n - 1))(omega)  # (N, d)
    a = c @ W.T
    # Breakpoints in order, each with the neuron it switches (d: none). A switch beyond an end
    # is clipped to it; the sort is stable, so it lands beside that end and toggles the state
    # only on a sector of width 0. A neuron with w_j = 0 never switches (its steps below are 0).
    switch = jnp.clip(-a / jnp.where(w == 0, 1.0, w)[None], -_ARC_END, _ARC_END)
    ends = jnp.broadcast_to(jnp.asarray([-_ARC_END, _ARC_END], dtype), (N, 2))
    ids = jnp.concatenate([jnp.full((N, 2), d, I32), jnp.broadcast_to(jnp.arange(d, dtype=I32), (N, d)),
                           jnp.full((N, n - 1), d, I32)], axis=1)
    points, ids = lax.sort((jnp.concatenate([ends, switch, omega], axis=1), ids), dimension=1, num_keys=1)
    lo, hi = points[:, :-1], points[:, 1:]
    mid = (lo + hi) / 2  # (N, S)
    # Logits rho (alpha + beta t), sector by sector: below every switch neuron j is on iff
    # w_j < 0 (w_j = 0: iff a_j > 0); crossing its switch upwards adds sign(w_j) (a_j, w_j)
    # times W_out's column j. A cumulative sum over the crossings, not a (sector x d) @ (d x n)
    # product per sector.
    up = jnp.sign(w)
    on = ((w < 0)[None] + (w == 0)[None] * (a > 0)).astype(dtype)  # (N, d)
    cross = ids[:, 1:-1]  # the neuron each point between two sectors switches
    steps_a = jnp.concatenate([a[..., None] * (up[:, None] * tw)[None], jnp.zeros((N, 1, n), dtype)], axis=1)
    steps_b = jnp.concatenate([jnp.abs(w)[:, None] * tw, jnp.zeros((1, n), dtype)])
    steps_on = jnp.concatenate([up, jnp.zeros(1, dtype)])
    running = lambda start, steps: jnp.concatenate(  # noqa: E731
        [start[:, None], start[:, None] + jnp.cumsum(steps, axis=1)], axis=1)  # per sector
    alpha = running((on * a) @ tw, jnp.take_along_axis(steps_a, cross[..., None], axis=1))
    beta = running((on * w[None]) @ tw, steps_b[cross])
    count = running(jnp.sum(on, axis=1), steps_on[cross])
    live = (count > 0.5).astype(dtype)[..., None]  # no neuron on: every logit exactly 0 (the tie below)
    alpha, beta = alpha * live, beta * live  # (N, S, n)
    # The target, from where t falls among the first inputs (whose order is omega's: free).
    above = jnp.sum((omega[:, None, :] > mid[..., None]).astype(I32), axis=-1)  # (N, S)
    order = jnp.argsort(-omega, axis=1).astype(I32)
    if_below = order[:, min(rank, n - 2)][:, None]  # t below the target: omega's rank-th
    if_above = order[:, max(rank - 1, 0)][:, None]  # t above it: omega's (rank - 1)-th
    target = jnp.where(above == rank, n - 1, jnp.where(above > rank, if_below, if_above))[..., None]
    A = jnp.take_along_axis(alpha, target, axis=-1) - alpha  # margins A + B t (0 at the target)
    B = jnp.take_along_axis(beta, target, axis=-1) - beta
    root = -A / B  # inf or nan where B = 0: never selected below
    L = jnp.maximum(lo, jnp.max(jnp.where(B > 0, root, -_ARC_END), axis=-1))
    H = jnp.minimum(hi, jnp.min(jnp.where(B < 0, root, _ARC_END), axis=-1))
    # A margin that is identically 0 (no neuron active) is a tie the argmax gives to the lower
    # index: wrong where the target comes later.
    never = jnp.any((B == 0) & ((A < 0) | ((A == 0) & (jnp.arange(n, dtype=I32)[None, None, :] < target))), axis=-1)
    F = lambda t: _arc_primitive(t, n - 2)  # noqa: E731
    return jnp.sum((F(jnp.maximum(H, L)) - F(L)) * (~never).astype(dtype), axis=1)


def _arc_program(plan: _ArcPlan):
    """The estimate as a function of the weights: the rule's weighted mean of the arcs, over
    their value where every direction is right."""
    spec = plan.spec
    n = spec.n
    rank = spec.task_obj.target_rank(n)
    nodes, weights = _arc_rule(n, plan.m_a, plan.m_c)
    full = math.sqrt(math.pi) * math.gamma((n - 1) / 2) / math.gamma(n / 2)  # int cos^(n-2), -pi/2..pi/2
    weights = weights / (full * weights.sum())
    chunks = -(-len(weights) // _ARC_CHUNK)
    size = -(-len(weights) // chunks)
    pad = chunks * size - len(weights)  # padding: the first node again, weight 0
    nodes = np.concatenate([nodes, np.repeat(nodes[:1], pad, axis=0)]).reshape(chunks, size, n - 1)
    weights = np.concatenate([weights, np.zeros(pad)]).reshape(chunks, size)

    def run(params: dict[str, jax.Array]) -> jax.Array:
        with jax.enable_x64(plan.dtype == "float64"):
            dtype = jnp.dtype(plan.dtype)
            p = {k: jnp.asarray(v, dtype) for k, v in params.items()}

            def add(acc, chunk):
                omega, weight = chunk
                return acc + jnp.sum(weight * _arcs(p, omega, rank, n)), None

            acc, _ = lax.scan(add, jnp.zeros((), dtype), (jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)))
            return jnp.clip(acc, 0.0, 1.0)

    return run


# --- 2-D slices on Owen-scrambled Sobol' points (n = 5) ---------------------------------------


class _SobolPlan(NamedTuple):
    """Exact arcs on ``per_chamber`` directions ``omega`` in each of the 24 chambers of the
    first four inputs' order, Owen-scrambled Sobol' points (:func:`_chamber_directions`)."""

    spec: ModelSpec
    per_chamber: int


@functools.lru_cache(maxsize=1)
def _chamber_frame() -> dict[str, np.ndarray]:
    """Constants of the chamber ``u_0 >= u_1 >= u_2 >= u_3`` of ``sum u = 0`` in an orthonormal
    frame of that 3-D space: its spherical triangle ``A, B, C`` and what Arvo's map needs."""
    rays = _chamber_rays(4)
    basis = np.linalg.svd(rays)[2][:3]  # rows: an orthonormal frame of sum u = 0
    A, B, C = rays @ basis.T
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    angle = lambda p, q, r: math.acos(unit(np.cross(p, q)) @ unit(np.cross(p, r)))  # at p  # noqa: E731
    at_a = angle(A, B, C)
    area = at_a + angle(B, C, A) + angle(C, A, B) - math.pi  # the spherical excess
    return {"A": A, "B": B, "C_perp": unit(C - (C @ A) * A), "basis": basis, "at_a": np.float64(at_a),
            "area": np.float64(area), "perms": np.array(list(itertools.permutations(range(4))), np.int32)}


def _sin2_quantile(u: jax.Array) -> jax.Array:
    """The angle ``a`` in ``[0, pi]`` with ``(a - sin(a) cos(a)) / pi = u``: the law of the
    angle between a uniform direction of R^4 and a fixed axis (bisection, float32-exact)."""
    lo, hi = jnp.zeros_like(u), jnp.full_like(u, math.pi)
    for _ in range(24):
        mid = (lo + hi) / 2
        below = (mid - jnp.sin(mid) * jnp.cos(mid)) < math.pi * u
        lo, hi = jnp.where(below, mid, lo), jnp.where(below, hi, mid)
    return (lo + hi) / 2


# Sobol' direction numbers of the first three dimensions, 32-bit: the van der Corput
# sequence, then Joe and Kuo's primitive polynomials x + 1 (m = 1) and x^2 + x + 1 (m = 1, 3)
# ("Constructing Sobol sequences with better two-dimensional projections", SIAM J. Sci.
# Comput. 2008; the first rows of new-joe-kuo-6.21201, as in scipy.stats.qmc.Sobol).
_SOBOL_POLYNOMIALS = ((1, 0, (1,)), (2, 1, (1, 3)))  # degree s, coefficients a, initial m


@functools.lru_cache(maxsize=1)
def _sobol_directions() -> np.ndarray:
    """Direction numbers ``v[dim, bit]`` (uint32): point ``j`` of dimension ``dim`` is the
    XOR of ``v[dim, b]`` over the bits ``b`` set in ``j``, over ``2^32``."""
    v = np.zeros((3, 32), np.uint64)
    v[0] = [1 << (31 - b) for b in range(32)]
    for dim, (s, a, m) in enumerate(_SOBOL_POLYNOMIALS, start=1):
        m = list(m)
        for i in range(s, 32):  # Bratley and Fox's recurrence on the m_i
            new = m[i - s] ^ (m[i - s] << s)
            for k in range(1, s):
                new ^= ((a >> (s - 1 - k)) & 1) * (m[i - k] << k)
            m.append(new)
        v[dim] = [(m[b] << (31 - b)) % 2**32 for b in range(32)]
    return v.astype(np.uint32)


def _reverse_bits(x: jax.Array) -> jax.Array:
    """The 32 bits of each uint32 in reverse order."""
    for shift, mask in ((1, 0x55555555), (2, 0x33333333), (4, 0x0F0F0F0F), (8, 0x00FF00FF)):
        x = ((x >> shift) & jnp.uint32(mask)) | ((x & jnp.uint32(mask)) << shift)
    return (x >> 16) | (x << 16)


def _owen_scramble(x: jax.Array, seed: jax.Array) -> jax.Array:
    """Nested uniform (Owen) scrambling of 32-bit fractions by Burley's hash ("Practical
    hash-based Owen scrambling", JCGT 2020): on the reversed bits, an add and xor-multiplies
    by even constants, so each bit flips as a function of the seed and the bits above it."""
    x = _reverse_bits(x) + seed
    for c in (0x6C50B47C, 0xB82F1E52, 0xC7AFE638, 0x8D22F6E6):
        x = x ^ (x * jnp.uint32(c))
    return _reverse_bits(x)


def _sobol_points(seeds: jax.Array, j: jax.Array, per_chamber: int) -> jax.Array:
    """Points ``j`` (uint32, < ``per_chamber``) of Owen-scrambled 3-D Sobol' sequences in
    ``(0, 1)^3`` at 24 bits, one scramble per row of ``seeds`` (N, 3)."""
    v = jnp.asarray(_sobol_directions())
    words = jnp.zeros(j.shape + (3,), jnp.uint32)
    for b in range(max(1, (per_chamber - 1).bit_length())):
        words = words ^ jnp.where((((j >> b) & 1) == 1)[:, None], v[None, :, b], jnp.uint32(0))
    words = _owen_scramble(words, seeds)
    return ((words >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))


def _chamber_directions(key: jax.Array, index: jax.Array, per_chamber: int) -> jax.Array:
    """Directions ``omega`` (N, 4) of the first four inputs for global numbers ``index``: number
    ``i`` lies in chamber ``i // per_chamber``, at point ``j = i % per_chamber`` of that
    chamber's Owen-scrambled Sobol' sequence in ``[0, 1)^3`` (:func:`_sobol_points`, a
    scramble per chamber from the key), mapped onto the chamber by its measure: the angle
    ``a`` from the diagonal by its quantile, ``xi`` uniform on the chamber's spherical
    triangle by Arvo's map ("Stratified sampling of spherical triangles", SIGGRAPH 1995),
    then permuted into the chamber. Each direction is uniform on its chamber, so the mean of
    any function over them is unbiased; the Sobol' points spread them evenly."""
    f = _chamber_frame()
    seeds = jax.random.bits(key, (len(f["perms"]), 3), jnp.uint32)
    chamber, j = index // per_chamber, (index % per_chamber).astype(jnp.uint32)
    u = _sobol_points(seeds[chamber], j, per_chamber)
    a = _sin2_quantile(u[:, 0])
    # Arvo: the sub-triangle A, B, C_hat of area u_1 * area, then a point on the arc B C_hat.
    A, B, C_perp = (jnp.asarray(f[v], jnp.float32)[None, :] for v in ("A", "B", "C_perp"))
    at_a = float(f["at_a"])
    s, t = jnp.sin(u[:, 1] * f["area"] - at_a), jnp.cos(u[:, 1] * f["area"] - at_a)
    p, q = t - math.cos(at_a), s + math.sin(at_a) * float(f["A"] @ f["B"])
    cos_ac = jnp.clip(((q * t - p * s) * math.cos(at_a) - q) / ((q * s + p * t) * math.sin(at_a)), -1.0, 1.0)
    c_hat = cos_ac[:, None] * A + jnp.sqrt(1 - cos_ac * cos_ac)[:, None] * C_perp
    cos_bc = jnp.sum(c_hat * B, axis=1)
    z = 1 - u[:, 2] * (1 - cos_bc)
    away = c_hat - cos_bc[:, None] * B
    away = away / jnp.linalg.norm(away, axis=1, keepdims=True)
    xi = (z[:, None] * B + jnp.sqrt(jnp.maximum(1 - z * z, 0.0))[:, None] * away) @ jnp.asarray(f["basis"], jnp.float32)
    omega = jnp.cos(a)[:, None] * 0.5 + jnp.sin(a)[:, None] * xi  # the diagonal e = (1, 1, 1, 1) / 2
    return jnp.take_along_axis(omega, jnp.asarray(f["perms"])[chamber], axis=1)


def _sobol_program(plan: _SobolPlan):
    """The estimate as a function of the weights and a key: the mean of the arcs over
    :func:`_chamber_directions`, over their value where every direction is right."""
    n, total = plan.spec.n, 24 * plan.per_chamber
    rank = plan.spec.task_obj.target_rank(n)
    full = math.sqrt(math.pi) * math.gamma((n - 1) / 2) / math.gamma(n / 2)
    chunks = -(-total // _ARC_CHUNK)
    size = -(-total // chunks)

    def run(params: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

        def add(acc, c):
            index = c * size + jnp.arange(size, dtype=I32)
            omega = _chamber_directions(key, jnp.minimum(index, total - 1), plan.per_chamber)
            return acc + jnp.sum(jnp.where(index < total, _arcs(p, omega, rank, n), 0.0)), None

        acc, _ = lax.scan(add, jnp.zeros((), jnp.float32), jnp.arange(chunks, dtype=I32))
        return jnp.clip(acc / (total * full), 0.0, 1.0)

    return run


Plan = _Plan | _ArcPlan | _SobolPlan


def _program_of(plan: Plan):
    """The plan's program: of the weights, and of a key too for a :class:`_SobolPlan`."""
    if isinstance(plan, _SobolPlan):
        return _sobol_program(plan)
    return _arc_program(plan) if isinstance(plan, _ArcPlan) else _program(plan)


@functools.lru_cache(maxsize=256)
def _plan_flops(plan: Plan) -> int:
    keyed = (abstract_key(),) if isinstance(plan, _SobolPlan) else ()
    return metered_flops(_program_of(plan), abstract_params(plan.spec), *keyed)


# The largest budget of the shipped suites (algzu.suites): a model whose cheapest program
# costs more is not declared.
DECLARED_UP_TO = 10**9


def _plan_at(spec: ModelSpec, dtype: str, level: _Level, gamma: float = _GAMMA_MIN) -> _Plan:
    return _plan(spec, dtype, level.m, gamma, level.grades, level.grid, level.elev, level.m_phi)


@functools.lru_cache(maxsize=256)
def best_slices(spec: ModelSpec, budget_flops: int, dtype: str = "float64") -> _Plan | None:
    """The most accurate quadrature level of 3-D slices at ``gamma = 1.3`` whose metered
    program fits, then the largest ``gamma`` at the top level (None if the cheapest does not fit)."""
    ladder = _LADDER[spec.n]  # cheapest first
    level = finest_within(ladder, lambda lv: _plan_flops(_plan_at(spec, dtype, lv)), budget_flops)
    if level is None:
        return None
    gamma = _GAMMA_MIN
    if level == ladder[-1]:
        cost = lambda g: _plan_flops(_plan_at(spec, dtype, level, g))  # noqa: E731
        gamma = max(g for g in _GAMMAS if g == _GAMMA_MIN or cost(g) <= budget_flops)
    return _plan_at(spec, dtype, level, gamma)


def _arc_plans(spec: ModelSpec) -> tuple[_ArcPlan, ...]:
    # float32: the meter charges float64 twice, and an arc has no combinatorics to get wrong.
    return tuple(_ArcPlan(spec, "float32", m_a, m_c) for m_a, m_c in _ARC_LADDER[spec.n])


# RNNs at n = 4 switch to 3-D slices where their finest level fits (RMS error ~4e-6 on the
# beyond-n3 suite's copies at 1e9, against ~1e-4 for arcs at 1e8).
_SLICES_FROM = {4: _LADDER[4][-1]}
@functools.lru_cache(maxsize=256)
def best_sobol(spec: ModelSpec, budget_flops: int) -> _SobolPlan | None:
    """The most directions per chamber whose metered program fits (None if one does not)."""
    cost = lambda k: _plan_flops(_SobolPlan(spec, k))  # noqa: E731
    k = largest_count_within(cost, cost(2) - cost(1), budget_flops)
    return _SobolPlan(spec, k) if k else None


@functools.lru_cache(maxsize=256)
def best_plan(spec: ModelSpec, budget_flops: int, dtype: str = "float64") -> Plan | None:
    """The program the budget buys: for an RNN at n = 5, exact arcs on Sobol' points (the most
    directions that fit); at n = 4, arcs on the product rule (the finest that fits) unless the
    budget affords 3-D slices' finest level; for an MLP, 3-D slices (:func:`best_slices`).
    None if the cheapest does not fit. ``dtype``: the 3-D slices'."""
    if spec.arch != "rnn":
        return best_slices(spec, budget_flops, dtype)
    if spec.n == 5:
        return best_sobol(spec, budget_flops)
    top = _SLICES_FROM.get(spec.n)
    if top is not None and _plan_flops(_plan_at(spec, dtype, top)) <= budget_flops:
        return best_slices(spec, budget_flops, dtype)
    return finest_within(_arc_plans(spec), _plan_flops, budget_flops)


@functools.lru_cache(maxsize=256)
def _cheapest_flops(spec: ModelSpec, dtype: str) -> int:
    if spec.arch != "rnn":
        return _plan_flops(_plan_at(spec, dtype, _LADDER[spec.n][0]))
    return _plan_flops(_SobolPlan(spec, 1) if spec.n == 5 else _arc_plans(spec)[0])


@register_estimator
@dataclasses.dataclass(frozen=True)
class SlicedCones(Estimator):
    """Exact cone measures on 2-D (arcs) or 3-D slices, quadrature over the rest; see the
    module docstring.

    Applies to bias-free ReLU RNNs and MLPs with n = 4, 5 on argmax, 2nd argmax and
    argmedian whose cheapest program fits in ``DECLARED_UP_TO`` FLOPs (3-D slices at n = 3
    work and are exact, but ``exact_cones`` does it for a tenth of the cost). At n = 5 RNNs
    draw their directions from the key (Sobol' points); the rules are deterministic. No input is
    ever sampled.

    Attributes:
        dtype: of the 3-D slices, ``"float64"`` (default) or ``"float32"`` (cheaper, but ~1.5%
            of slices meet digit patterns no convex face can have and are dropped). Arcs are
            float32.
    """

    name = "sliced_cones"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn", "mlp"})
    tasks = frozenset({"2nd_argmax", "argmax", "argmedian"})
    dtype: str = "float64"

    def supports(self, spec: ModelSpec) -> bool:
        # Below its cheapest program it returns the chance rate, worse than a constant
        # (issue 12): declared only where that program fits the largest budget of the
        # shipped suites, not on the zoo's d = 32 MLP (3.9e9); RNNs' cheapest arcs cost
        # 1.3e5 (n = 4, product rule) and 2.0e5 (n = 5, Sobol' points) at d = 16 (results/bench.md).
        return super().supports(spec) and 4 <= spec.n <= 5 and _cheapest_flops(spec, self.dtype) <= DECLARED_UP_TO

    def estimate(self, model: Model, budget_flops: int, key: jax.Array) -> jax.Array:
        spec = model.spec
        # Planning meters candidate programs by tracing them on shape-only weights: nothing is
        # staged into this trace (see algzu.planning.metered_flops).
        plan = best_plan(spec, int(budget_flops), self.dtype)
        if plan is None:
            return chance_estimate(spec)
        if isinstance(plan, _SobolPlan):
            return _sobol_program(plan)(model.params, key)
        return _program_of(plan)(model.params)

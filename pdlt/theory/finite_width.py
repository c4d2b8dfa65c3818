r"""Finite width at order 1/n: the four-point vertex V, the NLO kernel G^{1}, connected correlators.

Conventions (PDLT = Roberts, Yaida, Hanin, *The Principles of Deep Learning Theory*;
``derivations/README.md`` sections 1, 7, 8). ``z^(l)_{i;a}`` is the preactivation of neuron i, input a,
layer l = 1..L; ``W^(l) ~ N(0, C_W^(l)/n_{l-1})``, ``b^(l) ~ N(0, C_b^(l))``. To order 1/n:

* two-point function:  ``E[z_{i;a} z_{j;b}] = delta_ij (K_ab + G1_ab / n_{l-1})``  (G1 is PDLT's G^{1});
* connected four-point function (cumulant):
  ``E[z_{i1;a1} z_{i2;a2} z_{i3;a3} z_{i4;a4}]_c = (1/n_{l-1}) [delta_{i1i2} delta_{i3i4} V_{(a1a2)(a3a4)}
  + delta_{i1i3} delta_{i2i4} V_{(a1a3)(a2a4)} + delta_{i1i4} delta_{i2i3} V_{(a1a4)(a2a3)}]``.
  So for distinct neurons i != j: ``E[z_ia z_ib z_jc z_jd] - G_ab G_cd = V_{(ab)(cd)}/n_{l-1}``; equivalently
  ``V/n_{l-1}`` is the covariance of the stochastic metric ``G^_ab = C_b + C_W/n_{l-1} sum_j s_ja s_jb``.

Recursions implemented (``K = K^(l)``, ``r_l = n_l/n_{l-1}``, ``C_W = C_W^(l+1)``, ``s_a = sigma(z_a)``,
``<.> = <.>_{K^(l)}``; start ``V^(1) = G1^(1) = 0``, which gives ``V^(2) = C_W^2 [<s s s s> - <s s><s s>]``
at ``K^(1)`` and ``G1^(2) = 0``, both exact):

    V^(l+1)_{(ab)(cd)} = C_W^2 [<s_a s_b s_c s_d> - <s_a s_b><s_c s_d>]
                         + r_l (C_W^2/4) sum_{g,h in {a,b}} sum_{e,f in {c,d}} V_{(gh)(ef)} D^{gh}_{ab} D^{ef}_{cd}
    G1^(l+1)_{ab}      = r_l C_W [ (1/2) sum_{g,h in {a,b}} G1_{gh} D^{gh}_{ab}
                                 + (1/8) sum_{g,h,e,f in {a,b}} V_{(gh)(ef)} Q^{ghef}_{ab} ]

with the Hessian and fourth-derivative averages of the product ``s_a s_b``

    D^{gh}_{ab}   = < d^2 (s_a s_b) / dz_g dz_h >_K,      Q^{ghef}_{ab} = < d^4 (s_a s_b) / dz_g dz_h dz_e dz_f >_K.

**Derivation of this form from the book's.** The book (derivations/README.md sections 7, 8) contracts raised-index
tensors, ``sum_beta V^{(b1b2)(b3b4)} <s_a s_b (z_b1 z_b2 - K_b1b2)> <s_c s_d (z_b3 z_b4 - K_b3b4)>`` with
``V^{(..)(..)} = K^{-1}K^{-1}K^{-1}K^{-1} V``. Gaussian integration by parts (Stein's lemma, twice) gives
``<f(z) (z z^T - K)>_K = K <Hess f>_K K``: every ``z z - K`` brings two factors of K that cancel the two
``K^{-1}`` that raised the indices, leaving ``sum V_{(gh)(ef)} <d_g d_h (s_a s_b)> <d_e d_f (s_c s_d)>``, and
``d_g (s_a s_b) = 0`` unless ``g in {a, b}``. Likewise ``<f He_4(z)>_K = <d^4 f>_K`` for the fourth Hermite
tensor ``He_4 = y y y y - (K^{-1} y y: 6 terms) + (K^{-1} K^{-1}: 3 terms)``, ``y = K^{-1} z``, which is the
bracket of the book's G^{1} recursion. So the full d x d kernel is never inverted; only 2 x 2 sub-blocks
enter, through the derivative averages.

**How D and Q are computed.** They are the Hessian (4th-derivative) averages, i.e. the 2nd (4th) Hermite
tensor of the 2x2 sub-block ``S = K[{a,b},{a,b}]``: ``D = S^{-1} <f (u u^T - S)> S^{-1}`` with ``f = s_a s_b``,
``u = (z_a, z_b)``. Evaluated literally that loses ~eps cond(S)^2 (D) and ~eps cond(S)^4 (Q) to cancellation,
so instead, with ``S = L L^T`` (Cholesky), ``u = L w``, ``w ~ N(0, 1_2)``, ``d/du = L^{-T} d/dw`` and
``<d_0^i d_1^j G(L w)> = <G He_i(w_0) He_j(w_1)>`` (probabilists' Hermite polynomials), part of the derivatives
is taken analytically and only the rest by Hermite polynomials in the whitened ``w``:

* kinked activations (ReLU family: sigma'' has delta functions, sigma' only jumps, which stay integrable):
  one derivative per factor analytically (``s'_a s'_b``, ``s'_a s_b``, ...), Hermite order <= 3; the diagonal
  entries ``D^{aa}_{ab}`` by Stein's lemma on one coordinate, ``<z_a s'_a s_b> = K_aa D^{aa}_{ab} + K_ab
  <s'_a s'_b>``, which needs no inverse;
* smooth activations: two derivatives per factor analytically (sigma''), Hermite order <= 2, D direct.

Measured against references (direct-derivative quadrature for tanh, closed forms and mpmath for ReLU): D to
~1e-14 for any correlation; Q to ~1e-14 up to |rho| = 0.9999, 2e-11 (tanh) / 4e-11 (ReLU, relative) at
1 - |rho| = 1e-6, 1e-9 at 1e-8. ``a = b`` is the 1D case ``D = <s^2 (z^2 - K)>/K^2``,
``Q = <s^2 (z^4 - 6 K z^2 + 3 K^2)>/K^4``. Pairs whose correlation matrix has condition number above
:data:`SINGULAR_COND` raise :class:`~pdlt.errors.SingularKernelError` (use :func:`pdlt.delta_flow` and
:func:`pdlt.delta_finite_width` for nearly identical inputs); an input with ``K_aa = 0`` (a zero input without bias) is deterministic, its D and Q are
set to 0 (they multiply vanishing V entries).

Single-input reductions (derivations/README.md sections 7, 8): ``V' = C_W^2 (<s^4> - <s^2>^2) + r chi_par^2 V`` (since
``(C_W/2) D = C_W g'(K) = chi_par``) and ``G1' = r [chi_par G1 + (C_W/(8 K^4)) <s^2 (z^4 - 6K z^2 + 3K^2)> V]``.

Gaussian averages (``<s s s s>`` for every multiset of 1..4 distinct inputs, D, Q) are computed for all
layers before the (linear) recursions run: 1D averages of all inputs and layers in one
:func:`pdlt.gaussian.expect` call; 2D (D, Q and the moments ``<s_a^k s_b^(4-k)>``) for smooth activations in
one call per group of sub-blocks of similar scale (integrating over ``w`` with every sub-block's factor as a
separate output; resolution 0.2 in z instead of expect's 0.3, which would give ~1e-11; sub-blocks too large for
that rule's cap one by one on a ball grid at the same resolution), for kinked ones one call per sub-block (the
polar / nested rules need the kernel's kink lines); 3D and 4D (three and four distinct inputs) by the conditioned
rule of :mod:`pdlt.theory.conditioned` (:func:`~pdlt.theory.conditioned.several_inputs`), or in closed form for
scale-invariant activations (:func:`four_point_distinct`). Where a resolved grid would be too large, gaussian.expect's capped rule
is used only if its error estimate is below :data:`QUADRATURE_TOLERANCE` (a ParameterError naming ``x`` or
``C_W`` otherwise; derivations/README.md section 7).

Measured cost (one core, ``taskset -c 0``): d = 4 inputs, L = 50: tanh 0.5-0.65 s, GELU 0.7 s, ReLU 0.18 s;
d = 1, L = 1000: tanh 0.25-0.3 s (mostly :func:`pdlt.kernel_flow`), ReLU 0.09 s, GELU 0.12 s.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import gaussian
from ..activations import activation as _lookup
from ..activations import require_continuous
from ..architecture import MLP
from ..errors import (Caveat, DivergentFlowError, ParameterError, SingularKernelError, VanishingFlowError, emit,
                      first_truncation_caveat)
from . import kernel as _kernel_mod
from . import conditioned
from .conditioned import ball_parts, capped_rule, grid_points, ladder, several_inputs
from .kernel import kernel_flow, scale_exponent, scaled_activation

__all__ = [
    "SINGULAR_COND",
    "FiniteWidth",
    "finite_width",
    "LayerAverages",
    "layer_averages",
    "four_point_distinct",
    "refuse_capped",
    "truncation_caveats",
]

#: Largest condition number ``(1 + |rho|)/(1 - |rho|)`` of a 2x2 correlation sub-block accepted by
#: :func:`finite_width`; beyond it the Hermite averages D, Q are dominated by rounding.
SINGULAR_COND = 1e10


# ---------------------------------------------------------------------------------------------------
# Gaussian averages of one layer
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerAverages:
    """Gaussian averages at kernels ``K`` of shape ``(B, d, d)`` (one per layer, say).

    ``P2[b, a1, a2] = <s_a1 s_a2>``; ``P4[b, a1..a4] = <s_a1 s_a2 s_a3 s_a4>``;
    ``D[b, a1, a2, g, h] = <d_g d_h (s_a1 s_a2)>`` (zero unless ``g, h in {a1, a2}``);
    ``Qd[b, a] = <d^4 (s_a^2)/dz_a^4>``; ``Qp[b, p, i, j, k, l] = <d^4 (s_a s_c)/du_i du_j du_k du_l>`` for the
    pair ``p = (a, c) = pairs[p]`` (a < c), ``u = (z_a, z_c)``, ``i..l in {0, 1}``.
    """

    K: np.ndarray
    P2: np.ndarray
    P4: np.ndarray
    D: np.ndarray
    Qd: np.ndarray
    Qp: np.ndarray
    pairs: tuple[tuple[int, int], ...]

    @property
    def C4(self) -> np.ndarray:
        """``<s_a s_b s_c s_d> - <s_a s_b><s_c s_d>``, ``(B, d, d, d, d)``."""
        return self.P4 - self.P2[:, :, :, None, None] * self.P2[:, None, None, :, :]

    def Q_contract(self, V) -> np.ndarray:
        """``sum_{g,h,e,f in {a,b}} V_{(gh)(ef)} Q^{ghef}_{ab}`` for ``V`` (B, d, d, d, d); returns (B, d, d)."""
        B, d = self.P2.shape[:2]
        out = np.zeros((B, d, d))
        ar = np.arange(d)
        out[:, ar, ar] = self.Qd * V[:, ar, ar, ar, ar]
        for p, (a, c) in enumerate(self.pairs):
            ix = np.array([a, c])
            sub = V[:, ix[:, None, None, None], ix[None, :, None, None], ix[None, None, :, None], ix[None, None, None, :]]
            val = np.einsum("bijkl,bijkl->b", sub, self.Qp[:, p])
            out[:, a, c] = out[:, c, a] = val
        return out


def _singular_message(l, a, b, rho, cond):
    where = f" at layer l = {l}" if l is not None else ""
    return (
        f"the 2x2 kernel of inputs {a} and {b}{where} is (nearly) singular: correlation {rho:.15g}, condition "
        f"number {cond:.3g} > {SINGULAR_COND:g}. Identical or (anti)parallel inputs, or a flow that collapses "
        "them, make the Hermite averages of the 1/n recursions ill-defined; drop duplicate inputs, or for two "
        "nearby inputs use the delta-expansion: pdlt.delta_flow(net, x0, dx) for K and "
        "pdlt.delta_finite_width(net, x0, dx) for V and G1 (PDLT section 5.1)"
    )


def _hermite_components(act, u0, u1, w0, w1):
    """Integrand of the pair averages at ``u = (z_a, z_c) = L w``, stacked last (:func:`_hermite_list`)."""
    return np.stack(_hermite_list(act, u0, u1, w0, w1), axis=-1)


def _hermite_list(act, u0, u1, w0, w1):
    """The components of the integrand of the pair averages at ``u = (z_a, z_c) = L w``, a list; see
    :func:`_derivatives_from_hermite`. The last four components are the moments
    ``[s_a s_c, s_a^3 s_c, s_a^2 s_c^2, s_a s_c^3]``.

    Kinked activations: one derivative of each factor is taken analytically (sigma' has at most jumps, so the
    kinks stay integrable), the rest by Hermite polynomials in the whitened ``w``; with ``Gij = s^(i)_a s^(j)_c``:
    ``[G11, z_a G10, z_c G01, G10 He_k(w0) He_{3-k}(w1) (k = 0..3), G11 He_k(w0) He_{2-k}(w1) (k = 0..2),
    G01 He_3(w1)]`` (Hermite order <= 3; the diagonal D entries use Stein's lemma on one coordinate,
    ``<z_a G10> = K_aa <d_a G10> + K_ac <d_c G10>``, which needs no inverse at all).
    Smooth activations: two derivatives of each factor analytically (sigma''), Hermite order <= 2:
    ``[G20, G11, G02, G22, G20 He_k(w0) He_{2-k}(w1) (k = 0..2), G21 w0, G21 w1, G12 w1, G02 He_2(w1)]``.
    """
    sa, sc = act(u0), act(u1)
    da, dc = act.d1(u0), act.d1(u1)
    h0, h1 = gaussian.hermite_e(w0), gaussian.hermite_e(w1)
    ac = sa * sc
    moments = [ac, ac * sa * sa, ac * ac, ac * sc * sc]
    g11 = da * dc
    if act.kinks:
        g10, g01 = da * sc, sa * dc
        comps = [g11, g10 * u0, g01 * u1,
                 g10 * h1[3], g10 * w0 * h1[2], g10 * h0[2] * w1, g10 * h0[3],
                 g11 * h1[2], g11 * w0 * w1, g11 * h0[2],
                 g01 * h1[3]]
    else:
        ea, ec = act.d2(u0), act.d2(u1)
        g20, g02, g21, g12 = ea * sc, sa * ec, ea * dc, da * ec
        comps = [g20, g11, g02, ea * ec,
                 g20 * h1[2], g20 * w0 * w1, g20 * h0[2],
                 g21 * w0, g21 * w1, g12 * w1, g02 * h1[2]]
    return comps + moments


# The whitened 2D averages of smooth activations: sub-blocks whose factor columns have similar scales share
# one gaussian.expect call (scales rounded up to a ladder ~20% apart); resolution h_z in z units.
_S_LADDER_RATIO = 1.2
_HZ = 0.2  # z-resolution of the whitened 2D trapezoid (0.3, the expect default for 2D, gives ~1e-11 here)
_HZ_EXPECT = 0.3  # gaussian.expect's default 2D resolution, which the kernel passed to it is scaled against


def _nh(act):
    """Number of pair-average components of :func:`_hermite_components`."""
    return 15


def _pair_hermite_smooth(act, l00, l10, l11):
    """``(H, err)``: ``H`` the averages ``<G(L w) He(w)>`` over ``w ~ N(0, 1_2)`` for smooth activations, many
    sub-blocks per call, of (N,) arrays ``l00, l10, l11``; ``err`` (N,) the estimated relative error where the rule
    is capped (0 elsewhere).

    Column k of the factor ``L`` moves ``u = L w`` by at most ``s_k = max_i |L_ik|`` per unit of ``w_k``, so the
    integrand varies on the scale ``1/s_k`` along ``w_k`` (``s_1 = l11`` is small for correlated inputs). The
    sub-blocks are grouped by ``(s_0, s_1)`` rounded up to a ladder ``S``, and each group is one call of
    :func:`gaussian.expect` with the kernel ``diag(c S_0, c S_1)^2``, ``c = 0.3/0.2``: its trapezoidal rule then
    spaces the nodes ``0.2/S_k`` in ``w_k``, and the integrand maps ``z -> w = z/(c S) -> u = L w`` for every
    sub-block of the group as separate output components. That rule caps its nodes (from K ~ 55); larger sub-blocks are
    summed one by one on the ball grid of :mod:`pdlt.theory.conditioned` at the same spacing (a capped rule was
    silently off: tanh, correlation 0.6, K = 1000: Q 5e-3), up to its :data:`~pdlt.theory.conditioned.MAX_POINTS`
    (K ~ 5e3, more for correlated inputs); beyond, the capped rule with its own error estimate
    (:func:`pdlt.theory.conditioned.capped_rule`). The capped sub-blocks go first, smallest first, and stop at the
    first whose error is above :data:`QUADRATURE_TOLERANCE`: every large sub-block not computed yet, capped or on the
    ball grid, is then NaN (the caller refuses the call).
    """
    N = l00.size
    out = np.empty((N, _nh(act)))
    err = np.zeros(N)
    s = np.stack([np.maximum(np.abs(l00), np.abs(l10)), np.abs(l11)], axis=-1)
    lr = math.log(_S_LADDER_RATIO)
    key = np.ceil(np.log(np.maximum(s, 1e-150)) / lr - 1e-9).astype(np.int64)  # S = ratio^key >= s
    keys, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    c = _HZ_EXPECT / _HZ
    large = []
    for g, kk in enumerate(keys):
        sel = np.nonzero(inv == g)[0]
        S = np.exp(kk * lr) * c
        m = np.ceil(9.0 / np.minimum(0.5, _HZ_EXPECT / S))
        if np.max(m) > _PAIR_GROUP_M:
            large.extend(sel.tolist())
            continue
        pts = min(int(math.pi * m[0] * m[1]) + 1, 1 << 17)  # points per integrand call inside expect
        per = max(1, int(4e6 // (pts * _nh(act))))  # sub-blocks per call: integrand output <= ~32 MB
        for s0 in range(0, sel.size, per):
            idx = sel[s0:s0 + per]
            a0, a1, a2 = l00[idx], l10[idx], l11[idx]

            def f(z, a0=a0, a1=a1, a2=a2, S=S):
                w0, w1 = z[..., 0:1] / S[0], z[..., 1:2] / S[1]  # (b, n, 1): broadcast against the group
                u0, u1 = a0 * w0, a1 * w0 + a2 * w1
                w0, w1 = np.broadcast_to(w0, u0.shape), np.broadcast_to(w1, u0.shape)
                comp = _hermite_components(act, u0, u1, w0, w1)
                return comp.reshape(comp.shape[:-2] + (-1,))

            val = gaussian.expect(f, np.diag(S * S))
            out[idx] = np.asarray(val).reshape(idx.size, -1)
    # The capped rules first, smallest first, stopping at the first above tolerance: the caller refuses the call
    # there, and neither the larger capped sub-blocks nor the ball grids below the cap (a second or two each: 13 s of
    # a refused 19-s call of a chaotic flow) need be computed.
    large.sort(key=lambda k: max(abs(l00[k]), abs(l10[k]), abs(l11[k])))
    ms = {k: _pair_ladders(l00[k], l10[k], l11[k]) for k in large}
    capped = [k for k in large if grid_points(ms[k]) > conditioned.MAX_POINTS]  # (read here: a test may move it)
    for n, k in enumerate(capped):
        out[k], err[k] = _pair_hermite_capped(act, l00[k], l10[k], l11[k])
        if err[k] > QUADRATURE_TOLERANCE:
            done = set(capped[:n + 1])
            out[[j for j in large if j not in done]] = np.nan
            return out, err
    on_ball = set(large) - set(capped)
    for k in large:
        if k in on_ball:
            out[k] = _pair_hermite_ball(act, l00[k], l10[k], l11[k], ms[k])
    return out, err


#: largest half-width of the grouped rule of :func:`_pair_hermite_smooth` (gaussian.expect's cap in 2D)
_PAIR_GROUP_M = gaussian.default_rule_limit(2)[1] // 2


def _pair_ladders(a0, a1, a2):
    """Half-widths (in nodes) of the ball grid of one large sub-block (floats ``l00, l10, l11``) at spacing
    ``_HZ`` in ``u``."""
    return tuple(ladder(math.ceil(min(9.0 / min(0.5, _HZ / s), 1e9))) for s in (max(abs(a0), abs(a1)), abs(a2)))


def _pair_hermite_ball(act, a0, a1, a2, ms):
    """:func:`_pair_hermite_smooth` for one large sub-block on the ball grid of half-widths ``ms``: ``H`` (15,)."""
    H = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for pts, _, W, _ in ball_parts(ms):
            w0, w1 = pts
            # one dot product per component (stacking them last first was half of the cost)
            H = H + np.array([c @ W for c in _hermite_list(act, a0 * w0, a1 * w0 + a2 * w1, w0, w1)])
    return H


def _pair_hermite_capped(act, a0, a1, a2):
    """:func:`_pair_hermite_smooth` for one sub-block beyond the ball grid's limit: the capped rule with its own
    error estimate, ``(H, err)``."""
    S = np.array([[a0 * a0, a0 * a1], [a0 * a1, a1 * a1 + a2 * a2]])

    def f(u):
        w0 = u[..., 0] / a0
        w1 = (u[..., 1] - a1 * w0) / a2
        return _hermite_components(act, u[..., 0], u[..., 1], w0, w1)

    val, err = capped_rule(f, S[None])
    return val[0], err[0]


def refuse_capped(act, what, err, Ks, layers):
    """The ParameterError of :func:`unresolved_quadrature` for the kernel of ``Ks`` ``(G, q, q)`` with the largest
    ``err`` (G,) above :data:`QUADRATURE_TOLERANCE`, if any; ``layers`` (G,) their layers (None: kernel numbers)."""
    g = int(np.argmax(err))
    if err[g] <= QUADRATURE_TOLERANCE:
        return
    where = f"layer l = {layers[g]}" if layers is not None else f"kernel {g}"
    raise unresolved_quadrature(f"{act.name} {what}", where, float(np.max(np.diagonal(Ks[g]))),
                                f"beyond the grid limit of the resolved rule, the capped rule moves by {err[g]:.1e} at "
                                f"2/3 of its nodes (above {QUADRATURE_TOLERANCE:g})", layers is None or layers[g] == 1)


def _pair_hermite_kinked(act, S, l00, l10, l11):
    """The same averages for kinked activations: one :func:`gaussian.expect` call per sub-block ``S`` (N, 2, 2)
    (its polar / nested rule splits at the kink lines of that sub-block)."""
    N = S.shape[0]
    out = np.empty((N, _nh(act)))
    for k in range(N):
        a0, a1, a2 = l00[k], l10[k], l11[k]

        def f(u, a0=a0, a1=a1, a2=a2):
            w0 = u[..., 0] / a0
            w1 = (u[..., 1] - a1 * w0) / a2
            return _hermite_components(act, u[..., 0], u[..., 1], w0, w1)

        out[k] = gaussian.expect(f, S[k], kinks=act.kinks)
    return out


def _derivatives_from_hermite(H, l00, l10, l11, kinked):
    """``D_u`` (N, 2, 2) and ``Q_u`` (N, 2, 2, 2, 2) from the averages ``H`` of :func:`_hermite_components`.

    With ``A = L^{-T}`` (``d/du = A d/dw``; ``A_00 = 1/l00``, ``A_01 = -l10/(l00 l11)``, ``A_11 = 1/l11``) and
    ``<d_0^i d_1^j G(Lw)> = <G He_i(w0) He_j(w1)>``: ``d_a = A_00 d_0 + A_01 d_1``, ``d_c = A_11 d_1``.
    Rounding: a Hermite order k costs a relative error ~ eps cond(S)^(k/2) of that component, so D is exact to
    rounding and Q ~eps cond^(3/2) (kinked: but there Q itself grows like cond^(1/2) or faster, the measured
    relative error is ~1e-10 at cond 1e7) or ~eps cond (smooth).
    """
    a, b, c = 1.0 / l00, -l10 / (l00 * l11), 1.0 / l11
    N = H.shape[0]
    D = np.empty((N, 2, 2))
    q = np.empty((N, 5))  # Q components by the number of c-derivatives
    if kinked:
        kaa, kcc, kac = l00 * l00, l10 * l10 + l11 * l11, l00 * l10
        D[:, 0, 0] = (H[:, 1] - kac * H[:, 0]) / kaa  # <d_a (s'_a s_c)> by Stein on z_a
        D[:, 0, 1] = D[:, 1, 0] = H[:, 0]  # <s'_a s'_c>
        D[:, 1, 1] = (H[:, 2] - kac * H[:, 0]) / kcc  # <d_c (s_a s'_c)>
        q[:, 0] = b**3 * H[:, 3] + 3 * a * b**2 * H[:, 4] + 3 * a**2 * b * H[:, 5] + a**3 * H[:, 6]  # d_a^3 G10
        q[:, 1] = b**2 * H[:, 7] + 2 * a * b * H[:, 8] + a**2 * H[:, 9]  # d_a^2 G11
        q[:, 2] = c * (a * H[:, 8] + b * H[:, 7])  # d_a d_c G11
        q[:, 3] = c**2 * H[:, 7]  # d_c^2 G11
        q[:, 4] = c**3 * H[:, 10]  # d_c^3 G01
    else:
        D[:, 0, 0] = H[:, 0]  # <s''_a s_c>
        D[:, 0, 1] = D[:, 1, 0] = H[:, 1]  # <s'_a s'_c>
        D[:, 1, 1] = H[:, 2]  # <s_a s''_c>
        q[:, 0] = b**2 * H[:, 4] + 2 * a * b * H[:, 5] + a**2 * H[:, 6]  # d_a^2 G20
        q[:, 1] = a * H[:, 7] + b * H[:, 8]  # d_a G21
        q[:, 2] = H[:, 3]  # G22
        q[:, 3] = c * H[:, 9]  # d_c G12
        q[:, 4] = c**2 * H[:, 10]  # d_c^2 G02
    Q = np.empty((N, 2, 2, 2, 2))
    for idx in itertools.product((0, 1), repeat=4):
        Q[(slice(None),) + idx] = q[:, sum(idx)]
    return D, Q


def in_star(S, core) -> bool:
    """Whether the input set ``S`` has at most one input at index ``>= core`` (``core=None``: every set). Every
    order-1/n statistic of a tuple of inputs follows from the averages over that tuple's inputs alone, so a
    computation restricted to these sets is exact on the tuples that have at most one input outside the core."""
    return core is None or sum(1 for a in S if a >= core) <= 1


def star_tuples(d: int, core, k: int = 4) -> np.ndarray:
    """The index tuples ``(T, k)`` over ``d`` inputs whose set of inputs is in the star of :func:`in_star`."""
    idx = np.stack(np.meshgrid(*[np.arange(d)] * k, indexing="ij"), axis=-1).reshape(-1, k)
    if core is None:
        return idx
    out = idx >= core
    hi = np.where(out, idx, -1).max(axis=1)
    lo = np.where(out, idx, d).min(axis=1)
    return idx[(hi < 0) | (hi == lo)]


#: the largest relative change of a layer's one-input averages (V's <s^4> - <s^2>^2, the Hermite D and Q) between the
#: default quadrature and one of half its nodes that is accepted, where the kernel exceeds what the rule resolves
QUADRATURE_TOLERANCE = 1e-6


def unresolved_quadrature(what: str, where: str, K: float, finding: str, first: bool) -> ParameterError:
    """The refusal of averages that the quadrature does not resolve (this module's and
    :mod:`pdlt.theory.ntk_statistics`' probes and grid limits): ``what`` at ``where`` (variance ``K``), ``finding``
    what was measured. It names ``x`` where the kernel is the inputs' own (``first``: layer 1), else ``C_W``."""
    advice = ("Rescale the inputs x so that the preactivations' variances are of order 1" if first else
              "The kernel grew over the layers: move C_W, C_b toward criticality (pdlt.criticality) or reduce the "
              "depth")
    return ParameterError(f"the Gaussian averages of {what} at {where} (variance K = {K:.3g}) are not resolved by the "
                          f"quadrature: {finding}. {advice}", "x" if first else "C_W")


def _check_resolution(act, diag, M, terms, layers) -> None:
    """ParameterError naming ``x`` where a variance in ``diag`` ``(B, d)`` exceeds the default 1D trapezoid's
    nominal range (:func:`pdlt.gaussian.default_rule_limit`, K ~ 7.7e6; beyond it gaussian.expect takes its 1-D panel
    rule) and the one-input quantities built from the moments ``M`` (``terms`` as in :func:`layer_averages`) carry
    an estimated error (the rule's error estimate, propagated) above :data:`QUADRATURE_TOLERANCE`: V relative to
    itself, the Hermite D and Q relative to the size of their terms. Bounded activations need it: their V at large K
    is a small difference of O(1) averages (tanh: V^(2) ~ K^(-1/2)), which an unresolved sigma loses (erf at K = 1e8:
    1.8 % on the capped trapezoid); the panel rule resolves the registered activations at any K, sin excepted."""
    limit, _nodes = gaussian.default_rule_limit(1)
    big = diag > limit
    if act.kinks or not np.any(big):
        return
    k = diag[big]
    _m, E = gaussian.moments_1d(act, k, terms, return_error=True)
    m = M[big]
    m0 = np.abs(m[..., 0])
    # V's connected average, the Hermite D and Q of layer_averages, at variances k; each error bounded from the
    # averages' errors
    err = np.stack([E[..., 3] + 2.0 * m0 * E[..., 0], (E[..., 1] / k + E[..., 0]) / k,
                    ((E[..., 2] / k + 6.0 * E[..., 1]) / k + 3.0 * E[..., 0]) / k / k], axis=-1)
    # V is a vertex in its own right: its own relative error. D and Q multiply other terms: their error against the
    # size of their terms, <s^2>/K and <s^2>/K^2 (GELU's Q is a near-cancellation at large K, ~1e-12 of that, with no
    # digit of its own)
    scale = np.stack([np.abs(m[..., 3] - m[..., 0] ** 2), m0 / k, m0 / k / k], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, err / scale, np.where(err == 0, 0.0, np.inf))
    worst = int(np.argmax(np.max(rel, axis=-1)))
    e = float(np.max(rel[worst]))
    if not e <= QUADRATURE_TOLERANCE:
        layer = np.nonzero(big)[0][worst]
        where = f"layer l = {layers[layer]}" if layers is not None else f"kernel {layer}"
        raise unresolved_quadrature(act.name, where, float(k[worst]), f"V or the Hermite averages carry an estimated "
                                    f"relative error of {e:.1e} (above {QUADRATURE_TOLERANCE:g})",
                                    layers is None or layers[layer] == 1)


def layer_averages(act, K, *, layers=None, core=None) -> LayerAverages:
    """All Gaussian averages the 1/n recursions need at kernels ``K`` (``(d, d)`` or ``(B, d, d)``).

    ``layers``: optional layer numbers (length B) used in error messages only. ``core``: compute only the averages
    over input sets with at most one input at index ``>= core`` (:func:`in_star`; the others are left 0). Raises
    :class:`~pdlt.errors.SingularKernelError` for a nearly singular 2x2 sub-block (see :data:`SINGULAR_COND`).
    """
    act = _lookup(act)
    K = np.asarray(K, dtype=np.float64)
    single = K.ndim == 2
    K = gaussian.check_kernel(K[None] if single else K)
    B, d = K.shape[0], K.shape[-1]
    ar = np.arange(d)
    diag = K[:, ar, ar]  # (B, d)

    # ---- 1D: one call for every input of every kernel
    terms = ((2, 0, 0), (2, 0, 2), (2, 0, 4), (4, 0, 0))
    M = gaussian.moments_1d(act, diag, terms)  # <s^2 z^{0,2,4}>, <s^4>
    _check_resolution(act, diag, M, terms, layers)
    m0, m2, m4, s4 = M[..., 0], M[..., 1], M[..., 2], M[..., 3]
    pos = diag > 0
    kk = np.where(pos, diag, 1.0)
    D1 = np.where(pos, (m2 / kk - m0) / kk, 0.0)  # <s^2 (z^2 - K)>/K^2
    Qd = np.where(pos, ((m4 / kk - 6.0 * m2) / kk + 3.0 * m0) / kk / kk, 0.0)  # <s^2 He_4>/K^4 (z units)

    P2 = np.zeros((B, d, d))
    P2[:, ar, ar] = m0
    D = np.zeros((B, d, d, d, d))
    D[:, ar, ar, ar, ar] = D1
    pairs = tuple(p for p in itertools.combinations(range(d), 2) if in_star(p, core))
    Qp = np.zeros((B, len(pairs), 2, 2, 2, 2))
    lookup: dict[tuple[int, ...], np.ndarray] = {(a, a, a, a): s4[:, a] for a in range(d)}

    if pairs:
        ia = np.array([p[0] for p in pairs])
        ic = np.array([p[1] for p in pairs])
        sub = np.empty((B, len(pairs), 2, 2))
        sub[..., 0, 0], sub[..., 1, 1] = K[:, ia, ia], K[:, ic, ic]
        sub[..., 0, 1] = sub[..., 1, 0] = K[:, ia, ic]

        # ---- 2D: Hermite averages (D, Q) and moments, sub-blocks with two nonzero variances
        pm = np.empty((B, len(pairs), 4))
        live = (sub[..., 0, 0] > 0) & (sub[..., 1, 1] > 0)
        bi, pi = np.nonzero(live)
        if bi.size:
            l00, l10, l11 = _factors_for(K, bi, pi, pairs, layers)
            if act.kinks:
                H = _pair_hermite_kinked(act, sub[bi, pi], l00, l10, l11)
            else:
                H, err = _pair_hermite_smooth(act, l00, l10, l11)
                refuse_capped(act, "at two inputs", err, sub[bi, pi],
                               None if layers is None else [layers[b] for b in bi])
            Du, Qu = _derivatives_from_hermite(H, l00, l10, l11, bool(act.kinks))
            pm[bi, pi] = H[:, -4:]
            for n, (b, p) in enumerate(zip(bi, pi)):
                a, c = pairs[p]
                ix = (a, c)
                for i, j in itertools.product((0, 1), repeat=2):
                    D[b, a, c, ix[i], ix[j]] = D[b, c, a, ix[i], ix[j]] = Du[n, i, j]
            Qp[bi, pi] = Qu
        bz, pz = np.nonzero(~live)
        if bz.size:  # a deterministic (zero-variance) input: moments only, D = Q = 0

            def f2(z):
                a, c = act(z[..., 0]), act(z[..., 1])
                ac = a * c
                return np.stack([ac, ac * a * a, ac * ac, ac * c * c], axis=-1)

            pm[bz, pz] = np.asarray(gaussian.expect(f2, sub[bz, pz], kinks=act.kinks)).reshape(-1, 4)
        for p, (a, c) in enumerate(pairs):
            P2[:, a, c] = P2[:, c, a] = pm[:, p, 0]
            lookup[(a, a, a, c)] = pm[:, p, 1]
            lookup[(a, a, c, c)] = pm[:, p, 2]
            lookup[(a, c, c, c)] = pm[:, p, 3]

    # ---- 3D: every triple of distinct inputs, one call (closed form for scale-invariant activations)
    triples = tuple(t for t in itertools.combinations(range(d), 3) if in_star(t, core))
    if triples:
        it = np.array(triples)
        K3 = K[:, it[:, :, None], it[:, None, :]]  # (B, T, 3, 3)
        t3 = _three_point(act, K3, layers)  # (B, T, 3)
        for t, (a, b_, c) in enumerate(triples):
            lookup[(a, a, b_, c)] = t3[:, t, 0]
            lookup[(a, b_, b_, c)] = t3[:, t, 1]
            lookup[(a, b_, c, c)] = t3[:, t, 2]

    # ---- 4D: every quadruple of distinct inputs
    for q in itertools.combinations(range(d), 4):
        if in_star(q, core):
            iq = np.array(q)
            lookup[q] = four_point_distinct(act, K[:, iq[:, None], iq[None, :]], layers=layers)

    P4 = np.zeros((B,) + (d,) * 4)
    for idx in star_tuples(d, core).tolist():
        P4[(slice(None),) + tuple(idx)] = lookup[tuple(sorted(idx))]

    out = LayerAverages(K=K, P2=P2, P4=P4, D=D, Qd=Qd, Qp=Qp, pairs=pairs)
    return out


def _factors_for(K, bi, pi, pairs, layers):
    """Pair Cholesky factors for the (kernel, pair) list ``(bi, pi)``, with the singularity check."""
    ia = np.array([pairs[p][0] for p in pi])
    ic = np.array([pairs[p][1] for p in pi])
    s00, s11, s01 = K[bi, ia, ia], K[bi, ic, ic], K[bi, ia, ic]
    rho = np.clip(s01 / (np.sqrt(s00) * np.sqrt(s11)), -1.0, 1.0)
    one_m = 1.0 - np.abs(rho)
    with np.errstate(divide="ignore"):
        cond = np.where(one_m > 0, (1.0 + np.abs(rho)) / np.where(one_m > 0, one_m, 1.0), np.inf)
    bad = cond > SINGULAR_COND
    if np.any(bad):
        n = int(np.argmax(bad))
        lay = None if layers is None else layers[bi[n]]
        raise SingularKernelError(_singular_message(lay, int(ia[n]), int(ic[n]), rho[n], cond[n]))
    l00 = np.sqrt(s00)
    l10 = s01 / l00
    l11 = np.sqrt(s11 * (1.0 - rho) * (1.0 + rho))
    return l00, l10, l11


# ---------------------------------------------------------------------------------------------------
# three distinct inputs
# ---------------------------------------------------------------------------------------------------


def _three_point(act, K3, layers=None):
    """``[<s_0^2 s_1 s_2>, <s_0 s_1^2 s_2>, <s_0 s_1 s_2^2>]`` for kernels ``K3`` (..., 3, 3) (``(B, T, 3, 3)`` with
    ``layers`` (B,) for error messages). Smooth sigma: :func:`~pdlt.theory.conditioned.several_inputs` (the default 3D
    rule alone was 1e-6 off for tanh at K ~ 30, 2 % at K ~ 1000); scale-invariant: closed forms."""
    K3 = np.asarray(K3, dtype=np.float64)
    out = np.empty(K3.shape[:-2] + (3,))
    diag = np.diagonal(K3, axis1=-2, axis2=-1)
    closed = np.all(diag > 0, axis=-1) if act.scale_invariant else np.zeros(K3.shape[:-2], dtype=bool)
    if np.any(closed):
        out[closed] = act.three_point(K3[closed])
    rest = ~closed
    if np.any(rest):

        def f3(z):
            s = act(z)
            s012 = s[..., 0] * s[..., 1] * s[..., 2]
            return np.stack([s012 * s[..., 0], s012 * s[..., 1], s012 * s[..., 2]], axis=-1)

        if act.kinks:
            out[rest] = np.asarray(gaussian.expect(f3, K3[rest], kinks=act.kinks)).reshape(-1, 3)
        else:
            local = [[(0, 0), (0,), (0,)], [(0,), (0, 0), (0,)], [(0,), (0,), (0, 0)]]
            out[rest], err = several_inputs(act, K3[rest], local, f3, singular_cond=SINGULAR_COND)
            lay = None
            if layers is not None and K3.ndim == 4:
                lay = np.broadcast_to(np.asarray(layers)[:, None], K3.shape[:2])[rest]
            refuse_capped(act, "at three inputs", err, K3[rest], lay)
    return out


# ---------------------------------------------------------------------------------------------------
# four distinct inputs
# ---------------------------------------------------------------------------------------------------


def four_point_distinct(act, K, *, layers=None) -> np.ndarray:
    """``<s(z_0) s(z_1) s(z_2) s(z_3)>_K`` for kernels ``K`` of shape ``(..., 4, 4)`` (four distinct inputs).

    :func:`gaussian.expect`'s default 4D rules are not accurate enough here (smooth: 2e-9 at K ~ 1, 3e-7 at
    K ~ 2, 1e-5 at K ~ 4 for tanh^4; nested: 1e-7 .. 1e-5 for correlations 0.95 .. 0.999) and cost 0.05-0.2 s
    per kernel. Instead:

    * smooth activations: one coordinate conditioned on the other three, whose 3D trapezoid keeps its spacing in z
      (:func:`pdlt.theory.conditioned.conditioned_products`; singular kernels and deterministic inputs included):
      ~1e-13 against a finer rule for tanh at K ~ 25, 10-20 ms per kernel at K ~ 1; beyond its grid limit (K ~ 25-50
      by the correlations) the default 4D rule, refused (ParameterError
      naming ``x`` or ``C_W``; ``layers`` (one per kernel) name the layer) where its error estimate exceeds
      :data:`QUADRATURE_TOLERANCE`;
    * scale-invariant activations (``s = p z + q|z|``): closed forms for all terms but ``q^4 <|z_0 z_1 z_2 z_3|>``,
      which is a 1D path integral of closed forms (:meth:`pdlt.Activation.four_point`); agreement with the
      nested rule at fine node counts ~1e-13, self-convergence ~1e-15 up to 1 - rho = 5e-9; ~4 ms per kernel;
    * other kinked activations: the default 4D rule of :func:`gaussian.expect`.
    """
    act = _lookup(act)
    K = gaussian.check_kernel(K)
    shape = K.shape[:-2]
    Kf = K.reshape(-1, 4, 4)
    out = np.empty(Kf.shape[0])

    def f4(z):
        s = act(z)
        return s[..., 0] * s[..., 1] * s[..., 2] * s[..., 3]

    todo = []
    diag_ok = np.all(np.diagonal(Kf, axis1=-2, axis2=-1) > 0, axis=-1)
    closed = diag_ok if act.scale_invariant else np.zeros(Kf.shape[0], dtype=bool)
    if np.any(closed):
        try:
            with np.errstate(all="ignore"):
                vals = act.four_point(Kf[closed])
        except np.linalg.LinAlgError:  # an exactly singular sub-block: the quadrature rule handles it
            vals = np.full(int(np.sum(closed)), np.nan)
        fin = np.isfinite(vals)
        out[np.nonzero(closed)[0][fin]] = vals[fin]
        closed[np.nonzero(closed)[0][~fin]] = False
    if act.kinks:
        todo = list(np.nonzero(~closed)[0])
    elif np.any(~closed):
        vals, err = several_inputs(act, Kf[~closed], [[(0,), (0,), (0,), (0,)]], lambda z: f4(z)[..., None],
                                   singular_cond=SINGULAR_COND)
        out[~closed] = vals[:, 0]
        lay = None if layers is None else np.broadcast_to(np.asarray(layers).reshape(-1), Kf.shape[:1])[~closed]
        refuse_capped(act, "at four inputs", err, Kf[~closed], lay)
    if todo:
        out[todo] = np.asarray(gaussian.expect(f4, Kf[todo], kinks=act.kinks)).reshape(-1)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------------
# the flow through all layers
# ---------------------------------------------------------------------------------------------------


_TINY = float(np.finfo(np.float64).tiny)


def _layer_scale(arr, e):
    """Per-layer ``2^e_l * max|arr[l]|`` (as exact exponents: no overflow), and whether it leaves float64's
    normal range: returns ``(too_small, too_large)`` boolean arrays of shape (L,)."""
    m = np.max(np.abs(arr.reshape(arr.shape[0], -1)), axis=1) if arr.size else np.zeros(arr.shape[0])
    mant, ex = np.frexp(m)  # m = mant 2^ex, mant in [0.5, 1)
    tot = ex + e  # max|raw| = mant 2^tot
    too_large = (m > 0) & (tot > 1024)
    too_small = (m > 0) & (tot < -1021)  # below the smallest normal 2^-1022
    return too_small, too_large


@dataclass(frozen=True, init=False)
class FiniteWidth:
    """Order-1/n statistics of the preactivations of every layer (PDLT conventions, layers l = 1..L).

    Arrays hold layer l at index l - 1, float64:

    * ``K``  ``(L, d, d)``: the leading-order kernel ``K^(l)_{ab}``;
    * ``G1`` ``(L, d, d)``: PDLT's ``G^{1}(l)_{ab}``, so that ``E[z_{i;a} z_{i;b}] = K_ab + G1_ab/n_{l-1} + O(1/n^2)``;
    * ``V``  ``(L, d, d, d, d)``: the four-point vertex ``V^(l)_{(a1a2)(a3a4)}`` (``V[l-1, a1, a2, a3, a4]``),
      symmetric within each pair and under exchange of the pairs.

    **Storage is scale-free.** Far from criticality K decays (ordered phase) or grows (exploding side)
    exponentially with depth, and V ~ K^2 leaves float64's range long before K does. So what is stored is
    ``K_scaled = K / 2^e``, ``G1_scaled = G1 / 2^e``, ``V_scaled = V / 4^e`` with the per-layer exponents
    ``log2_scale`` ``(L,)`` (ints; 0 for kernels within 2^+-32, where the arrays are the raw ones bit for bit).
    ``K``, ``G1``, ``V`` are properties that return the raw arrays and raise
    :class:`~pdlt.errors.VanishingFlowError` / :class:`~pdlt.errors.DivergentFlowError` naming the first layer
    whose values are outside float64's normal range (never a silent 0 or inf); the normalized observables
    (:meth:`normalized_vertex`, :meth:`kurtosis`, :meth:`normalized_G1`, :meth:`normalized_four_point`) are
    always representable.

    The methods return the predicted observables of layer l (what Monte Carlo measures), normalized with
    ``n_{l-1} = widths[l-1]`` (for l = 1, n_0, where V = G1 = 0).

    ``caveats``: :class:`~pdlt.errors.Caveat` s of kind ``"truncation"`` where the 1/n correction is not small
    against the leading term (:func:`truncation_caveats`); computed at construction unless given.

    Construct either from raw arrays ``FiniteWidth(net, x, K, G1, V)`` (as before) or from the scaled ones
    (keywords ``K_scaled, G1_scaled, V_scaled, log2_scale``); :meth:`with_net` re-targets the same K, G1, V to
    another network of equal depth (e.g. another uniform hidden width) with its own caveats.
    """

    net: MLP
    x: np.ndarray
    K_scaled: np.ndarray
    G1_scaled: np.ndarray
    V_scaled: np.ndarray
    log2_scale: np.ndarray
    caveats: tuple = ()

    def __init__(self, net, x, K=None, G1=None, V=None, *, K_scaled=None, G1_scaled=None, V_scaled=None,
                 log2_scale=None, caveats=None):
        if K_scaled is None:
            if K is None or G1 is None or V is None:
                raise ParameterError("FiniteWidth needs K, G1, V (raw) or K_scaled, G1_scaled, V_scaled, log2_scale")
            K_scaled, G1_scaled, V_scaled = (np.asarray(a, dtype=np.float64) for a in (K, G1, V))
            log2_scale = np.zeros(K_scaled.shape[0], dtype=np.int64)
        elif log2_scale is None:
            log2_scale = np.zeros(np.shape(K_scaled)[0], dtype=np.int64)
        object.__setattr__(self, "net", net)
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "K_scaled", np.asarray(K_scaled, dtype=np.float64))
        # None: not computed (residual networks with several inputs); every accessor that needs G1 then raises
        object.__setattr__(self, "G1_scaled", None if G1_scaled is None else np.asarray(G1_scaled, dtype=np.float64))
        object.__setattr__(self, "V_scaled", np.asarray(V_scaled, dtype=np.float64))
        object.__setattr__(self, "log2_scale", np.asarray(log2_scale, dtype=np.int64))
        if caveats is None:
            caveats = truncation_caveats(self)
        object.__setattr__(self, "caveats", tuple(caveats))

    def with_net(self, net: MLP) -> "FiniteWidth":
        """The same K, G1, V for another network ``net`` of the same depth (the observables then use its widths;
        the caveats are recomputed). For uniform hidden widths K, G1, V do not depend on the width."""
        self.net.check_reuse(net, "pdlt.finite_width")
        return FiniteWidth(net, self.x, K_scaled=self.K_scaled, G1_scaled=self.G1_scaled, V_scaled=self.V_scaled,
                           log2_scale=self.log2_scale)

    # ------------------------------------------------------------------ raw arrays (where representable)
    def _raw(self, arr, power: int, name: str, accessor: str, l: int | None = None) -> np.ndarray:
        e = power * self.log2_scale
        if l is not None:
            arr, e = arr[l - 1 : l], e[l - 1 : l]
        if not np.any(e):
            return arr if l is None else arr[0]
        small, large = _layer_scale(arr, e)
        if np.any(small) or np.any(large):
            i = int(np.argmax(small | large))
            lay = i + 1 if l is None else l
            cls, where = (VanishingFlowError, "below") if small[i] else (DivergentFlowError, "above")
            raise cls(
                f"{name} at layer l = {lay} is {where} float64's range (|{name}| ~ 2^{int(e[i]) + int(np.frexp(np.max(np.abs(arr[i])))[1])}): "
                f"the kernel {'vanishes' if small[i] else 'grows'} exponentially with depth "
                f"({'ordered phase: C_W below criticality' if small[i] else 'exploding side of criticality'}). "
                f"Use the normalized observable {accessor}, or {name}_scaled with log2_scale "
                f"({name} = {name}_scaled * 2^({power} log2_scale)); to get raw values, move C_W toward "
                "criticality (pdlt.criticality(...)) or reduce the depth", layer=lay)
        shape = (-1,) + (1,) * (arr.ndim - 1)
        out = np.ldexp(arr, e.reshape(shape))
        return out if l is None else out[0]

    @cached_property
    def K(self) -> np.ndarray:
        """``K^(l)_ab``, ``(L, d, d)`` (always representable: :func:`pdlt.kernel_flow` raises otherwise)."""
        return self._raw(self.K_scaled, 1, "K", "normalized kernels")

    @cached_property
    def G1(self) -> np.ndarray:
        """``G^{1}(l)_ab``, ``(L, d, d)``; raises where outside float64's range (use :meth:`normalized_G1`)."""
        return self._raw(self._g1(), 1, "G1", "normalized_G1(l)")

    def _g1(self) -> np.ndarray:
        if self.G1_scaled is None:
            raise ParameterError(
                f"G1 (and so the two-point function at order 1/n) is not computed for this residual network: its "
                f"activation {self.net.activation.name!r} has kinks but is not scale-invariant, and the cross-layer "
                "Hessian averages Cov(s s(z^(m)), (s s)''(z^(l))) with the delta functions of s'' are not implemented "
                "(derivations/residual.py); V and the four-point functions are available, or use a smooth or "
                "scale-invariant activation", "activation")
        return self.G1_scaled

    @cached_property
    def V(self) -> np.ndarray:
        """``V^(l)_{(ab)(cd)}``, ``(L, d, d, d, d)``; raises where outside float64's range (use
        :meth:`normalized_vertex` or :meth:`normalized_four_point`)."""
        return self._raw(self.V_scaled, 2, "V", "normalized_vertex(l) / normalized_four_point(l)")

    @property
    def L(self) -> int:
        return self.K_scaled.shape[0]

    @property
    def d(self) -> int:
        return self.K_scaled.shape[-1]

    def _n(self, l: int) -> int:
        self.net._check_layer(l)
        return self.net.widths[l - 1]

    def two_point(self, l: int) -> np.ndarray:
        """``E[z_{i;a} z_{i;b}] = K_ab + G1_ab / n_{l-1}`` (same neuron i), shape ``(d, d)``."""
        n = self._n(l)
        return np.ldexp(self.K_scaled[l - 1] + self._g1()[l - 1] / n, int(self.log2_scale[l - 1]))

    def truncation_error(self, quantity: str, l: int) -> np.ndarray:
        """The estimated error ``|truth - prediction|`` of the O(1/n) prediction of the observable ``quantity`` at
        layer l, entry by entry (the observable's shape): the computed O(1/n^2) term plus a bound on the rest for
        one-input entries, a derived bound elsewhere, 0 where the prediction is exact
        (:func:`pdlt.theory.truncation.truncation_error`; :func:`pdlt.compare` uses it as its allowance).

        >>> import pdlt
        >>> th = pdlt.finite_width(pdlt.MLP("relu", (1, 32, 32, 32, 32), C_W=2.0), [[1.0]])
        >>> exact = 3 * ((1 + 5 / 32) ** 3 - 1)                         # ReLU: 3 (prod (1 + 5/n) - 1)
        >>> bool(abs(exact - th.kurtosis(4)[0]) <= th.truncation_error("kurtosis", 4)[0])
        True
        """
        from ..observables import names
        from .truncation import truncation_error

        allowed = names(max_order=1)
        if quantity not in allowed:
            raise ParameterError(f"truncation_error takes an observable that the O(1/n) theory predicts, one of "
                                 f"{allowed}; got {quantity!r}", "quantity")
        self.net._check_layer(l)
        return truncation_error(self, quantity, l)

    def kurtosis(self, l: int) -> np.ndarray:
        """Single-neuron excess kurtosis per input, ``E z^4 / (E z^2)^2 - 3 = 3 V_{(aa)(aa)} / (n_{l-1} K_aa^2)``
        to order 1/n, shape ``(d,)`` (0 for an input with ``K_aa = 0``)."""
        return 3.0 * self.normalized_vertex(l)

    def normalized_vertex(self, l: int) -> np.ndarray:
        """``V_{(aa)(aa)} / (n_{l-1} K_aa^2)`` per input, shape ``(d,)``: grows like ``nu l / n`` at criticality
        (derivations/README.md section 9); 0 for an input with ``K_aa = 0``. Scale-free (from the scaled arrays)."""
        n = self._n(l)
        ar = np.arange(self.d)
        v = self.V_scaled[l - 1][ar, ar, ar, ar]
        k2 = self.K_scaled[l - 1][ar, ar] ** 2
        return np.divide(v, n * k2, out=np.zeros_like(v), where=k2 > 0)

    def normalized_G1(self, l: int) -> np.ndarray:
        """``G1_aa / (n_{l-1} K_aa)`` per input, shape ``(d,)``: the relative 1/n correction of ``E[z_a^2]``;
        0 for an input with ``K_aa = 0``. Scale-free."""
        n = self._n(l)
        ar = np.arange(self.d)
        g = self._g1()[l - 1][ar, ar]
        k = self.K_scaled[l - 1][ar, ar]
        return np.divide(g, n * k, out=np.zeros_like(g), where=k > 0)

    def normalized_four_point(self, l: int) -> np.ndarray:
        """``V_{(ab)(cd)} / (n_{l-1} sqrt(K_aa K_bb K_cc K_dd))``, shape ``(d, d, d, d)``: the distinct-neuron
        connected four-point function in units of the variances (0 where some ``K_aa = 0``). Scale-free."""
        n = self._n(l)
        k = np.diagonal(self.K_scaled[l - 1]).copy()
        s = np.sqrt(k)
        den = n * np.einsum("a,b,c,d->abcd", s, s, s, s)
        v = self.V_scaled[l - 1]
        return np.divide(v, den, out=np.zeros_like(v), where=den > 0)

    # ---------------------------------------------- the names of pdlt.observables, shared with pdlt.MCResult
    def four_point(self, l: int) -> np.ndarray:
        """Distinct neurons i != j, connected: ``E[z_{i;a} z_{i;b} z_{j;c} z_{j;d}] - G_ab G_cd = V_{(ab)(cd)} /
        n_{l-1}``, shape ``(d, d, d, d)`` indexed ``[a, b, c, d]`` (``MCResult.four_point``). Raises where V^(l) is
        outside float64's range (use :meth:`normalized_four_point`)."""
        n = self._n(l)
        return self._raw(self.V_scaled, 2, "V", f"normalized_four_point({l})", l) / n

    def four_point_single(self, l: int) -> np.ndarray:
        """One neuron i: the fourth cumulant ``E[z_a z_b z_c z_d] - G_ab G_cd - G_ac G_bd - G_ad G_bc =
        (V_{(ab)(cd)} + V_{(ac)(bd)} + V_{(ad)(bc)}) / n_{l-1}``, shape ``(d, d, d, d)`` (``MCResult.four_point_single``;
        it holds for residual steps too, derivations/residual.py)."""
        n = self._n(l)
        V = self._raw(self.V_scaled, 2, "V", f"normalized_four_point({l})", l)
        return (V + np.einsum("acbd->abcd", V) + np.einsum("adbc->abcd", V)) / n

    #: the names used before pdlt.observables (kept: the same functions)
    connected_four_point = four_point
    connected_four_point_single = four_point_single

    def vertex(self, l: int) -> np.ndarray:
        """The vertex ``V^(l)_{(ab)(cd)}``, shape ``(d, d, d, d)``: what ``MCResult.vertex = n_{l-1} four_point``
        estimates. Raises where V^(l) is outside float64's range (use :meth:`normalized_vertex`)."""
        self._n(l)
        return self._raw(self.V_scaled, 2, "V", f"normalized_vertex({l})", l)

    def six_point_single(self, l: int) -> np.ndarray:
        """One neuron's sixth cumulant per input, shape ``(d,)``: 0 at this order. Its leading term is of order
        1/n^2 (PDLT's six-point vertex U), beyond the O(1/n) truncation, so ``MCResult.six_point_single`` is
        not tested against this value (``pdlt.compare`` refuses it). Residual networks raise: there the neuron's
        own value in its metric gives the sixth cumulant a 1/n term that is not computed."""
        self._n(l)
        self._no_residual("six_point_single")
        return np.zeros(self.d)

    def _no_residual(self, what: str) -> None:
        if getattr(self.net, "residual", False):
            raise ParameterError(f"{what} is not computed for residual networks: a shortcut makes the single-neuron "
                                 "sixth cumulant of order 1/n (not 1/n^2 as for a plain MLP)", "net")

    def normalized_six_point_single(self, l: int) -> np.ndarray:
        """``six_point_single / K_aa^3`` per input, shape ``(d,)``: 0 at this order (see :meth:`six_point_single`)."""
        self._n(l)
        self._no_residual("normalized_six_point_single")
        return np.zeros(self.d)


def truncation_caveats(th: FiniteWidth) -> tuple[Caveat, ...]:
    """Where the order-1/n truncation is not trustworthy: per layer the relative size of the 1/n term

    * in ``E[z_a^2] = K_aa (1 + G1_aa/(n_{l-1} K_aa))``: ``max_a |G1_aa| / (n_{l-1} K_aa)``;
    * in ``E[z_a^4] = 3 K_aa^2 (1 + V_(aa)(aa)/(n_{l-1} K_aa^2)) + ...``: ``max_a |V_(aa)(aa)| / (n_{l-1} K_aa^2)``
      (this also grows like ``nu L/n``, so it flags large depth-to-width ratios).

    At most one caveat per quantity, at the first layer whose ratio exceeds
    :data:`pdlt.errors.TRUNCATION_THRESHOLD` (:func:`pdlt.errors.first_truncation_caveat`)."""
    if th.L < 2 or th.d == 0:
        return ()
    ar = np.arange(th.d)
    n = np.asarray(th.net.widths[1 : th.L], dtype=np.float64)[:, None]  # n_{l-1} for l = 2..L
    k = th.K_scaled[1:, ar, ar]
    pos = k > 0
    kk = np.where(pos, k, 1.0)
    g = (np.zeros(th.L - 1) if th.G1_scaled is None
         else np.where(pos, np.abs(th.G1_scaled[1:, ar, ar]) / (n * kk), 0.0).max(axis=1))
    v = np.where(pos, np.abs(th.V_scaled[1:, ar, ar, ar, ar]) / (n * kk * kk), 0.0).max(axis=1)
    found = (first_truncation_caveat(g, "max_a |G1_aa|/(n_{l-1} K_aa) (the 1/n term of E[z^2])", 2,
                                     what_tex=r"$\max_a |G^{(1)}_{aa}|/(n_{\ell-1} K_{aa})$ (the $1/n$ term of "
                                     r"$E[z^2]$)"),
             _with_estimate(th, first_truncation_caveat(
                 v, "max_a |V_(aa)(aa)|/(n_{l-1} K_aa^2) (the 1/n term of E[z^4]/(3K^2))", 2,
                 what_tex=r"$\max_a |V_{(aa)(aa)}|/(n_{\ell-1} K_{aa}^2)$ (the $1/n$ term of $E[z^4]/(3K^2)$)")))
    return tuple(c for c in found if c is not None)


def _with_estimate(th: FiniteWidth, cav: Caveat | None) -> Caveat | None:
    """The vertex caveat with the size of the derived bound on the next orders of the normalized vertex at its layer
    appended (:func:`pdlt.theory.truncation.truncation_error` without the next order, so that building a theory
    stays cheap), or that the series is not controlled there."""
    if cav is None or cav.layer is None:
        return cav
    from ..errors import PdltError
    from .truncation import next_order_factor

    try:
        c = next_order_factor(th, "normalized_vertex", cav.layer)
    except PdltError:
        return cav
    if c >= 1:
        extra = ("; the bound on the next orders reaches the O(1/n) value: the 1/n series is not controlled there (for "
                 "one input, pdlt.all_orders computes every order)")
        tex = (r"; the bound on the next orders reaches the $O(1/n)$ value: the $1/n$ series is not controlled there "
               r"(for one input, \texttt{pdlt.all\_orders} computes every order)")
    else:
        extra = (f"; the derived bound on the next orders there is {c:.0%} of the O(1/n) value (th.truncation_error("
                 "quantity, l) and pdlt.compare use the computed O(1/n^2) term too, which can raise it)")
        tex = (f"; the derived bound on the next orders there is {c:.0%} of the $O(1/n)$ value ".replace("%", r"\%")
               + r"(\texttt{th.truncation\_error(quantity, l)} and \texttt{pdlt.compare} use the computed $O(1/n^2)$ "
               r"term too, which can raise it)")
    return dataclasses.replace(cav, message=cav.message + extra, latex=cav.latex and cav.latex + tex)


def finite_width(net: MLP, x) -> FiniteWidth:
    """Flow ``K``, ``G1`` and ``V`` through every layer of ``net`` for inputs ``x`` (``(d, n_0)`` or ``(n_0,)``).

    Uses per-layer ``C_W^(l), C_b^(l)`` and the width ratios ``r_l = n_l/n_{l-1}``. All Gaussian averages of all
    layers are computed first (the leading-order kernels are known from :func:`pdlt.kernel_flow`), then the
    linear recursions run layer by layer.

    **Scale-free recursions.** With ``K^(l) = 2^e Kt`` (:func:`pdlt.theory.kernel.scale_exponent`, ``e = 0``
    within 2^+-32) and the rescaled activation ``sigma_e(zeta) = sigma(2^(e/2) zeta)/2^(e/2)``
    (:func:`pdlt.theory.kernel.scaled_activation`), the averages at ``Kt`` give ``C4/4^e``, ``D`` (invariant) and
    ``2^e Q``, so the recursions of the module docstring hold verbatim for ``V/4^e`` and ``G1/2^e``; passing to the
    next layer's exponent multiplies by a power of two (exact). So ordered (K -> 0) and exploding (K -> inf)
    flows are right wherever K itself is representable; see :class:`FiniteWidth` for the raw arrays.

    Raises :class:`~pdlt.errors.SingularKernelError` if two inputs are (nearly) identical or parallel at some
    layer (use :func:`pdlt.delta_flow` / :func:`pdlt.delta_finite_width`),
    :class:`~pdlt.errors.VanishingFlowError` / :class:`~pdlt.errors.DivergentFlowError` naming the layer if K
    leaves float64's range (:func:`pdlt.kernel_flow`). Emits a :class:`~pdlt.errors.TruncationWarning` for each
    caveat in ``caveats`` (silence with :mod:`warnings` filters).

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("relu", widths=(2, 50, 50, 50, 1), C_W=2.0, C_b=0.0)
    >>> th = finite_width(net, np.array([1.0, 0.5]))
    >>> np.round(th.V[:, 0, 0, 0, 0] / th.K[:, 0, 0] ** 2, 10)   # nu (l - 1), nu = 5 for ReLU
    array([ 0.,  5., 10., 15.])
    """
    require_continuous(net.activation, "the O(1/n) recursions (their Gaussian averages hold sigma')")
    flow = kernel_flow(net, x)
    if not all(step.local for step in net.steps):
        return _network_statistics(net, flow)
    K = flow.K
    L, d = K.shape[0], K.shape[-1]
    act = net.activation
    # scale-invariant activations: every layer at an O(1) kernel (sigma_e = sigma, one batched call, and the
    # whitened 2D rule then needs few scale groups); others: rescale only outside 2^+-32 (few distinct sigma_e)
    fine = act.scale_invariant
    m = np.max(np.abs(np.diagonal(K, axis1=-2, axis2=-1)), axis=-1)
    with np.errstate(divide="ignore"):
        in_band = (m == 0) | (np.abs(np.log2(m)) <= _kernel_mod.SCALE_BAND)
    if not fine and np.all(in_band):
        e = np.zeros(L, dtype=np.int64)  # the common case: no layer needs rescaling
    else:
        e = np.array([scale_exponent(K[i], fine=fine) for i in range(L)], dtype=np.int64)
    Kt = np.ldexp(K, -e[:, None, None]) if np.any(e) else K
    G1 = np.zeros((L, d, d))
    V = np.zeros((L, d, d, d, d))
    if L > 1:
        avg = _scaled_layer_averages(act, Kt[:-1], e[:-1])
    for l in range(1, L):  # layer l -> l + 1, arrays at index l - 1 -> l
        step = net.step(l + 1)
        r = net.width_ratio(l)
        one = avg[l - 1]
        de = int(e[l - 1] - e[l])  # from the units of layer l to those of layer l + 1
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            V[l] = step.vertex_map(one, V[l - 1 : l], r)[0]
            G1[l] = step.nlo_kernel_map(one, G1[l - 1 : l], V[l - 1 : l], r)[0]
            if de:
                V[l] = np.ldexp(V[l], 2 * de)
                G1[l] = np.ldexp(G1[l], de)
        for arr, what in ((V[l], "four-point vertex V/K^2"), (G1[l], "NLO kernel G1/K")):
            if not np.all(np.isfinite(arr)):
                raise DivergentFlowError(
                    f"the normalized {what} is not finite at layer l = {l + 1} although K^({l + 1}) is "
                    "representable: the 1/n expansion has broken down; reduce the depth or move C_W, C_b toward "
                    "criticality (pdlt.criticality(...))", layer=l + 1)
    th = FiniteWidth(net, flow.x, K_scaled=Kt, G1_scaled=G1, V_scaled=V, log2_scale=e)
    emit(th.caveats, stacklevel=3)
    return th


def _network_statistics(net: MLP, flow) -> FiniteWidth:
    """Networks with steps whose 1/n statistics need more than ``(K, G1, V)`` (residual steps): the step type's
    whole-network computation (``network_statistics``; for residual steps
    :func:`pdlt.theory.residual.residual_statistics`, without power-of-two rescaling: the kernel of a residual
    network near criticality stays O(1), and one that leaves 2^+-480 raises)."""
    hidden = set(net.widths[1:net.L])
    if len(hidden) > 1:
        raise ParameterError(
            f"the O(1/n) theory of residual networks is derived for one hidden width (n_1 = ... = n_(L-1)); got "
            f"widths = {net.widths}: make the hidden widths equal (a layer with gamma = 0 and xi != 1 is a dense layer "
            "with xi^2 C_W, xi^2 C_b, so it can be written as one)", "widths")
    diag = np.diagonal(flow.K, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore"):
        e = np.log2(np.where(diag > 0, diag, 1.0))
    if np.any(np.abs(e) > 480):
        l = int(np.argmax(np.any(np.abs(e) > 480, axis=1))) + 1
        cls = VanishingFlowError if np.min(e) < -480 else DivergentFlowError
        raise cls(f"the kernel of this residual network leaves 2^+-480 at layer l = {l} (K ~ 2^{int(e[l - 1].max())}), "
                  "where its 1/n statistics (V ~ K^2) are not representable: they are computed without power-of-two "
                  "rescaling for residual networks; move C_W, gamma, xi toward criticality "
                  "(pdlt.residual_criticality) or reduce the depth", layer=l)
    # the first step that needs the whole network computes it; G1 may be None (FiniteWidth._g1 then raises)
    step = next(s for s in net.steps if not s.local)
    K, G1, V = step.network_statistics(net, flow.K)
    for arr, what in ((V, "four-point vertex V"), (G1, "NLO kernel G1")):
        if arr is None:
            continue
        bad = ~np.all(np.isfinite(arr.reshape(arr.shape[0], -1)), axis=1)
        if np.any(bad):
            l = int(np.argmax(bad)) + 1
            raise DivergentFlowError(f"the {what} of the residual network is not finite at layer l = {l}: reduce the "
                                     "depth or move C_W, gamma, xi toward criticality", layer=l)
    th = FiniteWidth(net, flow.x, K_scaled=flow.K, G1_scaled=G1, V_scaled=V, log2_scale=np.zeros(net.L, dtype=np.int64))
    emit(th.caveats, stacklevel=4)
    return th


def _scaled_layer_averages(act, Kt, e) -> list[LayerAverages]:
    """``layer_averages`` of ``scaled_activation(act, e_i)`` at ``Kt[i]`` for every layer i (one batched call per
    distinct exponent); returns one single-layer :class:`LayerAverages` per layer."""
    out: list[LayerAverages | None] = [None] * Kt.shape[0]
    # sigma_e = sigma for scale-invariant activations: all layers in one group
    groups = [np.arange(Kt.shape[0])] if act.scale_invariant else [np.nonzero(e == ev)[0] for ev in np.unique(e)]
    for idx in groups:
        ev = e[idx[0]]
        act_e = scaled_activation(act, int(ev))
        try:
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                avg = layer_averages(act_e, Kt[idx], layers=list(idx + 1))
        except (SingularKernelError, ParameterError):
            raise                                   # (named already: a singular block, an unresolved quadrature)
        except (ValueError, FloatingPointError) as err:
            l = int(idx[_first_failing(act_e, Kt[idx]) - 1]) + 1
            raise DivergentFlowError(
                f"the 1/n recursions diverge at layer l = {l + 1}: the Gaussian averages at K^({l}) failed ({err}); "
                "the kernel flow is far from criticality: move C_W / C_b toward criticality (pdlt.criticality(...)) "
                "or reduce the depth",
                layer=l + 1,
            ) from err
        for j, i in enumerate(idx):
            out[i] = _slice(avg, j)
    return out


def _first_failing(act, K) -> int:
    """The first layer l (1-based) whose Gaussian averages at ``K[l-1]`` raise (error path only)."""
    for i in range(K.shape[0]):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                layer_averages(act, K[i : i + 1])
        except (ValueError, FloatingPointError):
            return i + 1
    return K.shape[0]


def _slice(avg: LayerAverages, i: int) -> LayerAverages:
    s = slice(i, i + 1)
    return LayerAverages(K=avg.K[s], P2=avg.P2[s], P4=avg.P4[s], D=avg.D[s], Qd=avg.Qd[s], Qp=avg.Qp[s], pairs=avg.pairs)

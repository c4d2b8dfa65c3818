r"""The order-1/n statistics of the neural tangent kernel for any number of inputs (PDLT ch. 8, 11, infinity;
derivations/README.md section 17).

For layer l, with ``n = n_{l-1}``, hat quantities per network, ``i`` neuron and ``a`` input indices (tensor
conventions of derivations/README.md section 17):

* ``E[H_{i1i2;a1a2}] = delta (Theta + Theta1/n)``;
* ``E[dH dH] = (1/n)[d12 d34 A_{a1a2a3a4} + d13 d24 B_{a1a3a2a4} + d14 d23 B_{a1a4a2a3}]``;
* ``E[dH_{i1i2} z_{i3} z_{i4}] = (1/n)[d12 d34 D_{a1a2a3a4} + d13 d24 F_{a1a3a2a4} + d14 d23 F_{a1a4a2a3}]``;
* dNTK ``E[dH_{i0i1i2} z_{i3}] = (1/n)[d03 d12 P_{a0a1a2a3} + d01 d23 Q_{a0a1a2a3} + d02 d13 Q_{a0a2a1a3}]``;
* ddNTK-I ``E[ddI_{i0i1i2i3}] = (1/n)[d01 d23 R_{a0a1a2a3} + d02 d31 R_{a0a2a3a1} + d03 d12 R_{a0a3a1a2}]``;
* ddNTK-II ``E[ddII_{i1i2i3i4}] = (1/n)[d12 d34 S_{a1a2a3a4} + d13 d24 T_{a1a3a4a2} + d14 d23 U_{a1a4a2a3}]``.

Every layer-(l+1) statistic is a dense step's one-step map (:meth:`pdlt.layers.Dense.ntk_statistics_map`) of the
layer-l ones, the frozen NTK ``Theta``, the kernel ``K``, ``G1`` and ``V``, and Gaussian averages at ``K^(l)``
(:class:`NTKAverages`). Layer 1 is linear in its parameters: all of A..U and Theta1 are 0 there.

Conventions for kinked activations (ReLU family): factors sigma'', sigma''' that come from differentiating the
network are pointwise (0 for piecewise-linear activations, as exact derivatives of a ReLU network are); the
linear-response averages ``<d_b f> = sum_g K^{bg} <z_g f>`` and their Hessian / fourth-derivative analogues are
taken by Gaussian integration by parts (Stein / Hermite), which keeps the kinks' delta functions.

Averages are computed for all layers before the recursion: one- and two-input averages per 2x2 sub-block in
whitened coordinates; products of four single-input functions grouped by their set of distinct inputs
(at most four, so any number of inputs d works; the cost grows like d^4). Rules for the products:

* smooth sigma, 2..4 distinct inputs: one coordinate conditioned on the others, its 1D average taken exactly on the
  lines of a rotated trapezoidal grid over the rest (:func:`pdlt.theory.conditioned.conditioned_products`, all sets
  and layers with the same grid evaluated together; singular kernels and deterministic inputs too); against the same
  rule at spacing 0.35 on random 4x4 kernels K ~ 0.03..0.8: <= 5e-12 relative to the largest product for tanh (whose
  poles at i pi/2 set the error), ~4e-16 for GELU and swish, where
  gaussian.expect's default 3D / 4D rules are 1e-7 / 1e-5 off at K ~ 1 (worse at large K);
* scale-invariant sigma (ReLU family), 3 and 4 inputs: Gaussian moments of degree <= 2 over orthants in closed form,
  the 4D orthant probability as a 1D path integral (:func:`_scale_invariant_products`, :mod:`pdlt.orthant`);
* otherwise (other kinked activations): :func:`gaussian.expect`.

The trapezoid rules cap their nodes per axis, so at large kernels a smooth sigma whose derivatives narrow (tanh, GELU,
swish: sigma' is a bump of width ~1 in z) is no longer resolved; :func:`_check_resolution` measures the single-input
rule's estimated error at every layer and refuses, naming ``x`` (``C_W`` where the kernel grew over the layers),
above :data:`QUADRATURE_TOLERANCE` (one input beyond K = 64 takes gaussian.expect's panel rule, which keeps sigma's
own scale: tanh, erf, GELU pass at any K; the trapezoid refused them from K ~ 1100-3300). The rules over two to
four distinct inputs keep their spacing in z and grow with the kernel instead, up to
:data:`pdlt.theory.conditioned.MAX_POINTS` points (four inputs to K ~ 25-50, three to K ~ 3e3-6e3 by their
correlations, pairs to K ~ 3e3); beyond it gaussian.expect's capped rule is used only where its error estimate is
below the same tolerance, and refused otherwise (a capped rule without that check was silently wrong: tanh, four
inputs, K ~ 9: D 2e-3 off).

For smooth sigma the ``s s`` averages of :func:`pdlt.theory.finite_width.layer_averages` (``NTKAverages.ss``) come
from the same evaluations; kinked ones use ``layer_averages`` itself. ``G1`` and ``V`` follow from these averages by
the step's own maps (``vertex_map``, ``nlo_kernel_map``: the recursions of :func:`pdlt.finite_width`).

**Stars.** Every statistic of a tuple of inputs follows from averages over that tuple's inputs alone (the recursions
close on index sets). :func:`star_statistics` uses this to compute only the tuples with at most one input outside a
core (a training set and many test inputs: the O(1/n) trained mean needs no more): ``core^3/6`` four-input sets per
outside input instead of ``d^4/24`` in all.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from .. import gaussian
from ..architecture import MLP
from ..errors import (DivergentFlowError, ParameterError, SingularKernelError, emit, first_out_of_range,
                      first_truncation_caveat)
from .finite_width import (QUADRATURE_TOLERANCE, SINGULAR_COND, FiniteWidth, LayerAverages, in_star, layer_averages,
                           refuse_capped, star_tuples, truncation_caveats, unresolved_quadrature)
from . import conditioned
from .conditioned import RADIUS, ball_parts, capped_rule, derivatives, grid_points, several_inputs
from .kernel import kernel_flow
from .ntk import diagonal_ratio, learning_rates, ntk
from .residual_ntk import MAX_INPUTS as RESIDUAL_MAX_INPUTS
from .residual_ntk import residual_ntk_statistics

__all__ = ["NTKStatistics", "NTKAverages", "ntk_statistics", "star_statistics", "ntk_averages", "MAX_INPUTS",
           "STAR_MAX_INPUTS"]

#: largest number of inputs accepted (the four-input averages grow like d^4 in number); 9 lets the O(1/n) trained
#: ensemble take 8 training inputs (the core of :func:`star_statistics`)
MAX_INPUTS = 9

#: largest number of inputs of :func:`star_statistics` (its tensors are (d,)^4 per layer and field)
STAR_MAX_INPUTS = 16

_FIELDS = ("A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")


@dataclass(frozen=True)
class NTKStatistics:
    """The O(1/n) NTK statistics of every layer (layer l at index l - 1): ``Theta``, ``Theta1`` ``(L, d, d)``;
    ``A, B, D, F, P, Q, R, S, T, U`` ``(L, d, d, d, d)`` in the index order of the module docstring; and the
    ``K``, ``G1`` ``(L, d, d)``, ``V`` ``(L, d, d, d, d)`` and learning rates they were computed from."""

    net: MLP
    x: np.ndarray
    Theta: np.ndarray
    Theta1: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    S: np.ndarray
    T: np.ndarray
    U: np.ndarray
    K: np.ndarray
    G1: np.ndarray
    V: np.ndarray
    lambda_b: tuple
    lambda_W: tuple

    @property
    def L(self) -> int:
        return self.Theta.shape[0]


@dataclass(frozen=True)
class NTKAverages:
    """Gaussian averages at the kernels ``K`` ``(B, d, d)`` (one per layer). ``s_t`` is the t-th derivative of
    sigma (pointwise), ``d_g`` a linear-response derivative (Stein / Hermite, distributional).

    * ``P00, P11, P20, P31, P22`` ``(B, d, d)``: ``[a, b] -> <s_s(z_a) s_t(z_b)>`` for ``st`` = 00, 11, 20, 31, 22;
    * ``Y10, Y21`` ``(B, d, d, d)``: ``[a, c, g] -> <d_g (s'_a s_c)>``, ``<d_g (s''_a s'_c)>``;
    * ``Hss, Hdd`` ``(B, d, d, d, d)``: ``[a, b, g, h] -> <d_g d_h (s_a s_b)>``, ``<d_g d_h (s'_a s'_b)>``;
    * ``ss``, ``dd``: :class:`pdlt.theory.finite_width.LayerAverages` of ``s s`` and ``s' s'`` (their
      ``Q_contract(V)`` is ``sum V_{(gh)(ef)} <d_g d_h d_e d_f (f_a f_b)>``; ``ss.C4`` the connected ``<s s s s>``);
    * ``M1111, M1100, M2110, M3111, M2211`` ``(B, d, d, d, d)``: ``[a, b, c, d] -> <s_i(z_a) s_j(z_b) s_k(z_c)
      s_m(z_d)>`` for ``ijkm`` the digits of the name.
    """

    K: np.ndarray
    P00: np.ndarray
    P11: np.ndarray
    P20: np.ndarray
    P31: np.ndarray
    P22: np.ndarray
    Y10: np.ndarray
    Y21: np.ndarray
    Hss: np.ndarray
    Hdd: np.ndarray
    ss: LayerAverages
    dd: LayerAverages
    M1111: np.ndarray
    M1100: np.ndarray
    M2110: np.ndarray
    M3111: np.ndarray
    M2211: np.ndarray

    def layer(self, i: int) -> "NTKAverages":
        """The averages of kernel ``i`` alone (arrays keep a leading axis of length 1)."""
        s = slice(i, i + 1)
        cut = lambda la: LayerAverages(K=la.K[s], P2=la.P2[s], P4=la.P4[s], D=la.D[s], Qd=la.Qd[s], Qp=la.Qp[s],
                                       pairs=la.pairs)
        kw = {k: getattr(self, k)[s] for k in self.__dataclass_fields__ if k not in ("ss", "dd")}
        return NTKAverages(ss=cut(self.ss), dd=cut(self.dd), **kw)


# ---------------------------------------------------------------------------------------------------
# pointwise derivatives of the activation
# ---------------------------------------------------------------------------------------------------


def _nodes(act, K, h_w, h_z):
    """Trapezoid nodes per axis for :func:`gaussian.expect` on smooth activations (None: its default rule for
    kinked ones): spacing ``min(h_w, h_z / sqrt(max K_aa))`` in whitened units. expect's default 1D/2D spacing
    leaves ~1e-8 relative errors on products such as ``<s''^2 s'^2>``; this one ~1e-13."""
    return None if act.kinks else gaussian.trapezoid_nodes(K, h_w, h_z)


#: variance beyond which the one-input averages of a smooth sigma take gaussian.expect's 1-D panel rule (panels at
#: sigma's own scale, ~1e-15 on tanh's derivative products at any K) instead of the trapezoid of :func:`_nodes`,
#: which caps its nodes from K ~ 44 at spacing 0.06 and refused tanh from K ~ 1100
PANEL_FROM = 64.0


def _one_input(act, f, K, h_w, h_z, return_error=False, checked=True):
    """``gaussian.expect(f, K)`` over one-input kernels ``K`` ``(..., 1, 1)``: for a smooth sigma the trapezoid of
    :func:`_nodes` up to :data:`PANEL_FROM` and the panel rule beyond, where it resolves f (its estimate within 1e-8
    of each average, or of 1e-6 of the largest: sin, periodic, keeps the trapezoid); with ``return_error``, each
    rule's own estimate (the trapezoid at twice its nodes, the panel rule at 2/3 of them). ``checked=False``: the
    panel rule beyond PANEL_FROM whatever its estimate (a scale, such as ``<|g|>``, which needs no digits). expect's
    default for kinked ones."""
    if act.kinks:
        return gaussian.expect(f, K, kinks=act.kinks, return_error=return_error)
    flat = K.reshape(-1, 1, 1)
    wide = flat[:, 0, 0] > PANEL_FROM
    parts = []                                   # (kernels, values, errors) of each rule
    if np.any(wide):
        v, e = (np.asarray(a) for a in gaussian.expect(f, flat[wide], method="panel", return_error=True))
        if checked:
            v2, e2 = v.reshape(v.shape[0], -1), e.reshape(e.shape[0], -1)
            ref = np.maximum(np.abs(v2), 1e-6 * np.max(np.abs(v2), axis=1, keepdims=True))
            bad = np.any(e2 > 1e-8 * ref, axis=1)
            wide[np.flatnonzero(wide)[bad]] = False
            v, e = v[~bad], e[~bad]
        parts.append((wide, v, e))
    if not np.all(wide):
        n = _nodes(act, flat[~wide], h_w, h_z)
        v = np.asarray(gaussian.expect(f, flat[~wide], n=n))
        e = np.abs(v - np.asarray(gaussian.expect(f, flat[~wide], n=2 * n + 1))) if return_error else v
        parts.append((~wide, v, e))
    val = np.empty((flat.shape[0],) + parts[0][1].shape[1:])
    err = np.empty_like(val)
    for sel, v, e in parts:
        val[sel], err[sel] = v, e
    shape = K.shape[:-2] + val.shape[1:]
    return (val.reshape(shape), err.reshape(shape)) if return_error else val.reshape(shape)


def _check_resolution(act, diag, layers):
    """ParameterError naming ``x`` (``C_W`` past layer 1) where the rule of :func:`_single_averages`
    (:func:`_one_input`) does not resolve the products of sigma's derivatives at the layers' variances ``diag``
    ``(B, d)``.

    Up to :data:`PANEL_FROM` the rule is a trapezoid whose spacing is set for derivatives that vary on the scale of
    the kernel; its node cap makes it coarser at large kernels, where sigma' of tanh, GELU or swish, a bump of width
    ~1 in z, was no longer resolved (tanh at K = 1e4: ``<s_1^4>`` 10 % off; refused from K ~ 1100). Beyond, the panel
    rule of gaussian.expect keeps sigma's own scale (tanh's layer-3 A, B, D, F agree with the independent O(1/n) parts
    of pdlt.ntk_nnlo to 2e-13 at x = 1000), and the trapezoid takes the kernels it does not resolve (sin, periodic).
    The estimate is each rule's own (the trapezoid against twice its nodes: at K = 900 5e-8 where the true error is
    5e-8; the panel rule against 2/3 of them), relative to ``<|f|>``, for the products that the NTK recursions reach
    (``s_1^4``, ``s_2^2 s_1^2``, ``s_3 s_1^3``, ``s_0^2 s_1^2``, ``s_t`` the t-th derivative) at each layer's largest
    variance. Kinked activations use exact rules and are not checked."""
    if act.kinks:
        return
    big = np.max(diag, axis=-1)
    if not np.any(big > 0):
        return

    def g(z):
        z = z[..., 0]
        s = derivatives(act, z, (0, 1, 2, 3))
        return np.stack([s[1] ** 4, (s[2] * s[1]) ** 2, s[3] * s[1] ** 3, (s[0] * s[1]) ** 2], axis=-1)

    K = np.where(big > 0, big, 1.0)[:, None, None]
    val, err = _one_input(act, g, K, 0.09, 0.06, return_error=True)
    # the errors relative to <|g|> (a scale only: kinked where g changes sign, which the rule need not resolve)
    size = np.asarray(_one_input(act, lambda z: np.abs(g(z)), K, 0.09, 0.06, checked=False))
    scale = np.where(size > 0, size, 1.0)
    rel = np.where(big[:, None] > 0, err / scale, 0.0)
    worst = int(np.argmax(np.max(rel, axis=-1)))
    e = float(np.max(rel[worst]))
    if not e <= QUADRATURE_TOLERANCE:
        # (sigma' varies on a scale of 1 in z, far below the kernel's width)
        raise unresolved_quadrature(f"{act.name}'s derivatives", f"layer l = {layers[worst]}", float(big[worst]),
                                    f"estimated relative error {e:.1e} (the rule against one of other nodes; above "
                                    f"{QUADRATURE_TOLERANCE:g})", layers[worst] == 1)


def _zero_order(act, t: int) -> bool:
    """Whether the pointwise t-th derivative vanishes identically (piecewise-linear activations, t >= 2)."""
    return t >= 2 and act.scale_invariant


# ---------------------------------------------------------------------------------------------------
# one- and two-input averages (per 2x2 sub-block, whitened)
# ---------------------------------------------------------------------------------------------------

_PAIR_PRODUCTS = ((0, 0), (1, 1), (2, 0), (0, 2), (3, 1), (1, 3), (2, 2))
_STEIN = ((1, 0), (0, 1), (2, 1), (1, 2))  # f = s_i(u0) s_j(u1) for the first-derivative averages


def _pair_components(act, u0, u1, w0, w1):
    """Integrand of one sub-block: products, ``w_k f`` for the Stein functions, ``He_j(w0) He_{m-j}(w1) s'_0 s'_1``
    for m = 2, 4, then the same for ``s_0 s_1``."""
    s0 = derivatives(act, u0, (0, 1, 2, 3))
    s1 = derivatives(act, u1, (0, 1, 2, 3))
    comps = [s0[i] * s1[j] for i, j in _PAIR_PRODUCTS]
    for i, j in _STEIN:
        f = s0[i] * s1[j]
        comps += [f * w0, f * w1]
    h0, h1 = gaussian.hermite_e(w0), gaussian.hermite_e(w1)
    for g in (s0[1] * s1[1], s0[0] * s1[0]):
        for m in (2, 4):
            comps += [g * h0[j] * h1[m - j] for j in range(m + 1)]
    return np.stack(comps, axis=-1)


def _pair_components_smooth(act, l00, l10, l11, m):
    """The averages of :func:`_pair_components` (same order) for smooth sigma on the ``(2m+1)^2`` trapezoidal ball
    grid in ``w`` (``u0 = l00 w0``, ``u1 = l10 w0 + l11 w1``). Every component is ``A(w0) B(u1, w1)`` with
    ``A = s_i(u0) He_j(w0)``, ``B = s_k(u1) He_m(w1)``: ``A`` is evaluated on the 2m + 1 values of the w0 axis
    only, ``B`` summed over each w0 line, and all components come from one small matrix product (per part of the
    grid, :func:`pdlt.theory.conditioned.ball_parts`)."""
    ax = np.arange(-m, m + 1) * (RADIUS / m)
    s0 = derivatives(act, l00 * ax, (0, 1, 2, 3))
    h0 = gaussian.hermite_e(ax)
    A = np.stack([s0[i] * h0[j] for i in range(4) for j in range(5)])  # row 5 i + j
    T = 0.0
    for pts, i0, W, _ in ball_parts((m, m)):
        w1 = pts[1]
        starts = np.flatnonzero(np.diff(i0, prepend=-1))  # the lines of fixed w0 (the part is sorted by it)
        s1 = derivatives(act, l10 * pts[0] + l11 * w1, (0, 1, 2, 3))
        h1 = gaussian.hermite_e(w1)
        Bw = np.stack([s1[i] * h1[j] * W for i in range(4) for j in range(5)])
        C = np.add.reduceat(Bw, starts, axis=1)  # (20, lines): the w0 lines of this part
        T = T + A[:, i0[starts]] @ C.T  # T[5 i + j, 5 k + m] = <s_i(u0) He_j(w0) s_k(u1) He_m(w1)>
    at = lambda i, j, k, mm: T[5 * i + j, 5 * k + mm]
    comps = [at(i, 0, j, 0) for i, j in _PAIR_PRODUCTS]
    for i, j in _STEIN:
        comps += [at(i, 1, j, 0), at(i, 0, j, 1)]
    for mm in (2, 4):
        comps += [at(1, j, 1, mm - j) for j in range(mm + 1)]
    for mm in (2, 4):  # the same for s s (the averages of finite_width.layer_averages)
        comps += [at(0, j, 0, mm - j) for j in range(mm + 1)]
    return np.array(comps)


def _u_derivatives(Hm, m, a, b, c):
    """``<d_u0^(m-k) d_u1^k f>`` (k = 0..m) from ``Hm[j] = <f He_j(w0) He_{m-j}(w1)>`` with ``u = L w``,
    ``d_u0 = a d_w0 + b d_w1``, ``d_u1 = c d_w1``."""
    out = []
    for k in range(m + 1):
        p = m - k  # number of u0-derivatives: sum_j C(p, j) a^j b^(p-j) d_w0^j d_w1^(p-j), times c^k d_w1^k
        out.append(c**k * sum(math.comb(p, j) * a**j * b ** (p - j) * Hm[j] for j in range(p + 1)))
    return out


def _pair_averages(act, K, layers, core=None):
    """Per (kernel, pair a < c): products ``(N, 7)``, Stein ``<d f>`` ``(N, 4, 2)``, Hessian ``(N, 3)`` and
    fourth ``(N, 5)`` derivative averages of ``s'_a s'_c`` and ``s_a s_c`` (:func:`_pair_components_smooth`, or one
    :func:`gaussian.expect` call per sub-block for kinked sigma); only the pairs of the star of ``core``
    (:func:`pdlt.theory.finite_width.in_star`)."""
    B, d = K.shape[0], K.shape[-1]
    pairs = tuple(p for p in itertools.combinations(range(d), 2) if in_star(p, core))
    out = {}
    for b in range(B):
        for p, (ia, ic) in enumerate(pairs):
            S = K[b][np.ix_((ia, ic), (ia, ic))]
            s00, s11, s01 = S[0, 0], S[1, 1], S[0, 1]
            if not (s00 > 0 and s11 > 0):
                out[b, p] = None  # a deterministic input: only products, below
                continue
            rho = float(np.clip(s01 / math.sqrt(s00 * s11), -1.0, 1.0))
            cond = (1 + abs(rho)) / (1 - abs(rho)) if abs(rho) < 1 else np.inf
            if cond > SINGULAR_COND:
                raise SingularKernelError(
                    f"the 2x2 kernel of inputs {ia} and {ic} at layer l = {layers[b]} is (nearly) singular: "
                    f"correlation {rho:.15g}, condition number {cond:.3g} > {SINGULAR_COND:g}; drop duplicate or "
                    "(anti)parallel inputs (the NTK statistics need the Hermite averages of each pair)")
            l00 = math.sqrt(s00)
            l10 = s01 / l00
            l11 = math.sqrt(s11 * (1 - rho) * (1 + rho))

            def f(u, l00=l00, l10=l10, l11=l11):
                w0 = u[..., 0] / l00
                w1 = (u[..., 1] - l10 * w0) / l11
                return _pair_components(act, u[..., 0], u[..., 1], w0, w1)

            if act.kinks:
                H = np.asarray(gaussian.expect(f, S, kinks=act.kinks))
            else:   # the spacing of _nodes(act, S, 0.2, 0.15), uncapped: the grid grows with the kernel
                m = math.ceil(RADIUS / min(0.2, 0.15 / math.sqrt(max(s00, s11))))
                if grid_points((m, m)) <= conditioned.MAX_POINTS:
                    H = _pair_components_smooth(act, l00, l10, l11, m)
                else:   # beyond the grid limit: the capped rule where its error estimate allows (sin, not tanh)
                    H, err = capped_rule(f, S[None], n=_nodes(act, S, 0.2, 0.15))
                    refuse_capped(act, f"at inputs {ia} and {ic}", err, S[None], [layers[b]])
                    H = H[0]
            a_, b_, c_ = 1.0 / l00, -l10 / (l00 * l11), 1.0 / l11
            prod = H[:7]
            stein = np.empty((4, 2))
            for k in range(4):
                e0, e1 = H[7 + 2 * k], H[8 + 2 * k]
                stein[k] = (a_ * e0 + b_ * e1, c_ * e1)
            hess = _u_derivatives(H[15:18], 2, a_, b_, c_)
            four = _u_derivatives(H[18:23], 4, a_, b_, c_)
            ss = (np.array(_u_derivatives(H[23:26], 2, a_, b_, c_)), np.array(_u_derivatives(H[26:31], 4, a_, b_, c_)))
            out[b, p] = (prod, stein, np.array(hess), np.array(four), ss)
    return pairs, out


def _single_averages(act, diag):
    """One input ``z ~ N(0, k)`` for every entry of ``diag`` ``(B, d)``: products ``<s_i s_j>``, ``<d (s_i s_j)>``
    (Stein) for the four Stein functions, ``<(s'^2)''>``, ``<(s'^2)''''>``, ``<(s^2)''>``, ``<(s^2)''''>`` (Hermite in
    z units)."""
    kk = np.where(diag > 0, diag, 1.0)

    def f(z):
        z = z[..., 0]
        s = derivatives(act, z, (0, 1, 2, 3))
        comps = [s[i] * s[j] for i, j in _PAIR_PRODUCTS]
        comps += [s[i] * s[j] * z for i, j in _STEIN]
        z2 = z * z
        for g in (s[1] * s[1], s[0] * s[0]):
            comps += [g * z2, g * z2 * z2]
        return np.stack(comps, axis=-1)

    H = np.asarray(_one_input(act, f, diag[..., None, None], 0.09, 0.06))
    pos = diag > 0
    prod = H[..., :7]
    stein = np.where(pos[..., None], H[..., 7:11] / kk[..., None], 0.0)
    out = []
    for g0, g2, g4 in ((H[..., 1], H[..., 11], H[..., 12]), (H[..., 0], H[..., 13], H[..., 14])):
        out.append(np.where(pos, (g2 / kk - g0) / kk, 0.0))
        out.append(np.where(pos, ((g4 / kk - 6.0 * g2) / kk + 3.0 * g0) / kk / kk, 0.0))
    return prod, stein, out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------------------------
# products of four single-input functions
# ---------------------------------------------------------------------------------------------------

_M_TYPES = {"M1111": (1, 1, 1, 1), "M1100": (1, 1, 0, 0), "M2110": (2, 1, 1, 0), "M3111": (3, 1, 1, 1),
            "M2211": (2, 2, 1, 1)}


def _four_products(act, K, with_P4=False, core=None, layers=None):
    """The ``M*`` tensors ``(B, d, d, d, d)`` of :class:`NTKAverages` (and ``P4 = <s s s s>`` if ``with_P4``), each
    distinct average computed once, grouped by the set of distinct inputs it involves; only the sets of the star of
    ``core`` (:func:`pdlt.theory.finite_width.in_star`; other entries 0). Smooth sigma:
    :func:`pdlt.theory.conditioned.several_inputs` over all kernels and sets (``layers``, the layers of ``K``, for
    its refusals); scale-invariant sigma: :func:`_scale_invariant_products` (closed forms) for three and four
    inputs; otherwise (and for deterministic inputs) one :func:`gaussian.expect` call per set, all kernels batched."""
    B, d = K.shape[0], K.shape[-1]
    types_all = dict(_M_TYPES, P4=(0, 0, 0, 0)) if with_P4 else _M_TYPES
    live = {name: np.asarray(types) for name, types in types_all.items()
            if not any(_zero_order(act, t) for t in types)}
    idx = star_tuples(d, core)
    # an average is fixed by its (input, derivative order) pairs up to order: the sorted codes 8 a + t name it
    codes = [np.sort(idx * 8 + types, axis=1) for types in live.values()]
    if codes:
        uniq, inv = np.unique(np.concatenate(codes), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
    else:
        uniq, inv = np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    groups = {}  # input set -> [(column, per-input derivative orders)]
    for u, row in enumerate(uniq.tolist()):
        per = {}
        for c in row:
            per.setdefault(c // 8, []).append(c % 8)
        groups.setdefault(tuple(per), []).append((u, tuple(tuple(v) for v in per.values())))
    vals = np.full((B, len(uniq)), np.nan)
    smooth = _smooth_sets(act, K, groups, list(range(1, B + 1)) if layers is None else layers) if not act.kinks else {}
    for S, items in groups.items():
        cols = [u for u, _ in items]
        local = [list(loc) for _, loc in items]  # per key: derivative orders at each position of S
        f = _products_integrand(act, local)

        sub = K[:, np.array(S)[:, None], np.array(S)[None, :]]
        res = np.full((B, len(items)), np.nan)
        if len(S) >= 2 and not act.kinks:
            for b in range(B):
                if smooth[S, b] is not None:
                    res[b] = smooth[S, b]
        elif len(S) >= 3 and act.scale_invariant:
            alive = np.all(np.diagonal(sub, axis1=-2, axis2=-1) > 0, axis=-1)
            if np.any(alive):
                res[alive] = _scale_invariant_products(act, sub[alive], local)
        todo = ~np.all(np.isfinite(res), axis=-1)
        if np.any(todo):  # the general rule: deterministic inputs, other kinked activations
            if len(S) == 1:
                res[todo] = np.asarray(_one_input(act, f, sub[todo], 0.09, 0.06)).reshape(-1, len(items))
            else:
                n = _nodes(act, sub, 0.2, 0.15) if len(S) == 2 else None
                res[todo] = np.asarray(gaussian.expect(f, sub[todo], kinks=act.kinks, n=n)).reshape(-1, len(items))
        vals[:, cols] = res
    out = {}
    at = (slice(None),) + tuple(idx.T)
    for k, name in enumerate(live):
        M = np.zeros((B,) + (d,) * 4)
        M[at] = vals[:, inv[k * len(idx):(k + 1) * len(idx)]]
        out[name] = M
    for name in types_all:
        out.setdefault(name, np.zeros((B,) + (d,) * 4))
    return out


def _products_integrand(act, local):
    """``f(z)`` ``(..., k) -> (..., len(local))``: the products ``prod_p prod_{t in per[p]} s_t(z_p)`` for
    gaussian.expect."""
    orders = sorted({t for per in local for ts in per for t in ts})

    def f(z):
        cols = [derivatives(act, z[..., k], orders) for k in range(z.shape[-1])]
        out = []
        for per in local:
            v = None
            for k, ts in enumerate(per):
                for t in ts:
                    v = cols[k][t] if v is None else v * cols[k][t]
            out.append(v)
        return np.stack(out, axis=-1)

    return f


def _smooth_sets(act, K, groups, layers) -> dict:
    """``{(S, b): averages or None}`` for every input set ``S`` of 2..4 inputs in ``groups`` and kernel ``b`` (layer
    ``layers[b]``): one :func:`pdlt.theory.conditioned.several_inputs` call per set size and list of products (the
    sets of one size share it), over all kernels and sets together: beyond the grid limit the capped rule where its
    error estimate allows, a ParameterError where not."""
    batches = {}
    for S, items in groups.items():
        if len(S) >= 2:
            batches.setdefault(tuple(loc for _, loc in items), []).append(S)
    out = {}
    B = K.shape[0]
    for loc, sets in batches.items():
        ix = np.array(sets)                                            # (n_sets, k)
        Ks = K[:, ix[:, :, None], ix[:, None, :]].reshape(-1, ix.shape[1], ix.shape[1])   # (B n_sets, k, k)
        local = [list(v) for v in loc]
        vals, err = several_inputs(act, Ks, local, _products_integrand(act, local), singular_cond=SINGULAR_COND,
                                   fill=False)   # (_four_products has its own rule for those rows)
        refuse_capped(act, f"at {ix.shape[1]} inputs ({', '.join(map(str, sets[int(np.argmax(err)) % len(sets)]))})",
                      err, Ks, np.repeat(np.asarray(layers), len(sets)))
        vals = vals.reshape(B, len(sets), -1)
        for n, S in enumerate(sets):
            for b in range(B):
                v = vals[b, n]
                out[S, b] = v if np.all(np.isfinite(v)) else None
    return out


def _scale_invariant_products(act, K, local):
    """The products of :func:`_four_products` for ``s = a_+ z (z > 0), a_- z (z < 0)`` (orders 0, 1 only), ``K``
    (B, k, k) with positive variances: ``s_0(z)^n s_1(z)^m = a^(n+m) z^n`` on each side, so every product is a sum
    over the 2^k orthants of slopes times ``E[1]``, ``E[z_i 1]`` or ``E[z_i z_l 1]`` on the orthant (total degree
    <= 2), i.e. on the positive orthant of ``D K D`` (``D = diag(signs)``; :func:`pdlt.orthant.moments`, which takes
    rank-deficient kernels too, e.g. more inputs than n_0 at C_b = 0). NaN for a kernel it refuses (a collinear pair:
    the caller's general rule takes it)."""
    from ..errors import ParameterError
    from ..orthant import moments

    def orthant(S, alphas):
        try:
            return moments(S, alphas)
        except ParameterError:                   # row by row: NaN only for the kernels refused
            rows = []
            for Sb in S:
                try:
                    rows.append(moments(Sb[None], alphas)[0])
                except ParameterError:
                    rows.append(np.full(len(alphas), np.nan))
            return np.array(rows)

    ap, am = (float(v) for v in act.slopes)
    B, k = K.shape[0], K.shape[-1]
    out = np.zeros((B, len(local)))
    # per product: its monomial (a power per coordinate: the factors that are z, not a step)
    monos = [tuple(sum(1 for t in per[u] if t == 0) for u in range(k)) for per in local]
    alphas = sorted(set(monos))
    col = {a: i for i, a in enumerate(alphas)}
    for eps in itertools.product((1.0, -1.0), repeat=k):
        slope = [ap if e > 0 else am for e in eps]
        coef = []
        for per in local:
            c = 0.0 if any(t >= 2 for ts in per for t in ts) else 1.0  # pointwise s'' = s''' = 0
            for p, ts in enumerate(per):
                c *= slope[p] ** len(ts) * eps[p] ** sum(1 for t in ts if t == 0)
            coef.append(c)
        if not any(coef):
            continue
        e = np.array(eps)
        M = orthant(K * np.outer(e, e), alphas)
        for n, c in enumerate(coef):
            if c:
                out[:, n] += c * M[:, col[monos[n]]]
    return out


# ---------------------------------------------------------------------------------------------------
# assembling the averages of every layer
# ---------------------------------------------------------------------------------------------------


def ntk_averages(act, K, *, layers=None, core=None) -> NTKAverages:
    """Every Gaussian average the NTK-statistics recursions need, at kernels ``K`` ``(B, d, d)`` (or ``(d, d)``).
    ``layers``: layer numbers for error messages; ``core``: only the averages over input sets with at most one
    input at index ``>= core`` (:func:`pdlt.theory.finite_width.in_star`; the rest are 0). Raises
    :class:`~pdlt.errors.SingularKernelError` for a nearly singular 2x2 sub-block (of the star)."""
    from ..activations import activation as _lookup

    act = _lookup(act)
    K = np.asarray(K, dtype=np.float64)
    if K.ndim == 2:
        K = K[None]
    K = gaussian.check_kernel(K)
    B, d = K.shape[0], K.shape[-1]
    layers = list(range(1, B + 1)) if layers is None else list(layers)
    ar = np.arange(d)
    diag = K[:, ar, ar]
    _check_resolution(act, diag, layers)
    prod1, stein1, hess1, four1, hess_ss1, four_ss1 = _single_averages(act, diag)
    pairs, pav = _pair_averages(act, K, layers, core)

    prods = np.zeros((B, 7, d, d))  # [., k, a, c] = <s_i(z_a) s_j(z_c)> for (i, j) = _PAIR_PRODUCTS[k]
    prods[:, :, ar, ar] = np.moveaxis(prod1, -1, 1)
    Y = np.zeros((4, B, d, d, d))  # Stein function k: [a, c, g] = <d_g (s_i(z_a) s_j(z_c))>
    for k in range(4):
        Y[k][:, ar, ar, ar] = stein1[..., k]
    Hdd = np.zeros((B, d, d, d, d))
    Hdd[:, ar, ar, ar, ar] = hess1
    Qp = np.zeros((B, len(pairs), 2, 2, 2, 2))
    # s s Hermite averages (finite_width.layer_averages' D, Qd, Qp), filled here for smooth sigma
    Hss = np.zeros((B, d, d, d, d))
    Hss[:, ar, ar, ar, ar] = hess_ss1
    Qp_ss = np.zeros((B, len(pairs), 2, 2, 2, 2))
    swap = {0: 0, 1: 1, 2: 3, 3: 2, 4: 5, 5: 4, 6: 6}  # (i, j) -> (j, i) in _PAIR_PRODUCTS
    for (b, p), v in pav.items():
        ia, ic = pairs[p]
        if v is None:
            continue
        prod, stein, hess, four, hf_ss = v
        for k in range(7):
            prods[b, k, ia, ic] = prod[k]
            prods[b, swap[k], ic, ia] = prod[k]
        # Stein functions (i, j) on (u0, u1) = (z_ia, z_ic); the (j, i) function on (z_ic, z_ia) is the same one
        for k, (i, j) in enumerate(_STEIN):
            kk = _STEIN.index((j, i))
            Y[k][b, ia, ic, ia], Y[k][b, ia, ic, ic] = stein[k]
            Y[kk][b, ic, ia, ia], Y[kk][b, ic, ia, ic] = stein[k]
        ix = (ia, ic)
        for i, j in itertools.product((0, 1), repeat=2):
            Hdd[b, ia, ic, ix[i], ix[j]] = Hdd[b, ic, ia, ix[i], ix[j]] = hess[i + j]
        for idx in itertools.product((0, 1), repeat=4):
            Qp[(b, p) + idx] = four[sum(idx)]
        for i, j in itertools.product((0, 1), repeat=2):
            Hss[b, ia, ic, ix[i], ix[j]] = Hss[b, ic, ia, ix[i], ix[j]] = hf_ss[0][i + j]
        for idx in itertools.product((0, 1), repeat=4):
            Qp_ss[(b, p) + idx] = hf_ss[1][sum(idx)]
    # deterministic inputs (K_aa = 0) in a pair: products only
    dead = [(b, p) for (b, p), v in pav.items() if v is None]
    for b, p in dead:
        ia, ic = pairs[p]
        S = K[b][np.ix_((ia, ic), (ia, ic))]

        def f(u):
            s0 = derivatives(act, u[..., 0], (0, 1, 2, 3))
            s1 = derivatives(act, u[..., 1], (0, 1, 2, 3))
            return np.stack([s0[i] * s1[j] for i, j in _PAIR_PRODUCTS], axis=-1)

        if not act.kinks:   # the live input's 1D average at its z-spacing (the capped 2D rule was 3e-4 off at K ~ 800)
            v, err = several_inputs(act, S[None], [[(i,), (j,)] for i, j in _PAIR_PRODUCTS], f,
                                    singular_cond=SINGULAR_COND)
            refuse_capped(act, f"at inputs {ia} and {ic}", err, S[None], [layers[b]])
            prod = v[0]
        else:
            prod = np.asarray(gaussian.expect(f, S, kinks=act.kinks))
        for k in range(7):
            prods[b, k, ia, ic] = prod[k]
            prods[b, swap[k], ic, ia] = prod[k]
    Qd = four1
    dd = LayerAverages(K=K, P2=prods[:, 1], P4=np.zeros((B,) + (d,) * 4), D=Hdd, Qd=Qd, Qp=Qp, pairs=pairs)
    M = _four_products(act, K, with_P4=not act.kinks, core=core, layers=layers)
    if act.kinks:  # the s s Hermite averages keep the kinks' delta functions: finite_width's rules
        ss = layer_averages(act, K, layers=layers, core=core)
    else:  # the same averages as finite_width.layer_averages, from the evaluations above
        ss = LayerAverages(K=K, P2=prods[:, 0], P4=M.pop("P4"), D=Hss, Qd=four_ss1, Qp=Qp_ss, pairs=pairs)
    return NTKAverages(K=K, P00=prods[:, 0], P11=prods[:, 1], P20=prods[:, 2], P31=prods[:, 4], P22=prods[:, 6],
                       Y10=Y[0], Y21=Y[2], Hss=ss.D, Hdd=Hdd, ss=ss, dd=dd, **M)


# ---------------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------------


def ntk_statistics(net: MLP, x, lambda_b=1.0, lambda_W=1.0) -> NTKStatistics:
    """The O(1/n) NTK statistics Theta1, A, B, D, F, P, Q, R, S, T, U of every layer of ``net`` for inputs ``x``
    ``(d, n_0)`` (derivations/README.md section 17), with per-layer ``C_W, C_b``, learning rates ``lambda_b``,
    ``lambda_W`` (scalars or per-layer) and width ratios ``r_l = n_l/n_{l-1}``.

    Residual networks with shortcuts (up to four inputs, one hidden width): every statistic from the trajectory
    theory of a neuron's parameter jet (:mod:`pdlt.theory.residual_ntk`); branch scales without shortcuts: the plain
    recursions.

    Raises :class:`ParameterError` for more than :data:`MAX_INPUTS` inputs (networks with shortcuts: more than four);
    :class:`~pdlt.errors.SingularKernelError` for (nearly) identical or parallel inputs;
    :class:`~pdlt.errors.DivergentFlowError` naming the layer where a statistic leaves float64's range.
    """
    lb, lw = _check(net, lambda_b, lambda_W)
    if net.residual:
        return _residual(net, x, lb, lw)
    d = net.inputs(x).shape[0]
    if d > MAX_INPUTS:
        raise ParameterError(f"ntk_statistics supports up to {MAX_INPUTS} inputs (the averages of four distinct "
                             f"inputs grow like d^4); got d = {d}: split the inputs into groups", "x")
    return _statistics(net, x, lb, lw, None)


def star_statistics(net: MLP, x, core: int, lambda_b=1.0, lambda_W=1.0) -> NTKStatistics:
    """:func:`ntk_statistics` restricted to the index tuples with at most one input outside the first ``core``
    inputs (a "star" around the core, e.g. a training set and several test inputs: what the O(1/n) trained mean
    needs). On those tuples the result equals :func:`ntk_statistics` of the core plus that one input (each
    statistic follows from the averages over its own inputs); the other entries of ``Theta1, G1, V`` and ``A..U`` (two
    or more inputs outside the core) are not computed and hold 0 (``Theta`` and ``K`` are complete). ``core <= MAX_INPUTS - 1`` and ``d <= STAR_MAX_INPUTS``: the cost grows like
    ``core^3`` per outside input instead of ``d^4``."""
    lb, lw = _check(net, lambda_b, lambda_W)
    if net.residual:
        raise ParameterError("star_statistics is for plain MLPs (the residual NTK statistics have no star form and "
                             "take at most four inputs); use ntk_statistics", "net")
    d = net.inputs(x).shape[0]
    if not (isinstance(core, (int, np.integer)) and 1 <= core < MAX_INPUTS):
        raise ParameterError(f"core must be an int in 1..{MAX_INPUTS - 1}, got {core!r}", "core")
    if d > STAR_MAX_INPUTS:
        raise ParameterError(f"star_statistics holds (d,)^4 tensors per layer: at most {STAR_MAX_INPUTS} inputs, got "
                             f"d = {d}; take the outside inputs in groups", "x")
    return _statistics(net, x, lb, lw, int(core))


def _ntk_caveats(net: MLP, Theta, out: dict) -> tuple:
    """A ``"truncation"`` caveat at the first layer where the NTK's own expansion parameter, its relative variance
    ``(A + 2B)_(aa)(aa) / (n_{l-1} Theta_aa^2)`` (the analogue of the metric's ``V/(n K^2)``), is not small: it can
    be large where the preactivations' is not (learning rates on the first layers only: tanh, L = 8, n = 32, training
    layer 1 alone gives 0.60 against V/(nK^2) = 0.14)."""
    ratios = [float(np.max(np.abs(diagonal_ratio(out["A"][l - 1], out["B"][l - 1], Theta[l - 1], net.widths[l - 1]))))
              for l in range(2, Theta.shape[0] + 1)]
    c = first_truncation_caveat(ratios, "max_a (A + 2B)_(aa)(aa)/(n_{l-1} Theta_aa^2) (the NTK's relative variance)",
                                2, "widen the network or reduce the depth (L/n); th.truncation_error gives the "
                                "error where it is known: for deep linear networks, bias-free ReLU networks "
                                "(an exact chain) and smooth activations (the computed O(1/n^2) term, "
                                "pdlt.ntk_nnlo), the entries of several inputs through a derived bound",
                                what_tex=r"$\max_a (A + 2B)_{(aa)(aa)}/(n_{\ell-1} \Theta_{aa}^2)$ (the NTK's relative "
                                "variance)",
                                advice_tex=r"widen the network or reduce the depth ($L/n$); "
                                r"\texttt{th.truncation\_error} gives the error where it is known: for deep linear "
                                r"networks, bias-free ReLU networks (an exact chain) and smooth activations (the "
                                r"computed $O(1/n^2)$ term, \texttt{pdlt.ntk\_nnlo}), the entries of several inputs "
                                "through a derived bound")
    return () if c is None else (c,)


def _check(net, lambda_b, lambda_W):
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    return learning_rates(net, lambda_b, lambda_W)


def _residual(net: MLP, x, lb, lw) -> NTKStatistics:
    """Residual networks: the trajectory theory of a neuron's parameter jet (:mod:`pdlt.theory.residual_ntk`). Without
    shortcuts (every gamma = 0) a branch scale xi is a dense step with ``xi^2`` times ``C_W``, ``C_b`` and the learning
    rates (the derivatives along its weights carry one xi each): the plain recursions, any number of inputs."""
    xs = net.inputs(x)
    if not any(net.gamma):
        f = [1.0] + [float(v) ** 2 for v in net.xi[1:]]
        plain = MLP(net.activation, net.widths, C_W=[a * b for a, b in zip(f, net.C_W)],
                    C_b=[a * b for a, b in zip(f, net.C_b)])
        st = ntk_statistics(plain, xs, [a * b for a, b in zip(f, lb)], [a * b for a, b in zip(f, lw)])
        return replace(st, net=net, lambda_b=lb, lambda_W=lw)
    if xs.shape[0] > RESIDUAL_MAX_INPUTS:
        raise ParameterError(f"the 1/n NTK statistics of residual networks with shortcuts take at most "
                             f"{RESIDUAL_MAX_INPUTS} inputs at once (each entry involves at most four); got d = "
                             f"{xs.shape[0]}: pass them in groups of {RESIDUAL_MAX_INPUTS}", "x")
    if len(set(net.widths[1:net.L])) > 1:
        raise ParameterError(f"the 1/n NTK statistics of residual networks are derived for one hidden width; got "
                             f"widths = {net.widths}: make the hidden widths equal", "widths")
    th = ntk(net, xs, lambda_b=lb, lambda_W=lw)
    flow = kernel_flow(net, xs)
    try:
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            out = residual_ntk_statistics(net.activation, flow.K[0], th.Theta[0], net.C_W, net.C_b, net.gamma,
                                          net.xi, lb, lw)
    except SingularKernelError as err:
        raise SingularKernelError(f"{err} (the residual NTK statistics)") from None
    except np.linalg.LinAlgError as err:  # the response matrix has lost its digits: kernels at the edge of the range
        raise SingularKernelError(f"the residual NTK statistics' linear response is numerically singular ({err}): "
                                  "the kernels are at the edge of their range; scale the inputs toward K ~ 1") from None
    hit = first_out_of_range(out)
    if hit:
        bad, l = list(hit), min(hit.values()) + 1
        raise DivergentFlowError(f"the NTK statistic(s) {', '.join(bad)} of the residual network leave float64's range "
                                 f"at layer l = {l}: move C_W, gamma toward criticality (pdlt.residual_criticality), "
                                 "lower the learning rates or reduce the depth", layer=l)
    stats = {k: out[k] for k in _FIELDS}
    caveats = truncation_caveats(FiniteWidth(net, th.x, out["K"], out["G1"], out["V"], caveats=())) \
        + _ntk_caveats(net, th.Theta, stats)
    emit(caveats, stacklevel=4)
    return NTKStatistics(net=net, x=th.x, Theta=th.Theta, Theta1=out["Theta1"], K=out["K"], G1=out["G1"], V=out["V"],
                         lambda_b=lb, lambda_W=lw, **stats)


def _statistics(net: MLP, x, lb, lw, core) -> NTKStatistics:
    th = ntk(net, x, lambda_b=lb, lambda_W=lw)
    Kall = kernel_flow(net, x).K
    L, d = Kall.shape[0], Kall.shape[-1]
    Theta = th.Theta
    out = {k: np.zeros((L,) + (d,) * 4) for k in _FIELDS}
    Theta1 = np.zeros((L, d, d))
    G1 = np.zeros((L, d, d))
    V = np.zeros((L,) + (d,) * 4)
    if L > 1:
        try:
            with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
                avg = ntk_averages(net.activation, Kall[:-1], layers=list(range(1, L)), core=core)
        except SingularKernelError as err:
            raise SingularKernelError(f"{err} (the NTK statistics have no delta-expansion: pass distinct inputs)") \
                from None
        except ParameterError:
            raise                                   # (named already: an unresolved quadrature, _check_resolution)
        except (ValueError, FloatingPointError) as err:
            # the averages of products of four activations overflow before K does: name where the kernel got large
            diag = np.max(np.abs(np.diagonal(Kall, axis1=1, axis2=2)), axis=1)
            big = np.flatnonzero(~(diag <= 1e100))
            lb_ = int(big[0]) + 1 if big.size else None
            where = f": the kernel reaches K = {diag[lb_ - 1]:.3g} at layer l = {lb_}" if lb_ else ""
            if lb_ is None:
                # the kernel itself is finite: sigma's derivative forms overflow on the grid (|z| up to 9 sqrt(K);
                # swish's third derivative at K ~ 2500), at the layer of the largest variance
                lb_ = int(np.argmax(np.where(np.isfinite(diag[:-1]), diag[:-1], np.inf))) + 1
                where = (f": {net.activation.name}'s derivatives overflow on the quadrature grid at layer l = {lb_} "
                         f"(variance K = {diag[lb_ - 1]:.3g})")
            advice = ("the inputs are too large: scale x down" if lb_ == 1 else
                      f"C_W = {net.hyper(lb_)[0]:g} drives the flow far above criticality; move C_W, C_b toward "
                      "criticality (pdlt.criticality) or reduce the depth")
            raise DivergentFlowError(f"the Gaussian averages of the NTK statistics leave float64's range{where}; "
                                     f"{advice}", layer=lb_) from err
    if core is not None:
        star4, star2 = np.zeros((d,) * 4, dtype=bool), np.zeros((d, d), dtype=bool)
        star4[tuple(star_tuples(d, core).T)] = True
        star2[tuple(star_tuples(d, core, 2).T)] = True
    for l in range(1, L):  # layer l -> l + 1, arrays at index l - 1 -> l
        step = net.step(l + 1)
        r = net.width_ratio(l)
        one = avg.layer(l - 1)
        prev = {k: out[k][l - 1] for k in _FIELDS}
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            new, t1 = step.ntk_statistics_map(one, prev, Theta[l - 1], Theta1[l - 1], G1[l - 1], V[l - 1], lw[l], r)
            # G1 and V from the same averages (finite_width's recursions, the step's maps)
            V[l] = step.vertex_map(one.ss, V[l - 1:l], r)[0]
            G1[l] = step.nlo_kernel_map(one.ss, G1[l - 1:l], V[l - 1:l], r)[0]
        if core is not None:   # tuples with two or more inputs outside the core are not computed: 0, not leftovers
            new = {k: np.where(star4, v, 0.0) for k, v in new.items()}
            t1, V[l], G1[l] = np.where(star2, t1, 0.0), np.where(star4, V[l], 0.0), np.where(star2, G1[l], 0.0)
        for k in _FIELDS:
            out[k][l] = new[k]
        Theta1[l] = t1
        vals = dict(new, Theta1=t1, G1=G1[l], V=V[l])
        bad = [k for k, v in vals.items() if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > 1e300]
        if bad:
            raise DivergentFlowError(
                f"the NTK statistic(s) {', '.join(bad)} leave float64's range at layer l = {l + 1} (C_W = "
                f"{step.C_W:g}, lambda_W = {lw[l]:g}): the flow is far from criticality; move C_W toward criticality "
                "(pdlt.criticality), lower the learning rates or reduce the depth", layer=l + 1)
    # the preactivations' own truncation caveats (as pdlt.finite_width gives them for these K, G1, V), and the NTK's
    caveats = truncation_caveats(FiniteWidth(net, th.x, Kall, G1, V, caveats=())) + _ntk_caveats(net, Theta, out)
    emit(caveats, stacklevel=4)
    return NTKStatistics(net=net, x=th.x, Theta=Theta, Theta1=Theta1, K=Kall, G1=G1, V=V, lambda_b=lb,
                         lambda_W=lw, **out)

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
  lines of a rotated trapezoidal grid over the rest (:func:`_conditioned_one`); ~1e-14 relative against the same rule
  at half the spacing (tanh, GELU, K ~ 0.01..100), where gaussian.expect's default 3D / 4D rules are 1e-7 / 1e-5 off
  at K ~ 1 (worse at large K);
* scale-invariant sigma (ReLU family), 3 and 4 inputs: Gaussian moments of degree <= 2 over orthants in closed form,
  the 4D orthant probability as a 1D path integral (:func:`_scale_invariant_products`);
* otherwise (other kinked activations, deterministic inputs, huge grids): :func:`gaussian.expect`.

For smooth sigma the ``s s`` averages of :func:`pdlt.theory.finite_width.layer_averages` (``NTKAverages.ss``) come
from the same evaluations; kinked ones use ``layer_averages`` itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from .. import gaussian
from ..architecture import MLP
from ..closed_forms import graded_path_rule
from ..errors import DivergentFlowError, ParameterError, SingularKernelError
from .finite_width import SINGULAR_COND, LayerAverages, finite_width, layer_averages
from .ntk import learning_rates, ntk

__all__ = ["NTKStatistics", "NTKAverages", "ntk_statistics", "ntk_averages", "MAX_INPUTS"]

#: largest number of inputs accepted (the four-input averages grow like d^4 in number: d = 9 at L = 10 takes ~10 s
#: on 2 cores, d = 6 ~1.7 s); 9 lets the O(1/n) trained ensemble take 8 training inputs plus one test input
MAX_INPUTS = 9

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


def _derivs(act, z, orders):
    """``{t: s_t(z)}`` for the requested derivative orders (pointwise)."""
    out = {}
    for t in orders:
        if t == 0:
            out[t] = act(z)
        elif t == 1:
            out[t] = act.d1(z)
        elif t == 2:
            out[t] = act.d2(z)
        else:
            out[t] = act.d3(z)
    return out


def _nodes(act, K, h_w, h_z):
    """Trapezoid nodes per axis for :func:`gaussian.expect` on smooth activations (None: its default rule for
    kinked ones): spacing ``min(h_w, h_z / sqrt(max K_aa))`` in whitened units. expect's default 1D/2D spacing
    leaves ~1e-8 relative errors on products such as ``<s''^2 s'^2>``; this one ~1e-13."""
    if act.kinks:
        return None
    big = float(np.max(np.diagonal(np.asarray(K), axis1=-2, axis2=-1), initial=0.0))
    h = min(h_w, h_z / math.sqrt(big)) if big > 0 else h_w
    return 2 * int(min(math.ceil(9.0 / h), 1000)) + 1


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
    s0 = _derivs(act, u0, (0, 1, 2, 3))
    s1 = _derivs(act, u1, (0, 1, 2, 3))
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
    only, ``B`` summed over each w0 line, and all components come from one small matrix product."""
    pts, i0, W, _, _ = _ball_grid((m, m))
    ax = np.arange(-m, m + 1) * (_R / m)
    w1 = pts[1]
    s0 = _derivs(act, l00 * ax, (0, 1, 2, 3))
    s1 = _derivs(act, l10 * pts[0] + l11 * w1, (0, 1, 2, 3))
    h0, h1 = gaussian.hermite_e(ax), gaussian.hermite_e(w1)
    A = np.stack([s0[i] * h0[j] for i in range(4) for j in range(5)])  # row 5 i + j
    starts = np.flatnonzero(np.diff(i0, prepend=-1))  # the grid is sorted by its w0 index
    Bw = np.stack([s1[i] * h1[j] * W for i in range(4) for j in range(5)])
    C = np.add.reduceat(Bw, starts, axis=1)  # (20, lines): the w0 lines present in the ball
    T = A[:, i0[starts]] @ C.T  # T[5 i + j, 5 k + m] = <s_i(u0) He_j(w0) s_k(u1) He_m(w1)>
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


def _pair_averages(act, K, layers):
    """Per (kernel, pair a < c): products ``(N, 7)``, Stein ``<d f>`` ``(N, 4, 2)``, Hessian ``(N, 3)`` and
    fourth ``(N, 5)`` derivative averages of ``s'_a s'_c`` and ``s_a s_c`` (:func:`_pair_components_smooth`, or one
    :func:`gaussian.expect` call per sub-block for kinked sigma)."""
    B, d = K.shape[0], K.shape[-1]
    pairs = tuple(itertools.combinations(range(d), 2))
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

            n = _nodes(act, S, 0.2, 0.15)
            if act.kinks or n > _PAIR_MAX_N:  # kinks; or a grid too large for one array: expect's chunked rule
                H = np.asarray(gaussian.expect(f, S, kinks=act.kinks, n=n))
            else:
                H = _pair_components_smooth(act, l00, l10, l11, (n - 1) // 2)
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
        s = _derivs(act, z, (0, 1, 2, 3))
        comps = [s[i] * s[j] for i, j in _PAIR_PRODUCTS]
        comps += [s[i] * s[j] * z for i, j in _STEIN]
        z2 = z * z
        for g in (s[1] * s[1], s[0] * s[0]):
            comps += [g * z2, g * z2 * z2]
        return np.stack(comps, axis=-1)

    H = np.asarray(gaussian.expect(f, diag[..., None, None], kinks=act.kinks, n=_nodes(act, diag[..., None, None],
                                                                                      0.09, 0.06)))
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


def _key(idx, types):
    """Canonical key of ``<prod_k s_{types[k]}(z_{idx[k]})>``: per distinct input, its sorted derivative orders."""
    per = {}
    for a, t in zip(idx, types):
        per.setdefault(a, []).append(t)
    return tuple(sorted((a, tuple(sorted(ts))) for a, ts in per.items()))


def _four_products(act, K, with_P4=False):
    """The ``M*`` tensors ``(B, d, d, d, d)`` of :class:`NTKAverages` (and ``P4 = <s s s s>`` if ``with_P4``), each
    distinct average computed once, grouped by the set of distinct inputs it involves. Smooth sigma:
    :func:`_conditioned_one` per kernel and set; scale-invariant sigma: :func:`_scale_invariant_products` (closed
    forms) for three and four inputs; otherwise (and for deterministic inputs) one :func:`gaussian.expect` call per
    set, all kernels batched."""
    B, d = K.shape[0], K.shape[-1]
    types_all = dict(_M_TYPES, P4=(0, 0, 0, 0)) if with_P4 else _M_TYPES
    keys = {}
    for name, types in types_all.items():
        if any(_zero_order(act, t) for t in types):
            continue
        for idx in itertools.product(range(d), repeat=4):
            keys.setdefault(_key(idx, types), None)
    groups = {}
    for key in keys:
        groups.setdefault(tuple(a for a, _ in key), []).append(key)
    vals = {}
    for S, ks in groups.items():
        orders = sorted({t for key in ks for _, ts in key for t in ts})
        local = [[ts for _, ts in key] for key in ks]  # per key: derivative orders at each position of S

        def f(z, local=local, orders=orders):
            cols = [_derivs(act, z[..., k], orders) for k in range(z.shape[-1])]
            out = []
            for per in local:
                v = None
                for k, ts in enumerate(per):
                    for t in ts:
                        v = cols[k][t] if v is None else v * cols[k][t]
                out.append(v)
            return np.stack(out, axis=-1)

        sub = K[:, np.array(S)[:, None], np.array(S)[None, :]]
        res = np.full((B, len(ks)), np.nan)
        if len(S) >= 2 and not act.kinks:
            for b in range(B):
                v = _conditioned_one(act, sub[b], local)
                if v is not None:
                    res[b] = v
        elif len(S) >= 3 and act.scale_invariant:
            live = np.all(np.diagonal(sub, axis1=-2, axis2=-1) > 0, axis=-1)
            if np.any(live):
                res[live] = _scale_invariant_products(act, sub[live], local)
        todo = ~np.all(np.isfinite(res), axis=-1)
        if np.any(todo):  # the general rule: deterministic inputs, other kinked activations
            n = _nodes(act, sub, 0.09, 0.06) if len(S) == 1 else _nodes(act, sub, 0.2, 0.15) if len(S) == 2 else None
            res[todo] = np.asarray(gaussian.expect(f, sub[todo], kinks=act.kinks, n=n)).reshape(-1, len(ks))
        for j, key in enumerate(ks):
            vals[key] = res[:, j]
    out = {}
    for name, types in types_all.items():
        M = np.zeros((B,) + (d,) * 4)
        if not any(_zero_order(act, t) for t in types):
            for idx in itertools.product(range(d), repeat=4):
                M[(slice(None),) + idx] = vals[_key(idx, types)]
        out[name] = M
    return out


# ---------------------------------------------------------------------------------------------------
# fast rules for three and four distinct inputs
# ---------------------------------------------------------------------------------------------------

_R = 9.0  # radius of the trapezoidal ball (whitened units): the Gaussian mass outside is ~1e-17
# z-resolution of the trapezoid over the unconditioned coordinates (by their number) and of the inner 1D average,
# and the largest spacing in whitened units; measured against the same rule at half these: ~1e-14 relative for
# tanh and GELU products at K ~ 0.01..2.7 (0.3 / 0.33 leave 7e-11 / 1e-9 on <s''' s' s'> at K ~ 1)
_HZ_REST = {1: 0.2, 2: 0.2, 3: 0.25}
_HZ_INNER = 0.2
_HMAX = 0.5


def _ladder(m):
    """Round a half-width up to a ~9% ladder, so that kernels of one flow share a few cached grids."""
    m = max(int(m), 8)
    return int(math.ceil(8 * 1.09 ** math.ceil(math.log(m / 8) / math.log(1.09) - 1e-12)))


_BALL_CACHE: dict = {}
_BALL_CACHE_POINTS = 6_000_000  # all cached grids together (~40 bytes a point)
_MAX_POINTS = 2_000_000  # larger grids (huge kernels): the caller falls back to gaussian.expect's capped rules
_PAIR_MAX_N = 801


def _ball_grid(ms):
    """Trapezoidal nodes ``j R / m_k`` (``|j| <= m_k``) pruned to the ball ``|w| <= R``, for the standard normal in
    ``len(ms)`` dims: ``(points (k, N), integer index of axis 0 (N,), weights (N,), line (N,), starts)``, weights
    summing to 1; points sorted by their axis indices, ``line`` numbers the lines of fixed (axis 0, axis 1) indices
    and ``starts`` holds the first point of each line."""
    hit = _BALL_CACHE.get(ms)
    if hit is not None:
        return hit
    axes = [np.arange(-m, m + 1) * (_R / m) for m in ms]
    grids = np.meshgrid(*axes, indexing="ij")
    r2 = sum(g * g for g in grids)
    keep = r2 <= _R * _R * (1 + 1e-12)
    pts = np.stack([g[keep] for g in grids])
    i0 = np.meshgrid(*[np.arange(2 * m + 1) for m in ms], indexing="ij")[0][keep]
    w = np.exp(-0.5 * r2[keep])
    w /= w.sum()
    i1 = np.meshgrid(*[np.arange(2 * m + 1) for m in ms], indexing="ij")[1][keep] if len(ms) > 1 else 0 * i0
    new = np.ones(len(w), dtype=bool)
    new[1:] = (np.diff(i0) != 0) | (np.diff(i1) != 0)
    line, starts = np.cumsum(new) - 1, np.flatnonzero(new)
    if sum(len(v[2]) for v in _BALL_CACHE.values()) + len(w) > _BALL_CACHE_POINTS:
        _BALL_CACHE.clear()
    _BALL_CACHE[ms] = (np.ascontiguousarray(pts), i0, w, line, starts)
    return _BALL_CACHE[ms]


def _local(act, z, ts, memo):
    """``prod_{t in ts} s_t(z)`` with the derivatives of ``z`` memoized in ``memo``."""
    v = None
    for t in ts:
        if t not in memo:
            memo[t] = _derivs(act, z, (t,))[t]
        v = memo[t] if v is None else v * memo[t]
    return np.ones_like(z) if v is None else v


def _conditioned_one(act, S, local):
    """``[<prod_p prod_{t in ts_p} s_t(z_p)> for per in local]`` for one (k, k) kernel ``S`` (k = 2..4, smooth
    sigma), ``per[p] = ts_p`` the derivative orders at input p. Returns None where the rule does not apply.

    One coordinate j (the one with the largest relative conditional variance) is conditioned on the others:
    ``z_j = mu + tau xi`` with ``mu = beta . z_rest``. The rest are ``z_rest = A w`` with ``A`` rotated (QR) so that
    ``mu = c w_0``: on the trapezoidal grid of w, mu takes only the 2 m_0 + 1 values of the w_0 axis, where the
    1D averages ``h(mu) = <prod s_t(mu + tau xi)>_xi`` are computed exactly (1D trapezoid, no interpolation).
    All products of one subset share the nodes; the value of each is one dot product."""
    k = S.shape[0]
    diag = np.diag(S)
    if not np.all(diag > 0):
        return None
    best = None
    for j in range(k):
        rest = [i for i in range(k) if i != j]
        Kr, kv = S[np.ix_(rest, rest)], S[rest, j]
        try:
            beta = np.linalg.solve(Kr, kv)
        except np.linalg.LinAlgError:
            continue
        tau2 = S[j, j] - kv @ beta
        if best is None or tau2 / S[j, j] > best[0]:
            best = (tau2 / S[j, j], j, rest, Kr, beta, max(tau2, 0.0))
    if best is None:
        return None
    _, j, rest, Kr, beta, tau2 = best
    try:
        A0 = np.linalg.cholesky(Kr)
    except np.linalg.LinAlgError:
        return None
    if np.linalg.cond(Kr) > SINGULAR_COND:
        return None
    rmu = beta @ A0
    if np.max(np.abs(rmu)) > 0:
        Qm, Rm = np.linalg.qr(np.column_stack([rmu] + [A0[i] for i in range(k - 2)]))
        A, c = A0 @ Qm, Rm[0, 0]
    else:
        A, c = A0, 0.0
    colmax = np.max(np.abs(A), axis=0)
    colmax[0] = max(colmax[0], abs(c))
    hz = _HZ_REST[k - 1]
    ms = tuple(_ladder(math.ceil(_R / min(_HMAX, hz / cm))) if cm > 0 else 8 for cm in colmax)
    ball = math.pi ** (len(ms) / 2) / math.gamma(len(ms) / 2 + 1) * math.prod(ms)  # ~ points in the ball
    if ball > _MAX_POINTS or not np.isfinite(ball):
        return None
    pts, i0, W, line, starts = _ball_grid(ms)
    z = A @ pts
    if not np.all(np.isfinite(z)):
        return None
    tau = math.sqrt(tau2)
    mx = _ladder(math.ceil(_R / min(_HMAX, _HZ_INNER / tau))) if tau > 0 else 0
    if (2 * ms[0] + 1) * (2 * mx + 1) > _MAX_POINTS:
        return None
    xi = np.arange(-mx, mx + 1) * (_R / mx) if mx else np.zeros(1)
    om = np.exp(-0.5 * xi * xi)
    om /= om.sum()
    mu = c * np.arange(-ms[0], ms[0] + 1) * (_R / ms[0])
    zin = mu[:, None] + tau * xi[None, :]
    memo_in = {}
    memos = [{} for _ in rest]
    # with k = 4 the first of the rest lies in span(w_0, w_1) (the QR above): evaluate it once per line of the grid
    first = z[0][starts] if k == 4 else z[0]
    Hj, Fp = {}, [{} for _ in rest]
    out = np.empty(len(local))
    for n, per in enumerate(local):
        ts = per[j]
        if ts not in Hj:
            Hj[ts] = (_local(act, zin, ts, memo_in) @ om)[i0]
        v = W * Hj[ts]
        for p, i in enumerate(rest):
            if per[i] not in Fp[p]:
                if p == 0 and k == 4:
                    Fp[p][per[i]] = _local(act, first, per[i], memos[p])[line]
                else:
                    Fp[p][per[i]] = _local(act, z[p], per[i], memos[p])
            v = v * Fp[p][per[i]]
        out[n] = np.sum(v)
    return out if np.all(np.isfinite(out)) else None


# orthant moments of N(0, S) for scale-invariant activations -------------------------------------------------

# the four-variate orthant probability is a path integral in t with the same graded rule as closed_forms
_TN, _TW = graded_path_rule()


def _cond(S, j):
    """Covariance of the other coordinates given ``z_j = 0``: ``(B, k-1, k-1)``."""
    rest = [i for i in range(S.shape[-1]) if i != j]
    sj = S[:, rest, j]
    return S[:, rest][:, :, rest] - sj[:, :, None] * sj[:, None, :] / S[:, j, j][:, None, None]


def _orthant_P(S):
    """``P(z > 0)`` for ``z ~ N(0, S)``, ``S`` (B, k, k), k = 0..4: ``1/2^k + sum_{i<j} asin(rho_ij) / (2^(k-1) pi)``
    for k <= 3; for k = 4 (Plackett: ``dP/dS_ij = p_ij(0, 0) P(z_k, z_l > 0 | z_i = z_j = 0)``) along
    ``S(t) = diag S + t offdiag S`` the extra
    ``sum_{i<j} int_0^1 S_ij asin(rho_{kl|ij}(t)) / (4 pi^2 sqrt(det_ij(t))) dt``."""
    B, k = S.shape[0], S.shape[-1]
    if k == 0:
        return np.ones(B)
    out = np.full(B, 0.5**k)
    if k == 1:
        return out
    from ..activations import correlation_angle

    for i, j in itertools.combinations(range(k), 2):
        out = out + correlation_angle(S[:, i, i], S[:, j, j], S[:, i, j]) / (2.0 ** (k - 1) * np.pi)
    if k < 4:
        return out
    t = _TN[None, :]
    for i, j in itertools.combinations(range(4), 2):
        a, b = (m for m in range(4) if m not in (i, j))
        sii, sjj, sij = S[:, i, i][:, None], S[:, j, j][:, None], t * S[:, i, j][:, None]
        det = sii * sjj - sij * sij
        # (z_a, z_b) given z_i = z_j = 0 under S(t): S_xy - s_x^T inv(S_ij) s_y
        sa = (t * S[:, a, i][:, None], t * S[:, a, j][:, None])
        sb = (t * S[:, b, i][:, None], t * S[:, b, j][:, None])

        def quad(u, v):
            return (u[0] * (sjj * v[0] - sij * v[1]) + u[1] * (sii * v[1] - sij * v[0])) / det

        caa = S[:, a, a][:, None] - quad(sa, sa)
        cbb = S[:, b, b][:, None] - quad(sb, sb)
        cab = t * S[:, a, b][:, None] - quad(sa, sb)
        ang = correlation_angle(caa, cbb, cab)
        out = out + (S[:, i, j][:, None] * ang / np.sqrt(det)) @ _TW / (4.0 * np.pi * np.pi)
    return out


def _orthant_m(S):
    """``E[z_i 1{z > 0}]`` ``(B, k)``: Stein, ``sum_j S_ij p_j(0) P(z_-j > 0 | z_j = 0)``."""
    k = S.shape[-1]
    out = np.zeros(S.shape[:2])
    for j in range(k):
        g = _orthant_P(_cond(S, j)) / np.sqrt(2.0 * np.pi * S[:, j, j])
        out += S[:, :, j] * g[:, None]
    return out


def _orthant_M(S):
    """``E[z_i z_l 1{z > 0}]`` ``(B, k, k)``: Stein on ``z_i`` with ``g = z_l 1{z > 0}``,
    ``S_il P + sum_{j != l} S_ij p_j(0) E[z_l 1{z_-j > 0} | z_j = 0]``."""
    k = S.shape[-1]
    out = S * _orthant_P(S)[:, None, None]
    for j in range(k):
        mj = _orthant_m(_cond(S, j)) / np.sqrt(2.0 * np.pi * S[:, j, j])[:, None]  # (B, k-1): l over rest
        rest = [i for i in range(k) if i != j]
        out[:, :, rest] += S[:, :, j][:, :, None] * mj[:, None, :]
    return out


def _scale_invariant_products(act, K, local):
    """The products of :func:`_four_products` for ``s = a_+ z (z > 0), a_- z (z < 0)`` (orders 0, 1 only), ``K``
    (B, k, k) with positive variances: ``s_0(z)^n s_1(z)^m = a^(n+m) z^n`` on each side, so every product is a sum
    over the 2^k orthants of slopes times ``E[1]``, ``E[z_i 1]`` or ``E[z_i z_l 1]`` on the orthant (total degree
    <= 2), i.e. on the positive orthant of ``D K D`` (``D = diag(signs)``)."""
    ap, am = (float(v) for v in act.slopes)
    B, k = K.shape[0], K.shape[-1]
    out = np.zeros((B, len(local)))
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
        Se = K * np.outer(e, e)
        P = m = M = None
        for n, per in enumerate(local):
            if coef[n] == 0.0:
                continue
            mono = [p for p, ts in enumerate(per) for t in ts if t == 0]
            if len(mono) == 0:
                P = _orthant_P(Se) if P is None else P
                v = P
            elif len(mono) == 1:
                m = _orthant_m(Se) if m is None else m
                v = m[:, mono[0]]
            else:
                M = _orthant_M(Se) if M is None else M
                v = M[:, mono[0], mono[1]]
            out[:, n] += coef[n] * v
    return out


# ---------------------------------------------------------------------------------------------------
# assembling the averages of every layer
# ---------------------------------------------------------------------------------------------------


def ntk_averages(act, K, *, layers=None) -> NTKAverages:
    """Every Gaussian average the NTK-statistics recursions need, at kernels ``K`` ``(B, d, d)`` (or ``(d, d)``).
    ``layers``: layer numbers for error messages. Raises :class:`~pdlt.errors.SingularKernelError` for a nearly
    singular 2x2 sub-block."""
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
    prod1, stein1, hess1, four1, hess_ss1, four_ss1 = _single_averages(act, diag)
    pairs, pav = _pair_averages(act, K, layers)

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
            s0 = _derivs(act, u[..., 0], (0, 1, 2, 3))
            s1 = _derivs(act, u[..., 1], (0, 1, 2, 3))
            return np.stack([s0[i] * s1[j] for i, j in _PAIR_PRODUCTS], axis=-1)

        prod = np.asarray(gaussian.expect(f, S, kinks=act.kinks))
        for k in range(7):
            prods[b, k, ia, ic] = prod[k]
            prods[b, swap[k], ic, ia] = prod[k]
    Qd = four1
    dd = LayerAverages(K=K, P2=prods[:, 1], P4=np.zeros((B,) + (d,) * 4), D=Hdd, Qd=Qd, Qp=Qp, pairs=pairs)
    M = _four_products(act, K, with_P4=not act.kinks)
    if act.kinks:  # the s s Hermite averages keep the kinks' delta functions: finite_width's rules
        ss = layer_averages(act, K, layers=layers)
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

    Raises :class:`ParameterError` for residual networks (naming ``gamma``: their 1/n state is a neuron's whole
    trajectory, not derived for the NTK) and for more than :data:`MAX_INPUTS` inputs;
    :class:`~pdlt.errors.SingularKernelError` for (nearly) identical or parallel inputs;
    :class:`~pdlt.errors.DivergentFlowError` naming the layer where a statistic leaves float64's range.
    """
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if getattr(net, "residual", False):
        raise ParameterError(
            "the 1/n NTK statistics are derived for plain MLPs only: with a shortcut (gamma != 0) or branch scale "
            "(xi != 1) a neuron's 1/n state is its whole trajectory through the layers (pdlt.theory.residual), which "
            "the NTK recursions do not carry; set gamma = 0 (and xi = 1)", "gamma")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    d = net.inputs(x).shape[0]
    if d > MAX_INPUTS:
        raise ParameterError(f"ntk_statistics supports up to {MAX_INPUTS} inputs (the averages of four distinct "
                             f"inputs grow like d^4); got d = {d}: split the inputs into groups", "x")
    th = ntk(net, x, lambda_b=lb, lambda_W=lw)
    fw = finite_width(net, x)
    Kall, G1, V = fw.K, fw.G1, fw.V
    L = Kall.shape[0]
    Theta = th.Theta
    out = {k: np.zeros((L,) + (d,) * 4) for k in _FIELDS}
    Theta1 = np.zeros((L, d, d))
    if L > 1:
        try:
            with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
                avg = ntk_averages(net.activation, Kall[:-1], layers=list(range(1, L)))
        except SingularKernelError as err:
            raise SingularKernelError(f"{err} (the NTK statistics have no delta-expansion: pass distinct inputs)") \
                from None
        except (ValueError, FloatingPointError) as err:
            # the averages of products of four activations overflow before K does: name where the kernel got large
            diag = np.max(np.abs(np.diagonal(Kall, axis1=1, axis2=2)), axis=1)
            big = np.flatnonzero(~(diag <= 1e100))
            lb_ = int(big[0]) + 1 if big.size else None
            where = f": the kernel reaches K = {diag[lb_ - 1]:.3g} at layer l = {lb_}" if lb_ else ""
            advice = ("the inputs are too large: scale x down" if lb_ == 1 else
                      f"C_W = {net.hyper(lb_ or L)[0]:g} drives the flow far above criticality; move C_W, C_b toward "
                      "criticality (pdlt.criticality) or reduce the depth")
            raise DivergentFlowError(f"the Gaussian averages of the NTK statistics leave float64's range{where}; "
                                     f"{advice}", layer=lb_) from err
    for l in range(1, L):  # layer l -> l + 1, arrays at index l - 1 -> l
        step = net.step(l + 1)
        prev = {k: out[k][l - 1] for k in _FIELDS}
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            new, t1 = step.ntk_statistics_map(avg.layer(l - 1), prev, Theta[l - 1], Theta1[l - 1], G1[l - 1],
                                              V[l - 1], lw[l], net.width_ratio(l))
        for k in _FIELDS:
            out[k][l] = new[k]
        Theta1[l] = t1
        bad = [k for k in _FIELDS + ("Theta1",)
               if not np.all(np.isfinite(new[k] if k != "Theta1" else t1))
               or np.max(np.abs(new[k] if k != "Theta1" else t1)) > 1e300]
        if bad:
            raise DivergentFlowError(
                f"the NTK statistic(s) {', '.join(bad)} leave float64's range at layer l = {l + 1} (C_W = "
                f"{step.C_W:g}, lambda_W = {lw[l]:g}): the flow is far from criticality; move C_W toward criticality "
                "(pdlt.criticality), lower the learning rates or reduce the depth", layer=l + 1)
    return NTKStatistics(net=net, x=th.x, Theta=Theta, Theta1=Theta1, K=Kall, G1=G1, V=V, lambda_b=lb,
                         lambda_W=lw, **out)

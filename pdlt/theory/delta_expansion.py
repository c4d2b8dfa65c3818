r"""delta-expansion of the 1/n statistics (V, G1) for two nearby inputs, via the derivative field.

Two inputs ``x_{+-} = x_0 +- dx/2`` have a nearly singular 2x2 kernel, so the multi-input recursions of
:mod:`pdlt.theory.finite_width` (which need its 2x2 Hermite averages) break down as ``dx -> 0``. PDLT
(section 5.1) expands the kernel in the gamma basis instead (:func:`pdlt.delta_flow`); this module does the
same for the four-point vertex and the NLO kernel.

**Coordinates.** Write every neuron's pair of preactivations as ``u = (z_+ + z_-)/2`` (the midpoint field)
and ``w = (z_+ - z_-)/eps`` for ``dx -> eps dx``. As ``eps -> 0``, ``u -> z(x_0)`` and ``w -> dx . grad_x z``:
the directional *derivative field*. Any symmetric 2x2 tensor T on (x_+, x_-) has gamma components
(``T = T_[0] g0 + T_[1] g1 + T_[2] g2``, see :func:`pdlt.gamma_components`) related to its (u, w)
components by ``T_uu = T_[0]``, ``T_uw = T_[1]/eps``, ``T_ww = 4 T_[2]/eps^2``. In (u, w) coordinates every
statistic is O(1) and even in eps, and the recursions are covariant, so their ``eps -> 0`` limit is again
the multi-input recursion, with the activation replaced by the two-component feature map

    S_u = (sigma(z_+) + sigma(z_-))/2  ->  sigma(u),      S_w = (sigma(z_+) - sigma(z_-))/eps  ->  w sigma'(u)

and the 2x2 kernel ``K_zeta = [[K00, dK1], [dK1, 4 ddK2]]`` of (u, w) (singular only if dx is parallel to
x_0 with no bias, which is harmless here). With ``C = C^(l+1)``, ``K = K_zeta^(l)``, ``r = n_l/n_{l-1}``:

    K'_ij  = C_b c_i c_j + C_W <S_i S_j>_K                                    (c = (1, 0))
    V'_(ij)(kl) = C_W^2 [<S_i S_j S_k S_l> - <S_i S_j><S_k S_l>]
                  + r (C_W^2/4) sum_{abcd} V_(ab)(cd) <d_a d_b (S_i S_j)> <d_c d_d (S_k S_l)>
    G1'_ij = r C_W [ (1/2) sum_ab G1_ab <d_a d_b (S_i S_j)> + (1/8) sum_abcd V_(ab)(cd) <d_a d_b d_c d_d (S_i S_j)> ]

(derivations/README.md §7-8 and 10, in the Hessian form of :mod:`pdlt.theory.finite_width`; Stein's lemma makes both
forms covariant under the linear change z -> (u, w)). Every product ``S_i S_j ...`` is ``w^m B(u)`` with
``B = sigma^(k-m) sigma'^m``; averages over ``w`` use ``w | u ~ N(mu u, s^2)``, ``mu = dK1/K00``,
``s^2 = 4 ddK2 - dK1^2/K00`` (exact also when s = 0), and derivatives ``d_u^p`` are moved onto the Gaussian
density by parts, ``<B^(p)(u) P(u)> = <B(u) (-1)^p T^p P>`` with ``T P = P' - u P/K00``. So only the 1D
averages ``<sigma^a sigma'^b u^j>_{K00}`` (a + b in {2, 4}, j <= 6) are ever needed: sigma'' never appears,
and kinked activations (ReLU family) stay exact.

**What is returned.** The leading term of every gamma component, with the powers of dx absorbed as in
:class:`pdlt.DeltaFlow`:

    V_[00] = V00 + O(dx^2),     V_[01] = dV01 + O(dx^3),    V_[11] = ddV11 + O(dx^4),
    V_[02] = ddV02 + O(dx^4),   V_[12] = dddV12 + O(dx^5),  V_[22] = ddddV22 + O(dx^6),
    G1_[0] = G1_00 + O(dx^2),   G1_[1] = dG1_1 + O(dx^3),   G1_[2] = ddG1_2 + O(dx^4),

where ``V_(a1a2)(a3a4) = sum_ij g^[i]_{a1a2} g^[j]_{a3a4} V_[ij]`` (:func:`gamma_vertex`). ``V_[ij]/n`` is the
covariance of the gamma components of the stochastic metric; ``G^_[2] = (C_W/(4 n)) sum_j (s_j(x_+) -
s_j(x_-))^2`` is a quarter of the squared distance between the two inputs' previous-layer features (in the
metric C_W/n), so ``V_[22]/n`` is the variance of a quarter of that squared distance. The O(dx^2) corrections of the midpoint components
(the analogues of ``ddK0``) are not computed. For smooth activations the relative corrections to each
leading term are O(dx^2); for kinked ones (ReLU family) they are O(|dx|), because the arc-cosine kernel has
``|psi|^3`` terms. The leading terms are exact in both cases.

Structure (asserted as a polynomial identity for a generic cubic activation in
``derivations/delta_expansion.py``, checked numerically for tanh, GELU and ReLU in the tests): the recursion for ``V_[ij]`` is triangular, its
own coefficient is ``r chi_i chi_j`` with ``chi_0 = chi_1 = chi_par`` and ``chi_2 = chi_perp``; the midpoint
components ``V00, G1_00`` obey the single-input recursions.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import gaussian
from ..activations import require_continuous
from ..architecture import MLP
from ..errors import DivergentFlowError, ParameterError, emit, first_truncation_caveat
from .finite_width import FiniteWidth
from ..layers import metric
from .kernel import (from_gamma, kernel_flow, midpoint_and_separation, scale_exponent, scaled_activation,
                     separation_caveat)

__all__ = [
    "DeltaFiniteWidth",
    "delta_finite_width",
    "gamma_vertex",
    "from_gamma_vertex",
    "zeta_step",
    "GAMMA_ORDERS",
]

#: powers of dx carried by the gamma components [0], [1], [2]
GAMMA_ORDERS = (0, 1, 2)
#: the sigma^a sigma'^b products whose averages <sigma^a sigma'^b u^j> the recursions need
PRODUCTS = ((2, 0), (1, 1), (0, 2), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4))
MAX_POWER = 6

_IDX2 = list(itertools.product((0, 1), repeat=2))
_IDX4 = list(itertools.product((0, 1), repeat=4))


# ---------------------------------------------------------------------------------------------------
# gamma <-> (u, w) components of a two-input vertex
# ---------------------------------------------------------------------------------------------------

# rows: gamma components; zeta (u, w) components of a symmetric 2x2 tensor at eps = 1: uu, uw, ww/4
_ZETA_INV = np.array([[0.5, 0.5], [1.0, -1.0]])  # (u, w) = _ZETA_INV @ (z_+, z_-)
_GAMMA = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]])


def gamma_vertex(V) -> np.ndarray:
    """The 3x3 gamma components ``V_[ij]`` of a two-input vertex ``V (..., 2, 2, 2, 2)`` on (x_+, x_-).

    ``V_(a1a2)(a3a4) = sum_ij g^[i]_{a1a2} g^[j]_{a3a4} V_[ij]`` with the PDLT gamma matrices
    ``g^[0] = [[1,1],[1,1]], g^[1] = [[1,0],[0,-1]], g^[2] = [[1,-1],[-1,1]]`` (inverse: :func:`from_gamma_vertex`).
    ``V_[ij]/n`` is the covariance of the gamma components of the stochastic metric.
    """
    V = np.asarray(V, dtype=np.float64)
    if V.shape[-4:] != (2, 2, 2, 2):
        raise ParameterError(f"the gamma basis is for two inputs: V must have shape (..., 2, 2, 2, 2), got {V.shape}")
    Z = np.einsum("ia,jb,kc,ld,...abcd->...ijkl", _ZETA_INV, _ZETA_INV, _ZETA_INV, _ZETA_INV, V)
    return _gamma_from_zeta(Z)


def from_gamma_vertex(Vg) -> np.ndarray:
    """Inverse of :func:`gamma_vertex`: ``(..., 3, 3)`` symmetric -> ``(..., 2, 2, 2, 2)``."""
    Vg = np.asarray(Vg, dtype=np.float64)
    if Vg.shape[-2:] != (3, 3):
        raise ParameterError(f"gamma components of a vertex have shape (..., 3, 3), got {Vg.shape}")
    return np.einsum("iab,jcd,...ij->...abcd", _GAMMA, _GAMMA, Vg)


def _gamma_from_zeta(Z) -> np.ndarray:
    """(u, w) components ``(..., 2, 2, 2, 2)`` (at eps = 1) -> gamma ``(..., 3, 3)``."""
    out = np.empty(Z.shape[:-4] + (3, 3))
    comps = {(0, 0): Z[..., 0, 0, 0, 0], (0, 1): Z[..., 0, 0, 0, 1], (1, 1): Z[..., 0, 1, 0, 1],
             (0, 2): Z[..., 0, 0, 1, 1] / 4, (1, 2): Z[..., 0, 1, 1, 1] / 4, (2, 2): Z[..., 1, 1, 1, 1] / 16}
    for (i, j), v in comps.items():
        out[..., i, j] = out[..., j, i] = v
    return out


def _zeta_from_gamma2(T0, T1, T2):
    """(u, w) components of a symmetric 2x2 tensor from its gamma components (eps = 1)."""
    return {(0, 0): T0, (0, 1): T1, (1, 0): T1, (1, 1): 4 * T2}


# ---------------------------------------------------------------------------------------------------
# the eps -> 0 recursion in (u, w) coordinates, generic over numbers and sympy expressions
# ---------------------------------------------------------------------------------------------------


def _double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2)) if k > 0 else 1


class _Averages:
    """``<w^m B^(p)(u)>`` over (u, w) ~ N(0, [[K, k1], [k1, 4 k2]]) for ``B = sigma^a sigma'^b``.

    ``moment(a, b, j)`` returns ``<sigma^a sigma'^b u^j>_K`` (numbers or sympy expressions); ``mu = k1/K`` and
    ``s2 = 4 k2 - k1^2/K`` give ``w | u ~ N(mu u, s2)``. Results are cached per (m, p, a, b).
    """

    def __init__(self, moment, K, k1, k2):
        self.moment, self.K = moment, K
        self.mu = k1 / K
        self.s2 = 4 * k2 - k1 * k1 / K
        self._cache = {}

    def _conditional(self, m):
        """``E[w^m | u]`` as polynomial coefficients in u (index = power)."""
        P = [0] * (m + 1)
        for t in range(0, m + 1, 2):
            P[m - t] = math.comb(m, t) * _double_factorial(t - 1) * self.mu ** (m - t) * self.s2 ** (t // 2)
        return P

    def _by_parts(self, P):
        """``(P phi)'/phi = P' - u P/K`` for the N(0, K) density phi."""
        out = [0] * (len(P) + 1)
        for j in range(1, len(P)):
            out[j - 1] = out[j - 1] + j * P[j]
        for j in range(len(P)):
            out[j + 1] = out[j + 1] - P[j] / self.K
        return out

    def __call__(self, m: int, p: int, a: int, b: int):
        key = (m, p, a, b)
        if key not in self._cache:
            R = self._conditional(m)
            for _ in range(p):
                R = self._by_parts(R)
            sign = -1 if p % 2 else 1
            total = 0
            for j, c in enumerate(R):
                if not (isinstance(c, (int, float)) and c == 0):
                    total = total + c * self.moment(a, b, j)
            self._cache[key] = sign * total
        return self._cache[key]


def _falling(m: int, q: int) -> int:
    return math.perm(m, q) if q <= m else 0


def _derivative_average(avg: _Averages, total: int, m: int, derivs) -> object:
    """``<d_{derivs} (w^m sigma^(total-m) sigma'^m)>`` with ``derivs`` a tuple of 0 (= d_u) / 1 (= d_w)."""
    q = sum(derivs)
    f = _falling(m, q)
    if f == 0:
        return 0
    return f * avg(m - q, len(derivs) - q, total - m, m)


def zeta_step(moment, K, k1, k2, Vz, G1z, C_W, C_b, r):
    """One layer of the ``eps -> 0`` recursions in (u, w) coordinates (module docstring).

    ``moment(a, b, j) = <sigma^a sigma'^b u^j>_K`` at ``K = K00^(l)``; ``k1 = dK1^(l)``, ``k2 = ddK2^(l)``;
    ``Vz[(i, j, k, l)]`` (16 entries) and ``G1z[(i, j)]`` (4 entries) hold the (u, w) components of
    ``V^(l)``, ``G1^(l)`` (index 0 = u, 1 = w); ``C_W, C_b`` of layer l+1, ``r = n_l/n_{l-1}``. Works with
    floats and with sympy expressions alike. Returns ``(Kz, Vz, G1z)`` of layer l+1 as dicts.
    """
    avg = _Averages(moment, K, k1, k2)
    P2 = {ij: avg(sum(ij), 0, 2 - sum(ij), sum(ij)) for ij in _IDX2}
    Kz = {ij: C_W * P2[ij] + (C_b if ij == (0, 0) else 0) for ij in _IDX2}
    D = {(ij, ab): _derivative_average(avg, 2, sum(ij), ab) for ij in _IDX2 for ab in _IDX2}
    # T_ij^(cd) = sum_ab V_(ab)(cd) D^ab_ij: contract one pair at a time (16 x 16 instead of 256 x 16)
    T = {}
    for ij in _IDX2:
        for cd in _IDX2:
            acc = 0
            for ab in _IDX2:
                d = D[(ij, ab)]
                if not _is_zero(d):
                    acc = acc + d * Vz[ab + cd]
            T[ij + cd] = acc
    Vn = {}
    for ijkl in _IDX4:
        ij, kl = ijkl[:2], ijkl[2:]
        m = sum(ijkl)
        acc = 0
        for cd in _IDX2:
            d = D[(kl, cd)]
            if not _is_zero(d):
                acc = acc + T[ij + cd] * d
        Vn[ijkl] = C_W**2 * (avg(m, 0, 4 - m, m) - P2[ij] * P2[kl]) + r * C_W**2 / 4 * acc
    G1n = {}
    for ij in _IDX2:
        m = sum(ij)
        acc2 = 0
        for ab in _IDX2:
            d = D[(ij, ab)]
            if not _is_zero(d):
                acc2 = acc2 + d * G1z[ab]
        acc4 = 0
        for abcd in _IDX4:
            q = _derivative_average(avg, 2, m, abcd)
            if not _is_zero(q):
                acc4 = acc4 + q * Vz[abcd]
        G1n[ij] = r * C_W * (acc2 / 2 + acc4 / 8)
    return Kz, Vn, G1n


def _is_zero(x) -> bool:
    return isinstance(x, (int, float)) and x == 0


# ---------------------------------------------------------------------------------------------------
# the numeric flow
# ---------------------------------------------------------------------------------------------------


def _moments(act, K00) -> np.ndarray:
    """``<sigma^a sigma'^b u^j>_{K00}`` for every layer, product (a, b) in PRODUCTS and j <= MAX_POWER:
    shape ``(L, len(PRODUCTS), MAX_POWER + 1)``; one batched quadrature call."""
    terms = [(a, b, j) for a, b in PRODUCTS for j in range(MAX_POWER + 1)]
    return gaussian.moments_1d(act, K00, terms).reshape(K00.size, len(PRODUCTS), MAX_POWER + 1)


def _first_failing(act, K00) -> int:
    """The first layer l (1-based) whose averages at ``K00[l-1]`` raise (error path only)."""
    for i in range(K00.size):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                _moments(act, K00[i : i + 1])
        except (ValueError, FloatingPointError):
            return i + 1
    return K00.size


@dataclass(frozen=True, init=False)
class DeltaFiniteWidth:
    """delta-expansion of K, V and G1 for two nearby inputs ``x_{+-} = x_0 +- dx/2`` (module docstring).

    Arrays hold layer l at index l-1 (``L`` layers), float64, in (u, w) = (midpoint, derivative-field)
    coordinates with the powers of dx absorbed (eps = 1):

    * ``K``  ``(L, 2, 2)``: ``[[K00, dK1], [dK1, 4 ddK2]]``, the covariance of (z(x0), dx.grad z);
    * ``G1`` ``(L, 2, 2)``: ``[[G1_00, dG1_1], [dG1_1, 4 ddG1_2]]``;
    * ``V``  ``(L, 2, 2, 2, 2)``: the vertex of the (u, w) fields, ``V[l-1, i, j, k, l]``.

    The gamma components (PDLT notation) are the properties ``gamma_K`` ``(L, 3)`` = (K00, dK1, ddK2),
    ``gamma_G1`` ``(L, 3)`` = (G1_00, dG1_1, ddG1_2) and ``gamma_V`` ``(L, 3, 3)`` with entries
    V00, dV01, ddV11, ddV02, dddV12, ddddV22 (also as named properties).

    As in :class:`pdlt.FiniteWidth`, the storage is scale-free: ``K_scaled = K/2^e``, ``G1_scaled = G1/2^e``,
    ``V_scaled = V/4^e`` with per-layer exponents ``log2_scale``; the raw arrays (and the gamma properties built
    from them) raise :class:`~pdlt.errors.VanishingFlowError` / :class:`~pdlt.errors.DivergentFlowError` where
    outside float64's range; :meth:`normalized_vertex`, :meth:`normalized_G1` and the ``*_scaled`` gamma
    properties are always representable. ``caveats``: truncation caveats of the midpoint (see
    :func:`pdlt.theory.finite_width.truncation_caveats`).
    """

    net: MLP
    x0: np.ndarray
    dx: np.ndarray
    K_scaled: np.ndarray
    G1_scaled: np.ndarray
    V_scaled: np.ndarray
    log2_scale: np.ndarray
    caveats: tuple = ()

    def __init__(self, net, x0, dx, K=None, G1=None, V=None, *, K_scaled=None, G1_scaled=None, V_scaled=None,
                 log2_scale=None, caveats=None):
        if K_scaled is None:
            K_scaled, G1_scaled, V_scaled = K, G1, V
        if log2_scale is None:
            log2_scale = np.zeros(np.shape(K_scaled)[0], dtype=np.int64)
        for name, val in (("net", net), ("x0", x0), ("dx", dx), ("K_scaled", np.asarray(K_scaled, dtype=np.float64)),
                          ("G1_scaled", np.asarray(G1_scaled, dtype=np.float64)),
                          ("V_scaled", np.asarray(V_scaled, dtype=np.float64)),
                          ("log2_scale", np.asarray(log2_scale, dtype=np.int64))):
            object.__setattr__(self, name, val)
        if caveats is None:
            caveats = _midpoint_caveats(self)
        object.__setattr__(self, "caveats", tuple(caveats))

    _raw = FiniteWidth._raw

    @cached_property
    def K(self) -> np.ndarray:
        return self._raw(self.K_scaled, 1, "K", "gamma_K_scaled")

    @cached_property
    def G1(self) -> np.ndarray:
        return self._raw(self.G1_scaled, 1, "G1", "normalized_G1(l) / gamma_G1_scaled")

    @cached_property
    def V(self) -> np.ndarray:
        return self._raw(self.V_scaled, 2, "V", "normalized_vertex(l) / gamma_V_scaled")

    @property
    def L(self) -> int:
        return self.K_scaled.shape[0]

    @property
    def gamma_K(self) -> np.ndarray:
        return np.stack([self.K[:, 0, 0], self.K[:, 0, 1], self.K[:, 1, 1] / 4], axis=-1)

    @property
    def gamma_G1(self) -> np.ndarray:
        return np.stack([self.G1[:, 0, 0], self.G1[:, 0, 1], self.G1[:, 1, 1] / 4], axis=-1)

    @property
    def gamma_V(self) -> np.ndarray:
        return _gamma_from_zeta(self.V)

    @property
    def gamma_K_scaled(self) -> np.ndarray:
        """``gamma_K / 2^log2_scale`` ``(L, 3)`` (always representable)."""
        K = self.K_scaled
        return np.stack([K[:, 0, 0], K[:, 0, 1], K[:, 1, 1] / 4], axis=-1)

    @property
    def gamma_G1_scaled(self) -> np.ndarray:
        """``gamma_G1 / 2^log2_scale`` ``(L, 3)``."""
        G = self.G1_scaled
        return np.stack([G[:, 0, 0], G[:, 0, 1], G[:, 1, 1] / 4], axis=-1)

    @property
    def gamma_V_scaled(self) -> np.ndarray:
        """``gamma_V / 4^log2_scale`` ``(L, 3, 3)``."""
        return _gamma_from_zeta(self.V_scaled)

    def normalized_vertex(self, l: int) -> float:
        """Midpoint ``V_[00] / (n_{l-1} K00^2)`` (scale-free; 0 if K00 = 0)."""
        self.net._check_layer(l)
        k = self.K_scaled[l - 1, 0, 0]
        return float(self.V_scaled[l - 1, 0, 0, 0, 0] / (self.net.widths[l - 1] * k * k)) if k > 0 else 0.0

    def normalized_G1(self, l: int) -> float:
        """Midpoint ``G1_[0] / (n_{l-1} K00)`` (scale-free; 0 if K00 = 0)."""
        self.net._check_layer(l)
        k = self.K_scaled[l - 1, 0, 0]
        return float(self.G1_scaled[l - 1, 0, 0] / (self.net.widths[l - 1] * k)) if k > 0 else 0.0

    V00 = property(lambda self: self.gamma_V[:, 0, 0], doc="V_[00] at O(1): the midpoint's single-input V")
    dV01 = property(lambda self: self.gamma_V[:, 0, 1], doc="V_[01] at O(dx)")
    ddV11 = property(lambda self: self.gamma_V[:, 1, 1], doc="V_[11] at O(dx^2)")
    ddV02 = property(lambda self: self.gamma_V[:, 0, 2], doc="V_[02] at O(dx^2)")
    dddV12 = property(lambda self: self.gamma_V[:, 1, 2], doc="V_[12] at O(dx^3)")
    ddddV22 = property(lambda self: self.gamma_V[:, 2, 2], doc="V_[22] at O(dx^4)")
    G1_00 = property(lambda self: self.gamma_G1[:, 0], doc="G1_[0] at O(1): the midpoint's single-input G1")
    dG1_1 = property(lambda self: self.gamma_G1[:, 1], doc="G1_[1] at O(dx)")
    ddG1_2 = property(lambda self: self.gamma_G1[:, 2], doc="G1_[2] at O(dx^2)")

    def _scales(self, scale):
        from ..validation import check_real

        s = check_real(scale, "scale")
        return np.array([s**p if abs(s) < 1e75 else math.inf for p in GAMMA_ORDERS], dtype=np.float64)

    @staticmethod
    def _finite(out, scale):
        if not np.all(np.isfinite(out)):
            raise ParameterError(f"scale = {scale!r}: the statistics for the separation scale * dx (up to its fourth "
                                 "power) leave float64's range; the expansion holds for small separations only",
                                 "scale")
        return out

    def vertex(self, l: int, scale: float = 1.0) -> np.ndarray:
        """``V^(l)`` ``(2, 2, 2, 2)`` on (x_+, x_-) for the separation ``scale * dx``, every gamma component to
        its leading order in dx."""
        self.net._check_layer(l)
        s = self._scales(scale)
        with np.errstate(over="ignore", invalid="ignore"):
            return self._finite(from_gamma_vertex(self.gamma_V[l - 1] * s[:, None] * s[None, :]), scale)

    def nlo_kernel(self, l: int, scale: float = 1.0) -> np.ndarray:
        """``G1^(l)`` ``(2, 2)`` on (x_+, x_-) for the separation ``scale * dx`` (leading order per component)."""
        self.net._check_layer(l)
        with np.errstate(over="ignore", invalid="ignore"):
            g = self.gamma_G1[l - 1] * self._scales(scale)
            return self._finite(from_gamma(*g), scale)

    def connected_four_point(self, l: int, scale: float = 1.0) -> np.ndarray:
        """``V^(l)/n_{l-1}`` on (x_+, x_-): distinct-neuron connected four-point function (cf.
        :meth:`pdlt.FiniteWidth.connected_four_point`)."""
        return self.vertex(l, scale) / self.net.widths[l - 1]


def _midpoint_caveats(de: DeltaFiniteWidth) -> tuple:
    """Truncation caveats of the midpoint: ``|G1_00|/(n K00)`` and ``|V_[00]|/(n K00^2)``, first layer each."""
    found = [first_truncation_caveat([fn(l) for l in range(2, de.L + 1)], what, 2, what_tex=tex)
             for what, tex, fn in (("|G1_[0]|/(n_{l-1} K00) (the 1/n term of E[z(x0)^2])",
                                    r"$|G^{(1)}_{[0]}|/(n_{\ell-1} K_{00})$ (the $1/n$ term of $E[z(x_0)^2]$)",
                                    de.normalized_G1),
                                   ("|V_[00]|/(n_{l-1} K00^2) (the 1/n term of E[z(x0)^4]/(3K^2))",
                                    r"$|V_{[00]}|/(n_{\ell-1} K_{00}^2)$ (the $1/n$ term of $E[z(x_0)^4]/(3K^2)$)",
                                    de.normalized_vertex))]
    return tuple(c for c in found if c is not None)


def delta_finite_width(net: MLP, x0, dx) -> DeltaFiniteWidth:
    """delta-expansion of K, G1 and V through every layer for the inputs ``x_0 +- dx/2`` (``(n_0,)`` each).

    Never forms the (singular) 2x2 kernel of the two inputs, so it works for identical inputs (dx = 0) and
    any separation small enough for the expansion. First layer: ``K = [[C_b + C_W x0.x0/n0, C_W x0.dx/n0],
    [C_W x0.dx/n0, C_W dx.dx/n0]]`` in (u, w) coordinates, ``V = G1 = 0``.

    Scale-free: each layer's step runs in units of ``2^e`` (:func:`pdlt.theory.kernel.scale_exponent` of K00,
    activation :func:`pdlt.theory.kernel.scaled_activation`; the (u, w) fields scale together, so
    :func:`zeta_step` holds verbatim for ``K/2^e, V/4^e, G1/2^e`` with ``C_b/2^e``), as in
    :func:`pdlt.finite_width`.

    Raises :class:`~pdlt.errors.ParameterError` if the midpoint kernel K00 is 0 (x0 = 0 without bias: the
    derivative field's statistics then need a different expansion),
    :class:`~pdlt.errors.VanishingFlowError` / :class:`~pdlt.errors.DivergentFlowError` naming the layer if K00
    leaves float64's range. Emits a :class:`~pdlt.errors.TruncationWarning` per caveat.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("linear", widths=(2, 30, 30, 30), C_W=1.0)
    >>> de = pdlt.delta_finite_width(net, x0=np.array([1.0, 0.0]), dx=np.array([0.0, 0.2]))
    >>> np.round(de.ddddV22 / de.gamma_K[:, 2] ** 2, 12)   # deep linear: V_[22] = 2 (l-1) K_[2]^2
    array([0., 2., 4.])
    """
    x0, dx = midpoint_and_separation(net, x0, dx)
    act = net.activation
    require_continuous(act, "the delta expansion")
    L = net.L
    K00 = kernel_flow(net, x0).K[:, 0, 0]
    if np.any(K00 <= 0):
        l = int(np.argmax(K00 <= 0)) + 1
        raise ParameterError(
            f"the midpoint kernel K00 vanishes at layer l = {l} (K00 = {K00[l - 1]:.3g}: x0 = 0 without bias): the "
            "delta-expansion around a deterministic midpoint is not defined; move x0 away from 0 or use C_b > 0",
            setting="x0")
    # rescale outside 2^+-32 only (bit-identical within); sigma_e = sigma for scale-invariant activations
    e = np.array([scale_exponent(np.array([[k]])) for k in K00], dtype=np.int64)
    K00t = np.ldexp(K00, -e)
    mom = np.empty((max(L - 1, 0), len(PRODUCTS), MAX_POWER + 1))
    groups = ([np.arange(L - 1)] if act.scale_invariant
              else [np.nonzero(e[:-1] == ev)[0] for ev in np.unique(e[:-1])])
    for idx in groups:
        if not idx.size:
            continue
        act_e = scaled_activation(act, int(e[idx[0]]))
        try:
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                mom[idx] = _moments(act_e, K00t[idx])
        except (ValueError, FloatingPointError) as err:
            l = int(idx[_first_failing(act_e, K00t[idx]) - 1]) + 1
            raise DivergentFlowError(
                f"the delta-expansion diverges at layer l = {l + 1}: the Gaussian averages at K00^({l}) = "
                f"{K00[l - 1]:.3g} failed ({err}); the flow is far from criticality: move C_W / C_b toward "
                "criticality (pdlt.criticality(...)) or reduce the depth", layer=l + 1) from err
    C_W, C_b = net.hyper(1)
    s0 = 2.0 ** -int(e[0])
    G = metric(np.stack([x0, dx]), C_W, 0.0)   # first layer: [[K00 - C_b, dK1], [dK1, 4 ddK2]]
    Kz = _zeta_from_gamma2(s0 * (C_b + G[0, 0]), s0 * G[0, 1], s0 * (G[1, 1] / 4))
    Vz = {ijkl: 0.0 for ijkl in _IDX4}
    G1z = {ij: 0.0 for ij in _IDX2}
    Ks, Vs, Gs = np.zeros((L, 2, 2)), np.zeros((L, 2, 2, 2, 2)), np.zeros((L, 2, 2))
    index = {ab: k for k, ab in enumerate(PRODUCTS)}

    def store(i):
        for ij in _IDX2:
            Ks[(i,) + ij] = Kz[ij]
            Gs[(i,) + ij] = G1z[ij]
        for ijkl in _IDX4:
            Vs[(i,) + ijkl] = Vz[ijkl]

    store(0)
    for l in range(1, L):
        C_W, C_b = net.hyper(l + 1)
        M = mom[l - 1]

        def moment(a, b, j, M=M):
            return M[index[(a, b)], j]

        k00 = K00t[l - 1]
        k1, k2 = Kz[(0, 1)], Kz[(1, 1)] / 4
        if 4 * k2 - k1 * k1 / k00 < 0:  # only round-off: dx parallel to x0 without bias
            k2 = k1 * k1 / (4 * k00)
        de = int(e[l - 1] - e[l])  # units of layer l -> units of layer l + 1 (powers of two: exact)
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            Kz, Vz, G1z = zeta_step(moment, k00, k1, k2, Vz, G1z, C_W, math.ldexp(C_b, -int(e[l - 1])),
                                    net.width_ratio(l))
            Kz = {k: math.ldexp(v, de) for k, v in Kz.items()}
            G1z = {k: math.ldexp(v, de) for k, v in G1z.items()}
            Vz = {k: math.ldexp(v, 2 * de) for k, v in Vz.items()}
        store(l)
        for arr, what in ((Ks[l], "kernel"), (Vs[l], "vertex V/K00^2"), (Gs[l], "NLO kernel G1/K00")):
            if not np.all(np.isfinite(arr)):
                raise DivergentFlowError(
                    f"the delta-expansion {what} is not finite at layer l = {l + 1} (in units of K00): the "
                    "derivative field grows without bound; move C_W, C_b toward criticality "
                    "(pdlt.criticality(...)) or reduce the depth", layer=l + 1)
    out = DeltaFiniteWidth(net, x0, dx, K_scaled=Ks, G1_scaled=Gs, V_scaled=Vs, log2_scale=e)
    with np.errstate(over="ignore"):
        far = separation_caveat(net, x0, dx, np.ldexp(Ks[:, 1, 1], np.asarray(e, dtype=int)))
    if far is not None:
        out = DeltaFiniteWidth(net, x0, dx, K_scaled=Ks, G1_scaled=Gs, V_scaled=Vs, log2_scale=e,
                               caveats=out.caveats + (far,))
    emit(out.caveats, stacklevel=3)
    return out

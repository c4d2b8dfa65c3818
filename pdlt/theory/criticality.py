"""Susceptibilities, fixed points, critical initialization and universality classes (PDLT ch. 5).

Single-input functions, all at kernel K (``derivations/README.md`` section 5):

    g(K)        = <sigma^2>_K                       (so K' = C_b + C_W g(K))
    chi_par(K)  = C_W g'(K)  = (C_W/K) <z sigma sigma'>_K
    chi_perp(K) = C_W <sigma'^2>_K
    h(K)        = (1/2) d chi_perp/dK = (C_W/(4K^2)) <sigma'^2 (z^2 - K)>_K
    S(K)        = <sigma sigma''>_K = <z sigma sigma'>_K/K - <sigma'^2>_K   (chi_par - chi_perp = C_W S)

All are written with sigma and sigma' only (Gaussian integration by parts), so kinks and jumps
(ReLU, hard-tanh) are exact under domain-splitting quadrature.

Criticality: chi_par(K*) = chi_perp(K*) = 1 at a fixed point K* = C_b + C_W g(K*), i.e.
S(K*) = 0, C_W = 1/<sigma'^2>_{K*}, C_b = K* - C_W g(K*) >= 0. Universality classes:

* ``scale-invariant``: sigma = a_+ z Theta(z) + a_- z Theta(-z); C_b = 0, C_W = 1/A_2, any K*.
* ``K*=0``: sigma_0 = 0, sigma_1 != 0, a_1 = sigma_3/sigma_1 + (3/4)(sigma_2/sigma_1)^2 < 0;
  C_b = 0, C_W = 1/sigma_1^2; K^(l) ~ 1/((-a_1) l).
* ``half-stable``: S has a root K* > 0 with C_b >= 0 and d chi_par/dK != 0 at K* (GELU, SWISH: PDLT
  section 5.3.4). K approaches K* from one side only.
* ``none``: no critical point (sigmoid, softplus); reported, not raised.

:func:`universality_class` is the one place that decides the class (the symbolic recursions ask it too).

Critical exponents (K - K* ~ l^-p0, dK_[1] ~ l^-p_par, ddK_[2] ~ l^-p_perp), for a fixed point with
chi_par = chi_perp = 1 and chi_par' := d chi_par/dK != 0: K - K* ~ -2/(chi_par' l), so
p0 = 1, p_par = 2 and p_perp = 4 h(K*)/chi_par'(K*); for the K*=0 class chi_par' = 2 a_1 and
2h = b_1, giving p_perp = b_1/a_1 (PDLT section 5.3.3). p_perp is the decay of the homogeneous solution;
the source h dK_[1]^2 ~ l^-4 drives a particular solution ~ l^-3, so for x_0.dx != 0 the generic decay is
l^-min(p_perp, 3) (``p_perp_generic``). For the half-stable class these exponents
describe depths l >> 2/(|chi_par'| |K^(1) - K*|): chi_par' is tiny (GELU -2.9e-4, SWISH 5.7e-6), so that is
~10^4 layers or more, and p_perp is large (GELU -65, SWISH 608) because chi_perp varies much faster in K
than chi_par does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import sympy as sp

from .. import gaussian
from ..activations import Activation
from ..activations import activation as _lookup
from ..activations import require_continuous, require_resolved
from ..architecture import check_hyper as _check_hyper
from ..errors import IntegrationError, ParameterError

__all__ = [
    "SingleInput",
    "single_input",
    "g",
    "chi_par",
    "chi_perp",
    "FixedPoint",
    "fixed_points",
    "Criticality",
    "criticality",
    "CorrelationLength",
    "correlation_length",
    "taylor_a1_b1",
    "universality_class",
    "mp_averages",
]


@dataclass(frozen=True)
class SingleInput:
    """Single-input Gaussian functions at kernel K (arrays of K's shape)."""

    K: np.ndarray
    C_W: float
    g: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    h: np.ndarray
    S: np.ndarray
    dS: np.ndarray


def _limits_at_zero(act: Activation, C_W: float):
    """Values of (g, chi_par, chi_perp, h, S, dS) at K = 0, from the Taylor coefficients at 0."""
    if act.scale_invariant:
        return 0.0, C_W * act.A2, C_W * act.A2, 0.0, 0.0, 0.0
    try:
        s = [float(c) for c in act.taylor(4)]
    except ValueError as err:
        raise ParameterError(f"single-input functions at K = 0 need sigma smooth at 0: {err}") from None
    s0, s1, s2, s3, s4 = s
    return (
        s0 * s0,
        C_W * (s1 * s1 + s0 * s2),
        C_W * s1 * s1,
        C_W * (s2 * s2 + s1 * s3) / 2,
        s0 * s2,
        (s2 * s2 + 2 * s1 * s3 + s0 * s4) / 2,
    )


#: ``(a, b, j)`` of ``<sigma^a sigma'^b z^j>``: <s^2>, <z s s'>, <s'^2>, <s'^2 z^2>, <z^3 s s'>
_SINGLE_INPUT_TERMS = ((2, 0, 0), (1, 1, 1), (0, 2, 0), (0, 2, 2), (1, 1, 3))


def single_input(act, K, C_W: float = 1.0) -> SingleInput:
    """g, chi_par, chi_perp, h, S = <sigma sigma''> and dS/dK at kernel ``K`` (scalar or array, K >= 0)."""
    act = _lookup(act)
    require_resolved(act)
    require_continuous(act, "the susceptibilities (chi_perp = C_W <sigma'^2>)")
    _check_hyper(C_W)
    try:
        if np.iscomplexobj(K):
            raise TypeError
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"single-input kernel values must be real numbers, got {K!r}", "K") from None
    if np.any(~np.isfinite(K)) or np.any(K < 0):
        raise ParameterError(f"single-input kernel values must be finite and >= 0, got {K}")
    Kf = K.reshape(-1)
    pos = Kf > 0
    out = np.empty((Kf.size, 6))
    if np.any(pos):
        Kp = Kf[pos]
        m = gaussian.moments_1d(act, Kp, _SINGLE_INPUT_TERMS)
        ss, zss, s1s, s1s_z2, zss_z2 = m.T
        # (finite averages over a power of K beyond float64's range: the quotient underflows to 0, as it should)
        with np.errstate(over="ignore"):
            out[pos, 0] = ss
            out[pos, 1] = C_W * zss / Kp
            out[pos, 2] = C_W * s1s
            out[pos, 3] = C_W * (s1s_z2 - Kp * s1s) / (4 * Kp**2)
            out[pos, 4] = zss / Kp - s1s
            out[pos, 5] = -zss / Kp**2 + (zss_z2 - Kp * zss) / (2 * Kp**3) - (s1s_z2 - Kp * s1s) / (2 * Kp**2)
    if np.any(~pos):
        out[~pos] = _limits_at_zero(act, C_W)
    r = [out[:, i].reshape(K.shape) for i in range(6)]
    return SingleInput(K, float(C_W), *r)


def g(act, K) -> np.ndarray:
    """``<sigma(z)^2>_K``."""
    return single_input(act, K).g


def chi_par(act, K, C_W: float = 1.0) -> np.ndarray:
    """Parallel susceptibility ``C_W g'(K)``."""
    return single_input(act, K, C_W).chi_par


def chi_perp(act, K, C_W: float = 1.0) -> np.ndarray:
    """Perpendicular susceptibility ``C_W <sigma'^2>_K``."""
    return single_input(act, K, C_W).chi_perp


# ---------------------------------------------------------------------- high-precision 1D averages


def mp_averages(act, K, dps: int = 25):
    """``(<sigma^2>, <z sigma sigma'>, <sigma'^2>)`` at kernel ``K > 0`` as mpf, by adaptive mpmath quadrature at
    ``dps`` digits (:func:`pdlt.gaussian.moments_1d_mp`): the high-precision reference for :func:`single_input`
    (``S = <z sigma sigma'>/K - <sigma'^2>``, ``C_W = 1/<sigma'^2>``)."""
    return tuple(gaussian.moments_1d_mp(_lookup(act), K, _SINGLE_INPUT_TERMS[:3], dps=dps))


# ---------------------------------------------------------------------- fixed points


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point ``K* = C_b + C_W g(K*)`` with its susceptibilities."""

    K: float
    chi_par: float
    chi_perp: float

    @property
    def stable(self) -> bool:
        return self.chi_par < 1.0


def _bisect(F, a, b, fa, fb, tol=1e-14, maxit=200):
    for _ in range(maxit):
        m = 0.5 * (a + b)
        fm = F(m)
        if fm == 0 or (b - a) < tol * max(1.0, abs(m)):
            return m
        if (fm > 0) == (fa > 0):
            a, fa = m, fm
        else:
            b = m
    return 0.5 * (a + b)


def fixed_points(act, C_W: float, C_b: float, *, K_max: float = 1e4, n_grid: int = 4000) -> tuple[FixedPoint, ...]:
    """All fixed points of the single-input kernel map in ``[0, K_max]``, sorted by K.

    ``F(K) = C_b + C_W g(K) - K``: simple roots are found by a sign scan on a log grid and bisection;
    double roots (tangencies, e.g. K* at a half-stable critical point, where F' = chi_par - 1 = 0 too) by
    bisecting the sign changes of ``chi_par - 1`` and keeping the extrema where ``|F|`` is at round-off
    level. ``K = 0`` is reported when it is a fixed point (``C_b = 0`` and ``sigma(0) = 0``). For
    scale-invariant activations at ``C_b = 0, C_W = 1/A_2`` every K is a fixed point: raises ValueError.
    """
    act = _lookup(act)
    _check_hyper(C_W, C_b)
    if act.scale_invariant and C_b == 0 and abs(C_W * act.A2 - 1) < 1e-14:
        raise ParameterError("at C_b = 0, C_W = 1/A_2 every K is a fixed point of a scale-invariant activation")
    out = []

    def F(K):
        return float(C_b + C_W * single_input(act, K).g - K)

    def dF(K):
        return float(single_input(act, K, C_W).chi_par - 1)

    if C_b == 0 and abs(float(act(np.array(0.0)))) == 0:
        s = single_input(act, 0.0, C_W)
        out.append(FixedPoint(0.0, float(s.chi_par), float(s.chi_perp)))
    grid = np.concatenate([[1e-8], np.logspace(-6, math.log10(K_max), n_grid)])
    s = single_input(act, grid, C_W)
    vals = C_b + s.g * C_W - grid
    slope = s.chi_par - 1
    roots = []
    for i in range(grid.size - 1):
        if vals[i] == 0 or (vals[i] > 0) != (vals[i + 1] > 0):
            roots.append(_bisect(F, grid[i], grid[i + 1], vals[i], vals[i + 1]))
        if (slope[i] > 0) != (slope[i + 1] > 0):
            Ke = _bisect(dF, grid[i], grid[i + 1], slope[i], slope[i + 1])
            if abs(F(Ke)) <= 1e-12 * max(1.0, Ke) and all(abs(Ke - r) > 1e-9 * Ke for r in roots):
                roots.append(Ke)
    for Kr in roots:
        si = single_input(act, Kr, C_W)
        out.append(FixedPoint(float(Kr), float(si.chi_par), float(si.chi_perp)))
    return tuple(sorted(out, key=lambda p: p.K))


# ---------------------------------------------------------------------- criticality


def taylor_a1_b1(act) -> tuple[sp.Expr, sp.Expr]:
    """``a_1 = sigma_3/sigma_1 + (3/4)(sigma_2/sigma_1)^2``, ``b_1 = sigma_3/sigma_1 + (sigma_2/sigma_1)^2``."""
    s = _lookup(act).taylor(3)
    if s[1] == 0:
        raise ParameterError("a_1, b_1 need sigma_1 = sigma'(0) != 0")
    a1 = sp.simplify(s[3] / s[1] + sp.Rational(3, 4) * (s[2] / s[1]) ** 2)
    b1 = sp.simplify(s[3] / s[1] + (s[2] / s[1]) ** 2)
    return a1, b1


@dataclass(frozen=True)
class Criticality:
    """Critical initialization and universality data of an activation.

    ``K_star`` is None for the scale-invariant class (every K is critical). ``exponents`` maps
    ``p0`` (K - K* ~ l^-p0), ``p_par`` (dK_[1] ~ l^-p_par), ``p_perp`` (ddK_[2] ~ l^-p_perp) where they are
    defined. ``dchi_par_dK`` is the slope that makes a nonzero K* half-stable.
    """

    activation: str
    universality: str
    C_b: float | None
    C_W: float | None
    K_star: float | None
    chi_par: float | None = None
    chi_perp: float | None = None
    dchi_par_dK: float | None = None
    h: float | None = None
    exponents: dict = field(default_factory=dict)
    a1: float | None = None
    b1: float | None = None
    slopes: tuple[float, float] | None = None
    note: str = ""

    @property
    def critical(self) -> bool:
        return self.universality != "none"

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["slopes"] = list(self.slopes) if self.slopes else None
        return d


def _half_stable_points(act: Activation, K_lo=1e-3, K_hi=1e3, n_grid=241):
    """Roots K* > 0 of S(K) = <sigma sigma''>_K with C_b >= 0: a sign scan on a log grid, then bisection
    to machine precision. The float64 quadrature agrees with mpmath to ~1e-16 here (tested), so no
    slower refinement is needed; ``tests/test_criticality.py`` re-checks the roots at 25 digits."""
    grid = np.logspace(math.log10(K_lo), math.log10(K_hi), n_grid)
    S = single_input(act, grid).S

    def S_at(K):
        return float(single_input(act, K).S)

    # S is a difference of two averages of size ~<sigma'^2>: a sign change below 1e-10 of that is round-off
    # (e.g. hard-tanh, whose true S ~ -exp(-1/(2K)) is below float64 resolution at small K)
    noise = 1e-10 * (np.abs(single_input(act, grid).chi_perp) + np.abs(S))
    roots = []
    for i in range(grid.size - 1):
        if (S[i] > 0) != (S[i + 1] > 0) and abs(S[i]) > noise[i] and abs(S[i + 1]) > noise[i + 1]:
            Kr = _bisect(S_at, grid[i], grid[i + 1], S[i], S[i + 1], tol=1e-15)
            s = single_input(act, Kr)
            C_W = 1.0 / float(s.chi_perp)  # chi_perp at C_W = 1 is <sigma'^2>
            C_b = Kr - C_W * float(s.g)
            if C_b < -1e-12:
                continue
            roots.append((float(Kr), C_W, max(C_b, 0.0)))
    return roots


def _slope_chi_par(act, K, C_W):
    """d chi_par/dK = 2 h + C_W dS/dK (from chi_par = chi_perp + C_W S), no finite differences."""
    s = single_input(act, K, C_W)
    return float(2 * s.h + C_W * s.dS)


@lru_cache(maxsize=128)
def analytic_class(act: Activation):
    """``(class, data)`` for the classes decided without quadrature: ``("scale-invariant", None)``;
    ``("K*=0", (sigma_1, a_1, b_1))`` (floats) when sigma is smooth at 0 with ``sigma_0 = 0``, ``sigma_1 != 0``
    and ``a_1 < 0``; otherwise ``(None, None)``."""
    if act.scale_invariant:
        return "scale-invariant", None
    if any(k == 0 for k in act.kinks):
        return None, None
    try:
        taylor = [float(c) for c in act.taylor(3)]
    except (TypeError, ValueError):
        return None, None
    if taylor[0] == 0 and taylor[1] != 0:
        a1, b1 = (float(v) for v in taylor_a1_b1(act))
        if a1 < 0:
            return "K*=0", (taylor[1], a1, b1)
    return None, None


def universality_class(act, *, search: bool = True) -> str | None:
    """The universality class of an activation: ``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or
    ``"none"`` (definitions in the module docstring).

    The first two are decided exactly (slopes; Taylor coefficients at 0: ``sigma_0 = 0``, ``sigma_1 != 0``,
    ``a_1 < 0``). The other two need the numeric search for a root of ``S(K)`` with ``C_b >= 0``
    (:func:`criticality`); with ``search=False`` that search is skipped and None is returned instead.

    >>> universality_class("relu"), universality_class("tanh"), universality_class("gelu", search=False)
    ('scale-invariant', 'K*=0', None)
    """
    act = _lookup(act)
    cls, _ = analytic_class(act)
    if cls is not None or not search:
        return cls
    return criticality(act).universality


@lru_cache(maxsize=128)
def criticality_cached(act: Activation) -> Criticality:
    name = act.name
    cls, data = analytic_class(act)
    if cls == "scale-invariant":
        ap, am = act.slopes
        C_W = 1.0 / act.A2
        return Criticality(
            name, "scale-invariant", 0.0, C_W, None, 1.0, 1.0, 0.0, 0.0,
            exponents={"p0": 0.0, "p_par": 0.0, "p_perp": 0.0, "p_one_minus_rho": 2.0 if ap != am else 0.0},
            slopes=(ap, am),
            note="every K is a fixed point; for a_+ != a_- nearby inputs still converge, 1 - rho ~ l^-2",
        )
    if cls == "K*=0":
        s1, a1, b1 = data
        C_W = 1.0 / s1**2
        return Criticality(
            name, "K*=0", 0.0, C_W, 0.0, 1.0, 1.0, 2 * a1, b1 / 2,
            exponents={"p0": 1.0, "p_par": 2.0, "p_perp": b1 / a1, "p_perp_generic": min(b1 / a1, 3.0)},
            a1=a1, b1=b1,
            note="K^(l) ~ 1/((-a_1) l)",
        )
    pts = _half_stable_points(act)
    if not pts:
        return Criticality(name, "none", None, None, None, note="no K > 0 with chi_par = chi_perp = 1 and C_b >= 0")
    K_star, C_W, C_b = pts[0]
    s = single_input(act, K_star, C_W)
    slope = _slope_chi_par(act, K_star, C_W)
    side = "above" if slope < 0 else "below"
    h = float(s.h)
    return Criticality(
        name, "half-stable", C_b, C_W, K_star, float(s.chi_par), float(s.chi_perp), slope, h,
        exponents={"p0": 1.0, "p_par": 2.0, "p_perp": 4 * h / slope, "p_perp_generic": min(4 * h / slope, 3.0)},
        note=f"K is attracted to K* from {side} only (d chi_par/dK = {slope:.3g})",
    )


def criticality(act) -> Criticality:
    """Critical initialization ``(C_b, C_W, K*)`` and universality class of an activation.

    >>> c = criticality("relu")
    >>> c.universality, c.C_b, c.C_W
    ('scale-invariant', 0.0, 2.0)
    >>> criticality("sigmoid").universality
    'none'
    """
    act = _lookup(act)
    try:
        return criticality_cached(act)
    except IntegrationError as err:
        # the search scans kernels K up to ~1e3; an activation whose Gaussian averages diverge there (e.g.
        # exp(z): <e^{2z}>_K = e^{2K}) has no critical point this search can find
        raise IntegrationError(
            f"criticality({act.name}): the Gaussian averages of this activation cannot be computed over the "
            f"range of kernels the critical-point search scans (it grows too fast: {err}); choose C_W, C_b by "
            "hand and check the flow with pdlt.kernel_flow") from None


@dataclass(frozen=True)
class CorrelationLength:
    """Approach to the fixed point off criticality: ``Delta K ~ exp(-l/xi_par)``, ``K_[2] ~ exp(-l/xi_perp)``.

    ``phase`` is ``ordered`` (chi_perp < 1: nearby inputs collapse), ``chaotic`` (chi_perp > 1) or
    ``critical``. ``K_star`` is the attracting fixed point (inf when K grows without bound; then the xi's
    are growth lengths ``1/ln chi``).
    """

    K_star: float | None
    chi_par: float
    chi_perp: float
    xi_par: float
    xi_perp: float
    phase: str


def correlation_length(act, C_W: float, C_b: float, *, K1: float | None = None) -> CorrelationLength:
    """Depth correlation lengths ``xi = 1/|ln chi|`` at the attracting fixed point of ``(C_W, C_b)``.

    With several attracting fixed points, ``K1`` (the first-layer kernel) selects the one the flow from
    K^(1) reaches; without it the smallest is used. At the scale-invariant critical point every K is
    fixed: ``K_star`` is then None and both lengths are infinite.
    """
    act = _lookup(act)
    _check_hyper(C_W, C_b)
    if K1 is not None:
        from ..validation import check_real

        K1 = check_real(K1, "K1", minimum=0.0)
    if act.scale_invariant and C_b == 0:
        chi = C_W * act.A2
        K_star = 0.0 if chi < 1 else (math.inf if chi > 1 else None)
        cp = cq = chi
    elif act.scale_invariant and C_W * act.A2 >= 1:
        K_star, cp, cq = math.inf, C_W * act.A2, C_W * act.A2
    else:
        stable = [p for p in fixed_points(act, C_W, C_b) if p.chi_par <= 1.0]
        if K1 is not None:
            # follow the flow from K1 to see which attracting point (if any) it reaches
            K = float(K1)
            for _ in range(100_000):
                Kn = float(C_b + C_W * single_input(act, K).g)
                if not math.isfinite(Kn) or Kn > 1e6:
                    stable = []
                    break
                if abs(Kn - K) < 1e-12 * max(1.0, K):
                    stable = sorted(stable, key=lambda p: abs(p.K - Kn))[:1]
                    break
                K = Kn
        if not stable:
            raise ParameterError(
                f"no attracting fixed point for {act.name} at C_W={C_W}, C_b={C_b}"
                + (f" reached from K1={K1}" if K1 is not None else " with K <= 1e4")
                + ": the kernel grows without bound; lower C_W"
            )
        p = stable[0]
        K_star, cp, cq = p.K, p.chi_par, p.chi_perp

    def xi(c):
        return math.inf if c == 1 else 1.0 / abs(math.log(c)) if c > 0 else 0.0

    phase = "critical" if abs(cq - 1) < 1e-12 else ("ordered" if cq < 1 else "chaotic")
    return CorrelationLength(None if K_star is None else float(K_star), float(cp), float(cq), xi(cp), xi(cq), phase)

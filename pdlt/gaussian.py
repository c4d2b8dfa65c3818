r"""Gaussian expectations :math:`\langle f(z)\rangle_K` for :math:`z \sim \mathcal N(0, K)`.

Conventions follow Roberts--Yaida--Hanin, *Principles of Deep Learning Theory*:
``K`` is a ``d x d`` positive-semidefinite (PSD) kernel, ``d = 1..4`` (one to four
inputs / pre-activations), and

.. math::  \langle f(z)\rangle_K = \int d^dz\, \frac{e^{-\frac12 z^T K^{-1} z}}
           {\sqrt{\det 2\pi K}}\, f(z) = \int d^dw\, \phi_d(w)\, f(Lw),
           \qquad L L^T = K ,

with :math:`\phi_d` the standard normal density.  The second form works for
*singular* ``K`` as well (identical inputs, rank deficiency); every method below
uses it.

Methods (chosen automatically by :func:`expect`)
-----------------------------------------------
``kinks=()`` (f analytic) -- **truncated trapezoidal (sinc) rule**, tensor product in
    ``w`` pruned to the ball ``|w| <= R`` (``R = 9``).  For an integrand analytic
    in the strip ``|Im w| < delta`` the error is ``~ exp(-2 pi delta / h)``
    (plus the tail ``~ exp(-R^2/2)``).  The activations of interest (tanh,
    sigmoid, softplus, SiLU) have poles at distance ``pi/2 .. pi`` from the real
    ``z`` axis, i.e. ``delta_k = (pi/2) / max_i |L_ik|`` in ``w_k``, so the
    spacing is chosen per kernel and per axis, ``h_k = h_z / max_i |L_ik|`` with
    a resolution ``h_z`` in ``z`` units.  With a pivoted factor (largest
    variance first) the node count scales like ``sqrt(det K)``, the area of the
    Gaussian ellipse in units of ``h_z``.
    *Why not Gauss--Hermite*: measured, GH needs ``n > 300`` nodes per axis to
    reach 1e-10 for ``<tanh(z)^2>`` at ``K = 5 .. 10`` (GH(280) still errs by
    1.5e-6 at K = 10) because it wastes most nodes where the weight is
    negligible; the trapezoidal rule needs 117 (K = 5) / 165 (K = 10) nodes.
    Polynomials times the Gaussian are integrated to rounding accuracy (the
    aliasing error is ``~ exp(-2 pi^2 / h^2) < 1e-30`` for ``h <= 0.5``).
d = 1 and a variance beyond the trapezoid's cap (~7.7e6; beyond 64 for a kinked ``f``) --
    **panel rule**: an activation's structure lies at ``|z| ~ 1`` whatever the
    kernel, so Gauss--Legendre panels of width 1 in ``z`` cover ``|z| <= 64``
    (split at the kinks; 16 nodes resolve poles at distance 0.9, the least
    that :func:`pdlt.activations.require_resolved` lets through, to ~1e-19),
    panels doubling in ``z`` continue to one standard deviation (slow
    structure, e.g. ``e^(z/10)``, at its own scale), and the shifted
    half-range rule (as in the nested rule below) takes each tail beyond,
    where ``f`` is smooth on the Gaussian's own scale. Measured against
    :func:`moments_1d_mp` for ELU, tanh, softplus, GELU, swish, sigmoid, erf
    and ReLU, ``K = 1e2 .. 1e20``: <= 2e-14. The trapezoid, its nodes spread
    over the whole Gaussian, lost that structure (softplus's ``<sigma'^2>`` at
    K = 1e10: 1e-5 off), and so did the half-range rule of a kinked ``f``
    (ELU's at K = 1e4: 5e-4). A periodic ``f`` (sin), whose structure fills
    the Gaussian, fails the rule's own check against 2/3 of its nodes and
    goes back to the trapezoid (exact for a period above its spacing; a
    kinked one keeps the panels with a warning).
``kinks=(0,)``, d = 2 -- **polar coordinates**: ``w = r (cos t, sin t)``; each
    kink line ``z_i = 0`` is a pair of rays ``t = atan2(L_i2, L_i1) +- pi/2``;
    Gauss--Legendre in ``t`` on the (four) sectors between the rays, and the
    Gauss rule for the weight ``r exp(-r^2/2)`` (:func:`radial_rule`) in ``r``.
    Exact (to rounding) for piecewise homogeneous ``f`` (ReLU, leaky ReLU,
    ``|z|``, steps and their products) for *any* ``K``, including correlation
    ``rho -> 1`` and exactly singular ``K``.
otherwise (kinks away from 0, or d != 2) -- **nested iterated Gauss rules** along the
    lower-triangular factor: at level ``k`` the integrand in ``w_k`` has kinks
    where ``z_k = c``, i.e. ``w_k = (c - sum_{j<k} L_kj w_j) / L_kk``; the line
    is also split at ``w_k = 0`` so that the two semi-infinite end pieces
    ``[s, inf)`` (``s >= 0``) are done with the shifted half-range rule
    (:func:`half_gauss_hermite` with weight factor ``exp(-s t - s^2/2)``), and
    the finite pieces (breakpoints clipped to ``|w| <= 12``) with
    Gauss--Legendre times the Gaussian.  ``L_kk = 0`` (singular ``K``) means
    ``w_k`` does not enter: no split.  For d = 1 with kinks only at 0 this is
    the split half-range Gauss--Hermite rule (exact for piecewise polynomials).
    For d = 2 the outer level is also split where the kink lines of ``z_2``
    cross ``w_2 = 0`` (``w_1 = c / L_21``), with graded breakpoints at
    ``+-(1, 3, 9) L_22 / |L_21|`` around them: there the inner integral has a
    boundary layer of that width when ``K`` is ill-conditioned.
    *Accuracy limits*: in d >= 3 the outer integrands are smooth but not
    polynomial and have such layers (no grading there), so accuracy degrades
    with the conditioning of ``K``: measured for ReLU products, d = 3:
    1e-14 for ``|rho| <= 0.95``, 3e-10 at 0.99, 5e-8 at 0.999; d = 4: 1e-14
    for ``|rho| <~ 0.65``, 1e-10 at 0.8, 3e-9 at 0.9, 2e-7 at 0.95, 1e-5 at
    0.999.  ``return_error=True`` flags these cases (its estimate is larger
    than the actual error).

Accuracy of the defaults (measured against :func:`expect_mp`) and throughput are
listed in :func:`expect`.  scipy is deliberately not used.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
import warnings
from collections import OrderedDict

import mpmath
import numpy as np

from .errors import IntegrationError, ParameterError, QuadratureWarning

__all__ = [
    "check_kernel",
    "default_rule_limit",
    "capped_tolerance",
    "hermite_functions",
    "psd_sqrt_lower",
    "gauss_hermite",
    "gauss_legendre",
    "half_gauss_hermite",
    "radial_rule",
    "hermite_e",
    "expect",
    "expect_mp",
    "expect_products",
    "moments_1d",
    "moments_1d_mp",
    "bench_expect",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)

# ---------------------------------------------------------------------------
# validation and factorization
# ---------------------------------------------------------------------------


class _Complex(TypeError):
    """Internal: a complex kernel, refused below with the same message as other unconvertible input."""


def _fmt_index(idx):
    return "[" + ", ".join(str(int(i)) for i in idx) + "]" if len(idx) else ""


def check_kernel(K, name="K", *, rtol=1e-10) -> np.ndarray:
    """Validate a (batch of) kernel matrices and return a symmetrized float64 copy.

    Parameters
    ----------
    K : array_like, shape ``(..., d, d)``
    name : str, used in error messages.
    rtol : float
        Relative tolerance for the symmetry check (``|K - K^T| <= rtol max|K|``)
        and the PSD check (smallest eigenvalue ``>= -rtol max|eigenvalue|``).

    Returns
    -------
    ndarray, float64, shape ``(..., d, d)``: ``(K + K^T) / 2``.

    Raises
    ------
    ValueError
        if ``K`` is not a real ``(..., d, d)`` array with ``d >= 1``, has NaN/inf
        entries, is not symmetric, or is not positive semidefinite; the message
        says which entry / eigenvalue is at fault.
    """
    try:
        if np.iscomplexobj(K):
            raise _Complex
        A = np.array(K, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"{name} must be a real array of shape (..., d, d); could not convert it to float64 ({exc})"
        ) from None
    if A.ndim < 2:
        raise ParameterError(
            f"{name} must have shape (..., d, d) (a d x d covariance matrix, possibly batched); "
            f"got shape {A.shape}. For a single variance k pass [[k]]."
        )
    if A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
        raise ParameterError(
            f"{name} must be square in its last two axes, shape (..., d, d) with d >= 1; got shape {A.shape}"
        )
    bad = ~np.isfinite(A)
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise ParameterError(
            f"{name} has a non-finite entry: {name}{_fmt_index(idx)} = {A[tuple(idx)]}; "
            "all kernel entries must be finite numbers"
        )
    d = A.shape[-1]
    At = np.swapaxes(A, -1, -2)
    scale = np.max(np.abs(A), axis=(-1, -2), keepdims=True) if A.size else A
    # (halves: A - At and A + At overflow for entries near float64's largest)
    asym = np.abs(0.5 * A - 0.5 * At) > 0.5 * rtol * scale
    if asym.any():
        idx = np.argwhere(asym)[0]
        i, j = idx[-2], idx[-1]
        b = tuple(idx[:-2])
        raise ParameterError(
            f"{name} is not symmetric: {name}{_fmt_index(b + (i, j))} = {A[b + (i, j)]!r} but "
            f"{name}{_fmt_index(b + (j, i))} = {A[b + (j, i)]!r} (relative tolerance {rtol:g}); "
            "a covariance matrix must satisfy K[i, j] == K[j, i]"
        )
    A = 0.5 * A + 0.5 * At
    if A.size:
        if d == 1:
            ev = A[..., 0, :]
        elif d == 2:  # closed form: much faster than eigvalsh for large batches
            a, b, c = A[..., 0, 0], A[..., 0, 1], A[..., 1, 1]
            m, r = 0.5 * a + 0.5 * c, np.hypot(0.5 * a - 0.5 * c, b)
            with np.errstate(over="ignore"):     # (an eigenvalue beyond float64's largest: inf, still >= 0)
                ev = np.stack([m - r, m + r], axis=-1)
        else:
            ev = np.linalg.eigvalsh(A)
        lo = ev.min(axis=-1)
        top = np.abs(ev).max(axis=-1)
        neg = lo < -rtol * top
        if np.any(neg):
            b = tuple(np.argwhere(neg)[0]) if A.ndim > 2 else ()
            lob, topb = float(np.asarray(lo)[b]), float(np.asarray(top)[b])
            where = f" ({name}{_fmt_index(b)})" if b else ""
            raise ParameterError(
                f"{name}{where} is not positive semidefinite: its smallest eigenvalue is {lob:.6g} "
                f"(largest |eigenvalue| {topb:.6g}, tolerance -{rtol:g} x that). A covariance must be PSD: "
                "check |K[i,j]| <= sqrt(K[i,i] K[j,j]) and the signs of the entries, or project K onto "
                "the PSD cone (clip negative eigenvalues to 0)."
            )
    return A


# Pivots below this (relative to the correlation scale 1) are rounding noise of a
# singular K: the column is set to zero.  Cancellation in 1 - sum L^2 is ~ d eps.
_PIVOT_TOL = 64 * np.finfo(np.float64).eps


def _chol_psd(K):
    """Lower-triangular ``L`` with ``L L^T = K`` for validated PSD ``K`` (..., d, d).

    Works on the correlation matrix ``C = D^-1/2 K D^-1/2`` (equilibration) and
    returns ``L = D^1/2 L_C``.  Pivots ``<= _PIVOT_TOL`` give zero columns.
    Exactness for identical inputs: ``C_ij = K_ij / sqrt(K_ii K_jj)`` is exactly 1
    when ``K_ii = K_ij = K_jj`` and an off-diagonal element ``q / sqrt(p)`` with
    ``q == p`` is set to ``sqrt(p)`` (its correctly rounded value), so the rows
    of ``L`` for identical inputs are bitwise identical and ``z_i == z_j``.
    """
    K = np.asarray(K, dtype=np.float64)
    d = K.shape[-1]
    # work at the scale of the largest variance, K / 4^e (exact: a power of two), so that the products K_ii K_jj
    # below neither overflow (variances above ~1e154 once gave C = 0 and L = 0) nor underflow needlessly
    big = np.max(np.maximum(np.diagonal(K, axis1=-2, axis2=-1), 0.0), axis=-1)
    e = np.where(big > 0, np.frexp(np.where(big > 0, big, 1.0))[1] // 2, 0)
    K = np.ldexp(K, -2 * e[..., None, None])
    diag = np.maximum(np.diagonal(K, axis1=-2, axis2=-1), 0.0)
    s = np.sqrt(diag)
    prod = diag[..., :, None] * diag[..., None, :]
    den = np.sqrt(prod)
    # underflow of K_ii K_jj for tiny variances: fall back to s_i s_j
    den = np.where((den == 0) & (prod == 0), s[..., :, None] * s[..., None, :], den)
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.where(den > 0, K / np.where(den > 0, den, 1.0), 0.0)
    C = np.clip(C, -1.0, 1.0)
    Lc = np.zeros_like(C)
    for j in range(d):
        p_sum = C[..., j, j] - np.sum(Lc[..., j, :j] ** 2, axis=-1)
        p = p_sum
        if j == 1:  # 1 - c^2 as (1 - c)(1 + c): no cancellation for |c| -> 1
            c10 = Lc[..., 1, 0]
            p = np.where(C[..., 1, 1] > 0, (1.0 - c10) * (1.0 + c10), 0.0)
        ok = p > _PIVOT_TOL
        root = np.sqrt(np.where(ok, p, 1.0))
        Lc[..., j, j] = np.where(ok, root, 0.0)
        for i in range(j + 1, d):
            # q is computed exactly like p_sum, so q == p_sum flags a twin of input j
            q = C[..., i, j] - np.sum(Lc[..., i, :j] * Lc[..., j, :j], axis=-1)
            v = np.where(q == p_sum, root, np.where(q == -p_sum, -root, q / root))
            Lc[..., i, j] = np.where(ok, v, 0.0)
    return np.ldexp(s[..., :, None] * Lc, e[..., None, None])


def psd_sqrt_lower(K) -> np.ndarray:
    """Lower-triangular ``L`` with ``L L^T = K`` for PSD, possibly singular, ``K``.

    ``K`` : shape ``(..., d, d)``; validated with :func:`check_kernel`.
    Returns float64 ``(..., d, d)``, lower triangular; a zero pivot (Schur
    complement ``<= 64 eps`` relative to the variance, i.e. a direction of ``K``
    that is a linear combination of earlier ones) gives an all-zero column, so
    the factor is lower-trapezoidal in rank-deficient cases.  For identical
    inputs (``K_ii = K_ij = K_jj``) rows ``i`` and ``j`` are bitwise equal, so
    ``z = L w`` has ``z_i == z_j`` exactly.
    """
    return _chol_psd(check_kernel(K))


def _factor_pivoted(K):
    """``M`` with ``M M^T = K`` and column maxima ``max_i |M_ik|`` on the diagonal of
    the variance-sorted factor: Cholesky of ``P K P^T`` (largest variance first),
    rows permuted back.  ``z = M w`` in the original coordinate order.
    Shapes: ``(B, d, d) -> (B, d, d)``.
    """
    d = K.shape[-1]
    if d == 1:
        return _chol_psd(K)
    diag = np.diagonal(K, axis1=-2, axis2=-1)
    perm = np.argsort(-diag, axis=-1, kind="stable")  # (B, d)
    Kp = np.take_along_axis(K, perm[:, :, None], axis=1)
    Kp = np.take_along_axis(Kp, perm[:, None, :], axis=2)
    Lp = _chol_psd(Kp)
    M = np.empty_like(Lp)
    np.put_along_axis(M, perm[:, :, None], Lp, axis=1)
    return M


# ---------------------------------------------------------------------------
# one-dimensional Gauss rules
# ---------------------------------------------------------------------------


def _to_longdouble(x):
    """mpf -> longdouble via a double-double split (portable, ~106 bits)."""
    hi = float(x)
    lo = float(x - hi)
    return np.longdouble(hi) + np.longdouble(lo)


def _gauss_from_recurrence(alpha, beta, mu0):
    """Gauss rule from monic three-term recurrence coefficients.

    ``p_{k+1} = (x - alpha_k) p_k - beta_k p_{k-1}``, ``k = 0..n-1``; ``alpha``,
    ``beta`` are sequences of length ``n`` (``beta[0]`` unused), given as
    longdouble-convertible numbers; ``mu0`` is the total mass.
    Golub--Welsch in float64 for starting values, then Newton on ``p_n`` and the
    Christoffel weights ``mu0 / sum_k phat_k(x)^2`` evaluated in extended
    precision (``np.longdouble``; 80-bit on x86), so the returned float64 nodes
    and weights are correctly rounded up to rare ties.
    Returns ``(nodes, weights)``, float64 arrays of shape ``(n,)``, nodes ascending.
    """
    n = len(alpha)
    a = np.array([_to_longdouble(v) if not isinstance(v, (int, float)) else np.longdouble(v) for v in alpha])
    b = np.array([_to_longdouble(v) if not isinstance(v, (int, float)) else np.longdouble(v) for v in beta])
    if n == 1:
        return np.array([float(a[0])]), np.array([float(mu0)])
    sb = np.sqrt(b)  # sb[k] = sqrt(beta_k), k >= 1
    J = np.diag(a.astype(np.float64)) + np.diag(sb[1:].astype(np.float64), 1) + np.diag(sb[1:].astype(np.float64), -1)
    x = np.sort(np.linalg.eigvalsh(J)).astype(np.longdouble)

    def orthonormal(x):
        # phat_0 = 1, phat_{k+1} = ((x - a_k) phat_k - sb_k phat_{k-1}) / sb_{k+1};
        # the last step (k = n-1) is left unnormalized (only its zeros matter).
        p0 = np.zeros_like(x)
        p1 = np.ones_like(x)
        d0 = np.zeros_like(x)
        d1 = np.zeros_like(x)
        ssum = np.ones_like(x)
        for k in range(n):
            nrm = sb[k + 1] if k + 1 < n else np.longdouble(1)
            sk = sb[k] if k > 0 else np.longdouble(0)
            p2 = ((x - a[k]) * p1 - sk * p0) / nrm
            d2 = (p1 + (x - a[k]) * d1 - sk * d0) / nrm
            p0, p1, d0, d1 = p1, p2, d1, d2
            if k + 1 < n:
                ssum = ssum + p1 * p1
        return p1, d1, ssum

    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(4):
            p, dp, _s = orthonormal(x)
            step = p / dp
            step = np.where(np.isfinite(step), step, 0)
            x = x - step
        _p, _dp, ssum = orthonormal(x)
        w = np.longdouble(mu0) / ssum
    w = np.where(np.isfinite(w), w, 0)
    return x.astype(np.float64), w.astype(np.float64)


def _chebyshev(moments, n):
    """Recurrence coefficients from ordinary moments (Chebyshev algorithm, mpmath).

    ``moments``: mpf list ``mu_0 .. mu_{2n-1}``.  Ill-conditioned (it loses about
    ``n`` digits), so it is run at ``dps ~ 2n + 40``.  Returns ``(alpha, beta)``
    lists of length ``n`` with ``beta[0] = mu_0``.
    """
    alpha = [None] * n
    beta = [None] * n
    alpha[0] = moments[1] / moments[0]
    beta[0] = moments[0]
    zero = mpmath.mpf(0)
    sig_prev = [zero] * (2 * n)
    sig = list(moments)
    for k in range(1, n):
        a, b = alpha[k - 1], beta[k - 1]
        new = [zero] * (2 * n)
        for l in range(k, 2 * n - k):
            new[l] = sig[l + 1] - a * sig[l] - b * sig_prev[l]
        alpha[k] = new[k + 1] / new[k] - sig[k] / sig[k - 1]
        beta[k] = new[k] / sig[k - 1]
        sig_prev, sig = sig, new
    return alpha, beta


def hermite_e(x):
    """Probabilists' Hermite polynomials ``He_0..He_4`` at ``x`` (a tuple of arrays): the Gaussian integration by
    parts weights, ``<d^k f>_1 = <f He_k>_1`` for a unit normal."""
    x2 = x * x
    return (np.ones_like(x), x, x2 - 1.0, x * (x2 - 3.0), x2 * (x2 - 6.0) + 3.0)


def hermite_functions(x, kmax: int):
    """The orthonormal Hermite functions ``e_k(x) = He_k(x)/sqrt(k!)``, ``k = 0..kmax``, at ``x`` (unit variance), one
    array at a time, by their recurrence ``e_(k+1) = (x e_k - sqrt(k) e_(k-1))/sqrt(k+1)`` (no factorials: stable to
    any order)."""
    prev, cur = np.zeros_like(x), np.ones_like(x)
    for k in range(kmax + 1):
        yield cur
        prev, cur = cur, (x * cur - math.sqrt(k) * prev) / math.sqrt(k + 1)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"the number of quadrature nodes must be a positive integer; got {n!r}")
    return int(n)


@functools.lru_cache(maxsize=None)
def _gauss_hermite(n):
    x, w = _gauss_from_recurrence([0] * n, [1] + list(range(1, n)), 1.0)
    x = 0.5 * (x - x[::-1])  # exact symmetry
    w = 0.5 * (w + w[::-1])
    return x, w


def gauss_hermite(n):
    """Probabilists' Gauss--Hermite rule: ``sum_i w_i g(x_i) ~ int g(x) exp(-x^2/2)/sqrt(2 pi) dx``.

    Exact for polynomials of degree ``<= 2n - 1``; weights sum to 1.
    Returns ``(nodes, weights)``, read-only float64 arrays of shape ``(n,)``.
    """
    return _frozen(_gauss_hermite(_check_n(n)))


@functools.lru_cache(maxsize=None)
def _gauss_legendre(n):
    with mpmath.workdps(30):
        beta = [2] + [mpmath.mpf(k * k) / (4 * k * k - 1) for k in range(1, n)]
    x, w = _gauss_from_recurrence([0] * n, beta, 2.0)
    x = 0.5 * (x - x[::-1])
    w = 0.5 * (w + w[::-1])
    return x, w


def gauss_legendre(n):
    """Gauss--Legendre rule on ``[-1, 1]`` (weights sum to 2); ``(nodes, weights)`` of shape ``(n,)``."""
    return _frozen(_gauss_legendre(_check_n(n)))


@functools.lru_cache(maxsize=None)
def _half_gauss_hermite(n):
    with mpmath.workdps(2 * n + 40):
        c = 1 / mpmath.sqrt(2 * mpmath.pi)
        # m_k = int_0^inf t^k exp(-t^2/2) dt / sqrt(2 pi) = 2^((k-1)/2) Gamma((k+1)/2) / sqrt(2 pi)
        mom = [c * mpmath.mpf(2) ** (mpmath.mpf(k - 1) / 2) * mpmath.gamma(mpmath.mpf(k + 1) / 2) for k in range(2 * n)]
        alpha, beta = _chebyshev(mom, n)
        return _gauss_from_recurrence(alpha, beta, 0.5)


def half_gauss_hermite(n):
    """Gauss rule for the weight ``exp(-t^2/2)/sqrt(2 pi)`` on ``[0, inf)`` (weights sum to 1/2).

    Exact for polynomials of degree ``<= 2n - 1``.  Computed once per ``n`` from the
    exact moments ``m_k = 2^((k-1)/2) Gamma((k+1)/2) / sqrt(2 pi)`` (Chebyshev
    algorithm in mpmath at ``dps = 2n + 40``, then Golub--Welsch + Newton in
    extended precision).  Returns ``(nodes, weights)`` of shape ``(n,)``.
    """
    return _frozen(_half_gauss_hermite(_check_n(n)))


@functools.lru_cache(maxsize=None)
def _radial_rule(n):
    with mpmath.workdps(2 * n + 40):
        # mu_k = int_0^inf r^k r exp(-r^2/2) dr = 2^(k/2) Gamma(k/2 + 1)
        mom = [mpmath.mpf(2) ** (mpmath.mpf(k) / 2) * mpmath.gamma(mpmath.mpf(k) / 2 + 1) for k in range(2 * n)]
        alpha, beta = _chebyshev(mom, n)
        return _gauss_from_recurrence(alpha, beta, 1.0)


def radial_rule(n):
    """Gauss rule for the weight ``r exp(-r^2/2)`` on ``[0, inf)`` (weights sum to 1).

    This is the radial part of the 2D standard normal in polar coordinates,
    ``phi_2(w) d^2w = r exp(-r^2/2) dr dt / (2 pi)``.  Exact for polynomials in
    ``r`` of degree ``<= 2n - 1`` (from the moments ``2^(k/2) Gamma(k/2 + 1)``).
    Returns ``(nodes, weights)`` of shape ``(n,)``.
    """
    return _frozen(_radial_rule(_check_n(n)))


def _frozen(rule):
    x, w = (np.array(a) for a in rule)
    x.flags.writeable = False
    w.flags.writeable = False
    return x, w


# ---------------------------------------------------------------------------
# integration engines.  Each takes the flattened batch of factors (B, d, d) and
# returns _Sums.result(): values (B,) or (B, m), tail_fraction (B,), the share
# of sum |weight * f| coming from |w| > _TAIL_R (divergence detector), and that sum (B,).
# ---------------------------------------------------------------------------

_TAIL_R = 8.0
_TAIL_MAX = 1e-6
# points per evaluation of f: keeps the temporaries in cache (np.tanh on 5e5-element
# arrays runs ~10x faster than on 1e8-element ones) and memory far below 200 MB
_CHUNK_POINTS = 1 << 17

# smooth (trapezoidal) rule: ball radius, z-resolution h_z, max spacing, cap on m
_TRAP_R = 9.0
# d = 2 at 0.25 (not 0.3): tanh products at rho -> 1 erred by up to 1e-10 at 0.3 (K ~ 0.36), 1.1e-12 at 0.25
# (+15% for a kernel flow, +34% for GELU's input tangents); 0.2 reaches 2e-15 at twice the cost
_TRAP_HZ = {1: 0.25, 2: 0.25, 3: 0.33, 4: 0.5}
_TRAP_HMAX = 0.5
# (d = 1 at 4000 left the 1D moments of bounded activations unresolved beyond K ~ 1.2e4: tanh's V^(2) at K = 1e6,
# a small difference of O(1) averages, was 69 % off; 1e5 resolves K up to ~7.7e6 at the nominal spacing and costs only
# where a kernel needs it, e.g. 0.08 -> 0.8 s for a chaotic GELU flow to K ~ 1e15)
_TRAP_MCAP = {1: 100_000, 2: 400, 3: 80, 4: 24}
# ladder of half-widths m (nodes per axis = 2m + 1), ~9% apart, so that batches of
# kernels share a small number of cached grids
_LADDER = np.unique(np.ceil(18 * 1.09 ** np.arange(80)).astype(int))
# kinked rules
_POLAR_N = (24, 16)  # (radial nodes, angular nodes per sector)
_NESTED_N = {1: 40, 2: 24, 3: 32, 4: 12}
_CLIP_W = 12.0
# 1-D panel rule (d = 1, variances beyond _LINE_MIN_VAR with kinks, beyond the trapezoid's cap without):
# Gauss--Legendre panels in z of width _LINE_H out to |z| = _LINE_INNER (where an activation's structure lies), then
# doubling to one standard deviation, the half-range rule in w beyond (see _line_engine). The trapezoid in w must
# spread its capped nodes over the whole Gaussian (softplus's <sigma'^2> at K = 1e10 was 1e-5 off, tanh's 5.8x) and
# the half-range rule of a kinked f does not see structure at |z| ~ 1 of a wide Gaussian (an ELU's <sigma'^2> at
# K = 1e4 was 5e-4 off), silently
_LINE_MIN_VAR = 64.0
_LINE_H = 1.0
_LINE_INNER = 64.0
_LINE_NG = {False: 16, True: 11}     # nodes per panel: the rule, and the coarse rule of its error estimate
# d = 2 nested: graded breakpoints around the inner-kink crossings (see _nested_engine)
_GRADE_AT = np.array([-9.0, -3.0, -1.0, 1.0, 3.0, 9.0])


class _Sums:
    """Accumulates ``sum W f``, ``sum W |f|`` and ``sum W_tail |f|`` per kernel."""

    def __init__(self, B):
        self.B = B
        self.val = None
        self.tot = np.zeros(B)
        self.tl = np.zeros(B)

    def add(self, idx, F, W, tW):
        """``F`` (b, N) or (b, N, m); ``W``, ``tW`` (N,) shared or (b, N) per kernel."""
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN from f: reported by _diagnose
            self._add(idx, F, W, tW)

    def _add(self, idx, F, W, tW):
        A = np.abs(F)
        if W.ndim == 1:
            if F.ndim == 2:
                val = F @ W
                both = A @ np.stack([W, tW], axis=-1)
                tot, tl = both[:, 0], both[:, 1]
            else:
                val = np.einsum("bnm,n->bm", F, W)
                tot = np.einsum("bnm,n->b", A, W)
                tl = np.einsum("bnm,n->b", A, tW)
        else:
            sub = "bn" if F.ndim == 2 else "bnm"
            val = np.einsum(f"{sub},bn->b{sub[2:]}", F, W)
            tot = np.einsum(f"{sub},bn->b", A, W)
            tl = np.einsum(f"{sub},bn->b", A, tW)
        if self.val is None:
            self.val = np.zeros((self.B,) + val.shape[1:])
        elif self.val.shape[1:] != val.shape[1:]:
            raise ParameterError("the integrand f returned a different number of components on different calls")
        self.val[idx] += val
        self.tot[idx] += tot
        self.tl[idx] += tl

    def result(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(self.tot > 0, self.tl / np.where(self.tot > 0, self.tot, 1.0), 0.0)
        frac = np.where(np.isnan(frac), np.inf, frac)
        return self.val, frac, self.tot


def _eval_f(f, z):
    """``f(z)`` for ``z`` (b, N, d), checked to be real of shape (b, N) or (b, N, m)."""
    F = np.asarray(f(z))
    if np.iscomplexobj(F):
        raise ParameterError("the integrand f returned complex values; it must return real float arrays")
    F = F.astype(np.float64, copy=False)
    if F.shape[:2] != z.shape[:2] or F.ndim > 3:
        raise ParameterError(
            f"the integrand f must map z of shape {z.shape} = (..., d) to shape {z.shape[:2]} or "
            f"{z.shape[:2] + ('m',)}; it returned shape {F.shape}"
        )
    return F


_GRID_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()
_GRID_CACHE_BYTES = 150e6
_GRID_MAX_POINTS = 4_000_000


def _trap_grid(ms):
    """Pruned tensor trapezoidal grid for the standard normal in ``d = len(ms)`` dims.

    Axis ``k``: nodes ``j R / m_k``, ``|j| <= m_k``; keep ``|w| <= R``.  Returns
    ``(points (d, N), weights (N,), tail weights (N,))``: weights
    ``prod_k h_k phi(w_k)`` normalized to sum to 1 (the pruned mass is
    ~exp(-R^2/2)); tail weights are the weights of the points with ``|w| > _TAIL_R``.
    Cached (LRU, at most ``_GRID_CACHE_BYTES`` in all).
    """
    ms = tuple(int(m) for m in ms)
    hit = _GRID_CACHE.get(ms)
    if hit is not None:
        _GRID_CACHE.move_to_end(ms)
        return hit
    R2 = _TRAP_R**2 * (1 + 1e-12)
    approx = math.pi ** (len(ms) / 2) / math.gamma(len(ms) / 2 + 1) * math.prod(ms)
    if approx > _GRID_MAX_POINTS:
        raise ParameterError(
            f"the trapezoidal grid with {[2 * m + 1 for m in ms]} nodes per axis would have ~{approx:.3g} "
            f"points (limit {_GRID_MAX_POINTS}); use a smaller n"
        )
    pts = np.zeros((1, 0))
    r2 = np.zeros(1)
    for m in ms:  # add one axis at a time, pruning to the ball as we go
        ax = np.arange(-m, m + 1) * (_TRAP_R / m)
        r2 = (r2[:, None] + ax**2).ravel()
        pts = np.concatenate(
            [np.repeat(pts, len(ax), axis=0), np.tile(ax, len(pts))[:, None]], axis=1
        )
        keep = r2 <= R2
        pts, r2 = pts[keep], r2[keep]
    pts = np.ascontiguousarray(pts.T)  # (d, N): z = M @ pts is then (b, d, N), see _smooth_engine
    w = np.exp(-0.5 * r2)
    w /= w.sum()
    tw = w * (r2 > _TAIL_R**2)
    for a in (pts, w, tw):
        a.flags.writeable = False
    grid = (pts, w, tw)
    _GRID_CACHE[ms] = grid
    total = sum(sum(a.nbytes for a in g) for g in _GRID_CACHE.values())
    while total > _GRID_CACHE_BYTES and len(_GRID_CACHE) > 1:
        _, old = _GRID_CACHE.popitem(last=False)
        total -= sum(a.nbytes for a in old)
    return grid


def _ladder_up(m):
    """Smallest ladder value >= m (elementwise); beyond the ladder, m itself."""
    idx = np.searchsorted(_LADDER, m)
    return np.where(idx < len(_LADDER), _LADDER[np.minimum(idx, len(_LADDER) - 1)], m)


def _requested_ms(M, resolution=None):
    """Per-kernel, per-axis half-widths (B, d) that the trapezoid's z-spacing asks for, before any cap."""
    d = M.shape[-1]
    colmax = np.max(np.abs(M), axis=-2)  # (B, d): how fast z moves along w_k
    with np.errstate(divide="ignore"):
        h = np.minimum(_TRAP_HMAX, (_TRAP_HZ[d] if resolution is None else resolution) / colmax)
    # a huge kernel asks for more nodes than any int (and than the cap below): clip before the cast
    return np.ceil(np.minimum(_TRAP_R / h, 1e9) - 1e-9).astype(int)


def _smooth_ms(M, n, coarse, resolution=None):
    """Per-kernel, per-axis half-widths ``m`` (B, d) of the trapezoidal grid (``resolution``: the z-spacing instead
    of the default, without the default's cap on nodes per axis)."""
    B, d, _ = M.shape
    if n is not None:
        m = max(1, (int(n) - 1) // 2)
        if coarse:
            m = max(1, round(2 * m / 3))
        return np.full((B, d), m, dtype=int)
    m = _requested_ms(M, resolution)
    cap = _TRAP_MCAP[d] if resolution is None else 10**6
    if coarse:   # 2/3 of the nodes of the rule used: of the cap where the cap applies (else the estimate is 0)
        return np.minimum(np.maximum(1, np.round(2 * m / 3).astype(int)), round(2 * cap / 3))
    return np.minimum(_ladder_up(m), cap)


def _smooth_engine(f, M, ms):
    """Trapezoidal rule: ``z = M w`` on the grid ``_trap_grid(ms[b])``; ``M`` (B, d, d)."""
    B, d, _ = M.shape
    sums = _Sums(B)
    keys, inv = np.unique(ms, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    for g, key in enumerate(keys):
        sel = np.nonzero(inv == g)[0]
        pts, W, tW = _trap_grid(tuple(key))
        N = len(W)
        per_k = max(1, _CHUNK_POINTS // N)  # kernels per chunk
        per_p = min(N, _CHUNK_POINTS)  # points per chunk (for grids larger than the chunk)
        for k0 in range(0, len(sel), per_k):
            idx = sel[k0 : k0 + per_k]
            Mb = M[idx]
            for p0 in range(0, N, per_p):
                ps = slice(p0, p0 + per_p)
                # z = M w as (b, d, n) and handed to f as the (b, n, d) view: each
                # coordinate z[..., i] is then contiguous (~1.5x faster overall)
                z = np.matmul(Mb, pts[:, ps]).transpose(0, 2, 1)
                sums.add(idx, _eval_f(f, z), W[ps], tW[ps])
    return sums.result()


def _polar_engine(f, L, nr, nt):
    """2D polar rule for kinks at ``z_i = 0``; ``L`` (B, 2, 2) lower triangular.

    ``<f> = (1/2pi) int_0^2pi dt int_0^inf dr r e^{-r^2/2} f(r L (cos t, sin t))``;
    the rays ``t = atan2(L_i2, L_i1) +- pi/2`` (where ``z_i = 0``) cut ``[0, 2 pi)``
    into four sectors (some possibly empty), each done with ``nt`` Gauss--Legendre
    nodes; ``nr`` nodes of :func:`radial_rule` in ``r``.
    """
    B = L.shape[0]
    r, wr = _radial_rule(nr)
    x, wx = _gauss_legendre(nt)
    wr_tail = wr * (r > _TAIL_R)
    N = 4 * nt * nr
    sums = _Sums(B)
    per = max(1, _CHUNK_POINTS // N)
    for b0 in range(0, B, per):  # everything per chunk: no batch-sized temporaries
        sl = slice(b0, min(B, b0 + per))
        Lc = L[sl]
        b = Lc.shape[0]
        alpha = np.arctan2(Lc[:, :, 1], Lc[:, :, 0])  # (b, 2)
        rays = np.sort(np.concatenate([alpha + 0.5 * np.pi, alpha - 0.5 * np.pi], axis=-1) % (2 * np.pi), axis=-1)
        ends = np.concatenate([rays[:, 1:], rays[:, :1] + 2 * np.pi], axis=-1)
        half = 0.5 * (ends - rays)  # (b, 4) sector half-widths, sum = pi
        t = (0.5 * (ends + rays)[:, :, None] + half[:, :, None] * x).reshape(b, -1)  # (b, 4 nt)
        wt = (half[:, :, None] * wx).reshape(b, -1) / (2 * np.pi)
        u = np.matmul(Lc, np.stack([np.cos(t), np.sin(t)], axis=1))  # (b, 2, 4 nt)
        z = (u[:, :, :, None] * r).reshape(b, 2, N).transpose(0, 2, 1)  # (b, N, 2) view
        W = (wt[:, :, None] * wr).reshape(b, N)
        tW = (wt[:, :, None] * wr_tail).reshape(b, N)
        sums.add(sl, _eval_f(f, z), W, tW)
    return sums.result()


def _line_engine(f, var, kinks, coarse):
    """The 1-D panel rule for variances ``var`` (B,), each above ``_LINE_MIN_VAR`` (see ``_LINE_H``), kinks within
    ``|z| < _LINE_INNER``: Gauss--Legendre panels of width ``_LINE_H`` in z on ``|z| <= _LINE_INNER`` (split at the
    kinks), the same for every kernel; beyond, on each side, panels doubling in z out to one standard deviation (f's
    slow structure between, such as an exponential e^(z/10), at its own scale: the half-range rule alone put no node
    between |z| = 64 and ~0.05 sd, and an exp(-z^2/2e4) at K = 1e10 came out 52 % low, its check passing), then the
    shifted half-range rule of :func:`_nested_level`, ``int_a^inf g phi = int_0^inf g(a + t) e^(-a t - a^2/2) phi(t)
    dt`` in ``w = z / sqrt(var)`` from ``a = max(1, _LINE_INNER / sqrt(var))``. Weights normalized to sum to 1 per
    kernel. ``coarse``: about 2/3 of the nodes (the error estimate)."""
    x, wx = _gauss_legendre(_LINE_NG[coarse])
    t, wt = _half_gauss_hermite(_nested_n(None, 1, coarse))
    edges = np.unique(np.concatenate([np.arange(-_LINE_INNER, _LINE_INNER + 1e-9, _LINE_H), kinks]))
    hw, md = 0.5 * np.diff(edges)[:, None], 0.5 * (edges[1:] + edges[:-1])[:, None]
    zi, wi = (md + hw * x).ravel(), (hw * wx).ravel()
    sd_all = np.sqrt(var)
    with np.errstate(divide="ignore"):
        doublings = np.where(sd_all > _LINE_INNER, np.ceil(np.log2(sd_all / _LINE_INNER) - 1e-12), 0).astype(int)
    sums = _Sums(var.size)
    for m in np.unique(doublings):          # kernels with the same number of doubling panels, together
        idx = np.flatnonzero(doublings == m)
        sd = sd_all[idx][:, None]
        parts_z, parts_w = [], []
        if m > 0:
            e = np.tile(_LINE_INNER * 2.0 ** np.arange(m + 1), (idx.size, 1))
            e[:, -1] = sd[:, 0]                                              # the last panel ends at one sd
            h2, m2 = 0.5 * np.diff(e, axis=1)[:, :, None], 0.5 * (e[:, 1:] + e[:, :-1])[:, :, None]
            gz = (m2 + h2 * x).reshape(idx.size, -1)
            parts_z.append(gz)
            parts_w.append((h2 * wx).reshape(idx.size, -1) * np.exp(-0.5 * (gz / sd) ** 2) / (_SQRT_2PI * sd))
            a = np.ones_like(sd)
        else:
            a = _LINE_INNER / sd
        parts_z.append(sd * (a + t))
        parts_w.append(wt * np.exp(-a * t - 0.5 * a * a))
        side_z, side_w = np.concatenate(parts_z, axis=1), np.concatenate(parts_w, axis=1)
        z = np.concatenate([-side_z[:, ::-1], np.broadcast_to(zi, (idx.size, zi.size)), side_z], axis=1)
        W = np.concatenate([side_w[:, ::-1], wi * np.exp(-0.5 * (zi / sd) ** 2) / (_SQRT_2PI * sd), side_w], axis=1)
        W /= W.sum(axis=1, keepdims=True)
        tW = W * (np.abs(z) > _TAIL_R * sd)
        per = max(1, _CHUNK_POINTS // z.shape[1])
        for b0 in range(0, idx.size, per):
            sl = slice(b0, b0 + per)
            sums.add(idx[sl], _eval_f(f, z[sl, :, None]), W[sl], tW[sl])
    return sums.result()


def _wide_lines(K, kinks, n, method, resolution) -> np.ndarray:
    """(B,) bool: the 1-D kernels of ``K`` (B, d, d) that :func:`expect`'s default takes to the panel rule: beyond
    ``_LINE_MIN_VAR`` with kinks, beyond the trapezoid's cap without (below it the trapezoid resolves even a periodic
    f, whose structure the wider outer panels would miss)."""
    if (K.shape[-1] != 1 or n is not None or method is not None or resolution is not None
            or any(abs(c) >= _LINE_INNER for c in kinks)):       # (kinks far out: the nested rule splits there)
        return np.zeros(K.shape[0], dtype=bool)
    return K[:, 0, 0] > (_LINE_MIN_VAR if kinks else default_rule_limit(1)[0])


def _panels(f, K, kinks, wide, coarse, batch):
    """The panel rule on the ``wide`` kernels of ``K`` (B, 1, 1): ``(result, taken)``, ``result`` the rule's
    :class:`_Sums` result (``coarse``: its 2/3-node version) on the kernels it resolves, ``taken`` (B,) those
    kernels. It resolves a kernel where its 2/3-node version agrees within ``_CAPPED_TOL[1]`` (relative as in
    :func:`_check_capped`); structure far out in the Gaussian (a periodic f), which the panels beyond
    ``|z| = _LINE_INNER`` miss, fails that: a smooth f goes back to the trapezoid, which resolves a periodic f at any
    spacing below its period (and reports its own error, :func:`_check_capped`), a kinked one keeps the panel value
    with a QuadratureWarning."""
    idx = np.nonzero(wide)[0]
    var = K[idx, 0, 0]
    fine, crude = _line_engine(f, var, kinks, False), _line_engine(f, var, kinks, True)
    rel = _relative_change(fine[0], crude[0], fine[2], 1e-6)
    ok = ~(rel > _CAPPED_TOL[1])
    if kinks and not ok.all():
        b = int(np.argmax(np.where(ok, -np.inf, rel)))
        where = np.unravel_index(int(idx[b]), batch) if batch else ()
        warnings.warn(QuadratureWarning(
            f"gaussian.expect: the 1-D panel rule (width {_LINE_H:g} in z out to |z| = {_LINE_INNER:g}, wider beyond) "
            f"does not resolve the kinked integrand at the kernel K{_fmt_index(where)} (variance {float(var[b]):.3g}): "
            f"its estimated relative error is {float(rel[b]):.1e}, from structure far out in the Gaussian; scale the "
            "kernel down", float(rel[b]), float(var[b]), 1), stacklevel=4)
        ok[:] = True
    taken = np.zeros(K.shape[0], dtype=bool)
    taken[idx[ok]] = True
    return tuple(a[ok] for a in (crude if coarse else fine)), taken


def _nested_level(Lb, S, k, c, t, wt, x, wx):
    """Nodes and weights in ``w_k`` for every outer point: (b, P, Q) each.

    ``S`` (b, P, d) holds ``sum_{j<k} L_ij w_j``.  Breakpoints: 0, the own kinks
    ``(c - S_k) / L_kk`` (none if ``L_kk = 0``) and, for d = 2 at the outer
    level, the crossings ``c / L_21`` with graded points around them.  End
    segments ``(-inf, lo]``, ``[hi, inf)`` (``lo <= 0 <= hi``): shifted half-range
    rule, ``int_s^inf g phi = int_0^inf g(s + t) e^{-s t - s^2/2} phi(t) dt``;
    finite segments: Gauss--Legendre times ``phi``.
    """
    b, P, d = S.shape
    lkk = Lb[:, k, k][:, None, None]
    ok = lkk > 0
    cs = c if k > 0 else c[c != 0]  # at k = 0 a kink at 0 is the split at 0
    bps = [np.zeros((b, P, 1))]
    if len(cs):
        own = (cs - S[:, :, k, None]) / np.where(ok, lkk, 1.0)
        bps.append(np.where(ok, own, 0.0))
    if d == 2 and k == 0 and len(c):
        # The inner integral over w_2 smooths the kink z_2 = c over a width
        # s = L_22 / |L_21| in w_1 around w_1 = c / L_21: a near-kink when K is
        # ill-conditioned.  Split there, and (if s < 1) at c / L_21 + s (+-1, +-3, +-9);
        # the layer is flat to ~1e-16 beyond 9 s.
        l10 = Lb[:, 1, 0][:, None, None]
        ok1 = l10 != 0
        x0 = np.where(ok1, c / np.where(ok1, l10, 1.0), 0.0)  # (b, 1, nk)
        bps.append(x0[..., c != 0])
        with np.errstate(divide="ignore"):
            s = np.where(ok1, Lb[:, 1, 1][:, None, None] / np.abs(l10), np.inf)
        if np.any(s < 1.0):
            graded = x0[..., None] + np.where(np.isfinite(s), s, 0.0)[..., None] * _GRADE_AT
            bps.append(graded.reshape(b, 1, -1))
    bp = np.sort(np.clip(np.concatenate(bps, axis=-1), -_CLIP_W, _CLIP_W), axis=-1)
    lo, hi = bp[..., :1], bp[..., -1:]
    nodes = [lo - t[::-1], hi + t]
    wts = [wt[::-1] * np.exp(lo * t[::-1] - 0.5 * lo * lo), wt * np.exp(-hi * t - 0.5 * hi * hi)]
    if bp.shape[-1] > 1:
        a, e = bp[..., :-1, None], bp[..., 1:, None]
        hw, md = 0.5 * (e - a), 0.5 * (e + a)
        fn = md + hw * x  # (b, P, segments, ng)
        nodes.insert(1, fn.reshape(b, P, -1))
        wts.insert(1, (hw * wx * np.exp(-0.5 * fn * fn) / _SQRT_2PI).reshape(b, P, -1))
    return np.concatenate(nodes, axis=-1), np.concatenate(wts, axis=-1)


def _nested_engine(f, L, kinks, nh, ng):
    """Iterated 1D rules along the lower-triangular factor ``L`` (B, d, d).

    ``nh`` half-range nodes per end segment, ``ng`` Gauss--Legendre nodes per
    finite segment.  Levels are expanded depth first in slices so that at most
    ~``_CHUNK_POINTS`` points are evaluated at once.
    """
    B, d, _ = L.shape
    t, wt = _half_gauss_hermite(nh)
    x, wx = _gauss_legendre(ng)
    c = np.asarray(kinks, dtype=np.float64)
    # upper bound of the per-kernel node count of each level (for slicing)
    counts = []
    for k in range(d):
        nb = 1 + (len(c) if k > 0 else int(np.sum(c != 0)))
        if d == 2 and k == 0:
            nb += len(c) * (1 + len(_GRADE_AT))
        counts.append(2 * nh + (nb - 1) * ng)
    sums = _Sums(B)

    def expand(Lb, idx, S, W, r2, k):
        if k == d:
            sums.add(idx, _eval_f(f, S), W, W * (r2 > _TAIL_R**2))
            return
        nodes, wts = _nested_level(Lb, S, k, c, t, wt, x, wx)
        b, P, Q = nodes.shape
        step = max(1, _CHUNK_POINTS // (b * Q * int(np.prod(counts[k + 1 :]))))
        for p0 in range(0, P, step):
            ps = slice(p0, p0 + step)
            nd = nodes[:, ps]
            S2 = (S[:, ps, None, :] + nd[..., None] * Lb[:, None, None, :, k]).reshape(b, -1, d)
            W2 = (W[:, ps, None] * wts[:, ps]).reshape(b, -1)
            r22 = (r2[:, ps, None] + nd * nd).reshape(b, -1)
            expand(Lb, idx, S2, W2, r22, k + 1)

    per = max(1, _CHUNK_POINTS // int(np.prod(counts)))
    for b0 in range(0, B, per):
        sl = slice(b0, min(B, b0 + per))
        b = sl.stop - sl.start
        expand(L[sl], sl, np.zeros((b, 1, d)), np.ones((b, 1)), np.zeros((b, 1)), 0)
    return sums.result()


# ---------------------------------------------------------------------------
# public driver
# ---------------------------------------------------------------------------

def _check_kinks(kinks):
    try:
        ks = np.asarray(tuple(kinks), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ParameterError(
            f"kinks must be a tuple of real numbers (z-values where f is not smooth); got {kinks!r}"
        ) from None
    if not np.all(np.isfinite(ks)):
        raise ParameterError(f"kinks must be finite real numbers; got {kinks!r}")
    return tuple(sorted(set(float(k) for k in ks)))


def _nested_n(n, d: int, coarse: bool) -> int:
    """Nodes per segment of the nested rule: ``n`` or the default for d, about 2/3 of it for the ``coarse`` rule."""
    nn = n if n is not None else _NESTED_N[d]
    return max(1, round(2 * nn / 3)) if coarse else nn


def _run(f, K, kinks, n, coarse, method=None, resolution=None, batch=()):
    """Pick the method for validated ``K`` (B, d, d); ``coarse``: the ~2/3-node rule; ``method`` forces one.
    Returns ``(result, label, taken)``: the engine's result, its name and the (B,) kernels the 1-D panel rule took."""
    taken = np.zeros(K.shape[0], dtype=bool)
    if method == "panel":
        if K.shape[-1] != 1 or n is not None or any(abs(c) >= _LINE_INNER for c in kinks):
            raise ParameterError(f"method='panel' is the 1-D rule for kinks within |z| < {_LINE_INNER:g} (no n=); got "
                                 f"d = {K.shape[-1]}, kinks {kinks}", "method")
        if not np.all(K[:, 0, 0] > _LINE_MIN_VAR):
            raise ParameterError(f"method='panel' is for variances beyond {_LINE_MIN_VAR:g} (its panels sit at the "
                                 f"activation's scale, |z| ~ 1); got {float(np.min(K[:, 0, 0])):.3g}", "method")
        return _line_engine(f, K[:, 0, 0], kinks, coarse), "panel", ~taken
    wide = _wide_lines(K, kinks, n, method, resolution)
    if np.any(wide):
        line, taken = _panels(f, K, kinks, wide, coarse, batch)
        if np.all(taken):
            return line, "panel", taken
        rest, other = _engine(f, K[~taken], kinks, n, coarse, method, resolution)
        if not np.any(taken):
            return rest, other, taken
        merged = []
        for a, b in zip(line, rest):
            out = np.empty((K.shape[0],) + a.shape[1:])
            out[taken], out[~taken] = a, b
            merged.append(out)
        return tuple(merged), f"{other} (panel at variances beyond {_LINE_MIN_VAR:g})", taken
    res, label = _engine(f, K, kinks, n, coarse, method, resolution)
    return res, label, taken


def _engine(f, K, kinks, n, coarse, method, resolution):
    """:func:`_run` without the panel rule: ``(result, label)``."""
    d = K.shape[-1]
    if method == "nested":
        nn = _nested_n(n, d, coarse)
        return _nested_engine(f, _chol_psd(K), kinks or (0.0,), nn, nn), "nested"
    if method == "polar":
        if d != 2 or any(k != 0.0 for k in kinks):
            raise ParameterError("method='polar' is for d = 2 with kinks at 0 only")
        kinks = (0.0,)
    elif method == "smooth":
        if kinks:
            raise ParameterError("method='smooth' ignores kinks and would lose accuracy; pass kinks=() to use it")
    elif method is not None:
        raise ParameterError(f"method must be None, 'smooth', 'polar', 'nested' or 'panel', got {method!r}")
    if not kinks:
        M = _factor_pivoted(K)
        return _smooth_engine(f, M, _smooth_ms(M, n, coarse, resolution)), "smooth"
    L = _chol_psd(K)
    if d == 2 and kinks == (0.0,):
        nr, nt = (n, n) if n is not None else _POLAR_N
        if coarse:
            nr, nt = max(1, round(2 * nr / 3)), max(1, round(2 * nt / 3))
        return _polar_engine(f, L, nr, nt), "polar"
    nn = _nested_n(n, d, coarse)
    return _nested_engine(f, L, kinks, nn, nn), "nested"


def expect(f, K, *, kinks=(), n=None, return_error=False, method=None, resolution=None):
    r"""Gaussian expectation :math:`\langle f(z)\rangle_K`, ``z ~ N(0, K)``, d = 1..4.

    Parameters
    ----------
    f : callable
        Vectorized numpy integrand in the original coordinates: ``f(z)`` with
        ``z`` float64 of shape ``(..., d)`` returns ``(...)`` or ``(..., m)``
        (``m`` integrands at once).  It is only ever called with finite ``z``.
    K : array_like, ``(d, d)`` or batched ``(B..., d, d)``, PSD (singular allowed).
    kinks : tuple of float
        z-values where ``f`` is not smooth in some coordinate (same set for every
        coordinate), e.g. ``(0.0,)`` for ReLU, ``(-1.0, 1.0)`` for hard-tanh;
        ``()`` means ``f`` is analytic.
    n : int, optional
        Override of the per-axis node count: smooth -- trapezoidal nodes per axis
        on ``[-9, 9]`` (``2 floor((n - 1) / 2) + 1`` nodes, the same for every kernel);
        polar -- radial nodes and angular nodes per sector; nested -- nodes per
        segment.  ``None``: defaults (below).
    method : None, "smooth", "polar", "nested" or "panel"
        Force an engine (``None``: pick from ``kinks`` and d as below). Used to check one algorithm
        against another; "nested" accepts smooth integrands too (it splits at 0); "panel" (d = 1, variances
        beyond 64) without its check against the trapezoid: ask ``return_error=True``.
    resolution : float, optional
        Smooth engine only: the z-spacing ``h_z`` of the trapezoidal rule instead of the defaults below, with no
        cap on nodes per axis (at most 4e6 grid points). For high derivatives of an activation, whose poles are
        closer in relative terms (0.1 takes the eighth derivative of ``tanh^2`` from 3e-5 to ~1e-12).
    return_error : bool
        Also return an error estimate: ``|I_n - I_n'|`` with a rule of ~2/3 the
        nodes per axis (an overestimate of the error of ``I_n`` when the rule is
        converging).

    Returns
    -------
    value : ndarray of shape ``(B...)`` (+ ``(m,)``), 0-d for a single kernel.
    error : same shape, only if ``return_error``.

    Raises
    ------
    ValueError
        bad ``K`` (see :func:`check_kernel`), ``d > 4``, bad ``f`` output shape,
        or a result that is not finite / not captured by the rule (integrand
        overflow, NaN from ``f``, or more than 1e-6 of ``sum |weight f|`` from
        ``|w| > 8``: the integral diverges or the activation grows too fast for
        this kernel).

    Warns
    -----
    QuadratureWarning
        (a ``PdltWarning``) where the default smooth rule had to cap its nodes (variances beyond
        :func:`default_rule_limit`) and its error estimate (relative to each average, an
        overestimate) exceeds 1e-8 (1e-7 in 3D, 1e-5 in 4D): ``n``, ``resolution`` or
        ``return_error=True`` (the caller handles the error) avoid it. Likewise where a kinked rule at a kernel
        with a variance beyond 64 moves by more than that at 3/2 of its nodes (the 1-D panel rule: 2/3 of them):
        structure of f at ``|z| ~ 1`` that the rule's nodes, spread over a wide Gaussian, do not resolve.

    Defaults and measured accuracy (relative errors)
    ------------------------------------------------
    * smooth (trapezoidal): ``R = 9``; spacing ``h_k = min(0.5, h_z / max_i |M_ik|)``
      with ``h_z = 0.25, 0.25, 0.33, 0.5`` for d = 1..4, rounded up to a ladder
      of node counts; per axis that is 37..~200 nodes (d = 1), 37..~120
      (d = 2, K entries 0.05..10; ~2500 points after pruning for K ~ 1).
      d = 1, 2, vs :func:`expect_mp`: tanh, erf, sin, GELU, SiLU, softplus,
      sigmoid and their derivatives, products ``s(z1) s(z2)``, entries
      0.05..10, ``|rho|`` up to 0.99999: mostly ~1e-15; tanh products up
      to 1.1e-12 (near K = 0.25 at rho = 0.99999, against spacing 0.05).
      At the earlier ``h_z = 0.3`` for d = 2 tanh products erred by up to
      1e-10 there (K ~ 0.36), which deep zero-noise posteriors amplify;
      ``h_z = 0.2`` would reach 2e-15 at twice the cost.
      d = 3: ~1e-11 (tanh products, K entries up to 10).
      d = 4: ~3e-7 at K ~ 1, 3e-6 at K ~ 3, worse beyond (grid capped at
      49 nodes per axis; pass ``n`` for more, up to ~4e6 grid points).
      Polynomials (Wick contractions): rounding level.
    * polar (d = 2, kinks at 0): 24 radial x 4 sectors x 16 angular nodes;
      ReLU, leaky ReLU, ``|z|``, step products: <= 1e-15 for any ``rho``,
      including ``rho = +-1`` exactly.
    * panel (d = 1, variances beyond ~7.7e6, or beyond 64 with kinks): 16 Gauss--Legendre nodes on each panel of
      width 1 within ``|z| <= 64`` and on the doubling panels beyond, 40 half-range nodes per tail (~2100 nodes,
      ~600 more at K = 1e300); <= 2e-14 against mpmath for the registered activations and ELU at K = 1e2 .. 1e20.
      It checks itself against 11 and 27 nodes: beyond 1e-8 (relative as the capped check below) a smooth f goes
      back to the trapezoid.
    * nested: 40 / 24 / 32 / 12 nodes per segment for d = 1 / 2 / 3 / 4.
      d = 1 exact for piecewise polynomials; d = 2 hard-tanh and step products
      <= 6e-14 for ``|rho| <= 0.999``; d = 3, 4: see the module docstring
      (0.1-0.3 s per kernel for ReLU products).
    * throughput (:func:`bench_expect`, one core): ~3e4 2D tanh and ~5e4 2D
      ReLU expectations per second for kernels with entries ~0.05..5.
    """
    Kc = check_kernel(K)
    d = Kc.shape[-1]
    if d > 4:
        raise ParameterError(f"expect supports d = 1..4 jointly Gaussian variables; K has d = {d}")
    if not callable(f):
        raise ParameterError("f must be a vectorized callable f(z) with z of shape (..., d)")
    if n is not None:
        n = _check_n(n)
    kinks = _check_kinks(kinks)
    if resolution is not None and not (isinstance(resolution, (int, float)) and 0 < resolution <= _TRAP_HMAX):
        raise ParameterError(f"resolution must be a z-spacing in (0, {_TRAP_HMAX}], got {resolution!r}")
    if resolution is not None and kinks:
        raise ParameterError("resolution is the z-spacing of the smooth (trapezoidal) rule, which a kinked f does not "
                             "use (its rules split at the kinks): drop resolution, or pass n= (nodes per segment)",
                             "resolution")
    batch = Kc.shape[:-2]
    Kf = Kc.reshape((-1, d, d))
    if Kf.shape[0] == 0:  # empty batch: one call at z = 0 only to learn the output shape
        m = _eval_f(f, np.zeros((1, 1, d))).shape[2:]
        out = np.zeros(batch + m)
        return (out, out.copy()) if return_error else out
    (val, tail, scale), used, panel = _run(f, Kf, kinks, n, False, method, resolution, batch)
    _diagnose(Kf, val, tail, used, batch)
    if not return_error and used.startswith("smooth") and n is None and resolution is None:
        _check_capped(f, Kf, val, scale, batch, ~panel)
    if not return_error and kinks and n is None and method is None:
        _check_kinked(f, Kf, kinks, val, scale, batch, ~panel)
    val = val.reshape(batch + val.shape[1:])
    if not return_error:
        return val
    (val2, _tail, _scale), _method, _panel = _run(f, Kf, kinks, n, True, method, resolution, batch)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(val - val2.reshape(val.shape))
    err = np.where(np.isfinite(err), err, np.inf)
    return val, err


#: estimated relative error above which a capped default rule warns, by dimension. The estimate (against the rule
#: with 2/3 of the nodes) overstates the error by 10 to 1e4 near these values (2D tanh, K = 250: 1.4e-10 for a true
#: 1.4e-14; K = 1000: 8e-7 for 3e-8; 4D, K = 3: 7e-5 for 1.3e-7, the 4D rule's own accuracy at K ~ 1 being ~3e-7)
_CAPPED_TOL = {1: 1e-8, 2: 1e-8, 3: 1e-7, 4: 1e-5}


def capped_tolerance(d: int) -> float:
    """The estimated relative error above which :func:`expect` warns for a kernel its default d-dimensional rule
    capped; callers that take ``return_error=True`` and report errors themselves use the same threshold."""
    return _CAPPED_TOL[d]


def _relative_change(v, v2, scale, floor=1e-9) -> np.ndarray:
    """(b,) the largest change of each kernel's averages ``v`` (b, ...) to ``v2`` relative to itself, or to ``floor``
    of ``scale`` (b,), ``sum |weight f|``, where that is larger (averages that cancel, e.g. ``<sin sin>``; the rules
    with thousands of nodes take 1e-6: their rounding, ~1e-14 of the scale, is what a cancelling average keeps)."""
    v = v.reshape(v.shape[0], -1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ref = np.maximum(np.abs(v), floor * scale[:, None])
        return np.where(ref > 0, np.abs(v - v2.reshape(v.shape)) / np.where(ref > 0, ref, 1.0), 0.0).max(axis=1)


def _check_kinked(f, K, kinks, val, scale, batch, mine) -> None:
    """Warn (QuadratureWarning) where a kinked rule (polar, nested) at a kernel of ``K`` (B, d, d) whose largest
    variance exceeds ``_LINE_MIN_VAR`` moves by more than ``_CAPPED_TOL[d]`` at 3/2 of its nodes (relative as
    :func:`_relative_change`; against 2/3 of them the estimate overstated an ELU's 2e-11 at K = 100 by 1e3); ``mine``
    (B,): the kernels those rules took. Their nodes sit on the Gaussian's scale, so a kinked f with structure of its
    own at |z| ~ 1 (an ELU's exponential side) is lost at wide kernels (2-D, K ~ 1e4: 1.6e-6); piecewise polynomials
    (ReLU, hard tanh) are exact at any width and pass."""
    d = K.shape[-1]
    top = np.max(np.diagonal(K, axis1=1, axis2=2), axis=1)
    # in 1-D at every kernel (80 nodes): an integrand singular at a kink, which no node reaches, changes with the
    # nodes (1/|z|, divergent, came back as 5.19; 1/sqrt|z| 3 % off)
    idx = np.nonzero(((top > _LINE_MIN_VAR) | (d == 1)) & mine)[0]
    if not idx.size:
        return
    polar = d == 2 and kinks == (0.0,)
    more = round(1.5 * (max(_POLAR_N) if polar else _NESTED_N[d]))
    (val2, _tail, _scale), _method = _engine(f, K[idx], kinks, more, False, None, None)
    rel = _relative_change(val[idx], val2, scale[idx], 1e-6)
    if not np.max(rel) > _CAPPED_TOL[d]:
        return
    b = int(idx[np.argmax(rel)])
    where = np.unravel_index(b, batch) if batch else ()
    why = ("f's structure at |z| ~ 1 lies far inside the Gaussian; scale the kernel down" if top[b] > _LINE_MIN_VAR
           else "f is singular, or not smooth, between the kinks given; declare every point where f is not smooth "
           "in kinks=")
    warnings.warn(QuadratureWarning(
        f"gaussian.expect: the kinked {d}-D rule does not resolve the integrand at the kernel K{_fmt_index(where)} "
        f"(largest variance {float(top[b]):.3g}): its estimated relative error is {float(np.max(rel)):.1e}: "
        + why, float(np.max(rel)), float(top[b]), d), stacklevel=3)


def _check_capped(f, K, val, scale, batch, mine=None) -> None:
    """Warn (QuadratureWarning) where the default smooth rule was at its node cap for a kernel of ``K`` (B, d, d)
    (its spacing then grows like ``sqrt(K)``) and the rule with 2/3 of the cap's nodes differs from it by more than
    ``_CAPPED_TOL[d]``: such a result is not silently passed on as resolved. Each average's change is taken relative
    to itself, or to 1e-9 of ``sum |weight f|`` (``scale``, all components) where it is smaller (averages that
    cancel, e.g. ``<sin sin>``): relative to the sum alone, a small component's error would hide behind a large one.
    Callers that handle the error themselves ask for it (``return_error=True``). ``mine``: (B,) the kernels the
    trapezoid took (the others, the 1-D panel rule's, are checked there)."""
    d = K.shape[-1]
    capped = np.any(_requested_ms(_factor_pivoted(K)) > _TRAP_MCAP[d], axis=1)
    if mine is not None:
        capped &= mine
    if not np.any(capped):
        return
    idx = np.nonzero(capped)[0]
    (val2, _tail, _scale), _method = _engine(f, K[idx], (), None, True, "smooth", None)
    rel = _relative_change(val[idx], val2, scale[idx])
    if not np.max(rel) > _CAPPED_TOL[d]:
        return
    b = int(idx[np.argmax(rel)])
    where = np.unravel_index(b, batch) if batch else ()
    limit, nodes = default_rule_limit(d)
    top = float(np.max(np.diagonal(K[b])))
    warnings.warn(QuadratureWarning(
        f"gaussian.expect: the default {d}-D trapezoidal rule is capped at {nodes} nodes per axis beyond variances "
        f"~{limit:.3g}; for the kernel K{_fmt_index(where)} (largest variance {top:.3g}) its "
        f"estimated relative error is {float(np.max(rel)):.1e}: pass n= (nodes per axis) or resolution= "
        "(a z-spacing, uncapped), or scale the kernel down", float(np.max(rel)), top, d), stacklevel=3)


def expect_products(table, K, sel, *, resolution=0.5, radius=7.0, kinks=(), n=None):
    r"""``<prod_u F_{sel[k, u]}(z_u)>_K`` for every row k of ``sel``: averages of products of one-variable functions,
    the shape of every average of a product of activations and their derivatives over several inputs.

    ``table(z)``: vectorized, ``z`` of any shape ``S`` to ``S + (nf,)`` (the functions ``F_0..F_{nf-1}``, smooth;
    ``resolution=inf``: polynomials, for which the spacing 0.5 in ``w`` is exact whatever K);
    ``K`` ``(B, q, q)`` PSD; ``sel`` ``(nk, q)`` ints in ``[0, nf)``. Returns ``(B, nk)``.

    The trapezoidal rule of :func:`expect` (spacing ``resolution`` in z, the ball of radius ``radius`` in the
    whitened coordinates ``w``, ``z = M w`` with the variance-sorted lower-triangular factor) summed one axis at a
    time from the innermost: coordinate j of the sorted order depends on ``w_0..w_j`` only, so the functions are
    evaluated once per grid point and the products are formed on the outer axes' grid, per distinct tail of
    ``sel`` (cost ~ grid points x nf, not x nk). Accuracy as :func:`expect`'s smooth engine at that spacing: at
    ``resolution = 0.5`` and K ~ 1, ~3e-7 relative for products of tanh of four inputs, 2e-4 for products of their
    fourth derivatives (pass a finer spacing where those matter). Gauss-Hermite axes were measured worse: 4e-3 for
    tanh at 12 nodes, and 0.3 for GELU at K ~ 2, whose tails are nearly kinked in ``w``. More than 2e7 grid points:
    a :class:`ParameterError` (the kernel is too large for the spacing).

    ``kinks`` (as in :func:`expect`, e.g. ``(0.0,)`` for the ReLU family): the iterated Gauss rules of :func:`expect`'s
    nested engine (each coordinate split at its kinks given the outer ones; ``n`` nodes per segment, default as
    there), contracted axis by axis in the same way; exact for piecewise polynomials in one and two dimensions, and
    with :func:`expect`'s accuracy limits for ill-conditioned kernels in three and four; at most four variables
    and 4e6 nodes (ParameterError otherwise). ``resolution`` and ``radius`` are then unused. Neither rule checks
    that the integrand decays (``expect`` does): the functions must grow slower than the Gaussian.
    """
    Kc = check_kernel(K)
    if Kc.ndim != 3:
        raise ParameterError(f"K must be a batch of kernels (B, q, q), got shape {Kc.shape}")
    if not callable(table):
        raise ParameterError("table must be a vectorized callable z -> (..., nf)")
    sel = np.asarray(sel)
    B, q = Kc.shape[0], Kc.shape[-1]
    if sel.ndim != 2 or sel.shape[1] != q or not np.issubdtype(sel.dtype, np.integer) or np.any(sel < 0):
        raise ParameterError(f"sel must be non-negative integers of shape (nk, {q}), got {sel.dtype} {sel.shape}")
    sel = sel.astype(np.int64)
    for name, v in (("resolution", resolution), ("radius", radius)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v) > 0:
            raise ParameterError(f"{name} must be a number > 0, got {v!r}")
    resolution, radius = float(resolution), float(radius)
    if not (3.0 <= radius < np.inf):
        raise ParameterError(f"radius must be finite and at least 3 (the rule's half-width in standard deviations), "
                             f"got {radius!r}")
    c = _check_kinks(kinks)
    if c and q > max(_NESTED_N):
        raise ParameterError(f"kinked product averages take at most {max(_NESTED_N)} variables, got q = {q}")
    nn = None if n is None else _check_n(n)
    if sel.shape[0] == 0 or B == 0:
        return np.zeros((B, sel.shape[0]))
    if c:
        nn = _NESTED_N[q] if nn is None else nn
        # nodes of the innermost level, as _nested_engine counts them: 2 nn on the end segments plus nn per finite
        # segment between the breakpoints of each level
        nodes = 1
        for k in range(q):
            nb = 1 + (len(c) if k > 0 else sum(v != 0 for v in c))
            if q == 2 and k == 0:
                nb += len(c) * (1 + len(_GRADE_AT))
            nodes *= 2 * nn + (nb - 1) * nn
        if nodes > _PRODUCTS_MAX_NODES:
            raise ParameterError(f"the kinked product rule would need ~{nodes:.3g} nodes (limit "
                                 f"{_PRODUCTS_MAX_NODES:.0e}) for q = {q}, {len(c)} kink(s) and n = {nn}: pass a "
                                 "smaller n or fewer kinks")
        L = _chol_psd(Kc)
        out = np.concatenate([_products_nested(table, L[b:b + 1], sel, c, nn) for b in range(B)])
        if not np.all(np.isfinite(out)):
            raise IntegrationError("a product average is not finite: the functions overflow on the rule's nodes (the "
                                   "kernel is too large for them)")
        return out
    M = _factor_pivoted(Kc)
    out = np.empty((B, sel.shape[0]))
    for b in range(B):
        out[b] = _products_one(table, M[b], sel, resolution, radius)
    if not np.all(np.isfinite(out)):
        raise IntegrationError("a product average is not finite: the functions overflow on the rule's grid (the "
                               "kernel is too large for them)")
    return out


#: most grid points of one product average (the outer axes' cube; evaluated in chunks of the outermost axis)
_PRODUCTS_MAX_POINTS = 2e7
#: most nodes of the kinked (nested) product rule: its innermost level is held at once, nodes x functions
_PRODUCTS_MAX_NODES = 4e6


def _products_one(table, M, sel, resolution, radius):
    """:func:`expect_products` for one factor ``M`` (q, q)."""
    q = M.shape[0]
    order = np.argsort([np.max(np.flatnonzero(M[i] != 0), initial=-1) for i in range(q)], kind="stable")
    Ms = M[order]                                   # row j depends on w_0..w_j (lower triangular after sorting)
    colmax = np.max(np.abs(Ms), axis=0)
    spacing = [None if colmax[k] == 0 else min(_TRAP_HMAX, resolution / colmax[k]) for k in range(q)]
    half = [0 if h is None else int(np.ceil(min(radius / h, 1e12))) for h in spacing]
    points = math.prod(2 * m + 1 for m in half)            # counted before anything is allocated
    if points > _PRODUCTS_MAX_POINTS:
        raise ParameterError(f"the product rule would need {points:.3g} grid points (limit "
                             f"{_PRODUCTS_MAX_POINTS:.0e}): the kernel's variances (largest {float(np.max(np.diag(M @ M.T))):.3g}) are too large "
                             f"for the z-spacing {resolution}; scale the inputs or the spacing")
    axes = []
    for h, m in zip(spacing, half):
        if h is None:                                      # a direction the kernel does not have (singular K)
            axes.append((np.zeros(1), np.ones(1)))
            continue
        w = np.arange(-m, m + 1) * h
        wt = np.exp(-0.5 * w * w)
        axes.append((w, wt / wt.sum()))
    tails = sel[:, order]                            # per key, the functions in sorted order
    # innermost axis: every function at every grid point inside the ball |w| <= radius (the cube's corners carry
    # less weight than the ball's edge: pruning them keeps the accuracy and skips ~2/3 of the evaluations at q = 4)
    grids = np.meshgrid(*[a[0] for a in axes], indexing="ij", sparse=True)
    shape = tuple(len(a[0]) for a in axes)
    step = max(1, _CHUNK_POINTS * 4 // max(1, math.prod(shape[1:])))     # blocks of the outermost axis
    T = None
    for lo in range(0, shape[0], step):
        blk = [g[lo:lo + step] for g in grids[:1]] + list(grids[1:])
        inside = np.broadcast_to(sum(g * g for g in blk) <= radius * radius * (1 + 1e-12),
                                 (min(step, shape[0] - lo),) + shape[1:])
        zq = sum(Ms[q - 1, k] * np.broadcast_to(blk[k], inside.shape)[inside] for k in range(q))
        vals = _eval_table(table, zq, sel)
        if T is None:
            T = np.zeros(shape[:-1] + vals.shape[-1:])                 # (n_0..n_{q-2}, nf)
        # the innermost sum over the ball's points: in C order those of one outer node are contiguous, so it is a
        # segment sum of the weighted values (no dense cube to fill: that scatter was a quarter of the time)
        rows = inside.reshape(-1, shape[-1])
        counts = rows.sum(axis=1)
        vals = vals * axes[q - 1][1][np.nonzero(rows)[1]][:, None]
        full = counts > 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[full]
        part = np.zeros((rows.shape[0],) + vals.shape[-1:])
        if starts.size:
            part[full] = np.add.reduceat(vals, starts, axis=0)
        T[lo:lo + step] = part.reshape(inside.shape[:-1] + vals.shape[-1:])
    cols = np.arange(T.shape[-1])[:, None]                            # level q-1: tail = (f,)
    tail_keys = {(int(f),): i for i, f in enumerate(cols[:, 0])}
    for j in range(q - 2, -1, -1):
        prefix = [g[(Ellipsis,) + (0,) * (q - 1 - j)] for g in grids[:j + 1]]
        zj = np.broadcast_to(sum(Ms[j, k] * prefix[k] for k in range(j + 1)), shape[:j + 1])
        Fj = table(zj)                                                 # (n_0..n_j, nf)
        new = {}
        for row in tails[:, j:]:
            new.setdefault(tuple(int(v) for v in row), len(new))
        a = np.array([t[0] for t in new])
        nxt = np.array([tail_keys[t[1:]] for t in new])
        T = np.einsum("...ws,w->...s", Fj[..., a] * T[..., nxt], axes[j][1])
        tail_keys = new
    return T[[tail_keys[tuple(int(v) for v in row)] for row in tails]]


def _products_nested(table, L, sel, kinks, n):
    """:func:`expect_products` with kinks for one Cholesky factor ``L`` (1, q, q): the nodes of
    :func:`_nested_level` level by level (``z_k`` is fixed once ``w_0..w_k`` are), then the contraction of
    :func:`_products_one` from the innermost level, each node of a level holding its own children."""
    q = L.shape[-1]
    t, wt = _half_gauss_hermite(n)
    x, wx = _gauss_legendre(n)
    S = np.zeros((1, 1, q))
    levels = []
    for k in range(q):
        nodes, wts = _nested_level(L, S, k, np.asarray(kinks, dtype=np.float64), t, wt, x, wx)  # (1, P, Q)
        levels.append((S[:, :, k, None] + nodes * L[:, k, k][:, None, None], wts))
        S = (S[:, :, None, :] + nodes[..., None] * L[:, None, None, :, k]).reshape(1, -1, q)
    z, w = levels[-1]
    T = np.einsum("bpqf,bpq->bpf", _eval_table(table, z, sel), w)
    tail_keys = {(f,): f for f in range(T.shape[-1])}
    for j in range(q - 2, -1, -1):
        z, w = levels[j]
        Fj = _eval_table(table, z, sel)                                # (1, P, Q, nf)
        Tj = T.reshape(z.shape + T.shape[-1:])
        new = {}
        for row in sel[:, j:]:
            new.setdefault(tuple(int(v) for v in row), len(new))
        a = np.array([key[0] for key in new])
        nxt = np.array([tail_keys[key[1:]] for key in new])
        T = np.einsum("bpqs,bpq->bps", Fj[..., a] * Tj[..., nxt], w)
        tail_keys = new
    return T[:, 0, [tail_keys[tuple(int(v) for v in row)] for row in sel]]


def _eval_table(table, z, sel):
    raw = table(z)
    if np.iscomplexobj(raw):
        raise ParameterError("table returned complex values; the product averages are real")
    try:
        vals = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"table must return real numbers, got {type(raw).__name__} ({err})") from None
    if vals.shape[:-1] != z.shape or vals.ndim != z.ndim + 1 or sel.max() >= vals.shape[-1]:
        raise ParameterError(f"table must map z of shape {z.shape} to {z.shape} + (nf,) with nf > max(sel) = "
                             f"{int(sel.max())}; it returned shape {vals.shape}")
    return vals


def _diagnose(K, val, tail, method, batch):
    """Raise IntegrationError for non-finite results or integrands not captured by the rule."""

    def where(b):  # "K[i, j] = [[...]]" with the index in the caller's batch shape
        idx = np.unravel_index(b, batch) if batch else ()
        return f"K{_fmt_index(idx)} = {K[b].tolist()}"

    fin = np.isfinite(val)
    if fin.ndim > 1:
        fin = fin.all(axis=tuple(range(1, fin.ndim)))
    if not fin.all():
        b = int(np.argmin(fin))
        raise IntegrationError(
            f"the expectation overflowed (is not finite) for {where(b)} ({method} rule): the integrand "
            "overflowed or returned NaN/inf; the activation grows too fast for this kernel (or f is not "
            "defined everywhere)"
        )
    if np.any(tail > _TAIL_MAX):
        b = int(np.argmax(tail))
        raise IntegrationError(
            f"the expectation is not resolved for {where(b)} ({method} rule): a fraction "
            f"{tail[b]:.3g} of sum |weight * f| comes from |w| > {_TAIL_R:g} standard deviations, so the "
            "Gaussian integral diverges or its mass lies outside the rule; the activation grows too fast "
            "for this kernel"
        )


# ---------------------------------------------------------------------------
# mpmath reference
# ---------------------------------------------------------------------------


def expect_mp(f, K, *, kinks=(), dps=30):
    r"""Independent high-precision reference for ``<f(z)>_K`` (d = 1, 2) with ``mpmath.quad``.

    ``f`` takes ``d`` mpmath numbers (``f(z1)`` or ``f(z1, z2)``) and returns an
    mpf.  ``K`` is ``(d, d)`` (entries converted exactly from float64, or mpf).
    Integrates ``phi(w) f(L w)`` with ``L`` the Cholesky factor computed in
    mpmath, splitting every interval at 0 and at every kink: d = 1 at
    ``w = c / sqrt(K11)``; d = 2 iterated, inner ``w_2`` split at
    ``(c - L21 w1) / L22``, outer ``w_1`` split at ``c / L11`` and at
    ``c / L21`` (where the inner kink crosses ``w_2 = 0``).  Singular ``K``
    (``|rho| = 1``, or a zero variance) reduces to a 1D integral.
    Near ``|rho| = 1`` (``L22 < |L21|/10``) the outer line is also split around those crossings, at
    ``+-(1, 3, 9, 27) L22 / |L21|`` (the inner integral's step across the kink).
    Runs at ``workdps(dps + 10)``; accurate to ~``dps`` digits (measured: kinked
    products to ``1 - rho = 1e-10``).  Raises ``NotImplementedError`` for d > 2.
    """
    Kin = np.array(K, dtype=object)  # keeps mpf entries exact
    try:
        Kc = check_kernel(Kin.astype(np.float64))
    except (TypeError, ValueError) as exc:
        raise ParameterError(str(exc)) from None
    if Kc.ndim != 2:
        raise ParameterError(f"expect_mp takes a single (d, d) kernel; got shape {Kc.shape}")
    d = Kc.shape[0]
    if d > 2:
        raise NotImplementedError("expect_mp is implemented for d = 1 and d = 2 only")
    kinks = _check_kinks(kinks)
    with mpmath.workdps(dps + 10):
        mp = mpmath.mp
        Km = [[mpmath.mpf(Kin[i, j]) for j in range(d)] for i in range(d)]
        if d == 2:  # symmetrize like check_kernel
            Km[0][1] = Km[1][0] = (Km[0][1] + Km[1][0]) / 2
        cnorm = 1 / mpmath.sqrt(2 * mp.pi)
        ks = [mpmath.mpf(c) for c in kinks]
        # Panels of width 4 out to about where phi(w) ~ 10^-(dps + 10): Gauss-Legendre
        # (mp.quad's adaptive degree doubling) on the finite panels, tanh-sinh on
        # the two tails.  Measured ~2x fewer evaluations than tanh-sinh on
        # (-inf, 0, inf) for integrands like tanh(z1) tanh(z2).
        T = 4 * max(1, round(math.sqrt(2 * (dps + 10) * math.log(10)) / 4))
        grid = [mpmath.mpf(k) for k in range(-T, T + 1, 4)]

        def line(g, pts):
            """int g(w) phi(w) dw over the real line, split at ``pts``; in units of g's size near the Gaussian's
            bulk, since mpmath.quad's tolerance is absolute (x^2 at K = 1e-100 came out 1.4e-4 off)."""
            pts = set(pts)
            inside = sorted(p for p in pts.union(grid) if -T <= p <= T)
            left = sorted(p for p in pts if p < -T)
            right = sorted(p for p in pts if p > T)
            unit = max(abs(g(mpmath.mpf(w))) for w in ("-1.5", "-0.5", "0.5", "1.5"))
            unit = unit if mpmath.isfinite(unit) and unit > 0 else mpmath.mpf(1)

            def h(w):
                return g(w) * mpmath.exp(-w * w / 2) / unit

            bulk = mpmath.quad(h, inside, method="gauss-legendre")
            total = bulk + mpmath.quad(h, [mpmath.ninf] + left + [inside[0]])
            total += mpmath.quad(h, [inside[-1]] + right + [mpmath.inf])
            # an integrand that outgrows the Gaussian (exp(z^2)) carries weight at the bulk's edge and at every
            # distance beyond: its tails came back as a number of 10^(6e21). Weight at the edge alone is no sign of
            # it: a line far out in an outer tail sees a bounded f rise like e^(b w) toward and past the edge (ELU's
            # sigma' pair, K = 100: e^z2 at z2 = -78 +- 10 in the bulk, 1 at the edge; at K = 1e4 its peak lies at
            # w ~ 66), which the Gaussian overtakes by w ~ 2b, within 2^10 T
            thr = mpmath.mpf("1e-10") * max(abs(bulk), mpmath.mpf(1))
            grows = any(all(abs(h(mpmath.mpf(side * T * 2**k))) > thr for k in range(11)) for side in (-1, 1))
            if mpmath.isfinite(bulk) and grows:
                raise IntegrationError(f"expect_mp: the integrand outgrows the Gaussian (at |w| = {T} standard "
                                       "deviations it still carries weight): the average diverges or is not "
                                       "captured by the rule")
            return cnorm * total * unit

        # a kernel much wider than sigma's structure squeezes it into |w| < 1/sqrt(K): split there too (tanh^2 at
        # K = 1e10 came out exactly 1, its dip at |w| ~ 1e-5 unseen by the panels of width 4)
        feature = [mpmath.mpf(v) for v in ("0.5", "2", "8", "32")]
        feature += [-v for v in feature]

        if d == 1:
            s = mpmath.sqrt(max(Km[0][0], 0))
            if s == 0:
                return +f(mpmath.mpf(0))
            return _checked_mp(line(lambda w: f(s * w), [mpmath.mpf(0)] + [c / s for c in ks]
                                    + ([v / s for v in feature] if s > 1 else [])))
        k11, k12, k22 = Km[0][0], Km[0][1], Km[1][1]
        tiny = mpmath.mpf(10) ** (-(dps + 5))
        if k11 <= 0:
            s = mpmath.sqrt(max(k22, 0))
            if s == 0:
                return +f(mpmath.mpf(0), mpmath.mpf(0))
            return +line(lambda w: f(mpmath.mpf(0), s * w), [mpmath.mpf(0)] + [c / s for c in ks])
        l11 = mpmath.sqrt(k11)
        l21 = k12 / l11
        schur = k22 - l21 * l21
        if schur <= tiny * max(k22, tiny):  # |rho| = 1: z2 = (l21 / l11) z1
            pts = [mpmath.mpf(0)] + [c / l11 for c in ks] + ([c / l21 for c in ks] if l21 != 0 else [])
            return +line(lambda w: f(l11 * w, l21 * w), pts)
        l22 = mpmath.sqrt(schur)

        def inner(w1):
            z1 = l11 * w1
            a = l21 * w1
            pts = [mpmath.mpf(0)] + [(c - a) / l22 for c in ks] + ([(v - a) / l22 for v in feature] if l22 > 1 else [])
            return line(lambda w2: f(z1, a + l22 * w2), pts)

        outer = [mpmath.mpf(0)] + [c / l11 for c in ks] + ([c / l21 for c in ks] if l21 != 0 else [])
        outer += [v / l11 for v in feature] if l11 > 1 else []
        if l21 != 0 and l22 < abs(l21) / 10:
            # near |rho| = 1 the inner integral steps across a kink of z2 within l22/|l21| of w1 = c/l21: graded
            # splits there (a step product at rho = 1 - 1e-10 came out 2e-32 against 2.3e-6)
            width = l22 / abs(l21)
            outer += [c / l21 + g * width for c in ks for g in (-27, -9, -3, -1, 1, 3, 9, 27)]
        return _checked_mp(line(inner, outer))


def _checked_mp(value):
    """An :func:`expect_mp` result: a finite real mpf, else :class:`IntegrationError` (a NaN, infinite or complex
    integrand, or a divergent integral, came back as it was)."""
    if not (isinstance(value, mpmath.mpf) and mpmath.isfinite(value)):
        raise IntegrationError(f"expect_mp: the average is not a finite real number ({value}): the integrand is "
                               "NaN, infinite or complex somewhere, or grows too fast for the Gaussian")
    return +value


# ---------------------------------------------------------------------------
# one-dimensional moment tables of an activation
# ---------------------------------------------------------------------------


def _check_terms(terms) -> tuple[tuple[int, int, int], ...]:
    try:
        out = tuple((int(a), int(b), int(j)) for a, b, j in terms)
    except (TypeError, ValueError):
        raise ParameterError(f"moment terms must be (a, b, j) triples of integers, got {terms!r}") from None
    if not out or any(min(t) < 0 or t != tuple(u) for t, u in zip(out, terms)):
        raise ParameterError(f"moment terms must be non-empty (a, b, j) triples of integers >= 0, got {terms!r}")
    return out


def trapezoid_nodes(K, h_w: float, h_z: float) -> int:
    """Nodes per axis for :func:`expect`'s trapezoid on smooth integrands of kernels ``K`` ``(..., d, d)``: spacing
    ``min(h_w, h_z / sqrt(max K_aa))`` in whitened units over ``|w| <= 9`` (at most 2001 nodes). The default rule
    leaves ~1e-8 relative on products of derivatives such as ``<s''^2 s'^2>``; ``h_w = 0.09, h_z = 0.06`` ~1e-13."""
    big = float(np.max(np.diagonal(np.asarray(K), axis1=-2, axis2=-1), initial=0.0))
    h = min(h_w, h_z / math.sqrt(big)) if big > 0 else h_w
    return 2 * int(min(math.ceil(9.0 / h), 1000)) + 1


def default_rule_limit(d: int) -> tuple[float, int]:
    """``(K_max, nodes)``: the largest variance that :func:`expect`'s default smooth rule in d dimensions resolves at
    its nominal z-spacing, and its node count per axis there (the cap; beyond ``K_max`` the spacing grows like
    ``sqrt(K)``). Beyond it a caller can measure a result against :func:`expect` with another ``n``."""
    if d not in _TRAP_MCAP:
        raise ParameterError(f"d must be 1..4, got {d!r}")
    return (_TRAP_MCAP[d] * _TRAP_HZ[d] / _TRAP_R) ** 2, 2 * _TRAP_MCAP[d] + 1


def moments_1d(act, K, terms, n=None, *, return_error=False):
    r"""The table ``<sigma(z)^a sigma'(z)^b z^j>_K``, ``z ~ N(0, K)``, for every term ``(a, b, j)`` of ``terms``
    and every variance in ``K`` (any shape, entries > 0 and finite), in one batched :func:`expect` call.

    ``act`` is a :class:`pdlt.Activation` (or anything with ``act(z)``, ``act.d1(z)`` and ``act.kinks``); the
    quadrature is split at its kinks. Returns shape ``K.shape + (len(terms),)``. These are the single-input
    Gaussian averages of the kernel, susceptibility, finite-width and delta-expansion recursions;
    :func:`moments_1d_mp` is the same table in mpmath. ``n``: :func:`expect`'s node count (None: its default rule).
    ``return_error``: also :func:`expect`'s error estimate, the same shape (the caller judges it; no warning).
    """
    terms = _check_terms(terms)
    K = np.asarray(K, dtype=np.float64)
    need_d1 = any(b for _, b, _ in terms)

    def f(z):
        z = z[..., 0]
        s = act(z)
        s1 = act.d1(z) if need_d1 else None
        cols = []
        for a, b, j in terms:
            v = None
            for base, p in ((s, a), (s1, b)):
                if p:
                    t = base**p
                    v = t if v is None else v * t
            if j:
                # a bounded sigma's factor is exactly 0 far out, where z^j of a huge kernel may overflow: 0, not NaN
                with np.errstate(over="ignore", invalid="ignore"):
                    v = z**j if v is None else np.where(v == 0.0, 0.0, v * z**j)
            cols.append(np.ones_like(z) if v is None else v)
        return np.stack(cols, axis=-1)

    shape = K.shape + (len(terms),)
    if return_error:
        val, err = expect(f, K[..., None, None], kinks=act.kinks, n=n, return_error=True)
        return np.asarray(val).reshape(shape), np.asarray(err).reshape(shape)
    return np.asarray(expect(f, K[..., None, None], kinks=act.kinks, n=n)).reshape(shape)


def moments_1d_mp(act, K, terms, dps: int = 25) -> list:
    r"""High-precision ``<sigma^a sigma'^b z^j>_K`` (mpf, one per term ``(a, b, j)``) at one variance ``K > 0``
    by adaptive ``mpmath.quad`` on the mpmath forms ``act.mp = (sigma, sigma')``, at ``dps`` digits.

    The line ``z = sqrt(K) w`` is split at 0, at the kinks and, when ``sqrt(K) > 1`` squeezes sigma's structure
    into ``|w| < 1/sqrt(K)``, at ``+-(0.5, 2, 8)/sqrt(K)``. Independent of :func:`moments_1d` (different rule,
    different arithmetic), which it checks.
    """
    terms = _check_terms(terms)
    f0, f1 = act.mp
    with mpmath.workdps(dps):
        K = mpmath.mpf(K)
        if not K > 0:
            raise ParameterError(f"moments_1d_mp needs a variance K > 0, got {K}")
        s = mpmath.sqrt(K)
        scale = 1 / max(s, mpmath.mpf(1))
        cuts = {mpmath.mpf(0)} | {mpmath.mpf(k) / s for k in act.kinks}
        cuts |= {x * scale for x in (-8, -2, -0.5, 0.5, 2, 8)}
        pts = [-mpmath.inf, *sorted(cuts), mpmath.inf]

        def integrand(a, b, j):
            def F(z):
                v = mpmath.mpf(1)
                if a:
                    v = f0(z) ** a
                if b:
                    v = v * f1(z) ** b
                if j:
                    v = v * z**j
                return v

            return F

        return [mpmath.quad(lambda w, F=integrand(*t): mpmath.npdf(w) * F(s * w), pts) for t in terms]


# ---------------------------------------------------------------------------
# benchmark
# ---------------------------------------------------------------------------


def _random_kernels(n_kernels, var_range, rho_max, rng):
    lo, hi = var_range
    v = np.exp(rng.uniform(np.log(lo), np.log(hi), size=(n_kernels, 2)))
    rho = rng.uniform(-rho_max, rho_max, size=n_kernels)
    K = np.empty((n_kernels, 2, 2))
    K[:, 0, 0], K[:, 1, 1] = v[:, 0], v[:, 1]
    K[:, 0, 1] = K[:, 1, 0] = rho * np.sqrt(v[:, 0] * v[:, 1])
    return K


def bench_expect(n_kernels=10000, *, var_range=(0.05, 5.0), rho_max=0.95, seed=0):
    """Throughput of :func:`expect` (default, 1e-10 accuracy setting) in expectations / second.

    Random 2x2 kernels: variances log-uniform in ``var_range``, correlation
    uniform in ``[-rho_max, rho_max]``.  Integrands ``tanh(z1) tanh(z2)``
    (smooth rule) and ``relu(z1) relu(z2)`` (polar rule).  Run single-threaded
    (e.g. ``taskset -c 0``) for a one-core figure.  One untimed call first
    builds the cached rules and grids.  Returns ``{"tanh_2d": rate, "relu_2d": rate}``.
    """
    rng = np.random.default_rng(seed)
    K = _random_kernels(n_kernels, var_range, rho_max, rng)

    def tanh2(z):
        t = np.tanh(z)
        return t[..., 0] * t[..., 1]

    def relu2(z):
        r = np.maximum(z, 0.0)
        return r[..., 0] * r[..., 1]

    rates = {}
    for name, f, kinks in (("tanh_2d", tanh2, ()), ("relu_2d", relu2, (0.0,))):
        expect(f, K, kinks=kinks)  # warm the rule / grid caches (built once per process)
        t0 = time.perf_counter()
        expect(f, K, kinks=kinks)
        rates[name] = n_kernels / (time.perf_counter() - t0)
    return rates

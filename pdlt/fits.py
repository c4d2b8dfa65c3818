"""Statistics for theory-vs-Monte-Carlo comparisons: 1/n fits of width sweeps and calibration tests.

Pure numpy/mpmath; no theory and no sampling here (``pdlt.verify`` joins them).

* :func:`inverse_width_fit`: weighted least squares of ``y(n) = a + b/n + c/n^2 (+ ...)`` over widths n with
  standard errors ``se`` (weights ``1/se^2``); the coefficient covariance is ``(X^T W X)^{-1}`` (the errors
  are taken as honest, not rescaled by chi^2, so a bad fit shows up in ``chi2``/``p_value`` instead of being
  absorbed). For a statistic ``E[z z] = K + G1/n + O(1/n^2)`` the fit gives a = K (infinite width) and b = G1
  (PDLT's 1/n coefficient); for ``n * connected four-point = V + O(1/n)`` likewise.
* :func:`ks_normal`: one-sample Kolmogorov-Smirnov test of z-scores against N(0, 1) (exact asymptotic
  Kolmogorov distribution with Stephens' finite-n correction), for calibrating error bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np

from .errors import ParameterError
from .validation import check_int, check_real_array

__all__ = ["InverseWidthFit", "inverse_width_fit", "chi2_sf", "ks_normal", "normal_cdf"]


@dataclass(frozen=True)
class InverseWidthFit:
    """Result of :func:`inverse_width_fit`.

    ``coef`` ``(order + 1,)``: a, b, c, ... (coefficients of n^0, n^-1, n^-2, ...); ``cov`` their covariance;
    ``stderr = sqrt(diag(cov))``; ``chi2`` with ``dof = len(widths) - order - 1`` degrees of freedom and its
    upper-tail ``p_value`` (``nan`` when dof = 0).
    """

    widths: np.ndarray
    values: np.ndarray
    se: np.ndarray
    coef: np.ndarray
    cov: np.ndarray
    chi2: float
    dof: int

    @property
    def stderr(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov))

    @property
    def p_value(self) -> float:
        return chi2_sf(self.chi2, self.dof) if self.dof > 0 else float("nan")

    def z(self, k: int, expected: float) -> float:
        """``(coef[k] - expected) / stderr[k]``: e.g. ``z(0, K)`` tests the infinite-width value, ``z(1, G1)`` the
        1/n coefficient."""
        k = check_int(k, "k", minimum=0, maximum=self.coef.size - 1)
        return float((self.coef[k] - expected) / self.stderr[k])

    def __call__(self, n) -> np.ndarray:
        """The fitted curve at widths n."""
        n = np.asarray(n, dtype=np.float64)
        return sum(c * n ** (-k) for k, c in enumerate(self.coef))


def inverse_width_fit(widths, values, se, order: int = 2) -> InverseWidthFit:
    """Weighted least-squares fit of ``values(n) = sum_{k<=order} coef_k n^-k``.

    ``widths``, ``values``, ``se``: 1-D of equal length with ``len > order``; ``se > 0``.

    >>> fit = inverse_width_fit([8, 16, 32, 64], [1 + 2/8 + 3/64, 1 + 2/16 + 3/256, 1 + 2/32 + 3/1024,
    ...                          1 + 2/64 + 3/4096], [1e-6] * 4)
    >>> np.round(fit.coef, 6)
    array([1., 2., 3.])
    """
    order = check_int(order, "order", minimum=0)
    n, y, s = (check_real_array(v, name) for v, name in ((widths, "widths"), (values, "values"), (se, "se")))
    if not (n.ndim == y.ndim == s.ndim == 1 and n.size == y.size == s.size):
        raise ParameterError(f"widths, values and se must be 1-D of equal length, got shapes {n.shape}, {y.shape}, {s.shape}")
    if n.size <= order:
        raise ParameterError(f"a fit of order {order} needs more than {order} widths, got {n.size}")
    if np.any(n <= 0) or not np.all(np.isfinite(y)):
        raise ParameterError("widths must be positive and values finite")
    if np.unique(n).size <= order:
        raise ParameterError(f"a fit of order {order} needs more than {order} distinct widths, got {np.unique(n)}",
                             "widths")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ParameterError(f"standard errors must be finite and > 0, got {s}")
    # the design in (n_min/n)^k, columns of size O(1), scaled back after the fit: its conditioning then measures how
    # well the widths tell the powers apart, not how small n^-k is
    nmin = float(n.min())
    with np.errstate(over="ignore"):
        back = nmin ** np.arange(order + 1.0)
    if not np.all(np.isfinite(back)):
        raise ParameterError(f"the widths {n} are too large for a fit of order {order} (n^{order} overflows)", "widths")
    X = (nmin / n)[:, None] ** np.arange(order + 1.0)[None, :]
    # judged on the design alone (the weights 1/se may span decades without making it singular)
    diag = np.abs(np.diag(np.linalg.qr(X, mode="r")))
    if diag.min() <= 1e-12 * diag.max():
        raise ParameterError(f"the widths {n} do not determine a fit of order {order} (its design in 1/n is singular "
                             "to rounding: widths too close together for so many powers): use widths further apart, "
                             "or a lower order", "widths")
    # in units of the largest standard error (a power of two: exact), so that values of any size keep the whitened
    # system O(1): at errors of 1e198 its inverse R factor was 1e198 and R^-1 R^-T overflowed
    u = 2.0 ** int(np.frexp(np.max(s))[1])
    Xw, yw = X / (s / u)[:, None], (y / u) / (s / u)
    # least squares on the whitened system via QR: better conditioned than the normal equations
    Q, R = np.linalg.qr(Xw)
    coef = np.linalg.solve(R, Q.T @ yw) * u * back
    Rinv = np.linalg.inv(R)
    unit_cov = Rinv @ Rinv.T
    with np.errstate(over="ignore", under="ignore"):
        cov = unit_cov * u * u * np.outer(back, back)
    if not np.all(np.isfinite(cov)) or np.any((cov == 0) & (unit_cov != 0)):
        raise ParameterError(f"the fit's covariance leaves float64's range (standard errors of {np.max(s):.3g}, "
                             "squared): fit a normalized observable instead (e.g. normalized_vertex), or values of a "
                             "smaller scale", "values")
    resid = yw - Xw @ (coef / (u * back))
    return InverseWidthFit(widths=n, values=y, se=s, coef=coef, cov=cov, chi2=float(resid @ resid),
                           dof=int(n.size - order - 1))


def chi2_sf(x: float, dof: int) -> float:
    """Upper tail ``P(chi^2_dof > x)`` (regularized upper incomplete gamma, mpmath)."""
    if dof <= 0:
        raise ParameterError(f"dof must be >= 1, got {dof}")
    return float(mpmath.gammainc(dof / 2.0, max(x, 0.0) / 2.0, mpmath.inf, regularized=True))


def normal_cdf(x) -> np.ndarray:
    """Standard normal CDF, elementwise (float64, via math.erfc: no cancellation in the lower tail)."""
    x = np.asarray(x, dtype=np.float64)
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), otypes=[np.float64])(x)


def ks_normal(z) -> tuple[float, float]:
    """One-sample Kolmogorov-Smirnov test of ``z`` against N(0, 1): ``(D, p_value)``.

    ``D = sup |F_n - Phi|``; the p-value uses the Kolmogorov distribution at ``D (sqrt(n) + 0.12 + 0.11/sqrt(n))``
    (Stephens 1970; accurate to a few % for n >= 5), ``P(K > t) = 2 sum_k (-1)^(k-1) exp(-2 k^2 t^2)``.
    """
    z = np.sort(np.asarray(z, dtype=np.float64).ravel())
    n = z.size
    if n < 5 or not np.all(np.isfinite(z)):
        raise ParameterError(f"the KS test needs >= 5 finite values, got {n}")
    F = normal_cdf(z)
    i = np.arange(1, n + 1)
    D = float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))
    t = D * (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n))
    if t < 0.2:
        return D, 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * t * t) for k in range(1, 101))
    return D, float(min(max(p, 0.0), 1.0))

"""pdlt.fits: 1/n fits and the KS calibration test, against closed forms and simulated data."""

import math

import numpy as np
import pytest

import pdlt
from pdlt.fits import chi2_sf, inverse_width_fit, ks_normal, normal_cdf


def test_fit_recovers_exact_polynomial_and_covariance_matches_simulation():
    n = np.array([8.0, 12, 16, 24, 32, 64])
    truth = np.array([1.3, -0.7, 2.5])
    y0 = truth[0] + truth[1] / n + truth[2] / n**2
    se = 0.01 * (1 + 8 / n)
    exact = inverse_width_fit(n, y0, se)
    np.testing.assert_allclose(exact.coef, truth, rtol=1e-10)
    assert exact.chi2 < 1e-18 and exact.dof == 3
    # the reported covariance is the sampling covariance of the coefficients (2000 simulated sweeps)
    rng = np.random.default_rng(0)
    coefs = np.array([inverse_width_fit(n, y0 + se * rng.standard_normal(n.size), se).coef for _ in range(2000)])
    emp = np.cov(coefs.T)
    np.testing.assert_allclose(np.sqrt(np.diag(emp)), exact.stderr, rtol=0.1)  # 2000 draws: ~1.6% stat. error
    zs = (coefs[:, 1] - truth[1]) / exact.stderr[1]
    assert abs(zs.mean()) < 5 / math.sqrt(2000) and abs(zs.std() - 1) < 0.1
    assert exact(16.0) == pytest.approx(y0[2])
    assert exact.z(0, 1.3) == pytest.approx(0.0, abs=1e-6)


def test_chi2_sf_closed_forms():
    # dof = 2: exp(-x/2); dof = 1: erfc(sqrt(x/2))
    for x in (0.1, 1.0, 5.0, 20.0):
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-12)


def test_ks_normal_accepts_normal_and_rejects_shifted():
    rng = np.random.default_rng(1)
    assert normal_cdf(0.0) == 0.5 and normal_cdf(-40.0) == 0.0
    ps = [ks_normal(rng.standard_normal(200))[1] for _ in range(200)]
    # p-values of a true null are ~uniform: the fraction below 0.05 is 0.05 (binomial se 0.015)
    assert abs(np.mean(np.array(ps) < 0.05) - 0.05) < 0.05
    assert ks_normal(rng.standard_normal(500) + 0.3)[1] < 1e-4
    assert ks_normal(1.5 * rng.standard_normal(500))[1] < 1e-4


def test_bad_input():
    with pytest.raises(ValueError, match="more than 2 widths"):
        inverse_width_fit([8, 16], [1, 2], [0.1, 0.1])
    with pytest.raises(ValueError, match="standard errors"):
        inverse_width_fit([8, 16, 32], [1, 2, 3], [0.1, 0.0, 0.1])
    with pytest.raises(ValueError, match="equal length"):
        inverse_width_fit([8, 16, 32], [1, 2], [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match=">= 5"):
        ks_normal([0.1, np.nan, 0.3, 0.2, 0.0])


def test_fit_of_values_of_any_scale():
    """The fit runs in units of the largest error (a power of two): scaled values give scaled coefficients and
    covariance (at errors of 1e98 the covariance overflowed to inf before); where the covariance itself leaves
    float64's range, in either direction, a ParameterError, not inf or 0."""
    w = [8, 16, 32, 64]
    v = np.array([1 + 2 / n + 3 / n**2 for n in w])
    se = np.full(4, 1e-3)
    ref = inverse_width_fit(w, v, se)
    for scale in (2.0**-400, 2.0**330):
        fit = inverse_width_fit(w, v * scale, se * scale)
        np.testing.assert_allclose(fit.coef / scale, ref.coef, rtol=1e-12)
        np.testing.assert_allclose(fit.cov / scale**2, ref.cov, rtol=1e-12)
        assert fit.chi2 == pytest.approx(ref.chi2, abs=1e-20)
    for scale in (1e-200, 1e200):
        with pytest.raises(pdlt.ParameterError):
            inverse_width_fit(w, v * scale, se * scale)

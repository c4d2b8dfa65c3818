"""The O(1/n^2) posterior mean of nonlinear networks (pdlt.posterior(..., order=2)) against the exact posterior of
sampled networks (pdlt.posterior_mc: reweighting of the last layer's metric, jackknife errors), end to end: the
several-input statistics G2, V1, U of pdlt.nnlo feed the expansion of pdlt.theory.posterior_nnlo, and both meet a
Monte Carlo that shares neither. The order-1 posterior is the negative control: rejected where the 1/n^2 term is
resolved.

The next order (1/n^3) is not computed, and where the 1/n^2 term is resolved it often is too (at n = 16 by 4 to 15
standard errors of the 1/n^2 prediction in the cases here): so the tests fit it, as c3/n^3 in a width sweep of
n^2 (MC - m0 - m1/n), instead of allowing for it, and test the fitted c2.
"""

import warnings

import numpy as np
import pytest

import pdlt
from pdlt.errors import TruncationWarning

XA = np.array([[1.0, 0.0, 0.0], [0.2, 0.9, 0.1]])
YA = np.array([0.6, -0.4])
XB = np.array([[0.6, 0.5, 0.3]])
S2 = 0.2


def _case(act: str, n: int, n_samples: int, seed: int = 7):
    """``(mc mean, its standard error, m0, m1, m2)`` at the test input for the four-layer critical network of width n.
    From n = 32 on the theory must not warn (inside the expansion's range); at n = 16 its truncation warning (V/(n
    K^2) = 0.63 for ReLU, 0.67 for GELU) is expected."""
    crit = pdlt.criticality(act)
    net = pdlt.MLP(act, (3, n, n, n, 1), C_W=crit.C_W, C_b=crit.C_b)
    mc = pdlt.posterior_mc(net, XA, YA, XB, S2, n_samples=n_samples, seed=seed, batches=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if n >= 32 else "ignore", TruncationWarning)
        p = pdlt.posterior(net, XA, YA, XB, noise_var=S2, order=2)
    return (float(mc.mean.mean[0, 0]), float(mc.mean.stderr[0, 0]), float(p.mean_infinite[0, 0]),
            float(p.mean_correction[0, 0]), float(p.mean_correction2[0, 0]))


@pytest.mark.slow            # suite time: 29 s alone (three widths, each a compilation of its own)
def test_relu_posterior_one_over_n_squared_coefficient_from_a_width_sweep():
    """ReLU (bias-free: its averages over several inputs are exact orthant moments), two hidden layers, one training
    and one test input (noise_var = 0.2), n = 16, 32, 64 with 4e5 networks each: ``n^2 (MC - m0 - m1/n)`` fitted as
    c2 + c3/n gives c2 = -1.23 +- 0.18 against the computed -1.31 (c3 ~ 7.5: the next order, 3 standard errors at
    n = 32, fitted rather than allowed for). Negative controls: c2 = 0 is rejected, and at n = 16 and 32 the
    order-1 mean is off by 21 and 10 standard errors."""
    crit, xa, y, xb = pdlt.criticality("relu"), [[1.0, 0.0, 0.0]], [0.4], [[0.6, 0.5, 0.3]]
    widths, vals, errs, theory = (16, 32, 64), [], [], None
    for n in widths:
        net = pdlt.MLP("relu", (3, n, n, 1), C_W=crit.C_W, C_b=crit.C_b)
        mc = pdlt.posterior_mc(net, xa, y, xb, S2, n_samples=400_000, seed=7, batches=64)
        with warnings.catch_warnings():
            warnings.simplefilter("error" if n >= 32 else "ignore", TruncationWarning)
            p = pdlt.posterior(net, xa, y, xb, noise_var=S2, order=2)
        mean, se = float(mc.mean.mean[0, 0]), float(mc.mean.stderr[0, 0])
        first = mean - p.mean_infinite[0, 0] - p.mean_correction[0, 0] / n
        if n <= 32:
            assert abs(first) > 5 * se                                 # order 1 alone is rejected
        vals.append(first * n * n)
        errs.append(se * n * n)
        theory = float(p.mean_correction2[0, 0])                      # (the coefficients do not depend on n)
    fit = pdlt.fits.inverse_width_fit(widths, np.array(vals), np.array(errs), order=1)
    c2, se2 = float(fit.coef[0]), float(np.sqrt(fit.cov[0, 0]))
    assert abs(c2 - theory) < 5 * se2, (c2, se2, theory)
    assert abs(c2) > 5 * se2


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_width_sweep_fits_the_posterior_one_over_n_squared_coefficient(act):
    """n^2 (MC - m0 - m1/n) at n = 16, 32, 64 (4e5 networks each) fitted as c2 + c3/n (c3 the uncomputed next
    order): c2 is the computed 1/n^2 coefficient within 5 fit errors, and c2 = 0 (the order-1 posterior) is rejected.
    Measured: ReLU c2 = -1.36 +- 0.22 against -1.13, GELU -1.08 +- 0.20 against -1.05 (c3 = 6.6 and 8.3)."""
    widths = (16, 32, 64)
    vals, errs, theory = [], [], None
    for n in widths:
        mean, se, m0, m1, m2 = _case(act, n, 400_000, seed=11)
        vals.append((mean - m0 - m1 / n) * n * n)
        errs.append(se * n * n)
        theory = m2                                                 # (the coefficients do not depend on n)
    fit = pdlt.fits.inverse_width_fit(widths, np.array(vals), np.array(errs), order=1)
    c2, se2 = fit.coef[0], float(np.sqrt(fit.cov[0, 0]))
    assert abs(c2 - theory) < 5 * se2, (c2, se2, theory)
    assert abs(c2) > 5 * se2


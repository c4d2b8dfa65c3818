"""Influence measured on sampled networks (pdlt.montecarlo.influence) against the theory (pdlt.influence).

* The estimator is the derivative of the reweighting estimator: with common random numbers (the same networks) it
  equals five-point differences of the Monte Carlo posterior mean and variance in the targets and in the input
  coordinates, jackknife included, to the stencil's error.
* Theory against Monte Carlo: n (MC - infinite width) extrapolated in 1/n from two widths (default suite) or fitted
  over four (slow) must equal the predicted 1/n coefficient within the standard errors; the infinite-width
  influence is rejected (negative control).
"""

import numpy as np
import pytest

import pdlt
from pdlt.errors import ParameterError, PdltWarning
from pdlt.fits import inverse_width_fit

XA = np.array([[1.0, 0.2], [0.3, -0.9]])
XB = np.array([[0.6, 0.5]])
Y = np.array([[0.8], [-0.5]])


def _five_point(f, h):
    a, b, c, d = (f(t) for t in (-2 * h, -h, h, 2 * h))
    return (a - 8 * b + 8 * c - d) / (12 * h)


def test_estimator_is_the_derivative_of_the_reweighting_estimator():
    net = pdlt.MLP("tanh", (2, 4, 4, 1), C_W=1.0, C_b=0.1)
    kw = dict(noise_var=0.3, n_samples=3000, seed=3, batches=8, chunk=1000)
    mc = pdlt.influence_mc(net, XA, Y, XB, **kw)
    for a in range(2):
        def fy(t):
            y = Y.copy()
            y[a, 0] += t
            r = pdlt.influence_mc(net, XA, y, XB, **kw)
            return np.stack([r.mean.mean, r.var.mean])

        D = _five_point(fy, 1e-3)
        np.testing.assert_allclose(mc.mean_dy.mean[:, :, a, 0], D[0], rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(mc.var_dy.mean[:, :, a, 0], D[1], rtol=1e-7, atol=1e-10)
        for k in range(2):
            def fx(t):
                xa = XA.copy()
                xa[a, k] += t
                r = pdlt.influence_mc(net, xa, Y, XB, **kw)
                return np.stack([r.mean.mean, r.var.mean])

            D = _five_point(fx, 1e-3)
            np.testing.assert_allclose(mc.mean_dx.mean[:, :, a, k], D[0], rtol=1e-7, atol=1e-10)
            np.testing.assert_allclose(mc.var_dx.mean[:, :, a, k], D[1], rtol=1e-7, atol=1e-10)
    assert np.all(mc.mean_dx.stderr > 0) and mc.ess > 0.5 * 3000


def _coefficients(widths, noise, n_samples, seed=1):
    """Per width: (theory, n (MC - infinite width) and its standard error) for the four responses."""
    out = []
    for n in widths:
        net = pdlt.MLP("tanh", (2, n, n, 1), C_W=1.0, C_b=0.1)
        th = pdlt.influence(net, XA, Y, XB, noise_var=noise)
        mc = pdlt.influence_mc(net, XA, Y, XB, noise_var=noise, n_samples=n_samples, seed=seed + n)
        lead = {"mean_dy": th.mean_dy_infinite[:, None, :, None], "var_dy": 0.0, "mean_dx": th.mean_dx_infinite,
                "var_dx": th.var_dx_infinite[:, None]}
        pred = {"mean_dy": th.mean_dy_correction, "var_dy": th.var_dy_correction, "mean_dx": th.mean_dx_correction,
                "var_dx": th.var_dx_correction}
        out.append({k: (pred[k], n * (getattr(mc, k).mean - lead[k]), n * getattr(mc, k).stderr) for k in lead})
    return out


def _check(widths, res, order, z_max):
    for k in res[0]:
        pred = res[0][k][0]
        for idx in np.ndindex(pred.shape):
            vals = [r[k][1][idx] for r in res]
            ses = [r[k][2][idx] for r in res]
            fit = inverse_width_fit(widths, vals, ses, order=order)
            assert abs(fit.z(0, pred[idx])) < z_max, (k, idx, fit.coef, fit.stderr, pred[idx])
            if abs(pred[idx]) > 10 * fit.stderr[0]:
                # negative control: the infinite-width influence (a zero 1/n coefficient) is rejected
                assert abs(fit.z(0, 0.0)) > 5, (k, idx)


def test_theory_against_monte_carlo_two_widths():
    """tanh, L = 3, noise 0.5: the 1/n coefficient of every response, Richardson-extrapolated from n = 8 and 16
    (c1 + c2/n through both points, errors propagated), within 4 standard errors of the theory."""
    widths = (8, 16)
    _check(widths, _coefficients(widths, 0.5, 150_000), order=1, z_max=4)


@pytest.mark.slow
def test_theory_against_monte_carlo_width_sweep():
    """As above with n = 8..64 and 10^6 networks each, fitted with c1 + c2/n + c3/n^2."""
    widths = (8, 16, 32, 64)
    _check(widths, _coefficients(widths, 0.5, 1_000_000), order=2, z_max=4)


def test_bad_input_and_small_samples():
    net = pdlt.MLP("tanh", (2, 4, 4, 1), C_W=1.0, C_b=0.1)
    with pytest.raises(ParameterError, match="n_samples"):
        pdlt.influence_mc(net, XA, Y, XB, n_samples=4, batches=8)
    with pytest.raises(ParameterError, match="net"):
        pdlt.influence_mc(pdlt.MLP("tanh", (2, 1)), XA, Y, XB)
    with pytest.warns(PdltWarning, match="effective sample size"):
        pdlt.influence_mc(net, XA, 3 * Y, XB, noise_var=0.01, n_samples=256, batches=4, chunk=256)


def test_second_derivative_estimator_is_the_derivative_of_the_first():
    net = pdlt.MLP("tanh", (2, 4, 4, 1), C_W=1.0, C_b=0.1)
    xa = np.concatenate([XA, [[-0.5, 0.4]]])
    y = np.array([0.8, -0.5, 0.3])
    kw = dict(noise_var=0.3, n_samples=2000, seed=2, batches=8, chunk=1000)
    mc = pdlt.influence_mc(net, xa, y, XB, second=True, **kw)
    for c in range(3):
        def f(t):
            yy = y.copy()
            yy[c] += t
            return pdlt.influence_mc(net, xa, yy, XB, **kw).mean_dy.mean[:, 0, :, 0]

        np.testing.assert_allclose(mc.mean_dyy.mean[:, :, c], _five_point(f, 1e-3), rtol=1e-7, atol=1e-10)
    with pytest.raises(ParameterError, match="one output"):
        pdlt.influence_mc(pdlt.MLP("tanh", (2, 4, 2)), XA, np.ones((2, 2)), XB, second=True, n_samples=64)


@pytest.mark.slow
def test_pair_coupling_against_monte_carlo():
    """pdlt.interactions' pair coupling d^2 m / d y_a d y_c (zero at infinite width) against the second-derivative
    estimator: n x MC at n = 8, 16, 32 fitted with c1 + c2/n + c3/n^2; c1 within 4 standard errors of the theory,
    and 0 (infinite width) rejected."""
    xa = np.concatenate([XA, [[-0.5, 0.4]]])
    y = np.array([0.8, -0.5, 0.3])
    widths = (8, 16, 32)
    vals, ses, pred = [], [], None
    for n in widths:
        net = pdlt.MLP("tanh", (2, n, n, 1), C_W=1.0, C_b=0.1)
        pred = n * pdlt.interactions(net, xa, y, XB, 0.3).pair_coupling
        mc = pdlt.influence_mc(net, xa, y, XB, noise_var=0.3, n_samples=600_000, seed=7 + n, second=True)
        vals.append(n * mc.mean_dyy.mean)
        ses.append(n * mc.mean_dyy.stderr)
    for idx in np.ndindex(pred.shape):
        fit = inverse_width_fit(widths, [v[idx] for v in vals], [s[idx] for s in ses], order=2)
        assert abs(fit.z(0, pred[idx])) < 4, (idx, fit.coef, fit.stderr, pred[idx])
        if abs(pred[idx]) > 10 * fit.stderr[0]:
            assert abs(fit.z(0, 0.0)) > 5, idx

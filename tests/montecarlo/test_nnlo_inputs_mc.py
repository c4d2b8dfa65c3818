"""The several-input 1/n^2 theory (pdlt.nnlo with d > 1) against sampled networks: the metric's covariance and the
two-point function of two inputs at the last layer, order 1/n rejected where the 1/n^2 term is resolved, and (slow)
width sweeps whose fitted 1/n^2 coefficient is the computed V1."""

import warnings

import numpy as np
import pytest

import pdlt

X = np.array([[1.0, 0.0], [0.5, 0.8660254]])          # two inputs at 60 degrees


def _theory(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pdlt.nnlo(net, X)


@pytest.mark.parametrize("act, C_W, n", [("relu", 2.0, 12), ("tanh", 1.0, 8)])
def test_two_inputs_at_order_one_over_n_squared(act, C_W, n):
    """L = 4 at criticality, 1.5e5 networks (markov sampler, jackknife errors): every entry of Cov(G_ab, G_cd) and
    E[z_a z_b] at layer 4 within 5 standard errors of the 1/n^2 prediction, and the four-point function's 1/n
    prediction rejected (the 1/n^2 term is 13-25 standard errors here). The remainder O(1/n^3) is below one standard
    error: in a sweep to n = 8 (ReLU) the 1/n^2 prediction's largest |z| was 2.5, and it shrinks like 1/n^3."""
    net = pdlt.MLP(act, (2, n, n, n, n), C_W=C_W, C_b=0.0)
    th = _theory(net)
    mc = pdlt.sample(net, X, 150_000, seed=3, progress=False)
    l = 4
    for est, o1, o2 in ((mc.four_point, th.metric_covariance(l, 1), th.metric_covariance(l, 2)),
                        (mc.two_point, th.second_moment(l, 1), th.second_moment(l, 2))):
        m, s = est.mean[l - 1], est.stderr[l - 1]
        assert np.max(np.abs((m - o2) / s)) < 5
    z1 = (mc.four_point.mean[l - 1] - th.metric_covariance(l, 1)) / mc.four_point.stderr[l - 1]
    assert np.max(np.abs(z1)) > 10
    # the O(1/n) prediction's truncation error (the computed 1/n^2 term of every entry plus c^2 max|T1|) covers the
    # miss the negative control shows
    fw = pdlt.finite_width(net, X)
    for name, est in (("four_point", mc.four_point), ("two_point", mc.two_point)):
        miss = np.abs(est.mean[l - 1] - getattr(fw, name)(l))
        assert np.all(miss <= 5 * est.stderr[l - 1] + fw.truncation_error(name, l))


@pytest.mark.slow
@pytest.mark.parametrize("act, C_W", [("relu", 2.0), ("tanh", 1.0)])
def test_width_sweep_fits_the_one_over_n_squared_coefficient(act, C_W):
    """n Cov(G_ab, G_cd) at layer 4 for widths 6..32 (4e5 networks each), fitted as c0 + c1/n + c2/n^2 (c2 absorbs
    the next order): c0 is V and c1 is V1 within 5 fit errors for every entry. For ReLU (V1 = 5 V at l = 4 on the
    diagonal) c1 = 0, the 1/n theory, is rejected; tanh's V1 is at most ~3 fit errors here (its 1/n^2 term is
    resolved at fixed width in the test above instead)."""
    widths = (6, 8, 12, 16, 24, 32)
    l = 4
    vals, errs = [], []
    for n in widths:
        net = pdlt.MLP(act, (2, n, n, n, n), C_W=C_W, C_b=0.0)
        mc = pdlt.sample(net, X, 400_000, seed=11, progress=False)
        vals.append(n * mc.four_point.mean[l - 1])
        errs.append(n * mc.four_point.stderr[l - 1])
    th = _theory(pdlt.MLP(act, (2, 16, 16, 16, 16), C_W=C_W, C_b=0.0))   # V, V1 do not depend on a uniform width
    vals, errs = np.array(vals).reshape(len(widths), -1), np.array(errs).reshape(len(widths), -1)
    V, V1 = th.V[l - 1].ravel(), th.V1[l - 1].ravel()
    for j in range(vals.shape[1]):
        fit = pdlt.fits.inverse_width_fit(widths, vals[:, j], errs[:, j], order=2)
        se = np.sqrt(np.diag(fit.cov))
        assert abs(fit.coef[0] - V[j]) < 5 * se[0], (j, fit.coef, V[j])
        assert abs(fit.coef[1] - V1[j]) < 5 * se[1], (j, fit.coef, V1[j])
    if act == "relu":
        fit = pdlt.fits.inverse_width_fit(widths, vals[:, 0], errs[:, 0], order=2)
        assert abs(fit.coef[1]) > 5 * np.sqrt(fit.cov[1, 1])

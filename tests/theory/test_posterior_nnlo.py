"""The posterior to O(1/n^2) (pdlt.posterior(..., order=2), pdlt.theory.posterior_nnlo).

Oracles: (1) a metric law with exactly the assumed cumulant structure, ``G = K + g1/n + g2/n^2 + a Z/sqrt(n) +
b (Z^2 - 1)/n`` with one standard normal Z (mean ``g1/n + g2/n^2``, ``Cov = a a/n + 2 b b/n^2``,
``kappa_3 = 2 sym(a a b)/n^2``, ``kappa_4 = O(1/n^3)``),
whose posterior mean and second moment are computed to round-off by Gauss-Hermite quadrature over Z: the 1/n^2
coefficient extracted from it at large n must equal the expansion's; (2) deep linear networks, whose posterior mean for
one training and one test input is an exact low-dimensional integral (Wishart chain); (3) the existing O(1/n)
posterior (a different algorithm) for the 1/n coefficients. The network statistics it consumes (G2, V1, U of
pdlt.nnlo_inputs) are checked against Monte Carlo in their own tests.
"""

import warnings

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

import pdlt
from pdlt.errors import ParameterError
from pdlt.theory.posterior_nnlo import posterior_nnlo


def _synthetic(seed=0, d=3, nA=2):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    K = A @ A.T + np.eye(d)
    a, b, g1, g2 = (0.3 * (m + m.T) for m in rng.normal(size=(4, d, d)))
    y = np.array([[0.7, 0.2], [-0.4, 0.5]])[:nA]
    return K, a, b, g1, g2, y, nA


def _quadrature(K, a, b, g1, g2, y, nA, s2, n):
    """Posterior mean (n_B, n_L) and second moment (n_L, n_B, n_L, n_B) under the one-Z metric law, to round-off."""
    z, wq = hermegauss(120)
    wq = wq / wq.sum()
    nL = y.shape[1]
    num_m, num_s, den = 0.0, 0.0, 0.0
    for zi, wi in zip(z, wq):
        G = K + g1 / n + g2 / n**2 + a * zi / np.sqrt(n) + b * (zi * zi - 1.0) / n
        C = G[:nA, :nA] + s2 * np.eye(nA)
        w = np.exp(-0.5 * np.sum(y * np.linalg.solve(C, y))) / np.linalg.det(C) ** (nL / 2)
        m = G[nA:, :nA] @ np.linalg.solve(C, y)
        S = G[nA:, nA:] - G[nA:, :nA] @ np.linalg.solve(C, G[:nA, nA:])
        sec = np.einsum("ij,ab->iajb", np.eye(nL), S) + np.einsum("ai,bj->iajb", m, m)
        num_m, num_s, den = num_m + wi * w * m, num_s + wi * w * sec, den + wi * w
    return num_m / den, num_s / den


def test_second_order_coefficients_match_an_exactly_known_metric_law():
    """1/n^2 coefficients of the mean and covariance from quadrature at n = 1e3 and 1e4, Richardson-extrapolated
    (the remainder is c_3/n, so (10 c(1e4) - c(1e3))/9 removes it), against the expansion: relative 1e-5. The
    quadrature is exact for the law to ~1e-15, which n^2 = 1e8 turns into ~1e-7 of the coefficient."""
    K, a, b, g1, g2, y, nA = _synthetic()
    s2 = 0.05
    V = np.einsum("ab,cd->abcd", a, a)
    V1 = 2.0 * np.einsum("ab,cd->abcd", b, b)
    U = 2.0 * sum(np.einsum("ab,cd,ef->abcdef", *t) for t in ((a, a, b), (a, b, a), (b, a, a)))
    p = posterior_nnlo(K, g1, V, g2, V1, U, 1, y, nA, s2)
    coef = {}
    for n in (1e3, 1e4):
        m, sec = _quadrature(K, a, b, g1, g2, y, nA, s2, n)
        cov = sec - np.einsum("ai,bj->iajb", m, m)
        cov0 = np.einsum("ij,ab->iajb", np.eye(y.shape[1]), p.cov_infinite)
        coef[n] = ((m - p.mean_infinite - p.mean_correction / n) * n * n,
                   (cov - cov0 - p.cov_correction / n) * n * n)
    for k, theory in enumerate((p.mean_correction2, p.cov_correction2)):
        rich = (10.0 * coef[1e4][k] - coef[1e3][k]) / 9.0
        assert np.max(np.abs(theory)) > 0.05                         # a non-trivial 1/n^2 term is tested
        np.testing.assert_allclose(rich, theory, rtol=1e-5, atol=1e-6 * np.max(np.abs(theory)))


def _chi2_rule(n, m=600):
    """Nodes and weights of ``E f(chi^2_n/n)``: Gauss-Legendre on the mean +- 40 standard deviations against the
    gamma density (the integrands below are smooth, so the rule converges exponentially)."""
    from scipy import stats

    sd = np.sqrt(2.0 / n)
    t, w = np.polynomial.legendre.leggauss(m)
    lo, hi = max(1.0 - 40.0 * sd, 1e-12), 1.0 + 40.0 * sd
    u = lo + (hi - lo) * (t + 1.0) / 2.0
    return u, w * (hi - lo) / 2.0 * stats.gamma(a=n / 2.0, scale=2.0 / n).pdf(u)


@pytest.mark.parametrize("L", [2, 3])
def test_deep_linear_posterior_mean_is_exact_to_second_order(L):
    """A deep linear network (C_b = 0), one training and one test input: ``G^(l+1)`` given ``G^(l)`` is Wishart, so
    ``G_AA^(L) = K1_AA C_W^(L-1) prod_l chi^2_n/n`` and, by the Wishart regression property, ``E[G_BA | G_AA] =
    (K1_BA/K1_AA) G_AA`` at every layer. Hence the exact posterior mean is ``(K1_BA/K1_AA) y E[w g/(g + s^2)]/E[w]``
    (``w = exp(-y^2/(2(g + s^2)))/sqrt(g + s^2)``), an (L-1)-dimensional integral done by quadrature. Its 1/n^2
    coefficient, Richardson-extrapolated from n = 250, 500, 1000, equals order=2's to 1e-4 (relative)."""
    xa, xb, y, s2, C_W = np.array([[1.0, 0.0]]), np.array([[0.6, 0.8]]), 0.7, 0.05, 1.3
    X = np.concatenate([xa, xb])
    K1 = C_W * X @ X.T / 2.0
    c2 = {}
    for n in (250, 500, 1000):
        u, wu = _chi2_rule(n)
        g, W = C_W * K1[0, 0] * u, wu
        for _ in range(L - 2):
            g, W = np.multiply.outer(g, C_W * u), np.multiply.outer(W, wu)
        w = np.exp(-0.5 * y * y / (g + s2)) / np.sqrt(g + s2)
        exact = K1[1, 0] / K1[0, 0] * y * np.sum(W * w * g / (g + s2)) / np.sum(W * w)
        p = pdlt.posterior(pdlt.MLP("linear", (2,) + (n,) * (L - 1) + (1,), C_W=C_W), xa, [y], xb, noise_var=s2,
                           order=2)
        c2[n] = (exact - p.mean_infinite[0, 0] - p.mean_correction[0, 0] / n) * n * n
        theory = p.mean_correction2[0, 0]
    rich = 2.0 * c2[1000] - c2[500]            # the 1/n^3 remainder removed
    assert abs(c2[250] - theory) > 10 * abs(rich - theory)   # the extrapolation is what agrees, not luck
    assert abs(rich - theory) < 1e-4 * abs(theory), (c2, theory)


def test_first_order_part_matches_the_order_one_posterior():
    """Through the same network statistics, the 1/n coefficients of order=2 (derivatives to fourth order of the
    weighted functionals) equal those of order=1 (pdlt.theory.bayes' second-order Taylor): two algorithms."""
    net = pdlt.MLP("tanh", (2, 8, 8, 2), C_W=1.1, C_b=0.1)
    # inputs in sorted order: the same compiled derivatives as the metric-law test
    xa, xb, y = [[0.3, 0.9], [0.6, 0.8]], [[1.0, 0.0]], [[0.7, 0.1], [-0.4, 0.3]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.TruncationWarning)
        p1 = pdlt.posterior(net, xa, y, xb, noise_var=0.05)
        p2 = pdlt.posterior(net, xa, y, xb, noise_var=0.05, order=2)
    np.testing.assert_allclose(p2.mean_correction, p1.mean_correction, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p2.cov_correction, p1.cov_correction, rtol=1e-12, atol=1e-15)
    assert p1.mean_correction2 is None and p2.order == 2
    np.testing.assert_allclose(p2.mean, p1.mean + p2.mean_correction2 / 64, rtol=1e-14)
    np.testing.assert_allclose(p2.next_order, np.abs(p2.mean_correction2) / 64, rtol=1e-14)


def test_order_two_refuses_what_it_cannot_compute():
    net = pdlt.MLP("tanh", (2, 8, 8, 1))
    xa = [[1.0, 0.0], [0.3, 0.9], [0.5, 0.5], [0.2, -0.7]]
    with pytest.raises(ParameterError) as err:
        pdlt.posterior(net, xa, [0.1, 0.2, 0.3, 0.4], [[0.6, 0.8]], noise_var=0.1, order=2)
    assert err.value.setting == "order" and "4 distinct" in str(err.value)
    for bad in (3, 0, "2", True):
        with pytest.raises(ParameterError) as err:
            pdlt.posterior(net, xa[:1], [0.1], [[0.6, 0.8]], noise_var=0.1, order=bad)
        assert err.value.setting == "order"
    with pytest.raises(ParameterError) as err:
        pdlt.posterior(net, xa[:1], [0.1], [[0.6, 0.8]], noise_var=0.1).next_order
    assert err.value.setting == "order"
    with pytest.raises(ParameterError) as err:
        pdlt.posterior(net, xa[:1], [0.1], [[0.6, 0.8]], noise_var=0.1, order=np.array([1, 2]))
    assert err.value.setting == "order"
    # ReLU inputs whose correlation matrix is singular (3 inputs in n_0 = 2, C_b = 0): the several-input statistics
    # refuse them, and the posterior says which setting to change
    with pytest.raises(ParameterError) as err:
        pdlt.posterior(pdlt.MLP("relu", (2, 8, 8, 1), C_W=2.0), xa[:2], [0.1, 0.2], [[0.6, 0.8]], noise_var=0.1,
                       order=2)
    assert err.value.setting == "order" and "order=1" in str(err.value)
    # a noise variance beyond ~1e154 overflows the derivatives' products of the training block: named, not blamed on
    # targets of the outputs' own scale (it named y_train)
    with pytest.raises(ParameterError) as err:
        pdlt.posterior(net, xa[:2], [0.1, -0.2], [[0.6, 0.8]], noise_var=1e200, order=2)
    assert err.value.setting == "noise_var"
    assert np.isfinite(pdlt.posterior(net, xa[:2], [0.1, -0.2], [[0.6, 0.8]], noise_var=1e100, order=2).mean).all()


@pytest.mark.slow   # suite time (a compilation of its own); the caveat's floors are also exercised at order 1
def test_pinned_test_point_gives_no_spurious_warning():
    """Exact conditioning (noise_var = 0) at a training input pins the posterior mean to the target at every order:
    both correction terms are round-off there, so no truncation caveat may come from their ratio. (The test input
    repeats a training input: the 1/n^2 statistics of the distinct inputs are mapped onto both rows.)"""
    net = pdlt.MLP("tanh", (2, 8, 8, 2), C_W=1.0, C_b=0.1)
    y = [[0.7, 0.1], [-0.4, 0.3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", pdlt.TruncationWarning)
        p = pdlt.posterior(net, [[1.0, 0.0], [0.3, 0.9]], y, [[1.0, 0.0]], 0.0, order=2)
    np.testing.assert_allclose(p.mean, [y[0]], rtol=1e-10)
    assert np.max(p.next_order) < 1e-10


@pytest.mark.slow   # suite time (two compilations); the pinned test above also maps a repeated input
def test_repeated_inputs_keep_the_derivatives_small():
    """Repeated measurements are free: 2 distinct inputs in 9 rows differentiate a 2 x 2 metric (the row-by-row
    metric would need 9^8 entries per output), and 8 copies of a target at noise s^2 are one at s^2/8."""
    net = pdlt.MLP("tanh", (2, 8, 8, 1), C_W=1.0, C_b=0.1)
    xa, xb = [[1.0, 0.0]] * 8, [[0.6, 0.8]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.TruncationWarning)
        p = pdlt.posterior(net, xa, [0.3] * 8, xb, noise_var=0.4, order=2)
        q = pdlt.posterior(net, [[1.0, 0.0]], [0.3], xb, noise_var=0.05, order=2)   # 8 copies at s^2: s^2/8
    np.testing.assert_allclose(p.mean_correction2, q.mean_correction2, rtol=1e-9)

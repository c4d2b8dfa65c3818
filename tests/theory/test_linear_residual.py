"""Deep linear networks with shortcuts at every order in 1/n (pdlt.theory.linear_residual): against exact Gaussian
expectations of the network's polynomial at width 3, the plain Wishart chain and the one-input 1/n^2 recursions at
gamma = 0, the O(1/n) trajectory theory of pdlt.theory.residual, and Monte Carlo at L/n > 1 where the O(1/n)
predictions are rejected."""

import math
from collections import defaultdict

import numpy as np
import pytest

import pdlt
from pdlt.theory import linear_residual as lr
from pdlt.theory.kernel import kernel_flow
from pdlt.theory.truncation import next_order, next_order_factor, truncation_error

X = np.array([[1.0, 0.3], [-0.5, 0.8], [0.2, -1.1]])
pytestmark = pytest.mark.filterwarnings("ignore::pdlt.errors.TruncationWarning")


# ------------------------------------------------------------------ exact expectations of polynomials in normals
def _mul(p, q):
    out = defaultdict(float)
    for a, x in p.items():
        for b, y in q.items():
            out[tuple(sorted(a + b))] += x * y
    return out


def _add(*ps):
    out = defaultdict(float)
    for p in ps:
        for a, x in p.items():
            out[a] += x
    return out


def _expect(p, var):
    """E of a polynomial (monomials: sorted tuples of variable ids) in independent centred normals."""
    total = 0.0
    for mono, coef in p.items():
        counts = defaultdict(int)
        for v in mono:
            counts[v] += 1
        term = coef
        for v, k in counts.items():
            term = 0.0 if k % 2 else term * math.prod(range(k - 1, 0, -2)) * var[v] ** (k // 2)
        total += term
    return total


def _network(x, n, L, C_W, C_b, gamma, xi):
    """The preactivations ``z[l][i][a]`` of a linear residual network as polynomials in its weights and biases."""
    var = {}

    def normal(v):
        var[len(var) + 1] = v
        return {(len(var),): 1.0}

    def affine(fields, fan_in, scale):
        b = [normal(C_b) for _ in range(n)]
        W = [[normal(C_W / fan_in) for _ in range(fan_in)] for _ in range(n)]
        return [[_add({k: scale * c for k, c in b[i].items()},
                      *[{k: scale * c for k, c in _mul(W[i][j], fields[j][a]).items()} for j in range(fan_in)])
                 for a in range(len(x))] for i in range(n)]

    z = affine([[{(): float(xa[j])} for xa in x] for j in range(len(x[0]))], len(x[0]), 1.0)
    for _ in range(1, L):
        new = affine(z, n, xi)
        z = [[_add(new[i][a], {k: gamma * c for k, c in z[i][a].items()}) for a in range(len(x))] for i in range(n)]
    return z, var


def test_exact_expectations_at_width_three():
    """n = 3 (so three distinct neurons exist), bias, gamma = 0.7, xi = 0.6: every one-input moment over neuron tuples
    after one residual step, the four-point moments after two, and every entry E[z_ia z_ib z_jc z_jd] of two inputs
    after one, equal the polynomial expectations of the network itself (no 1/n expansion anywhere)."""
    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    x1 = [[0.8]]
    for L in (2, 3):
        net = pdlt.MLP("linear", (1,) + (3,) * L, **kw)
        M = lr.one_input_chain(net, float(kernel_flow(net, net.inputs(x1)).K[0, 0, 0]))[-1]
        z, var = _network(x1, 3, L, **kw)
        u = [_mul(z[i][0], z[i][0]) for i in range(3)]
        parts = {(1,): u[0], (2,): _mul(u[0], u[0]), (1, 1): _mul(u[0], u[1])}
        if L == 2:      # (the sixth-order products of L = 3 are too long to expand here)
            parts.update({(3,): _mul(parts[(2,)], u[0]), (2, 1): _mul(parts[(2,)], u[1]),
                          (1, 1, 1): _mul(parts[(1, 1)], u[2])})
        for P, poly in parts.items():
            assert M[lr.PARTITIONS.index(P)] == pytest.approx(_expect(poly, var), rel=1e-12), (L, P)
    net = pdlt.MLP("linear", (2, 3, 3), **kw)
    xs = X[:2]
    m, cov = lr.four_point_chain(net, kernel_flow(net, net.inputs(xs)).K[0])
    z, var = _network(xs, 3, 2, **kw)
    for a, b, c, d in np.ndindex(2, 2, 2, 2):
        raw = _expect(_mul(_mul(z[0][a], z[0][b]), _mul(z[1][c], z[1][d])), var)
        assert cov[1, a, b, c, d] + m[1, a, b] * m[1, c, d] == pytest.approx(raw, rel=1e-12)
    assert m[1, 0, 1] == pytest.approx(_expect(_mul(z[0][0], z[0][1]), var), rel=1e-12)


def test_plain_layers_are_the_wishart_chain_and_the_nnlo_recursions():
    """gamma = 0: the tuple chain reproduces the metric's Wishart chain (unequal widths, per-layer C_W and C_b, three
    inputs) and its 1/n, 1/n^2 coefficients are the one-input recursions' V, V1 and U (pdlt.theory.nnlo), three
    different algorithms; one neuron's sixth cumulant is 15 kappa_3(G)."""
    net = pdlt.MLP("linear", (2, 5, 3, 7, 4, 6), C_W=(1.3, 0.9, 1.1, 1.2, 0.8), C_b=(0.1, 0.2, 0.0, 0.3, 0.05))
    wish = pdlt.linear_all_orders(net, X)
    m, cov = lr.four_point_chain(net, kernel_flow(net, wish.x).K[0])
    np.testing.assert_allclose(m, wish.mean, rtol=1e-14)
    np.testing.assert_allclose(cov, wish.cov, rtol=1e-12, atol=1e-15)
    K1 = float(kernel_flow(net, net.inputs(X[0])).K[0, 0, 0])
    c = lr.connected_moments(lr.one_input_chain(net, K1)[:, None, :])
    w1 = pdlt.linear_all_orders(net, X[:1])
    np.testing.assert_allclose(c["kappa3"][:, 0], w1.kappa3.reshape(net.L), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(c["kappa6"][:, 0], 15 * w1.kappa3.reshape(net.L), rtol=1e-11, atol=1e-14)
    s = lr.connected_moments(lr.one_input_chain(net, K1, series=True))
    n = np.array([1.0] + list(net.widths[1:net.L]))
    ref = pdlt.nnlo(net, X[0])
    np.testing.assert_allclose(s["cov"][1:, 1] * n[1:], ref.V[1:], rtol=1e-12)
    np.testing.assert_allclose(s["cov"][1:, 2] * n[1:] ** 2, ref.V1[1:], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s["kappa3"][1:, 2] * n[1:] ** 2, ref.U[1:], rtol=1e-12)


@pytest.mark.parametrize("gamma, xi, C_b", [(0.7, 0.6, 0.1), (0.9, 1.0, 0.0), (-0.5, 0.8, 0.3)])
def test_first_order_is_the_trajectory_theory(gamma, xi, C_b):
    """Two inputs with shortcuts: the 1/n coefficient of the exact four-point function is the O(1/n) vertex of
    pdlt.finite_width's trajectory theory (linear response of the fields, pdlt.theory.residual), a different
    derivation; the mean has no 1/n part (G1 = 0) and the connected functions start at their orders (no 1/n^0 part of
    the four-point, no 1/n part of the six-point)."""
    net = pdlt.MLP("linear", (2,) + (8,) * 5, C_W=1.0, C_b=C_b, gamma=gamma, xi=xi)
    th = pdlt.finite_width(net, X[:2])
    m, s = lr.four_point_chain(net, kernel_flow(net, th.x).K[0], series=True)
    np.testing.assert_allclose(m, th.K, rtol=1e-14)
    scale = np.abs(th.V).max()
    assert np.abs(th.G1).max() < 1e-12 * np.abs(th.K).max()
    assert np.abs(s[:, 0]).max() < 1e-13 * scale
    np.testing.assert_allclose(s[1:, 1] * 8, th.V[1:], rtol=0, atol=1e-13 * scale)
    one = lr.connected_moments(lr.one_input_chain(net, float(th.K[0, 0, 0]), series=True))
    np.testing.assert_allclose(one["cov"], s[..., 0, 0, 0, 0], rtol=1e-12, atol=1e-15 * scale)
    assert np.abs(one["kappa3"][:, :2]).max() < 1e-12 * np.abs(one["kappa3"]).max()


def test_one_neuron_sixth_cumulant_is_fifteen_times_the_three_neuron_function():
    """With shortcuts as without: one neuron's sixth cumulant is 15 times the connected six-point function of three
    distinct neurons (random per-layer gamma, xi, C_W, C_b at width 3), as its fourth cumulant is 3 times the
    distinct-neuron four-point (proved in the module docstring; the sixth-order identity is checked here)."""
    rng = np.random.default_rng(0)
    L = 6
    for _ in range(4):
        net = pdlt.MLP("linear", (1,) + (3,) * L, C_W=list(rng.uniform(0.5, 1.5, L)), C_b=list(rng.uniform(0, .5, L)),
                       gamma=[0.0] + list(rng.uniform(-0.9, 0.9, L - 1)), xi=[1.0] + list(rng.uniform(.3, 1.2, L - 1)))
        w = pdlt.linear_all_orders(net, [[1.0]])
        np.testing.assert_allclose(w.kappa6[:, 0], 15 * w.kappa3.reshape(L), rtol=1e-11, atol=1e-14)


def test_monte_carlo_beyond_the_first_order():
    """n = 4, L = 5 (L/n > 1), gamma = 0.8, xi = 0.6, bias: the exact two- and four-point functions of 3 inputs agree
    with 4 x 10^4 sampled networks (every entry, |z| < 5) where the O(1/n) four-point function is rejected (|z| > 5);
    for one input the exact kurtosis and sixth cumulant agree with 10^5 networks, the O(1/n^2) kurtosis too, while the
    O(1/n) kurtosis and the leading-order sixth cumulant (0) are rejected."""
    net = pdlt.MLP("linear", (2,) + (4,) * 5, C_W=1.0, C_b=0.1, gamma=0.8, xi=0.6)
    lin = pdlt.linear_all_orders(net, X)
    mc = pdlt.sample(net, X, 40_000, seed=11, progress=False)
    z2 = (mc.two_point.mean - lin.mean) / mc.two_point.stderr
    z4 = (mc.four_point.mean[1:] - lin.cov[1:]) / mc.four_point.stderr[1:]
    assert np.abs(z2).max() < 5 and np.abs(z4).max() < 5, (np.abs(z2).max(), np.abs(z4).max())
    first = (mc.four_point.mean[-1] - pdlt.finite_width(net, X).connected_four_point(5)) / mc.four_point.stderr[-1]
    assert np.abs(first).max() > 5
    one = pdlt.linear_all_orders(net, X[:1])
    mc1 = pdlt.sample(net, X[:1], 100_000, seed=12, progress=False)
    second = pdlt.nnlo(net, X[0])
    ku, se = mc1.kurtosis.mean[:, 0], mc1.kurtosis.stderr[:, 0]
    for l in range(2, 6):
        assert abs(ku[l - 1] - one.kurtosis(l)[0]) < 5 * se[l - 1]
        assert abs(ku[l - 1] - second.kurtosis(l)) < 5 * se[l - 1]
    assert abs(ku[-1] - second.kurtosis(5, order=1)) > 5 * se[-1]
    k6, se6 = mc1.six_point_single.mean[:, 0], mc1.six_point_single.stderr[:, 0]
    assert np.all(np.isfinite(k6)) and mc1.undefined == {}
    assert np.all(np.abs(k6 - np.array([one.six_point_single(l)[0] for l in range(1, 6)])) < 5 * se6)
    assert abs(k6[-1]) > 5 * se6[-1]
    # an activation that is not odd keeps the six-point estimator masked (its one-neuron third moment need not vanish)
    relu = pdlt.sample(pdlt.MLP("relu", (2, 4, 4), C_W=1.0, gamma=0.7), X[:1], 200, seed=1, progress=False)
    assert relu.undefined == {"six_point_single": (2,), "normalized_six_point_single": (2,)}
    assert "not odd" in relu.undefined_reason("six_point_single")


@pytest.mark.parametrize("n", [4, 16])
def test_truncation_error_contains_the_exact_miss(n):
    """One input with shortcuts: the O(1/n) four-point functions and kurtosis miss the exact values by no more than
    their truncation error, which now carries the computed 1/n^2 term, at every layer where the series is controlled
    (c < 1; L = 2n)."""
    net = pdlt.MLP("linear", (2,) + (n,) * (2 * n), C_W=1.0, C_b=0.1, gamma=0.95, xi=0.3)
    lin, th = pdlt.linear_all_orders(net, X[:1]), pdlt.finite_width(net, X[:1])
    checked = 0
    for l in range(2, net.L + 1):
        if next_order_factor(th, "four_point", l) >= 1:
            break
        for name in ("four_point", "four_point_single", "kurtosis"):
            assert next_order(th, name, l)[1].all()
            exact = getattr(lin, name)(l)
            miss = np.abs(exact - getattr(th, name)(l))
            assert np.all(miss <= truncation_error(th, name, l) * (1 + 1e-9) + 1e-12 * np.abs(exact).max()), (l, name)
        checked += 1
    assert checked >= n


def test_series_and_exact_values_agree_at_large_width():
    """The exact four-point function minus its 1/n and 1/n^2 coefficients shrinks like 1/n^3 (n = 500, 1000)."""
    rest = []
    for n in (500, 1000):
        net = pdlt.MLP("linear", (2,) + (n,) * 6, C_W=1.0, C_b=0.1, gamma=0.8, xi=0.6)
        exact, second = pdlt.linear_all_orders(net, X[:1]), pdlt.nnlo(net, X[0])
        rest.append(exact.cov[-1, 0, 0, 0, 0] - second.metric_variance(6))
    assert rest[0] / rest[1] == pytest.approx(8.0, rel=0.02)


def test_dispatch_and_bad_input():
    net = pdlt.MLP("linear", (2, 6, 6, 6), gamma=0.5, xi=0.8)
    assert isinstance(pdlt.all_orders(net, X), pdlt.LinearAllOrders)
    assert isinstance(pdlt.all_orders(net, X[0]), pdlt.LinearAllOrders)
    assert pdlt.linear_all_orders(net, X).kappa3 is None             # six-point: one input only with shortcuts
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.linear_all_orders(net, X).six_point_single(2)
    assert err.value.setting == "x"
    second = pdlt.nnlo(net, X[0])
    assert np.all(second.G1 == 0) and np.all(second.G2 == 0) and second.V1[-1] != 0
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.nnlo(net, X)
    assert err.value.setting == "x"
    for act in ("tanh", "relu"):
        for fn in (pdlt.nnlo, pdlt.all_orders):
            with pytest.raises(pdlt.ParameterError) as err:
                fn(pdlt.MLP(act, (2, 6, 6), gamma=0.5), X[0])
            assert err.value.setting == "gamma"
    with pytest.raises(pdlt.DivergentFlowError) as err:
        pdlt.linear_all_orders(pdlt.MLP("linear", (2,) + (4,) * 400, C_W=3.0, gamma=0.9), X[:1])
    assert 2 < err.value.layer < 400
    with pytest.raises(pdlt.DivergentFlowError):
        pdlt.nnlo(pdlt.MLP("linear", (2,) + (4,) * 400, C_W=3.0, gamma=0.9), X[0])

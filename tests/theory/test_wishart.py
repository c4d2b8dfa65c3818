"""Deep linear networks with several inputs to all orders (pdlt.theory.wishart): the one-input product formula, Monte
Carlo of sampled networks at L/n = 1 (where the O(1/n) four-point function is rejected), the O(1/n) vertex at large
width, and the truncation error of every entry, off-diagonal ones included, against the exact values."""

import numpy as np
import pytest

import pdlt
from pdlt.theory.truncation import next_order_factor, truncation_error
from pdlt.theory.wishart import linear_all_orders

X = np.array([[1.0, 0.3], [-0.5, 0.8], [0.2, -1.1]])
# deep and narrow on purpose: the O(1/n) truncation warnings are expected
pytestmark = pytest.mark.filterwarnings("ignore::pdlt.errors.TruncationWarning")


def test_one_input_is_the_product_formula_and_the_scalar_chain():
    """d = 1, unequal widths, bias: Var G and kappa_3(G) equal the scalar all-orders chain (itself exact for this
    class) and, at C_b = 0, K^2 (prod (1 + 2/n_l) - 1) and K^3 [prod (1 + 2/n)(1 + 4/n) - 3 prod (1 + 2/n) + 2]."""
    widths, C_W, C_b = (2, 5, 3, 7, 4, 6), (1.3, 0.9, 1.1, 1.2, 0.8), (0.1, 0.2, 0.0, 0.3, 0.05)
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=C_b)
    lin, ao = linear_all_orders(net, X[:1]), pdlt.all_orders(net, X[0], M=3)
    np.testing.assert_allclose(lin.mean[:, 0, 0], ao.mean, rtol=1e-13)
    np.testing.assert_allclose(lin.cov[:, 0, 0, 0, 0], ao.var, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lin.kappa3.reshape(net.L, -1)[:, 0], ao.kappa3, rtol=1e-11, atol=1e-15)
    net0 = pdlt.MLP("linear", (2, 4, 4, 4, 4))
    lin0 = linear_all_orders(net0, X[:1])
    K = lin0.mean[:, 0, 0]
    for l in range(1, 5):
        assert lin0.cov[l - 1, 0, 0, 0, 0] == pytest.approx(K[l - 1] ** 2 * ((1 + 2 / 4) ** (l - 1) - 1), rel=1e-13)
        k3 = (1.5 * 2.0) ** (l - 1) - 3 * 1.5 ** (l - 1) + 2
        assert lin0.kappa3[l - 1].ravel()[0] == pytest.approx(K[l - 1] ** 3 * k3, rel=1e-13, abs=1e-15)


def test_large_width_gives_the_order_1_over_n_vertex():
    """n_{l-1} cov = V + O(1/n) (finite_width's vertex, a different recursion), every entry of 3 inputs: the gap is
    below 3 l/n of the layer's largest |V| at n = 4000 and halves from n = 4000 to 8000 (an O(1/n) remainder)."""
    gaps = []
    for n in (4000, 8000):
        net = pdlt.MLP("linear", (2,) + (n,) * 5, C_W=1.0, C_b=0.2)
        lin, th = linear_all_orders(net, X), pdlt.finite_width(net, X)
        np.testing.assert_allclose(lin.mean, th.K, rtol=1e-13)            # no 1/n correction at any order
        assert np.all(lin.cov[0] == 0) and np.allclose(n * lin.cov[1], th.V[1], rtol=1e-13)    # layer 2: exact
        gap = np.array([np.abs(n * lin.cov[l - 1] - th.V[l - 1]).max() for l in (3, 4, 5)])
        assert np.all(gap <= 3 * np.arange(3, 6) / n * np.abs(th.V[2:]).max(axis=(1, 2, 3, 4)))
        gaps.append(gap)
    np.testing.assert_allclose(gaps[0] / gaps[1], 2.0, rtol=2e-3)


def test_monte_carlo_at_l_over_n_one():
    """n = 4, L = 4, 3 inputs, bias: the exact mean and covariance against 4 x 10^4 sampled networks (every distinct
    entry of every layer, |z| < 5; deeper, the metric's heavy tail makes the jackknife errors too small, see
    pdlt.breakdown), while the O(1/n) four-point function is rejected at the last layer."""
    net = pdlt.MLP("linear", (2,) + (4,) * 4, C_W=1.0, C_b=0.1)
    lin = linear_all_orders(net, X)
    mc = pdlt.sample(net, X, 40_000, seed=11, progress=False)
    z2 = (mc.two_point.mean - lin.mean) / mc.two_point.stderr
    z4 = (mc.four_point.mean - lin.cov) / mc.four_point.stderr
    assert np.all(np.abs(z2) < 5) and np.all(np.abs(z4[1:]) < 5), (np.abs(z2).max(), np.abs(z4[1:]).max())
    th = pdlt.finite_width(net, X)
    first = (mc.four_point.mean[-1] - th.connected_four_point(4)) / mc.four_point.stderr[-1]
    assert np.abs(first).max() > 5


@pytest.mark.parametrize("n", [8, 16, 64])
def test_truncation_error_contains_every_entry(n):
    """Three inputs, every entry of the four-point functions (each carries the computed next order of the
    several-input theory plus a bound on the rest at its own scale): |exact - O(1/n)| <= truncation error at every
    layer where c < 1."""
    net = pdlt.MLP("linear", (2,) + (n,) * (2 * n), C_W=1.0, C_b=0.1)
    lin, th = linear_all_orders(net, X), pdlt.finite_width(net, X)
    checked = 0
    for l in range(2, net.L + 1):
        if next_order_factor(th, "four_point", l) >= 1:
            break
        for name, exact in (("four_point", lin.four_point(l)), ("four_point_single", lin.four_point_single(l))):
            miss = np.abs(exact - getattr(th, name)(l))
            # (1e-12 of the layer's scale: round-off of the two recursions where the O(1/n) result is exact, l = 2)
            assert np.all(miss <= truncation_error(th, name, l) * (1 + 1e-9) + 1e-12 * np.abs(exact).max()), (l, name)
        checked += 1
    assert checked >= 3


def test_dispatch_and_bad_input():
    net = pdlt.MLP("linear", (2, 6, 6, 6))
    assert isinstance(pdlt.all_orders(net, X), type(linear_all_orders(net, X)))
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.all_orders(pdlt.MLP("tanh", (2, 6, 6)), X)
    assert err.value.setting == "x"
    with pytest.raises(pdlt.ParameterError) as err:
        linear_all_orders(pdlt.MLP("relu", (2, 6, 6)), X)
    assert err.value.setting == "activation"
    # shortcuts: the exchangeable moment chain (tests/theory/test_linear_residual.py)
    assert linear_all_orders(pdlt.MLP("linear", (2, 6, 6, 6), gamma=0.5), X).cov.shape == (3, 3, 3, 3, 3)
    with pytest.raises(pdlt.ParameterError) as err:
        linear_all_orders(pdlt.MLP("linear", (2, 6, 6)), np.zeros((2, 2))).kurtosis(2)
    assert err.value.setting == "x"

"""The all-orders metric chain of one input (pdlt.theory.metric_closure) against exact finite-width results (the
scale-invariant chain's moments; sin at L = 3 through E exp(-s G)), against Monte Carlo of the chain itself (with the
order-1/n prediction rejected as a negative control), and against the 1/n^2 theory at large width."""

import math

import mpmath
import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.theory.metric_closure import all_orders
from pdlt.theory.nnlo import nnlo


def _scale_invariant_exact(slopes, widths, C_W, C_b, K1):
    """Exact mean, variance, kappa_3, kappa_4 of G at every layer: G' = C_b + C_W G S/n with S a sum of n iid
    sigma(xi)^2."""
    ap, am = slopes
    A = {p: (ap**p + am**p) * math.prod(range(p - 1, 0, -2)) / 2 for p in (2, 4, 6, 8)}
    k1, k2 = A[2], A[4] - A[2] ** 2
    k3 = A[6] - 3 * A[4] * A[2] + 2 * A[2] ** 3
    k4 = A[8] - 4 * A[6] * A[2] - 3 * A[4] ** 2 + 12 * A[4] * A[2] ** 2 - 6 * A[2] ** 4
    EG = [1.0, K1, K1**2, K1**3, K1**4]
    out = [(K1, 0.0, 0.0, 0.0)]
    for l in range(1, len(widths) - 1):
        n, cw, cb = widths[l], C_W[l], C_b[l]
        c1, c2, c3, c4 = n * k1, n * k2, n * k3, n * k4
        ES = [1.0, c1, c2 + c1**2, c3 + 3 * c2 * c1 + c1**3, c4 + 4 * c3 * c1 + 3 * c2**2 + 6 * c2 * c1**2 + c1**4]
        EG = [sum(math.comb(k, j) * cb ** (k - j) * (cw / n) ** j * EG[j] * ES[j] for j in range(k + 1))
              for k in range(5)]
        m, v = EG[1], EG[2] - EG[1] ** 2
        c3g = EG[3] - 3 * EG[2] * EG[1] + 2 * EG[1] ** 3
        m4 = EG[4] - 4 * EG[3] * m + 6 * EG[2] * m**2 - 3 * m**4
        out.append((m, v, c3g, m4 - 3 * v * v))
    return np.array(out)


@pytest.mark.parametrize("name, slopes", [("relu", (1.0, 0.0)), ("leaky_relu(0.2)", (1.0, 0.2))])
def test_scale_invariant_class_is_exact(name, slopes):
    """Narrow, unequal widths with bias: mean, variance and kappa_3 of G equal the exact finite-width values (every
    order in 1/n; the node functions are polynomials, so the Gauss rules integrate them exactly)."""
    widths = (2, 4, 7, 3, 5, 1)
    C_W, C_b = (1.3, 1.9, 2.1, 1.7, 1.2), (0.2, 0.1, 0.3, 0.0, 0.25)
    x = np.array([0.8, -0.6])
    th = all_orders(pdlt.MLP(name, widths, C_W=C_W, C_b=C_b), x, M=4)
    ex = _scale_invariant_exact(slopes, widths, C_W, C_b, C_b[0] + C_W[0] * float(x @ x) / 2)
    np.testing.assert_allclose(th.mean, ex[:, 0], rtol=1e-12)
    np.testing.assert_allclose(th.var, ex[:, 1], rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(th.kappa3, ex[:, 2], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(th.kappa4, ex[:, 3], rtol=1e-9, atol=1e-14)
    assert np.all(th.error["var"] == 0)


def test_sin_at_three_layers_against_the_exact_law():
    """sin, L = 3, n_1 = 4, n_2 = 6: the exact E G, Var G, kappa_3(G) at finite width from E exp(-s G^(2)) =
    exp(-s C_b) M_Y(-s C_W/n_1)^(n_1) (Y = sin^2 of a Gaussian; every average of sin is a polynomial in exp(-2G)). The
    closure is within its own error estimate (the change from M = 5 to 6 nodes), and that estimate is small."""
    n1, n2 = 4, 6
    C_W, C_b = (1.7, 2.3, 1.9), (0.3, 0.2, 0.4)
    x = np.array([0.9, -1.3])
    th = all_orders(pdlt.MLP("sin", (2, n1, n2, 1), C_W=C_W, C_b=C_b), x, M=6)
    mpmath.mp.dps = 30
    K1 = mpmath.mpf(C_b[0]) + mpmath.mpf(C_W[0]) * mpmath.mpf(float(x @ x)) / 2
    sK = mpmath.sqrt(K1)

    def Phi(s):
        t = -s * mpmath.mpf(C_W[1]) / n1
        MY = mpmath.quad(lambda u: mpmath.exp(t * mpmath.sin(sK * u) ** 2) * mpmath.npdf(u), [-mpmath.inf, 0, mpmath.inf])
        return mpmath.exp(-s * mpmath.mpf(C_b[1])) * MY**n1

    q = sp.Symbol("q")
    cache = {}

    def E(poly):
        poly = sp.Poly(sp.expand(poly), q)
        total = mpmath.mpf(0)
        for mon, c in zip(poly.monoms(), poly.coeffs()):
            k = 2 * mon[0]
            if k not in cache:
                cache[k] = Phi(k)
            total += mpmath.mpf(str(c)) * cache[k]
        return total

    g = (1 - q) / 2
    s4 = (3 - 4 * q + q**4) / 8
    v = s4 - g**2
    w = (10 - 15 * q + 6 * q**4 - q**9) / 32 - 3 * s4 * g + 2 * g**3
    cw, cb = mpmath.mpf(C_W[2]), mpmath.mpf(C_b[2])
    Eg, Ev, Egg = E(g), E(v), E(g * g)
    mean = cb + cw * Eg
    var = cw**2 * Ev / n2 + cw**2 * (Egg - Eg**2)
    k3 = cw**3 * E(w) / n2**2 + 3 * cw**3 * (E(g * v) - Eg * Ev) / n2 + cw**3 * (E(g**3) - 3 * Egg * Eg + 2 * Eg**3)
    # measured: |closure - exact| = 0.01, 0.1, 0.18 of the estimate for mean, var, kappa_3 (8e-3 relative for kappa_3
    # at n_1 = 4: the law of G is far from Gaussian there)
    for key, exact in (("mean", mean), ("var", var), ("kappa3", k3)):
        got, err = getattr(th, key)[2], th.error[key][2]
        assert abs(got - float(exact)) <= err, (key, got, float(exact), err)
        assert err < 1e-2 * abs(float(exact)), key            # the estimate is small: the comparison resolves
    assert th.error["var"][2] > 0


def test_against_monte_carlo_of_the_chain_and_perturbation_theory():
    """tanh at criticality, n = 10, L = 6 (L/n = 0.6): the kurtosis of one neuron from 4 x 10^5 simulated metric chains
    (batch means over 40 batches) agrees with the closure (|z| < 5) and rejects the order-1/n value; at n = 2000 the
    closure equals the 1/n^2 theory up to the order-1/n^3 remainder."""
    n, L = 10, 6
    net = pdlt.MLP("tanh", (1,) + (n,) * L, C_W=1.0)
    th = all_orders(net, [1.0], M=8)
    rng = np.random.default_rng(7)
    N, B = 400_000, 40
    G = np.full(N, 1.0)
    for _ in range(1, L):
        G = (np.tanh(np.sqrt(G)[:, None] * rng.standard_normal((N, n))) ** 2).mean(axis=1)
    # kurtosis 3 Var G/(E G)^2 by batch means of (G, G^2)
    Gb = G.reshape(B, -1)
    m1, m2 = Gb.mean(1), (Gb**2).mean(1)
    kb = 3 * (m2 - m1**2) / m1**2                              # per-batch plug-in (bias O(1/batch size) << SE)
    mc, se = kb.mean(), kb.std(ddof=1) / math.sqrt(B)
    assert abs(th.kurtosis(L) - mc) < 5 * se
    assert abs(nnlo(net, [1.0]).kurtosis(L, order=1) - mc) > 5 * se      # the order-1/n prediction is rejected
    wide = pdlt.MLP("tanh", (1,) + (2000,) * 4, C_W=1.0)
    big, pt = all_orders(wide, [1.0]), nnlo(wide, [1.0])
    for l in (3, 4):
        assert big.mean[l - 1] == pytest.approx(pt.second_moment(l), rel=1e-9)
        assert big.var[l - 1] == pytest.approx(pt.metric_variance(l), rel=1e-6)      # O(1/n) relative remainder


def test_bad_input():
    net = pdlt.MLP("tanh", (1, 8, 8))
    for bad in (1, 2, 13, 2.5, True):       # (M = 2: its error estimate at M - 1 = 1 has no third cumulant)
        with pytest.raises(pdlt.ParameterError) as err:
            all_orders(net, [1.0], M=bad)
        assert err.value.setting == "M"
    with pytest.raises(pdlt.ParameterError) as err:
        all_orders(net, [[1.0], [2.0]])
    assert err.value.setting == "x"
    with pytest.raises(pdlt.ParameterError) as err:
        all_orders(pdlt.MLP("relu", (1, 8, 8, 8), gamma=0.5), [1.0])
    assert err.value.setting == "gamma"


def test_gauss_rule_newton_nodes_against_gauss_hermite_and_the_eigen_solver():
    """The 8-node rule of the standard normal's moments is the Gauss-Hermite rule (numpy's, an independent algorithm);
    the Newton-polished nodes equal mpmath's eigenvalues of the same Jacobi matrix to 1e-40; a law whose nodes
    span 18 orders of magnitude (a lognormal's moments) still gives distinct roots whose weights reproduce all 16
    moments."""
    from decimal import Decimal

    from pdlt.theory.metric_closure import _context, _gauss_rule, _nodes, _nodes_mpmath, _recurrence

    with _context():
        mu = [Decimal(0) if k % 2 else Decimal(math.prod(range(k - 1, 0, -2))) for k in range(16)]
        y, w = _gauss_rule(mu)
        ref_y, ref_w = np.polynomial.hermite_e.hermegauss(8)
        np.testing.assert_allclose([float(v) for v in y], ref_y, rtol=0, atol=1e-13)
        np.testing.assert_allclose([float(v) for v in w], ref_w / math.sqrt(2 * math.pi), rtol=1e-12)
        alpha, beta = _recurrence(mu)
        assert max(abs(a - b) for a, b in zip(_nodes(alpha, beta), _nodes_mpmath(alpha, beta))) < Decimal("1e-40")
        mu = [(Decimal(k * k) / 2 * 3).exp() for k in range(16)]          # lognormal moments, log-variance 3
        y = _nodes(*_recurrence(mu))
        assert y is not None and y[-1] / y[0] > Decimal("1e17")           # the Newton path, not the fallback
        y, w = _gauss_rule(mu)
        assert len(y) == 8 and all(b > a for a, b in zip(y, y[1:]))
        for k in range(16):
            assert abs(sum(wi * yi**k for wi, yi in zip(w, y)) / mu[k] - 1) < Decimal("1e-30")


@pytest.mark.parametrize("name, G", [("tanh", 0.3), ("gelu", 3.5), ("gelu", 1e7), ("Max(z, 0) + tanh(z)", 2.0)])
def test_node_averages_against_mpmath(name, G):
    """<sigma^(2k)>_G (k = 1, 8, 16) on the closure's Gauss-Legendre panels against mpmath quadrature (30 digits): the
    high powers put their mass at 5-6 standard deviations, at G = 1e7 GELU varies on a 3e-4 scale in w, and a kink
    sits on a panel edge."""
    from pdlt.theory.metric_closure import _power_averages

    f = {"tanh": mpmath.tanh, "gelu": lambda z: z * mpmath.ncdf(z),
         "Max(z, 0) + tanh(z)": lambda z: max(z, 0) + mpmath.tanh(z)}[name]
    val, m = _power_averages(pdlt.activation(name), np.array([G]), 16)
    got = val[0] * m[0] ** np.arange(1, 17)
    with mpmath.workdps(30):
        r = mpmath.sqrt(G)
        cuts = [-mpmath.inf, -3, 3, mpmath.inf] + [mpmath.mpf(c) / r for c in (-5, -1, 0, 1, 5)]
        for k in (1, 8, 16):
            ref = mpmath.quad(lambda w: f(r * w) ** (2 * k) * mpmath.npdf(w), sorted(set(cuts)))
            assert got[k - 1] == pytest.approx(float(ref), rel=1e-13)


def test_huge_kernel_of_the_exact_class():
    """ReLU at criticality with K ~ 1e20: the node moments are exact decimal polynomials (no float64 overflow of
    G^16), so the chain stays exact: the kurtosis is 3 (prod (1 + 5/n) - 1)."""
    th = all_orders(pdlt.MLP("relu", (1, 4, 4, 4, 4), C_W=2.0), [1e10])
    assert th.kurtosis(4) == pytest.approx(3 * ((1 + 5 / 4) ** 3 - 1), rel=1e-12)
    with pytest.raises(pdlt.ParameterError) as err:
        all_orders(pdlt.MLP("tanh", (1, 8, 8, 8)), [0.0]).kurtosis(3)
    assert err.value.setting == "x"


def test_unconverged_closure_is_flagged():
    """tanh, n = 8, L = 12: with M = 4 nodes the error estimate passes 1 % of Var G (a warning naming the layer and
    M); with M = 8 it stays below and nothing is said."""
    import warnings

    net = pdlt.MLP("tanh", (1,) + (8,) * 12, C_W=1.0)
    with pytest.warns(pdlt.TruncationWarning, match="M = 4"):
        th = all_orders(net, [1.0], M=4)
    l = th.caveats[0].layer
    assert th.error["var"][l - 1] > 0.01 * th.var[l - 1] and np.all(th.error["var"][: l - 1] <= 0.01 * th.var[: l - 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", pdlt.TruncationWarning)
        assert all_orders(net, [1.0], M=8).caveats == ()


@pytest.mark.parametrize("expr, a, G", [("sin", 1, 100.0), ("sin", 1, 1e4), ("sin", 1, 1e6), ("sin(5*z)", 5, 1.0),
                                         ("sin(5*z)", 5, 3.0)])
def test_oscillating_activation(expr, a, G):
    """sin(a z): not affine beyond |z| = 30, so every panel is refined until two rules agree; <sin(a z)^(2k)>, k <= 16,
    equals the exact 4^-k [C(2k, k) + 2 sum_j (-1)^j C(2k, k - j) exp(-2 j^2 a^2 G)] to 1e-13, both where the Gaussian
    spans many periods (G up to 1e6) and where sigma^32 oscillates on a 0.04 scale in z (sin(5 z))."""
    from pdlt.theory.metric_closure import _power_averages

    val, m = _power_averages(pdlt.activation(expr), np.array([G]), 16)
    got = val[0] * m[0] ** np.arange(1, 17)
    exact = [(math.comb(2 * k, k) + 2 * sum((-1) ** j * math.comb(2 * k, k - j) * math.exp(-2 * j * j * a * a * G)
                                            for j in range(1, k + 1))) / 4**k for k in range(1, 17)]
    np.testing.assert_allclose(got, exact, rtol=1e-13)


def test_extreme_scales():
    """A tiny input: tanh acts linearly, so the kurtosis is the deep-linear 3 (prod (1 + 2/n) - 1) (formed before
    rounding: Var G ~ 1e-320 is below float64's normal range); GELU at M = 12 (sigma^48 peaks at 7 standard
    deviations)."""
    th = all_orders(pdlt.MLP("tanh", (1,) + (8,) * 10, C_W=1.0), [1e-80])
    assert th.kurtosis(10) == pytest.approx(3 * (1.25**9 - 1), rel=1e-9)
    crit = pdlt.criticality("gelu")
    assert all_orders(pdlt.MLP("gelu", (1, 8, 8, 8), C_W=crit.C_W, C_b=crit.C_b), [1.0], M=12).kurtosis(3) > 0


@pytest.mark.slow     # 2 s (suite time): 140- and 1000-layer 50-digit chains
def test_heavy_tails_beyond_float64():
    """Chains so heavy-tailed that the Jacobi matrix leaves float64's range give a value (the 50-digit eigensolver)
    or a DivergentFlowError, never a raw scipy error."""
    assert all_orders(pdlt.MLP("relu", (1,) + (2,) * 140, C_W=2.0), [1.0]).kurtosis(5) == pytest.approx(
        3 * (3.5**4 - 1), rel=1e-12)
    with pytest.raises(pdlt.DivergentFlowError):
        all_orders(pdlt.MLP("linear", (1,) + (2,) * 1000), [1.0])


def test_deterministic_metric():
    """sign(z): sigma^2 = 1, so G = C_b + C_W exactly at every layer above the first: the variance is 0 (not a
    rounding residue of -1e-17) and so is the kurtosis."""
    from pdlt.activations import Z

    th = all_orders(pdlt.MLP(sp.sign(Z), (1, 8, 8, 8), C_W=1.5, C_b=0.1), [1.0])
    assert th.mean[1:] == pytest.approx([1.6, 1.6], rel=1e-14) and np.all(th.var == 0.0) and th.kurtosis(3) == 0.0

"""The 1/n^2 statistics of one input (pdlt.theory.nnlo) against independent results: the exact finite-width moments of
scale-invariant networks (the metric is an affine chain of independent sums: its moments are polynomials in 1/n,
expanded exactly in sympy), the order-1/n recursions of finite_width, the layer-2 values from mpmath averages, the
Hermite form of the K-derivatives in mpmath, and the K*=0 large-depth limits derived in derivations/README.md
section 13."""

import math
import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.theory.nnlo import nnlo, nnlo_averages


def _exact_moments(slopes, rho, C_W, C_b, K1):
    """Exact mean, variance and third cumulant of the metric G^(l) of a scale-invariant network as polynomials in
    eps = 1/N (hidden widths n_l = rho_l N): G^(l+1) = C_b + C_W G^(l) S_l / n_l with S_l = sum_j sigma(xi_j)^2, whose
    cumulants are n_l times those of sigma(xi)^2 (sigma(sqrt(G) xi)^2 = G sigma(xi)^2)."""
    eps = sp.Symbol("eps", positive=True)
    ap, am = (sp.nsimplify(v) for v in slopes)
    A = {p: (ap**p + am**p) * sp.factorial2(p - 1) / 2 for p in (2, 4, 6)}
    m, k2, k3 = A[2], A[4] - A[2] ** 2, A[6] - 3 * A[4] * A[2] + 2 * A[2] ** 3
    EG = [sp.Integer(1), sp.nsimplify(K1), sp.nsimplify(K1) ** 2, sp.nsimplify(K1) ** 3]
    out = [(EG[1], sp.Integer(0), sp.Integer(0))]
    for l, r_ in enumerate(rho):
        n = sp.nsimplify(r_) / eps
        cw, cb = sp.nsimplify(C_W[l + 1]), sp.nsimplify(C_b[l + 1])
        ES = [sp.Integer(1), n * m, n * k2 + n**2 * m**2, n * k3 + 3 * n**2 * k2 * m + n**3 * m**3]
        EG = [sp.expand(sum(sp.binomial(k, j) * cb ** (k - j) * (cw / n) ** j * EG[j] * ES[j] for j in range(k + 1)))
              for k in range(4)]
        mean, var = EG[1], sp.expand(EG[2] - EG[1] ** 2)
        out.append((mean, var, sp.expand(EG[3] - 3 * EG[2] * EG[1] + 2 * EG[1] ** 3)))
    return eps, out


@pytest.mark.parametrize("name, slopes", [("relu", (1.0, 0.0)), ("leaky_relu(0.2)", (1.0, 0.2)), ("linear", (1.0, 1.0))])
def test_scale_invariant_networks_exactly(name, slopes):
    """Non-uniform widths, per-layer C_W and C_b (bias on): every coefficient of 1/n and 1/n^2 of E G, Var G and
    kappa_3(G) equals the exact expansion (and kappa_3 has no 1/n term)."""
    rho = (2, 1, 3, 1)                                     # n_1..n_4 in units of N
    N = 10
    C_W = (1.3, 1.7, 2.1, 1.2, 1.9)
    C_b = (0.2, 0.1, 0.0, 0.3, 0.25)
    x = np.array([0.8, -0.5, 1.1])
    net = pdlt.MLP(name, (3,) + tuple(r * N for r in rho) + (1,), C_W=C_W, C_b=C_b)
    th = nnlo(net, x)
    K1 = C_b[0] + C_W[0] * float(x @ x) / 3
    eps, exact = _exact_moments(slopes, rho, C_W, C_b, K1)
    for l in range(2, net.L + 1):
        mean, var, k3 = exact[l - 1]
        rn = rho[l - 2]                                    # n_{l-1} = rn / eps
        co = lambda e, k: float(sp.expand(e).coeff(eps, k))
        got = {"K": th.K[l - 1], "G1": th.G1[l - 1], "G2": th.G2[l - 1], "V": th.V[l - 1], "V1": th.V1[l - 1],
               "U": th.U[l - 1]}
        want = {"K": co(mean, 0), "G1": rn * co(mean, 1), "G2": rn**2 * co(mean, 2), "V": rn * co(var, 1),
                "V1": rn**2 * co(var, 2), "U": rn**2 * co(k3, 2)}
        assert co(var, 0) == 0 and co(k3, 0) == 0 and co(k3, 1) == 0
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-13), (k, l)
    assert abs(th.V1[-1]) > 1e-2 and abs(th.U[-1]) > 1e-2      # the comparison is not vacuous


@pytest.mark.parametrize("act", ["tanh", "sin"])
def test_order_one_terms_equal_finite_width(act):
    net = pdlt.MLP(act, (2, 12, 24, 12, 12, 1), C_W=[1.4, 1.1, 0.9, 1.2, 1.0], C_b=[0.1, 0.0, 0.2, 0.05, 0.1])
    x = np.array([0.7, -0.9])
    th, fw = nnlo(net, x), pdlt.finite_width(net, x)
    np.testing.assert_allclose(th.G1, fw.G1[:, 0, 0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(th.V, fw.V[:, 0, 0, 0, 0], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("act", ["tanh", pytest.param("gelu", marks=pytest.mark.slow),
                                 pytest.param("swish", marks=pytest.mark.slow)])
def test_averages_against_hermite_form_in_mpmath(act):
    """The heat-equation derivatives <(s^2)^(2k)>/2^k (sympy forms, float quadrature) against the Hermite form
    d^k/dK^k <f>_K = <f He_2k(z/sqrt K)>/(2K)^k evaluated by mpmath quadrature (another identity, another rule)."""
    a = pdlt.activation(act)
    K = 0.7
    got = nnlo_averages(a, np.array([K]))
    f0 = a.mp[0]
    mpmath.mp.dps = 30
    sK = mpmath.sqrt(K)

    def avg(fn):
        return mpmath.quad(lambda t: fn(sK * t) * mpmath.npdf(t), [-mpmath.inf, -3, 0, 3, mpmath.inf])

    def He(n, t):
        return mpmath.hermite(n, t / mpmath.sqrt(2)) / mpmath.mpf(2) ** (mpmath.mpf(n) / 2)

    def dK(p, k):
        return avg(lambda z: f0(z) ** p * He(2 * k, z / sK)) / (2 * K) ** k

    g = [dK(2, k) for k in range(5)]
    q = [dK(4, k) for k in range(3)]
    s6 = avg(lambda z: f0(z) ** 6)
    want = {"g": g[0], "g1": g[1], "g2": g[2], "g3": g[3], "g4": g[4], "v": q[0] - g[0] ** 2,
            "v1": q[1] - 2 * g[0] * g[1], "v2": q[2] - 2 * g[1] ** 2 - 2 * g[0] * g[2],
            "w": s6 - 3 * q[0] * g[0] + 2 * g[0] ** 3}
    for k, v in want.items():
        assert float(got[k][0]) == pytest.approx(float(v), rel=1e-10, abs=1e-12), k


def test_layer_two_is_exact():
    """Layer 2 (one hidden layer): G1 = G2 = V1 = 0, V = C_W^2 Var(s^2), U = C_W^3 kappa_3(s^2) at K1, the latter
    from mpmath averages."""
    net = pdlt.MLP("tanh", (2, 8, 8), C_W=1.6, C_b=0.2)
    x = np.array([1.1, 0.4])
    th = nnlo(net, x)
    K1 = 0.2 + 1.6 * float(x @ x) / 2
    m = [float(v) for v in pdlt.gaussian.moments_1d_mp(pdlt.activation("tanh"), K1, ((2, 0, 0), (4, 0, 0), (6, 0, 0)))]
    assert th.G1[1] == th.G2[1] == th.V1[1] == 0
    assert th.V[1] == pytest.approx(1.6**2 * (m[1] - m[0] ** 2), rel=1e-11)
    assert th.U[1] == pytest.approx(1.6**3 * (m[2] - 3 * m[1] * m[0] + 2 * m[0] ** 3), rel=1e-10)


@pytest.mark.slow   # derivations/nnlo.py checks the same limits at l = 1000 (3e-3) in the default suite
def test_k_star_zero_large_depth_limits():
    """tanh at criticality (C_W = 1, C_b = 0, equal widths): G2 -> K l^2/15, V1 -> -(14/45) K^2 l^2, U -> (16/15) K^3
    l^2 (derived analytically, derivations/README.md section 13), with G1/(K l) -> -1/3 and V/(K^2 l) -> 2/3.
    Richardson in 1/l from l = 1500 and 3000 removes the 1/l corrections; the log(l)/l ones survive (4e-4 measured),
    inside the bound 1e-3."""
    L = 3000
    net = pdlt.MLP("tanh", (1,) + (100,) * L, C_W=1.0, C_b=0.0)
    th = nnlo(net, [1.0])
    ratios = {"G1": (th.G1 / (th.K * np.arange(1, L + 1)), -1 / 3),
              "V": (th.V / (th.K**2 * np.arange(1, L + 1)), 2 / 3),
              "G2": (th.G2 / (th.K * np.arange(1, L + 1) ** 2), 1 / 15),
              "V1": (th.V1 / (th.K**2 * np.arange(1, L + 1) ** 2), -14 / 45),
              "U": (th.U / (th.K**3 * np.arange(1, L + 1) ** 2), 16 / 15)}
    for name, (arr, limit) in ratios.items():
        extrapolated = 2 * arr[L - 1] - arr[L // 2 - 1]
        assert extrapolated == pytest.approx(limit, rel=1e-3), name


def test_observables_and_bad_input():
    net = pdlt.MLP("relu", (1, 16, 16, 16, 1), C_W=2.0)
    th = nnlo(net, [1.0])
    l, n = 4, 16
    # ReLU exact: E[z^2] = K (G1 = G2 = 0), kurtosis to O(1/n^2) from the exact product (1 + 5/n)^(l-2)... - 1
    assert th.second_moment(l) == th.K[l - 1]
    exact_kurt = 3 * ((1 + 5 / n) ** (l - 1) - 1)            # 3 Var G/(E G)^2 = 3 (prod E[S^2]/E[S]^2 - 1)
    first = 3 * 5 * (l - 1) / n
    second = 3 * (5 / n) ** 2 * math.comb(l - 1, 2)
    assert th.kurtosis(l, order=1) == pytest.approx(first, rel=1e-12)
    assert th.kurtosis(l, order=2) == pytest.approx(first + second, rel=1e-12)
    assert abs(th.kurtosis(l) - exact_kurt) < abs(th.kurtosis(l, order=1) - exact_kurt) / 5   # the next order helps
    assert th.metric_cumulant3(l) == pytest.approx(th.U[l - 1] / n**2)
    with pytest.raises(pdlt.ParameterError) as err:
        nnlo(net, [[1.0], [0.5]])
    assert err.value.setting == "x"
    with pytest.raises(pdlt.ParameterError) as err:
        nnlo(pdlt.MLP("relu", (1, 8, 8, 8), gamma=0.5), [[1.0], [0.5]])     # one input has the residual chain
    assert err.value.setting == "gamma"
    hard = pdlt.Activation.from_sympy(sp.Piecewise((-1, sp.Symbol("z", real=True) < -1),
                                                   (sp.Symbol("z", real=True), sp.Symbol("z", real=True) < 1),
                                                   (1, True)))
    with pytest.raises(pdlt.ParameterError) as err:
        nnlo(pdlt.MLP(hard, (1, 8, 8, 8)), [1.0])
    assert err.value.setting == "activation"
    with pytest.raises(pdlt.ParameterError) as err:
        th.kurtosis(2, order=3)
    assert err.value.setting == "order"
    with pytest.raises(pdlt.DivergentFlowError):
        nnlo(pdlt.MLP("linear", (1,) + (4,) * 400, C_W=30.0), [1.0])


def test_sin_at_three_layers_exactly():
    """sin, L = 3, bias and unequal widths: every 1/n and 1/n^2 coefficient of E G, Var G and kappa_3(G) at layer 3
    from an exact calculation that uses no Taylor expansion in G. For sin every Gaussian average is a polynomial in
    q = exp(-2G) (<sin^2> = (1 - q)/2, <sin^4> = (3 - 4q + q^4)/8, <sin^6> = (10 - 15q + 6q^4 - q^9)/32), so the
    law of total cumulance needs only E[exp(-s G^(2))], and G^(2) = C_b + (C_W/n_1) sum_j Y_j (Y = sin^2 of a
    Gaussian) has E[exp(-s G)] = exp(-s C_b + n_1 log E[exp(-s C_W Y/n_1)]), a cumulant series in 1/n_1 with the
    exact cumulants of Y. This exercises the p2, p3 and p4 terms that the scale-invariant check cannot."""
    eps, q = sp.symbols("eps q", positive=True)
    n0, N, rho = 2, 10, 2                                   # n_1 = N, n_2 = rho N
    C_W, C_b = (1.7, 2.3, 1.9), (0.3, 0.2, 0.4)
    x = np.array([0.9, -1.3])
    net = pdlt.MLP("sin", (n0, N, rho * N, 1), C_W=C_W, C_b=C_b)
    th = nnlo(net, x)
    F = lambda v: sp.Float(v, 40)
    K1 = F(C_b[0]) + F(C_W[0]) * F(float(x @ x)) / n0
    e = lambda k: sp.exp(-k * K1)
    EY = [F(1), (1 - e(2)) / 2, (3 - 4 * e(2) + e(8)) / 8, (10 - 15 * e(2) + 6 * e(8) - e(18)) / 32]
    k1, k2, k3 = EY[1], EY[2] - EY[1] ** 2, EY[3] - 3 * EY[2] * EY[1] + 2 * EY[1] ** 3

    def Phi(s):                                              # E[exp(-s G^(2))] to eps^2, eps = 1/n_1
        a = s * F(C_W[1])
        return sp.exp(-s * F(C_b[1]) - a * k1) * sp.series(sp.exp(a**2 * k2 * eps / 2 - a**3 * k3 * eps**2 / 6), eps,
                                                           0, 3).removeO()

    def E(poly):                                             # E[poly(q)], q = exp(-2 G^(2))
        poly = sp.Poly(sp.expand(poly), q)
        return sp.expand(sum(c * Phi(2 * m[0]) for m, c in zip(poly.monoms(), poly.coeffs())))

    g = (1 - q) / 2
    s4 = (3 - 4 * q + q**4) / 8
    v = s4 - g**2
    w = (10 - 15 * q + 6 * q**4 - q**9) / 32 - 3 * s4 * g + 2 * g**3
    cw, cb = F(C_W[2]), F(C_b[2])
    h2 = eps / rho                                           # 1/n_2
    Eg, Ev = E(g), E(v)
    mean = cb + cw * Eg
    var = cw**2 * h2 * Ev + cw**2 * (E(g * g) - Eg**2)
    k3G = (cw**3 * h2**2 * E(w) + 3 * cw**3 * h2 * (E(g * v) - Eg * Ev)
           + cw**3 * (E(g**3) - 3 * E(g * g) * Eg + 2 * Eg**3))
    co = lambda expr, k: float(sp.expand(sp.series(expr, eps, 0, 3).removeO()).coeff(eps, k))
    # theory at layer 3 is normalized by n_2 = rho / eps
    want = {"K": co(mean, 0), "G1": rho * co(mean, 1), "G2": rho**2 * co(mean, 2), "V": rho * co(var, 1),
            "V1": rho**2 * co(var, 2), "U": rho**2 * co(k3G, 2)}
    assert abs(co(var, 0)) < 1e-25 and abs(co(k3G, 0)) < 1e-25 and abs(co(k3G, 1)) < 1e-25
    for k, val in want.items():
        assert getattr(th, k)[2] == pytest.approx(val, rel=1e-11, abs=1e-14), k
    assert min(abs(th.G2[2]), abs(th.V1[2]), abs(th.U[2])) > 1e-3       # not vacuous


def test_large_kernels_and_degenerate_inputs():
    """Averages at large K keep their z-resolution (the trapezoid grows with sqrt K): tanh at K ~ 100..1e4 against
    gaussian.moments_1d_mp (an independent mpmath rule); a zero metric has no kurtosis (an error, not NaN); the symbolic
    recursions refuse kinked activations that are not scale-invariant."""
    a = pdlt.activation("tanh")
    K = np.array([100.0, 1e3, 1e4])
    got = nnlo_averages(a, K)
    for i, k in enumerate(K):
        m = [float(v) for v in pdlt.gaussian.moments_1d_mp(a, k, ((2, 0, 0), (4, 0, 0), (6, 0, 0)))]
        assert got["g"][i] == pytest.approx(m[0], rel=1e-12)
        assert got["v"][i] == pytest.approx(m[1] - m[0] ** 2, rel=1e-10)
        assert got["w"][i] == pytest.approx(m[2] - 3 * m[1] * m[0] + 2 * m[0] ** 3, rel=1e-9)
    # the first K-derivative against a central difference of the mpmath <tanh^2>
    k, dk = 1e3, 1.0
    fd = (float(pdlt.gaussian.moments_1d_mp(a, k + dk, ((2, 0, 0),))[0])
          - float(pdlt.gaussian.moments_1d_mp(a, k - dk, ((2, 0, 0),))[0])) / (2 * dk)
    assert got["g1"][1] == pytest.approx(fd, rel=1e-5)
    th = nnlo(pdlt.MLP("tanh", (1, 8, 8, 8), C_b=0.0), [0.0])
    with pytest.raises(pdlt.ParameterError) as err:
        th.kurtosis(3)
    assert err.value.setting == "x"
    hard = pdlt.Activation.from_sympy(sp.Piecewise((-1, sp.Symbol("z", real=True) < -1),
                                                   (sp.Symbol("z", real=True), sp.Symbol("z", real=True) < 1),
                                                   (1, True)))
    from pdlt.symbolic.nnlo import nnlo_recursions

    with pytest.raises(pdlt.ParameterError):
        nnlo_recursions(hard)


def test_uncontrolled_series_is_flagged():
    """ReLU, n = 4: |V1|/(n V) = (l - 2) 5/(2n) (from the exact product 3 (prod (1 + 5/n) - 1)), 0.625 > 0.5 at l = 3,
    so nnlo warns there; at n = 64, L = 6 it stays silent."""
    with pytest.warns(pdlt.TruncationWarning, match="layer l = 3"):
        th = nnlo(pdlt.MLP("relu", (1,) + (4,) * 8, C_W=2.0), [1.0])
    assert th.caveats[0].layer == 3 and th.caveats[0].size == pytest.approx(5 / 8, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pdlt.TruncationWarning)
        assert nnlo(pdlt.MLP("relu", (1,) + (64,) * 6, C_W=2.0), [1.0]).caveats == ()


def test_truncation_error_contains_the_exact_relu_kurtosis():
    """ReLU at criticality, every layer l >= 3 where c < 1, n = 32 and 128: the truncation error of the 1/n^2
    kurtosis is its distance to the all-orders closure, here exact, so it equals |3 (prod (1 + 5/n) - 1) - prediction|;
    the exact value lies within the (larger) truncation error of the 1/n prediction."""
    from pdlt.theory.finite_width import FiniteWidth
    from pdlt.theory.truncation import next_order_factor

    for n in (32, 128):
        net = pdlt.MLP("relu", (1,) + (n,) * 12, C_W=2.0)
        th = nnlo(net, [1.0])
        fw = FiniteWidth(net, th.x, K=th.K[:, None, None], G1=th.G1[:, None, None], V=th.V[:, None, None, None, None],
                         caveats=())
        checked = 0
        for l in range(3, 13):
            if next_order_factor(fw, "kurtosis", l) >= 1:
                break
            exact = 3 * ((1 + 5 / n) ** (l - 1) - 1)
            e2, e1 = th.truncation_error("kurtosis", l), th.truncation_error("kurtosis", l, order=1)
            assert e2 == pytest.approx(abs(exact - th.kurtosis(l, order=2)), rel=1e-9) and e2 < e1
            assert abs(exact - th.kurtosis(l, order=1)) <= e1
            checked += 1
        assert checked >= 5
    for bad in ("vertex", ["kurtosis"], None):        # (a list was a raw TypeError: unhashable)
        with pytest.raises(pdlt.ParameterError) as err:
            th.truncation_error(bad, 3)
        assert err.value.setting == "quantity"


def test_order_two_error_needs_the_closure():
    """Where the all-orders closure cannot be computed (sigma = z + z^3/10 grows too fast for M = 8), the order-2
    error says so and names ``order``; order 1 still works."""
    th = nnlo(pdlt.MLP("z + z**3/10", (1, 8, 8, 8)), [1.0])
    with pytest.raises(pdlt.ParameterError) as err:
        th.truncation_error("kurtosis", 3)
    assert err.value.setting == "order" and "all-orders closure" in str(err.value)
    assert th.truncation_error("kurtosis", 3, order=1) > 0


def test_tiny_kernels_are_refused_not_underflowed():
    # U grows like K^3 and V1 like K^2: below K ~ 2^-300 they underflow (U = 0, kurtosis NaN from 0/0); every
    # entry point of the 1/n^2 theory and of the cumulant chains refuses there, naming the layer
    tanh = pdlt.MLP("tanh", (1, 8, 8, 8))
    calls = [lambda: nnlo(tanh, [1e-90]), lambda: nnlo(pdlt.MLP("tanh", (2, 8, 8, 8)), [[1e-90, 0.0], [0.0, 1.0]]),
             lambda: nnlo(pdlt.MLP("linear", (1, 8, 8, 8), gamma=0.5), [1e-90]),
             lambda: pdlt.ntk_nnlo(tanh, [[1e-90]], lambda_b=0.0),
             lambda: pdlt.relu_ntk_all_orders(pdlt.MLP("relu", (1, 8, 8, 8), C_W=2.0), [[1e-150]], lambda_b=0.0),
             lambda: pdlt.linear_all_orders(pdlt.MLP("linear", (1, 8, 8, 8)), [[1e-90]]),
             lambda: pdlt.ntk(pdlt.MLP("tanh", (2, 6, 6, 1), C_b=0.1), [[1, 0.5], [0.3, -1]], lambda_b=1e-110,
                              lambda_W=1e-110).statistics]
    for call in calls:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
            with pytest.raises(pdlt.VanishingFlowError, match="cube of the kernel") as err:
                call()
        assert err.value.layer == 1
    # a per-layer C_W that kills the kernel at layer 2
    with pytest.raises(pdlt.VanishingFlowError) as err:
        nnlo(pdlt.MLP("tanh", (1, 8, 8, 8), C_W=(1.0, 1e-300, 1.0)), [1.0])
    assert err.value.layer == 2
    # just above the range the statistics keep their digits: tanh at K ~ 1e-80 is a deep linear network, whose
    # kurtosis is 3 (prod_l (1 + 2/n_l) - 1) exactly (1.6875 at layer 3, n = 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        th = nnlo(tanh, [1e-40])
    assert th.kurtosis(3) == pytest.approx(3 * (1.25**2 - 1), rel=1e-12)
    assert th.U[2] > 0
    # the all-orders chain keeps its 50-digit ratios there and says that its cumulants underflow
    with pytest.warns(pdlt.errors.PdltWarning, match="below float64's normal range"):
        ao = pdlt.all_orders(tanh, [1e-90])
    assert [c.kind for c in ao.caveats] == ["range"] and ao.kurtosis(3) == pytest.approx(3 * (1.25**2 - 1), rel=1e-12)


def test_result_objects_check_their_indices():
    # layers and inputs are checked before they index (a raw IndexError/TypeError escaped metric_cumulant3 and the
    # NTK's next_order and layer; a = -1 was taken as the last input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        one = nnlo(pdlt.MLP("linear", (1, 8, 8, 8)), [1.0])
        two = nnlo(pdlt.MLP("linear", (2, 8, 8, 8)), [[1.0, 0.0], [0.5, 0.5]])
        st = pdlt.ntk_nnlo(pdlt.MLP("linear", (1, 8, 8, 8)), [[1.0]])
    for call, setting in [(lambda l: one.metric_cumulant3(l), "l"), (lambda l: two.metric_cumulant3(l), "l"),
                          (lambda l: st.next_order("A", l), "l"), (lambda l: st.layer(l), "l"),
                          (lambda a: st.layer(3, a), "a")]:
        for bad in ((4, 0, 1.0, "2", None) if setting == "l" else (1, -1, 1.0, "0", True)):
            with pytest.raises(pdlt.ParameterError) as err:
                call(bad)
            assert err.value.setting == setting, (call, bad)
    assert one.metric_cumulant3(3) == pytest.approx(one.U[2] / 64) and st.layer(3, 0)["Theta"] == st.Theta[2, 0]

"""Symbolic finite-width (order 1/n) single-input recursions: closed forms, exact deep-linear results,
K*=0 asymptotics, and agreement with an independent float64 iteration (pdlt.single_input + pdlt.expect)."""
import math

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt import symbolic as sym
from pdlt.symbolic import finite_width as fw

z = sp.Symbol("z", real=True)


# --------------------------------------------------------------------------- independent float iteration


def float_flow(name, K1, L, C_W=1.0, C_b=0.0, widths=None):
    """K, V, G1 for l = 1..L by float64 iteration of the single-input recursions (derivations/README.md sections 7, 8):
    K from pdlt.single_input(...).g, chi_par from pdlt.single_input, <s^4> and <s^2 He> from one vectorized
    pdlt.expect over w ~ N(0, 1) with z = sqrt(K) w (so <s^2 (z^4 - 6Kz^2 + 3K^2)> = K^2 <s(sqrt K w)^2 He_4(w)>)."""
    act = pdlt.activation(name)
    Ks = [float(K1)]
    for _ in range(L - 1):
        Ks.append(C_b + C_W * float(pdlt.single_input(act, Ks[-1]).g))
    K = np.array(Ks)
    si = pdlt.single_input(act, K, C_W)
    sK = np.sqrt(K)

    def f(w):
        w = w[..., 0]
        s = act(sK * w[..., None])
        he4 = w**4 - 6 * w**2 + 3
        return np.concatenate([s**4, s**2 * he4[..., None]], axis=-1)

    m = pdlt.expect(f, np.array([[1.0]]), kinks=act.kinks)
    s4, H = m[:L], m[L:]
    src_v = C_W**2 * (s4 - si.g**2)
    src_g = C_W * H / (8 * K**2)
    w_ = np.ones(L) if widths is None else np.asarray(widths, dtype=float)
    V, G = np.zeros(L), np.zeros(L)
    for i in range(L - 1):
        rr = w_[i + 1] / w_[i]
        V[i + 1] = src_v[i] + rr * si.chi_par[i] ** 2 * V[i]
        G[i + 1] = rr * (si.chi_par[i] * G[i] + src_g[i] * V[i])
    return K, V, G


# --------------------------------------------------------------------------- recursions and closed forms


def test_recursions_scale_invariant_explicit():
    Kl, Vl, G1l, CW, r = fw.K_l, fw.V_l, fw.G1_l, sym.C_W, fw.r
    assert sp.simplify(fw.vertex_recursion("linear").rhs - (2 * CW**2 * Kl**2 + r * CW**2 * Vl)) == 0
    assert sp.simplify(fw.vertex_recursion("relu").rhs - (sp.Rational(5, 4) * CW**2 * Kl**2 + r * CW**2 * Vl / 4)) == 0
    # G1 has no source for scale-invariant activations (g = A_2 K), and the Hermite form agrees
    for name in ("linear", "relu", "leaky_relu(0.3)"):
        assert fw.nlo_source(name) == 0
        assert sp.simplify(fw.nlo_kernel_recursion(name).rhs - r * CW * sym.critical_point(name)["A2"] * G1l) == 0
        assert abs(fw.evaluate(fw.nlo_source(name, hermite=True), {sym.K: 0.9, sym.C_W: 1.0})) < 1e-13


@pytest.mark.parametrize("name", ["relu", "leaky_relu(0.3)", "sin", pytest.param("erf", marks=pytest.mark.slow)])
def test_quartic_closed_forms_vs_mpmath(name):
    """<sigma^4>: closed form (erf: Price-theorem integral) vs mpmath quadrature of sigma^4 at 25 digits."""
    closed = fw.quartic_average(name, sym.K)
    plain = fw.quartic_average(name, sym.K, closed=False)
    assert isinstance(plain, sym.GaussianAverage)
    for Kv in (0.05, 0.7, 3.0):
        a = fw.evaluate(closed, {sym.K: Kv}, dps=25)
        b = float(plain.numeric({sym.K: Kv}, dps=25))
        assert a == pytest.approx(b, rel=1e-14, abs=1e-300)


def test_sin_and_erf_quartic_limits():
    assert sp.limit(fw.quartic_average("sin", sym.K), sym.K, sp.oo) == sp.Rational(3, 8)  # <sin^4> -> 3/8
    # erf^4 -> 1 as K -> oo: (24/pi^2) int_0^{pi/2} arcsin(sin t/(1 + 2 sin t)) dt = 1
    e = fw.quartic_average("erf", sym.K)
    integral = e.atoms(sp.Integral).pop()
    top = sp.Integral(integral.function, (integral.limits[0][0], 0, sp.pi / 2))  # arcsin(rho -> 1) = pi/2
    assert float(sp.N(24 / sp.pi**2 * top, 30)) == pytest.approx(1.0, abs=1e-25)
    # small K: <erf^4> = 3 sigma_1^4 K^2 + ..., sigma_1 = 2/sqrt(pi)
    Kv = 1e-4
    assert fw.evaluate(e, {sym.K: Kv}) / (3 * (2 / math.sqrt(math.pi)) ** 4 * Kv**2) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("name", ["erf", "sin", "gelu", "relu"])
def test_nlo_source_second_derivative_form(name):
    """(C_W/2) g''(K) == (C_W/(8K^4)) <s^2 (z^4 - 6Kz^2 + 3K^2)>_K (Gaussian integration by parts)."""
    a = fw.nlo_source(name)
    b = fw.nlo_source(name, hermite=True)
    assert not a.has(sym.GaussianAverage) and b.has(sym.GaussianAverage)
    for Kv in (0.3, 1.9):
        s = {sym.K: Kv, sym.C_W: 1.3}
        assert fw.evaluate(a, s) == pytest.approx(fw.evaluate(b, s, method="mpmath", dps=25), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name", ["tanh", "sin", "erf", "relu", pytest.param("gelu", marks=pytest.mark.slow)])
def test_symbolic_rhs_equals_float(name):
    """The sympy right-hand sides, evaluated, equal the float64 formulas used in float_flow."""
    Kv, Vv, Gv, rv, cw = 0.7, 0.31, -0.2, 1.5, 1.2
    sub = {fw.K_l: Kv, fw.V_l: Vv, fw.G1_l: Gv, fw.r: rv, sym.C_W: cw}
    act = pdlt.activation(name)
    si = pdlt.single_input(act, Kv, cw)
    s4 = float(pdlt.expect(lambda x: act(x[..., 0]) ** 4, np.array([[Kv]]), kinks=act.kinks))
    H = float(pdlt.expect(lambda x: act(x[..., 0]) ** 2 * (x[..., 0] ** 4 - 6 * Kv * x[..., 0] ** 2 + 3 * Kv**2),
                          np.array([[Kv]]), kinks=act.kinks))
    V_float = cw**2 * (s4 - float(si.g) ** 2) + rv * float(si.chi_par) ** 2 * Vv
    G_float = rv * (float(si.chi_par) * Gv + cw * H / (8 * Kv**4) * Vv)
    for method in ("quadrature", "mpmath"):
        assert fw.evaluate(fw.vertex_recursion(name).rhs, sub, method=method) == pytest.approx(V_float, rel=1e-11)
        assert fw.evaluate(fw.nlo_kernel_recursion(name).rhs, sub, method=method) == pytest.approx(
            G_float, rel=1e-10, abs=1e-13)


def test_iterated_symbolic_recursions_equal_float_flow():
    """Layer-by-layer evaluation of the sympy recursions == float_flow (tanh off criticality, non-uniform widths)."""
    widths = (3, 5, 8, 4, 6, 7)
    sy = fw.iterate_single_input("tanh", 0.8, widths, C_W=1.3, C_b=0.1)
    K, V, G = float_flow("tanh", 0.8, len(widths), C_W=1.3, C_b=0.1, widths=widths)
    np.testing.assert_allclose(sy["K"], K, rtol=1e-12)
    np.testing.assert_allclose(sy["V"], V, rtol=1e-10)
    np.testing.assert_allclose(sy["G1"], G, rtol=1e-9, atol=1e-14)
    assert G[1] == 0 and V[1] > 0  # G1^(2) = 0 exactly; V^(2) = C_W^2 (<s^4> - <s^2>^2)


# --------------------------------------------------------------------------- scale-invariant class


def test_nu_values():
    assert fw.scale_invariant_closed_forms("linear")["nu"] == 2
    assert fw.scale_invariant_closed_forms("relu")["nu"] == 5
    gen = fw.scale_invariant_closed_forms(None)
    a = sp.Symbol("a", real=True)
    leaky = gen["nu"].subs({sym.symbols.a_plus: 1, sym.symbols.a_minus: a})
    assert sp.simplify(leaky - (6 * (1 + a**4) / (1 + a**2) ** 2 - 1)) == 0
    A2, A4 = gen["A2"], gen["A4"]
    assert sp.simplify(gen["nu"] - (3 * A4 / A2**2 - 1)) == 0
    half = sp.Rational(1, 2)
    assert fw.scale_invariant_closed_forms("leaky_relu(0.5)")["nu"] == 6 * (1 + half**4) / (1 + half**2) ** 2 - 1


def test_scale_invariant_closed_forms():
    cf = fw.scale_invariant_closed_forms("relu")
    assert sp.simplify(cf["V_equal"] - 5 * (sym.ell - 1) * fw.K_1**2) == 0
    assert sp.simplify(cf["V_equal_any_CW"] - 5 * (sym.ell - 1) * fw.K_l**2) == 0
    assert cf["G1"] == 0
    # the non-uniform-width form solves the recursion exactly (symbolic widths n_0..n_5, any C_W, C_b = 0)
    L = 6
    ns = [sp.Symbol(f"m_{i}", positive=True) for i in range(L)]
    K1, CW = sp.Symbol("K_1", positive=True), sym.C_W
    rec = cf["vertex_recursion"].rhs
    Kl, V = K1, sp.S.Zero
    for l in range(1, L):  # V^(l) -> V^(l+1)
        V = rec.subs({fw.K_l: Kl, fw.V_l: V, fw.r: ns[l] / ns[l - 1]})
        Kl = CW * Kl / 2
        closed = cf["V_widths"].subs(sym.ell, l + 1).doit().subs({fw.n[i]: ns[i] for i in range(L)}).subs(fw.K_l, Kl)
        assert sp.simplify(V - closed) == 0, l


@pytest.mark.parametrize("name,C_W", [("relu", 2.0), ("relu", 1.7), ("leaky_relu(0.2)", None), ("linear", 1.0)])
def test_scale_invariant_closed_form_vs_float_iteration(name, C_W):
    act = pdlt.activation(name)
    C_W = 1 / act.A2 if C_W is None else C_W
    rng = np.random.default_rng(3)
    widths = rng.integers(2, 50, size=12)
    K, V, G = float_flow(name, 1.3, len(widths), C_W=C_W, widths=widths)
    cf = fw.scale_invariant_closed_forms(name)
    nu = float(cf["nu"])
    for l in range(1, len(widths) + 1):
        pred = nu * K[l - 1] ** 2 * widths[l - 1] * sum(1 / widths[k] for k in range(1, l)) if l > 1 else 0.0
        sympy_pred = cf["V_widths"].subs(sym.ell, l).doit().subs({fw.n[i]: int(widths[i]) for i in range(len(widths))})
        assert V[l - 1] == pytest.approx(pred, rel=1e-12, abs=1e-300)
        assert float(sympy_pred.subs(fw.K_l, K[l - 1])) == pytest.approx(pred, rel=1e-13, abs=1e-300)
    assert np.max(np.abs(G)) < 1e-12 * np.max(V)


# --------------------------------------------------------------------------- deep linear networks, exact


def test_deep_linear_exact_product_matches_V():
    """E[z^4] = 3 K^2 prod_{l'<l} (1 + 2/n_l') (PDLT eqs. 3.21-3.24, C_b = 0) expanded to O(1/n):
    E z^4 - 3(E z^2)^2 = 3 V^(l)/n_{l-1} with V from the symbolic recursion (per-layer C_W, non-uniform widths)."""
    L = 6
    eps = sp.Symbol("epsilon", positive=True)
    m = sp.symbols(f"m_0:{L}", positive=True)  # n_l = m_l / eps
    cws = sp.symbols(f"c_2:{L + 1}", positive=True)  # C_W of layers 2..L
    K1 = sp.Symbol("K_1", positive=True)
    rec = fw.vertex_recursion("linear").rhs
    grec = fw.nlo_kernel_recursion("linear").rhs
    Kl, V, G1 = K1, sp.S.Zero, sp.S.Zero
    for l in range(1, L):
        sub = {fw.K_l: Kl, fw.V_l: V, fw.G1_l: G1, sym.C_W: cws[l - 1], fw.r: m[l] / m[l - 1]}
        V, G1 = rec.subs(sub), grec.subs(sub)
        Kl = cws[l - 1] * Kl
        ez4 = 3 * Kl**2 * sp.prod([1 + 2 * eps / m[k] for k in range(1, l + 1)])
        first = sp.diff(ez4 - 3 * Kl**2, eps).subs(eps, 0)  # O(1/n) coefficient (E z^2 = K exactly)
        assert sp.simplify(first - 3 * V / m[l]) == 0, l
        assert G1 == 0


def test_deep_linear_with_biases_exact():
    """With biases: z^(l+1) | layer l ~ N(0, G^), G^ = C_b + (C_W/n_l) sum_j z_j^2, so M2 = E[G^^2] obeys
    M2' = C_b^2 + 2 C_b C_W K + C_W^2 (1 + 2/n_l) M2 exactly (E z^4 = 3 M2, E[z_1^2 z_2^2] = M2) and
    E z^2 = K exactly. Its O(1/n) part must be V/n_{l-1} = Var G^."""
    L = 6
    eps = sp.Symbol("epsilon", positive=True)
    m = sp.symbols(f"m_0:{L}", positive=True)
    cws = sp.symbols(f"c_2:{L + 1}", positive=True)
    cbs = sp.symbols(f"b_2:{L + 1}", positive=True)
    K1 = sp.Symbol("K_1", positive=True)
    rec = fw.vertex_recursion("linear").rhs
    Kl, M2, V = K1, K1**2, sp.S.Zero
    for l in range(1, L):
        cw, cb = cws[l - 1], cbs[l - 1]
        V = rec.subs({fw.K_l: Kl, fw.V_l: V, sym.C_W: cw, fw.r: m[l] / m[l - 1]})
        M2 = cb**2 + 2 * cb * cw * Kl + cw**2 * (1 + 2 * eps / m[l]) * M2
        Kl = cb + cw * Kl
        first = sp.diff(M2 - Kl**2, eps).subs(eps, 0)
        assert sp.expand(first - V / m[l]) == 0, l
        assert (M2 - Kl**2).subs(eps, 0).expand() == 0


# --------------------------------------------------------------------------- K*=0 class


def test_kstar0_generic_coefficients():
    e = fw.kstar0_expansion(in_a=True)
    a1 = sym.symbols.a_1
    assert e["p_V"] == 1 and e["p_G1"] == 0
    assert sp.simplify(e["c"] - 2 / (3 * a1**2)) == 0 and sp.simplify(e["h"] - 1 / (3 * a1)) == 0
    s1, s2, s3 = sym.symbols.sigma[:3]
    g = fw.kstar0_expansion()
    assert sp.simplify(g["a1"] - (s3 / s1 + sp.Rational(3, 4) * (s2 / s1) ** 2)) == 0
    assert sp.simplify(g["v3"] - (8 * s3 / s1 + 21 * (s2 / s1) ** 2)) == 0
    expected = {"tanh": (-2, sp.Rational(-1, 6)), "sin": (-1, sp.Rational(-1, 3)), "erf": (-2, sp.Rational(-1, 6))}
    for name, (a1v, h) in expected.items():
        k = fw.kstar0_expansion(name)
        assert (k["a1"], k["a2"]) == sym.taylor_a(name, 2)
        assert k["a1"] == a1v and k["h0"] == h
        A = fw.finite_width_asymptotics(name)
        assert A.leading["V_over_K2"] == 2 * sym.ell / 3 and A.leading["nu"] == sp.Rational(2, 3)
        assert sp.simplify(A.leading["G1_over_nK"] + sym.ell / (3 * sym.symbols.n)) == 0


def _kstar0_checks(name, L=3000):
    K, V, G = float_flow(name, 1.0, L)
    e = fw.kstar0_expansion(name)
    a1, a2, c1, c2, h0, h1 = (float(e[k]) for k in ("a1", "a2", "c1", "c2", "h0", "h1"))
    logc = 2 / 3 * (1 - a2 / a1**2)  # V/K^2 = (2/3) l + logc ln l + O(1)
    out = {}
    for l in (1000, L):
        k, v, gg = K[l - 1], V[l - 1], G[l - 1]
        out[l] = dict(K=k, ratio=v / (k**2 * l), G1=gg, resid=v / k**2 - 2 * l / 3 - logc * math.log(l),
                      c2=(v / k - c1) / k, h1=(gg - h0) / k)
    return out, dict(a1=a1, logc=logc, c2=c2, h0=h0, h1=h1)


@pytest.mark.parametrize("name", ["tanh", "sin"])
def test_kstar0_asymptotics_against_iteration(name):
    """Iterate to l = 3000 at criticality from K^(1) = 1 and compare with the derived asymptotics.

    Tolerances follow from the next orders: V/K^2 = (2/3) l + logc ln l + O(1) (the O(1) depends on K^(1)),
    so |V/(K^2 l) - 2/3| <= (|logc| ln l + 1)/l; V = c1 K + c2 K^2 + O(K^3) and G1 = h0 + h1 K + O(K^2 ln K)
    (the homogeneous solutions decay like K^4 and K^2), so the coefficient estimates c2, h1 carry O(K) and
    O(K ln K) errors; G1 - h0 - h1/(-a1 l) = O(ln l / l^2)."""
    out, c = _kstar0_checks(name)
    L = 3000
    o = out[L]
    assert abs(o["ratio"] - 2 / 3) < (abs(c["logc"]) * math.log(L) + 1) / L
    assert abs(out[L]["resid"] - out[1000]["resid"]) < 0.01  # the ln l coefficient to ~1%
    assert abs(o["c2"] - c["c2"]) < 6 * o["K"]
    assert abs(o["h1"] - c["h1"]) < 10 * o["K"] * abs(math.log(o["K"]))
    assert abs(o["G1"] - c["h0"] - c["h1"] / (-c["a1"] * L)) < 10 * math.log(L) / L**2
    if name == "tanh":  # derivations/README.md section 9: V/(K^2 l) = 0.6657, G1 = -0.1664 at l = 3000
        assert round(o["ratio"], 4) == 0.6657 and round(o["G1"], 4) == -0.1664
    else:
        assert round(o["G1"], 4) == -0.3326


def test_kstar0_general_taylor_with_even_coefficients():
    """sigma = tanh z + tanh(z)^2/2 has sigma_2 = 1, sigma_4 = -8 != 0 (a_1 = -5/4): the general c2, h1 formulas
    (with the sigma_2, sigma_4 terms) against the iteration. The next-order coefficient is large here (the
    estimate of c2 at depth l is c2 + ~95 K), so compare after a Richardson step in K between l = 1000 and 3000
    (error model: alpha K for V, beta K ln K for G1)."""
    act = pdlt.Activation.from_sympy(sp.tanh(z) + sp.tanh(z) ** 2 / 2, name="tanh_plus")
    e = fw.kstar0_expansion(act)
    assert (e["a1"], e["c2"], e["h1"]) == (sp.Rational(-5, 4), sp.Rational(182, 45), sp.Rational(-814, 225))
    K, V, G = float_flow(act, 1.0, 3000)
    ks = K[[999, 2999]]
    c2_est = (V[[999, 2999]] / ks - float(e["c1"])) / ks
    h1_est = (G[[999, 2999]] - float(e["h0"])) / ks
    assert abs(V[-1] / (K[-1] ** 2 * 3000) - 2 / 3) < 0.01
    c2_x = (c2_est[1] * ks[0] - c2_est[0] * ks[1]) / (ks[0] - ks[1])
    u = ks * np.log(ks)
    h1_x = (h1_est[1] * u[0] - h1_est[0] * u[1]) / (u[0] - u[1])
    assert abs(c2_x - float(e["c2"])) < 0.01 * abs(float(e["c2"]))
    assert abs(h1_x - float(e["h1"])) < 0.02 * abs(float(e["h1"]))


def test_finite_width_asymptotics_objects():
    A = fw.finite_width_asymptotics("tanh")
    assert A.universality == "K*=0" and A.leading["V"] == 1 / (6 * sym.ell) and A.leading["G1"] == sp.Rational(-1, 6)
    assert A.in_K["G1"] == sp.Rational(-1, 6) + sp.Rational(31, 18) * fw.K_l
    tex = A.latex()
    assert tex.startswith("\\begin{align}") and r"\frac{2 \ell}{3}" in tex and r"\log" in tex
    R = fw.finite_width_asymptotics("relu")
    assert R.exact and R.leading["nu"] == 5 and R.leading["G1"] == 0
    assert sp.simplify(R.leading["V"] - 5 * (sym.ell - 1) * fw.K_1**2) == 0
    assert fw.finite_width_asymptotics("gelu").leading == {}

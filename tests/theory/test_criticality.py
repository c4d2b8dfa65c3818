import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.verify import LITERATURE


def test_relu_linear_leaky():
    c = pdlt.criticality("relu")
    assert (c.universality, c.C_b, c.C_W, c.K_star) == ("scale-invariant", 0.0, 2.0, None)
    assert pdlt.criticality("linear").C_W == 1.0


@given(a=st.floats(-0.95, 0.95))
@settings(max_examples=10)
def test_leaky_relu_C_W(a):
    c = pdlt.criticality(pdlt.activation("leaky_relu", slope=a))
    assert c.C_W == pytest.approx(2 / (1 + a * a), rel=1e-14) and c.C_b == 0.0


@pytest.mark.parametrize("name,C_W,a1", [("tanh", 1.0, -2.0), ("sin", 1.0, -1.0), ("erf", math.pi / 4, -2.0)])
def test_K_star_zero_class(name, C_W, a1):
    c = pdlt.criticality(name)
    assert c.universality == "K*=0"
    assert c.C_b == 0.0 and c.K_star == 0.0
    assert c.C_W == pytest.approx(C_W, rel=1e-14)
    assert c.a1 == pytest.approx(a1) and c.exponents["p_perp"] == pytest.approx(1.0)
    # chi_par = 1 + 2 a_1 K + O(K^2), chi_perp = 1 + b_1 K + O(K^2): the O(K) coefficients, with the O(K^2)
    # remainder bounded by 100 K^2 (<= 2.5% of the linear term at K = 1e-4)
    K = np.array([1e-3, 1e-4])
    s = pdlt.single_input(name, K, c.C_W)
    assert np.all(np.abs(s.chi_par - (1 + 2 * a1 * K)) < 100 * K**2)
    assert np.all(np.abs(s.chi_perp - (1 + c.b1 * K)) < 100 * K**2)


@pytest.mark.parametrize("name", ["gelu", "swish", "silu"])
def test_half_stable_literature_values(name):
    c = pdlt.criticality(name)
    ref = LITERATURE["swish" if name == "silu" else name]
    assert c.universality == "half-stable"
    for key in ("K_star", "C_W", "C_b"):
        assert getattr(c, key) == pytest.approx(ref[key], abs=1e-6)
    s = pdlt.single_input(name, c.K_star, c.C_W)
    assert float(s.chi_par) == pytest.approx(1, abs=1e-9) and float(s.chi_perp) == pytest.approx(1, abs=1e-9)
    # K* is a fixed point of the map at (C_b, C_W)
    assert c.C_b + c.C_W * float(s.g) == pytest.approx(c.K_star, rel=1e-10)


def test_gelu_K_star_closed_form():
    assert pdlt.criticality("gelu").K_star == pytest.approx((3 + math.sqrt(17)) / 2, abs=1e-10)


def test_half_stable_side_of_attraction():
    """GELU: d chi_par/dK < 0, so near K* the flow Delta' = Delta + (chi_par'/2) Delta^2 attracts from above and
    repels from below (|Delta| = 0.05: the quadratic term dominates the cubic one)."""
    c = pdlt.criticality("gelu")
    assert c.dchi_par_dK < 0
    net = pdlt.MLP("gelu", (1,) + (1,) * 2000, C_W=c.C_W, C_b=c.C_b)
    for delta, attracted in ((0.05, True), (-0.05, False)):
        x = math.sqrt((c.K_star + delta - c.C_b) / c.C_W)
        K = pdlt.kernel_flow(net, np.array([[x]])).K[:, 0, 0]
        assert (abs(K[-1] - c.K_star) < abs(delta)) == attracted
        step = K[1] - K[0]
        assert step == pytest.approx(c.dchi_par_dK / 2 * delta**2, rel=0.1)


@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_no_critical_point_reported(name):
    c = pdlt.criticality(name)
    assert c.universality == "none" and not c.critical and c.C_W is None


def test_user_activation_same_as_registry():
    z = sp.Symbol("u", real=True)
    c = pdlt.criticality(pdlt.Activation.from_sympy(sp.tanh(z)))
    assert c.universality == "K*=0" and c.C_W == 1.0
    c2 = pdlt.criticality(pdlt.Activation.from_sympy(sp.Max(0, z) - sp.Rational(1, 4) * sp.Max(0, -z)))
    assert c2.universality == "scale-invariant" and c2.C_W == pytest.approx(2 / (1 + 1 / 16))


@pytest.mark.parametrize("K", [0.05, 0.7, 3.0])
def test_susceptibilities_closed_forms(K):
    """erf and sin have closed-form g; chi_par must be C_W g'(K), chi_perp C_W <sigma'^2>."""
    s = pdlt.single_input("erf", K, 1.3)
    gp = 2 / math.pi * 2 / (1 + 2 * K) ** 2 / math.sqrt(1 - (2 * K / (1 + 2 * K)) ** 2)
    assert float(s.chi_par) == pytest.approx(1.3 * gp, rel=1e-12)
    assert float(s.chi_perp) == pytest.approx(1.3 * 4 / math.pi / math.sqrt(1 + 4 * K), rel=1e-12)
    s = pdlt.single_input("sin", K, 0.8)
    assert float(s.chi_par) == pytest.approx(0.8 * math.exp(-2 * K), rel=1e-12)
    assert float(s.chi_perp) == pytest.approx(0.8 * math.exp(-K) * math.cosh(K), rel=1e-12)
    assert float(s.h) == pytest.approx(-0.8 * math.exp(-2 * K) / 2, rel=1e-10)


@pytest.mark.parametrize("name", ["tanh", "gelu", "swish", "softplus", "relu", "leaky_relu(0.3)"])
def test_derivative_identities_by_finite_differences(name):
    """chi_par = C_W dg/dK and h = (1/2) d chi_perp/dK and S' = dS/dK, checked by central differences."""
    K, e = 0.9, 1e-4
    s = pdlt.single_input(name, np.array([K - e, K, K + e]), 1.0)
    assert s.chi_par[1] == pytest.approx((s.g[2] - s.g[0]) / (2 * e), rel=1e-7, abs=1e-9)
    assert s.h[1] == pytest.approx((s.chi_perp[2] - s.chi_perp[0]) / (4 * e), rel=1e-6, abs=1e-8)
    assert s.dS[1] == pytest.approx((s.S[2] - s.S[0]) / (2 * e), rel=1e-6, abs=1e-8)


def test_single_input_at_zero_uses_limits():
    s = pdlt.single_input("tanh", 0.0, 1.0)
    s_small = pdlt.single_input("tanh", 1e-6, 1.0)
    # the functions are smooth in K with slopes |d/dK| <= 20 at K = 0 for tanh (the largest is dS, from the
    # 6th Taylor coefficient), so the K = 1e-6 values differ from the limits by <= 2e-5 plus round-off
    for f in ("g", "chi_par", "chi_perp", "h", "S", "dS"):
        assert float(getattr(s, f)) == pytest.approx(float(getattr(s_small, f)), abs=3e-5)
    with pytest.raises(ValueError, match=">= 0"):
        pdlt.single_input("tanh", -1.0)


def test_fixed_points_and_stability():
    fps = pdlt.fixed_points("erf", C_W=1.5, C_b=0.3)
    assert len(fps) == 1
    p = fps[0]
    assert 0.3 + 1.5 * float(pdlt.single_input("erf", p.K).g) == pytest.approx(p.K, rel=1e-12)
    assert p.stable
    # iterating the map converges to it
    net = pdlt.MLP("erf", (1,) + (1,) * 200, C_W=1.5, C_b=0.3)
    assert pdlt.kernel_flow(net, np.array([[2.0]])).K[-1, 0, 0] == pytest.approx(p.K, rel=1e-10)
    # tanh at C_b = 0, C_W > 1: K = 0 is unstable and there is a stable K* > 0
    fps = pdlt.fixed_points("tanh", C_W=1.5, C_b=0.0)
    assert fps[0].K == 0.0 and not fps[0].stable and fps[1].stable


@pytest.mark.parametrize("name,C_W,C_b", [("tanh", 0.8, 0.1), ("erf", 1.2, 0.2), ("relu", 1.5, 0.3)])
def test_correlation_length_matches_flow(name, C_W, C_b):
    """xi_par from chi_par(K*) vs the decay rate of K^(l) - K* in the iterated flow (independent)."""
    cl = pdlt.correlation_length(name, C_W, C_b)
    net = pdlt.MLP(name, (1,) + (1,) * 40, C_W=C_W, C_b=C_b)
    K = pdlt.kernel_flow(net, np.array([[1.7]])).K[:, 0, 0]
    dK = np.abs(K - cl.K_star)
    ls = np.arange(10, 25)
    rate = -np.polyfit(ls, np.log(dK[ls]), 1)[0]
    assert 1 / rate == pytest.approx(cl.xi_par, rel=1e-3)
    assert cl.phase in ("ordered", "chaotic")


def test_correlation_length_diverging():
    cl = pdlt.correlation_length("relu", 2.5, 0.0)
    assert math.isinf(cl.K_star) and cl.phase == "chaotic"
    assert math.isinf(pdlt.correlation_length("linear", 1.5, 0.1).K_star)
    with pytest.raises(ValueError, match="grows without bound"):
        pdlt.correlation_length("softplus", 3.0, 1.0)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match=">= 0"):
        pdlt.fixed_points("tanh", -1.0, 0.0)


@pytest.mark.parametrize("name", ["gelu", "swish"])
def test_half_stable_roots_at_25_digits(name):
    """Independent of the float64 quadrature: at the solver's K*, <sigma sigma''> computed with mpmath
    (adaptive, 25 digits) vanishes to the root's precision, and C_W, C_b follow."""
    from pdlt.theory.criticality import mp_averages

    c = pdlt.criticality(name)
    ss, zss, s1s = mp_averages(pdlt.activation(name), c.K_star, dps=25)
    S = zss / c.K_star - s1s
    assert abs(float(S)) < 1e-13
    assert float(1 / s1s) == pytest.approx(c.C_W, rel=1e-13)
    assert float(c.K_star - ss / s1s) == pytest.approx(c.C_b, rel=1e-11)


def test_fixed_points_find_the_double_root_at_criticality():
    """At critical (C_b, C_W) of a half-stable activation K* is a double root of C_b + C_W g(K) - K (the map
    is tangent to the diagonal); GELU also has a second, attracting fixed point below it, where flows
    started below K* end up."""
    c = pdlt.criticality("gelu")
    ks = [p.K for p in pdlt.fixed_points("gelu", c.C_W, c.C_b)]
    assert any(abs(k - c.K_star) < 1e-7 for k in ks)
    low = [p for p in pdlt.fixed_points("gelu", c.C_W, c.C_b) if p.K < c.K_star - 0.1]
    assert len(low) == 1 and low[0].stable
    cs = pdlt.criticality("swish")
    assert any(abs(p.K - cs.K_star) < 1e-6 for p in pdlt.fixed_points("swish", cs.C_W, cs.C_b))


def test_round_off_does_not_make_a_critical_point():
    """Hard-tanh has <sigma sigma''> = -2 p_K(1) < 0 for all K (below float64 resolution at small K): 'none'."""
    x = sp.Symbol("x")
    assert pdlt.criticality(pdlt.Activation.from_sympy(sp.Max(-1, sp.Min(1, x)))).universality == "none"


def test_correlation_length_follows_K1_and_validates():
    cl = pdlt.correlation_length("tanh", 1.5, 0.0, K1=1.0)
    assert cl.K_star == pytest.approx(0.2868942, rel=1e-6)
    assert pdlt.correlation_length("relu", 2.0, 0.0).K_star is None
    for bad in ((-1.0, 0.0), (float("nan"), 0.0), (1.0, -0.1)):
        with pytest.raises(ValueError, match="variances"):
            pdlt.correlation_length("relu", *bad)
    with pytest.raises(ValueError, match="variances"):
        pdlt.chi_par("tanh", 1.0, C_W=-1.0)


@pytest.mark.parametrize("name, cls", [("relu", "scale-invariant"), ("leaky_relu(0.1)", "scale-invariant"),
                                       ("linear", "scale-invariant"), ("tanh", "K*=0"), ("sin", "K*=0"),
                                       ("erf", "K*=0"), ("gelu", "half-stable"), ("swish", "half-stable"),
                                       ("softplus", "none"), ("sigmoid", "none")])
def test_universality_class_is_the_one_classifier(name, cls):
    """PDLT ch. 5: ReLU family scale-invariant; tanh, sin, erf (sigma_0 = 0, a_1 < 0) K*=0; GELU, SWISH
    half-stable (sec. 5.3.4); softplus, sigmoid no critical point. criticality() and the symbolic critical
    point report the same class."""
    from pdlt import symbolic as sym
    from pdlt.errors import ParameterError
    from pdlt.theory.criticality import universality_class

    assert universality_class(name) == cls
    assert pdlt.criticality(name).universality == cls
    analytic = cls in ("scale-invariant", "K*=0")
    assert universality_class(name, search=False) == (cls if analytic else None)
    if analytic:
        assert sym.critical_point(name)["universality"] == cls
    else:
        with pytest.raises(ParameterError, match="no closed-form critical point"):
            sym.critical_point(name)


def test_universality_class_of_user_expressions():
    """tanh(z) + z/3: sigma_1 = 4/3, sigma_3 = -2, a_1 = -3/2 < 0 (K*=0); tanh(z) + 1: sigma_0 != 0, not K*=0;
    a user Max(0, z) is scale-invariant; sin(z) + z^3: a_1 = (-1 + 6)/1 > 0, not K*=0."""
    from pdlt.theory.criticality import universality_class

    z = pdlt.activations.Z
    assert universality_class(pdlt.Activation.from_sympy(sp.tanh(z) + z / 3)) == "K*=0"
    assert universality_class(pdlt.Activation.from_sympy(sp.tanh(z) + 1), search=False) is None
    assert universality_class(pdlt.Activation.from_sympy(sp.Max(0, z))) == "scale-invariant"
    assert universality_class(pdlt.Activation.from_sympy(sp.sin(z) + z**3), search=False) is None

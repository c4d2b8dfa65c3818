import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.activations import K11, K12, K22, Z
from pdlt.testing import psd_kernels

REGISTRY = ["linear", "relu", "leaky_relu(0.2)", "tanh", "erf", "sin", "gelu", "swish", "softplus", "sigmoid"]
CLOSED = ["linear", "relu", "leaky_relu(0.2)", "leaky_relu(-0.5)", "erf", "sin", "gelu"]


def test_registry_contents():
    names = pdlt.available_activations()
    for n in ("linear", "relu", "leaky_relu", "tanh", "erf", "sin", "gelu", "swish", "silu", "softplus", "sigmoid"):
        assert n in names


def test_unknown_activation_message():
    with pytest.raises(ValueError, match="unknown activation 'tanhh'.*available"):
        pdlt.activation("tanhh")
    with pytest.raises(ValueError, match="cannot parse"):
        pdlt.activation("relu(((")


def test_leaky_parameter_forms():
    assert pdlt.activation("leaky_relu(0.1)").slopes == (1.0, 0.1)
    assert pdlt.activation("leaky_relu", slope=0.3).slopes == (1.0, 0.3)


@pytest.mark.parametrize("name", REGISTRY)
def test_numeric_callables_match_sympy(name):
    """Hand-written numpy callables vs mpmath evaluation of the sympy expression and its derivatives."""
    act = pdlt.activation(name)
    zs = np.array([-3.1, -1.2, -0.4, 0.37, 1.1, 2.9])
    for k, fn in ((0, act), (1, act.d1), (2, act.d2)):
        ref = sp.lambdify(Z, sp.diff(act.expr, Z, k), "mpmath")
        expect = np.array([float(ref(mpmath.mpf(float(v)))) for v in zs])
        np.testing.assert_allclose(fn(zs), expect, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", ["softplus", "sigmoid", "swish", "gelu", "tanh", "erf"])
def test_no_overflow_nan_at_large_arguments(name):
    act = pdlt.activation(name)
    z = np.array([-1e4, -800.0, 800.0, 1e4])
    for fn in (act, act.d1, act.d2):
        assert np.all(np.isfinite(fn(z)))


@pytest.mark.slow
@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_pair_map_vs_mpmath(name):
    act = pdlt.activation(name)
    f = sp.lambdify(Z, act.expr, "mpmath")
    f1 = sp.lambdify(Z, sp.diff(act.expr, Z), "mpmath")
    for K in ([[1.0, 0.3], [0.3, 0.7]], [[2.5, -1.2], [-1.2, 1.1]], [[0.4, 0.399], [0.399, 0.4]]):
        ref = pdlt.expect_mp(lambda a, b: f(a) * f(b), K, kinks=act.kinks)
        val = act.pair(K[0][0], K[1][1], K[0][1])
        assert abs(val - float(ref)) <= 1e-12 * max(1.0, abs(float(ref)))
        if act.dpair_map is not None:
            ref1 = pdlt.expect_mp(lambda a, b: f1(a) * f1(b), K, kinks=act.kinks)
            assert abs(act.dpair(K[0][0], K[1][1], K[0][1]) - float(ref1)) <= 1e-12 * max(1.0, abs(float(ref1)))


@pytest.mark.slow
def test_closed_form_vs_mpmath_2d_two_cases():
    """One two-dimensional 20-digit mpmath reference per closed-form family (the full grid is marked slow)."""
    K = [[1.0, 0.3], [0.3, 0.7]]
    for name in ("relu", "erf"):
        act = pdlt.activation(name)
        f = sp.lambdify(Z, act.expr, "mpmath")
        ref = pdlt.expect_mp(lambda a, b: f(a) * f(b), K, kinks=act.kinks, dps=16)
        assert abs(act.pair(K[0][0], K[1][1], K[0][1]) - float(ref)) <= 1e-12 * abs(float(ref))


@pytest.mark.parametrize("name", CLOSED)
@settings(max_examples=20)
@given(K=psd_kernels(d=2))
def test_closed_form_vs_quadrature(name, K):
    act = pdlt.activation(name)
    quad = pdlt.expect(lambda z: act(z[..., 0]) * act(z[..., 1]), K, kinks=act.kinks)
    closed = act.pair(K[0, 0], K[1, 1], K[0, 1])
    assert abs(quad - closed) <= 1e-10 * max(1.0, abs(closed))


@pytest.mark.parametrize("name", CLOSED)
def test_symbolic_pair_map_equals_numeric(name):
    act = pdlt.activation(name)
    lam = sp.lambdify((K11, K22, K12), act.pair_map, "mpmath")
    for k in ((1.0, 0.7, 0.3), (2.5, 1.1, -1.2)):
        assert abs(float(lam(*k)) - act.pair(*k)) < 1e-13


def test_singular_kernel_closed_forms_finite():
    relu = pdlt.activation("relu")
    # identical inputs (rho = 1) and a zero input (K11 = 0): no NaN
    assert relu.pair(2.0, 2.0, 2.0) == pytest.approx(1.0, rel=1e-15)
    assert relu.pair(0.0, 2.0, 0.0) == 0.0
    assert relu.dpair(1.0, 1.0, 1.0) == pytest.approx(0.5, rel=1e-15)


def test_from_sympy_scale_invariant_and_kinks():
    x = sp.Symbol("x")
    r = pdlt.Activation.from_sympy(sp.Max(0, x))
    assert r.slopes == (1.0, 0.0) and r.kinks == (0.0,)
    a = pdlt.Activation.from_sympy(sp.Abs(x))
    assert a.slopes == (1.0, -1.0)
    ht = pdlt.Activation.from_sympy(sp.Piecewise((-1, x < -1), (1, x > 1), (x, True)))
    assert ht.kinks == (-1.0, 1.0) and ht.slopes is None
    np.testing.assert_allclose(ht(np.array([-2.0, 0.5, 3.0])), [-1.0, 0.5, 1.0])
    t = pdlt.Activation.from_sympy(sp.tanh(2 * x))
    assert t.kinks == () and t.slopes is None
    np.testing.assert_allclose(t.d1(np.array([0.3])), 2 / np.cosh(0.6) ** 2, rtol=1e-14)


def test_from_sympy_rejects_parameters():
    x, a = sp.symbols("x a")
    with pytest.raises(ValueError, match="exactly one variable"):
        pdlt.Activation.from_sympy(sp.tanh(a * x))


def test_taylor_coefficients():
    assert pdlt.activation("tanh").taylor(5) == (0, 1, 0, -2, 0, 16)
    s = pdlt.activation("gelu").taylor(3)
    assert s[1] == sp.Rational(1, 2) and sp.simplify(s[2] - sp.sqrt(2 / sp.pi)) == 0 and s[3] == 0
    with pytest.raises(ValueError, match="kink at z = 0"):
        pdlt.activation("relu").taylor(2)


@given(a=st.floats(-0.95, 0.95))
def test_leaky_slopes_give_A2(a):
    act = pdlt.activation("leaky_relu", slope=a)
    assert act.A2 == pytest.approx((1 + a * a) / 2, rel=1e-15)
    # A2 K is <sigma^2>_K (scale invariance) -- check against the closed-form pair map
    assert act.pair(1.7, 1.7, 1.7) == pytest.approx(act.A2 * 1.7, rel=1e-14)


def test_activation_equality_and_hash():
    assert pdlt.activation("tanh") == pdlt.activation("tanh")
    assert len({pdlt.activation("tanh"), pdlt.activation("tanh"), pdlt.activation("erf")}) == 2

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.activations import K11, K12, K22, Z, Activation, activation, available_activations
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


@pytest.mark.parametrize("name", [n for n in REGISTRY if not pdlt.activation(n).kinks])
def test_jet_matches_mpmath(name):
    """The one-pass jet (sigma and its first three derivatives) vs mpmath evaluation of the sympy derivatives (an
    independent evaluation of the same expressions, without the common-subexpression rewriting)."""
    act = pdlt.activation(name)
    zs = np.array([-3.1, -1.2, -0.4, 0.0, 0.37, 1.1, 2.9])
    jet = act.derivatives(zs)
    for k in range(4):
        ref = sp.lambdify(Z, sp.diff(act.expr, Z, k), "mpmath")
        expect = np.array([float(ref(mpmath.mpf(float(v)))) for v in zs])
        np.testing.assert_allclose(jet[k], expect, rtol=1e-13, atol=1e-14, err_msg=f"order {k}")


@pytest.mark.parametrize("name", [n for n in REGISTRY if not pdlt.activation(n).kinks])
def test_twelve_derivatives_against_numerical_differentiation(name):
    """The jet to the twelfth derivative (the NTK at O(1/n^2) reads that far) vs mpmath's numerical differentiation of
    sigma at 40 digits, which shares nothing with the sympy derivatives: within 1e-12 of each derivative's size on
    |z| < 6 (the former forms, sp.diff(sigma, z, k), cancelled to 1e-9 for swish and softplus)."""
    from pdlt.activations import derivative_forms

    act = pdlt.activation(name)
    zs = np.array([-5.3, -1.7, -0.45, 0.35, 1.3, 4.2])
    jet = derivative_forms(act.expr, 12)(zs)
    f = sp.lambdify(Z, act.expr, "mpmath")
    with mpmath.workdps(40):
        for k in range(13):
            ref = np.array([float(mpmath.diff(f, mpmath.mpf(float(v)), k)) for v in zs])
            scale = max(np.max(np.abs(ref)), 1e-300)
            assert np.max(np.abs(jet[k] - ref)) <= 1e-12 * scale, (k, jet[k], ref)


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
    # 16 digits (26 working) resolve a 1e-12 comparison; the default 30 cost ~4x more (GELU: minutes per kernel)
    for K in ([[1.0, 0.3], [0.3, 0.7]], [[2.5, -1.2], [-1.2, 1.1]], [[0.4, 0.399], [0.399, 0.4]]):
        ref = pdlt.expect_mp(lambda a, b: f(a) * f(b), K, kinks=act.kinks, dps=16)
        val = act.pair(K[0][0], K[1][1], K[0][1])
        assert abs(val - float(ref)) <= 1e-12 * max(1.0, abs(float(ref)))
        if act.dpair_map is not None:
            ref1 = pdlt.expect_mp(lambda a, b: f1(a) * f1(b), K, kinks=act.kinks, dps=16)
            assert abs(act.dpair(K[0][0], K[1][1], K[0][1]) - float(ref1)) <= 1e-12 * max(1.0, abs(float(ref1)))


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


def test_relu_anticorrelated_factor_against_mpmath():
    """ReLU's pair map near rho = -1 needs sin x - x cos x at small x, where the direct form cancels: its series, to
    a few ulps of a 330-digit reference from 1e-100 to pi (the direct form there misses by up to 1/x^2 ulps)."""
    from pdlt.activations import _sin_minus_x_cos

    x = np.concatenate([np.geomspace(1e-100, 1.0, 400), np.linspace(1e-3, np.pi, 400)])
    with mpmath.workdps(330):
        ref = np.array([float(mpmath.sin(mpmath.mpf(v)) - mpmath.mpf(v) * mpmath.cos(mpmath.mpf(v))) for v in x])
    assert np.all(np.abs(_sin_minus_x_cos(x) - ref) <= 4 * np.finfo(float).eps * ref)
    assert float(_sin_minus_x_cos(np.float64(0.0))) == 0.0


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


# ---------------------------------------------------------------------- one definition, four backends

_GRID = np.linspace(-6.0, 6.0, 60)  # no point at the kink z = 0


@pytest.mark.parametrize("name", REGISTRY)
def test_backends_agree_with_numpy(name):
    """numpy, mpmath (act.mp), JAX (act.jax_form(), and its derivative) and the sympy expression give the same
    sigma and sigma' on a grid, to 1e-12."""
    import jax

    act = pdlt.activation(name)
    num, dnum = act(_GRID), act.d1(_GRID)
    f0, f1 = act.mp
    with mpmath.workdps(30):
        mp0 = np.array([float(f0(mpmath.mpf(x))) for x in _GRID])
        mp1 = np.array([float(f1(mpmath.mpf(x))) for x in _GRID])
    np.testing.assert_allclose(num, mp0, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dnum, mp1, rtol=1e-12, atol=1e-14)
    fj = act.jax_form()
    np.testing.assert_allclose(np.asarray(fj(_GRID)), num, rtol=1e-12, atol=1e-14)   # float64 in any configuration
    with jax.enable_x64(True):  # differentiating it is the caller's program: a float64 one here
        np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(fj))(_GRID)), dnum, rtol=1e-12, atol=1e-14)
    sym = np.array([float(act.expr.subs(Z, sp.Float(x, 30)).evalf(30)) for x in _GRID[::6]])
    np.testing.assert_allclose(num[::6], sym, rtol=1e-12, atol=1e-14)


def test_erf_and_gelu_numpy_forms_are_accurate_in_the_tails():
    """The numpy erf (and GELU's Phi) come from scipy.special; GELU = z erfc(-z/sqrt 2)/2 keeps full relative
    accuracy in the left tail, where z (1 + erf(z/sqrt 2))/2 would cancel (1e-10 relative at z = -6)."""
    import scipy.special

    z = np.array([-30.0, -6.0, -1e-8, 0.3, 5.5, 27.0])
    np.testing.assert_array_equal(pdlt.activation("erf")(z), scipy.special.erf(z))
    with mpmath.workdps(40):
        ref = np.array([float(x * mpmath.erfc(-x / mpmath.sqrt(2)) / 2) for x in map(mpmath.mpf, z)])
    # rtol 1e-12: rounding z/sqrt(2) is amplified by d log erfc/dx ~ 2x^2 (~900 at z = -30)
    np.testing.assert_allclose(pdlt.activation("gelu")(z), ref, rtol=1e-12, atol=1e-300)


def test_user_expression_equal_to_a_builtin_shares_its_jax_form_and_quartic():
    user = pdlt.Activation.from_sympy("sin(z)")
    assert user._jax is not None and user.quartic(sp.Symbol("K")) == pdlt.activation("sin").quartic(sp.Symbol("K"))
    assert pdlt.Activation.from_sympy("tanh(z) + z/3")._jax is None  # no recipe: lambdified


@pytest.mark.parametrize("name, K", [("relu", 0.7), ("leaky_relu(-0.5)", 2.3), ("sin", 0.4), ("sin", 3.0),
                                     ("erf", 0.25), ("erf", 4.0)])
def test_quartic_closed_form_against_quadrature(name, K):
    """act.quartic(K) = <sigma^4>_K (the sympy closed form, evaluated) against float64 quadrature."""
    act = pdlt.activation(name)
    Ks = sp.Symbol("K", positive=True)
    closed = float(act.quartic(Ks).subs(Ks, K).evalf(30))
    quad = float(pdlt.gaussian.moments_1d(act, K, [(4, 0, 0)])[0])
    assert closed == pytest.approx(quad, rel=1e-12)


def test_closed_forms_exist_only_where_derived():
    K3, K4 = np.eye(3) + 0.2, np.eye(4)[None] + 0.1
    for name in ("tanh", "gelu", "sigmoid"):
        act = pdlt.activation(name)
        assert act.three_point(K3) is None and act.four_point(K4) is None
    assert pdlt.activation("tanh").quartic(sp.Symbol("K")) is None
    relu = pdlt.activation("relu")
    ref = pdlt.gaussian.expect(lambda z: relu(z).prod(-1)[..., None] * relu(z), K3, kinks=(0.0,))
    np.testing.assert_allclose(relu.three_point(K3), ref, rtol=1e-12)
    ref4 = pdlt.gaussian.expect(lambda z: relu(z).prod(-1), K4[0], kinks=(0.0,))
    assert relu.four_point(K4)[0] == pytest.approx(ref4, rel=1e-11)


@pytest.mark.parametrize("name", ["gelu", "erf", "sin"])
def test_pair_gradient_is_price_on_the_closed_form(name):
    """``dP/dK11 = <sigma''_1 sigma_2>/2`` and ``dP/dK12 = <sigma'_1 sigma'_2>`` (Price's theorem), the derivatives
    of the closed-form pair average against quadrature of the derivatives, including the diagonal (rho = 1)."""
    act = pdlt.activations.activation(name)
    rng = np.random.default_rng(1)
    for i in range(12):
        k1, k2 = rng.uniform(0.05, 4, 2)
        k12 = rng.uniform(-0.9999, 0.9999) * np.sqrt(k1 * k2)
        if i < 2:
            k2 = k12 = k1
        K = np.array([[[k1, k12], [k12, k2]]])
        q11 = pdlt.gaussian.expect(lambda z: act.d2(z[..., 0]) * act(z[..., 1]), K, resolution=0.1)[0] / 2
        q12 = pdlt.gaussian.expect(lambda z: act.d1(z[..., 0]) * act.d1(z[..., 1]), K, resolution=0.1)[0]
        d11, d12 = act.pair_gradient(k1, k2, k12)
        np.testing.assert_allclose([d11, d12], [q11, q12], rtol=1e-11, atol=1e-13)
    assert pdlt.activations.activation("tanh").pair_gradient(1.0, 1.0, 0.5) is None      # no closed form
    assert pdlt.activations.activation("relu").pair_gradient(1.0, 1.0, 0.5) is None      # kinked


def test_odd_activations():
    """``Activation.odd``: sigma(-z) = -sigma(z) (the symmetry that keeps one neuron's odd moments 0 through
    shortcuts)."""
    for name in ("linear", "tanh", "erf", "sin"):
        assert pdlt.activation(name).odd, name
    for name in ("relu", "leaky_relu", "gelu", "swish", "softplus"):
        assert not pdlt.activation(name).odd, name


def test_activations_pickle_as_their_definition():
    """A second process (pdlt verify's, a user's pool) gets the same activation: registered ones by name, others
    rebuilt from their expression, name and kinks; the rebuilt callables give the same numbers."""
    import pickle

    z = np.linspace(-4.0, 4.0, 17)
    user = [Activation.from_sympy("tanh(z) + z/10", name="mine"), Activation.from_sympy(sp.Max(0, sp.Symbol("x")))]
    for act in [activation(n) for n in available_activations()] + [activation("leaky_relu(0.1)")] + user:
        back = pickle.loads(pickle.dumps(act))
        assert (back.name, back.expr, back.kinks, back.slopes) == (act.name, act.expr, act.kinks, act.slopes)
        for f in ("__call__", "d1", "d2"):
            np.testing.assert_array_equal(getattr(back, f)(z), getattr(act, f)(z))
    net = pdlt.MLP("gelu", (2, 3, 1), C_W=1.5)
    back = pickle.loads(pickle.dumps(net))
    assert back.activation.name == "gelu" and back.C_W == net.C_W and back.widths == net.widths


def test_jumps_are_refused_where_the_derivative_enters():
    """sign and Heaviside jump: sigma' is a delta function, which the pointwise sigma' (0 beside the jump) misses,
    so chi_perp came out 0 and two nearby inputs seemed to merge in the delta expansion, while the exact kernel flow
    separates them. Everything that takes sigma' refuses (naming activation); what takes sigma alone works."""
    from pdlt.activations import jumps

    assert jumps(pdlt.activation("sign(z)")) == (0.0,) and jumps(pdlt.activation("Heaviside(z - 1)")) == (1.0,)
    assert jumps(pdlt.activation("relu")) == () and jumps(pdlt.activation("Abs(z)")) == ()
    net = pdlt.MLP("sign(z)", (2, 4, 4, 4), C_b=0.1)
    x = np.array([[1.0, 0.5], [0.0, 1.0]])
    for call in (lambda: pdlt.chi_perp("sign(z)", 1.0), lambda: pdlt.chi_par("Heaviside(z - 1)", 1.0),
                 lambda: pdlt.delta_finite_width(net, x[0], np.array([0.0, 1e-3])), lambda: pdlt.finite_width(net, x),
                 lambda: pdlt.ntk(net, x), lambda: pdlt.nnlo(pdlt.MLP("Heaviside(z - 1)", (1, 8, 8, 8)), [1.0])):
        with pytest.raises(pdlt.ParameterError, match="jumps at z") as err:
            call()
        assert err.value.setting == "activation"
    # sigma alone: <sign sign> = (2/pi) arcsin(rho), so the flow is exact and available
    K = pdlt.kernel_flow(net, x).K
    rho = K[0, 0, 1] / np.sqrt(K[0, 0, 0] * K[0, 1, 1])
    assert K[1, 0, 1] == pytest.approx(0.1 + (2 / np.pi) * np.arcsin(rho), rel=1e-12)


def test_the_identity_as_the_expression_z():
    # 'z' was "unknown activation 'z'" although every other expression in z is taken (pdlt sample -a z)
    act = pdlt.activation("z")
    assert act.slopes == (1.0, 1.0) and act.expr == pdlt.activations.Z


def test_numpy_printer_powers_against_numpy():
    """lambdify_numpy prints integer powers as products (fast for negative bases) and 1/(...) for -1: every power,
    of a symbol and of a sum, positive and negative bases, arrays and scalars, against numpy's ``**`` on the same
    values (and a sum in a denominator keeps its parentheses: 1/(exp(-z) + 1) is the sigmoid, not exp(z) + 1)."""
    from pdlt.activations import lambdify_numpy

    zs = np.array([-2.5, -1.0, -0.3, 0.4, 1.0, 3.0])
    for n in (-5, -3, -2, -1, 2, 3, 4, 7, 12, 13):
        for base, num in ((Z, lambda z: z), (sp.exp(-Z) + 1, lambda z: np.exp(-z) + 1), (Z - 1, lambda z: z - 1)):
            if n < 0 and base == Z - 1:
                continue                             # (a zero base at z = 1)
            f = lambdify_numpy(Z, [base**n, 3 * base**n + Z], cse=True)
            got = f(zs)
            want = num(zs) ** float(n)
            np.testing.assert_allclose(got[0], want, rtol=1e-14, err_msg=f"{base}**{n}")
            np.testing.assert_allclose(got[1], 3 * want + zs, rtol=1e-13, err_msg=f"3 {base}**{n} + z")
            np.testing.assert_allclose(lambdify_numpy(Z, base**n)(-0.3), num(-0.3) ** float(n), rtol=1e-14)
    half = lambdify_numpy(Z, Z ** sp.Rational(3, 2))(np.array([0.25, 4.0]))
    np.testing.assert_allclose(half, [0.125, 8.0], rtol=1e-15)

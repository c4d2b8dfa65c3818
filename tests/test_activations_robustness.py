"""Robustness of activations (issue 10, items 8 and 11).

Item 11: the closed-form Gaussian maps are exact at and near coincident inputs (|rho| -> 1). Reference values
are the textbook formulas (module docstring of pdlt.activations) evaluated by mpmath at 50 digits on the *same*
float64 kernel entries, so the comparison measures only the float64 evaluation error.

Item 8: user activations are validated when constructed (ActivationError naming the problem).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.activations import activation, correlation_angle, correlation_cosine, kernel_sqrt_det
from pdlt.errors import ActivationError

EPS = np.finfo(np.float64).eps
CLOSED = ["relu", "leaky_relu", "linear", "erf", "sin", "gelu"]


# ---------------------------------------------------------------------------------------------- references


def _terms(name, a, b, c, deriv):
    """The textbook closed form as a list of mpmath terms (their sum is the map), at 50 digits."""
    a, b, c = mp.mpf(a), mp.mpf(b), mp.mpf(c)
    det = max(a * b - c * c, mp.mpf(0))
    r = min(max(c / mp.sqrt(a * b), mp.mpf(-1)), mp.mpf(1))
    if name in ("relu", "leaky_relu", "linear"):
        ap, am = {"relu": (1, 0), "leaky_relu": (1, mp.mpf(0.01)), "linear": (1, 1)}[name]
        p, q = (ap + am) / 2, (ap - am) / 2
        if deriv:
            return [p * p, 2 * q * q / mp.pi * mp.asin(r)]
        return [p * p * c, 2 * q * q / mp.pi * mp.sqrt(det), 2 * q * q / mp.pi * c * mp.asin(r)]
    if name == "erf":
        if deriv:
            return [4 / mp.pi / mp.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c)]
        return [2 / mp.pi * mp.asin(2 * c / mp.sqrt((1 + 2 * a) * (1 + 2 * b)))]
    if name == "sin":
        return [mp.exp(-(a + b) / 2) * (mp.cosh(c) if deriv else mp.sinh(c))]
    if name == "gelu":
        P = (1 + a) * (1 + b)
        D = P - c * c
        return [c / 4, c / (2 * mp.pi) * mp.asin(c / mp.sqrt(P)), (a * b * D + c * c) / (2 * mp.pi * P * mp.sqrt(D))]
    raise KeyError(name)


def _check(name, deriv, A, B, C, ulps):
    """|float64 map - mpmath| <= ulps * eps * (sum |terms|): relative to the value where the textbook terms do
    not cancel, and to the cancelling terms where they do (that ratio is the condition number of the sum)."""
    mp.mp.dps = 50
    act = activation(name)
    got = (act.dpair if deriv else act.pair)(A, B, C)
    assert np.all(np.isfinite(got))
    worst = 0.0
    for a, b, c, g in zip(A, B, C, got):
        terms = _terms(name, a, b, c, deriv)
        ref = mp.fsum(terms)
        scale = mp.fsum(abs(t) for t in terms)
        err = float(abs(mp.mpf(g) - ref) / scale) / EPS
        worst = max(worst, err)
    assert worst <= ulps, f"{name} {'dpair' if deriv else 'pair'}: {worst:.1f} ulps"
    return worst


def _cases():
    for name in CLOSED:
        yield name, False
        if activation(name).dpair_map is not None:
            yield name, True


# ---------------------------------------------------------------------------------------------- item 11


def test_relu_derivative_diagonal_is_exact_at_K_7_77():
    # the reported case: rho = K/(sqrt(K) sqrt(K)) one ulp below 1 gave <relu' relu'> = 0.5 - 2.4e-9
    K = np.array([[7.77, 7.77], [7.77, 7.77]])
    out = pdlt.pair_average("relu", K, derivative=True)
    assert np.all(out == 0.5)
    assert np.all(pdlt.pair_average("relu", K) == 7.77 / 2)


@pytest.mark.parametrize("name,deriv", list(_cases()))
def test_closed_forms_on_the_diagonal(name, deriv):
    """K11 = K22 = K12 = K over 1000 K in [1e-6, 1e6] (and 7.77): the single-input value to a few ulps."""
    act = activation(name)
    K = np.concatenate([np.logspace(-6, 6, 1000), [7.77]])
    got = (act.dpair if deriv else act.pair)(K, K, K)
    if name in ("relu", "leaky_relu", "linear"):
        # exact: <relu'^2> = 1/2, <relu^2> = K/2; leaky: (1 + a^2)/2 and (1 + a^2) K/2; linear: 1 and K
        a2 = {"relu": 0.0, "leaky_relu": 1e-4, "linear": 1.0}[name]
        want = np.full_like(K, (1 + a2) / 2) if deriv else (1 + a2) * K / 2
        np.testing.assert_allclose(got, want, rtol=4 * EPS, atol=0)
    else:
        # cheap mpmath references at a subsample, the rest through the exact diagonal identities
        _check(name, deriv, K[::10], K[::10], K[::10], ulps=4)
        if name == "erf" and not deriv:
            mp.mp.dps = 50
            want = np.array([float(2 / mp.pi * mp.asin(2 * mp.mpf(k) / (1 + 2 * mp.mpf(k)))) for k in K])
            np.testing.assert_allclose(got, want, rtol=4 * EPS, atol=0)


@pytest.mark.parametrize("name,deriv", list(_cases()))
def test_closed_forms_at_rho_minus_one(name, deriv):
    """K12 = -K (antipodal inputs): <relu(z) relu(-z)> = 0 and <relu'(z) relu'(-z)> = 0 exactly; others to
    a few ulps of their cancelling terms (GELU: terms ~ sqrt(K), value ~ 1/sqrt(K), so condition ~ K)."""
    act = activation(name)
    K = np.logspace(-6, 6, 101)
    got = (act.dpair if deriv else act.pair)(K, K, -K)
    if name == "relu":
        assert np.all(got == 0.0)
    _check(name, deriv, K, K, -K, ulps=4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name,deriv", list(_cases()))
def test_closed_forms_near_unit_correlation(name, deriv, sign):
    """K12 = +-sqrt(K11 K22)(1 - k eps), k = 1..10, K11 != K22: no 1e-8 cliff. The old arcsin(rho) was off
    by ~sqrt(eps) there; the stable forms are within a few ulps of the exact value of the float64 inputs."""
    rng = np.random.default_rng(7)
    A = np.logspace(-5, 5, 12)
    B = A * rng.uniform(0.1, 10.0, A.size)
    if name == "sin":  # e^{-(sqrt(K11) - sqrt(K22))^2/2} underflows for large unequal variances
        A, B = A[A < 50], B[A < 50]
    k = np.arange(1, 11)[:, None]
    C = sign * np.sqrt(A * B)[None, :] * (1 - k * EPS)
    AA, BB = np.broadcast_to(A, C.shape).ravel(), np.broadcast_to(B, C.shape).ravel()
    _check(name, deriv, AA, BB, C.ravel(), ulps=8)


def test_stable_geometry_helpers():
    mp.mp.dps = 50
    K = np.logspace(-6, 6, 301)
    assert np.all(correlation_angle(K, K, K) == np.pi / 2)
    assert np.all(correlation_angle(K, K, -K) == -np.pi / 2)
    assert np.all(correlation_cosine(K, K, K) == 0.0) and np.all(kernel_sqrt_det(K, K, K) == 0.0)
    a, b = 3.0, 7.0
    for k in range(1, 11):
        c = np.sqrt(a * b) * (1 - k * EPS)
        det = mp.mpf(a) * b - mp.mpf(c) ** 2
        assert abs(kernel_sqrt_det(a, b, c) - mp.sqrt(det)) <= 2 * EPS * mp.sqrt(det)
        assert abs(correlation_angle(a, b, c) - mp.atan2(c, mp.sqrt(det))) <= 2 * EPS
        assert abs(correlation_cosine(a, b, c) - mp.sqrt(det / (a * b))) <= 4 * EPS * mp.sqrt(det / (a * b))
    # no overflow of K11 K22, no underflow: exact rescaling
    assert correlation_angle(1e300, 1e300, 1e300) == np.pi / 2
    assert np.isclose(correlation_angle(1e-300, 4e-300, 1e-300), np.pi / 6, rtol=4 * EPS)
    assert np.isclose(kernel_sqrt_det(1e200, 1e200, 0.0), 1e200, rtol=4 * EPS)
    # degenerate variance: rho = 0 by convention, never NaN
    assert correlation_angle(0.0, 1.0, 0.0) == 0.0 and correlation_cosine(0.0, 1.0, 0.0) == 1.0


# ---------------------------------------------------------------------------------------------- item 8

z = sp.Symbol("z")


@pytest.mark.parametrize("expr,match", [
    (sp.besselj(0, z), "besselj is not supported"),
    (sp.Function("f")(z), "undefined function.* f"),
    ("tanh(z", "could not parse 'tanh\\(z'"),
    ("foo(z) + z", "unknown function 'foo'"),
    ("__import__('os').system('true')", "'__import__' is not allowed"),
    ("z.conjugate()", "'.' is not allowed"),
    ("lambda x: x", "'lambda' is not allowed"),
    (sp.sqrt(z), "sqrt\\(z\\).*real and finite for every real z"),
    (sp.log(z), "log\\(z\\).*real and finite"),
    (1 / z, "not finite .* at z = 0"),
    (sp.exp(z**2), "not finite .* at z = -100"),
    (sp.I * z, "real and finite"),
    (sp.tanh(z) + sp.Symbol("a"), "exactly one variable"),
    (sp.Integer(3), "does not depend"),
    (z - z, "does not depend"),
    (sp.gamma(z), "gamma is not supported"),
    (42, "does not depend"),
    (lambda x: x, "must be a sympy expression or a string"),
])
def test_unusable_activations_are_refused_at_construction(expr, match):
    with pytest.raises(ActivationError, match=match):
        pdlt.Activation.from_sympy(expr)


def test_registry_lookup_errors_list_the_names():
    with pytest.raises(ActivationError, match="unknown activation 'nonexistent'; available: linear, relu"):
        pdlt.activation("nonexistent")
    with pytest.raises(ActivationError, match="tanh takes no parameters.*Available activations: linear"):
        pdlt.activation("tanh", slope=0.1)
    with pytest.raises(ActivationError, match="leaky_relu takes slope.*Available activations"):
        pdlt.activation("leaky_relu", slop=0.1)
    with pytest.raises(ActivationError, match="leaky_relu"):
        pdlt.activation("leaky_relu", slope=float("nan"))
    with pytest.raises(ActivationError, match="must be a name \\(linear, relu"):
        pdlt.activation(3.5)


@pytest.mark.parametrize("expr", [sp.tanh(z) + z / 10, "tanh(z)+0.1*z", z * sp.erf(z), sp.sin(z) + z**3 / 10,
                                  "z^2/8 + tanh(z)", sp.erfc(z) - 1, sp.Max(0, z) + sp.tanh(z) / 10])
def test_valid_expressions_construct_and_agree(expr):
    act = pdlt.Activation.from_sympy(expr)
    zs = np.linspace(-3, 3, 13) + 0.01
    with mp.workdps(30):
        e = act.expr
        want = np.array([float(e.subs(pdlt.activations.Z, sp.Float(float(x), 30)).evalf(30)) for x in zs])
    np.testing.assert_allclose(act(zs), want, rtol=1e-13, atol=1e-15)


def test_string_activations_through_the_registry_lookup():
    act = pdlt.activation("tanh(z) + 0.1*z")
    np.testing.assert_allclose(act(np.array([0.5])), np.tanh(0.5) + 0.05, rtol=1e-15)
    with pytest.raises(ActivationError, match="cannot parse"):
        pdlt.activation("relu(((")


@pytest.mark.parametrize("name", ["linear", "relu", "leaky_relu", "tanh", "erf", "sin", "gelu", "swish",
                                  "softplus", "sigmoid"])
def test_registered_activations_pass_the_same_validation(name):
    act = activation(name)
    pdlt.activations._validate(act, (act._fn, act._d1, act._d2))


def test_jax_form_mismatch_is_an_activation_error(monkeypatch):
    """A JAX form that differs from numpy (here: a wrong hand-written form) is refused with ActivationError."""
    from pdlt.montecarlo import activations_jax as aj

    act = pdlt.Activation.from_sympy(sp.tanh(z) + z / 3)
    aj.checked_jax_form.cache_clear()
    monkeypatch.setattr(aj, "_build", lambda a: (lambda x: x))
    with pytest.raises(ActivationError, match="JAX version of sigma"):
        aj.jax_activation(act)
    aj.checked_jax_form.cache_clear()


# random small expressions from supported functions: construction either succeeds with agreeing backends or
# raises ActivationError (never anything else)
hyp = pytest.importorskip("hypothesis")
st = hyp.strategies

_UNARY = [sp.tanh, sp.sin, sp.cos, sp.exp, sp.erf, sp.atan, sp.sqrt, sp.log, sp.Abs, sp.asinh, sp.sinh,
          sp.erfc, sp.sign, lambda u: sp.Max(0, u), sp.Heaviside]
_exprs = st.recursive(
    st.sampled_from([z, z, sp.Integer(2), sp.Rational(1, 3), sp.Float(-0.7)]),
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(range(len(_UNARY))), sub).map(lambda t: _UNARY[t[0]](t[1])),
        st.tuples(sub, sub).map(lambda t: t[0] + t[1]),
        st.tuples(sub, sub).map(lambda t: t[0] * t[1]),
        st.tuples(sub, sub).map(lambda t: t[0] / t[1]),
    ),
    max_leaves=4,
)


@hyp.settings(max_examples=6, deadline=None, derandomize=True)
@hyp.given(_exprs)
def test_random_expressions_are_usable_or_refused(expr):
    try:
        act = pdlt.Activation.from_sympy(expr)
    except ActivationError:
        return
    from pdlt.montecarlo.activations_jax import jax_activation

    zs = np.array([-2.3, -0.61, 0.27, 1.9])
    zs = zs[np.all(np.abs(zs[:, None] - np.asarray(act.kinks + (np.inf,))[None, :]) > 1e-6, axis=1)]
    f0, f1 = act.mp
    num, jx = act(zs), np.asarray(jax_activation(act)(zs))
    with mp.workdps(30):
        ref = np.array([float(f0(mp.mpf(float(x)))) for x in zs])
        dref = np.array([float(f1(mp.mpf(float(x)))) for x in zs])
    scale = max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    assert np.all(np.isfinite(num)) and np.all(np.isfinite(act.d1(zs))) and np.all(np.isfinite(act.d2(zs)))
    np.testing.assert_allclose(num, ref, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(jx, ref, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(act.d1(zs), dref, rtol=1e-9, atol=1e-12 * max(1.0, float(np.max(np.abs(dref)))))


@pytest.mark.slow
@hyp.settings(max_examples=150, deadline=None, derandomize=True)
@hyp.given(_exprs)
def test_random_expressions_are_usable_or_refused_many(expr):
    test_random_expressions_are_usable_or_refused.hypothesis.inner_test(expr)

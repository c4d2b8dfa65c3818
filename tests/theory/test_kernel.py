import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.testing import datasets, psd_kernels


def test_first_layer_kernel():
    x = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    K = pdlt.first_layer_kernel(x, 1.5, 0.2)
    np.testing.assert_allclose(K, 0.2 + 1.5 * x @ x.T / 3, rtol=1e-15)


def test_linear_network_exact():
    """Deep linear: K^(l+1) = C_b + C_W K^(l) exactly, per-layer hyperparameters."""
    x = np.array([[1.0, 0.0], [0.6, 0.8], [-0.2, 0.4]])
    C_W, C_b = [1.1, 0.9, 1.3, 0.7], [0.1, 0.0, 0.2, 0.05]
    net = pdlt.MLP("linear", (2, 5, 7, 3, 1), C_W, C_b)
    K = pdlt.kernel_flow(net, x).K
    ref = C_b[0] + C_W[0] * x @ x.T / 2
    for l in range(4):
        np.testing.assert_allclose(K[l], ref, rtol=1e-14)
        if l < 3:
            ref = C_b[l + 1] + C_W[l + 1] * ref


def test_relu_critical_preserves_norms_and_follows_angle_map():
    x = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    net = pdlt.MLP("relu", (3,) + (10,) * 6, C_W=2.0, C_b=0.0)
    flow = pdlt.kernel_flow(net, x)
    np.testing.assert_allclose(np.diagonal(flow.K, axis1=1, axis2=2), np.tile([2 / 3, 8 / 3], (6, 1)), rtol=1e-14)
    rho = flow.correlation()[:, 0, 1]
    for l in range(5):
        r = rho[l]
        nxt = (np.sqrt(1 - r * r) + (np.pi - np.arccos(r)) * r) / np.pi
        assert rho[l + 1] == pytest.approx(nxt, abs=1e-14)


@pytest.mark.parametrize("name,expr", [("erf", sp.erf), ("sin", sp.sin), ("gelu", None), ("relu", None)])
@settings(max_examples=10)
@given(x=datasets(d=3, n0=3), hp=st.tuples(st.floats(0.3, 2.0), st.floats(0.0, 0.5)))
def test_quadrature_flow_equals_closed_form_flow(name, expr, x, hp):
    """The same network through the closed-form map and through quadrature (user activation, no closed form)."""
    z = sp.Symbol("z", real=True)
    act = pdlt.activation(name)
    if expr is not None:
        user = pdlt.Activation.from_sympy(expr(z))
    elif name == "gelu":
        user = pdlt.Activation.from_sympy(z * (1 + sp.erf(z / sp.sqrt(2))) / 2)
    else:
        user = pdlt.Activation.from_sympy(sp.Max(0, z))
        user = pdlt.Activation(name="relu-quad", expr=user.expr, kinks=user.kinks, _fn=user._fn, _d1=user._d1, _d2=user._d2)
    assert user.pair_map is None
    a = pdlt.kernel_flow(pdlt.MLP(act, (3, 8, 8, 8, 8), *hp), x).K
    b = pdlt.kernel_flow(pdlt.MLP(user, (3, 8, 8, 8, 8), *hp), x).K
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)


def test_single_input_vector_and_1d_x():
    net = pdlt.MLP("tanh", (2, 5, 5), 1.0, 0.0)
    f1 = pdlt.kernel_flow(net, np.array([1.0, 2.0]))
    assert f1.K.shape == (2, 1, 1)
    assert f1[1][0, 0] == pytest.approx(2.5)


def test_bad_inputs():
    net = pdlt.MLP("tanh", (3, 5, 5), 1.0, 0.0)
    with pytest.raises(ValueError, match="n_0"):
        pdlt.kernel_flow(net, np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        pdlt.kernel_flow(net, np.array([[np.nan, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape"):
        pdlt.kernel_flow(net, np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=">= 1"):
        pdlt.MLP("tanh", (3, 0, 5))
    with pytest.raises(ValueError, match=">= 0"):
        pdlt.MLP("tanh", (3, 5), C_W=-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        pdlt.MLP("tanh", (3, 5), C_b=-0.1)
    with pytest.raises(ValueError, match="length L"):
        pdlt.MLP("tanh", (3, 5, 5), C_W=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="layer index"):
        pdlt.kernel_flow(net, np.ones(3))[3]


def test_divergent_flow_names_layer():
    net = pdlt.MLP("relu", (1,) + (4,) * 600, C_W=20.0, C_b=0.0)
    with pytest.raises(pdlt.DivergentFlowError, match="layer l = ") as info:
        pdlt.kernel_flow(net, np.ones((1, 1)))
    # K^(l) = 20 * 10^(l-1) exactly (C_W A_2 = 10): the first layer above the 2^1000 range guard
    first = next(l for l in range(1, 600) if 20.0 * 10.0 ** (l - 1) > 2.0**1000)
    assert info.value.layer == first
    with pytest.raises(pdlt.DivergentFlowError):
        # (C_W = 30: K grows ~15x a layer through the large-kernel rule, past 2^1000 at layer 256; C_W = 8 took 500
        # layers and 5 s to get there)
        pdlt.kernel_flow(pdlt.MLP("swish", (1,) + (4,) * 800, C_W=30.0, C_b=0.0), np.ones((1, 1)))


@given(K=psd_kernels(d=2))
def test_gamma_roundtrip(K):
    np.testing.assert_allclose(pdlt.from_gamma(*pdlt.gamma_components(K)), K, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["tanh", "gelu", "erf", "relu", "leaky_relu(0.3)", "sin"])
def test_delta_expansion_matches_exact_flow(name):
    """Coefficients of the delta-expansion vs the exact 2x2 flow of x0 +- eps dx/2: the error is O(eps^2)
    relative, so it falls 4x when eps halves (the check that the O(dx^2) terms are right). Smaller eps would
    be dominated by the ~1e-12 quadrature error of the nearly singular 2x2 kernel."""
    x0 = np.array([0.8, -0.4, 0.5])
    dx = np.array([0.3, 0.2, -0.1])
    net = pdlt.MLP(name, (3,) + (8,) * 5, C_W=1.1, C_b=0.2)
    df = pdlt.delta_flow(net, x0, dx)
    errs = {"ddK2": [], "ddK0": [], "dK1": []}
    for eps in (1.6e-1, 8e-2, 4e-2):
        xs = np.stack([x0 + eps * dx / 2, x0 - eps * dx / 2])
        K = pdlt.kernel_flow(net, xs).K
        g0, g1, g2 = pdlt.gamma_components(K)
        errs["dK1"].append(np.max(np.abs(g1 / eps - df.dK1) / np.abs(df.dK1)))
        errs["ddK2"].append(np.max(np.abs(g2 / eps**2 - df.ddK2) / np.abs(df.ddK2)))
        # ddK0 vanishes for scale-invariant activations: measure it on the scale of ddK2 (both are O(dx^2))
        errs["ddK0"].append(np.max(np.abs((g0 - df.K00) / eps**2 - df.ddK0) / np.abs(df.ddK2)))
        # midpoint kernel is the single-input flow of x0
    np.testing.assert_allclose(df.K00, pdlt.kernel_flow(net, x0).K[:, 0, 0], rtol=1e-13)
    # kinked activations: the arc-cosine kernel has a |psi|^3 term, so their O(dx^2) remainders are O(|dx|^3),
    # one order lower (ratio 2); the smooth ones have the full O(dx^4) (ratio 4)
    kinked = bool(net.activation.kinks)
    for key, e in errs.items():
        if kinked and key == "dK1":
            # the diagonal of a scale-invariant flow is linear, so dK1 is exact: only round-off remains
            assert max(e) < 1e-11, e
            continue
        ratios = np.array(e[:-1]) / np.array(e[1:])
        want = 2.0 if (kinked and key != "dK1") else 4.0
        assert np.all(np.abs(ratios - want) < 0.15 * want), (key, e, ratios)


def test_delta_flow_kernel_reconstruction():
    net = pdlt.MLP("tanh", (2, 8, 8, 8), C_W=1.0, C_b=0.1)
    x0, dx = np.array([1.0, 0.5]), np.array([0.01, -0.02])
    df = pdlt.delta_flow(net, x0, dx)
    K = pdlt.kernel_flow(net, np.stack([x0 + dx / 2, x0 - dx / 2])).K[2]
    np.testing.assert_allclose(df.kernel(3), K, rtol=1e-7)


def test_sin_closed_form_no_overflow_at_large_kernel():
    net = pdlt.MLP("sin", (1, 3, 3), C_W=1.0, C_b=0.0)
    K = pdlt.kernel_flow(net, np.array([[30.0]])).K[:, 0, 0]
    assert K[0] == 900.0 and K[1] == pytest.approx((1 - np.exp(-1800.0)) / 2, rel=1e-15)


def test_names_accepted_and_hyperparameters_validated():
    np.testing.assert_allclose(pdlt.kernel_map("relu", np.eye(2), 2.0, 0.0), np.eye(2) + (1 / np.pi) * (1 - np.eye(2)), rtol=1e-14)
    with pytest.raises(ValueError, match="variances"):
        pdlt.kernel_map("tanh", np.eye(2), -1.0, 0.0)
    with pytest.raises(ValueError, match="variances"):
        pdlt.first_layer_kernel(np.ones((1, 2)), 1.0, -1.0)
    with pytest.raises(ValueError, match="sequence of integers"):
        pdlt.MLP("tanh", "34")
    net = pdlt.MLP("tanh", (2, 3, 3))
    with pytest.raises(ValueError, match="one input"):
        pdlt.delta_flow(net, np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="correlation undefined"):
        pdlt.kernel_flow(net, np.zeros((2, 2))).correlation()


@pytest.mark.parametrize("name", ["tanh", "swish", "softplus", "sigmoid", "gelu", "sin"])
@pytest.mark.parametrize("derivative", [False, True])
def test_pair_average_perfectly_correlated_inputs_reduce_to_one_dimension(name, derivative):
    """Identical (K12 = K11 = K22) and parallel (K12 = -sqrt(K11 K22)) inputs: the pair average is the 1-D
    average <f(z) f(c z)>_{K11}, c = +-sqrt(K22/K11), checked against mpmath at 30 digits to 1e-11 relative
    (the 2-D rule on such a rank-1 kernel was ~6e-10 off for tanh' at K = 1/3)."""
    import mpmath as mp

    from pdlt.activations import mp_forms

    act = pdlt.activation(name)
    f = mp_forms(act.expr)[1 if derivative else 0]
    for K11, K22, sign in ((1 / 3, 1 / 3, 1.0), (7.77, 7.77, 1.0), (0.5, 2.0, -1.0)):
        K12 = sign * np.sqrt(K11 * K22)
        M = pdlt.pair_average(act, np.array([[K11, K12], [K12, K22]]), derivative=derivative)
        c = sign * mp.sqrt(mp.mpf(K22) / K11)
        with mp.workdps(30):
            ref = mp.quad(lambda z: f(z) * f(c * z) * mp.exp(-z * z / (2 * K11)) / mp.sqrt(2 * mp.pi * K11),
                          [-mp.inf, 0, mp.inf])
        assert M[0, 1] == M[1, 0]
        assert abs(M[0, 1] - float(ref)) <= 1e-11 * abs(float(ref)) + 1e-15, (K11, K22, M[0, 1], float(ref))


# ---------------------------------------------------------------------------------------------------
# activations sharper than the quadrature's spacing
# ---------------------------------------------------------------------------------------------------


def _mp_square(expr: str, K: float) -> float:
    """``<sigma^2>_K`` by mpmath (split where a sharp sigma bends), the oracle for the default rules."""
    import mpmath

    f = pdlt.activation(expr).mp[0]
    with mpmath.workdps(30):
        s = mpmath.sqrt(K)
        g = lambda w: f(s * w) ** 2 * mpmath.exp(-w * w / 2) / mpmath.sqrt(2 * mpmath.pi)      # noqa: E731
        return float(mpmath.quad(g, [-mpmath.inf, -1, -0.1, 0, 0.1, 1, mpmath.inf]))


@pytest.mark.parametrize("name", [n for n in pdlt.activations.available_activations()])
def test_registered_activations_are_resolved(name):
    from pdlt.activations import RESOLUTION_TOLERANCE, quadrature_miss

    assert quadrature_miss(pdlt.activation(name))[0] < RESOLUTION_TOLERANCE / 50


def test_sharp_activation_is_refused_where_the_rules_miss_it():
    # the negative control: the default rule really is off for tanh(5 z) (its features at z ~ 0.2, spacing 0.25)
    sharp = pdlt.activation("tanh(5*z)")
    rule = float(pdlt.expect(lambda z: np.tanh(5 * z[..., 0]) ** 2, [[1.0]]))
    assert abs(rule - _mp_square("tanh(5*z)", 1.0)) > 1e-5
    calls = [lambda: pdlt.kernel_flow(pdlt.MLP(sharp, (1, 4, 4), C_b=0.1), [[1.0]]),
             lambda: pdlt.chi_perp(sharp, 1.0), lambda: pdlt.pair_average(sharp, [[1.0]]),
             lambda: pdlt.kernel_map(sharp, [[1.0]], 1.0, 0.0),
             lambda: pdlt.finite_width(pdlt.MLP("tanh(5*z)", (1, 4, 4, 4)), [[1.0]])]
    for call in calls:
        with pytest.raises(pdlt.ParameterError, match="finer than the spacing") as err:
            call()
        assert err.value.setting == "activation"
    # aliasing: sin(20 z)'s sigma^4 holds cos(80 z), which the 0.25 spacing folds onto a frequency the Gaussian
    # barely damps (the vertex at K = 0.5 was 0.138 against the exact 3/8 - 1/4 = 0.125)
    with pytest.raises(pdlt.ParameterError, match="finer than the spacing"):
        pdlt.finite_width(pdlt.MLP("sin(20*z)", (1, 4, 4)), [[0.5]])
    # and a frequency that the check's two spacings (1/4, 1/16) fold alike: sin(50 z)'s cos(100 z) (its kernel at
    # K = 0.5 came out 0.42 against the exact (1 - e^-50)/2 = 0.5) and sin(100 z)'s
    for a in (50, 100):
        with pytest.raises(pdlt.ParameterError, match="finer than the spacing") as err:
            pdlt.finite_width(pdlt.MLP(f"sin({a}*z)", (3, 10, 10, 10)), [1.0, 0.5, -0.3])
        assert err.value.setting == "activation"
    # a network with no hidden layer averages nothing: nothing to refuse
    assert pdlt.kernel_flow(pdlt.MLP(sharp, (1, 4)), [[1.0]]).K.shape == (1, 1, 1)


def test_rescaling_advice_is_exact():
    # the advice in the refusal: sigma(z) = s(a z) with s = tanh, a = 3; the network of sigma with (C_W, C_b, x) is
    # the network of tanh with a^2 C_W (layers >= 2), a^2 C_b and input a x, in units of a z; checked against mpmath
    # averages of tanh(3 z) itself
    a, C_W, C_b, x = 3.0, 1.3, 0.2, 0.7
    with pytest.raises(pdlt.ParameterError):
        pdlt.kernel_flow(pdlt.MLP("tanh(3*z)", (1, 4, 4, 4), C_W=C_W, C_b=C_b), [[x]])
    net = pdlt.MLP("tanh", (1, 4, 4, 4), C_W=[C_W, a * a * C_W, a * a * C_W], C_b=a * a * C_b)
    K = pdlt.kernel_flow(net, [[a * x]]).K[:, 0, 0] / a**2
    want = [C_b + C_W * x * x]
    for _ in range(2):
        want.append(C_b + C_W * _mp_square("tanh(3*z)", want[-1]))
    np.testing.assert_allclose(K, want, rtol=1e-12)

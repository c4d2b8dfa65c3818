"""Layer steps (pdlt.layers): each step's maps against closed forms, the residual sampler against the exact layer-2
statistics, and the MLP's residual parameters."""

import numpy as np
import pytest

import pdlt
from pdlt.errors import ParameterError
from pdlt.layers import STEP_TYPES, Dense, Input, Residual, metric, step_for
from pdlt.montecarlo.samplers import sample_layers

X = np.array([[1.0, 0.5, -0.3, 0.2], [0.2, -0.9, 0.4, 0.1]])


def test_metric_is_the_first_layer_kernel():
    K1 = pdlt.first_layer_kernel(X, 1.7, 0.3)
    want = 0.3 + 1.7 * np.einsum("ai,bi->ab", X, X) / X.shape[1]
    np.testing.assert_allclose(K1, want, rtol=1e-15)
    np.testing.assert_allclose(metric(X, 1.7, 0.3), want, rtol=1e-15)


def test_step_selection_and_registry():
    assert isinstance(step_for(1.0, 0.0), Dense)
    assert isinstance(step_for(1.0, 0.0, gamma=0.5), Residual)
    assert isinstance(step_for(1.0, 0.0, xi=2.0), Residual)
    assert set(STEP_TYPES) >= {"dense", "residual"}
    net = pdlt.MLP("tanh", (4, 8, 8, 8), gamma=[0.0, 0.3, 0.0], xi=[1.0, 1.0, 1.0])
    assert [s.kind for s in net.steps] == ["input", "residual", "dense"]
    assert isinstance(net.steps[0], Input) and not pdlt.MLP("tanh", (4, 8, 8)).residual


def test_residual_kernel_map():
    K = np.array([[1.2, 0.3], [0.3, 0.8]])
    ss = pdlt.pair_average("tanh", K)
    step = Residual(1.3, 0.1, gamma=0.6, xi=0.9)
    np.testing.assert_allclose(step.kernel_map(K, ss), 0.36 * K + 0.81 * (0.1 + 1.3 * ss), rtol=1e-15)
    np.testing.assert_allclose(Residual(1.3, 0.1).kernel_map(K, ss), Dense(1.3, 0.1).kernel_map(K, ss), rtol=1e-15)
    assert step.chi(0.5) == pytest.approx(0.36 + 0.81 * 0.5)


def test_residual_flow_is_critical_on_its_line():
    """ReLU: C_W = (1 - gamma^2) / (xi^2 A_2), A_2 = 1/2, keeps every K_aa fixed (PDLT appendix B); the
    off-diagonal entries still flow (the correlation grows toward 1)."""
    g, xi = 0.8, 1.5
    net = pdlt.MLP("relu", (4,) + (16,) * 6, C_W=2 * (1 - g * g) / xi**2, gamma=g, xi=xi)
    K = pdlt.kernel_flow(net, X).K
    diag = np.diagonal(K, axis1=1, axis2=2)
    np.testing.assert_allclose(diag[1:], np.broadcast_to(diag[0], diag[1:].shape), rtol=1e-13)
    rho = K[:, 0, 1] / np.sqrt(diag[:, 0] * diag[:, 1])
    assert np.all(np.diff(rho) > 0)


@pytest.mark.parametrize("method", ["markov", "weights"])
def test_residual_sampler_layer_two_exact(method):
    """Layer 2 of a residual ReLU net, one input: exact at every width n,
    n E[z_0 z_1^2] = gamma xi^2 C_W <z sigma^2> and n Cov(z_0^2, z_1^2) = C_W^2 xi^4 Var(sigma^2)
    + 2 gamma^2 xi^2 C_W Cov(z^2, sigma^2) (averages at K^(1); a plain MLP has 0 for the first). Both samplers."""
    g, xi, n, N = 0.5**0.5, 1.2, 8, 100_000
    net = pdlt.MLP("relu", (4, n, n), C_W=1.0, gamma=g, xi=xi)
    x = X[:1] * 0.9
    K1 = pdlt.first_layer_kernel(x, 1.0, 0.0)[0, 0]
    z = sample_layers(net, x, N, seed=3, method=method)[1][:, :, 0]
    # Gaussian averages of ReLU at K1: <z s^2> = K^{3/2} sqrt(2/pi), <s^4> = 3K^2/2, <s^2> = K/2, <z^2 s^2> = 3K^2/2
    T = g * xi**2 * K1**1.5 * np.sqrt(2 / np.pi)
    V2 = xi**4 * (1.5 * K1**2 - 0.25 * K1**2) + 2 * g**2 * xi**2 * (1.5 * K1**2 - K1 * 0.5 * K1)
    t = n * z[:, 0] * z[:, 1] ** 2
    K2 = g**2 * K1 + xi**2 * 0.5 * K1
    v = n * (z[:, 0] ** 2 * z[:, 1] ** 2 - K2**2)
    for name, samples, want in (("T", t, T), ("V2", v, V2)):
        m, se = samples.mean(), samples.std() / np.sqrt(N)
        assert abs(m - want) < 5 * se, (name, m, se, want)
    # negative control: the plain-MLP value T = 0 is rejected
    assert abs(t.mean()) > 5 * t.std() / np.sqrt(N)


def test_deep_linear_residual_two_point_exact():
    """sigma = identity: E[z'^2] = gamma^2 E[z^2] + xi^2 (C_b + C_W E[z^2]) exactly at every width, so the sampled
    two-point function equals the leading-order kernel flow (any n)."""
    net = pdlt.MLP("linear", (4, 6, 6, 6, 6), C_W=0.7, C_b=0.1, gamma=0.6, xi=[1.0, 0.9, 1.1, 1.0])
    x = X[:1]
    K = pdlt.kernel_flow(net, x).K[:, 0, 0]
    zs = sample_layers(net, x, 40_000, seed=5)
    for l, z in enumerate(zs):
        s = np.mean(z[:, :, 0] ** 2, axis=1)  # per-network average over neurons: independent samples
        assert abs(s.mean() - K[l]) < 5 * s.std() / np.sqrt(s.size), (l, s.mean(), K[l])


def test_residual_parameter_errors():
    with pytest.raises(ParameterError, match="equal widths"):
        pdlt.MLP("relu", (2, 8, 4), gamma=0.5)
    with pytest.raises(ParameterError, match="layer 1 has no previous layer"):
        pdlt.MLP("relu", (2, 8, 8), gamma=[0.5, 0.5])
    with pytest.raises(ParameterError, match="length L"):
        pdlt.MLP("relu", (2, 8, 8), gamma=[0.0, 0.5, 0.5])
    for bad in (float("nan"), "0.5", 1j):
        with pytest.raises(ParameterError):
            pdlt.MLP("relu", (2, 8, 8), xi=bad)
    # xi only on layers >= 2 with gamma = 0: a residual step with a rescaled branch (widths may change)
    assert pdlt.MLP("relu", (2, 8, 4), xi=2.0).residual


def test_posterior_refuses_residual_networks():
    net = pdlt.MLP("tanh", (2, 8, 8, 1), gamma=[0.0, 0.5, 0.0])
    with pytest.raises(ParameterError, match="langevin_posterior"):
        pdlt.posterior(net, [[1.0, 0.0]], [0.3], [[0.0, 1.0]], noise_var=0.1)
    with pytest.raises(ParameterError, match="odd cumulants"):
        pdlt.effective_action(net, [[1.0, 0.0]])


def test_user_jax_configuration_untouched():
    import jax

    before = jax.config.jax_enable_x64
    sample_layers(pdlt.MLP("tanh", (2, 4, 4)), np.ones((1, 2)), 2)
    assert jax.config.jax_enable_x64 == before


def test_delta_expansion_refuses_residual_networks():
    net = pdlt.MLP("tanh", (2, 8, 8), gamma=0.5)
    for fn in (pdlt.delta_flow, pdlt.delta_finite_width):
        with pytest.raises(ParameterError, match="plain MLPs only"):
            fn(net, [1.0, 0.0], [0.0, 0.1])


def test_symbolic_residual_recursion_matches_the_numeric_flow():
    """sym.kernel_recursion(..., residual=True), written by the same step, against kernel_flow (two inputs, ReLU's
    closed-form arc-cosine map: an independent evaluation of <sigma sigma>)."""
    from pdlt import symbolic as sym

    g, xi, C_W, C_b = 0.6, 0.9, 1.4, 0.2
    net = pdlt.MLP("relu", (4, 8, 8), C_W=C_W, C_b=C_b, gamma=g, xi=xi)
    K = pdlt.kernel_flow(net, X).K
    eqs = sym.kernel_recursion("relu", inputs=2, residual=True)
    (a, b, c), _ = eqs["symbols"]
    subs = {a: K[0, 0, 0], b: K[0, 1, 1], c: K[0, 0, 1], sym.symbols.gamma: g, sym.symbols.xi: xi,
            sym.symbols.C_W: C_W, sym.symbols.C_b: C_b}
    for key, (i, j) in (("11", (0, 0)), ("22", (1, 1)), ("12", (0, 1))):
        assert float(eqs[key].rhs.subs(subs)) == pytest.approx(K[1, i, j], rel=1e-13)

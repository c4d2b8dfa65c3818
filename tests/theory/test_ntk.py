"""The frozen NTK (pdlt.ntk) against an independent explicit-weight computation: JAX Jacobians of sampled networks
written here (not pdlt's samplers), at widths where the recursion is exact, plus closed forms and bad input."""

import numpy as np
import pytest

import pdlt
from pdlt.errors import DivergentFlowError, ParameterError

X = np.array([[1.0, 0.5, -0.3], [0.2, -0.9, 0.4]])


def _mc_ntk(net, x, lambda_b, lambda_W, N, seed):
    """Per-network NTK ``H_{ii;ab}`` of every layer, averaged over the output neurons i: ``(N, L, d, d)``. The network
    is written out here: ``z^(l) = gamma z^(l-1) + xi (b + W act(z^(l-1)))`` with explicit ``W ~ N(0, C_W/n)``."""
    import jax
    import jax.numpy as jnp

    L, ws = net.L, net.widths
    act = {"tanh": jnp.tanh, "relu": lambda z: jnp.maximum(z, 0.0), "linear": lambda z: z}[net.activation.name]
    lb, lw = np.broadcast_to(lambda_b, (L,)), np.broadcast_to(lambda_W, (L,))

    def forward(params, x):
        zs, h, z = [], x, None
        for l, (W, b) in enumerate(params):
            branch = h @ W.T + b
            z = branch if l == 0 else net.gamma[l] * z + net.xi[l] * branch
            zs.append(z)
            h = act(z)
        return zs

    def one(key):
        params = []
        for l in range(L):
            k1, k2 = jax.random.split(jax.random.fold_in(key, l))
            params.append((jax.random.normal(k1, (ws[l + 1], ws[l])) * jnp.sqrt(net.C_W[l] / ws[l]),
                           jax.random.normal(k2, (ws[l + 1],)) * jnp.sqrt(net.C_b[l])))
        out = []
        for l in range(L):
            J = jax.jacrev(lambda p: forward(p, x)[l])(params)   # per parameter: (d, n_l, *param shape)
            H = 0.0
            for m, (JW, Jb) in enumerate(J):
                H = H + (lw[m] / ws[m]) * jnp.einsum("aiuv,biuv->abi", JW, JW) + lb[m] * jnp.einsum("aiu,biu->abi", Jb, Jb)
            out.append(jnp.mean(H, axis=-1))
        return jnp.stack(out)

    with jax.enable_x64(True):
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(seed), s))(jax.numpy.arange(N))
        return np.asarray(jax.jit(jax.vmap(one))(keys))


def _z(H, want):
    m, se = H.mean(axis=0), H.std(axis=0, ddof=1) / np.sqrt(H.shape[0])
    return (m - want) / se


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_layer_two_is_exact_at_any_width(name):
    """E[H^(2)] = lambda_b + lambda_W <s s> + C_W <s' s'> Theta^(1): layer 1's neurons are independent and
    E[W^2] = C_W/n, so no 1/n term at layer 2 (width n = 3 here)."""
    net = pdlt.MLP(name, (3, 3, 3), C_W=1.6, C_b=0.2)
    th = pdlt.ntk(net, X, lambda_b=0.7, lambda_W=1.3)
    H = _mc_ntk(net, X, 0.7, 1.3, 40_000, seed=1)
    np.testing.assert_allclose(H[:, 0].mean(0), th.Theta[0], rtol=1e-12)   # layer 1: deterministic
    assert np.all(np.abs(_z(H[:, 1], th.Theta[1])) < 5)


@pytest.mark.parametrize("gamma, xi", [(0.0, 1.0), (0.6, 0.9)])
def test_deep_linear_mean_ntk_is_exact(gamma, xi):
    """sigma = identity (dense or residual): E[H^(l+1)] = gamma^2 E[H] + xi^2 (lambda_b + lambda_W E[z z] + C_W E[H])
    with E[z z] = K exactly, so the frozen recursion is the mean NTK at every width and layer."""
    net = pdlt.MLP("linear", (3, 4, 4, 4, 4), C_W=0.9, C_b=0.1, gamma=gamma, xi=xi)
    th = pdlt.ntk(net, X, lambda_b=[0.5, 0.2, 0.3, 0.4], lambda_W=1.1)
    H = _mc_ntk(net, X, np.array([0.5, 0.2, 0.3, 0.4]), 1.1, 20_000, seed=2)
    for l in range(net.L):
        assert np.all(np.abs(_z(H[:, l], th.Theta[l])) < 5) if l else np.allclose(H[:, 0].mean(0), th.Theta[0])


def test_relu_critical_closed_form():
    """ReLU at C_W = 2, C_b = 0 keeps K; each layer adds lambda_b + lambda_W K_ab-map and multiplies by
    2 <s' s'> = chi_perp: on the diagonal Theta^(l) = Theta^(1) + (l - 1)(lambda_b + lambda_W K/2)."""
    net = pdlt.MLP("relu", (3,) + (8,) * 6, C_W=2.0)
    th = pdlt.ntk(net, X[:1], lambda_b=0.3, lambda_W=0.8)
    K = pdlt.first_layer_kernel(X[:1], 2.0, 0.0)[0, 0]
    want = th.Theta[0, 0, 0] + np.arange(6) * (0.3 + 0.8 * K / 2)
    np.testing.assert_allclose(th.Theta[:, 0, 0], want, rtol=1e-13)
    np.testing.assert_allclose(th.gradient_growth()[:, 0], 1.0, rtol=1e-13)


def test_branch_scale_equals_dense_with_scaled_rates():
    """gamma = 0, xi: z' = xi (b + W s) is dense with (xi^2 C_W, xi^2 C_b) and learning rates xi^2 (lambda_b, lambda_W)."""
    xi = 1.3
    res = pdlt.ntk(pdlt.MLP("tanh", (3, 8, 8, 8), C_W=1.1, C_b=0.1, xi=xi), X, lambda_b=0.4, lambda_W=0.9)
    dense = pdlt.ntk(pdlt.MLP("tanh", (3, 8, 8, 8), C_W=[1.1, 1.1 * xi**2, 1.1 * xi**2], C_b=[0.1, 0.1 * xi**2, 0.1 * xi**2]),
                     X, lambda_b=[0.4, 0.4 * xi**2, 0.4 * xi**2], lambda_W=[0.9, 0.9 * xi**2, 0.9 * xi**2])
    np.testing.assert_allclose(res.Theta, dense.Theta, rtol=1e-13)


def test_bad_learning_rates_and_divergence():
    net = pdlt.MLP("tanh", (3, 8, 8))
    for bad in (-1.0, float("nan"), float("inf"), "1", 1j, [1.0, 2.0, 3.0]):
        with pytest.raises(ParameterError):
            pdlt.ntk(net, X, lambda_W=bad)
    with pytest.raises(ParameterError, match="identically 0"):
        pdlt.ntk(net, X, lambda_b=0.0, lambda_W=[0.0, 0.0])
    with pytest.raises(DivergentFlowError, match="learning rates"):
        pdlt.ntk(pdlt.MLP("relu", (3,) + (8,) * 60, C_W=2.0), X[:1], lambda_W=1e305)
    with pytest.raises(DivergentFlowError, match="layer l = 1001"):   # the kernel itself (chaotic phase)
        pdlt.ntk(pdlt.MLP("relu", (3,) + (8,) * 1100, C_W=4.0), X[:1])
    # ordered phase: gradients vanish, reported by gradient_growth, never as an underflowed NaN
    g = pdlt.ntk(pdlt.MLP("tanh", (3,) + (8,) * 40, C_W=0.5), X).gradient_growth()
    assert np.all(np.isfinite(g)) and g[-1].max() < 1e-6


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_symbolic_recursion_matches_numeric(name):
    """sym.ntk_recursion (the step's ntk_map in sympy; tanh's averages by mpmath) against pdlt.ntk, one input."""
    from pdlt import symbolic as sym
    from pdlt.symbolic import symbols as S

    net = pdlt.MLP(name, (3, 8, 8), C_W=1.3, C_b=0.2)
    th = pdlt.ntk(net, X[:1], lambda_b=0.4, lambda_W=0.9)
    K1 = pdlt.kernel_flow(net, X[:1]).K[0, 0, 0]
    rhs = sym.ntk_recursion(name).rhs.subs({S.Theta_l: th.Theta[0, 0, 0], S.K_l: K1, S.C_W: 1.3, S.lambda_W: 0.9,
                                            S.lambda_b: 0.4})
    assert float(rhs.evalf(20)) == pytest.approx(th.Theta[1, 0, 0], rel=1e-11)


def test_critical_learning_rates_scale_invariant_exact():
    """ReLU at C_W = 2, lambda = lambda~/L: each layer adds (lambda~_b + lambda~_W A_2 K)/L with A_2 K = x.x/n_0, the
    first layer (lambda~_b + lambda~_W x.x/n_0)/L, so Theta^(L) = lambda~_b + lambda~_W x.x/n_0 at every L."""
    x = X[:1]
    for L in (1, 3, 40):
        lr = pdlt.critical_learning_rates("relu", L, lambda_b=0.6, lambda_W=0.8)
        th = pdlt.ntk(pdlt.MLP("relu", (3,) + (8,) * L, C_W=2.0), x, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)
        assert th.Theta[-1, 0, 0] == pytest.approx(0.6 + 0.8 * float(x[0] @ x[0]) / 3, rel=1e-12)


def test_critical_learning_rates_kstar0_limit():
    """tanh at criticality with lambda_b = lambda~_b/L, lambda_W = lambda~_W: Theta^(L) -> lambda~_b/(1 + p_perp) +
    lambda~_W/(C_W (-a_1) p_perp) = 0.3 + 0.4 (p_perp = 1, a_1 = -2), with corrections of relative order ln(L)/L
    (as K's own large-depth series); the error shrinks with L."""
    errs = []
    for L in (250, 1000):
        lr = pdlt.critical_learning_rates("tanh", L, lambda_b=0.6, lambda_W=0.8)
        th = pdlt.ntk(pdlt.MLP("tanh", (1,) + (1,) * L, C_W=1.0), [[1.0]], lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)
        errs.append(abs(th.Theta[-1, 0, 0] / 0.7 - 1))
        assert errs[-1] < 2 * np.log(L) / L
    assert errs[1] < errs[0] / 2
    with pytest.raises(ParameterError, match="half-stable"):
        pdlt.critical_learning_rates("gelu", 10)


def test_with_net_reuses_only_what_holds():
    """with_net keeps Theta and the statistics for another hidden width with the same ratios, and refuses
    anything else (a stale answer would be silent)."""
    x = np.array([[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4]])
    th = pdlt.ntk(pdlt.MLP("tanh", (3, 8, 8, 8), C_W=1.2), x, lambda_b=0.7, lambda_W=1.3)
    th.A  # computed before the reuse: must not leak into a network it does not describe
    wide = pdlt.MLP("tanh", (3, 32, 32, 32), C_W=1.2)
    direct = pdlt.ntk(wide, x, lambda_b=0.7, lambda_W=1.3)
    for name in ("ntk_mean", "A", "T", "ntk_variance"):
        np.testing.assert_allclose(th.with_net(wide).prediction(name, 3), direct.prediction(name, 3), rtol=1e-12)
    for bad in (pdlt.MLP("tanh", (3, 8, 8, 8), C_W=2.0), pdlt.MLP("tanh", (3, 8, 32, 8), C_W=1.2),
                pdlt.MLP("tanh", (3, 8, 8), C_W=1.2), pdlt.MLP("relu", (3, 8, 8, 8), C_W=1.2), "net"):
        with pytest.raises(ParameterError) as err:
            th.with_net(bad)
        assert err.value.setting == "net"
    with pytest.raises(ParameterError) as err:
        th.prediction("A", 2.0)
    assert err.value.setting == "l"

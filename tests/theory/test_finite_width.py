"""Order-1/n theory: four-point vertex V, NLO kernel G1, observables (pdlt.theory.finite_width).

Independent checks: exact finite-width results of deep linear networks expanded to O(1/n) (sympy), the
scale-invariant closed forms at criticality, the single-input recursion of derivations/README.md §7-8 (1D quadrature),
the book's raised-index form of the recursions (full d-dim integrals with K^{-1}), closed forms of the
Hermite averages for ReLU, direct-derivative quadrature for tanh, numpy Monte Carlo with the exact
conditional-Gaussian layer sampler, and hypothesis properties (symmetry, PSD, rescaling).
"""

import itertools
import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import pdlt
from pdlt import gaussian
from pdlt.errors import DivergentFlowError, SingularKernelError
from pdlt.testing import datasets
from pdlt.theory.criticality import single_input
from pdlt.theory.finite_width import (
    FiniteWidth,
    finite_width,
    four_point_distinct,
    layer_averages,
)

X2 = np.array([[1.0, 0.2, -0.4], [0.3, -0.8, 0.5]])
X3 = np.array([[1.0, 0.2, -0.4], [0.3, -0.8, 0.5], [-0.6, 0.1, 0.9]])


def _sym_ok(V, rtol=1e-12):
    s = max(np.abs(V).max(), 1e-300)
    return all(
        np.abs(V - np.einsum(p, V)).max() <= rtol * s
        for p in ("...abcd->...bacd", "...abcd->...abdc", "...abcd->...cdab")
    )


# ---------------------------------------------------------------------------------------------------
# deep linear networks: exact finite-width results (PDLT ch. 3), expanded to O(1/n)
# ---------------------------------------------------------------------------------------------------


def test_linear_single_input_no_bias_product_formula():
    """E z^4 = 3 K^2 prod_{l'<l} (1 + 2/n_l') exactly, so V^(l) = n_{l-1} K^2 sum_{l'<l} 2/n_l', G1 = 0."""
    widths = (3, 7, 20, 5, 13, 40, 9)
    C_W = [0.7, 1.3, 0.9, 1.6, 0.5, 1.1]
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=0.0)
    x = np.array([0.4, -1.1, 0.8])
    th = finite_width(net, x)
    K = th.K[:, 0, 0]
    for l in range(1, net.L + 1):
        v = widths[l - 1] * K[l - 1] ** 2 * sum(2.0 / widths[lp] for lp in range(1, l))
        assert th.V[l - 1, 0, 0, 0, 0] == pytest.approx(v, rel=1e-12, abs=1e-300)
        # the exact product formula: its O(1/n) term (widths scaled by 1/eps, eps -> 0)
        eps = sp.Symbol("eps", positive=True)
        prod = sp.prod([1 + 2 * eps / widths[lp] for lp in range(1, l)])
        kappa = 3 * (prod - 1)  # (E z^4 - 3 (E z^2)^2)/K^2 = 3 V/(n_{l-1} K^2)
        first = sp.series(kappa, eps, 0, 2).removeO().coeff(eps, 1)
        assert th.normalized_vertex(l)[0] == pytest.approx(float(first) / 3, rel=1e-12, abs=1e-300)
    assert np.abs(th.G1).max() <= 1e-13 * max(np.abs(th.K).max(), np.abs(th.V).max())  # rounding only


def _linear_exact_vertex(widths, C_W, C_b, x):
    """Exact second moments of the stochastic metric of a deep linear network (sympy, n_l = widths_l/eps).

    Ghat^(l+1)_ab = C_b + C_W/n_l sum_j z_ja z_jb with z_j | layer l iid N(0, Ghat^(l)), so with
    m = E Ghat and S_abcd = E[Ghat_ab Ghat_cd]:
        m' = C_b + C_W m,   S'_abcd = C_b^2 + C_b C_W (m_ab + m_cd) + C_W^2 [S_abcd + (S_acbd + S_adbc)/n_l].
    Returns (E z z = m, V_exact(eps) = n_{l-1} Cov(Ghat)) per layer, as sympy objects in eps.
    """
    eps = sp.Symbol("eps", positive=True)
    d = x.shape[0]
    L = len(widths) - 1
    x = sp.Matrix(x.tolist()).applyfunc(sp.nsimplify)  # exact rationals: the O(1) parts cancel exactly
    n0 = widths[0]
    K1 = sp.Matrix(d, d, lambda a, b: sp.nsimplify(C_b[0]) + sp.nsimplify(C_W[0]) * (x.row(a).dot(x.row(b))) / n0)
    m = K1
    S = {idx: m[idx[0], idx[1]] * m[idx[2], idx[3]] for idx in itertools.product(range(d), repeat=4)}
    ms, Vs = [m], [sp.zeros(d * d, d * d)]
    for l in range(1, L):
        n = sp.Integer(widths[l]) / eps
        cw, cb = sp.nsimplify(C_W[l]), sp.nsimplify(C_b[l])
        S = {
            (a, b, c, e): cb**2 + cb * cw * (m[a, b] + m[c, e]) + cw**2 * (S[(a, b, c, e)] + (S[(a, c, b, e)] + S[(a, e, b, c)]) / n)
            for (a, b, c, e) in itertools.product(range(d), repeat=4)
        }
        m = sp.Matrix(d, d, lambda a, b: cb + cw * m[a, b])
        V = sp.Matrix(d * d, d * d, lambda i, j: n * (S[(i // d, i % d, j // d, j % d)] - m[i // d, i % d] * m[j // d, j % d]))
        ms.append(m)
        Vs.append(V)
    return eps, ms, Vs


@pytest.mark.parametrize("d", [1, 2, 3])
def test_linear_exact_with_bias_per_layer_hyper(d):
    """Law of total cumulance for deep linear nets with biases, per-layer C_W, C_b, non-uniform widths:
    E z z = K exactly (G1 = 0) and n_{l-1} Cov(Ghat) = V + O(1/n)."""
    widths = (3, 6, 11, 4, 9)
    C_W = [1.5, 0.8, 1.25, 0.6]
    C_b = [0.3, 0.1, 0.5, 0.25]
    x = X3[:d]
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=C_b)
    th = finite_width(net, x)
    eps, ms, Vs = _linear_exact_vertex(widths, C_W, C_b, x)
    for l in range(1, net.L + 1):
        np.testing.assert_allclose(th.K[l - 1], np.array(ms[l - 1].tolist(), dtype=float), rtol=1e-13)
        V0 = np.array(Vs[l - 1].applyfunc(lambda e: sp.expand(e).subs(eps, 0)).tolist(), dtype=float)
        np.testing.assert_allclose(th.V[l - 1].reshape(d * d, d * d), V0, rtol=1e-12, atol=1e-13 * np.abs(V0).max())
    assert np.abs(th.G1).max() <= 1e-13 * max(np.abs(th.K).max(), np.abs(th.V).max())
    # the exact O(1/n) recursion for linear nets: V' = C_W^2 [r V + K_ac K_bd + K_ad K_bc]
    for l in range(1, net.L):
        cw, r, K = C_W[l], widths[l] / widths[l - 1], th.K[l - 1]
        pred = cw**2 * (r * th.V[l - 1] + np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K))
        np.testing.assert_allclose(th.V[l], pred, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------
# scale-invariant activations at criticality
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, slope", [("relu", 0.0), ("leaky_relu", 0.1), ("leaky_relu", -0.3), ("linear", 1.0)])
def test_scale_invariant_critical_vertex(name, slope):
    act = pdlt.activation(name) if name != "leaky_relu" else pdlt.activation(name, slope=slope)
    nu = 3 * act.A4 / act.A2**2 - 1
    if name == "relu":
        assert nu == pytest.approx(5.0)
    if name == "linear":
        assert nu == pytest.approx(2.0)
    L, n = 8, 40
    net = pdlt.MLP(act, (2,) + (n,) * L, C_W=1 / act.A2, C_b=0.0)
    th = finite_width(net, np.array([0.7, -1.2]))
    K = th.K[:, 0, 0]
    np.testing.assert_allclose(K, K[0], rtol=1e-14)
    np.testing.assert_allclose(th.V[:, 0, 0, 0, 0], nu * np.arange(L) * K[0] ** 2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(th.G1[:, 0, 0], 0.0, atol=1e-13 * max(K[0], np.abs(th.V).max()))  # rounding only
    for l in range(1, L + 1):
        assert th.normalized_vertex(l)[0] == pytest.approx(nu * (l - 1) / n, rel=1e-12, abs=1e-15)
        assert th.kurtosis(l)[0] == pytest.approx(3 * nu * (l - 1) / n, rel=1e-12, abs=1e-15)


def test_scale_invariant_nonuniform_widths():
    """V^(l) = nu K*^2 n_{l-1} sum_{l'<l} 1/n_l' (derivations/README.md section 9)."""
    act = pdlt.activation("relu")
    widths = (4, 30, 7, 55, 12, 20)
    net = pdlt.MLP(act, widths, C_W=2.0, C_b=0.0)
    th = finite_width(net, np.array([1.0, 0.5, -0.5, 0.2]))
    K = th.K[0, 0, 0]
    for l in range(1, net.L + 1):
        pred = 5.0 * K**2 * widths[l - 1] * sum(1.0 / widths[lp] for lp in range(1, l))
        assert th.V[l - 1, 0, 0, 0, 0] == pytest.approx(pred, rel=1e-12, abs=1e-14)


# ---------------------------------------------------------------------------------------------------
# single-input reduction and the book's raised-index form
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, C_W, C_b", [("tanh", 1.3, 0.2), ("gelu", 1.6, 0.1), ("relu", 1.8, 0.3), ("sin", 0.9, 0.05)])
def test_single_input_reduction(name, C_W, C_b):
    """d = 1 equals the single-input recursions of derivations/README.md sections 7-8, computed here with chi_par from
    pdlt.single_input and 1D quadrature:  V' = C_W^2(<s^4> - <s^2>^2) + r chi^2 V,
    G1' = r [chi G1 + C_W/(8K^4) <s^2 (z^4 - 6 K z^2 + 3 K^2)> V]."""
    act = pdlt.activation(name)
    widths = (3, 20, 35, 15, 50, 25)
    net = pdlt.MLP(act, widths, C_W=[C_W, 0.9 * C_W, 1.1 * C_W, C_W, 0.95 * C_W], C_b=C_b)
    th = finite_width(net, np.array([0.9, -0.4, 0.6]))
    K = th.K[:, 0, 0]
    V, G = [0.0], [0.0]
    for l in range(1, net.L):
        cw, _ = net.hyper(l + 1)
        r = net.width_ratio(l)
        k = K[l - 1]
        chi = single_input(act, k, cw).chi_par

        def f(z, k=k):
            s2 = act(z[..., 0]) ** 2
            z2 = z[..., 0] ** 2
            return np.stack([s2 * s2, s2, s2 * (z2 * z2 - 6 * k * z2 + 3 * k * k)], axis=-1)

        s4, s2, h4 = gaussian.expect(f, [[k]], kinks=act.kinks)
        V.append(cw**2 * (s4 - s2**2) + r * chi**2 * V[-1])
        G.append(r * (chi * G[-1] + cw / (8 * k**4) * h4 * V[-2]))
    np.testing.assert_allclose(th.V[:, 0, 0, 0, 0], V, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(th.G1[:, 0, 0], G, rtol=1e-9, atol=1e-12)


def _book_form(net, x):
    """derivations/README.md sections 7-8 literally: raised indices with the full K^{-1}, d-dimensional integrals of
    s_a s_b (z z - K) and s_a s_b H_4(z) (the book's bracket), fine quadrature."""
    act = net.activation
    K = pdlt.kernel_flow(net, x).K
    L, d = K.shape[0], K.shape[1]
    V = np.zeros((L,) + (d,) * 4)
    G = np.zeros((L, d, d))
    for l in range(1, L):
        k = K[l - 1]
        C_W, _ = net.hyper(l + 1)
        r = net.width_ratio(l)
        Ki = np.linalg.inv(k)

        def f(z, k=k):
            s = act(z)
            ss = s[..., :, None] * s[..., None, :]
            zz = z[..., :, None] * z[..., None, :]
            X = ss[..., :, :, None, None] * (zz - k)[..., None, None, :, :]
            s4 = ss[..., :, :, None, None] * ss[..., None, None, :, :]
            H = (np.einsum("...i,...j,...k,...l->...ijkl", z, z, z, z)
                 - 2 * np.einsum("...ij,kl->...ijkl", zz, k) - 4 * np.einsum("...ik,jl->...ijkl", zz, k)
                 + np.einsum("ij,kl->ijkl", k, k) + 2 * np.einsum("ik,jl->ijkl", k, k))
            Y = ss[..., :, :, None, None, None, None] * H[..., None, None, :, :, :, :]
            parts = [ss, X, s4, Y]
            return np.concatenate([p.reshape(p.shape[:2] + (-1,)) for p in parts], axis=-1)

        m = gaussian.expect(f, k, kinks=act.kinks, n=None if act.kinks else 201)
        o = np.cumsum([0, d * d, d**4, d**4])
        P2 = m[: o[1]].reshape(d, d)
        X = m[o[1] : o[2]].reshape((d,) * 4)
        P4 = m[o[2] : o[3]].reshape((d,) * 4)
        Y = m[o[3] :].reshape((d,) * 6)
        Vr = np.einsum("ai,bj,ck,dl,ijkl->abcd", Ki, Ki, Ki, Ki, V[l - 1])
        Gr = np.einsum("ai,bj,ij->ab", Ki, Ki, G[l - 1])
        V[l] = C_W**2 * (P4 - P2[:, :, None, None] * P2[None, None]) + r * C_W**2 / 4 * np.einsum("ijkl,abij,cdkl->abcd", Vr, X, X)
        G[l] = r * C_W * (0.5 * np.einsum("ij,abij->ab", Gr, X) + np.einsum("ijkl,abijkl->ab", Vr, Y) / 8)
    return V, G


@pytest.mark.parametrize("name, C_W, C_b", [("tanh", 1.3, 0.2), ("relu", 1.8, 0.3), ("leaky_relu(0.2)", 1.7, 0.0), ("erf", 1.1, 0.1)])
def test_hessian_form_equals_book_form(name, C_W, C_b):
    """The Stein/Hessian form (no full K^{-1}) equals the book's raised-index contraction, two inputs."""
    net = pdlt.MLP(name, (3, 20, 30, 25, 40, 10), C_W=[C_W, 0.9 * C_W, 1.1 * C_W, C_W, 0.8 * C_W],
                   C_b=[C_b, 0.5 * C_b, C_b, 2 * C_b, C_b])
    th = finite_width(net, X2)
    V, G = _book_form(net, X2)
    np.testing.assert_allclose(th.V, V, rtol=0, atol=2e-11 * np.abs(V).max())
    np.testing.assert_allclose(th.G1, G, rtol=0, atol=2e-11 * max(np.abs(G).max(), 1e-3))


# ---------------------------------------------------------------------------------------------------
# the Gaussian averages themselves
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.3, -0.7, 0.99, 1 - 1e-6])
def test_relu_hessian_averages_closed_forms(rho):
    """ReLU: <d_a^2(s_a s_c)> = sqrt(K_cc(1-rho^2))/(2 pi sqrt(K_aa)), <s'_a s'_c> = 1/4 + asin(rho)/(2pi),
    <d_a^2 d_c^2 (s_a s_c)> = <delta_a delta_c> = 1/(2 pi sqrt(det K)),
    <d_a^3 d_c (s_a s_c)> = <delta'_a theta_c> = -rho/(2 pi K_aa sqrt(1 - rho^2))."""
    ka, kc = 1.2, 0.7
    k = np.array([[ka, rho * math.sqrt(ka * kc)], [rho * math.sqrt(ka * kc), kc]])
    avg = layer_averages("relu", k)
    D, Q = avg.D[0, 0, 1], avg.Qp[0, 0]
    s1 = math.sqrt((1 - rho) * (1 + rho))
    assert D[0, 0] == pytest.approx(math.sqrt(kc) * s1 / (2 * math.pi * math.sqrt(ka)), rel=1e-10)
    assert D[1, 1] == pytest.approx(math.sqrt(ka) * s1 / (2 * math.pi * math.sqrt(kc)), rel=1e-10)
    assert D[0, 1] == pytest.approx(0.25 + math.asin(rho) / (2 * math.pi), rel=1e-13)
    assert Q[0, 0, 1, 1] == pytest.approx(1 / (2 * math.pi * math.sqrt(ka * kc) * s1), rel=1e-9)
    assert Q[0, 0, 0, 1] == pytest.approx(-rho / (2 * math.pi * ka * s1), rel=1e-9)
    assert Q[1, 0, 1, 1] == pytest.approx(-rho / (2 * math.pi * kc * s1), rel=1e-9)
    # single input: (relu^2)'' = 2 theta, (relu^2)'''' = 2 delta' -> <.> = 0
    avg1 = layer_averages("relu", [[ka]])
    assert avg1.D[0, 0, 0, 0, 0] == pytest.approx(1.0, rel=1e-14)
    assert abs(avg1.Qd[0, 0]) < 1e-14


def test_tanh_hessian_averages_direct_derivatives():
    """tanh: D and Q against direct quadrature of sigma^(i)(z_a) sigma^(j)(z_c) (sympy derivatives)."""
    z = sp.Symbol("z")
    ds = [sp.lambdify(z, sp.diff(sp.tanh(z), z, i), "numpy") for i in range(5)]
    pairs = [(2, 0), (1, 1), (0, 2), (4, 0), (3, 1), (2, 2), (1, 3), (0, 4)]

    def f(u):
        return np.stack([ds[i](u[..., 0]) * ds[j](u[..., 1]) for i, j in pairs], axis=-1)

    for rho in (0.4, -0.95, 0.9999):
        k = np.array([[1.7, rho * math.sqrt(1.7 * 0.4)], [rho * math.sqrt(1.7 * 0.4), 0.4]])
        ref = gaussian.expect(f, k, n=301)
        avg = layer_averages("tanh", k)
        D, Q = avg.D[0, 0, 1], avg.Qp[0, 0]
        mine = [D[0, 0], D[0, 1], D[1, 1], Q[0, 0, 0, 0], Q[0, 0, 0, 1], Q[0, 0, 1, 1], Q[0, 1, 1, 1], Q[1, 1, 1, 1]]
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("scale", [pytest.param(0.3, marks=pytest.mark.slow), 1.0,
                                   pytest.param(2.0, marks=pytest.mark.slow)])   # suite time
def test_four_distinct_inputs_tanh(scale):
    """The conditioned 3D + table rule for four distinct inputs against an independent 2 + 2 conditioning
    (outer 2D trapezoid, inner 2D trapezoid with shifted means), both fine."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    K4 = scale * (A @ A.T / 4 + 0.3 * np.eye(4))
    t = np.tanh
    Kuu, Kvu, Kvv = K4[:2, :2], K4[2:, :2], K4[2:, 2:]
    Bm = Kvu @ np.linalg.inv(Kuu)
    Lc = np.linalg.cholesky(Kvv - Bm @ Kvu.T)
    ax = np.linspace(-9, 9, 121)
    W0, W1 = np.meshgrid(ax, ax, indexing="ij")
    wts = np.exp(-0.5 * (W0**2 + W1**2)).ravel()
    wts /= wts.sum()
    xi = (Lc @ np.stack([W0.ravel(), W1.ravel()])).T

    def outer(u):
        m = (u @ Bm.T).reshape(-1, 2)
        inner = np.concatenate([
            (t(mm[:, None, 0] + xi[None, :, 0]) * t(mm[:, None, 1] + xi[None, :, 1])) @ wts
            for mm in np.array_split(m, max(1, m.shape[0] // 256))
        ])
        return t(u[..., 0]) * t(u[..., 1]) * inner.reshape(u.shape[:-1])

    ref = gaussian.expect(outer, Kuu, n=121)
    assert four_point_distinct("tanh", K4) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("slope", [0.0, 0.25, -0.6])
def test_scale_invariant_three_and_four_point_closed_forms(slope):
    """Closed forms (3 inputs) and the path integral for <|z z z z|> (4 inputs) against the nested quadrature
    rule at moderate correlations (where that rule is accurate to ~1e-13)."""
    act = pdlt.activation("leaky_relu", slope=slope)
    rng = np.random.default_rng(4)
    for _ in range(3):
        A = rng.normal(size=(4, 4))
        K = A @ A.T + 1.5 * np.eye(4)
        K3 = K[:3, :3]
        avg = layer_averages(act, K3)
        ref3 = gaussian.expect(lambda z: act(z).prod(-1)[..., None] * act(z), K3, kinks=(0.0,))
        np.testing.assert_allclose([avg.P4[0, 0, 0, 1, 2], avg.P4[0, 0, 1, 1, 2], avg.P4[0, 0, 1, 2, 2]], ref3,
                                   rtol=1e-12)
        ref4 = gaussian.expect(lambda z: act(z).prod(-1), K, kinks=(0.0,))
        assert four_point_distinct(act, K) == pytest.approx(ref4, rel=1e-11)


def test_abs4_near_collinear_limit():
    """<|z_0 z_1 z_2 z_3|> with z_1 -> 2 z_0 tends to 2 <z_0^2 |z_2||z_3|> (3-input closed form): the path
    integral stays accurate for correlations up to 1 - 1e-9."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6))
    x[1] = 2 * x[0] + 1e-5 * rng.normal(size=6)
    K = x @ x.T / 6
    limit = 2 * layer_averages(pdlt.activation("leaky_relu", slope=-1.0), K[np.ix_([0, 2, 3], [0, 2, 3])]).P4[0, 0, 0, 1, 2]
    val = four_point_distinct(pdlt.activation("leaky_relu", slope=-1.0), K)  # s = |z|
    assert val == pytest.approx(limit, rel=2e-5)


def test_layer2_vertex_is_exact_monte_carlo():
    """V^(2)/n_1 = Cov(Ghat^(2)) exactly, with Ghat^(2) = C_b + C_W/n_1 sum_j s(z_j) s(z_j)^T and z_j iid
    N(0, K^(1)): for n_1 = 1 this is C_W^2 Cov(s_a s_b, s_c s_d), sampled directly (3 inputs, sin)."""
    net = pdlt.MLP("sin", (3, 17, 5), C_W=1.4, C_b=0.2)
    th = finite_width(net, X3)
    K1 = th.K[0]
    rng = np.random.default_rng(7)
    z = rng.standard_normal((1_000_000, 3)) @ np.linalg.cholesky(K1).T
    s = np.sin(z)
    pp = (s[:, :, None] * s[:, None, :]).reshape(-1, 9) * 1.4
    B = 50
    covs = np.array([np.cov(b.T) for b in np.array_split(pp, B)])
    mc, se = covs.mean(0), covs.std(0, ddof=1) / math.sqrt(B)
    zs = (mc - th.V[1].reshape(9, 9)) / se
    assert np.abs(zs).max() < 5, zs


# ---------------------------------------------------------------------------------------------------
# Monte Carlo of finite networks (exact conditional-Gaussian layer sampler)
# ---------------------------------------------------------------------------------------------------


def _sample_metric(net, x, n_nets, chunk, seed):
    """Ghat^(L) of ``n_nets`` independent networks: rows z^(l+1)_i iid N(0, Ghat^(l+1)),
    Ghat^(l+1) = C_b + C_W/n_l s(z^(l))^T s(z^(l)) (exact in distribution); two inputs."""
    rng = np.random.default_rng(seed)
    act = net.activation
    K1 = pdlt.first_layer_kernel(x, *net.hyper(1))
    out = []
    for _ in range(n_nets // chunk):
        G = np.broadcast_to(K1, (chunk, 2, 2))
        for l in range(1, net.L):
            n = net.widths[l]
            a = np.sqrt(G[:, 0, 0])
            b = G[:, 0, 1] / a
            c = np.sqrt(np.maximum(G[:, 1, 1] - b * b, 0.0))
            w = rng.standard_normal((chunk, n, 2))
            z0 = a[:, None] * w[..., 0]
            z1 = b[:, None] * w[..., 0] + c[:, None] * w[..., 1]
            s = act(np.stack([z0, z1], axis=-1))
            C_W, C_b = net.hyper(l + 1)
            G = C_b + C_W * np.einsum("bni,bnj->bij", s, s) / n
        out.append(G)
    return np.concatenate(out)


def test_monte_carlo_layer3_tanh():
    """tanh, n = 32, L = 3, two inputs, 2e5 networks: V^(3) = n_2 Cov(Ghat^(3)) and
    G1^(3) = n_2 (E Ghat^(3) - K^(3)) within 5 batch-means standard errors plus an allowance for the
    O(1/n) remainder of the truncated prediction: (max|V| + max|G1|)/n per entry (i.e. a relative
    next-order coefficient <= 1 at n = 32; measured remainders at n = 32 are ~0.3 of this)."""
    net = pdlt.MLP("tanh", (3, 32, 32, 32), C_W=1.5, C_b=0.2)
    x = np.array([[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4]])
    th = finite_width(net, x)
    n = net.widths[2]
    G = _sample_metric(net, x, 200_000, 10_000, seed=11)
    Gb = G.reshape(40, -1, 4)
    means = Gb.mean(1)
    covs = np.array([np.cov(g.T) for g in Gb])
    g1_mc, g1_se = n * (means.mean(0) - th.K[2].reshape(4)), n * means.std(0, ddof=1) / math.sqrt(40)
    v_mc, v_se = n * covs.mean(0), n * covs.std(0, ddof=1) / math.sqrt(40)
    allow = (np.abs(th.V[2]).max() + np.abs(th.G1[2]).max()) / n
    assert np.all(np.abs(v_mc - th.V[2].reshape(4, 4)) < 5 * v_se + allow)
    assert np.all(np.abs(g1_mc - th.G1[2].reshape(4)) < 5 * g1_se + allow)
    # and G1 is resolved: the prediction is not trivially zero
    assert np.abs(th.G1[2]).max() > 3 * g1_se.max()


# ---------------------------------------------------------------------------------------------------
# hypothesis properties
# ---------------------------------------------------------------------------------------------------

_ACTS = st.sampled_from(["tanh", "relu", "leaky_relu(0.3)", "erf", "gelu", "linear", "sin"])


@settings(max_examples=15, deadline=None)
@given(act=_ACTS, x=datasets(d=3, n0=3, min_angle=0.3), C_W=st.floats(0.5, 2.0), C_b=st.floats(0.0, 0.5),
       widths=st.lists(st.integers(2, 60), min_size=3, max_size=3))
def test_vertex_symmetric_and_psd(act, x, C_W, C_b, widths):
    net = pdlt.MLP(act, (3, *widths), C_W=C_W, C_b=C_b)
    try:
        th = finite_width(net, x)
    except SingularKernelError:
        assume(False)
    assert isinstance(th, FiniteWidth)
    assert th.V.shape == (3, 3, 3, 3, 3) and th.G1.shape == (3, 3, 3) and th.V.dtype == np.float64
    assert _sym_ok(th.V)
    np.testing.assert_allclose(th.G1, np.swapaxes(th.G1, -1, -2), rtol=1e-12, atol=1e-15)
    for l in range(1, 4):
        M = th.V[l - 1].reshape(9, 9)
        ev = np.linalg.eigvalsh(0.5 * (M + M.T))
        assert ev.min() >= -1e-10 * max(ev.max(), 1e-300)
        C4 = th.connected_four_point_single(l)
        assert _sym_ok(C4)


@settings(max_examples=10, deadline=None)
@given(slope=st.floats(-0.9, 0.9), lam=st.floats(0.2, 5.0), x=datasets(d=2, n0=3, min_angle=0.3),
       C_W=st.floats(0.5, 2.5))
def test_scale_invariant_rescaling(slope, lam, x, C_W):
    """Leaky ReLU, C_b = 0: x -> lam x gives K -> lam^2 K, V -> lam^4 V, G1 -> lam^2 G1."""
    net = pdlt.MLP(pdlt.activation("leaky_relu", slope=slope), (3, 12, 30, 8, 20), C_W=C_W, C_b=0.0)
    a, b = finite_width(net, x), finite_width(net, lam * x)
    np.testing.assert_allclose(b.K, lam**2 * a.K, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(b.V, lam**4 * a.V, rtol=1e-9, atol=1e-11 * lam**4 * np.abs(a.V).max())
    np.testing.assert_allclose(b.G1, lam**2 * a.G1, rtol=1e-9, atol=1e-11 * lam**2 * max(np.abs(a.G1).max(), np.abs(a.K).max()))


# ---------------------------------------------------------------------------------------------------
# observables, shapes, four inputs, bad input
# ---------------------------------------------------------------------------------------------------


def test_observables_definitions():
    net = pdlt.MLP("tanh", (3, 10, 20, 30), C_W=1.2, C_b=0.1)
    th = finite_width(net, X2)
    for l in (1, 2, 3):
        n = net.widths[l - 1]
        np.testing.assert_allclose(th.two_point(l), th.K[l - 1] + th.G1[l - 1] / n)
        np.testing.assert_allclose(th.connected_four_point(l), th.V[l - 1] / n)
        c = th.connected_four_point_single(l)
        V = th.V[l - 1]
        assert c[0, 1, 0, 1] == pytest.approx((V[0, 1, 0, 1] + V[0, 0, 1, 1] + V[0, 1, 1, 0]) / n)
        np.testing.assert_allclose(np.diagonal(np.diagonal(np.diagonal(c, axis1=0, axis2=1), axis1=0, axis2=1), axis1=0, axis2=1),
                                   th.kurtosis(l) * np.diag(th.K[l - 1]) ** 2, rtol=1e-12, atol=1e-300)
    with pytest.raises(ValueError):
        th.two_point(0)
    with pytest.raises(AttributeError):
        th.V = 1  # frozen dataclass
    np.testing.assert_array_equal(th.V[0], 0.0)
    np.testing.assert_array_equal(th.G1[:2], 0.0)


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_four_inputs(name):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 5))
    net = pdlt.MLP(name, (5, 20, 30, 40), C_W=1.5 if name == "tanh" else 1.9, C_b=0.1)
    th = finite_width(net, x)
    assert _sym_ok(th.V)
    ev = np.linalg.eigvalsh(th.V[2].reshape(16, 16))
    assert ev.min() >= -1e-9 * ev.max()
    # any three of the inputs give the same sub-tensors (the 4D rule is only used with all four)
    sub = finite_width(net, x[[0, 2, 3]])
    ix = np.array([0, 2, 3])
    np.testing.assert_allclose(th.V[:, ix][:, :, ix][:, :, :, ix][:, :, :, :, ix], sub.V, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(th.G1[:, ix][:, :, ix], sub.G1, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("x", [
    np.array([[1.0, 0.5, -0.2], [1.0, 0.5, -0.2]]),
    np.array([[1.0, 0.5, -0.2], [-2.0, -1.0, 0.4]]),
    np.array([[1.0, 0.5, -0.2], [1.0, 0.5 + 1e-7, -0.2]]),
])
def test_identical_inputs_raise(x):
    net = pdlt.MLP("tanh", (3, 10, 10, 10))
    with pytest.raises(SingularKernelError, match="delta_flow"):
        finite_width(net, x)


def test_divergent_flow_names_layer():
    # K^(l) = 1e10^l * |x|^2 / 2 leaves the 2^1000 (~1e301) range at l = 31
    net = pdlt.MLP("linear", (2,) + (10,) * 40, C_W=1e10)
    with pytest.raises(DivergentFlowError) as err:
        finite_width(net, np.array([1.0, 0.5]))
    assert err.value.layer is not None and f"l = {err.value.layer}" in str(err.value)
    assert err.value.layer == next(l for l in range(1, 41) if 10 * l + math.log10(1.25 / 2) > 1000 * math.log10(2))


def test_depth_one_and_zero_input():
    net = pdlt.MLP("relu", (2, 5))
    th = finite_width(net, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert th.V.shape == (1, 2, 2, 2, 2) and not th.V.any()
    # a zero input with C_b = 0 has K = 0 at every layer: D = Q = 0 there, no NaN
    net = pdlt.MLP("tanh", (2, 5, 6, 7), C_W=1.0, C_b=0.0)
    th = finite_width(net, np.array([[0.0, 0.0], [0.3, 1.0]]))
    assert np.all(np.isfinite(th.V)) and np.all(np.isfinite(th.G1))
    assert not th.V[:, 0].any() and th.kurtosis(3)[0] == 0.0

"""delta-expansion of V and G1 for two nearby inputs (pdlt.theory.delta_expansion).

Independent checks: the kernel part against :func:`pdlt.delta_flow` (susceptibility recursions, a different
algorithm); every gamma component of V and G1 against the exact two-input 1/n recursions of
:func:`pdlt.finite_width` at separations eps * dx, with the remainder shrinking at the predicted rate
(eps^2 relative for smooth activations, |eps| for ReLU); deep linear networks (exact recursion in closed
form); Monte Carlo of the derivative field of sampled networks; hypothesis properties (symmetry, PSD,
rescaling, reduction to the single-input theory at the midpoint).
"""

import math

import numpy as np
import sympy as sp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.errors import SingularKernelError
from pdlt.theory.delta_expansion import delta_finite_width, from_gamma_vertex, gamma_vertex

X0 = np.array([0.8, -0.3, 0.5])
DX = np.array([0.3, 0.5, -0.2])
WIDTHS = (3, 40, 30, 50, 40, 20)


def _exact_rescaled(net, eps):
    """Gamma components of the exact two-input V and G1 at x0 +- eps dx/2, divided by their dx powers."""
    x = np.stack([X0 + eps * DX / 2, X0 - eps * DX / 2])
    th = pdlt.finite_width(net, x)
    s = np.array([1.0, eps, eps**2])
    Vg = gamma_vertex(th.V) / (s[:, None] * s[None, :])
    Gg = np.stack(pdlt.gamma_components(th.G1), -1) / s
    return Vg, Gg


@pytest.mark.parametrize("name, C_W, C_b", [("tanh", 1.3, 0.2), ("relu", 2.0, 0.1), ("gelu", 1.98305825744, 0.172922390756),
                                            ("erf", 0.9, 0.0), ("leaky_relu(0.2)", 1.5, 0.3)])
def test_kernel_part_equals_delta_flow(name, C_W, C_b):
    net = pdlt.MLP(name, WIDTHS, C_W=C_W, C_b=C_b)
    de = delta_finite_width(net, X0, DX)
    df = pdlt.delta_flow(net, X0, DX)
    ref = np.stack([df.K00, df.dK1, df.ddK2], -1)
    np.testing.assert_allclose(de.gamma_K, ref, rtol=1e-11, atol=1e-14 * np.abs(ref).max())


# tanh (C_W = 1.3, C_b = 0.2, these widths) is the registry check "delta-expansion vs Richardson limit of the exact
# two-input recursion" (pdlt.verification.checks), at its own tolerance
@pytest.mark.parametrize("name, C_W, C_b", [("gelu", 1.98305825744, 0.172922390756), ("sin", 1.1, 0.1)])
def test_smooth_converges_to_exact_two_input_at_rate_eps2(name, C_W, C_b):
    """Every gamma component of V and G1 (non-uniform widths, bias): the exact two-input value, rescaled by its
    dx power, minus the prediction is O(eps^2): halving eps divides it by 4 (accepted: 3..5), and the
    Richardson extrapolation eps -> 0 of the exact values, (4 e(eps/2) - e(eps))/3, equals the prediction to
    2e-4 of the component's scale (its own remainder is O(eps^4)). Below eps ~ 0.02 the exact code's own
    rounding, amplified by eps^-4 in V_[22], takes over, hence eps = 0.16..0.04."""
    net = pdlt.MLP(name, WIDTHS, C_W=C_W, C_b=C_b)
    de = delta_finite_width(net, X0, DX)
    iu = np.triu_indices(3)
    exact = []
    for eps in (0.16, 0.08, 0.04):
        Vg, Gg = _exact_rescaled(net, eps)
        exact.append(np.concatenate([Vg[:, iu[0], iu[1]], Gg], axis=-1)[1:])  # (L-1, 9)
    exact = np.array(exact)
    pred = np.concatenate([de.gamma_V[:, iu[0], iu[1]], de.gamma_G1], axis=-1)[1:]
    scale = np.abs(pred).max(0)
    assert np.all(scale > 0)
    errs = np.abs(exact - pred).max(1)  # (3 eps, 9 components), worst layer
    ratio = errs[:-1] / errs[1:]
    assert np.all((ratio > 3.0) & (ratio < 5.0)), ratio
    richardson = (4 * exact[2] - exact[1]) / 3
    assert np.all(np.abs(richardson - pred).max(0) < 2e-4 * scale), np.abs(richardson - pred).max(0) / scale


def test_relu_converges_at_rate_eps_and_g1_leading_terms_vanish():
    """ReLU: the arc-cosine kernel's |psi|^3 makes the relative remainder O(|eps|) (ratio 2 per halving; the
    midpoint components V_[00], V_[01] converge faster, ratio 8; accepted: 1.6..8.5).
    G1 of the scale-invariant class vanishes at leading order in every gamma component; the exact two-input
    G1_[2] is O(eps^4) (G1_[2]/eps^2 -> 0)."""
    net = pdlt.MLP("relu", WIDTHS, C_W=2.0, C_b=0.1)
    de = delta_finite_width(net, X0, DX)
    errs = []
    for eps in (0.08, 0.04, 0.02):
        Vg, _ = _exact_rescaled(net, eps)
        errs.append(np.abs(Vg - de.gamma_V)[1:].max(0))
    errs = np.array(errs)
    scale = np.abs(de.gamma_V).max(0)
    rel = errs / scale
    assert np.all(rel[-1] < 3e-2)
    big = errs[0] > 1e-6 * scale  # components with a resolvable remainder
    ratio = errs[:-1] / errs[1:]
    assert np.all((ratio[:, big] > 1.6) & (ratio[:, big] < 8.5)), ratio
    assert np.sum(ratio[:, big] < 2.5) >= 8  # the O(|eps|) components are really there
    assert np.abs(de.G1).max() < 1e-12 * np.abs(de.K).max()
    g2 = [abs(_exact_rescaled(net, eps)[1][-1, 2]) for eps in (0.4, 0.2, 0.1)]
    assert g2[0] > 4 * g2[1] > 16 * g2[2] > 0


@pytest.mark.parametrize("C_b", [0.0, 0.4])
def test_deep_linear_exact_recursion(C_b):
    """Linear nets: V' = C_W^2 [K_ik K_jl + K_il K_jk] + r C_W^2 V and K' = C_b c c^T + C_W K in (u, w)
    coordinates (the O(1/n) part of the exact Wishart recursion, covariant), G1 = 0."""
    widths, C_W = (3, 7, 20, 5, 11), (1.2, 0.8, 1.1, 0.9)
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=C_b)
    de = delta_finite_width(net, X0, DX)
    K = np.array([[C_b + C_W[0] * X0 @ X0 / 3, C_W[0] * X0 @ DX / 3], [C_W[0] * X0 @ DX / 3, C_W[0] * DX @ DX / 3]])
    V = np.zeros((2, 2, 2, 2))
    c = np.outer([1.0, 0.0], [1.0, 0.0])
    for l in range(1, net.L):
        np.testing.assert_allclose(de.K[l - 1], K, rtol=1e-13)
        np.testing.assert_allclose(de.V[l - 1], V, rtol=1e-12, atol=1e-14)
        cw = C_W[l]
        V = cw**2 * (np.einsum("ik,jl->ijkl", K, K) + np.einsum("il,jk->ijkl", K, K)) + widths[l] / widths[l - 1] * cw**2 * V
        K = C_b * c + cw * K
    np.testing.assert_allclose(de.V[-1], V, rtol=1e-12)
    assert np.abs(de.G1).max() < 1e-13 * np.abs(K).max()


def test_identical_inputs_work_and_midpoint_is_single_input_theory():
    """dx = 0 (identical inputs: the exact code must refuse them) gives the single-input V and G1 at x0."""
    net = pdlt.MLP("tanh", (3, 20, 30, 25, 40), C_W=1.4, C_b=0.1)
    with pytest.raises(SingularKernelError, match="delta_finite_width"):
        pdlt.finite_width(net, np.stack([X0, X0]))
    de = delta_finite_width(net, X0, np.zeros(3))
    th = pdlt.finite_width(net, X0)
    np.testing.assert_allclose(de.V00, th.V[:, 0, 0, 0, 0], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(de.G1_00, th.G1[:, 0, 0], rtol=1e-9, atol=1e-14)
    assert not de.V[:, 1].any() and not de.G1[:, 1].any()
    # the reconstructed 2x2 statistics at dx = 0 are the single-input ones on every entry
    np.testing.assert_allclose(de.vertex(4), np.full((2,) * 4, th.V[3, 0, 0, 0, 0]), rtol=1e-10)
    np.testing.assert_allclose(de.connected_four_point(4), th.connected_four_point(4)[0, 0, 0, 0], rtol=1e-10)


def test_gamma_vertex_round_trip_and_definition():
    rng = np.random.default_rng(3)
    Vg = rng.standard_normal((4, 3, 3))
    Vg = Vg + np.swapaxes(Vg, -1, -2)
    V = from_gamma_vertex(Vg)
    np.testing.assert_allclose(gamma_vertex(V), Vg, rtol=1e-13, atol=1e-13)
    # definition: Cov of the gamma components of a random symmetric 2x2 matrix
    G = rng.standard_normal((200_000, 2, 2)) @ np.array([[1.0, 0.3], [0.1, 0.7]])
    G = G @ np.swapaxes(G, -1, -2)
    comps = np.stack(pdlt.gamma_components(G), -1)
    cov = np.cov(comps.T)
    flat = G.reshape(-1, 4)
    V = np.cov(flat.T).reshape(2, 2, 2, 2)
    np.testing.assert_allclose(gamma_vertex(V), cov, rtol=1e-10)
    with pytest.raises(ValueError, match="two inputs"):
        gamma_vertex(np.zeros((3, 3, 3, 3)))


def test_monte_carlo_derivative_field_tanh():
    """Sampled networks' (z(x0), dx.grad z) at layer 3 (n = 32, 2e5 networks): given layer l, the rows
    (z_i, Dz_i) of layer l+1 are iid N(0, C_b c c^T + C_W/n sum_j S_j S_j^T), S_j = (s(z_j), s'(z_j) Dz_j), exact.
    n_2 Cov(Ghat_zeta^(3)) = V and n_2 (E Ghat_zeta^(3) - K) = G1 within 5 batch-means standard errors plus the
    O(1/n) allowance of test_finite_width's Monte Carlo ((max|V| + max|G1|)/n per entry)."""
    net = pdlt.MLP("tanh", (3, 32, 32, 32), C_W=1.5, C_b=0.2)
    de = delta_finite_width(net, X0, 2 * DX)
    act = net.activation
    rng = np.random.default_rng(5)
    n_nets, chunk, n = 200_000, 10_000, 32
    out = []
    c = np.outer([1.0, 0.0], [1.0, 0.0])
    for _ in range(n_nets // chunk):
        G = np.broadcast_to(de.K[0], (chunk, 2, 2))
        for l in range(1, net.L):
            Lc = np.linalg.cholesky(G + 1e-300 * np.eye(2))
            zz = np.einsum("bij,bnj->bni", Lc, rng.standard_normal((chunk, n, 2)))
            S = np.stack([act(zz[..., 0]), act.d1(zz[..., 0]) * zz[..., 1]], -1)
            C_W, C_b = net.hyper(l + 1)
            G = C_b * c + C_W * np.einsum("bni,bnj->bij", S, S) / n
        out.append(G.reshape(chunk, 4))
    G = np.concatenate(out).reshape(40, -1, 4)
    means = G.mean(1)
    covs = np.array([np.cov(g.T) for g in G])
    g1_mc, g1_se = n * (means.mean(0) - de.K[2].reshape(4)), n * means.std(0, ddof=1) / math.sqrt(40)
    v_mc, v_se = n * covs.mean(0), n * covs.std(0, ddof=1) / math.sqrt(40)
    allow = (np.abs(de.V[2]).max() + np.abs(de.G1[2]).max()) / n
    assert np.all(np.abs(v_mc - de.V[2].reshape(4, 4)) < 5 * v_se + allow)
    assert np.all(np.abs(g1_mc - de.G1[2].reshape(4)) < 5 * g1_se + allow)
    # negative control: the infinite-width value V = 0 is rejected for the derivative-field components
    assert np.all(np.abs(v_mc[[1, 3], [1, 3]]) > 5 * v_se[[1, 3], [1, 3]])


_ACTS = st.sampled_from(["tanh", "relu", "leaky_relu(0.3)", "erf", "gelu", "linear", "sin", "swish"])
_VEC = st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3).map(np.array)


@settings(max_examples=20, deadline=None)
@given(act=_ACTS, x0=_VEC, dx=_VEC, C_W=st.floats(0.5, 2.0), C_b=st.floats(0.0, 0.5),
       widths=st.lists(st.integers(2, 60), min_size=4, max_size=4))
def test_symmetric_and_psd(act, x0, dx, C_W, C_b, widths):
    """V in (u, w) coordinates is a covariance of the metric's components: symmetric under the pair
    symmetries and PSD as a 4 x 4 matrix (so is its 3 x 3 gamma form, up to the positive dx-power scaling)."""
    if C_b < 1e-3 and np.linalg.norm(x0) < 1e-3:  # a vanishing midpoint is refused (test_bad_input)
        x0 = x0 + 0.5
    net = pdlt.MLP(act, (3, *widths), C_W=C_W, C_b=C_b)
    de = delta_finite_width(net, x0, dx)
    for p in ("...abcd->...bacd", "...abcd->...abdc", "...abcd->...cdab"):
        np.testing.assert_allclose(de.V, np.einsum(p, de.V), rtol=1e-12, atol=1e-15 * max(np.abs(de.V).max(), 1))
    for l in range(de.L):
        for M in (de.V[l].reshape(4, 4), de.gamma_V[l]):
            ev = np.linalg.eigvalsh(0.5 * (M + M.T))
            assert ev.min() >= -1e-9 * max(ev.max(), 1e-300)


@settings(max_examples=10, deadline=None)
@given(slope=st.floats(-0.9, 0.9), lam=st.floats(0.2, 5.0), mu=st.floats(0.1, 3.0), x0=_VEC, dx=_VEC)
def test_scale_invariant_rescaling(slope, lam, mu, x0, dx):
    """Leaky ReLU, C_b = 0: x0 -> lam x0, dx -> lam mu dx scales each gamma component of V by
    lam^4 mu^(p_i + p_j) and of G1 by lam^2 mu^p (p = 0, 1, 2)."""
    if np.linalg.norm(x0) < 1e-2:
        x0 = x0 + 0.5
    net = pdlt.MLP(pdlt.activation("leaky_relu", slope=slope), (3, 12, 30, 8, 20), C_W=1.3, C_b=0.0)
    a = delta_finite_width(net, x0, dx)
    b = delta_finite_width(net, lam * x0, lam * mu * dx)
    s = mu ** np.array([0, 1, 2])
    np.testing.assert_allclose(b.gamma_V, lam**4 * a.gamma_V * s[:, None] * s[None, :], rtol=1e-9,
                               atol=1e-12 * lam**4 * np.abs(a.gamma_V * s[:, None] * s[None, :]).max())


def test_bad_input():
    net = pdlt.MLP("tanh", (3, 10, 10))
    with pytest.raises(ValueError, match="shape"):
        delta_finite_width(net, np.ones((2, 3)), DX)
    with pytest.raises(ValueError, match="n_0"):
        delta_finite_width(net, np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="K00 vanishes"):
        delta_finite_width(pdlt.MLP("tanh", (3, 10, 10), C_b=0.0), np.zeros(3), DX)
    # found by hypothesis: a bias of 4e-244 once overflowed the by-parts polynomials; in rescaled units it is a
    # deep linear network with bias b (tanh's O(K) correction is ~1e-243): K^(l) = l b, V^(l+1) = 2 K^(l)^2 + V^(l),
    # so V/(n K^2) = 0, 2/8, 10/18, 28/32 at n = 2
    with pytest.warns(pdlt.errors.TruncationWarning):
        tiny = delta_finite_width(pdlt.MLP("tanh", (3, 2, 2, 2, 2), C_b=3.9414646779833855e-244), np.zeros(3),
                                  np.zeros(3))
    exact = [0.0, 2 / 8, 10 / 18, 28 / 32]
    assert [float(tiny.normalized_vertex(l)) for l in range(1, 5)] == pytest.approx(exact, rel=1e-13, abs=1e-15)
    with pytest.raises(pdlt.DivergentFlowError) as err:
        delta_finite_width(pdlt.MLP("linear", (3,) + (10,) * 40, C_W=1e10), X0, DX)
    assert err.value.layer is not None


# slope 0 (ReLU) is the registry check "delta-expansion vs nu = 5" (pdlt.verification.checks)
@pytest.mark.parametrize("slope", [-0.4])
def test_scale_invariant_critical_perpendicular_closed_form(slope):
    """Scale-invariant class at criticality, C_b = 0, dx perpendicular to x0 (dK1 = 0 stays 0): w is independent
    of u, so V_[22] = nu (l-1) K_[2]^2 and V_[00] = nu (l-1) K00^2 with nu = 3 A4/A2^2 - 1 (derivation section 5)."""
    act = pdlt.activation("leaky_relu", slope=slope)
    nu = 3 * act.A4 / act.A2**2 - 1
    net = pdlt.MLP(act, (3,) + (40,) * 6, C_W=1 / act.A2, C_b=0.0)
    x0, dx = np.array([1.0, 0.5, -0.2]), np.array([0.1, -0.2, 0.0])
    assert x0 @ dx == 0
    de = delta_finite_width(net, x0, dx)
    np.testing.assert_allclose(de.ddddV22, nu * np.arange(6) * de.gamma_K[0, 2] ** 2, rtol=1e-10)
    np.testing.assert_allclose(de.V00, nu * np.arange(6) * de.gamma_K[0, 0] ** 2, rtol=1e-10)
    assert np.abs(de.dV01).max() < 1e-14 and np.abs(de.dddV12).max() < 1e-14


def test_symbolic_recursions_evaluate_to_numeric_engine():
    """sym.delta_finite_width_recursions for erf (closed-form-free averages, evaluated with mpmath) iterated two
    layers equals the numeric flow."""
    from pdlt import symbolic as sym

    net = pdlt.MLP("erf", (3, 10, 20, 30), C_W=1.2, C_b=0.1)
    de = delta_finite_width(net, X0, DX)
    rec = sym.delta_finite_width_recursions("erf")
    st = rec["state"]
    state = dict(zip(sym.DELTA_NAMES, [*de.gamma_K[0], *([0.0] * 9)]))
    for l in (1, 2):
        subs = {st[k]: v for k, v in state.items()}
        subs.update({sym.C_W: 1.2, sym.C_b: 0.1, sym.delta.r: net.width_ratio(l)})
        new = {}
        for k in sym.DELTA_NAMES:
            e = rec[k].rhs.subs(subs)
            e = e.xreplace({a: sp.Float(a.numeric(dps=20), 20) for a in e.atoms(sym.GaussianAverage)})
            new[k] = float(e)
        state = new
        got = np.array([state[k] for k in sym.DELTA_NAMES])
        ref = np.concatenate([de.gamma_K[l], de.gamma_V[l][np.triu_indices(3)][[0, 1, 3, 2, 4, 5]], de.gamma_G1[l]])
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", ["tanh", "gelu", "relu"])
def test_recursion_is_triangular_with_diagonal_r_chi_chi(name):
    """The one-layer map (V, G1) -> (V', G1') is linear; its matrix in the gamma components is triangular in
    the dx-power (lower powers feed higher ones only; V never depends on G1) with diagonal r chi_i chi_j for
    V_[ij] and r chi_i for G1_[i] (chi_0 = chi_1 = chi_par, chi_2 = chi_perp from pdlt.single_input): the
    derivation proves it for polynomial activations, this checks the numeric engine on real ones."""
    from pdlt.theory.delta_expansion import PRODUCTS, _IDX2, _IDX4, _gamma_from_zeta, _moments, zeta_step

    act = pdlt.activation(name)
    K, k1, k2, C_W, r = 0.8, 0.15, 0.06, 1.4, 1.7
    M = _moments(act, np.array([K]))[0]
    index = {ab: i for i, ab in enumerate(PRODUCTS)}

    def moment(a, b, j):
        return M[index[(a, b)], j]

    comps = [(0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)]
    power = [i + j for i, j in comps] + [0, 1, 2]

    def state(k):
        """unit perturbation of gamma component k (6 of V, then 3 of G1) in (u, w) coordinates"""
        Vg, Gg = np.zeros((3, 3)), np.zeros(3)
        if k < 6:
            i, j = comps[k]
            Vg[i, j] = Vg[j, i] = 1.0
        else:
            Gg[k - 6] = 1.0
        f = np.array([1.0, 1.0, 4.0])
        Vz = {q: Vg[q[0] + q[1], q[2] + q[3]] * f[q[0] + q[1]] * f[q[2] + q[3]] for q in _IDX4}
        G1z = {q: Gg[q[0] + q[1]] * f[q[0] + q[1]] for q in _IDX2}
        return Vz, G1z

    def out(Vz, G1z):
        _, Vn, Gn = zeta_step(moment, K, k1, k2, Vz, G1z, C_W, 0.0, r)
        Vg = _gamma_from_zeta(np.array([[[[Vn[(a, b, c, e)] for e in (0, 1)] for c in (0, 1)] for b in (0, 1)]
                                        for a in (0, 1)]))
        return np.concatenate([[Vg[i, j] for i, j in comps], [Gn[(0, 0)], Gn[(0, 1)], Gn[(1, 1)] / 4]])

    base = out({q: 0.0 for q in _IDX4}, {q: 0.0 for q in _IDX2})  # the sources alone
    A = np.array([out(*state(k)) - base for k in range(9)]).T  # A[out, in]
    s = pdlt.single_input(act, K, C_W)
    chi = [float(s.chi_par), float(s.chi_par), float(s.chi_perp)]
    diag = [r * chi[i] * chi[j] for i, j in comps] + [r * c for c in chi]
    np.testing.assert_allclose(np.diag(A), diag, rtol=1e-9)
    scale = np.abs(A).max()
    for o in range(9):
        for i in range(9):
            if power[i] > power[o] or (o < 6 and i >= 6):
                assert abs(A[o, i]) < 1e-12 * scale, (o, i, A[o, i])


def test_a_separation_that_is_not_small_is_flagged():
    """The delta expansion is checked against the exact kernel flow of x0 +- dx/2 where that flow resolves the
    distance: at dx = 2 (tanh) the squared distance misses by 1.9 % at layer 2, at dx = 1e3 by far more (the
    expansion's K_[2] grows like dx^2 while tanh's kernel is bounded): a "truncation" caveat with that size; small
    or vanishing separations pass silently."""
    import warnings

    net = pdlt.MLP("tanh", (2, 6, 6, 1), C_b=0.1)
    x0 = np.array([1.0, 0.5])
    for dx, flagged in (([1e3, 0.0], True), ([2.0, 0.0], True), ([0.1, 0.0], False), ([0.0, 0.0], False)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            de = pdlt.delta_finite_width(net, x0, np.array(dx))
            pdlt.delta_flow(net, x0, np.array(dx))
        far = [c for c in de.caveats if "squared distance" in c.message]
        assert bool(far) == flagged, dx
        assert sum("squared distance" in str(x.message) for x in w) == 2 * flagged
        if flagged:
            K = pdlt.kernel_flow(net, np.stack([x0 + np.array(dx) / 2, x0 - np.array(dx) / 2])).K
            exact = K[:, 0, 0] + K[:, 1, 1] - 2 * K[:, 0, 1]
            l = far[0].layer
            assert abs(de.K[l - 1, 1, 1] - exact[l - 1]) / exact[l - 1] == pytest.approx(
                float(far[0].message.split("by ")[1].split(" ")[0]), rel=0.05)

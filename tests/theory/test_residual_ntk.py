"""The O(1/n) NTK, dNTK and ddNTK statistics of residual networks (pdlt.theory.residual_ntk) against independent
oracles: the book's plain-MLP recursions at gamma = 0, the preactivation trajectory theory for the z block, and the
exact finite-width moments of a linear residual network (an O(n)-invariant Gram-matrix chain of the parameter jet,
expanded in 1/n exactly)."""

import itertools
import warnings

import numpy as np
import pytest

import pdlt
from pdlt.errors import DivergentFlowError, ParameterError, SingularKernelError, VanishingFlowError
from pdlt.theory.ntk_statistics import ntk_statistics
from pdlt.theory.residual import residual_statistics
from pdlt.theory.residual_ntk import residual_ntk_statistics

FIELDS = ("Theta1", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")


def _rel(a, b, floor=0.0):
    """Largest difference relative to the largest entry of b (or ``floor``: Theta1 and G1 vanish for the ReLU
    family at gamma = 0, so they are measured against Theta and K)."""
    a, b = np.ravel(a), np.ravel(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), floor))


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu"])
def test_gamma_zero_is_the_plain_mlp_recursion(name):
    """With every gamma = 0 the state (z, t, t') reproduces the book's NTK recursions (a separate derivation),
    including per-layer C_W, C_b and learning rates."""
    L = 6
    C_W = [1.0, 1.3, 1.1, 1.6, 1.2, 1.4] if name != "relu" else [1.0, 2.0, 1.8, 2.1, 2.0, 1.9]
    C_b = [0.0, 0.2, 0.1, 0.0, 0.3, 0.1]
    lb, lw = [0.7, 0.2, 0.0, 0.5, 1.0, 0.3], [1.3, 0.8, 1.1, 0.0, 0.6, 1.0]
    net = pdlt.MLP(name, (1,) + (10,) * L, C_W=C_W, C_b=C_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = ntk_statistics(net, np.array([[0.8]]), lb, lw)
    r = residual_ntk_statistics(pdlt.activation(name), book.K[0, 0, 0], book.Theta[0, 0, 0], C_W, C_b, [0.0] * L,
                                [1.0] * L, lb, lw)
    # two quadratures of the same averages: the book's default rule is ~1e-13 per average, the jet's finer one
    # agrees with mpmath to ~1e-16 (e.g. <tanh'(z)^2> at K = 0.94)
    assert _rel(r["Theta"], book.Theta) < 1e-11
    # Theta1, G1 and the ReLU family's P, R, U vanish: measured against Theta, K and the size of the other tensors
    big = max(np.max(np.abs(getattr(book, k))) for k in "ABDFQST")
    floors = {"Theta1": np.max(book.Theta), "G1": np.max(book.K), **{k: big for k in "PRU"}}
    for k in FIELDS + ("G1", "V"):
        assert _rel(r[k][1:], getattr(book, k)[1:], floors.get(k, 0.0)) < 1e-11, k


def test_large_kernels_are_resolved_or_refused():
    """Theta1's cross-layer averages (two Gaussian variables, present for any gamma != 0) coarsen only to the
    spacing 0.27 (up to 2400 nodes per axis): tanh with gamma = 1e-12 (its effect ~1e-12 K) at K^(1) = 400
    reproduces the plain recursions (themselves checked against their own rule at twice the nodes) within the
    coarsened rule's stated 1e-6 (1.6e-8 measured), where the unbounded coarsening of 600 nodes left Theta1 7.7e-3
    off; at K^(1) = 1600 the statistics are refused, naming x."""
    L = 3
    net = pdlt.MLP("tanh", (1,) + (8,) * L)
    book = ntk_statistics(net, np.array([[20.0]]))
    r = residual_ntk_statistics(pdlt.activation("tanh"), book.K[0, 0, 0], book.Theta[0, 0, 0], [1.0] * L, [0.0] * L,
                                [1e-12] * L, [1.0] * L, [1.0] * L, [1.0] * L)
    for k in FIELDS:
        assert _rel(r[k][1:], getattr(book, k)[1:]) < 1e-6, k
    with pytest.raises(ParameterError, match="scale the inputs x down") as err:
        pdlt.ntk(pdlt.MLP("tanh", (1,) + (8,) * L, gamma=0.5), [[40.0]]).statistics
    assert err.value.setting == "x"


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu"])
def test_z_block_is_the_preactivation_trajectory_theory(name):
    """The z block of the state is the residual preactivation theory (G1 with its self-field terms, V)."""
    L = 7
    g, xi = [0.0] + [0.7, -0.4, 0.8, 0.5, 0.6, 0.3], [1.0] + [0.8, 1.1, 0.6, 0.9, 1.0, 0.7]
    C_W, C_b = [1.2] * L, [0.1] * L
    r = residual_ntk_statistics(pdlt.activation(name), 0.9, 1.1, C_W, C_b, g, xi, [0.7] * L, [1.3] * L)
    K, G1, V = residual_statistics(pdlt.activation(name), [[0.9]], C_W, C_b, g, xi)
    assert _rel(r["K"], K) < 1e-11
    assert _rel(r["G1"][1:], G1[1:], np.max(K)) < 1e-10
    assert _rel(r["V"][1:], V[1:]) < 1e-10


_X2 = np.array([[0.8, 0.1], [-0.3, 0.9]])


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_gamma_zero_two_inputs_is_the_plain_mlp_recursion(name):
    """Two inputs at gamma = 0: every entry of every statistic as the book's multi-input recursions (the input
    conventions of P and T included)."""
    L = 4
    C_W = [1.0, 1.3, 1.1, 1.6] if name != "relu" else [1.0, 2.0, 1.8, 2.1]
    C_b, lb, lw = [0.0, 0.2, 0.1, 0.0], [0.7, 0.2, 0.0, 0.5], [1.3, 0.8, 1.1, 0.6]
    net = pdlt.MLP(name, (2,) + (10,) * L, C_W=C_W, C_b=C_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = ntk_statistics(net, _X2, lb, lw)
    r = residual_ntk_statistics(pdlt.activation(name), book.K[0], book.Theta[0], C_W, C_b, [0.0] * L, [1.0] * L, lb,
                                lw)
    big = max(np.max(np.abs(getattr(book, k))) for k in "ABDFQST")
    floors = {"Theta1": np.max(book.Theta), "G1": np.max(book.K), **{k: big for k in "PRU"}}
    assert _rel(r["Theta"], book.Theta) < 1e-11
    for k in FIELDS + ("G1", "V"):
        assert _rel(r[k][1:], getattr(book, k)[1:], floors.get(k, 0.0)) < 1e-11, k


@pytest.mark.parametrize("gap", [3e-2, 1e-4])
def test_close_inputs_smooth(gap):
    """Two close inputs, tanh, gamma = 0: Theta1 and G1 as the plain recursions (the multivariate Hermite weights of
    the derivatives, which lose digits like a power of the condition number there, are not used for smooth
    activations; with them Theta1 was 15% off at a gap of 3e-2)."""
    L = 3
    C_W, C_b, lb, lw = [1.0, 1.3, 1.1], [0.1, 0.2, 0.1], [0.7, 0.2, 0.3], [1.3, 0.8, 1.1]
    x0 = np.array([0.9, -0.5])
    x = np.stack([x0, x0 + gap * np.array([0.3, 1.0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = ntk_statistics(pdlt.MLP("tanh", (2,) + (10,) * L, C_W=C_W, C_b=C_b), x, lb, lw)
    r = residual_ntk_statistics(pdlt.activation("tanh"), book.K[0], book.Theta[0], C_W, C_b, [0.0] * L, [1.0] * L, lb,
                                lw)
    for k in ("Theta1", "G1"):
        assert _rel(r[k][1:], getattr(book, k)[1:]) < 1e-9, k


@pytest.mark.parametrize("name, tol", [pytest.param("tanh", 1e-8, marks=pytest.mark.slow), ("relu", 1e-9)])
def test_two_inputs_with_shortcuts(name, tol):
    """Two inputs with shortcuts: the z block is the preactivation trajectory theory (its own averages: 3-D rules and
    a conditional inner average where the jet takes 4-D product rules; ~1e-9 apart for tanh), and the diagonal
    entries are the one-input results (a state of 8 components instead of 16)."""
    L = 3  # layer 3: the first with cross-layer averages (four-dimensional here) and self-field terms
    g, xi = [0.0, 0.5, -0.5], [1.0, 1.0, 1.1]  # well-conditioned two-layer kernels: ReLU's cheaper nested rules
    C_W, C_b = [1.2 if name == "tanh" else 1.5] * L, [0.1] * L
    K1, T1 = 0.1 + _X2 @ _X2.T / 2, 0.7 + 1.3 * _X2 @ _X2.T / 2
    act = pdlt.activation(name)
    r = residual_ntk_statistics(act, K1, T1, C_W, C_b, g, xi, [0.7] * L, [1.3] * L)
    K, G1, V = residual_statistics(act, K1, C_W, C_b, g, xi)
    assert _rel(r["K"], K) < 1e-11
    assert _rel(r["G1"][1:], G1[1:], np.max(K)) < tol
    assert _rel(r["V"][1:], V[1:]) < tol
    one = residual_ntk_statistics(act, K1[1, 1], T1[1, 1], C_W, C_b, g, xi, [0.7] * L, [1.3] * L)
    for k in FIELDS:
        assert _rel(r[k][(slice(None),) + (1,) * (r[k].ndim - 1)], one[k].reshape(L), np.max(one["Theta"])) < tol, k
    assert np.max(np.abs(r["B"][-1, 0, 1, 0, 1])) > 0.1 * np.max(np.abs(r["B"][-1]))  # the off-diagonal is there


# ------------------------------------------------------------------------------------------ linear residual networks
# With sigma(z) = z the jet of sigma is the jet itself, so the rows X_i = (z_iS)_S of the parameter jet along k
# directions (S a bit mask) have an O(n)-invariant law, and one step is X' = gamma X + xi E with the rows of E iid
# N(0, Sigma(G)) given the layer, G = X^T X / n,
#     Sigma_ST = C_b [S = T = 0] + lambda_b [S = T = one direction] + C_W G_ST + lambda_W sum_{r in S & T} G_{S-r, T-r}
# (written here from the definition of the jet, not from the package). So E[G] and E[G (x) G] follow exactly at any n
# (Wishart moments), and O(n) invariance turns them into distinct-neuron moments: E[G_ab G_cd] = x_(ab|cd) +
# (x_(ac|bd) + x_(ad|bc))/n, x_(ab|cd) = E[X_ia X_ib X_jc X_jd] (i != j). Every quantity is a polynomial in
# eps = 1/n, carried as its coefficients of eps^0..eps^2.

def _eps(x):
    out = np.zeros_like(x)
    out[..., 1:] = x[..., :-1]
    return out


def _outer(a, b):
    """Product of two series-valued N x N matrices into (N, N, N, N), truncated at eps^2."""
    N = a.shape[0]
    out = np.zeros((N, N, N, N, 3))
    for p, q in itertools.product(range(3), repeat=2):
        if p + q < 3:
            out[..., p + q] += np.einsum("ab,cd->abcd", a[..., p], b[..., q])
    return out


def _jet_maps(k, d, C_W, lw):
    M, N = 1 << k, d << k  # component a * 2^k + S: input a, mask S
    Lm = C_W * np.einsum("ac,bd->abcd", np.eye(N), np.eye(N))
    for x, y in itertools.product(range(N), repeat=2):
        for r in range(k):
            if x % M >> r & 1 and y % M >> r & 1:
                Lm[x, y, x ^ 1 << r, y ^ 1 << r] += lw
    return Lm


def _linear_gram_series(k, L, K1, T1, C_W, C_b, gamma, xi, lb, lw):
    K1, T1 = np.atleast_2d(K1), np.atleast_2d(T1)
    d = K1.shape[0]
    N = d << k
    z = np.arange(d) << k
    S1 = np.zeros((N, N, 3))
    S1[z[:, None], z[None, :], 0] = K1
    for r in range(k):
        S1[(z + (1 << r))[:, None], (z + (1 << r))[None, :], 0] = T1  # layer 1 is linear in its parameters
    m1 = S1.copy()
    pair = _outer(S1, S1)
    m2 = pair + _eps(np.einsum("acbdk->abcdk", pair) + np.einsum("adbck->abcdk", pair))
    out = [(m1, m2)]
    eye = np.einsum("ac,bd->abcd", np.eye(N), np.eye(N))
    for l in range(1, L):
        Lm = _jet_maps(k, d, C_W[l], lw[l])
        c = np.zeros((N, N, 3))
        c[z[:, None], z[None, :], 0] = C_b[l]  # one bias vector for every input
        for r in range(k):
            c[(z + (1 << r))[:, None], (z + (1 << r))[None, :], 0] = lb[l]
        Am = gamma[l] ** 2 * eye + xi[l] ** 2 * Lm
        a0 = xi[l] ** 2 * c
        lin = lambda M, m: np.einsum("abcd,cdk->abk", M, m)  # noqa: E731
        E1 = a0 + lin(Am, m1)
        EAA = _outer(a0, a0) + _outer(a0, lin(Am, m1)) + _outer(lin(Am, m1), a0) \
            + np.einsum("abef,cdgh,efghk->abcdk", Am, Am, m2, optimize=True)
        # E[G_ac Sigma_bd] and E[Sigma_ac Sigma_bd] as (a, c, b, d)
        GS = _outer(m1, c) + np.einsum("bdgh,acghk->acbdk", Lm, m2, optimize=True)
        SS = _outer(c, c) + _outer(c, lin(Lm, m1)) + _outer(lin(Lm, m1), c) \
            + np.einsum("acef,bdgh,efghk->acbdk", Lm, Lm, m2, optimize=True)
        cross = (np.einsum("acbdk->abcdk", GS) + np.einsum("adbck->abcdk", GS) + np.einsum("bcadk->abcdk", GS)
                 + np.einsum("bdack->abcdk", GS))
        m2 = EAA + _eps(gamma[l] ** 2 * xi[l] ** 2 * cross + xi[l] ** 4 * (np.einsum("acbdk->abcdk", SS)
                                                                         + np.einsum("adbck->abcdk", SS)))
        m1 = E1
        out.append((m1, m2))
    return out


def _distinct(m1, m2, a, b, c, d):
    """eps^0 and eps^1 coefficients of E[X_ia X_ib X_jc X_jd] - E[G_ab] E[G_cd] (i != j)."""
    y = np.stack([m2[a, b, c, d], m2[a, c, b, d], m2[a, d, b, c]])
    N = np.ones((3, 3)) - np.eye(3)
    x = y - _eps(N @ y) + _eps(_eps(N @ N @ y))  # (1 + eps N)^{-1} y to eps^2
    conn = x[0] - np.convolve(m1[a, b], m1[c, d])[:3]
    return conn[0], conn[1]


# each statistic as the distinct-neuron moment of jet components (bit masks), written from the definitions of the
# NTK, dNTK and ddNTKs: H = E[z{1} z{1}], dH = E[z{12} z{1} z{2}], ddI = E[z{123} z{1} z{2} z{3}],
# ddII_i1i2i3i4 = E[z_i1{12} z_i2{13} z_i3{2} z_i4{3}], paired as in pdlt.theory.ntk_statistics' index conventions
_LINEAR_ENTRIES = {"A": (1, 1, 2, 2), "B": (1, 2, 1, 2), "D": (1, 1, 0, 0), "F": (1, 0, 1, 0), "V": (0, 0, 0, 0),
                   "P": (3, 0, 1, 2), "Q": (3, 1, 2, 0), "R": (7, 1, 2, 4), "S": (3, 5, 2, 4), "T": (3, 2, 5, 4),
                   "U": (3, 4, 5, 2)}


@pytest.mark.parametrize("gamma", [0.0, 0.6, -0.8])
def test_linear_residual_network_exact(gamma):
    """Linear activation with biases and learning rates on every layer: every statistic (and G1 = 0, V) equals the
    1/n coefficient of the exact finite-width moments of the jet along three directions; the O(1) parts of the
    connected moments vanish."""
    L = 5
    C_W, C_b = [1.0, 0.9, 0.7, 1.1, 0.8], [0.0, 0.2, 0.1, 0.3, 0.05]
    lb, lw = [0.7, 0.4, 0.0, 0.9, 0.3], [1.3, 0.6, 1.2, 0.5, 1.0]
    g = [0.0] + [gamma] * (L - 1)
    xi = [1.0, 0.9, 1.2, 0.7, 1.0]
    K1, T1 = 0.9, 1.1
    r = residual_ntk_statistics(pdlt.activation("linear"), K1, T1, C_W, C_b, g, xi, lb, lw)
    series = _linear_gram_series(3, L, K1, T1, C_W, C_b, g, xi, lb, lw)
    for l, (m1, m2) in enumerate(series):
        assert abs(m1[1, 1, 0] - r["Theta"][l, 0, 0]) < 1e-13 * m1[1, 1, 0]
        assert abs(m1[1, 1, 1] - r["Theta1"][l, 0, 0]) < 1e-12 * m1[1, 1, 0]
        assert abs(m1[0, 0, 1] - r["G1"][l, 0, 0]) < 1e-12 * m1[0, 0, 0]
        for name, ix in _LINEAR_ENTRIES.items():
            c0, c1 = _distinct(m1, m2, *ix)
            scale = np.sqrt(m1[ix[0], ix[0], 0] * m1[ix[1], ix[1], 0] * m1[ix[2], ix[2], 0] * m1[ix[3], ix[3], 0])
            scale = max(scale, m1[1, 1, 0] ** 2)
            assert abs(c0) < 1e-13 * scale, (name, l)
            assert abs(c1 - r[name][l].item()) < 1e-11 * scale, (name, l + 1, c1, r[name][l].item())
        if l >= 2:  # the oracle is not vacuous: the dNTK and ddNTK pieces are there
            assert min(abs(_distinct(m1, m2, *_LINEAR_ENTRIES[q])[1]) for q in "QST") > 1e-3


def test_linear_residual_network_exact_at_any_kernel():
    """A polynomial activation's averages are exact at any kernel (spacing 0.5 in the whitened coordinates): at K^(1)
    ~ 1e6, far beyond the smooth rule's grid, the linear network's statistics still equal the exact chain (to
    round-off, relative to the scale of each entry)."""
    L = 3
    C_W, C_b, lb, lw = [1.0, 0.9, 1.1], [0.0, 2e5, 1e5], [0.7, 0.4, 0.9], [1.3, 0.6, 0.5]
    g, xi = [0.0, 0.6, -0.8], [1.0, 0.9, 1.2]
    K1, T1 = 0.9e6, 1.1e6
    r = residual_ntk_statistics(pdlt.activation("linear"), K1, T1, C_W, C_b, g, xi, lb, lw)
    for l, (m1, m2) in enumerate(_linear_gram_series(3, L, K1, T1, C_W, C_b, g, xi, lb, lw)):
        assert abs(m1[1, 1, 0] - r["Theta"][l, 0, 0]) < 1e-13 * m1[1, 1, 0]
        assert abs(m1[1, 1, 1] - r["Theta1"][l, 0, 0]) < 1e-12 * m1[1, 1, 0]
        assert abs(m1[0, 0, 1] - r["G1"][l, 0, 0]) < 1e-12 * m1[0, 0, 0]
        for name, ix in _LINEAR_ENTRIES.items():
            c1 = _distinct(m1, m2, *ix)[1]
            scale = max(np.sqrt(np.prod([m1[i, i, 0] for i in ix])), m1[1, 1, 0] ** 2)
            assert abs(c1 - r[name][l].item()) < 1e-11 * scale, (name, l + 1, c1, r[name][l].item())


def test_polynomial_activation_against_the_smooth_rule(monkeypatch):
    """A cubic (degree-12 integrands, radius 12): the exact polynomial rule agrees with the smooth product rule (the
    path of every other smooth activation, a finer grid on another spacing) at K ~ 1 to 1e-11 of each statistic's
    size; layer 3 carries the cubic's own terms (V differs from the linear network's)."""
    import sympy as sp

    import pdlt.theory.residual_ntk as R

    z = sp.Symbol("z")
    cubic = pdlt.Activation.from_sympy(z + z**3 / 10)
    args = (0.8, 1.0, [1.0, 0.5, 0.5], [0.1] * 3, [0.0, 0.6, 0.6], [1.0] * 3, [0.5] * 3, [1.0] * 3)
    exact = R.residual_ntk_statistics(cubic, *args)
    monkeypatch.setattr(R, "_polynomial_degree", lambda act: None)
    smooth = R.residual_ntk_statistics(cubic, *args)
    for name in ("Theta1", "G1", "V", "A", "B", "P", "Q", "R", "S", "T", "U"):
        scale = np.max(np.abs(smooth[name]))
        assert np.max(np.abs(exact[name] - smooth[name])) < 1e-11 * scale, name
    linear = R.residual_ntk_statistics(pdlt.activation("linear"), *args)
    assert abs(exact["V"][2].item() - linear["V"][2].item()) > 0.1 * abs(linear["V"][2].item())


# with several inputs, slot s of an entry above carries the statistic's input index _LINEAR_ORDER[s] (P's last index is
# the dNTK's partner z, T's last pair is read as (z{3}, z{13}))
_LINEAR_ORDER = {"P": (0, 3, 1, 2), "T": (0, 1, 3, 2)}


def test_linear_residual_network_exact_two_inputs():
    """Two inputs: every entry of every statistic against the exact Gram chain of the 16-component jet (the
    cross-layer averages are four-dimensional here)."""
    L = 4
    C_W, C_b = [1.0, 0.9, 0.7, 1.1], [0.0, 0.2, 0.1, 0.3]
    lb, lw = [0.7, 0.4, 0.0, 0.9], [1.3, 0.6, 1.2, 0.5]
    g, xi = [0.0, 0.6, -0.8, 0.5], [1.0, 0.9, 1.2, 0.7]
    X = np.array([[1.0, 0.3], [-0.4, 0.8]])
    K1, T1 = 0.1 + X @ X.T / 2, 0.7 + 1.3 * X @ X.T / 2
    r = residual_ntk_statistics(pdlt.activation("linear"), K1, T1, C_W, C_b, g, xi, lb, lw)
    series = _linear_gram_series(3, L, K1, T1, C_W, C_b, g, xi, lb, lw)
    for l, (m1, m2) in enumerate(series):
        top = np.max(m1[..., 0])
        assert np.max(np.abs(m1[1::8, 1::8, 1] - r["Theta1"][l])) < 1e-12 * top
        assert np.max(np.abs(m1[0::8, 0::8, 1] - r["G1"][l])) < 1e-12 * top
        for name, ix in _LINEAR_ENTRIES.items():
            order = _LINEAR_ORDER.get(name, (0, 1, 2, 3))
            for inp in itertools.product(range(2), repeat=4):
                comps = [8 * inp[order[s]] + ix[s] for s in range(4)]
                c0, c1 = _distinct(m1, m2, *comps)
                assert abs(c0) < 1e-13 * top**2, (name, l)
                assert abs(c1 - r[name][(l,) + inp]) < 1e-11 * top**2, (name, l + 1, inp, c1, r[name][(l,) + inp])
    assert abs(_distinct(*series[3], 8 * 0 + 3, 8 * 1 + 2, 8 * 1 + 5, 8 * 0 + 4)[1]) > 1e-2  # T across inputs


def test_linear_oracle_resolves_the_shortcut():
    """Negative control: the theory of the same network without its shortcut differs from the exact coefficient by
    O(1) at layer 3 (so the agreement above tests the trajectory terms, not only the dense ones)."""
    L = 4
    args = (L, 0.9, 1.1, [1.0] * L, [0.1] * L, [0.0] + [0.7] * 3, [1.0] * L, [0.5] * L, [1.0] * L)
    series = _linear_gram_series(3, *args)
    r0 = residual_ntk_statistics(pdlt.activation("linear"), 0.9, 1.1, [1.0] * L, [0.1] * L, [0.0] * L, [1.0] * L,
                                 [0.5] * L, [1.0] * L)
    for q in ("B", "Q", "S"):
        c1 = _distinct(*series[2], *_LINEAR_ENTRIES[q])[1]
        assert abs(r0[q][2].item() - c1) > 0.1 * abs(c1), q


# ------------------------------------------------------------------------------------------ public face, bad input

def _res_net(n=16, L=4, name="tanh"):
    return pdlt.MLP(name, (2,) + (n,) * L, C_W=1.0, C_b=0.1, gamma=[0.0] + [0.6] * (L - 1),
                    xi=[1.0] + [0.9] * (L - 1))


def test_ntk_of_a_residual_network():
    net = _res_net()
    x = np.array([[0.9, -0.5]])
    th = pdlt.ntk(net, x, lambda_b=0.7, lambda_W=1.3)
    assert th.A.shape == th.U.shape == (4, 1, 1, 1, 1)
    flow = pdlt.kernel_flow(net, x)
    r = residual_ntk_statistics(net.activation, flow.K[0, 0, 0], th.Theta[0, 0, 0], net.C_W, net.C_b, net.gamma,
                                net.xi, [0.7] * 4, [1.3] * 4)
    assert _rel(th.Theta, r["Theta"]) < 1e-11 and _rel(flow.K, r["K"]) < 1e-11  # two quadratures (see above)
    var = th.prediction("ntk_variance", 4)
    assert var[0] == pytest.approx((th.A[3].item() + 2 * th.B[3].item()) / 16)
    assert th.prediction("dntk_relative", 4)[0] == pytest.approx((th.P[3].item() + 2 * th.Q[3].item()) / 16
                                                                 / th.Theta[3, 0, 0] ** 2)


@pytest.mark.parametrize("bad, setting", [
    (lambda: pdlt.ntk(_res_net(), np.random.default_rng(0).normal(size=(5, 2))).A, "x"),
    (lambda: pdlt.ntk(pdlt.MLP("relu", (2, 16, 16, 16), C_W=2.0, gamma=0.5), np.zeros((1, 2))).A, "x"),
    (lambda: pdlt.ntk(_res_net(), np.array([[0.9, -0.5]]), lambda_W=-1.0), "lambda_W"),
])
def test_bad_input(bad, setting):
    with pytest.raises(ParameterError) as e:
        bad()
    assert e.value.setting == setting


def test_identical_inputs():
    """Smooth activations take their derivatives pointwise on several variables, so identical inputs are fine (every
    entry is the one-input value); the ReLU family's Gaussian integration by parts has no limit there: refused."""
    x = np.array([[0.9, -0.5], [0.9, -0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two, one = pdlt.ntk(_res_net(L=3), x), pdlt.ntk(_res_net(L=3), x[:1])
        for k in FIELDS:
            got, want = getattr(two, k), getattr(one, k)
            assert np.max(np.abs(got - want.reshape(want.shape[:1] + (1,) * (got.ndim - 1)))) \
                < 1e-9 * np.max(np.abs(want)) + 1e-12, k
        with pytest.raises(SingularKernelError, match="distinct inputs"):
            pdlt.ntk(_res_net(L=3, name="relu"), x).A


def test_nonuniform_widths_refused():
    net = pdlt.MLP("tanh", (2, 16, 24, 24), gamma=[0.0, 0.0, 0.5], xi=[1.0, 0.8, 1.0])
    with pytest.raises(ParameterError) as e:
        pdlt.ntk(net, np.array([[0.9, -0.5]])).A
    assert e.value.setting == "widths"


@pytest.mark.parametrize("C_W, err", [(40.0, DivergentFlowError), (1e-3, VanishingFlowError)])
def test_flows_out_of_range_name_a_layer(C_W, err):
    net = pdlt.MLP("relu", (1,) + (16,) * 60, C_W=C_W, gamma=0.3, xi=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(err) as e:
            pdlt.ntk(net, np.array([[1.0]])).A
    assert e.value.layer is not None


def test_branch_scale_without_shortcut_takes_several_inputs():
    """gamma = 0, xi != 1 is a dense step with xi^2 (C_W, C_b, lambda): any number of inputs, and one input equals
    the jet theory (a different computation)."""
    net = pdlt.MLP("tanh", (3, 12, 12, 12, 12), C_W=1.1, C_b=0.1, xi=1.2)
    x = np.array([[1.0, 0.5, -0.3], [0.2, -0.8, 0.6]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        two = pdlt.ntk(net, x, lambda_b=0.7, lambda_W=1.3)
        one = pdlt.ntk(net, x[1:], lambda_b=0.7, lambda_W=1.3)
    assert two.statistics.net is net and two.A.shape == (4, 2, 2, 2, 2)
    flow = pdlt.kernel_flow(net, x[1:])
    r = residual_ntk_statistics(net.activation, flow.K[0, 0, 0], one.Theta[0, 0, 0], net.C_W, net.C_b, net.gamma,
                                net.xi, [0.7] * 4, [1.3] * 4)
    for k in FIELDS:
        assert _rel(getattr(one, k), r[k], np.max(one.Theta)) < 1e-11, k
        assert _rel(getattr(two, k)[(slice(None),) + (1,) * (getattr(two, k).ndim - 1)], r[k].reshape(4),
                    np.max(one.Theta)) < 1e-11, k

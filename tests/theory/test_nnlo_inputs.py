"""Several inputs at order 1/n^2 (pdlt.theory.nnlo_inputs) against independent results: the one-input recursions of
pdlt.theory.nnlo (scalar, heat-equation derivatives on a fine trapezoid), the order-1/n recursions of finite_width,
the exact Wishart chain of deep linear networks (pdlt.theory.wishart, expanded in 1/n by an exact polynomial fit),
Isserlis' theorem for the layer-2 six-point vertex, and the consistency of sub-datasets."""

import itertools
import warnings

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.errors import ParameterError
from pdlt.theory.nnlo import nnlo
from pdlt.theory.nnlo_inputs import NNLOInputs, nnlo_inputs
from pdlt.theory.wishart import linear_all_orders

FIELDS = ("G1", "V", "G2", "V1", "U")
X3 = np.array([[0.8, -0.5, 1.1], [0.3, 0.9, -0.4], [-0.7, 0.2, 0.5]])


def _quiet(f, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args)


@pytest.mark.parametrize("act, C_W, C_b", [("tanh", (1.3, 1.1, 0.9, 1.2, 1.0), 0.05), ("gelu", 1.7, 0.1),
                                           ("relu", (2.0, 1.8, 2.2, 2.0, 1.9), (0.1, 0.0, 0.2, 0.1, 0.0)),
                                           ("linear", 1.1, 0.2)])
def test_one_input_is_the_scalar_chain(act, C_W, C_b):
    """d = 1 through the tensor recursions (Price's theorem, or Hermite weights for ReLU, on
    pdlt.gaussian.expect) equals the scalar recursions of pdlt.nnlo: a different derivation and different
    quadratures, per-layer C_W, C_b and non-uniform widths. The tolerance is the two quadratures' accuracy (~1e-12
    relative, measured against mpmath in nnlo_inputs._RESOLUTION)."""
    net = pdlt.MLP(act, (3, 8, 12, 6, 10, 1), C_W=C_W, C_b=C_b)
    a, b = _quiet(nnlo_inputs, net, X3[:1]), _quiet(nnlo, net, X3[0])
    for k in FIELDS:
        got, want = getattr(a, k).reshape(net.L, -1)[:, 0], getattr(b, k)
        scale = np.max(b.K) ** {"G1": 1, "G2": 1, "V": 2, "V1": 2, "U": 3}[k] + np.max(np.abs(want))
        assert np.max(np.abs(got - want)) <= 1e-10 * scale, (act, k, got, want)


@pytest.mark.parametrize("act, C_W, C_b", [("tanh", 1.0, 0.0), ("relu", 2.0, 0.1), ("gelu", 1.6, 0.05)])
def test_order_one_over_n_is_finite_width(act, C_W, C_b):
    """G1 and V of three inputs from the tensor recursions equal pdlt.finite_width (its own recursions and
    quadratures)."""
    net = pdlt.MLP(act, (3, 8, 12, 6, 10), C_W=C_W, C_b=C_b)
    a, b = _quiet(nnlo_inputs, net, X3), _quiet(pdlt.finite_width, net, X3)
    for k in ("G1", "V"):
        got, want = getattr(a, k), getattr(b, k)
        assert np.max(np.abs(got - want)) <= 1e-9 * np.max(np.abs(want)), (act, k)


def _wishart_coefficients(widths_in_N, x, C_W, C_b, degree):
    """The coefficients of eps = 1/N in the exact covariance of the deep linear metric, hidden widths
    ``rho_l N``: cov is a polynomial in eps of degree L - 2 (the Wishart recursion multiplies by 1 + O(eps) per
    layer), fitted exactly from L - 1 widths."""
    Ns = np.arange(1, degree + 2, dtype=float) * 6
    covs = []
    for N in Ns:
        net = pdlt.MLP("linear", (x.shape[1],) + tuple(int(r * N) for r in widths_in_N), C_W=C_W, C_b=C_b)
        covs.append(linear_all_orders(net, x).cov)
    covs = np.array(covs)                                      # (len(Ns), L, d, d, d, d)
    A = np.vander(1.0 / Ns, degree + 1, increasing=True)
    return np.linalg.solve(A, covs.reshape(len(Ns), -1)).reshape((degree + 1,) + covs.shape[1:])


def test_deep_linear_several_inputs_is_the_wishart_chain():
    """Three inputs, bias on, per-layer C_W, non-uniform widths: V and V1 are the 1/n and 1/n^2 coefficients of the
    exact Wishart covariance, and the two-point function has no correction (G1 = G2 = 0)."""
    rho = (2, 1, 3, 1, 2)
    C_W, C_b = (1.2, 0.9, 1.1, 1.3, 0.8), 0.3
    coef = _wishart_coefficients(rho, X3, C_W, C_b, degree=len(rho) - 1)
    net = pdlt.MLP("linear", (3,) + tuple(r * 6 for r in rho), C_W=C_W, C_b=C_b)
    th = _quiet(nnlo_inputs, net, X3)
    assert np.max(np.abs(th.G1)) == 0 and np.max(np.abs(th.G2)) == 0
    for l in range(2, net.L + 1):
        rn = rho[l - 2]                                        # n_{l-1} = rn N
        scale = np.max(np.abs(th.V[l - 1])) + 1e-300
        np.testing.assert_allclose(th.V[l - 1], rn * coef[1, l - 1], atol=1e-11 * scale, rtol=0)
        np.testing.assert_allclose(th.V1[l - 1], rn**2 * coef[2, l - 1], atol=1e-9 * scale * l, rtol=0)
    assert np.max(np.abs(th.V1[-1])) > 1.0                    # the check is not vacuous


def test_deep_linear_six_point_vertex_is_the_wishart_third_cumulant():
    """U of three inputs (bias on, per-layer C_W, unequal widths) is the 1/n^2 coefficient of the exact third
    cumulant of the Wishart chain (pdlt.theory.wishart: kappa3, whose O(1/n) part vanishes), at every layer."""
    rho = (2, 1, 3, 1)
    C_W, C_b = (1.2, 0.9, 1.1, 1.3), 0.3
    L = len(rho)
    Ns = np.arange(1, 2 * L) * 6.0                            # kappa3 is a polynomial of degree 2 (L - 1) in 1/N
    k3 = []
    for N in Ns:
        net = pdlt.MLP("linear", (3,) + tuple(int(r * N) for r in rho), C_W=C_W, C_b=C_b)
        k3.append(linear_all_orders(net, X3).kappa3)
    k3 = np.array(k3)
    A = np.vander(1.0 / Ns, len(Ns), increasing=True)
    coef = np.linalg.solve(A, k3.reshape(len(Ns), -1)).reshape((len(Ns),) + k3.shape[1:])
    th = _quiet(nnlo_inputs, pdlt.MLP("linear", (3,) + tuple(r * 6 for r in rho), C_W=C_W, C_b=C_b), X3)
    for l in range(2, L + 1):
        rn = rho[l - 2]
        scale = np.max(np.abs(th.U[l - 1]))
        assert np.max(np.abs(coef[1, l - 1])) <= 1e-8 * scale
        np.testing.assert_allclose(th.U[l - 1], rn**2 * coef[2, l - 1], atol=1e-8 * scale, rtol=0)
    assert np.max(np.abs(th.U[-1])) > 1.0


def _wick_six(G, C):
    """kappa_3(x_a x_b, x_c x_d, x_e x_f) for x ~ N(0, G), by Isserlis' theorem: the pairings of the six factors
    whose graph connects the three pairs (8 of the 15), times C^3."""
    d = G.shape[0]
    out = np.zeros((d,) * 6)
    for idx in itertools.product(range(d), repeat=6):
        total = 0.0
        for pairing in _pairings(list(range(6))):
            groups = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
            parent = list(range(3))

            def find(u):
                while parent[u] != u:
                    u = parent[u]
                return u

            for s, t in pairing:
                parent[find(groups[s])] = find(groups[t])
            if len({find(g) for g in range(3)}) == 1:
                total += np.prod([G[idx[s], idx[t]] for s, t in pairing])
        out[idx] = total
    return C**3 * out


def _pairings(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for i, other in enumerate(rest):
        for tail in _pairings(rest[:i] + rest[i + 1:]):
            yield [(first, other)] + tail


def test_layer_two_six_point_vertex_is_isserlis():
    """At layer 2 U = C_W^3 W(K^(1)) exactly; for sigma = z, W is the connected six-point Wick sum of K^(1)."""
    net = pdlt.MLP("linear", (3, 5, 7, 4), C_W=1.3, C_b=0.2)
    th = _quiet(nnlo_inputs, net, X3[:2])
    want = _wick_six(th.K[0], 1.3)
    np.testing.assert_allclose(th.U[1], want, rtol=1e-12, atol=1e-14 * np.max(np.abs(want)))


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_symmetric_and_consistent_on_subsets(act):
    """Every entry depends only on the inputs of its indices: the two-input sub-dataset gives the same G2, V1 and U
    entries; the tensors have the symmetries of covariances and cumulants of the symmetric metric."""
    net = pdlt.MLP(act, (3, 8, 12, 6, 10), C_W=1.0 if act == "tanh" else 2.0, C_b=0.1)
    full, sub = _quiet(nnlo_inputs, net, X3), _quiet(nnlo_inputs, net, X3[[0, 2]])
    ix = [0, 2]
    for k in FIELDS:
        a = getattr(full, k)
        a = a[(slice(None),) + np.ix_(*([ix] * (a.ndim - 1)))]
        np.testing.assert_allclose(a, getattr(sub, k), rtol=1e-9, atol=1e-12 * np.max(np.abs(a)))
    V1, U, G2 = full.V1[-1], full.U[-1], full.G2[-1]
    for arr, perms in ((V1, [(2, 3, 0, 1), (1, 0, 2, 3)]), (G2, [(1, 0)]),
                       (U, [(2, 3, 0, 1, 4, 5), (0, 1, 4, 5, 2, 3), (1, 0, 2, 3, 4, 5)])):
        for p in perms:
            assert np.max(np.abs(arr - arr.transpose(p))) <= 1e-12 * np.max(np.abs(arr))


def test_public_dispatch_and_observables():
    """pdlt.nnlo dispatches several inputs here; the observables are the stated sums of orders."""
    net = pdlt.MLP("tanh", (3, 10, 10, 10), C_W=1.0)
    th = _quiet(pdlt.nnlo, net, X3[:2])
    assert isinstance(th, NNLOInputs) and th.U.shape == (3,) + (2,) * 6
    n = 10.0
    np.testing.assert_allclose(th.second_moment(3), th.K[2] + th.G1[2] / n + th.G2[2] / n**2)
    np.testing.assert_allclose(th.metric_covariance(3, order=1), th.V[2] / n)
    np.testing.assert_allclose(th.metric_cumulant3(3), th.U[2] / n**2)


def test_bad_input():
    """More inputs than the theory takes, residual steps, kinked non-scale-invariant sigma and (for ReLU) nearly
    collinear inputs: a ParameterError naming the setting."""
    net = pdlt.MLP("tanh", (3, 8, 8), C_W=1.0)
    with pytest.raises(ParameterError, match="at most 4") as e:
        nnlo_inputs(net, np.random.default_rng(0).normal(size=(5, 3)))
    assert e.value.setting == "x"
    with pytest.raises(ParameterError) as e:
        nnlo_inputs(pdlt.MLP("tanh", (3, 8, 8), gamma=0.5), X3)
    assert e.value.setting == "gamma"
    with pytest.raises(ParameterError) as e:
        z = sp.Symbol("z", real=True)
        hard = pdlt.Activation.from_sympy(sp.Piecewise((-1, z < -1), (1, z > 1), (z, True)), name="hard_tanh")
        nnlo_inputs(pdlt.MLP(hard, (3, 8, 8)), X3)
    assert e.value.setting == "activation"
    x = np.array([[1.0, 0.0, 0.0], [1.0, 1e-3, 0.0]])
    with pytest.raises(ParameterError, match="collinear") as e:
        nnlo_inputs(pdlt.MLP("relu", (3, 8, 8), C_W=2.0), x)
    assert e.value.setting == "x"

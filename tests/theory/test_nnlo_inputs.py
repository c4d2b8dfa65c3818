"""Several inputs at order 1/n^2 (pdlt.theory.nnlo_inputs) against independent results: the one-input recursions of
pdlt.theory.nnlo (scalar, heat-equation derivatives on a fine trapezoid), the order-1/n recursions of finite_width,
the exact Wishart chain of deep linear networks (pdlt.theory.wishart, expanded in 1/n by an exact polynomial fit),
Isserlis' theorem for the layer-2 six-point vertex, and the consistency of sub-datasets."""

import itertools
import math
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

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


def _count_vector(seq, d):
    return tuple(seq.count(u) for u in range(d))


@given(st.integers(1, 4), st.sampled_from([(2, 0), (4, 0), (6, 0), (2, 4), (4, 4)]), st.integers(0, 2),
       st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_class_sums_against_direct_sums(d, kk, lead, seed):
    """class_sums over derivative classes against sums built here from itertools: each class a sorted count vector,
    a sequence's class its counts, and a joined pair's class the sum of the two count vectors; arrays and series
    (coefficient by coefficient) alike. And the contraction it serves: sum over sequences of a symmetric A times X
    equals the sum over classes of A's value times the class sum."""
    from pdlt.theory.nnlo_inputs import class_sums
    from pdlt.theory.power_series import Series

    k, k2 = kk
    rng = np.random.default_rng(seed)
    classes = {n: sorted({_count_vector(s, d) for s in itertools.product(range(d), repeat=n)}) for n in (k, k2, k + k2)}
    lead_shape = (2,) * lead
    if k2:
        X = rng.normal(size=lead_shape + (len(classes[k]), len(classes[k2])))
        want = np.zeros(lead_shape + (len(classes[k + k2]),))
        for p, u in enumerate(classes[k]):
            for q, v in enumerate(classes[k2]):
                want[..., classes[k + k2].index(tuple(a + b for a, b in zip(u, v)))] += X[..., p, q]
    else:
        X = rng.normal(size=lead_shape + (d,) * k)
        want = np.zeros(lead_shape + (len(classes[k]),))
        for s in itertools.product(range(d), repeat=k):
            want[..., classes[k].index(_count_vector(s, d))] += X[(Ellipsis,) + s]
    np.testing.assert_allclose(class_sums(X, d, k, k2), want, rtol=1e-13, atol=1e-13)
    ser = class_sums(Series(np.stack([X, 2 * X, -X])), d, k, k2)
    np.testing.assert_allclose(ser.coefficients, np.stack([want, 2 * want, -want]), rtol=1e-13, atol=1e-13)
    if not k2:
        vals = rng.normal(size=len(classes[k]))
        A = np.zeros((d,) * k)
        for s in itertools.product(range(d), repeat=k):
            A[s] = vals[classes[k].index(_count_vector(s, d))]
        np.testing.assert_allclose(np.einsum("...i,i->...", X.reshape(lead_shape + (-1,)), A.ravel()),
                                   class_sums(X, d, k) @ vals, rtol=1e-12, atol=1e-12)


def test_average_keys_keep_p3_p4_per_class():
    """The classed maps of P3, P4 pick, per derivative class, the key of every sequence of that class (the averages
    depend on their derivatives only through the counts), against the dense maps built here."""
    from pdlt.theory.nnlo_inputs import derivative_classes, average_keys

    for d in (1, 2, 3):
        keys, maps = average_keys(d)
        lookup = {(tuple(p), tuple(n)): i for i, (p, n) in enumerate(keys.tolist())}
        for k in (6, 8):
            classes = derivative_classes(d, k)[0].tolist()
            assert maps[(2, k)].shape == (d, d, len(classes))
            for a, b in itertools.product(range(d), repeat=2):
                p = _count_vector((a, b), d)
                for c, n in enumerate(classes):
                    ok = all(nu == 0 or pu > 0 for pu, nu in zip(p, n))
                    assert maps[(2, k)][a, b, c] == (lookup[(p, tuple(n))] if ok else len(keys))


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
    for a in range(2):                                   # each input's kurtosis is its one-input value
        one = _quiet(pdlt.nnlo, net, X3[a])
        for order in (1, 2):
            assert th.kurtosis(3, order)[a] == pytest.approx(one.kurtosis(3, order), rel=1e-10)


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
    with pytest.raises(ParameterError, match="collinear.*round-off") as e:
        nnlo_inputs(pdlt.MLP("relu", (3, 8, 8, 8, 8), C_W=2.0), x)
    assert e.value.setting == "x"
    relu = pdlt.MLP("relu", (2, 8, 8, 8, 1), C_W=2.0)
    with pytest.raises(ParameterError, match="zero variance") as e:
        nnlo_inputs(relu, np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert e.value.setting == "x"
    # an antipodal pair is two inputs (ReLU decorrelates them at layer 2): it joins the nearby pairs continuously
    anti = nnlo_inputs(relu, np.array([[1.0, 0.0], [-1.0, 0.0]])).G2[-1][0, 1]
    near = nnlo_inputs(relu, np.array([[1.0, 0.0], [-1.0, 1e-4]])).G2[-1][0, 1]
    assert anti != 0 and abs(anti - near) < 1e-6 * abs(anti)
    # three inputs, two of them 1e-3 apart: one step is exact (layer 1's derivative averages multiply zeros), and
    # the next is refused (the averages over three inputs would be lost to rounding there), naming layer 2
    x3 = np.concatenate([x, [[0.0, 0.0, 1.0]]])
    assert np.all(np.isfinite(nnlo_inputs(pdlt.MLP("relu", (3, 8, 8), C_W=2.0), x3).V1))
    with pytest.raises(ParameterError, match="collinear.*layer l = 2.*rounding") as e:
        nnlo_inputs(pdlt.MLP("relu", (3, 8, 8, 8, 8), C_W=2.0), x3)
    assert e.value.setting == "x"
    # a repeated input (collinear at every layer), and linearly dependent inputs without bias (a singular kernel at
    # layer 1); with C_b > 0 the dependent inputs are followed, continuously: moving the third input by 1e-3 out of
    # the plane changes K by 1e-6 relative (its own variance; the cross terms stay), and so every statistic by ~1e-6
    deep = pdlt.MLP("relu", (3, 8, 8, 8), C_W=2.0)
    with pytest.raises(ParameterError, match="collinear") as e:
        nnlo_inputs(deep, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert e.value.setting == "x"
    plane = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ParameterError, match="linearly dependent") as e:
        nnlo_inputs(deep, plane)
    assert e.value.setting == "x"
    biased = pdlt.MLP("relu", (3, 8, 8, 8), C_W=2.0, C_b=0.1)
    a, b = nnlo_inputs(biased, plane), nnlo_inputs(biased, plane + [[0, 0, 0], [0, 0, 0], [0, 0, 1e-3]])
    for k in ("V", "G2", "V1", "U"):
        assert np.max(np.abs(getattr(a, k) - getattr(b, k))) < 1e-5 * np.max(np.abs(getattr(b, k))), k


# --- one step against an exact law of the metric (sigma = sin) -----------------------------------------------------

_NS = 4                                                # power series in eps = 1/n_{l-1}: eps^0 .. eps^3


def _smul(x, y):
    out = np.zeros(_NS)
    for i in range(_NS):
        out[i:] += x[i] * y[:_NS - i]
    return out


def _sexp(f):
    """exp of a series: exp(f0) (1 + g + g^2/2 + ...), g = f - f0."""
    g, out, term = f.copy(), np.zeros(_NS), np.zeros(_NS)
    g[0] = 0.0
    out[0] = term[0] = 1.0
    for k in range(1, _NS):
        term = _smul(term, g) / k
        out = out + term
    return np.exp(f[0]) * out


class _SinLaw:
    """G = m0 + eps c1 A + eps^2 c2 A2 + C0 (1 + a eps) eps S, S ~ Wishart_{1/eps}(K0). An average over z | G of a
    product of sines is a combination of exp(-tr(B G)/2) (B = v v^T), kept as {B: coefficient}; its mean over G is
    E exp(-tr(B G)/2) = exp(-tr(B m)/2) det(I + t B K0)^(-1/(2 eps)), t = C0 (1 + a eps) eps, as a series in eps."""

    def __init__(self, d, rng):
        X = rng.normal(size=(d, d))
        self.d, self.K0 = d, X @ X.T / d + 0.3 * np.eye(d)
        self.m0 = 0.1 + 0.05 * np.eye(d)
        self.C0, self.a, self.c1, self.c2 = 0.9, 0.7, 0.4, -0.3
        sym = lambda M: (M + M.T) / 2                                         # noqa: E731
        self.A, self.A2 = sym(rng.normal(size=(d, d))), sym(rng.normal(size=(d, d)))
        self._memo = {}

    def expect(self, poly):
        out = np.zeros(_NS)
        for key, coef in poly.items():
            if key not in self._memo:
                B = np.array(key, dtype=float).reshape(self.d, self.d)
                f = np.zeros(_NS)
                f[0] = -0.5 * np.trace(B @ self.m0)
                f[1] -= 0.5 * self.c1 * np.trace(B @ self.A)
                f[2] -= 0.5 * self.c2 * np.trace(B @ self.A2)
                P = np.eye(self.d)
                for k in range(1, _NS + 1):                                  # log det(I + t B K0) by traces
                    P = P @ B @ self.K0
                    poly_t = np.zeros(_NS)                                   # t^k / eps = C0^k eps^(k-1) (1 + a eps)^k
                    for j in range(k + 1):
                        if k - 1 + j < _NS:
                            poly_t[k - 1 + j] += math.comb(k, j) * self.a**j
                    f -= 0.5 * (-1) ** (k + 1) * self.C0**k * np.trace(P) / k * poly_t
                self._memo[key] = _sexp(f)
            out = out + coef * self._memo[key]
        return out


def _sines(d, idx):
    """<prod_k sin z_{idx_k}>_G = (2i)^-m sum over signs s of prod(s) exp(-v.Gv/2), v = sum_k s_k e_{idx_k} (m even)."""
    out = {}
    for signs in itertools.product((1, -1), repeat=len(idx)):
        v = np.zeros(d, dtype=int)
        for s_, u in zip(signs, idx):
            v[u] += s_
        key = tuple(np.outer(v, v).ravel())
        out[key] = out.get(key, 0.0) + (-0.25) ** (len(idx) // 2) * np.prod(signs)
    return out


def _lin(*terms):
    out = {}
    for w, p in terms:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + w * v
    return out


def _times(p, q):
    out = {}
    for k1, v1 in p.items():
        for k2, v2 in q.items():
            k = tuple(np.add(k1, k2))
            out[k] = out.get(k, 0.0) + v1 * v2
    return out


@pytest.mark.parametrize("d", [2, 3])
def test_one_layer_step_is_exact_for_sin(d):
    """One step of the recursions against the exact law of total cumulance of G' (no Taylor expansion) for a law of G
    with G1 = c1 A + a C0 K0, G2 = c2 A2, V = C0^2 Q(K0), V1 = 2 a V and U = C0^3 w(K0) all nonzero (_SinLaw), so the
    P2, P3, P4 and G1 terms enter with every index placement; sigma = sin, next-layer C_W = 1.3, C_b = 0.07, width
    ratio r = 1.7. The cumulants of G' come out as exact series in eps; their 1/n coefficients must be the step's."""
    from pdlt.theory.nnlo_inputs import metric_step, _tensors

    law, CW, CB, r = _SinLaw(d, np.random.default_rng(1)), 1.3, 0.07, 1.7
    pairs = list(itertools.product(range(d), repeat=2))
    one = {tuple([0] * d * d): 1.0}
    E2 = {X: _sines(d, X) for X in pairs}
    Phi = {X: _lin((CB, one), (CW, E2[X])) for X in pairs}
    S = {(X, Y): _lin((1.0, _sines(d, X + Y)), (-1.0, _times(E2[X], E2[Y]))) for X in pairs for Y in pairs}
    E = law.expect
    inv_nl = np.array([0.0, 1.0 / r, 0.0, 0.0])                       # 1/n_l = eps/r
    mean = {X: E(Phi[X]) for X in pairs}
    cov = {(X, Y): CW**2 * _smul(inv_nl, E(S[X, Y])) + E(_times(Phi[X], Phi[Y])) - _smul(mean[X], mean[Y])
           for X in pairs for Y in pairs}

    def k3(X, Y, Z):
        W = _lin((1.0, _sines(d, X + Y + Z)), (-1.0, _times(_sines(d, X + Y), E2[Z])),
                 (-1.0, _times(_sines(d, X + Z), E2[Y])), (-1.0, _times(_sines(d, Y + Z), E2[X])),
                 (2.0, _times(_times(E2[X], E2[Y]), E2[Z])))
        out = CW**3 * _smul(_smul(inv_nl, inv_nl), E(W))
        for P, Q, R in ((X, Y, Z), (Y, X, Z), (Z, X, Y)):                   # Cov(E[.|G], Cov[.|G])
            out = out + CW**2 * _smul(inv_nl, E(_times(Phi[P], S[Q, R])) - _smul(mean[P], E(S[Q, R])))
        EE = lambda P, Q: E(_times(Phi[P], Phi[Q]))                           # noqa: E731
        return out + (E(_times(_times(Phi[X], Phi[Y]), Phi[Z])) - _smul(EE(X, Y), mean[Z]) - _smul(EE(X, Z), mean[Y])
                      - _smul(EE(Y, Z), mean[X]) + 2 * _smul(_smul(mean[X], mean[Y]), mean[Z]))

    K = law.m0 + law.C0 * law.K0
    Q = np.einsum("ac,bd->abcd", law.K0, law.K0) + np.einsum("ad,bc->abcd", law.K0, law.K0)
    V = law.C0**2 * Q
    G1, G2, V1 = law.c1 * law.A + law.a * law.C0 * law.K0, law.c2 * law.A2, 2 * law.a * V
    U = law.C0**3 * _wick_six(law.K0, 1.0)
    vals, maps, _ = _tensors(pdlt.activation("sin"), K[None])
    G1n, Vn, G2n, V1n, Un = metric_step({mk: vals[0][ix] for mk, ix in maps.items()}, CW, r, G1, V, G2, V1, U)
    series = lambda f, k: np.array([f(X)[k] for X in pairs]).reshape(d, d)   # noqa: E731
    assert max(abs(c[0]) for c in cov.values()) < 1e-14                      # Cov G' starts at 1/n
    np.testing.assert_allclose(G1n, r * series(lambda X: mean[X], 1), atol=1e-12, rtol=0)
    np.testing.assert_allclose(G2n, r**2 * series(lambda X: mean[X], 2), atol=1e-12, rtol=0)
    want_V = np.array([[cov[X, Y][1] for Y in pairs] for X in pairs]).reshape((d,) * 4)
    want_V1 = np.array([[cov[X, Y][2] for Y in pairs] for X in pairs]).reshape((d,) * 4)
    tol = 1e-12 if d == 2 else 1e-9                                             # 3-input averages: ~1e-10
    np.testing.assert_allclose(Vn, r * want_V, atol=tol, rtol=0)
    np.testing.assert_allclose(V1n, r**2 * want_V1, atol=tol, rtol=0)
    assert np.max(np.abs(V1n)) > 0.1 and np.max(np.abs(G2n)) > 0.01               # not vacuous
    triples = list(itertools.product(pairs, repeat=3)) if d == 2 else [
        ((0, 1), (1, 2), (2, 0)), ((0, 0), (1, 2), (2, 2)), ((0, 1), (0, 1), (1, 2)), ((2, 2), (2, 2), (2, 2))]
    for X, Y, Z in triples:
        s = k3(X, Y, Z)
        assert abs(s[0]) < 1e-14 and abs(s[1]) < 1e-14                          # kappa_3(G') starts at 1/n^2
        assert Un[X + Y + Z] == pytest.approx(r**2 * s[2], abs=tol * np.max(np.abs(Un)))


# --- kinked activations near collinearity: closed-form averages over one and two inputs --------------------------


def _mp_pair_average(fa, fb, K):
    """``E[fa(z_a) fb(z_b)]`` at 40 digits for factors ``c y^k (A Theta(y) + B Theta(-y))`` (``("F", k, A, B, c)``)
    or ``c delta^(m)`` (``("D", m, c)``), by the route of derivations/README.md §13.6 in mpmath: products of the
    first kind by the polar integral (mpmath.quad over the angle, split at the kink rays), a delta integrated out
    through the conditional law of the other input."""
    import mpmath as mp

    from pdlt.closed_forms import _derivative

    def he0(m):
        return mp.mpf(0) if m % 2 else (-1) ** (m // 2) * mp.mpf(math.prod(range(m - 1, 0, -2)) if m > 1 else 1)

    def mean_1d(f, var):
        if f[0] == "F":
            _, k, A, B, c = f
            return c * var ** (mp.mpf(k) / 2) * (A + (-1) ** k * B) * 2 ** (mp.mpf(k) / 2) * mp.gamma(
                mp.mpf(k + 1) / 2) / mp.sqrt(mp.pi) / 2
        return f[2] * var ** (-mp.mpf(f[1] + 1) / 2) * he0(f[1]) / mp.sqrt(2 * mp.pi)

    (a, b), (_, c) = K
    if fa[0] == "F" and fb[0] == "F":
        m11 = mp.sqrt(a)
        m21 = b / m11
        m22 = mp.sqrt(c - m21**2)

        def piece(f, y):
            return f[4] * y ** f[1] * (f[2] if y > 0 else f[3])

        t2 = mp.atan2(m21, -m22) % mp.pi
        cuts = sorted({mp.mpf(0), mp.pi / 2, 3 * mp.pi / 2, t2, t2 + mp.pi, 2 * mp.pi})
        k = fa[1] + fb[1]
        return 2 ** (mp.mpf(k) / 2) * mp.gamma(mp.mpf(k) / 2 + 1) / (2 * mp.pi) * mp.quad(
            lambda t: piece(fa, m11 * mp.cos(t)) * piece(fb, m21 * mp.cos(t) + m22 * mp.sin(t)), cuts)
    if fa[0] != "D":
        fa, fb, a, c = fb, fa, c, a
    r, s2 = b / a, c - b * b / a
    tot = sum(math.comb(fa[1], j) * a ** (-mp.mpf(fa[1] - j + 1) / 2) * he0(fa[1] - j) / mp.sqrt(2 * mp.pi) * r**j
              * mean_1d(_derivative(fb, j), s2) for j in range(fa[1] + 1))
    return fa[2] * (-1) ** fa[1] * tot


def test_closed_form_averages_against_hermite_quadrature():
    """Over one and two inputs the scale-invariant averages are closed forms; at moderate correlation the previous
    route (Hermite-weighted quadrature, derivatives moved onto the Gaussian) is accurate and independent."""
    from pdlt.closed_forms import power_derivative_averages
    from pdlt.theory.nnlo_inputs import average_keys, _groups

    keys, _ = average_keys(2)
    K = np.array([[[1.3, 0.3], [0.3, 0.8]], [[0.7, -0.35], [-0.35, 1.1]]])
    for name in ("relu", "leaky_relu"):
        act = pdlt.activations.activation(name)
        for (sup, _), (ix, pn) in _groups(keys).items():
            Ks = K[:, sup][:, :, sup]
            got = power_derivative_averages(*act.slopes, pn[:, 0, :], pn[:, 1, :], Ks)
            want = np.empty_like(got)
            for b, Kb in enumerate(Ks):
                Lam = np.linalg.inv(Kb)
                for j, (p, n) in enumerate(zip(pn[:, 0, :], pn[:, 1, :])):
                    def f(z, p=p, n=n, Lam=Lam):
                        from test_orthant import _hermite
                        return _hermite(z @ Lam.T, Lam, tuple(int(v) for v in n)) * np.prod(act(z) ** p, axis=-1)
                    want[b, j] = pdlt.gaussian.expect(f, Kb, kinks=act.kinks)
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_closed_form_averages_against_price_derivatives_near_collinear():
    """Independent of the delta integration: by Price's theorem ``<s^(k+2u)(z_a) s^(k+2v)(z_b)>`` is ``2^(u+v)``
    times the derivative ``d^k/dK_ab^k d^u/dK_aa^u d^v/dK_bb^v`` of the arc-cosine kernel ``<s_a s_b>``, taken here
    by mpmath at 50 digits, at correlation 0.999, up to 7 derivatives. Allowed: ten times the digits float64 loses
    in the Schur complement ``K_bb (1 - rho^2)``, ``10 eps / (1 - rho^2)``."""
    import mpmath as mp

    from pdlt.closed_forms import power_derivative_averages

    def arc_cosine(kaa, kab, kbb):
        c = kab / mp.sqrt(kaa * kbb)
        return mp.sqrt(kaa * kbb) * (mp.sqrt(1 - c * c) + (mp.pi - mp.acos(c)) * c) / (2 * mp.pi)

    rho = 0.999
    with mp.workdps(50):
        kaa, kbb = mp.mpf("1.3"), mp.mpf("0.8")
        kab = mp.mpf(rho) * mp.sqrt(kaa * kbb)
        K = np.array([[[float(kaa), float(kab)], [float(kab), float(kbb)]]])
        for na in range(8):
            for nb in range(8 - na):
                if (na - nb) % 2:
                    continue
                k = min(na, nb)
                want = 2 ** ((na + nb - 2 * k) // 2) * mp.diff(arc_cosine, (kaa, kab, kbb),
                                                                ((na - k) // 2, k, (nb - k) // 2))
                got = power_derivative_averages(1.0, 0.0, [[1, 1]], [[na, nb]], K)[0, 0]
                assert abs(got - float(want)) <= 10 * np.finfo(float).eps / (1 - rho**2) * abs(float(want)), (na, nb)


@pytest.mark.parametrize("angle, hidden", [(0.15, 8), pytest.param(math.pi / 2, 60, marks=pytest.mark.slow)])
def test_relu_pair_near_collinear_against_high_precision(angle, hidden):
    """Two ReLU inputs whose correlation reaches 1 - rho = 9e-3 (angle 0.15, 8 hidden layers, L = 9; refused before:
    the Hermite route keeps 1e-6 of the eighth-derivative averages at 1 - rho = 0.05), or orthogonal inputs followed
    60 hidden layers (near the reach of 64): G2, V1 and U against the same recursions run at 40 digits on averages
    from mpmath, within the round-off tolerance the theory promises of their scale, the larger of K^p and the
    statistic's largest entry (its probe is checked here too: a tighter tolerance refuses). This checks the round-off
    of the float64 path, not the delta formula (the same formula at 40 digits; the formula is checked against Price
    derivatives and the Hermite route above)."""
    import mpmath as mp

    import pdlt.theory.nnlo_inputs as ni
    from pdlt.closed_forms import _power_factor

    net = pdlt.MLP("relu", (2,) + (16,) * hidden + (1,), C_W=2.0)
    x = np.array([[1.0, 0.0], [math.cos(angle), math.sin(angle)]])
    th = _quiet(nnlo_inputs, net, x)
    K = th.K
    assert angle > 1 or 1 - K[-2][0, 1] / np.sqrt(K[-2][0, 0] * K[-2][1, 1]) < 0.01
    one = ("F", 0, 1, 1, 1.0)                                   # the constant 1, for averages over one input
    with mp.workdps(40):
        keys, maps = ni.average_keys(2)
        c = mp.cos(mp.mpf(angle)) if angle < 1 else mp.mpf(0)
        Km = [[mp.mpf(1), c], [c, mp.mpf(1)]]                                          # C_W x x^T / n_0
        state = [np.full((2,) * r, mp.mpf(0), dtype=object) for r in (2, 4, 2, 4, 6)]
        for _ in range(net.L - 1):
            vals = []
            for p, n in keys:
                sup = [u for u in range(2) if p[u]]
                fs = [_power_factor(int(p[u]), int(n[u]), 1.0, 0.0) for u in sup]
                if len(sup) == 1:
                    vals.append(_mp_pair_average(fs[0], one, [[Km[sup[0]][sup[0]], 0], [0, 1]]))
                else:
                    vals.append(_mp_pair_average(fs[0], fs[1], Km))
            vals = np.array(vals + [mp.mpf(0)], dtype=object)
            t = {mk: vals[idx] for mk, idx in maps.items()}
            state = list(ni.metric_step(t, mp.mpf(2), 1, *state))
            Km = [[2 * t[(2, 0)][i, j] for j in range(2)] for i in range(2)]
    scale = float(np.max(np.diagonal(K[-1])))
    for name, got, want, power in (("G2", th.G2[-1], state[2], 1), ("V1", th.V1[-1], state[3], 2),
                                   ("U", th.U[-1], state[4], 3)):
        err = np.max(np.abs(got - want.astype(float))) / max(scale**power, np.max(np.abs(got)))
        assert err < ni.ROUND_OFF_TOLERANCE, (name, err)
    _refused_at_tight_tolerance(net, x)


def _refused_at_tight_tolerance(net, x):
    """The round-off probe is live: with a tolerance of 1e-12 the same call is refused."""
    import pdlt.theory.nnlo_inputs as ni

    tight = ni.ROUND_OFF_TOLERANCE
    try:
        ni.ROUND_OFF_TOLERANCE = 1e-12
        with pytest.raises(ParameterError, match="round-off"):
            _quiet(nnlo_inputs, net, x)
    finally:
        ni.ROUND_OFF_TOLERANCE = tight


def test_aligned_inputs_round_off_probe():
    """Four ReLU inputs eye(4) + 0.3 through a critical network: followed to L = 50 (correlation eigenvalue 0.012;
    the quadrature used before took 23 to 26 s there, and refused below 0.01), and G2, V1, U agree with those of the
    inputs in another order (another rounding path of every average) within the probe's tolerance of their scale
    (measured: 3e-8 for V1); 30 layers further the probe refuses, naming the layer, as does a tighter tolerance at
    L = 50."""
    import pdlt.theory.nnlo_inputs as ni

    x = np.eye(4) + 0.3
    net = pdlt.MLP("relu", (4,) + (8,) * 50 + (1,), C_W=2.0)
    a = _quiet(nnlo_inputs, net, x)
    perm = [2, 0, 3, 1]
    b = _quiet(nnlo_inputs, net, x[perm])
    inv = np.argsort(perm)
    for k, power in (("G2", 1), ("V1", 2), ("U", 3)):
        A, B = getattr(a, k), getattr(b, k)
        for ax in range(1, B.ndim):
            B = np.take(B, inv, axis=ax)
        for l in range(2, net.L + 1):
            scale = max(np.max(np.diagonal(a.K[l - 1])) ** power, np.max(np.abs(A[l - 1])))
            assert np.max(np.abs(A[l - 1] - B[l - 1])) <= ni.ROUND_OFF_TOLERANCE * scale, (k, l)
    with pytest.raises(ParameterError, match="round-off") as e:
        _quiet(nnlo_inputs, pdlt.MLP("relu", (4,) + (8,) * 80 + (1,), C_W=2.0), x)
    assert e.value.setting == "x" and "layer l = " in str(e.value)
    _refused_at_tight_tolerance(net, x)


@pytest.mark.slow
def test_four_input_round_off_against_mpmath_averages():
    """The round-off probe of three and four inputs against an independent reference: inputs eye(4) + 0.3 keep an
    equicorrelated kernel through the network, which is one-factor, so every average over three or four inputs is a
    30-digit one-dimensional integral (tests/test_orthant.py); the recursions rerun on those averages give G2, V1, U
    whose float64 counterparts differ by less than the probe's change and the tolerance, at every layer to L = 21."""
    import pdlt.theory.nnlo_inputs as ni
    from pdlt.closed_forms import _power_factor
    from test_orthant import _mp_one_factor_averages

    net = pdlt.MLP("relu", (4,) + (8,) * 20 + (1,), C_W=2.0)
    x = np.eye(4) + 0.3
    th = _quiet(nnlo_inputs, net, x)
    K = th.K[:-1]
    vals, maps, probe = ni._tensors(net.activation, K)
    exact = vals.copy()
    keys, _ = ni.average_keys(4)
    groups = {g: [tuple(_power_factor(int(p), int(n), 1.0, 0.0) for p, n in zip(pr, nr)) for pr, nr in pn]
              for g, (ix, pn) in ni._groups(keys).items() if len(g[0]) >= 3}
    for b, Kb in enumerate(K):
        sd = np.sqrt(np.diagonal(Kb))
        rho = Kb[0, 1] / (sd[0] * sd[1])
        assert np.allclose(Kb / np.outer(sd, sd), rho + (1 - rho) * np.eye(4), rtol=0, atol=1e-13)
        assert np.allclose(sd, sd[0], rtol=1e-14)
        # (every support of a size is the same Gaussian: each distinct row once)
        for q in (3, 4):
            rows = sorted({r for (sup, _), rs in groups.items() if len(sup) == q for r in rs})
            got = dict(zip(rows, _mp_one_factor_averages(rows, [np.sqrt(rho)] * q, sd[:q])))
            for (sup, res), rs in groups.items():
                if len(sup) == q:
                    exact[b, ni._groups(keys)[(sup, res)][0]] = [got[r] for r in rs]
    ref, other = ({k: np.zeros_like(v) for k, v in th.__dict__.items() if k in ("G1", "V", "G2", "V1", "U")}
                  for _ in range(2))
    ni._recursion(net, exact, maps, ref)
    ni._recursion(net, probe, maps, other)
    for k, power in (("V1", 2), ("U", 3)):
        for l in range(2, net.L + 1):
            got = getattr(th, k)[l - 1]
            scale = max(np.max(np.diagonal(th.K[l - 1])) ** power, np.max(np.abs(got)))
            err = np.max(np.abs(got - ref[k][l - 1]))
            assert err <= ni.ROUND_OFF_TOLERANCE * scale, (k, l, err / scale)
            assert err <= np.max(np.abs(other[k][l - 1] - got)) + 1e-15 * scale, (k, l)


@pytest.mark.parametrize("act", ["relu", "leaky_relu(0.1)", "Abs(z)"])
def test_bias_free_scale_invariant_statistics_are_homogeneous_at_extreme_scales(act):
    """A bias-free scale-invariant network's statistics of inputs s x are s^(2p) times those of x (p = 1 for K, G1,
    G2; 2 for V, V1; 3 for U): to 1e-12 at s = 1e-41 and 1e44 (the averages over several inputs at kernels of 1e-82
    came out 4-25 times off with no warning, and at 1e88 overflowed), and a scale whose U leaves float64's range is
    refused naming x."""
    net = pdlt.MLP(act, (3, 10, 10, 10, 1), C_W=2.0 if act != "leaky_relu(0.1)" else 2.0 / 1.01)
    unit = _quiet(nnlo_inputs, net, X3)
    for s in (1e-41, 1e44):
        th = _quiet(nnlo_inputs, net, s * X3)
        assert not th.caveats
        for k, p in (("K", 1), ("G1", 1), ("G2", 1), ("V", 2), ("V1", 2), ("U", 3)):
            want = getattr(unit, k) * s ** (2 * p)
            np.testing.assert_allclose(getattr(th, k), want, rtol=0, atol=1e-12 * np.max(np.abs(want)), err_msg=k)
    with pytest.raises(ParameterError) as err:
        _quiet(nnlo_inputs, net, 1e60 * X3)
    assert err.value.setting == "x"

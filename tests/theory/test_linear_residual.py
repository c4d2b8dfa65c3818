"""Deep linear networks with shortcuts at every order in 1/n (pdlt.theory.linear_residual): against exact Gaussian
expectations of the network's polynomial at width 3, a one-input chain over partitions that tracks one neuron's own
moments instead of using the pairing identity, the plain Wishart chain and the 1/n^2 recursions at gamma = 0, the
O(1/n) trajectory theory of pdlt.theory.residual, and Monte Carlo at L/n > 1 where the O(1/n) predictions are
rejected."""

import functools
import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

import pdlt
from pdlt.theory.kernel import kernel_flow
from pdlt.theory.truncation import next_order, next_order_factor, truncation_error

X = np.array([[1.0, 0.3], [-0.5, 0.8], [0.2, -1.1]])
pytestmark = pytest.mark.filterwarnings("ignore::pdlt.errors.TruncationWarning")


# ------------------------------------------------------------------ one input: the chain over partitions
# M_P = E[prod_t u_t^(p_t)] (u = z^2) over distinct neurons t, for every partition with sum p_t <= 3, one neuron's own
# moments (P = (2,), (3,), (2, 1)) tracked as states of their own: no pairing identity assumed.
PARTITIONS = ((), (1,), (2,), (1, 1), (3,), (2, 1), (1, 1, 1))


def _poly(c, factor):
    """Polynomial in 1/n (coefficients from the constant up) times another."""
    out = [0.0] * (len(c) + len(factor) - 1)
    for i, x in enumerate(c):
        for j, y in enumerate(factor):
            out[i + j] += x * y
    return out


def _times_gram(parts, j):
    """E[prod u^p G^^j] as {partition: polynomial in 1/n}: one G^ at a time on a neuron present (1/n each) or a new
    one (1 - q/n)."""
    terms = {tuple(sorted(parts, reverse=True)): [1.0]}
    for _ in range(j):
        new = defaultdict(lambda: [0.0] * 8)
        for P, c in terms.items():
            for t in range(len(P)):
                key = tuple(sorted(P[:t] + (P[t] + 1,) + P[t + 1:], reverse=True))
                new[key] = [x + y for x, y in zip(new[key], _poly(c, [0.0, 1.0]) + [0.0] * 8)]
            key = P + (1,)
            new[key] = [x + y for x, y in zip(new[key], _poly(c, [1.0, -float(len(P))]) + [0.0] * 8)]
        terms = dict(new)
    return terms


def _partition_step(M, gamma, xi, C_b, r, n):
    """One layer: E[z'^(2p) | l] = sum_k binom(2p, 2k) (2k-1)!! gamma^(2p-2k) (xi^2 s)^k u^(p-k), s = C_b + r G^."""
    new = {(): 1.0}
    for P in PARTITIONS[1:]:
        total = 0.0
        for ks in np.ndindex(*(p + 1 for p in P)):
            coef = math.prod(math.comb(2 * p, 2 * k) * math.prod(range(2 * k - 1, 0, -2)) * gamma ** (2 * (p - k))
                             * xi ** (2 * k) for p, k in zip(P, ks))
            left, b = tuple(p - k for p, k in zip(P, ks) if p > k), sum(ks)
            for j in range(b + 1):
                w = coef * math.comb(b, j) * C_b ** (b - j) * r**j
                for Q, c in _times_gram(left, j).items():
                    total += w * sum(ck / n**k for k, ck in enumerate(c)) * M[Q]
        new[P] = total
    return new


def partition_chain(net, K1):
    """``[{partition: M_P} per layer]`` of one input through a deep linear residual net."""
    M = {P: math.prod(math.prod(range(2 * p - 1, 0, -2)) * K1**p for p in P) for P in PARTITIONS}
    out = [M]
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        M = _partition_step(M, net.gamma[l], net.xi[l], C_b, C_W, float(net.widths[l]))
        out.append(M)
    return out


# ------------------------------------------------------------------ exact expectations of polynomials in normals
def _mul(p, q):
    out = defaultdict(float)
    for a, x in p.items():
        for b, y in q.items():
            out[tuple(sorted(a + b))] += x * y
    return out


def _add(*ps):
    out = defaultdict(float)
    for p in ps:
        for a, x in p.items():
            out[a] += x
    return out


def _expect(p, var):
    """E of a polynomial (monomials: sorted tuples of variable ids) in independent centred normals."""
    total = 0.0
    for mono, coef in p.items():
        counts = defaultdict(int)
        for v in mono:
            counts[v] += 1
        term = coef
        for v, k in counts.items():
            term = 0.0 if k % 2 else term * math.prod(range(k - 1, 0, -2)) * var[v] ** (k // 2)
        total += term
    return total


def _network(x, n, L, C_W, C_b, gamma, xi, lambda_b=1.0, lambda_W=1.0):
    """The preactivations ``z[i][a]`` of the last layer of a linear residual network as polynomials in its weights and
    biases, the variables' variances and their learning rates (lambda_b; lambda_W / fan-in for weights)."""
    var, rate = {}, {}

    def normal(v, lam):
        key = len(var) + 1
        var[key], rate[key] = v, lam
        return {(key,): 1.0}

    def affine(fields, fan_in, scale):
        b = [normal(C_b, lambda_b) for _ in range(n)]
        W = [[normal(C_W / fan_in, lambda_W / fan_in) for _ in range(fan_in)] for _ in range(n)]
        return [[_add({k: scale * c for k, c in b[i].items()},
                      *[{k: scale * c for k, c in _mul(W[i][j], fields[j][a]).items()} for j in range(fan_in)])
                 for a in range(len(x))] for i in range(n)]

    z = affine([[{(): float(xa[j])} for xa in x] for j in range(len(x[0]))], len(x[0]), 1.0)
    for _ in range(1, L):
        new = affine(z, n, xi)
        z = [[_add(new[i][a], {k: gamma * c for k, c in z[i][a].items()}) for a in range(len(x))] for i in range(n)]
    return z, var, rate


def _derivative(p, v):
    """d p / d (variable v) of a polynomial."""
    out = defaultdict(float)
    for mono, c in p.items():
        k = mono.count(v)
        if k:
            i = mono.index(v)
            out[mono[:i] + mono[i + 1:]] += k * c
    return out


def _ntk_entry(zi, zk, rate):
    """``H_ik = sum_v rate_v dz_i/dv dz_k/dv`` as a polynomial."""
    return _add(*[{m: rate[v] * c for m, c in _mul(_derivative(zi, v), _derivative(zk, v)).items()} for v in rate])


def _matchings(labels):
    if not labels:
        yield []
        return
    for i in range(1, len(labels)):
        for m in _matchings(labels[1:i] + labels[i + 1:]):
            yield [(labels[0], labels[i])] + m


def _conditional_moments(x, n, later, weights, C_W, C_b, gamma, xi):
    """Raw ``E[z_0a z_0b z_1c z_1d]`` and ``E[z_0a z_0b z_1c z_1d z_2e z_2f]`` at the last layer of a linear residual
    network, averaged with ``weights`` ``(P,)`` over the weights of layers >= 2 given as ``later`` ``(P, L - 1, n, n)``
    (in units of sqrt(C_W/n)): given those the field is linear in g = (b^(1), W^(1), b^(2), ..., b^(L)), so Gaussian
    with covariance Q, and Isserlis' theorem gives every moment exactly. Also returns each point's values, for error
    bars when the points are sampled."""
    d, n0 = x.shape
    L = later.shape[1] + 1
    var = np.r_[np.full(n, C_b), np.full(n * n0, C_W / n0), np.full(n * (L - 1), C_b)]
    A = np.zeros((later.shape[0], n, d, var.size))           # z^(1)[i, a] as a linear form in g
    for i in range(n):
        A[:, i, :, i] = 1.0
        A[:, i, :, n + i * n0:n + (i + 1) * n0] = x
    for l in range(L - 1):
        A = gamma * A + xi * np.einsum("pij,pjag->piag", later[:, l] * math.sqrt(C_W / n), A)
        for i in range(n):
            A[:, i, :, n + n * n0 + l * n + i] += xi
    Q = np.einsum("piag,g,pjbg->piajb", A, var, A)
    slots = [(0, "a"), (0, "b"), (1, "c"), (1, "d"), (2, "e"), (2, "f")]
    values = []
    for k in (4, 6):
        total = 0.0
        for m in _matchings(list(range(k))):
            spec = ",".join("p" + slots[a][1] + slots[b][1] for a, b in m)
            mats = [Q[:, slots[a][0], :, slots[b][0], :] for a, b in m]
            total = total + np.einsum(spec + "->p" + "abcdef"[:k], *mats)
        values.append(total)
    return [np.einsum("p,p...->...", weights, v) for v in values], values


def _two_layer_moments(x, n, **kw):
    """Layer 2 exactly: Gauss-Hermite over the n^2 layer-2 weights (4 nodes, exact for their degree <= 6)."""
    nodes, w = np.polynomial.hermite_e.hermegauss(4)
    points = np.array(list(itertools.product(range(4), repeat=n * n)))
    four, six = np.zeros((x.shape[0],) * 4), np.zeros((x.shape[0],) * 6)
    for chunk in np.array_split(points, 16):
        weights = np.prod(w[chunk], 1) / w.sum() ** (n * n)
        (f, s), _ = _conditional_moments(x, n, nodes[chunk].reshape(-1, 1, n, n), weights, **kw)
        four, six = four + f, six + s
    return four, six


def test_the_partition_chain_is_exact_at_width_three():
    """The oracle first: n = 3 (three distinct neurons exist), bias, gamma = 0.7, xi = 0.6: every one-input moment over
    neuron tuples after one residual step, and the fourth-order ones after two, equal the Gaussian expectations of the
    network's own polynomial (no 1/n expansion, no pairing identity)."""
    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    x1 = [[0.8]]
    for L in (2, 3):
        net = pdlt.MLP("linear", (1,) + (3,) * L, **kw)
        M = partition_chain(net, float(kernel_flow(net, net.inputs(x1)).K[0, 0, 0]))[-1]
        z, var, _ = _network(x1, 3, L, **kw)
        u = [_mul(z[i][0], z[i][0]) for i in range(3)]
        parts = {(1,): u[0], (2,): _mul(u[0], u[0]), (1, 1): _mul(u[0], u[1])}
        if L == 2:      # (the sixth-order products of L = 3 are too long to expand here)
            parts.update({(3,): _mul(parts[(2,)], u[0]), (2, 1): _mul(parts[(2,)], u[1]),
                          (1, 1, 1): _mul(parts[(1, 1)], u[2])})
        for P, poly in parts.items():
            assert M[P] == pytest.approx(_expect(poly, var), rel=1e-12), (L, P)


def test_one_neuron_statistics_are_exact_at_widths_one_and_two():
    """Where three (or two) distinct neurons do not exist the tuple moments are formal, but one neuron's fourth and
    sixth cumulants and its NTK moments E H_ii, E H_ii^2, E H_ii z_i^2, which reach them only through the pairing
    identity, are still exact (n = 1 at L = 2, 3, 4; n = 2 at L = 2, 3; against the network's own polynomials)."""
    from pdlt.theory.linear_residual import ntk_chain
    from pdlt.theory.ntk import learning_rates

    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    for n, L in ((1, 2), (1, 3), (1, 4), (2, 2), (2, 3)):
        net = pdlt.MLP("linear", (1,) + (n,) * L, **kw)
        exact = pdlt.linear_all_orders(net, [[0.8]])
        z, var, rate = _network([[0.8]], n, L, **kw, lambda_b=0.7, lambda_W=1.3)
        u = _mul(z[0][0], z[0][0])
        m, A, A6 = _expect(u, var), _expect(_mul(u, u), var), _expect(_mul(_mul(u, u), u), var)
        assert exact.four_point_single(L).item() == pytest.approx(A - 3 * m * m, rel=1e-12)
        assert exact.six_point_single(L)[0] == pytest.approx(A6 - 15 * m * A + 30 * m**3, rel=1e-12)
        H = _ntk_entry(z[0][0], z[0][0], rate)
        lb, lw = learning_rates(net, 0.7, 1.3)
        c = ntk_chain(net, np.array([[0.2 + 1.1 * 0.64]]), np.array([[0.7 + 1.3 * 0.64]]), lb, lw)
        h, hh_d, hh_o, hz_d, hz_o = (c[k][-1].item() for k in ("h", "hh_d", "hh_o", "hz_d", "hz_o"))
        assert _expect(H, var) == pytest.approx(h, rel=1e-12)
        assert _expect(_mul(H, H), var) == pytest.approx(hh_d + 2 * hh_o, rel=1e-12)
        assert _expect(_mul(H, u), var) == pytest.approx(hz_d + 2 * hz_o, rel=1e-12)


def test_one_input_equals_the_partition_chain():
    """Random per-layer gamma, xi, C_W, C_b at widths 3 and 5, eight layers: the tensor chain (which takes one
    neuron's moments from the pairing identity) gives the partition chain's connected four- and six-point functions,
    and one neuron's sixth cumulant M_3 - 15 m M_2 + 30 m^3 is 15 kappa3."""
    rng = np.random.default_rng(0)
    L = 8
    for n in (3, 5):
        net = pdlt.MLP("linear", (1,) + (n,) * L, C_W=list(rng.uniform(0.5, 1.5, L)), C_b=list(rng.uniform(0, .5, L)),
                       gamma=[0.0] + list(rng.uniform(-0.9, 0.9, L - 1)), xi=[1.0] + list(rng.uniform(.3, 1.2, L - 1)))
        exact = pdlt.linear_all_orders(net, [[1.0]])
        for l, M in enumerate(partition_chain(net, float(exact.mean[0, 0, 0])), start=1):
            m = M[(1,)]
            scale = m**3
            assert exact.mean[l - 1, 0, 0] == pytest.approx(m, rel=1e-13)
            assert exact.cov[l - 1].item() == pytest.approx(M[(1, 1)] - m * m, rel=1e-11, abs=1e-13 * m * m)
            k3 = M[(1, 1, 1)] - 3 * m * M[(1, 1)] + 2 * m**3
            assert exact.kappa3[l - 1].item() == pytest.approx(k3, rel=1e-10, abs=1e-12 * scale)
            k6 = M[(3,)] - 15 * m * M[(2,)] + 30 * m**3
            assert exact.six_point_single(l)[0] == pytest.approx(k6, rel=1e-10, abs=1e-11 * scale)


def test_two_inputs_against_the_conditional_gaussian():
    """Two inputs, n = 3, one residual step with bias: every entry of the connected four- and six-point functions
    equals an exact computation of its own kind: given the layer-2 weights the field is Gaussian (linear in the other
    weights and biases), so Isserlis' theorem inside and a Gauss-Hermite rule over the 9 layer-2 weights (4 nodes,
    exact for their degree) outside."""
    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    x = X[:2]
    four, six = _two_layer_moments(x, 3, **kw)
    exact = pdlt.linear_all_orders(pdlt.MLP("linear", (2, 3, 3), **kw), x)
    m = exact.mean[1]
    cov = four - np.einsum("ab,cd->abcd", m, m)
    k3 = (six - np.einsum("ab,cdef->abcdef", m, four) - np.einsum("cd,abef->abcdef", m, four)
          - np.einsum("ef,abcd->abcdef", m, four) + 2 * np.einsum("ab,cd,ef->abcdef", m, m, m))
    np.testing.assert_allclose(exact.cov[1], cov, rtol=0, atol=1e-13 * np.abs(cov).max())
    # (the connected six-point function cancels raw moments of the size of m^3: round-off relative to those)
    np.testing.assert_allclose(exact.kappa3[1], k3, rtol=0, atol=1e-13 * np.abs(six).max())


def test_two_inputs_deep_against_conditional_gaussian_sampling():
    """Two inputs, n = 3, L = 4 (three residual steps): the raw four- and six-point moments against a Rao-Blackwellized
    Monte Carlo: 4 x 10^4 draws of the weights of layers 2-4, each given Isserlis' theorem exactly on its conditional
    Gaussian; batch-means errors, every entry within 5 of them, while the O(1/n) four-point function and the
    six-point function without its connected part (the leading order's) are rejected."""
    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    x = X[:2]
    later = np.random.default_rng(3).standard_normal((40_000, 3, 3, 3))
    _, (four, six) = _conditional_moments(x, 3, later, np.full(len(later), 1 / len(later)), **kw)
    net = pdlt.MLP("linear", (2,) + (3,) * 4, **kw)
    exact = pdlt.linear_all_orders(net, x)
    m, cov, k3 = exact.mean[-1], exact.cov[-1], exact.kappa3[-1]
    raw4 = cov + np.einsum("ab,cd->abcd", m, m)
    raw6 = (k3 + np.einsum("ab,cdef->abcdef", m, raw4) + np.einsum("cd,abef->abcdef", m, raw4)
            + np.einsum("ef,abcd->abcdef", m, raw4) - 2 * np.einsum("ab,cd,ef->abcdef", m, m, m))
    for values, want in ((four, raw4), (six, raw6)):
        batches = values.reshape(50, -1, *values.shape[1:]).mean(axis=1)
        z = (batches.mean(axis=0) - want) / (batches.std(axis=0, ddof=1) / math.sqrt(50))
        assert np.abs(z).max() < 5, np.abs(z).max()
    # negative controls: the O(1/n) four-point function, and a six-point function without its connected part
    first = pdlt.finite_width(net, x).connected_four_point(4) + np.einsum("ab,cd->abcd", m, m)
    for values, wrong in ((four, first), (six, raw6 - k3)):
        batches = values.reshape(50, -1, *values.shape[1:]).mean(axis=1)
        z = (batches.mean(axis=0) - wrong) / (batches.std(axis=0, ddof=1) / math.sqrt(50))
        assert np.abs(z).max() > 5


def test_plain_layers_are_the_wishart_chain_and_the_nnlo_recursions():
    """gamma = 0: the tuple chain reproduces the metric's Wishart chain, four- and six-point (unequal widths, per-layer
    C_W and C_b, three inputs), and its 1/n, 1/n^2 coefficients are V, V1 and U of the one-input recursions and of the
    several-input tensors (pdlt.theory.nnlo, nnlo_inputs): different algorithms."""
    from pdlt.theory.linear_residual import first_kernel, linear_residual_orders, tuple_chain

    net = pdlt.MLP("linear", (2, 5, 3, 7, 4, 6), C_W=(1.3, 0.9, 1.1, 1.2, 0.8), C_b=(0.1, 0.2, 0.0, 0.3, 0.05))
    wish = pdlt.linear_all_orders(net, X)
    c = tuple_chain(net, first_kernel(net, wish.x))
    np.testing.assert_allclose(c["m"], wish.mean, rtol=1e-14)
    np.testing.assert_allclose(c["cov"], wish.cov, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c["kappa3"], wish.kappa3, rtol=1e-11, atol=1e-15)
    for xs, ref in ((X[:1], pdlt.nnlo(net, X[0])), (X[:2], pdlt.nnlo(net, X[:2]))):
        got = linear_residual_orders(net, net.inputs(xs))
        for k in ("V", "V1", "U"):
            want = getattr(ref, k).reshape(got[k].shape)
            np.testing.assert_allclose(got[k], want, rtol=1e-11, atol=1e-13 * np.abs(want).max(), err_msg=k)


@pytest.mark.parametrize("gamma, xi, C_b", [(0.7, 0.6, 0.1), (0.9, 1.0, 0.0), (-0.5, 0.8, 0.3)])
def test_first_order_is_the_trajectory_theory(gamma, xi, C_b):
    """Two inputs with shortcuts: the 1/n coefficient of the exact four-point function is the O(1/n) vertex of
    pdlt.finite_width's trajectory theory (linear response of the fields, pdlt.theory.residual), a different
    derivation; the mean has no 1/n part (G1 = 0) and the connected functions start at their orders (no 1/n^0 part of
    the four-point, no 1/n part of the six-point)."""
    from pdlt.theory.linear_residual import first_kernel, tuple_chain

    net = pdlt.MLP("linear", (2,) + (8,) * 5, C_W=1.0, C_b=C_b, gamma=gamma, xi=xi)
    th = pdlt.finite_width(net, X[:2])
    c = tuple_chain(net, first_kernel(net, th.x), series=True)
    np.testing.assert_allclose(c["m"], th.K, rtol=1e-14)
    scale = np.abs(th.V).max()
    assert np.abs(th.G1).max() < 1e-12 * np.abs(th.K).max()
    assert np.abs(c["cov"][:, 0]).max() < 1e-13 * scale
    np.testing.assert_allclose(c["cov"][1:, 1] * 8, th.V[1:], rtol=0, atol=1e-13 * scale)
    assert np.abs(c["kappa3"][:, :2]).max() < 1e-12 * np.abs(c["kappa3"]).max()


def test_monte_carlo_beyond_the_first_order():
    """n = 4, L = 5 (L/n > 1), gamma = 0.8, xi = 0.6, bias: the exact two- and four-point functions of 3 inputs agree
    with 4 x 10^4 sampled networks (every entry, |z| < 5) where the O(1/n) four-point function is rejected (|z| > 5);
    for one input the exact kurtosis and sixth cumulant agree with 10^5 networks, the O(1/n^2) kurtosis too, while the
    O(1/n) kurtosis and the leading-order sixth cumulant (0) are rejected."""
    net = pdlt.MLP("linear", (2,) + (4,) * 5, C_W=1.0, C_b=0.1, gamma=0.8, xi=0.6)
    lin = pdlt.linear_all_orders(net, X)
    mc = pdlt.sample(net, X, 40_000, seed=11, progress=False)
    z2 = (mc.two_point.mean - lin.mean) / mc.two_point.stderr
    z4 = (mc.four_point.mean[1:] - lin.cov[1:]) / mc.four_point.stderr[1:]
    assert np.abs(z2).max() < 5 and np.abs(z4).max() < 5, (np.abs(z2).max(), np.abs(z4).max())
    first = (mc.four_point.mean[-1] - pdlt.finite_width(net, X).connected_four_point(5)) / mc.four_point.stderr[-1]
    assert np.abs(first).max() > 5
    one = pdlt.linear_all_orders(net, X[:1])
    mc1 = pdlt.sample(net, X[:1], 100_000, seed=12, progress=False)
    second = pdlt.nnlo(net, X[0])
    ku, se = mc1.kurtosis.mean[:, 0], mc1.kurtosis.stderr[:, 0]
    for l in range(2, 6):
        assert abs(ku[l - 1] - one.kurtosis(l)[0]) < 5 * se[l - 1]
        assert abs(ku[l - 1] - second.kurtosis(l)) < 5 * se[l - 1]
    assert abs(ku[-1] - second.kurtosis(5, order=1)) > 5 * se[-1]
    k6, se6 = mc1.six_point_single.mean[:, 0], mc1.six_point_single.stderr[:, 0]
    assert np.all(np.isfinite(k6)) and mc1.undefined == {}
    assert np.all(np.abs(k6 - np.array([one.six_point_single(l)[0] for l in range(1, 6)])) < 5 * se6)
    assert abs(k6[-1]) > 5 * se6[-1]
    # an activation that is not odd keeps the six-point estimator masked (its one-neuron third moment need not vanish)
    relu = pdlt.sample(pdlt.MLP("relu", (2, 4, 4), C_W=1.0, gamma=0.7), X[:1], 200, seed=1, progress=False)
    assert relu.undefined == {"six_point_single": (2,), "normalized_six_point_single": (2,)}
    assert "not odd" in relu.undefined_reason("six_point_single")


@pytest.mark.parametrize("n", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_truncation_error_contains_the_exact_miss(n):
    """Three inputs with shortcuts: every entry of the O(1/n) four-point functions, and the kurtosis, miss the exact
    values by no more than their truncation error, which now carries the computed 1/n^2 term of every entry, at every
    layer where the series is controlled (c < 1; L = 2n)."""
    net = pdlt.MLP("linear", (2,) + (n,) * (2 * n), C_W=1.0, C_b=0.1, gamma=0.95, xi=0.3)
    lin, th = pdlt.linear_all_orders(net, X), pdlt.finite_width(net, X)
    checked = 0
    for l in range(2, net.L + 1):
        if next_order_factor(th, "four_point", l) >= 1:
            break
        for name in ("four_point", "four_point_single", "kurtosis"):
            assert next_order(th, name, l)[1].all()
            exact = getattr(lin, name)(l)
            miss = np.abs(exact - getattr(th, name)(l))
            assert np.all(miss <= truncation_error(th, name, l) * (1 + 1e-9) + 1e-12 * np.abs(exact).max()), (l, name)
        checked += 1
    assert checked >= 2 * n - 1


def test_series_and_exact_values_agree_at_large_width():
    """The exact four-point function minus its 1/n and 1/n^2 coefficients shrinks like 1/n^3 (n = 500, 1000)."""
    rest = []
    for n in (500, 1000):
        net = pdlt.MLP("linear", (2,) + (n,) * 6, C_W=1.0, C_b=0.1, gamma=0.8, xi=0.6)
        exact, second = pdlt.linear_all_orders(net, X[:1]), pdlt.nnlo(net, X[0])
        rest.append(exact.cov[-1, 0, 0, 0, 0] - second.metric_variance(6))
    assert rest[0] / rest[1] == pytest.approx(8.0, rel=0.02)


def test_dispatch_and_bad_input():
    net = pdlt.MLP("linear", (2, 6, 6, 6), gamma=0.5, xi=0.8)
    assert isinstance(pdlt.all_orders(net, X), pdlt.LinearAllOrders)
    assert isinstance(pdlt.all_orders(net, X[0]), pdlt.LinearAllOrders)
    five = np.random.default_rng(1).normal(size=(5, 2))
    assert pdlt.linear_all_orders(net, five).kappa3 is None       # the six-point function: d <= 4 (d^6 entries)
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.linear_all_orders(net, five).six_point_single(2)
    assert err.value.setting == "x"
    second = pdlt.nnlo(net, X[0])
    assert np.all(second.G1 == 0) and np.all(second.G2 == 0) and second.V1[-1] != 0
    several = pdlt.nnlo(net, X)
    assert isinstance(several, pdlt.NNLOInputs) and several.U.shape == (3,) + (3,) * 6
    np.testing.assert_allclose(several.V1[:, 0, 0, 0, 0], second.V1, rtol=1e-12)
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.nnlo(net, five)
    assert err.value.setting == "x"
    for act in ("tanh", "relu"):        # one input of a nonlinear residual network has pdlt.theory.residual_nnlo
        for fn, x in ((pdlt.nnlo, X), (pdlt.all_orders, X[0])):
            with pytest.raises(pdlt.ParameterError) as err:
                fn(pdlt.MLP(act, (2, 6, 6), gamma=0.5), x)
            assert err.value.setting == "gamma"
    with pytest.raises(pdlt.DivergentFlowError) as err:
        pdlt.linear_all_orders(pdlt.MLP("linear", (2,) + (4,) * 400, C_W=3.0, gamma=0.9), X[:1])
    assert 2 < err.value.layer < 400
    with pytest.raises(pdlt.DivergentFlowError):
        pdlt.nnlo(pdlt.MLP("linear", (2,) + (4,) * 400, C_W=3.0, gamma=0.9), X[0])


# ------------------------------------------------------------------ the NTK
def test_ntk_chain_is_exact_at_small_width():
    """Bias, gamma = 0.7, xi = 0.6, learning rates 0.7 and 1.3: every state of the NTK chain equals the Gaussian
    expectation of the network's own NTK polynomial, H_ik;ab = sum_v lambda_v dz_ia/dv dz_kb/dv: one input at n = 2
    (L = 2, 3) and n = 3 (L = 2), every entry of two inputs at n = 2, L = 2; and one neuron's E[H_ii;ab H_ii;cd] and
    E[H_ii;ab z_ic z_id] are the pairing sums the chain uses."""
    from pdlt.theory.linear_residual import first_kernel, ntk_chain
    from pdlt.theory.ntk import learning_rates

    kw = dict(C_W=1.1, C_b=0.2, gamma=0.7, xi=0.6)
    for x, n, L in (([[0.8]], 2, 2), ([[0.8]], 2, 3), ([[0.8]], 3, 2), (0.6 * X[:2], 2, 2)):
        x = np.asarray(x, dtype=float)
        d = len(x)
        z, var, rate = _network(x, n, L, **kw, lambda_b=0.7, lambda_W=1.3)
        H = [[[[_ntk_entry(z[i][a], z[k][b], rate) for b in range(d)] for a in range(d)] for k in range(2)]
             for i in range(2)]
        E = lambda *ps: _expect(functools.reduce(_mul, ps), var)      # noqa: E731
        want = {"m": [[E(z[0][a], z[0][b]) for b in range(d)] for a in range(d)],
                "h": [[E(H[0][0][a][b]) for b in range(d)] for a in range(d)]}
        idx = list(np.ndindex(d, d, d, d))
        want["B"] = [E(z[0][a], z[0][b], z[1][c], z[1][e]) for a, b, c, e in idx]
        want["hh_d"] = [E(H[0][0][a][b], H[1][1][c][e]) for a, b, c, e in idx]
        want["hh_o"] = [E(H[0][1][a][b], H[0][1][c][e]) for a, b, c, e in idx]
        want["hz_d"] = [E(H[0][0][a][b], z[1][c], z[1][e]) for a, b, c, e in idx]
        want["hz_o"] = [E(H[0][1][a][b], z[0][c], z[1][e]) for a, b, c, e in idx]
        net = pdlt.MLP("linear", (len(x[0]),) + (n,) * L, **kw)
        lb, lw = learning_rates(net, 0.7, 1.3)
        Theta1 = pdlt.ntk(net, x, 0.7, 1.3).Theta[0]
        got = {k: v[-1] for k, v in ntk_chain(net, first_kernel(net, net.inputs(x)), Theta1, lb, lw).items()}
        for k, v in want.items():
            np.testing.assert_allclose(got[k].reshape(-1), np.ravel(v), rtol=1e-12, atol=1e-14, err_msg=k)
        hh = got["hh_d"] + got["hh_o"] + got["hh_o"].transpose(0, 1, 3, 2)
        hz = got["hz_d"] + got["hz_o"] + got["hz_o"].transpose(0, 1, 3, 2)
        for a, b, c, e in idx:
            assert E(H[0][0][a][b], H[0][0][c][e]) == pytest.approx(hh[a, b, c, e], rel=1e-12)
            assert E(H[0][0][a][b], z[0][c], z[0][e]) == pytest.approx(hz[a, b, c, e], rel=1e-12, abs=1e-14)


# (the negative-gamma case under -m slow, suite time: the residual NTK theory of two inputs takes ~5 s)
@pytest.mark.parametrize("kw", [dict(C_W=1.2, C_b=0.1), dict(C_W=1.0, C_b=0.1, gamma=0.7, xi=0.6),
                                pytest.param(dict(C_W=0.9, C_b=0.2, gamma=-0.5, xi=1.1), marks=pytest.mark.slow)])
def test_ntk_first_order_is_pdlt_ntk(kw):
    """Plain and residual, two inputs: the exact mean NTK is Theta (Theta1 = 0) and the 1/n parts of every entry of
    the exact A, B, D, F are the O(1/n) statistics of pdlt.ntk (the dense recursions and, with shortcuts, the
    parameter-jet trajectory theory: different algorithms; 1e-13 of the largest entry); one input, n (exact - O(1/n))
    tends to the computed next order (n = 500, 1000: its own 1/n rest halves at layers 4 and 5)."""
    from pdlt.theory.linear_residual import _ntk_tensors, first_kernel, ntk_chain
    from pdlt.theory.ntk import learning_rates

    xs = 0.6 * X[:2]                   # (every kind of entry; the residual NTK theory's averages want kernels ~ 1)
    net = pdlt.MLP("linear", (2,) + (8,) * 4, **kw)
    th, ex = pdlt.ntk(net, xs, 0.7, 1.3), pdlt.linear_ntk_all_orders(net, xs, 0.7, 1.3)
    np.testing.assert_allclose(ex.Theta, th.Theta, rtol=1e-13)
    assert np.abs(th.Theta1).max() < 1e-12 * np.abs(th.Theta).max()
    lb, lw = learning_rates(net, 0.7, 1.3)
    series = _ntk_tensors(ntk_chain(net, first_kernel(net, th.x), th.Theta[0], lb, lw, series=True), series=True)
    for k in "ABDF":
        first = getattr(th, k)
        assert np.abs(series[k][:, 0]).max() < 1e-13 * np.abs(first).max()
        np.testing.assert_allclose(8 * series[k][1:, 1], first[1:], rtol=0, atol=1e-13 * np.abs(first).max())
        np.testing.assert_allclose(getattr(ex, k)[1], first[1], rtol=0, atol=1e-12 * np.abs(first).max())  # layer 2
    gaps = []
    for n in (500, 1000):
        net = pdlt.MLP("linear", (2,) + (n,) * 5, **kw)
        ex, th = pdlt.linear_ntk_all_orders(net, X[0], 0.7, 1.3), pdlt.ntk(net, X[:1], 0.7, 1.3)
        # (layer 3 is a polynomial of degree 2 in 1/n: no rest after the next order)
        gaps.append(np.concatenate([np.abs(n * (getattr(ex, k) - getattr(th, k)) - ex.next_order[k])[3:].ravel()
                                    for k in "ABDF"]))
    np.testing.assert_allclose(gaps[0] / gaps[1], 2.0, rtol=0.02)


def test_ntk_monte_carlo_beyond_the_first_order():
    """n = 4, L = 4, gamma = 0.8, xi = 0.6, bias: the exact A, B, D, F and Var(H_ii) agree with 2 x 10^4 sampled
    networks (their NTKs from the exact forward equation; |z| < 5 at every layer) where the O(1/n) NTK variance is
    rejected at the last layer; pdlt.compare decides those rows with the exact truncation error as allowance."""
    net = pdlt.MLP("linear", (2,) + (4,) * 4, C_W=1.0, C_b=0.1, gamma=0.8, xi=0.6)
    x = np.array([[1.0, 0.3]])
    ex, th = pdlt.linear_ntk_all_orders(net, x, 0.7, 1.3), pdlt.ntk(net, x, 0.7, 1.3)
    mc = pdlt.sample_ntk(net, x, 20_000, seed=5, lambda_b=0.7, lambda_W=1.3, progress=False)
    for name, want in (("A", ex.A), ("B", ex.B), ("D", ex.D), ("F", ex.F), ("ntk_variance", ex.variance)):
        est = mc.estimate(name)
        mean, se, want = est.mean.reshape(4, -1)[1:, 0], est.stderr.reshape(4, -1)[1:, 0], want.reshape(4, -1)[1:, 0]
        assert np.all(np.abs(mean - want) < 5 * se), (name, (mean - want) / se)
    est = mc.estimate("ntk_variance")
    assert abs(est.mean[-1, 0] - th.prediction("ntk_variance", 4)[0]) > 5 * est.stderr[-1, 0]
    # compare: with the exact values known the rows at layers >= 3 are decided, the allowance being the truncation
    # error itself; without it (allowance 0) the O(1/n) NTK variance fails
    quantities = ("ntk_mean", "A", "B", "D", "F", "ntk_variance", "ntk_relative_variance")
    c = pdlt.compare(th, mc, quantities=quantities)
    deep = [r for r in c.rows if r.layer >= 3]
    assert c.n_failed == 0 and deep and all(r.controlled for r in deep)
    assert all(r.verdict == "PASS" for r in deep if r.quantity in ("ntk_mean", "ntk_variance"))
    bare = pdlt.compare(th, mc, quantities=("ntk_variance",), allowance=0.0)
    assert any(r.verdict == "FAIL" for r in bare.rows if r.layer == 4)
    # the allowance comes from the exact chain, not from the theory under test: a wrong B is not absorbed
    wrong = pdlt.ntk(net, x, 0.7, 1.3)
    wrong.statistics.B[2:] *= 1.25
    assert any(r.verdict == "FAIL" for r in pdlt.compare(wrong, mc, quantities=("B",)).rows if r.layer == 3)


def test_ntk_bad_input():
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.linear_ntk_all_orders(pdlt.MLP("tanh", (2, 4, 4), gamma=0.5), [1.0, 0.0])
    assert err.value.setting == "activation"
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.linear_ntk_all_orders(pdlt.MLP("linear", (2, 4, 4)), X[:2, :1])
    assert err.value.setting == "x"
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.linear_ntk_all_orders(pdlt.MLP("linear", (2, 4, 4)), X[0], lambda_b=-1.0)
    assert err.value.setting == "lambda_b"
    with pytest.raises(pdlt.DivergentFlowError) as err:
        pdlt.linear_ntk_all_orders(pdlt.MLP("linear", (2,) + (4,) * 400, C_W=3.0, gamma=0.9), X[0])
    assert 2 < err.value.layer < 400


def test_second_order_truncation_error_and_more_bad_input(tmp_path):
    """nnlo's own truncation error with shortcuts is its distance to the exact chain (order 2) and contains it at
    order 1; all_orders checks M first; overflowing parameters give a named DivergentFlowError, never a raw
    OverflowError; a loaded Monte Carlo configuration's activation text is never evaluated."""
    net = pdlt.MLP("linear", (1,) + (8,) * 5, gamma=0.8, xi=0.6)
    second, exact = pdlt.nnlo(net, [1.0]), pdlt.all_orders(net, [1.0])
    truth = {"second_moment": exact.mean[3].item(), "metric_variance": exact.cov[3].item(),
             "kurtosis": exact.kurtosis(4)[0]}
    for q, v in truth.items():
        assert second.truncation_error(q, 4, order=2) == pytest.approx(abs(v - getattr(second, q)(4)), abs=1e-15)
        assert second.truncation_error(q, 4, order=1) >= abs(v - getattr(second, q)(4, order=1))
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.all_orders(net, [1.0], M=100)
    assert err.value.setting == "M"
    zero = pdlt.nnlo(pdlt.MLP("linear", (1,) + (8,) * 5, gamma=0.8, xi=0.6, C_b=0.0), [0.0])
    assert zero.truncation_error("second_moment", 4) == 0.0 and zero.truncation_error("metric_variance", 4) == 0.0
    # too wide for the exact chains' cancellation (8 digits): refused, naming the widths; the series still works
    wide = pdlt.MLP("linear", (1,) + (10**9,) * 4, gamma=0.8, xi=0.6)
    for fn in (pdlt.linear_all_orders, pdlt.linear_ntk_all_orders):
        with pytest.raises(pdlt.ParameterError) as err:
            fn(wide, [[1.0]])
        assert err.value.setting == "widths"
    assert np.isfinite(pdlt.nnlo(wide, [1.0]).V1).all()
    for kw in (dict(gamma=1e120), dict(C_W=1e110, gamma=0.5), dict(C_b=1e110, gamma=0.5), dict(xi=1e120, gamma=0.5)):
        for fn in (lambda m: pdlt.linear_all_orders(m, [[1.0, 0.5]]), lambda m: pdlt.nnlo(m, [1.0, 0.5])):
            with pytest.raises(pdlt.DivergentFlowError):
                fn(pdlt.MLP("linear", (2, 4, 4, 4), **kw))
    from pdlt.montecarlo.runner import _six_point_masked

    marker = tmp_path / "ran"
    evil = f"__import__('pathlib').Path({str(marker)!r}).touch() or Symbol('z', real=True)"
    assert _six_point_masked({"gamma": [0.5], "activation": "tanh", "activation_expr": evil})
    assert not marker.exists()
    import sympy as sp

    tanh = pdlt.activation("tanh")
    assert not _six_point_masked({"gamma": [0.5], "activation": "tanh", "activation_expr": sp.srepr(tanh.expr)})
    assert _six_point_masked({"gamma": [0.5], "activation": "relu",
                              "activation_expr": sp.srepr(pdlt.activation("relu").expr)})

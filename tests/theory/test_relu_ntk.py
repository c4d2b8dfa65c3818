"""The exact NTK of one input through bias-free ReLU networks (pdlt.theory.relu_ntk) against independent oracles:

* Monte Carlo of its own scalar representation (binomial counts of active neurons, chi-squares) for the moment sums;
* the O(1/n) NTK statistics (pdlt.ntk; dense recursions over Gaussian averages) for its 1/n term;
* explicit networks in numpy and sampled ones (pdlt.sample_ntk), where the O(1/n) variance is rejected;
* the large-depth rate of Hanin and Nica: E[H^2]/E[H]^2 grows like exp(5 L/n).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.errors import DivergentFlowError, ParameterError
from pdlt.theory.ntk_statistics import ntk_statistics
from pdlt.theory.relu_ntk import relu_ntk_all_orders

WIDTHS = (3, 6, 2, 5, 3, 1)                 # a width-2 layer: a dead layer (no active neuron) has probability 1/4
C_W = (1.5, 2.0, 2.5, 1.8, 2.2)
LB, LW = (0.7, 0.0, 1.2, 0.3, 0.5), (1.3, 0.8, 1.0, 2.0, 0.4)
X = np.array([[1.0, -0.5, 0.3], [0.2, 0.9, -0.4]])


def _scalar_chain(rng, M, x, top, a=1.0):
    """``H_ii`` of layer ``top`` for M networks from the scalar representation of the module docstring, sampled
    directly (dead networks: ``lambda_b^(top)``)."""
    n = WIDTHS
    F = [np.full(M, x @ x)]
    alive = np.ones(M, dtype=bool)
    X_, Y_ = {}, {}
    for k in range(1, top):
        N = rng.binomial(n[k], 0.5, size=M)
        alive &= N > 0
        Nc = np.maximum(N, 1)
        X_[k] = rng.chisquare(Nc)
        Y_[k] = np.where(Nc > 1, rng.chisquare(np.maximum(Nc - 1, 1)), 0.0)
        F.append(F[-1] * C_W[k - 1] * a * a / n[k - 1] * X_[k])
    Z2 = C_W[top - 1] * F[top - 1] / n[top - 1] * rng.chisquare(1, size=M)
    B = np.ones(M)
    H = B * (LB[top - 1] + LW[top - 1] * F[top - 1] / n[top - 1])
    for l in range(top - 1, 0, -1):
        with np.errstate(divide="ignore", invalid="ignore"):
            B = a * a * (Z2 / F[l] + C_W[l] / n[l] * Y_[l] * B)
        H = H + B * (LB[l - 1] + LW[l - 1] * F[l - 1] / n[l - 1])
    return np.where(alive, H, LB[top - 1])


def test_moments_against_the_scalar_chain():
    """E[H] and Var(H) of every layer against 10^6 draws of the scalar chain (non-uniform widths with a width-2
    layer, per-layer C_W and learning rates): |z| < 5 with batch-means errors."""
    ex = relu_ntk_all_orders(pdlt.MLP("relu", WIDTHS, C_W=C_W), X, LB, LW)
    rng = np.random.default_rng(3)
    for a, x in enumerate(X):
        for top in range(2, len(WIDTHS)):
            H = _scalar_chain(rng, 1_000_000, x, top).reshape(200, -1)
            m, v = H.mean(axis=1), H.var(axis=1)
            z_mean = (ex.Theta[top - 1, a] - m.mean()) / (m.std(ddof=1) / np.sqrt(200))
            z_var = (ex.variance[top - 1, a] - v.mean()) / (v.std(ddof=1) / np.sqrt(200))
            assert abs(z_mean) < 5 and abs(z_var) < 5, (a, top, z_mean, z_var)
    assert np.all(ex.variance[0] == 0) and np.allclose(ex.Theta[0], LB[0] + LW[0] * (X * X).sum(1) / 3, rtol=1e-15)


def test_explicit_networks():
    """The reduction itself, against explicit networks in numpy (4 x 10^5 per layer, the NTK of neurons 0 and 1 of
    each layer l as the outputs, from each network's backward pass): slope a = 1.5, unequal widths with a width-2
    layer (dead layers matter), per-layer C_W and learning rates with zeros. Mean and variance of H_ii, and over the
    two outputs A = n Cov(H_00, H_11), B = n E[H_01^2], D = n Cov(H_00, z_1^2), F = n E[H_01 z_0 z_1], within 5
    batch-means errors (200 batches; each batch's covariance is biased by 1/2000 of itself, far below its error);
    at layer 4 the O(1/n) A, B, D, F are rejected."""
    a, widths, C = 1.5, (3, 4, 2, 5, 3), np.array([1.5, 2.0, 2.5, 1.8]) / 1.5**2
    lb, lw = (0.7, 0.0, 1.2, 0.0), (0.0, 0.8, 1.0, 2.0)
    z = sp.Symbol("z", real=True)
    act = pdlt.Activation.from_sympy(1.5 * sp.Max(z, 0), name="relu15")
    assert act.slopes == (1.5, 0.0)
    ex = relu_ntk_all_orders(pdlt.MLP(act, widths, C_W=C), X[:1], lb, lw)
    rng, M, x = np.random.default_rng(11), 400_000, X[0]
    Ws = [rng.normal(size=(M, widths[l + 1], widths[l])) * np.sqrt(C[l] / widths[l]) for l in range(4)]
    h, zs, hs = np.broadcast_to(x, (M, 3)), [], [np.broadcast_to(x, (M, 3))]
    for l in range(4):
        z = np.einsum("mij,mj->mi", Ws[l], h)
        h = a * np.maximum(z, 0.0)
        zs.append(z)
        hs.append(h)

    def batches(v):
        return v.reshape(200, -1).mean(1)

    for top in range(2, 5):                                    # layer top's neurons 0 and 1 as the outputs
        g, H = np.zeros((M, 2, widths[top])), np.zeros((M, 2, 2))
        g[:, 0, 0] = g[:, 1, 1] = 1.0
        for l in range(top - 1, -1, -1):                       # weights of layer l + 1
            H += np.einsum("mai,mbi->mab", g, g) * (lb[l] + lw[l] * (hs[l] * hs[l]).sum(1) / widths[l])[:, None, None]
            if l:
                g = np.einsum("mij,mai->maj", Ws[l], g) * a * (zs[l - 1] > 0)[:, None, :]
        b = H[:, 0, 0].reshape(200, -1)
        m, v = b.mean(1), b.var(1)
        z_m = (m.mean() - ex.Theta[top - 1, 0]) / (m.std(ddof=1) / np.sqrt(200))
        z_v = (v.mean() - ex.variance[top - 1, 0]) / (v.std(ddof=1) / np.sqrt(200))
        assert abs(z_m) < 5 and abs(z_v) < 5, (top, z_m, z_v)
        n, zt = widths[top - 1], zs[top - 1]
        measured = {"A": batches(H[:, 0, 0] * H[:, 1, 1]) - m * batches(H[:, 1, 1]),
                    "B": batches(H[:, 0, 1] ** 2),
                    "D": batches(H[:, 0, 0] * zt[:, 1] ** 2) - m * batches(zt[:, 1] ** 2),
                    "F": batches(H[:, 0, 1] * zt[:, 0] * zt[:, 1])}
        for q, est in measured.items():
            se = n * est.std(ddof=1) / np.sqrt(200)
            assert abs(n * est.mean() - getattr(ex, q)[top - 1, 0]) < 5 * se, (top, q)
            if top == 4:
                assert abs(n * est.mean() - ex.first_order[q][top - 1, 0]) > 5 * se, (top, q)


def test_first_order_is_the_ntk_statistics():
    """The chain's expansion in the inverse widths: its constant term is the infinite-width NTK of pdlt.ntk, its 1/n
    term of the mean vanishes (Theta1 = 0 for this class; so does its 1/n^2 term), and the 1/n term of the variance
    is (A + 2B)_(aa)(aa)/n of the NTK statistics (pdlt.ntk; Gaussian averages of the dense recursions: a different
    algorithm), to 1e-12."""
    net = pdlt.MLP("relu", (3, 6, 9, 5, 7, 1), C_W=C_W)
    ex = relu_ntk_all_orders(net, X, LB, LW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.TruncationWarning)
        st = ntk_statistics(net, X, LB, LW)
    for l in range(1, net.L + 1):
        n = net.widths[l - 1]
        for a in range(2):
            scale = st.Theta[l - 1, a, a]
            assert abs(ex.series["Theta"][l - 1, a, 0] - scale) < 1e-13 * scale
            assert abs(ex.series["Theta"][l - 1, a, 1]) < 1e-13 * scale and abs(st.Theta1[l - 1, a, a]) < 1e-12 * scale
            want = (st.A[l - 1, a, a, a, a] + 2 * st.B[l - 1, a, a, a, a]) / n
            assert abs(ex.series["variance"][l - 1, a, 1] - want) <= 1e-12 * scale**2
    # the mean has no 1/n^2 term either (only dead layers, probability 2^-n, move it off the infinite-width NTK);
    # the variance's is there from layer 3 on
    assert np.all(np.abs(ex.series["Theta"][..., 2]) < 1e-13 * ex.series["Theta"][..., 0])
    assert np.all(np.abs(ex.series["variance"][2:, :, 2]) > 1e-3 * ex.series["variance"][2:, :, 1])
    # two outputs: the O(1) terms of A, B, D, F (n times the covariances) are the statistics' entries aaaa (B and F
    # come from the Wishart factor's mixing of the index pairs, which one output never sees); their next terms vanish
    # at layers 1-2 and are there from layer 3 on
    for q in "ABDF":
        for l in range(1, net.L + 1):
            for a in range(2):
                want = getattr(st, q)[l - 1, a, a, a, a]
                scale = st.Theta[l - 1, a, a] ** (2 if q in "AB" else 1) * (1 if q in "AB" else st.K[l - 1, a, a])
                assert abs(ex.first_order[q][l - 1, a] - want) <= 1e-12 * scale, (q, l, a)
        assert np.all(ex.series[q][:2, :, 2] == 0) and np.all(np.abs(ex.series[q][2:, :, 2]) > 1e-3), q


def test_large_depth_rate_of_hanin_and_nica():
    """Weights only (lambda_b = 0), C_W = 2, width 200: log(E[H^2]/E[H]^2)/(L/n) increases toward 5 (Hanin and Nica:
    the NTK's second moment grows like exp(5 L/n) times a prefactor that falls like a power of L/n, which is why the
    rate climbs slowly)."""
    rates = []
    for beta in (0.5, 1.0, 2.0, 4.0):
        ex = relu_ntk_all_orders(pdlt.MLP("relu", (1,) + (200,) * int(200 * beta) + (1,), C_W=2.0), [[1.0]], 0.0, 1.0)
        ratio = 1.0 + ex.variance[-1, 0] / ex.Theta[-1, 0] ** 2
        rates.append(np.log(ratio) / beta)
    assert np.all(np.diff(rates) > 0) and 4.0 < rates[0] and rates[-1] < 5.0, rates


def test_sampled_networks_beyond_the_first_order():
    """n = 6, L = 5, one input, 3 x 10^4 explicitly sampled ReLU networks (pdlt.sample_ntk, Jacobians of the
    networks): the exact mean and variance of H_ii agree (|z| < 5) at every layer, where the O(1/n) variance is
    rejected at the last layer; pdlt.compare decides those rows with the exact truncation error as allowance, and
    without it (allowance 0) the O(1/n) variance fails. The same for A, B, D, F (their estimators over distinct
    neurons of each network)."""
    net = pdlt.MLP("relu", (2,) + (6,) * 5, C_W=2.0)
    x = np.array([[1.0, 0.3]])
    ex = relu_ntk_all_orders(net, x, 0.7, 1.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.TruncationWarning)
        th = pdlt.ntk(net, x, 0.7, 1.3)
        mc = pdlt.sample_ntk(net, x, 30_000, seed=2, lambda_b=0.7, lambda_W=1.3, progress=False)
    mean, var = mc.estimate("ntk_mean"), mc.estimate("ntk_variance")
    for l in range(2, net.L + 1):
        assert abs(mean.mean[l - 1, 0, 0] - ex.Theta[l - 1, 0]) < 5 * mean.stderr[l - 1, 0, 0], l
        assert abs(var.mean[l - 1, 0] - ex.variance[l - 1, 0]) < 5 * var.stderr[l - 1, 0], l
    assert abs(var.mean[-1, 0] - th.prediction("ntk_variance", net.L)[0]) > 5 * var.stderr[-1, 0]
    quantities = ("ntk_mean", "ntk_variance", "ntk_relative_variance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        c = pdlt.compare(th, mc, quantities=quantities)
        bare = pdlt.compare(th, mc, quantities=("ntk_variance",), allowance=0.0)
    deep = [r for r in c.rows if r.layer >= 3]
    assert c.n_failed == 0 and deep and all(r.controlled for r in deep)
    assert any(r.verdict == "FAIL" for r in bare.rows if r.layer == net.L)
    # the two-output statistics (one input: the entries aaaa): exact at every layer, O(1/n) rejected from layer 3 on
    # (6 to 22 errors); compare decides them with the exact truncation error (at layer 5 it exceeds the O(1/n) part,
    # and those rows are NOT RESOLVED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        c = pdlt.compare(th, mc, quantities=("A", "B", "D", "F"))
        bare = pdlt.compare(th, mc, quantities=("A", "B", "D", "F"), allowance=0.0)
    for q in "ABDF":
        est = mc.estimate(q)
        for l in range(2, net.L + 1):
            m, se = est.mean[l - 1, 0, 0, 0, 0], est.stderr[l - 1, 0, 0, 0, 0]
            assert abs(m - getattr(ex, q)[l - 1, 0]) < 5 * se, (q, l)
            assert l == 2 or abs(m - ex.first_order[q][l - 1, 0]) > 5 * se, (q, l)
    assert c.n_failed == 0 and all(r.controlled for r in c.rows if 3 <= r.layer <= 4)
    assert {r.quantity for r in bare.rows if r.verdict == "FAIL" and r.layer >= 3} == {"A", "B", "D", "F"}


def test_bad_input():
    """Other activations, biases, residual steps, a zero input, C_W = 0 below the last layer, no network, bad
    learning rates: ParameterError naming the setting; a depth whose moments overflow: DivergentFlowError naming the
    layer, with no RuntimeWarning on the way."""
    for net, setting in ((pdlt.MLP("tanh", (2, 4, 4)), "activation"), (pdlt.MLP("leaky_relu", (2, 4, 4)), "activation"),
                         (pdlt.MLP("relu", (2, 4, 4), C_b=0.1), "C_b"),
                         (pdlt.MLP("relu", (2, 4, 4), gamma=0.5), "gamma")):
        with pytest.raises(ParameterError) as e:
            relu_ntk_all_orders(net, [[1.0, 0.0]])
        assert e.value.setting == setting
    for net, x, setting in ((pdlt.MLP("relu", (2, 4, 4)), [[0.0, 0.0]], "x"),
                            (pdlt.MLP("relu", (2, 4, 4, 4), C_W=(2.0, 0.0, 2.0)), [[1.0, 0.0]], "C_W"),
                            (None, [[1.0, 0.0]], "net")):
        with pytest.raises(ParameterError) as e:
            relu_ntk_all_orders(net, x)
        assert e.value.setting == setting
    with pytest.raises(ParameterError) as e:
        relu_ntk_all_orders(pdlt.MLP("relu", (2, 4, 4)), [[1.0, 0.0]], lambda_b=-1.0)
    assert e.value.setting == "lambda_b"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DivergentFlowError) as e:
            relu_ntk_all_orders(pdlt.MLP("relu", (2,) + (4,) * 2000, C_W=3.0), [[1.0, 0.0]])
    assert e.value.layer is not None


def test_truncation_error_of_the_ntk_prediction():
    """NTK.truncation_error: |exact - O(1/n)| from the chain where it is known (here computed by hand from the exact
    values and the O(1/n) theory), 0 at layers 1-2, and a ParameterError naming the setting where it is not derived
    (the off-diagonal NTK mean and A of two ReLU inputs at n = 8, where the series is not controlled; the dNTK of
    ReLU, and the ddNTK of tanh, whose dNTK is known from the copies of pdlt.ntk_nnlo)."""
    net = pdlt.MLP("relu", (3,) + (8,) * 5, C_W=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.TruncationWarning)
        th, th2 = pdlt.ntk(net, X[:1], 0.7, 1.3), pdlt.ntk(net, X, 0.7, 1.3)
        ex = relu_ntk_all_orders(net, X, 0.7, 1.3)
        for l in range(3, 6):
            want = abs(ex.variance[l - 1, 0] / ex.Theta[l - 1, 0] ** 2 - th.prediction("ntk_relative_variance", l)[0])
            got = th.truncation_error("ntk_relative_variance", l)[0]
            assert abs(got - want) < 1e-12 * want
            np.testing.assert_allclose(th2.truncation_error("ntk_variance", l),
                                       np.abs(ex.variance[l - 1] - th2.prediction("ntk_variance", l)), rtol=1e-10)
            dead = abs(ex.Theta[l - 1, 0] - th.Theta[l - 1, 0, 0])           # (the mean moves by dead layers only)
            assert abs(th.truncation_error("ntk_mean", l)[0, 0] - dead) < 1e-14
            for q in "ABDF":                 # one input: the entry aaaa, from the exact values and the O(1/n) theory
                want = abs(getattr(ex, q)[l - 1, 0] - th.prediction(q, l)[0, 0, 0, 0])
                assert abs(th.truncation_error(q, l)[0, 0, 0, 0] - want) < 1e-10 * want, (q, l)
        assert np.all(th2.truncation_error("ntk_mean", 2) == 0)
        for theory, name in ((th2, "ntk_mean"), (th2, "A"), (th, "P"),
                             (pdlt.ntk(pdlt.MLP("tanh", (3,) + (8,) * 4), X), "R")):
            with pytest.raises(ParameterError, match="width sweep") as e:
                theory.truncation_error(name, 4)
            assert e.value.setting == "quantity"


def test_the_top_bias_term_is_a_constant_and_leaves_the_fluctuations_alone():
    """lambda_b^(L) multiplies |g^(L)|^2 = 1: it shifts the NTK of layer L by a constant, so the variance and the
    covariances A, B, D, F (and their series) cannot depend on it. With it dominating the mean (C_W = 1e-8), the
    variance taken as E[H^2] - E[H]^2 came out eps E[H]^2, 114 times its value (1e-10: 0)."""
    net = pdlt.MLP("relu", (2, 16, 16, 16), C_W=1e-8)
    base = relu_ntk_all_orders(net, [[1.0, 0.3]], lambda_b=(1.0, 1.0, 0.0))
    shifted = relu_ntk_all_orders(net, [[1.0, 0.3]], lambda_b=(1.0, 1.0, 1e3))
    assert shifted.Theta[-1, 0] == pytest.approx(base.Theta[-1, 0] + 1e3, rel=1e-15)
    assert base.variance[-1, 0] > 0
    for k in ("variance", "A", "B", "D", "F"):
        np.testing.assert_allclose(getattr(shifted, k), getattr(base, k), rtol=1e-12, atol=0)
        np.testing.assert_allclose(shifted.series[k], base.series[k], rtol=1e-12, atol=1e-300)

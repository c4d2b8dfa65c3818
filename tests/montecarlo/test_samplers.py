"""Monte Carlo engine: exactness of the samplers and honesty of the estimators.

Statistical tests use fixed seeds and tolerances in standard errors: |z| < 5 per comparison. A
comparison's false-alarm rate at |z| = 5 is 6e-7 (Gaussian); the largest test below makes ~2000
comparisons (many of them redundant by symmetry), a Bonferroni budget below 2e-3 for the whole file even
if the seeds were redrawn. Exact values come from closed forms derived in the docstrings, never from
the 1/n perturbation theory (whose O(1/n^2) error is resolvable at these small widths).
"""

import itertools

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.montecarlo import estimators as E
from pdlt.montecarlo import jax_activation, psd_sqrt, sample, sample_layers

ZMAX = 5.0


def assert_z(est, exact, zmax=ZMAX, what=""):
    """All |(mean - exact) / stderr| < zmax (entries with exact == mean == 0 and stderr 0 are skipped)."""
    exact = np.broadcast_to(np.asarray(exact, dtype=float), est.mean.shape)
    diff = est.mean - exact
    se = est.stderr
    trivial = (np.abs(diff) <= 1e-12 * (1 + np.abs(exact))) & (se <= 1e-12 * (1 + np.abs(exact)))
    z = np.where(trivial, 0.0, diff / np.where(trivial, 1.0, se))
    assert np.all(np.isfinite(z)), f"{what}: non-finite z-scores"
    worst = np.unravel_index(np.argmax(np.abs(z)), z.shape)
    assert np.max(np.abs(z)) < zmax, (f"{what}: |z| = {abs(z[worst]):.2f} at {worst}: mc {est.mean[worst]:.6g} "
                                      f"+- {se[worst]:.3g} vs exact {exact[worst]:.6g}")


def markov_reference(net, x, n_samples, seed, batches):
    """The markov runner's statistics rebuilt from ``sample_layers`` (the same networks): layer 1 measured on its
    rows, every later (dense) layer on the metric ``G^ = C_b + C_W sigma(z)^T sigma(z)/n`` of the layer below,
    through ``metric_stats``; the metric is formed here in NumPy from the activation's NumPy form."""
    import jax.numpy as jnp

    zs = sample_layers(net, x, n_samples, seed=seed)
    act = pdlt.activation(net.activation)
    st = [np.asarray(E.layer_stats(jnp.asarray(np.swapaxes(zs[0], 1, 2))))]
    for l in range(2, len(net.widths)):
        C_W, C_b = net.hyper(l)
        s = act(zs[l - 2])                                        # (N, n_{l-1}, d)
        G = C_b + C_W * np.swapaxes(s, 1, 2) @ s / s.shape[1]
        st.append(np.asarray(E.metric_stats(jnp.asarray(G), net.widths[l])))
    return E.estimate_from_stats(np.stack(st, axis=1), net.widths[1:], zs[0].shape[2], batches)


def test_metric_stats_is_the_conditional_expectation():
    """metric_stats(G, n) against the plain statistics of 2^17 independent draws of n rows ~ N(0, G) (d = 3, a
    generic G with unequal variances and correlations of both signs), every entry within 5 standard errors; and
    the conditional all-pairs estimator (n tt - m4)/(n - 1) is G_ab G_cd exactly."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(11)
    A = rng.normal(size=(3, 3))
    G = A @ A.T + 0.3 * np.eye(3)
    n, N = 5, 2**17
    R = np.linalg.cholesky(G)
    z = jnp.einsum("ab,...bn->...an", jnp.asarray(R), jax.random.normal(jax.random.key(2), (N, 3, n)))
    st = np.asarray(E.layer_stats(z))
    exact = np.asarray(E.metric_stats(jnp.asarray(G), n))
    mean, se = st.mean(0), st.std(0, ddof=1) / np.sqrt(N)
    zs = (mean - exact) / se
    assert np.max(np.abs(zs)) < ZMAX, np.max(np.abs(zs))
    pairs, quads, pidx, qidx = E.stat_layout(3)
    P = len(pairs)
    tt = exact[P:P + P * P].reshape(P, P)[pidx[:, :, None, None], pidx[None, None]]
    m4 = exact[P + P * P:P + P * P + len(quads)][qidx]
    np.testing.assert_allclose((n * tt - m4) / (n - 1), np.einsum("ab,cd->abcd", G, G), rtol=1e-13, atol=1e-13)


def two_sample_z(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (a.mean - b.mean) / np.sqrt(a.stderr**2 + b.stderr**2)
    return np.where(np.isfinite(z), z, 0.0)


# ---------------------------------------------------------------------------------------------------
# JAX activations
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(pdlt.available_activations()) + ["leaky_relu(0.1)", "user_relu", "user_expr",
                                                                       "user_piecewise"])
def test_jax_activation_matches_numpy(name):
    x = sp.Symbol("x", real=True)
    act = {
        "user_relu": pdlt.Activation.from_sympy(sp.Max(0, x), name="user_relu"),
        "user_expr": pdlt.Activation.from_sympy(x * sp.erf(x) + sp.tanh(x) / 2, name="user_expr"),
        "user_piecewise": pdlt.Activation.from_sympy(sp.Piecewise((-1, x < -1), (x, x < 1), (1, True)), name="hardtanh"),
    }.get(name, name)
    act = pdlt.activation(act)
    f = jax_activation(act)
    z = np.concatenate([np.linspace(-30, 30, 601), np.array([-1e-8, 0.0, 1e-8, -700.0, 700.0])])
    got, want = np.asarray(f(z)), act(z)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------
# PSD square root
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_psd_sqrt_exact_for_singular(d, rng):
    mats = []
    for rank in range(0, d + 1):
        A = rng.normal(size=(d, rank))
        mats.append(A @ A.T)
    x = rng.normal(size=(1, d))
    mats.append(np.repeat(x, d, 0) @ np.repeat(x, d, 0).T)      # repeated inputs: rank 1
    G = np.stack(mats)
    R = np.asarray(psd_sqrt(G))
    np.testing.assert_allclose(R, np.swapaxes(R, -1, -2), atol=1e-14)
    scale = np.abs(G).max(axis=(-1, -2), keepdims=True) + 1e-300
    assert np.all(np.abs(R @ R - G) <= 1e-12 * scale + 1e-300)
    assert np.all(np.linalg.eigvalsh(R) > -1e-7 * np.sqrt(scale[:, :, 0]))


# ---------------------------------------------------------------------------------------------------
# estimators on synthetic data with known cumulants
# ---------------------------------------------------------------------------------------------------


def _synthetic(rng, R, N, n, K0, k, theta):
    """R replicate datasets of N 'networks': z_i = sqrt(g) L xi_i (i = 1..n neurons), g ~ Gamma(k, theta) per
    network, K0 = L L^T. Given g the rows are iid N(0, g K0) - a conditional Gaussian like a real layer."""
    Lc = np.linalg.cholesky(K0)
    g = rng.gamma(k, theta, size=(R, N, 1, 1))
    xi = rng.normal(size=(R, N, n, K0.shape[0]))
    return np.sqrt(g) * (xi @ Lc.T)


def _synthetic_exact(K0, k, theta):
    """Exact cumulants of the synthetic data: with G = g K0, E[z_ia z_ib] = E g K0 = k theta K0;
    i != j: E[z_ia z_ib z_jc z_jd] - G G = Var(g) K0_ab K0_cd = k theta^2 K0_ab K0_cd; one neuron: the
    three pairings of that; sixth cumulant of z_a: 15 kappa3(g K0_aa) = 15 (2 k theta^3) K0_aa^3."""
    KK = K0[:, :, None, None] * K0[None, None, :, :]
    var = k * theta**2
    return {
        "two_point": k * theta * K0,
        "four_point": var * KK,
        "four_point_single": var * (KK + np.einsum("acbd->abcd", KK) + np.einsum("adbc->abcd", KK)),
        "six_point_single": 15 * 2 * k * theta**3 * np.diag(K0) ** 3,
    }


def test_estimators_unbiased_on_synthetic_data(rng):
    """Average the jackknife estimates over R replicate small datasets (N = 64 networks, 8 batches, n = 3
    neurons): each four-point estimate is exactly unbiased (quadratic in means, equal batches), the six-point
    one up to O(1/N^2). The replicate mean must match the exact cumulants within 5 of its standard errors,
    while the plug-in (no jackknife correction) four-point function is visibly biased (a power check)."""
    import jax.numpy as jnp

    K0 = np.array([[1.0, 0.4], [0.4, 0.7]])
    k, theta, R, N, n, B = 3.0, 0.5, 600, 64, 3, 8
    z = _synthetic(rng, R, N, n, K0, k, theta)
    st = np.asarray(E.layer_stats(jnp.asarray(np.swapaxes(z, -1, -2).reshape(R * N, 2, n)))).reshape(R, N, 1, -1)
    exact = _synthetic_exact(K0, k, theta)
    b = np.arange(N) % B
    ests = {name: [] for name in exact}
    plug = []
    for r in range(R):
        sums = np.zeros((B, 1, st.shape[-1]))
        np.add.at(sums, b, st[r])
        state = E.BatchSums.zeros(B, (n,), 2).add(np.bincount(b, minlength=B), sums)
        s = E.statistics(state)
        for name in exact:
            ests[name].append(getattr(s, name).mean[0])
        plug.append(E.observables(sums.sum(0)[None] / N, 2, (n,))["four_point"][0, 0])
    for name, ex in exact.items():
        a = np.array(ests[name])
        rep = E.Estimate(a.mean(0), a.std(0, ddof=1) / np.sqrt(R))
        assert_z(rep, ex, what=f"synthetic {name}")
    # plug-in bias -Cov(t2_ab, t2_cd)/N is negative for (00)(00): the replicate mean is far below the truth
    p = np.array(plug)[:, 0, 0, 0]
    zp = (p.mean() - exact["four_point"][0, 0, 0, 0]) / (p.std(ddof=1) / np.sqrt(R))
    assert zp < -5, zp


def test_jackknife_linear_and_equal_batches(rng):
    """Linear observable: the jackknife mean is the plain mean even for unequal batches; with equal batches
    the error is the textbook batch-means error."""
    B = 7
    counts = rng.integers(3, 6, size=B)
    sums = rng.normal(size=(B, 3)) * counts[:, None]
    est = E.jackknife(lambda m: m, counts, sums, linear=True)
    np.testing.assert_allclose(est.mean, sums.sum(0) / counts.sum(), rtol=1e-14)
    eq = np.full(B, 5)
    est = E.jackknife(lambda m: m, eq, sums)
    means = sums / 5
    np.testing.assert_allclose(est.mean, means.mean(0), rtol=1e-13)
    np.testing.assert_allclose(est.stderr, means.std(0, ddof=1) / np.sqrt(B), rtol=1e-12)


def test_jackknife_error_of_tiny_values(rng):
    """The error of values below 1e-154 (whose squares underflow) is the scaled error, not 0: the jackknife of a
    quadratic observable on sums scaled by 2^-300 (exact) is the unscaled one times 2^-600 (whose square would be
    2^-1200)."""
    counts = np.full(8, 4)
    sums = rng.normal(size=(8, 3)) * 4
    f = lambda m: m * m[..., :1]                                            # noqa: E731
    ref = E.jackknife(f, counts, sums)
    tiny = E.jackknife(f, counts, np.ldexp(sums, -300))
    np.testing.assert_allclose(tiny.stderr, np.ldexp(ref.stderr, -600), rtol=1e-13)
    assert np.all(tiny.stderr > 0)


def test_no_error_from_too_few_networks():
    """A covariance across networks needs two of them in every delete-one-batch subsample, a third cumulant three:
    with one network a batch out of two, every theta_(-b) was the covariance of a single network (0), the error
    came out ~1e-17 and compare reported z = -inf. Such errors are NaN (not estimable), and compare leaves those
    rows out with a caveat; the two-point function (a plain mean) keeps its error."""
    net, x = pdlt.MLP("tanh", (2, 8, 8)), [[1.0, 0.0], [0.0, 1.0]]
    few = sample(net, x, 2, batches=2)
    assert np.all(np.isnan(few.vertex.stderr[1])) and np.all(np.isfinite(few.two_point.stderr[1]))
    assert np.all(np.isnan(sample(net, x, 3, batches=3).six_point_single.stderr[1]))
    enough = sample(net, x, 6, batches=3)
    assert np.all(enough.vertex.stderr[1] > 0) and np.all(enough.six_point_single.stderr[1] > 0)
    cmp = pdlt.compare(pdlt.finite_width(net, x), few, quantities=("two_point", "four_point"))
    assert cmp.rows and all(r.quantity == "two_point" for r in cmp.rows)
    assert any(c.kind == "undefined" for c in cmp.caveats)


def test_estimate_from_samples_shapes(rng):
    z1 = rng.normal(size=(40, 3, 2))
    z2 = rng.normal(size=(40, 1, 2))
    s = E.estimate_from_samples([z1, z2], batches=4)
    assert s.two_point.mean.shape == (2, 2, 2)
    assert s.four_point.mean.shape == (2, 2, 2, 2, 2)
    assert s.six_point_single.stderr.shape == (2, 2)
    assert np.all(np.isnan(s.four_point.mean[1]))              # width 1: no pair of distinct neurons
    assert np.all(np.isfinite(s.four_point_single.mean[1]))
    with pytest.raises(ValueError, match="common N and d"):
        E.estimate_from_samples([z1, rng.normal(size=(40, 3, 3))])


# ---------------------------------------------------------------------------------------------------
# exact finite-width results at small widths
# ---------------------------------------------------------------------------------------------------


def deep_linear_exact(net, x):
    r"""Exact moments of a deep linear network (sigma(z) = z) with biases, any widths and inputs.

    Given layer l, the metric of layer l+1 is ``G' = C_b J + (C_W/n_l) S`` with ``S = sum_j z_j z_j^T`` a Wishart
    matrix: the rows ``z_j`` are iid ``N(0, G)``. Wick's theorem gives
    ``E[S_ab S_cd | G] = n^2 G_ab G_cd + n (G_ac G_bd + G_ad G_bc)``, hence for ``M1 = E G`` and
    ``M2_abcd = E[G_ab G_cd]``:

        M1' = C_b + C_W M1   (= K exactly),
        M2'_abcd = C_b^2 + C_b C_W (M1_ab + M1_cd) + C_W^2 [M2_abcd + (M2_acbd + M2_adbc)/n_l],

    from ``M2^(1) = K1 K1`` (layer 1 is deterministic in G). Since rows are conditionally Gaussian,
    ``E[z_ia z_ib z_jc z_jd] = M2_abcd`` (i != j) and ``E[z_a z_b z_c z_d] = M2_abcd + M2_acbd + M2_adbc``. For
    one input, with ``chi^2_n`` moments ``n, n(n+2), n(n+2)(n+4)``, the third moment ``m3 = E[G_aa^3]`` follows
    ``m3' = C_b^3 + 3 C_b^2 C_W m1 + 3 C_b C_W^2 (1 + 2/n) m2 + C_W^3 (1 + 2/n)(1 + 4/n) m3`` and the sixth
    cumulant is ``15 m3 - 45 m2 m1 + 30 m1^3``.
    """
    x = net.inputs(x)
    C_W, C_b = net.hyper(1)
    M1 = C_b + C_W * x @ x.T / net.n0
    M2 = M1[:, :, None, None] * M1[None, None]
    m1, m2, m3 = np.diag(M1).copy(), np.diag(M1) ** 2, np.diag(M1) ** 3
    out = {k: [] for k in ("two_point", "four_point", "four_point_single", "six_point_single")}

    def record():
        KK = M1[:, :, None, None] * M1[None, None]
        sym = lambda T: T + np.einsum("acbd->abcd", T) + np.einsum("adbc->abcd", T)  # noqa: E731
        out["two_point"].append(M1.copy())
        out["four_point"].append(M2 - KK)
        out["four_point_single"].append(sym(M2) - sym(KK))
        out["six_point_single"].append(15 * m3 - 45 * m2 * m1 + 30 * m1**3)

    record()
    for l in range(1, net.L):
        n = net.widths[l]
        C_W, C_b = net.hyper(l + 1)
        M2 = (C_b**2 + C_b * C_W * (M1[:, :, None, None] + M1[None, None])
              + C_W**2 * (M2 + (np.einsum("acbd->abcd", M2) + np.einsum("adbc->abcd", M2)) / n))
        m3 = (C_b**3 + 3 * C_b**2 * C_W * m1 + 3 * C_b * C_W**2 * (1 + 2 / n) * m2
              + C_W**3 * (1 + 2 / n) * (1 + 4 / n) * m3)
        m2 = C_b**2 + 2 * C_b * C_W * m1 + C_W**2 * (1 + 2 / n) * m2
        m1 = C_b + C_W * m1
        M1 = C_b + C_W * M1
        record()
    return {k: np.array(v) for k, v in out.items()}


def test_deep_linear_exact_formula_sanity():
    """The recursion reproduces E[z^4] = 3 K^2 prod_{l'<l} (1 + 2/n_l') (no bias, PDLT eqs. 3.21-3.24) and the
    equal-width six-point function of derivations/README.md section 13.1."""
    net = pdlt.MLP("linear", (1, 2, 3, 5, 8), C_W=1.3, C_b=0.0)
    ex = deep_linear_exact(net, [[0.9]])
    K = 1.3 * 0.81
    Ks = K * 1.3 ** np.arange(4)
    prod = np.cumprod([1.0, 1 + 2 / 2, 1 + 2 / 3, 1 + 2 / 5])
    Ez4 = ex["four_point_single"][:, 0, 0, 0, 0] + 3 * ex["two_point"][:, 0, 0] ** 2
    np.testing.assert_allclose(Ez4, 3 * Ks**2 * prod, rtol=1e-13)
    net = pdlt.MLP("linear", (1,) + (4,) * 5, C_W=1.0)
    ex = deep_linear_exact(net, [[1.0]])
    l = np.arange(1, 6)
    kappa6 = 15 * ((1 + 2 / 4) * (1 + 4 / 4)) ** (l - 1) - 45 * (1 + 2 / 4) ** (l - 1) + 30
    np.testing.assert_allclose(ex["six_point_single"][:, 0], kappa6, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("widths, C_W, C_b, x", [
    ((1, 2, 4, 8), 1.0, 0.0, [[1.0]]),                                  # E z^4 = 3 K^2 prod(1 + 2/n)
    ((2, 3, 5, 2), 0.9, 0.2, [[1.0, 0.0], [0.6, 0.8]]),
    ((3, 4, 2, 6), 1.1, 0.0, [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.3, -0.7, 1.0]]),  # d = 3 > n_2: singular G^(3)
])
def test_deep_linear_exact_small_width(widths, C_W, C_b, x):
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=C_b)
    res = sample(net, x, 40_000, seed=7, progress=False)
    ex = deep_linear_exact(net, x)
    for name, val in ex.items():
        assert_z(getattr(res, name), val, what=f"deep linear {widths} {name}")
    # layer 1 is Gaussian: its connected functions vanish (up to sampling noise)
    np.testing.assert_allclose(ex["four_point"][0], 0.0, atol=1e-15)


def _gaussian_averages(act, K):
    """<s_a s_b> (d, d) and <s_a s_b s_c s_e> (d, d, d, d), <s_a^2 ... >: by pdlt.expect (quadrature)."""
    d = K.shape[0]
    quads = list(itertools.product(range(d), repeat=4))
    pairs = list(itertools.product(range(d), repeat=2))

    def f(z):
        s = act(z)
        cols = [s[..., a] * s[..., b] for a, b in pairs] + [s[..., a] * s[..., b] * s[..., c] * s[..., e]
                                                               for a, b, c, e in quads]
        cols += [s[..., a] ** 6 for a in range(d)]
        return np.stack(cols, -1)

    v = pdlt.expect(f, K, kinks=act.kinks)
    P2 = v[: d * d].reshape(d, d)
    P4 = v[d * d: d * d + d**4].reshape((d,) * 4)
    P6 = v[d * d + d**4:]
    return P2, P4, P6


@pytest.mark.parametrize("name, C_W, C_b", [("tanh", 1.5, 0.1), ("relu", 2.0, 0.05)])
def test_one_hidden_layer_exact_at_any_width(name, C_W, C_b):
    r"""L = 2 networks: the layer-2 statistics are exact at any n_1, for any activation.

    Layer 1 is exactly Gaussian with iid neurons ``z^(1)_j ~ N(0, K^(1))``. Given layer 1 the rows of
    ``z^(2)`` are iid ``N(0, G^)`` with ``G^ = C_b + (C_W/n_1) sum_j s_j s_j^T``, ``s_j = sigma(z^(1)_j)``: an
    average of ``n_1`` iid terms. Hence exactly ``E[z_a z_b] = E G^ = C_b + C_W <s_a s_b>`` and, for distinct
    neurons, ``E[z_ia z_ib z_jc z_jd] - E G^ E G^ = Cov(G^_ab, G^_cd) = (C_W^2/n_1)[<s_a s_b s_c s_d> -
    <s_a s_b><s_c s_d>]`` (the covariance of a mean of iid terms), with no higher order in 1/n_1: the
    connected four-point function is exactly order 1/n. One neuron: the three pairings of that covariance.
    Sixth cumulant: ``15 kappa3(G^_aa) = 15 C_W^3 (<s^6> - 3<s^4><s^2> + 2<s^2>^3)/n_1^2`` (third cumulant of a
    mean of iid terms). Gaussian averages by pdlt.expect at ``K^(1)``.
    """
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    n1 = 3
    net = pdlt.MLP(name, (2, n1, 4), C_W=C_W, C_b=C_b)
    act = net.activation
    K1 = C_b + C_W * x @ x.T / 2
    P2, P4, P6 = _gaussian_averages(act, K1)
    cov = C_W**2 / n1 * (P4 - P2[:, :, None, None] * P2[None, None])
    ar = np.arange(2)
    p2d, p4d = P2[ar, ar], P4[ar, ar, ar, ar]
    exact = {
        "two_point": C_b + C_W * P2,
        "four_point": cov,
        "four_point_single": cov + np.einsum("acbd->abcd", cov) + np.einsum("adbc->abcd", cov),
        "six_point_single": 15 * C_W**3 * (P6 - 3 * p4d * p2d + 2 * p2d**3) / n1**2,
    }
    res = sample(net, x, 60_000, seed=11, progress=False)
    for key, val in exact.items():
        assert_z(getattr(res, key)[1], val, what=f"{name} L=2 {key}")
    if name == "tanh":   # the theory module's V^(2) is this same exact expression (cross-check only)
        th = pdlt.finite_width(net, x)
        np.testing.assert_allclose(th.connected_four_point(2), cov, rtol=1e-8, atol=1e-12)


def test_negative_control_infinite_width_rejected():
    """At n = 4 the infinite-width prediction (no connected four-point function) is rejected."""
    net = pdlt.MLP("tanh", (2, 4, 4, 4), C_W=1.5, C_b=0.1)
    res = sample(net, [[1.0, 0.0], [0.6, 0.8]], 20_000, seed=3, progress=False)
    z = res.four_point.z(0.0)
    assert np.all(np.abs(z[1:, 0, 0, 0, 0]) > 10)
    assert np.all(np.abs(res.four_point_single.z(0.0)[1:, 0, 0, 0, 0]) > 10)


# ---------------------------------------------------------------------------------------------------
# the two samplers agree
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, widths, x", [
    ("tanh", (2, 6, 5, 6), [[1.0, 0.0], [0.6, 0.8]]),
    # d = 3 > n_1 = 2 and a repeated input: singular metrics G^ at every layer
    ("gelu", (2, 2, 3, 2), [[1.0, 0.0], [1.0, 0.0], [-0.3, 0.9]]),
])
def test_samplers_agree(name, widths, x):
    net = pdlt.MLP(name, widths, C_W=1.3, C_b=0.1)
    a = sample(net, x, 20_000, seed=1, method="markov", progress=False)
    b = sample(net, x, 20_000, seed=2, method="weights", progress=False)
    for key in ("two_point", "four_point", "four_point_single", "six_point_single"):
        z = two_sample_z(getattr(a, key), getattr(b, key))
        assert np.max(np.abs(z)) < ZMAX, (key, np.unravel_index(np.argmax(np.abs(z)), z.shape), np.max(np.abs(z)))
        if name == "tanh" and key != "two_point":
            # markov's conditional statistics (layers 2, 3) can only have the smaller variance (law of total
            # variance); for the four- and six-point functions the removed within-network part is most of it
            # (standard errors 0.04-0.3 of the weights sampler's here), and 0.6 leaves room for the ~20% noise of
            # a jackknife error from 32 batches
            ratio = getattr(a, key).stderr[1:] / getattr(b, key).stderr[1:]
            assert np.max(ratio) < 0.6, (key, np.max(ratio))


@pytest.mark.slow  # suite time
def test_sample_layers_matches_runner_networks():
    """sample_layers draws the same networks as the runner: the statistics of its z's equal the runner's sums
    (weights), and the conditional statistics on their metrics do (markov, ``markov_reference``)."""
    net = pdlt.MLP("tanh", (2, 3, 4), C_W=1.2, C_b=0.1)
    x = [[1.0, 0.0], [0.6, 0.8]]
    for method in ("markov", "weights"):
        zs = sample_layers(net, x, 64, seed=5, method=method)
        assert [z.shape for z in zs] == [(64, 3, 2), (64, 4, 2)]
        s = (markov_reference(net, x, 64, 5, 8) if method == "markov" else
             E.estimate_from_samples(zs, batches=8))
        r = sample(net, x, 64, seed=5, method=method, batches=8, progress=False)
        np.testing.assert_allclose(s.four_point.mean, r.four_point.mean, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(s.two_point.stderr, r.two_point.stderr, rtol=1e-10, atol=1e-14)


def test_markov_repeated_inputs_exact():
    """Identical inputs give identical preactivations: K^(1) and every G^ have rank 1. The PSD square root
    reproduces G^ to rounding, so Var(z_0 - z_1) = (e_0 - e_1)^T G^ (e_0 - e_1) ~ eps |G^|, i.e. the two
    preactivations agree to ~sqrt(eps) (eigh, d = 3) - exact in distribution up to float64 rounding."""
    net = pdlt.MLP("tanh", (2, 3, 3), C_W=1.0, C_b=0.0)
    zs = sample_layers(net, [[1.0, 0.5], [1.0, 0.5], [1.0, 0.5]], 8, seed=0)
    for z in zs:
        scale = np.abs(z).max()
        assert np.abs(z[..., 0] - z[..., 1]).max() < 1e-6 * scale
        assert np.abs(z[..., 0] - z[..., 2]).max() < 1e-6 * scale


# ---------------------------------------------------------------------------------------------------
# calibration of the jackknife standard errors
# ---------------------------------------------------------------------------------------------------


def test_stderr_calibration():
    """Over 40 independent runs of an L = 2 network with exactly known statistics, the z-scores of the
    two-point, four-point (distinct and single) functions have mean ~0 and variance ~1. With B = 32 batches
    the z-scores are ~t_31 (variance 1.07); the variance of 40 of them has 99.9% range ~[0.6, 1.9], the mean
    |mean| < 0.7 at ~4 sigma. (At far fewer networks per run, ~4000, the skewness of fourth-moment statistics
    visibly shifts the mean z to ~-0.3; the runs here use 20000.)"""
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    C_W, C_b, n1 = 1.5, 0.1, 4
    net = pdlt.MLP("tanh", (2, n1, 3), C_W=C_W, C_b=C_b)
    P2, P4, _ = _gaussian_averages(net.activation, C_b + C_W * x @ x.T / 2)
    cov = C_W**2 / n1 * (P4 - P2[:, :, None, None] * P2[None, None])
    single = cov + np.einsum("acbd->abcd", cov) + np.einsum("adbc->abcd", cov)
    zs = []
    for s in range(40):
        r = sample(net, x, 20_000, seed=1000 + s, progress=False)
        zs.append([r.two_point.z(C_b + C_W * P2)[1, 0, 1], r.four_point.z(cov)[1, 0, 0, 0, 0],
                   r.four_point.z(cov)[1, 0, 1, 1, 1], r.four_point_single.z(single)[1, 0, 0, 1, 1]])
    zs = np.array(zs)
    assert np.all(np.abs(zs.mean(0)) < 0.7), zs.mean(0)
    v = zs.var(0, ddof=1)
    assert np.all((v > 0.55) & (v < 1.9)), v


def test_branch_scaled_layer_without_shortcut_may_change_width():
    """gamma = 0 with xi != 1 is a dense layer with xi^2 C_W, xi^2 C_b (same normals): the weights sampler on widths
    that change equals that plain network's (it crashed on the shapes before)."""
    x = [[1.0, 0.5]]
    res = pdlt.MLP("tanh", (2, 4, 6, 3), C_W=[1.2, 1.3, 0.9], C_b=[0.1, 0.2, 0.3], xi=[1.0, 0.8, 1.1])
    plain = pdlt.MLP("tanh", (2, 4, 6, 3), C_W=[1.2, 0.8**2 * 1.3, 1.1**2 * 0.9], C_b=[0.1, 0.8**2 * 0.2, 1.1**2 * 0.3])
    a = pdlt.montecarlo.sample_layers(res, x, 5, seed=3, method="weights")
    b = pdlt.montecarlo.sample_layers(plain, x, 5, seed=3, method="weights")
    for za, zb in zip(a, b):
        np.testing.assert_allclose(za, zb, rtol=1e-13, atol=1e-15)

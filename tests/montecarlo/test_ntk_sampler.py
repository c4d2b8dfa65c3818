"""The NTK Monte Carlo (pdlt.montecarlo.ntk_sampler, pdlt.sample_ntk) against independent computations: full
parameter-space derivatives of a tiny explicit network (jax.hessian, jacfwd(jacfwd(jacrev))) contracted by einsum,
the layer-2 values of the O(1/n) NTK statistics (exact at any width; numbers from an independent code), chunk and
resume invariance, and bad input."""

import numpy as np
import pytest

import pdlt
from pdlt.errors import CheckpointError, ParameterError
from pdlt.montecarlo.ntk_sampler import ntk_network_fn, split_ntk_stats
from pdlt.montecarlo.activations_jax import jax_activation

X2 = np.array([[1.0, 0.4, -0.3], [0.6, -0.3, -0.8]])


def _einsum(*args):
    return np.einsum(*args, optimize=True)


def _independent(net, x, lambda_b, lambda_W, key, neurons=(0, 1)):
    """Per-layer blocks of the module docstring of ntk_sampler, computed from the flattened parameter vector
    theta = (W^(1), b^(1), ..., W^(L), b^(L)) with the full Jacobian, Hessian and third-derivative tensors, and the
    diagonal learning-rate tensor Lambda (lambda_W/n_{l-1} for weights, lambda_b for biases)."""
    import jax
    import jax.numpy as jnp

    ws, L = net.widths, net.L
    act = jax_activation(net.activation)
    shapes, lam = [], []
    for m in range(1, L + 1):
        shapes += [(ws[m], ws[m - 1]), (ws[m],)]
        lam += [np.full(ws[m] * ws[m - 1], lambda_W / ws[m - 1]), np.full(ws[m], lambda_b)]
    lam = np.concatenate(lam)
    # the weights sampler's key contract (samplers module docstring)
    theta = []
    for m in range(1, L + 1):
        k = jax.random.fold_in(key, m)
        theta.append((jax.random.normal(jax.random.fold_in(k, 0), shapes[2 * m - 2]) * np.sqrt(net.C_W[m - 1] / ws[m - 1])).ravel())
        theta.append(jax.random.normal(jax.random.fold_in(k, 1), shapes[2 * m - 1]) * np.sqrt(net.C_b[m - 1]))
    theta = jnp.concatenate(theta)

    def unflatten(th):
        out, pos = [], 0
        for sh in shapes:
            size = int(np.prod(sh))
            out.append(th[pos:pos + size].reshape(sh))
            pos += size
        return out

    def z_of(l):
        def F(th):
            p = unflatten(th)
            h = jnp.asarray(x)                      # (d, n0)
            z = None
            for m in range(l):
                aff = h @ p[2 * m].T + p[2 * m + 1]   # (d, n_m)
                step = m > 0 and (net.gamma[m] != 0 or net.xi[m] != 1)
                z = net.gamma[m] * z + net.xi[m] * aff if step else aff
                h = act(z)
            return z.T                              # (n_l, d)
        return F

    res = []
    for l in range(1, L + 1):
        F = z_of(l)
        # one compilation per layer: z, the Jacobian (n, d, P), Hessian (n, d, P, P) and third derivatives (n, d, P^3)
        z, J, Hs, T3 = jax.jit(lambda th, F=F: (F(th), jax.jacrev(F)(th), jax.hessian(F)(th),
                                                jax.jacfwd(jax.jacfwd(jax.jacrev(F)))(th)))(theta)
        # the contractions in numpy: eager JAX compiled one program per einsum (80 of them, 7 s of the test)
        z, J, Hs, T3 = (np.asarray(a) for a in (z, J, Hs, T3))
        v = J * lam                                         # Lambda grad z
        H = _einsum("iap,jbp->ijab", J, v)
        dH = _einsum("iapq,jbp,kcq->ijkabc", Hs, v, v)
        ddI = _einsum("iapqr,jbp,kcq,mer->ijkmabce", T3, v, v, v)
        Hv = _einsum("iapq,kcq->ikacp", Hs, v)           # Hess(z_ia) v_kc
        ddII = _einsum("ikacp,jmbep->ijkmabce", Hv * lam, Hv)   # <Hess z_i1 v_i3, Lambda Hess z_i2 v_i4>
        n = ws[l]
        off = ~np.eye(n, dtype=bool)
        Np = n * (n - 1)
        blk = {
            "h_diag": np.mean(_einsum("iiab->iab", H), 0),
            "hh": _einsum("ij,iab,jce->abce", off, _einsum("iiab->iab", H), _einsum("iiab->iab", H)) / Np,
            "hzz": _einsum("ij,iab,jc,je->abce", off, _einsum("iiab->iab", H), z, z) / Np,
            "bb": _einsum("ij,ijac,ijbe->abce", off, H, H) / Np,
            "ff": _einsum("ij,ijac,ib,je->abce", off, H, z, z) / Np,
        }
        p = q = r = s = t = u = 0.0
        for i, j in (neurons, neurons[::-1]):
            p = p + _einsum("abc,e->abce", dH[i, j, j], z[i]) / 2
            q = q + _einsum("abc,e->abce", dH[i, i, j], z[j]) / 2
            r = r + ddI[i, i, j, j] / 2
            s = s + ddII[i, i, j, j] / 2
            t = t + _einsum("aebc->abce", ddII[i, j, i, j]) / 2
            u = u + _einsum("aceb->abce", ddII[i, j, j, i]) / 2   # u[a,b,c,e] = ddII_ijji;a c e b
        blk.update(p=p, q=q, r=r, s=s, t=t, u=u, H=H, z=z)
        res.append({k: np.asarray(v_) for k, v_ in blk.items()})
    return res


def _one_network_against_full_parameter_derivatives(net, x, neurons, seed, index, sampler=True):
    """Network ``index`` of seed ``seed`` through ntk_network_fn against :func:`_independent` (same draws): every block
    to 1e-11 of its scale, and (``sampler``) z equal to the weights sampler's; returns ``(got, want)``."""
    import jax
    import jax.numpy as jnp

    lb, lw = 0.7, 1.3
    L = net.L
    fn = ntk_network_fn(jax_activation(net.activation), net.widths, neurons=neurons,
                        shortcuts=(net.gamma, net.xi) if net.residual else None)
    key = jax.random.fold_in(jax.random.key(seed), index)
    rates = jnp.asarray([[lb] * L, [lw] * L])
    st, status = jax.jit(fn)(key, jnp.asarray(x), jnp.asarray(net.C_W), jnp.asarray(net.C_b), rates)
    assert np.all(np.asarray(status) == 0)
    got = split_ntk_stats(np.asarray(st), x.shape[0])
    want = _independent(net, x, lb, lw, key, neurons=neurons)
    zs = pdlt.montecarlo.sample_layers(net, x, index + 1, seed=seed, method="weights") if sampler else None
    for l in range(L):
        w = want[l]
        if sampler:                                        # the same networks as the "weights" sampler's
            np.testing.assert_allclose(zs[l][index], w["z"], rtol=1e-13, atol=1e-14)
        for name in ("h_diag", "hh", "hzz", "bb", "ff", "p", "q", "r", "s", "t", "u"):
            scale = max(np.max(np.abs(w[name])), 1.0)
            np.testing.assert_allclose(got[name][l], w[name], rtol=0, atol=1e-11 * scale, err_msg=f"{name} l={l+1}")
    # z^(1) is linear in theta: every derivative object vanishes; deeper, they are not trivially 0 (not vacuous)
    for name in "pqrstu":
        assert np.all(got[name][0] == 0)
        assert np.max(np.abs(want[L - 1][name])) > 1e-3, name
    return got, want


def test_per_network_against_full_parameter_derivatives(seed=1):
    """NTK, dNTK, ddNTK-I/II statistics of one tiny network (unequal widths, L = 3, d = 3 inputs, the neuron pair
    (2, 0), so no index bookkeeping is specific to d = 2, equal widths or the pair (0, 1)) equal the einsum
    contractions of the full Jacobian, Hessian and third-derivative tensors of the flattened parameters."""
    net = pdlt.MLP("tanh", (2, 4, 3, 5), C_W=[1.3, 1.1, 1.8], C_b=[0.1, 0.3, 0.2])
    x = np.array([[0.9, -0.4], [0.2, 1.1], [-0.7, -0.5]])
    _, want = _one_network_against_full_parameter_derivatives(net, x, (2, 0), seed, 5)
    for name in "pqrstu":
        assert np.max(np.abs(want[1][name])) > 1e-3


def test_residual_network_against_full_parameter_derivatives(seed=2):
    """Residual steps (gamma != 0, xi != 1): the full NTK from H' = M_a H M_b^T + xi^2 kappa and the derivative objects
    from nested jvp and grad in learning-rate coordinates equal the full-parameter tensors of the same network (its own
    forward function, the shortcut written out), and the Rao-Blackwellized mean NTK is the conditional mean of H_ii
    given the layers below, written out from the previous layer's full NTK."""
    net = pdlt.MLP("tanh", (2, 4, 4, 4), C_W=[1.3, 1.1, 0.9], C_b=[0.1, 0.3, 0.2], gamma=[0.0, 0.7, -0.5],
                   xi=[1.0, 0.8, 1.2])
    x = np.array([[0.9, -0.4], [0.2, 1.1]])
    lb, lw = 0.7, 1.3
    # (the residual weights sampler's networks are checked in test_samplers; here the NTK sampler's own forward pass
    # enters every block)
    got, want = _one_network_against_full_parameter_derivatives(net, x, (1, 3), seed, 4, sampler=False)
    # h_rb = E[H_ii | layers below], averaged over i: gamma^2 H_ii + xi^2 (lambda_b + lambda_W s.s/n + C_W/n sum_j
    # s'_j s'_j H_jj), from the previous layer's full NTK and preactivations
    act = pdlt.activation("tanh")
    for l in (1, 2):
        H, z = want[l - 1]["H"], want[l - 1]["z"]                 # (n, n, d, d), (n, d)
        s, ds = act(z), act.d1(z)
        n = z.shape[0]
        Hjj = np.einsum("jjab->jab", H)
        cond = (net.gamma[l] ** 2 * Hjj.mean(0) + net.xi[l] ** 2 * (lb + lw * s.T @ s / n + net.C_W[l] / n *
                np.einsum("ja,jb,jab->ab", ds, ds, Hjj)))
        np.testing.assert_allclose(got["h_rb"][l], cond, rtol=1e-12, atol=1e-13)


@pytest.mark.slow
def test_residual_mean_ntk_is_exact_at_layer_two():
    """sample_ntk on a residual network (width 4): z^(1) is exactly Gaussian and H^(1) deterministic, so the mean NTK of
    layer 2 is the frozen NTK of pdlt.ntk (its residual ntk_map) at any width: |z| < 5 for every entry; layer 1 is
    exact. Negative control: the same network without the shortcut has another frozen NTK, rejected by the MC."""
    net = pdlt.MLP("tanh", (3, 4, 4, 4), C_W=1.2, C_b=0.1, gamma=0.6, xi=0.9)
    res = pdlt.montecarlo.sample_ntk(net, X2, 3000, batches=20, lambda_b=0.5, lambda_W=1.1, seed=3)
    th = pdlt.ntk(net, X2, lambda_b=0.5, lambda_W=1.1).Theta
    np.testing.assert_allclose(res.ntk_mean.mean[0], th[0], rtol=1e-13)
    assert np.all(np.abs(res.ntk_mean.z(th)[1]) < 5)
    assert np.all(np.asarray(res.ntk_mean.stderr[1]) < 0.02 * np.abs(th[1]).max())   # resolving: the test can fail
    plain = pdlt.ntk(pdlt.MLP("tanh", (3, 4, 4, 4), C_W=0.9**2 * 1.2, C_b=0.9**2 * 0.1), X2, lambda_b=0.5,
                     lambda_W=1.1).Theta
    assert np.max(np.abs(res.ntk_mean.z(plain)[1])) > 5
    for name in ("A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"):
        assert np.all(np.isfinite(getattr(res, name).mean)), name


def test_layer_two_is_exact_at_any_width():
    """Layer 2 carries only the source terms of the P..U recursions, exact at any width: tanh, C_W = 1.2,
    C_b = 0.1, lambda_b = 0.7, lambda_W = 1.3, K^(1) = 1, one input, n = 8. The expected numbers are the theory
    row computed by an independent explicit-weight code (derivations/README.md section 18); the mean NTK at layer 2
    is the frozen Theta^(2) (Theta1 = 0 there) from pdlt.ntk; layer 1 is deterministic."""
    net = pdlt.MLP("tanh", (1, 8, 8), C_W=1.2, C_b=0.1)
    x = np.array([[np.sqrt(0.75)]])                         # K^(1) = 0.1 + 1.2 x^2 = 1
    res = pdlt.montecarlo.sample_ntk(net, x, 40_000, seed=3, lambda_b=0.7, lambda_W=1.3, progress=False)
    assert res.kind == "ntk" and res.n_samples == 40_000
    want = dict(zip("PQRSTU", (-0.3866, -0.1905, -3.669, 2.4092, 0.2893, 0.9145)))
    for name, value in want.items():
        e = res.estimate(name)
        z = float(e.z(np.full(e.shape, value))[1].ravel()[0])
        assert abs(z) < 5, (name, e.mean[1], e.stderr[1])
        assert float(e.stderr[1].ravel()[0]) < 0.05 * max(abs(value), 0.3)   # a test that can fail
        assert np.all(e.mean[0] == 0)                                        # z^(1) is linear in theta
    th = pdlt.ntk(net, x, lambda_b=0.7, lambda_W=1.3).Theta
    np.testing.assert_allclose(res.ntk_mean.mean[0], th[0], rtol=1e-13)
    assert abs(float(res.ntk_mean.z(th)[1].ravel()[0])) < 5
    for name in "ABDF":       # layer 1: the NTK is deterministic, so no fluctuation (up to rounding)
        assert np.all(np.abs(getattr(res, name).mean[0]) < 1e-12)
    # the plain statistics come along: E[z z] at layer 1 is K^(1) = 1
    assert abs(float(res.two_point.z(np.ones((2, 1, 1)))[0].ravel()[0])) < 5


def _net():
    return pdlt.MLP("tanh", (3, 4, 3), C_W=1.4, C_b=0.2)


def test_chunk_invariance_and_resume(tmp_path):
    """Two chunk sizes give the same sums (the networks do not depend on the chunking), and an interrupted run
    resumed from its checkpoint equals the uninterrupted one; the configuration records kind and learning rates."""
    net, kw = _net(), dict(lambda_b=[0.5, 0.2], lambda_W=1.1, batches=4, progress=False)
    a = pdlt.montecarlo.sample_ntk(net, X2, 24, seed=7, chunk_size=5, **kw)
    b = pdlt.montecarlo.sample_ntk(net, X2, 24, seed=7, chunk_size=16, **kw)
    np.testing.assert_allclose(a.state.sums, b.state.sums, rtol=1e-12, atol=1e-12 * np.max(np.abs(a.state.sums)))
    assert np.array_equal(a.state.counts, b.state.counts)
    assert a.config["kind"] == "ntk" and a.config["lambda_b"] == [0.5, 0.2] and a.config["lambda_W"] == [1.1] * 2
    # network s is network s of the weights sampler: the plain statistics agree
    w = pdlt.sample(net, X2, 24, seed=7, method="weights", batches=4, progress=False, chunk_size=24)
    np.testing.assert_allclose(w.two_point.mean, a.two_point.mean, rtol=1e-12)
    # checkpoint of a partial run, then resume to the full count
    ck = tmp_path / "ntk.npz"
    part = pdlt.montecarlo.sample_ntk(net, X2, 10, seed=7, chunk_size=5, checkpoint=ck, **kw)
    assert part.complete and part.n_samples == 10
    full = pdlt.montecarlo.sample_ntk(net, X2, 24, seed=7, chunk_size=5, checkpoint=ck, **kw)
    np.testing.assert_allclose(full.state.sums, a.state.sums, rtol=1e-12, atol=1e-12 * np.max(np.abs(a.state.sums)))
    loaded = pdlt.montecarlo.load(ck)
    assert loaded.kind == "ntk"
    np.testing.assert_array_equal(loaded.Q.mean, full.Q.mean)
    # a checkpoint of other learning rates (or a preactivation run) is refused
    with pytest.raises(CheckpointError, match="lambda_W"):
        pdlt.montecarlo.sample_ntk(net, X2, 30, seed=7, chunk_size=5, checkpoint=ck,
                                   **{**kw, "lambda_W": 1.2})
    with pytest.raises(CheckpointError):
        pdlt.sample(net, X2, 30, seed=7, method="weights", batches=4, checkpoint=ck, progress=False)
    # NTK statistics of a preactivation run: a ParameterError, not an AttributeError
    with pytest.raises(ParameterError, match="sample_ntk"):
        w.P


def test_bad_input():
    net = _net()
    for bad in (-1.0, float("nan"), float("inf"), [1.0, 2.0, 3.0], "1"):
        with pytest.raises(ParameterError) as err:
            pdlt.montecarlo.sample_ntk(net, X2, 8, lambda_W=bad, batches=2)
        assert err.value.setting == "lambda_W"
        with pytest.raises(ParameterError) as err:
            pdlt.montecarlo.sample_ntk(net, X2, 8, lambda_b=bad, batches=2)
        assert err.value.setting == "lambda_b"
    with pytest.raises(ParameterError, match="identically 0"):
        pdlt.montecarlo.sample_ntk(net, X2, 8, lambda_b=0.0, lambda_W=0.0, batches=2)
    with pytest.raises(ParameterError) as err:
        pdlt.montecarlo.sample_ntk(pdlt.MLP("tanh", (3, 1, 4)), X2, 8, batches=2)
    assert err.value.setting == "widths"


def test_divergence_is_an_error_not_nan():
    """Learning rates beyond float64 make the NTK statistics overflow: DivergentFlowError naming the layer (same
    architecture and chunk as the layer-2 test, so the compiled function is shared). The inputs are modest, so the
    advice is the learning rates alone (it blamed the inputs first)."""
    with pytest.raises(pdlt.DivergentFlowError, match="layer l = 1") as err:
        pdlt.montecarlo.sample_ntk(pdlt.MLP("tanh", (1, 8, 8), C_W=1.2, C_b=0.1), [[1.0]], 256, lambda_W=1e300,
                                   progress=False)
    assert "the NTK statistics overflow: lower the learning rates" in str(err.value)
    assert "scale the inputs" not in str(err.value)


@pytest.mark.slow
def test_device_count_invariance(tmp_path):
    """Two host devices (XLA_FLAGS in a subprocess) give the one-device NTK sums to round-off: the runner's sharding
    guarantee holds for NTK runs too."""
    import os
    import subprocess
    import sys
    import textwrap

    net, x = pdlt.MLP("tanh", (2, 5, 4, 3), C_W=1.3, C_b=0.1), np.array([[1.0, 0.0], [0.6, 0.8]])
    one = pdlt.sample_ntk(net, x, 64, seed=4, batches=8, chunk_size=16, lambda_b=0.7, lambda_W=1.3, progress=False)
    out = tmp_path / "two.npz"
    code = textwrap.dedent(f"""
        import jax, numpy as np, pdlt
        assert len(jax.devices()) == 2, jax.devices()
        net = pdlt.MLP("tanh", (2, 5, 4, 3), C_W=1.3, C_b=0.1)
        r = pdlt.sample_ntk(net, np.array([[1.0, 0.0], [0.6, 0.8]]), 64, seed=4, batches=8, chunk_size=16,
                            lambda_b=0.7, lambda_W=1.3, progress=False)
        assert len(r.info["devices"]) == 2
        r.save({str(out)!r})
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = pdlt.montecarlo.load(out)
    np.testing.assert_allclose(two.state.sums, one.state.sums, rtol=1e-12, atol=1e-14)
    for name in ("ntk_mean", "A", "T"):
        np.testing.assert_allclose(getattr(two, name).mean, getattr(one, name).mean, rtol=1e-10, atol=1e-13)


def test_tiny_preactivations_are_refused_not_zeroed():
    """NTK runs accumulate unscaled statistics (products of four preactivation-sized factors): at |z| ~ 1e-70 they
    came back as 0 +- 0 (the vertex, the NTK variance, D, F) with no warning, where pdlt.sample refuses or rescales.
    Refused at the layer; just inside the range the vertex is still resolved (~1e-233, its own size)."""
    net = pdlt.MLP("tanh", (2, 4, 4))
    with pytest.raises(pdlt.VanishingFlowError) as err:
        pdlt.sample_ntk(net, [[1e-70, 0.0]], 16, batches=2)
    assert err.value.layer == 1
    r = pdlt.sample_ntk(net, [[1e-58, 0.0]], 16, batches=2)
    v = r.vertex.mean[-1].ravel()[0]
    assert np.isfinite(v) and v != 0.0 and np.all(r.vertex.stderr[-1] > 0)

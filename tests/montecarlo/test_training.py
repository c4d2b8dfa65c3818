"""Monte Carlo of gradient-descent training (pdlt.sample_trained, pdlt.montecarlo.training) against independent
computations: a plain numpy loop with jax.grad gradients and full-Jacobian NTKs for single networks; kernel
regression with the frozen NTK (pdlt.ntk, pdlt.kernel_flow) at large width; the NNGP posterior when only the last
layer is trained; chunk, resume and SGD invariances; divergence and bad input."""

import numpy as np
import pytest

import pdlt
from pdlt.errors import CheckpointError, DivergentFlowError, ParameterError
from pdlt.montecarlo.training import train_layout

XA = np.array([[1.0, 0.4, -0.3], [0.6, -0.3, -0.8], [-0.2, 0.9, 0.5]])
XD = np.array([[0.3, 0.3, -0.6], [-0.9, 0.1, 0.2]])


def _draw(net, key):
    """The weights sampler's network for ``key`` (samplers module docstring: layer m from fold_in(key, m), W from
    fold_in(., 0), b from fold_in(., 1)), as numpy arrays."""
    import jax
    import jax.numpy as jnp

    Ws, bs = [], []
    for m in range(1, net.L + 1):
        k = jax.random.fold_in(key, m)
        n_in, n_out = net.widths[m - 1], net.widths[m]
        Ws.append(np.asarray(jax.random.normal(jax.random.fold_in(k, 0), (n_out, n_in), jnp.float64))
                  * np.sqrt(net.C_W[m - 1] / n_in))
        bs.append(np.asarray(jax.random.normal(jax.random.fold_in(k, 1), (n_out,), jnp.float64))
                  * np.sqrt(net.C_b[m - 1]))
    return Ws, bs


def _reference(net, xa, y, xb, lb, lw, eta, steps, key, batch_size=None):
    """One network trained by a plain Python loop: gradients by jax.grad of the (minibatch) loss, numpy updates
    with the learning-rate tensor, the NTK as J Lambda J^T from the full Jacobian (jax.jacrev) of the outputs in
    the flattened parameters, and the frozen prediction with the geometric series summed term by term."""
    import jax
    import jax.numpy as jnp

    L, ws = net.L, net.widths
    lb, lw = np.broadcast_to(lb, L).astype(float), np.broadcast_to(lw, L).astype(float)
    act = pdlt.montecarlo.jax_activation(net.activation)
    Ws, bs = _draw(net, key)
    X = np.concatenate([xa, xb])
    A, nL = xa.shape[0], ws[-1]

    def out(params, X):
        h = jnp.asarray(X)
        for m in range(L):
            z = h @ params[2 * m].T + params[2 * m + 1]
            h = act(z)
        return z

    def loss(params, X, y, w):
        e = out(params, X) - y
        return 0.5 * jnp.sum(w[:, None] * e * e)

    grad = jax.jit(jax.grad(loss))
    lam = []
    for m in range(L):
        lam += [np.full(ws[m + 1] * ws[m], lw[m] / ws[m]), np.full(ws[m + 1], lb[m])]
    lam = np.concatenate(lam)

    def ntk(params):
        flat = lambda th: out(_unflat(th, ws), X).T.reshape(-1)              # rows (i, a), i-major
        J = np.asarray(jax.jacrev(flat)(jnp.asarray(np.concatenate([p.ravel() for p in params]))))
        return (J * lam) @ J.T

    params = [p for pair in zip(Ws, bs) for p in pair]
    H0 = ntk(params)
    z0 = np.asarray(out(params, X))
    losses = []
    for t in range(steps):
        losses.append(float(loss(params, xa, y, jnp.ones(A))))
        w = np.ones(A)
        if batch_size is not None:
            pick = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 0), t), A))[:batch_size]
            w = np.zeros(A)
            w[pick] = A / batch_size
        g = grad(params, xa, y, jnp.asarray(w))
        params = [p - eta * (lw[m // 2] / ws[m // 2] if m % 2 == 0 else lb[m // 2]) * np.asarray(gp)
                  for m, (p, gp) in enumerate(zip(params, g))]
    losses.append(float(loss(params, xa, y, jnp.ones(A))))
    zT = np.asarray(out(params, X))
    HT = ntk(params)
    # frozen prediction: rows (i, a) of H are i-major over all N inputs; pick the training and test rows
    N = X.shape[0]
    rows = lambda sel: np.array([i * N + a for i in range(nL) for a in sel])
    ia, idd = rows(range(A)), rows(range(A, N))
    M = np.eye(len(ia)) - eta * H0[np.ix_(ia, ia)]
    S, P = np.zeros_like(M), np.eye(len(ia))
    for _ in range(steps):
        S, P = S + P, P @ M
    eps0 = (z0[:A] - y).T.reshape(-1)
    zf = z0[A:] - (H0[np.ix_(idd, ia)] @ (eta * S @ eps0)).reshape(nL, -1).T
    Hd = lambda H: np.mean([H[np.ix_(range(i * N, i * N + N), range(i * N, i * N + N))] for i in range(nL)], axis=0)
    zD = zT[A:]
    # the flags: trained (final loss at most the initial one) and a stable frozen model (eta lambda_max(H0~) < 2)
    valid = float(losses[-1] <= losses[0])
    fvalid = valid * float(eta * np.linalg.eigvalsh(H0[np.ix_(ia, ia)])[-1] < 2.0)
    out = {"valid": np.array(valid), "fvalid": np.array(fvalid), "z": zD, "zz": zD @ zD.T / nL, "resid": zT[:A] - y,
           "fshift": zD - zf, "loss": np.array(losses), "ntk0": Hd(H0), "dntk": Hd(HT - H0)}
    return {k: v * (fvalid if k == "fshift" else 1.0 if k in ("valid", "fvalid") else valid) for k, v in out.items()}


def _unflat(th, ws):
    out, pos = [], 0
    for m in range(1, len(ws)):
        for shp in ((ws[m], ws[m - 1]), (ws[m],)):
            size = int(np.prod(shp))
            out.append(th[pos:pos + size].reshape(shp))
            pos += size
    return out


def _per_network(res):
    """Each network's statistics from a run with one network per batch: ``[{block: array}]``."""
    lay = train_layout(res.spec)
    sums = res.state.sums[:, 0, :]
    return [{name: sums[b, sl].reshape(shp) for name, (sl, shp) in lay.items()} for b in range(sums.shape[0])]


@pytest.mark.parametrize("batch_size", [None, pytest.param(2, marks=pytest.mark.slow)])
def test_one_network_equals_plain_gradient_descent(batch_size):
    """Every statistic of two small networks (L = 3, unequal widths, two outputs, per-layer learning rates) equals
    the plain loop of :func:`_reference` on the same weights to 1e-10, for full-batch GD and minibatch SGD."""
    import jax

    net = pdlt.MLP("tanh", (3, 5, 4, 2), C_W=[1.3, 1.1, 1.6], C_b=[0.1, 0.3, 0.2])
    y = np.array([[0.5, -1.0], [1.2, 0.3], [-0.4, 0.8]])
    lb, lw, eta, steps, seed = [0.7, 0.4, 1.0], [1.3, 0.9, 1.1], 0.08, 23, 4
    res = pdlt.sample_trained(net, XA, y, XD, 2, seed, lambda_b=lb, lambda_W=lw, eta=eta, steps=steps,
                              batch_size=batch_size, record_every=5, batches=2, progress=False)
    assert list(res.loss_steps) == [0, 5, 10, 15, 20, 23]
    for s, got in enumerate(_per_network(res)):
        want = _reference(net, XA, y, XD, lb, lw, eta, steps, jax.random.fold_in(jax.random.key(seed), s),
                          batch_size)
        want["loss"] = want["loss"][res.loss_steps]
        for name, w in want.items():
            scale = max(np.max(np.abs(w)), 1.0)
            np.testing.assert_allclose(got[name], w, rtol=0, atol=1e-10 * scale, err_msg=f"{name} network {s}")
        # the comparison is not vacuous: the network trained and moved, and its NTK too
        assert want["fvalid"] == 1.0
        assert np.max(np.abs(want["dntk"])) > 1e-3 and np.max(np.abs(want["fshift"])) > 1e-4


def _kernel_regression(net, y, eta, steps, lambda_b=1.0, lambda_W=1.0):
    """The infinite-width (frozen NTK) ensemble of one output: ``Theta`` (pdlt.ntk) and ``K`` (pdlt.kernel_flow) of
    the output layer on (XA, XD); after T steps ``z_D(T) = z_D(0) - C (z_A(0) - y)`` with ``C = Theta_DA g``,
    ``g = Theta~^{-1} (1 - (1 - eta Theta~)^T)``, so over ``z(0) ~ N(0, K)``: mean ``C y``, covariance
    ``K_DD - C K_AD - K_DA C^T + C K_AA C^T``; the training residual's mean is ``-(1 - eta Theta~)^T y``."""
    X = np.concatenate([XA, XD])
    A = XA.shape[0]
    Th = pdlt.ntk(net, X, lambda_b=lambda_b, lambda_W=lambda_W).Theta[-1]
    K = pdlt.kernel_flow(net, X).K[-1]
    MT = np.linalg.matrix_power(np.eye(A) - eta * Th[:A, :A], steps)
    C = Th[A:, :A] @ np.linalg.solve(Th[:A, :A], np.eye(A) - MT)
    cov = K[A:, A:] - C @ K[:A, A:] - K[A:, :A] @ C.T + C @ K[:A, :A] @ C.T
    return {"mean": C @ y, "cov": cov, "train_residual": -MT @ y, "Theta": Th, "K": K}


def _allowance(wide, narrow, name, n_wide, n_narrow):
    """The O(1/n) allowance at the wide width: with ``m(n) = m_inf + c/n + O(1/n^2)``, ``m(narrow) - m(wide) =
    c (1/n_narrow - 1/n_wide)``, so ``|c|/n_wide`` is at most ``(|m(narrow) - m(wide)| + 5 SE) / (n_wide/n_narrow -
    1)`` at five standard errors of the difference (measured, not chosen)."""
    a, b = getattr(wide, name), getattr(narrow, name)
    diff = np.abs(b.mean - a.mean) + 5 * np.hypot(a.stderr, b.stderr)
    return diff / (n_wide / n_narrow - 1.0)


def _check_limit(wide, narrow, want, n_wide, n_narrow, scales):
    """Each estimate ``name`` of ``scales`` at the wide width is within 5 SE + :func:`_allowance` of ``want``, and
    that tolerance is below a tenth of ``scales[name]`` (the size of what a wrong answer would get wrong)."""
    for name, scale in scales.items():
        e = getattr(wide, name)
        w = np.reshape(want[name], e.shape)
        allow = _allowance(wide, narrow, name, n_wide, n_narrow)
        excess = np.abs(e.mean - w) - 5 * e.stderr - allow
        assert np.all(excess < 0), (name, e.mean, e.stderr, w, allow)
        assert np.max(5 * e.stderr + allow) < 0.1 * scale, (name, e.stderr, allow, scale)


def test_infinite_width_is_kernel_regression_with_the_frozen_ntk():
    """L = 2, tanh, all layers trained, 30 GD steps at eta = 1/lambda_max(Theta~) (partly trained: the slowest
    mode keeps ~25% of its residual): the ensemble mean and covariance at the test inputs and the mean training
    residual at width 512 agree with kernel regression built from pdlt.ntk and pdlt.kernel_flow within 5 standard
    errors plus the O(1/n) allowance measured from a width-64 run (:func:`_allowance`). Exact at any width (no
    allowance): the mean initial NTK (L = 2: E[H] = Theta, layer 1 is Gaussian) and the initial loss
    E[L(0)] = 1/2 sum_a (K_aa + y_a^2) (E[z^2] = K exactly at layer 2)."""
    y = np.array([1.0, -2.0, 1.6])
    runs = {}
    for n, count in ((64, 2000), (512, 3000)):
        net = pdlt.MLP("tanh", (3, n, 1), C_W=1.5, C_b=0.1)
        want = _kernel_regression(net, y, 0.0, 0)
        eta = 1.0 / np.linalg.eigvalsh(want["Theta"][:3, :3])[-1]
        want = _kernel_regression(net, y, eta, 30)
        runs[n] = pdlt.sample_trained(net, XA, y, XD, count, seed=n, eta=eta, steps=30, record_every=10,
                                      progress=False)
        res = runs[n]
        assert res.diverged == 0 and res.complete
        assert np.all(np.abs(res.ntk0.z(want["Theta"])) < 5)
        loss0 = 0.5 * np.sum(np.diag(want["K"])[:3] + y**2)
        assert abs(float(res.loss.z(np.full(res.loss.shape, loss0))[0])) < 5
        assert res.loss.mean[-1] < 0.2 * res.loss.mean[0]               # it trained
    # scales: the targets (residual) and the prior variance (cov), which wrong dynamics would misplace
    prior = np.max(np.diag(want["K"])[3:])
    _check_limit(runs[512], runs[64], want, 512, 64, {"cov": prior, "train_residual": np.max(np.abs(y))})
    # the mean against the O(1/n) theory (pdlt.train_prediction) at both widths, no allowance: its next order
    # (~ 1/n^2) is far below the standard error here
    for n, res in runs.items():
        net = pdlt.MLP("tanh", (3, n, 1), C_W=1.5, C_b=0.1)
        th = pdlt.train_prediction(net, XA, y, XD, eta=res.config["eta"], steps=30)
        assert np.all(np.abs(res.mean.z(th.mean_finite)) < 5), (n, res.mean.mean, res.mean.stderr, th.mean_finite)
    # the NTK moves and the trained output leaves the frozen prediction by O(1/n): resolved, and ~8x smaller at 8n
    for name in ("ntk_change", "frozen_shift"):
        a, b = getattr(runs[512], name), getattr(runs[64], name)
        i = np.unravel_index(np.argmax(np.abs(b.mean)), b.shape)
        assert abs(b.mean[i]) > 5 * b.stderr[i]
        ratio = b.mean[i] / a.mean[i]
        assert 4.0 < ratio < 16.0, (name, b.mean[i], a.mean[i])


@pytest.mark.slow
def test_last_layer_training_is_the_nngp_posterior():
    """Only the last layer trained, lambda_b/lambda_W = C_b/C_W (so Theta = K, and every network is exactly a
    linear model in its last-layer weights), trained until the residuals are ~1e-8 (200 steps): the ensemble mean and
    covariance at the test inputs approach the noiseless NNGP posterior K_DA K~^{-1} y and K_DD - K_DA K~^{-1} K_AD
    (pdlt.kernel_flow), within 5 standard errors plus the O(1/n) allowance of a width-64 run."""
    y = np.array([1.0, -2.0, 1.6])
    C_W, C_b = 1.5, 0.1
    lb, lw = [0.0, C_b], [0.0, C_W]
    runs = {}
    for n, count in ((64, 1500), (512, 1500)):
        net = pdlt.MLP("tanh", (3, n, 1), C_W=C_W, C_b=C_b)
        K = pdlt.kernel_flow(net, np.concatenate([XA, XD])).K[-1]
        KA = K[:3, :3]
        want = {"mean": K[3:, :3] @ np.linalg.solve(KA, y),
                "cov": K[3:, 3:] - K[3:, :3] @ np.linalg.solve(KA, K[:3, 3:])}
        eta = 1.0 / np.linalg.eigvalsh(KA)[-1]
        runs[n] = pdlt.sample_trained(net, XA, y, XD, count, seed=n, lambda_b=lb, lambda_W=lw, eta=eta, steps=200,
                                      progress=False)
        assert runs[n].diverged == 0
        assert np.max(np.abs(runs[n].train_residual.mean)) < 1e-6
        # linear in the trained parameters: the NTK does not move and the frozen prediction is exact
        assert np.max(np.abs(runs[n].ntk_change.mean)) < 1e-12
        assert np.max(np.abs(runs[n].frozen_shift.mean)) < 1e-9
    _check_limit(runs[512], runs[64], want, 512, 64, {"mean": np.max(np.abs(y)), "cov": np.max(np.diag(K)[3:])})


def _small():
    return pdlt.MLP("tanh", (3, 6, 2), C_W=1.4, C_b=0.2)


Y2 = np.array([[0.5, -0.3], [1.0, 0.2], [-0.6, 0.9]])
KW = dict(lambda_b=[0.5, 0.2], lambda_W=1.1, eta=0.3, steps=12, batches=4, progress=False)


def test_chunk_invariance_resume_and_files(tmp_path):
    """Two chunk sizes give the same sums; an interrupted run (a callback's KeyboardInterrupt counts as SIGINT)
    resumed from its checkpoint equals the uninterrupted one; save/load round-trips; a checkpoint of another
    step size is refused; at t = 0 network s is network s of the weights sampler (and of sample_ntk)."""
    net = _small()
    a = pdlt.sample_trained(net, XA, Y2, XD, 24, seed=7, chunk_size=5, **KW)
    b = pdlt.sample_trained(net, XA, Y2, XD, 24, seed=7, chunk_size=16, **KW)
    np.testing.assert_allclose(a.state.sums, b.state.sums, rtol=1e-12, atol=1e-12 * np.max(np.abs(a.state.sums)))
    assert np.array_equal(a.state.counts, b.state.counts)
    cfg = a.config
    assert cfg["kind"] == "train" and cfg["eta"] == 0.3 and cfg["steps"] == 12 and cfg["batch_size"] is None
    assert cfg["lambda_b"] == [0.5, 0.2] and cfg["x_train"] == XA.tolist() and cfg["y_train"] == Y2.tolist()
    # t = 0: network s is network s of the weights sampler (its outputs give every network's initial loss)
    zL = pdlt.montecarlo.sample_layers(net, XA, 24, seed=7, method="weights")[-1]          # (24, n_L, N_A)
    loss0 = 0.5 * np.sum((np.swapaxes(zL, 1, 2) - Y2) ** 2, axis=(1, 2))
    np.testing.assert_allclose(a.loss.mean[0], loss0.mean(), rtol=1e-12)

    ck = tmp_path / "train.npz"

    def stop(done, total):
        if done >= 10:
            raise KeyboardInterrupt

    part = pdlt.sample_trained(net, XA, Y2, XD, 24, seed=7, chunk_size=5, checkpoint=ck, callback=stop,
                               resume_hint=False, **KW)
    assert not part.complete and part.interrupted == "SIGINT" and part.n_samples == 10
    assert [c.kind for c in part.caveats] == ["incomplete"]
    full = pdlt.sample_trained(net, XA, Y2, XD, 24, seed=7, chunk_size=5, checkpoint=ck, **KW)
    assert full.complete and full.n_samples == 24
    np.testing.assert_allclose(full.state.sums, a.state.sums, rtol=1e-12, atol=1e-12 * np.max(np.abs(a.state.sums)))
    loaded = pdlt.montecarlo.load(ck)
    assert isinstance(loaded, pdlt.TrainedMC) and loaded.kind == "train"
    np.testing.assert_array_equal(loaded.cov.mean, full.cov.mean)
    path = full.save(tmp_path / "saved")
    again = pdlt.TrainedMC.load(path)
    np.testing.assert_array_equal(again.mean.stderr, full.mean.stderr)
    assert list(again.loss_steps) == list(full.loss_steps)
    # resume= with a result of this run continues it; other configurations are refused
    more = pdlt.sample_trained(net, XA, Y2, XD, 30, seed=7, chunk_size=5, resume=full, **KW)
    assert more.n_samples == 30
    with pytest.raises(CheckpointError, match="eta"):
        pdlt.sample_trained(net, XA, Y2, XD, 30, seed=7, chunk_size=5, checkpoint=ck, **{**KW, "eta": 0.31})
    with pytest.raises(CheckpointError, match="x_test"):
        pdlt.sample_trained(net, XA, Y2, XD[:1], 30, seed=7, chunk_size=5, checkpoint=ck, **KW)
    with pytest.raises(ParameterError, match="TrainedMC") as err:
        pdlt.sample_trained(net, XA, Y2, XD, 30, seed=7, resume=loaded.state, **KW)
    assert err.value.setting == "resume"


def test_sgd_with_the_whole_training_set_is_full_batch_gd():
    """batch_size = N_A runs the minibatch code path (a permutation of all training inputs, weight N_A/k = 1):
    the same sums as full-batch GD (smaller batches: test_one_network_equals_plain_gradient_descent)."""
    net = _small()
    full = pdlt.sample_trained(net, XA, Y2, XD, 16, seed=3, **KW)
    sgd = pdlt.sample_trained(net, XA, Y2, XD, 16, seed=3, batch_size=3, **KW)
    np.testing.assert_allclose(sgd.state.sums, full.state.sums, rtol=1e-13, atol=1e-13)
    assert sgd.config["batch_size"] == 3 and sgd.config["fingerprint"] != full.config["fingerprint"]


def test_diverged_networks_are_counted_not_averaged():
    """Near the stability limit 2/lambda_max(Theta~) of a narrow network some networks (those whose NTK is
    large) diverge: they are counted, every estimate stays finite and averages the others only (the valid count
    per batch enters the jackknife). Some networks that trained have a frozen-NTK prediction that blows up: they
    stay in every estimate but frozen_shift. Far above the limit every network diverges: DivergentFlowError
    naming eta."""
    net = pdlt.MLP("tanh", (3, 4, 1), C_W=1.5, C_b=0.1)
    y = np.array([1.0, -2.0, 1.6])
    Th = pdlt.ntk(net, np.concatenate([XA, XD])).Theta[-1]
    limit = 2.0 / np.linalg.eigvalsh(Th[:3, :3])[-1]
    kw = dict(steps=400, batches=8, progress=False)
    res = pdlt.sample_trained(net, XA, y, XD, 200, seed=1, eta=1.6 * limit, **kw)
    assert 20 < res.diverged < 180 and res.frozen_unstable > 0
    assert res.loss.mean[-1] < 1e-2 * res.loss.mean[0]          # the valid ones converged
    assert res.n_valid + res.diverged == 200
    assert {c.kind for c in res.caveats} == {"diverged", "frozen_unstable"}
    for name in ("mean", "cov", "train_residual", "frozen_shift", "loss", "ntk0", "ntk_change"):
        e = getattr(res, name)
        assert np.all(np.isfinite(e.mean)) and np.all(np.isfinite(e.stderr)), name
    # the estimates are those of the valid networks alone: recompute two means from the per-batch sums
    lay = train_layout(res.spec)
    sums = res.state.sums[:, 0, :]
    np.testing.assert_allclose(res.mean.mean.ravel(), sums[:, lay["z"][0]].sum(0) / res.n_valid, rtol=1e-12)
    nf = res.n_valid - res.frozen_unstable
    np.testing.assert_allclose(res.frozen_shift.mean.ravel(), sums[:, lay["fshift"][0]].sum(0) / nf, rtol=1e-12)
    with pytest.raises(DivergentFlowError, match="eta"):
        pdlt.sample_trained(net, XA, y, XD, 200, seed=1, eta=50 * limit, **kw)


def test_bad_input():
    net = _small()

    def setting(**kw):
        args = dict(net=net, x_train=XA, y_train=Y2, x_test=XD, n_samples=8, **{**KW, "batches": 2})
        args.update(kw)
        with pytest.raises(ParameterError) as err:
            pdlt.sample_trained(**args)
        return err.value.setting

    assert setting(y_train=Y2[:, :1]) == "y_train"
    assert setting(y_train=Y2[:2]) == "y_train"
    assert setting(y_train=np.array([[np.nan, 0.0]] * 3)) == "y_train"
    assert setting(x_train=XA[:, :2]) == "x_train"
    assert setting(x_test=np.ones((2, 4))) == "x_test"
    for bad in (0.0, -0.1, float("inf"), float("nan"), "1"):
        assert setting(eta=bad) == "eta"
    for bad in (-1, 2.5, "3"):
        assert setting(steps=bad) == "steps"
    for bad in (0, 4, 1.5):
        assert setting(batch_size=bad) == "batch_size"
    assert setting(record_every=0) == "record_every"
    assert setting(lambda_W=-1.0) == "lambda_W"
    assert setting(net=pdlt.MLP("tanh", (3, 6, 6), gamma=0.5)) == "gamma"
    assert setting(net="mlp") == "net"
    # one output: y of shape (N_A,) is accepted
    res = pdlt.sample_trained(pdlt.MLP("tanh", (3, 6, 1)), XA, [0.1, 0.2, 0.3], XD, 4, batches=2, eta=0.1, steps=0,
                              progress=False)
    assert res.mean.shape == (2, 1) and list(res.loss_steps) == [0]
    assert np.all(res.ntk_change.mean == 0) and np.all(res.frozen_shift.mean == 0)


@pytest.mark.slow
def test_device_count_invariance(tmp_path):
    """Two host devices (XLA_FLAGS in a subprocess) give the one-device sums of a training run to round-off."""
    import os
    import subprocess
    import sys
    import textwrap

    one = pdlt.sample_trained(_small(), XA, Y2, XD, 40, seed=4, chunk_size=8, **KW)
    out = tmp_path / "two.npz"
    code = textwrap.dedent(f"""
        import jax, numpy as np, pdlt
        assert len(jax.devices()) == 2, jax.devices()
        XA = np.array({XA.tolist()}); XD = np.array({XD.tolist()}); Y2 = np.array({Y2.tolist()})
        r = pdlt.sample_trained(pdlt.MLP("tanh", (3, 6, 2), C_W=1.4, C_b=0.2), XA, Y2, XD, 40, seed=4, chunk_size=8,
                                **{KW!r})
        assert len(r.info["devices"]) == 2
        r.save({str(out)!r})
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = pdlt.montecarlo.load(out)
    np.testing.assert_allclose(two.state.sums, one.state.sums, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(two.cov.mean, one.cov.mean, rtol=1e-10, atol=1e-13)

"""The trained ensemble (pdlt.train_prediction): infinite width against closed forms written here and against the
NNGP posterior; the O(1/n) mean against the one-training-point results of the physics reference (derived and
checked by an independent explicit-weight Monte Carlo there); the two algorithms for the dynamical response
against each other; bad input. Monte Carlo of trained networks: tests/test_training_validation.py."""

import math
import warnings

import numpy as np
import pytest
from scipy.linalg import expm

import pdlt
from pdlt.errors import ParameterError, SingularKernelError
from pdlt.theory import training as tr

# the reference's hyperparameters (tanh, C_W = 1.2, C_b = 0.1, lambda_b = 0.7, lambda_W = 1.3, L = 3)
REF = dict(C_W=1.2, C_b=0.1)
RATES = (0.7, 1.3)


def _random_dyn(seed=0, N=5, nA=3):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N))
    Th = A @ A.T + N * np.eye(N)
    st = tr._Stats(Theta=Th, Theta1=None, K=None, C=None, Pz=None, ddI=rng.normal(size=(N,) * 4),
                   ddII=rng.normal(size=(N,) * 4))
    return tr._dyn(st, np.arange(nA)), rng


def test_fully_trained_response_closed_form_equals_iterating_the_steps():
    """Two algorithms for the same first-order dynamics: mode sums (t = inf) and 4000 explicit GD steps."""
    dyn, rng = _random_dyn()
    eps, dH0 = rng.normal(size=(4, 3)), rng.normal(size=(4, 5, 5, 3))
    eta = 0.7 / np.linalg.eigvalsh(dyn.Theta[:3, :3])[-1]
    z1, h1 = tr._response_infinite(dyn, eps, dH0, eta, False)
    z2, h2 = tr._response_steps(dyn, eps, dH0, eta, 4000)
    assert np.abs(z1).max() > 1e-3 and np.abs(h1).max() > 1e-2
    np.testing.assert_allclose(z2, z1, rtol=0, atol=1e-12 * np.abs(z1).max())
    np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-12 * np.abs(h1).max())


def test_gradient_flow_for_a_finite_time():
    """Three algorithms: the closed-form flow integrals at time t against (i) GD iterated with step e for t/e steps
    (the error falls like e) and (ii) the fully trained flow as t grows."""
    dyn, rng = _random_dyn(2)
    eps, dH0 = rng.normal(size=(3, 3)), rng.normal(size=(3, 5, 5, 3))
    zf, hf = tr._response_flow(dyn, eps, dH0, 1.0, 0.3)
    errs = [np.abs(tr._response_steps(dyn, eps, dH0, e, int(round(0.3 / e)))[0] - zf).max() for e in (1e-3, 1e-4)]
    assert np.abs(zf).max() > 1e-2 and errs[0] < 1e-2 * np.abs(zf).max() and 8.0 < errs[0] / errs[1] < 12.0
    zi, hi = tr._response_infinite(dyn, eps, dH0, 1.0, True)
    z_late, h_late = tr._response_flow(dyn, eps, dH0, 1.0, 100.0)
    np.testing.assert_allclose(z_late, zi, rtol=0, atol=1e-12 * np.abs(zi).max())
    np.testing.assert_allclose(h_late, hi, rtol=0, atol=1e-12 * np.abs(hi).max())
    # eta only sets the unit of time
    z2, _ = tr._response_flow(dyn, eps, dH0, 2.0, 0.15)
    np.testing.assert_allclose(z2, zf, rtol=1e-12, atol=1e-15)


def test_gradient_descent_tends_to_gradient_flow_linearly_in_the_step_size():
    dyn, rng = _random_dyn(1)
    eps, dH0 = rng.normal(size=(3, 3)), rng.normal(size=(3, 5, 5, 3))
    zf, hf = tr._response_infinite(dyn, eps, dH0, 1.0, True)
    lmax = np.linalg.eigvalsh(dyn.Theta[:3, :3])[-1]
    errs = [np.abs(tr._response_infinite(dyn, eps, dH0, e / lmax, False)[0] - zf).max() for e in (1e-2, 1e-3)]
    assert errs[0] > 0 and 8.0 < errs[0] / errs[1] < 12.0      # O(eta)


@pytest.fixture(scope="module")
def one_point():
    net = pdlt.MLP("tanh", (3, 64, 64, 1), **REF)
    return pdlt.train_prediction(net, [[1.0, 0.4, -0.3]], [2.0], [[0.6, -0.3, -0.8]], *RATES, eta=1.0, flow=True)


def test_one_training_point_feature_learning_shift_matches_the_reference(one_point):
    """An independent one-point derivation (derivations/README.md section 19, "Checks"): n E[z_beta(inf) -
    z_beta^frozen] = +0.5082 (Monte Carlo extrapolated there: 0.471(30)); here it is the dNTK + ddNTK part of the
    general multi-input result."""
    val = float((one_point.pieces["dntk"] + one_point.pieces["ddntk"])[0, 0])
    assert abs(val - 0.5082) < 2e-4


@pytest.mark.parametrize("y, ref", [(0.0, 0.598), (1.0, -1.833)])
def test_one_training_point_ntk_change_matches_the_reference(y, ref):
    """The independent one-point result (derivations/README.md section 19): n E[H(inf) - H(0)] = -2(P + 2Q)/Theta
    + (3R + 2S + 2T + 2U)(K + y^2)/Theta^2 (K^(1) = 1)."""
    net = pdlt.MLP("tanh", (1, 64, 64, 1), **REF)
    tp = pdlt.train_prediction(net, [[math.sqrt(0.75)]], [y], [[0.3]], *RATES, eta=1.0, flow=True)
    assert abs(tp.ntk_change[0, 0] - ref) < 1.5e-3


def test_one_training_point_frozen_part_matches_the_closed_form(one_point):
    """E[H_ba / H_aa] y to O(1/n) (the one-point closed form of derivations/README.md section 19), from the NTK
    statistics directly."""
    st = pdlt.ntk(one_point.net, np.concatenate([one_point.x_train, one_point.x_test]), *RATES).statistics
    Th, T1, A, B = st.Theta[-1], st.Theta1[-1], st.A[-1], st.B[-1]
    a, b, y = 0, 1, 2.0
    th = Th[a, a]
    expect = y * (T1[b, a] / th - Th[b, a] * T1[a, a] / th**2 - (A[b, a, a, a] + 2 * B[b, a, a, a]) / th**2
                  + Th[b, a] * (A[a, a, a, a] + 2 * B[a, a, a, a]) / th**3)
    got = one_point.pieces["Theta1"] + one_point.pieces["ntk_fluctuation"]
    assert abs(got[0, 0] - expect) < 1e-10 * abs(expect)


def test_fully_trained_correction_is_the_limit_of_many_steps():
    net = pdlt.MLP("tanh", (2, 32, 32, 1), C_W=1.5, C_b=0.05)
    xa, ya, xb = [[1.0, 0.2], [-0.4, 0.9]], [0.5, -0.3], [[0.3, 0.3]]
    inf = pdlt.train_prediction(net, xa, ya, xb, 0.5, 1.0, eta=0.4)
    fin = pdlt.train_prediction(net, xa, ya, xb, 0.5, 1.0, eta=0.4, steps=3000)
    for k in inf.pieces:
        np.testing.assert_allclose(fin.pieces[k], inf.pieces[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fin.ntk_change, inf.ntk_change, rtol=1e-9, atol=1e-12)
    early = pdlt.train_prediction(net, xa, ya, xb, 0.5, 1.0, eta=0.4, steps=3)
    assert np.abs(early.mean_correction - inf.mean_correction).max() > 1e-3


def test_frechet_derivatives_match_finite_differences():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 4))
    X = A @ A.T + 4 * np.eye(4)
    E = rng.normal(size=(4, 4))
    E = E + E.T
    for steps, flow in ((None, False), (7, False), (2.5, True)):
        d1, d2 = tr._frechet(X, E[None], 0.05, steps, flow)
        h = 1e-4
        g = [tr.g_t((X + s * h * E)[None], 0.05, steps, flow)[0] for s in (-1, 0, 1)]
        np.testing.assert_allclose(d1[0], (g[2] - g[0]) / (2 * h), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(2 * d2[0], (g[2] - 2 * g[1] + g[0]) / h**2, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- infinite width


def _kernels(net, x, lb, lw):
    return pdlt.ntk(net, x, lb, lw).Theta[-1], pdlt.kernel_flow(net, x).K[-1]


@pytest.mark.parametrize("steps, flow", [(5, False), (40, False), (None, False), (0.7, True), (None, True)])
def test_infinite_width_mean_and_covariance_against_the_eigenbasis(steps, flow):
    net = pdlt.MLP("gelu", (2, 16, 16, 1), C_W=1.7, C_b=0.1)
    xa = np.array([[1.0, 0.0], [0.3, 0.8], [-0.6, 0.4]])
    xb = np.array([[0.5, 0.5], [-1.0, 0.2]])
    y = np.array([[0.3], [-0.2], [0.9]])
    eta = 0.3
    tp = pdlt.train_prediction(net, xa, y, xb, 0.2, 1.0, eta=eta, steps=steps, flow=flow)
    Th, K = _kernels(net, np.concatenate([xa, xb]), 0.2, 1.0)
    th, U = np.linalg.eigh(Th[:3, :3])
    if steps is None:
        f = 1.0 / th
    elif flow:
        f = (1.0 - np.exp(-eta * th * steps)) / th
    else:
        f = (1.0 - (1.0 - eta * th) ** steps) / th
    g = U @ np.diag(f) @ U.T
    np.testing.assert_allclose(tp.mean, Th[3:, :3] @ g @ y, rtol=1e-12, atol=1e-14)
    cov = K[3:, 3:] - Th[3:, :3] @ g @ K[:3, 3:] - K[3:, :3] @ g @ Th[:3, 3:] + Th[3:, :3] @ g @ K[:3, :3] @ g @ Th[:3, 3:]
    np.testing.assert_allclose(tp.cov, cov, rtol=1e-11, atol=1e-13)


def test_gradient_flow_as_an_ode():
    """dz/dt = -eta Theta_dA (z_A - y), integrated by the matrix exponential of the joint linear system."""
    net = pdlt.MLP("tanh", (2, 8, 8, 1))
    xa, y, xb = np.array([[1.0, 0.0], [0.2, 0.7]]), np.array([0.4, -0.1]), np.array([[0.5, 0.5]])
    tp = pdlt.train_prediction(net, xa, y, xb, 1.0, 1.0, eta=0.8, steps=1.3, flow=True)
    Th, _ = _kernels(net, np.concatenate([xa, xb]), 1.0, 1.0)
    # state (z_A, z_B, 1): the mean starts at 0
    Msys = np.zeros((4, 4))
    Msys[:3, :2] = -0.8 * Th[:, :2]
    Msys[:3, 3] = 0.8 * Th[:, :2] @ y
    z = expm(Msys * 1.3) @ np.array([0, 0, 0, 1.0])
    assert abs(tp.mean[0, 0] - z[2]) < 1e-12


def test_last_layer_training_with_matched_rates_is_the_nngp_posterior():
    """lambda = 0 below L and lambda_b/lambda_W = C_b/C_W: Theta = (lambda_W/C_W) K, so the fully trained ensemble is
    the noiseless posterior (pdlt.posterior, an independent code path: conditioning, not training)."""
    C_W, C_b = 1.6, 0.2
    net = pdlt.MLP("tanh", (2, 20, 20, 2), C_W=C_W, C_b=C_b)
    xa = np.array([[1.0, 0.0], [0.3, 0.8], [-0.6, 0.4]])
    xb = np.array([[0.5, 0.5], [-1.0, 0.2]])
    y = np.array([[0.3, 1.0], [-0.2, 0.1], [0.9, -0.5]])
    lw = (0.0, 0.0, 0.8)
    lb = (0.0, 0.0, 0.8 * C_b / C_W)
    tp = pdlt.train_prediction(net, xa, y, xb, lb, lw, eta=0.5)
    post = pdlt.posterior(net, xa, y, xb, noise_var=0.0)
    np.testing.assert_allclose(tp.mean, post.mean_infinite, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tp.cov, post.cov_infinite, rtol=1e-9, atol=1e-11)
    # and training every layer does not give the posterior
    other = pdlt.train_prediction(net, xa, y, xb, 0.5, 1.0, eta=0.3)
    assert np.abs(other.mean - post.mean_infinite).max() > 1e-3


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_input_names_the_setting():
    net = pdlt.MLP("tanh", (2, 8, 8, 1))
    xa, y, xb = [[1.0, 0.0], [0.2, 0.7]], [0.4, -0.1], [[0.5, 0.5]]
    Th = pdlt.ntk(net, np.array(xa), 1.0, 1.0).Theta[-1]
    limit = 2.0 / np.linalg.eigvalsh(Th)[-1]
    with pytest.raises(ParameterError, match="stability limit") as err:
        pdlt.train_prediction(net, xa, y, xb, eta=1.01 * limit)
    assert err.value.setting == "eta" and f"{limit:.6g}" in str(err.value)
    assert pdlt.train_prediction(net, xa, y, xb, eta=0.99 * limit).eta_max == pytest.approx(limit, rel=1e-12)
    for kw, setting in ((dict(eta=-1.0), "eta"), (dict(eta=float("nan")), "eta"), (dict(eta=0.1, steps=-2), "steps"),
                        (dict(eta=0.1, steps=2.5), "steps"), (dict(eta=0.1, flow="yes"), "flow")):
        with pytest.raises(ParameterError) as err:
            pdlt.train_prediction(net, xa, y, xb, **kw)
        assert err.value.setting == setting
    with pytest.raises(ParameterError) as err:
        pdlt.train_prediction(net, xa, [[1.0, 2.0, 3.0]], xb, eta=0.1)
    assert err.value.setting == "y_train"
    with pytest.raises(ParameterError) as err:
        pdlt.train_prediction(net, [[1.0, 0.0, 3.0]], [0.1], xb, eta=0.1)
    assert err.value.setting == "x_train"
    with pytest.raises(SingularKernelError, match="steps"):
        pdlt.train_prediction(net, [[1.0, 0.0], [1.0, 0.0]], [0.1, 0.2], xb, eta=0.1)
    # duplicates are fine for a finite number of steps (g is a polynomial of the training block)
    dup = pdlt.train_prediction(net, [[1.0, 0.0], [1.0, 0.0]], [0.1, 0.1], xb, eta=0.1, steps=10)
    assert np.all(np.isfinite(dup.mean))
    big = pdlt.train_prediction(net, [[np.cos(t), np.sin(t)] for t in np.linspace(0, 3, 9)], [0.1] * 9,
                                [[0.1, 0.1]], eta=0.01)
    with pytest.raises(ParameterError) as err:
        big.mean_correction
    assert err.value.setting == "x_train"


def test_test_inputs_in_groups_equal_the_joint_computation():
    """Past MAX_INPUTS the test inputs are taken in groups; each mean needs only its own test index. A test input
    equal to a training input is interpolated (its O(1/n) mean is 0 after full training)."""
    net = pdlt.MLP("tanh", (2, 16, 16, 1), C_W=1.4, C_b=0.1)
    xa, ya = np.array([[1.0, 0.2], [-0.4, 0.9], [0.5, -0.7]]), np.array([0.5, -0.3, 0.8])
    xb = np.array([[0.3, 0.3], [-0.8, -0.1], [1.0, 0.2], [0.2, 1.1], [0.6, 0.6]])
    many = pdlt.train_prediction(net, xa, ya, xb, 0.5, 1.0, eta=0.3)
    assert many.mean_correction.shape == (5, 1)
    for j in range(5):
        one = pdlt.train_prediction(net, xa, ya, xb[j:j + 1], 0.5, 1.0, eta=0.3)
        np.testing.assert_allclose(many.mean_correction[j], one.mean_correction[0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(many.ntk_change_cross[j], one.ntk_change_cross[0], rtol=1e-10, atol=1e-13)
    assert abs(many.mean_correction[2, 0]) < 1e-10 and abs(many.mean[2, 0] - ya[0]) < 1e-10


def test_first_order_response_equals_exact_training_of_a_cubic_model():
    """An independent oracle for the dynamics: a model cubic in its parameters, z(theta) = c + J theta +
    theta A theta / 2 + B[theta^3] / 6, has exactly known NTK, dNTK and ddNTKs at theta = 0. Gradient descent on it is
    run exactly (nonlinear); its deviation from the frozen-NTK prediction, divided by the size tau of A and B, tends
    to the first-order response. Part of A maps the NTK directions out of their span: it has no dNTK but an
    O(tau) ddNTK-II, so each of dH, ddI and ddII is tested (dropping any one misses by > 5%)."""
    rng = np.random.default_rng(5)
    P, N, nA = 12, 4, 2
    J = rng.normal(size=(N, P)) / np.sqrt(P)
    c, y = rng.normal(size=N), rng.normal(size=nA)
    Ub = np.linalg.qr(J.T)[0]
    Wb = np.linalg.qr(np.concatenate([J.T, rng.normal(size=(P, P - N))], 1))[0][:, N:]
    G = rng.normal(size=(N, P, P))
    G = G + G.transpose(0, 2, 1)
    M = 2.0 * np.einsum("pa,Iab,qb->Ipq", Wb, rng.normal(size=(N, P - N, N)), Ub)
    B = rng.normal(size=(N, P, P, P))
    B = sum(B.transpose(0, *p) for p in ((1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1))) / 6
    Th = J @ J.T
    eta = 1.0 / np.linalg.eigvalsh(Th[:nA, :nA])[-1]
    tr_ = np.arange(nA)
    tau = 1e-5
    A, Bt = tau * G + np.sqrt(tau) * (M + M.transpose(0, 2, 1)), tau * B

    def z(th):
        return c + J @ th + 0.5 * np.einsum("p,Ipq,q->I", th, A, th) + np.einsum("Ipqr,p,q,r->I", Bt, th, th, th) / 6

    def grad(th):
        return J + np.einsum("Ipq,q->Ip", A, th) + 0.5 * np.einsum("Ipqr,q,r->Ip", Bt, th, th)

    dH = np.einsum("Jp,Ipq,Kq->IJK", J, A, J)
    ddI = np.einsum("Ipqr,Jp,Kq,Lr->IJKL", Bt, J, J, J)
    ddII = np.einsum("Ipq,Kq,Jpr,Lr->IJKL", A, J, A, J)
    eps0 = (c[:nA] - y)[None]
    for T in (4, 25, None):
        th = np.zeros(P)
        for _ in range(400 if T is None else T):
            th = th - eta * grad(th)[:nA].T @ (z(th)[:nA] - y)
        frozen = c - Th[:, :nA] @ tr.g_t(Th[:nA, :nA][None], eta, T, False)[0] @ (c[:nA] - y)
        exact = z(th) - frozen
        errors = {}
        for name, (a, b, d) in {"all": (1, 1, 1), "dH": (0, 1, 1), "ddI": (1, 0, 1), "ddII": (1, 1, 0)}.items():
            st = tr._Stats(Theta=Th, Theta1=None, K=None, C=None, Pz=None, ddI=b * ddI, ddII=d * ddII)
            resp = tr._response(tr._dyn(st, tr_), eps0, (a * dH[:, :, tr_])[None], eta, T, False)[0][0]
            errors[name] = np.abs(resp - exact).max() / np.abs(exact).max()
        assert errors["all"] < 1e-3, (T, errors)
        assert min(errors["dH"], errors["ddI"], errors["ddII"]) > 0.05, (T, errors)


def test_tiny_step_size_is_gradient_flow_to_round_off():
    """The fully trained GD response at eta * lambda_max = 1e-14 equals gradient flow (no cancellation in
    1 - rho_k rho_l)."""
    net = pdlt.MLP("tanh", (2, 32, 32, 1), C_W=1.5, C_b=0.05)
    args = ([[1.0, 0.2], [-0.4, 0.9]], [0.5, -0.3], [[0.3, 0.3]], 0.5, 1.0)
    flow = pdlt.train_prediction(net, *args, eta=1.0, flow=True)
    gd = pdlt.train_prediction(net, *args, eta=1e-14 * flow.eta_max if np.isfinite(flow.eta_max) else 1e-14)
    for k in flow.pieces:
        np.testing.assert_allclose(gd.pieces[k], flow.pieces[k], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gd.ntk_change, flow.ntk_change, rtol=1e-9, atol=1e-13)


def test_last_layer_training_against_the_metric_expansion():
    """Only the last layer trained, lambda_b/lambda_W = C_b/C_W: the network is linear in its trained parameters
    with NTK (lambda_W/C_W) G^ (the stochastic metric), so dNTK = ddNTKs = 0, the NTK does not move, and the fully
    trained mean is E[G^_dA G^~^{-1}] y: to O(1/n), F(K) + (dF . G1 + 1/2 d^2F : V)/n with G1, V from
    pdlt.finite_width and the derivatives of F by JAX autodiff (an independent algorithm for the frozen part's
    block-matrix Frechet derivatives). With two outputs each column is its own one-output problem."""
    import jax
    import jax.numpy as jnp

    C_W, C_b = 1.5, 0.2
    net = pdlt.MLP("tanh", (2, 12, 12, 2), C_W=C_W, C_b=C_b)
    xa = np.array([[1.0, 0.2], [-0.4, 0.9], [0.5, -0.6]])
    xb = np.array([[0.3, 0.3], [-0.9, 0.1]])
    y = np.array([[0.5, -0.2], [-0.3, 0.8], [0.9, 0.4]])
    lw = (0.0, 0.0, 0.7)
    lb = (0.0, 0.0, 0.7 * C_b / C_W)
    tp = pdlt.train_prediction(net, xa, y, xb, lb, lw, eta=0.3)
    assert np.abs(tp.pieces["dntk"]).max() < 1e-13 and np.abs(tp.pieces["ddntk"]).max() < 1e-13
    assert np.abs(tp.ntk_change).max() < 1e-13
    fw = pdlt.finite_width(net, np.concatenate([xa, xb]))
    K, G1, V = fw.K[-1], fw.G1[-1], fw.V[-1]
    with jax.enable_x64(True):
        def F(G):
            return G[3:, :3] @ jnp.linalg.solve(G[:3, :3], jnp.asarray(y))

        J = np.asarray(jax.jacfwd(F)(jnp.asarray(K)))
        H = np.asarray(jax.hessian(F)(jnp.asarray(K)))
    want = np.einsum("dixy,xy->di", J, G1) + 0.5 * np.einsum("dixyuv,xyuv->di", H, V)
    got = tp.mean_correction
    assert np.abs(want).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    for i in range(2):
        one = pdlt.train_prediction(pdlt.MLP("tanh", (2, 12, 12, 1), C_W=C_W, C_b=C_b), xa, y[:, i], xb, lb, lw,
                                    eta=0.3)
        np.testing.assert_allclose(got[:, i], one.mean_correction[:, 0], rtol=1e-10, atol=1e-13)


def test_long_runs_and_extreme_input():
    net = pdlt.MLP("tanh", (2, 8, 8, 1))
    xa, y, xb = [[1.0, 0.0], [0.2, 0.7]], [0.4, -0.1], [[0.5, 0.5]]
    eta = 0.5 * tr.stability_limit(net, xa)
    converged = pdlt.train_prediction(net, xa, y, xb, eta=eta, steps=10**7)
    np.testing.assert_allclose(converged.mean_correction, pdlt.train_prediction(net, xa, y, xb, eta=eta).mean_correction,
                               rtol=1e-12, atol=1e-15)
    slow = pdlt.train_prediction(net, xa, y, xb, eta=1e-9, steps=10**6)
    with pytest.raises(ParameterError, match="not converged") as err:
        slow.mean_correction
    assert err.value.setting == "steps"
    with pytest.raises(ParameterError) as err:
        pdlt.train_prediction(net, xa, y, xb, eta=1e300, steps=1.0, flow=True)
    assert err.value.setting == "eta"
    # a step so small that the fully trained mode sums overflow names eta (it blamed the targets), and no numpy
    # warning comes first
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ParameterError) as err:
            pdlt.train_prediction(net, xa, y, xb, eta=1e-300).mean_correction
    assert err.value.setting == "eta"
    huge = pdlt.train_prediction(net, xa, [1e200, 0.1], xb, eta=eta)
    with pytest.raises(ParameterError) as err:
        huge.mean_correction
    assert err.value.setting == "y_train"
    many = pdlt.train_prediction(pdlt.MLP("tanh", (2, 8, 8, 30)), xa, np.zeros((2, 30)), xb, eta=0.01)
    with pytest.raises(ParameterError, match="outputs") as err:
        many.mean_correction
    assert err.value.setting == "y_train"


def test_truncation_caveat_where_the_trained_mean_correction_is_not_small():
    """n = 4 with targets of 3 prior standard deviations: the O(1/n) part of the trained mean is 2.5 times its
    infinite-width part (a TruncationWarning says so, with the ratio); at n = 64 and small targets it is 0.7% of it
    and nothing is said."""
    import warnings

    from pdlt.errors import TruncationWarning

    xa, xb = [[1.0, 0.2], [-0.3, 0.8]], [[0.5, 0.5]]
    for n, y, flagged in ((4, 3.0, True), (64, 0.3, False)):
        net = pdlt.MLP("tanh", (2, n, n, n, 1), C_W=1.0)
        tp = pdlt.train_prediction(net, xa, [[y], [-y]], xb, eta=0.2)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            corr = tp.mean_correction / tp.n
        ratio = float(np.abs(corr[0, 0]) / max(abs(tp.mean[0, 0]), np.sqrt(tp.cov[0, 0])))
        mine = [w for w in rec if issubclass(w.category, TruncationWarning) and "trained mean" in str(w.message)]
        assert bool(mine) == flagged and bool(tp.caveats) == flagged
        if flagged:
            assert tp.caveats[0].size == pytest.approx(ratio) and ratio > 2
        else:
            assert ratio < 0.01


# ----------------------------------------------------------------------------------------------------------------
# the last layer alone at O(1/n^2) (pdlt.theory.training_nnlo)
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act, steps, tol", [("tanh", None, 2e-7), ("tanh", 7, 2e-8), ("relu", None, 1e-9),
                                             ("relu", 30, 1e-9)])
def test_last_layer_training_to_second_order_carries_the_first_order_terms(act, steps, tol):
    """Only the last layer trained (rates that do not match C_b/C_W, so the NTK is a G + c): the O(1/n^2) expansion's
    leading and 1/n coefficients, through JAX derivatives of h(G) = H_TA g_t(H_AA) y and the metric's cumulants,
    equal the infinite-width mean and the frozen-NTK terms of mean_correction (Frechet derivatives of g_t and the NTK
    statistics Theta1, A, B): two algorithms. ``tol`` (of the largest entry): ReLU's averages over three inputs are
    exact on both sides; tanh's come from two quadratures whose V agree to 1.7e-9 (relative) here, which the
    derivatives of g_t amplify (the fully trained solve's training block has condition number 8)."""
    from pdlt.theory.training_nnlo import trained_mean_nnlo

    crit = pdlt.criticality(act)
    net = pdlt.MLP(act, (3, 16, 16, 16, 2), C_W=crit.C_W, C_b=crit.C_b)
    xa, xb = np.array([[1.0, 0.0, 0.0], [0.2, 0.9, 0.1]]), np.array([[0.6, 0.5, 0.3]])
    y = np.array([[0.6, -0.2], [-0.4, 0.5]])
    tp = pdlt.train_prediction(net, xa, y, xb, (0.0, 0.0, 0.0, 0.4), (0.0, 0.0, 0.0, 1.3), eta=0.3, steps=steps)
    m0, m1, m2 = trained_mean_nnlo(tp)
    np.testing.assert_allclose(m0, tp.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m1, tp.mean_correction, rtol=0, atol=tol * np.abs(m1).max())
    assert np.abs(m1).max() > 1e-3 and np.abs(m2).max() > 1e-3
    np.testing.assert_array_equal(tp.mean_correction2, m2)
    np.testing.assert_allclose(tp.next_order, np.abs(m2) / 16**2, rtol=1e-15)


@pytest.mark.parametrize("steps", [None, 1, 5, 12])
def test_deep_linear_last_layer_training_is_exact_to_second_order(steps):
    """A deep linear network (C_b = 0, lambda_b = 0), one training and one test input: G^_AA = K_AA prod_l chi^2_n/n
    over the L - 1 hidden layers and E[G^_BA | G^_AA] = (K_BA/K_AA) G^_AA (Wishart), so with H = a G the trained
    mean is (K_BA/K_AA) y (1 - E[(1 - eta a G_AA)^t]), a polynomial in G_AA whose moments are E[G^k] =
    K^k (prod_{j<k} (1 + 2j/n))^(L-1): its 1/n and 1/n^2 coefficients exactly. Fully trained: y K_BA/K_AA at every
    width (both coefficients 0)."""
    from numpy.polynomial import polynomial as P

    from pdlt.theory.training_nnlo import trained_mean_nnlo

    C_W, lw, eta, y, hidden = 1.3, 0.9, 0.4, 0.7, 3
    net = pdlt.MLP("linear", (2,) + (10,) * hidden + (1,), C_W=C_W)
    xa, xb = np.array([[1.0, 0.0]]), np.array([[0.6, 0.8]])
    tp = pdlt.train_prediction(net, xa, [y], xb, 0.0, (0.0,) * hidden + (lw,), eta=eta, steps=steps)
    _, m1, m2 = (float(v[0, 0]) for v in trained_mean_nnlo(tp))
    K = pdlt.kernel_flow(net, np.concatenate([xa, xb])).K[-1]
    if steps is None:
        assert abs(m1) < 1e-12 and abs(m2) < 1e-12
        return
    a = lw / C_W
    series = np.zeros(3)                                   # coefficients of 1, 1/n, 1/n^2 of E[(1 - eta a G)^t]
    for k in range(steps + 1):
        moment = np.array([1.0])
        for j in range(k):
            moment = P.polymul(moment, [1.0, 2.0 * j])
        moment = P.polypow(moment, hidden)[:3]
        series[:moment.size] += math.comb(steps, k) * (-eta * a * K[0, 0]) ** k * moment
    exact = -K[1, 0] / K[0, 0] * y * series
    np.testing.assert_allclose([m1, m2], exact[1:], rtol=1e-9, atol=1e-12)
    if steps > 1:
        assert abs(exact[2]) > 1e-3


def test_second_order_trained_mean_refuses_what_it_cannot_compute():
    """Lower layers training (the dNTK and ddNTKs at O(1/n^2), not derived) names lambda_W; more than 4 distinct
    inputs names x_test."""
    net = pdlt.MLP("tanh", (2, 8, 8, 1), C_W=1.2, C_b=0.1)
    xa = [[1.0, 0.0], [0.3, 0.9]]
    tp = pdlt.train_prediction(net, xa, [0.3, -0.2], [[0.6, 0.8]], 0.7, 1.3, eta=0.2)
    with pytest.raises(ParameterError) as err:
        tp.next_order
    assert err.value.setting == "lambda_W"
    many = pdlt.train_prediction(net, xa, [0.3, -0.2], [[0.6, 0.8], [0.1, 0.2], [-0.5, 0.5]], (0, 0, 0.7),
                                 (0, 0, 1.3), eta=0.2)
    with pytest.raises(ParameterError) as err:
        many.mean_correction2
    assert err.value.setting == "x_test"

"""Influence of training datapoints on the posterior (pdlt.theory.influence, pdlt.theory.kernel.kernel_input_jacobian).

Independent checks: the exact forward-mode kernel Jacobian against Richardson differences of the kernel flow; the
infinite-width responses and the 1/n coefficients against coordinate differences of pdlt.posterior; for deep linear
networks against a closed-form chain (K and V of a linear network in closed form, the mean from Yaida's closed form
of derivations/README.md §11.2, differentiated in the input coordinates); exact finite-width identities (a test input
on a training input at noise 0); bad input. The Monte Carlo checks are in tests/montecarlo/test_influence_mc.py.
"""

import warnings

import numpy as np
import pytest

import pdlt
from pdlt.errors import ParameterError, SingularKernelError, TruncationWarning
from pdlt.theory.bayes import posterior_mean_closed_form
from pdlt.theory.kernel import kernel_input_jacobian

XA = np.array([[1.0, 0.2, -0.4], [0.3, -0.8, 0.5]])
XB = np.array([[0.6, -0.3, 0.1], [-0.5, 0.4, 0.9]])
Y = np.array([[0.6], [-0.4]])


def _five_point(f, h):
    a, b, c, d = (f(t) for t in (-2 * h, -h, h, 2 * h))
    return (a - 8 * b + 8 * c - d) / (12 * h)


@pytest.mark.parametrize("act, C_W, C_b, gamma", [("tanh", 1.0, 0.1, 0.0), ("relu", 2.0, 0.0, 0.0),
                                                  ("gelu", 1.3, 0.05, 0.0), ("tanh", 0.6, 0.1, [0, 0.8, 0.8, 0])])
def test_kernel_input_jacobian_against_differences(act, C_W, C_b, gamma):
    x = np.concatenate([XA, XB])
    net = pdlt.MLP(act, (3, 6, 6, 6, 1), C_W=C_W, C_b=C_b, gamma=gamma)
    J = kernel_input_jacobian(net, x, index=[0, 3])
    assert J.shape == (2, 3, 4)
    for p, a in enumerate((0, 3)):
        for k in range(3):
            def row(t):
                xx = x.copy()
                xx[a, k] += t
                return pdlt.kernel_flow(net, xx).K[-1][a]

            np.testing.assert_allclose(J[p, k], _five_point(row, 1e-3), rtol=1e-8, atol=1e-10)


def test_kernel_input_jacobian_zero_input_without_bias():
    """A zero input with C_b = 0 has K_aa = 0 at every layer: its row still responds, at first order only through
    the cross terms (dK_aa = 2 C_W x_a / n_0 = 0)."""
    x = np.array([[0.0, 0.0, 0.0], [0.5, -0.3, 0.8]])
    net = pdlt.MLP("tanh", (3, 5, 5, 1), C_W=1.2, C_b=0.0)
    J = kernel_input_jacobian(net, x, index=[0])
    assert np.all(np.isfinite(J)) and np.all(J[0, :, 0] == 0)

    def row(t, k):
        xx = x.copy()
        xx[0, k] += t
        return pdlt.kernel_flow(net, xx).K[-1][0, 1]

    for k in range(3):
        np.testing.assert_allclose(J[0, k, 1], _five_point(lambda t: row(t, k), 1e-4), rtol=1e-7)


@pytest.mark.parametrize("act, widths, noise", [("tanh", (3, 7, 6, 1), 0.2), ("relu", (3, 8, 8, 8, 1), 0.05)])
def test_responses_are_the_derivatives_of_the_posterior(act, widths, noise):
    """Each response against coordinate differences of pdlt.posterior (whose own expansion is checked in
    test_bayes): the infinite-width parts exactly (forward mode), the 1/n parts through the stencils along the
    span of the inputs (module docstring)."""
    net = pdlt.MLP(act, widths, C_W=1.0 if act == "tanh" else 2.0, C_b=0.1 if act == "tanh" else 0.0)
    inf = pdlt.influence(net, XA, Y, XB, noise_var=noise)

    def post(xa, y):
        p = pdlt.posterior(net, xa, y, XB, noise_var=noise)
        return np.stack([p.mean_infinite[:, 0], p.mean_correction[:, 0], np.diagonal(p.cov_infinite),
                         np.diagonal(p.cov_correction[0, :, 0, :])])

    for a in range(2):
        for k in range(3):
            def fx(t):
                xa = XA.copy()
                xa[a, k] += t
                return post(xa, Y)

            D = _five_point(fx, 1e-3)
            np.testing.assert_allclose(inf.mean_dx_infinite[:, 0, a, k], D[0], rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(inf.mean_dx_correction[:, 0, a, k], D[1], rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(inf.var_dx_infinite[:, a, k], D[2], rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(inf.var_dx_correction[:, 0, a, k], D[3], rtol=1e-6, atol=1e-9)

        def fy(t):
            y = Y.copy()
            y[a, 0] += t
            return post(XA, y)

        D = _five_point(fy, 1e-2)
        np.testing.assert_allclose(inf.mean_dy_infinite[:, a], D[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(inf.mean_dy_correction[:, 0, a, 0], D[1], rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(inf.var_dy_correction[:, 0, a, 0], D[3], rtol=1e-8, atol=1e-11)


def test_position_response_beyond_the_inputs_span():
    """Three inputs in five dimensions: the 1/n position response is assembled from stencils along the
    three-dimensional span of the inputs (rotated off them); it must still equal coordinate differences in all five
    dimensions, and a test input on a training input (no bias) must not break it."""
    rng = np.random.default_rng(7)
    xa = rng.normal(size=(2, 5))
    xb = np.concatenate([rng.normal(size=(1, 5)), xa[:1]])
    net = pdlt.MLP("tanh", (5, 9, 7, 1), C_W=1.1, C_b=0.0)
    inf = pdlt.influence(net, xa, Y, xb, noise_var=0.2)
    assert not any(c.kind == "differencing" for c in inf.caveats)
    for a in range(2):
        for k in range(5):
            def fx(t):
                x = xa.copy()
                x[a, k] += t                 # the test input stays where training input 0 was
                return pdlt.posterior(net, x, Y, xb, noise_var=0.2).mean_correction[:, 0]

            # next to the coincident pair the 1/n averages keep ~1e-10 (condition ~ 1/h^2), divided by h
            np.testing.assert_allclose(inf.mean_dx_correction[:, 0, a, k], _five_point(fx, 1e-3), rtol=1e-4,
                                       atol=1e-7)


def _linear_statistics(x, widths, C_W, C_b):
    """K and V of the last layer of a deep linear network in closed form: K' = C_b + C_W K and
    V' = C_W^2 (K_ac K_bd + K_ad K_bc) + (n_l / n_{l-1}) C_W^2 V (G1 = 0)."""
    n0 = x.shape[1]
    K = C_b + C_W * x @ x.T / n0
    V = np.zeros(K.shape * 2)
    for l in range(1, len(widths) - 1):
        r = widths[l] / widths[l - 1] if l > 1 else 0.0
        V = C_W**2 * (np.einsum("ac,bd->abcd", K, K) + np.einsum("ad,bc->abcd", K, K)) + r * C_W**2 * V
        K = C_b + C_W * K
    return K, V


def test_deep_linear_against_closed_form_chain():
    """The whole chain for a deep linear network with unequal widths: closed-form K, V, the closed-form posterior
    mean, five-point differences in every input coordinate; the 1/n coefficient is exact there (G1 = 0)."""
    widths, C_W, C_b, noise = (3, 9, 5, 7, 2), 1.1, 0.2, 0.1
    y = np.array([[0.6, -0.2], [-0.4, 0.3]])
    net = pdlt.MLP("linear", widths, C_W=C_W, C_b=C_b)
    inf = pdlt.influence(net, XA, y, XB, noise_var=noise)
    n = widths[-2]

    def coef(xa, yy):
        x = np.concatenate([xa, XB])
        K, V = _linear_statistics(x, widths, C_W, C_b)
        m0 = K[2:, :2] @ np.linalg.solve(K[:2, :2] + noise * np.eye(2), yy)
        return n * (posterior_mean_closed_form(K, np.zeros_like(K), V, n, yy, 2, noise) - m0), m0

    for a in range(2):
        for k in range(3):
            def fx(t):
                xa = XA.copy()
                xa[a, k] += t
                return np.stack(coef(xa, y))

            D = _five_point(fx, 1e-3)
            np.testing.assert_allclose(inf.mean_dx_correction[:, :, a, k], D[0], rtol=1e-7, atol=1e-10)
            np.testing.assert_allclose(inf.mean_dx_infinite[:, :, a, k], D[1], rtol=1e-9, atol=1e-12)
        for j in range(2):
            def fy(t):
                yy = y.copy()
                yy[a, j] += t
                return coef(XA, yy)[0]

            np.testing.assert_allclose(inf.mean_dy_correction[:, :, a, j], _five_point(fy, 0.05), rtol=1e-9,
                                       atol=1e-12)
    # at finite width an output's mean responds to the other output's targets; at infinite width it does not
    assert np.abs(inf.mean_dy_correction[:, 0, :, 1]).max() > 1e-3


def test_test_input_on_a_training_input_at_zero_noise():
    """noise_var = 0: every network's posterior mean at a training input is its target and the variance is 0, for
    any width. So d m_b/d y = delta_ab at every order (the 1/n part vanishes) and the variance does not respond."""
    net = pdlt.MLP("tanh", (3, 5, 5, 1), C_W=1.0, C_b=0.1)
    xb = np.concatenate([XA[1:], XB[:1]])
    inf = pdlt.influence(net, XA, Y, xb, noise_var=0.0, wrt=("y",))
    np.testing.assert_allclose(inf.mean_dy_infinite[0], [0.0, 1.0], atol=1e-10)
    assert np.abs(inf.mean_dy_correction[0]).max() < 1e-9 < np.abs(inf.mean_dy_correction[1]).max()
    assert np.abs(inf.var_dy_correction[0]).max() < 1e-9
    with pytest.raises(ParameterError, match="wrt"):
        inf.mean_dx


def test_order_zero_is_cheap_and_exact_for_many_points():
    """Infinite width only: 200 training and 100 test inputs in 20 dimensions, against the direct formula of the
    mean's target response and a difference of the kernel flow for one position response."""
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(200, 20)), rng.normal(size=(100, 20))
    y = rng.normal(size=(200, 1))
    net = pdlt.MLP("relu", (20, 64, 64, 64, 1), C_W=2.0, C_b=0.0)
    inf = pdlt.influence(net, xa, y, xb, noise_var=0.1, order=0)
    K = pdlt.kernel_flow(net, np.concatenate([xa, xb])).K[-1]
    W = np.linalg.solve(K[:200, :200] + 0.1 * np.eye(200), K[:200, 200:]).T
    np.testing.assert_allclose(inf.mean_dy_infinite, W, rtol=1e-8, atol=1e-12)
    assert inf.mean_dx.shape == (100, 1, 200, 20) and inf.mean_dy_correction is None

    def mean7(t):
        x = xa.copy()
        x[7, 3] += t
        Kt = pdlt.kernel_flow(net, np.concatenate([x, xb])).K[-1]
        return Kt[200:, :200] @ np.linalg.solve(Kt[:200, :200] + 0.1 * np.eye(200), y)[:, 0]

    np.testing.assert_allclose(inf.mean_dx[:, 0, 7, 3], _five_point(mean7, 1e-3), rtol=1e-6, atol=1e-9)


def test_truncation_caveat_and_bad_input():
    net = pdlt.MLP("tanh", (3, 3, 3, 1), C_W=1.0, C_b=0.1)
    with pytest.warns(TruncationWarning, match="influence"):
        inf = pdlt.influence(net, XA, 3.0 * Y, XB, noise_var=0.01, wrt="y")
    assert any("influence" in c.message for c in inf.caveats)
    with pytest.raises(ParameterError, match="order"):
        pdlt.influence(net, XA, Y, XB, order=2)
    with pytest.raises(ParameterError, match="wrt"):
        pdlt.influence(net, XA, Y, XB, wrt=("z",))
    # zero targets on a zero input without bias: the stencil step falls back to a unit scale, no NaN
    zero = pdlt.influence(pdlt.MLP("tanh", (2, 6, 6, 1)), [[0.0, 0.0]], [0.0], [[1.0, 0.0]], noise_var=0.1, wrt="y")
    assert np.all(np.isfinite(zero.mean_dy)) and np.all(np.isfinite(zero.var_dy))
    with pytest.raises(ParameterError, match="index"):
        kernel_input_jacobian(net, XA, index=[-1])
    with pytest.raises(ParameterError, match="x_train"):
        pdlt.influence(net, [[np.nan, 0, 0]], [1.0], XB)
    with pytest.raises(ParameterError, match="gamma"):
        pdlt.influence(pdlt.MLP("tanh", (3, 4, 4, 1), gamma=[0, 0.5, 0]), XA, Y, XB)
    with pytest.raises(SingularKernelError, match="noise_var"):
        pdlt.influence(net, np.concatenate([XA, XA[:1]]), np.ones(3), XB, noise_var=0.0)
    # ReLU without bias on parallel training inputs: a rank-1 kernel, singular at zero noise
    relu = pdlt.MLP("relu", (2, 4, 4, 1), C_W=2.0, C_b=0.0)
    with pytest.raises(SingularKernelError, match="noise_var"):
        pdlt.influence(relu, [[1.0, 0.0], [2.0, 0.0]], [0.1, 0.2], [[0.0, 1.0]], noise_var=0.0, order=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # a well-posed call is silent
        pdlt.influence(pdlt.MLP("tanh", (3, 64, 64, 1)), XA, Y, XB, noise_var=0.5, wrt="y")


def test_temperature_sweep():
    """Each temperature is pdlt.influence at that noise; at high temperature the posterior is the prior plus a weak
    linear pull, d m / d y -> K_BA / s^2 (the training block drops out)."""
    net = pdlt.MLP("tanh", (3, 8, 8, 1), C_W=1.0, C_b=0.1)
    sw = pdlt.temperature_sweep(net, XA, Y, XB, [0.01, 0.1, 1e6], wrt="y")
    one = pdlt.influence(net, XA, Y, XB, noise_var=0.1, wrt="y")
    np.testing.assert_allclose(sw.stack("mean_dy")[1], one.mean_dy, rtol=1e-12)
    K = pdlt.kernel_flow(net, np.concatenate([XA, XB])).K[-1]
    np.testing.assert_allclose(sw.stack("mean_dy_infinite")[2] * 1e6, K[2:, :2], rtol=1e-5)
    with pytest.raises(ParameterError, match="noise_vars"):
        pdlt.temperature_sweep(net, XA, Y, XB, [-1.0])
    with pytest.raises(ParameterError, match="response"):
        sw.stack("nothing")


def test_caveats_are_honest_at_symmetric_and_coincident_points():
    """Leading parts that vanish by symmetry or at zero noise give no spurious truncation caveat; a ReLU test input on
    a training input makes the position stencils disagree, and the "differencing" caveat says so under either wrt;
    all-parallel inputs with a repeat are refused (naming wrt); the totals are the parts."""
    net = pdlt.MLP("tanh", (2, 20, 20, 1), C_W=1.0, C_b=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sym = pdlt.influence(net, [[1.0, 0.0]], [0.5], [[0.0, 1.0]], noise_var=0.1)
        pinned = pdlt.influence(net, [[1.0, 0.2], [0.1, 1.0]], [0.3, -0.2], [[1.0, 0.2]], noise_var=0.0, wrt="y")
    assert not sym.caveats and not pinned.caveats
    n = 20
    np.testing.assert_allclose(sym.mean_dx, sym.mean_dx_infinite + sym.mean_dx_correction / n)
    np.testing.assert_allclose(sym.var_dx, sym.var_dx_infinite[:, None] + sym.var_dx_correction / n)
    np.testing.assert_allclose(sym.var_dy, sym.var_dy_correction / n)
    relu = pdlt.MLP("relu", (2, 8, 8, 1), C_W=2.0, C_b=0.1)
    for wrt in (("y", "x"), ("x",)):
        with pytest.warns(pdlt.errors.PdltWarning):
            inf = pdlt.influence(relu, [[1.0, 0.0], [0.2, 1.0]], [0.3, -0.1], [[1.0, 0.0]], noise_var=0.1, wrt=wrt)
        assert any(c.kind == "differencing" for c in inf.caveats), wrt
    with pytest.raises(ParameterError, match="wrt"):
        pdlt.influence(net, [[1.0, 0.0]], [0.3], [[1.0, 0.0]], noise_var=0.1)
    x = np.concatenate([XA, XB])
    tnet = pdlt.MLP("tanh", (3, 6, 6, 1))
    with pytest.raises(ParameterError, match="index"):
        kernel_input_jacobian(tnet, x, index=[])
    with pytest.raises(ParameterError, match="flow"):
        kernel_input_jacobian(tnet, x, flow=pdlt.kernel_flow(tnet, XA))


def _fine_tanh_kernel(x, C_W, C_b, L):
    """The tanh kernel flow with pair averages at quadrature spacing 0.1 (the default is coarser; measured 1e-16
    relative at these kernels against spacing 0.07): an independent, more accurate kernel."""
    from pdlt import gaussian

    d = x.shape[0]
    K = C_b + C_W * x @ x.T / x.shape[1]
    ia, ib = np.triu_indices(d, 1)
    for _ in range(2, L + 1):
        sub = np.empty((ia.size, 2, 2))
        sub[:, 0, 0], sub[:, 1, 1] = K[ia, ia], K[ib, ib]
        sub[:, 0, 1] = sub[:, 1, 0] = K[ia, ib]
        M = np.empty((d, d))
        M[ia, ib] = M[ib, ia] = gaussian.expect(lambda z: np.tanh(z[..., 0]) * np.tanh(z[..., 1]), sub, resolution=0.1)
        M[np.arange(d), np.arange(d)] = gaussian.expect(lambda z: np.tanh(z[..., 0]) ** 2, np.diag(K)[:, None, None],
                                                        resolution=0.1)
        K = C_b + C_W * M
    return K


def test_round_off_caveat_where_the_kernel_accuracy_limits_the_solve():
    """Deep in the ordered phase at zero noise the kernel's structure that the posterior resolves approaches the
    accuracy of its entries. The caveat's estimate (condition number x the kernel's accuracy) must bound the actual
    error, measured against a finer quadrature, wherever it speaks, and the actual error must be below the threshold
    wherever it is silent."""
    from pdlt.theory.locality import _path

    x0 = np.array([1.0, 0.0])
    xa, _ = _path(x0, np.array([0.0, 1.0]), 15, "circle")
    said = []
    for C_b, L in ((0.3, 8), (0.3, 16), (0.3, 20), (0.1816, 24)):
        net = pdlt.MLP("tanh", (2,) + (8,) * (L - 1) + (1,), C_W=0.8, C_b=C_b)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            inf = pdlt.influence(net, xa, np.zeros((15, 1)), x0[None], noise_var=0.0, order=0)
        K = _fine_tanh_kernel(np.concatenate([xa, x0[None]]), 0.8, C_b, L)
        want = np.linalg.solve(K[:15, :15], K[:15, 15])
        err = np.max(np.abs(inf.mean_dy_infinite[0] - want)) / np.max(np.abs(want))
        found = [c for c in inf.caveats if c.kind == "round-off"]
        if found:
            assert found[0].size >= err and found[0].layer == L and "noise_var" in found[0].message
        else:
            assert err < pdlt.errors.ROUNDOFF_THRESHOLD
        said.append(bool(found))
    assert said == [False, True, True, True]
    one = pdlt.MLP("tanh", (2, 1))                 # one layer: its kernel C_b + C_W x.x/n_0 is exact
    with warnings.catch_warnings():
        warnings.simplefilter("error", pdlt.errors.PdltWarning)
        pdlt.influence(one, xa[:2], np.zeros((2, 1)), x0[None], noise_var=1e-10, order=0)


@pytest.mark.slow
def test_posterior_carries_the_round_off_caveat():
    """The posterior's training block goes through the same check (8 particles, L = 22: the O(1/n) theory refuses
    nearly singular pairs from layer 23 on, so fewer particles never reach a large enough condition number)."""
    from pdlt.theory.locality import _path

    x0 = np.array([1.0, 0.0])
    xa, _ = _path(x0, np.array([0.0, 1.0]), 15, "circle")
    net = pdlt.MLP("tanh", (2,) + (8,) * 21 + (1,), C_W=0.8, C_b=0.3)
    with pytest.warns(pdlt.errors.PdltWarning, match="condition number"):
        post = pdlt.posterior(net, xa[::2], np.zeros((8, 1)), x0[None], noise_var=0.0)
    assert any(c.kind == "round-off" for c in post.caveats)

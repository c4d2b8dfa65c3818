"""Locality of influence, screening and many-body interactions (pdlt.theory.locality, pdlt.theory.interactions).

Independent checks: profiles against closed-form kernels (deep linear: the same at every depth; ReLU: the
arc-cosine recursion written out here); the ordered phase's approach to a flat profile at the rate of the
perpendicular correlation length (derivations/README.md §20.3); the 1/n profile against pdlt.influence on the cut
network; perfect screening by a particle on the test point at zero noise (exact at any width); the many-body
expansion against the exact cubic structure of the 1/n posterior mean and against Yaida's closed form; bad input.
"""

import numpy as np
import pytest

import pdlt
from pdlt.errors import ParameterError
from pdlt.theory.bayes import last_layer_statistics, posterior_expansion, posterior_mean_closed_form

X0, X1 = [1.2, 0.0, 0.0], [0.0, 0.7, 0.3]


def _circle(n_train):
    """The circle of locality_profile written out: radius |x0|, plane of x0 and x1, quarter-spacing offset."""
    r = np.linalg.norm(X0)
    e0 = np.array(X0) / r
    u = np.array(X1) - (np.array(X1) @ e0) * e0
    e1 = u / np.linalg.norm(u)
    th = 2 * np.pi * (np.arange(n_train) + 0.25) / n_train
    th = np.where(th > np.pi, th - 2 * np.pi, th)
    return r * (np.cos(th)[:, None] * e0 + np.sin(th)[:, None] * e1), np.abs(th)


def _profile(K, s2):
    nA = K.shape[0] - 1
    return np.linalg.solve(K[:nA, :nA] + s2 * np.eye(nA), K[:nA, nA])


def test_deep_linear_profile_is_depth_independent_and_closed_form():
    net = pdlt.MLP("linear", (3,) + (10,) * 6 + (1,), C_W=1.0, C_b=0.0)
    prof = pdlt.locality_profile(net, X0, X1, n_train=9, noise_var=0.2)
    xa, dist = _circle(9)
    x = np.concatenate([xa, np.array(X0)[None]])
    np.testing.assert_allclose(prof.distance, dist, rtol=1e-14)
    want = _profile(x @ x.T / 3, 0.2)
    np.testing.assert_allclose(prof.infinite, np.broadcast_to(want, prof.infinite.shape), rtol=1e-12, atol=1e-14)
    # a linear kernel pulls the antipodal particles as hard as the nearest ones: more spread than a flat profile
    assert np.all(prof.locality > 1)


def test_relu_profile_against_the_arc_cosine_recursion():
    net = pdlt.MLP("relu", (3,) + (10,) * 30 + (1,), C_W=2.0, C_b=0.0)
    prof = pdlt.locality_profile(net, X0, X1, n_train=11, noise_var=0.05)
    xa, _ = _circle(11)
    x = np.concatenate([xa, np.array(X0)[None]])
    K = 2.0 * x @ x.T / 3
    for l in range(net.L):
        np.testing.assert_allclose(prof.infinite[l], _profile(K, 0.05), rtol=1e-9, atol=1e-12)
        s = np.sqrt(np.diag(K))
        rho = np.clip(K / np.outer(s, s), -1, 1)
        th = np.arccos(rho)
        K = 2.0 * np.outer(s, s) * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
    # ReLU at criticality localizes the influence over the first layers, then delocalizes it
    loc = prof.locality
    assert loc[3] < 0.5 * loc[0] and loc[-1] > 2 * loc[3]


def test_ordered_phase_flattens_at_the_perpendicular_correlation_length():
    """1 - ell/ell_uniform ~ exp(-l / xi_perp) deep in the ordered phase (derivations/README.md §20.3)."""
    C_W, C_b = 0.8, 0.3
    net = pdlt.MLP("tanh", (3,) + (8,) * 36 + (1,), C_W=C_W, C_b=C_b)
    prof = pdlt.locality_profile(net, X0, X1, n_train=9, noise_var=0.1)
    slope = np.diff(np.log(1.0 - prof.locality[24:34]))
    xi = pdlt.correlation_length("tanh", C_W, C_b, K1=C_b + C_W * 1.44 / 3).xi_perp
    np.testing.assert_allclose(-1.0 / slope, xi, rtol=1e-3)


def test_order_one_profile_equals_the_influence_of_the_cut_network():
    net = pdlt.MLP("tanh", (3, 12, 10, 14, 1), C_W=1.0, C_b=0.1)
    y = np.linspace(-0.5, 0.5, 5)
    prof = pdlt.locality_profile(net, X0, X1, n_train=5, noise_var=0.1, order=1, y=y)
    assert np.all(prof.correction[0] == 0)
    xa, _ = _circle(5)
    for l in (2, 3, 4):
        inf = pdlt.influence(net.truncated(l), xa, y, [X0], noise_var=0.1, wrt="y")
        np.testing.assert_allclose(prof.infinite[l - 1], inf.mean_dy_infinite[0], rtol=1e-10)
        # the two paths order the inputs differently, and V's quadrature moves by ~1e-10 with the order; the
        # training kernel's inverse amplifies that ~100-fold
        np.testing.assert_allclose(prof.correction[l - 1], inf.mean_dy_correction[0, 0, :, 0], rtol=1e-6, atol=1e-9)
        assert prof.n[l - 1] == net.widths[l - 1]


def test_screening_by_a_particle_on_the_test_point():
    """At zero noise a particle on the test point pins the prediction to its target, for every network: the
    source's influence drops to 0 exactly (at infinite width and at O(1/n))."""
    net = pdlt.MLP("tanh", (3, 8, 8, 1), C_W=1.0, C_b=0.1)
    xt, xs = [[1.0, 0.2, -0.3]], [[-0.4, 0.9, 0.1]]
    scr = pdlt.screening(net, xt, xs, [[0.3, 0.6, -0.1], xt[0]], noise_var=0.0, order=1, y_source=0.4,
                         y_screen=[0.1, -0.2])
    K = pdlt.kernel_flow(net, np.array(xs + xt)).K[-1]
    np.testing.assert_allclose(scr.infinite[0], K[0, 1] / K[0, 0], rtol=1e-12)
    assert abs(scr.infinite[2]) < 1e-10 and abs(scr.correction[2]) < 1e-8 < abs(scr.correction[1])
    assert scr.ratio[0] == 1.0


def test_interactions_are_the_cubic_part_of_the_posterior_mean():
    xa = np.array([[1.0, 0.2, -0.4], [0.3, -0.8, 0.5], [-0.5, 0.4, 0.9]])
    xb = np.array([[0.6, -0.3, 0.1], [0.2, 0.2, -0.7]])
    y = np.array([0.5, -0.3, 0.2])
    rng = np.random.default_rng(3)
    for act, C_W in (("tanh", 1.0), ("relu", 2.0)):
        net = pdlt.MLP(act, (3, 9, 7, 1), C_W=C_W, C_b=0.1)
        it = pdlt.interactions(net, xa, y, xb, 0.2)
        K, G1, V, _ = last_layer_statistics(net, np.concatenate([xa, xb]))
        for _ in range(3):
            yy = rng.normal(size=3)
            m1 = posterior_expansion(K, G1, V, yy[:, None], 3, 0.2)[1][:, 0]
            cubic = it.linear @ yy + np.einsum("bace,a,c,e->b", it.three_body, yy, yy, yy) / 6
            np.testing.assert_allclose(cubic, m1, rtol=1e-9, atol=1e-13)
        # Yaida's closed form: its 1/n coefficient (Richardson-extrapolated, as in test_bayes) at the targets
        n = 2e4

        def coef(nn, yy):
            m0 = K[3:, :3] @ np.linalg.solve(K[:3, :3] + 0.2 * np.eye(3), yy)
            return nn * (posterior_mean_closed_form(K, G1, V, nn, yy[:, None], 3, 0.2)[:, 0] - m0)

        cf = 2 * coef(n, y) - coef(n / 2, y)
        np.testing.assert_allclose(it.linear @ y + np.einsum("bace,a,c,e->b", it.three_body, y, y, y) / 6, cf,
                                   rtol=1e-6, atol=1e-10)
        assert np.allclose(it.bodies().sum(1), np.einsum("bace,a,c,e->b", it.three_body, y, y, y) / 6 / it.n)
        np.testing.assert_allclose(it.pair_coupling, np.einsum("bace,e->bac", it.three_body, y) / it.n)
        assert it.graph().shape == (3, 3)


def test_bad_input():
    net = pdlt.MLP("tanh", (3, 6, 6, 1))
    with pytest.raises(ParameterError, match="geometry"):
        pdlt.locality_profile(net, X0, X1, geometry="spiral")
    with pytest.raises(ParameterError, match="x1"):
        pdlt.locality_profile(net, X0, [2.4, 0, 0])
    with pytest.raises(ParameterError, match="x0"):
        pdlt.locality_profile(net, [0, 0, 0], X1)
    with pytest.raises(ParameterError, match="n_train"):
        pdlt.locality_profile(net, X0, X1, n_train=1)
    with pytest.raises(ParameterError, match="y"):
        pdlt.locality_profile(net, X0, X1, n_train=5, order=1, y=[1.0, 2.0])
    with pytest.raises(ParameterError, match="order"):
        pdlt.locality_profile(net, X0, X1, order=2)
    with pytest.raises(pdlt.errors.SingularKernelError, match="odd n_train"):
        pdlt.locality_profile(net, X0, X1, n_train=4, order=1)
    with pytest.raises(ParameterError, match="y_screen"):
        pdlt.screening(net, [X0], [X1], [X0, X1], y_screen=[1.0])
    with pytest.raises(ParameterError, match="one output"):
        pdlt.interactions(pdlt.MLP("tanh", (3, 6, 2)), [X0], [[1.0, 2.0]], [X1])
    line = pdlt.locality_profile(net, X0, X1, n_train=6, geometry="line")
    assert np.all(line.distance > 0) and np.isfinite(line.length).all()


def test_paths_of_tiny_and_huge_inputs():
    """The particles' path is built in units of the inputs' size: at 1e-200 the circle took x0 for its centre and
    the line x1 for x0, at 1e200 the circle called x1 parallel (norms under- and overflowing). Scaling the inputs
    by a power of two scales the path exactly (and leaves the circle's angles)."""
    from pdlt.theory.locality import _path

    x0, x1 = np.array([1.0, 0.3]), np.array([-0.2, 0.9])
    for geometry in ("circle", "line"):
        ref, pos = _path(x0, x1, 7, geometry)
        for e in (-700, 640):
            got, gpos = _path(np.ldexp(x0, e), np.ldexp(x1, e), 7, geometry)
            np.testing.assert_array_equal(got, np.ldexp(ref, e))
            np.testing.assert_array_equal(gpos, pos if geometry == "circle" else np.ldexp(pos, e))

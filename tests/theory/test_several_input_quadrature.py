"""Averages over two to four distinct inputs at large kernels: resolved or refused, never silently coarse.

The several-input rules keep their spacing in z (pdlt.theory.conditioned) and grow with the kernel; before, they
capped their grids and returned wrong values without a word (pdlt.ntk, tanh, four inputs, K ~ 9: D 2e-3 off;
pdlt.finite_width, tanh, three inputs, K ~ 100: <s^2 s s> 5e-4 off; two inputs, K = 1000: Q 5e-3 off)."""

import mpmath as mp
import numpy as np
import pytest

import pdlt
from pdlt import gaussian
from pdlt.errors import ParameterError
from pdlt.theory import conditioned
from pdlt.theory.finite_width import four_point_distinct, layer_averages
from pdlt.theory.ntk_statistics import ntk_statistics

FIELDS = ("Theta1", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")


def _inputs(d, seed=0):
    x = np.random.default_rng(seed).normal(size=(d, d))
    return x / np.sqrt(np.mean(x**2, axis=1, keepdims=True))   # K^(1)_aa = C_W = 1 before scaling


def _finer(monkeypatch):
    """The conditioned rule at ~3/4 of its spacings and without its grid limit: an independent grid."""
    monkeypatch.setattr(conditioned, "_HZ_REST", {1: 0.15, 2: 0.15, 3: 0.2})
    monkeypatch.setattr(conditioned, "_HZ_INNER", 0.15)
    monkeypatch.setattr(conditioned, "_HMAX", 0.5)
    monkeypatch.setattr(conditioned, "MAX_POINTS", 1e12)


def test_ntk_four_inputs_at_large_kernels_against_a_finer_grid(monkeypatch):
    """tanh, four inputs with K^(1) = 9 (where the capped rule left D 2e-3 off): every statistic agrees with the
    same rule on a finer grid to ~1e-13 relative to its largest entry."""
    net = pdlt.MLP("tanh", (4, 8, 8, 8), C_W=1.0, C_b=0.0)
    x = 3.0 * _inputs(4)
    mine = ntk_statistics(net, x)
    _finer(monkeypatch)
    ref = ntk_statistics(net, x)
    for q in FIELDS:
        a, b = getattr(mine, q)[1:], getattr(ref, q)[1:]
        assert np.max(np.abs(a - b)) <= 1e-11 * np.max(np.abs(b)), q


@pytest.mark.parametrize("C_W, setting, layer", [(1.0, "x", 1), (200.0, "C_W", 2)])
def test_ntk_refuses_four_inputs_beyond_the_grid_limit(C_W, setting, layer):
    """tanh, four inputs at K ~ 64 (the inputs' own, or grown to ~78 at layer 2 by C_W = 200): the conditioned grid
    would exceed its limit and the capped 4D rule moves by far more than 1e-6 at 2/3 of its nodes, so the call is
    refused, naming the setting that made the kernel large."""
    net = pdlt.MLP("tanh", (4, 8, 8, 8), C_W=C_W, C_b=0.0)
    x = (8.0 if C_W == 1.0 else 1.0 / np.sqrt(C_W)) * _inputs(4)
    with pytest.raises(ParameterError, match="capped rule moves") as err:
        ntk_statistics(net, x)
    assert err.value.setting == setting and f"layer l = {layer}" in str(err.value)


def test_ntk_pairs_beyond_the_grid_limit_use_the_capped_rule_where_it_is_resolved():
    """sin, two inputs at K = 3600: beyond the ball grid's limit the capped 2D rule is resolved (sin varies on the
    scale 1 of z, not narrower), so the call succeeds; its value agrees with the closed form of <sin sin>."""
    from pdlt.theory.ntk_statistics import ntk_averages

    K = 3600.0 * np.array([[1.0, 0.999], [0.999, 1.0]])
    P00 = ntk_averages("sin", K).P00[0, 0, 1]
    exact = 0.5 * (np.exp(-0.5 * (K[0, 0] + K[1, 1] - 2 * K[0, 1])) - np.exp(-0.5 * (K[0, 0] + K[1, 1] + 2 * K[0, 1])))
    assert P00 == pytest.approx(exact, rel=1e-9)


@pytest.mark.slow   # 85 s
def test_two_input_hermite_averages_at_large_kernels_against_mpmath():
    """tanh, correlation 0.6, K = 1000 (beyond the grouped 2D rule's cap): <s s> and <s' s'> (D_ac) against
    mpmath's adaptive quadrature (gaussian.expect_mp); the capped rule was 4e-9 and 4e-4 off."""
    K = 1000.0 * np.array([[1.0, 0.6], [0.6, 1.0]])
    avg = layer_averages("tanh", K)
    ref_p2 = gaussian.expect_mp(lambda a, b: mp.tanh(a) * mp.tanh(b), K, dps=20)
    ref_d = gaussian.expect_mp(lambda a, b: mp.sech(a) ** 2 * mp.sech(b) ** 2, K, dps=20)
    assert avg.P2[0, 0, 1] == pytest.approx(float(ref_p2), rel=1e-12)
    assert avg.D[0, 0, 1, 0, 1] == pytest.approx(float(ref_d), rel=1e-10)


@pytest.mark.slow   # 45 s
def test_three_inputs_at_large_kernels_factorize():
    """tanh, K ~ 100, input 0 independent of the correlated pair (1, 2): <s_0^2 s_1 s_2> = <s^2>_K00 <s_1 s_2>, both
    factors by mpmath (the capped 3D rule was 5e-4 off at this size)."""
    K = np.array([[100.0, 0.0, 0.0], [0.0, 80.0, -50.0], [0.0, -50.0, 120.0]])
    P4 = layer_averages("tanh", K).P4[0]
    s2 = mp.quad(lambda z: mp.tanh(z) ** 2 * mp.npdf(z, 0, mp.sqrt(100)), [-mp.inf, 0, mp.inf])
    s12 = gaussian.expect_mp(lambda a, b: mp.tanh(a) * mp.tanh(b), K[1:, 1:], dps=20)
    assert P4[0, 0, 1, 2] == pytest.approx(float(s2 * s12), rel=1e-11)


def test_several_inputs_at_large_kernels_against_independent_rules(monkeypatch):
    """tanh, correlated kernels of size 1000 (two inputs), 30 (three) and 25 (four), where the capped rules were
    5e-3, 1e-6 and 1e-7 off. Two inputs: finite_width's Hermite averages against pdlt.ntk's (a line-factorized sum
    on its own grid); three and four: against the conditioned rule on a finer grid (mpmath checks under -m slow)."""
    from pdlt.theory.ntk_statistics import ntk_averages

    C = _inputs(4, seed=3) @ _inputs(4, seed=3).T / 4
    K2, K3, K4 = 1000.0 * C[:2, :2], 30.0 * C[:3, :3], 25.0 * C
    a2, b2 = layer_averages("tanh", K2), ntk_averages("tanh", K2).ss
    for q in ("P2", "D", "Qp"):
        assert getattr(a2, q) == pytest.approx(getattr(b2, q), rel=1e-11, abs=1e-13 * np.max(np.abs(getattr(b2, q)))), q
    p3, p4 = layer_averages("tanh", K3).P4[0], four_point_distinct("tanh", K4)
    _finer(monkeypatch)
    act = pdlt.activation("tanh")
    r3, need3 = conditioned.conditioned_products(act, K3[None], [[(0, 0), (0,), (0,)]], singular_cond=1e10)
    r4, need4 = conditioned.conditioned_products(act, K4[None], [[(0,), (0,), (0,), (0,)]], singular_cond=1e10)
    assert need3[0] == need4[0] == 0
    assert p3[0, 0, 1, 2] == pytest.approx(r3[0, 0], rel=1e-11)
    assert p4 == pytest.approx(r4[0, 0], rel=1e-11)


def test_four_inputs_beyond_the_limit_use_the_capped_rule_only_where_it_is_resolved():
    """Beyond the conditioned rule's grid limit finite_width falls back to gaussian.expect's capped 4D rule with its
    error estimate: tanh at K^(1) = 100 (the capped value is 5e-3 off) is refused naming x; the estimate itself
    bounds the true error (it was 0 when both rules sat at the cap)."""
    net = pdlt.MLP("tanh", (4, 8, 8), C_W=1.0, C_b=0.0)
    with pytest.raises(ParameterError, match="capped rule moves") as err:
        pdlt.finite_width(net, 10.0 * _inputs(4)).V
    assert err.value.setting == "x"
    x = 10.0 * _inputs(4)
    K = x @ x.T / 4
    val, est = gaussian.expect(lambda z: np.prod(np.tanh(z), axis=-1), K, return_error=True)
    true = abs(float(val) - 0.2598464612993363)   # the conditioned rule without its limit (1.2e8 points, 8 s)
    assert 1e-3 < true < float(est)


def test_scaled_activation_jet_and_third_derivative_scale():
    """sigma_e(zeta) = sigma(c zeta)/c: its k-th derivative is c^(k-1) sigma^(k)(c zeta), for the jet and d3 too
    (they came from the unscaled expression, which made the rescaled several-input averages 1e-3 off). Toward large
    kernels (e > 0) only activations that are ramps far out are rescaled (with a kink at 0); tanh is refused."""
    with pytest.raises(ParameterError, match="structure at") as err:
        pdlt.activations.scaled_activation(pdlt.activation("tanh"), 40)
    assert err.value.setting == "x"
    assert pdlt.activations.scaled_activation(pdlt.activation("gelu"), 40).kinks == (0.0,)
    for name in ("tanh", "gelu"):
        act = pdlt.activation(name)
        for e in ((-40,) if name == "tanh" else (-40, 40)):
            sc = pdlt.activations.scaled_activation(act, e)
            c = 2.0 ** (e // 2)
            z = np.linspace(-3, 3, 13) / c
            jet, ref = sc.derivatives(z), act.derivatives(c * z)
            for k in range(4):
                np.testing.assert_allclose(jet[k], c ** (k - 1) * ref[k], rtol=1e-14, atol=0)
            np.testing.assert_allclose(sc.d3(z), c**2 * act.d3(c * z), rtol=1e-14, atol=0)


@pytest.mark.parametrize("C_W, C_b", [(2.0, 0.5), (8.0, 2.0)])
def test_collinear_inputs_at_layer_one(C_W, C_b):
    """Four one-dimensional inputs with a bias: K^(1) has rank 2, which the conditioned rule cannot factor (the plain
    capped 4D rule it fell back to was 2e-3 off for <s s s s> and 15 % for <s' s' s' s'> at K ~ 20). Both against the
    2D trapezoid over the kernel's two directions at spacing 0.03."""
    x = np.array([-1.5, -0.5, 0.4, 1.2])
    A = np.stack([np.full(4, np.sqrt(C_b)), np.sqrt(C_W) * x], 1)          # K = A A^T, z = A w with w ~ N(0, 1_2)
    K = A @ A.T
    act = pdlt.activation("tanh")
    sech2 = lambda z: 1.0 / np.cosh(z) ** 2
    ref0 = float(gaussian.expect(lambda w: np.prod(np.tanh(w @ A.T), axis=-1), np.eye(2), resolution=0.03))
    ref1 = float(gaussian.expect(lambda w: np.prod(sech2(w @ A.T), axis=-1), np.eye(2), resolution=0.03))
    assert float(four_point_distinct(act, K)) == pytest.approx(ref0, rel=1e-12)
    v, need = conditioned.conditioned_products(act, K[None], [[(1,), (1,), (1,), (1,)]], singular_cond=1e10)
    assert need[0] == 0 and v[0, 0] == pytest.approx(ref1, rel=1e-12)


def test_deterministic_input_factors_out():
    """One of four inputs has zero variance (x = 0, C_b = 0): <s s s s> = s(0) <s s s> over the three others (sigmoid,
    s(0) = 1/2), the latter by gaussian.expect's plain 3D trapezoid at 121 nodes per axis (the capped 4D rule was 4e-4
    off at K ~ 20)."""
    x = _inputs(3, seed=2) * np.sqrt(5.0)
    K3 = x @ x.T / 3
    K = np.zeros((4, 4))
    K[1:, 1:] = K3
    act = pdlt.activation("sigmoid")
    ref = 0.5 * float(gaussian.expect(lambda z: np.prod(act(z), axis=-1), K3, n=121, method="smooth"))
    assert float(four_point_distinct(act, K)) == pytest.approx(ref, rel=1e-10)


def test_capped_rule_error_is_per_average():
    """softplus, two inputs at K = 5200 (beyond the ball grid): the capped rule's moments (~K^2) are resolved but its
    Hermite averages move by 1e-2 at 2/3 of the nodes; measured against the largest average alone the estimate was
    1e-7 and the call passed with D and Q 3e-4 off. Now it is refused."""
    K = 5200.0 * np.array([[1.0, 0.3], [0.3, 1.0]])
    with pytest.raises(ParameterError, match="capped rule moves"):
        layer_averages("softplus", K)


def test_ntk_pair_with_a_deterministic_input_at_a_large_kernel():
    """A pair whose second input has zero variance: <s'(z) s'(0)> = <sech^2 z>, z ~ N(0, 800), against mpmath (the
    capped 2D rule was 3e-4 off for such averages at this size)."""
    from pdlt.theory.ntk_statistics import ntk_averages

    K = 800.0
    v = ntk_averages("tanh", np.array([[K, 0.0], [0.0, 0.0]])).P11[0, 0, 1]
    ref = mp.quad(lambda z: mp.sech(z) ** 2 * mp.npdf(z, 0, mp.sqrt(K)), [-mp.inf, 0, mp.inf])
    assert v == pytest.approx(float(ref), rel=1e-12)


def test_residual_cross_layer_averages_at_large_kernels(monkeypatch):
    """A residual network's G1 over two inputs needs averages over one neuron at two layers, (u_x, u_y, v_x, v_y):
    at K ~ 30 gaussian.expect's default 3D rule was 5e-4 off for <s(u_x)^2 s''(v_x) s(v_y)>. Against the conditioned
    rule on a finer grid (tanh)."""
    from pdlt.theory.residual import _cross_pair_averages

    Kp = 30.0 * np.array([[1.0, 0.6], [0.6, 1.0]])
    J = np.block([[Kp, 0.85 * Kp], [0.85 * Kp, 1.3 * Kp]])
    t, err = _cross_pair_averages(pdlt.activation("tanh"), J)
    assert err == 0.0
    _finer(monkeypatch)
    act = pdlt.activation("tanh")
    J3 = J[np.ix_([0, 2, 3], [0, 2, 3])]
    r3, _ = conditioned.conditioned_products(act, J3[None], [[(0, 0), (2,), (0,)], [(0, 0), (1,), (1,)]],
                                             singular_cond=1e10)
    r5, _ = conditioned.conditioned_products(act, J[None], [[(0,), (0,), (1,), (1,)]], singular_cond=1e10)
    assert [t[0], t[2], t[4]] == pytest.approx([r3[0, 0], r3[0, 1], r5[0, 0]], rel=1e-11)

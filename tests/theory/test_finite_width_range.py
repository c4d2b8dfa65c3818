"""The 1/n theory over float64's whole range (issue 10, items 2 and 6).

Far from criticality K^(l) decays (ordered phase) or grows (exploding side) exponentially, and V ~ K^2 leaves
float64's range long before K. The oracles here are exact closed forms, independent of the code:

* scale-invariant activations, one input, C_b = 0: ``K^(l) = (C_W A_2)^(l-1) K^(1)``, ``G1 = 0`` and
  ``v_l = V^(l)/K^(l)^2`` obeys ``v_{l+1} = nu + r_l v_l`` (``nu = 3 A_4/A_2^2 - 1``; from ``<s^4> = 3 A_4 K^2``,
  ``<s^2> = A_2 K``, ``chi_par = C_W A_2``), i.e. ``v_l = nu (l - 1)`` for uniform widths (derivations/README.md §9);
* tanh in the ordered phase tends to the deep linear network: ``tanh z = z - z^3/3 + ...`` gives per layer
  ``v_{l+1} - v_l = 2 - (8 + 4 v_l) K + O(K^2)`` and ``g_{l+1} - g_l = -2K (g_l + v_l) + O(K^2)`` for
  ``g = G1/K`` (derivation in the test's docstring).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import pdlt
from pdlt.errors import DivergentFlowError, TruncationWarning, VanishingFlowError
from pdlt.theory import kernel as kernel_mod

X = np.array([[1.0, 0.2, -0.5], [0.3, -1.0, 0.4]])
N = 64
EPS = np.finfo(np.float64).eps


def _net(act, L, C_W, n=N, C_b=0.0):
    return pdlt.MLP(act, (3,) + (n,) * L, C_W=C_W, C_b=C_b)


def _theory(net, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return pdlt.finite_width(net, x)


def _rounding(v, l):
    """Allowance for rounding accumulated over l layers of a linear recursion: a few eps per layer."""
    return 8 * EPS * l * np.maximum(1.0, np.abs(v))


@pytest.mark.parametrize("act, C_W, L, d", [
    ("relu", 0.5, 300, 2),      # ordered: K shrinks by 4 per layer, V ~ K^2 underflows from l ~ 258
    ("relu", 4.0, 1000, 1),     # exploding: K ~ 2^l representable, V ~ K^2 overflows from l ~ 507
    ("linear", 0.5, 400, 1),
    ("linear", 2.0, 1000, 1),
    ("leaky_relu(0.3)", 0.6, 300, 1),
])
def test_scale_invariant_deep_closed_form(act, C_W, L, d):
    th = _theory(_net(act, L, C_W), X[:d])
    a = pdlt.activation(act)
    nu = 3 * a.A4 / a.A2**2 - 1
    K1 = C_W * np.sum(X[:d] ** 2, axis=1) / 3
    l = np.arange(1, L + 1)
    # K: exact geometric flow (checked in log2 so the oracle itself never under/overflows)
    logK = np.log2(K1)[None, :] + (l - 1)[:, None] * math.log2(C_W * a.A2)
    np.testing.assert_allclose(np.log2(np.diagonal(th.K, axis1=1, axis2=2)), logK, rtol=0, atol=1e-12 * L)
    v = np.array([th.normalized_vertex(i) for i in l]) * N
    exact = nu * (l - 1)[:, None] * np.ones(d)
    assert np.all(np.abs(v - exact) <= _rounding(exact, l[:, None]))
    np.testing.assert_allclose(np.array([th.kurtosis(i) for i in l]), 3 * exact / N, rtol=0,
                               atol=float(np.max(_rounding(exact, L))))
    g = np.array([th.normalized_G1(i) for i in l])
    assert np.all(np.abs(g) <= _rounding(exact, l[:, None]))  # G1 = 0 exactly; rounding relative to V/K^2
    # a shallow layer still gives the raw four-point function
    np.testing.assert_allclose(th.connected_four_point(5)[0, 0, 0, 0], 4 * nu * th.K[4, 0, 0] ** 2 / N, rtol=1e-12)
    # the raw V is outside float64 somewhere deep: never a silent 0 or inf
    vlog = np.log2(nu * (l[1:] - 1)[:, None]) + 2 * logK[1:]  # log2 V_(aa)(aa) for l >= 2 (V^(1) = 0)
    bad = np.nonzero((np.max(vlog, axis=1) < -1022) | (np.max(vlog, axis=1) > 1024))[0] + 1
    if not bad.size:
        assert np.all(np.isfinite(th.V)) and np.all(np.abs(th.V[1:, 0, 0, 0, 0]) > 0)
    else:
        cls = VanishingFlowError if C_W * a.A2 < 1 else DivergentFlowError
        with pytest.raises(cls, match="normalized_vertex") as err:
            th.V
        assert abs(err.value.layer - (bad[0] + 1)) <= 1  # the exact threshold depends on the off-diagonal entries
        with pytest.raises(cls, match=f"layer l = {L}"):
            th.connected_four_point(L)
        assert np.all(np.isfinite(th.normalized_four_point(L)))


def test_per_layer_C_W_and_widths():
    """Non-uniform widths and per-layer C_W (ordered on average): v_{l+1} = nu + r_l v_l exactly."""
    rng = np.random.default_rng(3)
    L = 250
    widths = (3,) + tuple(int(w) for w in rng.integers(8, 65, size=L))
    C_W = tuple(float(c) for c in rng.choice([0.4, 0.6, 1.5], size=L))
    net = pdlt.MLP("relu", widths, C_W=C_W)
    th = _theory(net, X[:1])
    v = [0.0]
    for l in range(1, L):
        v.append(5.0 + widths[l] / widths[l - 1] * v[-1])
    for l in range(1, L + 1):
        exact = v[l - 1] / widths[l - 1]
        assert abs(th.normalized_vertex(l)[0] - exact) <= _rounding(exact, l) * 4
    assert th.log2_scale.min() < -200  # the flow really left the unscaled range


def test_tanh_ordered_tends_to_deep_linear():
    """tanh, C_W = 0.5: K -> 0 like 2^-l, so each layer acts like a linear one plus O(K) corrections.

    With ``g(K) = <tanh^2> = K - 2K^2 + O(K^3)``, ``<tanh^4> - <tanh^2>^2 = 2K^2 - 16K^3 + O(K^4)``,
    ``chi = C_W (1 - 4K + ...)`` and ``<d^4 tanh^2> = -16 + O(K)``, the single-input recursions give
    ``v' - v = 2 - (8 + 4 v) K + O(K^2 (1 + v))`` and ``g' - g = -2K (g + v) + O(K^2 (1 + v))`` for
    ``v = V/K^2``, ``g = G1/K``. Allowance: 1.25 times the O(K) term's bound plus the next order (K^2 terms
    with coefficients < 100) plus rounding.
    """
    L = 900
    th = _theory(_net("tanh", L, 0.5), X[:1])
    K = np.array([th.K[i, 0, 0] for i in range(L)])
    v = np.array([th.normalized_vertex(l)[0] for l in range(1, L + 1)]) * N
    g = np.array([th.normalized_G1(l)[0] for l in range(1, L + 1)]) * N
    small = np.nonzero(K[:-1] < 1e-3)[0]
    assert small.size > 800 and K[-1] < 1e-250
    dv, dg = np.diff(v)[small], np.diff(g)[small]
    k, vv, gg = K[small], v[small], g[small]
    allow = 1.25 * 12 * k * (1 + vv) + 100 * k**2 * (1 + vv) + _rounding(vv, small + 1)
    assert np.all(np.abs(dv - 2) <= allow)
    assert np.all(np.abs(dg) <= 1.25 * 2 * k * (np.abs(gg) + vv) + 100 * k**2 * (1 + vv) + _rounding(vv, small + 1))
    # deep layers: exactly linear increments within rounding
    assert abs(v[-1] - v[-101] - 200) < 1e-9 * v[-1]


@pytest.mark.parametrize("C_W, L, cls, advice", [
    (0.5, 1000, VanishingFlowError, "raise C_W toward criticality"),
    (4.0, 1100, DivergentFlowError, "lower C_W"),
])
def test_out_of_range_kernel_advice(C_W, L, cls, advice):
    net = _net("relu", L, C_W)
    K1 = C_W * np.sum(X[0] ** 2) / 3
    # first layer with K^(l) = K1 (C_W/2)^(l-1) outside [2^-1000, 2^1000] (the documented range)
    l = np.arange(1, L + 1)
    logK = math.log2(K1) + (l - 1) * math.log2(C_W / 2)
    first = int(np.nonzero((logK < -1000) | (logK > 1000))[0][0]) + 1
    for call in (pdlt.kernel_flow, pdlt.finite_width):
        with pytest.raises(cls, match=advice) as err:
            call(net, X[:1])
        assert err.value.layer == first and f"layer l = {first}" in str(err.value)
        assert "criticality" in str(err.value)
    assert "ordered phase" in str(err.value) if cls is VanishingFlowError else "exploding" in str(err.value)


def test_kernel_flow_never_returns_zeros_for_smooth_activation():
    with pytest.raises(VanishingFlowError, match="ordered phase"):
        pdlt.kernel_flow(_net("tanh", 1100, 0.5), X[:1])


@pytest.mark.parametrize("act, d, C_W", [("tanh", 3, 0.45), ("gelu", 2, 1.0), ("erf", 2, 0.3)])
def test_rescaling_matches_unscaled(monkeypatch, act, d, C_W):
    """Ordered phase down to K ~ 2^-80, where the unscaled computation (the code before rescaling existed) is
    still sound: the rescaled recursions (Kt = K/2^e, sigma_e(zeta) = sigma(2^(e/2) zeta)/2^(e/2)) agree with it.
    Powers of two are exact, so only quadrature rounding may differ (the averages are accurate to ~1e-13)."""
    net = _net(act, 70, C_W, C_b=0.0)
    x = X[:d] if d <= 2 else np.vstack([X, [[0.5, 0.5, 1.0]]])
    th = _theory(net, x)
    assert np.any(th.log2_scale != 0)
    monkeypatch.setattr(kernel_mod, "SCALE_BAND", 10**6)
    ref = _theory(net, x)
    assert not np.any(ref.log2_scale)
    for q in ("K", "G1", "V"):
        a, b = getattr(ref, q), getattr(th, q)
        scale = np.max(np.abs(a.reshape(a.shape[0], -1)), axis=1).reshape((-1,) + (1,) * (a.ndim - 1))
        assert np.all(np.abs(b - a) <= 1e-11 * scale)


@pytest.mark.parametrize("e", [64, -64])
def test_rescaling_is_exact_scale_invariant(monkeypatch, e):
    """ReLU, three inputs: forcing every layer through Kt = K/2^e reproduces the unscaled values."""
    net = _net("relu", 10, 1.3, C_b=0.1)
    x = np.vstack([X, [[0.5, 0.5, 1.0]]])
    monkeypatch.setattr(kernel_mod, "SCALE_BAND", 10**6)
    from pdlt.theory import finite_width as fw_mod

    monkeypatch.setattr(fw_mod, "scale_exponent", lambda K, fine=False: 0)
    ref = _theory(net, x)
    forced = lambda K, fine=False: e  # noqa: E731
    monkeypatch.setattr(fw_mod, "scale_exponent", forced)
    th = _theory(net, x)
    assert np.all(th.log2_scale == e) and not np.any(ref.log2_scale)
    for q in ("K", "G1", "V"):
        a, b = getattr(ref, q), getattr(th, q)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-13 * np.max(np.abs(a)))


def test_power_of_two_input_scaling_relu():
    """ReLU, C_b = 0: x -> 2^k x multiplies K, G1 by 4^k and V by 16^k exactly (homogeneity)."""
    net = _net("relu", 12, 2.0)
    a = _theory(net, X)
    b = _theory(net, X * 2.0**300)  # K ~ 2^600 (rescaled path), V ~ 2^1200 (not representable)
    assert np.all(b.log2_scale != 0)
    for l in range(1, 13):
        np.testing.assert_allclose(b.normalized_four_point(l), a.normalized_four_point(l), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b.K[l - 1] * 2.0**-600, a.K[l - 1], rtol=1e-13)
    with pytest.raises(DivergentFlowError, match="normalized_vertex"):
        b.V


@pytest.mark.slow   # 12 s: 300- and 600-layer delta-expansions
def test_delta_finite_width_deep():
    """Midpoint of the delta-expansion = single-input theory: V_[00]/(n K00^2) = 5 (l-1)/n for ReLU, here
    with V ~ K00^2 ~ 2^-1200 at the last layer; deep linear: V_[22] = 2 (l-1) K_[2]^2 (module docstring)."""
    L = 300
    de = pdlt.delta_finite_width(_net("relu", L, 0.5), X[0], 1e-3 * X[1])
    for l in (2, 100, L):
        exact = 5 * (l - 1) / N
        assert abs(de.normalized_vertex(l) - exact) <= _rounding(exact, l)
        assert abs(de.normalized_G1(l)) <= _rounding(exact, l)
    with pytest.raises(VanishingFlowError, match="normalized_vertex"):
        de.V
    lin = pdlt.delta_finite_width(_net("linear", 600, 2.0), X[0], np.array([0.0, 0.1, 0.2]))
    ratio = lin.gamma_V_scaled[:, 2, 2] / lin.gamma_K_scaled[:, 2] ** 2
    exact = 2.0 * np.arange(600)
    assert np.all(np.abs(ratio - exact) <= _rounding(exact, np.arange(1, 601)))
    with pytest.raises(DivergentFlowError):
        lin.gamma_V


def test_truncation_caveat_relu_narrow():
    """ReLU, n = 8, L = 6 at criticality: V/(n K^2) = 5 (l-1)/8 exceeds 0.5 first at l = 2; G1 = 0."""
    net = pdlt.MLP("relu", (3,) + (8,) * 6, C_W=2.0)
    with pytest.warns(TruncationWarning, match="layer l = 2"):
        th = pdlt.finite_width(net, X[:1])
    assert len(th.caveats) == 1
    c = th.caveats[0]
    assert c.kind == "truncation" and c.layer == 2 and c.size == pytest.approx(5 / 8, rel=1e-12)
    # silenced by the user: no warning, the caveat is still recorded
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("ignore", TruncationWarning)
        th2 = pdlt.finite_width(net, X[:1])
    assert not rec and th2.caveats == th.caveats
    # the same coefficients at a wider network: no caveat
    assert th.with_net(pdlt.MLP("relu", (3,) + (64,) * 6, C_W=2.0)).caveats == ()


def test_no_caveat_tanh_critical():
    net = pdlt.MLP("tanh", (3,) + (64,) * 6, C_W=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        th = pdlt.finite_width(net, X)
    assert th.caveats == ()


def test_large_inputs_are_resolved_or_refused():
    """A bounded activation's V at a large kernel is a small difference of O(1) averages (tanh: V^(2) ~ K^(-1/2)):
    at x = 1000 and 2700 (K^(1) up to 7.3e6) V^(2) = C_W^2 (<s^4> - <s^2>^2) agrees with the mpmath moments
    (pdlt.gaussian.moments_1d_mp) to 1e-9 (the 1D rule once stopped at 4000 nodes and was 69 % off at x = 1000),
    and beyond the trapezoid's range (K ~ 7.7e6), on gaussian.expect's panel rule, at x = 5000 and 1e5 (the capped
    trapezoid was refused there). At x = 1e10 the difference has lost its digits to rounding (V ~ 1e-10 of <s^4>):
    refused naming x (it was computed in units of 2^64 there, with tanh a step below the rule's spacing: K^(2) 4 %
    off, silently). GELU and sin, whose averages keep their digits, pass at x = 1e4."""
    from pdlt.errors import ParameterError
    from pdlt.gaussian import moments_1d_mp

    tanh = pdlt.activation("tanh")
    for x in (1000.0, 2700.0, 5000.0, 1e5):
        fw = pdlt.finite_width(pdlt.MLP("tanh", (1, 8, 8, 8)), [[x]])
        s2, s4 = (float(v) for v in moments_1d_mp(tanh, x * x, ((2, 0, 0), (4, 0, 0)), dps=40))
        assert abs(fw.V[1][0, 0, 0, 0] - (s4 - s2 * s2)) <= 1e-9 * (s4 - s2 * s2)
    with pytest.raises(ParameterError, match="not resolved by the quadrature") as err:
        pdlt.finite_width(pdlt.MLP("tanh", (1, 8, 8, 8)), [[1e10]])
    assert err.value.setting == "x"
    for act in ("gelu", "sin"):
        assert np.isfinite(pdlt.finite_width(pdlt.MLP(act, (1, 8, 8, 8)), [[1e4]]).V[2]).all()

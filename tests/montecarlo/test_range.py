"""Monte Carlo never hides overflow or underflow (issue 10): divergence is detected for every d and method,
activations outside their domain are refused, deep flows are accumulated in rescaled units (exact powers of
two) with scale-free normalized accessors, and width-1 layers are reported as undefined, not as NaN.

Exact reference used throughout: for ReLU, C_b = 0, one input and uniform width n, the metric obeys
G^(l+1) = G^(l) Y_l with iid Y_l = (C_W/n) sum_i relu(xi_i)^2, E[Y] = C_W/2, E[Y^2] = (C_W/2)^2 (1 + 5/n), and
G^(1) is deterministic, so four_point / G^2 = E[G^2]/E[G]^2 - 1 = (1 + 5/n)^(l-1) - 1 exactly at finite n.
"""

import re

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.errors import ActivationError, DivergentFlowError, PdltError, VanishingFlowError
from pdlt.montecarlo import estimate_from_samples, psd_sqrt, sample_layers
from test_samplers import markov_reference   # the markov runner's statistics rebuilt from its networks

Z = sp.Symbol("z")
X = np.array([[1.0, 0.2, -0.5], [0.3, 0.9, 0.1], [0.5, -0.4, 0.7]])


def _count(err) -> int:
    """Number of failed networks stated in a runner error message ("in K of networks a..b")."""
    return int(re.search(r"in (\d+) of networks", str(err)).group(1))


# ------------------------------------------------------------------------------------------------ item 1


@pytest.mark.parametrize("d", [1, 2, 3])
def test_psd_sqrt_propagates_nonfinite_metric(d):
    """The d = 2 closed form used to map a NaN/inf metric to R = 0 (a silent zero network downstream)."""
    import jax.numpy as jnp

    for bad in (np.nan, np.inf):
        G = np.eye(d)
        G[0, 0] = bad
        assert np.all(np.isnan(np.asarray(psd_sqrt(jnp.asarray(G)))))
    R = np.asarray(psd_sqrt(jnp.asarray(np.zeros((d, d)))))     # an exact zero metric stays an exact zero
    assert np.array_equal(R, np.zeros((d, d)))


@pytest.mark.parametrize("d,method", [(2, "markov"),
                                      *(pytest.param(d, m, marks=pytest.mark.slow)
                                        for d, m in ((1, "markov"), (3, "markov"), (2, "weights")))])
def test_exp_overflow_diverges_for_every_d_and_method(d, method):
    """exp(z) at C_W = 200 overflows at layer 3; with d = 2 the markov sampler used to return 2.7e33 and 0 +- 0."""
    net = pdlt.MLP(pdlt.Activation.from_sympy(sp.exp(Z)), (3, 16, 16, 16, 16), C_W=200.0)
    with pytest.raises(DivergentFlowError) as err:
        pdlt.sample(net, X[:d], 64, seed=0, method=method, batches=8, chunk_size=64)
    assert err.value.layer == 3
    assert _count(err.value) == 64        # exp(C_W-scaled layer 2) overflows in every network


def test_huge_inputs_diverge_at_layer_one_with_the_same_count():
    """1e200 x: K^(1) ~ 1e400 is not representable. The markov sampler with d = 2 used to report 0 +- 0 at every
    layer. The failure is deterministic, so every method and d must report layer 1 and all 64 networks."""
    net = pdlt.MLP("relu", (3, 16, 16, 16), C_W=2.0)
    counts = set()
    for d, method in ((2, "markov"), (1, "weights")):
        with pytest.raises(DivergentFlowError) as err:
            pdlt.sample(net, 1e200 * X[:d], 64, seed=0, method=method, batches=8, chunk_size=64)
        assert err.value.layer == 1
        counts.add(_count(err.value))
    assert counts == {64}


def test_activation_outside_its_domain_is_refused():
    """sqrt(z + 200) passes the activation's own check on its grid (|z| <= 100) but is NaN for z < -200, which
    preactivations with K^(1) ~ 4e4 reach; the d = 2 markov sampler used to report such layers as 0 +- 0 (sqrt(z), log(z) themselves
    are now refused when the activation is made)."""
    act = pdlt.Activation.from_sympy(sp.sqrt(Z + 200))
    net = pdlt.MLP(act, (3, 16, 16, 16), C_W=1.0)
    with pytest.raises(ActivationError) as err:
        pdlt.sample(net, 300.0 * X[:2], 64, seed=0, batches=8, chunk_size=64)
    msg = str(err.value)
    assert act.name in msg and "activation" in msg and "layer l = 1" in msg


# ------------------------------------------------------------------------------------------------ item 2

N_W, L_DEEP, N_NETS = 128, 14, 4096


def _relu_run(C_W, L=L_DEEP, n=N_W, n_samples=N_NETS, seed=1):
    net = pdlt.MLP("relu", (3,) + (n,) * L, C_W=C_W)
    return pdlt.sample(net, X[:1], n_samples, seed=seed)


@pytest.fixture(scope="module")
def vanishing():
    # C_W = 2^-60: K^(l) = 2^(-61(l-1)) K^(1), so K^2 leaves float64 at l = 9 while K stays representable to l = 14
    return _relu_run(2.0**-60)


def test_vanishing_normalized_vertex_matches_exact_finite_width(vanishing):
    nv = vanishing.normalized_vertex
    for l in (2, 5, 9, 12, 14):
        exact = (1 + 5 / N_W) ** (l - 1) - 1
        assert abs(nv.mean[l - 1, 0] - exact) < 5 * nv.stderr[l - 1, 0], (l, nv.mean[l - 1, 0], exact)
    assert np.all(np.isfinite(vanishing.kurtosis.mean)) and np.all(np.isfinite(vanishing.normalized_six_point_single.mean))


def test_vanishing_raw_four_point_raises_with_advice(vanishing):
    # the two-point function itself is representable at every layer, with a non-zero error
    g = vanishing.two_point
    assert np.all(g.mean > 0) and np.all(g.stderr > 0)
    for name in ("four_point", "vertex", "four_point_single", "six_point_single"):
        with pytest.raises(VanishingFlowError) as err:
            getattr(vanishing, name).mean
        assert err.value.layer is not None and err.value.layer <= 9
        assert "raise C_W" in str(err.value)
    with pytest.raises(VanishingFlowError, match="normalized_vertex"):
        vanishing.four_point.mean
    # layers before the underflow are still readable one at a time
    assert np.isfinite(vanishing.four_point[3].mean).all()
    text = vanishing.summary()
    assert "normalized_vertex" in text and " 0 +- " not in text and "inf" not in text


def test_exploding_is_the_exact_mirror_of_vanishing(vanishing):
    """C_W = 2^60: K ~ 2^(59 l) stays representable but K^2 does not. ReLU is homogeneous and 2^±60 are powers of
    two, so the rescaled networks are bit for bit those of C_W = 2^-60: the normalized results must be identical."""
    exploding = _relu_run(2.0**60)
    assert np.array_equal(exploding.normalized_vertex.mean, vanishing.normalized_vertex.mean)
    assert np.all(np.isfinite(exploding.two_point.mean))
    with pytest.raises(DivergentFlowError, match="normalized_vertex") as err:
        exploding.vertex.mean
    assert err.value.layer <= 9


def test_preactivation_underflow_raises_at_once():
    net = pdlt.MLP("relu", (3,) + (16,) * 24, C_W=2.0**-60)   # |z| < 2^-500 from layer ~18 on
    with pytest.raises(VanishingFlowError, match="raise C_W toward criticality") as err:
        pdlt.sample(net, X[:1], 64, seed=0, batches=8)
    assert 15 <= err.value.layer <= 20


def test_exact_zero_layer_is_not_underflow():
    """ReLU after a width-1 layer is exactly 0 in about half the networks (C_b = 0): a legitimate G = 0."""
    net = pdlt.MLP("relu", (3, 1, 4, 4), C_W=2.0)
    res = pdlt.sample(net, X[:1], 256, seed=0, batches=8)
    assert np.all(np.isfinite(res.two_point.mean)) and np.all(res.two_point.mean > 0)


def test_rescaling_is_exact_against_unscaled_samples():
    """Moderate depth with a non-trivial scale (k_l != 0): the runner's rescaled accumulation equals the unscaled
    statistics of the same networks (the conditional statistics of markov_reference; layer 1 is measured on its
    rows) to round-off."""
    net = pdlt.MLP("tanh", (3, 8, 6, 7), C_W=2.0**-20, C_b=2.0**-22)   # unequal widths: each layer's own n
    for method in ("markov",):
        res = pdlt.sample(net, X[:2], 128, seed=3, batches=8, method=method)
        assert any(k != 0 for k in res.config["scale_log2"])
        ref = (markov_reference(net, X[:2], 128, 3, 8) if method == "markov" else
               estimate_from_samples(sample_layers(net, X[:2], 128, seed=3, method=method), batches=8))
        for name in ("two_point", "four_point", "four_point_single", "six_point_single"):
            a, b = getattr(res, name), getattr(ref, name)
            np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=0, err_msg=f"{method} {name}")
            np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-8, atol=0, err_msg=f"{method} {name}")


@pytest.mark.slow
def test_deep_ordered_relu_never_reports_zero():
    """The issue's case: ReLU C_W = 1/2, L = 300 (K shrinks by 4 per layer). Fourth-order statistics ~K^2 used to
    underflow to 0.0 +- 0.0 (and the two-point standard error too)."""
    res = pdlt.sample(pdlt.MLP("relu", (3,) + (16,) * 300, C_W=0.5), X[:1], 256, seed=0, batches=8)
    assert res.two_point.stderr[-1, 0, 0] > 0
    with pytest.raises(VanishingFlowError, match="normalized_vertex"):
        res.four_point.mean
    nv = res.normalized_vertex
    assert np.all(np.isfinite(nv.mean)) and nv.mean[-1, 0] > 0 and nv.stderr[-1, 0] > 0


# ------------------------------------------------------------------------------------------------ item 10


def test_width_one_layer_is_reported_undefined():
    net = pdlt.MLP("tanh", (3, 8, 1, 8), C_W=1.0)
    res = pdlt.sample(net, X[:2], 64, seed=0, batches=8)
    assert res.undefined == {"four_point": (2,), "vertex": (2,), "normalized_vertex": (2,)}
    assert np.all(np.isnan(res.four_point.mean[1])) and np.all(np.isnan(res.normalized_vertex.mean[1]))
    for l in (1, 3):    # every other entry is a number
        assert np.all(np.isfinite(res.four_point.mean[l - 1])) and np.all(np.isfinite(res.normalized_vertex.mean[l - 1]))
    text = res.summary()
    assert "undefined (width-1 layer)" in text and "nan" not in text.lower()


def test_estimate_errors_are_pdlt_errors():
    e = pdlt.Estimate(np.array([1.0, 3.0]), np.array([0.1, 0.1]), log2=np.array([-1100, 0]), layer=np.array([1, 2]),
                      name="four_point", normalized="normalized_vertex")
    with pytest.raises(PdltError):
        e.mean
    assert e[1].mean == 3.0 and not e.representable and e[1].representable

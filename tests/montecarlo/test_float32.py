"""float32 network arithmetic in the Monte Carlo samplers (``pdlt.sample(..., dtype="float32")``).

Exact checks use fixed seeds and tolerances in standard errors (|z| < 5, as in test_samplers.py); the exact values
come from closed forms, not from the 1/n theory where that theory is not exact. float32 normals are a stream of
their own, so comparisons with float64 runs are two-sample tests.
"""

import warnings

import numpy as np
import pytest

import pdlt
from pdlt.errors import CheckpointError, DivergentFlowError, ParameterError, TruncationWarning
from pdlt.montecarlo import psd_sqrt, sample, sample_ntk, sample_trained
from pdlt.montecarlo import runner as R
from pdlt.montecarlo.activations_jax import jax_activation
from pdlt.montecarlo.samplers import reference_scale
from test_samplers import ZMAX, assert_z, deep_linear_exact, two_sample_z   # the exact references of float64

X2 = np.array([[1.0, 0.0], [0.6, 0.8]])


# ---------------------------------------------------------------------------------------------------
# exactness in float32
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, C_W, C_b, method", [("tanh", 1.5, 0.1, "markov"), ("relu", 2.0, 0.05, "weights")])
def test_layers_one_and_two_exact(name, C_W, C_b, method):
    """L = 2, any width: layer 1 is Gaussian with ``K^(1)`` (vertex 0); given layer 1 the metric of layer 2 is a mean
    of n_1 iid terms, so ``E[z z] = K^(2)`` and ``n_1 Cov(G_ab, G_cd) = V^(2)`` exactly (test_samplers.py,
    test_one_hidden_layer_exact_at_any_width): the theory's K and V at l <= 2 are exact at n_1 = 3."""
    net = pdlt.MLP(name, (2, 3, 4), C_W=C_W, C_b=C_b)
    res = sample(net, X2, 40_000, seed=11, method=method, dtype="float32", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)   # about the 1/n series at n_1 = 3; l <= 2 is exact
        th = pdlt.finite_width(net, X2)
    for l in (1, 2):
        assert_z(res.two_point[l - 1], th.two_point(l), what=f"{name} float32 two_point l={l}")
        assert_z(res.vertex[l - 1], th.vertex(l), what=f"{name} float32 vertex l={l}")
    assert res.config["dtype"] == "float32" and res.info["dtype"] == "float32"


def test_deep_linear_exact():
    """d = 3 inputs through a width-2 layer: the float32 metric is singular (eigh with clipping in float32)."""
    x = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.3, -0.7, 1.0]])
    net = pdlt.MLP("linear", (3, 4, 2, 6), C_W=1.1, C_b=0.2)
    res = sample(net, x, 40_000, seed=7, dtype="float32", progress=False)
    for name, val in deep_linear_exact(net, x).items():
        assert_z(getattr(res, name), val, what=f"deep linear float32 {name}")


def test_float32_agrees_with_float64_within_errors():
    """Independent draws (float32 normals are their own stream): the estimates agree within their errors, the
    float32 sums are float64 and the configurations differ only by dtype."""
    net = pdlt.MLP("tanh", (2, 16, 16, 16), C_W=1.0, C_b=0.0)
    r64 = sample(net, X2, 8192, seed=3, progress=False)
    r32 = sample(net, X2, 8192, seed=3, dtype="float32", progress=False)
    for name in ("two_point", "vertex", "four_point_single"):
        assert np.max(np.abs(two_sample_z(getattr(r32, name), getattr(r64, name)))) < ZMAX, name
    assert not np.array_equal(r32.state.sums, r64.state.sums) and r32.state.sums.dtype == np.float64
    assert r32.config["scale_log2"] == r64.config["scale_log2"]
    # float64 fingerprints (and checkpoints) predate the option: no dtype in their configuration
    assert "dtype" not in r64.config and r64.info["dtype"] == "float64"
    assert r32.config["fingerprint"] != r64.config["fingerprint"]


def _perpendicular(res, layer):
    """Mean and standard error over batches of ``G_aa + G_bb - 2 G_ab`` (inputs 0, 1) at ``layer``: the squared
    distance of the two inputs' preactivations, from the batch sums of ``t2`` (pairs (0,0), (0,1), (1,1))."""
    t2 = res.state.sums[:, layer - 1, :3] / res.state.counts[:, None]
    per = t2[:, 0] + t2[:, 2] - 2 * t2[:, 1]
    return per.mean(), per.std(ddof=1) / np.sqrt(per.size)


@pytest.mark.parametrize("eps", [1e-3, 1e-4])
def test_nearly_collinear_inputs_keep_their_distance_in_float32(eps):
    """A float32 metric could not hold the part that separates inputs at distance 1e-4 |x| (it came out 4x too
    large, and 5% at 1e-3): markov keeps the metric and its root in float64. Against float64 runs (|z| < 5, about
    1% resolution) at layers 2 and 3."""
    net = pdlt.MLP("tanh", (2, 16, 16, 16), C_W=1.5, C_b=0.1)
    x = np.array([[1.0, 0.0], [1.0, eps]])
    r64 = sample(net, x, 8192, seed=5, progress=False)
    r32 = sample(net, x, 8192, seed=5, dtype="float32", progress=False)
    for layer in (2, 3):
        (m32, s32), (m64, s64) = _perpendicular(r32, layer), _perpendicular(r64, layer)
        assert abs(m32 - m64) < ZMAX * np.hypot(s32, s64), (layer, m32, m64, s32, s64)
        assert s64 < 0.02 * m64          # the check resolves a few percent


def test_network_fn_float32_arithmetic():
    """The preactivations are float32; psd_sqrt stays float32 and exact to float32 rounding (d = 1, 2, 3, singular)."""
    import jax
    import jax.numpy as jnp

    from pdlt.montecarlo.samplers import network_fn

    fn = network_fn("markov", jax_activation("tanh", "float32"), (2, 5, 5), keep_z=True, dtype="float32")
    zs = fn(jax.random.key(0), jnp.asarray(X2), jnp.ones(2), jnp.zeros(2))
    assert all(z.dtype == jnp.float32 for z in zs)
    rng = np.random.default_rng(0)
    for d, n in ((1, 3), (2, 4), (3, 5), (3, 2)):
        A = rng.normal(size=(d, n))
        G = (A @ A.T / n).astype(np.float32)
        Rt = psd_sqrt(jnp.asarray(G))
        assert Rt.dtype == jnp.float32
        Rt = np.asarray(Rt, dtype=np.float64)
        np.testing.assert_allclose(Rt @ Rt, G, atol=2e-6 * np.abs(G).max())
    with pytest.raises(ParameterError) as err:
        network_fn("markov", jax_activation("tanh"), (2, 5), dtype="float16")
    assert err.value.setting == "dtype"


@pytest.mark.parametrize("name", ["tanh", "relu", "gelu", "swish", "softplus", "sin", "erf", "sigmoid"])
def test_float32_activation_forms(name):
    act = pdlt.activation(name)
    z = np.linspace(-20.0, 20.0, 401)
    got = np.asarray(jax_activation(act, "float32")(z))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, act(z.astype(np.float32).astype(np.float64)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# refusals and the range of float32
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["float16", 3, "double", np.int32])
def test_bad_dtype(bad):
    with pytest.raises(ParameterError, match="dtype") as err:
        sample(pdlt.MLP("tanh", (2, 4)), X2, 64, batches=8, dtype=bad, progress=False)
    assert err.value.setting == "dtype"


def test_numpy_dtype_accepted():
    net = pdlt.MLP("tanh", (2, 4))
    assert sample(net, X2, 64, batches=8, dtype=np.float32, progress=False).config["dtype"] == "float32"


def test_ntk_and_training_refuse_float32():
    net = pdlt.MLP("tanh", (2, 4, 4), C_W=1.0)
    with pytest.raises(ParameterError, match="float64 only") as err:
        sample_ntk(net, X2, 64, batches=8, dtype="float32", progress=False)
    assert err.value.setting == "dtype"
    net1 = pdlt.MLP("tanh", (2, 4, 1), C_W=1.0)
    with pytest.raises(ParameterError, match="float64 only") as err:
        sample_trained(net1, X2, [0.5, -0.5], X2[:1], 64, batches=8, eta=0.1, steps=2, dtype="float32",
                       progress=False)
    assert err.value.setting == "dtype"


@pytest.mark.parametrize("C_W, x", [(1e-40, X2), (1e40, X2), (1.0, 1e16 * X2)])
def test_kernel_outside_float32_refused(C_W, x):
    """Kernels below ~1e-30 (float32 flushes to 0 below ~1e-38) or above ~1e30 (overflow at ~3e38), and inputs whose
    squares leave that range, are refused before sampling, naming dtype; float64 samples them."""
    net = pdlt.MLP("linear", (2, 4, 4), C_W=C_W)
    with pytest.raises(ParameterError, match="dtype='float64'") as err:
        sample(net, x, 64, batches=8, dtype="float32", progress=False)
    assert err.value.setting == "dtype"
    reference_scale(net, x)      # float64 holds it (VanishingFlowError otherwise)


def test_float32_overflow_is_a_divergent_flow():
    """A layer beyond float32 that the pilot could not see (it overflows float64 too: the pilot keeps the previous
    layer's scale) is found by the samplers' finiteness check, as in float64."""
    net = pdlt.MLP("linear", (1, 4, 4), C_W=(1.0, 1e300))
    for dtype in ("float64", "float32"):
        with pytest.raises(DivergentFlowError) as err:
            sample(net, [[1e5]], 64, batches=8, dtype=dtype, progress=False)
        assert err.value.layer == 2


def test_float32_nonfinite_counted_by_chunk_function():
    """C_W^(2) = 1e37, C_W^(3) = 1e45: the preactivations of layer 2 (~3e18) fit float32, those of layer 3 (~1e41)
    do not, but fit float64: the float32 chunk counts every network as failed from layer 3 on, the float64 chunk
    none (the runner refuses such a float32 run before sampling; this is the samplers' own guard). The markov
    sampler measures the last layer on its float64 metric without forming its rows, so the overflowing layer is
    an inner one here (layer 4 inherits the failure)."""
    import jax

    net = pdlt.MLP("linear", (1, 4, 4, 4, 4), C_W=(1.0, 1e37, 1e45, 1.0))
    devs = R.resolve_devices(None)
    kd = jax.random.key_data(jax.random.key(0))
    nbad = {}
    for dtype in ("float64", "float32"):
        fn, sharding = R.chunk_function("markov", net.activation, net.widths, 1, 8, 4, devs, dtype=dtype)
        idx = jax.device_put(np.arange(8, dtype=np.int64), sharding)
        _, nb = fn(kd, idx, np.int64(8), np.array([[1.0]]), np.asarray(net.C_W), np.asarray(net.C_b))
        nbad[dtype] = np.asarray(nb)[0]
    assert nbad["float64"].tolist() == [0, 0, 0, 0]
    assert nbad["float32"].tolist() == [0, 0, 8, 8]


@pytest.mark.parametrize("first, second", [("float64", "float32"),
                                           pytest.param("float32", "float64", marks=pytest.mark.slow)])
def test_checkpoint_of_other_dtype_refused(tmp_path, first, second):
    net = pdlt.MLP("tanh", (2, 4, 4))
    ck = tmp_path / "run.npz"
    sample(net, X2, 64, batches=8, checkpoint=ck, dtype=first, progress=False)
    with pytest.raises(CheckpointError, match="dtype"):
        sample(net, X2, 128, batches=8, checkpoint=ck, dtype=second, progress=False)
    assert sample(net, X2, 128, batches=8, checkpoint=ck, dtype=first, progress=False).n_samples == 128


# ---------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------


def test_float32_needs_about_half_the_memory():
    for method in ("markov", "weights"):
        b64 = R.bytes_per_network(method, (512,) * 9, 4)
        b32 = R.bytes_per_network(method, (512,) * 9, 4, "float32")
        assert 0.4 < b32 / b64 < 0.75, (method, b32 / b64)
    per = R.bytes_per_network("markov", (2, 8, 8), 2, "float32")
    assert R._chunk_size("markov", (2, 8, 8), 2, 10**6, 1, None, 7 * per + 1, dtype="float32") == 7


class _Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        return self.stats


def test_memory_budget_auto():
    gpu = {"bytes_limit": 80 * 2**30, "bytes_in_use": 16 * 2**30}
    assert R._auto_budget([_Device(gpu), _Device({**gpu, "bytes_in_use": 0})]) == 16 * 2**30
    assert R._auto_budget([_Device(None)]) == R.DEFAULT_MEMORY_BUDGET       # CPU: no memory statistics
    net = pdlt.MLP("tanh", (2, 4))
    r = sample(net, X2, 64, batches=8, memory_budget="auto", progress=False)
    assert r.info["memory_budget"] == R.DEFAULT_MEMORY_BUDGET and r.complete
    with pytest.raises(ParameterError, match="'auto'") as err:
        sample(net, X2, 64, batches=8, memory_budget="lots", progress=False)
    assert err.value.setting == "memory_budget"

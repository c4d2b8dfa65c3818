"""Issue 10, items 9 and 6 (posterior part): the three posterior paths (pdlt.posterior, pdlt.posterior_mc,
pdlt.langevin_posterior) validate their arguments in one place with one wording, never let a raw
TypeError/LinAlgError/JAX error escape, never return the prior as a posterior, and the O(1/n) posterior says
when its expansion is broken. Also: the architecture refuses complex or non-numeric inputs and settings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.errors import ParameterError, PdltError, PdltWarning, SingularKernelError, TruncationWarning

X = np.array([[1.0, 0.2, -0.5], [0.3, 0.9, 0.1]])
NET = pdlt.MLP("tanh", (3, 4, 1))

# each path with knobs small enough that a run that gets past validation is cheap
PATHS = {
    "posterior": lambda net, xa, y, xb, s2, **kw: pdlt.posterior(net, xa, y, xb, s2, **kw),
    "posterior_mc": lambda net, xa, y, xb, s2, **kw: pdlt.posterior_mc(
        net, xa, y, xb, s2, **{"n_samples": 64, "batches": 4, "min_ess": 0.0, **kw}),
    "langevin": lambda net, xa, y, xb, s2, **kw: pdlt.langevin_posterior(
        net, xa, y, xb, s2, **{"n_chains": 4, "n_steps": 8, "burn_in": 2, **kw}),
}

# (label, arguments (net, x_train, y_train, x_test, noise_var), the argument the message must name)
SHARED_BAD = [
    ("complex x_train", (NET, X[:1] + 1j, [0.3], X[1:], 0.1), "x_train"),
    ("complex y_train", (NET, X[:1], [0.3 + 1j], X[1:], 0.1), "y_train"),
    ("complex x_test", (NET, X[:1], [0.3], X[1:] * (1 + 0j) + 1j, 0.1), "x_test"),
    ("string x_test", (NET, X[:1], [0.3], [["a", "b", "c"]], 0.1), "x_test"),
    ("empty x_test", (NET, X[:1], [0.3], np.zeros((0, 3)), 0.1), "x_test"),
    ("wrong n_0 of x_test", (NET, X[:1], [0.3], np.ones((1, 4)), 0.1), "x_test"),
    ("NaN x_train", (NET, X[:1] * np.nan, [0.3], X[1:], 0.1), "x_train"),
    ("y too long", (NET, X[:1], [0.3, 0.1], X[1:], 0.1), "y_train"),
    ("y too many outputs", (NET, X[:1], [[0.3, 0.1]], X[1:], 0.1), "y_train"),
    ("noise bool", (NET, X[:1], [0.3], X[1:], True), "noise_var"),
    ("noise str", (NET, X[:1], [0.3], X[1:], "0.1"), "noise_var"),
    ("noise negative", (NET, X[:1], [0.3], X[1:], -0.1), "noise_var"),
    ("noise NaN", (NET, X[:1], [0.3], X[1:], float("nan")), "noise_var"),
    ("noise complex", (NET, X[:1], [0.3], X[1:], 0.1 + 0j), "noise_var"),
    ("net not an MLP", ("tanh", X[:1], [0.3], X[1:], 0.1), "net"),
] + [("net without hidden layer", (pdlt.MLP("tanh", (3, 1)), X[:1], [0.3], X[1:], 0.1), "net")]
MC_ONLY_BAD = SHARED_BAD[-1:]
SHARED_BAD = SHARED_BAD[:-1]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("label, args, name", SHARED_BAD, ids=[b[0] for b in SHARED_BAD])
def test_shared_arguments_refused_identically_by_all_paths(path, label, args, name):
    with pytest.raises(ParameterError) as err:
        PATHS[path](*args)
    assert err.value.setting == name and name in str(err.value), (label, str(err.value))
    # one place, one wording: the theory path's message is the reference
    with pytest.raises(ParameterError) as ref:
        PATHS["posterior"](*args)
    assert str(err.value) == str(ref.value)


@pytest.mark.parametrize("path", ["posterior_mc", "langevin"])
def test_sampling_paths_need_a_hidden_layer(path):
    with pytest.raises(ParameterError) as err:
        PATHS[path](*MC_ONLY_BAD[0][1])
    assert err.value.setting == "net" and "L >= 2" in str(err.value)


def test_theory_posterior_without_hidden_layer_is_the_exact_gaussian_one():
    """L = 1: z = b + W x is exactly Gaussian with K = C_b + C_W x.x/n_0, so the posterior is the GP one and the
    1/n corrections vanish identically."""
    net = pdlt.MLP("tanh", (3, 1), C_W=1.3, C_b=0.2)
    post = pdlt.posterior(net, X[:1], [0.3], X[1:], 0.1)
    K = 0.2 + 1.3 * X @ X.T / 3
    assert post.mean[0, 0] == pytest.approx(K[1, 0] / (K[0, 0] + 0.1) * 0.3, rel=1e-12)
    assert not np.any(post.mean_correction) and not np.any(post.cov_correction)


def test_duplicate_training_inputs_at_zero_noise_same_error_in_both_paths():
    dup = np.stack([X[0], X[0]])
    msgs = []
    for path in ("posterior", "posterior_mc"):
        with pytest.raises(SingularKernelError, match="noise_var > 0") as err:  # was LinAlgError in posterior_mc
            PATHS[path](NET, dup, [0.3, 0.3], X[1:], 0.0)
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1] and "x_train row 0" in msgs[0]
    PATHS["posterior_mc"](NET, dup, [0.3, 0.3], X[1:], 0.1)  # with noise the duplicate is fine


def test_singular_sampled_metric_at_zero_noise_is_a_singular_kernel_error():
    # n_{L-1} = 1 < n_train = 2: every sampled G^_AA has rank 1 (C_b = 0), distinct inputs notwithstanding
    net = pdlt.MLP("relu", (3, 1, 1), C_W=2.0, C_b=0.0)
    with pytest.raises(SingularKernelError, match="sampled networks.*noise_var > 0"):
        pdlt.posterior_mc(net, X, [0.3, 0.1], X[:1] * 0.5, 0.0, n_samples=64, batches=4)


@pytest.mark.parametrize("knobs, name", [
    ({"seed": 0.5}, "seed"), ({"seed": -1}, "seed"), ({"seed": "0"}, "seed"),
    ({"n_samples": 100.5}, "n_samples"), ({"n_samples": 0}, "n_samples"), ({"n_samples": "64"}, "n_samples"),
    ({"batches": 1}, "batches"), ({"batches": True}, "batches"), ({"n_samples": 3, "batches": 4}, "n_samples"),
    ({"min_ess": float("nan")}, "min_ess"),
])
def test_posterior_mc_knobs(knobs, name):
    with pytest.raises(ParameterError) as err:
        PATHS["posterior_mc"](NET, X[:1], [0.3], X[1:], 0.1, **knobs)
    assert err.value.setting == name and name in str(err.value)


def test_huge_test_inputs_are_named_not_the_flow():
    """A test input of 1e300 overflows the sampled metric at layer 1: the error names the inputs (it said "lower
    C_W")."""
    with pytest.raises(pdlt.DivergentFlowError, match="the inputs are too large") as err:
        pdlt.montecarlo.posterior_mc(pdlt.MLP("tanh", (1, 8, 1)), [[1.0]], [0.5], [[1e300]], noise_var=0.1,
                                     n_samples=64)
    assert "lower C_W" not in str(err.value)


def test_posterior_mc_integral_float_count_accepted():
    a = PATHS["posterior_mc"](NET, X[:1], [0.3], X[1:], 0.1, n_samples=64.0, seed=3.0)
    b = PATHS["posterior_mc"](NET, X[:1], [0.3], X[1:], 0.1, n_samples=64, seed=3)
    assert a.n_samples == 64 and isinstance(a.n_samples, int)
    np.testing.assert_array_equal(a.mean.mean, b.mean.mean)


def test_posterior_mc_degenerate_weights_raise_instead_of_nan_errors():
    # one network carries all the weight (ESS ~ 1): the jackknife error was NaN; now a clear error
    net = pdlt.MLP("tanh", (3, 8, 1), C_W=1.5, C_b=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)  # the ESS warning comes first
        with pytest.raises(ParameterError, match="n_samples") as err:
            pdlt.posterior_mc(net, X, [30.0, -20.0], X[:1] * 0.5, 1e-4, n_samples=2000, seed=1)
    assert err.value.setting == "n_samples"


@pytest.mark.parametrize("knobs, name", [
    ({"seed": 1.5}, "seed"), ({"n_steps": 0}, "n_steps"), ({"n_steps": 10.5}, "n_steps"),
    ({"n_chains": 0}, "n_chains"), ({"n_chains": 1}, "n_chains"), ({"burn_in": -1}, "burn_in"),
    ({"step": -0.1}, "step"), ({"step": 0.0}, "step"), ({"step": float("inf")}, "step"), ({"step": "0.1"}, "step"),
    ({"metropolis": "no"}, "metropolis"),
])
def test_langevin_knobs(knobs, name):
    with pytest.raises(ParameterError) as err:
        PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.1, **knobs)
    assert err.value.setting == name and name in str(err.value)


def test_langevin_zero_noise_names_noise_var():
    with pytest.raises(ParameterError, match="noise_var > 0") as err:
        PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.0)
    assert err.value.setting == "noise_var"


def test_mixing_checks_on_chain_summaries():
    """The post-run checks on per-chain summaries (fast; the end-to-end runs below are marked slow)."""
    from pdlt.montecarlo.langevin import _mixing_caveats, _rhat

    rng = np.random.default_rng(0)
    means, variances = rng.normal(0, 0.01, (8, 1, 1)), np.ones((8, 1, 1))  # well mixed: chain means agree
    assert _mixing_caveats(np.full(8, 0.6), means, variances, 1000, 0.05) == ()
    with pytest.raises(ParameterError, match="lower step") as err:  # no chain moved: the prior, not a posterior
        _mixing_caveats(np.zeros(8), means, variances, 1000, 100.0)
    assert err.value.setting == "step"
    low = _mixing_caveats(np.full(8, 0.05), means, variances, 1000, 1.0)
    assert [c.kind for c in low] == ["mixing"] and "acceptance" in low[0].message
    stuck = _mixing_caveats(np.r_[np.zeros(2), np.full(6, 0.6)], means, variances, 1000, 1.0)
    assert any("2 of 8" in c.message for c in stuck)
    # chain means spread like independent prior draws, tiny within-chain motion: R_hat large
    spread = rng.normal(0, 1.0, (8, 1, 1))
    assert np.max(_rhat(spread, np.full((8, 1, 1), 1e-6), 100)) > 100
    assert any("R_hat" in c.message for c in _mixing_caveats(np.full(8, 0.99), spread, np.full((8, 1, 1), 1e-6),
                                                             100, 1e-8))
    assert np.isinf(_rhat(spread, np.zeros((8, 1, 1)), 100)).all()


@pytest.mark.slow
def test_langevin_refuses_to_return_the_prior():
    # step = 100: every MALA proposal rejected, the chains sat on their prior draws (acceptance 0 was returned)
    with pytest.raises(ParameterError, match="lower step") as err:
        PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.1, step=100.0)
    assert err.value.setting == "step"


@pytest.mark.slow
def test_langevin_chains_that_barely_move_warn():
    # step = 1e-8: every proposal accepted, yet each chain stays within ~1e-3 of its prior draw; R_hat says so
    with pytest.warns(PdltWarning, match="R_hat"):
        res = PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.1, step=1e-8, n_steps=50)
    assert res.acceptance > 0.99 and res.caveats and res.caveats[0].kind == "mixing" and np.max(res.rhat) > 10


@pytest.mark.slow
def test_langevin_burn_in_longer_than_kept_steps_is_legitimate():
    # burn-in and the kept steps are separate phases: burn_in > n_steps and burn_in = 0 are both well defined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)  # 3 kept steps per chain: R_hat rightly warns
        res = PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.1, n_steps=3, burn_in=20)
        assert res.n_steps == 3 and np.all(np.isfinite(res.mean.mean)) and np.all(np.isfinite(res.mean.stderr))
        PATHS["langevin"](NET, X[:1], [0.3], X[1:], 0.1, burn_in=0)


_bad_values = st.sampled_from([None, "1", True, 1 + 1j, float("nan"), float("inf"), -1, 0, 0.5, 2.5, [1, 2], b"x"])


@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(sorted(PATHS)), which=st.sampled_from(
    ["x_train", "y_train", "x_test", "noise_var", "seed", "n_samples", "batches", "n_chains", "n_steps", "burn_in",
     "step"]), value=_bad_values)
def test_nothing_but_pdlt_errors_escape(path, which, value):
    args = {"x_train": X[:1], "y_train": [0.3], "x_test": X[1:], "noise_var": 0.1}
    kw = {}
    if which in args:
        args[which] = value
    elif (path == "posterior") or (path == "posterior_mc" and which in ("n_chains", "n_steps", "burn_in", "step")) \
            or (path == "langevin" and which in ("n_samples", "batches")):
        return
    else:
        kw[which] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)
        try:
            PATHS[path](NET, *args.values(), **kw)
        except PdltError:
            pass


def test_posterior_flags_broken_expansion():
    # y = 100 against a prior std ~0.7: NNGP mean 34.6, the "O(1/n) correction" 3004 (silently, before)
    net = pdlt.MLP("tanh", (3, 32, 1))
    with pytest.warns(TruncationWarning, match="posterior mean"):
        post = pdlt.posterior(net, X[:1], [100.0], X[1:], noise_var=0)
    mine = [c for c in post.caveats if c.kind == "truncation" and c.message.startswith("posterior mean")]
    assert len(mine) == 1
    # the ratio, as documented: |shift of the mean| / max(|NNGP mean|, NNGP posterior std)
    sd0 = np.sqrt(np.diagonal(post.cov_infinite))[:, None]
    ratio = np.abs(post.mean - post.mean_infinite) / np.maximum(np.abs(post.mean_infinite), sd0)
    assert mine[0].size == pytest.approx(ratio.max(), rel=1e-12) and mine[0].size > 50


def test_posterior_well_behaved_case_is_silent():
    net = pdlt.MLP("tanh", (3, 256, 256, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PdltWarning)
        post = pdlt.posterior(net, X[:1], [0.5], X[1:], noise_var=0.1)
    assert post.caveats == ()


def test_posterior_exact_conditioning_at_a_training_input_is_not_flagged():
    # mean and variance both vanish (round-off) at a test input equal to a training input: no spurious ratio
    net = pdlt.MLP("tanh", (3, 256, 256, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PdltWarning)
        post = pdlt.posterior(net, X, [0.0, 0.2], X[:1], noise_var=0.0)
    assert post.caveats == ()


def test_architecture_refuses_complex_and_non_numeric():
    net = pdlt.MLP("tanh", (3, 4, 1))
    with pytest.raises(ParameterError, match="real") as err:  # the imaginary part was dropped silently
        pdlt.kernel_flow(net, X + 1j)
    assert err.value.setting == "x"
    with pytest.raises(ParameterError) as err:
        net.targets([0.3 + 1j], 1)
    assert err.value.setting == "y_train"
    for bad in (True, "1", float("nan"), 1 + 1j, -1.0, [1.0, "a"], [[1.0], [1.0]]):
        for name in ("C_W", "C_b"):
            with pytest.raises(ParameterError) as err:
                pdlt.MLP("tanh", (3, 4, 1), **{name: bad})
            assert err.value.setting == name and name in str(err.value), (name, bad)
    for widths in ((3, 32.5, 1), ("3", 4, 1), (3, None, 1), (3, True, 1), (3, 0, 1), (3, 4, 1 + 0j)):
        with pytest.raises(ParameterError) as err:
            pdlt.MLP("tanh", widths)
        assert err.value.setting == "widths" and "widths" in str(err.value), widths
    assert pdlt.MLP("tanh", (3.0, np.int64(4), 1), C_W=np.float64(1.5), C_b=[0, 0.1]).widths == (3, 4, 1)

"""Bad and extreme arguments that once escaped as raw Python errors, NaN or inf: each public call refuses them with
a ParameterError naming the setting to change."""

import warnings

import numpy as np
import pytest

import pdlt

_NET = pdlt.MLP("tanh", (2, 6, 6, 1), C_b=0.1)
_XA, _YA, _XB = [[1.0, 0.5], [0.3, -1.0]], [0.5, -0.5], [[0.2, 0.2]]


def _delta():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        return pdlt.delta_finite_width(_NET, np.array([1.0, 0.5]), np.array([1e-3, 0.0]))


CASES = [
    # residual criticality: C_W = (1 - gamma^2)/xi^2 x C_W* was inf (and C_b nan) at xi = 1e-160, a ZeroDivisionError
    # at xi = 1e-300; a string gamma a raw ValueError
    (lambda: pdlt.residual_criticality("tanh", 0.5, 1e-160), "xi"),
    (lambda: pdlt.residual_criticality("tanh", 0.5, 1e-300), "xi"),
    (lambda: pdlt.residual_criticality("tanh", "a"), "gamma"),
    (lambda: pdlt.residual_criticality("tanh", 1j), "gamma"),
    # the delta expansion's separation scale: NaN arrays, a raw OverflowError at 1e300, a raw TypeError for 'a'
    (lambda: _delta().vertex(3, float("nan")), "scale"),
    (lambda: _delta().vertex(3, 1e300), "scale"),
    (lambda: _delta().nlo_kernel(3, "a"), "scale"),
    (lambda: _delta().connected_four_point(3, 1e80), "scale"),
    # kernels and lengths that are not real numbers
    (lambda: pdlt.chi_par("tanh", "a"), "K"),
    (lambda: pdlt.chi_perp("tanh", 1 + 1j), "K"),
    (lambda: pdlt.correlation_length("tanh", 1.0, 0.0, K1="a"), "K1"),
    # counts beyond float64: math.log(float(10**400)) overflowed; 1e9 layers of per-layer rates ran for minutes
    (lambda: pdlt.train_prediction(_NET, _XA, _YA, _XB, eta=0.1, steps=10**400), "steps"),
    (lambda: pdlt.critical_learning_rates("relu", 10**400), "L"),
    (lambda: pdlt.critical_learning_rates("relu", 10**9), "L"),
]


def test_the_same_calls_work_in_range():
    assert pdlt.residual_criticality("tanh", 0.5, 1.0).C_W == pytest.approx(0.75)
    assert np.all(np.isfinite(_delta().vertex(3, 2.0)))
    assert pdlt.correlation_length("tanh", 1.5, 0.1, K1=1.0).chi_par < 1
    assert len(pdlt.critical_learning_rates("relu", 1000).lambda_W) == 1000


SWEEP_CASES = [
    # raw TypeErrors: an int for the widths, seed=None; a width of 4.5 was truncated to 4; depth 0 blamed widths
    (lambda: pdlt.width_sweep("tanh", _XA, 2, 8), "widths"),
    (lambda: pdlt.ntk_width_sweep("tanh", [[1.0, 0.0]], 2, 8), "widths"),
    (lambda: pdlt.width_sweep("tanh", _XA, 2, [4, 8], seed=None), "seed"),
    (lambda: pdlt.ntk_width_sweep("tanh", [[1.0, 0.0]], 2, [4, 6, 8], seed=None), "seed"),
    (lambda: pdlt.width_sweep("tanh", _XA, 2, [4.5, 8]), "widths"),
    (lambda: pdlt.width_sweep("tanh", _XA, 0, [4, 8]), "depth"),
]


@pytest.mark.parametrize("case", range(len(CASES + SWEEP_CASES)))
def test_refused_naming_the_setting(case):
    call, setting = (CASES + SWEEP_CASES)[case]
    with pytest.raises(pdlt.ParameterError) as err:
        call()
    assert err.value.setting == setting


def test_compare_takes_one_layer_as_an_int():
    net = pdlt.MLP("tanh", (2, 8, 8))
    mc = pdlt.sample(net, _XA, 64, batches=4)
    assert {r.layer for r in pdlt.compare(pdlt.finite_width(net, _XA), mc, layers=2).rows} == {2}


def test_monte_carlo_sizes_beyond_memory_are_refused():
    # a raw JAX out-of-memory error (1.3e14 bytes) for the kept Langevin steps; posterior_mc held every metric with
    # no limit (1e15 networks ran on); one kept step gave R_hat = inf
    net, xa, ya, xb = pdlt.MLP("tanh", (2, 4, 1)), [[1.0, 0.0], [0.0, 1.0]], [0.5, -0.5], [[0.6, 0.8]]
    lang = lambda steps: pdlt.langevin_posterior(net, xa, ya, xb, 0.1, n_chains=4, n_steps=steps)      # noqa: E731
    for call, setting in ((lambda: lang(10**12), "n_steps"), (lambda: lang(1), "n_steps"),
                          (lambda: pdlt.posterior_mc(pdlt.MLP("tanh", (2, 4, 4, 1)), xa, ya, xb, 0.1,
                                                     n_samples=10**15), "n_samples")):
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting


def test_flow_arithmetic_overflow_is_a_divergent_flow():
    # gamma = 1e300: gamma^2 in Python floats was a raw OverflowError (and `pdlt flow` an internal error, exit 1)
    with pytest.raises(pdlt.DivergentFlowError) as err:
        pdlt.kernel_flow(pdlt.MLP("tanh", (2, 8, 8), gamma=[0.0, 1e300]), [[1.0, 0.0]])
    assert err.value.layer == 2


def test_scale_invariant_slopes_beyond_float64_moments():
    # leaky_relu(1e200): A_2 = inf, so the critical C_W came out 0 with chi = 1 claimed
    with pytest.raises(pdlt.errors.PdltError, match="slopes"):
        pdlt.activation("leaky_relu(1e200)")
    with pytest.raises(pdlt.errors.ActivationError, match="slopes"):
        pdlt.activation("Max(0, 1e200*z)")
    assert pdlt.criticality("leaky_relu(1e10)").C_W == pytest.approx(2 / (1 + 1e20))


def test_messages_name_the_cause():
    # targets of 1e200 were blamed on the step size (Langevin) or on eta (trained networks)
    net, xa, xb = pdlt.MLP("tanh", (2, 4, 1)), [[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8]]
    for call in (lambda: pdlt.langevin_posterior(net, xa, [1e200, 0.0], xb, 0.1, n_chains=4, n_steps=10),
                 lambda: pdlt.sample_trained(net, xa, [1e300, 0.0], xb, 16, eta=0.1, steps=5, batches=2)):
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == "y_train"
    # a per-layer C_W of 0 (with C_b = 0) was called the ordered phase; a breakdown case with C_W = 0 blamed x
    with pytest.raises(pdlt.VanishingFlowError, match=r"C_W\^\(2\) or C_b\^\(2\) must be positive"):
        pdlt.kernel_flow(pdlt.MLP("tanh", (1, 8, 8, 8), C_W=(1.0, 0.0, 1.0)), [[1.0]])
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.breakdown_curve(pdlt.BreakdownCase("x", "relu", 0.0), 8)
    assert err.value.setting == "case"

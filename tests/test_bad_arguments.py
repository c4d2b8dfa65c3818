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
    (lambda: pdlt.residual_criticality("relu", 0.5, 1e200), "xi"),          # C_W = 0.0 (1.5e-400 underflowed)
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


# ---------------------------------------------------------------------------------------------------
# accessors and helpers around the theory (sweeps, fits, plots, LaTeX): numpy read layer 0 as layer L, index -1 as the
# last width, and raised raw IndexError, TypeError, LinAlgError, ZeroDivisionError elsewhere
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep():
    return pdlt.width_sweep("tanh", [[1.0, 0.0]], 2, [4, 8, 16], n_samples=64)


def test_sweep_accessors_refuse_what_numpy_would_wrap(sweep):
    calls = [(lambda: sweep.fit("two_point", 0, (0, 0)), "l"), (lambda: sweep.expected("two_point", -1, (0, 0)), "l"),
             (lambda: sweep.fit("two_point", 2, (0, 5)), "idx"), (lambda: sweep.fit("vertex", 2, (0, 0)), "idx"),
             (lambda: sweep.theory_at(-1), "k"), (lambda: sweep.theory_at(3), "k"),
             (lambda: sweep.rows(layers=[5]), "l"), (lambda: sweep.rows(order=0), "order"),
             (lambda: sweep.rows(entries={"bogus": [(0, 0)]}), "entries")]
    for call, setting in calls:
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting
    # in range: layer 2 read as layer 2 (what l = 0 returned was layer L's), one layer as an int
    assert sweep.fit("two_point", 2, (0, 0)).values[0] == sweep.results[0].two_point.mean[1, 0, 0]
    assert {r.layer for r in sweep.rows(layers=2).rows} == {2}
    assert sweep.theory_at(2).net.widths[1] == 16
    with pytest.raises(TypeError):
        sweep.rows() + 1


@pytest.mark.parametrize("x", [[[1.0 + 5j, 0.0]], [[1.0, 0.0], [1.0]], [["a", "b"]]])
def test_sweep_inputs_are_checked_like_the_theory_s(x):
    # a complex x lost its imaginary part with only numpy's ComplexWarning
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.width_sweep("tanh", x, 2, [4, 8], n_samples=64)
    assert err.value.setting == "x"


def test_training_sweep_widths_are_not_truncated():
    # 4.7 became 4
    from pdlt.sweeps import train_width_sweep

    with pytest.raises(pdlt.ParameterError) as err:
        train_width_sweep("tanh", _XA, _YA, _XB, 2, [4.7, 8.2, 16.9], eta=0.1, steps=2, n_samples=64)
    assert err.value.setting == "widths"


FIT_CASES = [
    (lambda: pdlt.inverse_width_fit([8, 8, 8], [1.0, 1.1, 1.2], [0.1] * 3), "widths"),          # LinAlgError
    (lambda: pdlt.inverse_width_fit([1e300, 2e300, 3e300], [1.0, 1.1, 1.2], [0.1] * 3), "widths"),
    (lambda: pdlt.inverse_width_fit(["a", "b", "c"], [1.0, 1.1, 1.2], [0.1] * 3), "widths"),
    (lambda: pdlt.inverse_width_fit([8, 16, 32], [1.0, 1.1, 1.2], [0.1] * 3, order=None), "order"),    # TypeError
    (lambda: pdlt.inverse_width_fit([8, 16, 32], [1.0, 1.1, 1.2], [0.1] * 3, order=-1), "order"),      # empty fit
    (lambda: pdlt.inverse_width_fit([8, 16, 32], [1.0, 1.1, 1.2], [0.1] * 3, order=1.5), "order"),     # order 2
    (lambda: pdlt.inverse_width_fit([8, 16, 32, 64], [1.0, 1.1, 1.2, 1.3], [0.1] * 4).z(5, 1.0), "k"),
]


@pytest.mark.parametrize("case", range(len(FIT_CASES)))
def test_fit_arguments(case):
    call, setting = FIT_CASES[case]
    with pytest.raises(pdlt.ParameterError) as err:
        call()
    assert err.value.setting == setting


def test_fit_of_wide_widths_recovers_the_coefficients():
    # the design is taken in (n_min/n)^k: exact data a + b/n + c/n^2 at widths up to 1e5 give a, b, c back
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5])
    fit = pdlt.inverse_width_fit(n, 2.0 - 30.0 / n + 5e3 / n**2, 1e-9 * np.ones(5))
    np.testing.assert_allclose(fit.coef, [2.0, -30.0, 5e3], rtol=1e-6)


def test_ntk_second_order_below_float64_is_refused_not_zero():
    # lambda = 1e-200 gave variance 0 (true 1.8e-400), 1e-160 a subnormal 0.3 % off; above the bound the statistics
    # keep their exact scaling, lambda^2 for the variance
    net, x = pdlt.MLP("linear", (2, 4, 4, 4), C_b=0.1), [[1.0, 0.0]]        # (tanh's forms: 2 s of sympy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
        ref = pdlt.ntk_nnlo(net, x, 1.0, 1.0).variance(3).item()
        assert pdlt.ntk_nnlo(net, x, 1e-100, 1e-100).variance(3).item() == pytest.approx(1e-200 * ref, rel=1e-12)
        with pytest.raises(pdlt.VanishingFlowError):
            pdlt.ntk_nnlo(net, x, 1e-160, 1e-160)


def test_posterior_at_an_exactly_zero_test_input_is_quiet():
    # x = 0 with C_b = 0: output 0 at every order; 0/0 gave "ratio = nan, not small" caveats and numpy warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = pdlt.posterior(pdlt.MLP("tanh", (2, 8, 8, 1)), _XA, _YA, np.zeros((1, 2)))
    assert p.caveats == () and p.mean_infinite.item() == 0.0 and p.mean_correction.item() == 0.0


def test_plot_and_table_arguments(tmp_path):
    pytest.importorskip("matplotlib")
    from pdlt import plots
    from pdlt.latex import fmt_number, fmt_uncertainty

    x = np.arange(1, 4)
    net = pdlt.MLP("tanh", (2, 8, 8, 8))
    th, mc = pdlt.finite_width(net, _XA[:1]), pdlt.sample(net, _XA[:1], 64, batches=4)
    calls = [
        (lambda: plots.series_plot(x, {"a": 1.0 * x}, {}, xlabel="l", ylabel="y", bands={"a": (x, x)}), "bands"),
        (lambda: plots.series_plot(x, {}, {"b": (x, x, ["a", "b", "c"])}, xlabel="l", ylabel="y"), "points"),
        (lambda: plots.series_plot(x, {"$\\bogus$": 1.0 * x}, {}, xlabel="l", ylabel="y",
                                   path=tmp_path / "p.png"), "labels"),
        (lambda: plots.width_sweep_plot(pdlt.inverse_width_fit([8, 16, 32], [1.0, 1.1, 1.2], [0.1] * 3),
                                        ylabel="y", expected=(1.0,)), "expected"),
        (lambda: plots.vertex_vs_depth(th, mc, input_index=3), "input_index"),
        (lambda: plots.vertex_allowance(th, 2, 5), "input_index"),
        (lambda: fmt_uncertainty(1.0, 0.1, err_digits=0), "err_digits"),
        (lambda: pdlt.MLP("tanh", {2, 4, 1}), "widths"),              # a set came back sorted: (1, 2, 4)
    ]
    for call, setting in calls:
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting
    # theory and Monte Carlo of different networks were drawn together; compare refuses them
    with pytest.raises(pdlt.errors.MismatchError):
        plots.vertex_vs_depth(th, pdlt.sample(pdlt.MLP("tanh", (2, 8, 8, 8), C_W=2.0), _XA[:1], 64, batches=4))
    assert fmt_number(10**400) == r"$\infty$"                       # a raw OverflowError


def test_bayes_vs_training_arguments():
    from pdlt.bayes_vs_training import bayes_vs_training

    xa, ya, xb = [[1.0, 0.0]], [0.5], [[0.6, 0.8]]
    calls = [(lambda: bayes_vs_training(pdlt.MLP("tanh", (2, 4, 4, 1), C_W=(1, 1, 0), C_b=0.1), xa, ya, xb), "C_W"),
             (lambda: bayes_vs_training(pdlt.MLP("tanh", (2, 4, 4, 1)), xa, ya, xb, lambda_W=float("nan")), "lambda_W"),
             (lambda: bayes_vs_training(pdlt.MLP("tanh", (2, 4, 4, 1)), xa, ya, xb, eta_fraction=1.0), "eta_fraction")]
    for call, setting in calls:          # (a ZeroDivisionError; "lambda_b[2]"; "eta" after the whole posterior run)
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting


def test_decimal_coefficients_are_the_rationals_they_write():
    # 1.5*tanh(z), which sym.critical_point calls K*=0, was refused by sym.ntk_asymptotics (chi_par(0) = 1 - 2e-16 in
    # floats), and 'tanh(z) + 0.1*z' failed an internal assertion; each now equals its rational spelling
    import sympy as sp

    from pdlt import symbolic as sym

    assert pdlt.activation("tanh(z) + 0.1*z").taylor(3) == pdlt.activation("tanh(z) + z/10").taylor(3)
    terms = sym.ntk_asymptotics("1.5*tanh(z)").terms
    assert not any(sp.sympify(v).atoms(sp.Float) for v in terms.values())


@pytest.mark.slow       # (two symbolic derivations, ~5 s)
def test_decimal_and_rational_spellings_give_the_same_ntk_asymptotics():
    import sympy as sp

    from pdlt import symbolic as sym

    a, b = sym.ntk_asymptotics("1.5*tanh(z)").terms, sym.ntk_asymptotics("3*tanh(z)/2").terms
    assert a.keys() == b.keys() and all(sp.simplify(a[k] - b[k]) == 0 for k in a)


def test_monte_carlo_refuses_what_it_cannot_hold_or_reach():
    net, xa, ya, xb = pdlt.MLP("tanh", (2, 4, 1)), [[1.0, 0.0], [0.0, 1.0]], [0.5, -0.5], [[0.6, 0.8]]
    # float32 with inputs of 1e200: a raw OverflowError (Python's float ** 2)
    with pytest.raises(pdlt.ParameterError) as err:
        pdlt.sample(pdlt.MLP("tanh", (2, 4, 4)), [[1e200, 0.0]], 64, dtype="float32")
    assert err.value.setting == "dtype"
    # Langevin without Metropolis at too large a step: after 50 steps the outputs were ~1e40 (posterior mean -0.07),
    # returned with R_hat ~ 1 and no caveat
    with pytest.raises(pdlt.ParameterError, match="diverged") as err:
        pdlt.langevin_posterior(net, xa, ya, xb, 0.1, n_chains=8, n_steps=50, burn_in=10, step=0.5, metropolis=False)
    assert err.value.setting == "step"


def test_monte_carlo_helpers_check_their_arguments(tmp_path):
    from pdlt import montecarlo as M

    res = pdlt.sample(pdlt.MLP("tanh", (2, 4, 4)), [[1.0, 0.2], [0.3, -0.5]], 64)
    calls = [(lambda: res.save(str(tmp_path / "a\x00b")), "path"),                 # raw ValueError (embedded null)
             (lambda: M.bytes_per_network("markov", (2, 4, 4), -1), "d"),          # raw ValueError
             (lambda: M.bytes_per_network("foo", (2, 4, 4), 2), "method"),        # accepted
             (lambda: res.two_point.z(np.zeros(3)), "value"),                     # raw broadcast ValueError
             (lambda: pdlt.observables.names(max_order="a"), "max_order"),         # raw TypeError
             (lambda: pdlt.breakdown_curve(pdlt.breakdown_cases()[0], 8, L=4, n_networks=10), "n_networks"),
             # moments of samples ~1e200: two_point inf and kurtosis NaN, no warning
             (lambda: M.estimate_from_samples([1e200 * np.ones((16, 4, 2))], batches=4), "zs")]
    for call, setting in calls:
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting
    assert res.two_point.z(0.0).shape == res.two_point.mean.shape         # a number still broadcasts

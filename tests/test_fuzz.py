"""Fuzzing the public entry points: every call returns finite numbers or raises a pdlt error.

The property (issue 10): for random activations (registered and sympy, valid and invalid), hyperparameters in
the ordered, critical and chaotic phases, input scales from 1e-150 to 1e150, depths up to a few hundred,
degenerate and near-degenerate inputs and bad arguments of every type, a public call either

* returns a result in which every float is finite (documented "undefined" entries excepted, see
  ``_assert_finite``), or
* raises a :class:`pdlt.errors.PdltError` (a ``ValueError`` subclass whose message names the setting).

Any other exception (TypeError, LinAlgError, FloatingPointError, a JAX or sympy error) fails the test with the
arguments that produced it. Two profiles: the default run (CI) draws a few examples per entry point,
``-m slow`` draws many more. Hypothesis prints the falsifying example on failure.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pdlt
from pdlt.errors import PdltError

# examples per entry point: (default profile, slow profile); MC entry points compile a JAX program per shape,
# so their shapes are drawn from small sets and their counts are lower
FAST, SLOW = 12, 150
FAST_MC, SLOW_MC = 5, 40

PROFILES = [pytest.param("fast", id="fast"), pytest.param("slow", id="slow", marks=pytest.mark.slow)]

Z = sp.Symbol("z")


# examples run per test in this session, printed at the end (pytest -s) for the closing notes of fuzz runs
RAN: dict[str, int] = {}


def _run(profile: str, strategy, body, *, mc: bool = False):
    """Run ``body(example)`` under hypothesis with the profile's example count (derandomized for CI)."""
    n = (FAST_MC if mc else FAST) if profile == "fast" else (SLOW_MC if mc else SLOW)
    name = f"{body.__qualname__.split('.')[0]}[{profile}]"
    RAN[name] = 0

    def counted(example):
        RAN[name] += 1
        body(example)

    test = settings(max_examples=n, deadline=None, derandomize=profile == "fast", database=None,
                    suppress_health_check=list(HealthCheck))(given(strategy)(counted))
    test()
    print(f"\n{name}: {RAN[name]} examples")


# ------------------------------------------------------------------------------------------------------------
# the property
# ------------------------------------------------------------------------------------------------------------


def _floats_of(obj, path="result", seen=None):
    """Yield ``(path, array)`` for every float array reachable from a result object (dataclasses, estimates,
    dicts, tuples); properties that raise a pdlt error (a documented unrepresentable value) are skipped."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (bool, int, str, bytes, type(None), sp.Basic, pdlt.MLP, pdlt.Activation)):
        return
    if isinstance(obj, float):
        yield path, np.asarray(obj)
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fc":
            yield path, obj
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _floats_of(v, f"{path}[{k!r}]", seen)
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _floats_of(v, f"{path}[{i}]", seen)
        return
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _floats_of(getattr(obj, f.name), f"{path}.{f.name}", seen)
    for name in ("two_point", "four_point", "four_point_single", "six_point_single", "vertex", "mean", "cov",
                 "normalized_vertex"):
        attr = getattr(type(obj), name, None)
        if isinstance(attr, property):
            try:
                yield from _floats_of(getattr(obj, name), f"{path}.{name}", seen)
            except PdltError:
                pass


def _assert_finite(result, call):
    for path, arr in _floats_of(result):
        bad = ~np.isfinite(arr)
        if np.any(bad):
            allowed = _allowed_nonfinite(result, path, arr)
            if allowed is not None and np.all(~bad | allowed):
                continue
            raise AssertionError(f"{call}: non-finite value in {path}: {arr[bad][:4]}")


def _allowed_nonfinite(result, path, arr):
    """Entries a Monte Carlo result documents as undefined (``mc.undefined``: the distinct-neuron four-point
    function, and the vertices built from it, of a width-1 layer; the six-point function of a residual run):
    layer l at index l - 1 of the first axis. Only what ``mc.undefined`` lists, name by name, is allowed."""
    undefined = getattr(result, "undefined", None) if isinstance(result, pdlt.MCResult) else None
    if not undefined or arr.ndim < 1:
        return None
    leaf = path.split(".")[-2] if path.endswith(("mean", "stderr")) else path.split(".")[-1]
    layers = undefined.get(leaf)
    if not layers:
        return None
    mask = np.zeros(arr.shape, dtype=bool)
    for l in layers:
        if l - 1 < arr.shape[0]:
            mask[l - 1] = True
    return mask


def check(fn, *args, **kwargs):
    """Call ``fn``; a pdlt error is an acceptable outcome, anything else but a finite result fails."""
    call = f"{getattr(fn, '__name__', fn)}(args={args!r:.300}, kwargs={kwargs!r:.300})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                out = fn(*args, **kwargs)
    except PdltError as err:
        assert str(err).strip(), f"{call}: a pdlt error without a message"
        return None
    except Exception as err:  # the property: nothing else may escape
        raise AssertionError(f"{call} raised {type(err).__module__}.{type(err).__name__}: {err}") from err
    _assert_finite(out, call)
    return out


# ------------------------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------------------------

REGISTERED = ("linear", "relu", "leaky_relu", "tanh", "erf", "sin", "gelu", "swish", "softplus", "sigmoid")

# sympy building blocks: supported ones, and ones pdlt must refuse at construction with a clear error
_GOOD_UNARY = (sp.tanh, sp.sin, sp.erf, sp.exp, sp.atan, lambda e: sp.Max(0, e), sp.Abs)
_BAD = (sp.sqrt(Z), sp.log(Z), sp.besselj(0, Z), sp.Function("f")(Z), sp.erfc(Z) - 1, 1 / Z, sp.gamma(Z),
        sp.Symbol("a") * Z)
_BAD_TEXT = ("tanh(z", "z**", "__import__('os')", "", "lambda: 1", "y + 1", "tanh(z) +* 2")


@st.composite
def sympy_activations(draw):
    """A sympy expression in z (or a string): mostly valid, sometimes something pdlt must refuse."""
    kind = draw(st.sampled_from(["good", "good", "good", "bad", "text"]))
    if kind == "bad":
        return draw(st.sampled_from(_BAD))
    if kind == "text":
        return draw(st.sampled_from(_BAD_TEXT + ("tanh(z)+0.1*z", "sin(z)+z**3/10", "z*erf(z)")))
    f = draw(st.sampled_from(_GOOD_UNARY))
    a = sp.Rational(draw(st.integers(1, 20)), 10)
    b = sp.Rational(draw(st.integers(-5, 5)), 10)
    return f(a * Z) + b * Z


def _make_activation(spec):
    if isinstance(spec, str) and spec in REGISTERED:
        return pdlt.activation(spec)
    return pdlt.Activation.from_sympy(spec)


activation_specs = st.one_of(st.sampled_from(REGISTERED), sympy_activations())

# C_W spanning ordered, critical and chaotic phases (log-uniform 1e-3..1e3, plus exact critical values)
c_w = st.one_of(st.sampled_from([1.0, 2.0, 0.5, 4.0]), st.floats(-3, 3).map(lambda e: 10.0 ** e))
c_b = st.one_of(st.just(0.0), st.floats(-6, 2).map(lambda e: 10.0 ** e))


@st.composite
def inputs(draw, n0: int = 3, d_max: int = 3):
    """``(d, n0)`` inputs: random directions at scales 1e-150..1e150, sometimes identical or nearly parallel
    rows, sometimes zero."""
    d = draw(st.integers(1, d_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((d, n0))
    mode = draw(st.sampled_from(["plain", "scaled", "identical", "near", "zero"]))
    if mode == "scaled":
        x *= 10.0 ** draw(st.floats(-150, 150))
    elif mode == "identical" and d > 1:
        x[1] = x[0]
    elif mode == "near" and d > 1:
        x[1] = x[0] * (1 + 10.0 ** draw(st.floats(-15, -3)))
    elif mode == "zero":
        x[0] = 0.0
    return x


@st.composite
def networks(draw, depth=(1, 300), width=(1, 64), n0: int = 3):
    act = draw(activation_specs)
    L = draw(st.integers(*depth))
    uniform = draw(st.booleans())
    ws = (n0,) + ((draw(st.integers(*width)),) * L if uniform else tuple(draw(st.integers(*width)) for _ in range(L)))
    return act, ws, draw(c_w), draw(c_b)


def build(spec):
    """``MLP`` from a drawn spec through the public constructor (which may refuse it with a pdlt error)."""
    act, ws, C_W, C_b = spec
    return pdlt.MLP(_make_activation(act), ws, C_W=C_W, C_b=C_b)


# bad values of every type for any argument
BAD_VALUES = (None, "3", 2.5, -1, 0, float("nan"), float("inf"), 1j, True, [1, 2], {}, object(), np.array([np.nan]))


# ------------------------------------------------------------------------------------------------------------
# theory entry points
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_activation_and_mlp(profile):
    """Construction: a valid spec builds, an invalid one raises a pdlt error naming what to change."""

    def body(ex):
        spec, bad = ex
        act = check(_make_activation, spec[0])
        if act is not None:
            check(pdlt.MLP, act, spec[1], C_W=spec[2], C_b=spec[3])
            check(pdlt.criticality, act)
        check(pdlt.MLP, "tanh", (3, 8, 1), C_W=bad)
        check(pdlt.MLP, "tanh", (3, bad, 1))
        check(pdlt.MLP, bad, (3, 8, 1))

    _run(profile, st.tuples(networks(), st.sampled_from(BAD_VALUES)), body)


@pytest.mark.parametrize("profile", PROFILES)
def test_kernel_flow_and_finite_width(profile):
    def body(ex):
        spec, x, bad = ex
        net = check(build, spec)
        if net is None:
            return
        check(pdlt.kernel_flow, net, bad)
        check(pdlt.kernel_flow, net, x)
        th = check(pdlt.finite_width, net, x)
        if th is not None:
            for l in (1, net.L):
                check(th.normalized_vertex, l)
                check(th.two_point, l)

    # the slow profile reaches a few hundred layers and three inputs (whose 3-D Gaussian averages of a user
    # activation take seconds per layer); the default one stays at 80 layers and two inputs to keep CI quick
    depth, d_max = ((1, 300), 3) if profile == "slow" else ((1, 80), 2)
    _run(profile, st.tuples(networks(depth=depth), inputs(d_max=d_max), st.sampled_from(BAD_VALUES)), body)


@pytest.mark.parametrize("profile", PROFILES)
def test_delta_finite_width(profile):
    def body(ex):
        spec, x, eps = ex
        net = check(build, spec)
        if net is None:
            return
        check(pdlt.delta_finite_width, net, x[0], eps * x[-1])

    _run(profile, st.tuples(networks(depth=(1, 120)), inputs(), st.sampled_from([0.0, 1e-8, 1e-3, 1.0, 1e100])), body)


@pytest.mark.parametrize("profile", PROFILES)
def test_expect(profile):
    """Gaussian expectations of registered and user activations at extreme and degenerate kernels."""

    def body(ex):
        spec, K, bad = ex
        act = check(_make_activation, spec)
        if act is None:
            return
        check(pdlt.expect, act, K, kinks=act.kinks)
        check(pdlt.expect, act, bad)
        # an oracle, not only finiteness: a finite wrong answer (once <z^2>_K = 0 for K = 1e200) must not pass
        second = check(pdlt.expect, lambda z: (z[..., 0] / np.sqrt(K[0, 0])) ** 2, K)
        if second is not None:
            assert second == pytest.approx(1.0, rel=1e-10), (K, second)

    kernels = st.one_of(
        st.floats(-300, 300).map(lambda e: np.array([[10.0 ** e]])),
        st.tuples(st.floats(-100, 100), st.floats(-1, 1)).map(
            lambda t: 10.0 ** t[0] * np.array([[1.0, t[1]], [t[1], 1.0]])),
        st.just(np.array([[1.0, 1.0], [1.0, 1.0]])),
        st.just(np.array([[1.0, 2.0], [2.0, 1.0]])),  # not PSD
    )
    _run(profile, st.tuples(activation_specs, kernels, st.sampled_from(BAD_VALUES)), body)


@pytest.mark.parametrize("profile", PROFILES)
def test_posterior(profile):
    def body(ex):
        spec, x, y, noise = ex
        net = check(build, (spec[0], spec[1][:-1] + (1,), spec[2], spec[3]))
        if net is None or x.shape[0] < 2:
            return
        check(pdlt.posterior, net, x[:-1], y * np.ones(x.shape[0] - 1), x[-1:], noise_var=noise)

    noise = st.one_of(st.sampled_from([0.0, 1e-12, 0.1, 1e6, -1.0, float("nan")] + list(BAD_VALUES[:3])))
    _run(profile, st.tuples(networks(depth=(1, 40)), inputs(), st.floats(-1e3, 1e3), noise), body)


@pytest.mark.parametrize("profile", PROFILES)
def test_influence_and_locality(profile):
    """Datapoints as particles: influences, locality profiles and laws, screening, at any activation, phase, scale
    and depth, with degenerate inputs and bad noise and depths."""

    def body(ex):
        spec, x, noise, order, n_train, depths = ex
        net = check(build, (spec[0], spec[1][:-1] + (1,), spec[2], spec[3]))
        if net is None:
            return
        if x.shape[0] >= 2:
            check(pdlt.influence, net, x[:-1], np.ones(x.shape[0] - 1), x[-1:], noise_var=noise, order=order,
                  wrt=("y",) if order else ("y", "x"))
            check(pdlt.screening, net, x[-1:], x[:1], x[1:-1] if x.shape[0] > 2 else x[:1], noise_var=noise)
        prof = check(pdlt.locality_profile, net, x[0], x[-1], n_train=n_train, noise_var=noise, depths=depths)
        if prof is not None:
            check(prof.flow_exponent)
        check(pdlt.locality_law, net, x[0], noise)

    noise = st.sampled_from([0.0, 1e-12, 0.1, 1e6, -1.0, float("nan"), None, "0.1"])
    depths = st.one_of(st.none(), st.sampled_from([[1], [2, 3], [0], [1, 1000], "2", 2.5]))
    _run(profile, st.tuples(networks(depth=(1, 30), width=(1, 16)), inputs(), noise, st.sampled_from([0, 1]),
                            st.integers(-1, 9), depths), body)


# ------------------------------------------------------------------------------------------------------------
# Monte Carlo entry points (shapes from small sets: each new shape compiles)
# ------------------------------------------------------------------------------------------------------------

MC_WIDTHS = ((3, 4, 4), (3, 1, 1), (3, 8, 8, 8, 2))


@st.composite
def mc_cases(draw):
    act = draw(st.one_of(st.sampled_from(("relu", "tanh")), sympy_activations()))
    ws = draw(st.sampled_from(MC_WIDTHS))
    return act, ws, draw(c_w), draw(c_b)


@pytest.mark.parametrize("profile", PROFILES)
def test_sample_and_compare(profile):
    def body(ex):
        spec, x, method, n = ex
        net = check(build, spec)
        if net is None:
            return
        check(pdlt.sample, net, x + 1j, 16, batches=4, progress=False)
        mc = check(pdlt.sample, net, x, n, seed=0, method=method, batches=4, progress=False)
        if mc is None:
            return
        th = check(pdlt.finite_width, net, x)
        if th is not None:
            check(pdlt.compare, th, mc)
            check(pdlt.compare, mc, th)

    bad_n = st.sampled_from([16, 16.0, 0, 2.5, -3, "16", None])
    _run(profile, st.tuples(mc_cases(), inputs(d_max=2), st.sampled_from(["markov", "weights", "nope"]), bad_n),
         body, mc=True)


@pytest.mark.parametrize("profile", PROFILES)
def test_posterior_mc_and_langevin(profile):
    def body(ex):
        x, noise, knob = ex
        net = pdlt.MLP("tanh", (3, 4, 1))
        y = np.ones(x.shape[0] - 1) if x.shape[0] > 1 else np.ones(1)
        xa, xb = (x[:-1], x[-1:]) if x.shape[0] > 1 else (x, x)
        check(pdlt.posterior_mc, net, xa, y, xb, noise, n_samples=knob, seed=knob, batches=4)
        check(pdlt.langevin_posterior, net, xa, y, xb, noise, n_chains=knob, n_steps=knob, burn_in=2, step=0.05,
              seed=0)

    knobs = st.sampled_from([8, 8.0, 0, 1, 2.5, -1, None, "8"])
    noises = st.sampled_from([0.0, 0.1, -1.0, float("nan"), None])
    _run(profile, st.tuples(inputs(), noises, knobs), body, mc=True)


# ------------------------------------------------------------------------------------------------------------
# the CLI: any argument vector gives exit code 0 or 2 (argparse usage errors: SystemExit 2), never a traceback
# ------------------------------------------------------------------------------------------------------------

_CLI_TOKENS = ("-a", "tanh", "relu", "tanh(z)+0.1*z", "sqrt(z)", "nonsense", "-w", "3,8,8", "3,32.5,64", "0",
               "--C-W", "1e308", "-1", "nan", "--C-b", "0.1", "-x", "1,0,0", "1,2;3", "1e200,0,0", "--json",
               "--L", "--n", "--d")


@pytest.mark.parametrize("profile", PROFILES)
def test_cli(profile, capsys):
    from pdlt.cli import main

    def body(argv):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage errors exit 2, --help/--version exit 0
            rc = e.code
        except Exception as err:
            raise AssertionError(f"pdlt {' '.join(argv)} raised {type(err).__name__}: {err}") from err
        out, err = capsys.readouterr()
        assert rc in (0, 2), f"pdlt {' '.join(argv)} exited {rc}"
        assert "Traceback" not in err, f"pdlt {' '.join(argv)} printed a traceback:\n{err}"
        assert "nan" not in out.lower().split(), f"pdlt {' '.join(argv)} printed nan:\n{out}"

    cmds = st.sampled_from([["criticality"], ["flow"], ["flow", "--json"], ["criticality", "--json"]])
    argv = st.tuples(cmds, st.lists(st.sampled_from(_CLI_TOKENS), max_size=6)).map(lambda t: t[0] + t[1])
    _run(profile, argv, body)


# ------------------------------------------------------------------------------------------------------------
# residual networks (layer steps with shortcuts)
# ------------------------------------------------------------------------------------------------------------

shortcut = st.one_of(st.floats(-1.5, 1.5), st.sampled_from([0.0, 0.5**0.5, 1.0, -1.0]), st.sampled_from(BAD_VALUES))


@pytest.mark.parametrize("profile", PROFILES)
def test_residual_networks(profile):
    """Residual MLPs with random shortcut and branch scales (good and bad), phases and input scales: the theory
    (kernel flow, finite width for one and two inputs, criticality, the NTK and its 1/n statistics for one input, and
    for two inputs in the slow profile)
    and a small Monte Carlo with compare."""

    def body(ex):
        (act, ws, C_W, C_b), gamma, xi, x, sample = ex
        a = check(_make_activation, act)
        if a is None:
            return
        net = check(pdlt.MLP, a, ws, C_W=C_W, C_b=C_b, gamma=gamma, xi=xi)
        if net is None:
            return
        check(pdlt.kernel_flow, net, x)
        th = check(pdlt.finite_width, net, x)
        if th is not None:
            for l in (1, net.L):
                check(th.normalized_vertex, l)
                check(th.four_point_single, l)
                check(th.two_point, l)
        if isinstance(gamma, float) and isinstance(act, str):
            check(pdlt.residual_criticality, act, gamma, 1.0)
        nt = check(pdlt.ntk, net, x[:1] if np.ndim(x) == 2 else x, lambda_b=0.5, lambda_W=1.0)
        if nt is not None and net.L <= 8:
            qs = ("ntk_mean", "ntk_variance", "A", "F", "dntk_relative", "U")
            check(lambda: [nt.prediction(q, net.L) for q in qs])
        if profile == "slow" and np.ndim(x) == 2 and len(x) == 2 and net.L <= 4:  # two inputs: 4-D averages, seconds
            nt2 = check(pdlt.ntk, net, x, lambda_b=0.5, lambda_W=1.0)
            if nt2 is not None:
                check(lambda: (nt2.A, nt2.Theta1, nt2.prediction("ntk_variance", net.L)))
        if sample and net.L <= 4 and max(ws) <= 8:
            mc = check(pdlt.sample, net, x, 64, seed=0, batches=4, progress=False)
            if mc is not None and th is not None:
                check(pdlt.compare, th, mc)

    # the residual theory costs (L d)^2 cross-layer averages: ~14 s at L = 20, d = 2 (ReLU); keep the draws below
    depth = (1, 16) if profile == "slow" else (1, 12)
    nets = networks(depth=depth, width=(1, 8)).map(lambda s: (s[0], (s[1][0],) + (s[1][1],) * (len(s[1]) - 1), *s[2:]))
    _run(profile, st.tuples(nets, shortcut, shortcut, inputs(d_max=2), st.booleans()), body)

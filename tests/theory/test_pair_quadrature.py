"""Averages over two inputs at any kernel size, and gaussian.expect's capped rules never passed on silently.

gaussian.expect's default 2D trapezoid caps its nodes beyond variances ~120 (its spacing then grows like sqrt(K)), and
the kernel flow used it: tanh with inputs of size 60 (K^(1) ~ 2e3) had K^(2) 8e-8 off, with C_W = 2000 K^(3) 2e-6
off, without a word. pdlt.theory.conditioned.pair_products keeps the spacing at any size (Mehler's series or a
common factor with lattice convolutions), and the capped rule now warns where its own estimate says it is off."""

import math
import warnings

import numpy as np
import pytest

import pdlt
from pdlt import gaussian
from pdlt.activations import activation
from pdlt.errors import PdltWarning, QuadratureWarning
from pdlt.theory import conditioned
from pdlt.theory.kernel import kernel_flow, kernel_input_jacobian, pair_average


def _kernel(A, B, rho):
    C = rho * math.sqrt(A * B)
    return np.array([[A, C], [C, B]])


def _brute(f, g, K, h=0.12):
    """An independent 2D trapezoid at z-spacing ``h`` over the Cholesky coordinates, no cap, normalized weights."""
    L = np.linalg.cholesky(K)
    m = int(math.ceil(9 * math.sqrt(np.max(np.diag(K))) / h))
    w = np.arange(-m, m + 1) * (9.0 / m)
    pw = np.exp(-w * w / 2)
    pw /= pw.sum()
    total = 0.0
    for lo in range(0, w.size, 256):
        u = w[lo:lo + 256, None]
        total += np.sum(pw[lo:lo + 256, None] * pw[None, :] * f(L[0, 0] * u) * g(L[1, 0] * u + L[1, 1] * w[None, :]))
    return float(total)


@pytest.mark.parametrize("name", ["erf", "gelu", "sin"])
def test_pair_rule_against_closed_forms(name):
    """Closed forms (an independent oracle at every size): K from 0.3 to 1e7, correlations on both sides of the switch
    between the two rules (|rho| = 1/2), variances 30 times apart. The error, relative to sqrt(<f^2><g^2>) (what any
    rule on a grid can promise for averages that cancel, such as sin's), is at rounding level."""
    act = activation(name)
    worst = 0.0
    for K in (0.3, 50.0, 1e3, 1e5, 1e7):
        for rho in (0.0, 0.3, -0.5, 0.51, 0.9, -0.999):
            for ratio in ((1.0, 30.0) if K < 1e6 else (1.0, 1 / 30)):
                A, B = K, K * ratio
                Kab = _kernel(A, B, rho)
                got = conditioned.pair_products(act, act, Kab[None])[0]
                ref = float(act.pair(A, B, Kab[0, 1]))
                scale = math.sqrt(float(act.pair(A, A, A)) * float(act.pair(B, B, B)))
                worst = max(worst, abs(got - ref) / scale)
    assert worst < 1e-13, worst


def test_pair_rule_against_an_independent_trapezoid():
    """No closed form: tanh, its derivative and swish at K ~ 1e3 (both rules: rho = 0.4 and 0.8) against a 2D
    trapezoid at a finer spacing, to 1e-13; the default 2D rule of gaussian.expect, capped there, is resolvably off
    (the negative control) and says so with a PdltWarning."""
    tanh, swish = activation("tanh"), activation("swish")
    for f, rho in ((tanh, 0.8), (tanh.d1, 0.4), (swish, 0.8)):
        K = _kernel(1000.0, 1300.0, rho)
        ref = _brute(f, f, K)
        got = conditioned.pair_products(f, f, K[None])[0]
        assert abs(got - ref) <= 1e-13 * abs(ref), (got, ref)
    K = _kernel(1000.0, 1300.0, 0.8)
    with pytest.warns(QuadratureWarning, match="capped at .* estimated relative error"):
        capped = float(gaussian.expect(lambda z: tanh(z[..., 0]) * tanh(z[..., 1]), K))
    assert abs(capped - _brute(tanh, tanh, K)) > 1e-8


def test_line_average_and_deterministic_inputs():
    """The 1D rule against erf's closed form at K = 1e7 (beyond the default 1D rule's cap), and a deterministic input
    (K_00 = 0) factoring out as f(0) <g>."""
    erf, gelu = activation("erf"), activation("gelu")
    got = conditioned.line_average(lambda z: erf(z) ** 2, [1e7, 0.5])
    ref = [float(erf.pair(v, v, v)) for v in (1e7, 0.5)]
    np.testing.assert_allclose(got, ref, rtol=1e-14)
    # <gelu(z)> = <z Phi(z)> = K <phi(z)> = K / sqrt(2 pi (1 + K)) (Stein's lemma)
    mean = 4e3 / math.sqrt(2 * math.pi * (1 + 4e3))
    K = np.array([[[0.0, 0.0], [0.0, 4e3]], [[4e3, 0.0], [0.0, 0.0]]])
    got = conditioned.pair_products(lambda z: gelu(z) + 3.0, lambda z: gelu(z) - 2.0, K)
    np.testing.assert_allclose(got, [3.0 * (mean - 2.0), -2.0 * (mean + 3.0)], rtol=1e-13)


def test_kernel_flow_with_large_inputs_is_resolved():
    """Inputs of size 60 (K^(1) ~ 2e3): the layer-2 kernel of tanh and swish against the independent trapezoid, to
    1e-13, with no warning (it used to be 8e-8 off, silently); and pair_average agrees with the closed form of erf at
    K ~ 1e6, where the closed form is used, when the closed form is switched off."""
    x = np.array([[1.0, 0.5], [0.3, -0.9]]) * 60.0
    for name in ("tanh", "swish"):
        act = activation(name)
        net = pdlt.MLP(name, (2, 8, 8), C_W=1.0, C_b=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("error", PdltWarning)
            K = kernel_flow(net, x).K
        ref = 0.1 + _brute(act, act, K[0])
        assert abs(K[1, 0, 1] - ref) <= 1e-13 * abs(ref), (name, K[1, 0, 1], ref)
    erf = activation("erf")
    K = _kernel(1e6, 2e6, 0.7)
    ref = float(erf.pair(1e6, 2e6, K[0, 1]))
    no_closed_form = pdlt.Activation.from_sympy(erf.expr, name="erf_by_quadrature")
    assert no_closed_form.pair_map is None
    got = pair_average(no_closed_form, K)
    assert abs(got[0, 1] - ref) < 1e-14 and abs(got[0, 0] - float(erf.pair(1e6, 1e6, 1e6))) < 1e-14


def test_flow_beyond_the_resolved_rules_warns_once():
    """Variances beyond pair_products' limit (5e8) go back to the capped 2D rule, whose estimate is above tolerance for
    swish there: the flow gives one QuadratureWarning naming its layers and the estimate (never one per layer, never
    silence); gaussian.expect with return_error=True hands the estimate to the caller instead of warning."""
    net = pdlt.MLP("swish", (3, 8, 8, 8, 8), C_W=2.0, C_b=0.0)
    x = np.array([[1.0, 0.5, -0.3], [0.2, -0.9, 0.4]]) * 3e4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdlt.kernel_flow(net, x)
    mine = [w.message for w in caught if isinstance(w.message, QuadratureWarning)]
    assert len(mine) == 1 and "3 layer(s) between l = 2 and 4" in str(mine[0]) and mine[0].error > 1e-8, \
        [str(m) for m in mine]
    # the NTK's averages of sigma' and the kernel's input Jacobian (pair_tangent) report the same way: one warning
    # for their own averages, after kernel_flow's
    for call, who in ((lambda: pdlt.ntk(net, x), "ntk"), (lambda: kernel_input_jacobian(net, x), "kernel_input_jac")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        mine = [str(w.message) for w in caught if isinstance(w.message, QuadratureWarning)]
        assert len(mine) == 2 and mine[0].startswith("kernel_flow") and mine[1].startswith(who), mine
    swish = activation("swish")
    K = _kernel(1e9, 1.2e9, 0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PdltWarning)
        _, err = gaussian.expect(lambda z: swish(z[..., 0]) * swish(z[..., 1]), K, return_error=True)
    assert float(err) > 0


def test_what_the_wide_rules_cannot_capture_is_refused_and_bad_kernels_named():
    """An activation growing faster than the Gaussian decays (exp(z / 2000) at K = 1e8) is refused as gaussian.expect
    refuses it (its average lies outside the Gaussian's bulk), never returned 84 % off; pair_products names bad
    kernels; and gaussian.expect's check compares each output with itself, so a small average's error does not hide
    behind a large one's (tanh tanh next to z0^2 z1^2)."""
    import sympy as sp

    z = sp.Symbol("z")
    fast = pdlt.MLP(pdlt.Activation.from_sympy(sp.exp(z / 2000)), (2, 8, 8))
    with pytest.raises(pdlt.errors.DivergentFlowError, match="not resolved"):
        kernel_flow(fast, np.array([[1e4, 1e4]]))
    tanh = activation("tanh")
    for bad in (np.array([[[np.inf, 0.0], [0.0, 1.0]]]), np.array([[[np.nan, 0.0], [0.0, 1.0]]]),
                np.array([[[1e12, 0.0], [0.0, 1.0]]]), np.ones((2, 3, 3))):
        with pytest.raises(pdlt.errors.ParameterError):
            conditioned.pair_products(tanh, tanh, bad)
    K = _kernel(2000.0, 2000.0, 0.7)
    for f in (lambda z: tanh(z[..., 0]) * tanh(z[..., 1]),
              lambda z: np.stack([z[..., 0] ** 2 * z[..., 1] ** 2, tanh(z[..., 0]) * tanh(z[..., 1])], axis=-1)):
        with pytest.warns(QuadratureWarning):
            gaussian.expect(f, K)

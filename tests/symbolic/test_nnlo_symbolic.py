"""The symbolic 1/n^2 recursions (pdlt.symbolic.nnlo) against the numeric ones (pdlt.theory.nnlo), and the K*=0
large-depth limits derived by power-law ansatze against the numeric recursion at l = 3000 (test_nnlo)."""

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.symbolic import symbols as S
from pdlt.symbolic.nnlo import kstar0_limits, nnlo_recursions
from pdlt.theory.nnlo import nnlo


@pytest.mark.parametrize("act", ["sin", "relu", "leaky_relu(0.2)", pytest.param("erf", marks=pytest.mark.slow)])
def test_symbolic_recursions_iterate_to_the_numeric_ones(act):
    """Closed-form activations (sin, the ReLU family) and erf (its sigma^4, sigma^6 averages numeric): the sympy
    equations, iterated layer by layer with non-uniform widths and per-layer C_W, reproduce the numeric G1, V, U, V1,
    G2."""
    widths = (2, 12, 24, 12, 36, 1)
    C_W, C_b = [1.4, 1.8, 0.9, 1.2, 1.1], [0.2, 0.1, 0.3, 0.0, 0.1]
    net = pdlt.MLP(act, widths, C_W=C_W, C_b=C_b)
    th = nnlo(net, [0.6, -0.8])
    eqs = nnlo_recursions(act)
    state = {S.G1_l: 0.0, S.V_l: 0.0, S.U6_l: 0.0, S.V1_l: 0.0, S.G2_l: 0.0}
    nxt = {"G1": S.G1_l, "V": S.V_l, "U": S.U6_l, "V1": S.V1_l, "G2": S.G2_l}
    for l in range(1, net.L):
        subs = {**state, S.K_l: float(th.K[l - 1]), S.C_W: C_W[l], S.r: widths[l] / widths[l - 1]}
        new = {}
        for name, eq in eqs.items():
            e = eq.rhs.subs(subs)
            new[nxt[name]] = float(pdlt.symbolic.evaluate(e)) if e.free_symbols or e.atoms(sp.Function) else float(e)
        state = new
        for name, sym in nxt.items():
            assert state[sym] == pytest.approx(getattr(th, name)[l], rel=1e-9, abs=1e-12), (name, l + 1)


def test_kstar0_limits():
    lim = kstar0_limits()
    assert lim == {"K": 1, "G1": sp.Rational(-1, 3), "V": sp.Rational(2, 3), "G2": sp.Rational(1, 15),
                   "V1": sp.Rational(-14, 45), "U": sp.Rational(16, 15)}


@pytest.mark.filterwarnings("ignore::pdlt.errors.TruncationWarning")
def test_linear_residual_closed_forms():
    """t = 0 gives the plain deep linear values; with a shortcut the forms match pdlt.nnlo's chain (gamma = 0.7,
    xi = 0.9, C_W = 1.2, n = 12) at every layer, and the four-point product at n = 12 equals the exact chain."""
    import pdlt
    from pdlt.symbolic import linear_residual_closed_forms

    f = linear_residual_closed_forms()
    t, l, n = f["symbols"]
    assert sp.expand(f["V"].subs(t, 0) - 2 * (l - 1)) == 0
    assert sp.expand(f["V1"].subs(t, 0) - 2 * (l - 1) * (l - 2)) == 0
    assert sp.expand(f["U"].subs(t, 0) - 4 * (l - 1) * (3 * l - 4)) == 0
    g, xi, C_W = 0.7, 0.9, 1.2
    net = pdlt.MLP("linear", (1,) + (12,) * 9, C_W=C_W, gamma=g, xi=xi)
    second, exact = pdlt.nnlo(net, [1.0]), pdlt.linear_all_orders(net, [[1.0]])
    tv = g * g / (g * g + xi * xi * C_W)
    for layer in range(2, 10):
        K = second.K[layer - 1]
        vals = {k: float(f[k].subs({t: tv, l: layer, n: 12})) for k in ("V", "V1", "U", "four_point")}
        assert np.isclose(second.V[layer - 1], vals["V"] * K**2, rtol=1e-12)
        assert np.isclose(second.V1[layer - 1], vals["V1"] * K**2, rtol=1e-12, atol=1e-14)
        assert np.isclose(second.U[layer - 1], vals["U"] * K**3, rtol=1e-12)
        assert np.isclose(exact.cov[layer - 1].item() / K**2 + 1, vals["four_point"], rtol=1e-12)

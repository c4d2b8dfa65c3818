"""One set of symbols across pdlt.symbolic: results of different calls combine, print plainly (str) and in PDLT
notation (LaTeX); GaussianAverage follows sympy.stats' conventions (rewrite(Integral), expand, doit, evalf)."""
import pickle

import mpmath
import pytest
import sympy as sp

import pdlt
from pdlt import symbolic as sym
from pdlt.symbolic import finite_width as fw

S = sym.symbols
z = pdlt.activations.Z


# --------------------------------------------------------------------------- one set of symbols


def test_every_module_uses_the_shared_symbols():
    assert sym.r is S.r is fw.r is sym.delta.r
    assert (sym.K, sym.K_l, sym.K_next, sym.C_W, sym.C_b, sym.ell) == (S.K, S.K_l, S.K_next, S.C_W, S.C_b, S.ell)
    assert (fw.V_l, fw.V_next, fw.G1_l, fw.G1_next, fw.K_1, fw.nu) == (S.V_l, S.V_next, S.G1_l, S.G1_next, S.K_1, S.nu)
    assert fw.n.label is S.n and sym.asymptotics("relu").leading["K"] is S.K_1
    assert sym.angle_map_scale_invariant(1, 0).free_symbols == {S.psi}
    # plain name == attribute name, so str() output can be typed back as sym.symbols.<name>
    for name, s in S.SYMBOLS.items():
        assert s.name == name and getattr(S, name) is s and S.lookup(name) is s
    with pytest.raises(pdlt.errors.ParameterError, match="no shared symbol"):
        S.lookup("K^{(l)}")


def test_recursion_results_combine_across_calls():
    """ReLU, C_b = 0: the closed-form V (scale_invariant_closed_forms) at layer l+1, written with K^(l+1) from
    kernel_recursion, equals vertex_recursion applied to the closed form at layer l (equal widths). Needs the three
    calls to share K_l, C_W, C_b, r and ell; with different symbols a substitution silently does nothing."""
    V = fw.scale_invariant_closed_forms("relu")["V_equal_any_CW"]
    K_next = sym.kernel_recursion("relu").rhs.subs(S.C_b, 0)
    step = fw.vertex_recursion("relu").rhs.subs({S.V_l: V, S.r: 1})
    assert sp.simplify(V.subs(S.ell, S.ell + 1).subs(S.K_l, K_next) - step) == 0
    assert V.has(S.K_l) and not V.has(S.chi)  # a real dependence, so the identity is not vacuous
    # the same with a lookalike symbol does nothing: the shared symbols are what makes results combine
    assert V.subs(sp.Symbol("K_l", positive=True), K_next) == V
    # the NLO recursion feeds on the same V_l: for ReLU its source vanishes, so G1 only rescales
    G1 = fw.nlo_kernel_recursion("relu").rhs.subs(S.V_l, V)
    assert sp.simplify(G1 - S.r * S.C_W * S.G1_l / 2) == 0


def test_delta_recursions_share_the_state_symbols():
    rec = sym.delta_recursions("erf")
    st, nx = sym.delta_state_symbols(), sym.delta_state_symbols(primed=True)
    (K00, dK1, ddK2, ddK0), (K00n, dK1n, ddK2n, ddK0n) = rec["symbols"]
    assert (K00, dK1, ddK2) == (st["K00"], st["dK1"], st["ddK2"]) and (K00n, dK1n, ddK2n) == (
        nx["K00"], nx["dK1"], nx["ddK2"])
    assert (ddK0, ddK0n) == (S.ddK0, S.ddK0_next)
    # the K00 recursion is the single-input kernel recursion at K_l = K00
    k = sym.kernel_recursion("erf")
    assert sp.simplify(rec["K00"].rhs.subs(K00, S.K_l) - k.rhs) == 0


def test_leading_and_finite_width_delta_recursions_agree():
    """A polynomial activation (all averages exact by Wick): delta_recursions (susceptibilities) and
    delta_finite_width_recursions ((u, w) derivative-field algebra) give the same K00, dK1, ddK2 maps."""
    act = pdlt.Activation.from_sympy(z + z**2 / 3 - z**3 / 5, name="cubic_test")
    lo = sym.delta_recursions(act)
    fwr = sym.delta_finite_width_recursions(act)
    for key in ("K00", "dK1", "ddK2"):
        assert lo[key].lhs == fwr[key].lhs
        assert sp.expand(lo[key].rhs - fwr[key].rhs) == 0, key
    assert fwr["ddK2"].rhs.has(S.dK1)  # the h dK1^2 term is there (not a trivially linear map)


def test_symbols_survive_pickling_and_lambdify():
    eq = fw.vertex_recursion("relu")
    assert pickle.loads(pickle.dumps(eq)) == eq
    f = sp.lambdify([S.K_l, S.V_l, S.C_W, S.r], eq.rhs)
    assert f(0.8, 0.3, 2.0, 1.5) == pytest.approx(5 * 4 * 0.64 / 4 + 1.5 * 4 * 0.3 / 4, rel=1e-15)
    # evaluate() accepts the plain names as keys
    assert fw.evaluate(eq.rhs, {"K_l": 0.8, "V_l": 0.3, "C_W": 2.0, "r": 1.5}) == pytest.approx(f(0.8, 0.3, 2.0, 1.5))


# --------------------------------------------------------------------------- printing


def _plain(text):
    return not any(c in text for c in "\\{}")


def test_str_is_plain():
    lin = sym.delta_finite_width_recursions("linear")
    exprs = [sym.kernel_recursion("relu"), sym.kernel_recursion("tanh"), fw.vertex_recursion("sin"),
             fw.nlo_kernel_recursion("tanh"), sym.delta_recursions("tanh")["ddK2"], lin["ddddV22"], lin["G1_00"],
             *sym.asymptotics("tanh").leading.values(), fw.scale_invariant_closed_forms("relu")["V_widths"],
             *(sym.kernel_recursion("erf", inputs=2)[k] for k in ("11", "12"))]
    for e in exprs:
        assert _plain(str(e)), str(e)
    assert str(sym.kernel_recursion("relu")) == "Eq(K_next, C_W*K_l/2 + C_b)"


def test_latex_is_pdlt_notation():
    eq = sym.kernel_recursion("relu")
    expected = r"K^{(\ell+1)} = \frac{C_{W} K^{(\ell)}}{2} + C_{b}"
    assert sp.latex(eq) == expected and sym.latex(eq) == expected
    v = sym.latex(fw.vertex_recursion("relu"))
    assert v.startswith("V^{(\\ell+1)} = ") and r"r_{\ell}" in v and r"V^{(\ell)}" in v
    assert r"\left(K^{(\ell)}\right)^{2}" in v  # powers of a superscripted symbol stay valid LaTeX
    assert sp.latex(fw.nlo_kernel_recursion("relu").lhs) == r"G^{\{1\}(\ell+1)}"
    st = sym.delta_state_symbols(primed=True)
    assert sp.latex(st["K00"]) == "{{K_{00}}'}"                 # the prime on a group: no double superscript
    assert sp.latex(st["dG1_1"] ** 2) == r"\left({{\delta{}G^{\{1\}}_{[1]}}'}\right)^{2}"
    assert sp.latex(sym.asymptotics("relu").leading["one_minus_rho"]) == r"\frac{9 \pi^{2}}{2 \ell^{2}}"
    # symbol_names still overrides
    assert sp.latex(S.K_l, symbol_names={S.K_l: "k_l"}) == "k_l"


# --------------------------------------------------------------------------- GaussianAverage conventions


def _mp_average(f, K, dps=30):
    """<f>_K by direct mpmath quadrature of f(z) exp(-z^2/(2K))/sqrt(2 pi K), independent of pdlt.gaussian."""
    with mpmath.workdps(dps):
        K = mpmath.mpf(K)
        return mpmath.quad(lambda x: f(x) * mpmath.exp(-x * x / (2 * K)), [-mpmath.inf, 0, mpmath.inf]) / mpmath.sqrt(
            2 * mpmath.pi * K)


def test_rewrite_as_integral():
    a = sym.GaussianAverage(sp.tanh(z) ** 2, (z,), (S.K,))
    ref = sp.Integral(sp.tanh(z) ** 2 * sp.exp(-z**2 / (2 * S.K)) / sp.sqrt(2 * sp.pi * S.K), (z, -sp.oo, sp.oo))
    assert a.rewrite(sp.Integral) == ref
    # sympy's integrator on the rewritten form vs Wick (a different algorithm)
    assert sp.simplify(sym.GaussianAverage(z**4, (z,), (S.K,)).rewrite(sp.Integral).doit() - 3 * S.K**2) == 0


def test_evalf_against_mpmath():
    a = sym.GaussianAverage(sp.tanh(z) ** 2, (z,), (S.K,))
    ref = _mp_average(lambda x: mpmath.tanh(x) ** 2, "0.7")
    assert abs(a.subs(S.K, sp.Rational(7, 10)).evalf(30) - sp.Float(ref, 30)) < 1e-12
    assert abs(a.evalf(30, subs={S.K: sp.Rational(7, 10)}) - sp.Float(ref, 30)) < 1e-12
    assert a.evalf() == a  # free symbols: stays unevaluated, as sympy does
    e = (1 + 2 * a).subs(S.K, sp.Rational(7, 10))
    assert abs(e.evalf(25) - (1 + 2 * sp.Float(ref, 30))) < 1e-12
    # a closed form and a kinked integrand: <relu(z)^2>_K = K/2
    relu2 = sym.GaussianAverage(sp.Max(0, z) ** 2, (z,), (sp.Rational(3, 2),))
    assert abs(relu2.evalf(20) - sp.Rational(3, 4)) < 1e-12


def test_expand_is_linear():
    a = sym.GaussianAverage(3 * sp.tanh(z) ** 2 + S.K * z**2 * sp.tanh(z) + 5, (z,), (S.K,))
    parts = 3 * sym.GaussianAverage(sp.tanh(z) ** 2, (z,), (S.K,)) + S.K * sym.GaussianAverage(
        z**2 * sp.tanh(z), (z,), (S.K,)) + 5
    assert sp.expand(a) == parts
    assert sp.expand(2 * a + S.C_W) == sp.expand(2 * parts + S.C_W)  # nested averages expand too
    Kv = sp.Rational(7, 10)
    ref = 3 * _mp_average(lambda x: mpmath.tanh(x) ** 2, "0.7") + 0.7 * _mp_average(
        lambda x: x * x * mpmath.tanh(x), "0.7") + 5
    assert abs(parts.subs(S.K, Kv).evalf(25) - sp.Float(ref, 30)) < 1e-12
    assert abs(a.subs(S.K, Kv).evalf(25) - sp.Float(ref, 30)) < 1e-12


def test_doit_evaluates_what_it_can():
    K = S.K
    a = sym.GaussianAverage(z**4 + 2 * sp.tanh(z) ** 2 + sp.cos(z), (z,), (K,))
    assert a.doit() == 3 * K**2 + 2 * sym.GaussianAverage(sp.tanh(z) ** 2, (z,), (K,)) + sp.exp(-K / 2)
    assert sp.simplify(sym.GaussianAverage(z**2 * sp.exp(z), (z,), (K,)).doit() - K * (K + 1) * sp.exp(K / 2)) == 0
    # two variables, polynomial: Isserlis' theorem
    z1, z2 = S.z_1, S.z_2
    b = sym.GaussianAverage(z1**2 * z2**2 + z1 * z2**3 + z1, (z1, z2), (S.K11_l, S.K22_l, S.K12_l))
    assert sp.expand(b.doit() - (S.K11_l * S.K22_l + 2 * S.K12_l**2 + 3 * S.K12_l * S.K22_l)) == 0
    assert sym.GaussianAverage(sp.tanh(z), (z,), (K,)).doit() == sym.GaussianAverage(sp.tanh(z), (z,), (K,))

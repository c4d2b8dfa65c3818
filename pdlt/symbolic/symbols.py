r"""The one set of sympy symbols shared by every function of :mod:`pdlt.symbolic`.

Every symbolic result is written in these objects, so results of different calls combine (substitute one call's
``K_next`` into another's recursion, feed ``delta_recursions`` state into ``delta_finite_width_recursions``).
Each symbol has a plain name, which is also its attribute name here (what ``str``/``repr`` and ``lambdify`` see),
and a LaTeX name in PDLT notation that every sympy LaTeX printer uses (``sympy.latex`` as well as
``pdlt.symbolic.latex``)::

    >>> from pdlt.symbolic import symbols as S
    >>> import sympy as sp
    >>> eq = sp.Eq(S.K_next, S.C_b + S.C_W * S.K_l / 2)
    >>> print(eq)
    Eq(K_next, C_W*K_l/2 + C_b)
    >>> sp.latex(eq)
    'K^{(\\ell+1)} = \\frac{C_{W} K^{(\\ell)}}{2} + C_{b}'

Conventions: layer-l quantities carry ``_l`` (``K_l``, ``V_l``, ``G1_l``), layer l+1 ``_next``; ``K`` is the
generic kernel argument of ``g(K)``, ``chi(K)``; ``r = n_l/n_{l-1}``; the delta-expansion state uses the names of
:data:`pdlt.symbolic.delta.DELTA_NAMES` (layer l) and ``<name>_next`` (layer l+1).
"""

from __future__ import annotations

import sympy as sp

from ..activations import Z as z

__all__ = [
    "PdltSymbol", "SYMBOLS", "lookup",
    "K", "K_l", "K_next", "K_1", "C_W", "C_b", "ell", "ell_p", "r", "n", "n_l", "nu", "chi",
    "V_l", "V_next", "G1_l", "G1_next", "G2_l", "G2_next", "V1_l", "V1_next", "U6_l", "U6_next",
    "K11_l", "K22_l", "K12_l", "K11_next", "K22_next", "K12_next",
    "z", "z_1", "z_2", "psi", "a_plus", "a_minus", "a_1", "a_2", "v_3", "c_1", "c_2", "sigma",
    "sigma_1", "sigma_2", "sigma_3", "sigma_4", "sigma_5",
    "DELTA_LATEX", "delta_state", "delta_next", "ddK0", "ddK0_next",
    "Theta_l", "Theta_next", "lambda_b", "lambda_W",
    "NTK_LATEX", "ntk_state", "ntk_next", "chi_par", "chi_perp", "h", "h_K", "L",
]


class PdltSymbol(sp.Symbol):
    """A :class:`sympy.Symbol` with a plain ``name`` and a separate LaTeX form.

    The LaTeX printer calls :meth:`_latex` (a ``symbol_names`` setting still overrides it); printed terms are
    ordered by the LaTeX name. Two symbols are equal when name, LaTeX name and assumptions all agree; a plain
    ``sympy.Symbol`` of the same name is a different symbol (look the shared one up with :func:`lookup`).
    """

    __slots__ = ("latex_name",)

    def __new__(cls, name: str, latex_name: str | None = None, **assumptions):
        cls._sanitize(assumptions, cls)
        # uncached constructor: sympy's cache key would not include the LaTeX name
        obj = sp.Symbol.__xnew__(cls, name, **assumptions)
        obj.latex_name = name if latex_name is None else latex_name
        return obj

    def __getnewargs_ex__(self):
        return ((self.name, self.latex_name), self._assumptions_orig)

    def _hashable_content(self):
        return super()._hashable_content() + (self.latex_name,)

    @classmethod
    def class_key(cls):
        # sort among ordinary Symbols (sympy keys on the class name)
        return sp.Symbol.class_key()

    @sp.core.cache.cacheit
    def sort_key(self, order=None):
        # order terms by the LaTeX name, so typeset output keeps the order it had when names were LaTeX (sympy
        # keys a power of a symbol by str(), so there the plain name decides)
        return self.class_key(), (1, (self.latex_name,)), sp.S.One.sort_key(), sp.S.One

    def _latex(self, printer):
        override = printer._settings.get("symbol_names", {}).get(self)
        return self.latex_name if override is None else override

    def _sympyrepr(self, printer):
        kw = "".join(f", {k}={v!r}" for k, v in sorted(self._assumptions_orig.items()))
        return f"PdltSymbol({self.name!r}, {self.latex_name!r}{kw})"


def _s(name, tex, **assumptions) -> PdltSymbol:
    return PdltSymbol(name, tex, **assumptions)


# --------------------------------------------------------------------------- kernel, hyperparameters, layer index
K = _s("K", "K", positive=True)  # the argument of g(K), chi(K), ...
K_l = _s("K_l", r"K^{(\ell)}", positive=True)
K_next = _s("K_next", r"K^{(\ell+1)}", positive=True)
K_1 = _s("K_1", r"K^{(1)}", positive=True)  # the constant kernel of a critical scale-invariant network
C_W = _s("C_W", "C_{W}", nonnegative=True)
C_b = _s("C_b", "C_{b}", nonnegative=True)
#: residual steps (PDLT appendix B): shortcut and branch scales of z' = gamma z + xi (b + W sigma(z))
gamma = _s("gamma", r"\gamma", real=True)
xi = _s("xi", r"\xi", real=True)
#: the frozen NTK and the learning rates (PDLT ch. 8): lambda_b, and lambda_W / n_{l-1} for the weights
Theta_l = _s("Theta_l", r"\Theta^{(\ell)}", positive=True)
Theta_next = _s("Theta_next", r"\Theta^{(\ell+1)}", positive=True)
lambda_b = _s("lambda_b", r"\lambda_{b}", nonnegative=True)
lambda_W = _s("lambda_W", r"\lambda_{W}", nonnegative=True)
ell = _s("ell", r"\ell", positive=True)
ell_p = _s("ell_p", r"\ell'", integer=True, positive=True)  # summation index over layers
#: width ratio ``r = r_l = n_l/n_{l-1}``
r = _s("r", r"r_{\ell}", positive=True)
#: a width (equal widths); ``n_l[k]`` is the width of layer k
n = _s("n", "n", positive=True)
n_l = sp.IndexedBase(n)
nu = _s("nu", r"\nu", real=True)
chi = _s("chi", r"\chi", positive=True)  # C_W A_2 of a scale-invariant activation

# two-input kernel entries (layer l and l+1)
K11_l = _s("K11_l", r"K^{(\ell)}_{11}", real=True)
K22_l = _s("K22_l", r"K^{(\ell)}_{22}", real=True)
K12_l = _s("K12_l", r"K^{(\ell)}_{12}", real=True)
K11_next = _s("K11_next", r"K^{(\ell+1)}_{11}", real=True)
K22_next = _s("K22_next", r"K^{(\ell+1)}_{22}", real=True)
K12_next = _s("K12_next", r"K^{(\ell+1)}_{12}", real=True)

# --------------------------------------------------------------------------- finite width (single input)
V_l = _s("V_l", r"V^{(\ell)}", real=True)
V_next = _s("V_next", r"V^{(\ell+1)}", real=True)
G1_l = _s("G1_l", r"G^{\{1\}(\ell)}", real=True)
G1_next = _s("G1_next", r"G^{\{1\}(\ell+1)}", real=True)
#: order 1/n^2, one input (derivations/README.md section 13): G2 (two-point), V1 (four-point), U6 (six-point vertex)
G2_l = _s("G2_l", r"G^{\{2\}(\ell)}", real=True)
G2_next = _s("G2_next", r"G^{\{2\}(\ell+1)}", real=True)
V1_l = _s("V1_l", r"V^{\{1\}(\ell)}", real=True)
V1_next = _s("V1_next", r"V^{\{1\}(\ell+1)}", real=True)
U6_l = _s("U6_l", r"U^{(\ell)}", real=True)
U6_next = _s("U6_next", r"U^{(\ell+1)}", real=True)

# --------------------------------------------------------------------------- NTK statistics (single input)
#: the 1/n statistics of the NTK (PDLT ch. 8-11; derivations/README.md section 18): ``<name>_l`` at layer l,
#: ``<name>_next`` at layer l+1; Theta1 is the 1/n correction to the mean NTK
NTK_LATEX = {"A": "A", "B": "B", "D": "D", "F": "F", "P": "P", "Q": "Q", "R": "R", "S": "S", "T": "T", "U": "U",
             "Theta1": r"\Theta^{\{1\}}"}


def _ntk(name, primed):
    layer = r"(\ell+1)" if primed else r"(\ell)"
    tex = r"\Theta^{\{1\}%s}" % layer if name == "Theta1" else "%s^{%s}" % (NTK_LATEX[name], layer)
    return _s(name + ("_next" if primed else "_l"), tex, real=True)


ntk_state = {name: _ntk(name, False) for name in NTK_LATEX}
ntk_next = {name: _ntk(name, True) for name in NTK_LATEX}
globals().update({s.name: s for s in (*ntk_state.values(), *ntk_next.values())})
#: single-input susceptibilities kept as symbols: chi_par = C_W g'(K), chi_perp = C_W <sigma'^2>_K,
#: h = (1/2) d chi_perp/dK and its derivative h_K = dh/dK
chi_par = _s("chi_par", r"\chi_{\parallel}", real=True)
chi_perp = _s("chi_perp", r"\chi_{\perp}", real=True)
h = _s("h", "h", real=True)
h_K = _s("h_K", r"\partial_K h", real=True)
#: the network depth (output layer L)
L = _s("L", "L", integer=True, positive=True)

# --------------------------------------------------------------------------- integration variables, constants
z_1 = _s("z_1", "z_{1}", real=True)
z_2 = _s("z_2", "z_{2}", real=True)
psi = _s("psi", r"\psi", positive=True)  # angle between two inputs
a_plus = _s("a_plus", "a_{+}", real=True)  # slopes of a scale-invariant activation
a_minus = _s("a_minus", "a_{-}", real=True)
#: Taylor coefficients ``sigma_p = sigma^(p)(0)``, p = 1..5
sigma = tuple(_s(f"sigma_{p}", r"\sigma_{%d}" % p, real=True) for p in range(1, 6))
sigma_1, sigma_2, sigma_3, sigma_4, sigma_5 = sigma
a_1 = _s("a_1", "a_{1}", real=True)  # C_W g = K + a_1 K^2 + a_2 K^3 + ... (K*=0 class)
a_2 = _s("a_2", "a_{2}", real=True)
v_3 = _s("v_3", "v_{3}", real=True)  # C_W^2 (<s^4> - <s^2>^2) = 2 K^2 + v_3 K^3 + ...
c_1 = _s("c_1", "c_{1}")  # undetermined constants of the delta-expansion asymptotics
c_2 = _s("c_2", "c_{2}")

# --------------------------------------------------------------------------- delta expansion (two nearby inputs)
#: LaTeX of the delta-expansion state (gamma components, layer l); braces keep powers of G^{1} valid LaTeX
DELTA_LATEX = {
    "K00": r"K_{00}", "dK1": r"\delta{}K_{[1]}", "ddK2": r"\delta\delta{}K_{[2]}",
    "V00": r"V_{00}", "dV01": r"\delta{}V_{[01]}", "ddV11": r"\delta\delta{}V_{[11]}",
    "ddV02": r"\delta\delta{}V_{[02]}", "dddV12": r"\delta^3V_{[12]}", "ddddV22": r"\delta^4V_{[22]}",
    "G1_00": r"G^{\{1\}}_{00}", "dG1_1": r"\delta{}G^{\{1\}}_{[1]}", "ddG1_2": r"\delta\delta{}G^{\{1\}}_{[2]}",
}


def _delta(name, primed):
    # the prime on a group: G^{\{1\}}_{00}' is a double superscript (pdflatex refuses it)
    tex = "{{" + DELTA_LATEX[name] + "}'}" if primed else "{" + DELTA_LATEX[name] + "}"
    kw = {"positive": True} if name == "K00" else {"real": True}
    return _s(name + ("_next" if primed else ""), tex, **kw)


#: ``{name: symbol}`` of the layer-l state, in the order of :data:`pdlt.symbolic.delta.DELTA_NAMES`
delta_state = {name: _delta(name, False) for name in DELTA_LATEX}
#: the same for layer l+1 (names ``<name>_next``, LaTeX primed)
delta_next = {name: _delta(name, True) for name in DELTA_LATEX}
#: the second-order correction to K_00 (leading-order delta recursions only)
ddK0 = _s("ddK0", r"{\delta\delta{}K_{[0]}}", real=True)
ddK0_next = _s("ddK0_next", r"{\delta\delta{}K_{[0]}'}", real=True)
globals().update({s.name: s for s in (*delta_state.values(), *delta_next.values())})
__all__ += [s.name for s in (*delta_state.values(), *delta_next.values())]
__all__ += [s.name for s in (*ntk_state.values(), *ntk_next.values())]

#: every shared symbol by its plain name
SYMBOLS = {s.name: s for s in globals().values() if isinstance(s, sp.Symbol)}


def lookup(name):
    """The shared symbol called ``name`` (a string); a sympy object is returned unchanged.

    >>> lookup("K_l") is K_l
    True
    """
    if not isinstance(name, str):
        return name
    try:
        return SYMBOLS[name]
    except KeyError:
        from ..errors import ParameterError

        raise ParameterError(f"no shared symbol named {name!r}; known: {', '.join(sorted(SYMBOLS))}", name) from None

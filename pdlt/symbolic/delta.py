r"""delta-expansion recursions of K, V and G1 for two nearby inputs, as sympy expressions.

The same algebra as :func:`pdlt.theory.delta_expansion.zeta_step` (derivative field, (u, w) coordinates),
run on symbols: the state of layer l is ``K00, dK1, ddK2`` (kernel), ``V00, dV01, ddV11, ddV02, dddV12,
ddddV22`` (vertex) and ``G1_00, dG1_1, ddG1_2`` (NLO kernel), each the leading term of its gamma component;
the averages are ``<sigma^a sigma'^b z^j>_{K00}`` (exact by Wick's theorem for polynomial activations,
:class:`GaussianAverage` otherwise). ``r = n_l/n_{l-1}``, ``C_W, C_b`` of layer l+1.

>>> from pdlt import symbolic as sym
>>> rec = sym.delta_finite_width_recursions("linear")
>>> rec["ddddV22"].rhs.factor()
C_W**2*(r*ddddV22 + 2*ddK2**2)
>>> sym.latex(rec["ddddV22"].rhs.factor())
'C_{W}^{2} \\left(r_{\\ell} {\\delta^4V_{[22]}} + 2 {\\delta\\delta{}K_{[2]}}^{2}\\right)'
"""

from __future__ import annotations

import itertools

import sympy as sp

from ..activations import Z, Activation
from ..activations import activation as _lookup
from ..theory.delta_expansion import zeta_step
from . import symbols as _S
from .expectation import gaussian_average
from .recursions import C_W, C_b

__all__ = ["delta_finite_width_recursions", "DELTA_NAMES", "delta_state_symbols"]

#: names of the state, in order: kernel, vertex (gamma components (ij) = 00, 01, 11, 02, 12, 22), G1
DELTA_NAMES = ("K00", "dK1", "ddK2", "V00", "dV01", "ddV11", "ddV02", "dddV12", "ddddV22", "G1_00", "dG1_1", "ddG1_2")
assert tuple(_S.DELTA_LATEX) == DELTA_NAMES
_LATEX = _S.DELTA_LATEX
r = _S.r


def delta_state_symbols(primed: bool = False) -> dict:
    """``{name: Symbol}`` for the layer-l state (or layer l+1 with ``primed``); K00 is positive, the rest real.
    These are the shared symbols of :mod:`pdlt.symbolic.symbols` (plain names ``K00``, ``K00_next``, ...; LaTeX
    ``K_{00}``, ``K_{00}'``, ...), also used by :func:`pdlt.symbolic.delta_recursions`."""
    return dict(_S.delta_next if primed else _S.delta_state)


def _zeta_state(s):
    """(u, w) components of V and G1 (eps = 1) from the gamma-named symbols."""
    gam = {(0, 0): s["V00"], (0, 1): s["dV01"], (1, 1): s["ddV11"], (0, 2): s["ddV02"], (1, 2): s["dddV12"],
           (2, 2): s["ddddV22"]}
    Vz = {}
    for ijkl in itertools.product((0, 1), repeat=4):
        i, j = sum(ijkl[:2]), sum(ijkl[2:])  # w count of each pair = its gamma index, with (u,w) -> [1]
        a, b = sorted((i, j))
        factor = (4 if i == 2 else 1) * (4 if j == 2 else 1)
        Vz[ijkl] = factor * gam[(a, b)]
    G1z = {(0, 0): s["G1_00"], (0, 1): s["dG1_1"], (1, 0): s["dG1_1"], (1, 1): 4 * s["ddG1_2"]}
    return Vz, G1z


def delta_finite_width_recursions(act, *, polynomial_moments: bool = True) -> dict:
    """``{name: Eq(new, expression of the layer-l state)}`` for every name in :data:`DELTA_NAMES`, plus
    ``"state"`` (layer-l symbols) and ``"next"`` (layer-(l+1) symbols).

    ``act``: a registered name, an :class:`~pdlt.activations.Activation`, or a sympy expression in
    ``pdlt.activations.Z`` (may contain free parameters, e.g. Taylor coefficients); averages of polynomials
    are exact (Wick), anything else stays an unevaluated :class:`GaussianAverage` at ``K00``.
    """
    from ..activations import require_continuous
    from ..errors import ParameterError

    if isinstance(act, (str, Activation)):
        a = _lookup(act)
        require_continuous(a, "the delta expansion")
        expr = a.expr
    else:
        try:
            expr = sp.sympify(act)
        except (sp.SympifyError, TypeError, SyntaxError):
            raise ParameterError(f"act must be an activation name, an Activation or a sympy expression in "
                                 f"pdlt.activations.Z, got {act!r}", "act") from None
        if isinstance(expr, sp.Expr):        # (a plain Symbol('z') is read as pdlt's real z)
            expr = expr.subs({v: Z for v in expr.free_symbols if v.name == "z" and v != Z})
        if not isinstance(expr, sp.Expr) or not expr.has(Z):
            # (a plain Symbol('z') or tanh(x) was taken for a constant: C_W z^6 + C_b for the kernel of z^3)
            raise ParameterError(f"act must be an expression in pdlt.activations.Z (the real symbol z; free "
                                 f"parameters are allowed beside it), got {act!r}, which does not contain it: "
                                 "build it with pdlt.activations.Z or pass it as a string", "act")
        if expr.has(sp.sign, sp.Heaviside):
            raise ParameterError(f"{act} jumps (sign, Heaviside): its derivative is a delta function, which the "
                                 "delta expansion cannot take", "act")
    d1 = sp.diff(expr, Z)
    s, sn = delta_state_symbols(), delta_state_symbols(primed=True)
    K00 = s["K00"]
    cache = {}

    def moment(a, b, j):
        if (a, b, j) not in cache:
            cache[(a, b, j)] = gaussian_average(sp.expand(expr**a * d1**b * Z**j) if polynomial_moments
                                                else expr**a * d1**b * Z**j, K00)
        return cache[(a, b, j)]

    Vz, G1z = _zeta_state(s)
    Kz, Vn, Gn = zeta_step(moment, K00, s["dK1"], s["ddK2"], Vz, G1z, C_W, C_b, r)
    new = {
        "K00": Kz[(0, 0)], "dK1": Kz[(0, 1)], "ddK2": Kz[(1, 1)] / 4,
        "V00": Vn[(0, 0, 0, 0)], "dV01": Vn[(0, 0, 0, 1)], "ddV11": Vn[(0, 1, 0, 1)], "ddV02": Vn[(0, 0, 1, 1)] / 4,
        "dddV12": Vn[(0, 1, 1, 1)] / 4, "ddddV22": Vn[(1, 1, 1, 1)] / 16,
        "G1_00": Gn[(0, 0)], "dG1_1": Gn[(0, 1)], "ddG1_2": Gn[(1, 1)] / 4,
    }
    # basic=False: expand the state polynomial but keep each moment one average (fewer quadratures)
    out = {name: sp.Eq(sn[name], sp.expand(new[name], basic=False)) for name in DELTA_NAMES}
    out["state"], out["next"] = s, sn
    return out

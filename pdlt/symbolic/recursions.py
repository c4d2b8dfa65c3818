"""Leading-order recursions, susceptibilities and critical points as sympy expressions.

Every function takes an activation (name or :class:`~pdlt.activations.Activation`) and returns sympy
objects in the shared symbols of :mod:`pdlt.symbolic.symbols`. Closed forms are used when the activation has
them (linear, ReLU family, erf, sin); otherwise Gaussian averages stay unevaluated
(:class:`GaussianAverage`), print as ``\\langle f \\rangle_K`` and evaluate with mpmath.

>>> from pdlt import symbolic as sym
>>> sym.kernel_recursion("relu")
Eq(K_next, C_W*K_l/2 + C_b)
>>> sym.latex(sym.kernel_recursion("relu"))
'K^{(\\\\ell+1)} = \\\\frac{C_{W} K^{(\\\\ell)}}{2} + C_{b}'
>>> sym.susceptibilities("erf")["chi_perp"]
4*C_W/(pi*sqrt(4*K + 1))
"""

from __future__ import annotations

import sympy as sp

from ..activations import K11, K12, K22, Z, Activation, require_continuous
from ..activations import activation as _lookup
from ..errors import ParameterError
from ..theory.criticality import taylor_a1_b1, universality_class
from . import symbols as _S
from .expectation import Z1, Z2, gaussian_average, gaussian_average2

__all__ = [
    "K", "C_W", "C_b", "ell", "K_l", "K_next",
    "g", "pair_average", "kernel_recursion", "ntk_recursion", "susceptibilities", "delta_recursions",
    "critical_point", "taylor_a",
]

K, C_W, C_b, ell, K_l, K_next = _S.K, _S.C_W, _S.C_b, _S.ell, _S.K_l, _S.K_next


def _act(a) -> Activation:
    return _lookup(a)


def g(act, K_=K) -> sp.Expr:
    """``g(K) = <sigma(z)^2>_K``: closed form if known, else an unevaluated average."""
    act = _act(act)
    if act.pair_map is not None:
        return sp.simplify(act.pair_map.subs({K11: K_, K22: K_, K12: K_}))
    return gaussian_average(act.expr**2, K_)


def pair_average(act, Kaa, Kbb, Kab, derivative: bool = False) -> sp.Expr:
    """``<sigma(z_a) sigma(z_b)>`` (or of sigma') for the 2x2 kernel [[Kaa, Kab], [Kab, Kbb]]."""
    act = _act(act)
    closed = act.dpair_map if derivative else act.pair_map
    if closed is not None:
        return closed.subs({K11: Kaa, K22: Kbb, K12: Kab}, simultaneous=True)
    e = sp.diff(act.expr, Z) if derivative else act.expr
    return gaussian_average2(e.subs(Z, Z1) * e.subs(Z, Z2), Kaa, Kbb, Kab)


def kernel_recursion(act, inputs: int = 1, *, residual: bool = False):
    """The leading-order recursion ``K^(l+1) = C_b + C_W <sigma sigma>_{K^(l)}`` (PDLT eq. 4.37 family), written by
    the layer step (:mod:`pdlt.layers`): with ``residual=True`` the residual step's
    ``K^(l+1) = gamma^2 K^(l) + xi^2 (C_b + C_W <sigma sigma>)`` in the symbols ``gamma``, ``xi``.

    ``inputs=1``: one :class:`sympy.Eq` in ``K_l``, ``K_next``. ``inputs=2``: a dict of three equations for the
    entries ``K_{11}, K_{22}, K_{12}`` of layer l+1 in terms of those of layer l (symbols returned as the
    dict's ``symbols`` entry).

    >>> kernel_recursion("relu", residual=True)
    Eq(K_next, K_l*gamma**2 + xi**2*(C_W*K_l/2 + C_b))
    """
    from ..layers import Dense, Residual

    act = _act(act)
    step = Residual(C_W, C_b, _S.gamma, _S.xi) if residual else Dense(C_W, C_b)
    if inputs == 1:
        return sp.Eq(K_next, step.symbolic_kernel(K_l, g(act, K_l)))
    if inputs != 2:
        raise ParameterError("symbolic recursions are written for inputs = 1 or 2 (use the numeric flow for more)")
    cur = (_S.K11_l, _S.K22_l, _S.K12_l)
    nxt = (_S.K11_next, _S.K22_next, _S.K12_next)
    a, b, c = cur
    rhs = (step.symbolic_kernel(a, g(act, a)), step.symbolic_kernel(b, g(act, b)),
           step.symbolic_kernel(c, pair_average(act, a, b, c)))
    return {"symbols": (cur, nxt), "11": sp.Eq(nxt[0], rhs[0]), "22": sp.Eq(nxt[1], rhs[1]), "12": sp.Eq(nxt[2], rhs[2])}


def ntk_recursion(act, *, residual: bool = False):
    """The frozen NTK recursion for one input, written by the layer step's ``ntk_map`` (:mod:`pdlt.layers`):
    ``Theta^(l+1) = lambda_b + lambda_W <sigma^2>_K + C_W <sigma'^2>_K Theta^(l)`` (derivations/README.md section 16),
    or the residual step's ``gamma^2 Theta + xi^2 (...)`` with ``residual=True``.

    >>> ntk_recursion("relu")
    Eq(Theta_next, C_W*Theta_l/2 + K_l*lambda_W/2 + lambda_b)
    """
    from ..layers import Dense, Residual

    act = _act(act)
    require_continuous(act, "the NTK recursion (C_W <sigma'^2>)")
    step = Residual(C_W, C_b, _S.gamma, _S.xi) if residual else Dense(C_W, C_b)
    dd = gaussian_average(sp.diff(act.expr, Z) ** 2, K_l) if act.slopes is None else \
        sp.Rational(1, 2) * (sp.nsimplify(act.slopes[0]) ** 2 + sp.nsimplify(act.slopes[1]) ** 2)
    return sp.Eq(_S.Theta_next, step.ntk_map(_S.Theta_l, g(act, K_l), dd, _S.lambda_W, _S.lambda_b))


def susceptibilities(act, K_=K) -> dict:
    """``chi_par = C_W g'(K)``, ``chi_perp = C_W <sigma'^2>_K``, ``h = (1/2) d chi_perp/dK`` and
    ``S = <sigma sigma''>_K`` (so ``chi_par - chi_perp = C_W S``), as sympy expressions in ``K``, ``C_W``. An
    activation that jumps (sign) is refused: its sigma' is a delta function (chi_perp infinite)."""
    act = _act(act)
    require_continuous(act, "the susceptibilities (chi_perp = C_W <sigma'^2>)")
    s1 = sp.diff(act.expr, Z)
    if act.pair_map is not None:
        gk = g(act, K_)
        chi_par = sp.simplify(C_W * sp.diff(gk, K_))
    else:
        chi_par = C_W * gaussian_average(Z * act.expr * s1, K_) / K_
    if act.dpair_map is not None:
        chi_perp = sp.simplify(C_W * act.dpair_map.subs({K11: K_, K22: K_, K12: K_}))
        h = sp.simplify(sp.diff(chi_perp, K_) / 2)
    else:
        chi_perp = C_W * gaussian_average(s1**2, K_)
        h = C_W * gaussian_average(s1**2 * (Z**2 - K_), K_) / (4 * K_**2)
    S = sp.simplify((chi_par - chi_perp) / C_W) if act.pair_map is not None and act.dpair_map is not None else (
        gaussian_average(Z * act.expr * s1, K_) / K_ - gaussian_average(s1**2, K_)
    )
    return {"chi_par": chi_par, "chi_perp": chi_perp, "h": h, "S": S}


def delta_recursions(act) -> dict:
    """delta-expansion recursions for two nearby inputs (PDLT section 5.1, gamma basis), all functions at
    ``K00 = K_[0]`` of layer l. Keys ``K00, dK1, ddK2, ddK0`` map to Eq(new, old-expression); the symbols are the
    shared ones of :func:`pdlt.symbolic.delta_state_symbols` (plus ``ddK0``), so the two APIs combine."""
    act = _act(act)
    st, nx = _S.delta_state, _S.delta_next
    K00, dK1, ddK2, ddK0 = st["K00"], st["dK1"], st["ddK2"], _S.ddK0
    K00n, dK1n, ddK2n, ddK0n = nx["K00"], nx["dK1"], nx["ddK2"], _S.ddK0_next
    s = susceptibilities(act, K00)
    S = s["S"]
    return {
        "symbols": ((K00, dK1, ddK2, ddK0), (K00n, dK1n, ddK2n, ddK0n)),
        "K00": sp.Eq(K00n, C_b + C_W * g(act, K00)),
        "dK1": sp.Eq(dK1n, s["chi_par"] * dK1),
        "ddK2": sp.Eq(ddK2n, s["chi_perp"] * ddK2 + s["h"] * dK1**2),
        "ddK0": sp.Eq(ddK0n, s["chi_par"] * ddK0 + C_W * (ddK2 * S + dK1**2 * sp.diff(S, K00) / 2)),
    }


def taylor_a(act, order: int = 2) -> tuple[sp.Expr, ...]:
    """Coefficients ``(a_1, ..., a_order)`` of ``C_W g(K) = K + a_1 K^2 + a_2 K^3 + ...`` at ``C_W = 1/sigma_1^2``
    for an activation with ``sigma_0 = 0`` (the K*=0 class expansion, PDLT section 5.3.3). ``order`` 1..6 (the
    Taylor coefficients to ``2 order + 1``: sympy's series of tanh take seconds at 8, minutes beyond)."""
    from ..validation import check_int

    order = check_int(order, "order", minimum=1, maximum=6)
    act = _act(act)
    s = act.taylor(2 * order + 1)
    if s[0] != 0 or s[1] == 0:
        raise ParameterError(f"{act.name}: the K*=0 expansion needs sigma(0) = 0 and sigma'(0) != 0")
    x = sp.Symbol("x")
    poly = sp.expand(sum(c * x**p / sp.factorial(p) for p, c in enumerate(s)) ** 2)
    series = sp.S.Zero
    for m in range(1, order + 2):
        series += poly.coeff(x, 2 * m) * sp.factorial2(2 * m - 1) * K ** m
    series = sp.expand(series / s[1] ** 2)
    return tuple(sp.simplify(series.coeff(K, m + 1)) for m in range(1, order + 1))


def critical_point(act) -> dict:
    """Exact critical hyperparameters where they have a closed form.

    scale-invariant: ``C_b = 0, C_W = 1/A_2`` (any K*); K*=0 class: ``C_b = 0, C_W = 1/sigma_1^2, K* = 0`` with
    ``a_1, b_1``. Other classes have no closed form here: use :func:`pdlt.criticality` (numeric).
    """
    act = _act(act)
    cls = universality_class(act, search=False)
    if cls == "scale-invariant":
        ap, am = (sp.nsimplify(v) for v in act.slopes)
        A2 = (ap**2 + am**2) / 2
        return {"universality": "scale-invariant", "C_b": sp.S.Zero, "C_W": 1 / A2, "K_star": None, "A2": A2,
                "A4": (ap**4 + am**4) / 2}
    if cls == "K*=0":
        s1 = act.taylor(1)[1]
        a1, b1 = taylor_a1_b1(act)
        return {"universality": "K*=0", "C_b": sp.S.Zero, "C_W": sp.simplify(1 / s1**2), "K_star": sp.S.Zero,
                "a1": a1, "b1": b1}
    raise ParameterError(f"{act.name} has no closed-form critical point; use pdlt.criticality('{act.name}')")

"""Large-depth behaviour of the leading-order kernel at criticality (PDLT sections 5.2-5.3).

* K*=0 class (``C_W g = K + a_1 K^2 + a_2 K^3 + ...``, a_1 < 0): with ``u = 1/K``,
  ``u' = u - a_1 + (a_1^2 - a_2)/u + O(u^-2)``, hence
  ``K^(l) = 1/((-a_1) l) [1 + (a_2/a_1^2 - 1) ln(l)/l + O(1/l)]``; ``chi_par = 1 - 2/l``,
  ``chi_perp = 1 - p_perp/l``; ``dK_[1] ~ l^-2`` and ``ddK_[2] ~ l^-p_perp`` with ``p_perp = b_1/a_1``.
* scale-invariant class at criticality: ``K^(l) = K^(1)``; the angle psi between two inputs
  (cos psi = rho) obeys ``cos psi' = cos psi + (2 q^2/(pi A_2)) (sin psi - psi cos psi)`` with
  ``q = (a_+ - a_-)/2``, so ``psi' = psi - kappa psi^2 + ...``, ``kappa = 2 q^2/(3 pi A_2)``, and
  ``psi^(l) ~ 1/(kappa l)``, ``1 - rho^(l) ~ 1/(2 kappa^2 l^2)`` (ReLU: ``9 pi^2/(2 l^2)``).
* half-stable class: ``K - K* ~ -2/(chi_par' l)`` on the attracted side; ``p_perp = 4 h(K*)/chi_par'``.

Each expansion is re-derived in ``derivations/leading_order.py`` and checked against iterated maps in
``tests/test_symbolic.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from ..activations import activation as _lookup
from ..theory.criticality import taylor_a1_b1
from . import symbols as _S
from .recursions import ell, taylor_a

__all__ = ["Asymptotics", "asymptotics", "angle_map_scale_invariant"]

psi = _S.psi


@dataclass(frozen=True)
class Asymptotics:
    """Leading large-depth forms as sympy expressions in ``ell`` (the layer index l)."""

    activation: str
    universality: str
    leading: dict = field(default_factory=dict)
    exponents: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)

    def latex(self) -> str:
        """The leading forms as an ``align`` environment; "" where there are none (a class without a critical
        point: an empty ``align`` does not compile)."""
        lines = []
        for k, v in self.leading.items():
            lines.append(r"%s &\simeq %s" % (_LATEX_NAMES.get(k, k), sp.latex(v)))
        if not lines:
            return ""
        return "\\begin{align}\n" + " \\\\\n".join(lines) + "\n\\end{align}"


_LATEX_NAMES = {
    "K": r"K^{(\ell)}",
    "chi_par": r"\chi_{\parallel}^{(\ell)}",
    "chi_perp": r"\chi_{\perp}^{(\ell)}",
    "dK1": r"\delta K_{[1]}^{(\ell)}",
    "ddK2": r"\delta\delta K_{[2]}^{(\ell)}",
    "psi": r"\psi^{(\ell)}",
    "one_minus_rho": r"1-\rho^{(\ell)}",
    "K_minus_Kstar": r"K^{(\ell)}-K^{\star}",
}


def angle_map_scale_invariant(a_plus, a_minus):
    """``cos psi'`` as a function of ``psi`` at criticality, for slopes (a_+, a_-) (exact map)."""
    ap, am = sp.nsimplify(a_plus), sp.nsimplify(a_minus)
    A2 = (ap**2 + am**2) / 2
    q = (ap - am) / 2
    return sp.cos(psi) + 2 * q**2 / (sp.pi * A2) * (sp.sin(psi) - psi * sp.cos(psi))


def asymptotics(act) -> Asymptotics:
    """Large-depth asymptotic forms at criticality for the activation's universality class.

    >>> from pdlt import symbolic as sym
    >>> sym.asymptotics("tanh").leading["K"]
    (1 + 5*log(ell)/(12*ell))/(2*ell)
    >>> sym.asymptotics("relu").leading["one_minus_rho"]
    9*pi**2/(2*ell**2)
    """
    act = _lookup(act)
    if act.scale_invariant:
        ap, am = (sp.nsimplify(v) for v in act.slopes)
        A2 = (ap**2 + am**2) / 2
        cos_new = angle_map_scale_invariant(ap, am)
        # psi' from cos psi' = cos psi + c3 psi^3 + ...: psi'^2 = psi^2 - 2 c3 psi^3 + ... so kappa = c3
        c3 = sp.series(cos_new - sp.cos(psi), psi, 0, 4).removeO().coeff(psi, 3)
        kappa = sp.simplify(c3)
        leading = {"K": _S.K_1}
        consts = {"A2": A2, "kappa": kappa}
        if kappa != 0:
            leading["psi"] = 1 / (kappa * ell)
            leading["one_minus_rho"] = sp.simplify(1 / (2 * kappa**2 * ell**2))
            exps = {"p0": 0, "p_angle": 1, "p_one_minus_rho": 2}
        else:
            exps = {"p0": 0, "p_angle": 0}
        return Asymptotics(act.name, "scale-invariant", leading, exps, consts)
    try:
        s = act.taylor(3)
    except ValueError:
        s = None
    if s is not None and s[0] == 0 and s[1] != 0:
        a1, a2 = taylor_a(act, 2)
        if a1.is_negative:
            b1 = taylor_a1_b1(act)[1]
            p_perp = sp.simplify(b1 / a1)
            Kas = 1 / ((-a1) * ell) * (1 + (a2 / a1**2 - 1) * sp.log(ell) / ell)
            leading = {
                "K": Kas,
                "chi_par": 1 - 2 / ell,
                "chi_perp": 1 - p_perp / ell,
                "dK1": _S.c_1 / ell**2,
                "ddK2": _S.c_2 / ell**p_perp,
            }
            return Asymptotics(act.name, "K*=0", leading, {"p0": 1, "p_par": 2, "p_perp": p_perp},
                               {"a1": a1, "a2": a2, "b1": b1})
    from ..theory.criticality import criticality

    c = criticality(act)
    if c.universality == "half-stable":
        slope = sp.Float(c.dchi_par_dK, 15)
        return Asymptotics(
            act.name, "half-stable",
            {"K_minus_Kstar": -2 / (slope * ell)},
            {k: sp.Float(v, 15) for k, v in c.exponents.items()},
            {"K_star": sp.Float(c.K_star, 15), "dchi_par_dK": slope, "h": sp.Float(c.h, 15)},
        )
    return Asymptotics(act.name, c.universality)

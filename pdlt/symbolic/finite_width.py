r"""Finite-width (order 1/n) single-input recursions, their closed forms and their large-depth asymptotics.

Conventions (PDLT = Roberts, Yaida, Hanin, *The Principles of Deep Learning Theory*; ``derivations/README.md``
sections 7-9). For one input, with ``n = n_{l-1}`` the width of the layer that feeds layer l,

* ``E[z^(l) z^(l)] = K^(l) + G1^(l)/n_{l-1} + O(1/n^2)``  (G1 is the book's ``G^{1}``, the NLO kernel),
* ``E[z^4] - 3 E[z^2]^2 = 3 V^(l)/n_{l-1} + O(1/n^2)``  (V is the four-point vertex), equivalently
  ``Var[G^^(l)] = V^(l)/n_{l-1}`` for the stochastic metric ``G^^(l) = C_b + (C_W/n_{l-1}) sum_j sigma_j^2``.

The recursions (the multi-input ones of PDLT ch. 4 reduced to one input; derivations/README.md sections 7, 8; the book's
equation numbers were not checked), all functions at
``K = K^(l)``, ``C_W = C_W^(l+1)``, ``r = r_l = n_l/n_{l-1}``, starting from ``V^(1) = G1^(1) = 0``::

    V^(l+1)  = C_W^2 (<sigma^4>_K - <sigma^2>_K^2) + r chi_par(K)^2 V^(l)
    G1^(l+1) = r [ chi_par(K) G1^(l) + (C_W/(8 K^4)) <sigma^2 (z^4 - 6 K z^2 + 3 K^2)>_K V^(l) ]

The G1 source equals ``(C_W/2) g''(K)`` with ``g(K) = <sigma^2>_K`` because
``d^2<f>_K/dK^2 = <f (z^4 - 6Kz^2 + 3K^2)>_K/(4K^4)``; this form is used whenever g has a closed form.

Closed forms of ``<sigma^4>_K`` (each derived and checked in ``derivations/finite_width.py``):

* scale-invariant ``sigma = a_+ z Theta(z) + a_- z Theta(-z)``: ``3 A_4 K^2``, ``A_4 = (a_+^4 + a_-^4)/2``;
* sin: ``(3 - 4 e^{-2K} + e^{-8K})/8`` (power reduction and ``<cos(az)> = e^{-a^2 K/2}``);
* erf: no elementary form. Writing ``erf(z) = E_u sign(sqrt(2) z - u)`` turns ``<erf^4>`` into the
  sign moment of four equicorrelated Gaussians (correlation ``rho = 2K/(1+2K)``), and Price's theorem gives
  ``<erf^4>_K = (24/pi^2) int_0^{arcsin rho} arcsin(sin(t)/(1 + 2 sin(t))) dt``, kept as a 1-D integral;
* anything else: an unevaluated :class:`~pdlt.symbolic.GaussianAverage` (tanh) or Wick (polynomials).

Results at criticality (``C_b = 0``):

* scale-invariant class, exact at O(1/n) for any ``C_W`` (with ``C_b = 0``):
  ``V^(l) = nu (K^(l))^2 n_{l-1} sum_{l'=1}^{l-1} 1/n_{l'}``, ``nu = 3 A_4/A_2^2 - 1`` (linear 2, ReLU 5,
  leaky ReLU ``6(1+a^4)/(1+a^2)^2 - 1``), i.e. ``nu (l-1) K^2`` for equal widths; ``G1 = 0``;
* K*=0 class (``C_W = 1/sigma_1^2``; ``C_W g = K + a_1 K^2 + a_2 K^3 + ...``, ``a_1 < 0``):
  ``V^(l) = c_1 K + c_2 K^2 + O(K^3)`` and ``G1^(l) = h_0 + h_1 K + O(K^2 ln K)`` as functions of
  ``K = K^(l)``, with ``c_1 = -2/(3 a_1)``, ``h_0 = 1/(3 a_1)``; so ``V ~ 2/(3 a_1^2 l)``,
  ``V/K^2 ~ (2/3) l + (2/3)(1 - a_2/a_1^2) ln l`` and ``G1 -> 1/(3 a_1) - h_1/(a_1 l)``
  (see :func:`kstar0_expansion` for ``c_2``, ``h_1`` in the Taylor coefficients).

>>> from pdlt.symbolic import finite_width as fw
>>> fw.vertex_recursion("relu")
Eq(V_next, 5*C_W**2*K_l**2/4 + C_W**2*V_l*r/4)
>>> fw.scale_invariant_closed_forms("relu")["nu"]
5
>>> fw.finite_width_asymptotics("tanh").leading["G1"]
-1/6
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from ..activations import Z, Activation
from ..activations import activation as _lookup
from ..errors import ParameterError
from ..theory.criticality import universality_class
from . import symbols as _S
from .expectation import GaussianAverage, gaussian_average
from .recursions import C_W, K, K_l, ell, g, susceptibilities

__all__ = [
    "V_l", "V_next", "G1_l", "G1_next", "r", "nu", "n", "K_1",
    "quartic_average", "vertex_source", "nlo_source", "vertex_recursion", "nlo_kernel_recursion",
    "scale_invariant_closed_forms", "kstar0_expansion", "FiniteWidthAsymptotics", "finite_width_asymptotics",
    "evaluate", "iterate_single_input",
]

V_l, V_next, G1_l, G1_next = _S.V_l, _S.V_next, _S.G1_l, _S.G1_next
#: width ratio ``r_l = n_l / n_{l-1}``
r = _S.r
nu = _S.nu
#: layer widths ``n_l`` (``n[l]``), for the non-uniform-width closed form (:data:`pdlt.symbolic.symbols.n_l`)
n = _S.n_l
#: the (constant) kernel of a critical scale-invariant network, ``K^(l) = K^(1)``
K_1 = _S.K_1

_k = _S.ell_p  # summation index
_z = Z


def _act(a) -> Activation:
    return _lookup(a)


def _slopes(act: Activation):
    ap, am = (sp.nsimplify(v) for v in act.slopes)
    return ap, am, (ap**2 + am**2) / 2, (ap**4 + am**4) / 2


# --------------------------------------------------------------------------- Gaussian averages


def quartic_average(act, K_=K, closed: bool = True) -> sp.Expr:
    """``<sigma(z)^4>_K``: closed form for scale-invariant activations (``3 A_4 K^2``) and sin
    (``(3 - 4e^{-2K} + e^{-8K})/8``); for erf the one-dimensional integral
    ``(24/pi^2) int_0^{arcsin(2K/(1+2K))} arcsin(sin t/(1 + 2 sin t)) dt`` (Price's theorem); polynomials by Wick;
    otherwise an unevaluated :class:`GaussianAverage`. ``closed=False`` always gives the plain average. The closed
    forms belong to the activation (:meth:`pdlt.Activation.quartic`)."""
    act = _act(act)
    if closed:
        form = act.quartic(K_)
        if form is not None:
            return form
    return gaussian_average(act.expr**4, K_)


def vertex_source(act, K_=K) -> sp.Expr:
    """``C_W^2 (<sigma^4>_K - <sigma^2>_K^2)``: the inhomogeneous term of the V recursion (``V^(2)`` at ``K^(1)``,
    PDLT eqs. 4.36-4.40)."""
    act = _act(act)
    e = C_W**2 * (quartic_average(act, K_) - g(act, K_) ** 2)
    if e.has(GaussianAverage, sp.Integral):
        return e
    if act.expr == sp.sin(_z):  # written with decaying exponentials only (no overflow at large K)
        closed = C_W**2 * (1 - sp.exp(-4 * K_)) ** 2 / 8
        assert sp.simplify(sp.expand(e - closed)) == 0
        return closed
    return sp.factor(sp.simplify(e))


def nlo_source(act, K_=K, hermite: bool = False) -> sp.Expr:
    """``(C_W/(8K^4)) <sigma^2 (z^4 - 6K z^2 + 3K^2)>_K``, the coefficient of V in the G1 recursion.

    Equal to ``(C_W/2) g''(K)`` (since ``d^2<f>/dK^2 = <f (z^4 - 6Kz^2 + 3K^2)>/(4K^4)``), which is used when g has a
    closed form unless ``hermite=True``. Vanishes for scale-invariant activations (``g = A_2 K``)."""
    act = _act(act)
    if act.pair_map is not None and not hermite:
        return sp.simplify(C_W * sp.diff(g(act, K_), K_, 2) / 2)
    he = sp.expand(act.expr**2 * (_z**4 - 6 * K_ * _z**2 + 3 * K_**2))
    return C_W * gaussian_average(he, K_) / (8 * K_**4)


def vertex_recursion(act) -> sp.Eq:
    """Single-input four-point vertex recursion (PDLT ch. 4, derivations/README.md section 7)::

        V^(l+1) = C_W^2 (<sigma^4>_K - <sigma^2>_K^2) + r_l chi_par(K)^2 V^(l),   K = K^(l), r_l = n_l/n_{l-1}

    as ``Eq(V_next, rhs)`` in the symbols ``V_l, K_l, C_W, r``. ``V^(1) = 0``."""
    act = _act(act)
    chi = susceptibilities(act, K_l)["chi_par"]
    return sp.Eq(V_next, vertex_source(act, K_l) + r * chi**2 * V_l)


def nlo_kernel_recursion(act) -> sp.Eq:
    """Single-input NLO-kernel recursion (derivations/README.md section 8)::

        G1^(l+1) = r_l [ chi_par(K) G1^(l) + (C_W/(8K^4)) <sigma^2 (z^4 - 6Kz^2 + 3K^2)>_K V^(l) ]

    as ``Eq(G1_next, rhs)`` in ``G1_l, V_l, K_l, C_W, r``; the source is written ``(C_W/2) g''(K)`` when g has a
    closed form. ``G1^(1) = G1^(2) = 0``."""
    act = _act(act)
    chi = susceptibilities(act, K_l)["chi_par"]
    return sp.Eq(G1_next, r * (chi * G1_l + nlo_source(act, K_l) * V_l))


# --------------------------------------------------------------------------- scale-invariant closed forms


def scale_invariant_closed_forms(act=None) -> dict:
    """Solve the V and G1 recursions of a scale-invariant activation at ``C_b = 0`` (any ``C_W``; critical at
    ``C_W = 1/A_2``). ``act=None`` keeps symbolic slopes ``a_+, a_-``.

    Steps (each done by sympy, nothing typed in): ``nu = vertex_source / (C_W A_2 K)^2`` (the source over
    ``K^(l+1)^2``); the equal-width recursion solved with ``rsolve``; the general-``C_W`` recursion solved with
    ``rsolve`` (``K^(l) = (C_W A_2)^(l-1) K^(1)``); the non-uniform-width recursion reduced by the integrating factor
    ``v_l = V^(l)/(n_{l-1} K^(l)^2)`` to ``v_{l+1} - v_l = nu/n_l`` and summed (telescoping); G1 from its
    recursion (source ``(C_W/2) g'' = 0``).

    Returns a dict with ``nu``, ``A2``, ``A4``, ``V_equal`` (in ``ell`` and ``K_1``, at criticality),
    ``V_equal_any_CW`` (in ``ell`` and ``K^(l)``), ``V_widths`` (in ``ell``, ``K^(l)`` and ``n[...]``), ``G1`` and the
    recursions used.
    """
    if act is None:
        ap, am = _S.a_plus, _S.a_minus
        A2, A4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
        source = sp.factor(C_W**2 * (3 * A4 - A2**2) * K**2)
        g2 = 0
        name = "scale-invariant"
    else:
        act = _act(act)
        if not act.scale_invariant:
            raise ParameterError(f"{act.name} is not scale-invariant")
        ap, am, A2, A4 = _slopes(act)
        source = vertex_source(act, K)
        g2 = sp.diff(g(act, K), K, 2)
        name = act.name
    chi = C_W * A2
    nu_val = sp.factor(sp.simplify(source / (chi * K) ** 2))
    li = sp.Symbol("l", integer=True, positive=True)
    Vf = sp.Function("V")
    # equal widths, at criticality (chi = 1, K constant)
    # (rsolve works with the symbol nu; its value is substituted afterwards)
    crit = {C_W: 1 / A2}
    assert sp.simplify(source.subs(crit) - nu_val * K**2) == 0
    V_eq = sp.rsolve(Vf(li + 1) - Vf(li) - nu * K_1**2, Vf(li), {Vf(1): 0})
    V_eq = sp.factor(sp.simplify(V_eq)).subs({li: ell, nu: nu_val})
    # any C_W (C_b = 0): K^(l) = chi^(l-1) K^(1)
    chi_s = _S.chi
    src_l = nu * chi_s**2 * (chi_s ** (li - 1) * K_1) ** 2  # source(K^(l)) = nu (chi K^(l))^2
    V_any = sp.rsolve(Vf(li + 1) - chi_s**2 * Vf(li) - src_l, Vf(li), {Vf(1): 0})
    V_any_over_K2 = sp.simplify(V_any / (chi_s ** (li - 1) * K_1) ** 2).subs(nu, nu_val)
    # non-uniform widths: integrating factor v_l = V_l/(n_{l-1} K_l^2), with K_{l+1} = chi K_l
    vl, Kl_ = sp.symbols("v_l kappa_l", positive=True)  # local: cancels out of the increment
    n_prev, n_cur = sp.symbols("n_prev n_cur", positive=True)
    V_new = nu_val * (chi_s * Kl_) ** 2 + (n_cur / n_prev) * chi_s**2 * (n_prev * Kl_**2 * vl)
    v_new = V_new / (n_cur * (chi_s * Kl_) ** 2)
    increment = sp.simplify(v_new - vl)  # = nu / n_l
    vf = sp.Function("v")
    telescoped = sp.summation(vf(_k + 1) - vf(_k), (_k, 1, li - 1))  # v(l) - v(1), v(1) = 0
    assert sp.simplify(telescoped - (vf(li) - vf(1))) == 0
    v_l = sp.Sum(increment.subs(n_cur, n[_k]), (_k, 1, ell - 1))
    V_widths = K_l**2 * n[ell - 1] * v_l
    # G1: source (C_W/2) g'' = 0, so G1^(l+1) = r chi G1^(l) from G1^(1) = 0
    assert g2 == 0
    G1f = sp.Function("G")
    G1_sol = sp.rsolve(G1f(li + 1) - r * chi * G1f(li), G1f(li), {G1f(1): 0})
    return {
        "activation": name,
        "nu": nu_val,
        "A2": A2,
        "A4": A4,
        "V_equal": V_eq,
        "V_equal_any_CW": sp.factor(V_any_over_K2.subs(li, ell)) * K_l**2,
        "V_widths": V_widths,
        "width_increment": increment,
        "G1": sp.sympify(G1_sol),
        "vertex_recursion": sp.Eq(V_next, source.subs(K, K_l) + r * chi**2 * V_l),
    }


# --------------------------------------------------------------------------- K*=0 class


_SIG = _S.sigma
_A1, _A2, _V3 = _S.a_1, _S.a_2, _S.v_3


@lru_cache(maxsize=1)
def _kstar0_generic() -> dict:
    """The K*=0 expansion for a generic Taylor series (derivation; cached)."""
    x = sp.Symbol("x")
    s1 = _SIG[0]
    sig = sum(_SIG[p - 1] * x**p / sp.factorial(p) for p in range(1, 6))
    CW = 1 / s1**2

    def wick(e, order):
        """<e(x)>_K by Wick (<x^2m> = (2m-1)!! K^m), truncated at K^order. e is a polynomial in x."""
        p = sp.Poly(sp.expand(e), x)
        out = sum(c * sp.factorial2(k - 1) * K ** (k // 2) for (k,), c in p.terms() if k % 2 == 0)
        out = sp.expand(out)
        return sum(out.coeff(K, j) * K**j for j in range(order + 1))

    # the truncated series sig (up to sigma_5 x^5) fixes <sig^2> through K^3 and <sig^4> through K^3
    g_ser = wick(sig**2, 3)
    CWg = sp.expand(CW * g_ser)
    a1 = sp.simplify(CWg.coeff(K, 2))
    a2 = sp.simplify(CWg.coeff(K, 3))
    assert CWg.coeff(K, 0) == 0 and CWg.coeff(K, 1) == 1
    v_ser = sp.expand(CW**2 * (wick(sig**4, 3) - sp.expand(g_ser**2)))
    v_ser = sum(v_ser.coeff(K, j) * K**j for j in range(4))
    v2, v3 = sp.simplify(v_ser.coeff(K, 2)), sp.simplify(v_ser.coeff(K, 3))
    assert v_ser.coeff(K, 0) == 0 and v_ser.coeff(K, 1) == 0 and v2 == 2
    # G1 source (C_W/(8K^4)) <sig^2 (x^4 - 6K x^2 + 3K^2)>: Wick, to O(K); needs <.> through K^5
    src = sp.expand(CW * wick(sp.expand(sig**2 * (x**4 - 6 * K * x**2 + 3 * K**2)), 5) / (8 * K**4))
    src = sp.expand(sum(src.coeff(K, j) * K**j for j in range(2)))
    assert not any(src.coeff(K, -j) for j in range(1, 5))
    s0, s1_ = sp.simplify(src.coeff(K, 0)), sp.simplify(src.coeff(K, 1))
    assert sp.simplify(s0 - a1) == 0 and sp.simplify(s1_ - 3 * a2) == 0  # = (C_W/2) g''

    # --- power-law ansatz at leading order: K = 1/(-a_1 l), chi = 1 + 2 a_1 K, v = 2K^2, source = a_1
    A1 = sp.Symbol("a_1", negative=True)
    c, h, p, q = sp.symbols("c h p q", real=True)
    Kl = 1 / (-A1 * ell)
    # V: c((l+1)^p - l^p) ~ c p l^(p-1)  vs  2 K^2 + 4 a_1 K V = 2/(a_1^2 l^2) - 4c l^(p-1): the source fixes
    # p - 1 = -2 (the homogeneous balance c(p + 4) = 0 gives the decaying l^-4, subleading)
    p_V = sp.solve(sp.Eq(p - 1, -2), p)[0]
    lhs = c * ((ell + 1) ** p_V - ell**p_V)
    rhs = 2 * Kl**2 + 4 * A1 * Kl * c * ell**p_V
    c_sol = sp.solve(sp.limit(ell ** (1 - p_V) * (lhs - rhs), ell, sp.oo), c)[0]
    # G1: h((l+1)^q - l^q) vs 2 a_1 K G1 + a_1 V = -2 h l^(q-1) + a_1 c/l: q - 1 = -1
    q_G = sp.solve(sp.Eq(q - 1, -1), q)[0]
    lhs = h * ((ell + 1) ** q_G - ell**q_G)
    rhs = 2 * A1 * Kl * h * ell**q_G + A1 * c_sol * ell**p_V
    h_sol = sp.solve(sp.limit(ell ** (1 - q_G) * (lhs - rhs), ell, sp.oo), h)[0]

    # --- next order: V = F(K), G1 = H(K) as power series in K (the homogeneous solutions ~ K^4, K^2 decay
    # faster). F(K') = v(K) + chi(K)^2 F(K), H(K') = chi(K) H(K) + s(K) F(K), K' = K + a_1 K^2 + a_2 K^3.
    c1, c2, h0, h1 = sp.symbols("c_1 c_2 h_0 h_1")
    Kp = K + _A1 * K**2 + _A2 * K**3
    chi = 1 + 2 * _A1 * K + 3 * _A2 * K**2
    F = lambda k: c1 * k + c2 * k**2  # noqa: E731
    H = lambda k: h0 + h1 * k  # noqa: E731
    eqF = sp.expand(F(Kp) - (2 * K**2 + _V3 * K**3) - chi**2 * F(K))
    eqH = sp.expand(H(Kp) - chi * H(K) - (_A1 + 3 * _A2 * K) * F(K))
    solF = sp.solve([eqF.coeff(K, 2), eqF.coeff(K, 3)], [c1, c2], dict=True)[0]
    solH = sp.solve([eqH.coeff(K, 1).subs(solF), eqH.coeff(K, 2).subs(solF)], [h0, h1], dict=True)[0]
    assert eqF.coeff(K, 1) == 0 and eqH.coeff(K, 0) == 0
    C1, C2 = sp.factor(solF[c1]), sp.factor(solF[c2])
    H0, H1 = sp.factor(solH[h0]), sp.factor(solH[h1])
    # consistency of the two methods: V ~ c1 K = c1/(-a1 l) = c/l and G1 -> h
    assert sp.simplify(C1 / (-_A1) - c_sol.subs(A1, _A1)) == 0 and sp.simplify(H0 - h_sol.subs(A1, _A1)) == 0
    taylor = {_A1: a1, _A2: a2, _V3: v3}
    return {
        "a1": a1, "a2": a2, "v2": v2, "v3": v3, "source0": s0, "source1": s1_,
        "p_V": -p_V, "p_G1": -q_G, "c": c_sol.subs(A1, _A1), "h": h_sol.subs(A1, _A1),
        "c1": C1, "c2": C2, "h0": H0, "h1": H1,
        "in_taylor": taylor,
    }


def kstar0_expansion(act=None, *, in_a: bool = False) -> dict:
    """K*=0 class at criticality (``C_b = 0``, ``C_W = 1/sigma_1^2``): the small-K expansion of the finite-width
    recursions and their large-depth solution, derived with Wick's theorem from ``sigma = sum_p sigma_p z^p/p!``.

    Keys: ``a1, a2`` (``C_W g = K + a_1 K^2 + a_2 K^3``), ``v2, v3`` (``C_W^2(<s^4> - <s^2>^2) = v_2 K^2 + v_3 K^3``,
    ``v_2 = 2``, ``v_3 = 8 sigma_3/sigma_1 + 21 (sigma_2/sigma_1)^2``), ``source0, source1`` (the G1 source
    ``= a_1 + 3 a_2 K + ...``), the power-law solution ``V ~ c l^-p_V``, ``G1 ~ h l^-p_G1`` (``p_V = 1``,
    ``c = 2/(3 a_1^2)``, ``p_G1 = 0``, ``h = 1/(3 a_1)``) and the next order as functions of ``K = K^(l)``:
    ``V = c_1 K + c_2 K^2 + O(K^3)``, ``G1 = h_0 + h_1 K + O(K^2 ln K)``.

    ``act=None``: expressions in the symbols ``sigma_1..sigma_5``; ``in_a=True``: ``c, h, c1, c2, h0, h1`` in
    ``a_1, a_2, v_3``; otherwise the activation's numbers.

    >>> kstar0_expansion("tanh")["c2"], kstar0_expansion("tanh")["h1"]
    (-11/36, 31/18)
    """
    gen = _kstar0_generic()
    keys_a = ("c", "h", "c1", "c2", "h0", "h1")
    out = dict(gen)
    tay = out.pop("in_taylor")
    if in_a:
        return out
    out = {k: (sp.simplify(v.subs(tay)) if k in keys_a else v) for k, v in out.items()}
    if act is None:
        return out
    act = _act(act)
    cls = universality_class(act, search=False)
    if cls != "K*=0":
        # (linear: c = zoo, h = zoo; gelu and swish, whose a_1 > 0, got numbers of a solution that does not exist)
        why = f"its class is {cls}" if cls else "the class needs sigma(0) = 0, sigma'(0) != 0 and a_1 < 0"
        raise ParameterError(f"kstar0_expansion is the K*=0 class's expansion, and {act.name} is not in it ({why})",
                             "act")
    s = act.taylor(5)
    if s[0] != 0 or s[1] == 0:
        raise ParameterError(f"{act.name}: the K*=0 expansion needs sigma(0) = 0 and sigma'(0) != 0")
    sub = dict(zip(_SIG, s[1:6]))
    return {k: (sp.nsimplify(sp.simplify(v.subs(sub))) if isinstance(v, sp.Basic) else v) for k, v in out.items()}


# --------------------------------------------------------------------------- asymptotics object


@dataclass(frozen=True)
class FiniteWidthAsymptotics:
    """Large-depth forms of the finite-width quantities at criticality, as sympy expressions in ``ell`` (and the
    width ``n`` for normalized observables; ``n`` stands for equal widths).

    ``leading``: the leading forms (``V``, ``G1``, ``V_over_K2``, ``V_over_nK2``, ``kurtosis`` = excess kurtosis
    ``3V/(nK^2)`` of one neuron, ``G1_over_nK``, ``nu``); ``next_order``: with the universal next correction
    (K*=0: the ``ln l`` terms; scale-invariant forms are exact); ``in_K``: V and G1 as functions of
    ``K = K^(l)`` (K*=0 class); ``constants``: the coefficients used."""

    activation: str
    universality: str
    leading: dict = field(default_factory=dict)
    next_order: dict = field(default_factory=dict)
    in_K: dict = field(default_factory=dict)
    exponents: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    exact: bool = False

    def latex(self) -> str:
        rel = "=" if self.exact else r"\simeq"
        lines = [r"%s &%s %s" % (_LATEX_NAMES.get(k, k), rel, sp.latex(v)) for k, v in self.leading.items()]
        lines += [r"%s &= %s + \dots" % (_LATEX_NAMES.get(k, k), sp.latex(v, order="rev-lex"))
                  for k, v in self.in_K.items()]
        lines += [r"%s &\simeq %s" % (_LATEX_NAMES.get(k, k), sp.latex(v)) for k, v in self.next_order.items()]
        if not lines:
            return ""
        return "\\begin{align}\n" + " \\\\\n".join(lines) + "\n\\end{align}"


_LATEX_NAMES = {
    "K": r"K^{(\ell)}",
    "V": r"V^{(\ell)}",
    "G1": r"G^{\{1\}(\ell)}",
    "V_over_K2": r"V^{(\ell)}/(K^{(\ell)})^2",
    "V_over_nK2": r"V^{(\ell)}/(n K^{(\ell)2})",
    "kurtosis": r"3V^{(\ell)}/(n K^{(\ell)2})",
    "G1_over_nK": r"G^{\{1\}(\ell)}/(n K^{(\ell)})",
    "nu": r"\nu",
}

_n_eq = _S.n


def finite_width_asymptotics(act) -> FiniteWidthAsymptotics:
    """Large-depth behaviour of V and G1 at criticality for the activation's universality class.

    * scale-invariant (exact at O(1/n), equal widths, ``K^(l) = K^(1)``): ``V = nu (l-1) K^2``, ``G1 = 0``;
    * K*=0: ``V ~ 2/(3 a_1^2 l)``, ``V/K^2 ~ (2/3) l`` (``nu = 2/3`` for every activation of the class),
      ``G1 -> 1/(3 a_1)``, ``G1/(nK) ~ -l/(3n)``; next order from :func:`kstar0_expansion` and the kernel's
      ``K ~ (1/((-a_1) l)) [1 + (a_2/a_1^2 - 1) ln l/l]``.

    Other classes (half-stable, none) return an object with empty dicts: not derived here.

    >>> A = finite_width_asymptotics("sin")
    >>> A.leading["V"], A.leading["V_over_K2"], A.leading["G1"]
    (2/(3*ell), 2*ell/3, -1/3)
    """
    act = _act(act)
    cls = universality_class(act, search=False)
    if cls == "scale-invariant":
        cf = scale_invariant_closed_forms(act)
        nv = cf["nu"]
        V = cf["V_equal"]
        lead = {
            "V": V,
            "V_over_K2": sp.factor(V / K_1**2),
            "V_over_nK2": sp.factor(V / (_n_eq * K_1**2)),
            "kurtosis": sp.factor(3 * V / (_n_eq * K_1**2)),
            "G1": cf["G1"],
            "G1_over_nK": sp.S.Zero,
            "nu": nv,
        }
        return FiniteWidthAsymptotics(act.name, "scale-invariant", lead, exponents={"p_V": -1, "p_G1": 0},
                                      constants={"nu": nv, "A2": cf["A2"], "A4": cf["A4"]}, exact=True)
    if cls == "K*=0":
        e = kstar0_expansion(act)
        a1, a2 = e["a1"], e["a2"]
        Kas = 1 / ((-a1) * ell)
        V = sp.simplify(e["c1"] * Kas)
        G1 = e["h0"]
        lead = {
            "K": Kas,
            "V": V,
            "V_over_K2": sp.simplify(V / Kas**2),
            "V_over_nK2": sp.simplify(V / (_n_eq * Kas**2)),
            "kurtosis": sp.simplify(3 * V / (_n_eq * Kas**2)),
            "G1": G1,
            "G1_over_nK": sp.simplify(G1 / (_n_eq * Kas)),
            "nu": sp.simplify(V / (Kas**2 * ell)),
        }
        log_c = a2 / a1**2 - 1
        nxt = {
            "V": V * (1 + log_c * sp.log(ell) / ell),
            "V_over_K2": lead["V_over_K2"] - sp.Rational(2, 3) * log_c * sp.log(ell),
            "G1": G1 + e["h1"] * Kas,
        }
        in_K = {"V": e["c1"] * K_l + e["c2"] * K_l**2, "G1": e["h0"] + e["h1"] * K_l}
        consts = {k: e[k] for k in ("a1", "a2", "v3", "c1", "c2", "h0", "h1")}
        consts["nu"] = lead["nu"]
        return FiniteWidthAsymptotics(act.name, "K*=0", lead, nxt, in_K, {"p_V": e["p_V"], "p_G1": e["p_G1"]},
                                      consts)
    return FiniteWidthAsymptotics(act.name, universality_class(act))


# --------------------------------------------------------------------------- numeric evaluation


def evaluate(expr, subs: dict | None = None, *, method: str = "quadrature", dps: int = 30) -> float:
    """Evaluate a sympy expression holding :class:`GaussianAverage` (and ``Integral``) atoms at ``subs`` (keys:
    symbols, or the plain names of the shared symbols, e.g. ``{"K_l": 0.5}``).

    Gaussian averages: ``method="quadrature"`` (float64 :func:`pdlt.gaussian.expect`, ~1e-12) or ``"mpmath"``
    (``dps`` digits); the rest with ``sympy.N`` at ``dps`` digits.
    """
    if subs is not None and not isinstance(subs, dict):
        raise ParameterError(f"subs must be a dict {{symbol or name: value}}, got {type(subs).__name__}", "subs")
    try:
        rule = {_S.lookup(k): sp.sympify(v) for k, v in (subs or {}).items()}
        e = sp.sympify(expr)
        # symbols for numbers: xreplace gives what subs gives without comparing every subtree with every key (the
        # two-input NTK check spent 24 of its 30 s in subs); other keys (an expression to replace) need subs
        e = e.xreplace(rule) if all(isinstance(k, sp.Symbol) for k in rule) else e.subs(rule)
    except (sp.SympifyError, TypeError, SyntaxError, AttributeError) as err:
        raise ParameterError(f"cannot evaluate {expr!r} at {subs!r}: {err}", "expr") from None
    if not isinstance(e, sp.Expr):
        raise ParameterError(f"expr must be a sympy expression, got {expr!r}", "expr")
    for A in e.atoms(GaussianAverage):
        e = e.xreplace({A: sp.Float(A.numeric(method=method, dps=dps), dps)})
    val = sp.N(e, dps)
    if val.free_symbols:
        raise ParameterError(f"give numeric values for {sorted(map(str, val.free_symbols))}")
    if not (val.is_real and val.is_finite):
        # (1/K at K = 0 is zoo, sqrt(-1) is I: float() raised a raw TypeError)
        raise ParameterError(f"the expression is not a finite real number there: {val}", "subs")
    return float(val)


def iterate_single_input(act, K1: float, widths, C_W, C_b=0.0, *, method: str = "quadrature") -> dict:
    """Iterate the symbolic single-input recursions (K, V, G1) numerically, layer by layer.

    ``widths = (n_0, n_1, ..., n_{L-1})`` (so ``r_l = n_l/n_{l-1}``), ``K1 = K^(1)``; ``C_W``, ``C_b`` scalars or
    sequences of length ``L - 1`` (the values of layers 2..L). Returns ``{"K", "V", "G1"}``, lists over
    ``l = 1..L``. Meant for checks (each layer evaluates the sympy expressions), not for speed.
    """
    from .recursions import C_W as _CW  # the argument C_W shadows the symbol
    from .recursions import C_b as _Cb
    from .recursions import kernel_recursion

    from ..architecture import MLP
    from ..errors import DivergentFlowError
    from ..validation import check_real

    act = _act(act)
    try:
        L = len(widths)
        cw = list(C_W) if hasattr(C_W, "__len__") else [C_W] * (L - 1)
        cb = list(C_b) if hasattr(C_b, "__len__") else [C_b] * (L - 1)
    except TypeError:
        raise ParameterError(f"widths must be a sequence (n_0, ..., n_(L-1)), got {widths!r}", "widths") from None
    for name, v in (("C_W", cw), ("C_b", cb)):
        if len(v) != L - 1:
            raise ParameterError(f"{name} must be a scalar or L - 1 = {L - 1} values (layers 2..L), got {len(v)}", name)
    # the network's own checks (integer widths >= 1, C_W and C_b per layer 2..L, finite and >= 0)
    MLP(act, tuple(widths) + (1,), C_W=[1.0] + cw, C_b=[0.0] + cb)
    K1 = check_real(K1, "K1", minimum=0.0, open_minimum=True)
    kr = kernel_recursion(act).rhs
    vr = vertex_recursion(act).rhs
    gr = nlo_kernel_recursion(act).rhs
    Ks, Vs, Gs = [float(K1)], [0.0], [0.0]
    for l in range(1, L):
        sub = {K_l: Ks[-1], V_l: Vs[-1], G1_l: Gs[-1], _CW: cw[l - 1], _Cb: cb[l - 1],
               r: sp.Rational(int(widths[l]), int(widths[l - 1]))}
        Ks.append(evaluate(kr, sub, method=method))
        Vs.append(evaluate(vr, sub, method=method))
        Gs.append(evaluate(gr, sub, method=method))
        if not all(math.isfinite(v) and abs(v) < 1e300 for v in (Ks[-1], Vs[-1], Gs[-1])):
            raise DivergentFlowError(f"the iterated recursions leave float64's range at layer l = {l + 1}", layer=l + 1)
    return {"K": Ks, "V": Vs, "G1": Gs}

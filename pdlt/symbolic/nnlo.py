r"""One input at order 1/n^2: the recursions for G2, V1 and the six-point vertex U as sympy equations, and their
universal large-depth limits in the K*=0 class (derivations/README.md section 13; numbers:
:func:`pdlt.theory.nnlo.nnlo`).

With ``g(K) = <sigma^2>_K``, ``p_k = C_W g^(k)(K)`` (``p_1 = chi_par``), ``v = <sigma^4> - g^2``, ``w = <sigma^6> -
3 <sigma^4> g + 2 g^3`` and ``r = n_l/n_{l-1}``, at ``K = K^(l)``::

    U'  = C_W^3 w + 3 r C_W^2 p1 v' V + r^2 [p1^3 U + 3 p1^2 p2 V^2]
    V1' = r C_W^2 (v' G1 + v'' V/2) + r^2 [p1^2 V1 + 2 p1 p2 G1 V + p1 p2 U + (p2^2/2 + p1 p3) V^2]
    G2' = r^2 [p1 G2 + (p2/2)(V1 + G1^2) + (p3/2) G1 V + (p3/6) U + (p4/8) V^2]

K-derivatives of averages are averages of even z-derivatives (heat equation, ``d<f>_K/dK = <f''>_K/2``); closed
forms where the activation has them (``g`` from its pair map; ``<sigma^4>``, ``<sigma^6>`` for the scale-invariant
class and sin), otherwise unevaluated :class:`~pdlt.symbolic.GaussianAverage` s.

**K*=0 class at criticality** (equal widths, ``C_b = 0``, ``C_W g(K) = K - a K^2 + ...``, ``a > 0``): with the
order-1/n limits ``K ~ 1/(a l)``, ``G1 -> -1/(3a)``, ``V ~ 2/(3 a^2 l)``, power laws solve the recursions at leading
order in 1/l: ``G2 -> K l^2/15``, ``V1 -> -(14/45) K^2 l^2``, ``U -> (16/15) K^3 l^2``, for every activation of the
class (:func:`kstar0_limits` derives them).

>>> from pdlt.symbolic.nnlo import kstar0_limits
>>> kstar0_limits()["G2"], kstar0_limits()["V1"], kstar0_limits()["U"]
(1/15, -14/45, 16/15)
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..activations import Z
from ..activations import activation as _lookup
from . import symbols as _S
from .expectation import GaussianAverage, gaussian_average
from .finite_width import quartic_average
from .recursions import C_W, K_l, g

__all__ = ["sextic_average", "nnlo_recursions", "kstar0_limits", "linear_residual_closed_forms"]


def sextic_average(act, K_=K_l) -> sp.Expr:
    """``<sigma^6>_K``: ``A_6 K^3`` (``A_6 = 15 (a_+^6 + a_-^6)/2``) for scale-invariant sigma, ``(10 - 15 e^{-2K} +
    6 e^{-8K} - e^{-18K})/32`` for sin (power reduction, ``<cos(a z)> = e^{-a^2 K/2}``), else an unevaluated
    average."""
    act = _lookup(act)
    if act.slopes is not None:
        return act.power_moment(6) * K_**3
    if act.expr == sp.sin(Z):
        return (10 - 15 * sp.exp(-2 * K_) + 6 * sp.exp(-8 * K_) - sp.exp(-18 * K_)) / 32
    return gaussian_average(act.expr**6, K_)


def _dK(act, power, k, K_):
    """``d^k/dK^k <sigma^power>_K``: differentiated closed form, or the heat-equation average ``<(sigma^p)^(2k)>/2^k``."""
    if power == 2:
        base = g(act, K_)
    elif power == 4:
        base = quartic_average(act, K_)
    else:
        base = sextic_average(act, K_)
    if not base.has(sp.Integral, GaussianAverage) and base.free_symbols <= {K_}:
        return sp.diff(base, K_, k)
    return gaussian_average(sp.diff(act.expr**power, Z, 2 * k), K_) / 2**k


@lru_cache(maxsize=32)
def nnlo_recursions(act) -> dict:
    """``{"G1", "V", "U", "V1", "G2"}`` -> ``Eq(next, rhs)`` in the symbols ``K_l, C_W, r`` and the layer-l state
    (``G1_l, V_l, U6_l, V1_l, G2_l``) for one input (module docstring; from zero at layer 1).

    >>> from pdlt.symbolic.nnlo import nnlo_recursions
    >>> nnlo_recursions("linear")["U"].rhs.expand()
    8*C_W**3*K_l**3 + 12*C_W**3*K_l*V_l*r + C_W**3*U6_l*r**2
    """
    act = _lookup(act)
    if act.kinks and not act.scale_invariant:
        from ..errors import ParameterError

        raise ParameterError(f"nnlo_recursions: {act.name} is kinked and not scale-invariant; the z-derivatives of its "
                             "powers would drop the kinks' delta functions", "act")
    K_ = K_l
    gs = [_dK(act, 2, k, K_) for k in range(5)]
    q = [_dK(act, 4, k, K_) for k in range(3)]
    s6 = _dK(act, 6, 0, K_)
    p1, p2, p3, p4 = (C_W * gs[k] for k in range(1, 5))
    v = q[0] - gs[0] ** 2
    v1 = q[1] - 2 * gs[0] * gs[1]
    v2 = q[2] - 2 * gs[1] ** 2 - 2 * gs[0] * gs[2]
    w = s6 - 3 * q[0] * gs[0] + 2 * gs[0] ** 3
    G1, V, U, V1, G2, r = _S.G1_l, _S.V_l, _S.U6_l, _S.V1_l, _S.G2_l, _S.r
    # simplify only small closed forms: on unevaluated averages sympy's simplify calls their doit, i.e. its
    # integrator (swish, softplus: minutes, no end), and for tanh it expands them into large cancelling polynomials
    # of <tanh^k> (176896 <tanh^2> - 814080 <tanh^4> ...) that lose 4e-6 of G2 in float64; GELU's closed forms
    # (powers of sqrt(2K + 1)) took it over a minute
    tidy = lambda e: (sp.simplify(e) if not e.has(sp.Integral, GaussianAverage)                      # noqa: E731
                      and sp.count_ops(e) <= _SIMPLIFY_OPS else e)
    return {
        "G1": sp.Eq(_S.G1_next, tidy(r * (p1 * G1 + p2 * V / 2))),
        "V": sp.Eq(_S.V_next, tidy(C_W**2 * v + r * p1**2 * V)),
        "U": sp.Eq(_S.U6_next, tidy(C_W**3 * w + 3 * r * C_W**2 * p1 * v1 * V
                                    + r**2 * (p1**3 * U + 3 * p1**2 * p2 * V**2))),
        "V1": sp.Eq(_S.V1_next, tidy(r * C_W**2 * (v1 * G1 + v2 * V / 2)
                                     + r**2 * (p1**2 * V1 + 2 * p1 * p2 * G1 * V + p1 * p2 * U
                                               + (p2**2 / 2 + p1 * p3) * V**2))),
        "G2": sp.Eq(_S.G2_next, tidy(r**2 * (p1 * G2 + p2 * (V1 + G1**2) / 2 + p3 * G1 * V / 2 + p3 * U / 6
                                             + p4 * V**2 / 8))),
    }


#: the largest closed form (sympy operations) nnlo_recursions simplifies
_SIMPLIFY_OPS = 600


@lru_cache(maxsize=1)
def kstar0_limits() -> dict:
    """The leading large-depth coefficients of the K*=0 class at criticality (equal widths, ``C_b = 0``) derived
    from power-law ansatze: ``{"K": 1, "G1": -1/3, "V": 2/3, "G2": 1/15, "V1": -14/45, "U": 16/15}`` meaning
    ``K ~ 1/(a l)``, ``G1 ~ -(1/3) K l``, ``V ~ (2/3) K^2 l``, ``G2 ~ (1/15) K l^2``, ``V1 ~ -(14/45) K^2 l^2``,
    ``U ~ (16/15) K^3 l^2`` (independent of a).

    Method: with ``C_W g(K) = K - a K^2 + b K^3``, ``sigma`` odd and ``C_W = 1/sigma_1^2`` the Gaussian averages near
    ``K = 0`` are ``p1 = 1 - 2aK``, ``p2 = -2a``, ``p3 = 6b``, ``v = 2K^2 + O(K^3)``, ``v' = 4K``, ``v'' = 4``,
    ``w = 8K^3`` (the linear network's values at leading order). Each quantity ``X = c_X K^i l^j`` is put in its
    recursion; the change ``X(l+1) - X(l)`` and the right-hand side minus ``X(l)`` are expanded in ``1/l`` with
    ``K = 1/(a l)``, and the leading coefficient is solved for ``c_X``, in the order K, V, G1, U, V1, G2."""
    a, b, ell = sp.symbols("a b ell", positive=True)
    u = 1 / ell
    K_ = 1 / (a * ell)
    p1, p2, p3 = 1 - 2 * a * K_, -2 * a, 6 * b
    v, v1, v2, w = 2 * K_**2, 4 * K_, sp.Integer(4), 8 * K_**3
    out = {"K": sp.Integer(1)}

    def solve(name, ansatz, rhs_of):
        c = sp.Symbol("c")
        X = ansatz(c, ell)
        step = sp.series((X.subs(ell, ell + 1) - X).subs(ell, 1 / u), u, 0, 5).removeO()
        rhs = sp.series((rhs_of(X) - X).subs(ell, 1 / u), u, 0, 5).removeO()
        diff = sp.expand(step - rhs)
        lead = min(sp.Poly(diff, u).monoms())[0]
        sol = sp.solve(sp.Poly(diff, u).coeff_monomial(u**lead), c)
        assert len(sol) == 1, (name, sol)
        return sol[0]

    # V ~ c K^2 l (the 1/n vertex): V' = v + p1^2 V
    out["V"] = solve("V", lambda c, l: c * l / (a * l) ** 2, lambda X: v + p1**2 * X)
    V = out["V"] * ell / (a * ell) ** 2
    out["G1"] = solve("G1", lambda c, l: c * l / (a * l), lambda X: p1 * X + p2 * V / 2)
    G1 = out["G1"] / a
    out["U"] = solve("U", lambda c, l: c * l**2 / (a * l) ** 3, lambda X: w + 3 * p1 * v1 * V + p1**3 * X
                     + 3 * p1**2 * p2 * V**2)
    U = out["U"] / (a**3 * ell)
    out["V1"] = solve("V1", lambda c, l: c * l**2 / (a * l) ** 2,
                      lambda X: v1 * G1 + v2 * V / 2 + p1**2 * X + 2 * p1 * p2 * G1 * V + p1 * p2 * U
                      + (p2**2 / 2 + p1 * p3) * V**2)
    V1 = out["V1"] / a**2
    out["G2"] = solve("G2", lambda c, l: c * l**2 / (a * l),
                      lambda X: p1 * X + p2 * (V1 + G1**2) / 2 + p3 * G1 * V / 2 + p3 * U / 6)
    return {k: sp.nsimplify(v_) for k, v_ in out.items()}


def linear_residual_closed_forms() -> dict:
    """Deep linear networks with shortcuts, one input, uniform width n and parameters, ``C_b = 0``
    (derivations/README.md section 13.7), in the symbols ``t = gamma^2/(gamma^2 + xi^2 C_W a^2)`` and ``l``, per
    power of ``K = K^(l)``:

    * ``"four_point"``: ``E[z_i^2 z_j^2]/K^2 = (1 + 2 (1 - t^2)/n)^(l-1)`` at every order (``E[z^4]/(3K^2)`` too:
      the plain product formula at the effective width ``n/(1 - t^2)``);
    * ``"V"``, ``"V1"``: its 1/n and 1/n^2 coefficients, ``V/K^2`` and ``V1/K^2``, expanded here;
    * ``"U"``: ``U/K^3 = (1 - t^2)^2 [12 (l-1)(l-2) + 8 (1+2t)/(1+t)^2 (l-1)]``, the 1/n^2 coefficient of the connected
      six-point function, solved from the chain in exact arithmetic (derivations/linear_residual.py, l <= 6; checked
      against :func:`pdlt.nnlo` to l = 30).

    At ``t = 0`` these are the plain deep linear values (``U = 4 (l-1)(3l-4) K^3``).

    >>> f = linear_residual_closed_forms()
    >>> f["V1"]
    2*(1 - t**2)**2*(l - 2)*(l - 1)
    """
    return dict(_linear_residual_closed_forms())


@lru_cache(maxsize=1)
def _linear_residual_closed_forms() -> dict:
    t, l, n = sp.symbols("t l n", positive=True)
    eps = sp.Symbol("epsilon", positive=True)
    beta = 1 - t**2
    four = (1 + 2 * beta / n) ** (l - 1)
    # the binomial series in 1/n of the product (exact: a polynomial in l at each order)
    series = sp.expand(sp.expand_func(sp.series((1 + 2 * beta * eps) ** (l - 1), eps, 0, 3).removeO()))
    V, V1 = 2 * beta * (l - 1), 2 * beta**2 * (l - 1) * (l - 2)
    if sp.expand(series.coeff(eps, 1) - V) != 0 or sp.expand(series.coeff(eps, 2) - V1) != 0:
        raise RuntimeError("the 1/n expansion of the product formula does not give V, V1 (a sympy regression?)")
    U = beta**2 * (12 * (l - 1) * (l - 2) + 8 * (1 + 2 * t) / (1 + t) ** 2 * (l - 1))
    return {"four_point": four, "V": V, "V1": V1, "U": U, "symbols": (t, l, n)}

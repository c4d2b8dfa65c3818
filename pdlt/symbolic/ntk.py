r"""Single-input 1/n statistics of the neural tangent kernel: recursions, closed forms, large-depth asymptotics.

Conventions (PDLT ch. 8-11; derivations/README.md sections 16 and 18). Learning rates ``lambda_b`` (biases) and
``lambda_W/n_{l-1}`` (weights), ``n = n_{l-1}`` normalizes every layer-l statistic, ``r = n_l/n_{l-1}``, one input.
With ``Delta H = H - E H`` and neuron indices of one layer,

* ``E H_{ii} = Theta + Theta1/n``;
* ``n E[DH_{i1i2} DH_{i3i4}] = d12 d34 A + (d13 d24 + d14 d23) B``,
  ``n E[DH_{i1i2} z_{i3} z_{i4}] = d12 d34 D + (d13 d24 + d14 d23) F``;
* dNTK ``dH_{i0i1i2}``: ``n E[dH_{i0i1i2} z_{i3}] = d03 d12 P + (d01 d23 + d02 d13) Q``;
* ddNTK-I: ``n E[ddI_{i0i1i2i3}] = R (d01 d23 + d02 d13 + d03 d12)``;
  ddNTK-II: ``n E[ddII_{i1i2i3i4}] = d12 d34 S + d13 d24 T + d14 d23 U``.

The recursions (primes: layer l+1; functions at ``K = K^(l)``, ``C_W = C_W^(l+1)``, ``lambda = lambda^(l+1)``;
``chi_par = C_W <sigma'^2 + sigma sigma''>``, ``chi_perp = C_W <sigma'^2>``, ``h = (C_W/2) <sigma''^2 + sigma' sigma'''>
= (1/2) d chi_perp/dK``, ``h_K = dh/dK``)::

    Theta' = lambda_b + lambda_W <s^2> + chi_perp Theta
    F' = C_W^2 <s'^2 s^2> Theta + r chi_par^2 F
    B' = C_W^2 <s'^4> Theta^2 + r chi_perp^2 B
    D' = (lambda_W/C_W) V' + C_W^2 Theta (<s'^2 s^2> - <s'^2><s^2>) + r [chi_par chi_perp D + 2 h chi_par Theta V]
    A' = -(lambda_W/C_W)^2 V' + 2 (lambda_W/C_W) D' + C_W^2 Theta^2 (<s'^4> - <s'^2>^2)
         + r [chi_perp^2 A + 4 h chi_perp Theta D + 4 h^2 Theta^2 V]
    P' = C_W^2 Theta^2 <s s'^2 s''> + r [chi_par chi_perp P + chi_perp C_W <s s''> B]
    Q' = C_W^2 Theta^2 <s s'^2 s''> + (lambda_W/C_W) F' + r [chi_par chi_perp Q + 2 h chi_par Theta F]
    R' = lambda_W C_W Theta^2 <s s'^2 s''> + C_W^2 Theta^3 <s'^3 s'''>
         + r chi_perp [(lambda_W <s s''> + C_W Theta <s' s'''>) B + (lambda_W chi_par/C_W + 2 h Theta) P] + r chi_perp^2 R
    S' = C_W lambda_W Theta^2 <s'^4> + C_W^2 Theta^3 <s''^2 s'^2> + r chi_perp (lambda_W <s'^2> + C_W Theta <s''^2>) B
         + r chi_perp^2 S
    T' = lambda_W^2 Theta <s'^2 s^2> + 2 C_W lambda_W Theta^2 <s s'^2 s''> + C_W^2 Theta^3 <s''^2 s'^2>
         + r [(lambda_W chi_par/C_W + 2 h Theta)^2 F + 2 (lambda_W chi_par/C_W + 2 h Theta) chi_perp Q + chi_perp^2 T]
    U' = C_W^2 Theta^3 <s''^2 s'^2> + r chi_perp^2 U
    Theta1' = (lambda_W/C_W) G1' + r [chi_perp Theta1 + Theta (2 h G1 + h_K V) + 2 h (D + 2 F)]

with ``V``, ``G1`` from :mod:`pdlt.symbolic.finite_width`; at layer 1 everything but Theta is 0. ``C_W <s s''>`` is
written as an average (not ``chi_par - chi_perp``) so that small-K expansions see no cancellation. For kinked
activations the sigma'' and sigma''' of the network's own derivatives are taken pointwise (0 almost everywhere);
``h`` is ``(1/2) d chi_perp/dK`` (0 for the scale-invariant class).

>>> from pdlt import symbolic as sym
>>> sym.ntk_statistics_recursions("relu")["B"]
Eq(B_next, B_l*C_W**2*r/4 + C_W**2*Theta_l**2/2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import sympy as sp

from ..activations import Z, Activation, require_continuous
from ..activations import activation as _lookup
from ..errors import ParameterError, PdltError
from ..theory.criticality import universality_class
from . import symbols as _S
from .expectation import GaussianAverage, gaussian_average

__all__ = [
    "NTK_NAMES", "sigma_generic", "ntk_statistics_recursions", "iterate_ntk_statistics", "ntk_closed_forms",
    "NTKAsymptotics", "ntk_asymptotics",
]

#: the statistics, in the order the recursions are solved (V, G1 feed D, A, Theta1)
NTK_NAMES = ("Theta", "F", "B", "D", "A", "P", "Q", "R", "S", "T", "U", "Theta1")
_ORDER = ("Theta", "V", "G1", "F", "B", "D", "A", "P", "Q", "R", "S", "T", "U", "Theta1")
#: total degree of each statistic in the learning rates (each is a homogeneous polynomial in lambda_b, lambda_W)
LAMBDA_DEGREE = {"Theta": 1, "V": 0, "G1": 0, "F": 1, "B": 2, "D": 1, "A": 2, "P": 2, "Q": 2, "R": 3, "S": 3,
                 "T": 3, "U": 3, "Theta1": 1}

K_l, C_W, C_b, r, ell = _S.K_l, _S.C_W, _S.C_b, _S.r, _S.ell
lam_b, lam_W = _S.lambda_b, _S.lambda_W
chi_par, chi_perp, h, h_K = _S.chi_par, _S.chi_perp, _S.h, _S.h_K


def _cur(name):
    return {"Theta": _S.Theta_l, "V": _S.V_l, "G1": _S.G1_l}.get(name) or _S.ntk_state[name]


def _nxt(name):
    return {"Theta": _S.Theta_next, "V": _S.V_next, "G1": _S.G1_next}.get(name) or _S.ntk_next[name]


# --------------------------------------------------------------------------- a generic activation sigma(z)


class _SigmaDerivative(sp.Function):
    """``sigma^(k)(z)`` of a generic activation: differentiates to the next one, prints as sigma with k primes."""

    order = 0
    nargs = 1

    def fdiff(self, argindex=1):
        return sigma_generic(self.order + 1)(self.args[0])

    def _latex(self, printer, exp=None):
        base = r"{\sigma%s}" % ("'" * self.order)
        return base if exp is None else r"%s^{%s}" % (base, exp)

    def _sympystr(self, printer):
        return "sigma" + "'" * self.order


@lru_cache(maxsize=None)
def sigma_generic(k: int = 0):
    """The sympy function class of the k-th derivative of a generic activation (``sigma_generic(0)(z)`` is
    sigma(z); its z-derivative is ``sigma_generic(1)(z)``)."""
    return type(f"sigma_d{k}", (_SigmaDerivative,), {"order": k})


def _s(k):
    return sigma_generic(k)(Z)


def _avg(f):
    return GaussianAverage(f, (Z,), (K_l,))


def _generic_averages() -> dict:
    s, s1, s2, s3 = _s(0), _s(1), _s(2), _s(3)
    return {
        "g": _avg(s**2), "d2": _avg(s1**2), "d4": _avg(s1**4), "d2s2": _avg(s1**2 * s**2), "s4": _avg(s**4),
        "ss1s1s2": _avg(s * s1**2 * s2), "ss2": _avg(s * s2), "s1s1s1s3": _avg(s1**3 * s3), "s1s3": _avg(s1 * s3),
        "s2s2s1s1": _avg(s2**2 * s1**2), "s2s2": _avg(s2**2),
        # the G1 source (C_W/2) g''(K), written as the Hermite-4 average
        "g2": _avg(s**2 * (Z**4 - 6 * K_l * Z**2 + 3 * K_l**2)) / (4 * K_l**4),
    }


def _recursion_rhs(av: dict, sus: dict) -> dict:
    """Right-hand sides in the given averages ``av`` and susceptibilities ``sus`` (chi_par, chi_perp, h, h_K)."""
    cpar, cperp, hh, hK = sus["chi_par"], sus["chi_perp"], sus["h"], sus["h_K"]
    Th, V, G1 = _S.Theta_l, _S.V_l, _S.G1_l
    X = {n: _cur(n) for n in _ORDER}
    Xn = {n: _nxt(n) for n in _ORDER}
    lw = lam_W / C_W
    mix = lw * cpar + 2 * hh * Th  # C_W^2 <d(s' s)> lambda_W/C_W^2 + C_W^2 Theta <d(s'' s')>/C_W ...
    return {
        "Theta": lam_b + lam_W * av["g"] + cperp * Th,
        "V": C_W**2 * (av["s4"] - av["g"] ** 2) + r * cpar**2 * V,
        "G1": r * (cpar * G1 + C_W * av["g2"] / 2 * V),
        "F": C_W**2 * av["d2s2"] * Th + r * cpar**2 * X["F"],
        "B": C_W**2 * av["d4"] * Th**2 + r * cperp**2 * X["B"],
        "D": lw * Xn["V"] + C_W**2 * Th * (av["d2s2"] - av["d2"] * av["g"])
        + r * (cpar * cperp * X["D"] + 2 * hh * cpar * Th * V),
        "A": -(lw**2) * Xn["V"] + 2 * lw * Xn["D"] + C_W**2 * Th**2 * (av["d4"] - av["d2"] ** 2)
        + r * (cperp**2 * X["A"] + 4 * hh * cperp * Th * X["D"] + 4 * hh**2 * Th**2 * V),
        "P": C_W**2 * Th**2 * av["ss1s1s2"] + r * (cpar * cperp * X["P"] + cperp * C_W * av["ss2"] * X["B"]),
        "Q": C_W**2 * Th**2 * av["ss1s1s2"] + lw * Xn["F"] + r * (cpar * cperp * X["Q"] + 2 * hh * cpar * Th * X["F"]),
        "R": lam_W * C_W * Th**2 * av["ss1s1s2"] + C_W**2 * Th**3 * av["s1s1s1s3"]
        + r * cperp * ((lam_W * av["ss2"] + C_W * Th * av["s1s3"]) * X["B"] + mix * X["P"]) + r * cperp**2 * X["R"],
        "S": C_W * lam_W * Th**2 * av["d4"] + C_W**2 * Th**3 * av["s2s2s1s1"]
        + r * cperp * (lam_W * av["d2"] + C_W * Th * av["s2s2"]) * X["B"] + r * cperp**2 * X["S"],
        "T": lam_W**2 * Th * av["d2s2"] + 2 * C_W * lam_W * Th**2 * av["ss1s1s2"] + C_W**2 * Th**3 * av["s2s2s1s1"]
        + r * (mix**2 * X["F"] + 2 * mix * cperp * X["Q"] + cperp**2 * X["T"]),
        "U": C_W**2 * Th**3 * av["s2s2s1s1"] + r * cperp**2 * X["U"],
        "Theta1": lw * Xn["G1"] + r * (cperp * X["Theta1"] + Th * (2 * hh * G1 + hK * V) + 2 * hh * (X["D"] + 2 * X["F"])),
    }


def _half_line_moment(m: int, K_) -> sp.Expr:
    """``<z^m ; z > 0>_K = (1/2) E|z|^m = (1/2) (2K)^(m/2) Gamma((m+1)/2) / sqrt(pi)``."""
    return sp.simplify((2 * K_) ** sp.Rational(m, 2) * sp.gamma(sp.Rational(m + 1, 2)) / (2 * sp.sqrt(sp.pi)))


def _activation_average(act: Activation, f: sp.Expr) -> sp.Expr:
    """``<f>`` with the generic sigma^(k) replaced by the activation's derivatives. Scale-invariant class: each
    half line separately, where sigma = a z, so sigma'' = sigma''' = 0 pointwise (exact); polynomials: Wick;
    anything else: an unevaluated average."""
    if act.scale_invariant:
        out = sp.S.Zero
        for slope, sign in zip((sp.nsimplify(v) for v in act.slopes), (1, -1)):
            rep = {_s(k): sp.diff(slope * Z, Z, k) for k in range(4)}
            poly = sp.Poly(sp.expand(f.xreplace(rep)), Z)
            out += sum(c * sign**m * _half_line_moment(m, K_l) for (m,), c in poly.terms())
        return sp.expand(out)
    rep = {_s(k): sp.diff(act.expr, Z, k) for k in range(4)}
    # not expanded: for tanh, 4 t^2 (1 - t^2)^4 expanded in powers of t loses 1e-8 to cancellation in quadrature
    return gaussian_average(f.xreplace(rep), K_l)


def _specialize(act: Activation) -> tuple[dict, dict]:
    from .recursions import susceptibilities

    av = {}
    for key, val in _generic_averages().items():
        av[key] = val.replace(lambda a: isinstance(a, GaussianAverage), lambda a: _activation_average(act, a.integrand))
    sus = dict(susceptibilities(act, K_l))
    sus["h_K"] = sp.diff(sus["h"], K_l)
    return av, sus


def ntk_statistics_recursions(act=None) -> dict:
    """The single-input recursions of Theta, A, B, D, F, P, Q, R, S, T, U, Theta1 (and the V, G1 they use) as
    ``{name: Eq(<name>_next, rhs)}`` in the shared symbols (``Theta_l``, ``A_l``, ..., ``V_next``, ``C_W``, ``r``,
    ``lambda_b``, ``lambda_W``, ``K_l``); the equations of the module docstring.

    ``act=None``: the susceptibilities are the symbols ``chi_par, chi_perp, h, h_K`` and the Gaussian averages are
    unevaluated averages of a generic sigma (:func:`sigma_generic`). With an activation: its susceptibilities
    (:func:`pdlt.symbolic.susceptibilities`, ``h_K = dh/dK``) and averages (exact for polynomials and the
    scale-invariant class, unevaluated :class:`GaussianAverage` otherwise; evaluate with
    :func:`pdlt.symbolic.evaluate` or :func:`iterate_ntk_statistics`). ``sympy.latex`` of each Eq typesets it.
    """
    if act is None:
        av = _generic_averages()
        sus = {"chi_par": chi_par, "chi_perp": chi_perp, "h": h, "h_K": h_K}
    else:
        act = _lookup(act)
        require_continuous(act, "the NTK statistics (sigma' and its averages)")
        av, sus = _specialize(act)
    rhs = _recursion_rhs(av, sus)
    return {name: sp.Eq(_nxt(name), rhs[name]) for name in _ORDER}


# --------------------------------------------------------------------------- layer-by-layer iteration


def iterate_ntk_statistics(act, L: int, *, K1, lambda_b, lambda_W, C_W_value, C_b_value=0, Theta1_value=None,
                           exact: bool = False) -> dict:
    """Iterate the recursions of :func:`ntk_statistics_recursions` for equal widths (``r = 1``) from layer 1 to L.

    Layer 1: ``K^(1) = K1``, ``Theta^(1) = lambda_b + lambda_W (K1 - C_b)/C_W`` (first layer with the same
    hyperparameters; pass ``Theta1_value`` to override), all other statistics 0. ``exact=True`` keeps sympy
    numbers (Rational inputs and closed-form averages give exact results); otherwise float64, Gaussian averages
    by quadrature. Returns ``{name: [value at l = 1..L]}`` including ``K``.
    """
    from ..validation import check_int, check_real
    from .finite_width import evaluate
    from .recursions import kernel_recursion

    act = _lookup(act)
    L = check_int(L, "L", minimum=1, maximum=10_000)
    if not exact:   # (exact=True takes sympy numbers, e.g. Rationals)
        K1 = check_real(K1, "K1", minimum=0.0, open_minimum=True)
        C_W_value = check_real(C_W_value, "C_W_value", minimum=0.0, open_minimum=True)
        C_b_value = check_real(C_b_value, "C_b_value", minimum=0.0)
        lambda_b, lambda_W = check_real(lambda_b, "lambda_b", minimum=0.0), check_real(lambda_W, "lambda_W",
                                                                                      minimum=0.0)
    elif not (sp.sympify(C_W_value).is_positive and sp.sympify(K1).is_positive):
        raise ParameterError(f"C_W_value and K1 must be positive, got {C_W_value!r} and {K1!r}", "C_W_value")
    eqs = ntk_statistics_recursions(act)
    par = {C_W: sp.nsimplify(C_W_value) if exact else C_W_value, C_b: sp.nsimplify(C_b_value) if exact else C_b_value,
           lam_b: lambda_b, lam_W: lambda_W, r: 1}
    kr = kernel_recursion(act).rhs
    th1 = lambda_b + lambda_W * (K1 - C_b_value) / C_W_value if Theta1_value is None else Theta1_value
    state = {n: 0 for n in _ORDER}
    state["Theta"], state["K"] = th1, K1
    out = {n: [state[n]] for n in ("K", *_ORDER)}

    def val(e, sub):
        if exact:
            v = sp.sympify(e).xreplace(sub)
            if not v.has(GaussianAverage):
                v = sp.simplify(v)
            if v.free_symbols or v.has(GaussianAverage):
                raise ParameterError(f"{act.name}: no exact value ({v}); use exact=False", "exact")
            return v
        return evaluate(e, sub)

    for _ in range(L - 1):
        sub = {**par, K_l: state["K"], **{_cur(n): state[n] for n in _ORDER}}
        new = {}
        for n in _ORDER:  # V before D and A, D before A, F before Q, G1 before Theta1
            e = eqs[n].rhs.xreplace({_nxt(m): new[m] for m in new})
            new[n] = val(e, sub)
        new["K"] = val(kr, sub)
        state = new
        for n in out:
            out[n].append(state[n])
    return out


# --------------------------------------------------------------------------- scale-invariant closed forms


def ntk_closed_forms(act) -> dict:
    """Closed forms at criticality (``C_b = 0``, ``C_W = 1/A_2``, ``K^(l) = K^(1)``, equal widths, constant
    learning rates, ``Theta^(1) = Theta_0``) for a scale-invariant activation, as polynomials in ``ell``.

    Derivation (each step by sympy, nothing typed in): at criticality every multiplier (chi_par, chi_perp, r) is 1
    and h = 0, so each recursion is ``X(l+1) = X(l) + s(l)`` with a source built from already solved statistics;
    ``X(l) = X(1) + sum_{k=1}^{l-1} s(k)``. ``Theta_0 = lambda_b + lambda_W A_2 K^(1)``, ``q = A_4/A_2^2``; e.g.
    ``Theta = l Theta_0``, ``F = q K Theta_0 l(l-1)/2``, ``B = q Theta_0^2 (l-1) l (2l-1)/6``; P, R, U, Theta1 (and
    G1) vanish. Returns ``{name: expr}`` for V, G1 and the NTK statistics, plus ``Theta_0``, ``q``, ``A2``, ``A4``.
    """
    act = _lookup(act)
    if not act.scale_invariant:
        raise ParameterError(f"{act.name} is not scale-invariant: closed forms are derived for that class only "
                             "(use ntk_asymptotics for the K*=0 class)", "act")
    ap, am = (sp.nsimplify(v) for v in act.slopes)
    A2, A4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
    K1 = _S.K_1
    theta0 = lam_b + lam_W * A2 * K1
    eqs = ntk_statistics_recursions(act)
    k = sp.Symbol("k", integer=True, positive=True)
    crit = {C_W: 1 / A2, r: 1, K_l: K1}
    closed = {}
    for n in _ORDER:
        rhs = sp.expand(eqs[n].rhs.xreplace(crit))
        mult = sp.diff(rhs, _cur(n))
        if sp.simplify(mult - 1) != 0:
            raise PdltError(f"{act.name}: the {n} recursion has multiplier {mult} at criticality, not 1")
        src = rhs - _cur(n)
        src = src.xreplace({_cur(m): closed[m].subs(ell, k) for m in closed})
        src = src.xreplace({_nxt(m): closed[m].subs(ell, k + 1) for m in closed})
        if src.free_symbols & ({_cur(m) for m in _ORDER} | {_nxt(m) for m in _ORDER}):
            raise PdltError(f"{n}: source depends on a statistic not solved yet: {src}")
        start = theta0 if n == "Theta" else 0
        closed[n] = sp.factor(sp.expand(start + sp.summation(sp.expand(src), (k, 1, ell - 1))))
    closed.update({"Theta_0": theta0, "q": A4 / A2**2, "A2": A2, "A4": A4})
    return closed


# --------------------------------------------------------------------------- K*=0 asymptotics


class _Form(dict):
    """Leading large-l behaviour of a homogeneous polynomial in the learning rates:
    ``{(i, j): (c, p)}`` means the monomial ``lambda_b^i lambda_W^j`` has the coefficient ``c l^p (1 + o(1))``;
    ``c = None`` means only ``o(l^p)`` is known (its leading terms cancelled; the next order is not tracked)."""


def _form_const(c) -> _Form:
    c = sp.nsimplify(c) if not isinstance(c, sp.Basic) else c
    return _Form() if c == 0 else _Form({(0, 0): (c, sp.S.Zero)})


def _form_add(forms) -> _Form:
    out = _Form()
    keys = set().union(*forms)
    for key in keys:
        entries = [f[key] for f in forms if key in f]
        known = [(c, p) for c, p in entries if c is not None]
        bound = max((p for c, p in entries if c is None), default=None)
        top = max((p for _, p in known), default=None)
        tot = sp.nsimplify(sp.simplify(sum(c for c, p in known if p == top))) if known else sp.S.Zero
        if known and tot != 0 and (bound is None or bound <= top):
            out[key] = (tot, top)
        else:
            # the leading terms cancel (or a bound dominates): only an upper bound is known
            out[key] = (None, max(p for p in (top, bound) if p is not None))
    return out


def _form_mul(a: _Form, b: _Form) -> _Form:
    out = _Form()
    for (i1, j1), (c1, p1) in a.items():
        for (i2, j2), (c2, p2) in b.items():
            term = _Form({(i1 + i2, j1 + j2): (None if c1 is None or c2 is None else c1 * c2, p1 + p2)})
            out = _form_add([out, term]) if (i1 + i2, j1 + j2) in out else _Form({**out, **term})
    return out


def _form_eval(e, atoms: dict) -> _Form:
    """Evaluate a sympy expression on leading forms (Add: leading terms with a cancellation check; Mul, Pow)."""
    if e in atoms:
        return atoms[e]
    if e.is_Number:
        return _form_const(e)
    if isinstance(e, sp.Add):
        series = atoms.get("series")
        if series is not None and e.free_symbols <= {K_l, C_W}:
            # a function of K alone (a connected average such as <s'^2 s^2> - <s'^2><s^2>): its leading terms cancel
            # by construction, so expand it as a whole
            return _leading_in_l(series(e), atoms["kappa"])
        return _form_add([_form_eval(t, atoms) for t in e.args])
    if isinstance(e, sp.Mul):
        out = _form_const(1)
        for t in e.args:
            out = _form_mul(out, _form_eval(t, atoms))
        return out
    if isinstance(e, sp.Pow) and e.exp.is_Integer:
        base = _form_eval(e.base, atoms)
        if e.exp > 0:
            out = _form_const(1)
            for _ in range(int(e.exp)):
                out = _form_mul(out, base)
            return out
        if len(base) == 1 and (0, 0) in base and base[(0, 0)][0] is not None:
            c, p = base[(0, 0)]
            return _Form({(0, 0): (c**e.exp, p * e.exp)})
    raise PdltError(f"no leading form for {e}")


def _wick(f: sp.Expr) -> sp.Expr:
    from .expectation import moment_average

    return moment_average(sp.Poly(sp.expand(f), Z), K_l)


@lru_cache(maxsize=None)
def _kstar0_data(act: Activation) -> dict:
    """Small-K series of every average and susceptibility of the recursions for a K*=0 activation at criticality,
    from its Taylor polynomial (Wick's theorem)."""
    N, top = 13, 5  # sigma to z^13: averages of products with up to 3 derivatives are exact through K^5
    poly = sp.series(act.exact_expr, Z, 0, N + 1).removeO()       # (decimals as rationals: exact tests below)
    s = [sp.Poly(sp.diff(poly, Z, k), Z, K_l) for k in range(4)]
    s1 = s[1].as_expr().subs(Z, 0)
    cw = 1 / s1**2

    def trunc(p):
        # drop what is beyond K^top: z^a K^b counts as K^(a/2 + b)
        return sp.Poly.from_dict({m: c for m, c in p.as_dict().items() if m[0] + 2 * m[1] <= 2 * top}, Z, K_l,
                                 domain=p.domain)

    def peval(e):
        if isinstance(e, _SigmaDerivative):
            return s[e.order]
        if isinstance(e, sp.Add):
            out = peval(e.args[0])
            for t in e.args[1:]:
                out = out + peval(t)
            return out
        if isinstance(e, sp.Mul):
            out = peval(e.args[0])
            for t in e.args[1:]:
                out = trunc(out * peval(t))
            return out
        if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp > 0:
            base, out = peval(e.base), None
            for _ in range(int(e.exp)):
                out = base if out is None else trunc(out * base)
            return out
        if not e.free_symbols - {Z, K_l}:
            return sp.Poly(e, Z, K_l)
        raise PdltError(f"cannot expand {e} in a Taylor series")

    def series(f):
        out = sp.expand(_wick(trunc(peval(f)).as_expr()))
        return sum(out.coeff(K_l, j) * K_l**j for j in range(top + 1))

    g = series(_s(0) ** 2)
    cpar = sp.expand(cw * sp.diff(g, K_l))
    cperp = series(cw * _s(1) ** 2)
    hh = series(cw * (_s(2) ** 2 + _s(1) * _s(3)) / 2)
    assert sp.expand(hh - sp.diff(cperp, K_l) / 2).coeff(K_l, 0) == 0  # h = (1/2) d chi_perp/dK (Stein)
    a1 = sp.expand(cw * g).coeff(K_l, 2)
    b1 = cperp.coeff(K_l, 1)
    if not (a1 < 0 and cpar.coeff(K_l, 0) == 1 and cperp.coeff(K_l, 0) == 1):
        raise ParameterError(f"{act.name} is not a K*=0 activation at C_W = 1/sigma'(0)^2", "act")
    return {"series": series, "C_W": cw, "a1": a1, "b1": b1, "p_perp": sp.nsimplify(b1 / a1),
            "kappa": 1 / (-a1), "chi_par": cpar, "chi_perp": cperp, "h": hh, "h_K": sp.diff(hh, K_l)}


def _leading_in_l(series_K: sp.Expr, kappa) -> _Form:
    """Leading form of a power series in K at ``K = kappa/l``."""
    series_K = sp.expand(series_K)
    for j in range(6):
        c = sp.nsimplify(sp.simplify(series_K.coeff(K_l, j)))
        if c != 0:
            if j == 5:
                raise PdltError("an average starts at K^5: beyond the exact part of the Taylor series used")
            return _Form({(0, 0): (c * kappa**j, -sp.Integer(j))})
    return _Form()


@dataclass(frozen=True)
class NTKAsymptotics:
    """Large-depth forms of the single-input NTK statistics at criticality (equal widths).

    ``terms[name]``: the leading term of every monomial ``lambda_b^i lambda_W^j`` (a polynomial in the learning
    rates and powers of ``ell``). ``leading[name]``: constant ``lambda_b, lambda_W`` -- the monomials with the
    highest power of ``ell``. ``critical[name]``: the learning rates of :func:`pdlt.critical_learning_rates`
    (``lambda_b = lambda~_b/L``, ``lambda_W = lambda~_W``) at the output layer ``ell = L``, written in ``L`` with
    ``lambda_b, lambda_W`` standing for ``lambda~_b, lambda~_W``. ``exponents[name] = (p, p_crit)``: the powers of
    ``ell`` (constant rates) and of ``L`` (critical rates). Relative corrections are ``O(ln(ell)/ell)``.
    ``bounds[name] = {(i, j): p}``: monomials whose leading terms cancel, known only to be ``o(ell^p)``; a
    leading form that such a monomial could reach is ``None``.
    """

    activation: str
    universality: str
    terms: dict = field(default_factory=dict)
    leading: dict = field(default_factory=dict)
    critical: dict = field(default_factory=dict)
    exponents: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    exact: bool = False
    bounds: dict = field(default_factory=dict)

    def latex(self) -> str:
        rel = "=" if self.exact else r"\simeq"
        lines = [r"%s &%s %s" % (sp.latex(_cur(n)), rel, sp.latex(v)) for n, v in self.leading.items()]
        return "\\begin{align}\n" + " \\\\\n".join(lines) + "\n\\end{align}"


def _to_expr(form: _Form) -> sp.Expr:
    """The known leading terms, one per monomial of the learning rates."""
    return sp.Add(*(c * lam_b**i * lam_W**j * ell**p for (i, j), (c, p) in form.items() if c is not None))


def _leading_part(form: _Form, shift) -> tuple:
    """``(expr, power)`` of the monomials with the highest power of l after lowering monomial (i, j)'s power by
    ``shift(i)``; ``(None, None)`` when a bounded (cancelled) monomial could be as large."""
    if not form:
        return sp.S.Zero, None
    known = [(i, j, c, p - shift(i)) for (i, j), (c, p) in form.items() if c is not None]
    bound = max((p - shift(i) for (i, _), (c, p) in form.items() if c is None), default=None)
    if not known or (bound is not None and bound > max(q for *_, q in known)):
        return None, None
    top = max(q for *_, q in known)
    var = ell if shift(1) == 0 else _S.L
    return sp.Add(*(c * lam_b**i * lam_W**j * var**q for i, j, c, q in known if q == top)), top


def ntk_asymptotics(act) -> NTKAsymptotics:
    """Large-depth behaviour of Theta, A, B, D, F, P, Q, R, S, T, U, Theta1 (and V, G1) at criticality.

    * K*=0 class (``C_b = 0``, ``C_W = 1/sigma'(0)^2``): ``K ~ kappa/l`` with ``kappa = 1/(-a_1)``,
      ``chi_par ~ 1 - 2/l``, ``chi_perp ~ 1 - p_perp/l``. Each recursion ``X' = (1 - mu/l) X + s l^k`` (per
      monomial of the learning rates) has the particular solution ``X ~ s l^(k+1)/(k + 1 + mu)``, which dominates
      when ``k + 1 + mu > 0`` (checked; otherwise the initial condition would matter). Sources are evaluated on
      the leading forms with the small-K series of every average (Wick's theorem on the Taylor polynomial);
      a cancellation of leading terms raises instead of returning an incomplete answer. V and G1 come out as
      ``2/(3 a_1^2 l)`` and ``1/(3 a_1)`` (checked against :func:`pdlt.symbolic.kstar0_expansion`).
    * scale-invariant class: the exact closed forms of :func:`ntk_closed_forms` (``exact=True``); critical rates
      ``lambda/L`` for both.
    """
    act = _lookup(act)
    cls = universality_class(act, search=False)
    if cls == "scale-invariant":
        cf = ntk_closed_forms(act)
        out_terms, lead, crit, expo = {}, {}, {}, {}
        for n in _ORDER:
            e = sp.expand(cf[n])
            out_terms[n] = e
            if e == 0:
                lead[n], crit[n], expo[n] = sp.S.Zero, sp.S.Zero, (None, None)
                continue
            p = sp.degree(e, ell)
            lead[n] = sp.factor(e.coeff(ell, p) * ell**p)
            deg = LAMBDA_DEGREE[n]
            # lambda -> lambda~/L (both), ell = L: a polynomial in L over L^deg
            num = sp.Poly(sp.expand(e.subs({lam_b: lam_b / _S.L, lam_W: lam_W / _S.L, ell: _S.L}) * _S.L**deg), _S.L)
            pc = num.degree() - deg
            crit[n] = sp.factor(num.coeff_monomial(_S.L ** num.degree()) * _S.L**pc)
            expo[n] = (p, pc)
        return NTKAsymptotics(act.name, cls, out_terms, lead, crit, expo,
                              {k: cf[k] for k in ("Theta_0", "q", "A2", "A4")}, exact=True)
    if cls != "K*=0":
        what = f"is {cls!r}" if cls else "belongs to neither"
        raise ParameterError(f"NTK asymptotics are derived for the scale-invariant and K*=0 classes; {act.name} "
                             f"{what}", "act")
    dat = _kstar0_data(act)
    kap, mu_of = dat["kappa"], {}
    gen = ntk_statistics_recursions(None)
    # multipliers: 1 - mu/l from chi_par = 1 + 2 a_1 K, chi_perp = 1 + b_1 K (r = 1)
    eps = sp.Symbol("eps", positive=True)
    chi_sub = {chi_par: 1 + dat["chi_par"].coeff(K_l, 1) * kap * eps,
               chi_perp: 1 + dat["chi_perp"].coeff(K_l, 1) * kap * eps, r: 1}
    atoms = {lam_b: _Form({(1, 0): (sp.S.One, sp.S.Zero)}), lam_W: _Form({(0, 1): (sp.S.One, sp.S.Zero)}),
             r: _form_const(1), C_W: _form_const(dat["C_W"]), K_l: _Form({(0, 0): (kap, -sp.S.One)}),
             chi_par: _form_const(1), chi_perp: _form_const(1),
             h: _leading_in_l(dat["h"], kap), h_K: _leading_in_l(dat["h_K"], kap)}
    avg_series = {}
    for A in set().union(*(eq.rhs.atoms(GaussianAverage) for eq in gen.values())):
        avg_series[A] = dat["series"](A.integrand)
        atoms[A] = _leading_in_l(avg_series[A], kap)

    def k_series(e):
        out = sp.expand(e.xreplace(avg_series).xreplace({C_W: dat["C_W"]}))
        return sum(out.coeff(K_l, j) * K_l**j for j in range(6))

    atoms["series"], atoms["kappa"] = k_series, kap
    forms = {}
    for n in _ORDER:
        rhs = gen[n].rhs
        X = _cur(n)
        mult = sp.diff(rhs, X)
        m1 = sp.series(mult.xreplace(chi_sub), eps, 0, 2).removeO()
        if m1.coeff(eps, 0) != 1:
            raise PdltError(f"{n}: multiplier {mult} does not tend to 1")
        mu = -m1.coeff(eps, 1)
        mu_of[n] = mu
        src = rhs.xreplace({X: 0})  # not expanded: expanding would split averages into cancelling pieces
        sform = _form_eval(src, {**atoms, **{_cur(m): forms[m] for m in forms}, **{_nxt(m): forms[m] for m in forms}})
        sol = _Form()
        for key, (c, k) in sform.items():
            den = k + 1 + mu
            if not den > 0:
                raise PdltError(f"{n}: source l^{k} against decay l^-{mu}: the homogeneous solution dominates")
            # X ~ c l^(k+1)/(k+1+mu); a source o(l^k) gives o(l^(k+1))
            sol[key] = (None if c is None else sp.nsimplify(sp.simplify(c / den)), k + 1)
        forms[n] = sol
    from .finite_width import kstar0_expansion

    e = kstar0_expansion(act)
    assert sp.simplify(_to_expr(forms["V"]) - e["c"] / ell) == 0, (forms["V"], e["c"])
    assert sp.simplify(_to_expr(forms["G1"]) - e["h"]) == 0, (forms["G1"], e["h"])
    terms, lead, crit, expo, bounds = {}, {}, {}, {}, {}
    for n in _ORDER:
        terms[n] = _to_expr(forms[n])
        bounds[n] = {k: p for k, (c, p) in forms[n].items() if c is None}
        lead[n], p = _leading_part(forms[n], lambda i: 0)
        crit[n], pc = _leading_part(forms[n], lambda i: i)
        expo[n] = (p, pc)
    from .asymptotics import asymptotics

    assert sp.simplify(asymptotics(act).exponents["p_perp"] - dat["p_perp"]) == 0
    consts = {"a1": dat["a1"], "b1": dat["b1"], "p_perp": dat["p_perp"], "kappa": kap, "C_W": dat["C_W"],
              "mu": mu_of}
    return NTKAsymptotics(act.name, cls, terms, lead, crit, expo, consts, bounds=bounds)

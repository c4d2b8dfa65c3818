"""Activation functions as physics objects.

An :class:`Activation` knows

* its sympy expression ``expr`` in the symbol :data:`Z` (``z``, real),
* vectorized float64 numpy callables for sigma, sigma' and sigma'' (``act(z)``, ``act.d1(z)``,
  ``act.d2(z)``), built by hand for the registry (overflow-safe) or by ``sympy.lambdify`` for user
  expressions (erf, erfc from :mod:`scipy.special`),
* its other backends, all derived from this one object: the mpmath pair ``act.mp = (sigma, sigma')`` for
  high-precision references and the jitted-code JAX form ``act.jax_form()`` for the samplers (a hand-written
  recipe for the registered smooth activations, ``where(z > 0, a_+ z, a_- z)`` for scale-invariant ones,
  ``sympy.lambdify`` otherwise; JAX is imported only when a JAX form is first built),
* where sigma is not smooth (``kinks``: the z-values of kinks and jumps), so that Gaussian quadrature can
  split its domain there (:mod:`pdlt.gaussian`),
* closed-form Gaussian maps where they exist (in the style of neural-tangents' stax): the two-point map
  ``<sigma(z_1) sigma(z_2)>_K`` and the derivative map ``<sigma'(z_1) sigma'(z_2)>_K`` as sympy expressions
  in ``K11, K22, K12`` (:data:`K11`, :data:`K22`, :data:`K12`) and as numpy callables,
* closed forms of higher moments: ``act.three_point(K3)``, ``act.four_point(K4)`` (products of 3 and 4
  correlated activations, scale-invariant activations only; :mod:`pdlt.closed_forms`) and the sympy
  ``act.quartic(K)`` = ``<sigma^4>_K`` (scale-invariant, sin, erf),
* its universality data: the slopes ``(a_+, a_-)`` of a scale-invariant activation
  ``sigma(z) = a_+ z Theta(z) + a_- z Theta(-z)`` (PDLT section 5.2) and the Taylor coefficients
  ``sigma_p = sigma^(p)(0)`` (``sigma(z) = sum_p sigma_p z^p / p!``, PDLT section 5.3).

Closed forms (each is checked against quadrature and mpmath in ``tests/test_activations.py``):

* linear: ``<z_1 z_2> = K12``;
* scale-invariant (ReLU, leaky ReLU; arc-cosine kernel, Cho & Saul 2009): with ``p = (a_+ + a_-)/2``,
  ``q = (a_+ - a_-)/2`` one has ``sigma = p z + q |z|`` and
  ``<sigma sigma> = p^2 K12 + (2 q^2/pi) [sqrt(K11 K22 - K12^2) + K12 arcsin(K12/sqrt(K11 K22))]``,
  ``<sigma' sigma'> = p^2 + (2 q^2/pi) arcsin(K12/sqrt(K11 K22))``;
* GELU (Tsuchida et al. 2021): with ``P = (1+K11)(1+K22)``, ``D = P - K12^2``,
  ``<gelu gelu> = K12/4 + (K12/(2 pi)) arcsin(K12/sqrt(P)) + (K11 K22 D + K12^2)/(2 pi P sqrt(D))``;
* erf (Williams 1997): ``<erf erf> = (2/pi) arcsin(2 K12/sqrt((1+2K11)(1+2K22)))``,
  ``<erf' erf'> = (4/pi) / sqrt((1+2K11)(1+2K22) - 4 K12^2)``;
* sin: ``<sin sin> = exp(-(K11+K22)/2) sinh(K12)``, ``<cos cos> = exp(-(K11+K22)/2) cosh(K12)``.

The float64 forms of these maps are evaluated without ``arcsin(rho)``: angles are ``arctan2(K12, sqrt(det))``
with ``det = K11 K22 - K12^2`` computed exactly enough (error-free products after an exact power-of-two
rescaling), so they are exact at coincident inputs (``rho = +-1``) and within a few ulps of the exact value of
the given kernel entries near them (see :func:`correlation_angle`; tests in ``tests/test_activations_robustness.py``).

User activations (:meth:`Activation.from_sympy`, strings such as ``"tanh(z) + 0.1*z"``) are validated when
built: supported functions only (:data:`SUPPORTED_FUNCTIONS`), real and finite values, and numpy, mpmath and
JAX forms that agree; otherwise :class:`pdlt.errors.ActivationError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace as _dc_replace
from functools import cached_property, lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from scipy.special import erf as _erf
from scipy.special import erfc as _erfc

from .errors import ActivationError, ParameterError

__all__ = [
    "Activation",
    "activation",
    "correlation_angle",
    "correlation_cosine",
    "kernel_sqrt_det",
    "mp_forms",
    "numpy_forms",
    "SUPPORTED_FUNCTIONS",
    "available_activations",
    "register",
    "quadrature_miss",
    "require_resolved",
    "jumps",
    "require_continuous",
    "RESCALE_ADVICE",
    "Z",
    "K11",
    "K22",
    "K12",
]

Z = sp.Symbol("z", real=True)
K11 = sp.Symbol("K11", positive=True)
K22 = sp.Symbol("K22", positive=True)
K12 = sp.Symbol("K12", real=True)

ArrayFn = Callable[[np.ndarray], np.ndarray]


def _sigmoid(z):
    # exp(-z) overflows to inf for z < -709, giving the correct limit 0 (no NaN); silence the warning.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(z):
    return _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _Phi(z):
    # erfc(-x) rather than 1 + erf(x): no cancellation in the left tail, where GELU = z Phi(z) is tiny
    return 0.5 * _erfc(-z / _SQRT2)


# ---------------------------------------------------------------------- validation of user activations
#
# A user activation is evaluated by three generated backends: numpy (quadrature, this module), JAX (the
# samplers, pdlt.montecarlo.activations_jax) and mpmath (reference averages, pdlt.theory.criticality). Each is
# built and checked here once, at construction, so that an unsupported function, a parse error or values that
# are not real and finite surface as an ActivationError naming the cause, not as an error deep inside generated
# code (or, worse, as NaN in a result).

#: sympy functions every backend evaluates (the numpy, JAX and mpmath printers all know them; Max, Min, Abs,
#: sign and Heaviside are rewritten as Piecewise first). Others (besselj, gamma, floor, ...) are refused.
SUPPORTED_FUNCTIONS = (
    "exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh",
    "acosh", "atanh", "erf", "erfc", "Abs", "Max", "Min", "sign", "Heaviside", "Piecewise",
)

#: z values at which every backend is evaluated: the bulk of any Gaussian average plus a few large |z|
VALIDATION_GRID = np.concatenate([np.linspace(-8.0, 8.0, 161), [-100.0, -40.0, -20.0, -12.0, 12.0, 20.0, 40.0, 100.0]])

def supported_list() -> str:
    return ", ".join(s for s in SUPPORTED_FUNCTIONS if s != "Piecewise") + ", Piecewise, +, -, *, /, **"


def _parse_activation_text(text: str) -> sp.Expr:
    """Parse a string such as ``"tanh(z) + 0.1*z"`` without executing it.

    The text is tokenized first and may contain only numbers, the operators ``+ - * / ** ^ ( ) ,``, the
    functions in :data:`SUPPORTED_FUNCTIONS`, the constants ``pi`` and ``E`` and plain names (which become
    symbols). Only then is it handed to sympy's parser, with a namespace that holds nothing else.
    """
    import io
    import keyword
    import tokenize

    from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

    funcs = {name: getattr(sp, name) for name in SUPPORTED_FUNCTIONS}
    consts = {"pi": sp.pi, "E": sp.E}
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError) as err:
        raise ActivationError(f"could not parse {text!r}: {err.args[0] if err.args else err}") from None
    if not toks:
        raise ActivationError("could not parse '': the activation expression is empty")
    ops = {"+", "-", "*", "/", "**", "^", "(", ")", ","}
    for k, t in enumerate(toks):
        nxt = toks[k + 1].string if k + 1 < len(toks) else ""
        if t.type == tokenize.NUMBER:
            continue
        if t.type == tokenize.OP and t.string in ops:
            continue
        if t.type == tokenize.NAME and not t.string.startswith("_") and not keyword.iskeyword(t.string):
            if nxt == "(" and t.string not in funcs:
                raise ActivationError(f"could not parse {text!r}: unknown function {t.string!r}; supported "
                                      f"functions: {supported_list()}")
            continue
        raise ActivationError(f"could not parse {text!r}: {t.string!r} is not allowed in an activation expression "
                              f"(use z, numbers, pi, E and {supported_list()})")
    glob = {"__builtins__": {}, "Integer": sp.Integer, "Float": sp.Float, "Rational": sp.Rational,
            "Symbol": sp.Symbol, "Function": sp.Function}
    try:
        out = parse_expr(text, local_dict={**funcs, **consts}, global_dict=glob,
                         transformations=standard_transformations + (convert_xor,))
    except Exception as err:  # the parser's SyntaxError, TokenError, TypeError all mean "bad text"
        raise ActivationError(f"could not parse {text!r}: {type(err).__name__}: {err}") from None
    if not isinstance(out, sp.Expr):
        raise ActivationError(f"could not parse {text!r}: it is not an expression in z")
    return out


def _check_functions(expr: sp.Expr, what: str) -> None:
    undef = sorted({type(f).__name__ for f in expr.atoms(sp.core.function.AppliedUndef)})
    if undef:
        raise ActivationError(f"{what} uses the undefined function(s) {', '.join(undef)}: pdlt needs a concrete "
                              f"function of z; supported functions: {supported_list()}")
    bad = sorted({type(f).__name__ for f in expr.atoms(sp.Function)} - set(SUPPORTED_FUNCTIONS))
    if bad:
        raise ActivationError(f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not supported by pdlt's "
                              f"numeric backends (numpy, JAX, mpmath) in the activation {what}; supported "
                              f"functions: {supported_list()}")
    if expr.has(sp.I, sp.zoo, sp.oo, sp.nan):
        raise ActivationError(f"the activation {what} contains I, oo or nan: it must be real and finite for every "
                              "real z")


def _fmt_z(zs) -> str:
    return ", ".join(f"{z:g}" for z in np.asarray(zs)[:3])


def _check_numpy(raw, name: str, what: str) -> np.ndarray:
    """Evaluate a raw lambdified numpy callable on the grid; refuse complex or non-finite values."""
    with np.errstate(all="ignore"):
        try:
            v = np.asarray(raw(VALIDATION_GRID.copy()))
        except Exception as err:  # NameError for a function numpy lacks, TypeError, ...
            raise ActivationError(f"cannot evaluate {name} of the activation {what} with numpy "
                                  f"({type(err).__name__}: {err}); supported functions: {supported_list()}") from None
    v = np.broadcast_to(v, VALIDATION_GRID.shape)
    if np.iscomplexobj(v):
        bad = np.flatnonzero(v.imag != 0)
        if bad.size:
            raise ActivationError(f"{name} of the activation {what} is complex at z = {_fmt_z(VALIDATION_GRID[bad])}"
                                  ": an activation must be real and finite for every real z")
        v = v.real
    try:
        v = v.astype(np.float64)
    except (TypeError, ValueError):
        raise ActivationError(f"{name} of the activation {what} is not a real number") from None
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ActivationError(f"{name} of the activation {what} is not finite (or not real) at z = "
                              f"{_fmt_z(VALIDATION_GRID[bad])}: an activation must be real and finite for every "
                              "real z (and its first two derivatives too)")
    return v


@lru_cache(maxsize=64)
def mp_forms(expr: sp.Expr):
    """mpmath callables ``(sigma, sigma')`` of an expression in :data:`Z` (scalar mpf in, mpf out): the forms
    pdlt's high-precision references (:func:`pdlt.gaussian.moments_1d_mp`, ``pdlt.verify``) evaluate, also
    reached as :attr:`Activation.mp`. Cached per expression (``mp_forms.cache_clear()`` empties it)."""
    f0 = sp.lambdify(Z, expr, modules="mpmath")
    f1 = sp.lambdify(Z, sp.diff(expr, Z), modules="mpmath")
    return f0, f1


def _check_mpmath(act: "Activation", v0: np.ndarray, v1: np.ndarray, what: str) -> None:
    """The mpmath forms agree with the numpy ones (rtol 1e-9) on the grid, away from kinks."""
    import mpmath

    try:
        f0, f1 = mp_forms(act.expr)
    except Exception as err:
        raise ActivationError(f"cannot build the mpmath form of the activation {what} ({type(err).__name__}: "
                              f"{err}); supported functions: {supported_list()}") from None
    keep = np.ones(VALIDATION_GRID.size, dtype=bool)
    keep[1::4] = keep[2::4] = keep[3::4] = False
    for k in act.kinks:  # one-sided values at a kink differ by convention
        keep &= np.abs(VALIDATION_GRID - k) > 1e-9
    idx = np.flatnonzero(keep)
    for label, f, ref in (("sigma", f0, v0), ("sigma'", f1, v1)):
        scale = max(1.0, float(np.max(np.abs(ref))))
        with mpmath.workdps(30):
            for i in idx:
                try:
                    m = f(mpmath.mpf(float(VALIDATION_GRID[i])))
                    val = complex(m)
                except Exception as err:
                    raise ActivationError(f"{label} of the activation {what} cannot be evaluated by pdlt's mpmath "
                                          f"backend at z = {VALIDATION_GRID[i]:g} ({type(err).__name__}: {err}); "
                                          f"supported functions: {supported_list()}") from None
                if val.imag != 0 or not math.isfinite(val.real):
                    raise ActivationError(f"{label} of the activation {what} is not real and finite at z = "
                                          f"{VALIDATION_GRID[i]:g} (mpmath): an activation must be real and finite "
                                          "for every real z")
                if abs(val.real - ref[i]) > 1e-9 * abs(ref[i]) + 1e-12 * scale:
                    raise ActivationError(f"the numpy and mpmath forms of {label} of the activation {what} disagree "
                                          f"at z = {VALIDATION_GRID[i]:g} ({ref[i]!r} vs {val.real!r}); use "
                                          f"standard functions ({supported_list()})")


def _validate(act: "Activation", raws) -> None:
    """Refuse an activation whose numpy, mpmath or JAX forms are unusable or disagree (ActivationError)."""
    what = f"{act.name!r}" if act.name == str(act.expr) else f"{act.name!r} ({act.expr})"
    v0, v1, _ = (_check_numpy(f, nm, what) for f, nm in zip(raws, ("sigma", "sigma'", "sigma''")))
    _check_mpmath(act, v0, v1, what)
    # building the JAX form checks it against numpy and caches it for the samplers
    act.jax_form()


@dataclass(frozen=True, eq=False)
class Activation:
    """An activation function sigma(z) with its symbolic, numeric and Gaussian-map data.

    Build one from the registry with :func:`activation` or from any sympy expression with
    :meth:`Activation.from_sympy`. Numeric callables take and return float64 arrays of any shape.
    """

    name: str
    expr: sp.Expr
    kinks: tuple[float, ...] = ()
    slopes: tuple[float, float] | None = None
    pair_map: sp.Expr | None = field(default=None, repr=False)
    dpair_map: sp.Expr | None = field(default=None, repr=False)
    _fn: ArrayFn | None = field(default=None, repr=False)
    _d1: ArrayFn | None = field(default=None, repr=False)
    _d2: ArrayFn | None = field(default=None, repr=False)
    _pair_np: Callable | None = field(default=None, repr=False)
    _dpair_np: Callable | None = field(default=None, repr=False)
    #: recipe for the JAX form: ``jax_recipe(jx) -> elementwise callable``, ``jx`` a namespace holding ``jnp``
    #: (jax.numpy), ``special`` (jax.scipy.special) and ``nn`` (jax.nn); None: lambdify the expression
    _jax: Callable | None = field(default=None, repr=False)
    #: ``<sigma^4>_K`` as a sympy expression in a given kernel symbol, where a closed form is known
    _quartic: Callable | None = field(default=None, repr=False)

    def __reduce__(self):
        # pickled as its definition, not its callables (closures cannot be pickled; a second process, e.g. pdlt
        # verify's, rebuilds them): a registered activation by its name ("leaky_relu(0.1)"), any other by its
        # expression, name and kinks (rebuilt and validated by from_sympy)
        m = _CALL.match(self.name)
        if m and m.group(1).lower() in _REGISTRY and _numeric_args(m.group(2)):
            same = activation(self.name)
            if same.expr == self.expr and same.kinks == self.kinks:
                return activation, (self.name,)
        return _from_definition, (self.expr, self.name, self.kinks)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sympy(
        cls,
        expr,
        name: str | None = None,
        *,
        symbol: sp.Symbol | None = None,
        kinks: tuple[float, ...] | None = None,
    ) -> "Activation":
        """An activation from a sympy expression (or a string such as ``"tanh(z) + 0.1*z"``) in one variable.

        ``symbol`` defaults to the expression's only free symbol. Kinks (points where sigma or a
        derivative jumps: ``Abs``, ``Max``, ``Min``, ``Heaviside``, ``sign``, ``Piecewise``) are found
        automatically; pass ``kinks`` to override. Scale invariance (``sigma(lambda z) = lambda sigma(z)``
        for lambda > 0) is detected and gives the slopes ``(a_+, a_-)``.

        The activation is validated here: strings are parsed without being executed; only the functions in
        :data:`SUPPORTED_FUNCTIONS` are accepted; sigma, sigma' and sigma'' must be real and finite on
        :data:`VALIDATION_GRID` (z in [-8, 8] and |z| up to 100); the numpy, mpmath and JAX forms pdlt uses
        must agree there. A constant expression is refused: sigma' = 0 makes chi_perp = 0, so criticality
        (C_W = 1/<sigma'^2>) and every derivative-based quantity is undefined. Any failure raises
        :class:`pdlt.errors.ActivationError` naming the cause. Validation imports JAX (about a second the first
        time).

        >>> import sympy as sp
        >>> act = Activation.from_sympy(sp.Max(0, sp.Symbol("x")), name="my_relu")
        >>> act.slopes, act.kinks
        ((1.0, 0.0), (0.0,))
        """
        try:
            return cls._from_sympy(expr, name, symbol, kinks)
        except ActivationError:
            raise
        except Exception as err:  # anything sympy/numpy raise on an unusable expression: never a raw traceback
            raise ActivationError(f"cannot use {expr!r} as an activation ({type(err).__name__}: {err}); use an "
                                  f"expression in z with the functions {supported_list()}") from None

    @classmethod
    def _from_sympy(cls, expr, name, symbol, kinks) -> "Activation":
        if isinstance(expr, str):
            text = expr
            expr = _parse_activation_text(expr)
            name = name or text.strip()
        elif isinstance(expr, (int, float)) and not isinstance(expr, bool):
            expr = sp.Float(expr) if isinstance(expr, float) else sp.Integer(expr)
        elif not isinstance(expr, sp.Expr):
            raise ActivationError(f"an activation must be a sympy expression or a string such as 'tanh(z)', not "
                                  f"{type(expr).__name__}")
        what = repr(str(expr))
        free = expr.free_symbols
        if symbol is None:
            if not free:
                raise ActivationError(
                    f"the activation {what} does not depend on its variable: a constant sigma has sigma' = 0, so "
                    "chi_perp = 0 and criticality is undefined; pdlt refuses constant activations")
            if len(free) != 1:
                raise ActivationError(
                    f"an activation needs an expression in exactly one variable; got free symbols "
                    f"{sorted(map(str, free))}. Substitute numbers for the parameters or pass symbol=."
                )
            (symbol,) = free
        elif free - {symbol}:
            raise ActivationError(f"the activation {what} has symbols {sorted(map(str, free - {symbol}))} besides "
                                  f"{symbol}; substitute numbers for them")
        elif symbol not in free:
            raise ActivationError(
                f"the activation {what} does not depend on {symbol}: a constant sigma has sigma' = 0, so chi_perp = 0 "
                "and criticality is undefined; pdlt refuses constant activations")
        _check_functions(expr, what)
        expr = expr.subs(symbol, Z)
        expr = expr.rewrite(sp.Piecewise) if expr.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign) else expr
        if Z not in expr.free_symbols:  # e.g. z - z, or sin(z)**2 + cos(z)**2 after evaluation
            raise ActivationError(
                f"the activation {what} does not depend on z: a constant sigma has sigma' = 0, so chi_perp = 0 "
                "and criticality is undefined; pdlt refuses constant activations")
        if kinks is None:
            kinks = find_kinks(expr)
        kinks = tuple(sorted(float(k) for k in kinks))
        slopes = _scale_invariant_slopes(expr)
        name = name or str(expr)
        raws = tuple(lambdify_numpy(Z, d) for d in derivative_exprs(expr, 2))

        def wrap(f):
            def g(z):
                z = np.asarray(z, dtype=np.float64)
                with np.errstate(over="ignore", invalid="ignore"):
                    return np.broadcast_to(np.asarray(f(z), dtype=np.float64), z.shape).copy()

            return g

        act = cls(name=name, expr=expr, kinks=kinks, slopes=slopes,
                  _fn=wrap(raws[0]), _d1=wrap(raws[1]), _d2=wrap(raws[2]))
        if slopes is not None:
            act = _with_scale_invariant_maps(act, *slopes)
        twin = _smooth_builtins().get(expr)
        if twin is not None:  # the same function as a registered one: share its fast JAX form and sigma^4 average
            act = _replace(act, _jax=twin._jax, _quartic=twin._quartic)
        _validate(act, raws)
        return act

    # ------------------------------------------------------------------ numerics
    def __call__(self, z) -> np.ndarray:
        """sigma(z), float64, elementwise."""
        return self._fn(np.asarray(z, dtype=np.float64))

    def d1(self, z) -> np.ndarray:
        """sigma'(z) (the one-sided value away from kinks)."""
        return self._d1(np.asarray(z, dtype=np.float64))

    def d2(self, z) -> np.ndarray:
        """sigma''(z) away from kinks (delta functions at kinks are not represented)."""
        return self._d2(np.asarray(z, dtype=np.float64))

    def d3(self, z) -> np.ndarray:
        """The third derivative of sigma away from kinks (pointwise: 0 for piecewise-linear activations; delta
        functions at kinks are not represented), from the sympy expression."""
        return _third_derivative(self.expr)(np.asarray(z, dtype=np.float64))

    def derivatives(self, z) -> tuple:
        """The 3-jet ``(s, s', s'', s''')`` of sigma at ``z`` in one pass (common subexpressions such as ``tanh(z)``
        or ``erf(z/sqrt 2)`` evaluated once), from the sympy expression; pointwise away from kinks, as :meth:`d3`."""
        return derivative_forms(self.expr)(np.asarray(z, dtype=np.float64))

    @property
    def smooth(self) -> bool:
        return not self.kinks

    @property
    def odd(self) -> bool:
        """``sigma(-z) = -sigma(z)`` (linear, tanh, erf, ...): then flipping one neuron's sign at every layer, with its
        weights, is a symmetry even through shortcuts, and each neuron's odd moments vanish."""
        return is_odd(self.expr)

    def pair(self, K11_, K22_, K12_) -> np.ndarray | None:
        """Closed-form ``<sigma(z_1) sigma(z_2)>`` for ``z ~ N(0, [[K11, K12], [K12, K22]])`` or None."""
        return None if self._pair_np is None else self._pair_np(*np.broadcast_arrays(
            *(np.asarray(a, dtype=np.float64) for a in (K11_, K22_, K12_))))

    def dpair(self, K11_, K22_, K12_) -> np.ndarray | None:
        """Closed-form ``<sigma'(z_1) sigma'(z_2)>`` or None."""
        return None if self._dpair_np is None else self._dpair_np(*np.broadcast_arrays(
            *(np.asarray(a, dtype=np.float64) for a in (K11_, K22_, K12_))))

    def pair_gradient(self, K11_, K22_, K12_) -> tuple[np.ndarray, np.ndarray] | None:
        """``(dP/dK11, dP/dK12)`` of the closed-form ``P = <sigma(z_1) sigma(z_2)>`` (by Price's theorem
        ``<sigma''(z_1) sigma(z_2)>/2`` and ``<sigma'(z_1) sigma'(z_2)>``), from the derivatives of :attr:`pair_map`;
        None without a closed form or with kinks (where the closed forms are not differentiated symbolically)."""
        if self.pair_map is None or self.kinks:
            return None
        d11, d12 = _pair_gradient_np(self.pair_map)(*np.broadcast_arrays(
            *(np.asarray(a, dtype=np.float64) for a in (K11_, K22_, K12_))))
        shape = np.broadcast(K11_, K22_, K12_).shape
        return np.broadcast_to(d11, shape).astype(np.float64), np.broadcast_to(d12, shape).astype(np.float64)

    def three_point(self, K3) -> np.ndarray | None:
        """``[<s_0^2 s_1 s_2>, <s_0 s_1^2 s_2>, <s_0 s_1 s_2^2>]`` (``s_i = sigma(z_i)``) for kernels ``K3`` of shape
        ``(..., 3, 3)`` with positive variances, in closed form (scale-invariant activations; else None).
        Returns shape ``(..., 3)``. See :func:`pdlt.closed_forms.three_point`."""
        if self.slopes is None:
            return None
        from . import closed_forms

        return closed_forms.three_point(*self.slopes, np.asarray(K3, dtype=np.float64))

    def four_point(self, K4) -> np.ndarray | None:
        """``<s_0 s_1 s_2 s_3>`` for kernels ``K4`` of shape ``(B, 4, 4)`` with positive variances, in closed form
        up to a 1-D path integral (scale-invariant activations; else None). Returns shape ``(B,)``. May raise
        ``numpy.linalg.LinAlgError`` for an exactly singular 2x2 sub-block. See :func:`pdlt.closed_forms.four_point`."""
        if self.slopes is None:
            return None
        from . import closed_forms

        return closed_forms.four_point(*self.slopes, np.asarray(K4, dtype=np.float64))

    def quartic(self, K_) -> sp.Expr | None:
        """``<sigma(z)^4>_K`` as a sympy expression in the kernel ``K_`` where a closed form is known, else None:
        ``3 A_4 K^2`` (scale-invariant, ``A_4 = (a_+^4 + a_-^4)/2`` with exact slopes), sin
        ``(3 - 4 e^{-2K} + e^{-8K})/8``, erf ``(24/pi^2) int_0^{arcsin(2K/(1+2K))} arcsin(sin t/(1 + 2 sin t)) dt``
        (Price's theorem, kept as an unevaluated Integral)."""
        if self.slopes is not None:
            return self.power_moment(4) * K_**2
        return None if self._quartic is None else self._quartic(K_)

    def power_moment(self, p: int) -> sp.Expr | None:
        """``<sigma(xi)^p>`` for ``xi ~ N(0, 1)`` and even ``p >= 0``, exact for the scale-invariant class
        (``(a_+^p + a_-^p) (p-1)!!/2`` with exact slopes; then ``<sigma^p>_K = A_p K^(p/2)``), else None."""
        if isinstance(p, bool) or not isinstance(p, int) or p < 0 or p % 2:
            raise ParameterError(f"power_moment needs an even integer p >= 0, got {p!r}", "p")
        if self.slopes is None:
            return None
        ap, am = (sp.nsimplify(v) for v in self.slopes)
        return (ap**p + am**p) * sp.factorial2(p - 1) / 2

    # ------------------------------------------------------------------ other backends
    @property
    def mp(self):
        """``(sigma, sigma')`` as mpmath callables (scalar mpf in, mpf out), lambdified from ``expr``."""
        return mp_forms(self.expr)

    @property
    def jax_recipe(self):
        """The builtin's fast JAX form as a recipe ``recipe(ns) -> callable`` (``ns.jnp``, ``ns.special``,
        ``ns.nn``), or None (the expression is then lambdified); see :mod:`pdlt.montecarlo.activations_jax`."""
        return self._jax

    def jax_form(self) -> Callable:
        """Elementwise float64 JAX callable ``sigma(z)`` (jit- and grad-safe), checked once against the numpy
        ``act(z)`` and ``act.d1(z)`` and cached; imports JAX. See :mod:`pdlt.montecarlo.activations_jax`."""
        from .montecarlo.activations_jax import checked_jax_form

        return checked_jax_form(self)

    # ------------------------------------------------------------------ universality data
    @property
    def scale_invariant(self) -> bool:
        return self.slopes is not None

    @property
    def A2(self) -> float:
        """``(a_+^2 + a_-^2)/2`` for scale-invariant activations."""
        self._need_slopes("A2")
        ap, am = self.slopes
        return (ap * ap + am * am) / 2

    @property
    def A4(self) -> float:
        """``(a_+^4 + a_-^4)/2`` for scale-invariant activations."""
        self._need_slopes("A4")
        ap, am = self.slopes
        return (ap**4 + am**4) / 2

    def _need_slopes(self, what):
        if self.slopes is None:
            raise ParameterError(f"{what} is defined only for scale-invariant activations; {self.name} is not one")

    @cached_property
    def exact_expr(self) -> sp.Expr:
        """``expr`` with its decimals as the rationals they are written as (``0.1 -> 1/10``), the form exact symbolic
        results start from: in floats the K*=0 class's exact criticality tests failed by rounding for
        ``'tanh(z) + 0.1*z'`` and ``'1.5*tanh(z)'``."""
        return sp.nsimplify(self.expr, rational=True)

    def taylor(self, order: int = 6) -> tuple[sp.Expr, ...]:
        """Exact Taylor coefficients ``(sigma_0, ..., sigma_order)``, ``sigma_p = sigma^(p)(0)``.

        Raises ValueError if sigma is not smooth at 0 (e.g. ReLU): the K* = 0 analysis needs them.
        """
        if any(abs(k) < 1e-300 for k in self.kinks):
            raise ParameterError(f"{self.name} has a kink at z = 0, so it has no Taylor expansion there")
        out, d = [], self.exact_expr
        for _ in range(order + 1):
            out.append(sp.simplify(d.subs(Z, 0)))
            d = sp.diff(d, Z)
        return tuple(out)

    @cached_property
    def key(self) -> str:
        # (kept: every lru_cache keyed on an activation hashes it, and srepr took a quarter of all_orders' time)
        return f"{self.name}:{sp.srepr(self.expr)}"

    def __eq__(self, other):
        return isinstance(other, Activation) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def latex(self) -> str:
        return sp.latex(self.expr)


# ---------------------------------------------------------------------- helpers


@lru_cache(maxsize=64)
def is_odd(expr: sp.Expr) -> bool:
    """Whether ``expr(-z) = -expr(z)`` simplifies to an identity (False where sympy cannot show it)."""
    try:
        return sp.simplify(expr.subs(Z, -Z) + expr) == 0
    except Exception:         # sympy's simplify can fail on unusual expressions: then not known to be odd
        return False


def _integer_power(b, n: int):
    """``b**n`` for an integer ``n >= 1``: libm's ``pow`` where no entry is negative; else squarings and products (about
    2 log2(n) elementwise products, a few ulps): ``pow`` of a negative base takes a slow path, 11 ms against 0.9 ms
    per 2e5 entries, and the derivatives of tanh and GELU are polynomials in tanh(z) and z."""
    b = np.asarray(b)
    if b.ndim == 0 or not b.size or not np.min(b) < 0:
        return b**n
    out = None
    while True:
        if n & 1:
            out = b if out is None else out * b
        n >>= 1
        if not n:
            return out
        b = b * b


def lambdify_numpy(args, exprs, cse: bool = False) -> Callable:
    """``sympy.lambdify(args, exprs)`` on numpy, with scipy's erf/erfc (no overflow) and integer powers through
    :func:`_integer_power`: the one numpy printer of pdlt's sympy forms (the float64 oracle of
    :mod:`pdlt.symbolic.expectation` keeps sympy's own)."""
    from sympy.printing.numpy import NumPyPrinter

    class Printer(NumPyPrinter):
        def _print_Pow(self, expr, rational=False):
            n = int(expr.exp) if expr.exp.is_Integer else 0
            if n >= 3 or n <= -2:
                text = f"_integer_power({self._print(expr.base)}, {abs(n)})"
                return text if n > 0 else f"(1/{text})"
            return f"(1/({self._print(expr.base)}))" if n == -1 else super()._print_Pow(expr, rational=rational)

    names = {"erf": _erf, "erfc": _erfc, "_integer_power": _integer_power}
    # (the settings lambdify gives its own printer)
    printer = Printer({"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": True,
                       "user_functions": {k: k for k in names}})
    return sp.lambdify(args, exprs, modules=[names, "numpy"], cse=cse, printer=printer)


@lru_cache(maxsize=32)
def _pair_gradient_np(pair_map: sp.Expr) -> Callable:
    """Numpy ``(K11, K22, K12) -> [dP/dK11, dP/dK12]`` of a closed-form pair average (one lambdified form)."""
    return lambdify_numpy((K11, K22, K12), [sp.diff(pair_map, K11), sp.diff(pair_map, K12)], cse=True)


@lru_cache(maxsize=64)
def _third_derivative(expr: sp.Expr) -> ArrayFn:
    """Numpy callable of the third z-derivative of ``expr`` (float64, elementwise), cached per expression."""
    raw = lambdify_numpy(Z, derivative_exprs(expr, 3)[3])

    def g(z):
        z = np.asarray(z, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.broadcast_to(np.asarray(raw(z), dtype=np.float64), z.shape).copy()

    return g


def numpy_forms(forms) -> Callable:
    """Numpy callable ``z -> tuple of arrays`` (float64, z's shape) of sympy expressions in ``pdlt.activations.Z``
    evaluated together (common subexpressions shared; erf/erfc without overflow), for forms derived from an
    activation's expression (its derivatives, powers)."""
    raw = lambdify_numpy(Z, list(forms), cse=True)

    def g(z):
        z = np.asarray(z, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return tuple(np.broadcast_to(np.asarray(v, dtype=np.float64), z.shape) for v in raw(z))

    return g


#: functions that factoring could turn inside out: a derivative that holds one keeps sympy's own form
_UNFACTORED = (sp.Piecewise, sp.Heaviside, sp.DiracDelta, sp.Abs, sp.sign, sp.Max, sp.Min)
#: largest numerator or denominator in an exponent of a derivative that is factored: factoring reads exp(-c z^2) as
#: the power c of exp(z^2), which for a rescaled activation (c = 2^40: pdlt.activations.scaled_activation) took 20 GB
_FACTOR_MAX_EXPONENT = 100


def _factorable(d: sp.Expr) -> bool:
    if d.has(*_UNFACTORED) or d.atoms(sp.Float):
        return False
    exponents = [f.args[0] for f in d.atoms(sp.exp)] + [f.args[1] for f in d.atoms(sp.Pow)]
    return all(abs(r.p) <= _FACTOR_MAX_EXPONENT and r.q <= _FACTOR_MAX_EXPONENT
               for e in exponents for r in e.atoms(sp.Rational))


@lru_cache(maxsize=256)
def derivative_exprs(expr: sp.Expr, nmax: int) -> tuple:
    """``(f, f', .., f^(nmax))`` of an expression ``f`` in :data:`Z`, each derivative that of the one before, factored
    where that makes it no larger: the one home of a derivative jet (an activation's, or of its powers).

    ``sp.diff(f, Z, k)`` differentiates k times afresh for each k, and its forms cancel: tanh's jet to the twelfth
    took 2 s, swish's and softplus's twelfth derivatives came out 1e-9 off (relative to their size on |z| < 8,
    against mpmath); step by step with factoring, 0.2 s and 1e-14 (tests/test_activations.py). Derivatives with
    large numbers in an exponent (a rescaled activation), Floats or kinks are not factored (:func:`_factorable`)."""
    if nmax <= 0:
        return (expr,)
    lower = derivative_exprs(expr, nmax - 1)
    d = sp.diff(lower[-1], Z)
    if _factorable(d):
        f = sp.factor(d)
        d = f if sp.count_ops(f) <= sp.count_ops(d) else d
    return lower + (d,)


@lru_cache(maxsize=64)
def derivative_forms(expr: sp.Expr, nmax: int = 3) -> Callable:
    """Numpy callable ``z -> (sigma, sigma', .., sigma^(nmax))`` of an expression in :data:`Z`, evaluated together
    (:func:`numpy_forms`), cached per expression and order, from :func:`derivative_exprs`."""
    return numpy_forms(derivative_exprs(expr, nmax))


def find_kinks(expr: sp.Expr, symbols=(Z,)) -> tuple[float, ...]:
    """Points where ``expr`` is not smooth in any of ``symbols`` (Piecewise boundaries, zeros of the
    arguments of Abs/sign/Heaviside; Max/Min must be rewritten as Piecewise first)."""
    pts: set[float] = set()
    args = []
    for pw in expr.atoms(sp.Piecewise):
        for _, cond in pw.args:
            rels = [cond] if isinstance(cond, sp.core.relational.Relational) else cond.atoms(sp.core.relational.Relational)
            args += [rel.lhs - rel.rhs for rel in rels]
    args += [f.args[0] for f in expr.atoms(sp.Abs, sp.sign, sp.Heaviside)]
    for e in args:
        dep = e.free_symbols & set(symbols)
        if len(dep) > 1:
            raise ActivationError(f"a kink along {e} = 0 couples several variables; pass kinks=(...) explicitly")
        if dep:
            pts.update(_real_roots(e, dep.pop()))
    return tuple(sorted(pts))


def _real_roots(e, sym=Z) -> list[float]:
    sol = sp.solveset(e, sym, domain=sp.S.Reals)
    if not isinstance(sol, sp.FiniteSet):
        raise ActivationError(
            f"cannot locate the kinks of the activation (where {e} = 0); pass kinks=(...) explicitly"
        )
    return [float(s) for s in sol]


def _scale_invariant_slopes(expr: sp.Expr) -> tuple[float, float] | None:
    # cheap necessary condition first (sigma(2z) = 2 sigma(z) at a few points): sp.simplify below takes
    # seconds on e.g. tanh(z) + z/7, which is not scale invariant
    for x in (0.37, 1.3, -0.37, -1.3):
        try:
            v1, v2 = complex(expr.subs(Z, x).evalf(20)), complex(expr.subs(Z, 2 * x).evalf(20))
        except (TypeError, ValueError):
            break
        if abs(v2 - 2 * v1) > 1e-9 * (abs(v2) + 2 * abs(v1)) + 1e-300:
            return None
    t = sp.Symbol("t", positive=True)
    ap = sp.simplify(expr.subs(Z, t) / t)
    am = sp.simplify(-expr.subs(Z, -t) / t)
    if ap.free_symbols or am.free_symbols or not (ap.is_number and am.is_number):
        return None
    if not (ap.is_real and am.is_real):
        return None
    return (float(ap), float(am))


# ---------------------------------------------------------------------- stable correlation geometry
#
# The closed forms below depend on the kernel through rho = K12/sqrt(K11 K22). Forming rho and taking
# arcsin(rho) loses half the digits near |rho| = 1: K12/(sqrt(K11) sqrt(K22)) can land one ulp below 1 on
# the diagonal (K = 7.77), and arcsin'(rho) = 1/sqrt(1 - rho^2) turns that ulp into ~1e-8. Instead everything
# is written with the angle theta = arcsin(rho) = arctan2(K12, sqrt(det)), det = K11 K22 - K12^2, and det is
# computed without cancellation: exact power-of-two rescaling (no overflow, no underflow) and Dekker's
# error-free product, so det is accurate to a few ulps *relative to itself* even where K12^2 ~ K11 K22, and
# exactly 0 on the diagonal K11 = K22 = K12.

_SPLIT = 134217729.0  # 2^27 + 1 (Veltkamp splitting of a float64 into two 26-bit halves)


def _two_prod(x, y):
    """``x*y = p + e`` exactly (Dekker); valid when no intermediate overflows or underflows."""
    p = x * y
    tx = _SPLIT * x
    xh = tx - (tx - x)
    xl = x - xh
    ty = _SPLIT * y
    yh = ty - (ty - y)
    yl = y - yh
    return p, ((xh * yh - p) + xh * yl + xl * yh) + xl * yl


def _scaled(K11_, K22_, K12_):
    """``(a, b, c, t)`` with ``K11 = 4^i a``, ``K22 = 4^j b``, ``K12 = 2^(i+j) c``, ``t = i + j`` and
    ``a, b`` in [1/4, 1) (or 0): an exact rescaling, so ``rho = c/sqrt(a b)`` and
    ``K11 K22 - K12^2 = 4^t (a b - c^2)``. Arrays broadcast together."""
    K11_, K22_, K12_ = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (K11_, K22_, K12_)))
    a0 = np.maximum(K11_, 0.0)
    b0 = np.maximum(K22_, 0.0)
    i = (np.frexp(a0)[1] + 1) // 2
    j = (np.frexp(b0)[1] + 1) // 2
    t = i + j
    return np.ldexp(a0, -2 * i), np.ldexp(b0, -2 * j), np.ldexp(K12_, -t), t


def _scaled_det(a, b, c):
    """``max(a b - c^2, 0)`` to a few ulps relative (error-free products; exact 0 when a = b = c)."""
    p1, e1 = _two_prod(a, b)
    p2, e2 = _two_prod(c, c)
    return np.maximum((p1 - p2) + (e1 - e2), 0.0)


def kernel_sqrt_det(K11_, K22_, K12_) -> np.ndarray:
    """``sqrt(max(K11 K22 - K12^2, 0))``, accurate to a few ulps also where ``|rho| -> 1`` (exactly 0 on the
    diagonal), no overflow of ``K11 K22``. Arrays broadcast; returns their common shape."""
    a, b, c, t = _scaled(K11_, K22_, K12_)
    return np.ldexp(np.sqrt(_scaled_det(a, b, c)), t)


def correlation_angle(K11_, K22_, K12_) -> np.ndarray:
    """``theta = arcsin(rho)``, ``rho = K12/sqrt(K11 K22)``, computed as ``arctan2(K12, sqrt(K11 K22 - K12^2))``.

    Exactly ``+-pi/2`` where ``K12^2 = K11 K22`` (e.g. on the diagonal), a few ulps from the exact angle of the
    given float64 entries everywhere, in ``[-pi/2, pi/2]``; 0 where ``K11 K22 = 0``. Replaces
    ``np.arcsin(np.clip(K12/np.sqrt(K11*K22), -1, 1))``, which is ~1e-8 off near ``|rho| = 1``.
    """
    a, b, c, _ = _scaled(K11_, K22_, K12_)
    th = np.arctan2(c, np.sqrt(_scaled_det(a, b, c)))
    return np.where((a > 0) & (b > 0), th, 0.0)


def correlation_cosine(K11_, K22_, K12_) -> np.ndarray:
    """``cos(theta) = sqrt(1 - rho^2) = sqrt(K11 K22 - K12^2)/sqrt(K11 K22)``, accurate near ``|rho| = 1``;
    1 where ``K11 K22 = 0`` (rho taken as 0 there)."""
    a, b, c, _ = _scaled(K11_, K22_, K12_)
    s = np.sqrt(a) * np.sqrt(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(_scaled_det(a, b, c)) / np.where(s > 0, s, 1.0)
    return np.where(s > 0, np.minimum(r, 1.0), 1.0)


def _sin_minus_x_cos(x):
    """``sin x - x cos x`` for x in [0, pi], without the cancellation (~3/x^2 ulps) of the direct form at small
    x: below x = 1 the series ``x^3 sum_{n>=1} (-1)^(n+1) 2n x^(2n-2)/(2n+1)!`` (19 terms: truncation < 1e-40) by
    Horner's rule, its coefficients rounded once."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1.0
    direct = np.sin(x) - x * np.cos(x)
    if not small.any():
        return np.asarray(direct)
    xs = np.where(small, x, 0.0)
    x2 = xs * xs
    p = _SMXC[-1]
    for c in _SMXC[-2::-1]:
        p = p * x2 + c
    return np.where(small, xs * x2 * p, direct)


#: the coefficients of that series, n = 1..19
_SMXC = tuple((-1) ** (n + 1) * 2 * n / math.factorial(2 * n + 1) for n in range(1, 20))


def _relu_geometry(K11_, K22_, K12_):
    """``(J(K12), J(-K12), psi(K12), psi(-K12))`` for the arc-cosine kernels of ReLU:
    ``J(K12) = <relu(z_1) relu(z_2)> = (sqrt(det) + K12 psi)/(2 pi)`` and
    ``psi(K12) = pi - arccos(rho) = arctan2(sqrt(det), -K12)``, so ``<Theta(z_1) Theta(z_2)> = psi/(2 pi)``.

    psi is exact at both ends (pi at rho = 1, 0 at rho = -1). Near rho = -1 the two terms of J cancel
    (J = sqrt(K11 K22) (sin psi - psi cos psi)/(2 pi) ~ psi^3), so J uses :func:`_sin_minus_x_cos` there.
    Where ``K11 K22 = 0`` (z_1 or z_2 identically 0) psi is set to pi/2 (rho = 0, independent signs).
    """
    a, b, c, t = _scaled(K11_, K22_, K12_)
    sd = np.sqrt(_scaled_det(a, b, c))
    s = np.sqrt(a) * np.sqrt(b)
    deg = ~(s > 0)
    psi_p = np.where(deg, np.pi / 2, np.arctan2(sd, -c))
    psi_m = np.where(deg, np.pi / 2, np.arctan2(sd, c))

    def J(psi, cc):
        direct = sd + cc * psi
        series = s * _sin_minus_x_cos(psi)
        return np.ldexp(np.where(psi < 1.0, series, direct), t) / (2.0 * np.pi)

    return J(psi_p, c), J(psi_m, -c), psi_p, psi_m


#: the largest slope of a scale-invariant activation: its Gaussian moments up to <sigma^6> ~ a^6 K^3 (the 1/n^2
#: theory's) stay in float64's range, and A_2 = (a_+^2 + a_-^2)/2 with them (leaky_relu(1e200) had A_2 = inf and a
#: critical C_W of 0)
MAX_SLOPE = 1e50


def _with_scale_invariant_maps(act: Activation, ap: float, am: float) -> Activation:
    if not max(abs(float(ap)), abs(float(am))) < MAX_SLOPE:
        raise ParameterError(f"the slopes of {act.name} must be below {MAX_SLOPE:g} in size (its Gaussian moments up "
                             f"to sigma^6 ~ slope^6 must stay in float64's range), got ({float(ap):g}, {float(am):g})",
                             "slope")
    p = (sp.nsimplify(ap) + sp.nsimplify(am)) / 2
    q = (sp.nsimplify(ap) - sp.nsimplify(am)) / 2
    sK = sp.sqrt(K11 * K22)
    pair = p**2 * K12 + 2 * q**2 / sp.pi * (sp.sqrt(K11 * K22 - K12**2) + K12 * sp.asin(K12 / sK))
    dpair = p**2 + 2 * q**2 / sp.pi * sp.asin(K12 / sK)
    pf, qf = float(p), float(q)
    app, amm = float(ap), float(am)
    # sigma = a_+ relu(z) - a_- relu(-z): <sigma sigma> = (a_+^2 + a_-^2) J(K12) - 2 a_+ a_- J(-K12) and
    # <sigma' sigma'> = [(a_+^2 + a_-^2) psi(K12) + 2 a_+ a_- psi(-K12)]/(2 pi). For ReLU (a_- = 0) a single
    # term, so no cancellation at rho = -1 (exactly 0 there). Linear (q = 0) stays exactly p^2 K12 and p^2.
    wp, wm = app * app + amm * amm, 2.0 * app * amm

    def pair_np(a, b, c):
        if qf == 0.0:
            return pf * pf * np.asarray(c, dtype=np.float64)
        Jp, Jm, _, _ = _relu_geometry(a, b, c)
        return wp * Jp - wm * Jm

    def dpair_np(a, b, c):
        if qf == 0.0:
            return np.full(np.broadcast(a, b, c).shape, pf * pf)
        _, _, psp, psm = _relu_geometry(a, b, c)
        return (wp * psp + wm * psm) / (2.0 * np.pi)

    def jax_recipe(jx):
        if app == 1.0 and amm == 1.0:
            return lambda z: z
        return lambda z: jx.jnp.where(z > 0, app * z, amm * z)

    return _replace(act, slopes=(ap, am), pair_map=pair, dpair_map=dpair, _pair_np=pair_np, _dpair_np=dpair_np,
                    _jax=jax_recipe)


def _replace(act: Activation, **kw) -> Activation:
    from dataclasses import replace

    return replace(act, **kw)


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Activation]] = {}


def scaled_activation(act: Activation, e: int) -> Activation:
    """The activation of the rescaled field ``zeta = z / c``, ``c = 2^(e/2)`` (``e`` even):
    ``sigma_e(zeta) = sigma(c zeta) / c``, so that ``<sigma_e sigma_e>_{K/c^2} = <sigma sigma>_K / c^2``, and
    ``sigma_e' (zeta) = sigma'(c zeta)``, ``sigma_e''(zeta) = c sigma''(c zeta)``, kinks at ``kink / c``; its
    expression is ``sigma(c z) / c`` too, so :meth:`Activation.derivatives` and :meth:`Activation.d3` scale alike.

    Multiplying by a power of two is exact, so ``sigma_e`` is evaluated without new rounding as long as ``c zeta``
    is a normal float64. Scale-invariant activations (``sigma(c z) = c sigma(z)``) are returned unchanged (their
    closed forms are homogeneous); others lose their closed-form Gaussian maps (quadrature is used instead). Toward
    large kernels (``e > 0``) sigma's structure at ``|z| ~ 1`` shrinks below any rule's spacing: an activation that is
    a ramp on either side far out (GELU, softplus, swish) gets a kink at 0 in its place (it carries ~1/c of an
    average), any other is refused (ParameterError naming ``x``).
    """
    if e == 0 or act.scale_invariant:
        return act
    if e % 2:
        raise ParameterError(f"scaled_activation needs an even exponent, got {e}", "e")
    c = 2.0 ** (e // 2)
    f0, f1, f2 = act._fn, act._d1, act._d2
    cs = sp.Integer(2) ** (e // 2)   # exact: the jet and d3 (from the expression) scale as the lambdas below
    out = _dc_replace(
        act, name=f"{act.name}[z*2^{e // 2}]", kinks=tuple(k / c for k in act.kinks),
        expr=act.expr.subs(Z, cs * Z) / cs,
        pair_map=None, dpair_map=None, _pair_np=None, _dpair_np=None,
        _fn=lambda z: f0(z * c) / c, _d1=lambda z: f1(z * c), _d2=lambda z: f2(z * c) * c)
    if e > 0:
        # a huge kernel in units of 2^e: sigma's structure at |z| ~ 1 moves to |zeta| ~ 1/c, far below the rules'
        # spacing. Where sigma is a ramp a_+- z + b_+- on either side far out (softplus, GELU, swish, ELU), sigma_e
        # is the ramp a_+- zeta but for a bend of width 1/c at 0 and offsets b/c, which carry ~1/c of an average: a
        # kink at 0 for the rules. Elsewhere the structure sets the averages (tanh: <sigma'^2> is all of it, the
        # rule saw a step): refused
        if not _ramp_far_out(act, c):
            raise ParameterError(f"the preactivations' variance reached ~2^{e}, where pdlt computes in units of 2^{e} "
                                 f"and {act.name}'s structure at |z| ~ 1 lies far below the quadrature's spacing "
                                 "(it is not a ramp far out, so that structure sets its averages): scale the inputs x "
                                 "down, or where the flow grew the kernel over the layers move C_W toward criticality "
                                 "or reduce the depth", "x")
        out = _dc_replace(out, kinks=tuple(sorted(set(out.kinks) | {0.0})))
    return out


def _ramp_far_out(act: Activation, c: float) -> bool:
    """Whether sigma is a ramp ``a_+- z + b_+-`` at ``z = +-c`` and ``+-2c`` (derivatives and secant equal to 1e-12
    relative), with a slope on at least one side and offsets below 1e-12 of ``max|a| c``: the test of
    :func:`scaled_activation` for kernels of order ``c^2`` (c >= 2^20; ELU's constant left side passes, tanh's two
    constants do not)."""
    z = np.array([c, 2.0 * c, -c, -2.0 * c])
    with np.errstate(all="ignore"):
        v = np.asarray(act(z), dtype=np.float64)
        d = np.asarray(act.d1(z), dtype=np.float64)
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        return False
    close = lambda p, q: abs(p - q) <= 1e-12 * max(abs(p), abs(q))  # noqa: E731
    slopes = []
    for i in (0, 2):
        secant = (v[i + 1] - v[i]) / (z[i + 1] - z[i])
        if not (close(d[i], d[i + 1]) and close(d[i], secant)):
            return False
        slopes.append(float(d[i]))
    top = max(abs(a) for a in slopes)
    return top > 0 and all(abs(v[i] - a * z[i]) <= 1e-12 * top * c for i, a in zip((0, 2), slopes))


#: the z-spacing on which pdlt's Gaussian rules resolve an activation: gaussian.expect's default one- and
#: two-dimensional trapezoids at kernels of 1/4 and more (finer below), which the kernel flow and the O(1/n)
#: recursions use
QUADRATURE_SPACING = 0.25
#: relative change of ``<sigma^2>_K``, ``<sigma'^2>_K`` or ``<sigma^4>_K`` (on the scale ``<|f|>_K``) under a four
#: times finer spacing, above which :func:`require_resolved` refuses the activation. The registered ones change by
#: at most 1.1e-12 (tanh); tanh(1.2 z) by 2e-10, sin(20 z) by 8e-6, tanh(5 z) by 9e-2
RESOLUTION_TOLERANCE = 1e-10
#: the exact change of variables that trades an activation sharper than the rules' spacing for a smooth one
RESCALE_ADVICE = ("write sigma(z) = s(a z) with s varying on the unit scale: the network of sigma with (C_W, C_b, x) "
                  "is the network of s with a^2 C_W at layers >= 2, a^2 C_b at every layer and the input a x, in "
                  "units of a z (a statistic of degree p in the kernel is a^(2p) times sigma's)")
#: the kernels at which the spacing is judged: at K >= 1/4 the rules keep the z-spacing, so a feature of sigma at
#: |z| up to ~40 is seen through the Gaussian weight of one of them
_RESOLUTION_KERNELS = (1.0, 16.0, 256.0)


#: :func:`quadrature_miss` by expression, and :func:`jumps` by ``(expression, "jumps")`` (activations are rebuilt on
#: each lookup)
_MISSES: dict = {}


def _quadrature_miss(act) -> tuple[float, float]:
    fine = QUADRATURE_SPACING / 4
    worst, where = 0.0, 1.0
    for K in _RESOLUTION_KERNELS:
        m = 4 * int(math.ceil(9.0 * math.sqrt(K) / QUADRATURE_SPACING))
        z = fine * np.arange(-m, m + 1)
        # the fine grid shifted by an irrational fraction of its spacing as well: a frequency that both spacings fold
        # onto the same wrong value (sin(50 z): cos(100 z) at spacings 1/16 and 1/4, K 17 % off) folds with another
        # phase on the shifted grid
        zs = z + fine * _GOLDEN
        w, ws = np.exp(-0.5 * z * z / K), np.exp(-0.5 * zs * zs / K)
        with np.errstate(all="ignore"):
            s, s1, ss, ss1 = (np.asarray(g(v), dtype=np.float64) for v in (z, zs) for g in (act, act.d1))
        tail = np.abs(z) > 8.0 * math.sqrt(K)
        # sigma^4 too: the O(1/n) vertex averages it, and its higher harmonics alias first (sin(20 z): the
        # trapezoid folds sin^4's cos(80 z) onto a frequency the Gaussian barely damps, V 11 % off)
        for f, fs in ((s * s, ss * ss), (s1 * s1, ss1 * ss1), (s**4, ss**4)):
            wf = np.abs(w * f)
            # (a sigma growing too fast for this kernel is the rules' own error to report, not a resolution)
            if not np.all(np.isfinite(wf)) or wf[tail].sum() > 1e-6 * wf.sum() or not np.all(np.isfinite(ws * fs)):
                continue
            scale = (w @ np.abs(f)) / w.sum()
            if scale > 0:
                value = (w @ f) / w.sum()
                miss = max(abs(value - (w[::4] @ f[::4]) / w[::4].sum()), abs(value - (ws @ fs) / ws.sum())) / scale
                if miss > worst:
                    worst, where = float(miss), K
    return worst, where


#: the shift of :func:`_quadrature_miss`'s second fine grid, in units of its spacing (irrational: no fold of a
#: frequency onto the grid repeats with the same phase)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def quadrature_miss(act: Activation) -> tuple[float, float]:
    """``(miss, K)``: how far the Gaussian rules' z-spacing :data:`QUADRATURE_SPACING` leaves ``<sigma^2>_K``,
    ``<sigma'^2>_K`` and ``<sigma^4>_K`` from their values at a four times finer spacing, relative to ``<|f|>_K``,
    worst over the kernels K = 1, 16, 256 (the trapezoid of an analytic function errs like ``exp(-2 pi d/h)``,
    d the distance of its nearest complex singularity to the real line: tanh(a z) has d = pi/(2a)). Kinked
    activations are integrated by Gauss rules split at their kinks, not by the trapezoid: ``(0, 1)`` for them, as
    for a sigma that grows too fast to average (the rules report that themselves)."""
    if act.kinks:
        return 0.0, 1.0
    if act.expr not in _MISSES:
        if len(_MISSES) > 256:
            _MISSES.clear()
        _MISSES[act.expr] = _quadrature_miss(act)
    return _MISSES[act.expr]


def require_resolved(act: Activation) -> None:
    """Refuse (:class:`~pdlt.errors.ParameterError` naming ``activation``) an activation that varies on a z-scale
    below the Gaussian rules' spacing (:func:`quadrature_miss` above :data:`RESOLUTION_TOLERANCE`): its kernel flow,
    susceptibilities and 1/n statistics would be silently off (tanh(5 z) at K = 1: <sigma'^2> by 9 %)."""
    miss, K = quadrature_miss(act)
    if miss > RESOLUTION_TOLERANCE:
        raise ParameterError(f"the activation {act.name} varies on a scale finer than the spacing of pdlt's Gaussian "
                             f"quadrature (z-spacing {QUADRATURE_SPACING:g}): its averages at K = {K:g} change by "
                             f"{miss:.1g} of their size when the spacing is quartered (tolerance "
                             f"{RESOLUTION_TOLERANCE:g}); {RESCALE_ADVICE}", "activation")


def jumps(act: Activation) -> tuple[float, ...]:
    """The kinks of ``act`` where sigma itself jumps (sign, Heaviside), not only its derivative: there sigma' holds a
    delta function, which the Gaussian rules (sigma' taken pointwise) and the integration-by-parts forms of
    :mod:`pdlt.theory.criticality` do not see. Judged from the one-sided values a relative 1e-12 either side; kept
    per expression, as :func:`quadrature_miss` (the NTK's flow asks at every layer)."""
    if not act.kinks:
        return ()
    if (act.expr, "jumps") not in _MISSES:
        if len(_MISSES) > 256:
            _MISSES.clear()
        _MISSES[(act.expr, "jumps")] = _jumps(act)
    return _MISSES[(act.expr, "jumps")]


def _jumps(act: Activation) -> tuple[float, ...]:
    out = []
    for c in act.kinks:
        d = 1e-12 * max(1.0, abs(c))
        with np.errstate(all="ignore"):
            lo, hi = (float(v) for v in np.asarray(act(np.array([c - d, c + d])), dtype=np.float64))
        if abs(hi - lo) > 1e-6 * max(1.0, abs(lo), abs(hi)):
            out.append(float(c))
    return tuple(out)


def require_continuous(act: Activation, what: str) -> None:
    """Refuse (:class:`~pdlt.errors.ParameterError` naming ``activation``) an activation that jumps
    (:func:`jumps`) where ``what`` needs its derivative: sigma' is then a delta function, ``<sigma'^2>`` is infinite
    and the pointwise sigma' (0 beside the jump) would give finite, wrong values."""
    at = jumps(act)
    if at:
        raise ParameterError(f"{act.name} jumps at z = {', '.join(f'{c:g}' for c in at)}, so its derivative is a "
                             f"delta function there, which {what} cannot take (chi_perp and the NTK are infinite, the "
                             "delta expansion undefined); use a continuous activation "
                             "(a steep but continuous one, e.g. tanh(a z) for sign(z), through the rescaling of "
                             "pdlt.activations.RESCALE_ADVICE), or the kernel flow and O(1/n) statistics, which need "
                             "sigma only", "activation")


def register(name: str, builder: Callable[..., Activation]) -> None:
    """Add an activation builder to the registry (``builder(**params) -> Activation``)."""
    _REGISTRY[name.lower()] = builder


def available_activations() -> tuple[str, ...]:
    return tuple(_REGISTRY)


_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def activation(name, /, **params) -> Activation:
    """Look up an activation by name: ``activation("tanh")``, ``activation("leaky_relu", slope=0.1)``.

    Strings with a positional parameter also work (``"leaky_relu(0.1)"``), as do Activation objects and
    sympy expressions (passed to :meth:`Activation.from_sympy`).
    """
    if isinstance(name, Activation):
        return name
    if isinstance(name, sp.Basic):
        return Activation.from_sympy(name)
    names = ", ".join(available_activations())
    if not isinstance(name, str):
        raise ActivationError(f"activation must be a name ({names}), an Activation or a sympy expression, not "
                              f"{type(name).__name__}")
    m = _CALL.match(name)
    if m is None or not _numeric_args(m.group(2)):
        # an expression such as "tanh(z) + 0.1*z": parsed safely and validated by from_sympy
        if params:
            raise ActivationError(f"parameters {sorted(params)} apply only to registered activations ({names}), "
                                  f"not to the expression {name!r}")
        try:
            return Activation.from_sympy(name)
        except ActivationError as err:
            lead = f"cannot parse activation {name!r} as a name or an expression in z: " if str(err).startswith(
                "could not parse") else ""
            raise ActivationError(f"{lead}{err} (registered activations: {names})") from None
    key, args = m.group(1).lower(), m.group(2)
    if key not in _REGISTRY and name.strip() == "z" and not params:
        return Activation.from_sympy(name)              # the identity, written as the expression z
    if key not in _REGISTRY:
        raise ActivationError(
            f"unknown activation {key!r}; available: {names}. "
            "For anything else use an expression in z (e.g. 'tanh(z) + 0.1*z') or pdlt.Activation.from_sympy(expr)."
        )
    builder = _REGISTRY[key]
    try:
        pos = [float(a) for a in args.split(",")] if args and args.strip() else []
        return builder(*pos, **params)
    except (TypeError, ValueError) as err:
        import inspect

        takes = [p for p in inspect.signature(builder).parameters if p != "name"]
        hint = f"{key} takes {', '.join(takes)}" if takes else f"{key} takes no parameters"
        raise ActivationError(f"bad parameters for activation {key!r} in {name!r} (params {params}): {err}; "
                              f"{hint}. Available activations: {names}") from None


def _from_definition(expr, name, kinks) -> Activation:
    """An unpickled activation that is not a registered one (:meth:`Activation.__reduce__`)."""
    return Activation.from_sympy(expr, name=name, kinks=kinks)


def _numeric_args(args) -> bool:
    """True for no argument list or a comma-separated list of numbers (``"leaky_relu(0.1)"``)."""
    if args is None or not args.strip():
        return True
    try:
        [float(a) for a in args.split(",")]
    except ValueError:
        return False
    return True


def _builtin(name, expr, fn, d1, d2, *, kinks=(), pair=None, dpair=None, pair_np=None, dpair_np=None, jax=None,
             quartic=None) -> Activation:
    """A registered activation; ``pair_np``/``dpair_np`` are numerically stable float64 forms of the sympy
    maps ``pair``/``dpair`` (default: their lambdified text); ``jax`` the recipe of its JAX form (see
    :attr:`Activation._jax`); ``quartic(K)`` its ``<sigma^4>_K`` in sympy."""

    def lam(e, given):
        if given is not None or e is None:
            return given
        return lambdify_numpy((K11, K22, K12), e)

    def wrap(f):
        return lambda z: np.asarray(f(np.asarray(z, dtype=np.float64)), dtype=np.float64)

    return Activation(
        name=name, expr=expr, kinks=kinks, pair_map=pair, dpair_map=dpair,
        _fn=wrap(fn), _d1=wrap(d1), _d2=wrap(d2), _pair_np=lam(pair, pair_np), _dpair_np=lam(dpair, dpair_np),
        _jax=jax, _quartic=quartic,
    )


def _linear():
    act = _builtin("linear", Z, lambda z: z.copy(), np.ones_like, np.zeros_like)
    return _with_scale_invariant_maps(act, 1.0, 1.0)


def _leaky(slope=0.01, *, name=None):
    a = float(slope)
    if not math.isfinite(a):
        raise ParameterError(f"leaky_relu slope must be finite, got {slope}")
    s = sp.nsimplify(a)
    expr = sp.Piecewise((s * Z, Z < 0), (Z, True))
    act = _builtin(
        name or f"leaky_relu({a:g})", expr,
        lambda z: np.where(z > 0, z, a * z),
        lambda z: np.where(z > 0, 1.0, a),
        np.zeros_like,
        kinks=(0.0,),
    )
    return _with_scale_invariant_maps(act, 1.0, a)


def _relu():
    return _leaky(0.0, name="relu")


def _tanh():
    return _builtin(
        "tanh", sp.tanh(Z), np.tanh,
        lambda z: 1.0 - np.tanh(z) ** 2,
        lambda z: -2.0 * np.tanh(z) * (1.0 - np.tanh(z) ** 2),
        jax=lambda jx: jx.jnp.tanh,
    )


def _erf_act():
    c = 2.0 / math.sqrt(math.pi)
    pair = 2 / sp.pi * sp.asin(2 * K12 / sp.sqrt((1 + 2 * K11) * (1 + 2 * K22)))
    dpair = 4 / sp.pi / sp.sqrt((1 + 2 * K11) * (1 + 2 * K22) - 4 * K12**2)
    return _builtin(
        "erf", sp.erf(Z), _erf,
        lambda z: c * np.exp(-z * z),
        lambda z: -2.0 * c * z * np.exp(-z * z),
        pair=pair, dpair=dpair, pair_np=_erf_pair_np, dpair_np=_erf_dpair_np,
        jax=lambda jx: jx.special.erf, quartic=_erf_quartic,
    )


_T = sp.Symbol("t", real=True)  # integration variable of the erf quartic average


def _erf_quartic(K_):
    # erf(z) = E_u sign(sqrt(2) z - u), u ~ N(0, 1): <erf^4>_K is the orthant sign moment of four equicorrelated
    # Gaussians with rho = 2K/(1+2K), and Price's theorem turns that into one integral over the angle
    rho = 2 * K_ / (1 + 2 * K_)
    return 24 / sp.pi**2 * sp.Integral(sp.asin(sp.sin(_T) / (1 + 2 * sp.sin(_T))), (_T, 0, sp.asin(rho)))


def _shifted_sqrt_det(K11_, K22_, K12_, u):
    """``(sqrt(D), 2^t)`` scaled: ``D = (u + K11)(u + K22) - K12^2 = u^2 + u (K11 + K22) + (K11 K22 - K12^2)``,
    a sum of non-negative terms (no cancellation, exact det), returned as ``sqrt(D) = 2^t r`` together with the
    scaled ``c = K12/2^t``; the angle ``arcsin(K12/sqrt((u+K11)(u+K22))) = arctan2(c, r)``."""
    a, b, c, t = _scaled(K11_, K22_, K12_)
    # undo the separate scalings of a and b in the cross terms: a 4^i = K11, and 4^t = 4^i 4^j
    i = (np.frexp(np.maximum(np.asarray(K11_, dtype=np.float64), 0.0))[1] + 1) // 2
    j = t - i
    a_t = np.ldexp(a, 2 * i - t)  # K11/2^t
    b_t = np.ldexp(b, 2 * j - t)  # K22/2^t
    u_t = np.ldexp(np.full(np.shape(t), float(u)), -t)
    D = u_t * u_t + u_t * (a_t + b_t) + _scaled_det(a, b, c)
    return np.sqrt(D), c, t


def _erf_pair_np(a, b, c):
    # (2/pi) arcsin(2 K12/sqrt((1+2K11)(1+2K22))) = (2/pi) arctan2(K12, sqrt((1/2+K11)(1/2+K22) - K12^2))
    r, cs, _ = _shifted_sqrt_det(a, b, c, 0.5)
    return (2.0 / np.pi) * np.arctan2(cs, r)


def _erf_dpair_np(a, b, c):
    # (4/pi)/sqrt((1+2K11)(1+2K22) - 4K12^2) = (2/pi)/sqrt((1/2+K11)(1/2+K22) - K12^2)
    r, _, t = _shifted_sqrt_det(a, b, c, 0.5)
    return np.ldexp((2.0 / np.pi) / r, -t)


def _sin():
    # e^{-(K11+K22)/2} sinh(K12) written as a difference of decaying exponentials: no overflow at large K
    pair = (sp.exp(-(K11 + K22 - 2 * K12) / 2) - sp.exp(-(K11 + K22 + 2 * K12) / 2)) / 2
    dpair = (sp.exp(-(K11 + K22 - 2 * K12) / 2) + sp.exp(-(K11 + K22 + 2 * K12) / 2)) / 2
    return _builtin("sin", sp.sin(Z), np.sin, np.cos, lambda z: -np.sin(z), pair=pair, dpair=dpair,
                    pair_np=_sin_pair_np, dpair_np=_sin_dpair_np, jax=lambda jx: jx.jnp.sin,
                    # sin^4 = (3 - 4 cos 2z + cos 4z)/8 and <cos(a z)>_K = e^{-a^2 K/2}
                    quartic=lambda K_: (3 - 4 * sp.exp(-2 * K_) + sp.exp(-8 * K_)) / 8)


def _sin_parts(a, b, c):
    # e^{-(K11+K22-2|K12|)/2}: the exponent is >= 0 for a PSD kernel and exactly 0 on the diagonal
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c)))
    ac = np.abs(c)
    return np.exp(-(a + b - 2.0 * ac) / 2.0), ac, np.sign(c)


def _sin_pair_np(a, b, c):
    # e^{-(K11+K22)/2} sinh(K12) = sign(K12) e^{-(K11+K22-2|K12|)/2} (1 - e^{-2|K12|})/2: expm1 keeps the
    # relative accuracy at small K12 (1 - e^{-2K} loses ~ eps/K), and nothing overflows
    e, ac, sg = _sin_parts(a, b, c)
    return sg * e * (-np.expm1(-2.0 * ac)) / 2.0


def _sin_dpair_np(a, b, c):
    e, ac, _ = _sin_parts(a, b, c)
    return e * (1.0 + np.exp(-2.0 * ac)) / 2.0


def _gelu():
    expr = Z * (1 + sp.erf(Z / sp.sqrt(2))) / 2
    # Tsuchida et al., AAAI 2021 (arXiv 2002.08517), rewritten with D = (1+K11)(1+K22) - K12^2
    P = (1 + K11) * (1 + K22)
    D = P - K12**2
    pair = K12 / 4 + K12 / (2 * sp.pi) * sp.asin(K12 / sp.sqrt(P)) + (K11 * K22 * D + K12**2) / (2 * sp.pi * P * sp.sqrt(D))
    return _builtin(
        "gelu", expr,
        lambda z: z * _Phi(z),
        lambda z: _Phi(z) + z * _phi(z),
        lambda z: _phi(z) * (2.0 - z * z),
        pair=pair, pair_np=_gelu_pair_np, jax=_gelu_jax,
    )


def _gelu_jax(jx):
    s2 = math.sqrt(2.0)
    return lambda z: 0.5 * z * jx.special.erfc(-z / s2)


def _gelu_pair_np(a, b, c):
    # K12/4 + (K12/2pi) arcsin(K12/sqrt(P)) = K12 psi/(2 pi), psi = pi/2 + arcsin(.) = arctan2(sqrt(D), -K12)
    # (exact at both ends); D = P - K12^2 = 1 + K11 + K22 + det without cancellation. Everything in units of
    # 2^t (scaled K12 = cs, sqrt(D) = r): the last term is (K11 K22 D + K12^2)/(2 pi P sqrt(D)).
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c)))
    r, cs, t = _shifted_sqrt_det(a, b, c, 1.0)
    psi = np.arctan2(r, -cs)
    first = np.ldexp(cs * psi, t) / (2.0 * np.pi)
    # (K11 K22 D + K12^2)/(P sqrt(D)) = (K11/(1+K11)) (K22/(1+K22)) sqrt(D) + K12^2/(P sqrt(D)): no overflow
    last = ((a / (1.0 + a)) * (b / (1.0 + b)) * np.ldexp(r, t)
            + np.ldexp(cs * (cs / r), t) / (1.0 + a) / (1.0 + b)) / (2.0 * np.pi)
    return first + last


def _swish():
    def d1(z):
        s = _sigmoid(z)
        return s + z * s * (1 - s)

    def d2(z):
        s = _sigmoid(z)
        return s * (1 - s) * (2 + z * (1 - 2 * s))

    return _builtin("swish", Z / (1 + sp.exp(-Z)), lambda z: z * _sigmoid(z), d1, d2,
                    jax=lambda jx: lambda z: z * jx.nn.sigmoid(z))


def _softplus():
    return _builtin(
        "softplus", sp.log(1 + sp.exp(Z)),
        lambda z: np.logaddexp(0.0, z),
        _sigmoid,
        lambda z: _sigmoid(z) * (1 - _sigmoid(z)),
        jax=lambda jx: lambda z: jx.jnp.logaddexp(0.0, z),
    )


def _sigmoid_act():
    def d1(z):
        s = _sigmoid(z)
        return s * (1 - s)

    def d2(z):
        s = _sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    return _builtin("sigmoid", 1 / (1 + sp.exp(-Z)), _sigmoid, d1, d2, jax=lambda jx: jx.nn.sigmoid)


for _n, _b in {
    "linear": _linear,
    "relu": _relu,
    "leaky_relu": _leaky,
    "tanh": _tanh,
    "erf": _erf_act,
    "sin": _sin,
    "gelu": _gelu,
    "swish": _swish,
    "silu": _swish,
    "softplus": _softplus,
    "sigmoid": _sigmoid_act,
}.items():
    register(_n, _b)


@lru_cache(maxsize=1)
def _smooth_builtins() -> dict:
    """The registered smooth activations by expression, so that a user expression equal to one of them (e.g.
    ``"tanh(z)"``) gets the same JAX recipe and quartic closed form."""
    acts = (_tanh(), _erf_act(), _sin(), _gelu(), _swish(), _softplus(), _sigmoid_act())
    return {a.expr: a for a in acts}

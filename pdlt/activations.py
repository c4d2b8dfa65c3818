"""Activation functions as physics objects.

An :class:`Activation` knows

* its sympy expression ``expr`` in the symbol :data:`Z` (``z``, real),
* vectorized float64 numpy callables for sigma, sigma' and sigma'' (``act(z)``, ``act.d1(z)``,
  ``act.d2(z)``), built by hand for the registry (overflow-safe) or by ``sympy.lambdify`` for user
  expressions,
* where sigma is not smooth (``kinks``: the z-values of kinks and jumps), so that Gaussian quadrature can
  split its domain there (:mod:`pdlt.gaussian`),
* closed-form Gaussian maps where they exist (in the style of neural-tangents' stax): the two-point map
  ``<sigma(z_1) sigma(z_2)>_K`` and the derivative map ``<sigma'(z_1) sigma'(z_2)>_K`` as sympy expressions
  in ``K11, K22, K12`` (:data:`K11`, :data:`K22`, :data:`K12`) and as numpy callables,
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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from ._x64 import enable_x64

__all__ = [
    "Activation",
    "activation",
    "available_activations",
    "register",
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


@lru_cache(maxsize=1)
def _jit_erf():
    import jax
    from jax.scipy.special import erf

    enable_x64()
    return jax.jit(erf)


def _erf(z):
    """float64 erf (numpy has none): JAX's, jit-compiled on 1-D buffers padded to a power of two so that
    the many array sizes quadrature produces share a handful of compilations."""
    z = np.asarray(z, dtype=np.float64)
    flat = z.reshape(-1)
    n = flat.size
    if n == 0:
        return z.copy()
    size = max(256, 1 << (n - 1).bit_length())
    buf = np.zeros(size)
    buf[:n] = flat
    return np.asarray(_jit_erf()(buf))[:n].reshape(z.shape)


def _sigmoid(z):
    # exp(-z) overflows to inf for z < -709, giving the correct limit 0 (no NaN); silence the warning.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _phi(z):
    return _INV_SQRT_2PI * np.exp(-0.5 * z * z)


def _Phi(z):
    return 0.5 * (1.0 + _erf(z / _SQRT2))


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
        """An activation from a sympy expression in one variable.

        ``symbol`` defaults to the expression's only free symbol. Kinks (points where sigma or a
        derivative jumps: ``Abs``, ``Max``, ``Min``, ``Heaviside``, ``sign``, ``Piecewise``) are found
        automatically; pass ``kinks`` to override. Scale invariance (``sigma(lambda z) = lambda sigma(z)``
        for lambda > 0) is detected and gives the slopes ``(a_+, a_-)``.

        >>> import sympy as sp
        >>> act = Activation.from_sympy(sp.Max(0, sp.Symbol("x")), name="my_relu")
        >>> act.slopes, act.kinks
        ((1.0, 0.0), (0.0,))
        """
        expr = sp.sympify(expr)
        free = expr.free_symbols
        if symbol is None:
            if len(free) != 1:
                raise ValueError(
                    f"an activation needs an expression in exactly one variable; got free symbols "
                    f"{sorted(map(str, free))}. Substitute numbers for the parameters or pass symbol=."
                )
            (symbol,) = free
        elif free - {symbol}:
            raise ValueError(f"expression has symbols {sorted(map(str, free - {symbol}))} besides {symbol}")
        expr = expr.subs(symbol, Z)
        expr = expr.rewrite(sp.Piecewise) if expr.has(sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign) else expr
        if kinks is None:
            kinks = _find_kinks(expr)
        kinks = tuple(sorted(float(k) for k in kinks))
        slopes = _scale_invariant_slopes(expr)
        name = name or str(expr)
        mods = [{"erf": _erf}, "numpy"]
        f0 = sp.lambdify(Z, expr, modules=mods)
        f1 = sp.lambdify(Z, sp.diff(expr, Z), modules=mods)
        f2 = sp.lambdify(Z, sp.diff(expr, Z, 2), modules=mods)

        def wrap(f):
            def g(z):
                z = np.asarray(z, dtype=np.float64)
                with np.errstate(over="ignore", invalid="ignore"):
                    return np.broadcast_to(np.asarray(f(z), dtype=np.float64), z.shape).copy()

            return g

        act = cls(name=name, expr=expr, kinks=kinks, slopes=slopes, _fn=wrap(f0), _d1=wrap(f1), _d2=wrap(f2))
        if slopes is not None:
            return _with_scale_invariant_maps(act, *slopes)
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

    @property
    def smooth(self) -> bool:
        return not self.kinks

    def pair(self, K11_, K22_, K12_) -> np.ndarray | None:
        """Closed-form ``<sigma(z_1) sigma(z_2)>`` for ``z ~ N(0, [[K11, K12], [K12, K22]])`` or None."""
        return None if self._pair_np is None else self._pair_np(*np.broadcast_arrays(
            *(np.asarray(a, dtype=np.float64) for a in (K11_, K22_, K12_))))

    def dpair(self, K11_, K22_, K12_) -> np.ndarray | None:
        """Closed-form ``<sigma'(z_1) sigma'(z_2)>`` or None."""
        return None if self._dpair_np is None else self._dpair_np(*np.broadcast_arrays(
            *(np.asarray(a, dtype=np.float64) for a in (K11_, K22_, K12_))))

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
            raise ValueError(f"{what} is defined only for scale-invariant activations; {self.name} is not one")

    def taylor(self, order: int = 6) -> tuple[sp.Expr, ...]:
        """Exact Taylor coefficients ``(sigma_0, ..., sigma_order)``, ``sigma_p = sigma^(p)(0)``.

        Raises ValueError if sigma is not smooth at 0 (e.g. ReLU): the K* = 0 analysis needs them.
        """
        if any(abs(k) < 1e-300 for k in self.kinks):
            raise ValueError(f"{self.name} has a kink at z = 0, so it has no Taylor expansion there")
        out, d = [], self.expr
        for _ in range(order + 1):
            out.append(sp.simplify(d.subs(Z, 0)))
            d = sp.diff(d, Z)
        return tuple(out)

    @property
    def key(self) -> str:
        return f"{self.name}:{sp.srepr(self.expr)}"

    def __eq__(self, other):
        return isinstance(other, Activation) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def latex(self) -> str:
        return sp.latex(self.expr)


# ---------------------------------------------------------------------- helpers


def _find_kinks(expr: sp.Expr, symbols=(Z,)) -> tuple[float, ...]:
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
            raise ValueError(f"a kink along {e} = 0 couples several variables; pass kinks=(...) explicitly")
        if dep:
            pts.update(_real_roots(e, dep.pop()))
    return tuple(sorted(pts))


def _real_roots(e, sym=Z) -> list[float]:
    sol = sp.solveset(e, sym, domain=sp.S.Reals)
    if not isinstance(sol, sp.FiniteSet):
        raise ValueError(
            f"cannot locate the kinks of the activation (where {e} = 0); pass kinks=(...) explicitly"
        )
    return [float(s) for s in sol]


def _scale_invariant_slopes(expr: sp.Expr) -> tuple[float, float] | None:
    t = sp.Symbol("t", positive=True)
    ap = sp.simplify(expr.subs(Z, t) / t)
    am = sp.simplify(-expr.subs(Z, -t) / t)
    if ap.free_symbols or am.free_symbols or not (ap.is_number and am.is_number):
        return None
    if not (ap.is_real and am.is_real):
        return None
    return (float(ap), float(am))


def _rho(K11_, K22_, K12_):
    # correlation with the degenerate cases K11 K22 = 0 (then K12 = 0 too for a PSD K) mapped to 0,
    # and round-off beyond |rho| = 1 clipped, so that a singular kernel is not a NaN.
    s = np.sqrt(np.maximum(K11_, 0.0)) * np.sqrt(np.maximum(K22_, 0.0))  # no overflow of K11 K22
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, K12_ / np.where(s > 0, s, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0), s


def _with_scale_invariant_maps(act: Activation, ap: float, am: float) -> Activation:
    p = (sp.nsimplify(ap) + sp.nsimplify(am)) / 2
    q = (sp.nsimplify(ap) - sp.nsimplify(am)) / 2
    sK = sp.sqrt(K11 * K22)
    pair = p**2 * K12 + 2 * q**2 / sp.pi * (sp.sqrt(K11 * K22 - K12**2) + K12 * sp.asin(K12 / sK))
    dpair = p**2 + 2 * q**2 / sp.pi * sp.asin(K12 / sK)
    pf, qf = float(p), float(q)

    def pair_np(a, b, c):
        r, s = _rho(a, b, c)
        return pf * pf * c + 2 * qf * qf / np.pi * s * (np.sqrt(1 - r * r) + r * np.arcsin(r))

    def dpair_np(a, b, c):
        r, _ = _rho(a, b, c)
        return pf * pf + 2 * qf * qf / np.pi * np.arcsin(r)

    return _replace(act, slopes=(ap, am), pair_map=pair, dpair_map=dpair, _pair_np=pair_np, _dpair_np=dpair_np)


def _replace(act: Activation, **kw) -> Activation:
    from dataclasses import replace

    return replace(act, **kw)


# ---------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[..., Activation]] = {}


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
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name, an Activation or a sympy expression, not {type(name).__name__}")
    m = _CALL.match(name)
    if not m:
        raise ValueError(f"cannot parse activation {name!r}; use e.g. 'tanh' or 'leaky_relu(0.1)'")
    key, args = m.group(1).lower(), m.group(2)
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown activation {key!r}; available: {', '.join(available_activations())}. "
            "For anything else use pdlt.Activation.from_sympy(expr)."
        )
    try:
        pos = [float(a) for a in args.split(",")] if args and args.strip() else []
        return _REGISTRY[key](*pos, **params)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad parameters for activation {key!r} in {name!r} (params {params}): {err}") from None


def _builtin(name, expr, fn, d1, d2, *, kinks=(), pair=None, dpair=None) -> Activation:
    def lam(e):
        return None if e is None else sp.lambdify((K11, K22, K12), e, modules=[{"erf": _erf}, "numpy"])

    def wrap(f):
        return lambda z: np.asarray(f(np.asarray(z, dtype=np.float64)), dtype=np.float64)

    return Activation(
        name=name, expr=expr, kinks=kinks, pair_map=pair, dpair_map=dpair,
        _fn=wrap(fn), _d1=wrap(d1), _d2=wrap(d2), _pair_np=lam(pair), _dpair_np=lam(dpair),
    )


def _linear():
    act = _builtin("linear", Z, lambda z: z.copy(), np.ones_like, np.zeros_like)
    return _with_scale_invariant_maps(act, 1.0, 1.0)


def _leaky(slope=0.01, *, name=None):
    a = float(slope)
    if not math.isfinite(a):
        raise ValueError(f"leaky_relu slope must be finite, got {slope}")
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
    )


def _erf_act():
    c = 2.0 / math.sqrt(math.pi)
    pair = 2 / sp.pi * sp.asin(2 * K12 / sp.sqrt((1 + 2 * K11) * (1 + 2 * K22)))
    dpair = 4 / sp.pi / sp.sqrt((1 + 2 * K11) * (1 + 2 * K22) - 4 * K12**2)
    return _builtin(
        "erf", sp.erf(Z), _erf,
        lambda z: c * np.exp(-z * z),
        lambda z: -2.0 * c * z * np.exp(-z * z),
        pair=pair, dpair=dpair,
    )


def _sin():
    # e^{-(K11+K22)/2} sinh(K12) written as a difference of decaying exponentials: no overflow at large K
    pair = (sp.exp(-(K11 + K22 - 2 * K12) / 2) - sp.exp(-(K11 + K22 + 2 * K12) / 2)) / 2
    dpair = (sp.exp(-(K11 + K22 - 2 * K12) / 2) + sp.exp(-(K11 + K22 + 2 * K12) / 2)) / 2
    return _builtin("sin", sp.sin(Z), np.sin, np.cos, lambda z: -np.sin(z), pair=pair, dpair=dpair)


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
        pair=pair,
    )


def _swish():
    def d1(z):
        s = _sigmoid(z)
        return s + z * s * (1 - s)

    def d2(z):
        s = _sigmoid(z)
        return s * (1 - s) * (2 + z * (1 - 2 * s))

    return _builtin("swish", Z / (1 + sp.exp(-Z)), lambda z: z * _sigmoid(z), d1, d2)


def _softplus():
    return _builtin(
        "softplus", sp.log(1 + sp.exp(Z)),
        lambda z: np.logaddexp(0.0, z),
        _sigmoid,
        lambda z: _sigmoid(z) * (1 - _sigmoid(z)),
    )


def _sigmoid_act():
    def d1(z):
        s = _sigmoid(z)
        return s * (1 - s)

    def d2(z):
        s = _sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    return _builtin("sigmoid", 1 / (1 + sp.exp(-Z)), _sigmoid, d1, d2)


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

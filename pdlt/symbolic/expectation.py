"""Gaussian averages as sympy objects: closed form when sympy (or the activation) knows one, otherwise an
unevaluated integral that prints as ``\\langle f \\rangle_K`` and evaluates with mpmath.

Follows sympy.stats' conventions for ``Expectation``: ``rewrite(sympy.Integral)`` gives the integral against the
Gaussian density, ``expand()`` uses linearity (an average of a sum is the sum of averages, factors free of z
come out, ``<c> = c``), ``doit()`` evaluates what it can (polynomials exactly by Wick's theorem, other terms with
sympy's integrator, the rest stays unevaluated) and ``evalf()`` evaluates numerically (mpmath quadrature).
"""

from __future__ import annotations

import sympy as sp

from ..activations import Z
from ..errors import ParameterError
from . import symbols as _S

__all__ = ["GaussianAverage", "gaussian_average", "gaussian_average2", "moment_average", "Z1", "Z2"]

Z1, Z2 = _S.z_1, _S.z_2


#: functions whose Gaussian integrals sympy can do (polynomials times these)
_INTEGRABLE = (sp.exp, sp.sin, sp.cos, sp.sinh, sp.cosh, sp.Heaviside, sp.Abs, sp.sign, sp.Max, sp.Min,
               sp.Piecewise)


def _density1(K, z=Z):
    return sp.exp(-(z**2) / (2 * K)) / sp.sqrt(2 * sp.pi * K)


def _density2(K11, K22, K12, z1=Z1, z2=Z2):
    det = K11 * K22 - K12**2
    q = (K22 * z1**2 - 2 * K12 * z1 * z2 + K11 * z2**2) / det
    return sp.exp(-q / 2) / (2 * sp.pi * sp.sqrt(det))


#: relative change of a float64 average under a four times finer spacing above which ``numeric(method=
#: "quadrature")`` refuses the integrand (the finer value then has lost ~ the fourth power of it at most)
SHARP_INTEGRAND = 1e-3


class GaussianAverage(sp.Expr):
    """``<f>_K``: the Gaussian average of ``f(z)`` (1 variable) or ``f(z_1, z_2)`` (2 variables), unevaluated.

    ``<f>_K = int dz f(z) exp(-z^2/(2K))/sqrt(2 pi K)`` (two variables: the bivariate density of the 2x2 kernel
    ``[[K11, K12], [K12, K22]]``). ``args = (f, variables, kernel)`` with ``kernel = (K,)`` or ``(K11, K22, K12)``,
    so substitution works like for any sympy expression. Prints as ``<f>_K`` (str) and ``\\langle f\\rangle_K``
    (LaTeX). As for ``sympy.stats.Expectation``: ``rewrite(sympy.Integral)`` (or :meth:`as_integral`) gives the
    integral, ``expand()`` applies linearity, ``doit()`` evaluates what it can and ``evalf()`` evaluates
    numerically once no free symbol is left (:meth:`numeric` takes values and a method). Differentiation by the
    kernel uses ``d<f>_K/dK = <f (z^2 - K)>_K / (2 K^2)`` (one variable).
    """

    is_commutative = True

    def __new__(cls, f, variables, kernel):
        return sp.Expr.__new__(cls, sp.sympify(f), sp.Tuple(*variables), sp.Tuple(*kernel))

    @property
    def integrand(self) -> sp.Expr:
        return self.args[0]

    @property
    def variables(self):
        return tuple(self.args[1])

    @property
    def kernel(self):
        return tuple(self.args[2])

    @property
    def free_symbols(self):
        return (self.integrand.free_symbols - set(self.variables)) | set().union(
            *(sp.sympify(k).free_symbols for k in self.kernel)
        )

    def _density(self):
        if len(self.variables) == 1:
            return _density1(self.kernel[0], self.variables[0])
        return _density2(*self.kernel, *self.variables)

    def as_integral(self) -> sp.Integral:
        return sp.Integral(self.integrand * self._density(), *((v, -sp.oo, sp.oo) for v in self.variables))

    def _eval_rewrite_as_Integral(self, *args, **kwargs):
        return self.as_integral()

    def _linear_terms(self, f=None) -> sp.Expr:
        """Linearity: the integrand expanded into terms, each term's factors free of the variables pulled out
        (``<c> = c``, the density being normalized)."""
        f = sp.expand(self.integrand if f is None else f)
        out = []
        for term in sp.Add.make_args(f):
            const, dep = term.as_independent(*self.variables, as_Add=False)
            out.append(const if dep == 1 else const * GaussianAverage(dep, self.variables, self.kernel))
        return sp.Add(*out)

    def _eval_expand_basic(self, **hints):
        return self._linear_terms()

    def doit(self, **hints):
        """Evaluate what can be evaluated: by linearity, polynomial terms exactly (Wick's theorem / Isserlis),
        other terms with sympy's integrator; terms it cannot integrate stay unevaluated averages."""
        f, kern = self.integrand, self.kernel
        if hints.get("deep", True):
            f = f.doit(**hints)
            kern = tuple(sp.sympify(k).doit(**hints) for k in kern)
        split = GaussianAverage(f, self.variables, kern)._linear_terms()
        return split.xreplace({A: A._evaluate_term(**hints) for A in split.atoms(GaussianAverage)})

    def _evaluate_term(self, **hints) -> sp.Expr:
        f, vs = self.integrand, self.variables
        if f.is_polynomial(*vs):
            if len(vs) == 1:
                return moment_average(sp.Poly(f, *vs), self.kernel[0])
            return _bivariate_moments(sp.Poly(f, *vs), *self.kernel)
        # sympy's integrator rarely succeeds for other functions and takes ~20 s to give up (tanh, erf^2)
        if any(not isinstance(fn, _INTEGRABLE) for fn in f.atoms(sp.Function, sp.Piecewise)):
            return self
        res = self.as_integral().doit(**hints)
        return self if res.has(sp.Integral) else sp.simplify(res.rewrite(sp.erf))

    def _eval_derivative(self, s):
        f = self.integrand
        out = GaussianAverage(sp.diff(f, s), self.variables, self.kernel) if f.has(s) else sp.S.Zero
        if len(self.variables) == 1:
            (K,) = self.kernel
            dK = sp.diff(K, s)
            if dK != 0:
                z = self.variables[0]
                out += dK * GaussianAverage(f * (z**2 - K), self.variables, self.kernel) / (2 * K**2)
        elif any(sp.diff(k, s) != 0 for k in self.kernel):
            raise NotImplementedError("derivatives of two-variable Gaussian averages by the kernel")
        return out

    def _latex(self, printer):
        f = printer._print(self.integrand)
        sub = printer._print(self.kernel[0]) if len(self.variables) == 1 else "K"
        return r"\left\langle %s \right\rangle_{%s}" % (f, sub)

    def _sympystr(self, printer):
        return "<%s>_%s" % (printer._print(self.integrand), printer._print(self.kernel[0] if len(self.kernel) == 1 else self.kernel))

    def numeric(self, subs: dict | None = None, dps: int = 30, method: str = "mpmath"):
        """Evaluate with kernel symbols and parameters substituted from ``subs``.

        ``method="mpmath"``: adaptive mpmath quadrature at ``dps`` digits (:func:`pdlt.gaussian.expect_mp`;
        seconds per two-variable average). ``method="quadrature"``: float64 :func:`pdlt.gaussian.expect`
        (milliseconds), for a smooth integrand on a four times finer trapezoid too, whose value is returned (~1e-14
        relative); an integrand whose two values differ by more than :data:`SHARP_INTEGRAND` of its size varies
        below the rules' spacing and is refused (``ParameterError`` naming ``method``: use ``"mpmath"``).
        """
        import mpmath

        from .. import gaussian

        subs = {_S.lookup(k): v for k, v in (subs or {}).items()}
        f = self.integrand.subs(subs)
        kern = [sp.sympify(a).subs(subs) for a in self.kernel]
        vars_ = list(self.variables)
        missing = (f.free_symbols - set(vars_)) | set().union(*(k.free_symbols for k in kern))
        if missing:
            raise ParameterError(f"give numeric values for {sorted(map(str, missing))}")
        from ..activations import find_kinks

        fk = f.rewrite(sp.Piecewise) if f.has(sp.Max, sp.Min) else f
        kinks = find_kinks(fk, vars_)
        if method == "quadrature":
            import numpy as np

            from scipy.special import erf, erfc

            from ..activations import QUADRATURE_SPACING

            fn = sp.lambdify(vars_, f, modules=[{"erf": erf, "erfc": erfc}, "numpy"])
            vals = [float(sp.N(k, 20)) for k in kern]
            K = np.array([[vals[0]]] if len(vals) == 1 else [[vals[0], vals[2]], [vals[2], vals[1]]])
            g = lambda z: fn(*(z[..., i] for i in range(len(vars_))))                           # noqa: E731
            value = float(gaussian.expect(g, K, kinks=kinks))
            if kinks:
                return value
            # a smooth integrand on a four times finer trapezoid as well (its error falls like exp(-c/h), so the
            # finer one is the value); where the two differ by more than SHARP_INTEGRAND the integrand varies on a
            # scale finer than the rules' spacing (tanh(30 z)^2: 0.90 for 0.97) and is refused, as the numeric
            # theory refuses such an activation (pdlt.activations.require_resolved)
            fine = float(gaussian.expect(g, K, resolution=QUADRATURE_SPACING / 4))
            scale = float(gaussian.expect(lambda z: np.abs(g(z)), K, resolution=QUADRATURE_SPACING / 4))
            if abs(fine - value) > SHARP_INTEGRAND * max(scale, 1e-300):
                raise ParameterError(f"the average of {self.integrand} varies on a scale finer than the float64 "
                                     f"quadrature's spacing ({QUADRATURE_SPACING:g}): it changes by "
                                     f"{abs(fine - value) / max(scale, 1e-300):.1g} of its size under a four times "
                                     "finer spacing; use method='mpmath'", "method")
            return fine
        if method != "mpmath":
            raise ParameterError(f"method must be 'mpmath' or 'quadrature', got {method!r}")
        fn = sp.lambdify(vars_, f, modules="mpmath")
        with mpmath.workdps(dps + 5):
            vals = [mpmath.mpf(str(sp.N(k, dps + 10))) for k in kern]
            K = [[vals[0]]] if len(vals) == 1 else [[vals[0], vals[2]], [vals[2], vals[1]]]
        return gaussian.expect_mp(fn, K, kinks=kinks, dps=dps)

    def _eval_evalf(self, prec):
        if self.free_symbols:
            return None
        import mpmath

        dps = mpmath.libmp.prec_to_dps(prec)
        return sp.Float(self.numeric(dps=dps), dps)


def _bivariate_moments(poly: sp.Poly, K11, K22, K12) -> sp.Expr:
    """Exact ``<p(z_1, z_2)>`` of a polynomial: ``<z_1^a z_2^b> = a! b! [t_1^a t_2^b] Q^m/(2^m m!)`` with
    ``Q = K11 t_1^2 + 2 K12 t_1 t_2 + K22 t_2^2`` and ``2m = a + b`` (the moment generating function ``e^{Q/2}``)."""
    t1, t2 = sp.Dummy("t1"), sp.Dummy("t2")
    Q = sp.Poly(K11 * t1**2 + 2 * K12 * t1 * t2 + K22 * t2**2, t1, t2)
    out = sp.S.Zero
    for (a, b), c in poly.terms():
        if (a + b) % 2:
            continue
        m = (a + b) // 2
        out += c * sp.factorial(a) * sp.factorial(b) * (Q**m).coeff_monomial(t1**a * t2**b) / (2**m * sp.factorial(m))
    return sp.expand(out)


def gaussian_average(f, K, z=Z) -> sp.Expr:
    """``<f(z)>_K`` for a sympy expression f in z: a polynomial in z is evaluated exactly by Wick's
    theorem, anything else is returned as an unevaluated :class:`GaussianAverage`. A string, or an expression in a
    plain ``Symbol('z')``, is read in ``z`` (``pdlt.activations.Z`` is real; ``Symbol('z')`` was taken for a
    constant: ``<z^2> = z^2``)."""
    from ..errors import ParameterError

    try:
        f = sp.sympify(f)
    except (sp.SympifyError, TypeError, SyntaxError):
        raise ParameterError(f"f must be a sympy expression in z, got {f!r}", "f") from None
    if not isinstance(f, sp.Expr):
        raise ParameterError(f"f must be a sympy expression in z, got {f!r}", "f")
    if z == Z:
        f = f.subs({s: Z for s in f.free_symbols if s.name == "z" and s != Z})
    if not f.has(z):
        return f
    if f.is_polynomial(z):
        return moment_average(sp.Poly(f, z), K)
    return GaussianAverage(f, (z,), (K,))


def gaussian_average2(f, K11, K22, K12, z1=Z1, z2=Z2) -> sp.Expr:
    """``<f(z_1, z_2)>_K`` for a 2x2 kernel; unevaluated unless f does not depend on z."""
    f = sp.sympify(f)
    if not (f.has(z1) or f.has(z2)):
        return f
    return GaussianAverage(f, (z1, z2), (K11, K22, K12))


def moment_average(poly: sp.Poly, K) -> sp.Expr:
    """Exact ``<p(z)>_K`` of a polynomial: ``<z^(2m)> = (2m-1)!! K^m``, odd moments vanish."""
    out = sp.S.Zero
    for (k,), c in poly.terms():
        if k % 2 == 0:
            out += c * sp.factorial2(k - 1) * K ** (k // 2)
    return sp.expand(out)

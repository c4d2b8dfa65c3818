"""JAX callables for :class:`pdlt.Activation` (the samplers run sigma inside jitted code).

``jax_activation(act)`` returns an elementwise float64 JAX function equal to the numpy ``act(z)``:

* scale-invariant activations (linear, ReLU, leaky ReLU, any user ``Max(0, z)``-like expression with
  slopes ``(a_+, a_-)``): ``where(z > 0, a_+ z, a_- z)``, exact;
* the registered smooth activations by their sympy expression: hand-written, overflow-safe
  (``tanh``, ``sin``, ``erf``, GELU ``z Phi(z)``, SWISH ``z sigmoid(z)``, softplus ``logaddexp(0, z)``,
  sigmoid);
* anything else: ``sympy.lambdify(Z, expr, modules=[{erf, ...}, "jax"])`` (Piecewise becomes
  ``jnp.select``; sympy's default would call ``math.erf`` on arrays).

Each result, and its JAX derivative, is checked once against ``act(z)`` and ``act.d1(z)`` on a grid
(relative 1e-9; non-finite values on either side count as a mismatch, derivatives are skipped at kinks); a
mismatch, or a function JAX cannot evaluate, raises :class:`pdlt.errors.ActivationError` naming the activation,
so a silently wrong sigma can never reach a sampler. :meth:`pdlt.Activation.from_sympy` runs this check at
construction.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import enable_x64
from ..activations import Z, Activation, _supported_list
from ..errors import ActivationError
from ..activations import activation as _lookup

__all__ = ["jax_activation"]

#: grid on which every JAX activation is compared with the numpy one
CHECK_GRID = np.concatenate([np.linspace(-12.0, 12.0, 97), [-1e-3, 1e-3, 0.0, -40.0, 40.0]])


def _known():
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import erf

    s2 = float(np.sqrt(2.0))
    return {
        sp.srepr(sp.tanh(Z)): jnp.tanh,
        sp.srepr(sp.sin(Z)): jnp.sin,
        sp.srepr(sp.erf(Z)): erf,
        sp.srepr(Z * (1 + sp.erf(Z / sp.sqrt(2))) / 2): lambda z: 0.5 * z * (1.0 + erf(z / s2)),
        sp.srepr(Z / (1 + sp.exp(-Z))): lambda z: z * jax.nn.sigmoid(z),
        sp.srepr(sp.log(1 + sp.exp(Z))): lambda z: jnp.logaddexp(0.0, z),
        sp.srepr(1 / (1 + sp.exp(-Z))): jax.nn.sigmoid,
    }


def _build(act: Activation) -> Callable:
    import jax.numpy as jnp
    from jax.scipy import special as jsp

    if act.slopes is not None:
        ap, am = (float(a) for a in act.slopes)
        if ap == 1.0 and am == 1.0:
            return lambda z: z
        return lambda z: jnp.where(z > 0, ap * z, am * z)
    fn = _known().get(sp.srepr(act.expr))
    if fn is not None:
        return fn
    mods = [{"erf": jsp.erf, "erfc": jsp.erfc, "Heaviside": lambda x, h0=0.5: jnp.where(x > 0, 1.0, jnp.where(x < 0, 0.0, h0))},
            "jax"]
    return sp.lambdify(Z, act.expr, modules=mods)


@lru_cache(maxsize=64)
def _cached(act: Activation) -> Callable:
    import jax
    import jax.numpy as jnp

    enable_x64()
    what = f"{act.name!r} ({act.expr})"
    try:
        raw = _build(act)

        def fn(z):
            z = jnp.asarray(z, dtype=jnp.float64)
            return jnp.broadcast_to(jnp.asarray(raw(z), dtype=jnp.float64), z.shape)

        grid = jnp.asarray(CHECK_GRID)
        got = np.asarray(jax.jit(fn)(grid))
        # the samplers differentiate sigma (Langevin, NTK): check JAX's derivative too
        dgot = np.asarray(jax.jit(jax.vmap(jax.grad(lambda x: fn(x))))(grid))
    except Exception as err:  # NameError/AttributeError/TypeError from a function JAX's printer does not know
        names = sorted({type(f).__name__ for f in act.expr.atoms(sp.Function)})
        raise ActivationError(
            f"cannot build the JAX form of activation {what}: {', '.join(names) or 'the expression'} is not supported "
            f"by pdlt's JAX backend ({type(err).__name__}: {err}); supported functions: {_supported_list()}"
        ) from None
    for label, g, want in (("sigma", got, act(CHECK_GRID)), ("sigma'", dgot, act.d1(CHECK_GRID))):
        # away from kinks, where the one-sided derivative is a convention
        away = np.ones(CHECK_GRID.size, dtype=bool) if label == "sigma" else np.all(
            np.abs(CHECK_GRID[:, None] - np.asarray(act.kinks + (np.inf,))[None, :]) > 1e-9, axis=1)
        close = np.isclose(g, want, rtol=1e-9, atol=1e-12, equal_nan=False) | ~away
        if not np.all(close):
            bad = np.flatnonzero(~close)
            raise ActivationError(
                f"cannot build a JAX version of {label} of activation {what} that matches its numpy callable (e.g. "
                f"at z = {CHECK_GRID[bad[:3]]}: jax {g[bad[:3]]} vs numpy {want[bad[:3]]}); use an expression "
                f"that is real and finite for every real z, with the functions {_supported_list()}"
            )
    return fn


def jax_activation(act) -> Callable:
    """Elementwise float64 JAX function ``sigma(z)`` for an activation (name, Activation or sympy expr).

    >>> import numpy as np
    >>> f = jax_activation("leaky_relu(0.1)")
    >>> np.asarray(f(np.array([-2.0, 3.0])))
    array([-0.2,  3. ])
    """
    return _cached(_lookup(act))

"""JAX callables for :class:`pdlt.Activation` (the samplers run sigma inside jitted code).

``jax_activation(act)`` returns an elementwise float64 JAX function equal to the numpy ``act(z)``:

* scale-invariant activations (linear, ReLU, leaky ReLU, any user ``Max(0, z)``-like expression with
  slopes ``(a_+, a_-)``): ``where(z > 0, a_+ z, a_- z)``, exact;
* the registered smooth activations by their sympy expression: hand-written, overflow-safe
  (``tanh``, ``sin``, ``erf``, GELU ``z Phi(z)``, SWISH ``z sigmoid(z)``, softplus ``logaddexp(0, z)``,
  sigmoid);
* anything else: ``sympy.lambdify(Z, expr, modules=[{erf, ...}, "jax"])`` (Piecewise becomes
  ``jnp.select``; sympy's default would call ``math.erf`` on arrays).

Each result is checked once against ``act(z)`` on a grid of finite points (relative 1e-9, where both
are finite); a mismatch raises ValueError naming the activation, so a silently wrong sigma can never
reach a sampler.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import enable_x64
from ..activations import Z, Activation
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
    raw = _build(act)

    def fn(z):
        z = jnp.asarray(z, dtype=jnp.float64)
        return jnp.broadcast_to(jnp.asarray(raw(z), dtype=jnp.float64), z.shape)

    got = np.asarray(jax.jit(fn)(jnp.asarray(CHECK_GRID)))
    want = act(CHECK_GRID)
    ok = np.isfinite(want) & np.isfinite(got)
    if not np.all(np.isfinite(want) == np.isfinite(got)) or not np.allclose(got[ok], want[ok], rtol=1e-9, atol=1e-12):
        bad = np.flatnonzero(~np.isclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True))
        raise ValueError(
            f"cannot build a JAX version of activation {act.name!r} ({act.expr}) that matches its numpy "
            f"callable (e.g. at z = {CHECK_GRID[bad[:3]]}: jax {got[bad[:3]]} vs numpy {want[bad[:3]]}); "
            "use an expression with standard functions (tanh, exp, erf, Piecewise, Max, ...)"
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

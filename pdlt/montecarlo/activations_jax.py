"""The JAX backend of :class:`pdlt.Activation` (the samplers run sigma inside jitted code).

This module builds, checks and caches the JAX form that :meth:`pdlt.Activation.jax_form` returns
(``jax_activation(act)`` is the same for a name, an Activation or a sympy expression); it is the only place
that imports JAX for activations. The form is an elementwise float64 JAX function equal to the numpy ``act(z)``:

* where the activation carries a recipe (``act.jax_recipe``, attached where it is defined in
  :mod:`pdlt.activations`), that recipe: ``where(z > 0, a_+ z, a_- z)`` for scale-invariant activations (linear,
  ReLU, leaky ReLU, any user ``Max(0, z)``-like expression), hand-written overflow-safe forms for the registered
  smooth ones (``tanh``, ``sin``, ``erf``, GELU ``z Phi(z)``, SWISH ``z sigmoid(z)``, softplus
  ``logaddexp(0, z)``, sigmoid; also for a user expression equal to one of them);
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
from types import SimpleNamespace
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import float64
from ..activations import Z, Activation, supported_list
from ..activations import activation as _lookup
from ..errors import ActivationError

__all__ = ["jax_activation"]

#: grid on which every JAX activation is compared with the numpy one
CHECK_GRID = np.concatenate([np.linspace(-12.0, 12.0, 97), [-1e-3, 1e-3, 0.0, -40.0, 40.0]])


def _build(act: Activation) -> Callable:
    import jax
    import jax.numpy as jnp
    from jax.scipy import special as jsp

    if act.jax_recipe is not None:
        return act.jax_recipe(SimpleNamespace(jnp=jnp, special=jsp, nn=jax.nn))
    mods = [{"erf": jsp.erf, "erfc": jsp.erfc, "Heaviside": lambda x, h0=0.5: jnp.where(x > 0, 1.0, jnp.where(x < 0, 0.0, h0))},
            "jax"]
    return sp.lambdify(Z, act.expr, modules=mods)


@lru_cache(maxsize=64)
@float64  # the check below compiles and compares in float64; the returned function is float64 inside pdlt's scope
def checked_jax_form(act: Activation) -> Callable:
    import jax
    import jax.numpy as jnp

    what = f"{act.name!r} ({act.expr})"
    try:
        raw = _build(act)

        def fn(z):
            # float64 in any caller's configuration: inside pdlt's own scope (or a trace in it) this is a no-op
            with jax.enable_x64(True):
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
            f"by pdlt's JAX backend ({type(err).__name__}: {err}); supported functions: {supported_list()}"
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
                f"that is real and finite for every real z, with the functions {supported_list()}"
            )
    return fn


@lru_cache(maxsize=64)
def float32_form(act: Activation) -> Callable:
    """The same JAX form evaluated in float32 (the samplers' float32 networks): checked once on the grid against
    ``act(z)`` to float32 accuracy wherever the value is within float32's range (beyond it float32 gives inf, which
    the samplers report as a diverging flow). ActivationError otherwise, advising float64."""
    import jax
    import jax.numpy as jnp

    checked_jax_form(act)      # the expression itself is checked (and JAX-evaluable) in float64 first
    raw = _build(act)

    def fn(z):
        z = jnp.asarray(z, dtype=jnp.float32)
        # constants of the form may be float64 (numpy scalars are not weakly typed): the result stays float32
        return jnp.broadcast_to(jnp.asarray(raw(z)).astype(jnp.float32), z.shape)

    with jax.enable_x64(True):
        got = np.asarray(jax.jit(fn)(jnp.asarray(CHECK_GRID, dtype=jnp.float32)), dtype=np.float64)
    want = act(CHECK_GRID.astype(np.float32).astype(np.float64))
    inside = np.abs(want) < 1e30
    bad = np.flatnonzero(inside & ~np.isclose(got, want, rtol=1e-5, atol=1e-6))
    if bad.size:
        raise ActivationError(
            f"activation {act.name!r} ({act.expr}) cannot be evaluated in float32 to float32 accuracy (e.g. at z = "
            f"{CHECK_GRID[bad[:3]]}: float32 {got[bad[:3]]} vs {want[bad[:3]]}); sample it with dtype='float64'")
    return fn


def jax_activation(act, dtype: str = "float64") -> Callable:
    """Elementwise JAX function ``sigma(z)`` for an activation (name, Activation or sympy expr): float64, or with
    ``dtype="float32"`` the float32 form (:func:`float32_form`).

    >>> import numpy as np
    >>> f = jax_activation("leaky_relu(0.1)")
    >>> np.asarray(f(np.array([-2.0, 3.0])))
    array([-0.2,  3. ])
    """
    act = _lookup(act)
    return act.jax_form() if dtype == "float64" else float32_form(act)

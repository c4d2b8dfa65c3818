"""Hypothesis strategies for pdlt's objects, for pdlt's own tests and for users' test suites.

Requires the ``test`` extra (``pip install pdlt[test]``).

>>> from hypothesis import given
>>> from pdlt.testing import psd_kernels
>>> @given(psd_kernels(d=2))
... def test_symmetric(K):
...     assert (K == K.T).all()
>>> test_symmetric()
"""

from __future__ import annotations

import math

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as err:  # pragma: no cover
    raise ImportError("pdlt.testing needs hypothesis: pip install 'pdlt[test]'") from err

from .activations import Activation, activation
from .architecture import MLP

__all__ = [
    "SMOOTH",
    "KINKED",
    "activation_names",
    "activations",
    "psd_kernels",
    "hyperparameters",
    "datasets",
    "mlps",
]

SMOOTH = ("linear", "tanh", "erf", "sin", "gelu", "swish", "softplus", "sigmoid")
KINKED = ("relu", "leaky_relu")


def activation_names(*, smooth: bool | None = None) -> st.SearchStrategy[str]:
    """Registry names; ``smooth=True`` only analytic ones, ``False`` only kinked ones (leaky slope drawn)."""
    sm = st.sampled_from(SMOOTH)
    kk = st.one_of(st.just("relu"), st.floats(-0.9, 0.9).map(lambda a: f"leaky_relu({a:.3f})"))
    if smooth is True:
        return sm
    if smooth is False:
        return kk
    return st.one_of(sm, kk)


def activations(*, smooth: bool | None = None, user: bool = True) -> st.SearchStrategy[Activation]:
    """Activations from the registry and (``user=True``) user sympy expressions such as
    ``a tanh(z) + b z`` or ``z + c z Abs(z)`` built with :meth:`Activation.from_sympy`."""
    import sympy as sp

    reg = activation_names(smooth=smooth).map(activation)
    if not user:
        return reg
    z = sp.Symbol("z", real=True)
    coef = st.floats(0.2, 1.5).map(lambda v: sp.Float(round(v, 3)))
    smooth_user = st.tuples(coef, st.floats(-0.5, 0.5).map(lambda v: sp.Float(round(v, 3)))).map(
        lambda ab: Activation.from_sympy(ab[0] * sp.tanh(z) + ab[1] * z, name=f"{ab[0]}tanh+{ab[1]}z"))
    kinked_user = coef.map(lambda c: Activation.from_sympy(sp.Max(0, z) + c * sp.tanh(z), name=f"relu+{c}tanh"))
    if smooth is True:
        return st.one_of(reg, smooth_user)
    if smooth is False:
        return st.one_of(reg, kinked_user)
    return st.one_of(reg, smooth_user, kinked_user)


def psd_kernels(d: int = 2, *, var: tuple[float, float] = (0.05, 5.0), max_abs_rho: float = 0.95,
                batch: tuple[int, ...] = ()) -> st.SearchStrategy[np.ndarray]:
    """Symmetric PSD ``(*batch, d, d)`` kernels with diagonal in ``var`` and pairwise |correlation|
    <= ``max_abs_rho`` (a random correlation matrix from a random Cholesky factor, then rescaled)."""

    size = int(np.prod(batch)) if batch else 1

    @st.composite
    def _one(draw):
        out = np.empty((size, d, d))
        for b in range(size):
            A = np.array(draw(st.lists(st.floats(-1, 1), min_size=d * d, max_size=d * d))).reshape(d, d)
            M = A @ A.T + 0.05 * np.eye(d)
            s = np.sqrt(np.diag(M))
            C = M / np.outer(s, s)
            off = np.abs(C[~np.eye(d, dtype=bool)])
            if off.size and off.max() > max_abs_rho:
                # shrink correlations toward 0 (stays PSD: convex combination with the identity)
                t = max_abs_rho / off.max()
                C = t * C + (1 - t) * np.eye(d)
            v = np.array(draw(st.lists(st.floats(*var), min_size=d, max_size=d)))
            sv = np.sqrt(v)
            out[b] = C * np.outer(sv, sv)
        return out.reshape(batch + (d, d))

    return _one()


def hyperparameters(*, C_W: tuple[float, float] = (0.2, 3.0), C_b: tuple[float, float] = (0.0, 1.0)):
    """``(C_W, C_b)`` pairs."""
    return st.tuples(st.floats(*C_W), st.floats(*C_b))


def datasets(d: int = 2, n0: int = 3, *, scale: tuple[float, float] = (0.3, 2.0),
             min_angle: float = 0.2) -> st.SearchStrategy[np.ndarray]:
    """``(d, n0)`` inputs with norms in ``scale`` and pairwise angles >= ``min_angle`` (non-singular K)."""

    def valid(x):
        nrm = np.linalg.norm(x, axis=1)
        if np.any(nrm < 1e-3):
            return False
        c = (x @ x.T) / np.outer(nrm, nrm)
        ang = np.arccos(np.clip(c[~np.eye(d, dtype=bool)], -1, 1))
        return bool(np.all(ang >= min_angle) and np.all(ang <= math.pi - min_angle))

    def rescale(args):
        x, norms = args
        return x / np.linalg.norm(x, axis=1)[:, None] * np.asarray(norms)[:, None]

    raw = st.lists(st.floats(-1, 1), min_size=d * n0, max_size=d * n0).map(lambda v: np.array(v).reshape(d, n0))
    norms = st.lists(st.floats(*scale), min_size=d, max_size=d)
    return st.tuples(raw.filter(valid), norms).map(rescale)


def mlps(*, depth: tuple[int, int] = (1, 6), n0: int = 3, width: tuple[int, int] = (1, 256),
         act: st.SearchStrategy | None = None, per_layer: bool = True) -> st.SearchStrategy[MLP]:
    """MLPs with random depth, widths, activation and (per-layer) hyperparameters."""

    @st.composite
    def _one(draw):
        L = draw(st.integers(*depth))
        widths = (n0,) + tuple(draw(st.integers(*width)) for _ in range(L))
        a = draw(act if act is not None else activations(user=False))
        if per_layer and draw(st.booleans()):
            hp = [draw(hyperparameters()) for _ in range(L)]
            return MLP(a, widths, [h[0] for h in hp], [h[1] for h in hp])
        C_W, C_b = draw(hyperparameters())
        return MLP(a, widths, C_W, C_b)

    return _one()

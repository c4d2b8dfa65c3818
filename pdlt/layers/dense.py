r"""The input layer and the fully connected layer (PDLT eqs. 4.1-4.2; derivations/README.md sections 1-3, 7-8).

``z^(1) = b + W x`` and ``z^(l+1) = b + W sigma(z^(l))`` with ``W ~ N(0, C_W/n_l)``, ``b ~ N(0, C_b)``. Given the
layer's input ``s`` (``x`` or ``sigma(z^(l))``, shape ``(d, n)``) the rows of the next preactivations are iid
``N(0, G^)`` with the stochastic metric ``G^ = C_b + C_W s s^T / n`` (:func:`metric`); this conditional
Gaussianity is what makes the 1/n statistics of a plain MLP close on ``(K, G1, V)`` layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

__all__ = ["metric", "affine", "Input", "Dense"]


def metric(s, C_W, C_b):
    """``G^ = C_b + C_W s s^T / n`` for a layer input ``s`` ``(..., d, n)`` (NumPy or JAX); returns ``(..., d, d)``.
    For layer 1 (``s = x``) this is the deterministic first-layer kernel ``K^(1)``."""
    return C_b + C_W * (s @ s.swapaxes(-1, -2)) / s.shape[-1]


def affine(xp, s, C_W, C_b, Wn, bn):
    """``(W s^T + b)^T`` ``(d, n')`` for ``s`` ``(d, n)``, ``W = Wn sqrt(C_W/n)`` ``(n', n)``, ``b = bn sqrt(C_b)``."""
    W = Wn * xp.sqrt(C_W / s.shape[-1])
    return (W @ s.T + (bn * xp.sqrt(C_b))[:, None]).T


@dataclass(frozen=True)
class Input:
    """Layer 1, ``z^(1) = b + W x``: exactly Gaussian with kernel ``K^(1) = metric(x)``; no 1/n terms."""

    C_W: float = 1.0
    C_b: float = 0.0
    kind: ClassVar[str] = "input"
    local: ClassVar[bool] = True

    @staticmethod
    def ntk(x, lambda_W, lambda_b):
        """The first layer's NTK ``Theta^(1) = lambda_b + lambda_W x x^T / n_0`` (``z^(1)`` is linear in its own
        ``W``, ``b``; learning rates ``lambda_b`` and ``lambda_W / n_0``): the metric of ``x`` with
        ``(lambda_W, lambda_b)`` in place of ``(C_W, C_b)``."""
        return metric(x, lambda_W, lambda_b)

    @staticmethod
    def markov(xp, sqrt, x, C_W, C_b, eps):
        """``z^(1)T = K^(1)^{1/2} eps`` for inputs ``x`` ``(d, n_0)`` and normals ``eps`` ``(..., d, n_1)``."""
        return sqrt(metric(x, C_W, C_b)) @ eps

    @staticmethod
    def weights(xp, x, C_W, C_b, Wn, bn):
        """``z^(1)T = (W x^T + b)^T`` from unit normals ``Wn`` ``(n_1, n_0)`` and ``bn`` ``(n_1,)``."""
        return affine(xp, x, C_W, C_b, Wn, bn)


@dataclass(frozen=True)
class Dense:
    """A fully connected step ``l -> l + 1``: ``z' = b + W sigma(z)``."""

    C_W: float = 1.0
    C_b: float = 0.0
    kind: ClassVar[str] = "dense"
    local: ClassVar[bool] = True
    gamma: ClassVar[float] = 0.0
    xi: ClassVar[float] = 1.0

    # ------------------------------------------------------------------ leading order
    def kernel_map(self, K, ss):
        """``K' = C_b + C_W <sigma sigma>_K`` from ``ss = <sigma sigma>_K`` (any shape)."""
        return self.C_b + self.C_W * ss

    def chi(self, chi_branch):
        """The layer's susceptibility from the branch's ``C_W <...>_K`` (chi_par or chi_perp): unchanged."""
        return chi_branch

    def symbolic_kernel(self, K, g, C_W=None, C_b=None):
        """The kernel recursion's right-hand side as sympy: ``C_b + C_W g`` (``g = <sigma sigma>_K``)."""
        return (self.C_b if C_b is None else C_b) + (self.C_W if C_W is None else C_W) * g

    def ntk_map(self, Theta, ss, dd, lambda_W: float, lambda_b: float):
        """The frozen NTK recursion ``Theta' = lambda_b + lambda_W <sigma sigma>_K + C_W <sigma' sigma'>_K Theta``
        (entrywise in the input indices; ``dd = <sigma' sigma'>_K``; derivations/README.md section 16)."""
        return lambda_b + lambda_W * ss + self.C_W * dd * Theta

    # ------------------------------------------------------------------ order 1/n (PDLT eqs. 4.90, 4.115)
    def vertex_map(self, avg, V, r: float) -> np.ndarray:
        """``V^(l+1)`` ``(B, d, d, d, d)`` from ``V = V^(l)`` and the layer averages ``avg`` at ``K^(l)``
        (:class:`pdlt.theory.finite_width.LayerAverages`: ``C4``, the Hessian averages ``D``), ``r = n_l/n_{l-1}``:
        ``V' = C_W^2 C4 + r (C_W^2/4) D V D`` (derivations/README.md section 7)."""
        C_W = self.C_W
        T = np.einsum("bxygh,bghef->bxyef", avg.D, V)
        return C_W**2 * avg.C4 + r * (C_W**2 / 4.0) * np.einsum("bxyef,bzwef->bxyzw", T, avg.D)

    def nlo_kernel_map(self, avg, G1, V, r: float) -> np.ndarray:
        """``G1^(l+1)`` ``(B, d, d)``: ``r C_W [D G1 / 2 + Q V / 8]`` (derivations/README.md section 8)."""
        return r * self.C_W * (0.5 * np.einsum("bxygh,bgh->bxy", avg.D, G1) + 0.125 * avg.Q_contract(V))

    # ------------------------------------------------------------------ samplers (NumPy or JAX)
    def markov(self, xp, sqrt, zt, s, C_W, C_b, eps):
        """Next layer's ``zt'`` ``(..., d, n')`` from this layer's ``zt`` and ``s = sigma(zt)`` ``(..., d, n)``:
        ``G^^{1/2} eps`` (exact). ``C_W``, ``C_b`` are passed (traced under JAX) so one compilation serves all
        values; ``sqrt`` is any factor ``R`` with ``R R^T = G^``."""
        return sqrt(metric(s, C_W, C_b)) @ eps

    def weights(self, xp, zt, s, C_W, C_b, Wn, bn):
        """``zt' = (W s^T + b)^T`` with ``W = Wn sqrt(C_W/n)``, ``b = bn sqrt(C_b)``."""
        return affine(xp, s, C_W, C_b, Wn, bn)

r"""The residual step (PDLT appendix B; derivations/README.md section "Residual MLPs", derivations/residual.py).

``z^(l+1) = gamma z^(l) + xi (b + W sigma(z^(l)))`` (``n_{l+1} = n_l`` when ``gamma != 0``). Given layer l the
update is ``gamma z`` plus a conditionally Gaussian term with covariance ``xi^2 G^``, so both samplers stay exact.
The leading-order kernel is ``K' = gamma^2 K + xi^2 (C_b + C_W <sigma sigma>_K)``. At order 1/n the shortcut carries
each neuron's own value forward while the metric depends on it, so the statistics do not close on ``(K, G1, V)``
layer by layer (``local = False``): :func:`pdlt.theory.residual.residual_statistics` computes them for the whole
network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .dense import affine, metric

__all__ = ["Residual"]


@dataclass(frozen=True)
class Residual:
    """``z' = gamma z + xi (b + W sigma(z))``; ``gamma = 0, xi = 1`` is :class:`~pdlt.layers.Dense`."""

    C_W: float = 1.0
    C_b: float = 0.0
    gamma: float = 0.0
    xi: float = 1.0
    kind: ClassVar[str] = "residual"
    local: ClassVar[bool] = False

    def kernel_map(self, K, ss):
        """``K' = gamma^2 K + xi^2 (C_b + C_W ss)``, ``ss = <sigma sigma>_K``."""
        return self.gamma**2 * K + self.xi**2 * (self.C_b + self.C_W * ss)

    def chi(self, chi_branch):
        """``chi = gamma^2 + xi^2 chi_branch`` (the shortcut adds ``gamma^2`` to both susceptibilities)."""
        return self.gamma**2 + self.xi**2 * chi_branch

    def ntk_map(self, Theta, ss, dd, lambda_W: float, lambda_b: float):
        """``Theta' = gamma^2 Theta + xi^2 (lambda_b + lambda_W <sigma sigma> + C_W <sigma' sigma'> Theta)``: the
        shortcut carries the old tangent features (scaled by gamma), the branch adds the dense map scaled by xi^2;
        the cross term ``2 gamma xi E[W] ...`` vanishes at leading order."""
        return self.gamma**2 * Theta + self.xi**2 * (lambda_b + lambda_W * ss + self.C_W * dd * Theta)

    def symbolic_kernel(self, K, g, C_W=None, C_b=None, gamma=None, xi=None):
        gamma = self.gamma if gamma is None else gamma
        xi = self.xi if xi is None else xi
        C_W = self.C_W if C_W is None else C_W
        C_b = self.C_b if C_b is None else C_b
        return gamma**2 * K + xi**2 * (C_b + C_W * g)

    @staticmethod
    def network_statistics(net, K):
        """``(K, G1, V)`` ``(L, d, d)``, ``(L, d, d)`` or None, ``(L, d, d, d, d)`` of a network with residual steps,
        from its leading-order kernels ``K`` (:func:`pdlt.theory.residual.residual_statistics`; G1 is None where
        it is not implemented: kinked activations that are not scale-invariant)."""
        from ..errors import ParameterError
        from ..theory.residual import residual_statistics

        args = (net.activation, K[0], net.C_W, net.C_b, net.gamma, net.xi)
        try:
            return residual_statistics(*args)
        except ParameterError as err:
            if err.setting != "act":
                raise
            return residual_statistics(*args, need_G1=False)

    def markov(self, xp, sqrt, zt, s, C_W, C_b, eps):
        """``gamma zt + xi G^^{1/2} eps`` (exact given the layer)."""
        return self._shortcut(zt) + self.xi * (sqrt(metric(s, C_W, C_b)) @ eps)

    def weights(self, xp, zt, s, C_W, C_b, Wn, bn):
        return self._shortcut(zt) + self.xi * affine(xp, s, C_W, C_b, Wn, bn)

    def _shortcut(self, zt):
        # no shortcut term at gamma = 0: a branch-scaled layer may change the width
        return self.gamma * zt if self.gamma != 0 else 0.0

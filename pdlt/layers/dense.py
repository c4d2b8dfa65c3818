r"""The input layer and the fully connected layer (PDLT eqs. 4.1-4.2; derivations/README.md sections 1-3, 7-8).

``z^(1) = b + W x`` and ``z^(l+1) = b + W sigma(z^(l))`` with ``W ~ N(0, C_W/n_l)``, ``b ~ N(0, C_b)``. Given the
layer's input ``s`` (``x`` or ``sigma(z^(l))``, shape ``(d, n)``) the rows of the next preactivations are iid
``N(0, G^)`` with the stochastic metric ``G^ = C_b + C_W s s^T / n`` (:func:`metric`); this conditional
Gaussianity is what makes the 1/n statistics of a plain MLP close on ``(K, G1, V)`` layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np

__all__ = ["metric", "parameters", "affine", "Input", "Dense"]


def metric(s, C_W, C_b):
    """``G^ = C_b + C_W s s^T / n`` for a layer input ``s`` ``(..., d, n)`` (NumPy or JAX); returns ``(..., d, d)``.
    For layer 1 (``s = x``) this is the deterministic first-layer kernel ``K^(1)``."""
    return C_b + C_W * (s @ s.swapaxes(-1, -2)) / s.shape[-1]


def parameters(xp, n: int, C_W, C_b, Wn, bn):
    """``(W, b)`` from unit normals: ``W = Wn sqrt(C_W/n)`` ``(n', n)``, ``b = bn sqrt(C_b)`` ``(n',)``."""
    return Wn * xp.sqrt(C_W / n), bn * xp.sqrt(C_b)


def affine(xp, s, C_W, C_b, Wn, bn):
    """``(W s^T + b)^T`` ``(d, n')`` for ``s`` ``(d, n)`` with ``(W, b)`` = :func:`parameters`."""
    W, b = parameters(xp, s.shape[-1], C_W, C_b, Wn, bn)
    return (W @ s.T + b[:, None]).T


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
        return self.C_W**2 * self.reduced_vertex_map(avg, V, r)

    @staticmethod
    def reduced_vertex_map(avg, V, r: float) -> np.ndarray:
        """``V^(l+1) / C_W^2 = C4 + (r/4) D V D`` ``(B, d, d, d, d)`` (:meth:`vertex_map` without its ``C_W^2``, which
        the NTK statistics need divided out: they carry ``lambda_W V'/C_W``, defined at ``C_W = 0`` too)."""
        B, d = V.shape[0], V.shape[-1]
        Dm = avg.D.reshape(B, d * d, d * d)
        # D V D^T as (d^2 x d^2) matrix products: the d^6 contraction on BLAS
        return avg.C4 + 0.25 * r * (Dm @ V.reshape(B, d * d, d * d) @ Dm.transpose(0, 2, 1)).reshape(V.shape)

    def nlo_kernel_map(self, avg, G1, V, r: float) -> np.ndarray:
        """``G1^(l+1)`` ``(B, d, d)``: ``r C_W [D G1 / 2 + Q V / 8]`` (derivations/README.md section 8)."""
        return r * self.C_W * self.mean_shift(avg, G1, V)

    @staticmethod
    def mean_shift(avg, G1, V) -> np.ndarray:
        """``(B, d, d)``: the O(1/n) part (times ``n``) of ``E[f_a f_b]`` for the pair products ``f_a f_b`` whose
        Gaussian averages ``avg`` holds (``sigma sigma`` for G1, ``sigma' sigma'`` for Theta1), given the layer's
        ``G1`` and ``V``: ``(1/2) G1 . <dd (f f)> + (1/8) V . <d^4 (f f)>`` (derivations/README.md sections 8, 17)."""
        return 0.5 * np.einsum("bxygh,bgh->bxy", avg.D, G1) + 0.125 * avg.Q_contract(V)

    # ------------------------------------------------------------------ NTK statistics at order 1/n
    def ntk_statistics_map(self, avg, prev, Theta, Theta1, G1, V, lambda_W: float, r: float):
        """One dense step ``l -> l + 1`` of the NTK statistics (derivations/README.md section 17).

        ``avg``: :class:`pdlt.theory.ntk_statistics.NTKAverages` at ``K^(l)`` (leading axis of length 1);
        ``prev``: dict of layer l's ``A, B, D, F, P, Q, R, S, T, U`` ``(d, d, d, d)``; ``Theta, Theta1, G1``
        ``(d, d)`` and ``V`` ``(d, d, d, d)`` of layer l; ``lambda_W = lambda_W^(l+1)``; ``r = n_l/n_{l-1}``.
        Returns ``(dict of layer l+1's A..U, Theta1^(l+1))``. Index orders as in the module docstring of
        :mod:`pdlt.theory.ntk_statistics`; the bias learning rate drops out of every 1/n statistic."""
        C, lam = self.C_W, lambda_W
        a = avg
        P11, P00, P20, P31, P22 = a.P11[0], a.P00[0], a.P20[0], a.P31[0], a.P22[0]
        Y10, Y21, Hss, Hdd = a.Y10[0], a.Y21[0], a.Hss[0], a.Hdd[0]
        M1111, M1100, M2110, M3111, M2211 = a.M1111[0], a.M1100[0], a.M2110[0], a.M3111[0], a.M2211[0]
        A, B, D, F = prev["A"], prev["B"], prev["D"], prev["F"]
        P, Q, R, S, T, U = (prev[k] for k in "PQRSTU")
        Th = Theta
        es = partial(np.einsum, optimize=True)   # pairwise contractions: d^5 / BLAS instead of one d^6 loop
        Vt = self.reduced_vertex_map(a.ss, V[None], r)[0]     # V^(l+1) / C_W^2, no division by C_W
        # B'[x,y,z,w] = B'_{a1 a3 a2 a4} with (x, y, z, w) = (a1, a3, a2, a4)
        Bn = C * C * (M1111 * Th[:, None, :, None] * Th[None, :, None, :] + r * P11[:, :, None, None]
                      * P11[None, None, :, :] * B)
        # F'[x,y,z,w] = F'_{a1 a3 a2 a4}: <s'_x s_y s'_z s_w> Theta_xz + r sum F[x,g,z,h] Y10[x,y,g] Y10[z,w,h]
        Fs = np.einsum("xzyw->xyzw", M1100) * Th[:, None, :, None]
        Ft = Fs + r * es("xgzh,xyg,zwh->xyzw", F, Y10, Y10)  # F' / C_W^2
        Fn = C * C * Ft
        # D' = lambda C Vt + C^2 Dt
        Dt = (Th[:, :, None, None] * (M1100 - P11[:, :, None, None] * P00[None, None, :, :])
              + r * (0.25 * Th[:, :, None, None] * es("abgh,ghef,cdef->abcd", Hdd, V, Hss)
                     + 0.5 * P11[:, :, None, None] * es("abef,cdef->abcd", D, Hss)))
        Dn = lam * C * Vt + C * C * Dt
        # A' = lambda^2 Vt + lambda C (Dt + Dt^T) + C^2 [...]
        Tp = Th[:, :, None, None] * Th[None, None, :, :]
        DH = es("cdgh,abgh->abcd", D, Hdd)  # [1,2,3,4] -> sum D_{34 gh} Hdd_{12 gh}
        An = (lam * lam * Vt + lam * C * (Dt + Dt.transpose(2, 3, 0, 1))
              + C * C * (Tp * (M1111 - P11[:, :, None, None] * P11[None, None, :, :])
                         + r * (0.25 * Tp * es("abgh,ghef,cdef->abcd", Hdd, V, Hdd)
                                + 0.5 * Th[:, :, None, None] * P11[None, None, :, :] * DH
                                + 0.5 * Th[None, None, :, :] * P11[:, :, None, None] * DH.transpose(2, 3, 0, 1)
                                + P11[:, :, None, None] * P11[None, None, :, :] * A)))
        # dNTK: P', Q' [a0, a1, a2, a3]
        T01_02 = Th[:, :, None] * Th[:, None, :]  # [a0, a1, a2] -> Theta_01 Theta_02
        src = C * C * T01_02[..., None] * M2110
        B0012 = es("aabc->abc", B)  # [a0, a1, a2] -> B_{a0 a0 a1 a2}
        Pn = src + r * C * C * P11[None, :, :, None] * (B0012[..., None] * P20[:, None, None, :]
                                                        + es("abcg,adg->abcd", P, Y10))
        Qn = (src + lam * C * Ft
              + r * C * C * (Th[:, :, None, None] * es("agch,abg,cdh->abcd", F, Y21, Y10)
                             + P11[:, :, None, None] * es("abcg,cdg->abcd", Q, Y10)))
        # ddNTK-I: R' [0, 1, 2, 3]
        Th3 = Th[:, :, None, None] * Th[:, None, :, None] * Th[:, None, None, :]  # Theta_01 Theta_02 Theta_03
        M2_0123 = np.einsum("acdb->abcd", M2110)  # <s''_0 s_1 s'_2 s'_3> = M2110[0, 2, 3, 1]
        coefB = lam * P20 + C * Th * P31  # [0, 1]
        PY = es("acdg,abg->abcd", P, lam * Y10 + C * Th[:, :, None] * Y21)  # sum_g P_{0 2 3 g} (...)[0, 1, g]
        Rn = (lam * C * M2_0123 * Th[:, None, :, None] * Th[:, None, None, :] + C * C * M3111 * Th3
              + r * C * P11[None, None, :, :] * (coefB[:, :, None, None] * B0012[:, None, :, :] + PY)
              + r * C * C * P11[:, :, None, None] * P11[None, None, :, :] * R)
        # ddNTK-II: S' [1, 2, 3, 4], U'[x, y, z, w] = U_{a1 a4 a2 a3}
        T13_24 = Th[:, None, :, None] * Th[None, :, None, :]  # [1,2,3,4] -> Theta_13 Theta_24
        Sn = (C * lam * M1111 * T13_24 + C * C * M2211 * Th[:, :, None, None] * T13_24
              + r * C * P11[None, None, :, :] * (lam * P11 + C * Th * P22)[:, :, None, None] * B
              + r * C * C * P11[:, :, None, None] * P11[None, None, :, :] * S)
        # U: x = a1, y = a4, z = a2, w = a3 -> M2211[a1, a2, a3, a4] Theta_12 Theta_13 Theta_24
        Usrc = (M2211 * Th[:, :, None, None] * T13_24).transpose(0, 3, 1, 2)  # [a1,a2,a3,a4] -> [a1,a4,a2,a3]
        Un = C * C * Usrc + r * C * C * P11[:, :, None, None] * P11[None, None, :, :] * U
        # T'[a, c, d, b] = T'_{a c d b}; work in [a, b, c, d] then transpose
        Tab = Th[:, :, None, None]
        Tac = Th[:, None, :, None]
        Tbd = Th[None, :, None, :]
        FYY = es("agbh,acg,bdh->abcd", F, Y10, Y10)
        F22 = es("agbh,acg,bdh->abcd", F, Y21, Y21)
        F12 = es("agbh,acg,bdh->abcd", F, Y10, Y21)  # sum F_{agbh} <d_g(s'_a s_c)> <d_h(s''_b s'_d)>
        Tabcd = T.transpose(0, 3, 1, 2)  # T[a, c, d, b] -> [a, b, c, d]
        M2_b = np.einsum("bdac->abcd", M2110)  # <s'_a s_c s''_b s'_d> = M2110[b, d, a, c]
        QY = es("bdag,acg->abcd", Q, Y10)  # sum_g Q_{b d a g} <d_g(s'_a s_c)>
        QY2 = es("acbg,bdg->abcd", Q, Y21)  # sum_g Q_{a c b g} <d_g(s''_b s'_d)>
        X = (C * lam * M2_b * Tab * Tbd + r * C * lam * Tbd * F12 + r * C * lam * P11[None, :, None, :] * QY
             + r * C * C * Tbd * P11[:, None, :, None] * QY2)
        Xm = X.transpose(1, 0, 3, 2)  # X(b, a, d, c)
        Tn_abcd = (lam * lam * M1100 * Tab
                   + r * lam * lam * FYY + C * C * M2211 * Tab * Tac * Tbd + r * C * C * Tac * Tbd * F22
                   + r * C * C * P11[:, None, :, None] * P11[None, :, None, :] * Tabcd + X + Xm)
        Tn = Tn_abcd.transpose(0, 2, 3, 1)  # [a, b, c, d] -> [a, c, d, b]
        # Theta1' [a, b]
        kappa = es("abgh,abgh->ab", D, Hdd) + 2.0 * es("agbh,abgh->ab", F, Hdd)
        shift_ss, shift_dd = (self.mean_shift(x, G1[None], V[None])[0] for x in (a.ss, a.dd))
        t1 = r * (lam * shift_ss + C * Th * shift_dd + C * P11 * Theta1 + 0.5 * C * kappa)
        new = {"A": An, "B": Bn, "D": Dn, "F": Fn, "P": Pn, "Q": Qn, "R": Rn, "S": Sn, "T": Tn, "U": Un}
        return new, t1

    # ------------------------------------------------------------------ samplers (NumPy or JAX)
    @staticmethod
    def conditional_metric(s, C_W, C_b):
        """``G^`` ``(..., d, d)``: given this layer, the next layer's rows are iid ``N(0, G^)`` (centered), so a
        sampler may take the next layer's statistics from ``G^`` alone
        (:func:`pdlt.montecarlo.estimators.metric_stats`). Steps without this method (a shortcut's ``gamma z`` is
        not centered) are measured on their sampled rows."""
        return metric(s, C_W, C_b)

    def markov(self, xp, sqrt, zt, s, C_W, C_b, eps):
        """Next layer's ``zt'`` ``(..., d, n')`` from this layer's ``zt`` and ``s = sigma(zt)`` ``(..., d, n)``:
        ``G^^{1/2} eps`` (exact). ``C_W``, ``C_b`` are passed (traced under JAX) so one compilation serves all
        values; ``sqrt`` is any factor ``R`` with ``R R^T = G^``."""
        return sqrt(self.conditional_metric(s, C_W, C_b)) @ eps

    def weights(self, xp, zt, s, C_W, C_b, Wn, bn):
        """``zt' = (W s^T + b)^T`` with ``W = Wn sqrt(C_W/n)``, ``b = bn sqrt(C_b)``."""
        return affine(xp, s, C_W, C_b, Wn, bn)

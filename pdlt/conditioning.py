r"""Gaussian conditioning on a kernel, and its response to the data (numpy, batched over leading axes).

Given a covariance ``G`` of training (first ``n_A``) and test inputs, targets ``y`` ``(n_A, n_L)`` observed with
noise variance ``s^2`` and outputs iid over ``n_L`` output neurons, the conditional law of the test outputs is
Gaussian with

    C = G_AA + s^2 1,   u = C^{-1} y,   W = G_BA C^{-1},   m = W y,   S = G_BB - W G_AB,
    l = log N(y; 0, C) + const = -(1/2) sum_i y_i . u_i - (n_L/2) log det C.

At infinite width ``G`` is the kernel ``K`` (the NNGP posterior); for one sampled network it is its metric ``G^``
(:mod:`pdlt.montecarlo.bayes`, :mod:`pdlt.montecarlo.influence`). So the same algebra, and the same response to a
datapoint, serves the theory and the Monte Carlo.

**Response to moving one input.** Moving training input ``a`` changes row and column ``a`` of ``G`` only:
``dG = e_a r^T + r e_a^T - r_a e_a e_a^T`` with ``r = dG_{a .}`` (``r_A`` its training part, ``r_B`` its test
part, ``r_a`` the diagonal entry). Then (derivations/README.md §20.1)

    dm_{b,i} = r_b u_{a,i} - W_ba (r_A . u_i) - (W r_A)_b u_{a,i} + W_ba r_a u_{a,i},
    dS_bb    = -2 r_b W_ba + 2 W_ba (r_A . W_b) - W_ba^2 r_a,
    dl       = sum_i [u_{a,i} (r_A . u_i) - r_a u_{a,i}^2 / 2] - n_L [(C^{-1} r_A)_a - r_a C^{-1}_aa / 2].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architecture import not_invertible

__all__ = ["Conditional", "condition", "row_response"]


@dataclass(frozen=True)
class Conditional:
    """``condition``'s result, each with the leading batch axes ``...`` of ``G``: ``Cinv`` ``(..., n_A, n_A)``,
    ``u`` ``(..., n_A, n_L)``, ``W`` ``(..., n_B, n_A)``, ``mean`` ``(..., n_B, n_L)``, ``var`` ``(..., n_B)`` (the
    diagonal of S), ``cov`` ``(..., n_B, n_B)`` (S), ``logw`` ``(...)`` and the eigenvalues of ``C`` ``(..., n_A)``
    (ascending)."""

    Cinv: np.ndarray
    u: np.ndarray
    W: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    cov: np.ndarray
    logw: np.ndarray
    eigenvalues: np.ndarray


def condition(G, y, nA: int, noise_var: float) -> Conditional:
    """Condition on ``y`` ``(n_A, n_L)`` with covariance ``G`` ``(..., d, d)`` (module docstring). A block ``C`` that
    :func:`pdlt.architecture.not_invertible` refuses is not an error here: its results are placeholders, and the
    caller refuses it from ``eigenvalues``."""
    G = np.asarray(G, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    C = G[..., :nA, :nA] + noise_var * np.eye(nA)
    with np.errstate(invalid="ignore"):
        ev = np.linalg.eigvalsh(C) if np.all(np.isfinite(C)) else np.full(C.shape[:-1], np.nan)
    # LU solves (more accurate than an inverse through the eigenvectors); a block the caller will refuse (singular,
    # ill-conditioned or non-finite: not_invertible of the eigenvalues) is solved as the identity instead of raising
    bad = not_invertible(ev)
    C = np.where(bad[..., None, None], np.eye(nA), C)
    Cinv = np.linalg.solve(C, np.broadcast_to(np.eye(nA), C.shape))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = np.linalg.solve(C, np.broadcast_to(y, C.shape[:-1] + y.shape[-1:]))
        W = np.swapaxes(np.linalg.solve(C, np.swapaxes(G[..., nA:, :nA], -1, -2)), -1, -2)
        mean = W @ y
        cov = G[..., nA:, nA:] - W @ G[..., :nA, nA:]
        var = np.diagonal(cov, axis1=-2, axis2=-1).copy()
        logdet = np.sum(np.log(ev), axis=-1)
        logw = -0.5 * np.einsum("...ai,ai->...", u, y) - 0.5 * y.shape[1] * logdet
    return Conditional(Cinv=Cinv, u=u, W=W, mean=mean, var=var, cov=cov, logw=logw, eigenvalues=ev)


def row_response(cond: Conditional, R, nA: int):
    """Responses to moving each training input (module docstring), from ``cond = condition(G, ...)`` and the row
    derivatives ``R`` ``(..., n_A, n_0, d)``: ``R[..., a, k, c] = dG_{ac} / dx_{a,k}``.

    Returns ``(dm, dvar, dl)``: ``dm`` ``(..., n_B, n_L, n_A, n_0)``, ``dvar`` ``(..., n_B, n_A, n_0)``, ``dl``
    ``(..., n_A, n_0)``."""
    R = np.asarray(R, dtype=np.float64)
    u, W, Cinv = cond.u, cond.W, cond.Cinv
    ar = np.arange(nA)
    rA, rB = R[..., :nA], R[..., nA:]
    r_self = rA[..., ar, :, ar]                                   # (nA, ..., n0): advanced indices lead
    r_self = np.moveaxis(r_self, 0, -2)                           # (..., nA, n0)
    ru = np.einsum("...akc,...ci->...aki", rA, u, optimize=True)                  # r_A . u_i
    Wr = np.einsum("...bc,...akc->...bak", W, rA, optimize=True)                  # (W r_A)_b
    dm = (np.einsum("...akb,...ai->...biak", rB, u) - np.einsum("...ba,...aki->...biak", W, ru)
          - np.einsum("...bak,...ai->...biak", Wr, u) + np.einsum("...ba,...ak,...ai->...biak", W, r_self, u))
    dvar = (-2.0 * np.einsum("...akb,...ba->...bak", rB, W) + 2.0 * W[..., :, :, None] * Wr
            - W[..., :, :, None] ** 2 * r_self[..., None, :, :])
    nL = u.shape[-1]
    diagC = np.diagonal(Cinv, axis1=-2, axis2=-1)                  # (..., nA)
    Cr = np.einsum("...ac,...akc->...ak", Cinv, rA)                 # (C^{-1} r_A)_a
    dl = (np.einsum("...ai,...aki->...ak", u, ru) - 0.5 * r_self * np.sum(u * u, -1)[..., None]
          - nL * (Cr - 0.5 * r_self * diagC[..., None]))
    return dm, dvar, dl

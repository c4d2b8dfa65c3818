r"""Trained networks: the ensemble of outputs after gradient descent on the MSE loss, at infinite width and to
O(1/n) (PDLT ch. 10, infinity; derivations/README.md section 19).

Setup (PDLT conventions). Loss ``L = 1/2 sum_{i, alpha in A} (z_{i;alpha} - y_{i;alpha})^2`` on the output layer,
gradient descent ``theta(t+1) = theta(t) - eta Lambda grad L`` with the learning-rate tensor of :mod:`pdlt.theory.ntk`
(``lambda_b`` for biases, ``lambda_W/n_{l-1}`` for weights), or gradient flow ``d theta/dt = -eta Lambda grad L``.
Indices ``I = (i, a)`` run over output neurons and inputs (training set A first, then the test inputs), and
``eps = z_A - y`` are the training residuals.

**Infinite width** (frozen NTK ``H = delta_ij Theta``): ``eps(t) = M^t eps(0)``, ``M = 1 - eta Theta~`` (``Theta~`` the
training block) and ``z_d(t) = z_d(0) - Theta_dA g_t(Theta~) eps(0)`` with

    g_t(X) = eta sum_{s<t} (1 - eta X)^s = X^{-1} (1 - (1 - eta X)^t)       (gradient descent, t steps),
    g_t(X) = X^{-1} (1 - exp(-eta X t))                                      (gradient flow, time t),
    g_inf(X) = X^{-1}                                                        (fully trained, either).

Over initializations (``z(0) ~ N(0, K)`` per output) the mean is ``Theta_dA g y`` and the covariance is
``(1 - Theta_dA g P_A) K (1 - ...)^T`` restricted to the test inputs. GD converges only for ``eta <
2 / lambda_max(Theta~)`` (the stability limit). Training only the last layer with ``lambda_b / lambda_W = C_b / C_W``
makes ``Theta = (lambda_W / C_W) K``: the fully trained ensemble is then the noiseless NNGP posterior.

**Order 1/n** (mean only; ``n = n_{L-1}``). Two kinds of terms, with the statistics of
:mod:`pdlt.theory.ntk_statistics` at the output layer:

* *frozen, random NTK*: ``E[H0_dA g(H0~)] y`` expanded to second order in the NTK fluctuation (``Theta1`` at first
  order, ``A`` and ``B`` at second): the Frechet derivatives of ``g`` come from ``g`` of the block matrices
  ``[[X, E], [0, X]]`` and ``[[X, E, 0], [0, X, E], [0, 0, X]]`` (exact; no divided differences);
* *dynamics*: the NTK moves (``dH``, the dNTK) and the dNTK moves (the ddNTKs). To first order in ``dH`` and
  ``dd`` (each O(1/n)) with the leading-order residuals, one step is

      z_I    += -eta H_IA eps_A + (eta^2/2) dH_IAB eps_A eps_B - (eta^3/6) ddI_IABC eps_A eps_B eps_C,
      H_IJ   += -eta (dH_IJB + dH_JIB) eps_B + (eta^2/2) (ddI_IJBC + ddI_JIBC + 2 ddII_IJBC) eps_B eps_C,
      dH_IJK += -eta (ddI_IJKC + ddII_IJKC + ddII_IKJC) eps_C,

  (gradient flow keeps only the first term of each line, with d/dt). Its response ``dz`` is linear in ``dH(0)``
  and ``dd`` and a polynomial in ``eps(0)`` (degree 2 with ``dH``, 3 with ``dd``). Averaging uses only
  ``E[dH z] = (P, Q)/n`` (parity kills ``E[dH]`` and ``E[dH z z]``) and ``E[dd eps eps eps] = E[dd] E[eps eps eps]``
  (``R, S, T, U``; the connected part is O(1/n^2)), so the mean is exact from a few evaluations of the response:
  the ``dH`` part from the linear coefficient in ``s`` of ``dz(eps = -y + s e_B; dH = n E[dH z_B])`` (a quadratic
  in s, so ``(dz(1) - dz(-1))/2``), the ``dd`` part from the symmetric sigma points ``-y +- sqrt(N lambda_k) v_k``
  of ``N(-y, K)``, exact for cubics. The response itself is evaluated in closed form for the fully trained limit
  (geometric sums over the eigenmodes of ``Theta~``; :func:`_response_infinite`), by iterating the equations
  above for a finite number of GD steps (:func:`_response_steps`; the two are independent algorithms and agree
  as the steps grow) and for gradient flow for a finite time by closed-form time integrals
  (:func:`_response_flow`; it is the small-step limit of the iteration at fixed ``eta t``).

The same response gives the mean change of the NTK during training, ``E[H(t) - H(0)]`` at O(1/n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np

from ..architecture import MLP
from ..errors import ParameterError, SingularKernelError, emit, truncation_caveat
from ..validation import check_int, check_real

__all__ = ["TrainPrediction", "train_prediction", "stability_limit"]

#: einsum with pairwise contraction paths (the mode sums are 7-index contractions; one loop would cost N^7)
_es = partial(np.einsum, optimize=True)

#: training NTK blocks with a larger condition number are refused for the fully trained limit
COND_MAX = 1e12
#: the most GD steps the O(1/n) response is iterated for; beyond them, once training has converged to round-off,
#: the fully trained closed form is the same number
MAX_ITERATED_STEPS = 20_000
#: the most GD steps a prediction takes (beyond, steps=None gives the fully trained limit: every mode that can decay
#: has decayed to round-off long before)
MAX_STEPS = 10**15
#: largest number of (output, input) pairs in the O(1/n) tensors ``(N,) * 4``
MAX_N = 24
#: ``eta lambda_max`` of the training block below which a non-finite O(1/n) mean is blamed on the step size (the
#: mode sums of the fully trained response divide by products of three such numbers)
_TINY_STEP = 1e-90


def stability_limit(net: MLP, x_train, lambda_b=1.0, lambda_W=1.0) -> float:
    """``2 / lambda_max(Theta~)`` for the output layer's frozen NTK on ``x_train``: gradient descent on the MSE loss
    with the frozen NTK converges iff ``0 < eta`` is below it (inf when no trained parameter reaches the outputs).

    >>> import pdlt
    >>> round(stability_limit(pdlt.MLP("relu", (1, 8, 8, 1), C_W=2.0), [[1.0]], 0.0, 1.0), 6)   # 2 / Theta^(3) = 2 / 3
    0.666667
    """
    from .ntk import learning_rates, ntk

    xa = net.inputs(x_train, "x_train")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    return _limit(np.linalg.eigvalsh(ntk(net, xa, lb, lw).Theta[-1]))


def _limit(ev: np.ndarray) -> float:
    return float(2.0 / ev[-1]) if ev[-1] > 0 else math.inf


# ----------------------------------------------------------------------------------------------------------------
# the matrix functions g_t and their Frechet derivatives
# ----------------------------------------------------------------------------------------------------------------


def g_t(X, eta: float, steps, flow: bool, xp=np):
    """``g_t(X)`` (module docstring) for a stack of square, not necessarily symmetric, matrices ``(..., m, m)``.
    ``xp``: numpy, or ``jax.numpy`` for one matrix that JAX differentiates (:mod:`pdlt.theory.training_nnlo`)."""
    m = X.shape[-1]
    eye = xp.broadcast_to(xp.eye(m), X.shape)
    if steps is None:
        return xp.linalg.solve(X, eye)
    if flow:
        # eta t phi_1(-eta t X) from the exponential of [[Z, 1], [0, 0]]: exact for singular X as well
        top = xp.concatenate([-eta * float(steps) * X, eye], axis=-1)
        big = xp.concatenate([top, xp.zeros_like(top)], axis=-2)
        if xp is np:
            from scipy.linalg import expm

            out = np.stack([expm(b)[:m, m:] for b in big.reshape(-1, 2 * m, 2 * m)]).reshape(X.shape)
        else:
            from jax.scipy.linalg import expm

            out = expm(big)[:m, m:]
        return eta * float(steps) * out
    # eta sum_{s<T} M^s by binary doubling: S(2k) = S(k) + M^k S(k), S(k+1) = 1 + M S(k)
    M = eye - eta * X
    S, P = xp.zeros(X.shape), eye                 # S = sum_{s<k} M^s, P = M^k for the bits read so far
    for bit in bin(int(steps))[2:]:
        S, P = S + P @ S, P @ P
        if bit == "1":
            S, P = eye + M @ S, M @ P
    return eta * S


def _frechet(X: np.ndarray, E: np.ndarray, eta, steps, flow):
    """``(Dg(X)[E], 1/2 D^2 g(X)[E, E])`` for a stack of directions ``E`` ``(k, m, m)`` (``g`` of the block
    bidiagonal matrix ``[[X, E, 0], [0, X, E], [0, 0, X]]``: blocks (1, 2) and (1, 3))."""
    m = X.shape[-1]
    k = E.shape[0]
    big = np.zeros((k, 3 * m, 3 * m))
    for b in range(3):
        big[:, b * m:(b + 1) * m, b * m:(b + 1) * m] = X
    big[:, :m, m:2 * m] = E
    big[:, m:2 * m, 2 * m:] = E
    gb = g_t(big, eta, steps, flow)
    return gb[:, :m, m:2 * m], gb[:, :m, 2 * m:]


# ----------------------------------------------------------------------------------------------------------------
# the dynamical response to the dNTK and the ddNTKs
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dyn:
    """The tensors the dynamics need, over flattened indices ``I = (i, a)`` (``N`` of them, training ones ``tr``):
    ``Theta`` ``(N, N)``; ``DD_IJKC = ddI_IJKC + ddII_IJKC + ddII_IKJC`` (the dNTK's velocity), its symmetrization
    ``DDs_IJKC = DD_IJKC + DD_JIKC``, ``EE_IJBC = ddI_IJBC + ddI_JIBC + 2 ddII_IJBC`` and ``ddI`` ``(N, N, N, N)``."""

    Theta: np.ndarray
    tr: np.ndarray
    DD: np.ndarray
    DDs: np.ndarray
    EE: np.ndarray
    ddI: np.ndarray


def _sub(X: np.ndarray, tr: np.ndarray, slots: str) -> np.ndarray:
    """``X`` restricted to the training indices on the slots marked ``t`` (``.`` keeps a slot whole)."""
    return X[np.ix_(*[tr if c == "t" else np.arange(n) for c, n in zip(slots, X.shape)])]


def _response_infinite(dyn: _Dyn, eps0: np.ndarray, dH0: np.ndarray | None, eta: float, flow: bool):
    """The first-order response of a fully trained network: ``(dz (R, N), dH (R, N, N))`` for residuals ``eps0``
    ``(R, N_A)`` and initial dNTKs ``dH0`` ``(R, N, N, N_A)`` (None: 0), from sums over the eigenmodes of the
    training block (derivations/README.md section 19): with ``eps(t) = sum_k e_k rho_k^t``, ``rho_k = 1 - eta
    theta_k`` (flow: ``exp(-eta theta_k t)``), every time sum is geometric. Returns the change of the outputs and
    of the NTK."""
    tr = dyn.tr
    th, U = np.linalg.eigh(dyn.Theta[np.ix_(tr, tr)])
    e = _es("Ak,rk->rAk", U, eps0 @ U)                    # e_k: mode k of eps0, (R, N_A, K)
    DDs3 = _es("IABC,rAk,rBl,rCm->rIklm", _sub(dyn.DDs, tr, ".ttt"), e, e, e)
    DDsJ = _es("IJBC,rBl,rCm->rIJlm", _sub(dyn.DDs, tr, "..tt"), e, e)
    a, b = th[:, None], th[None, :]
    if dH0 is not None:
        dHs = dH0 + np.swapaxes(dH0, 1, 2)
        dHs2 = _es("rIAB,rAk,rBl->rIkl", dHs[:, :, tr], e, e)
        H1 = -_es("rIJB,rBl,l->rIJ", dHs, e, 1.0 / th)
    else:
        dHs2, H1 = None, 0.0
    if flow:
        S = -_es("rIklm,klm->rI", DDs3, 1.0 / (th[:, None, None] * (a + b)[..., None] *
                                                    (th[:, None, None] + th[None, :, None] + th[None, None, :])))
        H1 = H1 + _es("rIJlm,lm->rIJ", DDsJ, 1.0 / (a * (a + b)))
        if dH0 is not None:
            S = S + _es("rIkl,kl->rI", dHs2, 1.0 / (a * (a + b)))
    else:
        # every factor written without differences of nearly equal numbers (eta theta -> 0 stays exact):
        # 1 - rho_k rho_l = x_k + x_l - x_k x_l and 1 - rho_k rho_l rho_m likewise (x = eta theta), and
        # sum_t rho_k^t sum_{s<t} r^s = rho_k / (x_k (1 - rho_k r))
        x = eta * th
        rho = 1.0 - x
        xk, xl, xm = x[:, None, None], x[None, :, None], x[None, None, :]
        one2 = x[:, None] + x[None, :] - x[:, None] * x[None, :]
        one3 = xk + xl + xm - (xk * xl + xk * xm + xl * xm) + xk * xl * xm
        g2, g3 = 1.0 / one2, 1.0 / one3
        r2 = rho[:, None] * rho[None, :]
        rk, rl = rho[:, None, None], rho[None, :, None]
        DD3 = _es("IABC,rAk,rBl,rCm->rIklm", _sub(dyn.DD, tr, ".ttt"), e, e, e)
        EE3 = _es("IABC,rAk,rBl,rCm->rIklm", _sub(dyn.EE, tr, ".ttt"), e, e, e)
        I3 = _es("IABC,rAk,rBl,rCm->rIklm", _sub(dyn.ddI, tr, ".ttt"), e, e, e)
        S = (-(eta**3 / 6.0) * _es("rIklm,klm->rI", I3, g3)
             # (eta^2/2) [sum_t (rho_k rho_l)^t (1 - rho_m^t)] / theta_m
             - (eta**3 / 2.0) * _es("rIklm,klm->rI", DD3, r2[..., None] * g2[..., None] * g3)
             # eta^2 [G(rho_k; rho_l) - G(rho_k; rho_l rho_m)] / theta_m
             - eta**2 * _es("rIklm,klm->rI", DDs3, rk**2 * rl * g2[..., None] * g3 / th[:, None, None])
             # (eta^3/2) G(rho_k; rho_l rho_m)
             - (eta**3 / 2.0) * _es("rIklm,klm->rI", EE3, rk / (xk * one3)))
        EEJ = _es("IJBC,rBl,rCm->rIJlm", _sub(dyn.EE, tr, "..tt"), e, e)
        H1 = (H1 + eta * _es("rIJlm,lm->rIJ", DDsJ, rho[:, None] * g2 / th[:, None])
              + (eta**2 / 2.0) * _es("rIJlm,lm->rIJ", EEJ, g2))
        if dH0 is not None:
            dH2 = _es("rIAB,rAk,rBl->rIkl", dH0[:, :, tr], e, e)
            S = S + (eta**2 / 2.0) * _es("rIkl,kl->rI", dH2, g2) + eta**2 * _es(
                "rIkl,kl->rI", dHs2, rho[:, None] * g2 / x[:, None])
    # dz_d = S_d - Theta_dA Theta~^{-1} S_A: the training residuals' first-order response sums to -Theta~^{-1} S_A
    proj = np.linalg.solve(dyn.Theta[np.ix_(tr, tr)], dyn.Theta[tr, :])     # (N_A, N): Theta~^{-1} Theta_AI
    return S - S[:, tr] @ proj, H1


def _phi(a, eta, t):
    """int_0^t exp(-eta a s) ds for arrays a of any sign: t phi_1(-eta a t), phi_1(x) = expm1(x)/x (1 at x = 0)."""
    x = -eta * np.asarray(a, dtype=np.float64) * t
    small = np.abs(x) < 1e-12
    safe = np.where(small, 1.0, x)
    return t * np.where(small, 1.0 + x / 2.0, np.expm1(safe) / safe)


def _response_flow(dyn: _Dyn, eps0: np.ndarray, dH0: np.ndarray | None, eta: float, t: float):
    """The same response after gradient flow for a time ``t``: ``(dz (R, N), dH (R, N, N))``. With ``eps(s) =
    sum_k e_k exp(-eta theta_k s)`` the forcing ``sigma(s)`` is a sum of exponentials, so every time integral is
    closed; the training residuals' response ``int_0^t exp(-eta Theta~ (t - s)) sigma_A(s) ds`` is taken mode by mode
    as ``exp(-eta min(r, theta) t) int_0^t exp(-eta |r - theta| s) ds`` (no difference of nearly equal rates is
    divided). Then ``dz_d = S_d - Theta_dA Theta~^{-1} (S_A - deps_A)`` with ``S = int_0^t sigma``."""
    tr = dyn.tr
    th, U = np.linalg.eigh(dyn.Theta[np.ix_(tr, tr)])
    e = _es("Ak,rk->rAk", U, eps0 @ U)
    K = th.size
    a = th[:, None]
    b = th[None, :]

    def P(r):
        return _phi(r, eta, t)

    # sigma_I(s) = sum over terms c_I exp(-eta R s): collect (coefficient (R, N, ...), rate (...)) pairs
    DDs3 = _es("IABC,rAk,rBl,rCm->rIklm", _sub(dyn.DDs, tr, ".ttt"), e, e, e)
    DDsJ = _es("IJBC,rBl,rCm->rIJlm", _sub(dyn.DDs, tr, "..tt"), e, e)
    k3, l3, m3 = th[:, None, None], th[None, :, None], th[None, None, :]
    terms = []      # (coef (R, N, *modes), rates (*modes))
    # -eta sum_klm DDs/theta_m [ (e^{-a_k} - e^{-(a_k+a_l)})/theta_l - (e^{-a_k} - e^{-(a_k+a_l+a_m)})/(theta_l+theta_m) ]
    w1 = -eta / (m3 * l3) + eta / (m3 * (l3 + m3))
    terms.append((DDs3 * w1, np.broadcast_to(k3, (K, K, K))))
    terms.append((DDs3 * (eta / (m3 * l3)), np.broadcast_to(k3 + l3, (K, K, K))))
    terms.append((DDs3 * (-eta / (m3 * (l3 + m3))), k3 + l3 + m3))
    H1 = eta * _es("rIJlm,lm->rIJ", DDsJ, (P(a) - P(a + b)) / b)
    if dH0 is not None:
        dHs = dH0 + np.swapaxes(dH0, 1, 2)
        dHs2 = _es("rIAB,rAk,rBl->rIkl", dHs[:, :, tr], e, e)
        terms.append((dHs2 * (eta / b), np.broadcast_to(a, (K, K))))
        terms.append((dHs2 * (-eta / b), a + b))
        H1 = H1 - eta * _es("rIJB,rBl,l->rIJ", dHs, e, P(th))
    S = 0.0
    de = 0.0            # delta eps(t) = int_0^t exp(-eta Theta~ (t - s)) sigma_A(s) ds, mode by mode
    for coef, rate in terms:
        R_ = coef.shape[0]
        c = coef.reshape(R_, coef.shape[1], -1)                         # (R, N, M) over the flattened modes
        r = np.broadcast_to(rate, coef.shape[2:]).reshape(-1)          # (M,)
        S = S + _es("rIM,M->rI", c, P(r))
        proj = _es("Aj,rAM->rjM", U, c[:, tr])                   # onto the eigenvectors j of Theta~
        # int_0^t e^{-eta theta_j (t-s)} e^{-eta r s} ds = e^{-eta min t} int_0^t e^{-eta |r - theta_j| s} ds
        lo = np.minimum(r[None, :], th[:, None])
        conv = np.exp(-eta * lo * t) * P(np.abs(r[None, :] - th[:, None]))
        de = de + _es("Aj,rjM,jM->rA", U, proj, conv)
    Tt = dyn.Theta[np.ix_(tr, tr)]
    proj = np.linalg.solve(Tt, dyn.Theta[tr, :])
    return S - (S[:, tr] - de) @ proj, H1


def _response_steps(dyn: _Dyn, eps0: np.ndarray, dH0: np.ndarray | None, eta: float, steps: int):
    """The same response after ``steps`` GD steps, by iterating the first-order equations (module docstring):
    ``(dz (R, N), dH (R, N, N))``."""
    tr = dyn.tr
    R, N = eps0.shape[0], dyn.Theta.shape[0]
    M = np.eye(tr.size) - eta * dyn.Theta[np.ix_(tr, tr)]
    ThA = dyn.Theta[:, tr]
    DD3, DDs, EE, I3 = (_sub(dyn.DD, tr, ".ttt"), _sub(dyn.DDs, tr, "..tt"), _sub(dyn.EE, tr, "..tt"),
                        _sub(dyn.ddI, tr, ".ttt"))
    dHs0 = None if dH0 is None else dH0 + np.swapaxes(dH0, 1, 2)
    E = np.array(eps0, dtype=np.float64)
    CE = np.zeros_like(E)
    H1 = np.zeros((R, N, N))
    dz = np.zeros((R, N))
    for _ in range(int(steps)):
        # contractions of dH(t) = dH0 - eta DD . CE with the residuals
        a = -eta * np.einsum("IABC,rA,rB,rC->rI", DD3, E, E, CE)
        b = -eta * np.einsum("IJBC,rB,rC->rIJ", DDs, E, CE)
        if dH0 is not None:
            a = a + np.einsum("rIAB,rA,rB->rI", dH0[:, :, tr], E, E)
            b = b + np.einsum("rIJB,rB->rIJ", dHs0, E)
        c = np.einsum("IABC,rA,rB,rC->rI", I3, E, E, E)
        sigma = -eta * np.einsum("rIA,rA->rI", H1[:, :, tr], E) + (eta**2 / 2.0) * a - (eta**3 / 6.0) * c
        dz = dz - eta * dz[:, tr] @ ThA.T + sigma
        H1 = H1 - eta * b + (eta**2 / 2.0) * np.einsum("IJBC,rB,rC->rIJ", EE, E, E)
        CE = CE + E
        E = E @ M
    return dz, H1


# ----------------------------------------------------------------------------------------------------------------
# the statistics with output-neuron indices
# ----------------------------------------------------------------------------------------------------------------


def _with_neurons(nL: int, *terms) -> np.ndarray:
    """``sum_k delta(pairing_k) X_k`` over flattened indices ``I = (i, a)`` ``(N,) * 4``, ``N = nL d``: each term is
    ``(X, pairing, order)`` with ``pairing`` one of ``"01|23"``, ``"02|13"``, ``"03|12"`` (which neuron slots carry
    one Kronecker delta) and ``order`` the einsum letters of X's input indices (slots ``a b c e``)."""
    d = terms[0][0].shape[0]
    e = np.eye(nL)
    out = np.zeros((nL, d, nL, d, nL, d, nL, d))
    for X, pairing, order in terms:
        (p, q), (r, s) = [tuple(int(c) for c in half) for half in pairing.split("|")]
        nl = "ijkl"
        spec = f"{nl[p]}{nl[q]},{nl[r]}{nl[s]},{order}->iajbkcle"
        out += np.einsum(spec, e, e, X)
    N = nL * d
    return out.reshape(N, N, N, N)


@dataclass(frozen=True)
class _Stats:
    """The output layer's statistics with neuron indices ``(N,) * 4``: the NTK covariance ``C`` (``n E[dH dH]``),
    ``Pz`` (``n E[dH_IJK z_L]``), ``ddI``, ``ddII`` (``n E[.]``), and ``Theta``, ``Theta1``, ``K`` ``(N, N)``."""

    Theta: np.ndarray
    Theta1: np.ndarray
    K: np.ndarray
    C: np.ndarray
    Pz: np.ndarray
    ddI: np.ndarray
    ddII: np.ndarray


def _output_stats(st, nL: int) -> _Stats:
    """:class:`_Stats` from the last layer of :class:`pdlt.theory.ntk_statistics.NTKStatistics` (conventions of
    that module's docstring)."""
    i = -1
    A, B, P, Q, R, S, T, U = (np.asarray(getattr(st, k)[i]) for k in "ABPQRSTU")
    eye = np.eye(nL)
    return _Stats(
        Theta=np.kron(eye, st.Theta[i]), Theta1=np.kron(eye, st.Theta1[i]), K=np.kron(eye, st.K[i]),
        C=_with_neurons(nL, (A, "01|23", "abce"), (B, "02|13", "acbe"), (B, "03|12", "aebc")),
        Pz=_with_neurons(nL, (P, "03|12", "abce"), (Q, "01|23", "abce"), (Q, "02|13", "acbe")),
        ddI=_with_neurons(nL, (R, "01|23", "abce"), (R, "02|13", "aceb"), (R, "03|12", "aebc")),
        ddII=_with_neurons(nL, (S, "01|23", "abce"), (T, "02|13", "aceb"), (U, "03|12", "aebc")),
    )


def _dyn(st: _Stats, tr: np.ndarray) -> _Dyn:
    ddI, ddII = st.ddI, st.ddII
    DD = ddI + ddII + ddII.transpose(0, 2, 1, 3)
    return _Dyn(Theta=st.Theta, tr=tr, DD=DD, DDs=DD + DD.transpose(1, 0, 2, 3),
                EE=ddI + ddI.transpose(1, 0, 2, 3) + 2.0 * ddII, ddI=ddI)


def _zero_dyn(dyn: _Dyn) -> _Dyn:
    z = np.zeros_like(dyn.DD)
    return _Dyn(Theta=dyn.Theta, tr=dyn.tr, DD=z, DDs=z, EE=z, ddI=z)


def _response(dyn, eps0, dH0, eta, steps, flow):
    if steps is None:
        return _response_infinite(dyn, eps0, dH0, eta, flow)
    if flow:
        return _response_flow(dyn, eps0, dH0, eta, float(steps))
    if steps > MAX_ITERATED_STEPS:
        # long runs: once every mode has decayed to round-off (its factors ~ t^2 rho^t), the fully trained closed
        # form is the same number; otherwise iterating would take O(steps N^4)
        th = np.linalg.eigvalsh(dyn.Theta[np.ix_(dyn.tr, dyn.tr)])
        left = float(np.max(np.abs(1.0 - eta * th))) if th[0] > 0 else 1.0
        if left < 1.0 and 2.0 * math.log(float(steps)) + steps * math.log(left) < math.log(1e-17):
            return _response_infinite(dyn, eps0, dH0, eta, False)
        raise ParameterError(
            f"steps = {steps}: the O(1/n) response is iterated step by step up to {MAX_ITERATED_STEPS} steps, and "
            f"after {steps} steps training has not converged (the slowest mode keeps {left:.6g}^steps of its "
            "residual); use fewer steps, a larger eta, or steps=None for the fully trained limit", "steps")
    return _response_steps(dyn, eps0, dH0, eta, steps)


def _dynamical_terms(st: _Stats, tr: np.ndarray, y: np.ndarray, eta, steps, flow):
    """The 1/n coefficients of the mean change of all outputs ``(N,)`` and of the NTK ``(N, N)`` from the dNTK
    (``P, Q``: first pair) and the ddNTKs (``R, S, T, U``: second pair), averaged exactly (module docstring)."""
    dyn = _dyn(st, tr)
    nA = tr.size
    # dNTK: E[dH eps eps] = -y E[dH z] - E[dH z] y; the linear coefficient in s of eps = -y + s e_B, dH = Pz[..., B]
    eye = np.eye(nA)
    eps = np.concatenate([-y[None] + eye, -y[None] - eye])
    dH0 = np.concatenate([st.Pz[:, :, tr][..., tr].transpose(3, 0, 1, 2)] * 2)
    dz, dh = _response(_zero_dyn(dyn), eps, dH0, eta, steps, flow)
    z_p = 0.5 * (dz[:nA] - dz[nA:]).sum(0)
    h_p = 0.5 * (dh[:nA] - dh[nA:]).sum(0)
    # ddNTKs: E over eps ~ N(-y, K~) of a cubic, exact on the symmetric sigma points
    lam, V = np.linalg.eigh(st.K[np.ix_(tr, tr)])
    offs = (np.sqrt(nA * np.clip(lam, 0.0, None)) * V).T
    eps = np.concatenate([-y[None] + offs, -y[None] - offs])
    dz, dh = _response(dyn, eps, None, eta, steps, flow)
    return (z_p, h_p), (dz.mean(0), dh.mean(0))


def _frozen_terms(st: _Stats, tr: np.ndarray, y: np.ndarray, eta, steps, flow):
    """The 1/n coefficients of ``E[H0_IA g(H0~)] y`` ``(N,)``: from ``Theta1`` (first order) and from the NTK
    fluctuations ``A, B`` (second order), with Frechet derivatives of g (module docstring)."""
    X = st.Theta[np.ix_(tr, tr)]
    g = g_t(X[None], eta, steps, flow)[0]
    d1, _ = _frechet(X, st.Theta1[np.ix_(tr, tr)][None], eta, steps, flow)
    theta1 = st.Theta1[:, tr] @ g @ y + st.Theta[:, tr] @ d1[0] @ y
    N = st.Theta.shape[0]
    C = st.C.reshape(N * N, N * N)
    lam, W = np.linalg.eigh(0.5 * (C + C.T))
    keep = np.abs(lam) > 1e-14 * max(np.abs(lam).max(), 1e-300)
    lam, Vs = lam[keep], W[:, keep].T.reshape(-1, N, N)
    if lam.size == 0:
        return theta1, np.zeros(N)
    D1, D2 = _frechet(X, Vs[:, tr][:, :, tr], eta, steps, flow)
    fluct = (_es("k,kIA,kAB,B->I", lam, Vs[:, :, tr], D1, y)
             + _es("IA,k,kAB,B->I", st.Theta[:, tr], lam, D2, y))
    return theta1, fluct


@dataclass(frozen=True)
class TrainPrediction:
    """The ensemble of trained networks (module docstring) at the test inputs.

    ``mean`` ``(N_T, n_L)`` and ``cov`` ``(N_T, N_T)`` (per output component) at infinite width; ``eta_max`` the
    stability limit ``2/lambda_max(Theta~)`` of gradient descent (inf for gradient flow); ``Theta`` and ``K``
    ``(N, N)`` over the inputs (training first); ``n = n_{L-1}``. The O(1/n) mean (computed on first access):
    ``mean_correction`` ``(N_T, n_L)`` (the coefficient of 1/n; ``mean_finite = mean + mean_correction / n``),
    ``pieces`` (its parts: ``"Theta1"``, ``"ntk_fluctuation"`` (A, B), ``"dntk"`` (P, Q), ``"ddntk"`` (R..U)), and
    the 1/n coefficients of the NTK's mean change ``E[H_ii(t) - H_ii(0)]``, averaged over the outputs i (as the
    Monte Carlo's ``ntk_change``; with several outputs each output's block differs, by its targets): ``ntk_change``
    ``(N_A, N_A)`` on the training inputs and ``ntk_change_cross`` ``(N_T, N_A)`` between test and training inputs.
    The O(1/n) mean needs the NTK statistics only on input tuples with at most one test input
    (:func:`pdlt.theory.ntk_statistics.star_statistics` around the training set; test inputs in groups that keep
    its d <= 16 inputs and N = n_L (N_A + group) <= MAX_N):
    at most 8 training inputs for one output; 8 training and 8 test inputs at L = 10 take ~9 s on 2 cores
    (``pdlt bench train``), each further test input ~1 s. Where only the last layer trains, ``mean_correction2`` (the
    1/n^2 coefficient) and ``next_order`` (``|mean_correction2|/n^2``, the truncation error of ``mean_finite``) are
    computed too (:mod:`pdlt.theory.training_nnlo`)."""

    net: MLP
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    eta: float
    steps: float | None
    flow: bool
    lambda_b: tuple
    lambda_W: tuple
    Theta: np.ndarray
    K: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    eta_max: float

    @property
    def n(self) -> int:
        return int(self.net.widths[self.net.L - 1])

    @cached_property
    def _order1(self) -> dict:
        from .ntk_statistics import MAX_INPUTS, STAR_MAX_INPUTS

        nA, nT = self.x_train.shape[0], self.x_test.shape[0]
        nL = self.y_train.shape[1]
        if self.net.residual:
            raise ParameterError("the O(1/n) trained mean needs the NTK statistics of the training and test inputs "
                                 "together in star form (pdlt.theory.ntk_statistics.star_statistics), which is "
                                 "derived for plain MLPs only (set gamma = 0, xi = 1)", "gamma")
        # the mean at a test input needs only statistics with at most one test index: the star of the training set
        # (pdlt.theory.ntk_statistics.star_statistics), over groups of test inputs that fit its (d,)^4 tensors and
        # the (N,)^4 tensors here (N = n_L (N_A + group) <= MAX_N)
        if nL > MAX_N // 2:
            raise ParameterError(f"the O(1/n) trained mean holds tensors over (output, input) pairs, at most {MAX_N} of "
                                 f"them: at most {MAX_N // 2} outputs, got n_L = {nL}; predict fewer outputs at a "
                                 "time (outputs are exchangeable: their statistics do not depend on which)", "y_train")
        most = min(MAX_INPUTS, MAX_N // nL) - 1
        core = np.unique(self.x_train + 0.0, axis=0).shape[0]
        if nA > most:
            raise ParameterError(
                f"the O(1/n) trained mean needs the NTK statistics of the training inputs plus one test input: at "
                f"most {most} training inputs with n_L = {nL} outputs, got {nA}; train on fewer points (or predict "
                "fewer outputs)", "x_train")
        group = min(STAR_MAX_INPUTS - core, MAX_N // nL - nA)
        y = self.y_train.T.reshape(-1)                             # flattened (i, a)
        # (huge targets, or steps of eta lambda ~ 1e-100 whose mode sums divide by their products: caught below)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            parts = [self._order1_group(self.x_test[g:g + group], y) for g in range(0, nT, group)]
        pieces = {k: np.concatenate([p["pieces"][k] for p in parts]) for k in parts[0]["pieces"]}
        if not all(np.all(np.isfinite(v)) for v in (*pieces.values(), *(p[k] for p in parts for k in ("train", "cross")))):
            step = self.eta * float(np.linalg.eigvalsh(self.Theta[:nA, :nA])[-1])
            if not self.flow and step < _TINY_STEP:
                raise ParameterError(f"the O(1/n) trained mean leaves float64's range: each gradient-descent step "
                                     f"moves the training modes by at most eta lambda_max = {step:.3g}, and the sums "
                                     "over the steps divide by products of such numbers; use a larger eta (or its "
                                     "limit, gradient flow: flow=True)", "eta")
            raise ParameterError("the O(1/n) trained mean leaves float64's range (its dNTK and ddNTK parts grow like "
                                 "the cube of the targets): scale y_train down", "y_train")
        correction = sum(pieces.values())
        caveats = self._truncation(correction)
        emit(caveats, stacklevel=5)
        return {"pieces": pieces, "mean_correction": correction, "ntk_change": parts[0]["train"],
                "ntk_change_cross": np.concatenate([p["cross"] for p in parts]), "caveats": caveats}

    def _truncation(self, correction: np.ndarray) -> tuple:
        """A ``"truncation"`` caveat where the O(1/n) mean is not a small correction: ``|mean_correction/n|`` against
        ``max(|mean|, std over initializations)`` of each test input and output (the spread enters because a mean
        that vanishes by symmetry is corrected "infinitely" in relative terms), floored at 1e-8 of the prior's
        scale (round-off: a test input on a training input, fully trained)."""
        from .bayes import posterior_scales, scaled_ratio

        scale, _ = posterior_scales(self.mean, self.cov, np.diagonal(self.K)[self.x_train.shape[0]:])
        ratio = scaled_ratio(np.abs(correction / self.n), scale)
        b, i = np.unravel_index(np.argmax(ratio), ratio.shape)
        c = truncation_caveat(ratio[b, i], f"trained mean: |mean_correction/n| / max(|mean|, std over "
                              f"initializations) at test input {b}, output {i}", self.net.L,
                              "widen the network or reduce the depth (L/n), or bring the targets within a few prior "
                              "standard deviations (the dNTK and ddNTK parts grow like their square and cube)",
                              what_tex=r"trained mean: $|\text{mean correction}/n|/\max(|\text{mean}|,\ "
                              rf"\text{{std over initializations}})$ at test input ${b}$, output ${i}$",
                              advice_tex=r"widen the network or reduce the depth ($L/n$), or bring the targets within "
                              r"a few prior standard deviations (the dNTK and ddNTK parts grow like their square and "
                              "cube)")
        return () if c is None else (c,)

    def _order1_group(self, xt: np.ndarray, y: np.ndarray) -> dict:
        """The O(1/n) pieces at the test inputs ``xt`` (with the whole training set)."""
        from .ntk_statistics import star_statistics

        nA, nT, nL = self.x_train.shape[0], xt.shape[0], self.y_train.shape[1]
        d = nA + nT
        # distinct training inputs form the core; a test input equal to one of them is that input (same
        # statistics), the other distinct test inputs follow it
        core_x, inv_a = np.unique(self.x_train + 0.0, axis=0, return_inverse=True)
        where = {row.tobytes(): i for i, row in enumerate(core_x)}
        extra, inv_t = [], []
        for row in xt + 0.0:
            i = where.setdefault(row.tobytes(), core_x.shape[0] + len(extra))
            if i == core_x.shape[0] + len(extra):
                extra.append(row)
            inv_t.append(i)
        xs = np.concatenate([core_x, np.reshape(extra, (-1, core_x.shape[1]))])
        stu = star_statistics(self.net, xs, core_x.shape[0], self.lambda_b, self.lambda_W)
        st = _output_stats(_Expanded(stu, np.concatenate([inv_a.reshape(-1), inv_t])), nL)
        tr = np.array([i * d + a for i in range(nL) for a in range(nA)])
        te = np.array([i * d + a for i in range(nL) for a in range(nA, d)])
        eta, steps, flow = self.eta, self.steps, self.flow
        theta1, fluct = _frozen_terms(st, tr, y, eta, steps, flow)
        (zp, hp), (zd, hd) = _dynamical_terms(st, tr, y, eta, steps, flow)
        h = hp + hd
        hh = np.mean([h[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in range(nL)], axis=0)

        def test(v):
            return v[te].reshape(nL, nT).T

        return {"pieces": {"Theta1": test(theta1), "ntk_fluctuation": test(fluct), "dntk": test(zp),
                           "ddntk": test(zd)}, "train": hh[:nA, :nA], "cross": hh[nA:, :nA]}

    @property
    def pieces(self) -> dict:
        return self._order1["pieces"]

    @property
    def caveats(self) -> tuple:
        """The O(1/n) mean's caveats (computing it first): a ``"truncation"`` caveat where it is not a small
        correction (the NTK statistics issue their own when computed)."""
        return self._order1["caveats"]

    @property
    def mean_correction(self) -> np.ndarray:
        return self._order1["mean_correction"]

    @property
    def mean_finite(self) -> np.ndarray:
        """``mean + mean_correction / n_{L-1}``, the trained mean to O(1/n)."""
        return self.mean + self.mean_correction / self.n

    @cached_property
    def mean_correction2(self) -> np.ndarray:
        """The coefficient of 1/n^2 of the trained mean ``(N_T, n_L)``, where only the last layer trains (a frozen,
        random NTK: :mod:`pdlt.theory.training_nnlo`; at most 4 distinct training and test inputs). Raises
        :class:`ParameterError` naming ``lambda_W`` when lower layers train (their dNTK and ddNTKs enter at this
        order, which is not derived)."""
        from .training_nnlo import trained_mean_nnlo

        return trained_mean_nnlo(self)[2]

    @property
    def next_order(self) -> np.ndarray:
        """``|mean_correction2|/n^2`` ``(N_T, n_L)``: the O(1/n^2) term that :attr:`mean_finite` leaves out, its
        computed truncation error (where :attr:`mean_correction2` exists)."""
        return np.abs(self.mean_correction2) / self.n**2

    @property
    def ntk_change(self) -> np.ndarray:
        return self._order1["ntk_change"]

    @property
    def ntk_change_cross(self) -> np.ndarray:
        return self._order1["ntk_change_cross"]


class _Expanded:
    """The last layer of :class:`NTKStatistics` on unique inputs, indexed back to the inputs with repeats
    (``inv`` maps each input to its unique row)."""

    def __init__(self, st, inv):
        self._st, self._inv = st, inv

    def __getattr__(self, name):
        X = np.asarray(getattr(self._st, name))[-1:]
        return X[(slice(None),) + np.ix_(*[self._inv] * (X.ndim - 1))]


def train_prediction(net: MLP, x_train, y_train, x_test, lambda_b=1.0, lambda_W=1.0, *, eta: float,
                     steps=None, flow: bool = False) -> TrainPrediction:
    """The trained ensemble at ``x_test`` ``(N_T, n_0)`` after training on ``x_train`` ``(N_A, n_0)``, ``y_train``
    ``(N_A, n_L)`` (or ``(N_A,)`` for one output) with learning rates ``lambda_b``, ``lambda_W`` (per layer or
    scalars, :func:`pdlt.theory.ntk.learning_rates`) and step size ``eta``: ``steps`` GD steps (an int; None: fully
    trained), or gradient flow for a time ``steps`` (``flow=True``; the exponent is ``-eta Theta t``).

    Raises :class:`ParameterError` naming ``eta`` when gradient descent is unstable (``eta >= 2/lambda_max``;
    the message gives the limit) and :class:`SingularKernelError` when the fully trained limit needs a training
    NTK block that cannot be inverted.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("relu", (1, 64, 64, 1), C_W=2.0)
    >>> tp = pdlt.train_prediction(net, [[1.0]], [0.5], [[0.5]], lambda_b=0.0, lambda_W=1.0, eta=0.2)
    >>> float(np.round(tp.mean[0, 0], 12))            # scale invariance: Theta(x, 0.5 x) = Theta(x, x) / 2
    0.25
    >>> round(tp.eta_max, 6)                           # 2 / Theta^(3)(x, x) = 2 / 3
    0.666667
    """
    from .kernel import kernel_flow
    from .ntk import learning_rates, ntk

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    xa = net.inputs(x_train, "x_train")
    xb = net.inputs(x_test, "x_test")
    y = net.targets(y_train, xa.shape[0], "y_train")
    eta = check_real(eta, "eta", minimum=0.0, open_minimum=True)
    if not isinstance(flow, (bool, np.bool_)):
        raise ParameterError(f"flow must be True or False, got {flow!r}", "flow")
    if steps is not None:
        steps = (check_real(steps, "steps", minimum=0.0) if flow
                 else check_int(steps, "steps", minimum=0, maximum=MAX_STEPS))
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    x = np.concatenate([xa, xb])
    nA = xa.shape[0]
    Theta = ntk(net, x, lb, lw).Theta[-1]
    K = kernel_flow(net, x).K[-1]
    Tt = Theta[:nA, :nA]
    ev = np.linalg.eigvalsh(Tt)
    eta_max = math.inf if flow else _limit(ev)
    if not flow and eta >= eta_max:
        raise ParameterError(f"eta = {eta:g} is at or above the stability limit of gradient descent, 2/lambda_max"
                             f"(Theta~) = {eta_max:.6g}: the training residuals grow; use eta < {eta_max:.6g} (at "
                             "finite width each network's own NTK fluctuates, so stay clearly below it)", "eta")
    if steps is None and not (ev[0] > 0 and ev[-1] / ev[0] < COND_MAX):
        raise SingularKernelError(
            f"the training block of the NTK is singular (eigenvalues {ev[0]:.3g} .. {ev[-1]:.3g}), so the fully "
            "trained limit (steps=None) is not unique: drop duplicate or collinear training inputs, train a finite "
            "number of steps, or train the weights of more layers (lambda_W)")
    with np.errstate(over="ignore", invalid="ignore"):
        g = g_t(Tt[None], eta, steps, flow)[0]
    if not np.all(np.isfinite(g)):
        raise ParameterError(f"the frozen-NTK solution leaves float64's range (eta = {eta:g}, steps = {steps}): "
                             "lower eta or the training time", "eta")
    P = np.eye(x.shape[0])[nA:] - Theta[nA:, :nA] @ g @ np.eye(x.shape[0])[:nA]    # z_T(t) = P z(0) + ...
    mean = Theta[nA:, :nA] @ g @ y
    cov = P @ K @ P.T
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ParameterError("the trained mean or covariance leaves float64's range: scale y_train (or the inputs) "
                             "down", "y_train")
    return TrainPrediction(net=net, x_train=xa, y_train=y, x_test=xb, eta=float(eta), steps=steps, flow=bool(flow),
                           lambda_b=lb, lambda_W=lw, Theta=Theta, K=K, mean=mean, cov=0.5 * (cov + cov.T),
                           eta_max=eta_max)

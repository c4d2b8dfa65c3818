r"""The trained ensemble to O(1/n^2) where only the last layer trains: a frozen, random NTK.

With every learning rate below layer L zero, training moves the last layer's weights and biases only, so the hidden
layers, and with them the NTK, never change. The output layer's NTK is then, for every output neuron alike,

    H_ab = lambda_b + (lambda_W/n) sum_j sigma(z_ja) sigma(z_jb) = a G_ab + c,  a = lambda_W/C_W, c = lambda_b - a C_b,

a function of the last layer's stochastic metric ``G`` (``n = n_{L-1}``; PDLT conventions, :mod:`pdlt.theory.ntk`).
Gradient descent is linear in the outputs: ``z_T(t) = z_T(0) - H_TA g_t(H_AA) (z_A(0) - y)`` with ``g_t`` of
:mod:`pdlt.theory.training` (``t`` steps, gradient flow, or fully trained), and given ``G`` the initial outputs are
centred Gaussians, so the trained mean is exactly

    E[z_T(t)] = E[h(G)],   h(G) = H_TA g_t(H_AA) y,

an average of a smooth function of the metric. Its expansion in the metric's cumulants (G1, V at 1/n; G2, V1, U at
1/n^2: :func:`pdlt.theory.nnlo_inputs.nnlo_inputs`) is :func:`pdlt.theory.posterior_nnlo.metric_expectation_terms`,
with the derivatives of ``h`` up to the fourth taken by JAX (through the same ``g_t`` algorithms: a solve, binary
doubling of the GD sum, the exponential of a block matrix). The 1/n coefficient is the frozen-NTK part of
:attr:`pdlt.TrainPrediction.mean_correction` (the dNTK and ddNTKs vanish here), computed there by another algorithm
(Frechet derivatives of ``g_t``, the NTK statistics ``Theta1``, ``A``, ``B``); the 1/n^2 coefficient is the computed
next order, the truncation error of the O(1/n) mean (derivations/README.md section 19).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .._x64 import float64
from ..errors import ParameterError

__all__ = ["last_layer_only", "trained_mean_nnlo"]


def last_layer_only(lambda_b, lambda_W) -> bool:
    """Whether only the last layer trains (every learning rate below layer L is 0): the case of this module."""
    return not any(lambda_b[:-1]) and not any(lambda_W[:-1])


@lru_cache(maxsize=8)
def _expansion(nA: int, index: tuple, steps, flow: bool):
    """Jitted ``(G, y, a, c, eta) -> (h, h_1, .., h_4)``: ``h = H_TA g_t(H_AA) y`` ``(n_T, n_L)`` and its derivatives
    with respect to the metric ``G`` of the distinct inputs (row r of the data, training then test, is distinct input
    ``index[r]``); ``g_t`` is the infinite-width code's own (:func:`pdlt.theory.training.g_t`), traced by JAX."""
    import jax
    import jax.numpy as jnp

    from .training import g_t

    ix = jnp.asarray(index)

    def h(D, G, y, a, c, eta):
        Gr = (G + D)[ix][:, ix]
        Gr = 0.5 * (Gr + Gr.T)
        H = a * Gr + c
        return H[nA:, :nA] @ g_t(H[:nA, :nA], eta, steps, flow, xp=jnp) @ y

    fns = [h]
    for _ in range(4):
        fns.append(jax.jacfwd(fns[-1]))
    return float64(jax.jit(lambda G, y, a, c, eta: tuple(f(jnp.zeros_like(G), G, y, a, c, eta) for f in fns)))


@float64
def trained_mean_nnlo(tp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, mean_correction, mean_correction2)``, each ``(N_T, n_L)``: the coefficients of 1, 1/n and 1/n^2 of the
    trained mean of a :class:`pdlt.TrainPrediction` ``tp`` whose network trains its last layer only (module
    docstring), at most :data:`pdlt.theory.nnlo_inputs.MAX_INPUTS` distinct training and test inputs.

    Raises :class:`ParameterError` naming ``lambda_W`` when a lower layer trains (its dNTK and ddNTKs enter at
    this order and are not derived to it), ``x_test`` beyond 4 distinct inputs, ``gamma`` for residual networks."""
    import jax.numpy as jnp

    from .nnlo_inputs import MAX_INPUTS, nnlo_inputs
    from .posterior_nnlo import metric_expectation_terms

    net = tp.net
    if not last_layer_only(tp.lambda_b, tp.lambda_W):
        raise ParameterError("the O(1/n^2) trained mean is derived where only the last layer trains (lambda_b and "
                             "lambda_W zero below layer L: a frozen NTK); with lower layers training, the dNTK and "
                             "ddNTKs enter at that order, which is not derived: set the lower layers' learning rates "
                             "to 0, or use the O(1/n) mean", "lambda_W")
    if net.residual:
        raise ParameterError("the O(1/n^2) trained mean is derived for plain MLPs (set gamma = 0, xi = 1)", "gamma")
    C_W, C_b = float(net.C_W[-1]), float(net.C_b[-1])
    if C_W == 0:
        raise ParameterError("the last layer has C_W = 0: its outputs do not see the hidden layers", "C_W")
    x = np.concatenate([tp.x_train, tp.x_test])
    uniq, inv = np.unique(x + 0.0, axis=0, return_inverse=True)
    if uniq.shape[0] > MAX_INPUTS:
        raise ParameterError(f"the O(1/n^2) trained mean needs the several-input 1/n^2 statistics of every distinct "
                             f"training and test input at once, at most {MAX_INPUTS}; got {uniq.shape[0]}: predict "
                             "fewer test inputs at a time, or use the O(1/n) mean", "x_test")
    th = nnlo_inputs(net, uniq)
    i = net.L - 1
    a = float(tp.lambda_W[-1]) / C_W
    c = float(tp.lambda_b[-1]) - a * C_b
    nA = tp.x_train.shape[0]
    fn = _expansion(nA, tuple(int(k) for k in inv.reshape(-1)), tp.steps, bool(tp.flow))
    with np.errstate(over="ignore", invalid="ignore"):
        hs = [np.asarray(v) for v in fn(jnp.asarray(th.K[i]), jnp.asarray(tp.y_train), a, c, float(tp.eta))]
        e1, e2 = metric_expectation_terms(hs, th.G1[i], th.V[i], th.G2[i], th.V1[i], th.U[i])
    if not all(np.all(np.isfinite(v)) for v in (hs[0], e1, e2)):
        raise ParameterError("the O(1/n^2) trained mean leaves float64's range (its terms grow like the targets "
                             "times powers of the NTK's inverse): scale y_train, or train fewer steps", "y_train")
    return hs[0], e1, e2

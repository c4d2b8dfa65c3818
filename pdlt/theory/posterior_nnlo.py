r"""The posterior to order 1/n^2: the computed next order of :func:`pdlt.posterior` for up to four distinct inputs.

Conditional on the last hidden layer the outputs are iid Gaussian with the stochastic metric ``G = G^(L)``, so every
posterior expectation is ``E[F | y] = E[w F]/E[w]`` with ``w = prod_i N(y_i; 0, G_AA + s^2)`` (module
:mod:`pdlt.theory.bayes`). With ``G = K + delta`` and ``n = n_{L-1}``, :func:`pdlt.theory.nnlo_inputs.nnlo_inputs`
gives the law of delta to O(1/n^2):

    E delta = G1/n + G2/n^2,   Cov delta = V/n + V1/n^2,   kappa_3(delta) = U/n^2,   kappa_4 = O(1/n^3),

hence the raw moments ``E delta delta = V/n + (V1 + G1 G1)/n^2``, ``E delta^3 = (U + 3 sym(V G1))/n^2`` and
``E delta^4 = 3 sym(V V)/n^2`` to this order. For a smooth ``h(G)`` with derivatives ``h_k`` at K (indices over the
ordered entries of G, contracted with the tensors above; ``h_k`` symmetric, so a symmetrization is a factor)

    E h = h + [h_1 G1 + h_2 V/2]/n
            + [h_1 G2 + h_2 (V1 + G1 G1)/2 + h_3 U/6 + h_3 (V G1)/2 + h_4 (V V)/8]/n^2 + O(1/n^3).

Apply it to ``A = E[(w/w(K)) F]`` and ``B = E[w/w(K)]`` (``B_0 = 1``) and expand the ratio:

    E[F | y] = A_0 + (A_1 - A_0 B_1)/n + (A_2 - A_1 B_1 - A_0 B_2 + A_0 B_1^2)/n^2.

``F`` is the conditional mean ``G_BA (G_AA + s^2)^{-1} y`` or the second moment about the NNGP mean ``m0``, as in
:mod:`pdlt.theory.bayes`; the covariance follows as ``E[second] - (E mean - m0)^2``, expanded to the same order (the
square starts at ``m1 m1^T/n^2``). The derivatives up to the fourth are
taken by JAX on the d x d metric (d distinct inputs, d <= 4: the limit of the several-input 1/n^2 statistics), so the
cost is that of a d^8-entry tensor. The O(1/n) part reproduces :func:`pdlt.posterior` (a different algorithm: the
tests check the two against each other); derivations/README.md section 11.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._x64 import float64

__all__ = ["PosteriorNNLO", "posterior_nnlo"]


@dataclass(frozen=True)
class PosteriorNNLO:
    """The 1/n and 1/n^2 coefficients of the posterior mean ``(n_B, n_L)`` and covariance ``(n_L, n_B, n_L, n_B)``:
    ``mean = mean_infinite + mean_correction/n + mean_correction2/n^2`` and likewise for ``cov``."""

    mean_infinite: np.ndarray
    mean_correction: np.ndarray
    mean_correction2: np.ndarray
    cov_infinite: np.ndarray
    cov_correction: np.ndarray
    cov_correction2: np.ndarray
    n: int


@lru_cache(maxsize=8)
def _expansion(nA: int, nL: int, index: tuple):
    """Jitted ``(G, y, s2) -> (h, h_1, h_2, h_3, h_4)`` for the vector ``h = (w, w mean, w second)`` (flattened, in
    that order) at the metric ``G`` of the distinct inputs (w relative to ``w(G)`` itself, so the weight is 1 there and
    never under- or overflows); one chain of derivatives serves all three, which halves the compile time. Row r of the
    data (training then test) is distinct input ``index[r]``: the functionals see ``G[index][:, index]``, and the
    derivatives, taken with respect to the distinct inputs' metric, stay ``(d, d)``-sized however often an input
    repeats."""
    import jax
    import jax.numpy as jnp

    from .bayes import posterior_functionals

    logw, mean, second = posterior_functionals(nA, nL)
    ix = jnp.asarray(index)

    def rows(G):
        return G[ix][:, ix]

    def h(D, G, y, s2):
        r = jnp.exp(logw(rows(G + D), y, s2) - logw(rows(G), y, s2))
        return jnp.concatenate([r[None], (r * mean(rows(G + D), y, s2)).ravel(),
                                (r * second(rows(G + D), y, s2, mean(rows(G), y, s2))).ravel()])

    fns = [h]
    for _ in range(4):
        fns.append(jax.jacfwd(fns[-1]))
    return float64(jax.jit(lambda G, y, s2: tuple(f(jnp.zeros_like(G), G, y, s2) for f in fns)))


def metric_expectation_terms(h, G1, V, G2, V1, U):
    """``(E_1, E_2)``: the 1/n and 1/n^2 coefficients of ``E h(K + delta)`` (module docstring) for a smooth function
    ``h`` of the metric, from its derivatives ``h = (h_0, ..., h_4)`` at K, each ``out + (d, d) * k``, and the
    metric's statistics ``G1, G2`` ``(d, d)``, ``V, V1`` ``(d,)*4``, ``U`` ``(d,)*6``."""
    d2 = G1.size
    h1, h2, h3, h4 = (np.asarray(a).reshape(np.shape(h[0]) + (d2,) * k) for k, a in enumerate(h[1:], start=1))
    g1, g2 = G1.reshape(d2), G2.reshape(d2)
    v, v1 = V.reshape(d2, d2), V1.reshape(d2, d2)
    u = U.reshape(d2, d2, d2)
    vg = np.einsum("ij,k->ijk", v, g1)
    vv = np.einsum("ij,kl->ijkl", v, v)
    e1 = h1 @ g1 + 0.5 * np.tensordot(h2, v, axes=2)
    e2 = (h1 @ g2 + 0.5 * np.tensordot(h2, v1 + np.outer(g1, g1), axes=2) + np.tensordot(h3, u, axes=3) / 6.0
          + 0.5 * np.tensordot(h3, vg, axes=3) + np.tensordot(h4, vv, axes=4) / 8.0)
    return e1, e2


def _ratio(A, B):
    """The 1/n and 1/n^2 coefficients of ``A/B`` for ``A = (A_0, A_1, A_2)``, ``B = (1, B_1, B_2)``."""
    (A0, A1, A2), (_, B1, B2) = A, B
    return A1 - A0 * B1, A2 - A1 * B1 - A0 * B2 + A0 * B1 * B1


@float64
def posterior_nnlo(K, G1, V, G2, V1, U, n: int, y, nA: int, noise_var: float = 0.0, index=None) -> PosteriorNNLO:
    """The posterior to O(1/n^2) from the last layer's statistics on d distinct inputs: ``K, G1, G2`` ``(d, d)``,
    ``V, V1`` ``(d, d, d, d)``, ``U`` ``(d,)*6`` (conventions of :class:`pdlt.theory.nnlo_inputs.NNLOInputs`);
    ``index`` (one entry per row of the data, the ``nA`` training rows first, then the test rows) names each row's
    distinct input (None: the rows are the d inputs in order); ``y`` ``(nA, n_L)``, ``n = n_{L-1}``. Module docstring
    for the method; :func:`pdlt.posterior` with ``order=2`` is the public face (inputs checked)."""
    import jax.numpy as jnp

    y = np.asarray(y, dtype=np.float64)
    index = tuple(range(np.shape(K)[0])) if index is None else tuple(int(i) for i in index)
    nB, nL = len(index) - nA, y.shape[1]
    hs = [np.asarray(a) for a in _expansion(nA, nL, index)(jnp.asarray(K), jnp.asarray(y), jnp.float64(noise_var))]
    # split the flattened (w, w mean, w second) into its three functionals, derivative axes kept
    cuts = np.cumsum([1, nB * nL])
    shapes = ((), (nB, nL), (nL, nB, nL, nB))
    w, wm, ws = ([part.reshape(shape + a.shape[1:]) for a, part in zip(hs, parts)]
                 for shape, parts in zip(shapes, zip(*(np.split(a, cuts, axis=0) for a in hs))))
    B = (1.0,) + metric_expectation_terms(w, G1, V, G2, V1, U)
    Am = (wm[0],) + metric_expectation_terms(wm, G1, V, G2, V1, U)
    As = (ws[0],) + metric_expectation_terms(ws, G1, V, G2, V1, U)
    m0 = Am[0]
    m1, m2 = _ratio(Am, B)
    M1, M2 = _ratio(As, B)

    def outer(a, b):
        return np.einsum("ai,bj->iajb", a, b)

    # the second moment is taken about m0 (pdlt.theory.bayes.posterior_functionals): the covariance is its
    # expectation less (m1/n + m2/n^2)^2, whose first term is m1 m1^T/n^2
    return PosteriorNNLO(m0, m1, m2, As[0][0, :, 0, :], M1, M2 - outer(m1, m1), int(n))

r"""Influence by Monte Carlo: the posterior's response to each training datapoint, measured on sampled networks.

The theory is :func:`pdlt.influence` (derivations/README.md §20). Here the networks are real: explicit weights and
biases for the hidden layers, so each network is a function of its inputs and can be differentiated with respect
to them exactly (forward mode, ``jax.jacfwd``; no finite differences). As in :func:`pdlt.posterior_mc` the output
layer is integrated out given the last hidden layer (its outputs are exactly ``N(0, G^)``), so each network
contributes its log-weight ``l = log N(y; 0, G^_AA + s^2 1)``, its conditional mean ``m = G^_BA (G^_AA + s^2)^{-1}
y`` and its conditional second moment ``q_b = S_bb + m_b^2``. The posterior mean is the weighted average
``E_w[m] = E[e^l m] / E[e^l]``, and for any parameter ``theta`` of the data (a target or an input coordinate)

    d E_w[m] / d theta = E_w[dm] + E_w[m dl] - E_w[m] E_w[dl],
    d Var / d theta    = E_w[dq] + E_w[q dl] - E_w[q] E_w[dl] - 2 E_w[m] d E_w[m],

the derivative of the reweighting estimator (the second terms are the covariance of the quantity with the score
``dl``). Every expectation is a ratio of sums over the same networks, so the estimate and its standard error come
from the weighted delete-one-batch jackknife (:func:`pdlt.montecarlo.estimators.jackknife`), which also removes the
ratio's O(1/N) bias. The weights' common scale is carried along (``w = e^{l - shift}``, the sums rescaled when a
larger log-weight arrives), so no weight over- or underflows however long the run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._x64 import float64
from ..architecture import MLP, not_invertible, posterior_problem, singular_training_kernel
from ..errors import ParameterError, PdltWarning
from ..layers import metric
from ..validation import check_int, check_real, check_seed
from .estimators import Estimate, jackknife

__all__ = ["InfluenceMC", "influence_mc"]


@dataclass(frozen=True)
class InfluenceMC:
    """Monte Carlo influence, each an :class:`~pdlt.montecarlo.estimators.Estimate` with the shapes of
    :class:`pdlt.theory.influence.Influence`: ``mean`` and ``var`` ``(n_B, n_L)`` (the posterior's mean and variance
    themselves), ``mean_dy``, ``var_dy`` ``(n_B, n_L, n_A, n_L)``, ``mean_dx``, ``var_dx`` ``(n_B, n_L, n_A, n_0)``;
    the effective sample size ``ess`` and ``n_samples``."""

    mean: Estimate
    var: Estimate
    mean_dy: Estimate
    var_dy: Estimate
    mean_dx: Estimate
    var_dx: Estimate
    ess: float
    n_samples: int


@lru_cache(maxsize=16)
def _chunk_function(net: MLP, nA: int, nL: int):
    """Jitted ``run(idx, key, xa, xb, y, s2) -> (log-weights, eigenvalues of G^_AA + s^2, per-network vectors)`` for
    the networks ``idx``: one compilation per network and shapes, whatever the data (cached)."""
    import jax

    one = _network_functions(net, nA, nL)

    @jax.jit
    def run(idx, base, xa, xb, y, s2):
        lw, ev, parts = jax.vmap(lambda s: one(jax.random.fold_in(base, s), xa, xb, y, s2))(idx)
        return lw, ev, jax.vmap(lambda *p: _per_network(p))(*parts)

    return run


def _network_functions(net: MLP, nA: int, nL: int):
    """``one(key, xa, xb, y, s2) -> (l, eigenvalues of G^_AA + s^2, parts)`` for one network with explicit weights:
    its log-weight, and the conditional mean and second moment with their derivatives (forward mode in ``xa``,
    closed forms in ``y``) for :func:`_per_network`."""
    import jax
    import jax.numpy as jnp

    from .activations_jax import jax_activation

    sigma = jax_activation(net.activation)
    widths, steps = net.widths, net.steps
    C_W, C_b = net.C_W, net.C_b

    def metric_of(key, xa, xb):
        x = jnp.concatenate([xa, xb])
        z = None
        for l in range(net.L - 1):
            kw, kb = jax.random.split(jax.random.fold_in(key, l))
            Wn = jax.random.normal(kw, (widths[l + 1], widths[l]), jnp.float64)
            bn = jax.random.normal(kb, (widths[l + 1],), jnp.float64)
            z = (steps[0].weights(jnp, x, C_W[0], C_b[0], Wn, bn) if l == 0
                 else steps[l].weights(jnp, z, sigma(z), C_W[l], C_b[l], Wn, bn))
        return metric(sigma(z), C_W[-1], C_b[-1])

    def parts(G, y, s2):
        C = G[:nA, :nA] + s2 * jnp.eye(nA)
        sol = jnp.linalg.solve(C, y)
        lw = -0.5 * jnp.sum(y * sol) - 0.5 * nL * jnp.linalg.slogdet(C)[1]
        Wt = jnp.linalg.solve(C, G[:nA, nA:])                       # (nA, nB) = (G_BA C^{-1})^T
        m = G[nA:, :nA] @ sol
        S = G[nA:, nA:] - G[nA:, :nA] @ Wt
        q = jnp.diagonal(S)[:, None] + m * m
        return lw, m, q, Wt.T, sol, jnp.linalg.eigvalsh(C)

    def one(key, xa, xb, y, s2):
        def f(xa_):
            lw, m, q, *_ = parts(metric_of(key, xa_, xb), y, s2)
            return lw, m, q

        lw, m, q, W, sol, ev = parts(metric_of(key, xa, xb), y, s2)
        dl_x, dm_x, dq_x = jax.jacfwd(f)(xa)
        eye = jnp.eye(nL)
        dm_y = jnp.einsum("ba,ij->biaj", W, eye)
        dq_y = 2.0 * m[:, :, None, None] * dm_y
        return lw, ev, (m, q, -sol, dm_y, dq_y, dl_x, dm_x, dq_x)

    return one


def _per_network(lw_parts):
    """Flattened per-network vector ``(1, m, q, dl, dm, m dl, dq, q dl)`` for the y- then x-derivatives."""
    import jax.numpy as jnp

    m, q, dl_y, dm_y, dq_y, dl_x, dm_x, dq_x = lw_parts
    cols = [jnp.ones((1,)), m.ravel(), q.ravel()]
    for dl, dm, dq in ((dl_y, dm_y, dq_y), (dl_x, dm_x, dq_x)):
        cols += [dl.ravel(), dm.ravel(), (m[:, :, None, None] * dl[None, None]).ravel(), dq.ravel(),
                 (q[:, :, None, None] * dl[None, None]).ravel()]
    return jnp.concatenate(cols)


def _estimates(means, nB, nL, nA, n0):
    """From batch means ``(k, K)`` of the per-network vector to ``(k, total)``: mean, var, then the four responses."""
    k = means.shape[0]
    S1 = means[:, :1]
    at = [1]

    def take(shape):
        size = int(np.prod(shape))
        out = means[:, at[0]:at[0] + size].reshape((k,) + shape) / S1.reshape((k,) + (1,) * len(shape))
        at[0] += size
        return out

    m, q = take((nB, nL)), take((nB, nL))
    out = [m, q - m * m]
    for P in ((nA, nL), (nA, n0)):
        dl, dm, mdl, dq, qdl = take(P), take((nB, nL) + P), take((nB, nL) + P), take((nB, nL) + P), take((nB, nL) + P)
        dl_ = dl[:, None, None]
        dM = dm + mdl - m[..., None, None] * dl_
        dV = dq + qdl - q[..., None, None] * dl_ - 2.0 * m[..., None, None] * dM
        out += [dM, dV]
    return np.concatenate([o.reshape(k, -1) for o in out], axis=1)


@float64
def influence_mc(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0, *, n_samples: int = 100_000,
                 seed: int = 0, batches: int = 32, chunk: int = 2048, min_ess: float = 1000.0) -> InfluenceMC:
    """The influence of each training datapoint on the posterior at ``x_test``, measured on ``n_samples`` sampled
    networks (module docstring); arguments and shapes as :func:`pdlt.influence`. Network s uses
    ``fold_in(key(seed), s)`` and is summed into jackknife batch ``s mod batches``. Warns if the effective sample
    size is below ``min_ess``; bad arguments raise :class:`~pdlt.errors.ParameterError` naming them."""
    import jax
    import jax.numpy as jnp

    prob = posterior_problem(net, x_train, y_train, x_test, noise_var)
    xa, xb, y, s2 = prob.x_train, prob.x_test, prob.y_train, prob.noise_var
    seed = check_seed(seed)
    batches = check_int(batches, "batches", minimum=2)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    chunk = check_int(chunk, "chunk", minimum=1)
    if n_samples < batches:
        raise ParameterError(f"n_samples must be >= batches = {batches} (every jackknife batch needs a network), got "
                             f"{n_samples}", "n_samples")
    min_ess = check_real(min_ess, "min_ess", minimum=0.0)
    nA, n0 = xa.shape
    nB, nL = xb.shape[0], y.shape[1]
    run = _chunk_function(net, nA, nL)
    data = (jax.random.key(seed), jnp.asarray(xa), jnp.asarray(xb), jnp.asarray(y), jnp.float64(s2))

    sums, shift = None, -np.inf
    n_bad = 0
    w_sum = w2_sum = 0.0
    for start in range(0, n_samples, chunk):
        size = min(chunk, n_samples - start)
        lw, ev, per = (np.asarray(a)[:size] for a in run(jnp.arange(start, start + chunk), *data))
        bad = not_invertible(ev) | ~np.isfinite(lw) | ~np.all(np.isfinite(per), axis=1)
        n_bad += int(bad.sum())
        if n_bad:
            break
        top = float(lw.max())
        if top > shift:
            if sums is not None:
                scale = np.exp(shift - top)
                sums *= scale
                w_sum *= scale
                w2_sum *= scale * scale
            shift = top
        w = np.exp(lw - shift)
        if sums is None:
            sums = np.zeros((batches, per.shape[1]))
        np.add.at(sums, (start + np.arange(size)) % batches, w[:, None] * per)
        w_sum += float(w.sum())
        w2_sum += float(np.sum(w * w))
    if n_bad:
        raise singular_training_kernel(f"in sampled networks of the chunk starting at network {start}; n_train = {nA}",
                                       s2)
    ess = w_sum**2 / w2_sum
    if ess < min_ess:
        warnings.warn(f"effective sample size {ess:.0f} < {min_ess:.0f} of {n_samples} networks: the influence "
                      "estimate is unreliable; use more networks, smaller targets or a larger noise_var", PdltWarning,
                      stacklevel=2)
    counts = np.bincount(np.arange(n_samples) % batches, minlength=batches)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = jackknife(lambda M: _estimates(M, nB, nL, nA, n0), counts, sums)
    mean, err = np.asarray(est.mean), np.asarray(est.stderr)
    if not np.all(np.isfinite(err)):
        raise ParameterError(f"the importance weights sit on too few networks to estimate an error (effective sample "
                             f"size {ess:.3g} of {n_samples}): raise n_samples, or use a larger noise_var or smaller "
                             "targets", "n_samples")
    shapes = [("mean", (nB, nL)), ("var", (nB, nL)), ("mean_dy", (nB, nL, nA, nL)), ("var_dy", (nB, nL, nA, nL)),
              ("mean_dx", (nB, nL, nA, n0)), ("var_dx", (nB, nL, nA, n0))]
    out, at = {}, 0
    for name, shp in shapes:
        size = int(np.prod(shp))
        out[name] = Estimate(mean[at:at + size].reshape(shp), err[at:at + size].reshape(shp), name=name)
        at += size
    return InfluenceMC(ess=float(ess), n_samples=n_samples, **out)

r"""Influence by Monte Carlo: the posterior's response to each training datapoint, measured on sampled networks.

The theory is :func:`pdlt.influence` (derivations/README.md §20). Here the networks are real: explicit weights and
biases for the hidden layers, so each network is a function of its inputs and can be differentiated with respect
to them exactly (forward mode, ``jax.jacfwd``; no finite differences). As in :func:`pdlt.posterior_mc` the output
layer is integrated out given the last hidden layer (its outputs are exactly ``N(0, G^)``), so each network
contributes its log-weight ``l = log N(y; 0, G^_AA + s^2 1)``, its conditional mean ``m = G^_BA (G^_AA + s^2)^{-1}
y`` and its conditional second moment ``q_b = S_bb + m_b^2``, and their derivatives: in the targets in closed form,
in the inputs from the metric's exact row derivatives (each input's features depend on that input alone) through
the same algebra as the infinite-width theory (:mod:`pdlt.conditioning`). The posterior mean is the weighted average
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
from ..errors import DivergentFlowError, ParameterError, PdltWarning
from ..layers import metric
from ..validation import check_int, check_real, check_seed, check_subset
from ..conditioning import condition
from .estimators import Estimate, jackknife

__all__ = ["InfluenceMC", "influence_mc"]


@dataclass(frozen=True)
class InfluenceMC:
    """Monte Carlo influence, each an :class:`~pdlt.montecarlo.estimators.Estimate` with the shapes of
    :class:`pdlt.theory.influence.Influence`: ``mean`` and ``var`` ``(n_B, n_L)`` (the posterior's mean and variance
    themselves), ``mean_dy``, ``var_dy`` ``(n_B, n_L, n_A, n_L)``, ``mean_dx``, ``var_dx`` ``(n_B, n_L, n_A, n_0)``;
    the effective sample size ``ess`` and ``n_samples``; ``mean_dyy`` ``(n_B, n_A, n_A)``: ``d^2 m_b / d y_a d y_c``
    (``second=True``, one output), else None."""

    mean: Estimate
    var: Estimate
    mean_dy: Estimate
    var_dy: Estimate
    mean_dx: Estimate | None
    var_dx: Estimate | None
    ess: float
    n_samples: int
    mean_dyy: Estimate | None = None


def _shape(net: MLP) -> MLP:
    """``net`` with unit ``C_W`` and zero ``C_b``: what a compiled network depends on (activation, widths, shortcuts);
    the real ``C_W``, ``C_b`` are arguments, so networks that differ only in them share one compilation."""
    return MLP(net.activation, net.widths, C_W=1.0, C_b=0.0, gamma=net.gamma, xi=net.xi)


@lru_cache(maxsize=16)
def _chunk_function(net: MLP, nA: int, with_x: bool):
    """Jitted ``run(idx, key, x, C_W (L,), C_b (L,)) -> (G^ (B, d, d), R (B, n_A, n_0, d) or None)`` for the networks
    ``idx``: each network's last-layer metric on the inputs ``x`` (training first) and, with ``with_x``, its row
    derivatives ``R[a, k, c] = dG^_{ac} / dx_{a,k}`` (forward mode). ``net`` is a :func:`_shape` (its own C_W, C_b
    are not used); one compilation per shape (cached). No linear algebra runs under XLA: batched LAPACK calls in one
    XLA CPU program have deadlocked its thread pool; the conditioning is numpy (:mod:`pdlt.conditioning`)."""
    import jax
    import jax.numpy as jnp

    from .activations_jax import jax_activation
    from .samplers import weight_normals

    sigma = jax_activation(net.activation)
    widths, steps = net.widths, net.steps
    n = widths[net.L - 1]

    def features(key, x, C_W, C_b):
        """``sigma(z^(L-1))`` ``(d, n_{L-1})`` of one network (explicit weights) on inputs ``x`` ``(d, n_0)``."""
        z = None
        for l in range(net.L - 1):
            # the weights sampler's keys: network s here is network s of pdlt.sample(..., method="weights")
            Wn, bn = weight_normals(jax.random.fold_in(key, l + 1), widths[l + 1], widths[l])
            z = (steps[0].weights(jnp, x, C_W[0], C_b[0], Wn, bn) if l == 0
                 else steps[l].weights(jnp, z, sigma(z), C_W[l], C_b[l], Wn, bn))
        return sigma(z)

    def one(key, x, C_W, C_b):
        phi = features(key, x, C_W, C_b)
        G = metric(phi, C_W[-1], C_b[-1])
        if not with_x:
            return G, None
        # each input's features depend on that input alone: d phi(x_a) / d x_a (nA, n, n0), one input at a time
        jac = jax.vmap(lambda xa: jax.jacfwd(lambda v: features(key, v[None], C_W, C_b)[0])(xa))(x[:nA])
        R = (C_W[-1] / n) * jnp.einsum("ajk,cj->akc", jac, phi)
        R = R.at[jnp.arange(nA), :, jnp.arange(nA)].multiply(2.0)       # d G_aa = 2 phi_a . d phi_a
        return G, R

    @jax.jit
    def run(idx, base, x, C_W, C_b):
        return jax.vmap(lambda s: one(jax.random.fold_in(base, s), x, C_W, C_b))(idx)

    return run


def _per_network(cond, R, y, nA: int, second: bool):
    """Per-network vectors ``(N, K)`` (numpy) from the conditional law of each network (:mod:`pdlt.conditioning`):
    ``(1, m, q, dl, dm, m dl, dq, q dl)`` for the y- then (with ``R``) x-derivatives, ``q_b = S_bb + m_b^2``; with
    ``second`` (one output) also ``dm_a dl_c + dm_c dl_a + m (dl_a dl_c + d2l_ac)`` and ``dl_a dl_c + d2l_ac`` for
    the second derivatives in the targets (``d2m = 0``: the conditional mean is linear in y)."""
    from ..conditioning import row_response

    N = cond.mean.shape[0]
    nB, nL = cond.mean.shape[1:]
    m = cond.mean                                                  # (N, nB, nL)
    q = cond.var[:, :, None] + m * m
    eye = np.eye(nL)
    dm_y = np.einsum("sba,ij->sbiaj", cond.W, eye)
    blocks = [(-cond.u, dm_y, 2.0 * m[:, :, :, None, None] * dm_y)]
    if R is not None:
        dm_x, dvar_x, dl_x = row_response(cond, R, nA)
        blocks.append((dl_x, dm_x, dvar_x[:, :, None] + 2.0 * m[:, :, :, None, None] * dm_x))
    cols = [np.ones((N, 1)), m.reshape(N, -1), q.reshape(N, -1)]
    for dl, dm, dq in blocks:
        cols += [dl.reshape(N, -1), dm.reshape(N, -1), (m[:, :, :, None, None] * dl[:, None, None]).reshape(N, -1),
                 dq.reshape(N, -1), (q[:, :, :, None, None] * dl[:, None, None]).reshape(N, -1)]
    if second:
        dm, dl, m0 = cond.W, -cond.u[:, :, 0], m[:, :, 0]              # (N, nB, nA), (N, nA), (N, nB)
        dd = dl[:, :, None] * dl[:, None, :] - cond.Cinv
        cols += [(dm[:, :, :, None] * dl[:, None, None, :] + dm[:, :, None, :] * dl[:, None, :, None]
                  + m0[:, :, None, None] * dd[:, None]).reshape(N, -1), dd.reshape(N, -1)]
    return np.concatenate(cols, axis=1)


def _estimates(means, nB, nL, nA, n0, second: bool):
    """From batch means ``(k, K)`` of the per-network vector to ``(k, total)``: mean, var, the four responses and,
    with ``second``, ``d^2 m_b / d y_a d y_c``."""
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
    first = []
    for P in ((nA, nL),) + (((nA, n0),) if n0 else ()):
        dl, dm, mdl, dq, qdl = take(P), take((nB, nL) + P), take((nB, nL) + P), take((nB, nL) + P), take((nB, nL) + P)
        dl_ = dl[:, None, None]
        dM = dm + mdl - m[..., None, None] * dl_
        dV = dq + qdl - q[..., None, None] * dl_ - 2.0 * m[..., None, None] * dM
        out += [dM, dV]
        first.append((dl, dm + mdl))
    if second:
        # f_ac = n_ac - n_a d_c - n_c d_a - m d_ac + 2 m d_a d_c (all weighted means): the second derivative of the
        # ratio E[e^l m] / E[e^l]
        n_ac, d_ac = take((nB, nA, nA)), take((nA, nA))
        (dl, n_a) = first[0]
        d, na, mm = dl[:, :, 0], n_a[:, :, 0, :, 0], m[:, :, 0]         # (k, nA), (k, nB, nA), (k, nB)
        f = (n_ac - na[:, :, :, None] * d[:, None, None, :] - na[:, :, None, :] * d[:, None, :, None]
             - mm[:, :, None, None] * d_ac[:, None]
             + 2.0 * mm[:, :, None, None] * (d[:, :, None] * d[:, None, :])[:, None])
        out.append(f)
    return np.concatenate([o.reshape(k, -1) for o in out], axis=1)


@float64
def influence_mc(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0, *, n_samples: int = 100_000,
                 seed: int = 0, batches: int = 32, chunk: int = 2048, min_ess: float = 1000.0,
                 second: bool = False, wrt=("y", "x")) -> InfluenceMC:
    """The influence of each training datapoint on the posterior at ``x_test``, measured on ``n_samples`` sampled
    networks (module docstring); arguments and shapes as :func:`pdlt.influence`. Network s uses
    ``fold_in(key(seed), s)`` and is summed into jackknife batch ``s mod batches``. Warns if the effective sample
    size is below ``min_ess``; bad arguments raise :class:`~pdlt.errors.ParameterError` naming them. ``second``
    (one output): also the second derivatives ``d^2 m_b / d y_a d y_c`` (``mean_dyy``, ``(n_B, n_A, n_A)``), to
    check :func:`pdlt.interactions`. The effective sample size is that of the weights; the score terms of the
    derivatives (``Cov_w(m, dl)``) are noisier than the mean, and the jackknife errors say by how much. ``wrt``
    (unlike :func:`pdlt.influence`'s, which selects the 1/n parts) selects the responses estimated: the target
    responses always, ``"x"`` adds the position responses (``mean_dx``, ``var_dx``; None without it), which cost
    a forward-mode pass per input coordinate."""
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
    if not isinstance(second, (bool, np.bool_)):
        raise ParameterError(f"second must be True or False, got {second!r}", "second")
    second = bool(second)
    with_x = "x" in check_subset(wrt, "wrt", ("y", "x"))
    n0 = n0 if with_x else 0
    if second and nL != 1:
        raise ParameterError(f"second derivatives are estimated for one output (n_L = 1), got n_L = {nL}", "second")
    run = _chunk_function(_shape(net), nA, with_x)
    base, x = jax.random.key(seed), jnp.asarray(np.concatenate([xa, xb]))
    C_W, C_b = jnp.asarray(net.C_W), jnp.asarray(net.C_b)

    sums, shift = None, -np.inf
    w_sum = w2_sum = 0.0
    for start in range(0, n_samples, chunk):
        size = min(chunk, n_samples - start)
        G, R = run(jnp.arange(start, start + chunk), base, x, C_W, C_b)
        G = np.asarray(G)[:size]
        R = None if R is None else np.asarray(R)[:size]
        with np.errstate(all="ignore"):
            cond = condition(G, y, nA, s2)
            per = _per_network(cond, R, y, nA, second)
        lw = cond.logw
        singular = not_invertible(cond.eigenvalues)
        if np.any(singular):
            raise singular_training_kernel(f"in {int(singular.sum())} sampled networks of the chunk starting at "
                                           f"network {start}; n_train = {nA}", s2)
        if not (np.all(np.isfinite(lw)) and np.all(np.isfinite(per))):
            raise DivergentFlowError(f"a sampled network's metric or its input derivatives overflowed (chunk starting "
                                     f"at network {start}): lower C_W, C_b, the depth or the inputs' scale")
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
    ess = w_sum**2 / w2_sum
    if ess < min_ess:
        warnings.warn(f"effective sample size {ess:.0f} < {min_ess:.0f} of {n_samples} networks: the influence "
                      "estimate is unreliable; use more networks, smaller targets or a larger noise_var", PdltWarning,
                      stacklevel=2)
    counts = np.bincount(np.arange(n_samples) % batches, minlength=batches)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = jackknife(lambda M: _estimates(M, nB, nL, nA, n0, second), counts, sums)
    mean, err = np.asarray(est.mean), np.asarray(est.stderr)
    if not np.all(np.isfinite(err)):
        raise ParameterError(f"the importance weights sit on too few networks to estimate an error (effective sample "
                             f"size {ess:.3g} of {n_samples}): raise n_samples, or use a larger noise_var or smaller "
                             "targets", "n_samples")
    shapes = [("mean", (nB, nL)), ("var", (nB, nL)), ("mean_dy", (nB, nL, nA, nL)), ("var_dy", (nB, nL, nA, nL))]
    shapes += [("mean_dx", (nB, nL, nA, n0)), ("var_dx", (nB, nL, nA, n0))] if with_x else []
    shapes += [("mean_dyy", (nB, nA, nA))] if second else []
    out, at = {}, 0
    for name, shp in shapes:
        size = int(np.prod(shp))
        out[name] = Estimate(mean[at:at + size].reshape(shp), err[at:at + size].reshape(shp), name=name)
        at += size
    if not with_x:
        out["mean_dx"] = out["var_dx"] = None
    return InfluenceMC(ess=float(ess), n_samples=n_samples, **out)

r"""Exact posterior of finite networks by importance reweighting of prior samples.

Conditional on the last hidden layer the outputs are exactly Gaussian, iid over output neurons:
``z_i | G^ ~ N(0, G^)`` with the stochastic metric ``G^ = C_b + (C_W/n_{L-1}) sigma(z^(L-1))^T sigma(z^(L-1))`` of the
training (A) and test (B) inputs (derivations/README.md section 2). So the posterior given ``y`` at the training inputs
(Gaussian likelihood, noise variance ``s^2``; ``s^2 = 0`` is exact conditioning) is, without approximation,

    E[z_{i;B} | y] = E[w m_i] / E[w],   w = prod_i N(y_i; 0, G^_AA + s^2 1),   m_i = G^_BA (G^_AA + s^2 1)^{-1} y_i,

the expectations over G^ sampled with the markov sampler (conditioning analytically on the last hidden layer
removes the output noise from the estimator: Rao-Blackwellization). The self-normalized ratio's O(1/N) bias is
removed and its standard error estimated by the weighted delete-one-batch jackknife of
:func:`pdlt.montecarlo.estimators.jackknife`; the effective sample size
``ESS = (sum w)^2 / sum w^2`` says how many prior samples effectively carry the posterior, with a warning when
it is small (large targets or small noise make the weights degenerate).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..architecture import (MLP, check_target_scale, inputs_log10_scale, not_invertible, posterior_problem,
                            singular_training_kernel)
from ..conditioning import condition
from ..errors import DivergentFlowError, ParameterError, PdltWarning
from ..layers import metric
from ..validation import check_int, check_real, check_seed
from .estimators import Estimate, jackknife
from .._x64 import float64

__all__ = ["sample_metric", "PosteriorMC", "posterior_mc"]


#: the most bytes of sampled metrics held at once by the reweighted posterior
MAX_METRIC_BYTES = 4e9


@float64
def sample_metric(net: MLP, x, n_samples: int, seed: int = 0, chunk: int = 4096) -> np.ndarray:
    """``G^(L)`` of ``n_samples`` independent networks on inputs ``x`` ``(d, n_0)``: ``(n_samples, d, d)`` float64.

    Markov sampler (exact): rows of ``z^(1)`` iid ``N(0, K^(1))``, then ``z^(l+1)`` rows iid ``N(0, G^(l+1))``; the
    last layer's metric is returned instead of sampled outputs. Network s uses ``fold_in(key(seed), s)``.
    """
    import jax
    import jax.numpy as jnp

    from .activations_jax import jax_activation
    from .samplers import psd_sqrt

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP (activation, widths, C_W, C_b), got {type(net).__name__}", "net")
    if net.residual:
        raise ParameterError("net has residual steps (gamma != 0 or xi != 1): the outputs are not a zero-mean Gaussian "
                             "given the last layer's metric, so the metric alone does not describe them; use gamma = 0, "
                             "xi = 1", "net")
    if net.L < 2:
        raise ParameterError(f"net: the metric of the last hidden layer needs at least one hidden layer (L >= 2); got "
                             f"widths = {net.widths}", "net")
    x = net.inputs(x)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    held = 8.0 * n_samples * x.shape[0] ** 2
    if held > MAX_METRIC_BYTES:
        raise ParameterError(f"n_samples = {n_samples} metrics of {x.shape[0]} inputs would hold ~{held:.2g} bytes "
                             f"(limit {MAX_METRIC_BYTES:.0e}: the reweighting needs every network's metric at once); "
                             "use fewer networks, or pdlt.sample for the prior's statistics", "n_samples")
    seed = check_seed(seed)
    chunk = check_int(chunk, "chunk", minimum=1)
    sigma = jax_activation(net.activation)
    widths, steps = net.widths, net.steps
    C_W, C_b = jnp.asarray(net.C_W), jnp.asarray(net.C_b)
    xj = jnp.asarray(x)

    def one(key):
        def eps(l):
            return jax.random.normal(jax.random.fold_in(key, l), (x.shape[0], widths[l]), jnp.float64)

        z = steps[0].markov(jnp, psd_sqrt, xj, C_W[0], C_b[0], eps(1))
        for l in range(1, net.L - 1):
            z = steps[l].markov(jnp, psd_sqrt, z, sigma(z), C_W[l], C_b[l], eps(l + 1))
        return metric(sigma(z), C_W[-1], C_b[-1])

    base = jax.random.key(seed)
    f = jax.jit(jax.vmap(lambda s: one(jax.random.fold_in(base, s))))
    out = []
    for start in range(0, n_samples, chunk):
        idx = jnp.arange(start, start + chunk)
        out.append(np.asarray(f(idx))[: n_samples - start])
    G = np.concatenate(out)
    if not np.all(np.isfinite(G)):
        # inputs whose first-layer kernel is already far out (C_W max|x|^2 beyond ~1e150) are the cause, not the flow
        scale = inputs_log10_scale(x, *net.hyper(1))
        raise DivergentFlowError("the sampled metric overflowed: " + (
            f"the inputs are too large (C_b + C_W max|x|^2 ~ 1e{scale:.0f}); scale the inputs x (training and test) "
            "down" if scale >= 150.0 else "a diverging flow; lower C_W / C_b or the depth"))
    return G


@dataclass(frozen=True)
class PosteriorMC:
    """Reweighted Monte Carlo posterior: ``mean`` (:class:`Estimate`, ``(n_B, n_L)``), ``cov`` (:class:`Estimate`,
    ``(n_L, n_B, n_L, n_B)``: ``E[delta_ij S + m_i m_j^T | y] - mean mean^T``), the effective sample size ``ess``
    and the number of prior samples ``n_samples``."""

    mean: Estimate
    cov: Estimate
    ess: float
    n_samples: int


def _weights_and_means(G, nA, y, noise_var):
    """log-weights (N,), conditional means (N, n_B, n_L) and covariances S (N, n_B, n_B) for metric samples
    G (N, d, d). A sampled training block ``G^_AA + s^2 1`` that is singular or conditioned beyond ``COND_MAX``
    (possible at noise_var = 0 when n_{L-1} < n_A, or for ReLU units that are all off) raises the shared
    :func:`~pdlt.architecture.singular_training_kernel` error instead of a LinAlgError or round-off weights. The
    algebra is :func:`pdlt.conditioning.condition`, shared with the theory and the influence Monte Carlo."""
    cond = condition(G, y, nA, noise_var)
    bad = not_invertible(cond.eigenvalues)
    if np.any(bad):
        raise singular_training_kernel(f"in {int(bad.sum())} of {G.shape[0]} sampled networks; n_train = {nA}",
                                       noise_var)
    return cond.logw, cond.mean, cond.cov


@float64
def posterior_mc(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0, *, n_samples: int = 100_000,
                 seed: int = 0, batches: int = 32, min_ess: float = 1000.0) -> PosteriorMC:
    """Posterior mean of the outputs at ``x_test`` given ``y_train`` by exact reweighting of sampled networks
    (module docstring). Shapes as :func:`pdlt.posterior`. ``n_samples`` prior networks split into ``batches``
    (2 <= batches <= n_samples) for the jackknife. Warns if the effective sample size is below ``min_ess``.

    Arguments are validated as in :func:`pdlt.posterior` (:func:`pdlt.architecture.posterior_problem`); bad ones
    raise :class:`~pdlt.errors.ParameterError` naming the argument."""
    prob = posterior_problem(net, x_train, y_train, x_test, noise_var)
    check_target_scale(prob.y_train)
    xa, xb, y, noise_var = prob.x_train, prob.x_test, prob.y_train, prob.noise_var
    seed = check_seed(seed)
    batches = check_int(batches, "batches", minimum=2)  # a jackknife error needs at least two batches
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    if n_samples < batches:
        raise ParameterError(f"n_samples must be >= batches = {batches} (every jackknife batch needs a network), got "
                             f"{n_samples}", "n_samples")
    min_ess = check_real(min_ess, "min_ess", minimum=0.0)
    nA = xa.shape[0]
    G = sample_metric(net, np.concatenate([xa, xb]), n_samples, seed)
    lw, m, S = _weights_and_means(G, nA, y, noise_var)
    w = np.exp(lw - lw.max())
    ess = float(w.sum() ** 2 / np.sum(w * w))
    if ess < min_ess:
        warnings.warn(f"effective sample size {ess:.0f} < {min_ess:.0f} of {n_samples} prior samples: the posterior "
                      "estimate is unreliable; use more samples, smaller targets or a larger noise_var", PdltWarning,
                      stacklevel=2)
    nB, nL = m.shape[1:]
    second = np.einsum("ij,sab->siajb", np.eye(nL), S) + np.einsum("sai,sbj->siajb", m, m)
    # per-sample vector (w, w m, w second), summed per batch; the ratio's jackknife is the engine's weighted
    # delete-a-group jackknife (exact for unequal batches, removes the O(1/N) bias of the ratio)
    per = np.concatenate([w[:, None], w[:, None] * m.reshape(n_samples, -1), w[:, None] * second.reshape(n_samples, -1)], 1)
    b = np.arange(n_samples) % batches
    sums = np.zeros((batches, per.shape[1]))
    np.add.at(sums, b, per)
    counts = np.bincount(b, minlength=batches)
    k = nB * nL

    def mean_of(means):
        return means[:, 1:1 + k] / means[:, :1]

    def cov_of(means):
        mu = mean_of(means).reshape(-1, nB, nL)
        return (means[:, 1 + k:] / means[:, :1]).reshape(-1, nL, nB, nL, nB) - np.einsum("kai,kbj->kiajb", mu, mu)

    with np.errstate(invalid="ignore", divide="ignore"):  # a batch holding all the weight: stderr NaN (raised below)
        mean = jackknife(lambda M: mean_of(M).reshape(-1, nB, nL), counts, sums)
        cov = jackknife(cov_of, counts, sums)
    if not (np.all(np.isfinite(mean.stderr)) and np.all(np.isfinite(cov.stderr))):
        # the weights of whole batches underflowed to 0: a leave-one-batch-out ratio is 0/0
        raise ParameterError(f"the importance weights sit on too few networks to estimate an error (effective sample "
                             f"size {ess:.3g} of {n_samples}): raise n_samples, or use a larger noise_var or smaller "
                             "targets", "n_samples")
    return PosteriorMC(mean=mean, cov=cov, ess=ess, n_samples=n_samples)

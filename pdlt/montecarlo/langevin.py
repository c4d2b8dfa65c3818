r"""Langevin dynamics on the weights of finite networks: the posterior as the stationary law of a noisy
gradient flow (the "SGD-like" system), a second, independent check of the finite-width posterior.

In whitened coordinates ``theta = scale * u`` (``W^(l) = sqrt(C_W/n_{l-1}) u_W``, ``b^(l) = sqrt(C_b) u_b``) the
Gaussian prior is ``exp(-|u|^2/2)`` (weight decay) and the tempered Gaussian likelihood of the targets is
``exp(-sum_{i, a in A} (y_{i;a} - z_{i;a}(u))^2 / (2 s^2))``. The Langevin diffusion
``du = -grad U(u) dt + sqrt(2) dB``, ``U = |u|^2/2 + loss/(2 s^2)``, has the posterior ``exp(-U)`` as its stationary
law. Discretized with step ``h`` it is biased by O(h); with ``metropolis=True`` (MALA: a Metropolis-Hastings
accept/reject of each Langevin proposal) the chain is exact for any h, which is the default here.

Chains start from independent prior draws (a good start: the posterior is a reweighting of the prior), run
``burn_in`` discarded steps, then average the test outputs over ``n_steps`` further, kept steps (two separate
phases, so any ``burn_in >= 0`` is meaningful, also ``burn_in > n_steps``). Chains are independent, so the
standard error of the posterior mean is the spread of the per-chain averages over ``sqrt(n_chains)`` (at least
two chains).

That error is honest only if the chains forgot their prior starting points. A chain that rejects (almost)
every proposal, or moves too little, averages its prior draw: the result would be the prior, silently. So
after the run: a mean MALA acceptance below :data:`MIN_ACCEPTANCE` raises a
:class:`~pdlt.errors.ParameterError` naming ``step``; an acceptance below :data:`LOW_ACCEPTANCE`, a stuck chain,
or a Gelman-Rubin statistic ``R_hat`` (between-chain spread of the chain means against the within-chain
spread) above :data:`MAX_RHAT` is a ``"mixing"`` caveat, warned and recorded on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import MLP, check_target_scale, posterior_problem
from ..errors import Caveat, ParameterError, emit
from ..validation import check_int, check_real, check_seed
from .estimators import Estimate
from .._x64 import float64

# Below this mean acceptance the chains have made fewer than one move per hundred steps: the estimate is the
# prior's, whatever the error bar says.
MIN_ACCEPTANCE = 0.01
# MALA mixes well near acceptance ~0.57 (Roberts & Rosenthal 1998); below this it is slow enough to warn.
LOW_ACCEPTANCE = 0.1
# The usual Gelman-Rubin threshold: chain means still differ by more than their within-chain spread allows.
MAX_RHAT = 1.1

__all__ = ["LangevinResult", "langevin_posterior", "MIN_ACCEPTANCE", "LOW_ACCEPTANCE", "MAX_RHAT"]


@dataclass(frozen=True)
class LangevinResult:
    """``mean`` (:class:`Estimate`, ``(n_B, n_L)``): posterior mean of the outputs at the test inputs;
    ``acceptance``: mean MALA acceptance rate (1.0 for unadjusted Langevin); ``rhat`` ``(n_B, n_L)``: the
    Gelman-Rubin statistic of the test outputs; ``caveats``: ``"mixing"`` caveats (module docstring)."""

    mean: Estimate
    acceptance: float
    n_chains: int
    n_steps: int
    rhat: np.ndarray | None = None
    caveats: tuple[Caveat, ...] = ()


def _network(net: MLP, sigma):
    """Parameter shapes and the forward map ``(u list, x (d, n_0)) -> z^(L) (d, n_L)`` in whitened coordinates
    (``u`` are the unit normals behind ``W`` and ``b``; each layer is its step's ``weights`` map, residual steps
    included)."""
    import jax.numpy as jnp

    steps, shapes = net.steps, []
    for l in range(1, net.L + 1):
        shapes += [(net.widths[l], net.widths[l - 1]), (net.widths[l],)]

    def forward(u, x):
        z = steps[0].weights(jnp, x, *net.hyper(1), u[0], u[1])
        for l in range(1, net.L):
            z = steps[l].weights(jnp, z, sigma(z), *net.hyper(l + 1), u[2 * l], u[2 * l + 1])
        return z

    return shapes, forward


#: the most bytes of kept outputs a Langevin run holds at once
MAX_HELD_BYTES = 2e9
#: the largest mean square of the whitened parameters (prior N(0, 1)) a chain may reach before it counts as diverged,
#: for targets within 1 of 0 (times max|y|^2 beyond: the likelihood pulls the parameters as far as the targets lie)
MAX_WHITENED_MS = 1e4
#: the longest burn-in (steps run and discarded; compiled as one scan)
MAX_BURN_IN = 10**9


@float64
def langevin_posterior(net: MLP, x_train, y_train, x_test, noise_var: float, *, n_chains: int = 64,
                       n_steps: int = 2000, burn_in: int = 1000, step: float = 0.05, seed: int = 0,
                       metropolis: bool = True) -> LangevinResult:
    """Posterior mean of the outputs at ``x_test`` from Langevin dynamics on the weights (module docstring).

    ``noise_var`` must be > 0 (the likelihood's temperature). Shapes as :func:`pdlt.posterior`, arguments
    validated as there (:func:`pdlt.architecture.posterior_problem`). ``n_chains >= 2`` independent chains, each
    ``burn_in >= 0`` discarded then ``n_steps >= 2`` kept steps of size ``step > 0``.
    """
    import jax
    import jax.numpy as jnp

    from .activations_jax import jax_activation

    prob = posterior_problem(net, x_train, y_train, x_test, noise_var, residual=True)
    check_target_scale(prob.y_train)
    noise_var = prob.noise_var
    if noise_var == 0:
        raise ParameterError("Langevin dynamics needs noise_var > 0 (exact conditioning has no smooth potential)",
                             "noise_var")
    n_chains = check_int(n_chains, "n_chains", minimum=2)  # a standard error needs two independent chains
    n_steps = check_int(n_steps, "n_steps", minimum=2)    # a within-chain variance (R_hat) needs two kept steps
    burn_in = check_int(burn_in, "burn_in", minimum=0)
    # the kept steps' outputs are held at once (n_chains x n_steps x n_B x n_L values, and the scan's own state)
    held = 8.0 * n_chains * n_steps * (np.shape(prob.x_test)[0] * np.shape(prob.y_train)[1] + 2)
    if held > MAX_HELD_BYTES:
        raise ParameterError(f"n_steps = {n_steps} kept steps of {n_chains} chains would hold ~{held:.2g} bytes of "
                             f"outputs (limit {MAX_HELD_BYTES:.0e}); keep fewer steps (the error comes from the "
                             "chains: add chains, not steps, once they mix) or fewer chains", "n_steps")
    if burn_in > MAX_BURN_IN:
        raise ParameterError(f"burn_in must be <= {MAX_BURN_IN}, got {burn_in}", "burn_in")
    step = check_real(step, "step", minimum=0.0, open_minimum=True)
    seed = check_seed(seed)
    if not isinstance(metropolis, (bool, np.bool_)):
        raise ParameterError(f"metropolis must be True or False, got {metropolis!r}", "metropolis")
    metropolis = bool(metropolis)
    xa, xb = prob.x_train, prob.x_test
    y = jnp.asarray(prob.y_train)
    shapes, forward = _network(net, jax_activation(net.activation))
    n_params = float(sum(int(np.prod(s)) for s in shapes))
    xa_j, xb_j = jnp.asarray(xa), jnp.asarray(xb)

    def potential(u):
        r = forward(u, xa_j) - y
        return 0.5 * sum(jnp.sum(p * p) for p in u) + 0.5 * jnp.sum(r * r) / noise_var

    grad = jax.grad(potential)

    def step_fn(carry, key):
        u, U, g = carry
        k1, k2 = jax.random.split(key)
        noise = [jax.random.normal(k, s, jnp.float64) for k, s in zip(jax.random.split(k1, len(shapes)), shapes)]
        prop = [p - step * gp + jnp.sqrt(2 * step) * e for p, gp, e in zip(u, g, noise)]
        Up, gq = potential(prop), grad(prop)
        if metropolis:
            # log q(u | prop) - log q(prop | u) for the Gaussian proposal of mean x - h grad U(x), variance 2h
            fwd = sum(jnp.sum((q - p + step * gp) ** 2) for p, q, gp in zip(u, prop, g))
            bwd = sum(jnp.sum((p - q + step * gq_) ** 2) for p, q, gq_ in zip(u, prop, gq))
            log_a = -(Up - U) - (bwd - fwd) / (4 * step)
            accept = jnp.log(jax.random.uniform(k2)) < log_a
            u = [jnp.where(accept, q, p) for p, q in zip(u, prop)]
            U, g = jnp.where(accept, Up, U), [jnp.where(accept, a, b) for a, b in zip(gq, g)]
            acc = accept.astype(jnp.float64)
        else:
            u, U, g, acc = prop, Up, gq, jnp.float64(1.0)
        msq = sum(jnp.sum(p * p) for p in u) / n_params
        return (u, U, g), (forward(u, xb_j), acc, msq)

    def chain(key):
        k0, k1, k2 = jax.random.split(key, 3)
        u = [jax.random.normal(k, s, jnp.float64) for k, s in zip(jax.random.split(k0, len(shapes)), shapes)]
        carry = (u, potential(u), grad(u))
        if burn_in > 0:
            carry, _ = jax.lax.scan(step_fn, carry, jax.random.split(k1, burn_in))
        _, (zs, acc, msq) = jax.lax.scan(step_fn, carry, jax.random.split(k2, n_steps))
        return zs.mean(0), zs.var(0), acc.mean(), msq.max()

    keys = jax.random.split(jax.random.key(seed), n_chains)
    # (n_chains, n_B, n_L), ..., (n_chains,), (n_chains,)
    means, variances, acc, msq = (np.asarray(a) for a in jax.jit(jax.vmap(chain))(keys))
    # a diverging chain need not have overflowed yet: at step = 0.5 without Metropolis, 50 steps left the outputs at
    # ~1e40 (the posterior mean is -0.07), returned with R_hat ~ 1. The whitened parameters have the prior N(0, 1);
    # the likelihood moves a few directions, not the root mean square of all of them by 100 prior deviations
    # (targets far out, y ~ 1000 prior deviations, legitimately stretch the parameters by about that much)
    reach = MAX_WHITENED_MS * max(1.0, float(np.max(np.abs(prob.y_train))) ** 2)
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(variances)) and np.all(msq <= reach)):
        worst = float(np.max(np.where(np.isfinite(msq), msq, np.inf)))
        raise ParameterError(f"the Langevin chains diverged at step = {step} (the whitened parameters reached a root "
                             f"mean square of {np.sqrt(worst):.3g} prior standard deviations, or non-finite outputs): "
                             "lower step" + ("" if metropolis else " or use metropolis=True"), "step")
    caveats = _mixing_caveats(acc, means, variances, n_steps, step)
    rhat = _rhat(means, variances, n_steps)
    emit(caveats)
    se = means.std(0, ddof=1) / np.sqrt(n_chains)
    return LangevinResult(mean=Estimate(means.mean(0), se), acceptance=float(np.mean(acc)), n_chains=n_chains,
                          n_steps=n_steps, rhat=rhat, caveats=caveats)


def _rhat(means, variances, n_steps: int) -> np.ndarray:
    """Gelman-Rubin ``R_hat = sqrt(((n-1)/n W + B/n) / W)`` per test output, ``(n_B, n_L)``: ``W`` the mean
    within-chain variance, ``B/n`` the variance of the chain means (n = n_steps kept steps per chain). ~1 when the
    chains sample one law; large when each chain stays near its own start. Inf when no chain moved (W = 0)."""
    W = variances.mean(0) * n_steps / max(n_steps - 1, 1)  # unbiased within-chain variance
    B_n = means.var(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(((n_steps - 1) / n_steps * W + B_n) / W)
    return np.where(W > 0, r, np.where(B_n > 0, np.inf, 1.0))


def _mixing_caveats(acc, means, variances, n_steps: int, step: float) -> tuple[Caveat, ...]:
    """Raise :class:`ParameterError` (``step``) when the chains (almost) never moved; else ``"mixing"`` caveats
    for a low acceptance, stuck chains, or R_hat > :data:`MAX_RHAT` (module docstring)."""
    a = float(np.mean(acc))
    if a < MIN_ACCEPTANCE:
        raise ParameterError(f"the Langevin proposals were accepted in {a:.2%} of the steps (step = {step}): the chains "
                             "stayed at their prior draws, so the result would be the prior; lower step", "step")
    out = []
    if a < LOW_ACCEPTANCE:
        out.append(Caveat("mixing", f"Langevin acceptance {a:.1%} < {LOW_ACCEPTANCE:.0%} (step = {step}): the chains mix "
                          "slowly and may still remember their prior starts; lower step"))
    stuck = int(np.sum(acc < MIN_ACCEPTANCE))
    if stuck:
        out.append(Caveat("mixing", f"{stuck} of {acc.size} Langevin chains accepted < {MIN_ACCEPTANCE:.0%} of their "
                          f"proposals (step = {step}) and stayed near their prior draws; lower step"))
    rhat = _rhat(means, variances, n_steps)
    worst = float(np.max(rhat))
    if worst > MAX_RHAT:
        out.append(Caveat("mixing", f"Gelman-Rubin R_hat = {worst:.3g} > {MAX_RHAT} for the test outputs: the chains have "
                          "not forgotten their starts (too few steps for the step size); raise n_steps and burn_in, "
                          "or tune step towards an acceptance of ~0.6", size=worst))
    return tuple(out)

r"""Langevin dynamics on the weights of finite networks: the posterior as the stationary law of a noisy
gradient flow (the "SGD-like" system), a second, independent check of the finite-width posterior.

In whitened coordinates ``theta = scale * u`` (``W^(l) = sqrt(C_W/n_{l-1}) u_W``, ``b^(l) = sqrt(C_b) u_b``) the
Gaussian prior is ``exp(-|u|^2/2)`` (weight decay) and the tempered Gaussian likelihood of the targets is
``exp(-sum_{i, a in A} (y_{i;a} - z_{i;a}(u))^2 / (2 s^2))``. The Langevin diffusion
``du = -grad U(u) dt + sqrt(2) dB``, ``U = |u|^2/2 + loss/(2 s^2)``, has the posterior ``exp(-U)`` as its stationary
law. Discretized with step ``h`` it is biased by O(h); with ``metropolis=True`` (MALA: a Metropolis-Hastings
accept/reject of each Langevin proposal) the chain is exact for any h, which is the default here.

Chains start from independent prior draws (a good start: the posterior is a reweighting of the prior), run
``burn_in`` steps, then average the test outputs over ``n_steps`` steps. Chains are independent, so the
standard error of the posterior mean is the spread of the per-chain averages over ``sqrt(n_chains)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._x64 import enable_x64
from ..architecture import MLP, check_noise_var
from .estimators import Estimate

__all__ = ["LangevinResult", "langevin_posterior"]


@dataclass(frozen=True)
class LangevinResult:
    """``mean`` (:class:`Estimate`, ``(n_B, n_L)``): posterior mean of the outputs at the test inputs;
    ``acceptance``: mean MALA acceptance rate (1.0 for unadjusted Langevin)."""

    mean: Estimate
    acceptance: float
    n_chains: int
    n_steps: int


def _network(net: MLP, sigma):
    """Parameter shapes and the forward map ``(u list, x (d, n_0)) -> z^(L) (d, n_L)`` in whitened coordinates."""
    import jax.numpy as jnp

    shapes, scales = [], []
    for l in range(1, net.L + 1):
        C_W, C_b = net.hyper(l)
        shapes += [(net.widths[l], net.widths[l - 1]), (net.widths[l],)]
        scales += [float(np.sqrt(C_W / net.widths[l - 1])), float(np.sqrt(C_b))]

    def forward(u, x):
        h = x
        for l in range(net.L):
            W, b = scales[2 * l] * u[2 * l], scales[2 * l + 1] * u[2 * l + 1]
            z = h @ W.T + b
            h = sigma(z) if l < net.L - 1 else z
        return h

    return shapes, forward


def langevin_posterior(net: MLP, x_train, y_train, x_test, noise_var: float, *, n_chains: int = 64,
                       n_steps: int = 2000, burn_in: int = 1000, step: float = 0.05, seed: int = 0,
                       metropolis: bool = True) -> LangevinResult:
    """Posterior mean of the outputs at ``x_test`` from Langevin dynamics on the weights (module docstring).

    ``noise_var`` must be > 0 (the likelihood's temperature). Shapes as :func:`pdlt.posterior`.
    """
    import jax
    import jax.numpy as jnp

    from .activations_jax import jax_activation

    enable_x64()
    noise_var = check_noise_var(noise_var)
    if noise_var == 0:
        raise ValueError("Langevin dynamics needs noise_var > 0 (exact conditioning has no smooth potential)")
    xa, xb = net.inputs(x_train), net.inputs(x_test)
    y = jnp.asarray(net.targets(y_train, xa.shape[0]))
    shapes, forward = _network(net, jax_activation(net.activation))
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
        return (u, U, g), (forward(u, xb_j), acc)

    def chain(key):
        k0, k1, k2 = jax.random.split(key, 3)
        u = [jax.random.normal(k, s, jnp.float64) for k, s in zip(jax.random.split(k0, len(shapes)), shapes)]
        carry = (u, potential(u), grad(u))
        carry, _ = jax.lax.scan(step_fn, carry, jax.random.split(k1, burn_in))
        _, (zs, acc) = jax.lax.scan(step_fn, carry, jax.random.split(k2, n_steps))
        return zs.mean(0), acc.mean()

    keys = jax.random.split(jax.random.key(seed), n_chains)
    means, acc = jax.jit(jax.vmap(chain))(keys)
    means = np.asarray(means)  # (n_chains, n_B, n_L)
    if not np.all(np.isfinite(means)):
        raise ValueError("the Langevin chains diverged: lower `step`")
    se = means.std(0, ddof=1) / np.sqrt(n_chains)
    return LangevinResult(mean=Estimate(means.mean(0), se), acceptance=float(np.mean(acc)), n_chains=n_chains,
                          n_steps=n_steps)

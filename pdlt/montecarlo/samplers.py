r"""Exact samplers of finite-width MLP preactivations (JAX, float64, one PRNG key per network).

Conventions (PDLT eqs. 4.3-4.4, formulas.md section 1): ``W^(l) ~ N(0, C_W^(l)/n_{l-1})``,
``b^(l) ~ N(0, C_b^(l))``, ``z^(1) = b + W x``, ``z^(l+1) = b + W sigma(z^(l))``, no activation on ``z^(L)``.
A network's preactivations at layer l are held transposed, ``zt = z^T`` of shape ``(d, n_l)`` (inputs x
neurons), which keeps the neuron axis contiguous for XLA.

Two samplers, identical in distribution:

* ``"weights"`` (the reference): draws every ``W^(l)`` ``(n_l, n_{l-1})`` and ``b^(l)`` and runs the network,
  ``O(n^2 d)`` per layer and ``n^2`` normals;
* ``"markov"``: conditional Gaussianity (exact, formulas.md section 1): given layer l the rows
  ``z^(l+1)_{i;.}`` are iid ``N(0, G^(l+1))`` with the stochastic metric
  ``G^(l+1) = C_b + (C_W/n_l) sigma(z^(l))^T sigma(z^(l))`` (``d x d``), so
  ``z^(l+1)^T = R xi`` with ``xi ~ N(0, 1)`` ``(d, n_{l+1})`` and ``R = G^{1/2}`` the symmetric PSD square root:
  ``O(n d^2 + d^3)`` per layer and ``n d`` normals. Layer 1 is exactly Gaussian with the deterministic
  ``K^(1) = C_b + C_W x x^T / n_0``. ``R`` stays exact when ``G^`` is singular (``d > n``, repeated inputs,
  a zero input without bias): ``d = 1`` ``sqrt``; ``d = 2`` the closed form ``(G + s 1)/t``, ``s = sqrt(det G)``,
  ``t = sqrt(tr G + 2 s)``; ``d >= 3`` ``eigh`` with round-off negative eigenvalues clipped to 0. In every
  case ``R R = G^`` to rounding.

Keys: network s uses ``k_s = fold_in(base, s)`` and layer l ``fold_in(k_s, l)`` (weights: ``W`` from
``fold_in(., 0)``, ``b`` from ``fold_in(., 1)``), so any split of the networks into chunks or devices gives the
same networks.

``network_fn(...)`` returns a function ``(key, x, C_W, C_b) -> (stats (L, F), finite (L,))`` with the
per-network statistics of :func:`pdlt.montecarlo.estimators.layer_stats` for every layer; consecutive
layers of equal shape run in a ``lax.scan`` (compile time independent of depth for uniform widths).
"""

from __future__ import annotations

from typing import Callable

from .estimators import layer_stats

__all__ = ["METHODS", "psd_sqrt", "network_fn", "sample_layers"]

METHODS = ("markov", "weights")


def psd_sqrt(G):
    """Symmetric PSD square root ``R`` of ``G`` ``(..., d, d)`` (``R R = G``), exact for singular ``G``."""
    import jax.numpy as jnp

    d = G.shape[-1]
    if d == 1:
        return jnp.sqrt(jnp.maximum(G, 0.0))
    if d == 2:
        a, b, c = G[..., 0, 0], 0.5 * (G[..., 0, 1] + G[..., 1, 0]), G[..., 1, 1]
        s = jnp.sqrt(jnp.maximum(a * c - b * b, 0.0))
        t = jnp.sqrt(jnp.maximum(a + c + 2.0 * s, 0.0))
        tz = jnp.where(t > 0, t, 1.0)
        r00, r11, r01 = (a + s) / tz, (c + s) / tz, b / tz
        R = jnp.stack([jnp.stack([r00, r01], -1), jnp.stack([r01, r11], -1)], -2)
        return jnp.where((t > 0)[..., None, None], R, 0.0)
    w, U = jnp.linalg.eigh(0.5 * (G + jnp.swapaxes(G, -1, -2)))
    return (U * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(U, -1, -2)


def _segments(widths):
    """Group the transitions l -> l+1 (l = 1..L-1) into runs of equal shape ``(n_l, n_{l+1})``."""
    runs = []
    for l in range(1, len(widths) - 1):
        shape = (widths[l], widths[l + 1])
        if runs and runs[-1][0] == shape:
            runs[-1][1].append(l)
        else:
            runs.append((shape, [l]))
    return runs


def _layer_functions(method: str, sigma: Callable, widths):
    import jax
    import jax.numpy as jnp

    n0 = widths[0]

    if method == "markov":
        def first(k, x, C_W, C_b):
            K1 = C_b + C_W * (x @ x.T) / n0
            return psd_sqrt(K1) @ jax.random.normal(k, (x.shape[0], widths[1]), jnp.float64)

        def step(zt, k, C_W, C_b, n_next):
            s = sigma(zt)
            G = C_b + C_W * (s @ s.T) / zt.shape[1]
            return psd_sqrt(G) @ jax.random.normal(k, (zt.shape[0], n_next), jnp.float64)
    elif method == "weights":
        def wb(k, n_next, n, C_W, C_b):
            W = jax.random.normal(jax.random.fold_in(k, 0), (n_next, n), jnp.float64) * jnp.sqrt(C_W / n)
            b = jax.random.normal(jax.random.fold_in(k, 1), (n_next,), jnp.float64) * jnp.sqrt(C_b)
            return W, b

        def first(k, x, C_W, C_b):
            W, b = wb(k, widths[1], n0, C_W, C_b)
            return (W @ x.T + b[:, None]).T

        def step(zt, k, C_W, C_b, n_next):
            W, b = wb(k, n_next, zt.shape[1], C_W, C_b)
            return (W @ sigma(zt).T + b[:, None]).T   # W @ sigma(z): the (n', n) x (n, d) product
    else:
        raise ValueError(f"unknown sampling method {method!r}; choose one of {METHODS}")
    return first, step


def network_fn(method: str, sigma: Callable, widths, *, keep_z: bool = False):
    """One network: ``(key, x (d, n_0), C_W (L,), C_b (L,)) -> (stats (L, F), finite (L,) bool)``.

    ``finite[l-1]`` is False if any statistic of layer l is not finite (overflow of a diverging flow).
    With ``keep_z=True`` returns the list of ``z^(l)`` ``(n_l, d)`` instead (tests, small nets).
    Internally ``zt = z^T`` ``(d, n_l)``.
    """
    import jax
    import jax.numpy as jnp

    widths = tuple(int(n) for n in widths)
    first, step = _layer_functions(method, sigma, widths)
    runs = _segments(widths)

    def stats_of(z):
        st = layer_stats(z)
        return st, jnp.all(jnp.isfinite(st))

    def fn(key, x, C_W, C_b):
        z = first(jax.random.fold_in(key, 1), x, C_W[0], C_b[0])
        if keep_z:
            zs = [z.T]
            for l in range(1, len(widths) - 1):
                z = step(z, jax.random.fold_in(key, l + 1), C_W[l], C_b[l], widths[l + 1])
                zs.append(z.T)
            return zs
        st, ok = stats_of(z)
        sts, oks = [st[None]], [ok[None]]
        for (_, n_next), ls in runs:
            if len(ls) == 1:
                l = ls[0]
                z = step(z, jax.random.fold_in(key, l + 1), C_W[l], C_b[l], n_next)
                st, ok = stats_of(z)
                sts.append(st[None])
                oks.append(ok[None])
                continue
            ls_arr = jnp.asarray(ls)

            def body(z, xs, n_next=n_next):
                l, cw, cb = xs
                z = step(z, jax.random.fold_in(key, l + 1), cw, cb, n_next)
                return z, stats_of(z)

            z, (st, ok) = jax.lax.scan(body, z, (ls_arr, C_W[ls_arr], C_b[ls_arr]))
            sts.append(st)
            oks.append(ok)
        return jnp.concatenate(sts, 0), jnp.concatenate(oks, 0)

    return fn


def sample_layers(net, x, n_samples: int, seed: int = 0, method: str = "markov"):
    """All preactivations of ``n_samples`` networks, ``[z^(1), ..., z^(L)]`` each ``(n_samples, n_l, d)``
    (numpy float64). Small nets and tests only: the runner (:func:`pdlt.sample`) streams statistics instead.
    Network s is the same as network s of :func:`pdlt.sample` with the same seed and method.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .._x64 import enable_x64
    from ..architecture import MLP
    from .activations_jax import jax_activation

    enable_x64()
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x = net.inputs(x)
    fn = network_fn(method, jax_activation(net.activation), net.widths, keep_z=True)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(n_samples))
    zs = jax.jit(jax.vmap(fn, in_axes=(0, None, None, None)))(keys, jnp.asarray(x), jnp.asarray(net.C_W), jnp.asarray(net.C_b))
    return [np.asarray(z) for z in zs]

r"""Per-network NTK, dNTK and ddNTK statistics of explicit-weight MLPs (JAX, float64, exact derivatives).

Each network is drawn exactly like the ``"weights"`` sampler (:mod:`pdlt.montecarlo.samplers`: network s from
``k_s = fold_in(key(seed), s)``, layer l from ``fold_in(k_s, l)``, ``W`` from ``fold_in(., 0)``, ``b`` from
``fold_in(., 1)``), so network s of an NTK run is network s of ``pdlt.sample(..., method="weights")``.

**Learning-rate coordinates.** Write the parameters of layer m as ``W = W0 + sqrt(lambda_W^(m)/n_{m-1}) U`` and
``b = b0 + sqrt(lambda_b^(m)) c`` and differentiate at ``U = c = 0``. In these coordinates the learning-rate tensor
is the identity, so with ``v_{i;a} = grad z_{i;a}`` (a pytree of per-layer arrays):

* NTK       ``H_{ij;ab}            = <v_{i;a}, v_{j;b}>``;
* dNTK      ``dH_{i0 i1 i2}        = D^2 z_{i0}[v_{i1}, v_{i2}] = <Hess(z_{i0}) v_{i1}, v_{i2}>``;
* ddNTK-I   ``ddI_{i0 i1 i2 i3}    = D^3 z_{i0}[v_{i1}, v_{i2}, v_{i3}]`` (three nested ``jax.jvp``);
* ddNTK-II  ``ddII_{i1 i2 i3 i4}   = <Hess(z_{i1}) v_{i3}, Hess(z_{i2}) v_{i4}>``;

identical to the definitions with ``Lambda`` in the original coordinates (``Lambda^{1/2}`` factors pair up). The
Hessian-vector products are forward-over-reverse (``jvp`` of the ``vjp`` rows); nothing is differenced.

**Which neurons.** The derivative objects use the neuron pair ``(i, j) = (0, 1)`` of each layer, symmetrized over
``0 <-> 1``. The full NTK of every layer comes from its exact forward equation

    H^(1)_{ij;ab}   = delta_ij (lambda_b + lambda_W x_a.x_b / n_0),
    H^(l+1)_{ij;ab} = delta_ij (lambda_b + (lambda_W/n_l) sum_k s_{k;a} s_{k;b}) + sum_km W_ik s'_{k;a} H^(l)_{km;ab} s'_{m;b} W_jm

(``s = sigma(z^(l))``), so ``A, B, D, F`` average over all ordered pairs ``i != j``; and the mean NTK is
Rao-Blackwellized: ``E[H^(l)_{ii;ab} | layers < l] = lambda_b + (lambda_W/n) sum_j s_{j;a} s_{j;b} +
(C_W/n) sum_j s'_{j;a} s'_{j;b} H^(l-1)_{jj;ab}`` (``n = n_{l-1}``), exact and less noisy than ``H_ii`` itself.

**Per-network statistics of layer l** (one vector; :func:`ntk_layout` names its blocks, ``N_p = n_l (n_l - 1)``):

* the plain :func:`pdlt.montecarlo.estimators.layer_stats` of ``z^(l)`` (``stat_size(d)`` entries);
* ``h_rb[a,b]``  the Rao-Blackwellized mean NTK above;  ``h_diag[a,b] = (1/n_l) sum_i H_ii;ab``;
* ``hh[a,b,c,e]  = (1/N_p) sum_{i!=j} H_ii;ab H_jj;ce``;   ``hzz[a,b,c,e] = (1/N_p) sum_{i!=j} H_ii;ab z_j;c z_j;e``;
* ``bb[a,b,c,e]  = (1/N_p) sum_{i!=j} H_ij;ac H_ij;be``;   ``ff[a,b,c,e]  = (1/N_p) sum_{i!=j} H_ij;ac z_i;b z_j;e``;
* with ``(i, j)`` in ``{(0, 1), (1, 0)}`` averaged:
  ``p[a0..a3] = dH_{ijj;a0a1a2} z_{i;a3}``, ``q = dH_{iij;a0a1a2} z_{j;a3}``, ``r = ddI_{iijj;a0a1a2a3}``,
  ``s[a1..a4] = ddII_{iijj;a1a2a3a4}``, ``t[a,b,c,e] = ddII_{ijij;a e b c}``, ``u[a,b,c,e] = ddII_{ijji;a c e b}``
  (t and u are stored in the index order of T and U).

The estimators (:func:`ntk_observables`) are ``n = n_{l-1}`` times these means, with ``A = n (hh - h h)`` and
``D = n (hzz - h G)`` covariances (jackknifed, :func:`pdlt.montecarlo.estimators.jackknife`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .._x64 import float64
from ..errors import ParameterError
from .estimators import layer_stats, stat_layout, stat_size
from .samplers import ACTIVATION_NAN, NOT_FINITE, OK

__all__ = ["NTK_NAMES", "NTK_EXTRA", "ntk_layout", "ntk_stat_size", "ntk_network_fn", "ntk_observables",
           "ntk_bytes_per_network", "split_ntk_stats"]

#: the O(1/n) NTK tensors an NTK run estimates (shapes (L, d, d) for ntk_mean, (L, d, d, d, d) for the others)
NTK_NAMES = ("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")
#: derived NTK observables (pdlt.observables, family "ntk"), each (L, d)
NTK_EXTRA = ("ntk_variance", "ntk_relative_variance", "dntk_relative")
#: blocks of one layer's NTK statistics after the plain ones: (name, rank)
_BLOCKS = (("h_rb", 2), ("h_diag", 2), ("hh", 4), ("hzz", 4), ("bb", 4), ("ff", 4),
           ("p", 4), ("q", 4), ("r", 4), ("s", 4), ("t", 4), ("u", 4))


@lru_cache(maxsize=None)
def ntk_layout(d: int) -> dict:
    """``{block: slice}`` into one layer's statistics vector: ``"plain"`` (the layer_stats of z) and the blocks of
    the module docstring (each ``d**rank`` entries, C order of its input indices)."""
    out = {"plain": slice(0, stat_size(d))}
    pos = stat_size(d)
    for name, rank in _BLOCKS:
        out[name] = slice(pos, pos + d**rank)
        pos += d**rank
    return out


def ntk_stat_size(d: int) -> int:
    """Entries of one layer's NTK statistics vector: ``stat_size(d) + 2 d^2 + 10 d^4``."""
    return stat_size(d) + 2 * d * d + 10 * d**4


def split_ntk_stats(m, d: int) -> dict:
    """Means (or one network's statistics) ``(..., L, F)`` -> ``{block: (..., L, d, ..., d)}`` (plain: flat)."""
    m = np.asarray(m)
    out = {}
    for name, sl in ntk_layout(d).items():
        block = m[..., sl]
        rank = dict(_BLOCKS).get(name)
        out[name] = block if rank is None else block.reshape(block.shape[:-1] + (d,) * rank)
    return out


def ntk_bytes_per_network(widths, d: int) -> int:
    """Estimated peak working memory of one network: the ``(2d)^2`` Hessian-vector products and their tangents
    over the parameters of the deepest layer, the nested-jvp tangents, and the full NTK ``(d, d, n, n)``."""
    widths = tuple(int(n) for n in widths)
    K = 2 * d
    params = sum(widths[m] * widths[m - 1] + widths[m] for m in range(1, len(widths)))
    nmax = max(widths[1:])
    return 8 * (params * (3 * K * K + 4 * K + 8) + 8 * d * d * nmax * nmax + 64 * d * nmax + 3 * len(widths) * ntk_stat_size(d))


def ntk_network_fn(sigma: Callable, widths, neurons=(0, 1)):
    """One network: ``(key, x (d, n_0), C_W (L,), C_b (L,), rates (2, L)) -> (stats (L, F), status (L,))``.

    ``rates[0]`` are ``lambda_b^(l)``, ``rates[1]`` ``lambda_W^(l)`` (weights are trained with
    ``lambda_W / n_{l-1}``). ``stats[l-1]`` is layer l's vector (module docstring, :func:`ntk_layout`);
    ``status`` as in :func:`pdlt.montecarlo.samplers.network_fn` (OK, NOT_FINITE: a non-finite statistic or
    preactivation, ACTIVATION_NAN; cumulative over layers). Every layer needs two neurons (``n_l >= 2``).
    The derivatives of layer l differentiate the network truncated at l, so the cost grows like ``L^2``.
    """
    import jax
    import jax.numpy as jnp

    widths = tuple(int(n) for n in widths)
    L = len(widths) - 1
    if min(widths[1:]) < 2:
        raise ParameterError(f"an NTK run needs at least two neurons in every layer (the statistics use distinct "
                             f"neurons i != j), got widths={widths}", "widths")
    i0, i1 = neurons

    def dsigma(z):
        return jax.jvp(sigma, (z,), (jnp.ones_like(z),))

    def draw(key, C_W, C_b):
        Ws, bs = [], []
        for m in range(1, L + 1):
            k = jax.random.fold_in(key, m)
            Wn = jax.random.normal(jax.random.fold_in(k, 0), (widths[m], widths[m - 1]), jnp.float64)
            bn = jax.random.normal(jax.random.fold_in(k, 1), (widths[m],), jnp.float64)
            # the same expressions as pdlt.layers.dense.affine, so z is the weights sampler's bit for bit
            Ws.append(Wn * jnp.sqrt(C_W[m - 1] / widths[m - 1]))
            bs.append(bn * jnp.sqrt(C_b[m - 1]))
        return Ws, bs

    def forward(Ws, bs, x, l, delta, scales):
        """``z^(l)T`` ``(d, n_l)`` with the parameters shifted by ``delta`` in learning-rate coordinates."""
        s = x
        for m in range(l):
            dU, dc = delta[m]
            su, sc = scales[m]
            W = Ws[m] + su * dU
            b = bs[m] + sc * dc
            z = (W @ s.T + b[:, None]).T
            if m < l - 1:
                s = sigma(z)
        return z

    def derivative_stats(Ws, bs, x, l, scales, zt):
        """p, q, r, s, t, u of layer l (module docstring), each ``(d, d, d, d)``."""
        d = x.shape[0]
        K = 2 * d
        delta0 = [(jnp.zeros_like(Ws[m]), jnp.zeros_like(bs[m])) for m in range(l)]

        def f(delta):
            return forward(Ws, bs, x, l, delta, scales)

        # rows k = (neuron, input): k = 0..d-1 for neuron i0, d..2d-1 for neuron i1
        cots = jnp.zeros((K, d, widths[l]), jnp.float64)
        rows = [(i0, a) for a in range(d)] + [(i1, a) for a in range(d)]
        for k, (i, a) in enumerate(rows):
            cots = cots.at[k, a, i].set(1.0)

        def grads(delta):
            out, pull = jax.vjp(f, delta)
            # the cotangents take the output's type (inside shard_map it varies over the device axis)
            return jax.vmap(lambda c: pull(c + jnp.zeros_like(out))[0])(cots)       # pytree, leaves (K, ...)

        V = grads(delta0)
        # Hv[m][k] = Hess(z_k) v_m (forward over reverse), leaves (K_m, K_k, ...)
        Hv = jax.vmap(lambda v: jax.jvp(grads, (delta0,), (v,))[1])(V)

        def leaves(t):
            return jax.tree_util.tree_leaves(t)

        # dNTK: dH[k, m, m'] = <Hess(z_k) v_m, v_m'>
        dH = sum(jnp.einsum("mk...,n...->kmn", h, v) for h, v in zip(leaves(Hv), leaves(V)))
        # ddNTK-II Gram: G[m, k, m', k'] = <Hess(z_k) v_m, Hess(z_k') v_m'>
        G = sum(jnp.einsum("mk...,nj...->mknj", h, h) for h in leaves(Hv))

        # ddNTK-I: D^3 z[v_{i;a1}, v_{j;a2}, v_{j;a3}] by three nested jvps (all outputs at once), each level vmapped
        # over its directions, so that the lower-order tangents are computed once and shared by the levels above
        def jvps(g, dirs):
            return lambda delta: jax.vmap(lambda u: jax.jvp(g, (delta,), (u,))[1])(dirs)

        D3 = []
        for ii, jj in ((0, 1), (1, 0)):
            X = jax.tree_util.tree_map(lambda leaf: leaf[ii * d:ii * d + d], V)
            Y = jax.tree_util.tree_map(lambda leaf: leaf[jj * d:jj * d + d], V)
            D3.append(jvps(jvps(jvps(f, X), Y), Y)(delta0))      # [a3, a2, a1, a0, neuron]

        zi = zt[:, i0], zt[:, i1]
        p = q = r = s = t = u = 0.0
        for w, (ii, jj) in enumerate(((0, 1), (1, 0))):
            I = slice(ii * d, ii * d + d)
            J = slice(jj * d, jj * d + d)
            z_i, z_j = zi[ii], zi[jj]
            p = p + jnp.einsum("abc,e->abce", dH[I, J, J], z_i)
            q = q + jnp.einsum("abc,e->abce", dH[I, I, J], z_j)
            r = r + jnp.transpose(D3[w][..., (i0, i1)[ii]], (3, 2, 1, 0))
            # s[a1,a2,a3,a4] = <Hess(z_{i;a1}) v_{j;a3}, Hess(z_{i;a2}) v_{j;a4}> = G[(j,a3),(i,a1),(j,a4),(i,a2)]
            s = s + jnp.transpose(G[J, I, J, I], (1, 3, 0, 2))
            # t[a,b,c,e] = ddII_{ijij;a e b c} = <Hess(z_{i;a}) v_{i;b}, Hess(z_{j;e}) v_{j;c}> = G[(i,b),(i,a),(j,c),(j,e)]
            t = t + jnp.transpose(G[I, I, J, J], (1, 0, 2, 3))
            # u[a,b,c,e] = ddII_{ijji;a c e b} = <Hess(z_{i;a}) v_{j;e}, Hess(z_{j;c}) v_{i;b}> = G[(j,e),(i,a),(i,b),(j,c)]
            u = u + jnp.transpose(G[J, I, I, J], (1, 2, 3, 0))
        return [0.5 * v for v in (p, q, r, s, t, u)]

    def ntk_stats(H, zt, h_rb, n_l):
        """h_rb, h_diag, hh, hzz, bb, ff from the full NTK ``H`` ``(d, d, n, n)`` and ``zt`` ``(d, n)``."""
        Np = n_l * (n_l - 1.0)
        diag = jnp.diagonal(H, axis1=2, axis2=3)                 # (d, d, n)
        zz = zt[:, None, :] * zt[None, :, :]                     # (d, d, n)
        sd = jnp.sum(diag, -1)
        hh = (jnp.einsum("ab,ce->abce", sd, sd) - jnp.einsum("abi,cei->abce", diag, diag)) / Np
        hzz = (jnp.einsum("ab,ce->abce", sd, jnp.sum(zz, -1)) - jnp.einsum("abi,cei->abce", diag, zz)) / Np
        # bb[a,b,c,e] = sum_{i != j} H_ij;ac H_ij;be
        bb = (jnp.einsum("acij,beij->abce", H, H) - jnp.einsum("aci,bei->abce", diag, diag)) / Np
        # ff[a,b,c,e] = sum_{i != j} H_ij;ac z_i;b z_j;e
        ff = (jnp.einsum("acij,bi,ej->abce", H, zt, zt) - jnp.einsum("aci,bei->abce", diag, zz)) / Np
        return [h_rb, jnp.mean(diag, -1), hh, hzz, bb, ff]

    @float64
    def fn(key, x, C_W, C_b, rates):
        Ws, bs = draw(key, C_W, C_b)
        lam_b, lam_W = rates[0], rates[1]
        scales = [(jnp.sqrt(lam_W[m] / widths[m]), jnp.sqrt(lam_b[m])) for m in range(L)]
        eye = jnp.eye(widths[1], dtype=jnp.float64)
        Theta1 = lam_b[0] + lam_W[0] * (x @ x.T) / widths[0]       # (d, d)
        H = Theta1[:, :, None, None] * eye                          # (d, d, n_1, n_1)
        zt = (Ws[0] @ x.T + bs[0][:, None]).T
        h_rb = Theta1
        status = jnp.int32(OK)
        z_prev = None
        out, codes = [], []
        for l in range(1, L + 1):
            if l > 1:
                s, ds = dsigma(z_prev)
                act_nan = jnp.any(jnp.isnan(s))
                n = widths[l - 1]
                zt = (Ws[l - 1] @ s.T + bs[l - 1][:, None]).T
                ss = s @ s.T / n                                        # (d, d)
                diag_prev = jnp.diagonal(H, axis1=2, axis2=3)           # (d, d, n)
                h_rb = lam_b[l - 1] + lam_W[l - 1] * ss + C_W[l - 1] * jnp.einsum("ai,bi,abi->ab", ds, ds, diag_prev) / n
                M = Ws[l - 1][None, :, :] * ds[:, None, :]              # M_a = W diag(s'_a): (d, n_l, n)
                MH = jnp.einsum("aik,abkm->abim", M, H)
                H = (lam_b[l - 1] + lam_W[l - 1] * ss)[:, :, None, None] * jnp.eye(widths[l], dtype=jnp.float64) \
                    + jnp.einsum("abim,bjm->abij", MH, M)
            else:
                act_nan = False
            blocks = ntk_stats(H, zt, h_rb, widths[l]) + derivative_stats(Ws, bs, x, l, scales, zt)
            st = jnp.concatenate([layer_stats(zt)] + [b.reshape(-1) for b in blocks])
            finite = jnp.all(jnp.isfinite(st))
            own = jnp.where(act_nan, ACTIVATION_NAN, jnp.where(finite, OK, NOT_FINITE)).astype(jnp.int32)
            status = jnp.maximum(status, own)
            out.append(st)
            codes.append(status)
            z_prev = zt
        return jnp.stack(out), jnp.stack(codes)

    return fn


def ntk_observables(m, d: int, widths) -> dict:
    """The NTK observables from per-network means ``m`` ``(..., L, F)`` (``widths = (n_0, ..., n_L)``):
    ``ntk_mean`` ``(..., L, d, d)``; ``A..U`` ``(..., L, d, d, d, d)``; ``ntk_variance``, ``ntk_relative_variance``,
    ``dntk_relative`` ``(..., L, d)``. Every tensor is ``n = n_{l-1}`` times its mean (module docstring)."""
    b = split_ntk_stats(np.asarray(m, dtype=np.float64), d)
    pairs, _, pidx, _ = stat_layout(d)
    G = b["plain"][..., :len(pairs)][..., pidx]                              # E[z_a z_b]
    n = np.asarray(widths[:-1], dtype=np.float64).reshape((-1,) + (1,) * 4)
    h = b["h_rb"]
    out = {"ntk_mean": h,
           "A": n * (b["hh"] - h[..., :, :, None, None] * h[..., None, None, :, :]),
           "D": n * (b["hzz"] - h[..., :, :, None, None] * G[..., None, None, :, :])}
    for name, key in (("B", "bb"), ("F", "ff"), ("P", "p"), ("Q", "q"), ("R", "r"), ("S", "s"), ("T", "t"),
                      ("U", "u")):
        out[name] = n * b[key]
    ar = np.arange(d)
    diag = (Ellipsis, ar, ar, ar, ar)
    var = (out["A"][diag] + 2.0 * out["B"][diag]) / n[..., 0, 0, 0]
    h2 = h[..., ar, ar] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ntk_variance"] = var
        out["ntk_relative_variance"] = np.where(h2 > 0, var / np.where(h2 > 0, h2, 1.0), 0.0)
        out["dntk_relative"] = np.where(h2 > 0, (out["P"][diag] + 2.0 * out["Q"][diag]) / n[..., 0, 0, 0]
                                        / np.where(h2 > 0, h2, 1.0), 0.0)
    return out


def ntk_statistics(counts, sums, d: int, widths) -> dict:
    """``{name: Estimate}`` for :data:`NTK_NAMES` and :data:`NTK_EXTRA` from batch ``counts`` ``(B,)`` and
    ``sums`` ``(B, L, F)``, jackknifed (:func:`pdlt.montecarlo.estimators.jackknife`; ``ntk_mean`` is linear)."""
    from .estimators import Estimate, jackknife

    L = len(widths) - 1
    layers = np.arange(1, L + 1)
    out = {}
    for name in NTK_NAMES + NTK_EXTRA:
        e = jackknife(lambda m, name=name: ntk_observables(m, d, widths)[name], counts, sums,
                      linear=(name in ("ntk_mean", "B", "F", "P", "Q", "R", "S", "T", "U")))
        shp = (L,) + (1,) * (e.scaled_mean.ndim - 1)
        out[name] = Estimate(e.scaled_mean, e.scaled_stderr, None, layers.reshape(shp), name, "")
    return out


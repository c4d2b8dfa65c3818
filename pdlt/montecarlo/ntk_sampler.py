r"""Per-network NTK, dNTK and ddNTK statistics of explicit-weight MLPs (JAX, float64, exact derivatives).

Each network is drawn exactly like the ``"weights"`` sampler (:mod:`pdlt.montecarlo.samplers`: network s from
``k_s = fold_in(key(seed), s)``, layer l from ``fold_in(k_s, l)``, ``W`` from ``fold_in(., 0)``, ``b`` from
``fold_in(., 1)``), so network s of an NTK run is network s of ``pdlt.sample(..., method="weights")``.

**Learning-rate coordinates.** Write the parameters of layer m as ``W = W0 + sqrt(lambda_W^(m)/n_{m-1}) U`` and
``b = b0 + sqrt(lambda_b^(m)) c`` and differentiate at ``U = c = 0``. In these coordinates the learning-rate tensor
is the identity, so with ``v_{i;a} = grad z_{i;a}`` (a pytree of per-layer arrays):

* NTK       ``H_{ij;ab}            = <v_{i;a}, v_{j;b}>``;
* dNTK      ``dH_{i0 i1 i2}        = D^2 z_{i0}[v_{i1}, v_{i2}] = <Hess(z_{i0}) v_{i1}, v_{i2}>``;
* ddNTK-I   ``ddI_{i0 i1 i2 i3}    = D^3 z_{i0}[v_{i1}, v_{i2}, v_{i3}]``;
* ddNTK-II  ``ddII_{i1 i2 i3 i4}   = <Hess(z_{i1}) v_{i3}, Hess(z_{i2}) v_{i4}>``;

identical to the definitions with ``Lambda`` in the original coordinates (``Lambda^{1/2}`` factors pair up).

**How they are computed** (exact; nothing is differenced). The layer-m part of ``v_{i;a}`` is rank one,
``W: sqrt(lambda_W/n_{m-1}) g_{i;a} (x) sigma(z^(m-1)_a)``, ``b: sqrt(lambda_b) g_{i;a}``, with ``g_{i;a}`` the
backpropagated ``d z^(l)_{i;a} / d z^(m)_a``. Directional derivatives along these directions follow hand-written
jet recursions of ``z^(m) = W^(m) sigma(z^(m-1)) + b^(m)``: forward tangents of orders 1, 2, 3 (the third order
gives ddNTK-I) and the forward-over-reverse tangent of ``g`` (the Hessian-vector products). A Hessian-vector
product keeps the form ``g' (x) s + g (x) s'`` per layer, so every parameter-space inner product (dNTK, ddNTK-II)
is a sum of products of ``n_m``-vector dot products and no ``(n_m, n_{m-1})`` array beyond the weights is formed.
The derivatives of sigma come from nested ``jax.jvp`` (pointwise at a kink). The tests compare every block with
contractions of the full-parameter ``jax.hessian`` and ``jacfwd(jacfwd(jacrev))`` tensors.

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
  (t and u are stored in the index order of T and U);
* ``h_sq[a] = (1/n_l) sum_i H_ii;aa^2`` (one neuron's second moment).

The estimators (:func:`ntk_observables`) are ``n = n_{l-1}`` times these means, with ``A = n (hh - h h)`` and
``D = n (hzz - h G)`` covariances (jackknifed, :func:`pdlt.montecarlo.estimators.jackknife`); ``ntk_variance =
h_sq - h_diag^2`` is one neuron's variance measured directly, so that its theory ``(A + 2B)/n`` is a test of the
decomposition, not a restatement of it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .._x64 import float64
from ..errors import ParameterError
from .estimators import layer_stats, stat_layout, stat_size
from .samplers import ACTIVATION_NAN, NOT_FINITE, OK, explicit_weights

__all__ = ["NTK_NAMES", "NTK_EXTRA", "ntk_layout", "ntk_stat_size", "ntk_network_fn", "ntk_observables",
           "ntk_bytes_per_network", "split_ntk_stats"]

#: the O(1/n) NTK tensors an NTK run estimates (shapes (L, d, d) for ntk_mean, (L, d, d, d, d) for the others)
NTK_NAMES = ("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")
#: derived NTK observables (pdlt.observables, family "ntk"), each (L, d)
NTK_EXTRA = ("ntk_variance", "ntk_relative_variance", "dntk_relative")
#: blocks of one layer's NTK statistics after the plain ones: (name, rank)
_BLOCKS = (("h_rb", 2), ("h_diag", 2), ("hh", 4), ("hzz", 4), ("bb", 4), ("ff", 4),
           ("p", 4), ("q", 4), ("r", 4), ("s", 4), ("t", 4), ("u", 4), ("h_sq", 1))


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
    """Entries of one layer's NTK statistics vector: ``stat_size(d) + 2 d^2 + 10 d^4 + d``."""
    return stat_size(d) + 2 * d * d + 10 * d**4 + d


def split_ntk_stats(m, d: int) -> dict:
    """Means (or one network's statistics) ``(..., L, F)`` -> ``{block: (..., L, d, ..., d)}`` (plain: flat)."""
    m = np.asarray(m)
    out = {}
    for name, sl in ntk_layout(d).items():
        block = m[..., sl]
        rank = dict(_BLOCKS).get(name)
        out[name] = block if rank is None else block.reshape(block.shape[:-1] + (d,) * rank)
    return out


def ntk_bytes_per_network(widths, d: int, residual: bool = False) -> int:
    """Estimated peak working memory of one network: the drawn parameters (with the normals' workspace), the
    ``d (d + 1) / 2`` NTK blocks ``(n, n)`` and their products, and the jets of one layer's derivatives (``d``
    inputs times ``2d + 4d^2 + 2d^3`` directions and their products, per layer below it). Compiled on CPU this
    bounds XLA's own count by a factor 1.3 to 1.9 (n = 32..256, L = 3..8, d = 1..3). Residual networks
    (``residual=True``, the autodiff derivatives) add parameter-sized tangents: ``(2d)^2`` Hessian-vector products and
    the directions of the ``(2d)^2`` pairs and ``2 d^3`` triples, with their tapes (about 5 per pair, 3 per triple)."""
    widths = tuple(int(n) for n in widths)
    K = 2 * d
    L = len(widths) - 1
    params = sum(widths[m] * widths[m - 1] + widths[m] for m in range(1, len(widths)))
    nmax = max(widths[1:])
    jets = 4 * d * (K + K * K + 2 * d**3) * nmax * L
    tangents = (5 * K * K + 6 * d**3 + K) * params if residual else 0
    return 8 * (3 * params + 2 * d * (d + 1) * nmax * nmax + jets + tangents + 3 * len(widths) * ntk_stat_size(d))


def ntk_network_fn(sigma: Callable, widths, neurons=(0, 1), shortcuts=None):
    """One network: ``(key, x (d, n_0), C_W (L,), C_b (L,), rates (2, L)) -> (stats (L, F), status (L,))``.

    ``shortcuts = (gamma, xi)`` per layer (static) makes layers residual, ``z^(l) = gamma z^(l-1) + xi (b + W
    sigma(z^(l-1)))``: the full NTK then follows ``H' = M_a H M_b^T + xi^2 kappa`` with ``M_a = gamma + xi W
    diag(s'_a)`` (and ``h_rb`` gains ``gamma^2 H_ii``), and the derivative objects of every layer come from nested
    ``jax.jvp`` and ``jax.grad`` of the network function in learning-rate coordinates (the inner
    ``autodiff_derivatives``) instead of the dense jets.

    ``rates[0]`` are ``lambda_b^(l)``, ``rates[1]`` ``lambda_W^(l)`` (weights are trained with
    ``lambda_W / n_{l-1}``). ``stats[l-1]`` is layer l's vector (module docstring, :func:`ntk_layout`);
    ``status`` as in :func:`pdlt.montecarlo.samplers.network_fn` (OK, NOT_FINITE: a non-finite statistic or
    preactivation, ACTIVATION_NAN; cumulative over layers). Every layer needs two neurons (``n_l >= 2``).
    Per network the full NTK costs ``~ 2 d^2 n^3`` per layer, the derivatives of layer l (their directions live
    on the layers below l) ``~ 2 l d (2d + 4d^2 + 2d^3) n^2``: the NTK dominates unless L is large.
    """
    import jax
    import jax.numpy as jnp

    widths = tuple(int(n) for n in widths)
    L = len(widths) - 1
    if min(widths[1:]) < 2:
        raise ParameterError(f"an NTK run needs at least two neurons in every layer (the statistics use distinct "
                             f"neurons i != j), got widths={widths}", "widths")
    i0, i1 = neurons
    gam, xis = shortcuts if shortcuts is not None else ((0.0,) * L, (1.0,) * L)
    gam, xis = tuple(float(v) for v in gam), tuple(float(v) for v in xis)
    plain = all(g == 0.0 for g in gam) and all(v == 1.0 for v in xis)
    # layer m (1-based) is a residual step unless gamma = 0 and xi = 1 (layer 1 never is)
    res_step = [None] + [m > 1 and (gam[m - 1] != 0.0 or xis[m - 1] != 1.0) for m in range(1, L + 1)]

    def sigma_jet(z):
        """sigma and its first three derivatives at ``z``, elementwise (nested jvps: at a kink the pointwise 0)."""
        one = jnp.ones_like(z)

        def d1f(u):
            return jax.jvp(sigma, (u,), (one,))[1]

        def d2f(u):
            return jax.jvp(d1f, (u,), (one,))[1]

        s, d1 = jax.jvp(sigma, (z,), (one,))
        return s, d1, jax.jvp(d1f, (z,), (one,))[1], jax.jvp(d2f, (z,), (one,))[1]

    def draw(key, C_W, C_b):
        return explicit_weights(key, widths, C_W, C_b)

    def derivative_stats(l, W, S, D1, D2, D3, aW, kap, zt):
        """p, q, r, s, t, u of layer ``l >= 2`` (module docstring), each ``(d, d, d, d)``, from hand-written jets.

        Lists are indexed by layer m (entry 0 unused except ``S[0] = x``): ``W[m]`` ``(n_m, n_{m-1})``, ``S[m]``
        ``(d, n_m)`` = sigma(z^(m)) and ``D1..D3[m]`` its derivatives (m < l), ``aW[m] = lambda_W/n_{m-1}``,
        ``kap[m][a,b] = lambda_b + aW[m] S[m-1]_a . S[m-1]_b``. Rows ``k = (i, a)``: ``k = 0..d-1`` neuron i0,
        ``d..2d-1`` neuron i1, input ``a = k mod d``.

        Every derivative object is low rank per layer: ``v_k = grad z^(l)_k`` has layer-m parts
        ``W: sqrt(aW) g_k (x) S[m-1]_a``, ``b: sqrt(lambda_b) g_k`` with the backpropagated ``g_k`` ``(n_m,)``,
        so contractions over parameters are products of ``n_m``-vector dot products (never an ``n^2`` array), and
        the nested directional derivatives are the exact forward (``t1, t2, t3``) and backward (``gd``) tangent
        recursions of ``z^(m) = W^(m) S[m-1] + b^(m)`` with parameter tangent ``dW_k = aW g_k (x) S[m-1]_a``,
        ``db_k = lambda_b g_k`` (physical units: the two learning-rate square roots pair up).
        """
        dd = zt.shape[0]
        Kr = 2 * dd
        A = np.arange(Kr) % dd                                     # input of row k
        rows = np.array([i0] * dd + [i1] * dd)                     # neuron of row k
        # triples (k1, k2, k3) = ((i, a1), (j, a2), (j, a3)) for (i, j) = (i0, i1), (i1, i0): flattened (2, d, d, d)
        ii, a1, a2, a3 = (g.ravel() for g in np.meshgrid(np.arange(2), *(np.arange(dd),) * 3, indexing="ij"))
        K1, K2, K3 = ii * dd + a1, (1 - ii) * dd + a2, (1 - ii) * dd + a3
        own = np.array([i0, i1])[ii]                               # the neuron i of triple tau

        # backward: g[m][k] = d z^(l)_k / d z^(m)_{a(k)}  (K, n_m)
        g = {l: jax.nn.one_hot(rows, widths[l], dtype=jnp.float64)}
        r = {l - 1: W[l][rows]}
        for m in range(l - 1, 0, -1):
            if m < l - 1:
                r[m] = g[m + 1] @ W[m + 1]
            g[m] = D1[m][A] * r[m]

        # forward jets along the directions v_k at every input c, layers m < l:
        # t1[m] (c, k, n), t2[m] (c, k1, k2, n), t3[m] (c, tau, n); sd* are the matching tangents of S[m]
        t1, t2, t3, sd1, sd2, sd3 = {}, {}, {}, {}, {}, {}
        for m in range(1, l):
            src = kap[m][A].T[:, :, None] * g[m][None]               # dW_k S_c + db_k
            if m == 1:
                t1[m] = src
            else:
                lin = jnp.concatenate([sd1[m - 1], sd2[m - 1].reshape(dd, Kr * Kr, -1), sd3[m - 1]], axis=1) @ W[m].T
                t1[m] = src + lin[:, :Kr]
                # dW_k1 sd1_c[k2] + dW_k2 sd1_c[k1] with dW_k v = aW g_k (S_a(k) . v)
                P1 = jnp.einsum("kn,cjn->ckj", S[m - 1][A], sd1[m - 1])
                t2[m] = lin[:, Kr:Kr + Kr * Kr].reshape(dd, Kr, Kr, -1) + aW[m] * (
                    P1[..., None] * g[m][None, :, None] + jnp.swapaxes(P1, 1, 2)[..., None] * g[m][None, None])
                P2 = jnp.einsum("kn,cijn->ckij", S[m - 1][A], sd2[m - 1])        # S_a(k) . sd2_c[k1, k2]
                t3[m] = lin[:, Kr + Kr * Kr:] + aW[m] * (
                    P2[:, K1, K2, K3][..., None] * g[m][K1][None] + P2[:, K2, K1, K3][..., None] * g[m][K2][None]
                    + P2[:, K3, K1, K2][..., None] * g[m][K3][None])
            e1, e2, e3 = D1[m][:, None], D2[m][:, None], D3[m][:, None]     # (c, 1, n)
            a, b_, c_ = t1[m][:, K1], t1[m][:, K2], t1[m][:, K3]
            sd1[m] = e1 * t1[m]
            if m == 1:
                sd2[m] = D2[m][:, None, None] * t1[m][:, :, None] * t1[m][:, None]
                sd3[m] = e3 * a * b_ * c_
            else:
                sd2[m] = D2[m][:, None, None] * t1[m][:, :, None] * t1[m][:, None] + D1[m][:, None, None] * t2[m]
                sd3[m] = (e3 * a * b_ * c_ + e2 * (t2[m][:, K1, K2] * c_ + t2[m][:, K1, K3] * b_
                                                   + t2[m][:, K2, K3] * a) + e1 * t3[m])
        # third order at layer l, only at the neuron of each triple: ddI[c, tau] = D^3 z^(l)_{i(tau);c}[v_k1,v_k2,v_k3]
        P2 = jnp.einsum("kn,cijn->ckij", S[l - 1][A], sd2[l - 1])
        gl = g[l][:, own]                                          # (K, tau): g^(l)_k at neuron i(tau)
        ddI = (jnp.einsum("ctn,tn->ct", sd3[l - 1], W[l][own]) + aW[l] * (
            P2[:, K1, K2, K3] * gl[K1, np.arange(len(own))] + P2[:, K2, K1, K3] * gl[K2, np.arange(len(own))]
            + P2[:, K3, K1, K2] * gl[K3, np.arange(len(own))]))

        # backward tangents gd[m][k, k'] = D_{v_k'} g[m][k]  (K, K, n_m); gd[l] = 0
        dH = jnp.zeros((Kr, Kr, Kr))
        G = jnp.zeros((Kr, Kr, Kr, Kr))                      # G[k1, m1, k2, m2] = <Hess z_k1 v_m1, Hess z_k2 v_m2>

        def kA(kp):                                                # (d, d) -> (K, K) by the rows' inputs
            return kp[A][:, A]

        gd = None                                                  # gd[m + 1] while layer m is done
        for m in range(l, 0, -1):
            if m == l:
                gd = jnp.zeros((Kr, Kr, widths[l]))
            else:
                rd = aW[m + 1] * (g[m + 1] @ g[m + 1].T)[:, :, None] * S[m][A][None]       # dW_k'^T g_k
                if m + 1 < l:
                    rd = rd + gd @ W[m + 1]
                gd = D2[m][A][:, None] * t1[m][A] * r[m][:, None] + D1[m][A][:, None] * rd
            Ggg = g[m] @ g[m].T                                    # (K, K)
            Gdg = jnp.einsum("kjn,qn->kjq", gd, g[m])              # gd_k[k'] . g_k''
            Gdd = jnp.einsum("kjn,qpn->kjqp", gd, gd)
            dH = dH + Gdg * kA(kap[m])[:, None, :]
            G = G + kA(kap[m])[:, None, :, None] * Gdd
            if m > 1:                                              # S[0] = x does not move
                sd = sd1[m - 1][A, :]                              # (k, k', n): tangent of S[m-1]_a(k) along v_k'
                Sds = jnp.einsum("kjn,qn->kjq", sd, S[m - 1][A])   # sd_k[k'] . S_a(k'')
                Sdd = jnp.einsum("kjn,qpn->kjqp", sd, sd)
                dH = dH + aW[m] * Ggg[:, None, :] * Sds
                G = G + aW[m] * (jnp.einsum("kjq,qpk->kjqp", Gdg, Sds) + jnp.einsum("qpk,kjq->kjqp", Gdg, Sds)
                                 + Ggg[:, None, :, None] * Sdd)
        G = jnp.transpose(G, (1, 0, 3, 2))                         # G[m1, k1, m2, k2]
        return assemble(dH, ddI, G, zt)

    def assemble(dH, ddI, G, zt):
        """p, q, r, s, t, u from ``dH[k0, k1, k2] = D^2 z_k0[v_k1, v_k2]`` ``(K, K, K)``, ``ddI[c, tau]`` (the
        triples of :func:`derivative_stats`), ``G[m1, k1, m2, k2] = <Hess z_k1 v_m1, Hess z_k2 v_m2>``."""
        dd = zt.shape[0]
        z_ = zt[:, i0], zt[:, i1]
        p = q = rr = s = t = u = 0.0
        ddI = ddI.reshape(dd, 2, dd, dd, dd)
        for w, (ia, ja) in enumerate(((0, 1), (1, 0))):
            I = slice(ia * dd, ia * dd + dd)
            J = slice(ja * dd, ja * dd + dd)
            p = p + jnp.einsum("abc,e->abce", dH[I, J, J], z_[ia])
            q = q + jnp.einsum("abc,e->abce", dH[I, I, J], z_[ja])
            rr = rr + ddI[:, w]
            s = s + jnp.transpose(G[J, I, J, I], (1, 3, 0, 2))
            t = t + jnp.transpose(G[I, I, J, J], (1, 0, 2, 3))
            u = u + jnp.transpose(G[J, I, I, J], (1, 2, 3, 0))
        return [0.5 * v for v in (p, q, rr, s, t, u)]

    def autodiff_derivatives(l, Ws, bs, x, lam_b, lam_W, zt):
        """p, q, r, s, t, u of layer ``l >= 2`` from JAX's own derivatives of ``z^(l)`` as a function of the
        learning-rate coordinates ``u`` of layers 1..l (module docstring: ``W = W0 + sqrt(lambda_W/n_{m-1}) U``,
        ``b = b0 + sqrt(lambda_b) c``, so the learning-rate tensor is the identity): ``v_k`` by ``grad``, ``D^2 z[v,
        v']`` and ``D^3 z[v, v', v'']`` by nested ``jvp``, ``Hess z_k v_m`` by ``jvp`` of the ``grad`` (exact; any
        layer step). Rows ``k`` as in :func:`derivative_stats`."""
        dd = zt.shape[0]
        Kr = 2 * dd
        A = np.arange(Kr) % dd
        rows = np.array([i0] * dd + [i1] * dd)
        ii, a1, a2, a3 = (g.ravel() for g in np.meshgrid(np.arange(2), *(np.arange(dd),) * 3, indexing="ij"))
        K1, K2, K3 = ii * dd + a1, (1 - ii) * dd + a2, (1 - ii) * dd + a3
        own = np.array([i0, i1])[ii]
        sW = [jnp.sqrt(lam_W[m] / widths[m]) for m in range(l)]
        sb = [jnp.sqrt(lam_b[m]) for m in range(l)]

        def F(u):                                                  # z^(l) (d, n_l)
            h, z = x, None
            for m in range(l):
                aff = h @ (Ws[m] + sW[m] * u[m][0]).T + (bs[m] + sb[m] * u[m][1])
                z = (gam[m] * z if gam[m] != 0.0 else 0.0) + xis[m] * aff if res_step[m + 1] else aff
                h = sigma(z)
            return z

        u0 = [(jnp.zeros_like(Ws[m]), jnp.zeros_like(bs[m])) for m in range(l)]
        cot = jnp.zeros((Kr, dd, widths[l]), jnp.float64).at[np.arange(Kr), A, rows].set(1.0)

        def grad_z(u, c):                                          # grad of z_k = <c_k, z^(l)> (scalar: no
            return jax.grad(lambda y: jnp.sum(F(y) * c))(u)        # cotangent typing issues under shard_map)

        V = jax.vmap(lambda c: grad_z(u0, c))(cot)                 # v_k, leading axis k

        def take(tree, idx):
            return jax.tree_util.tree_map(lambda a: a[idx], tree)

        def d1(u, v):
            return jax.jvp(F, (u,), (v,))[1]

        def d2(u, v, w):
            return jax.jvp(lambda y: d1(y, v), (u,), (w,))[1]

        def d3(v, w, y):
            return jax.jvp(lambda q: d2(q, v, w), (u0,), (y,))[1]

        P1, P2 = (g.ravel() for g in np.meshgrid(np.arange(Kr), np.arange(Kr), indexing="ij"))
        D2 = jax.vmap(lambda v, w: d2(u0, v, w))(take(V, P1), take(V, P2))          # (K K, d, n_l)
        dH = D2.reshape(Kr, Kr, dd, -1)[:, :, A, rows]                               # [k1, k2, k0]
        dH = jnp.transpose(dH, (2, 0, 1))
        D3 = jax.vmap(d3)(take(V, K1), take(V, K2), take(V, K3))                    # (tau, d, n_l)
        ddI = D3[np.arange(len(own)), :, own].T                                      # (c, tau)

        def hvp(c, v):                                             # Hess z_k v = D_v (grad z_k)
            return jax.jvp(lambda q: grad_z(q, c), (u0,), (v,))[1]

        HV = jax.vmap(hvp)(cot[P1], take(V, P2))                   # [(k, m)]: Hess z_k v_m
        flat = jnp.concatenate([a.reshape(Kr * Kr, -1) for a in jax.tree_util.tree_leaves(HV)], axis=1)
        G = (flat @ flat.T).reshape(Kr, Kr, Kr, Kr)                # [k1, m1, k2, m2]
        return assemble(dH, ddI, jnp.transpose(G, (1, 0, 3, 2)), zt)

    def ntk_stats(Hp, pidx, zt, h_rb, n_l):
        """h_rb, h_diag, hh, hzz, bb, ff from the NTK blocks ``Hp`` ``(n, P, n)`` (``H_ab = Hp[:, pidx[a, b]]`` for
        ``a <= b``, its transpose for ``a > b``) and ``zt`` ``(d, n)``; the full ``(d, d, n, n)`` is never formed."""
        dd = zt.shape[0]
        Np = n_l * (n_l - 1.0)
        ar = np.arange(n_l)
        diag = Hp[ar, :, ar].T[pidx]                             # (d, d, n): H_ab and H_ba^T share it
        zz = zt[:, None, :] * zt[None, :, :]                     # (d, d, n)
        sd = jnp.sum(diag, -1)
        hh = (jnp.einsum("ab,ce->abce", sd, sd) - jnp.einsum("abi,cei->abce", diag, diag)) / Np
        hzz = (jnp.einsum("ab,ce->abce", sd, jnp.sum(zz, -1)) - jnp.einsum("abi,cei->abce", diag, zz)) / Np
        a, b, c, e = np.meshgrid(*(np.arange(dd),) * 4, indexing="ij")
        pac, pbe, tac = pidx[a, c], pidx[b, e], a > c
        # bb[a,b,c,e] = sum_{i != j} H_ij;ac H_ij;be = <H_ac, H_be> (Frobenius): <X, Y> or <X, Y^T> of stored blocks
        # (multiply-and-reduce: as dot products these needed relayouts of Hp that cost more than the sums)
        same = jnp.sum(Hp[:, :, None, :] * Hp[:, None, :, :], axis=(0, 3))
        flip = jnp.sum(Hp[:, :, None, :] * jnp.transpose(Hp, (2, 1, 0))[:, None, :, :], axis=(0, 3))
        bb = (jnp.where(tac == (b > e), same[pac, pbe], flip[pac, pbe]) - jnp.einsum("aci,bei->abce", diag, diag)) / Np
        # ff[a,b,c,e] = sum_{i != j} H_ij;ac z_i;b z_j;e, with zHz[p, b, e] = z_b . Hp_p z_e
        zHz = jnp.einsum("ipj,bi,ej->pbe", Hp, zt, zt)
        ff = (jnp.where(tac, zHz[pac, e, b], zHz[pac, b, e]) - jnp.einsum("aci,bei->abce", diag, zz)) / Np
        return [h_rb, jnp.mean(diag, -1), hh, hzz, bb, ff], jnp.mean(diag[np.arange(dd), np.arange(dd)] ** 2, -1)

    @float64
    def fn(key, x, C_W, C_b, rates):
        Ws, bs = draw(key, C_W, C_b)
        lam_b, lam_W = rates[0], rates[1]
        d = x.shape[0]
        # one forward pass, shared by every layer's statistics; lists are indexed by layer m (entry 0: the input)
        W, S, D1, D2, D3, Z = [None] + Ws, [x], [None], [None], [None], [None]
        for m in range(1, L + 1):
            aff = (Ws[m - 1] @ S[m - 1].T + bs[m - 1][:, None]).T
            Z.append((gam[m - 1] * Z[m - 1] if gam[m - 1] != 0.0 else 0.0) + xis[m - 1] * aff if res_step[m] else aff)
            if m < L:
                for lst, v in zip((S, D1, D2, D3), sigma_jet(Z[m])):
                    lst.append(v)
        aW = [None] + [lam_W[m - 1] / widths[m - 1] for m in range(1, L + 1)]
        # the layer's own parameters' part of the NTK (xi^2 of it on a residual branch)
        kap = [None] + [xis[m - 1] ** 2 * (lam_b[m - 1] + lam_W[m - 1] * (S[m - 1] @ S[m - 1].T) / widths[m - 1])
                        if res_step[m] else lam_b[m - 1] + lam_W[m - 1] * (S[m - 1] @ S[m - 1].T) / widths[m - 1]
                        for m in range(1, L + 1)]
        # the NTK blocks H_ab, a <= b, as (P, n, n): H_ba = H_ab^T carries the rest
        pa, pb = (np.array(v) for v in zip(*[(a, b) for a in range(d) for b in range(a, d)]))
        pidx = np.zeros((d, d), dtype=int)
        pidx[pa, pb] = pidx[pb, pa] = np.arange(len(pa))
        # layout (i, p, j): both products of the forward equation are then plain matrix products, no relayout
        Hp = kap[1][pa, pb][None, :, None] * jnp.eye(widths[1], dtype=jnp.float64)[:, None, :]
        h_rb = kap[1]
        status = jnp.int32(OK)
        out, codes = [], []
        for l in range(1, L + 1):
            zt = Z[l]
            if l > 1:
                act_nan = jnp.any(jnp.isnan(S[l - 1]))
                n = widths[l - 1]
                diag_prev = Hp[np.arange(n), :, np.arange(n)].T[pidx]              # (d, d, n)
                ds = D1[l - 1]
                h_rb = kap[l] + C_W[l - 1] * jnp.einsum("ai,bi,abi->ab", ds, ds, diag_prev) / n
                # W diag(s'_a) H_ab diag(s'_b) W^T with W a plain dot operand: gathering W diag(s'_a) per block
                # made XLA recompute W's normals inside each gather
                X = ds[pa].T[:, :, None] * Hp * ds[pb][None, :, :]
                Y = (Ws[l - 1] @ X.reshape(n, -1)).reshape(-1, n)                 # (n_l P, n)
                prop = (Y @ Ws[l - 1].T).reshape(widths[l], len(pa), widths[l])
                if res_step[l]:
                    # M_a H_ab M_b^T, M_a = gamma + xi W diag(s'_a): the shortcut carries H, the cross terms
                    # vanish on average (E[W] = 0) but not network by network
                    g_, x_ = gam[l - 1], xis[l - 1]
                    h_rb = kap[l] + x_ ** 2 * (h_rb - kap[l])
                    prop = x_ ** 2 * prop
                    if g_ != 0.0:   # (then n_l = n_{l-1})
                        h_rb = h_rb + g_ ** 2 * jnp.mean(diag_prev, -1)
                        left = (Ws[l - 1] @ (ds[pa].T[:, :, None] * Hp).reshape(n, -1)).reshape(n, len(pa), n)
                        right = ((Hp * ds[pb][None, :, :]).reshape(-1, n) @ Ws[l - 1].T).reshape(n, len(pa), n)
                        prop = prop + g_ * x_ * (left + right) + g_ ** 2 * Hp
                Hp = kap[l][pa, pb][None, :, None] * jnp.eye(widths[l], dtype=jnp.float64)[:, None, :] + prop
            else:
                act_nan = False
            if l == 1:      # z^(1) is linear in the parameters: every derivative object vanishes
                der = [jnp.zeros((d,) * 4, jnp.float64) for _ in range(6)]
            elif plain:
                der = derivative_stats(l, W, S, D1, D2, D3, aW, kap, zt)
            else:
                der = autodiff_derivatives(l, Ws, bs, x, lam_b, lam_W, zt)
            ntk_blocks, h_sq = ntk_stats(Hp, pidx, zt, h_rb, widths[l])
            blocks = ntk_blocks + der + [h_sq]
            st = jnp.concatenate([layer_stats(zt)] + [b.reshape(-1) for b in blocks])
            finite = jnp.all(jnp.isfinite(st))
            own = jnp.where(act_nan, ACTIVATION_NAN, jnp.where(finite, OK, NOT_FINITE)).astype(jnp.int32)
            status = jnp.maximum(status, own)
            out.append(st)
            codes.append(status)
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
    # one neuron's NTK variance measured directly (not through the A, B decomposition it tests)
    var = b["h_sq"] - b["h_diag"][..., ar, ar] ** 2
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


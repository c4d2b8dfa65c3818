r"""One input beyond perturbation theory: the law of the layer metric G by a moment hierarchy closed with Gauss rules
(derivations/README.md section 13.4).

For one input the metric is a Markov chain, ``G' = C_b + (C_W/n_l) sum_j s_j`` with ``s_j = sigma(sqrt(G) xi_j)^2``
iid given G, so given G the next metric has the exact cumulants

    kappa_1 = C_b + C_W <s>_G,      kappa_j = C_W^j n_l^(1-j) kappa_j(s)_G     (j >= 2).

Represent the law of G by the M-node Gauss rule of its first 2M moments (Chebyshev's algorithm on the standardized
variable, then the eigenvalues of the Jacobi matrix), push every node through the exact conditional cumulants, and
average the conditional moments over the nodes: the first 2M moments of the next layer. The only approximation is
integrating the node functions ``<s^k>_G`` (not polynomials in G for a general sigma) with M nodes; for the
scale-invariant class they are polynomials (``<s^k>_G = A_2k G^k``) and the result is exact at every order in 1/n.
The error estimate is the change from M - 1 to M nodes. The moment algebra runs in mpmath (50 digits): the Hankel
moments of a 2M-point rule are ill-conditioned in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np

from .. import gaussian
from ..architecture import MLP
from ..errors import DivergentFlowError, ParameterError

__all__ = ["AllOrders", "all_orders"]

_DPS = 50


def _gauss_rule(mu):
    """Nodes and weights of the Gauss rule of the moments ``mu[0..2m-1]`` (mpf), by Chebyshev's algorithm; fewer nodes
    where the law has fewer support points (a non-positive ``beta_k``)."""
    m = len(mu) // 2
    alpha, beta = [mu[1] / mu[0]], [mu[0]]
    prev = [mpmath.mpf(0)] * len(mu)
    cur = list(mu)
    for k in range(1, m):
        nxt = [mpmath.mpf(0)] * len(mu)
        for l in range(k, 2 * m - k):
            nxt[l] = cur[l + 1] - alpha[k - 1] * cur[l] - beta[k - 1] * prev[l]
        if not nxt[k] > mpmath.mpf(10) ** (-_DPS + 10) * abs(mu[0]):
            break
        alpha.append(nxt[k + 1] / nxt[k] - cur[k] / cur[k - 1])
        beta.append(nxt[k] / cur[k - 1])
        prev, cur = cur, nxt
    n = len(alpha)
    J = mpmath.matrix(n, n)
    for k in range(n):
        J[k, k] = alpha[k]
        if k + 1 < n:
            J[k, k + 1] = J[k + 1, k] = mpmath.sqrt(beta[k + 1])
    E, Q = mpmath.eigsy(J)
    return [E[i] for i in range(n)], [mu[0] * Q[0, i] ** 2 for i in range(n)]


def _moments_from_cumulants(kap, order):
    """Raw moments ``m[0..order]`` from cumulants ``kap[1..order]`` (``kap[0]`` unused)."""
    m = [mpmath.mpf(1)]
    for n in range(1, order + 1):
        m.append(sum(mpmath.binomial(n - 1, k - 1) * kap[k] * m[n - k] for k in range(1, n + 1)))
    return m


def _cumulants_from_moments(m, order):
    kap = [mpmath.mpf(0)] * (order + 1)
    for n in range(1, order + 1):
        kap[n] = m[n] - sum(mpmath.binomial(n - 1, k - 1) * kap[k] * m[n - k] for k in range(1, n))
    return kap


def _node_moments(act, G, order):
    """``<s^k>_G`` for ``k = 1..order`` at the metric values ``G`` (mpf >= 0): rows of mpf (exact polynomials
    ``A_2k G^k`` in mpmath for the scale-invariant class, so no overflow at large G; float quadrature otherwise)."""
    if act.scale_invariant:
        A = [mpmath.mpf(str(act.power_moment(2 * k).evalf(_DPS))) for k in range(1, order + 1)]
        return [[A[k - 1] * g**k for k in range(1, order + 1)] for g in G]
    G = np.array([float(g) for g in G])
    out = np.zeros((G.size, order))
    live = G > 0
    if np.any(live):
        out[live] = gaussian.moments_1d(act, G[live], [(2 * k, 0, 0) for k in range(1, order + 1)])
    if np.any(~live):   # a deterministic metric: sigma(0)^(2k)
        out[~live] = float(act(np.zeros(1))[0] ** 2) ** np.arange(1, order + 1)
    if not np.all(np.isfinite(out)):
        raise DivergentFlowError(f"<sigma^(2k)> (k <= {order}) leaves float64's range at G = {G.max():.3g}: scale the "
                                 "input down or move C_W, C_b toward criticality")
    return [[mpmath.mpf(v) for v in row] for row in out]


def _chain(net: MLP, K1: float, M: int):
    """``(mean, var, kappa_3)`` of G at every layer (lists of mpf) with M-node rules."""
    act = net.activation
    order = 2 * M
    with mpmath.workdps(_DPS):
        c, s = mpmath.mpf(K1), mpmath.mpf(1)                 # G = c + s Y, Y standardized
        mu = [mpmath.mpf(1)] + [mpmath.mpf(0)] * (order - 1)   # the law of Y at layer 1: a point mass at 0
        out = [(c, mpmath.mpf(0), mpmath.mpf(0))]
        for l in range(1, net.L):
            C_W, C_b = (mpmath.mpf(v) for v in net.hyper(l + 1))
            n = mpmath.mpf(net.widths[l])
            y, w = _gauss_rule(mu)
            G = [max(c + s * yi, mpmath.mpf(0)) for yi in y]
            mom = _node_moments(act, G, order)
            kap_nodes = []
            for i in range(len(G)):
                ms = [mpmath.mpf(1)] + list(mom[i])
                ks = _cumulants_from_moments(ms, order)
                kap_nodes.append([mpmath.mpf(0), C_b + C_W * ks[1]] + [C_W**j * n ** (1 - j) * ks[j]
                                                                       for j in range(2, order + 1)])
            c_new = sum(wi * k[1] for wi, k in zip(w, kap_nodes))
            var = sum(wi * (k[2] + (k[1] - c_new) ** 2) for wi, k in zip(w, kap_nodes))
            s_new = mpmath.sqrt(var) if var > 0 else mpmath.mpf(1)
            mu = [mpmath.mpf(0)] * order
            for wi, k in zip(w, kap_nodes):
                kk = [mpmath.mpf(0), (k[1] - c_new) / s_new] + [k[j] / s_new**j for j in range(2, order + 1)]
                mm = _moments_from_cumulants(kk, order - 1)
                for j in range(order):
                    mu[j] += wi * mm[j]
            c, s = c_new, s_new
            out.append((c, s * s * mu[2], s**3 * mu[3]))
            if not all(mpmath.isfinite(v) for v in out[-1]) or abs(c) > 1e300:
                raise DivergentFlowError(f"the metric chain leaves float64's range at layer l = {l + 1}: move C_W, "
                                         "C_b toward criticality or reduce the depth", layer=l + 1)
        return out


@dataclass(frozen=True)
class AllOrders:
    """The law of one input's metric at every layer, to all orders in 1/n (module docstring): ``mean`` ``E G = E z^2``,
    ``var`` ``Var G`` (= the connected ``E[z_i^2 z_j^2]``, i != j), ``kappa3`` ``kappa_3(G)`` (one neuron's sixth
    cumulant is 15 times it), each ``(L,)``, and ``error``: the same keys, the change from M - 1 to M nodes (0 for the
    scale-invariant class, which is exact)."""

    net: MLP
    x: np.ndarray
    M: int
    mean: np.ndarray
    var: np.ndarray
    kappa3: np.ndarray
    error: dict

    def kurtosis(self, l: int) -> float:
        """One neuron's excess kurtosis ``3 Var G / (E G)^2`` at layer l."""
        self.net._check_layer(l)
        if not self.mean[l - 1] > 0:
            raise ParameterError(f"the kurtosis is not defined at layer l = {l}: the metric is 0 there (a zero input "
                                 "with C_b = 0)", "x")
        return float(3.0 * self.var[l - 1] / self.mean[l - 1] ** 2)


def all_orders(net: MLP, x, M: int = 8) -> AllOrders:
    """The metric of one input ``x`` through ``net`` beyond perturbation theory (module docstring) with M-node Gauss
    rules (M = 2..12). Raises :class:`ParameterError` for several inputs (``x``), residual networks (``gamma``) and a bad
    ``M``.

    >>> import pdlt
    >>> th = all_orders(pdlt.MLP("relu", (1, 8, 8, 8, 8), C_W=2.0), [1.0])
    >>> round(th.kurtosis(4), 12), round(3 * ((1 + 5 / 8) ** 3 - 1), 12)     # exact: 3 (prod (1 + 5/n) - 1)
    (9.873046875, 9.873046875)
    """
    from .kernel import kernel_flow

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if net.residual:
        raise ParameterError("the metric chain of residual networks is not Markov in G alone (a shortcut keeps each "
                             "neuron's past): all_orders takes plain MLPs (gamma = 0, xi = 1)", "gamma")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or not 2 <= M <= 12:
        raise ParameterError(f"M (Gauss nodes) must be an int in 2..12, got {M!r}", "M")
    xs = net.inputs(x)
    if xs.shape[0] != 1:
        raise ParameterError(f"all_orders takes one input (the metric chain of one input); got d = {xs.shape[0]}", "x")
    K1 = float(kernel_flow(net, xs).K[0, 0, 0])
    hi, lo = _chain(net, K1, int(M)), _chain(net, K1, int(M) - 1)
    arr = lambda rows, i: np.array([float(r[i]) for r in rows])
    vals = {k: arr(hi, i) for i, k in enumerate(("mean", "var", "kappa3"))}
    err = {k: np.abs(vals[k] - arr(lo, i)) for i, k in enumerate(("mean", "var", "kappa3"))}
    if net.activation.scale_invariant:
        err = {k: np.zeros_like(v) for k, v in err.items()}
    return AllOrders(net=net, x=xs, M=int(M), error=err, **vals)

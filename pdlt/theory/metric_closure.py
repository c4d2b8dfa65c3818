r"""One input beyond perturbation theory: the law of the layer metric G by a moment hierarchy closed with Gauss rules
(derivations/README.md section 13.4).

For one input the metric is a Markov chain, ``G' = C_b + (C_W/n_l) sum_j s_j`` with ``s_j = sigma(sqrt(G) xi_j)^2``
iid given G, so given G the next metric has the exact cumulants

    kappa_1 = C_b + C_W <s>_G,      kappa_j = C_W^j n_l^(1-j) kappa_j(s)_G     (j >= 2).

Represent the law of G by the M-node Gauss rule of its first 2M moments (Chebyshev's algorithm on the standardized
variable, then the nodes as roots of the last orthogonal polynomial), push every node through the exact conditional
cumulants, and average the conditional moments over the nodes: the first 2M moments of the next layer. The only
approximation is integrating the node functions ``<s^k>_G`` (not polynomials in G for a general sigma) with M nodes;
for the scale-invariant class they are polynomials (``<s^k>_G = A_2k G^k``) and the result is exact at every order in
1/n. The error estimate is the change from M - 1 to M nodes.

The moment algebra runs in 50-digit decimal arithmetic (the standard library's ``decimal``, ~10x faster than mpmath
for these scalar loops): the Hankel moments of a 2M-point rule are ill-conditioned in float64. The nodes start from
float64 eigenvalues of the Jacobi matrix and are polished by Newton's method on the three-term recurrence (quadratic
convergence: three steps reach 50 digits); mpmath's eigensolver is the fallback where polishing fails.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..architecture import MLP
from ..errors import Caveat, DivergentFlowError, ParameterError, emit

if TYPE_CHECKING:
    from .wishart import LinearAllOrders

__all__ = ["AllOrders", "all_orders"]

_DIGITS = 50
_ZERO, _ONE = Decimal(0), Decimal(1)


def _context():
    return decimal.localcontext(decimal.Context(prec=_DIGITS, Emax=10**6, Emin=-10**6))


def _recurrence(mu):
    """Recurrence coefficients ``alpha[0..m'-1]``, ``beta[0..m'-1]`` (``beta[0] = mu[0]``) of the monic orthogonal
    polynomials of the moments ``mu[0..2m-1]`` by Chebyshev's algorithm; ``m' < m`` where the law has fewer support
    points (a non-positive ``beta_k``)."""
    m = len(mu) // 2
    alpha, beta = [mu[1] / mu[0]], [mu[0]]
    prev, cur = [_ZERO] * len(mu), list(mu)
    tiny = Decimal(10) ** (-_DIGITS + 10) * abs(mu[0])
    for k in range(1, m):
        nxt = [_ZERO] * len(mu)
        for l in range(k, 2 * m - k):
            nxt[l] = cur[l + 1] - alpha[k - 1] * cur[l] - beta[k - 1] * prev[l]
        if not nxt[k] > tiny:
            break
        alpha.append(nxt[k + 1] / nxt[k] - cur[k] / cur[k - 1])
        beta.append(nxt[k] / cur[k - 1])
        prev, cur = cur, nxt
    return alpha, beta


def _polynomials(y, alpha, beta):
    """``[p_0(y), ..., p_m(y)]`` and ``p_m'(y)`` of the monic recurrence ``p_{k+1} = (y - alpha_k) p_k - beta_k p_{k-1}``."""
    p, dp = [_ONE], [_ZERO]
    pm1, dpm1 = _ZERO, _ZERO
    for k in range(len(alpha)):
        b = beta[k] if k else _ZERO
        nxt = (y - alpha[k]) * p[-1] - b * pm1
        dnxt = p[-1] + (y - alpha[k]) * dp[-1] - b * dpm1
        pm1, dpm1 = p[-1], dp[-1]
        p.append(nxt)
        dp.append(dnxt)
    return p, dp[-1]


def _nodes(alpha, beta):
    """Roots of ``p_m``: float64 eigenvalues of the Jacobi matrix polished by Newton (sorted); None where that fails."""
    from scipy.linalg import eigh_tridiagonal

    m = len(alpha)
    if m == 1:
        return [alpha[0]]
    d = np.array([float(a) for a in alpha])
    e = np.array([math.sqrt(float(b)) for b in beta[1:]])
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(e))):
        return None                           # beyond float64's range: the 50-digit eigensolver takes it
    start = np.sort(eigh_tridiagonal(d, e, eigvals_only=True))
    # float64 eigenvalues are off by ~ m eps max|y|, so a small node next to huge ones may start nearer a neighbour's
    # root: Maehly's deflated Newton step (the roots already found divided out) converges to a new root regardless
    out = []
    for y0 in start:
        y = Decimal(float(y0))
        for _ in range(60):
            p, dp = _polynomials(y, alpha, beta)
            if any(y == r for r in out):
                y += Decimal(10) ** (-_DIGITS // 2) * (1 + abs(y))
                continue
            den = dp - p[-1] * sum(_ONE / (y - r) for r in out)
            if den == 0:
                return None
            step = p[-1] / den
            y -= step
            if abs(step) <= Decimal(10) ** (-_DIGITS + 8) * (1 + abs(y)):
                break
        else:
            return None
        out.append(y)
    out.sort()
    tol = Decimal(10) ** (-_DIGITS + 12) * max(abs(out[0]), abs(out[-1]))
    if any(b - a <= tol for a, b in zip(out, out[1:])):
        return None
    return out


def _nodes_mpmath(alpha, beta):
    import mpmath

    with mpmath.workdps(_DIGITS):
        n = len(alpha)
        J = mpmath.matrix(n, n)
        for k in range(n):
            J[k, k] = mpmath.mpf(str(alpha[k]))
            if k + 1 < n:
                J[k, k + 1] = J[k + 1, k] = mpmath.sqrt(mpmath.mpf(str(beta[k + 1])))
        E = mpmath.eigsy(J, eigvals_only=True)
        return sorted(Decimal(mpmath.nstr(E[i], _DIGITS, strip_zeros=False)) for i in range(n))


def _gauss_rule(mu):
    """Nodes and weights of the Gauss rule of the moments ``mu[0..2m-1]`` (Decimal); fewer nodes where the law has
    fewer support points. Weights are the Christoffel numbers ``1 / sum_k p_k(y)^2 / h_k``, ``h_k = beta_0 ... beta_k``."""
    alpha, beta = _recurrence(mu)
    y = _nodes(alpha, beta)
    if y is None:
        y = _nodes_mpmath(alpha, beta)
    h, norms = _ONE, []
    for b in beta:
        h *= b
        norms.append(h)
    w = []
    for yi in y:
        p, _ = _polynomials(yi, alpha, beta)
        w.append(_ONE / sum(p[k] * p[k] / norms[k] for k in range(len(alpha))))
    return y, w


@lru_cache(maxsize=4)
def _binomials(order: int) -> tuple:
    """``B[n][k - 1] = C(n - 1, k - 1)`` as Decimal, ``n = 1..order`` (row 0 empty): the moment-cumulant recursion's
    coefficients, converted once (the chain runs it per node and layer, ~10^6 products at M = 8, L = 200)."""
    return tuple(tuple(Decimal(math.comb(n - 1, k - 1)) for k in range(1, n + 1)) for n in range(order + 1))


def _moments_from_cumulants(kap, order):
    """Raw moments ``m[0..order]`` from cumulants ``kap[1..order]`` (``kap[0]`` unused):
    ``m_n = sum_k C(n - 1, k - 1) kappa_k m_(n - k)``."""
    B = _binomials(order)
    m = [_ONE]
    for n in range(1, order + 1):
        b = B[n]
        m.append(sum([b[k - 1] * kap[k] * m[n - k] for k in range(1, n + 1)]))
    return m


def _cumulants_from_moments(m, order):
    """The inverse of :func:`_moments_from_cumulants`: cumulants ``kap[1..order]`` from raw moments ``m[0..order]``."""
    B = _binomials(order)
    kap = [_ZERO] * (order + 1)
    for n in range(1, order + 1):
        b = B[n]
        kap[n] = m[n] - sum([b[k - 1] * kap[k] * m[n - k] for k in range(1, n)])
    return kap


#: the node averages of a smooth sigma cover |w| <= _W standard deviations: <sigma^(4M)> of a linearly growing sigma
#: peaks at |w| = 2 sqrt(M) (7 at M = 12), and its mass beyond 16 is below 1e-25
_W = 16.0
_GL = np.polynomial.legendre.leggauss(16)
#: most quadrature nodes of one node average (refinement stops here with a ParameterError)
_MAX_QUAD_NODES = 2_000_000


def _panels(g: float, kinks=(), outer: float = 0.5, inner: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``w`` and normalized weights of ``E f(sqrt(g) w)``, ``w ~ N(0, 1)``, ``|w| <= 16``: 16-point
    Gauss-Legendre panels at most ``inner`` wide in ``z = sqrt(g) w`` where ``|z| <= 30`` (sigma's own structure,
    whatever g) and ``outer`` wide in w elsewhere (the Gaussian's scale), with the activation's kinks as extra edges: ~
    1000-2000 nodes at ``outer = 1/2`` for any g, where a uniform grid fine enough in z needs ~ 1000 sqrt(g)."""
    r = math.sqrt(g)
    cuts = np.union1d(np.arange(-30.0, 30.0 + inner / 2, inner) / r, np.arange(-_W, _W + outer / 2, outer))
    cuts = np.union1d(cuts[np.abs(cuts) < _W], [-_W, _W])
    cuts = np.union1d(cuts, np.asarray([k for k in kinks if abs(k / r) < _W], dtype=float) / r)
    lo, hi = cuts[:-1], cuts[1:]
    x, wl = _GL
    w = (0.5 * (hi - lo))[:, None] * x[None, :] + (0.5 * (hi + lo))[:, None]
    wt = (0.5 * (hi - lo))[:, None] * wl[None, :] * np.exp(-0.5 * w * w) / math.sqrt(2 * math.pi)
    return w.ravel(), wt.ravel()


@lru_cache(maxsize=64)
def _affine_tails(act) -> bool:
    """Whether sigma is affine (to 1e-9 relative) on ``30 <= |z| <= 1e8``, like tanh, GELU, swish or softplus: then
    the wide outer panels of :func:`_panels` integrate it exactly enough at any g; an oscillating sigma (sin) is not,
    and its averages are refined."""
    # log-spaced points with fixed pseudo-random offsets of up to 7 (no aliasing of a periodic sigma)
    offsets = np.random.default_rng(0).uniform(0.0, 7.0, 8000)
    for sign in (1.0, -1.0):
        z = sign * np.sort(np.geomspace(30.0, 1e8, 8000) + offsets)
        with np.errstate(all="ignore"):
            v = act(z)
        a = (v[-1] - v[0]) / (z[-1] - z[0])
        # 1e-9 of |sigma| + 1: e^-30-size wiggles (swish near -30) are as smooth as sigma itself and do not count
        if not (np.all(np.isfinite(v)) and np.all(np.abs(v - (v[0] + a * (z - z[0]))) <= 1e-9 * (np.abs(v) + 1.0))):
            return False
    return True


def _scaled_powers(act, g: float, order: int, outer: float, inner: float = 1.0):
    """``(<(s/m)^k>, m, far)`` on :func:`_panels` with ``s = sigma(sqrt(g) w)^2``, ``m = <s>`` (scaling by the
    node's own mean keeps the powers in float64's range for tiny and huge g alike), ``far`` the part from
    ``|w| > 14``."""
    w, wt = _panels(g, act.kinks, outer, inner)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        s = act(math.sqrt(g) * w) ** 2
        m = float(s @ wt)
        if not (math.isfinite(m) and m > 0):
            return np.zeros(order), m, np.zeros(order)
        far = np.abs(w) > 14.0
        # sum_i wt_i (s_i/m)^k, k = 1..order, by running products near and far apart (no (order, nodes) table)
        x, xf, wn, wf = s[~far] / m, s[far] / m, wt[~far], wt[far]
        val, out_far = np.empty(order), np.empty(order)
        pn, pf = wn * x, wf * xf
        for k in range(order):
            if k:
                pn *= x
                pf *= xf
            val[k], out_far[k] = pn.sum(), pf.sum()
    return val + out_far, m, out_far


def _power_averages(act, G, order) -> tuple[np.ndarray, np.ndarray]:
    """``(<(s/m)^k>_G, m)``: ``(len(G), order)`` and ``(len(G),)``, ``m = <s>_G``, ``s = sigma^2`` (module docstring),
    on :func:`_panels`. The high powers of sigma^2 put their mass far out (``<gelu^32>`` at K ~ 3.5 peaks near 5.7
    standard deviations), where the generic 8-standard-deviation rule of :func:`pdlt.gaussian.moments_1d` stops (it
    is ~2e-6 off on ``<tanh^32>`` at K = 0.3); Gauss rules of heavy-tailed metric laws put nodes at G >> 1, where
    sigma varies on a scale ``1/sqrt(G)`` in w. Where sigma is not affine beyond |z| = 30 (:func:`_affine_tails`:
    sin, custom oscillating forms), all panels are halved until two rules agree to 1e-12; an affine-tailed sigma must
    have no structure finer than ~0.1 in z (the built-in ones: ~1e-15 against mpmath) (an oscillating sigma such as sin needs it at
    large g), with :class:`ParameterError` (``x``) past :data:`_MAX_QUAD_NODES`. Raises :class:`ParameterError`
    (``M``) when more than 1e-12 of an average lies beyond 14 standard deviations (sigma grows too fast for that
    order: the rule stops at 16)."""
    out, mean = np.empty((G.size, order)), np.empty(G.size)
    affine = _affine_tails(act)
    for i, g in enumerate(G):
        g = float(g)
        val, m, far = _scaled_powers(act, g, order, 0.5)
        outer, inner = 0.5, 1.0
        # the wide outer panels integrate sigma only if it is affine out there; a sigma that is not (sin) is refined,
        # inner panels too, until two rules agree
        while m > 0 and not affine:
            # inner panels down to 1/64 in z (harmonics finer than that are damped by the Gaussian at any g where
            # they could matter); the outer ones until they resolve sigma at the Gaussian's scale
            outer, inner = outer / 2, max(inner / 2, 1 / 64)
            if 16 * (60 / inner + 2 * _W / outer) > _MAX_QUAD_NODES:
                raise ParameterError(f"the closure's average <sigma^{2 * order}> at G = {g:.3g} does not converge "
                                     f"within {_MAX_QUAD_NODES} quadrature nodes ({act.name} varies too fast at that "
                                     "scale): scale the input down or move C_W, C_b toward criticality", "x")
            val2, m2, far = _scaled_powers(act, g, order, outer, inner)
            # relative change of <s^k> = m^k <(s/m)^k> (in logs: m^k itself may leave float64's range)
            with np.errstate(divide="ignore", invalid="ignore"):
                change = np.abs(np.arange(1, order + 1) * math.log(m2 / m) + np.log(val2 / val))
            val, m = val2, m2
            if m2 > 0 and np.all(change <= 1e-12):
                break
        if np.all(np.isfinite(val)) and np.any(far > 1e-12 * np.abs(val)):
            raise ParameterError(f"<sigma^{2 * order}> at G = {g:.3g} has more than 1e-12 of its mass beyond 14 "
                                 f"standard deviations: {act.name} grows too fast for a closure with M = {order // 2} "
                                 "nodes; use fewer nodes M", "M")
        out[i], mean[i] = val, m
    return out, mean


@lru_cache(maxsize=64)
def _power_moments(act, order):
    """``[<sigma(xi)^(2k)>]`` (Decimal, k = 1..order) of a scale-invariant sigma."""
    return [Decimal(str(act.power_moment(2 * k).evalf(_DIGITS + 10))) for k in range(1, order + 1)]


def _node_moments(act, G, order):
    """``<s^k>_G`` for ``k = 1..order`` at the metric values ``G`` (Decimal >= 0): rows of Decimal (exact polynomials
    ``A_2k G^k`` for the scale-invariant class, so no overflow at large G; float quadrature otherwise)."""
    if act.scale_invariant:
        A = _power_moments(act, order)
        return [[A[k - 1] * g**k for k in range(1, order + 1)] for g in G]
    G = np.array([float(g) for g in G])
    out = np.zeros((G.size, order))
    scale = np.ones(G.size)
    live = G > 0
    if np.any(live):
        out[live], scale[live] = _power_averages(act, G[live], order)
    if np.any(~live):   # a deterministic metric: sigma(0)^(2k)
        s0 = float(act(np.zeros(1))[0] ** 2)
        out[~live], scale[~live] = (1.0 if s0 > 0 else 0.0), s0
    if not (np.all(np.isfinite(out)) and np.all(np.isfinite(scale))):
        raise DivergentFlowError(f"<sigma^(2k)> (k <= {order}) is not finite at G = {G.max():.3g}: scale the input down "
                                 "or move C_W, C_b toward criticality")
    rows = []
    for row, c in zip(out, scale):
        c = Decimal(float(c))
        cp, new = _ONE, []
        for v in row:
            cp *= c                        # c^k (50 digits)
            new.append(Decimal(float(v)) * cp)
        rows.append(new)
    return rows


def _chain(net: MLP, K1: float, M: int):
    """``(mean, var, kappa_3, kappa_4)`` of G at every layer (Decimal; kappa_4 None for M < 3) with M-node rules."""
    act = net.activation
    order = 2 * M
    with _context():
        c, s = Decimal(float(K1)), _ONE                       # G = c + s Y, Y standardized
        mu = [_ONE] + [_ZERO] * (order - 1)                   # the law of Y at layer 1: a point mass at 0
        out = [(+c, _ZERO, _ZERO, _ZERO if order > 4 else None)]
        for l in range(1, net.L):
            C_W, C_b = (Decimal(float(v)) for v in net.hyper(l + 1))
            n = Decimal(int(net.widths[l]))
            y, w = _gauss_rule(mu)
            G = [max(c + s * yi, _ZERO) for yi in y]
            mom = _node_moments(act, G, order)
            kap_nodes = []
            for i in range(len(G)):
                ks = _cumulants_from_moments([_ONE] + list(mom[i]), order)
                kap_nodes.append([_ZERO, C_b + C_W * ks[1]] + [C_W**j * n ** (1 - j) * ks[j]
                                                                 for j in range(2, order + 1)])
            c_new = sum(wi * k[1] for wi, k in zip(w, kap_nodes))
            var = sum(wi * (k[2] + (k[1] - c_new) ** 2) for wi, k in zip(w, kap_nodes))
            s_new = var.sqrt() if var > 0 else _ONE
            mu = [_ZERO] * order
            for wi, k in zip(w, kap_nodes):
                kk = [_ZERO, (k[1] - c_new) / s_new] + [k[j] / s_new**j for j in range(2, order + 1)]
                mm = _moments_from_cumulants(kk, order - 1)
                for j in range(order):
                    mu[j] += wi * mm[j]
            c, s = c_new, s_new
            # (a deterministic metric, sign(z)'s, has a variance of 0 that rounding can leave at -1e-17)
            out.append((c, max(s * s * mu[2], _ZERO), s**3 * mu[3],
                        s**4 * (mu[4] - 3 * mu[2] ** 2) if order > 4 else None))
            if not all(v.is_finite() and abs(v) < Decimal("1e300") for v in out[-1][:3]):
                raise DivergentFlowError(f"the metric chain leaves float64's range at layer l = {l + 1}: move C_W, "
                                         "C_b toward criticality or reduce the depth", layer=l + 1)
        return out


@dataclass(frozen=True)
class AllOrders:
    """The law of one input's metric at every layer, to all orders in 1/n (module docstring): ``mean`` ``E G = E z^2``,
    ``var`` ``Var G`` (= the connected ``E[z_i^2 z_j^2]``, i != j), ``kappa3`` ``kappa_3(G)`` (one neuron's sixth
    cumulant is 15 times it), ``kappa4`` ``kappa_4(G)`` (None for M < 4: the rules carry 2M moments, and its error
    estimate needs M - 1 >= 3; None also where it leaves float64's range), each ``(L,)``, and ``error``: the same keys, the change from M - 1 to M nodes (0 for
    the scale-invariant class, which is exact); ``caveats``: a ``"truncation"`` caveat where that error estimate exceeds
    :data:`CLOSURE_TOLERANCE` (also issued as a :class:`~pdlt.errors.TruncationWarning`); ``relative_var``
    ``Var G/(E G)^2`` ``(L,)`` formed before rounding to float64 (-1 where the metric is 0; its error estimate is
    ``error["relative_var"]``)."""

    net: MLP
    x: np.ndarray
    M: int
    mean: np.ndarray
    var: np.ndarray
    kappa3: np.ndarray
    kappa4: np.ndarray | None
    error: dict
    caveats: tuple = ()
    relative_var: np.ndarray | None = None

    def kurtosis(self, l: int) -> float:
        """One neuron's excess kurtosis ``3 Var G / (E G)^2`` at layer l (formed in 50-digit arithmetic: scale-free,
        right even where ``Var G`` is below float64's normal range)."""
        self.net._check_layer(l)
        if self.relative_var is None:       # constructed by hand: from the float64 values
            m, v = self.mean[l - 1], self.var[l - 1]
            if not m > 0:
                raise ParameterError(f"the kurtosis is not defined at layer l = {l}: the metric is 0 there", "x")
            return float(3.0 * v / m**2)
        if not self.relative_var[l - 1] >= 0:
            raise ParameterError(f"the kurtosis is not defined at layer l = {l}: the metric is 0 there (a zero input "
                                 "with C_b = 0)", "x")
        return float(3.0 * self.relative_var[l - 1])


def all_orders(net: MLP, x, M: int = 8) -> "AllOrders | LinearAllOrders":
    """The metric of one input ``x`` through ``net`` beyond perturbation theory (module docstring) with M-node Gauss
    rules (M = 3..12; the error estimate reruns at M - 1, which must still carry the third cumulant); several
    inputs through a deep linear network give the exact :class:`~pdlt.theory.wishart.LinearAllOrders`
    (:func:`pdlt.theory.wishart.linear_all_orders`: ``mean`` and ``cov`` tensors, per-input ``kurtosis``; M is not
    used, the chain is exact), and so does a deep linear network with shortcuts, for any number of inputs, one
    included (:mod:`pdlt.theory.linear_residual`). Raises :class:`ParameterError` for several inputs (``x``) and
    shortcuts (``gamma``) with other activations, and a bad ``M``.

    >>> import pdlt
    >>> th = all_orders(pdlt.MLP("relu", (1, 8, 8, 8, 8), C_W=2.0), [1.0])
    >>> round(th.kurtosis(4), 12), round(3 * ((1 + 5 / 8) ** 3 - 1), 12)     # exact: 3 (prod (1 + 5/n) - 1)
    (9.873046875, 9.873046875)
    """
    from .kernel import kernel_flow

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or not 3 <= M <= 12:
        raise ParameterError(f"M (Gauss nodes) must be an int in 3..12, got {M!r}", "M")
    if net.residual:
        from .wishart import is_linear, linear_all_orders

        if is_linear(net.activation):
            return linear_all_orders(net, x)
        raise ParameterError("the metric chain of residual networks is not Markov in G alone (a shortcut keeps each "
                             "neuron's past): all_orders takes plain MLPs (gamma = 0, xi = 1), or deep linear ones "
                             "with shortcuts (an exact chain of moments over neurons)", "gamma")
    xs = net.inputs(x)
    if xs.shape[0] != 1:
        from .wishart import is_linear, linear_all_orders

        if is_linear(net.activation):
            return linear_all_orders(net, xs)
        raise ParameterError(f"all_orders takes one input (the metric chain of one input), or several through a deep "
                             f"linear network (the Wishart chain, exact); got d = {xs.shape[0]} inputs and "
                             f"{net.activation.name}", "x")
    K1 = float(kernel_flow(net, xs).K[0, 0, 0])
    hi, lo = _chain(net, K1, int(M)), _chain(net, K1, int(M) - 1)
    # Var G/(E G)^2 from the 50-digit values (-1 marks a zero metric: no ratio there)
    ratio = lambda rows: np.array([float(r[1] / (r[0] * r[0])) if r[0] > 0 else -1.0 for r in rows])  # noqa: E731
    rel = ratio(hi)
    arr = lambda rows, i: np.array([float(r[i]) for r in rows])
    keys = ("mean", "var", "kappa3") + (("kappa4",) if M >= 4 else ())
    vals = {k: arr(hi, i) for i, k in enumerate(keys)}
    with np.errstate(invalid="ignore", over="ignore"):     # (a kappa_4 beyond float64's range is dropped below)
        err = {k: np.abs(vals[k] - arr(lo, i)) for i, k in enumerate(keys)}
    err["relative_var"] = np.where(rel >= 0, np.abs(rel - ratio(lo)), 0.0)
    vals.setdefault("kappa4", None)
    if vals["kappa4"] is not None and not np.all(np.isfinite(vals["kappa4"])):
        vals["kappa4"] = None                 # kappa_4 ~ G^4 leaves float64's range before E G and Var G do
        err.pop("kappa4")
    if net.activation.scale_invariant:
        err = {k: np.zeros_like(v) for k, v in err.items()}
    caveats = _closure_caveats(vals, err, int(M), rel) + _underflow_caveats(hi)
    emit(caveats, stacklevel=3)
    return AllOrders(net=net, x=xs, M=int(M), error=err, caveats=caveats, relative_var=rel, **vals)


def _underflow_caveats(rows) -> tuple:
    """A ``"range"`` caveat at the first layer where ``Var G`` or ``kappa_3`` (50-digit values ``rows``) lie below
    float64's normal range (a tiny kernel: they go as its square and cube), so that their float64 fields are 0 or
    lose digits; the ratios (``relative_var``, :meth:`AllOrders.kurtosis`) are formed in 50 digits and keep theirs."""
    tiny = np.finfo(np.float64).tiny
    for i, r in enumerate(rows):
        low = [nm for nm, v in (("Var G", r[1]), ("kappa_3", r[2])) if v != 0 and abs(v) < tiny]
        if low:
            return (Caveat("range", f"{' and '.join(low)} lie below float64's normal range from layer l = {i + 1} "
                                    "(they go as the kernel's square and cube): their fields are 0 or have lost "
                                    "digits there; the ratios relative_var and kurtosis(l), formed in 50 digits, are "
                                    "exact; scale the input up for the cumulants themselves", i + 1),)
    return ()


#: a closure whose error estimate exceeds this fraction of E G or Var G is flagged (not converged at that order)
CLOSURE_TOLERANCE = 0.01


def _closure_caveats(vals: dict, err: dict, M: int, relvar: np.ndarray) -> tuple:
    """A ``"truncation"`` caveat at the first layer where M - 1 and M nodes differ by more than
    :data:`CLOSURE_TOLERANCE` of ``E G``, ``Var G`` or ``Var G/(E G)^2`` (the last formed in 50 digits, so it is
    checked even where ``Var G`` underflows)."""
    for i in range(vals["mean"].shape[0]):
        rel = max(err["mean"][i] / abs(vals["mean"][i]) if vals["mean"][i] else 0.0,
                  err["var"][i] / abs(vals["var"][i]) if vals["var"][i] else 0.0,
                  err["relative_var"][i] / relvar[i] if relvar[i] > 0 else 0.0)
        if rel > CLOSURE_TOLERANCE:
            return (Caveat("truncation", f"the closure with M = {M} nodes has not converged at layer l = {i + 1}: "
                                         f"M - 1 and M nodes differ by {rel:.1%} of Var G or E G there (the error "
                                         f"estimate in .error); increase M (at most 12) or treat the values as "
                                         "uncertain by about that much", i + 1, float(rel)),)
    return ()

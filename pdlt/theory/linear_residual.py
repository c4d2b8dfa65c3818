r"""Deep linear residual networks at every order in 1/n: the exchangeable moment chain (derivations/README.md
section 13.7).

Network (``sigma(z) = a z``; pdlt.MLP's residual steps, ``gamma = 0, xi = 1`` being a plain layer):

    z^(1)_i = b_i + sum_j W_ij x_j,     z^(l+1)_i = gamma z^(l)_i + xi (b_i + a sum_j W_ij z^(l)_j).

Given layer l the neurons of layer l + 1 are independent, ``z'_i ~ N(gamma z_i, xi^2 Sigma)`` with
``Sigma = C_b J + r G^``, ``G^ = (1/n) sum_k z_k z_k^T`` (J the all-ones matrix, ``r = C_W a^2``, ``n = n_l``). The
shortcut keeps the mean ``gamma z_i``, so a neuron remembers its own past and the metric is not the whole state. The
moments over *tuples of distinct neurons* still close: ``E[... | layer l]`` factorizes over the neurons of the tuple
into polynomials in ``(z_i, Sigma)``; ``Sigma`` is affine in ``G^``; and ``G^`` times fields of q distinct neurons
splits by exchangeability into the extra neuron being one of the q (weight 1/n each) or a new one (weight 1 - q/n).
So the moments of each order map linearly onto the moments of the same and lower orders, exactly, at every width,
with coefficients polynomial in 1/n.

**Several inputs, the four-point function.** Raw moments ``m_ab = E[z_ia z_ib]`` and ``B_abcd = E[z_ia z_ib z_jc
z_jd]`` (i != j). One neuron's ``A_abcd = E[z_ia z_ib z_ic z_id] = B_abcd + B_acbd + B_adbc``: it holds at layer 1
(Gaussian) and the step maps ``A - (B_abcd + B_acbd + B_adbc)`` to ``gamma^4`` times itself. Hence
``H = E[z_i z_i (x) G^] = E[G^ (x) G^] = B + (B_acbd + B_adbc)/n`` and

    m' = gamma^2 m + xi^2 (C_b J + r m)                                  (affine: E z z = K exactly, G1 = G2 = 0)
    B' = gamma^4 B + gamma^2 xi^2 (Y + Y^T) + xi^4 (C_b^2 J J + C_b r (J m + m J) + r^2 H),   Y = C_b m J + r H,

(``Y^T`` swaps the pairs (ab), (cd)). ``cov = B - m m`` is the connected four-point function of distinct neurons
(``V/n + V1/n^2 + ...``) and one neuron's fourth cumulant is ``cov_(ab)(cd) + cov_(ac)(bd) + cov_(ad)(bc)``, as
without shortcuts.

**One input, every order.** With ``u = z^2`` and ``M_P = E[prod_t u_t^(p_t)]`` over distinct neurons t (a partition
P; ``M_() = 1``), ``E[z'^(2p) | layer l] = sum_k binom(2p, 2k) (2k-1)!! gamma^(2p-2k) xi^(2k) u^(p-k) s^k`` with
``s = C_b + r G^``; the products over a tuple's neurons, ``s^b`` expanded binomially and each ``G^`` split as above
give the linear map of the ``M_P`` with ``sum p_t <= 3`` (:func:`_one_input_map`). From them: the connected six-point
function of three distinct neurons ``kappa3 = M_111 - 3 m M_11 + 2 m^3`` (``U/n^2 + ...``) and one neuron's sixth
cumulant ``M_3 - 15 m M_2 + 30 m^3``.

**Orders in 1/n.** The same maps on truncated power series in 1/n (every ``1/n_l`` one power; the coefficient of
order k at layer l is read in units of ``n_{l-1}^-k``) give the 1/n and 1/n^2 coefficients ``V``, ``V1``, ``U``
exactly (:func:`linear_residual_nnlo`), where the general residual theory stops at 1/n
(:mod:`pdlt.theory.residual`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import product

import numpy as np

from ..architecture import MLP
from ..errors import DivergentFlowError

#: the partitions of the one-input chain (``sum p_t <= 3``), in the order of :func:`_one_input_map`'s rows
PARTITIONS = ((), (1,), (2,), (1, 1), (3,), (2, 1), (1, 1, 1))
_INDEX = {p: i for i, p in enumerate(PARTITIONS)}
#: series length: orders 1/n^0 .. 1/n^3 (the 1/n^2 coefficients are read from it; 1/n^3 is a spare for checks)
SERIES = 4


def _poly_mul(p, q):
    out = [0.0] * (len(p) + len(q) - 1)
    for i, x in enumerate(p):
        for j, y in enumerate(q):
            out[i + j] += x * y
    return out


@lru_cache(maxsize=None)
def _times_gram(parts: tuple, j: int) -> tuple:
    """``E[prod_t u_t^(p_t) G^^j]`` as ``((P, poly), ...)``: the moment ``M_P`` times a polynomial in 1/n (coefficients
    from the constant term up), by splitting one ``G^ = (1/n) sum_k u_k`` at a time over the neurons present (1/n each)
    and a new one (1 - q/n)."""
    terms = {tuple(sorted(parts, reverse=True)): [1.0]}
    for _ in range(j):
        new: dict = {}
        for P, c in terms.items():
            q = len(P)
            for t in range(q):
                key = tuple(sorted(P[:t] + (P[t] + 1,) + P[t + 1:], reverse=True))
                new[key] = _poly_add(new.get(key, [0.0]), _poly_mul([0.0, 1.0], c))
            key = P + (1,)
            new[key] = _poly_add(new.get(key, [0.0]), _poly_mul([1.0, -float(q)], c))
        terms = new
    return tuple(terms.items())


def _poly_add(p, q):
    out = [0.0] * max(len(p), len(q))
    for i, x in enumerate(p):
        out[i] += x
    for i, x in enumerate(q):
        out[i] += x
    return out


def _double_factorial(k: int) -> int:
    return math.prod(range(k, 0, -2)) if k > 0 else 1


@lru_cache(maxsize=256)
def _one_input_map(gamma: float, xi: float, C_b: float, r: float) -> np.ndarray:
    """The step of the one-input chain, ``T`` ``(4, 7, 7)``: ``M'_P = sum_k n^-k sum_Q T[k, P, Q] M_Q`` over
    :data:`PARTITIONS` (module docstring)."""
    T = np.zeros((4, len(PARTITIONS), len(PARTITIONS)))
    T[0, 0, 0] = 1.0
    for row, P in enumerate(PARTITIONS[1:], start=1):
        for ks in product(*(range(p + 1) for p in P)):
            coef = 1.0
            for p, k in zip(P, ks):
                coef *= math.comb(2 * p, 2 * k) * _double_factorial(2 * k - 1) * gamma ** (2 * (p - k)) * xi ** (2 * k)
            if coef == 0.0:
                continue
            left = tuple(p - k for p, k in zip(P, ks) if p > k)
            b = sum(ks)
            for j in range(b + 1):
                w = coef * math.comb(b, j) * C_b ** (b - j) * r**j
                if w == 0.0:
                    continue
                for Q, poly in _times_gram(left, j):
                    for k, c in enumerate(poly):
                        T[k, row, _INDEX[Q]] += w * c
    return T


def _shift(v: np.ndarray, k: int) -> np.ndarray:
    """``v`` (series on the first axis) times ``eps^k``."""
    if k == 0:
        return v
    out = np.zeros_like(v)
    out[k:] = v[:-k]
    return out


def _inv_width(v: np.ndarray, n: float, k: int, series: bool) -> np.ndarray:
    """``v / n^k``: a factor of the value, or k powers of the series variable (every 1/n_l one power)."""
    return _shift(v, k) / n**k if series else v / n**k


def _layers(net: MLP):
    """``(l, gamma, xi, C_W a^2, C_b, n_l)`` of each step layer l -> l + 1."""
    a2 = float(net.activation.slopes[0]) ** 2
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        yield l, float(net.gamma[l]), float(net.xi[l]), float(C_W) * a2, float(C_b), float(net.widths[l])


def _check(values, l: int):
    if not all(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e300) for v in values):
        raise DivergentFlowError(f"the moments of the deep linear residual network leave float64's range at layer "
                                 f"l = {l}: scale the input down, or reduce C_W, gamma or the depth", layer=l)


def four_point_chain(net: MLP, K1: np.ndarray, series: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(m, cov)`` of d inputs at every layer (module docstring): ``m`` ``(L, d, d)`` exact and the connected four-point
    function of distinct neurons ``cov`` ``(L, d, d, d, d)`` exact, or with ``series`` its power series
    ``(L, SERIES, d, d, d, d)`` in 1/n (entry k: the order-k part, every ``1/n_l`` evaluated)."""
    d, L = K1.shape[0], net.L
    S = SERIES if series else 1
    J = np.ones((d, d))
    m = np.asarray(K1, dtype=np.float64)
    B = np.zeros((S, d, d, d, d))
    B[0] = np.einsum("ab,cd->abcd", m, m)
    means, covs = np.zeros((L, d, d)), np.zeros((L, S, d, d, d, d))
    means[0], covs[0] = m, B
    with np.errstate(over="ignore", invalid="ignore"):
        for l, g, xi, r, C_b, n in _layers(net):
            g2, x2 = g * g, xi * xi
            H = B + _inv_width(B.transpose(0, 1, 3, 2, 4) + B.transpose(0, 1, 4, 3, 2), n, 1, series)
            Y = r * H
            Y[0] += C_b * np.einsum("ab,cd->abcd", m, J)
            const = C_b * C_b * np.ones((d,) * 4) + C_b * r * (np.einsum("ab,cd->abcd", J, m)
                                                              + np.einsum("ab,cd->abcd", m, J))
            B = g2 * g2 * B + g2 * x2 * (Y + Y.transpose(0, 3, 4, 1, 2)) + x2 * x2 * r * r * H
            B[0] += x2 * x2 * const
            m = g2 * m + x2 * (C_b * J + r * m)
            _check((B, m), l + 1)
            means[l] = m
            covs[l] = B
    covs[:, 0] -= np.einsum("lab,lcd->labcd", means, means)
    return means, (covs if series else covs[:, 0])


def one_input_chain(net: MLP, K1: float, series: bool = False) -> np.ndarray:
    """The raw moments ``M_P`` of one input over :data:`PARTITIONS` at every layer, ``(L, 7)``, or with ``series``
    their power series in 1/n, ``(L, SERIES, 7)`` (module docstring)."""
    S = SERIES if series else 1
    M = np.zeros((S, len(PARTITIONS)))
    M[0] = [math.prod(_double_factorial(2 * p - 1) * K1**p for p in P) for P in PARTITIONS]
    out = np.zeros((net.L, S, len(PARTITIONS)))
    out[0] = M
    with np.errstate(over="ignore", invalid="ignore"):
        for l, g, xi, r, C_b, n in _layers(net):
            T = _one_input_map(g, xi, C_b, r)
            M = sum(_inv_width(M, n, k, series) @ T[k].T for k in range(T.shape[0]))
            _check((M,), l + 1)
            out[l] = M
    return out if series else out[:, 0]


def connected_moments(M: np.ndarray) -> dict:
    """From raw one-input moments ``M`` ``(..., S, 7)`` (power series of length S over :data:`PARTITIONS`; S = 1 for
    exact values) the mean ``m`` ``(...)`` (exact: no 1/n part) and, as series ``(..., S)``, the connected four-point
    function of distinct neurons ``cov``, the connected six-point function of three distinct neurons ``kappa3`` and
    one neuron's sixth cumulant ``kappa6``."""
    m = M[..., 0, _INDEX[(1,)]]
    e0 = np.zeros(M.shape[-2])
    e0[0] = 1.0
    m1 = m[..., None]

    def at(P):
        return M[..., _INDEX[P]]

    return {"m": m, "cov": at((1, 1)) - m1**2 * e0,
            "kappa3": at((1, 1, 1)) - 3.0 * m1 * at((1, 1)) + 2.0 * m1**3 * e0,
            "kappa6": at((3,)) - 15.0 * m1 * at((2,)) + 30.0 * m1**3 * e0}


def first_kernel(net: MLP, xs: np.ndarray) -> np.ndarray:
    """Layer 1's kernel ``K1`` ``(d, d)`` (exactly Gaussian)."""
    from .kernel import kernel_flow

    return np.asarray(kernel_flow(net.truncated(1, net.widths[1]), xs).K[0], dtype=np.float64)


def linear_residual_nnlo(net: MLP, xs: np.ndarray):
    """One input ``xs`` ``(1, n_0)`` through a deep linear residual ``net`` to order 1/n^2: an :class:`pdlt.NNLO` with
    ``G1 = G2 = 0`` and ``V``, ``V1``, ``U`` the exact 1/n and 1/n^2 coefficients of the chain (module docstring),
    ``U/n^2`` being the connected six-point function of three distinct neurons."""
    from ..errors import emit
    from .nnlo import NNLO, nnlo_caveats

    M = one_input_chain(net, float(first_kernel(net, xs)[0, 0]), series=True)
    c = connected_moments(M)
    n = np.array([1.0] + [float(w) for w in net.widths[1:net.L]])     # layer l reads its orders in n_{l-1}
    zero = np.zeros(net.L)
    out = {"G1": zero, "G2": zero.copy(), "V": c["cov"][:, 1] * n, "V1": c["cov"][:, 2] * n**2,
           "U": c["kappa3"][:, 2] * n**2}
    out["V"][0] = out["V1"][0] = out["U"][0] = 0.0
    caveats = nnlo_caveats(net, out)
    emit(caveats, stacklevel=4)
    return NNLO(net=net, x=xs, K=c["m"], caveats=caveats, **out)

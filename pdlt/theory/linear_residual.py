r"""Deep linear residual networks at every order in 1/n: the chain of moments over tuples of distinct neurons
(derivations/README.md section 13.7).

Network (``sigma(z) = a z``; pdlt.MLP's residual steps, ``gamma = 0, xi = 1`` being a plain layer):

    z^(1)_i = b_i + sum_j W_ij x_j,     z^(l+1)_i = gamma z^(l)_i + xi (b_i + a sum_j W_ij z^(l)_j).

Given layer l the neurons of layer l + 1 are independent, ``z'_i ~ N(gamma z_i, xi^2 Sigma)`` with
``Sigma = C_b J + r G^``, ``G^ = (1/n) sum_k z_k z_k^T`` (J the all-ones matrix, ``r = C_W a^2``, ``n = n_l``). The
shortcut keeps the mean ``gamma z_i``, so a neuron remembers its own past and the metric is not the whole state. The
moments over *tuples of distinct neurons* close instead:

* ``E[... | layer l]`` factorizes over the tuple's neurons, each factor ``E[z'_ia z'_ib | l] = gamma^2 z_ia z_ib +
  xi^2 Sigma_ab``;
* ``Sigma`` is affine in ``G^``, and ``G^`` times fields of q distinct neurons splits, by exchangeability, into the
  extra neuron being one of the q (weight 1/n each) or a new one (weight 1 - q/n);
* one neuron's moments are sums over pairings of distinct-neuron moments, e.g.
  ``E[z_ia z_ib z_ic z_id] = B_(ab)(cd) + B_(ac)(bd) + B_(ad)(bc)`` (the **pairing identity**). Given the weights of
  layers >= 2, z is Gaussian with a covariance whose law is invariant under rotations of the neuron index, a property
  such laws share. The fourth order also follows by induction (the step maps the difference to ``gamma^4`` times
  itself); the sixth is checked against a chain that does not assume it and against exact expectations (tests).

So the raw moments ``m_X = E[z_iX]``, ``B_XY = E[z_iX z_jY]``, ``D_XYZ = E[z_iX z_jY z_kZ]`` (pairs of input indices
X = (ab), ...; i, j, k distinct) map linearly onto themselves at every width, with coefficients polynomial in 1/n:

    m'  = gamma^2 m + xi^2 (C_b J + r m)                                (affine: E z z = K exactly, G1 = G2 = 0)
    B'  = gamma^4 B + gamma^2 xi^2 (Y_XY + Y_YX) + xi^4 E[Sigma_X Sigma_Y],       Y_XY = E[z_iX Sigma_Y],
    D'  = gamma^6 D + gamma^4 xi^2 sum_3 E[z_iX z_jY Sigma_Z] + gamma^2 xi^4 sum_3 E[z_iX Sigma_Y Sigma_Z]
          + xi^6 E[Sigma_X Sigma_Y Sigma_Z],

with ``E[z_iX G^_Y] = E[G^_X G^_Y] = B + (A - B)/n``, ``E[z_iX z_jY G^_Z] = (C_XZ|Y + C_YZ|X)/n + (1 - 2/n) D``,
``E[z_iX G^_Y G^_Z] = E[G^ G^ G^] = (A6/n + (1 - 1/n) C_XY|Z)/n + (1 - 1/n) E[z_iX z_jY G^_Z]`` (A, C, A6: one
neuron's four slots, four slots on one neuron and two on another, six on one; each a pairing sum of B or D).

``cov = B - m m`` is the connected four-point function of distinct neurons (``V/n + V1/n^2 + ...``), one neuron's
fourth cumulant ``cov_(ab)(cd) + cov_(ac)(bd) + cov_(ad)(bc)``; ``kappa3 = D - sum_3 m B + 2 m m m`` the connected
six-point function of three distinct neurons (``U/n^2 + ...``), and one neuron's sixth cumulant ``15 kappa3`` on the
diagonal, as without shortcuts.

**Orders in 1/n.** The same maps on power series truncated after 1/n^3 (every ``1/n_l`` one power; the coefficient
of order k at layer l is read in units of ``n_{l-1}^-k``) give the 1/n and 1/n^2 coefficients ``V``, ``V1``, ``U``
exactly (:func:`linear_residual_orders`), where the general residual theory stops at 1/n
(:mod:`pdlt.theory.residual`). **The NTK** (one input). With ``a_i = gamma e_i + xi a w_i`` the rows of the step's matrix, the NTK matrix obeys
``H' = xi^2 (lambda_b + lambda_W a^2 G^) 1 + A H A^T`` (the new layer's parameters, then the chain rule). Given layer
l the rows are independent, ``E[H'_ii | l] = c + gamma^2 H_ii + xi^2 r T^`` (``T^ = tr H / n``, c the first term)
and ``E[H'_ik^2 | l] = gamma^4 H_ik^2 + gamma^2 s ((H^2)_ii + (H^2)_kk) + s^2 tr H^2`` (``s = xi^2 r/n``), and
``E[H'_ik z'_i z'_k | l]`` likewise; with the pairing identity (``E H_ii^2 = E H_ii H_kk + 2 E H_ik^2``, the law of
(H, z z^T) being invariant under rotations of the neuron index) seven moments close: ``E z^2``, ``E z_i^2 z_k^2``,
``E H_ii``, ``E H_ii H_kk``, ``E H_ik^2``, ``E H_ii z_k^2``, ``E H_ik z_i z_k`` (:func:`ntk_chain`). Their
connected parts are the NTK statistics ``A``, ``B``, ``D``, ``F`` of :mod:`pdlt.theory.ntk_statistics` at every
order (:func:`linear_ntk_all_orders`).

With ``C_b = 0`` the metric's statistics have closed forms (derivations/linear_residual.py), e.g.
``V1 = 2 beta^2 (l-1)(l-2) K^2`` with ``beta = 1 - t^2``, ``t = gamma^2/(gamma^2 + xi^2 C_W a^2)``:

>>> import pdlt
>>> th = pdlt.nnlo(pdlt.MLP("linear", (1, 10, 10, 10), gamma=0.8, xi=0.6), [1.0])   # K = 1 at every layer
>>> t = 0.64 / (0.64 + 0.36)
>>> round(float(th.V1[2]), 12), round(2 * (1 - t**2) ** 2 * 2, 12)
(1.39428864, 1.39428864)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..architecture import MLP
from ..errors import DivergentFlowError

#: series length: orders 1/n^0 .. 1/n^3 (the 1/n^2 coefficients are read from it; 1/n^3 is a spare for checks)
SERIES = 4
_L6 = "abcdef"


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
    """``(l, gamma, xi, C_W a^2, C_b, n_l)`` of each step layer l -> l + 1, as numpy floats (whose powers overflow to
    inf, which :func:`_check` reports, where Python's raise OverflowError)."""
    a2 = np.float64(net.activation.slopes[0]) ** 2
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        yield (l, np.float64(net.gamma[l]), np.float64(net.xi[l]), np.float64(C_W) * a2, np.float64(C_b),
               float(net.widths[l]))


def _check(values, l: int):
    if not all(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e300) for v in values):
        raise DivergentFlowError(f"the moments of the deep linear residual network leave float64's range at layer "
                                 f"l = {l}: scale the input down, or reduce C_W, gamma, xi or the depth", layer=l)


@lru_cache(maxsize=None)
def _matchings(labels: str) -> tuple[str, ...]:
    """The perfect matchings of ``labels`` as strings of consecutive pairs (``"abcd"`` -> ab cd, ac bd, ad bc)."""
    if not labels:
        return ("",)
    first, rest = labels[0], labels[1:]
    return tuple(first + rest[i] + m for i in range(len(rest)) for m in _matchings(rest[:i] + rest[i + 1:]))


def _pairing_sum(T: np.ndarray, group: str, other: str = "") -> np.ndarray:
    """One neuron carrying the slots ``group`` (with the pairs ``other`` on other neurons): the sum over the perfect
    matchings of ``group`` of the distinct-neuron moment ``T`` ``(S, d, ..., d)`` (the pairing identity), as an array
    over the slots in alphabetical order."""
    out = "s" + "".join(sorted(group + other))
    return sum(np.einsum(f"s{m}{other}->{out}", T) for m in _matchings(group))


def _by_pairs(T: np.ndarray, order: str) -> np.ndarray:
    """``T`` over pairs (X, Y, Z) re-indexed so that the pair named ``order[k]`` sits in place k (``"YXZ"``:
    ``out[X, Y, Z] = T[Y, X, Z]``)."""
    names = {"X": "ab", "Y": "cd", "Z": "ef"}
    return np.einsum("s" + "".join(names[c] for c in order) + "->s" + _L6[:2 * len(order)], T)


def tuple_chain(net: MLP, K1: np.ndarray, six: bool = True, series: bool = False) -> dict:
    """The chain of moments over neuron tuples for d inputs (module docstring), from layer 1's kernel ``K1``
    ``(d, d)``: ``{"m": (L, d, d), "cov": (L, d, d, d, d), "kappa3": (L,) + (d,)*6}`` exact (``kappa3`` with
    ``six``), or with ``series`` their power series in 1/n, an axis of length :data:`SERIES` after the layer axis
    (entry k: the order-k part, every ``1/n_l`` evaluated)."""
    d, L = K1.shape[0], net.L
    S = SERIES if series else 1
    m = np.asarray(K1, dtype=np.float64)
    J = np.ones((d, d))
    B = np.zeros((S,) + (d,) * 4)
    B[0] = np.einsum("ab,cd->abcd", m, m)
    D = np.zeros((S,) + (d,) * 6) if six else None
    if six:
        D[0] = np.einsum("ab,cd,ef->abcdef", m, m, m)
    out = {"m": np.zeros((L, d, d)), "B": np.zeros((L, S) + (d,) * 4)}
    if six:
        out["D"] = np.zeros((L, S) + (d,) * 6)
    out["m"][0], out["B"][0] = m, B
    if six:
        out["D"][0] = D
    with np.errstate(over="ignore", invalid="ignore"):
        for l, g, xi, r, C_b, n in _layers(net):
            g2, x2 = g * g, xi * xi

            def inv(v, k=1):
                return _inv_width(v, n, k, series)

            A = _pairing_sum(B, "abcd")
            H = B + inv(A - B)                                     # E[z_iX G^_Y] = E[G^_X G^_Y]
            mm = np.einsum("ab,cd->abcd", m, J)                  # m_X over (X, Y)
            if six:
                D = _sixth_step(D, B, H, m, g2, x2, r, C_b, inv)
            Y = r * H
            Y[0] += C_b * mm
            ss = r * r * H                                         # E[Sigma_X Sigma_Y]
            ss[0] += C_b * C_b + C_b * r * (mm + np.einsum("ab,cd->abcd", J, m))
            B = g2 * g2 * B + g2 * x2 * (Y + _by_pairs(Y, "YX")) + x2 * x2 * ss
            m = g2 * m + x2 * (C_b * J + r * m)
            _check((B, m) + ((D,) if six else ()), l + 1)
            out["m"][l], out["B"][l] = m, B
            if six:
                out["D"][l] = D
    m = out["m"]
    e0 = np.zeros(S)
    e0[0] = 1.0
    mm = np.einsum("lab,lcd,s->lsabcd", m, m, e0)
    res = {"m": m, "cov": out["B"] - mm}
    if six:
        Bl = out["B"]
        mB = (np.einsum("lab,lscdef->lsabcdef", m, Bl) + np.einsum("lcd,lsabef->lsabcdef", m, Bl)
              + np.einsum("lef,lsabcd->lsabcdef", m, Bl))
        res["kappa3"] = out["D"] - mB + 2.0 * np.einsum("lab,lcd,lef,s->lsabcdef", m, m, m, e0)
        res["kappa3"][0] = 0.0                                      # layer 1 is Gaussian (the rest is round-off)
    res["cov"][0] = 0.0
    if not series:
        res = {k: (v if k == "m" else v[:, 0]) for k, v in res.items()}
    return res


def _sixth_step(D, B, H, m, g2, x2, r, C_b, inv):
    """``D'`` (module docstring) from the moments of layer l (series on the first axis of D, B, H)."""
    d = m.shape[0]
    one = np.ones((d, d))
    # E[z_iX z_jY G^_Z]: the extra neuron is i (slots X, Z on i), j (Y, Z on j) or a new one
    zzG = inv(_pairing_sum(D, "abef", "cd") + _pairing_sum(D, "cdef", "ab")) + D - 2.0 * inv(D)
    # E[z_iX G^_Y G^_Z] = E[G^_X G^_Y G^_Z]
    zXY_G = inv(_pairing_sum(D, _L6)) + _pairing_sum(D, "abcd", "ef") - inv(_pairing_sum(D, "abcd", "ef"))
    zGG = inv(zXY_G) + zzG - inv(zzG)

    mX, mY, mZ = (np.einsum("ab,cd,ef->abcdef", *(m if k == j else one for k in range(3))) for j in range(3))
    HXY = np.einsum("sabcd,ef->sabcdef", H, one)
    BXY = np.einsum("sabcd,ef->sabcdef", B, one)
    # gamma^4 xi^2: E[z_iX z_jY Sigma_Z] over the three choices of the Sigma pair
    T = r * zzG + C_b * BXY
    sum_T = T + _by_pairs(T, "XZY") + _by_pairs(T, "YZX")
    # gamma^2 xi^4: E[z_iX Sigma_Y Sigma_Z]
    S_ = r * r * zGG + C_b * r * (HXY + _by_pairs(HXY, "XZY"))
    S_[0] += C_b * C_b * mX
    sum_S = S_ + _by_pairs(S_, "YXZ") + _by_pairs(S_, "ZXY")
    # xi^6: E[Sigma_X Sigma_Y Sigma_Z]
    R = r**3 * zGG + C_b * r * r * (HXY + _by_pairs(HXY, "XZY") + _by_pairs(HXY, "YZX"))
    R[0] += C_b**3 + C_b * C_b * r * (mX + mY + mZ)
    return g2**3 * D + g2 * g2 * x2 * sum_T + g2 * x2 * x2 * sum_S + x2**3 * R


def first_kernel(net: MLP, xs: np.ndarray) -> np.ndarray:
    """Layer 1's kernel ``K1`` ``(d, d)`` (exactly Gaussian)."""
    from .kernel import kernel_flow

    return np.asarray(kernel_flow(net.truncated(1, net.widths[1]), xs).K[0], dtype=np.float64)


def linear_residual_orders(net: MLP, xs: np.ndarray) -> dict:
    """The 1/n and 1/n^2 statistics of d inputs ``xs`` ``(d, n_0)`` through a deep linear residual ``net``, in the
    units of :class:`pdlt.theory.nnlo.SecondOrderStatistics` (layer l in ``n_{l-1}``): ``K``, ``G1 = G2 = 0``, ``V``,
    ``V1`` and ``U`` (``(L,) + (d,)*2k``), the exact series coefficients of the chain (module docstring)."""
    c = tuple_chain(net, first_kernel(net, xs), six=True, series=True)
    L, d = c["m"].shape[:2]
    n = np.array([1.0] + [float(w) for w in net.widths[1:L]])
    scale = lambda k, rank: (n**k).reshape((L,) + (1,) * rank)   # noqa: E731
    out = {"K": c["m"], "G1": np.zeros((L, d, d)), "G2": np.zeros((L, d, d)),
           "V": c["cov"][:, 1] * scale(1, 4), "V1": c["cov"][:, 2] * scale(2, 4), "U": c["kappa3"][:, 2] * scale(2, 6)}
    for k in ("V", "V1", "U"):
        out[k][0] = 0.0
    return out


#: the states of the one-input NTK chain (module docstring, "The NTK")
NTK_STATES = ("m", "B", "h", "hh_d", "hh_o", "hz_d", "hz_o")


def ntk_chain(net: MLP, K1: float, Theta1: float, lambda_b, lambda_W, series: bool = False) -> np.ndarray:
    """The exact chain of the NTK jointly with the preactivations, one input (module docstring), from layer 1's
    ``K1`` and ``Theta1`` and the per-layer learning rates (L floats each): ``(L, 7)`` over :data:`NTK_STATES`, or
    with ``series`` ``(L, SERIES, 7)``, the power series in 1/n. Raw moments with i != k distinct neurons:
    ``m = E z_i^2``, ``B = E z_i^2 z_k^2``, ``h = E H_ii``, ``hh_d = E H_ii H_kk``, ``hh_o = E H_ik^2``,
    ``hz_d = E H_ii z_k^2``, ``hz_o = E H_ik z_i z_k``."""
    S = SERIES if series else 1
    a2 = float(net.activation.slopes[0]) ** 2
    x = np.zeros((S, len(NTK_STATES)))
    x[0] = [K1, K1 * K1, Theta1, Theta1 * Theta1, 0.0, Theta1 * K1, 0.0]
    out = np.zeros((net.L, S, len(NTK_STATES)))
    out[0] = x
    with np.errstate(over="ignore", invalid="ignore"):
        for l, g, xi, r, C_b, n in _layers(net):
            lb, lw = float(lambda_b[l]), float(lambda_W[l])
            m, B, h, hh_d, hh_o, hz_d, hz_o = (x[:, k] for k in range(len(NTK_STATES)))

            def inv(v):
                return _inv_width(v, n, 1, series)

            one = np.zeros(S)
            one[0] = 1.0
            g2, x2 = g * g, xi * xi
            # the pairing identity gives one neuron's moments: E z^4 = 3B, E H_ii^2 = hh_d + 2 hh_o,
            # E H_ii z_i^2 = hz_d + 2 hz_o; every G^ = (1/n) sum z^2, T^ = (1/n) tr H splits over the neurons present
            GG = B + inv(2.0 * B)                                  # E[G^ G^] = E[z_k^2 G^]
            HT = hh_d + inv(2.0 * hh_o)                            # E[H_ii T^] = E[T^ T^]
            ZT = hz_d + inv(2.0 * hz_o)                            # E[z_k^2 T^] = E[H_ii G^] = E[G^ T^]
            c0, cG = x2 * lb, x2 * lw * a2                          # c = c0 + cG G^ (the new layer's own parameters)
            # E[H'_ii | l] = c + g2 H_ii + x2 r T^ ;  E[z'^2 | l] = g2 z^2 + x2 (C_b + r G^)
            h_new = c0 * one + cG * m + (g2 + x2 * r) * h
            m_new = g2 * m + x2 * (C_b * one + r * m)
            B_new = (g2 * g2 * B + 2.0 * g2 * x2 * (C_b * m + r * GG) + x2 * x2 * (C_b * C_b * one + 2.0 * C_b * r * m
                                                                                  + r * r * GG))
            # (c + g2 H_ii + x2 r T^)(c + g2 H_kk + x2 r T^)
            R = x2 * r
            hh_d_new = (c0 * c0 * one + 2.0 * c0 * cG * m + cG * cG * GG + 2.0 * (c0 * (g2 + R) * h + cG * g2 * ZT
                                                                                   + cG * R * ZT)
                        + g2 * g2 * hh_d + 2.0 * g2 * R * HT + R * R * HT)
            # gamma^4 H_ik^2 + gamma^2 sigma^2 ((H^2)_ii + (H^2)_kk) + sigma^4 tr H^2, sigma^2 = x2 r / n
            HH = hh_o + inv(hh_d + hh_o)                           # (1/n) E (H^2)_ii
            hh_o_new = g2 * g2 * hh_o + 2.0 * g2 * R * HH + R * R * HH
            # (c + g2 H_ii + x2 r T^)(g2 z_k^2 + x2 C_b + x2 r G^)
            hz_d_new = (c0 * (g2 * m + x2 * C_b * one + R * m) + cG * (g2 * GG + x2 * C_b * m + R * GG)
                        + g2 * (g2 * hz_d + x2 * C_b * h + R * ZT) + R * (g2 * ZT + x2 * C_b * h + R * ZT))
            HZ = hz_o + inv(hz_d + hz_o)                           # (1/n) E z_i (H z)_i
            hz_o_new = g2 * g2 * hz_o + 2.0 * g2 * R * HZ + R * R * HZ
            x = np.stack([m_new, B_new, h_new, hh_d_new, hh_o_new, hz_d_new, hz_o_new], axis=-1)
            _check((x,), l + 1)
            out[l] = x
    return out if series else out[:, 0]


@dataclass(frozen=True)
class LinearNTKAllOrders:
    """The NTK of one input through a deep linear network (shortcuts allowed) at every order in 1/n
    (:func:`linear_ntk_all_orders`), per layer ``(L,)`` (layer l at index l - 1; i != k distinct neurons):
    ``Theta`` = ``E[H_ii]`` (no 1/n correction: ``Theta1 = 0``), ``variance`` = ``Var(H_ii)``, and the n-scaled
    exact ``A`` = ``n Cov(H_ii, H_kk)``, ``B`` = ``n E[H_ik^2]``, ``D`` = ``n Cov(H_ii, z_k^2)``, ``F`` =
    ``n E[H_ik z_i z_k]`` (``n = n_{l-1}``; their 1/n parts are the O(1/n) statistics of :func:`pdlt.ntk`); and
    ``next_order``: the 1/n^2 coefficients ``{"A": ..., "B": ..., "D": ..., "F": ...}`` (``A = A_0 + A_1/n + ...``
    with ``A_0`` the O(1/n) theory's A)."""

    net: MLP
    x: np.ndarray
    Theta: np.ndarray
    variance: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    next_order: dict


def linear_ntk_all_orders(net: MLP, x, lambda_b=1.0, lambda_W=1.0) -> LinearNTKAllOrders:
    """The exact NTK statistics of one input ``x`` ``(n_0,)`` or ``(1, n_0)`` through a deep linear ``net`` with or
    without shortcuts, at every width (module docstring, "The NTK"): a :class:`LinearNTKAllOrders`. Raises
    :class:`~pdlt.errors.ParameterError` for other activations (``activation``) and several inputs (``x``);
    :class:`~pdlt.errors.DivergentFlowError` naming the layer where a moment leaves float64's range.

    >>> import pdlt
    >>> ex = pdlt.linear_ntk_all_orders(pdlt.MLP("linear", (1, 8, 8, 8), C_W=1.0), [1.0], lambda_b=0.0)
    >>> th = pdlt.ntk(pdlt.MLP("linear", (1, 8, 8, 8), C_W=1.0), [[1.0]], lambda_b=0.0)
    >>> float(ex.Theta[2]), float(th.Theta[2, 0, 0])       # no 1/n correction to the mean NTK
    (3.0, 3.0)
    """
    from ..errors import ParameterError
    from .ntk import learning_rates, ntk
    from .wishart import is_linear

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if not is_linear(net.activation):
        raise ParameterError(f"the exact NTK chain is derived for deep linear networks (sigma = a z); "
                             f"{net.activation.name} is not linear: use pdlt.ntk (order 1/n)", "activation")
    xs = net.inputs(x)
    if xs.shape[0] != 1:
        raise ParameterError(f"the exact NTK chain takes one input; got d = {xs.shape[0]}: call it per input", "x")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    Theta1 = float(ntk(net.truncated(1, net.widths[1]), xs, lb[:1], lw[:1]).Theta[0, 0, 0])
    K1 = float(first_kernel(net, xs)[0, 0])
    n = np.array([1.0] + [float(w) for w in net.widths[1:net.L]])
    fields = {}
    for series in (False, True):
        c = ntk_chain(net, K1, Theta1, lb, lw, series=series)
        m, B, h, hh_d, hh_o, hz_d, hz_o = np.moveaxis(c, -1, 0)
        if series:      # the means have no 1/n part: their products belong to the series' constant term
            e0 = (np.arange(SERIES) == 0).astype(float)
            hh, hm = h[:, :1] * h[:, :1] * e0, h[:, :1] * m[:, :1] * e0
        else:
            hh, hm = h * h, h * m
        fields[series] = {"A": hh_d - hh, "B": hh_o, "D": hz_d - hm, "F": hz_o, "variance": hh_d + 2.0 * hh_o - hh,
                          "Theta": h}
    exact, ser = fields[False], fields[True]
    scaled = {k: n * exact[k] for k in "ABDF"}
    for k in "ABDF":
        scaled[k][0] = 0.0                                   # layer 1: deterministic NTK
    nxt = {k: ser[k][:, 2] * n**2 for k in "ABDF"}
    for k in nxt:
        nxt[k][0] = 0.0
    var = exact["variance"].copy()
    var[0] = 0.0
    return LinearNTKAllOrders(net=net, x=xs, Theta=exact["Theta"], variance=var, next_order=nxt, **scaled)

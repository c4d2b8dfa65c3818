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
(:mod:`pdlt.theory.residual`).

**The NTK.** With ``a_i = gamma e_i + xi a w_i`` the rows of the step's matrix, the NTK matrices (one per input
pair) obey ``H'_ab = xi^2 (lambda_b + lambda_W a^2 G^_ab) 1 + A H_ab A^T`` (the new layer's parameters, then the
chain rule). Given layer l the rows are independent with covariance ``s 1``, ``s = xi^2 r/n``:
``E[H'_ii;ab | l] = c_ab + gamma^2 H_ii;ab + xi^2 r T^_ab`` (``T^ = tr H / n``, c the first term), and
``E[H'_ik;ab H'_ik;cd | l] = gamma^4 H_ik;ab H_ik;cd + gamma^2 s sum_j (H_ij;ab H_ij;cd + H_jk;ab H_jk;cd) + s^2
sum_ij H_ij;ab H_ij;cd``, ``E[H'_ik;ab z'_ic z'_kd | l]`` likewise. With the pairing identity for (H, z z^T), whose
law is invariant under rotations of the neuron index (``E H_ii;ab H_ii;cd = E H_ii;ab H_kk;cd + E H_ik;ab H_ik;cd +
E H_ik;ab H_ik;dc``), seven moments close (:data:`NTK_STATES`, :func:`ntk_chain`); their connected parts are the NTK
statistics ``A``, ``B``, ``D``, ``F`` of :mod:`pdlt.theory.ntk_statistics` at every order
(:func:`linear_ntk_all_orders`).

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


def _check(values, l: int, what: str = "C_W, gamma, xi or the depth"):
    if not all(np.all(np.isfinite(v)) and np.all(np.abs(v) < 1e300) for v in values):
        raise DivergentFlowError(f"the moments of the deep linear residual network leave float64's range at layer "
                                 f"l = {l}: scale the input down, or reduce {what}", layer=l)


#: widest layer for the exact (not series) chains: their connected functions, of order 1/n, are differences of raw
#: moments of order 1, so they keep about 1 - log10(n eps) digits; above this width fewer than 8
MAX_EXACT_WIDTH = 4e7


def _check_widths(net: MLP) -> None:
    """Refuse widths where the exact chains' cancellation would cost more than 8 digits (:data:`MAX_EXACT_WIDTH`)."""
    from ..errors import ParameterError

    n = max(net.widths[1:])
    if n > MAX_EXACT_WIDTH:
        raise ParameterError(f"a hidden width of {n:g} is too wide for the exact chain: its connected functions (of "
                             f"order 1/n) are differences of raw moments and would keep fewer than 8 digits above "
                             f"{MAX_EXACT_WIDTH:g}. There the 1/n series is exact to far better than that: use "
                             "pdlt.nnlo (or pdlt.finite_width, pdlt.ntk)", "widths")


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
    if not series:
        _check_widths(net)
    S = SERIES if series else 1
    m = np.asarray(K1, dtype=np.float64)
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

            m_new, B_new, H = _four_point_step(m, B, g2, x2, r, C_b, inv)
            if six:
                D = _sixth_step(D, B, H, m, g2, x2, r, C_b, inv)
            m, B = m_new, B_new
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


def _four_point_step(m, B, g2, x2, r, C_b, inv):
    """``(m', B', H)`` (module docstring) from the exact ``m`` ``(d, d)`` and the series ``B`` ``(S, d, d, d, d)`` of
    layer l, with ``H = E[z_iX G^_Y] = E[G^_X G^_Y]``."""
    d = m.shape[0]
    J = np.ones((d, d))
    H = B + inv(_pairing_sum(B, "abcd") - B)               # one neuron's fourth moment by the pairing identity
    mm = np.einsum("ab,cd->abcd", m, J)                    # m_X over (X, Y)
    Y = r * H                                               # E[z_iX Sigma_Y]
    Y[0] += C_b * mm
    ss = r * r * H                                          # E[Sigma_X Sigma_Y]
    ss[0] += C_b * C_b + C_b * r * (mm + np.einsum("ab,cd->abcd", J, m))
    B_new = g2 * g2 * B + g2 * x2 * (Y + _by_pairs(Y, "YX")) + x2 * x2 * ss
    return g2 * m + x2 * (C_b * J + r * m), B_new, H


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


def check_shortcuts(net: MLP) -> None:
    """The several-input 1/n^2 theory of a network with shortcuts is this module's chain, derived for
    ``sigma(z) = a z``: a :class:`~pdlt.errors.ParameterError` naming ``gamma`` for any other activation (one input
    has :func:`pdlt.theory.residual_nnlo.residual_nnlo`)."""
    from ..errors import ParameterError
    from .wishart import is_linear

    if net.residual and not is_linear(net.activation):
        raise ParameterError("the several-input 1/n^2 recursions with shortcuts are derived for deep linear networks "
                             "only (the chain of moments over neuron tuples, pdlt.theory.linear_residual): a shortcut "
                             "keeps each neuron's own past, so the metric chain is not Markov in G alone. One input "
                             "at a time has the residual chain (pdlt.nnlo(net, x_a)); otherwise use order 1 "
                             "(pdlt.finite_width) or gamma = 0", "gamma")


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


#: the states of the NTK chain (raw moments over pairs of input indices; i != k distinct neurons)
NTK_STATES = ("m", "B", "h", "hh_d", "hh_o", "hz_d", "hz_o")


def ntk_chain(net: MLP, K1: np.ndarray, Theta1: np.ndarray, lambda_b, lambda_W, series: bool = False) -> dict:
    """The exact chain of the NTK jointly with the preactivations for d inputs (module docstring, "The NTK"), from
    layer 1's ``K1`` and ``Theta1`` ``(d, d)`` and the per-layer learning rates (L floats each): ``{state: (L, d, d)
    or (L, d, d, d, d)}`` over :data:`NTK_STATES`, or with ``series`` an axis of length :data:`SERIES` after the layer
    axis (the power series in 1/n). Raw moments, i != k distinct neurons: ``m_ab = E z_ia z_ib``, ``B_abcd = E z_ia
    z_ib z_kc z_kd``, ``h_ab = E H_ii;ab``, ``hh_d_abcd = E H_ii;ab H_kk;cd``, ``hh_o_abcd = E H_ik;ab H_ik;cd``,
    ``hz_d_abcd = E H_ii;ab z_kc z_kd``, ``hz_o_abcd = E H_ik;ab z_ic z_kd``."""
    if not series:
        _check_widths(net)
    S = SERIES if series else 1
    d = K1.shape[0]
    a2 = np.float64(net.activation.slopes[0]) ** 2
    J = np.ones((d, d))
    e0 = np.zeros(S)
    e0[0] = 1.0

    def outer(x, y):
        return np.einsum("sab,scd->sabcd", x, y)

    def const(t):                    # an exact (d, d) quantity as a series
        return np.einsum("s,ab->sab", e0, t)

    st = {"m": const(K1), "h": const(Theta1)}
    st["B"] = outer(st["m"], const(K1))
    st["hh_d"] = outer(st["h"], const(Theta1))
    st["hz_d"] = outer(st["h"], const(K1))
    st["hh_o"] = np.zeros((S,) + (d,) * 4)
    st["hz_o"] = np.zeros((S,) + (d,) * 4)
    out = {k: np.zeros((net.L,) + v.shape) for k, v in st.items()}
    for k in out:
        out[k][0] = st[k]
    Jc = const(J)
    with np.errstate(over="ignore", invalid="ignore"):
        for l, g, xi, r, C_b, n in _layers(net):
            lb, lw = np.float64(lambda_b[l]), np.float64(lambda_W[l])
            m, B, h, hh_d, hh_o, hz_d, hz_o = (st[k] for k in NTK_STATES)

            def inv(v):
                return _inv_width(v, n, 1, series)

            g2, x2 = g * g, xi * xi
            R = x2 * r
            # one neuron's moments by the pairing identity (H_ik;cd = H_ki;dc)
            single_hh = hh_d + hh_o + np.einsum("sabdc->sabcd", hh_o)            # E H_ii;ab H_ii;cd
            single_hz = hz_d + hz_o + np.einsum("sabdc->sabcd", hz_o)            # E H_ii;ab z_ic z_id
            # every G^ = (1/n) sum z z, T^ = (1/n) sum H_jj split over the neurons present (1/n) or new ones
            m_exact, B_new, GG = _four_point_step(m[0], B, g2, x2, r, C_b, inv)  # GG = E G^_ab G^_cd
            m_new = const(m_exact)
            HT = hh_d + inv(single_hh - hh_d)                                    # E H_ii;ab T^_cd = E T^ T^
            HG = hz_d + inv(single_hz - hz_d)                                    # E H_ii;ab G^_cd = E T^_ab z_kc z_kd
            c0, cG = x2 * lb, x2 * lw * a2                                         # c_ab = c0 + cG G^_ab
            h_new = c0 * Jc + cG * m + (g2 + R) * h
            # E[(c_ab + g2 H_ii;ab + R T^_ab)(c_cd + g2 H_kk;cd + R T^_cd)]
            # E c_ab (g2 H_kk;cd + R T^_cd)
            cH = c0 * (g2 + R) * outer(Jc, h) + cG * (g2 + R) * _by_pairs(HG, "YX")
            hh_d_new = (c0 * c0 * outer(Jc, Jc) + c0 * cG * (outer(Jc, m) + outer(m, Jc)) + cG * cG * GG
                        + cH + _by_pairs(cH, "YX") + g2 * g2 * hh_d + (2.0 * g2 * R + R * R) * HT)
            # gamma^4 H_ik;ab H_ik;cd + gamma^2 s (sum_j H_ij H_ij + sum_j H_jk H_jk) + s^2 sum_ij H_ij H_ij
            hh_o_new = g2 * g2 * hh_o + (2.0 * g2 * R + R * R) * (hh_o + inv(single_hh - hh_o))
            # E[(c_ab + g2 H_ii;ab + R T^_ab)(g2 z_kc z_kd + x2 C_b + R G^_cd)]
            hz_d_new = (c0 * ((g2 + R) * outer(Jc, m) + x2 * C_b * outer(Jc, Jc))
                        + cG * ((g2 + R) * GG + x2 * C_b * outer(m, Jc))
                        + g2 * (g2 * hz_d + x2 * C_b * outer(h, Jc) + R * HG)
                        + R * (g2 * HG + x2 * C_b * outer(h, Jc) + R * HG))
            # gamma^4 z_ic H_ik z_kd + gamma^2 s (z_ic (H z_d)_i + (z_c^T H)_k z_kd) + s^2 z_c^T H z_d
            hz_o_new = g2 * g2 * hz_o + (2.0 * g2 * R + R * R) * (hz_o + inv(single_hz - hz_o))
            st = dict(zip(NTK_STATES, (m_new, B_new, h_new, hh_d_new, hh_o_new, hz_d_new, hz_o_new)))
            _check(tuple(st.values()), l + 1, "C_W, gamma, xi, the learning rates or the depth")
            for k in out:
                out[k][l] = st[k]
    return out if series else {k: v[:, 0] for k, v in out.items()}


@dataclass(frozen=True)
class LinearNTKAllOrders:
    """The NTK of d inputs through a deep linear network (shortcuts allowed) at every order in 1/n
    (:func:`linear_ntk_all_orders`), layer l at index l - 1, ``n = n_{l-1}``, in the tensor conventions of
    :mod:`pdlt.theory.ntk_statistics` but exact: ``Theta`` ``(L, d, d)`` = ``E[H_ii;ab]`` (no 1/n correction),
    ``A``, ``B``, ``D``, ``F`` ``(L, d, d, d, d)`` (``n Cov(H_ii;ab, H_kk;cd) = A_abcd``, ``n E[H_ik;ab H_ik;cd] =
    B_acbd``, ``n Cov(H_ii;ab, z_kc z_kd) = D_abcd``, ``n E[H_ik;ab z_ic z_kd] = F_acbd``, i != k; their 1/n parts are
    the O(1/n) statistics of :func:`pdlt.ntk`), ``variance`` ``(L, d)`` = ``Var(H_ii;aa)``, and ``next_order``: the
    1/n^2 coefficients ``{"A": ..., "B": ..., "D": ..., "F": ...}`` (``A = A_0 + A_1/n + ...``, ``A_0`` the O(1/n)
    theory's); ``first_order``: the chain's own O(1/n) values (``A_0``, ..., and ``"variance"``, the 1/n term of
    ``Var(H_ii;aa)``), against which :func:`pdlt.compare` measures the truncation error. At a layer of width 1 the
    distinct-neuron statistics are formal values (no second neuron), while ``Theta`` and ``variance`` stay exact."""

    net: MLP
    x: np.ndarray
    Theta: np.ndarray
    variance: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    next_order: dict
    first_order: dict


def _ntk_tensors(c: dict, series: bool) -> dict:
    """A, B, D, F (not yet n-scaled) and Var(H_ii;aa) from the chain's raw moments (series: means enter the constant
    term only)."""
    lead = (lambda t: t[:, :1]) if series else (lambda t: t[:, None])
    h, m = lead(c["h"]), lead(c["m"])
    if series:
        e0 = (np.arange(SERIES) == 0).astype(float)
        hh = np.einsum("lsab,lscd,s->lsabcd", h, h, e0)
        hm = np.einsum("lsab,lscd,s->lsabcd", h, m, e0)
    else:
        hh, hm = np.einsum("lsab,lscd->lsabcd", h, h), np.einsum("lsab,lscd->lsabcd", h, m)
    raw = {k: (v if series else v[:, None]) for k, v in c.items()}
    single = raw["hh_d"] + raw["hh_o"] + np.einsum("lsabdc->lsabcd", raw["hh_o"])
    ar = np.arange(h.shape[-1])
    out = {"A": raw["hh_d"] - hh, "B": np.einsum("lSprqt->lSpqrt", raw["hh_o"]), "D": raw["hz_d"] - hm,
           "F": np.einsum("lSprqt->lSpqrt", raw["hz_o"]), "variance": (single - hh)[..., ar, ar, ar, ar]}
    return out if series else {k: v[:, 0] for k, v in out.items()}


def linear_ntk_all_orders(net: MLP, x, lambda_b=1.0, lambda_W=1.0) -> LinearNTKAllOrders:
    """The exact NTK statistics of inputs ``x`` ``(d, n_0)`` or ``(n_0,)`` through a deep linear ``net`` with or
    without shortcuts, at every width (module docstring, "The NTK"): a :class:`LinearNTKAllOrders`. Raises
    :class:`~pdlt.errors.ParameterError` for other activations (``activation``);
    :class:`~pdlt.errors.DivergentFlowError` naming the layer where a moment leaves float64's range.

    >>> import pdlt
    >>> ex = pdlt.linear_ntk_all_orders(pdlt.MLP("linear", (1, 8, 8, 8), C_W=1.0), [1.0], lambda_b=0.0)
    >>> th = pdlt.ntk(pdlt.MLP("linear", (1, 8, 8, 8), C_W=1.0), [[1.0]], lambda_b=0.0)
    >>> float(ex.Theta[2, 0, 0]), float(th.Theta[2, 0, 0])       # no 1/n correction to the mean NTK
    (3.0, 3.0)
    """
    from .ntk import learning_rates, ntk
    from .wishart import check_linear

    check_linear(net, "the NTK chain", ": use pdlt.ntk (order 1/n)")
    xs = net.inputs(x)
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    Theta1 = np.asarray(ntk(net.truncated(1, net.widths[1]), xs, lb[:1], lw[:1]).Theta[0], dtype=np.float64)
    K1 = first_kernel(net, xs)
    n = np.array([1.0] + [float(w) for w in net.widths[1:net.L]])
    exact = ntk_chain(net, K1, Theta1, lb, lw)
    stats = _ntk_tensors(exact, series=False)
    series = _ntk_tensors(ntk_chain(net, K1, Theta1, lb, lw, series=True), series=True)
    rank4 = n.reshape(-1, 1, 1, 1, 1)
    scaled = {k: rank4 * stats[k] for k in "ABDF"}
    nxt = {k: rank4**2 * series[k][:, 2] for k in "ABDF"}
    first = {k: rank4 * series[k][:, 1] for k in "ABDF"}
    first["variance"] = series["variance"][:, 1]
    for k in "ABDF":                                   # layer 1: the NTK is deterministic
        scaled[k][0], nxt[k][0], first[k][0] = 0.0, 0.0, 0.0
    var = stats["variance"]
    var[0] = first["variance"][0] = 0.0
    return LinearNTKAllOrders(net=net, x=xs, Theta=exact["h"], variance=var, next_order=nxt, first_order=first,
                              **scaled)

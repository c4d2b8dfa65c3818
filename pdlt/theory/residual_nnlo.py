r"""Residual networks at order 1/n^2, one input: the cumulant chain of a layer's empirical measure
(derivations/README.md section 13.8).

**Why the metric chain does not apply.** With a shortcut, ``z'_i = gamma z_i + xi sqrt(G) eps_i`` (``eps_i`` iid
unit normals, ``G = C_b + (C_W/n) sum_j sigma(z_j)^2``) keeps each neuron's own past, so ``G`` alone is not Markov
(:mod:`pdlt.theory.nnlo`). The whole layer is: its state is the empirical measure ``mu = (1/n) sum_i delta_{z_i}``,
which the step maps to ``mu'`` given ``mu`` with independent neurons. One input's observables are moments of linear
functionals ``<f>_mu`` (exchangeability: ``E f(z_1) = E <f>_mu``, ``E f(z_1) f(z_2) = E[n <f>^2 - <f^2>]/(n - 1)``,
three neurons likewise), so to order 1/n^2 the chain needs the mean, covariance and third cumulant of ``<f>_mu``.

**Coordinates.** Layer q (leading-order kernel ``K``) is described by ``Y_k = <e_k>_mu`` for the orthonormal Hermite
functions ``e_k(z) = He_k(z/sqrt(K))/sqrt(k!)``, ``k = 1..N`` (the modes), and the raw coordinate
``Y_0 = <sigma^2>_mu - <sigma^2>_K``, which sets the metric: ``G - g = C_W Y_0``. ``Y_0`` is a linear function of the
modes, but its coefficients (those of ``sigma^2``) decay slowly, so its statistics are carried exactly instead of
through the truncated modes. The cumulants are series, ``E Y = m1/n + m2/n^2``, ``Cov Y = C1/n + C2/n^2``,
``kappa_3(Y) = k3/n^2``; layer 1 is iid Gaussian (``C1 = <phi_i phi_j>``, ``k3 = <phi_i phi_j phi_k>``).

**The step.** Given ``mu``, ``<f>_mu'`` has mean ``<T_G f>_mu`` with the branch smoothing
``T_G f(z) = E f(gamma z + xi sqrt(G) eps)``, covariance ``(1/n') <T_G(f h) - T_G f T_G h>_mu`` and third cumulant
of order ``1/n'^2``. In the modes the smoothing is explicit: with ``delta = xi^2 (G - g)`` and
``K' = gamma^2 K + xi^2 g``,

    T_G e'_k = sum_j A_kj delta^j e_{k-2j},
    A_kj = C(k, 2j) (2j-1)!! gamma^(k-2j) sqrt((k-2j)!/k!) K^((k-2j)/2) / K'^(k/2),

(``He_k(x; v - delta) = sum_j C(k, 2j) (2j-1)!! delta^j He_{k-2j}(x; v)``), so the mean map is a polynomial in
``u = Y_0`` and the modes. The law of total cumulance then gives the new cumulants to order 1/n^2 (the expansion of
the mean map to ``u^4``, of the conditional covariance to second order, the conditional third cumulant at leading
order: :func:`_transfer` builds the maps of a step, :func:`_advance` applies them). Products of the raw function
with itself, and of smoothed raw functions, are Gaussian averages taken by quadrature (``<sigma^4 e_c>``,
``<sigma^6>``, ``T_G sigma^2`` on a grid): a product of truncated Hermite series has coefficients growing like
``(sqrt(2) rho)^k`` with ``rho = gamma sqrt(K/K')``, and contracted with the slowly decaying coefficients of
``sigma^2`` it diverges for rho > 1/sqrt 2.

**Accuracy.** With every gamma = 0 the chain closes on the raw coordinate and reproduces the MLP recursions of
:mod:`pdlt.theory.nnlo` to round-off; with ``sigma(z) = a z`` it is exact (``sigma^2`` has two modes). Otherwise the
modes are truncated at N. The third cumulant's Hermite block still multiplies truncated series when it is
propagated: the series in N converges for rho up to about 0.71 and is asymptotic beyond (its changes fall to a
smallest value, then grow; for critical ReLU from about 56 modes at gamma = 0.75 and 0.8). :func:`residual_nnlo`
runs the chain at N, N - 8, N - 16 and N - 24, keeps the better of N and N - 8 and reports its estimated error (a
``"modes"`` caveat where it exceeds :data:`MODE_TOLERANCE` of a statistic's size; beyond :data:`MODE_LIMIT` a
:class:`~pdlt.errors.ParameterError` naming ``gamma`` where the series is asymptotic, ``modes`` where more modes
would help).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import gammaln, ndtr

from ..activations import RESCALE_ADVICE
from ..architecture import MLP
from ..errors import Caveat, DivergentFlowError, ParameterError, emit
from ..validation import check_int
from ..gaussian import hermite_functions
from .nnlo import KERNEL_POWER

__all__ = ["residual_nnlo", "MODES", "MODE_TOLERANCE", "MODE_LIMIT"]

#: Hermite modes kept by default (the error estimate reruns with 8, 16 and 24 fewer)
MODES = 40
#: mode-truncation error (relative to a statistic's natural size at its layer) above which the result carries a
#: ``"modes"`` caveat
MODE_TOLERANCE = 1e-8
#: mode-truncation error above which the result is refused
MODE_LIMIT = 1e-4
#: powers of delta = xi^2 (G - g) kept in the mean map (u^4 V^2-type terms are order 1/n^2)
_POWERS = 4
#: half-width of the standardized grids (Gaussian weight e^-98 at the edge)
_EDGE = 14.0
#: relative miss between the kernel flow and the chain's own <sigma^2> above which the activation is refused (the
#: kernel flow resolves sigma on the kernel's scale: tanh(2 z) at K = 1 misses by 1e-7, tanh(5 z) by 2e-3)
_KERNEL_TOLERANCE = 1e-6
#: most nodes of one quadrature grid
_MAX_NODES = 400_001


# ---------------------------------------------------------------------------------------------------
# Hermite algebra
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)          # (two per run; 200 modes keep 0.2 GB)
def _product_table(na: int, nb: int, nc: int) -> np.ndarray:
    """``P[a, b, c] = <e_a e_b e_c>`` for a unit normal, ``a < na, b < nb, c < nc``: the product coefficients
    ``e_a e_b = sum_c P[a, b, c] e_c`` (nonzero for ``c = a + b - 2r``: ``C(a,r) C(b,r) r! sqrt(c!/(a! b!))``)."""
    lf = [math.lgamma(k + 1) for k in range(na + nb + 2)]
    out = np.zeros((na, nb, nc))
    for a in range(na):
        for b in range(nb):
            for r in range(min(a, b) + 1):
                c = a + b - 2 * r
                if c < nc:
                    out[a, b, c] = math.exp((lf[a] - lf[r] - lf[a - r]) + (lf[b] - lf[r] - lf[b - r]) + lf[r]
                                            + 0.5 * (lf[c] - lf[a] - lf[b]))
    out.setflags(write=False)
    return out


def _hermite(x: np.ndarray, kmax: int) -> np.ndarray:
    """:func:`pdlt.gaussian.hermite_functions` as a table, shape ``x.shape + (kmax + 1,)``."""
    return np.stack(list(hermite_functions(np.asarray(x, dtype=np.float64), kmax)), axis=-1)


def _branch_coefficients(kmax: int, K: float, Kp: float, gamma: float) -> np.ndarray:
    """``A[k, j]`` (``k <= kmax``, ``j <= 4``) of ``T_G e'_k = sum_j A_kj delta^j e_{k-2j}`` (module docstring), in
    logarithms: ``C(k, 2j) (2j-1)!! = k!/((k-2j)! j! 2^j)``."""
    k = np.arange(kmax + 1)[:, None]
    j = np.arange(_POWERS + 1)[None, :]
    m = k - 2 * j
    ok = m >= 0
    ms = np.where(ok, m, 0)
    log = (0.5 * (gammaln(k + 1) - gammaln(ms + 1)) - gammaln(j + 1) - j * math.log(2.0)
           + 0.5 * ms * math.log(K) - 0.5 * k * math.log(Kp))
    power = np.where(ms == 0, 1.0, float(gamma) ** ms)          # gamma^0 = 1, also at gamma = 0
    return np.where(ok, np.exp(log) * power, 0.0)


# ---------------------------------------------------------------------------------------------------
# Gaussian averages of the activation
# ---------------------------------------------------------------------------------------------------


def _grid(h: float, setting: str, what: str):
    """The standardized grid of spacing h or finer out to +-:data:`_EDGE` and its Gaussian weights."""
    n = 2 * int(math.ceil(_EDGE / h)) + 1
    if n > _MAX_NODES:
        raise ParameterError(f"the residual 1/n^2 chain needs {n} quadrature nodes for {what} (limit {_MAX_NODES}): "
                             + ("scale the input toward K ~ 1" if setting == "x" else "move the branch noise "
                                "xi^2 (C_b + C_W <sigma^2>) away from 0 or gamma away from +-1"), setting)
    x = np.linspace(-_EDGE, _EDGE, n)
    w = np.exp(-0.5 * x * x)
    return x, w / w.sum()


def _grid_hermite(n: int, kmax: int) -> np.ndarray:
    """:func:`_hermite` on the n-node grid of :func:`_grid`, ``(n, kmax + 1)``: kept where it is small (the layers of
    a network share it, the grid depending on its spacing only)."""
    if n * (kmax + 1) <= _KEPT_TABLE:
        return _kept_hermite(n, kmax)
    return _hermite(np.linspace(-_EDGE, _EDGE, n), kmax)


#: entries of the largest Hermite table kept between calls (8 MB)
_KEPT_TABLE = 1_000_000


@lru_cache(maxsize=8)
def _kept_hermite(n: int, kmax: int) -> np.ndarray:
    H = _hermite(np.linspace(-_EDGE, _EDGE, n), kmax)
    H.setflags(write=False)
    return H


def _project(n: int, wf: list, kmax: int) -> list:
    """``sum_x wf(x) e_k(x)`` over the n-node grid of :func:`_grid` for each weighted function ``wf`` (arrays on that
    grid) and k <= kmax: one product with the grid's table of the Hermite functions where it is small, else the
    functions run by their recurrence (memory of a few grids, not of an ``(n, kmax)`` table, on refined grids)."""
    if n * (kmax + 1) <= _KEPT_TABLE:
        H = _grid_hermite(n, kmax)
        return [g @ H for g in wf]
    out = [np.empty(kmax + 1) for _ in wf]
    for k, e in enumerate(hermite_functions(np.linspace(-_EDGE, _EDGE, n), kmax)):
        for o, g in zip(out, wf):
            o[k] = g @ e
    return out


#: relative change under halving the quadrature spacing above which the spacing is halved again
_RESOLUTION = 1e-10


def _resolved(compute, h: float, setting: str, what: str):
    """``compute(h)`` returns lists ``(fine, coarse, size)``: estimates on the grid and on every other node, and each
    estimate's scale (the average of its integrand's magnitude, so that a value crossing zero is judged on the
    integral's size); halve ``h`` until every pair agrees to :data:`_RESOLUTION` of its scale (sharp activations vary
    on their own scale, not only on the kernel's), at most six times."""
    for _ in range(7):
        fine, coarse, size = compute(h)
        if all(float(np.max(np.abs(f - c))) <= _RESOLUTION * float(np.max(m)) for f, c, m in zip(fine, coarse, size)):
            return fine
        h /= 2.0
    raise ParameterError(f"{what} of the residual 1/n^2 chain do not converge under refining the quadrature: the "
                         f"activation varies on a scale far below the kernel's; {RESCALE_ADVICE}", setting)


@lru_cache(maxsize=16)
def _square_forms(expr):
    """Numpy callable: sigma^2 and its second and fourth derivatives, for a smooth activation."""
    from ..activations import derivative_exprs, numpy_forms

    return numpy_forms(derivative_exprs(expr**2, 4)[::2])


def _square_coefficients(act, K: float, kmax: int):
    """``(s, s4, m6)``: ``s_k = <sigma^2 e_k>_K``, ``s4_k = <sigma^4 e_k>_K`` (``k <= kmax``) and ``<sigma^6>_K``.
    Scale-invariant sigma: the half-line Gauss rule, exact (piecewise polynomials); smooth sigma: the trapezoid on
    the standardized line, z-spacing 0.03 or finer until halving it changes nothing (:func:`_resolved`)."""
    if act.slopes is not None:
        ap, am = (float(v) for v in act.slopes)
        x, w, Hp, Hm = _half_line(kmax)
        s, s4 = ((K ** (p / 2)) * ((w * x**p * ap**p) @ Hp + (w * x**p * am**p) @ Hm) for p in (2, 4))
        return s, s4, float(K**3 * np.sum(w * x**6) * (ap**6 + am**6))

    def compute(h):
        x, w = _grid(h, "x", f"the averages at K = {K:.3g}")
        s2 = _square_forms(act.expr)(math.sqrt(K) * x)[0]
        wc = np.where(np.arange(x.size) % 2 == 0, w, 0.0)
        wc /= wc.sum()
        s4 = s2 * s2
        p = _project(x.size, [w * s2, w * s4, wc * s2, wc * s4], kmax)
        fine, coarse = p[:2] + [np.array([w @ s2**3])], p[2:] + [np.array([wc @ s2**3])]
        # |<f e_k>| <= <f^2>^(1/2) (orthonormal e_k)
        return fine, coarse, [np.sqrt(w @ s2**2), np.sqrt(w @ s2**4), np.abs(w @ s2**3)]

    s, s4, m6 = _resolved(compute, min(0.05, 0.03 / math.sqrt(K)), "activation", "the Gaussian averages of sigma^2")
    return s, s4, float(m6[0])


@lru_cache(maxsize=4)
def _half_line(kmax: int):
    """``(x, w, H(x), H(-x))``: the half-line Gauss rule exact for the polynomials of :func:`_square_coefficients`
    (``z^4 e_k``, degree <= kmax + 4 on each half-line) and the Hermite functions ``e_0..e_kmax`` at its nodes and
    their mirrors."""
    from ..gaussian import half_gauss_hermite

    x, w = half_gauss_hermite((kmax + 8) // 2 + 2)
    out = (x, w, _hermite(x, kmax), _hermite(-x, kmax))
    for a in out[2:]:
        a.setflags(write=False)
    return out


def _smoothed_square(act, mu: np.ndarray, v: float) -> list:
    """``[d^p/dv^p E sigma^2(mu + sqrt(v) eps) / p!  for p = 0, 1, 2]`` at every ``mu`` (heat equation:
    ``d/dv = (1/2) d^2/dmu^2``): closed forms for the scale-invariant class; otherwise the forms on one uniform
    z-grid covering every ``mu +- 9 sqrt(v)`` and each mu's Gaussian weights on it (spacing 0.03 or finer,
    :func:`_resolved`)."""
    if act.slopes is not None:
        ap2, am2 = (float(a) ** 2 for a in act.slopes)
        s = math.sqrt(v)
        t = mu / s
        ph = np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        P, Q = ndtr(t), ndtr(-t)
        return [ap2 * ((mu * mu + v) * P + mu * s * ph) + am2 * ((mu * mu + v) * Q - mu * s * ph),
                ap2 * P + am2 * Q, -(ap2 - am2) * t * ph / (4.0 * v)]
    sd = math.sqrt(v)
    lo, hi = float(mu.min()) - 9.0 * sd, float(mu.max()) + 9.0 * sd

    def compute(h):
        n = 2 * int(math.ceil((hi - lo) / (2.0 * h))) + 1
        if n > _MAX_NODES:
            wide = float(mu.max() - mu.min()) > 18.0 * sd
            raise ParameterError(f"the branch smoothing of the residual 1/n^2 chain needs {n} grid points (limit "
                                 f"{_MAX_NODES}): " + ("scale the input toward K ~ 1" if wide else "move the branch "
                                 "noise xi^2 (C_b + C_W <sigma^2>) away from 0"), "x" if wide else "xi")
        z = np.linspace(lo, hi, n)
        dz = (hi - lo) / (n - 1)
        forms = np.stack(_square_forms(act.expr)(z))                     # (3, n)
        fine, coarse, size = np.empty((3, 3, mu.size))
        # blocks of rows in increasing mu, each against the window of the grid within 9 sd of its rows (beyond, the
        # weights are below e^-40 of the peak): the work grows like the rows, not like rows x grid, which a small
        # branch noise makes large (xi = 0.001: 1e5 x 1e5 weights)
        rows = np.argsort(mu, kind="stable")
        ms = mu[rows]
        a = 0
        while a < mu.size:
            b = int(np.searchsorted(ms, ms[a] + 18.0 * sd, side="right"))
            i0 = max(0, int((ms[a] - 9.0 * sd - lo) / dz) - 1)
            i0 -= i0 % 2                           # (even: the coarse rule keeps the grid's even nodes)
            b = min(b, a + max(1, 4_000_000 // max(1, n - i0)))         # rows of weights held at once
            i1 = min(n, int(math.ceil((ms[b - 1] + 9.0 * sd - lo) / dz)) + 2)
            wt = np.exp(-0.5 * ((z[None, i0:i1] - ms[a:b, None]) / sd) ** 2)
            wc = wt[:, ::2]
            f = forms[:, i0:i1]
            r = rows[a:b]
            fine[:, r] = (f @ wt.T) / wt.sum(axis=1)
            coarse[:, r] = (f[:, ::2] @ wc.T) / wc.sum(axis=1)
            size[:, r] = (np.abs(f) @ wt.T) / wt.sum(axis=1)
            a = b
        return list(fine), list(coarse), list(size)

    out = _resolved(compute, min(0.03, 0.2 * sd), "activation", "the smoothed derivatives of sigma^2")
    return [f / c for f, c in zip(out, (1.0, 2.0, 8.0))]


def _layer_tables(data, N: int) -> dict:
    """The test functions ``phi_0 = sigma^2 - <sigma^2>``, ``phi_k = e_k`` (k = 1..N) of a layer, from its
    :func:`_square_coefficients` ``data``: their Hermite coefficients ``hcoef`` ``(N+1, kmax+1)``, the coefficients
    of their products ``prod`` ``(N+1, N+1, N+10)`` and the triple averages ``trip = <phi_i phi_j phi_k>``
    ``(N+1,)*3``, exact where the raw function enters twice or more (``sigma^4``, ``sigma^6`` by quadrature)."""
    kmax = 2 * N + 2 * _POWERS + 2
    M, nc = N + 1, N + 2 * _POWERS + 2
    s, s4, m6 = data[0][:kmax + 1], data[1], data[2]
    P = _product_table(kmax + 1, M, nc)
    hcoef = np.zeros((M, kmax + 1))
    hcoef[0, 1:] = s[1:]
    hcoef[np.arange(1, M), np.arange(1, M)] = 1.0
    raw = np.einsum("k,kjc->jc", s[1:], P[1:])              # coefficients of (sigma^2 - s_0) e_j
    prod = np.zeros((M, M, nc))
    prod[1:, 1:] = P[1:M, 1:]
    prod[0, 1:] = prod[1:, 0] = raw[1:]
    prod[0, 0] = s4[:nc] - 2.0 * s[0] * s[:nc]
    prod[0, 0, 0] += s[0] ** 2
    trip = np.zeros((M, M, M))
    trip[1:, 1:, 1:] = P[1:M, 1:, 1:M]
    trip[0, 1:, 1:] = trip[1:, 0, 1:] = trip[1:, 1:, 0] = raw[1:, 1:M]
    trip[0, 0, 1:] = trip[0, 1:, 0] = trip[1:, 0, 0] = prod[0, 0, 1:M]
    trip[0, 0, 0] = m6 - 3.0 * s[0] * s4[0] + 2.0 * s[0] ** 3
    return {"s": s, "hcoef": hcoef, "prod": prod, "trip": trip}


# ---------------------------------------------------------------------------------------------------
# the chain
# ---------------------------------------------------------------------------------------------------


def _branch_grid(act, K: float, Kp: float, gamma: float, N: int):
    """``(x, w, raw, H)``: a standardized grid of the layer below a step (kernel K), the smoothed raw function
    ``(1/p!) d^p/dv^p E sigma^2(gamma z + sqrt(v) eps)``, p = 0, 1, 2, on it (``v = K' - gamma^2 K``, the branch
    noise) and the Hermite functions ``e_0..e_N`` there (each mode count takes its leading columns); the grid resolves
    the smoothing scale ``sqrt(v)/(gamma sqrt(K))``."""
    v = Kp - gamma * gamma * K
    h = 0.04 if gamma == 0 else min(0.04, 0.2 * math.sqrt(v) / (abs(gamma) * math.sqrt(K)))
    x, w = _grid(h, "gamma", "the smoothed metric response")
    if gamma == 0:          # no shortcut: the smoothed function is a constant
        raw = [np.full(x.shape, float(r[0])) for r in _smoothed_square(act, np.zeros(1), v)]
    else:
        raw = _smoothed_square(act, gamma * math.sqrt(K) * x, v)
    return x, w, raw, _grid_hermite(x.size, N)


def _transfer(K, Kp, gamma, xi, C_W, N, tab, grid) -> dict:
    """The state-independent part of one step at N modes (kernels K, Kp; ``tab`` the new layer's
    :func:`_layer_tables`, ``grid`` the step's :func:`_branch_grid`), arranged as :func:`_advance` reads it: from the
    mean map's coefficients ``a``, ``B`` and its Jacobian ``J``, the conditional covariance's polynomial ``Pi`` and the
    conditional third cumulant ``R``, given as ``R3`` with ``cyc(R3) = R`` (the keys are :func:`_count_maps`'). A
    smaller count M' takes the leading ``M'``-blocks of these (the product tables are exact, the Hermite functions of
    the grid the same), except the raw column of ``R3``, which sums the smoothed raw function's modes up to the count
    (``prod``, ``v`` give the terms beyond it)."""
    M = N + 1
    kmax = tab["hcoef"].shape[1] - 1
    beta = xi * xi * C_W                                            # delta = beta u, u = Y_0
    Ab = _branch_coefficients(kmax, K, Kp, gamma) * beta ** np.arange(_POWERS + 1)
    hcoef, prod = tab["hcoef"], tab["prod"]
    rows = [hcoef[:, np.arange(M) + 2 * p] * Ab[np.arange(M) + 2 * p, p] for p in range(_POWERS + 1)]
    a = [T[:, 0].copy() for T in rows]          # constant of (1/p!) d^p T_G phi_i / d u^p
    B = [np.concatenate([np.zeros((M, 1)), T[:, 1:]], axis=1) for T in rows]
    J = B[0].copy()
    J[:, 0] += a[1]
    # the smoothed mode (1/p!) d^p T_G e_i / d u^p is Ab[i, p] e_(i - 2p), a polynomial; the smoothed raw function
    # f_p is known on a grid of layer q only, so every average with it is a quadrature: its Gram matrices
    # <f_p e_a e_c>, its products <f_p f_r e_c> and <f_0^3>
    x, wx, raw, Hx = grid
    Hx = Hx[:, :M]
    f = [raw[p] * beta**p - (tab["s"][0] if p == 0 else 0.0) for p in range(3)]
    # (the chain takes Pi_2 at c = 0 only: u^2 times the modes enters at order 1/n^3)
    cols = (M, M, 1)
    gram = [(Hx.T * (wx * f[p])) @ Hx[:, :c] for p, c in ((0, M), (1, M), (2, 1))]
    pair = {(p, r): (wx * f[p] * f[r]) @ Hx for p in range(3) for r in range(p, 3) if p + r <= 2}
    PM = _product_table(M, M, M)
    # the conditional covariance, sum_p u^p (Pi_p[..., 0] + Pi_p[..., 1:] Y), in one array: its linear part
    # (Pi_1[..., 0] for u, then Pi_0[..., 1:]), a slot that _advance fills (the (J C1)_a0 terms' factor of the third
    # cumulant), Pi_1[..., 1:], Pi_2[..., 0]; Pi_0[..., 0] apart. (Pi_0[..., 0] is of the size of Pi_1[..., 0] times
    # u: a difference of the two, as a slot that took Pi_0 whole would need, loses the digits of the smaller)
    Pi = np.empty((M, M, 2 * M + 1))
    for p, at in ((0, 0), (1, M), (2, 2 * M)):
        nc = cols[p]
        out = Pi[:, :, at:at + nc]
        np.multiply(prod[:, :, 2 * p:2 * p + nc], Ab[2 * p:2 * p + nc, p], out=out)
        for p1 in range(p + 1):
            p2 = p - p1
            # <T_p1 phi_i T_p2 phi_j e_c>: mode pairs from the product table, pairs with the raw function from its Gram
            # matrix, the raw pair from its products
            i0, j0 = max(1, 2 * p1), max(1, 2 * p2)
            out[i0:, j0:] -= (np.outer(Ab[i0:M, p1], Ab[j0:M, p2])[:, :, None]
                              * PM[i0 - 2 * p1:M - 2 * p1, j0 - 2 * p2:M - 2 * p2, :nc])
            out[0, j0:] -= Ab[j0:M, p2, None] * gram[p1][j0 - 2 * p2:M - 2 * p2, :nc]
            out[i0:, 0] -= Ab[i0:M, p1, None] * gram[p2][i0 - 2 * p1:M - 2 * p1, :nc]
            out[0, 0] -= pair[min(p1, p2), max(p1, p2)][:nc]
        if p == 0:
            P00 = Pi[:, :, 0].copy()
        elif p == 1:
            Pi[:, :, 0] = Pi[:, :, M]
            Pi[:, :, M] = 0.0                   # (read as 0 times the slot before _advance first fills it)
    # R = <phi_i phi_j phi_k> - (the three placements of S = <T(phi_i phi_j) T phi_k>) + 2 <T phi_i T phi_j T phi_k>.
    # S is symmetric in i, j, so its placements are its cyclic sum, and R = cyc(R3) with R3 = trip/3 - S + (2/3) TTT
    # (what the third cumulant's update, itself a cyclic sum, needs)
    rho_k = Ab[:M, 0]                            # T e'_k = rho^k e_k
    v = rho_k * rows[0][0]                       # <T phi_0 e_k> rho^k: the raw column of S (v_0 = 0)
    R3 = tab["trip"] / 3.0
    R3[:, :, 1:] -= prod[:, :, 1:M] * rho_k[1:] ** 2
    R3[:, :, 0] -= prod[:, :, 1:M] @ v[1:]
    TTT = PM * np.multiply.outer(np.outer(rho_k, rho_k), rho_k)            # <T e T e T e>, raw entries below
    TTT[0, 1:, 1:] = np.outer(rho_k[1:], rho_k[1:]) * gram[0][1:, 1:]
    TTT[0, 0, 1:] = TTT[0, 1:, 0] = rho_k[1:] * pair[0, 0][1:]
    TTT[0, 0, 0] = wx @ f[0] ** 3
    TTT[:, 0], TTT[:, :, 0] = TTT[0], TTT[0]
    TTT *= 2.0 / 3.0
    R3 += TTT
    d = np.diagonal(J).copy()
    d[0] = 0.0
    planes = np.union1d([0], np.flatnonzero(J[:, 0]))
    return {"J": J, "B1": B[1], "a2": a[2],
            "Bcat": np.concatenate(B[:4] + [np.stack(a[1:5], axis=1)], axis=1),                 # (M, 4M + 4)
            "E": np.concatenate([B[1], B[2], a[2][:, None], a[3][:, None]], axis=1),            # (M, 2M + 2)
            "Pi": Pi, "P00": P00, "R3": R3, "cut": None, "d3": np.multiply.outer(np.outer(d, d), d), "planes": planes,
            "rows": J[planes], "prod": prod, "v": v}


def _count_maps(tr: dict, m: int) -> dict:
    """The arrays :func:`_advance` reads at ``m - 1`` modes (``m <= M``, the count :func:`_transfer` built ``tr``
    for): every one the leading block of ``tr``'s (of each segment of those concatenated), copied in C order but for
    ``R3``, a view (memory is the constraint at many modes), and ``cut``, what the raw column of ``R3`` loses at
    this count."""
    M = tr["J"].shape[0]
    if m == M:
        return tr
    k = np.arange(m)
    J = tr["J"][:m, :m].copy()
    planes = tr["planes"][tr["planes"] < m]
    return {"J": J, "B1": tr["B1"][:m, :m].copy(), "a2": tr["a2"][:m],
            "Bcat": tr["Bcat"][:m].take(np.concatenate([k, M + k, 2 * M + k, 3 * M + k, 4 * M + np.arange(4)]), axis=1),
            "E": tr["E"][:m].take(np.concatenate([k, M + k, 2 * M + np.arange(2)]), axis=1),
            "Pi": tr["Pi"][:m, :m].take(np.concatenate([k, [M], M + k[1:], [2 * M]]), axis=2),
            "P00": tr["P00"][:m, :m].copy(),
            "R3": tr["R3"][:m, :m, :m], "cut": tr["prod"][:m, :m, m:M] @ tr["v"][m:M],     # S's raw column beyond m
            "d3": tr["d3"][:m, :m, :m].copy(), "planes": planes, "rows": J[planes]}


def _advance(state, mp: dict, wp: float):
    """One layer of the chain: ``(m1, m2, C1, C2, k3)`` of layer q to layer q + 1 through the step's
    :func:`_count_maps` at the state's mode count (``wp`` the new layer's width in units of the reference width), by
    the law of total cumulance (module docstring).

    ``J (x) J (x) J`` on the third cumulant: J is ``rho^k`` on the diagonal except in the rows ``planes`` (the raw
    row, the smoothed sigma^2, and the rows where the raw column, the metric's response, is nonzero: e_2), so the image
    is the scaled cumulant outside the planes ``i in planes`` (or j, k: it is symmetric), which are
    ``J (J_s . k3) J^T``."""
    m1, m2, C1, C2, k3 = state
    M = m1.size
    J = mp["J"]
    u1, u2 = m1[0], m2[0]
    c1, c2 = C1[:, 0], C2[:, 0]
    v1, v2 = C1[0, 0], C2[0, 0]
    k00 = k3[:, 0, 0]
    # the mean maps: [B0 B1 B2 B3 a1 a2 a3 a4] on the moments each multiplies
    x = np.zeros((4 * M + 4, 2))
    x[:M, 0], x[M:2 * M, 0], x[4 * M:4 * M + 2, 0] = m1, c1, (u1, v1)
    x[:M, 1], x[M:2 * M, 1] = m2, c2 + u1 * m1
    x[2 * M:3 * M, 1], x[3 * M:4 * M, 1] = k00 + 2.0 * u1 * c1 + v1 * m1, 3.0 * v1 * c1
    x[4 * M:, 1] = (u2, v2 + u1 * u1, k3[0, 0, 0] + 3.0 * v1 * u1, 3.0 * v1 * v1)
    mn = mp["Bcat"] @ x
    # J applied once to [C1 | C2 | the factors of B1^T, B2^T, a2^T, a3^T in the covariance's u and u^2 terms]
    Y = np.empty((M, 4 * M + 2))
    Y[:, :M], Y[:, M:2 * M] = C1, C2
    Y[:, 2 * M:3 * M] = k3[:, 0, :] + np.outer(c1, m1) + u1 * C1
    Y[:, 3 * M:4 * M] = 2.0 * np.outer(c1, c1) + v1 * C1
    Y[:, 4 * M], Y[:, 4 * M + 1] = k00 + 2.0 * u1 * c1, 3.0 * v1 * c1
    JY = J @ Y
    JC1 = JY[:, :M]
    B1, a2 = mp["B1"], mp["a2"]
    Pi = mp["Pi"]
    C1n = JC1 @ J.T + mp["P00"] / wp
    T = JY[:, 2 * M:] @ mp["E"].T + np.outer(B1 @ (2.0 * v1 * c1), a2)
    p = np.zeros(2 * M + 1)                      # Pi_1[..., 0] u1 + Pi_0[..., 1:] m1 + Pi_1[..., 1:] C1 + Pi_2 v1
    p[0], p[1:M], p[M + 1:2 * M], p[2 * M] = u1, m1[1:], C1[1:, 0], v1
    p /= wp
    C2n = (JY[:, M:2 * M] @ J.T + T + T.T + B1 @ (v1 * C1 + np.outer(c1, c1)) @ B1.T
           + 2.0 * v1 * v1 * np.outer(a2, a2) + (Pi.reshape(M * M, 2 * M + 1) @ p).reshape(M, M))
    # the third cumulant: cyc(X/wp + W (x) j0) + R/wp^2 with X[b, c, a] = sum_d lin[b, c, d] (J C1)[a, d] (lin the
    # covariance's linear part) and W = JB + JB^T + 2 j0 a2^T (JB = J C1 B1^T, j0 = (J C1)[:, 0]): the terms
    # j0_a JB_bc and JB_ac j0_b have the cyclic sum of j0_a (JB + JB^T)_bc. Every term sits in the placement (b, c, a),
    # which the cyclic sum does not see; W rides in Pi's slot, for one batched product (M products of M x M, which
    # BLAS does not thread at a loss)
    j0 = JC1[:, 0]
    JB = JC1 @ B1.T
    Pi[:, :, M] = JB + JB.T + 2.0 * np.outer(j0, a2)
    Z = np.empty((M + 1, M))
    Z[:M], Z[M] = JC1.T / wp, j0
    Tk = Pi[:, :, :M + 1] @ Z
    Tk += mp["R3"] if wp == 1.0 else mp["R3"] / (wp * wp)
    if mp["cut"] is not None:
        Tk[:, :, 0] += mp["cut"] / (wp * wp)
    k3n = mp["d3"] * k3
    P = J @ (mp["rows"] @ k3.reshape(M, M * M)).reshape(-1, M, M) @ J.T
    for s, Ps in zip(mp["planes"], P):
        k3n[s], k3n[:, s], k3n[:, :, s] = Ps, Ps, Ps
    k3n += Tk
    k3n += Tk.transpose(2, 0, 1)
    k3n += Tk.transpose(1, 2, 0)
    return mn[:, 0].copy(), mn[:, 1].copy(), C1n, C2n, k3n


def _series(a, b):
    """Product of two series in 1/n truncated after 1/n^2 (coefficient arrays of length 3 along the first axis)."""
    return np.array([a[0] * b[0], a[0] * b[1] + a[1] * b[0], a[0] * b[2] + a[1] * b[1] + a[2] * b[0]])


#: the modes of z^2, z^4, z^6 (z = sqrt(K) x: x^2 = He_2 + 1, ...), which the moments read
_READ = slice(2, 7, 2)


def _moments(K: np.ndarray, w: np.ndarray, m1, m2, C1, C2, k222) -> tuple:
    """The series (coefficients of 1/n^0, 1/n, 1/n^2, n the reference width; each ``(3, L)``) of ``E z^2``, of the
    two-neuron ``E z_1^2 z_2^2 - (E z^2)^2`` and of the three-neuron cumulant ``kappa(z_1^2, z_2^2, z_3^2)`` at layers
    of kernels K and widths ``w`` (reference units), each ``(L,)``, from their chain states' modes 2, 4, 6:
    ``m1, m2`` ``(L, 3)``, ``C1, C2`` ``(L, 3, 3)``, and ``k222`` ``(L,)`` (exchangeability, module docstring)."""
    r2 = math.sqrt(2.0)
    f = np.zeros((3, K.size, 3))                 # z^2, z^4, z^6 in the modes 2, 4, 6
    f[0, :, 0] = r2 * K
    f[1, :, 0], f[1, :, 1] = 6.0 * r2 * K**2, math.sqrt(24.0) * K**2
    f[2, :, 0], f[2, :, 1], f[2, :, 2] = 45.0 * r2 * K**3, 15.0 * math.sqrt(24.0) * K**3, math.sqrt(720.0) * K**3
    const = (K, 3.0 * K**2, 15.0 * K**3)
    zero = np.zeros(K.size)
    mean = [np.array([const[i], np.sum(f[i] * m1, axis=1), np.sum(f[i] * m2, axis=1)]) for i in range(3)]
    cov = lambda i, j: np.array([zero, np.einsum("lk,lkm,lm->l", f[i], C1, f[j]),  # noqa: E731
                                 np.einsum("lk,lkm,lm->l", f[i], C2, f[j])])
    e = np.array([zero, 1.0 / w, zero])          # 1/n_layer
    one = np.array([zero + 1.0, zero, zero])
    inv1 = one + e + _series(e, e)               # n/(n - 1)
    inv2 = one + 2.0 * e + 4.0 * _series(e, e)   # n/(n - 2)
    X = mean[0]
    c00 = cov(0, 0)
    XX = _series(X, X) + c00
    pair = _series(XX - _series(e, mean[1]), inv1)
    XXX = _series(_series(X, X), X) + 3.0 * _series(X, c00) + np.array([zero, zero, (r2 * K) ** 3 * k222])
    X4X = _series(mean[1], X) + cov(1, 0)
    triple = _series(_series(XXX - 3.0 * _series(e, X4X) + 2.0 * _series(_series(e, e), mean[2]), inv1), inv2)
    return X, pair - _series(X, X), triple - 3.0 * _series(pair, X) + 2.0 * _series(_series(X, X), X)


def _chains(net: MLP, K: np.ndarray, counts: list, data: list, grids: list) -> dict:
    """``{N: {G1, V, G2, V1, U}}`` ``(L,)`` for each mode count N of ``counts`` of a one-input network with kernels
    ``K`` ``(L,)`` (layer l in units of ``n_{l-1}``), from each layer's :func:`_square_coefficients` and each step's
    :func:`_branch_grid`: the chains of all counts advance together, through one :func:`_transfer` per step. The
    moments read modes 2, 4, 6 only; those are kept per layer, with the raw entries, and the statistics formed after
    the last layer (a chain whose state leaves float64's range is named at the first layer where what was kept
    does, or at the last)."""
    L, N = K.size, max(counts)
    w = np.array([net.widths[l] / net.widths[1] for l in range(1, L + 1)])
    tab = _layer_tables(data[0], N)
    states = {c: (np.zeros(c + 1), np.zeros(c + 1), tab["prod"][:c + 1, :c + 1, 0] / w[0], np.zeros((c + 1, c + 1)),
                  tab["trip"][:c + 1, :c + 1, :c + 1] / w[0] ** 2) for c in counts}
    kept = {c: (np.zeros((L, 3)), np.zeros((L, 3)), np.zeros((L, 3, 3)), np.zeros((L, 3, 3)), np.zeros(L), np.zeros(L))
            for c in counts}
    last = maps = None
    for l in range(1, L):                        # layer l -> l + 1
        step = (float(K[l - 1]), float(K[l]), float(net.gamma[l]), float(net.xi[l]), float(net.C_W[l]))
        if step != last:                         # (a step repeated at a fixed point of the kernel is the same map)
            tr = _transfer(*step, N, _layer_tables(data[l], N), grids[l - 1])
            maps = {c: _count_maps(tr, c + 1) for c in counts}
            last = step
        with np.errstate(over="ignore", invalid="ignore"):     # (a chain leaving float64's range is named below)
            for c in counts:
                m1, m2, C1, C2, k3 = states[c] = _advance(states[c], maps[c], w[l])
                km1, km2, kC1, kC2, k222, raw = kept[c]
                km1[l], km2[l], kC1[l], kC2[l] = m1[_READ], m2[_READ], C1[_READ, _READ], C2[_READ, _READ]
                k222[l] = k3[2, 2, 2]
                raw[l] = m1[0] + m2[0] + C1[0, 0] + C2[0, 0] + k3[0, 0, 0]
    out, first = {}, None
    for c in counts:
        km1, km2, kC1, kC2, k222, raw = (v[1:] for v in kept[c])
        with np.errstate(over="ignore", invalid="ignore"):
            X, V, U = _moments(K[1:], w[1:], km1, km2, kC1, kC2, k222)
        scale = w[:-1]
        new = {"G1": X[1] * scale, "G2": X[2] * scale**2, "V": V[1] * scale, "V1": V[2] * scale**2,
               "U": U[2] * scale**2}
        out[c] = {k: np.concatenate([[0.0], v]) for k, v in new.items()}
        which = {k: ~np.isfinite(v) | (np.abs(v) > 1e300) for k, v in new.items()}
        bad = np.logical_or.reduce([~np.isfinite(raw), ~np.isfinite(km1.sum(1) + km2.sum(1))] + list(which.values()))
        if L > 1 and not all(np.all(np.isfinite(s)) for s in states[c]):
            bad[-1] = True
        if bad.any() and (first is None or int(np.argmax(bad)) + 2 < first[0]):
            i = int(np.argmax(bad))
            first = (i + 2, [k for k, v in which.items() if v[i]])
    if first is not None:
        raise DivergentFlowError(f"the residual 1/n^2 statistic(s) {', '.join(first[1]) or 'of the chain'} leave "
                                 f"float64's range at layer l = {first[0]}: move C_W, gamma toward criticality or "
                                 "reduce the depth", layer=first[0])
    return out


def residual_nnlo(net: MLP, x, *, modes: int = MODES, stacklevel: int = 3):
    """The 1/n^2 statistics of one input ``x`` ``(n_0,)`` or ``(1, n_0)`` through any network ``net`` (shortcuts,
    per-layer hyperparameters, widths), by the cumulant chain of the empirical measure (module docstring): a
    :class:`pdlt.theory.nnlo.NNLO` with ``K, G1, V, G2, V1, U`` ``(L,)`` in its units. :func:`pdlt.nnlo` calls it
    for residual networks of a nonlinear activation.

    ``modes``: Hermite modes kept (24 to 200; time grows as modes^4 per layer, memory as modes^3: about 0.15 GB at
    64, 2.2 GB at 200). Values below the chain's resolution (``1e-13 K^p``, ``1e-12 K^3`` for U, or as much of the
    statistic's natural size where that is larger) are reported as 0. The chain also runs with 8, 16 and 24 fewer;
    the change to the next count (or, where the changes grow with the modes, their geometric sum) estimates each
    count's error, and the better of ``modes`` and ``modes - 8`` is returned (``modes >= 40``). Where the error
    exceeds :data:`MODE_TOLERANCE` of a statistic's natural size at its layer (its own value, or ``V^2/K^2`` for V1
    and likewise: what the layer's fluctuations make of it) the result carries a ``"modes"`` caveat (also warned),
    and beyond :data:`MODE_LIMIT` a :class:`ParameterError` names ``gamma`` where the mode series is asymptotic (the
    branch smoothing ``rho = gamma sqrt(K/K')`` is then close to 1: more modes do not help), ``modes`` where more
    would. Activations: smooth or scale-invariant (``activation``).
    ``stacklevel``: where the caveats' warnings point (3: the caller of this function).

    >>> import pdlt
    >>> th = residual_nnlo(pdlt.MLP("tanh", (1, 8, 8, 8), C_W=0.5, gamma=0.5), [1.0])
    >>> round(float(th.G2[1]), 12), round(float(th.V1[1]), 12)    # one step from layer 1 is exact at order 1/n
    (0.0, 0.0)
    >>> bool(th.V1[2] != 0), [c.kind for c in th.caveats]
    (True, [])
    """
    from .kernel import kernel_flow
    from .nnlo import NNLO, second_order_caveats

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if isinstance(modes, bool) or not isinstance(modes, (int, np.integer)) or not 24 <= modes <= 200:
        raise ParameterError(f"modes must be an integer in [24, 200], got {modes!r}", "modes")
    stacklevel = check_int(stacklevel, "stacklevel", minimum=1, maximum=1000)
    act = net.activation
    if act.slopes is None and act.kinks:
        raise ParameterError(f"the residual 1/n^2 chain needs a smooth or scale-invariant activation; {act.name} is "
                             "kinked and not scale-invariant", "activation")
    xs = net.inputs(x)
    if xs.shape[0] != 1:
        raise ParameterError(f"the residual 1/n^2 chain is derived for one input, got {xs.shape[0]}: ask for each "
                             "input alone, or use order 1 (pdlt.finite_width) for the off-diagonal entries", "x")
    K = kernel_flow(net, xs).K[:, 0, 0]
    if not np.all(K > 0):
        raise ParameterError("the residual 1/n^2 chain needs K > 0 at every layer (a zero input with C_b = 0 gives "
                             "the trivial network z = 0)", "x")
    if not np.all((K > 1e-60) & (K < 1e60)):
        raise ParameterError(f"the residual 1/n^2 chain works in the kernel's units and needs 1e-60 < K < 1e60 at "
                             f"every layer; K runs from {K.min():.3g} to {K.max():.3g}: scale the input toward "
                             "K ~ 1", "x")
    for l in range(2, K.size + 1):
        if net.xi[l - 1] == 0 or net.C_W[l - 1] == 0:
            raise ParameterError(f"layer l = {l} has no metric response (C_W xi^2 = 0): its branch does not see the "
                                 "layer below, which the residual chain does not take; use C_W > 0 and xi != 0",
                                 "C_W" if net.C_W[l - 1] == 0 else "xi")
        if K[l - 1] - net.gamma[l - 1] ** 2 * K[l - 2] <= 1e-12 * K[l - 1]:
            raise ParameterError(f"layer l = {l} adds no noise to the shortcut (K' = gamma^2 K): use xi != 0 with "
                                 "C_W, C_b not both 0", "xi")
    # a layer at a kernel seen before (a fixed point: critical scale-invariant networks keep K) reuses its averages
    kmax = 2 * int(modes) + 2 * _POWERS + 2
    averages = {k: _square_coefficients(act, k, kmax) for k in dict.fromkeys(map(float, K))}
    data = [averages[float(k)] for k in K]
    for l in range(1, K.size):      # the chain's own <sigma^2> must carry the kernel flow (sharp activations)
        want = net.step(l + 1).kernel_map(K[l - 1], data[l - 1][0][0])
        if abs(want - K[l]) > _KERNEL_TOLERANCE * K[l]:
            raise ParameterError(f"the kernel flow and the residual chain's own Gaussian averages differ by "
                                 f"{abs(want - K[l]) / K[l]:.2g} (relative) at layer l = {l + 1}: the kernel flow does "
                                 f"not resolve this activation at this scale; {RESCALE_ADVICE}", "activation")
    steps = [(float(K[l - 1]), float(K[l]), float(net.gamma[l])) for l in range(1, K.size)]
    smoothing = {s: _branch_grid(act, *s, int(modes)) for s in dict.fromkeys(steps)}
    grids = [smoothing[s] for s in steps]
    # the chain at N, N - 8, N - 16 (and N - 24): each of the two largest counts gets an error estimate from the next
    # two; the better one is kept (where the mode series is asymptotic, fewer modes can be closer)
    counts = [int(modes) - 8 * j for j in range(4 if modes >= 40 else 3)]
    runs = _chains(net, K, counts, data, grids)
    units = np.array([net.widths[l - 1] / net.widths[1] for l in range(1, K.size + 1)], dtype=np.float64)
    best = min((_mode_error(_natural_scales(K, runs[c], units), [runs[c], runs[c - 8], runs[c - 16]]) + (c,)
                for c in counts[:-2]),
               key=lambda t: t[0])
    worst, where, asymptotic, used = best
    out = {k: np.where(np.abs(v) <= _floor(K, k, units, runs[used]), 0.0, v)      # below the resolution
           for k, v in runs[used].items()}
    caveats = list(second_order_caveats(net, out))
    span = f"{used - 16}, {used - 8} and {used} modes"
    asymptotic = asymptotic or used < modes          # the smaller count was closer: more modes only drift
    l = where[1]
    rho = abs(float(net.gamma[l - 1])) * math.sqrt(K[l - 2] / K[l - 1]) if l >= 2 else 0.0
    advice = (f"the mode series is asymptotic there (its changes grow with the modes, as where rho = gamma "
              f"sqrt(K/K') passes ~0.71; rho = {rho:.3g} at that step), so more modes do not help: use a smaller "
              "gamma, or a branch variance xi^2 (C_b + C_W <sigma^2>) larger against gamma^2 K" if asymptotic
              else "raise modes")
    if worst > MODE_LIMIT:
        raise ParameterError(f"the residual 1/n^2 chain has not converged in {used} Hermite modes: {where[0]} at "
                             f"layer l = {l} is uncertain by {worst:.2g} of its scale (from {span}); "
                             f"{advice}", "gamma" if asymptotic else "modes")
    if worst > MODE_TOLERANCE:
        caveats.append(Caveat("modes", f"the residual 1/n^2 statistics are converged in Hermite modes to about "
                                       f"{worst:.2g} of the size of the layer's 1/n^2 effects ({where[0]} at layer "
                                       f"l = {where[1]}, from {span}; a statistic far below that size, such as "
                                       f"ReLU's G2, has fewer digits of its own); {advice} for more digits",
                              where[1], worst))
    caveats = tuple(caveats)
    emit(caveats, stacklevel=stacklevel)
    return NNLO(net=net, x=xs, K=K, caveats=caveats, **out)


#: the chain's resolution: each statistic is a difference of moments of size K^p (E z^6 = 15 K^3), so values below
#: this many K^p are round-off (measured: 1e-16 K^2 for V1, 1e-14 K^3 for U where the true values vanish) and are
#: reported as 0
_RESOLVED = {"G1": 1e-13, "G2": 1e-13, "V": 1e-13, "V1": 1e-13, "U": 1e-12}


#: the power of the width ratio n_{l-1}/n_1 that takes each statistic from the chain's units (the first hidden
#: width) to its layer's
_WIDTH_POWER = {"G1": 1, "V": 1, "G2": 2, "V1": 2, "U": 2}


def _floor(K: np.ndarray, k: str, units=None, out=None) -> np.ndarray:
    """The resolution of statistic k at each layer, in its layer's units (``units`` ``(L,)``: n_{l-1}/n_1; None: 1):
    :data:`_RESOLVED` times K^p, or times the statistic's natural size where that is larger (``out`` given: the
    chain's terms are of that size, and so is its round-off)."""
    base = K ** KERNEL_POWER[k] * (1.0 if units is None else units ** _WIDTH_POWER[k])
    return _RESOLVED[k] * (base if out is None else np.maximum(base, _natural(K, out)[k]))


def _natural(K: np.ndarray, out: dict) -> dict:
    """What the layer's fluctuations make natural for each statistic, ``(L,)``: ``|V|/K`` for G1, ``V^2/K^3`` for G2,
    ``V^2/K^2`` for V1, ``V^2/K`` for U (small where the metric barely fluctuates, V/K^2 << 1, where K^p would hide
    an error in them)."""
    V = np.abs(out["V"])
    return {"G1": V / K, "V": V, "G2": V * V / K**3, "V1": V * V / K**2, "U": V * V / K}


def _natural_scales(K: np.ndarray, out: dict, units=None) -> dict:
    """Each statistic's size at its layer, ``(L,)``: its own value or its :func:`_natural` size, and at least the
    chain's resolution (:data:`_RESOLVED` K^p, which also holds layer 1, where everything vanishes; ``units`` as
    :func:`_floor`'s)."""
    natural = _natural(K, out)
    return {k: np.maximum.reduce([np.abs(out[k]), natural[k], _floor(K, k, units)]) for k in natural}


def _mode_error(scales: dict, runs: list) -> tuple:
    """``(worst, (statistic, layer), asymptotic)``: the estimated mode-truncation error of ``runs[0]`` relative to
    each statistic's :func:`_natural_scales`, from the chain at 8 and 16 fewer modes (``runs[1]``, ``runs[2]``): the
    change to the next, or where the changes grow with the modes (an asymptotic series) their geometric sum
    ``d1 q/(q - 1)``, ``q = d1/d2`` (at most 11 d1)."""
    worst, where, asymptotic = 0.0, None, False
    for k, v in runs[0].items():
        scale = scales[k]
        d1, d2 = np.abs(v - runs[1][k]), np.abs(runs[1][k] - runs[2][k])
        growing = (d1 > d2) & (d1 > MODE_TOLERANCE * scale)
        q = np.maximum(d1 / np.maximum(d2, 1e-300), 1.1)
        err = np.where(growing, d1 * q / (q - 1.0), d1) / scale
        # the series as a whole: its largest change grows with the modes (an entry's change alone can grow where the
        # previous one happened to cross zero, long before the series stops converging)
        top = float(np.max(d1 / scale))
        asymptotic |= top > max(float(np.max(d2 / scale)), MODE_TOLERANCE)
        if where is None or err.max() > worst:
            worst, where = float(err.max()), (k, int(np.argmax(err)) + 1)
    return worst, where, asymptotic

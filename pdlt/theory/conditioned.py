r"""Gaussian averages of products of one-input functions over two to four distinct inputs, one coordinate conditioned
on the others: the products ``<prod_p prod_{t in ts_p} s_t(z_p)>_K``, ``s_t`` the t-th derivative of a smooth
activation, that the several-input recursions need (``<s s s s>`` and ``<s^2 s s>`` of :func:`pdlt.finite_width`,
the ``M`` tensors of :func:`pdlt.ntk`).

One coordinate j (the one with the largest relative conditional variance) is conditioned on the others,
``z_j = mu + tau xi`` with ``mu = beta . z_rest``, and the rest are ``z_rest = A w`` with ``A`` rotated (QR) so that
``mu = c w_0``. On the trapezoidal ball grid of ``w`` (radius 9), ``mu`` takes only the ``2 m_0 + 1`` values of
the ``w_0`` axis, where the 1D averages ``h(mu) = <prod s_t(mu + tau xi)>_xi`` are computed exactly (1D trapezoid,
no interpolation). The spacings are set in z units (``_HZ_*``), so the accuracy does not depend on the size of the
kernel: the grid grows instead, like ``K^((k-1)/2)`` for k inputs. Grids beyond :data:`MAX_POINTS` are not
computed: the callers refuse them (a capped grid would be silently wrong: tanh, four inputs, K ~ 9, the D of
:func:`pdlt.ntk` 2e-3 off; three inputs, K ~ 400, 27 %). Large grids are summed in chunks of whole grid lines, so the
memory stays bounded whatever the grid. :func:`several_inputs` adds the fallback beyond the limit: gaussian.expect's
capped rule with its error estimate, which the callers refuse above their tolerance.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .. import gaussian
from ..errors import ParameterError

__all__ = ["derivatives", "ball_grid", "ball_parts", "conditioned_products", "capped_rule", "several_inputs",
           "pair_products", "line_average", "PAIR_MAX_VARIANCE", "grid_points", "ladder", "MAX_POINTS", "RADIUS"]

RADIUS = 9.0  # radius of the trapezoidal ball (whitened units): the Gaussian mass outside is ~1e-17
# z-resolution of the trapezoid over the unconditioned coordinates (by their number) and of the inner 1D average,
# and the largest spacing in whitened units over the rest (the inner average keeps 0.5): measured against the rule at
# spacing 0.35 on random kernels K ~ 0.03..0.8: tanh 4e-12 at 0.6 (6e-13 at 0.5, 7e-12 at 0.65), GELU and swish
# ~4e-16; 0.6 has 0.6x the nodes of 0.5 (0.3 / 0.33 for the z-resolutions leave 7e-11 / 1e-9 on <s''' s' s'> at K ~ 1)
_HZ_REST = {1: 0.2, 2: 0.2, 3: 0.25}
_HZ_INNER = 0.2
_HMAX = 0.6

#: most grid points of one kernel's rule (the ball over the rest, and the inner averages' table): about 3 s for the
#: products of :func:`pdlt.ntk` at four inputs; four inputs reach K ~ 25-50, three K ~ 3e3-6e3 (by their correlations)
MAX_POINTS = 3e7
_CHUNK_POINTS = 1_000_000            # points evaluated at once (all kernels of a batch together)
_BALL_CACHE: dict = {}
_BALL_CACHE_POINTS = 6_000_000       # all cached grids together (~40 bytes a point)


def derivatives(act, z, orders) -> dict:
    """``{t: s_t(z)}`` for the requested derivative orders (pointwise)."""
    out = {}
    jet = None if act.kinks else act.derivatives(z)   # smooth: all orders from one pass
    for t in orders:
        # a finite sum means finite entries (one pass; an overflowing sum only sends us to the fallback)
        if jet is not None and math.isfinite(float(np.sum(jet[t]))):
            out[t] = jet[t]
        elif t == 0:
            out[t] = act(z)
        elif t == 1:
            out[t] = act.d1(z)
        elif t == 2:
            out[t] = act.d2(z)
        else:
            out[t] = act.d3(z)
    return out


@lru_cache(maxsize=None)
def ladder(m):
    """Round a half-width up to a ~9% ladder, so that kernels of one flow share a few cached grids."""
    m = max(int(m), 8)
    return int(math.ceil(8 * 1.09 ** math.ceil(math.log(m / 8) / math.log(1.09) - 1e-12)))


def grid_points(ms) -> float:
    """About how many points the ball grid with half-widths ``ms`` has (the ball's volume in grid cells)."""
    return math.pi ** (len(ms) / 2) / math.gamma(len(ms) / 2 + 1) * math.prod(ms)


def _ball_part(ms, lo, hi):
    """The points of the ball grid (:func:`ball_grid`) whose axis-0 index lies in ``lo..hi`` (0..2 m_0): whole lines
    of fixed (axis 0, axis 1) indices. Weights are normalized over the whole cube (the mass outside the ball,
    ~1e-17, is dropped), so the parts of a grid sum to it."""
    axes = [np.arange(-m, m + 1) * (RADIUS / m) for m in ms]
    norm = math.prod(float(np.sum(np.exp(-0.5 * a * a))) for a in axes)
    axes[0] = axes[0][lo:hi + 1]
    r2 = sum(np.expand_dims(a * a, [i for i in range(len(ms)) if i != k]) for k, a in enumerate(axes))
    keep = r2 <= RADIUS * RADIUS * (1 + 1e-12)
    ix = np.nonzero(keep)                 # C order: sorted by the axis indices
    pts = np.ascontiguousarray(np.stack([a[i] for a, i in zip(axes, ix)]))
    w = np.exp(-0.5 * r2[keep]) / norm
    i0 = ix[0] + lo
    i1 = ix[1] if len(ms) > 1 else 0 * i0
    new = np.ones(len(w), dtype=bool)
    new[1:] = (np.diff(i0) != 0) | (np.diff(i1) != 0)
    return pts, i0, w, np.flatnonzero(new)


def ball_grid(ms):
    """Trapezoidal nodes ``j R / m_k`` (``|j| <= m_k``, R = :data:`RADIUS`) pruned to the ball ``|w| <= R``, for
    the standard normal in ``len(ms)`` dims: ``(points (k, N), integer index of axis 0 (N,), weights (N,),
    starts)``, points sorted by their axis indices, ``starts`` the first point of each line of fixed (axis 0,
    axis 1) indices. Cached (least recently used dropped beyond ``_BALL_CACHE_POINTS`` points in all)."""
    hit = _BALL_CACHE.pop(ms, None)
    if hit is not None:
        _BALL_CACHE[ms] = hit   # most recently used last
        return hit
    grid = _ball_part(ms, 0, 2 * ms[0])
    held = sum(len(v[2]) for v in _BALL_CACHE.values())
    while _BALL_CACHE and held + len(grid[2]) > _BALL_CACHE_POINTS:   # drop the least recently used grids
        held -= len(_BALL_CACHE.pop(next(iter(_BALL_CACHE)))[2])
    _BALL_CACHE[ms] = grid
    return grid


def ball_parts(ms):
    """:func:`ball_grid` in parts of at most about ``_CHUNK_POINTS`` points (whole axis-0 slabs); small grids in
    one cached part."""
    if grid_points(ms) <= _CHUNK_POINTS:
        yield ball_grid(ms)
        return
    m0 = ms[0]
    # the slab at axis-0 value w_0 is a (k-1)-ball of radius sqrt(R^2 - w_0^2): its points, roughly
    rad = np.sqrt(np.maximum(1.0 - (np.arange(-m0, m0 + 1) / m0) ** 2, 0.0))
    slab = np.array([grid_points(ms[1:]) * r ** (len(ms) - 1) for r in rad]) if len(ms) > 1 else np.ones(2 * m0 + 1)
    lo = 0
    while lo <= 2 * m0:
        hi, total = lo, slab[lo]
        while hi + 1 <= 2 * m0 and total + slab[hi + 1] <= _CHUNK_POINTS:
            hi += 1
            total += slab[hi]
        yield _ball_part(ms, lo, hi)
        lo = hi + 1


def _local(act, z, ts, memo):
    """``prod_{t in ts} s_t(z)`` with the derivatives of ``z`` memoized in ``memo``."""
    v = None
    for t in ts:
        if t not in memo:
            memo.update(derivatives(act, z, (0, 1, 2, 3)) if not act.kinks else derivatives(act, z, (t,)))
        v = memo[t] if v is None else v * memo[t]
    return np.ones_like(z) if v is None else v


def _batched(f, shape, *arrays):
    """``f`` on stacked arrays, returning ``shape``; where the stack raises LinAlgError (a singular member), member by
    member with NaN for the failing ones."""
    try:
        return f(*arrays)
    except np.linalg.LinAlgError:
        out = np.full(shape, np.nan)
        for g in range(shape[0]):
            try:
                out[g] = f(*(a[g:g + 1] for a in arrays))[0]
            except np.linalg.LinAlgError:
                continue
        return out


def _plans(Ks, singular_cond):
    """The rule's choices for each (k, k) kernel of ``Ks`` ``(G, k, k)``: ``(plans, need)``, per kernel
    ``(j, A, c, tau, ms, mx)`` or None where the rule does not apply (a deterministic input, a block with condition
    number above ``singular_cond``) or its grid is too large; ``need`` ``(G,)`` the points such a grid would have
    (0 elsewhere)."""
    G, k = Ks.shape[0], Ks.shape[-1]
    diag = np.diagonal(Ks, axis1=1, axis2=2)
    with np.errstate(all="ignore"):
        best = np.full(G, -np.inf)
        J = np.full(G, -1)
        beta = np.zeros((G, k - 1))
        tau2 = np.zeros(G)
        for j in range(k):   # condition the coordinate with the largest relative conditional variance whose rest is
            rest = [i for i in range(k) if i != j]   # well conditioned (a kernel of rank k - 1: one with tau = 0)
            Kr, kv = Ks[:, rest][:, :, rest], Ks[:, rest, j]
            b = _batched(lambda a, v: np.linalg.solve(a, v[..., None])[..., 0], kv.shape, Kr, kv)
            t2 = Ks[:, j, j] - np.einsum("gi,gi->g", kv, b)
            rel = t2 / diag[:, j]
            fine = _batched(np.linalg.cond, (G,), Kr) <= singular_cond
            better = np.isfinite(rel) & (rel > best) & fine
            best[better], J[better], beta[better], tau2[better] = rel[better], j, b[better], t2[better]
        live = np.all(diag > 0, axis=1) & (J >= 0)
        rest_of = np.array([[i for i in range(k) if i != j] for j in range(k)])
        R_ = rest_of[np.maximum(J, 0)]                                           # (G, k - 1)
        Kr = Ks[np.arange(G)[:, None, None], R_[:, :, None], R_[:, None, :]]
        Kr = np.where(live[:, None, None], Kr, np.eye(k - 1))
        A0 = _batched(np.linalg.cholesky, Kr.shape, Kr)
        live &= np.all(np.isfinite(A0), axis=(1, 2)) & (np.linalg.cond(Kr) <= singular_cond)
        A0 = np.where(live[:, None, None], A0, np.eye(k - 1))
        rmu = np.einsum("gi,gij->gj", beta, A0)
        Mq = np.concatenate([rmu[:, :, None], np.swapaxes(A0[:, :k - 2, :], 1, 2)], axis=2)
        rot = np.max(np.abs(rmu), axis=1) > 0
        Mq = np.where(rot[:, None, None], Mq, np.eye(k - 1))
        Qm, Rm = np.linalg.qr(Mq)
        A = np.where(rot[:, None, None], A0 @ Qm, A0)
        c = np.where(rot, Rm[:, 0, 0], 0.0)
        colmax = np.max(np.abs(A), axis=1)
        colmax[:, 0] = np.maximum(colmax[:, 0], np.abs(c))
        hz = _HZ_REST[k - 1]
        steps = np.ceil(RADIUS / np.minimum(_HMAX, hz / np.where(colmax > 0, colmax, 1.0)))
        tau = np.sqrt(np.maximum(tau2, 0.0))
        inner = np.ceil(RADIUS / np.minimum(0.5, _HZ_INNER / np.where(tau > 0, tau, 1.0)))
    plans, need = [], np.zeros(G)
    for g in range(G):
        if not live[g] or not (np.all(np.isfinite(steps[g])) and np.isfinite(inner[g])):
            plans.append(None)
            continue
        ms = tuple(ladder(int(min(s, 1e9))) if cm > 0 else 8 for s, cm in zip(steps[g], colmax[g]))
        mx = ladder(int(min(inner[g], 1e9))) if tau[g] > 0 else 0
        points = max(grid_points(ms), (2 * ms[0] + 1) * (2 * mx + 1))
        if points > MAX_POINTS:
            plans.append(None)
            need[g] = points
            continue
        plans.append((int(J[g]), A[g], float(c[g]), float(tau[g]), ms, mx))
    return plans, need


def _low_rank(act, S, local, singular_cond):
    """``(values (len(local),) or None, points)`` for one kernel ``S`` (k, k) of numerical rank r <= 3 (eigenvalues
    under ``max / singular_cond`` dropped), which the conditioned rule cannot factor: ``z = M w`` with ``M`` (k, r)
    the eigen-factor, a plain trapezoid over the r-dimensional ball at the rest's z-spacing. None where r > 3 or the
    grid would exceed :data:`MAX_POINTS` (``points``)."""
    lam, V = np.linalg.eigh(S)
    keep = lam > lam[-1] / singular_cond
    r = int(np.sum(keep))
    if not (1 <= r <= 3 and np.all(np.isfinite(lam))):
        return None, 0.0
    M = V[:, keep] * np.sqrt(lam[keep])                       # (k, r)
    colmax = np.max(np.abs(M), axis=0)
    ms = tuple(ladder(math.ceil(min(RADIUS / min(_HMAX, _HZ_REST[r] / c), 1e9))) for c in colmax)
    points = grid_points(ms)
    if points > MAX_POINTS:
        return None, points
    out = np.zeros(len(local))
    with np.errstate(over="ignore", invalid="ignore"):
        for pts, _, W, _ in ball_parts(ms):
            z = M @ pts                                         # (k, N)
            memos = [{} for _ in range(S.shape[0])]
            for n, per in enumerate(local):
                v = W
                for a, ts in enumerate(per):
                    v = v * _local(act, z[a], ts, memos[a])
                out[n] += v.sum()
    return (out if np.all(np.isfinite(out)) else None), 0.0


def conditioned_products(act, Ks, local, *, singular_cond) -> tuple[np.ndarray, np.ndarray]:
    """``[<prod_p prod_{t in ts_p} s_t(z_p)> for per in local]`` for each (k, k) kernel of ``Ks`` ``(G, k, k)``
    (k = 2..4, smooth sigma), ``per[p] = ts_p`` the derivative orders at input p. Returns ``(values, need)``:
    ``values`` ``(G, len(local))`` with NaN rows where the rule does not apply (an overflow, a singular kernel of
    rank above 3) or its grid would exceed :data:`MAX_POINTS` (``need`` ``(G,)``: its points there, 0 elsewhere).
    Kernels of rank below k (collinear inputs at layer 1, deterministic inputs) are conditioned on a coordinate
    with tau = 0 where that leaves a well-conditioned rest, else factored or averaged over their rank
    (:func:`_degenerate`). All products of one kernel share the nodes; kernels with the same j and grid are evaluated
    together (module docstring)."""
    G, k = Ks.shape[0], Ks.shape[-1]
    out = np.full((G, len(local)), np.nan)
    groups = {}
    plans, need = _plans(Ks, singular_cond)
    for g, p in enumerate(plans):
        if p is not None:
            groups.setdefault((p[0],) + p[4:], []).append((g,) + p[1:4])
    for (j, ms, mx), items in groups.items():
        rest = [i for i in range(k) if i != j]
        xi = np.arange(-mx, mx + 1) * (RADIUS / mx) if mx else np.zeros(1)
        om = np.exp(-0.5 * xi * xi)
        om /= om.sum()
        axis0 = np.arange(-ms[0], ms[0] + 1) * (RADIUS / ms[0])
        size = min(grid_points(ms), _CHUNK_POINTS) + (2 * ms[0] + 1) * xi.size
        step = max(1, int(_CHUNK_POINTS // size))
        for lo in range(0, len(items), step):
            part = items[lo:lo + step]
            gs = np.array([it[0] for it in part])
            A = np.stack([it[1] for it in part])
            c = np.array([it[2] for it in part])
            tau = np.array([it[3] for it in part])
            with np.errstate(over="ignore", invalid="ignore"):
                H = _inner_averages(act, {per[j] for per in local}, c, tau, axis0, xi, om)
                vals = sum(_products(act, local, j, rest, A @ pts, H, W, i0, starts)
                           for pts, i0, W, starts in ball_parts(ms))
            ok = np.all(np.isfinite(vals), axis=1)
            out[gs[ok]] = vals[ok]
    diag = np.diagonal(Ks, axis1=1, axis2=2)
    for g in np.nonzero(np.array([p is None for p in plans]) & (need == 0) & np.all(diag >= 0, axis=1)
                        & np.all(np.isfinite(Ks), axis=(1, 2)))[0]:
        v, points = _degenerate(act, Ks[g], local, singular_cond)
        if v is not None:
            out[g] = v
        need[g] = points
    return out, need


def _degenerate(act, S, local, singular_cond):
    """``(values or None, points)`` for one kernel ``S`` (k, k) that the conditioned rule cannot factor: deterministic
    inputs (``S_aa = 0``) contribute the constants ``s_t(0)`` and the rest is averaged by the rule over the live
    inputs alone; a singular kernel without them by :func:`_low_rank`."""
    live = np.diagonal(S) > 0
    if np.all(live):
        return _low_rank(act, S, local, singular_cond)
    const = np.ones(len(local))
    memo = {}
    for n, per in enumerate(local):
        for a in np.flatnonzero(~live):
            const[n] *= float(_local(act, np.zeros(1), per[a], memo)[0])
    L = np.flatnonzero(live)
    if L.size == 0:
        return const, 0.0
    sub, loc = S[np.ix_(L, L)], [[per[a] for a in L] for per in local]
    if L.size == 1:
        v, points = _low_rank(act, sub, loc, singular_cond)
    else:
        v, need = conditioned_products(act, sub[None], loc, singular_cond=singular_cond)
        v, points = (v[0] if np.all(np.isfinite(v[0])) else None), float(need[0])
    return (None if v is None else v * const), points


def _inner_averages(act, tss, c, tau, axis0, xi, om) -> dict:
    """``{ts: h_ts}``, ``h_ts`` ``(C, 2 m_0 + 1)`` the conditioned coordinate's 1D averages
    ``<prod_{t in ts} s_t(mu + tau xi)>_xi`` at ``mu = c w_0`` on the w_0 axis, in chunks of rows."""
    C = c.size
    out = {ts: np.empty((C, axis0.size)) for ts in tss}
    rows = max(1, _CHUNK_POINTS // (C * xi.size))
    for lo in range(0, axis0.size, rows):
        zin = c[:, None, None] * axis0[None, lo:lo + rows, None] + tau[:, None, None] * xi
        memo = {}
        for ts in tss:
            out[ts][:, lo:lo + rows] = _local(act, zin, ts, memo) @ om
    return out


def _products(act, local, j, rest, z, H, W, i0, starts) -> np.ndarray:
    """One part of the grid's sums for :func:`conditioned_products`: ``z`` ``(C, k - 1, N)`` the rest at the part's
    points, ``H`` the inner averages (:func:`_inner_averages`); returns ``(C, len(local))``."""
    k = len(rest) + 1
    memos = [{} for _ in rest]
    Fp = [{} for _ in rest]

    def factor(p, ts, at):
        if ts not in Fp[p]:
            Fp[p][ts] = _local(act, at, ts, memos[p])
        return Fp[p][ts]

    out = np.empty((z.shape[0], len(local)))
    if k == 4:
        # the first of the rest lies in span(w_0, w_1) (the QR of _plans), and so does mu: both are constant on each
        # line of fixed (axis 0, axis 1) indices, so each product is sum_lines h(mu) f_0 (sum_line W f_1 f_2), and
        # the line sums are shared by every product with the same (f_1, f_2)
        first, i0l = z[:, 0, starts], i0[starts]
        inner = {}
        for n, per in enumerate(local):
            pair = (per[rest[1]], per[rest[2]])
            if pair not in inner:
                inner[pair] = np.add.reduceat(W * factor(1, pair[0], z[:, 1]) * factor(2, pair[1], z[:, 2]), starts,
                                              axis=-1)
            out[:, n] = np.einsum("cl,cl->c", H[per[j]][:, i0l] * factor(0, per[rest[0]], first), inner[pair])
    else:
        for n, per in enumerate(local):
            v = W * H[per[j]][:, i0]
            for p, i in enumerate(rest):
                v = v * factor(p, per[i], z[:, p])
            out[:, n] = v.sum(axis=-1)
    return out


# pair_products: z-spacing of every trapezoid and the largest spacing in whitened units; the correlation up to which
# Mehler's series is used
_PAIR_HZ = 0.2
_PAIR_HMAX = 0.5
_MEHLER_RHO = 0.5
# as gaussian.expect: the share of sum |w f| from |x| > 8 above which the Gaussian average is not captured
_TAIL_R, _TAIL_MAX = 8.0, 1e-6
#: the largest variance that :func:`pair_products` and :func:`line_average` take (their lattices then hold up to ~4e6
#: points, a peak of ~300 MB for the convolution); beyond, callers fall back to gaussian.expect's capped rule and its
#: check
PAIR_MAX_VARIANCE = 5e8


def _unit_line(scale: float):
    """Trapezoid for ``x ~ N(0, 1)`` resolving a function of ``scale x`` at z-spacing :data:`_PAIR_HZ`: ``(x, w)``,
    ``|x| <= RADIUS``, weights normalized to sum 1."""
    m = int(math.ceil(RADIUS / min(_PAIR_HMAX, _PAIR_HZ / scale))) if scale > 0 else 1
    x = np.arange(-m, m + 1) * (RADIUS / m)
    w = np.exp(-0.5 * x * x)
    return x, w / w.sum()


def _smoothed(f, step: float, m: int, beta: float):
    """``<f(c + beta e)>_e`` for ``e ~ N(0, 1)`` at the centres ``c_i = i step``, ``|i| <= m`` (``step`` at most
    :data:`_PAIR_HZ`), ``(2 m + 1,)``. A narrow smoothing (``beta < 4 step``) is summed directly on its own
    trapezoid; a wider one as a discrete convolution on the lattice of the centres (inner nodes
    ``e_j = j step / beta``, so every ``c_i + beta e_j`` is a lattice point and ``f`` is evaluated once per lattice
    point: ``O(N log N)`` instead of ``O(N beta / step)``). Centres and lattice are integer multiples of ``step``:
    built by adding steps, they would drift by ``eps |z|`` where ``f`` is steep (3e-12 of erf at ``K = 1e7``)."""
    centres = step * np.arange(-m, m + 1)
    if beta == 0.0:
        return f(centres)
    e, w = _unit_line(beta)
    # the lattice's inner spacing step / beta must resolve the Gaussian itself (<= 0.25); where it does, the
    # convolution evaluates f once per lattice point instead of once per (centre, node) (at K = 5e8 and beta ~ 4,
    # nearby inputs, the direct sum took 4.7 s, the convolution 1.5 s), and f's evaluations dominate the cost
    if step > 0.25 * beta:
        out = np.empty(centres.size)
        rows = max(1, _CHUNK_POINTS // e.size)
        for lo in range(0, centres.size, rows):
            out[lo:lo + rows] = f(centres[lo:lo + rows, None] + beta * e) @ w
        return out
    from scipy.signal import fftconvolve

    J = int(math.ceil(RADIUS * beta / step))
    ej = np.arange(-J, J + 1) * (step / beta)
    om = np.exp(-0.5 * ej * ej)
    lattice = step * np.arange(-m - J, m + J + 1)
    return fftconvolve(f(lattice), om / om.sum(), mode="valid")


def _on_line(f, var: float):
    """``(x, f(sqrt(var) x) w)`` on :func:`_unit_line`, or None where ``<f(z)>``, ``z ~ N(0, var)``, is not finite or
    not captured within ``|z| <= 8 sqrt(var)`` (gaussian.expect's divergence test): a function growing faster than
    the Gaussian decays (``exp(z / 2000)`` at ``var = 1e8``) is not, and no grid makes its average right."""
    x, w = _unit_line(math.sqrt(var))
    with np.errstate(over="ignore", invalid="ignore"):
        fw = f(math.sqrt(var) * x) * w
        a = np.abs(fw)
        total = float(np.sum(a))
        ok = math.isfinite(total) and float(np.sum(a[np.abs(x) > _TAIL_R])) <= _TAIL_MAX * total
    return (x, fw) if ok else None


def _line(f, var: float) -> float:
    """``<f(z)>``, ``z ~ N(0, var)``, on :func:`_unit_line`; NaN where :func:`_on_line` does not capture it."""
    on = _on_line(f, var)
    return math.nan if on is None else float(np.sum(on[1]))


def _variances(var) -> np.ndarray:
    var = np.asarray(var, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(var)) or np.any(var > PAIR_MAX_VARIANCE):
        raise ParameterError(f"the variances must be finite and at most PAIR_MAX_VARIANCE = {PAIR_MAX_VARIANCE:g}, "
                             f"got a largest of {float(np.max(np.abs(var), initial=0.0)):.3g}: use "
                             "pdlt.gaussian.expect beyond", "var")
    return np.maximum(var, 0.0)      # a rounding-negative variance is a deterministic input


def line_average(f, var) -> np.ndarray:
    """``<f(z)>`` for ``z ~ N(0, var)``, each variance of ``var`` ``(G,)`` (at most :data:`PAIR_MAX_VARIANCE`), on the
    trapezoid of :func:`pair_products` (z-spacing :data:`_PAIR_HZ` at any variance; ``O(sqrt(var))`` nodes). NaN where
    the average is not finite or not captured by the Gaussian's bulk (:func:`_on_line`): callers hand those to
    :func:`pdlt.gaussian.expect`, whose error says so."""
    return np.array([_line(f, v) for v in _variances(var)])


def pair_products(f, g, Ks) -> np.ndarray:
    r"""``<f(z_0) g(z_1)>_K`` for each ``(2, 2)`` kernel of ``Ks`` ``(G, 2, 2)``; ``f``, ``g`` vectorized smooth
    functions of one variable. Resolved at a fixed z-spacing (:data:`_PAIR_HZ`) whatever the size of the kernel, at a
    cost that grows like ``sqrt(K)`` (the 2D trapezoid of :func:`pdlt.gaussian.expect` needs ``K`` points and caps
    them beyond ``K ~ 120``). Two rules, by the correlation ``rho = K_01 / sqrt(K_00 K_11)``:

    * ``|rho| <= 1/2``: Mehler's series ``sum_k rho^k a_k b_k`` with ``a_k = <f(sqrt(K_00) x) He_k(x)> / sqrt(k!)``
      (1D trapezoids), summed until ``|rho|^(k+1) / (1 - |rho|)``, which bounds the rest relative to
      ``sqrt(<f^2> <g^2>)`` (Cauchy-Schwarz), is below 1e-17;
    * ``|rho| > 1/2``: a common factor, ``z_0 = alpha s + beta_0 e_0``, ``z_1 = gamma s + beta_1 e_1`` with
      ``alpha = sqrt(|rho| K_00)``, ``gamma = sign(rho) sqrt(|rho| K_11)``, ``beta_a = sqrt((1 - |rho|) K_aa)``, so the
      average is ``<F(alpha s) G(gamma s)>_s`` with ``F``, ``G`` the 1D smoothed ``f``, ``g``
      (:func:`_smoothed`); ``beta_0 <= alpha`` and ``beta_1 <= |gamma|`` there, so each lattice is at most about twice
      the outer grid.

    Returns ``(G,)``, NaN where an average is not finite or not captured by the Gaussian's bulk (as
    :func:`line_average`). Variances at most :data:`PAIR_MAX_VARIANCE` (else a ParameterError)."""
    Ks = np.asarray(Ks, dtype=np.float64)
    if Ks.ndim != 3 or Ks.shape[1:] != (2, 2) or not np.all(np.isfinite(Ks)):
        raise ParameterError(f"Ks must be finite (G, 2, 2) kernels, got shape {Ks.shape}", "Ks")
    _variances(np.diagonal(Ks, axis1=1, axis2=2))
    out = np.empty(Ks.shape[0])
    for k, K in enumerate(Ks):
        A, B, C = max(float(K[0, 0]), 0.0), max(float(K[1, 1]), 0.0), 0.5 * float(K[0, 1] + K[1, 0])
        if A <= 0.0 or B <= 0.0:      # a deterministic input (z = 0) factors out
            out[k] = float(f(np.zeros(1))[0]) * line_average(g, [B])[0] if A <= 0.0 else \
                line_average(f, [A])[0] * float(g(np.zeros(1))[0])
            continue
        lines = (_on_line(f, A), _on_line(g, B))
        if lines[0] is None or lines[1] is None:
            out[k] = np.nan
            continue
        rho = max(-1.0, min(1.0, C / (math.sqrt(A) * math.sqrt(B))))
        if abs(rho) <= _MEHLER_RHO:
            terms = 1 if rho == 0.0 else int(math.ceil(math.log(1e-17 * (1 - abs(rho))) / math.log(abs(rho))))
            coef = []
            for x, fw in lines:     # the Hermite coefficients on the lines the capture test evaluated
                coef.append(np.array([float(fw @ e) for e in gaussian.hermite_functions(x, terms - 1)]))
            out[k] = float(np.sum(rho ** np.arange(terms) * coef[0] * coef[1]))
            continue
        # from C itself, not rho: near |rho| = 1, 1 - |rho| would carry eps / (1 - |rho|) of relative rounding, while
        # A - |C| sqrt(A / B) is exact for A = B
        alpha2, gamma2 = abs(C) * math.sqrt(A / B), abs(C) * math.sqrt(B / A)
        alpha, gamma = math.sqrt(alpha2), math.copysign(math.sqrt(gamma2), C)
        beta0, beta1 = math.sqrt(max(A - alpha2, 0.0)), math.sqrt(max(B - gamma2, 0.0))
        s, ws = _unit_line(max(alpha, abs(gamma)))
        m, h = s.size // 2, RADIUS / (s.size // 2)
        F = _smoothed(f, alpha * h, m, beta0)
        G = _smoothed(g, abs(gamma) * h, m, beta1)
        G = G if gamma > 0 else G[::-1]
        out[k] = float(np.sum(ws * F * G))
    return out


def capped_rule(f, Ks, n=None):
    """``(values (G, m), err (G,))``: :func:`gaussian.expect`'s rule (its default, or ``n`` nodes per axis) for
    kernels ``Ks`` ``(G, q, q)`` where the resolved rules would exceed their grid limit, and its error estimate
    (against a rule of 2/3 its nodes, an overestimate): the largest over the averages of each one's change relative to
    itself, or to 1e-9 of the kernel's largest average where it is smaller (averages that vanish by symmetry).
    Relative to the largest average alone, small ones would hide: softplus at K = 5200, whose moments grow like K^2,
    passed with 1e-7 while its Hermite averages were 3e-4 off."""
    val, e = gaussian.expect(f, Ks, n=n, return_error=True)
    val, e = np.asarray(val).reshape(Ks.shape[0], -1), np.asarray(e).reshape(Ks.shape[0], -1)
    floor = 1e-9 * np.max(np.abs(val), axis=1, keepdims=True)
    scale = np.maximum(np.abs(val), np.where(floor > 0, floor, 1.0))
    return val, np.max(np.abs(e) / scale, axis=1)


def several_inputs(act, Ks, local, f, *, singular_cond, fill=True) -> tuple[np.ndarray, np.ndarray]:
    """``(values (G, len(local)), err (G,))``: :func:`conditioned_products` where its grid fits, :func:`capped_rule`
    (``f`` the same products as an integrand for gaussian.expect) where not, with ``err`` its estimated relative
    error there (0 elsewhere). Where the conditioned rule does not apply (an overflow, a singular kernel of rank
    above 3): gaussian.expect's default rule (``fill``), or NaN rows for a caller with a rule of its own."""
    vals, need = conditioned_products(act, Ks, local, singular_cond=singular_cond)
    err = np.zeros(Ks.shape[0])
    big = need > 0
    if np.any(big):
        vals[big], err[big] = capped_rule(f, Ks[big])
    rest = ~np.all(np.isfinite(vals), axis=1) & ~big
    if fill and np.any(rest):
        vals[rest] = np.asarray(gaussian.expect(f, Ks[rest])).reshape(-1, len(local))
    return vals, err

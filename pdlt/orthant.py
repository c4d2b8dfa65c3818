r"""Gaussian moments over the positive orthant in closed form, for ``z ~ N(0, S)`` with up to four coordinates:
the orthant probability ``P(z > 0)``, the truncated moments ``E[z^alpha 1{z > 0}]`` and the Hermite-weighted ones
``E[z^p He_n(z; S) 1{z > 0}]`` (derivations/README.md section 13.6).

**Probability.** For k <= 3 coordinates ``P = 2^-k + sum_{i<j} asin(rho_ij) / (2^(k-1) pi)``. For k = 4 Plackett's
identity ``dP/dS_ij = p_ij(0, 0) P(z_a, z_b > 0 | z_i = z_j = 0)`` (``{a, b}`` the other two) integrated along
``S(t) = diag S + t offdiag S`` from the independent case gives the same sum (from the constant 1/4 of the 2-D
orthant probability) plus ``sum_{i<j} int_0^1 S_ij asin(rho_{ab|ij}(t)) / (4 pi^2 sqrt(det_ij(t))) dt``, one
integral in t done on graded Gauss-Legendre panels (:func:`pdlt.closed_forms.graded_path_rule`).

**Moments.** Stein's identity on the orthant, ``E[z_i g 1] = sum_j S_ij (E[d_j g 1] + E[g delta(z_j) 1_{-j}])``,
lowers the degree (first term) or conditions on ``z_j = 0`` (second; zero when ``g`` carries a power of ``z_j``).
Conditioning on a set of coordinates leaves a Gaussian of the rest with the Schur complement covariance, so with
``T_R(alpha) = p_{R^c}(0) E[z_R^alpha 1{z_R > 0} | z_{R^c} = 0]`` (``p_{R^c}`` the density of the other
coordinates, ``S^R`` the Schur complement) the recursion closes over the subsets R of the coordinates:

    T_R(alpha + e_i) = sum_{j in R} S^R_ij [alpha_j T_R(alpha - e_j) + [alpha_j = 0] T_{R - j}(alpha)],
    T_R(0) = p_{R^c}(0) P(N(0, S^R) > 0),

and ``E[z^alpha 1{z > 0}] = T_all(alpha)``. **Hermite weights** ``He_n(z; S)`` (``y = S^-1 z``,
``He_{n+e_c} = y_c He_n - sum_u n_u (S^-1)_cu He_{n-e_u}``) are polynomials in z, so
``A(p, n + e_c) = sum_u (S^-1)_cu [A(p + e_u, n) - n_u A(p, n - e_u)]`` with ``A(p, 0)`` the moments above.

Everything runs on the correlation matrix (``z = D w``, ``D = diag(sqrt(S_uu))``: ``E[z^alpha 1] =
D^alpha E[w^alpha 1]`` and ``He_n(z; S) = D^-n He_n(w; R)``), so the scale of S neither overflows nor underflows.
Every step is exact; what is lost is rounding. Each function can also return the same recursion run on absolute
values (``|R^R|``, ``|R^-1|``): ``eps`` times it bounds the rounding up to a modest factor, which grows like a power
of the inverse of the smallest eigenvalue of the correlation matrix as the coordinates align. Where the recursion
conditions on linearly dependent coordinates (a singular S, or a collinear pair) the moments are not defined by it:
a :class:`~pdlt.errors.ParameterError` says so, never a NaN.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["probability", "moments", "hermite_moments", "scale_invariant_averages", "relative_rounding", "MAX_DIM",
           "MAX_DEGREE", "ROUNDING_LIMIT"]

#: most coordinates (the orthant probability of five or more has no one-dimensional integral of closed forms)
MAX_DIM = 4

#: highest total degree of a moment (the recursion's depth; the 1/n^2 theory needs 10)
MAX_DEGREE = 40

# conditional variance (in units of the coordinate's own) below which the conditioning determines a coordinate
_DEGENERATE = 1e-12

#: most rounding, as a fraction of the largest average of a kernel, that the public functions return: the bound
#: ``8 eps`` times the recursion on absolute values (tests/test_orthant.py) beyond it raises ParameterError. It grows
#: like a power of the inverse smallest eigenvalue of the correlation matrix (four inputs of the 1/n^2 theory: 4e-7
#: at eigenvalue 0.012, 0.07 at 0.001)
ROUNDING_LIMIT = 1e-3


def _check(S, batch: bool = False) -> np.ndarray:
    from .errors import ParameterError

    try:
        if np.iscomplexobj(S):
            raise TypeError
        S = np.asarray(S, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"S must be an array of covariance matrices, got {type(S).__name__}", "S") from None
    if S.ndim < 2 or S.shape[-1] != S.shape[-2] or S.shape[-1] > MAX_DIM or (batch and S.ndim != 3):
        raise ParameterError(f"S must be {'(B, k, k)' if batch else '(..., k, k)'} covariances with k <= {MAX_DIM}, "
                             f"got shape {S.shape}", "S")
    diag = np.diagonal(S, axis1=-2, axis2=-1)
    if not np.all(np.isfinite(S)) or np.any(diag <= 0):
        raise ParameterError("S must be finite with positive variances", "S")
    sd = np.sqrt(diag)
    R = S / (sd[..., :, None] * sd[..., None, :])
    if np.any(np.abs(R - np.swapaxes(R, -1, -2)) > 1e-12) or np.any(np.abs(R) > 1.0 + 1e-12):
        raise ParameterError("S must be symmetric with correlations in [-1, 1]", "S")
    if R.size and np.linalg.eigvalsh(R).min() < -1e-12:
        raise ParameterError(f"S must be positive semidefinite (a correlation matrix has eigenvalue "
                             f"{np.linalg.eigvalsh(R).min():.3g})", "S")
    return S


def _correlation(S):
    """``(R, sd)``: the correlation matrices and standard deviations of covariances ``S`` ``(..., k, k)``."""
    sd = np.sqrt(np.diagonal(S, axis1=-2, axis2=-1))
    return S / (sd[..., :, None] * sd[..., None, :]), sd


def _check_powers(rows, k: int, what: str) -> list:
    from .errors import ParameterError

    try:
        arr = np.asarray(rows).reshape(-1, k) if np.size(rows) == 0 else np.asarray(rows)
        ok = (arr.ndim == 2 and arr.shape[1] == k and np.all(arr == np.round(arr)) and np.all(arr >= 0)
              and np.all(arr.sum(axis=1) <= MAX_DEGREE))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"{what} must be rows of {k} nonnegative integers (one per coordinate of S) of total "
                             f"degree <= {MAX_DEGREE}", what)
    return [tuple(int(v) for v in row) for row in arr]


def _singular(what: str):
    from .errors import ParameterError

    return ParameterError(f"{what}: S is singular where the recursion conditions on coordinates (linearly dependent "
                          "coordinates, e.g. a collinear pair); these moments over the orthant are not computed "
                          "for it", "S")


def probability(S) -> np.ndarray:
    """``P(z > 0)`` for ``z ~ N(0, S)``, ``S`` ``(..., k, k)`` with k <= 4, positive semidefinite with positive
    variances: ``(...)``. Raises :class:`~pdlt.errors.ParameterError` for four coordinates with a collinear pair.

    >>> round(float(probability(np.full((4, 4), 0.5) + 0.5 * np.eye(4))), 12)      # equicorrelated 1/2: 1/(k+1)
    0.2
    """
    out = _probability(_correlation(_check(S))[0])
    if not np.all(np.isfinite(out)):
        raise _singular("the orthant probability of four coordinates")
    return out


def _probability(R) -> np.ndarray:
    """:func:`probability` without checks, for correlation matrices ``R`` (or covariances: only correlations enter);
    NaN where four coordinates have a collinear pair. A conditional variance that rounding made zero or negative
    counts as independent of the others (:func:`pdlt.activations.correlation_angle` gives its angles 0)."""
    from .activations import correlation_angle
    from .closed_forms import graded_path_rule

    k = R.shape[-1]
    out = np.full(R.shape[:-2], 0.5**k)
    with np.errstate(all="ignore"):
        for i, j in itertools.combinations(range(k), 2):
            out = out + correlation_angle(R[..., i, i], R[..., j, j], R[..., i, j]) / (2.0 ** (k - 1) * np.pi)
        if k < 4:
            return out
        t, w = graded_path_rule()
        Rt = R[..., None, :, :] * np.where(np.eye(4, dtype=bool), 1.0, t[:, None, None])          # (..., T, 4, 4)
        for i, j in itertools.combinations(range(4), 2):
            a, b = (m for m in range(4) if m not in (i, j))
            det = Rt[..., i, i] * Rt[..., j, j] - Rt[..., i, j] ** 2
            C = Rt[..., [i, j], :][..., :, [i, j]]
            U = Rt[..., [a, b], :][..., :, [i, j]]
            try:
                c = Rt[..., [a, b], :][..., :, [a, b]] - U @ np.linalg.solve(C, np.swapaxes(U, -1, -2))
            except np.linalg.LinAlgError:      # a collinear pair (i, j): singular at t = 1
                c = np.full(U.shape, np.nan)
            ang = correlation_angle(c[..., 0, 0], c[..., 1, 1], c[..., 0, 1])
            # p_ij(0, 0) = 1/(2 pi sqrt det) times the 2-D orthant probability 1/4 + ang/(2 pi): its constant part
            # integrates in closed form to the pair's term asin(rho_ij)/(8 pi) above
            out = out + (R[..., i, j][..., None] * ang / np.sqrt(det)) @ w / (4.0 * np.pi * np.pi)
    return out


def _schur(S, keep, given):
    """Covariance of ``z_keep`` given ``z_given = 0``: ``(B, |keep|, |keep|)``, NaN for a singular ``given`` block."""
    keep, given = list(keep), list(given)
    A = S[:, keep][:, :, keep]
    if not given:
        return A
    Bm, C = S[:, keep][:, :, given], S[:, given][:, :, given]
    out = np.full(A.shape, np.nan)
    for b in range(S.shape[0]):                  # row by row only where a block is singular
        try:
            out[b] = A[b] - Bm[b] @ np.linalg.solve(C[b], Bm[b].T)
        except np.linalg.LinAlgError:
            pass
    return out


def _density_at_zero(R, given):
    """Density of ``z_given`` at 0 for correlation matrices ``R`` ``(B, k, k)``: ``(B,)`` (inf or NaN where the block is
    singular)."""
    given = list(given)
    if not given:
        return np.ones(R.shape[0])
    with np.errstate(all="ignore"):
        return 1.0 / np.sqrt((2.0 * np.pi) ** len(given) * np.linalg.det(R[:, given][:, :, given]))


class _Recursion:
    """The tables ``T_R(alpha)`` of the module docstring for correlation matrices ``R`` ``(B, k, k)``, filled on
    demand; with ``magnitude`` the same recursion on ``|R^R|`` (every base term is positive), whose ``eps`` multiple
    bounds the rounding."""

    def __init__(self, R, magnitude: bool = False):
        self.R, self.k, self.magnitude = R, R.shape[-1], magnitude
        self.blocks, self.memo = {}, {}

    def block(self, sub):
        """``(R^sub, T_sub(0))``: the covariance of ``z_sub`` given the other coordinates at 0, and the base term. A
        coordinate that the conditioning determines (conditional variance ~0: a singular S) leaves its orthant
        probability to the direction in which the variance vanishes, unless it is alone (1/2 then): NaN."""
        got = self.blocks.get(sub)
        if got is None:
            rest = tuple(u for u in range(self.k) if u not in sub)
            C = _schur(self.R, sub, rest)
            p = _probability(C) if sub else np.ones(self.R.shape[0])
            if len(sub) >= 2:
                p = np.where(np.all(np.diagonal(C, axis1=-2, axis2=-1) > _DEGENERATE, axis=-1), p, np.nan)
            got = self.blocks[sub] = (np.abs(C) if self.magnitude else C, _density_at_zero(self.R, rest) * p)
        return got

    def T(self, sub, alpha):
        key = (sub, alpha)
        got = self.memo.get(key)
        if got is not None:
            return got
        i = next((u for u in sub if alpha[u] > 0), None)
        if i is None:
            v = self.block(sub)[1]
        else:
            a = alpha[:i] + (alpha[i] - 1,) + alpha[i + 1:]
            C, pos = self.block(sub)[0], {u: m for m, u in enumerate(sub)}
            v = 0.0
            for j in sub:
                c = C[:, pos[i], pos[j]]
                if a[j]:
                    v = v + c * a[j] * self.T(sub, a[:j] + (a[j] - 1,) + a[j + 1:])
                else:
                    v = v + c * self.T(tuple(u for u in sub if u != j), a)
        self.memo[key] = v
        return v


def relative_rounding(values, mags) -> np.ndarray:
    """The rounding bound ``8 eps mags`` (``mags`` the recursion on absolute values) as a fraction of each kernel's
    largest average ``max|values|``: ``(B,)`` for ``(B, m)`` inputs (inf where every average is 0 but not its
    bound)."""
    if not values.shape[-1]:
        return np.zeros(values.shape[:-1])
    top, bound = np.abs(values).max(axis=-1), 8 * np.finfo(np.float64).eps * mags.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(top > 0, bound / top, np.where(bound > 0, np.inf, 0.0))


def _guard(values, mags, what: str) -> np.ndarray:
    """``values`` ``(B, m)``, refused where not finite or where :func:`relative_rounding` exceeds
    :data:`ROUNDING_LIMIT`."""
    from .errors import ParameterError

    if not np.all(np.isfinite(values)) or not np.all(np.isfinite(mags)):
        raise _singular(what)
    if values.shape[-1]:
        rel = relative_rounding(values, mags)
        if np.any(rel > ROUNDING_LIMIT):
            raise ParameterError(f"{what}: S is too close to singular: the rounding of these averages may reach "
                                 f"{float(rel.max()):.2g} of the largest (limit ROUNDING_LIMIT = {ROUNDING_LIMIT:g}); "
                                 "the coordinates are nearly linearly dependent", "S")
    return values


def _moments(R, sd, alphas, magnitude: bool) -> np.ndarray:
    rec = _Recursion(R, magnitude)
    full = tuple(range(rec.k))
    out = np.empty((R.shape[0], len(alphas)))
    with np.errstate(all="ignore"):
        for m, a in enumerate(alphas):
            out[:, m] = rec.T(full, a) * np.prod(sd ** np.array(a), axis=-1)
    return out


def moments(S, alphas, *, magnitude: bool = False) -> np.ndarray:
    """``E[z^alpha 1{z > 0}]`` for ``z ~ N(0, S)``: ``S`` ``(B, k, k)`` (k <= 4), ``alphas`` ``(m, k)`` nonnegative
    integer powers; ``(B, m)``. ``magnitude``: the recursion on absolute values instead (module docstring). A
    positive semidefinite S is accepted where the recursion does not condition on dependent coordinates (total degree
    <= 2 with no collinear pair, for instance); otherwise, or where rounding may exceed :data:`ROUNDING_LIMIT`,
    :class:`~pdlt.errors.ParameterError`.

    >>> S = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> np.round(moments(S, [[0, 0], [1, 0], [2, 2]]), 12).tolist()     # 1/4, phi(0)/2, 1/4
    [[0.25, 0.199471140201, 0.25]]
    """
    S = _check(S, batch=True)
    alphas = _check_powers(alphas, S.shape[-1], "alphas")
    R, sd = _correlation(S)
    mags = _moments(R, sd, alphas, True)
    return mags if magnitude else _guard(_moments(R, sd, alphas, False), mags, "moments")


def _hermite(R, sd, ps, ns, magnitude: bool) -> np.ndarray:
    k = R.shape[-1]
    try:
        Lam = np.linalg.inv(R)
    except np.linalg.LinAlgError:
        return np.full((R.shape[0], len(ps)), np.nan)
    if magnitude:
        Lam = np.abs(Lam)
    rec = _Recursion(R, magnitude)
    full = tuple(range(k))
    memo: dict = {}

    def A(p, n):
        got = memo.get((p, n))
        if got is not None:
            return got
        c = next((u for u in range(k) if n[u] > 0), None)
        if c is None:
            v = rec.T(full, p)
        else:
            m = n[:c] + (n[c] - 1,) + n[c + 1:]
            v = 0.0
            for u in range(k):
                v = v + Lam[:, c, u] * A(p[:u] + (p[u] + 1,) + p[u + 1:], m)
                if m[u]:
                    lower = A(p, m[:u] + (m[u] - 1,) + m[u + 1:])
                    v = v + (1.0 if magnitude else -1.0) * m[u] * Lam[:, c, u] * lower
        memo[(p, n)] = v
        return v

    out = np.empty((R.shape[0], len(ps)))
    with np.errstate(all="ignore"):
        for m, (p, n) in enumerate(zip(ps, ns)):
            out[:, m] = A(p, n) * np.prod(sd ** (np.array(p) - np.array(n)), axis=-1)
    return out


def _keys(keys, k):
    try:
        ps, ns = zip(*keys) if len(keys) else ((), ())
    except (TypeError, ValueError):
        ps = ns = None
    return _check_powers(ps, k, "keys"), _check_powers(ns, k, "keys")


def hermite_moments(S, keys, *, magnitude: bool = False) -> np.ndarray:
    """``E[z^p He_n(z; S) 1{z > 0}]`` for ``z ~ N(0, S)`` and each ``(p, n)`` in ``keys`` (two length-k tuples of
    nonnegative integers): ``(B, len(keys))``; ``He_n(z; S) = (-1)^|n| d^n N(z; S) / N(z; S)``, the multivariate
    Hermite polynomials of the covariance, so that ``E[F He_n] = E[d^n F]`` (Gaussian integration by parts). S must
    be positive definite and far enough from singular that rounding stays below :data:`ROUNDING_LIMIT`
    (:class:`~pdlt.errors.ParameterError` otherwise). ``magnitude``: on absolute values (module docstring).

    >>> S = np.array([[[1.0, 0.5], [0.5, 1.0]]])
    >>> float(np.round(hermite_moments(S, [((1, 1), (1, 1))]), 12)[0, 0])   # <relu relu He_11> = P(z > 0) = 1/3
    0.333333333333
    """
    S = _check(S, batch=True)
    ps, ns = _keys(keys, S.shape[-1])
    R, sd = _correlation(S)
    mags = _hermite(R, sd, ps, ns, True)
    return mags if magnitude else _guard(_hermite(R, sd, ps, ns, False), mags, "hermite_moments")


def scale_invariant_averages(ap: float, am: float, powers, counts, S, *, magnitude: bool = False,
                             return_magnitude: bool = False):
    """``<prod_u sigma(z_u)^{p_u} He_n(z; S)>_S = <prod_u (sigma^{p_u})^{(n_u)}(z_u)>_S`` for
    ``sigma = a_+ z Theta(z) + a_- z Theta(-z)``: ``powers``, ``counts`` ``(nk, k)`` (every ``p_u >= 1``), ``S``
    ``(B, k, k)``; ``(B, nk)``. On the orthant of signs ``e`` sigma is ``a_e z``, and ``z = D w`` (``D = diag e``)
    maps it onto the positive orthant of ``D S D`` with ``He_n(D w; S) = e^n He_n(w; D S D)``, so each key is
    ``sum_e prod_u a_{e_u}^{p_u} e_u^{p_u + n_u} E_{DSD}[w^p He_n(w) 1{w > 0}]`` (:func:`hermite_moments`; ReLU keeps
    only e = +). ``magnitude``: the sum of the absolute terms on absolute values (module docstring). Refused as
    :func:`hermite_moments` is, on the sum over the orthants (an orthant the inputs barely reach may round badly
    without mattering). ``return_magnitude``: ``(averages, magnitudes)`` with no rounding refusal, for a caller that
    judges the rounding itself (:func:`relative_rounding`; non-finite averages are still refused).

    >>> S = np.array([[[1.0, 0.5], [0.5, 1.0]]])
    >>> float(np.round(scale_invariant_averages(1.0, 1.0, [[1, 1]], [[0, 0]], S), 12)[0, 0])     # <z_0 z_1> = 0.5
    0.5
    """
    from .errors import ParameterError

    S = _check(S, batch=True)
    k = S.shape[-1]
    try:
        ok = bool(np.isfinite(ap) and np.isfinite(am) and abs(ap) < 1e100 and abs(am) < 1e100)
    except TypeError:
        ok = False
    if not ok:
        raise ParameterError(f"the slopes must be finite numbers below 1e100, got ({ap!r}, {am!r})", "slopes")
    powers, counts = np.array(_check_powers(powers, k, "powers")), np.array(_check_powers(counts, k, "counts"))
    if powers.shape != counts.shape:
        raise ParameterError(f"powers and counts must have the same shape, got {powers.shape} and {counts.shape}",
                             "counts")
    ps, ns = [tuple(p) for p in powers.tolist()], [tuple(n) for n in counts.tolist()]
    out, mags = np.zeros(S.shape[:1] + (len(ps),)), np.zeros(S.shape[:1] + (len(ps),))
    for e in itertools.product((1, -1), repeat=k):
        slope = np.where(np.array(e) > 0, float(ap), float(am))
        coef = np.prod(slope ** powers, axis=1) * np.prod(np.array(e) ** (powers + counts), axis=1)
        live = np.flatnonzero(coef)
        if live.size:
            R, sd = _correlation(S * np.outer(e, e))
            sub = ([ps[i] for i in live], [ns[i] for i in live])
            if return_magnitude or not magnitude:
                out[:, live] += coef[live] * _hermite(R, sd, *sub, False)
            mags[:, live] += np.abs(coef[live]) * _hermite(R, sd, *sub, True)
    if return_magnitude:
        if not (np.all(np.isfinite(out)) and np.all(np.isfinite(mags))):
            raise _singular("scale_invariant_averages")
        return out, mags
    return mags if magnitude else _guard(out, mags, "scale_invariant_averages")

r"""Several inputs at order 1/n^2: ``G2_ab``, ``V1_(ab)(cd)`` and ``U_(ab)(cd)(ef)`` from the conditional-Gaussian
chain of the d x d metric (derivations/README.md section 13.6; layers l = 1..L at array index l - 1).

Given layer l, the preactivations of layer l + 1 are iid over neurons, ``z_i ~ N(0, G')`` with
``G'_ab = C_b + (C_W/n_l) sum_j sigma(z_ja) sigma(z_jb)`` and the ``z_j`` iid ``N(0, G)``: a Markov chain of the
metric. Conditionally on G, G' has cumulants

    E[G'|G] = Phi(G) = C_b + C_W <s_a s_b>_G,       Cov[G'|G] = C_W^2 S(G)/n_l,       kappa_3[G'|G] = C_W^3 W(G)/n_l^2,

with ``S_(ab)(cd) = <s_a s_b s_c s_d> - <s_a s_b><s_c s_d>`` and ``W`` the third joint cumulant of ``(s_a s_b, s_c s_d,
s_e s_f)`` for one neuron (``s_a = sigma(z_a)``). With ``G = K + delta`` and, for ``n = n_{l-1}``,

    E delta = G1/n + G2/n^2,     Cov delta = V/n + V1/n^2,     kappa_3(delta) = U/n^2,     (higher: O(1/n^3))

the law of total cumulance and a Taylor expansion of Phi, S about K give, with ``r = n_l/n_{l-1}``, ``P_k`` the k-th
derivative of Phi with respect to the symmetric matrix G (pair indices ``i = (i1 i2)`` summed over all ordered pairs),
``S_1``, ``S_2`` those of S and every term at layer l:

    G1' = r [P1 G1 + P2 V/2]
    V'  = C_W^2 S + r P1 V P1
    U'  = C_W^3 W + r C_W^2 sym3[P1 V S_1] + r^2 [P1 P1 P1 U + sym3(P1 P1 P2 V V)]
    V1' = r C_W^2 (S_1 G1 + S_2 V / 2) + r^2 [P1 V1 P1 + sym2(P1 P2 (U + 2 G1 V))/2 + P2 P2 V V / 2 + sym2(P1 P3 V V)/2]
    G2' = r^2 [P1 G2 + P2 (V1 + G1 G1)/2 + P3 G1 V / 2 + P3 U / 6 + P4 V V / 8]

(full index placement in :func:`metric_step`). For d = 1 these are the one-input recursions of :mod:`pdlt.theory.nnlo`.

**Derivatives.** The derivative of a Gaussian average with respect to its covariance is Price's theorem,
``d<F>_K/dK_ij = <d_i d_j F>_K / 2`` per ordered pair (the heat equation). So every tensor above is built from the
averages ``<prod_u (sigma^p_u)^(n_u)(z_u)>_K`` over the distinct inputs u of a product (at most 4 for d <= 4): for a
smooth sigma the derivatives come from its sympy expression; for a kinked sigma (the ReLU family) the averages over
one and two inputs are closed forms (:func:`pdlt.closed_forms.power_derivative_averages`: a derivative of a power of
sigma is a power times a step or a derivative of delta, integrated out exactly), and over three and four inputs the
derivatives are moved onto the Gaussian, ``<d^n F>_K = <F He_n(z; K)>_K`` with the multivariate Hermite polynomials of
K, whose averages over each orthant are exact moments of a truncated Gaussian (:mod:`pdlt.orthant`). Every average is
then exact up to rounding, which grows as the inputs align (the kinked recursions add large terms that cancel, and
the Hermite weights carry ``K^-1`` to the fourth power): a round-off probe reruns the recursions on averages rounded
otherwise (one and two inputs: perturbed by ``max(1e-15, eps/(1 - rho^2))`` relative; three and four: computed with
the inputs in another order, the difference enlarged) and refuses, naming the layer, where G2, V1 or U would move by
more than :data:`ROUND_OFF_TOLERANCE` of their scale (the larger of ``K, K^2, K^3`` and the statistic's largest
entry at that layer). A layer whose orthant moments would lose more than :data:`pdlt.orthant.ROUNDING_LIMIT` of their
size is refused by name too (far beyond where the probe refuses, unless the inputs are nearly dependent already).

Each entry involves only the inputs of its indices (``G2_ab`` needs the chain of inputs a, b; ``V1_(ab)(cd)`` that
of a..d), so a sub-dataset gives the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..architecture import MLP
from ..errors import TRUNCATION_THRESHOLD, Caveat, DivergentFlowError, IntegrationError, ParameterError, emit
from .nnlo import KERNEL_POWER, SecondOrderStatistics, check_order, check_second_order_range

__all__ = ["NNLOInputs", "nnlo_inputs", "MAX_INPUTS", "ROUND_OFF_TOLERANCE"]

#: most inputs of the several-input 1/n^2 theory (the six-point vertex of 4 inputs is a 4-dimensional average)
MAX_INPUTS = 4

# the tensors of averages: (number of sigma factors, number of z-derivatives)
_E2 = tuple((2, k) for k in (0, 2, 4, 6, 8))
_E4 = tuple((4, k) for k in (0, 2, 4))
_E6 = ((6, 0),)
_TENSORS = _E2 + _E4 + _E6
#: the tensors of averages that :func:`average_keys` and :func:`metric_step` keep per derivative class
_CLASSED = ((2, 6), (2, 8))


@lru_cache(maxsize=32)
def derivative_classes(d: int, k: int):
    """The count vectors of sum k over d inputs ``(c_k, d)`` (sorted) and the class of each derivative index sequence
    ``(d^k,)`` (C order, that of ``itertools.product(range(d), repeat=k)``): the derivative classes of
    :func:`class_sums`, and the heat equation's shifts of :mod:`pdlt.theory.ntk_nnlo`."""
    seq = np.indices((d,) * k).reshape(k, -1)
    classes, which = np.unique(np.stack([(seq == u).sum(0) for u in range(d)], axis=-1), axis=0, return_inverse=True)
    return classes, which.ravel()


@lru_cache(maxsize=32)
def _class_runs(d: int, k: int, k2: int = 0):
    """For :func:`class_sums`: ``(order, starts)``, the index sequences of length k over d inputs (C order; with
    ``k2``, the pairs of a class of k and one of k2 indices instead, joined) sorted by their class, and where each
    class's run starts (every class occurs)."""
    which = derivative_classes(d, k)[1]
    if k2:
        (a, _), (b, _), (c, _) = (derivative_classes(d, n) for n in (k, k2, k + k2))
        pos = {tuple(v): i for i, v in enumerate(c.tolist())}
        which = np.array([pos[tuple(x + y for x, y in zip(u, v))] for u in a.tolist() for v in b.tolist()])
    order = np.argsort(which, kind="stable")
    return order, np.searchsorted(which[order], np.arange(which.max() + 1))


def class_sums(X, d: int, k: int, k2: int = 0):
    """The sums of ``X`` (an array or a :class:`~pdlt.theory.power_series.Series`) over the derivative classes of its
    last k axes (each of size d), ``(..., c_k)``: ``sum_(i_1..i_k in class c) X[..., i_1..i_k]``, the classes the
    count vectors of :func:`derivative_classes`. With ``k2``: X ``(..., c_k, c_k2)`` over the classes of its last two
    axes (a product of two index groups' class sums, ``outer(X.M_k, Y.M_k2)``) to those of the joined group ``(...,
    c_(k+k2))``, the counts adding.

    So ``sum_(i_1..i_k) A[i_1..i_k] X[i_1..i_k] = sum_c A_c class_sums(X)_c`` for A symmetric in its indices with value
    ``A_c`` on class c: the contractions of P3, P4 in :func:`metric_step` run over c_k classes instead of d^k
    sequences (45 instead of 6561 for d = 3, k = 8). Linear, so it acts on a series' coefficients one by one."""
    from .power_series import Series

    c = X.coefficients if isinstance(X, Series) else np.asarray(X)
    order, starts = _class_runs(d, k, k2)
    flat = c.reshape(c.shape[:c.ndim - (2 if k2 else k)] + (-1,))
    out = np.add.reduceat(flat[..., order], starts, axis=-1)
    return Series(out) if isinstance(X, Series) else out


@lru_cache(maxsize=8)
def average_keys(d: int):
    """The averages behind every dense tensor for d inputs.

    Returns ``(keys, maps)``: ``keys`` ``(nk, 2, d)`` int (the powers ``p_u`` of sigma and the derivative counts
    ``n_u`` per input) and, per ``(m, k)`` in :data:`_TENSORS`, an index array of shape ``(d,)*(m + k)`` into the keys,
    ``nk`` where the entry vanishes (a derivative on an input that is not a factor); for the sixth and eighth
    derivatives (:data:`_CLASSED`) of shape ``(d, d, c_k)`` over the derivative classes of
    :func:`class_sums` instead (an average depends on its derivative indices only through their counts, and
    the dense eighth derivatives of four inputs are a million entries). Kept per d, read-only."""
    tables = {}
    for m, k in _TENSORS:
        idx = np.indices((d,) * (m + k), dtype=np.int8).reshape(m + k, -1)
        p = np.stack([(idx[:m] == u).sum(0) for u in range(d)], axis=-1)
        n = np.stack([(idx[m:] == u).sum(0) for u in range(d)], axis=-1)
        ok = np.all((n == 0) | (p > 0), axis=-1)
        code = (p * 10 ** np.arange(d)).sum(-1) + (n * 10 ** np.arange(d, 2 * d)).sum(-1)
        tables[(m, k)] = (code, ok, p, n)
    # the distinct codes, sorted; a code fixes its powers and counts, so any occurrence gives them
    every = np.concatenate([code[ok] for code, ok, _, _ in tables.values()])
    pn = np.concatenate([np.stack([p[ok], n[ok]], axis=1) for code, ok, p, n in tables.values()])
    order, first = np.unique(every, return_index=True)
    keys = pn[first]
    out = {}
    for mk, (code, ok, _, _) in tables.items():
        arr = np.full(code.shape, order.size, dtype=np.int64)
        arr[ok] = np.searchsorted(order, code[ok])
        out[mk] = arr.reshape((d,) * sum(mk))
        if mk in _CLASSED:                      # one derivative sequence of each class stands for the class
            rep = np.unique(derivative_classes(d, mk[1])[1], return_index=True)[1]
            out[mk] = np.ascontiguousarray(out[mk].reshape(d, d, -1)[:, :, rep])
        out[mk].setflags(write=False)
    keys.setflags(write=False)
    return keys, out


def power_derivative_forms(expr, pairs):
    """Numpy callable ``z -> (..., len(pairs))``: ``d^n (sigma^p) / dz^n`` for each ``(p, n)`` in ``pairs``, from
    sigma's own derivatives by Leibniz' rule, ``(s^p)^(n) = sum_k C(n, k) s^(k) (s^(p-1))^(n-k)``."""
    from math import comb

    from ..activations import derivative_forms

    nmax = max(n for _, n in pairs)
    jet = derivative_forms(expr, nmax)

    def forms(z):
        D = jet(z)
        memo = {(1, n): D[n] for n in range(nmax + 1)}

        def power(p, n):
            if (p, n) not in memo:
                memo[(p, n)] = sum(comb(n, k) * D[k] * power(p - 1, n - k) for k in range(n + 1))
            return memo[(p, n)]

        return np.stack([power(p, n) for p, n in pairs], axis=-1)

    return forms


#: z-resolution of the trapezoidal rule for averages over one or two inputs, per number of derivatives: the k-th
#: derivative of tanh^p has poles of order p + k at distance pi/2, which expect's default spacing (0.25) resolves only
#: to 3e-5 for the eighth derivative of tanh^2; 0.12 gives 2e-12 and 0.1 keeps a margin (measured against mpmath for
#: tanh and GELU at K = 0.2..4). Averages over three or four inputs (at most four derivatives) keep expect's default
#: spacing (the 4-dimensional grid is the cost): for tanh their fourth-derivative keys are 1e-6 (three inputs) and
#: 2e-4 (four) off relative to the key, but those keys enter V1 and U only through small terms, whose end error was
#: measured at ~1e-8 of V1 and U (a review's check against a 0.25 spacing).
_RESOLUTION = {0: 0.12, 1: 0.12, 2: 0.12, 3: 0.12, 4: 0.12, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.1}


def _groups(keys, by_order=False):
    """Keys grouped by their support (the inputs with a sigma factor) and, with ``by_order``, the resolution their
    derivatives need: ``{(support, resolution): (key indices, (p, n) per input of the support)}``."""
    groups: dict = {}
    for i, (p, n) in enumerate(keys):
        sup = tuple(int(u) for u in np.flatnonzero(p))
        res = _RESOLUTION[int(n.sum())] if by_order and len(sup) <= 2 else None
        groups.setdefault((sup, res), []).append(i)
    return {g: (np.array(ix), keys[ix][:, :, list(g[0])]) for g, ix in groups.items()}


#: z-spacing of the product rule over three and four inputs (pdlt.gaussian.expect's defaults there)
_RESOLUTION_MANY = {3: 0.33, 4: 0.5}


def _radius(act) -> float:
    """Half-width in ``w`` of the product rule: the tail beyond R costs ~ phi(R) R^(k-1) for an integrand growing like
    ``|w|^k``, up to ``k = 6`` (a product of six sigma) for activations that grow linearly: R = 9 there (1e-13
    relative); a bounded sigma stops at R = 7 (the four-dimensional ball then misses 6e-10 of the mass), 2.6x fewer
    points for four inputs."""
    with np.errstate(all="ignore"):
        big = np.abs(act(np.array([-1e4, 1e4])))
    return 7.0 if np.all(big < 1e2) else 9.0


def _averages_smooth(act, K, keys):
    """``<prod_u (sigma^p_u)^(n_u)(z_u)>_K`` for every key and every kernel ``K`` ``(B, d, d)``: ``(B, nk)``; the
    derivatives of sigma's powers from its expression, every kernel of a support in one call (one or two inputs:
    :func:`pdlt.gaussian.expect`; three or four: :func:`pdlt.gaussian.expect_products`, axis by axis)."""
    from ..activations import Z
    from ..gaussian import expect, expect_products

    # a polynomial sigma (the deep linear network): its derivatives beyond its degree vanish, and the trapezoid is
    # exact for polynomials at any spacing up to 0.5 in w, whatever the kernel's size
    degree = _polynomial_degree(act.expr, Z)
    out = np.zeros((K.shape[0], len(keys)))
    for (sup, res), (ix, pn) in _groups(keys, by_order=True).items():
        if degree is not None:
            live = np.all(pn[:, 1, :] <= degree * pn[:, 0, :], axis=1)
            ix, pn = ix[live], pn[live]
            if not ix.size:
                continue
        pairs = sorted({(int(p), int(n)) for row in pn for p, n in zip(row[0], row[1])})
        col = {pn_: j for j, pn_ in enumerate(pairs)}
        forms = power_derivative_forms(act.expr, tuple(pairs))
        # per key and input of the support: which form
        sel = np.array([[col[(int(p), int(n))] for p, n in zip(row[0], row[1])] for row in pn])
        Ks = K[:, sup][:, :, sup]
        if len(sup) >= 3:
            out[:, ix] = expect_products(forms, Ks, sel, resolution=_RESOLUTION_MANY[len(sup)] if degree is None
                                         else np.inf, radius=_radius(act))
            continue

        def f(z, forms=forms, sel=sel):
            t = forms(z)                                             # (..., |sup|, nforms)
            prod = t[..., 0, sel[:, 0]]
            for u in range(1, sel.shape[1]):
                prod = prod * t[..., u, sel[:, u]]
            return prod

        # (polynomials: 37 nodes per whitened axis, spacing 0.5, exact whatever the kernel's size)
        out[:, ix] = expect(f, Ks, resolution=res) if degree is None else expect(f, Ks, n=37)
    return out


def _polynomial_degree(expr, z):
    """The degree of ``expr`` as a polynomial in ``z``, None if it is not one."""
    return int(expr.as_poly(z).degree()) if expr.is_polynomial(z) else None


def _averages_kinked(act, K, keys):
    """As :func:`_averages_smooth` for a scale-invariant sigma, exactly (over one and two inputs closed forms,
    :func:`pdlt.closed_forms.power_derivative_averages`; over three and four orthant moments, :mod:`pdlt.orthant`).
    Returns ``(averages, probe)``, both ``(B, nk)``: ``probe`` the same averages rounded otherwise, for the probe
    (:func:`_check_round_off`): over one and two inputs moved by ``+-max(_PROBE, eps / (1 - rho^2))`` relative
    (fixed signs), over three and four computed with the inputs in another order (a cyclic shift: fewer keys map to
    themselves than under a reversal), the difference enlarged :data:`_REORDERED` times."""
    from ..closed_forms import power_derivative_averages

    eps = np.finfo(np.float64).eps
    sign = np.where(np.random.default_rng(0).random(len(keys)) < 0.5, -1.0, 1.0)
    out, probe = np.empty((K.shape[0], len(keys))), np.empty((K.shape[0], len(keys)))
    for (sup, _), (ix, pn) in _groups(keys).items():
        Ks = K[:, sup][:, :, sup]
        with np.errstate(all="ignore"):
            if len(sup) >= 3:
                # (nearly) dependent inputs: NaN, which the caller refuses by name (at layer 1 it drops the
                # derivative averages, which multiply zeros there)
                sd = np.sqrt(np.diagonal(Ks, axis1=-2, axis2=-1))
                live = np.linalg.eigvalsh(Ks / (sd[:, :, None] * sd[:, None, :]))[:, 0] > _SINGULAR
                cyc = list(range(1, len(sup))) + [0]
                a = _orthant_rows(act, pn, Ks, live)
                r = _orthant_rows(act, pn[:, :, cyc], Ks[:, cyc][:, :, cyc], live)
                out[:, ix], probe[:, ix] = a, a + _REORDERED * (r - a)
                continue
            out[:, ix] = power_derivative_averages(*act.slopes, pn[:, 0, :], pn[:, 1, :], Ks)
            size = np.full(K.shape[0], _PROBE)
            if len(sup) == 2:
                # the closed forms divide by the Schur complement K_bb (1 - rho^2), which has lost digits to rounding
                rho2 = Ks[:, 0, 1] ** 2 / (Ks[:, 0, 0] * Ks[:, 1, 1])
                size = np.maximum(size, eps / (1.0 - rho2))
                size[~np.isfinite(size)] = _PROBE      # +-1: only its non-derivative averages are finite (layer 1)
            probe[:, ix] = out[:, ix] * (1.0 + size[:, None] * sign[ix])
    return out, probe


def _orthant_rows(act, pn, Ks, live):
    """The averages over three or four inputs (:func:`pdlt.orthant.scale_invariant_averages`) of the kernels
    ``Ks[live]``, ``(B, len(pn))``: NaN on the other rows and where the rounding bound exceeds
    :data:`pdlt.orthant.ROUNDING_LIMIT` of a kernel's largest average (nearly dependent inputs, far beyond where the
    round-off probe refuses; the caller names the layer)."""
    from ..orthant import ROUNDING_LIMIT, relative_rounding, scale_invariant_averages

    out = np.full((Ks.shape[0], len(pn)), np.nan)
    idx = np.flatnonzero(live)
    if idx.size:
        vals, mags = scale_invariant_averages(*act.slopes, pn[:, 0, :], pn[:, 1, :], Ks[idx], return_magnitude=True)
        # judged apart: the averages without derivatives have no Hermite weights to cancel, and at layer 1 they are
        # the only ones used
        for group in (pn[:, 1, :].sum(axis=1) == 0, pn[:, 1, :].sum(axis=1) > 0):
            ok = relative_rounding(vals[:, group], mags[:, group]) <= ROUNDING_LIMIT
            out[np.ix_(idx[ok], np.flatnonzero(group))] = vals[np.ix_(ok, group)]
    return out


def _tensors(act, K):
    """The averages of every layer ``(B, nk + 1)`` (the last column 0), the index maps of :func:`average_keys`
    and, for a kinked sigma, the same averages rounded otherwise (:func:`_averages_kinked`; None for a smooth one):
    layer b's dense tensor ``(m, k)`` (``<d_{c_1} .. d_{c_k} (s_{a_1} .. s_{a_m})>_K``, indices ``a_1..a_m,
    c_1..c_k``, shape ``(d,)*(m + k)``) is ``vals[b][maps[(m, k)]]`` (formed per layer; P3, P4 per derivative class
    instead, :func:`average_keys`)."""
    d = K.shape[-1]
    keys, maps = average_keys(d)
    pad = np.zeros((K.shape[0], 1))
    if not act.kinks:
        return np.concatenate([_averages_smooth(act, K, keys), pad], axis=1), maps, None
    vals, probe = _averages_kinked(act, K, keys)
    return np.concatenate([vals, pad], axis=1), maps, np.concatenate([probe, pad], axis=1)


def _sym3(T, special: int):
    """Sum over the three placements of the special pair slot of ``T[ab, cd, ef]`` (symmetric in its other two)."""
    if special == 0:
        return T + T.transpose(2, 3, 0, 1, 4, 5) + T.transpose(4, 5, 2, 3, 0, 1)
    return T + T.transpose(0, 1, 4, 5, 2, 3) + T.transpose(4, 5, 2, 3, 0, 1)


def metric_step(t, C, r, G1, V, G2, V1, U):
    """One layer of the recursions of the module docstring from the averages ``t`` of layer l (one kernel's slice
    of :func:`_tensors`): returns ``(G1, V, G2, V1, U)`` of layer l + 1.

    ``C`` is ``C_W``, or a ``(d, d)`` array ``C^ab`` for chains whose inputs see differently scaled weights,
    ``G'_ab = C_b^ab + (C^ab/n_l) sum_j sigma(z_ja) sigma(z_jb)`` (the copies of :mod:`pdlt.theory.ntk_nnlo`): the
    factor ``C^ab`` then rides on each pair slot of the conditional cumulants ``Phi``, ``S``, ``W``. Every operation
    is a sum of products, so truncated power series (:class:`pdlt.theory.power_series.Series`) pass through for any
    argument, giving the Taylor coefficients of the outputs.

    Every term's pair slots ``ab``, ``cd``, ``ef`` are its output's, each carrying one ``C^ab`` (``P_k = C A_k``,
    ``A_k = <d^2k (s_a s_b)>/2^k``; ``S``, ``W`` carry theirs): so the contractions run on the plain averages and
    the outputs take ``C``, ``C C``, ``C C C`` last (on d^2..d^6 numbers instead of the averages' up to d^8). ``S_1``,
    ``S_2`` are distributed over their contractions and never formed (``S_2`` alone is d^8 numbers), their products
    of two-point averages reusing the contractions of ``G1'`` and ``V'``. ``t[(2, 6)]``, ``t[(2, 8)]`` hold P3, P4 per
    derivative class ``(d, d, c_k)`` (:func:`average_keys`), so their contractions take the class sums of the state
    (:func:`class_sums`)."""
    from .power_series import Series, compiled, einsum, outer

    def es(spec, *ops):
        if any(isinstance(o, Series) for o in ops):
            return einsum(spec, *ops)
        return compiled(spec, tuple(o.shape for o in ops))(*ops)

    E20, E40, E6 = t[(2, 0)], t[(4, 0)], t[(6, 0)]
    A1, A2, A3, A4 = t[(2, 2)] / 2, t[(2, 4)] / 4, t[(2, 6)], t[(2, 8)]       # (A3, A4 without their 1/8, 1/16)
    d = G1.shape[-1]
    Vc, Vh, G1c, Uc = class_sums(V, d, 4), class_sums(V, d, 2), class_sums(G1, d, 2), class_sums(U, d, 6)
    CC = C * C if np.ndim(C) == 0 else outer(C, C)
    CCC = CC * C if np.ndim(C) == 0 else outer(CC, C)
    AG, AV = es("abij,ij->ab", A1, G1), es("abijkl,ijkl->ab", A2, V)
    PV = es("abij,ijkl->abkl", A1, V)
    M = es("abkl,cdkl->abcd", PV, A1)                                           # A1 V A1
    Mt = es("abkl,ijkl,cdij->abcd", A1, V, A1)                                  # A1 V^T A1
    swap = (2, 3, 0, 1)
    # S_1 G1 and S_2 V/2 with S_1 = <d^2 (s s s s)>/2 - A1 E20 - E20 A1, S_2 = <d^4 (s s s s)>/4 - A2 E20 - E20 A2
    # - A1 A1 (both placements of the derivative pairs)
    S1G1 = es("abcdij,ij->abcd", t[(4, 2)], G1) / 2 - outer(AG, E20) - outer(E20, AG)
    S2V = es("abcdijkl,ijkl->abcd", t[(4, 4)], V) / 4 - outer(AV, E20) - outer(E20, AV) - M - Mt
    # PV S_1 over the derivative pair
    PS1 = es("abkl,cdefkl->abcdef", PV, t[(4, 2)]) / 2 - outer(M, E20) - outer(M, E20).transpose(0, 1, 4, 5, 2, 3)
    W0 = (E6 - outer(E40, E20) - outer(E40, E20).transpose(0, 1, 4, 5, 2, 3)
          - outer(E20, E40) + 2 * outer(outer(E20, E20), E20))
    G1n = C * (r * (AG + AV / 2))
    Vn = CC * (E40 - outer(E20, E20) + r * M)
    Un = CCC * (W0 + r * _sym3(PS1, 0)
                + r * r * (es("abij,cdkl,efmn,ijklmn->abcdef", A1, A1, A1, U)
                           + _sym3(es("abij,cdkl,efmnop,ijmn,klop->abcdef", A1, A1, A2, V, V), 2)))
    Tm = es("abij,cdklmn,ijklmn->abcd", A1, A2, U) + 2 * es("abij,cdklmn,kl,ijmn->abcd", A1, A2, G1, V)
    Tn = es("abij,cdn,ijn->abcd", A1, A3, class_sums(outer(Vh, Vc), d, 2, 4)) / 8       # A1 A3 V V
    V1n = CC * (r * (S1G1 + S2V / 2)
                + r * r * (es("abij,ijkl,cdkl->abcd", A1, V1, A1) + (Tm + Tm.transpose(swap)) / 2
                           + es("abijkl,cdmnop,ijmn,klop->abcd", A2, A2, V, V) / 2 + (Tn + Tn.transpose(swap)) / 2))
    G2n = C * (r * r * (es("abij,ij->ab", A1, G2) + es("abijkl,ijkl->ab", A2, V1 + outer(G1, G1)) / 2
                        + es("abn,n->ab", A3, class_sums(outer(G1c, Vc), d, 2, 4) / 16 + Uc / 48)
                        + es("abn,n->ab", A4, class_sums(outer(Vc, Vc), d, 4, 4)) / 128))
    return G1n, Vn, G2n, V1n, Un


@dataclass(frozen=True)
class NNLOInputs(SecondOrderStatistics):
    """The statistics of d inputs to order 1/n^2 (module docstring), over layers: ``K``, ``G1``, ``G2`` ``(L, d, d)``;
    ``V``, ``V1`` ``(L, d, d, d, d)``; ``U`` ``(L,) + (d,)*6``. Layer l's observables use ``n = n_{l-1}``:
    ``E[z_a z_b] = K + G1/n + G2/n^2``, ``Cov(G_ab, G_cd) = V/n + V1/n^2``, ``kappa_3(G_ab, G_cd, G_ef) = U/n^2``.
    ``caveats``: a ``"truncation"`` caveat where the 1/n^2 terms are not small against the 1/n ones."""

    def second_moment(self, l: int, order: int = 2) -> np.ndarray:
        """``E[z_a z_b]`` of layer l ``(d, d)``: ``K + G1/n`` (order 1) ``+ G2/n^2`` (order 2)."""
        n, i = self._n(l), l - 1
        return self.K[i] + self.G1[i] / n + (self.G2[i] / n**2 if check_order(order) == 2 else 0.0)

    def metric_covariance(self, l: int, order: int = 2) -> np.ndarray:
        """``Cov(G_ab, G_cd) = E[z_ia z_ib z_jc z_jd] - E[z_ia z_ib] E[z_jc z_jd]`` (``i != j``) ``(d, d, d, d)``:
        ``V/n`` ``+ V1/n^2``."""
        n, i = self._n(l), l - 1
        return self.V[i] / n + (self.V1[i] / n**2 if check_order(order) == 2 else 0.0)

    def kurtosis(self, l: int, order: int = 2) -> np.ndarray:
        """Per input, one neuron's excess kurtosis ``3 Var G_aa/(E G_aa)^2`` ``(d,)``, expanded as for one input
        (:meth:`pdlt.theory.nnlo.NNLO.kurtosis`): the one-input value of each input."""
        n, i = self._n(l), l - 1
        ar = np.arange(self.K.shape[-1])
        K, G1, V, V1 = (self.K[i][ar, ar], self.G1[i][ar, ar], self.V[i][ar, ar, ar, ar], self.V1[i][ar, ar, ar, ar])
        if not np.all(K > 0):
            raise ParameterError(f"the kurtosis is not defined at layer l = {l} for an input whose metric is 0 (a zero "
                                 "input with C_b = 0)", "x")
        out = 3.0 * V / (n * K * K)
        if check_order(order) == 2:
            out = out + 3.0 * (V1 - 2.0 * V * G1 / K) / (n * n * K * K)
        return out

    def metric_cumulant3(self, l: int) -> np.ndarray:
        """``kappa_3(G_ab, G_cd, G_ef) = U/n^2`` ``(d,)*6``."""
        n = self._n(l)          # (checks l before it indexes)
        return self.U[l - 1] / n**2


def nnlo_inputs(net: MLP, x) -> NNLOInputs:
    """The 1/n^2 statistics of every layer of ``net`` for ``d <= 4`` inputs ``x`` ``(d, n_0)`` (module docstring),
    per-layer ``C_W, C_b``, any hidden widths, smooth or scale-invariant activations.

    Deep linear networks with shortcuts take the exact series coefficients of :mod:`pdlt.theory.linear_residual`.
    Raises :class:`ParameterError` for more than :data:`MAX_INPUTS` inputs or (nearly) coincident inputs (``x``),
    other residual networks (``gamma``) and kinked activations that are not scale-invariant (``activation``);
    :class:`DivergentFlowError` naming the layer where a statistic leaves float64's range.

    >>> import pdlt, numpy as np
    >>> th = nnlo_inputs(pdlt.MLP("linear", (2, 10, 10, 10, 10)), np.eye(2))     # K = I/2 at every layer
    >>> np.round(th.V1[:, 0, 0, 1, 1], 12).tolist()      # deep linear: (l - 1)(l - 2) K_aa K_bb
    [0.0, 0.0, 0.5, 1.5]
    """
    return several_input_statistics(net, x, stacklevel=4)


def several_input_statistics(net: MLP, x, *, stacklevel: int = 3) -> NNLOInputs:
    """:func:`nnlo_inputs`, its caveats issued ``stacklevel`` frames up (so that they name the user's line whether the
    call came through :func:`pdlt.nnlo` or not)."""
    from .kernel import kernel_flow

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    act = net.activation
    if net.residual:
        from .linear_residual import check_shortcuts

        check_shortcuts(net)
    if act.kinks and not act.scale_invariant:
        raise ParameterError(f"the 1/n^2 recursions need derivatives of Gaussian averages up to the eighth: smooth "
                             f"activations or scale-invariant ones (ReLU family); {act.name} is kinked and not "
                             "scale-invariant", "activation")
    xs = net.inputs(x)
    d = xs.shape[0]
    if d > MAX_INPUTS:
        raise ParameterError(f"the several-input 1/n^2 theory takes at most {MAX_INPUTS} inputs (its six-point vertex "
                             f"is a {MAX_INPUTS}-dimensional Gaussian average per entry); got d = {d}. Each entry "
                             "involves only the inputs of its indices, so call it on subsets of the inputs", "x")
    if net.residual:
        from .linear_residual import linear_residual_orders

        out = linear_residual_orders(net, xs)
        check_second_order_range(out["K"])             # (the chain's own kernel: no second flow)
        caveats = _caveats(net, out)
        emit(caveats, stacklevel=stacklevel)
        return NNLOInputs(net=net, x=xs, caveats=caveats, **out)
    K = kernel_flow(net, xs).K
    check_second_order_range(K)
    # a bias-free scale-invariant network is homogeneous: the statistics of inputs s x are s^(2p) times those of x.
    # Its averages run at the first layer's variance brought to ~1 by a power of 2 (exact): at kernels of 1e-80 the
    # kinked averages over several inputs had lost their digits (ReLU's off-diagonal G2 came out 41 times too large)
    unit = _homogeneous_unit(net, K)
    K, K_true = K / unit, K
    L = K.shape[0]
    out = {"G1": np.zeros((L, d, d)), "V": np.zeros((L,) + (d,) * 4), "G2": np.zeros((L, d, d)),
           "V1": np.zeros((L,) + (d,) * 4), "U": np.zeros((L,) + (d,) * 6)}
    if L > 1:
        if act.kinks:
            _check_variances(K[:-1])
        try:
            vals, maps, probe = _tensors(act, K[:-1])
        except (ParameterError, IntegrationError):
            diag = np.diagonal(K_true[:-1], axis1=-2, axis2=-1)
            raise ParameterError(f"the Gaussian averages of the several-input 1/n^2 recursions cannot be computed for "
                                 f"these kernels (variances {float(diag.min()):.3g} to {float(diag.max()):.3g}): the "
                                 "quadrature's grid (a smooth activation, or a kinked one's averages over two inputs) "
                                 "would exceed its limit or miss its accuracy check there. Bring the "
                                 "inputs' scale (x) toward a kernel of order 1, or move C_W, C_b toward criticality",
                                 "x") from None
        if act.kinks:
            # layer 1's statistics G1 .. U vanish, so its derivative averages only multiply zeros: a pair x, -x
            # (correlation -1, infinite derivative averages) is still two inputs from layer 2 on
            derivative = np.append(average_keys(d)[0][:, 1].sum(axis=1) > 0, False)
            bad0 = (~np.isfinite(vals[0]) | ~np.isfinite(probe[0])) & derivative
            vals[0][bad0], probe[0][bad0] = 0.0, 0.0
            bad = np.flatnonzero(~np.all(np.isfinite(vals) & np.isfinite(probe), axis=1))
            if bad.size and bad[0] == 0 and (bad.size == 1 or bad[1] != 1):
                raise ParameterError("the inputs are linearly dependent at layer l = 1 (their kernel C_b + C_W x x^T / "
                                     "n_0 is singular to rounding): the Gaussian averages of three or four inputs "
                                     "are computed for nonsingular kernels only. Use C_b > 0 (large enough to lift "
                                     "the smallest eigenvalue of the inputs' correlation matrix above "
                                     f"{_SINGULAR:g}), or leave out an input that is a combination of the others",
                                     "x")
            first_ok = not bad.size or bad[0] > 0
            bad = bad[bad > 0]                      # (layer 1 singular, and the next too: collinear inputs)
            if bad.size:
                b = int(bad[0])
                if first_ok:                  # the layers below: the round-off probe may refuse earlier, by name
                    _recursion(net, vals[:b], maps, out)
                    _check_round_off(net, probe[:b], maps, out, K[:b + 1])
                Kb = K[b]
                ev = np.linalg.eigvalsh(Kb / np.sqrt(np.outer(np.diagonal(Kb), np.diagonal(Kb)))).min()
                raise ParameterError(f"the inputs are (nearly) collinear or linearly dependent at layer l = {b + 1} "
                                     f"(smallest eigenvalue of their correlation matrix {ev:.3g}): the averages of a "
                                     "kinked activation's derivatives are infinite there, or lost to rounding; the "
                                     f"network can be followed to L = {b + 1}. Take inputs further apart or fewer "
                                     "layers (an input and its copy are one input: pdlt.nnlo of either is exact)", "x")
        _recursion(net, vals, maps, out)
        if act.kinks:
            _check_round_off(net, probe, maps, out, K)
    if unit != 1.0:
        for k in out:
            with np.errstate(over="ignore", invalid="ignore"):
                out[k] = out[k] * np.float64(unit) ** KERNEL_POWER[k]
            if not np.all(np.isfinite(out[k]) & (np.abs(out[k]) <= 1e300)):
                raise ParameterError(f"the 1/n^2 statistic {k} of these inputs leaves float64's range (a bias-free "
                                     "scale-invariant network's statistics grow as |x|^(2p)): scale the inputs x "
                                     "toward a kernel of order 1", "x")
        K = K_true
    caveats = _caveats(net, out)
    emit(caveats, stacklevel=stacklevel)
    return NNLOInputs(net=net, x=xs, K=K, caveats=caveats, **out)


_NAMES = ("G1", "V", "G2", "V1", "U")


def _recursion(net: MLP, vals, maps, out: dict) -> None:
    """Fill ``out`` (layer 0 zero) layer by layer with :func:`metric_step` from the averages ``vals``
    ``(L - 1, nk + 1)``."""
    for l in range(1, vals.shape[0] + 1):                          # layer l -> l + 1
        C, r = net.step(l + 1).C_W, net.width_ratio(l)
        tl = {mk: np.take(vals[l - 1], idx) for mk, idx in maps.items()}      # (take: 5x fancy indexing)
        prev = [out[k][l - 1] for k in _NAMES]
        with np.errstate(over="ignore", invalid="ignore"):
            new = metric_step(tl, C, r, *prev)
        for k, v in zip(_NAMES, new):
            if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > 1e300:
                raise DivergentFlowError(f"the 1/n^2 statistic {k} leaves float64's range at layer l = {l + 1}: "
                                         "move C_W, C_b toward criticality (pdlt.criticality) or reduce the depth",
                                         layer=l + 1)
            out[k][l] = v


#: relative size of the perturbation of an average over one or two inputs in the round-off probe (a few ulps: the
#: closed forms and the polar rule are exact to rounding), raised to eps / (1 - rho^2) for two inputs, where the Schur
#: complement ``K_bb (1 - rho^2)`` of their kernel, which the delta averages divide by, has lost digits to rounding
_PROBE = 1e-15

#: how many times the difference between the averages over three or four inputs computed in two input orders (two
#: rounding paths of :mod:`pdlt.orthant`) the round-off probe moves them. Measured along critical ReLU networks to
#: L = 60 with three and four inputs eye(d) + 0.3 (equicorrelated: a key that the shift maps to itself gets no probe)
#: and a mixed set of four: with the difference taken 4 times, the probe's change of V1 and U from layer 5 on was
#: 0.93 to 4 (median 2.2 to 4) times the largest change over all other input orders; 8 keeps the probe above it
_REORDERED = 8.0

#: smallest eigenvalue of the correlation matrix of three or four inputs below which they count as dependent (their
#: averages infinite or lost to rounding; far above it the round-off probe refuses already)
_SINGULAR = 1e-12

#: most round-off of G2, V1, U, relative to their scale (the larger of K, K^2, K^3 and the statistic's largest entry
#: at that layer), that the kinked 1/n^2 theory returns
ROUND_OFF_TOLERANCE = 1e-6


def _check_round_off(net: MLP, probe, maps, out: dict, K) -> None:
    """For a scale-invariant sigma the averages are exact up to rounding, but near collinearity the recursions add
    terms that grow like a power of the inverse smallest eigenvalue of the inputs' correlation matrix and cancel.
    Probe that: rerun the recursions on the averages rounded otherwise (``probe``, :func:`_averages_kinked`) and
    refuse, naming the layer, where G2, V1 or U move by more than :data:`ROUND_OFF_TOLERANCE` of their scale: the
    larger of ``K, K^2, K^3`` (the quantities they correct) and the statistic's largest entry at that layer."""
    other = {k: np.zeros_like(v) for k, v in out.items()}
    _recursion(net, probe, maps, other)
    for l in range(2, K.shape[0] + 1):
        kk = float(np.max(np.abs(np.diagonal(K[l - 1]))))
        for k, power in (("G2", 1), ("V1", 2), ("U", 3)):
            scale = max(kk**power, float(np.max(np.abs(out[k][l - 1]))))
            err = float(np.max(np.abs(other[k][l - 1] - out[k][l - 1]))) / scale
            if not err <= ROUND_OFF_TOLERANCE:
                ev = np.linalg.eigvalsh(K[l - 2] / np.sqrt(np.outer(np.diagonal(K[l - 2]), np.diagonal(K[l - 2]))))
                raise ParameterError(
                    f"the inputs are too close to collinear at layer l = {l - 1} (smallest eigenvalue of their "
                    f"correlation matrix {ev.min():.2g}): the 1/n^2 recursions of a kinked activation add terms that "
                    f"grow like a power of its inverse and cancel, and {k} at layer l = {l} would carry a round-off "
                    f"of ~{err:.1g} of its scale (tolerance {ROUND_OFF_TOLERANCE:g}); the network can be "
                    f"followed to L = {l - 1} with these inputs. Take inputs further apart, fewer layers, or one input "
                    "at a time (pdlt.nnlo, exact for every input alone)", "x")


def _homogeneous_unit(net: MLP, K) -> float:
    """The power of 2 nearest the largest first-layer variance of ``K`` ``(L, d, d)`` for a bias-free network of a
    scale-invariant activation (every statistic is then homogeneous in the inputs' scale), else 1."""
    top = float(np.max(np.diagonal(K[0])))
    if not (net.activation.scale_invariant and not any(net.C_b) and top > 0 and np.isfinite(top)):
        return 1.0
    return 2.0 ** round(np.log2(top))


def _check_variances(K):
    """Refuse an input of zero variance (a kinked sigma's averages need every kernel positive)."""
    for i, Ki in enumerate(K):
        if np.any(np.diagonal(Ki) == 0):
            raise ParameterError(f"an input has zero variance at layer l = {i + 1} (a zero input with C_b = 0): the "
                                 "several-input 1/n^2 theory needs every input's kernel positive", "x")


def _caveats(net: MLP, out: dict) -> tuple:
    """A ``"truncation"`` caveat at the first layer where, for some entry, the 1/n^2 term of ``E[z_a z_b]`` or
    ``Cov(G_ab, G_cd)`` is not small against the largest 1/n term of the same tensor (relative to
    :data:`pdlt.errors.TRUNCATION_THRESHOLD`)."""
    for l in range(3, net.L + 1):
        n, i = float(net.widths[l - 1]), l - 1
        ratios = []
        for a, b in (("G1", "G2"), ("V", "V1")):
            scale = np.max(np.abs(out[a][i]))
            if scale > 0:
                ratios.append(np.max(np.abs(out[b][i])) / (n * scale))
        if ratios and max(ratios) > TRUNCATION_THRESHOLD:
            r = max(ratios)
            return (Caveat("truncation", f"the 1/n^2 term is {r:.3g} of the 1/n term at layer l = {l} (threshold "
                                         f"{TRUNCATION_THRESHOLD}): the 1/n series is not controlled there and the "
                                         "orders beyond 1/n^2 may be as large; widen the network", l, float(r)),)
    return ()

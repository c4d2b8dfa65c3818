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

(full index placement in :func:`_step`). For d = 1 these are the one-input recursions of :mod:`pdlt.theory.nnlo`.

**Derivatives.** The derivative of a Gaussian average with respect to its covariance is Price's theorem,
``d<F>_K/dK_ij = <d_i d_j F>_K / 2`` per ordered pair (the heat equation). So every tensor above is built from the
averages ``<prod_u (sigma^p_u)^(n_u)(z_u)>_K`` over the distinct inputs u of a product (at most 4 for d <= 4): for a
smooth sigma the derivatives come from its sympy expression; for a kinked sigma (the ReLU family) the averages over
one and two inputs are closed forms (:func:`pdlt.closed_forms.power_derivative_averages`: a derivative of a power of
sigma is a power times a step or a derivative of delta, integrated out exactly), and over three and four inputs the
derivatives are moved onto the Gaussian, ``<d^n F>_K = <F He_n(z; K)>_K`` with the multivariate Hermite polynomials of
K (``He_{n+e_c} = y_c He_n - sum_u n_u (K^-1)_cu He_{n-e_u}``, ``y = K^-1 z``), the kinks handled by
:func:`pdlt.gaussian.expect`. Near collinearity the kinked recursions add large terms that cancel: for two inputs a
round-off probe (the recursions rerun on averages perturbed by ``max(1e-15, eps/(1 - rho^2))``) refuses where G2, V1
or U would carry more than :data:`ROUND_OFF_TOLERANCE` of ``K, K^2, K^3``; for three or four inputs the quadrature's
nodes follow the inputs' alignment, a quadrature probe (the recursions rerun with three quarters of the nodes) gives a
``"quadrature"`` caveat where G2, V1 or U move by more than :data:`QUADRATURE_TOLERANCE` of their layer's largest
entry, and they are refused below :data:`MIN_EIGENVALUE`.

Each entry involves only the inputs of its indices (``G2_ab`` needs the chain of inputs a, b; ``V1_(ab)(cd)`` that
of a..d), so a sub-dataset gives the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..architecture import MLP
from ..errors import TRUNCATION_THRESHOLD, Caveat, DivergentFlowError, IntegrationError, ParameterError, emit
from .nnlo import SecondOrderStatistics, check_order

__all__ = ["NNLOInputs", "nnlo_inputs", "MAX_INPUTS", "MIN_EIGENVALUE", "ROUND_OFF_TOLERANCE",
           "QUADRATURE_TOLERANCE"]

#: smallest eigenvalue of the inputs' correlation matrix at which kinked activations are followed for three or four
#: inputs: their averages over three and four inputs are Hermite-weighted quadrature whose nodes grow as the inputs
#: align (:data:`_NESTED_NODES`) and whose effect on G2, V1, U every call checks (:data:`QUADRATURE_TOLERANCE`).
#: The floor is a hard stop below that: the per-key errors grow fast there (four inputs, 16 nodes: 1e-2 at 0.011;
#: even 32 nodes: 3e-5 at 0.0065). One and two inputs use closed forms and a round-off probe instead
#: (:data:`ROUND_OFF_TOLERANCE`)
MIN_EIGENVALUE = 0.01

#: most inputs of the several-input 1/n^2 theory (the six-point vertex of 4 inputs is a 4-dimensional average)
MAX_INPUTS = 4

# the tensors of averages: (number of sigma factors, number of z-derivatives)
_E2 = tuple((2, k) for k in (0, 2, 4, 6, 8))
_E4 = tuple((4, k) for k in (0, 2, 4))
_E6 = ((6, 0),)
_TENSORS = _E2 + _E4 + _E6


@lru_cache(maxsize=8)
def _gather(d: int):
    """The averages behind every dense tensor for d inputs.

    Returns ``(keys, maps)``: ``keys`` ``(nk, 2, d)`` int (the powers ``p_u`` of sigma and the derivative counts
    ``n_u`` per input) and, per ``(m, k)`` in :data:`_TENSORS`, an index array of shape ``(d,)*(m + k)`` into the keys,
    ``nk`` where the entry vanishes (a derivative on an input that is not a factor)."""
    codes, maps = {}, {}
    for m, k in _TENSORS:
        idx = np.indices((d,) * (m + k), dtype=np.int8).reshape(m + k, -1)
        p = np.stack([(idx[:m] == u).sum(0) for u in range(d)], axis=-1)
        n = np.stack([(idx[m:] == u).sum(0) for u in range(d)], axis=-1)
        ok = np.all((n == 0) | (p > 0), axis=-1)
        code = (p * 10 ** np.arange(d)).sum(-1) + (n * 10 ** np.arange(d, 2 * d)).sum(-1)
        maps[(m, k)] = (code, ok)
        for c, pp, nn in zip(code[ok], p[ok], n[ok]):
            codes.setdefault(int(c), (pp, nn))
    order = sorted(codes)
    pos = {c: i for i, c in enumerate(order)}
    keys = np.array([np.stack(codes[c]) for c in order])
    out = {}
    for (m, k), (code, ok) in maps.items():
        arr = np.full(code.shape, len(order), dtype=np.int64)
        arr[ok] = [pos[int(c)] for c in code[ok]]
        out[(m, k)] = arr.reshape((d,) * (m + k))
    return keys, out


@lru_cache(maxsize=32)
def _jet(expr, nmax: int):
    """Numpy callable ``z -> [sigma, sigma', .., sigma^(nmax)]`` (one lambdified form, common subexpressions
    shared), cached per activation."""
    import sympy as sp

    from ..activations import Z, numpy_forms

    return numpy_forms([sp.diff(expr, Z, k) for k in range(nmax + 1)])


def _derivative_forms(expr, pairs):
    """Numpy callable ``z -> (..., len(pairs))``: ``d^n (sigma^p) / dz^n`` for each ``(p, n)`` in ``pairs``, from
    sigma's own derivatives by Leibniz' rule, ``(s^p)^(n) = sum_k C(n, k) s^(k) (s^(p-1))^(n-k)``."""
    from math import comb

    nmax = max(n for _, n in pairs)
    jet = _jet(expr, nmax)

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
        forms = _derivative_forms(act.expr, tuple(pairs))
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


def _hermite(y, Lam, nmax):
    """Multivariate Hermite polynomials of ``N(0, K)``: ``{n: He_n}`` for all count vectors ``n`` with ``|n| <=
    nmax`` (``y = K^-1 z`` ``(..., q)``, ``Lam = K^-1``); ``He_{n+e_c} = y_c He_n - sum_u n_u Lam_cu He_{n-e_u}``."""
    q = y.shape[-1]
    He = {(0,) * q: np.ones(y.shape[:-1])}
    frontier = [(0,) * q]
    for _ in range(nmax):
        nxt = []
        for n in frontier:
            c = max([u for u in range(q) if n[u] > 0], default=0)   # extend in canonical order (c >= last used)
            for cc in range(c, q):
                m = tuple(n[u] + (u == cc) for u in range(q))
                if m in He:
                    continue
                v = y[..., cc] * He[n]
                for u in range(q):
                    if n[u]:
                        v = v - n[u] * Lam[cc, u] * He[tuple(n[w] - (w == u) for w in range(q))]
                He[m] = v
                nxt.append(m)
        frontier = nxt
    return He


#: nodes per segment of expect's nested rule for the kinked averages over 3 and 4 inputs, by the smallest eigenvalue
#: of the support's correlation matrix: ``(floor, nodes)``, the first floor at or below it. The rule has no graded
#: breakpoints in d >= 3 (pdlt.gaussian's module docstring), so its error grows as the inputs align. Measured on every
#: Hermite-weighted ReLU average of four inputs eye(4) + 0.3 along a critical network (positive correlations; a pair
#: at -0.947 beside an independent third input gave 3e-6 with 18 nodes), against 18 (3 inputs) and 22 (4 inputs)
#: nodes, or 40 below 0.05, as a fraction of the largest average of its support: 3 inputs, 8 nodes 1e-5 at 0.32,
#: 12 nodes 2e-6 at 0.15 and 1e-4 at 0.085; 4 inputs, 8 nodes 1e-5 at 0.32 (but 3e-4 at 0.15, 5e-2 at 0.085), 12 nodes
#: 3e-6 at 0.15, 16 nodes 1e-6 at 0.085, 4e-5 at 0.052, 4e-4 at 0.033 and 1e-2 at 0.011. Those last keys enter G2, V1
#: and U with small weights: along the same network to L = 50 (eigenvalue 0.012), 24 and 32 nodes below 0.05 and 0.02
#: moved V1 by at most 1.6e-6 and U by 2.4e-8 of their layer's largest entry, at 7x the cost. Every call checks that
#: for its own network (:func:`_check_quadrature`). Each rung costs (n'/n)^q more.
_NESTED_NODES = {3: ((0.3, 8), (0.1, 12), (0.0, 18)), 4: ((0.3, 8), (0.12, 12), (0.0, 16))}

#: most change of G2, V1 or U, as a fraction of its layer's largest entry, between the node counts of
#: :data:`_NESTED_NODES` and three quarters of them (:func:`_check_quadrature`) before a result carries a caveat. The
#: change overestimates the finer rule's error: along the ReLU network above to L = 50 it reaches 3.8e-4 where the
#: finer rule is 1.6e-6 off (against 24 and 32 nodes)
QUADRATURE_TOLERANCE = 1e-3


def _nested_nodes(q: int, Ks, coarse: bool = False) -> int:
    """Nodes per segment for the averages over ``q`` inputs with covariance ``Ks`` (:data:`_NESTED_NODES`); with
    ``coarse``, three quarters of them (the probe of :func:`_check_quadrature`)."""
    sd = np.sqrt(np.diag(Ks))
    with np.errstate(divide="ignore", invalid="ignore"):
        ev = float(np.nan_to_num(np.linalg.eigvalsh(Ks / np.outer(sd, sd)).min(), nan=0.0))
    n = next((n for floor, n in _NESTED_NODES[q] if ev >= floor), _NESTED_NODES[q][-1][1])
    return max(4, round(0.75 * n)) if coarse else n


def _averages_kinked(act, K, keys, coarse: bool = False):
    """As :func:`_averages_smooth` for a scale-invariant sigma: over one or two inputs in closed form
    (:func:`pdlt.closed_forms.power_derivative_averages`); over three or four ``<prod_u sigma(z_u)^p_u He_n(z; K)>_K``
    (the derivatives moved onto the Gaussian), one kernel at a time (the Hermite weights depend on it), with the nodes
    its conditioning needs (:data:`_NESTED_NODES`), over the positive orthant only for ReLU."""
    from ..closed_forms import power_derivative_averages
    from ..gaussian import expect

    out = np.empty((K.shape[0], len(keys)))
    for (sup, _), (ix, pn) in _groups(keys).items():
        if len(sup) <= 2:
            # one or two inputs: closed forms, exact as the correlation approaches 1 (no Hermite weight K^-1)
            out[:, ix] = power_derivative_averages(*act.slopes, pn[:, 0, :], pn[:, 1, :], K[:, sup][:, :, sup])
            continue
        # ReLU (a_- = 0): every key carries sigma of each input of its support, so it vanishes off the positive orthant
        rule = {"orthant": True} if act.slopes[1] == 0 else {"kinks": act.kinks}
        # the keys share few power patterns and few Hermite indices: each is formed once per node
        powers, pinv = np.unique(pn[:, 0, :], axis=0, return_inverse=True)
        counts, cinv = np.unique(pn[:, 1, :], axis=0, return_inverse=True)
        counts = [tuple(int(c) for c in row) for row in counts]
        nmax = max(sum(c) for c in counts)
        for b in range(K.shape[0]):
            Ks = K[b][np.ix_(sup, sup)]
            Lam = np.linalg.inv(Ks)

            def f(z, Lam=Lam, powers=powers, counts=counts, nmax=nmax):
                s = act(z)
                pw = [[np.ones(z.shape[:-1])] for _ in range(s.shape[-1])]      # pw[u][p] = s_u^p
                for u, col in enumerate(pw):
                    for _ in range(int(powers[:, u].max())):
                        col.append(col[-1] * s[..., u])
                sig = np.empty(z.shape[:-1] + (len(powers),))
                for j, row in enumerate(powers):
                    sig[..., j] = pw[0][row[0]]
                    for u in range(1, len(row)):
                        if row[u]:
                            sig[..., j] *= pw[u][row[u]]
                He = _hermite(z @ Lam.T, Lam, nmax)
                her = np.empty(z.shape[:-1] + (len(counts),))
                for j, c in enumerate(counts):
                    her[..., j] = He[c]
                return sig, her                 # expect's matrix of averages <sig_i her_j>

            pairs = expect(f, Ks, n=_nested_nodes(len(sup), Ks, coarse), **rule)
            out[b, ix] = pairs[pinv.ravel(), cinv.ravel()]
    return out


def _tensors(act, K, coarse: bool = False):
    """The averages of every layer ``(B, nk + 1)`` (the last column 0) and the index maps of :func:`_gather`: layer
    b's dense tensor ``(m, k)`` (``<d_{c_1} .. d_{c_k} (s_{a_1} .. s_{a_m})>_K``, indices ``a_1..a_m, c_1..c_k``,
    shape ``(d,)*(m + k)``) is ``vals[b][maps[(m, k)]]`` (formed per layer: the eighth derivatives alone are d^10
    numbers). ``coarse``: a kinked sigma's averages over three and four inputs with fewer nodes (the probe of
    :func:`_check_quadrature`)."""
    d = K.shape[-1]
    keys, maps = _gather(d)
    vals = _averages_kinked(act, K, keys, coarse) if act.kinks else _averages_smooth(act, K, keys)
    return np.concatenate([vals, np.zeros((K.shape[0], 1))], axis=1), maps


def _sym3(T, special: int):
    """Sum over the three placements of the special pair slot of ``T[ab, cd, ef]`` (symmetric in its other two)."""
    if special == 0:
        return T + T.transpose(2, 3, 0, 1, 4, 5) + T.transpose(4, 5, 2, 3, 0, 1)
    return T + T.transpose(0, 1, 4, 5, 2, 3) + T.transpose(4, 5, 2, 3, 0, 1)


def _step(t, C, r, G1, V, G2, V1, U):
    """One layer of the recursions of the module docstring from the averages ``t`` of layer l (one kernel's slice
    of :func:`_tensors`): returns ``(G1, V, G2, V1, U)`` of layer l + 1."""
    es = lambda spec, *ops: np.einsum(spec, *ops, optimize=True)   # noqa: E731
    E20, E40, E6 = t[(2, 0)], t[(4, 0)], t[(6, 0)]
    A1, A2 = t[(2, 2)] / 2, t[(2, 4)] / 4
    P1, P2, P3, P4 = C * A1, C * A2, C * t[(2, 6)] / 8, C * t[(2, 8)] / 16
    outer = np.multiply.outer
    S0 = E40 - outer(E20, E20)
    S1 = t[(4, 2)] / 2 - (A1[:, :, None, None] * E20[None, None, :, :, None, None]
                          + E20[:, :, None, None, None, None] * A1[None, None])
    S2 = (t[(4, 4)] / 4 - A2[:, :, None, None] * E20[None, None, :, :, None, None, None, None]
          - E20[:, :, None, None, None, None, None, None] * A2[None, None]
          - es("abij,cdkl->abcdijkl", A1, A1) - es("abkl,cdij->abcdijkl", A1, A1))
    W0 = (E6 - outer(E40, E20) - outer(E40, E20).transpose(0, 1, 4, 5, 2, 3)
          - outer(E20, E40) + 2 * outer(outer(E20, E20), E20))
    PV = es("abij,ijkl->abkl", P1, V)
    G1n = r * (es("abij,ij->ab", P1, G1) + es("abijkl,ijkl->ab", P2, V) / 2)
    Vn = C * C * S0 + r * es("abkl,cdkl->abcd", PV, P1)
    Un = (C**3 * W0 + r * C * C * _sym3(es("abkl,cdefkl->abcdef", PV, S1), 0)
          + r * r * (es("abij,cdkl,efmn,ijklmn->abcdef", P1, P1, P1, U)
                     + _sym3(es("abij,cdkl,efmnop,ijmn,klop->abcdef", P1, P1, P2, V, V), 2)))
    Tm = es("abij,cdklmn,ijklmn->abcd", P1, P2, U) + 2 * es("abij,cdklmn,kl,ijmn->abcd", P1, P2, G1, V)
    Tn = es("abij,cdklmnop,ijkl,mnop->abcd", P1, P3, V, V)
    swap = (2, 3, 0, 1)
    V1n = (r * C * C * (es("abcdij,ij->abcd", S1, G1) + es("abcdijkl,ijkl->abcd", S2, V) / 2)
           + r * r * (es("abij,ijkl,cdkl->abcd", P1, V1, P1) + (Tm + Tm.transpose(swap)) / 2
                      + es("abijkl,cdmnop,ijmn,klop->abcd", P2, P2, V, V) / 2 + (Tn + Tn.transpose(swap)) / 2))
    G2n = r * r * (es("abij,ij->ab", P1, G2) + es("abijkl,ijkl->ab", P2, V1 + outer(G1, G1)) / 2
                   + es("abijklmn,ij,klmn->ab", P3, G1, V) / 2 + es("abijklmn,ijklmn->ab", P3, U) / 6
                   + es("abijklmnop,ijkl,mnop->ab", P4, V, V) / 8)
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
        return self.U[l - 1] / self._n(l) ** 2


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
        caveats = _caveats(net, out)
        emit(caveats, stacklevel=stacklevel)
        return NNLOInputs(net=net, x=xs, caveats=caveats, **out)
    K = kernel_flow(net, xs).K
    L = K.shape[0]
    out = {"G1": np.zeros((L, d, d)), "V": np.zeros((L,) + (d,) * 4), "G2": np.zeros((L, d, d)),
           "V1": np.zeros((L,) + (d,) * 4), "U": np.zeros((L,) + (d,) * 6)}
    if L > 1:
        if act.kinks:
            _check_conditioning(K[:-1], floor=d > 2)
        try:
            vals, maps = _tensors(act, K[:-1])
        except (ParameterError, IntegrationError):
            diag = np.diagonal(K[:-1], axis1=-2, axis2=-1)
            raise ParameterError(f"the Gaussian averages of the several-input 1/n^2 recursions cannot be computed for "
                                 f"these kernels (variances {float(diag.min()):.3g} to {float(diag.max()):.3g}): the "
                                 "quadrature's grid would exceed its limit or miss its accuracy check there. Bring the "
                                 "inputs' scale (x) toward a kernel of order 1, or move C_W, C_b toward criticality",
                                 "x") from None
        if act.kinks and d <= 2:
            # layer 1's statistics G1 .. U vanish, so its derivative averages only multiply zeros: a pair x, -x
            # (correlation -1, infinite derivative averages) is still two inputs from layer 2 on
            vals[0][~np.isfinite(vals[0])] = 0.0
            bad = np.flatnonzero(~np.all(np.isfinite(vals), axis=1))
            if bad.size:
                Kb = K[bad[0]]
                rho = Kb[0, 1] / np.sqrt(Kb[0, 0] * Kb[1, 1])
                raise ParameterError(f"the two inputs are collinear at layer l = {bad[0] + 1} (correlation {rho:.17g}, "
                                     "+-1 to rounding): the averages of a kinked activation's derivatives are "
                                     "infinite there. Take inputs further apart or fewer layers (an input and its "
                                     "copy are one input: pdlt.nnlo of either is exact)", "x")
        _recursion(net, vals, maps, out)
        if act.kinks and d <= 2:
            _check_round_off(net, vals, maps, out, K)
    caveats = _caveats(net, out)
    if act.kinks and d >= 3 and L > 1:
        caveats += _check_quadrature(net, act, K, maps, out)
    emit(caveats, stacklevel=stacklevel)
    return NNLOInputs(net=net, x=xs, K=K, caveats=caveats, **out)


_NAMES = ("G1", "V", "G2", "V1", "U")


def _recursion(net: MLP, vals, maps, out: dict) -> None:
    """Fill ``out`` (layer 0 zero) layer by layer with :func:`_step` from the averages ``vals`` ``(L - 1, nk + 1)``."""
    for l in range(1, vals.shape[0] + 1):                          # layer l -> l + 1
        C, r = net.step(l + 1).C_W, net.width_ratio(l)
        tl = {mk: vals[l - 1][idx] for mk, idx in maps.items()}
        prev = [out[k][l - 1] for k in _NAMES]
        with np.errstate(over="ignore", invalid="ignore"):
            new = _step(tl, C, r, *prev)
        for k, v in zip(_NAMES, new):
            if not np.all(np.isfinite(v)) or np.max(np.abs(v)) > 1e300:
                raise DivergentFlowError(f"the 1/n^2 statistic {k} leaves float64's range at layer l = {l + 1}: "
                                         "move C_W, C_b toward criticality (pdlt.criticality) or reduce the depth",
                                         layer=l + 1)
            out[k][l] = v


#: relative size of the perturbation of every closed-form average in the round-off probe (a few ulps: the closed
#: forms and the polar rule are exact to rounding), raised to eps / (1 - rho^2) where the Schur complement
#: ``K_bb (1 - rho^2)`` of the two inputs' kernel, which the delta averages divide by, has lost digits to rounding
_PROBE = 1e-15

#: most round-off of G2, V1, U, relative to K, K^2, K^3 of their layer, that the kinked 1/n^2 theory returns
ROUND_OFF_TOLERANCE = 1e-6


def _check_round_off(net: MLP, vals, maps, out: dict, K) -> None:
    """For two inputs of a scale-invariant sigma the averages are exact closed forms, but near collinearity the
    recursions add terms that grow like a power of ``1 / (1 - rho)`` and cancel. Probe that: rerun with every
    average perturbed by ``+-max(_PROBE, eps / (1 - rho^2))`` relative (fixed signs) and refuse, naming the layer,
    where G2, V1 or U move by more than :data:`ROUND_OFF_TOLERANCE` of ``K, K^2, K^3`` (the scale of the quantities
    they correct)."""
    sign = np.where(np.random.default_rng(0).random(vals.shape) < 0.5, -1.0, 1.0)
    size = np.full(vals.shape[0], _PROBE)
    if K.shape[-1] == 2:
        rho2 = K[:-1, 0, 1] ** 2 / (K[:-1, 0, 0] * K[:-1, 1, 1])
        with np.errstate(divide="ignore"):
            size = np.maximum(size, np.finfo(np.float64).eps / (1.0 - rho2))
        size[0] = _PROBE                   # layer 1's derivative averages multiply zeros (an antipodal pair: inf)
    probe = {k: np.zeros_like(v) for k, v in out.items()}
    _recursion(net, vals * (1.0 + size[:, None] * sign), maps, probe)
    for l in range(2, K.shape[0] + 1):
        scale = float(np.max(np.abs(np.diagonal(K[l - 1]))))
        for k, power in (("G2", 1), ("V1", 2), ("U", 3)):
            err = float(np.max(np.abs(probe[k][l - 1] - out[k][l - 1]))) / scale**power
            if not err <= ROUND_OFF_TOLERANCE:
                ev = np.linalg.eigvalsh(K[l - 2] / np.sqrt(np.outer(np.diagonal(K[l - 2]), np.diagonal(K[l - 2]))))
                raise ParameterError(
                    f"the two inputs are too close to collinear at layer l = {l - 1} (smallest eigenvalue of their "
                    f"correlation matrix {ev.min():.2g}): the 1/n^2 recursions of a kinked activation add terms that "
                    f"grow like a power of 1/(1 - rho) and cancel, and {k} at layer l = {l} would carry a round-off "
                    f"of ~{err:.1g} of its scale (tolerance {ROUND_OFF_TOLERANCE:g}); the network can be "
                    f"followed to L = {l - 1} with these inputs. Take inputs further apart, fewer layers, or one input "
                    "at a time (pdlt.nnlo, exact for every input alone)", "x")


def _check_quadrature(net: MLP, act, K, maps, out: dict) -> tuple:
    """Three or four inputs of a kinked sigma: rerun the recursions on averages with three quarters of the nodes
    (:data:`_NESTED_NODES`) and, where G2, V1 or U move by more than :data:`QUADRATURE_TOLERANCE` of their layer's
    largest entry, return a ``"quadrature"`` caveat naming the first such layer, its ``size`` the largest change over
    all layers (an overestimate of the error of the finer rule, which converges fast in the node count). Costs about
    a third more."""
    coarse = {k: np.zeros_like(v) for k, v in out.items()}
    try:
        _recursion(net, _tensors(act, K[:-1], coarse=True)[0], maps, coarse)
    except (DivergentFlowError, IntegrationError, ParameterError):
        return (Caveat("quadrature", "the several-input 1/n^2 statistics of a kinked activation could not be "
                       "checked with a coarser quadrature (it failed); their accuracy is unknown"),)
    first, worst = None, 0.0
    for l in range(2, K.shape[0] + 1):
        for k in ("G2", "V1", "U"):
            scale = float(max(np.max(np.abs(out[k][l - 1])), np.max(np.abs(coarse[k][l - 1]))))
            if scale > 0:
                ch = float(np.max(np.abs(coarse[k][l - 1] - out[k][l - 1]))) / scale
                worst = max(worst, ch)
                if first is None and not ch <= QUADRATURE_TOLERANCE:
                    first = (l, k, ch)
    if first is None:
        return ()
    l, k, ch = first
    return (Caveat("quadrature", f"{k} at layer l = {l} moves by {ch:.2g} of its largest entry when the Gaussian "
                   f"averages over three and four inputs are computed with three quarters of the nodes (tolerance "
                   f"{QUADRATURE_TOLERANCE:g}; largest change over the layers {worst:.2g}): the inputs are so aligned "
                   "that the quadrature may be off by up to that. Take inputs further apart or fewer layers", l, worst),)


def _check_conditioning(K, floor: bool):
    """Refuse an input of zero variance (a kinked sigma's averages need every kernel positive); with ``floor`` (three
    or four inputs, whose averages move the derivatives onto the Gaussian, ``K^-1`` to the fourth power) also
    kernels whose correlations are too close to +-1 for that to keep digits."""
    for i, Ki in enumerate(K):
        s = np.sqrt(np.diagonal(Ki))
        if np.any(s == 0):
            raise ParameterError(f"an input has zero variance at layer l = {i + 1} (a zero input with C_b = 0): the "
                                 "several-input 1/n^2 theory needs every input's kernel positive", "x")
        if not floor:
            continue
        ev = np.linalg.eigvalsh(Ki / np.outer(s, s))
        if ev.min() < MIN_EIGENVALUE:
            raise ParameterError(f"the inputs are nearly collinear (or linearly dependent) at layer l = {i + 1}: the "
                                 f"smallest eigenvalue of their correlation matrix is {ev.min():.2g} < "
                                 f"{MIN_EIGENVALUE}, below which the quadrature of a kinked activation's Hermite-"
                                 f"weighted averages over three and four inputs loses its accuracy; the network can be "
                                 f"followed to L = {i + 1} with these inputs. Take inputs further apart, fewer layers, "
                                 "or one input at a time (pdlt.nnlo, exact for every input alone)", "x")


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

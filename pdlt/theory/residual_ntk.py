r"""The O(1/n) NTK, dNTK and ddNTK statistics of residual MLPs: a neuron's parameter jet as its state
(derivations/README.md section 21).

**Why the NTK fits the trajectory theory.** Draw k random parameter directions ``dtheta_r`` (r = 1..k), independent,
with Gaussian entries of variance ``lambda_b^(l)`` (biases) and ``lambda_W^(l)/n_{l-1}`` (weights). Expand a neuron's
preactivation multilinearly along them, ``z(theta + sum_r e_r dtheta_r) = sum_S e_S z_S``, S a subset of {1..k}:
``z_{} = z``, ``z_{r}`` the forward tangent along r, ``z_{rs}`` the second derivative along r and s, ... . Since
``E[dtheta_r,mu dtheta_r,nu] = lambda_mu delta_mu,nu``, every NTK object is a moment of the jet, exactly:

    H_ij = E_dtheta[z_i{1} z_j{1}],   dH_i0i1i2 = E[z_i0{12} z_i1{1} z_i2{2}],
    ddI_i0i1i2i3 = E[z_i0{123} z_i1{1} z_i2{2} z_i3{3}],   ddII_i1i2i3i4 = E[z_i1{12} z_i2{13} z_i3{2} z_i4{3}],

and the O(1/n) statistics (tensor conventions of :mod:`pdlt.theory.ntk_statistics`) are entries of the four-point
vertex ``V`` and NLO kernel ``G1`` of the state ``x_i = (z_iS)_S`` (conventions of :func:`pdlt.finite_width`;
``(A)(B)`` pairs one neuron's components, the other neuron's):

    A = V_({1}{1})({2}{2}),  B = V_({1}{2})({1}{2}),  D = V_({1}{1})({}{}),  F = V_({1}{})({1}{}),  Theta1 = G1_{1}{1},
    P = V_({12}{})({1}{2}),  Q = V_({12}{1})({2}{}),  R = V_({123}{1})({2}{3}),
    S = V_({12}{13})({2}{3}),  T = V_({12}{2})({3}{13}),  U = V_({12}{3})({13}{2}).

**Several inputs.** The state holds the jet of every input, components ``(a, S)`` (flattened ``a 2^k + S``), and
each statistic's input indices sit on the slots of its entry (``JET_ENTRIES``: P's last index is the input of the
dNTK's partner ``z_{}``). One bias vector serves every input, so the constants ``C_b``, ``lambda_b`` couple all input
pairs. Parity still holds mask by mask: components of different masks are uncorrelated, and ``K_S`` is a ``d x d``
kernel per mask.

**The step.** ``z' = gamma z + xi (b + W sigma(z))`` with ``(W, b) -> (W, b) + sum_r e_r (dW_r, db_r)`` gives
``x'_S = gamma x_S + xi eps_S``, ``eps_S = (W s)_S + sum_{r in S} (dW_r s)_{S-r} + b [S = {}] + db_r [S = {r}]``, where
``s_S`` is the jet of ``sigma(z)`` (Faa di Bruno over the set partitions pi of S:
``s_S = sum_pi sigma^(|pi|)(z) prod_{B in pi} z_B``). Given the layer, ``eps`` is Gaussian and iid over neurons with

    Cov(eps_S, eps_T) = C_b [S = T = {}] + lambda_b [S = T = {r}] + C_W <s_S s_T>
                        + lambda_W sum_{r in S & T} <s_{S-r} s_{T-r}>

(``<.>`` the average over the layer's neurons; for several inputs the same with ``(a, S), (b, T)`` in place of S, T
and the constants on every input pair): a constant plus a linear map ``lmap`` of ``<s s^T>``, which is all
:func:`pdlt.theory.residual.trajectory_statistics` needs. Flipping ``dtheta_r`` flips every ``z_S`` with r in S, so
components with different S are uncorrelated at every layer; at leading order they are independent Gaussians with
variances ``K_S`` (``K_{} = K``, ``K_{r} = Theta``, ``K_S = 0`` at layer 1 for |S| >= 2), and across layers
``Cov(x^(p), x^(q)) = gamma_{p+1..q} Cov(x^(p))``.

**Averages.** Every average factorizes into a z part and a monomial in the other components. Derivatives along the
other components act exactly on the monomial. Derivatives along ``z`` are Gaussian integrations by parts
(``<d_v^k f> = <f w_k>`` with the Hermite weight of the density) wherever the ReLU family's delta functions must be
kept, and for one variable; for smooth activations on several variables they are taken pointwise (``sigma^(m)`` up to
m = 7), because the multivariate weights lose digits like a power of the condition number when two inputs are close
(kinked activations are refused there: ``SingularKernelError`` beyond condition number c with c^r > 1e10 for a
weight of order r, or c > 1e3 for three or four variables). The factors ``sigma'', sigma'''`` that come from
differentiating the network are pointwise (0 for piecewise-linear activations, as the exact derivatives of such a
network are), the convention of :mod:`pdlt.theory.ntk_statistics`. The z parts are averages of products of one-variable functions ``sigma^(m)(z_v)
z_v^b`` over at most four Gaussian variables (two inputs at two layers, or four inputs at one), by the axis-by-axis
product rules of :func:`pdlt.gaussian.expect_products` (trapezoidal for smooth activations; for kinked ones the nested
Gauss rules split exactly at the kinks); the monomials are Isserlis moments, one mask at a time.

``V`` (all of A..U) comes from the jet along k = 3 directions (8 components), ``G1`` (Theta1) from k = 1 (z and t):
G1 of a pair is driven only by pairs of the same parity, and the one-neuron Hessian terms it needs grow like N^6.
G1 of two inputs involves only those two (every map keeps the inputs of a pair), so several inputs take one
two-input run per pair; V takes the 8 d components at once, one parity sector at a time.

With every gamma = 0 this reproduces the plain-MLP recursions of :mod:`pdlt.theory.ntk_statistics` (the book's, a
separate derivation); the z block reproduces :func:`pdlt.theory.residual.residual_statistics`. Scope: up to
:data:`MAX_INPUTS` inputs, one hidden width. Accuracy, one input: V to ~1e-13 relative; G1 and Theta1 to ~1e-13 of
K and Theta in absolute terms (they vanish like xi^4 as the branch weight goes to 0, where that floor is all that is
left of them). Several inputs with shortcuts: the four-dimensional averages set it. Smooth activations: ~1e-11
relative for kernels up to ~1.5 (identical inputs reproduce the one-input values to 2e-11), ~1e-7 at K ~ 2; larger
kernels would need a grid the 4-D rule cannot afford and are refused (ParameterError naming x); polynomial
activations are exact at any kernel (the product rule at spacing 0.5 in the whitened coordinates). The ReLU family:
~1e-6 near the conditioning limit above, 1e-8 or better for inputs in general position. Cost: the two-layer averages grow like
L^2 and, with several inputs, are four-dimensional: two inputs at L = 10 take ~30 s (tanh) and ~2 min (ReLU) on two
cores, one input at L = 50 a few seconds.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from sympy.utilities.iterables import multiset_partitions

from .. import gaussian
from ..errors import DivergentFlowError, ParameterError, SingularKernelError, VanishingFlowError
from .residual import gamma_products, trajectory_statistics

__all__ = ["residual_ntk_statistics", "JET_ENTRIES", "MAX_INPUTS"]

#: kernels (and NTKs) outside this range make the averages' sigma^4 z^4 moments or their K^-4 Hermite weights leave
#: float64's range
_K_RANGE = (1e-40, 1e40)

#: each statistic as ``(field, k, index, order)``: ``V[index]`` or ``G1[index]`` of the jet state along k directions,
#: the components named by their bit masks (bit r - 1 for direction r; 0 is z itself); with several inputs, slot s of
#: the entry carries the statistic's input index ``order[s]`` (the tensor conventions of
#: :mod:`pdlt.theory.ntk_statistics`: P's last input index sits on the dNTK's partner z)
JET_ENTRIES = {
    "Theta1": ("G1", 1, (1, 1), (0, 1)),
    "A": ("V", 3, (1, 1, 2, 2), (0, 1, 2, 3)), "B": ("V", 3, (1, 2, 1, 2), (0, 1, 2, 3)),
    "D": ("V", 3, (1, 1, 0, 0), (0, 1, 2, 3)), "F": ("V", 3, (1, 0, 1, 0), (0, 1, 2, 3)),
    "P": ("V", 3, (3, 0, 1, 2), (0, 3, 1, 2)), "Q": ("V", 3, (3, 1, 2, 0), (0, 1, 2, 3)),
    "R": ("V", 3, (7, 1, 2, 4), (0, 1, 2, 3)), "S": ("V", 3, (3, 5, 2, 4), (0, 1, 2, 3)),
    "T": ("V", 3, (3, 2, 4, 5), (0, 1, 2, 3)), "U": ("V", 3, (3, 4, 5, 2), (0, 1, 2, 3)),
}


# ------------------------------------------------------------------------------------------- the jet's algebra
# Components of the state: c = a * 2^k + S (input a, bit mask S). A term is (coef, zc, kz, ex): coef times
# prod_a prod_m sigma^(m)(z_a)^zc[a][m], times prod_c z_c^ex[c] over the components with S != 0, with kz[a]
# derivatives along z_a still to be taken by integration by parts (ex[a * 2^k] unused: z_a is the argument of the
# sigma's).

@lru_cache(maxsize=None)
def _s_terms(k):
    """``s_S`` for every mask S as a list of ``(zcode, exps)`` (Faa di Bruno over the set partitions of S)."""
    N = 1 << k
    out = []
    for S in range(N):
        bits = [r for r in range(k) if S >> r & 1]
        terms = []
        for part in (multiset_partitions(bits) if bits else [[]]):
            zc = [0] * (k + 1)
            zc[len(part)] += 1
            ex = [0] * N
            for block in part:
                ex[sum(1 << r for r in block)] += 1
            terms.append((tuple(zc), tuple(ex)))
        out.append(terms)
    return out


@lru_cache(maxsize=None)
def _product(k, d, comps):
    """``prod_{c in comps} s_c`` as a list of terms (``comps`` a tuple)."""
    M = 1 << k
    out = []
    for combo in itertools.product(*(_s_terms(k)[c % M] for c in comps)):
        zc = [[0] * (k + 1) for _ in range(d)]
        ex = [0] * (d * M)
        for c, (z1, e1) in zip(comps, combo):
            a = c // M
            zc[a] = [x + y for x, y in zip(zc[a], z1)]
            for T, e in enumerate(e1):
                ex[a * M + T] += e
        out.append((1, tuple(map(tuple, zc)), (0,) * d, tuple(ex)))
    return tuple(out)


def _derive(k, terms, derivs):
    """Apply ``d/dx_g`` for g in ``derivs``: along z_a it raises kz[a] (0 where the term does not depend on z_a),
    along a component with S != 0 it differentiates the monomial."""
    M = 1 << k
    for g in derivs:
        a, S = divmod(g, M)
        nxt = []
        for coef, zc, kz, ex in terms:
            if S == 0:
                if any(zc[a]):
                    nxt.append((coef, zc, kz[:a] + (kz[a] + 1,) + kz[a + 1:], ex))
            elif ex[g]:
                nxt.append((coef * ex[g], zc, kz, ex[:g] + (ex[g] - 1,) + ex[g + 1:]))
        terms = nxt
    return terms


def _parity(k, *comps):
    out = 0
    for c in comps:
        out ^= c % (1 << k)
    return out


def _keys(term, side):
    """A term's z part ``((var, zcode, kz), ...)`` and monomial ``((mvar, power), ...)``; variables are labelled
    ``(side, input)`` and ``(side, component)`` (side 0: the source layer p, 1: the later layer q)."""
    coef, zc, kz, ex = term
    return (coef,) + _key_parts(zc, kz, ex, side)


@lru_cache(maxsize=None)
def _key_parts(zc, kz, ex, side):
    zkey = tuple(((side, a), z, kz[a]) for a, z in enumerate(zc) if any(z))
    mkey = tuple(((side, c), e) for c, e in enumerate(ex) if e)
    return zkey, mkey


class _Plan:
    """Entries as sums of ``coef * <z part> * <monomial>``, flattened: ``entry, coef, zkey, mkey`` arrays."""

    def __init__(self, entries):
        self.zkeys, self.mkeys = {}, {}
        rows = []
        for e, terms in enumerate(entries):
            for coef, zkey, mkey in terms:
                rows.append((e, coef, self.zkeys.setdefault(zkey, len(self.zkeys)),
                             self.mkeys.setdefault(mkey, len(self.mkeys))))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
        self.entry, self.coef, self.zi, self.mi = arr.T
        self.n = len(entries)

    def evaluate(self, Z, T):
        """``Z`` ``(B, n_zkeys)``, ``T`` ``(B, n_mkeys)`` -> ``(B, n_entries)``."""
        out = np.zeros((Z.shape[0], self.n))
        if self.coef.size:
            np.add.at(out.T, self.entry, (self.coef * Z[:, self.zi] * T[:, self.mi]).T)
        return out


def _one(entry_terms):
    return [_keys(t, 0) for t in entry_terms]


def _cross(p_terms, q_terms):
    """The terms of ``F(p) G(q)`` from the terms of F (layer p) and G (layer q)."""
    ps = [_keys(t, 0) for t in p_terms]
    qs = [_keys(t, 1) for t in q_terms]
    return [(cp * cq, zp + zq, mp + mq) for cp, zp, mp in ps for cq, zq, mq in qs]


@lru_cache(maxsize=None)
def _pair_plans(k, d, sub):
    """One-layer plans on the ordered pairs ``sub`` (flattened ``x * N + y``): ``P2 [xy]``, ``D [xy, gh]``,
    ``P4 [xy, zw]`` (only entries of even total parity are nonzero)."""
    N = d << k
    pairs = [divmod(int(i), N) for i in sub]
    P2 = _Plan([_one(_product(k, d, p)) if _parity(k, *p) == 0 else [] for p in pairs])
    D = _Plan([_one(_derive(k, _product(k, d, p), g)) if _parity(k, *p, *g) == 0 else []
               for p in pairs for g in pairs])
    P4 = _Plan([_one(_product(k, d, tuple(p) + tuple(g))) if _parity(k, *p, *g) == 0 else []
                for p in pairs for g in pairs])
    return P2, D, P4


@lru_cache(maxsize=None)
def _q_plan(k, d):
    """``<d_g d_h d_e d_f (s_x s_y)>`` as ``[x, y, g, h, e, f]`` (one layer)."""
    N = d << k
    return _Plan([_one(_derive(k, _product(k, d, tuple(ix[:2])), ix[2:])) if _parity(k, *ix) == 0 else []
                  for ix in itertools.product(range(N), repeat=6)])


@lru_cache(maxsize=None)
def _cross_c4_plan(k, d, sub):
    """``<s_x s_y (p) s_z s_w (q)>`` as ``[xy, zw]`` over the pairs ``sub``."""
    N = d << k
    pairs = [divmod(int(i), N) for i in sub]
    prods = [_product(k, d, p) for p in pairs]
    return _Plan([_cross(prods[i], prods[j]) if _parity(k, *pairs[i], *pairs[j]) == 0 else []
                  for i in range(len(pairs)) for j in range(len(pairs))])


@lru_cache(maxsize=None)
def _hessian_plan(k, d):
    """``<s_g s_h (p) d_e d_f (s_x s_y) (q)>`` as ``[g, h, e, f, x, y]``."""
    N = d << k
    prods = {p: _product(k, d, p) for p in itertools.product(range(N), repeat=2)}
    return _Plan([_cross(prods[ix[:2]], _derive(k, prods[ix[4:]], ix[2:4])) if _parity(k, *ix) == 0 else []
                  for ix in itertools.product(range(N), repeat=6)])


# ------------------------------------------------------------------------------------------- Gaussian pieces

def _hermite_poly(kz, Pm):
    """The weight ``w`` of ``<d^kz f> = <f w>`` for ``z ~ N(0, C)``, ``Pm = C^-1`` ``(B, q, q)``, as ``{powers:
    coefficients (B,)}``: ``w_{alpha + e_i} = y_i w_alpha - d_i w_alpha``, ``y = Pm z`` (multivariate Hermite)."""
    q = len(kz)
    poly = {(0,) * q: np.ones(Pm.shape[0])}
    for i, n in enumerate(kz):
        for _ in range(n):
            nxt = {}
            for beta, c in poly.items():
                for j in range(q):  # y_i w: z_j with coefficient Pm[i, j]
                    b = beta[:j] + (beta[j] + 1,) + beta[j + 1:]
                    nxt[b] = nxt.get(b, 0.0) + c * Pm[:, i, j]
                if beta[i]:         # - d_i w
                    b = beta[:i] + (beta[i] - 1,) + beta[i + 1:]
                    nxt[b] = nxt.get(b, 0.0) - beta[i] * c
            poly = nxt
    return poly


def _wick(powers, C, memo):
    """``E[prod_i x_i^powers[i]]`` for ``x ~ N(0, C)``, ``C`` ``(B, n, n)`` (Isserlis, pairing the first factor)."""
    if powers in memo:
        return memo[powers]
    if sum(powers) % 2:
        out = np.zeros(C.shape[0])
    elif not any(powers):
        out = np.ones(C.shape[0])
    else:
        i = next(j for j, v in enumerate(powers) if v)
        rest = powers[:i] + (powers[i] - 1,) + powers[i + 1:]
        out = np.zeros(C.shape[0])
        for j, v in enumerate(rest):
            if v:
                out = out + v * C[:, i, j] * _wick(rest[:j] + (v - 1,) + rest[j + 1:], C, memo)
    memo[powers] = out
    return out


# z spacing (in z units) of the smooth trapezoidal product rule per number of variables: 1-D moments carry Hermite
# weights up to z^4 / K^4 (Q), so the 1-D rule is fine enough to reproduce the plain-MLP recursions to ~1e-14; the
# 4-D cross-layer moments of several inputs are the costly ones, ~1e-9 relative at 0.35 for tanh.
_RES = {1: 0.1, 2: 0.15, 3: 0.25, 4: 0.35}
#: the same where sigma'' or higher enter (higher-order poles: at 0.35 the 4-D averages of tanh were up to 5e-7 off,
#: at 0.25 below 1e-9)
_RES_DERIVATIVES = {1: 0.1, 2: 0.12, 3: 0.2, 4: 0.25}
# (the Hermite weights and unbounded activations make the integrands grow like z^8: radius 7.5 left 1e-10 in 4-D)
_RADIUS = {1: 9.0, 2: 9.0, 3: 9.0, 4: 9.0}
_AXIS_NODES = {1: 20000, 2: 600, 3: 200, 4: 80}  # beyond these (large kernels) the spacing grows with the kernel
#: ... by at most this factor (errors up to ~1e-6 there); larger kernels are refused, naming x
_SPACING_SLACK = 1.5
#: two variables (one input at two layers: Theta1's cross-layer averages) coarsen past 600 nodes only to this spacing,
#: with up to _TWO_NODES nodes per axis, and are refused beyond it (K ~ 1300). Unbounded, the coarsening left tanh's
#: Theta1 8e-3 off at K = 289 and gelu's 490 % off at K = 900 without a word (against the plain recursions, gamma =
#: 1e-12); at 0.27 they stay within ~2e-8 (tanh's Theta1 at K = 400). Holding the nominal 0.12 instead made a depth-50
#: residual tanh network 3x slower for identical results
_TWO_SPACING = 0.27
_TWO_NODES = 2400


def _sigma_derivative(act, m, z):
    """``sigma^(m)(z)``: the activation's own forms up to the third, then its expression differentiated by sympy."""
    if m <= 3:
        return (act, act.d1, act.d2, act.d3)[m](z)
    return _higher_derivative(act.expr, m)(z)


@lru_cache(maxsize=None)
def _higher_derivative(expr, m):
    from ..activations import derivative_exprs, numpy_forms

    f = numpy_forms([derivative_exprs(expr, m)[m]])
    return lambda x: f(x)[0]


def _polynomial_degree(act) -> int | None:
    """The degree of sigma in z if it is a polynomial (the linear activation; a sympy polynomial), else None."""
    import sympy as sp

    from ..activations import Z

    if act.kinks or act.expr is None or not sp.sympify(act.expr).is_polynomial(Z):
        return None
    return int(sp.degree(sp.sympify(act.expr), Z))


def _product_moments(act, C, funcs, sel, *, derivatives=False, cond=1.0):
    """``<prod_v F_{sel[r, v]}(z_v)>`` ``(B, len(sel))`` for ``z ~ N(0, C)``, ``C`` ``(B, q, q)``, with
    ``F_(zcode, b)(z) = prod_m sigma^(m)(z)^zcode[m] z^b``: the product rule of :func:`gaussian.expect_products` for
    smooth activations; for kinked ones the same contraction over :func:`gaussian.expect`'s nested rules, split
    exactly at the kinks."""
    q = C.shape[-1]

    orders = sorted({m for zc, _ in funcs for m, c in enumerate(zc) if c})
    powers = sorted({b for _, b in funcs})

    def table(z):  # each sigma^(m) and z^b once per node
        ders = dict(zip(orders, (_sigma_derivative(act, m, z) for m in orders)))
        zb = {b: z**b for b in powers}
        return np.stack([math.prod((ders[m] ** c for m, c in enumerate(zc) if c), start=zb[b]) for zc, b in funcs],
                        axis=-1)

    if act.kinks:
        # the nested rule's default 4-D node count loses digits on correlated kernels (ReLU, two inputs, L = 10:
        # 6e-7 against the preactivation theory's own averages; 6e-9 with 16 nodes per segment)
        n = 16 if q == 4 and cond > _KINK_COND_FINE else None
        return gaussian.expect_products(table, C, sel, kinks=act.kinks, n=n)
    degree = _polynomial_degree(act)
    if degree is not None:
        # polynomial integrands: spacing 0.5 in the whitened coordinates is exact at any kernel (aliasing ~ e^-79), and
        # what is left is the ball's truncation, ~3e-14 at radius 9 for the linear activation's degrees (<= 6); a cubic
        # reaches degree 12 (1e-10 in 4-D at radius 9): radius 12 there, 4e-16; higher degrees radius 15 (e^-112 times
        # the polynomial). (16x fewer points than the smooth spacing in 4-D for the linear activation: 11 -> 4.6 s for
        # its two-input statistics)
        radius = _RADIUS[q] if degree <= 1 else 12.0 if degree <= 3 else 15.0
        return gaussian.expect_products(table, C, sel, resolution=np.inf, radius=radius)
    sd = math.sqrt(float(np.max(np.diagonal(C, axis1=1, axis2=2))))
    want = (_RES_DERIVATIVES if derivatives else _RES)[q]
    res = max(want, 2.0 * _RADIUS[q] * sd / _AXIS_NODES[q])
    limit, nodes = _SPACING_SLACK * want, _AXIS_NODES[q]
    if q == 2 and res > _TWO_SPACING:
        limit, nodes = _TWO_SPACING, _TWO_NODES
        res = max(_TWO_SPACING, 2.0 * _RADIUS[q] * sd / _TWO_NODES)
    if res > limit:
        fewer = " or pass one input at a time" if q >= 3 else ""
        raise ParameterError(
            f"the residual NTK statistics average over {q} Gaussian variable(s), and a kernel this large (largest "
            f"variance {sd * sd:.3g}) would need a finer grid than they can afford (spacing {res:.2f} in z where "
            f"{limit:.2g} is needed): scale the inputs x down, or reduce the depth or C_W where the kernel grows with "
            f"it (variances up to about {(limit * nodes / (2.0 * _RADIUS[q])) ** 2:.2g} there){fewer}", "x")
    return gaussian.expect_products(table, C, sel, resolution=res, radius=_RADIUS[q])


#: highest sigma^(m) a pointwise derivative reaches: the three-direction jet's sigma^(3), four derivatives more
_MAX_ORDER = 7
#: kinked activations keep the Hermite weights (their delta functions); a weight of order r on a correlation matrix
#: of condition number c amplifies rounding like c^r (the rules are exact for the scale-invariant class), so the
#: averages are refused beyond c^r = 1e10 (errors up to ~1e-6), and three- and four-variable sets beyond c = 1e3,
#: where the nested rules lose digits (1e-5 at correlation 0.999)
_KINK_AMPLIFICATION = 1e10
_KINK_COND_MANY = 1e3
#: kinked averages over a subset are taken on a larger set only if that one is well conditioned
_KINK_COND_HOST = 30.0
#: four-variable kinked sets beyond this condition number take the finer nested rule
_KINK_COND_FINE = 10.0


def _pad(zc):
    return tuple(zc) + (0,) * (_MAX_ORDER + 1 - len(zc))


def _pointwise(zc, kz):
    """``d^kz prod_m sigma^(m)^zc[m]`` as ``{zcode: coef}`` (zcodes of length _MAX_ORDER + 1)."""
    poly = {_pad(zc): 1}
    for _ in range(kz):
        nxt = {}
        for code, c in poly.items():
            for m, e in enumerate(code):
                if e:
                    new = list(code)
                    new[m] -= 1
                    new[m + 1] += 1
                    new = tuple(new)
                    nxt[new] = nxt.get(new, 0) + c * e
        poly = nxt
    return poly


def _correlation_cond(C):
    sd = np.sqrt(np.diagonal(C, axis1=1, axis2=2))
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.linalg.cond(C / (sd[:, :, None] * sd[:, None, :]))
    return np.where(np.isfinite(cond), cond, np.inf)


def _z_values(act, zkeys, cov, B, what):
    """``<prod_v F_v(z_v) d^kz>`` ``(B, len(zkeys))`` for every z part; ``cov(vars)`` ``(B, q, q)``.

    Derivatives: for smooth activations on one variable, and for kinked ones, Hermite weights of the part's own
    variables (exact for the ReLU family's delta functions); for smooth activations on several variables, pointwise
    (``sigma^(m)`` up to m = 7), since the multivariate weights lose digits like a power of the condition number when
    inputs are close. Kinked averages of parts whose variables lie inside another, well-conditioned part's are taken
    on that larger Gaussian (the missing functions are 1): the nested rules cost about the same in three dimensions as
    in four. Smooth activations keep each set on its own, finer rule (the 4-D rule is the coarsest)."""
    out = np.ones((B, len(zkeys)))
    own = {}
    for j, key in enumerate(zkeys):
        if key:
            own.setdefault(tuple(v for v, _, _ in key), []).append(j)
    if not own:
        return out
    one = (_pad(()), 0)  # the function 1: no sigma's, z^0
    covs = {vs: cov(vs) for vs in own}
    conds = {}
    if act.kinks:
        for vs in own:
            conds[vs] = _correlation_cond(covs[vs]) if len(vs) > 1 else np.ones(B)
            r = max(sum(kz for _, _, kz in zkeys[j]) for j in own[vs])
            worst = np.maximum(conds[vs] ** r / _KINK_AMPLIFICATION,
                               conds[vs] / _KINK_COND_MANY if len(vs) > 2 else 0.0)
            if np.max(worst) > 1.0:
                b = int(np.argmax(worst))
                raise SingularKernelError(
                    f"{what(b)} (condition number {conds[vs][b]:.3g}: for the kinked activation {act.name} the "
                    "residual NTK statistics of several inputs need Gaussian integration by parts or averages over "
                    "three or four variables, which lose too many digits there; use inputs further apart, a larger "
                    "C_b or a smooth activation)")

    def hostable(h, vs):
        return set(vs) <= set(h) and np.max(conds[h]) <= _KINK_COND_HOST

    hosts = []
    for vs in sorted(own, key=len, reverse=True):
        if not act.kinks or not any(hostable(h, vs) for h in hosts):
            hosts.append(vs)
    work = {h: ({}, []) for h in hosts}  # host -> (rows, [(j, [(row, coef)])])
    for vs, js in own.items():
        host = vs if vs in work else next(h for h in hosts if hostable(h, vs))
        rows, combos = work[host]
        pointwise = not act.kinks and len(vs) > 1
        Pm = None
        if not pointwise and any(kz for j in js for _, _, kz in zkeys[j]):
            Pm = np.linalg.inv(covs[vs])  # one variable, or a kinked set that passed the conditioning limit above
        polys = {}
        for j in js:
            key = zkeys[j]
            terms = []
            if pointwise:
                for combo in itertools.product(*(_pointwise(zc, kz).items() for _, zc, kz in key)):
                    f = {v: (code, 0) for (v, _, _), (code, _) in zip(key, combo)}
                    terms.append((rows.setdefault(tuple(f.get(v, one) for v in host), len(rows)),
                                  math.prod(c for _, c in combo)))
            else:
                kz = tuple(v[2] for v in key)
                if kz not in polys:
                    polys[kz] = _hermite_poly(kz, Pm) if any(kz) else {(0,) * len(kz): np.ones(B)}
                for beta, c in polys[kz].items():
                    f = {v: (_pad(zc), b) for (v, zc, _), b in zip(key, beta)}
                    terms.append((rows.setdefault(tuple(f.get(v, one) for v in host), len(rows)), c))
            combos.append((j, terms))
    for host, (rows, combos) in work.items():
        funcs = sorted({f for row in rows for f in row})
        fix = {f: i for i, f in enumerate(funcs)}
        sel = np.array([[fix[f] for f in row] for row in rows], dtype=np.int64)
        # sigma'' and higher (from the jet or from pointwise derivatives) have higher-order poles: the finer rule
        derivatives = any(sum(code[2:]) for code, _ in funcs)
        mom = _product_moments(act, covs[host], funcs, sel, derivatives=derivatives,
                               cond=float(np.max(conds[host])) if host in conds else 1.0)
        for j, terms in combos:
            out[:, j] = sum(c * mom[:, r] for r, c in terms)
    return out


def _m_values(k, mkeys, cov, B):
    """``<prod z_c^power>`` ``(B, len(mkeys))`` of the monomials (Isserlis), one factor per mask (components of
    different masks are independent); ``cov(mvars)`` ``(B, n, n)``."""
    M = 1 << k
    out = np.ones((B, len(mkeys)))
    factors, memos, covs = {}, {}, {}
    for j, key in enumerate(mkeys):
        by_mask = {}
        for v, pw in key:
            by_mask.setdefault(v[1] % M, []).append((v, pw))
        for part in by_mask.values():
            part = tuple(part)
            if part not in factors:
                vs = tuple(v for v, _ in part)
                if vs not in covs:
                    covs[vs], memos[vs] = cov(vs), {}
                factors[part] = _wick(tuple(pw for _, pw in part), covs[vs], memos[vs])
            out[:, j] *= factors[part]
    return out


def _identical_inputs(b):
    return (f"the inputs' kernel at layer {b + 1} is (nearly) singular: two inputs (nearly) identical or parallel, or "
            "more inputs than input dimensions with C_b = 0; the NTK statistics of a residual network have no delta "
            "expansion there: pass distinct inputs in general position (or C_b > 0)")


class _JetTrajectory:
    """The averages of :func:`trajectory_statistics` for the jet state of d inputs along k directions.

    ``Kx`` ``(L, N, N)`` the state's leading-order kernels (N = d 2^k, block diagonal over the masks), ``Gam`` the
    shortcut products."""

    def __init__(self, act, k, d, Kx, Gam):
        self.act, self.k, self.d, self.Kx, self.Gam = act, k, d, Kx, Gam
        self.N = d << k
        self.P = Kx.shape[0] - 1
        self._memo = {}
        self._zc = np.arange(d) << k  # the z components

    # covariances of labelled variables over one layer (batch = source layers) or two (batch = layer pairs)
    def _cov_one(self, comps):
        ix = np.array(comps)
        return self.Kx[:self.P][:, ix[:, None], ix[None, :]]

    def _cov_two(self, todo, labels):
        p, q = (np.array(v) for v in zip(*todo))
        side = np.array([s for s, _ in labels])
        ix = np.array([c for _, c in labels])
        Kp, Kq = self.Kx[p][:, ix[:, None], ix[None, :]], self.Kx[q][:, ix[:, None], ix[None, :]]
        g = self.Gam[p, q][:, None, None]
        s0, s1 = side[:, None], side[None, :]
        return np.where((s0 == 0) & (s1 == 0), Kp, np.where((s0 == 1) & (s1 == 1), Kq, g * Kp))

    def _evaluate_one(self, plan):
        zlabel = lambda vs: self._cov_one([self._zc[a] for _, a in vs])  # noqa: E731
        Z = _z_values(self.act, list(plan.zkeys), zlabel, self.P, _identical_inputs)
        T = _m_values(self.k, list(plan.mkeys), lambda vs: self._cov_one([c for _, c in vs]), self.P)
        return plan.evaluate(Z, T)

    def _evaluate_two(self, plan, todo):
        def zlabel(vs):
            return self._cov_two(todo, [(s, self._zc[a]) for s, a in vs])

        def what(b):
            return ("the residual trajectory covariance of two layers is (nearly) singular: a neuron's preactivations "
                    f"at layers {todo[b][0] + 1} and {todo[b][1] + 1} are almost proportional (gamma close to +-1 "
                    "with a small xi, or two nearly identical inputs); use |gamma| further from 1, a larger xi or "
                    "distinct inputs")
        Z = _z_values(self.act, list(plan.zkeys), zlabel, len(todo), what)
        T = _m_values(self.k, list(plan.mkeys), lambda vs: self._cov_two(todo, list(vs)), len(todo))
        return plan.evaluate(Z, T)

    def _one_layer(self, sub):
        key = ("one", sub)
        if key not in self._memo:
            P2, D, P4 = _pair_plans(self.k, self.d, sub)
            n = len(sub)
            p2 = self._evaluate_one(P2)
            Dv = self._evaluate_one(D).reshape(self.P, n, n)
            C4 = self._evaluate_one(P4).reshape(self.P, n, n) - p2[:, :, None] * p2[:, None, :]
            self._memo[key] = (p2, Dv, C4)
        return self._memo[key]

    def D_pairs(self, sub):
        return self._one_layer(tuple(int(i) for i in sub))[1]

    def C4_pairs(self, sub):
        return self._one_layer(tuple(int(i) for i in sub))[2]

    def cross_C4(self, todo, sub):
        sub = tuple(int(i) for i in sub)
        p2 = self._one_layer(sub)[0]
        val = self._evaluate_two(_cross_c4_plan(self.k, self.d, sub), todo).reshape(len(todo), len(sub), len(sub))
        p, q = (np.array(v) for v in zip(*todo))
        return val - p2[p][:, :, None] * p2[q][:, None, :]

    def Q_contract(self, W):
        N, P = self.N, self.P
        Q = self._evaluate_one(_q_plan(self.k, self.d)).reshape(P, N, N, N**4)
        return np.einsum("pxyi,pi->pxy", Q, W.reshape(P, -1))

    def hessian(self, todo):
        N = self.N
        val = self._evaluate_two(_hessian_plan(self.k, self.d), todo)
        p, q = (np.array(v) for v in zip(*todo))
        every = tuple(range(N * N))
        P2 = self._one_layer(every)[0]
        Dq = self._one_layer(every)[1][q].reshape(len(todo), N, N, N, N)   # [x, y, e, f]
        Dq = Dq.transpose(0, 3, 4, 1, 2).reshape(len(todo), N**4)          # [e, f, x, y]
        H = (val - (P2[p][:, :, None] * Dq[:, None, :]).reshape(len(todo), -1)).reshape((len(todo),) + (N,) * 6)
        return {pq: H[b] for b, pq in enumerate(todo)}


# ------------------------------------------------------------------------------------------- the statistics

def _lmaps(k, d, C_W, lambda_W):
    """The metric's linear map per step on ordered pairs of jet components (module docstring), ``(L, N^2, N^2)``."""
    M, N = 1 << k, d << k
    L = len(C_W)
    out = np.zeros((L, N * N, N * N))
    for x, y in itertools.product(range(N), repeat=2):
        out[:, x * N + y, x * N + y] += C_W
        S, T = x % M, y % M
        for r in range(k):
            if S >> r & 1 and T >> r & 1:
                out[:, x * N + y, (x ^ 1 << r) * N + (y ^ 1 << r)] += lambda_W
    return out


def _constants(k, d, C_b, lambda_b):
    """The metric's constant part per step, ``(L, N, N)``: C_b on every pair of z's, lambda_b on every pair of
    first-order tangents along the same direction (one bias vector serves every input)."""
    N = d << k
    c = np.zeros((len(C_b), N, N))
    z = np.arange(d) << k
    c[:, z[:, None], z[None, :]] = np.asarray(C_b)[:, None, None]
    for r in range(k):
        c[:, (z + (1 << r))[:, None], (z + (1 << r))[None, :]] = np.asarray(lambda_b)[:, None, None]
    return c


def _sector_pairs(k, d, sector):
    """The ordered pairs ``x * N + y`` of components whose masks differ by ``sector`` (every map keeps them)."""
    M, N = 1 << k, d << k
    return tuple(x * N + y for x in range(N) for y in range(N) if (x % M) ^ (y % M) == sector)


def _state_kernels(act, k, d, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W):
    """Leading-order kernels of the jet state, ``(L, N, N)``, block diagonal over the masks (components of different
    masks are uncorrelated by parity): ``K' = gamma^2 K + xi^2 (c + lmap <s s>)``; layer 1 is linear in its
    parameters (``K_S = 0`` for |S| >= 2)."""
    N = d << k
    L = len(C_W)
    lm, c = _lmaps(k, d, C_W, lambda_W), _constants(k, d, C_b, lambda_b)
    sub = _sector_pairs(k, d, 0)
    plan = _pair_plans(k, d, sub)[0]
    zc = np.arange(d) << k
    K = np.zeros((L, N, N))
    K[0][zc[:, None], zc[None, :]] = K1
    for r in range(k):
        K[0][(zc + (1 << r))[:, None], (zc + (1 << r))[None, :]] = Theta1
    for l in range(1, L):
        if not np.all(np.diagonal(K[l - 1]) <= _K_RANGE[1]):  # out of range: the caller names the layer
            K[l:] = np.inf
            break
        Kl = K[l - 1][None]
        cov = lambda comps: Kl[:, np.array(comps)[:, None], np.array(comps)[None, :]]  # noqa: E731
        with np.errstate(over="ignore", invalid="ignore"):
            Z = _z_values(act, list(plan.zkeys), lambda vs: cov([zc[a] for _, a in vs]), 1, _identical_inputs)
            T = _m_values(k, list(plan.mkeys), lambda vs: cov([cc for _, cc in vs]), 1)
        P2 = np.zeros(N * N)
        P2[list(sub)] = plan.evaluate(Z, T)[0]
        K[l] = gamma[l] ** 2 * K[l - 1] + xi[l] ** 2 * (c[l] + (lm[l] @ P2).reshape(N, N))
    return K


def _check_range(Kz, var, L):
    big = ~np.all(np.isfinite(var) & (var <= _K_RANGE[1]), axis=1)
    small = np.zeros(L, dtype=bool) if L == 1 else np.concatenate([(Kz[:-1] < _K_RANGE[0]) & (Kz[:-1] > 0), [False]])
    if big.any() or small.any():
        l = int(np.argmax(big | small)) + 1
        cls, what = (DivergentFlowError, "grows past") if big[l - 1] else (VanishingFlowError, "falls below")
        advice = ("scale the input x or the first layer's learning rates" if l == 1 else
                  "move C_W, gamma, xi toward criticality (pdlt.residual_criticality), lower the learning rates or "
                  "reduce the depth")
        raise cls(f"the residual kernel or NTK {what} the range of its 1/n statistics "
                  f"({_K_RANGE[0]:g}..{_K_RANGE[1]:g}) at layer l = {l}: {advice}", layer=l)


def jet_statistics(act, k, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W, *, need_G1, sectors=None):
    """``(K, G1, V)`` ``(L, N, N)``, ``(L, N, N)`` or None, ``(L, N, N, N, N)`` of the jet state of d inputs along k
    directions (N = d 2^k components ``a * 2^k + S``; module docstring) of a residual MLP. ``K1``, ``Theta1``
    ``(d, d)`` (or floats for one input). Without G1, ``sectors`` (the mask differences ``S ^ T`` of the pairs)
    limits V to the blocks of those sectors (0 elsewhere)."""
    K1, Theta1 = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (K1, Theta1))
    d = K1.shape[0]
    L = len(C_W)
    Kx = _state_kernels(act, k, d, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W)
    var = np.diagonal(Kx, axis1=1, axis2=2)
    kz = var[:, ::1 << k]
    _check_range(np.min(kz, axis=1), var, L)
    if L > 1 and np.min(kz[:-1]) <= 0.0:
        raise ParameterError("the residual NTK statistics need a nonzero kernel at every layer but the last (a zero "
                             "input with C_b = 0 gives K = 0, a network that does not depend on its weights' "
                             "fluctuations there); use a nonzero input or C_b > 0", "x")
    prov = _JetTrajectory(act, k, d, Kx, gamma_products(gamma)) if L > 1 else None
    lm = _lmaps(k, d, C_W, lambda_W)
    if need_G1:
        G1, V = trajectory_statistics(Kx, gamma, xi, lm, prov)
        return Kx, G1, V
    N = d << k
    V = np.zeros((L,) + (N,) * 4)
    for sector in (sectors if sectors is not None else range(1 << k)):
        V += trajectory_statistics(Kx, gamma, xi, lm, prov, need_G1=False, pairs=_sector_pairs(k, d, sector))[1]
    return Kx, None, V


#: most inputs of the residual NTK statistics with shortcuts: the V state holds 8 d jet components per neuron, and
#: its averages over two layers are up to four-dimensional
MAX_INPUTS = 4


def residual_ntk_statistics(act, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W) -> dict:
    """``Theta, Theta1, K, G1`` ``(L, d, d)`` and ``A, B, D, F, P, Q, R, S, T, U, V`` ``(L, d, d, d, d)`` of a residual
    MLP of one hidden width for d <= :data:`MAX_INPUTS` inputs (module docstring; conventions of
    :mod:`pdlt.theory.ntk_statistics`). Per-layer arrays index l - 1 for layer l (``gamma[0], xi[0]`` unused).
    ``K1``, ``Theta1``: layer 1's kernel and NTK, ``(d, d)`` (floats for one input)."""
    C_W, C_b, gamma, xi, lambda_b, lambda_W = (np.asarray(v, dtype=np.float64)
                                              for v in (C_W, C_b, gamma, xi, lambda_b, lambda_W))
    K1, Theta1 = (np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in (K1, Theta1))
    d, L = K1.shape[0], len(C_W)
    if d > MAX_INPUTS:
        raise ParameterError(f"the residual NTK statistics take at most {MAX_INPUTS} inputs at once, got d = {d}: "
                             "every entry involves at most four inputs, so pass them in groups of four", "x")
    hyper = (C_W, C_b, gamma, xi, lambda_b, lambda_W)
    needed = sorted({ix[0] ^ ix[1] for field, _, ix, _ in JET_ENTRIES.values() if field == "V"} | {0})
    Kx, _, V3 = jet_statistics(act, 3, K1, Theta1, *hyper, need_G1=False, sectors=needed)
    V3 = V3.reshape((L,) + (d, 8) * 4)
    Kx = Kx.reshape(L, d, 8, d, 8)
    # G1 of a pair of inputs involves those two only: one two-input jet along one direction per pair
    G1x = np.zeros((L, d, 2, d, 2))
    groups = [tuple(range(d))] if d <= 2 else list(itertools.combinations(range(d), 2))
    for grp in groups:
        ix = np.array(grp)
        _, g1, _ = jet_statistics(act, 1, K1[np.ix_(ix, ix)], Theta1[np.ix_(ix, ix)], *hyper, need_G1=True)
        g1 = g1.reshape(L, len(grp), 2, len(grp), 2)
        for i, j in itertools.product(range(len(grp)), repeat=2):
            G1x[:, grp[i], :, grp[j], :] = g1[:, i, :, j, :]
    out = {"Theta": Kx[:, :, 1, :, 1], "K": Kx[:, :, 0, :, 0], "G1": G1x[:, :, 0, :, 0],
           "Theta1": G1x[:, :, 1, :, 1], "V": V3[:, :, 0, :, 0, :, 0, :, 0]}
    for name, (field, _, ix, order) in JET_ENTRIES.items():
        if field == "V":  # book axis m is the slot s with order[s] = m
            out[name] = V3[:, :, ix[0], :, ix[1], :, ix[2], :, ix[3]].transpose(
                (0,) + tuple(1 + order.index(m) for m in range(4)))
    return out

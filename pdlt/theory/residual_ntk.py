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
    S = V_({12}{13})({2}{3}),  T = V_({12}{2})({13}{3}),  U = V_({12}{3})({13}{2}).

**The step.** ``z' = gamma z + xi (b + W sigma(z))`` with ``(W, b) -> (W, b) + sum_r e_r (dW_r, db_r)`` gives
``x'_S = gamma x_S + xi eps_S``, ``eps_S = (W s)_S + sum_{r in S} (dW_r s)_{S-r} + b [S = {}] + db_r [S = {r}]``, where
``s_S`` is the jet of ``sigma(z)`` (Faa di Bruno over the set partitions pi of S:
``s_S = sum_pi sigma^(|pi|)(z) prod_{B in pi} z_B``). Given the layer, ``eps`` is Gaussian and iid over neurons with

    Cov(eps_S, eps_T) = C_b [S = T = {}] + lambda_b [S = T = {r}] + C_W <s_S s_T>
                        + lambda_W sum_{r in S & T} <s_{S-r} s_{T-r}>

(``<.>`` the average over the layer's neurons): a constant plus a linear map ``lmap`` of ``<s s^T>``, which is all
:func:`pdlt.theory.residual.trajectory_statistics` needs. Flipping ``dtheta_r`` flips every ``z_S`` with r in S, so
components with different S are uncorrelated at every layer; at leading order they are independent Gaussians with
variances ``K_S`` (``K_{} = K``, ``K_{r} = Theta``, ``K_S = 0`` at layer 1 for |S| >= 2), and across layers
``Cov(x^(p), x^(q)) = gamma_{p+1..q} Cov(x^(p))``.

**Averages.** Every average factorizes into a z part and a monomial in the other components. Derivatives along the
other components act exactly on the monomial; derivatives along ``z`` are Gaussian integrations by parts
(``<d_v^k f> = <f w_k>`` with the Hermite weight of the conditional density), never pointwise, so the ReLU family's
delta functions are kept. The factors ``sigma'', sigma'''`` that come from differentiating the network are pointwise
(0 for piecewise-linear activations, as the exact derivatives of such a network are), the convention of
:mod:`pdlt.theory.ntk_statistics`. The z parts are one- and two-dimensional averages of products of
``sigma^(m)`` times polynomials (:func:`pdlt.gaussian.expect`, kinks split exactly); the rest are Isserlis moments.

``V`` (all of A..U) comes from the jet along k = 3 directions (8 components), ``G1`` (Theta1) from k = 1 (z and t):
G1 of a pair is driven only by pairs of the same parity, and the one-neuron Hessian terms it needs grow like N^6.

With every gamma = 0 this reproduces the plain-MLP recursions of :mod:`pdlt.theory.ntk_statistics` (the book's, a
separate derivation); the z block reproduces :func:`pdlt.theory.residual.residual_statistics`. Scope: one input.
Accuracy: V to ~1e-14 relative; G1 and Theta1 to ~1e-13 of K and Theta in absolute terms (they vanish like xi^4 as
the branch weight goes to 0, where that floor is all that is left of them).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
from numpy.polynomial.hermite_e import herme2poly
from scipy.special import factorial2
from sympy.utilities.iterables import multiset_partitions

from .. import gaussian
from ..errors import DivergentFlowError, ParameterError, SingularKernelError, VanishingFlowError
from .finite_width import SINGULAR_COND
from .residual import gamma_products, trajectory_joint, trajectory_statistics

__all__ = ["residual_ntk_statistics", "JET_ENTRIES"]

#: kernels (and NTKs) outside this range make the averages' sigma^4 z^4 moments or their K^-4 Hermite weights leave
#: float64's range
_K_RANGE = (1e-40, 1e40)

#: each statistic as ``(field, k, index)``: ``V[index]`` or ``G1[index]`` of the jet state along k directions, the
#: components named by their bit masks (bit r - 1 for direction r; 0 is z itself)
JET_ENTRIES = {
    "Theta1": ("G1", 1, (1, 1)),
    "A": ("V", 3, (1, 1, 2, 2)), "B": ("V", 3, (1, 2, 1, 2)), "D": ("V", 3, (1, 1, 0, 0)), "F": ("V", 3, (1, 0, 1, 0)),
    "P": ("V", 3, (3, 0, 1, 2)), "Q": ("V", 3, (3, 1, 2, 0)), "R": ("V", 3, (7, 1, 2, 4)),
    "S": ("V", 3, (3, 5, 2, 4)), "T": ("V", 3, (3, 2, 5, 4)), "U": ("V", 3, (3, 4, 5, 2)),
}


# ------------------------------------------------------------------------------------------- the jet's algebra
# A term is (coef, zcode, kz, exps): coef * prod_m sigma^(m)(z)^zcode[m] * prod_S z_S^exps[S], with kz derivatives
# along z still to be taken by integration by parts (exps[0] unused: z is the argument of the sigma's).

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


def _product(k, comps):
    """``prod_{x in comps} s_x`` as a list of ``(coef, zcode, kz, exps)``."""
    terms = _s_terms(k)
    out = []
    for combo in itertools.product(*(terms[x] for x in comps)):
        zc = tuple(map(sum, zip(*(t[0] for t in combo))))
        ex = tuple(map(sum, zip(*(t[1] for t in combo))))
        out.append((1, zc, 0, ex))
    return out


def _derive(terms, derivs):
    """Apply ``d/dx_g`` for g in ``derivs``: along z it raises kz, along z_S it differentiates the monomial."""
    for g in derivs:
        nxt = []
        for coef, zc, kz, ex in terms:
            if g == 0:
                nxt.append((coef, zc, kz + 1, ex))
            elif ex[g]:
                nxt.append((coef * ex[g], zc, kz, ex[:g] + (ex[g] - 1,) + ex[g + 1:]))
        terms = nxt
    return terms


def _parity(*comps):
    out = 0
    for c in comps:
        out ^= c
    return out


class _Plan:
    """Terms of many tensor entries, flattened: ``entry, coef, zcode index, kz, exps index`` arrays."""

    def __init__(self, entries):
        self.zcodes, self.exps = {}, {}
        rows = []
        for e, terms in enumerate(entries):
            for coef, zc, kz, ex in terms:
                rows.append((e, coef, self.zcodes.setdefault(zc, len(self.zcodes)), kz,
                             self.exps.setdefault(ex, len(self.exps))))
        arr = np.array(rows, dtype=np.int64).reshape(-1, 5)
        self.entry, self.coef, self.zc, self.kz, self.ex = arr.T
        self.n = len(entries)

    def evaluate(self, Z, T):
        """``Z`` ``(B, n_zcodes, kz)``, ``T`` ``(B, n_exps)`` -> ``(B, n_entries)``."""
        vals = self.coef * Z[:, self.zc, self.kz] * T[:, self.ex]
        out = np.zeros((Z.shape[0], self.n))
        np.add.at(out.T, self.entry, vals.T)
        return out


@lru_cache(maxsize=None)
def _one_layer_plans(k, with_q):
    N = 1 << k
    pairs = list(itertools.product(range(N), repeat=2))
    P2 = _Plan([_product(k, p) for p in pairs])
    quads = list(itertools.product(range(N), repeat=4))
    D = _Plan([_derive(_product(k, (x, y)), (g, h)) if _parity(x, y, g, h) == 0 else [] for x, y, g, h in quads])
    P4 = _Plan([_product(k, q) if _parity(*q) == 0 else [] for q in quads])
    Q = None
    if with_q:
        Q = _Plan([_derive(_product(k, ix[:2]), ix[2:]) if _parity(*ix) == 0 else []
                   for ix in itertools.product(range(N), repeat=6)])
    return P2, D, P4, Q


@lru_cache(maxsize=None)
def _cross_plans(k, with_hessian):
    """Two-layer entries as ``(zcode_p, exps_p, coef, zcode_q, kz, exps_q)`` lists: Cov(s_a s_b(p), s_c s_d(q)) and
    Cov(s_g s_h(p), d_e d_f (s_x s_y)(q)) (entries of odd total parity vanish and are left empty)."""
    N = 1 << k
    c4 = [[(zp, ep, cq, zq, kq, eq) for (_, zp, _, ep) in _product(k, (a, b))
           for (cq, zq, kq, eq) in _product(k, (c, d))]
          if _parity(a, b, c, d) == 0 else [] for a, b, c, d in itertools.product(range(N), repeat=4)]
    hs = None
    if with_hessian:
        hs = [[(zp, ep, cq, zq, kq, eq) for (_, zp, _, ep) in _product(k, (g, h))
               for (cq, zq, kq, eq) in _derive(_product(k, (x, y)), (e, f))]
              if _parity(g, h, e, f, x, y) == 0 else [] for g, h, e, f, x, y in itertools.product(range(N), repeat=6)]
    return c4, hs


# ------------------------------------------------------------------------------------------- Gaussian pieces

def _gauss_moment(i, var):
    if i % 2:
        return 0.0
    return (float(factorial2(i - 1, exact=True)) if i else 1.0) * var ** (i // 2)  # scipy's (-1)!! is 0


def _bivariate_moment(i, j, a, b, c):
    """``E[x^i y^j]`` for ``(x, y)`` Gaussian, mean 0, ``Var x = a``, ``Var y = b``, ``Cov = c`` (Isserlis: k
    cross pairings)."""
    out = 0.0
    for k in range(min(i, j) + 1):
        if (i - k) % 2 or (j - k) % 2:
            continue
        out += math.comb(i, k) * math.comb(j, k) * math.factorial(k) * c**k * _gauss_moment(i - k, a) \
            * _gauss_moment(j - k, b)
    return out


def _hermite_rows(K):
    """``<d^k f>_K = <f(z) w_k(z)>``, ``w_k = He_k(z/sqrt K)/K^(k/2)``, as coefficients of ``z^r`` (k, r = 0..4)."""
    rows = np.zeros((5, 5))
    for k in range(5):
        for r, c in enumerate(herme2poly([0] * k + [1])):
            rows[k, r] = c * K ** (-(k + r) / 2)
    return rows


# z spacing of the smooth one-dimensional trapezoidal rule: the Hermite weights up to z^4 make the default's error
# (2e-10 for tanh) visible in Theta1 and A; 0.1 brings them to the plain-MLP recursions' values to 2e-14. The
# two-dimensional cross-layer moments (weights of degree <= 2) keep the default spacing (~1e-12).
_HZ_1D = 0.1


def _sigma_products(act, zcodes, z):
    """``prod_m sigma^(m)(z)^zcode[m]`` for every zcode, stacked on a new last axis."""
    ders = [act(z), act.d1(z), act.d2(z), act.d3(z)]
    return [math.prod((ders[m] ** c for m, c in enumerate(zc) if c), start=np.ones_like(z)) for zc in zcodes]


class _JetTrajectory:
    """The averages of :func:`trajectory_statistics` for the jet state of one input along k directions.

    ``Kz`` ``(L,)`` the kernel, ``Ks`` ``(L, N)`` the variances of the components (entry 0 unused), ``Gam`` the
    shortcut products."""

    def __init__(self, act, k, Kz, Ks, Gam, with_g1):
        self.act, self.k, self.Kz, self.Ks, self.Gam = act, k, Kz, Ks, Gam
        self.N = 1 << k
        self.P = Kz.shape[0] - 1
        self.with_g1 = with_g1
        self._cross_cache = None
        self._memo = {}
        P2, D, P4, self._Q = _one_layer_plans(k, with_g1)
        zcodes = sorted(set(P2.zcodes) | set(D.zcodes) | set(P4.zcodes) | (set(self._Q.zcodes) if with_g1 else set()))
        self._zindex = {zc: i for i, zc in enumerate(zcodes)}
        Z = self._one_layer_z(zcodes)
        N, P = self.N, self.P
        self.P2 = P2.evaluate(Z[:, self._remap(P2)], self._t_table(P2)).reshape(P, N, N)
        self.D = D.evaluate(Z[:, self._remap(D)], self._t_table(D)).reshape(P, N, N, N, N)
        P4v = P4.evaluate(Z[:, self._remap(P4)], self._t_table(P4)).reshape(P, N, N, N, N)
        self.C4 = P4v - self.P2[:, :, :, None, None] * self.P2[:, None, None, :, :]
        self._Z = Z

    def _remap(self, plan):
        order = sorted(plan.zcodes, key=plan.zcodes.get)
        return np.array([self._zindex[zc] for zc in order], dtype=np.int64)

    def _one_layer_z(self, zcodes):
        """``<d^kz prod sigma^(m)^c>`` ``(P, n_zcodes, 5)`` at every source layer, by Hermite-weighted moments."""
        act = self.act

        def f(z):
            u = z[..., 0]
            cols = _sigma_products(act, zcodes, u)
            return np.stack([c * u**r for c in cols for r in range(5)], axis=-1)

        Kb = self.Kz[:self.P].reshape(self.P, 1, 1)
        if act.kinks:
            mom = gaussian.expect(f, Kb, kinks=act.kinks)
        else:
            # at most ~4e4 nodes per kernel: a large K (wide inputs) would otherwise cost 1e6 nodes at spacing 0.1
            mom = gaussian.expect(f, Kb, resolution=max(_HZ_1D, 9.0 * math.sqrt(float(np.max(Kb))) / 2e4))
        mom = np.asarray(mom).reshape(self.P, len(zcodes), 5)
        return np.stack([mom[m] @ _hermite_rows(self.Kz[m]).T for m in range(self.P)])

    def _t_table(self, plan):
        """``prod_S E[z_S^exps[S]]`` ``(P, n_exps)`` at every source layer."""
        exps = sorted(plan.exps, key=plan.exps.get)
        out = np.ones((self.P, max(len(exps), 1)))
        for j, ex in enumerate(exps):
            for S in range(1, self.N):
                if ex[S]:
                    out[:, j] *= np.array([_gauss_moment(ex[S], v) for v in self.Ks[:self.P, S]])
        return out

    def Q_contract(self, W):
        N, P = self.N, self.P
        Q = self._Q.evaluate(self._Z[:, self._remap(self._Q)], self._t_table(self._Q)).reshape(P, N, N, N * N * N * N)
        return np.einsum("pxyi,pi->pxy", Q, W.reshape(P, -1))

    # -------------------------------------------------------------- two layers of one neuron's trajectory
    def _cross(self, todo):
        """Two-dimensional moments ``<F_p(u) G_q(v) u^a v^b>`` (a + b <= 2) for the zcodes of pair products."""
        key = tuple(todo)
        if self._cross_cache is not None and self._cross_cache[0] == key:
            return self._cross_cache[1]
        act = self.act
        pair_codes = sorted({zc for x, y in itertools.product(range(self.N), repeat=2)
                             for _, zc, _, _ in _product(self.k, (x, y))})
        deg = 3 if self.with_g1 else 1
        powers = [(r, t) for r in range(deg) for t in range(deg - r)]  # u^r v^t, r + t <= 2 (Hessian weights)

        def f(z):
            u, v = z[..., 0], z[..., 1]
            fu, fv = _sigma_products(act, pair_codes, u), _sigma_products(act, pair_codes, v)
            return np.stack([a * b * u**r * v**t for a in fu for b in fv for r, t in powers], axis=-1)

        J = np.stack([trajectory_joint(self.Kz[:, None, None], self.Gam, p, q) for p, q in todo])
        # the condition number of the correlation, not of J: layers of very different K are not "proportional"
        rho = np.abs(J[:, 0, 1]) / np.sqrt(J[:, 0, 0] * J[:, 1, 1])
        with np.errstate(divide="ignore"):
            cond = np.where(rho < 1.0, (1.0 + rho) / (1.0 - rho), np.inf)
        if np.max(cond) > SINGULAR_COND:
            b = int(np.argmax(cond))
            raise SingularKernelError(
                "the residual trajectory covariance of two layers is (nearly) singular: a neuron's preactivations at "
                f"layers {todo[b][0] + 1} and {todo[b][1] + 1} are almost proportional (condition number "
                f"{cond[b]:.3g} > {SINGULAR_COND:g}; gamma close to +-1 with a small xi); use |gamma| further from 1 "
                "or a larger xi")
        if act.kinks:
            vals = gaussian.expect(f, J, kinks=act.kinks)
        else:
            vals = gaussian.expect(f, J)
        nc = len(pair_codes)
        M = np.zeros((len(todo), nc, nc, deg, deg))
        flat = np.asarray(vals).reshape(len(todo), nc, nc, len(powers))
        for j, (r, t) in enumerate(powers):
            M[..., r, t] = flat[..., j]
        self._cross_cache = (key, (J, M, {zc: i for i, zc in enumerate(pair_codes)}))
        return self._cross_cache[1]

    def _cross_evaluate(self, todo, entries, kz_max):
        J, M, index = self._cross(todo)
        B = len(todo)
        if kz_max:
            Ji = np.linalg.inv(J)
            cu, cv = Ji[:, 1, 0], Ji[:, 1, 1]
            # <F(u) d_v^k G(v)> = <F G w_k(u, v)>: w_1 = cu u + cv v, w_2 = (cu u + cv v)^2 - cv, as coefficients
            # of u^r v^s
            w = np.zeros((B, 3, 3, 3))
            w[:, 0, 0, 0] = 1.0
            w[:, 1, 0, 1], w[:, 1, 1, 0] = cv, cu
            w[:, 2, 0, 0], w[:, 2, 0, 2], w[:, 2, 1, 1], w[:, 2, 2, 0] = -cv, cv * cv, 2.0 * cu * cv, cu * cu
            Zk = np.einsum("bcers,bkrs->bcek", M, w)
        else:
            Zk = M[..., 0, 0][..., None]
        rows, tkeys = [], {}
        for e, terms in enumerate(entries):
            for zp, ep, coef, zq, kz, eq in terms:
                rows.append((e, coef, index[zp], index[zq], kz, tkeys.setdefault((ep, eq), len(tkeys))))
        if not rows:
            return np.zeros((B, len(entries)))
        e_, coef, ip, iq, kz, it = np.array(rows, dtype=np.int64).T
        p, q = (np.array(v) for v in zip(*todo))
        T = np.ones((B, len(tkeys)))
        for (ep, eq), j in tkeys.items():
            for S in range(1, self.N):
                if ep[S] or eq[S]:
                    a = self.Ks[p, S]
                    T[:, j] *= _bivariate_moment(ep[S], eq[S], a, self.Ks[q, S], self.Gam[p, q] * a)
        vals = coef * Zk[:, ip, iq, kz] * T[:, it]
        out = np.zeros((B, len(entries)))
        np.add.at(out.T, e_, vals.T)
        return out

    def cross_C4(self, todo):
        key = ("C4", tuple(todo))
        if key not in self._memo:  # trajectory_statistics asks once per parity sector
            self._memo[key] = self._cross_C4(todo)
        return self._memo[key]

    def _cross_C4(self, todo):
        N = self.N
        c4, _ = _cross_plans(self.k, False)
        val = self._cross_evaluate(todo, c4, 0)
        p, q = (np.array(v) for v in zip(*todo))
        mean = (self.P2.reshape(self.P, -1)[p][:, :, None] * self.P2.reshape(self.P, -1)[q][:, None, :])
        return (val - mean.reshape(len(todo), -1)).reshape((len(todo),) + (N,) * 4)

    def hessian(self, todo):
        N = self.N
        _, hs = _cross_plans(self.k, True)
        val = self._cross_evaluate(todo, hs, 2)
        p, q = (np.array(v) for v in zip(*todo))
        P2 = self.P2.reshape(self.P, N * N)
        # the subtracted mean is P2[g, h] D[x, y, e, f], entries ordered [g, h, e, f, x, y]
        Dq = self.D[q].transpose(0, 3, 4, 1, 2).reshape(len(todo), N**4)
        mean = (P2[p][:, :, None] * Dq[:, None, :]).reshape(len(todo), -1)
        H = (val - mean).reshape((len(todo),) + (N,) * 6)
        return {pq: H[b] for b, pq in enumerate(todo)}


# ------------------------------------------------------------------------------------------- the statistics

def _lmaps(k, C_W, lambda_W):
    """The metric's linear map per step on ordered pairs of jet components (module docstring), ``(L, N^2, N^2)``."""
    N = 1 << k
    L = len(C_W)
    out = np.zeros((L, N * N, N * N))
    for S, T in itertools.product(range(N), repeat=2):
        out[:, S * N + T, S * N + T] += C_W
        for r in range(k):
            if S >> r & 1 and T >> r & 1:
                out[:, S * N + T, (S ^ 1 << r) * N + (T ^ 1 << r)] += lambda_W
    return out


def _constants(k, C_b, lambda_b):
    """The metric's constant part per step, ``(L, N, N)``: C_b on z, lambda_b on each first-order tangent."""
    N = 1 << k
    c = np.zeros((len(C_b), N, N))
    c[:, 0, 0] = C_b
    for r in range(k):
        c[:, 1 << r, 1 << r] = lambda_b
    return c


def _state_kernels(act, k, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W):
    """Leading-order kernels of the jet state, ``(L, N, N)`` diagonal (components are uncorrelated by parity):
    ``x' = gamma^2 x + xi^2 (c + lmap <s s>)``; layer 1 is linear in its parameters (``K_S = 0`` for |S| >= 2)."""
    N = 1 << k
    L = len(C_W)
    lm, c = _lmaps(k, C_W, lambda_W), _constants(k, C_b, lambda_b)
    P2plan = _one_layer_plans(k, False)[0]
    zcodes = sorted(P2plan.zcodes, key=P2plan.zcodes.get)
    exps = sorted(P2plan.exps, key=P2plan.exps.get)
    K = np.zeros((L, N, N))
    K[0, 0, 0] = K1
    for r in range(k):
        K[0, 1 << r, 1 << r] = Theta1
    for l in range(1, L):
        Kz, var = K[l - 1, 0, 0], np.diagonal(K[l - 1])
        if not (np.all(var <= _K_RANGE[1])):  # out of range: the caller names the layer
            K[l:] = np.inf
            break
        with np.errstate(over="ignore", invalid="ignore"):
            Z = np.asarray(gaussian.expect(lambda z: np.stack(_sigma_products(act, zcodes, z[..., 0]), axis=-1),
                                           np.array([[Kz]]), kinks=act.kinks)).reshape(1, -1, 1)
        T = np.array([[math.prod(_gauss_moment(ex[S], var[S]) for S in range(1, N))] for ex in exps]).T
        P2 = P2plan.evaluate(Z, T).reshape(N * N)
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
    """``(K, G1, V)`` ``(L, N, N)``, ``(L, N, N)`` or None, ``(L, N, N, N, N)`` of the jet state along k directions
    (N = 2^k components, bit masks; module docstring) of a residual MLP with one input. Without G1, ``sectors``
    (parities ``S ^ T`` of the pairs) limits V to the blocks of those sectors (0 elsewhere)."""
    L = len(C_W)
    Kx = _state_kernels(act, k, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W)
    var = np.diagonal(Kx, axis1=1, axis2=2)
    _check_range(Kx[:, 0, 0], var, L)
    if L > 1 and np.min(Kx[:-1, 0, 0]) <= 0.0:
        raise ParameterError("the residual NTK statistics need a nonzero kernel at every layer but the last (a zero "
                             "input with C_b = 0 gives K = 0, a network that does not depend on its weights' "
                             "fluctuations there); use a nonzero input or C_b > 0", "x")
    Gam = gamma_products(gamma)
    prov = _JetTrajectory(act, k, Kx[:, 0, 0], var, Gam, need_G1) if L > 1 else None
    lm = _lmaps(k, C_W, lambda_W)
    if need_G1:
        G1, V = trajectory_statistics(Kx, gamma, xi, lm, prov)
        return Kx, G1, V
    # every map keeps the parity S ^ T of a pair (S, T): V one sector at a time, N pairs each
    N = 1 << k
    V = np.zeros((L,) + (N,) * 4)
    for sector in (sectors if sectors is not None else range(N)):
        pairs = [S * N + (S ^ sector) for S in range(N)]
        V += trajectory_statistics(Kx, gamma, xi, lm, prov, need_G1=False, pairs=pairs)[1]
    return Kx, None, V


def residual_ntk_statistics(act, K1, Theta1, C_W, C_b, gamma, xi, lambda_b, lambda_W) -> dict:
    """``Theta, Theta1, K, G1`` ``(L, 1, 1)`` and ``A, B, D, F, P, Q, R, S, T, U, V`` ``(L, 1, 1, 1, 1)`` of a residual
    MLP of one hidden width for one input (module docstring; conventions of :mod:`pdlt.theory.ntk_statistics`).
    Per-layer arrays index l - 1 for layer l (``gamma[0], xi[0]`` unused). ``K1``, ``Theta1``: layer 1's kernel and
    NTK (floats)."""
    C_W, C_b, gamma, xi, lambda_b, lambda_W = (np.asarray(v, dtype=np.float64)
                                              for v in (C_W, C_b, gamma, xi, lambda_b, lambda_W))
    args = (act, float(K1), float(Theta1), C_W, C_b, gamma, xi, lambda_b, lambda_W)
    K1x, G1x, _ = jet_statistics(*args[:1], 1, *args[1:], need_G1=True)
    needed = sorted({ix[0] ^ ix[1] for field, _, ix in JET_ENTRIES.values() if field == "V"} | {0})
    _, _, V3 = jet_statistics(*args[:1], 3, *args[1:], need_G1=False, sectors=needed)
    sl2, sl4 = (slice(None), None, None), (slice(None), None, None, None, None)
    out = {"Theta": K1x[:, 1, 1][sl2], "K": K1x[:, 0, 0][sl2], "G1": G1x[:, 0, 0][sl2],
           "V": V3[:, 0, 0, 0, 0][sl4]}
    for name, (field, k, ix) in JET_ENTRIES.items():
        src = G1x if field == "G1" else V3
        out[name] = src[(slice(None),) + ix][sl2 if field == "G1" else sl4]
    return out

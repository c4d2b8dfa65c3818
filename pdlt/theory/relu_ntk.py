r"""The NTK of one input through a bias-free ReLU network at every width: exact mean and variance (derivations/README.md
section 17.1; layers l = 1..L at array index l - 1).

Network: ``sigma(z) = a z Theta(z)`` (``a > 0``; ``a_- = 0``), ``z^(1) = W^(1) x``, ``z^(l+1) = W^(l+1) sigma(z^(l))``,
``W^(l) ~ N(0, C_W^(l)/n_{l-1})`` and every ``C_b = 0`` (the biases start at 0; their learning rates ``lambda_b`` are
free). For one output neuron i and one input, with ``g^(l) = dz_i^(L)/dz^(l)``, ``F_l = |sigma(z^(l))|^2``
(``F_0 = |x|^2``), the NTK is

    H_ii = sum_{l=1}^{L} |g^(l)|^2 (lambda_b^(l) + lambda_W^(l) F_{l-1}/n_{l-1}).

**Reduction to independent scalars.** Split ``W^(l+1)`` along ``u = sigma(z^(l))/|sigma(z^(l))|`` and its orthogonal
complement: the forward pass sees only ``w = W^(l+1) u ~ N(0, C_W/n_l)`` (``z^(l+1) = w sqrt(F_l)``), and
``W^(l+1) Q`` (Q spanning ``u^perp``) is independent of it. Backward, ``g^(l) = D^(l) W^(l+1)^T g^(l+1)`` with
``D = a diag(z > 0)``; the u-component is ``a (w . g^(l+1)) u`` and ``w . g^(l+1) = z_i^(L)/sqrt(F_l)`` by Euler's
theorem (``z_i^(L)`` is homogeneous of degree one in ``z^(l+1)``), and the rest is a Gaussian vector in ``u^perp``
restricted to the ``N_l`` active neurons (``u`` lies among them). So, with independent ``N_l ~ Bin(n_l, 1/2)``,
``X_l = chi^2_{N_l}``, ``Y_l = chi^2_{N_l - 1}`` (given ``N_l``) and ``c = chi^2_1``:

    F_l = a^2 (C_W^(l)/n_{l-1}) F_{l-1} X_l,     (z_i^(L))^2 = (C_W^(L)/n_{L-1}) F_{L-1} c,
    |g^(l)|^2 = a^2 [(z_i^(L))^2/F_l + (C_W^(l+1)/n_l) |g^(l+1)|^2 Y_l],     |g^(L)|^2 = 1.

A layer with no active neuron (probability ``2^-n_l``) kills everything above it (``sigma'(0) = 0``, pdlt's
convention and the sampler's): ``H_ii = lambda_b^(L)`` then. A zero input, or ``C_W = 0`` below the last layer,
makes every preactivation exactly 0, outside this law: refused.

**Moments.** Unrolled, H is a sum of products whose factor at layer k is 1, ``X_k`` or ``Y_k``: each product is a
path through five states per layer (before its layer l, for the bias or the weight term; between l and m, where the
last factor ``(z_i^(L))^2/F_m`` enters; at m; above m), so ``E[H]`` and ``E[H^2]`` are sums over paths of one or two
such automata, products of per-layer moments ``E[X^p Y^q]`` (``p + q <= 2``, from the binomial's moments given
``N_l >= 1``), summed layer by layer. The same sums on power series in ``1/n_l`` (the binomial's moments are
polynomials in ``1/n_l`` once ``X, Y`` are divided by ``n_l``; the ``2^-n`` of dead layers has no series) give the
orders: the constant term is the infinite-width NTK, the next the O(1/n) theory's, then the O(1/n^2) terms.

**Two outputs** (the one-input entries of A, B, D, F). For output neurons a, b the Gram matrix
``Gamma_ab = g_a^(l) . g_b^(l)`` follows the same reduction: ``w . g_a = z_a/sqrt(F_l)`` for each output, and the
orthogonal parts of the two gradients are one Gaussian map applied to both, so
``Gamma^(l) = a^2 [z z^T/F_l + (C_W/n_l) Gamma^(l+1)^(1/2) Y_l Gamma^(l+1)^(1/2)]`` with ``Y_l`` a 2 x 2 Wishart
matrix of ``m = N_l - 1`` degrees of freedom and ``z_a`` iid. Rotating the two outputs leaves the law invariant, so
the pair moments are ``E[Gamma_ab Gamma'_cd] = p d_ab d_cd + q (d_ac d_bd + d_ad d_bc)``; a layer where both paths
take the Wishart factor maps ``(p, q)`` by ``E[m^2] I + E[m] J`` with ``J = [[0, 2], [1, 1]]``
(``E[Y_ab Y_cd] = m (d_ac d_bd + d_ad d_bc) + m^2 d_ab d_cd``), every other factor by a number; the tops of two
paths give ``(1, 0)`` (``d_ab d_cd``, or ``d_ab z_c z_d``) or ``(1, 1)`` (``z_a z_b z_c z_d``, Isserlis). These matrices
commute (polynomials in J, ``J^2 = J + 2``), so each pair of states carries ``alpha I + beta J``. Then
``E[H_aa H_bb] = p`` and ``E[H_ab^2] = q`` (a != b; one output: ``p + 2q``, the scalar chain's ``E[Y^2] = E[m^2]
+ 2 E[m]`` on the eigenvector (1, 2) of J). ``z_b^2 = C_W F_{l-1}/n_{l-1} c_b^2`` is one more path, in the weight
state below the top, which never takes Y: ``E[H_aa z_b^2]`` and ``E[H_ab z_a z_b]`` are its p and q parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import MLP
from ..errors import DivergentFlowError, ParameterError

__all__ = ["ReluNTKAllOrders", "relu_ntk_all_orders"]

# automaton states: before the layer of the term (bias or weight part), between it and m, at m, above m
_B, _W, _Y, _M, _X = range(5)
# the factor each state takes at a layer: 0 -> 1, 1 -> X, 2 -> Y
_FACTOR = (0, 1, 2, 0, 1)
#: orders kept in the series (1, 1/n, 1/n^2)
_ORDERS = 3


@dataclass(frozen=True)
class ReluNTKAllOrders:
    """The NTK of each input alone through a bias-free ReLU network (:func:`relu_ntk_all_orders`), layer l at index
    l - 1: ``Theta`` ``(L, d)`` = ``E[H_ii;aa]`` and ``variance`` ``(L, d)`` = ``Var(H_ii;aa)``, and over two outputs
    i != j the one-input entries of the NTK statistics, each ``(L, d)``: ``A`` = ``n_{l-1} Cov(H_ii;aa, H_jj;aa)``,
    ``B`` = ``n_{l-1} E[H_ij;aa^2]``, ``D`` = ``n_{l-1} Cov(H_ii;aa, z_j;a^2)``, ``F`` = ``n_{l-1} E[H_ij;aa z_i;a
    z_j;a]``; all exact at every width. ``series``: their expansions in the inverse widths,
    ``{"Theta", "variance", "A", "B", "D", "F"}``, each ``(L, d, 3)`` (orders 1, 1/n, 1/n^2 of the moments as absolute
    terms: ``Theta = series[..., 0] + series[..., 1] + series[..., 2] + ...``; A, B, D, F start at index 1, their O(1)
    part); ``first_order``: ``{"ntk_mean", "variance", "A", "B", "D", "F"}`` ``(L, d)``, the O(1/n) predictions (the
    first two terms of the mean; the leading term of the others), against which :func:`pdlt.compare` measures the
    truncation error."""

    net: MLP
    x: np.ndarray
    Theta: np.ndarray
    variance: np.ndarray
    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    F: np.ndarray
    series: dict
    first_order: dict


def _check_relu(net: MLP) -> float:
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    act = net.activation
    slopes = getattr(act, "slopes", None)
    if net.residual:
        raise ParameterError("the exact NTK chain is derived for plain MLPs (no residual steps: gamma = 0, xi = 1); "
                             "use pdlt.ntk (order 1/n)", "gamma")
    if slopes is None or slopes[1] != 0 or slopes[0] <= 0:
        raise ParameterError("the exact NTK chain is derived for sigma = a z Theta(z) (ReLU, a > 0); got "
                             f"{getattr(act, 'name', act)!r}: use pdlt.ntk (order 1/n)", "activation")
    if any(net.step(l).C_b != 0 for l in range(1, net.L + 1)):
        raise ParameterError("the exact NTK chain needs C_b = 0 at every layer (a bias breaks the scale invariance "
                             "that reduces the network to scalars); the learning rates lambda_b may be nonzero", "C_b")
    if any(net.step(l).C_W == 0 for l in range(1, net.L)):
        raise ParameterError("the exact NTK chain needs C_W > 0 below the last layer: with C_W = 0 the preactivations "
                             "above are exactly 0 (no neuron is active half the time) and the chain does not "
                             "apply; use pdlt.ntk", "C_W")
    return float(slopes[0])


def _layer_moments(n: int, exact: bool) -> tuple:
    """``(E[f g], (E[m^2], E[m]))`` at a layer of width n: ``E[f g]`` for ``f, g`` in ``(1, X/n, Y/n)``
    ``(3, 3, S)``, and the two moments of ``m = N - 1`` over ``n^2`` ``(S,)`` that the Wishart factor of two
    outputs needs (``E[Y^2] = E[m^2] + 2 E[m]``); S = 1 (exact, given ``N >= 1``) or :data:`_ORDERS` (the series in
    ``1/n``)."""
    if exact:
        p = -np.expm1(n * np.log(0.5))                      # P(N >= 1)
        m1, m2 = 0.5 * n / p, 0.25 * n * (n + 1) / p          # E[N | N >= 1], E[N^2 | N >= 1]
        EX, EY = m1 / n, (m1 - 1) / n
        EXX, EXY, EYY = (m2 + 2 * m1) / n**2, (m2 - m1) / n**2, (m2 - 1) / n**2
        one = np.array([1.0])
        vals = {(0, 0): one, (0, 1): EX * one, (0, 2): EY * one, (1, 1): EXX * one, (1, 2): EXY * one,
                (2, 2): EYY * one}
        wishart = (np.array([(m2 - 2 * m1 + 1) / n**2]), np.array([(m1 - 1) / n**2]))
    else:
        e = 1.0 / n
        vals = {(0, 0): [1.0, 0, 0], (0, 1): [0.5, 0, 0], (0, 2): [0.5, -e, 0], (1, 1): [0.25, 1.25 * e, 0],
                (1, 2): [0.25, -0.25 * e, 0], (2, 2): [0.25, 0.25 * e, -e * e]}
        # E[N] = n/2, E[N^2] = n(n + 1)/4 without the dead-layer term (2^-n has no series)
        wishart = (np.array([0.25, -0.75 * e, e * e]), np.array([0.0, 0.5 * e, -e * e]))
    size = 1 if exact else _ORDERS
    out = np.zeros((3, 3, size))
    for (f, g), v in vals.items():
        out[f, g] = out[g, f] = np.asarray(v, dtype=np.float64)[:size]
    return out, tuple(w[:size] for w in wishart)


def _mul(a, b):
    """Truncated product of series along the last axis (broadcasting the others)."""
    S = a.shape[-1]
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape))
    for i in range(S):
        out[..., i:] += a[..., i:i + 1] * b[..., :S - i]
    return out


def _moments(net: MLP, a: float, F0: float, lb, lw, exact: bool):
    """``(E[H], E[H^2], E[H_11 H_22], E[H_12^2], E[z^2], E[H_11 z_2^2], E[H_12 z_1 z_2])`` of every layer
    ``(L, S)`` for ``F_0 = |x|^2`` (module docstring; two outputs of the layer from the third on), S = 1 (exact,
    alive networks: the caller adds dead ones) or the series, with ``H`` the NTK less its layer's own bias term
    ``lambda_b^(l)``, a constant: where that constant dominates the mean (small C_W), ``E[H^2] - E[H]^2`` with it kept
    cancelled to round-off (C_W = 1e-8: the variance came out eps E[H]^2, 114 times its value)."""
    S = 1 if exact else _ORDERS
    L = net.L
    n = [int(w) for w in net.widths]
    C = [net.step(l).C_W for l in range(1, L + 1)]            # C[l - 1] = C_W^(l)
    unit = np.zeros(S)
    unit[0] = 1.0

    def const(v):
        return v * unit

    def inv_n(k):                                              # 1/n_k, order 1 in the series
        out = np.zeros(S)
        out[min(1, S - 1) if not exact else 0] = 1.0 / n[k]
        return out

    # one automaton: vector over states; two: matrix over state pairs
    v1 = np.zeros((5, S))
    v1[_B], v1[_W] = unit, unit
    # pairs of automata, over two outputs: E[Gamma_ab Gamma'_cd] is an O(2)-invariant tensor p d_ab d_cd
    # + q (d_ac d_bd + d_ad d_bc), and a layer where both paths take the Wishart factor maps (p, q) by the commuting
    # matrix E[m^2] I + E[m] J, J = [[0, 2], [1, 1]]; the accumulated map alpha I + beta J is carried as (v2, w2)
    v2, w2 = np.zeros((5, 5, S)), np.zeros((5, 5, S))
    for s in (_B, _W):
        for t in (_B, _W):
            v2[s, t] = unit
    mean, second, cross, off, z2, hz, hzz = (np.zeros((L, S)) for _ in range(7))
    top = np.array([0, 0, 0, 1, 1])
    zeta = (top[:, None] + top[None, :]) == 2
    for l in range(1, L + 1):
        # the final transition at layer l (the NTK of z^(l)): bias and weight terms of layer l, Gamma^(l) = 1 (Y), or
        # the last factor z_a z_b = C_W^(l) F_{l-1}/n_{l-1} c_a c_b (M, X; c iid unit normals): the top tensor is
        # (p, q) = (1, 0), or (1, 1) for two such factors (Isserlis; c^4 -> 3 = p + 2 q for one output)
        w_entry = lw[l - 1] * F0 / n[0]
        fin = np.array([0.0, w_entry, 1.0, C[l - 1], C[l - 1]])       # (the bias of layer l: added by the caller)
        mean[l - 1] = (fin[:, None] * v1).sum(axis=0)
        ff = (fin[:, None] * fin[None, :])[:, :, None]
        # (alpha I + beta J)(1, 0) = (alpha, beta); (alpha I + beta J)(1, 1) = (alpha + 2 beta)(1, 1)
        p = np.where(zeta[:, :, None], v2 + 2.0 * w2, v2)
        q = np.where(zeta[:, :, None], v2 + 2.0 * w2, w2)
        cross[l - 1], off[l - 1] = (ff * p).sum(axis=(0, 1)), (ff * q).sum(axis=(0, 1))
        second[l - 1] = cross[l - 1] + 2.0 * off[l - 1]
        # z_c z_d = C_W^(l) F_{l-1}/n_{l-1} c_c c_d is a second automaton that stays in W (X factors) below layer l
        # and reads out as a zeta factor: with H_ab, (p, q) = (1, 0) alpha or (1, 1) alpha (it never takes Y)
        zfin = C[l - 1] * F0 / n[0]
        z2[l - 1] = zfin * v1[_W]
        hz[l - 1] = zfin * (fin[:, None] * v2[:, _W]).sum(axis=0)
        hzz[l - 1] = zfin * (fin[:, None] * top[:, None] * v2[:, _W]).sum(axis=0)
        if l == L:
            break
        # layer l as a hidden layer: transitions, then its factors
        mom, (Em2, Em) = _layer_moments(n[l], exact)         # (3, 3, S)
        coef = [const(1.0), const(a * a * C[l - 1]), const(a * a * C[l]), a * a * inv_n(l), const(a * a * C[l - 1])]
        T = np.zeros((5, 5))                                   # T[from, to]: entry coefficients
        T[_B, _B] = T[_W, _W] = T[_Y, _Y] = T[_Y, _M] = T[_M, _X] = T[_X, _X] = 1.0
        T[_B, _Y] = T[_B, _M] = lb[l - 1]
        T[_W, _Y] = T[_W, _M] = lw[l - 1] * F0 / n[0]
        new1 = np.einsum("ft,fs->ts", T, v1)
        v1 = np.stack([_mul(_mul(new1[t], coef[t]), mom[0, _FACTOR[t]]) for t in range(5)])
        new2, neww = np.einsum("fa,gb,fgs->abs", T, T, v2), np.einsum("fa,gb,fgs->abs", T, T, w2)
        for s in range(5):
            for t in range(5):
                c = _mul(coef[s], coef[t])
                if _FACTOR[s] == _FACTOR[t] == 2:              # (alpha, beta)(E m^2, E m), with J^2 = J + 2 I
                    al, be = _mul(new2[s, t], c), _mul(neww[s, t], c)
                    v2[s, t] = _mul(al, Em2) + 2.0 * _mul(be, Em)
                    w2[s, t] = _mul(al, Em) + _mul(be, Em2 + Em)
                else:
                    f = _mul(c, mom[_FACTOR[s], _FACTOR[t]])
                    v2[s, t], w2[s, t] = _mul(new2[s, t], f), _mul(neww[s, t], f)
    return mean, second, cross, off, z2, hz, hzz


def relu_ntk_all_orders(net: MLP, x, lambda_b=1.0, lambda_W=1.0) -> ReluNTKAllOrders:
    """The exact mean and variance of the NTK ``H_ii;aa`` of each input alone through a bias-free ReLU ``net`` at its
    own widths, and over two outputs its A, B, D, F (module docstring), with their expansions in the inverse widths:
    a :class:`ReluNTKAllOrders`. Per-layer
    ``C_W``, ``lambda_b``, ``lambda_W``; any widths. Raises :class:`~pdlt.errors.ParameterError` for other
    activations, residual steps or a nonzero ``C_b``; :class:`~pdlt.errors.DivergentFlowError` where a moment leaves
    float64's range.

    >>> import pdlt
    >>> ex = relu_ntk_all_orders(pdlt.MLP("relu", (1, 8, 8, 8), C_W=2.0), [[1.0]], lambda_b=0.0)
    >>> float(round(ex.series["Theta"][2, 0, 0], 12))     # infinite width: each layer adds lambda_W |x|^2/n_0
    3.0
    >>> float(round(ex.variance[2, 0], 6))                    # exact: (58 n + 113)/(9 n^2) Theta^2 = 577/64 at n = 8
    9.015625
    """
    from .ntk import learning_rates

    a = _check_relu(net)
    xs = net.inputs(x)
    if np.any(np.einsum("ai,ai->a", xs, xs) == 0):
        raise ParameterError("an input is 0: every preactivation of a bias-free network is then exactly 0 and its NTK "
                             "deterministic (lambda_b^(l) above layer 1), outside the chain's binomial law of active "
                             "neurons; leave that input out", "x")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    L, d = net.L, xs.shape[0]
    Theta, var, A, B, D, F = (np.zeros((L, d)) for _ in range(6))
    ser_T, ser_V, ser_A, ser_B, ser_D, ser_F = (np.zeros((L, d, _ORDERS)) for _ in range(6))
    width = np.array([float(net.widths[l - 1]) for l in range(1, L + 1)])[:, None]      # n_{l-1}
    alive = np.ones(L)
    for l in range(2, L + 1):                                    # the NTK of layer l dies with any layer below it
        alive[l - 1] = alive[l - 2] * -np.expm1(int(net.widths[l - 1]) * np.log(0.5))
    top_bias = np.array(lb, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, xa in enumerate(xs):
            F0 = float(xa @ xa)
            # the moments of H' = H - lambda_b^(l) (the layer's own bias term, a constant; H' = 0 in a dead network,
            # whose H is that constant alone): variances and covariances are those of H', free of the constant
            m, s2, c2, o2, z2, hz, hzz = (v[:, 0] for v in _moments(net, a, F0, lb, lw, exact=True))
            sm, ss, sc, so, sz, shz, shzz = _moments(net, a, F0, lb, lw, exact=False)
            mean = alive * m
            Theta[:, i], var[:, i] = mean + top_bias, np.maximum(alive * s2 - mean**2, 0.0)
            # two outputs: a dead network has H_11 = H_22 = lambda_b, H_12 = 0 and z = 0
            A[:, i] = width[:, 0] * (alive * c2 - mean**2)
            B[:, i] = width[:, 0] * alive * o2
            D[:, i] = width[:, 0] * (alive * hz - mean * alive * z2)
            F[:, i] = width[:, 0] * alive * hzz
            ser_T[:, i] = sm
            ser_T[:, i, 0] += top_bias
            ser_V[:, i] = ss - _mul(sm, sm)
            ser_A[:, i] = width * (sc - _mul(sm, sm))
            ser_B[:, i] = width * so
            ser_D[:, i] = width * (shz - _mul(sm, sz))
            ser_F[:, i] = width * shzz
    from .nnlo import check_second_order_range

    check_second_order_range(Theta, "the NTK's cumulants", "scale the inputs x or the learning rates up (the exact "
                             "chain's statistics scale as powers of |x|^2 and of the learning rates)")
    # layer 1 is deterministic but for z: its variance and covariances are round-off of exact zeros
    for arr in (var, A, D):
        arr[0] = 0.0
    for name, arr in (("Theta", Theta), ("variance", var), ("A", A), ("B", B), ("D", D), ("F", F),
                      ("series", ser_T), ("series", ser_V), ("series", ser_A), ("series", ser_B), ("series", ser_D),
                      ("series", ser_F)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr.reshape(L, -1)), axis=1))
        if bad.size:
            raise DivergentFlowError(f"the NTK moments of the ReLU network leave float64's range at layer "
                                     f"l = {bad[0] + 1}: reduce the depth or the depth-to-width ratio (the second "
                                     "moment grows like exp(5 L/n)), move C_W toward criticality (2/a^2), or bring "
                                     "x and the learning rates toward order 1", layer=int(bad[0]) + 1)
    series = {"Theta": ser_T, "variance": ser_V, "A": ser_A, "B": ser_B, "D": ser_D, "F": ser_F}
    first = {"ntk_mean": ser_T[..., 0] + ser_T[..., 1], "variance": ser_V[..., 1],
             **{k: series[k][..., 1] for k in "ABDF"}}
    return ReluNTKAllOrders(net=net, x=xs, Theta=Theta, variance=var, A=A, B=B, D=D, F=F, series=series,
                            first_order=first)

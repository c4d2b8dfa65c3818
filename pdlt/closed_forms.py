"""Closed-form Gaussian averages of a scale-invariant activation: products at 3 and 4 inputs, and derivatives of
powers at 1 and 2 inputs.

For ``sigma(z) = a_+ z Theta(z) + a_- z Theta(-z) = p z + q |z|`` (``p = (a_+ + a_-)/2``, ``q = (a_+ - a_-)/2``,
PDLT section 5.2) every moment ``<s_0 s_1 ...>`` expands into Wick terms and averages of products of ``|z_i|``,
which follow from Gaussian integration by parts (``<z_i F> = sum_j K_ij <d_j F>``, ``d|z| = sgn z``,
``d sgn z = 2 delta(z)``) and, for ``<|z_0 z_1 z_2 z_3|>``, from a 1-D path integral in the couplings (Price's
theorem). These are reached through :meth:`pdlt.Activation.three_point` and :meth:`pdlt.Activation.four_point`;
``tests/theory/test_finite_width.py`` checks them against the nested quadrature rule of :mod:`pdlt.gaussian`.

Angles come from :func:`pdlt.activations.correlation_angle` (exact at ``|rho| = 1``), never from ``arcsin`` of a
rounded correlation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import gaussian
from .activations import correlation_angle, correlation_cosine, kernel_sqrt_det

__all__ = ["abs_pair", "three_point", "four_point", "abs4", "graded_path_rule", "power_derivative_averages"]


def abs_pair(kaa, kcc, kac):
    """``<|z_a||z_c|>`` (arc-cosine kernel of degree 1)."""
    return (2.0 / np.pi) * (kernel_sqrt_det(kaa, kcc, kac) + kac * correlation_angle(kaa, kcc, kac))


def _corr(kaa, kcc, kac):
    # only ever multiplied by sqrt(1 - rho^2) or used away from arcsin: the angle itself comes from
    # correlation_angle, which is exact at |rho| = 1 (arcsin of a rounded rho is ~1e-8 off there)
    return np.clip(kac / np.sqrt(kaa * kcc), -1.0, 1.0)


def three_point(ap, am, K3):
    """``[<s_0^2 s_1 s_2>, <s_0 s_1^2 s_2>, <s_0 s_1 s_2^2>]`` in closed form for ``s = p z + q |z|``
    (``p = (a_+ + a_-)/2``, ``q = (a_+ - a_-)/2``), ``K3`` (..., 3, 3) with positive variances.

    Terms with an odd number of ``|z|`` factors vanish (z -> -z), so
    ``<s_a^2 s_b s_c> = (p^2 + q^2) [p^2 <z_a^2 z_b z_c> + q^2 <z_a^2 |z_b||z_c|>]
    + 2 p^2 q^2 [<z_a|z_a| z_b |z_c|> + <z_a|z_a| |z_b| z_c>]``; each term follows from Gaussian integration by
    parts (``<z_i F> = sum_j K_ij <d_j F>``, ``d|z| = sgn z``, ``d sgn z = 2 delta(z)``):
    ``<z_a^2 g> = K_aa <g> + sum_{i,j in {b,c}} K_ai K_aj <d_i d_j g>`` for ``g = |z_b||z_c|``, with
    ``<sgn_b sgn_c> = (2/pi) asin rho_bc``, ``<2 delta(z_b) |z_c|> = (2/pi) sqrt(K_cc (1 - rho_bc^2)/K_bb)``;
    ``<z_a|z_a| z_b |z_c|> = 2 K_ab <|z_a||z_c|> + K_bc <z_a|z_a| sgn z_c>`` with
    ``<z_a|z_a| sgn z_c> = (2/pi) K_aa (asin rho_ac + rho_ac sqrt(1 - rho_ac^2))``.
    """
    p, q = (ap + am) / 2.0, (ap - am) / 2.0
    out = []
    for a, b, c in ((0, 1, 2), (1, 0, 2), (2, 0, 1)):
        kaa, kbb, kcc = K3[..., a, a], K3[..., b, b], K3[..., c, c]
        kab, kac, kbc = K3[..., a, b], K3[..., a, c], K3[..., b, c]
        wick = kaa * kbc + 2.0 * kab * kac
        g = abs_pair(kbb, kcc, kbc)
        s1 = correlation_cosine(kbb, kcc, kbc)
        d_bb = (2.0 / np.pi) * np.sqrt(kcc / kbb) * s1
        d_cc = (2.0 / np.pi) * np.sqrt(kbb / kcc) * s1
        d_bc = (2.0 / np.pi) * correlation_angle(kbb, kcc, kbc)
        a2 = kaa * g + kab * kab * d_bb + kac * kac * d_cc + 2.0 * kab * kac * d_bc

        def zabs_sgn(kxx, kyy, kxy):  # <z_x|z_x| sgn z_y>
            r = _corr(kxx, kyy, kxy)
            return (2.0 / np.pi) * kxx * (correlation_angle(kxx, kyy, kxy) + r * correlation_cosine(kxx, kyy, kxy))

        x_bc = 2.0 * kab * abs_pair(kaa, kcc, kac) + kbc * zabs_sgn(kaa, kcc, kac)  # <z_a|z_a| z_b |z_c|>
        x_cb = 2.0 * kac * abs_pair(kaa, kbb, kab) + kbc * zabs_sgn(kaa, kbb, kab)  # <z_a|z_a| z_c |z_b|>
        out.append((p * p + q * q) * (p * p * wick + q * q * a2) + 2.0 * p * p * q * q * (x_bc + x_cb))
    return np.stack(out, axis=-1)


def graded_path_rule():
    """Nodes/weights in t on [0, 1] for path integrals over a correlation parameter t (here and in the orthant
    probability of :mod:`pdlt.orthant`): t = 1 - u^2, composite Gauss-Legendre in u on
    geometric panels [0, 1e-8], [1e-8, 1e-7], ..., [0.1, 1] (the integrands vary on the scale
    u ~ sqrt(1 - rho^2) of the most correlated pair near t = 1). 24 nodes per panel: the 4-D orthant probability
    (:func:`pdlt.orthant.probability`) of one-factor correlations ``lambda_i lambda_j`` is then within 1e-16 of an
    mpmath integral down to eigenvalue 1e-4, where 16 nodes missed by 1e-12."""
    x, w = gaussian.gauss_legendre(24)
    edges = np.concatenate([[0.0], 10.0 ** np.arange(-8.0, 1.0)])
    us, ws = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        us.append(0.5 * (a + b) + 0.5 * (b - a) * x)
        ws.append(0.5 * (b - a) * w)
    u, wu = np.concatenate(us), np.concatenate(ws)
    return 1.0 - u * u, 2.0 * u * wu  # dt = 2 u du


_T_NODES, _T_WEIGHTS = graded_path_rule()


def _partial_angle(C, u, v, given):
    """``arcsin`` of the correlation of coordinates u, v given the coordinates ``given`` (1 or 2) for covariances C (..., n, n)."""
    g = list(given)
    Cgg = C[..., g, :][..., :, g]
    idx = [u, v]
    Cxg = C[..., idx, :][..., :, g]
    Cxx = C[..., idx, :][..., :, idx]
    cond = Cxx - Cxg @ np.linalg.solve(Cgg, np.swapaxes(Cxg, -1, -2))
    return correlation_angle(cond[..., 0, 0], cond[..., 1, 1], cond[..., 0, 1]), cond


def _sgn_sgn_abs(C):
    """``<sgn z_0 sgn z_1 |z_2|>`` for zero-mean (z_0, z_1, z_2) with covariance C (..., 3, 3) (closed form):
    ``|z_2| = z_2 sgn z_2`` and Stein give ``sum_n C_2n 2 p_n(0) <sgn sgn (the other two) | z_n = 0>``."""
    out = 0.0
    for n, (x, y) in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):
        th, _ = _partial_angle(C, x, y, (n,))
        out = out + C[..., 2, n] * 2.0 / np.sqrt(2.0 * np.pi * C[..., n, n]) * (2.0 / np.pi) * th
    return out


def abs4(K):
    """``<|z_0 z_1 z_2 z_3|>`` for (B, 4, 4) kernels with positive variances, by a path integral in the
    off-diagonal couplings, ``K(t) = diag K + t offdiag K`` (Price's theorem, d<f>/dK_ij = <d_i d_j f>):

        <|z z z z|>(1) = prod_i sqrt(2 K_ii/pi) + int_0^1 dt sum_{i<j} K_ij <sgn_i sgn_j |z_k||z_l|>_t ,

    with ``<sgn_i sgn_j |z_k||z_l|> = sum_{m in i,j,k} K_km <2 delta_m ...> + K_kl(t) S4(t)`` (Stein on
    ``|z_k| = z_k sgn z_k``), the delta terms closed-form 3-variable conditional averages
    (:func:`_sgn_sgn_abs`), and the orthant term ``S4 = <sgn sgn sgn sgn>`` itself a path integral of
    ``dS4/dK_ij = 4 p_ij(0, 0) (2/pi) asin rho_{kl|ij}`` (Plackett); swapping the order of the two t-integrals
    leaves one 1D integral, done on graded Gauss-Legendre panels (:func:`graded_path_rule`).
    """
    B = K.shape[0]
    diag = np.diagonal(K, axis1=-2, axis2=-1)
    off = K - np.einsum("bi,ij->bij", diag, np.eye(4))
    t = _T_NODES
    Kt = diag[:, None, :, None] * np.eye(4) + t[None, :, None, None] * off[:, None]  # (B, T, 4, 4)
    pairs = list(itertools.combinations(range(4), 2))
    comp = {(i, j): tuple(m for m in range(4) if m not in (i, j)) for i, j in pairs}
    c = 2.0 * (K[:, 0, 1] * K[:, 2, 3] + K[:, 0, 2] * K[:, 1, 3] + K[:, 0, 3] * K[:, 1, 2])
    integrand = np.zeros((B, t.size))
    for i, j in pairs:
        k, l = comp[(i, j)]
        kij = K[:, i, j][:, None]
        # S4'(t) contribution of the pair (i, j):  K_ij 4 p_ij(0,0) (2/pi) asin rho_{kl|ij}
        det = Kt[..., i, i] * Kt[..., j, j] - Kt[..., i, j] ** 2
        th, _ = _partial_angle(Kt, k, l, (i, j))
        s4p = kij * 4.0 / (2.0 * np.pi * np.sqrt(det)) * (2.0 / np.pi) * th
        integrand += c[:, None] * 0.5 * (1.0 - t * t) * s4p
        # delta terms of <sgn_i sgn_j |z_k||z_l|>_t (peeling |z_k|)
        R = 0.0
        for m, (x, y) in ((i, (j, k)), (j, (i, k)), (k, (i, j))):
            idx = [x, y, l]
            Cxx = Kt[..., idx, :][..., :, idx]
            cm = Kt[..., idx, m]
            C = Cxx - cm[..., :, None] * cm[..., None, :] / Kt[..., m, m][..., None, None]
            R = R + Kt[..., k, m] * 2.0 / np.sqrt(2.0 * np.pi * Kt[..., m, m]) * _sgn_sgn_abs(C)
        integrand += kij * R
    return np.prod(np.sqrt(2.0 * diag / np.pi), axis=-1) + integrand @ _T_WEIGHTS


def four_point(ap, am, K):
    """``<s_0 s_1 s_2 s_3>`` for ``s = p z + q |z|`` and (B, 4, 4) kernels with positive variances: terms with an
    odd number of |z| vanish; ``<|z_i||z_j| z_k z_l> = K_kl <g> + sum_{m,m' in i,j} K_km K_lm' <d_m d_m' g>``
    (``g = |z_i||z_j|``, closed forms as in :func:`three_point`); ``<|z z z z|>`` by
    :func:`abs4`."""
    p, q = (ap + am) / 2.0, (ap - am) / 2.0
    wick = K[:, 0, 1] * K[:, 2, 3] + K[:, 0, 2] * K[:, 1, 3] + K[:, 0, 3] * K[:, 1, 2]
    mixed = 0.0
    for i, j in itertools.combinations(range(4), 2):
        k, l = (m for m in range(4) if m not in (i, j))
        kii, kjj, kij = K[:, i, i], K[:, j, j], K[:, i, j]
        s1 = correlation_cosine(kii, kjj, kij)
        d_ii = (2.0 / np.pi) * np.sqrt(kjj / kii) * s1
        d_jj = (2.0 / np.pi) * np.sqrt(kii / kjj) * s1
        d_ij = (2.0 / np.pi) * correlation_angle(kii, kjj, kij)
        mixed = mixed + (K[:, k, l] * abs_pair(kii, kjj, kij) + K[:, k, i] * K[:, l, i] * d_ii
                         + K[:, k, j] * K[:, l, j] * d_jj + (K[:, k, i] * K[:, l, j] + K[:, k, j] * K[:, l, i]) * d_ij)
    out = p**4 * wick + p * p * q * q * mixed
    if q != 0.0:
        out = out + q**4 * abs4(K)
    return out


# ---------------------------------------------------------------------------------------------------
# derivatives of powers over one or two inputs (the 1/n^2 recursions: pdlt.theory.nnlo_inputs)
# ---------------------------------------------------------------------------------------------------

_PHI0 = 1.0 / np.sqrt(2.0 * np.pi)


def _he0(m: int) -> float:
    """``He_m(0)``: 0 for odd m, ``(-1)^(m/2) (m - 1)!!`` for even m."""
    if m % 2:
        return 0.0
    return float((-1) ** (m // 2) * np.prod(np.arange(m - 1, 0, -2, dtype=np.float64)))


def _abs_moment(k: int) -> float:
    """``E|w|^k`` for a standard normal w."""
    return float(2.0 ** (k / 2.0) * math.gamma((k + 1) / 2.0) / math.sqrt(math.pi))


def _power_factor(p: int, n: int, ap: float, am: float):
    """``(sigma^p)^(n)`` as ``("F", k, A, B, c)``: ``c y^k (A Theta(y) + B Theta(-y))``, or ``("D", m, c)``:
    ``c delta^(m)(y)``. ``sigma^p = y^p (a_+^p Theta(y) + a_-^p Theta(-y))``; ``(y^k Theta)' = k y^(k-1) Theta`` for
    ``k >= 1`` and the step's derivative is ``(A - B) delta``."""
    return _derivative(("F", p, ap**p, am**p, 1.0), n)


def _derivative(f, j: int):
    """The j-th derivative of a factor of :func:`_power_factor`."""
    if f[0] == "D":
        return ("D", f[1] + j, f[2])
    _, k, A, B, c = f
    if j <= k:
        return ("F", k - j, A, B, c * math.factorial(k) / math.factorial(k - j))
    return ("D", j - k - 1, c * math.factorial(k) * (A - B))


def _mean_1d(f, var):
    """``E[f(y)]``, ``y ~ N(0, var)`` (var ``(B,)``): ``c var^(k/2) (A + (-1)^k B) E|w|^k / 2`` for an F factor,
    ``c var^(-(m+1)/2) He_m(0) phi(0)`` for ``c delta^(m)``."""
    if f[0] == "F":
        _, k, A, B, c = f
        return c * var ** (k / 2.0) * (A + (-1) ** k * B) * _abs_moment(k) / 2.0
    _, m, c = f
    return c * var ** (-(m + 1) / 2.0) * _he0(m) * _PHI0


def _mean_delta_pair(fa, fb, kaa, kab, kbb):
    """``E[c delta^(m)(z_a) g(z_b)]`` with ``z_b = r z_a + s w`` (``r = K_ab/K_aa``, ``s^2`` the Schur complement):
    ``c (-1)^m d^m/dz^m [phi_a(z) H(z)]`` at 0 with ``H(z) = E_w g(r z + s w)``, so by Leibniz
    ``c (-1)^m sum_j C(m, j) phi_a^(m-j)(0) r^j E_w[g^(j)(s w)]`` and ``phi_a^(i)(0) = K_aa^(-(i+1)/2) He_i(0) phi(0)``
    (i even; 0 for odd i)."""
    _, m, c = fa
    r = kab / kaa
    s2 = kbb - kab * r
    tot = 0.0
    for j in range(m + 1):
        i = m - j
        if i % 2:
            continue
        phi_a = kaa ** (-(i + 1) / 2.0) * _he0(i) * _PHI0
        tot = tot + math.comb(m, j) * phi_a * r**j * _mean_1d(_derivative(fb, j), s2)
    return c * (-1) ** m * tot


def power_derivative_averages(ap: float, am: float, powers, counts, K) -> np.ndarray:
    r"""``<prod_u (sigma^{p_u})^{(n_u)}(z_u)>_K`` for ``sigma = a_+ z Theta(z) + a_- z Theta(-z)`` over ``q = 1`` to
    ``4`` inputs: ``powers``, ``counts`` ``(nk, q)`` (every ``p_u >= 1``), ``K`` ``(B, q, q)``; returns ``(B, nk)``.
    Three and four inputs: exact orthant moments (:func:`pdlt.orthant.scale_invariant_averages`).

    Each factor is ``c y^k (A Theta(y) + B Theta(-y))`` or ``c delta^(m)(y)`` (:func:`_power_factor`). A product of
    two of the first kind is piecewise homogeneous: :func:`pdlt.gaussian.expect`'s polar rule is exact to rounding.
    A delta factor is integrated out in closed form (:func:`_mean_delta_pair`), so no Hermite weight ``K^-1``
    appears: the averages stay exact as the inputs' correlation approaches 1 (where they grow like a power of
    ``1 - rho^2``, as they should), instead of losing digits to cancellation (derivations/README.md §13.6).
    """
    powers, counts = np.asarray(powers), np.asarray(counts)
    K = np.asarray(K, dtype=np.float64)
    q = K.shape[-1]
    if q >= 3:
        from .orthant import scale_invariant_averages

        return scale_invariant_averages(ap, am, powers, counts, K)
    factors = [[_power_factor(int(p), int(n), ap, am) for p, n in zip(pr, cr)] for pr, cr in zip(powers, counts)]
    out = np.empty((K.shape[0], len(factors)))
    homogeneous = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i, fs in enumerate(factors):
            if q == 1:
                out[:, i] = _mean_1d(fs[0], K[:, 0, 0])
            elif fs[0][0] == "D":
                out[:, i] = _mean_delta_pair(fs[0], fs[1], K[:, 0, 0], K[:, 0, 1], K[:, 1, 1])
            elif fs[1][0] == "D":
                out[:, i] = _mean_delta_pair(fs[1], fs[0], K[:, 1, 1], K[:, 0, 1], K[:, 0, 0])
            else:
                homogeneous.append(i)
    if homogeneous:
        fa = [factors[i][0] for i in homogeneous]
        fb = [factors[i][1] for i in homogeneous]

        def piece(y, f):
            return f[4] * y ** f[1] * np.where(y > 0, f[2], f[3])

        def prods(z):
            return np.stack([piece(z[..., 0], a) * piece(z[..., 1], b) for a, b in zip(fa, fb)], axis=-1)

        out[:, homogeneous] = gaussian.expect(prods, K, kinks=(0,))
    return out

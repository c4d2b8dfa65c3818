"""Closed-form Gaussian averages of products of a scale-invariant activation at 3 and 4 inputs.

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

import numpy as np

from . import gaussian
from .activations import correlation_angle, correlation_cosine, kernel_sqrt_det

__all__ = ["abs_pair", "three_point", "four_point", "abs4", "graded_path_rule"]


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
    moments of :mod:`pdlt.theory.ntk_statistics`): t = 1 - u^2, composite Gauss-Legendre in u on
    geometric panels [0, 1e-8], [1e-8, 1e-7], ..., [0.1, 1] (the integrands vary on the scale
    u ~ sqrt(1 - rho^2) of the most correlated pair near t = 1)."""
    x, w = gaussian.gauss_legendre(16)
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

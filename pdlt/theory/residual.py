r"""Residual MLPs at order 1/n: the kernel K, the NLO kernel G1 and the four-point vertex V (PDLT app. B).

Network (uniform width n, several inputs a = 1..d; PDLT conventions, layer l at array index l - 1):

    z^(1)_i   = b^(1)_i + sum_j W^(1)_ij x_j                        (exactly Gaussian, kernel K1)
    z^(l+1)_i = gamma_{l+1} z^(l)_i + xi_{l+1} (b^(l+1)_i + sum_j W^(l+1)_ij sigma(z^(l)_j)),

``W ~ N(0, C_W/n)``, ``b ~ N(0, C_b)``. Outputs follow :mod:`pdlt.theory.finite_width`:
``E[z_ia z_ib] = K_ab + G1_ab/n`` and, for neurons i != j, ``E[z_ia z_ib z_jc z_jd] - E[z_ia z_ib] E[z_jc z_jd]
= V_(ab)(cd)/n`` (all to order 1/n). With every gamma = 0 (and xi = 1) this is the plain MLP.

**Why (K, V) do not close.** Given layer l, ``z'_i = gamma z_i + xi eps_i`` with ``eps_i ~ N(0, G^)`` iid
over i and ``G^ = C_b + (C_W/n) sum_k s_k s_k^T`` (``s_k = sigma(z_k)``). The shortcut keeps neuron i's own
past in z'_i while its sigma enters G^, so a neuron stays correlated with the fields its own past created,
and fields of different layers are correlated through the same neurons' trajectories.

**The theory (derivation: ``derivations/residual.py``).** Write ``z^(l)`` of one neuron as a function of its
own noises: ``z^(q) = Gamma_{0->q} z^(0) + sum_{m<q} xi_{m+1} Gamma_{m+1->q} eps^(m)`` (0-based layers,
``Gamma_{p->q} = gamma_{p+1} ... gamma_q``). At leading order the metrics are ``g^(m) = C_b + C_W <s s>_{K^(m)}``
and a neuron's trajectory is a Gaussian process, ``Cov(z^(p), z^(q)) = Gamma_{p->q} K^(p)`` (p <= q). The
metric of step m fluctuates, ``G^(m) = g^(m) + phi^(m)/sqrt(n) + O(1/n)``. Linearizing every neuron's response:

* ``phi = T eta`` with ``T = (1 - R)^{-1}`` (block lower-triangular over layers, each block a map on d x d
  matrices): ``R_{m m'} = (C_W^(m+1)/2) xi_{m'+1}^2 Gamma_{m'+1->m}^2 D^(m)`` (m' < m) is the response of
  ``C_W <ss>`` at layer m to a change of the metric at step m', ``D^(m)_{xy,gh} = <d_g d_h (s_x s_y)>_{K^(m)}``;
  ``eta^(m) = C_W n^{-1/2} sum_k (s s(z_k^(m)) - <ss>)`` is the CLT noise, Gaussian with
  ``Sigma_eta[m, m'] = C_W^(m+1) C_W^(m'+1) Cov(s s(z^(m)), s s(z^(m')))`` over the trajectory Gaussian;
* a neuron j adds ``(C_W/n) (s s(z_j^(m)) - <ss>)`` to every field it drives; through T this "self field"
  reaches all later layers, and it is correlated with neuron j's own trajectory.

The weight of the field of step m in ``<z_a z_b>^(q)`` is ``w^(q)_m = xi_{m+1}^2 Gamma_{m+1->q}^2``. Then

    V^(q)_(ab)(cd) = W^(q) + Y^(q) + Y^(q)^T,   W^(q) = sum_{m,m'<q} w_m w_m' Sigma_phi[m, m'],
    Sigma_phi = T Sigma_eta T^T,   Y^(q) = sum_{m'<=m<q} w_m T_{m m'} C_W^(m'+1) Gamma_{m'->q}^2 X^(m'),
    X^(p)_{gh, cd} = Cov(s_g s_h, z_c z_d)_{K^(p)} = sum_{ef} D^(p)_{gh,ef} K^(p)_ec K^(p)_fd ,

and the single-neuron correction ``delta_q[f] = n (E f(z^(q)) - <f>_{K^(q)})`` for ``f = s_x s_y`` is

    delta_q = (1/8) Q^(q) : W^(q) + (1/2) D^(q) : G1^(q) + (1/2) sum_{m'<q} (U^(q) C_W^(m'+1) H^(q, m'))
    G1^(q+1) = gamma_{q+1}^2 G1^(q) + xi_{q+1}^2 C_W^(q+1) delta_q ,

(Q the fourth-derivative averages of ``s_x s_y`` as in :func:`pdlt.theory.finite_width.nlo_kernel_map`),
with ``U^(q) = sum_{m<q} w_m T_{m .}`` and the cross-layer Hessian covariance
``H^(q,m')_{gh, ef, xy} = Cov(s_g s_h(z^(m')), d_e d_f (s_x s_y)(z^(q)))`` over the trajectory Gaussian: the
three terms are the second-order response to the field fluctuations, the mean shift of the fields and the
self field. ``W^(q)`` is the plain-MLP vertex when every gamma vanishes; then ``Y = H = 0`` and the
recursions reduce to :func:`pdlt.theory.finite_width.vertex_map` / ``nlo_kernel_map`` with r = 1.

Several inputs: ``R`` maps a pair (g, h) only onto pairs containing both g and h (``D_{ef,gh} = 0`` unless
``g, h in {e, f}``), and so do ``T`` and ``U``. Hence ``G1_xy`` needs ``H`` only on the four variables
``(z^(m')_x, z^(m')_y, z^(q)_x, z^(q)_y)``, and only five averages per input pair (x != y):
``<s_x^2 s''_x s_y>, <s_y^2 s_x s''_y>, <s_x^2 s'_x s'_y>, <s_y^2 s'_x s'_y>`` (3 variables) and
``<s_x s_y(z^(m')) s'_x s'_y(z^(q))>`` (4 variables, one Gaussian coordinate integrated inside a 3-D rule);
for the scale-invariant class ``s'' = (a_+ - a_-) delta`` turns the first two into 2-D conditional averages.
The diagonal ``G1_aa`` is the one-input result of input a.

Critical residual networks (every gamma^2 < 1): ``C_W, C_b = ((1 - gamma^2)/xi^2) (C_W, C_b)_plain``; for the
scale-invariant class with ``s^2 = A_2 z^2 + B z|z|`` (``B = (a_+^2 - a_-^2)/2``), ``V^(l)/K^2 = nu(gamma) l + O(1)``,

    nu(gamma) = 2 (1 - gamma^4) + ((1 - gamma^2) B / A_2)^2 [3 + 2 sum_{n odd} (h_n^2/n!) gamma^n/(1 - gamma^n)],
    h_1 = 2 sqrt(2/pi),  h_n = 4 phi(0) (-1)^((n-3)/2) (n-4)!!  (n >= 3),  h_n = <z|z| He_n(z)>,

derived in ``derivations/residual.py`` (gamma = 0: ``3 A_4/A_2^2 - 1``).

**Any neuron state.** Nothing above uses that the state is the preactivations: :func:`trajectory_statistics`
takes a state of N components per neuron, its "activation" s (through its Gaussian averages) and the linear map
``lmap`` that turns ``(1/n) sum_k s s^T`` into the metric (``C_W`` here). :mod:`pdlt.theory.residual_ntk` uses it
for the state (preactivation, NTK tangents) of the residual NTK statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr as _ndtr

from .. import gaussian
from ..activations import activation as _lookup
from ..errors import DivergentFlowError, ParameterError, SingularKernelError
from ..layers import Residual
from .conditioned import several_inputs
from .finite_width import SINGULAR_COND, layer_averages, refuse_capped
from .kernel import pair_average

__all__ = [
    "residual_kernels",
    "residual_statistics",
    "trajectory_statistics",
    "residual_vertex_kv_only",
    "residual_susceptibilities",
    "ResidualCriticality",
    "residual_criticality",
    "residual_nu",
]


# ---------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------


def _per_layer(v, name, L=None):
    try:
        arr = np.array(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"{name} must be a sequence of real numbers, one per layer ({err})", name) from None
    if arr.size == 0 or (L is not None and arr.size != L):
        want = "at least one layer" if L is None else f"{L} entries (one per layer, like C_W)"
        raise ParameterError(f"{name} has {arr.size} entries; it needs {want}", name)
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} must be finite, got {list(arr)}", name)
    return arr


def _inputs(act, K1, C_W, C_b, gamma, xi):
    act = _lookup(act)
    C_W = _per_layer(C_W, "C_W")
    L = C_W.size
    C_b, gamma, xi = (_per_layer(v, n, L) for v, n in ((C_b, "C_b"), (gamma, "gamma"), (xi, "xi")))
    for arr, name in ((C_W, "C_W"), (C_b, "C_b")):
        if np.any(arr < 0):
            raise ParameterError(f"{name} is a variance and must be >= 0 at every layer, got {list(arr)}", name)
    K1 = gaussian.check_kernel(np.atleast_2d(np.asarray(K1, dtype=np.float64)), "K1")
    if K1.ndim != 2:
        raise ParameterError(f"K1 must be one (d, d) kernel, got shape {K1.shape}", "K1")
    return act, K1, C_W, C_b, gamma, xi


def gamma_products(gamma):
    """``Gam[p, q] = gamma[p+1] ... gamma[q]`` for p <= q (1 on the diagonal), 0 for p > q."""
    L = gamma.size
    Gam = np.zeros((L, L))
    for p in range(L):
        Gam[p, p] = 1.0
        for q in range(p + 1, L):
            Gam[p, q] = Gam[p, q - 1] * gamma[q]
    return Gam


def residual_kernels(act, K1, C_W, C_b, gamma, xi) -> np.ndarray:
    """Leading order ``K^(l+1) = gamma^2 K^(l) + xi^2 (C_b + C_W <s s>_{K^(l)})``; returns ``(L, d, d)``."""
    act, K1, C_W, C_b, gamma, xi = _inputs(act, K1, C_W, C_b, gamma, xi)
    return _kernels(act, K1, C_W, C_b, gamma, xi)[0]


def _kernels(act, K1, C_W, C_b, gamma, xi):
    L, d = C_W.size, K1.shape[0]
    K = np.empty((L, d, d))
    g = np.empty((max(L - 1, 0), d, d))
    K[0] = K1
    for p in range(L - 1):
        step = Residual(C_W[p + 1], C_b[p + 1], gamma[p + 1], xi[p + 1])
        ss = pair_average(act, K[p])
        g[p] = C_b[p + 1] + C_W[p + 1] * ss
        K[p + 1] = step.kernel_map(K[p], ss)
        if not np.all(np.isfinite(K[p + 1])):
            raise DivergentFlowError(f"the residual kernel is not finite at layer l = {p + 2}; move C_W, gamma "
                                     "toward criticality (residual_criticality) or reduce the depth", layer=p + 2)
    return K, g


# ---------------------------------------------------------------------------------------------------
# Gaussian averages over one neuron's trajectory
# ---------------------------------------------------------------------------------------------------


def trajectory_joint(K, Gam, p, q):
    """Covariance of ``(z^(p), z^(q))`` (p <= q) on one neuron's leading-order trajectory, ``(2d, 2d)``."""
    d = K.shape[-1]
    J = np.empty((2 * d, 2 * d))
    J[:d, :d], J[d:, d:] = K[p], K[q]
    J[:d, d:] = Gam[p, q] * K[p]
    J[d:, :d] = J[:d, d:].T
    return J


def _cross_singular(err, gamma, xi):
    return SingularKernelError(
        "the residual trajectory covariance of two layers is (nearly) singular: a neuron's preactivations at two "
        "layers are almost proportional (gamma close to +-1 with a small xi, so the branch adds almost no "
        f"noise); gamma = {list(gamma)}, xi = {list(xi)}. Use |gamma| further from 1 or a larger xi ({err})")


def _hessian_kinks_supported(act):
    if act.kinks and not act.scale_invariant:
        raise ParameterError(
            f"the residual G1 needs <s s (s s)''> across layers; for the kinked activation {act.name} that is not "
            "scale-invariant the delta functions of s'' are not implemented (use a smooth or scale-invariant "
            "activation, or need_G1=False)", "act")


def _hessian_covariance_1d(act, K, Gam, avg, todo, gamma, xi, a=0):
    """``Cov(s^2(z^(p)), (s^2)''(z^(q)))`` of input ``a`` for every (p, q) in ``todo`` (p < q)."""
    _hessian_kinks_supported(act)

    def f(z):
        u, v = z[..., 0], z[..., 1]
        sv, dv = act(v), act.d1(v)
        h = dv * dv if act.scale_invariant else dv * dv + sv * act.d2(v)  # s(0) = 0 kills s s'' for kinks
        return act(u) ** 2 * 2.0 * h

    ix = np.array([a, a + K.shape[-1]])
    J = np.stack([trajectory_joint(K, Gam, p, q)[np.ix_(ix, ix)] for p, q in todo])
    if act.kinks:
        vals = np.asarray(gaussian.expect(f, J, kinks=act.kinks)).reshape(-1)
    else:   # <s(u)^2 s'(v)^2> + <s(u)^2 s(v) s''(v)> at the z-spacing of pdlt.theory.conditioned
        def f2(z):
            su, v = act(z[..., 0]) ** 2, z[..., 1]
            return np.stack([su * act.d1(v) ** 2, su * act(v) * act.d2(v)], axis=-1)

        v, err = several_inputs(act, J, [[(0, 0), (1, 1)], [(0, 0), (0, 2)]], f2, singular_cond=SINGULAR_COND)
        refuse_capped(act, f"of input {a} at two layers", err, J, [q + 1 for _, q in todo])
        vals = 2.0 * (v[:, 0] + v[:, 1])
    out = {}
    for k, (p, q) in enumerate(todo):
        out[(p, q)] = vals[k] - avg.P2[p, a, a] * avg.D[q, a, a, a, a]
    return out


# Trapezoidal resolution (in z units) of the inner 1-D average E s'(mu + tau xi): the error is
# ~exp(-2 pi delta/h) for an integrand analytic in |Im z| < delta (pi/2 for tanh), < 1e-15 at h = 0.25.
_INNER_HZ = 0.25


def _smoothed_slope(act, mu, tau):
    """``E s'(mu + tau xi)``, ``xi ~ N(0, 1)``, elementwise in ``mu``: closed form for the scale-invariant
    class (``a_- + (a_+ - a_-) Phi(mu/tau)``), a trapezoidal rule on ``|xi| <= 9`` otherwise."""
    if act.scale_invariant:
        ap, am = act.slopes
        if tau == 0.0:
            return np.where(mu > 0, ap, am)
        return am + (ap - am) * _ndtr(mu / tau)
    if tau == 0.0:
        return act.d1(mu)
    h = min(0.5, _INNER_HZ / tau)
    t = h * np.arange(-math.floor(9.0 / h), math.floor(9.0 / h) + 1)
    w = h * np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    return act.d1(mu[..., None] + tau * t) @ w


def _condition_on_rest(J, i):
    """``z_i = beta . z_rest + tau xi`` for ``z ~ N(0, J)``; returns ``(rest, beta, tau)``."""
    rest = [j for j in range(J.shape[0]) if j != i]
    Jr, c = J[np.ix_(rest, rest)], J[rest, i]
    beta = np.linalg.lstsq(Jr, c, rcond=1e-13)[0]
    return rest, beta, math.sqrt(max(J[i, i] - c @ beta, 0.0))


def _cross_pair_averages(act, J):
    """The five cross-layer Hessian averages of one input pair (x, y) on ``(u_x, u_y, v_x, v_y) ~ N(0, J)``,
    ``J`` (4, 4), ``u = z^(m')``, ``v = z^(q)``:

        t1 = <s(u_x)^2 s''(v_x) s(v_y)>,   t2 = <s(u_y)^2 s(v_x) s''(v_y)>,
        t3 = <s(u_x)^2 s'(v_x) s'(v_y)>,   t4 = <s(u_y)^2 s'(v_x) s'(v_y)>,   t5 = <s(u_x) s(u_y) s'(v_x) s'(v_y)>.

    Returns ``(t, err)``, ``err`` the estimated relative error of a capped rule (0 where none was needed).

    Smooth activations: :func:`pdlt.theory.conditioned.several_inputs` (the default 3-D rule of gaussian.expect was
    5e-4 off for tanh at K ~ 30 and 8 % at K ~ 100); where it does not apply, t1..t4 by that 3-D rule and t5
    conditioning ``v_y`` (or ``v_x``, whichever keeps more conditional variance) on the other three, ``s'``
    averaged over that Gaussian on a 1-D trapezoid inside the 3-D rule. Scale-invariant class (``s'' = (a_+ - a_-)
    delta``):
    t1 = (a_+ - a_-) p_{v_x}(0) <s(u_x)^2 s(v_y) | v_x = 0> by the exact 2-D polar rule; t3, t4 by the nested
    3-D rule; t5 with the inner average in closed form (``Phi``) inside the nested 3-D rule.
    """
    s, d1 = act, act.d1
    kin = act.kinks
    out = np.empty(5)
    err = 0.0
    for k, (a, vs) in enumerate(((0, 2), (1, 3))):  # (u_x, v_x, v_y) with s'' on v_x; (u_y, ...) on v_y
        ix = [a, 2, 3]
        J3 = J[np.ix_(ix, ix)]
        if kin:
            jump = act.slopes[0] - act.slopes[1]
            other = 3 if vs == 2 else 2
            c = J[[a, other], vs]
            Jc = J[np.ix_([a, other], [a, other])] - np.outer(c, c) / J[vs, vs]
            cond = gaussian.expect(lambda z: s(z[..., 0]) ** 2 * s(z[..., 1]), Jc, kinks=kin)
            out[k] = jump / math.sqrt(2.0 * math.pi * J[vs, vs]) * float(cond)
            out[2 + k] = float(gaussian.expect(lambda z: s(z[..., 0]) ** 2 * d1(z[..., 1]) * d1(z[..., 2]), J3,
                                               kinks=kin))
        else:
            d2 = act.d2
            if vs == 2:
                def f(z):
                    su, dx, dy = s(z[..., 0]) ** 2, d1(z[..., 1]), d1(z[..., 2])
                    return np.stack([su * d2(z[..., 1]) * s(z[..., 2]), su * dx * dy], axis=-1)
            else:
                def f(z):
                    su, dx, dy = s(z[..., 0]) ** 2, d1(z[..., 1]), d1(z[..., 2])
                    return np.stack([su * s(z[..., 1]) * d2(z[..., 2]), su * dx * dy], axis=-1)
            two = [(2,), (0,)] if vs == 2 else [(0,), (2,)]
            v, e = several_inputs(act, J3[None], [[(0, 0)] + two, [(0, 0), (1,), (1,)]], f,
                                  singular_cond=SINGULAR_COND)
            err = max(err, float(e[0]))
            out[k], out[2 + k] = v[0]
    if not kin:   # t5 over the four coordinates at once
        v, e = several_inputs(act, J[None], [[(0,), (0,), (1,), (1,)]],
                              lambda z: (s(z[..., 0]) * s(z[..., 1]) * d1(z[..., 2]) * d1(z[..., 3]))[..., None],
                              singular_cond=SINGULAR_COND, fill=False)
        if np.all(np.isfinite(v)):
            out[4] = v[0, 0]
            return out, max(err, float(e[0]))
    # t5: the innermost coordinate is the v with the larger relative conditional variance
    cands = [_condition_on_rest(J, i) + (i,) for i in (2, 3)]
    rest, beta, tau, i = max(cands, key=lambda c: c[2] ** 2 / J[c[3], c[3]])
    J3 = J[np.ix_(rest, rest)]

    def g(z):  # z = (u_x, u_y, v_other)
        return s(z[..., 0]) * s(z[..., 1]) * d1(z[..., 2]) * _smoothed_slope(act, z @ beta, tau)

    out[4] = float(gaussian.expect(g, J3, kinks=kin))
    return out, err


def _hessian_covariances(act, K, Gam, avg, todo, gamma, xi):
    """``H[(p, q)]`` (d, d, d, d, d, d) ``[g, h, e, f, x, y] = Cov(s_g s_h(z^(p)), d_e d_f (s_x s_y)(z^(q)))`` over
    the trajectory Gaussian, for every (p, q) in ``todo`` (p < q), filled where the self-field weights
    ``U[(e, f), (p, (g, h))]`` can be nonzero: ``{e, f} in {x, y}`` and ``{g, h} in {e, f}`` (R, hence T and U, maps
    a pair (g, h) only onto pairs containing both g and h, because ``D_{ef, gh} = 0`` unless ``g, h in {e, f}``).
    Other entries are left 0: they only ever meet zero weights."""
    _hessian_kinks_supported(act)
    d = K.shape[-1]
    out = {pq: np.zeros((d,) * 6) for pq in todo}
    for a in range(d):
        for pq, v in _hessian_covariance_1d(act, K, Gam, avg, todo, gamma, xi, a).items():
            out[pq][a, a, a, a, a, a] = v
    for p, q in todo:
        J = trajectory_joint(K, Gam, p, q)
        P2, D = avg.P2[p], avg.D[q]
        H = out[(p, q)]
        for x in range(d):
            for y in range(x + 1, d):
                ix = [x, y, d + x, d + y]
                try:
                    t, err = _cross_pair_averages(act, J[np.ix_(ix, ix)])
                except SingularKernelError as e:
                    raise _cross_singular(e, gamma, xi) from None
                refuse_capped(act, f"of inputs {x} and {y} at layers {p + 1} and {q + 1}", np.array([err]),
                              J[np.ix_(ix, ix)][None], [q + 1])
                H[x, x, x, x, x, y] = t[0] - P2[x, x] * D[x, y, x, x]
                H[y, y, y, y, x, y] = t[1] - P2[y, y] * D[x, y, y, y]
                for e, f in ((x, y), (y, x)):
                    H[x, x, e, f, x, y] = t[2] - P2[x, x] * D[x, y, x, y]
                    H[y, y, e, f, x, y] = t[3] - P2[y, y] * D[x, y, x, y]
                    for g, h in ((x, y), (y, x)):
                        H[g, h, e, f, x, y] = t[4] - P2[x, y] * D[x, y, x, y]
                H[..., y, x] = H[..., x, y]
    return out


# ---------------------------------------------------------------------------------------------------
# the order-1/n statistics
# ---------------------------------------------------------------------------------------------------


def residual_statistics(act, K1, C_W, C_b, gamma, xi, *, need_G1: bool = True):
    """``(K, G1, V)`` of a residual MLP: shapes ``(L, d, d)``, ``(L, d, d)``, ``(L, d, d, d, d)``.

    ``C_W, C_b, gamma, xi``: length-L sequences, index l - 1 for layer l (``gamma[0], xi[0]`` unused: layer 1 is
    the input layer with kernel ``K1`` ``(d, d)``). ``act``: a :func:`pdlt.activation` object or name.
    Conventions of :class:`pdlt.theory.finite_width.FiniteWidth` with one uniform width n (module docstring for
    the equations). ``need_G1=False`` skips G1 and returns ``None`` in its place. G1 with a nonzero gamma needs
    ``s''``: kinked activations outside the scale-invariant class raise :class:`~pdlt.errors.ParameterError` there.
    """
    act, K1, C_W, C_b, gamma, xi = _inputs(act, K1, C_W, C_b, gamma, xi)
    K, _ = _kernels(act, K1, C_W, C_b, gamma, xi)
    L, d = K.shape[0], K.shape[-1]
    if L == 1:
        return K, (np.zeros((L, d, d)) if need_G1 else None), np.zeros((L, d, d, d, d))
    Gam = gamma_products(gamma)
    if need_G1 and any(Gam[p, q] != 0.0 for q in range(1, L - 1) for p in range(q)):
        _hessian_kinks_supported(act)  # before the V work
    lmap = C_W[:, None, None] * np.eye(d * d)
    G1, V = trajectory_statistics(K, gamma, xi, lmap, _ActivationTrajectory(act, K, Gam, gamma, xi),
                                  need_G1=need_G1)
    return K, G1, V


class _ActivationTrajectory:
    """The averages :func:`trajectory_statistics` needs when a neuron's state is its preactivations (``s = sigma``)."""

    def __init__(self, act, K, Gam, gamma, xi):
        self.act, self.K, self.Gam, self.gamma, self.xi = act, K, Gam, gamma, xi
        self.avg = layer_averages(act, K[:-1])
        self.D, self.C4 = self.avg.D, self.avg.C4

    def _pairs(self, arr, sub):
        n = arr.shape[-1] ** 2
        return arr.reshape(arr.shape[0], n, n)[:, sub[:, None], sub[None, :]]

    def D_pairs(self, sub):
        return self._pairs(self.D, np.asarray(sub))

    def C4_pairs(self, sub):
        return self._pairs(self.C4, np.asarray(sub))

    def cross_C4(self, todo, sub):
        d = self.K.shape[-1]
        J = np.stack([trajectory_joint(self.K, self.Gam, p, q) for p, q in todo])
        try:
            ja = layer_averages(self.act, J)
        except SingularKernelError as err:
            raise _cross_singular(err, self.gamma, self.xi) from None
        return self._pairs(np.ascontiguousarray(ja.C4[:, :d, :d, d:, d:]), np.asarray(sub))

    def Q_contract(self, W):
        return self.avg.Q_contract(W)

    def hessian(self, todo):
        return _hessian_covariances(self.act, self.K, self.Gam, self.avg, todo, self.gamma, self.xi)


def trajectory_statistics(K, gamma, xi, lmap, averages, *, need_G1: bool = True, pairs=None):
    """``(G1, V)`` ``(L, N, N)``, ``(L, N, N, N, N)`` (G1 None without ``need_G1``) of any per-neuron state ``x`` of N
    components that a residual step moves as ``x' = gamma x + xi eps``, ``eps ~ N(0, G^)`` iid over neurons given
    the layer, with the metric ``G^ = c + (1/n) sum_k lmap[s(x_k) s(x_k)^T]`` (module docstring; ``s`` the state's
    "activation", ``lmap`` linear on N x N matrices).

    ``K`` ``(L, N, N)``: the leading-order kernels of the state; ``gamma, xi`` ``(L,)``; ``lmap`` ``(L, N*N, N*N)``,
    entry l - 1 the step into layer l (entry 0 unused), acting on the flattened ordered pair ``(g, h)``: the
    preactivations' state has ``lmap = C_W 1``. ``averages`` gives, over the state's leading-order Gaussians, on a
    set ``sub`` of flattened ordered pairs ``g * N + h`` as ``(batch, len(sub), len(sub))`` matrices:
    ``D_pairs(sub)`` and ``C4_pairs(sub)`` (layers 1..L-1: ``<d_g d_h (s_x s_y)>`` as ``[xy, gh]``, and
    ``Cov(s_a s_b, s_c s_d)``), ``cross_C4(todo, sub)`` the same covariance across the layers ``(p, q)`` of
    ``todo``; and, for G1, ``Q_contract(W)`` the fourth-derivative term ``(L - 1, N, N)`` against ``W``
    ``(L - 1, N, N, N, N)`` and ``hessian(todo)`` a dict ``(p, q) -> (N,) * 6`` of
    ``Cov(s_g s_h(x^(p)), d_e d_f (s_x s_y)(x^(q)))`` (only where the self-field weights can be nonzero).

    ``pairs``: V only on a set of pairs that every map (``lmap``, ``D``, the covariances, ``K (x) K``) keeps to
    itself, e.g. one parity sector of a state with a sign symmetry (``need_G1=False``); V
    holds 0 outside that block. The cost falls from ``(L N^2)^3`` to ``(L |pairs|)^3``.
    """
    L, N = K.shape[0], K.shape[-1]
    G1 = np.zeros((L, N, N))
    V = np.zeros((L, N, N, N, N))
    if L == 1:
        return (G1 if need_G1 else None), V
    if pairs is not None and need_G1:
        raise ParameterError("trajectory_statistics: pairs restricts V only, and G1 needs every pair; pass "
                             "need_G1=False with pairs", "pairs")
    Gam = gamma_products(gamma)
    P = L - 1
    sub = np.arange(N * N) if pairs is None else np.asarray(pairs, dtype=np.int64)
    N2 = sub.size
    ix = np.ix_(sub, sub)
    lmap = np.stack([m[ix] for m in lmap])

    # response R and T = (1 - R)^{-1} on the flattened (layer, pair) index
    Dp = averages.D_pairs(sub)
    Rf = np.zeros((P, N2, P, N2))
    for m in range(P):
        LD = lmap[m + 1] @ Dp[m]
        for mp in range(m):
            Rf[m, :, mp, :] = 0.5 * xi[mp + 1] ** 2 * Gam[mp + 1, m] ** 2 * LD
    Rf = Rf.reshape(P * N2, P * N2)
    T = np.linalg.solve(np.eye(P * N2) - Rf, np.eye(P * N2))  # unit lower-triangular: always invertible

    # Sigma_eta: the CLT noise of the metrics, lmap (x) lmap of the trajectory covariances of s s
    S_eta = np.zeros((P, N2, P, N2))
    C4 = averages.C4_pairs(sub)
    for m in range(P):
        S_eta[m, :, m] = lmap[m + 1] @ C4[m] @ lmap[m + 1].T
    todo = [(p, q) for p in range(P) for q in range(p + 1, P) if Gam[p, q] != 0.0]
    self_needed = todo  # the same layer pairs carry the self fields (one list: providers cache on it)
    if todo:
        C = averages.cross_C4(todo, sub)
        for k, (p, q) in enumerate(todo):
            S_eta[p, :, q] = lmap[p + 1] @ C[k] @ lmap[q + 1].T
            S_eta[q, :, p] = S_eta[p, :, q].T
    S_eta = S_eta.reshape(P * N2, P * N2)
    S_phi = T @ S_eta @ T.T
    e, f = sub // N, sub % N
    X = Dp @ (K[:P][:, e[:, None], e[None, :]] * K[:P][:, f[:, None], f[None, :]])  # D : (K (x) K)

    W = np.zeros((L, N2, N2))
    U = np.zeros((L, N2, P * N2))
    for q in range(1, L):
        E = np.zeros((N2, P * N2))
        for m in range(q):
            E[:, m * N2:(m + 1) * N2] = xi[m + 1] ** 2 * Gam[m + 1, q] ** 2 * np.eye(N2)
        U[q] = E @ T
        W[q] = E @ S_phi @ E.T
        src = np.zeros((P * N2, N2))
        for mp in range(q):
            src[mp * N2:(mp + 1) * N2] = Gam[mp, q] ** 2 * (lmap[mp + 1] @ X[mp])
        Y = U[q] @ src
        Vq = np.zeros((N * N, N * N))
        Vq[ix] = W[q] + Y + Y.T
        V[q] = Vq.reshape(N, N, N, N)

    if not need_G1:
        return None, V
    H = averages.hessian(self_needed) if self_needed else {}
    QW = averages.Q_contract(W[:P].reshape(P, N, N, N, N))  # layer q's Q against W^(q), (P, N, N)
    for q in range(P):
        delta = 0.125 * QW[q]
        delta = delta + 0.5 * (Dp[q] @ G1[q].reshape(N2)).reshape(N, N)
        for mp in range(q):
            if (mp, q) in H:
                # U[q] lmap maps the self field of source layer mp (lmap[s_g s_h - <s_g s_h>]/n) onto the metric
                # weights (e, f) at layer q; ordered pairs on both sides
                Uq = (U[q][:, mp * N2:(mp + 1) * N2] @ lmap[mp + 1]).reshape(N, N, N, N)
                delta = delta + 0.5 * np.einsum("efgh,ghefxy->xy", Uq, H[(mp, q)])
        G1[q + 1] = gamma[q + 1] ** 2 * G1[q] + xi[q + 1] ** 2 * (lmap[q + 1] @ delta.reshape(N2)).reshape(N, N)
    return G1, V


def residual_vertex_kv_only(act, K1, C_W, C_b, gamma, xi) -> np.ndarray:
    """The INCOMPLETE (K, V)-only recursion, kept as a negative control: it treats each layer as a Gaussian
    mixture over a fluctuating metric with covariance V and keeps only the layer-to-layer self term,

        V' = M V M^T + xi^4 C_W^2 Cov(ss, ss) + gamma^2 xi^2 C_W (X + X^T),  M = gamma^2 1 + (xi^2 C_W/2) D,

    dropping the cross-layer field correlations and the history of the self fields. Exact for layer 2 only.
    """
    act, K1, C_W, C_b, gamma, xi = _inputs(act, K1, C_W, C_b, gamma, xi)
    K, _ = _kernels(act, K1, C_W, C_b, gamma, xi)
    L, d = K.shape[0], K.shape[-1]
    d2 = d * d
    V = np.zeros((L, d2, d2))
    if L > 1:
        avg = layer_averages(act, K[:-1])
    for p in range(L - 1):
        D = avg.D[p].reshape(d2, d2)
        M = gamma[p + 1] ** 2 * np.eye(d2) + 0.5 * xi[p + 1] ** 2 * C_W[p + 1] * D
        X = np.einsum("ghef,ec,fd->ghcd", avg.D[p], K[p], K[p]).reshape(d2, d2)
        V[p + 1] = (M @ V[p] @ M.T + xi[p + 1] ** 4 * C_W[p + 1] ** 2 * avg.C4[p].reshape(d2, d2)
                    + gamma[p + 1] ** 2 * xi[p + 1] ** 2 * C_W[p + 1] * (X + X.T))
    return V.reshape(L, d, d, d, d)


# ---------------------------------------------------------------------------------------------------
# criticality
# ---------------------------------------------------------------------------------------------------


def residual_susceptibilities(act, K, C_W: float, gamma: float, xi: float) -> tuple[float, float]:
    """``(chi_par, chi_perp)`` of one residual step at a single-input kernel K:
    ``chi_par = gamma^2 + xi^2 C_W d<s^2>_K/dK``, ``chi_perp = gamma^2 + xi^2 C_W <s'^2>_K``."""
    from .criticality import chi_par, chi_perp

    act = _lookup(act)
    step = Residual(C_W, 0.0, float(gamma), float(xi))
    return float(step.chi(chi_par(act, K, C_W))), float(step.chi(chi_perp(act, K, C_W)))


@dataclass(frozen=True)
class ResidualCriticality:
    """Critical residual initialization for one (gamma, xi): ``C_W, C_b = ((1 - gamma^2)/xi^2) (C_W, C_b)`` of the
    plain critical MLP (so ``chi_par = chi_perp = 1``); ``nu`` the vertex slope ``V^(l)/K^2 ~ nu l`` (scale-invariant
    class: the closed-form series :func:`residual_nu`; None otherwise), ``nu_method`` says which."""

    activation: str
    universality: str
    gamma: float
    xi: float
    C_W: float | None
    C_b: float | None
    nu: float | None
    nu_method: str


def residual_criticality(act, gamma: float, xi: float = 1.0) -> ResidualCriticality:
    """Critical line of a residual step with shortcut weight ``gamma`` (``gamma^2 < 1``) and branch weight ``xi``.

    Scale-invariant: ``C_W = (1 - gamma^2)/(xi^2 A_2)``, ``C_b = 0``; K*=0 class: ``C_W = (1 - gamma^2)/(xi^2
    sigma_1^2)``, ``C_b = 0``; in general the plain critical ``(C_W, C_b)`` times ``(1 - gamma^2)/xi^2``."""
    from .criticality import criticality

    from ..validation import check_real

    act = _lookup(act)
    g, x = check_real(gamma, "gamma"), check_real(xi, "xi")
    if not (math.isfinite(g) and math.isfinite(x)) or g * g >= 1.0 or x == 0.0:
        raise ParameterError(f"residual criticality needs gamma^2 < 1 and xi != 0 (finite), got gamma = {gamma}, "
                             f"xi = {xi}", "gamma" if not (math.isfinite(g) and g * g < 1.0) else "xi")
    c = criticality(act)
    f = (1.0 - g * g) / (x * x) if x * x > 0.0 else math.inf
    # (at both ends: xi = 1e200 underflowed C_W to 0.0, a network with no branch)
    top = f * max(c.C_W or 0.0, c.C_b or 0.0)
    if not (math.isfinite(f) and 1e-300 <= top <= 1e300):
        raise ParameterError(f"the critical C_W = (1 - gamma^2)/xi^2 x (the plain critical C_W) leaves float64's "
                             f"range for xi = {xi}: use a branch weight xi of order one", "xi")
    C_W = None if c.C_W is None else f * c.C_W
    C_b = None if c.C_b is None else f * c.C_b
    if act.scale_invariant:
        return ResidualCriticality(act.name, c.universality, g, x, C_W, C_b, residual_nu(act, g),
                                   "closed-form series (exact at O(1/n))")
    return ResidualCriticality(act.name, c.universality, g, x, C_W, C_b, None,
                               "not in closed form: take the large-depth slope of residual_statistics")


def residual_nu(act, gamma: float) -> float:
    """``nu(gamma)``: at criticality ``V^(l)/K^2 = nu l + O(1)`` for a scale-invariant activation (module docstring);
    ``nu(0) = 3 A_4/A_2^2 - 1`` (plain MLP). The series in odd n converges like ``|gamma|^n``."""
    act = _lookup(act)
    if not act.scale_invariant:
        raise ParameterError(f"residual_nu: the closed form is for scale-invariant activations; {act.name} is not "
                             "one (take the large-depth slope of residual_statistics instead)", "act")
    g = float(gamma)
    if not math.isfinite(g) or g * g >= 1.0:
        raise ParameterError(f"residual_nu needs gamma^2 < 1, got {gamma}", "gamma")
    ap, am = act.slopes
    A2, B = (ap * ap + am * am) / 2.0, (ap * ap - am * am) / 2.0
    # c_n = h_n^2/n! for odd n: c_1 = 8/pi, c_3 = 8/(6 pi), c_{n+2}/c_n = (n-2)^2/((n+1)(n+2)) (n >= 3); the terms
    # fall like n^{-5/2} |gamma|^n/(1 - |gamma|^n), so 2e5 odd orders leave < 1e-12 for |gamma| <= 0.999
    n = np.arange(3, 400003, 2, dtype=np.float64)
    ratio = np.concatenate([[1.0], ((n[:-1] - 2.0) ** 2) / ((n[:-1] + 1.0) * (n[:-1] + 2.0))])
    c = np.concatenate([[8.0 / math.pi], (8.0 / (6.0 * math.pi)) * np.cumprod(ratio)])
    n = np.concatenate([[1.0], n])
    with np.errstate(under="ignore"):
        gn = np.sign(g) ** n * np.abs(g) ** n
        series = float(np.sum(c * gn / (1.0 - gn))) if g != 0.0 else 0.0
    return 2.0 * (1.0 - g**4) + ((1.0 - g * g) * B / A2) ** 2 * (3.0 + 2.0 * series)

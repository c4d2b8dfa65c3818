"""Leading-order (infinite-width) kernel flow K^(l)_{ab} for a dataset of d inputs.

PDLT eqs. (4.8) and (4.37)/(4.41), generalized to every layer:

    K^(1)_{ab}   = C_b^(1) + C_W^(1) (1/n_0) sum_j x_{j;a} x_{j;b}
    K^(l+1)_{ab} = C_b^(l+1) + C_W^(l+1) <sigma(z_a) sigma(z_b)>_{K^(l)}

and the delta-expansion for two nearby inputs x_{+-} = x_0 +- dx/2 (PDLT section 5.1, gamma basis;
``derivations/README.md`` section 4), which never needs a (singular) 2x2 kernel:

    K00'   = C_b + C_W g(K00)
    dK1'   = chi_par dK1
    ddK2'  = chi_perp ddK2 + h dK1^2
    ddK0'  = chi_par ddK0 + C_W [ ddK2 <sigma sigma''> + dK1^2 (1/2) d<sigma sigma''>/dK ]

with g, chi_par, chi_perp, h at K00 (:mod:`pdlt.theory.criticality`). The last line is the book's
``C_W dK1^2/(4K^2) <sigma sigma''(z^2-K)>`` rewritten with ``<f (z^2-K)> = 2K^2 d<f>/dK`` so that only
sigma' is needed (kinks and jumps then stay integrable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .. import gaussian
from . import conditioned
from ..activations import Activation
from ..activations import activation as _lookup
from ..activations import require_continuous, require_resolved, scaled_activation
from ..architecture import MLP, check_hyper
from ..errors import Caveat, DivergentFlowError, ParameterError, PdltError, QuadratureWarning, VanishingFlowError
from ..layers import metric

__all__ = [
    "first_layer_kernel",
    "pair_average",
    "kernel_accuracy",
    "pair_tangent",
    "kernel_input_jacobian",
    "kernel_map",
    "kernel_flow",
    "KernelFlow",
    "gamma_components",
    "from_gamma",
    "delta_flow",
    "DeltaFlow",
    "scale_exponent",
    "scaled_activation",
    "check_kernel_range",
    "K_MAX",
    "K_MIN",
]

# products of two kernel entries (closed forms, quadrature) must stay finite: flag well before 1e154. Used for
# flows that are not rescaled (the delta-expansion of the kernel); kernel_flow rescales and allows 2^+-1000.
_HUGE = 1e150

# Range of a kernel that kernel_flow and the 1/n recursions accept: a variance K_aa above 2^1000 (~1.1e301) or
# (having been positive) below 2^-1000 (~9.3e-302) leaves float64's normal range within a few layers, so it is
# reported instead of returned as inf or 0.
K_LOG2_MAX = 1000
K_MAX = 2.0**K_LOG2_MAX
K_MIN = 2.0**-K_LOG2_MAX

# Rescaling by powers of two (exact in binary floating point): a kernel whose largest variance lies within
# 2^+-SCALE_BAND is used as is (bit-identical to an unscaled computation); outside, it is divided by 2^e with e a
# multiple of _SCALE_STEP (even, so sqrt(2^e) is a power of two too), which brings it back into the band. A coarse
# step keeps the number of distinct scales (hence of batched quadrature calls) small.
SCALE_BAND = 32
_SCALE_STEP = 64
#: log2 of the largest variance kept unscaled on the exploding side by activations that are not scale-invariant.
#: Rescaling a large kernel narrows sigma's structure (sigma_e bends at |zeta| ~ 2^(-e/2)) below every rule's
#: spacing: tanh at x = 1e10 (K = 1e20, e = 64) had K^(2) 4 % off, silently. Unscaled, the rules resolve it
#: (gaussian.expect's 1-D panel rule at any K; the pair rules check themselves), and the moments of degree <= 6 that
#: the recursions take stay in float64's range up to here (K^3 ~ 2^600)
EXPLODE_LOG2 = 200


def scale_exponent(K, fine: bool = False) -> int:
    """The power-of-two exponent ``e`` by which a kernel ``K`` ``(d, d)`` is rescaled, ``K = 2^e Kt``.

    ``e = 0`` while the largest variance ``max_a K_aa`` lies in ``[2^-32, 2^32]`` (or is 0), otherwise a
    multiple of 64: rounded up below (``max_a Kt_aa`` in ``(2^-64, 1]``), down above (in ``[1, 2^64)``).
    ``fine=True`` (used for scale-invariant activations, where rescaling changes nothing but rounding): the even
    integer nearest to ``log2 max_a K_aa``, so that ``max_a Kt_aa`` lies in ``[1/2, 2]`` at every layer. Otherwise
    a large kernel stays unscaled up to ``2^EXPLODE_LOG2`` (:data:`EXPLODE_LOG2`), and :func:`scaled_activation`
    refuses a rescaled activation that the rules no longer resolve.
    """
    m = float(np.max(np.abs(np.diagonal(np.asarray(K), axis1=-2, axis2=-1))))
    if not (m > 0.0) or not math.isfinite(m):
        return 0
    if fine:
        return 2 * int(round(math.log2(m) / 2))
    if abs(math.log2(m)) <= SCALE_BAND or 0.0 < math.log2(m) <= EXPLODE_LOG2:
        return 0
    # gaussian.expect resolves an activation's features on an absolute z-scale ~0.3 (tanh bends at |z| ~ 1).
    # Ordered side: round e up, so Kt <= 1 and sigma_e's features (at 1/c >= 1) are as well resolved as
    # sigma's were at the unscaled K. Exploding side (beyond EXPLODE_LOG2): round down (Kt in [1, 2^64)).
    q = math.log2(m) / _SCALE_STEP
    return _SCALE_STEP * (math.ceil(q) if m < 1 else math.floor(q))


def first_layer_kernel(x, C_W: float, C_b: float) -> np.ndarray:
    """``K^(1) = C_b + C_W x x^T / n_0`` for inputs ``x`` of shape ``(d, n_0)``; returns ``(d, d)``: the layer
    metric :func:`pdlt.layers.metric` of ``x``, evaluated in power-of-two units so that any representable input works."""
    check_hyper(C_W, C_b)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ParameterError(f"inputs x must be a finite (d, n_0) array, got shape {x.shape}", setting="x")
    # the Gram matrix in per-row power-of-two units: x x^T itself under- or overflows for |x| beyond ~1e+-154,
    # and an underflow to 0 would be mistaken for a zero input (K = 0 is legitimate there)
    nonzero = np.any(x != 0, axis=1)
    e = np.where(nonzero, np.frexp(np.max(np.abs(x), axis=1))[1], 0)
    xs = np.ldexp(x, -e[:, None])
    Gs = metric(xs, 1.0, 0.0)
    if C_W > 0 and np.any(nonzero):
        with np.errstate(divide="ignore"):
            log2_diag = np.log2(C_W * np.diagonal(Gs)) + 2 * e
        a = int(np.argmax(np.where(nonzero, log2_diag, -np.inf)))
        if log2_diag[a] > K_LOG2_MAX:
            raise DivergentFlowError(
                f"the inputs are too large: C_W |x_a|^2 / n_0 ~ 2^{log2_diag[a]:.0f} for input a = {a} exceeds "
                f"2^{K_LOG2_MAX}, the end of float64's range for the kernel and its 1/n statistics; scale the inputs "
                "x down", layer=1)
        small = nonzero & (log2_diag < -K_LOG2_MAX)
        if C_b == 0 and np.any(small):
            a = int(np.argmax(small))
            raise VanishingFlowError(
                f"the inputs are too small: C_W |x_a|^2 / n_0 ~ 2^{log2_diag[a]:.0f} for input a = {a} is below "
                f"2^-{K_LOG2_MAX}, outside float64's range for the kernel and its 1/n statistics; scale the inputs x "
                "up (or use C_b > 0)", layer=1)
    return C_b + C_W * np.ldexp(Gs, e[:, None] + e[None, :])


def _pairs_from(f, g, kinks, K, closed, capped=None):
    """``M_ab = <f(z_a) g(z_b)>_K`` for K of shape (..., d, d); symmetric f == g assumed when g is None.

    Smooth functions at variances beyond what :func:`pdlt.gaussian.expect`'s default rules resolve at their nominal
    spacing (:func:`pdlt.gaussian.default_rule_limit`: ~7.7e6 in 1D, ~120 in 2D; beyond, they cap their nodes and
    err silently: tanh 2e-5 at K ~ 1e4, e.g. inputs of size 60) take the rules of
    :func:`pdlt.theory.conditioned.pair_products` and :func:`~pdlt.theory.conditioned.line_average` instead, which
    keep the spacing at any size up to :data:`~pdlt.theory.conditioned.PAIR_MAX_VARIANCE`. ``capped``: a list that
    collects ``(variance, estimated relative error)`` of the averages beyond that, instead of gaussian.expect's
    warning per call (:func:`_smooth_beyond`)."""
    d = K.shape[-1]
    diag = np.diagonal(K, axis1=-2, axis2=-1)  # (..., d)
    if closed is not None:
        return closed(diag[..., :, None], diag[..., None, :], K)
    gg = f if g is None else g
    out = np.empty(K.shape, dtype=np.float64)
    out[..., np.arange(d), np.arange(d)] = _smooth_beyond(
        lambda z: f(z[..., 0]) * gg(z[..., 0]),
        lambda Ks: conditioned.line_average(lambda z: f(z) * gg(z), Ks[:, 0, 0]), diag[..., None, None], kinks, capped)
    if d > 1:
        ia, ib = np.triu_indices(d, 1)
        sub = np.empty(K.shape[:-2] + (ia.size, 2, 2))
        sub[..., 0, 0] = K[..., ia, ia]
        sub[..., 1, 1] = K[..., ib, ib]
        sub[..., 0, 1] = sub[..., 1, 0] = K[..., ia, ib]
        vals = _smooth_beyond(lambda z: f(z[..., 0]) * gg(z[..., 1]), lambda Ks: conditioned.pair_products(f, gg, Ks),
                              sub, kinks, capped)
        vals_t = vals if g is None else _smooth_beyond(
            lambda z: f(z[..., 1]) * gg(z[..., 0]), lambda Ks: conditioned.pair_products(gg, f, Ks), sub, kinks, capped)
        _perfectly_correlated(f, gg, kinks, sub, vals, vals_t, capped)
        out[..., ia, ib] = vals
        out[..., ib, ia] = vals_t
    return out


def _smooth_beyond(integrand, wide, Ks, kinks, capped=None) -> np.ndarray:
    """``<integrand>`` over kernels ``Ks`` ``(..., q, q)``: gaussian.expect's default rule, and ``wide(Ks[big])`` for
    the kernels of a smooth integrand (no ``kinks``) whose largest variance lies beyond that rule's limit in q
    dimensions, up to :data:`pdlt.theory.conditioned.PAIR_MAX_VARIANCE`. Beyond that, the capped default rule: with
    a ``capped`` list, its ``(variance, estimated relative error)`` are appended there (the caller reports them once)
    instead of gaussian.expect warning per call."""
    def rule(S):
        with np.errstate(over="ignore", invalid="ignore"):      # an overflow is gaussian.expect's error to report
            return gaussian.expect(integrand, S, kinks=kinks)

    if kinks or Ks.size == 0:
        return rule(Ks)
    q = Ks.shape[-1]
    flat = Ks.reshape((-1, q, q))
    top = np.max(np.diagonal(flat, axis1=1, axis2=2), axis=1)
    big = (top > gaussian.default_rule_limit(q)[0]) & (top <= conditioned.PAIR_MAX_VARIANCE)
    huge = (top > conditioned.PAIR_MAX_VARIANCE) if capped is not None else np.zeros_like(big)
    if not np.any(big | huge):
        return rule(Ks)
    out = np.full(flat.shape[0], np.nan)
    if np.any(big):
        out[big] = wide(flat[big])
    if np.any(huge):
        val, rel = conditioned.capped_rule(integrand, flat[huge])   # (G, 1) values, per-kernel estimates
        out[huge] = val[:, 0]
        capped.extend(zip(top[huge].tolist(), rel.tolist()))
    # the rest, and what the wide rules did not capture (an average that is not finite or lies outside the
    # Gaussian's bulk: a function growing too fast), by the default rule, whose error says so
    back = np.isnan(out)
    if np.any(back):
        out[back] = rule(flat[back])
    return out.reshape(Ks.shape[:-2])


def _perfectly_correlated(f, g, kinks, sub, vals, vals_t, capped=None) -> None:
    """Overwrite, in place, the pair averages of ``sub`` (..., P, 2, 2) whose correlation is exactly +-1
    (``K12^2 >= K11 K22`` in float64: identical or parallel inputs) by the 1-D average they reduce to,
    ``<f(z) g(c z)>_{K11}`` with ``c = sign(K12) sqrt(K22/K11)``. The 2-D rule on such a rank-1 kernel is
    ~1e-10 off (the NTK needs its diagonals to 1e-12); the 1-D rule is as exact as the diagonal's."""
    from ..activations import kernel_sqrt_det

    k11, k22, k12 = sub[..., 0, 0], sub[..., 1, 1], sub[..., 0, 1]
    singular = (kernel_sqrt_det(k11, k22, k12) == 0) & (k11 > 0) & (k22 > 0)
    for idx in zip(*np.nonzero(singular)):
        a, b, c12 = float(k11[idx]), float(k22[idx]), float(k12[idx])
        # integrate over the coordinate with the larger variance, so that the other one is a contraction
        # c u with |c| <= 1: the complex singularities of sigma(c u) then lie no closer than sigma's own, for
        # which the rule's spacing is chosen
        var, c = (a, math.copysign(math.sqrt(b / a), c12)) if a >= b else (b, math.copysign(math.sqrt(a / b), c12))
        ks = tuple(sorted(set(kinks) | {k / c for k in kinks}))
        K1 = np.array([[var]])
        fa, fb = (lambda u: u, lambda u: c * u) if a >= b else (lambda u: c * u, lambda u: u)
        vals[idx] = _smooth_beyond(lambda z: f(fa(z[..., 0])) * g(fb(z[..., 0])),
                                   lambda Ks: conditioned.line_average(lambda z: f(fa(z)) * g(fb(z)), Ks[:, 0, 0]),
                                   K1, ks, capped)
        if vals_t is not vals:
            vals_t[idx] = _smooth_beyond(
                lambda z: f(fb(z[..., 0])) * g(fa(z[..., 0])),
                lambda Ks: conditioned.line_average(lambda z: f(fb(z)) * g(fa(z)), Ks[:, 0, 0]), K1, ks, capped)


def kernel_accuracy(act, layer: int) -> float:
    """The effective relative accuracy of the kernel's entries at ``layer``, for a solve against a block of them:
    rounding (1e-15) at layer 1 (``C_b + C_W x.x/n_0``) and where the activation has a closed form, else 1e-13 for
    the 2-D quadrature. A single quadrature average errs by up to 1.1e-12 (:func:`pdlt.gaussian.expect`: tanh
    products near K = 0.25 at correlation 0.99999), but these errors vary smoothly with the kernel and largely cancel
    in the differences a posterior resolves: under the earlier, coarser spacing, deep tanh posteriors erred like 1e-2
    of the worst single average times the condition number; 1e-13 keeps a factor 10 over that. A solve against a
    block of condition number c then carries a relative error of at most about c times this (asserted against a finer
    quadrature in tests/theory/test_influence.py)."""
    return 1e-15 if layer == 1 or _lookup(act).pair_map is not None else 1e-13


def pair_average(act: Activation, K, *, derivative: bool = False, capped: list | None = None) -> np.ndarray:
    """``<sigma(z_a) sigma(z_b)>_K`` (or ``<sigma'(z_a) sigma'(z_b)>_K``) for all pairs a, b.

    ``K``: ``(..., d, d)`` PSD. Uses the activation's closed form when it has one, otherwise float64
    quadrature (:func:`pdlt.gaussian.expect`), split at the activation's kinks; beyond gaussian.expect's nominal
    limits, the rules of :mod:`pdlt.theory.conditioned` (up to variances of 5e8). Beyond that the capped rule warns
    where it is off, or, given a list ``capped``, appends ``(variance, estimated relative error)`` to it instead.
    An activation sharper than the rules' spacing is refused (:func:`pdlt.activations.require_resolved`).
    """
    act = _lookup(act)
    require_resolved(act)
    if derivative:
        require_continuous(act, "the average <sigma' sigma'>")
    return _pair_average(act, gaussian.check_kernel(K), derivative, capped)


def _pair_average(act: Activation, K, derivative: bool, capped: list | None) -> np.ndarray:
    """:func:`pair_average` for a checked kernel, with no resolution check: the rescaled activations of
    :func:`scaled_pair_average` are as sharp on their scale as the kernel is small, and resolved as well as the
    activation they stand for (toward large kernels only ramps are rescaled, with a kink at 0:
    :func:`pdlt.activations.scaled_activation`)."""
    if derivative:
        return _pairs_from(act.d1, None, act.kinks, K, act.dpair if act.dpair_map is not None else None, capped)
    return _pairs_from(act, None, act.kinks, K, act.pair if act.pair_map is not None else None, capped)


def scaled_pair_average(act: Activation, K, *, derivative: bool = False, capped: list | None = None) -> np.ndarray:
    """:func:`pair_average` in raw units, taken at the O(1) kernel ``K / 2^e`` (:func:`scale_exponent`) with the
    rescaled activation (:func:`scaled_activation`): ``<sigma sigma>_K = 2^e <sigma_e sigma_e>_{K/2^e}`` and
    ``<sigma' sigma'>_K = <sigma_e' sigma_e'>_{K/2^e}`` (exact power-of-two rescaling), so closed forms and
    quadrature never see products of huge or tiny entries. ``K``: one ``(d, d)`` kernel; ``capped`` as in
    :func:`pair_average` (variances in raw units)."""
    act = _lookup(act)
    require_resolved(act)
    if derivative:
        require_continuous(act, "the average <sigma' sigma'> (of the NTK and the susceptibilities)")
    K = gaussian.check_kernel(K)
    e = scale_exponent(K)
    if e == 0:
        return _pair_average(act, K, derivative, capped)
    held = [] if capped is not None else None
    avg = _pair_average(scaled_activation(act, e), np.ldexp(K, -e), derivative, held)
    _raw_capped(capped, held, e)
    return avg if derivative else np.ldexp(avg, e)


def _raw_capped(capped: list | None, held: list | None, e: int) -> None:
    """Append to ``capped`` the capped-rule entries ``held`` of an average taken at the rescaled kernel ``K / 2^e``,
    with their variances in raw units (:func:`scaled_pair_average`, :func:`pair_tangent`)."""
    if capped is not None and held:
        capped.extend((math.ldexp(v, e), err) for v, err in held)


def pair_tangent(act: Activation, K, *, capped: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The linearization of the pair average ``<sigma_a sigma_b>_K`` in the kernel, for one ``(d, d)`` kernel.

    Returns ``(P1, A, Dd)`` (``(d, d)``, ``(d, d)``, ``(d,)``) with, for ``a != b``,

        d<sigma_a sigma_b> = P1_ab dK_ab + A_ab dK_aa + A_ba dK_bb,     d<sigma_a^2> = Dd_a dK_aa,

    ``P1 = <sigma' sigma'>`` (:func:`pair_average` with ``derivative=True``) and, from rescaling one coordinate
    (``d/dt <sigma((1+t) z_a) sigma(z_b)> = <z_a sigma'_a sigma_b> = 2 K_aa dP/dK_aa + K_ab P1_ab``),
    ``A_ab = (<z_a sigma'(z_a) sigma(z_b)> - K_ab P1_ab) / (2 K_aa)`` and ``Dd_a = <z sigma' sigma>_{K_aa} / K_aa``
    (derivations/README.md section 20); for a smooth activation with a closed-form pair average both come from its
    derivatives (:meth:`pdlt.Activation.pair_gradient`), else from quadrature. These are the smooth case's
    ``<sigma''_a sigma_b>/2`` and
    ``<sigma'^2 + sigma sigma''>`` without a second derivative, so kinked activations need no delta functions. All
    three are invariant under the power-of-two rescaling of :func:`scaled_pair_average`, so they are computed at the
    O(1) kernel. An input with ``K_aa = 0`` (a zero input without bias) is deterministic: its ``A`` and ``Dd`` are
    set to 0 (they multiply ``dK_aa``, which vanishes with it). ``capped`` as in :func:`pair_average` (variances of
    the unscaled kernel).
    """
    act = _lookup(act)
    require_resolved(act)
    require_continuous(act, "the linearization of the pair average in the kernel")
    K = gaussian.check_kernel(np.asarray(K, dtype=np.float64))
    e = scale_exponent(K)
    act_e, K = scaled_activation(act, e), np.ldexp(K, -e)
    diag = np.diagonal(K)
    grad = act_e.pair_gradient(diag[:, None], diag[None, :], K)
    if grad is not None:
        # a smooth closed form: P1 = dP/dK_ab and <z_a sigma'_a sigma_b> = 2 K_aa dP/dK_aa + K_ab dP/dK_ab (Price)
        d11, P1 = grad
        M = 2.0 * diag[:, None] * d11 + K * P1
    else:
        held = [] if capped is not None else None
        P1 = _pair_average(act_e, K, True, held)
        M = _pairs_from(lambda z: z * act_e.d1(z), act_e, act_e.kinks, K, None, held)
        _raw_capped(capped, held, e)
    pos = diag > 0
    safe = np.where(pos, diag, 1.0)
    A = np.where(pos[:, None], (M - K * P1) / (2.0 * safe[:, None]), 0.0)
    Dd = np.where(pos, np.diagonal(M) / safe, 0.0)
    return P1, A, Dd


def kernel_input_jacobian(net: MLP, x, index=None, flow: "KernelFlow | None" = None) -> np.ndarray:
    r"""``J[p, k, b] = dK^(L)_{a b} / dx_{a, k}`` with ``a = index[p]``: how the last layer's kernel responds to
    moving one input, exactly (forward-mode through the layers, :func:`pair_tangent`), ``(len(index), n_0, d)``.

    Moving ``x_a`` changes row and column ``a`` of every ``K^(l)`` and nothing else, so one row per perturbed input
    is propagated: ``dK^(1)_{ab} = (C_W/n_0)(1 + delta_ab) x_b``, then each layer step's affine kernel map applied to
    the tangent of the pair averages (derivations/README.md section 20). ``index``: the inputs to move (default all).
    ``flow``: the kernel flow of ``net`` on ``x`` if already computed. The cost is a kernel flow, two pair
    averages per layer (:func:`pair_tangent`) and ``O(L len(index) n_0 d)``.
    """
    x = net.inputs(x)
    if flow is None:
        flow = kernel_flow(net, x)
    elif flow.K.shape[-1] != x.shape[0] or not np.array_equal(flow.x, x) or flow.net != net:
        raise ParameterError("flow must be the kernel flow of this network on these inputs (pdlt.kernel_flow(net, x))",
                             "flow")
    d, n0 = x.shape
    idx = np.arange(d) if index is None else np.asarray(index).reshape(-1)
    if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= d:
        raise ParameterError(f"index must hold input numbers 0..{d - 1}, got {index!r}", "index")
    P = idx.size
    C_W, _ = net.hyper(1)
    # rows[p, k, b] = dK_{a b} for a = idx[p], direction k
    rows = (C_W / n0) * np.broadcast_to(x.T[None, :, :], (P, n0, d)).copy()
    rows[np.arange(P), :, idx] *= 2.0
    capped = []         # beyond the resolved rules: one warning for the flow
    for l in range(1, net.L):
        held = []
        P1, A, Dd = pair_tangent(net.activation, flow.K[l - 1], capped=held)
        capped += [(l + 1, v, err) for v, err in held]
        r_self = rows[np.arange(P), :, idx]                                 # dK_aa (P, n0)
        dss = P1[idx][:, None, :] * rows + A[idx][:, None, :] * r_self[:, :, None]
        dss[np.arange(P), :, idx] = Dd[idx][:, None] * r_self
        step = net.step(l + 1)
        rows = step.kernel_map(rows, dss) - step.kernel_map(0.0, 0.0)
    report_capped("kernel_input_jacobian", capped)
    return rows


def kernel_map(act: Activation, K, C_W: float, C_b: float) -> np.ndarray:
    """One layer of the leading-order recursion: ``C_b + C_W <sigma_a sigma_b>_K``, shape of K."""
    check_hyper(C_W, C_b)
    return C_b + C_W * pair_average(act, K)


@dataclass(frozen=True)
class KernelFlow:
    """The leading-order kernel of every layer.

    ``K[l-1]`` is ``K^(l)_{ab}``, shape ``(L, d, d)``; ``x`` the inputs ``(d, n_0)``.
    """

    net: MLP
    x: np.ndarray
    K: np.ndarray

    def __getitem__(self, l: int) -> np.ndarray:
        """``K^(l)`` for layer l = 1..L (PDLT numbering)."""
        self.net._check_layer(l)
        return self.K[l - 1]

    @property
    def L(self) -> int:
        return self.K.shape[0]

    @property
    def d(self) -> int:
        return self.K.shape[-1]

    def correlation(self) -> np.ndarray:
        """``rho_ab = K_ab / sqrt(K_aa K_bb)`` per layer, ``(L, d, d)``. Raises if some K_aa = 0 (a zero
        input without bias), where the correlation is undefined."""
        diag = np.diagonal(self.K, axis1=-2, axis2=-1)
        if np.any(diag <= 0):
            l, a = np.argwhere(diag <= 0)[0]
            raise ParameterError(f"correlation undefined: K^({l + 1})_aa = 0 for input a = {a} (zero input and C_b = 0)")
        s = np.sqrt(diag)
        return self.K / (s[..., :, None] * s[..., None, :])


def _check_finite(K, l, what="K"):
    if not np.all(np.isfinite(K)) or np.max(np.abs(K)) > _HUGE:
        raise DivergentFlowError(
            f"the {what} flow diverges at layer l = {l} (|{what}| > {_HUGE:g} or not finite); the network is far "
            "from criticality: lower C_W / C_b, reduce the depth, or use pdlt.criticality(...) for critical values",
            layer=l,
        )


def kernel_flow(net: MLP, x) -> KernelFlow:
    """Iterate the leading-order kernel recursion through all L layers of ``net``.

    ``x``: ``(d, n_0)`` inputs (or ``(n_0,)`` for one). Returns :class:`KernelFlow` with ``K`` of shape
    ``(L, d, d)``. Each layer's Gaussian average is taken at the kernel divided by a power of two
    (:func:`scale_exponent`, :func:`scaled_activation`; exact, and a no-op for kernels within 2^+-32), so the flow
    is right over float64's whole range. Raises :class:`~pdlt.errors.DivergentFlowError` naming the layer if K
    exceeds :data:`K_MAX` (~1e301, exploding side) and :class:`~pdlt.errors.VanishingFlowError` if a positive
    variance falls below :data:`K_MIN` (~1e-301, ordered side); never returns inf or an underflowed 0. Pair
    averages beyond the resolved rules (variances above ~5e8 for activations without a closed form) carry
    gaussian.expect's estimated error: one :class:`~pdlt.errors.QuadratureWarning` for the flow names the layers.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("relu", widths=(2, 100, 100, 1), C_W=2.0, C_b=0.0)
    >>> np.allclose(pdlt.kernel_flow(net, np.ones((1, 2))).K[:, 0, 0], 2.0)
    True
    """
    x = net.inputs(x)
    act = net.activation
    if net.L > 1:
        require_resolved(act)
    Ks = np.empty((net.L, x.shape[0], x.shape[0]))
    C_W, C_b = net.hyper(1)
    with np.errstate(over="ignore", invalid="ignore"):
        K = first_layer_kernel(x, C_W, C_b)
    check_kernel_range(K, None, 1)
    Ks[0] = K
    capped = []       # (layer, variance, estimated relative error) beyond the resolved rules: one warning below
    for l in range(1, net.L):
        held = []
        try:
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                K_new = net.step(l + 1).kernel_map(K, scaled_pair_average(act, K, capped=held))
        except (ValueError, FloatingPointError, OverflowError) as err:
            if isinstance(err, DivergentFlowError):
                raise
            if isinstance(err, OverflowError):       # (Python floats: gamma^2 of a huge shortcut weight)
                err = "the step's arithmetic overflows float64 (C_W, C_b, gamma or xi far too large)"
            raise DivergentFlowError(f"the kernel flow failed at layer l = {l + 1}: {err}", layer=l + 1) from None
        capped += [(l + 1, v, e) for v, e in held]
        check_kernel_range(K_new, K, l + 1)
        K = Ks[l] = K_new
    report_capped("kernel_flow", capped)
    return KernelFlow(net=net, x=x, K=Ks)


def report_capped(who: str, capped, stacklevel: int = 2) -> None:
    """One :class:`~pdlt.errors.QuadratureWarning` for a whole flow: ``capped`` lists ``(layer, variance, estimated
    relative error)`` of the pair averages beyond the resolved rules (the ``capped`` lists of :func:`pair_average`),
    and the warning names the layers whose error is above :func:`pdlt.gaussian.capped_tolerance` and the worst.
    ``stacklevel`` as seen from the caller (2: the caller's caller, the user's line)."""
    off = [c for c in capped if not c[2] <= gaussian.capped_tolerance(2)]
    if not off:
        return
    worst = max(off, key=lambda c: c[2])
    layers = sorted({c[0] for c in off})
    top = max(c[1] for c in off)
    warnings.warn(QuadratureWarning(
        f"{who}: the Gaussian averages of {len(layers)} layer(s) between l = {layers[0]} and {layers[-1]} "
        f"(variances up to {top:.3g}) lie beyond the resolved rules, and the capped rule's estimated relative "
        f"error reaches {worst[2]:.1e} (layer {worst[0]}): the kernel grew over the layers; move C_W, C_b toward "
        "criticality (pdlt.criticality), reduce the depth or scale the inputs x down", worst[2], top, 2),
        stacklevel=stacklevel + 1)


def check_kernel_range(K, K_prev, l: int) -> None:
    """Raise if the kernel ``K = K^(l)`` ``(d, d)`` left float64's range at layer l (1..L).

    :class:`~pdlt.errors.DivergentFlowError` if an entry is not finite or exceeds :data:`K_MAX` (chaotic /
    exploding side); :class:`~pdlt.errors.VanishingFlowError` if a variance ``K_aa`` that was positive at the
    previous layer (at layer 1: any positive variance) lies below :data:`K_MIN` (ordered side: K decays
    exponentially). A variance that is exactly 0 at every layer (a zero input without bias) is legitimate.
    """
    K = np.asarray(K)
    if not np.all(np.isfinite(K)) or np.max(np.abs(K)) > K_MAX:
        raise DivergentFlowError(
            f"the kernel flow diverges at layer l = {l}: K^({l}) exceeds 2^{K_LOG2_MAX} ~ {K_MAX:.2g}, the end of "
            "float64's range; the network is on the exploding (chaotic) side of criticality: lower C_W (and C_b) "
            "toward their critical values (pdlt.criticality(...)) or reduce the depth", layer=l)
    diag = np.diagonal(K, axis1=-2, axis2=-1)
    was = diag > 0 if K_prev is None else np.diagonal(np.asarray(K_prev), axis1=-2, axis2=-1) > 0
    low = was & (diag < K_MIN)
    if np.any(low):
        a = int(np.argmax(low))
        if l == 1:
            raise VanishingFlowError(
                f"the first-layer kernel K^(1)_aa = {diag[a]:.3g} of input a = {a} is below 2^-{K_LOG2_MAX} ~ "
                f"{K_MIN:.2g}, outside float64's range for the 1/n statistics: scale the inputs x up (or use "
                "C_b > 0)", layer=1)
        if diag[a] == 0:
            # (a layer whose C_W and C_b are both 0, or whose C_W underflowed the product: not the ordered phase)
            raise VanishingFlowError(
                f"the kernel flow vanishes at layer l = {l}: K^({l})_aa = 0 for input a = {a} although it was "
                f"positive at layer {l - 1}: C_W^({l}) <sigma^2> + C_b^({l}) is 0 in float64 (C_W^({l}) or C_b^({l}) "
                "must be positive and not vanishingly small)", layer=l)
        raise VanishingFlowError(
            f"the kernel flow vanishes at layer l = {l}: K^({l})_aa = {diag[a]:.3g} for input a = {a} falls below "
            f"2^-{K_LOG2_MAX} ~ {K_MIN:.2g}, outside float64's range. The network is in the ordered phase, where "
            "K decays exponentially with depth: raise C_W toward criticality (pdlt.criticality(...) gives the "
            "critical C_W, C_b) or reduce the depth", layer=l)


# ---------------------------------------------------------------------- gamma basis / delta expansion


def gamma_components(K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K_[0], K_[1], K_[2])`` of a two-input kernel ``(..., 2, 2)`` (PDLT gamma basis).

    ``K = K_[0] [[1,1],[1,1]] + K_[1] [[1,0],[0,-1]] + K_[2] [[1,-1],[-1,1]]``, i.e.
    ``K_[0] = (K++ + K-- + 2K+-)/4``, ``K_[1] = (K++ - K--)/2``, ``K_[2] = (K++ + K-- - 2K+-)/4``.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (2, 2):
        raise ParameterError(f"the gamma basis is for two inputs: K must have shape (..., 2, 2), got {K.shape}")
    pp, mm, pm = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
    return (pp + mm + 2 * pm) / 4, (pp - mm) / 2, (pp + mm - 2 * pm) / 4


def from_gamma(K0, K1, K2) -> np.ndarray:
    """Inverse of :func:`gamma_components`: the ``(..., 2, 2)`` kernel on inputs (x_+, x_-)."""
    K0, K1, K2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (K0, K1, K2)))
    out = np.empty(K0.shape + (2, 2))
    out[..., 0, 0] = K0 + K1 + K2
    out[..., 1, 1] = K0 - K1 + K2
    out[..., 0, 1] = out[..., 1, 0] = K0 - K2
    return out


@dataclass(frozen=True)
class DeltaFlow:
    """delta-expansion of the kernel of two nearby inputs ``x_{+-} = x_0 +- dx/2``, per layer (shape (L,)).

    ``K00`` is the midpoint kernel; ``dK1`` is O(dx), ``ddK2`` and ``ddK0`` are O(dx^2), so that
    ``K_[0] = K00 + ddK0 + O(dx^4)``, ``K_[1] = dK1 + O(dx^3)``, ``K_[2] = ddK2 + O(dx^4)``.
    """

    net: MLP
    K00: np.ndarray
    dK1: np.ndarray
    ddK2: np.ndarray
    ddK0: np.ndarray

    def kernel(self, l: int, scale: float = 1.0) -> np.ndarray:
        """The 2x2 kernel of layer l on (x_+, x_-) for the separation ``scale * dx`` (to O(dx^2))."""
        self.net._check_layer(l)
        i = l - 1
        return from_gamma(self.K00[i] + scale**2 * self.ddK0[i], scale * self.dK1[i], scale**2 * self.ddK2[i])


def midpoint_and_separation(net: MLP, x0, dx) -> tuple[np.ndarray, np.ndarray]:
    """Validate the midpoint ``x0`` and separation ``dx`` of two nearby inputs ``x0 +- dx/2``: ``(n_0,)`` each.
    The delta expansion is derived for plain layer steps only: residual networks raise :class:`ParameterError`."""
    if getattr(net, "residual", False):
        raise ParameterError("the delta expansion (delta_flow, delta_finite_width) is derived for plain MLPs only; for "
                             "a residual network (gamma != 0 or xi != 1) use kernel_flow / finite_width on the two "
                             "inputs x0 +- dx/2", "net")
    for name, v in (("x0", x0), ("dx", dx)):
        if np.ndim(v) != 1:
            raise ParameterError(f"{name} must be one input of shape (n_0,) = ({net.n0},), got shape {np.shape(v)}")
    return net.inputs(x0)[0], net.inputs(dx)[0]


#: relative miss of the delta expansion's squared distance ``E (z_+ - z_-)^2`` against the exact kernel flow of
#: ``x0 +- dx/2`` above which the expansion carries a ``"truncation"`` caveat (dx is not small)
DELTA_TOLERANCE = 0.01
#: layers on which :func:`separation_caveat` compares (the cost of a two-input kernel flow through them)
DELTA_CHECK_LAYERS = 16


def separation_caveat(net: MLP, x0, dx, dist2) -> Caveat | None:
    """A ``"truncation"`` caveat where the delta expansion's squared distance ``dist2`` ``(L,)`` (``4 K_[2]``) misses
    that of the exact kernel flow of the two inputs ``x0 +- dx/2`` by more than :data:`DELTA_TOLERANCE`: the
    separation is not small and the expansion's neglected O(dx^3) and O(dx^4) terms are not. Judged only at layers
    where the exact distance is resolved (above 1e-6 of the inputs' variances: below, the expansion is the better of
    the two, which is what it is for), on the first :data:`DELTA_CHECK_LAYERS` layers (one two-input flow there: a
    separation too large for the expansion shows from the first nonlinear layer on), and not at all where the exact
    flow cannot be taken (it reports itself)."""
    depth = min(net.L, DELTA_CHECK_LAYERS)
    try:
        with np.errstate(all="ignore"):
            K = kernel_flow(net.truncated(depth, net.widths[depth]), np.stack([x0 + dx / 2, x0 - dx / 2])).K
    except PdltError:
        return None
    exact = K[:, 0, 0] + K[:, 1, 1] - 2.0 * K[:, 0, 1]
    dist2 = np.asarray(dist2, dtype=np.float64)[:depth]
    resolved = (exact > 1e-6 * (K[:, 0, 0] + K[:, 1, 1])) & np.isfinite(dist2)
    miss = np.where(resolved, np.abs(dist2 - exact) / np.where(resolved, exact, 1.0), 0.0)
    if not np.max(miss) > DELTA_TOLERANCE:
        return None
    l = int(np.argmax(miss > DELTA_TOLERANCE)) + 1
    worst = float(np.max(miss))
    return Caveat("truncation", f"the delta expansion's squared distance E(z+ - z-)^2 misses the exact kernel flow of "
                                f"x0 +- dx/2 by {miss[l - 1]:.2g} at layer l = {l} (up to {worst:.2g}; tolerance "
                                f"{DELTA_TOLERANCE:g}): dx is not small, so the neglected orders in dx are not; use "
                                "kernel_flow / finite_width on the two inputs", l, worst)


def delta_flow(net: MLP, x0, dx) -> DeltaFlow:
    """Flow the delta-expansion coefficients for inputs ``x_0 +- dx/2`` (PDLT section 5.1).

    ``x0``, ``dx``: ``(n_0,)``. First layer: ``K00 = C_b + C_W x0.x0/n_0``, ``dK1 = C_W x0.dx/n_0``,
    ``ddK2 = C_W dx.dx/(4 n_0)``, ``ddK0 = 0``.

    For smooth activations the neglected terms are O(dx^4) in ``K_[0], K_[2]`` and O(dx^3) in ``K_[1]``. For
    kinked ones (ReLU family) the arc-cosine kernel has a ``|psi|^3`` term, so the remainder of the O(dx^2)
    coefficients is O(|dx|^3) (PDLT section 5.5 treats finite angles exactly; tests check both orders).
    """
    from .criticality import single_input

    x0, dx = midpoint_and_separation(net, x0, dx)
    C_W, C_b = net.hyper(1)
    G = metric(np.stack([x0, dx]), C_W, 0.0)   # the first layer's metric of (x0, dx): [[K00 - C_b, dK1], [dK1, 4 ddK2]]
    K00 = [C_b + G[0, 0]]
    dK1 = [G[0, 1]]
    ddK2 = [G[1, 1] / 4]
    ddK0 = [0.0]
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        s = single_input(net.activation, K00[-1], C_W)
        K00.append(C_b + C_W * s.g)
        dK1.append(s.chi_par * dK1[-1])
        ddK2.append(s.chi_perp * ddK2[-1] + s.h * dK1[-2] ** 2)
        ddK0.append(s.chi_par * ddK0[-1] + C_W * (ddK2[-2] * s.S + 0.5 * dK1[-2] ** 2 * s.dS))
        _check_finite(np.array([K00[-1], dK1[-1], ddK2[-1], ddK0[-1]]), l + 1, "delta-expansion")
    arr = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    caveat = separation_caveat(net, x0, dx, 4.0 * arr(ddK2))
    if caveat is not None:
        from ..errors import emit

        emit((caveat,), stacklevel=3)
    return DeltaFlow(net=net, K00=arr(K00), dK1=arr(dK1), ddK2=arr(ddK2), ddK0=arr(ddK0))

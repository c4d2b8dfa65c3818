r"""Influence: how the posterior at the test inputs responds to each training datapoint (derivations/README.md §20).

Datapoints are particles, and the posterior (:func:`pdlt.posterior`, PDLT ch. 6) is what their interaction
produces. The influence of training point ``a`` on test point ``b`` is the response of the posterior there to a
small change of that datapoint: of its target (``d m_b / d y_a``) or of its position (``d m_b / d x_a``), for the
posterior mean ``m`` and the posterior variance.

**Infinite width** (exact). With ``C = K_AA + s^2 1``, ``W = K_BA C^{-1}``, ``u = C^{-1} y``,

    d m_{b,i} / d y_{a,j} = delta_ij W_ba,
    d m_{b,i} = dK_ba u_{a,i} - W_ba (r_A . u_i) - (W r_A)_b u_{a,i} + W_ba r_a u_{a,i},
    d Var_b  = -2 dK_ba W_ba + 2 W_ba (r_A . W_b) - W_ba^2 r_a,

where moving ``x_a`` changes only row ``a`` of the last layer's kernel, ``r = dK^(L)_{a .}``
(:func:`pdlt.theory.kernel.kernel_input_jacobian`, forward mode through the layers), ``r_A`` its training part
(:mod:`pdlt.conditioning`, shared with the Monte Carlo). The NNGP variance does not depend on the targets.

**Order 1/n.** The posterior's 1/n coefficients (:func:`pdlt.theory.bayes.posterior_expansion`) are polynomials of
low degree in the targets (the mean's odd and cubic, the covariance's even and quadratic), so the five-point
central stencil in ``y`` differentiates them exactly (its error is ``h^4 f^(5) / 30 = 0``); any step works, and one
of the targets' scale keeps round-off at the level of the terms.

In ``x`` the statistics ``K, G1, V`` of the last layer depend on the inputs only through their Gram matrix
``x x^T`` (layer 1 is ``C_b + C_W x x^T / n_0``), so the gradient with respect to ``x_a`` lies in the span of the
inputs: it is assembled from five-point stencils of the whole O(1/n) theory along an orthonormal basis of that span,
``rank(x) <= min(d, n_0)`` directions per training input (error ``O(h^4)``; ``h`` is ``10^-3`` of the smaller of
the input's scale and its distance to the nearest other distinct input). The basis is rotated off the inputs, so
that a moved input does not stay parallel to a copy of itself (a test input on a training input); with all inputs
parallel there is no other direction, and that case is refused (naming ``wrt``).
The stencils at ``h`` and ``2h`` are compared: where they differ by more than ``10^-3`` of the response (the theory
is not smooth on the step's scale, e.g. next to a coincident input) a ``"differencing"`` caveat gives the size.

**Cost.** Infinite width: one kernel flow, two pair averages per layer and ``O(L n_A n_0 d)``. Order 1/n: V
over all ``d = n_A + n_B`` inputs (``d^4`` entries, :func:`pdlt.finite_width`), once for the target response and
``4 n_A rank(x)`` more times for the position response (``wrt=("y",)`` skips it). Measured on 2 cores (tanh,
L = 10): 64 x 64 points at infinite width 2.7 s; 4 x 4 points to O(1/n) 2.6 s for the target response, 79 s with the
position response (48 theories on 8 inputs).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._x64 import float64
from ..architecture import MLP, checked_training_block, posterior_problem
from ..errors import Caveat, ParameterError, TruncationWarning, emit, truncation_caveat
from ..validation import check_subset

__all__ = ["Influence", "influence", "target_response", "TemperatureSweep", "temperature_sweep"]

# step of the position stencils, in units of the inputs' scale (and of the distance to the nearest other input):
# the stencil's error is ~ (h/scale)^4 ~ 1e-12 relative, round-off ~ eps/h ~ 1e-13
_X_STEP = 1e-3
_WRT = ("y", "x")
# central differences at h and 2h differing by more than this fraction of the response: a caveat
_SPREAD = 1e-3
# below this fraction of the prior's scale a leading part is round-off (as pdlt.theory.bayes floors the posterior's)
_ZERO_SCALE = 1e-8


@dataclass(frozen=True)
class Influence:
    r"""Responses of the posterior at the test inputs to the training datapoints (module docstring).

    Shapes (``n_B`` test inputs, ``n_A`` training inputs, ``n_L`` outputs, ``n_0`` input dimension):

    * ``mean_dy_infinite`` ``(n_B, n_A)``: ``d m_{b,i} / d y_{a,i}`` at infinite width, ``K_BA (K_AA + s^2)^{-1}``
      (the same for every output; outputs do not talk to each other there);
    * ``mean_dx_infinite`` ``(n_B, n_L, n_A, n_0)``: ``d m_{b,i} / d x_{a,k}``;
    * ``var_dx_infinite`` ``(n_B, n_A, n_0)``: ``d Var(z_{i;b} | y) / d x_{a,k}`` (the same for every output);
    * ``mean_dy_correction`` ``(n_B, n_L, n_A, n_L)``: the 1/n coefficient of ``d m_{b,i} / d y_{a,j}`` (at finite
      width an output's mean also responds to the other outputs' targets);
    * ``mean_dx_correction`` ``(n_B, n_L, n_A, n_0)``, ``var_dy_correction`` ``(n_B, n_L, n_A, n_L)``,
      ``var_dx_correction`` ``(n_B, n_L, n_A, n_0)``: the 1/n coefficients (``n = n_{L-1}``). The variance responds
      to the targets only at finite width.

    Corrections not computed (``order=0``, or a response left out by ``wrt``) are None. ``caveats``: the
    finite-width theory's; a ``"truncation"`` caveat where a response's 1/n part is not small against its
    infinite-width part, or against the posterior's own scale per unit input where that is larger (``var_dy``: the
    NNGP posterior variance, for a change of the targets by their scale); a ``"differencing"`` caveat where the position stencils
    disagree (module docstring).
    """

    mean_dy_infinite: np.ndarray
    mean_dx_infinite: np.ndarray
    var_dx_infinite: np.ndarray
    n: int
    noise_var: float
    order: int
    mean_dy_correction: np.ndarray | None = None
    mean_dx_correction: np.ndarray | None = None
    var_dy_correction: np.ndarray | None = None
    var_dx_correction: np.ndarray | None = None
    caveats: tuple[Caveat, ...] = ()

    def _total(self, lead, corr, name):
        if corr is None:
            if self.order == 0:
                return lead
            raise ParameterError(f"{name}: this response was not computed; pass wrt=('y', 'x')", "wrt")
        return lead + corr / self.n

    @property
    def mean_dy(self) -> np.ndarray:
        """``d m_{b,i} / d y_{a,j}`` ``(n_B, n_L, n_A, n_L)`` to the order computed."""
        nL = self.mean_dx_infinite.shape[1]
        lead = np.einsum("ba,ij->biaj", self.mean_dy_infinite, np.eye(nL))
        return self._total(lead, self.mean_dy_correction, "mean_dy")

    @property
    def mean_dx(self) -> np.ndarray:
        """``d m_{b,i} / d x_{a,k}`` ``(n_B, n_L, n_A, n_0)`` to the order computed."""
        return self._total(self.mean_dx_infinite, self.mean_dx_correction, "mean_dx")

    @property
    def var_dy(self) -> np.ndarray:
        """``d Var(z_{i;b} | y) / d y_{a,j}`` ``(n_B, n_L, n_A, n_L)``: zero at infinite width."""
        nB, nL, nA, _ = self.mean_dx_infinite.shape
        return self._total(np.zeros((nB, nL, nA, nL)), self.var_dy_correction, "var_dy")

    @property
    def var_dx(self) -> np.ndarray:
        """``d Var(z_{i;b} | y) / d x_{a,k}`` ``(n_B, n_L, n_A, n_0)`` to the order computed."""
        nL = self.mean_dx_infinite.shape[1]
        lead = np.repeat(self.var_dx_infinite[:, None], nL, axis=1)
        return self._total(lead, self.var_dx_correction, "var_dx")


def check_order(order) -> int:
    """``order`` 0 or 1, else a :class:`ParameterError` naming it."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order not in (0, 1):
        raise ParameterError(f"order must be 0 (infinite width) or 1 (to O(1/n)), got {order!r}", "order")
    return int(order)


def _leading(net: MLP, x, y, nA: int, noise_var: float):
    """Exact infinite-width responses ``(cond, mean_dx, var_dx, round-off caveat or None)`` (:mod:`pdlt.conditioning`
    at G = K, with the kernel's exact input Jacobian)."""
    from ..conditioning import condition, row_response
    from .kernel import kernel_accuracy, kernel_flow, kernel_input_jacobian

    flow = kernel_flow(net, x)
    cond = condition(flow.K[-1], y, nA, noise_var)
    roundoff = checked_training_block(cond.eigenvalues, noise_var, kernel_accuracy(net.activation, net.L),
                                      "influence", "infinite-width kernel", net.L)
    r = kernel_input_jacobian(net, x, index=np.arange(nA), flow=flow)   # (nA, n0, d): dK_{a .} / dx_{a,k}
    mean_dx, var_dx, _ = row_response(cond, r, nA)
    return cond, mean_dx, var_dx, roundoff


def _corrections(net: MLP, x, y, nA: int, noise_var: float):
    """``(dm (n_B, n_L), dvar (n_B, n_L), caveats)``: the posterior's 1/n coefficients at inputs ``x``."""
    from .bayes import last_layer_statistics, output_variances, posterior_expansion

    K, G1, V, cav = last_layer_statistics(net, x)
    _, dm, _, _, dcov = posterior_expansion(K, G1, V, y, nA, noise_var)
    return dm, output_variances(dcov), cav


def _stencil(f, h: float):
    """Five-point central derivative ``[f(-2h) - 8 f(-h) + 8 f(h) - f(2h)] / (12 h)`` of a tuple-valued f, and, per
    component, the difference of the central differences at ``h`` and ``2h`` (the O(h^2) term the stencil removes:
    the scale of the differencing error where f is not smooth on the step's scale)."""
    vals = [f(t) for t in (-2 * h, -h, h, 2 * h)]
    derivative = tuple((a - 8 * b + 8 * c - d) / (12 * h) for a, b, c, d in zip(*vals))
    spread = tuple(np.abs((c - b) / (2 * h) - (d - a) / (4 * h)) for a, b, c, d in zip(*vals))
    return derivative, spread


def target_step(y, K) -> float:
    """A step in the targets on their scale (or the kernel's; 1 when both vanish): the stencils in y are exact for
    any step, so it only sets the round-off."""
    h = float(max(np.max(np.abs(y)), np.sqrt(np.max(np.abs(np.diagonal(K))))))
    return h if h > 0 and np.isfinite(h) else 1.0


def target_response(K, G1, V, y, nA: int, noise_var: float):
    """1/n coefficients of ``d m / d y`` and ``d Var / d y`` ``(n_B, n_L, n_A, n_L)`` from the last layer's
    statistics ``K, G1`` ``(d, d)``, ``V`` ``(d, d, d, d)`` on the training then test inputs, at targets ``y``
    ``(n_A, n_L)``: five-point stencils of :func:`pdlt.theory.bayes.posterior_expansion`, exact (module docstring)."""
    from .bayes import output_variances, posterior_expansion

    nL = y.shape[1]
    nB = K.shape[0] - nA
    h = target_step(y, K)
    dm_dy = np.empty((nB, nL, nA, nL))
    dv_dy = np.empty((nB, nL, nA, nL))

    for a in range(nA):
        for j in range(nL):
            def f(t):
                yy = y.copy()
                yy[a, j] += t
                _, dm, _, _, dcov = posterior_expansion(K, G1, V, yy, nA, noise_var)
                return dm, output_variances(dcov)

            (dm_dy[:, :, a, j], dv_dy[:, :, a, j]), _ = _stencil(f, h)
    return dm_dy, dv_dy


def _span_basis(x):
    """An orthonormal basis ``(r, n_0)`` of the span of the inputs' rows, rotated off every input direction: a fixed
    rotation within the span (a QR factor of a seeded Gaussian matrix), so that no basis vector is parallel to an
    input (moving an input along its own direction keeps it parallel to a copy of itself)."""
    n0 = x.shape[1]
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    if not sv.size or sv.max() == 0:
        return np.zeros((0, n0))
    span = vt[sv > sv.max() * 1e-12]
    r = span.shape[0]
    Q, _ = np.linalg.qr(np.random.default_rng(20261205).normal(size=(r, r)))
    return Q.T @ span


def _dx_corrections(net, x, y, nA, noise_var):
    """1/n coefficients of ``d m / d x_a`` and ``d Var / d x_a`` ``(n_B, n_L, n_A, n_0)``: five-point stencils of
    the O(1/n) theory along an orthonormal basis of the span of the inputs (module docstring), and the largest
    relative difference between the stencils at ``h`` and ``2h`` (the differencing error's scale)."""
    d, n0 = x.shape
    nB, nL = d - nA, y.shape[1]
    basis = _span_basis(x)
    scale = np.sqrt(np.mean(np.sum(x * x, axis=1)))
    dm_dx = np.zeros((nB, nL, nA, n0))
    dv_dx = np.zeros((nB, nL, nA, n0))
    spread_m = np.zeros((nB, nL, nA, n0))
    spread_v = np.zeros((nB, nL, nA, n0))
    distinct = np.unique(x, axis=0)
    if basis.shape[0] == 1 and distinct.shape[0] < d:
        # one direction only: a moved input stays parallel to its copy, which is singular without bias
        raise ParameterError("the O(1/n) position response needs the inputs to span at least two directions when an "
                             "input is repeated (a test input on a training input): here they are all parallel; use "
                             "wrt=('y',), or inputs that span a plane", "wrt")
    for a in range(nA):
        gaps = np.linalg.norm(distinct - x[a], axis=1)
        gaps = gaps[gaps > 0]
        h = _X_STEP * min(max(np.linalg.norm(x[a]), scale), gaps.min() if gaps.size else np.inf)
        for q in basis:
            def f(t):
                xx = x.copy()
                xx[a] += t * q
                return _corrections(net, xx, y, nA, noise_var)[:2]

            (gm, gv), (sm, sv) = _stencil(f, h)
            dm_dx[:, :, a] += gm[..., None] * q
            dv_dx[:, :, a] += gv[..., None] * q
            spread_m[:, :, a] += sm[..., None] * np.abs(q)
            spread_v[:, :, a] += sv[..., None] * np.abs(q)
    rel = max(correction_ratio(spread_m, dm_dx, 1), correction_ratio(spread_v, dv_dx, 1))
    return dm_dx, dv_dx, rel


def correction_ratio(corr, lead, n, floor: float = 0.0) -> float:
    """``max |corr| / n`` against ``max |lead|``, the latter floored at ``floor`` (a round-off scale: a leading part
    that vanishes by symmetry would otherwise make any correction infinitely large)."""
    scale = max(float(np.max(np.abs(lead))) if np.size(lead) else 0.0, floor)
    return float(np.max(np.abs(corr)) / n / scale) if scale > 0 else (0.0 if not np.any(corr) else np.inf)


@float64
def influence(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0, order: int = 1, wrt=_WRT) -> Influence:
    """How the posterior at ``x_test`` responds to each training datapoint: an :class:`Influence` (module docstring).

    Arguments as :func:`pdlt.posterior` (``x_train`` ``(n_A, n_0)``, ``y_train`` ``(n_A, n_L)`` or ``(n_A,)``,
    ``x_test`` ``(n_B, n_0)``, ``noise_var`` = s^2 >= 0, the precision scale); ``order`` 0 (infinite width, exact,
    cheap) or 1 (adds the 1/n coefficients); ``wrt``: the responses whose 1/n parts to compute, ``("y", "x")`` by
    default (``("y",)`` needs one O(1/n) theory, ``"x"`` ``4 n_A rank(x)`` of them).

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("linear", (2, 30, 30, 1))
    >>> inf = pdlt.influence(net, [[1.0, 0.0]], [0.5], [[0.8, 0.6]], noise_var=0.1, order=0)
    >>> float(np.round(inf.mean_dy_infinite[0, 0], 6))   # K_BA / (K_AA + s^2) = 0.4 / 0.6
    0.666667
    """
    order = check_order(order)
    wrt = check_subset(wrt, "wrt", _WRT)
    prob = posterior_problem(net, x_train, y_train, x_test, noise_var, min_depth=1)
    xa, xb, y, s2 = prob.x_train, prob.x_test, prob.y_train, prob.noise_var
    nA = xa.shape[0]
    x = np.concatenate([xa, xb])
    cond, mean_dx, var_dx, roundoff = _leading(net, x, y, nA, s2)
    W = cond.W
    n = int(net.widths[net.L - 1])
    fields: dict = {}
    caveats: tuple[Caveat, ...] = ()
    if order == 1:
        from .bayes import last_layer_statistics

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)      # collected as caveats, issued once below
            K, G1, V, caveats = last_layer_statistics(net, x)
            if "y" in wrt:
                dm, dv = target_response(K, G1, V, y, nA, s2)
                fields.update(mean_dy_correction=dm, var_dy_correction=dv)
            if "x" in wrt:
                dm, dv, spread = _dx_corrections(net, x, y, nA, s2)
                fields.update(mean_dx_correction=dm, var_dx_correction=dv)
                if spread > _SPREAD:
                    caveats = caveats + (Caveat(
                        "differencing", f"influence d/dx at O(1/n): the central differences at steps h and 2h differ "
                        f"by {spread:.2g} of the response (threshold {_SPREAD:g}): the O(1/n) theory is not smooth on "
                        "the step's scale (a coincident or nearly coincident input?); the position response's 1/n part "
                        "may be off by up to that fraction; separate the inputs or use wrt=('y',)", net.L, spread),)
        advice = "widen the network, raise noise_var, or bring the targets within a few prior standard deviations"
        lead_dy = np.einsum("ba,ij->biaj", W, np.eye(y.shape[1]))
        # what a response is measured against when its leading part is smaller (it can vanish by symmetry): the
        # posterior's own scale per unit of input (as pdlt.posterior measures its corrections), floored at round-off
        prior = float(np.max(np.abs(np.diagonal(K)[nA:])))
        xs = float(np.sqrt(np.mean(np.sum(x * x, axis=1)))) or 1.0
        var0 = max(float(np.max(cond.var)), _ZERO_SCALE * prior)
        m_scale = max(float(np.max(np.abs(cond.mean))), np.sqrt(var0))
        floors = {"mean_dy_correction": _ZERO_SCALE, "mean_dx_correction": m_scale / xs, "var_dx_correction": var0 / xs}
        checks = [("mean_dy_correction", lead_dy, "d(mean)/dy", r"\partial\,\text{mean}/\partial y"),
                  ("mean_dx_correction", mean_dx, "d(mean)/dx", r"\partial\,\text{mean}/\partial x"),
                  ("var_dx_correction", var_dx[:, None], "d(variance)/dx", r"\partial\,\text{variance}/\partial x")]
        for name, lead, what, tex in checks:
            if name in fields:
                r = correction_ratio(fields[name], lead, n, floors[name])
                c = truncation_caveat(r, f"influence {what}: max |1/n part| / max |infinite-width part|", net.L,
                                      advice, rf"influence ${tex}$: $\max|1/n\ \text{{part}}|/"
                                      r"\max|\text{infinite-width part}|$")
                caveats = caveats + ((c,) if c is not None else ())
        if "var_dy_correction" in fields:
            # no infinite-width part: the variance's change when a target moves by the targets' scale, against the
            # NNGP posterior variance
            ys = max(float(np.max(np.abs(y))), float(np.sqrt(max(np.max(cond.var), 0.0))))
            r = correction_ratio(fields["var_dy_correction"] * ys, var0, n)
            c = truncation_caveat(r, "influence d(variance)/dy: max |1/n part| x target scale / NNGP posterior "
                                  "variance", net.L, advice,
                                  r"influence $\partial\,\text{variance}/\partial y$: $\max|1/n\ \text{part}| \times"
                                  r" \text{target scale}/\text{NNGP posterior variance}$")
            caveats = caveats + ((c,) if c is not None else ())
    caveats += (roundoff,) if roundoff is not None else ()
    emit(caveats)
    return Influence(mean_dy_infinite=W, mean_dx_infinite=mean_dx, var_dx_infinite=var_dx, n=n, noise_var=float(s2),
                     order=order, caveats=tuple(caveats), **fields)


@dataclass(frozen=True)
class TemperatureSweep:
    """:func:`influence` at several precision scales: ``noise_vars`` ``(T,)`` and one :class:`Influence` each;
    :meth:`stack` gives any response with a leading temperature axis."""

    noise_vars: np.ndarray
    influences: tuple[Influence, ...]

    def stack(self, name: str) -> np.ndarray:
        """``(T, ...)``: the response ``name`` (an :class:`Influence` attribute, e.g. ``"mean_dy"``) per temperature."""
        names = ("mean_dy", "mean_dx", "var_dy", "var_dx", "mean_dy_infinite", "mean_dx_infinite", "var_dx_infinite",
                 "mean_dy_correction", "mean_dx_correction", "var_dy_correction", "var_dx_correction")
        if name not in names:
            raise ParameterError(f"unknown response {name!r}; one of {names}", "name")
        vals = [getattr(inf, name) for inf in self.influences]
        if any(v is None for v in vals):
            raise ParameterError(f"{name} was not computed (order=0, or left out by wrt)", "name")
        return np.stack(vals)


def temperature_sweep(net: MLP, x_train, y_train, x_test, noise_vars, order: int = 1, wrt=_WRT) -> TemperatureSweep:
    """:func:`influence` at each noise variance in ``noise_vars`` (the temperature of the posterior: how far the
    data is trusted). Small noise resolves more of the kernel's modes, and the 1/n parts grow as it shrinks (their
    caveats say where they stop being small).

    >>> import pdlt
    >>> net = pdlt.MLP("linear", (2, 8, 8, 1))
    >>> sw = pdlt.theory.influence.temperature_sweep(net, [[1.0, 0.0]], [0.5], [[0.8, 0.6]], [0.1, 1.0], order=0)
    >>> sw.stack("mean_dy_infinite")[:, 0, 0].round(4).tolist()     # 0.4 / (0.5 + s^2)
    [0.6667, 0.2667]
    """
    try:
        s = np.asarray(noise_vars, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ParameterError(f"noise_vars must be finite values >= 0, got {noise_vars!r}", "noise_vars") from None
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ParameterError(f"noise_vars must be finite values >= 0, got {noise_vars!r}", "noise_vars")
    return TemperatureSweep(noise_vars=s, influences=tuple(
        influence(net, x_train, y_train, x_test, noise_var=float(v), order=order, wrt=wrt) for v in s))

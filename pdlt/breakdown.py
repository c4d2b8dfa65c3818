r"""Where each order of the 1/n expansion holds: the breakdown map of one input's kurtosis against depth over width.

A neuron's excess kurtosis ``kappa_4(z)/E[z^2]^2 = 3 Var G/(E G)^2`` (one input; G the layer's metric) is the
cleanest measure of the finite-width interaction: 0 at infinite width, ``3 V/(n K^2) ~ 3 nu l/n`` at O(1/n). For a
family of networks (an activation at fixed ``C_W``, ``C_b``) and a width n, :func:`breakdown_curve` gives it at every
depth ``l = 1..L`` (``L ~ 1.5 n``) three ways:

* ``order1``: the O(1/n) prediction ``3 V/(n K^2)``; ``order2``: with the O(1/n^2) terms (:func:`pdlt.nnlo`);
* ``all_orders``: the metric chain closed by Gauss rules (:func:`pdlt.all_orders`; exact for the scale-invariant
  class) with its own error estimate (the change from M - 1 to M nodes);
* ``mc``: Monte Carlo of sampled networks (:func:`pdlt.sample`, the exact layer sampler), with jackknife errors.

**Honest Monte Carlo error bars at large depth.** Beyond ``nu l/n ~ 1`` the law of G is heavy-tailed (for ReLU its
fourth moment grows like ``~4^l`` at n = 8), and the jackknife over batches *underestimates* the standard error of
the fourth moment: ReLU at n = 16, l = 24 with 2 x 10^5 networks gives 375 +- 37 against the exact 1558. So each
Monte Carlo point also gets the standard error the theory predicts for the estimator itself (the delta method on the
per-network averages ``X``, ``Y`` of ``z^2``, ``z^4`` over the ``n_l`` neurons of the layer. Measured on the rows,
given G, ``E X = G``, ``E Y = 3 G^2``, ``Var X = 2 G^2/n_l``, ``Var Y = 96 G^4/n_l``, ``Cov(X, Y) = 12 G^3/n_l``, so

    Var X = Var G + 2 E G^2/n_l,    Var Y = 9 Var G^2 + 96 E G^4/n_l,    Cov(X, Y) = 3 Cov(G, G^2) + 12 E G^3/n_l;

the markov sampler reports ``X = G``, ``Y = 3 G^2`` themselves after layer 1
(:func:`pdlt.montecarlo.samplers.measured_on_metric`), and there the ``1/n_l`` terms are absent. ``f = Y/X^2 - 3``
has ``Var f ~ (grad f)^T Sigma grad f / N`` with ``grad f = (-2 E Y/(E X)^3, 1/(E X)^2)``), from the closure's first
four cumulants of G. A point is ``reliable`` when that predicted error is at most 10% of the
value and the jackknife error is at least half of it; the others are drawn hollow and not used.

**The 5 % table** (:meth:`BreakdownCurve.holds_until`): the largest ``l/n`` up to which a truncated prediction stays
within 5 % of the all-orders value at every layer, for each order; the all-orders value is the reference only where
its own error estimate is below 1 % (else the entry says the closure stopped being a reference first), and it is
itself checked against the reliable Monte Carlo points (``max |z|``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .architecture import MLP
from .errors import ParameterError

__all__ = ["BreakdownCase", "BreakdownCurve", "breakdown_cases", "breakdown_curve", "breakdown_table", "breakdown_latex",
           "breakdown_markdown"]

#: a Monte Carlo point is used when the predicted relative standard error is at most this
_MAX_REL_SE = 0.1
#: the all-orders value is a reference for the 5 % table only where its own relative error is below this
_REF_TOL = 0.01


@dataclass(frozen=True)
class BreakdownCase:
    """A family of networks: activation and (uniform) ``C_W``, ``C_b``; ``label`` (plain text) for tables and plots."""

    label: str
    activation: str
    C_W: float
    C_b: float = 0.0

    @property
    def tex(self) -> str:
        """``label`` as LaTeX text (formulas such as ``C_W`` as math), also for matplotlib's mathtext."""
        from .latex import prose_label

        return prose_label(self.label)


def breakdown_cases() -> tuple[BreakdownCase, ...]:
    """tanh, ReLU and GELU at criticality (:func:`pdlt.criticality`) and tanh in the chaotic phase (``C_W = 1.5``,
    ``chi_perp > 1``): the three universality classes of the book and one case off criticality."""
    from .theory.criticality import criticality

    out = []
    for name in ("tanh", "relu", "gelu"):
        c = criticality(name)
        out.append(BreakdownCase(f"{name} (critical)", name, float(c.C_W), float(c.C_b)))
    out.append(BreakdownCase("tanh (chaotic, C_W = 1.5)", "tanh", 1.5, 0.0))
    return tuple(out)


@dataclass(frozen=True)
class BreakdownCurve:
    """One family at one width n (module docstring). Arrays ``(L,)`` over layers l = 1..L (index l - 1); ``mc``,
    ``mc_se`` and ``mc_predicted_se`` are None without Monte Carlo (``n_networks = 0``)."""

    case: BreakdownCase
    n: int
    L: int
    order1: np.ndarray
    order2: np.ndarray
    all_orders: np.ndarray
    all_orders_error: np.ndarray
    n_networks: int = 0
    mc: np.ndarray | None = None
    mc_se: np.ndarray | None = None
    mc_predicted_se: np.ndarray | None = None

    @property
    def layers(self) -> np.ndarray:
        return np.arange(1, self.L + 1)

    @property
    def ratio(self) -> np.ndarray:
        """``l/n`` per layer."""
        return self.layers / self.n

    @property
    def reliable(self) -> np.ndarray:
        """Monte Carlo points whose error bar can be trusted (module docstring); all False without Monte Carlo."""
        if self.mc is None:
            return np.zeros(self.L, dtype=bool)
        pred = self.mc_predicted_se
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (pred <= _MAX_REL_SE * np.abs(self.all_orders)) & (self.mc_se >= 0.5 * pred)
        return ok & (self.layers >= 2) & np.isfinite(self.mc_se)

    def mc_z(self) -> np.ndarray:
        """``(mc - all_orders)/se`` at the reliable points (se: the Monte Carlo error and the closure's error estimate
        in quadrature); NaN elsewhere (no Monte Carlo, or a point not reliable)."""
        z = np.full(self.L, np.nan)
        if self.mc is not None:
            r = self.reliable
            z[r] = (self.mc[r] - self.all_orders[r]) / np.hypot(self.mc_se[r], self.all_orders_error[r])
        return z

    def holds_until(self, order: int, tol: float = 0.05) -> tuple[float, str]:
        """``(l/n, note)``: the largest ``l/n`` up to which the O(1/n^order) kurtosis is within ``tol`` (relative) of
        the all-orders value at every layer ``2..l``. ``note`` is ``""``, ``"beyond L"`` (it never left the band up
        to the last layer) or ``"closure"`` (the closure's own error passed 1 % first: the value is a lower bound)."""
        if isinstance(order, (bool, np.bool_)) or order not in (1, 2):
            raise ParameterError(f"order must be 1 or 2, got {order!r}", "order")
        if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.integer, np.floating)) or not (
                0 < tol < np.inf):
            raise ParameterError(f"tol must be a relative tolerance > 0, got {tol!r}", "tol")
        pred = self.order1 if order == 1 else self.order2
        last = 1
        for l in range(2, self.L + 1):
            ref, err = self.all_orders[l - 1], self.all_orders_error[l - 1]
            if err > _REF_TOL * abs(ref):
                return last / self.n, "closure"
            if abs(pred[l - 1] - ref) > tol * abs(ref):
                return last / self.n, ""
            last = l
        return last / self.n, "beyond L"


def _predicted_se(ao, widths, n_networks: int, on_metric) -> np.ndarray:
    """Delta-method standard error of the Monte Carlo kurtosis at each layer (module docstring), ``(L,)``; inf where it
    cannot be predicted (kappa_4 of G beyond float64's range). ``on_metric`` ``(L,)`` bool: the layers whose
    statistics are conditional on G (no within-network terms)."""
    if ao.kappa4 is None:           # kappa_4 of G left float64's range: no prediction, the points are not used
        return np.full(ao.mean.shape, np.inf)
    m, v, k3, k4 = ao.mean, ao.var, ao.kappa3, ao.kappa4
    EG2 = v + m * m
    EG3 = k3 + 3 * v * m + m**3
    EG4 = k4 + 4 * k3 * m + 3 * v * v + 6 * v * m * m + m**4
    # 1/n_l: the within-network noise of row-measured layers; conditional statistics have none
    nl = np.where(np.asarray(on_metric, dtype=bool), np.inf, np.asarray(widths[1:], dtype=float))
    VX = v + 2 * EG2 / nl
    VY = 9 * (EG4 - EG2**2) + 96 * EG4 / nl
    CXY = 3 * (EG3 - m * EG2) + 12 * EG3 / nl
    EX, EY = m, 3 * EG2
    with np.errstate(divide="ignore", invalid="ignore"):
        gx, gy = -2 * EY / EX**3, 1 / EX**2
        var = (gx * gx * VX + 2 * gx * gy * CXY + gy * gy * VY) / n_networks
    return np.sqrt(np.maximum(var, 0.0))


def breakdown_curve(case: BreakdownCase, n: int, L: int | None = None, *, ratio_max: float = 1.5,
                    n_networks: int = 0, seed: int = 0, x: float = 1.0, M: int = 8) -> BreakdownCurve:
    """The kurtosis of one input ``x`` (a scalar: ``n_0 = 1``) through ``L`` layers of width n (default
    ``L = round(ratio_max * n)``) of the family ``case``: O(1/n), O(1/n^2), all orders (M Gauss nodes, M >= 4) and,
    with ``n_networks > 0``, Monte Carlo (module docstring).

    Raises :class:`ParameterError` naming ``case``, ``x``, ``n`` (2..4096), ``L`` (2..10000), ``ratio_max``,
    ``n_networks`` or ``M`` for bad values, and
    whatever :func:`pdlt.nnlo` / :func:`pdlt.all_orders` raise for the activation (e.g. a kinked one that is not
    scale-invariant: no O(1/n^2) theory).
    """
    from .montecarlo.runner import sample
    from .montecarlo.samplers import measured_on_metric
    from .validation import check_int
    from .theory.metric_closure import all_orders
    from .theory.nnlo import nnlo

    if not isinstance(case, BreakdownCase):
        raise ParameterError(f"case must be a pdlt.BreakdownCase (e.g. one of pdlt.breakdown_cases()), got "
                             f"{type(case).__name__}", "case")
    if not (isinstance(case.C_W, (int, float)) and math.isfinite(case.C_W) and case.C_W > 0):
        raise ParameterError(f"case {case.label!r}: C_W must be a finite number > 0 (with C_W = 0 no layer sees "
                             f"the one below, and the kurtosis is undefined), got {case.C_W!r}", "case")
    try:
        if isinstance(x, (bool, str, bytes)):
            raise TypeError
        x = float(x)
    except (TypeError, ValueError):
        raise ParameterError(f"x is the one input's single coordinate (a real number), got {x!r}", "x") from None
    if not math.isfinite(x):
        raise ParameterError(f"x must be finite, got {x!r}", "x")
    n = check_int(n, "n", minimum=2, maximum=4096)
    if L is None:
        if not (isinstance(ratio_max, (int, float)) and not isinstance(ratio_max, bool) and 0 < ratio_max <= 20
                and math.isfinite(ratio_max)):
            raise ParameterError(f"ratio_max (the largest l/n) must be in (0, 20], got {ratio_max!r}", "ratio_max")
        L = max(2, int(round(ratio_max * n)))
        if L > 10_000:
            raise ParameterError(f"ratio_max * n = {ratio_max * n:g} layers is too deep (at most 10000)", "ratio_max")
    L = check_int(L, "L", minimum=2, maximum=10_000)
    n_networks = check_int(n_networks, "n_networks", minimum=0)
    if 0 < n_networks < 32:        # (the sampler's 32 batches for its error bars; it named its own n_samples)
        raise ParameterError(f"n_networks = {n_networks}: the Monte Carlo needs at least 32 networks (one per batch "
                             "of its jackknife error bars), or 0 for the theory alone", "n_networks")
    if n_networks == 1:
        raise ParameterError("n_networks must be 0 (theory only) or at least 2 (a standard error needs two)",
                             "n_networks")
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or not 4 <= M <= 12:
        raise ParameterError(f"M (Gauss nodes) must be an int in 4..12 (the predicted Monte Carlo error needs kappa_4 "
                             f"of G), got {M!r}", "M")
    widths = (1,) + (n,) * L
    net = MLP(case.activation, widths, C_W=case.C_W, C_b=case.C_b)
    xs = [float(x)]
    with warnings.catch_warnings():
        from .errors import TruncationWarning

        warnings.simplefilter("ignore", TruncationWarning)     # beyond the expansion's range is the point here
        pt = nnlo(net, xs)
        ao = all_orders(net, xs, M=M)
    ls = range(1, L + 1)
    o1 = np.array([pt.kurtosis(l, order=1) for l in ls])
    o2 = np.array([pt.kurtosis(l, order=2) for l in ls])
    full = np.array([ao.kurtosis(l) for l in ls])
    err = 3 * ao.error["relative_var"]          # M - 1 against M nodes, on 3 Var G/(E G)^2 itself
    kw = {}
    if n_networks:
        res = sample(net, np.array([xs]), n_networks, seed=seed, progress=False)
        k = res.kurtosis
        on_metric = measured_on_metric(res.config["method"], widths, (net.gamma, net.xi))
        kw = {"mc": np.asarray(k.mean)[:, 0], "mc_se": np.asarray(k.stderr)[:, 0],
              "mc_predicted_se": _predicted_se(ao, widths, n_networks, on_metric)}
    return BreakdownCurve(case=case, n=n, L=L, order1=o1, order2=o2, all_orders=full, all_orders_error=err,
                          n_networks=n_networks, **kw)


def breakdown_table(curves, tol: float = 0.05) -> list[dict]:
    """One row per curve: the family, n, L, networks, how far (``l/n``) O(1/n) and O(1/n^2) stay within ``tol`` of the
    all-orders value (:meth:`BreakdownCurve.holds_until`), and the largest ``|z|`` of the all-orders value against the
    reliable Monte Carlo points with their count (None without Monte Carlo)."""
    if not isinstance(curves, (list, tuple)) or not all(isinstance(c, BreakdownCurve) for c in curves):
        held = f" holding {type(curves[0]).__name__}" if isinstance(curves, (list, tuple)) and curves else ""
        raise ParameterError("curves must be a list or tuple of BreakdownCurve (pdlt.breakdown_curve), got "
                             f"{type(curves).__name__}{held}", "curves")
    rows = []
    for c in curves:
        z = c.mc_z()
        ok = np.isfinite(z)
        rows.append({"case": c.case.label, "n": c.n, "L": c.L, "networks": c.n_networks,
                     "order1": c.holds_until(1, tol), "order2": c.holds_until(2, tol),
                     "mc_points": int(ok.sum()), "max_abs_z": float(np.max(np.abs(z[ok]))) if ok.any() else None})
    return rows


def _holds_cell(value: tuple[float, str]) -> str:
    r, note = value
    if note == "beyond L":
        return rf"$\geq {r:.2f}$"
    if note == "closure":
        return rf"$\geq {r:.2f}$\textsuperscript{{c}}"
    return f"${r:.2f}$"


def breakdown_latex(curves, tol: float = 0.05) -> str:
    """The 5 % table of :func:`breakdown_table` as a booktabs float."""
    from .latex import booktabs, prose_label

    body = []
    for row in breakdown_table(curves, tol):
        z = "--" if row["max_abs_z"] is None else f"${row['max_abs_z']:.1f}$ ({row['mc_points']})"
        body.append([prose_label(row["case"]), f"${row['n']}$",
                     f"${row['L']}$", f"{row['networks']:,}", _holds_cell(row["order1"]), _holds_cell(row["order2"]),
                     z])
    pct = f"{100 * tol:g}"
    caption = (rf"Where the $1/n$ expansion holds (one input, excess kurtosis of a neuron): the largest $\ell/n$ up to "
               rf"which the $O(1/n)$ and $O(1/n^2)$ predictions stay within {pct}\,\% of the all-orders value "
               r"(the metric chain closed by 8-node Gauss rules; exact for ReLU) at every layer; $\geq$: still within "
               r"at the deepest layer, or (c) the closure's own error passed 1\,\% first. Last column: the largest "
               r"$|z|$ of the all-orders value against the Monte Carlo points whose error bars are reliable (their "
               r"number in brackets; the others have heavy-tailed estimators, see the figure).")
    return booktabs(["network", "$n$", "$L$", "networks", r"$O(1/n)$ to $\ell/n$", r"$O(1/n^2)$ to $\ell/n$",
                     r"all orders: max $|z|$"], body, align="lrrrrrr", caption=caption)


def breakdown_markdown(curves, tol: float = 0.05) -> str:
    """The 5 % table of :func:`breakdown_table` as a markdown table (``>=``: still within at the deepest layer, or the
    closure's own error passed 1 % first)."""

    def cell(v):
        return f">= {v[0]:.2f}" + (" (closure)" if v[1] == "closure" else "") if v[1] else f"{v[0]:.2f}"

    pct = f"{100 * tol:g}"
    lines = [f"| network | n | L | O(1/n) within {pct}% to l/n | O(1/n^2) to l/n | all orders vs MC: max abs z (points) |",
             "|---|---|---|---|---|---|"]
    for r in breakdown_table(curves, tol):
        z = "-" if r["max_abs_z"] is None else f"{r['max_abs_z']:.1f} ({r['mc_points']})"
        lines.append(f"| {r['case']} | {r['n']} | {r['L']} | {cell(r['order1'])} | {cell(r['order2'])} | {z} |")
    return "\n".join(lines)

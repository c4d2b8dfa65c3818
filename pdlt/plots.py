"""Plots (matplotlib, the optional ``plot`` extra): theory curves against Monte Carlo points with error bars.

Every function draws on a new figure, writes a PNG when ``path`` is given, and returns the figure. Import
matplotlib lazily with the Agg backend, so a headless machine works and pdlt imports without matplotlib.
"""

from __future__ import annotations

import numpy as np

from .errors import ParameterError

__all__ = ["have_matplotlib", "vertex_vs_depth", "vertex_allowance", "width_sweep_plot", "series_plot",
           "bayes_vs_training_plot", "breakdown_plot", "locality_plot", "interaction_graph_plot"]


def have_matplotlib() -> bool:
    import importlib

    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'pdlt[plot]'") from err
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path):
    if path is not None:
        import os

        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        if not os.path.isdir(folder):
            raise ParameterError(f"path {path!r}: the folder {folder} does not exist; create it or choose another",
                                 "path")
        try:
            # bbox "tight": the legend sits outside the axes (never over the data) and must be kept in the file
            fig.savefig(path, dpi=120, bbox_inches="tight")
        except OSError as err:              # a folder that exists but takes no file (/proc, read-only)
            raise ParameterError(f"path {path!r}: cannot write there ({err.strerror or err})", "path") from None
        except ValueError as err:
            # an unknown file type names the ones matplotlib writes; mathtext a label cannot parse, its text
            msg = str(err).strip()
            if "format" in msg.lower() or not msg:
                raise ParameterError(f"path {path!r}: {msg or 'cannot write this file'}", "path") from None
            raise ParameterError(f"a label of the plot is not valid mathtext: {msg.splitlines()[0]}",
                                 "labels") from None
    return fig


def series_plot(x, curves, points, *, xlabel: str, ylabel: str, title: str = "", path=None, bands=None,
                colors=None):
    """Theory ``curves`` ``{label: y}`` as lines and Monte Carlo ``points`` ``{label: (x, mean, stderr)}`` as
    error bars (1 standard error) on one axis; ``bands`` ``{curve label: (lo, hi, band label)}`` shade a known
    uncertainty of a curve (e.g. the truncation allowance) in the curve's colour.

    Colours pair by position: the k-th curve, its band and the k-th point set share colour ``C{k}`` (so a
    theory curve and the Monte Carlo of the same width match); curves beyond the point sets continue the
    cycle, points beyond the curves too; ``colors`` ``{label: colour}`` overrides. The legend is placed to
    the right of the axes, off the data.
    """
    plt = _pyplot()
    for name, text in (("xlabel", xlabel), ("ylabel", ylabel)):
        if not isinstance(text, str) or not text.strip():
            raise ParameterError(f"{name} must name the axis (a paper's plot has labelled axes), got {text!r}", name)
    n = np.shape(x)[0] if np.ndim(x) else 0
    for label, y in curves.items():
        if np.shape(y)[:1] != (n,):
            raise ParameterError(f"curve {label!r} has {np.shape(y)[:1]} values for {n} x values", "curves")
    for label, pts in points.items():
        if not (isinstance(pts, (tuple, list)) and len(pts) == 3):
            raise ParameterError(f"points {label!r} must be (x, mean, stderr), got {pts!r}", "points")
        xp, m, s = (_numbers(v, f"points {label!r}", "points") for v in pts)
        if not (np.shape(xp) == np.shape(m) == np.shape(s)):
            raise ParameterError(f"points {label!r}: x, mean and stderr must have one shape, got {np.shape(xp)}, "
                                 f"{np.shape(m)}, {np.shape(s)}", "points")
        if np.any(s < 0):
            raise ParameterError(f"points {label!r}: standard errors must be >= 0", "points")
    for label, band in (bands or {}).items():
        if label not in curves or not (isinstance(band, (tuple, list)) and len(band) == 3):
            raise ParameterError(f"bands {label!r} must name a curve and be (lo, hi, band label), got {band!r}",
                                 "bands")
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    bands, colors = bands or {}, colors or {}
    for k, (label, y) in enumerate(curves.items()):
        color = colors.get(label, f"C{k % 10}")
        ax.plot(x, y, "-", color=color, label=label, zorder=2)
        if label in bands:
            lo, hi, blabel = bands[label]
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, label=blabel, zorder=1)
    for k, (label, (xp, m, s)) in enumerate(points.items()):
        ax.errorbar(xp, m, yerr=s, fmt="o", ms=3.5, capsize=2.5, color=colors.get(label, f"C{k % 10}"), mec="k", mew=0.4,
                    label=label, zorder=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        # layers (or widths) are integers: no ticks at 1.25
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def _numbers(value, what: str, setting: str) -> np.ndarray:
    """Plotted values as a float array (NaN allowed: matplotlib leaves a gap), or a ParameterError naming them."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} must hold real numbers, got {value!r}", setting) from None


def _input_index(theory, a) -> int:
    from .validation import check_int

    return check_int(a, "input_index", minimum=0, maximum=theory.K.shape[-1] - 1)


def vertex_allowance(theory, l: int, input_index: int = 0) -> float:
    """The truncation error of the four-point prediction ``V_(aa)(aa)/n`` at layer l (a = ``input_index``):
    :func:`pdlt.theory.truncation.truncation_error`, which :func:`pdlt.compare` uses as its allowance (0 at l <= 2,
    where the O(1/n) result is exact)."""
    from .theory.truncation import truncation_error

    a = _input_index(theory, input_index)
    return float(truncation_error(theory, "four_point", l)[a, a, a, a])


def _hidden_width(theory) -> str:
    hidden = set(theory.net.widths[1:-1]) or set(theory.net.widths[1:])
    return str(hidden.pop()) if len(hidden) == 1 else "..".join(map(str, (min(hidden), max(hidden))))


def vertex_vs_depth(theory, mc, *, input_index: int = 0, path=None, title: str = ""):
    """The normalized vertex ``V_(aa)(aa)/(n_{l-1} K_aa^2)`` against depth l: theory (O(1/n)) with the band
    theory +- its truncation error (:func:`pdlt.theory.truncation.truncation_error`), against Monte Carlo (``mc.normalized_vertex``, the distinct-neuron
    four-point function over the sampled ``G_aa^2``: scale-free, so drawn at any depth) with one standard
    error, for input ``input_index``. The title ends with L, the width n and the number of networks; the labels
    are those of ``normalized_vertex`` in :mod:`pdlt.observables`."""
    from .observables import get
    from .theory.truncation import truncation_error

    from .comparison import check_identity

    check_identity(theory, mc)          # (compare refuses theory and Monte Carlo of different networks; so does this)
    obs = get("normalized_vertex")
    a = _input_index(theory, input_index)
    L = theory.K.shape[0]
    ls = np.arange(1, L + 1)
    th = np.array([theory.normalized_vertex(l)[a] for l in ls])
    # where the series is not controlled the bound can be huge (up to 1e6 x): clipped to the value itself, so the
    # band still says "as large as the prediction" without wrecking the axis
    allow = np.array([truncation_error(theory, "normalized_vertex", l)[a] for l in ls])
    allow = np.minimum(allow, np.abs(th))
    est = mc.normalized_vertex
    m, s = est.mean[:, a], est.stderr[:, a]
    info = f"L = {L}, n = {_hidden_width(theory)}, {int(mc.n_samples)} networks"
    label = f"theory ${obs.entry_prediction_tex((a,))}$, $O(1/n)$"
    return series_plot(ls, {label: th}, {"Monte Carlo ($\\pm 1$ s.e.)": (ls, m, s)}, xlabel=r"layer $\ell$",
                       ylabel=f"${obs.entry_tex((a,))}$", title=f"{title}: {info}" if title else info, path=path,
                       bands={label: (th - allow, th + allow, "truncation error")})


def width_sweep_plot(fit, *, ylabel: str, expected=None, title: str = "", path=None):
    """Monte Carlo values against 1/n with the weighted 1/n fit (:class:`pdlt.fits.InverseWidthFit`) and, if
    given, the prediction ``expected = (a, b)``: the line a + b/n, or with ``b = None`` (no 1/n coefficient
    predicted) the infinite-width value a alone, drawn at 1/n = 0. ``ylabel`` names the quantity (required);
    ``title`` should state L and the number of networks (the widths are the points)."""
    _pyplot()   # the ImportError that names the plot extra, before any work
    if expected is not None and not (isinstance(expected, (tuple, list)) and len(expected) == 2):
        raise ParameterError(f"expected must be (a, b) (b may be None), got {expected!r}", "expected")
    inv = 1.0 / fit.widths
    grid = np.linspace(0.0, inv.max() * 1.05, 100)
    terms = " + ".join(["a", "b/n", "c/n^2", "d/n^3"][: len(fit.coef)])
    curves = {f"fit ${terms}$": sum(c * grid**k for k, c in enumerate(fit.coef))}
    if expected is not None and expected[1] is not None:
        curves["theory $a + b/n$"] = expected[0] + expected[1] * grid
    # Monte Carlo in black: the fit line (C0) runs through the points and would hide them in its colour
    fig = series_plot(grid, curves, {"Monte Carlo ($\\pm 1$ s.e.)": (inv, fit.values, fit.se)}, xlabel=r"$1/n$",
                      ylabel=ylabel, title=title, path=None, colors={"Monte Carlo ($\\pm 1$ s.e.)": "k"})
    if expected is not None and expected[1] is None:
        ax = fig.axes[0]
        ax.plot([0.0], [expected[0]], "k*", ms=10, label="theory $a$ ($n \\to \\infty$)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return _finish(fig, path)


def bayes_vs_training_plot(bvt, *, path=None, title: str = ""):
    """Bayes against training (:class:`pdlt.bayes_vs_training.BayesVsTraining`): per setting (columns), the mean
    test outputs (top) and training minus Bayes (bottom) against the test input: theory at infinite width (open
    markers), to O(1/n) (filled) and Monte Carlo (circles, one standard error)."""
    from .bayes_vs_training import SETTINGS

    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(8.6, 5.4), sharex=True)
    d = np.arange(bvt.x_test.shape[0])
    labels = {0: r"last layer, $\lambda_b/\lambda_W = C_b/C_W$", 1: "all layers"}
    for s in range(len(SETTINGS)):
        top, bot = axes[0, s], axes[1, s]
        for k, (name, inf, one, mc, se) in enumerate((
                ("Bayes", bvt.bayes_inf, bvt.bayes_1, bvt.bayes_mc, bvt.bayes_se),
                ("training", bvt.train_inf[s], bvt.train_1[s], bvt.train_mc[s], bvt.train_se[s]))):
            x = d + (k - 0.5) * 0.24
            c = f"C{k}"
            top.plot(x - 0.06, inf, "s", mfc="none", color=c, label=f"{name}, infinite width")
            top.plot(x, one, "s", color=c, label=f"{name}, $O(1/n)$")
            top.errorbar(x + 0.06, mc, yerr=se, fmt="o", ms=3.5, capsize=2.5, color=c, mec="k", mew=0.4,
                         label=f"{name}, Monte Carlo")
        dth, dmc, dse = bvt.difference(s)
        dinf = bvt.train_inf[s] - bvt.bayes_inf
        bot.axhline(0.0, color="0.6", lw=0.8)
        bot.plot(d - 0.06, dinf, "s", mfc="none", color="C2", label="theory, infinite width")
        bot.plot(d, dth, "s", color="C2", label="theory, $O(1/n)$")
        bot.errorbar(d + 0.06, dmc, yerr=dse, fmt="o", ms=3.5, capsize=2.5, color="C2", mec="k", mew=0.4,
                     label="Monte Carlo")
        top.set_title(labels[s], fontsize=9)
        bot.set_xlabel(r"test input $\delta$")
        bot.set_xticks(d)
        for ax in (top, bot):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(r"mean output $E[z_\delta]$")
    axes[1, 0].set_ylabel("training $-$ Bayes")
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    axes[1, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    fig.suptitle(title or (f"{bvt.net.activation.name}: L = {bvt.net.L}, n = {bvt.n}, {bvt.n_bayes} networks "
                           f"(Bayes), {bvt.n_train} per training run, {bvt.steps} GD steps"), fontsize=9)
    return _finish(fig, path)


def breakdown_plot(curves, *, path=None, title: str = ""):
    """The breakdown map (:mod:`pdlt.breakdown`): one panel per network family, a neuron's excess kurtosis against
    ``l/n`` (log scale, layers 2..L) for every width: all orders (solid, with the closure's error estimate as a band),
    O(1/n) (dashed), O(1/n^2) (dotted), Monte Carlo with one standard error (filled; hollow without error bars where
    the point is not used: its predicted error is above 10 % of the value, or the estimator is heavy-tailed and its
    jackknife error cannot be trusted; :attr:`pdlt.breakdown.BreakdownCurve.reliable`). Colours pair a width's curves
    and points."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    cases = list(dict.fromkeys(c.case for c in curves))
    ncol = 2 if len(cases) > 1 else 1
    nrow = (len(cases) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    widths = sorted({c.n for c in curves})
    color = {n: f"C{k % 10}" for k, n in enumerate(widths)}
    for ax, case in zip(axes.flat, cases):
        for c in (c for c in curves if c.case == case):
            x, sl = c.ratio[1:], slice(1, None)
            col = color[c.n]
            ax.plot(x, c.all_orders[sl], "-", color=col, lw=1.4)
            ax.fill_between(x, c.all_orders[sl] - c.all_orders_error[sl], c.all_orders[sl] + c.all_orders_error[sl],
                            color=col, alpha=0.2, lw=0)
            ax.plot(x, c.order1[sl], "--", color=col, lw=1.0)
            ax.plot(x, c.order2[sl], ":", color=col, lw=1.2)
            if c.mc is not None:
                ok = c.reliable[sl]
                ax.errorbar(x[ok], c.mc[sl][ok], yerr=c.mc_se[sl][ok], fmt="o", ms=3, capsize=2, color=col, mec="k",
                            mew=0.4, zorder=3)
                bad = ~ok & (c.mc[sl] > 0)
                ax.plot(x[bad], c.mc[sl][bad], "o", ms=3, mfc="none", mec=col, mew=0.8, zorder=3)
        ax.set_yscale("log")
        ax.set_title(case.tex, fontsize=9)
        ax.set_xlabel(r"$\ell / n$")
        ax.set_ylabel(r"excess kurtosis $\kappa_4 / (E z^2)^2$")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    N = sorted({c.n_networks for c in curves if c.mc is not None})
    handles = [Line2D([], [], color=color[n], lw=1.4, label=f"n = {n}, L = {max(c.L for c in curves if c.n == n)}")
               for n in widths]
    handles += [Line2D([], [], color="k", lw=1.4, label="all orders (band: closure error)"),
                Line2D([], [], color="k", ls="--", lw=1.0, label="O(1/n)"),
                Line2D([], [], color="k", ls=":", lw=1.2, label="O(1/n$^2$)")]
    if N:
        handles += [Line2D([], [], color="k", marker="o", ls="none", ms=4, label=f"Monte Carlo, {N[0]:,} networks"
                           + ("" if len(N) == 1 else " or more")),
                    Line2D([], [], color="k", marker="o", mfc="none", ls="none", ms=4,
                           label="Monte Carlo, not used: error\nabove 10 % or heavy-tailed")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def locality_plot(profiles, labels, depths, *, mc=None, n_networks: int | None = None, path=None, title: str = ""):
    """Influence profiles (:func:`pdlt.locality_profile`), one panel per profile: ``d m(x0) / d y_a`` against each
    particle's position along the path, for the ``depths`` given; infinite width dashed, O(1/n) solid (when
    computed), Monte Carlo ``mc[panel][depth] = (mean (P,), stderr (P,))`` with one standard error. ``labels``: the
    panel titles. The legend says the hidden width, the number of networks and the noise variance."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    k = len(profiles)
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.0), squeeze=False, sharey=False)
    color = {l: f"C{i % 10}" for i, l in enumerate(depths)}
    for p, (ax, prof, lab) in enumerate(zip(axes[0], profiles, labels)):
        order = np.argsort(prof.position)
        x = prof.position[order]
        for l in depths:
            i = prof.row(l)
            ax.plot(x, prof.infinite[i][order], "--", color=color[l], lw=1.0)
            if prof.correction is not None:
                ax.plot(x, prof.influence[i][order], "-", color=color[l], lw=1.3)
            if mc is not None and mc[p] is not None and l in mc[p]:
                m, s = mc[p][l]
                ax.errorbar(x, np.asarray(m)[order], yerr=np.asarray(s)[order], fmt="o", ms=3, capsize=2,
                            color=color[l], mec="k", mew=0.4, zorder=3)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("angle from the test input" if prof.geometry == "circle" else "position along the line")
        ax.set_ylabel(r"influence $\partial m(x_0) / \partial y_a$")
        ax.grid(alpha=0.3)
    prof = profiles[0]
    n = sorted({int(p_.n[p_.row(l)]) for p_ in profiles for l in depths if l > 1})
    handles = [Line2D([], [], color=color[l], lw=1.3, label=f"depth L = {l}") for l in depths]
    handles += [Line2D([], [], color="k", ls="--", lw=1.0, label="infinite width")]
    if prof.correction is not None:
        handles += [Line2D([], [], color="k", lw=1.3, label="O(1/n), n = " + ", ".join(map(str, n)))]
    if mc is not None:
        handles += [Line2D([], [], color="k", marker="o", ls="none", ms=4,
                           label="Monte Carlo" + (f", {n_networks:,} networks" if n_networks else ""))]
    handles += [Line2D([], [], color="none",
                       label=f"noise variance {prof.noise_var:g}, {prof.position.size} particles")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.92), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def interaction_graph_plot(inter, x_train, *, test: int | None = None, path=None, title: str = ""):
    """The interaction graph of a dataset (:func:`pdlt.interactions`), drawn in the plane of the training inputs'
    first two principal directions: one node per particle (area ~ |infinite-width influence| on the test input(s)),
    one edge per pair with width ~ |pair coupling| ``d^2 m / d y_a d y_c`` (the non-additive, O(1/n) part), the
    largest over the test inputs unless ``test`` is given; edges below 2% of the largest are not drawn."""
    plt = _pyplot()
    x = np.asarray(x_train, dtype=np.float64)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    pts = xc @ vt[:2].T if vt.shape[0] >= 2 else np.column_stack([xc @ vt[0], np.zeros(len(x))])
    g = inter.graph(test)
    nA = g.shape[0]
    top = max(np.max([g[a, c] for a in range(nA) for c in range(nA) if a != c] or [0.0]), 1e-300)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for a in range(nA):
        for c in range(a + 1, nA):
            if g[a, c] >= 0.02 * top:
                ax.plot(pts[[a, c], 0], pts[[a, c], 1], "-", color="C3", lw=0.5 + 5.0 * g[a, c] / top, alpha=0.75,
                        zorder=1)
    w = np.abs(inter.kernel_response).max(0) if test is None else np.abs(inter.kernel_response[test])
    ax.scatter(pts[:, 0], pts[:, 1], s=40 + 400 * w / max(w.max(), 1e-300), color="C0", edgecolor="k", zorder=2)
    for a in range(nA):
        ax.annotate(str(a), pts[a], textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("first principal direction of the inputs")
    ax.set_ylabel("second principal direction")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title or f"pair couplings at O(1/n), n = {inter.n}, noise variance {inter.noise_var:g}", fontsize=9)
    ax.grid(alpha=0.3)
    return _finish(fig, path)

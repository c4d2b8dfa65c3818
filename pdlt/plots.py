"""Plots (matplotlib, the optional ``plot`` extra): theory curves against Monte Carlo points with error bars.

Every function draws on a new figure, writes a PNG when ``path`` is given, and returns the figure. Import
matplotlib lazily with the Agg backend, so a headless machine works and pdlt imports without matplotlib.
"""

from __future__ import annotations

import numpy as np

__all__ = ["have_matplotlib", "vertex_vs_depth", "width_sweep_plot", "series_plot"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
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
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def series_plot(x, curves, points, *, xlabel: str, ylabel: str, title: str = "", path=None):
    """Theory ``curves`` ``{label: y}`` as lines and Monte Carlo ``points`` ``{label: (x, mean, stderr)}`` as
    error bars (1 standard error) on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for label, y in curves.items():
        ax.plot(x, y, "-", label=label)
    for label, (xp, m, s) in points.items():
        ax.errorbar(xp, m, yerr=s, fmt="o", ms=3.5, capsize=2.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def vertex_vs_depth(theory, mc, *, input_index: int = 0, path=None, title: str = ""):
    """The normalized vertex ``V_(aa)(aa)/(n_{l-1} K_aa^2)`` against depth l: theory (O(1/n)) vs Monte Carlo
    (``n_{l-1} * four_point / n_{l-1} / K^2``, i.e. ``four_point / K^2``), for input ``input_index``."""
    a = input_index
    L = theory.K.shape[0]
    ls = np.arange(1, L + 1)
    K2 = theory.K[:, a, a] ** 2
    th = np.array([theory.normalized_vertex(l)[a] for l in ls])
    m = mc.four_point.mean[:, a, a, a, a] / K2
    s = mc.four_point.stderr[:, a, a, a, a] / K2
    return series_plot(ls, {"theory $V/(nK^2)$": th}, {"Monte Carlo": (ls, m, s)}, xlabel=r"layer $\ell$",
                       ylabel=r"$V^{(\ell)}/(n K^2)$", title=title, path=path)


def width_sweep_plot(fit, *, expected=None, ylabel: str = "", title: str = "", path=None):
    """Monte Carlo values against 1/n with the weighted 1/n fit (:class:`pdlt.fits.InverseWidthFit`) and, if
    given, the prediction ``expected = (a, b)``: the line a + b/n, or with ``b = None`` (no 1/n coefficient
    predicted) the infinite-width value a alone, drawn at 1/n = 0."""
    plt = _pyplot()
    inv = 1.0 / fit.widths
    grid = np.linspace(0.0, inv.max() * 1.05, 100)
    terms = " + ".join(["a", "b/n", "c/n^2", "d/n^3"][: len(fit.coef)])
    curves = {f"fit ${terms}$": sum(c * grid**k for k, c in enumerate(fit.coef))}
    if expected is not None and expected[1] is not None:
        curves["theory $a + b/n$"] = expected[0] + expected[1] * grid
    fig = series_plot(grid, curves, {"Monte Carlo": (inv, fit.values, fit.se)}, xlabel=r"$1/n$", ylabel=ylabel,
                      title=title, path=None)
    if expected is not None and expected[1] is None:
        ax = fig.axes[0]
        ax.plot([0.0], [expected[0]], "k*", ms=10, label="theory $a$ ($n \\to \\infty$)")
        ax.legend(fontsize=8)
    return _finish(fig, path)

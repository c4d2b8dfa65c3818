"""Everything a user sees is paper-ready: verify's files (PDF checked by the log parser, JSON that says how to
reproduce it), plots that say what they show (L, n, networks; paired colours; bands; legend off the data)."""
import json

import numpy as np
import pytest

import pdlt
from pdlt import plots
from pdlt.latex import compile_pdf, document, figure, have_pdflatex
from pdlt.verification.report import figures, provenance
from pdlt.verify import run_verify

needs_tex = pytest.mark.skipif(not have_pdflatex(), reason="pdflatex not installed")
needs_mpl = pytest.mark.skipif(not plots.have_matplotlib(), reason="matplotlib not installed")


@pytest.fixture(scope="module")
def tiny_sweep():
    """A small width sweep: tanh, L = 3, n = 4, 6, 8, 256 networks each (slow tests: JAX compiles per width)."""
    x = np.array([[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4]])
    return pdlt.width_sweep("tanh", x, 3, (4, 6, 8), C_W=1.0, C_b=0.0, n_samples=256, seed=5, case="tiny tanh")


def test_verify_theory_files_are_paper_ready(tmp_path):
    said = []
    rows, summary = run_verify(str(tmp_path), quick=True, monte_carlo=False, echo=said.append)
    assert summary["failed"] == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["verify.json", "verify.pdf", "verify.tex"] if have_pdflatex() else ["verify.json", "verify.tex"])
    assert not any("layout problems" in s for s in said), said[-1]
    tex = (tmp_path / "verify.tex").read_text()
    assert r"\langle \sigma ^{2}\rangle _{K}" in tex and "<sigma" not in tex and r"\textasciicircum" not in tex
    assert "tol" in tex and "reference" in tex
    prov = json.loads((tmp_path / "verify.json").read_text())["provenance"]
    assert prov["versions"]["pdlt"] == pdlt.__version__
    assert all(prov["versions"][k] for k in ("jax", "numpy", "sympy", "mpmath", "python"))
    assert prov["arguments"] == {"quick": True, "monte_carlo": False, "out_dir": str(tmp_path)}
    assert prov["reproduce"] == "python -m pdlt verify --quick --no-mc" and prov["command"]


def test_verify_provenance_of_monte_carlo():
    """The provenance is read from each run's own configuration (stand-ins with the fields pdlt.sample records)."""
    from types import SimpleNamespace

    x = [[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4]]

    def run(n, seed):
        cfg = {"activation": "tanh", "widths": [3, n, n, n], "C_W": [1.0] * 3, "C_b": [0.0] * 3, "x": x,
               "seed": seed, "method": "markov", "batches": 32}
        return SimpleNamespace(config=cfg, n_samples=256)

    sweep = SimpleNamespace(case="tiny tanh", widths=(4, 8), results=(run(4, 5), run(8, 6)))
    prov = provenance(True, True, "out", [sweep])
    (case,) = prov["monte_carlo_cases"]
    assert case["activation"] == "tanh" and case["depth"] == 3 and case["case"] == "tiny tanh"
    assert case["C_W"] == [1.0] * 3 and case["C_b"] == [0.0] * 3
    assert case["inputs"] == [[1.0, 0.5, -0.3], [-0.2, 0.9, 0.4]]
    assert [(r["width"], r["widths"], r["seed"], r["n_samples"]) for r in case["runs"]] == [
        (4, [3, 4, 4, 4], 5, 256), (8, [3, 8, 8, 8], 6, 256)]
    json.dumps(prov)  # serializable as it stands


@pytest.mark.slow
@needs_mpl
def test_verify_figures_and_monte_carlo_tables_compile_clean(tiny_sweep, tmp_path):
    import matplotlib.pyplot as plt

    figs = figures(tmp_path, [tiny_sweep], echo=print)
    assert [f for f, _ in figs] == ["vertex_depth.png", "sweep_two_point.png", "sweep_vertex.png"]
    for f, cap in figs:
        assert (tmp_path / f).stat().st_size > 5000
        assert "$L=3$" in cap and "256" in cap and "networks" in cap and ("$n=4$" in cap or "$n = 4, 6, 8$" in cap)
    plt.close("all")
    if not have_pdflatex():
        pytest.skip("pdflatex not installed")
    th = tiny_sweep.theory_at(0)
    single = pdlt.compare(th, tiny_sweep.results[0], case="tiny tanh, n=4")
    tex = document(tiny_sweep.rows(order=1).to_latex(), single.to_latex(), *(figure(f, c) for f, c in figs))
    compile_pdf(tex, tmp_path, "mc", check=True)  # Comparison.to_latex, figures with captions: paper-ready


@needs_mpl
def test_series_plot_pairs_colours_and_keeps_legend_off_the_axes(tmp_path):
    from matplotlib.colors import to_rgba

    x = np.linspace(0, 1, 5)
    curves = {"theory, n = 8": x, "theory, n = 16": 2 * x, "NNGP": 0 * x}
    points = {"MC, n = 8": (x, x, 0.1 + 0 * x), "MC, n = 16": (x, 2 * x, 0.1 + 0 * x)}
    fig = plots.series_plot(x, curves, points, xlabel="t", ylabel="y", title="T", path=tmp_path / "p.png")
    ax = fig.axes[0]
    lines = {ln.get_label(): to_rgba(ln.get_color()) for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    marks = {c.get_label(): to_rgba(c.lines[0].get_color()) for c in ax.containers}
    assert marks["MC, n = 8"] == lines["theory, n = 8"] and marks["MC, n = 16"] == lines["theory, n = 16"]
    assert lines["NNGP"] not in (lines["theory, n = 8"], lines["theory, n = 16"])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1, "legend must not cover the data"
    assert ax.get_xlabel() == "t" and ax.get_ylabel() == "y"
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow
@needs_mpl
def test_vertex_plot_has_allowance_band_and_says_L_n_networks(tiny_sweep):
    import matplotlib.pyplot as plt
    from pdlt.comparison import expansion_parameter, next_order_bound

    th, mc = tiny_sweep.theory_at(2), tiny_sweep.results[2]
    fig = plots.vertex_vs_depth(th, mc, title="tanh")
    ax = fig.axes[0]
    assert ax.get_title() == "tanh: L = 3, n = 8, 256 networks"
    (band,) = ax.collections[:1]
    hi = band.get_paths()[0].vertices[:, 1].max()
    assert ax.get_xlabel() and ax.get_ylabel() and any(c.has_yerr for c in ax.containers)
    # the band's top at l = 3 is theory + c(r) V/(n K^2), c(r) = r e^r (d = 2: the largest entry of V/n)
    l = 3
    K2 = th.K[l - 1, 0, 0] ** 2
    c = next_order_bound(expansion_parameter(th, l))
    want = th.normalized_vertex(l)[0] + c * np.abs(th.connected_four_point(l)).max() / K2
    assert c > 0 and hi >= want
    assert np.isclose(band.get_paths()[0].vertices[:, 1], want, rtol=1e-12).any()
    plt.close(fig)


def test_series_plot_refuses_what_a_paper_plot_cannot_show(tmp_path):
    # unlabelled axes were drawn, negative errors and mismatched lengths raised matplotlib's errors, and a missing
    # folder or unknown file type raised the OS's or matplotlib's
    x = np.array([1.0, 2.0])
    cases = [(dict(xlabel="", ylabel="y"), "xlabel"), (dict(xlabel="x", ylabel=" "), "ylabel"),
             (dict(xlabel="x", ylabel="y", points={"mc": ([1, 2], [1, 2], [-1, 1])}), "points"),
             (dict(xlabel="x", ylabel="y", curves={"c": [1, 2, 3]}), "curves"),
             (dict(xlabel="x", ylabel="y", path=tmp_path / "none" / "p.png"), "path"),
             (dict(xlabel="x", ylabel="y", path=tmp_path / "p.foo"), "path")]
    for kw, setting in cases:
        args = {"curves": {"c": [1, 2]}, "points": {}, **kw}
        with pytest.raises(pdlt.ParameterError) as err:
            plots.series_plot(x, args.pop("curves"), args.pop("points"), **args)
        assert err.value.setting == setting

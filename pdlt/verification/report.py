"""The report of ``pdlt verify``: the checks as plain text and LaTeX, the figures, the provenance of
``verify.json``, and the files themselves (``verify.tex``, ``verify.json``, ``verify.pdf``, PNGs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..breakdown import breakdown_latex, breakdown_table
from .checks import Check
from .suite import n_networks, single_index

__all__ = ["checks_table", "checks_latex", "figures", "ntk_figures", "breakdown_figures", "versions", "provenance",
           "write_report"]


def checks_table(rows: list[Check]) -> str:
    """Plain-text table of checks."""
    head = ("quantity", "case", "method", "pdlt", "reference", "error", "tol", "ok")
    body = [(r.quantity, r.case, r.method, f"{r.value:.12g}", f"{r.reference:.12g}", f"{r.error:.1e}",
             f"{r.tol:.0e}", "PASS" if r.ok else "FAIL") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    return "\n".join(lines)


def checks_latex(rows: list[Check], max_rows: int = 14) -> str:
    """Booktabs table of checks (split into floats of at most ``max_rows`` rows): the quantity as math
    (:func:`pdlt.latex.math_label`), the case with the method below it, pdlt's value, the reference, the error
    (relative, or absolute where marked), the tolerance and the verdict."""
    from ..latex import booktabs, fmt_number, math_label, prose_label

    body = [[math_label(r.quantity),
             prose_label(r.case) + r"\newline{\footnotesize\itshape " + prose_label(r.method) + "}",
             fmt_number(r.value, 9), fmt_number(r.reference, 9),
             fmt_number(r.error, 2) + ("" if r.relative else r"\,(abs.)"), fmt_number(r.tol, 1),
             "pass" if r.ok else r"\textbf{fail}"] for r in rows]
    n_ok = sum(r.ok for r in rows)
    cap = (f"Theory checks: each pdlt value against an independent reference (case above, method below); "
           f"{n_ok} of {len(rows)} pass. The error is relative unless marked abs.")
    return booktabs(["quantity", "case / method", "pdlt", "reference", "error", "tol", "verdict"], body,
                    align=r"l>{\raggedright\arraybackslash}p{4.2cm}rrrrl", caption=cap, label="tab:verify",
                    size=r"\footnotesize", max_rows=max_rows)


def figures(out: Path, sweeps, echo) -> list[tuple[str, str]]:
    """PNG plots (matplotlib): normalized vertex vs depth, and the 1/n sweeps of the first case. Returns
    ``(file name, LaTeX caption)`` pairs; each caption names L, the width(s) n and the number of networks."""
    from .. import plots

    if not plots.have_matplotlib():
        echo("  (matplotlib not installed: no plots; pip install 'pdlt[plot]')")
        return []
    import matplotlib.pyplot as plt

    from ..latex import escape

    figs = []
    first = sweeps[0]
    k = single_index(first)
    th = first.theory_at(k)
    L, n, N = th.K.shape[0], first.widths[k], n_networks(first, k)
    fig = plots.vertex_vs_depth(th, first.results[k], path=out / "vertex_depth.png",
                                title=first.case)
    plt.close(fig)
    figs.append(("vertex_depth.png",
                 rf"Normalized vertex $V^{{(\ell)}}/(n K^2)$ against depth, {escape(first.case)}, $L={L}$, $n={n}$, "
                 rf"{N} sampled networks: $O(1/n)$ theory (line, with the band of the $O(1/n^2)$ allowance of "
                 rf"\texttt{{pdlt.compare}}) and Monte Carlo (points, one standard error)."))
    Ns = sorted({n_networks(first, j) for j in range(len(first.widths))})
    nets = f"{Ns[0]} networks per width" if len(Ns) == 1 else f"{Ns[0]}--{Ns[-1]} networks per width"
    widths = ", ".join(map(str, first.widths))
    for q, idx, ylabel, fname, what in (
            ("two_point", (0, 0), r"$E[z_0 z_0]$ at $\ell = L$", "sweep_two_point.png",
             r"the two-point function $E[z_{i;0}z_{i;0}]$; theory $K + G^{\{1\}}/n$"),
            ("vertex", (0, 0, 0, 0), r"$n\,\times$ four-point at $\ell = L$", "sweep_vertex.png",
             r"$n$ times the connected four-point function of distinct neurons; theory $V$ at $1/n = 0$")):
        fit = first.fit(q, L, idx, order=2)
        fig = plots.width_sweep_plot(fit, expected=first.expected(q, L, idx), ylabel=ylabel,
                                     title=f"{first.case}: L = {L}, n = {widths}, {nets}", path=out / fname)
        plt.close(fig)
        figs.append((fname, rf"Width sweep, {escape(first.case)}, $L={L}$, $n = {widths}$, {nets}: {what}; "
                            r"weighted fit $a + b/n + c/n^2$ of the Monte Carlo (one standard error bars)."))
    return figs


def ntk_figures(out: Path, runs, sweeps, echo) -> list[tuple[str, str]]:
    """PNG plots of the NTK section: for the first run the relative NTK variance and the relative dNTK size against
    depth (theory lines, Monte Carlo points), and for the first sweep (if any) the mean NTK against 1/n. Returns
    ``(file name, LaTeX caption)`` pairs; each caption names L, n and the number of networks."""
    from .. import plots

    if not runs or not plots.have_matplotlib():
        return []
    import matplotlib.pyplot as plt
    import numpy as np

    from ..latex import prose_label

    label, th, mc = runs[0]
    L, n, N = th.L, th.net.widths[1], int(mc.n_samples)
    ls = np.arange(1, L + 1)
    curves, points = {}, {}
    for name, what in (("ntk_relative_variance", r"$\mathrm{Var}(\hat H_{ii;00})/\Theta_{00}^2$"),
                       ("dntk_relative", r"$E[\widehat{dH}_{iii;000}z_{i0}]/\Theta_{00}^2$")):
        curves[f"{what}, theory"] = np.array([th.prediction(name, l)[0] for l in ls])
        est = getattr(mc, name)
        points[f"{what}, Monte Carlo"] = (ls, est.mean[:, 0], est.stderr[:, 0])
    fig = plots.series_plot(ls, curves, points, xlabel=r"layer $\ell$", ylabel="relative size",
                            title=f"{label}: L = {L}, n = {n}, {N} networks", path=out / "ntk_depth.png")
    plt.close(fig)
    figs = [("ntk_depth.png",
             rf"NTK at finite width, {prose_label(label)}, $L={L}$, $n={n}$, {N} sampled networks: the relative variance "
             r"of one neuron's NTK, $(A+2B)/(n\Theta^2)$, and the relative size of the dNTK, $(P+2Q)/(n\Theta^2)$, "
             r"input 0; $O(1/n)$ theory (lines) and Monte Carlo (points, one standard error). Layer 2 is exact; "
             r"beyond it the theory is truncated at $O(1/n)$.")]
    if sweeps:
        sw = sweeps[0]
        Ls = sw.theory.Theta.shape[0]
        widths = ", ".join(map(str, sw.widths))
        Ns = int(sw.results[0].n_samples)
        fit = sw.fit("ntk_mean", Ls, (0, 0), order=1)
        fig = plots.width_sweep_plot(fit, expected=(float(sw.theory.Theta[Ls - 1, 0, 0]),
                                                    float(sw.theory.Theta1[Ls - 1, 0, 0])),
                                     ylabel=r"$E[\hat H_{ii;00}]$ at $\ell = L$",
                                     title=f"{sw.case}: L = {Ls}, n = {widths}, {Ns} networks per width",
                                     path=out / "ntk_sweep_mean.png")
        plt.close(fig)
        figs.append(("ntk_sweep_mean.png",
                     rf"NTK width sweep, {prose_label(sw.case)}, $L={Ls}$, $n = {widths}$, {Ns} networks per width: the "
                     r"mean NTK $E[\hat H_{ii;00}]$ against $1/n$, theory $\Theta + \Theta^{\{1\}}/n$; weighted fit "
                     r"$a + b/n$ of the Monte Carlo (one standard error bars)."))
    return figs


def training_figures(out: Path, bvt, sweeps, echo) -> list[tuple[str, str]]:
    """PNG plots of the trained-network section: Bayes against training (means and their difference per test
    input) and, for the first sweep, the feature-learning shift and the NTK change against 1/n with their fits.
    Returns ``(file name, LaTeX caption)`` pairs; each caption names L, n and the number of networks."""
    from .. import plots
    from ..latex import escape

    if bvt is None or not plots.have_matplotlib():
        return []
    import matplotlib.pyplot as plt

    fig = plots.bayes_vs_training_plot(bvt, path=out / "bayes_vs_training.png")
    plt.close(fig)
    figs = [("bayes_vs_training.png",
             rf"Bayes against training, {escape(bvt.net.activation.name)}, $L={bvt.net.L}$, $n={bvt.n}$: mean test "
             rf"outputs of the noiseless posterior ({bvt.n_bayes:,} reweighted networks) and of gradient descent "
             rf"({bvt.steps} steps, {bvt.n_train:,} trained networks per setting); theory at infinite width (open) "
             r"and to $O(1/n)$ (filled), Monte Carlo with one standard error. Bottom: training minus Bayes. With only "
             r"the last layer trained ($\lambda_b/\lambda_W = C_b/C_W$) the two agree at infinite width; at finite "
             r"width training averages each network's kernel regression while Bayes weights it by its evidence.")]
    if sweeps:
        sw = sweeps[0]
        th = sw.theory
        widths = ", ".join(map(str, sw.widths))
        N = int(sw.results[0].n_samples)
        L = th.net.L
        for name, key, expected, ylabel in (
                ("train_sweep_shift.png", "frozen_shift", (0.0, float((th.pieces["dntk"] + th.pieces["ddntk"])[0, 0])),
                 r"$E[z_\delta - z^{\rm frozen}_\delta]$"),
                ("train_sweep_ntk.png", "ntk_change", (0.0, float(th.ntk_change[0, 0])),
                 r"$E[H_{ii;00}(t) - H_{ii;00}(0)]$")):
            fit = sw.fit(key, (0, 0), order=min(2, len(sw.widths) - 2))
            fig = plots.width_sweep_plot(fit, expected=expected, ylabel=ylabel,
                                         title=f"{sw.case}: L = {L}, n = {widths}, {N} networks per width",
                                         path=out / name)
            plt.close(fig)
        figs += [("train_sweep_shift.png",
                  rf"Training width sweep, {escape(sw.case)}, $L={L}$, $n={widths}$, {N:,} trained networks per width: "
                  r"each network's output minus its own frozen-NTK prediction (the dNTK and ddNTK effect) against "
                  r"$1/n$; theory $0 + b/n$ with $b$ from the dNTK and ddNTK statistics, weighted fit "
                  r"$a + b/n + c/n^2$ of the Monte Carlo (one standard error bars)."),
                 ("train_sweep_ntk.png",
                  rf"Training width sweep, {escape(sw.case)}, $L={L}$, $n={widths}$, {N:,} trained networks per width: "
                  r"the change of the NTK on the first training input during training against $1/n$; theory $0 + b/n$, "
                  r"weighted fit $a + b/n + c/n^2$ of the Monte Carlo (one standard error bars).")]
    return figs


def breakdown_figures(out: Path, curves) -> list[tuple[str, str]]:
    """The breakdown map as ``breakdown.png`` (:func:`pdlt.plots.breakdown_plot`) with its caption."""
    from .. import plots

    if not curves or not plots.have_matplotlib():
        return []
    import matplotlib.pyplot as plt

    fig = plots.breakdown_plot(curves, path=out / "breakdown.png")
    plt.close(fig)
    widths = sorted({c.n for c in curves})
    N = max(c.n_networks for c in curves)
    sizes = ", ".join(f"$n = {n}$ to $L = {max(c.L for c in curves if c.n == n)}$" for n in widths)
    return [("breakdown.png",
             rf"The breakdown map: a neuron's excess kurtosis (one input; for one input the normalized vertex "
             rf"$V/(nK^2)$ is a third of it) against $\ell/n$, {sizes}, {N:,} sampled networks per curve. Lines: "
             r"all orders (the metric chain closed by Gauss rules, its error estimate as a band; exact for ReLU), "
             r"$O(1/n)$ dashed, $O(1/n^2)$ dotted. Points: Monte Carlo with one standard error; hollow where the "
             r"estimator's predicted error exceeds 10\,\% or the jackknife error is less than half of it (heavy "
             r"tails of the metric: the jackknife then underestimates the error), which are not used.")]


def versions() -> dict:
    """Versions of pdlt and of the libraries its numbers depend on (no imports: package metadata)."""
    import platform
    from importlib import metadata

    from .. import __version__

    out = {"pdlt": __version__, "python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "numpy", "sympy", "mpmath", "scipy", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def provenance(quick: bool, monte_carlo: bool, out_dir, sweeps) -> dict:
    """What reproduces verify.json: versions, the command and its arguments, and per Monte Carlo case the
    network (activation, depth, widths, C_W, C_b), the inputs, and per width the seed and networks sampled."""
    import sys

    prov = {"versions": versions(), "command": ["python", "-m", "pdlt", *sys.argv[1:]]
            if sys.argv and sys.argv[0].endswith(("pdlt", "__main__.py")) else list(sys.argv),
            "arguments": {"quick": quick, "monte_carlo": monte_carlo, "out_dir": str(out_dir)},
            "reproduce": "python -m pdlt verify" + (" --quick" if quick else "") + ("" if monte_carlo else " --no-mc"),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    cases = []
    for sw in sweeps:
        cfg0 = sw.results[0].config
        cases.append({
            "case": sw.case, "activation": cfg0["activation"], "depth": len(cfg0["widths"]) - 1,
            "C_W": cfg0["C_W"], "C_b": cfg0["C_b"], "inputs": cfg0["x"], "method": cfg0["method"],
            "batches": cfg0["batches"],
            "runs": [{"width": int(n), "widths": r.config["widths"], "seed": int(r.config["seed"]),
                      "n_samples": int(r.n_samples)} for n, r in zip(sw.widths, sw.results)],
        })
    prov["monte_carlo_cases"] = cases
    return prov


def write_report(out_dir, *, rows: list[Check], crits, summary: dict, sweep_rows, single, sweeps, quick: bool,
                 monte_carlo: bool, compile_tex: bool, echo, ntk_rows=None, ntk_runs=(), ntk_sweeps=(),
                 training_rows=None, bvt=None, training_sweeps=(), breakdown=(), influence=None) -> None:
    """Write ``verify.tex`` (+ ``verify.pdf`` when ``compile_tex`` and pdflatex is present), ``verify.json`` and
    the PNG figures into ``out_dir`` (created if missing). ``sweep_rows`` / ``single`` are None without the Monte
    Carlo suite."""
    from ..latex import LatexError, compile_pdf, criticality_table, document, figure, have_pdflatex, recursion_equations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = figures(out, sweeps, echo) if sweeps else []
    parts = [criticality_table(crits), checks_latex(rows)]
    if sweep_rows is not None:
        # \clearpage: the theory tables end here, and the figures below cannot float above their section
        parts += [r"\clearpage", r"\section*{Theory against Monte Carlo}",
                  sweep_rows.to_latex(caption=r"Width sweeps: weighted fits $a+b/n+c/n^2$ of the Monte Carlo; "
                                      r"$a$ against the infinite-width value ($K$, $V$), $b$ against $G^{\{1\}}$; "
                                      r"controls: the infinite-width-only prediction, rejected where the $1/n$ "
                                      r"effect is resolvable."),
                  single.to_latex()]
        parts += [figure(f, cap, width=r"0.7\linewidth") for f, cap in figs]
    if ntk_rows is not None:
        nfigs = ntk_figures(out, ntk_runs, ntk_sweeps, echo)
        figs += nfigs
        parts += [r"\clearpage", r"\section*{Neural tangent kernel at finite width}",
                  ntk_rows.to_latex(caption=r"NTK statistics against Monte Carlo of sampled networks (exact jets): "
                                    r"every statistic at $\ell = 2$, where the $O(1/n)$ theory is exact at any width "
                                    r"(diagonal and mixed entries); in the full run a width sweep at $\ell = 3$ "
                                    r"(rows `$X$ a', `$X$ b': weighted fits $a + b/n$, $a$ against $\Theta$ and the "
                                    r"$n$-scaled statistics, $b$ against $\Theta^{\{1\}}$); and the controls that the "
                                    r"frozen NTK (no fluctuation, no $1/n$ shift) is rejected wherever the effect is "
                                    r"resolved. Rows `exact': a bias-free ReLU network at width 6, whose NTK mean, "
                                    r"variance and one-input $A$, $B$, $D$, $F$ are known at every width (the exact "
                                    r"chain), with the $O(1/n)$ variance, $A$ and $B$ as controls where they are "
                                    r"resolvably off. Rows `$1/n^2$': the tanh network sampled again, its one-input "
                                    r"entries at $\ell \ge 3$ against the $O(1/n^2)$ NTK (the network's copies, "
                                    r"derivations/README.md section 17.2), with the bound on the orders beyond as "
                                    r"allowance and the $O(1/n)$ variance as control.")]
        parts += [figure(f, cap, width=r"0.7\linewidth") for f, cap in nfigs]
    if bvt is not None:
        tfigs = training_figures(out, bvt, training_sweeps, echo)
        figs += tfigs
        parts += [r"\clearpage", r"\section*{Trained networks: Bayes against training}", bvt.to_latex()]
        if training_rows is not None and training_rows.rows:
            parts.append(training_rows.to_latex(
                caption=r"Training width sweep: weighted fits $a + b/n + c/n^2$ of the Monte Carlo of networks trained "
                        r"by gradient descent; $a$ against the frozen-NTK (infinite-width) prediction, $b$ against "
                        r"the $O(1/n)$ coefficient (trained mean, the network's output minus its own frozen-NTK "
                        r"prediction, the NTK change); controls: no feature learning and a frozen NTK, rejected "
                        r"where the effect is resolvable at the widest width."))
        parts += [figure(f, cap, width=r"0.75\linewidth") for f, cap in tfigs]
    if breakdown:
        bfigs = breakdown_figures(out, breakdown)
        figs += bfigs
        parts += [r"\clearpage", r"\section*{Beyond order $1/n$: where each order holds}", breakdown_latex(breakdown)]
        parts += [figure(f, cap, width=r"\linewidth") for f, cap in bfigs]
    if influence is not None:
        ifigs = influence_figures(out, influence)
        figs += ifigs
        parts += [r"\clearpage", r"\section*{Datapoints as particles: influence}",
                  influence.rows.to_latex(
                      caption=r"Influence of seven training particles on a circle on the prediction at the test input "
                              r"(noise variance 0.1): per particle, $n\,$(Monte Carlo $-$ infinite width) at three "
                              r"widths extrapolated to $b + c/n + e/n^2$, $b$ against the predicted $1/n$ "
                              r"coefficient of "
                              r"$\partial m/\partial y_a$; controls: the infinite-width influence, rejected at the "
                              r"smaller width, and $b = 0$ rejected, where the $1/n$ effect is resolvable.")]
        parts += [figure(f, cap, width=r"\linewidth") for f, cap in ifigs]
    parts += [r"\section*{Leading-order recursions}",
              *(r"\paragraph{%s}" % n.replace("_", r"\_") + "\n" + recursion_equations(n) for n in ("relu", "erf", "tanh"))]
    tex = document(*parts, title="pdlt verification")
    (out / "verify.tex").write_text(tex)
    payload = {"summary": summary, "provenance": provenance(quick, monte_carlo, out_dir, sweeps),
               "checks": [r.as_dict() for r in rows], "criticality": [c.as_dict() for c in crits]}
    if sweep_rows is not None:
        payload["monte_carlo"] = {"width_sweeps": json.loads(sweep_rows.to_json()),
                                  "single_width": json.loads(single.to_json())}
    if ntk_rows is not None:
        payload.setdefault("monte_carlo", {})["ntk"] = json.loads(ntk_rows.to_json())
        payload["provenance"]["ntk_runs"] = [
            {"case": label, **{k: mc.config[k] for k in ("activation", "widths", "C_W", "C_b", "lambda_b", "lambda_W",
                                                          "x", "seed", "batches")},
             "n_samples": int(mc.n_samples)} for label, _, mc in ntk_runs]
        payload["provenance"]["ntk_sweeps"] = [
            {"case": sw.case, "runs": [{"width": int(n), "seed": int(r.config["seed"]), "n_samples": int(r.n_samples)}
                                       for n, r in zip(sw.widths, sw.results)]} for sw in ntk_sweeps]
    if bvt is not None:
        mc = payload.setdefault("monte_carlo", {})
        mc["bayes_vs_training"] = [dict(zip(("setting", "test", "bayes_inf", "bayes_1n", "bayes_mc", "bayes_se",
                                              "train_inf", "train_1n", "train_mc", "train_se"), row))
                                   for row in bvt.table_rows()]
        if training_rows is not None:
            mc["training_sweeps"] = json.loads(training_rows.to_json())
        payload["provenance"]["training"] = {
            "bayes_vs_training": {"widths": list(bvt.net.widths), "n_bayes": bvt.n_bayes, "n_train": bvt.n_train,
                                  "eta": list(bvt.eta), "steps": bvt.steps},
            "sweeps": [{"case": sw.case, "runs": [{"width": int(n), "seed": int(r.config["seed"]),
                                                   "n_samples": int(r.n_samples)}
                                                  for n, r in zip(sw.widths, sw.results)]} for sw in training_sweeps]}
    if breakdown:
        payload.setdefault("monte_carlo", {})["breakdown"] = [
            {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}} for row in breakdown_table(breakdown)]
        payload["provenance"]["breakdown"] = [
            {"case": c.case.label, "activation": c.case.activation, "C_W": c.case.C_W, "C_b": c.case.C_b, "n": c.n,
             "L": c.L, "n_networks": c.n_networks} for c in breakdown]
    if influence is not None:
        payload.setdefault("monte_carlo", {})["influence"] = json.loads(influence.rows.to_json())
        payload["provenance"]["influence"] = list(influence.provenance)
    (out / "verify.json").write_text(json.dumps(payload, indent=2, default=float))
    wrote_pdf = compile_tex and have_pdflatex()
    if wrote_pdf:
        try:
            compile_pdf(tex, out, "verify", check=True)
        except LatexError as err:
            if "not paper-ready" not in str(err):
                raise
            echo(f"warning: verify.pdf has layout problems (please report them):\n{err}")
            compile_pdf(tex, out, "verify")
    echo(f"wrote {out}/verify.tex, verify.json" + (", verify.pdf" if wrote_pdf else "")
         + "".join(", " + f for f, _ in figs))


def influence_figures(out: Path, inf) -> list[tuple[str, str]]:
    """The locality figure of the influence section (:func:`pdlt.plots.locality_plot`) with its caption."""
    from .. import plots

    if inf is None or not plots.have_matplotlib():
        return []
    import matplotlib.pyplot as plt

    L = inf.profiles[0].infinite.shape[0]
    fig = plots.locality_plot(inf.profiles, list(inf.labels), tuple(range(2, L + 1)), mc=inf.mc,
                              n_networks=inf.n_networks, path=out / "locality.png",
                              title="influence of each training particle on the test input")
    plt.close(fig)
    n = int(inf.profiles[0].n[-1])
    return [("locality.png",
             rf"Influence $\partial m(x_0)/\partial y_a$ of seven training particles on a circle through the test "
             rf"input $x_0$ (noise variance {inf.profiles[0].noise_var:g}) against their angle from it, for networks "
             rf"of depth $L = 2\ldots{L}$ and hidden width $n = {n}$: infinite width dashed, $O(1/n)$ solid; Monte "
             rf"Carlo at $L = {L}$ ({inf.n_networks:,} networks with explicit weights; the derivative of the "
             r"reweighting estimator, one standard error, mostly smaller than the markers).")]

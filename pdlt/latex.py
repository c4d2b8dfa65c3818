"""LaTeX output: booktabs tables, equations, standalone documents, value(uncertainty) formatting.

Only ``amsmath`` and ``booktabs`` are required (both in Debian's texlive-latex-recommended); no siunitx.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import sympy as sp

__all__ = [
    "escape",
    "fmt_number",
    "fmt_uncertainty",
    "booktabs",
    "equation",
    "align",
    "document",
    "have_pdflatex",
    "compile_pdf",
    "criticality_table",
    "recursion_equations",
]

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_SPECIAL.get(c, c) for c in str(text))


def fmt_number(x, digits: int = 6) -> str:
    """A number for a table cell in math mode: ``None`` -> an en dash, inf -> ``\\infty``, else %.{digits}g
    with exponents written as ``\\times 10^{k}``."""
    if x is None:
        return "--"
    if isinstance(x, str):
        return escape(x)
    x = float(x)
    if math.isnan(x):
        return "--"
    if math.isinf(x):
        return r"$\infty$" if x > 0 else r"$-\infty$"
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return rf"${mant}\times 10^{{{int(exp)}}}$"
    return f"${s}$"


def fmt_uncertainty(value: float, error: float, err_digits: int = 2) -> str:
    """``value(error)`` in the concise notation, e.g. ``(1.23456, 0.00067) -> '1.23456(67)'``.

    The error is rounded to ``err_digits`` significant digits and the value to the same decimal place.
    A zero or non-finite error gives the value alone.
    """
    if not math.isfinite(error) or error <= 0:
        return f"{value:.6g}"
    e10 = math.floor(math.log10(error))
    dec = err_digits - 1 - e10
    err_r = round(error, dec)
    if err_r >= 10 ** (e10 + 1):  # rounding carried into a new digit (e.g. 0.0996 -> 0.10)
        e10 += 1
        dec = err_digits - 1 - e10
        err_r = round(error, dec)
    if dec > 0:
        return f"{value:.{dec}f}({int(round(err_r * 10**dec))})"
    # error >= 1 in the last kept place: write it out in the value's units
    return f"{round(value, dec):.0f}({int(round(err_r))})"


def booktabs(header: Sequence[str], rows: Iterable[Sequence[str]], *, align: str | None = None,
             caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``table`` environment. Cells are inserted verbatim (escape them first if needed)."""
    header = list(header)
    align = align or ("l" + "r" * (len(header) - 1))
    lines = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{caption}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for r in rows:
        r = list(r)
        if len(r) != len(header):
            raise ValueError(f"row has {len(r)} cells but the header has {len(header)}: {r}")
        lines.append(" & ".join(r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def equation(expr, label: str | None = None) -> str:
    """An ``equation`` environment for a sympy expression/Eq (or a LaTeX string)."""
    body = expr if isinstance(expr, str) else sp.latex(expr)
    lab = rf"\label{{{label}}}" if label else ""
    return f"\\begin{{equation}}{lab}\n{body}\n\\end{{equation}}"


def align(lines: Sequence[tuple[str, object]]) -> str:
    """An ``align`` block from ``(lhs_latex, rhs)`` pairs (rhs sympy or LaTeX)."""
    rows = [f"{lhs} &= {rhs if isinstance(rhs, str) else sp.latex(rhs)}" for lhs, rhs in lines]
    return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"


def document(*parts: str, title: str | None = None) -> str:
    """A standalone article (amsmath, booktabs, graphicx) holding the given LaTeX parts."""
    head = [r"\documentclass[11pt]{article}", r"\usepackage{amsmath,amssymb}", r"\usepackage{booktabs}", r"\usepackage{graphicx}",
            r"\usepackage[margin=2cm]{geometry}", r"\begin{document}"]
    if title:
        head.append(rf"\section*{{{escape(title)}}}")
    return "\n".join(head + list(parts) + [r"\end{document}", ""])


def have_pdflatex() -> bool:
    return shutil.which("pdflatex") is not None


def compile_pdf(tex: str, out_dir: str | os.PathLike | None = None, name: str = "pdlt") -> Path:
    """Compile a LaTeX document with pdflatex; returns the PDF path. Raises RuntimeError with the log's
    error lines when compilation fails, or if pdflatex is not installed."""
    if not have_pdflatex():
        raise RuntimeError("pdflatex is not installed (Debian: apt-get install texlive-latex-recommended)")
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pdlt-tex-"))
    out.mkdir(parents=True, exist_ok=True)
    src = out / f"{name}.tex"
    src.write_text(tex)
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", src.name],
        cwd=out, capture_output=True, text=True, timeout=120,
    )
    pdf = out / f"{name}.pdf"
    if proc.returncode != 0 or not pdf.exists():
        errs = [ln for ln in proc.stdout.splitlines() if ln.startswith("!") or "Error" in ln]
        raise RuntimeError("pdflatex failed:\n" + "\n".join(errs[:20] or proc.stdout.splitlines()[-20:]))
    return pdf


def criticality_table(results, *, caption: str | None = None, label: str = "tab:criticality") -> str:
    """Booktabs table of :class:`pdlt.Criticality` results: class, C_b, C_W, K*, exponents."""
    header = ["activation", "class", "$C_b$", "$C_W$", r"$K^\star$", r"$p_\parallel$", r"$p_\perp$", "note"]
    rows = []
    for c in results:
        ex = c.exponents or {}
        kstar = "any" if c.universality == "scale-invariant" else fmt_number(c.K_star, 9)
        rows.append([
            escape(c.activation), escape(c.universality), fmt_number(c.C_b, 9), fmt_number(c.C_W, 9), kstar,
            fmt_number(ex.get("p_par")), fmt_number(ex.get("p_perp")),
            escape(_short_note(c)),
        ])
    caption = caption or (r"Critical initialization ($\chi_\parallel = \chi_\perp = 1$) and universality class "
                          r"of each activation; $\delta K_{[1]} \sim \ell^{-p_\parallel}$, "
                          r"$\delta\delta K_{[2]} \sim \ell^{-p_\perp}$.")
    return booktabs(header, rows, align="llrrrrrl", caption=caption, label=label)


def _short_note(c) -> str:
    if c.universality == "K*=0":
        return f"a1={c.a1:g}, b1={c.b1:g}"
    if c.universality == "half-stable":
        return "attracted from above" if (c.dchi_par_dK or 0) < 0 else "attracted from below"
    if c.universality == "scale-invariant":
        return f"slopes=({c.slopes[0]:g},{c.slopes[1]:g})"
    return "no critical point"


def recursion_equations(act) -> str:
    """LaTeX of the leading-order recursion and susceptibilities of one activation."""
    from . import symbolic as sym

    rec = sym.kernel_recursion(act)
    s = sym.susceptibilities(act)
    return align([
        (sp.latex(rec.lhs), rec.rhs),
        (r"\chi_\parallel(K)", s["chi_par"]),
        (r"\chi_\perp(K)", s["chi_perp"]),
    ])

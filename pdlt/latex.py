"""LaTeX output: booktabs tables, equations, standalone documents, value(uncertainty) formatting, and a
checker for the compiled result.

Documents use only packages of Debian's texlive-latex-base/-recommended: amsmath, amssymb, booktabs, graphicx,
array, tabularx, geometry, caption; no siunitx. "Paper-ready" is checked, not hoped for: :func:`compile_pdf`
(``check=True``) fails on any overfull box wider than 1 pt, a float taller than the page, an undefined control
sequence, a missing glyph, a table shrunk below 80 % to fit, or a ``<``, ``>`` or ``|`` typeset in text mode
(OT1 fonts print them as the wrong glyphs, e.g. "<sigma>" as "¡sigma¿").
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import sympy as sp

from .errors import ParameterError, PdltError

__all__ = [
    "LatexError",
    "escape",
    "math_label",
    "prose_label",
    "fmt_number",
    "fmt_uncertainty",
    "booktabs",
    "equation",
    "align",
    "document",
    "figure",
    "PREAMBLE",
    "have_pdflatex",
    "compile_pdf",
    "overfull_boxes",
    "log_problems",
    "text_mode_symbols",
    "criticality_table",
    "recursion_equations",
]

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            # OT1 text fonts have no <, >, |: typed raw they print as other glyphs ("<" as "¡")
            "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_SPECIAL.get(c, c) for c in str(text))


_GREEK = frozenset("alpha beta gamma delta epsilon zeta eta theta kappa lambda mu nu xi pi rho sigma tau phi chi "
                    "psi omega Gamma Delta Theta Lambda Sigma Phi Psi Omega ell infty".split())
# plain-text names of PDLT symbols -> LaTeX math
_NAMES = {"par": r"\parallel", "perp": r"\perp", "eps": r"\epsilon", "inf": r"\infty", "infinity": r"\infty",
          "star": r"\star", "l": r"\ell", "dx": r"\delta x", "E": "E"}
_MATH_SPECIAL = {"#": r"\#", "%": r"\%", "&": r"\&", "$": r"\$", "{": r"\{", "}": r"\}", "~": r"\sim ",
                 "\\": r"\backslash "}
_LABEL_TOKEN = re.compile(r"\^\((?P<supp>[^()]*)\)|\^(?P<supa>[A-Za-z0-9]+)|_\[(?P<subb>[^\]]*)\]"
                          r"|_(?P<suba>[A-Za-z0-9]+)|(?P<ident>[A-Za-z]+(?:_(?!par\b|perp\b|star\b)[A-Za-z]{2,})+)|(?P<g1>G1)(?![A-Za-z0-9])|(?P<theta1>Theta1)(?![A-Za-z0-9])|(?P<word>[A-Za-z]+)|(?P<num>[0-9.]+)"
                          r"|(?P<space>\s+)|(?P<other>.)", re.S)


def _label_word(w: str, inner: bool) -> tuple[str, bool]:
    """LaTeX for one word of a label and whether it is prose (typeset upright as text)."""
    if w in _GREEK:
        return "\\" + w + " ", False
    if w in _NAMES:
        return _NAMES[w] + " ", False
    if re.fullmatch(r"d+[A-Z]", w):  # ddK: the delta-expansion's second-order component
        return r"\delta " * (len(w) - 1) + w[-1], False
    if len(w) == 1 or (inner and w.isupper()):
        return w, False
    return (rf"\mathrm{{{w}}}", False) if inner else (rf"\text{{{w}}}", True)


def _label_math(text: str, inner: bool = False) -> str:
    atoms: list[list] = []  # [base, sub, sup, prose]

    def attach(slot: int, content: str, sep: str = ""):
        if not atoms or atoms[-1][3]:
            atoms.append(["{}", None, None, False])
        cur = atoms[-1][slot]
        atoms[-1][slot] = content if cur is None else cur + sep + content

    pending_space = False
    for m in _LABEL_TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "space":
            pending_space = True
            continue
        if kind in ("supp", "supa"):
            val = m.group(kind)
            attach(2, f"({_label_math(val, True)})" if kind == "supp" else _label_math(val, True))
        elif kind in ("subb", "suba"):
            val = m.group(kind)
            if kind == "suba" and val == "star":
                attach(2, r"\star ")
            else:
                attach(1, f"[{_label_math(val, True)}]" if kind == "subb" else _label_math(val, True), ",")
        elif kind == "other" and m.group() == "*":
            attach(2, r"\star ")
        else:
            if kind == "g1":
                atom = ["G", None, r"\{1\}", False]
            elif kind == "theta1":  # the NTK's 1/n mean correction, PDLT's Theta^{1}
                atom = [r"\Theta ", None, r"\{1\}", False]
            elif kind == "ident":  # a snake_case name such as two_point: prose, underscores kept
                atom = [rf"\text{{{escape(m.group())}}}", None, None, True]
            elif kind == "word":
                tex, prose = _label_word(m.group(), inner)
                atom = [tex, None, None, prose]
            elif kind == "num":
                atom = [m.group(), None, None, False]
            else:
                c = m.group()
                tex = {"<": r"\langle ", ">": r"\rangle "}.get(c) or _MATH_SPECIAL.get(c, c)
                atom = [tex, None, None, False]
            if pending_space and atoms and (atom[3] or atoms[-1][3]):
                atoms.append([r"\ ", None, None, False])
            atoms.append(atom)
        pending_space = False
    out = []
    for base, sub, sup, _ in atoms:
        out.append(base + (f"_{{{sub}}}" if sub is not None else "") + (f"^{{{sup}}}" if sup is not None else ""))
    return "".join(out).strip()


def math_label(text: str) -> str:
    r"""A plain-text quantity label as inline LaTeX math, e.g. ``"<sigma^2>_K"`` ->
    ``$\langle\sigma^{2}\rangle_{K}$``, ``"K*"`` -> ``$K^{\star}$``, ``"chi_par(K*)"`` ->
    ``$\chi_{\parallel}(K^{\star})$``, ``"G1_[2]^(5)"`` -> ``$G_{[2]}^{\{1\}(5)}$``.

    Grammar: Greek names and ``l`` (-> ``\ell``), ``par``/``perp``, ``dx`` (``\delta x``), ``ddK``
    (``\delta\delta K``), ``G1`` (PDLT's ``G^{\{1\}}``), ``Theta1`` (``\Theta^{\{1\}}``); ``<...>`` angle brackets; ``^(x)``/``^x`` and
    ``_[x]``/``_x`` scripts (a second superscript of one symbol is merged into the first, never a double
    superscript); ``*`` a star superscript. Other words of two or more letters are prose, set upright in
    ``\text``, with the spaces around them kept.
    """
    if _BROKEN.search(str(text)):
        return r"$\text{" + escape(str(text)) + "}$"
    return "$" + _label_math(str(text)) + "$"


_MATHY = re.compile(r"[\^_*<>]|^(?:%s)(?![A-Za-z-])" % "|".join(sorted(_GREEK | {"eps"}, key=len, reverse=True)))
# a script with nothing to carry (tanh_, x^, a__b) is no formula: such a word stays text (as math, '$\text{tanh}_$'
# did not compile)
_BROKEN = re.compile(r"[\^_](?:$|[\^_])")
# snake_case names (leaky_relu(0.1), finite_width, derivations/delta_expansion.py) are text, not subscripts
_IDENT = re.compile(r"[\w./(),-]*[A-Za-z]{2,}_[A-Za-z]{2,}[\w./(),-]*")


def _peel(tok: str) -> tuple[str, str, str]:
    """Split unbalanced leading '(' and trailing ')' ',' ';' ':' '.' off a word, so that they stay text."""
    lead = ""
    while tok.startswith("(") and tok.count("(") > tok.count(")"):
        lead, tok = lead + "(", tok[1:]
    trail = ""
    while tok and (tok[-1] in ",;:." or (tok[-1] == ")" and tok.count(")") > tok.count("("))):
        trail, tok = tok[-1] + trail, tok[:-1]
    return lead, tok, trail


def prose_label(text: str) -> str:
    r"""Plain text with formulas in it (e.g. a method: ``"solver vs 2/(1+a^2)"``) as LaTeX: words that carry
    ``^ _ * < >`` or start with a Greek name go through :func:`math_label`, the rest is escaped text."""
    out = []
    for tok in str(text).split(" "):
        lead, core, trail = _peel(tok)
        if (core and _MATHY.search(core) and not _BROKEN.search(core)
                and not (_IDENT.fullmatch(core) and not re.search(r"[\^*<>]", core))):
            out.append(escape(lead) + math_label(core) + escape(trail))
        else:
            out.append(escape(tok))
    return " ".join(out)


def fmt_number(x, digits: int = 6) -> str:
    """A number for a table cell in math mode: ``None`` -> an en dash, inf -> ``\\infty``, else %.{digits}g
    with exponents written as ``\\times 10^{k}``."""
    if x is None:
        return "--"
    if isinstance(x, str):
        return escape(x)
    from .validation import check_int

    digits = check_int(digits, "digits", minimum=1, maximum=17)
    try:
        if isinstance(x, complex) or "complex" in type(x).__name__:
            raise TypeError
        x = float(x)
    except OverflowError:              # an int beyond float64 (10**400)
        x = math.inf if x > 0 else -math.inf
    except (TypeError, ValueError):
        raise ParameterError(f"a table number must be real, got {x!r}", "x") from None
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
    """``value(error)`` in the concise notation, as math-mode LaTeX: ``(1.23456, 0.00067) -> '1.23456(67)'``.

    The error is rounded to ``err_digits`` significant digits and the value to the same decimal place. Beyond
    ``10^-4 .. 10^6`` both are written in units of a power of ten, ``'1.23(45)\\times 10^{-12}'`` (not hundreds of
    fixed-point digits). A zero or non-finite error gives the value alone; a NaN value a dash, an infinite one
    ``\\infty``.
    """
    from .validation import check_int

    err_digits = check_int(err_digits, "err_digits", minimum=1, maximum=15)
    value, error = float(value), float(error)
    if math.isnan(value):
        return r"\mbox{--}"
    if math.isinf(value):
        return r"\infty" if value > 0 else r"-\infty"
    if not math.isfinite(error) or error <= 0:
        return fmt_number(value).strip("$")
    if error < 1e-15 * abs(value):          # below the value's own rounding: its digits, no parenthesis
        return fmt_number(value, 15).strip("$")
    top = max(abs(value), error)
    k = math.floor(math.log10(top))
    if -4 <= k < 6:
        return _fixed_uncertainty(value, error, err_digits)
    h = -k // 2           # (multiplied by 10^-k in two factors: 10^324 is beyond float64, 10^-324 subnormal)
    scale = lambda x: x * 10.0**h * 10.0 ** (-k - h)                 # noqa: E731
    return _fixed_uncertainty(scale(value), scale(error), err_digits) + rf"\times 10^{{{k}}}"


def _fixed_uncertainty(value: float, error: float, err_digits: int) -> str:
    """:func:`fmt_uncertainty` in fixed point, for values and errors near 1."""
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


def _chunks(rows: list, max_rows: int) -> list[list]:
    """Split ``rows`` into the fewest pieces of at most ``max_rows`` rows, of nearly equal length."""
    from .validation import check_int

    max_rows = check_int(max_rows, "max_rows", minimum=1)
    if len(rows) <= max_rows:
        return [rows]
    k = -(-len(rows) // max_rows)
    size = -(-len(rows) // k)
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _expand_align(align: str) -> str:
    """``X`` (a wrapping column that takes the rest of the line) becomes a ragged-right tabularx column."""
    return align.replace("X", r">{\raggedright\arraybackslash}X")


def booktabs(header: Sequence[str], rows: Iterable[Sequence[str]], *, align: str | None = None,
             caption: str | None = None, label: str | None = None, size: str = r"\small",
             max_rows: int = 40) -> str:
    r"""Booktabs ``table`` floats that fit the text width. Cells are inserted verbatim (escape them first).

    ``align``: one letter per column (``l``, ``r``, ``c``, ``p{width}``, ``>{...}p{...}``) and ``X`` for
    wrapping columns that share the rest of the line (typeset with tabularx at ``\linewidth``). A table
    without ``X`` is measured by TeX and, only if wider than ``\linewidth``, scaled down to it; the scaling
    is written to the log as ``pdlt-table-scaled`` so that :func:`log_problems` can refuse one that would
    be unreadable. More than ``max_rows`` rows are split into several floats of the same number
    (caption "(continued)"), so a float never exceeds the page. The caption sits above the table.
    """
    header = list(header)
    align = align or ("l" + "r" * (len(header) - 1))
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(header):
            raise PdltError(f"row has {len(r)} cells but the header has {len(header)}: {r}")
    bad = [c for c in header + [c for r in rows for c in r] if not isinstance(c, str)]
    if bad:          # (cells are LaTeX, inserted verbatim: a number would need fmt_number's math anyway)
        raise ParameterError(f"table cells must be LaTeX strings (format numbers with fmt_number), got {bad[0]!r}",
                             "rows")
    wrap = "X" in align
    spec = _expand_align(align)
    pieces = _chunks(rows, max_rows) if rows else [[]]
    out = []
    for k, piece in enumerate(pieces):
        lines = [r"\begin{table}[htbp]", r"\centering", size]
        if caption:
            if k == 0:
                lines.append(rf"\caption{{{caption}}}")
                if label:
                    lines.append(rf"\label{{{label}}}")
            else:
                # same table number, short caption (the caption package provides \ContinuedFloat)
                lines.append(r"\ifdefined\ContinuedFloat\ContinuedFloat\fi")
                lines.append(rf"\caption[]{{(continued, part {k + 1} of {len(pieces)})}}")
        body = [r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
        body += [" & ".join(r) + r" \\" for r in piece]
        body += [r"\bottomrule"]
        if wrap:
            lines += [rf"\begin{{tabularx}}{{\linewidth}}{{{spec}}}", *body, r"\end{tabularx}"]
        else:
            # measure the natural width; shrink (never enlarge) to the line width only when needed
            lines += [r"\setbox0=\hbox{%", rf"\begin{{tabular}}{{{spec}}}", *body, r"\end{tabular}}%",
                      r"\ifdim\wd0>\linewidth\typeout{pdlt-table-scaled: \the\wd0\space to \the\linewidth}%",
                      r"\resizebox{\linewidth}{!}{\box0}\else\box0\fi"]
        lines.append(r"\end{table}")
        out.append("\n".join(lines))
    return "\n".join(out)


def equation(expr, label: str | None = None) -> str:
    """An ``equation`` environment for a sympy expression/Eq (or a LaTeX string)."""
    body = expr if isinstance(expr, str) else sp.latex(expr)
    lab = rf"\label{{{label}}}" if label else ""
    return f"\\begin{{equation}}{lab}\n{body}\n\\end{{equation}}"


def align(lines: Sequence[tuple[str, object]]) -> str:
    """An ``align`` block from ``(lhs_latex, rhs)`` pairs (rhs sympy or LaTeX)."""
    lines = list(lines)
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in lines):
        raise ParameterError("align takes (lhs LaTeX, rhs) pairs", "lines")
    rows = [f"{lhs} &= {rhs if isinstance(rhs, str) else sp.latex(rhs)}" for lhs, rhs in lines]
    return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"


PREAMBLE = (
    r"\documentclass[11pt]{article}",
    r"\usepackage{amsmath,amssymb}",
    r"\usepackage{booktabs,array,tabularx}",
    r"\usepackage{graphicx}",
    r"\usepackage[margin=2cm]{geometry}",
    # captions above tables with room before the top rule, below figures; small and bold label
    r"\usepackage[font=small,labelfont=bf,skip=6pt]{caption}",
    r"\captionsetup[table]{position=top}",
    # a glyph missing from the font goes to the log (checked by log_problems) instead of vanishing silently
    r"\tracinglostchars=2",
)


def document(*parts: str, title: str | None = None) -> str:
    """A standalone article (:data:`PREAMBLE`) holding the given LaTeX parts."""
    head = list(PREAMBLE) + [r"\begin{document}"]
    if title:
        head.append(rf"\section*{{{escape(title)}}}")
    return "\n".join(head + list(parts) + [r"\end{document}", ""])


def figure(path: str, caption: str, *, width: str = r"0.8\linewidth", label: str | None = None) -> str:
    """A ``figure`` float: the image ``path`` (as ``\\includegraphics`` finds it) with a caption below. A path
    with TeX's special characters (``%`` starts a comment, ``#``, ``&``, braces ...) is refused: rename the file."""
    if re.search(r"[%#&{}\\$^~]", os.fspath(path)):
        raise ParameterError(f"figure path {path!r} holds a character TeX reads as markup (% # & {{ }} \\ $ ^ ~): "
                             "rename the image", "path")
    lab = rf"\label{{{label}}}" if label else ""
    return "\n".join([r"\begin{figure}[htbp]", r"\centering", rf"\includegraphics[width={width}]{{{path}}}",
                      rf"\caption{{{caption}}}{lab}", r"\end{figure}"])


class LatexError(PdltError, RuntimeError):
    """pdflatex failed, or (with ``check=True``) the output is not paper-ready; the message quotes the log."""


def have_pdflatex() -> bool:
    return shutil.which("pdflatex") is not None


_OVERFULL = re.compile(r"^Overfull \\[hv]box \(([0-9.]+)pt too (?:wide|high)\)(.*)$", re.M)
# (TeX ends the register number of \the\wd0 at \space and swallows it: the log reads "...ptto ...pt")
_SCALED = re.compile(r"^pdlt-table-scaled: ([0-9.]+)pt ?to ([0-9.]+)pt", re.M)


def overfull_boxes(log: str) -> list[float]:
    """The excess (pt) of every ``Overfull \\hbox``/``\\vbox`` in a pdflatex log, in order."""
    if not isinstance(log, str):
        raise ParameterError(f"log must be the text of a pdflatex log, got {type(log).__name__}", "log")
    return [float(m.group(1)) for m in _OVERFULL.finditer(log)]


def log_problems(log: str, *, max_overfull_pt: float = 1.0, min_scale: float = 0.8) -> list[str]:
    """What keeps a compiled document from being paper-ready, one line each (empty: none).

    Overfull boxes wider than ``max_overfull_pt``, floats too large for the page, undefined control sequences
    or references, missing glyphs (``\\tracinglostchars``), and tables shrunk by :func:`booktabs` below
    ``min_scale`` of their natural width (the font would be unreadable: split or wrap the table instead).
    """
    probs = [f"Overfull box {float(m.group(1)):.1f}pt{m.group(2)}" for m in _OVERFULL.finditer(log)
             if float(m.group(1)) > max_overfull_pt]
    for m in _SCALED.finditer(log):
        scale = float(m.group(2)) / float(m.group(1))
        if scale < min_scale:
            probs.append(f"table scaled to {scale:.2f} of its natural width {m.group(1)}pt (below {min_scale})")
    lines = log.splitlines()
    for i, ln in enumerate(lines):
        if "Undefined control sequence" in ln:
            probs.append(ln.strip() + " " + " ".join(x.strip() for x in lines[i + 1:i + 3]))
        elif ln.startswith("Missing character") or "Float too large" in ln or (
                "LaTeX Warning" in ln and "undefined" in ln):
            probs.append(ln.strip())
    return probs


_MATH = re.compile(r"\$\$.*?\$\$|\$.*?(?<!\\)\$|\\\(.*?\\\)|\\\[.*?\\\]"
                   r"|\\begin\{(equation|align|gather|multline)(\*?)\}.*?\\end\{\1\2\}", re.S)


def text_mode_symbols(tex: str) -> list[str]:
    """``<``, ``>`` and ``|`` outside math mode in a LaTeX source (OT1 text fonts print them as other glyphs:
    "<" as "¡"); each hit with some context. Comments, math and the preamble's column specs are skipped."""
    body = tex.split(r"\begin{document}", 1)[-1]
    body = re.sub(r"(?<!\\)%.*", "", body)
    body = _MATH.sub(" ", body)
    # column specifications: >{\raggedright...}X etc.
    body = re.sub(r"\\begin\{tabularx?\}(\{\\linewidth\})?\{[^\n]*", " ", body)
    body = re.sub(r"\\ifdim\\wd0>", " ", body)
    return [body[max(0, m.start() - 30):m.end() + 30].replace("\n", " ") for m in re.finditer(r"[<>|]", body)]


def compile_pdf(tex: str, out_dir: str | os.PathLike | None = None, name: str = "pdlt", *,
                check: bool = False, search: Sequence[str | os.PathLike] = ()) -> Path:
    """Compile a LaTeX document with pdflatex in a temporary directory and copy only ``name.pdf`` to
    ``out_dir`` (default: a new temporary directory); returns the PDF path. Graphics and inputs are found in
    ``out_dir`` and in the ``search`` directories.

    Raises :class:`LatexError` (quoting the log's error lines) when pdflatex is missing or fails, and with
    ``check=True`` also when :func:`log_problems` or :func:`text_mode_symbols` finds anything; the full log
    is then kept in a temporary directory named in the message.
    """
    if not have_pdflatex():
        raise LatexError("pdflatex is not installed (Debian: apt-get install texlive-latex-recommended); "
                         "run without a PDF (pdlt verify --no-pdf)")
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="pdlt-tex-"))
    out.mkdir(parents=True, exist_ok=True)
    dirs = [str(Path(d).resolve()) for d in (out, *search)]
    env = {**os.environ, "TEXINPUTS": os.pathsep.join(["."] + dirs) + os.pathsep}  # trailing: keep the defaults
    work = Path(tempfile.mkdtemp(prefix="pdlt-tex-build-"))
    keep = False
    try:
        (work / f"{name}.tex").write_text(tex)
        try:
            proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
                                  cwd=work, capture_output=True, text=True, timeout=120, env=env)
        except subprocess.TimeoutExpired:
            keep = True
            raise LatexError(f"pdflatex failed: no result in 120 s (files kept in {work})") from None
        logf = work / f"{name}.log"
        log = logf.read_text(errors="replace") if logf.exists() else proc.stdout
        pdf = work / f"{name}.pdf"
        if proc.returncode != 0 or not pdf.exists():
            keep = True
            errs = [ln for ln in log.splitlines() if ln.startswith("!") or ln.startswith("l.")]
            raise LatexError(f"pdflatex failed (log: {logf}):\n" + "\n".join(errs[:20] or log.splitlines()[-20:]))
        if check:
            probs = log_problems(log) + [f"'<', '>' or '|' in text mode: ...{t}..." for t in text_mode_symbols(tex)]
            if probs:
                keep = True
                raise LatexError(f"{name}.tex is not paper-ready (log: {logf}):\n" + "\n".join(probs[:20]))
        target = out / f"{name}.pdf"
        shutil.copyfile(pdf, target)
        return target
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def criticality_table(results, *, caption: str | None = None, label: str = "tab:criticality") -> str:
    """Booktabs table of :class:`pdlt.Criticality` results: class, C_b, C_W, K*, exponents."""
    header = ["activation", "class", "$C_b$", "$C_W$", r"$K^\star$", r"$p_\parallel$", r"$p_\perp$", "note"]
    rows = []
    for c in results:
        if not hasattr(c, "universality"):
            raise ParameterError(f"criticality_table takes pdlt.criticality(...) results, got {c!r}", "results")
        ex = c.exponents or {}
        kstar = "any" if c.universality == "scale-invariant" else fmt_number(c.K_star, 9)
        rows.append([
            escape(c.activation), _CLASS_TEX.get(c.universality, escape(c.universality)), fmt_number(c.C_b, 9), fmt_number(c.C_W, 9), kstar,
            fmt_number(ex.get("p_par")), fmt_number(ex.get("p_perp")),
            _short_note(c),
        ])
    caption = caption or (r"Critical initialization ($\chi_\parallel = \chi_\perp = 1$) and universality class "
                          r"of each activation; $\delta K_{[1]} \sim \ell^{-p_\parallel}$, "
                          r"$\delta\delta K_{[2]} \sim \ell^{-p_\perp}$.")
    return booktabs(header, rows, align="llrrrrrX", caption=caption, label=label)


_CLASS_TEX = {"K*=0": r"$K^\star = 0$"}


def _short_note(c) -> str:
    if c.universality == "K*=0":
        return f"$a_1 = {c.a1:g}$, $b_1 = {c.b1:g}$"
    if c.universality == "half-stable":
        return "attracted from above" if (c.dchi_par_dK or 0) < 0 else "attracted from below"
    if c.universality == "scale-invariant":
        return f"slopes $a_+ = {c.slopes[0]:g}$, $a_- = {c.slopes[1]:g}$"
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

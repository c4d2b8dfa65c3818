import pytest

import pdlt
from pdlt.latex import (LatexError, booktabs, compile_pdf, criticality_table, document, escape, figure, fmt_number,
                        fmt_uncertainty, have_pdflatex, log_problems, math_label, overfull_boxes, prose_label,
                        recursion_equations, text_mode_symbols)

needs_tex = pytest.mark.skipif(not have_pdflatex(), reason="pdflatex not installed")


@pytest.mark.parametrize("v,e,s", [(1.23456, 0.00067, "1.23456(67)"), (0.5, 0.0996, "0.50(10)"), (12.3, 1.5, "12.3(15)"),
                                   (1234.0, 56.0, "1234(56)"), (-0.00123, 0.000045, "-0.001230(45)"), (2.0, 0.0, "2")])
def test_fmt_uncertainty(v, e, s):
    assert fmt_uncertainty(v, e) == s


def test_escape_and_booktabs():
    assert escape("leaky_relu 50%") == r"leaky\_relu 50\%"
    assert escape("|V| < 1") == r"\textbar{}V\textbar{} \textless{} 1" and not text_mode_symbols(document(escape("a|b<c")))
    t = booktabs(["a", "b"], [["1", "2"]], caption="c")
    assert r"\toprule" in t and r"\midrule" in t and r"\bottomrule" in t
    assert t.index(r"\caption") < t.index(r"\toprule"), "caption above the table"
    with pytest.raises(ValueError, match="cells"):
        booktabs(["a", "b"], [["1"]])


@pytest.mark.parametrize("label,tex", [
    ("<sigma^2>_K", r"$\langle \sigma ^{2}\rangle _{K}$"),
    ("<sigma sigma>_K", r"$\langle \sigma \sigma \rangle _{K}$"),
    ("K*", r"$K^{\star }$"),
    ("K_star", r"$K^{\star }$"),
    ("chi_par(K*)", r"$\chi _{\parallel}(K^{\star })$"),
    ("K^(2)_11", r"$K_{11}^{(2)}$"),
    ("G1^(1000)", r"$G^{\{1\}(1000)}$"),              # merged, never a double superscript
    ("G1_[2]^(5)/dx^2", r"$G_{[2]}^{\{1\}(5)}/\delta x ^{2}$"),
    ("ddK_[2]^(6)", r"$\delta \delta K_{[2]}^{(6)}$"),
    ("V/(K^2 l) at l=1000", r"$V/(K^{2}\ell )\ \text{at}\ \ell =1000$"),
    ("two_point", r"$\text{two\_point}$"),
])
def test_math_label(label, tex):
    assert math_label(label) == tex


@pytest.mark.parametrize("text,tex", [
    ("solver vs 2/(1+a^2)", r"solver vs $2/(1+a^{2})$"),
    ("mpmath at the solver's K*, C_W vs 1", r"mpmath at the solver's $K^{\star }$, $C_{W}$ vs 1"),
    ("leaky_relu(0.2), eps=0.08", r"leaky\_relu(0.2), $\epsilon =0.08$"),
    ("delta-expansion vs nu = 5 (derivations/delta_expansion.py)",
     r"delta-expansion vs $\nu$ = 5 (derivations/delta\_expansion.py)"),
])
def test_prose_label(text, tex):
    assert prose_label(text) == tex


@pytest.mark.parametrize("text", ["tanh_", "tanh^", "tanh__deep", "a_^b"])
def test_a_script_with_nothing_to_carry_is_text(text):
    # '$\text{tanh}_$' (a comparison's case label) stopped the table from compiling
    assert "$" not in prose_label(text)
    assert math_label(text).startswith(r"$\text{")


def test_log_parsers():
    log = ("Overfull \\hbox (501.07391pt too wide) in paragraph at lines 33--101\n"
           "Overfull \\hbox (0.4pt too wide) in paragraph at lines 3--4\n"
           "Overfull \\vbox (12.0pt too high) has occurred while \\output is active\n"
           "Missing character: There is no < in font cmr10!\n"
           "! Undefined control sequence.\nl.5 \\foo\n\n"
           "LaTeX Warning: Float too large for page by 137.12pt on input line 78.\n"
           "pdlt-table-scaled: 560.0pt to 470.0pt\npdlt-table-scaled: 1000.0pt to 470.0pt\n")
    assert overfull_boxes(log) == [501.07391, 0.4, 12.0]
    probs = log_problems(log)
    assert len(probs) == 6, probs  # not the 0.4pt box, not the 0.84 scaling
    assert any("501.1pt" in p for p in probs) and any("0.47" in p for p in probs)
    assert log_problems("Overfull \\hbox (0.9pt too wide) in paragraph\n") == []


def test_text_mode_symbols():
    assert text_mode_symbols(document(r"<sigma^2>_K")) and text_mode_symbols(document(r"a | b"))
    assert text_mode_symbols(document(r"$\langle x \rangle$ and $a<b$ \begin{align}a &< b\end{align}")) == []
    assert text_mode_symbols(booktabs(["a"], [["1"]], align="X")) == []


@needs_tex
def test_generated_document_compiles(tmp_path):
    names = ["linear", "relu", "tanh", "gelu", "sigmoid", "leaky_relu(0.1)", "swish", "softplus", "erf", "sin"]
    tex = document(criticality_table([pdlt.criticality(n) for n in names]), recursion_equations("tanh"),
                   recursion_equations("relu"), title="test")
    pdf = compile_pdf(tex, tmp_path, "t", check=True)
    assert pdf.exists() and pdf.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.pdf"], "no .aux/.log/.tex left in the output folder"


@needs_tex
def test_compile_failure_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="pdflatex failed") as err:
        compile_pdf(document(r"\undefinedmacro"), tmp_path, "bad")
    assert isinstance(err.value, LatexError) and "undefinedmacro" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@needs_tex
def test_checker_catches_what_is_not_paper_ready(tmp_path):
    wide = r"\begin{tabular}{" + "r" * 12 + "}" + " & ".join(["1.234567890123"] * 12) + r"\end{tabular}"
    with pytest.raises(LatexError, match="Overfull box"):
        compile_pdf(document(wide), tmp_path, "wide", check=True)
    with pytest.raises(LatexError, match="text mode"):
        compile_pdf(document(r"<sigma\textasciicircum{}2>\_K"), tmp_path, "lt", check=True)  # the old verify label
    compile_pdf(document(wide), tmp_path, "wide")  # without check: the PDF is still written


@needs_tex
def test_booktabs_fits_wide_and_long_tables(tmp_path):
    """The same wide row that overflows a plain tabular, and 100 rows (taller than a page), typeset clean."""
    header = [f"$c_{{{k}}}$" for k in range(9)]
    rows = [[f"${1.234567 * (k + 1):.6f}$"] * 9 for k in range(100)]
    t = booktabs(header, rows, caption="A long, wide table.", label="tab:x")
    assert t.count(r"\begin{table}") == 3 and t.count("continued") == 2
    wrap = booktabs(["name", "note"], [["relu", "a long note " * 30]], align="lX", caption="wrapped")
    compile_pdf(document(t, wrap), tmp_path, "tab", check=True)


@needs_tex
def test_figure_has_caption_below_image(tmp_path):
    import struct
    import zlib

    # a 1x1 PNG written by hand, so the test needs no matplotlib
    raw = b"\x00\xff\xff\xff"
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    (tmp_path / "dot.png").write_bytes(png)
    f = figure("dot.png", "One dot: $L=1$, $n=1$, 1 network.")
    assert f.index(r"\includegraphics") < f.index(r"\caption")
    compile_pdf(document(f), tmp_path, "fig", check=True)


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@needs_tex
def test_a_shrunk_table_is_caught_in_a_real_log(tmp_path):
    # TeX swallows the space after \the\wd0, so its log reads "...ptto ...pt": the check, written for "pt to",
    # passed a table shrunk to a quarter of its width (unreadable) as paper-ready
    wide = document(booktabs(["a", "b"], [["x", "$" + "1" * 400 + "$"]]))
    with pytest.raises(LatexError, match="table scaled to"):
        compile_pdf(wide, str(tmp_path), "wide", check=True)
    compile_pdf(document(booktabs(["a", "b"], [["x", "$1$"]])), str(tmp_path), "narrow", check=True)


@pytest.mark.parametrize("value, error, tex", [
    (1.23456, 0.00067, "1.23456(67)"), (12.5, 3.7, "12.5(37)"), (0.0123, 0.0045, "0.0123(45)"),
    # beyond 1e-4 .. 1e6 in units of a power of ten (a 210-digit string at 1e-200; an OverflowError at 5e-324)
    (1e-200, 1e-210, r"1.00000000000(10)\times 10^{-200}"), (5e-324, 5e-324, r"4.9(49)\times 10^{-324}"),
    (-2.5e7, 3e5, r"-2.500(30)\times 10^{7}"), (1e20, 1e19, r"1.00(10)\times 10^{20}"),
    # an error below the value's rounding, none, or non-finite values: no italic "nan" or "inf"
    (1e300, 1e-300, r"1\times 10^{300}"), (3.0, 0.0, "3"), (float("nan"), 0.1, r"\mbox{--}"),
    (float("inf"), 0.1, r"\infty")])
def test_fmt_uncertainty_extremes(value, error, tex):
    assert fmt_uncertainty(value, error) == tex


def test_bad_table_and_figure_arguments():
    # raw TypeError / ValueError before, and a figure path whose % commented out the rest of the line
    for call, setting in ((lambda: fmt_number(1 + 2j), "x"), (lambda: fmt_number(1.0, -1), "digits"),
                          (lambda: booktabs(["a"], [["1"]], max_rows=float("nan")), "max_rows"),
                          (lambda: figure("my plot_1%.png", "c"), "path"),
                          # raw TypeError, ValueError, AttributeError
                          (lambda: booktabs(["a"], [[1]]), "rows"), (lambda: overfull_boxes(None), "log"),
                          (lambda: pdlt.latex.align([("a",)]), "lines"), (lambda: criticality_table([1]), "results")):
        with pytest.raises(pdlt.ParameterError) as err:
            call()
        assert err.value.setting == setting

import pytest

import pdlt
from pdlt.latex import (booktabs, compile_pdf, criticality_table, document, escape, fmt_uncertainty, have_pdflatex,
                        recursion_equations)


@pytest.mark.parametrize("v,e,s", [(1.23456, 0.00067, "1.23456(67)"), (0.5, 0.0996, "0.50(10)"), (12.3, 1.5, "12.3(15)"),
                                   (1234.0, 56.0, "1234(56)"), (-0.00123, 0.000045, "-0.001230(45)"), (2.0, 0.0, "2")])
def test_fmt_uncertainty(v, e, s):
    assert fmt_uncertainty(v, e) == s


def test_escape_and_booktabs():
    assert escape("leaky_relu 50%") == r"leaky\_relu 50\%"
    t = booktabs(["a", "b"], [["1", "2"]], caption="c")
    assert r"\toprule" in t and r"\midrule" in t and r"\bottomrule" in t
    with pytest.raises(ValueError, match="cells"):
        booktabs(["a", "b"], [["1"]])


@pytest.mark.skipif(not have_pdflatex(), reason="pdflatex not installed")
def test_generated_document_compiles(tmp_path):
    names = ["linear", "relu", "tanh", "gelu", "sigmoid", "leaky_relu(0.1)"]
    tex = document(criticality_table([pdlt.criticality(n) for n in names]), recursion_equations("tanh"),
                   recursion_equations("relu"), title="test")
    pdf = compile_pdf(tex, tmp_path, "t")
    assert pdf.exists() and pdf.stat().st_size > 1000


@pytest.mark.skipif(not have_pdflatex(), reason="pdflatex not installed")
def test_compile_failure_is_reported(tmp_path):
    with pytest.raises(RuntimeError, match="pdflatex failed"):
        compile_pdf(document(r"\undefinedmacro"), tmp_path, "bad")

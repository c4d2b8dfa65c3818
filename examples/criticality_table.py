"""A paper table: critical initialization and universality class of every registered activation.

Run: python examples/criticality_table.py [OUT_DIR]   (writes criticality.tex; criticality.pdf with pdflatex)
"""
import sys
from pathlib import Path

import pdlt
from pdlt.latex import compile_pdf, criticality_table, document, have_pdflatex, recursion_equations

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("criticality-out")
out.mkdir(parents=True, exist_ok=True)

names = ["linear", "relu", "leaky_relu(0.1)", "tanh", "erf", "sin", "gelu", "swish", "softplus", "sigmoid"]
results = [pdlt.criticality(n) for n in names]
for r in results:
    print(f"{r.activation:16s} {r.universality:16s} C_b={r.C_b}  C_W={r.C_W}  K*={r.K_star}")

# the book's known values, as a guard against silently changed numerics
by = {r.activation: r for r in results}
assert by["relu"].C_W == 2.0 and by["tanh"].C_W == 1.0 and by["sigmoid"].universality == "none"
assert abs(by["gelu"].K_star - 3.5615528) < 1e-6

tex = document(criticality_table(results), recursion_equations("erf"), title="Criticality of common activations")
(out / "criticality.tex").write_text(tex)
if have_pdflatex():
    print("wrote", compile_pdf(tex, out, "criticality"))
else:
    print("wrote", out / "criticality.tex", "(pdflatex not installed: no PDF)")

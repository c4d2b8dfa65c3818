"""derivations/ and examples/ are executable and assert their results: run them all."""
import json
from pathlib import Path

import pytest
from background import FOLDER, Script

from pdlt.latex import compile_pdf, have_pdflatex

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "derivations").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))
# examples run in CI at small sizes (their second argument is the number of sampled networks)
SMALL = {"bayes_posterior.py": ["20000"], "ntk_depth.py": ["1000"], "bayes_vs_training.py": ["1500"],
         "breakdown_map.py": ["2000", "4"], "two_inputs_nnlo.py": ["20000"], "influence_locality.py": ["5000"]}


# single-core seconds at the CI sizes (measured with taskset -c 0, less the ~1.5 s of imports that the job server
# has done already): the longest start first, so the last to finish is a short one. A script left at the default of
# 3 s that runs for 18 started last and kept the whole suite waiting on it for 20 s.
_COST = {"derivations/finite_width.py": 9, "derivations/influence.py": 4, "derivations/leading_order.py": 4,
         "derivations/ntk.py": 6, "derivations/relu_ntk.py": 15, "derivations/residual.py": 6,
         "derivations/residual_ntk.py": 4, "examples/bayes_posterior.py": 12, "examples/bayes_vs_training.py": 6,
         "examples/breakdown_map.py": 5, "examples/influence_locality.py": 18, "examples/ntk_depth.py": 16,
         "examples/paper_table.py": 11, "examples/residual_vertex.py": 10, "examples/two_inputs_nnlo.py": 5}

#: each script with its output folder and its CI sizes, and the main job, ``python -m pdlt verify --quick`` (in
#: the background, each in its own process: tests/background.py)
JOBS = {f"{s.parent.name}/{s.name}": Script(s, (FOLDER, *SMALL.get(s.name, [])),
                                            cost=_COST.get(f"{s.parent.name}/{s.name}", 3)) for s in SCRIPTS}
JOBS["verify"] = Script(ROOT / "pdlt", ("verify", "--quick", "--out", FOLDER), cost=45)
assert set(_COST) <= set(JOBS), f"costs of scripts that do not exist: {sorted(set(_COST) - set(JOBS))}"


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.background(name), id=name)
                                  for name in JOBS if name != "verify"])
def test_script_runs(name, background):
    res = background(name)
    tmp_path = res.folder
    assert res.codes == (0,), f"exit code {res.codes[0]} (outputs kept in {tmp_path})\n" + res.outs[0][-6000:]
    assert not list(tmp_path.glob("*.aux")) and not list(tmp_path.glob("*.log")), "LaTeX files left behind"
    if have_pdflatex():
        # every generated document is paper-ready: no overfull box > 1pt, no undefined macro or missing glyph,
        # no float taller than the page, no '<' typeset as text (LatexError otherwise, quoting the log)
        for tex in tmp_path.glob("*.tex"):
            compile_pdf(tex.read_text(), tmp_path / "pdf", tex.stem, check=True, search=[tmp_path])
    txt = tmp_path / "quickstart.txt"
    if txt.exists():  # a readable table: a header, then one row of numbers per layer
        lines = [ln for ln in txt.read_text().splitlines() if not ln.startswith("#")]
        assert lines[0].split()[:2] == ["l", "K_11"] and len(lines) == 31
        assert all(len(ln.split()) == len(lines[0].split()) and len(ln) < 140 for ln in lines)


@pytest.mark.background("verify")
def test_verify_quick(background):
    """The main job end to end at small size (``python -m pdlt verify --quick``, in the background like the scripts):
    theory checks, a width sweep against Monte Carlo, tables, JSON, LaTeX that compiles (when pdflatex is present)
    and the PNG plots."""
    from pdlt.plots import have_matplotlib

    res = background("verify")
    tmp_path, code, output = res.folder, res.codes[0], res.outs[0]
    assert code == 0, f"exit code {code}\n" + output[-6000:]
    assert "0 failed" in output and "REJECTED (control)" in output
    data = json.loads((tmp_path / "verify.json").read_text())
    assert data["summary"]["failed"] == 0 and data["summary"]["checks"] > 20
    rows = data["monte_carlo"]["width_sweeps"]["rows"]
    assert {r["quantity"] for r in rows} >= {"two_point a", "two_point b", "vertex a", "control: K only"}
    # the NTK section: every statistic at layer 2 (exact) and the frozen-NTK control, with what reproduces the run
    ntk = data["monte_carlo"]["ntk"]["rows"]
    assert {r["quantity"] for r in ntk} >= {"ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U",
                                            "control: frozen NTK, Var = 0"}
    assert all(r["verdict"] in ("PASS", "REJECTED (control)") for r in ntk)
    assert data["provenance"]["ntk_runs"][0]["lambda_W"] and data["provenance"]["ntk_runs"][0]["n_samples"] > 0
    if have_pdflatex():
        assert (tmp_path / "verify.pdf").stat().st_size > 10_000
    if have_matplotlib():
        assert (tmp_path / "vertex_depth.png").exists() and (tmp_path / "sweep_two_point.png").exists()
        assert (tmp_path / "ntk_depth.png").exists()

"""derivations/ and examples/ are executable and assert their results: run them all."""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pdlt.latex import compile_pdf, have_pdflatex

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "derivations").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))
# examples run in CI at small sizes (their second argument is the number of sampled networks)
SMALL = {"bayes_posterior.py": ["20000"], "ntk_depth.py": ["1000"], "bayes_vs_training.py": ["1500"],
         "breakdown_map.py": ["2000", "4"], "two_inputs_nnlo.py": ["20000"], "influence_locality.py": ["5000"]}


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """The selected scripts started on first use, two at a time (CI has 2 cores and the pytest process only waits
    here): ``{script: (future of the finished process, its output folder)}``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def run(script, out):
        return subprocess.run([sys.executable, str(script), str(out), *SMALL.get(script.name, [])], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=env)

    pool = ThreadPoolExecutor(max_workers=2)
    runs = {}
    chosen = {item.callspec.params["script"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_script_runs" and hasattr(item, "callspec")}
    for script in (s_ for s_ in SCRIPTS if s_ in chosen):
        out = tmp_path_factory.mktemp(script.stem)
        runs[script] = (pool.submit(run, script, out), out)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_runs(script, script_runs):
    future, tmp_path = script_runs[script]
    proc = future.result()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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

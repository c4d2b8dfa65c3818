"""derivations/ and examples/ are executable and assert their results: run them all."""
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pdlt.latex import compile_pdf, have_pdflatex

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "derivations").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))
# examples run in CI at small sizes (their second argument is the number of sampled networks)
SMALL = {"bayes_posterior.py": ["20000"], "ntk_depth.py": ["1000"], "bayes_vs_training.py": ["1500"],
         "breakdown_map.py": ["2000", "4"], "two_inputs_nnlo.py": ["20000"], "influence_locality.py": ["5000"]}


def _run_script(script, out, args):
    """Run one script as ``__main__`` in a child forked from the preloaded server (the imports of pdlt, JAX, sympy
    and matplotlib, ~2 s per process, are paid once): ``(returncode, stdout, stderr)``."""
    import contextlib
    import io
    import runpy
    import traceback

    sys.argv = [str(script), str(out), *args]
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    buf_out, buf_err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    return code, buf_out.getvalue(), buf_err.getvalue()


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """The selected scripts started on first use, two at a time (CI has 2 cores and the pytest process only waits
    here), each in a fresh process forked from a server that has the heavy modules imported:
    ``{script: (future of (returncode, stdout, stderr), its output folder)}``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "scipy.stats", "sympy", "jax", "matplotlib.pyplot", "pdlt",
                                    "pdlt.theory.ntk_statistics", "pdlt.montecarlo"])
    else:  # Windows: a fresh interpreter per script
        ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=2, mp_context=ctx, max_tasks_per_child=1)
    runs = {}
    chosen = {item.callspec.params["script"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_script_runs" and hasattr(item, "callspec")}
    for script in (s_ for s_ in SCRIPTS if s_ in chosen):
        out = tmp_path_factory.mktemp(script.stem)
        runs[script] = (pool.submit(_run_script, script, out, SMALL.get(script.name, [])), out)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_runs(script, script_runs):
    future, tmp_path = script_runs[script]
    code, stdout, stderr = future.result(timeout=600)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
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

"""derivations/ and examples/ are executable and assert their results: run them all."""
import multiprocessing
import os
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


def _child(script, out, args, log):
    """One script as ``__main__`` in a child forked from the preloaded server (the imports of pdlt, JAX, sympy and
    matplotlib, ~2 s per process, are paid once). Its stdout and stderr (and its own children's) go to ``log``;
    multiprocessing turns an exception or ``sys.exit`` into the exit code."""
    import runpy

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = [script, out, *args]
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    runpy.run_path(script, run_name="__main__")


def _run(ctx, script, out, log):
    """``(exit code or "timeout", output)`` of one script: its own process, killed after 600 s."""
    proc = ctx.Process(target=_child, args=(str(script), str(out), SMALL.get(script.name, []), str(log)))
    proc.start()
    proc.join(600)
    code = proc.exitcode
    if proc.is_alive():
        proc.kill()
        proc.join()
        code = "timeout after 600 s"
    return code, log.read_text(errors="replace") if log.exists() else ""


@pytest.fixture(scope="module")
def script_runs(request, tmp_path_factory):
    """The selected scripts started on first use, two at a time (CI has 2 cores and the pytest process only waits
    here), each in its own process: ``{script: (future of (exit code, output), its output folder)}``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["numpy", "scipy.stats", "sympy", "jax", "matplotlib.pyplot", "pdlt",
                                    "pdlt.theory.ntk_statistics", "pdlt.montecarlo"])
    else:  # Windows: a fresh interpreter per script
        ctx = multiprocessing.get_context("spawn")
    logs = tmp_path_factory.mktemp("script-logs")
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {}
    chosen = {item.callspec.params["script"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_script_runs" and hasattr(item, "callspec")}
    for script in (s_ for s_ in SCRIPTS if s_ in chosen):
        out = tmp_path_factory.mktemp(script.stem)
        runs[script] = (pool.submit(_run, ctx, script, out, logs / f"{script.stem}.txt"), out)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_runs(script, script_runs):
    future, tmp_path = script_runs[script]
    code, output = future.result()
    assert code == 0, f"exit code {code}\n" + output[-6000:]
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

"""derivations/ and examples/ are executable and assert their results: run them all."""
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pdlt.latex import compile_pdf, have_pdflatex

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "derivations").glob("*.py")) + sorted((ROOT / "examples").glob("*.py"))
# examples run in CI at small sizes (their second argument is the number of sampled networks)
SMALL = {"bayes_posterior.py": ["20000"], "ntk_depth.py": ["1000"], "bayes_vs_training.py": ["1500"],
         "breakdown_map.py": ["2000", "4"], "two_inputs_nnlo.py": ["20000"], "influence_locality.py": ["5000"]}


#: the main job, ``python -m pdlt verify --quick``, run in the background like the scripts (test_verify_quick)
VERIFY = ROOT / "pdlt"


def _argv(script: Path, out: Path) -> list:
    """The command line of a job: a script gets its output folder and its CI sizes; the main job its options."""
    if script == VERIFY:
        return ["pdlt", "verify", "--quick", "--out", str(out / "v")]
    return [str(script), str(out), *SMALL.get(script.name, [])]


def _child(script, argv, log):
    """One script (or ``python -m pdlt``) as ``__main__`` in a child forked from the preloaded server (the imports of
    pdlt, JAX, sympy and matplotlib, ~2 s per process, are paid once). Its stdout and stderr (and its own children's)
    go to ``log``; multiprocessing turns an exception or ``sys.exit`` into the exit code."""
    import runpy

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = list(argv)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    if Path(script) == VERIFY:
        runpy.run_module("pdlt", run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(script, run_name="__main__")


# rough single-core seconds at the CI sizes: the longest start first, so the last to finish is a short one
_COST = {"influence_locality.py": 24, "pdlt": 20, "bayes_posterior.py": 17, "finite_width.py": 8,
         "residual_vertex.py": 7, "two_inputs_nnlo.py": 6}


class Scripts:
    """The selected scripts, started in the background when collection ends (:func:`conftest.pytest_collection_finish`)
    so that they run on the second core while the rest of the suite runs on the first; each in its own process (from a
    preloaded forkserver), killed after 600 s. One runs at a time until the main process reaches these tests and
    only waits (:meth:`widen`), then two. :meth:`close` kills what still runs (an interrupted session leaves nothing
    behind) and removes the output folders."""

    def __init__(self, scripts):
        if "forkserver" in multiprocessing.get_all_start_methods():
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(["numpy", "scipy.stats", "sympy", "jax", "matplotlib.pyplot", "pdlt",
                                             "pdlt.theory.ntk_statistics", "pdlt.montecarlo"])
        else:  # Windows: a fresh interpreter per script
            self.ctx = multiprocessing.get_context("spawn")
        self.root = Path(tempfile.mkdtemp(prefix="pdlt-scripts-"))
        self.permits = threading.Semaphore(1)
        self.widened = False
        self.closed = False
        self.keep = False           # a script failed: its outputs stay for inspection
        self.procs = set()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.runs = {}
        for script in sorted(scripts, key=lambda s_: -_COST.get(s_.name, 3)):
            out = self.root / f"{script.parent.name}-{script.stem}"
            out.mkdir()
            self.runs[script] = (self.pool.submit(self._run, script, out), out)

    def _run(self, script, out):
        """``(exit code or "timeout", output)`` of one script."""
        log = self.root / f"{script.parent.name}-{script.stem}.txt"
        with self.permits:
            with self.lock:
                if self.closed:
                    return "not run: the session ended", ""
                proc = self.ctx.Process(target=_child, args=(str(script), _argv(script, out), str(log)))
                proc.start()
                self.procs.add(proc)
            proc.join(600)
            code = proc.exitcode
            if proc.is_alive():
                proc.kill()
                proc.join()
                code = "timeout after 600 s"
            with self.lock:
                self.procs.discard(proc)
        return code, log.read_text(errors="replace") if log.exists() else ""

    def widen(self):
        """The main process now only waits on these: let two scripts run at once."""
        with self.lock:
            if not self.widened:
                self.widened = True
                self.permits.release()

    def close(self):
        with self.lock:
            self.closed = True
            for proc in self.procs:
                proc.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


_started = []


#: the tests whose jobs run in the background
JOB_TESTS = ("test_script_runs", "test_verify_quick")


def start(items):
    """Called by conftest when collection ends: start the jobs of the collected items of :data:`JOB_TESTS`."""
    if not _started:
        _started.append(Scripts({item.callspec.params["script"] if hasattr(item, "callspec") else VERIFY
                                 for item in items}))


@pytest.fixture(scope="module")
def script_runs(request):
    """``{script: (future of (exit code, output), its output folder)}`` of the scripts started at collection."""
    if not _started:  # collected without conftest's hook (e.g. another rootdir): start them here
        start([item for item in request.session.items if getattr(item, "originalname", None) in JOB_TESTS])
    scripts = _started[0]
    scripts.widen()
    yield scripts.runs
    stop()


def stop():
    """Kill what still runs and remove the output folders (the fixture's teardown, and conftest's at session end)."""
    while _started:
        _started.pop().close()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_runs(script, script_runs):
    try:
        _check_script(script, script_runs)
    except BaseException:
        if _started:                   # any failure: the outputs stay for inspection
            _started[0].keep = True
        raise


def _check_script(script, script_runs):
    future, tmp_path = script_runs[script]
    code, output = future.result()
    assert code == 0, f"exit code {code} (outputs kept in {tmp_path})\n" + output[-6000:]
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


def test_verify_quick(script_runs):
    """The main job end to end at small size (``python -m pdlt verify --quick``, in the background like the scripts):
    theory checks, a width sweep against Monte Carlo, tables, JSON, LaTeX that compiles (when pdflatex is present)
    and the PNG plots."""
    from pdlt.plots import have_matplotlib

    future, tmp_path = script_runs[VERIFY]
    code, output = future.result()
    try:
        assert code == 0, f"exit code {code}\n" + output[-6000:]
        assert "0 failed" in output and "REJECTED (control)" in output
        data = json.loads((tmp_path / "v" / "verify.json").read_text())
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
            assert (tmp_path / "v" / "verify.pdf").stat().st_size > 10_000
        if have_matplotlib():
            assert (tmp_path / "v" / "vertex_depth.png").exists() and (tmp_path / "v" / "sweep_two_point.png").exists()
            assert (tmp_path / "v" / "ntk_depth.png").exists()
    except BaseException:
        if _started:
            _started[0].keep = True
        raise

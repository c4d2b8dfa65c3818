import os
import subprocess
import sys
from pathlib import Path


def _fast_compile_flags():
    """Compilation dominates most Monte Carlo tests (small networks, many distinct shapes, each compiled once).
    XLA's backend optimization level 0 compiles them faster (about 15% off the Monte Carlo test files on 2 cores),
    and XLA's older CPU loop emitters about halve what remains (measured: 245 -> 112 s of the suite's compile time).
    Values are float64 either way and the tests compare values, never timings; subprocesses (scripts, the CLI)
    inherit the flags. XLA aborts the process on a flag it does not know, and the emitter switch is young, so a
    child process tries it first (about a second) and it is added only where it is accepted."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        flags += " --xla_backend_optimization_level=0"
    if "xla_cpu_use_fusion_emitters" not in flags:
        trial = f"{flags} --xla_cpu_use_fusion_emitters=false"
        try:
            ok = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True, timeout=120,
                                env=dict(os.environ, XLA_FLAGS=trial, JAX_PLATFORMS="cpu")).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        flags = trial if ok else flags
    os.environ["XLA_FLAGS"] = flags.strip()


_fast_compile_flags()
# The suite runs two workers and two background jobs on CI's two cores: OpenBLAS's own threads (one a core by
# default) then spin against the other processes, e.g. tests/theory/test_kernel.py::test_divergent_flow_names_layer
# took 12 s beside them and 1.7 s alone. One BLAS thread a process (numpy's matrix products split the output, not
# the sums, so the values are the same): measured 473 -> 430 s for the suite.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# CI runs on 2 cores: keep hypothesis example counts modest and deterministic
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _mpmath_precision():
    """mpmath's precision is global: a test that sets ``mp.dps = 50`` left it to every later test on its worker."""
    import mpmath

    prec = mpmath.mp.prec
    yield
    mpmath.mp.prec = prec


def _job_names(item) -> tuple:
    mark = item.get_closest_marker("background")
    return mark.args if mark else ()


def pytest_collection_modifyitems(items):
    """Tests that read background jobs (tests/background.py) only wait on them: they run last, so that the jobs
    overlap the rest of the suite."""
    items[:] = [i for i in items if not _job_names(i)] + [i for i in items if _job_names(i)]


_runners = []
#: the job folder that a pytest-xdist controller makes for its workers (tests/background.py), in the environment the
#: workers inherit
_SHARED = "PDLT_TEST_JOBS"


def _worker(config):
    """``"gw0"``, ``"gw1"``, ... in a pytest-xdist worker; None in the controller or a plain run."""
    return getattr(config, "workerinput", {}).get("workerid")


def _controller(config) -> bool:
    return _worker(config) is None and config.getoption("dist", "no") != "no"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one worker a core, at most 4 (each holds JAX and its compiled programs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def pytest_configure(config):
    if _controller(config):
        import tempfile

        os.environ[_SHARED] = tempfile.mkdtemp(prefix="pdlt-jobs-")


def _start(session):
    """One :class:`background.Background` for the jobs that the selected tests name, in the process that runs them:
    a plain run's, or worker gw0 under pytest-xdist (None on the other workers, which read the shared folder)."""
    if not _runners and _worker(session.config) in (None, "gw0"):
        import background

        jobs = {(item.module.__file__, name): item.module.JOBS[name] for item in session.items
                for name in _job_names(item) if name in getattr(item.module, "JOBS", {})}   # (else: the test fails)
        shared = Path(os.environ[_SHARED]) if _worker(session.config) else None
        _runners.append(background.Background(jobs, shared=shared))
        if shared is not None:
            # the workers share the cores with the jobs from the start: two jobs at a time, so that the jobs are not
            # what the session waits for at its end (the workers' tests balance themselves)
            _runners[0].widen()
    return _runners[0] if _runners else None


def pytest_collection_finish(session):
    """Start the background jobs as soon as the session's items are known (not after a collection error)."""
    if any(_job_names(i) for i in session.items) and not session.config.option.collectonly \
            and not session.testsfailed:
        _start(session)


@pytest.fixture
def background(request):
    """``background(name)``: the :class:`background.Result` of one of the jobs this test's module declares (waiting
    for it); the test names it with ``@pytest.mark.background(name)``."""
    import background as bg

    runner = _start(request.session)
    if runner is not None:
        runner.widen()          # from here on this process only waits: two jobs at a time

    def result(name):
        key = (request.module.__file__, name)
        if name not in _job_names(request.node) or name not in getattr(request.module, "JOBS", {}):
            pytest.fail(f"background({name!r}): the test must name the job in @pytest.mark.background and its module "
                        "must declare it in JOBS")
        res = runner.result(key) if runner is not None else bg.read_result(Path(os.environ[_SHARED]), key, 1800.0)
        if res.hung:
            pytest.fail(f"background job {name!r} did not finish (killed after its timeout)\n{res.show()}")
        return res

    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _job_names(item) and _runners:
        _runners[0].keep = True           # a failed check: the jobs' outputs stay for inspection
    return report


_failed_checks = []


def pytest_runtest_logreport(report):
    # the controller sees every worker's reports: a failed check keeps the shared job folder
    if report.failed and "background" in report.keywords:
        _failed_checks.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """Stop the background jobs however the session ends (an interrupted one included). Under pytest-xdist the
    runner (gw0) first lets its jobs finish, since tests on other workers may still wait for them, and the
    controller removes the shared folder (kept when a check that reads it failed)."""
    while _runners:
        runner = _runners.pop()
        if runner.shared is not None and exitstatus != pytest.ExitCode.INTERRUPTED:
            runner.wait()
        runner.close()
    if _controller(session.config) and os.environ.get(_SHARED):
        import shutil

        if _failed_checks:
            print(f"\nbackground job outputs kept in {os.environ[_SHARED]}")
        else:
            shutil.rmtree(os.environ[_SHARED], ignore_errors=True)

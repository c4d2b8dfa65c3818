import os
import subprocess
import sys


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


def _job_names(item) -> tuple:
    mark = item.get_closest_marker("background")
    return mark.args if mark else ()


def pytest_collection_modifyitems(items):
    """Tests that read background jobs (tests/background.py) only wait on them: they run last, so that the jobs
    overlap the rest of the suite."""
    items[:] = [i for i in items if not _job_names(i)] + [i for i in items if _job_names(i)]


_runners = []


def _start(session):
    """One :class:`background.Background` for the jobs that the selected tests name."""
    if not _runners:
        import background

        jobs = {(item.module.__file__, name): item.module.JOBS[name] for item in session.items
                for name in _job_names(item) if name in getattr(item.module, "JOBS", {})}   # (else: the test fails)
        _runners.append(background.Background(jobs))
    return _runners[0]


def pytest_collection_finish(session):
    """Start the background jobs as soon as the session's items are known (not after a collection error)."""
    if any(_job_names(i) for i in session.items) and not session.config.option.collectonly \
            and not session.testsfailed:
        _start(session)


@pytest.fixture
def background(request):
    """``background(name)``: the :class:`background.Result` of one of the jobs this test's module declares (waiting
    for it); the test names it with ``@pytest.mark.background(name)``."""
    runner = _start(request.session)
    runner.widen()          # from here on the main process only waits: two jobs at a time

    def result(name):
        if name not in _job_names(request.node) or (request.module.__file__, name) not in runner.futures:
            pytest.fail(f"background({name!r}): the test must name the job in @pytest.mark.background and its module "
                        "must declare it in JOBS")
        res = runner.result((request.module.__file__, name))
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


def pytest_sessionfinish(session):
    """Stop the background jobs however the session ends (an interrupted one included)."""
    while _runners:
        _runners.pop().close()

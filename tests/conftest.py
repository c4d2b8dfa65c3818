import os

# Compilation dominates most Monte Carlo tests (small networks, many distinct shapes, each compiled once): XLA's
# backend optimization level 0 compiles them faster (about 15% off the Monte Carlo test files on 2 cores). Values are
# float64 either way and the tests compare values, never timings; subprocesses (scripts, the CLI) inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

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


def pytest_collection_finish(session):
    """Start the example and derivation scripts (tests/test_scripts.py) in the background as soon as the session's
    items are known: they run on the second core while the other tests run on the first."""
    items = [item for item in session.items
             if getattr(item, "originalname", None) in getattr(getattr(item, "module", None), "JOB_TESTS", ())]
    if items and not session.config.option.collectonly and not session.testsfailed:   # (collection errors)
        items[0].module.start(items)
        _script_modules.append(items[0].module)


_script_modules = []


def pytest_sessionfinish(session):
    """Stop the background scripts however the session ends (an interrupted one included)."""
    for module in _script_modules:
        module.stop()

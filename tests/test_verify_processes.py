"""``pdlt verify`` in two processes (pdlt.verification.second_process): what a part returns, prints, warns and
raises reaches the caller as it would in one process, and the child never outlives the caller."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from pdlt.errors import ParameterError, TruncationWarning
from pdlt.verification.second_process import start

PARTS = '''
import time
import warnings

import numpy as np

from pdlt.errors import ParameterError, TruncationWarning


def values(echo, k):
    echo(f"line {k}")
    warnings.warn(f"part {k} is far out", TruncationWarning)
    return {"k": k, "a": np.arange(3.0) * k}


def fails(echo):
    echo("before")
    raise ParameterError("a bad depth", "depth")


def hangs(echo):
    time.sleep(600)


def sampled(echo):
    import pdlt

    echo("sampled")
    res = pdlt.sample(pdlt.MLP("tanh", (1, 4, 4), C_W=1.2, C_b=0.1), [[1.0]], 2_000, seed=3, progress=False)
    return np.concatenate([res.two_point.mean.ravel(), res.four_point.mean.ravel(), res.four_point.stderr.ravel()])
'''


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """A module of parts that the child can import (``sp_parts``)."""
    (tmp_path / "sp_parts.py").write_text(PARTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path)] + os.environ.get("PYTHONPATH", "").split(
        os.pathsep)).rstrip(os.pathsep))
    return tmp_path


def _gone(pid: int) -> bool:
    """No such process, or a zombie that nobody reaped (it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _ignores_sigint(status: str) -> bool:
    with open(status) as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask & (1 << (2 - 1)))     # bit signum - 1; SIGINT is 2


def _wait_gone(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_values_lines_and_warnings_come_back(parts):
    side = start([("sp_parts:values", {"k": 1}), ("sp_parts:values", {"k": 2})])
    with pytest.warns(TruncationWarning) as caught:
        out = side.results()
    assert [lines for _, lines in out] == [["line 1"], ["line 2"]]
    assert [v["k"] for v, _ in out] == [1, 2]
    np.testing.assert_array_equal(out[1][0]["a"], [0.0, 2.0, 4.0])
    assert sorted(str(w.message) for w in caught) == ["part 1 is far out", "part 2 is far out"]
    assert not os.path.exists(side.folder.name)           # its files are removed


def test_an_error_is_raised_again_with_its_type(parts):
    side = start([("sp_parts:fails", {})])
    with pytest.raises(ParameterError, match="a bad depth") as err:
        side.results()
    assert err.value.setting == "depth"
    assert any("second process" in note and "sp_parts.py" in note for note in err.value.__notes__)


def test_a_child_that_dies_is_an_error_that_names_the_way_out(parts):
    side = start([("sp_parts:hangs", {})])
    side.proc.kill()
    with pytest.raises(RuntimeError, match="processes=1"):
        side.results()


def test_the_child_ignores_sigint_and_ends_with_its_caller(parts):
    """A terminal's Ctrl-C reaches the whole process group: the child ignores it (the caller decides). A caller
    that ends abruptly (``os._exit``, as the CLI's signal handler does) takes the child with it."""
    import signal

    side = start([("sp_parts:hangs", {})])
    try:
        status = f"/proc/{side.proc.pid}/status"
        if not os.path.exists(status):
            pytest.skip("needs /proc to see when the child ignores SIGINT")
        end = time.monotonic() + 30
        while time.monotonic() < end and not _ignores_sigint(status):
            time.sleep(0.02)
        side.proc.send_signal(signal.SIGINT)
        assert not _wait_gone(side.proc.pid, 0.5)
    finally:
        side.close()
    assert _gone(side.proc.pid)

    caller = textwrap.dedent("""
        import os, time
        from pdlt.verification.second_process import start
        side = start([("sp_parts:hangs", {})])
        print(side.proc.pid, flush=True)
        time.sleep(0.5)
        os._exit(143)
    """)
    run = subprocess.run([sys.executable, "-c", caller], capture_output=True, text=True, timeout=60)
    assert run.returncode == 143, run.stderr
    assert _wait_gone(int(run.stdout.split()[0]), 10.0)


def test_sampling_gives_the_same_numbers_in_either_process(parts):
    """Each section samples from its own seeds: sampled networks in the second process and in this one give the
    same statistics to the last bit (the same networks, the same compiled arithmetic)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sp_parts", parts / "sp_parts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    side = start([("sp_parts:sampled", {})])
    here = module.sampled(echo=lambda line: None)
    [(there, lines)] = side.results()
    assert lines == ["sampled"]
    np.testing.assert_array_equal(here, there)


def test_processes_must_be_one_or_two():
    from pdlt.verify import run_verify

    for bad in (0, 3, 1.5, True, "2"):
        with pytest.raises(ParameterError, match="processes"):
            run_verify(None, quick=True, monte_carlo=False, processes=bad)


def test_a_value_that_cannot_be_pickled_is_an_error_that_says_so(parts):
    with open(parts / "sp_parts.py", "a") as f:
        f.write("\n\ndef closure(echo):\n    return lambda: 1\n")
    with pytest.raises(RuntimeError, match="could not be sent back.*lambda"):
        start([("sp_parts:closure", {})]).results()

"""Monte Carlo runner, issue 10: checkpoints that cannot be used when corrupt, clean SIGINT/SIGTERM, checkpoint
paths checked before sampling, chunk sizes that cannot exhaust memory, argument checks.

The interrupt tests run in a subprocess (signals are process-wide); they compare the resumed run with the
uninterrupted one to 1e-12 (the only difference allowed is float64 summation order)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pdlt
from pdlt.errors import Caveat, CheckpointError, ParameterError
from pdlt.montecarlo import load, sample
from pdlt.montecarlo import runner
from pdlt.montecarlo.runner import bytes_per_network, check_output_path

NET = pdlt.MLP("tanh", (2, 4, 3), C_W=1.2, C_b=0.1)
X = np.array([[1.0, 0.0], [0.6, 0.8]])
KW = dict(seed=3, batches=8, chunk_size=16, progress=False)


def same_state(a, b, rtol=1e-12):
    assert a.n_samples == b.n_samples
    np.testing.assert_array_equal(a.state.counts, b.state.counts)
    np.testing.assert_allclose(a.state.sums, b.state.sums, rtol=rtol, atol=rtol * np.abs(b.state.sums).max())


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid checkpoint of 48 networks (3 chunks) and the result that wrote it."""
    path = tmp_path_factory.mktemp("ck") / "good.npz"
    res = sample(NET, X, 48, checkpoint=path, **KW)
    return path, res


def arrays_of(path):
    with np.load(path) as f:
        return {k: np.array(f[k]) for k in f.files}


def rewrite(path, arrays, *, rechecksum=False):
    arrays = dict(arrays)
    if rechecksum:      # a consistent forgery: only the structural checks can catch it
        arrays["checksum"] = np.asarray(runner._checksum(arrays))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


# ---------------------------------------------------------------------------------------------------
# item 3: corrupt, tampered and old checkpoints are refused
# ---------------------------------------------------------------------------------------------------


def test_valid_checkpoint_loads_and_resumes(good, tmp_path):
    path, res = good
    back = load(path)
    same_state(back, res, rtol=0)
    assert back.complete and back.interrupted is None and back.caveats == ()
    assert back.info["checkpoint"] == str(path)


@pytest.mark.parametrize("damage", ["empty", "truncated", "half", "garbage"])
def test_unreadable_checkpoint_refused(good, tmp_path, damage):
    """Old code: raw BadZipFile / EOFError traceback from load and from sample(checkpoint=...)."""
    data = good[0].read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes({"empty": b"", "truncated": data[:-40], "half": data[: len(data) // 2],
                     "garbage": b"\x93NUMPY not really" * 50}[damage])
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint .*bad\.npz.*delete it"):
        load(bad)
    calls = []
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        sample(NET, X, 64, checkpoint=bad, callback=lambda *a: calls.append(a), **KW)
    assert calls == [] and bad.read_bytes() == {"empty": b"", "truncated": data[:-40], "half": data[: len(data) // 2],
                                                "garbage": b"\x93NUMPY not really" * 50}[damage]


def test_bit_flips_refused(good, tmp_path):
    """A flipped byte anywhere gives a CheckpointError, or (in zip metadata that carries no data: timestamps,
    version fields, ...) a file whose contents are unchanged. Never another exception, never changed data."""
    path, res = good
    data = path.read_bytes()
    bad = tmp_path / "flip.npz"
    refused = 0
    for pos in np.linspace(0, len(data) - 1, 97).astype(int):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        bad.write_bytes(bytes(flipped))
        try:
            back = load(bad)
        except CheckpointError:
            refused += 1
            continue
        assert back.config == res.config and back.complete == res.complete
        np.testing.assert_array_equal(back.state.counts, res.state.counts)
        np.testing.assert_array_equal(back.state.sums, res.state.sums)
    assert refused >= 97 // 2       # most of the file is array data or JSON


@pytest.mark.parametrize("how", ["nan", "scaled", "counts", "status"])
def test_tampered_values_refused_by_checksum(good, tmp_path, how):
    """Old code accepted sums set to NaN (printed nan +- nan) or multiplied by 1.5 (V = -0.83), exit 0."""
    a = arrays_of(good[0])
    if how == "nan":
        a["sums"] = np.full_like(a["sums"], np.nan)
    elif how == "scaled":
        a["sums"] = a["sums"] * 1.5
    elif how == "counts":
        a["counts"] = a["counts"] + 1
    else:
        a["status_json"] = np.asarray(str(a["status_json"]).replace('"complete": true', '"complete": false'))
    bad = tmp_path / "tampered.npz"
    rewrite(bad, a)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load(bad)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        sample(NET, X, 64, checkpoint=bad, **KW)


@pytest.mark.parametrize("how, match", [
    ("nan", "NaN or inf"),
    ("inf", "NaN or inf"),
    ("negative_count", "negative counts|not those of networks"),
    ("unbalanced", "not those of networks"),
    ("float_counts", "integers"),
    ("shape", "shape"),
    ("negative_moment", "even powers"),
    ("empty_batch_sum", "empty batch"),
    ("complete_flag", "contradicts"),
    ("too_many", "outside 1..n_samples"),
    ("config", "fingerprint"),
])
def test_inconsistent_checkpoint_refused(good, tmp_path, how, match):
    """Forgeries with a recomputed checksum: the structure itself must be consistent with the configuration."""
    a = arrays_of(good[0])
    s, c = a["sums"], a["counts"]
    if how == "nan":
        s[0, 0, 0] = np.nan
    elif how == "inf":
        s[1, 1, -1] = np.inf
    elif how == "negative_count":
        c[0], c[1] = -1, c[1] + c[0] + 1
    elif how == "unbalanced":       # same total, but not the s mod B assignment of networks 0..47
        c[0], c[1] = c[0] + 1, c[1] - 1
    elif how == "float_counts":
        a["counts"] = c.astype(np.float64)
    elif how == "shape":
        a["sums"] = s[:, :, :-1]
    elif how == "negative_moment":
        s[2, 0, 0] = -abs(s[2, 0, 0]) - 1.0      # t2_00 is a mean of squares
    elif how == "empty_batch_sum":          # 48 networks in 8 batches fill every batch: make a 3-network state
        a["counts"] = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    elif how == "complete_flag":
        a["status_json"] = np.asarray(str(a["status_json"]).replace('"complete": true', '"complete": false'))
    elif how == "too_many":
        cfg = json.loads(str(a["config_json"]))
        cfg["n_samples"] = 40
        a["config_json"] = np.asarray(json.dumps(cfg))
    elif how == "config":
        cfg = json.loads(str(a["config_json"]))
        cfg["seed"] = 4
        a["config_json"] = np.asarray(json.dumps(cfg))
    bad = tmp_path / "forged.npz"
    rewrite(bad, a, rechecksum=True)
    with pytest.raises(CheckpointError, match=match):
        load(bad)


def test_old_format_without_checksum_refused(good, tmp_path):
    """Files of the first format carry no checksum: refused with a message saying why and what to do."""
    a = arrays_of(good[0])
    del a["checksum"], a["file_format"]
    old = tmp_path / "v1.npz"
    rewrite(old, a)
    with pytest.raises(CheckpointError, match=r"older pdlt version without a checksum.*delete it"):
        load(old)
    with pytest.raises(CheckpointError, match="older pdlt version"):
        sample(NET, X, 64, checkpoint=old, **KW)


def test_saved_result_validated(good, tmp_path):
    """MCResult.save / MCResult.load get the same protection; the JSON metadata records the checksum."""
    res = good[1]
    path = res.save(tmp_path / "run")
    assert path == str(tmp_path / "run.npz")
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["sha256"] == str(arrays_of(path)["checksum"]) and meta["caveats"] == []
    same_state(pdlt.MCResult.load(path), res, rtol=0)
    a = arrays_of(path)
    a["sums"] = a["sums"] * 1.5
    rewrite(path, a)
    with pytest.raises(CheckpointError, match="checksum"):
        pdlt.MCResult.load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "missing.npz")
    with pytest.raises(CheckpointError, match="not a pdlt"):
        np.savez(tmp_path / "junk.npz", a=np.zeros(2))
        load(tmp_path / "junk.npz")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# item 15: checkpoint paths are checked before sampling
# ---------------------------------------------------------------------------------------------------


def test_checkpoint_paths(tmp_path):
    calls = []
    cb = lambda *a: calls.append(a)     # noqa: E731
    with pytest.raises(ParameterError, match=f"checkpoint must be a file path, {tmp_path} is a directory") as err:
        sample(NET, X, 64, checkpoint=tmp_path, callback=cb, **KW)
    assert err.value.setting == "checkpoint"
    assert not (tmp_path.parent / (tmp_path.name + ".npz")).exists()
    missing = tmp_path / "no" / "such"
    with pytest.raises(ParameterError, match=f"the directory {missing} does not exist"):
        sample(NET, X, 64, checkpoint=missing / "ck.npz", callback=cb, **KW)
    assert not (tmp_path / "no").exists()
    if os.path.isdir("/proc") and os.geteuid() != 0:
        with pytest.raises(ParameterError, match="cannot write checkpoint /proc/nope.npz"):
            sample(NET, X, 64, checkpoint="/proc/nope.npz", callback=cb, **KW)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):      # root can write anyway
            with pytest.raises(ParameterError, match="cannot write checkpoint"):
                sample(NET, X, 64, checkpoint=ro / "ck.npz", callback=cb, **KW)
    finally:
        ro.chmod(0o700)
    assert calls == []
    # without .npz: written to PATH.npz, and the result says so
    r = sample(NET, X, 32, checkpoint=tmp_path / "plain", **KW)
    assert r.info["checkpoint"] == str(tmp_path / "plain.npz") and (tmp_path / "plain.npz").exists()
    assert check_output_path(tmp_path / "x.npz") == str(tmp_path / "x.npz")
    with pytest.raises(ParameterError, match="--out"):
        check_output_path(tmp_path, "--out")


# ---------------------------------------------------------------------------------------------------
# item 7: chunk size and argument checks
# ---------------------------------------------------------------------------------------------------


def test_huge_chunk_capped_at_n_samples():
    """Old code: chunk_size=10**9 padded every call to 10**9 networks (2.2 TB, RESOURCE_EXHAUSTED)."""
    r = sample(NET, X, 16, seed=3, batches=8, chunk_size=10**9, progress=False)
    assert r.info["chunk_size"] == 16 and r.complete
    same_state(r, sample(NET, X, 16, **KW))


def test_chunk_over_memory_budget_refused():
    net = pdlt.MLP("tanh", (4, 512, 512), C_W=1.0)
    per = bytes_per_network("markov", net.widths, 1)
    with pytest.raises(ParameterError, match=r"chunk_size=1000000 .*memory_budget") as err:
        sample(net, np.ones((1, 4)), 10**6, chunk_size=10**6, progress=False)
    assert err.value.setting == "chunk_size"
    with pytest.raises(ParameterError, match="chunk_size=11 .*lower chunk_size to at most 10"):
        sample(net, np.ones((1, 4)), 64, chunk_size=11, memory_budget=10 * per, progress=False)


@pytest.mark.parametrize("kwargs, setting", [
    (dict(seed=0.5), "seed"),
    (dict(seed=True), "seed"),
    (dict(n_samples=100.5), "n_samples"),
    (dict(n_samples=2**32), "n_samples"),
    (dict(batches=8.5), "batches"),
    (dict(chunk_size=2.5), "chunk_size"),
    (dict(chunk_size=True), "chunk_size"),
    (dict(memory_budget=float("nan")), "memory_budget"),
    (dict(memory_budget=float("inf")), "memory_budget"),
    (dict(memory_budget="1G"), "memory_budget"),
    (dict(memory_budget=0), "memory_budget"),
    (dict(checkpoint_every=-1), "checkpoint_every"),
    (dict(checkpoint_every=float("nan")), "checkpoint_every"),
    (dict(progress="yes"), "progress"),
    (dict(callback=3), "callback"),
    (dict(devices=0), "devices"),
    (dict(devices=True), "devices"),
    (dict(devices=["cpu"]), "devices"),
    (dict(devices=[]), "devices"),
    (dict(method=["markov"]), "method"),
    (dict(resume="ck.npz"), "resume"),
    (dict(resume_hint=3), "resume_hint"),
    (dict(checkpoint=""), "checkpoint"),
])
def test_bad_settings_named(kwargs, setting):
    kw = dict(n_samples=64, seed=0, progress=False)
    kw.update(kwargs)
    with pytest.raises(ParameterError) as err:
        sample(NET, X, kw.pop("n_samples"), **kw)
    assert err.value.setting == setting and setting in str(err.value)


def test_integral_floats_accepted():
    """seed=3.0, n_samples=32.0 mean 3 and 32 (same result); only non-integral values are refused."""
    same_state(sample(NET, X, 32.0, seed=3.0, batches=8.0, chunk_size=16.0, progress=False), sample(NET, X, 32, **KW))


# ---------------------------------------------------------------------------------------------------
# item 4 in-process: incomplete results are visible, handlers are restored
# ---------------------------------------------------------------------------------------------------


def test_incomplete_result_visible_and_handlers_restored(tmp_path, capsys):
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def stop(done, total):
        if done >= 32:
            raise KeyboardInterrupt

    part = sample(NET, X, 96, callback=stop, resume_hint="rerun the same command to resume", **KW)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted by SIGINT: kept 32 of 96" in err
    assert "rerun the same command to resume" in err and "pdlt.sample" not in err
    assert not part.complete and part.interrupted == "SIGINT" and part.n_samples == 32
    assert part.caveats == (Caveat("incomplete", part.caveats[0].message),)
    assert "32 of 96 networks" in part.caveats[0].message and "INCOMPLETE: 32 of 96" in part.summary()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    def boom(done, total):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sample(NET, X, 64, callback=boom, **KW)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # a partial resume= that contradicts an existing checkpoint is refused, not silently preferred
    ck = tmp_path / "ck.npz"
    sample(NET, X, 64, checkpoint=ck, **KW)
    with pytest.raises(ParameterError, match="resume= holds 32 networks but checkpoint"):
        sample(NET, X, 96, checkpoint=ck, resume=part, **KW)


# ---------------------------------------------------------------------------------------------------
# item 4: real signals, in a subprocess
# ---------------------------------------------------------------------------------------------------

# A suite started in the background of a non-interactive shell hands its children SIGINT ignored, and pdlt keeps an
# ignored signal ignored (by design, runner._install_handlers): the scripts start from Python's own SIGINT handler.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import pdlt
    from pdlt.montecarlo import runner, load

    out = sys.argv[1]
    net = pdlt.MLP("tanh", (2, 4, 3), C_W=1.2, C_b=0.1)
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    kw = dict(seed=3, batches=8, chunk_size=16, progress=False, checkpoint_every=1e9)
    N = 96
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    # E (first, so that it lands in the first compilation of the process): SIGINT 1 ms after sample() has
    # installed its handlers (old code: KeyboardInterrupt traceback from inside JAX, at times a segfault)
    install = runner._install_handlers
    def timed(flag, sig=signal.SIGINT):
        restore = install(flag)
        threading.Timer(0.001, os.kill, (os.getpid(), sig)).start()
        return restore
    runner._install_handlers = timed
    early = pdlt.sample(net, x, N, checkpoint=os.path.join(out, "e.npz"), **kw)
    runner._install_handlers = install

    ref = pdlt.sample(net, x, N, **kw)
    ref.save(os.path.join(out, "ref"))

    def same(a, b):
        assert a.n_samples == b.n_samples and np.array_equal(a.state.counts, b.state.counts)
        np.testing.assert_allclose(a.state.sums, b.state.sums, rtol=1e-12, atol=1e-12 * abs(b.state.sums).max())

    def check(tag, r, ck, signame, n):
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers, tag
        assert not r.complete and r.interrupted == signame and r.n_samples == n, (tag, r.n_samples, r.interrupted)
        back = load(ck)
        same(back, r)
        assert back.interrupted == signame and not back.complete
        same(pdlt.sample(net, x, N, checkpoint=ck, **kw), ref)
        print(tag, "ok", flush=True)

    # A: SIGTERM from a callback after the 3rd chunk (checkpoint timer far away: the signal must save)
    def term(done, total):
        if done == 48:
            os.kill(os.getpid(), signal.SIGTERM)
    ck = os.path.join(out, "a.npz")
    check("A", pdlt.sample(net, x, N, checkpoint=ck, callback=term, **kw), ck, "SIGTERM", 48)

    # B: SIGINT before the first chunk has run (inside the first call of the compiled function)
    real = runner._chunk_function
    def wrapped(*a, **k):
        fn, sh = real(*a, **k)
        calls = []
        def f(*args):
            if not calls:
                os.kill(os.getpid(), signal.SIGINT)
            calls.append(1)
            return fn(*args)
        return f, sh
    runner._chunk_function = wrapped
    ck = os.path.join(out, "b.npz")
    r = pdlt.sample(net, x, N, checkpoint=ck, **kw)
    runner._chunk_function = real
    check("B", r, ck, "SIGINT", 16)

    ck = os.path.join(out, "e.npz")
    check("E", early, ck, "SIGINT", early.n_samples)

    # C: SIGTERM from another thread, 1 ms after sample() has installed its handlers (wherever it lands)
    ck = os.path.join(out, "c.npz")
    runner._install_handlers = lambda flag: timed(flag, signal.SIGTERM)
    r = pdlt.sample(net, x, 10**5, checkpoint=ck, **kw)
    runner._install_handlers = install
    assert r.interrupted == "SIGTERM" and 16 <= r.n_samples < 10**5 and load(ck).n_samples == r.n_samples
    print("C ok", flush=True)

    # D: a second signal stops at once (exit 130); the checkpoint written after every chunk stays valid
    def twice(done, total):
        if done == 64:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
    ck = os.path.join(out, "d.npz")
    pdlt.sample(net, x, N, checkpoint=ck, callback=twice, **{**kw, "checkpoint_every": 0})
    print("D not reached", flush=True)
""")


def test_signals_save_and_resume_exactly(tmp_path):
    """Old code: SIGTERM killed the process (exit -15) with nothing saved; SIGINT gave a KeyboardInterrupt
    traceback (and at times a segfault)."""
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert p.returncode == 130, (p.returncode, p.stdout, p.stderr[-3000:])
    assert p.stdout.split() == ["A", "ok", "B", "ok", "E", "ok", "C", "ok"], p.stdout
    assert "Traceback" not in p.stderr and "second signal (SIGINT)" in p.stderr, p.stderr[-3000:]
    assert p.stderr.count("interrupted by SIGTERM") == 2 and p.stderr.count("interrupted by SIGINT") == 2
    d = load(tmp_path / "d.npz")
    assert d.n_samples == 64 and not d.complete
    same_state(sample(NET, X, 96, checkpoint=tmp_path / "d.npz", **KW), load(tmp_path / "ref.npz"))


EARLY = textwrap.dedent("""
    import os, signal, sys, threading
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    import pdlt
    net = pdlt.MLP("gelu", (3, 8, 8, 8), C_W=1.5, C_b=0.05)
    x = np.array([[1.0, 0.0, 0.5], [0.2, 0.8, -0.4]])
    from pdlt.montecarlo import runner
    timer = threading.Timer(float(sys.argv[2]), os.kill, (os.getpid(), getattr(signal, sys.argv[3])))
    install = getattr(runner, "_install_handlers", None)
    if install is None:         # (code without handlers: the signal lands while sampling starts)
        timer.start()
    else:                       # start the clock once sample() has installed its handlers
        def timed(flag):
            restore = install(flag)
            timer.start()

            def stop_timer_then_restore():      # the run may beat the timer: no signal once sample() is done
                timer.cancel()
                timer.join()
                restore()
            return stop_timer_then_restore
        runner._install_handlers = timed
    r = pdlt.sample(net, x, 4096, seed=1, batches=8, chunk_size=64, checkpoint=sys.argv[1], progress=False,
                    resume_hint="rerun the same command to resume")
    sys.exit({"SIGINT": 130, "SIGTERM": 143}.get(r.interrupted, 0))
""")


def _early(tmp_path, k, delay, sig):
    ck = tmp_path / f"early{k}.npz"
    p = subprocess.run([sys.executable, "-c", EARLY, str(ck), str(delay), sig], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    code = {"SIGINT": 130, "SIGTERM": 143}[sig]
    assert p.returncode in (code, 0), (p.returncode, p.stderr[-3000:])      # 0: the run beat the timer
    assert "Traceback" not in p.stderr and "Segmentation" not in p.stderr, p.stderr[-3000:]
    if p.returncode == code:
        assert f"interrupted by {sig}" in p.stderr and "rerun the same command to resume" in p.stderr
        assert load(ck).n_samples >= 64


@pytest.mark.slow
@pytest.mark.parametrize("k", range(6))
def test_early_signal_exits_cleanly(tmp_path, k):
    """Fresh processes, a signal at several times while the first chunk compiles and runs, as a CLI would see it
    (old code: KeyboardInterrupt traceback, a segfault in 3 of 9 tries; SIGTERM lost everything)."""
    _early(tmp_path, k, [0.0, 0.05, 0.2, 0.5, 0.01, 0.1][k], "SIGINT" if k % 2 == 0 else "SIGTERM")

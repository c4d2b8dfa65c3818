"""Multi-process runs on jax.distributed (two local CPU processes on the loopback address), parts of a run and
``merge``: the result equals a one-process run with the same seed to float64 round-off, whatever the number of
processes and devices; a checkpoint of a distributed run resumes with another process count; faults (a process
that dies, processes started differently, an unreachable coordinator, overlapping or foreign parts) are refused
with a message, never a hang."""

import socket
import sys
import textwrap

import numpy as np
import pytest
from background import FOLDER, PORT, Command, free_port, python

import pdlt
from pdlt.errors import CheckpointError, DistributedError, ParameterError
from pdlt.montecarlo import load, merge
from pdlt.montecarlo.distributed import initialize

NET = pdlt.MLP("tanh", (2, 8, 8, 8), C_W=1.2, C_b=0.1)
X = np.array([[1.0, 0.0], [0.6, 0.8]])
N = 1000
KW = dict(seed=3, batches=8, chunk_size=64, progress=False)

WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    pid, port, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    import pdlt
    from pdlt.errors import DistributedError
    from pdlt.montecarlo.distributed import initialize
    initialize(f"127.0.0.1:{port}", 2, pid, timeout=30)
    net = pdlt.MLP("tanh", (2, 8, 8, 8), C_W=1.2, C_b=0.1)
    x = [[1.0, 0.0], [0.6, 0.8]]
    kw = dict(batches=8, chunk_size=64, progress=False, distributed=True)
    ck = os.path.join(out, "ck.npz")
    try:
        if mode == "equal":
            res = pdlt.sample(net, x, {N}, seed=3, checkpoint=ck, **kw)
            np.save(os.path.join(out, f"sums{pid}.npy"), res.state.sums)
            print("done", res.n_samples, res.info["processes"], flush=True)
        elif mode == "kinds":
            ntk = pdlt.sample_ntk(net, x, 96, seed=1, **kw)
            np.save(os.path.join(out, f"ntk{pid}.npy"), ntk.state.sums)
            tr = pdlt.sample_trained(pdlt.MLP("tanh", (2, 8, 1), C_W=1.0), x, [0.5, -0.5], [[0.3, 0.4]], 64, seed=2,
                                     eta=0.2, steps=5, **kw)
            np.save(os.path.join(out, f"train{pid}.npy"), tr.state.sums)
            print("done", tr.n_samples, tr.info["processes"], flush=True)
        elif mode == "die":
            def die(done, total):
                if pid == 1 and done >= 640:
                    os._exit(9)
            pdlt.sample(net, x, 100000, seed=3, checkpoint=ck, checkpoint_every=0, callback=die, **kw)
            print("not reached", flush=True)
        elif mode == "fail":          # an error on process 1 only (here its callback; also: device memory)
            def fail(done, total):
                if pid == 1 and done >= 640:
                    raise RuntimeError("callback failed")
            pdlt.sample(net, x, 100000, seed=3, checkpoint=ck, checkpoint_every=0, callback=fail, **kw)
            print("not reached", flush=True)
        elif mode == "bad_devices":   # settings only process 1 gets wrong: in the plan, then in the arguments
            for bad in (dict(devices=5 if pid == 1 else None), dict(n_samples=-5 if pid == 1 else {N})):
                try:
                    pdlt.sample(net, x, bad.pop("n_samples", {N}), seed=3, **bad, **kw)
                except Exception as err:
                    print(type(err).__name__ + ":", err, flush=True)
    except DistributedError as err:
        print("DistributedError:", err, flush=True)
        os._exit(0)      # JAX's runtime aborts a process whose peer died when it shuts down
    except Exception as err:
        print(type(err).__name__ + ":", err, flush=True)
        os._exit(0)
""").replace("{N}", str(N))


def _pair(mode, devices=1, cost=6):
    """The two processes of one WORKER run (``mode``), each with ``devices`` host devices."""
    return Command(tuple(python(WORKER, str(p), PORT, FOLDER, mode) for p in (0, 1)), cost=cost,
                   env={"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})


CLI = [sys.executable, "-m", "pdlt", "sample", "-a", "tanh", "-w", "2,8,8", "-x", "1,0;0.6,0.8", "--samples", "256",
       "--batches", "8", "--distributed", "--coordinator", f"127.0.0.1:{PORT}", "--num-processes", "2"]

#: the multi-process runs, in the background while the suite runs (tests/background.py)
JOBS = {"equal": _pair("equal", devices=2, cost=9), "die": _pair("die"), "fail": _pair("fail"),
        "bad_devices": _pair("bad_devices", cost=4), "kinds": _pair("kinds", cost=12),
        # pdlt sample --distributed with another seed on process 1
        "cli_seed": Command(tuple(tuple(CLI + ["--process-id", str(p), "--seed", str(3 + p)]) for p in (0, 1)),
                            env={"JAX_PLATFORMS": "cpu"}),
        # a --checkpoint folder that process 0 lacks
        "cli_checkpoint": Command(tuple(tuple(CLI + ["--process-id", str(p), "--checkpoint", f"{FOLDER}/no/ck"])
                                        for p in (0, 1)), env={"JAX_PLATFORMS": "cpu"})}


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.background("equal")
def test_two_processes_with_two_devices_each_equal_one_process(background):
    res = background("equal")
    tmp_path = res.folder
    assert res.codes == (0, 0) and all(f"done {N} 2" in out for out in res.outs), res.show()
    ref = pdlt.sample(NET, X, N, **KW)
    for p in (0, 1):
        _close(np.load(tmp_path / f"sums{p}.npy"), ref.state.sums)
    ck = load(tmp_path / "ck.npz")          # written by process 0: an ordinary checkpoint
    assert ck.complete and ck.n_samples == N
    _close(ck.state.sums, ref.state.sums)


@pytest.mark.slow
@pytest.mark.background("kinds")
def test_ntk_and_training_ensembles_on_two_processes(background):
    res = background("kinds")
    tmp_path = res.folder
    assert res.codes == (0, 0) and all("done 64 2" in out for out in res.outs), res.show()
    ntk = pdlt.sample_ntk(NET, X, 96, seed=1, batches=8, chunk_size=64, progress=False)
    tr = pdlt.sample_trained(pdlt.MLP("tanh", (2, 8, 1), C_W=1.0), X, [0.5, -0.5], [[0.3, 0.4]], 64, seed=2, eta=0.2,
                             steps=5, batches=8, chunk_size=64, progress=False)
    for p in (0, 1):
        _close(np.load(tmp_path / f"ntk{p}.npy"), ntk.state.sums)
        _close(np.load(tmp_path / f"train{p}.npy"), tr.state.sums)


@pytest.mark.background("die")
def test_a_process_that_dies_leaves_a_checkpoint_that_resumes(background):
    """Process 1 exits mid-run; process 0 gets a DistributedError (not a hang) after saving the last synchronised
    prefix; one process then finishes the run from that checkpoint, equal to an uninterrupted run."""
    res = background("die")
    tmp_path, (c0, c1), out0 = res.folder, res.codes, res.outs[0]
    assert c1 == 9 and c0 == 0 and "DistributedError:" in out0 and "rerun the same command" in out0, res.show()
    part = load(tmp_path / "ck.npz")
    assert not part.complete and 0 < part.n_samples < 100000
    n = part.n_samples + 200
    full = pdlt.sample(NET, X, n, checkpoint=tmp_path / "ck.npz", **KW)
    _close(full.state.sums, pdlt.sample(NET, X, n, **KW).state.sums)


@pytest.mark.background("fail", "bad_devices")
def test_an_error_on_one_process_stops_every_process(background):
    """Process 1's callback raises: it stops with that error at the next agreed point and process 0 with a
    DistributedError naming it, after saving the checkpoint (no process is left waiting in an exchange); a setting
    that only process 1 gets wrong (devices=5 on a one-device host) stops both before any sampling."""
    res = background("fail")
    out0, out1 = res.outs
    assert "RuntimeError: callback failed" in out1, res.show()
    assert "DistributedError: process 0: process 1 failed" in out0 and "rerun the same command" in out0, res.show()
    assert 0 < load(res.folder / "ck.npz").n_samples <= 640 + 128      # the last agreed point before the error
    res = background("bad_devices")
    out0, out1 = res.outs
    assert "ParameterError: devices=5" in out1 and "ParameterError: n_samples" in out1, res.show()
    assert out0.count("DistributedError: process 0: process 1 could not start the run") == 2, res.show()


@pytest.mark.background("cli_seed", "cli_checkpoint")
def test_cli_processes_started_differently_are_refused(background):
    """``pdlt sample --distributed`` with another seed on process 1: both processes stop with one line and exit 1."""
    res = background("cli_seed")
    assert res.codes == (1, 1), res.show()
    assert all("pdlt sample: error: process 1 was started with a different configuration" in err and
               "Traceback" not in err for err in res.errs), res.show()
    # a --checkpoint folder that process 0 lacks: it exits 2 with one line, process 1 with one line naming it
    res = background("cli_checkpoint")
    assert res.codes == (2, 1), res.show()
    for err, line in zip(res.errs, ("--checkpoint", "process 0 refused --out or --checkpoint")):
        assert line in err and "Traceback" not in err, res.show()


def test_unreachable_coordinator_is_a_clear_error_not_a_hang():
    with pytest.raises(DistributedError, match="did not answer within 1 s"):
        initialize(f"127.0.0.1:{free_port()}", 2, 1, timeout=1)
    with socket.socket() as taken:           # JAX's coordinator would segfault on a port that is in use
        taken.bind(("", 0))
        taken.listen()
        with pytest.raises(DistributedError, match="cannot run the coordinator on port"):
            initialize(f"127.0.0.1:{taken.getsockname()[1]}", 2, 0, timeout=1)
    with pytest.raises(ParameterError, match="coordinator_address"):
        initialize("no-port", 2, 1)
    with pytest.raises(ParameterError, match="together"):
        initialize("127.0.0.1:1234")
    with pytest.raises(ParameterError, match="distributed"):
        pdlt.sample(NET, X, 64, batches=8, distributed=True)       # the runtime was not initialized


def test_parts_merge_to_the_single_run(tmp_path):
    ref = pdlt.sample(NET, X, N, **KW)
    parts = [pdlt.sample(NET, X, N, part=(i, 3), **{**KW, "chunk_size": 7 + i}) for i in range(3)]
    assert [p.n_samples for p in parts] == [333, 333, 334] and all(c.kind == "part" for c in parts[1].caveats[:1])
    _close(merge(parts[::-1]).state.sums, ref.state.sums)
    # a prefix of the parts is an incomplete run that resume= finishes
    two = merge([parts[0], parts[1]])
    assert not two.complete and two.n_samples == 666
    _close(pdlt.sample(NET, X, N, resume=two, **KW).state.sums, ref.state.sums)
    # saved parts, merged from files by the CLI
    for i, p in enumerate(parts):
        p.save(tmp_path / f"p{i}")
    from pdlt.cli import main

    assert main(["merge", str(tmp_path / "m"), *(str(tmp_path / f"p{i}.npz") for i in (2, 0, 1))]) == 0
    _close(load(tmp_path / "m.npz").state.sums, ref.state.sums)
    assert main(["merge", str(tmp_path / "bad"), str(tmp_path / "p0.npz"), str(tmp_path / "p0.npz")]) == 2
    # the merged run written over one of its parts: refused before anything is written (the part was replaced)
    before = (tmp_path / "p0.npz").read_bytes()
    assert main(["merge", str(tmp_path / "p0"), *(str(tmp_path / f"p{i}.npz") for i in range(3))]) == 2
    assert (tmp_path / "p0.npz").read_bytes() == before


def test_merge_refuses_gaps_overlaps_and_other_runs():
    parts = [pdlt.sample(NET, X, 300, part=(i, 3), **KW) for i in range(3)]
    with pytest.raises(CheckpointError, match="networks 100..199 are missing"):
        merge([parts[0], parts[2]])
    with pytest.raises(CheckpointError, match="overlaps"):
        merge([parts[0], parts[0], parts[1]])
    other = pdlt.sample(NET, X, 300, part=(1, 3), **{**KW, "seed": 4})
    with pytest.raises(CheckpointError, match="another run.*seed"):
        merge([parts[0], other])
    with pytest.raises(ParameterError, match="part"):
        pdlt.sample(NET, X, 300, part=(3, 3), **KW)
    with pytest.raises(ParameterError, match="fewer than batches"):
        pdlt.sample(NET, X, 30, part=(0, 4), **KW)
    with pytest.raises(CheckpointError, match="part"):                 # a part cannot resume another part
        pdlt.sample(NET, X, 300, part=(2, 3), resume=parts[1], **KW)

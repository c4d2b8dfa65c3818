"""Monte Carlo runner: chunk-size and device-count invariance, checkpoints and resume, Ctrl-C, save/load,
bad input, CLI."""

import json
import textwrap

import numpy as np
import pytest
from background import FOLDER, Command, python

import pdlt
from pdlt import cli
from pdlt.montecarlo import MCResult, load, sample
from pdlt.montecarlo.runner import bytes_per_network

NET = pdlt.MLP("tanh", (2, 5, 4, 3), C_W=1.3, C_b=0.1)
X = np.array([[1.0, 0.0], [0.6, 0.8]])
N = 300

#: the same run on 2 host devices, in the background while the suite runs (tests/background.py)
JOBS = {"two_devices": Command((python(textwrap.dedent(f"""
    import sys, jax, numpy as np, pdlt
    assert len(jax.devices()) == 2, jax.devices()
    net = pdlt.MLP("tanh", (2, 5, 4, 3), C_W=1.3, C_b=0.1)
    r = pdlt.sample(net, np.array([[1.0, 0.0], [0.6, 0.8]]), {N}, seed=4, batches=8, chunk_size=10, progress=False)
    assert r.info["devices"] and len(r.info["devices"]) == 2
    r.save(sys.argv[1] + "/two.npz")
"""), FOLDER),), env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}, cost=5)}


def close(a: MCResult, b: MCResult, rtol=1e-12):
    assert a.n_samples == b.n_samples
    np.testing.assert_array_equal(a.state.counts, b.state.counts)
    scale = np.abs(a.state.sums).max()
    np.testing.assert_allclose(a.state.sums, b.state.sums, rtol=rtol, atol=rtol * scale)
    for name in ("two_point", "four_point", "four_point_single", "six_point_single"):
        ea, eb = getattr(a, name), getattr(b, name)
        s = np.nanmax(np.abs(ea.mean)) + 1e-300
        np.testing.assert_allclose(ea.mean, eb.mean, rtol=1e-10, atol=1e-11 * s)
        np.testing.assert_allclose(ea.stderr, eb.stderr, rtol=1e-9, atol=1e-11 * s)


@pytest.fixture(scope="module")
def reference():
    return sample(NET, X, N, seed=4, batches=8, progress=False)


def test_result_shapes(reference):
    r = reference
    assert r.complete and r.n_samples == N and r.L == 3
    assert r.two_point.mean.shape == (3, 2, 2)
    assert r.four_point.mean.shape == r.four_point.stderr.shape == (3, 2, 2, 2, 2)
    assert r.four_point_single.mean.shape == (3, 2, 2, 2, 2)
    assert r.six_point_single.mean.shape == (3, 2)
    np.testing.assert_allclose(r.vertex.mean[1], 5 * r.four_point.mean[1])
    th = pdlt.finite_width(NET, X)
    assert r.two_point.mean.shape == th.K.shape and r.vertex.mean.shape == th.V.shape


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunk_size_invariance(reference, chunk):
    close(sample(NET, X, N, seed=4, batches=8, chunk_size=chunk, progress=False), reference)


def test_memory_budget_sets_chunk(reference):
    per = bytes_per_network("markov", NET.widths, 2)
    r = sample(NET, X, N, seed=4, batches=8, memory_budget=7 * per + 1, progress=False)
    assert r.info["chunk_size"] == 7
    close(r, reference)


@pytest.mark.background("two_devices")
def test_device_count_invariance(reference, background):
    """2 host devices (XLA_FLAGS in a subprocess): same result as 1 device to 1e-12."""
    res = background("two_devices")
    assert res.codes == (0,), res.show()
    close(load(res.folder / "two.npz"), reference)


def test_resume_after_interrupt_equals_uninterrupted(reference, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    part = sample(NET, X, N, seed=4, batches=8, chunk_size=20, checkpoint=ck, checkpoint_every=1e9,
                  callback=interrupt, progress=False)
    assert not part.complete and part.n_samples == 60 and ck.exists()
    assert "interrupted" in capsys.readouterr().err
    saved = load(ck)
    assert saved.n_samples == 60 and not saved.complete
    close(saved, part)
    # resume with another chunk size: the uninterrupted result
    full = sample(NET, X, N, seed=4, batches=8, chunk_size=7, checkpoint=ck, progress=False)
    assert full.complete
    close(full, reference)
    # in memory, without a checkpoint file
    def at_once(done, total):
        raise KeyboardInterrupt

    part2 = sample(NET, X, N, seed=4, batches=8, chunk_size=20, callback=at_once, progress=False)
    assert part2.n_samples == 20 and not part2.complete and part2.interrupted == "SIGINT"
    close(sample(NET, X, N, seed=4, batches=8, resume=part2, progress=False), reference)


def test_interrupt_keeps_data(tmp_path):
    """Interrupted after k chunks: exactly those k chunks are kept, with usable estimates."""
    def stop_after_2(done, total):
        if done >= 40:
            raise KeyboardInterrupt

    part = sample(NET, X, N, seed=4, batches=8, chunk_size=20, callback=stop_after_2, progress=False)
    first = sample(NET, X, 40, seed=4, batches=8, chunk_size=7, progress=False)
    close(part, first)
    assert np.all(np.isfinite(part.two_point.stderr))


def test_extend_run(reference, tmp_path):
    """n_samples can grow between calls: batches are s mod B, independent of n_samples."""
    ck = tmp_path / "grow.npz"
    sample(NET, X, 100, seed=4, batches=8, checkpoint=ck, chunk_size=20, progress=False)
    close(sample(NET, X, N, seed=4, batches=8, checkpoint=ck, chunk_size=20, progress=False), reference)
    with pytest.raises(ValueError, match="n_samples"):
        sample(NET, X, 50, seed=4, batches=8, checkpoint=ck, progress=False)


def test_resume_refuses_other_config(tmp_path):
    ck = tmp_path / "ck.npz"
    sample(NET, X, 64, seed=4, batches=8, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="different configuration.*seed"):
        sample(NET, X, 64, seed=5, batches=8, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match="different configuration.*method"):
        sample(NET, X, 64, seed=4, batches=8, method="weights", checkpoint=ck, progress=False)
    other = pdlt.MLP("tanh", (2, 5, 4, 3), C_W=1.2, C_b=0.1)
    with pytest.raises(ValueError, match="C_W"):
        sample(other, X, 64, seed=4, batches=8, checkpoint=ck, progress=False)


def test_save_load_roundtrip(reference, tmp_path):
    path = reference.save(tmp_path / "run")
    assert path.endswith(".npz")
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["seed"] == 4 and meta["method"] == "markov" and meta["complete"] is True
    assert meta["n_samples"] == N and {"pdlt", "jax", "numpy"} <= set(meta["versions"])
    assert meta["config"]["widths"] == [2, 5, 4, 3]
    back = MCResult.load(path)
    close(back, reference, rtol=0)
    with np.load(path) as f:
        np.testing.assert_array_equal(f["four_point_mean"], reference.four_point.mean)
        np.testing.assert_array_equal(f["vertex_stderr"], reference.vertex.stderr)
    with pytest.raises(ValueError, match="not a pdlt"):
        np.savez(tmp_path / "junk.npz", a=np.zeros(2))
        load(tmp_path / "junk.npz")


def test_progress_line(capsys):
    sample(NET, X, 64, seed=0, batches=8, chunk_size=20, progress=True)
    err = capsys.readouterr().err
    assert "[pdlt sample]" in err and "64/64" in err


# ---------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------


def test_memory_budget_too_small():
    net = pdlt.MLP("tanh", (4, 512, 512), C_W=1.0)
    with pytest.raises(ValueError, match="memory_budget=1,000 bytes is too small"):
        sample(net, np.ones((1, 4)), 64, memory_budget=1000)
    with pytest.raises(ValueError, match="method='markov'"):
        sample(net, np.ones((1, 4)), 64, method="weights", memory_budget=bytes_per_network("markov", net.widths, 1) * 2)


def test_diverging_flow_names_layer(tmp_path):
    """A linear net with C_W = 1e60: K^(l) = 1e60^l leaves float64 (1.8e308) at l = 6, so the run diverges
    there. Higher moments are kept in scaled form, so at L = 3 the run completes, but the sixth moment of layer 2
    (~1e360) cannot be read as a float64 and says so instead of returning inf."""
    net = pdlt.MLP("linear", (1,) + (3,) * 6, C_W=1e60)
    ck = tmp_path / "div.npz"
    with pytest.raises(pdlt.DivergentFlowError, match=r"layer l = 6.*C_W") as err:
        sample(net, [[1.0]], 64, batches=8, checkpoint=ck, progress=False)
    assert err.value.layer == 6
    short = sample(pdlt.MLP("linear", (1, 3, 3, 3), C_W=1e60), [[1.0]], 64, batches=8, progress=False)
    with pytest.raises(pdlt.DivergentFlowError) as err:
        short.six_point_single.mean
    assert err.value.layer == 2
    relu = pdlt.MLP("relu", (1,) + (3,) * 17, C_W=1e20)  # K^(l) ~ 1e20 (5e19)^(l-1) overflows at l = 16
    with pytest.raises(pdlt.DivergentFlowError, match="lower C_W"):
        sample(relu, [[1.0]], 64, batches=8, method="weights", progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(x=np.ones((2, 3))), "n_0"),
    (dict(x=np.ones((2, 2, 2))), r"shape \(d, n_0\)"),
    (dict(x=[[np.nan, 1.0]]), "NaN"),
    (dict(method="gibbs"), "method"),
    (dict(n_samples=4), "batches"),
    (dict(batches=1), "batches"),
    (dict(seed=-1), "seed"),
    (dict(n_samples=10.5), "n_samples"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(memory_budget=-1), "memory_budget"),
    (dict(devices=99), "devices"),
])
def test_bad_input(kwargs, match):
    kw = dict(x=X, n_samples=64, seed=0)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample(NET, kw.pop("x"), kw.pop("n_samples"), **kw)


def test_not_an_mlp():
    with pytest.raises(pdlt.errors.ParameterError, match="MLP"):
        sample("tanh", X, 64)


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def test_cli_sample(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["sample", "-a", "tanh", "-w", "2,5,4,3", "--C-W", "1.3", "--C-b", "0.1", "-x", "[[1,0],[0.6,0.8]]",
                   "--samples", str(N), "--seed", "4", "--batches", "8", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "V_(00)(00)" in text and "wrote" in text
    close(load(str(out) + ".npz"), sample(NET, X, N, seed=4, batches=8, progress=False))
    rc = cli.main(["sample", "-a", "tanh", "-w", "2,5,4,3", "-x", "[[1,0]]", "--samples", "64", "--json",
                   "--method", "weights", "--checkpoint", str(tmp_path / "ck.npz")])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_samples"] == 64 and np.shape(data["vertex"]["mean"]) == (3, 1, 1, 1, 1)
    assert (tmp_path / "ck.npz").exists()
    rc = cli.main(["sample", "-a", "tanh", "-w", "2,5", "-x", "[[1,0,0]]", "--samples", "64"])
    assert rc == 2 and "n_0" in capsys.readouterr().err


@pytest.mark.slow       # the CLI's bench output is tested with stand-ins in test_bench.py, the run itself there too
def test_cli_bench_mc(capsys, monkeypatch):
    from pdlt.montecarlo import bench

    for part in ("_device_scaling", "_process_scaling", "_growth"):      # subprocess runs, tested in test_bench.py
        monkeypatch.setattr(bench, part, lambda *a, **k: {})
    rc = cli.main(["bench", "mc", "--n", "8", "--L", "2", "--d", "2", "--min-time", "0.01", "--no-vertex", "--quick"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ratio markov/weights" in out and "ratio markov normals rate / raw normal rate" in out

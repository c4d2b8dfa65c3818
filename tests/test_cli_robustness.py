"""The command line says what it does, accepts what a user types, fails early with one clear line, writes strict
JSON that carries what is needed to reproduce a run, and turns SIGTERM/SIGINT into a resumable stop.

Every case runs ``pdlt.cli.main`` in-process except the signal test, which needs a real process to signal.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pdlt.cli import main


def _strict_loads(text):
    """json.loads that refuses NaN / Infinity tokens (as RFC 8259 parsers do)."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _one_error_line(err: str, cmd: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pdlt {cmd}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- item 15: help, version ------------------------------------------------------------------------


def test_help_documents_choices_defaults_and_activations(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "theory" in out and "mc" in out and "sampler throughputs" in out
    assert main(["sample", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 0)", "(default: markov)", "(default: 32)", "(default: 512.0)", "tanh", "leaky_relu",
                  "tanh(z)+0.1*z", "--checkpoint-every"):
        assert shown in out, shown
    assert main(["--version"]) == 0
    import pdlt

    assert capsys.readouterr().out.startswith(f"pdlt {pdlt.__version__} (jax ")


# --- item 15: what a user types --------------------------------------------------------------------


def test_activation_expression_in_z(capsys):
    """-a 'tanh(z)+0.1*z' is an activation; K^(2) against Gauss-Hermite quadrature of sigma(z)^2 done here."""
    x = [[1.0, 0.5]]
    assert main(["flow", "-a", "tanh(z)+0.1*z", "-w", "2,8,8", "--C-W", "1.5", "--C-b", "0.1", "-x", str(x),
                 "--json"]) == 0
    K = np.array(_strict_loads(capsys.readouterr().out)["K"])[:, 0, 0]
    K1 = 0.1 + 1.5 * (1.0 + 0.25) / 2
    t, w = np.polynomial.hermite_e.hermegauss(80)
    s = np.tanh(np.sqrt(K1) * t) + 0.1 * np.sqrt(K1) * t
    K2 = 0.1 + 1.5 * np.sum(w * s**2) / np.sqrt(2 * np.pi)
    assert K[0] == pytest.approx(K1, rel=1e-12) and K[1] == pytest.approx(K2, rel=1e-9)


@pytest.mark.parametrize("act", ["nonsense", "tahn(z)", "sqrt(z)", "log(z)", "I*z", "a*z", "z**2+", "relu(x)"])
def test_bad_activation_is_one_line_naming_the_option(act, capsys):
    for cmd in (["flow", "-w", "2,3", "-x", "[[1,0]]"], ["criticality"]):
        assert main([cmd[0], "-a", act] + cmd[1:]) == 2
        line = _one_error_line(capsys.readouterr().err, cmd[0])
        assert "-a/--activation" in line


def test_widths_inputs_and_variances_messages(capsys):
    assert main(["flow", "-a", "tanh", "-w", "3,32.5,64", "-x", "[[1,0,0]]"]) == 2
    assert "--widths: 32.5 is not an integer width" in _one_error_line(capsys.readouterr().err, "flow")
    # rows separated by semicolons are accepted ...
    assert main(["flow", "-a", "relu", "-w", "2,4", "--C-W", "2", "-x", "1,0;0,1", "--json"]) == 0
    K = np.array(_strict_loads(capsys.readouterr().out)["K"])
    np.testing.assert_allclose(K[0], np.eye(2), rtol=1e-15)           # K^(1) = C_W x x^T / n_0
    # ... ragged rows and wrong dimensions are refused with the option named
    for xs, says in (("1,2;3", "-x/--inputs"), ("[[1,0,0]]", "-x/--inputs"), ("[[1,nan]]", "-x/--inputs")):
        assert main(["flow", "-a", "tanh", "-w", "2,3", "-x", xs]) == 2
        assert says in _one_error_line(capsys.readouterr().err, "flow"), xs
    assert main(["flow", "-a", "tanh", "-w", "2,3", "--C-W", "-1", "-x", "[[1,0]]"]) == 2
    assert "--C-W" in _one_error_line(capsys.readouterr().err, "flow")


@pytest.mark.parametrize("argv, says", [
    (["bench", "theory", "--L", "-1"], "--L"), (["bench", "mc", "--n", "0"], "--n"),
    (["bench", "mc", "--min-time", "0"], "--min-time"), (["bench", "nonsense"], "theory"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "0"], "--samples"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--seed", "-1"], "--seed"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--batches", "1"], "--batches"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--memory-budget", "0"],
     "--memory-budget"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--memory-budget", "1e-9"],
     "--memory-budget 1e-09 MiB"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--checkpoint-every", "-1"],
     "--checkpoint-every"),
    (["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--method", "exact"], "--method"),
    (["table", "--pdf"], "--pdf"), (["criticality", "--bogus"], "--bogus"), (["criticality", "--json", "--latex"], "--latex"),
])
def test_every_subcommand_bad_input_is_one_line_exit_2(argv, says, capsys):
    assert main(argv) == 2
    assert says in _one_error_line(capsys.readouterr().err, argv[0])


def test_empty_inputs_file_and_json_out_folder_exit_2(tmp_path, capsys):
    # an empty .npy was a raw EOFError traceback (exit 1); --json-out naming a folder failed after the whole benchmark
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert main(["flow", "-a", "tanh", "-w", "2,4,1", "-x", str(empty)]) == 2
    assert "cannot read inputs file" in _one_error_line(capsys.readouterr().err, "flow")
    assert main(["bench", "theory", "--d", "1", "--L", "1", "--json-out", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err, "bench")


def test_verify_checks_out_folder_before_running(monkeypatch, capsys):
    import pdlt.verify

    def must_not_run(*a, **k):
        raise AssertionError("run_verify started although --out cannot be written")

    monkeypatch.setattr(pdlt.verify, "run_verify", must_not_run)
    assert main(["verify", "--quick", "--out", "/proc/nope"]) == 2
    assert "--out" in _one_error_line(capsys.readouterr().err, "verify")


def test_corrupt_checkpoint_exit_2(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    ck.write_bytes(b"not a checkpoint at all")
    assert main(["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "8", "--batches", "2",
                 "--checkpoint", str(ck)]) == 2
    assert str(ck) in _one_error_line(capsys.readouterr().err, "sample")


def test_bench_progress_lines(monkeypatch, capsys):
    """bench prints a line per measurement on stderr as it goes (fake measurements: only the plumbing)."""
    import pdlt.montecarlo.bench as bench

    def fake(n, L, d, *, min_time, full, vertex, progress):
        progress("markov networks/s", 1.0)
        progress("weights networks/s", 2.0)
        return {"markov networks/s": 1.0, "weights networks/s": 2.0}

    monkeypatch.setattr(bench, "bench_mc", fake)
    assert main(["bench", "mc", "--n", "4", "--L", "1", "--no-vertex"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == ["[pdlt bench] markov networks/s: 1", "[pdlt bench] weights networks/s: 2"]


def test_bench_ntk_plumbing(monkeypatch, capsys):
    """pdlt bench ntk: the theory timings and the Monte Carlo ratio, one progress line each (fake measurements)."""
    import pdlt.cli as cli
    import pdlt.montecarlo.bench as bench

    def fake_theory(d, L, progress):
        progress(f"tanh: NTK statistics Theta..U (d={d}, L={L}) [s]", 0.5)
        return {f"tanh: NTK statistics Theta..U (d={d}, L={L}) [s]": 0.5}

    def fake_mc(progress):
        progress("NTK cost / plain weights cost", 7.0)
        return {"NTK cost / plain weights cost": 7.0}

    monkeypatch.setattr(cli, "bench_ntk_theory", fake_theory)
    monkeypatch.setattr(bench, "bench_ntk", fake_mc)
    assert main(["bench", "ntk", "--d", "2", "--L", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["[pdlt bench] tanh: NTK statistics Theta..U (d=2, L=3) [s]: 0.5",
                                         "[pdlt bench] NTK cost / plain weights cost: 7"]
    assert "NTK cost / plain weights cost" in captured.out


# --- items 10 and 14: width-1 layers, strict and complete JSON --------------------------------------


def test_width1_layer_is_undefined_not_nan(capsys):
    argv = ["sample", "-a", "tanh", "-w", "2,1,3", "-x", "[[1,0],[0.6,0.8]]", "--samples", "64", "--batches", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "undefined (width-1 layer)" in out and "nan" not in out.lower()
    assert main(argv + ["--json"]) == 0
    data = _strict_loads(capsys.readouterr().out)
    for name in ("four_point", "vertex"):
        assert data[name]["undefined_layers"] == [1]
        assert np.array(data[name]["mean"][0], dtype=object).flatten().tolist() == [None] * 16
        assert np.all(np.isfinite(np.array(data[name]["mean"][1], dtype=float)))  # layer 2 has width 3


def test_sample_json_reproduces_the_run(capsys):
    """The JSON alone rebuilds the run: pdlt.sample with its x, widths, activation, C_W, C_b, seed, method and
    batches gives the same numbers."""
    import pdlt

    argv = ["sample", "-a", "tanh(z)+0.1*z", "-w", "2,3,3", "--C-W", "1.2", "--C-b", "0.05", "-x", "1,0;0.6,0.8",
            "--samples", "48", "--seed", "7", "--batches", "4", "--json"]
    assert main(argv) == 0
    rec = _strict_loads(capsys.readouterr().out)
    assert rec["command"] == ["pdlt"] + argv and rec["complete"] is True and rec["interrupted"] is None
    assert rec["n_samples"] == rec["n_samples_requested"] == 48
    assert rec["versions"]["pdlt"] == pdlt.__version__ and rec["versions"]["jax"]
    import sympy as sp

    act = pdlt.Activation.from_sympy(sp.sympify(rec["activation_expr"], locals={"Symbol": sp.Symbol}),
                                     name=rec["activation"])
    net = pdlt.MLP(act, rec["widths"], rec["C_W"], rec["C_b"])
    again = pdlt.sample(net, np.array(rec["x"]), rec["n_samples"], rec["seed"], method=rec["method"],
                        batches=rec["batches"], progress=False)
    np.testing.assert_allclose(np.array(rec["two_point"]["mean"]), again.two_point.mean, rtol=1e-13)
    np.testing.assert_allclose(np.array(rec["four_point"]["mean"]), again.four_point.mean, rtol=1e-13, atol=1e-300)


def test_json_writers_are_strict():
    from pdlt.cli import _dumps

    text = _dumps({"a": [1.0, float("nan")], "b": {"c": float("inf")}})
    data = _strict_loads(text)
    assert data["a"] == [1.0, None] and data["b"]["c"] is None
    assert set(data["nulls"]) == {"a[1]", "b.c"}


# --- item 15: interruption ---------------------------------------------------------------------------


def _sample_cmd(ck, n):
    return [sys.executable, "-m", "pdlt", "sample", "-a", "tanh", "-w", "2,4,4", "-x", "[[1,0],[0.6,0.8]]",
            "--samples", str(n), "--batches", "4", "--chunk-size", "64", "--checkpoint", str(ck),
            "--checkpoint-every", "0", "--json"]


def test_sigint_without_checkpoint_is_one_line_exit_130(monkeypatch, capsys):
    """Ctrl-C after the first chunk (a real SIGINT to this process, sent from the runner's callback): partial
    result on stdout marked incomplete, one line on stderr that says how to make the run resumable, exit 130."""
    import pdlt.montecarlo.runner as runner

    real = runner.sample

    def interrupted_sample(*a, **k):
        sent = []

        def after_chunk(done, total):
            if not sent:
                sent.append(done)
                os.kill(os.getpid(), signal.SIGINT)

        return real(*a, callback=after_chunk, **k)

    monkeypatch.setattr(runner, "sample", interrupted_sample)
    assert main(["sample", "-a", "tanh", "-w", "2,3", "-x", "[[1,0]]", "--samples", "64", "--batches", "2",
                 "--chunk-size", "8", "--json"]) == 130
    cap = capsys.readouterr()
    rec = _strict_loads(cap.out)
    assert rec["complete"] is False and rec["interrupted"] == "SIGINT" and 0 < rec["n_samples"] < 64
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert lines == [f"pdlt sample: interrupted after {rec['n_samples']} of 64 networks; no checkpoint: rerun with "
                     "--checkpoint PATH to make runs resumable"], cap.err


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_rerun_resumes(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    n = 64 * 60
    cmd = _sample_cmd(ck, n)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.monotonic()
    while not ck.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("pdlt sample: interrupted after ") and lines[0].endswith(
        f"of {n} networks; checkpoint saved to {ck}; rerun the same command to resume"), lines[0]
    partial = _strict_loads(out)
    assert partial["complete"] is False and partial["interrupted"] == "SIGTERM" and 0 < partial["n_samples"] < n
    assert ck.exists()
    # the same command again completes from the checkpoint and equals an uninterrupted run
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = _strict_loads(done.stdout)
    assert resumed["complete"] is True and resumed["n_samples"] == n
    assert main(["sample", "-a", "tanh", "-w", "2,4,4", "-x", "[[1,0],[0.6,0.8]]", "--samples", str(n),
                 "--batches", "4", "--chunk-size", "64", "--json"]) == 0
    fresh = _strict_loads(capsys.readouterr().out)
    for name in ("two_point", "four_point", "six_point_single"):
        np.testing.assert_allclose(resumed[name]["mean"], fresh[name]["mean"], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(resumed[name]["stderr"], fresh[name]["stderr"], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("option", ["--checkpoint", "--out"])
def test_sample_never_creates_a_missing_directory(option, tmp_path, capsys):
    """A typo in a path must not silently make a directory tree: refused before any sampling, one line, exit 2."""
    target = tmp_path / "missing" / "sub" / "ck.npz"
    rc = main(["sample", "-a", "tanh", "-w", "3,8", "-x", "1,0.2,-0.5", "--samples", "64", option, str(target)])
    assert rc == 2 and not (tmp_path / "missing").exists()
    line = _one_error_line(capsys.readouterr().err, "sample")
    assert option in line and "does not exist" in line


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_startup_imports_is_one_line(sig, code):
    """A signal that lands in the imports (numpy, sympy, JAX: the first second or two) once gave a
    KeyboardInterrupt traceback, an interrupt swallowed by a gc callback (run to completion, exit 0), or a silent
    kill. pdlt/__main__.py installs its handlers before those imports: one line, exit 128 + signal."""
    proc = subprocess.Popen([sys.executable, "-m", "pdlt", "sample", "-a", "tanh", "-w", "3,64,64", "-x", "1,0,0",
                             "--samples", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (proc.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err, err


def test_activation_text_is_never_executed(tmp_path, capsys):
    """-a once went to sympy's parse_expr with Python's builtins, which evaluates the text: a string could run
    code. It now goes through pdlt.activation's whitelisted parser and is refused as an unknown function."""
    marker = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert main(["flow", "-w", "2,3", "-x", "[[1,0]]", "-a", code]) == 2
    assert not marker.exists()
    assert "-a/--activation" in _one_error_line(capsys.readouterr().err, "flow")


def test_bench_train_plumbing(monkeypatch, capsys):
    """pdlt bench train: theory timings and the training ensemble's wall time against the targets (fake
    measurements: only the plumbing; the real ones run in `pdlt bench train`)."""
    import pdlt.cli as cli
    import pdlt.montecarlo.bench as bench

    def fake_theory(L, progress):
        progress(f"train_prediction infinite width (8 train + 8 test inputs, L={L}) [s]", 0.2)
        return {f"train_prediction infinite width (8 train + 8 test inputs, L={L}) [s]": 0.2}

    def fake_mc(n_networks, progress):
        progress("ratio wall time / 60 s target", 0.5)
        return {"ratio wall time / 60 s target": 0.5, "networks": float(n_networks)}

    monkeypatch.setattr(cli, "bench_train_theory", fake_theory)
    monkeypatch.setattr(bench, "bench_train", fake_mc)
    assert main(["bench", "train", "--L", "4", "--networks", "100"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["[pdlt bench] train_prediction infinite width (8 train + 8 test inputs, L=4) "
                                         "[s]: 0.2", "[pdlt bench] ratio wall time / 60 s target: 0.5"]
    assert "networks" in captured.out and "100" in captured.out

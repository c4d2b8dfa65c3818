import json

import numpy as np
import pytest

from pdlt.cli import main


def test_criticality_json(capsys):
    assert main(["criticality", "relu", "tanh", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["C_W"] == 2.0 and data[1]["universality"] == "K*=0"


def test_criticality_table_and_latex(capsys):
    assert main(["criticality", "gelu", "sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "half-stable" in out and "none" in out
    assert main(["criticality", "relu", "--latex"]) == 0
    assert r"\toprule" in capsys.readouterr().out


def test_flow_literal_and_npy(tmp_path, capsys):
    assert main(["flow", "-a", "relu", "-w", "2,5,5,5", "--C-W", "2", "-x", "[[1,0],[0,1]]", "--json"]) == 0
    K = np.array(json.loads(capsys.readouterr().out)["K"])
    assert K.shape == (3, 2, 2) and K[0, 0, 0] == pytest.approx(1.0)
    f = tmp_path / "x.npy"
    np.save(f, np.array([[1.0, 2.0]]))
    assert main(["flow", "-a", "tanh", "-w", "2,5,5", "--C-W", "1,1.2", "--C-b", "0.1", "-x", str(f)]) == 0
    assert "l=   2" in capsys.readouterr().out


def test_bad_input_exit_code(capsys):
    assert main(["flow", "-a", "nope", "-w", "2,5", "-x", "[[1,0]]"]) == 2
    assert "unknown activation" in capsys.readouterr().err
    assert main(["flow", "-a", "tanh", "-w", "3,5", "-x", "[[1,0]]"]) == 2
    assert "n_0" in capsys.readouterr().err


def test_verify_theory_only(tmp_path, capsys):
    assert main(["verify", "--quick", "--no-mc", "--out", "-"]) == 0
    assert "Monte Carlo" not in capsys.readouterr().out


def test_table(tmp_path, capsys):
    assert main(["table", "--out", str(tmp_path / "t.tex")]) == 0
    assert r"\begin{document}" in (tmp_path / "t.tex").read_text()


def test_cli_bad_inputs_are_messages_not_tracebacks(capsys, tmp_path):
    for argv in (["flow", "-a", "tanh", "-w", "2,3", "-x", "{1:2}"], ["flow", "-a", "tanh", "-w", "2,3", "-x", "[[1,nan]]"],
                 ["flow", "-a", "tanh", "-w", "2,3", "-x", str(tmp_path / "missing.npy")],
                 ["table", "--out", str(tmp_path / "no" / "x.tex")], ["criticality", "tanh(2)"],
                 ["criticality", "leaky_relu(x)"]):
        assert main(argv) == 2, argv
        assert "error:" in capsys.readouterr().err

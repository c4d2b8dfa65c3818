"""pdlt bench mc: one real quick run at tiny sizes for the numbers; the CLI's JSON and --compare on its results.

Compilation dominates the real run (about a dozen small functions and one subprocess); everything else here reuses
its results through a stand-in bench_mc. No test looks at wall-clock values: only that numbers are finite and
positive, and that files round-trip."""

import json
import math

import pytest
from background import Command, python

import pdlt.montecarlo.bench as bench
from pdlt import cli

PROCESS_KEY = "process scaling stand-in"

#: the process-scaling run (it starts two processes of its own), in the background while the suite runs
JOBS = {"processes": Command((python(
    "import json\nimport pdlt.montecarlo.bench as bench\n"
    "res = bench._process_scaling(8, 2, 2, min_time=0.1, memory_budget=2**20, quick=True, report=lambda k, v: None)\n"
    "print(json.dumps(res))"),), cost=6)}


@pytest.fixture(scope="module")
def quick():
    """bench_mc(quick=True) once, with a stand-in process-scaling hook that shows its numbers reach the results."""
    calls = []

    def hook(n, L, d, **kw):
        calls.append((n, L, d, kw))
        return {PROCESS_KEY: 1.0}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "_process_scaling", hook)
        res = bench.bench_mc(4, 1, 1, quick=True, vertex=False, kinds=False)    # the kinds: test_kinds_rates
    assert len(calls) == 1 and calls[0][:3] == (4, 1, 1) and calls[0][3]["quick"] is True
    return res


def _numbers(res, word):
    return {k: v for k, v in res.items() if word in k}


@pytest.mark.slow       # ~12 s of compilations; the CLI and JSON paths are tested below with RESULTS
def test_quick_run_gives_finite_positive_rates_ratios_and_exponents(quick):
    assert quick["device"] and quick["backend"] == "cpu"
    rates = _numbers(quick, "/s")
    for kind in ("markov networks/s", "weights networks/s", "markov float32 networks/s", "weights float32 networks/s",
                 "markov normals/s", "weights normals/s", "raw float64 normals/s for markov's count (best",
                 "raw float64 normals/s for weights' count (best", "markov networks/s on 1 device",
                 "markov networks/s on 2 device"):
        assert any(k.startswith(kind) for k in rates), kind
    for k, v in rates.items():
        assert math.isfinite(v) and v > 0, (k, v)
    for key in ("ratio markov/weights", "ratio markov normals rate / raw normal rate (fastest of alternating calls)",
                "ratio weights normals rate / raw normal rate (fastest of alternating calls)",
                "ratio markov rate 2 devices / 1 device"):
        assert math.isfinite(quick[key]) and quick[key] > 0, key
    exps = _numbers(quick, "exponent in")
    assert {k.split(" (")[0] for k in exps} == {f"growth {m}: exponent in {a}" for m in ("markov", "weights")
                                                 for a in ("n", "L", "d")}
    assert all(math.isfinite(v) for v in exps.values()), exps
    assert quick[PROCESS_KEY] == 1.0


@pytest.mark.slow
def test_kinds_rates():
    """The NTK and training ensembles' rates (their compilations make this the slow part of a quick run)."""
    res = bench.bench_mc(4, 1, 1, quick=True, vertex=False, scaling=False, growth=False)
    for kind in ("NTK sampler networks/s", "training ensemble networks/s"):
        (rate,) = [v for k, v in res.items() if k.startswith(kind)]
        assert math.isfinite(rate) and rate > 0, kind


@pytest.mark.background("processes")
def test_process_scaling_runs_two_processes(background):
    """The quick form: one run shared by two local processes on jax.distributed (the full form adds the pinned and
    the equal-core comparisons, whose ratios the closing notes report; no timing is asserted)."""
    res = background("processes")
    assert res.codes == (0,), res.show()
    (key, rate), = json.loads(res.outs[0].splitlines()[-1]).items()
    assert key.startswith("processes: markov networks/s, 2 processes x 1 device") and math.isfinite(rate) and rate > 0


def test_exponent_fit_and_axes():
    assert bench._exponent([64, 128, 256], [3.0, 12.0, 48.0]) == pytest.approx(2.0)
    assert math.isnan(bench._exponent([4], [1.0]))
    assert bench._axis(512, (0.125, 0.25, 0.5, 1), 2) == [64, 128, 256, 512]
    assert bench._axis(1, (0.5, 1), 1) == [1, 2]          # a fit needs two sizes


def _strict(text):
    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


# keys and values of the kinds a real run returns (the real run: test_quick_run_..., under -m slow)
RESULTS = {"device": "cpu", "backend": "cpu", "markov networks/s (n=8, L=2, d=2)": 1.5e5, "markov chunk (networks "
           "per call)": 256, "ratio markov/weights": 12.5, "growth markov: exponent in n (L=2, d=2; n = 4, 8)": 0.8,
           "V^(L) to 1%: seconds (extrapolated, excluding the compile above)": 9.5}


def test_cli_json_out_and_compare_with_itself(tmp_path, monkeypatch, capsys):
    res = {**RESULTS, "a rate that failed networks/s": math.nan}
    seen = []

    def stand_in(n, L, d, *, min_time, full, vertex, progress, quick=False):
        seen.append((n, L, d, min_time, full, vertex, quick))
        return dict(res)

    monkeypatch.setattr(bench, "bench_mc", stand_in)
    path = tmp_path / "run.json"
    argv = ["bench", "mc", "--n", "8", "--L", "2", "--d", "2", "--quick", "--no-vertex", "--json-out", str(path)]
    assert cli.main(argv) == 0
    assert seen == [(8, 2, 2, bench.QUICK_MIN_TIME, False, False, True)]
    rec = _strict(path.read_text())
    assert rec["benchmark"] == "pdlt bench mc" and rec["device"] == RESULTS["device"] and rec["backend"] == "cpu"
    assert rec["versions"]["jax"] and rec["versions"]["pdlt"] and rec["date"]
    assert rec["parameters"] == {"n": 8, "L": 2, "d": 2, "min_time": bench.QUICK_MIN_TIME, "quick": True,
                                 "full": False, "vertex": False}
    assert rec["command"] == ["pdlt"] + argv
    assert rec["results"]["a rate that failed networks/s"] is None
    assert "results.a rate that failed networks/s" in rec["nulls"]
    assert rec["results"]["markov chunk (networks per call)"] == RESULTS["markov chunk (networks per call)"]
    capsys.readouterr()

    same = ["bench", "mc", "--n", "8", "--L", "2", "--d", "2", "--quick", "--no-vertex", "--compare", str(path)]
    assert cli.main(same) == 0
    out = capsys.readouterr().out
    table = out[out.index("# against"):].splitlines()[1:]
    numeric = [k for k, v in RESULTS.items() if isinstance(v, (int, float)) and math.isfinite(v)]
    assert len(table) == len(numeric) and not any(line.endswith("SLOWER") for line in table)
    assert all(line.split()[-1] == "1.000" for line in table), table

    # another configuration: said so, and still only the numbers in both are compared
    assert cli.main(same[:3] + ["16"] + same[4:]) == 0
    out = capsys.readouterr().out
    assert "# parameters differ (n 8 -> 16)" in out


def test_compare_results_flags_slower_rates_and_times_only():
    old = {"markov networks/s (n=8)": 100.0, "V^(L) to 1%: seconds (extrapolated)": 10.0, "ratio markov/weights": 4.0,
           "growth markov: exponent in n": 1.0, "device": "cpu", "gone networks/s": 1.0}
    new = {"markov networks/s (n=8)": 85.0, "V^(L) to 1%: seconds (extrapolated)": 12.0, "ratio markov/weights": 2.0,
           "growth markov: exponent in n": 2.0, "device": "cpu", "new networks/s": 1.0}
    rows = {r["key"]: r for r in bench.compare_results(new, old)}
    assert set(rows) == {"markov networks/s (n=8)", "V^(L) to 1%: seconds (extrapolated)", "ratio markov/weights",
                         "growth markov: exponent in n"}
    assert rows["markov networks/s (n=8)"]["ratio"] == pytest.approx(0.85)
    assert [k for k, r in rows.items() if r["slower"]] == ["markov networks/s (n=8)",
                                                          "V^(L) to 1%: seconds (extrapolated)"]
    assert not bench.compare_results({"x networks/s": 95.0}, {"x networks/s": 100.0})[0]["slower"]


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pdlt bench: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("content, why", [(None, "cannot read"), (b"{\"results\": {1: 2", "not valid JSON"),
                                          (b"\xff\xfe\x00garbage", "not a text file"),
                                          (b"[1, 2]", "not a pdlt bench --json-out file"),
                                          (b'{"benchmark": "pdlt bench train", "results": {}}', "pdlt bench mc")])
def test_compare_bad_file_is_one_line_exit_2_before_running(content, why, tmp_path, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before --compare was checked")

    monkeypatch.setattr(bench, "bench_mc", must_not_run)
    path = tmp_path / "old.json"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["bench", "mc", "--quick", "--compare", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--compare" in line and why in line and str(path) in line


def test_json_out_in_missing_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "bench_mc", lambda *a, **k: pytest.fail("ran before --json-out was checked"))
    assert cli.main(["bench", "mc", "--quick", "--json-out", str(tmp_path / "no" / "such" / "run.json")]) == 2
    assert "--json-out" in _one_error_line(capsys.readouterr().err)

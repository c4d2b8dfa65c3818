"""The table of observables (pdlt.observables): one record per observable, read by the estimators, MCResult,
compare, plots, sweeps and the CLI; theory and Monte Carlo answer to the same names with the same shapes.

Statistical checks use fixed seeds and |z| < 5 (jackknife over 32 batches: z ~ t_31). Layer 2 is exact at O(1/n)
for any activation (layer 1 is Gaussian, the layer-2 metric is an average of n_1 iid terms), so the Monte Carlo
rows there need no allowance.
"""

import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

import pdlt
from pdlt import observables
from pdlt.comparison import COMPARABLE, QUANTITIES, compare
from pdlt.errors import ParameterError
from pdlt.latex import compile_pdf, document, have_pdflatex
from pdlt.montecarlo.estimators import NORMALIZED_FOR, SCALE_POWER, Statistics, undefined_layers

OBS = observables.OBSERVABLES
X = {1: np.array([[1.0, 0.5]]), 2: np.array([[1.0, 0.5], [-0.3, 0.9]])}
NET = pdlt.MLP("tanh", (2, 8, 8, 1))   # the last layer has width 1: no pair of distinct neurons there


@pytest.fixture(scope="module", params=[1, 2], ids=["d1", "d2"])
def pair(request):
    d = request.param
    return d, pdlt.finite_width(NET, X[d]), pdlt.sample(NET, X[d], 512, seed=0, progress=False)


def test_table_names_and_invariants():
    assert tuple(OBS) == ("two_point", "four_point", "four_point_single", "six_point_single", "vertex",
                          "normalized_vertex", "kurtosis", "normalized_six_point_single")
    for o in OBS.values():
        assert o.theory == o.name and o.kind in observables.KINDS and o.symmetry in observables.SYMMETRIES
        assert (o.symmetry == "diagonal") == (o.rank == 1)
        assert (o.kind == "normalized") == (o.scale_power == 0)
        assert not o.normalized or OBS[o.normalized].kind == "normalized"
        assert (o.kind == "derived") == bool(o.base) and (not o.base or OBS[o.base].kind == "raw")
        assert o.description and o.estimator
    # every raw observable that can leave float64's range names a scale-free companion (two_point: none needed,
    # the theory's K is always representable)
    assert all(o.normalized for o in OBS.values() if o.kind != "normalized" and o.name != "two_point")
    assert observables.names("raw", max_order=1) == QUANTITIES


def test_ntk_family_table():
    ntk = observables.NTK_OBSERVABLES
    assert tuple(ntk) == ("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U", "ntk_variance",
                          "ntk_relative_variance", "dntk_relative") == observables.names(family="ntk")
    assert not set(ntk) & set(OBS)     # one name, one record
    for o in ntk.values():
        assert o.family == "ntk" and o.symmetry in observables.SYMMETRIES and observables.get(o.name) is o
        assert o.description and o.estimator and (o.symmetry == "diagonal") == (o.rank == 1)
    # the tensors carry no index symmetry the table could rely on: all d^4 entries are listed
    assert len(ntk["T"].index_sets(2)) == 16 and ntk["T"].index_sets(2)[5] == (0, 1, 0, 1)
    # the labels spell out the index conventions of the spec: T[a,b,c,d] = n E[ddII_{ijij; a d b c}]
    assert ntk["T"].entry_plain((0, 1, 0, 1)) == "n_(l-1) E[ddII_ijij;0110]"
    assert ntk["B"].entry_plain((0, 1, 0, 1)) == "n_(l-1) E[H_ij;00 H_ij;11]"
    with pytest.raises(ParameterError, match="valid families"):
        observables.names(family="bogus")


def test_get_refuses_unknown_names_listing_the_valid_ones():
    assert observables.get("kurtosis") is OBS["kurtosis"]
    for bad in ("connected_four_point", "Two_point", 3, None):
        with pytest.raises(ParameterError, match="valid names: two_point, four_point, .*kurtosis") as err:
            observables.get(bad)
        assert err.value.setting == "quantity"
    with pytest.raises(ParameterError, match="valid kinds"):
        observables.names("bogus")


def test_index_sets_count_the_distinct_entries():
    # d = 3: 6 pairs, 21 pairs of pairs, C(6, 4) = 15 totally symmetric quadruples, 3 inputs
    counts = {"pair": 6, "pair_of_pairs": 21, "total": 15, "diagonal": 3}
    for o in OBS.values():
        sets = o.index_sets(3)
        assert len(sets) == len(set(sets)) == counts[o.symmetry] and all(len(i) == o.rank for i in sets)


def test_import_is_light():
    code = "import sys, pdlt.observables; assert not {'jax', 'sympy'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_theory_and_mc_answer_to_every_name_with_the_same_shapes(pair):
    d, th, mc = pair
    L = NET.L
    for name, o in OBS.items():
        pred = np.stack([getattr(th, name)(l) for l in range(1, L + 1)])
        est = getattr(mc, name)
        assert pred.shape == o.shape(d, L) == est.scaled_mean.shape == est.scaled_stderr.shape, name
        assert mc.estimate(name).name == name and np.array_equal(mc.estimate(name).scaled_mean, est.scaled_mean,
                                                                 equal_nan=True)
        assert est.normalized == o.normalized
        for l in range(1, L + 1):
            ok = np.isfinite(est.mean[l - 1])
            # NaN exactly where the observable is undefined by definition (layer 3 has width 1)
            assert ok.all() == (l not in o.undefined_at(NET.widths[1:])), (name, l)
    with pytest.raises(ParameterError, match="valid names"):
        mc.estimate("connected_four_point")


def test_undefined_layers_come_from_the_table(pair):
    _, _, mc = pair
    width1 = {o.name for o in OBS.values() if o.undefined_when == "width1"}
    assert width1 == {"four_point", "vertex", "normalized_vertex"}
    assert mc.undefined == {name: (3,) for name in width1} == undefined_layers(NET.widths[1:])
    assert undefined_layers((4, 2)) == {}


def test_theory_names_agree_with_the_old_ones_and_with_each_other(pair):
    d, th, _ = pair
    ar = np.arange(d)
    for l in range(1, NET.L + 1):
        n = NET.widths[l - 1]
        assert np.array_equal(th.four_point(l), th.connected_four_point(l))
        assert np.array_equal(th.four_point_single(l), th.connected_four_point_single(l))
        np.testing.assert_allclose(th.vertex(l), th.V[l - 1], rtol=0, atol=0)
        np.testing.assert_allclose(n * th.four_point(l), th.vertex(l), rtol=1e-14)
        # the normalized ones (computed from the scaled arrays) against the raw accessors over K_aa^p
        K = th.K[l - 1][ar, ar]
        np.testing.assert_allclose(th.normalized_vertex(l), th.four_point(l)[ar, ar, ar, ar] / K**2, rtol=1e-12)
        np.testing.assert_allclose(th.kurtosis(l), th.four_point_single(l)[ar, ar, ar, ar] / K**2, rtol=1e-12)
        assert not th.six_point_single(l).any() and not th.normalized_six_point_single(l).any()


def test_vertex_accessor_matches_the_relu_closed_form():
    """Scale-invariant class at criticality, equal widths n, no bias: V^(l) = nu (l - 1) K*^2 with nu = 5 for
    ReLU (derivations/README.md section 9), so four_point = V/n and kurtosis = 3 nu (l - 1)/n."""
    n, L = 64, 4  # nu (L - 1)/n = 0.23: below the truncation-warning threshold
    x = np.array([[0.8, -0.6, 0.3]])
    th = pdlt.finite_width(pdlt.MLP("relu", (3,) + (n,) * L, C_W=2.0), x)
    K = 2.0 * float(x[0] @ x[0]) / 3
    for l in range(1, L + 1):
        V = 5 * (l - 1) * K**2
        np.testing.assert_allclose(th.vertex(l)[0, 0, 0, 0], V, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(th.four_point(l)[0, 0, 0, 0], V / n, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(th.kurtosis(l)[0], 15 * (l - 1) / n, rtol=1e-10, atol=1e-14)


def test_compare_looks_up_every_comparable_name_and_layer2_is_exact(pair):
    d, th, mc = pair
    assert COMPARABLE == ("two_point", "four_point", "four_point_single", "vertex", "normalized_vertex", "kurtosis")
    c = compare(th, mc, quantities=COMPARABLE, layers=[2], allowance=0)
    assert len(c.rows) == sum(len(OBS[q].index_sets(d)) for q in COMPARABLE)
    worst = max(abs(r.z) for r in c.rows)
    assert worst < 5 and c.n_failed == 0, c.to_markdown()
    # layer 3 (width 1): the distinct-neuron rows are left out, with a caveat saying why
    c3 = compare(th, mc, quantities=("normalized_vertex", "kurtosis"), layers=[3])
    assert {r.quantity for r in c3.rows} == {"kurtosis"}
    assert any(cv.kind == "undefined" and "normalized_vertex" in cv.message for cv in c3.caveats)


def test_compare_refuses_the_six_point_observables_and_unknown_names(pair):
    _, th, mc = pair
    for q in ("six_point_single", "normalized_six_point_single"):
        with pytest.raises(ParameterError, match=r"order 1/n\^2"):
            compare(th, mc, quantities=(q,))
    with pytest.raises(ParameterError, match="unknown quantity"):
        compare(th, mc, quantities=("connected_four_point",))


def test_old_module_constants_still_read_the_same():
    assert QUANTITIES == ("two_point", "four_point", "four_point_single")
    assert Statistics.NAMES == ("two_point", "four_point", "four_point_single", "six_point_single")
    assert Statistics.NORMALIZED == ("normalized_vertex", "kurtosis", "normalized_six_point_single")
    assert tuple(f.name for f in fields(Statistics)) == Statistics.NAMES + Statistics.NORMALIZED
    assert {k: SCALE_POWER[k] for k in Statistics.NAMES} == {"two_point": 1, "four_point": 2,
                                                             "four_point_single": 2, "six_point_single": 3}
    assert NORMALIZED_FOR["vertex"] == NORMALIZED_FOR["four_point"] == "normalized_vertex"
    assert NORMALIZED_FOR["four_point_single"] == "kurtosis" and NORMALIZED_FOR["two_point"] == ""


def _all_labels():
    out = []
    for o in OBS.values():
        idx = tuple(range(o.rank))[::-1]
        out += [o.label_tex, o.entry_tex(idx), o.prediction_tex, o.entry_prediction_tex(idx)]
    return out


def test_labels_substitute_indices():
    o = OBS["four_point"]
    assert o.entry_plain((0, 0, 1, 1)) == "<z_i0 z_i0 z_j1 z_j1>_c" and o.label_plain == "<z_ia z_ib z_jc z_jd>_c"
    assert OBS["two_point"].entry_tex((10, 2)) == "E[z_{10} z_{2}]"
    with pytest.raises(ParameterError, match="2 input indices"):
        OBS["two_point"].entry_tex((0,))


@pytest.mark.skipif(not have_pdflatex(), reason="pdflatex not installed")
def test_labels_compile_as_latex_math(tmp_path):
    body = "\n\n".join(f"${t}$" for t in _all_labels())
    compile_pdf(document(body), tmp_path, "labels", check=True)


def test_labels_parse_as_matplotlib_mathtext():
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    for t in _all_labels():
        parser.parse(f"${t}$")

"""The breakdown map (pdlt.breakdown): the truncated kurtoses against the exact ReLU chain, the 5 % bookkeeping on
hand-made curves, the predicted Monte Carlo error against the jackknife where the tails are light, the heavy-tail
flag where they are not (a negative control: there the jackknife error is too small), and bad input."""

import math

import numpy as np
import pytest

import pdlt
from pdlt.breakdown import BreakdownCase, BreakdownCurve, breakdown_curve, breakdown_table


def test_relu_orders_against_the_exact_product():
    """ReLU at criticality: all orders is 3 (prod (1 + 5/n) - 1) (exact chain), O(1/n) and O(1/n^2) its expansion
    to first and second order in 5/n: 3 [(l - 1) 5/n + C(l - 1, 2) 25/n^2]."""
    c = breakdown_curve(BreakdownCase("relu", "relu", 2.0), 8, ratio_max=1.0)
    l = c.layers
    np.testing.assert_allclose(c.all_orders, 3 * ((1 + 5 / 8) ** (l - 1) - 1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c.order1, 3 * (l - 1) * 5 / 8, rtol=1e-12)
    np.testing.assert_allclose(c.order2, 3 * ((l - 1) * 5 / 8 + (l - 1) * (l - 2) / 2 * 25 / 64), rtol=1e-12)
    assert np.all(c.all_orders_error == 0) and c.mc is None and not c.reliable.any()
    # |O(1/n)/exact - 1| <= 5 % only at l = 2 (exact there): 3 (5/8) 2 vs 3 (1.625^2 - 1) is 30 % low at l = 3
    assert c.holds_until(1) == (2 / 8, "")


def _curve(order1, order2, full, err=None):
    L = len(full)
    z = np.zeros(L)
    return BreakdownCurve(case=BreakdownCase("x", "tanh", 1.0), n=4, L=L, order1=np.array(order1, float),
                          order2=np.array(order2, float), all_orders=np.array(full, float),
                          all_orders_error=z if err is None else np.array(err, float))


def test_holds_until_bookkeeping():
    c = _curve([0, 1, 1.9, 2.5], [0, 1, 2.02, 2.9], [0, 1, 2, 3])
    assert c.holds_until(1) == (2 / 4, "")                        # 5 % off at l = 3
    assert c.holds_until(2) == (4 / 4, "beyond L")                # 1 % and 3.3 %: within to the end
    assert c.holds_until(2, tol=0.02) == (3 / 4, "")
    c = _curve([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], err=[0, 0, 0.05, 0.1])
    assert c.holds_until(1) == (2 / 4, "closure")                 # the reference stops being one first
    with pytest.raises(pdlt.ParameterError) as err:
        c.holds_until(3)
    assert err.value.setting == "order"
    for tol in (float("nan"), -1.0, 0.0, "a", None, True):       # (nan passed every comparison: "beyond L")
        with pytest.raises(pdlt.ParameterError) as err:
            c.holds_until(2, tol)
        assert err.value.setting == "tol"
    row = breakdown_table([c])[0]
    assert row["max_abs_z"] is None and row["mc_points"] == 0


def test_predicted_error_matches_the_jackknife_where_tails_are_light():
    """tanh at criticality, n = 8, L = 12 (G <= C_W is bounded: light tails at any depth): the delta-method error of the kurtosis estimator
    from the closure's first four cumulants of G equals the jackknife's within its own scatter (32 batches: the ratio
    of a correct jackknife error to the truth lies in [0.5, 1.6] except with probability ~1e-5), every point is
    reliable and the all-orders value passes (|z| < 5)."""
    crit = pdlt.criticality("tanh")
    c = breakdown_curve(BreakdownCase("tanh", "tanh", crit.C_W, crit.C_b), 8, 12, n_networks=20_000, seed=3)
    ratio = c.mc_se[1:] / c.mc_predicted_se[1:]
    assert np.all((ratio > 0.5) & (ratio < 1.6)), ratio
    assert c.reliable[1:].all()
    z = c.mc_z()[1:]
    assert np.all(np.abs(z) < 5), z
    # negative control: the O(1/n) kurtosis is rejected at the last layer
    assert abs(c.mc[-1] - c.order1[-1]) > 5 * c.mc_se[-1]


def test_heavy_tails_are_flagged():
    """ReLU at criticality, n = 8, L = 12 (nu l/n = 7): the fourth moment of G is ~1e7 times its square, the
    estimator's predicted error at l = 12 exceeds 100 % of the value, so the point is not reliable (and the
    jackknife error there is far below the predicted one); the first layers, where the tails are still light, are."""
    c = breakdown_curve(BreakdownCase("relu", "relu", 2.0), 8, n_networks=5_000, seed=1)
    assert not c.reliable[-1]
    assert c.mc_predicted_se[-1] > c.all_orders[-1]
    assert c.mc_se[-1] < 0.5 * c.mc_predicted_se[-1]
    assert c.reliable[1] and math.isnan(c.mc_z()[-1])


@pytest.mark.parametrize("kw, setting", [({"n": 1}, "n"), ({"n": 8, "L": 1}, "L"), ({"n": 8, "ratio_max": 0.0}, "ratio_max"),
                                         ({"n": 8, "ratio_max": float("nan")}, "ratio_max"),
                                         ({"n": 8, "n_networks": 1}, "n_networks"), ({"n": 8, "n_networks": -5}, "n_networks"),
                                         ({"n": 8, "M": 3}, "M"), ({"n": 8, "M": True}, "M"),
                                         ({"n": 8, "x": "a"}, "x"), ({"n": 8, "x": [1.0, 2.0]}, "x"),
                                         ({"n": 8, "x": float("inf")}, "x"), ({"n": 10**6}, "n")])
def test_bad_input(kw, setting):
    with pytest.raises(pdlt.ParameterError) as err:
        breakdown_curve(BreakdownCase("tanh", "tanh", 1.0), **kw)
    assert err.value.setting == setting


def test_tables_refuse_what_is_not_a_list_of_curves():
    from pdlt.breakdown import breakdown_latex, breakdown_markdown, breakdown_table

    for fn in (breakdown_table, breakdown_markdown, breakdown_latex):
        for bad in (None, [1], "curves"):                  # (a raw TypeError / AttributeError before)
            with pytest.raises(pdlt.ParameterError) as err:
                fn(bad)
            assert err.value.setting == "curves"


def test_case_must_be_a_breakdown_case():
    with pytest.raises(pdlt.ParameterError) as err:
        breakdown_curve("tanh", 8)
    assert err.value.setting == "case"


def test_no_prediction_of_the_error_where_kappa4_overflows():
    """Where kappa_4 of G leaves float64's range (all_orders then gives None), the predicted Monte Carlo error is
    inf: no point is used, and nothing crashes."""
    from types import SimpleNamespace

    from pdlt.breakdown import _predicted_se

    ao = SimpleNamespace(mean=np.ones(3), var=np.ones(3), kappa3=np.ones(3), kappa4=None)
    assert np.all(np.isinf(_predicted_se(ao, (1, 4, 4, 4), 100, (False, True, True))))

"""The Monte Carlo suite of ``pdlt verify``: theory (order 1/n) against sampled networks.

Width sweeps (1/n fits of the two-point function and the vertex against K, G1, V, with negative controls) for
:data:`MC_CASES`, and a single-width table of every quantity (:func:`pdlt.compare`) for the first case.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..theory.criticality import criticality

__all__ = ["MC_CASES", "mc_suite", "single_index", "n_networks", "NTK_CASES", "ntk_suite", "TRAINING_CASE",
           "training_suite", "bayes_training_suite", "training_sweep_suite", "BREAKDOWN_WIDTHS", "breakdown_suite",
           "INFLUENCE_CASES", "INFLUENCE_WIDTHS", "InfluenceSuite", "influence_suite"]

#: (case label, activation, C_W, C_b, inputs, depth): at and away from criticality, d = 1 and 2
_X2 = ((1.0, 0.5, -0.3), (-0.2, 0.9, 0.4))
MC_CASES = (
    ("tanh, critical (K*=0)", "tanh", 1.0, 0.0, _X2, 6),
    ("relu, critical (scale-inv.)", "relu", 2.0, 0.0, _X2, 6),
    ("gelu, critical (half-stable)", "gelu", None, None, _X2[:1], 6),
    ("tanh, chaotic C_W=1.5, C_b=0.1", "tanh", 1.5, 0.1, _X2, 6),
)


def mc_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False):
    """Width sweeps (1/n fits of the two-point function and the vertex against K, G1, V, with negative
    controls) for :data:`MC_CASES`, plus a single-width table (all quantities, :func:`pdlt.compare`) for
    the first case. Widths 24..96 at depth 6 (L/n <= 0.25; the two tanh cases share their compiled networks),
    40k networks per width, fits a + b/n + c/n^2 (``quick``: the first case, widths 24, 48, 96, 15k networks).
    Returns ``(sweep_rows, single_width_rows, sweeps)``."""
    from ..comparison import Comparison, compare
    from ..sweeps import width_sweep

    cases = MC_CASES[:1] if quick else MC_CASES
    widths, n_samples = ((24, 48, 96), 15_000) if quick else ((24, 32, 48, 64, 96), 40_000)
    sweeps, rows = [], Comparison(())
    for k, (label, act, C_W, C_b, x, depth) in enumerate(cases):
        if C_W is None:
            crit = criticality(act)
            C_W, C_b = crit.C_W, crit.C_b
        t0 = time.perf_counter()
        sw = width_sweep(act, np.array(x), depth, widths, C_W=C_W, C_b=C_b, n_samples=n_samples,
                         seed=seed + 100 * k, progress=progress, case=label)
        sweeps.append(sw)
        rows = rows + sw.rows(order=2)
        echo(f"  sampled {label}: widths {widths}, {n_samples} networks each ({time.perf_counter() - t0:.1f} s)")
    first = sweeps[0]
    k = single_index(first)
    L = first.theory.K.shape[0]
    single = compare(first.theory_at(k), first.results[k], quantities=("two_point", "four_point", "four_point_single"),
                     layers=sorted({2, (L + 1) // 2, L}), case=f"{first.case}, n={first.widths[k]}")
    return rows, single, sweeps


def single_index(sweep) -> int:
    """Which width of the first sweep gets the single-width table and the depth plot: n = 32 if swept."""
    return sweep.widths.index(32) if 32 in sweep.widths else 0


def n_networks(sweep, k: int) -> int:
    """Networks sampled at the ``k``-th width of ``sweep``."""
    return int(sweep.results[k].n_samples)


#: NTK cases: (label, activation, C_W, C_b, lambda_b, lambda_W, inputs, widths). The tanh point is the one of the
#: independent explicit-weight simulation quoted in derivations/README.md section 18 (C_W = 1.2, C_b = 0.1,
#: lambda_b = 0.7, lambda_W = 1.3), here with two inputs.
NTK_CASES = (
    ("tanh, C_W=1.2, C_b=0.1", "tanh", 1.2, 0.1, 0.7, 1.3, _X2, (3, 8, 8, 8)),
)
#: the NTK at every width: a bias-free critical ReLU network, one input, narrow on purpose (the O(1/n) variance is off
#: by more than the Monte Carlo's error there), against its exact chain
#: (:func:`pdlt.theory.relu_ntk.relu_ntk_all_orders`): (label, C_W, lambda_b, lambda_W, inputs, widths)
NTK_EXACT_CASE = ("relu, C_W=2, C_b=0", 2.0, 0.7, 1.3, ((1.0, 0.3),), (2, 6, 6, 6, 6, 6))
#: the NTK at order 1/n^2 (:func:`pdlt.theory.ntk_nnlo.ntk_nnlo`): the first of :data:`NTK_CASES` sampled again with
#: this many networks (full, quick; the same compiled network), where its O(1/n) NTK variance is resolvably off
NTK_NNLO_SAMPLES = (50_000, 20_000)
#: the NTK width sweep (1/n fits at layer 3): widths and networks per width; run by ``ntk_suite(sweep=True)``
NTK_SWEEP = ((8, 16, 32), 4_500)


def ntk_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False, sweep: bool = False):
    """The NTK section of ``pdlt verify``, for each of :data:`NTK_CASES`: one NTK Monte Carlo run (exact jets of sampled
    networks) compared at layer 2, where every O(1/n) NTK statistic is exact at any width (each tensor's diagonal and
    mixed entries; the mean NTK), with the negative control that the frozen NTK's zero variance is rejected at every
    layer >= 2 where the fluctuation is resolved. Then :data:`NTK_EXACT_CASE`: the mean and variance of the NTK of a
    ReLU network and its A, B, D, F (entries aaaa) against their exact values, at the layers where the estimates' errors
    are honest (:func:`_ntk_exact_rows`), with the O(1/n) variance, A and B as negative controls where they differ by
    more than 8 Monte Carlo errors. The first case is sampled again (:data:`NTK_NNLO_SAMPLES`) for its NTK mean,
    variance, one-input B and the dNTK's one-input P, Q and relative size at layers >= 3 against their O(1/n^2) values
    (:func:`_ntk_second_order_rows`), and its entries of two inputs of the NTK mean, B and F against their O(1/n) values
    with the derived bound as allowance (:func:`_ntk_derived_bound_rows`). ``sweep=True`` adds the NTK width sweep of
    :data:`NTK_SWEEP` at layer 3 (1/n fits: ``a`` against Theta and the n-scaled tensors, ``b`` against Theta1, and the
    frozen-NTK controls; about a minute on 2 cores). Returns ``(rows, runs, sweeps)``."""
    from ..architecture import MLP
    from ..comparison import Comparison, Row, compare
    from ..montecarlo import sample_ntk
    from ..sweeps import ntk_width_sweep
    from ..theory.ntk import ntk

    n_samples = 1_500 if quick else 4_000
    rows, runs, sweeps = Comparison(()), [], []
    # a readable table: per tensor the diagonal and the mixed entries that pair the inputs in each way
    keep = {(0, 0), (0, 1), (1, 1), (0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0), (0,), (1,)}
    for k, (label, act, C_W, C_b, lb, lw, x, widths) in enumerate(NTK_CASES):
        t0 = time.perf_counter()
        x = np.array(x)
        net = MLP(act, widths, C_W=C_W, C_b=C_b)
        th = ntk(net, x, lambda_b=lb, lambda_W=lw)
        mc = sample_ntk(net, x, n_samples, seed=seed + 1000 + 100 * k, lambda_b=lb, lambda_W=lw, progress=progress)
        runs.append((label, th, mc))
        case = f"{label}, n={widths[1]}"
        exact = compare(th, mc, quantities=("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U",
                                            "ntk_variance"), layers=[2], case=case)
        rows = rows + Comparison(tuple(r for r in exact.rows if r.inputs in keep), exact.caveats)
        var = mc.ntk_variance
        control = []
        for l in range(2, net.L + 1):
            for a in range(x.shape[0]):
                m, s = float(var.mean[l - 1, a]), float(var.stderr[l - 1, a])
                if m > 8 * s:   # resolvable with margin: the frozen NTK (no fluctuation) must be rejected
                    control.append(Row("control: frozen NTK, Var = 0", l, (a,), 0.0, m, s, 0.0, 5.0, case,
                                       expect_reject=True))
        rows = rows + Comparison(tuple(control))
        echo(f"  sampled NTK {label}: widths {widths}, {n_samples} networks ({time.perf_counter() - t0:.1f} s)")
        if k == 0:
            rows = rows + _ntk_second_order_rows(th, label, NTK_NNLO_SAMPLES[1 if quick else 0], seed, echo, progress)
        if sweep:
            t0 = time.perf_counter()
            sw_widths, sw_n = NTK_SWEEP
            sw = ntk_width_sweep(act, x, len(widths) - 1, sw_widths, C_W=C_W, C_b=C_b, lambda_b=lb, lambda_W=lw,
                                 n_samples=sw_n, seed=seed + 2000 + 100 * k, progress=progress, case=label)
            sweeps.append(sw)
            rows = rows + sw.rows(order=1)
            echo(f"  NTK width sweep {label}: widths {sw_widths}, {sw_n} networks each "
                 f"({time.perf_counter() - t0:.1f} s)")
    rows = rows + _ntk_exact_rows(n_samples, seed, echo, progress)
    return rows, runs, sweeps


def _ntk_exact_rows(n_samples: int, seed: int, echo, progress: bool):
    """The rows of :data:`NTK_EXACT_CASE` (:func:`ntk_suite`)."""
    from ..architecture import MLP
    from ..comparison import Comparison, Row
    from ..errors import TruncationWarning
    from ..montecarlo import sample_ntk
    from ..theory.ntk import ntk
    from ..theory.relu_ntk import relu_ntk_all_orders

    t0 = time.perf_counter()
    label, C_W, lb, lw, x, widths = NTK_EXACT_CASE
    x = np.array(x)
    net = MLP("relu", widths, C_W=C_W)
    with warnings.catch_warnings():
        # narrow on purpose: the O(1/n) truncation warning is the point of the control, not news
        warnings.simplefilter("ignore", TruncationWarning)
        ex, th = relu_ntk_all_orders(net, x, lb, lw), ntk(net, x, lambda_b=lb, lambda_W=lw)
        th.prediction("ntk_variance", 2)                # (the O(1/n) statistics are computed here, under the filter)
    mc = sample_ntk(net, x, n_samples, seed=seed + 3000, lambda_b=lb, lambda_W=lw, progress=progress)
    case = f"{label}, n={widths[1]}, exact"
    out, mean, var = [], mc.ntk_mean, mc.ntk_variance
    # Deep in this narrow network the estimates of the variance and of products of NTK entries are heavy-tailed and
    # their errors unreliable (measured over seeds): with 4000 networks the z of D and F at layers 4-5 scatter by 1.3
    # and reach -5.6, those of A and B by at most 1.2 to layer 4; with 1500 (quick) the variance's reach -6.2 at
    # layers 4-5, D and F -6.3 at layer 3, A and B -4.8. So each statistic's rows stop where its estimate is still
    # honest (full: the variance at L, A and B at 4, D and F at 3; quick: 3, and no D, F), and the controls are the
    # variance, A and B (a control of a heavy-tailed estimate, chosen by its own error, fails where that error happens
    # to be low). Then no row failed in 300 seeds (full; one control did) and 200 (quick)
    full = n_samples >= 4_000
    last = {"ntk_variance": net.L if full else 3, "A": 4 if full else 3, "B": 4 if full else 3,
            "D": 3 if full else 0, "F": 3 if full else 0}
    # (name, exact values, the entry of one input, its estimate; A-F over two outputs: the one-input entries aaaa)
    stats = [("ntk_variance", ex.variance, (0,), var)] + [(q, getattr(ex, q), (0,) * 4, mc.estimate(q))
                                                          for q in "ABDF" if last[q]]
    for l in range(2, net.L + 1):
        out.append(Row("ntk_mean", l, (0, 0), float(ex.Theta[l - 1, 0]), float(mean.mean[l - 1, 0, 0]),
                       float(mean.stderr[l - 1, 0, 0]), case=case))
        for q, exact, idx, est in stats:
            if l > last[q]:
                continue
            m, s = float(est.mean[(l - 1,) + idx]), float(est.stderr[(l - 1,) + idx])
            first = float(th.prediction(q, l)[idx])
            out.append(Row(q, l, idx, float(exact[l - 1, 0]), m, s, case=case))
            if q not in "DF" and abs(float(exact[l - 1, 0]) - first) > 8 * s:   # resolvable: O(1/n) must fail
                name = "variance" if q == "ntk_variance" else q
                out.append(Row(f"control: O(1/n) {name}", l, idx, first, m, s, case=case, expect_reject=True))
    echo(f"  sampled NTK {label} against its exact chain: widths {widths}, {n_samples} networks "
         f"({time.perf_counter() - t0:.1f} s)")
    return Comparison(tuple(out))


def _ntk_second_order_rows(th, label: str, n_samples: int, seed: int, echo, progress: bool):
    """The O(1/n^2) rows of :func:`ntk_suite` for the network of NTK theory ``th``, sampled again with ``n_samples``
    networks: at layers 3 to L, per input, the NTK mean and variance, the one-input B, the dNTK's one-input P and Q
    and its relative size ``E[dH_iii z_i]/E[H_ii]^2`` against their O(1/n^2) values
    (:func:`pdlt.theory.ntk_nnlo.ntk_nnlo` with the fourth copy), with the bound on the orders beyond (``c^2 |T1|``,
    derivations/README.md section 17.2) as allowance, and the O(1/n) variance and Q as controls where they are off by
    more than 8 Monte Carlo errors."""
    from ..comparison import Comparison, Row
    from ..errors import TruncationWarning
    from ..montecarlo import sample_ntk
    from ..theory.ntk_nnlo import ntk_nnlo
    from ..theory.truncation import next_order_bound, ntk_expansion_parameter, set_ntk_second_order

    t0 = time.perf_counter()
    net, x, lb, lw = th.net, th.x, th.lambda_b, th.lambda_W
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)          # (narrow on purpose)
        so = ntk_nnlo(net, x, lb, lw, dntk=True)
    set_ntk_second_order(th, so)                # (the derived-bound rows' compare reads it from th: not computed twice)
    mc = sample_ntk(net, x, n_samples, seed=seed + 4000, lambda_b=lb, lambda_W=lw, progress=progress)
    case = f"{label}, n={net.widths[1]}, 1/n^2"
    out = []
    for l in range(3, net.L + 1):
        n, i = float(net.widths[l - 1]), l - 1
        c2 = next_order_bound(ntk_expansion_parameter(th, l)) ** 2
        for a in range(x.shape[0]):
            st = so.layer(l, a)
            stats = [("ntk_mean", (a, a), so.mean(l)[a], so.Theta1[i, a] / n, mc.ntk_mean),
                     ("ntk_variance", (a,), so.variance(l)[a], so.variance(l, order=1)[a], mc.ntk_variance),
                     ("B", (a,) * 4, so.B[i, a] + so.B2[i, a] / n, so.B[i, a], mc.estimate("B")),
                     ("P", (a,) * 4, st["P"] + st["P2"] / n, st["P"], mc.estimate("P")),
                     ("Q", (a,) * 4, st["Q"] + st["Q2"] / n, st["Q"], mc.estimate("Q")),
                     ("dntk_relative", (a,), so.dntk_relative(l)[a], so.dntk_relative(l, order=1)[a],
                      mc.dntk_relative)]
            for q, idx, value, first, est in stats:
                m, s = float(est.mean[(i,) + idx]), float(est.stderr[(i,) + idx])
                out.append(Row(q, l, idx, float(value), m, s, c2 * abs(float(first)), case=case,
                               first_order=float(first)))
            controls = [row for row in stats if row[0] in ("ntk_variance", "Q")]
            for q, idx, value, first, est in controls:       # resolvable: the O(1/n) value must fail
                m, s = float(est.mean[(i,) + idx]), float(est.stderr[(i,) + idx])
                if abs(float(value) - float(first)) > 8 * s:
                    name = "variance" if q == "ntk_variance" else q
                    out.append(Row(f"control: O(1/n) {name}", l, idx, float(first), m, s, case=case,
                                   expect_reject=True))
    echo(f"  sampled NTK {label} again against its O(1/n^2) values: {n_samples} networks "
         f"({time.perf_counter() - t0:.1f} s)")
    return Comparison(tuple(out)) + _ntk_derived_bound_rows(th, mc, label)


def _ntk_derived_bound_rows(th, mc, label: str):
    """The entries of two inputs of the NTK mean, B, F and the dNTK's P, Q at layers >= 3 of the run of
    :func:`_ntk_second_order_rows`, against their O(1/n) values with the derived bound as allowance
    (:func:`pdlt.compare`, :func:`pdlt.theory.truncation.ntk_truncation_error`), those that it resolves (an allowance
    above the entry's own O(1/n) term tests nothing; a failed row is kept whatever its allowance), and the control that
    the infinite-width B (0, no fluctuation) is rejected beyond that allowance where the theory puts B_0101 more than 8
    Monte Carlo errors beyond it."""
    from ..comparison import Comparison, Row, compare

    keep = {(0, 1), (0, 1, 0, 1), (0, 0, 1, 1), (0, 1, 1, 0)}
    layers = list(range(3, th.net.L + 1))
    case = f"{label}, n={th.net.widths[1]}, derived bound"
    cmp = compare(th, mc, quantities=("ntk_mean", "B", "F", "P", "Q"), layers=layers, case=case)
    out = [r for r in cmp.rows if r.inputs in keep and (r.resolved or not r.ok)]
    for l in layers:
        allow = float(th.truncation_error("B", l)[0, 1, 0, 1])
        m, s = float(mc.B.mean[l - 1][0, 1, 0, 1]), float(mc.B.stderr[l - 1][0, 1, 0, 1])
        if abs(float(th.prediction("B", l)[0, 1, 0, 1])) > allow + 8 * s:
            out.append(Row("control: B = 0", l, (0, 1, 0, 1), 0.0, m, s, allow, case=case, expect_reject=True))
    return Comparison(tuple(out), cmp.caveats)


#: the trained-network section: (label, activation, C_W, C_b, lambda_b, lambda_W, x_train, y_train, x_test). The
#: Bayes-vs-training table uses three training inputs at depth 3 and width 8 (where finite width visibly separates
#: the two); the width sweep the first two training inputs at depth 2 (cheap networks, widths up to 128: the O(1/n^2)
#: terms of training are large at small widths, derivations/README.md section 19).
TRAINING_CASE = ("tanh, C_W=1.2, C_b=0.1", "tanh", 1.2, 0.1, 0.7, 1.3,
                 ((1.0, 0.4, -0.3), (-0.5, 0.8, 0.2), (0.3, -0.9, 0.5)), (0.9, -0.6, 0.4),
                 ((0.6, -0.3, -0.8), (0.1, 0.5, 0.5)))
#: the training width sweep: widths, networks per width, GD steps, eta as a fraction of the stability limit
TRAINING_SWEEP = ((16, 32, 64, 128), 3_000, 100, 0.4)


def training_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False):
    """The trained-network section of ``pdlt verify`` (:data:`TRAINING_CASE`): :func:`bayes_training_suite`, then
    :func:`training_sweep_suite`. Returns ``(rows, bayes_vs_training, sweeps)``."""
    bvt = bayes_training_suite(quick, seed=seed, echo=echo, progress=progress)
    rows, sweeps = training_sweep_suite(quick, seed=seed, echo=echo, progress=progress)
    return rows, bvt, sweeps


def bayes_training_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False):
    """Bayes against training side by side for :data:`TRAINING_CASE` at width 8
    (:func:`pdlt.bayes_vs_training.bayes_vs_training`: theory at infinite width and O(1/n), reweighted and trained
    networks). Returns the :class:`~pdlt.bayes_vs_training.BayesVsTraining`."""
    import warnings

    from ..architecture import MLP
    from ..bayes_vs_training import bayes_vs_training
    from ..errors import TruncationWarning

    label, act, C_W, C_b, lb, lw, xa, ya, xb = TRAINING_CASE
    xa, ya, xb = np.array(xa), np.array(ya), np.array(xb)
    t0 = time.perf_counter()
    n_train = 1_000 if quick else 2_000
    net = MLP(act, (xa.shape[1], 8, 8, 1), C_W=C_W, C_b=C_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)     # n = 8 on purpose: the table shows the 1/n terms
        bvt = bayes_vs_training(net, xa, ya, xb, n_bayes=8 * n_train, n_train=n_train, eta_fraction=0.3, steps=200,
                                seed=seed + 3000, progress=progress)
    echo(f"  Bayes vs training {label}: L = 3, n = 8, {n_train} trained networks per setting "
         f"({time.perf_counter() - t0:.1f} s)")
    return bvt


def training_sweep_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False):
    """The full run's width sweep of gradient descent at depth 2 for :data:`TRAINING_CASE` (1/n fits of the trained
    mean, the feature-learning shift and the NTK change against :func:`pdlt.train_prediction`, with controls);
    nothing in the quick run. Returns ``(rows, sweeps)``."""
    from ..architecture import MLP
    from ..comparison import Comparison
    from ..sweeps import train_width_sweep
    from ..theory.training import stability_limit

    rows, sweeps = Comparison(()), []
    if quick:
        return rows, sweeps
    label, act, C_W, C_b, lb, lw, xa, ya, xb = TRAINING_CASE
    xa, ya, xb = np.array(xa), np.array(ya), np.array(xb)
    t0 = time.perf_counter()
    widths, n_samples, steps, frac = TRAINING_SWEEP
    x2, y2, x1 = xa[:2], ya[:2], xb[:1]
    limit = stability_limit(MLP(act, (xa.shape[1], widths[0], 1), C_W=C_W, C_b=C_b), x2, lb, lw)
    sw = train_width_sweep(act, x2, y2, x1, 2, widths, C_W=C_W, C_b=C_b, lambda_b=lb, lambda_W=lw,
                           eta=frac * limit, steps=steps, n_samples=n_samples, seed=seed + 4000,
                           progress=progress, case=label)
    sweeps.append(sw)
    rows = rows + sw.rows(order=2)
    echo(f"  training width sweep {label}: L = 2, widths {widths}, {n_samples} networks each "
         f"({time.perf_counter() - t0:.1f} s)")
    return rows, sweeps


#: the widths of the breakdown map (depths up to 1.5 n)
BREAKDOWN_WIDTHS = (8, 16)


def breakdown_suite(quick: bool = False, *, seed: int = 0, echo=print, z_max: float = 5.0):
    """The breakdown map of ``pdlt verify`` (:mod:`pdlt.breakdown`): tanh, ReLU and GELU at criticality and chaotic
    tanh at :data:`BREAKDOWN_WIDTHS`, l/n up to 1.5, 20k networks per curve (``quick``: critical tanh, n = 8 only,
    5k networks).
    Returns ``(curves, n_failed)``: a curve fails when the all-orders value is more than ``z_max`` standard errors
    from a reliable Monte Carlo point."""
    from ..breakdown import breakdown_cases, breakdown_curve

    widths, N = ((8,), 5_000) if quick else (BREAKDOWN_WIDTHS, 20_000)
    cases = breakdown_cases()[:1] if quick else breakdown_cases()
    curves, failed = [], 0
    for k, case in enumerate(cases):
        t0 = time.perf_counter()
        for n in widths:
            c = breakdown_curve(case, n, ratio_max=1.5, n_networks=N, seed=seed + 10 * k + n)
            z = c.mc_z()
            bad = np.isfinite(z) & (np.abs(z) > z_max)
            failed += int(bad.any())
            curves.append(c)
        echo(f"  {case.label}: widths {widths}, L = 1.5 n, {N} networks each ({time.perf_counter() - t0:.1f} s)")
    return curves, failed


#: the influence section: (label, activation, C_W, C_b); seven particles on a circle through the test input, noise
#: variance 0.1, L = 4 (three hidden layers), widths 16, 32 and 64
INFLUENCE_CASES = (("tanh, critical", "tanh", 1.0, 0.0), ("tanh, ordered C_W=0.8, C_b=0.3", "tanh", 0.8, 0.3))
INFLUENCE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class InfluenceSuite:
    """The influence section of ``pdlt verify``: ``rows`` (a :class:`~pdlt.comparison.Comparison`), one
    :class:`~pdlt.theory.locality.LocalityProfile` per case (``profiles``, O(1/n) coefficients, the network at the
    smallest width), the Monte Carlo influences at the last layer and the smallest width (``mc``: per case
    ``{L: (mean, stderr)}``), ``labels`` and the number of networks per run."""

    rows: object
    profiles: tuple
    mc: tuple
    labels: tuple
    n_networks: int
    provenance: tuple = ()


def influence_suite(quick: bool = False, *, seed: int = 0, echo=print) -> InfluenceSuite:
    """Influence of seven training particles on a circle on the prediction at the test input (derivations/README.md
    §20) for :data:`INFLUENCE_CASES` at :data:`INFLUENCE_WIDTHS`, 16k networks per width (``quick``: the first case,
    4k): per particle, ``n (MC - infinite width)`` at the three widths extrapolated to ``c1 + c2/n + c3/n^2`` (errors
    propagated)
    against the predicted 1/n coefficient; controls: the infinite-width influence rejected at the smallest width,
    and b = 0 rejected, where the 1/n effect is resolvable with margin. The extrapolation has no degree of freedom
    left (it removes the O(1/n^3) term of the influence rather than testing it; the slow tests fit four widths)."""
    import warnings

    from ..architecture import MLP
    from ..comparison import Comparison, Row
    from ..errors import TruncationWarning
    from ..fits import inverse_width_fit
    from ..montecarlo.influence import influence_mc
    from ..theory.locality import locality_profile

    x0, x1 = np.array([1.2, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    depth, n_train, noise, z_max = 3, 7, 0.1, 5.0
    N = 4_000 if quick else 16_000
    cases = INFLUENCE_CASES[:1] if quick else INFLUENCE_CASES
    rows, profiles, mcs, prov = [], [], [], []
    for k, (label, act, C_W, C_b) in enumerate(cases):
        t0 = time.perf_counter()
        nets = [MLP(act, (3,) + (n,) * depth + (1,), C_W=C_W, C_b=C_b) for n in INFLUENCE_WIDTHS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)     # the rows test the 1/n coefficient itself
            # uniform widths: the 1/n coefficients do not depend on n, one profile serves both widths
            prof = locality_profile(nets[0], x0, x1, n_train=n_train, noise_var=noise, order=1)
        L = nets[0].L
        runs = [influence_mc(net, prof.x_train, np.zeros(n_train), x0[None], noise_var=noise, n_samples=N,
                             seed=seed + 7000 + 10 * k + i, wrt="y") for i, net in enumerate(nets)]
        means = [r.mean_dy.mean[0, 0, :, 0] for r in runs]
        ses = [r.mean_dy.stderr[0, 0, :, 0] for r in runs]
        inf, pred = prof.infinite[prof.row(L)], prof.correction[prof.row(L)]
        n_min = INFLUENCE_WIDTHS[0]
        for a in range(n_train):
            vals = [n * (m[a] - inf[a]) for n, m in zip(INFLUENCE_WIDTHS, means)]
            errs = [n * s[a] for n, s in zip(INFLUENCE_WIDTHS, ses)]
            fit = inverse_width_fit(INFLUENCE_WIDTHS, vals, errs, order=2)
            rows.append(Row("influence b", L, (a,), float(pred[a]), float(fit.coef[0]), float(fit.stderr[0]), 0.0,
                            z_max, label))
            if abs(pred[a]) > (z_max + 3) * fit.stderr[0]:
                # the extrapolated coefficient resolves the prediction: b = 0 (no 1/n effect) must be rejected
                rows.append(Row("control: b = 0", L, (a,), 0.0, float(fit.coef[0]), float(fit.stderr[0]), 0.0, z_max,
                                label, expect_reject=True))
            if abs(pred[a]) / n_min > (z_max + 3) * ses[0][a]:
                rows.append(Row("control: infinite width", L, (a,), float(inf[a]), float(means[0][a]),
                                float(ses[0][a]), 0.0, z_max, f"{label}, n={n_min}", expect_reject=True))
        profiles.append(prof)
        mcs.append({L: (means[0], ses[0])})
        prov.append({"case": label, "activation": act, "C_W": C_W, "C_b": C_b, "L": L, "widths": list(INFLUENCE_WIDTHS),
                     "x0": x0.tolist(), "x1": x1.tolist(), "n_train": n_train, "noise_var": noise, "n_networks": N,
                     "seeds": [seed + 7000 + 10 * k + i for i in range(len(nets))]})
        echo(f"  influence {label}: L = {L}, widths {INFLUENCE_WIDTHS}, {N} networks each "
             f"({time.perf_counter() - t0:.1f} s)")
    return InfluenceSuite(rows=Comparison(tuple(rows)), profiles=tuple(profiles), mc=tuple(mcs),
                          labels=tuple(c[0] for c in cases), n_networks=N, provenance=tuple(prov))

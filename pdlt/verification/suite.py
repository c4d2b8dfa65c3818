"""The Monte Carlo suite of ``pdlt verify``: theory (order 1/n) against sampled networks.

Width sweeps (1/n fits of the two-point function and the vertex against K, G1, V, with negative controls) for
:data:`MC_CASES`, and a single-width table of every quantity (:func:`pdlt.compare`) for the first case.
"""

from __future__ import annotations

import time

import numpy as np

from ..theory.criticality import criticality

__all__ = ["MC_CASES", "mc_suite", "single_index", "n_networks"]

#: (case label, activation, C_W, C_b, inputs, depth): at and away from criticality, d = 1 and 2
_X2 = ((1.0, 0.5, -0.3), (-0.2, 0.9, 0.4))
MC_CASES = (
    ("tanh, critical (K*=0)", "tanh", 1.0, 0.0, _X2, 6),
    ("relu, critical (scale-inv.)", "relu", 2.0, 0.0, _X2, 6),
    ("gelu, critical (half-stable)", "gelu", None, None, _X2[:1], 6),
    ("tanh, chaotic C_W=1.5, C_b=0.1", "tanh", 1.5, 0.1, _X2, 5),
)


def mc_suite(quick: bool = False, *, seed: int = 0, echo=print, progress: bool = False):
    """Width sweeps (1/n fits of the two-point function and the vertex against K, G1, V, with negative
    controls) for :data:`MC_CASES`, plus a single-width table (all quantities, :func:`pdlt.compare`) for
    the first case. Widths 24..96 at depth 5-6 (L/n <= 0.25), 60k networks per width, fits a + b/n + c/n^2
    (``quick``: the first case, widths 24, 48, 96, 15k networks). Returns ``(sweep_rows, single_width_rows, sweeps)``."""
    from ..comparison import Comparison, compare
    from ..sweeps import width_sweep

    cases = MC_CASES[:1] if quick else MC_CASES
    widths, n_samples = ((24, 48, 96), 15_000) if quick else ((24, 32, 48, 64, 96), 60_000)
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

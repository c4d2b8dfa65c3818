"""Where does the 1/n expansion hold? The breakdown map of a neuron's kurtosis against depth over width.

For one input, a neuron's excess kurtosis is 3 Var G/(E G)^2 (G the layer's metric): 0 at infinite width, about
3 nu l/n at order 1/n. This example computes it for tanh, ReLU and GELU at criticality and for tanh in the chaotic
phase, at two widths and l/n up to 1.5, at order 1/n, at order 1/n^2 and to all orders (the metric chain closed by
Gauss rules), against Monte Carlo of sampled networks; prints the width-depth table of where each truncated order
stays within 5 %, and draws the map.

Run: python examples/breakdown_map.py [OUT_DIR] [N_NETWORKS] [WIDTHS]   (defaults: breakdown-out, 50000, 8,16)
"""
import sys
from pathlib import Path

import numpy as np

import pdlt
from pdlt.breakdown import breakdown_table

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("breakdown-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000
widths = tuple(int(w) for w in sys.argv[3].split(",")) if len(sys.argv) > 3 else (8, 16)
out.mkdir(parents=True, exist_ok=True)

curves = []
for k, case in enumerate(pdlt.breakdown_cases()):
    for n in widths:
        c = pdlt.breakdown_curve(case, n, ratio_max=1.5, n_networks=n_networks, seed=k)
        curves.append(c)
        z = c.mc_z()
        ok = np.isfinite(z)
        # the all-orders value is the reference: it must agree with every Monte Carlo point that can be trusted
        assert not ok.any() or np.abs(z[ok]).max() < 5, (case.label, n, z)
        print(f"{case.label:>26}, n = {n:2d}: kurtosis at l = {c.L}: O(1/n) {c.order1[-1]:8.3f}, O(1/n^2) "
              f"{c.order2[-1]:8.3f}, all orders {c.all_orders[-1]:8.3f} +- {c.all_orders_error[-1]:.1g}, "
              f"Monte Carlo {c.mc[-1]:8.3f} +- {c.mc_se[-1]:.2g}" + ("" if c.reliable[-1] else " (heavy-tailed)"))

print("\nwithin 5 % of all orders up to l/n (>= : to the deepest layer computed):")
for r in breakdown_table(curves):
    cell = lambda v: (">= " if v[1] else "") + f"{v[0]:.2f}"
    print(f"  {r['case']:>26}, n = {r['n']:2d}: O(1/n) {cell(r['order1']):>8}, O(1/n^2) {cell(r['order2']):>8}")

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    plots.breakdown_plot(curves, path=out / "breakdown.png",
                         title=f"Where the 1/n expansion holds: one input, L = 1.5 n, {n_networks} networks per curve")
    print(f"wrote {out / 'breakdown.png'}")

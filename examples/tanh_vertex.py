"""The four-point vertex of critical tanh networks against Monte Carlo, with a plot.

PDLT ch. 5: at criticality the normalized vertex V^(l)/(n K^2) grows like (2/3) l/n for the K*=0 class, so the
depth-to-width ratio l/n controls the non-Gaussianity. Here: theory (O(1/n)) for every layer, Monte Carlo of
sampled networks (markov sampler, jackknife errors), and the comparison table.

Run: python examples/tanh_vertex.py [OUT_DIR] [N_NETWORKS]   (defaults: tanh-vertex-out, 20000)
"""
import sys
from pathlib import Path

import numpy as np

import pdlt

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tanh-vertex-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
out.mkdir(parents=True, exist_ok=True)

crit = pdlt.criticality("tanh")
n, L = 32, 8
net = pdlt.MLP("tanh", widths=(3,) + (n,) * L, C_W=crit.C_W, C_b=crit.C_b)
x = np.array([[1.0, 0.5, -0.3]])

th = pdlt.finite_width(net, x)
mc = pdlt.sample(net, x, n_networks, seed=0)

print(f"{'l':>3} {'theory V/(nK^2)':>16} {'Monte Carlo':>22}")
for l in range(1, L + 1):
    K2 = th.K[l - 1, 0, 0] ** 2
    m, s = mc.four_point.mean[l - 1, 0, 0, 0, 0] / K2, mc.four_point.stderr[l - 1, 0, 0, 0, 0] / K2
    print(f"{l:3d} {th.normalized_vertex(l)[0]:16.5f} {m:14.5f} +- {s:.5f}")

cmp = pdlt.compare(th, mc, quantities=("four_point",), case="tanh")
print(f"compare: {cmp.summary()}")
assert cmp.ok, cmp.to_markdown()
# the vertex is resolved: the Gaussian (infinite-width) value 0 is rejected at the last layer
assert mc.four_point.mean[-1, 0, 0, 0, 0] > 5 * mc.four_point.stderr[-1, 0, 0, 0, 0]

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    plots.vertex_vs_depth(th, mc, path=out / "tanh_vertex.png", title="critical tanh")
    print(f"wrote {out / 'tanh_vertex.png'}")

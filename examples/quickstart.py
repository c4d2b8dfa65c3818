"""Quickstart: criticality, the kernel flow of a small dataset, the delta-expansion, and finite width:
the 1/n theory against Monte Carlo of sampled networks.

Run: python examples/quickstart.py [OUT_DIR]
"""
import sys
from pathlib import Path

import numpy as np

import pdlt
from pdlt import symbolic as sym

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-out")
out.mkdir(parents=True, exist_ok=True)

# 1. the critical initialization of tanh and its large-depth behaviour
crit = pdlt.criticality("tanh")
print(f"tanh: class {crit.universality}, C_b = {crit.C_b}, C_W = {crit.C_W}, p_perp = {crit.exponents['p_perp']}")
print("K^(l) at large depth:", sym.asymptotics("tanh").leading["K"])

# 2. the leading-order kernel of three datapoints through a deep critical network
x = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 2.0]])
net = pdlt.MLP("tanh", widths=(3,) + (64,) * 30, C_W=crit.C_W, C_b=crit.C_b)
flow = pdlt.kernel_flow(net, x)
rho = flow.correlation()
print(f"K^(30)_aa = {np.diagonal(flow[30]).round(5)},  rho^(30)_12 = {rho[-1, 0, 1]:.6f}")
assert np.all(np.diff(flow.K[:, 0, 0]) < 0), "critical tanh: K decreases toward K* = 0"

# 3. two nearly identical inputs: the delta-expansion instead of a singular 2x2 kernel
d = pdlt.delta_flow(net, x0=x[0], dx=1e-6 * (x[1] - x[0]))
print(f"ddK_[2]^(30)/K00^(30) = {d.ddK2[-1] / d.K00[-1]:.3e}  (tends to a constant: p_perp = 1)")

# 4. finite width: the O(1/n) theory (K + G1/n, V/n) against 20k sampled networks of width 32
small = pdlt.MLP("tanh", widths=(3,) + (32,) * 5, C_W=crit.C_W, C_b=crit.C_b)
th = pdlt.finite_width(small, x[:2])
mc = pdlt.sample(small, x[:2], n_samples=20_000, seed=0)
cmp = pdlt.compare(th, mc, case="tanh, n=32")
print(f"theory vs Monte Carlo: {cmp.summary()}")
print(f"normalized vertex at l=5: theory {th.normalized_vertex(5)[0]:.4f}, "
      f"MC {mc.four_point.mean[4, 0, 0, 0, 0] / th.K[4, 0, 0] ** 2:.4f}")
assert cmp.ok, cmp.to_markdown()

# the kernel flow as a table: one row per layer, the distinct entries K_ab (a <= b) and the correlations rho_ab
pairs = [(a, b) for a in range(flow.d) for b in range(a, flow.d)]
corr = [(a, b) for a, b in pairs if a < b]
head = ["l"] + [f"K_{a + 1}{b + 1}" for a, b in pairs] + [f"rho_{a + 1}{b + 1}" for a, b in corr]
lines = [f"# critical tanh, widths {net.widths[0]}, {net.widths[1]} x {net.L}, C_W = {crit.C_W}, C_b = {crit.C_b}; "
         f"inputs x_1..x_{flow.d} = {x.tolist()}",
         "# leading-order kernel K^(l)_ab = E[z_a z_b] at infinite width and rho_ab = K_ab / sqrt(K_aa K_bb)",
         " ".join(f"{h:>12}" if i else f"{h:>3}" for i, h in enumerate(head))]
for l in range(1, net.L + 1):
    vals = [flow.K[l - 1, a, b] for a, b in pairs] + [rho[l - 1, a, b] for a, b in corr]
    lines.append(f"{l:>3} " + " ".join(f"{v:12.6g}" for v in vals))
(out / "quickstart.txt").write_text("\n".join(lines) + "\n")
(out / "comparison.md").write_text(cmp.to_markdown())
print("ok")

"""Quickstart: criticality, the kernel flow of a small dataset, and the delta-expansion.

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

(out / "quickstart.txt").write_text(f"{flow.K.tolist()}\n")
print("ok")

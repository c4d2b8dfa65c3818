"""How much the neural tangent kernel fluctuates, and how fast it moves, against depth: theory and Monte Carlo.

At infinite width the NTK is frozen. At width n it fluctuates from network to network (relative variance
``(A + 2B)/(n Theta^2)``) and changes during training through the dNTK (relative size ``(P + 2Q)/(n Theta^2)``);
both grow with the depth-to-width ratio. This example draws pdlt's O(1/n) predictions for tanh and ReLU networks at
criticality against Monte Carlo of sampled networks (exact jets of every network), checks layer 2 exactly (there
the O(1/n) statistics are exact at any width) and writes two plots. For the bias-free ReLU network the NTK's
relative variance is also known at every width (pdlt.relu_ntk_all_orders): its curve shows how much the O(1/n)
prediction misses, and the Monte Carlo must agree with it at every layer. For tanh both statistics are also drawn at
O(1/n^2) (pdlt.ntk_nnlo with dntk=True: copies of the network, the dNTK from a fourth copy), and its O(1/n) curve
carries the band of its truncation error (th.truncation_error, the allowance pdlt.compare uses).

Run: python examples/ntk_depth.py [OUT_DIR] [N_NETWORKS]   (defaults: ntk-depth-out, 20000)
"""
import sys
from pathlib import Path

import numpy as np

import pdlt


out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ntk-depth-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
out.mkdir(parents=True, exist_ok=True)

n, L = 32, 6
x = np.array([[1.0, 0.5, -0.3]])
lambda_b, lambda_W = 1.0, 1.0
ls = np.arange(1, L + 1)
curves, points, bands = {}, {}, {}
for k, act in enumerate(("tanh", "relu")):
    crit = pdlt.criticality(act)
    net = pdlt.MLP(act, widths=(3,) + (n,) * L, C_W=crit.C_W, C_b=crit.C_b)
    th = pdlt.ntk(net, x, lambda_b=lambda_b, lambda_W=lambda_W)
    mc = pdlt.sample_ntk(net, x, n_networks, seed=k, lambda_b=lambda_b, lambda_W=lambda_W)
    exact = pdlt.compare(th, mc, layers=[2], case=f"{act}, layer 2 (exact)")
    print(f"{act}: layer 2, every NTK statistic against Monte Carlo ({exact.summary()})")
    assert exact.ok, exact.to_markdown()
    so = pdlt.ntk_nnlo(net, x, lambda_b, lambda_W, dntk=True) if act == "tanh" else None
    for name in ("ntk_relative_variance", "dntk_relative"):
        pred = np.array([th.prediction(name, l)[0] for l in ls])
        est = getattr(mc, name)
        m, s = est.mean[:, 0], est.stderr[:, 0]
        curves.setdefault(name, {})[f"{act}, theory $O(1/n)$"] = pred
        if so is not None:
            err = np.array([th.truncation_error(name, l)[0] for l in ls])
            bands.setdefault(name, {})[f"{act}, theory $O(1/n)$"] = (pred - err, pred + err, "truncation error")
            second = pred + np.array([so.next_order(name, l)[0] for l in ls])
            curves[name][f"{act}, theory $O(1/n^2)$"] = second
            print(f"  {name + ' O(1/n^2)':>22}: " + "  ".join(f"l={l}: {second[l - 1]:.4f}" for l in ls))
        points.setdefault(name, {})[f"{act}, Monte Carlo"] = (ls, m, s)
        print(f"  {name:>22}: " + "  ".join(f"l={l}: {pred[l - 1]:.4f} vs {m[l - 1]:.4f}({s[l - 1]:.4f})" for l in ls))
        if act == "relu" and name == "ntk_relative_variance":
            ex = pdlt.relu_ntk_all_orders(net, x, lambda_b, lambda_W)
            every = ex.variance[:, 0] / ex.Theta[:, 0] ** 2
            curves[name][f"{act}, exact (every order)"] = every
            z = (m[1:] - every[1:]) / s[1:]
            print(f"  {'every order':>22}: " + "  ".join(f"l={l}: {every[l - 1]:.4f}" for l in ls)
                  + f"   (Monte Carlo z = {np.round(z, 1).tolist()})")
            assert np.all(np.abs(z) < 5), z

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    labels = {"ntk_relative_variance": r"$\mathrm{Var}(\hat H_{ii})/\Theta^2$",
              "dntk_relative": r"$E[\widehat{dH}_{iii} z_i]/\Theta^2$"}
    # one colour per activation (its O(1/n) curve, band and Monte Carlo), others for the further curves
    colors = {"tanh, theory $O(1/n)$": "C0", "tanh, theory $O(1/n^2)$": "C2", "tanh, Monte Carlo": "C0",
              "relu, theory $O(1/n)$": "C1", "relu, exact (every order)": "C3", "relu, Monte Carlo": "C1"}
    for name, ylabel in labels.items():
        info = (f"critical tanh and ReLU, $\\lambda_b = \\lambda_W = 1$: L = {L}, n = {n}, "
                f"{n_networks} networks each")
        plots.series_plot(ls, curves[name], points[name], xlabel=r"layer $\ell$", ylabel=ylabel, title=info,
                          path=out / f"{name}.png", bands=bands.get(name), colors=colors)
        print(f"wrote {out / (name + '.png')}")

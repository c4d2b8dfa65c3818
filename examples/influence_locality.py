"""Datapoints as interacting particles: how far a training point's influence reaches, theory against Monte Carlo.

Seven training particles on a circle through the test input x0 (every input of the same norm, so the kernel sees
only angles), targets 0, noise variance 0.1. For tanh and ReLU at criticality and a tanh network in the ordered
phase, the influence d m(x0) / d y_a of each particle on the prediction at x0, for networks of depth 2, 4 and 6 with
hidden width n = 16: infinite width, O(1/n), and sampled networks (explicit weights, the derivative of the
reweighting estimator, jackknife errors). Then the influence length against depth (how deep networks delocalize
influence; in the ordered phase at the perpendicular correlation length), its dependence on the temperature, a
LaTeX table, screening, and the interaction graph of five particles (the O(1/n) pair couplings).

Run: python examples/influence_locality.py [OUT_DIR] [N_NETWORKS]   (defaults: influence-out, 100000)
"""
import sys
from pathlib import Path

import numpy as np

import pdlt
from pdlt.latex import booktabs, compile_pdf, document, have_pdflatex

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("influence-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
out.mkdir(parents=True, exist_ok=True)

x0, x1 = np.array([1.2, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
noise, n, depths = 0.1, 16, (2, 4, 6)
cases = [("tanh, critical", "tanh", 1.0, 0.0), ("ReLU, critical", "relu", 2.0, 0.0),
         ("tanh, ordered ($C_W = 0.8$, $C_b = 0.3$)", "tanh", 0.8, 0.3)]

profiles, mcs = [], []
chi2 = {"O(1/n)": 0.0, "infinite width": 0.0}
points = 0
for label, act, C_W, C_b in cases:
    net = pdlt.MLP(act, (3,) + (n,) * max(depths) + (1,), C_W=C_W, C_b=C_b)
    prof = pdlt.locality_profile(net, x0, x1, n_train=7, noise_var=noise, order=1)
    profiles.append(prof)
    mc = {}
    for l in depths:
        r = pdlt.influence_mc(net.truncated(l), prof.x_train, np.zeros(7), x0[None], noise_var=noise,
                              n_samples=n_networks, seed=l, wrt="y")
        m, s = r.mean_dy.mean[0, 0, :, 0], r.mean_dy.stderr[0, 0, :, 0]
        mc[l] = (m, s)
        chi2["O(1/n)"] += float(np.sum(((m - prof.influence[l - 1]) / s) ** 2))
        chi2["infinite width"] += float(np.sum(((m - prof.infinite[l - 1]) / s) ** 2))
        points += m.size
    mcs.append(mc)
print(f"chi^2 per point of the Monte Carlo influences ({points} points, {n_networks} networks each): "
      + ", ".join(f"{k} {v / points:.2f}" for k, v in chi2.items()))
# the O(1/n) theory describes the sampled networks better than the infinite-width one
assert chi2["O(1/n)"] < chi2["infinite width"]

pdlt.plots.locality_plot(profiles, [c[0] for c in cases], depths, mc=mcs, n_networks=n_networks,
                         path=out / "locality.png", title="influence of each training particle on the test input")

# influence length against depth: deep networks spread a particle's influence over the whole dataset
deep = {}
for label, act, C_W, C_b in cases:
    net = pdlt.MLP(act, (3,) + (n,) * 40 + (1,), C_W=C_W, C_b=C_b)
    deep[label] = pdlt.locality_profile(net, x0, x1, n_train=15, noise_var=noise)
ls = np.arange(1, 42)                       # 40 hidden layers and the output layer
pdlt.plots.series_plot(ls, {k: p.locality for k, p in deep.items()}, {},
                       xlabel="depth L", ylabel=r"locality $\ell / \ell_{\rm uniform}$",
                       title="influence length (infinite width, 15 particles on a circle, noise variance 0.1)",
                       path=out / "influence_length.png")
ordered = deep[cases[2][0]]
slope = np.diff(np.log(1.0 - ordered.locality[24:34])).mean()
xi = pdlt.correlation_length("tanh", 0.8, 0.3, K1=0.3 + 0.8 * 1.44 / 3).xi_perp
print(f"ordered phase: 1 - ell/ell_uniform decays over {-1 / slope:.4f} layers; xi_perp = {xi:.4f}")
assert abs(-1 / slope / xi - 1) < 1e-3

# the depth laws at criticality: ReLU flattens like l^-3 beyond the crossover depth, tanh freezes
depths_far = [100, 105, 1000, 1050]
for act, C_W in (("relu", 2.0), ("tanh", 1.0)):
    net = pdlt.MLP(act, (3,) + (n,) * depths_far[-1] + (1,), C_W=C_W, C_b=0.0)
    law = pdlt.locality_law(net, x0, noise)
    far = pdlt.locality_profile(net, x0, x1, n_train=15, noise_var=noise, depths=depths_far)
    p = far.flow_exponent()
    print(f"{act} critical: {law.law} law (exponent {law.exponent}, crossover depth {law.crossover:.1f}); local "
          f"exponent {p[0]:.3f} at l = 100, {p[-1]:.3f} at l = 1000")

# the temperature: a colder posterior (smaller noise) resolves more of the kernel's modes and stays more local
temps = [1e-3, 1e-2, 1e-1, 1.0]
relu = pdlt.MLP("relu", (3,) + (n,) * 6 + (1,), C_W=2.0, C_b=0.0)
loc_t = [pdlt.locality_profile(relu, x0, x1, n_train=15, noise_var=t).locality[5] for t in temps]
print("ReLU, L = 6: ell/ell_uniform at noise variance", temps, "=", np.round(loc_t, 3))

# a LaTeX table: ell / ell_uniform per depth, infinite width and O(1/n) (n = 16)
rows = []
for (label, *_), prof in zip(cases, profiles):
    inf_len = pdlt.theory.locality.influence_length(prof.infinite, prof.distance) / prof.length_uniform
    rows.append([label.split(" (")[0]] + [f"{v[l - 1]:.3f}" for l in depths for v in (inf_len, prof.locality)])
header = ["network"] + [rf"$L = {l}$, {w}" for l in depths for w in (r"$n = \infty$", "$n = 16$")]
doc = document(booktabs(header, rows, caption=r"Influence length $\ell/\ell_{\rm uniform}$ (seven particles on a "
                        r"circle, noise variance 0.1) at infinite width and to $O(1/n)$; critical: $C_W = 1$ (tanh), "
                        r"$2$ (ReLU), $C_b = 0$; ordered: $C_W = 0.8$, $C_b = 0.3$."),
               title="pdlt: influence length")
(out / "influence_length.tex").write_text(doc)
if have_pdflatex():
    compile_pdf(doc, out / "pdf", "influence_length", check=True)

# screening: particles between a distant source and the test input take over its influence
relu4 = pdlt.MLP("relu", (3,) + (n,) * 4 + (1,), C_W=2.0, C_b=0.0)
t = np.array([0.9, 0.6, 0.3])
screen = np.stack([1.2 * np.cos(t), 1.2 * np.sin(t), 0 * t], -1)
scr = pdlt.screening(relu4, x0[None], [[1.2 * np.cos(1.3), 1.2 * np.sin(1.3), 0.0]], screen, noise_var=noise, order=1)
print("ReLU, L = 4: the source's influence with 0..3 screening particles, infinite width",
      np.round(scr.infinite / scr.infinite[0], 3), "O(1/n)", np.round(scr.ratio, 3))
assert abs(scr.infinite[-1]) < 0.05 * scr.infinite[0]

net = pdlt.MLP("tanh", (3, n, n, 1), C_W=1.0, C_b=0.0)
# the interaction graph: what the vertex V adds beyond linear kernel regression
ang = np.array([-1.0, -0.5, 0.0, 0.6, 1.4])
xa = np.stack([1.2 * np.cos(ang), 1.2 * np.sin(ang), 0 * ang], -1)
it = pdlt.interactions(net, xa, [0.5, -0.3, 0.4, 0.2, -0.4], [[1.2 * np.cos(0.3), 1.2 * np.sin(0.3), 0.0]], noise)
print("cubic term of the mean by number of particles (one, two, three):", np.round(it.bodies()[0], 5))
pdlt.plots.interaction_graph_plot(it, xa, path=out / "interaction_graph.png")
print(f"wrote {out}/locality.png, influence_length.png, influence_length.tex, interaction_graph.png")

"""Datapoints as particles: the finite-width posterior of a one-hidden-layer tanh network, theory vs Monte Carlo.

Inputs on a circle, x(t) = (cos t, sin t, 0.5); three training points with small targets (the perturbative
regime of derivations/README.md section 11.2) and noise variance 0.05. For each width the posterior mean of the
output along the circle: the infinite-width (NNGP) curve, the O(1/n) prediction, and the exact posterior of
sampled networks (importance reweighting, jackknife errors), n = 8, 16, 64. Then "adding a particle": a fourth training point
leaves the architecture (the vacuum) unchanged and moves the prediction at a test input.

Run: python examples/bayes_posterior.py [OUT_DIR] [N_NETWORKS]   (defaults: bayes-out, 100000)
"""
import sys
from pathlib import Path

import numpy as np

import pdlt

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bayes-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
out.mkdir(parents=True, exist_ok=True)


def circle(t):
    t = np.atleast_1d(t)
    return np.stack([np.cos(t), np.sin(t), np.full_like(t, 0.5)], -1)


t_train = np.array([-1.2, 0.1, 1.4])
y_train = np.array([0.25, -0.15, 0.2])
t_test = np.linspace(-2.0, 2.0, 9)
noise = 0.05

curves, points = {}, {}
dev_inf, dev_1 = [], []
widths = (8, 16, 64)
for n in widths:
    net = pdlt.MLP("tanh", (3, n, 1), C_W=1.5, C_b=0.1)
    post = pdlt.posterior(net, circle(t_train), y_train, circle(t_test), noise_var=noise)
    mc = pdlt.posterior_mc(net, circle(t_train), y_train, circle(t_test), noise, n_samples=n_networks, seed=n)
    z = (mc.mean.mean[:, 0] - post.mean[:, 0]) / mc.mean.stderr[:, 0]
    z_inf = (mc.mean.mean[:, 0] - post.mean_infinite[:, 0]) / mc.mean.stderr[:, 0]
    print(f"n = {n:3d}: max |z| vs O(1/n) theory {np.abs(z).max():5.2f}, vs NNGP {np.abs(z_inf).max():6.2f}, "
          f"ESS {mc.ess:.0f}")
    dev_inf.append(np.abs(mc.mean.mean[:, 0] - post.mean_infinite[:, 0]).max())
    dev_1.append(np.abs(mc.mean.mean[:, 0] - post.mean[:, 0]).max())
    # plotted: the finite-width shift of the posterior mean away from the NNGP mean
    curves[f"theory, n = {n}"] = post.mean[:, 0] - post.mean_infinite[:, 0]
    points[f"MC, n = {n}"] = (t_test, mc.mean.mean[:, 0] - post.mean_infinite[:, 0], mc.mean.stderr[:, 0])
curves["NNGP (n = infinity)"] = 0.0 * t_test
# the Rao-Blackwellized Monte Carlo resolves even the O(1/n^2) remainder; what must hold: the NNGP deviation
# falls like 1/n, the O(1/n) prediction removes most of it, and what is left falls faster (like 1/n^2)
print("max |MC - NNGP|:", np.round(dev_inf, 5), " max |MC - O(1/n) theory|:", np.round(dev_1, 5))
assert all(d1 < di / 3 for d1, di in zip(dev_1, dev_inf))
assert dev_1[-1] / dev_1[0] < 0.5 * dev_inf[-1] / dev_inf[0]

# adding a particle: the vacuum (architecture) is unchanged, the dataset couplings and the prediction move
net = pdlt.MLP("tanh", (3, 8, 1), C_W=1.5, C_b=0.1)
a3 = pdlt.effective_action(net, circle(t_train))
a4 = pdlt.effective_action(net, circle(np.append(t_train, 0.8)))
assert a3.vacuum == a4.vacuum
p3 = pdlt.posterior(net, circle(t_train), y_train, circle(0.6), noise)
p4 = pdlt.posterior(net, circle(np.append(t_train, 0.8)), np.append(y_train, 0.3), circle(0.6), noise)
print(f"prediction at t = 0.6: {p3.mean[0, 0]:+.4f} (3 particles) -> {p4.mean[0, 0]:+.4f} (4 particles); "
      f"1/n part {p3.mean_correction[0, 0] / 8:+.2e} -> {p4.mean_correction[0, 0] / 8:+.2e}")
# the vertex V_(ab)(cd) of the old particles is theirs alone (unchanged); the couplings of the action are raised
# with the inverse kernel of the whole dataset, so every coupling among the old particles moves
V3 = pdlt.finite_width(net, circle(t_train)).V[-1]
V4 = pdlt.finite_width(net, circle(np.append(t_train, 0.8))).V[-1]
assert np.allclose(V4[:3, :3, :3, :3], V3, rtol=1e-9, atol=1e-14)
change = np.abs(a4.quartic[:3, :3, :3, :3] - a3.quartic).max() / np.abs(a3.quartic).max()
print(f"V among the old particles unchanged; their quartic coupling v^(ab)(cd) changes by {change:.2g} x its size")
assert change > 1e-3

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    # the i-th theory curve and the i-th Monte Carlo set are the same width: series_plot pairs their colours
    plots.series_plot(t_test, curves, points, xlabel="test input angle t", ylabel="posterior mean - NNGP mean",
                      title=f"tanh, L = 2 (one hidden layer), n = {', '.join(map(str, widths))}, "
                            f"{n_networks} networks per width", path=out / "bayes_posterior.png")
    print(f"wrote {out / 'bayes_posterior.png'}")

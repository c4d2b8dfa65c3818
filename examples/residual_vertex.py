"""The four-point vertex of a critical residual ReLU network against Monte Carlo, with a plot.

Residual steps z^(l) = gamma z^(l-1) + xi (b + W relu(z^(l-1))) (PDLT appendix B) at the critical C_W = (1 -
gamma^2)/(xi^2 A_2). A shortcut carries each neuron's own value forward while its metric depends on it, so the
O(1/n) vertex does not follow from a (K, V)-only recursion: pdlt's residual theory (derivations/residual.py) is
drawn against Monte Carlo of sampled networks, with the incomplete (K, V)-only recursion as the negative control,
and with its O(1/n^2) correction from the cumulant chain of the layer's empirical measure (derivations/README.md
section 13.8), which the Monte Carlo resolves at n = 64 from layer 4 on.
A second plot draws the theory of the NTK's fluctuations and of the dNTK against depth for several shortcut
strengths at criticality (derivations/README.md section 21; their Monte Carlo checks are width sweeps in
tests/montecarlo/test_residual_ntk_mc.py): the shortcut slows the growth of both per layer.

Run: python examples/residual_vertex.py [OUT_DIR] [N_NETWORKS]   (defaults: residual-vertex-out, 100000)
"""
import sys
import warnings
from pathlib import Path

import numpy as np

import pdlt
from pdlt.errors import TruncationWarning
from pdlt.theory.residual import residual_vertex_kv_only

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("residual-vertex-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
out.mkdir(parents=True, exist_ok=True)

gamma, n, L = 0.5**0.5, 64, 6
crit = pdlt.residual_criticality("relu", gamma=gamma)
net = pdlt.MLP("relu", widths=(3,) + (n,) * L, C_W=crit.C_W, C_b=crit.C_b, gamma=gamma)
x = np.array([[1.0, 0.5, -0.3]])

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TruncationWarning)   # recorded in th.caveats and printed by compare
    th = pdlt.finite_width(net, x)
    warnings.simplefilter("ignore", pdlt.errors.PdltWarning)   # any caveat of the chain is in second.caveats
    second = pdlt.nnlo(net, x[0])                        # O(1/n^2): the residual measure chain
mc = pdlt.sample(net, x, n_networks, seed=0)
ls = np.arange(1, L + 1)
K2 = th.K[:, 0, 0] ** 2
complete = np.array([th.normalized_vertex(l)[0] for l in ls])
nnlo_curve = np.array([second.kurtosis(l) / 3 for l in ls])   # V/(n K^2) at O(1/n^2), E z^2 expanded too
kv_only = residual_vertex_kv_only("relu", th.K[0], net.C_W, net.C_b, net.gamma, net.xi)[:, 0, 0, 0, 0] / (n * K2)
m, s = mc.normalized_vertex.mean[:, 0], mc.normalized_vertex.stderr[:, 0]
print(f"critical residual ReLU, gamma^2 = 1/2, C_W = {crit.C_W:.6g}: nu(gamma) = {crit.nu:.4f} ({crit.nu_method})")
print(f"{'l':>3} {'theory V/(nK^2)':>16} {'O(1/n^2)':>9} {'(K,V)-only':>11} {'Monte Carlo':>22}")
for l in ls:
    print(f"{l:3d} {complete[l - 1]:16.5f} {nnlo_curve[l - 1]:9.5f} {kv_only[l - 1]:11.5f} {m[l - 1]:14.5f} +- "
          f"{s[l - 1]:.5f}")

cmp = pdlt.compare(th, mc, quantities=("four_point",), case="residual relu")
print(cmp.to_markdown())
assert cmp.ok, cmp.to_markdown()
# negative control, where resolvable: the (K, V)-only recursion misses the cross-layer terms by more than the
# O(1/n^2) allowance plus 5 standard errors
allow = np.array([pdlt.plots.vertex_allowance(th, l) for l in ls]) / K2
gap = np.abs(complete - kv_only)
resolvable = gap > allow + 8 * s
if np.any(resolvable):
    z = np.abs(m - kv_only) / s
    assert np.all(z[resolvable] > 5 + allow[resolvable] / s[resolvable]), (z, resolvable)
    print(f"(K, V)-only recursion rejected at layers {[int(l) for l in ls[resolvable]]} (|z| = {np.round(z[resolvable], 1)})")
else:
    print("(K, V)-only recursion: not resolvable at this number of networks")

# the O(1/n^2) correction, where Monte Carlo resolves it: closer to Monte Carlo than O(1/n) at every such layer
resolved = np.abs(nnlo_curve - complete) > 5 * s
assert np.all(np.abs(m - nnlo_curve)[resolved] < np.abs(m - complete)[resolved]), (m, nnlo_curve, complete)
if np.any(resolved):
    z2 = np.round((m - nnlo_curve)[resolved] / s[resolved], 1)
    print(f"O(1/n^2) resolved at layers {[int(l) for l in ls[resolved]]}: Monte Carlo - O(1/n^2) = {z2} s.e.")

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    info = f"residual ReLU ($\\gamma^2 = 1/2$, critical): L = {L}, n = {n}, {mc.n_samples} networks"
    plots.series_plot(ls, {"theory, $O(1/n)$": complete, "theory, $O(1/n^2)$": nnlo_curve,
                           "$(K, V)$-only recursion": kv_only},
                      {"Monte Carlo ($\\pm 1$ s.e.)": (ls, m, s)}, xlabel=r"layer $\ell$",
                      ylabel=r"$V^{(\ell)}_{(00)(00)}/(n K_{00}^2)$", title=info, path=out / "residual_vertex.png",
                      bands={"theory, $O(1/n)$": (complete - allow, complete + allow, "$O(1/n^2)$ allowance")})
    print(f"wrote {out / 'residual_vertex.png'}")


# the NTK at finite width: relative variance (A + 2B)/(n Theta^2) and dNTK size (P + 2Q)/(n Theta^2) against depth
L_ntk = 20
ls_ntk = np.arange(1, L_ntk + 1)
ntk_curves = {"ntk_relative_variance": {}, "dntk_relative": {}}
print(f"\nNTK of critical residual ReLU networks, n = {n}, lambda_b = lambda_W = 1 (theory, O(1/n)):")
prev = np.inf
for g2 in (0.0, 0.25, 0.5, 0.75):
    c = pdlt.residual_criticality("relu", gamma=g2 ** 0.5)
    rnet = pdlt.MLP("relu", widths=(3,) + (n,) * L_ntk, C_W=c.C_W, C_b=c.C_b, gamma=g2 ** 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        tk = pdlt.ntk(rnet, x)
        rows = {q: np.array([tk.prediction(q, l)[0] for l in ls_ntk]) for q in ntk_curves}
    for q, v in rows.items():
        ntk_curves[q][f"$\\gamma^2 = {g2:g}$"] = v
    print(f"  gamma^2 = {g2:4.2f}: Var(H)/Theta^2 at l = 10, 20: {rows['ntk_relative_variance'][9]:.4f}, "
          f"{rows['ntk_relative_variance'][19]:.4f};  dNTK/Theta^2: {rows['dntk_relative'][9]:.5f}, "
          f"{rows['dntk_relative'][19]:.5f}")
    # the shortcut carries part of the NTK forward unchanged: growth per layer falls as gamma^2 grows
    assert rows["ntk_relative_variance"][-1] < prev, (g2, rows["ntk_relative_variance"][-1], prev)
    prev = rows["ntk_relative_variance"][-1]

if plots.have_matplotlib():
    labels = {"ntk_relative_variance": r"$\mathrm{Var}(\hat H_{ii})/\Theta^2$",
              "dntk_relative": r"$E[\widehat{dH}_{iii} z_i]/\Theta^2$"}
    for q, ylabel in labels.items():
        info = f"critical residual ReLU, theory $O(1/n)$: L = {L_ntk}, n = {n}, $\\lambda_b = \\lambda_W = 1$"
        plots.series_plot(ls_ntk, ntk_curves[q], {}, xlabel=r"layer $\ell$", ylabel=ylabel, title=info,
                          path=out / f"residual_{q}.png")
        print(f"wrote {out / ('residual_' + q + '.png')}")

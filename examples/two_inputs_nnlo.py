"""Two inputs at order 1/n^2: the covariance of the metric against Monte Carlo across widths, with a plot and a table.

For two inputs at 60 degrees through a critical ReLU network of depth L = 4, n Cov(G_ab, G_cd) at the last layer is
V + V1/n + O(1/n^2): pdlt.nnlo(net, x) gives V1 for every entry (derivations/README.md section 13.6), the diagonal
(00)(00) as well as the off-diagonal (00)(11), which needs the two-input chain. Monte Carlo of sampled networks at
widths 8..32 (markov sampler, jackknife errors) resolves the 1/n^2 term: the O(1/n) prediction is rejected at the
narrow widths, O(1/n^2) passes at every width.

Run: python examples/two_inputs_nnlo.py [OUT_DIR] [N_NETWORKS]   (defaults: two-inputs-nnlo-out, 200000)
"""
import sys
import warnings
from pathlib import Path

import numpy as np

import pdlt
from pdlt.errors import TruncationWarning
from pdlt.latex import booktabs, document, fmt_number, fmt_uncertainty
from pdlt.theory.truncation import layer_factor

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("two-inputs-nnlo-out")
n_networks = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
out.mkdir(parents=True, exist_ok=True)

L, widths = 4, np.array([8, 12, 16, 24, 32])
x = np.array([[1.0, 0.0], [0.5, 3**0.5 / 2]])                # 60 degrees apart
entries = {"(00)(00)": (0, 0, 0, 0), "(00)(11)": (0, 0, 1, 1)}
theory = {k: {1: [], 2: [], "band": []} for k in entries}
mc_pts = {k: ([], []) for k in entries}
z_first, z_second = [], []
for n in widths:
    net = pdlt.MLP("relu", (2,) + (int(n),) * L, C_W=2.0, C_b=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)    # the caveats stay in th.caveats
        th, fw = pdlt.nnlo(net, x), pdlt.finite_width(net, x)
    mc = pdlt.sample(net, x, n_networks, seed=int(n))
    m, s = mc.four_point.mean[L - 1], mc.four_point.stderr[L - 1]
    # |truth - O(1/n)| estimated as the computed T2 + c^2 max|T1|; not drawn where the series is not controlled (the
    # layer's factor c_l >= 1: there the estimate is only the derived bound on a divergent tail)
    band = fw.truncation_error("four_point", L)
    if layer_factor(fw, "four_point", L) >= 1:
        band = np.full_like(band, np.nan)
    for k, idx in entries.items():
        theory[k][1].append(n * th.metric_covariance(L, order=1)[idx])
        theory[k][2].append(n * th.metric_covariance(L, order=2)[idx])
        theory[k]["band"].append(n * band[idx])
        mc_pts[k][0].append(n * m[idx])
        mc_pts[k][1].append(n * s[idx])
    z_first.append(np.abs((m - th.metric_covariance(L, 1)) / s).max())
    z_second.append(np.abs((m - th.metric_covariance(L, 2)) / s).max())
    print(f"n = {n:3d}: max |z| of O(1/n) {z_first[-1]:6.1f}, of O(1/n^2) {z_second[-1]:4.1f}")

assert max(z_second) < 5, z_second                              # O(1/n^2) passes at every width
assert z_first[0] > 5, z_first                                  # O(1/n) is rejected at n = 8

from pdlt import plots  # noqa: E402

if plots.have_matplotlib():
    curves, points, bands, colors = {}, {}, {}, {}
    for j, k in enumerate(entries):
        t1, t2, b = (np.array(theory[k][q]) for q in (1, 2, "band"))
        lab1, lab2 = f"$O(1/n)$, ${k}$", f"$O(1/n^2)$, ${k}$"
        curves[lab1], curves[lab2] = t1, t2
        bands[lab1] = (t1 - b, t1 + b, f"$O(1/n)$ truncation error, ${k}$ (where controlled)")
        points[f"Monte Carlo, ${k}$"] = (widths, np.array(mc_pts[k][0]), np.array(mc_pts[k][1]))
        colors.update({lab1: f"C{2 * j}", lab2: f"C{2 * j + 1}", f"Monte Carlo, ${k}$": f"C{2 * j + 1}"})
    plots.series_plot(widths, curves, points, xlabel=r"hidden width $n$",
                      ylabel=r"$n\,\mathrm{Cov}(G_{ab}, G_{cd})$ at $\ell = L$", path=out / "two_inputs_nnlo.png",
                      title=f"critical ReLU, two inputs at 60°: L = {L}, {n_networks} networks per width",
                      bands=bands, colors=colors)
    print(f"wrote {out / 'two_inputs_nnlo.png'}")

rows = []
for i, n in enumerate(widths):
    row = [str(n)]
    for k in entries:
        row += ["$" + fmt_uncertainty(mc_pts[k][0][i], mc_pts[k][1][i]) + "$", fmt_number(theory[k][1][i], 5),
                fmt_number(theory[k][2][i], 5)]
    rows.append(row)
header = ["$n$"] + [h.format(k=k) for k in entries for h in ("MC ${k}$", "$O(1/n)$", "$O(1/n^2)$")]
table = booktabs(header, rows, align="r" * len(header),
                 caption=(f"Critical ReLU, two inputs at $60^\\circ$, depth {L}, {n_networks} sampled networks per "
                          "width: "
                          r"$n\,\mathrm{Cov}(G_{ab}, G_{cd})$ at the last layer (Monte Carlo with one standard error) "
                          r"against the $1/n$ and $1/n^2$ theory."), label="tab:two-inputs-nnlo")
(out / "two_inputs_nnlo.tex").write_text(document(table, title="pdlt: two inputs at second order in 1/n"))
print(f"wrote {out / 'two_inputs_nnlo.tex'}")

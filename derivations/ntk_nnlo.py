# %% [markdown]
# # The NTK of one input at order 1/n^2: copies of the network
#
# Run: `python derivations/ntk_nnlo.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result and the
# script writes `ntk_nnlo.tex`. Derivation: `derivations/README.md` section 17.2; code: `pdlt/theory/ntk_nnlo.py`.
#
# Three networks seeing one input (theta, theta + eps eta, theta + eps eta') are the several-input metric chain of
# section 13.6 with a per-entry C_W; the NTK statistics are the Taylor coefficients of that chain's statistics in
# h = eps^2. Asserted here:
#
# 1. the O(1/n) parts read from the copies are the NTK statistics of section 17 (other recursions, other averages),
#    and so are the dNTK's P and Q read from a fourth copy, theta + eps (eta + eta');
# 2. deep linear networks: the 1/n^2 parts are the exact chain's (section 15), the mean NTK has none;
# 3. layers 1 and 2 have no 1/n^2 part (layer 2 is exact at O(1/n)), the dNTK's included;
# 4. large depth at criticality (tanh; lambda_b = 0, lambda_W = 1): the O(1/n) relative variance (A + 2B)/Theta^2
#    tends to (2/3) l (2 B/Theta^2 of section 18, B ~ l/12, Theta -> 1/2; A's part is o(l)), and the table of the
#    next orders against the first: how far the 1/n series of the NTK holds.

# %%
import sys
import warnings
from pathlib import Path

import numpy as np

import pdlt
from pdlt.latex import document

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
warnings.simplefilter("ignore", pdlt.TruncationWarning)
tex = []

# %% 1. first-order parts: the copies against the recursions of section 17
for act, C_W, C_b in (("tanh", 1.2, 0.1), ("gelu", 1.6, 0.05)):
    net = pdlt.MLP(act, (2, 9, 12, 7, 10), C_W=C_W, C_b=C_b)
    x = np.array([[0.6, -0.8]])
    so = pdlt.ntk_nnlo(net, x, [0.3, 0.5, 0.0, 1.0], [1.0, 0.0, 0.6, 2.0], dntk=True)
    st = pdlt.ntk(net, x, lambda_b=[0.3, 0.5, 0.0, 1.0], lambda_W=[1.0, 0.0, 0.6, 2.0]).statistics
    for k in ("Theta", "Theta1", "A", "B", "D", "F", "P", "Q"):
        ref = getattr(st, k)[:, 0, 0] if k.startswith("Theta") else getattr(st, k)[:, 0, 0, 0, 0]
        scale = max(np.abs(ref).max(), np.abs(st.Theta[:, 0, 0]).max())
        assert np.abs(getattr(so, k)[:, 0] - ref).max() < 1e-10 * scale, (act, k)
print("1. the copies' O(1/n) parts are the NTK statistics of section 17, the dNTK's P and Q included (tanh, GELU)")

# %% 2. deep linear networks: the exact chain
net = pdlt.MLP("linear", (2, 7, 11, 5, 9, 6), C_W=[1.0, 1.2, 0.9, 1.1, 0.8], C_b=[0.1, 0.0, 0.3, 0.2, 0.1])
lb, lw = [0.5, 0.2, 0.0, 1.0, 0.3], [1.0, 0.4, 0.8, 0.0, 1.5]
so, ex = pdlt.ntk_nnlo(net, [[0.7, -0.4]], lb, lw), pdlt.linear_ntk_all_orders(net, [[0.7, -0.4]], lb, lw)
for k in "ABDF":
    ref = ex.next_order[k][:, 0, 0, 0, 0]
    assert np.abs(getattr(so, k + "2")[:, 0] - ref).max() < 1e-12 * np.abs(ref).max(), k
assert np.abs(so.Theta1).max() < 1e-13 and np.abs(so.Theta2).max() < 1e-13
print("2. deep linear: A2, B2, D2, F2 are the exact chain's 1/n^2 coefficients; Theta1 = Theta2 = 0")

# %% 3. layers 1 and 2
so = pdlt.ntk_nnlo(pdlt.MLP("tanh", (1, 8, 8, 8, 8), C_W=1.2, C_b=0.1), [[0.9]], 0.7, 1.3, dntk=True)
for k in ("Theta2", "A2", "B2", "D2", "F2", "P2", "Q2"):
    assert np.all(np.abs(getattr(so, k)[:2, 0]) < 1e-13) and np.all(np.abs(getattr(so, k)[2:, 0]) > 1e-4), k
print("3. no 1/n^2 part at layers 1 and 2")

# %% 4. large depth at criticality
L, rows_at = 120, (11, 31, 61, 91, 120)
table = []
for act in ("tanh",):
    so = pdlt.ntk_nnlo(pdlt.MLP(act, (1,) + (50,) * L, C_W=1.0, C_b=0.0), [[1.0]], 0.0, 1.0)
    th, v1, v2 = so.Theta[:, 0], so.A[:, 0] + 2 * so.B[:, 0], so.A2[:, 0] + 2 * so.B2[:, 0]
    first = v1 / th**2 / np.arange(1, L + 1)
    assert abs(first[-1] - 2 / 3) < 2e-3 and np.all(np.diff(first[10:]) > 0), first[-1]     # rises to ~2/3
    for l in rows_at:
        i = l - 1
        table.append((act, l, first[i], v2[i] / v1[i], so.Theta1[i, 0] / th[i], so.Theta2[i, 0] / th[i]))
    ratio = v2[np.array(rows_at) - 1] / v1[np.array(rows_at) - 1]
    assert np.all(np.diff(ratio) > 0) and np.all(np.diff(ratio / np.array(rows_at)) < 0), ratio   # grows, slower than l
print("4. (A + 2B)/(l Theta^2) -> 2/3; the next order over the first grows more slowly than l")
for r in table:
    print("   {:5s} l = {:3d}: (A+2B)/(l Th^2) = {:.4f}  (A2+2B2)/(A+2B) = {:7.3f}  Th1/Th = {:8.3f}  Th2/Th = {:9.3f}"
          .format(*r))

tex.append(r"Three networks seeing one input ($\theta$, $\theta + \epsilon\eta$, $\theta + \epsilon\eta'$) form the "
           r"several-input metric chain with a per-entry $C_W$; the NTK statistics are its Taylor coefficients in "
           r"$h = \epsilon^2$ (derivations/README.md, section 17.2). At layer $\ell$, $n = n_{\ell-1}$: "
           r"$\mathbb E\widehat H = \Theta + \Theta^{\{1\}}/n + \Theta^{\{2\}}/n^2$ and "
           r"$\mathrm{Var}\,\widehat H = (A + 2B)/n + (A^{\{1\}} + 2B^{\{1\}})/n^2$." "\n\n"
           r"A fourth copy, $\theta + \epsilon(\eta + \eta')$, gives the mixed second difference "
           r"$W = z_3 - z_1 - z_2 + z_0$ and with it the dNTK: "
           r"$n\,\mathbb E[\widehat{dH}_{ijj}z_i] = P + P^{\{1\}}/n$, "
           r"$n\,\mathbb E[\widehat{dH}_{iij}z_j] = Q + Q^{\{1\}}/n$ ($i \ne j$)." "\n\n"
           r"Asserted: the $O(1/n)$ parts, the dNTK's included, equal the statistics of the $O(1/n)$ recursions "
           r"(tanh, GELU); for deep linear networks the $1/n^2$ parts equal the exact chain's; layers 1 and 2 have "
           r"none." "\n\n"
           r"Large depth at criticality ($C_W = 1$, $C_b = 0$, $\lambda_b = 0$, $\lambda_W = 1$, uniform width):" "\n"
           r"\begin{center}\begin{tabular}{lrrrrr}\toprule" "\n"
           r"$\sigma$ & $\ell$ & $\dfrac{A + 2B}{\ell\,\Theta^2}$ & $\dfrac{A^{\{1\}} + 2B^{\{1\}}}{A + 2B}$ & "
           r"$\dfrac{\Theta^{\{1\}}}{\Theta}$ & $\dfrac{\Theta^{\{2\}}}{\Theta}$ \\ \midrule" "\n"
           + "\n".join(rf"{a} & {l} & ${f:.4f}$ & ${q:.3f}$ & ${t1:.3f}$ & ${t2:.3f}$ \\"
                       for a, l, f, q, t1, t2 in table)
           + "\n" r"\bottomrule\end{tabular}\end{center}" "\n"
           r"The $O(1/n)$ relative variance tends to $\tfrac23\,\ell/n$; the next order over the first, "
           r"$(A^{\{1\}} + 2B^{\{1\}})/(n(A + 2B))$, grows more slowly than $\ell/n$.")
(OUT / "ntk_nnlo.tex").write_text(document("\n".join(tex), title="pdlt: the NTK of one input at second order in 1/n"))
print(f"wrote {OUT / 'ntk_nnlo.tex'}")

# %% [markdown]
# # Deep linear networks with shortcuts at every order in 1/n (one input)
#
# Run: `python derivations/linear_residual.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result
# and the script writes `linear_residual.tex`. Conventions: `derivations/README.md` section 13.7; code:
# `pdlt/theory/linear_residual.py`.
#
# Layer step (C_b = 0): z'_i = gamma z_i + xi a sum_j W_ij z_j, so z'_i | layer l ~ N(gamma z_i, xi^2 r G^) with
# r = C_W a^2, G^ = (1/n) sum_k z_k^2, and the kernel grows by rho = gamma^2 + xi^2 r per layer. Write
# t = gamma^2/rho (the share of the new variance that the shortcut carries) and beta = 1 - t^2.
#
# 1. The four-point function in closed form at every order: E[z_i^2 z_j^2]/K^2 = prod_l (1 + 2 beta_l/n_l), the
#    plain product formula at the effective width n/beta (derived by hand below, asserted against the chain with
#    per-layer gamma, xi, C_W and widths).
# 2. Its 1/n and 1/n^2 coefficients V = 2 beta (l-1) K^2, V1 = 2 beta^2 (l-1)(l-2) K^2, and the large-depth slope
#    2 (1 - gamma^4) at criticality, which is pdlt.residual_nu for sigma = z (section 15, a different derivation).
# 3. The six-point function: the tuple chain of section 13.7 rebuilt here in exact rational arithmetic (sympy), its
#    1/n^2 coefficient solved in closed form, U = beta^2 K^3 [12 (l-1)(l-2) + 8 (1+2t)/(1+t)^2 (l-1)] (no longer the
#    plain value at width n/beta: the shortcut changes the term linear in l), asserted against pdlt.nnlo.

# %%
import sys
import warnings
from math import comb
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt.latex import document

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = []
rng = np.random.default_rng(7)
# deep and narrow on purpose: the exact values are the point, the O(1/n) truncation warnings are expected
warnings.simplefilter("ignore", pdlt.TruncationWarning)

# %% [markdown]
# ## 1. The four-point function: a product formula
#
# One input, C_b = 0: E[z'^2 | l] = gamma^2 u + xi^2 r G^ (u = z^2), neurons independent given layer l, and
# E[u_i G^] = E[G^ G^] = B + (A - B)/n with A = E[u_i^2] = 3B (section 13.7). So m' = rho m and
# B' = gamma^4 B + (2 gamma^2 xi^2 r + xi^4 r^2)(1 + 2/n) B, i.e. B'/m'^2 = (1 + 2 beta/n) B/m^2.

# %%
L = 9
widths = (3, 5, 5, 5, 8, 8, 8, 6, 6, 6)           # a shortcut needs equal widths: plain layers where they change
gammas = [0.0 if widths[l] != widths[l - 1] else float(rng.uniform(-0.95, 0.95)) for l in range(1, L + 1)]
net = pdlt.MLP("linear", widths, C_W=list(rng.uniform(0.6, 1.4, L)), C_b=0.0, gamma=gammas,
               xi=[1.0] + list(rng.uniform(0.2, 1.3, L - 1)))
exact = pdlt.linear_all_orders(net, [[0.7, -0.2, 1.1]])
ratio = 1.0
for l in range(1, L + 1):
    if l > 1:
        g, xi, r, n = net.gamma[l - 1], net.xi[l - 1], net.C_W[l - 1], widths[l - 1]
        t = g * g / (g * g + xi * xi * r)
        ratio *= 1 + 2 * (1 - t * t) / n
    m = exact.mean[l - 1, 0, 0]
    assert abs(exact.cov[l - 1, 0, 0, 0, 0] / m**2 - (ratio - 1)) < 1e-12 * ratio, l
    assert abs(exact.kurtosis(l)[0] - 3 * (ratio - 1)) < 1e-11 * ratio
print("1. E[z_i^2 z_j^2]/K^2 = prod (1 + 2 beta_l/n_l): exact at every layer (random per-layer gamma, xi, C_W, n)")
tex.append(r"\section{Four-point function}"
           r"With $C_b = 0$, $\rho = \gamma^2 + \xi^2 C_W a^2$, $t = \gamma^2/\rho$ and $\beta = 1 - t^2$, at every "
           r"order in $1/n$:"
           r"\[ \frac{\mathbb E[z_i^2 z_j^2]}{K^2} = \prod_{\ell'=2}^{\ell}"
           r"\Big(1 + \frac{2\beta_{\ell'}}{n_{\ell'-1}}\Big),"
           r"\qquad \frac{\mathbb E[z^4]}{3K^2} - 1 = \prod_{\ell'=2}^{\ell}"
           r"\Big(1 + \frac{2\beta_{\ell'}}{n_{\ell'-1}}\Big) - 1, \]"
           r"the plain product formula at the effective width $n/\beta$.")

# %% [markdown]
# ## 2. The 1/n and 1/n^2 coefficients and the large-depth slope

# %%
forms = pdlt.symbolic.linear_residual_closed_forms()        # V, V1 expanded there from the product formula
ts, lsym, nsym = forms["symbols"]
for g, xi, r in ((0.8, 0.6, 1.0), (0.5, 0.9, 1.3), (-0.95, 0.3, 1.0)):
    net = pdlt.MLP("linear", (1,) + (10,) * 12, C_W=r, C_b=0.0, gamma=g, xi=xi)
    second = pdlt.nnlo(net, [1.0])
    t = g * g / (g * g + xi * xi * r)
    ls = np.arange(1, 13)
    K = second.K
    for name in ("V", "V1"):
        want = sp.lambdify(lsym, forms[name].subs(ts, t))(ls) * K**2
        np.testing.assert_allclose(getattr(second, name)[1:], want[1:], rtol=1e-12, atol=1e-14)
for g in (0.3, 0.7, 0.9):
    assert abs(pdlt.residual_nu("linear", g) - 2 * (1 - g**4)) < 1e-12        # criticality: rho = 1, t = gamma^2
print("2. V = 2 beta (l-1) K^2, V1 = 2 beta^2 (l-1)(l-2) K^2; at criticality the slope 2 (1 - gamma^4) = residual_nu")
tex.append(r"\section{Orders $1/n$ and $1/n^2$}"
           r"\[ V^{(\ell)} = 2\beta(\ell-1)K^2,\qquad V_1^{(\ell)} = 2\beta^2(\ell-1)(\ell-2)K^2,\qquad "
           r"G_1 = G_2 = 0. \]"
           r"At criticality ($\rho = 1$, $t = \gamma^2$) the slope $V/(K^2\ell) \to 2(1-\gamma^4)$ is the "
           r"trajectory theory's $\nu(\gamma)$ for $\sigma(z) = z$.")

# %% [markdown]
# ## 3. The six-point function
#
# The tuple chain in exact arithmetic: states M_P over the partitions P of <= 3 (u-powers of distinct neurons),
# E[z'^(2p) | l] = sum_k binom(2p, 2k) (2k-1)!! gamma^(2p-2k) (xi^2 r G^)^k u^(p-k), and G^ times the fields of q
# distinct neurons = (1/n) (one of them) + (1 - q/n) (a new one). Symbols: t, eps = 1/n (rho scaled out: rho = 1).

# %%
eps = sp.Symbol("epsilon", positive=True)
PARTS = [(), (1,), (2,), (1, 1), (3,), (2, 1), (1, 1, 1)]


def split_gram(parts, j):
    """E[prod u^p G^j] as {partition: coefficient in eps}."""
    terms = {tuple(sorted(parts, reverse=True)): sp.Integer(1)}
    for _ in range(j):
        new = {}
        for P, c in terms.items():
            for i in range(len(P)):
                key = tuple(sorted(P[:i] + (P[i] + 1,) + P[i + 1:], reverse=True))
                new[key] = new.get(key, 0) + eps * c
            new[P + (1,)] = new.get(P + (1,), 0) + (1 - len(P) * eps) * c
        terms = new
    return terms


def dfact(k):
    return sp.factorial2(k) if k > 0 else 1


def step(M):
    """One layer (rho = 1: gamma^2 = t, xi^2 r = 1 - t) on {partition: value}."""
    out = {(): sp.Integer(1)}
    for P in PARTS[1:]:
        total = 0
        for ks in np.ndindex(*(p + 1 for p in P)):
            coef = sp.Integer(1)
            for p, k in zip(P, ks):
                coef *= comb(2 * p, 2 * k) * dfact(2 * k - 1) * ts ** (p - k) * (1 - ts) ** k
            left = tuple(p - k for p, k in zip(P, ks) if p > k)
            for Q, c in split_gram(left, sum(ks)).items():
                total += coef * c * M[Q]
        out[P] = sp.expand(total)
    return out


M = {P: sp.Integer(int(np.prod([dfact(2 * p - 1) for p in P]))) for P in PARTS}     # layer 1, K = 1
U = []
for l in range(2, 7):
    M = step(M)
    k3 = M[(1, 1, 1)] - 3 * M[(1, 1)] + 2
    U.append(sp.factor(sp.series(k3, eps, 0, 3).removeO().coeff(eps, 2)))
closed = forms["U"]              # pdlt.symbolic's form, solved here
for l, u in zip(range(2, 7), U):
    assert sp.simplify(u - closed.subs(lsym, l)) == 0, l
assert sp.simplify(closed.subs(ts, 0) - 4 * (lsym - 1) * (3 * lsym - 4)) == 0           # gamma = 0: plain
for g, xi, r in ((0.8, 0.6, 1.0), (0.5, 0.9, 1.3)):
    net = pdlt.MLP("linear", (1,) + (10,) * 30, C_W=r, C_b=0.0, gamma=g, xi=xi)
    second = pdlt.nnlo(net, [1.0])
    t = g * g / (g * g + xi * xi * r)
    f = sp.lambdify(lsym, closed.subs(ts, t))
    ls = np.arange(1, 31)
    np.testing.assert_allclose(second.U, f(ls) * second.K**3, rtol=1e-11, atol=1e-14)
print("3. U = beta^2 K^3 [12 (l-1)(l-2) + 8 (1+2t)/(1+t)^2 (l-1)] (exact arithmetic, l = 2..6; pdlt.nnlo to l = 30)")
tex.append(r"\section{Six-point function}"
           r"The connected six-point function of three distinct neurons is $U/n^2 + O(1/n^3)$ with"
           r"\[ U^{(\ell)} = \beta^2 K^3\Big[12(\ell-1)(\ell-2) + \frac{8(1+2t)}{(1+t)^2}(\ell-1)\Big], \]"
           r"which is $4(\ell-1)(3\ell-4)K^3$ at $\gamma = 0$; one neuron's sixth cumulant is $15\,U/n^2$.")

(OUT / "linear_residual.tex").write_text(document(*tex, title="pdlt: deep linear networks with shortcuts"))
print(f"wrote {OUT / 'linear_residual.tex'}")

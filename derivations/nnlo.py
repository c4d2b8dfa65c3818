# %% [markdown]
# # Order 1/n^2: G2, V1 and the six-point vertex U (one input; several inputs in section 4)
#
# Run: `python derivations/nnlo.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result and the
# script writes `nnlo.tex`. Conventions: `derivations/README.md` section 13; code: `pdlt/theory/nnlo.py`,
# `pdlt/symbolic/nnlo.py`.
#
# 1. The law of total cumulance for the metric chain, expanded to second order, gives the recursions (symbolic
#    Taylor algebra, checked against the equations pdlt implements).
# 2. Deep linear network: the recursions iterate to the 1/n^2 terms of the exact products.
# 3. K*=0 class at criticality: the universal large-depth limits G2 -> K l^2/15, V1 -> -(14/45) K^2 l^2,
#    U -> (16/15) K^3 l^2, and the numeric recursion at l = 3000 agrees.
# 4. Several inputs (section 13.6): V1 of a deep linear network is the 1/n^2 term of the exact Wishart chain.

# %%
import sys
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt.latex import document
from pdlt.symbolic import symbols as S
from pdlt.symbolic.nnlo import kstar0_limits, nnlo_recursions

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = []

# %% [markdown]
# ## 1. The recursions from the law of total cumulance
# Given G, G' has cumulants phi(G) = C_b + C_W g(G), (C_W^2/n') v(G), (C_W^3/n'^2) w(G). With G = mu + Delta,
# E Delta = 0, E Delta^2 = S, E Delta^3 = T, E Delta^4 = 3 S^2 (to the order kept), the mean, variance and third
# cumulant of G' are expanded with a generic phi (Taylor coefficients f1..f4) and v (v1, v2), then re-expanded
# about K with mu = K + M1 + M2, S = S1 + S2, T = T2 and sorted by order (a bookkeeping parameter e).

# %%
t, h = sp.symbols("t h", positive=True)                    # t: order counter, 1/n = t^2 and Delta ~ t; h = 1/n'
f1, f2, f3, f4, v0, v1, v2, w0 = sp.symbols("f1 f2 f3 f4 v0 v1 v2 w0")
M1, M2, S1, S2, T2 = sp.symbols("M1 M2 S1 S2 T2")
d = sp.Symbol("d")                                           # Delta = t d


def taylor(c0, cs, x):
    return c0 + sum(c * x**k / sp.factorial(k) for k, c in enumerate(cs, start=1))


def cut(x, deg=4):
    """Drop the orders beyond 1/n^2 (t^4)."""
    poly = sp.Poly(sp.expand(x), t)
    return sp.expand(sum(c * t**m[0] for m, c in zip(poly.monoms(), poly.coeffs()) if m[0] <= deg))


# moments of d = Delta/t: E d = 0, E d^2 = S/t^2, E d^3 = T/t^3, E d^4 = 3 S^2/t^4 (higher ones start at t^6)
Sd = S1 + t**2 * S2
mom = {0: 1, 1: 0, 2: Sd, 3: t * T2, 4: 3 * Sd**2}


def E(x):
    poly = sp.Poly(sp.expand(x), d)
    return cut(sum(c * mom.get(m[0], 0) for m, c in zip(poly.monoms(), poly.coeffs()) if m[0] <= 4))


X = t**2 * M1 + t**4 * M2 + t * d                            # G - K
phi = cut(taylor(0, [f1, f2, f3, f4], X))                    # phi(K) dropped: the K recursion
v = cut(taylor(v0, [v1, v2], X))
phi2 = cut(phi * phi)
mean, m2 = E(phi), E(phi2)
var = cut(m2 - mean**2 + t**2 * h * E(v))
k3 = cut(E(cut(phi2 * phi)) - 3 * m2 * mean + 2 * mean**3 + 3 * t**2 * h * (E(cut(phi * v)) - mean * E(v))
         + t**4 * h**2 * w0)
for x in (mean, var, k3):                                    # only integer powers of 1/n survive
    assert all(sp.expand(x).coeff(t, k) == 0 for k in (1, 3))
got = {"M1": mean.coeff(t, 2), "M2": mean.coeff(t, 4), "S1": var.coeff(t, 2), "S2": var.coeff(t, 4),
       "T1": k3.coeff(t, 2), "T2": k3.coeff(t, 4)}
want = {"M1": f1 * M1 + f2 * S1 / 2,
        "M2": f1 * M2 + f2 * S2 / 2 + f2 * M1**2 / 2 + f3 * M1 * S1 / 2 + f3 * T2 / 6 + f4 * S1**2 / 8,
        "S1": f1**2 * S1 + h * v0,
        "S2": f1**2 * S2 + 2 * f1 * f2 * M1 * S1 + f1 * f2 * T2 + (f2**2 / 2 + f1 * f3) * S1**2 + h * (v1 * M1
                                                                                                       + v2 * S1 / 2),
        "T1": 0,
        "T2": f1**3 * T2 + 3 * f1**2 * f2 * S1**2 + 3 * h * f1 * v1 * S1 + h**2 * w0}
for k in want:
    assert sp.expand(got[k] - want[k]) == 0, k
tex.append(r"\section*{Order $1/n^2$ for one input}"
           "\n" r"Law of total cumulance, with $\phi = C_b + C_Wg$ ($f_k = \phi^{(k)}(K)$), $h = 1/n_\ell$ and the "
           r"conditional variance $h\,v$, expanded to second order: ")
tex.append(r"\begin{align*}M_2'&=" + sp.latex(want["M2"]) + r",\\ S_2'&=" + sp.latex(want["S2"])
           + r",\\ T_2'&=" + sp.latex(want["T2"]) + r".\end{align*}")

# with M1 = G1/n, S1 = V/n, M2 = G2/n^2, S2 = V1/n^2, T2 = U/n^2 (n = n_{l-1}) and r = n_l/n_{l-1}, h = 1/(r n):
# the normalized recursions are pdlt's (the symbolic equations for a generic activation, in the p_k)
n, r = sp.symbols("n r", positive=True)
G1, V, G2, V1, U, CW = sp.symbols("G1 V G2 V1 U C_W")
norm = {M1: G1 / n, S1: V / n, M2: G2 / n**2, S2: V1 / n**2, T2: U / n**2, h: 1 / (r * n),
        v0: CW**2 * v0, v1: CW**2 * v1, v2: CW**2 * v2, w0: CW**3 * w0}
nxt = r * n                                                   # n_l normalizes layer l + 1
ours = {"G2": sp.expand(want["M2"].subs(norm) * nxt**2), "V1": sp.expand(want["S2"].subs(norm) * nxt**2),
        "U": sp.expand(want["T2"].subs(norm) * nxt**2)}
# the same equations as pdlt's symbolic ones, checked for sin (every average in closed form)
Kk = S.K_l
gs = (1 - sp.exp(-2 * Kk)) / 2
q4 = (3 - 4 * sp.exp(-2 * Kk) + sp.exp(-8 * Kk)) / 8
q6 = (10 - 15 * sp.exp(-2 * Kk) + 6 * sp.exp(-8 * Kk) - sp.exp(-18 * Kk)) / 32
vs = q4 - gs**2
closed = {f1: CW * sp.diff(gs, Kk), f2: CW * sp.diff(gs, Kk, 2), f3: CW * sp.diff(gs, Kk, 3),
          f4: CW * sp.diff(gs, Kk, 4), v0: vs, v1: sp.diff(vs, Kk), v2: sp.diff(vs, Kk, 2),
          w0: q6 - 3 * q4 * gs + 2 * gs**3}
names = {G1: S.G1_l, V: S.V_l, G2: S.G2_l, V1: S.V1_l, U: S.U6_l, CW: S.C_W, r: S.r}
lib = nnlo_recursions("sin")
rng = np.random.default_rng(0)
for k in ("G2", "V1", "U"):                                  # equal at random points, to 40 digits
    diff = ours[k].subs(closed).subs(names) - lib[k].rhs
    for _ in range(3):
        pt = {sym: sp.Float(v, 40) for sym, v in zip(sorted(diff.free_symbols, key=str), rng.uniform(0.2, 1.5, 16))}
        assert abs(sp.N(diff.subs(pt), 40)) < 1e-30, k
p = {f1: sp.Symbol("p1"), f2: sp.Symbol("p2"), f3: sp.Symbol("p3"), f4: sp.Symbol("p4")}
tex.append(r"In PDLT normalization ($p_k = C_W g^{(k)}(K)$, $r = n_\ell/n_{\ell-1}$):"
           r"\begin{align*}U'&=" + sp.latex(ours["U"].subs(p)) + r",\\ V_1'&=" + sp.latex(ours["V1"].subs(p))
           + r",\\ G_2'&=" + sp.latex(ours["G2"].subs(p)) + r".\end{align*}")

# %% [markdown]
# ## 2. Deep linear network (C_W = 1, C_b = 0, equal widths): the recursions against the exact products
# Var G / K^2 = (1 + 2/n)^(l-1) - 1 and kappa_3(G)/K^3 = ((1 + 2/n)(1 + 4/n))^(l-1) - 3 (1 + 2/n)^(l-1) + 2; their
# 1/n^2 coefficients are 2 (l-1)(l-2) and 4 (l-1)(3l-4).

# %%
ell, eps = sp.symbols("ell eps", positive=True)
for L_ in range(2, 8):
    var_ex = (1 + 2 * eps) ** (L_ - 1) - 1
    k3_ex = ((1 + 2 * eps) * (1 + 4 * eps)) ** (L_ - 1) - 3 * (1 + 2 * eps) ** (L_ - 1) + 2
    assert sp.expand(var_ex).coeff(eps, 2) == 2 * (L_ - 1) * (L_ - 2)
    assert sp.expand(k3_ex).coeff(eps, 2) == 4 * (L_ - 1) * (3 * L_ - 4)
th = pdlt.nnlo(pdlt.MLP("linear", (1,) + (10,) * 7), [1.0])
assert np.allclose(th.V1, [2 * (l - 1) * (l - 2) for l in range(1, 8)], rtol=0, atol=1e-12)
assert np.allclose(th.U, [4 * (l - 1) * (3 * l - 4) for l in range(1, 8)], rtol=0, atol=1e-12)
tex.append(r"\par Deep linear network: $V_1^{(\ell)} = 2(\ell-1)(\ell-2)K^2$, $U^{(\ell)} = 4(\ell-1)(3\ell-4)K^3$, the "
           r"$1/n^2$ terms of the exact products.")

# %% [markdown]
# ## 3. K*=0 class at criticality: universal large-depth limits
# `kstar0_limits` solves the recursions with power-law ansatze (K ~ 1/(a l)); the numeric recursion for tanh
# agrees (tests/theory/test_nnlo.py::test_k_star_zero_large_depth_limits: l = 3000 with Richardson in 1/l, 4e-4);
# here a quick look at l = 1000, where the log(l)/l corrections are ~1%.

# %%
lim = kstar0_limits()
assert (lim["G2"], lim["V1"], lim["U"]) == (sp.Rational(1, 15), sp.Rational(-14, 45), sp.Rational(16, 15))
Lbig = 1000
th = pdlt.nnlo(pdlt.MLP("tanh", (1,) + (100,) * Lbig), [1.0])
lv = np.arange(1, Lbig + 1)
for name, arr in (("G2", th.G2 / (th.K * lv**2)), ("V1", th.V1 / (th.K**2 * lv**2)), ("U", th.U / (th.K**3 * lv**2))):
    rich = 2 * arr[-1] - arr[Lbig // 2 - 1]
    assert abs(rich / float(lim[name]) - 1) < 3e-3, (name, rich)
tex.append(r"\par $K^\star=0$ class at criticality: $G_2 \to K\ell^2/15$, $V_1 \to -\tfrac{14}{45}K^2\ell^2$, "
           r"$U \to \tfrac{16}{15}K^3\ell^2$, so $\mathbb{E}z^2/K = 1 - \tfrac13\tfrac{\ell}{n} + \tfrac1{15}"
           r"\big(\tfrac{\ell}{n}\big)^2$, $\mathrm{Var}\,G/K^2 = \tfrac23\tfrac{\ell}{n} - \tfrac{14}{45}"
           r"\big(\tfrac{\ell}{n}\big)^2$, $\kappa_3(G)/K^3 = \tfrac{16}{15}\big(\tfrac{\ell}{n}\big)^2$.")

# %% [markdown]
# ## 4. Several inputs: the deep linear network against the Wishart chain
# For sigma = z (C_W = 1, C_b = 0, equal widths) the covariance of the 2 x 2 metric obeys exactly
# cov' = cov + eps (T cov + Q), (T c)_abcd = c_acbd + c_adbc, Q_abcd = K_ac K_bd + K_ad K_bc (derivations/README.md
# 13.5), so V = (l - 1) Q and V1 = (l - 1)(l - 2)/2 T Q = (l - 1)(l - 2)/2 (2 K_ab K_cd + K_ac K_bd + K_ad K_bc).
# Iterated symbolically in eps for a generic K, and against the tensor recursions of pdlt.nnlo (section 13.6).

# %%
k11, k12, k22 = sp.symbols("k11 k12 k22")
Ks = sp.Matrix([[k11, k12], [k12, k22]])
idx = [(a, b, c, d) for a in range(2) for b in range(2) for c in range(2) for d in range(2)]
Q = {t: Ks[t[0], t[2]] * Ks[t[1], t[3]] + Ks[t[0], t[3]] * Ks[t[1], t[2]] for t in idx}
cov = {t: sp.Integer(0) for t in idx}
for L_ in range(2, 7):
    cov = {t: sp.expand(cov[t] + eps * (cov[(t[0], t[2], t[1], t[3])] + cov[(t[0], t[3], t[1], t[2])] + Q[t]))
           for t in idx}
    for a, b, c, d in idx:
        want = sp.Rational((L_ - 1) * (L_ - 2), 2) * (2 * Ks[a, b] * Ks[c, d] + Ks[a, c] * Ks[b, d]
                                                       + Ks[a, d] * Ks[b, c])
        assert sp.expand(cov[(a, b, c, d)].coeff(eps, 2) - want) == 0
        assert sp.expand(cov[(a, b, c, d)].coeff(eps, 1) - (L_ - 1) * Q[(a, b, c, d)]) == 0
xs2 = np.array([[1.0, 0.3], [-0.4, 0.9]])
th = pdlt.nnlo(pdlt.MLP("linear", (2,) + (10,) * 6), xs2)
K1 = th.K[0]
for l in range(1, 7):
    want = (l - 1) * (l - 2) / 2 * (2 * np.einsum("ab,cd->abcd", K1, K1) + np.einsum("ac,bd->abcd", K1, K1)
                                     + np.einsum("ad,bc->abcd", K1, K1))
    assert np.allclose(th.V1[l - 1], want, rtol=0, atol=1e-12)
assert np.max(np.abs(th.G2)) == 0
tex.append(r"\par Several inputs, deep linear network: $V_{1,(ab)(cd)}^{(\ell)} = \tfrac12(\ell-1)(\ell-2)"
           r"\big(2K_{ab}K_{cd} + K_{ac}K_{bd} + K_{ad}K_{bc}\big)$ and $G_2 = 0$, the $1/n^2$ terms of the exact "
           r"Wishart chain (for $d = 1$: $2(\ell-1)(\ell-2)K^2$).")

(OUT / "nnlo.tex").write_text(document(*tex, title="pdlt: second order in 1/n, one and several inputs"))
print("nnlo: all assertions hold; wrote", OUT / "nnlo.tex")

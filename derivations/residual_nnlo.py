# %% [markdown]
# # Residual networks at order 1/n^2, one input: the identities behind the measure chain
#
# Run: `python derivations/residual_nnlo.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result and
# the script writes `residual_nnlo.tex`. The chain itself: `derivations/README.md` section 13.8 and
# `pdlt/theory/residual_nnlo.py`.
#
# 1. The branch smoothing in Hermite modes: E_eps He_k(gamma z + s eps; K') = sum_j C(k,2j) (2j-1)!! delta^j
#    gamma^(k-2j) He_(k-2j)(z; K) with delta = s^2 - (K' - gamma^2 K), for k <= 10 (sympy, exact).
# 2. One neuron's fourth cumulant minus three times the pair covariance is multiplied by gamma^4 per step, whatever
#    sigma is (sympy on the conditional moments): 0 at every layer, so the kurtosis is 3 Var/K^2 with shortcuts too.
# 3. The chain against the closed forms of deep linear networks with shortcuts (section 13.7: V1 = 2 beta^2 (l-1)(l-2)
#    K^2), then the large-depth ratios of critical ReLU at gamma^2 = 1/2 (observed, not derived).

# %%
import sys
import warnings
from pathlib import Path

import sympy as sp

import pdlt
from pdlt.latex import document
from pdlt.theory.residual_nnlo import residual_nnlo

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
warnings.simplefilter("ignore", pdlt.errors.PdltWarning)
tex = []

# %% 1. the smoothing identity
z, g, s, K, Kp, e = sp.symbols("z gamma s K K' e", real=True)


def he(k, x, v):
    """He_k(x; v) = v^(k/2) He_k(x/sqrt(v)): the monic polynomials orthogonal under N(0, v)."""
    return sum((-1) ** m * sp.factorial(k) / (sp.factorial(m) * sp.factorial(k - 2 * m) * 2**m) * v**m
               * x ** (k - 2 * m) for m in range(k // 2 + 1))


def smooth(poly):
    """E over eps ~ N(0, 1) of a polynomial in (gamma z + s eps)."""
    p = sp.Poly(sp.expand(poly), e)
    return sp.expand(sum(c * (sp.factorial2(m[0] - 1) if m[0] % 2 == 0 else 0) for m, c in zip(p.monoms(), p.coeffs())))


delta = s**2 - (Kp - g**2 * K)
for k in range(11):
    lhs = smooth(sp.expand(he(k, g * z + s * e, Kp)))
    rhs = sum(sp.binomial(k, 2 * j) * sp.factorial2(2 * j - 1) * delta**j * g ** (k - 2 * j) * he(k - 2 * j, z, K)
              for j in range(k // 2 + 1))
    assert sp.expand(lhs - rhs) == 0, k
tex.append(r"\section*{1. The branch smoothing in Hermite modes}"
           r"For $z' = \gamma z + s\epsilon$ and every $k \le 10$ (exact polynomial identity, $\delta = s^2 - (K' - "
           r"\gamma^2K)$):"
           r"\[\mathbb E_\epsilon\,He_k(\gamma z + s\epsilon;\,K') = \sum_j\binom{k}{2j}(2j-1)!!\,\delta^j\,"
           r"\gamma^{k-2j}\,He_{k-2j}(z;\,K).\]")
print("1. smoothing identity: k <= 10")

# %% 2. the fourth cumulant and the pair covariance
xi, m2, m4, p22, zG, G1, G2 = sp.symbols("xi m_2 m_4 p_22 a g_1 g_2", real=True)
# conditional on layer l: E[z'^2] = gamma^2 z^2 + xi^2 G, E[z'^4] = gamma^4 z^4 + 6 gamma^2 xi^2 z^2 G + 3 xi^4 G^2,
# and two distinct neurons are independent given the layer; a = E[z_i^2 G] (the same for every neuron)
Ez2 = g**2 * m2 + xi**2 * G1
Ez4 = g**4 * m4 + 6 * g**2 * xi**2 * zG + 3 * xi**4 * G2
Epair = g**4 * p22 + 2 * g**2 * xi**2 * zG + xi**4 * G2
D_new = sp.expand(Ez4 - 3 * Ez2**2 - 3 * (Epair - Ez2**2))
D_old = sp.expand(m4 - 3 * m2**2 - 3 * (p22 - m2**2))
assert sp.expand(D_new - g**4 * D_old) == 0
tex.append(r"\section*{2. The fourth cumulant of one neuron}"
           r"With $D = \kappa_4(z_i) - 3\,\mathrm{Cov}(z_i^2, z_j^2)$ ($i \ne j$), one residual step gives "
           r"$D' = \gamma^4 D$ whatever $\sigma$ is; $D = 0$ at layer 1, so $D = 0$ at every layer and order.")
print("2. kappa_4 - 3 cov -> gamma^4 (kappa_4 - 3 cov)")

# %% 3. the chain: deep linear closed forms, then critical ReLU at large depth
gam, xi_, C_W = 0.8, 0.6, 1.0
lin = residual_nnlo(pdlt.MLP("linear", (1,) + (10,) * 12, C_W=C_W, gamma=gam, xi=xi_), [1.0])
t = gam**2 / (gam**2 + xi_**2 * C_W)
beta = 1 - t**2
for l in range(3, 13):
    want = 2 * beta**2 * (l - 1) * (l - 2) * lin.K[l - 1] ** 2
    assert abs(lin.V1[l - 1] - want) < 1e-11 * want, l
print("3a. deep linear with shortcuts: V1 = 2 beta^2 (l-1)(l-2) K^2 to l = 12")

depths = (10, 30, 60, 120)
relu = residual_nnlo(pdlt.MLP("relu", (1,) + (64,) * depths[-1], C_W=1.0, gamma=0.5**0.5), [1.0])
modes = [c.size for c in relu.caveats if c.kind == "modes"]
assert not modes or modes[0] < 1e-5
rows = []
for l in depths:
    i = l - 1
    k, v = relu.K[i], relu.V[i]
    r = (relu.U[i] * k / v**2, relu.V1[i] * k**2 / v**2, relu.G1[i] / (k * l), relu.G2[i] / (k * l * l))
    rows.append((l, *r))
    print(f"   l = {l:3d}: U K/V^2 = {r[0]:.4f}, V1 K^2/V^2 = {r[1]:.4f}, G1/(K l) = {r[2]:.4f}, "
          f"G2/(K l^2) = {r[3]:.4f}")
assert all(a[1] < b[1] < 3 for a, b in zip(rows, rows[1:]))          # rising toward the deep linear value, 3
body = " \\\\\n".join(f"{l} & {a:.4f} & {b:.4f} & {c:.4f} & {d:.4f}" for l, a, b, c, d in rows)
tex.append(r"\section*{3. The chain at large depth}"
           r"Deep linear networks with shortcuts ($\gamma = 0.8$, $\xi = 0.6$): $V_1 = 2\beta^2(\ell-1)(\ell-2)K^2$ "
           r"to $\ell = 12$. Critical ReLU at $\gamma^2 = 1/2$ (observed, not derived):"
           "\n\\begin{center}\\begin{tabular}{rrrrr}\n"
           r"$\ell$ & $UK/V^2$ & $V_1K^2/V^2$ & $G_1/(K\ell)$ & $G_2/(K\ell^2)$ \\ \hline" "\n"
           + body + "\n\\end{tabular}\\end{center}")
(OUT / "residual_nnlo.tex").write_text(document("\n".join(tex), title="pdlt: residual networks at second order in 1/n"))
print(f"wrote {OUT / 'residual_nnlo.tex'}")

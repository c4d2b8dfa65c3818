# %% [markdown]
# # Bayesian posterior at finite width: the O(1/n) expansion, derived and asserted
#
# Run: `python derivations/bayes.py [OUT_DIR]` (default `derivations/out`); writes `bayes.tex`.
# Conventions: derivations/README.md sections 2, 11; method: pdlt/theory/bayes.py.
#
# Given the last hidden layer, the outputs are exactly Gaussian with the stochastic metric G^: the posterior
# expectation of any F is E[w F]/E[w] over G^, with w the likelihood of y. Write G^ = K + Delta with
# E Delta = G1/n and E[Delta Delta] = V/n (higher cumulants O(1/n^2)).

# %%
import sys
from pathlib import Path

import numpy as np
import sympy as sp

from pdlt.latex import document, equation
from pdlt.theory.bayes import _derivatives, _expand, posterior_mean_closed_form

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = []

# %% [markdown]
# ## 1. The expansion of the ratio, symbolically
# For functions of two "metric entries" g = (g1, g2) (enough to carry every index pattern: first and second
# derivatives, mixed), with w = exp(l(g)) and F(g) arbitrary:
# E[wF]/E[w] = F + eps [dF.G1 + (1/2) d^2F:V + (dF (x) dl):V] + O(eps^2), eps = 1/n.
# Derive it by expanding numerator and denominator to second order in Delta and the ratio to first order in eps.

# %%
eps = sp.Symbol("epsilon", positive=True)
g = sp.symbols("g1 g2", real=True)
G1 = sp.symbols("G1_1 G1_2", real=True)
Vs = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"V_{min(i, j) + 1}{max(i, j) + 1}", real=True))
l = sp.Function("l")(*g)
F = sp.Function("F")(*g)


def expect(f):
    """E f(g + Delta) to O(eps): f + eps [df.G1 + (1/2) d^2 f : V]."""
    first = sum(sp.diff(f, g[i]) * G1[i] for i in range(2))
    second = sum(sp.diff(f, g[i], g[j]) * Vs[i, j] for i in range(2) for j in range(2)) / 2
    return f + eps * (first + second)


num, den = expect(sp.exp(l) * F), expect(sp.exp(l))
N0, N1 = num.subs(eps, 0), sp.diff(num, eps)
D0, D1 = den.subs(eps, 0), sp.diff(den, eps)
series = N0 / D0 + eps * (N1 * D0 - N0 * D1) / D0**2  # (N0 + eps N1)/(D0 + eps D1) to first order
claim = F + eps * (sum(sp.diff(F, g[i]) * G1[i] for i in range(2))
                   + sum(sp.diff(F, g[i], g[j]) * Vs[i, j] for i in range(2) for j in range(2)) / 2
                   + sum(sp.diff(F, g[i]) * sp.diff(l, g[j]) * Vs[i, j] for i in range(2) for j in range(2)))
assert sp.simplify(sp.expand(series - claim)) == 0
tex.append(r"\section*{Posterior expectations to $O(1/n)$}" + equation(
    r"\frac{E[wF]}{E[w]} = F + \frac1n\Big[\partial F\cdot G^{\{1\}} + \tfrac12\,\partial^2F:V + "
    r"(\partial F\otimes\partial\log w):V\Big] + O(1/n^2)"))

# %% [markdown]
# ## 2. The mean: automatic differentiation of this expansion equals the closed form of derivations/README.md §11.2
# For arbitrary (not network-derived) symmetric K (PD), G1 and a pair-symmetric V, one and two outputs, exact
# and noisy conditioning: the 1/n coefficient of the closed form (Richardson in n) equals the expansion.

# %%
rng = np.random.default_rng(0)
for nA, nB, nL, s2 in ((2, 1, 1, 0.0), (3, 2, 2, 0.1), (2, 2, 3, 0.5)):
    d = nA + nB
    A = rng.standard_normal((d, d))
    K = A @ A.T + d * np.eye(d)
    G1 = rng.standard_normal((d, d))
    G1 = G1 + G1.T
    B = rng.standard_normal((d * d, d * d))
    V = (B @ B.T).reshape(d, d, d, d)
    V = V + np.einsum("abcd->bacd", V) + np.einsum("abcd->abdc", V) + np.einsum("abcd->badc", V)
    V = V + np.einsum("abcd->cdab", V)
    y = rng.standard_normal((nA, nL))
    dlogw, mean, _ = _derivatives(nA, nL)
    args = (K, y, s2)
    m0, m_g1, m_v = _expand(mean(*args), np.asarray(dlogw(*args)), K, G1, V)

    def coef(n):
        return n * (posterior_mean_closed_form(K, G1, V, n, y, nA, s2) - m0)

    ref = 2 * coef(2e5) - coef(1e5)
    assert np.allclose(m_g1 + m_v, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max()), (m_g1 + m_v, ref)
tex.append(r"\section*{Check}The $1/n$ coefficient of the posterior mean from the expansion equals that of the "
           r"closed form (derivations/README.md section 11.2, after Yaida 2019) for random $K$, $G^{\{1\}}$, $V$; the Monte Carlo "
           r"reweighting of sampled networks is in \texttt{tests/test\_bayes.py}.")

(OUT / "bayes.tex").write_text(document(*tex, title="pdlt: finite-width Bayesian posterior"))
print(f"all Bayesian derivations asserted; wrote {OUT / 'bayes.tex'}")

# %% [markdown]
# # The NTK of one input through a bias-free ReLU network, at every width
#
# Run: `python derivations/relu_ntk.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result and the
# script writes `relu_ntk.tex`. Conventions and the reduction to scalars: `derivations/README.md` section 17.1; code:
# `pdlt/theory/relu_ntk.py` (which sums the same products with a transfer matrix over five states per layer; here they
# are expanded explicitly, a different algorithm).
#
# Setting: sigma = ReLU, C_W = 2 (criticality), C_b = 0, uniform hidden width n, one input with |x|^2/n_0 = 1,
# learning rates lambda_b, lambda_W. With N_k ~ Bin(n, 1/2) active neurons, X_k = chi^2_{N_k}/n, Y_k = chi^2_{N_k-1}/n
# and c = chi^2_1, all independent given the N's:
#
#     F_l/n = 2^l X_1 ... X_l,   z^2 = 2^L X_1 ... X_{L-1} c,   |g^(l)|^2 = z^2/F_l + 2 Y_l |g^(l+1)|^2,
#     H = sum_l |g^(l)|^2 (lambda_b + lambda_W F_{l-1}/n).
#
# 1. E[H] is the infinite-width NTK at every order in 1/n (only dead layers, probability 2^-n, move it).
# 2. Var(H)/E[H]^2: the exact rational function of n for small L, and its 1/n and 1/n^2 coefficients in closed form
#    in L, for the weight and the bias terms separately (polynomials fitted through L = 1..4 or 1..5 and confirmed at
#    the other depths up to 6); the 1/n coefficient is asserted against pdlt's O(1/n) NTK statistics. At large depth
#    the weights' is (11/3) L: the relative variance grows like exp(11 L/(3 n)) at first, and the second moment like
#    exp(5 L/n) deep in the regime L ~ n (Hanin and Nica; tests/theory/test_relu_ntk.py).
# 3. Both asserted against pdlt.relu_ntk_all_orders, whose exact values include the dead layers.
# 4. Two outputs: A, B, D, F (the one-input entries) for L <= 4 by conditional expectations taken layer by layer from
#    the bottom (a 2 x 2 Wishart factor given the level above, its moments in the entries of that level), asserted
#    against the chain's series, which sums paths with a transfer matrix instead; their O(1) and 1/n coefficients in
#    closed form in L (from the chain at L = 2..6, confirmed at 7..11 and by the expansion at L <= 4).

# %%
import sys
import warnings
from pathlib import Path

import sympy as sp

import pdlt
from pdlt.latex import document

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
warnings.simplefilter("ignore", pdlt.TruncationWarning)
tex = []
n, eps, lb, lw = sp.symbols("n epsilon lambda_b lambda_W", positive=True)


def binomial_moment(k):
    """E[N^k] for N ~ Bin(n, 1/2): the factorial moments n (n - 1) ... (n - j + 1)/2^j with Stirling numbers."""
    from sympy.functions.combinatorial.numbers import stirling

    return sp.expand(sum(stirling(k, j) * sp.ff(n, j) / 2**j for j in range(k + 1)))


EN = [binomial_moment(k) for k in range(9)]
assert sp.simplify(EN[1] - n / 2) == 0 and sp.simplify(EN[2] - n * (n + 1) / 4) == 0

# per-layer moments E[X^p Y^q] (binomial N, then chi-squares given N; X, Y divided by n)
MOM = {(0, 0): sp.Integer(1), (1, 0): sp.Rational(1, 2), (0, 1): sp.Rational(1, 2) - 1 / n,
       (2, 0): sp.Rational(1, 4) + sp.Rational(5, 4) / n, (1, 1): sp.Rational(1, 4) - sp.Rational(1, 4) / n,
       (0, 2): sp.Rational(1, 4) + sp.Rational(1, 4) / n - 1 / n**2}
# check the table against the binomial's moments (chi^2_k moments k and k(k+2))
for (p, q), want in {(1, 0): EN[1], (0, 1): EN[1] - 1, (2, 0): EN[2] + 2 * EN[1], (1, 1): EN[2] - EN[1],
                     (0, 2): EN[2] - 1}.items():
    assert sp.simplify(MOM[(p, q)] * n ** (p + q) - want) == 0


def ntk(L):
    """H for depth L as a polynomial in the symbols X_k, Y_k (k = 1..L-1) and c."""
    X = sp.symbols(f"X1:{L}")
    Y = sp.symbols(f"Y1:{L}")
    c = sp.Symbol("c")
    z2 = 2**L * sp.Mul(*X) * c
    B = {L: sp.Integer(1)}
    for l in range(L - 1, 0, -1):
        B[l] = sp.expand(z2 / (n * 2**l * sp.Mul(*X[:l])) + 2 * Y[l - 1] * B[l + 1])
    H = sum(B[l] * (lb + lw * 2 ** (l - 1) * sp.Mul(*X[:l - 1])) for l in range(1, L + 1))
    return sp.expand(H), X, Y, c


def expect(P, X, Y, c):
    """E of a polynomial in the per-layer symbols: monomial by monomial, layer moments from MOM, E c = 1, E c^2 = 3."""
    total = 0
    for mono, coef in sp.Poly(P, *X, *Y, c).terms():
        k = len(X)
        val = coef * {0: 1, 1: 1, 2: 3}[mono[-1]]
        for j in range(k):
            val *= MOM[(mono[j], mono[k + j])]
        total += val
    return sp.simplify(total)


# %% [markdown]
# ## 1. The mean NTK has no 1/n corrections

# %%
stats = {}
for L in range(1, 7):
    H, X, Y, c = ntk(L)
    mean = expect(H, X, Y, c)
    second = expect(sp.expand(H * H), X, Y, c)
    stats[L] = (mean, sp.factor(sp.simplify(second - mean**2)))
    # infinite width: Theta = L lambda_b + L lambda_W (every layer adds lambda_b + lambda_W K with K = 1, chi_perp = 1)
    assert sp.simplify(mean - L * (lb + lw)) == 0, (L, mean)
tex.append(r"\section*{The mean NTK}" "\n"
           r"For every depth checked ($L \le 6$), $\mathbb E[H] = L(\lambda_b + \lambda_W)$ exactly: the "
           r"infinite-width "
           r"NTK, with no correction at any order in $1/n$ (dead layers, of probability $2^{-n}$ each, aside)." "\n")

# %% [markdown]
# ## 2. The variance: exact for small L, and its first two orders in closed form

# %%
rel = {L: sp.simplify(stats[L][1] / stats[L][0] ** 2) for L in stats}
series = {L: sp.series(rel[L].subs(n, 1 / eps), eps, 0, 3).removeO() for L in rel}
first = {L: sp.simplify(series[L].coeff(eps, 1)) for L in rel}
second = {L: sp.simplify(series[L].coeff(eps, 2)) for L in rel}
Ls = sp.Symbol("L", positive=True)
closed = {}
for name, coeffs, deg in (("first", first, 3), ("second", second, 4)):
    for part, sub in (("weights", {lb: 0, lw: 1}), ("biases", {lb: 1, lw: 0})):
        pts = [(L, sp.nsimplify(coeffs[L].subs(sub))) for L in range(1, 7)]
        # polynomial in L times 1/L^2 (the variance over Theta^2 = L^2 (lambda_b + lambda_W)^2)
        poly = sp.interpolate([(L, v * L**2) for L, v in pts[:deg + 1]], Ls)
        for L, v in pts[deg + 1:]:                      # the spare depths confirm the degree
            assert sp.simplify(poly.subs(Ls, L) - v * L**2) == 0, (name, part, L)
        closed[(name, part)] = sp.factor(poly / Ls**2)
# the 1/n coefficient is the O(1/n) theory's (A + 2B)/(n Theta^2) of pdlt's NTK statistics (Gaussian averages)
from pdlt.theory.ntk_statistics import ntk_statistics  # noqa: E402

for L in range(2, 7):
    st = ntk_statistics(pdlt.MLP("relu", (1,) + (50,) * (L - 1) + (1,), C_W=2.0), [[1.0]], 0.0, 1.0)
    want = float((st.A[-1, 0, 0, 0, 0] + 2 * st.B[-1, 0, 0, 0, 0]) / st.Theta[-1, 0, 0] ** 2)
    assert abs(float(closed[("first", "weights")].subs(Ls, L)) - want) < 1e-12 * want, L
tex.append(r"\section*{The relative variance}" "\n"
           r"Exact at depth $L = 3$, weights only ($\lambda_b = 0$): $\mathrm{Var}(H)/\mathbb E[H]^2 = "
           + sp.latex(sp.factor(rel[3].subs({lb: 0, lw: 1}))) + r"$." "\n\n"
           r"Its $1/n$ and $1/n^2$ coefficients at every depth $L$ (weights only; biases only):" "\n"
           r"\begin{align*}" "\n"
           r"n\,\frac{\mathrm{Var}\,H}{(\mathbb E H)^2}\Big|_{1/n} &= " + sp.latex(closed[("first", "weights")])
           + r"\quad\text{or}\quad " + sp.latex(closed[("first", "biases")]) + r",\\" "\n"
           r"n^2\,\frac{\mathrm{Var}\,H}{(\mathbb E H)^2}\Big|_{1/n^2} &= " + sp.latex(closed[("second", "weights")])
           + r"\quad\text{or}\quad " + sp.latex(closed[("second", "biases")]) + "." "\n" r"\end{align*}" "\n")
print("1/n coefficient of Var/Theta^2 (weights):", closed[("first", "weights")])
print("1/n coefficient of Var/Theta^2 (biases): ", closed[("first", "biases")])
print("1/n^2 coefficient (weights):", closed[("second", "weights")])
print("1/n^2 coefficient (biases): ", closed[("second", "biases")])

# %% [markdown]
# ## 3. Against pdlt.relu_ntk_all_orders
#
# Its series in the inverse widths must have these coefficients; its exact values (dead layers included) must equal
# the rational functions above up to the dead layers' 2^-n (n = 40: below 1e-11).

# %%
for lam in ((0.0, 1.0), (1.0, 0.0), (0.7, 1.3)):
    for L in range(2, 7):
        net = pdlt.MLP("relu", (1,) + (40,) * (L - 1) + (1,), C_W=2.0)
        ex = pdlt.relu_ntk_all_orders(net, [[1.0]], *lam)
        sub = {lb: lam[0], lw: lam[1]}
        T = float(stats[L][0].subs(sub))
        assert abs(ex.series["Theta"][L - 1, 0, 0] - T) < 1e-13 * T
        for k, coef in ((1, first[L]), (2, second[L])):
            want = float(coef.subs(sub)) * T**2 / 40**k
            assert abs(ex.series["variance"][L - 1, 0, k] - want) < 1e-12 * T**2, (lam, L, k)
        exact_var = float(stats[L][1].subs(sub).subs(n, 40))
        assert abs(ex.variance[L - 1, 0] - exact_var) < 1e-11 * T**2, (lam, L)
        assert abs(ex.Theta[L - 1, 0] - T) < 1e-11 * T
print("pdlt.relu_ntk_all_orders: series and exact values agree")

# %% [markdown]
# ## 4. Two outputs: A, B, D, F
#
# For output neurons a, b the Gram matrix Gamma_ab = g_a . g_b of the backward vectors obeys
# Gamma^(l) = z z^T/F_l + 2 W_l (here a = 1, C_W = 2), where given the level above W_l is Wishart:
# E[W_ab] = (m/n) G_ab, E[W_ab W_cd] = (m/n^2)(G_ac G_bd + G_ad G_bc) + (m^2/n^2) G_ab G_cd, with G = Gamma^(l+1) and
# m = N_l - 1; Gamma^(L) = 1 and z_a z_b = 2^L X_1 ... X_{L-1} c_a c_b with c iid unit normals. Each moment is expanded
# as a polynomial in the entries of Gamma^(l) and the per-layer symbols, and layer l is integrated out (W_l given the
# level above, then X_l = chi^2_N/n and m = N - 1 jointly over the binomial N) before layer l + 1 is substituted.


# %%
NSYM, MSYM = sp.symbols("N m")


def over_layer(P, X):
    """E over one layer of a polynomial in X = chi^2_N/n and m = N - 1 (E[chi^2_N^p | N] = N (N + 2) ... )."""
    total = 0
    for (p, q), coef in sp.Poly(sp.expand(P), X, MSYM).terms():
        chi = sp.Mul(*[NSYM + 2 * i for i in range(p)]) / n**p
        total += coef * sum(c * EN[k[0]] for k, c in sp.Poly(sp.expand(chi * (NSYM - 1) ** q), NSYM).terms())
    return sp.expand(total)


def two_outputs(L):
    """E[H_11], E[H_11 H_22], E[H_12^2], E[z^2], E[H_11 z_2^2], E[H_12 z_1 z_2] at depth L (uniform width n)."""
    X = sp.symbols(f"X1:{L}")
    c1, c2 = sp.symbols("c1 c2")
    G = {l: sp.Matrix(2, 2, lambda a, b: sp.Symbol(f"G{l}_{min(a, b)}{max(a, b)}")) for l in range(1, L + 1)}
    H = sum((G[l] * (lb + lw * 2 ** (l - 1) * sp.Mul(*X[:l - 1])) for l in range(1, L + 1)), sp.zeros(2, 2))
    z2 = 2**L * sp.Mul(*X)
    P = {"H": H[0, 0], "cross": H[0, 0] * H[1, 1], "off": H[0, 1] ** 2, "z2": z2 * c1**2,
         "Hz": H[0, 0] * z2 * c2**2, "Hzz": H[0, 1] * z2 * c1 * c2}
    w = sp.symbols("w00 w01 w11")
    at = {w[0]: (0, 0), w[1]: (0, 1), w[2]: (1, 1)}
    for l in range(1, L):
        up = G[l + 1]
        zz = (2 ** (L - l) / n) * sp.Mul(*X[l:]) * sp.Matrix([[c1 * c1, c1 * c2], [c1 * c2, c2 * c2]])
        sub = {G[l][0, 0]: zz[0, 0] + 2 * w[0], G[l][0, 1]: zz[0, 1] + 2 * w[1], G[l][1, 1]: zz[1, 1] + 2 * w[2]}
        for key in P:
            out = 0
            for mono, coef in sp.Poly(sp.expand(P[key].subs(sub)), *w).terms():
                ws = [at[v] for v, e in zip(w, mono) for _ in range(e)]
                if not ws:
                    val = 1
                elif len(ws) == 1:
                    val = MSYM / n * up[ws[0]]
                else:
                    (a, b), (c, d) = ws
                    val = (MSYM / n**2 * (up[a, c] * up[b, d] + up[a, d] * up[b, c])
                           + MSYM**2 / n**2 * up[a, b] * up[c, d])
                out += coef * val
            P[key] = over_layer(out, X[l - 1])
    gauss = {0: 1, 1: 0, 2: 1, 3: 0, 4: 3}                      # E c^k of a unit normal
    top = {G[L][0, 0]: 1, G[L][0, 1]: 0, G[L][1, 1]: 1}
    return {key: sp.factor(sum(coef * gauss[i] * gauss[j] for (i, j), coef in
                               sp.Poly(sp.expand(v.subs(top)), c1, c2).terms())) for key, v in P.items()}


two = {L: two_outputs(L) for L in range(2, 5)}
tensors = {}
for L, r in two.items():
    assert sp.simplify(r["H"] - L * (lb + lw)) == 0 and sp.simplify(r["z2"] - 2) == 0      # K = C_W |x|^2/n_0
    T = r["H"]
    tensors[L] = {"A": sp.factor(n * (r["cross"] - T**2)), "B": sp.factor(n * r["off"]),
                  "D": sp.factor(n * (r["Hz"] - T * r["z2"])), "F": sp.factor(n * r["Hzz"])}
# against the chain's series at width 40 (the O(1) and 1/n terms; dead layers have no series)
for lam in ((0.0, 1.0), (1.0, 0.0), (0.7, 1.3)):
    for L in two:
        ex = pdlt.relu_ntk_all_orders(pdlt.MLP("relu", (1,) + (40,) * (L - 1) + (1,), C_W=2.0), [[1.0]], *lam)
        for q, expr in tensors[L].items():
            ser = sp.series(expr.subs({lb: lam[0], lw: lam[1]}).subs(n, 1 / eps), eps, 0, 2).removeO()
            for k in (0, 1):
                want = float(ser.coeff(eps, k)) / 40**k
                got = float(ex.series[q][L - 1, 0, k + 1])
                assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (lam, L, q, k, got, want)
weights = {q: sp.factor(tensors[3][q].subs({lb: 0, lw: 1}) / 9) for q in "AB"}
tex.append(r"\section*{Two outputs}" "\n"
           r"The one-input entries of the NTK statistics $A = n\,\mathrm{Cov}(H_{11}, H_{22})$ and "
           r"$B = n\,\mathbb E[H_{12}^2]$ over two output neurons, exact at depth $L = 3$, weights only, over "
           r"$\mathbb E[H]^2 = 9$:" "\n"
           r"\[ \frac{A}{\Theta^2} = " + sp.latex(weights["A"]) + r",\qquad \frac{B}{\Theta^2} = "
           + sp.latex(weights["B"]) + r". \]" "\n"
           r"Their sum $A + 2B$ is $n$ times the relative variance above; for $L \le 4$ and three choices of the "
           r"learning rates, $A$, $B$, $D$, $F$ agree with the series of \texttt{pdlt.relu\_ntk\_all\_orders} in "
           r"their $O(1)$ and $1/n$ terms." "\n")
print("two outputs, L = 3, weights only: A/Theta^2 =", weights["A"], " B/Theta^2 =", weights["B"])
assert sp.simplify(weights["A"] + 2 * weights["B"] - n * rel[3].subs({lb: 0, lw: 1})) == 0
print("A, B, D, F: the chain's series agree (L <= 4)")

# %% [markdown]
# ### Their first two orders at every depth
#
# Weights only, critical, uniform width: the O(1) and 1/n coefficients of A/Theta^2, B/Theta^2 (Theta = L) and of
# D/(Theta K), F/(Theta K) (K = 2) are L^-1 times polynomials in L. They are read off the chain's series at L = 2..6 as
# exact rationals, interpolated, confirmed at L = 7..11 and against the layer-by-layer expansion above (L <= 4).

# %%
depths = range(2, 12)
chain = {}
for L in depths:
    ex = pdlt.relu_ntk_all_orders(pdlt.MLP("relu", (1,) + (40,) * (L - 1) + (1,), C_W=2.0), [[1.0]], 0.0, 1.0)
    for q in "ABDF":
        unit = L**2 if q in "AB" else 2 * L
        chain[(q, L)] = (ex.series[q][L - 1, 0, 1] / unit, ex.series[q][L - 1, 0, 2] * 40 / unit)
depth_forms = {}
for q in "ABDF":
    for k in (0, 1):
        pts = [(L, sp.nsimplify(chain[(q, L)][k] * L, rational=True, tolerance=1e-10)) for L in depths]
        poly = sp.interpolate(pts[:5], Ls)
        for L, v in pts[5:]:                                  # the spare depths confirm the degree
            assert abs(float(poly.subs(Ls, L) - v)) < 1e-9 * max(1.0, abs(float(v))), (q, k, L)
        form = sp.factor(poly / Ls)
        for L in range(2, 5):                                 # and the expansion above, exactly
            unit = L**2 if q in "AB" else 2 * L
            want = sp.series(tensors[L][q].subs({lb: 0, lw: 1}).subs(n, 1 / eps), eps, 0, 2).removeO().coeff(eps, k)
            assert sp.simplify(form.subs(Ls, L) - want / unit) == 0, (q, k, L)
        depth_forms[(q, k)] = form
# A + 2B is the relative variance's coefficients of section 2
for k, name in ((0, "first"), (1, "second")):
    assert sp.simplify(depth_forms[("A", k)] + 2 * depth_forms[("B", k)] - closed[(name, "weights")]) == 0
rows = [(r"A/\Theta^2", "A"), (r"B/\Theta^2", "B"), (r"D/(\Theta K)", "D"), (r"F/(\Theta K)", "F")]
tex.append(r"Their $O(1)$ and $1/n$ terms at every depth (weights only, critical, uniform width $n$; $K = 2$):" "\n"
           r"\begin{align*}" "\n"
           + r"\\" "\n".join(lab + " &= " + sp.latex(depth_forms[(q, 0)]) + r" + \frac{1}{n}\,"
                              + sp.latex(depth_forms[(q, 1)]) + r" + O(1/n^2)" for lab, q in rows)
           + "\n" r"\end{align*}" "\n"
           r"At large depth the $1/n$ term is about $2$ to $3\,L/n$ times the $O(1)$ one "
           r"($27/14$, $5/2$, $13/6$ and $3$ for $A$, $B$, $D$, $F$)." "\n")
for lab, q in rows:
    print(f"{lab}: {depth_forms[(q, 0)]} + (1/n) {depth_forms[(q, 1)]}")
ratios = [sp.limit(depth_forms[(q, 1)] / (Ls * depth_forms[(q, 0)]), Ls, sp.oo) for q in "ABDF"]
assert ratios == [sp.Rational(27, 14), sp.Rational(5, 2), sp.Rational(13, 6), 3], ratios

(OUT / "relu_ntk.tex").write_text(document("\n".join(tex), title="pdlt: the NTK of a ReLU network at every width"))
print(f"wrote {OUT / 'relu_ntk.tex'}")

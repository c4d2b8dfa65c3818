r"""The O(1/n) NTK, dNTK and ddNTK statistics of residual MLPs: derivation and executable checks
(derivations/README.md section 21; code: pdlt/theory/residual_ntk.py).

Run: ``python derivations/residual_ntk.py [out_dir]`` (exits non-zero if an assertion fails; ~10 s).

1. Jets. Along k random parameter directions ``dtheta_r`` (variances lambda_b, lambda_W/n_{l-1}) expand a neuron
   multilinearly, ``z(theta + sum_r e_r dtheta_r) = sum_S e_S z_S``. Since E[dtheta_r dtheta_r^T] = Lambda, the NTK,
   dNTK and ddNTKs are moments of the jet: H_ij = E[z_i{1} z_j{1}], dH_i0i1i2 = E[z_i0{12} z_i1{1} z_i2{2}],
   ddI = E[z_i0{123} z_i1{1} z_i2{2} z_i3{3}], ddII = E[z_i1{12} z_i2{13} z_i3{2} z_i4{3}]. So every O(1/n) statistic
   is an entry of the four-point vertex V (or NLO kernel G1) of the state ``x = (z_S)_S``.

2. The step. With ``(W, b) -> (W, b) + sum_r e_r (dW_r, db_r)``, ``eps_S = (W s)_S + sum_{r in S} (dW_r s)_{S-r}``
   (+ biases), ``s_S`` the jet of sigma(z) (Faa di Bruno). Given the layer, eps is Gaussian and iid over neurons with
   a metric that is a constant plus a linear map of the neurons' ``s s^T``: the trajectory theory of section 15
   applies with that map in place of C_W.

3. Checks here:
   (a) linear residual networks exactly: the rows of the jet have an O(n)-invariant law and E[G], E[G (x) G]
       (G = X^T X/n) follow a closed recursion at every n (Wishart moments). Done in sympy with e = 1/n exact along
       two directions; the 1/n coefficients of Theta1, A, B, D, F, P, Q (and V) equal the code's;
   (b) gamma = 0 gives the book's recursions for all of Theta1 and A..U (pdlt.theory.ntk_statistics, a separate
       derivation);
   (c) critical deep linear residual networks in closed form (gamma symbolic): A, B, D, F, P, Q at layers 2..4,
       printed as LaTeX; at gamma = 0 they equal the book's dense recursions.
"""
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt.latex import document
from pdlt.theory.ntk_statistics import ntk_statistics
from pdlt.theory.residual_ntk import residual_ntk_statistics

warnings.simplefilter("ignore")  # truncation caveats of the comparisons are irrelevant here
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


E = sp.Symbol("e")  # 1/n


def gram_chain(k, K1, T1, C_W, C_b, gamma, xi, lb, lw):
    """Exact E[G] (N x N) and E[G_ab G_cd] (dict) per layer of a linear residual network's parameter jet along k
    directions (components: bit masks S, N = 2^k), as polynomials in e = 1/n.

    One step: X' = gamma X + xi E, rows of E iid N(0, S), S_ST = c_ST + C_W G_ST + lambda_W sum_{r in S & T}
    G_{S-r, T-r}. Given X, M = X^T E/n and Q = E^T E/n have E[M] = 0, E[Q] = S, E[M_ab M_cd] = e G_ac S_bd,
    E[Q_ab Q_cd] = S_ab S_cd + e (S_ac S_bd + S_ad S_bc), and odd moments vanish; G' = gamma^2 G + gamma xi
    (M + M^T) + xi^2 Q. Layer 1 is linear in its parameters: its jet is (z, tangents, 0, ...)."""
    N = 1 << k
    idx = range(N)
    S1 = sp.zeros(N, N)
    S1[0, 0] = K1
    for r in range(k):
        S1[1 << r, 1 << r] = T1
    m1 = S1
    m2 = {(a, b, c, d): S1[a, b] * S1[c, d] + E * (S1[a, c] * S1[b, d] + S1[a, d] * S1[b, c])
          for a, b, c, d in itertools.product(idx, repeat=4)}
    out = [(m1, m2)]
    Gs = {(a, b): sp.Symbol(f"G_{min(a, b)}_{max(a, b)}") for a, b in itertools.product(idx, repeat=2)}
    gens = sorted(set(Gs.values()), key=str)
    where = {v: key for key, v in Gs.items()}
    for l in range(1, len(C_W)):
        g, x, cw = gamma[l], xi[l], C_W[l]
        c = sp.zeros(N, N)
        c[0, 0] = C_b[l]
        for r in range(k):
            c[1 << r, 1 << r] = lb[l]
        S = {(a, b): c[a, b] + cw * Gs[(a, b)]
             + sum(lw[l] * Gs[(a ^ 1 << r, b ^ 1 << r)] for r in range(k) if a >> r & 1 and b >> r & 1)
             for a, b in itertools.product(idx, repeat=2)}
        A = {key: g**2 * Gs[key] + x**2 * S[key] for key in S}

        def expect(expr, m1=m1, m2=m2):
            poly = sp.Poly(sp.expand(expr), *gens)
            tot = 0
            for mon, coef in poly.terms():
                syms = [s_ for s_, p_ in zip(poly.gens, mon) for _ in range(p_)]
                if not syms:
                    tot += coef
                elif len(syms) == 1:
                    tot += coef * m1[where[syms[0]]]
                else:
                    tot += coef * m2[where[syms[0]] + where[syms[1]]]
            return sp.expand(tot)

        new1 = sp.Matrix(N, N, lambda a, b: expect(A[(a, b)]))
        new2 = {}
        for a, b, cc, d in itertools.product(idx, repeat=4):
            if (a, b, cc, d) in new2:
                continue
            if (a ^ b) != (cc ^ d):  # odd in some direction: vanishes exactly
                val = 0
            else:
                cross = Gs[(a, cc)] * S[(b, d)] + Gs[(a, d)] * S[(b, cc)] + Gs[(b, cc)] * S[(a, d)] \
                    + Gs[(b, d)] * S[(a, cc)]
                wish = S[(a, cc)] * S[(b, d)] + S[(a, d)] * S[(b, cc)]
                val = expect(A[(a, b)] * A[(cc, d)] + E * (g**2 * x**2 * cross + x**4 * wish))
            for p, q in itertools.permutations([(a, b), (cc, d)]):
                for pp in {p, p[::-1]}:
                    for qq in {q, q[::-1]}:
                        new2[pp + qq] = val
        m1, m2 = new1, new2
        out.append((m1, m2))
    return out


def distinct(m1, m2, a, b, c, d):
    """1/n coefficient of n (E[X_ia X_ib X_jc X_jd] - E[G_ab] E[G_cd]) (i != j) and its O(1) part (must vanish):
    O(n) invariance gives E[G_ab G_cd] = x1 + e (x2 + x3) and its two relabelings."""
    y = sp.Matrix([m2[(a, b, c, d)], m2[(a, c, b, d)], m2[(a, d, b, c)]])
    Mx = sp.Matrix([[1, E, E], [E, 1, E], [E, E, 1]])
    x1 = sp.series(sp.simplify((Mx.inv() @ y)[0]), E, 0, 3).removeO()
    conn = sp.expand(x1 - m1[a, b] * m1[c, d])
    return conn.coeff(E, 0), conn.coeff(E, 1)


# jet entries of each statistic (bit masks: 0 = z, 1, 2 = first-order tangents, 3 = their second derivative)
ENTRIES = {"A": (1, 1, 2, 2), "B": (1, 2, 1, 2), "D": (1, 1, 0, 0), "F": (1, 0, 1, 0), "V": (0, 0, 0, 0),
           "P": (3, 0, 1, 2), "Q": (3, 1, 2, 0)}


# --------------------------------------------------------------------------------- (a) linear residual networks
R = sp.Rational
L = 4
pars = dict(C_W=[1, R(9, 10), R(7, 10), R(11, 10)], C_b=[0, R(1, 5), R(1, 10), R(3, 10)],
            gamma=[0, R(3, 5), R(-4, 5), R(1, 2)], xi=[1, R(9, 10), R(6, 5), R(7, 10)],
            lb=[R(7, 10), R(2, 5), 0, R(9, 10)], lw=[R(13, 10), R(3, 5), R(6, 5), R(1, 2)])
K1, T1 = R(9, 10), R(11, 10)
chain = gram_chain(2, K1, T1, *pars.values())
num = residual_ntk_statistics(pdlt.activation("linear"), float(K1), float(T1),
                              *[[float(v) for v in a] for a in pars.values()])
worst, o1 = 0.0, 0.0
for l, (m1, m2) in enumerate(chain):
    worst = max(worst, abs(float(m1[1, 1].coeff(E, 1)) - num["Theta1"][l].item()))
    for name, ix in ENTRIES.items():
        c0, c1 = distinct(m1, m2, *ix)
        o1 = max(o1, abs(float(c0)))
        worst = max(worst, abs(float(c1) - num[name][l].item()) / max(1.0, abs(float(c1))))
check("linear residual network: the exact 1/n coefficients of Theta1, A, B, D, F, P, Q, V equal the code's "
      "(4 layers, gamma = 0.6, -0.8, 0.5, biases and learning rates everywhere)", worst < 1e-12, f"max err {worst:.1e}")
check("linear residual network: the O(1) parts of the connected moments vanish exactly", o1 == 0.0)

# --------------------------------------------------------------------------------- (b) gamma = 0: the book
for name, CW, Cb in (("tanh", 1.3, 0.2), ("relu", 2.0, 0.1), ("gelu", 1.6, 0.1)):
    Ln = 6
    net = pdlt.MLP(name, (1,) + (10,) * Ln, C_W=CW, C_b=Cb)
    book = ntk_statistics(net, np.array([[0.8]]), 0.7, 1.3)
    r = residual_ntk_statistics(pdlt.activation(name), book.K[0, 0, 0], book.Theta[0, 0, 0], [CW] * Ln, [Cb] * Ln,
                                [0.0] * Ln, [1.0] * Ln, [0.7] * Ln, [1.3] * Ln)
    err = max(np.max(np.abs(r[k] - getattr(book, k))) / max(np.max(np.abs(getattr(book, k))), np.max(book.Theta))
              for k in ("Theta1", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"))
    check(f"gamma = 0: the jet state reproduces the book's recursions for Theta1 and A..U ({name})", err < 1e-11,
          f"rel err {err:.1e}")

# --------------------------------------------------------------------------------- (c) critical deep linear
g = sp.Symbol("gamma")
Lc = 4
crit = gram_chain(2, 1, 1, [1] * Lc, [0] * Lc, [0] + [g] * (Lc - 1), [1] + [sp.sqrt(1 - g**2)] * (Lc - 1),
                  [0] * Lc, [1] * Lc)
rows = []
for l in range(1, Lc):
    m1, m2 = crit[l]
    vals = {name: sp.factor(sp.simplify(distinct(m1, m2, *ix)[1])) for name, ix in ENTRIES.items() if name != "V"}
    theta = sp.simplify(m1[1, 1].coeff(E, 0))
    rows.append((l + 1, theta, vals))
    # gamma = 0 is the dense critical linear network: against the book's recursions (pdlt.theory.ntk_statistics)
    dense = ntk_statistics(pdlt.MLP("linear", (1,) + (8,) * Lc, C_W=1.0), np.array([[1.0]]), 0.0, 1.0)
    ok = all(abs(float(v.subs(g, 0)) - getattr(dense, k)[l].item()) < 1e-12 for k, v in vals.items())
    num_g = residual_ntk_statistics(pdlt.activation("linear"), 1.0, 1.0, [1.0] * Lc, [0.0] * Lc,
                                    [0.0] + [0.45] * (Lc - 1), [1.0] + [float(np.sqrt(1 - 0.45**2))] * (Lc - 1),
                                    [0.0] * Lc, [1.0] * Lc)
    ok_g = all(abs(float(v.subs(g, 0.45)) - num_g[k][l].item()) < 1e-12 * max(1, abs(float(v.subs(g, 0.45))))
               for k, v in vals.items())
    check(f"critical deep linear residual, layer {l + 1}: closed forms in gamma equal the book at gamma = 0 and the "
          "code at 0.45",
          ok and ok_g)
    # each branch adds xi^2 lambda_W K = 1 - gamma^2 to an NTK that chi = 1 carries over unchanged
    check(f"critical deep linear residual, layer {l + 1}: Theta = 1 + {l} (1 - gamma^2)",
          sp.simplify(theta - (1 + l * (1 - g**2))) == 0)

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = [r"\section*{NTK statistics of residual networks}",
       r"Along random parameter directions $\delta\theta_r$ a neuron's multilinear jet $z_S$ ($S$ a set of directions) "
       r"turns the NTK, dNTK and ddNTKs into its moments, e.g.\ $\mathbb E[z_{i,\{1\}} z_{j,\{1\}}] = \widehat H_{ij}$ "
       r"and $\mathbb E[z_{i_0,\{12\}} z_{i_1,\{1\}} z_{i_2,\{2\}}] = \widehat{dH}_{i_0 i_1 i_2}$. The statistics are "
       r"entries of the four-point vertex and NLO kernel of the jet:",
       r"\[ A = V_{(1,1)(2,2)},\quad B = V_{(1,2)(1,2)},\quad D = V_{(1,1)(\emptyset,\emptyset)},\quad "
       r"F = V_{(1,\emptyset)(1,\emptyset)},\quad P = V_{(12,\emptyset)(1,2)},\quad Q = V_{(12,1)(2,\emptyset)}, \]",
       r"and $\Theta^{\{1\}} = G^{\{1\}}_{(1,1)}$. The residual step moves the jet as $x' = \gamma x + \xi\epsilon$, "
       r"and given the layer $\epsilon$ is Gaussian with a metric that is a linear map of "
       r"$\langle s s^{T}\rangle$, $s$ the jet of $\sigma(z)$.",
       r"\subsection*{Critical deep linear residual networks}",
       r"$\sigma(z) = z$, $K^{(1)} = \Theta^{(1)} = 1$, $\xi^2 C_W = 1 - \gamma^2$, $C_b = \lambda_b = 0$, "
       r"$\lambda_W = 1$; exact $1/n$ coefficients of the Gram-matrix chain:"]
for l, theta, vals in rows:
    tex.append(rf"\paragraph{{Layer {l}}} $\Theta = {sp.latex(theta)}$.")
    for k, v in vals.items():
        tex.append(rf"\[ {k}^{{({l})}} = {sp.latex(v)} \]")
(OUT / "residual_ntk.tex").write_text(document(*tex, title="pdlt: NTK statistics of residual networks"))
print(f"wrote {OUT / 'residual_ntk.tex'}")
if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)

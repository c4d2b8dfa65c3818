r"""Influence of datapoints: derivation and executable checks (derivations/README.md §20; code: pdlt/conditioning.py,
pdlt/theory/influence.py, pdlt/theory/locality.py, pdlt/theory/interactions.py).

Run: ``python derivations/influence.py [OUT_DIR]`` (exits non-zero if an assertion fails; ~10 s).

1. The tangent of a pair average without second derivatives. Rescaling one coordinate,
   ``d/dt <s((1+t) z_a) s(z_b)> = <z_a s'_a s_b>``, and the same change of the kernel is
   ``dK_aa = 2 t K_aa``, ``dK_ab = t K_ab``, so ``<z_a s'_a s_b> = 2 K_aa dP/dK_aa + K_ab dP/dK_ab`` with
   ``dP/dK_ab = <s'_a s'_b>`` (Price). Checked symbolically on the ReLU arc-cosine closed form (where
   ``z s'(z) = s(z)``), and for erf: ``pair_tangent`` (quadrature of ``<z s' s>``) against the derivatives of its
   closed form.
2. The response of Gaussian conditioning to moving one input (pdlt/conditioning.py): derived here with sympy for
   two training inputs and one test input by differentiating ``m = G_BA C^{-1} y`` and ``S = G_BB - G_BA C^{-1} G_AB``
   along ``dG = e_a r^T + r e_a^T - r_a e_a e_a^T``, against the formulas of the module.
3. One training particle at O(1/n): the exact posterior ``E[w m] / E[w]`` with ``m = G_ba y / (G_aa + s^2)`` and
   ``w = N(y; 0, G_aa + s^2)``, expanded to first order in the metric's covariance ``V/n`` (and G1/n), is an odd
   cubic in y; its y^3 coefficient, derived symbolically here, is what ``pdlt.interactions`` reads off by
   polarization (checked on a tanh network's K, G1, V).
4. Deep linear networks at criticality (C_W = 1, C_b = 0): the kernel is the same at every depth, so the influence
   profile is depth independent; and the ordered phase flattens at the perpendicular correlation length.
5. Depth laws (derivations/README.md §20.3): the scale-invariant angle map's expansion and its ``beta`` from the
   slopes (against a leaky kernel map), ``rho' - rho = O(K^2)`` for odd K*=0 activations (Isserlis), and the local
   exponent of critical ReLU approaching 3.
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt.conditioning import condition, row_response
from pdlt.latex import document
from pdlt.theory.kernel import pair_tangent

warnings.simplefilter("ignore")
failures = []
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
tex = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


# --------------------------------------------------------------------------------- 1. pair tangent
k11, k22, k12, t = sp.symbols("K_11 K_22 K_12 t", positive=True)
th = sp.acos(k12 / sp.sqrt(k11 * k22))
P_relu = sp.sqrt(k11 * k22) / (2 * sp.pi) * (sp.sin(th) + (sp.pi - th) * sp.cos(th))
dP_relu = (sp.pi - th) / (2 * sp.pi)
# <z_a s'_a s_b> = <s_a s_b> for ReLU
A_relu = (P_relu - k12 * dP_relu) / (2 * k11)
pts = [{k11: 1.3, k22: 0.7, k12: 0.4}, {k11: 0.5, k22: 2.0, k12: -0.6}]
ok = all(abs(float((sp.diff(P_relu, k11) - A_relu).subs(p))) < 1e-13 for p in pts)
ok &= all(abs(float((sp.diff(P_relu, k12) - dP_relu).subs(p))) < 1e-13 for p in pts)
check("ReLU: dP/dK_11 = (<z s' s> - K_12 <s' s'>) / (2 K_11) and dP/dK_12 = <s' s'> (arc-cosine closed form)", ok)
# erf (s = erf(z)): P = (2/pi) asin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22))),
# <s' s'> = (4/pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2)
P_erf = 2 / sp.pi * sp.asin(2 * k12 / sp.sqrt((1 + 2 * k11) * (1 + 2 * k22)))
dP_erf = 4 / sp.pi / sp.sqrt((1 + 2 * k11) * (1 + 2 * k22) - 4 * k12**2)
check("erf: dP/dK_12 = <s' s'> on its closed form (Price)",
      all(abs(float((sp.diff(P_erf, k12) - dP_erf).subs(p))) < 1e-13 for p in pts))
Kp = np.array([[1.3, 0.4], [0.4, 0.7]])
P1, A, Dd = pair_tangent("relu", Kp)
check("pair_tangent (ReLU) = the closed form", abs(A[0, 1] - float(A_relu.subs(pts[0]))) < 1e-12
      and abs(P1[0, 1] - float(dP_relu.subs(pts[0]))) < 1e-12)
# erf by quadrature in pdlt against the derivative of the closed form
P1, A, Dd = pair_tangent(pdlt.activation(sp.erf(sp.Symbol("z"))), Kp)
check("pair_tangent (erf, quadrature) = d/dK of the closed form", abs(A[0, 1] - float(sp.diff(P_erf, k11).subs(pts[0])))
      < 1e-10 and abs(Dd[0] - float(sp.diff(P_erf.subs({k22: k11, k12: k11}), k11).subs(pts[0]))) < 1e-10,
      f"A_01 = {A[0, 1]:.12f}")
tex.append(r"\paragraph{Pair tangent.} $d\langle\sigma_a\sigma_b\rangle=\langle\sigma'_a\sigma'_b\rangle dK_{ab}"
           r"+A_{ab}dK_{aa}+A_{ba}dK_{bb}$ with $A_{ab}=(\langle z_a\sigma'_a\sigma_b\rangle-K_{ab}\langle\sigma'_a"
           r"\sigma'_b\rangle)/(2K_{aa})$; checked on the ReLU and erf closed forms.")

# --------------------------------------------------------------------------------- 2. conditioning response
g = sp.symbols("g11 g12 g13 g22 g23 g33")
r = sp.symbols("r1 r2 r3")
y1, y2, s2, eps = sp.symbols("y1 y2 s2 epsilon")
G = sp.Matrix([[g[0], g[1], g[2]], [g[1], g[3], g[4]], [g[2], g[4], g[5]]])
dG = sp.zeros(3, 3)       # moving training input a = 0: row and column 0
for c in range(3):
    dG[0, c] += r[c]
    dG[c, 0] += r[c]
dG[0, 0] -= r[0]
Gt = G + eps * dG
C = Gt[:2, :2] + s2 * sp.eye(2)
yv = sp.Matrix([y1, y2])
m = (Gt[2, :2] * C.inv() * yv)[0]
S = Gt[2, 2] - (Gt[2, :2] * C.inv() * Gt[:2, 2])[0]
logw = -(yv.T * C.inv() * yv)[0] / 2 - sp.log(C.det()) / 2
vals = {g[0]: 1.1, g[1]: 0.3, g[2]: 0.5, g[3]: 0.9, g[4]: -0.2, g[5]: 1.4, r[0]: 0.7, r[1]: -0.4, r[2]: 0.25,
        y1: 0.6, y2: -0.3, s2: 0.2}
want = [float(sp.diff(e, eps).subs(eps, 0).subs(vals)) for e in (m, S, logw)]
Gn = np.array([[1.1, 0.3, 0.5], [0.3, 0.9, -0.2], [0.5, -0.2, 1.4]])
cond = condition(Gn, np.array([[0.6], [-0.3]]), 2, 0.2)
Rn = np.zeros((2, 1, 3))
Rn[0, 0] = [0.7, -0.4, 0.25]
dm, dvar, dl = row_response(cond, Rn, 2)
got = [dm[0, 0, 0, 0], dvar[0, 0, 0], dl[0, 0]]
check("conditioning: dm, dS_bb and dl along a row perturbation = sympy derivatives",
      np.allclose(got, want, rtol=1e-12, atol=1e-14), f"{np.round(got, 12)}")
tex.append(r"\paragraph{Moving one input.} With $dG=e_ar^T+re_a^T-r_ae_ae_a^T$ (checked symbolically):"
           r"\[dm_b=r_bu_a-W_{ba}\,r_A\cdot u-(Wr_A)_bu_a+W_{ba}r_au_a,\]"
           r"\[dS_{bb}=-2r_bW_{ba}+2W_{ba}\,r_A\cdot W_b-W_{ba}^2r_a.\]")

# --------------------------------------------------------------------------------- 3. one particle at O(1/n)
Gaa, Gba, y, s, Kaa, Kba = sp.symbols("G_aa G_ba y s^2 K_aa K_ba", real=True)
Vaaaa, Vaaba, Vbaba, G1aa, G1ba = sp.symbols("V_aaaa V_aaba V_baba G1_aa G1_ba", real=True)
w = sp.exp(-y**2 / (2 * (Gaa + s))) / sp.sqrt(Gaa + s)
mm = Gba * y / (Gaa + s)
cov = {(Gaa, Gaa): Vaaaa, (Gaa, Gba): Vaaba, (Gba, Gaa): Vaaba, (Gba, Gba): Vbaba}
mean1 = {Gaa: G1aa, Gba: G1ba}


def expect1(f):
    """1/n coefficient of E[f(G)] for G = K + delta, E delta = G1/n, Cov delta = V/n."""
    at = {Gaa: Kaa, Gba: Kba}
    out = sum(sp.diff(f, v).subs(at) * mean1[v] for v in (Gaa, Gba))
    out += sum(sp.Rational(1, 2) * sp.diff(f, u, v).subs(at) * cov[(u, v)] for u in (Gaa, Gba) for v in (Gaa, Gba))
    return out


at = {Gaa: Kaa, Gba: Kba}
m1 = sp.simplify((expect1(w * mm) - mm.subs(at) * expect1(w)) / w.subs(at))
poly = sp.Poly(sp.expand(sp.simplify(m1)), y)
cubic = sp.simplify(poly.coeff_monomial(y**3))
check("one particle: the 1/n mean is an odd cubic in y", set(d[0] for d in poly.monoms()) <= {1, 3})
want_cubic = (Vaaba - Kba * Vaaaa / (Kaa + s)) / (2 * (Kaa + s) ** 3)
check("y^3 coefficient = (V_(aa)(ba) - K_ba V_(aa)(aa) / (K_aa + s^2)) / (2 (K_aa + s^2)^3)",
      sp.simplify(cubic - want_cubic) == 0)
net = pdlt.MLP("tanh", (2, 12, 9, 1), C_W=1.0, C_b=0.1)
xa, xb = np.array([[1.0, 0.3]]), np.array([[0.4, -0.8]])
it = pdlt.interactions(net, xa, [0.7], xb, 0.15)
fw = pdlt.finite_width(net, np.concatenate([xa, xb]))
Kl, Vl = fw.K[-1], fw.V[-1]
num = float(want_cubic.subs({Vaaba: Vl[0, 0, 1, 0], Kba: Kl[1, 0], Vaaaa: Vl[0, 0, 0, 0], Kaa: Kl[0, 0], s: 0.15}))
check("pdlt.interactions (polarization) = 6 x the symbolic y^3 coefficient", abs(it.three_body[0, 0, 0, 0] - 6 * num)
      < 1e-9 * abs(num), f"{it.three_body[0, 0, 0, 0]:.10f} vs {6 * num:.10f}")
tex.append(r"\paragraph{One particle at $O(1/n)$.} The $1/n$ posterior mean is odd and cubic in $y$; its $y^3$ "
           r"coefficient is \[" + sp.latex(want_cubic) + r".\]")

# --------------------------------------------------------------------------------- 4. depth
x0, x1 = [1.2, 0.0, 0.0], [0.0, 0.7, 0.3]
lin = pdlt.locality_profile(pdlt.MLP("linear", (3,) + (8,) * 5 + (1,)), x0, x1, n_train=9, noise_var=0.2)
check("deep linear at criticality: the same profile at every depth", np.allclose(lin.infinite, lin.infinite[0],
                                                                                rtol=1e-12, atol=1e-14))
ordered = pdlt.locality_profile(pdlt.MLP("tanh", (3,) + (8,) * 36 + (1,), C_W=0.8, C_b=0.3), x0, x1, n_train=9,
                                noise_var=0.1)
rate = -1.0 / np.diff(np.log(1.0 - ordered.locality[24:34])).mean()
xi = pdlt.correlation_length("tanh", 0.8, 0.3, K1=0.3 + 0.8 * 1.44 / 3).xi_perp
check("ordered phase: 1 - ell/ell_uniform decays at the perpendicular correlation length", abs(rate / xi - 1) < 1e-3,
      f"{rate:.5f} vs {xi:.5f}")
tex.append(rf"\paragraph{{Depth.}} tanh, $C_W=0.8$, $C_b=0.3$: $1-\ell/\ell_{{\rm uniform}}$ decays over "
           rf"${rate:.4f}$ layers; $\xi_\perp={xi:.4f}$.")

# --------------------------------------------------------------------------------- 5. depth laws
t, beta, K, s3, rho = sp.symbols("theta beta K sigma_3 rho", positive=True)
cos_next = (1 - beta) * sp.cos(t) + beta * (2 * sp.sin(t) + (sp.pi - 2 * t) * sp.cos(t)) / sp.pi
series = sp.series(1 - cos_next, t, 0, 4).removeO()
check("scale-invariant angle map: 1 - cos theta' = theta^2/2 - (2 beta / 3 pi) theta^3 + O(theta^4)",
      sp.simplify(series - (t**2 / 2 - 2 * beta / (3 * sp.pi) * t**3)) == 0, str(series))
# beta from the slopes: the odd part (a+ - a-)/2 |z| carries the arc-cosine map, the even part is linear
ap, am = 1.0, 0.3
leaky = pdlt.Activation.from_sympy(sp.Piecewise((sp.Symbol("z"), sp.Symbol("z") > 0), (am * sp.Symbol("z"), True)),
                                   name="leaky03")
th0 = 1.1
Kab = np.array([[1.0, np.cos(th0)], [np.cos(th0), 1.0]])
got = pdlt.theory.kernel.kernel_map(leaky, Kab, 2 / (ap**2 + am**2), 0.0)
b = (ap - am) ** 2 / (2 * (ap**2 + am**2))
want = float(cos_next.subs({t: th0, beta: b}))
check("beta = (a+ - a-)^2 / (2 (a+^2 + a-^2)) against the leaky kernel map", abs(got[0, 1] - want) < 1e-12,
      f"{got[0, 1]:.15f} vs {want:.15f}")
# K*=0, odd: rho' = rho + O(K^2) (Isserlis moments of z_a, z_b with equal variance K and correlation rho)
E_ab, E_a3b = K * rho, 3 * K**2 * rho
E_a3b3 = 9 * K**3 * rho + 6 * (K * rho) ** 3
pair = E_ab + s3 / 3 * E_a3b + s3**2 / 36 * E_a3b3                 # <sigma_a sigma_b>, sigma = z + s3 z^3 / 6
diag = pair.subs(rho, 1)
drho = sp.series(pair / diag - rho, K, 0, 2).removeO()
check("K*=0 (odd): the correlation changes only at O(K^2) per layer", sp.simplify(drho) == 0, str(drho))
relu = pdlt.MLP("relu", (3,) + (4,) * 3150 + (1,), C_W=2.0)
p3 = [pdlt.locality_profile(relu, x0, x1, n_train=15, noise_var=0.1, depths=[l, int(1.05 * l)]).flow_exponent()[0]
      for l in (300, 3000)]
law = pdlt.locality_law(relu, x0, 0.1)
check("critical ReLU: the local exponent approaches 3, its distance shrinking about tenfold per decade",
      law.exponent == 3.0 and abs(p3[1] - 3) < abs(p3[0] - 3) / 5, f"{p3[0]:.4f} at l = 300, {p3[1]:.4f} at 3000")
tex.append(r"\paragraph{Depth laws.} The scale-invariant angle map obeys $1-\cos\theta'=" + sp.latex(series)
           + r"+O(\theta^4)$, so every angle flows to $3\pi/(2\beta l)$ and $1-\ell/\ell_{\rm uniform}\sim l^{-3}$ "
           rf"with noise (critical ReLU, $s^2=0.1$: local exponent ${p3[0]:.3f}$ at $l=300$, ${p3[1]:.3f}$ at "
           r"$l=3000$). For odd $K^*=0$ activations $\rho'-\rho=O(K^2)$: the profile freezes.")

OUT.mkdir(parents=True, exist_ok=True)
(OUT / "influence.tex").write_text(document(*tex, title="pdlt: influence of datapoints"))
if failures:
    sys.exit(f"{len(failures)} check(s) failed: {failures}")
print(f"all checks passed; wrote {OUT / 'influence.tex'}")

# %% [markdown]
# # delta-expansion of the 1/n statistics (V, G1) for two nearby inputs, derived and asserted
#
# Run: `python derivations/delta_expansion.py [OUT_DIR]` (default `derivations/out`). Writes
# `delta_expansion.tex`. Conventions: `derivations/README.md` sections 4, 7, 8, 10; the method is in
# `pdlt/theory/delta_expansion.py`: for x_{+-} = x0 +- dx/2 the fields u = (z_+ + z_-)/2 and
# w = (z_+ - z_-) (the derivative field dx.grad z as dx -> 0) carry O(1) statistics, and the recursions in
# (u, w) coordinates are the multi-input ones for the feature map (sigma(u), w sigma'(u)).
#
# Everything below is derived for a generic cubic activation sigma = s1 z + s2 z^2/2 + s3 z^3/6 with symbolic
# coefficients, where all Gaussian averages are exact (Wick), so each identity is a polynomial identity in
# (s1, s2, s3, K00, state, C_W, C_b, r); the last sections check the numeric engine and a closed form.

# %%
import sys
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt import symbolic as sym
from pdlt.activations import Z
from pdlt.latex import align, booktabs, document
from pdlt.theory.delta_expansion import PRODUCTS, zeta_step

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = []
s1, s2, s3 = sp.symbols("sigma_1 sigma_2 sigma_3", real=True)
sigma = s1 * Z + s2 * Z**2 / 2 + s3 * Z**3 / 6
rec = sym.delta_finite_width_recursions(sigma)
st, nx = rec["state"], rec["next"]
K0 = st["K00"]
C_W, C_b, r = sym.C_W, sym.C_b, sym.delta.r


def avg(f):
    return sym.moment_average(sp.Poly(sp.expand(f), Z), K0)


def zero(e):
    return sp.expand(e) == 0


g = avg(sigma**2)
chi_par = C_W * sp.diff(g, K0)
chi_perp = C_W * avg(sp.diff(sigma, Z) ** 2)
h = sp.diff(chi_perp, K0) / 2

# %% [markdown]
# ## 1. The kernel: the derivative-field recursion reproduces PDLT's delta-expansion
# dK1' = chi_par dK1 and ddK2' = chi_perp ddK2 + h dK1^2 (derivations/README.md section 4), K00' = C_b + C_W g(K00).

# %%
assert zero(rec["K00"].rhs - (C_b + C_W * g))
assert zero(rec["dK1"].rhs - chi_par * st["dK1"])
assert zero(rec["ddK2"].rhs - (chi_perp * st["ddK2"] + h * st["dK1"] ** 2))
tex.append(r"\section*{Kernel}The $(u,w)$ recursion reproduces $\delta K_{[1]}'=\chi_\parallel\delta K_{[1]}$ and "
           r"$\delta\delta K_{[2]}'=\chi_\perp\delta\delta K_{[2]}+h(\delta K_{[1]})^2$.")

# %% [markdown]
# ## 2. The midpoint components obey the single-input recursions
# V00' = C_W^2 (<s^4> - <s^2>^2) + r chi_par^2 V00 and G1_00' = r [chi_par G1_00 + (C_W/8) <(s^2)''''> V00].

# %%
assert zero(rec["V00"].rhs - (C_W**2 * (avg(sigma**4) - g**2) + r * chi_par**2 * st["V00"]))
assert zero(rec["G1_00"].rhs - r * (chi_par * st["G1_00"] + C_W / 8 * avg(sp.diff(sigma**2, Z, 4)) * st["V00"]))

# %% [markdown]
# ## 3. Triangular structure and the diagonal couplings
# With dx-powers p = 0, 1, 2 of the gamma components [0], [1], [2], the update of a component of total power P
# depends only on components of power <= P, and its own coefficient is r chi_i chi_j for V_[ij] and r chi_i
# for G1_[i], with chi_0 = chi_1 = chi_par, chi_2 = chi_perp: the [1] direction (the change of the norm) is
# governed by the parallel susceptibility, the [2] direction (the distance) by the perpendicular one.

# %%
V_names = {(0, 0): "V00", (0, 1): "dV01", (1, 1): "ddV11", (0, 2): "ddV02", (1, 2): "dddV12", (2, 2): "ddddV22"}
G_names = {0: "G1_00", 1: "dG1_1", 2: "ddG1_2"}
power = {**{v: i + j for (i, j), v in V_names.items()}, **{v: i for i, v in G_names.items()}}
chi = {0: chi_par, 1: chi_par, 2: chi_perp}
CHI_TEX = (r"\chi_\parallel ", r"\chi_\parallel ", r"\chi_\perp ")
diag_rows = []
for (i, j), name in V_names.items():
    e = rec[name].rhs
    assert zero(sp.diff(e, st[name]) - r * chi[i] * chi[j]), name
    for other in list(V_names.values()) + list(G_names.values()):
        if other != name and power[other] > power[name]:
            assert zero(sp.diff(e, st[other])), (name, other)
    for other in G_names.values():  # V never depends on G1
        assert zero(sp.diff(e, st[other])), (name, other)
    diag_rows.append(["$" + sym.delta._LATEX[name] + "$", "$r\\," + CHI_TEX[i] + CHI_TEX[j] + "$", str(i + j)])
for i, name in G_names.items():
    e = rec[name].rhs
    assert zero(sp.diff(e, st[name]) - r * chi[i]), name
    for other in G_names.values():
        if power[other] > power[name]:
            assert zero(sp.diff(e, st[other])), (name, other)
    diag_rows.append(["$" + sym.delta._LATEX[name] + "$", "$r\\," + CHI_TEX[i] + "$", str(i)])
tex.append(booktabs(["component", "own coefficient", "power of $\\delta x$"], diag_rows, align="lcc",
                    caption="Diagonal couplings of the $\\delta$-expanded recursions (asserted for a generic cubic "
                            "activation; lower-power components feed higher ones, never the reverse).",
                    label="tab:diag"))

# %% [markdown]
# ## 4. Deep linear networks: closed forms
# For sigma = z, C_W = 1, C_b = 0, r = 1 the kernel is constant and every component grows linearly:
# V_(ij)(kl) = (l-1)(K_ik K_jl + K_il K_jk) in (u, w) coordinates, i.e. in the gamma basis
# V00 = 2(l-1)K00^2, dV01 = 2(l-1)K00 dK1, ddV11 = (l-1)(4 K00 ddK2 + dK1^2), ddV02 = (l-1) dK1^2/2,
# dddV12 = 2(l-1) dK1 ddK2, ddddV22 = 2(l-1) ddK2^2, G1 = 0. Iterate the symbolic recursion 6 layers.

# %%
lin = sym.delta_finite_width_recursions("linear")
ell = sym.ell
k0, k1, k2 = st["K00"], st["dK1"], st["ddK2"]
closed = {"V00": 2 * k0**2, "dV01": 2 * k0 * k1, "ddV11": 4 * k0 * k2 + k1**2, "ddV02": k1**2 / 2,
          "dddV12": 2 * k1 * k2, "ddddV22": 2 * k2**2}
state = {name: 0 for name in sym.DELTA_NAMES}
state.update({"K00": k0, "dK1": k1, "ddK2": k2})
for layer in range(2, 8):
    subs = {st[nm]: v for nm, v in state.items()}
    subs.update({C_W: 1, C_b: 0, r: 1})
    state = {nm: sp.expand(lin[nm].rhs.subs(subs, simultaneous=True)) for nm in sym.DELTA_NAMES}
    for nm, c in closed.items():
        assert zero(state[nm] - (layer - 1) * c), (layer, nm)
    assert all(state[nm] == 0 for nm in G_names.values())
tex.append(r"\section*{Deep linear networks}" + align(
    [(sym.delta._LATEX[nm], sp.latex(sp.factor((ell - 1) * c))) for nm, c in closed.items()]))

# %% [markdown]
# ## 5. Scale-invariant class at criticality, dx perpendicular to x0, no bias: V_[22] = nu (l-1) K_[2]^2
# With dK1 = 0 (preserved, chi_par = 1) w is independent of u, so the source of V_[22] is
# (C_W^2/16)(<w^4 s'^4> - <w^2 s'^2>^2) = (3 A4/A2^2 - 1) K_[2]^2 and the mixing averages <w^2 (s'^2)''>,
# <w (s'^2)'> vanish by parity: the distance between two nearby inputs fluctuates with the same nu as the
# norm (derivations/README.md section 9). Checked with the numeric engine (leaky ReLU slopes 0, 0.3).

# %%
for slope in (0.0, 0.3):
    act = pdlt.activation("leaky_relu", slope=slope)
    nu = 3 * act.A4 / act.A2**2 - 1
    net = pdlt.MLP(act, (3,) + (50,) * 8, C_W=1 / act.A2, C_b=0.0)
    x0, dx = np.array([1.0, 0.5, -0.2]), np.array([0.1, -0.2, 0.0])
    de = pdlt.delta_finite_width(net, x0, dx)
    k2 = de.gamma_K[:, 2]
    np.testing.assert_allclose(k2, k2[0], rtol=1e-12)
    np.testing.assert_allclose(de.ddddV22, nu * np.arange(8) * k2**2, rtol=1e-10)
    np.testing.assert_allclose(de.V00, nu * np.arange(8) * de.gamma_K[:, 0] ** 2, rtol=1e-10)

# %% [markdown]
# ## 6. The numeric engine against the symbolic recursion (tanh, mpmath averages at 20 digits)
# One layer from a generic state: the symbolic recursion with its Gaussian averages evaluated by mpmath, vs
# the numeric engine's step with float64 quadrature moments.

# %%
tanh_rec = sym.delta_finite_width_recursions("tanh")
vals = dict(zip(sym.DELTA_NAMES, (0.7, 0.12, 0.05, 0.9, 0.2, 0.3, 0.1, 0.04, 0.02, -0.3, 0.05, -0.02)))
subs = {st[nm]: v for nm, v in vals.items()}
subs.update({C_W: 1.3, C_b: 0.1, r: 1.5})
act = pdlt.activation("tanh")
mom = pdlt.expect(lambda z: np.stack([act(z[..., 0]) ** a * act.d1(z[..., 0]) ** b * z[..., 0] ** j
                                      for a, b in PRODUCTS for j in range(7)], -1), np.array([[0.7]]))
mom = np.asarray(mom).reshape(len(PRODUCTS), 7)
index = {ab: i for i, ab in enumerate(PRODUCTS)}
Vz, G1z = sym.delta._zeta_state(vals)
Kz, Vn, Gn = zeta_step(lambda a, b, j: mom[index[(a, b)], j], 0.7, 0.12, 0.05, Vz, G1z, 1.3, 0.1, 1.5)
numeric = {"dV01": Vn[(0, 0, 0, 1)], "ddV11": Vn[(0, 1, 0, 1)], "ddddV22": Vn[(1, 1, 1, 1)] / 16,
           "dG1_1": Gn[(0, 1)], "ddG1_2": Gn[(1, 1)] / 4}


def mp_eval(e):
    e = e.subs(subs)
    reps = {a: sp.Float(a.numeric(dps=20), 20) for a in e.atoms(sym.GaussianAverage)}
    return float(e.xreplace(reps))


for nm, v in numeric.items():
    ref = mp_eval(tanh_rec[nm].rhs)
    assert abs(v - ref) < 1e-11 * max(1.0, abs(ref)), (nm, v, ref)

# %%
tex.append(r"\section*{Recursions, linear activation (general $C_W$, $C_b$, $r$)}" + align(
    [("{" + sym.delta._LATEX[nm] + "}'", sp.factor(lin[nm].rhs)) for nm in sym.DELTA_NAMES]))
doc = document(*tex, title="pdlt: delta-expansion of V and G1")
(OUT / "delta_expansion.tex").write_text(doc)
print(f"all delta-expansion derivations asserted; wrote {OUT / 'delta_expansion.tex'}")

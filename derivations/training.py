# %% [markdown]
# # Trained networks at O(1/n): the response of gradient descent to the dNTK and the ddNTKs (PDLT ch. infinity)
#
# Run: `python derivations/training.py [OUT_DIR]` (default `derivations/out`). Every step asserts its result and the
# script writes `training.tex`. Conventions: `derivations/README.md` section 19; code: `pdlt/theory/training.py`.
#
# 1. The geometric sums behind the fully trained response (gradient descent, modes rho = 1 - eta theta).
# 2. Gradient flow is their eta -> 0 limit at fixed eta t, and eta drops out of the flow result.
# 3. One training point: the general mode formulas reduce to the reference's one-point results (trained test output,
#    NTK change), symbolically.
# 4. Last-layer training with lambda_b/lambda_W = C_b/C_W gives Theta = (lambda_W/C_W) K: the NNGP posterior.
# 5. Numbers: the one-point values the reference derived and checked by Monte Carlo.

# %%
import math
import sys
from pathlib import Path

import numpy as np
import sympy as sp

import pdlt
from pdlt.latex import document

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out"
OUT.mkdir(parents=True, exist_ok=True)
tex = []

# %% [markdown]
# ## 1. Geometric sums
# With eps(t) = sum_k e_k rho_k^t every first-order term is a sum over t of products of powers. The nested one,
# sum_t a^t sum_{s<t} r^s, is G(a; r) = a / ((1 - a)(1 - a r)); check it by summing the series symbolically.

# %%
a, r, t, s, eta = sp.symbols("a r t s eta", positive=True)
th = sp.symbols("theta_k theta_l theta_m", positive=True)
G = a / ((1 - a) * (1 - a * r))
# compare the Taylor coefficients in (a, r) up to total degree 8 (the series converges for |a|, |r| < 1)
series = sum(a**T * sum(r**j for j in range(T)) for T in range(0, 9))
taylor = sp.expand(sp.series(sp.series(G, a, 0, 9).removeO(), r, 0, 9).removeO())
diff = sp.Poly(sp.expand(taylor - series), a, r)
assert all(sum(m) > 8 or c == 0 for m, c in zip(diff.monoms(), diff.coeffs()))
assert any(c != 0 for c in sp.Poly(taylor, a, r).coeffs())
tex.append(r"\subsection*{1. Geometric sums}")
tex.append(r"With $\epsilon(t)=\sum_k e_k\rho_k^t$, $\rho_k=1-\eta\theta_k$, the nested sums are "
           r"$\sum_{t\ge0}a^t\sum_{s<t}r^s=" + sp.latex(G) + r"$ (checked coefficient by coefficient), "
           r"$\sum_t (\rho_k\rho_l)^t = 1/(1-\rho_k\rho_l)$ and the like.")

# %% [markdown]
# ## 2. Gradient flow as the limit of gradient descent
# Replace rho_k = 1 - eta theta_k and expand in eta: the leading terms are the flow's integrals, independent of eta.

# %%
rho = [1 - eta * x for x in th]
flow_limits = {
    # sum_t rho_k^t sum_{s<t} rho_l^s  ->  1/(eta^2 theta_k (theta_k + theta_l))
    "a": (G.subs({a: rho[0], r: rho[1]}), 1 / (eta**2 * th[0] * (th[0] + th[1]))),
    # the same with r = rho_l rho_m
    "b": (G.subs({a: rho[0], r: rho[1] * rho[2]}), 1 / (eta**2 * th[0] * (th[0] + th[1] + th[2]))),
}
for name, (gd, fl) in flow_limits.items():
    lead = sp.limit(gd * eta**2, eta, 0)
    assert sp.simplify(lead - fl * eta**2) == 0, name
# the dNTK term of the response: eta^2 G(rho_k; rho_l) -> 1/(theta_k (theta_k + theta_l)), eta-free
assert sp.simplify(sp.limit(eta**2 * G.subs({a: rho[0], r: rho[1]}), eta, 0) - 1 / (th[0] * (th[0] + th[1]))) == 0
# the ddNTK term: eta^2 [G(rho_k; rho_l) - G(rho_k; rho_l rho_m)] / theta_m -> 1/(theta_k (theta_k+theta_l)(...))
dd = sp.limit(eta**2 * (G.subs({a: rho[0], r: rho[1]}) - G.subs({a: rho[0], r: rho[1] * rho[2]})) / th[2], eta, 0)
assert sp.simplify(dd - 1 / (th[0] * (th[0] + th[1]) * (th[0] + th[1] + th[2]))) == 0
tex.append(r"\subsection*{2. Gradient flow}")
tex.append(r"As $\eta\to0$ at fixed $\eta t$: $\eta^2 G(\rho_k;\rho_l)\to 1/(\theta_k(\theta_k+\theta_l))$ and")
tex.append(r"\[\eta^2\,\frac{G(\rho_k;\rho_l)-G(\rho_k;\rho_l\rho_m)}{\theta_m}\to"
           + sp.latex(sp.factor(dd)) + r",\]")
tex.append(r"so the fully trained flow response is independent of $\eta$:")
tex.append(r"\begin{align*}S_I&=\sum_{kl}\frac{\widehat{dH}^{s}_{I;kl}}{\theta_k(\theta_k+\theta_l)}"
           r"-\sum_{klm}\frac{\widehat{DD}^{s}_{I;klm}}{\theta_k(\theta_k+\theta_l)(\theta_k+\theta_l+\theta_m)},\\"
           r"\delta z_\delta&=S_\delta-\Theta_{\delta\tilde\alpha}\tilde\Theta^{-1}S_{\tilde\alpha},\end{align*}")
tex.append(r"with hats denoting contraction of the training slots with the modes $e_k$, "
           r"$dH^{s}_{IJK}=dH_{IJK}+dH_{JIK}$, $DD_{IJKC}=ddI_{IJKC}+ddII_{IJKC}+ddII_{IKJC}$ and "
           r"$DD^{s}_{IJKC}=DD_{IJKC}+DD_{JIKC}$.")

# %% [markdown]
# ## 3. One training point
# One mode, theta = Theta_aa, e = eps0. Symbols for the per-network dNTK and ddNTK entries.

# %%
Th, e0 = sp.symbols("Theta epsilon_0")
Tba = sp.Symbol(r"\Theta_{\beta\alpha}")
dH_baa, dH_aba, dH_aaa, dd_baa, dd_aba, dd_aaa = (
    sp.Symbol(rf"{k}_{{{i}}}") for k in ("dH", "dd") for i in (r"\beta\alpha\alpha", r"\alpha\beta\alpha",
                                                               r"\alpha\alpha\alpha"))
# S_I for I = beta and alpha (flow, one mode): dHs_{I a a} e^2 / (2 Theta^2) - DDs_{I a a a} e^3 / (6 Theta^3)
S_b = (dH_baa + dH_aba) * e0**2 / (Th * 2 * Th) - (dd_baa + dd_aba) * e0**3 / (Th * 2 * Th * 3 * Th)
S_a = 2 * dH_aaa * e0**2 / (Th * 2 * Th) - 2 * dd_aaa * e0**3 / (Th * 2 * Th * 3 * Th)
dz = S_b - Tba / Th * S_a
reference = ((dH_baa + dH_aba) * e0**2 / (2 * Th**2) - (dd_baa + dd_aba) * e0**3 / (6 * Th**3)
             - (Tba / Th) * (dH_aaa * e0**2 / Th**2 - dd_aaa * e0**3 / (3 * Th**3)))
assert sp.simplify(dz - reference) == 0
# the NTK change: -sum_l dHs e_l / theta_l + sum_lm DDs e_l e_m / (theta_l (theta_l + theta_m)), one mode
dH_ch = -2 * dH_aaa * e0 / Th + 2 * dd_aaa * e0**2 / (Th * 2 * Th)

# the code's mode sums (pdlt.theory.training) on random one-training-point tensors give the same two expressions
from pdlt.theory import training as tr  # noqa: E402

rng = np.random.default_rng(7)
N = 2                                   # index 0: the training input alpha, 1: the test input beta
A_ = rng.normal(size=(N, N))
Theta_num = A_ @ A_.T + 2 * np.eye(N)
ddI_num, ddII_num, dH_num = rng.normal(size=(N,) * 4), rng.normal(size=(N,) * 4), rng.normal(size=(N, N, N))
st = tr._Stats(Theta=Theta_num, Theta1=None, K=None, C=None, Pz=None, ddI=ddI_num, ddII=ddII_num)
dyn = tr._dyn(st, np.array([0]))
eps_num = 0.7
dz_code, dH_code = tr._response_infinite(dyn, np.array([[eps_num]]), dH_num[None, :, :, :1], 1.0, True)
DD = ddI_num + ddII_num + ddII_num.transpose(0, 2, 1, 3)
num = {Th: Theta_num[0, 0], Tba: Theta_num[1, 0], e0: eps_num, dH_baa: dH_num[1, 0, 0], dH_aba: dH_num[0, 1, 0],
       dH_aaa: dH_num[0, 0, 0], dd_baa: DD[1, 0, 0, 0], dd_aba: DD[0, 1, 0, 0], dd_aaa: DD[0, 0, 0, 0]}
assert abs(float(dz.subs(num)) - dz_code[0, 1]) < 1e-12 * max(1.0, abs(dz_code[0, 1]))
assert abs(float(dH_ch.subs(num)) - dH_code[0, 0, 0]) < 1e-12 * max(1.0, abs(dH_code[0, 0, 0]))
tex.append(r"\subsection*{3. One training point}")
tex.append(r"One mode ($\theta=\Theta_{\alpha\alpha}$, $e=\epsilon_0$) reduces the general result to")
tex.append(r"\begin{align*}\delta z_\beta&=" + sp.latex(sp.collect(sp.expand(dz), e0)) + r",\\"
           r"H_{\alpha\alpha}(\infty)-H_{\alpha\alpha}(0)&=" + sp.latex(dH_ch) + r",\end{align*}")
tex.append(r"the one-point results of an independent derivation (here $dd$ is $DD$ at one input); the code's mode "
           r"sums, evaluated on random one-point tensors, agree with both to $10^{-12}$.")

# %% [markdown]
# ## 4. The NNGP special case
# With lambda = 0 below the last layer, Theta^(L) = lambda_b + lambda_W <sigma sigma> = lambda_b + lambda_W (K - C_b)/C_W.

# %%
lb, lw, CW, Cb, Kab = sp.symbols("lambda_b lambda_W C_W C_b K_ab")
Theta_last = lb + lw * (Kab - Cb) / CW
assert sp.simplify(Theta_last.subs(lb, lw * Cb / CW) - lw / CW * Kab) == 0
tex.append(r"\subsection*{4. Bayes and training agree only here}")
tex.append(r"Training only layer $L$: $\Theta^{(L)}=" + sp.latex(Theta_last) + r"$, which is $(\lambda_W/C_W)K$ when "
           r"$\lambda_b/\lambda_W=C_b/C_W$; then $\Theta_{\delta\tilde\alpha}\tilde\Theta^{-1}=K_{\delta\tilde\alpha}"
           r"\tilde K^{-1}$ and the trained ensemble is the noiseless NNGP posterior (mean and covariance).")

# %% [markdown]
# ## 5. Numbers
# tanh, C_W = 1.2, C_b = 0.1, lambda_b = 0.7, lambda_W = 1.3, L = 3, gradient flow to the end.

# %%
net = pdlt.MLP("tanh", (3, 64, 64, 1), C_W=1.2, C_b=0.1)
tp = pdlt.train_prediction(net, [[1.0, 0.4, -0.3]], [2.0], [[0.6, -0.3, -0.8]], 0.7, 1.3, eta=1.0, flow=True)
shift = float((tp.pieces["dntk"] + tp.pieces["ddntk"])[0, 0])
assert abs(shift - 0.5082) < 2e-4, shift
net1 = pdlt.MLP("tanh", (1, 64, 64, 1), C_W=1.2, C_b=0.1)
changes = {}
for y, ref in ((0.0, 0.598), (1.0, -1.833)):
    tq = pdlt.train_prediction(net1, [[math.sqrt(0.75)]], [y], [[0.3]], 0.7, 1.3, eta=1.0, flow=True)
    changes[y] = float(tq.ntk_change[0, 0])
    assert abs(changes[y] - ref) < 1.5e-3, (y, changes[y])
tex.append(r"\subsection*{5. Numbers}")
tex.append(r"tanh, $C_W=1.2$, $C_b=0.1$, $\lambda_b=0.7$, $\lambda_W=1.3$, $L=3$, gradient flow to the end: "
           rf"$n\,E[z_\beta(\infty)-z_\beta^{{\rm frozen}}]={shift:.4f}$ ($y=2$; independent derivation $0.5082$), "
           rf"$n\,E[H(\infty)-H(0)]={changes[0.0]:.4f}$ ($y=0$; reference $0.598$) and ${changes[1.0]:.4f}$ "
           r"($y=1$; independent: $-1.833$).")

# %%
(OUT / "training.tex").write_text(document(*tex, title="pdlt: trained networks at order 1/n"))
print(f"all training derivations asserted; wrote {OUT / 'training.tex'}")

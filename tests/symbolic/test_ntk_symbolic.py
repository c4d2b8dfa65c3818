"""Symbolic single-input NTK statistics (pdlt.symbolic.ntk): the recursions against an independent explicit-weight
Monte Carlo (numbers in derivations/README.md section 18), the scale-invariant closed forms against exact Rational
iteration, and the K*=0 large-depth forms against an independent float64 iteration written here with numpy."""
import math

import numpy as np
import pytest
import sympy as sp
from numpy.polynomial.hermite_e import hermegauss

from pdlt import symbolic as sym
from pdlt.errors import ParameterError
from pdlt.symbolic import symbols as S

NAMES = ("Theta", "V", "G1", "F", "B", "D", "A", "P", "Q", "R", "S", "T", "U", "Theta1")
DEGREE = {"Theta": 1, "V": 0, "G1": 0, "F": 1, "B": 2, "D": 1, "A": 2, "P": 2, "Q": 2, "R": 3, "S": 3, "T": 3,
          "U": 3, "Theta1": 1}


# --------------------------------------------------------------------------- independent float64 iteration


def tanh_derivatives(z):
    t = np.tanh(z)
    s = 1 - t * t
    return t, s, -2 * t * s, s * (6 * t * t - 2)


def sin_derivatives(z):
    return np.sin(z), np.cos(z), -np.sin(z), -np.cos(z)


def iterate(derivs, CW, K1, L, Cb=0.0, lam_b=1.0, nodes=200):
    """Float64 iteration of the single-input recursions, written out with numpy (not through sympy).

    Gauss-Hermite averages (200 nodes: 1e-12 for tanh at K = 1; 80 give only 5e-6); chi_par, h by Stein's lemma (C_W <s'^2 + s s''>, (C_W/2) <s''^2 + s' s'''>), dh/dK and
    g'' by the Hermite forms <f (z^2 - K)>/(2K^2) and <f (z^4 - 6Kz^2 + 3K^2)>/(4K^4) (a different route from the
    symbolic code). Each statistic is carried as a polynomial in lambda_W (coefficients of lambda_W^0..3, lambda_b
    fixed), so every monomial of the learning rates comes out separately, without cancellation.
    Returns K (L,) and {name: (L, 4)}."""
    x, w = hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)
    Ks = [K1]
    for _ in range(L - 1):
        s0 = derivs(np.sqrt(Ks[-1]) * x)[0]
        Ks.append(Cb + CW * w @ (s0 * s0))
    K = np.array(Ks)
    z = np.sqrt(K)[:, None] * x
    s0, s1, s2, s3 = derivs(z)

    def av(f):
        return f @ w

    g, d2, d4, d2s2, s4 = av(s0**2), av(s1**2), av(s1**4), av(s1**2 * s0**2), av(s0**4)
    ss1s1s2, ss2, s1113, s13 = av(s0 * s1**2 * s2), av(s0 * s2), av(s1**3 * s3), av(s1 * s3)
    s2211, s22 = av(s2**2 * s1**2), av(s2**2)
    cpar, cperp = CW * (d2 + ss2), CW * d2
    h = CW / 2 * (s22 + s13)
    hK = CW / 2 * av((s2**2 + s1 * s3) * (z**2 - K[:, None])) / (2 * K**2)
    g2 = av(s0**2 * (z**4 - 6 * K[:, None] * z**2 + 3 * K[:, None] ** 2)) / (4 * K**4)

    def m(a, b):
        return np.convolve(a, b)[:4]

    lw, lb = np.array([0, 1.0, 0, 0]), np.array([lam_b, 0, 0, 0])
    X = {n: np.zeros(4) for n in NAMES}
    X["Theta"] = lb + lw * (K1 - Cb) / CW
    out = {n: [X[n]] for n in NAMES}
    for l in range(L - 1):
        Th, V, G1, cp, cq, hh = X["Theta"], X["V"], X["G1"], cpar[l], cperp[l], h[l]
        N = {"Theta": lb + lw * g[l] + cq * Th,
             "V": np.array([CW**2 * (s4[l] - g[l] ** 2), 0, 0, 0]) + cp**2 * V,
             "G1": cp * G1 + CW * g2[l] / 2 * V,
             "F": CW**2 * d2s2[l] * Th + cp**2 * X["F"],
             "B": CW**2 * d4[l] * m(Th, Th) + cq**2 * X["B"]}
        N["D"] = m(lw / CW, N["V"]) + CW**2 * (d2s2[l] - d2[l] * g[l]) * Th + cp * cq * X["D"] + 2 * hh * cp * m(Th, V)
        N["A"] = (-m(m(lw, lw), N["V"]) / CW**2 + 2 * m(lw, N["D"]) / CW + CW**2 * (d4[l] - d2[l] ** 2) * m(Th, Th)
                  + cq**2 * X["A"] + 4 * hh * cq * m(Th, X["D"]) + 4 * hh**2 * m(m(Th, Th), V))
        N["P"] = CW**2 * ss1s1s2[l] * m(Th, Th) + cp * cq * X["P"] + cq * CW * ss2[l] * X["B"]
        N["Q"] = CW**2 * ss1s1s2[l] * m(Th, Th) + m(lw, N["F"]) / CW + cp * cq * X["Q"] + 2 * hh * cp * m(Th, X["F"])
        mix = lw * cp / CW + 2 * hh * Th
        Th3 = m(Th, m(Th, Th))
        N["R"] = (CW * ss1s1s2[l] * m(lw, m(Th, Th)) + CW**2 * s1113[l] * Th3
                  + cq * (m(lw * ss2[l] + CW * s13[l] * Th, X["B"]) + m(mix, X["P"])) + cq**2 * X["R"])
        N["S"] = (CW * d4[l] * m(lw, m(Th, Th)) + CW**2 * s2211[l] * Th3
                  + cq * m(lw * d2[l] + CW * s22[l] * Th, X["B"]) + cq**2 * X["S"])
        N["T"] = (d2s2[l] * m(m(lw, lw), Th) + 2 * CW * ss1s1s2[l] * m(lw, m(Th, Th)) + CW**2 * s2211[l] * Th3
                  + m(m(mix, mix), X["F"]) + 2 * cq * m(mix, X["Q"]) + cq**2 * X["T"])
        N["U"] = CW**2 * s2211[l] * Th3 + cq**2 * X["U"]
        N["Theta1"] = (m(lw, N["G1"]) / CW + cq * X["Theta1"] + m(Th, 2 * hh * G1 + hK[l] * V)
                       + 2 * hh * (X["D"] + 2 * X["F"]))
        X = N
        for n in NAMES:
            out[n].append(X[n])
    return K, {n: np.array(v) for n, v in out.items()}


def at(coeffs, lam_W):
    return float(np.polyval(coeffs[::-1], lam_W))


# --------------------------------------------------------------------------- the recursions


def test_generic_recursions_typeset_and_specialize():
    gen = sym.ntk_statistics_recursions()
    assert set(sym.NTK_NAMES) <= set(gen)
    tex = sym.latex(gen["T"])
    assert r"\chi_{\parallel}" in tex and r"T^{(\ell+1)}" in tex and r"{\sigma''}" in tex
    relu = sym.ntk_statistics_recursions("relu")
    # ReLU by hand: <s'^2> = 1/2, <s'^4> = 1/2, <s'^2 s^2> = K/2, s'' = 0 pointwise, h = 0
    Th, B, Q = S.Theta_l, S.B_l, S.Q_l
    assert sp.simplify(relu["B"].rhs - (S.C_W**2 * Th**2 / 2 + S.r * S.C_W**2 * B / 4)) == 0
    assert sp.simplify(relu["Q"].rhs - (S.lambda_W * S.F_next / S.C_W + S.r * S.C_W**2 * Q / 4)) == 0
    assert relu["P"].rhs == S.C_W**2 * S.r * S.P_l / 4
    # the frozen NTK recursion is the existing one (pdlt.symbolic.ntk_recursion)
    assert sp.simplify(relu["Theta"].rhs - sym.ntk_recursion("relu").rhs) == 0
    sub = {S.K_l: 0.7, S.C_W: 1.3, S.Theta_l: 0.9, S.lambda_b: 0.2, S.lambda_W: 0.4}
    a = sym.evaluate(sym.ntk_statistics_recursions("tanh")["Theta"].rhs, sub)
    assert abs(a - sym.evaluate(sym.ntk_recursion("tanh").rhs, sub)) < 1e-12


def test_tanh_against_explicit_weight_monte_carlo():
    """tanh, C_W=1.2, C_b=0.1, lambda_b=0.7, lambda_W=1.3, K^(1)=1 (derivations/README.md section 18): layer 2 is
    exact at every width (n = 32 MC); layer 3 against the 1/n extrapolation 2 MC(64) - MC(32). |z| < 5."""
    it = sym.iterate_ntk_statistics("tanh", 3, K1=1.0, lambda_b=0.7, lambda_W=1.3, C_W_value=1.2, C_b_value=0.1)
    mc2 = {"P": (-0.3867, 0.0023), "Q": (-0.1913, 0.0020), "R": (-3.668, 0.007), "S": (2.4090, 0.0020),
           "T": (0.2885, 0.0011), "U": (0.9134, 0.0014)}
    # SE of 2 MC(64) - MC(32): sqrt(4 se64^2 + se32^2)
    se3 = {"P": (0.0037, 0.0039), "Q": (0.0030, 0.0032), "R": (0.013, 0.020), "S": (0.0042, 0.0063),
           "T": (0.0021, 0.0033), "U": (0.0023, 0.0036)}
    mc3 = {"P": -1.122, "Q": -0.531, "R": -13.14, "S": 7.942, "T": 1.279, "U": 2.675}
    for n, (v, se) in mc2.items():
        assert abs(it[n][1] - v) < 5 * se, (n, it[n][1], v)
    for n, v in mc3.items():
        se = math.hypot(2 * se3[n][0], se3[n][1])
        assert abs(it[n][2] - v) < 5 * se, (n, it[n][2], v)
    # B and F at layer 3 (MC n = 64: 3.513(9), 0.278(11))
    assert abs(it["B"][2] - 3.513) < 5 * 0.009 + 0.01 and abs(it["F"][2] - 0.278) < 5 * 0.011
    # the numpy iteration of this file gives the same numbers (two codes, one set of equations). 1e-7: the float64
    # quadrature of pdlt.gaussian is ~2e-8 off mpmath on <s''^2 s'^2> of tanh (200-node Gauss-Hermite: ~1e-12)
    K, X = iterate(tanh_derivatives, 1.2, 1.0, 3, Cb=0.1, lam_b=0.7)
    for n in NAMES:
        assert abs(at(X[n][2], 1.3) - it[n][2]) < 1e-7 * (1 + abs(it[n][2])), n


def test_theta1_against_monte_carlo():
    """Theta1 (Rao-Blackwellized MC, n = 32; derivations/README.md section 18): tanh, C_b = 0, lambda_b = 0,
    lambda_W = 1, K^(1) = 0.5; L = 3 at C_W = 1.5: -0.0889(8); L = 4 at C_W = 1: -0.1475(14) (1/n corrections
    included in the 5 SE)."""
    it = sym.iterate_ntk_statistics("tanh", 3, K1=0.5, lambda_b=0.0, lambda_W=1.0, C_W_value=1.5)
    assert it["Theta1"][1] == 0 and abs(it["Theta1"][2] + 0.0889) < 5 * 0.0008
    K, X = iterate(tanh_derivatives, 1.0, 0.5, 4, lam_b=0.0)
    assert abs(at(X["Theta1"][3], 1.0) + 0.1475) < 5 * 0.0014


# --------------------------------------------------------------------------- scale-invariant closed forms


@pytest.mark.parametrize("name", ["relu", "leaky_relu(0.25)", "linear"])
def test_scale_invariant_closed_forms_exact(name):
    cf = sym.ntk_closed_forms(name)
    A2, q, th0 = cf["A2"], cf["q"], cf["Theta_0"]
    K1, ell = S.K_1, S.ell
    # formulas typed independently (derivations/README.md section 18)
    assert sp.simplify(cf["Theta"] - ell * th0) == 0
    assert sp.simplify(cf["F"] - q * K1 * th0 * ell * (ell - 1) / 2) == 0
    assert sp.simplify(cf["B"] - q * th0**2 * (ell - 1) * ell * (2 * ell - 1) / 6) == 0
    nu = 3 * q - 1
    assert sp.simplify(cf["V"] - nu * (ell - 1) * K1**2) == 0
    assert sp.simplify(cf["D"] - (S.lambda_W * A2 * nu * K1**2 + (q - 1) * K1 * th0) * ell * (ell - 1) / 2) == 0
    assert sp.simplify(cf["Q"] - S.lambda_W * A2 * q * K1 * th0 * (ell + 1) * ell * (ell - 1) / 6) == 0
    assert all(cf[n] == 0 for n in ("P", "R", "U", "Theta1", "G1"))
    # exact Rational iteration of the recursions, l = 1..30
    vals = {S.lambda_b: sp.Rational(7, 10), S.lambda_W: sp.Rational(13, 10), K1: sp.Rational(3, 2)}
    it = sym.iterate_ntk_statistics(name, 30, K1=vals[K1], lambda_b=vals[S.lambda_b], lambda_W=vals[S.lambda_W],
                                    C_W_value=1 / A2, exact=True)
    for n in sym.NTK_NAMES:
        e = cf[n].subs(vals)
        assert all(e.subs(ell, l) == it[n][l - 1] for l in range(1, 31)), n


def test_relu_against_monte_carlo():
    """ReLU, C_W = 2, lambda_b = 0.7, lambda_W = 1.3, K = 1, L = 3 (MC extrapolated 2 MC(64) - MC(32),
    derivations/README.md section 18)."""
    cf = sym.ntk_closed_forms("relu")
    v = {S.lambda_b: sp.Rational(7, 10), S.lambda_W: sp.Rational(13, 10), S.K_1: 1, S.ell: 3}
    for n, (mc, se) in {"Q": (7.101, 0.063), "S": (14.302, 0.040), "T": (6.890, 0.025)}.items():
        assert abs(float(cf[n].subs(v)) - mc) < 5 * se, n


# --------------------------------------------------------------------------- K*=0 asymptotics


@pytest.mark.parametrize("name,derivs", [("tanh", tanh_derivatives), ("sin", sin_derivatives)])
def test_kstar0_asymptotics_against_iteration(name, derivs):
    """Every monomial lambda_b^i lambda_W^j of every statistic against the float64 iteration at l = 1000, 4000.
    Tolerance: relative corrections are O(ln(l)/l) (K = (1/((-a_1) l))(1 + (a_2/a_1^2 - 1) ln(l)/l) and the 1/l^2
    terms of the multipliers); the observed coefficient is at most ~3.3, so 4 ln(l)/l. Monomials whose leading terms
    cancel (A.bounds: o(l^p)) must fall below l^p: |X|/l^p shrinks by at least 2 from l = 1000 to 4000."""
    A = sym.ntk_asymptotics(name)
    assert A.universality == "K*=0" and A.constants["p_perp"] == 1
    _, X = iterate(derivs, float(A.constants["C_W"]), 1.0, 4000, nodes=60)  # K <= 1: 60 nodes ample
    for n in NAMES:
        poly = sp.expand(A.terms[n])
        for j in range(DEGREE[n] + 1):
            key = (DEGREE[n] - j, j)
            vals = [X[n][l - 1][j] for l in (1000, 4000)]
            if key in A.bounds[n]:
                p = float(A.bounds[n][key])
                r = [abs(v) / l**p for v, l in zip(vals, (1000, 4000))]
                assert r[1] < max(r[0] / 2, 1e-12), (n, key, r)
                continue
            coef = poly.coeff(S.lambda_b, key[0]).coeff(S.lambda_W, j)
            for v, l in zip(vals, (1000, 4000)):
                pred = float(coef.subs(S.ell, l))
                assert abs(v / pred - 1) < 4 * math.log(l) / l, (n, key, l, v, pred)
    # critical learning rates (lambda_b = 1/L, lambda_W = 1) at the output layer L
    for L in (1000, 4000):
        for n in NAMES:
            num = sum(X[n][L - 1][j] * float(L) ** (j - DEGREE[n]) for j in range(DEGREE[n] + 1))
            pred = float(A.critical[n].subs({S.lambda_b: 1, S.lambda_W: 1, S.L: L}))
            assert abs(num / pred - 1) < 4 * math.log(L) / L, (n, L, num, pred)


def test_kstar0_known_leading_forms():
    A = sym.ntk_asymptotics("tanh")
    ell, lb, lw = S.ell, S.lambda_b, S.lambda_W
    # Theta ~ lambda_b l/(1 + p_perp) + lambda_W/(C_W (-a_1) p_perp) (derivations/README.md section 16)
    assert sp.simplify(A.terms["Theta"] - (lb * ell / 2 + lw / 2)) == 0
    # V and G1 are finite_width_asymptotics' forms
    fwa = sym.finite_width_asymptotics("tanh")
    assert sp.simplify(A.leading["V"] - fwa.leading["V"]) == 0 and A.leading["G1"] == fwa.leading["G1"]
    assert A.exponents["R"] == (5, 2) and A.exponents["U"] == (3, 0)


def test_errors():
    with pytest.raises(ParameterError, match="scale-invariant"):
        sym.ntk_closed_forms("tanh")
    with pytest.raises(ParameterError):
        sym.ntk_asymptotics("gelu")
    with pytest.raises(ParameterError, match="exact"):
        sym.iterate_ntk_statistics("tanh", 2, K1=1, lambda_b=1, lambda_W=1, C_W_value=1, exact=True)

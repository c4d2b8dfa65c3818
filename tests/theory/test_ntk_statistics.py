"""The O(1/n) NTK statistics (pdlt.theory.ntk_statistics; derivations/README.md section 17).

Oracles, none of them the module's own code path:
* the single-input recursions of derivations/README.md section 17 written out here with numpy's Gauss-Hermite rule
  (scalar algebra in chi_par, chi_perp, h; 1D quadrature; V and G1 from their single-input recursions);
* numbers from an independent explicit-weight implementation (printed to 3-4 digits in the shared reference notes);
* exact closed forms: the scale-invariant class at criticality and the deep linear network with two inputs;
* consistency of the multi-input tensors with one-input runs, and their index symmetries.
Tolerances: the Gauss-Hermite rule with 200 nodes integrates tanh products at K <= 1.5 to ~1e-13 (measured
against mpmath; 120 nodes leave 2e-9 on <s''^2 s'^2>), pdlt's quadrature to ~1e-12; a 1e-9 relative
tolerance leaves room for the recursion's amplification over a few layers.
"""

import numpy as np
import pytest
import sympy as sp

import pdlt
from pdlt.errors import DivergentFlowError, ParameterError, SingularKernelError
from pdlt.theory.ntk_statistics import ntk_statistics

FIELDS = "ABDFPQRSTU"


def _gh(f, K, n=200):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return float(np.sum(w * f(np.sqrt(K) * z)) / np.sqrt(2 * np.pi))


def _single_input_reference(C_W, C_b, lb, lw, widths, K1, Theta1_):
    """The single-input recursions, tanh, per-layer lists C_W, C_b, lb, lw (layer l at index l - 1)."""
    s = np.tanh
    s1 = lambda z: 1 - np.tanh(z) ** 2
    s2 = lambda z: -2 * np.tanh(z) * s1(z)
    s3 = lambda z: -2 * s1(z) ** 2 + 4 * np.tanh(z) ** 2 * s1(z)
    L = len(C_W)
    K, Th, G1, V = K1, Theta1_, 0.0, 0.0
    st = dict.fromkeys(FIELDS + "1", 0.0)
    out = [dict(st, Theta=Th)]
    for l in range(1, L):
        C, lam, r = C_W[l], lw[l], widths[l] / widths[l - 1]
        E = lambda f: _gh(f, K)
        chi_par = C * E(lambda z: s1(z) ** 2 + s(z) * s2(z))
        chi_perp = C * E(lambda z: s1(z) ** 2)
        h = 0.5 * C * E(lambda z: s2(z) ** 2 + s1(z) * s3(z))
        he4 = lambda z: (z**4 - 6 * K * z**2 + 3 * K * K) / K**4
        he2 = lambda z: (z**2 - K) / K**2
        Vn = C * C * (E(lambda z: s(z) ** 4) - E(lambda z: s(z) ** 2) ** 2) + r * chi_par**2 * V
        G1n = r * (chi_par * G1 + C / 8 * E(lambda z: s(z) ** 2 * he4(z)) * V)
        A, B, D, F, P, Q, R, S, T, U = (st[k] for k in FIELDS)
        Fn = C * C * E(lambda z: s1(z) ** 2 * s(z) ** 2) * Th + r * chi_par**2 * F
        Bn = C * C * E(lambda z: s1(z) ** 4) * Th**2 + r * chi_perp**2 * B
        s1s1, ss = E(lambda z: s1(z) ** 2), E(lambda z: s(z) ** 2)
        Dn = (lam / C) * Vn + C * C * Th * (E(lambda z: s1(z) ** 2 * s(z) ** 2) - s1s1 * ss) + r * (
            chi_par * chi_perp * D + 2 * h * chi_par * Th * V)
        An = (-(lam / C) ** 2 * Vn + 2 * (lam / C) * Dn + C * C * Th**2 * (E(lambda z: s1(z) ** 4) - s1s1**2)
              + r * (chi_perp**2 * A + 4 * h * chi_perp * Th * D + 4 * h * h * Th**2 * V))
        m = E(lambda z: s(z) * s1(z) ** 2 * s2(z))
        ss2 = E(lambda z: s(z) * s2(z))
        Pn = C * C * Th**2 * m + r * (chi_par * chi_perp * P + chi_perp * (chi_par - chi_perp) * B)
        Qn = C * C * Th**2 * m + (lam / C) * Fn + r * (chi_par * chi_perp * Q + 2 * h * chi_par * Th * F)
        s1s3 = E(lambda z: s1(z) * s3(z))
        s2s2 = E(lambda z: s2(z) ** 2)
        Rn = (lam * C * Th**2 * m + C * C * Th**3 * E(lambda z: s1(z) ** 3 * s3(z))
              + r * chi_perp * (lam * ss2 * B + (lam / C) * chi_par * P + C * Th * s1s3 * B + 2 * h * Th * P)
              + r * chi_perp**2 * R)
        m22 = E(lambda z: s2(z) ** 2 * s1(z) ** 2)
        Sn = (C * lam * Th**2 * E(lambda z: s1(z) ** 4) + C * C * Th**3 * m22
              + r * chi_perp * (lam * s1s1 + C * Th * s2s2) * B + r * chi_perp**2 * S)
        Tn = (lam**2 * Th * E(lambda z: s1(z) ** 2 * s(z) ** 2) + 2 * C * lam * Th**2 * m + C * C * Th**3 * m22
              + r * F * (lam * chi_par / C + 2 * h * Th) ** 2
              + r * (2 * (lam / C) * chi_perp * chi_par * Q + 4 * h * chi_perp * Th * Q + chi_perp**2 * T))
        Un = C * C * Th**3 * m22 + r * chi_perp**2 * U
        sq2 = E(lambda z: s(z) ** 2 * he2(z))
        sq4 = E(lambda z: s(z) ** 2 * he4(z))
        d2 = E(lambda z: s1(z) ** 2 * he2(z))
        d4 = E(lambda z: s1(z) ** 2 * he4(z))
        T1n = r * (chi_perp * st["1"] + lam * (0.5 * G1 * sq2 + V * sq4 / 8) + C * Th * (0.5 * G1 * d2 + V * d4 / 8)
                   + 2 * h * (D + 2 * F))
        Thn = lb[l] + lam * ss + chi_perp * Th
        st = dict(A=An, B=Bn, D=Dn, F=Fn, P=Pn, Q=Qn, R=Rn, S=Sn, T=Tn, U=Un)
        st["1"] = T1n
        K, Th, G1, V = C_b[l] + C * ss, Thn, G1n, Vn
        out.append(dict(st, Theta=Th))
    return out


def test_single_input_against_scalar_recursions():
    C_W, C_b = (1.1, 1.3, 0.9, 1.2), (0.2, 0.05, 0.3, 0.1)
    lb, lw = (0.5, 0.7, 0.2, 0.9), (1.1, 0.6, 1.4, 0.8)
    widths = (2, 7, 11, 5, 3)
    x = np.array([[0.8, -0.5]])
    net = pdlt.MLP("tanh", widths, C_W=C_W, C_b=C_b)
    st = ntk_statistics(net, x, lambda_b=lb, lambda_W=lw)
    K1 = C_b[0] + C_W[0] * float(x[0] @ x[0]) / 2
    ref = _single_input_reference(C_W, C_b, lb, lw, widths, K1, lb[0] + lw[0] * float(x[0] @ x[0]) / 2)
    for l, r in enumerate(ref):
        assert st.Theta[l, 0, 0] == pytest.approx(r["Theta"], rel=1e-12)
        assert st.Theta1[l, 0, 0] == pytest.approx(r["1"], rel=1e-9, abs=1e-12)
        for k in FIELDS:
            assert getattr(st, k)[l, 0, 0, 0, 0] == pytest.approx(r[k], rel=1e-9, abs=1e-12), (l + 1, k)


def _tanh_point(L, C_W, C_b, K1, width=16):
    x = np.array([[np.sqrt((K1 - C_b) / C_W)]])
    return pdlt.MLP("tanh", (1,) + (width,) * (L - 1) + (1,), C_W=C_W, C_b=C_b), x


@pytest.mark.parametrize("L, expect", [
    (2, dict(P=-0.3866, Q=-0.1905, R=-3.669, S=2.4092, T=0.2893, U=0.9145)),
    (3, dict(P=-1.1206, Q=-0.5245, R=-13.176, S=7.941, T=1.277, U=2.675, B=3.503, F=0.272)),
])
def test_independent_single_input_numbers(L, expect):
    """tanh, C_W = 1.2, C_b = 0.1, lambda_b = 0.7, lambda_W = 1.3, K^(1) = 1: the independent implementation's
    values, to the digits it printed (half a unit of the last digit)."""
    net, x = _tanh_point(L, 1.2, 0.1, 1.0)
    st = ntk_statistics(net, x, lambda_b=0.7, lambda_W=1.3)
    for k, v in expect.items():
        digits = len(str(v).split(".")[1])
        assert abs(getattr(st, k)[-1, 0, 0, 0, 0] - v) <= 0.5 * 10.0**-digits, k


@pytest.mark.parametrize("L, C_W, expect", [(3, 1.5, -0.0890), (4, 1.0, -0.1481)])
def test_independent_theta1(L, C_W, expect):
    net, x = _tanh_point(L, C_W, 0.0, 0.5)
    st = ntk_statistics(net, x, lambda_b=0.0, lambda_W=1.0)
    assert abs(st.Theta1[-1, 0, 0] - expect) <= 0.5e-4
    assert np.all(st.Theta1[:2] == 0.0)


X2 = np.array([[1.0, 0.4, -0.3], [0.6, -0.3, -0.8]])


@pytest.mark.parametrize("act, C_W, C_b", [("tanh", 1.2, 0.1), ("relu", 2.0, 0.1), ("gelu", 1.5, 0.2)])
def test_two_inputs_reduce_to_one_and_symmetries(act, C_W, C_b):
    net = pdlt.MLP(act, (3, 8, 12, 16, 1), C_W=C_W, C_b=C_b)
    st = ntk_statistics(net, X2, 0.7, 1.3)
    for a in (0, 1):
        one = ntk_statistics(net, X2[a:a + 1], 0.7, 1.3)
        assert st.Theta1[:, a, a] == pytest.approx(one.Theta1[:, 0, 0], rel=1e-10, abs=1e-13)
        for k in FIELDS:
            assert getattr(st, k)[:, a, a, a, a] == pytest.approx(getattr(one, k)[:, 0, 0, 0, 0], rel=1e-10,
                                                                  abs=1e-13), k
    tol = dict(rel=1e-12, abs=1e-12)
    t = lambda arr, *ax: arr.transpose(0, *[i + 1 for i in ax])
    # B_{a1a3a2a4}: E[H_{ij;a1a2} H_{ij;a3a4}] is symmetric under (a1a2) <-> (a3a4) and under i <-> j
    assert st.B == pytest.approx(t(st.B, 1, 0, 3, 2), **tol)
    assert st.B == pytest.approx(t(st.B, 2, 3, 0, 1), **tol)
    assert st.F == pytest.approx(t(st.F, 2, 3, 0, 1), **tol)  # i <-> j
    assert st.A == pytest.approx(t(st.A, 2, 3, 0, 1), **tol)
    assert st.A == pytest.approx(t(st.A, 1, 0, 2, 3), **tol)
    assert st.D == pytest.approx(t(st.D, 1, 0, 3, 2), **tol)
    assert st.P == pytest.approx(t(st.P, 0, 2, 1, 3), **tol)  # dH symmetric in its two NTK legs
    assert st.R == pytest.approx(t(st.R, 0, 1, 3, 2), **tol)
    assert st.S == pytest.approx(t(st.S, 1, 0, 3, 2), **tol)  # ddII under (i1 a1 i3 a3) <-> (i2 a2 i4 a4)
    assert st.T == pytest.approx(t(st.T, 3, 2, 1, 0), **tol)  # T_{acdb} = T_{bdca}
    assert st.U == pytest.approx(t(st.U, 2, 3, 0, 1), **tol)  # U_{a1a4a2a3} = U_{a2a3a1a4}
    assert st.Theta1 == pytest.approx(st.Theta1.transpose(0, 2, 1), **tol)
    for k in FIELDS:
        assert np.all(getattr(st, k)[0] == 0.0)
        assert np.all(np.isfinite(getattr(st, k)))


def test_relu_criticality_closed_forms():
    """Scale-invariant class at criticality, one input, equal widths, constant learning rates: Theta = l Theta_0,
    F = q K Theta_0 l(l-1)/2, B = q Theta_0^2 (l-1) l (2l-1)/6, D = (lambda_W/C_W) sum_{l'<=l} V^(l') +
    (q-1) K Theta_0 l(l-1)/2 with V^(l) = nu (l-1) K^2 (q = A4/A2^2 = 2, nu = 3q - 1 = 5 for ReLU), and
    P = R = U = Theta1 = 0."""
    L, lb, lw = 6, 0.7, 1.3
    x = np.array([[1.0, -0.5]])
    K = 2.0 * 1.25 / 2
    net = pdlt.MLP("relu", (2,) + (10,) * (L - 1) + (1,), C_W=2.0, C_b=0.0)
    st = ntk_statistics(net, x, lb, lw)
    l = np.arange(1, L + 1)
    Th0 = lb + lw * K / 2
    assert st.Theta[:, 0, 0] == pytest.approx(l * Th0, rel=1e-12)
    assert st.F[:, 0, 0, 0, 0] == pytest.approx(2 * K * Th0 * l * (l - 1) / 2, rel=1e-10)
    assert st.B[:, 0, 0, 0, 0] == pytest.approx(2 * Th0**2 * (l - 1) * l * (2 * l - 1) / 6, rel=1e-10)
    Vsum = np.cumsum(5 * (l - 1) * K**2)
    assert st.D[:, 0, 0, 0, 0] == pytest.approx((lw / 2) * Vsum + K * Th0 * l * (l - 1) / 2, rel=1e-10)
    for k in ("P", "R", "U"):
        assert np.all(np.abs(getattr(st, k)) < 1e-12 * np.max(np.abs(st.B))), k
    assert np.all(np.abs(st.Theta1) < 1e-12 * np.max(np.abs(st.B)))


def test_deep_linear_two_inputs_closed_forms():
    """sigma = z, C_W = 1, C_b = 0, equal widths: K = x x^T/n_0 and Theta^(l) = l Theta_0 with Theta_0 = lambda_b +
    lambda_W K; every sigma' average is 1 and sigma'' = 0, so (by hand, from the Wick contractions)
    B^(l)_{a1a3a2a4} = Theta_0,12 Theta_0,34 (l-1)l(2l-1)/6, F^(l)_{a1a3a2a4} = Theta_0,12 K_34 l(l-1)/2,
    Q^(l)_{a0a1a2a3} = lambda_W Theta_0,02 K_13 (l+1)l(l-1)/6, and P = R = U = 0."""
    L, lb, lw = 5, 0.4, 0.9
    net = pdlt.MLP("linear", (3,) + (6,) * (L - 1) + (1,), C_W=1.0, C_b=0.0)
    st = ntk_statistics(net, X2, lb, lw)
    K = X2 @ X2.T / 3
    T0 = lb + lw * K
    for i, l in enumerate(range(1, L + 1)):
        B = np.einsum("xz,yw->xyzw", T0, T0) * (l - 1) * l * (2 * l - 1) / 6
        F = np.einsum("xz,yw->xyzw", T0, K) * l * (l - 1) / 2
        Q = lw * np.einsum("ac,bd->abcd", T0, K) * (l + 1) * l * (l - 1) / 6
        assert st.B[i] == pytest.approx(B, rel=1e-10, abs=1e-12)
        assert st.F[i] == pytest.approx(F, rel=1e-10, abs=1e-12)
        assert st.Q[i] == pytest.approx(Q, rel=1e-10, abs=1e-12)
        for k in "PRU":
            assert np.all(np.abs(getattr(st, k)[i]) < 1e-12), k


def test_bad_inputs_raise_pdlt_errors():
    res = pdlt.MLP("tanh", (3, 8, 8, 8), C_W=1.0, gamma=0.5)
    with pytest.raises(ParameterError) as err:
        ntk_statistics(res, np.random.default_rng(1).normal(size=(5, 3)))
    assert err.value.setting == "x" and "at most 4 inputs" in str(err.value)  # residual: four inputs at a time
    net = pdlt.MLP("tanh", (3, 8, 8, 1), C_W=1.0, C_b=0.1)
    with pytest.raises(SingularKernelError):
        ntk_statistics(net, np.array([[1.0, 0.4, -0.3], [1.0, 0.4, -0.3]]))
    with pytest.raises(ParameterError):
        ntk_statistics(net, np.random.default_rng(0).normal(size=(10, 3)))
    deep = pdlt.MLP("relu", (1,) + (4,) * 899 + (1,), C_W=3.0, C_b=0.0)
    with pytest.raises(DivergentFlowError) as err:
        ntk_statistics(deep, np.array([[1.0]]))
    assert err.value.layer is not None


def test_unresolved_quadrature_is_refused_by_name():
    """Large inputs make sigma' (a bump of width ~1 in z) narrow against the kernel. Beyond K = 64 one input takes
    gaussian.expect's panel rule (sigma's own scale): tanh's A, B, D, F at layer 3 agree with the independent O(1/n)
    parts of pdlt.ntk_nnlo (copies of the network, mpmath-checked at large kernels) to 1e-12 at x = 30 and 100 (2e-13
    at x = 1000, measured: ntk_nnlo takes 8 s there) (the trapezoid was 9.5 % off at x = 100, then refused from x = 50); sin, periodic, keeps the trapezoid (exact for
    its period) and agrees to 1e-12 at x = 100. sin + tanh, resolved by neither rule at x = 100, is refused naming x.
    Overflowing derivative forms (swish at K = 2500) name the inputs and layer 1, not the criticality of C_W."""
    tanh, sin = pdlt.MLP("tanh", (1, 8, 8, 8)), pdlt.MLP("sin", (1, 8, 8, 8))
    for net, x, tol in ((tanh, 30.0, 1e-12), (tanh, 100.0, 1e-12), (sin, 100.0, 1e-12)):
        st, so = ntk_statistics(net, np.array([[x]])), pdlt.ntk_nnlo(net, [[x]])
        for k in "ABDF":
            assert abs(getattr(st, k)[2, 0, 0, 0, 0] - getattr(so, k)[2, 0]) <= tol * abs(getattr(so, k)[2, 0]), k
    both = pdlt.MLP(pdlt.activation(sp.sin(pdlt.activations.Z) + sp.tanh(pdlt.activations.Z)), (1, 8, 8, 8))
    with pytest.raises(ParameterError, match="not resolved by the quadrature") as err:
        ntk_statistics(both, np.array([[100.0]]))
    assert err.value.setting == "x" and "layer l = 1" in str(err.value)
    with pytest.raises(DivergentFlowError, match="overflow on the quadrature grid at layer l = 1") as err:
        ntk_statistics(pdlt.MLP("swish", (1, 8, 8, 8)), np.array([[50.0]]))
    assert err.value.layer == 1 and "scale x down" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# the fast rules for products on three and four distinct inputs, against slow independent references
# ---------------------------------------------------------------------------------------------------------------

def _corr_kernel(rho, var):
    """A kernel with correlation matrix ``rho`` and variances ``var``."""
    s = np.sqrt(np.asarray(var, dtype=float))
    return np.asarray(rho, dtype=float) * s[:, None] * s[None, :]


R3 = np.array([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]])
R4 = np.array([[1.0, 0.9, 0.6, 0.3], [0.9, 1.0, 0.7, 0.2], [0.6, 0.7, 1.0, -0.3], [0.3, 0.2, -0.3, 1.0]])


def _products(act, local):
    """Integrand of the averages ``<prod_p prod_{t in per[p]} s_t(z_p)>`` for every ``per`` in ``local``."""
    ds = (act, act.d1, act.d2, act.d3)

    def f(z):
        out = []
        for per in local:
            v = np.ones(z.shape[:-1])
            for p, ts in enumerate(per):
                for t in ts:
                    v = v * ds[t](z[..., p])
            out.append(v)
        return np.stack(out, axis=-1)

    return f


@pytest.mark.parametrize("K, n", [(_corr_kernel(R3, (0.6, 1.2, 0.9)), 121),
                                  (_corr_kernel(R4, (0.25, 0.4, 0.2, 0.3)), 57)])
def test_smooth_products_against_fine_trapezoid(K, n):
    """tanh, correlations up to 0.9: the conditioned rule vs gaussian.expect's plain trapezoid at n nodes per axis
    (the 4D one at n = 41, 49, 57 moves by 6e-10, 1e-12, 1e-14 relative for these variances: converged; at twice the
    variances n = 57 is still 1.5e-10 off, the 4D grid limit)."""
    from pdlt import gaussian
    from pdlt.theory.conditioned import conditioned_products
    from pdlt.theory.finite_width import SINGULAR_COND

    act = pdlt.activation("tanh")
    k = K.shape[0]
    rest = ((1,),) * (k - 3)
    local = [((3,), (1,), (1,)) + rest, ((2,), (2,), (1,)) + rest, ((0,), (1, 1), (2,)) + rest,
             ((1,), (0,), (0,)) + ((1,),) * (k - 3), ((0,), (0,), (0, 0)) + ((0,),) * (k - 3)]
    fast, need = conditioned_products(act, K[None], local, singular_cond=SINGULAR_COND)
    assert need[0] == 0
    fast = fast[0]
    ref = np.asarray(gaussian.expect(_products(act, local), K, n=n, method="smooth"))
    assert fast == pytest.approx(ref, rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_relu_orthant_products_against_nested_rule_and_exact_values(name):
    """ReLU family: the orthant closed forms vs gaussian.expect's nested rule (correlations up to 0.9; the nested rule
    at 3D / 4D moves by < 1e-13 / ~2e-10 from n = 32 / 16 to 40 / 20 here), and for ReLU exact values: P(z > 0) = 1/5
    for four equicorrelated inputs at rho = 1/2, and a block-diagonal 4x4 kernel whose averages factor into 2D ones
    (polar rule, ~1e-15)."""
    from pdlt import gaussian
    from pdlt.theory.ntk_statistics import _scale_invariant_products

    act = pdlt.activation(name)
    local3 = [((1,), (1,), (1,)), ((0,), (1,), (0,)), ((0, 0), (1,), (1,)), ((1, 1), (0,), (1, 0))]
    K3 = _corr_kernel(R3, (0.6, 1.2, 0.9))
    fast = _scale_invariant_products(act, K3[None], local3)[0]
    ref = np.asarray(gaussian.expect(_products(act, local3), K3, kinks=(0.0,), n=40))
    assert fast == pytest.approx(ref, rel=1e-11, abs=1e-13)
    local4 = [((1,), (1,), (1,), (1,)), ((0,), (1,), (0,), (1,)), ((1,), (1,), (0,), (0,)), ((0,), (0,), (1,), (1,))]
    K4 = _corr_kernel(R4, (0.5, 0.8, 0.4, 0.6))
    fast = _scale_invariant_products(act, K4[None], local4)[0]
    ref = np.asarray(gaussian.expect(_products(act, local4), K4, kinks=(0.0,), n=20))
    assert fast == pytest.approx(ref, rel=1e-10, abs=1e-12)
    if name != "relu":
        return
    # exact: four equicorrelated inputs at rho = 1/2
    E = _corr_kernel(np.full((4, 4), 0.5) + 0.5 * np.eye(4), (1.0, 2.0, 0.5, 1.5))
    assert _scale_invariant_products(act, E[None], [local4[0]])[0, 0] == pytest.approx(0.2, rel=1e-13)
    # exact: (z0, z1) independent of (z2, z3), strongly correlated within the blocks
    Kb = np.zeros((4, 4))
    Kb[:2, :2] = _corr_kernel([[1, 0.95], [0.95, 1]], (0.7, 1.1))
    Kb[2:, 2:] = _corr_kernel([[1, -0.8], [-0.8, 1]], (1.3, 0.4))
    fast = _scale_invariant_products(act, Kb[None], local4)[0]
    pair = lambda S, per: float(gaussian.expect(_products(act, [per]), S, kinks=(0.0,))[0])
    ref = [pair(Kb[:2, :2], per[:2]) * pair(Kb[2:, 2:], per[2:]) for per in local4]
    assert fast == pytest.approx(ref, rel=1e-13, abs=1e-15)



def test_relu_orthant_products_at_high_correlation_against_one_factor_integrals():
    """ReLU, correlations up to 1 - 5e-4 (deep critical flows; the nested rule is 1e-3 off there): a one-factor kernel
    ``z_i = s_i (a_i X + sqrt(1 - a_i^2) e_i)`` makes the z_i independent given X, so every orthant average is a 1D
    integral over X of per-coordinate closed forms (dense trapezoid, converged to rounding)."""
    from scipy.special import ndtr

    from pdlt.theory.ntk_statistics import _scale_invariant_products

    act = pdlt.activation("relu")
    a = np.array([0.9996, 0.9999, 0.9990, 0.9998])
    sd = np.sqrt(np.array([0.8, 1.3, 0.5, 1.1]))
    R = np.outer(a, a) + np.diag(1 - a * a)
    K = R * np.outer(sd, sd)
    X = np.linspace(-12.0, 12.0, 240001)
    wX = np.exp(-0.5 * X * X) / np.sqrt(2 * np.pi) * (X[1] - X[0])
    mu, s = a[:, None] * X[None, :], np.sqrt(1 - a * a)[:, None]
    P = ndtr(mu / s)
    ph = np.exp(-0.5 * (mu / s) ** 2) / np.sqrt(2 * np.pi)
    m = sd[:, None] * (mu * P + s * ph)  # E[z_i 1{z_i > 0} | X]
    M = sd[:, None] ** 2 * ((mu * mu + s * s) * P + mu * s * ph)  # E[z_i^2 1{z_i > 0} | X]
    cases = {((1,), (1,), (1,), (1,)): P[0] * P[1] * P[2] * P[3],
             ((0,), (1,), (0,), (1,)): m[0] * P[1] * m[2] * P[3],
             ((1,), (0, 0), (1,), (1,)): P[0] * M[1] * P[2] * P[3],
             ((1,), (1, 0), (1,), (0,)): P[0] * m[1] * P[2] * m[3]}
    fast = _scale_invariant_products(act, K[None], list(cases))[0]
    ref = [float(v @ wX) for v in cases.values()]
    assert fast == pytest.approx(ref, rel=1e-11)
    three = [((1,), (1,), (1,)), ((0,), (1,), (0,)), ((1,), (0, 0), (1,))]
    fast3 = _scale_invariant_products(act, K[None, :3, :3], three)[0]
    ref3 = [float(v @ wX) for v in (P[0] * P[1] * P[2], m[0] * P[1] * m[2], P[0] * M[1] * P[2])]
    assert fast3 == pytest.approx(ref3, rel=1e-11)


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_smooth_ss_averages_match_finite_width(act):
    """Smooth sigma: the s s averages built inside ntk_averages (P2, P4, Hessian and fourth-derivative Hermite
    averages) against finite_width.layer_averages, an independent implementation (its 3D / pair rules are ~1e-10 /
    ~1e-9 accurate at these kernels, the bound here)."""
    from pdlt.theory.finite_width import layer_averages
    from pdlt.theory.ntk_statistics import ntk_averages

    K = np.stack([_corr_kernel(R4, (0.5, 0.8, 0.4, 0.6)), _corr_kernel(R4, (1.5, 2.5, 1.0, 2.0))])
    mine, ref = ntk_averages(act, K).ss, layer_averages(act, K)
    for k in ("P2", "P4", "D", "Qd", "Qp"):
        a, b = getattr(mine, k), getattr(ref, k)
        assert np.max(np.abs(a - b)) <= 1e-8 * np.max(np.abs(b)), k


def test_statistics_of_many_inputs_restrict_to_those_of_a_subset():
    """Each tensor entry depends only on the inputs it names (the recursions close on index sets), so the 8-input
    computation restricted to four of the inputs equals the 4-input computation (a different grouping of every
    average and of the recursion's contractions)."""
    net = pdlt.MLP("tanh", (3, 8, 8, 8), C_W=1.3, C_b=0.2)
    x = np.random.default_rng(3).normal(size=(8, 3))
    idx = [0, 3, 5, 7]
    big = ntk_statistics(net, x, 0.6, 1.1)
    small = ntk_statistics(net, x[idx], 0.6, 1.1)
    ix4 = (slice(None),) + np.ix_(idx, idx, idx, idx)
    for name in ("A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"):
        ref = getattr(small, name)
        assert np.abs(ref).max() > 1e-3
        np.testing.assert_allclose(getattr(big, name)[ix4], ref, rtol=0, atol=1e-12 * np.abs(ref).max(), err_msg=name)
    np.testing.assert_allclose(big.Theta1[(slice(None),) + np.ix_(idx, idx)], small.Theta1, rtol=0,
                               atol=1e-12 * np.abs(small.Theta1).max())


@pytest.mark.parametrize("act, C_W", [("tanh", 1.3), ("relu", 2.0)])
def test_star_statistics_equal_full_statistics_on_the_star(act, C_W):
    """star_statistics (averages only over input sets with at most one input outside the core) against
    ntk_statistics of the core plus one outside input, on every entry with at most one outside input. The bound is
    the round-off of the recursion itself: the change of the full computation when its inputs are reversed (the same
    statistics, every sum grouped differently), times 10, plus 1e-14 relative for exact (ReLU) cases."""
    from pdlt.theory.ntk_statistics import _FIELDS, star_statistics

    net = pdlt.MLP(act, (3, 8, 8, 8, 8), C_W=C_W, C_b=0.2)
    x = np.random.default_rng(11).normal(size=(7, 3))
    core = 4
    star = star_statistics(net, x, core, 0.6, 1.1)
    for extra in (4, 6):
        sub = list(range(core)) + [extra]
        full = ntk_statistics(net, x[sub], 0.6, 1.1)
        rev = ntk_statistics(net, x[sub][::-1], 0.6, 1.1)
        for name in _FIELDS + ("Theta1", "G1", "V", "Theta", "K"):
            ref = np.asarray(getattr(full, name))
            nd = ref.ndim - 1
            back = np.asarray(getattr(rev, name))[(slice(None),) + np.ix_(*[np.arange(5)[::-1]] * nd)]
            got = np.asarray(getattr(star, name))[(slice(None),) + np.ix_(*[np.array(sub)] * nd)]
            scale = np.abs(ref).max()
            assert scale > 1e-6 or (act == "relu" and name in ("P", "R", "U")), name   # 0 for ReLU
            bound = 10 * np.abs(back - ref).max() + 1e-14 * scale
            assert np.abs(got - ref).max() <= bound, (name, extra)
    # tuples with two or more outside inputs are not computed: exactly 0 (not leftovers of the recursion)
    from pdlt.theory.finite_width import star_tuples

    outside4 = np.ones((7,) * 4, dtype=bool)
    outside4[tuple(star_tuples(7, core).T)] = False
    outside2 = np.ones((7, 7), dtype=bool)
    outside2[tuple(star_tuples(7, core, 2).T)] = False
    assert outside4.sum() > 0 and outside2.sum() > 0
    for name in _FIELDS + ("V",):
        assert np.all(np.asarray(getattr(star, name))[:, outside4] == 0), name
    for name in ("Theta1", "G1"):
        assert np.all(np.asarray(getattr(star, name))[:, outside2] == 0), name
    with pytest.raises(pdlt.ParameterError, match="core"):
        star_statistics(net, x, 9)
    with pytest.raises(pdlt.ParameterError, match="at most 16 inputs"):
        star_statistics(net, np.random.default_rng(0).normal(size=(17, 3)), 4)


def test_deterministic_input_with_smooth_activation():
    """A zero input with C_b = 0 has zero variance at every layer, so every 2x2 block containing it is singular for
    the conditioned rule (which then leaves it to gaussian.expect): the statistics stay finite and those of the other
    input equal its one-input statistics (the subset closure)."""
    net = pdlt.MLP("tanh", (1, 4, 4, 1), C_W=1.0, C_b=0.0)
    both = ntk_statistics(net, [[0.0], [1.0]])
    one = ntk_statistics(net, [[1.0]])
    for name in ("A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"):
        got = np.asarray(getattr(both, name))
        assert np.all(np.isfinite(got)), name
        np.testing.assert_allclose(got[:, 1, 1, 1, 1], np.asarray(getattr(one, name))[:, 0, 0, 0, 0], rtol=1e-12,
                                   atol=1e-14, err_msg=name)


def test_truncation_caveat_on_the_ntks_own_relative_variance():
    """Training the first layer only, tanh's NTK fluctuates far more than its metric: the NTK's relative variance
    crosses the truncation threshold (at layer 7) while V/(nK^2) stays at 0.14 (no preactivation caveat); with
    every layer trained it stays small and nothing is said."""
    import warnings

    from pdlt.errors import TRUNCATION_THRESHOLD, TruncationWarning

    L, x = 12, [[1.0, 0.3]]
    net = pdlt.MLP("tanh", (2,) + (32,) * L + (1,), C_W=1.0)
    first = [1.0] + [0.0] * L
    th = pdlt.ntk(net, x, lambda_b=first, lambda_W=first)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        th.statistics
    msgs = [str(w.message) for w in rec if issubclass(w.category, TruncationWarning)]
    assert len(msgs) == 1 and "NTK's relative variance" in msgs[0] and "l = 7" in msgs[0]
    rel = [float(th.prediction("ntk_relative_variance", l)[0]) for l in range(2, L + 2)]
    assert rel.index(next(r for r in rel if r > TRUNCATION_THRESHOLD)) + 2 == 7
    everyone = pdlt.ntk(net, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        everyone.statistics

"""Tests for pdlt.gaussian: quadrature rules, kernel validation, <f(z)>_K against
mpmath references and closed forms, singular kernels, batching, error handling."""

import functools
import itertools
import math
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pdlt
from pdlt import gaussian as G
from pdlt.gaussian import (
    check_kernel,
    expect,
    expect_mp,
    gauss_hermite,
    gauss_legendre,
    half_gauss_hermite,
    psd_sqrt_lower,
    radial_rule,
)

# ---------------------------------------------------------------------------
# activations: (numpy version, mpmath version, kinks)
# ---------------------------------------------------------------------------

_erf_np = np.vectorize(math.erf, otypes=[float])  # numpy has no erf; tests only


def _phi_np(z):
    return 0.5 * (1.0 + _erf_np(z / math.sqrt(2.0)))


ACTS = {
    "tanh": (np.tanh, mpmath.tanh, ()),
    "erf": (_erf_np, mpmath.erf, ()),
    "sin": (np.sin, mpmath.sin, ()),
    "gelu": (lambda z: z * _phi_np(z), lambda z: z * mpmath.ncdf(z), ()),
    "silu": (lambda z: z / (1 + np.exp(-z)), lambda z: z / (1 + mpmath.exp(-z)), ()),
    "softplus": (lambda z: np.logaddexp(0.0, z), lambda z: mpmath.log1p(mpmath.exp(z)), ()),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: 1 / (1 + mpmath.exp(-z)), ()),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: max(z, 0), (0.0,)),
    "leaky_relu": (lambda z: np.where(z > 0, z, 0.1 * z), lambda z: z if z > 0 else z / 10, (0.0,)),
    "abs": (np.abs, abs, (0.0,)),
    "hard_tanh": (lambda z: np.clip(z, -1.0, 1.0), lambda z: max(-1, min(1, z)), (-1.0, 1.0)),
}
# derivatives sigma' (step functions for the piecewise-linear ones)
DERIVS = {
    "tanh'": (lambda z: 1 / np.cosh(z) ** 2, lambda z: mpmath.sech(z) ** 2, ()),
    "sigmoid'": (lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2, lambda z: mpmath.exp(-z) / (1 + mpmath.exp(-z)) ** 2, ()),
    "softplus'": (lambda z: 1 / (1 + np.exp(-z)), lambda z: 1 / (1 + mpmath.exp(-z)), ()),
    "relu'": (lambda z: (z > 0).astype(float), lambda z: mpmath.mpf(z > 0), (0.0,)),
    "leaky_relu'": (lambda z: np.where(z > 0, 1.0, 0.1), lambda z: mpmath.mpf(1) if z > 0 else mpmath.mpf(1) / 10, (0.0,)),
    "hard_tanh'": (lambda z: (np.abs(z) < 1).astype(float), lambda z: mpmath.mpf(abs(z) < 1), (-1.0, 1.0)),
}
ALL = {**ACTS, **DERIVS}


def _pair_np(fn):
    return lambda z: fn(z[..., 0]) * fn(z[..., 1])


def _close(value, ref, rtol, atol=1e-15):
    ref = float(ref)
    assert abs(float(value) - ref) <= rtol * abs(ref) + atol, (float(value), ref, abs(float(value) - ref))


@st.composite
def kernels_2d(draw, var=(0.05, 5.0), rho_max=0.95):
    v1 = draw(st.floats(*var))
    v2 = draw(st.floats(*var))
    rho = draw(st.floats(-rho_max, rho_max))
    k12 = rho * math.sqrt(v1 * v2)
    return np.array([[v1, k12], [k12, v2]])


def _corr_kernel(v1, v2, rho):
    k12 = rho * math.sqrt(v1 * v2)
    return np.array([[v1, k12], [k12, v2]])


# ---------------------------------------------------------------------------
# one-dimensional rules: exact moments (independent of how the rules are built)
# ---------------------------------------------------------------------------


def _check_moments(x, w, exact, kmax):
    for k in range(kmax + 1):
        got = math.fsum(w * x**k)
        ref = exact(k)
        scale = math.fsum(w * np.abs(x) ** k)  # cancellation scale for odd moments
        assert abs(got - ref) <= 1e-13 * scale, (k, got, ref)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 64])
def test_gauss_hermite_moments(n):
    x, w = gauss_hermite(n)
    assert x.shape == w.shape == (n,) and np.all(np.diff(x) > 0) and np.all(w > 0)
    _check_moments(x, w, lambda k: 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2))), min(2 * n - 1, 80))


@pytest.mark.parametrize("n", [1, 2, 5, 24, 64])
def test_gauss_legendre_moments(n):
    x, w = gauss_legendre(n)
    assert abs(w.sum() - 2) < 1e-14 and np.all(np.abs(x) < 1)
    _check_moments(x, w, lambda k: 0.0 if k % 2 else 2.0 / (k + 1), 2 * n - 1)


@functools.lru_cache(maxsize=None)
def _half_moment(k):  # int_0^inf t^k phi(t) dt, by mpmath quadrature (not the Gamma formula)
    with mpmath.workdps(30):
        return float(mpmath.quad(lambda t: t**k * mpmath.npdf(t), [0, mpmath.inf]))


@functools.lru_cache(maxsize=None)
def _radial_moment(k):  # int_0^inf r^k r exp(-r^2/2) dr
    with mpmath.workdps(30):
        return float(mpmath.quad(lambda r: r ** (k + 1) * mpmath.exp(-r * r / 2), [0, mpmath.inf]))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 40])
def test_half_gauss_hermite_moments(n):
    x, w = half_gauss_hermite(n)
    assert np.all(x > 0) and np.all(np.diff(x) > 0) and np.all(w > 0)
    assert abs(w.sum() - 0.5) < 1e-15
    _check_moments(x, w, _half_moment, min(2 * n - 1, 60))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 40])
def test_radial_rule_moments(n):
    x, w = radial_rule(n)
    assert np.all(x > 0) and np.all(np.diff(x) > 0) and np.all(w > 0)
    assert abs(w.sum() - 1.0) < 1e-15
    _check_moments(x, w, _radial_moment, min(2 * n - 1, 60))


def test_rules_are_cached_and_read_only():
    # (their speed, < 0.5 s for 128 nodes on an idle core, is a benchmark matter: no wall-clock assert here, where
    # the example scripts run on the other core)
    for cached in (G._half_gauss_hermite, G._radial_rule):
        cached.cache_clear()
        first = cached(128)
        assert cached(128) is first and cached.cache_info().hits == 1
    x, w = half_gauss_hermite(128)
    assert not x.flags.writeable and not w.flags.writeable
    # high-degree exactness at n = 128 (relative to the moment, t^200 ~ 1e180)
    assert abs(math.fsum(w * x**200) / _half_moment_gamma(200) - 1) < 1e-12
    with pytest.raises(ValueError):
        gauss_hermite(0)


def _half_moment_gamma(k):
    return 2 ** ((k - 1) / 2) * math.gamma((k + 1) / 2) / math.sqrt(2 * math.pi)


# ---------------------------------------------------------------------------
# kernel validation and factorization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "K, match",
    [
        ([[1.0, np.nan], [np.nan, 1.0]], "non-finite"),
        ([[1.0, 0.0], [0.0, np.inf]], "non-finite"),
        ([[1.0, 2.0], [2.0, 1.0]], r"not positive semidefinite.*-1"),
        ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "square"),
        ([1.0, 2.0], r"\(\.\.\., d, d\)"),
        (3.0, r"\(\.\.\., d, d\)"),
        ([[1.0, 0.5], [0.4, 1.0]], "not symmetric"),
        ([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]], r"K\[1\].*not positive semidefinite"),
    ],
)
def test_check_kernel_rejects(K, match):
    with pytest.raises(ValueError, match=match):
        check_kernel(K)
    with pytest.raises(ValueError, match=match):
        expect(lambda z: z[..., 0], K)


def test_check_kernel_symmetrizes_and_tolerates_rounding():
    K = np.array([[1.0, 0.3 + 1e-14], [0.3, 1.0]])
    out = check_kernel(K)
    assert out.dtype == np.float64 and out[0, 1] == out[1, 0]
    check_kernel([[1.0, 1.0 + 1e-13], [1.0 + 1e-13, 1.0]])  # -1e-13 eigenvalue: within rtol


@given(st.integers(1, 4), st.integers(0, 3), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_psd_sqrt_lower_reconstructs(d, deficiency, seed):
    rng = np.random.default_rng(seed)
    r = max(d - deficiency, 0)
    A = rng.normal(size=(d, r)) * np.exp(rng.uniform(-2, 2, size=r))
    K = A @ A.T
    L = psd_sqrt_lower(K)
    assert np.allclose(np.triu(L, 1), 0.0)
    # a lower factor in the given order is Cholesky without pivoting: a small kept pivot p (correlation scale, two
    # nearly collinear inputs) amplifies rounding by 1/p in the later Schur complements, so a pivot that should be 0
    # comes out ~eps/p and is dropped (seen: p = 1.9e-5 gave a 1.8e-11 error in K_33 ~ 3.9)
    kept = np.diagonal(L) > 0
    p_min = min(1.0, float(np.min(np.diagonal(L)[kept] ** 2 / np.diag(K)[kept]))) if kept.any() else 1.0
    tol = max(1.0, np.abs(K).max()) * (1e-12 + 64 * np.finfo(float).eps / p_min)
    assert np.allclose(L @ L.T, K, rtol=0, atol=tol)
    assert np.all(np.diagonal(L) >= 0)


def test_psd_sqrt_lower_identical_inputs_exact():
    for k in (2.0, 0.7, 3.3, 1e-3):
        K = np.array([[k, k, 0.3 * k], [k, k, 0.3 * k], [0.3 * k, 0.3 * k, k]])
        L = psd_sqrt_lower(K)
        assert np.array_equal(L[0], L[1]) and L[1, 1] == 0.0
        a = 0.4 * math.sqrt(k)
        K3 = np.array([[1.0, a, a], [a, k, k], [a, k, k]])  # twins after a correlated input
        L3 = psd_sqrt_lower(K3)
        assert np.array_equal(L3[1], L3[2]) and L3[2, 2] == 0.0
    # z_2 == z_1 exactly inside every method
    Ks = np.array([[1.7, 1.7], [1.7, 1.7]])
    same = lambda z: (z[..., 0] == z[..., 1]).astype(float)  # noqa: E731
    for kinks in [(), (0.0,), (-1.0, 1.0)]:
        assert expect(same, Ks, kinks=kinks) == pytest.approx(1.0, abs=1e-15)


def test_psd_sqrt_lower_batched_and_zero_variance():
    K = np.array([[[0.0, 0.0], [0.0, 2.0]], [[1.0, -1.0], [-1.0, 1.0]]])
    L = psd_sqrt_lower(K)
    assert L.shape == (2, 2, 2)
    assert np.allclose(L @ np.swapaxes(L, -1, -2), K, atol=1e-15)
    assert L[1, 1, 0] == -L[1, 0, 0] and L[1, 1, 1] == 0


# ---------------------------------------------------------------------------
# expect vs the mpmath reference
# ---------------------------------------------------------------------------

RTOL = 1e-10
DPS = 5  # works at dps + 10 = 15 digits: ample for a 1e-10 comparison, and fast


@pytest.mark.parametrize("name", sorted(ALL))
@given(v=st.floats(0.05, 5.0))
@settings(max_examples=5, deadline=None)
def test_expect_1d_vs_mp(name, v):
    fn, fm, kinks = ALL[name]
    K = np.array([[v]])
    for g_np, g_mp in [(fn, fm), (lambda z: fn(z) ** 2, lambda z: fm(z) ** 2)]:
        ref = expect_mp(g_mp, K, kinks=kinks, dps=DPS)
        val = expect(lambda z: g_np(z[..., 0]), K, kinks=kinks)
        # odd activations average to ~0: compare on the scale of <|f|>
        scale = float(expect(lambda z: np.abs(g_np(z[..., 0])), K, kinks=kinks))
        _close(val, ref, RTOL, atol=1e-13 * scale)


# 2D: each mpmath reference costs 0.5-10 s, so the default run checks a
# representative set on fixed kernels; the full random sweep is marked slow.
FIXED_2D = [
    ("tanh", [[1.3, -0.5], [-0.5, 0.8]]),
    # sigmoid(z) = (1 + tanh(z/2))/2: tanh's case covers the rule for smooth activations (suite time, 10-15 s)
    pytest.param("sigmoid", [[4.0, 3.0], [3.0, 2.5]], marks=pytest.mark.slow),
    ("relu", [[0.3, 0.2], [0.2, 4.0]]),
    ("relu'", [[1.3, -0.5], [-0.5, 0.8]]),
    pytest.param("hard_tanh", [[2.0, 1.9], [1.9, 2.0]], marks=pytest.mark.slow),   # suite time
    ("hard_tanh'", [[0.6, -0.3], [-0.3, 3.0]]),
]


@pytest.mark.parametrize("name, K", FIXED_2D)
def test_expect_2d_vs_mp_fixed(name, K):
    fn, fm, kinks = ALL[name]
    ref = expect_mp(lambda a, b: fm(a) * fm(b), K, kinks=kinks, dps=DPS)
    _close(expect(_pair_np(fn), K, kinks=kinks), ref, RTOL, atol=1e-15)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALL))
@given(K=kernels_2d())
# 8 kernels per activation (~1.5 s of mpmath each): with the fixed and the random cases above, enough to sample
# the kernel space; 15 cost ~8 minutes on 2 cores
@settings(max_examples=8, deadline=None)
def test_expect_2d_vs_mp_sweep(name, K):
    fn, fm, kinks = ALL[name]
    ref = expect_mp(lambda a, b: fm(a) * fm(b), K, kinks=kinks, dps=DPS)
    scale = float(expect(lambda z: np.abs(_pair_np(fn)(z)), K, kinks=kinks))
    _close(expect(_pair_np(fn), K, kinks=kinks), ref, RTOL, atol=1e-13 * scale)


@pytest.mark.slow  # suite time: the fixed and swept kernels stay in the default suite
@given(name=st.sampled_from(["tanh", "silu", "relu", "leaky_relu", "abs", "hard_tanh", "relu'"]), K=kernels_2d())
@settings(max_examples=4, deadline=None, derandomize=True)
def test_expect_2d_vs_mp_random(name, K):
    fn, fm, kinks = ALL[name]
    ref = expect_mp(lambda a, b: fm(a) * fm(b), K, kinks=kinks, dps=DPS)
    scale = float(expect(lambda z: np.abs(_pair_np(fn)(z)), K, kinks=kinks))
    _close(expect(_pair_np(fn), K, kinks=kinks), ref, RTOL, atol=1e-13 * scale)


def test_expect_mp_singular_and_errors():
    k = 1.5
    one_d = expect_mp(lambda a: mpmath.tanh(a) ** 2, [[k]], dps=15)
    two_d = expect_mp(lambda a, b: mpmath.tanh(a) * mpmath.tanh(b), [[k, k], [k, k]], dps=15)
    assert abs(one_d - two_d) < mpmath.mpf(10) ** -15
    anti = expect_mp(lambda a, b: max(a, 0) * max(b, 0), [[k, -k], [-k, k]], kinks=(0.0,), dps=15)
    assert abs(anti) < mpmath.mpf(10) ** -15
    assert expect_mp(lambda a: mpmath.cos(a) + 2, [[0.0]]) == 3
    with pytest.raises(NotImplementedError):
        expect_mp(lambda a, b, c: a, np.eye(3))
    with pytest.raises(ValueError, match="positive semidefinite"):
        expect_mp(lambda a, b: a, [[1.0, 2.0], [2.0, 1.0]])


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------


def _arccos1(K):
    k11, k22, k12 = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
    th = np.arccos(np.clip(k12 / np.sqrt(k11 * k22), -1.0, 1.0))
    return np.sqrt(k11 * k22) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))


@given(K=kernels_2d(var=(0.05, 10.0), rho_max=0.999))
@settings(max_examples=30, deadline=None)
def test_closed_forms_2d(K):
    k11, k22, k12 = K[0, 0], K[1, 1], K[0, 1]
    _close(expect(lambda z: z[..., 0] * z[..., 1], K), k12, 1e-12, atol=1e-14 * math.sqrt(k11 * k22))
    _close(expect(lambda z: z[..., 0] ** 2 * z[..., 1] ** 2, K), k11 * k22 + 2 * k12**2, 1e-12)
    _close(expect(_pair_np(ACTS["relu"][0]), K, kinks=(0.0,)), _arccos1(K), 1e-12)
    erf_ref = 2 / np.pi * np.arcsin(2 * k12 / np.sqrt((1 + 2 * k11) * (1 + 2 * k22)))
    _close(expect(_pair_np(_erf_np), K), erf_ref, 1e-12, atol=1e-15)
    sin_ref = np.exp(-(k11 + k22) / 2) * np.sinh(k12)
    _close(expect(_pair_np(np.sin), K), sin_ref, 1e-12, atol=1e-15)


@pytest.mark.parametrize("rho", [0.0, 0.9, 0.999999, 1.0, -0.999999, -1.0])
def test_relu_arccos_near_singular(rho):
    K = _corr_kernel(1.7, 0.6, rho)
    val = expect(_pair_np(ACTS["relu"][0]), K, kinks=(0.0,))
    _close(val, _arccos1(K), 1e-12, atol=1e-15)
    # <step step> = 1/4 + arcsin(rho) / (2 pi)
    # (the reference loses digits near rho = -1: asin has condition ~1/sqrt(1 - rho^2))
    _close(expect(_pair_np(DERIVS["relu'"][0]), K, kinks=(0.0,)), 0.25 + np.arcsin(rho) / (2 * np.pi), 1e-12, 1e-14)


def test_singular_kernels_reduce_to_1d():
    k = 2.3
    Ks = np.array([[k, k], [k, k]])
    for name in ["tanh", "softplus", "relu", "hard_tanh", "abs"]:
        fn, _, kinks = ACTS[name]
        one = expect(lambda z: fn(z[..., 0]) ** 2, [[k]], kinks=kinks)
        _close(expect(_pair_np(fn), Ks, kinks=kinks), one, 1e-12)
    assert expect(lambda z: np.cos(z[..., 0]) + 2, [[0.0]]) == pytest.approx(3.0, abs=1e-15)
    # rank-deficient 3x3: z3 = z1 + z2
    A = np.array([[1.0, 0.0], [0.4, 0.8], [1.4, 0.8]])
    K3 = A @ A.T
    _close(expect(lambda z: z[..., 2] ** 2, K3), K3[2, 2], 1e-12)
    _close(expect(lambda z: (z[..., 2] - z[..., 0] - z[..., 1]) ** 2, K3), 0.0, 0, atol=1e-24)


@st.composite
def kernels_nd(draw, d, var=(0.1, 3.0), min_eig=0.05):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d + 2))
    C = A @ A.T
    D = np.sqrt(np.diag(C))
    C = C / np.outer(D, D)
    C = (1 - min_eig) * C + min_eig * np.eye(d)  # keep it reasonably conditioned
    v = np.exp(rng.uniform(np.log(var[0]), np.log(var[1]), size=d))
    return C * np.sqrt(np.outer(v, v))


@given(K=kernels_nd(3))
@settings(max_examples=10, deadline=None)
def test_wick_and_cosines_3d(K):
    _close(expect(lambda z: z[..., 0] ** 2 * z[..., 1] * z[..., 2], K), K[0, 0] * K[1, 2] + 2 * K[0, 1] * K[0, 2], 1e-12,
           atol=1e-13 * K.max() ** 2)
    # cos z1 cos z2 cos z3 = (1/4) sum_{s2, s3 = +-1} cos(z1 + s2 z2 + s3 z3), <cos(a.z)> = exp(-a^T K a / 2)
    ref = sum(np.exp(-np.array([1, s2, s3]) @ K @ np.array([1, s2, s3]) / 2) for s2 in (1, -1) for s3 in (1, -1)) / 4
    _close(expect(lambda z: np.prod(np.cos(z), axis=-1), K), ref, 1e-10, atol=1e-14)
    # orthant probability (nested rule): 1/8 + sum_{i<j} arcsin(rho_ij) / (4 pi)
    D = np.sqrt(np.diag(K))
    C = K / np.outer(D, D)
    orth = 1 / 8 + (np.arcsin(C[0, 1]) + np.arcsin(C[0, 2]) + np.arcsin(C[1, 2])) / (4 * np.pi)
    _close(expect(lambda z: np.prod(z > 0, axis=-1).astype(float), K, kinks=(0.0,)), orth, 1e-9)


def test_wick_and_cosines_4d():
    rng = np.random.default_rng(7)
    A = rng.normal(size=(4, 6))
    K = A @ A.T / 6
    wick = K[0, 1] * K[2, 3] + K[0, 2] * K[1, 3] + K[0, 3] * K[1, 2]
    _close(expect(lambda z: np.prod(z, axis=-1), K), wick, 1e-12, atol=1e-14)
    _close(expect(lambda z: z[..., 0] ** 2 * z[..., 1] ** 2, K), K[0, 0] * K[1, 1] + 2 * K[0, 1] ** 2, 1e-12)
    signs = [np.array([1, a, b, c]) for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    ref = sum(np.exp(-s @ K @ s / 2) for s in signs) / 8
    _close(expect(lambda z: np.prod(np.cos(z), axis=-1), K), ref, 1e-9, atol=1e-14)


def _blockdiag(*blocks):
    d = sum(b.shape[0] for b in blocks)
    K = np.zeros((d, d))
    i = 0
    for b in blocks:
        K[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return K


def test_relu_products_3d_4d_block_diagonal():
    relu = ACTS["relu"][0]
    prod = lambda z: np.prod(relu(z), axis=-1)  # noqa: E731
    Ka = _corr_kernel(1.2, 0.7, 0.6)
    Kb = _corr_kernel(0.5, 2.0, -0.4)
    one = math.sqrt(0.9 / (2 * math.pi))  # <relu(z)> for K = 0.9
    _close(expect(prod, _blockdiag(Ka, np.array([[0.9]])), kinks=(0.0,)), _arccos1(Ka) * one, 1e-12)
    _close(expect(prod, _blockdiag(Ka, Kb), kinks=(0.0,)), _arccos1(Ka) * _arccos1(Kb), 1e-10)
    # hard-tanh (nested rule, kinks at +-1); <ht(z3)> = 0, so use (1 + ht(z3))^2
    ht = ACTS["hard_tanh"][0]
    f3 = lambda z: ht(z[..., 0]) * ht(z[..., 1]) * (1 + ht(z[..., 2])) ** 2  # noqa: E731
    ref = expect(_pair_np(ht), Ka, kinks=(-1.0, 1.0)) * expect(
        lambda z: (1 + ht(z[..., 0])) ** 2, [[0.9]], kinks=(-1.0, 1.0)
    )
    _close(expect(f3, _blockdiag(Ka, np.array([[0.9]])), kinks=(-1.0, 1.0)), ref, 1e-10)


# ---------------------------------------------------------------------------
# errors, batching, error estimates, benchmark
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kinks", [(), (0.0,), (-1.0, 1.0)])
@pytest.mark.parametrize("d", [1, 2])
def test_divergent_integrand_raises(kinks, d):
    K = np.eye(d)
    with pytest.raises(ValueError, match="grows too fast"):
        expect(lambda z: np.exp(z[..., 0] ** 2), K, kinks=kinks)


def test_overflow_and_nan_raise():
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="not finite|grows too fast"):
        expect(lambda z: np.exp(np.exp(z[..., 0])), [[4.0]])
    with np.errstate(invalid="ignore"):
        with pytest.raises(ValueError, match="NaN|not finite"):
            expect(lambda z: np.sqrt(z[..., 0]), [[1.0]])
    with pytest.raises(ValueError, match="shape"):
        expect(lambda z: z[..., None], np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        expect(lambda z: z.sum(), np.eye(2))
    with pytest.raises(ValueError, match="d = 1..4"):
        expect(lambda z: z[..., 0], np.eye(5))
    with pytest.raises(ValueError, match="kinks"):
        expect(lambda z: z[..., 0], [[1.0]], kinks=(np.nan,))


@pytest.mark.parametrize("kinks", [(), (0.0,), (-1.0, 1.0)])
def test_batching_matches_loop(kinks):
    rng = np.random.default_rng(3)
    v = rng.uniform(0.1, 3.0, size=(3, 4, 2))
    rho = rng.uniform(-0.9, 0.9, size=(3, 4))
    K = np.empty((3, 4, 2, 2))
    K[..., 0, 0], K[..., 1, 1] = v[..., 0], v[..., 1]
    K[..., 0, 1] = K[..., 1, 0] = rho * np.sqrt(v[..., 0] * v[..., 1])

    def f(z):  # three integrands at once
        a, b = np.tanh(z[..., 0]), np.clip(z[..., 1], -1, 1)
        return np.stack([a * b, a * a, np.maximum(z[..., 0], 0) * b], axis=-1)

    out = expect(f, K, kinks=kinks)
    assert out.shape == (3, 4, 3)
    for i in range(3):
        for j in range(4):
            single = expect(f, K[i, j], kinks=kinks)
            assert single.shape == (3,)
            np.testing.assert_allclose(out[i, j], single, rtol=1e-13, atol=1e-15)
    assert np.ndim(expect(lambda z: z[..., 0] ** 2, [[2.0]])) == 0


def test_return_error_and_n_override():
    K = np.array([[5.0, 2.0], [2.0, 3.0]])
    f = _pair_np(np.tanh)
    ref = float(expect(f, K, n=301))
    val, err = expect(f, K, return_error=True)
    assert val.shape == err.shape == () and err >= 0
    assert abs(val - ref) <= max(err, 1e-14)
    coarse, cerr = expect(f, K, n=31, return_error=True)
    assert abs(coarse - ref) > 1e-8 and cerr > abs(coarse - ref) / 10
    v, e = expect(_pair_np(ACTS["relu"][0]), K, kinks=(0.0,), return_error=True)
    assert e < 1e-13 and abs(v - _arccos1(K)) < 1e-13


def test_bench_expect_runs():
    rates = G.bench_expect(n_kernels=200)
    assert set(rates) == {"tanh_2d", "relu_2d"} and all(r > 0 for r in rates.values())


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-160, 1.0, 1e160, 1e200, 1e300])
def test_factor_and_second_moments_at_extreme_scales(scale):
    """Variances above ~1e154 once overflowed K_ii K_jj in the equilibration: the factor came out 0 and
    <z_a z_b>_K was 0 for K = 1e200 (a silent wrong answer). The factor is now computed at the scale of the largest
    variance (exact, a power of two): L L^T = K to rounding and <z_a z_b>/K_ab = 1 at any representable scale."""
    K = scale * np.array([[4.0, 1.0], [1.0, 9.0]])
    L = G.psd_sqrt_lower(K)
    assert np.allclose(L @ L.T / scale, K / scale, rtol=1e-14, atol=0)
    for a, b in ((0, 0), (0, 1), (1, 1)):
        v = G.expect(lambda z: (z[..., a] / np.sqrt(scale)) * (z[..., b] / np.sqrt(scale)), K)
        assert v == pytest.approx(K[a, b] / scale, rel=1e-12)
    Lt = G.psd_sqrt_lower(np.full((2, 2), scale))  # identical inputs stay bitwise twins
    assert np.array_equal(Lt[0], Lt[1])


# ---------------------------------------------------------------------------
# moments_1d / moments_1d_mp
# ---------------------------------------------------------------------------

_TERMS = ((2, 0, 0), (1, 1, 1), (0, 2, 0), (0, 2, 2), (1, 1, 3), (2, 0, 4), (4, 0, 0), (3, 1, 2))


@pytest.mark.parametrize("name, K", [("tanh", 0.3), ("tanh", 4.0), ("relu", 1.7), ("leaky_relu(-0.5)", 0.2),
                                     ("gelu", 2.5), ("erf", 0.9)])
def test_moments_1d_against_mpmath(name, K):
    """The float64 table against the mpmath one (adaptive quadrature, different rule and arithmetic).

    rtol 1e-10, not expect's documented 1e-12: the z-weighted smooth terms exceed it at the default node
    count (measured 6.6e-11 for <tanh'^2 z^2> at K = 0.3; kinked activations agree to ~1e-15)."""
    import pdlt

    act = pdlt.activation(name)
    got = G.moments_1d(act, np.array([K, K]), _TERMS)
    assert got.shape == (2, len(_TERMS))
    ref = np.array([float(v) for v in G.moments_1d_mp(act, K, _TERMS, dps=25)])
    tol = 1e-14 if act.kinks else 1e-10
    np.testing.assert_allclose(got[0], ref, rtol=tol, atol=1e-15)
    np.testing.assert_array_equal(got[0], got[1])


def test_moments_1d_linear_is_exact_wick():
    """sigma = z: <z^(a+j)> = (a+j-1)!! K^((a+j)/2) (sigma' = 1), exact closed form."""
    import pdlt

    K = np.array([[0.5], [3.0]])
    got = G.moments_1d(pdlt.activation("linear"), K, _TERMS)
    assert got.shape == (2, 1, len(_TERMS))
    want = [[math.prod(range(a + j - 1, 0, -2)) * k ** ((a + j) / 2) if (a + j) % 2 == 0 else 0.0
             for a, b, j in _TERMS] for k in K[:, 0]]
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-14, atol=1e-13)  # odd moments: rounding of ~1e2 terms


@pytest.mark.parametrize("terms", [(), [(2, 0)], [(-1, 0, 0)], [(1.5, 0, 0)], "abc"])
def test_moments_1d_rejects_bad_terms(terms):
    import pdlt
    from pdlt.errors import ParameterError

    with pytest.raises(ParameterError, match="moment terms"):
        G.moments_1d(pdlt.activation("tanh"), 1.0, terms)


def test_expect_products_against_isserlis_and_expect():
    """expect_products (axis by axis): moments of z by Isserlis' theorem to rounding, for 3 and 4 correlated inputs
    (one of them a copy of another: a singular kernel); tanh products against expect's own rule; bad input refused."""
    from pdlt.errors import ParameterError
    from pdlt.gaussian import expect_products

    A = np.array([[1.0, 0.3, -0.2, 0.5], [0.0, 0.8, 0.4, 0.1], [0.0, 0.0, 0.6, -0.3], [0.0, 0.0, 0.0, 0.7]])
    K = A.T @ A
    table = lambda z: np.stack([np.ones_like(z), z, z * z, z**3], axis=-1)     # noqa: E731
    sel = np.array([[2, 1, 1, 0], [1, 1, 1, 1], [2, 2, 0, 0], [3, 1, 0, 0], [0, 2, 0, 2]])
    got = expect_products(table, K[None], sel, resolution=np.inf, radius=9.0)[0]
    want = [K[0, 0] * K[1, 2] + 2 * K[0, 1] * K[0, 2],
            K[0, 1] * K[2, 3] + K[0, 2] * K[1, 3] + K[0, 3] * K[1, 2],
            K[0, 0] * K[1, 1] + 2 * K[0, 1] ** 2, 3 * K[0, 0] * K[0, 1], K[1, 1] * K[3, 3] + 2 * K[1, 3] ** 2]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    Ks = K[np.ix_([0, 1, 1], [0, 1, 1])]                                          # input 1 twice
    got = expect_products(table, Ks[None], np.array([[0, 2, 0], [0, 1, 1]]), resolution=np.inf, radius=9.0)[0]
    np.testing.assert_allclose(got, [K[1, 1], K[1, 1]], rtol=1e-13)
    tanh = lambda z: np.stack([np.tanh(z), np.tanh(z) ** 2], axis=-1)             # noqa: E731
    sel = np.array([[0, 0, 1], [1, 1, 1], [0, 1, 0]])
    K3 = K[:3, :3]
    ref = expect(lambda z: np.stack([np.prod(tanh(z)[..., np.arange(3), s], axis=-1) for s in sel], axis=-1), K3, n=161)
    # (a fine reference; the product rule at spacing 0.25 and radius 9, ~1e-12 measured, 1e-10 allowed)
    np.testing.assert_allclose(expect_products(tanh, K3[None], sel, resolution=0.25, radius=9.0)[0], ref, rtol=1e-10)
    for bad in (dict(sel=np.array([[0, 5, 0]])), dict(sel=np.array([[0, -1, 0]])), dict(sel=sel, resolution=0.0),
                dict(sel=sel, radius=np.inf), dict(sel=sel[:, :2])):
        with pytest.raises(ParameterError):
            expect_products(tanh, K3[None], bad.pop("sel"), **bad)


def test_expect_products_with_kinks():
    """expect_products(kinks=(0,)): the arc-cosine kernel of ReLU (closed form), moments of z times steps by symmetry
    (E[z_1 z_2 1{z_3 > 0}] = K_12 / 2 for z_3 independent of the pair), and 3-D / 4-D leaky-ReLU products against
    expect's nested engine evaluated on the stacked products (the same nodes, a different contraction)."""
    from pdlt.gaussian import expect_products

    relu = lambda z: np.stack([np.maximum(z, 0.0), (z > 0) * 1.0, z, 0.1 * z + 0.9 * np.maximum(z, 0.0)],  # noqa: E731
                              axis=-1)
    K2 = np.array([[1.3, -0.7], [-0.7, 0.9]])
    th = np.arccos(K2[0, 1] / np.sqrt(K2[0, 0] * K2[1, 1]))
    arc = np.sqrt(K2[0, 0] * K2[1, 1]) / (2 * np.pi) * (np.sin(th) + (np.pi - th) * np.cos(th))
    assert expect_products(relu, K2[None], np.array([[0, 0]]), kinks=(0.0,))[0, 0] == pytest.approx(arc, rel=1e-13)
    K3 = np.array([[1.0, 0.4, 0.0], [0.4, 0.7, 0.0], [0.0, 0.0, 2.0]])
    got = expect_products(relu, K3[None], np.array([[2, 2, 1]]), kinks=(0.0,))[0, 0]
    assert got == pytest.approx(0.2, rel=1e-13)
    A = np.array([[1.0, 0.3, -0.2, 0.5], [0.0, 0.8, 0.4, 0.1], [0.0, 0.0, 0.6, -0.3], [0.0, 0.0, 0.0, 0.7]])
    K = A.T @ A
    for q in (3, 4):
        sel = np.array(list(itertools.product(range(4), repeat=q)))[::7]
        Kq = K[:q, :q]
        got = expect_products(relu, Kq[None], sel, kinks=(0.0,))[0]
        ref = expect(lambda z: np.stack([np.prod(relu(z)[..., np.arange(q), s], axis=-1) for s in sel], axis=-1), Kq,
                     kinks=(0.0,))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    from pdlt.errors import ParameterError

    one = np.zeros((1, 1), dtype=int)
    for bad in (dict(kinks=0.0), dict(kinks=("a",)), dict(kinks=(0.0,), n=0)):
        with pytest.raises(ParameterError):
            expect_products(relu, K2[:1, :1][None], one, **bad)
    with pytest.raises(ParameterError, match="at most 4"):
        expect_products(relu, np.eye(5)[None], np.zeros((1, 5), dtype=int), kinks=(0.0,))
    with pytest.raises(ParameterError, match="complex"):
        expect_products(lambda z: np.stack([z + 0j], axis=-1), K2[:1, :1][None], one, kinks=(0.0,))
    with pytest.raises(ParameterError, match="nodes"):
        expect_products(relu, K[None], np.zeros((1, 4), dtype=int), kinks=(-1.0, 0.0, 1.0), n=30)
    assert expect_products(relu, np.zeros((0, 2, 2)), np.zeros((3, 2), dtype=int), kinks=(0.0,)).shape == (0, 3)


def test_bad_resolution_is_refused_for_an_empty_batch():
    """The argument checks run before the empty-batch shortcut: a bad resolution is refused there too."""
    with pytest.raises(pdlt.errors.ParameterError, match="resolution"):
        expect(lambda z: z[..., 0], np.zeros((0, 2, 2)), resolution=-1.0)


def test_resolution_with_kinks_is_refused():
    """resolution is the trapezoid's spacing; a kinked f takes the split rules, which dropped it silently."""
    with pytest.raises(pdlt.errors.ParameterError, match="kinked f") as err:
        expect(lambda z: np.abs(z[..., 0]), [[1.0]], kinks=(0.0,), resolution=0.1)
    assert err.value.setting == "resolution"


def test_hermite_functions_against_numpy():
    """The orthonormal Hermite functions by their recurrence equal He_k(x)/sqrt(k!) from numpy's Hermite_e series,
    and are orthonormal under the unit Gaussian (Gauss-Hermite rule, exact for these degrees)."""
    from math import factorial, sqrt

    from numpy.polynomial.hermite_e import hermeval

    x = np.linspace(-6.0, 6.0, 25)
    for k, e in enumerate(G.hermite_functions(x, 14)):
        c = np.zeros(k + 1)
        c[k] = 1.0
        np.testing.assert_allclose(e, hermeval(x, c) / sqrt(factorial(k)), rtol=1e-12, atol=1e-12)
    z, w = G.gauss_hermite(20)
    E = np.array(list(G.hermite_functions(z, 14)))
    np.testing.assert_allclose((E * w) @ E.T, np.eye(15), atol=1e-12)


def test_expect_mp_relative_accuracy_and_bad_integrands():
    """expect_mp, the reference the quadrature is tested against, works in units of the integrand's size (mpmath's
    tolerance is absolute: x^2 at K = 1e-100 was 1.4e-4 off), splits where a wide kernel squeezes sigma's structure
    (tanh^2 at K = 1e10 came back exactly 1), and refuses NaN, infinite, complex and divergent integrands."""
    import mpmath as mp

    from pdlt.errors import IntegrationError

    assert float(expect_mp(lambda x: x**2, [[1e-100]])) == pytest.approx(1e-100, rel=1e-25)
    assert float(expect_mp(lambda a, b: a * b, [[1e-100, 3e-101], [3e-101, 2e-100]])) == pytest.approx(3e-101,
                                                                                                      rel=1e-25)
    K = mp.mpf(10) ** 10
    with mp.workdps(30):         # the same average on the z line, split where tanh bends: an independent rule
        ref = mp.quad(lambda z: mp.tanh(z) ** 2 * mp.exp(-z * z / (2 * K)), [-mp.inf, -1e3, -10, -1, 0, 1, 10, 1e3,
                                                                            mp.inf]) / mp.sqrt(2 * mp.pi * K)
    assert float(expect_mp(lambda x: mp.tanh(x) ** 2, [[1e10]])) == pytest.approx(float(ref), rel=1e-14)
    assert abs(float(ref) - 1) > 1e-6
    for bad in (lambda x: mp.nan, lambda x: mp.inf, lambda x: mp.mpc(x, 1), lambda x: mp.exp(x**2)):
        with pytest.raises(IntegrationError):
            expect_mp(bad, [[1.0]])


@pytest.mark.slow              # (10 s at K = 100, a minute at 1e4: mpmath's exponentials)
@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_expect_mp_bounded_integrand_rising_toward_a_far_tail(scale):
    """A bounded f far out in an outer tail rises toward the inner line's edge (ELU's sigma' = min(e^z, 1): at
    w_1 = -13, K = 100, e^z2 lies at z2 = -78 +- 10 in the inner bulk and reaches 1 only near |w_2| = 12); expect_mp
    called that "outgrowing the Gaussian" and refused. Against the same average by conditioning on z1, whose inner
    average is a closed form, E[s'(z2) | z1] = Phi(m/t) + e^(m + t^2/2) Phi(-(m + t^2)/t), and one mp.quad."""
    import mpmath as mp

    def d1(z):
        return mp.mpf(1) if z > 0 else mp.exp(z)

    K = scale * np.array([[1.0, 0.6], [0.6, 0.8]])
    with mp.workdps(30):
        k11, k12, k22 = (mp.mpf(v) for v in (K[0, 0], K[0, 1], K[1, 1]))
        beta, t = k12 / k11, mp.sqrt(k22 - k12 * k12 / k11)

        def outer(z1):
            m = beta * z1
            inner = mp.ncdf(m / t) + mp.exp(m + t * t / 2) * mp.ncdf(-(m + t * t) / t)
            return d1(z1) * inner * mp.npdf(z1, 0, mp.sqrt(k11))

        s = mp.sqrt(k11)
        ref = mp.quad(outer, [-mp.inf, -12 * s, -s, -10, -1, 0, 1, 10, s, 12 * s, mp.inf])
    assert float(expect_mp(lambda a, b: d1(a) * d1(b), K, kinks=(0.0,), dps=20)) == pytest.approx(float(ref), rel=1e-14)


# ---------------------------------------------------------------------------
# the 1-D panel rule for wide Gaussians
# ---------------------------------------------------------------------------


def test_panel_rule_wide_gaussians_against_closed_forms():
    """Variances far beyond an activation's structure, against closed forms (independent of any rule): ELU (kink at
    0, exponential for z < 0), E[e^(a z); z < 0] = erfcx(a sqrt(K/2))/2, so <s'^2> = 1/2 + erfcx(sqrt(2K))/2 and
    <s^2> = K/2 + erfcx(sqrt(2K))/2 - erfcx(sqrt(K/2)) + 1/2; tanh's <sech^4> = (4/3)/sqrt(2 pi K) and softplus's
    <sigmoid^2> = 1/2 - <sigmoid'> = 1/2 - 1/sqrt(2 pi K), up to relative O(1/K). Before the panel rule ELU's
    <s'^2> was 5e-4 off at K = 1e4 (the half-range rule saw no structure at |z| ~ 1), softplus's 1e-5 at K = 1e10,
    silently, and tanh's 6.7x off with a warning."""
    import sympy as sp
    from scipy.special import erfcx

    z = pdlt.activations.Z
    elu = pdlt.activation(sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)))
    for K in (1e2, 1e4, 1e7, 1e12):
        s2, d2 = G.moments_1d(elu, K, ((2, 0, 0), (0, 2, 0)))
        a, b = erfcx(math.sqrt(2.0 * K)) / 2.0, erfcx(math.sqrt(K / 2.0))
        assert abs(d2 - (0.5 + a)) <= 1e-14 * d2
        assert abs(s2 - (K / 2.0 + a - b + 0.5)) <= 1e-13 * s2
    for K in (1e10, 1e14):
        root = math.sqrt(2.0 * math.pi * K)
        assert abs(pdlt.chi_perp("tanh", K) - (4.0 / 3.0) / root) <= 1e-9 * (4.0 / 3.0) / root
        assert abs(pdlt.chi_perp("softplus", K) - (0.5 - 1.0 / root)) <= 1e-15


def test_panel_rule_resolves_slow_structure_beyond_its_inner_panels():
    """Structure between |z| = 64 and the standard deviation, where the half-range rule alone put no node (and its
    coarse twin neither, so the check passed): exp(-z^2/(2 s^2)) averages to s/sqrt(s^2 + K), and CELU's slow side
    E[e^(a z); z < 0] = erfcx(a sqrt(K/2))/2. At K = 1e10 they came out 52 % and 0.2 % low, silently."""
    from scipy.special import erfcx

    for s in (30.0, 100.0, 1000.0):
        for K in (1e6, 1e10, 1e300):
            v = expect(lambda x: np.exp(-x[..., 0] ** 2 / (2 * s * s)), [[K]])
            assert abs(v - s / math.sqrt(s * s + K)) <= 1e-13 * v
    for K in (1e8, 1e10, 1e300):
        v = expect(lambda x: np.where(x[..., 0] < 0, np.exp(0.1 * np.minimum(x[..., 0], 0.0)), 0.0), [[K]],
                   kinks=(0.0,))
        assert abs(v - erfcx(0.1 * math.sqrt(K / 2)) / 2) <= 1e-13 * v


def test_panel_rule_falls_back_for_periodic_integrands():
    """sin's structure fills the whole Gaussian, which the panels beyond |z| = 64 do not resolve: the rule sees that
    at 2/3 of its nodes and the trapezoid, exact for a period above its spacing, takes over: <sin^2>_K =
    (1 - e^(-2K))/2, <cos^2> = (1 + e^(-2K))/2."""
    sin2, cos2 = G.expect(lambda x: np.stack([np.sin(x[..., 0]) ** 2, np.cos(x[..., 0]) ** 2], -1), [[1e10]])
    assert abs(sin2 - 0.5) <= 1e-12 and abs(cos2 - 0.5) <= 1e-12


def test_huge_kernels_rescale_only_ramps():
    """Beyond 2^200 pdlt computes in units of 2^e, where sigma's structure at |z| ~ 1 is far below any spacing. A
    ramp far out (GELU) keeps its averages, which are those of its ramp (ReLU: V^(2)/K^(1)^2 = C_W^2 (3/2 - 1/4)), and
    so does ELU, a ramp with a constant left side (K^(3) = K^(1)/4); a bounded tanh is refused naming x. Below 2^200
    tanh stays unscaled: at x = 1e10 its kernel is the closed form 1 - <sech^2> = 1 - 2/sqrt(2 pi K) (it was 4 % off,
    in units of 2^64)."""
    th = pdlt.finite_width(pdlt.MLP("gelu", (1, 64, 64)), [[1e40]])
    assert abs(th.V[1][0, 0, 0, 0] / th.K[0][0, 0] ** 2 - 1.25) <= 1e-12
    import sympy as sp

    z = pdlt.activations.Z
    elu = pdlt.activation(sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)))
    K = pdlt.kernel_flow(pdlt.MLP(elu, (1, 4, 4, 4)), [[1e60]]).K
    assert abs(K[2][0, 0] / K[0][0, 0] - 0.25) <= 1e-12
    with pytest.raises(pdlt.errors.PdltError) as err:
        pdlt.kernel_flow(pdlt.MLP("tanh", (1, 4, 4)), [[1e40]])
    assert "structure at |z| ~ 1" in str(err.value) and "scale the inputs x down" in str(err.value)
    K = pdlt.kernel_flow(pdlt.MLP("tanh", (1, 4, 4)), [[1e10]]).K[1][0, 0]
    assert abs(K - (1.0 - 2.0 / math.sqrt(2.0 * math.pi * 1e20))) <= 1e-14


def test_kinked_rules_at_wide_kernels_report_unresolved_structure():
    """The polar rule's nodes sit on the Gaussian's scale: an ELU's exponential side at |z| ~ 1 is lost at K ~ 1e4
    (<s s> 1.6e-6 off, against mpmath), which a rule of 3/2 the nodes shows: a QuadratureWarning. Piecewise
    polynomials stay exact at any width (ReLU: the arc-cosine closed form) and do not warn."""
    import sympy as sp

    z = pdlt.activations.Z
    elu = pdlt.activation(sp.Piecewise((z, z > 0), (sp.exp(z) - 1, True)))
    K = 1e4 * np.array([[1.0, 0.5], [0.5, 1.0]])
    with pytest.warns(pdlt.errors.QuadratureWarning, match="kinked 2-D rule does not resolve"):
        expect(lambda x: elu(x[..., 0]) * elu(x[..., 1]), K, kinks=elu.kinks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relu = expect(lambda x: np.prod(np.maximum(x, 0.0), axis=-1), K, kinks=(0.0,))
    theta = math.acos(0.5)
    assert abs(relu - 1e4 * (math.sin(theta) + (math.pi - theta) * 0.5) / (2 * math.pi)) <= 1e-12 * relu


def test_singular_integrands_at_a_kink_are_reported():
    """No node reaches the kink, so 1/|z| (divergent) came back as 5.19 and 1/sqrt|z| 3 % off, silently; the 1-D
    kinked rule now checks itself against 3/2 of its nodes. |z| and ReLU^3 stay exact and quiet."""
    for f in (lambda x: 1.0 / np.abs(x[..., 0]), lambda x: 1.0 / np.sqrt(np.abs(x[..., 0]))):
        with pytest.warns(pdlt.errors.QuadratureWarning, match="singular, or not smooth"):
            expect(f, [[1.0]], kinks=(0.0,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert abs(expect(lambda x: np.abs(x[..., 0]), [[2.0]], kinks=(0.0,)) - 2.0 / math.sqrt(math.pi)) <= 1e-15
        assert abs(expect(lambda x: np.maximum(x[..., 0], 0.0) ** 3, [[1.0]], kinks=(0.0,))
                   - math.sqrt(2.0 / math.pi)) <= 1e-15


def test_kernels_near_the_largest_float_keep_their_value():
    """Symmetrizing as (K + K^T)/2 overflowed at 1.7e308: the error then named K = [[inf]]. tanh^2 there is 1."""
    assert check_kernel([[1.7e308]])[0, 0] == 1.7e308
    with pytest.raises(pdlt.errors.IntegrationError, match=r"K = \[\[1.7e\+308\]\]"), np.errstate(over="ignore"):
        expect(lambda z: z[..., 0] ** 2, [[1.7e308]])
    assert abs(expect(lambda z: np.tanh(z[..., 0]) ** 2, [[1.7e308]]) - 1.0) <= 1e-15


@pytest.mark.slow
def test_expect_mp_near_perfect_correlation():
    """The oracle's outer line steps across the kink of z2 within L22/|L21| of the crossing: with graded splits there
    the orthant mass P(z1 > 0, z2 < 0) = acos(rho)/(2 pi) holds at rho = 1 - 1e-10 (it came out 2e-32, not 2.3e-6)."""
    step = lambda a: mpmath.mpf(1) if a > 0 else mpmath.mpf(0)  # noqa: E731
    r = 1.0 - 1e-10
    v = expect_mp(lambda a, b: step(a) * (1 - step(b)), [[1.0, r], [r, 1.0]], kinks=(0.0,), dps=15)
    with mpmath.workdps(30):
        ref = mpmath.acos(mpmath.mpf(r)) / (2 * mpmath.pi)
    assert abs(v - ref) <= 1e-13 * ref

"""pdlt.orthant: orthant probabilities and truncated Gaussian moments against independent oracles.

* one-factor correlations ``rho_ij = lambda_i lambda_j`` make the coordinates independent given one Gaussian g, so
  every orthant average is a one-dimensional integral over g of closed-form conditional averages (mpmath);
* summed over the 2^k orthants the truncated moments are the full Gaussian moments (Isserlis);
* closed forms: equicorrelation 1/2 (P = 1/(k + 1)), independent blocks, the two-input closed forms of
  :func:`pdlt.closed_forms.power_derivative_averages`, Price's theorem ``<prod relu He_(1..1)> = P(z > 0)``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdlt import orthant
from pdlt.errors import ParameterError
from pdlt.verification.checks import one_factor_orthant_probability

EPS = np.finfo(np.float64).eps


def _one_factor(lam, sd=None):
    lam = np.asarray(lam, dtype=np.float64)
    sd = np.ones(len(lam)) if sd is None else np.asarray(sd, dtype=np.float64)
    R = np.outer(lam, lam)
    np.fill_diagonal(R, 1.0)
    return R * np.outer(sd, sd)


def _mp_one_factor_averages(rows, lam, sd, nodes=30):
    """``E[prod_u f_u(z_u)]`` for each row of factors ``f_u`` (``("F", k, A, B, c)``: ``c y^k (A Theta(y) + B
    Theta(-y))``; ``("D", m, c)``: ``c delta^(m)(y)``), ``z_u = sd_u (lambda_u g + sqrt(1 - lambda_u^2) e_u)``: given
    g each factor's average is a closed form (truncated normal moments; a derivative of the normal density), and the
    g-integral is composite Gauss-Legendre at 30 digits (the integrand is analytic in g; 30 and 40 nodes per panel
    agree to the last printed digit)."""
    import mpmath as mp

    with mp.workdps(30):
        sd = [mp.mpf(float(v)) for v in sd]
        lam = [mp.mpf(float(v)) for v in lam]
        s = [a * mp.sqrt(1 - v * v) for a, v in zip(sd, lam)]

        def tail(j, a, upper):                     # E[w^j 1(w > a)] (upper) or E[w^j 1(w < a)], w ~ N(0, 1)
            pa = mp.npdf(a)
            M = [mp.ncdf(-a) if upper else mp.ncdf(a), pa if upper else -pa]
            for i in range(2, j + 1):
                M.append((1 if upper else -1) * a ** (i - 1) * pa + (i - 1) * M[i - 2])
            return M[j]

        def h(f, mu, sig):                         # E[f(mu + sig w)]
            if f[0] == "F":
                _, k, A, B, c = f
                a = -mu / sig
                return c * sum(mp.binomial(k, j) * mu ** (k - j) * sig**j * (A * tail(j, a, True)
                                                                            + B * tail(j, a, False))
                               for j in range(k + 1))
            _, m, c = f                            # (-1)^m N^(m)(0; mu, sig^2) = sig^-m He_m(-mu/sig) N(0; mu, sig^2)
            x = -mu / sig
            return c * sig ** (-m - 1) * mp.hermite(m, x / mp.sqrt(2)) * mp.mpf(2) ** (-mp.mpf(m) / 2) * mp.npdf(x)

        X, W = mp.gauss_quadrature(nodes, "legendre")
        w0 = 5 * min(a / b for a, b in zip(s, sd))
        edges = [-12, -6, -3, -1, -w0, 0, w0, 1, 3, 6, 12]       # phi(12) ~ 1e-32: the tails are below rounding
        uniq = [sorted({row[u] for row in rows}) for u in range(len(sd))]
        tot = [mp.mpf(0)] * len(rows)
        for a, b in zip(edges[:-1], edges[1:]):
            a, b = mp.mpf(a), mp.mpf(b)
            for x, w in zip(X, W):
                g = (a + b) / 2 + (b - a) / 2 * x
                wg = w * (b - a) / 2 * mp.npdf(g)
                hv = [{f: h(f, sd[u] * lam[u] * g, s[u]) for f in uniq[u]} for u in range(len(sd))]
                for i, row in enumerate(rows):
                    v = wg
                    for u, f in enumerate(row):
                        v *= hv[u][f]
                    tot[i] += v
        return np.array([float(t) for t in tot])


# --- the orthant probability -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [[0.3, 0.5, 0.7, 0.2], [-0.5, 0.6, 0.8, -0.9], [0.9, 0.95, 0.99, 0.999],
                                 [0.999, 0.9999, 0.99, -0.995], [0.9999, 0.99999, 0.9995, 0.9998], [0.6, -0.7, 0.8]])
def test_probability_against_one_factor_integral(lam):
    """Four (and three) coordinates down to correlation eigenvalue 1e-4: within 1e-15 of the mpmath integral (the
    graded rule's 16 nodes per panel used before missed by 1e-12 at eigenvalue 1e-3)."""
    got = orthant.probability(_one_factor(lam))
    assert abs(got - one_factor_orthant_probability(lam)) < 1e-15


def test_probability_closed_cases():
    """Equicorrelation 1/2: 1/(k + 1); independent blocks multiply; a variance scale changes nothing; batches."""
    for k in range(1, 5):
        assert orthant.probability(np.full((k, k), 0.5) + 0.5 * np.eye(k)) == pytest.approx(1 / (k + 1), abs=1e-15)
    R = np.eye(4)
    R[0, 1] = R[1, 0] = -0.7
    R[2, 3] = R[3, 2] = 0.4
    p2 = lambda r: 0.25 + math.asin(r) / (2 * math.pi)          # noqa: E731
    D = np.diag([0.3, 2.0, 1.0, 5.0])
    got = orthant.probability(np.stack([R, D @ R @ D]))
    np.testing.assert_allclose(got, p2(-0.7) * p2(0.4), rtol=0, atol=1e-15)


# --- truncated moments -----------------------------------------------------------------------------------------------


def _isserlis(S, alpha):
    """``E[z^alpha]`` for ``z ~ N(0, S)``: the sum over pairings of the multiset of coordinates."""
    idx = [u for u, a in enumerate(alpha) for _ in range(a)]
    if len(idx) % 2:
        return 0.0

    def pairings(items):
        if not items:
            yield 1.0
            return
        a, rest = items[0], items[1:]
        for i, b in enumerate(rest):
            for p in pairings(rest[:i] + rest[i + 1:]):
                yield S[a, b] * p

    return sum(pairings(idx))


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 4), st.integers(0, 2**31 - 1))
def test_moments_over_all_orthants_sum_to_isserlis(k, seed):
    """``sum_e e^alpha E_{D S D}[w^alpha 1{w > 0}] = E[z^alpha]`` for every alpha of degree <= 6 (random kernels)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, k))
    S = A @ A.T + 0.2 * np.eye(k)
    alphas = [a for a in itertools.product(range(4), repeat=k) if sum(a) <= 6]
    total = np.zeros(len(alphas))
    for e in itertools.product((1, -1), repeat=k):
        sign = np.prod(np.array(e) ** np.array(alphas), axis=1)
        total += sign * orthant.moments((S * np.outer(e, e))[None], alphas)[0]
    want = np.array([_isserlis(S, a) for a in alphas])
    scale = np.array([np.prod(np.diag(S) ** (np.array(a) / 2)) * math.prod(math.factorial(v) for v in a)
                      for a in alphas])
    np.testing.assert_allclose(total, want, rtol=0, atol=1e-12 * scale.max())


@settings(max_examples=30, deadline=None)
@given(st.floats(-0.999, 0.999), st.floats(0.1, 10.0), st.floats(0.1, 10.0))
def test_bivariate_moments_in_closed_form(rho, s0, s1):
    """Two coordinates, where the boundary terms of the recursion are closed forms (the orthant sum of
    test_moments_over_all_orthants_sum_to_isserlis cancels them): ``E[z_0 1] = s0 (1 + rho) / (2 sqrt(2 pi))``,
    ``E[z_0 z_1 1] = s0 s1 [rho P + sqrt(1 - rho^2) / (2 pi)]`` and ``E[z_0^2 1] = s0^2 [P + rho sqrt(1 - rho^2) /
    (2 pi)]`` with ``P = 1/4 + asin(rho) / (2 pi)``."""
    S = np.array([[[s0 * s0, rho * s0 * s1], [rho * s0 * s1, s1 * s1]]])
    P = 0.25 + math.asin(rho) / (2 * math.pi)
    c = math.sqrt(1 - rho * rho)
    want = [s0 * (1 + rho) / (2 * math.sqrt(2 * math.pi)), s0 * s1 * (rho * P + c / (2 * math.pi)),
            s0 * s0 * (P + rho * c / (2 * math.pi))]
    got = orthant.moments(S, [[1, 0], [1, 1], [2, 0]])[0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15 * s0 * s1)


def test_scale_and_rank():
    """The kernel's scale cancels exactly (1e-80 to 1e80: everything runs on the correlation matrix); a rank-
    deficient kernel (three coordinates in a plane) gives finite low-degree moments that join the nonsingular ones
    continuously (terms that condition on all three carry a vanishing conditional variance); a collinear pair (two
    coordinates equal: conditioning on one determines the other, and the orthant probability of the rest depends on
    how the variance vanished) is refused by name."""
    lam = [0.9, 0.97, 0.99, -0.95]
    S = _one_factor(lam, [1.3, 0.8, 1.1, 0.9])[None]
    key = [((1, 1, 1, 1), (1, 1, 1, 1)), ((2, 1, 1, 1), (0, 0, 2, 0))]
    ref, mag = orthant.hermite_moments(S, key), orthant.hermite_moments(S, key, magnitude=True)
    for scale in (1e-80, 1e80):
        got = orthant.hermite_moments(S * scale, key) * np.array([1.0, scale ** -1.5])     # (|p| - |n|)/2 powers
        assert np.all(np.abs(got - ref) <= 8 * EPS * mag)
    x = np.array([[1.0, 0.2], [0.3, 1.0], [1.3, 1.2]])
    alphas = [[1, 0, 0], [1, 1, 0], [0, 1, 1], [2, 0, 0], [2, 2, 2]]
    flat = orthant.moments((x @ x.T)[None], alphas)
    lifted = orthant.moments((x @ x.T + 1e-9 * np.eye(3))[None], alphas)
    np.testing.assert_allclose(flat, lifted, rtol=1e-6)
    collinear = np.full((4, 4), 0.3) + 0.7 * np.eye(4)
    collinear[0, 1] = collinear[1, 0] = 1.0                    # z_0 = z_1
    for call in (lambda: orthant.probability(collinear), lambda: orthant.moments(collinear[None], [[1, 0, 0, 0]]),
                 lambda: orthant.moments(np.ones((1, 3, 3)), [[1, 0, 0]])):
        with pytest.raises(ParameterError, match="singular") as e:
            call()
        assert e.value.setting == "S"


def test_nearly_singular_kernels_are_refused():
    """Where the rounding bound passes ROUNDING_LIMIT of the largest average the public functions refuse (negative
    control: the value returned without the guard is far off, <relu^3 He_111> = 1.43 instead of P(z > 0) = 0.33 at
    eigenvalue 3e-6); return_magnitude hands the bound to a caller that judges it (pdlt.theory.nnlo_inputs)."""
    lam = np.array([0.999999, 0.999998, 0.999997])
    S = _one_factor(lam)[None]
    key = [((1, 1, 1), (1, 1, 1))]
    with pytest.raises(ParameterError, match="too close to singular") as e:
        orthant.hermite_moments(S, key)
    assert e.value.setting == "S"
    vals, mags = orthant.scale_invariant_averages(1.0, 0.0, [[1, 1, 1]], [[1, 1, 1]], S, return_magnitude=True)
    assert orthant.relative_rounding(vals, mags)[0] > orthant.ROUNDING_LIMIT
    assert abs(vals[0, 0] - one_factor_orthant_probability(lam)) > 0.1
    fine = _one_factor([0.9, 0.95, -0.8])[None]
    vals, mags = orthant.scale_invariant_averages(1.0, 0.0, [[1, 1, 1]], [[1, 1, 1]], fine, return_magnitude=True)
    assert orthant.relative_rounding(vals, mags)[0] < 1e-10


def test_price_orthant_probability():
    """``<prod_u relu(z_u) He_(1,..,1)(z; S)> = <prod_u Theta(z_u)> = P(z > 0)`` (Price), three and four inputs,
    within 8 eps times the recursion on absolute values (the Hermite weights cancel: ~1e-14 at eigenvalue 0.036)."""
    for lam in ([0.9, 0.95, -0.8], [0.9, 0.97, 0.99, -0.95]):
        S = _one_factor(lam, [1.3, 0.8, 1.1, 0.9][:len(lam)])[None]
        ones = (1,) * len(lam)
        got = orthant.hermite_moments(S, [(ones, ones)])[0, 0]
        mag = orthant.hermite_moments(S, [(ones, ones)], magnitude=True)[0, 0]
        assert abs(got - one_factor_orthant_probability(lam)) <= 8 * EPS * mag


def test_two_inputs_against_closed_forms():
    """Two inputs: the orthant route against :func:`pdlt.closed_forms.power_derivative_averages`, whose delta
    factors are integrated out without Hermite weights (an independent formula), for ReLU and leaky slopes."""
    from pdlt.closed_forms import power_derivative_averages

    rng = np.random.default_rng(1)
    P = np.array([[1, 1], [2, 1], [1, 3], [2, 2], [3, 3]])
    N = np.array([[0, 0], [1, 1], [2, 0], [2, 2], [4, 0]])
    for ap, am in ((1.0, 0.0), (1.0, 0.1), (1.5, -0.5)):
        A = rng.normal(size=(2, 2))
        S = (A @ A.T + 0.3 * np.eye(2))[None]
        want = power_derivative_averages(ap, am, P, N, S)
        got = orthant.scale_invariant_averages(ap, am, P, N, S)
        mag = orthant.scale_invariant_averages(ap, am, P, N, S, magnitude=True)
        assert np.all(np.abs(got - want) <= 8 * EPS * mag + 1e-15 * np.abs(want))


_ONE_FACTOR = {"moderate": ([0.9, 0.95, -0.8], [1.3, 0.8, 1.1]),                        # eigenvalue 0.14
               "aligned": ([0.9, 0.97, 0.99, -0.95], [1.3, 0.8, 1.1, 0.9]),             # 0.036
               "very aligned": ([0.99, 0.997, 0.999, 0.995], [1.3, 0.8, 1.1, 0.9])}     # 0.0036


def _keys(d):
    from pdlt.theory.nnlo_inputs import average_keys, _groups

    keys, _ = average_keys(d)
    ((_, pn),) = [v for (sup, _), v in _groups(keys).items() if len(sup) == d]
    return pn[:, 0, :], pn[:, 1, :]


@pytest.mark.parametrize("case, slopes", [("moderate", (1.0, 0.2)), ("aligned", (1.0, 0.0)),
                                          pytest.param("aligned", (1.0, 0.2), marks=pytest.mark.slow),
                                          pytest.param("very aligned", (1.0, 0.0), marks=pytest.mark.slow)])
def test_scale_invariant_averages_against_one_factor_integrals(case, slopes):
    """Every average ``<prod_u (sigma^p_u)^(n_u)(z_u)>`` over three or four inputs that the 1/n^2 recursions use
    (pdlt.theory.nnlo_inputs), at one-factor kernels with a sign flip, against the mpmath integral: within 8 eps
    times the orthant recursion on absolute values, the rounding bound the module documents (measured: up to 2.1
    here; a review found 3.2 at lambda = (.99, .997, .997, .99)).
    Negative control at the aligned kernel: the nested quadrature with 8 nodes per segment that pdlt used for ReLU
    before misses some average by more than 1e-5 of the largest."""
    from pdlt.closed_forms import _power_factor, power_derivative_averages

    lam, sd = _ONE_FACTOR[case]
    S = _one_factor(lam, sd)[None]
    P, N = _keys(len(lam))
    got = power_derivative_averages(*slopes, P, N, S)[0]
    mag = orthant.scale_invariant_averages(*slopes, P, N, S, magnitude=True)[0]
    rows = [tuple(_power_factor(int(p), int(n), *slopes) for p, n in zip(pr, nr)) for pr, nr in zip(P, N)]
    want = _mp_one_factor_averages(rows, lam, sd)
    assert np.all(np.abs(got - want) <= 8 * EPS * mag), np.max(np.abs(got - want) / (EPS * mag))
    if case == "aligned" and slopes[1] == 0:
        import pdlt

        Lam = np.linalg.inv(S[0])

        def f(z):
            y = z @ Lam.T
            out = []
            for p, n in zip(P, N):
                He = _hermite(y, Lam, tuple(int(v) for v in n))
                out.append(np.prod(np.maximum(z, 0) ** p, axis=-1) * He)
            return np.stack(out, axis=-1)

        old = pdlt.gaussian.expect(f, S[0], kinks=(0.0,), method="nested", n=8)
        assert np.max(np.abs(old - want)) > 1e-5 * np.abs(want).max()


def _hermite(y, Lam, n):
    """``He_n(z; S)`` at ``y = S^-1 z`` (``Lam = S^-1``): ``He_{n+e_c} = y_c He_n - sum_u n_u Lam_cu He_{n-e_u}``."""
    c = next((u for u, v in enumerate(n) if v), None)
    if c is None:
        return np.ones(y.shape[:-1])
    m = n[:c] + (n[c] - 1,) + n[c + 1:]
    out = y[..., c] * _hermite(y, Lam, m)
    for u, v in enumerate(m):
        if v:
            out = out - v * Lam[c, u] * _hermite(y, Lam, m[:u] + (v - 1,) + m[u + 1:])
    return out


def test_bad_input():
    """Shapes, dimensions, non-finite or singular kernels and bad powers: a ParameterError naming the argument."""
    S = np.eye(3)[None]
    cases = [(lambda: orthant.probability(np.eye(5)), "S"), (lambda: orthant.probability("x"), "S"),
             (lambda: orthant.moments(np.eye(3), [[1, 0, 0]]), "S"),
             (lambda: orthant.moments(np.array([[[1.0, np.nan], [np.nan, 1.0]]]), [[1, 0]]), "S"),
             (lambda: orthant.moments(S, [[1, -1, 0]]), "alphas"), (lambda: orthant.moments(S, [[1, 1]]), "alphas"),
             (lambda: orthant.hermite_moments(S, [((1, 1, 1), (1, 0))]), "keys"),
             (lambda: orthant.scale_invariant_averages(1.0, 0.0, [[1, 1, 1.5]], [[0, 0, 0]], S), "powers"),
             (lambda: orthant.scale_invariant_averages(1.0, 0.0, [[1, 1, 1]], [[0, 0, 0], [1, 0, 0]], S), "counts"),
             (lambda: orthant.scale_invariant_averages(np.nan, 0.0, [[1, 1, 1]], [[0, 0, 0]], S), "slopes"),
             (lambda: orthant.moments(S, [[2000, 0, 0]]), "alphas"),
             (lambda: orthant.probability([[1.0, 2.0], [2.0, 1.0]]), "S"),
             (lambda: orthant.probability([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]), "S"),
             (lambda: orthant.probability(np.eye(2) * (1 + 1j)), "S"),
             (lambda: orthant.scale_invariant_averages("a", 0.0, [[1, 1, 1]], [[0, 0, 0]], S), "slopes")]
    for call, setting in cases:
        with pytest.raises(ParameterError) as e:
            call()
        assert e.value.setting == setting
    assert orthant.moments(S, []).shape == (1, 0)

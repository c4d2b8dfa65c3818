"""Truncated power series (pdlt.theory.power_series) against another algorithm: the same contraction evaluated at
points of a circle in complex arithmetic, whose discrete Fourier transform returns the Taylor coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pdlt.theory.power_series import Series, compiled, einsum, outer

RHO, POINTS = 0.4, 32


def _on_circle(fn, operands):
    """The first J Taylor coefficients of ``fn`` at the operands ``[(array, is_series)]`` (a series' array has its J
    coefficients first; a plain array passes through), from its values at POINTS points of |h| = RHO (degree below
    POINTS: no aliasing)."""
    J = next(a.shape[0] for a, is_s in operands if is_s)
    h = RHO * np.exp(2j * np.pi * np.arange(POINTS) / POINTS)
    vals = np.array([fn(*(np.tensordot(hk ** np.arange(J), a, 1) if is_s else a for a, is_s in operands))
                     for hk in h])
    co = np.fft.fft(vals, axis=0)[:J] / POINTS
    return co / (RHO ** np.arange(J)).reshape((J,) + (1,) * (co.ndim - 1))      # (complex: the probe's series are)


@pytest.mark.parametrize("spec, shapes, series", [
    ("ab,bc->ac", [(3, 4), (4, 2)], [True, True]),
    ("abij,ij,cd->abcd", [(2, 2, 3, 3), (3, 3), (2, 2)], [True, False, True]),
    ("abij,cdkl,ijkl->abcd", [(3, 3, 3, 3)] * 2 + [(3, 3, 3, 3)], [True, True, True]),
    ("abijkl,ijkl,mn,mn->ab", [(2, 2, 3, 3, 3, 3), (3, 3, 3, 3), (3, 3), (3, 3)], [True, True, False, True]),
    ("ij,jk->ik", [(2, 5), (5, 2)], [False, True]),
    ("ii,jk->ik", [(3, 3), (3, 2)], [True, True]),            # a repeated index, an index summed in one operand
    ("ij,ij->", [(2, 3), (2, 3)], [True, True]),
])
@pytest.mark.parametrize("J", [1, 3, 4])
@pytest.mark.parametrize("dtype", [float, complex])
def test_einsum_is_the_taylor_expansion_of_the_contraction(spec, shapes, series, J, dtype):
    rng = np.random.default_rng(len(spec) + J)
    ops = [rng.normal(size=(J,) + s if is_s else s) for s, is_s in zip(shapes, series)]
    if dtype is complex:
        ops = [o + 1j * rng.normal(size=o.shape) for o in ops]
    got = einsum(spec, *(Series(o) if is_s else o for o, is_s in zip(ops, series)))
    want = _on_circle(lambda *a: np.einsum(spec, *a), list(zip(ops, series)))
    np.testing.assert_allclose(got.coefficients, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_products_and_outer_are_the_taylor_expansion():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 2, 3)), rng.normal(size=(3, 3))
    got = (Series(a) * Series(b) - Series(b) / 2.0) * Series(a)
    want = _on_circle(lambda x, y: (x * y - y / 2.0) * x, [(a, True), (b, True)])
    np.testing.assert_allclose(got.coefficients, want, rtol=0, atol=1e-12 * np.abs(want).max())
    got = outer(Series(a), b)                  # a plain operand: its h^0 coefficient only
    want = _on_circle(lambda x, y: np.multiply.outer(x, y), [(a, True), (b, False)])
    np.testing.assert_allclose(got.coefficients, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_einsum_refuses_what_it_does_not_read():
    s = Series(np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="explicit output"):
        einsum("ij,jk", s, s)
    with pytest.raises(ValueError, match="explicit output"):
        einsum("...j,jk->...k", s, s)
    with pytest.raises(ValueError, match="different orders"):
        einsum("ij,jk->ik", s, Series(np.ones((2, 2, 2))))


@st.composite
def _contractions(draw):
    """An einsum over 2-5 operands of up to 4 axes on 6 letters of sizes 1-3: some letters shared, some in one
    operand only, some repeated within one, each output letter once (plus the specs of the several-input step)."""
    sizes = draw(st.lists(st.integers(1, 3), min_size=6, max_size=6))
    letters = "abcdef"
    terms = draw(st.lists(st.text(letters, min_size=0, max_size=4), min_size=2, max_size=5))
    used = "".join(dict.fromkeys("".join(terms)))
    out = "".join(c for c in used if draw(st.booleans()))
    spec = ",".join(terms) + "->" + out
    shapes = tuple(tuple(sizes[letters.index(c)] for c in t) for t in terms)
    return spec, shapes, draw(st.integers(0, 2**31 - 1))


@given(_contractions(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_planned_contractions_are_numpys(case, complex_):
    """:func:`compiled` (the pairwise matmul plan) against ``np.einsum`` for any spec it accepts: batched, summed,
    dropped and repeated indices, scalars and outer products, real and complex operands."""
    spec, shapes, seed = case
    rng = np.random.default_rng(seed)
    ops = [rng.normal(size=s) + (1j * rng.normal(size=s) if complex_ else 0.0) for s in shapes]
    want = np.einsum(spec, *ops)
    got = compiled(spec, shapes)(*ops)
    assert np.shape(got) == want.shape
    scale = max(float(np.abs(want).max(initial=0.0)), float(np.prod([np.abs(o).sum() for o in ops])) * 1e-3, 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("spec", ["abij,ij->ab", "abij,cdkl,efmn,ijklmn->abcdef",
                                  "abij,cdkl,efmnop,ijmn,klop->abcdef", "abijklmnop,ijkl,mnop->ab",
                                  "abij,cdklmnop,ijkl,mnop->abcd", "abkl,ijkl,cdij->abcd"])
def test_planned_contractions_of_the_metric_step(spec):
    """The widest contractions of :func:`pdlt.theory.nnlo_inputs.metric_step` (four inputs: P4 has 4^10 entries),
    planned, against ``np.einsum``."""
    rng = np.random.default_rng(len(spec))
    ops = [rng.normal(size=(4,) * len(t)) for t in spec.split("->")[0].split(",")]
    want = np.einsum(spec, *ops, optimize=True)
    got = compiled(spec, tuple(o.shape for o in ops))(*ops)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())

"""Truncated power series (pdlt.theory.power_series) against another algorithm: the same contraction evaluated at
points of a circle in complex arithmetic, whose discrete Fourier transform returns the Taylor coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from pdlt.theory.power_series import Series, einsum, outer

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

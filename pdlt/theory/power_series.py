"""Arrays of truncated power series in one variable h: the arithmetic that lets a recursion written for numbers carry
the first Taylor coefficients of its inputs to those of its outputs, exactly (sums of products, no differences).

A :class:`Series` holds the coefficients of ``h^0 .. h^(J-1)`` on its first axis and behaves like the array of its
other axes under ``+``, ``-``, ``*`` (the Cauchy product, dropping ``h^J`` and beyond), division by a number,
indexing, ``transpose`` and ``reshape``; :func:`einsum` and :func:`outer` take series and plain arrays alike (plain
operands pass straight to numpy). Used by :func:`pdlt.theory.nnlo_inputs.metric_step` for the copies of
:mod:`pdlt.theory.ntk_nnlo`.

>>> import numpy as np
>>> x = Series([[1.0], [1.0], [0.0]])          # 1 + h
>>> (x * x * x).coefficients[:, 0].tolist()     # (1 + h)^3 to order h^2
[1.0, 3.0, 3.0]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["Series", "einsum", "outer", "contraction_path"]


class Series:
    """A truncated power series with array coefficients ``(J,) + shape`` (module docstring)."""

    __array_priority__ = 1000                      # numpy defers ``array * series`` to :meth:`__rmul__`

    def __init__(self, coefficients):
        self.coefficients = np.asarray(coefficients)

    @property
    def order(self) -> int:
        """J, the number of coefficients kept."""
        return self.coefficients.shape[0]

    @property
    def shape(self) -> tuple:
        return self.coefficients.shape[1:]

    @property
    def ndim(self) -> int:
        return self.coefficients.ndim - 1

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        return Series(self.coefficients[(slice(None),) + index])

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(range(self.ndim))[::-1] if not axes else tuple(a % self.ndim for a in axes)
        return Series(self.coefficients.transpose(0, *(a + 1 for a in axes)))

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Series(self.coefficients.reshape((self.order,) + tuple(shape)))

    def _lift(self, other) -> "Series":
        """``other`` as a series of this one's order (a number or plain array: its h^0 coefficient)."""
        if isinstance(other, Series):
            if other.order != self.order:
                raise ValueError(f"series of {self.order} and {other.order} coefficients")
            return other
        other = np.asarray(other)
        out = np.zeros((self.order,) + other.shape, dtype=np.result_type(other, self.coefficients))
        out[0] = other
        return Series(out)

    def __add__(self, other):
        a, b = _aligned(self.coefficients, self._lift(other).coefficients)
        return Series(a + b)

    __radd__ = __add__

    def __neg__(self):
        return Series(-self.coefficients)

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if not isinstance(other, Series):
            a, b = _aligned(self.coefficients, np.asarray(other)[None])
            return Series(a * b)
        a, b = _aligned(self.coefficients, self._lift(other).coefficients)
        return Series(np.stack([sum(a[i] * b[k - i] for i in range(1, k + 1)) + a[0] * b[k]
                                for k in range(self.order)]))

    __rmul__ = __mul__

    def __pow__(self, k: int):
        if not (isinstance(k, (int, np.integer)) and k >= 0):
            raise ValueError(f"a series to a power: non-negative integers only, got {k!r}")
        out = self._lift(np.ones(self.shape))
        for _ in range(int(k)):
            out = out * self
        return out

    def __truediv__(self, number):
        if isinstance(number, Series):
            raise TypeError("division by a series is not defined here (only by numbers and arrays)")
        a, b = _aligned(self.coefficients, np.asarray(number)[None])
        return Series(a / b)


def _aligned(a, b):
    """Two coefficient arrays (orders first) with singleton axes after the first, so that their other axes broadcast
    as the arrays they stand for would."""
    n = max(a.ndim, b.ndim)
    pad = lambda c: c.reshape((c.shape[0],) + (1,) * (n - c.ndim) + c.shape[1:])     # noqa: E731
    return pad(a), pad(b)


def _toeplitz(c: np.ndarray) -> np.ndarray:
    """``T[p, q] = c[p - q]`` for ``p >= q``, else 0 ``(J, J) + shape``: the matrix of multiplication by the series
    ``c`` ``(J,) + shape``, so that the Cauchy product of series is the product of their matrices (lower triangular
    Toeplitz), read in column 0."""
    J = c.shape[0]
    p, q = np.indices((J, J))
    lower = (p >= q).reshape((J, J) + (1,) * (c.ndim - 1))
    return np.where(lower, c[np.maximum(p - q, 0)], 0.0)


@lru_cache(maxsize=512)
def contraction_path(spec: str, shapes: tuple) -> list:
    """The greedy contraction order of an einsum (what ``optimize=True`` finds on every call), found once per spec
    and operand shapes: ``np.einsum``'s own search costs more than the contraction for the small arrays of a step."""
    return np.einsum_path(spec, *(np.broadcast_to(0.0, s) for s in shapes), optimize="greedy")[0]


def einsum(spec: str, *operands, optimize=True):
    """``np.einsum`` over series and arrays (explicit output, no ellipsis where a series takes part): the Cauchy
    product of the operands' coefficients as one contraction, each series but the largest entering as its
    multiplication matrix (:func:`_toeplitz`), chained through new order indices to the largest, which enters as
    its coefficients. ``optimize`` applies to plain operands; with series the path is found once per shapes."""
    if not any(isinstance(o, Series) for o in operands):
        return np.einsum(spec, *operands, optimize=optimize)
    J = next(o.order for o in operands if isinstance(o, Series))
    if any(isinstance(o, Series) and o.order != J for o in operands):
        raise ValueError(f"einsum over series of different orders: {[getattr(o, 'order', None) for o in operands]}")
    if "->" not in spec or "." in spec:
        raise ValueError(f"einsum over series needs an explicit output and no ellipsis, got {spec!r}")
    inputs, output = spec.replace(" ", "").split("->")
    inputs = inputs.split(",")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec]
    which = [i for i, o in enumerate(operands) if isinstance(o, Series)]
    tail = max(which, key=lambda i: operands[i].coefficients.size)
    chain = [i for i in which if i != tail] + [tail]
    order = free[:len(chain)]                    # order[0] is the result's; the chain passes it down to the tail
    terms, arrays = list(inputs), [np.asarray(o) if not isinstance(o, Series) else None for o in operands]
    for j, i in enumerate(chain):
        c = operands[i].coefficients
        if i == tail:
            terms[i], arrays[i] = order[j] + terms[i], c
        else:
            terms[i], arrays[i] = order[j] + order[j + 1] + terms[i], _toeplitz(c)
    full = ",".join(terms) + "->" + order[0] + output
    return Series(np.einsum(full, *arrays, optimize=contraction_path(full, tuple(a.shape for a in arrays))))


def outer(a, b):
    """``np.multiply.outer`` over series and arrays."""
    if not isinstance(a, Series) and not isinstance(b, Series):
        return np.multiply.outer(a, b)
    if isinstance(a, Series) and isinstance(b, Series) and a.order != b.order:
        raise ValueError(f"outer product of series of {a.order} and {b.order} coefficients")
    a = a if isinstance(a, Series) else Series(np.asarray(a)[None])
    b = b if isinstance(b, Series) else Series(np.asarray(b)[None])
    J = max(a.order, b.order)
    out = []
    for k in range(J):
        terms = [np.multiply.outer(a.coefficients[i], b.coefficients[k - i]) for i in range(k + 1)
                 if i < a.order and k - i < b.order]
        out.append(sum(terms[1:], terms[0]))
    return Series(np.stack(out))

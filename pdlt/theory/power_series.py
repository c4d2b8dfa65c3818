"""Arrays of truncated power series in one variable h: the arithmetic that lets a recursion written for numbers carry
the first Taylor coefficients of its inputs to those of its outputs, exactly (sums of products, no differences).

A :class:`Series` holds the coefficients of ``h^0 .. h^(J-1)`` on its first axis and behaves like the array of its
other axes under ``+``, ``-``, ``*`` (the Cauchy product, dropping ``h^J`` and beyond), division by a number,
indexing, ``transpose`` and ``reshape``; :func:`einsum` and :func:`outer` take series and plain arrays alike (plain
operands pass straight to numpy); :func:`compiled` plans a contraction once as pairwise matrix products, for steps
that repeat it layer after layer. Used by :func:`pdlt.theory.nnlo_inputs.metric_step` for the copies of
:mod:`pdlt.theory.ntk_nnlo`.

>>> import numpy as np
>>> x = Series([[1.0], [1.0], [0.0]])          # 1 + h
>>> (x * x * x).coefficients[:, 0].tolist()     # (1 + h)^3 to order h^2
[1.0, 3.0, 3.0]
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["Series", "einsum", "outer", "contraction_path", "compiled"]


class Series:
    """A truncated power series with array coefficients ``(J,) + shape`` (module docstring)."""

    __array_priority__ = 1000                      # numpy defers ``array * series`` to :meth:`__rmul__`

    __slots__ = ("coefficients", "_matrix")

    def __init__(self, coefficients):
        self.coefficients = np.asarray(coefficients)
        self._matrix = None

    def matrix(self) -> np.ndarray:
        """The multiplication matrix of the series ``(J, J) + shape`` (:func:`_toeplitz`), kept: a step's averages
        enter a dozen contractions each. (The coefficients are not to be changed in place after this.)"""
        if self._matrix is None:
            self._matrix = _toeplitz(self.coefficients)
        return self._matrix

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

    def _same(self, other) -> bool:
        """Whether ``other`` is a series of this order and number of axes (the common case: no lifting or padding)."""
        return (isinstance(other, Series) and other.coefficients.ndim == self.coefficients.ndim
                and other.coefficients.shape[0] == self.coefficients.shape[0])

    def __add__(self, other):
        if self._same(other):
            return Series(self.coefficients + other.coefficients)
        a, b = _aligned(self.coefficients, self._lift(other).coefficients)
        return Series(a + b)

    __radd__ = __add__

    def __neg__(self):
        return Series(-self.coefficients)

    def __sub__(self, other):
        if self._same(other):
            return Series(self.coefficients - other.coefficients)
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if isinstance(other, (int, float, complex)):
            return Series(self.coefficients * other)
        if not isinstance(other, Series):
            a, b = _aligned(self.coefficients, np.asarray(other)[None])
            return Series(a * b)
        if not self._same(other):             # (another number of axes: aligned first, as an array's would be)
            a, b = _aligned(self.coefficients, self._lift(other).coefficients)
            return Series(a) * Series(b)
        # the Cauchy product, out[k] = sum_j T[k, j] b[j] with T the multiplication matrix of a (:func:`_toeplitz`)
        return Series((self.matrix() * other.coefficients[None]).sum(axis=1))

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
        if isinstance(number, (int, float, complex)):
            return Series(self.coefficients / number)
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
    padded = np.concatenate([c, np.zeros_like(c[:1])])          # row J: the zero of the upper triangle
    return padded[_toeplitz_rows(c.shape[0])]


@lru_cache(maxsize=8)
def _toeplitz_rows(J: int) -> np.ndarray:
    """``(J, J)`` rows of the zero-padded coefficients that form :func:`_toeplitz`: ``p - q`` on and below the
    diagonal, J (the zero row) above it."""
    p, q = np.indices((J, J))
    return np.where(p >= q, p - q, J)


@lru_cache(maxsize=512)
def contraction_path(spec: str, shapes: tuple) -> list:
    """The greedy contraction order of an einsum (what ``optimize=True`` finds on every call), found once per spec
    and operand shapes: ``np.einsum``'s own search costs more than the contraction for the small arrays of a step."""
    return np.einsum_path(spec, *(np.broadcast_to(0.0, s) for s in shapes), optimize="greedy")[0]


@lru_cache(maxsize=512)
def compiled(spec: str, shapes: tuple):
    """``np.einsum(spec, *operands)`` for operands of these shapes as a function of the operands, planned once: the
    greedy pairwise order of :func:`contraction_path`, each pair a batched matrix product (:func:`_pair`). A step
    applies it hundreds of times to arrays of a few hundred entries, where ``np.einsum``'s parsing and path
    validation on each call cost more than the arithmetic. Each pair keeps the indices that a later operand or the
    output still needs, in the order they first appear in it (the last pair: the output's order)."""
    inputs, output = spec.replace(" ", "").split("->")
    terms = inputs.split(",")
    size = {c: n for term, shape in zip(terms, shapes) for c, n in zip(term, shape)}
    steps = contraction_path(spec, shapes)[1:]
    plan = []
    for k, inds in enumerate(steps):
        inds = tuple(sorted(inds, reverse=True))            # (popped right to left, as the operands will be)
        args = [terms.pop(i) for i in inds]
        if k == len(steps) - 1:
            kept = output
        else:
            need = set("".join(terms)) | set(output)
            kept = "".join(dict.fromkeys(c for c in "".join(args) if c in need))
        step_spec = ",".join(args) + "->" + kept
        one = _pair(step_spec, *(tuple(size[c] for c in a) for a in args)) if len(args) == 2 else None
        if one is None:                         # (a single operand or a repeated index: numpy's own loop)
            one = lambda *a, spec=step_spec: np.einsum(spec, *a)                            # noqa: E731
        terms.append(kept)
        plan.append((inds, one))

    def run(*operands):
        live = list(operands)
        for inds, one in plan:
            live.append(one(*[live.pop(i) for i in inds]))
        return live[0]

    return run


def _pair(spec: str, sx: tuple, sy: tuple):
    """``np.einsum(spec, x, y)`` (no repeated index within an operand, no broadcasting) as one ``np.matmul``: x to
    ``(batch, left, summed)``, y to ``(batch, summed, right)``, the product back to the output's order; indices of
    one operand only that the output drops are summed first. A summed index leading both operands (the order index
    that :func:`einsum` chains to its largest operand) is batched over and summed after the product, and an operand
    whose axes already run ``(batch, summed, left)`` (``(batch, right, summed)``) enters as a transposed view: so the
    largest operand (an average tensor of the step) is never copied. None where this does not apply."""
    (ix, iy), iz = spec.split("->")[0].split(","), spec.split("->")[1]
    size = dict(zip(ix, sx))
    if (len(set(ix)) < len(ix) or len(set(iy)) < len(iy) or len(sx) != len(ix) or len(sy) != len(iy)
            or any(size.setdefault(c, n) != n for c, n in zip(iy, sy))):
        return None
    drop_x = tuple(i for i, c in enumerate(ix) if c not in iy and c not in iz)
    drop_y = tuple(i for i, c in enumerate(iy) if c not in ix and c not in iz)
    kx = [c for i, c in enumerate(ix) if i not in drop_x]
    ky = [c for i, c in enumerate(iy) if i not in drop_y]
    lead = [kx[0]] if kx and ky and kx[0] == ky[0] and kx[0] not in iz else []
    batch = lead + [c for c in iz if c in ix and c in iy]
    left, right = [c for c in kx if c in iz and c not in iy], [c for c in ky if c in iz and c not in ix]
    summed = [c for c in kx if c in iy and c not in iz and c not in lead]
    prod = lambda cs: int(np.prod([size[c] for c in cs], dtype=np.int64))                  # noqa: E731
    B, M, K, N = prod(batch), prod(left), prod(summed), prod(right)
    x_flip, y_flip = kx == batch + summed + left, ky == batch + right + summed      # (transposed views, no copy)
    px = tuple(kx.index(c) for c in batch + (summed + left if x_flip else left + summed))
    py = tuple(ky.index(c) for c in batch + (right + summed if y_flip else summed + right))
    mid = tuple(size[c] for c in batch[len(lead):] + left + right)
    pz = tuple((batch[len(lead):] + left + right).index(c) for c in iz)

    def one(x, y):
        x = x.sum(axis=drop_x) if drop_x else x
        y = y.sum(axis=drop_y) if drop_y else y
        x = x.transpose(px).reshape(B, K, M).swapaxes(1, 2) if x_flip else x.transpose(px).reshape(B, M, K)
        y = y.transpose(py).reshape(B, N, K).swapaxes(1, 2) if y_flip else y.transpose(py).reshape(B, K, N)
        z = np.matmul(x, y)
        if lead:                                # (the lead is the batch's slowest axis: sum it apart from the rest)
            z = z.reshape((size[lead[0]], -1) + z.shape[1:]).sum(axis=0)
        return z.reshape(mid).transpose(pz)

    return one


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
    shapes = tuple((o.coefficients.shape, True) if isinstance(o, Series) else (np.shape(o), False) for o in operands)
    toeplitz, run = _layout(spec, shapes)
    arrays = [o.matrix().swapaxes(0, 1) if toe else (o.coefficients if isinstance(o, Series) else np.asarray(o))
              for o, toe in zip(operands, toeplitz)]
    return Series(run(*arrays))


@lru_cache(maxsize=512)
def _layout(spec: str, shapes: tuple):
    """For :func:`einsum`: which operands enter as their multiplication matrices (every series but the largest;
    transposed, ``T[q, p]``, so that the order index they share with the next in the chain leads both, which
    :func:`_pair` batches over) and the :func:`compiled` contraction of the lot, per spec and ``(shape, is series)``
    of the operands."""
    inputs, output = spec.replace(" ", "").split("->")
    terms = inputs.split(",")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in spec]
    which = [i for i, (_, series) in enumerate(shapes) if series]
    tail = max(which, key=lambda i: int(np.prod(shapes[i][0])))
    chain = [i for i in which if i != tail] + [tail]
    order = free[:len(chain)]                    # order[0] is the result's; the chain passes it down to the tail
    toeplitz, full_shapes = [False] * len(shapes), [shape for shape, _ in shapes]
    for j, i in enumerate(chain):
        if i == tail:
            terms[i] = order[j] + terms[i]
        else:
            terms[i] = order[j + 1] + order[j] + terms[i]
            toeplitz[i], full_shapes[i] = True, shapes[i][0][:1] + shapes[i][0]
    return tuple(toeplitz), compiled(",".join(terms) + "->" + order[0] + output, tuple(full_shapes))


def outer(a, b):
    """``np.multiply.outer`` over series and arrays."""
    if not isinstance(a, Series) and not isinstance(b, Series):
        return np.multiply.outer(a, b)
    if isinstance(a, Series) and isinstance(b, Series) and a.order != b.order:
        raise ValueError(f"outer product of series of {a.order} and {b.order} coefficients")
    if not isinstance(b, Series):
        return Series(np.multiply.outer(a.coefficients, b))
    if not isinstance(a, Series):
        return Series(np.moveaxis(np.multiply.outer(a, b.coefficients), np.ndim(a), 0))
    # the Cauchy product as one matrix product: out[k, A, B] = sum_j T_a[k, j, A] b[j, B] (T_a: :func:`_toeplitz`)
    T = a.matrix().reshape(a.order, a.order, -1).transpose(0, 2, 1)
    out = np.matmul(T, b.coefficients.reshape(b.order, -1))
    return Series(out.reshape((a.order,) + a.shape + b.shape))

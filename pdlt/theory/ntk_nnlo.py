r"""The NTK of one input at order 1/n^2, from copies of the network (derivations/README.md section 17.2; layers
l = 1..L at array index l - 1).

**Copies.** Perturb every parameter, ``theta -> theta + eps eta`` with ``eta`` Gaussian of the learning rates'
variances (``lambda_b`` for a bias, ``lambda_W/n_{l-1}`` for a weight). For one output i and one input, with
``X = z_i(theta + eps eta) - z_i(theta)``, ``E_eta[X^2] = eps^2 H_ii + O(eps^4)`` (the odd orders vanish), so the NTK
is a limit of the two-point function of two networks. Three copies (``theta``, ``theta + eps eta``,
``theta + eps eta'``, the eta independent) form the chain of :mod:`pdlt.theory.nnlo_inputs` with three "inputs"
(one input seen by three networks): given layer l, the copies' preactivations of layer l + 1 are iid over neurons
and Gaussian, with

    G'_ab = C_b^ab + (C^ab / n_l) sum_j sigma(z_ja) sigma(z_jb),   C^ab = C_W + h lambda_W [a = b != 0],
                                                                    C_b^ab = C_b + h lambda_b [a = b != 0],

``h = eps^2`` (``[a = b != 0]`` the covariance of three copies' moves; :data:`_MASKS` in general). So the copies' ``K``,
``G1``, ``G2``, ``V``, ``V1``, ``U`` follow from the several-input recursions with a per-entry ``C^ab``
(:func:`pdlt.theory.nnlo_inputs.metric_step`), and the NTK statistics are their Taylor coefficients in h at h = 0. With
``l_X.G = G_00 + G_11 - 2 G_01`` (``E[X^2 | G]``), ``l_Y`` the same for copy 2, ``l_C.G = G_12 - G_01 - G_02 + G_00``
(``E[X Y | G]``), ``l_F.G = G_01 - G_00`` (``E[X z | G]``) and ``[h^k]`` the k-th coefficient, for layer l and
``n = n_{l-1}`` (i != j two outputs):

    E[H_ii]                = [h] l_X.(K + G1/n + G2/n^2)       = Theta + Theta1/n + Theta2/n^2
    n Cov(H_ii, H_jj)      = [h^2] l_X.(V + V1/n).l_Y           = A + A2/n
    n E[H_ij^2]            = [h^2] l_C.(V + V1/n).l_C           = B + B2/n
    n Cov(H_ii, z_j^2)     = [h] l_X.(V + V1/n).e_00            = D + D2/n
    n E[H_ij z_i z_j]      = [h] l_F.(V + V1/n).l_F             = F + F2/n

up to O(1/n^3) (the squared means the products bring in are of order h^4 and h^2 and drop out). ``Var(H_ii) =
(A + 2B)/n + (A2 + 2B2)/n^2``. The first-order parts are the O(1/n) statistics of :func:`pdlt.ntk`, derived there by
other recursions: the test that the copies are right.

**The dNTK** (``dntk=True``). A fourth copy, ``theta + eps (eta + eta')`` (``C^ab = C_W + h lambda_W M_ab`` with
``M`` the covariance of the copies' moves, :data:`_MASKS`), gives the mixed second difference
``W = z_3 - z_1 - z_2 + z_0 = eps^2 eta.d^2 z.eta' + O(eps^3)``, so that ``E_eta[W_i0 X_i1 Y_i2] = h^2 dH_i0i1i2 +
O(h^3)`` (every term of W holds eta and eta'; those odd in either vanish). With the same contractions,

    n E[dH_ijj z_i]        = [h^2] l_Wz.(V + V1/n).l_XY         = P + P2/n
    n E[dH_iij z_j]        = [h^2] l_WX.(V + V1/n).l_Yz         = Q + Q2/n

(the products of means, ``E[W z] E[X Y]`` and ``E[W X] E[Y z]``, are of order h^4 and h^3). The chain of copies 0-2 is
closed (an entry's recursion involves only its own copies), so the four copies' chain holds the three's statistics.

**Taylor coefficients.** At h = 0 the copies coincide, ``K(h) = k J + h K_1 + h^2 K_2`` (J all ones), and a Gaussian
average of a product of the copies' functions follows from single-input averages at k by the heat equation,
``<F>_{K(h)} = exp((1/2) sum_ij (K(h) - k J)_ij d_i d_j) <F>``, to order h^2 (derivatives of sigma up to the
twelfth, from its sympy expression; trapezoid as :func:`pdlt.theory.nnlo.smooth_table`). The step is a sum of
products of its inputs, so it runs on truncated power series (:mod:`pdlt.theory.power_series`: the averages, ``C^ab``
and the state as their coefficients of h^0, h^1, h^2) and returns the outputs' coefficients exactly. The averages of
sigma's high derivatives themselves cancel at kernels far from O(1) (gelu at K ~ 900: every digit of Theta2), so each
chain also runs on averages moved by their rounding bound (:func:`_probe`, as a complex step): a ``"rounding"`` caveat
where the statistics move by more than 1e-6 of their size, a :class:`ParameterError` naming ``x`` beyond 1e-3.

Smooth activations of plain MLPs (per-layer ``C_W``, ``C_b``, widths and learning rates); the kinked ReLU family's
copies are not smooth in h (bias-free ReLU networks have the exact chain :func:`pdlt.relu_ntk_all_orders`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..architecture import MLP
from ..errors import TRUNCATION_THRESHOLD, Caveat, DivergentFlowError, ParameterError, emit, first_out_of_range

__all__ = ["NTKSecondOrder", "ntk_nnlo", "NTK_NEXT_ORDER"]

#: the covariances of the copies' perturbations in units of the learning rates, ``M_ab``: copy 0 is the network
#: itself, copies 1 and 2 are moved by eta and eta', and for the dNTK copy 3 by eta + eta'
_MASKS = {3: np.diag([0.0, 1.0, 1.0]),
          4: np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 2.0]])}

#: the differences of copies the statistics read (module docstring): X = z_1 - z_0, Y = z_2 - z_0, the network z = z_0
#: and the mixed second difference W = z_3 - z_1 - z_2 + z_0
_VECTORS = {"X": (-1.0, 1.0, 0.0, 0.0), "Y": (-1.0, 0.0, 1.0, 0.0), "z": (1.0, 0.0, 0.0, 0.0),
            "W": (1.0, -1.0, -1.0, 1.0)}


def _pair(u: str, v: str, copies: int) -> np.ndarray:
    """``l_uv`` ``(copies, copies)`` with ``l_uv . G = E[u v | G]`` for two differences of copies, symmetrized (G is
    symmetric)."""
    a, b = (np.array(_VECTORS[w][:copies]) for w in (u, v))
    if copies == 3 and "W" in (u, v):
        raise ValueError("W needs the fourth copy")
    return (np.outer(a, b) + np.outer(b, a)) / 2


_NAMES = ("G1", "V", "G2", "V1", "U")


def _shifts(copies: int) -> list[tuple[tuple[int, ...], int]]:
    """The extra derivatives the heat equation puts on the copies to order h^2: ``(alpha, order)`` with
    ``|alpha| = 2 order``."""
    out = [((0,) * copies, 0)]
    for order in (1, 2):
        out += [(a, order) for a in itertools.product(range(2 * order + 1), repeat=copies) if sum(a) == 2 * order]
    return out


@lru_cache(maxsize=8)
def _tables(expr, copies: int = 3):
    """For an activation's expression and a number of copies: ``(keys, maps, shifts, products, sel, P)``. ``keys``,
    ``maps`` as :func:`pdlt.theory.nnlo_inputs.average_keys` for the copies; ``products(z)`` ``(..., P)`` the distinct
    products ``prod_u (sigma^p_u)^(m_u)(z)`` at one point z; ``sel`` ``(nk, len(shifts))`` which product each key takes
    under each shift (``P``: the key vanishes, a derivative on a copy without a sigma factor)."""
    from .nnlo_inputs import average_keys, power_derivative_forms

    keys, maps = average_keys(copies)
    shifts = tuple(_shifts(copies))
    factors, sel = {}, np.empty((len(keys), len(shifts)), dtype=np.int64)
    for k, (p, n) in enumerate(keys):
        for j, (alpha, _) in enumerate(shifts):
            m = n + np.array(alpha)
            if np.any((p == 0) & (m > 0)):
                sel[k, j] = -1
                continue
            fac = tuple(sorted((int(a), int(b)) for a, b in zip(p, m) if a > 0))
            sel[k, j] = factors.setdefault(fac, len(factors))
    sel[sel < 0] = len(factors)
    pairs = sorted({pm for fac in factors for pm in fac})
    col = {pm: i for i, pm in enumerate(pairs)}
    forms = power_derivative_forms(expr, tuple(pairs))
    members = [[col[pm] for pm in fac] for fac in factors]

    def products(z):
        f = np.moveaxis(forms(z), -1, 0)
        # (built product-major, each product one contiguous array: writing them as the columns of a (..., P) array
        # took a third of the averages' time)
        out = np.empty((len(members),) + z.shape)
        for j, m in enumerate(members):
            if len(m) == 1:
                out[j] = f[m[0]]
                continue
            np.multiply(f[m[0]], f[m[1]], out=out[j])
            for i in m[2:]:
                out[j] *= f[i]
        return np.moveaxis(out, 0, -1)

    return keys, maps, shifts, products, sel, len(factors)


def _weights(K1, K2, shifts) -> np.ndarray:
    """``(3, len(shifts))``: the weight of each shifted single-input average in the coefficients of h^0, h^1, h^2 of
    an average at ``k J + h K1 + h^2 K2`` (``K1, K2`` ``(copies, copies)``; the heat equation over ordered pairs of
    copies): ``[h] = sum_ij K1_ij d_i d_j / 2``, ``[h^2] = sum_ij K2_ij d_i d_j / 2 + sum_ijkm K1_ij K1_km d_i d_j d_k
    d_m / 8``, each derivative pattern a shift (:func:`_heat_shifts`)."""
    two, four = _heat_shifts(shifts)
    W = np.zeros((3, len(shifts)), dtype=np.result_type(K1, K2))
    W[0, shifts.index(((0,) * K1.shape[0], 0))] = 1.0
    W[1] = K1.ravel() @ two / 2
    W[2] = K2.ravel() @ two / 2 + np.multiply.outer(K1, K1).ravel() @ four / 8
    return W


@lru_cache(maxsize=8)
def _heat_shifts(shifts: tuple) -> tuple:
    """For :func:`_weights`: 0/1 matrices ``(c^2, len(shifts))`` and ``(c^4, len(shifts))`` taking the ordered pairs
    ``(i, j)`` and quadruples ``(i, j, k, m)`` of copies to the shift of their derivatives ``e_i + e_j (+ e_k +
    e_m)`` (summing a kernel's entries over them is the heat equation's sum, as one matrix product per layer)."""
    from .nnlo_inputs import derivative_classes

    c = len(shifts[0][0])
    pos = {a: j for j, (a, _) in enumerate(shifts)}
    out = []
    for n in (2, 4):
        classes, which = derivative_classes(c, n)            # each sequence's counts of each copy
        M = np.zeros((c**n, len(shifts)))
        M[np.arange(c**n), [pos[tuple(v)] for v in classes[which].tolist()]] = 1.0
        out.append(M)
    return tuple(out)


#: rounding of a trapezoid average, in units of eps times the average of the integrand's absolute value
_ROUNDING_ULPS = 64

#: change of a statistic under the rounding probe (:func:`_probe`), relative to its natural size: above the
#: tolerance the result carries a ``"rounding"`` caveat, above the limit it is refused
ROUND_OFF_TOLERANCE = 1e-6
ROUND_OFF_LIMIT = 1e-3


def _averages(act, k: np.ndarray, copies: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The distinct single-input products of :func:`_tables` (for ``copies``) averaged at the kernels ``k`` ``(B,)``:
    ``(values, rounding)``, each ``(B, P)``, the rounding bound ``_ROUNDING_ULPS eps <|f|>`` (at large K the averages
    of high derivatives are small differences of large terms). Refuses, naming ``x``, a table that is not finite (an
    activation whose derivative forms overflow on the grid, |z| up to 9 sqrt(K))."""
    from .nnlo import smooth_table

    _, _, _, products, _, nprod = _tables(act.expr, copies)
    vals, mags = smooth_table(products, k, width=nprod, magnitude=True)
    if not (np.all(np.isfinite(vals)) and np.all(np.isfinite(mags))):
        bad = k[~(np.all(np.isfinite(vals), axis=1) & np.all(np.isfinite(mags), axis=1))]
        raise ParameterError(f"the Gaussian averages of {act.name}'s derivatives (up to the twelfth) are not finite at "
                             f"K = {bad.max():.3g} (its derivative forms overflow on the grid, |z| up to "
                             f"{9 * np.sqrt(bad.max()):.3g}): scale the inputs (x) toward K ~ 1", "x")
    return vals, _ROUNDING_ULPS * np.finfo(np.float64).eps * mags


def _copy_chain(net: MLP, k: np.ndarray, G0: float, lb, lw, averages: np.ndarray, copies: int = 3) -> dict:
    """The chain of ``copies`` copies (:data:`_MASKS`) of one input: per layer the coefficients of h^0..h^2 of the
    copies' kernel ``K`` (its own h^0 part is the kernel k), ``G1``, ``V``, ``G2``, ``V1``, ``U``, each ``(L, 3) +
    (copies,)*rank``, from the averages of :func:`_averages` at ``k[:-1]`` (complex averages give complex statistics:
    the chain is a polynomial in them, which :func:`ntk_nnlo`'s rounding probe uses)."""
    from .nnlo_inputs import metric_step
    from .power_series import Series

    _, maps, shifts, _, sel, _ = _tables(net.activation.expr, copies)
    mask, L = _MASKS[copies], k.size
    out = {nm: np.zeros((L, 3) + (copies,) * r, dtype=averages.dtype) for nm, r in zip(_NAMES, (2, 4, 2, 4, 6))}
    Kh = np.zeros((L, 3, copies, copies), dtype=averages.dtype)      # [l, order] of the copies' kernel (order 0: k J)
    Kh[:, 0] = k[:, None, None]
    Kh[0, 1] = (lb[0] + lw[0] * G0) * mask
    if L == 1:
        return dict(out, K=Kh)
    base = np.concatenate([averages, np.zeros((L - 1, 1))], axis=1)[:, sel]      # (L - 1, nk, shifts)
    # a chain that leaves float64's range carries inf and NaN on quietly: _check_range names its first layer after
    for l in range(1, L):                          # layer l -> l + 1, arrays at index l - 1 -> l
        step = net.step(l + 1)
        C = Series(np.stack([np.full((copies, copies), float(step.C_W)), lw[l] * mask, np.zeros((copies, copies))]))
        with np.errstate(over="ignore", invalid="ignore"):
            K1, K2 = Kh[l - 1, 1], Kh[l - 1, 2]
            c = _weights(K1, K2, shifts) @ base[l - 1].T                            # (3, nk)
            c = np.concatenate([c, np.zeros((3, 1))], axis=1)
            t = {mk: Series(np.take(c, ix, axis=1)) for mk, ix in maps.items()}     # (take: 5x fancy indexing)
            new = metric_step(t, C, net.width_ratio(l),
                              *(Series(out[nm][l - 1]) for nm in _NAMES))
            for nm, v in zip(_NAMES, new):
                out[nm][l] = v.coefficients
            ss = c[:, maps[(2, 0)]]                # <s_a s_b> at h^0..h^2
            Kh[l, 1] = lb[l] * mask + lw[l] * mask * ss[0] + step.C_W * ss[1]
            Kh[l, 2] = lw[l] * mask * ss[1] + step.C_W * ss[2]
    _check_range(out, Kh)
    return dict(out, K=Kh)


def _check_range(out: dict, Kh: np.ndarray) -> None:
    """Refuse, naming the first layer, a chain whose statistics left float64's range (not finite or above 1e300),
    checked once for layers 2..L (the layers after the first such one only carry it on)."""
    hit = first_out_of_range({nm: out[nm][1:] for nm in _NAMES})
    kernel = np.flatnonzero(~np.all(np.isfinite(Kh[1:]), axis=(1, 2, 3)))
    if kernel.size:
        hit["kernel"] = int(kernel[0])
    if hit:
        first = min(hit.values())
        names = [nm for nm in _NAMES if hit.get(nm) == first] or ["kernel"]
        raise DivergentFlowError(f"the 1/n^2 NTK statistics leave float64's range at layer l = {first + 2} (the "
                                 f"copies' {', '.join(names)}): move C_W toward criticality (pdlt.criticality), "
                                 "lower the learning rates or reduce the depth", layer=first + 2)


def _read(ch: dict) -> dict:
    """The NTK statistics ``(L,)`` of one input from its copies' chain (module docstring), and with the fourth copy
    the dNTK's P, P2, Q, Q2."""
    c = ch["K"].shape[-1]
    one = lambda u, v, T, m: np.einsum("ab,lab->l", _pair(u, v, c), T[:, m])                               # noqa: E731
    two = lambda u, v, T, w, y, m: np.einsum("ab,labcd,cd->l", _pair(u, v, c), T[:, m], _pair(w, y, c))  # noqa: E731
    out = {"Theta": one("X", "X", ch["K"], 1), "Theta1": one("X", "X", ch["G1"], 1),
           "Theta2": one("X", "X", ch["G2"], 1)}
    for nm, (u, v, w, y, m) in _FOUR_POINT.items():
        if c > 3 or "W" not in (u, v, w, y):
            out[nm], out[nm + "2"] = two(u, v, ch["V"], w, y, m), two(u, v, ch["V1"], w, y, m)
    return out


#: the n-scaled four-point statistics as ``[h^m] l_uv . (V + V1/n) . l_wy`` (module docstring): the pairs of
#: differences of copies on the two neurons, and the power of h
_FOUR_POINT = {"A": ("X", "X", "Y", "Y", 2), "B": ("X", "Y", "X", "Y", 2), "D": ("X", "X", "z", "z", 1),
               "F": ("X", "z", "X", "z", 1), "P": ("W", "z", "X", "Y", 2), "Q": ("W", "X", "Y", "z", 2)}


def _relative_next(s, n, X: str, Y: str):
    """The 1/n^2 term of ``(X + 2Y + (X2 + 2 Y2)/n) / (n (Theta + Theta1/n)^2)``, a size relative to the measured
    ``E[H_ii]^2`` (the NTK's relative variance with A, B; the dNTK's with P, Q): 0 where Theta is (nothing trained)."""
    if s["Theta"] == 0:
        return 0.0
    return ((s[X + "2"] + 2 * s[Y + "2"] - 2 * (s[X] + 2 * s[Y]) * s["Theta1"] / s["Theta"])
            / (n * s["Theta"]) ** 2)


#: the O(1/n^2) term of each NTK observable's one-input entry, from the statistics of one input at one layer
#: (``s``: a dict of floats; ``n = n_{l-1}``); A, B, D, F are n times a covariance, so their next term is ``A2/n``
NTK_NEXT_ORDER = {
    "ntk_mean": lambda s, n: s["Theta2"] / n**2,
    "ntk_variance": lambda s, n: (s["A2"] + 2 * s["B2"]) / n**2,
    "ntk_relative_variance": lambda s, n: _relative_next(s, n, "A", "B"),
    "A": lambda s, n: s["A2"] / n,
    "B": lambda s, n: s["B2"] / n,
    "D": lambda s, n: s["D2"] / n,
    "F": lambda s, n: s["F2"] / n,
    "P": lambda s, n: s["P2"] / n,
    "Q": lambda s, n: s["Q2"] / n,
    "dntk_relative": lambda s, n: _relative_next(s, n, "P", "Q"),     # the measured E[dH_iii z_i]/E[H_ii]^2
}

#: the observables whose next order needs the dNTK (``ntk_nnlo(..., dntk=True)``)
DNTK_QUANTITIES = ("P", "Q", "dntk_relative")

_FIELDS = ("Theta", "Theta1", "Theta2", "A", "A2", "B", "B2", "D", "D2", "F", "F2")
_DNTK_FIELDS = ("P", "P2", "Q", "Q2")


@dataclass(frozen=True)
class NTKSecondOrder:
    """The NTK statistics of each input alone to order 1/n^2 (module docstring), each ``(L, d)`` (layer l at index
    l - 1, input a at column a): ``Theta``, ``Theta1``, ``Theta2`` (``E[H_ii] = Theta + Theta1/n + Theta2/n^2``) and
    ``A, A2``, ``B, B2``, ``D, D2``, ``F, F2`` (``n Cov(H_ii, H_jj) = A + A2/n`` and so on, ``n = n_{l-1}``); with
    ``dntk=True`` also the dNTK's ``P, P2``, ``Q, Q2`` (``n E[dH_iij z_j] = Q + Q2/n``, ``n E[dH_ijj z_i] = P + P2/n``,
    i != j), else None. ``caveats``: a ``"truncation"`` caveat where the 1/n^2 terms are not small against the 1/n
    ones."""

    net: MLP
    x: np.ndarray
    lambda_b: tuple
    lambda_W: tuple
    Theta: np.ndarray
    Theta1: np.ndarray
    Theta2: np.ndarray
    A: np.ndarray
    A2: np.ndarray
    B: np.ndarray
    B2: np.ndarray
    D: np.ndarray
    D2: np.ndarray
    F: np.ndarray
    F2: np.ndarray
    caveats: tuple = ()
    P: np.ndarray | None = None
    P2: np.ndarray | None = None
    Q: np.ndarray | None = None
    Q2: np.ndarray | None = None

    @property
    def fields(self) -> tuple:
        """The statistics this object carries (the dNTK's where it was asked for)."""
        return _FIELDS + (_DNTK_FIELDS if self.P is not None else ())

    def layer(self, l: int, a: int = 0) -> dict:
        """Input a's statistics at layer l as floats (the argument of :data:`NTK_NEXT_ORDER`)."""
        self.net._check_layer(l)
        d = self.x.shape[0]
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < d:
            raise ParameterError(f"the input index a must be an integer in 0..{d - 1}, got {a!r}", "a")
        return {k: float(getattr(self, k)[l - 1, a]) for k in self.fields}

    def next_order(self, quantity: str, l: int) -> np.ndarray:
        """The O(1/n^2) term of the NTK observable ``quantity`` at layer l for each input ``(d,)``: its one-input
        entry (``ntk_mean``'s ``aa``, A's ``aaaa``, ...)."""
        if quantity not in NTK_NEXT_ORDER:
            raise ParameterError(f"the 1/n^2 NTK term is computed for {tuple(NTK_NEXT_ORDER)}, not {quantity!r}",
                                 "quantity")
        if quantity in DNTK_QUANTITIES and self.P is None:
            raise ParameterError(f"the 1/n^2 term of {quantity} needs the dNTK: call ntk_nnlo(..., dntk=True)", "dntk")
        self.net._check_layer(l)
        n = float(self.net.widths[l - 1])
        return np.array([NTK_NEXT_ORDER[quantity](self.layer(l, a), n) for a in range(self.x.shape[0])])

    def mean(self, l: int, order: int = 2) -> np.ndarray:
        """``E[H_ii;aa]`` per input ``(d,)``: ``Theta + Theta1/n`` (order 1) ``+ Theta2/n^2`` (order 2)."""
        from .nnlo import check_order

        s, n = self._at(l)
        return s["Theta"] + s["Theta1"] / n + (s["Theta2"] / n**2 if check_order(order) == 2 else 0.0)

    def variance(self, l: int, order: int = 2) -> np.ndarray:
        """``Var(H_ii;aa)`` per input ``(d,)``: ``(A + 2B)/n`` (order 1) ``+ (A2 + 2 B2)/n^2`` (order 2)."""
        from .nnlo import check_order

        s, n = self._at(l)
        return (s["A"] + 2 * s["B"]) / n + ((s["A2"] + 2 * s["B2"]) / n**2 if check_order(order) == 2 else 0.0)

    def dntk_relative(self, l: int, order: int = 2) -> np.ndarray:
        """``E[dH_iii;aaa z_i;a]/E[H_ii;aa]^2`` per input ``(d,)``: ``(P + 2Q)/(n Theta^2)`` (order 1, 0 where Theta is)
        plus its 1/n^2 term (order 2, :data:`NTK_NEXT_ORDER`). Needs ``dntk=True``."""
        from .nnlo import check_order

        if self.P is None:
            raise ParameterError("the relative dNTK needs the dNTK: call ntk_nnlo(..., dntk=True)", "dntk")
        s, n = self._at(l)
        safe = np.where(s["Theta"] != 0, s["Theta"], 1.0)
        first = np.where(s["Theta"] != 0, (s["P"] + 2 * s["Q"]) / (n * safe**2), 0.0)
        return first + (self.next_order("dntk_relative", l) if check_order(order) == 2 else 0.0)

    def _at(self, l: int):
        self.net._check_layer(l)
        return {k: getattr(self, k)[l - 1] for k in self.fields}, float(self.net.widths[l - 1])


def ntk_nnlo(net: MLP, x, lambda_b=1.0, lambda_W=1.0, dntk: bool = False) -> NTKSecondOrder:
    """The NTK statistics of each input of ``x`` ``(d, n_0)`` alone through ``net``, to order 1/n^2 (module
    docstring): a :class:`NTKSecondOrder`. Plain MLPs with a smooth activation, per-layer ``C_W``, ``C_b``, widths and
    learning rates (as :func:`pdlt.ntk`). ``dntk``: also the dNTK's P and Q to order 1/n^2, from four copies instead
    of three (about three times the cost).

    Raises :class:`ParameterError` for residual networks (``gamma``) and kinked activations (``activation``; bias-free
    ReLU networks have the exact chain :func:`pdlt.relu_ntk_all_orders`), :class:`DivergentFlowError` naming the
    layer where a statistic leaves float64's range, :class:`~pdlt.errors.VanishingFlowError` where the mean NTK is
    below ~3e-136 (tiny learning rates or inputs: the variances, of its square, would underflow).

    >>> import pdlt
    >>> net = pdlt.MLP("linear", (1, 10, 10, 10, 10), C_W=1.0, C_b=0.0)
    >>> st = pdlt.ntk_nnlo(net, [[1.0]], lambda_b=0.0, lambda_W=1.0)
    >>> [round(float(v), 10) for v in st.Theta2[:, 0]]          # deep linear: E[H] = Theta at every width
    [0.0, 0.0, 0.0, 0.0]
    """
    from .kernel import kernel_flow
    from .nnlo import check_second_order_range
    from .ntk import learning_rates

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if net.residual:
        raise ParameterError("the 1/n^2 NTK statistics are derived for plain MLPs (gamma = 0, xi = 1 at every layer); "
                             "residual networks have the O(1/n) statistics of pdlt.ntk", "gamma")
    if net.activation.kinks:
        raise ParameterError(f"the 1/n^2 NTK statistics expand the network's copies in the size of the perturbation, "
                             f"which needs a smooth activation; {net.activation.name} is kinked (bias-free ReLU "
                             "networks: the exact chain pdlt.relu_ntk_all_orders)", "activation")
    if not isinstance(dntk, (bool, np.bool_)):
        raise ParameterError(f"dntk must be True or False, got {dntk!r}", "dntk")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    xs = net.inputs(x)
    flow = kernel_flow(net, xs)
    check_second_order_range(flow.K, "the 1/n^2 NTK statistics")
    copies = 4 if dntk else 3
    cols, rounded = [], []
    for a in range(xs.shape[0]):
        G0 = float(xs[a] @ xs[a]) / xs.shape[1]
        k = np.ascontiguousarray(flow.K[:, a, a])
        avg, rounding = _averages(net.activation, k[:-1], copies)
        # one complex chain: its real part the statistics, its imaginary part their response to the rounding
        sign = np.where(np.random.default_rng(0).random(avg.shape[-1]) < 0.5, -1.0, 1.0)
        both = _read(_copy_chain(net, k, G0, lb, lw, avg + (1j * _PROBE_STEP) * sign * rounding, copies))
        cols.append({nm: v.real.copy() for nm, v in both.items()})
        c = _probe(k, cols[-1], {nm: v.imag / _PROBE_STEP for nm, v in both.items()})
        rounded += [c] if c is not None else []
    stats = {k: np.stack([c[k] for c in cols], axis=1) for k in cols[0]}
    # A and B are of order Theta^2 (and their probes ~1e-33 of that): tiny learning rates or inputs underflowed them
    # to subnormals (lambda = 1e-160: 0.3 % off) or to 0, silently
    check_second_order_range(stats["Theta"], "the 1/n^2 NTK statistics", "scale the learning rates (lambda_b, "
                             "lambda_W) or the inputs x up: each statistic is a power of them", power=2)
    caveats = _caveats(net, stats) + tuple(rounded[:1])
    emit(caveats, stacklevel=3)
    return NTKSecondOrder(net=net, x=xs, lambda_b=lb, lambda_W=lw, caveats=caveats, **stats)


#: the complex step of the rounding probe: the chain runs on ``avg + i s delta`` (``delta`` the rounding bounds with
#: fixed signs), and ``Im(statistic)/s`` is the statistic's change under ``avg + delta`` to first order. The chain is a
#: polynomial in the averages with no subtraction of the step, so s can be tiny: the real part differs from the
#: statistic by O((s delta)^2), and delta may exceed the average it bounds by orders of magnitude where the probe
#: matters (s = 2^-30 moved gelu's D at K ~ 100 by 6e-10 of its size; 2^-64 leaves round-off). The imaginary parts,
#: ~1e-33 of the statistics, underflow only for statistics below ~1e-270
_PROBE_STEP = 2.0**-64


def _probe(k, stats: dict, moved: dict) -> Caveat | None:
    """Judge the change ``moved`` of the statistics ``stats`` when the averages move by their rounding bound (fixed
    signs; :func:`ntk_nnlo` computes it by the complex step :data:`_PROBE_STEP`): at large kernels the averages of
    sigma's high derivatives cancel (gelu at K ~ 900 loses every digit of Theta2). Where a statistic moves by more
    than :data:`ROUND_OFF_LIMIT` of its largest value over the layers, refuse, naming the layer and ``x``; by more
    than :data:`ROUND_OFF_TOLERANCE`, a ``"rounding"`` caveat that says by how much (the bound is pessimistic: ~30
    times the change that moving x by 1e-9 causes, gelu at K = 100)."""
    theta = float(np.max(np.abs(stats["Theta"])))
    unit = {"Theta": theta, "A": theta**2, "B": theta**2, "D": theta * float(np.max(k)), "F": theta * float(np.max(k)),
            "P": theta**2, "Q": theta**2}           # (dntk_relative = (P + 2Q)/(n Theta^2))
    worst, first, name = 0.0, None, None
    for nm in stats:
        # (a statistic that vanishes, D of sin with lambda_b = 0, is judged on its natural scale)
        scale = max(float(np.max(np.abs(stats[nm]))), unit[nm.rstrip("12") or nm], 1e-300)
        rel = np.abs(moved[nm]) / scale
        if rel.max() > worst:
            worst, name = float(rel.max()), nm
            first = int(np.argmax(rel > ROUND_OFF_TOLERANCE)) + 1
    where = f"{name} from layer l = {first}, with kernels up to K = {float(np.max(k)):.3g}"
    if worst > ROUND_OFF_LIMIT:
        raise ParameterError(f"the 1/n^2 NTK statistics lose their digits to rounding: {where} moves by "
                             f"{worst:.1g} of its size when the Gaussian averages move by their rounding (limit "
                             f"{ROUND_OFF_LIMIT:g}); the averages of sigma's high derivatives cancel at kernels far "
                             "from O(1): scale the inputs (x) toward K ~ 1", "x")
    if worst > ROUND_OFF_TOLERANCE:
        return Caveat("rounding", f"the 1/n^2 NTK statistics carry a rounding error of up to ~{worst:.1g} of their "
                                  f"size ({where}: the averages of sigma's high derivatives cancel at kernels far "
                                  "from O(1)); scale the inputs (x) toward K ~ 1 for full precision", first, worst)
    return None


def _caveats(net: MLP, s: dict) -> tuple:
    """A ``"truncation"`` caveat at the first layer where the 1/n^2 term of the NTK's variance (or, where computed, of
    the dNTK, on the scale ``|P| + 2|Q|``) is not small against its 1/n term (relative to
    :data:`pdlt.errors.TRUNCATION_THRESHOLD`; the mean's 1/n term can cross zero, so it is not the yardstick, and so
    can P + 2Q)."""
    pairs = [("NTK variance", "A", "B")] + ([("dNTK", "P", "Q")] if "P" in s else [])
    for l in range(3, net.L + 1):
        i, n = l - 1, float(net.widths[l - 1])
        for what, a, b in pairs:
            if a == "A":
                first = np.abs(s["A"][i] + 2 * s["B"][i])
            else:
                first = np.abs(s[a][i]) + 2 * np.abs(s[b][i])
            second = np.abs(s[a + "2"][i] + 2 * s[b + "2"][i]) / n
            ratios = second[first > 0] / first[first > 0]
            if ratios.size and ratios.max() > TRUNCATION_THRESHOLD:
                r = float(ratios.max())
                return (Caveat("truncation", f"the 1/n^2 term of the {what} is {r:.3g} of the 1/n term at layer "
                                             f"l = {l} (threshold {TRUNCATION_THRESHOLD}): the 1/n series is not "
                                             "controlled there and the orders beyond 1/n^2 may be as large; widen "
                                             "the network", l, float(r)),)
    return ()

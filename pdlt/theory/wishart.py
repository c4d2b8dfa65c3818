r"""Deep linear networks with several inputs, to all orders in 1/n: the Wishart chain of the metric
(derivations/README.md section 13.5).

For ``sigma(z) = a z`` (slopes ``a_+ = a_- = a``) the metric of layer l + 1 given layer l is, for d inputs,

    G' = C_b J + (C_W a^2 / n_l) S,      S | G ~ Wishart_{n_l}(G)     (J the all-ones d x d matrix),

since ``z'_i | layer l ~ N(0, G')`` with ``G'_ab = C_b + (C_W/n_l) sum_j sigma(z_ja) sigma(z_jb)`` and the ``z_j`` iid
``N(0, G)``. The Wishart law has ``E S = n G`` and ``Cov(S_ab, S_cd) = n (G_ac G_bd + G_ad G_bc)``, both polynomial in
G, so the first two moments of G close exactly, at every order in 1/n: with ``r = C_W a^2``,

    m'   = C_b + r m,
    cov' = r^2 [cov_(ab)(cd) + (M_acbd + M_adbc) / n_l],     M_abcd = cov_(ab)(cd) + m_ab m_cd,

(the bias terms cancel in the covariance). ``cov^(l)`` is the connected four-point function of distinct neurons
``E[z_ia z_ib z_jc z_jd] - E[z_ia z_ib] E[z_jc z_jd]`` exactly (whose O(1/n) part is ``V/n``), and ``m^(l) = K^(l)``
exactly (no 1/n correction to the two-point function).

The third cumulant closes too: given G, S has cumulants ``n G``, ``n Q(G)`` with ``Q_(ab)(cd) = G_ac G_bd + G_ad
G_bc`` and ``n w(G)``, ``w_(ab)(cd)(ef)`` the sum of the 8 products ``G_xy G_y'z G_z'x'`` over ``x in {a, b}``, ``y in
{c, d}``, ``z in {e, f}`` (primes: the other index of the pair; Isserlis' connected pairings). The law of total
cumulance gives

    k3' = r^3 [k3 + (CQ_XYZ + CQ_YXZ + CQ_ZXY)/n_l + w(M3)/n_l^2],
    CQ_(ab)(cd)(ef) = Cov(G_ab, Q_(cd)(ef)(G)) = k3_(ab)(ce)(df) + m_ce cov_(ab)(df) + m_df cov_(ab)(ce) + (e <-> f),

with ``M3 = E[G G G] = k3 + m cov (3 placements) + m m m`` (``w`` is linear in the products of three G), all in
central quantities (no cancellation). Its O(1/n^2) part is the six-point vertex ``U/n^2`` of
:func:`pdlt.theory.nnlo_inputs.nnlo_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..architecture import MLP
from ..errors import DivergentFlowError, ParameterError

__all__ = ["LinearAllOrders", "linear_all_orders", "is_linear", "check_linear"]


def is_linear(act) -> bool:
    """``sigma(z) = a z`` (a scale-invariant activation with equal slopes)."""
    return act.slopes is not None and float(act.slopes[0]) == float(act.slopes[1])


def check_linear(net, what: str, instead: str = "") -> None:
    """A :class:`ParameterError` unless ``net`` is a pdlt.MLP with ``sigma(z) = a z``: ``what`` is exact only for
    deep linear networks (``instead``: what to use otherwise)."""
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if not is_linear(net.activation):
        raise ParameterError(f"{what} is exact for deep linear networks (sigma = a z); {net.activation.name} is not "
                             f"linear{instead}", "activation")


@dataclass(frozen=True)
class LinearAllOrders:
    """The metric of d inputs through a deep linear network at every order in 1/n (module docstring): ``mean``
    ``(L, d, d)`` = ``E[z_ia z_ib]``, ``cov`` ``(L, d, d, d, d)`` = ``Cov(G_ab, G_cd)`` (the connected four-point
    function of distinct neurons) and ``kappa3`` ``(L,) + (d,)*6`` = ``kappa_3(G_ab, G_cd, G_ef)`` (for d <= 4; None
    beyond, its d^6 entries per layer), all exact; ``error`` holds zeros of the same shapes (no closure: nothing to
    estimate). With shortcuts (:mod:`pdlt.theory.linear_residual`) ``cov`` is the connected four-point function of
    distinct neurons and ``kappa3`` the connected six-point function of three distinct neurons; at a layer narrower
    than the tuple (width 1, or 2 for ``kappa3``) those are formal values, while one neuron's cumulants
    (:meth:`four_point_single`, :meth:`six_point_single`, :meth:`kurtosis`) stay exact."""

    net: MLP
    x: np.ndarray
    mean: np.ndarray
    cov: np.ndarray
    error: dict
    kappa3: np.ndarray | None = None

    def six_point_single(self, l: int) -> np.ndarray:
        """One neuron's sixth cumulant ``kappa_6(z_a)`` at layer l, ``(d,)``: ``15 kappa3_(aa)(aa)(aa)`` (z is Gaussian
        given G; with shortcuts the pairing identity of :mod:`pdlt.theory.linear_residual`)."""
        self.net._check_layer(l)
        if self.kappa3 is None:
            raise ParameterError(f"the six-point functions are kept for at most {_MAX_THIRD} inputs: pass fewer "
                                 "inputs", "x")
        d = self.mean.shape[1]
        return np.array([15.0 * self.kappa3[(l - 1,) + (a,) * 6] for a in range(d)])

    def four_point(self, l: int) -> np.ndarray:
        """``E[z_ia z_ib z_jc z_jd] - E[z_ia z_ib] E[z_jc z_jd]`` (i != j) at layer l, ``(d, d, d, d)``."""
        self.net._check_layer(l)
        return self.cov[l - 1].copy()

    def four_point_single(self, l: int) -> np.ndarray:
        """One neuron's fourth cumulant ``kappa_4(z_a, z_b, z_c, z_d)`` at layer l: ``cov_(ab)(cd) + cov_(ac)(bd) +
        cov_(ad)(bc)`` (z is Gaussian given G)."""
        c = self.four_point(l)
        return c + c.transpose(0, 2, 1, 3) + c.transpose(0, 3, 2, 1)

    def kurtosis(self, l: int) -> np.ndarray:
        """Per input, ``3 Var G_aa / (E G_aa)^2``, ``(d,)``."""
        c = self.four_point(l)
        d = c.shape[0]
        ar = np.arange(d)
        m = self.mean[l - 1][ar, ar]
        if not np.all(m > 0):
            raise ParameterError(f"the kurtosis is not defined at layer l = {l} for an input whose metric is 0 (a zero "
                                 "input with C_b = 0)", "x")
        return 3.0 * c[ar, ar, ar, ar] / m**2


def linear_all_orders(net: MLP, x) -> LinearAllOrders:
    """The exact mean and covariance of the metric of d inputs ``x`` ``(d, n_0)`` through a deep linear ``net``
    (module docstring), per-layer ``C_W, C_b`` and any widths; with shortcuts (``gamma``, ``xi``) the exchangeable
    moment chain of :mod:`pdlt.theory.linear_residual`. Raises :class:`ParameterError` for other activations
    (``activation``); :class:`DivergentFlowError` naming the layer where the moments
    leave float64's range.

    >>> import pdlt, numpy as np
    >>> th = linear_all_orders(pdlt.MLP("linear", (1, 4, 4, 4)), [[1.0]])
    >>> float(th.kurtosis(3)[0]), 3 * ((1 + 2 / 4) ** 2 - 1)      # one input: 3 (prod (1 + 2/n) - 1)
    (3.75, 3.75)
    """
    from .kernel import kernel_flow
    from .nnlo import check_second_order_range

    check_linear(net, "the Wishart chain")
    xs = net.inputs(x)
    if net.residual:
        return _with_shortcuts(net, xs)
    K1 = np.asarray(kernel_flow(net, xs).K[0], dtype=np.float64)
    d, L = K1.shape[0], net.L
    a2 = float(net.activation.slopes[0]) ** 2
    mean = np.zeros((L, d, d))
    cov = np.zeros((L, d, d, d, d))
    # the third cumulant has d^6 entries per layer: kept for the d <= 4 inputs of the several-input 1/n^2 theory
    third = d <= _MAX_THIRD
    k3 = np.zeros((L,) + (d,) * 6) if third else None
    mean[0] = K1
    m, c, t = K1, np.zeros((d, d, d, d)), (np.zeros((d,) * 6) if third else np.zeros(()))
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(1, L):                       # layer l -> l + 1 (1-based), through width n_l
            C_W, C_b = net.hyper(l + 1)
            r, n = float(C_W) * a2, float(net.widths[l])
            if third:
                t = r**3 * (t + _cov_with_q(m, c, t) / n + _isserlis(_third_moment(m, c, t)) / n**2)
            M = c + np.einsum("ab,cd->abcd", m, m)
            c = r * r * (c + (M.transpose(0, 2, 1, 3) + M.transpose(0, 3, 2, 1)) / n)
            m = float(C_b) + r * m
            if not (np.all(np.isfinite(c)) and np.all(np.isfinite(m)) and np.all(np.isfinite(t))):
                raise DivergentFlowError(f"the moments of the deep linear metric leave float64's range at layer "
                                         f"l = {l + 1}: scale the input down or reduce C_W or the depth", layer=l + 1)
            mean[l], cov[l] = m, c
            if third:
                k3[l] = t
    check_second_order_range(mean, "the metric's cumulants")
    error = {"mean": np.zeros_like(mean), "cov": np.zeros_like(cov)}
    if third:
        error["kappa3"] = np.zeros_like(k3)
    return LinearAllOrders(net=net, x=xs, mean=mean, cov=cov, kappa3=k3, error=error)


def _with_shortcuts(net: MLP, xs: np.ndarray) -> LinearAllOrders:
    """The chain of moments over neuron tuples of :mod:`pdlt.theory.linear_residual` (the six-point function for
    d <= 4, like the Wishart chain's third cumulant)."""
    from .linear_residual import first_kernel, tuple_chain

    d = xs.shape[0]
    c = tuple_chain(net, first_kernel(net, xs), six=d <= _MAX_THIRD)
    error = {k: np.zeros_like(c[k]) for k in ("m", "cov", "kappa3") if k in c}
    error["mean"] = error.pop("m")
    return LinearAllOrders(net=net, x=xs, mean=c["m"], cov=c["cov"], kappa3=c.get("kappa3"), error=error)


#: most inputs for which the exact third cumulant is kept (d^6 entries per layer)
_MAX_THIRD = 4


def _sym3(T):
    """``T_XYZ + T_YXZ + T_ZYX`` for ``T[ab, cd, ef]`` symmetric in its last two pairs: the three placements of the
    first slot."""
    return T + T.transpose(2, 3, 0, 1, 4, 5) + T.transpose(4, 5, 2, 3, 0, 1)


def _third_moment(m, c, t):
    """``E[G_ab G_cd G_ef]`` from the mean, covariance and third cumulant of G."""
    return t + _sym3(np.einsum("ab,cdef->abcdef", m, c)) + np.einsum("ab,cd,ef->abcdef", m, m, m)


def _isserlis(M3):
    """``E w(G)`` (module docstring) from ``M3 = E[G G G]``: the 8 connected pairings of (ab)(cd)(ef)."""
    T = np.einsum("acdefb->abcdef", M3)                     # G_ac G_de G_fb
    T = T + T.transpose(1, 0, 2, 3, 4, 5)
    T = T + T.transpose(0, 1, 3, 2, 4, 5)
    return T + T.transpose(0, 1, 2, 3, 5, 4)


def _cov_with_q(m, c, t):
    """``CQ_XYZ + CQ_YXZ + CQ_ZXY`` with ``CQ_(ab)(cd)(ef) = Cov(G_ab, G_ce G_df + G_cf G_de)`` (module docstring)."""
    one = (np.einsum("abcedf->abcdef", t) + np.einsum("ce,abdf->abcdef", m, c) + np.einsum("df,abce->abcdef", m, c))
    return _sym3(one + one.transpose(0, 1, 2, 3, 5, 4))

r"""One input at order 1/n^2: the two-point correction G2, the four-point correction V1 and the six-point vertex U
(derivations/README.md section 13; PDLT conventions, layers l = 1..L at array index l - 1).

One input is an exact Markov chain of the layer's metric: given layer l, the preactivations of layer l + 1 are iid
``N(0, G')`` with ``G' = C_b + (C_W/n_l) sum_j sigma(sqrt(G) xi_j)^2``. So one neuron's moments are cumulants of G
(``kappa_2k(z) = (2k - 1)!! kappa_k(G)``, and every connected multi-neuron function is ``kappa_k(G)`` times its
pairings), and to order 1/n^2 only the mean, variance and third cumulant of G are needed:

    E[z^2] = E G      = K + G1/n + G2/n^2,     Var G = V/n + V1/n^2,     kappa_3(G) = U/n^2     (n = n_{l-1}).

Given G, G' has cumulants ``phi(G) = C_b + C_W g(G)``, ``(C_W^2/n_l) v(G)``, ``(C_W^3/n_l^2) w(G)`` with
``g = <s^2>_G``, ``v = <s^4> - g^2``, ``w = <s^6> - 3 <s^4> g + 2 g^3`` (``s = sigma``). The law of total cumulance and
a Taylor expansion about K give, with ``p_k = C_W g^(k)(K)`` (``p_1 = chi_par``), ``r = n_l/n_{l-1}`` and
everything at layer l:

    G1' = r [p1 G1 + (p2/2) V]
    V'  = C_W^2 v + r p1^2 V
    U'  = C_W^3 w + 3 r C_W^2 p1 v' V + r^2 [p1^3 U + 3 p1^2 p2 V^2]
    V1' = r C_W^2 (v' G1 + v'' V/2) + r^2 [p1^2 V1 + 2 p1 p2 G1 V + p1 p2 U + (p2^2/2 + p1 p3) V^2]
    G2' = r^2 [p1 G2 + (p2/2)(V1 + G1^2) + (p3/2) G1 V + (p3/6) U + (p4/8) V^2]

from zero at layer 1 (layer 2: G1 = G2 = V1 = 0, V = C_W^2 v(K1), U = C_W^3 w(K1), exact). K-derivatives of Gaussian
averages follow the heat equation, ``d^k/dK^k <f>_K = <f^(2k)>_K / 2^k``: smooth sigma takes the derivatives of
``s^2`` and ``s^4`` from its sympy expression (no Hermite cancellation at small K); scale-invariant sigma has
``g = A_2 K``, ``<s^4> = A_4 K^2``, ``<s^6> = A_6 K^3`` exactly (``A_p = <sigma(xi)^p>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..architecture import MLP
from ..errors import TRUNCATION_THRESHOLD, Caveat, DivergentFlowError, ParameterError, VanishingFlowError, emit

__all__ = ["NNLO", "SecondOrderStatistics", "nnlo", "nnlo_averages", "check_order", "second_order_caveats",
           "check_second_order_range", "K_MIN_SECOND_ORDER",
           "KERNEL_POWER"]

#: the power of the kernel each statistic scales with (``K -> c K`` for a scale-invariant network multiplies it by
#: ``c^p``): the unit a statistic that vanishes is judged on
KERNEL_POWER = {"K": 1, "G1": 1, "G2": 1, "V": 2, "V1": 2, "U": 3}


@lru_cache(maxsize=32)
def _even_derivatives(expr):
    """Numpy callable ``z -> (..., 9)``: s^2 and its even z-derivatives of orders 2..8, s^4 and its derivatives of
    orders 2 and 4, and s^6 (smooth sigma)."""
    from ..activations import derivative_exprs, numpy_forms

    forms = numpy_forms(derivative_exprs(expr**2, 8)[::2] + derivative_exprs(expr**4, 4)[::2] + (expr**6,))
    return lambda z: np.stack(forms(z), axis=-1)


#: most trapezoid nodes of one average (a kernel K needs ~ 600 sqrt(K) of them)
MAX_NODES = 2_000_001


def smooth_table(f, K, width: int = 9, magnitude: bool = False):
    """``<f(z)>_K`` ``(B, width)`` for variances ``K`` ``(B,)`` by the trapezoid over ``|w| <= 9``
    (``z = sqrt(K) w``) with spacing ``min(0.05, 0.03/sqrt(K))``: z-resolution 0.03 whatever K (the eighth
    derivative of s^2 has structure on the scale of sigma itself), kernels with the same node count evaluated
    together. ``f`` is real (the table is). ``magnitude``: also ``<|f(z)|>_K`` (the scale of each average's rounding),
    as a second array."""
    h = np.minimum(0.05, 0.03 / np.sqrt(np.maximum(K, 1e-300)))
    wide = 2 * np.ceil(9.0 / h) + 1                    # (in floats: at K ~ 1e52 the count overflows int64)
    if np.any(~(wide <= MAX_NODES)):
        raise ParameterError(f"the 1/n^2 averages at K = {K[~(wide <= MAX_NODES)].max():.3g} need "
                             f"{wide.max():.3g} trapezoid nodes (limit {MAX_NODES}): the kernel is far from O(1); "
                             "move C_W, C_b toward criticality or scale the input down", "x")
    nodes = wide.astype(np.int64)
    out = np.empty((K.size, width))
    mag = np.empty((K.size, width)) if magnitude else None
    for n in np.unique(nodes):
        idx = np.flatnonzero(nodes == n)
        w = np.linspace(-9.0, 9.0, int(n))
        wt = np.exp(-0.5 * w * w)
        wt /= wt.sum()
        # kernels per call: ~2M numbers (a table that outgrows the cache costs more than the calls: 4.6 s against
        # 0.9 s for the 205 columns of pdlt.ntk_nnlo at 1000 kernels with 36M)
        step = max(1, 2_000_000 // (int(n) * width))
        for lo in range(0, idx.size, step):
            part = idx[lo:lo + step]
            with np.errstate(over="ignore", invalid="ignore"):
                vals = f(np.sqrt(K[part])[:, None] * w[None, :])
                out[part] = np.einsum("knj,n->kj", vals, wt)
                if magnitude:
                    mag[part] = np.einsum("knj,n->kj", np.abs(vals), wt)
    return (out, mag) if magnitude else out


def nnlo_averages(act, K) -> dict:
    """The single-input Gaussian averages of the 1/n^2 recursions at variances ``K`` (any shape, > 0):
    ``g1..g4`` (the K-derivatives of ``g = <s^2>_K``), ``v``, ``v1``, ``v2`` (``v = <s^4> - g^2`` and its first two
    K-derivatives) and ``w = <s^6> - 3 <s^4> g + 2 g^3``, each of K's shape (module docstring)."""
    from ..activations import activation as _lookup
    from ..activations import require_continuous

    act = _lookup(act)
    require_continuous(act, "the 1/n^2 recursions (K-derivatives of Gaussian averages, sigma's derivatives)")
    K = np.asarray(K, dtype=np.float64)
    if act.scale_invariant:
        A2, A4, A6 = (float(act.power_moment(p)) for p in (2, 4, 6))
        c2, c3 = A4 - A2 * A2, A6 - 3.0 * A4 * A2 + 2.0 * A2**3
        zero = np.zeros_like(K)
        return {"g": A2 * K, "g1": A2 + zero, "g2": zero, "g3": zero, "g4": zero, "v": c2 * K * K,
                "v1": 2.0 * c2 * K, "v2": 2.0 * c2 + zero, "w": c3 * K**3}
    if act.kinks:
        raise ParameterError(f"the 1/n^2 recursions need K-derivatives of <sigma^2> up to the fourth: smooth "
                             f"activations or scale-invariant ones (ReLU family); {act.name} is kinked and not "
                             "scale-invariant", "activation")
    m = smooth_table(_even_derivatives(act.expr), K.reshape(-1)).reshape(K.shape + (9,))
    d2 = [m[..., k] / 2.0**k for k in range(5)]          # g^(k) = <(s^2)^(2k)> / 2^k
    q = [m[..., 5 + k] / 2.0**k for k in range(3)]       # d^k <s^4> / dK^k
    g = d2[0]
    return {"g": g, "g1": d2[1], "g2": d2[2], "g3": d2[3], "g4": d2[4], "v": q[0] - g * g,
            "v1": q[1] - 2.0 * g * d2[1], "v2": q[2] - 2.0 * d2[1] ** 2 - 2.0 * g * d2[2],
            "w": m[..., 8] - 3.0 * q[0] * g + 2.0 * g**3}


@dataclass(frozen=True)
class SecondOrderStatistics:
    """The fields of the 1/n^2 statistics, one input (:class:`NNLO`) or several
    (:class:`pdlt.theory.nnlo_inputs.NNLOInputs`): ``K``, ``G1``, ``V`` (order 1/n), ``G2``, ``V1``, ``U`` over layers
    (layer l at index l - 1), whose observables at layer l use ``n = n_{l-1}``, and ``caveats``."""

    net: MLP
    x: np.ndarray
    K: np.ndarray
    G1: np.ndarray
    V: np.ndarray
    G2: np.ndarray
    V1: np.ndarray
    U: np.ndarray
    caveats: tuple = ()

    def _n(self, l: int) -> float:
        self.net._check_layer(l)
        return float(self.net.widths[l - 1])


@dataclass(frozen=True)
class NNLO(SecondOrderStatistics):
    """The statistics of one input to order 1/n^2 (module docstring), each ``(L,)`` over layers: ``K``, ``G1``, ``V``
    (order 1/n, as :func:`pdlt.finite_width`), ``G2``, ``V1``, ``U``. Observables of layer l use ``n = n_{l-1}``.
    ``caveats``: a ``"truncation"`` caveat where the 1/n^2 terms are not small against the 1/n ones (also issued as a
    :class:`~pdlt.errors.TruncationWarning` by :func:`nnlo`)."""

    def second_moment(self, l: int, order: int = 2) -> float:
        """``E[z^2]`` of layer l: ``K + G1/n`` (order 1) ``+ G2/n^2`` (order 2)."""
        n, i = self._n(l), l - 1
        return float(self.K[i] + self.G1[i] / n + (self.G2[i] / n**2 if check_order(order) == 2 else 0.0))

    def metric_variance(self, l: int, order: int = 2) -> float:
        """``Var G = E[z_i^2 z_j^2] - E[z_i^2] E[z_j^2]`` (``i != j``): ``V/n`` ``+ V1/n^2``."""
        n, i = self._n(l), l - 1
        return float(self.V[i] / n + (self.V1[i] / n**2 if check_order(order) == 2 else 0.0))

    def metric_cumulant3(self, l: int) -> float:
        """``kappa_3(G) = U/n^2`` (one neuron's sixth cumulant is 15 times it)."""
        n = self._n(l)          # (checks l before it indexes)
        return float(self.U[l - 1] / n**2)

    def kurtosis(self, l: int, order: int = 2) -> float:
        """One neuron's excess kurtosis ``kappa_4(z)/E[z^2]^2 = 3 Var G/(E G)^2``, expanded: ``3 V/(n K^2)`` ``+ 3 (V1 -
        2 V G1/K)/(n^2 K^2)``."""
        n, i = self._n(l), l - 1
        K, G1, V, V1 = self.K[i], self.G1[i], self.V[i], self.V1[i]
        if not K > 0:
            raise ParameterError(f"the kurtosis is not defined at layer l = {l}: the metric is 0 there (K = 0, a zero "
                                 "input with C_b = 0)", "x")
        out = 3.0 * V / (n * K * K)
        if check_order(order) == 2:
            out += 3.0 * (V1 - 2.0 * V * G1 / K) / (n * n * K * K)
        return float(out)

    def truncation_error(self, quantity: str, l: int, order: int = 2) -> float:
        """Estimated ``|truth - prediction|`` of ``quantity`` (``"second_moment"``, ``"metric_variance"``,
        ``"kurtosis"``) at layer l truncated at ``order``: at order 2 the distance to the all-orders closure
        (:func:`pdlt.all_orders`, computed on first use and kept) plus the closure's own error estimate; at order 1 the
        computed 1/n^2 term plus ``c^2 |T1|`` (as :meth:`pdlt.FiniteWidth.truncation_error`, derivations/README.md
        section 14)."""
        return _truncation_error(self, quantity, l, order)


_OBSERVABLE = {"second_moment": "two_point", "metric_variance": "four_point", "kurtosis": "kurtosis"}


def _truncation_error(th: NNLO, quantity: str, l: int, order) -> float:
    import warnings

    from ..errors import PdltError, TruncationWarning
    from .finite_width import FiniteWidth
    from .metric_closure import all_orders
    from .truncation import set_one_input_orders, truncation_error
    from .wishart import LinearAllOrders

    if not isinstance(quantity, str) or quantity not in _OBSERVABLE:
        raise ParameterError(f"quantity must be one of {tuple(_OBSERVABLE)}, got {quantity!r}", "quantity")
    th.net._check_layer(l)
    if check_order(order) == 1:
        fw = FiniteWidth(th.net, th.x, K=th.K[:, None, None], G1=th.G1[:, None, None],
                         V=th.V[:, None, None, None, None], caveats=())
        set_one_input_orders(fw, [th])                               # the next order is this object itself
        return float(truncation_error(fw, _OBSERVABLE[quantity], l).reshape(-1)[0])
    # after 1/n^2 no simple bound holds for every class (the O(1/n^3) remainder of chaotic tanh's two-point function
    # is 1.25 c^2 |T1|): the orders beyond are computed instead, by the all-orders closure, with its own error
    cache = th.__dict__.setdefault("_pdlt_all_orders", {})
    if "value" not in cache:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                cache["value"] = all_orders(th.net, th.x)
        except PdltError as err:
            cache["value"] = err
    if isinstance(cache["value"], PdltError):
        raise ParameterError(f"the error of the 1/n^2 prediction is its distance to the all-orders closure "
                             f"(pdlt.all_orders, M = 8), which cannot be computed here: {cache['value']}; order=1 "
                             "gives the error of the 1/n prediction", "order") from None
    ao, i = cache["value"], l - 1
    if isinstance(ao, LinearAllOrders):      # with shortcuts, the exact chain of pdlt.theory.linear_residual
        exact = (ao.mean[i].item() if quantity == "second_moment" else ao.cov[i].item()
                 if quantity == "metric_variance" else float(ao.kurtosis(l)[0]))
        err = 0.0
    else:
        exact, err = {"second_moment": (ao.mean[i], ao.error["mean"][i]),
                      "metric_variance": (ao.var[i], ao.error["var"][i]),
                      "kurtosis": (3 * ao.relative_var[i], 3 * ao.error["relative_var"][i])}[quantity]
    return float(abs(exact - getattr(th, quantity)(l, order=2)) + err)


#: the smallest kernel whose 1/n^2 statistics are normal float64 numbers with digits to spare: U grows like K^3
#: (2^-900 here), V1 like K^2; below it they would underflow to 0 and the ratios formed from them to NaN
K_MIN_SECOND_ORDER = 2.0**-300


def check_second_order_range(K, what: str = "the 1/n^2 statistics", advice: str | None = None, power: int = 3) -> None:
    """Refuse kernels ``K`` with a positive variance below :data:`K_MIN_SECOND_ORDER`: a :class:`VanishingFlowError`
    naming the first such layer (a zero variance, a zero input without bias, is exact and passes). ``K``: ``(L,)``,
    ``(L, d)`` (one value per layer and input, e.g. the NTK's mean) or ``(L, d, d)`` (a layer's leading-order kernel
    or the metric's mean); ``advice``: what to change (default: the inputs, criticality, the depth). ``power``: the
    highest power of K among the statistics (3: U; 2 for statistics that go no higher, the bound then
    ``K_MIN_SECOND_ORDER^(3/2)``)."""
    K = np.asarray(K, dtype=np.float64)
    diag = K.reshape(K.shape[0], -1) if K.ndim <= 2 else np.diagonal(K, axis1=-2, axis2=-1)
    lowest = K_MIN_SECOND_ORDER ** (3.0 / power)
    small = np.any((diag > 0) & (diag < lowest), axis=1)
    if np.any(small):
        l = int(np.argmax(small)) + 1
        top = float(np.max(diag[l - 1]))
        if advice is None:
            advice = ("scale the inputs x up (a scale-invariant activation's statistics scale exactly as |x|^(2p))"
                      if l == 1 else "move C_W toward criticality (pdlt.criticality), reduce the depth or scale the "
                      "inputs x up")
        raise VanishingFlowError(f"{what} grow like the {'cube' if power == 3 else 'square'} of the kernel and leave "
                                 f"float64's range below ~{lowest:.1g}; at layer l = {l} it is {top:.3g}: {advice}",
                                 layer=l)


def check_order(order) -> int:
    """``order`` (1 or 2) checked: a :class:`ParameterError` naming ``order`` otherwise."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order not in (1, 2):
        raise ParameterError(f"order must be 1 or 2, got {order!r}", "order")
    return int(order)


def nnlo(net: MLP, x):
    """The 1/n^2 statistics of every layer of ``net`` for one input ``x`` ``(n_0,)`` or ``(1, n_0)`` (module
    docstring), with per-layer ``C_W, C_b`` and any hidden widths: an :class:`NNLO`. Several inputs ``x`` ``(d, n_0)``,
    ``d <= 4``, give the tensors of :func:`pdlt.theory.nnlo_inputs.nnlo_inputs` (an ``NNLOInputs``).

    Networks with shortcuts (``gamma``, ``xi``): deep linear ones take the exact series coefficients of
    :mod:`pdlt.theory.linear_residual` (``G1 = G2 = 0``); one input of a nonlinear one the cumulant chain of
    :func:`pdlt.theory.residual_nnlo.residual_nnlo` (with its own ``"modes"`` caveat); several inputs of a nonlinear
    one are refused (``gamma``). Raises :class:`ParameterError` for kinked activations that are not scale-invariant
    (``activation``); :class:`DivergentFlowError` naming the layer where a statistic leaves float64's range.

    >>> import pdlt
    >>> th = nnlo(pdlt.MLP("linear", (1, 10, 10, 10, 10)), [1.0])     # deep linear: V1 = 2 (l-1)(l-2), U = 4 (l-1)(3l-4)
    >>> th.V1.tolist(), th.U.tolist()
    ([0.0, 0.0, 4.0, 12.0], [0.0, 8.0, 40.0, 96.0])
    """
    from .kernel import kernel_flow

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    xs = net.inputs(x)
    if net.residual and xs.shape[0] == 1:
        from .wishart import is_linear

        if not is_linear(net.activation):
            from .residual_nnlo import residual_nnlo

            return residual_nnlo(net, xs, stacklevel=4)
        from .linear_residual import linear_residual_orders

        orders = linear_residual_orders(net, xs)
        check_second_order_range(orders["K"])          # (the chain's own kernel: no second flow)
        out = {k: v.reshape(net.L) for k, v in orders.items()}
        caveats = second_order_caveats(net, out)
        emit(caveats, stacklevel=3)
        return NNLO(net=net, x=xs, caveats=caveats, **out)
    if xs.shape[0] != 1:
        from .nnlo_inputs import several_input_statistics

        return several_input_statistics(net, xs, stacklevel=4)
    K = kernel_flow(net, xs).K[:, 0, 0]
    check_second_order_range(K)
    L = K.shape[0]
    out = {k: np.zeros(L) for k in ("G1", "V", "G2", "V1", "U")}
    if L > 1:
        a = nnlo_averages(net.activation, K[:-1])
        bad = [k for k, v in a.items() if not np.all(np.isfinite(v))]
        if bad:
            l = int(np.argmax(~np.all(np.isfinite(np.stack([a[k] for k in bad])), axis=0))) + 1
            raise DivergentFlowError(f"the Gaussian averages of the 1/n^2 recursions are not finite at layer l = {l} "
                                     f"(K = {K[l - 1]:.3g}): {net.activation.name}'s powers overflow there; scale the "
                                     "input down or move C_W, C_b toward criticality", layer=l)
    for l in range(1, L):    # layer l -> l + 1
        C = net.step(l + 1).C_W
        r = net.width_ratio(l)
        i = l - 1
        p1, p2, p3, p4 = (C * a[k][i] for k in ("g1", "g2", "g3", "g4"))
        v, v1, v2, w = (a[k][i] for k in ("v", "v1", "v2", "w"))
        G1, V, G2, V1, U = (out[k][i] for k in ("G1", "V", "G2", "V1", "U"))
        with np.errstate(over="ignore", invalid="ignore"):
            new = {
                "G1": r * (p1 * G1 + 0.5 * p2 * V),
                "V": C * C * v + r * p1 * p1 * V,
                "U": C**3 * w + 3.0 * r * C * C * p1 * v1 * V + r * r * (p1**3 * U + 3.0 * p1 * p1 * p2 * V * V),
                "V1": r * C * C * (v1 * G1 + 0.5 * v2 * V)
                + r * r * (p1 * p1 * V1 + 2.0 * p1 * p2 * G1 * V + p1 * p2 * U + (0.5 * p2 * p2 + p1 * p3) * V * V),
                "G2": r * r * (p1 * G2 + 0.5 * p2 * (V1 + G1 * G1) + 0.5 * p3 * G1 * V + p3 * U / 6.0
                               + 0.125 * p4 * V * V),
            }
        bad = [k for k, v_ in new.items() if not np.isfinite(v_) or abs(v_) > 1e300]
        if bad:
            raise DivergentFlowError(f"the 1/n^2 statistic(s) {', '.join(bad)} leave float64's range at layer l = "
                                     f"{l + 1}: move C_W, C_b toward criticality (pdlt.criticality) or reduce the "
                                     "depth", layer=l + 1)
        for k, v_ in new.items():
            out[k][l] = v_
    caveats = second_order_caveats(net, out)
    emit(caveats, stacklevel=3)
    return NNLO(net=net, x=xs, K=K, caveats=caveats, **out)


def second_order_caveats(net: MLP, out: dict) -> tuple:
    """A ``"truncation"`` caveat at the first layer where the 1/n^2 term of ``E z^2`` or ``Var G`` is not small
    against the 1/n term (``|G2|/(n |G1|)`` or ``|V1|/(n |V|)`` above :data:`pdlt.errors.TRUNCATION_THRESHOLD`): the
    series is not controlled there, and the orders beyond 1/n^2 may be as large as the last one kept."""
    for l in range(3, net.L + 1):
        n, i = float(net.widths[l - 1]), l - 1
        ratios = [abs(out[b][i]) / (n * abs(out[a][i])) for a, b in (("G1", "G2"), ("V", "V1")) if out[a][i] != 0]
        if ratios and max(ratios) > TRUNCATION_THRESHOLD:
            r = max(ratios)
            return (Caveat("truncation", f"the 1/n^2 term is {r:.3g} of the 1/n term at layer l = {l} (threshold "
                                         f"{TRUNCATION_THRESHOLD}): the 1/n series is not controlled there and the "
                                         "orders beyond 1/n^2 may be as large; use pdlt.all_orders (every order, one "
                                         "input) or widen the network", l, float(r)),)
    return ()

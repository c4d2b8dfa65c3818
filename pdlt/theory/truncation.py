r"""The truncation error of the O(1/n) predictions: the computed next order where it exists, a derived bound elsewhere.

The O(1/n) prediction of an observable at layer l is ``T0 + T1`` (``T1`` its O(1/n) part: ``G1/n`` for the two-point
function, the whole value for the four-point functions and the normalized vertex); the truth differs by
``T2 + R3`` (``T2`` the O(1/n^2) term, ``R3`` the rest). :func:`truncation_error` returns, entry by entry, an
estimate of ``|truth - prediction|`` that :func:`pdlt.compare` uses as its allowance:

* **the derived bound** (every entry): ``c * max|T1|`` over the layer's entries, with ``c`` = :func:`next_order_factor`
  bounding (next orders)/(first order) through the relative variance of the metric (derivations/README.md section 14:
  proved for the scale-invariant class, ``(e^S - 1 - S)/S``; ``s e^s`` for the others, checked);
* **the computed next order** (every entry for 2 to 4 inputs, from :func:`pdlt.theory.nnlo_inputs.nnlo_inputs`;
  otherwise the one-input entries ``aa``, ``aaaa`` and the per-input normalized observables; activations that are
  smooth or scale-invariant, the one-input entries of residual networks too through
  :mod:`pdlt.theory.residual_nnlo`): ``|T2| + c^2 |T1|`` with ``T2`` the O(1/n^2) term (for one-input entries
  :func:`pdlt.nnlo` of input a alone: a diagonal entry of a d-input network is the one-input value) and ``c^2 |T1|``
  bounding the rest (for entries of several inputs, whose signs mix, ``c^2 s_e max(|T1|/s)`` with ``s_e = prod
  sqrt(K_aa)`` over the entry's indices: the layer's largest first-order term at the entry's own scale)
  ``R3`` (for the bias-free scale-invariant class ``R3 <= e^S - 1 - S - S^2/2 <= c^2 S`` is exact, and as c is proved
  for that class the allowance there is ``min(c max|T1|, |T2| + c^2 |T1|)``; otherwise it is the same analogy as c
  itself, checked against the all-orders closure: derivations/README.md section 14 gives the grid, where the largest
  ratio is 0.995, and the cases outside it that exceed the allowance by up to 9 % of it, ~1e-5 of the value);
* the other entries of a layer with computed entries get ``c_l max|T1|`` with ``c_l = max(c, (|T2| + c^2|T1|)/|T1|)``
  over the computed entries (:func:`layer_factor`): where the next order is larger than c predicts (the half-stable
  class: swish at criticality has ``T2/T1 ~ 1.3 s``), the layer's bound follows it. Layers 1-2 (exact at O(1/n))
  get 0.

Where ``c_l >= 1`` the series is not controlled (``nu l/n`` of order 1): :func:`pdlt.compare` then calls every row of
the layer NOT RESOLVED, whatever the numbers.

**NTK observables** (:func:`ntk_truncation_error`): the exact error where an exact chain gives the truth (deep
linear networks, every statistic but the dNTK's and ddNTKs'; bias-free ReLU networks, the one-input entries of the
NTK mean and variance and of A, B, D, F); for smooth activations of plain MLPs the same one-input entries, and those
of the dNTK's P, Q and ``dntk_relative`` (deep linear networks included), get the computed next order
(:func:`pdlt.theory.ntk_nnlo.ntk_nnlo`, the dNTK from a fourth copy) plus a bound on the rest, :func:`with_rest` with
``c = s e^s`` of :func:`ntk_expansion_parameter` (derivations/README.md section 17.2), where c < 1; the other entries
of ``ntk_mean``, A, B, D, F, P, Q (those of several inputs) get the derived bound ``c_l M`` of
:func:`_derived_ntk_error` where the layer's NTK variance (and for P, Q their one-input entries) has a known error to
calibrate it; 0 at layers 1-2; unknown elsewhere: the ddNTK statistics, kinked activations but bias-free ReLU
(ReLU with biases, leaky ReLU), residual networks but the deep linear ones (:meth:`pdlt.theory.ntk.NTK.truncation_error`
raises there, and :func:`pdlt.compare` calls those rows NOT RESOLVED).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..observables import get as get_observable

__all__ = ["first_order_term", "expansion_parameter", "undiluted_parameter", "next_order_bound", "next_order_factor",
           "next_order", "truncation_error", "layer_factor", "truncation_estimate", "set_one_input_orders",
           "exact_ntk_chain", "ntk_truncation_error", "ntk_first_order_term", "ntk_expansion_parameter",
           "ntk_second_order", "set_ntk_second_order", "with_rest"]

# c above this is "not controlled" anyway (every row of the layer is NOT RESOLVED); the cap only keeps the stored
# allowance finite for absurd parameters
_C_MAX = 1e6


# entries of the O(1/n) term below this many ulps of the layer's scale (K, or K^2 for four-point functions) are
# round-off of an exact zero (e.g. G1 = 0 for ReLU at C_b = 0): they are set to 0, so that such rows test the
# leading order with no allowance instead of reading "not resolved" or passing on an allowance of 1e-17
_ROUNDOFF_ULPS = 64


def first_order_term(theory, quantity: str, l: int) -> np.ndarray:
    """The O(1/n) part of the prediction at layer l (G1/n, or the four-point prediction itself), with round-off
    of exact zeros set to 0 (relative to K^p, p the observable's scale power)."""
    power = get_observable(quantity).scale_power
    if quantity == "two_point":
        term = np.array(theory.G1[l - 1] / theory.net.widths[l - 1], dtype=np.float64)
    else:
        term = np.array(getattr(theory, quantity)(l), dtype=np.float64)
    scale = float(np.max(np.abs(np.diagonal(theory.K[l - 1])))) ** power
    term[np.abs(term) <= _ROUNDOFF_ULPS * np.finfo(np.float64).eps * scale] = 0.0
    return term


def _diag(theory, l: int):
    """``(K_aa, V_(aa)(aa)/(n_{l-1} K_aa^2))`` at layer l, shape ``(d,)`` each (s = 0 where K_aa = 0)."""
    K = np.array(np.diagonal(theory.K[l - 1]), dtype=np.float64)
    ar = np.arange(K.shape[0])
    V = theory.V[l - 1][ar, ar, ar, ar]
    s = np.zeros_like(K)
    pos = K > 0
    s[pos] = np.abs(V[pos]) / (theory.net.widths[l - 1] * K[pos] ** 2)
    return K, s


def expansion_parameter(theory, l: int) -> float:
    """``s_l = max_a V_(aa)(aa) / (n_{l-1} K_aa^2)``: the relative variance of the metric at layer l (``nu l/n`` at
    criticality)."""
    return float(np.max(_diag(theory, l)[1]))


def undiluted_parameter(theory, l: int) -> float:
    """``S_l = sum_{l'<l} nu/n_l'`` of a scale-invariant network, from the theory: ``S' = S + (s' - rho s)/rho``
    with ``rho = ((K' - C_b')/K')^2`` (the bias's dilution undone; ``S = s`` at C_b = 0). Max over inputs."""
    S = None
    for k in range(2, l + 1):
        K_prev, s_prev = _diag(theory, k - 1)
        K, s = _diag(theory, k)
        S = np.zeros_like(K) if S is None else S
        Cb = float(theory.net.C_b[k - 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(K > 0, ((K - Cb) / np.where(K > 0, K, 1.0)) ** 2, 0.0)
            step = np.where(rho > 0, (s - rho * s_prev) / np.where(rho > 0, rho, 1.0), 0.0)
        # rho = 0: nothing of the previous layer propagates (C_W = 0); the chain restarts
        S = np.where(rho > 0, S + np.maximum(step, 0.0), 0.0)
    return 0.0 if S is None else float(np.max(S))


def next_order_bound(x: float, exact_chain: bool = False) -> float:
    """Bound c on |next orders| / |O(1/n) term| (module docstring): ``(e^S - 1 - S)/S`` for the scale-invariant
    class (``exact_chain``, x = S), else ``s e^s`` (x = s). Capped at 1e6 (any c >= 1 already makes the layer's
    rows NOT RESOLVED)."""
    x = abs(float(x))
    if x > 12:  # both bounds exceed 1e4 there
        return _C_MAX
    if exact_chain:
        return (math.expm1(x) - x) / x if x > 0 else 0.0
    return min(_C_MAX, x * math.exp(x))


def next_order_factor(theory, quantity: str, l: int) -> float:
    """The bound c on |next orders| / |O(1/n) term| of a quantity at layer l (module docstring); 0 where the
    O(1/n) prediction is exact: layers 1-2, and the two-point function of a scale-invariant activation
    (``E[G'] = C_b + C_W A_2 E[G]`` exactly, so ``E z z = K`` at every order).

    The normalized observables ``V_(aa)(aa)/(n K_aa^2)`` (and the kurtosis, 3 times it) divide by ``(E z_a^2)^2``,
    whose own 1/n term ``g_a = |G1_aa|/(n K_aa)`` enters: with ``Var G = T1 (1 + e)``, ``|e| <= c_4`` (the four-point
    bound) and ``E G = K (1 + b)``, ``|b| <= g_a (1 + c_2)`` (the two-point bound),
    ``|truth/T1 - 1| <= (1 + c_4)/(1 - g_a (1 + c_2))^2 - 1``, the largest over inputs."""
    if quantity in ("normalized_vertex", "kurtosis"):
        c4, c2 = _component_factor(theory, "four_point", l), _component_factor(theory, "two_point", l)
        if c4 == 0:
            return 0.0
        from ..errors import PdltError

        n = float(theory.net.widths[l - 1])
        K = np.abs(np.diagonal(theory.K[l - 1]))
        try:
            G1 = np.abs(np.diagonal(theory.G1[l - 1]))
        except PdltError:           # G1 not computed (some residual networks): the denominator is not bounded
            return _C_MAX
        g = np.divide(G1, n * K, out=np.zeros_like(K), where=K > 0) * (1.0 + c2)
        if np.any(g >= 1):
            return _C_MAX
        return float(min(_C_MAX, np.max((1.0 + c4) / (1.0 - g) ** 2 - 1.0)))
    return _component_factor(theory, quantity, l)


def _component_factor(theory, quantity: str, l: int) -> float:
    if getattr(theory.net, "residual", False):
        # layer 2 is exact at O(1/n) for residual steps too (derivations/residual.py); beyond it neither exactness
        # rule below holds (a shortcut gives scale-invariant nets a G1 and odd cumulants): the generic s e^s bound,
        # flagged by a caveat in compare
        return 0.0 if l <= 2 else next_order_bound(expansion_parameter(theory, l))
    scale_invariant = getattr(theory.net.activation, "scale_invariant", False)
    if l <= 2:
        return 0.0
    if scale_invariant:
        # (the two-point function too: E[z_a^2] = K_aa exactly, the one-input chain being affine in G, and
        # truncation_estimate keeps those entries at 0; but <sigma_a sigma_b> is not linear in G_ab, so the
        # off-diagonal entries have G1 and G2, bounded like the class's four-point function, not by s e^s)
        return next_order_bound(undiluted_parameter(theory, l), exact_chain=True)
    return next_order_bound(expansion_parameter(theory, l))


#: where the one-input statistics of a theory are kept (on the theory object itself)
_ORDERS_KEY = "_pdlt_one_input_orders"


def set_one_input_orders(theory, orders: list) -> None:
    """Use ``orders`` (one :class:`pdlt.NNLO` per input of ``theory``) as its next order instead of computing them."""
    theory.__dict__[_ORDERS_KEY] = {"value": list(orders)}


def _kept(theory, key: str, compute):
    """``compute()`` once per theory, kept on the theory object under ``key``; None where it raises a pdlt error. Its
    warnings are silenced: the theory carries its own caveats, and a next order is only an estimate of its error here
    (a residual chain's mode truncation, <= 1e-4 of it, included)."""
    cache = theory.__dict__.setdefault(key, {})
    if "value" not in cache:
        from ..errors import PdltError, PdltWarning

        cache["value"] = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PdltWarning)
                cache["value"] = compute()
        except PdltError:
            pass
    return cache["value"]


def _one_input_orders(theory) -> list | None:
    """:func:`pdlt.nnlo` of each input alone (cached on the theory), or None where it does not apply (kinked
    activations that are not scale-invariant, residual chains that do not converge in their modes, statistics that
    leave float64's range)."""
    from .nnlo import nnlo

    return _kept(theory, _ORDERS_KEY, lambda: [nnlo(theory.net, xa) for xa in np.asarray(theory.x, dtype=np.float64)])


#: where the several-input statistics of a theory are kept (on the theory object itself)
_SEVERAL_KEY = "_pdlt_several_input_orders"


def _several_input_orders(theory):
    """:func:`pdlt.theory.nnlo_inputs.nnlo_inputs` of all the theory's inputs (2 to 4 of them; cached on the theory),
    or None where it does not apply (one input or more than 4, residual steps, kinked activations that are not
    scale-invariant, inputs too collinear for a kinked activation, statistics out of float64's range)."""
    from .nnlo_inputs import MAX_INPUTS, nnlo_inputs

    xs = np.asarray(theory.x, dtype=np.float64)
    return _kept(theory, _SEVERAL_KEY, lambda: nnlo_inputs(theory.net, xs) if 2 <= xs.shape[0] <= MAX_INPUTS else None)


def next_order(theory, quantity: str, l: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T2, computed)``: the O(1/n^2) term of ``quantity`` at layer l (observable's shape) where it is computed
    (``computed`` True: every entry of 2 to 4 inputs, one-input entries otherwise; module docstring), 0 elsewhere."""
    obs = get_observable(quantity)
    theory.net._check_layer(l)
    d = np.asarray(theory.x).shape[0]
    shape = obs.shape(d)
    T2, known = np.zeros(shape), np.zeros(shape, dtype=bool)
    several = _several_input_orders(theory) if quantity in _SECOND_ORDER else None
    if several is not None:
        i, n = l - 1, float(theory.net.widths[l - 1])
        if quantity in _SECOND_ORDER_TENSOR:
            T2 = _SECOND_ORDER_TENSOR[quantity](n, several.G2[i], several.V1[i])
        else:                                          # per-input normalized observables: each input's entries
            ar = np.arange(d)
            T2 = np.array([_SECOND_ORDER[quantity](n, several.K[i][a, a], several.G1[i][a, a],
                                                   several.V[i][a, a, a, a], several.G2[i][a, a],
                                                   several.V1[i][a, a, a, a]) for a in ar]).reshape(shape)
        return T2, np.ones(shape, dtype=bool)
    orders = _one_input_orders(theory)
    if orders is None or quantity not in _SECOND_ORDER:
        return T2, known
    n = float(theory.net.widths[l - 1])
    for a, pt in enumerate(orders):
        i = l - 1
        idx = (a,) * len(shape)
        T2[idx] = _SECOND_ORDER[quantity](n, pt.K[i], pt.G1[i], pt.V[i], pt.G2[i], pt.V1[i])
        known[idx] = True
    return T2, known


#: the O(1/n^2) term of each observable's one-input entry from the one-input statistics at layer l (n = n_{l-1})
_SECOND_ORDER = {
    "two_point": lambda n, K, G1, V, G2, V1: G2 / n**2,
    "four_point": lambda n, K, G1, V, G2, V1: V1 / n**2,
    "four_point_single": lambda n, K, G1, V, G2, V1: 3 * V1 / n**2,
    "vertex": lambda n, K, G1, V, G2, V1: V1 / n,
    "normalized_vertex": lambda n, K, G1, V, G2, V1: (V1 - 2 * V * G1 / K) / (n * n * K * K) if K > 0 else 0.0,
    "kurtosis": lambda n, K, G1, V, G2, V1: 3 * (V1 - 2 * V * G1 / K) / (n * n * K * K) if K > 0 else 0.0,
}


#: the O(1/n^2) term of each tensor observable from the several-input statistics at layer l (n = n_{l-1})
_SECOND_ORDER_TENSOR = {
    "two_point": lambda n, G2, V1: G2 / n**2,
    "four_point": lambda n, G2, V1: V1 / n**2,
    "four_point_single": lambda n, G2, V1: (V1 + V1.transpose(0, 2, 1, 3) + V1.transpose(0, 3, 2, 1)) / n**2,
    "vertex": lambda n, G2, V1: V1 / n,
}


def truncation_estimate(theory, quantity: str, l: int, computed: bool = True) -> tuple[np.ndarray, float]:
    """``(truncation error per entry, layer factor c_l)`` of ``quantity`` at layer l in one pass (module docstring;
    :func:`truncation_error` and :func:`layer_factor` are its two halves). ``computed=False`` skips the next order:
    the derived bound only, no :func:`pdlt.nnlo` runs. Every observable is one expansion in the metric's
    fluctuations, so a layer whose four-point series is not controlled (its c_l >= 1) is not controlled for any of
    them: the returned factor is at least the four-point function's (a two-point T2 that happens to be small where
    the series is not controlled must not pass a row; swish off criticality shows it)."""
    out, factor = _estimate(theory, quantity, l, computed)
    if _proved(theory) and quantity == "two_point":
        out[_single_input_entries(out.shape)] = 0.0        # E[z_a^2] = K_aa at every order (affine chain)
    if quantity != "four_point" and factor < 1 and not getattr(theory.net, "residual", False):
        factor = max(factor, _estimate(theory, "four_point", l, computed)[1])
    return out, factor


def _estimate(theory, quantity: str, l: int, computed: bool) -> tuple[np.ndarray, float]:
    """:func:`truncation_estimate` of one observable alone."""
    theory.net._check_layer(l)
    T1 = first_order_term(theory, quantity, l)
    c = next_order_factor(theory, quantity, l)
    first = float(np.abs(T1).max()) if T1.size else 0.0
    if first == 0 or c == 0:
        return np.zeros(T1.shape), 0.0
    if c >= 1 or not computed:
        return np.full(T1.shape, c * first), c
    T2, known = next_order(theory, quantity, l)
    # round-off of an exact zero (ReLU's diagonal G2) as in first_order_term
    power = get_observable(quantity).scale_power
    T2 = np.where(np.abs(T2) <= _ROUNDOFF_ULPS * np.finfo(np.float64).eps
                  * float(np.max(np.abs(np.diagonal(theory.K[l - 1])))) ** power, 0.0, T2)
    single = _single_input_entries(T1.shape)
    mixed = known & ~single
    estimate = with_rest(T2, T1, c)
    if mixed.any():
        # entries of several inputs mix signs: an entry's T2 can nearly cancel while its rest does not (the exact deep
        # linear chain shows it), so their rest is bounded at the entry's natural scale s_e = prod sqrt(K_aa) over its
        # indices, times the layer's largest |T1|/s: c^2 s_e max(|T1|/s) (inputs of different sizes keep their own)
        scale = _natural_scale(theory, l, T1.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, np.abs(T1) / np.where(scale > 0, scale, 1.0), 0.0)
        first_e = scale[mixed] * float(ratio.max())          # the layer's largest first-order term at this scale
        estimate[mixed] = with_rest(T2[mixed], first_e, c)
    if _proved(theory):
        # c is proved for this class, one input at a time: the computed next order can only tighten a one-input
        # entry's allowance; the others keep their estimate (the proof does not cover them)
        out = np.full(T1.shape, c * first)
        out[known & single] = np.minimum(c * first, estimate[known & single])
        out[mixed] = estimate[mixed]
        factor = max(c, float(np.max(estimate[mixed])) / first) if mixed.any() else c
        return out, factor
    # relative to the layer's largest first-order term, like the bound it raises (an entry whose own T1 happens to
    # be small must not blow the layer's factor up)
    factor = max(c, float(np.max(estimate[known])) / first) if known.any() else c
    out = np.full(T1.shape, min(factor, _C_MAX) * first)
    out[known] = estimate[known]
    return out, factor


def with_rest(T2, T1, c: float):
    """The truncation error of a prediction whose next order ``T2`` is computed: ``|T2|`` plus a bound on the orders
    beyond, ``c^2 |T1|`` (c the bound on next orders / first order). Where ``|T2| > c |T1|`` the bound c is contradicted
    and ``c^2 |T1|`` cannot bound the rest (swish off criticality: T2/T1 ~ 0.3-0.5 against c ~ 0.1-0.2, rest ~ 0.2
    T1); a series whose terms shrink by at least 1/2 (the TRUNCATION_THRESHOLD of the caveats) has a rest below its
    last term, so the rest is |T2| there."""
    T2, T1 = np.abs(T2), np.abs(T1)
    return np.where(T2 > c * T1, 2 * T2, T2) + c * c * T1


def _single_input_entries(shape) -> np.ndarray:
    """Entries whose indices are all one input (``aa``, ``aaaa``; every entry of the per-input observables)."""
    if len(shape) <= 1:
        return np.ones(shape, dtype=bool)
    idx = np.indices(shape)
    return np.all(idx == idx[0], axis=0)


def _natural_scale(theory, l: int, shape) -> np.ndarray:
    """``prod sqrt(K_aa)`` over an entry's indices at layer l (the size an entry of that order can have)."""
    root = np.sqrt(np.maximum(np.diagonal(np.asarray(theory.K[l - 1], dtype=np.float64)), 0.0))
    out = np.ones(shape)
    if len(shape) > 1:                          # (the per-input observables have one-input entries only)
        for k in np.indices(shape):
            out = out * root[k]
    return out


def _proved(theory) -> bool:
    """The scale-invariant class of a plain MLP, whose c is proved (derivations/README.md section 14: any widths and
    biases)."""
    return getattr(theory.net.activation, "scale_invariant", False) and not getattr(theory.net, "residual", False)


def truncation_error(theory, quantity: str, l: int, computed: bool = True) -> np.ndarray:
    """Estimated ``|truth - O(1/n) prediction|`` of ``quantity`` at layer l, entry by entry (the observable's shape;
    module docstring): the computed next order plus a bound on the rest where the next order is computed, the
    layer's bound ``c_l max|T1|`` elsewhere (:func:`layer_factor`), 0 where the O(1/n) prediction is exact.
    ``computed=False``: the derived bound ``c max|T1|`` only (no :func:`pdlt.nnlo` runs)."""
    return truncation_estimate(theory, quantity, l, computed)[0]


def layer_factor(theory, quantity: str, l: int, computed: bool = True) -> float:
    """``c_l = max(c, (|T2| + c^2 |T1|)/|T1| over the computed entries)``: the bound on (next orders)/(first order)
    of the layer, raised to what the computed next order shows (module docstring); the series is controlled where it
    is below 1."""
    return truncation_estimate(theory, quantity, l, computed)[1]


# ---------------------------------------------------------------------------------------------------
# NTK observables: the truncation error where an exact chain gives it
# ---------------------------------------------------------------------------------------------------

#: NTK observables that the exact chain of deep linear networks gives (every entry)
_LINEAR_NTK_EXACT = ("ntk_mean", "A", "B", "D", "F", "ntk_variance", "ntk_relative_variance")

#: NTK observables that the exact chain of bias-free ReLU networks gives (the entries of one input: ``ntk_mean``'s
#: diagonal, the NTK variance, and the entries with all four indices equal of A, B, D, F)
_RELU_NTK_EXACT = ("ntk_mean", "ntk_variance", "ntk_relative_variance", "A", "B", "D", "F")

#: where the exact NTK chain of a theory is kept (on the theory object itself)
_NTK_CHAIN_KEY = "_pdlt_exact_ntk_chain"


def exact_ntk_chain(theory):
    """The exact NTK chain of an NTK theory's network (computed once, kept on the theory), or None where none
    applies: deep linear networks (:func:`pdlt.theory.linear_residual.linear_ntk_all_orders`), bias-free ReLU
    networks (:func:`pdlt.theory.relu_ntk.relu_ntk_all_orders`)."""
    cache = theory.__dict__.setdefault(_NTK_CHAIN_KEY, {})
    if "value" not in cache:
        from ..errors import PdltError
        from .wishart import is_linear

        cache["value"], net = None, theory.net
        slopes = getattr(net.activation, "slopes", None)
        try:
            if is_linear(net.activation):
                from .linear_residual import linear_ntk_all_orders

                cache["value"] = linear_ntk_all_orders(net, theory.x, theory.lambda_b, theory.lambda_W)
            elif slopes is not None:            # (relu_ntk_all_orders refuses what its chain does not cover)
                from .relu_ntk import relu_ntk_all_orders

                cache["value"] = relu_ntk_all_orders(net, theory.x, theory.lambda_b, theory.lambda_W)
        except PdltError:
            pass
    return cache["value"]


def ntk_first_order_term(theory, quantity: str, l: int) -> np.ndarray:
    """The O(1/n) part of an NTK prediction at layer l: ``Theta1/n`` for ``ntk_mean``, else the whole value."""
    if quantity == "ntk_mean":
        return np.array(theory.Theta1[l - 1] / theory.net.widths[l - 1], dtype=np.float64)
    return np.array(theory.prediction(quantity, l), dtype=np.float64)


def ntk_expansion_parameter(theory, l: int) -> float:
    """``s = max_a max(V_aaaa/(n K_aa^2), (A + 2B)_aaaa/(n Theta_aa^2))`` at layer l (``n = n_{l-1}``): the larger of
    the metric's and the NTK's relative variance, the two fluctuations an NTK statistic is expanded in."""
    from .ntk import diagonal_ratio

    st, i = theory.statistics, l - 1
    n = float(theory.net.widths[i])
    ar = np.arange(st.K.shape[-1])
    K2, V = np.diagonal(st.K[i]) ** 2, st.V[i][ar, ar, ar, ar]
    metric = np.divide(V, n * K2, out=np.zeros_like(V), where=K2 > 0)
    return float(max(np.max(np.abs(metric)), np.max(np.abs(diagonal_ratio(st.A[i], st.B[i], st.Theta[i], n)))))


#: where the 1/n^2 NTK statistics of a theory are kept (on the theory object itself)
_NTK_ORDERS_KEY = "_pdlt_ntk_second_order"


def set_ntk_second_order(theory, second) -> None:
    """Use ``second`` (a :class:`pdlt.theory.ntk_nnlo.NTKSecondOrder` of the theory's network, inputs and learning
    rates) as its NTK next order instead of computing it (kept as :func:`ntk_second_order` keeps its own)."""
    theory.__dict__[_NTK_ORDERS_KEY + ("_dntk" if second.P is not None else "")] = {"value": second}


def ntk_second_order(theory, dntk: bool = False):
    """:func:`pdlt.theory.ntk_nnlo.ntk_nnlo` of the theory's network, inputs and learning rates (computed once, kept
    on the theory; ``dntk``: with the dNTK's P and Q, from four copies), or None where it does not apply (kinked
    activations, residual networks, statistics out of float64's range)."""
    from .ntk_nnlo import ntk_nnlo

    three = theory.__dict__.get(_NTK_ORDERS_KEY, {})
    four = theory.__dict__.get(_NTK_ORDERS_KEY + "_dntk", {})
    if not dntk and "value" not in three and four.get("value") is not None:
        return four["value"]                          # (the four copies' chain holds the three copies' statistics)
    if dntk and "value" in three and three["value"] is None:
        return None                                   # (where three copies fail, so do four: they hold them)
    return _kept(theory, _NTK_ORDERS_KEY + ("_dntk" if dntk else ""),
                 lambda: ntk_nnlo(theory.net, theory.x, theory.lambda_b, theory.lambda_W, dntk=dntk))


def _computed_ntk_error(theory, quantity: str, l: int, err: np.ndarray, known: np.ndarray):
    """:func:`ntk_truncation_error` from the computed next order (smooth activations of plain MLPs, the one-input
    entries; the dNTK's from the four copies' chain): ``with_rest(T2, T1, c)`` with ``c = s e^s`` of
    :func:`ntk_expansion_parameter`; unknown where c >= 1 (the series is not controlled). An estimate can exceed its
    entry's own O(1/n) term (A of tanh at n = 6, l = 4: ``A2/(n A) = 1.2``, while the NTK variance's next order is 0.25
    of its first): :func:`pdlt.compare` calls such a row NOT RESOLVED."""
    from .ntk_nnlo import DNTK_QUANTITIES, NTK_NEXT_ORDER

    if quantity not in NTK_NEXT_ORDER:
        return err, known
    c = next_order_bound(ntk_expansion_parameter(theory, l))
    so = ntk_second_order(theory, dntk=quantity in DNTK_QUANTITIES) if c < 1 else None
    if so is None:
        return err, known
    T1, T2 = ntk_first_order_term(theory, quantity, l), so.next_order(quantity, l)
    for a in range(T2.size):
        idx = (a,) * len(err.shape)
        err[idx], known[idx] = float(with_rest(T2[a], T1[idx], c)), True
    return err, known


def ntk_truncation_error(theory, quantity: str, l: int) -> tuple[np.ndarray, np.ndarray]:
    """``(error, known)`` in the observable's shape, and where it is known (module docstring): the exact or computed
    error where :func:`_ntk_known_error` gives it, and the derived bound of :func:`_derived_ntk_error` on the other
    entries of ``ntk_mean``, A, B, D, F, P, Q (those of several inputs). Unknown: the ddNTK statistics, layers
    whose NTK variance has no known error (kinked activations but bias-free ReLU, residual networks but the deep
    linear ones), whose bound is 1 or more (not controlled), or where the quantity's first-order size vanishes."""
    err, known = _ntk_known_error(theory, quantity, l)
    if l <= 2 or known.all() or quantity not in _NTK_GROUPS:
        return err, known
    return _derived_ntk_error(theory, quantity, l, err, known)


#: the NTK observables the derived bound covers, each with the observables whose first-order terms set its scale
#: (:func:`_derived_ntk_error`). A's and D's own first-order size does not bound their next order: against the exact
#: deep linear chain A's error reaches 5.7 c max|A1| (one input, n = 64, C_b = 0.1) and D's 1.65 c max|D1|, and the
#: sampled A of a residual tanh network misses by 2 c max|A1|; their next order follows the whole fluctuation, and
#: measured on A + 2B and D + 2F it stays below 0.42 c M on the same grids. B and F keep their own scale (B up to
#: 0.998 c M for bias-dominated kernels without bias learning rates, F 0.66). The dNTK's P and Q cross zero with the
#: layer while their next order does not (the computed one-input P2/n reaches 320 c max|P1|, Q2/n 280 c max|Q1|, over
#: 360 random smooth networks), and each is measured against the whole dNTK, max|P1| + 2 max|Q1| and max|Q1| +
#: 2 max|P1|, where those next orders stay below 0.42 and 0.69 of c M. These are measured choices, checked by
#: tests/theory/test_ntk_derived_bound.py, not derived
_NTK_GROUPS = {"ntk_mean": ("ntk_mean",), "A": ("A", "B"), "B": ("B",), "D": ("D", "F"), "F": ("F",),
               "P": ("P", "Q"), "Q": ("Q", "P")}


def _derived_ntk_error(theory, quantity: str, l: int, err: np.ndarray, known: np.ndarray):
    """The derived bound on the entries of ``quantity`` at layer l that :func:`_ntk_known_error` leaves unknown:
    ``c_l M``. ``M`` is the first-order size of the quantity at the layer (:data:`_NTK_GROUPS`): ``max|A1| +
    2 max|B1|`` for A, ``max|D1| + 2 max|F1|`` for D, ``max|P1| + 2 max|Q1|`` for P, ``max|Q1| + 2 max|P1|`` for Q,
    ``max|T1|`` for the others. ``c_l`` is the larger of ``c = s e^s`` (:func:`ntk_expansion_parameter`) and what the
    layer's known entries show: (their error)/M, and (the NTK variance's error)/(its largest first-order term), as the
    layer factor of the preactivations (:func:`layer_factor`).

    The bound needs that calibration: it is given only where the layer's NTK variance has a known error (smooth
    activations of plain MLPs through the computed next order, bias-free ReLU networks through their exact chain), and
    for P and Q where their own one-input entries have it (smooth activations of plain MLPs: the four copies).
    ``s`` alone is not a bound: where the kernel settles to a fixed point the fluctuations decay while their next
    order keeps the memory of the layers before (gelu, C_W = 1.5, C_b = 0.05, lambda = (0.7, 1.3), n = 64, one input
    x = 0.9, layer 10: s = 0.031 and the NTK variance's T2/T1 = 0.60). Left unknown too where ``c_l >= 1`` (not
    controlled), where a known error is not finite, and where M vanishes (ReLU's P is 0 at O(1/n) but not at
    O(1/n^2): a vanishing first order says nothing of the next)."""
    var_err, var_known = _ntk_known_error(theory, "ntk_variance", l)
    if not var_known.any() or (quantity in ("P", "Q") and not known.any()):
        return err, known               # (the dNTK's bound is measured where its one-input next order is computed)
    group = _NTK_GROUPS[quantity]
    firsts = {p: float(np.abs(ntk_first_order_term(theory, p, l)).max()) for p in group + ("ntk_variance",)}
    M = firsts[group[0]] + 2 * firsts[group[1]] if len(group) == 2 else firsts[group[0]]
    if not M > _ROUNDOFF_ULPS * np.finfo(np.float64).eps * float(np.abs(theory.prediction(quantity, l)).max()):
        return err, known
    shown = [next_order_bound(ntk_expansion_parameter(theory, l))]
    if firsts["ntk_variance"] > 0:
        shown.append(float(var_err[var_known].max()) / firsts["ntk_variance"])
    if known.any():
        shown.append(float(err[known].max()) / M)
    factor = max(shown)
    if not (np.all(np.isfinite(shown)) and factor < 1):
        return err, known
    return np.where(known, err, factor * M), np.ones_like(known)


def _ntk_known_error(theory, quantity: str, l: int) -> tuple[np.ndarray, np.ndarray]:
    """``(error, known)`` before the derived bound: ``|exact - O(1/n)|`` of the NTK observable ``quantity`` at layer l
    where an exact chain gives it (:func:`exact_ntk_chain`; both terms from the chain, never from the theory under test,
    so that an error in it is not absorbed); for smooth activations of plain MLPs the computed next order of the
    one-input entries plus a bound on the rest (:func:`with_rest`, from :func:`pdlt.theory.ntk_nnlo.ntk_nnlo`: the
    entries ``aa`` of ``ntk_mean``, ``aaaa`` of A, B, D, F, P, Q, and the per-input NTK variance, relative variance and
    ``dntk_relative``) where the series is controlled, deep linear networks' P, Q included. Layers 1-2 are exact at
    O(1/n) for every NTK statistic (error 0). Unknown: the ddNTK statistics, entries of several inputs (but those of a
    deep linear network's NTK statistics), kinked activations but bias-free ReLU, residual networks but the deep linear
    ones, and for the exact chains a relative variance where nothing is trained up to layer l (the computed next order
    gives it error 0)."""
    from .relu_ntk import ReluNTKAllOrders

    shape = np.shape(theory.prediction(quantity, l))
    err, known = np.zeros(shape), np.zeros(shape, dtype=bool)
    if l <= 2:
        return err, ~known
    ex = exact_ntk_chain(theory)
    if ex is None:
        return _computed_ntk_error(theory, quantity, l, err, known)
    i = l - 1
    relu = isinstance(ex, ReluNTKAllOrders)
    if quantity not in (_RELU_NTK_EXACT if relu else _LINEAR_NTK_EXACT):
        return _computed_ntk_error(theory, quantity, l, err, known)     # (the dNTK of a deep linear network)
    for idx in np.ndindex(*shape):
        a = idx[0]
        if quantity == "ntk_mean":
            if relu and idx[0] != idx[1]:
                continue
            e = abs(ex.Theta[i, a] - ex.first_order["ntk_mean"][i, a]) if relu else 0.0   # linear: E H = Theta
        elif quantity in ("ntk_variance", "ntk_relative_variance"):
            e = abs(ex.variance[i, a] - ex.first_order["variance"][i, a])
            if quantity == "ntk_relative_variance":
                T, T0 = (ex.Theta[i, a], ex.series["Theta"][i, a, 0]) if relu else (ex.Theta[i, a, a],) * 2
                if T == 0 or T0 == 0:
                    continue                                   # (nothing trained up to layer l)
                e = abs(ex.variance[i, a] / T**2 - ex.first_order["variance"][i, a] / T0**2) if relu else e / T**2
        elif relu:                                              # A, B, D, F: one input's entries only
            if any(j != a for j in idx):
                continue
            e = abs(getattr(ex, quantity)[i, a] - ex.first_order[quantity][i, a])
        else:
            e = abs(getattr(ex, quantity)[(i,) + idx] - ex.first_order[quantity][(i,) + idx])
        err[idx], known[idx] = float(e), True
    return err, known


"""Leading-order (infinite-width) kernel flow K^(l)_{ab} for a dataset of d inputs.

PDLT eqs. (4.8) and (4.37)/(4.41), generalized to every layer:

    K^(1)_{ab}   = C_b^(1) + C_W^(1) (1/n_0) sum_j x_{j;a} x_{j;b}
    K^(l+1)_{ab} = C_b^(l+1) + C_W^(l+1) <sigma(z_a) sigma(z_b)>_{K^(l)}

and the delta-expansion for two nearby inputs x_{+-} = x_0 +- dx/2 (PDLT section 5.1, gamma basis;
``../shared/formulas.md`` section 3.2), which never needs a (singular) 2x2 kernel:

    K00'   = C_b + C_W g(K00)
    dK1'   = chi_par dK1
    ddK2'  = chi_perp ddK2 + h dK1^2
    ddK0'  = chi_par ddK0 + C_W [ ddK2 <sigma sigma''> + dK1^2 (1/2) d<sigma sigma''>/dK ]

with g, chi_par, chi_perp, h at K00 (:mod:`pdlt.theory.criticality`). The last line is the book's
``C_W dK1^2/(4K^2) <sigma sigma''(z^2-K)>`` rewritten with ``<f (z^2-K)> = 2K^2 d<f>/dK`` so that only
sigma' is needed (kinks and jumps then stay integrable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import gaussian
from .._x64 import enable_x64
from ..activations import Activation
from ..activations import activation as _lookup
from ..architecture import MLP, check_hyper
from ..errors import DivergentFlowError

__all__ = [
    "first_layer_kernel",
    "pair_average",
    "kernel_map",
    "kernel_flow",
    "KernelFlow",
    "gamma_components",
    "from_gamma",
    "delta_flow",
    "DeltaFlow",
]

# products of two kernel entries (closed forms, quadrature) must stay finite: flag well before 1e154
_HUGE = 1e150


def first_layer_kernel(x, C_W: float, C_b: float) -> np.ndarray:
    """``K^(1) = C_b + C_W x x^T / n_0`` for inputs ``x`` of shape ``(d, n_0)``; returns ``(d, d)``."""
    check_hyper(C_W, C_b)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"inputs x must be a finite (d, n_0) array, got shape {x.shape}")
    return C_b + C_W * (x @ x.T) / x.shape[1]


def _pairs_from(f, g, kinks, K, closed):
    """``M_ab = <f(z_a) g(z_b)>_K`` for K of shape (..., d, d); symmetric f == g assumed when g is None."""
    d = K.shape[-1]
    diag = np.diagonal(K, axis1=-2, axis2=-1)  # (..., d)
    if closed is not None:
        return closed(diag[..., :, None], diag[..., None, :], K)
    gg = f if g is None else g
    out = np.empty(K.shape, dtype=np.float64)
    out[..., np.arange(d), np.arange(d)] = gaussian.expect(
        lambda z: f(z[..., 0]) * gg(z[..., 0]), diag[..., None, None], kinks=kinks
    )
    if d > 1:
        ia, ib = np.triu_indices(d, 1)
        sub = np.empty(K.shape[:-2] + (ia.size, 2, 2))
        sub[..., 0, 0] = K[..., ia, ia]
        sub[..., 1, 1] = K[..., ib, ib]
        sub[..., 0, 1] = sub[..., 1, 0] = K[..., ia, ib]
        vals = gaussian.expect(lambda z: f(z[..., 0]) * gg(z[..., 1]), sub, kinks=kinks)
        out[..., ia, ib] = vals
        if g is None:
            out[..., ib, ia] = vals
        else:
            out[..., ib, ia] = gaussian.expect(lambda z: f(z[..., 1]) * gg(z[..., 0]), sub, kinks=kinks)
    return out


def pair_average(act: Activation, K, *, derivative: bool = False) -> np.ndarray:
    """``<sigma(z_a) sigma(z_b)>_K`` (or ``<sigma'(z_a) sigma'(z_b)>_K``) for all pairs a, b.

    ``K``: ``(..., d, d)`` PSD. Uses the activation's closed form when it has one, otherwise float64
    quadrature (:func:`pdlt.gaussian.expect`), split at the activation's kinks.
    """
    enable_x64()
    act = _lookup(act)
    K = gaussian.check_kernel(K)
    if derivative:
        return _pairs_from(act.d1, None, act.kinks, K, act.dpair if act.dpair_map is not None else None)
    return _pairs_from(act, None, act.kinks, K, act.pair if act.pair_map is not None else None)


def kernel_map(act: Activation, K, C_W: float, C_b: float) -> np.ndarray:
    """One layer of the leading-order recursion: ``C_b + C_W <sigma_a sigma_b>_K``, shape of K."""
    check_hyper(C_W, C_b)
    return C_b + C_W * pair_average(act, K)


@dataclass(frozen=True)
class KernelFlow:
    """The leading-order kernel of every layer.

    ``K[l-1]`` is ``K^(l)_{ab}``, shape ``(L, d, d)``; ``x`` the inputs ``(d, n_0)``.
    """

    net: MLP
    x: np.ndarray
    K: np.ndarray

    def __getitem__(self, l: int) -> np.ndarray:
        """``K^(l)`` for layer l = 1..L (PDLT numbering)."""
        self.net._check_layer(l)
        return self.K[l - 1]

    @property
    def L(self) -> int:
        return self.K.shape[0]

    @property
    def d(self) -> int:
        return self.K.shape[-1]

    def correlation(self) -> np.ndarray:
        """``rho_ab = K_ab / sqrt(K_aa K_bb)`` per layer, ``(L, d, d)``. Raises if some K_aa = 0 (a zero
        input without bias), where the correlation is undefined."""
        diag = np.diagonal(self.K, axis1=-2, axis2=-1)
        if np.any(diag <= 0):
            l, a = np.argwhere(diag <= 0)[0]
            raise ValueError(f"correlation undefined: K^({l + 1})_aa = 0 for input a = {a} (zero input and C_b = 0)")
        s = np.sqrt(diag)
        return self.K / (s[..., :, None] * s[..., None, :])


def _check_finite(K, l, what="K"):
    if not np.all(np.isfinite(K)) or np.max(np.abs(K)) > _HUGE:
        raise DivergentFlowError(
            f"the {what} flow diverges at layer l = {l} (|{what}| > {_HUGE:g} or not finite); the network is far "
            "from criticality: lower C_W / C_b, reduce the depth, or use pdlt.criticality(...) for critical values",
            layer=l,
        )


def kernel_flow(net: MLP, x) -> KernelFlow:
    """Iterate the leading-order kernel recursion through all L layers of ``net``.

    ``x``: ``(d, n_0)`` inputs (or ``(n_0,)`` for one). Returns :class:`KernelFlow` with ``K`` of shape
    ``(L, d, d)``. Raises :class:`~pdlt.errors.DivergentFlowError` naming the layer if the flow overflows.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("relu", widths=(2, 100, 100, 1), C_W=2.0, C_b=0.0)
    >>> np.allclose(pdlt.kernel_flow(net, np.ones((1, 2))).K[:, 0, 0], 2.0)
    True
    """
    enable_x64()
    x = net.inputs(x)
    act = net.activation
    Ks = np.empty((net.L, x.shape[0], x.shape[0]))
    C_W, C_b = net.hyper(1)
    K = first_layer_kernel(x, C_W, C_b)
    _check_finite(K, 1)
    Ks[0] = K
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                K = kernel_map(act, K, C_W, C_b)
        except (ValueError, FloatingPointError) as err:
            if isinstance(err, DivergentFlowError):
                raise
            raise DivergentFlowError(f"the kernel flow failed at layer l = {l + 1}: {err}", layer=l + 1) from err
        _check_finite(K, l + 1)
        Ks[l] = K
    return KernelFlow(net=net, x=x, K=Ks)


# ---------------------------------------------------------------------- gamma basis / delta expansion


def gamma_components(K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K_[0], K_[1], K_[2])`` of a two-input kernel ``(..., 2, 2)`` (PDLT gamma basis).

    ``K = K_[0] [[1,1],[1,1]] + K_[1] [[1,0],[0,-1]] + K_[2] [[1,-1],[-1,1]]``, i.e.
    ``K_[0] = (K++ + K-- + 2K+-)/4``, ``K_[1] = (K++ - K--)/2``, ``K_[2] = (K++ + K-- - 2K+-)/4``.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (2, 2):
        raise ValueError(f"the gamma basis is for two inputs: K must have shape (..., 2, 2), got {K.shape}")
    pp, mm, pm = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
    return (pp + mm + 2 * pm) / 4, (pp - mm) / 2, (pp + mm - 2 * pm) / 4


def from_gamma(K0, K1, K2) -> np.ndarray:
    """Inverse of :func:`gamma_components`: the ``(..., 2, 2)`` kernel on inputs (x_+, x_-)."""
    K0, K1, K2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (K0, K1, K2)))
    out = np.empty(K0.shape + (2, 2))
    out[..., 0, 0] = K0 + K1 + K2
    out[..., 1, 1] = K0 - K1 + K2
    out[..., 0, 1] = out[..., 1, 0] = K0 - K2
    return out


@dataclass(frozen=True)
class DeltaFlow:
    """delta-expansion of the kernel of two nearby inputs ``x_{+-} = x_0 +- dx/2``, per layer (shape (L,)).

    ``K00`` is the midpoint kernel; ``dK1`` is O(dx), ``ddK2`` and ``ddK0`` are O(dx^2), so that
    ``K_[0] = K00 + ddK0 + O(dx^4)``, ``K_[1] = dK1 + O(dx^3)``, ``K_[2] = ddK2 + O(dx^4)``.
    """

    net: MLP
    K00: np.ndarray
    dK1: np.ndarray
    ddK2: np.ndarray
    ddK0: np.ndarray

    def kernel(self, l: int, scale: float = 1.0) -> np.ndarray:
        """The 2x2 kernel of layer l on (x_+, x_-) for the separation ``scale * dx`` (to O(dx^2))."""
        self.net._check_layer(l)
        i = l - 1
        return from_gamma(self.K00[i] + scale**2 * self.ddK0[i], scale * self.dK1[i], scale**2 * self.ddK2[i])


def midpoint_and_separation(net: MLP, x0, dx) -> tuple[np.ndarray, np.ndarray]:
    """Validate the midpoint ``x0`` and separation ``dx`` of two nearby inputs ``x0 +- dx/2``: ``(n_0,)`` each."""
    for name, v in (("x0", x0), ("dx", dx)):
        if np.ndim(v) != 1:
            raise ValueError(f"{name} must be one input of shape (n_0,) = ({net.n0},), got shape {np.shape(v)}")
    return net.inputs(x0)[0], net.inputs(dx)[0]


def delta_flow(net: MLP, x0, dx) -> DeltaFlow:
    """Flow the delta-expansion coefficients for inputs ``x_0 +- dx/2`` (PDLT section 5.1).

    ``x0``, ``dx``: ``(n_0,)``. First layer: ``K00 = C_b + C_W x0.x0/n_0``, ``dK1 = C_W x0.dx/n_0``,
    ``ddK2 = C_W dx.dx/(4 n_0)``, ``ddK0 = 0``.

    For smooth activations the neglected terms are O(dx^4) in ``K_[0], K_[2]`` and O(dx^3) in ``K_[1]``. For
    kinked ones (ReLU family) the arc-cosine kernel has a ``|psi|^3`` term, so the remainder of the O(dx^2)
    coefficients is O(|dx|^3) (PDLT section 5.5 treats finite angles exactly; tests check both orders).
    """
    from .criticality import single_input

    enable_x64()
    x0, dx = midpoint_and_separation(net, x0, dx)
    n0 = net.n0
    C_W, C_b = net.hyper(1)
    K00 = [C_b + C_W * x0 @ x0 / n0]
    dK1 = [C_W * x0 @ dx / n0]
    ddK2 = [C_W * dx @ dx / (4 * n0)]
    ddK0 = [0.0]
    for l in range(1, net.L):
        C_W, C_b = net.hyper(l + 1)
        s = single_input(net.activation, K00[-1], C_W)
        K00.append(C_b + C_W * s.g)
        dK1.append(s.chi_par * dK1[-1])
        ddK2.append(s.chi_perp * ddK2[-1] + s.h * dK1[-2] ** 2)
        ddK0.append(s.chi_par * ddK0[-1] + C_W * (ddK2[-2] * s.S + 0.5 * dK1[-2] ** 2 * s.dS))
        _check_finite(np.array([K00[-1], dK1[-1], ddK2[-1], ddK0[-1]]), l + 1, "delta-expansion")
    arr = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    return DeltaFlow(net=net, K00=arr(K00), dK1=arr(dK1), ddK2=arr(ddK2), ddK0=arr(ddK0))

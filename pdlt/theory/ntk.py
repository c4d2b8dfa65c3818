r"""The frozen neural tangent kernel at infinite width (PDLT ch. 8; derivations/README.md section 16).

Learning rates follow PDLT: ``lambda_b^(l)`` for the biases and ``lambda_W^(l) / n_{l-1}`` for the weights of layer
l, so the NTK of outputs i, j on inputs a, b is ``H_{ij;ab} = sum_mu lambda_mu dz_{i;a}/dtheta_mu dz_{j;b}/dtheta_mu``.
At infinite width ``H_{ij;ab} = delta_ij Theta_ab`` with

    Theta^(1)   = lambda_b^(1) + lambda_W^(1) x_a.x_b / n_0,
    Theta^(l+1) = lambda_b + lambda_W <sigma_a sigma_b>_K + C_W <sigma'_a sigma'_b>_K Theta^(l)_ab   (dense step),

each layer step supplying its own map (:mod:`pdlt.layers`: a residual step adds ``gamma^2 Theta`` and scales the
dense part by ``xi^2``). ``chi_perp`` of each step multiplies the NTK's inherited part, so it decides whether
gradients explode or vanish with depth.

At finite width the NTK fluctuates and moves during training. Its O(1/n) statistics (derivations/README.md
sections 17-18; tensor conventions in :mod:`pdlt.theory.ntk_statistics`) are attributes of the same object,
computed on first access: ``Theta1`` ``(L, d, d)`` (the mean NTK is ``Theta + Theta1/n_{l-1}``), the NTK
fluctuations ``A``, ``B``, the NTK-preactivation correlations ``D``, ``F``, the dNTK statistics ``P``, ``Q`` and
the ddNTK statistics ``R``, ``S``, ``T``, ``U``, each ``(L, d, d, d, d)``. Measurable predictions (the
observables of the ``"ntk"`` family in :mod:`pdlt.observables`) come from :meth:`NTK.prediction`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ..architecture import MLP, per_layer
from ..errors import DivergentFlowError, ParameterError
from .kernel import kernel_flow, report_capped, scaled_pair_average

__all__ = ["NTK", "ntk", "learning_rates", "diagonal_ratio", "CriticalLearningRates", "critical_learning_rates"]


def learning_rates(net: MLP, lambda_b=1.0, lambda_W=1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(lambda_b, lambda_W)`` as L floats each (scalars or per-layer sequences, layer l at index l - 1), finite and
    >= 0. All zero (no parameter trained) is a degenerate NTK and raises :class:`ParameterError`."""
    lb = per_layer(lambda_b, net.L, "lambda_b", "a learning rate")
    lw = per_layer(lambda_W, net.L, "lambda_W", "a learning rate")
    if not any(lb) and not any(lw):
        raise ParameterError("lambda_b and lambda_W are 0 at every layer: no parameter is trained and the NTK is "
                             "identically 0; give some layer a positive learning rate", "lambda_W")
    return lb, lw


@dataclass(frozen=True)
class NTK:
    """The frozen NTK of every layer: ``Theta`` ``(L, d, d)`` (layer l at index l - 1), the learning rates, and
    ``chi_perp`` ``(L, d)``: each step's perpendicular susceptibility per input (entry l - 1 is the step into layer l;
    entry 0, the input layer, is 0), which multiplies the inherited NTK."""

    net: MLP
    x: np.ndarray
    Theta: np.ndarray
    chi_perp: np.ndarray
    lambda_b: tuple
    lambda_W: tuple

    def __getitem__(self, l: int) -> np.ndarray:
        """``Theta^(l)`` ``(d, d)`` for layer l = 1..L."""
        self.net._check_layer(l)
        return self.Theta[l - 1]

    @property
    def L(self) -> int:
        return self.Theta.shape[0]

    # ------------------------------------------------------------------ finite width (computed on first use)
    @cached_property
    def statistics(self):
        """The O(1/n) NTK statistics of every layer (:class:`pdlt.theory.ntk_statistics.NTKStatistics`), computed on
        first access. Residual networks with shortcuts: at most four inputs at once. The ddNTK's statistics grow
        like the cube of Theta: a Theta below ~2^-300 (tiny learning rates or inputs) is refused
        (:class:`~pdlt.errors.VanishingFlowError`), as it would underflow them to 0."""
        from .nnlo import check_second_order_range
        from .ntk_statistics import ntk_statistics

        check_second_order_range(self.Theta, "the NTK's O(1/n) statistics", "scale the learning rates (lambda_b, "
                                 "lambda_W) or the inputs x up: each statistic is a power of them")
        return ntk_statistics(self.net, self.x, self.lambda_b, self.lambda_W)

    Theta1 = property(lambda self: self.statistics.Theta1, doc="``Theta^{1}`` ``(L, d, d)``: E[H_ii] = Theta + Theta1/n_{l-1}")
    A = property(lambda self: self.statistics.A, doc="NTK fluctuation ``A`` ``(L, d, d, d, d)``")
    B = property(lambda self: self.statistics.B, doc="NTK fluctuation ``B`` ``(L, d, d, d, d)``")
    D = property(lambda self: self.statistics.D, doc="NTK-preactivation correlation ``D`` ``(L, d, d, d, d)``")
    F = property(lambda self: self.statistics.F, doc="NTK-preactivation correlation ``F`` ``(L, d, d, d, d)``")
    P = property(lambda self: self.statistics.P, doc="dNTK statistic ``P`` ``(L, d, d, d, d)``")
    Q = property(lambda self: self.statistics.Q, doc="dNTK statistic ``Q`` ``(L, d, d, d, d)``")
    R = property(lambda self: self.statistics.R, doc="ddNTK-I statistic ``R`` ``(L, d, d, d, d)``")
    S = property(lambda self: self.statistics.S, doc="ddNTK-II statistic ``S`` ``(L, d, d, d, d)``")
    T = property(lambda self: self.statistics.T, doc="ddNTK-II statistic ``T`` ``(L, d, d, d, d)``")
    U = property(lambda self: self.statistics.U, doc="ddNTK-II statistic ``U`` ``(L, d, d, d, d)``")

    def with_net(self, net: MLP) -> "NTK":
        """The same NTK for a network that differs only in its hidden widths, with the same width ratios
        ``n_l/n_(l-1)`` for l >= 2 (e.g. the members of a width sweep): Theta and the statistics do not depend on
        the widths then; :meth:`prediction` divides by the new ones. Anything else raises :class:`ParameterError`."""
        self.net.check_reuse(net, "pdlt.ntk")
        out = replace(self, net=net)
        if "statistics" in self.__dict__:
            out.__dict__["statistics"] = self.__dict__["statistics"]
        return out

    def prediction(self, name: str, l: int) -> np.ndarray:
        """The O(1/n) prediction of the NTK observable ``name`` (:mod:`pdlt.observables`, family ``"ntk"``) at
        layer ``l``, shape ``(d,) * rank``: ``ntk_mean`` = ``Theta + Theta1/n_{l-1}``; ``A`` ... ``U`` the tensors;
        ``ntk_variance`` = ``(A_aaaa + 2 B_aaaa)/n_{l-1}``; ``ntk_relative_variance`` and ``dntk_relative`` =
        ``(P_aaaa + 2 Q_aaaa)/n_{l-1}`` over ``Theta_aa^2``."""
        from ..observables import get

        obs = get(name)
        if obs.family != "ntk":
            raise ParameterError(f"{name!r} is a preactivation observable; ask pdlt.finite_width(...) for it", "quantity")
        self.net._check_layer(l)
        n = float(self.net.widths[l - 1])
        i = l - 1
        if name == "ntk_mean":
            return self.Theta[i] + self.Theta1[i] / n
        if obs.rank == 4:
            return np.array(getattr(self, name)[i])
        if name == "ntk_variance":
            ar = np.arange(self.Theta.shape[-1])
            return (self.A[i][ar, ar, ar, ar] + 2.0 * self.B[i][ar, ar, ar, ar]) / n
        if name == "ntk_relative_variance":
            return diagonal_ratio(self.A[i], self.B[i], self.Theta[i], n)
        return diagonal_ratio(self.P[i], self.Q[i], self.Theta[i], n)

    def truncation_error(self, name: str, l: int) -> np.ndarray:
        """The error ``|truth - prediction|`` of the O(1/n) prediction of the NTK observable ``name`` at layer l,
        entry by entry (the observable's shape), where it is known: 0 at layers 1-2 (exact at O(1/n)); exactly, from
        an exact chain, for deep linear networks (every statistic of :func:`pdlt.linear_ntk_all_orders`) and for the
        entries of one input of ``ntk_mean``, ``ntk_variance``, ``ntk_relative_variance``, A, B, D and F of bias-free
        ReLU networks (:func:`pdlt.relu_ntk_all_orders`); as the computed O(1/n^2) term plus a bound on the rest for
        the same entries of smooth activations (:func:`pdlt.ntk_nnlo`), where the series is controlled; as a derived
        bound for the other entries of these statistics of both (those of several inputs: the layer's first-order
        size times a factor that the known entries calibrate, :func:`pdlt.theory.truncation.ntk_truncation_error`).
        :func:`pdlt.compare` uses it as its allowance. Raises :class:`ParameterError` where some entry's error is not
        known (test those with an NTK width sweep, :func:`pdlt.sweeps.ntk_width_sweep`).

        >>> import pdlt
        >>> th = pdlt.ntk(pdlt.MLP("relu", (1, 32, 32, 32, 32), C_W=2.0), [[1.0]])
        >>> float(round(th.prediction("ntk_relative_variance", 4)[0], 4))        # O(1/n); exact: 0.2099
        0.1904
        >>> float(round(th.truncation_error("ntk_relative_variance", 4)[0], 4))
        0.0195
        """
        from ..observables import get
        from .truncation import ntk_truncation_error

        if get(name).family != "ntk":
            raise ParameterError(f"{name!r} is a preactivation observable; ask pdlt.finite_width(...) for it",
                                 "quantity")
        self.net._check_layer(l)
        err, known = ntk_truncation_error(self, name, l)
        if not np.all(known):
            raise ParameterError(f"the O(1/n^2) remainder of {name} at layer l = {l} is not known for this network "
                                 f"({self.net.activation.name}, {self.x.shape[0]} input(s)): it is for deep linear "
                                 "networks, and for ntk_mean, ntk_variance, ntk_relative_variance, A, B, D and F of "
                                 "bias-free ReLU networks (exact chains) and of smooth activations of plain MLPs "
                                 "(the computed next order), and for P, Q and dntk_relative of smooth activations of "
                                 "plain MLPs (a fourth copy), where the 1/n series is controlled (a relative variance "
                                 "needs some parameter trained up to layer l); not for the ddNTK statistics. Test it "
                                 "with an NTK width sweep (pdlt.sweeps.ntk_width_sweep)",
                                 "quantity")
        return err

    def gradient_growth(self) -> np.ndarray:
        """``prod_{l' <= l} chi_perp^(l')`` per layer and input ``(L, d)``: how much the NTK inherited from layer 1
        has been multiplied by layer l (exploding gradients where it grows exponentially, vanishing where it
        decays; 1 at criticality)."""
        out = np.cumprod(np.where(np.arange(self.L)[:, None] == 0, 1.0, self.chi_perp), axis=0)
        return out


def diagonal_ratio(X, Y, Theta, n: float) -> np.ndarray:
    """``(X_aaaa + 2 Y_aaaa) / (n Theta_aa^2)`` per input ``(d,)``: the NTK's relative variance (``X, Y = A, B``) or
    the dNTK's relative size (``P, Q``) at one layer. ``Theta_aa = 0`` only where no parameter at or below the layer
    is trained: every statistic vanishes there too, and the ratio is 0 (as the Monte Carlo's is)."""
    ar = np.arange(Theta.shape[-1])
    th2 = Theta[ar, ar] ** 2
    return np.where(th2 > 0, (X[ar, ar, ar, ar] + 2.0 * Y[ar, ar, ar, ar]) / (n * np.where(th2 > 0, th2, 1.0)), 0.0)


def ntk(net: MLP, x, lambda_b=1.0, lambda_W=1.0) -> NTK:
    """The frozen NTK ``Theta^(l)_ab`` of every layer for inputs ``x`` ``(d, n_0)`` (module docstring).

    Averages are taken like :func:`pdlt.kernel_flow`'s, in power-of-two units of K. Raises
    :class:`~pdlt.errors.DivergentFlowError` naming the layer where Theta leaves float64's range.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("relu", (2, 64, 64, 64), C_W=2.0)
    >>> th = pdlt.ntk(net, np.array([[1.0, 0.0]]), lambda_b=0.0, lambda_W=1.0)
    >>> th.Theta[:, 0, 0]      # ReLU at criticality: each layer adds lambda_W <sigma^2>_K = 1/2 (linear growth)
    array([0.5, 1. , 1.5])
    """
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    lb, lw = learning_rates(net, lambda_b, lambda_W)
    flow = kernel_flow(net, x)
    K, act, steps = flow.K, net.activation, net.steps
    L, d = K.shape[0], K.shape[-1]
    Theta = np.empty((L, d, d))
    chi = np.zeros((L, d))
    Theta[0] = steps[0].ntk(flow.x, lw[0], lb[0])
    # the averages of sigma' beyond the resolved rules: (layer, variance, error), one warning for the whole flow (those
    # of sigma are kernel_flow's, which reported them)
    capped = []
    for l in range(1, L):
        held = []
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            ss = scaled_pair_average(act, K[l - 1], capped=[])
            dd = scaled_pair_average(act, K[l - 1], derivative=True, capped=held)
            Theta[l] = steps[l].ntk_map(Theta[l - 1], ss, dd, lw[l], lb[l])
        capped += [(l + 1, v, e) for v, e in held]
        chi[l] = steps[l].chi(steps[l].C_W * np.diagonal(dd))
        if not np.all(np.isfinite(Theta[l])) or np.max(np.abs(Theta[l])) > 1e300:
            why = (f"chi_perp = {chi[l].max():.3g} > 1 per layer: exploding gradients; move C_W toward criticality "
                   "(pdlt.criticality) or reduce the depth" if chi[l].max() > 1 else
                   "the learning rates lambda_b, lambda_W are too large for float64: lower them")
            raise DivergentFlowError(f"the NTK leaves float64's range at layer l = {l + 1} ({why})", layer=l + 1)
    report_capped("ntk (the averages of sigma')", capped)
    return NTK(net=net, x=flow.x, Theta=Theta, chi_perp=chi, lambda_b=lb, lambda_W=lw)


@dataclass(frozen=True)
class CriticalLearningRates:
    """Per-layer learning rates that keep the NTK of a critical network of depth L finite as L grows (PDLT ch. 9):
    ``lambda_b``, ``lambda_W`` (length L), the universality class, and ``limit``, a description of Theta^(L) as
    L -> infinity."""

    activation: str
    universality: str
    L: int
    lambda_b: tuple
    lambda_W: tuple
    limit: str


#: the deepest network critical_learning_rates serves (its rates are per-layer tuples, and pdlt.MLP holds one entry a
#: layer)
MAX_DEPTH = 10**6


def critical_learning_rates(act, L: int, lambda_b: float = 1.0, lambda_W: float = 1.0) -> CriticalLearningRates:
    """Learning rates for a critical network of depth ``L`` (``C_b``, ``C_W`` from :func:`pdlt.criticality`), from
    the frozen NTK recursion at criticality (derivations/README.md section 16):

    * scale-invariant class (``chi_perp = 1``, K constant): every layer adds ``lambda_b + lambda_W A_2 K``, so
      ``lambda = lambda~ / L`` for both gives ``Theta^(L) -> lambda~_b + lambda~_W A_2 K^(1)`` (the 1/L rule);
    * K*=0 class (``chi_perp = 1 - p_perp/l``, ``K ~ 1/((-a_1) l)``): the biases' contributions add up like
      ``l / (1 + p_perp)`` and the weights' like ``1/((-a_1) C_W p_perp)``, so ``lambda_b = lambda~_b / L`` and
      ``lambda_W = lambda~_W`` give ``Theta^(L) -> lambda~_b/(1 + p_perp) + lambda~_W/(C_W (-a_1) p_perp)``.

    Other classes raise :class:`ParameterError` (not derived).
    """
    from ..validation import check_int, check_real
    from .criticality import criticality

    L = check_int(L, "L", minimum=1, maximum=MAX_DEPTH)
    lb = check_real(lambda_b, "lambda_b", minimum=0.0)
    lw = check_real(lambda_W, "lambda_W", minimum=0.0)
    c = criticality(act)
    if c.universality == "scale-invariant":
        return CriticalLearningRates(c.activation, c.universality, L, (lb / L,) * L, (lw / L,) * L,
                                     "lambda_b + lambda_W A_2 K^(1)")
    if c.universality == "K*=0":
        ex = c.as_dict()
        p, a1 = ex["exponents"]["p_perp"], ex["a1"]
        return CriticalLearningRates(
            c.activation, c.universality, L, (lb / L,) * L, (lw,) * L,
            f"lambda_b/(1 + p_perp) + lambda_W/(C_W (-a_1) p_perp) = {lb / (1 + p) + lw / (c.C_W * (-a1) * p):.12g}")
    raise ParameterError(f"critical learning rates are derived for the scale-invariant and K*=0 classes; "
                         f"{c.activation} is {c.universality!r}", "act")


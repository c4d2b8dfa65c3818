"""The architecture: an MLP's activation, widths and initialization hyperparameters (the "vacuum").

Conventions (PDLT eqs. 4.3-4.4): for layers l = 1..L,
``z^(l)_i = b^(l)_i + sum_j W^(l)_ij sigma(z^(l-1)_j)`` (with ``sigma(z^(0)) := x`` for l = 1),
``b^(l) ~ N(0, C_b^(l))``, ``W^(l)_ij ~ N(0, C_W^(l) / n_{l-1})``. There is no activation on the output.
Arrays over layers hold layer l at index l - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from .activations import Activation
from .activations import activation as _lookup
from .errors import ParameterError, SingularKernelError
from .validation import check_int, check_real, check_real_array

__all__ = ["MLP", "check_hyper", "check_noise_var", "check_target_scale", "MAX_TARGET", "inputs_log10_scale",
           "PosteriorProblem",
           "posterior_problem", "singular_training_kernel", "COND_MAX", "not_invertible", "checked_training_block"]

#: the largest target a sampled training or posterior problem takes: its square (a loss, a likelihood's exponent,
#: divided by a noise variance) must stay in float64's range (targets of 1e200 came back as "lower the step" or
#: "eta above the stability limit"); the theory's infinite-width predictions, linear in y, take any
MAX_TARGET = 1e150


def check_target_scale(y, name: str = "y_train") -> None:
    """Refuse (:class:`ParameterError` naming ``name``) targets beyond :data:`MAX_TARGET`, whose squares a sampled
    loss or likelihood cannot hold."""
    top = float(np.max(np.abs(y))) if np.size(y) else 0.0
    if top > MAX_TARGET:
        raise ParameterError(f"{name} reaches |y| = {top:.3g}: the squares of targets beyond {MAX_TARGET:g} (the loss, "
                             "the likelihood's exponent) leave float64's range; scale the targets toward the outputs' "
                             "scale", name)


def inputs_log10_scale(x, C_W: float, C_b: float) -> float:
    """``log10`` of ``max(C_b, C_W max|x|^2)``, within ``log10 2`` of the bound ``C_b + C_W max|x|^2`` on the first
    layer's variances of inputs ``x`` (``-inf`` for zero inputs and bias), computed without forming the square.
    Where a sampled run overflows, a value far inside float64's range (below ~150) clears the inputs, so an error
    names the flow or the learning rates instead."""
    top = float(np.max(np.abs(x))) if np.size(x) else 0.0
    ramp = math.log10(C_W) + 2.0 * math.log10(top) if top > 0.0 and C_W > 0.0 else -math.inf
    return max(ramp, math.log10(C_b) if C_b > 0.0 else -math.inf)


# A kernel block to be inverted whose condition number exceeds this is treated as singular: beyond it the
# solve loses more than 12 of float64's ~16 digits, so the posterior would be round-off.
COND_MAX = 1e12


def not_invertible(ev):
    """From ascending eigenvalues ``ev`` ``(..., k)`` of symmetric blocks: True where a block is singular or
    conditioned beyond :data:`COND_MAX` (one rule for the posterior, its Monte Carlo and the effective action)."""
    ev = np.asarray(ev)
    with np.errstate(over="ignore"):           # (COND_MAX times an eigenvalue of 1e300: inf, still a comparison)
        return (ev[..., 0] <= 0) | (ev[..., -1] > COND_MAX * ev[..., 0]) | ~np.all(np.isfinite(ev), axis=-1)


def checked_training_block(ev, noise_var: float, accuracy: float, what: str, detail: str, layer: int | None = None):
    """The one check of a training block ``G_AA + noise_var 1`` with ascending eigenvalues ``ev`` before it is
    solved: :func:`singular_training_kernel` where :func:`not_invertible`, else the ``"round-off"`` caveat of
    :func:`pdlt.errors.roundoff_caveat` (entries of relative ``accuracy``) or None. ``what`` names the result (e.g.
    ``"posterior"``), ``detail`` the block (e.g. ``"infinite-width kernel"``)."""
    from .errors import roundoff_caveat

    if not_invertible(ev):
        raise singular_training_kernel(f"{detail}, eigenvalues {ev[0]:.3g} .. {ev[-1]:.3g}", noise_var)
    return roundoff_caveat(ev, accuracy, what, layer)


def _scalar(value):
    """A 0-d array as its scalar (numpy and JAX 0-d arrays are common spellings of a number); else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def check_hyper(C_W, C_b=0.0) -> None:
    """Raise :class:`ParameterError` (a ValueError) unless C_W and C_b are finite real variances (>= 0)."""
    for name, v in (("C_W", C_W), ("C_b", C_b)):
        try:
            check_real(_scalar(v), name, minimum=0.0)
        except ParameterError as err:
            raise ParameterError(f"C_W and C_b are variances and must be finite real numbers >= 0: {err}", name) from None


def check_noise_var(noise_var) -> float:
    """The observation noise variance s^2 as a float; :class:`ParameterError` unless it is a finite real >= 0
    (0: exact conditioning)."""
    try:
        return check_real(_scalar(noise_var), "noise_var", minimum=0.0)
    except ParameterError as err:
        raise ParameterError(f"noise_var is a variance and must be a finite real number >= 0: {err}", "noise_var") from None


def per_layer(value, L: int, name: str, what: str = "a variance") -> tuple[float, ...]:
    """A scalar or one value per layer (length L), each finite, real and >= 0 (``what`` names the kind of
    quantity in errors: a variance, a learning rate), as L floats."""
    value = _scalar(value)
    try:
        ndim = np.ndim(value)
    except ValueError:  # a ragged nested sequence
        ndim = 2
    if isinstance(value, (str, bytes)) or ndim > 1:
        raise ParameterError(f"{name} must be a real number or a sequence of length L = {L} (one per layer), got "
                             f"{value!r}", name)
    vals = list(value) if ndim == 1 else [value]
    if len(vals) not in (1, L):
        raise ParameterError(f"{name} must be a scalar or a sequence of length L = {L} (one per layer), got "
                             f"{len(vals)} values", name)
    out = []
    for i, v in enumerate(vals):
        label = name if len(vals) == 1 else f"{name}[{i}] (layer l = {i + 1})"
        try:
            out.append(check_real(_scalar(v), label, minimum=0.0))
        except ParameterError as err:
            raise ParameterError(f"{err}; {name} is {what} (finite, real, >= 0)", name) from None
    return tuple(out) * (L if len(out) == 1 else 1)


def _shortcut(value, L: int, name: str, plain: float) -> tuple[float, ...]:
    """``gamma`` or ``xi`` as L floats (layer l at index l - 1): a scalar applies to layers 2..L (layer 1 has no
    previous layer, so its entry is the plain ``plain``); a length-L sequence must have ``plain`` first."""
    value = _scalar(value)
    try:
        ndim = np.ndim(value)
    except ValueError:
        ndim = 2
    if isinstance(value, (str, bytes)) or ndim > 1:
        raise ParameterError(f"{name} must be a real number or a sequence of length L = {L}, got {value!r}", name)
    if ndim == 0:
        v = check_real(value, name)
        return (plain,) + (v,) * (L - 1)
    vals = list(value)
    if len(vals) != L:
        raise ParameterError(f"{name} must be a scalar or a sequence of length L = {L} (one per layer, layer 1 "
                             f"first), got {len(vals)} values", name)
    out = tuple(check_real(_scalar(v), f"{name}[{i}] (layer l = {i + 1})") for i, v in enumerate(vals))
    if out[0] != plain:
        raise ParameterError(f"{name}[0] = {out[0]:g}: layer 1 has no previous layer, so it cannot have a shortcut; "
                             f"{name}[0] must be {plain:g}", name)
    return out


@dataclass(frozen=True)
class MLP:
    """A fully connected network: ``widths = (n_0, n_1, ..., n_L)``, optionally with residual connections.

    ``C_W`` and ``C_b`` are scalars or per-layer sequences of length L (layer l at index l - 1). ``gamma`` (the
    shortcut) and ``xi`` (the branch) make layers l >= 2 residual, ``z^(l) = gamma z^(l-1) + xi (b + W sigma(z^(l-1)))``
    (PDLT appendix B): scalars (for every layer l >= 2) or sequences of length L whose first entry (layer 1, which
    has no previous layer) must be ``gamma = 0``, ``xi = 1``. Defaults ``gamma = 0, xi = 1``: the plain MLP. A layer
    with ``gamma != 0`` needs ``n_l = n_{l-1}``. :attr:`steps` lists the layer steps (:mod:`pdlt.layers`).

    >>> net = MLP("tanh", widths=(3, 64, 64, 1), C_W=1.0, C_b=0.0)
    >>> net.L, net.C_W
    (3, (1.0, 1.0, 1.0))
    >>> res = MLP("relu", widths=(2, 16, 16, 16), C_W=1.0, gamma=0.5 ** 0.5)
    >>> [s.kind for s in res.steps]
    ['input', 'residual', 'residual']
    """

    activation: Activation
    widths: tuple[int, ...]
    C_W: tuple[float, ...] | float = 1.0
    C_b: tuple[float, ...] | float = 0.0
    gamma: tuple[float, ...] | float = 0.0
    xi: tuple[float, ...] | float = 1.0

    def __init__(self, activation, widths: Sequence[int], C_W=1.0, C_b=0.0, gamma=0.0, xi=1.0):
        act = _lookup(activation)
        # (a set has a length but no order: {2, 4, 1} came back as widths (1, 2, 4))
        if isinstance(widths, (str, bytes, set, frozenset, dict)) or not hasattr(widths, "__len__"):
            raise ParameterError(f"widths must be a sequence of integers (n_0, n_1, ..., n_L), got {widths!r}", "widths")
        w = tuple(widths)
        if len(w) < 2:
            raise ParameterError(f"widths must list n_0 (input dimension) and at least one layer width, got {w}",
                                 "widths")
        ws = []
        for i, n in enumerate(w):
            try:  # strings ("3") are refused like any non-number: a width is never parsed from text here
                ws.append(check_int(_scalar(n), f"width n_{i} (widths[{i}])", minimum=1))
            except ParameterError as err:
                raise ParameterError(str(err), "widths") from None
        L = len(ws) - 1
        object.__setattr__(self, "activation", act)
        object.__setattr__(self, "widths", tuple(ws))
        object.__setattr__(self, "C_W", per_layer(C_W, L, "C_W"))
        object.__setattr__(self, "C_b", per_layer(C_b, L, "C_b"))
        object.__setattr__(self, "gamma", _shortcut(gamma, L, "gamma", 0.0))
        object.__setattr__(self, "xi", _shortcut(xi, L, "xi", 1.0))
        for l in range(2, L + 1):
            if self.gamma[l - 1] != 0 and ws[l] != ws[l - 1]:
                raise ParameterError(
                    f"layer l = {l} has a shortcut (gamma = {self.gamma[l - 1]:g}) but width n_{l} = {ws[l]} != "
                    f"n_{l - 1} = {ws[l - 1]}: z^(l) = gamma z^(l-1) + ... needs equal widths; make them equal or set "
                    f"gamma[{l - 1}] = 0", "gamma")

    @property
    def residual(self) -> bool:
        """True if some layer has a shortcut or a branch scale (``gamma != 0`` or ``xi != 1``)."""
        return any(g != 0.0 for g in self.gamma) or any(x != 1.0 for x in self.xi)

    @cached_property
    def steps(self) -> tuple:
        """The layer steps, layer l at index l - 1: :class:`pdlt.layers.Input`, then :class:`~pdlt.layers.Dense` or
        :class:`~pdlt.layers.Residual` for each layer l >= 2."""
        from .layers import Input, step_for

        return (Input(self.C_W[0], self.C_b[0]),) + tuple(
            step_for(self.C_W[l], self.C_b[l], self.gamma[l], self.xi[l]) for l in range(1, self.L))

    def step(self, l: int):
        """The step that produces layer l = 1..L (:attr:`steps`)."""
        self._check_layer(l)
        return self.steps[l - 1]

    @property
    def L(self) -> int:
        """Depth: the number of layers with weights."""
        return len(self.widths) - 1

    @property
    def n0(self) -> int:
        return self.widths[0]

    def hyper(self, l: int) -> tuple[float, float]:
        """``(C_W^(l), C_b^(l))`` for layer l = 1..L."""
        self._check_layer(l)
        return self.C_W[l - 1], self.C_b[l - 1]

    def width_ratio(self, l: int) -> float:
        """``r_l = n_l / n_{l-1}`` (PDLT's factor in the vertex recursion)."""
        self._check_layer(l)
        return self.widths[l] / self.widths[l - 1]

    def _check_layer(self, l: int):
        if isinstance(l, (bool, np.bool_)) or not isinstance(l, (int, np.integer)):
            raise ParameterError(f"layer index l must be an integer in 1..L = 1..{self.L}, got {l!r}", "l")
        if not 1 <= l <= self.L:
            raise ParameterError(f"layer index l must be in 1..L = 1..{self.L} (layers are numbered as in PDLT), got {l}",
                                 "l")

    def check_reuse(self, net: "MLP", what: str) -> None:
        """Raise :class:`ParameterError` unless a theory computed for this network holds for ``net``: same depth,
        input width, activation, per-layer ``C_W``, ``C_b``, ``gamma``, ``xi`` and width ratios ``n_l/n_(l-1)`` for
        l >= 2 (``r_1`` multiplies layer-1 statistics, which vanish); residual networks need one hidden width.
        ``what`` names the theory (e.g. ``"pdlt.finite_width"``) in the message."""
        if not isinstance(net, MLP):
            raise ParameterError(f"with_net: net must be a pdlt.MLP, got {type(net).__name__}", "net")
        if net.L != self.L or net.n0 != self.n0:
            raise ParameterError(f"with_net: the network has depth {net.L} and n_0 = {net.n0}, the theory {self.L} and "
                                 f"{self.n0}; compute {what} for that network", "net")
        for attr in ("activation", "C_W", "C_b", "gamma", "xi"):
            if getattr(net, attr, None) != getattr(self, attr, None):
                raise ParameterError(f"with_net: the network's {attr} differs from the theory's; compute {what} for "
                                     "that network", "net")
        ratios = [net.width_ratio(l) for l in range(2, net.L)]
        if not np.allclose(ratios, [self.width_ratio(l) for l in range(2, net.L)], rtol=1e-14, atol=0.0):
            raise ParameterError("with_net: the 1/n statistics depend on the width ratios n_l/n_(l-1), and the "
                                 f"network's differ from the theory's; compute {what} for that network", "net")
        if getattr(net, "residual", False) and len(set(net.widths[1:net.L])) > 1:
            raise ParameterError("with_net: a residual network needs one hidden width (its theory assumes it)", "net")

    def with_depth(self, L: int, width: int | None = None) -> "MLP":
        """The same architecture with L uniform hidden layers (the first layer's C_W, C_b; layer 2's gamma, xi)."""
        n = width if width is not None else (self.widths[1] if self.L >= 1 else 1)
        g, x = (self.gamma[1], self.xi[1]) if self.L >= 2 else (0.0, 1.0)
        return MLP(self.activation, (self.n0,) + (n,) * L, self.C_W[0], self.C_b[0], gamma=g, xi=x)

    def truncated(self, l: int, n_out: int = 1) -> "MLP":
        """The network cut at depth ``l``: its first ``l`` layers, with ``n_out`` outputs in place of ``n_l``. Layer
        ``l``'s statistics do not depend on ``n_l`` (the 1/n ones are normalized by ``n_{l-1}``), so the cut
        network's last layer has exactly this network's layer-``l`` statistics."""
        self._check_layer(l)
        g = self.gamma[:l] if self.gamma[l - 1] == 0 or n_out == self.widths[l] else None
        if g is None:
            raise ParameterError(f"truncated: layer l = {l} has a shortcut, so its width n_{l} = {self.widths[l]} "
                                 f"cannot change; pass n_out = {self.widths[l]}", "n_out")
        return MLP(self.activation, tuple(self.widths[:l]) + (n_out,), self.C_W[:l], self.C_b[:l], gamma=g,
                   xi=self.xi[:l])

    def targets(self, y, n: int, name: str = "y_train") -> np.ndarray:
        """Validate targets for ``n`` training inputs: returns float64 ``(n, n_L)`` (a 1-D y is one output).
        Complex, non-numeric and non-finite targets raise :class:`ParameterError` naming ``name``."""
        y = check_real_array(y, name)
        if y.ndim == 1:
            y = y[:, None]
        nL = self.widths[-1]
        if y.shape != (n, nL):
            raise ParameterError(f"{name} must have shape (n_train, n_L) = ({n}, {nL}) (one row per training input, "
                                 f"one column per output neuron; n_L = widths[-1]), got {y.shape}", name)
        return y

    def inputs(self, x, name: str = "x") -> np.ndarray:
        """Validate a dataset of inputs: returns float64 ``(d, n_0)`` (a 1-D x is one datapoint). Complex,
        non-numeric and non-finite inputs raise :class:`ParameterError` naming ``name``."""
        x = dataset(x, name)
        if x.shape[1] != self.n0:
            raise ParameterError(
                f"inputs {name} have dimension {x.shape[1]} but the network's n_0 = widths[0] = {self.n0}; "
                f"pass {name} with shape (d, n_0) or change widths[0]", name)
        return x


def dataset(x, name: str = "x") -> np.ndarray:
    """A dataset of inputs checked before there is a network to check it against (:meth:`MLP.inputs` adds its
    n_0): float64 ``(d, n_0)``, a 1-D x one datapoint; complex, non-numeric, non-finite, empty and ragged inputs
    raise :class:`ParameterError` naming ``name``."""
    x = check_real_array(x, name)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ParameterError(f"inputs {name} must have shape (d, n_0) = (datapoints, input dimension), got "
                             f"{x.shape}", name)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ParameterError(f"inputs {name} must contain at least one datapoint of at least one dimension, got shape "
                             f"{x.shape}", name)
    return x


def singular_training_kernel(detail: str, noise_var: float = 0.0) -> SingularKernelError:
    """The one error for a training block ``G_AA + noise_var 1`` that cannot be inverted, shared by the three
    posterior paths (:func:`pdlt.posterior`, :func:`pdlt.posterior_mc`, :func:`pdlt.langevin_posterior`)."""
    return SingularKernelError(
        f"the training kernel {'G_AA' if noise_var == 0 else f'G_AA + {noise_var:g} 1'} is singular ({detail}): "
        "exact conditioning (noise_var = 0) on "
        "duplicate or (nearly) collinear training inputs, or on a network narrower than the training set, is not "
        "defined; drop the duplicates, widen the last hidden layer, or use noise_var > 0 (large enough to "
        "regularize the kernel)")


@dataclass(frozen=True)
class PosteriorProblem:
    """A validated posterior problem: ``x_train`` ``(n_A, n_0)``, ``y_train`` ``(n_A, n_L)``, ``x_test``
    ``(n_B, n_0)`` float64 arrays and the noise variance ``noise_var`` = s^2 >= 0."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    noise_var: float


def posterior_problem(net, x_train, y_train, x_test, noise_var, *, min_depth: int = 2,
                      residual: bool = False) -> PosteriorProblem:
    """Validate the arguments every posterior path shares (one place, one wording).

    Raises :class:`ParameterError` naming the argument for: ``net`` with residual steps unless ``residual=True``
    (the paths that sample explicit weights); ``net`` not an :class:`MLP` or shallower than
    ``min_depth`` (the Monte Carlo paths sample the last hidden layer, so they need L >= 2; the theory accepts
    L = 1, where the outputs are exactly Gaussian and the 1/n corrections vanish);
    non-numeric, complex, non-finite or wrongly shaped ``x_train``, ``y_train``, ``x_test``; a ``noise_var`` that is
    not a finite real >= 0. Exactly repeated training inputs with ``noise_var = 0`` raise
    :func:`singular_training_kernel` (their kernel block is singular for every network, finite or infinite)."""
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP (activation, widths, C_W, C_b), got {type(net).__name__}", "net")
    if net.residual and not residual:
        raise ParameterError(
            "net has residual steps (gamma != 0 or xi != 1): this posterior assumes the outputs are a zero-mean "
            "Gaussian mixture over the last layer's metric, which a shortcut breaks (the outputs acquire odd "
            "cumulants at order 1/n); use pdlt.langevin_posterior for residual networks (a layer with gamma = 0 and "
            "xi != 1 is a dense layer with xi^2 C_W, xi^2 C_b: write it as one)", "net")
    if net.L < min_depth:
        raise ParameterError(f"net: this posterior samples the last hidden layer, so it needs at least one hidden "
                             f"layer (L >= 2, widths = (n_0, n_1, ..., n_L)); got widths = {net.widths}", "net")
    s2 = check_noise_var(noise_var)
    xa = net.inputs(x_train, "x_train")
    xb = net.inputs(x_test, "x_test")
    y = net.targets(y_train, xa.shape[0], "y_train")
    if s2 == 0:
        _, first, counts = np.unique(xa, axis=0, return_index=True, return_counts=True)
        if np.any(counts > 1):
            row = int(first[np.argmax(counts > 1)])
            raise singular_training_kernel(f"x_train row {row} appears {int(counts.max())} times")
    return PosteriorProblem(x_train=xa, y_train=y, x_test=xb, noise_var=s2)

"""The architecture: an MLP's activation, widths and initialization hyperparameters (the "vacuum").

Conventions (PDLT eqs. 4.3-4.4): for layers l = 1..L,
``z^(l)_i = b^(l)_i + sum_j W^(l)_ij sigma(z^(l-1)_j)`` (with ``sigma(z^(0)) := x`` for l = 1),
``b^(l) ~ N(0, C_b^(l))``, ``W^(l)_ij ~ N(0, C_W^(l) / n_{l-1})``. There is no activation on the output.
Arrays over layers hold layer l at index l - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .activations import Activation
from .activations import activation as _lookup

__all__ = ["MLP", "check_hyper", "check_noise_var"]


def check_hyper(C_W, C_b=0.0) -> None:
    """Raise ValueError unless C_W and C_b are finite variances (>= 0)."""
    if not (math.isfinite(C_W) and math.isfinite(C_b)) or C_W < 0 or C_b < 0:
        raise ValueError(f"C_W and C_b are variances and must be finite and >= 0, got C_W={C_W}, C_b={C_b}")


def check_noise_var(noise_var) -> float:
    """Raise ValueError unless the observation noise variance is finite and >= 0 (0: exact conditioning)."""
    if not math.isfinite(noise_var) or noise_var < 0:
        raise ValueError(f"noise_var is a variance and must be finite and >= 0, got {noise_var}")
    return float(noise_var)


def _per_layer(value, L: int, name: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size not in (1, L):
        raise ValueError(f"{name} must be a scalar or a sequence of length L = {L} (one per layer), got shape {np.shape(value)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value}")
    if np.any(arr < 0):
        raise ValueError(f"{name} is a variance and must be >= 0, got {value}")
    if arr.size == 1:
        arr = np.full(L, arr[0])
    return tuple(float(a) for a in arr)


@dataclass(frozen=True)
class MLP:
    """A fully connected network: ``widths = (n_0, n_1, ..., n_L)``.

    ``C_W`` and ``C_b`` are scalars or per-layer sequences of length L (layer l at index l - 1).

    >>> net = MLP("tanh", widths=(3, 64, 64, 1), C_W=1.0, C_b=0.0)
    >>> net.L, net.C_W
    (3, (1.0, 1.0, 1.0))
    """

    activation: Activation
    widths: tuple[int, ...]
    C_W: tuple[float, ...] | float = 1.0
    C_b: tuple[float, ...] | float = 0.0

    def __init__(self, activation, widths: Sequence[int], C_W=1.0, C_b=0.0):
        act = _lookup(activation)
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise ValueError(f"widths must be a sequence of integers (n_0, n_1, ..., n_L), got {widths!r}")
        w = tuple(widths)
        if len(w) < 2:
            raise ValueError(f"widths must list n_0 (input dimension) and at least one layer width, got {w}")
        ws = []
        for i, n in enumerate(w):
            if isinstance(n, bool) or not float(n).is_integer() or not math.isfinite(float(n)):
                raise ValueError(f"width n_{i} must be an integer, got {n!r}")
            if int(n) < 1:
                raise ValueError(f"width n_{i} must be >= 1, got {n}")
            ws.append(int(n))
        L = len(ws) - 1
        object.__setattr__(self, "activation", act)
        object.__setattr__(self, "widths", tuple(ws))
        object.__setattr__(self, "C_W", _per_layer(C_W, L, "C_W"))
        object.__setattr__(self, "C_b", _per_layer(C_b, L, "C_b"))

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
        if not 1 <= l <= self.L:
            raise ValueError(f"layer index l must be in 1..L = 1..{self.L} (layers are numbered as in PDLT), got {l}")

    def with_depth(self, L: int, width: int | None = None) -> "MLP":
        """The same architecture with L uniform hidden layers (uses the first layer's hyperparameters)."""
        n = width if width is not None else (self.widths[1] if self.L >= 1 else 1)
        return MLP(self.activation, (self.n0,) + (n,) * L, self.C_W[0], self.C_b[0])

    def targets(self, y, n: int) -> np.ndarray:
        """Validate targets for ``n`` training inputs: returns float64 ``(n, n_L)`` (a 1-D y is one output)."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        nL = self.widths[-1]
        if y.shape != (n, nL):
            raise ValueError(f"y_train must have shape (n_train, n_L) = ({n}, {nL}) (one row per training input, one "
                             f"column per output neuron; n_L = widths[-1]), got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y_train contains NaN or inf")
        return y

    def inputs(self, x) -> np.ndarray:
        """Validate a dataset of inputs: returns float64 ``(d, n_0)`` (a 1-D x is one datapoint)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"inputs x must have shape (d, n_0) = (datapoints, input dimension), got {x.shape}")
        if x.shape[1] != self.n0:
            raise ValueError(
                f"inputs have dimension {x.shape[1]} but the network's n_0 = widths[0] = {self.n0}; "
                "pass x with shape (d, n_0) or change widths[0]"
            )
        if x.shape[0] < 1:
            raise ValueError("inputs x must contain at least one datapoint")
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs x contain NaN or inf")
        return x

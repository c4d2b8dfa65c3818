"""Exceptions and warnings with messages that say what to change.

Every error a public entry point raises on bad input or an unrepresentable result is a ``PdltError``, a
``ValueError`` subclass; its message names the setting (argument, option) to change. Every caveat that does not
stop a computation (a 1/n correction that is not small, an incomplete Monte Carlo run) is a ``PdltWarning``
emitted with :func:`warnings.warn` *and* recorded on the result as a :class:`Caveat`, so that tables and JSON
files carry it too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PdltError", "ParameterError", "DivergentFlowError", "VanishingFlowError", "SingularKernelError",
    "ActivationError", "IntegrationError", "CheckpointError", "MismatchError", "DistributedError",
    "PdltWarning", "TruncationWarning", "IncompleteWarning", "QuadratureWarning", "Caveat", "TRUNCATION_THRESHOLD",
    "truncation_caveat", "first_truncation_caveat", "first_out_of_range", "emit",
]


class PdltError(ValueError):
    """Base of pdlt's errors: a ``ValueError`` whose message names the setting to change."""


class ParameterError(PdltError):
    """An argument has the wrong type or value; ``setting`` names it (e.g. ``"seed"``, ``"--chunk-size"``)."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


class DivergentFlowError(PdltError):
    """A recursion or a sampled network overflowed (e.g. a kernel flow far off criticality at large depth).

    ``layer`` is the first layer (PDLT numbering, 1..L) whose value is not finite.
    """

    def __init__(self, message: str, layer: int | None = None):
        super().__init__(message)
        self.layer = layer


class VanishingFlowError(PdltError):
    """A quantity falls below float64's range (about 1e-308) although the computation itself is sound.

    Raised instead of returning a zero that is not the answer; the message names the normalized observable
    (for example ``normalized_vertex``) that stays representable, or the setting to change. ``layer`` is the first
    layer (1..L) affected.
    """

    def __init__(self, message: str, layer: int | None = None):
        super().__init__(message)
        self.layer = layer


class SingularKernelError(PdltError):
    """A kernel that had to be inverted is singular or nearly so (e.g. identical inputs)."""


class ActivationError(PdltError):
    """An activation cannot be used: unsupported function, parse error, non-real or non-finite values."""


class IntegrationError(PdltError):
    """A Gaussian expectation that cannot be computed: the integrand overflows or is not finite, or the integral
    diverges (its mass lies outside any rule); the message names the kernel and says why."""


class CheckpointError(PdltError):
    """A checkpoint or saved result is corrupt, truncated, tampered with, or belongs to another run."""


class DistributedError(PdltError):
    """A multi-process run cannot go on: the coordinator cannot be reached, the processes were started with
    different settings, or a process died (the message says what was kept and how to resume)."""


class MismatchError(PdltError):
    """Two results that are being combined (theory and Monte Carlo) describe different networks or inputs."""


class PdltWarning(UserWarning):
    """Base of pdlt's warnings."""


class TruncationWarning(PdltWarning):
    """A perturbative prediction whose neglected orders may not be small (1/n term large, or L/n large)."""


class IncompleteWarning(PdltWarning):
    """A Monte Carlo result that stopped before its requested number of networks (interrupted run)."""


class QuadratureWarning(PdltWarning):
    """A Gaussian average taken by a rule that had to cap its nodes, with its estimated relative ``error``,
    ``variance`` (the kernel's largest) and ``d`` (the dimension), for callers that gather such warnings into one."""

    def __init__(self, message: str, error: float = float("nan"), variance: float = float("nan"), d: int = 0):
        super().__init__(message)
        self.error, self.variance, self.d = error, variance, d


@dataclass(frozen=True)
class Caveat:
    """A recorded warning: ``kind`` (``"truncation"``, ``"incomplete"``, ...), a human ``message``, and where
    known the first affected ``layer`` (1..L) and a ``size`` (for truncation: |correction| / |leading term|).
    ``latex``: the message as LaTeX with its formulas in math mode, where the caveat's author wrote one (tables
    for papers use it; otherwise they print ``message`` as escaped prose)."""

    kind: str
    message: str
    layer: int | None = None
    size: float | None = None
    latex: str | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "layer": self.layer, "size": self.size, "latex": self.latex}


# A 1/n correction larger than this fraction of the term it corrects is "not small": the neglected O(1/n^2)
# terms are then of the same order as the kept correction, so the prediction is flagged (never silently shown).
TRUNCATION_THRESHOLD = 0.5


_WIDEN = "widen the network or reduce the depth (L/n)"


def truncation_caveat(ratio: float, what: str, layer: int | None = None, advice: str = _WIDEN,
                      what_tex: str | None = None, advice_tex: str | None = None) -> Caveat | None:
    """A ``"truncation"`` caveat when ``|ratio| = |O(1/n) term| / |leading term|`` exceeds
    :data:`TRUNCATION_THRESHOLD` (or is not finite), else None. ``what`` names the quantity, e.g. ``"G1/(n K)"``,
    and ``what_tex`` the same in LaTeX (then the caveat carries a LaTeX message too); ``advice`` says what makes
    the correction small again (``advice_tex``: in LaTeX; by default the usual advice with its ratio in math, any
    other as escaped prose)."""
    import math

    r = abs(float(ratio))
    if math.isfinite(r) and r <= TRUNCATION_THRESHOLD:
        return None
    where = f" at layer l = {layer}" if layer is not None else ""
    latex = None
    if what_tex is not None:
        from .latex import escape, fmt_number

        at = rf" at layer $\ell = {layer}$" if layer is not None else ""
        value = fmt_number(ratio, 3) if math.isfinite(float(ratio)) else "not finite"
        latex = (f"{what_tex} $=$ {value}{at}"
                 + r": the $1/n$ correction is not small against the leading term (threshold "
                 + f"${TRUNCATION_THRESHOLD}$), so the neglected $O(1/n^2)$ terms may be as large; "
                 + (advice_tex if advice_tex is not None else
                    r"widen the network or reduce the depth ($L/n$)" if advice == _WIDEN else escape(advice)))
    return Caveat("truncation", f"{what} = {ratio:.3g}{where}: the 1/n correction is not small against the leading "
                  f"term (threshold {TRUNCATION_THRESHOLD}), so the neglected O(1/n^2) terms may be as large; {advice}",
                  layer, r, latex)


#: a solve whose estimated relative round-off (condition number x relative accuracy of the kernel entries) exceeds
#: this gets a ``"round-off"`` caveat
ROUNDOFF_THRESHOLD = 1e-3


def roundoff_caveat(eigenvalues, accuracy: float, what: str, layer: int | None = None,
                    advice: str = "raise noise_var") -> Caveat | None:
    """A ``"round-off"`` caveat when a solve against a symmetric block with ascending ``eigenvalues`` (``(..., k)``,
    positive) whose entries carry relative errors ``accuracy`` (e.g. :func:`pdlt.theory.kernel.kernel_accuracy`) may
    lose more than :data:`ROUNDOFF_THRESHOLD` of the result: the error bound is the condition number times
    ``accuracy``. ``layer``: the (first) layer concerned. Near singular blocks the computed condition number itself
    saturates (the entries' errors put a floor under the smallest eigenvalue), so from 0.1 on the message says the
    result is unreliable rather than quoting a size."""
    import numpy as np

    ev = np.asarray(eigenvalues, dtype=np.float64)
    err = float(np.max(ev[..., -1] / ev[..., 0])) * float(accuracy)
    if err <= ROUNDOFF_THRESHOLD:
        return None
    where = f" at layer l = {layer}" if layer is not None else ""
    effect = ("so the result is unreliable (the estimate saturates near a singular block: the error may be larger)"
              if err >= 0.1 else "so the result may be off by that fraction")
    return Caveat("round-off", f"{what}{where}: the training block's condition number times the relative accuracy "
                  f"{accuracy:g} of the kernel's entries reaches {err:.2g}, {effect} (the kernel's structure that the "
                  f"posterior resolves is near the accuracy of its entries); {advice}", layer, err)


def first_truncation_caveat(ratios, what: str, first_layer: int, advice: str = _WIDEN,
                            what_tex: str | None = None, advice_tex: str | None = None) -> Caveat | None:
    """The caveat of the first layer whose ratio (``ratios[i]`` at layer ``first_layer + i``) is not small, or
    None: one caveat per quantity, at the depth where the expansion first breaks."""
    for i, r in enumerate(ratios):
        c = truncation_caveat(r, what, first_layer + i, advice, what_tex, advice_tex)
        if c is not None:
            return c
    return None


def first_out_of_range(arrays: dict) -> dict:
    """For stacked per-layer arrays ``{name: (L, ...)}``: ``{name: i}``, the first index i along the first axis where
    that array holds a non-finite entry or one beyond 1e300 in size (float64's range, with room for the products
    formed from it), for the names that leave the range, in the order given; empty where none does. The caller names
    the layer in its :class:`DivergentFlowError`."""
    import numpy as np

    out = {}
    for name, v in arrays.items():
        v = np.asarray(v)
        with np.errstate(invalid="ignore"):
            bad = ~np.all(np.abs(v.reshape(v.shape[0], -1)) <= 1e300, axis=1)      # (NaN compares False)
        if bad.any():
            out[name] = int(np.argmax(bad))
    return out


def emit(caveats, stacklevel: int = 3) -> None:
    """Issue each caveat as a Python warning of the matching class (TruncationWarning, IncompleteWarning)."""
    import warnings

    for c in caveats:
        cls = {"truncation": TruncationWarning, "incomplete": IncompleteWarning}.get(c.kind, PdltWarning)
        warnings.warn(c.message, cls, stacklevel=stacklevel)

"""Argument checks shared by every public entry point: one place, one wording.

Each check returns the normalized value or raises :class:`pdlt.errors.ParameterError` (a ``ValueError``) whose
message names the argument. Booleans are never accepted as numbers, floats are never silently truncated to
integers, complex values are refused (their imaginary part would be dropped), NaN and inf are refused.

>>> check_int(3.0, "n_samples", minimum=1)
3
>>> check_int(2.5, "n_samples")
Traceback (most recent call last):
...
pdlt.errors.ParameterError: n_samples must be an integer, got 2.5
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import ParameterError

__all__ = ["check_int", "check_seed", "check_real", "check_real_array", "check_subset"]


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (a float with an integral value is accepted) within ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, numbers.Real)):
        raise ParameterError(f"{name} must be an integer, got {value!r}", name)
    if isinstance(value, numbers.Integral):
        out = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or not f.is_integer():
            raise ParameterError(f"{name} must be an integer, got {value!r}", name)
        out = int(f)
    if minimum is not None and out < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {out}", name)
    if maximum is not None and out > maximum:
        shown = out if out < 10**20 else f"~1e{len(str(out)) - 1}"
        raise ParameterError(f"{name} must be <= {maximum}, got {shown}", name)
    return out


def check_seed(seed, name: str = "seed") -> int:
    """A PRNG seed: an integer in [0, 2**63)."""
    return check_int(seed, name, minimum=0, maximum=2**63 - 1)


def check_real(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
               open_minimum: bool = False) -> float:
    """A finite real number within the bounds (``open_minimum``: strictly above ``minimum``)."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (complex, np.complexfloating)) \
            or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a real number, got {value!r}", name)
    try:
        f = float(value)
    except OverflowError:           # (an int beyond float64's range)
        f = math.inf
    if not math.isfinite(f):
        raise ParameterError(f"{name} must be finite, got {value!r}", name)
    if minimum is not None and (f < minimum or (open_minimum and f == minimum)):
        rel = ">" if open_minimum else ">="
        raise ParameterError(f"{name} must be {rel} {minimum}, got {f}", name)
    if maximum is not None and f > maximum:
        raise ParameterError(f"{name} must be <= {maximum}, got {f}", name)
    return f


def check_real_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """A finite real float64 array (complex, object, string and non-finite entries are refused)."""
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged nested lists and the like
        raise ParameterError(f"{name} must be an array of real numbers: {err}", name) from None
    if arr.dtype.kind == "c":
        raise ParameterError(f"{name} must be real; got a complex array (its imaginary part would be lost)", name)
    if arr.dtype.kind not in "biuf":
        raise ParameterError(f"{name} must be an array of real numbers, got dtype {arr.dtype}", name)
    arr = arr.astype(np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ParameterError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}", name)
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} contains NaN or inf", name)
    return arr


def check_subset(value, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A non-empty selection from ``allowed``, given as one name or a tuple/list of names: returned in the order
    of ``allowed`` (``wrt=("x", "y")`` and ``wrt="y"`` style arguments)."""
    items = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (tuple, list)) else ()
    if not items or any(not isinstance(w, str) or w not in allowed for w in items):
        raise ParameterError(f"{name} must name one or more of {allowed} (e.g. {allowed[:1]}), got {value!r}", name)
    return tuple(w for w in allowed if w in items)

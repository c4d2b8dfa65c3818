"""Symbolic (sympy) side of pdlt: Gaussian averages, recursions, critical points, asymptotics, LaTeX.

Every function writes its results in the one set of symbols of :mod:`pdlt.symbolic.symbols` (also reachable as
``sym.K``, ``sym.K_l``, ``sym.C_W``, ``sym.r``, ...), so results of different calls combine. Symbols print with
plain names (``K_next``, ``C_W``) and typeset in PDLT notation through any sympy LaTeX printer.

>>> from pdlt import symbolic as sym
>>> sym.critical_point("tanh")["C_W"]
1
>>> sym.symbols.K_l is sym.K_l
True
"""

from . import symbols
from .asymptotics import Asymptotics, angle_map_scale_invariant, asymptotics
from .finite_width import (
    FiniteWidthAsymptotics,
    G1_l,
    G1_next,
    K_1,
    V_l,
    V_next,
    evaluate,
    finite_width_asymptotics,
    iterate_single_input,
    kstar0_expansion,
    nlo_kernel_recursion,
    nlo_source,
    quartic_average,
    r,
    scale_invariant_closed_forms,
    vertex_recursion,
    vertex_source,
)
from .delta import DELTA_NAMES, delta_finite_width_recursions, delta_state_symbols
from .nnlo import kstar0_limits, linear_residual_closed_forms, nnlo_recursions, sextic_average
from .ntk import (
    NTK_NAMES,
    NTKAsymptotics,
    iterate_ntk_statistics,
    ntk_asymptotics,
    ntk_closed_forms,
    ntk_statistics_recursions,
    sigma_generic,
)
from .expectation import GaussianAverage, gaussian_average, gaussian_average2, moment_average
from .recursions import (
    C_W,
    K,
    K_l,
    K_next,
    C_b,
    critical_point,
    delta_recursions,
    ell,
    g,
    kernel_recursion,
    ntk_recursion,
    pair_average,
    susceptibilities,
    taylor_a,
)


def latex(obj, **settings) -> str:
    """LaTeX of a sympy expression, an Eq, or an :class:`Asymptotics` (as an ``align`` block); the shared symbols
    print in PDLT notation (``sympy.latex`` gives the same; ``settings`` go to it)."""
    import sympy as sp

    if hasattr(obj, "latex") and not isinstance(obj, sp.Basic):
        return obj.latex()
    return sp.latex(obj, **settings)


__all__ = [
    "symbols", "Asymptotics", "angle_map_scale_invariant", "asymptotics", "GaussianAverage", "gaussian_average",
    "gaussian_average2", "moment_average", "C_W", "C_b", "K", "K_l", "K_next", "ell", "critical_point",
    "delta_recursions", "g", "kernel_recursion", "ntk_recursion", "pair_average", "susceptibilities", "taylor_a", "latex",
    "FiniteWidthAsymptotics", "G1_l", "G1_next", "K_1", "V_l", "V_next", "evaluate", "finite_width_asymptotics",
    "iterate_single_input", "kstar0_expansion", "nlo_kernel_recursion", "nlo_source", "quartic_average", "r",
    "scale_invariant_closed_forms", "vertex_recursion", "vertex_source", "DELTA_NAMES",
    "delta_finite_width_recursions", "delta_state_symbols",
    "NTK_NAMES", "NTKAsymptotics", "iterate_ntk_statistics", "ntk_asymptotics", "ntk_closed_forms",
    "ntk_statistics_recursions", "sigma_generic",
    "kstar0_limits", "linear_residual_closed_forms", "nnlo_recursions", "sextic_average",
]

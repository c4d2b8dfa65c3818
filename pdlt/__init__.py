"""pdlt: perturbative field theory of finite-width neural networks (PDLT conventions).

Public API (see README):

>>> import pdlt, numpy as np
>>> net = pdlt.MLP("tanh", widths=(2, 64, 64, 64, 1), C_W=1.0, C_b=0.0)
>>> flow = pdlt.kernel_flow(net, np.array([[1.0, 0.0], [0.6, 0.8]]))
>>> flow.K.shape
(4, 2, 2)
>>> pdlt.criticality("tanh").universality
'K*=0'
"""

from . import symbolic
from .activations import Activation, activation, available_activations, register
from .architecture import MLP
from .errors import DivergentFlowError, SingularKernelError
from .gaussian import expect, expect_mp
from .theory.criticality import (
    Criticality,
    CorrelationLength,
    FixedPoint,
    chi_par,
    chi_perp,
    correlation_length,
    criticality,
    fixed_points,
    single_input,
)
from .theory.bayes import EffectiveAction, Posterior, effective_action, posterior, posterior_mean_closed_form
from .theory.delta_expansion import DeltaFiniteWidth, delta_finite_width, from_gamma_vertex, gamma_vertex
from .theory.finite_width import FiniteWidth, finite_width
from .theory.kernel import (
    DeltaFlow,
    KernelFlow,
    delta_flow,
    first_layer_kernel,
    from_gamma,
    gamma_components,
    kernel_flow,
    kernel_map,
    pair_average,
)

from .montecarlo import Estimate, MCResult, sample
from .montecarlo.bayes import PosteriorMC, posterior_mc
from .montecarlo.langevin import LangevinResult, langevin_posterior
from .comparison import Comparison, Row, compare
from .fits import InverseWidthFit, inverse_width_fit
from .sweeps import WidthSweep, width_sweep

__version__ = "0.1.0"

__all__ = [
    "symbolic", "Activation", "activation", "available_activations", "register", "MLP",
    "DivergentFlowError", "SingularKernelError", "expect", "expect_mp", "Criticality", "CorrelationLength",
    "FixedPoint", "chi_par", "chi_perp", "correlation_length", "criticality", "fixed_points", "single_input",
    "DeltaFlow", "KernelFlow", "delta_flow", "first_layer_kernel", "from_gamma", "gamma_components",
    "kernel_flow", "kernel_map", "pair_average", "FiniteWidth", "finite_width", "DeltaFiniteWidth",
    "delta_finite_width", "gamma_vertex", "from_gamma_vertex", "Comparison", "Row", "compare", "InverseWidthFit",
    "inverse_width_fit", "WidthSweep", "width_sweep", "EffectiveAction", "Posterior", "effective_action",
    "posterior", "posterior_mean_closed_form", "PosteriorMC", "posterior_mc", "LangevinResult", "langevin_posterior",
    "__version__",
    "sample", "Estimate", "MCResult",
]

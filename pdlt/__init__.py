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

import importlib as _importlib

# The public names and their homes. They are imported on first use (PEP 562), so `import pdlt` is cheap and a
# command-line run can install its signal handlers before the heavy imports (numpy, sympy, JAX) start.
_HOMES = {
    ".activations": ("Activation", "activation", "available_activations", "register"),
    ".architecture": ("MLP",),
    ".errors": ("DivergentFlowError", "SingularKernelError", "VanishingFlowError", "ParameterError", "PdltError",
                "TruncationWarning"),
    ".gaussian": ("expect", "expect_mp"),
    ".theory.criticality": ("Criticality", "CorrelationLength", "FixedPoint", "chi_par", "chi_perp",
                            "correlation_length", "criticality", "fixed_points", "single_input"),
    ".theory.bayes": ("EffectiveAction", "Posterior", "effective_action", "posterior", "posterior_mean_closed_form"),
    ".theory.delta_expansion": ("DeltaFiniteWidth", "delta_finite_width", "from_gamma_vertex", "gamma_vertex"),
    ".theory.finite_width": ("FiniteWidth", "finite_width"),
    ".theory.nnlo": ("NNLO", "nnlo"),
    ".theory.nnlo_inputs": ("NNLOInputs",),
    ".theory.metric_closure": ("AllOrders", "all_orders"),
    ".theory.wishart": ("LinearAllOrders", "linear_all_orders"),
    ".theory.linear_residual": ("LinearNTKAllOrders", "linear_ntk_all_orders"),
    ".theory.relu_ntk": ("ReluNTKAllOrders", "relu_ntk_all_orders"),
    ".theory.ntk_nnlo": ("NTKSecondOrder", "ntk_nnlo"),
    ".theory.influence": ("Influence", "influence", "TemperatureSweep", "temperature_sweep"),
    ".theory.interactions": ("Interactions", "interactions"),
    ".theory.locality": ("LocalityProfile", "locality_profile", "LocalityLaw", "locality_law", "Screening",
                         "screening"),
    ".theory.residual": ("ResidualCriticality", "residual_criticality", "residual_nu"),
    ".theory.training": ("TrainPrediction", "train_prediction"),
    ".theory.ntk": ("NTK", "ntk", "learning_rates", "CriticalLearningRates", "critical_learning_rates"),
    ".theory.kernel": ("DeltaFlow", "KernelFlow", "delta_flow", "first_layer_kernel", "from_gamma",
                       "gamma_components", "kernel_flow", "kernel_map", "pair_average"),
    ".montecarlo": ("Estimate", "MCResult", "sample", "sample_ntk", "sample_trained", "TrainedMC"),
    ".montecarlo.bayes": ("PosteriorMC", "posterior_mc"),
    ".montecarlo.influence": ("InfluenceMC", "influence_mc"),
    ".montecarlo.langevin": ("LangevinResult", "langevin_posterior"),
    ".comparison": ("Comparison", "Row", "compare"),
    ".fits": ("InverseWidthFit", "inverse_width_fit"),
    ".sweeps": ("WidthSweep", "width_sweep", "NTKWidthSweep", "ntk_width_sweep"),
    ".breakdown": ("BreakdownCase", "BreakdownCurve", "breakdown_cases", "breakdown_curve"),
}
_HOME = {name: mod for mod, names in _HOMES.items() for name in names}


def __getattr__(name):
    if name in _HOME:
        value = getattr(_importlib.import_module(_HOME[name], __name__), name)
    else:
        try:  # a submodule, e.g. pdlt.symbolic, pdlt.errors, pdlt.montecarlo
            value = _importlib.import_module("." + name, __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'pdlt' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME) | {"symbolic"})


__version__ = "0.1.0"

# What README teaches. The other names in _HOMES stay reachable as attributes (and in their modules, where they
# are documented) but are not the package's face.
__all__ = [
    "MLP", "activation", "Activation",                                    # the vacuum: architecture
    "kernel_flow", "delta_flow", "criticality", "chi_par", "chi_perp", "correlation_length",   # leading order
    "ntk", "critical_learning_rates",                                     # training: the frozen NTK
    "finite_width", "delta_finite_width", "residual_criticality",         # order 1/n
    "posterior", "effective_action", "train_prediction",                  # learning: Bayes and training
    "influence", "locality_profile",                                      # datapoints as particles
    "sample", "sample_ntk", "sample_trained", "posterior_mc", "langevin_posterior",   # Monte Carlo
    "compare", "width_sweep", "ntk_width_sweep", "expect",                # verification
    "symbolic", "errors", "observables",                                  # modules
    "__version__",
]

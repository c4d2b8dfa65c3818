"""Monte Carlo of finite-width MLPs (JAX): exact samplers, streaming estimators with jackknife errors,
a sharded, chunked, resumable runner; the exact finite-width posterior by reweighting (``bayes``) and by Langevin
dynamics on the weights (``langevin``). Independent of :mod:`pdlt.theory` (``verify`` joins the two).

>>> import pdlt
>>> net = pdlt.MLP("relu", widths=(1, 4, 4), C_W=2.0)
>>> res = pdlt.sample(net, [[1.0]], n_samples=64, batches=8)
>>> res.two_point.mean.shape
(2, 1, 1)
"""

from .activations_jax import jax_activation
from .bayes import PosteriorMC, posterior_mc, sample_metric
from .estimators import BatchSums, Estimate, Statistics, estimate_from_samples, jackknife, layer_stats, \
    metric_stats, statistics
from .runner import DEFAULT_MEMORY_BUDGET, MCResult, bytes_per_network, check_output_path, load, merge, sample, \
    sample_ntk, sample_trained
from .training import TrainedMC
from .langevin import LangevinResult, langevin_posterior
from .samplers import METHODS, network_fn, psd_sqrt, sample_layers

__all__ = [
    "jax_activation", "BatchSums", "Estimate", "Statistics", "estimate_from_samples", "jackknife", "layer_stats",
    "metric_stats", "statistics", "DEFAULT_MEMORY_BUDGET", "MCResult", "bytes_per_network", "check_output_path",
    "load", "merge", "sample",
    "sample_ntk", "sample_trained", "TrainedMC",
    "METHODS",
    "network_fn", "psd_sqrt", "sample_layers", "PosteriorMC", "posterior_mc", "sample_metric", "LangevinResult",
    "langevin_posterior",
]

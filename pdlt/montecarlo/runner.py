r"""The Monte Carlo runner: chunks under a memory budget, shards over devices, checkpoints, resumes.

:func:`sample` draws ``n_samples`` networks and streams their per-layer statistics into ``B`` batch sums
(:mod:`pdlt.montecarlo.estimators`), returning an :class:`MCResult` of :class:`Estimate` objects.

* **Reproducible by construction.** Network s is drawn from ``fold_in(key(seed), s)`` and goes to batch
  ``s mod B``; a chunk is a contiguous range of sample indices, padded to a fixed size (padding is masked),
  so one compiled function serves every chunk and the result does not depend on the chunk size or the
  number of devices (up to float64 summation order, ~1e-15 relative).
* **Processes and parts.** ``distributed=True`` shares one run among the processes of a ``jax.distributed`` run
  (:mod:`pdlt.montecarlo.distributed`: rounds of chunks, one exchange of the batch sums at agreed points, one
  checkpoint written by process 0 that any number of processes resumes). ``part=(i, k)`` samples only a range of
  network indices, recorded as ``config["networks"]`` (outside the fingerprint); :func:`merge` adds the batch sums
  of parts that do not overlap and leave no gap.
* **Devices.** The chunk's sample axis is split over ``jax.sharding.Mesh(devices, ("s",))`` with
  ``jax.shard_map``; each device sums its networks into ``(B, L, F)`` and the sums are ``psum``-reduced.
* **Memory.** ``memory_budget`` (bytes of working memory per device) sets the chunk size from an estimate of
  the bytes one network needs (:func:`bytes_per_network`); an explicit ``chunk_size`` overrides it (within the
  budget, see below).
* **Checkpoints.** With ``checkpoint=PATH`` the state (batch counts and sums, float64, plus the configuration)
  is written atomically (temporary file ``PATH.tmp``, fsync, ``os.replace``) every ``checkpoint_every`` seconds
  (0: after every chunk), at the end, on an interrupt and before a divergence error; calling :func:`sample`
  again with the same ``PATH`` resumes and gives the uninterrupted result. A checkpoint of another configuration
  is refused. ``n_samples`` may grow between calls (the batch assignment does not depend on it). A checkpoint
  file is a saved :class:`MCResult`. ``PATH`` must be a file in an existing, writable directory (checked before
  sampling starts; no directory is created); ``.npz`` is appended when ``PATH`` does not end in it, and the
  result's ``info["checkpoint"]`` holds the real path.
* **Integrity.** Every file carries a sha256 checksum over its arrays (name, dtype, shape, bytes) and the
  canonical JSON of its configuration; :func:`load` (and resuming) also checks the shapes against the
  configuration, that the sums are finite, that the counts are those of the interleaved assignment of networks
  ``0..N-1`` and that no sum of even powers is negative. Anything else raises
  :class:`pdlt.errors.CheckpointError` naming the file: a corrupt or tampered file is never used. Files of the
  first format (no checksum) cannot be validated and are refused the same way.
* **Interrupts.** Inside :func:`sample` (main thread only), SIGINT (Ctrl-C) and SIGTERM (cluster schedulers)
  are caught by a handler that only records the signal (nothing is raised inside JAX); the loop stops at the
  next chunk boundary, saves the checkpoint (whatever the ``checkpoint_every`` timer says), prints one line on
  stderr saying how to resume, and returns the partial result with ``complete=False`` and
  ``interrupted="SIGINT"`` / ``"SIGTERM"``. A signal that arrives before the first chunk is done lets that
  chunk finish, so that there is always something to save. A *second* signal stops the process at once: one
  line on stderr, then ``os._exit(128 + signum)`` (130 for SIGINT, 143 for SIGTERM), leaving the checkpoint
  last written intact. The previous handlers are restored when :func:`sample` returns or raises; a signal that
  was ignored (``SIG_IGN``, e.g. in a background job) stays ignored. A ``KeyboardInterrupt`` raised by
  ``callback`` counts as SIGINT.
* **NTK runs.** :func:`sample_ntk` runs the same loop (checkpoints, resume, interrupts, progress) with the
  per-network function of :mod:`pdlt.montecarlo.ntk_sampler` (explicit weights: network s is network s of
  ``method="weights"``); its configuration adds ``kind="ntk"``, ``lambda_b`` and ``lambda_W`` to the fingerprint
  (preactivation runs carry no ``kind``, so their fingerprints and files are unchanged) and its statistics are
  not rescaled (``scale_log2`` all 0).
* **Training runs.** :func:`sample_trained` runs the same loop with the per-network gradient-descent function of
  :mod:`pdlt.montecarlo.training` (network s is network s of ``method="weights"`` at t = 0); its configuration adds
  ``kind="train"``, the learning rates, ``eta``, ``steps``, ``batch_size``, the recorded steps and the data
  (``x_train``, ``y_train``, ``x_test``; ``x`` is their concatenation) to the fingerprint, its state has one row of
  statistics (the output layer) and its result is a :class:`pdlt.montecarlo.training.TrainedMC`. Diverged networks
  are flagged inside the statistics (never an error) unless every network diverged.
* **Chunk size.** An explicit ``chunk_size`` is capped at ``n_samples`` (rounded up to the device count); a
  chunk whose estimated working memory (:func:`bytes_per_network` times the networks per device) exceeds
  ``memory_budget`` is refused before anything is compiled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import float64
from ..architecture import MLP, check_target_scale, inputs_log10_scale
from ..errors import Caveat, CheckpointError, DistributedError, DivergentFlowError, ParameterError
from ..validation import check_int, check_real, check_seed
from .estimators import BatchSums, Estimate, Statistics, UNDEFINED_REASON, stat_size, statistics, undefined_layers
from .samplers import ACTIVATION_NAN, METHODS, check_dtype, network_fn, reference_scale, scale_arrays
from .ntk_sampler import ntk_bytes_per_network, ntk_network_fn, ntk_stat_size, ntk_statistics
from .distributed import ProcessGroup, agree, process_group
from .training import (TrainSpec, TrainedMC, loss_schedule, spec_from_config, train_bytes_per_network,
                       train_cache_chunk, train_network_fn, train_stat_size, train_state_problem)

__all__ = ["MCResult", "sample", "sample_ntk", "sample_trained", "load", "merge", "check_output_path",
           "bytes_per_network",
           "DEFAULT_MEMORY_BUDGET", "KINDS"]

#: what a run measures: the preactivation correlators (:func:`sample`) or those plus the NTK, dNTK and ddNTK
#: statistics (:func:`sample_ntk`); carried in the configuration as ``config["kind"]`` for NTK runs only, so the
#: fingerprints (and checkpoints) of preactivation runs are unchanged
KINDS = ("preactivations", "ntk", "train")


def _kind(config: dict) -> str:
    return config.get("kind", "preactivations")


def _stat_size(config: dict, d: int) -> int:
    """Entries of one layer's per-network statistics for the run's kind (training runs: of the one row)."""
    if _kind(config) == "train":
        return train_stat_size(spec_from_config(config))
    return ntk_stat_size(d) if _kind(config) == "ntk" else stat_size(d)


def _measured_widths(config: dict) -> tuple:
    """Widths of the layers whose statistics a run's state holds: every layer, or the output layer alone (training
    runs)."""
    w = tuple(int(n) for n in config["widths"])
    return w[-1:] if _kind(config) == "train" else w[1:]


def _result_class(config: dict):
    """:class:`MCResult`, or :class:`pdlt.montecarlo.training.TrainedMC` for a training run."""
    return TrainedMC if _kind(config) == "train" else MCResult

#: default working-memory budget per device (bytes)
DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: largest chunk per device chosen automatically (on CPU, chunks that stay in cache run fastest: markov at
#: n=512, d=4 gives ~4000 networks/s at 256 vs ~3100 at 1024)
MAX_CHUNK_PER_DEVICE = 256
#: version of the sampling scheme (PRNG contract, statistics layout); part of the configuration fingerprint
FORMAT = 1
#: version of the file container: 2 adds the sha256 checksum (files of version 1 are refused, see load)
FILE_FORMAT = 2


def bytes_per_network(method: str, widths, d: int, dtype: str = "float64") -> int:
    """Estimated peak working memory (bytes) of one sampled network inside a chunk.

    markov: ~6 arrays of ``n d`` (normals, z, sigma(z), pair products of the layers measured on their rows) plus 3
    copies of the ``L F`` statistics; weights additionally ~3 copies of the largest weight matrix ``n_l n_{l-1}``. A
    float32 network (``dtype``) counts its arrays at half the bytes and the statistics at float64, plus, for
    markov, the float64 ``sigma(z)`` and ``R eps`` of its float64 metric; the ``8`` per weight entry is a margin
    (float32 normals no longer pass through float64).
    """
    if method not in ("markov", "weights"):
        raise ParameterError(f"method must be 'markov' or 'weights', got {method!r}", "method")
    try:
        widths = tuple(check_int(n, "widths", minimum=1) for n in widths)
    except TypeError:
        raise ParameterError(f"widths must be a list of layer widths, got {widths!r}", "widths") from None
    if len(widths) < 2:
        raise ParameterError(f"widths must list n_0 and at least one layer width, got {widths}", "widths")
    d = check_int(d, "d", minimum=1)
    L, P = len(widths) - 1, d * (d + 1) // 2
    nmax = max(widths[1:])
    item = np.dtype(dtype).itemsize
    b = item * (6 * nmax * max(d, P) + 4 * d * d) + 8 * 3 * L * stat_size(d)
    if method == "markov" and item < 8:
        b += 8 * 2 * nmax * d
    if method == "weights":
        b += (8 + 2 * item) * max(widths[l] * widths[l - 1] for l in range(1, L + 1))
    return b


#: ``memory_budget="auto"``: this fraction of each device's free memory (GPUs report it; elsewhere the default)
AUTO_MEMORY_FRACTION = 0.25


def _is_auto(memory_budget) -> bool:
    """Whether ``memory_budget`` is ``"auto"``; any other string is a ParameterError naming it."""
    if not isinstance(memory_budget, str):
        return False
    if memory_budget != "auto":
        raise ParameterError(f"memory_budget must be a positive number of bytes or 'auto', got {memory_budget!r}",
                             "memory_budget")
    return True


def _auto_budget(devices) -> float:
    """The per-device budget of ``memory_budget="auto"``: :data:`AUTO_MEMORY_FRACTION` of the smallest free memory
    (``bytes_limit - bytes_in_use``) among ``devices`` (every device runs an equal share of a chunk), or
    :data:`DEFAULT_MEMORY_BUDGET` where a device does not report its memory (CPU: ``memory_stats()`` is None)."""
    free = []
    for dv in devices:
        try:
            stats = dv.memory_stats()
        except Exception:       # backends without the query raise instead of returning None
            stats = None
        if not stats or "bytes_limit" not in stats:
            return float(DEFAULT_MEMORY_BUDGET)
        free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return max(AUTO_MEMORY_FRACTION * min(free), 1.0)


#: the kernels a float32 network may have: float32 overflows above ~3e38 and flushes to 0 below ~1e-38, and the
#: metric holds products of two preactivations summed over a layer, so this keeps several decades of margin
FLOAT32_KERNEL_RANGE = (1e-30, 1e30)


def _check_float32_range(net: MLP, x: np.ndarray, scale_log2) -> None:
    """ParameterError naming ``dtype`` when a float32 network would leave :data:`FLOAT32_KERNEL_RANGE`: the inputs'
    ``max x^2`` or, per layer, the pilot's ``4**k_l`` (``2**k_l`` is the typical largest ``|z^(l)|``, so this is the
    kernel within a factor ~10; :func:`pdlt.montecarlo.samplers.reference_scale`)."""
    lo, hi = FLOAT32_KERNEL_RANGE
    xmax = float(np.max(np.abs(x)))
    xx = xmax * xmax if xmax < 1e150 else np.inf        # (Python's float ** 2 raised OverflowError at 1e200)
    if xx > hi:
        raise ParameterError(f"dtype='float32' cannot hold these inputs: max x^2 = {xx:.1e} is beyond {hi:.0e} "
                             "(float32 overflows above ~3e38); use dtype='float64' or scale the inputs down", "dtype")
    K = np.ldexp(1.0, 2 * np.asarray(scale_log2, dtype=np.int64))
    bad = np.flatnonzero((K < lo) | (K > hi))
    if bad.size:
        l = int(bad[0]) + 1
        raise ParameterError(
            f"dtype='float32' cannot sample this network: the preactivations of layer l = {l} have a kernel of "
            f"~{K[l - 1]:.1e} (pilot), outside float32's working range [{lo:.0e}, {hi:.0e}] (float32 overflows above "
            f"~3e38 and flushes to 0 below ~1e-38); use dtype='float64' (C_W^({l}) = {net.hyper(l)[0]:g})", "dtype")


# ---------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------


#: observables a residual run with an activation that is not odd does not estimate (layers l >= 2 are NaN, listed in
#: ``MCResult.undefined``)
RESIDUAL_UNDEFINED = ("six_point_single", "normalized_six_point_single")
RESIDUAL_UNDEFINED_REASON = ("not estimated for residual networks whose activation is not odd: a shortcut then gives "
                             "one neuron a third moment of order 1/n, which the six-point estimator "
                             "(mu6 - 15 mu4 mu2 + 30 mu2^3) assumes to be 0")


def _six_point_masked(config: dict) -> bool:
    """A residual run whose activation is not odd (or not known to be): its one-neuron odd moments need not vanish.
    The activation is looked up by name in the registry and must match the recorded expression (a loaded file's text
    is never evaluated)."""
    if "gamma" not in config:
        return False
    try:
        import sympy as sp

        from ..activations import activation

        act = activation(config["activation"])
        return not (sp.srepr(act.expr) == config["activation_expr"] and act.odd)
    except Exception:         # an unknown, custom or foreign activation: keep the estimator masked
        return True


def _masked(est: Estimate, layers) -> Estimate:
    """``est`` with the layers at the given indices (0-based) set to NaN (documented as undefined)."""
    mean, se = est.scaled_mean.copy(), est.scaled_stderr.copy()
    idx = list(layers)
    mean[idx], se[idx] = np.nan, np.nan
    return Estimate(mean, se, est.log2, est.layer, est.name, est.normalized)


@dataclass(frozen=True, eq=False)
class MCResult:
    """Monte Carlo estimates for every layer l = 1..L (arrays hold layer l at index l - 1).

    Every observable of :mod:`pdlt.observables` is an attribute of the same name, as on :class:`pdlt.FiniteWidth`
    (``mc.four_point`` against ``theory.four_point(l)``), and :meth:`estimate` looks one up by name:

    * ``two_point``          ``(L, d, d)``         ``E[z_{i;a} z_{i;b}]``  (theory: ``K + G1/n_{l-1}``);
    * ``four_point``         ``(L, d, d, d, d)``   distinct neurons, connected (theory ``V/n_{l-1}``); NaN for a
      layer of width 1;
    * ``four_point_single``  ``(L, d, d, d, d)``   one neuron's fourth cumulant;
    * ``six_point_single``   ``(L, d)``            one neuron's sixth cumulant per input;
    * ``vertex``             ``(L, d, d, d, d)``   ``n_{l-1} * four_point`` (estimates PDLT's ``V^(l)`` to O(1/n));
    * ``normalized_vertex``, ``kurtosis``, ``normalized_six_point_single`` ``(L, d)``: scale-free ratios.

    Each is an :class:`Estimate` (``.mean``, ``.stderr``). ``n_samples`` networks were used; ``complete`` is False
    for an interrupted run (``n_samples < config["n_samples"]``), ``interrupted`` then names the signal that
    stopped it (``"SIGINT"``, ``"SIGTERM"``; None otherwise) and ``caveats`` holds an ``"incomplete"``
    :class:`pdlt.errors.Caveat`. ``state`` holds the raw batch sums.
    """

    two_point: Estimate
    four_point: Estimate
    four_point_single: Estimate
    six_point_single: Estimate
    state: BatchSums
    config: dict
    complete: bool
    elapsed: float = 0.0
    info: dict = field(default_factory=dict)
    interrupted: str | None = None
    statistics: Statistics | None = None     # all estimates incl. the normalized ones (set by from_state)
    ntk: dict | None = None                  # NTK runs: {name: Estimate} for NTK_NAMES + NTK_EXTRA

    @classmethod
    def from_state(cls, state: BatchSums, config: dict, complete: bool, elapsed: float = 0.0, info=None,
                   interrupted: str | None = None) -> "MCResult":
        ntk = None
        plain = state
        if _kind(config) == "ntk":     # the plain statistics lead each layer's vector (ntk_sampler.ntk_layout)
            plain = BatchSums(state.counts, state.sums[..., :stat_size(state.d)], state.widths, state.d)
            ntk = ntk_statistics(state.counts, state.sums, state.d, tuple(config["widths"]))
        st = statistics(plain, config.get("scale_log2"))   # the units the sums were accumulated in
        if _six_point_masked(config):   # the six-point estimator assumes mu_3 = 0 (with shortcuts: odd sigma only)
            st = replace(st, **{name: _masked(getattr(st, name), range(1, len(config["widths"]) - 1))
                                for name in RESIDUAL_UNDEFINED})
        return cls(*(getattr(st, k) for k in Statistics.NAMES), state=state, config=config, complete=complete,
                   elapsed=elapsed, info=dict(info or {}), interrupted=interrupted, statistics=st, ntk=ntk)

    @property
    def kind(self) -> str:
        """``"preactivations"`` (:func:`sample`) or ``"ntk"`` (:func:`sample_ntk`)."""
        return _kind(self.config)

    def _ntk_estimate(self, name: str) -> Estimate:
        if self.ntk is None:
            raise ParameterError(f"{name} is an NTK statistic: this is a {self.kind} run; use pdlt.sample_ntk to "
                                 "estimate it", "quantity")
        return self.ntk[name]

    # the NTK family (pdlt.sample_ntk; tensor conventions in pdlt.montecarlo.ntk_sampler), layer l at index l - 1
    ntk_mean = property(lambda self: self._ntk_estimate("ntk_mean"), doc="``(L, d, d)`` E[H_ii;ab] (Rao-Blackwellized)")
    A = property(lambda self: self._ntk_estimate("A"), doc="``(L, d, d, d, d)`` n_(l-1) Cov(H_ii;ab, H_jj;ce)")
    B = property(lambda self: self._ntk_estimate("B"), doc="``(L, d, d, d, d)`` n_(l-1) E[H_ij;ac H_ij;be]")
    D = property(lambda self: self._ntk_estimate("D"), doc="``(L, d, d, d, d)`` n_(l-1) Cov(H_ii;ab, z_j;c z_j;e)")
    F = property(lambda self: self._ntk_estimate("F"), doc="``(L, d, d, d, d)`` n_(l-1) E[H_ij;ac z_i;b z_j;e]")
    P = property(lambda self: self._ntk_estimate("P"), doc="``(L, d, d, d, d)`` n_(l-1) E[dH_ijj;abc z_i;e]")
    Q = property(lambda self: self._ntk_estimate("Q"), doc="``(L, d, d, d, d)`` n_(l-1) E[dH_iij;abc z_j;e]")
    R = property(lambda self: self._ntk_estimate("R"), doc="``(L, d, d, d, d)`` n_(l-1) E[ddI_iijj;abce]")
    S = property(lambda self: self._ntk_estimate("S"), doc="``(L, d, d, d, d)`` n_(l-1) E[ddII_iijj;abce]")
    T = property(lambda self: self._ntk_estimate("T"), doc="``(L, d, d, d, d)`` n_(l-1) E[ddII_ijij;aebc]")
    U = property(lambda self: self._ntk_estimate("U"), doc="``(L, d, d, d, d)`` n_(l-1) E[ddII_ijji;aceb]")
    ntk_variance = property(lambda self: self._ntk_estimate("ntk_variance"),
                            doc="``(L, d)`` one neuron's NTK variance Var(H_ii;aa), measured directly")
    ntk_relative_variance = property(lambda self: self._ntk_estimate("ntk_relative_variance"),
                                     doc="``(L, d)`` ntk_variance / ntk_mean_aa^2")
    dntk_relative = property(lambda self: self._ntk_estimate("dntk_relative"),
                             doc="``(L, d)`` (P_aaaa + 2 Q_aaaa)/(n_(l-1) ntk_mean_aa^2)")

    def _normalized(self, name: str) -> Estimate:
        st = self.statistics if self.statistics is not None else statistics(self.state, self.config.get("scale_log2"))
        return getattr(st, name)

    def estimate(self, name: str) -> Estimate:
        """The :class:`Estimate` of the observable ``name`` (:mod:`pdlt.observables`; ParameterError listing the
        valid names otherwise): raw ones are fields, derived ones are ``n_{l-1}`` times their base, normalized ones
        come from the statistics."""
        from ..observables import get

        obs = get(name)
        if getattr(obs, "family", "preactivation") == "ntk":
            return self._ntk_estimate(name)
        if obs.kind == "raw":
            return getattr(self, name)
        if obs.kind == "normalized":
            return self._normalized(name)
        e = self.estimate(obs.base).scaled(np.asarray(self.widths[:-1], dtype=np.float64))
        return Estimate(e.scaled_mean, e.scaled_stderr, e.log2, e.layer, name, obs.normalized)

    @property
    def normalized_vertex(self) -> Estimate:
        """``(L, d)``: ``four_point_aaaa / G_aa^2`` per layer and input, the Monte Carlo counterpart of
        :meth:`pdlt.FiniteWidth.normalized_vertex` (``V_(aa)(aa) / (n_{l-1} K_aa^2)``); scale-free, so representable
        at any depth (use it where ``four_point`` / ``vertex`` raise VanishingFlowError or DivergentFlowError)."""
        return self.estimate("normalized_vertex")

    @property
    def kurtosis(self) -> Estimate:
        """``(L, d)``: one neuron's excess kurtosis ``four_point_single_aaaa / G_aa^2`` (theory: ``kurtosis(l)``)."""
        return self.estimate("kurtosis")

    @property
    def normalized_six_point_single(self) -> Estimate:
        """``(L, d)``: one neuron's sixth cumulant over ``G_aa^3`` (scale-free)."""
        return self.estimate("normalized_six_point_single")

    @property
    def undefined(self) -> dict:
        """``{name: (l, ...)}`` of the entries that are NaN by definition, not by failure: the distinct-neuron
        observables (``undefined_when="width1"`` in :mod:`pdlt.observables`: ``four_point``, ``vertex``,
        ``normalized_vertex``) of a width-1 layer (reason ``UNDEFINED_REASON``). Empty when every layer has
        width >= 2."""
        out = undefined_layers(self.widths[1:])
        if _six_point_masked(self.config):
            out.update({name: tuple(range(2, self.L + 1)) for name in RESIDUAL_UNDEFINED if self.L >= 2})
        return out

    def undefined_reason(self, name: str) -> str:
        """Why ``name``'s entries listed in :attr:`undefined` are NaN."""
        if name in RESIDUAL_UNDEFINED and _six_point_masked(self.config):
            return RESIDUAL_UNDEFINED_REASON
        return UNDEFINED_REASON

    @property
    def caveats(self) -> tuple[Caveat, ...]:
        """``(Caveat("incomplete", ...),)`` for a run that stopped before its networks were done, and a ``"part"``
        caveat for a part of a run (``part=``), else ()."""
        out = ()
        lo, hi = _network_range(self.config)
        if "networks" in self.config:
            out = (Caveat("part", f"one part of a Monte Carlo run: networks {lo:,}..{hi - 1:,} of "
                                  f"{int(self.config['n_samples']):,}; combine the parts with pdlt.merge"),)
        if self.complete:
            return out
        why = f" (interrupted by {self.interrupted})" if self.interrupted else ""
        return out + (Caveat("incomplete", f"incomplete Monte Carlo run{why}: {self.n_samples:,} of "
                                           f"{hi - lo:,} networks sampled; resume it to finish"),)

    @property
    def n_samples(self) -> int:
        """Networks actually sampled."""
        return self.state.done

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.config["widths"])

    @property
    def L(self) -> int:
        return len(self.widths) - 1

    @property
    def vertex(self) -> Estimate:
        """``n_{l-1} * four_point`` per layer: the vertex ``V^(l)`` (``n_0`` for l = 1, where it is 0)."""
        return self.estimate("vertex")

    def save(self, path) -> str:
        """Write ``PATH.npz`` (arrays, the configuration and a checksum) and ``PATH.json`` (metadata), each
        atomically. ``.npz`` is appended when ``path`` does not end in it; the directory must exist. Returns the
        .npz path. :func:`load` reads it back (validated); it is also a valid checkpoint to resume from."""
        path = check_output_path(path, "path")
        digest = _write_npz(path, self)
        meta = _metadata(self)
        meta["sha256"] = digest
        _atomic_write(path[:-4] + ".json", json.dumps(meta, indent=2).encode())
        return path

    @classmethod
    def load(cls, path) -> "MCResult":
        return load(path)

    def summary(self) -> str:
        """A short text table: layer, two-point ``G_00``, vertex ``V_(00)(00)`` with standard errors."""
        lo, hi = _network_range(self.config)
        incomplete = "" if self.complete else (
            f" (INCOMPLETE: {self.n_samples} of {hi - lo}"
            + (f", interrupted by {self.interrupted})" if self.interrupted else ")"))
        rows = [f"# {self.config['activation']}, widths={tuple(self.widths)}, method={self.config['method']}, "
                f"seed={self.config['seed']}, networks={self.n_samples}{incomplete}",
                f"{'l':>4}  {'E[z_0 z_0]':>24}  {'V_(00)(00) = n_(l-1) x four_point':>36}"]
        und = self.undefined.get("vertex", ())
        for l in range(1, self.L + 1):
            rows.append(f"{l:4d}  {_pm(self.two_point[l - 1, 0, 0], 13, self.normalized_vertex[l - 1, 0])}  " +
                        (f"{'undefined (width-1 layer)':>36}" if l in und else
                         _pm(self.vertex[l - 1, 0, 0, 0, 0], 25, self.normalized_vertex[l - 1, 0])))
        if und:
            rows.append(f"# layer(s) {', '.join(map(str, und))}: {UNDEFINED_REASON}")
        return "\n".join(rows)


def _pm(e: Estimate, width: int, normalized: Estimate) -> str:
    """``mean +- stderr`` of a scalar estimate, or, where it is not representable in float64, the scale-free
    ``normalized`` estimate under its own name, with a note (never a 0 or inf that is not the answer)."""
    from ..errors import PdltError

    try:
        return f"{float(e.mean):{width}.6g} +- {float(e.stderr):8.2g}"
    except PdltError:
        txt = f"out of float64 range; {normalized.name} {float(normalized.mean):.4g} +- {float(normalized.stderr):.2g}"
        return f"{txt:>{width + 12}}"


def npz_path(path) -> str:
    path = os.fsdecode(os.fspath(path))
    return path if path.endswith(".npz") else path + ".npz"


def check_output_path(path, setting: str = "checkpoint") -> str:
    """The ``.npz`` path a checkpoint or result will be written to, checked before any work is done.

    ``.npz`` is appended when ``path`` does not end in it. Raises :class:`ParameterError` naming ``setting``
    (e.g. ``"checkpoint"``, ``"--out"``) when ``path`` is a directory, when its directory does not exist (none
    is created: a typo must not silently make a directory tree) or when a file cannot be created there (tried by
    creating and removing a temporary file of a unique name next to it).
    """
    try:
        raw = os.fsdecode(os.fspath(path))
    except TypeError:
        raise ParameterError(f"{setting} must be a file path, got {path!r}", setting) from None
    if not raw:
        raise ParameterError(f"{setting} must be a file path, got an empty string", setting)
    if "\x00" in raw:           # (the OS refuses it with a raw ValueError)
        raise ParameterError(f"{setting} must be a file path, got {raw!r} (a NUL character)", setting)
    out = npz_path(raw)
    for p in dict.fromkeys((raw, out)):
        if os.path.isdir(p):
            raise ParameterError(f"{setting} must be a file path, {p} is a directory", setting)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ParameterError(f"cannot write {setting} {out}: the directory {parent} {what}; create it first or "
                             f"choose another {setting} path", setting)
    try:
        # a name of its own: processes of one run (or two runs) checking the same path must not race
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + ".", suffix=".tmp", dir=parent)
        os.close(fd)
        os.remove(tmp)
    except OSError as err:
        raise ParameterError(f"cannot write {setting} {out}: {err.strerror or err}; choose another {setting} path",
                             setting) from None
    return out


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a mix: temporary file,
    fsync, ``os.replace``, fsync of the directory (so the rename itself survives a crash)."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise CheckpointError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:     # directories cannot be opened on some platforms; the data itself is already synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _checksum(arrays: dict) -> str:
    """sha256 over every array but ``checksum`` (name, dtype, shape, bytes; sorted by name) and the canonical JSON
    of the configuration."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == "checksum":
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(_canonical_json([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    h.update(_canonical_json(json.loads(str(arrays["config_json"]))).encode())
    return h.hexdigest()


def save_result(res, path) -> str:
    """:meth:`MCResult.save` for any result (:class:`MCResult`, :class:`pdlt.montecarlo.training.TrainedMC`)."""
    path = check_output_path(path, "path")
    digest = _write_npz(path, res)
    meta = _metadata(res)
    meta["sha256"] = digest
    _atomic_write(path[:-4] + ".json", json.dumps(meta, indent=2).encode())
    return path


def _write_npz(path: str, res) -> str:
    """Write ``res`` (state, configuration, status, estimates, checksum) atomically to ``path``; returns the sha256."""
    status = {"complete": res.complete, "elapsed": res.elapsed, "info": res.info, "interrupted": res.interrupted}
    arrays = {
        "counts": res.state.counts, "sums": res.state.sums,
        "widths": np.asarray(res.state.widths), "d": np.asarray(res.state.d),
        "config_json": np.asarray(_canonical_json(res.config)),
        "status_json": np.asarray(json.dumps(status)),
        "file_format": np.asarray(FILE_FORMAT),
    }
    if isinstance(res, TrainedMC):      # informational copies of the estimates (load() recomputes them)
        for name, e in (res.estimates or {}).items():
            arrays[f"{name}_mean"], arrays[f"{name}_stderr"] = e.mean, e.stderr
    for name in (Statistics.NAMES + ("vertex",)) if isinstance(res, MCResult) else ():
        e = getattr(res, name)
        # informational copies (load() recomputes from the sums): raw values where float64 can hold them, and
        # always the exact scaled form, value = scaled * 2**log2 (deep runs: raw values may not be representable)
        if e.representable:
            arrays[f"{name}_mean"], arrays[f"{name}_stderr"] = e.mean, e.stderr
        arrays[f"{name}_scaled_mean"], arrays[f"{name}_scaled_stderr"] = e.scaled_mean, e.scaled_stderr
        arrays[f"{name}_log2"] = e.log2 if e.log2 is not None else np.zeros(e.shape, dtype=np.int64)
    digest = _checksum(arrays)
    arrays["checksum"] = np.asarray(digest)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write(path, buf.getvalue())
    return digest


def _versions() -> dict:
    import jax

    from .. import __version__

    return {"pdlt": __version__, "jax": jax.__version__, "numpy": np.__version__, "sympy": sp.__version__,
            "python": platform.python_version()}


def _metadata(res: MCResult) -> dict:
    return {"format": FORMAT, "file_format": FILE_FORMAT, "config": res.config, "seed": res.config["seed"],
            "method": res.config["method"], "n_samples": res.n_samples, "complete": res.complete,
            "interrupted": res.interrupted, "caveats": [c.as_dict() for c in res.caveats], "elapsed_s": res.elapsed,
            "info": res.info, "versions": _versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


_REQUIRED = ("counts", "sums", "widths", "d", "config_json", "status_json")


def _state_problem(state: BatchSums, config: dict, complete) -> str | None:
    """What is wrong with a run state for its configuration, or None.

    Shapes: ``counts (B,)`` integers, ``sums (B, L, F)`` float64 with B = ``config["batches"]``, the widths and
    d of the configuration. Values: finite sums; counts of the interleaved assignment of networks ``0..N-1``
    (batch b holds ``N // B + (b < N mod B)``), ``1 <= N <= config["n_samples"]``; empty batches sum to 0; sums
    of even powers (``t2_aa``, ``tt_pp``, ``m4_aabb``, ``m6_a``) not negative; ``complete == (N >= n_samples)``.
    """
    from .estimators import stat_layout

    try:
        widths, x, B, n_req = list(config["widths"]), config["x"], config["batches"], config["n_samples"]
        if config.get("fingerprint") != _fingerprint(config):
            return "its configuration does not match its fingerprint"
        if not (isinstance(B, int) and B >= 2 and isinstance(n_req, int) and n_req >= 1 and len(widths) >= 2):
            return "its configuration is malformed"
        d = len(x)
    except (KeyError, TypeError, AttributeError):
        return "its configuration is malformed"
    if _kind(config) not in KINDS:
        return f"its kind {_kind(config)!r} is not one of {KINDS}"
    try:
        measured = _measured_widths(config)
        F = _stat_size(config, d)
    except (KeyError, TypeError, ValueError, AttributeError):
        return "its configuration is malformed"
    if tuple(state.widths) != measured or state.d != d:
        return f"widths {state.widths} / d = {state.d} do not match the configuration ({list(measured)}, d = {d})"
    counts, sums = np.asarray(state.counts), np.asarray(state.sums)
    if counts.shape != (B,) or counts.dtype.kind not in "iu":
        return f"counts must be {B} integers, found {counts.dtype} of shape {counts.shape}"
    if sums.shape != (B, len(measured), F) or sums.dtype != np.float64:
        return f"sums must be float64 of shape {(B, len(measured), F)}, found {sums.dtype} of shape {sums.shape}"
    if not np.all(np.isfinite(sums)):
        return "the sums contain NaN or inf"
    if np.any(counts < 0):
        return "negative counts"
    N = int(counts.sum())
    try:
        lo, hi = _network_range(config)
    except (TypeError, ValueError):
        return "its configuration is malformed"
    if not 0 <= lo < hi <= n_req:
        return f"its network range {lo}..{hi - 1} is not inside 0..n_samples-1 = 0..{n_req - 1}"
    expected = _range_counts(lo, lo + N, B)
    if not np.array_equal(counts, expected):
        return (f"the batch counts {counts.tolist()} are not those of networks {lo}..{lo + N - 1} assigned to batch "
                f"s mod {B} ({expected.tolist()})")
    if not 1 <= N <= hi - lo:
        part = f" (this part's networks {lo}..{hi - 1})" if "networks" in config else ""
        return f"it holds {N} networks, outside 1..n_samples = {hi - lo}{part}"
    n_req = hi - lo
    if np.any(sums[counts == 0] != 0):
        return "an empty batch has non-zero sums"
    if _kind(config) == "train":
        problem = train_state_problem(counts, sums, spec_from_config(config))
        if problem:
            return problem
        if not isinstance(complete, bool) or complete != (N >= n_req):
            return f"its status complete={complete!r} contradicts its {N} of {n_req} networks"
        return None
    pairs, quads, _, _ = stat_layout(d)
    P = len(pairs)
    even = [k for k, (a, b) in enumerate(pairs) if a == b]
    even += [P + k * P + k for k in range(P)]
    even += [P + P * P + k for k, q in enumerate(quads) if q[0] == q[1] and q[2] == q[3]]
    even += list(range(P + P * P + len(quads), stat_size(d)))     # m6 (NTK runs: the plain block leads)
    if np.any(sums[..., even] < 0):
        return "a sum of even powers (a second, fourth or sixth moment) is negative"
    if not isinstance(complete, bool) or complete != (N >= n_req):
        return f"its status complete={complete!r} contradicts its {N} of {n_req} networks"
    return None


def load(path) -> MCResult:
    """Read and validate a result (or checkpoint) written by :meth:`MCResult.save` / :func:`sample` (a training run's
    file gives a :class:`pdlt.montecarlo.training.TrainedMC`).

    Raises :class:`pdlt.errors.CheckpointError` for a missing, unreadable, truncated, corrupt, tampered or
    inconsistent file (checksum, shapes, counts, finite sums: see the module docstring), for a file that is not a
    pdlt result, and for a file of the first format (no checksum, so it cannot be validated).
    """
    try:
        path = npz_path(path)
    except TypeError:
        raise ParameterError(f"path must be a file path, got {path!r}", "path") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"cannot read {path}: " + ("it is not a file" if os.path.exists(path) else "no such file"))

    def corrupt(why):
        return CheckpointError(f"corrupt checkpoint {path}: {why}; delete it to start afresh")

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.array(f[k]) for k in f.files}
    except Exception as err:    # BadZipFile, EOFError, zlib.error, OSError, ValueError ...: all mean "unreadable"
        raise corrupt(f"it cannot be read ({type(err).__name__}: {err})") from None
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise CheckpointError(f"{path} is not a pdlt Monte Carlo result/checkpoint (missing {', '.join(missing)})")
    if "checksum" not in arrays:
        raise CheckpointError(f"cannot use {path}: it was written by an older pdlt version without a checksum, so its "
                              "integrity cannot be checked; delete it (or move it away) and sample afresh")
    try:
        ok = str(arrays["checksum"]) == _checksum(arrays)
        config = json.loads(str(arrays["config_json"]))
        status = json.loads(str(arrays["status_json"]))
        state = BatchSums(arrays["counts"], arrays["sums"], tuple(int(n) for n in arrays["widths"]), int(arrays["d"]))
    except Exception as err:
        raise corrupt(f"its contents cannot be parsed ({type(err).__name__}: {err})") from None
    if not ok:
        raise corrupt("the checksum does not match its contents (it was damaged or modified after it was written)")
    if not isinstance(config, dict) or not isinstance(status, dict):
        raise corrupt("its configuration or status is malformed")
    problem = _state_problem(state, config, status.get("complete"))
    if problem:
        raise corrupt(problem)
    interrupted = status.get("interrupted")
    return _result_class(config).from_state(state, config, status["complete"], float(status.get("elapsed", 0.0)),
                                            status.get("info"),
                                            interrupted if interrupted in ("SIGINT", "SIGTERM") else None)


def merge(parts) -> MCResult:
    """One result from parts of one run (``part=(i, k)`` jobs, e.g. a cluster job array, or any results of the same
    configuration that hold disjoint ranges of networks): their batch sums added.

    Network s is the same network in every part and goes to batch ``s mod B``, so the merged result equals the one
    run over the same networks (up to the order of float64 additions). The parts must share the configuration
    fingerprint (network, inputs, seed, method, batches, kind, dtype), must not overlap, and together must hold
    the networks ``0..M-1`` with no gap; ``M < n_samples`` gives an incomplete result that ``resume=`` (or a
    checkpoint written from it) finishes. Anything else raises :class:`pdlt.errors.CheckpointError` naming the part.
    ``parts``: results or paths of saved results (:func:`load` validates every file).
    """
    if isinstance(parts, (str, os.PathLike, MCResult, TrainedMC)):
        raise ParameterError("parts must be a list of results or paths (one part alone is not a merge)", "parts")
    try:
        items = list(parts)
    except TypeError:
        raise ParameterError(f"parts must be a list of results or paths, got {parts!r}", "parts") from None
    if not items:
        raise ParameterError("merge needs at least one part", "parts")
    res = []
    for k, p in enumerate(items):
        if isinstance(p, (MCResult, TrainedMC)):
            res.append((f"parts[{k}]", p))
        elif isinstance(p, (str, os.PathLike)):
            res.append((str(p), load(p)))
        else:
            raise ParameterError(f"part {k} is neither a result nor a path: {p!r}", "parts")
    name0, r0 = res[0]
    for name, r in res[1:]:
        if r.config.get("fingerprint") != r0.config.get("fingerprint"):
            raise CheckpointError(f"{name} belongs to another run than {name0} (differs in: "
                                  f"{_config_diff(r.config, r0.config)}); merge only parts of one run")
    spans = sorted(((_network_range(r.config)[0], _network_range(r.config)[0] + r.n_samples, name, r)
                    for name, r in res), key=lambda t: t[0])
    reach = 0
    for lo, hi, name, _ in spans:
        if lo < reach:
            raise CheckpointError(f"{name} (networks {lo}..{hi - 1}) overlaps another part: the same networks would "
                                  "count twice; merge each part once")
        if lo > reach:
            raise CheckpointError(f"networks {reach}..{lo - 1} are missing (no part holds them; the next part, {name}, "
                                  f"starts at {lo}); run that part (or resume it) and merge again")
        reach = hi
    n_total = max(int(r.config["n_samples"]) for _, r in res)
    state = spans[0][3].state
    for _, _, _, r in spans[1:]:
        state = state.add(r.state.counts, r.state.sums)
    config = {k: v for k, v in r0.config.items() if k != "networks"}
    config["n_samples"] = n_total
    problem = _state_problem(state, config, state.done >= n_total)
    if problem:
        raise CheckpointError(f"the merged parts are inconsistent: {problem}")
    info = {"merged_from": [name for *_, name, _ in spans], "elapsed_parts": [float(r.elapsed) for *_, r in spans]}
    return _result_class(config).from_state(state, config, state.done >= n_total,
                                            sum(float(r.elapsed) for *_, r in spans), info)


# ---------------------------------------------------------------------------------------------------
# the compiled chunk function
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _chunk_function(method: str, act, widths: tuple, d: int, chunk: int, batches: int, devices: tuple,
                    shortcuts=None, kind: str = "preactivations", train: TrainSpec | None = None,
                    dtype: str = "float64"):
    """jit(shard_map(...)): ``(key_data, idx (chunk,), stop, x, C_W, C_b, scale) -> (sums (B, L, F), nbad (L,))``;
    ``shortcuts = (gamma, xi)`` per layer for residual networks (static: part of the compiled function). For
    ``kind="ntk"`` the networks are :func:`pdlt.montecarlo.ntk_sampler.ntk_network_fn`'s (explicit weights, as
    ``method="weights"``) and the last argument is the learning rates ``(2, L)`` (``lambda_b``, ``lambda_W``)
    instead of the scale. For ``kind="train"`` the networks are
    :func:`pdlt.montecarlo.training.train_network_fn`'s for the run's ``train`` spec and the last argument is the
    tuple ``(rates (2, L), eta, y_train)``. ``dtype`` (``"float64"``, or ``"float32"`` for preactivation runs) is
    the network arithmetic (:func:`pdlt.montecarlo.samplers.network_fn`); the sums are float64 either way."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from .activations_jax import jax_activation

    if kind == "train":
        one = train_network_fn(jax_activation(act), widths, train)
    elif kind == "ntk":
        one = ntk_network_fn(jax_activation(act), widths, shortcuts=shortcuts)
    else:
        one = network_fn(method, jax_activation(act, dtype), widths, shortcuts=shortcuts, dtype=dtype)
    net = jax.vmap(one, in_axes=(0, None, None, None, None))
    mesh = Mesh(np.array(devices), ("s",))

    def local(kd, idx, stop, x, C_W, C_b, scale):
        base = jax.random.wrap_key_data(kd)
        keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(idx)
        st, status = net(keys, x, C_W, C_b, scale)
        mask = idx < stop
        st = jnp.where(mask[:, None, None], st, 0.0)
        sums = jax.ops.segment_sum(st, idx % batches, num_segments=batches)
        # nbad[0, l-1]: networks failed at or before layer l; nbad[1, l-1]: of those, by an activation NaN
        nbad = jnp.stack([jnp.sum((status > 0) & mask[:, None], axis=0),
                          jnp.sum((status == ACTIVATION_NAN) & mask[:, None], axis=0)])
        return jax.lax.psum(sums, "s"), jax.lax.psum(nbad, "s")

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("s"), P(), P(), P(), P(), P()), out_specs=(P(), P())))
    unit = scale_arrays(None, len(widths) - 1)

    @float64
    def call(kd, idx, stop, x, C_W, C_b, scale=unit):
        """``scale`` ``(2, L)`` from :func:`scale_arrays` (default: unscaled, e.g. for benchmarks)."""
        return f(kd, idx, stop, x, C_W, C_b, scale)

    return call, NamedSharding(mesh, P("s"))


#: the compiled chunk function under a public name, for benchmarks that time it without the runner around it
#: (the runner itself calls ``_chunk_function``)
chunk_function = _chunk_function


def _fingerprint_config(net: MLP, x: np.ndarray, seed: int, method: str, batches: int,
                        dtype: str = "float64") -> dict:
    cfg = {"format": FORMAT, "activation": net.activation.name, "activation_expr": sp.srepr(net.activation.expr),
           "widths": list(net.widths), "C_W": list(net.C_W), "C_b": list(net.C_b), "x": x.tolist(),
           "seed": int(seed), "method": method, "batches": int(batches), "prng": "threefry2x32 fold_in(seed, s)"}
    if net.residual:  # only then: a plain network's fingerprint (and its checkpoints) are unchanged
        cfg.update(gamma=list(net.gamma), xi=list(net.xi))
    if dtype != "float64":  # likewise: float64 fingerprints predate the option
        cfg["dtype"] = dtype
    if method == "markov":  # its sums are conditional statistics (samplers.measured_on_metric): older markov
        cfg["statistics"] = "conditional on the metric"   # checkpoints and parts must not be mixed in
    return cfg


def _fingerprint(cfg: dict) -> str:
    """The run's identity: everything but how many networks (``n_samples``) and which part (``networks``)."""
    keep = {k: v for k, v in cfg.items() if k not in ("n_samples", "fingerprint", "networks")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _config_diff(a: dict, b: dict) -> str:
    """The settings two run configurations differ in, apart from how many networks and which part."""
    skip = ("n_samples", "fingerprint", "networks")
    diff = sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
    return ", ".join(diff) or "format"


def _check_resumable(old: dict, new: dict, where: str):
    if old.get("fingerprint") == new["fingerprint"]:
        if _network_range(old)[0] != _network_range(new)[0]:
            raise CheckpointError(
                f"cannot resume from {where}: it holds networks from {_network_range(old)[0]} on (a part of the run), "
                f"this run starts at network {_network_range(new)[0]}; give the same part=, or combine parts with "
                "pdlt.merge")
        return
    raise CheckpointError(
        f"cannot resume from {where}: it was made with a different configuration (differs in: "
        f"{_config_diff(old, new)}); "
        "use the same network, inputs, seed, method, batches and dtype, or start afresh with another checkpoint path"
    )


def resolve_devices(devices) -> tuple:
    """The devices to shard over: all local ones (None), the first ``devices`` of them (a count), or the given
    distinct jax devices; ParameterError otherwise."""
    import jax

    if devices is None:
        return tuple(jax.local_devices())
    if isinstance(devices, (int, float, np.integer, np.floating)) and not isinstance(devices, (bool, np.bool_)):
        avail = jax.local_devices()
        n = check_int(devices, "devices", minimum=1)
        if n > len(avail):
            raise ParameterError(f"devices={n} but {len(avail)} local device(s) are available", "devices")
        return tuple(avail[:n])
    try:
        devices = tuple(devices)
    except TypeError:
        devices = ()
    if not devices or not all(isinstance(dv, jax.Device) for dv in devices) or len(set(devices)) != len(devices):
        raise ParameterError("devices must be None, a positive count, or a non-empty list of distinct jax devices, "
                             f"got {devices!r}", "devices")
    if any(dv.process_index != jax.process_index() for dv in devices):
        raise ParameterError("devices must be this process's own (jax.local_devices()); in a distributed run each "
                             "process samples on its local devices", "devices")
    return devices


class _Signals:
    """SIGINT / SIGTERM received while :func:`sample` runs. The handler only records the signal: raising there
    (as Python's default KeyboardInterrupt does) would unwind through JAX dispatch or compilation, which can leave
    the process to crash on exit. A second signal means "stop now": one line on stderr and ``os._exit``."""

    def __init__(self):
        self.received: list[str] = []

    def __call__(self, signum, frame):
        name = signal.Signals(signum).name
        self.received.append(name)
        if len(self.received) > 1:
            try:
                sys.stdout.flush()
                sys.stderr.write(f"\n[pdlt sample] second signal ({name}): stopping at once; the checkpoint keeps the "
                                 "state last written (rerun to resume from it)\n")
                sys.stderr.flush()
            finally:
                os._exit(128 + signum)

    @property
    def name(self) -> str | None:
        return self.received[0] if self.received else None


def _install_handlers(flag: _Signals) -> Callable[[], None]:
    """Install ``flag`` as the SIGINT and SIGTERM handler (main thread only: Python delivers signals there and
    refuses handlers elsewhere) and return a function that restores the previous handlers (idempotent). An ignored
    signal (``SIG_IGN``, e.g. SIGINT in a background job) stays ignored."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM"):
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            signal.signal(sig, flag)
            previous[sig] = old

    def restore():
        while previous:
            sig, old = previous.popitem()
            signal.signal(sig, signal.SIG_DFL if old is None else old)

    return restore


def _chunk_size(method: str, widths, d: int, n_samples: int, ndev: int, chunk_size, memory_budget: float,
                per_net: int | None = None, max_per_dev: int = MAX_CHUNK_PER_DEVICE, dtype: str = "float64") -> int:
    """Networks per compiled call (a multiple of ``ndev``): from ``memory_budget`` (at most
    :data:`MAX_CHUNK_PER_DEVICE` per device) or the explicit ``chunk_size``, never more than ``n_samples`` needs.
    Refuses a chunk whose estimated working memory per device (``bytes_per_network`` times networks per device)
    exceeds ``memory_budget``: the padded chunk is allocated whole, whatever ``n_samples`` is. ``per_net``
    overrides :func:`bytes_per_network` (NTK and training runs), ``max_per_dev`` the automatic cap; ``dtype`` is the
    network arithmetic of a preactivation run."""
    ntk = per_net is not None
    per_net = bytes_per_network(method, widths, d, dtype) if per_net is None else int(per_net)
    cap = -(-n_samples // ndev)
    if chunk_size is None:
        per_dev = int(memory_budget // per_net)
        if per_dev < 1:
            raise ParameterError(
                f"memory_budget={int(memory_budget):,} bytes is too small for one network of this architecture "
                f"({'an NTK or training run' if ntk else f'method={method!r}'}, widths={tuple(widths)}, d={d} needs ~{per_net:,} "
                "bytes); raise memory_budget "
                + ("or use method='markov' (no weight matrices)" if method == "weights" and not ntk else
                   "or reduce the widths"),
                "memory_budget")
        return min(per_dev, max_per_dev, cap) * ndev
    per_dev = min(-(-check_int(chunk_size, "chunk_size", minimum=1) // ndev), cap)
    if per_dev * per_net > memory_budget:
        raise ParameterError(
            f"chunk_size={chunk_size} needs ~{per_dev * per_net:,} bytes per device ({per_dev:,} networks of "
            f"~{per_net:,} bytes on each of {ndev} device(s)), more than memory_budget={int(memory_budget):,} bytes; "
            f"lower chunk_size to at most {max(1, int(memory_budget // per_net)) * ndev:,} or raise memory_budget",
            "chunk_size")
    return per_dev * ndev


class _Progress:
    def __init__(self, total, start, enabled):
        self.total, self.start, self.enabled = total, start, enabled
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, done, final=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        try:
            sys.stderr.write(f"\r[pdlt sample] {done:,}/{self.total:,} networks ({100 * done / self.total:5.1f}%)  "
                             f"{rate:,.0f}/s  ETA {eta:,.0f} s   ")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
        except (OSError, ValueError):    # stderr closed (a pipe whose reader left): the run must go on without it
            self.enabled = False


# ---------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------


def sample(
    net: MLP,
    x,
    n_samples: int,
    seed: int = 0,
    *,
    method: str = "markov",
    batches: int = 32,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    checkpoint=None,
    checkpoint_every: float = 60.0,
    progress: bool | None = None,
    devices=None,
    resume: MCResult | None = None,
    callback: Callable[[int, int], None] | None = None,
    resume_hint: str | None = None,
    dtype: str = "float64",
    distributed: bool = False,
    part: tuple[int, int] | None = None,
) -> MCResult:
    """Sample ``n_samples`` networks ``net`` on inputs ``x`` ``(d, n_0)`` and estimate, for every layer, the
    two-point, connected four-point (distinct neurons and one neuron) and single-input six-point functions.

    Parameters
    ----------
    method : ``"markov"`` (exact conditional-Gaussian layer sampler, fast) or ``"weights"`` (explicit W, b).
    batches : number B of interleaved batches for the jackknife errors (network s -> batch ``s mod B``).
    chunk_size : networks per compiled call (rounded up to a multiple of the device count, capped at
        ``n_samples``); default from ``memory_budget``. Results do not depend on it. Refused when the chunk's
        estimated memory per device exceeds ``memory_budget``.
    memory_budget : bytes of working memory per device (positive) used to choose or check the chunk size, or
        ``"auto"``: a quarter of each device's free memory where the device reports it (GPUs), else the default.
    checkpoint : path of a checkpoint file (``.npz``, appended if missing) in an existing writable directory;
        resumed from if it exists (after validation: a corrupt file raises :class:`pdlt.errors.CheckpointError`),
        written during the run.
    checkpoint_every : seconds (>= 0) between checkpoint writes; 0: after every chunk. An interrupt (SIGINT,
        SIGTERM) and the end of the run always write it.
    progress : print a progress line on stderr (True, False, or None: when stderr is a terminal).
    devices : None (all local devices), a count, or a list of jax devices to shard over.
    resume : a previous (partial) :class:`MCResult` of the same configuration to continue. With an existing
        ``checkpoint`` as well, both must hold the same number of networks.
    callback : called as ``callback(done, n_samples)`` after every chunk (after every round of a distributed run;
        a part counts its own networks), e.g. for custom progress.
    resume_hint : the advice printed after an interrupt (default: how to resume from Python); ``False``
        prints nothing (the CLI prints its own line, which says to rerun the same command).
    dtype : ``"float64"`` (default) or ``"float32"``: the network arithmetic (:mod:`pdlt.montecarlo.samplers`,
        "Precision"; statistics are summed in float64 either way). float32 runs are refused (ParameterError naming
        ``dtype``) when a kernel leaves ~[1e-30, 1e30], and cannot resume float64 checkpoints or vice versa.
    distributed : share the run among the processes of a ``jax.distributed`` run (every process calls this with
        the same arguments after :func:`pdlt.montecarlo.distributed.initialize`); each samples its share of the
        networks on its local devices and every process returns the same sums and estimates (``elapsed`` and
        ``info`` are its own), equal to a one-process run to float64 round-off; process 0 alone reads and writes
        the checkpoint (at the agreed synchronisation points, whatever ``checkpoint_every`` says below about one
        second) and prints (:mod:`pdlt.montecarlo.distributed`).
    part : ``(i, k)``: sample only part i (0..k-1) of k of the ``n_samples`` networks, ``i N // k .. (i+1) N // k
        - 1`` (e.g. one task of a cluster job array); the result carries a ``"part"`` caveat and :func:`merge`
        combines the parts into the one run.

    Returns the :class:`MCResult`; after SIGINT / SIGTERM (module docstring, "Interrupts") a partial one with
    ``complete=False``, ``interrupted="SIGINT"`` / ``"SIGTERM"`` and an ``"incomplete"`` caveat.

    Raises
    ------
    :class:`pdlt.errors.ParameterError` for bad settings (naming the setting), :class:`pdlt.errors.CheckpointError`
    for a corrupt checkpoint or one of another configuration, :class:`pdlt.DivergentFlowError` naming the first
    layer whose preactivations (or their sixth powers) overflow.

    >>> import pdlt
    >>> net = pdlt.MLP("tanh", widths=(2, 8, 8), C_W=1.0, C_b=0.0)
    >>> res = pdlt.sample(net, [[1.0, 0.0]], n_samples=256, seed=0, batches=16)
    >>> res.two_point.mean.shape, res.four_point.stderr.shape, res.complete
    ((2, 1, 1), (2, 1, 1, 1, 1), True)
    """
    return _with_signals(_sample, net, x, n_samples, seed, method=method, batches=batches, chunk_size=chunk_size,
                         memory_budget=memory_budget, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         progress=progress, devices=devices, resume=resume, callback=callback,
                         resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)


def _with_signals(body, *args, **kwargs):
    """``body(signals, *args, **kwargs)`` with SIGINT / SIGTERM recorded by ``signals`` (module docstring,
    "Interrupts"); the handlers go in first, since a signal during setup or compilation must not raise inside JAX
    either, and the previous ones are restored however ``body`` ends."""
    signals = _Signals()
    restore = _install_handlers(signals)
    try:
        return body(signals, *args, **kwargs)
    finally:
        restore()


@contextmanager
def _before_agreement(distributed):
    """Around the checks that precede :func:`_plan` (where the processes compare their plans): in a distributed
    run an error here (an argument only this process got wrong) is announced to the others, which stop too."""
    try:
        yield
    except Exception as err:
        import jax

        if distributed is True and jax.distributed.is_initialized():
            agree(process_group(True), None, _agreed_numbers(None), failed=err)
        raise


def sample_ntk(
    net: MLP,
    x,
    n_samples: int,
    seed: int = 0,
    *,
    lambda_b=1.0,
    lambda_W=1.0,
    batches: int = 32,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    checkpoint=None,
    checkpoint_every: float = 60.0,
    progress: bool | None = None,
    devices=None,
    resume: MCResult | None = None,
    callback: Callable[[int, int], None] | None = None,
    resume_hint: str | None = None,
    dtype: str = "float64",
    distributed: bool = False,
    part: tuple[int, int] | None = None,
) -> MCResult:
    """Sample ``n_samples`` explicit-weight networks ``net`` on inputs ``x`` ``(d, n_0)`` and estimate, for every
    layer, the NTK statistics (:mod:`pdlt.montecarlo.ntk_sampler`) as well as everything :func:`sample` estimates.

    Network s is network s of ``sample(net, x, ..., seed, method="weights")``. Learning rates follow PDLT:
    ``lambda_b^(l)`` for biases, ``lambda_W^(l)/n_{l-1}`` for weights (scalars or one per layer; checked by
    :func:`pdlt.theory.ntk.learning_rates`). The result's ``ntk_mean`` ``(L, d, d)`` (theory ``Theta +
    Theta1/n_{l-1}``), ``A, B, D, F, P, Q, R, S, T, U`` ``(L, d, d, d, d)`` (``n_{l-1}`` times the distinct-neuron
    means, the tensor conventions of the theory; layer 1: 0), ``ntk_variance``, ``ntk_relative_variance`` and
    ``dntk_relative`` ``(L, d)`` are :class:`Estimate` objects with batch-jackknife errors; ``res.kind == "ntk"``.
    The statistics are not rescaled: values beyond float64 raise :class:`pdlt.DivergentFlowError` naming the layer.

    Every other argument, the checkpoints (which record ``kind``, ``lambda_b`` and ``lambda_W`` in the
    configuration), interrupts and errors are those of :func:`sample`. Residual networks are sampled too (the full
    NTK by its exact forward equation with the shortcut, the derivatives by nested jvp and grad of the network; slower
    than the dense jets); their O(1/n) NTK theory (up to four inputs) is :mod:`pdlt.theory.residual_ntk`.
    The derivatives use the neuron pair (0, 1) of every layer, so every width must be at least 2. Per network the
    full NTK costs ``~ d^2 n^3`` per layer and the derivatives of layer l ``~ l n^2`` (their directions live on the
    layers below it; :func:`pdlt.montecarlo.ntk_sampler.ntk_network_fn`).

    >>> import pdlt
    >>> from pdlt.montecarlo import sample_ntk
    >>> net = pdlt.MLP("tanh", widths=(2, 4, 4), C_W=1.0, C_b=0.0)
    >>> res = sample_ntk(net, [[1.0, 0.0]], n_samples=64, batches=8, lambda_b=0.5, lambda_W=1.0)
    >>> res.kind, res.ntk_mean.mean.shape, res.P.mean.shape
    ('ntk', (2, 1, 1), (2, 1, 1, 1, 1))
    """
    return _with_signals(_sample_ntk, net, x, n_samples, seed, lambda_b=lambda_b, lambda_W=lambda_W,
                         batches=batches, chunk_size=chunk_size, memory_budget=memory_budget, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, progress=progress, devices=devices, resume=resume,
                         callback=callback, resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)


@float64
def _sample_ntk(signals: _Signals, net, x, n_samples, seed, *, lambda_b, lambda_W, batches, chunk_size,
                memory_budget, checkpoint, checkpoint_every, progress, devices, resume, callback,
                resume_hint, dtype, distributed, part) -> MCResult:
    from ..theory.ntk import learning_rates

    with _before_agreement(distributed):
        run = _validate(net, x, n_samples, seed, method="weights", batches=batches, memory_budget=memory_budget,
                        checkpoint_every=checkpoint_every, progress=progress, callback=callback,
                        resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)
        _float64_only(run.dtype, "sample_ntk", "its derivative jets")
        if min(net.widths[1:]) < 2:
            raise ParameterError(f"sample_ntk needs at least two neurons in every layer (the statistics use distinct "
                                 f"neurons i != j), got widths={tuple(net.widths)}", "widths")
        lb, lw = learning_rates(net, lambda_b, lambda_W)
        _check_ntk_range(run.net, run.x, run.seed)
        run = replace(run, kind="ntk", lambda_b=tuple(lb), lambda_W=tuple(lw))
    plan = _plan(run, devices, chunk_size)
    return _run(signals, run, plan, _start(run, plan.config, checkpoint, resume, plan.group))


#: the smallest typical |z| (binary exponent) of a layer whose NTK statistics an unscaled run can accumulate: they
#: hold products of four preactivation-sized factors (z^4, H z^2, H^2), so 2^(4 k) must stay a normal float64
_NTK_MIN_LOG2 = -200


def _check_ntk_range(net: MLP, x, seed: int) -> None:
    """Refuse an NTK run whose preactivations are so small that its unscaled statistics would underflow to 0 (which
    :func:`sample` avoids by rescaling each layer, and an NTK run does not): a :class:`VanishingFlowError` at the
    first layer whose typical ``|z|`` (the deterministic pilot of :func:`reference_scale`) is below
    ``2^`` :data:`_NTK_MIN_LOG2`."""
    from ..errors import VanishingFlowError

    ks = reference_scale(net, x, seed)
    low = [l for l, k in enumerate(ks, start=1) if k < _NTK_MIN_LOG2]
    if low:
        l = low[0]
        raise VanishingFlowError(f"sample_ntk: the preactivations of layer l = {l} are of size ~2^{ks[l - 1]}, so the "
                                 f"NTK statistics (products of four such factors) would underflow to 0 in float64; "
                                 "scale the inputs x up or, where the flow vanishes with depth, move C_W toward "
                                 "criticality (pdlt.criticality) or reduce the depth", layer=l)


def sample_trained(
    net: MLP,
    x_train,
    y_train,
    x_test,
    n_samples: int,
    seed: int = 0,
    *,
    lambda_b=1.0,
    lambda_W=1.0,
    eta: float,
    steps: int,
    batch_size: int | None = None,
    record_every: int | None = None,
    batches: int = 32,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    checkpoint=None,
    checkpoint_every: float = 60.0,
    progress: bool | None = None,
    devices=None,
    resume: TrainedMC | None = None,
    callback: Callable[[int, int], None] | None = None,
    resume_hint: str | None = None,
    dtype: str = "float64",
    distributed: bool = False,
    part: tuple[int, int] | None = None,
) -> TrainedMC:
    """Train ``n_samples`` explicit-weight networks ``net`` by gradient descent on the MSE loss
    ``1/2 sum_{i, a in A} (z_{i;a} - y_{i;a})^2`` and estimate the ensemble of trained outputs
    (:mod:`pdlt.montecarlo.training`).

    Network s is network s of ``sample(net, x, ..., seed, method="weights")`` and of :func:`sample_ntk` at t = 0.
    Every network takes ``steps`` full-batch steps ``theta <- theta - eta Lambda grad L`` with PDLT's learning rates
    (``lambda_b^(l)`` for biases, ``lambda_W^(l)/n_{l-1}`` for weights; scalars or per layer, checked by
    :func:`pdlt.theory.ntk.learning_rates`), or with ``batch_size = k < N_A`` minibatch SGD (k distinct training
    inputs per step, the loss scaled by ``N_A / k``). A network whose loss leaves float64's range (or 1e100), or
    whose final loss is above its initial one, DIVERGED: it is counted (``result.diverged``) and left out.

    Parameters
    ----------
    x_train : ``(N_A, n_0)`` training inputs; y_train : ``(N_A, n_L)`` targets (``(N_A,)`` when ``n_L = 1``);
    x_test : ``(N_D, n_0)`` test inputs.
    eta : step size, finite and > 0; steps : number of steps T (integer >= 0).
    batch_size : None (full batch) or an integer in ``1..N_A``.
    record_every : record the loss every so many steps (0 and ``steps`` always; default: about 50 points).

    The other arguments, the checkpoints (whose configuration records ``kind="train"``, the learning rates,
    ``eta``, ``steps``, ``batch_size``, ``record_every`` and the data), interrupts and chunking are those of
    :func:`sample`; chunks are chosen by :func:`pdlt.montecarlo.training.train_bytes_per_network` and, on CPU,
    kept near the cache (:func:`pdlt.montecarlo.training.train_cache_chunk`).

    Returns a :class:`pdlt.montecarlo.training.TrainedMC` (``mean``, ``cov``, ``train_residual``,
    ``frozen_shift``, ``loss`` at ``loss_steps``, ``ntk0``, ``ntk_change``, ``diverged``). A network whose loss or
    outputs become non-finite or exceed 1e100 is counted in ``diverged`` and left out of every estimate.

    Raises
    ------
    :class:`pdlt.errors.ParameterError` naming the setting for bad input (residual networks: ``gamma``);
    :class:`pdlt.errors.DivergentFlowError` naming ``eta`` when every network diverged.

    >>> import pdlt
    >>> net = pdlt.MLP("tanh", widths=(2, 8, 1), C_W=1.0, C_b=0.0)
    >>> res = pdlt.sample_trained(net, [[1.0, 0.0], [0.0, 1.0]], [0.5, -0.5], [[0.6, 0.8]], 64, batches=8,
    ...                           eta=0.5, steps=20)
    >>> res.mean.mean.shape, res.cov.mean.shape, res.ntk0.mean.shape, res.diverged
    ((1, 1), (1, 1), (3, 3), 0)
    """
    return _with_signals(_sample_trained, net, x_train, y_train, x_test, n_samples, seed, lambda_b=lambda_b,
                         lambda_W=lambda_W, eta=eta, steps=steps, batch_size=batch_size, record_every=record_every,
                         batches=batches, chunk_size=chunk_size, memory_budget=memory_budget, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, progress=progress, devices=devices, resume=resume,
                         callback=callback, resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)


#: the largest number of steps of one training run (a sanity bound: T is part of the compiled function)
MAX_STEPS = 10**8


@float64
def _sample_trained(signals: _Signals, net, x_train, y_train, x_test, n_samples, seed, *, lambda_b, lambda_W, eta,
                    steps, batch_size, record_every, batches, chunk_size, memory_budget, checkpoint,
                    checkpoint_every, progress, devices, resume, callback, resume_hint, dtype,
                    distributed, part) -> TrainedMC:
    from ..theory.ntk import learning_rates

    with _before_agreement(distributed):
        if not isinstance(net, MLP):
            raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
        if net.residual:
            raise ParameterError("sample_trained trains plain MLPs only (its backward pass implements dense steps); "
                                 "use gamma = 0, xi = 1", "gamma")
        xa = net.inputs(x_train, "x_train")
        xb = net.inputs(x_test, "x_test")
        y = net.targets(y_train, xa.shape[0], "y_train")
        check_target_scale(y)
        eta = check_real(eta, "eta", minimum=0.0, open_minimum=True)
        steps = check_int(steps, "steps", minimum=0, maximum=MAX_STEPS)
        A = xa.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", minimum=1, maximum=A)
        if record_every is not None:
            record_every = check_int(record_every, "record_every", minimum=1)
        lb, lw = learning_rates(net, lambda_b, lambda_W)
        run = _validate(net, np.concatenate([xa, xb]), n_samples, seed, method="weights", batches=batches,
                        memory_budget=memory_budget, checkpoint_every=checkpoint_every, progress=progress,
                        callback=callback, resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)
        _float64_only(run.dtype, "sample_trained", "its gradient descent")
        spec = TrainSpec(n_train=A, n_test=xb.shape[0], n_out=int(net.widths[-1]), steps=steps, batch_size=batch_size,
                         loss_steps=loss_schedule(steps, record_every))
        run = replace(run, kind="train", lambda_b=tuple(lb), lambda_W=tuple(lw), train=spec, y_train=y, eta=eta,
                      record_every=record_every)
    plan = _plan(run, devices, chunk_size)
    res = _run(signals, run, plan, _start(run, plan.config, checkpoint, resume, plan.group))
    if res.complete and res.n_valid == 0:
        raise DivergentFlowError(
            f"gradient descent diverged in all {res.n_samples} networks (loss or outputs non-finite or above 1e100, or "
            f"the final loss above the initial one): the step size eta = {eta:g} is likely above the stability limit "
            "2/lambda_max(Theta) of the training NTK (pdlt.theory.training.stability_limit; SGD's rescaled minibatch "
            "loss lowers it further), or the targets are too large for float64; lower eta or scale y_train")
    return res


@dataclass(frozen=True)
class _Run:
    """The checked arguments of :func:`sample` (everything but devices, chunk size and checkpoint)."""

    net: MLP
    x: np.ndarray
    n_samples: int
    seed: int
    method: str
    batches: int
    memory_budget: float
    checkpoint_every: float
    progress: bool | None
    callback: Callable[[int, int], None] | None
    resume_hint: str | bool | None
    kind: str = "preactivations"
    lambda_b: tuple | None = None      # NTK and training runs: the checked learning rates, one per layer
    lambda_W: tuple | None = None
    train: TrainSpec | None = None     # training runs: the static shape, and the data and step size below
    y_train: np.ndarray | None = None
    eta: float | None = None
    record_every: int | None = None
    dtype: str = "float64"             # network arithmetic (statistics are accumulated in float64 regardless)
    distributed: bool = False          # one share of a jax.distributed run (pdlt.montecarlo.distributed)
    networks: tuple | None = None      # a part of a run (``part=``): the networks lo..hi-1 it samples

    @property
    def d(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class _Plan:
    """How a run is laid out: devices, networks per compiled call, the configuration (with its fingerprint) that a
    checkpoint must match, and the ``info`` recorded on the result."""

    devices: tuple
    chunk: int
    config: dict
    info: dict
    group: "ProcessGroup" = None        # the processes sharing the run (pdlt.montecarlo.distributed)


@dataclass(frozen=True)
class _Start:
    """Where a run starts: the checkpoint path (or None), the batch sums already done and their run time."""

    ck_path: str | None
    state: BatchSums
    elapsed: float


def _part_range(part, n_samples: int, batches: int) -> tuple | None:
    """``(lo, hi)`` of part ``i`` of ``k`` (``part=(i, k)``, i = 0..k-1): networks ``i N // k .. (i+1) N // k - 1``."""
    if part is None:
        return None
    try:
        i, k = part
    except (TypeError, ValueError):
        raise ParameterError(f"part must be (i, k): part i = 0..k-1 of k parts, got {part!r}", "part") from None
    k = check_int(k, "part", minimum=1)
    i = check_int(i, "part", minimum=0, maximum=k - 1)
    lo, hi = i * n_samples // k, (i + 1) * n_samples // k
    if hi - lo < batches:
        raise ParameterError(f"part {i} of {k} holds {hi - lo} networks, fewer than batches={batches}: use fewer "
                             "parts, more networks or fewer batches", "part")
    return lo, hi


def _float64_only(dtype: str, entry: str, what: str) -> None:
    """ParameterError naming ``dtype`` unless it is float64: NTK and training runs are sampled in float64 only."""
    if dtype != "float64":
        raise ParameterError(f"{entry} runs in float64 only ({what} and its statistics need float64), got "
                             f"dtype={dtype!r}; use dtype='float64' (pdlt.sample offers float32)", "dtype")


def _validate(net, x, n_samples, seed, *, method, batches, memory_budget, checkpoint_every, progress, callback,
              resume_hint, dtype="float64", distributed=False, part=None) -> _Run:
    """Check the arguments of :func:`sample` (ParameterError naming the setting); no sampling, no devices."""
    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x = net.inputs(x)
    if not isinstance(method, str) or method not in METHODS:
        raise ParameterError(f"unknown method={method!r}; choose one of {METHODS}", "method")
    n_samples = check_int(n_samples, "n_samples", minimum=1, maximum=2**32 - 1)
    batches = check_int(batches, "batches", minimum=2)
    seed = check_seed(seed)
    if n_samples < batches:
        raise ParameterError(f"n_samples={n_samples} is less than batches={batches}: sample more networks or lower "
                             "batches", "n_samples")
    memory_budget = (memory_budget if _is_auto(memory_budget) else
                     check_real(memory_budget, "memory_budget", minimum=0.0, open_minimum=True))
    checkpoint_every = check_real(checkpoint_every, "checkpoint_every", minimum=0.0)
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise ParameterError(f"progress must be True, False or None, got {progress!r}", "progress")
    if callback is not None and not callable(callback):
        raise ParameterError(f"callback must be callable as callback(done, n_samples), got {callback!r}", "callback")
    if resume_hint is not None and resume_hint is not False and not isinstance(resume_hint, str):
        raise ParameterError(f"resume_hint must be a string, None or False, got {resume_hint!r}", "resume_hint")
    dtype = check_dtype(dtype)
    if not isinstance(distributed, (bool, np.bool_)):
        raise ParameterError(f"distributed must be True or False, got {distributed!r}", "distributed")
    return _Run(net, x, n_samples, seed, method, batches, memory_budget, checkpoint_every, progress, callback,
                resume_hint, dtype=dtype, distributed=bool(distributed), networks=_part_range(part, n_samples, batches))


def _plan(run: _Run, devices, chunk_size) -> _Plan:
    """Resolve the devices, choose (or check) the chunk size, and fingerprint the configuration; in a multi-process
    run, agree on them with the other processes (:func:`pdlt.montecarlo.distributed.agree`: the smallest chunk,
    and an error anywhere stops every process)."""
    group = process_group(run.distributed)
    try:
        plan = _plan_here(run, devices, chunk_size)
    except Exception as err:             # any error: the others must not wait for this process
        agree(group, None, _agreed_numbers(None), failed=err)
        raise
    numbers = agree(group, plan.config["fingerprint"], _agreed_numbers(plan), smallest=("chunk size",))
    info = dict(plan.info, chunk_size=numbers["chunk size"])
    if group.size > 1:
        info.update(processes=group.size, process_index=group.rank)
    return replace(plan, chunk=numbers["chunk size"], info=info, group=group)


def _agreed_numbers(plan) -> dict:
    if plan is None:
        return dict.fromkeys(("networks", "n_samples", "chunk size", "local devices"), 0)
    lo, hi = _network_range(plan.config)
    return {"networks": lo, "n_samples": hi, "chunk size": plan.chunk, "local devices": len(plan.devices)}


def _plan_here(run: _Run, devices, chunk_size) -> _Plan:
    todo = run.n_samples if run.networks is None else run.networks[1] - run.networks[0]   # chunks are capped by it
    devs = resolve_devices(devices)
    budget = _auto_budget(devs) if run.memory_budget == "auto" else run.memory_budget
    ntk = run.kind == "ntk"
    if run.kind == "train":
        # CPU: chunks whose parameters stay near the cache (the weights are re-read at every step)
        cap = train_cache_chunk(run.net.widths) if devs[0].platform == "cpu" else 16 * MAX_CHUNK_PER_DEVICE
        chunk = _chunk_size(run.method, run.net.widths, run.d, todo, len(devs), chunk_size,
                            budget, per_net=train_bytes_per_network(run.net.widths, run.train),
                            max_per_dev=cap)
    else:
        per_net = ntk_bytes_per_network(run.net.widths, run.d, run.net.residual) if ntk else None
        chunk = _chunk_size(run.method, run.net.widths, run.d, todo, len(devs), chunk_size,
                            budget, per_net=per_net, dtype=run.dtype)
    config = _fingerprint_config(run.net, run.x, run.seed, run.method, run.batches, run.dtype)
    if run.kind == "train":
        A = run.train.n_train
        config.update(kind="train", lambda_b=list(run.lambda_b), lambda_W=list(run.lambda_W), eta=run.eta,
                      steps=run.train.steps, batch_size=run.train.batch_size, record_every=run.record_every,
                      loss_steps=list(run.train.loss_steps), x_train=run.x[:A].tolist(),
                      y_train=run.y_train.tolist(), x_test=run.x[A:].tolist())
    elif ntk:
        # NTK runs accumulate unscaled statistics (non-finite ones raise DivergentFlowError)
        config.update(kind="ntk", lambda_b=list(run.lambda_b), lambda_W=list(run.lambda_W))
        config["scale_log2"] = [0] * run.net.L
    else:
        # per-layer reference scale (estimators module doc): a deterministic pilot, so part of the fingerprint;
        # raises VanishingFlowError before any sampling when the preactivations themselves underflow
        config["scale_log2"] = list(reference_scale(run.net, run.x, run.seed, run.method))
        if run.dtype == "float32":
            _check_float32_range(run.net, run.x, config["scale_log2"])
    config["fingerprint"] = _fingerprint(config)
    config["n_samples"] = run.n_samples
    if run.networks is not None:
        config["networks"] = list(run.networks)
    info = {"chunk_size": chunk, "devices": [str(dv) for dv in devs], "platform": devs[0].platform,
            "dtype": run.dtype}
    if run.memory_budget == "auto":
        info["memory_budget"] = budget
    return _Plan(devs, chunk, config, info)


def _start(run: _Run, config: dict, checkpoint, resume, plan_group=None) -> _Start:
    """The state to continue from: a fresh one, the checkpoint file (if it exists) or ``resume``, after checking
    that it was made with ``config`` and is intact. The checkpoint path is checked before anything is sampled: a
    bad path must not cost a run. In a multi-process run process 0 does this and tells the others whether it
    succeeded (so that they stop with it instead of waiting for its state)."""
    if plan_group is None or plan_group.size == 1:
        return _start_here(run, config, checkpoint, resume, plan_group)
    return plan_group.together(lambda: _start_here(run, config, checkpoint, resume, plan_group),
                               "whether the run could start", "could not start the run (its checkpoint, resume= or "
                               "checkpoint path was refused; see its error)")


def _start_here(run: _Run, config: dict, checkpoint, resume, plan_group) -> _Start:
    if plan_group is not None and plan_group.rank != 0:
        # process 0 reads the checkpoint and resume= and sends the state (_shared_state); this process only needs
        # the path for the messages (its directory may not exist on this host)
        ck_path = None if checkpoint is None else npz_path(checkpoint)
        return _Start(ck_path, BatchSums.zeros(run.batches, _measured_widths(config), run.d,
                                               _stat_size(config, run.d)), 0.0)
    ck_path = check_output_path(checkpoint, "checkpoint") if checkpoint is not None else None
    want = _result_class(config)
    if resume is not None and not isinstance(resume, want):
        raise ParameterError(f"resume must be an earlier result of this kind of run ({want.__name__}), got "
                             f"{type(resume).__name__}", "resume")
    old = load(ck_path) if ck_path is not None and os.path.exists(ck_path) else None
    if old is not None:
        _check_resumable(old.config, config, f"checkpoint {ck_path}")
    if resume is not None:
        _check_resumable(resume.config, config, "resume=")
        problem = _state_problem(resume.state, resume.config, resume.complete)
        if problem:
            raise CheckpointError(f"cannot resume from resume=: {problem}")
        if old is not None and old.n_samples != resume.n_samples:
            raise ParameterError(
                f"resume= holds {resume.n_samples} networks but checkpoint {ck_path} holds {old.n_samples}; pass only "
                "one of them (or another checkpoint path)", "resume")
    prev = resume if resume is not None else old
    if prev is None:
        return _Start(ck_path, BatchSums.zeros(run.batches, _measured_widths(config), run.d,
                                               _stat_size(config, run.d)), 0.0)
    lo, hi = _network_range(config)
    if prev.state.done > hi - lo:
        raise ParameterError(f"the run being resumed already has {prev.state.done} networks > "
                             f"n_samples={hi - lo}; raise n_samples or start afresh", "n_samples")
    return _Start(ck_path, prev.state, prev.elapsed)


def _nonfinite_error(net: MLP, nbad: np.ndarray, start: int, stop: int, kind: str = "preactivations",
                     x=None) -> Exception:
    """The error for a chunk (networks ``start..stop-1``) in which some networks failed: ``nbad`` ``(2, L)``,
    cumulative over layers, counts the failed networks and those failed by an activation NaN; ``x`` the inputs
    (``(d, n_0)``; where ``K^(1) <= C_b + C_W max|x|^2`` is far inside float64's range, an NTK run's failure at
    layer 1 is its learning rates')."""
    l = int(np.flatnonzero(nbad[0])[0]) + 1
    C_W, C_b = net.hyper(l)
    if nbad[1, l - 1]:
        from ..errors import ActivationError

        return ActivationError(
            f"Monte Carlo: the activation {net.activation.name!r} returned NaN on finite preactivations of "
            f"layer l = {l - 1} in {int(nbad[1, l - 1])} of networks {start}..{stop - 1}: it is not real on "
            "part of the real line (e.g. sqrt or log of a negative preactivation), but Gaussian "
            "preactivations take every real value; choose an activation defined on all of R (activation)")
    # at layer 1 nothing has flowed yet: the inputs themselves are too large for float64, or (an NTK run whose
    # inputs are modest) the learning rates
    modest = x is not None and inputs_log10_scale(x, C_W, C_b) < 150.0
    advice = ("the inputs are too large (K^(1) = C_b + C_W x.x/n_0 overflows); scale the inputs x down"
              if l == 1 else "the flow diverges; lower C_W / C_b toward criticality (pdlt.criticality) "
              "or reduce the depth")
    what = "(or their metric G = z z^T / n)"
    if kind == "ntk":
        what = "(or their NTK, dNTK, ddNTK statistics)"
        rates = "lower the learning rates lambda_b, lambda_W (the NTK statistics are not rescaled)"
        advice = ("the inputs are modest (C_b + C_W max|x|^2 far inside float64's range), so the NTK statistics "
                  "overflow: " + rates if l == 1 and modest else advice + "; or " + rates)
    return DivergentFlowError(
        f"Monte Carlo: the preactivations of layer l = {l} {what} are not finite "
        f"in {int(nbad[0, l - 1])} of networks {start}..{stop - 1} (C_W^({l}) = {C_W:g}, C_b^({l}) = "
        f"{C_b:g}): {advice}",
        layer=l,
    )


#: the public function that runs each kind of run (what an interrupted run is resumed with)
_ENTRY = {"preactivations": "pdlt.sample", "ntk": "pdlt.sample_ntk", "train": "pdlt.sample_trained"}


def _report_interrupt(signame: str, done: int, n_samples: int, ck_path, resume_hint,
                      kind: str = "preactivations") -> None:
    """One line on stderr after an interrupt: what was kept and how to continue (``resume_hint``; False: nothing)."""
    if resume_hint is False:
        return
    how = resume_hint or (
        f"call {_ENTRY[kind]} again with checkpoint={ck_path!r} to resume" if ck_path is not None else
        "pass the returned result as resume=... to continue (or use checkpoint=PATH)")
    sys.stderr.write(f"[pdlt sample] interrupted by {signame}: kept {done:,} of {n_samples:,} "
                     f"networks (result.complete is False); {how}\n")
    sys.stderr.flush()


def _range_counts(lo: int, hi: int, batches: int) -> np.ndarray:
    """Networks ``lo..hi-1`` per batch ``s mod B``: ``(B,)`` int64."""
    b = np.arange(batches)

    def below(n):   # networks 0..n-1 in batch b
        return n // batches + (b < n % batches)

    return (below(hi) - below(lo)).astype(np.int64)


def _run(signals: _Signals, run: _Run, plan: _Plan, start: _Start) -> MCResult:
    """The sampling loop: round after round until the run's networks are summed or a signal arrives, writing the
    checkpoint on its timer, on an interrupt, at the end and before a divergence error.

    In round r process p (of P; P = 1 without ``distributed``) samples the chunk ``r P + p`` of the networks still
    to do, adding its batch sums on its devices; the sums go to the host only at synchronisation points, where the
    processes' sums are added in process order (:mod:`pdlt.montecarlo.distributed`), so the state is always that of
    a prefix of the networks. One process synchronises after any round it needs to (a signal, the checkpoint timer,
    a callback's KeyboardInterrupt); several processes only at points they agreed on."""
    import jax
    import jax.numpy as jnp

    from .distributed import SYNC_SECONDS

    net, batches, config, ck_path = run.net, run.batches, plan.config, start.ck_path
    group = plan.group
    P, rank = group.size, group.rank
    writer = rank == 0                       # only process 0 writes files and prints
    info = plan.info if ck_path is None else {**plan.info, "checkpoint": ck_path}
    state = _shared_state(group, start.state)
    lo_net, hi_net = _network_range(config)
    fn, sharding = _chunk_function(run.method, net.activation, tuple(net.widths), run.d, plan.chunk, batches,
                                   plan.devices, shortcuts=(net.gamma, net.xi) if net.residual else None,
                                   kind=run.kind, train=run.train, dtype=run.dtype)
    kd = jax.random.key_data(jax.random.key(run.seed))
    if run.kind == "train":
        last = (jnp.asarray(np.array([run.lambda_b, run.lambda_W], dtype=np.float64)),
                jnp.asarray(run.eta, dtype=jnp.float64), jnp.asarray(run.y_train))
    elif run.kind == "ntk":
        last = np.array([run.lambda_b, run.lambda_W], dtype=np.float64)
    else:
        last = scale_arrays(config["scale_log2"], len(net.widths) - 1)
    args = (jnp.asarray(run.x), jnp.asarray(net.C_W, dtype=jnp.float64), jnp.asarray(net.C_b, dtype=jnp.float64),
            last if run.kind == "train" else jnp.asarray(last))
    show = writer and (sys.stderr.isatty() if run.progress is None else bool(run.progress))
    total = hi_net - lo_net
    bar = _Progress(total, state.done, show)
    t0 = time.perf_counter()
    last_ck = t0

    def result(st, complete, interrupted=None):
        return _result_class(config).from_state(st, config, complete, start.elapsed + time.perf_counter() - t0,
                                                info, interrupted)

    def write_ck(st):
        if writer and ck_path is not None and st.done > 0:
            _write_npz(ck_path, result(st, st.done >= total))

    first = lo_net + state.done            # the first network still to do
    per_round = P * plan.chunk
    # device-side sums: one process keeps the running total there (so the additions are those of chunk after chunk,
    # whatever the synchronisation points); several keep their own sums since the last point, added in process order
    acc = jnp.asarray(state.sums) if P == 1 else None
    bad = None
    cur = {"span_lo": first, "rounds": 0, "since": 0, "every": 1, "t_sync": time.perf_counter(), "ck_due": False}
    # an error on one of several processes is held until the next agreed point, where every process stops with it
    # (raising at once would leave the others waiting in the exchange)
    stop = {"callback": False, "interrupted": None, "error": None}

    def hold(err):
        if P == 1:
            raise err
        if stop["error"] is None:
            stop["error"] = err

    def sync(reached):
        """Exchange and sum everything since the last point; True when the run must stop (a signal anywhere)."""
        nonlocal state, acc, bad, last_ck
        span_lo = cur["span_lo"]
        if reached == span_lo and P == 1:      # nothing new since the last point: only the stop decision
            if signals.name is not None or stop["callback"]:
                stop["interrupted"] = signals.name or "SIGINT"
                return True
            return False
        host_sums = np.zeros((batches, len(state.widths), state.sums.shape[-1]))
        host_bad = np.zeros((2, len(state.widths)))
        try:
            if acc is not None:
                host_sums = np.asarray(acc)
            if bad is not None:
                host_bad = np.asarray(bad, dtype=np.float64)
        except Exception as err:            # a device failure: held, so that the exchange still happens
            hold(err)
        local_stop = signals.name is not None or stop["callback"]
        round_s = (time.perf_counter() - cur["t_sync"]) / max(cur["since"], 1)
        propose = max(1, min(4096, int(SYNC_SECONDS / max(round_s, 1e-6))))
        flag = 2.0 if signals.name == "SIGTERM" else (1.0 if local_stop else 0.0)
        flag = 3.0 if stop["error"] is not None else flag
        if P == 1:
            nbad_tot = host_bad.astype(np.int64)
            flags, ck_flag, every = np.array([flag]), cur["ck_due"], propose
        else:
            mine = np.concatenate([host_sums.ravel(), host_bad.ravel(), [flag, float(cur["ck_due"]), float(propose)]])
            try:
                rows = group.gather(mine, f"the sums of networks {span_lo}..{reached - 1}")
            except DistributedError as err:
                write_ck(state)
                raise DistributedError(f"{err}. {_kept(state, ck_path, writer)}") from None
            m = host_sums.size
            nbad_tot = rows[:, m:m + host_bad.size].sum(axis=0).reshape(host_bad.shape).astype(np.int64)
            flags, ck_flag, every = rows[:, -3], bool(rows[0, -2]), int(rows[0, -1])
            if np.any(flags == 3.0):
                if stop["error"] is None:
                    try:
                        write_ck(state)
                    except Exception:           # this process is not the failing one: its own error comes first
                        pass
                    who = int(np.flatnonzero(flags == 3.0)[0])
                    raise DistributedError(f"process {rank}: process {who} failed (see its error), so every process "
                                           f"stops. {_kept(state, ck_path, writer)}")
                raise stop["error"]
        if np.any(nbad_tot[0]):
            write_ck(state)
            raise _nonfinite_error(net, nbad_tot, span_lo, reached, run.kind, run.x)
        counts = state.counts + _range_counts(span_lo, reached, batches)
        if P == 1:
            state = BatchSums(counts, host_sums, state.widths, state.d)
        else:
            tot = np.zeros(host_sums.size)
            for r_ in range(P):            # process order: the same sum on every process
                tot = tot + rows[r_, :host_sums.size]
            state = BatchSums(counts, state.sums + tot.reshape(host_sums.shape), state.widths, state.d)
            acc = None
        bad = None
        cur.update(span_lo=reached, since=0, every=every, t_sync=time.perf_counter(), ck_due=False)
        bar(state.done)
        if np.any(flags > 0):
            if signals.name is not None:
                stop["interrupted"] = signals.name
            elif stop["callback"]:
                stop["interrupted"] = "SIGINT"
            else:                           # another process was interrupted
                stop["interrupted"] = "SIGTERM" if np.any(flags == 2.0) else "SIGINT"
            return True
        if ck_flag and reached < hi_net:
            try:
                write_ck(state)
            except Exception as err:        # e.g. the disk is full: the others learn it at the next point
                hold(err)
            last_ck = time.perf_counter()
        return False

    while first < hi_net:
        lo = first + cur["rounds"] * per_round + rank * plan.chunk
        if lo < hi_net and stop["error"] is None:
            try:
                idx = jax.device_put(np.arange(lo, lo + plan.chunk, dtype=np.int64), sharding)
                sums, nbad = fn(kd, idx, np.int64(min(lo + plan.chunk, hi_net)), *args)
                acc = sums if acc is None else acc + sums
                bad = nbad if bad is None else bad + nbad
            except Exception as err:        # e.g. out of device memory on this process only
                hold(err)
        cur["rounds"] += 1
        cur["since"] += 1
        reached = min(first + cur["rounds"] * per_round, hi_net)    # the prefix done once this round is summed
        if ck_path is not None and time.perf_counter() - last_ck >= run.checkpoint_every:
            cur["ck_due"] = True
        one_alone = P == 1 and (signals.name is not None or cur["ck_due"])
        if (reached >= hi_net or cur["since"] >= cur["every"] or one_alone) and sync(reached):
            break
        if reached >= hi_net:
            break
        if run.callback is not None and not stop["callback"]:
            try:
                run.callback(reached - lo_net, total)
            except KeyboardInterrupt:      # raised by a callback (signals themselves never raise)
                stop["callback"] = True
            except Exception as err:
                hold(err)
        # one process stops right after the chunk in which it was told to; several at their next agreed point
        if P == 1 and (stop["callback"] or signals.name is not None) and sync(reached):
            break
    if run.callback is not None and state.done >= total and not stop["callback"]:
        try:
            run.callback(state.done, total)
        except KeyboardInterrupt:
            pass                            # nothing is missing: the run is complete
    interrupted = stop["interrupted"]
    complete = state.done >= total
    if complete:
        interrupted = None      # the signal came during the last round: nothing is missing
    bar(state.done, final=True)
    if state.done == 0:
        raise KeyboardInterrupt    # only reachable from a KeyboardInterrupt that bypassed our handlers
    res = result(state, complete, interrupted)
    if writer and ck_path is not None:
        _write_npz(ck_path, res)
    if interrupted and writer:
        _report_interrupt(interrupted, state.done, total, ck_path, run.resume_hint, run.kind)
    return res


def _kept(state: BatchSums, ck_path, writer: bool) -> str:
    if ck_path is None:
        return "No checkpoint was given, so nothing was kept; use checkpoint=PATH to make runs resumable"
    return (f"The checkpoint {ck_path} holds the first {state.done:,} networks" if writer else
            "Process 0 keeps the checkpoint of the work done") + "; rerun the same command (any number of processes) " \
        "to resume"


def _shared_state(group, state: BatchSums) -> BatchSums:
    """Process 0's starting state on every process (only process 0 reads checkpoints and ``resume=``)."""
    if group.size == 1:
        return state
    row = group.gather(np.concatenate([state.counts.astype(np.float64), state.sums.ravel()]),
                       "the starting state (checkpoint)")[0]
    B = state.counts.size
    return BatchSums(row[:B].astype(np.int64), row[B:].reshape(state.sums.shape), state.widths, state.d)


def _network_range(config: dict) -> tuple[int, int]:
    """The networks a run covers: ``0..n_samples-1``, or a part's ``networks = [lo, hi]`` (lo..hi-1)."""
    if "networks" in config:
        lo, hi = config["networks"]
        return int(lo), int(hi)
    return 0, int(config["n_samples"])


@float64
def _sample(signals: _Signals, net, x, n_samples, seed, *, method, batches, chunk_size, memory_budget, checkpoint,
            checkpoint_every, progress, devices, resume, callback, resume_hint, dtype, distributed, part) -> MCResult:
    """The body of :func:`sample` (same arguments), run with ``signals`` installed as SIGINT / SIGTERM handler:
    validate, plan (devices, chunk size, configuration), find the starting state (checkpoint, ``resume``), run."""
    with _before_agreement(distributed):
        run = _validate(net, x, n_samples, seed, method=method, batches=batches, memory_budget=memory_budget,
                        checkpoint_every=checkpoint_every, progress=progress, callback=callback,
                        resume_hint=resume_hint, dtype=dtype, distributed=distributed, part=part)
    plan = _plan(run, devices, chunk_size)
    return _run(signals, run, plan, _start(run, plan.config, checkpoint, resume, plan.group))

r"""The Monte Carlo runner: chunks under a memory budget, shards over devices, checkpoints, resumes.

:func:`sample` draws ``n_samples`` networks and streams their per-layer statistics into ``B`` batch sums
(:mod:`pdlt.montecarlo.estimators`), returning an :class:`MCResult` of :class:`Estimate` objects.

* **Reproducible by construction.** Network s is drawn from ``fold_in(key(seed), s)`` and goes to batch
  ``s mod B``; a chunk is a contiguous range of sample indices, padded to a fixed size (padding is masked),
  so one compiled function serves every chunk and the result does not depend on the chunk size or the
  number of devices (up to float64 summation order, ~1e-15 relative).
* **Devices.** The chunk's sample axis is split over ``jax.sharding.Mesh(devices, ("s",))`` with
  ``jax.shard_map``; each device sums its networks into ``(B, L, F)`` and the sums are ``psum``-reduced.
* **Memory.** ``memory_budget`` (bytes of working memory per device) sets the chunk size from an estimate of
  the bytes one network needs (:func:`bytes_per_network`); an explicit ``chunk_size`` overrides it.
* **Checkpoints.** With ``checkpoint=PATH`` the state (batch counts and sums, float64, plus the configuration)
  is written atomically (temporary file + ``os.replace``) every ``checkpoint_every`` seconds, at the end, on
  Ctrl-C and before a divergence error; calling :func:`sample` again with the same ``PATH`` resumes and gives
  the uninterrupted result. A checkpoint of another configuration is refused. ``n_samples`` may grow between
  calls (the batch assignment does not depend on it). A checkpoint file is a saved :class:`MCResult`.
* **Ctrl-C** (KeyboardInterrupt) keeps every finished chunk: the partial result is returned with
  ``complete=False`` (and checkpointed if a path was given); pass it back as ``resume=`` or rerun with the
  same ``checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from .._x64 import enable_x64
from ..architecture import MLP
from ..errors import DivergentFlowError
from .estimators import BatchSums, Estimate, Statistics, stat_size, statistics
from .samplers import METHODS, network_fn

__all__ = ["MCResult", "sample", "load", "bytes_per_network", "DEFAULT_MEMORY_BUDGET"]

#: default working-memory budget per device (bytes)
DEFAULT_MEMORY_BUDGET = 512 * 2**20
#: largest chunk per device chosen automatically (on CPU, chunks that stay in cache run fastest: markov at
#: n=512, d=4 gives ~4000 networks/s at 256 vs ~3100 at 1024)
MAX_CHUNK_PER_DEVICE = 256
FORMAT = 1


def bytes_per_network(method: str, widths, d: int) -> int:
    """Estimated peak working memory (bytes) of one sampled network inside a chunk.

    markov: ~6 arrays of ``n d`` (normals, z, sigma(z), pair products) plus 3 copies of the ``L F``
    statistics; weights additionally ~3 copies of the largest weight matrix ``n_l n_{l-1}``.
    """
    widths = tuple(int(n) for n in widths)
    L, P = len(widths) - 1, d * (d + 1) // 2
    nmax = max(widths[1:])
    b = 8 * (6 * nmax * max(d, P) + 3 * L * stat_size(d) + 4 * d * d)
    if method == "weights":
        b += 8 * 3 * max(widths[l] * widths[l - 1] for l in range(1, L + 1))
    return b


# ---------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MCResult:
    """Monte Carlo estimates for every layer l = 1..L (arrays hold layer l at index l - 1).

    * ``two_point``          ``(L, d, d)``         ``E[z_{i;a} z_{i;b}]``  (theory: ``two_point(l)``);
    * ``four_point``         ``(L, d, d, d, d)``   distinct neurons, connected (theory: ``connected_four_point(l)``
      ``= V/n_{l-1}``); NaN for a layer of width 1;
    * ``four_point_single``  ``(L, d, d, d, d)``   one neuron's fourth cumulant (``connected_four_point_single``);
    * ``six_point_single``   ``(L, d)``            one neuron's sixth cumulant per input;
    * ``vertex``             ``(L, d, d, d, d)``   ``n_{l-1} * four_point`` (estimates PDLT's ``V^(l)`` to O(1/n)).

    Each is an :class:`Estimate` (``.mean``, ``.stderr``). ``n_samples`` networks were used; ``complete`` is False
    for an interrupted run (``n_samples < config["n_samples"]``). ``state`` holds the raw batch sums.
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

    @classmethod
    def from_state(cls, state: BatchSums, config: dict, complete: bool, elapsed: float = 0.0, info=None) -> "MCResult":
        st = statistics(state)
        return cls(*(getattr(st, k) for k in Statistics.NAMES), state=state, config=config, complete=complete,
                   elapsed=elapsed, info=dict(info or {}))

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
        return self.four_point.scaled(np.asarray(self.widths[:-1], dtype=np.float64))

    def save(self, path) -> str:
        """Write ``PATH.npz`` (arrays; the configuration is embedded) and ``PATH.json`` (metadata). Returns the
        .npz path. :func:`load` reads it back; it is also a valid checkpoint to resume from."""
        path = _npz_path(path)
        _write_npz(path, self)
        meta = _metadata(self)
        tmp = path[:-4] + ".json.tmp"
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2)
        os.replace(tmp, path[:-4] + ".json")
        return path

    @classmethod
    def load(cls, path) -> "MCResult":
        return load(path)

    def summary(self) -> str:
        """A short text table: layer, two-point ``G_00``, vertex ``V_(00)(00)`` with standard errors."""
        rows = [f"# {self.config['activation']}, widths={tuple(self.widths)}, method={self.config['method']}, "
                f"seed={self.config['seed']}, networks={self.n_samples}{'' if self.complete else ' (INCOMPLETE)'}",
                f"{'l':>4}  {'E[z_0 z_0]':>24}  {'V_(00)(00) = n_(l-1) x four_point':>36}"]
        for l in range(1, self.L + 1):
            g, gs = self.two_point.mean[l - 1, 0, 0], self.two_point.stderr[l - 1, 0, 0]
            v, vs = self.vertex.mean[l - 1, 0, 0, 0, 0], self.vertex.stderr[l - 1, 0, 0, 0, 0]
            rows.append(f"{l:4d}  {g:13.6g} +- {gs:8.2g}  {v:25.6g} +- {vs:8.2g}")
        return "\n".join(rows)


def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def _write_npz(path: str, res: MCResult) -> None:
    arrays = {
        "counts": res.state.counts, "sums": res.state.sums,
        "widths": np.asarray(res.state.widths), "d": np.asarray(res.state.d),
        "config_json": np.asarray(json.dumps(res.config)),
        "status_json": np.asarray(json.dumps({"complete": res.complete, "elapsed": res.elapsed, "info": res.info})),
    }
    for name in Statistics.NAMES + ("vertex",):
        e = getattr(res, name)
        arrays[f"{name}_mean"], arrays[f"{name}_stderr"] = e.mean, e.stderr
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _versions() -> dict:
    import jax

    from .. import __version__

    return {"pdlt": __version__, "jax": jax.__version__, "numpy": np.__version__, "sympy": sp.__version__,
            "python": platform.python_version()}


def _metadata(res: MCResult) -> dict:
    return {"format": FORMAT, "config": res.config, "seed": res.config["seed"], "method": res.config["method"],
            "n_samples": res.n_samples, "complete": res.complete, "elapsed_s": res.elapsed, "info": res.info,
            "versions": _versions(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def load(path) -> MCResult:
    """Read a result (or checkpoint) written by :meth:`MCResult.save` / :func:`sample`."""
    path = _npz_path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            config = json.loads(str(f["config_json"]))
            status = json.loads(str(f["status_json"]))
            state = BatchSums(np.array(f["counts"]), np.array(f["sums"]), tuple(int(n) for n in f["widths"]), int(f["d"]))
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a pdlt Monte Carlo result/checkpoint ({err})") from None
    return MCResult.from_state(state, config, status["complete"], status.get("elapsed", 0.0), status.get("info"))


# ---------------------------------------------------------------------------------------------------
# the compiled chunk function
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _chunk_function(method: str, act, widths: tuple, d: int, chunk: int, batches: int, devices: tuple):
    """jit(shard_map(...)): ``(key_data, idx (chunk,), stop, x, C_W, C_b) -> (sums (B, L, F), nbad (L,))``."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from .activations_jax import jax_activation

    net = jax.vmap(network_fn(method, jax_activation(act), widths), in_axes=(0, None, None, None))
    mesh = Mesh(np.array(devices), ("s",))

    def local(kd, idx, stop, x, C_W, C_b):
        base = jax.random.wrap_key_data(kd)
        keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(idx)
        st, ok = net(keys, x, C_W, C_b)
        mask = idx < stop
        st = jnp.where(mask[:, None, None], st, 0.0)
        sums = jax.ops.segment_sum(st, idx % batches, num_segments=batches)
        nbad = jnp.sum(jnp.logical_and(~ok, mask[:, None]), axis=0)
        return jax.lax.psum(sums, "s"), jax.lax.psum(nbad, "s")

    f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("s"), P(), P(), P(), P()), out_specs=(P(), P())))
    return f, NamedSharding(mesh, P("s"))


def _fingerprint_config(net: MLP, x: np.ndarray, seed: int, method: str, batches: int) -> dict:
    return {"format": FORMAT, "activation": net.activation.name, "activation_expr": sp.srepr(net.activation.expr),
            "widths": list(net.widths), "C_W": list(net.C_W), "C_b": list(net.C_b), "x": x.tolist(),
            "seed": int(seed), "method": method, "batches": int(batches), "prng": "threefry2x32 fold_in(seed, s)"}


def _fingerprint(cfg: dict) -> str:
    keep = {k: v for k, v in cfg.items() if k not in ("n_samples", "fingerprint")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _check_resumable(old: dict, new: dict, where: str):
    if old.get("fingerprint") == new["fingerprint"]:
        return
    diff = sorted(k for k in set(old) | set(new) if k not in ("n_samples", "fingerprint") and old.get(k) != new.get(k))
    raise ValueError(
        f"cannot resume from {where}: it was made with a different configuration (differs in: {', '.join(diff) or 'format'}); "
        "use the same network, inputs, seed, method and batches, or start afresh with another checkpoint path"
    )


def _resolve_devices(devices):
    import jax

    if devices is None:
        return tuple(jax.local_devices())
    if isinstance(devices, int):
        avail = jax.local_devices()
        if not 1 <= devices <= len(avail):
            raise ValueError(f"devices={devices} but {len(avail)} local device(s) are available")
        return tuple(avail[:devices])
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices must be None, a positive count, or a non-empty list of jax devices")
    return devices


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
        sys.stderr.write(f"\r[pdlt sample] {done:,}/{self.total:,} networks ({100 * done / self.total:5.1f}%)  "
                         f"{rate:,.0f}/s  ETA {eta:,.0f} s   ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


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
) -> MCResult:
    """Sample ``n_samples`` networks ``net`` on inputs ``x`` ``(d, n_0)`` and estimate, for every layer, the
    two-point, connected four-point (distinct neurons and one neuron) and single-input six-point functions.

    Parameters
    ----------
    method : ``"markov"`` (exact conditional-Gaussian layer sampler, fast) or ``"weights"`` (explicit W, b).
    batches : number B of interleaved batches for the jackknife errors (network s -> batch ``s mod B``).
    chunk_size : networks per compiled call (rounded up to a multiple of the device count); default from
        ``memory_budget``. Results do not depend on it.
    memory_budget : bytes of working memory per device used to choose the chunk size.
    checkpoint : path of a checkpoint file (.npz); resumed from if it exists, written during the run.
    checkpoint_every : seconds between checkpoint writes (0: after every chunk).
    progress : print a progress line on stderr (default: when stderr is a terminal).
    devices : None (all local devices), a count, or a list of jax devices to shard over.
    resume : a previous (partial) :class:`MCResult` of the same configuration to continue.
    callback : called as ``callback(done, n_samples)`` after every chunk (e.g. for custom progress).

    Raises
    ------
    ValueError for bad settings (naming the setting), :class:`pdlt.DivergentFlowError` naming the first layer
    whose preactivations (or their sixth powers) overflow.

    >>> import pdlt
    >>> net = pdlt.MLP("tanh", widths=(2, 8, 8), C_W=1.0, C_b=0.0)
    >>> res = pdlt.sample(net, [[1.0, 0.0]], n_samples=256, seed=0, batches=16)
    >>> res.two_point.mean.shape, res.four_point.stderr.shape, res.complete
    ((2, 1, 1), (2, 1, 1, 1, 1), True)
    """
    import jax
    import jax.numpy as jnp

    enable_x64()
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x = net.inputs(x)
    d = x.shape[0]
    if method not in METHODS:
        raise ValueError(f"unknown method={method!r}; choose one of {METHODS}")
    for name, v in (("n_samples", n_samples), ("batches", batches), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    n_samples, batches, seed = int(n_samples), int(batches), int(seed)
    if batches < 2:
        raise ValueError(f"batches={batches}: the jackknife needs at least 2 batches")
    if n_samples < batches:
        raise ValueError(f"n_samples={n_samples} is less than batches={batches}: sample more networks or lower batches")
    if n_samples >= 2**32:
        raise ValueError(f"n_samples={n_samples} exceeds the 2^32 per-network keys; use several seeds")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    devs = _resolve_devices(devices)
    ndev = len(devs)

    per_net = bytes_per_network(method, net.widths, d)
    if chunk_size is None:
        if not (isinstance(memory_budget, (int, float, np.integer, np.floating)) and memory_budget > 0):
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
        per_dev = int(memory_budget // per_net)
        if per_dev < 1:
            raise ValueError(
                f"memory_budget={int(memory_budget):,} bytes is too small for one network of this architecture "
                f"(method={method!r}, widths={net.widths}, d={d} needs ~{per_net:,} bytes); raise memory_budget "
                + ("or use method='markov' (no weight matrices)" if method == "weights" else "or reduce the widths"))
        per_dev = min(per_dev, MAX_CHUNK_PER_DEVICE, -(-n_samples // ndev))
        chunk = per_dev * ndev
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        chunk = -(-int(chunk_size) // ndev) * ndev

    config = _fingerprint_config(net, x, seed, method, batches)
    config["fingerprint"] = _fingerprint(config)
    config["n_samples"] = n_samples
    info = {"chunk_size": chunk, "devices": [str(dv) for dv in devs], "platform": devs[0].platform}

    state = BatchSums.zeros(batches, net.widths[1:], d)
    elapsed0 = 0.0
    ck_path = _npz_path(checkpoint) if checkpoint is not None else None
    if resume is not None:
        if not isinstance(resume, MCResult):
            raise TypeError(f"resume must be an MCResult, got {type(resume).__name__}")
        _check_resumable(resume.config, config, "resume=")
        state, elapsed0 = resume.state, resume.elapsed
    elif ck_path is not None and os.path.exists(ck_path):
        old = load(ck_path)
        _check_resumable(old.config, config, f"checkpoint {ck_path}")
        state, elapsed0 = old.state, old.elapsed
    if state.done > n_samples:
        raise ValueError(f"the run being resumed already has {state.done} networks > n_samples={n_samples}; "
                         "raise n_samples or start afresh")

    fn, sharding = _chunk_function(method, net.activation, tuple(net.widths), d, chunk, batches, devs)
    kd = jax.random.key_data(jax.random.key(seed))
    args = (jnp.asarray(x), jnp.asarray(net.C_W, dtype=jnp.float64), jnp.asarray(net.C_b, dtype=jnp.float64))
    bar = _Progress(n_samples, state.done, sys.stderr.isatty() if progress is None else bool(progress))
    t0 = time.perf_counter()
    last_ck = t0

    def result(complete):
        return MCResult.from_state(state, config, complete, elapsed0 + time.perf_counter() - t0, info)

    def write_ck():
        if ck_path is not None and state.done > 0:
            _write_npz(ck_path, result(state.done >= n_samples))

    interrupted = False
    try:
        while state.done < n_samples:
            start = state.done
            stop = min(start + chunk, n_samples)
            idx = jax.device_put(np.arange(start, start + chunk, dtype=np.int64), sharding)
            sums, nbad = fn(kd, idx, np.int64(stop), *args)
            sums, nbad = np.asarray(sums), np.asarray(nbad)
            if np.any(nbad):
                write_ck()
                l = int(np.flatnonzero(nbad)[0]) + 1
                C_W, C_b = net.hyper(l)
                raise DivergentFlowError(
                    f"Monte Carlo: the preactivations of layer l = {l} (or their 6th powers) are not finite in "
                    f"{int(nbad[l - 1])} of networks {start}..{stop - 1} (C_W^({l}) = {C_W:g}, C_b^({l}) = {C_b:g}): the "
                    "flow diverges; lower C_W / C_b toward criticality (pdlt.criticality) or reduce the depth",
                    layer=l,
                )
            counts = np.bincount(np.arange(start, stop) % batches, minlength=batches)
            state = state.add(counts, sums)
            bar(state.done)
            now = time.perf_counter()
            if ck_path is not None and (now - last_ck >= checkpoint_every) and state.done < n_samples:
                write_ck()
                last_ck = now
            if callback is not None:
                callback(state.done, n_samples)
    except KeyboardInterrupt:
        interrupted = True
    complete = state.done >= n_samples
    bar(state.done, final=True)
    if state.done == 0:
        if interrupted:
            raise KeyboardInterrupt
        raise ValueError("no networks were sampled")
    res = result(complete)
    if ck_path is not None:
        _write_npz(ck_path, res)
    if interrupted:
        how = (f"call pdlt.sample again with checkpoint={ck_path!r} to resume" if ck_path is not None else
               "pass the returned result as resume=... to continue (or use checkpoint=PATH)")
        sys.stderr.write(f"[pdlt sample] interrupted: kept {state.done:,} of {n_samples:,} networks "
                         f"(result.complete is False); {how}\n")
    return res

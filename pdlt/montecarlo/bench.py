"""``pdlt bench mc``: sampler throughput as ratios measured in one run on the same device(s).

* ``markov`` and ``weights`` networks per second at (n, L, d), both computing the same statistics;
* the raw ``jax.random.normal`` float64 throughput (one jitted call drawing as many normals as one markov
  chunk needs), and markov's effective normals rate ``networks/s * n d L`` as a fraction of it;
* the time to estimate ``V^(L)`` to 1% relative standard error (largest over its components) for tanh at
  criticality (C_W = 1, C_b = 0), n = 128, L = 16, d = 2: a pilot run measures the throughput and the
  relative error, the samples needed are extrapolated (``rel_se ~ 1/sqrt(N)``); ``full=True`` also runs it.
"""

from __future__ import annotations

import time

import numpy as np

from .._x64 import float64
from ..architecture import MLP

__all__ = ["bench_mc", "bench_ntk"]


def _rate(fn, min_time: float, min_reps: int = 2) -> float:
    """Calls per second of ``fn()`` (blocking), after one warm-up call."""
    fn()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if reps >= min_reps and dt >= min_time:
            return reps / dt


def _throughput(net, x, method, min_time, devices, memory_budget):
    import jax
    import jax.numpy as jnp

    from .runner import MAX_CHUNK_PER_DEVICE, bytes_per_network, chunk_function, resolve_devices

    devs = resolve_devices(devices)
    per_dev = max(1, min(MAX_CHUNK_PER_DEVICE, memory_budget // bytes_per_network(method, net.widths, x.shape[0])))
    chunk = per_dev * len(devs)
    fn, sharding = chunk_function(method, net.activation, net.widths, x.shape[0], chunk, 32, devs)
    kd = jax.random.key_data(jax.random.key(0))
    idx = jax.device_put(np.arange(chunk, dtype=np.int64), sharding)
    args = (jnp.asarray(x), jnp.asarray(net.C_W), jnp.asarray(net.C_b))
    r = _rate(lambda: jax.block_until_ready(fn(kd, idx, np.int64(chunk), *args)), min_time)
    return r * chunk, chunk


def _reporter(progress):
    """``progress(name, value)`` or a no-op: each measurement is reported as soon as it is known, so a run of a
    minute shows where it is."""
    return progress if progress is not None else (lambda name, value: None)


@float64
def bench_mc(n: int = 512, L: int = 8, d: int = 4, *, min_time: float = 3.0, devices=None,
             memory_budget: int = 512 * 2**20, vertex: bool = True, full: bool = False, pilot: int = 32768,
             progress=None) -> dict:
    """Run the benchmark; returns a dict of named numbers (rates in 1/s, times in s, ratios).
    ``progress(name, value)`` is called after each measurement (the CLI prints a line on stderr)."""
    import jax
    import jax.numpy as jnp

    report = _reporter(progress)
    out = {"device": str(jax.devices()[0].device_kind if devices is None else devices), "backend": jax.default_backend()}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(d, n))
    x *= np.sqrt(n) / np.linalg.norm(x, axis=1, keepdims=True)          # |x|^2 / n_0 = 1
    net = MLP("tanh", (n,) * (L + 1), C_W=1.0, C_b=0.0)
    mk, chunk_m = _throughput(net, x, "markov", min_time, devices, memory_budget)
    report(f"markov networks/s (n={n}, L={L}, d={d}, chunk {chunk_m})", mk)
    wt, chunk_w = _throughput(net, x, "weights", min_time, devices, memory_budget)
    report(f"weights networks/s (n={n}, L={L}, d={d}, chunk {chunk_w})", wt)
    # raw normals: the best of three ways of drawing the normals one markov chunk needs (so the ratio below is
    # against the fastest plain use of jax.random.normal on this device, not a strawman)
    M = chunk_m * n * d * L
    key = jax.random.key(1)
    one = jax.jit(lambda k: jax.random.normal(k, (M,), jnp.float64))
    one_sum = jax.jit(lambda k: jnp.sum(jax.random.normal(k, (M,), jnp.float64)))

    def per_net(s):
        ks = jax.random.fold_in(key, s)
        return sum(jnp.sum(jax.random.normal(jax.random.fold_in(ks, l), (d, n), jnp.float64)) for l in range(1, L + 1))

    vm = jax.jit(jax.vmap(per_net))
    idx = jnp.arange(chunk_m)
    raws = {}
    for what, fn in (("one array", lambda: one(key).block_until_ready()),
                     ("one array, summed", lambda: one_sum(key).block_until_ready()),
                     ("per-network keys, markov's shapes, summed", lambda: vm(idx).block_until_ready())):
        raws[what] = _rate(fn, min_time) * M
        report(f"raw jax.random.normal float64 normals/s ({what})", raws[what])
    raw = max(raws.values())
    out.update({
        f"markov networks/s (n={n}, L={L}, d={d}, chunk {chunk_m})": mk,
        f"weights networks/s (n={n}, L={L}, d={d}, chunk {chunk_w})": wt,
        "ratio markov/weights": mk / wt,
        **{f"raw jax.random.normal float64 normals/s ({k})": v for k, v in raws.items()},
        "raw jax.random.normal float64 normals/s (best of the above)": raw,
        f"markov normals/s (networks/s x n d L = {n * d * L})": mk * n * d * L,
        "ratio markov normals rate / raw normal rate": mk * n * d * L / raw,
    })
    if vertex:
        out.update(bench_vertex(devices=devices, full=full, pilot=pilot, progress=progress))
    return out


def bench_vertex(n: int = 128, L: int = 16, target: float = 0.01, *, pilot: int = 32768, devices=None,
                 full: bool = False, progress=None) -> dict:
    """Time to ``V^(L)`` at ``target`` relative standard error, tanh at criticality, d = 2 (see module doc)."""
    from .runner import sample

    report = _reporter(progress)

    net = MLP("tanh", (2,) + (n,) * L, C_W=1.0, C_b=0.0)
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    t0 = time.perf_counter()
    sample(net, x, 2048, seed=12345, devices=devices, progress=False)          # compile (same chunk size)
    compile_s = time.perf_counter() - t0
    report("V^(L) compile [s]", compile_s)
    t0 = time.perf_counter()
    res = sample(net, x, pilot, seed=0, devices=devices, progress=False)
    dt = time.perf_counter() - t0
    rel = float(np.nanmax(res.vertex.rel_stderr[-1]))
    need = int(np.ceil(pilot * (rel / target) ** 2))
    out = {
        f"V^(L) pilot: networks/s (tanh critical, n={n}, L={L}, d=2)": pilot / dt,
        f"V^(L) pilot: max relative stderr at {pilot} networks": rel,
        f"V^(L) to {target:.0%}: networks needed (extrapolated)": need,
        f"V^(L) to {target:.0%}: seconds (extrapolated, excl. {compile_s:.1f} s compile)": need * dt / pilot,
    }
    for k, v in out.items():
        report(k, v)
    if full:
        # run it: extend the same run (resume=) until the target is reached; the max over components of a
        # noisy relative error needs a margin, hence the 1.2 and the re-extrapolation
        t0 = time.perf_counter()
        res = sample(net, x, int(need * 1.2) + 1, seed=1, devices=devices, progress=False)
        rel = float(np.nanmax(res.vertex.rel_stderr[-1]))
        for _ in range(5):
            if rel <= target:
                break
            more = int(np.ceil(res.n_samples * (rel / target) ** 2 * 1.1))
            res = sample(net, x, more, seed=1, devices=devices, progress=False, resume=res)
            rel = float(np.nanmax(res.vertex.rel_stderr[-1]))
            report(f"V^(L) full run: {res.n_samples} networks, max relative stderr", rel)
        out[f"V^(L) full run: seconds to {target:.0%} ({res.n_samples} networks)"] = time.perf_counter() - t0
        out["V^(L) full run: max relative stderr"] = rel
    return out


@float64
def bench_ntk(n: int = 64, L: int = 4, d: int = 2, n_networks: int = 4096, *, min_time: float = 3.0, devices=None,
              memory_budget: int = 512 * 2**20, progress=None) -> dict:
    """Networks per second of the plain ``weights`` sampler and of the NTK sampler (NTK, dNTK, ddNTK-I/II
    statistics of every layer, :mod:`pdlt.montecarlo.ntk_sampler`) on the same networks (same keys), tanh at
    ``C_W = 1``, widths ``n``, depth ``L``, ``d`` inputs, each through its compiled chunk function on the same
    device(s); ``n_networks`` caps the chunk. Returns the rates, their ratio (NTK cost over plain cost) and the
    compile times. The issue's target is a ratio of at most 10 at n = 64, L = 4, d = 2."""
    import jax
    import jax.numpy as jnp

    from .ntk_sampler import ntk_bytes_per_network
    from .runner import MAX_CHUNK_PER_DEVICE, bytes_per_network, chunk_function, resolve_devices

    report = _reporter(progress)
    devs = resolve_devices(devices)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(d, n))
    x *= np.sqrt(n) / np.linalg.norm(x, axis=1, keepdims=True)          # |x|^2 / n_0 = 1
    net = MLP("tanh", (n,) * (L + 1), C_W=1.0, C_b=0.0)
    kd = jax.random.key_data(jax.random.key(0))
    out = {"device": str(devs[0].device_kind), "backend": devs[0].platform}
    rates = {}
    for kind, per_net in (("weights", bytes_per_network("weights", net.widths, d)),
                          ("ntk", ntk_bytes_per_network(net.widths, d))):
        per_dev = int(max(1, min(MAX_CHUNK_PER_DEVICE, memory_budget // per_net, -(-n_networks // len(devs)))))
        chunk = per_dev * len(devs)
        fn, sharding = chunk_function("weights", net.activation, net.widths, d, chunk, 32, devs, None, kind)
        idx = jax.device_put(np.arange(chunk, dtype=np.int64), sharding)
        last = np.ones((2, L)) if kind == "ntk" else np.stack([np.ones(L), np.ones(L)])
        args = (jnp.asarray(x), jnp.asarray(net.C_W), jnp.asarray(net.C_b), jnp.asarray(last))
        t0 = time.perf_counter()
        jax.block_until_ready(fn(kd, idx, np.int64(chunk), *args))
        out[f"{kind}: compile + first call [s]"] = time.perf_counter() - t0
        rates[kind] = _rate(lambda: jax.block_until_ready(fn(kd, idx, np.int64(chunk), *args)), min_time) * chunk
        name = "plain weights sampler" if kind == "weights" else "NTK sampler (NTK + dNTK + ddNTK)"
        out[f"{name} networks/s (n={n}, L={L}, d={d}, chunk {chunk})"] = rates[kind]
        report(f"{name} networks/s (n={n}, L={L}, d={d}, chunk {chunk})", rates[kind])
    out["ratio NTK cost / plain cost"] = rates["weights"] / rates["ntk"]
    report("ratio NTK cost / plain cost", out["ratio NTK cost / plain cost"])
    return out


def bench_train(n: int = 64, L: int = 3, n_train: int = 4, steps: int = 500, n_networks: int = 10_000, *,
                devices=None, progress=None) -> dict:
    """Gradient-descent training ensembles (:func:`pdlt.sample_trained`): the wall time of ``n_networks`` networks of
    widths ``(3, n, ..., n, 1)`` (depth L, tanh at C_W = 1.2, C_b = 0.1) on ``n_train`` training points for ``steps``
    full-batch steps (NTK at t = 0 and t = T, own frozen prediction, loss curve), compile included, and the rate.
    The issue's target: 10^4 networks, n = 64, L = 3, 4 points, 500 steps in under 60 s on 2 CPU cores; reported as
    the ratio time / 60 s (below 1 meets it)."""
    from .runner import resolve_devices, sample_trained

    report = _reporter(progress)
    devs = resolve_devices(devices)
    rng = np.random.default_rng(0)
    xa, xd = rng.normal(size=(n_train, 3)), rng.normal(size=(2, 3))
    y = rng.normal(size=n_train)
    net = MLP("tanh", (3,) + (n,) * (L - 1) + (1,), C_W=1.2, C_b=0.1)
    from ..theory.training import stability_limit

    eta = 0.4 * stability_limit(net, xa)
    t0 = time.perf_counter()
    res = sample_trained(net, xa, y, xd, n_networks, seed=0, eta=eta, steps=steps, devices=devs, progress=False)
    wall = time.perf_counter() - t0
    label = f"(n={n}, L={L}, {n_train} points, {steps} steps, {n_networks} networks)"
    out = {"device": str(devs[0].device_kind), "backend": devs[0].platform,
           f"training ensemble wall time {label} [s]": wall,
           f"training ensemble networks/s {label}": n_networks / wall,
           "ratio wall time / 60 s target": wall / 60.0, "diverged networks": float(res.diverged)}
    for k in (f"training ensemble wall time {label} [s]", "ratio wall time / 60 s target"):
        report(k, out[k])
    return out

r"""Exact samplers of finite-width MLP preactivations (JAX, float64, one PRNG key per network).

Conventions (PDLT eqs. 4.3-4.4, derivations/README.md section 1): ``W^(l) ~ N(0, C_W^(l)/n_{l-1})``,
``b^(l) ~ N(0, C_b^(l))``, ``z^(1) = b + W x``, ``z^(l+1) = b + W sigma(z^(l))``, no activation on ``z^(L)``.
A network's preactivations at layer l are held transposed, ``zt = z^T`` of shape ``(d, n_l)`` (inputs x
neurons), which keeps the neuron axis contiguous for XLA.

Two samplers, identical in distribution:

* ``"weights"`` (the reference): draws every ``W^(l)`` ``(n_l, n_{l-1})`` and ``b^(l)`` and runs the network,
  ``O(n^2 d)`` per layer and ``n^2`` normals;
* ``"markov"``: conditional Gaussianity (exact, derivations/README.md section 2): given layer l the rows
  ``z^(l+1)_{i;.}`` are iid ``N(0, G^(l+1))`` with the stochastic metric
  ``G^(l+1) = C_b + (C_W/n_l) sigma(z^(l))^T sigma(z^(l))`` (``d x d``), so
  ``z^(l+1)^T = R xi`` with ``xi ~ N(0, 1)`` ``(d, n_{l+1})`` and ``R = G^{1/2}`` the symmetric PSD square root:
  ``O(n d^2 + d^3)`` per layer and ``n d`` normals. Layer 1 is exactly Gaussian with the deterministic
  ``K^(1) = C_b + C_W x x^T / n_0``. ``R`` stays exact when ``G^`` is singular (``d > n``, repeated inputs,
  a zero input without bias): ``d = 1`` ``sqrt``; ``d = 2`` the closed form ``(G + s 1)/t``, ``s = sqrt(det G)``,
  ``t = sqrt(tr G + 2 s)``; ``d >= 3`` ``eigh`` with round-off negative eigenvalues clipped to 0. In every
  case ``R R = G^`` to rounding.

Each layer is its step's map (:mod:`pdlt.layers`): for a residual step (``MLP(..., gamma=..., xi=...)``) the
markov update is ``gamma z + xi G^^{1/2} eps`` and the weights update ``gamma z + xi (W sigma(z) + b)``, both
still exact given the layer.

Keys: network s uses ``k_s = fold_in(base, s)`` and layer l ``fold_in(k_s, l)`` (weights: ``W`` from
``fold_in(., 0)``, ``b`` from ``fold_in(., 1)``), so any split of the networks into chunks or devices gives the
same networks.

``network_fn(...)`` returns a function ``(key, x, C_W, C_b) -> (stats (L, F), finite (L,))`` with the
per-network statistics of :func:`pdlt.montecarlo.estimators.layer_stats` for every layer; consecutive
layers of equal shape run in a ``lax.scan`` (compile time independent of depth for uniform widths). The weights
sampler measures every layer on its rows. The markov sampler does so for layer 1 and for residual steps; after a
dense step it reports the statistics' conditional expectations given the metric the rows are drawn from
(:func:`pdlt.montecarlo.estimators.metric_stats`: the same expectations, a smaller variance, ``O(d^4)`` work),
and it does not draw the last layer's rows at all (``n d (L - 1)`` normals per network for a plain MLP).

Precision (``network_fn(..., dtype=)``): ``"float64"`` (default) or ``"float32"``. In float32 the normals are drawn
in float32, the activation, the weights and the preactivations are float32 and matrix products run at full float32
precision (never TF32/bfloat16); the markov sampler keeps the d x d metric, its root and ``R eps`` in float64 (a
float32 metric loses the part of G that separates nearly collinear inputs), and every network's statistics are
computed in float64 (from the float64 metric where the layer is measured on it, else from its preactivations cast to
float64) and summed in float64. Network s is a different draw in the two precisions. ``jax.random.normal`` in
float32 takes values in [-5.42, 5.22] (23 random bits): over its whole output grid the variance is 1 - 1.1e-7, the
fourth cumulant -5e-6 and the sixth -1.8e-4 (units of the variance), so a neuron's sixth cumulant measured on float32
rows (the weights sampler, layer 1, residual steps) carries a relative bias of that order: below the statistical
error of any run short of ~10^9 networks, but a reason to keep float64 for six-point work at that scale.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import ParameterError
from .estimators import layer_stats, metric_stats
from .._x64 import float64

__all__ = ["METHODS", "psd_sqrt", "network_fn", "measured_on_metric", "sample_layers", "reference_scale",
           "scale_arrays", "N_PILOT", "OK", "NOT_FINITE", "ACTIVATION_NAN", "weight_normals"]

METHODS = ("markov", "weights")


@float64   # float64 in any caller's configuration (a no-op inside pdlt's own scope or a trace in it)
def psd_sqrt(G):
    """Symmetric PSD square root ``R`` of ``G`` ``(..., d, d)`` (``R R = G``), exact for singular ``G``.

    A ``G`` with any NaN or inf entry (an overflowed or undefined metric) gives an all-NaN ``R`` for every d, so
    the failure propagates to the sampled preactivations and is never turned into a 0.
    """
    import jax.numpy as jnp

    if np.ndim(G) < 2 or np.shape(G)[-1] != np.shape(G)[-2]:          # (static under jit: shapes only)
        raise ParameterError(f"psd_sqrt takes square matrices (..., d, d), got shape {np.shape(G)}", "G")
    d = G.shape[-1]
    if d == 1:
        R = jnp.sqrt(jnp.maximum(G, 0.0))
    elif d == 2:
        a, b, c = G[..., 0, 0], 0.5 * (G[..., 0, 1] + G[..., 1, 0]), G[..., 1, 1]
        s = jnp.sqrt(jnp.maximum(a * c - b * b, 0.0))
        t = jnp.sqrt(jnp.maximum(a + c + 2.0 * s, 0.0))
        tz = jnp.where(t > 0, t, 1.0)
        r00, r11, r01 = (a + s) / tz, (c + s) / tz, b / tz
        R = jnp.stack([jnp.stack([r00, r01], -1), jnp.stack([r01, r11], -1)], -2)
        R = jnp.where((t > 0)[..., None, None], R, 0.0)     # G = 0 exactly (e.g. all ReLUs off, no bias)
    else:
        w, U = jnp.linalg.eigh(0.5 * (G + jnp.swapaxes(G, -1, -2)))
        R = (U * jnp.sqrt(jnp.maximum(w, 0.0))[..., None, :]) @ jnp.swapaxes(U, -1, -2)
    # jnp.maximum(nan, 0) and the t > 0 branch above would map a NaN/inf metric to a finite R
    return jnp.where(jnp.all(jnp.isfinite(G), axis=(-2, -1))[..., None, None], R, jnp.nan)


def _segments(widths, steps):
    """Group the transitions l -> l+1 (l = 1..L-1) into runs of equal shape ``(n_l, n_{l+1})`` and equal step."""
    runs = []
    for l in range(1, len(widths) - 1):
        shape = (widths[l], widths[l + 1], steps[l])
        if runs and runs[-1][0] == shape:
            runs[-1][1].append(l)
        else:
            runs.append((shape, [l]))
    return [((a, b), ls) for (a, b, _), ls in runs]


def _steps(widths, shortcuts):
    """The layer steps for sampling (their C_W, C_b are passed at run time; only the step type, gamma and xi are
    static): ``shortcuts`` is ``(gamma, xi)`` per layer (:attr:`pdlt.MLP.gamma`, :attr:`pdlt.MLP.xi`) or None."""
    from ..layers import Input, step_for

    L = len(widths) - 1
    g, x = shortcuts if shortcuts is not None else ((0.0,) * L, (1.0,) * L)
    return (Input(),) + tuple(step_for(0.0, 0.0, float(g[l]), float(x[l])) for l in range(1, L))


def weight_normals(k, n_next: int, n: int, dtype="float64"):
    """The unit normals of one layer of the ``"weights"`` sampler from its key ``k`` (module docstring, "Keys"):
    ``Wn`` ``(n_next, n)`` from ``fold_in(k, 0)`` and ``bn`` ``(n_next,)`` from ``fold_in(k, 1)``; every sampler of
    explicit weights draws them here, so network s is the same network in all of them (for one ``dtype``: float32
    normals are a draw of their own, module docstring, "Precision")."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype)
    return (jax.random.normal(jax.random.fold_in(k, 0), (n_next, n), dtype),
            jax.random.normal(jax.random.fold_in(k, 1), (n_next,), dtype))


def explicit_weights(key, widths, C_W, C_b):
    """``([W^(1..L)], [b^(1..L)])`` of network ``key``: layer m from :func:`weight_normals` of ``fold_in(key, m)``
    scaled by :func:`pdlt.layers.dense.parameters`, so that every explicit-weight sampler (the ``"weights"`` method,
    the NTK jets, trained ensembles) draws network s bit for bit alike."""
    import jax
    import jax.numpy as jnp

    from ..layers.dense import parameters

    Ws, bs = [], []
    for m in range(1, len(widths)):
        Wn, bn = weight_normals(jax.random.fold_in(key, m), widths[m], widths[m - 1])
        W, b = parameters(jnp, widths[m - 1], C_W[m - 1], C_b[m - 1], Wn, bn)
        Ws.append(W)
        bs.append(b)
    return Ws, bs


def _layer_functions(method: str, sigma: Callable, widths, steps, dtype):
    """``first(k, x, C_W, C_b) -> zt`` and ``step(zt, k, C_W, C_b, n_next, l, draw) -> (zt', act_nan, G)``, where
    ``act_nan`` says that the activation returned NaN somewhere on ``zt`` (outside its domain, e.g. ``sqrt`` or
    ``log`` of a negative preactivation) and ``G`` is, for the markov sampler and a step with a
    ``conditional_metric``, the metric the rows of ``zt'`` were drawn from (None otherwise); ``draw=False`` skips
    drawing ``zt'`` (None) where ``G`` is returned. Each layer is its step's ``markov`` or ``weights`` map
    (:mod:`pdlt.layers`); ``x``, ``C_W``, ``C_b`` arrive in the network ``dtype`` and the maps keep it (their other
    constants are Python floats)."""
    import jax
    import jax.numpy as jnp

    def act(zt):
        # a float64 sigma (any caller's callable) must not promote a float32 network back to float64
        return sigma(zt).astype(dtype)

    if method == "markov":
        # the d x d metric, its root and R eps stay float64 (x, C_W, C_b arrive in float64): a float32 metric loses
        # the part of G that separates nearly collinear inputs (4x too large at |x_a - x_b| = 1e-4 |x|); the
        # normals, the activation and the stored preactivations are the network dtype
        def first(k, x, C_W, C_b):
            eps = jax.random.normal(k, (x.shape[0], widths[1]), dtype)
            return steps[0].markov(jnp, psd_sqrt, x, C_W, C_b, eps).astype(dtype)

        def step(zt, k, C_W, C_b, n_next, l, draw=True):
            s = act(zt)
            bad = jnp.any(jnp.isnan(s))
            if not hasattr(steps[l], "conditional_metric"):
                eps = jax.random.normal(k, (zt.shape[0], n_next), dtype)
                z = steps[l].markov(jnp, psd_sqrt, zt.astype(C_W.dtype), s.astype(C_W.dtype), C_W, C_b, eps)
                return z.astype(dtype), bad, None
            G = steps[l].conditional_metric(s.astype(C_W.dtype), C_W, C_b)
            if not draw:
                return None, bad, G
            eps = jax.random.normal(k, (zt.shape[0], n_next), dtype)
            # the step's own map; XLA computes the metric it forms again only once (common subexpressions)
            z = steps[l].markov(jnp, psd_sqrt, zt.astype(C_W.dtype), s.astype(C_W.dtype), C_W, C_b, eps)
            return z.astype(dtype), bad, G
    elif method == "weights":
        def first(k, x, C_W, C_b):
            return steps[0].weights(jnp, x, C_W, C_b, *weight_normals(k, widths[1], widths[0], dtype))

        def step(zt, k, C_W, C_b, n_next, l, draw=True):
            s = act(zt)
            return (steps[l].weights(jnp, zt, s, C_W, C_b, *weight_normals(k, n_next, zt.shape[1], dtype)),
                    jnp.any(jnp.isnan(s)), None)
    else:
        raise ParameterError(f"unknown sampling method {method!r}; choose one of {METHODS}")
    return first, step


#: per-layer status codes of :func:`network_fn` (cumulative: a network keeps its first failure in later layers)
OK, NOT_FINITE, ACTIVATION_NAN = 0, 1, 2

#: the network arithmetic the samplers offer; the statistics are always summed in float64
DTYPES = ("float64", "float32")


def check_dtype(dtype) -> str:
    """``"float64"`` or ``"float32"`` from a name or numpy/jax dtype; ParameterError naming ``dtype`` otherwise."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ParameterError(f"dtype must be one of {DTYPES} (the network arithmetic; statistics are always "
                             f"accumulated in float64), got {dtype!r}", "dtype")
    return name


def network_fn(method: str, sigma: Callable, widths, *, keep_z: bool = False, shortcuts=None, dtype="float64"):
    """One network: ``(key, x (d, n_0), C_W (L,), C_b (L,), scale (2, L) or None) -> (stats (L, F), status (L,))``.

    ``scale[0, l-1] = 2**-k_l`` and ``scale[1, l-1] = 2**k_l``: the statistics are those of the rescaled
    ``z^(l) 2**-k_l`` (exact, see :mod:`pdlt.montecarlo.estimators`); None means ``k_l = 0``.

    ``status[l-1]`` (int32): ``OK``; ``NOT_FINITE`` if the preactivations of layer l, the metric they were drawn
    from, their rescaled statistics or their raw two-point statistic ``t2 = z z^T / n`` are not finite (a
    diverging flow, the same criterion for every d; in float32 the markov sampler's last layer, measured on its
    float64 metric and never drawn, is not limited by float32's range); ``ACTIVATION_NAN`` if the activation
    returned NaN on the (finite) preactivations of layer l - 1. A failure at layer l marks every later layer of the
    network too (the maximum of the codes so far), so nothing downstream of a NaN/inf is ever counted as valid.
    With ``keep_z=True`` returns the list of ``z^(l)`` ``(n_l, d)`` instead (tests, small nets).
    Internally ``zt = z^T`` ``(d, n_l)``.

    ``dtype``: ``"float64"`` or ``"float32"``, the network arithmetic (module docstring, "Precision"); the statistics
    are float64 either way (a float32 network that overflows gives non-finite preactivations: ``NOT_FINITE``).
    """
    import contextlib

    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(check_dtype(dtype))
    widths = tuple(int(n) for n in widths)
    steps = _steps(widths, shortcuts)
    first, step = _layer_functions(method, sigma, widths, steps, dt)
    runs = _segments(widths, steps)
    L = len(widths) - 1

    def measure(z, G, act_nan, prev, inv, sc, n):
        # a layer drawn from a known metric reports the statistics' conditional expectations given it (exact,
        # lower variance, O(d^4)): estimators module docstring, "Conditional statistics"
        st = layer_stats(z.astype(jnp.float64) * inv) if G is None else metric_stats((G * inv) * inv, n)
        d = (z if G is None else G).shape[0]
        t2 = st[..., :d * (d + 1) // 2]
        finite = jnp.all(jnp.isfinite(st)) & jnp.all(jnp.isfinite((t2 * sc) * sc))
        if G is not None and z is not None:
            finite &= jnp.all(jnp.isfinite(z))   # the rows carried on (float32 can overflow where G^ does not)
        own = jnp.where(act_nan, ACTIVATION_NAN, jnp.where(finite, OK, NOT_FINITE)).astype(jnp.int32)
        return st, jnp.maximum(prev, own)

    @float64
    def fn(key, x, C_W, C_b, scale=None):
        # float32 matrix products default to TF32 on recent GPUs (bfloat16 on TPU): ask for true float32
        with jax.default_matmul_precision("float32") if dt == jnp.float32 else contextlib.nullcontext():
            wide = jnp.float64 if method == "markov" else dt      # the markov metric stays float64
            return forward(key, *(jnp.asarray(a).astype(wide) for a in (x, C_W, C_b)), scale)

    # the markov sampler measures the last layer on its metric and never needs its rows
    skip_last = method == "markov" and not keep_z and L > 1 and hasattr(steps[L - 1], "conditional_metric")

    def forward(key, x, C_W, C_b, scale):
        if scale is None:
            scale = jnp.ones((2, L), jnp.float64)
        z = first(jax.random.fold_in(key, 1), x, C_W[0], C_b[0])
        if keep_z:
            zs = [z.T]
            for l in range(1, len(widths) - 1):
                z, _, _ = step(z, jax.random.fold_in(key, l + 1), C_W[l], C_b[l], widths[l + 1], l)
                zs.append(z.T)
            return zs
        st, status = measure(z, None, False, jnp.int32(OK), scale[0, 0], scale[1, 0], widths[1])
        sts, codes = [st[None]], [status[None]]

        def single(z, status, l, n_next, draw=True):
            z, bad, G = step(z, jax.random.fold_in(key, l + 1), C_W[l], C_b[l], n_next, l, draw)
            st, status = measure(z, G, bad, status, scale[0, l], scale[1, l], n_next)
            sts.append(st[None])
            codes.append(status[None])
            return z, status

        for (_, n_next), ls in runs:
            tail = ls[-1:] if skip_last and ls[-1] == L - 1 else []
            ls = ls[:len(ls) - len(tail)]
            if len(ls) == 1:
                z, status = single(z, status, ls[0], n_next)
            elif ls:
                ls_arr = jnp.asarray(ls)

                def body(carry, xs, n_next=n_next, l0=ls[0]):
                    z, status = carry
                    l, cw, cb, inv, sc = xs
                    # the run's steps are equal: l0's step serves all of them
                    z, bad, G = step(z, jax.random.fold_in(key, l + 1), cw, cb, n_next, l0)
                    st, status = measure(z, G, bad, status, inv, sc, n_next)
                    return (z, status), (st, status)

                (z, status), (st, cs) = jax.lax.scan(
                    body, (z, status), (ls_arr, C_W[ls_arr], C_b[ls_arr], scale[0, ls_arr], scale[1, ls_arr]))
                sts.append(st)
                codes.append(cs)
            for l in tail:
                z, status = single(z, status, l, n_next, draw=False)
        return jnp.concatenate(sts, 0), jnp.concatenate(codes, 0)

    return fn


def measured_on_metric(method: str, widths, shortcuts=None) -> tuple[bool, ...]:
    """Per layer l = 1..L, whether ``network_fn(method, ...)`` reports the statistics' conditional expectations given
    the layer's metric (True: the markov sampler after a step with a ``conditional_metric``) rather than their values
    on the sampled rows (False: layer 1, residual steps, the weights sampler). Error formulas for the estimators
    depend on it: conditional statistics carry no within-network sampling noise."""
    steps = _steps(tuple(int(n) for n in widths), shortcuts)
    return tuple(method == "markov" and l > 0 and hasattr(st, "conditional_metric") for l, st in enumerate(steps))


#: networks 0..N_PILOT-1 of the run's seed set the reference scale (a fixed set: independent of n_samples, chunks)
N_PILOT = 16
#: preactivations below this magnitude (kernel below ~1e-300) cannot be sampled in float64
Z_TINY = 2.0**-500


def _pilot(net, x, seed: int):
    """``(zmax (N, L), inmax (N, L))``: for ``N_PILOT`` networks of the markov sampler (numpy: no extra JAX
    compilation per run), per layer the largest ``|z^(l)|`` and the largest ``|input|`` of the layer (``x`` for
    l = 1, ``sigma(z^(l-1))`` after). Both samplers have this distribution; only the typical size is used.
    Deterministic in ``seed``; non-finite values propagate (NaN/inf), they are never zeroed."""
    rng = np.random.default_rng([int(seed), 0x70696C6F74])
    widths, steps = net.widths, net.steps
    N, d = N_PILOT, x.shape[0]
    inp = np.full(N, np.max(np.abs(x)))
    zmax, inmax = [], []
    with np.errstate(all="ignore"):
        for l in range(1, len(widths)):
            C_W, C_b = net.hyper(l)
            eps = rng.standard_normal((N, d, widths[l]))
            if l == 1:
                z = steps[0].markov(np, _psd_sqrt_np, np.broadcast_to(x, (N,) + x.shape), C_W, C_b, eps)
            else:
                a = np.asarray(net.activation(z), dtype=np.float64)
                inp = np.max(np.abs(a), axis=(1, 2))
                z = steps[l - 1].markov(np, _psd_sqrt_np, z, a, C_W, C_b, eps)
            zmax.append(np.max(np.abs(z), axis=(1, 2)))
            inmax.append(inp)
    return np.stack(zmax, 1), np.stack(inmax, 1)


def _psd_sqrt_np(G):
    """A factor ``R`` with ``R R^T = G`` for ``(N, d, d)`` metrics (:func:`pdlt.gaussian.psd_sqrt_lower`); a
    non-finite metric gives NaN, so that the pilot reports it instead of failing on it."""
    from ..gaussian import psd_sqrt_lower

    out = np.full(G.shape, np.nan)
    fin = np.all(np.isfinite(G), axis=(1, 2))
    sym = 0.5 * (G + np.swapaxes(G, 1, 2))
    try:
        out[fin] = psd_sqrt_lower(sym[fin])
    except ParameterError:  # not PSD beyond round-off (only at extreme dynamic range): those stay NaN
        for i in np.flatnonzero(fin):
            try:
                out[i] = psd_sqrt_lower(sym[i])
            except ParameterError:
                pass
    return out


def reference_scale(net, x, seed: int = 0, method: str = "markov") -> tuple[int, ...]:
    """Per-layer reference scale ``k_l`` (``s_l = 4**k_l``, so ``z^(l) / 2**k_l`` is of order 1) for :func:`pdlt.sample`.

    Deterministic pilot (:func:`_pilot`): ``N_PILOT`` networks drawn from ``seed`` (so the scale does not depend on
    the chunking or ``n_samples``); ``k_l`` is the median over them of the binary exponent of ``max |z^(l)|`` (finite,
    non-zero ones; else the previous layer's). Only the range matters, not the exact value: any ``k_l`` within
    ~2^±150 of the typical size keeps every accumulated statistic (up to ``z^6``) representable.

    Raises :class:`pdlt.errors.VanishingFlowError` at the first layer whose preactivations themselves leave
    float64 (``|z| < 2^-500``, i.e. a kernel below ~1e-300, in most pilot networks, or exactly 0 although the
    layer's input is not: underflow). A layer that is exactly 0 because its input is exactly 0 (ReLU units all
    off, no bias) is not underflow. Non-finite pilot values are left to the runner's divergence check.
    """
    from ..errors import VanishingFlowError

    x = net.inputs(x)
    zmax, inmax = _pilot(net, x, seed)
    C_b = np.asarray(net.C_b, dtype=np.float64)
    ks, k_prev = [], 0
    for l in range(1, zmax.shape[1] + 1):
        zm, im = zmax[:, l - 1], inmax[:, l - 1]
        ok = np.isfinite(zm) & np.isfinite(im)
        legit_zero = ok & (zm == 0) & (im == 0) & (C_b[l - 1] == 0)
        tiny = ok & ~legit_zero & (zm < Z_TINY)
        considered = int(np.sum(ok & ~legit_zero))
        if considered and 2 * int(np.sum(tiny)) >= considered:
            C_W_l, C_b_l = net.hyper(l)
            raise VanishingFlowError(
                f"Monte Carlo: the preactivations of layer l = {l} underflow float64 (|z| < 2^-500, a kernel below "
                f"~1e-300, in {int(np.sum(tiny))} of {considered} pilot networks; C_W^({l}) = {C_W_l:g}, "
                f"C_b^({l}) = {C_b_l:g}): they cannot be sampled. The flow vanishes with depth (ordered phase): raise "
                "C_W toward criticality (pdlt.criticality) or reduce the depth; theory (pdlt.finite_width) gives the "
                "scale-free normalized_vertex at any depth", layer=l)
        good = ok & (zm > 0)
        k = int(np.median(np.frexp(zm[good])[1])) if np.any(good) else k_prev
        ks.append(k)
        k_prev = k
    return tuple(ks)


def scale_arrays(log2_scale, L: int) -> np.ndarray:
    """``(2, L)`` float64: ``[2**-k_l, 2**k_l]`` (exact powers of two) for :func:`network_fn`'s ``scale``."""
    k = np.zeros(L, dtype=np.int64) if log2_scale is None else np.asarray(log2_scale, dtype=np.int64).reshape(L)
    return np.stack([np.ldexp(1.0, -k), np.ldexp(1.0, k)])


@float64
def sample_layers(net, x, n_samples: int, seed: int = 0, method: str = "markov"):
    """All preactivations of ``n_samples`` networks, ``[z^(1), ..., z^(L)]`` each ``(n_samples, n_l, d)``
    (numpy float64). Small nets and tests only: the runner (:func:`pdlt.sample`) streams statistics instead.
    Network s is the same as network s of :func:`pdlt.sample` with the same seed and method.
    """
    import jax
    import jax.numpy as jnp
    from ..architecture import MLP
    from .activations_jax import jax_activation

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}")
    x = net.inputs(x)
    fn = network_fn(method, jax_activation(net.activation), net.widths, keep_z=True, shortcuts=(net.gamma, net.xi))
    base = jax.random.key(seed)
    keys = jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.arange(n_samples))
    zs = jax.jit(jax.vmap(fn, in_axes=(0, None, None, None)))(keys, jnp.asarray(x), jnp.asarray(net.C_W), jnp.asarray(net.C_b))
    return [np.asarray(z) for z in zs]

r"""Streaming estimators of preactivation correlators, with jackknife standard errors.

Nothing here stores samples: every sampled network contributes a fixed-size vector of per-network
statistics per layer, which is summed (float64) into one of ``B`` batches. Estimates and standard
errors come from those ``B`` batch sums alone.

**Per-network statistics** of one layer, ``z`` of shape ``(n, d)`` (``n`` neurons, ``d`` inputs; held
transposed, ``(d, n)``, inside the samplers), with the ``P = d(d+1)/2`` input pairs ``p = (a, b)``, ``a <= b``,
and ``q_{i;p} = z_{i;a} z_{i;b}``:

* ``t2_p  = (1/n) sum_i q_{i;p}``                     (the sampled metric, ``G^_ab`` of the layer's neurons);
* ``tt_pq = t2_p t2_q``                               (its square, per network);
* ``m4_pq = (1/n) sum_i q_{i;p} q_{i;q}``             (one neuron's fourth moment, averaged over neurons;
  totally symmetric, so only its ``C(d+3, 4)`` distinct entries are summed);
* ``m6_a  = (1/n) sum_i z_{i;a}^6``                   (one neuron's sixth moment, single input a).

Their expectations over networks give, with neurons exchangeable,

* ``E[t2_ab] = E[z_{i;a} z_{i;b}] =: G_ab`` (the two-point function),
* ``E[(n tt - m4)/(n - 1)] = E[z_{i;a} z_{i;b} z_{j;c} z_{j;d}]`` for ``i != j``: the all-pairs identity
  ``sum_{i != j} q_{i;p} q_{j;q} = n^2 t2_p t2_q - n m4_pq`` averaged over the ``n(n-1)`` ordered pairs
  (derivations/README.md section 12; needs ``n >= 2``),
* ``E[m4_abcd] = E[z_a z_b z_c z_d]`` and ``E[m6_a] = E[z_a^6]`` for one neuron.

**Conditional statistics (the markov sampler).** Where a layer's rows are iid ``N(0, G^)`` given the layer below
(a dense step: ``G^ = C_b + C_W sigma sigma^T / n_{l-1}``), the markov sampler reports the conditional
expectations of the statistics above given ``G^`` instead of their values on one draw of the rows
(:func:`metric_stats`, Rao-Blackwellization): by Isserlis,

    E[t2_ab | G^] = G^_ab,    E[tt_(ab)(cd) | G^] = G^_ab G^_cd + (G^_ac G^_bd + G^_ad G^_bc)/n,
    E[m4_abcd | G^] = G^_ab G^_cd + G^_ac G^_bd + G^_ad G^_bc,    E[m6_a | G^] = 15 G^_aa^3,

with ``n`` the layer's width. The expectations over networks, hence every observable, are unchanged; the
per-network variance can only fall (the law of total variance), and a layer's statistics cost ``O(d^4)`` instead
of ``O(n d^4)``. In particular the all-pairs four-point estimator becomes ``G^_ab G^_cd``, so ``four_point`` is
``Cov(G^_ab, G^_cd)`` over networks: the definition of ``V/n`` (derivations/README.md section 2).

**Observables** (the table :mod:`pdlt.observables` defines them, their names, scale powers and labels; the
theory answers to the same names, e.g. ``FiniteWidth.four_point(l)``; layer l at index l - 1):

* ``two_point``          ``(L, d, d)``:       ``G_ab``;  theory: ``K + G1/n_{l-1}``;
* ``four_point``         ``(L, d, d, d, d)``: ``E[z_ia z_ib z_jc z_jd] - G_ab G_cd`` (i != j);  theory:
  ``V_{(ab)(cd)}/n_{l-1}``; NaN for a layer of width 1 (no pair of neurons);
* ``four_point_single``  ``(L, d, d, d, d)``: ``E[z_a z_b z_c z_d] - G_ab G_cd - G_ac G_bd - G_ad G_bc``
  (one neuron's fourth cumulant);  theory ``(V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc))/n_{l-1}``;
* ``six_point_single``   ``(L, d)``:          the sixth cumulant of one neuron's ``z_a``,
  ``mu6 - 15 mu4 mu2 + 30 mu2^3`` (odd moments vanish exactly by the ``W, b -> -W, -b`` symmetry of the last
  layer, so they are not estimated); for 1/n^2 work (derivations/README.md section 13.1: ``kappa6 = 15 kappa3(G^)``).

**Scale (no overflow, no underflow).** Deep networks off criticality have kernels far from 1 (ReLU at
``C_W = 1/2``: ``K^(l) = 4^(1-l) K^(1)``), and the fourth and sixth moments ``~ K^2, K^3`` leave float64's range
long before ``K`` does. The runner therefore accumulates the statistics of ``z / 2**k_l`` with one integer
``k_l`` per layer, fixed before accumulation from a pilot (:func:`pdlt.montecarlo.samplers.reference_scale`) and
stored in the run's configuration (``config["scale_log2"]``), so chunking and resuming use the same units.
Multiplying by a power of two is exact, so every estimate equals the unscaled one times ``4**(p k_l)`` bit for
bit wherever the latter is representable; :class:`Estimate` undoes the scale on access and refuses (with the
normalized accessor to use) where it is not. The normalized observables ``normalized_vertex``
``= four_point_aaaa / G_aa^2`` (theory: :meth:`pdlt.FiniteWidth.normalized_vertex`, ``V/(n_{l-1} K^2)``),
``kurtosis = four_point_single_aaaa / G_aa^2`` and ``normalized_six_point_single = kappa6_a / G_aa^3`` (all
``(L, d)``) are scale-free and always representable.

**Errors: delete-one-batch jackknife.** Samples are assigned to batches by index, ``b = s mod B``, so batch
sizes differ by at most one for any prefix of the run (interrupted runs stay balanced) and the assignment
does not depend on the chunking. For an observable ``theta = f(means)`` let ``theta_(-b)`` be ``f`` of the
means without batch b, ``m_b`` its size, ``h_b = N/m_b``. The weighted delete-a-group jackknife (Busing,
Meijer & van der Leeden 1999) gives

    theta_J = B theta^ - sum_b (1 - m_b/N) theta_(-b),
    se^2    = (1/B) sum_b (h_b theta^ - (h_b - 1) theta_(-b) - theta_J)^2 / (h_b - 1).

For a linear ``f`` (the two-point function) ``theta_J`` equals the plain mean exactly. For a quadratic ``f``
(both four-point functions: products of two means) and equal batch sizes it is *exactly unbiased*: the
plug-in ``f(means)`` is biased by ``Cov/N`` (products of means of the same samples), the jackknife removes
that term. The six-point function (cubic) keeps a bias of order ``1/N^2``. With equal sizes ``se`` reduces
to the textbook ``(B-1)/B sum_b (theta_(-b) - mean_b theta_(-b))^2``. The errors are honest because
networks are independent; neurons of one network are not, which is why no per-neuron formula is used.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .. import observables as _obs
from ..errors import ParameterError
from ..validation import check_int, check_real_array
from ..observables import UNDEFINED_REASON
from .._x64 import float64

__all__ = [
    "Estimate",
    "Statistics",
    "SCALE_POWER",
    "UNDEFINED_REASON",
    "undefined_layers",
    "BatchSums",
    "stat_size",
    "layer_stats",
    "metric_stats",
    "observables",
    "statistics",
    "jackknife",
    "estimate_from_samples",
    "estimate_from_stats",
]


# ---------------------------------------------------------------------------------------------------
# layout of the per-network statistics
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def stat_layout(d: int):
    """Pairs ``a <= b`` (P of them), sorted quadruples ``a <= b <= c <= e`` (Q of them) and index maps."""
    pairs = list(itertools.combinations_with_replacement(range(d), 2))
    quads = list(itertools.combinations_with_replacement(range(d), 4))
    pidx = np.zeros((d, d), dtype=np.int64)
    for k, (a, b) in enumerate(pairs):
        pidx[a, b] = pidx[b, a] = k
    qpos = {q: k for k, q in enumerate(quads)}
    qidx = np.zeros((d,) * 4, dtype=np.int64)
    for t in itertools.product(range(d), repeat=4):
        qidx[t] = qpos[tuple(sorted(t))]
    return pairs, quads, pidx, qidx


def stat_size(d: int) -> int:
    """Length ``F = P + P^2 + Q + d`` of one layer's per-network statistics vector, ``P = d(d+1)/2`` pairs,
    ``Q = C(d+3, 4)`` distinct fourth moments."""
    pairs, quads, _, _ = stat_layout(d)
    return len(pairs) + len(pairs) ** 2 + len(quads) + d


@float64   # float64 in any caller's configuration (a no-op inside pdlt's own scope or a trace in it)
def layer_stats(zt):
    """Per-network statistics of one layer from ``zt`` ``(..., d, n)`` (inputs x neurons; jax.numpy, traceable)
    -> ``(..., F)``: ``t2`` (P), ``tt`` (P*P), the distinct entries of the symmetric ``m4`` (Q), ``m6`` (d).

    Every entry is a separate fused product-and-mean over the neuron axis (static slices, no gathers: XLA on
    CPU is slow at gathers and at elementwise work on tiny minor axes).
    """
    import jax.numpy as jnp

    d = zt.shape[-2]
    pairs, quads, _, _ = stat_layout(d)
    rows = [zt[..., a, :] for a in range(d)]
    t2 = jnp.stack([jnp.mean(rows[a] * rows[b], axis=-1) for a, b in pairs], axis=-1)
    tt = (t2[..., :, None] * t2[..., None, :]).reshape(t2.shape[:-1] + (-1,))
    m4 = jnp.stack([jnp.mean((rows[a] * rows[b]) * (rows[c] * rows[e]), axis=-1) for a, b, c, e in quads], axis=-1)
    z2 = zt * zt
    m6 = jnp.mean(z2 * z2 * z2, axis=-1)
    return jnp.concatenate([t2, tt, m4, m6], axis=-1)


@float64   # float64 in any caller's configuration, like layer_stats
def metric_stats(G, n: int):
    """The conditional expectation of :func:`layer_stats` given the metric: for a layer whose ``n`` rows are iid
    ``N(0, G)`` given ``G`` ``(..., d, d)`` (jax.numpy, traceable) -> ``(..., F)`` in the same layout (module
    docstring, "Conditional statistics")."""
    import jax.numpy as jnp

    d = G.shape[-1]
    pairs, quads, _, _ = stat_layout(d)
    g = [[G[..., a, b] for b in range(d)] for a in range(d)]
    t2 = jnp.stack([g[a][b] for a, b in pairs], axis=-1)
    # the two pairings of (a, b) with (c, e) that tie different neurons' factors together: the 1/n of tt
    cross = jnp.stack([g[a][c] * g[b][e] + g[a][e] * g[b][c] for a, b in pairs for c, e in pairs], axis=-1)
    tt = (t2[..., :, None] * t2[..., None, :]).reshape(t2.shape[:-1] + (-1,)) + cross / n
    m4 = jnp.stack([g[a][b] * g[c][e] + g[a][c] * g[b][e] + g[a][e] * g[b][c] for a, b, c, e in quads], axis=-1)
    diag = jnp.stack([g[a][a] for a in range(d)], axis=-1)
    return jnp.concatenate([t2, tt, m4, 15.0 * diag * diag * diag], axis=-1)


def _split(m, d: int):
    """Means ``(..., L, F)`` -> ``t2 (..., L, d, d)``, ``tt``, ``m4`` ``(..., L, d, d, d, d)``, ``m6 (..., L, d)``."""
    pairs, quads, pidx, qidx = stat_layout(d)
    P, Q = len(pairs), len(quads)
    t2 = m[..., :P]
    tt = m[..., P:P + P * P].reshape(m.shape[:-1] + (P, P))
    m4 = m[..., P + P * P:P + P * P + Q]
    m6 = m[..., P + P * P + Q:]
    return t2[..., pidx], tt[..., pidx[:, :, None, None], pidx[None, None, :, :]], m4[..., qidx], m6


def observables(m, d: int, widths) -> dict:
    """The observables (module docstring) as functions of the per-network means ``m`` ``(..., L, F)``.

    ``widths`` are the layer widths ``(n_1, ..., n_L)`` of the measured layers (for the all-pairs identity).
    """
    G, tt, m4, m6 = _split(np.asarray(m, dtype=np.float64), d)
    n = np.asarray(widths, dtype=np.float64).reshape((-1,) + (1,) * 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = np.where(n > 1, (n * tt - m4) / np.where(n > 1, n - 1.0, 1.0), np.nan)
    GG = G[..., :, :, None, None] * G[..., None, None, :, :]
    GGs = GG + np.einsum("...acbd->...abcd", GG) + np.einsum("...adbc->...abcd", GG)
    ar = np.arange(d)
    mu2 = G[..., ar, ar]
    mu4 = m4[..., ar, ar, ar, ar]
    four = pair - GG
    single = m4 - GGs
    six = m6 - 15.0 * mu4 * mu2 + 30.0 * mu2**3
    # scale-free ratios (any common rescaling of z cancels); 0 for an input with G_aa = 0, as in the theory
    safe = np.where(mu2 > 0, mu2, 1.0)
    return {
        "two_point": G,
        "four_point": four,
        "four_point_single": single,
        "six_point_single": six,
        "normalized_vertex": np.where(mu2 > 0, four[..., ar, ar, ar, ar] / safe**2, 0.0),
        "kurtosis": np.where(mu2 > 0, single[..., ar, ar, ar, ar] / safe**2, 0.0),
        "normalized_six_point_single": np.where(mu2 > 0, six / safe**3, 0.0),
    }


# ---------------------------------------------------------------------------------------------------
# estimates
# ---------------------------------------------------------------------------------------------------


_TINY = np.finfo(np.float64).tiny        # smallest normal float64, ~2.2e-308: below it digits are lost


@dataclass(frozen=True, init=False, eq=False)
class Estimate:
    """A Monte Carlo estimate: ``mean`` and ``stderr`` arrays of the same shape (float64).

    ``stderr`` is NaN where it cannot be estimated (fewer than 2 non-empty batches); both are NaN at entries that
    are undefined (the distinct-neuron four-point function of a width-1 layer, see ``MCResult.undefined``).

    **Scale.** The runner accumulates statistics in rescaled units (module docstring), so an estimate is held as
    ``value = scaled * 2**log2`` (``log2`` an integer array of the same shape, ``None`` for plain values). Powers
    of two make the rescaling exact. ``mean`` / ``stderr`` return the raw value and raise
    :class:`pdlt.errors.VanishingFlowError` (underflow) or :class:`pdlt.errors.DivergentFlowError` (overflow)
    naming the layer and the scale-free accessor to use (``normalized``) when it is not a normal float64; they
    never return a zero or an inf that is not the answer. ``rel_stderr`` and ``scaled_mean`` are always available.
    """

    scaled_mean: np.ndarray
    scaled_stderr: np.ndarray
    log2: np.ndarray | None
    layer: np.ndarray | None
    name: str
    normalized: str

    def __init__(self, mean, stderr, log2=None, layer=None, name: str = "estimate", normalized: str = ""):
        m = np.asarray(mean, dtype=np.float64)
        object.__setattr__(self, "scaled_mean", m)
        object.__setattr__(self, "scaled_stderr", np.asarray(stderr, dtype=np.float64))
        object.__setattr__(self, "log2", None if log2 is None else np.broadcast_to(np.asarray(log2, np.int64), m.shape))
        object.__setattr__(self, "layer", None if layer is None else np.broadcast_to(np.asarray(layer, np.int64), m.shape))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "normalized", normalized)

    def _raw(self, scaled: np.ndarray, what: str) -> np.ndarray:
        """``scaled * 2**log2``, or raise when a finite non-zero entry leaves float64's normal range."""
        if self.log2 is None:
            return scaled
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            v = np.ldexp(scaled, self.log2)
            lost = np.isfinite(scaled) & (scaled != 0) & ~(np.isfinite(v) & (np.abs(v) >= _TINY))
        if not np.any(lost):
            return v
        i = np.unravel_index(int(np.argmax(lost)), lost.shape)     # the first offending entry
        e = int(self.log2[i]) + int(np.frexp(scaled[i])[1])
        l = int(self.layer[i]) if self.layer is not None else None
        at = f" at layer l = {l}" if l is not None else ""
        use = (f"use the scale-free MCResult.{self.normalized} instead, " if self.normalized else "") + \
            f"or read .scaled_mean * 2**.log2 (here 2**{int(self.log2[i])})"
        over = e > 0
        msg = (f"Monte Carlo {self.name} {what}{at} is about 2^{e} (~1e{e * 0.30103:.0f}), "
               f"{'above' if over else 'below'} float64's range, so it cannot be returned as a number; {use}. "
               + ("The flow grows with depth: lower C_W / C_b toward criticality (pdlt.criticality) or reduce the "
                  "depth to keep it representable" if over else
                  "The flow vanishes with depth (ordered phase): raise C_W toward criticality (pdlt.criticality) or "
                  "reduce the depth to keep it representable"))
        from ..errors import DivergentFlowError, VanishingFlowError

        raise (DivergentFlowError if over else VanishingFlowError)(msg, layer=l)

    @property
    def mean(self) -> np.ndarray:
        return self._raw(self.scaled_mean, "mean")

    @property
    def stderr(self) -> np.ndarray:
        return self._raw(self.scaled_stderr, "standard error")

    @property
    def representable(self) -> bool:
        """True when ``mean`` and ``stderr`` can be returned (every entry a normal float64, 0, or NaN)."""
        from ..errors import PdltError

        try:
            self.mean, self.stderr
        except PdltError:
            return False
        return True

    @property
    def shape(self):
        return np.shape(self.scaled_mean)

    @property
    def rel_stderr(self) -> np.ndarray:
        """``stderr / |mean|`` (inf where the mean is 0); scale-free, always available."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.scaled_stderr / np.abs(self.scaled_mean)

    def z(self, value) -> np.ndarray:
        """z-scores ``(mean - value) / stderr`` against a prediction of the same shape (or one that broadcasts to it,
        e.g. a number)."""
        value = check_real_array(value, "value")
        try:
            fits = np.broadcast_shapes(value.shape, np.shape(self.mean)) == np.shape(self.mean)
        except ValueError:
            fits = False
        if not fits:
            raise ParameterError(f"a prediction to score must have the estimate's shape {np.shape(self.mean)}, got "
                                 f"{value.shape}", "value")
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.mean - value) / self.stderr

    def scaled(self, factor) -> "Estimate":
        """``factor * estimate`` (``factor`` broadcast against the leading axes, e.g. one per layer)."""
        f = np.asarray(factor, dtype=np.float64)
        f = f.reshape(f.shape + (1,) * (np.ndim(self.scaled_mean) - f.ndim))
        return Estimate(self.scaled_mean * f, self.scaled_stderr * np.abs(f), self.log2, self.layer, self.name,
                        self.normalized)

    def __getitem__(self, item) -> "Estimate":
        pick = (lambda a: None if a is None else a[item])
        return Estimate(self.scaled_mean[item], self.scaled_stderr[item], pick(self.log2), pick(self.layer),
                        self.name, self.normalized)

    def __repr__(self) -> str:
        return f"Estimate({self.name}, shape={self.shape}{', rescaled' if self.log2 is not None else ''})"


@dataclass(frozen=True)
class Statistics:
    """The estimated observables (see module docstring for definitions and shapes): the raw correlators
    (``NAMES``) and their scale-free normalizations (``NORMALIZED``), each an :class:`Estimate`."""

    two_point: Estimate
    four_point: Estimate
    four_point_single: Estimate
    six_point_single: Estimate
    normalized_vertex: Estimate | None = None
    kurtosis: Estimate | None = None
    normalized_six_point_single: Estimate | None = None

    # both read from the table of observables (pdlt.observables); the field list above must match them, which
    # tests/test_observables.py checks
    NAMES = _obs.names("raw")
    NORMALIZED = _obs.names("normalized")


#: power of the two-point scale s_l carried by each observable (two_point ~ s, four-point ~ s^2, ...)
SCALE_POWER = {o.name: o.scale_power for o in _obs.OBSERVABLES.values()}
#: the scale-free accessor to use when a raw observable is not representable ("" when there is none)
NORMALIZED_FOR = {o.name: o.normalized for o in _obs.OBSERVABLES.values()}


def undefined_layers(widths) -> dict:
    """``{name: (l, ...)}``: layers (1..L) where an observable is undefined, ``widths = (n_1..n_L)`` of the measured
    layers. A width-1 layer has no pair of distinct neurons, so the observables marked ``undefined_when="width1"``
    in :mod:`pdlt.observables` (``four_point``, ``vertex``, ``normalized_vertex``) are NaN there by definition
    (:data:`UNDEFINED_REASON`); every other entry is a number."""
    out = {o.name: o.undefined_at(widths) for o in _obs.OBSERVABLES.values()}
    return {name: ls for name, ls in out.items() if ls}


@dataclass(frozen=True)
class BatchSums:
    """The running state: per-batch counts ``(B,)`` (int64) and sums of per-network statistics ``(B, L, F)``.

    ``widths`` are the widths ``(n_1..n_L)`` of the measured layers, ``d`` the number of inputs. Samples are
    added in index order; ``done = counts.sum()`` is the next sample index.
    """

    counts: np.ndarray
    sums: np.ndarray
    widths: tuple[int, ...]
    d: int

    @classmethod
    def zeros(cls, batches: int, widths, d: int, size: int | None = None) -> "BatchSums":
        """An empty state; ``size`` entries per layer (default :func:`stat_size`; NTK runs carry more)."""
        widths = tuple(int(n) for n in widths)
        F = stat_size(d) if size is None else int(size)
        return cls(np.zeros(batches, dtype=np.int64), np.zeros((batches, len(widths), F)), widths, d)

    @property
    def batches(self) -> int:
        return self.counts.shape[0]

    @property
    def done(self) -> int:
        return int(self.counts.sum())

    def add(self, counts, sums) -> "BatchSums":
        """A new state with ``counts`` ``(B,)`` and ``sums`` ``(B, L, F)`` added (self is unchanged)."""
        return BatchSums(self.counts + np.asarray(counts, dtype=np.int64),
                         self.sums + np.asarray(sums, dtype=np.float64), self.widths, self.d)


def jackknife(f, counts, sums, *, linear: bool = False, networks: int = 2) -> Estimate:
    """Weighted delete-one-batch jackknife of ``theta = f(means)`` (module docstring).

    ``counts`` ``(B,)``, ``sums`` ``(B, ...)``; ``f`` maps means ``(k, ...)`` to ``(k, *shape)``. Empty batches
    are ignored. ``linear=True`` promises ``f`` is linear (then the estimate is the plain mean). ``networks``: the
    fewest networks a non-linear ``f`` needs to be estimated at all (2 for a covariance across networks, 3 for a
    third cumulant): where a delete-one-batch subsample holds fewer, every ``theta_(-b)`` is the same degenerate
    value (a covariance of one network is 0) and the spread of the pseudo-values, hence the error, would be 0, so
    ``stderr`` is NaN there (not estimable), as with fewer than two batches.
    """
    counts = np.asarray(counts)
    keep = counts > 0
    c = counts[keep].astype(np.float64)
    s = np.asarray(sums, dtype=np.float64)[keep]
    if c.size == 0:
        raise ParameterError("no samples: nothing to estimate")
    N = c.sum()
    S = s.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = f((S / N)[None])[0]
        if c.size < 2 or (not linear and N - c.max() < networks):
            return Estimate(theta, np.full_like(theta, np.nan))
        loo = f((S[None] - s) / (N - c).reshape((-1,) + (1,) * (s.ndim - 1)))
        shp = (-1,) + (1,) * theta.ndim
        B = c.size
        h = (N / c).reshape(shp)
        est = theta if linear else B * theta - np.sum((1.0 - c / N).reshape(shp) * loo, axis=0)
        pseudo = h * theta[None] - (h - 1.0) * loo
        # the spread in units of the largest pseudo-value (per entry): squares of values below ~1e-154 would
        # underflow to an error of 0 (a vertex of size 1e-233, a posterior mean of 1e-202)
        unit = np.max(np.abs(pseudo), axis=0)
        unit = np.where((unit > 0) & np.isfinite(unit), unit, 1.0)
        var = np.sum(((pseudo - est[None]) / unit) ** 2 / (h - 1.0), axis=0) / B
    return Estimate(est, np.sqrt(var) * unit)


def _networks_needed(name: str) -> int:
    """The fewest networks that estimate observable ``name`` at all: its leading term is of order ``1/n^k`` (a derived
    observable's, ``n_{l-1}`` times its base, that of the base), a (k + 1)-th cumulant of the metric across
    networks, which needs k + 1 of them."""
    o = _obs.OBSERVABLES[name]
    return (_obs.OBSERVABLES[o.base] if o.kind == "derived" else o).order + 1


def statistics(state: BatchSums, log2_scale=None) -> Statistics:
    """All observables of a run state, with jackknife errors.

    ``log2_scale`` ``(L,)`` integers ``k_l``: the sums hold statistics of the rescaled ``z / 2**k_l`` (the runner's
    reference scale ``s_l = 4**k_l``); None means unscaled (``k_l = 0``). The rescaling is undone exactly through
    :attr:`Estimate.log2`: an observable of order ``s^p`` gets ``log2 = 2 p k_l``.
    """
    L = len(state.widths)
    k = np.zeros(L, dtype=np.int64) if log2_scale is None else np.asarray(log2_scale, dtype=np.int64).reshape(L)
    layers = np.arange(1, L + 1)
    out = {}
    for name in Statistics.NAMES + Statistics.NORMALIZED:
        def f(m, name=name):
            return observables(m, state.d, state.widths)[name]

        e = jackknife(f, state.counts, state.sums, linear=(name == "two_point"), networks=_networks_needed(name))
        shp = (L,) + (1,) * (e.scaled_mean.ndim - 1)
        p = SCALE_POWER[name]
        out[name] = Estimate(e.scaled_mean, e.scaled_stderr, None if p == 0 else (2 * p * k).reshape(shp),
                             layers.reshape(shp), name, NORMALIZED_FOR.get(name, ""))
    return Statistics(**out)


@float64
def estimate_from_samples(zs, batches: int = 32) -> Statistics:
    """Estimate the observables from explicit samples (for synthetic checks; the runner streams instead).

    ``zs``: one array ``(N, n, d)`` (N networks, n neurons, d inputs) or a list of them, one per layer (same
    N and d). Network s goes to batch ``s mod batches``.
    """
    import jax.numpy as jnp

    if not isinstance(zs, (list, tuple)):
        zs = [zs]
    zs = [check_real_array(z, "zs") for z in zs]
    if any(z.ndim != 3 for z in zs) or len({(z.shape[0], z.shape[2]) for z in zs}) != 1:
        raise ParameterError(f"samples must be arrays (N, n_l, d) with common N and d, got shapes "
                             f"{[z.shape for z in zs]}", "zs")
    batches = check_int(batches, "batches", minimum=2, maximum=zs[0].shape[0])
    d = zs[0].shape[2]
    st = np.stack([np.asarray(layer_stats(jnp.asarray(np.swapaxes(z, 1, 2)))) for z in zs], axis=1)    # (N, L, F)
    if not np.all(np.isfinite(st)):
        # (z ~ 1e200: the sixth powers overflowed, and two_point came back inf, the kurtosis NaN, with no warning;
        # the runner keeps its sums in range by powers of two, explicit samples are taken as given)
        top = max(float(np.max(np.abs(z))) for z in zs)
        raise ParameterError(f"the samples' moments (up to the sixth power) leave float64's range at |z| up to "
                             f"{top:.3g}: divide the samples by a power of two (the estimates scale exactly)", "zs")
    return estimate_from_stats(st, [z.shape[1] for z in zs], d, batches)


def estimate_from_stats(st, widths, d: int, batches: int = 32) -> Statistics:
    """The observables from explicit per-network statistics ``st`` ``(N, L, F)`` (:func:`layer_stats` or
    :func:`metric_stats` per layer) of layers of widths ``widths`` ``(L,)`` on ``d`` inputs; network s goes to batch
    ``s mod batches``, as in the runner."""
    st = np.asarray(st, dtype=np.float64)
    b = np.arange(st.shape[0]) % batches
    sums = np.zeros((batches,) + st.shape[1:])
    np.add.at(sums, b, st)
    state = BatchSums.zeros(batches, list(widths), d).add(np.bincount(b, minlength=batches), sums)
    return statistics(state)

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
  (DESIGN.md, "Statistics conventions"; needs ``n >= 2``),
* ``E[m4_abcd] = E[z_a z_b z_c z_d]`` and ``E[m6_a] = E[z_a^6]`` for one neuron.

**Observables** (shapes as in :class:`pdlt.FiniteWidth`; layer l at index l - 1):

* ``two_point``          ``(L, d, d)``:       ``G_ab``;  theory: ``K + G1/n_{l-1}``;
* ``four_point``         ``(L, d, d, d, d)``: ``E[z_ia z_ib z_jc z_jd] - G_ab G_cd`` (i != j);  theory:
  ``V_{(ab)(cd)}/n_{l-1}`` (``connected_four_point``); NaN for a layer of width 1 (no pair of neurons);
* ``four_point_single``  ``(L, d, d, d, d)``: ``E[z_a z_b z_c z_d] - G_ab G_cd - G_ac G_bd - G_ad G_bc``
  (one neuron's fourth cumulant);  theory ``connected_four_point_single``;
* ``six_point_single``   ``(L, d)``:          the sixth cumulant of one neuron's ``z_a``,
  ``mu6 - 15 mu4 mu2 + 30 mu2^3`` (odd moments vanish exactly by the ``W, b -> -W, -b`` symmetry of the last
  layer, so they are not estimated); for 1/n^2 work (formulas.md section 11: ``kappa6 = 15 kappa3(G^)``).

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

__all__ = [
    "Estimate",
    "Statistics",
    "BatchSums",
    "stat_size",
    "layer_stats",
    "observables",
    "statistics",
    "jackknife",
    "estimate_from_samples",
]


# ---------------------------------------------------------------------------------------------------
# layout of the per-network statistics
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _layout(d: int):
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
    pairs, quads, _, _ = _layout(d)
    return len(pairs) + len(pairs) ** 2 + len(quads) + d


def layer_stats(zt):
    """Per-network statistics of one layer from ``zt`` ``(..., d, n)`` (inputs x neurons; jax.numpy, traceable)
    -> ``(..., F)``: ``t2`` (P), ``tt`` (P*P), the distinct entries of the symmetric ``m4`` (Q), ``m6`` (d).

    Every entry is a separate fused product-and-mean over the neuron axis (static slices, no gathers: XLA on
    CPU is slow at gathers and at elementwise work on tiny minor axes).
    """
    import jax.numpy as jnp

    d = zt.shape[-2]
    pairs, quads, _, _ = _layout(d)
    rows = [zt[..., a, :] for a in range(d)]
    t2 = jnp.stack([jnp.mean(rows[a] * rows[b], axis=-1) for a, b in pairs], axis=-1)
    tt = (t2[..., :, None] * t2[..., None, :]).reshape(t2.shape[:-1] + (-1,))
    m4 = jnp.stack([jnp.mean((rows[a] * rows[b]) * (rows[c] * rows[e]), axis=-1) for a, b, c, e in quads], axis=-1)
    z2 = zt * zt
    m6 = jnp.mean(z2 * z2 * z2, axis=-1)
    return jnp.concatenate([t2, tt, m4, m6], axis=-1)


def _split(m, d: int):
    """Means ``(..., L, F)`` -> ``t2 (..., L, d, d)``, ``tt``, ``m4`` ``(..., L, d, d, d, d)``, ``m6 (..., L, d)``."""
    pairs, quads, pidx, qidx = _layout(d)
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
    return {
        "two_point": G,
        "four_point": pair - GG,
        "four_point_single": m4 - GGs,
        "six_point_single": m6 - 15.0 * mu4 * mu2 + 30.0 * mu2**3,
    }


# ---------------------------------------------------------------------------------------------------
# estimates
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate: ``mean`` and ``stderr`` arrays of the same shape (float64).

    ``stderr`` is NaN where it cannot be estimated (fewer than 2 non-empty batches, width-1 layers).
    """

    mean: np.ndarray
    stderr: np.ndarray

    @property
    def shape(self):
        return np.shape(self.mean)

    @property
    def rel_stderr(self) -> np.ndarray:
        """``stderr / |mean|`` (inf where the mean is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.stderr / np.abs(self.mean)

    def z(self, value) -> np.ndarray:
        """z-scores ``(mean - value) / stderr`` against a prediction of the same shape."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.mean - np.asarray(value, dtype=np.float64)) / self.stderr

    def scaled(self, factor) -> "Estimate":
        """``factor * estimate`` (``factor`` broadcast against the leading axes, e.g. one per layer)."""
        f = np.asarray(factor, dtype=np.float64)
        f = f.reshape(f.shape + (1,) * (np.ndim(self.mean) - f.ndim))
        return Estimate(self.mean * f, self.stderr * np.abs(f))

    def __getitem__(self, item) -> "Estimate":
        return Estimate(self.mean[item], self.stderr[item])


@dataclass(frozen=True)
class Statistics:
    """The four estimated observables (see module docstring for definitions and shapes)."""

    two_point: Estimate
    four_point: Estimate
    four_point_single: Estimate
    six_point_single: Estimate

    NAMES = ("two_point", "four_point", "four_point_single", "six_point_single")


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
    def zeros(cls, batches: int, widths, d: int) -> "BatchSums":
        widths = tuple(int(n) for n in widths)
        return cls(np.zeros(batches, dtype=np.int64), np.zeros((batches, len(widths), stat_size(d))), widths, d)

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


def jackknife(f, counts, sums, *, linear: bool = False) -> Estimate:
    """Weighted delete-one-batch jackknife of ``theta = f(means)`` (module docstring).

    ``counts`` ``(B,)``, ``sums`` ``(B, ...)``; ``f`` maps means ``(k, ...)`` to ``(k, *shape)``. Empty batches
    are ignored. ``linear=True`` promises ``f`` is linear (then the estimate is the plain mean).
    """
    counts = np.asarray(counts)
    keep = counts > 0
    c = counts[keep].astype(np.float64)
    s = np.asarray(sums, dtype=np.float64)[keep]
    if c.size == 0:
        raise ValueError("no samples: nothing to estimate")
    N = c.sum()
    S = s.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = f((S / N)[None])[0]
        if c.size < 2:
            return Estimate(theta, np.full_like(theta, np.nan))
        loo = f((S[None] - s) / (N - c).reshape((-1,) + (1,) * (s.ndim - 1)))
        shp = (-1,) + (1,) * theta.ndim
        B = c.size
        h = (N / c).reshape(shp)
        est = theta if linear else B * theta - np.sum((1.0 - c / N).reshape(shp) * loo, axis=0)
        pseudo = h * theta[None] - (h - 1.0) * loo
        var = np.sum((pseudo - est[None]) ** 2 / (h - 1.0), axis=0) / B
    return Estimate(est, np.sqrt(var))


def statistics(state: BatchSums) -> Statistics:
    """All observables of a run state, with jackknife errors."""
    out = {}
    for name in Statistics.NAMES:
        def f(m, name=name):
            return observables(m, state.d, state.widths)[name]

        out[name] = jackknife(f, state.counts, state.sums, linear=(name == "two_point"))
    return Statistics(**out)


def estimate_from_samples(zs, batches: int = 32) -> Statistics:
    """Estimate the observables from explicit samples (for synthetic checks; the runner streams instead).

    ``zs``: one array ``(N, n, d)`` (N networks, n neurons, d inputs) or a list of them, one per layer (same
    N and d). Network s goes to batch ``s mod batches``.
    """
    import jax.numpy as jnp

    from .._x64 import enable_x64

    enable_x64()
    if not isinstance(zs, (list, tuple)):
        zs = [zs]
    zs = [np.asarray(z, dtype=np.float64) for z in zs]
    if any(z.ndim != 3 for z in zs) or len({(z.shape[0], z.shape[2]) for z in zs}) != 1:
        raise ValueError(f"samples must be arrays (N, n_l, d) with common N and d, got shapes {[z.shape for z in zs]}")
    N, d = zs[0].shape[0], zs[0].shape[2]
    st = np.stack([np.asarray(layer_stats(jnp.asarray(np.swapaxes(z, 1, 2)))) for z in zs], axis=1)    # (N, L, F)
    b = np.arange(N) % batches
    sums = np.zeros((batches,) + st.shape[1:])
    np.add.at(sums, b, st)
    state = BatchSums.zeros(batches, [z.shape[1] for z in zs], d).add(np.bincount(b, minlength=batches), sums)
    return statistics(state)

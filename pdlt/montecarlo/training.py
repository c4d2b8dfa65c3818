r"""Monte Carlo of gradient-descent training: ensembles of explicit-weight MLPs trained on the MSE loss.

**Networks.** Network s is drawn from ``k_s = fold_in(key(seed), s)`` exactly as the ``"weights"`` sampler and
:mod:`pdlt.montecarlo.ntk_sampler` draw it (layer m from ``fold_in(k_s, m)``, m = 1..L), so at t = 0 it is network
s of ``pdlt.sample(..., method="weights")`` and of ``pdlt.sample_ntk``. Inputs are ordered training set A first
(``N_A`` of them), then the test inputs D (``N_D``); ``N = N_A + N_D``; outputs ``i = 0..n_L-1``.

**Training.** Loss ``L = 1/2 sum_{i, a in A} (z_{i;a} - y_{i;a})^2`` on the output layer and gradient descent with
PDLT's learning-rate tensor,

    W^(l) <- W^(l) - eta (lambda_W^(l) / n_{l-1}) dL/dW^(l),      b^(l) <- b^(l) - eta lambda_b^(l) dL/db^(l),

for ``steps`` steps (``lax.scan``), float64, by a hand-written backward pass (``delta^(L) = z - y``,
``delta^(l) = (delta^(l+1) W^(l+1)) * sigma'(z^(l))``; sigma' from ``jax.jvp`` of the activation).
With ``batch_size = k`` (minibatch SGD) step t uses the k training inputs at the first k positions of
``jax.random.permutation(fold_in(fold_in(k_s, 0), t), N_A)`` (distinct within a step; ``fold_in(k_s, 0)`` is not
used by the weight draw, which starts at layer 1), with the minibatch loss multiplied by ``N_A / k`` so that the
expected update is the full-batch one. The recorded loss is always the full-batch loss.

**NTK** (output layer, Lambda-weighted, exact): with the backpropagated ``g^(m)_{i;a} = dz^(L)_{i;a}/dz^(m)_a``
(``g^(L) = e_i``, ``g^(m) = (g^(m+1) W^(m+1)) * sigma'(z^(m)_a)``) the Jacobian of ``z_{i;a}`` is rank one per layer
and

    H_{ia,jb} = sum_m (lambda_b^(m) + (lambda_W^(m) / n_{m-1}) s^(m-1)_a . s^(m-1)_b) g^(m)_{i;a} . g^(m)_{j;b},

``s^(m) = sigma(z^(m))``, ``s^(0) = x``: a Gram matrix of Jacobians, no finite differences. It is computed at
t = 0 and t = T only.

**Frozen-NTK prediction** of each network from its own initial NTK ``H0`` (pairs ``(i, a)`` flattened):
``zf_D(T) = z_D(0) - H0_DA G eps(0)``, ``eps(0) = z_A(0) - y``, ``G = eta sum_{s<T} (1 - eta H0_AA)^s`` evaluated
exactly by binary doubling (``O(log T)`` products; no inverse, so a singular ``H0_AA`` is fine). For SGD runs it
is still the full-batch prediction, so ``frozen_shift`` then includes the SGD noise. A network whose own initial
NTK puts ``eta`` at or above its frozen stability limit ``2 / lambda_max(H0_AA)`` has a frozen prediction that grows
like ``|1 - eta lambda_max|^T`` (its real training may still converge, since its NTK moves): for such a network
the frozen model, whose difference from training the O(1/n) theory expands, does not exist, so it is left out of
``frozen_shift`` (and counted, ``frozen_unstable``). Were it kept, one narrow network in a few thousand would
decide the average (seen at n = 16, L = 3, eta at 0.4 of the mean NTK's limit: one network at eta lambda_max =
2.05 moved the mean shift by 0.09, ten times its typical size).

**Per-network statistics** (one vector, :func:`train_layout`; every block is multiplied by its validity flag):

* ``valid``: 1, or 0 for a DIVERGED network: its full-batch loss was not finite or above :data:`DIVERGED` at some
  step, its final loss is above its initial one (it did not train: ``eta`` is above its own stability limit, and
  its residuals grow like ``|1 - eta lambda|^t``, which a few hundred steps leave far below DIVERGED), or one of
  its own statistics (outputs, residuals, NTKs) is not finite or exceeds :data:`DIVERGED` in size;
* ``fvalid``: ``valid`` and, in addition, a stable frozen model (``eta lambda_max(H0_AA) < 2``) whose prediction is
  finite and within :data:`DIVERGED` (it multiplies ``fshift`` only: such a network is still a trained network);
* ``z`` ``(N_D, n_L)`` = ``z_D(T)``; ``zz`` ``(N_D, N_D)`` = ``(1/n_L) sum_i z_{i;D}(T) z_{i;D}(T)``;
* ``resid`` ``(N_A, n_L)`` = ``z_A(T) - y``; ``fshift`` ``(N_D, n_L)`` = ``z_D(T) - zf_D(T)``;
* ``loss`` ``(n_rec,)`` = the full-batch loss at the recorded steps :func:`loss_schedule`;
* ``ntk0`` ``(N, N)`` = ``(1/n_L) sum_i H_{ia,ib}(0)``; ``dntk`` ``(N, N)`` = the same of ``H(T) - H(0)``.

**Estimates** (:func:`train_estimates`): means over the valid networks only. The runner's batch sums carry the
flags, so each batch's valid count is known and the delete-one-batch jackknife
(:func:`pdlt.montecarlo.estimators.jackknife`) runs on the valid counts (``frozen_shift``: on the ``fvalid``
counts); diverged networks never enter an average. ``cov = E[zz] - (1/n_L) sum_i E[z_i] E[z_i]^T`` (Cov over initializations, averaged over outputs) is
quadratic in the means: the jackknife removes its O(1/N) bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import Caveat, DivergentFlowError, ParameterError
from .estimators import BatchSums, Estimate, jackknife
from .samplers import OK, explicit_weights

__all__ = ["TrainSpec", "TrainedMC", "DIVERGED", "TRAIN_NAMES", "loss_schedule", "train_layout",
           "train_stat_size", "train_bytes_per_network", "train_network_fn", "train_estimates",
           "geometric_sum", "train_state_problem"]

#: a loss, output or statistic larger than this (or not finite) marks the network as diverged
DIVERGED = 1e100
#: the estimates of a training run, in the order of :class:`TrainedMC`
TRAIN_NAMES = ("mean", "cov", "train_residual", "frozen_shift", "loss", "ntk0", "ntk_change")
#: weight gradients of at most this many training inputs are summed as fused outer products, larger ones by a dot
OUTER_SUM_MAX = 16
#: default number of recorded loss points (about)
LOSS_POINTS = 50


@dataclass(frozen=True)
class TrainSpec:
    """The static shape of a training run (part of the compiled function): ``n_train`` = N_A, ``n_test`` = N_D,
    ``n_out`` = n_L, ``steps`` T, ``batch_size`` (None: full batch) and the recorded steps ``loss_steps``."""

    n_train: int
    n_test: int
    n_out: int
    steps: int
    batch_size: int | None
    loss_steps: tuple

    @property
    def n(self) -> int:
        return self.n_train + self.n_test


def loss_schedule(steps: int, record_every: int | None) -> tuple:
    """The steps at which the loss is recorded: ``0, r, 2r, ...`` and always ``steps`` (``r = record_every``;
    default ``ceil(steps / 50)``, about 50 points)."""
    r = max(1, math.ceil(steps / LOSS_POINTS)) if record_every is None else int(record_every)
    return tuple(sorted(set(range(0, steps + 1, r)) | {steps}))


@lru_cache(maxsize=None)
def train_layout(spec: TrainSpec) -> dict:
    """``{block: (slice, shape)}`` into one network's statistics vector (module docstring)."""
    A, D, nL, N = spec.n_train, spec.n_test, spec.n_out, spec.n
    shapes = (("valid", ()), ("fvalid", ()), ("z", (D, nL)), ("zz", (D, D)), ("resid", (A, nL)), ("fshift", (D, nL)),
              ("loss", (len(spec.loss_steps),)), ("ntk0", (N, N)), ("dntk", (N, N)))
    out, pos = {}, 0
    for name, shp in shapes:
        size = int(np.prod(shp, dtype=np.int64))
        out[name] = (slice(pos, pos + size), shp)
        pos += size
    return out


def train_stat_size(spec: TrainSpec) -> int:
    """Entries of one network's statistics vector."""
    return max(sl.stop for sl, _ in train_layout(spec).values())


def _n_params(widths) -> int:
    return sum(widths[m] * widths[m - 1] + widths[m] for m in range(1, len(widths)))


def train_bytes_per_network(widths, spec: TrainSpec) -> int:
    """Estimated peak working memory of one network: ~5 copies of the parameters (weights, gradients, updated
    weights, the scan's carry), ~6 activation-sized arrays per layer on N inputs, the Jacobian rows
    ``(n_L N, n_m)``, ~8 NTK-sized ``(n_L N)^2`` and ~12 training-block ``(n_L N_A)^2`` temporaries (the
    geometric sum), and 3 copies of the statistics. Against XLA's own count on CPU (memory_analysis) this is
    1.8 to 2.3 times larger for widths 32..512, N = 5..30, n_L = 1..5."""
    widths = tuple(int(n) for n in widths)
    m, mA = spec.n_out * spec.n, spec.n_out * spec.n_train
    F = train_stat_size(spec)
    return 8 * (5 * _n_params(widths) + 6 * spec.n * sum(widths) + 3 * m * max(widths) + 8 * m * m + 12 * mA * mA
                + 3 * F + 2 * len(spec.loss_steps))


def train_cache_chunk(widths) -> int:
    """Networks per compiled call on a CPU device that keep one chunk's parameters near the cache: the weights are
    re-read at every step, and chunks of ~2 MiB of parameters run ~3x faster than chunks of ~8 MiB."""
    return int(np.clip((2 * 2**20) // (8 * _n_params(widths)), 8, 256))


def geometric_sum(M, T: int):
    """``sum_{s<T} M^s`` for a square ``M`` (jax, traceable) and a static integer ``T >= 0``, by binary doubling:
    with ``P = M^k`` and ``S = sum_{s<k} M^s``, ``k -> 2k`` is ``S += P S, P = P P`` and ``k -> k + 1`` is
    ``S += P, P = P M`` (about ``2 log2 T`` products; no inverse)."""
    import jax.numpy as jnp

    m = M.shape[-1]
    P = jnp.eye(m, dtype=M.dtype)
    S = jnp.zeros_like(M)
    for bit in bin(int(T))[2:] if T > 0 else "":
        S = S + P @ S
        P = P @ P
        if bit == "1":
            S = S + P
            P = P @ M
    return S


def train_network_fn(sigma, widths, spec: TrainSpec):
    """One network: ``(key, x (N, n_0), C_W (L,), C_b (L,), (rates (2, L), eta, y (N_A, n_L))) ->
    (stats (1, F), status (1,))`` (module docstring; ``rates`` = ``lambda_b``, ``lambda_W`` per layer). The status is
    always OK: a diverged network is flagged inside its statistics (``valid = 0``), not failed."""
    import jax
    import jax.numpy as jnp

    widths = tuple(int(n) for n in widths)
    L = len(widths) - 1
    A, D, nL, N, T = spec.n_train, spec.n_test, spec.n_out, spec.n, spec.steps
    layout = train_layout(spec)
    # the recorded steps are 0, r, 2r, ... (< T) and T itself (loss_schedule): step t < T is at position t // r
    r = spec.loss_steps[1] if len(spec.loss_steps) > 1 else 1
    k_sgd = spec.batch_size

    def draw(key, C_W, C_b):
        return explicit_weights(key, widths, C_W, C_b)

    def forward(Ws, bs, X):
        """Output ``(M, n_L)``, the activations ``s^(0..L-1)`` and the derivatives ``sigma'(z^(1..L-1))``."""
        h, d1 = [X], []
        z = X
        for m in range(L):
            z = h[-1] @ Ws[m].T + bs[m]
            if m < L - 1:
                s, ds = jax.jvp(sigma, (z,), (jnp.ones_like(z),))
                h.append(s)
                d1.append(ds)
        return z, h, d1

    def outer_sum(delta, h):
        """``delta^T h`` ``(n_out, n_in)``: for a few training inputs as a sum of fused outer products (on CPU ~1.5x
        faster than the batched rank-A dot, whose result would be written and re-read before the update)."""
        if A > OUTER_SUM_MAX:
            return delta.T @ h
        out = delta[0][:, None] * h[0][None, :]
        for a in range(1, A):
            out = out + delta[a][:, None] * h[a][None, :]
        return out

    def ntk(Ws, h, d1, lam_b, lam_W):
        """``H`` ``(n_L, N, n_L, N)`` from the per-layer Jacobian rows (module docstring)."""
        g = jnp.broadcast_to(jnp.eye(nL, dtype=jnp.float64)[:, None, :], (nL, N, nL))
        H = jnp.zeros((nL, N, nL, N))
        for m in range(L, 0, -1):                      # layer m is Ws[m - 1]
            kap = lam_b[m - 1] + (lam_W[m - 1] / widths[m - 1]) * (h[m - 1] @ h[m - 1].T)
            H = H + kap[None, :, None, :] * jnp.einsum("ian,jbn->iajb", g, g)
            if m > 1:
                g = (g @ Ws[m - 1]) * d1[m - 2][None]
        return H

    def fn(key, x, C_W, C_b, extra):
        rates, eta, y = extra
        lam_b, lam_W = rates[0], rates[1]
        Ws, bs = draw(key, C_W, C_b)
        step_W = [eta * lam_W[m] / widths[m] for m in range(L)]
        step_b = [eta * lam_b[m] for m in range(L)]
        z0, h0, d10 = forward(Ws, bs, x)
        H0 = ntk(Ws, h0, d10, lam_b, lam_W)
        XA = x[:A]
        sgd_key = jax.random.fold_in(key, 0)

        def step(carry, _):
            Ws, bs, bad, losses, t = carry
            z, h, d1 = forward(Ws, bs, XA)
            eps = z - y
            loss = 0.5 * jnp.sum(eps * eps)
            bad = bad | ~(jnp.abs(loss) <= DIVERGED)           # NaN compares False: flagged too
            losses = jnp.where(t % r == 0, losses.at[t // r].set(loss), losses)
            if k_sgd is not None:
                pick = jax.random.permutation(jax.random.fold_in(sgd_key, t), A)[:k_sgd]
                w = jnp.zeros(A, dtype=jnp.float64).at[pick].set(A / k_sgd)
                eps = eps * w[:, None]
            delta = eps
            newW, newb = [None] * L, [None] * L
            for m in range(L - 1, -1, -1):
                gW = outer_sum(delta, h[m])
                gb = jnp.sum(delta, axis=0)
                if m > 0:
                    delta = (delta @ Ws[m]) * d1[m - 1]
                newW[m] = Ws[m] - step_W[m] * gW
                newb[m] = bs[m] - step_b[m] * gb
            return (newW, newb, bad, losses, t + 1), None

        # the initial flags built from the network's own data, so that under shard_map they vary over devices like
        # the carry that the steps return
        zero = jnp.zeros_like(z0[0, 0])
        losses = jnp.full(len(spec.loss_steps), zero)
        carry = (Ws, bs, zero != zero, losses, jnp.zeros_like(zero, dtype=jnp.int64))
        if T > 0:
            carry, _ = jax.lax.scan(step, carry, None, length=T)
        WT, bT, bad, losses, _ = carry
        zT, hT, d1T = forward(WT, bT, x)
        epsT = zT[:A] - y
        lossT = 0.5 * jnp.sum(epsT * epsT)
        losses = losses.at[len(spec.loss_steps) - 1].set(lossT)
        HT = ntk(WT, hT, d1T, lam_b, lam_W)

        # the network's own frozen-NTK prediction (module docstring), pairs (i, a) flattened i-major
        HAA = H0[:, :A, :, :A].reshape(nL * A, nL * A)
        HDA = H0[:, A:, :, :A].reshape(nL * D, nL * A)
        eps0 = (z0[:A] - y).T.reshape(-1)
        G = eta * geometric_sum(jnp.eye(nL * A) - eta * HAA, T)
        zf = z0[A:] - (HDA @ (G @ eps0)).reshape(nL, D).T

        zD = zT[A:]
        diag = jnp.arange(nL)
        blocks = {"z": zD, "zz": zD @ zD.T / nL, "resid": epsT, "fshift": zD - zf, "loss": losses,
                  "ntk0": jnp.mean(H0[diag, :, diag, :], axis=0),
                  "dntk": jnp.mean((HT - H0)[diag, :, diag, :], axis=0)}
        own = jnp.concatenate([blocks[name].reshape(-1) for name in layout if name not in ("valid", "fvalid",
                                                                                             "fshift")])
        # a network that ends above its initial loss did not train (eta is above its own stability limit: its
        # residuals grow like |1 - eta lambda|^t, far below DIVERGED after a few hundred steps)
        loss0 = 0.5 * jnp.sum((z0[:A] - y) ** 2)
        valid = (~bad & ~(lossT > DIVERGED) & jnp.all(jnp.abs(own) <= DIVERGED)
                 & (lossT <= loss0 * (1.0 + 1e-9) + 1e-300))
        stable = eta * jnp.linalg.eigvalsh(HAA)[-1] < 2.0
        fvalid = valid & stable & jnp.all(jnp.abs(blocks["fshift"]) <= DIVERGED)
        st = [jnp.where(fvalid if name == "fshift" else valid, blocks[name], 0.0).reshape(-1)
              for name in layout if name not in ("valid", "fvalid")]
        st = jnp.concatenate([valid[None].astype(jnp.float64), fvalid[None].astype(jnp.float64)] + st)
        return st[None], jnp.full((1,), OK, dtype=jnp.int32)

    return fn


# ---------------------------------------------------------------------------------------------------
# estimates
# ---------------------------------------------------------------------------------------------------


def _blocks(m, spec: TrainSpec) -> dict:
    """Per-valid-network means ``m`` ``(k, F)`` -> ``{block: (k, *shape)}``."""
    return {name: m[..., sl].reshape(m.shape[:-1] + shp) for name, (sl, shp) in train_layout(spec).items()}


def _observable(name: str, m, spec: TrainSpec):
    b = _blocks(m, spec)
    if name == "cov":
        z = b["z"]                                                   # (k, N_D, n_L)
        return b["zz"] - np.einsum("kai,kbi->kab", z, z) / spec.n_out
    key = {"mean": "z", "train_residual": "resid", "frozen_shift": "fshift", "loss": "loss", "ntk0": "ntk0",
           "ntk_change": "dntk"}[name]
    return b[key]


def valid_counts(sums, spec: TrainSpec, flag: str = "valid") -> np.ndarray:
    """Valid (not diverged) networks per batch from the batch sums ``(B, 1, F)`` (``flag="fvalid"``: those with a
    finite frozen prediction as well)."""
    sl = train_layout(spec)[flag][0]
    return np.rint(np.asarray(sums)[:, 0, sl][:, 0]).astype(np.int64)


def train_estimates(counts, sums, spec: TrainSpec) -> dict | None:
    """``{name: Estimate}`` for :data:`TRAIN_NAMES` from the batch sums ``(B, 1, F)``: means over the valid
    networks with a jackknife over batches weighted by their valid counts (module docstring); None when no network
    is valid. ``frozen_shift`` is left out when no network has a finite frozen prediction."""
    v, fv = valid_counts(sums, spec), valid_counts(sums, spec, "fvalid")
    if v.sum() == 0:
        return None
    s = np.asarray(sums, dtype=np.float64)[:, 0, :]
    out = {}
    for name in TRAIN_NAMES:
        counts = fv if name == "frozen_shift" else v
        if counts.sum() == 0:
            continue
        e = jackknife(lambda m, name=name: _observable(name, m, spec), counts, s, linear=(name != "cov"))
        out[name] = Estimate(e.scaled_mean, e.scaled_stderr, None, None, name, "")
    return out


def train_state_problem(counts, sums, spec: TrainSpec) -> str | None:
    """What is wrong with the batch sums of a training run (beyond shapes and finiteness), or None: each batch's
    valid count must be an integer in ``0..count``, and the sums of squares (``zz`` diagonal, loss) not negative."""
    lay = _blocks(np.asarray(sums)[:, 0, :], spec)
    v, fv = lay["valid"], lay["fvalid"]
    for c, top in ((v, np.asarray(counts)), (fv, v)):
        if np.any(np.abs(c - np.rint(c)) > 1e-9) or np.any(c < 0) or np.any(c > top):
            return "its valid-network counts are not integers between 0 and the batch counts"
    if np.any(np.diagonal(lay["zz"], axis1=-2, axis2=-1) < 0) or np.any(lay["loss"] < 0):
        return "a sum of squares (output second moment or loss) is negative"
    return None


def spec_from_config(config: dict) -> TrainSpec:
    """The :class:`TrainSpec` of a training run's configuration."""
    return TrainSpec(n_train=len(config["x_train"]), n_test=len(config["x_test"]), n_out=int(config["widths"][-1]),
                     steps=int(config["steps"]), batch_size=config["batch_size"],
                     loss_steps=tuple(int(t) for t in config["loss_steps"]))


# ---------------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainedMC:
    """Monte Carlo of networks trained by gradient descent (:func:`pdlt.sample_trained`); inputs ordered training
    then test (``N = N_A + N_D``), outputs ``i = 0..n_L-1``. Every estimate is an :class:`Estimate` (``.mean``,
    ``.stderr``, batch jackknife) over the networks that did not diverge:

    * ``mean`` ``(N_D, n_L)``: ``E[z_{i;d}(T)]`` at the test inputs;
    * ``cov`` ``(N_D, N_D)``: ``Cov(z_{i;d1}(T), z_{i;d2}(T))``, averaged over the outputs i;
    * ``train_residual`` ``(N_A, n_L)``: ``E[z(T) - y]`` on the training inputs;
    * ``frozen_shift`` ``(N_D, n_L)``: ``E[z_d(T) - zf_d(T)]``, zf the network's own frozen-NTK prediction;
    * ``loss`` ``(n_rec,)``: ``E[L(t)]`` at ``loss_steps``;
    * ``ntk0`` ``(N, N)``: ``E[H_{ii;ab}(0)]``, and ``ntk_change`` ``(N, N)``: ``E[H_{ii;ab}(T) - H_{ii;ab}(0)]``,
      averaged over i (the Lambda-weighted NTK of the output layer).

    ``diverged`` networks (loss or outputs non-finite or above 1e100, or a final loss above the initial one) are
    counted and left out; with none valid
    every estimate raises :class:`pdlt.errors.DivergentFlowError`. ``frozen_unstable`` counts the valid networks
    whose own frozen model is unstable (``eta lambda_max(H0_AA) >= 2``): ``frozen_shift`` alone leaves them out. ``complete``, ``interrupted``, ``caveats``,
    ``save`` and ``load`` behave as on :class:`pdlt.montecarlo.MCResult`.
    """

    state: BatchSums
    config: dict
    complete: bool
    elapsed: float = 0.0
    info: dict = field(default_factory=dict)
    interrupted: str | None = None
    estimates: dict | None = None

    @classmethod
    def from_state(cls, state: BatchSums, config: dict, complete: bool, elapsed: float = 0.0, info=None,
                   interrupted: str | None = None) -> "TrainedMC":
        est = train_estimates(state.counts, state.sums, spec_from_config(config)) if state.done else None
        return cls(state, config, complete, elapsed, dict(info or {}), interrupted, est)

    kind = property(lambda self: "train", doc="``\"train\"``")

    @property
    def spec(self) -> TrainSpec:
        return spec_from_config(self.config)

    @property
    def n_samples(self) -> int:
        """Networks trained (diverged ones included)."""
        return self.state.done

    @property
    def n_valid(self) -> int:
        """Networks that did not diverge (those the estimates average over)."""
        return int(valid_counts(self.state.sums, self.spec).sum())

    @property
    def diverged(self) -> int:
        """Networks whose training diverged (excluded from every estimate)."""
        return self.n_samples - self.n_valid

    @property
    def frozen_unstable(self) -> int:
        """Valid networks whose own frozen-NTK prediction blew up (``eta`` above their frozen stability limit
        ``2/lambda_max(H0_AA)``), left out of ``frozen_shift`` only."""
        return self.n_valid - int(valid_counts(self.state.sums, self.spec, "fvalid").sum())

    @property
    def loss_steps(self) -> np.ndarray:
        """The steps at which ``loss`` is recorded (0 and ``steps`` always included)."""
        return np.asarray(self.config["loss_steps"], dtype=np.int64)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.config["widths"])

    def _get(self, name: str) -> Estimate:
        if self.estimates is None:
            raise DivergentFlowError(
                f"all {self.n_samples} trained networks diverged or ended above their initial loss, so {name} has no "
                f"estimate: the step size eta = {self.config['eta']:g} is likely above the stability limit "
                "2/lambda_max(Theta) of the training "
                "NTK; lower eta", layer=None)
        if name not in self.estimates:
            raise DivergentFlowError(
                f"the frozen-NTK prediction of every valid network blew up, so {name} has no estimate: eta = "
                f"{self.config['eta']:g} is above each network's frozen stability limit 2/lambda_max(H0) of its "
                "initial training NTK; lower eta or steps", layer=None)
        return self.estimates[name]

    mean = property(lambda self: self._get("mean"), doc="``(N_D, n_L)`` E[z_d(T)] at the test inputs")
    cov = property(lambda self: self._get("cov"), doc="``(N_D, N_D)`` Cov(z_i;d1(T), z_i;d2(T)), averaged over i")
    train_residual = property(lambda self: self._get("train_residual"), doc="``(N_A, n_L)`` E[z_A(T) - y]")
    frozen_shift = property(lambda self: self._get("frozen_shift"), doc="``(N_D, n_L)`` E[z_d(T) - zf_d(T)]")
    loss = property(lambda self: self._get("loss"), doc="``(n_rec,)`` E[L(t)] at ``loss_steps``")
    ntk0 = property(lambda self: self._get("ntk0"), doc="``(N, N)`` E[H_ii;ab(0)], averaged over i")
    ntk_change = property(lambda self: self._get("ntk_change"), doc="``(N, N)`` E[H_ii;ab(T) - H_ii;ab(0)]")
    # the names of pdlt.observables.TRAINING_OBSERVABLES, which the theory's predictions answer to
    trained_mean = property(lambda self: self.mean, doc="``mean`` under its observable name")
    feature_shift = property(lambda self: self.frozen_shift, doc="``frozen_shift`` under its observable name")
    trained_cov = property(lambda self: self.cov, doc="``cov`` under its observable name")

    @property
    def caveats(self) -> tuple[Caveat, ...]:
        """An ``"incomplete"`` caveat for an interrupted run and a ``"diverged"`` one when networks diverged."""
        out = []
        if not self.complete:
            why = f" (interrupted by {self.interrupted})" if self.interrupted else ""
            out.append(Caveat("incomplete", f"incomplete Monte Carlo run{why}: {self.n_samples:,} of "
                                            f"{int(self.config['n_samples']):,} networks trained; resume it to finish"))
        if self.diverged:
            out.append(Caveat("diverged", f"{self.diverged:,} of {self.n_samples:,} networks diverged (or ended above "
                                          "their initial loss) during "
                                          "training and are excluded from the estimates"))
        if self.frozen_unstable:
            out.append(Caveat("frozen_unstable", f"{self.frozen_unstable:,} of {self.n_valid:,} trained networks have "
                                                 "an unstable frozen-NTK model (eta lambda_max(H0) >= 2 for their own "
                                                 "initial NTK); frozen_shift leaves them out"))
        return tuple(out)

    def save(self, path) -> str:
        """Write ``PATH.npz`` and ``PATH.json`` as :meth:`pdlt.montecarlo.MCResult.save` does; returns the .npz
        path. :func:`pdlt.montecarlo.load` reads it back (validated); it is also a checkpoint to resume from."""
        from .runner import save_result

        return save_result(self, path)

    @classmethod
    def load(cls, path) -> "TrainedMC":
        from .runner import load

        res = load(path)
        if not isinstance(res, cls):
            raise ParameterError(f"{path} holds a {res.kind} run, not a training run", "path")
        return res

    def summary(self) -> str:
        """A short text table: test input, output 0's trained mean and variance with standard errors."""
        rows = [f"# trained {self.config['activation']}, widths={self.widths}, eta={self.config['eta']:g}, "
                f"steps={self.config['steps']}, batch_size={self.config['batch_size']}, networks={self.n_samples} "
                f"(diverged {self.diverged})" + ("" if self.complete else " INCOMPLETE")]
        if self.estimates is None:
            return "\n".join(rows + ["# no valid network"])
        m, c = self.mean, self.cov
        for d in range(m.shape[0]):
            rows.append(f"{d:4d}  E[z] = {m.mean[d, 0]:12.6g} +- {m.stderr[d, 0]:8.2g}   "
                        f"Var = {c.mean[d, d]:12.6g} +- {c.stderr[d, d]:8.2g}")
        return "\n".join(rows)

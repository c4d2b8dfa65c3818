r"""Bayesian inference at finite width: the posterior of the network outputs given training data, to O(1/n) (and to
O(1/n^2) for up to four distinct inputs: :mod:`pdlt.theory.posterior_nnlo`).

Datapoints are particles: the architecture fixes the prior (the "vacuum", a Gaussian process at infinite
width), conditioning on observed outputs ``y`` at a precision scale (Gaussian likelihood with noise variance
``s^2``; ``s^2 = 0`` is exact conditioning) is inference, and at finite width the datapoints interact
through the four-point vertex V. PDLT ch. 6; Yaida 2019 (arXiv 1910.00019), section on Bayesian inference;
``derivations/README.md`` section 11.

**Method (derived here, ``derivations/bayes.py``).** Conditional on the last hidden layer, the outputs are
exactly Gaussian, iid over output neurons i: ``z_i | G^ ~ N(0, G^)`` with the stochastic metric
``G^ = G^(L)`` of the training (A) and test (B) inputs. So every posterior expectation is a ratio of
averages over G^,

    E[F | y] = E_G^[ w(G^) F(G^) ] / E_G^[ w(G^) ],   w = prod_i N(y_i; 0, G^_AA + s^2 1),

with ``F = m_i = G^_BA (G^_AA + s^2)^{-1} y_i`` (conditional mean) or ``F = delta_ij S + (m - m0)_i (m - m0)_j^T``
(second moment about the NNGP mean ``m0 = m(K)``, ``S = G^_BB - G^_BA (G^_AA + s^2)^{-1} G^_AB``; the covariance is
its expectation less ``(E m - m0)^2``, which is O(1/n^2), so no difference of the size of ``m m^T`` is formed, and
at O(1/n) it is ``delta_ij S_1 + (dm (x) dm) : V``). At O(1/n) the law of ``G^ = K + Delta`` enters only
through ``E Delta = G1/n`` and ``E Delta Delta = V/n`` (higher cumulants are O(1/n^2)), so Taylor expansion to
second order gives, with ``l = log w`` and all derivatives with respect to the entries of G at G = K,

    E[F | y] = F + (1/n) [ dF . G1 + (1/2) d^2F : V + (dF (x) dl) : V ] + O(1/n^2)

(the ``F (d^2 l + dl dl) : V`` terms of numerator and denominator cancel). The derivatives are taken by JAX
automatic differentiation of these small d x d functionals (d = n_A + n_B), so the same code gives the mean,
the covariance (including the O(1/n) correlation between output neurons that a shared G^ induces) and any
number of outputs. An independent closed form for the mean (derivations/README.md section 11.2, after Yaida 2019) is
:func:`posterior_mean_closed_form`; the tests check the two against each other and both against exact
importance reweighting of sampled networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._x64 import float64
from ..architecture import MLP, checked_training_block, not_invertible, posterior_problem
from ..errors import (TRUNCATION_THRESHOLD, Caveat, ParameterError, PdltWarning, SingularKernelError, TruncationWarning,
                      emit, truncation_caveat)

__all__ = ["Posterior", "posterior", "truncation_caveats", "posterior_scales", "scaled_ratio",
           "posterior_mean_closed_form", "EffectiveAction", "effective_action"]

# Below this fraction of the prior's scale at the test inputs a posterior mean or variance is round-off (exact
# conditioning at a training input pins it to ~1e-16 of that scale), so a ratio against it would be noise.
_ZERO_SCALE = 1e-8


@dataclass(frozen=True)
class Posterior:
    """Posterior of the outputs ``z^(L)_{i;b}`` at the test inputs, given ``y`` at the training inputs.

    Shapes (``n_B`` test inputs, ``n_L`` outputs): ``mean_infinite``, ``mean`` ``(n_B, n_L)``; ``cov_infinite``
    ``(n_B, n_B)`` (the NNGP covariance, the same for every output, outputs independent); ``cov``
    ``(n_L, n_B, n_L, n_B)`` to the order computed (``cov[i, a, j, b] = Cov(z_{i;a}, z_{j;b} | y)``).
    ``mean_correction`` and ``cov_correction`` are the O(1/n) coefficients
    (``mean = mean_infinite + mean_correction / n``, n = n_{L-1});
    ``mean_G1`` is the part of ``mean_correction`` from G1, the rest is from V. ``order=2``
    (:func:`posterior`) adds the O(1/n^2) coefficients ``mean_correction2``, ``cov_correction2`` (None at order 1;
    :mod:`pdlt.theory.posterior_nnlo`), included in ``mean`` and ``cov``; ``next_order`` is then
    ``|mean_correction2|/n^2``, the computed truncation error of the O(1/n) mean. ``caveats``: a ``"truncation"``
    :class:`~pdlt.errors.Caveat` for each 1/n correction that is not small against the leading term (then also
    issued as a :class:`~pdlt.errors.TruncationWarning`; see :func:`truncation_caveats`), including those of the
    finite-width theory of the layers feeding it, and at order 2 those of the 1/n^2 statistics and one where the 1/n^2
    term is not small against the 1/n term; a ``"round-off"`` caveat where the training block is so ill-conditioned
    that the accuracy of the kernel's entries limits the result (:func:`pdlt.errors.roundoff_caveat`).
    """

    mean_infinite: np.ndarray
    mean_correction: np.ndarray
    mean_G1: np.ndarray
    cov_infinite: np.ndarray
    cov_correction: np.ndarray
    n: int
    noise_var: float
    caveats: tuple[Caveat, ...] = ()
    order: int = 1
    mean_correction2: np.ndarray | None = None
    cov_correction2: np.ndarray | None = None

    @property
    def mean(self) -> np.ndarray:
        """``(n_B, n_L)`` to the order computed."""
        out = self.mean_infinite + self.mean_correction / self.n
        return out if self.mean_correction2 is None else out + self.mean_correction2 / self.n**2

    @property
    def cov(self) -> np.ndarray:
        """``(n_L, n_B, n_L, n_B)`` to the order computed."""
        eye = np.eye(self.mean_infinite.shape[1])
        base = np.einsum("ij,ab->iajb", eye, self.cov_infinite) + self.cov_correction / self.n
        return base if self.cov_correction2 is None else base + self.cov_correction2 / self.n**2

    @property
    def next_order(self) -> np.ndarray:
        """``|mean_correction2|/n^2`` ``(n_B, n_L)``: the size of the O(1/n^2) term the O(1/n) mean leaves out (its
        computed truncation error); needs ``order=2``."""
        if self.mean_correction2 is None:
            raise ParameterError("next_order: the O(1/n^2) term was not computed; call pdlt.posterior(..., order=2) "
                                 "(at most 4 distinct training and test inputs)", "order")
        return np.abs(self.mean_correction2) / self.n**2

    def std(self) -> np.ndarray:
        """Posterior standard deviation of each output at each test input, ``(n_B, n_L)``."""
        return np.sqrt(np.maximum(output_variances(self.cov), 0.0))


def output_variances(cov) -> np.ndarray:
    """The variance of each output at each test input, ``(n_B, n_L)``, from a covariance ``(n_L, n_B, n_L, n_B)``."""
    return np.stack([np.diagonal(cov[i, :, i, :]) for i in range(cov.shape[0])], -1)


def last_layer_statistics(net: MLP, x):
    """K, G1, V of the last layer on inputs x, and the caveats of that finite-width theory. Exact duplicates
    (repeated measurements, a test point equal to a training point) are computed once and copied: their
    preactivations are identical, so every statistic is. Distinct but nearly identical inputs still raise
    :class:`SingularKernelError` from the 1/n recursions. The theory's truncation warnings are collected as
    caveats (not issued here) so that :func:`posterior` issues each exactly once."""
    import warnings

    from .finite_width import finite_width

    uniq, inv = np.unique(x, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        th = finite_width(net, uniq)
    L = net.L
    K, G1, V = th.K[L - 1], th.G1[L - 1], th.V[L - 1]
    ix = np.ix_(inv, inv)
    return K[ix], G1[ix], V[np.ix_(inv, inv, inv, inv)], tuple(getattr(th, "caveats", ()))


def _check_train_block(K_AA, noise_var, act, layer: int) -> Caveat | None:
    """:func:`pdlt.architecture.checked_training_block` of the infinite-width training block of layer ``layer``."""
    from .kernel import kernel_accuracy

    ev = np.linalg.eigvalsh(K_AA + noise_var * np.eye(K_AA.shape[0]))
    return checked_training_block(ev, noise_var, kernel_accuracy(act, layer), "posterior", "infinite-width kernel",
                                  layer)


def posterior_scales(m0, S0, prior_var):
    """``(scale (n_B, n_L), var_scale (1, n_B, 1, n_B))``: what a correction of the posterior mean and covariance is
    measured against (:func:`truncation_caveats`): ``max(|m0|, NNGP posterior std)`` and the product of the two
    stds, floored at :data:`_ZERO_SCALE` of the prior's scale (``prior_var`` ``(n_B,)``: ``K_bb``)."""
    sd0 = np.sqrt(np.maximum(np.diagonal(S0), 0.0))
    prior_sd = np.sqrt(np.max(prior_var))
    scale = np.maximum(np.maximum(np.abs(m0), sd0[:, None]), _ZERO_SCALE * prior_sd)
    var_scale = np.maximum(np.outer(sd0, sd0), _ZERO_SCALE * prior_sd**2)[None, :, None, :]
    return scale, var_scale


def scaled_ratio(term, scale) -> np.ndarray:
    """``term / scale``, 0 where both vanish (inf where only the scale does: a correction of an exact 0)."""
    scale = np.broadcast_to(scale, np.broadcast_shapes(np.shape(term), np.shape(scale)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, term / np.where(scale > 0, scale, 1.0), np.where(term > 0, np.inf, 0.0))


def truncation_caveats(mean_infinite, mean_correction, cov_infinite, cov_correction, n: int, prior_var, layer: int):
    r"""Caveats when the O(1/n) posterior is not a small correction of the infinite-width one.

    The expansion is ``E[F | y] = F(K) + (1/n) (...) + O(1/n^2)``; it is trustworthy where the kept 1/n term is
    small against the quantity it corrects, since the neglected 1/n^2 term is then smaller still. Ratios
    (shapes as :class:`Posterior`, ``prior_var`` ``(n_B,)`` = K_bb at the test inputs):

    * mean: ``|mean_correction_{b,i} / n| / max(|mean_infinite_{b,i}|, sqrt(cov_infinite_{bb}))``. The posterior
      std enters the scale because a mean that vanishes (by symmetry, or y = 0) is corrected "infinitely" in
      relative terms, while a shift well inside the posterior's spread is still a small change of the law.
    * covariance: ``|cov_correction_{i a j b} / n| / sqrt(cov_infinite_{aa} cov_infinite_{bb})``, the 1/n change of
      the posterior correlation (off-diagonal in outputs too: there the leading term is 0).

    Scales below ``1e-8`` of the prior's (``sqrt(K_bb)``, ``K_bb``) are round-off (a test input on a training
    input at noise_var = 0, where both terms vanish) and are floored there. At most one caveat each, for the
    largest ratio."""
    m0, dm = np.asarray(mean_infinite), np.asarray(mean_correction) / n
    S0, dS = np.asarray(cov_infinite), np.asarray(cov_correction) / n
    scale, var_scale = posterior_scales(m0, S0, prior_var)
    # a scale of 0 is a test input whose prior is exactly 0 (x = 0 with C_b = 0): its output is 0 at every order, and
    # 0/0 gave NaN ratios and caveats saying "= nan, not small"
    r_mean = scaled_ratio(np.abs(dm), scale)  # (n_B, n_L)
    r_cov = scaled_ratio(np.abs(dS), var_scale)  # (n_L, n_B, n_L, n_B)
    # the posterior's 1/n terms grow with the targets (the mean's correction is cubic in y) and as the noise
    # shrinks, not only with L/n
    advice = ("widen the network, or bring the targets within a few prior standard deviations of the NNGP "
              "prediction (rescale y), or raise noise_var")
    out = []
    b, i = np.unravel_index(np.argmax(r_mean), r_mean.shape)
    out.append(truncation_caveat(r_mean[b, i], f"posterior mean: |mean_correction/n| / max(|mean_infinite|, NNGP "
                                 f"posterior std) at test input {b}, output {i}", layer, advice,
                                 r"posterior mean: $|\text{mean correction}/n|/\max(|\text{mean}_\infty|,\ "
                                 rf"\text{{NNGP posterior std}})$ at test input ${b}$, output ${i}$"))
    i, a, j, c = np.unravel_index(np.argmax(r_cov), r_cov.shape)
    out.append(truncation_caveat(r_cov[i, a, j, c], f"posterior covariance: |cov_correction/n| / NNGP posterior "
                                 f"std^2 at (output {i}, test input {a}; output {j}, test input {c})", layer, advice,
                                 r"posterior covariance: $|\text{cov correction}/n|/(\text{NNGP posterior std})^2$ at "
                                 f"(output ${i}$, test input ${a}$; output ${j}$, test input ${c}$)"))
    return tuple(c for c in out if c is not None)


def posterior_functionals(nA: int, nL: int):
    """JAX functions of the full metric G (d, d) and the targets y (nA, nL), noise s2: log-weight l,
    conditional mean m (n_B, n_L), and the second moment about a fixed center ``c`` (n_B, n_L),
    ``delta_ij S + (m - c)_i (m - c)_j^T`` (n_L, n_B, n_L, n_B). With ``c`` the mean at the expansion point, the
    posterior covariance is that moment's expectation less ``(E m - c)(E m - c)^T``, which is of order 1/n^2: no
    difference of the size of ``m m^T`` is formed (about a zero center, targets of 1e8 lost the NNGP covariance,
    ~0.05, to rounding in ``E[m m^T] - E[m] E[m]^T``)."""
    import jax.numpy as jnp

    def split(G, s2):
        G = 0.5 * (G + G.T)
        return G, G[:nA, :nA] + s2 * jnp.eye(nA)

    def logw(G, y, s2):
        G, C = split(G, s2)
        return -0.5 * jnp.sum(y * jnp.linalg.solve(C, y)) - 0.5 * nL * jnp.linalg.slogdet(C)[1]

    def mean(G, y, s2):
        G, C = split(G, s2)
        return G[nA:, :nA] @ jnp.linalg.solve(C, y)

    def second(G, y, s2, c):
        G, C = split(G, s2)
        S = G[nA:, nA:] - G[nA:, :nA] @ jnp.linalg.solve(C, G[:nA, nA:])
        m = G[nA:, :nA] @ jnp.linalg.solve(C, y) - c
        return jnp.einsum("ij,ab->iajb", jnp.eye(nL), S) + jnp.einsum("ai,bj->iajb", m, m)

    return logw, mean, second


@lru_cache(maxsize=16)
def _derivatives(nA: int, nL: int):
    """Jitted ``(F, dF, d^2F)`` of the mean and second-moment functionals, and ``dl`` (cached per shape)."""
    import jax

    logw, mean, second = posterior_functionals(nA, nL)

    def triple(fun):
        return jax.jit(lambda G, *a: (fun(G, *a), jax.jacfwd(fun)(G, *a), jax.jacfwd(jax.jacfwd(fun))(G, *a)))

    # each call runs in float64 whatever the caller's JAX configuration (posterior is scoped already; a direct
    # caller, e.g. derivations/bayes.py, is not)
    return tuple(float64(f) for f in (jax.jit(jax.grad(logw)), triple(mean), triple(second)))


def _expand(triple, dlogw, K, G1, V):
    """``(F(K), dF.G1, (1/2) d^2F:V + (dF (x) dl):V)`` from ``(F, J, H)`` of a functional at G = K."""
    F, J, H = (np.asarray(a) for a in triple)
    # (targets far beyond the outputs' scale overflow these terms: check_target_range names y_train, with no numpy
    # warning before it)
    with np.errstate(over="ignore", invalid="ignore"):
        g1 = np.tensordot(J, G1, axes=([-2, -1], [0, 1]))
        hv = 0.5 * np.tensordot(H, V, axes=([-4, -3, -2, -1], [0, 1, 2, 3]))
        cross = np.tensordot(J, np.tensordot(V, dlogw, axes=([2, 3], [0, 1])), axes=([-2, -1], [0, 1]))
    return F, g1, hv + cross


@float64
def posterior_expansion(K, G1, V, y, nA: int, noise_var: float):
    """The posterior to O(1/n) from the last layer's statistics on the training (first ``nA``) then test inputs:
    ``K, G1`` ``(d, d)``, ``V`` ``(d, d, d, d)``, targets ``y`` ``(nA, n_L)``. Returns ``(m0, dm, m_G1, S0, dcov)``:
    the NNGP mean ``(n_B, n_L)``, the 1/n coefficient of the mean and its G1 part, the NNGP covariance
    ``(n_B, n_B)`` and the 1/n coefficient of the covariance ``(n_L, n_B, n_L, n_B)`` (module docstring)."""
    import jax.numpy as jnp

    dlogw, mean, second = _derivatives(nA, y.shape[1])
    args = (jnp.asarray(K), jnp.asarray(y), jnp.float64(noise_var))
    dl = np.asarray(dlogw(*args))
    m0, m_g1, m_v = _expand(mean(*args), dl, K, G1, V)
    # the second moment about m0: its value at K is delta_ij S, and its 1/n term is the covariance's (the square of
    # E m - m0 is of order 1/n^2)
    S0, S_g1, S_v = _expand(second(*args, jnp.asarray(m0)), dl, K, G1, V)
    out = (m0, m_g1 + m_v, m_g1, S0[0, :, 0, :], S_g1 + S_v)
    check_target_range(out, y, K, "1/n", noise_var)
    return out


#: training-block scale (largest ``K_aa + s^2``) above which the posterior's derivatives are refused for it: their
#: products of the block's entries overflow from ~1e154 (sqrt of float64's largest), while the posterior itself is
#: the NNGP's to ~1e-150 relative there
_BLOCK_MAX = 1e150


def check_target_range(terms, y, K, order: str, noise_var: float = 0.0) -> None:
    """Refuse (:class:`ParameterError`) where the posterior's ``order`` terms ``terms`` are not finite: naming
    ``noise_var`` (or ``x_train``, whichever dominates) where the training block ``K_AA + s^2`` is beyond
    :data:`_BLOCK_MAX`, else ``y_train``: the terms grow like powers of the targets (the 1/n terms like y^3, the 1/n^2
    terms' parts like y^9), and far beyond the outputs' scale they overflow (long after the truncation caveats have
    said that they are not small)."""
    if all(np.all(np.isfinite(a)) for a in terms):
        return
    top = float(np.max(np.diagonal(K)))
    if top + noise_var > _BLOCK_MAX:
        big = noise_var >= top
        raise ParameterError(f"the posterior's {order} terms leave float64's range: the training block K_AA + s^2 "
                             f"reaches {top + noise_var:.3g} (products of its entries overflow beyond ~1e154); "
                             + ("with noise this large the posterior is the prior to ~1/noise_var: use a smaller "
                                "noise_var, or order=1" if big else "scale the inputs toward K ~ 1"),
                             "noise_var" if big else "x_train")
    raise ParameterError(f"the posterior's {order} terms leave float64's range: they grow like powers of the targets, "
                         f"which reach |y| = {float(np.max(np.abs(y))):.3g} against an output scale sqrt(K) ~ "
                         f"{float(np.sqrt(np.max(np.diagonal(K)))):.3g}; the 1/n expansion does not hold there: "
                         "scale the targets y_train toward the outputs' scale", "y_train")


@float64
def posterior(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0, order: int = 1) -> Posterior:
    """The posterior of the network outputs at ``x_test`` given ``y_train`` at ``x_train`` (module docstring).

    ``x_train`` ``(n_A, n_0)``, ``y_train`` ``(n_A, n_L)`` (or ``(n_A,)`` for one output), ``x_test`` ``(n_B, n_0)``;
    ``noise_var`` = s^2 >= 0 (0: exact conditioning, needs an invertible training kernel). Uses the last layer's
    K, G1 and V (:func:`pdlt.finite_width`), n = n_{L-1}. ``order=2`` adds the O(1/n^2) terms
    (:mod:`pdlt.theory.posterior_nnlo`, from :func:`pdlt.nnlo`'s several-input statistics): at most 4 distinct
    inputs among training and test (repeats are free), plain MLPs with a smooth or scale-invariant activation; for
    the scale-invariant class the distinct inputs must stay away from collinear at every layer (within the
    round-off tolerance :data:`pdlt.theory.nnlo_inputs.ROUND_OFF_TOLERANCE`; with C_b = 0, three or four inputs must
    also be linearly independent); a ``"truncation"`` caveat where the 1/n^2 term is not small against the 1/n
    term.

    >>> import pdlt, numpy as np
    >>> net = pdlt.MLP("linear", (2, 30, 30, 1))
    >>> post = pdlt.posterior(net, [[1.0, 0.0]], [0.5], [[0.8, 0.6]], noise_var=0.1)
    >>> float(np.round(post.mean_infinite[0, 0], 6))   # K_BA (K_AA + s^2)^{-1} y = 0.4 * 0.5 / 0.6
    0.333333
    """
    from .nnlo import check_order

    order = check_order(order)
    prob = posterior_problem(net, x_train, y_train, x_test, noise_var, min_depth=1)
    xa, xb, y, noise_var = prob.x_train, prob.x_test, prob.y_train, prob.noise_var
    nA = xa.shape[0]
    K, G1, V, theory_caveats = last_layer_statistics(net, np.concatenate([xa, xb]))
    roundoff = _check_train_block(K[:nA, :nA], noise_var, net.activation, net.L)
    m0, dm, m_g1, S0, dcov = posterior_expansion(K, G1, V, y, nA, noise_var)
    n = int(net.widths[net.L - 1])
    caveats = tuple(theory_caveats) + truncation_caveats(m0, dm, S0, dcov, n, np.diagonal(K)[nA:], net.L)
    caveats += (roundoff,) if roundoff is not None else ()
    second = {}
    if order == 2:
        second, more = _second_order(net, np.concatenate([xa, xb]), y, nA, noise_var, m0, S0, dm, dcov, n)
        caveats = caveats + more
    emit(caveats)
    return Posterior(mean_infinite=m0, mean_correction=dm, mean_G1=m_g1, cov_infinite=S0, cov_correction=dcov,
                     n=n, noise_var=float(noise_var), caveats=caveats, order=order, **second)


def _second_order(net: MLP, x, y, nA: int, noise_var: float, m0, S0, dm, dcov, n: int):
    """``({mean_correction2, cov_correction2}, caveats)`` for :func:`posterior` with ``order=2``: the several-input
    1/n^2 statistics of the distinct inputs of ``x`` (training then test) and
    :func:`pdlt.theory.posterior_nnlo.posterior_nnlo`; the caveats of those statistics, and a truncation caveat where
    the 1/n^2 term is not small against the 1/n term (that term floored at half the scale :func:`truncation_caveats`
    uses, so that a 1/n term crossing zero, or a posterior pinned at a training input, raises no false alarm)."""
    import warnings

    from .nnlo_inputs import MAX_INPUTS, nnlo_inputs
    from .posterior_nnlo import posterior_nnlo

    uniq, inv = np.unique(x, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    if uniq.shape[0] > MAX_INPUTS:
        raise ParameterError(f"order=2 needs at most {MAX_INPUTS} distinct inputs among x_train and x_test (the "
                             f"several-input 1/n^2 statistics), got {uniq.shape[0]}; use order=1, or fewer points",
                             "order")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PdltWarning)      # kept as caveats below, issued once by posterior
        try:
            th = nnlo_inputs(net, uniq)
        except ParameterError as err:
            if err.setting != "x":
                raise
            raise ParameterError(f"order=2 cannot use these inputs: {err} (the posterior needs all of them at once; "
                                 "use order=1)", "order") from None
    i = net.L - 1
    p2 = posterior_nnlo(th.K[i], th.G1[i], th.V[i], th.G2[i], th.V1[i], th.U[i], n, y, nA, noise_var, index=inv)
    check_target_range((p2.mean_correction2, p2.cov_correction2), y, th.K[i], "1/n^2", noise_var)
    scale_m, scale_c = posterior_scales(m0, S0, np.diagonal(th.K[i])[inv[nA:]])
    r_mean = scaled_ratio(np.abs(p2.mean_correction2) / n**2,
                          np.maximum(np.abs(dm) / n, TRUNCATION_THRESHOLD * scale_m))
    r_cov = scaled_ratio(np.abs(p2.cov_correction2) / n**2,
                         np.maximum(np.abs(dcov) / n, TRUNCATION_THRESHOLD * scale_c))
    r = float(max(np.max(r_mean), np.max(r_cov)))
    caveats = tuple(th.caveats)
    if r > TRUNCATION_THRESHOLD:
        caveats += (Caveat("truncation", f"posterior: the 1/n^2 term is {r:.3g} of the 1/n term at layer l = {net.L} "
                                         f"(threshold {TRUNCATION_THRESHOLD}): the 1/n series is not controlled there "
                                         "and the orders beyond 1/n^2 may be as large; widen the network", net.L, r),)
    return {"mean_correction2": p2.mean_correction2, "cov_correction2": p2.cov_correction2}, caveats


def posterior_mean_closed_form(K, G1, V, n: int, y, nA: int, noise_var: float = 0.0) -> np.ndarray:
    """derivations/README.md §11.2 (after Yaida 2019): the posterior mean to O(1/n) in closed form, an independent
    check of :func:`posterior`. ``K, G1`` ``(d, d)``, ``V`` ``(d, d, d, d)`` of the last layer on the training
    inputs (first ``nA``) then the test inputs; ``y`` ``(nA, n_L)``. Returns ``(n_B, n_L)``.

    ``E[z_{i;b} | y] = sum G_bA Gt^{AA'} y_{i;A'} + (1/(2n)) sum Vh_{(b A1)(A2 A3)} [w_{i;A1} sum_j w_{j;A2} w_{j;A3}
    - 2 Gt^{A1A2} w_{i;A3} - n_L Gt^{A2A3} w_{i;A1}]`` with ``G = K + G1/n``, ``Gt = G_AA + s^2 1``,
    ``w = Gt^{-1} y`` and ``Vh_{(bA1)(A2A3)} = V_{(bA1)(A2A3)} - G_bA4 Gt^{A4A5} V_{(A5A1)(A2A3)}``.
    """
    y = np.asarray(y, dtype=np.float64)
    nL = y.shape[1]
    G = K + G1 / n
    A, B = slice(0, nA), slice(nA, K.shape[0])
    Gt_inv = np.linalg.inv(G[A, A] + noise_var * np.eye(nA))
    w = Gt_inv @ y
    lead = G[B, A] @ w
    Vh = V[B, A][:, :, A, A] - np.einsum("bc,ce,eijk->bijk", G[B, A], Gt_inv, V[A, A][:, :, A, A])
    ww = w @ w.T  # sum_j w_{j;A2} w_{j;A3}
    t1 = np.einsum("bxyz,xi,yz->bi", Vh, w, ww)
    t2 = -2 * np.einsum("bxyz,xy,zi->bi", Vh, Gt_inv, w)
    t3 = -nL * np.einsum("bxyz,yz,xi->bi", Vh, Gt_inv, w)
    return lead + (t1 + t2 + t3) / (2 * n)


@dataclass(frozen=True)
class EffectiveAction:
    """The output distribution on a dataset as an effective action (PDLT ch. 4; derivations/README.md section 11.3):

    ``p(z) ~ exp(-S[z])``, ``S = (1/2) sum_i sum_ab g^{ab} z_{i;a} z_{i;b} - (1/8) sum_ij sum_abcd v^{(ab)(cd)}
    z_{i;a} z_{i;b} z_{j;c} z_{j;d} + O(1/n^2)``.

    * ``quartic`` = ``v`` (d, d, d, d): ``V/n`` with all four indices raised by ``K^{-1}`` (the coupling between
      datapoints);
    * ``quadratic`` = ``g^{ab}`` (d, d): the inverse of ``K + G1/n - (1/(2n)) sum_cd K^{cd} [n_L V_(ab)(cd) +
      2 V_(ac)(bd)]``. The subtraction is the quartic vertex's own O(1/n) contribution to ``<z_{i;a} z_{i;b}>``
      (one self-contraction, times 1/8: a and b on one pair of the vertex, the other pair closed on any of the
      n_L output neurons, 4 n_L terms; a and b on different pairs, 8 terms; for one input this is PDLT's
      ``(n_L/2 + 1)`` factor), so the action reproduces ``E[z_{i;a} z_{i;b}] = K + G1/n`` and the connected
      four-point functions ``V/n``.

    ``vacuum`` holds the architecture-only data (activation, widths, C_W, C_b per layer): it does not depend on the
    dataset, whereas both couplings do (the particles)."""

    x: np.ndarray
    quadratic: np.ndarray
    quartic: np.ndarray
    vacuum: dict


def effective_action(net: MLP, x) -> EffectiveAction:
    """Quadratic and quartic couplings of the last layer's outputs on the inputs ``x`` ``(d, n_0)``."""
    from .finite_width import finite_width

    if isinstance(net, MLP) and net.residual:
        raise ParameterError("effective_action: net has residual steps (gamma != 0 or xi != 1), whose outputs have odd "
                             "cumulants at order 1/n (cubic couplings) that this action omits; use gamma = 0, xi = 1",
                             "net")
    th = finite_width(net, x)
    L = net.L
    n = net.widths[L - 1]
    K, G1, V = th.K[L - 1], th.G1[L - 1], th.V[L - 1]
    ev = np.linalg.eigvalsh(K)
    if not_invertible(ev):
        raise SingularKernelError("the output kernel of these inputs is singular (duplicate inputs?): the effective "
                                  "action needs K^{-1}; drop duplicates or use pdlt.delta_finite_width")
    Ki = np.linalg.inv(K)
    quartic = np.einsum("ae,bf,cg,dh,efgh->abcd", Ki, Ki, Ki, Ki, V) / n
    n_out = net.widths[-1]
    self_energy = (n_out * np.einsum("cd,abcd->ab", Ki, V) + 2 * np.einsum("cd,acbd->ab", Ki, V)) / (2 * n)
    return EffectiveAction(x=th.x, quadratic=np.linalg.inv(K + G1 / n - self_energy), quartic=quartic,
                           vacuum={"activation": net.activation.name, "C_W": net.C_W, "C_b": net.C_b,
                                   "widths": net.widths})

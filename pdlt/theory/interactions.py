r"""Many-body interactions of datapoints: what the vertex V adds to the posterior mean beyond linear kernel regression
(derivations/README.md §20.5).

At infinite width the posterior mean is linear in the targets, ``m = K_BA (K_AA + s^2)^{-1} y``: influences
superpose, and changing two targets changes the prediction by the sum of the two changes. At O(1/n) the mean is an
odd polynomial of degree 3 in the targets (one output; the law of the outputs is symmetric under ``z -> -z``),

    m_b(y) = m0_b(y) + (1/n) [ sum_a L_ba y_a + (1/6) sum_{a,c,e} T_{b;ace} y_a y_c y_e ] + O(1/n^2),

and the cubic term is the non-additive part. ``T`` (``three_body``) is independent of the targets; it comes from
the V terms alone (the G1 term is linear in y). Its entries are couplings of the particle sets ``{a, c, e}``: one
particle with itself (``a = c = e``), two particles (two equal indices) and three distinct particles, each as seen at
test particle ``b``. The ``pair_coupling`` ``d^2 m_b / d y_a d y_c = (1/n) sum_e T_{b;ace} y_e`` at the observed
targets is how much particle ``a``'s influence on ``b`` changes when ``c``'s target changes: zero at infinite width,
and the edge weight of the dataset's interaction graph.

``T`` is read off the exact 1/n coefficient by polarization: for a cubic form,
``T(u, v, w) = (1/8) sum_{eps in {+-1}^3} eps_1 eps_2 eps_3 m1(eps_1 u + eps_2 v + eps_3 w)``, where the linear part
cancels; with ``u, v, w`` unit steps along three particles' targets this is exact for any step.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from .._x64 import float64
from ..architecture import MLP, not_invertible, posterior_problem, singular_training_kernel
from ..errors import Caveat, ParameterError, TruncationWarning, emit

__all__ = ["Interactions", "interactions"]


@dataclass(frozen=True)
class Interactions:
    """The target expansion of the O(1/n) posterior mean (module docstring), one output: ``linear`` ``(n_B, n_A)``
    (``L``), ``three_body`` ``(n_B, n_A, n_A, n_A)`` (``T``, symmetric in its last three indices), both 1/n
    coefficients (``n = n_{L-1}``); ``y`` ``(n_A,)`` the observed targets, ``kernel_response`` ``(n_B, n_A)`` the
    infinite-width response ``K_BA (K_AA + s^2)^{-1}``."""

    linear: np.ndarray
    three_body: np.ndarray
    kernel_response: np.ndarray
    y: np.ndarray
    n: int
    noise_var: float
    caveats: tuple[Caveat, ...] = ()

    @property
    def pair_coupling(self) -> np.ndarray:
        """``d^2 m_b / d y_a d y_c`` at the observed targets ``(n_B, n_A, n_A)``, to O(1/n) (0 at infinite width)."""
        return np.einsum("bace,e->bac", self.three_body, self.y) / self.n

    def bodies(self) -> np.ndarray:
        """The cubic term's contribution to the mean at the observed targets split by the number of distinct
        particles: ``(n_B, 3)``, columns one-, two- and three-particle terms, in units of the mean (divided by n)."""
        nA = self.y.size
        out = np.zeros((self.three_body.shape[0], 3))
        for a, c, e in itertools.product(range(nA), repeat=3):
            k = len({a, c, e}) - 1
            out[:, k] += self.three_body[:, a, c, e] * self.y[a] * self.y[c] * self.y[e] / 6.0
        return out / self.n

    def graph(self, test: int | None = None) -> np.ndarray:
        """Edge weights ``(n_A, n_A)`` of the interaction graph: ``|pair_coupling|`` at test particle ``test``, or
        the largest over the test particles; the diagonal (a particle with itself) is kept."""
        pc = np.abs(self.pair_coupling)
        return pc.max(axis=0) if test is None else pc[test]


@float64
def interactions(net: MLP, x_train, y_train, x_test, noise_var: float = 0.0) -> Interactions:
    """The many-body expansion of the O(1/n) posterior mean in the targets (module docstring): one output, the same
    arguments as :func:`pdlt.posterior`; the O(1/n) theory on all ``n_A + n_B`` inputs (keep them <= ~10).

    >>> import pdlt, numpy as np
    >>> it = pdlt.interactions(pdlt.MLP("tanh", (2, 16, 16, 1)), [[1, 0], [0, 1]], [0.5, -0.5], [[0.6, 0.8]], 0.1)
    >>> it.three_body.shape, bool(np.allclose(it.three_body, it.three_body.transpose(0, 2, 1, 3)))
    ((1, 2, 2, 2), True)
    """
    from ..conditioning import condition
    from .bayes import last_layer_statistics, posterior_expansion
    from .influence import target_response, target_step

    prob = posterior_problem(net, x_train, y_train, x_test, noise_var, min_depth=1)
    xa, xb, y, s2 = prob.x_train, prob.x_test, prob.y_train, prob.noise_var
    if y.shape[1] != 1:
        raise ParameterError(f"interactions are defined for one output (n_L = 1), got n_L = {y.shape[1]}; cut the "
                             "network to one output", "y_train")
    nA = xa.shape[0]
    x = np.concatenate([xa, xb])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)          # collected, issued once below
        K, G1, V, caveats = last_layer_statistics(net, x)
    cond = condition(K, y, nA, s2)
    if not_invertible(cond.eigenvalues):
        ev = cond.eigenvalues
        raise singular_training_kernel(f"infinite-width kernel, eigenvalues {ev[0]:.3g} .. {ev[-1]:.3g}", s2)
    lin, _ = target_response(K, G1, V, np.zeros_like(y), nA, s2)
    h = target_step(y, K)

    def m1(yy):
        return posterior_expansion(K, G1, V, yy[:, None], nA, s2)[1][:, 0]

    nB = x.shape[0] - nA
    T = np.zeros((nB, nA, nA, nA))
    signs = [s for s in itertools.product((1.0, -1.0), repeat=3) if s[0] > 0]   # m1 is odd: half the signs suffice
    for a, c, e in itertools.combinations_with_replacement(range(nA), 3):
        acc = np.zeros(nB)
        for s in signs:
            yy = np.zeros(nA)
            yy[a] += s[0] * h
            yy[c] += s[1] * h
            yy[e] += s[2] * h
            acc += 2.0 * s[0] * s[1] * s[2] * m1(yy)
        val = acc / (8.0 * h**3)
        for p in set(itertools.permutations((a, c, e))):
            T[(slice(None),) + p] = val
    emit(caveats)
    n = int(net.widths[net.L - 1])
    return Interactions(linear=lin[:, 0, :, 0], three_body=T, kernel_response=cond.W, y=y[:, 0].copy(), n=n,
                        noise_var=float(s2), caveats=tuple(caveats))

r"""The table of observables: one record per quantity that the theory predicts and Monte Carlo measures.

Every consumer (the estimators, :class:`pdlt.MCResult`, :func:`pdlt.compare`, sweeps, plots, the CLI's JSON,
LaTeX tables) reads this table, and the theory (:class:`pdlt.FiniteWidth`) and the Monte Carlo
(:class:`pdlt.MCResult`) answer to the same names: ``getattr(th, name)(l)`` is the prediction for layer l with
shape ``(d,) * rank``, ``getattr(mc, name)`` the :class:`~pdlt.montecarlo.Estimate` of all layers with shape
``(L,) + (d,) * rank`` (layer l at index l - 1).

Definitions (PDLT conventions: ``z_{i;a}`` is neuron i of layer l at input a, ``n = n_{l-1}`` the width of the
layer before, ``G_ab = E[z_{i;a} z_{i;b}]``; i != j are distinct neurons of one network):

* ``two_point``                   ``(L, d, d)``:       ``G_ab``; theory ``K_ab + G1_ab / n``;
* ``four_point``                  ``(L, d, d, d, d)``: ``E[z_ia z_ib z_jc z_jd] - G_ab G_cd`` (i != j); theory
  ``V_(ab)(cd) / n``;
* ``four_point_single``           ``(L, d, d, d, d)``: ``E[z_a z_b z_c z_d] - G_ab G_cd - G_ac G_bd - G_ad G_bc`` (one
  neuron); theory ``(V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc)) / n``;
* ``six_point_single``            ``(L, d)``: the sixth cumulant of one neuron's ``z_a``; theory 0 (its leading
  term is of order 1/n^2, beyond the O(1/n) truncation);
* ``vertex``                      ``(L, d, d, d, d)``: ``n * four_point``; theory ``V_(ab)(cd)``;
* ``normalized_vertex``           ``(L, d)``: ``four_point_aaaa / G_aa^2``; theory ``V_(aa)(aa) / (n K_aa^2)``;
* ``kurtosis``                    ``(L, d)``: ``four_point_single_aaaa / G_aa^2``; theory ``3 V_(aa)(aa) / (n K_aa^2)``;
* ``normalized_six_point_single`` ``(L, d)``: ``six_point_single_a / G_aa^3``; theory 0 (order 1/n^2).

Kinds: ``"raw"`` observables are estimated directly from per-network statistics
(:mod:`pdlt.montecarlo.estimators`); ``"derived"`` ones are a raw one times the previous layer's width
(``vertex``); ``"normalized"`` ones are scale-free ratios, representable at any depth where the raw values leave
float64's range. ``scale_power`` p says how an observable scales under ``z -> s^(1/2) z``: as ``s^p``.
``order`` is the power of 1/n of its leading non-vanishing term: the O(1/n) theory tests observables of order
<= 1 and predicts 0 for the six-point ones. ``undefined_when == "width1"`` marks the distinct-neuron observables,
which have no value for a layer of width 1 (no pair i != j).

**The NTK family** (:data:`NTK_OBSERVABLES`; theory :meth:`pdlt.theory.ntk.NTK.prediction`, Monte Carlo
:func:`pdlt.montecarlo.sample_ntk`; tensor conventions in :mod:`pdlt.theory.ntk_statistics`): ``ntk_mean``
``(L, d, d)`` = ``E[H_ii;ab]`` (theory ``Theta + Theta1/n``); the n-scaled NTK, dNTK and ddNTK statistics ``A``,
``B``, ``D``, ``F``, ``P``, ``Q``, ``R``, ``S``, ``T``, ``U`` ``(L, d, d, d, d)`` (symmetry ``"none"``: every entry
is listed); ``ntk_variance`` ``(L, d)`` = ``Var(H_ii;aa)`` (theory ``(A + 2B)/n``); the scale-free
``ntk_relative_variance`` (over ``Theta^2``) and ``dntk_relative`` = ``E[dH_iii z_i]/Theta^2`` (theory
``(P + 2Q)/(n Theta^2)``).

**Trained networks** (:data:`TRAINING_OBSERVABLES`; theory :func:`pdlt.train_prediction`, Monte Carlo
:func:`pdlt.sample_trained`): statistics of the output layer after training, not per layer. ``trained_mean``
``(N_T, n_L)`` = ``E[z_{i;d}(t)]`` (theory: the frozen-NTK mean plus its O(1/n) correction); ``feature_shift``
``(N_T, n_L)`` = ``E[z_d(t) - zf_d(t)]`` with ``zf`` each network's own frozen-NTK prediction (theory: the dNTK and
ddNTK part, O(1/n)); ``trained_cov`` ``(N_T, N_T)`` (theory: infinite width); ``ntk_change`` ``(N_A, N_A)`` =
``E[H_ii(t) - H_ii(0)]`` on the training inputs, averaged over the outputs i (O(1/n)).

Importing this module imports neither JAX nor sympy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from string import Template
from types import MappingProxyType

from .errors import ParameterError

__all__ = ["Observable", "OBSERVABLES", "NTK_OBSERVABLES", "TrainingObservable", "TRAINING_OBSERVABLES", "get", "names", "UNDEFINED_REASON", "KINDS", "SYMMETRIES",
           "FAMILIES"]

KINDS = ("raw", "derived", "normalized")
#: index symmetry of one layer's entries, which decides the distinct entries a table lists
SYMMETRIES = ("pair", "pair_of_pairs", "total", "diagonal", "none")
#: what an observable is a statistic of: the preactivations (theory :class:`pdlt.FiniteWidth`, Monte Carlo
#: :func:`pdlt.sample`) or the neural tangent kernel and its derivatives (theory :class:`pdlt.theory.ntk.NTK`,
#: Monte Carlo :func:`pdlt.montecarlo.sample_ntk`)
FAMILIES = ("preactivation", "ntk")
#: why a ``"width1"`` observable has no value at a layer of width 1
UNDEFINED_REASON = "undefined for a width-1 layer (the distinct-neuron four-point function needs two neurons i != j)"

_LETTERS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class Observable:
    """One observable (module docstring).

    * ``name``: the accessor on both :class:`pdlt.FiniteWidth` (a method of l) and :class:`pdlt.MCResult` (an
      :class:`~pdlt.montecarlo.Estimate` of all layers);
    * ``kind``: ``"raw"``, ``"derived"`` (``n_{l-1}`` times ``base``) or ``"normalized"`` (scale-free);
    * ``rank``: input indices per layer, one layer's shape is ``(d,) * rank``;
    * ``symmetry``: ``"pair"`` (ab = ba), ``"pair_of_pairs"`` (within each pair and between the pairs),
      ``"total"`` (any permutation) or ``"diagonal"`` (one index per input);
    * ``scale_power``: the power p of the two-point scale it carries (``~ G^p``; 0 for normalized ones);
    * ``order``: the power of 1/n of its leading non-vanishing term;
    * ``tex`` / ``plain`` / ``prediction``: templates of the LaTeX math label (no dollars), the plain-text label
      and the O(1/n) theory (LaTeX math) in which ``$a $b $c $d`` stand for the input indices (:meth:`entry_tex`,
      :meth:`entry_plain`, :meth:`entry_prediction_tex`; the properties give them with generic letters);
    * ``estimator``: how the Monte Carlo estimate is formed from the per-network statistics;
    * ``normalized``: the scale-free companion to use when the raw value leaves float64's range ("" if none);
    * ``undefined_when``: ``"width1"`` for distinct-neuron observables, else "";
    * ``base``: for a derived observable, the raw one it multiplies by ``n_{l-1}``;
    * ``description``: one line for tables and help texts;
    * ``family``: ``"preactivation"`` or ``"ntk"`` (:data:`FAMILIES`); an NTK observable's theory is
      ``ntk.prediction(name, l)`` of a :class:`pdlt.theory.ntk.NTK`.
    """

    name: str
    kind: str
    rank: int
    symmetry: str
    scale_power: int
    order: int
    tex: str
    plain: str
    prediction: str
    estimator: str
    normalized: str = ""
    undefined_when: str = ""
    base: str = ""
    description: str = ""
    family: str = "preactivation"

    @property
    def theory(self) -> str:
        """The theory accessor: the same name (``getattr(finite_width, obs.theory)(l)``)."""
        return self.name

    def _letters(self, idx) -> dict:
        idx = _LETTERS[: self.rank] if idx is None else tuple(str(int(i)) for i in idx)
        if len(idx) != self.rank:
            raise ParameterError(f"{self.name} has {self.rank} input indices, got {len(idx)}", "inputs")
        return dict(zip(_LETTERS, idx))

    def entry_tex(self, idx=None) -> str:
        """LaTeX math (no dollars) for the entry ``idx`` (integers; None: the generic letters a, b, ...)."""
        return Template(self.tex).substitute(self._letters(idx))

    def entry_plain(self, idx=None) -> str:
        """Plain text for the entry ``idx`` (None: the generic letters)."""
        return Template(self.plain).substitute(self._letters(idx))

    def entry_prediction_tex(self, idx=None) -> str:
        """The O(1/n) theory of the entry ``idx`` as LaTeX math (no dollars; None: generic letters)."""
        return Template(self.prediction).substitute(self._letters(idx))

    @property
    def prediction_tex(self) -> str:
        return self.entry_prediction_tex()

    @property
    def label_tex(self) -> str:
        """LaTeX math (no dollars) with generic input indices."""
        return self.entry_tex()

    @property
    def label_plain(self) -> str:
        return self.entry_plain()

    def shape(self, d: int, L: int | None = None) -> tuple:
        """One layer's shape ``(d,) * rank``, or with ``L`` all layers', ``(L,) + (d,) * rank``."""
        one = (int(d),) * self.rank
        return one if L is None else (int(L),) + one

    def index_sets(self, d: int) -> list[tuple]:
        """The distinct entries of one layer under the observable's symmetry, sorted."""
        pairs = list(itertools.combinations_with_replacement(range(d), 2))
        if self.symmetry == "pair":
            return pairs
        if self.symmetry == "pair_of_pairs":
            return [p + q for p, q in itertools.combinations_with_replacement(pairs, 2)]
        if self.symmetry == "total":
            return list(itertools.combinations_with_replacement(range(d), 4))
        if self.symmetry == "none":
            return list(itertools.product(range(d), repeat=self.rank))
        return [(a,) for a in range(d)]

    def undefined_at(self, widths) -> tuple[int, ...]:
        """Layers l (1..L) where the observable has no value, ``widths = (n_1..n_L)`` of the measured layers."""
        if self.undefined_when != "width1":
            return ()
        return tuple(l for l, n in enumerate(widths, start=1) if int(n) < 2)


_TABLE = (
    Observable(
        "two_point", "raw", 2, "pair", 1, 0,
        tex=r"E[z_{$a} z_{$b}]", plain="E[z_$a z_$b]",
        prediction=r"K_{$a$b} + G^{\{1\}}_{$a$b}/n_{\ell-1}",
        estimator="mean over networks of t2_ab = (1/n) sum_i z_ia z_ib, or of its conditional expectation G^_ab "
                  "given the layer's metric (markov sampler after a dense step) (linear: the plain mean)",
        description="two-point function G_ab = E[z_ia z_ib] (one neuron)"),
    Observable(
        "four_point", "raw", 4, "pair_of_pairs", 2, 1,
        tex=r"\langle z_{i$a}z_{i$b}z_{j$c}z_{j$d}\rangle_c", plain="<z_i$a z_i$b z_j$c z_j$d>_c",
        prediction=r"V_{($a$b)($c$d)}/n_{\ell-1}",
        estimator="(n E[t2_ab t2_cd] - E[m4_abcd])/(n - 1) - G_ab G_cd: all pairs i != j of each network "
                  "(markov after a dense step: the statistics' conditional expectations given the metric G^, so "
                  "Cov(G^_ab, G^_cd)), jackknifed (quadratic in the means)",
        normalized="normalized_vertex", undefined_when="width1",
        description="connected four-point function of distinct neurons i != j"),
    Observable(
        "four_point_single", "raw", 4, "total", 2, 1,
        tex=r"\langle z_{$a} z_{$b} z_{$c} z_{$d}\rangle_c", plain="<z_$a z_$b z_$c z_$d>_c",
        prediction=r"(V_{($a$b)($c$d)} + V_{($a$c)($b$d)} + V_{($a$d)($b$c)})/n_{\ell-1}",
        estimator="E[m4_abcd] - G_ab G_cd - G_ac G_bd - G_ad G_bc, m4 = (1/n) sum_i z_ia z_ib z_ic z_id or its "
                  "conditional expectation given the metric (markov after a dense step), jackknifed",
        normalized="kurtosis",
        description="fourth cumulant of one neuron"),
    Observable(
        "six_point_single", "raw", 1, "diagonal", 3, 2,
        tex=r"\langle z_{$a}^6\rangle_c", plain="<z_$a^6>_c",
        prediction=r"0 + O(1/n^2)",
        estimator="mu6 - 15 mu4 mu2 + 30 mu2^3 from the neuron-averaged moments of z_a, or their conditional "
                  "expectations given the metric (markov after a dense step; odd moments vanish by symmetry), "
                  "jackknifed (bias O(1/N^2))",
        normalized="normalized_six_point_single",
        description="sixth cumulant of one neuron (leading term of order 1/n^2)"),
    Observable(
        "vertex", "derived", 4, "pair_of_pairs", 2, 0,
        tex=r"n_{\ell-1}\langle z_{i$a}z_{i$b}z_{j$c}z_{j$d}\rangle_c", plain="n_(l-1) <z_i$a z_i$b z_j$c z_j$d>_c",
        prediction=r"V^{(\ell)}_{($a$b)($c$d)}",
        estimator="n_{l-1} times the four_point estimate",
        normalized="normalized_vertex", undefined_when="width1", base="four_point",
        description="the four-point vertex V^(l) = n_(l-1) four_point (to O(1/n))"),
    Observable(
        "normalized_vertex", "normalized", 1, "diagonal", 0, 1,
        tex=r"\langle z_{i$a}z_{i$a}z_{j$a}z_{j$a}\rangle_c/G_{$a$a}^2", plain="<z_i$a z_i$a z_j$a z_j$a>_c/G_$a$a^2",
        prediction=r"V_{($a$a)($a$a)}/(n_{\ell-1}K_{$a$a}^2)",
        estimator="four_point_aaaa / G_aa^2 of the means, jackknifed (0 where G_aa = 0)",
        undefined_when="width1",
        description="distinct-neuron four-point function over the squared variance (scale-free)"),
    Observable(
        "kurtosis", "normalized", 1, "diagonal", 0, 1,
        tex=r"\langle z_{$a}^4\rangle_c/G_{$a$a}^2", plain="<z_$a^4>_c/G_$a$a^2",
        prediction=r"3V_{($a$a)($a$a)}/(n_{\ell-1}K_{$a$a}^2)",
        estimator="four_point_single_aaaa / G_aa^2 of the means, jackknifed (0 where G_aa = 0)",
        description="excess kurtosis of one neuron (scale-free)"),
    Observable(
        "normalized_six_point_single", "normalized", 1, "diagonal", 0, 2,
        tex=r"\langle z_{$a}^6\rangle_c/G_{$a$a}^3", plain="<z_$a^6>_c/G_$a$a^3",
        prediction=r"0 + O(1/n^2)",
        estimator="six_point_single_a / G_aa^3 of the means, jackknifed (0 where G_aa = 0)",
        description="sixth cumulant of one neuron over the cubed variance (scale-free)"),
)


def _ntk_tensor(name: str, tex: str, plain: str, what: str) -> Observable:
    return Observable(name, "derived", 4, "none", 0, 0, tex=tex, plain=plain, prediction=f"{name}_{{$a$b$c$d}}",
                      estimator=f"n_(l-1) times the mean over networks of {plain.split(' ', 1)[1]}, distinct neurons "
                                "i != j of each network, jackknifed", description=what, family="ntk")


# The NTK family (PDLT ch. 8-11; derivations/README.md sections 16-18). Index conventions: every statistic at layer
# l is normalized by n = n_{l-1}; H_{ij;ab} is the NTK of neurons i, j on inputs a, b, dH_{i0i1i2} the dNTK
# D^2 z_{i0}[v_{i1}, v_{i2}] and ddI, ddII the ddNTKs (v_i = Lambda grad z_i); i != j are distinct neurons.
_NTK_TABLE = (
    Observable(
        "ntk_mean", "raw", 2, "pair", 0, 0,
        tex=r"E[\hat H_{ii;$a$b}]", plain="E[H_ii;$a$b]",
        prediction=r"\Theta_{$a$b} + \Theta^{\{1\}}_{$a$b}/n_{\ell-1}",
        estimator="mean over networks of (1/n) sum_i H_ii;ab given the layers below (Rao-Blackwellized)",
        description="mean NTK of one neuron: the frozen NTK Theta plus its 1/n correction", family="ntk"),
    _ntk_tensor("A", r"n_{\ell-1}\mathrm{Cov}(\hat H_{ii;$a$b},\hat H_{jj;$c$d})", "n_(l-1) Cov(H_ii;$a$b, H_jj;$c$d)",
                "NTK fluctuation A (diagonal neurons)"),
    _ntk_tensor("B", r"n_{\ell-1}E[\hat H_{ij;$a$c}\hat H_{ij;$b$d}]", "n_(l-1) E[H_ij;$a$c H_ij;$b$d]",
                "NTK fluctuation B (off-diagonal neurons)"),
    _ntk_tensor("D", r"n_{\ell-1}\mathrm{Cov}(\hat H_{ii;$a$b},z_{j$c}z_{j$d})", "n_(l-1) Cov(H_ii;$a$b, z_j$c z_j$d)",
                "NTK-preactivation cross-correlation D"),
    _ntk_tensor("F", r"n_{\ell-1}E[\hat H_{ij;$a$c}z_{i$b}z_{j$d}]", "n_(l-1) E[H_ij;$a$c z_i$b z_j$d]",
                "NTK-preactivation cross-correlation F"),
    _ntk_tensor("P", r"n_{\ell-1}E[\widehat{dH}_{ijj;$a$b$c}z_{i$d}]", "n_(l-1) E[dH_ijj;$a$b$c z_i$d]",
                "dNTK-preactivation correlation P"),
    _ntk_tensor("Q", r"n_{\ell-1}E[\widehat{dH}_{iij;$a$b$c}z_{j$d}]", "n_(l-1) E[dH_iij;$a$b$c z_j$d]",
                "dNTK-preactivation correlation Q"),
    _ntk_tensor("R", r"n_{\ell-1}E[\widehat{ddH}^{\mathrm{I}}_{iijj;$a$b$c$d}]", "n_(l-1) E[ddI_iijj;$a$b$c$d]",
                "mean ddNTK-I, R"),
    _ntk_tensor("S", r"n_{\ell-1}E[\widehat{ddH}^{\mathrm{II}}_{iijj;$a$b$c$d}]", "n_(l-1) E[ddII_iijj;$a$b$c$d]",
                "mean ddNTK-II, S"),
    _ntk_tensor("T", r"n_{\ell-1}E[\widehat{ddH}^{\mathrm{II}}_{ijij;$a$d$b$c}]", "n_(l-1) E[ddII_ijij;$a$d$b$c]",
                "mean ddNTK-II, T"),
    _ntk_tensor("U", r"n_{\ell-1}E[\widehat{ddH}^{\mathrm{II}}_{ijji;$a$c$d$b}]", "n_(l-1) E[ddII_ijji;$a$c$d$b]",
                "mean ddNTK-II, U"),
    Observable(
        "ntk_variance", "raw", 1, "diagonal", 0, 1,
        tex=r"\mathrm{Var}(\hat H_{ii;$a$a})", plain="Var(H_ii;$a$a)",
        prediction=r"(A_{$a$a$a$a} + 2B_{$a$a$a$a})/n_{\ell-1}",
        estimator="mean over neurons of H_ii;aa^2 minus the squared mean over neurons of H_ii;aa, jackknifed (one "
                  "neuron, measured directly: independent of the A, B decomposition its theory uses)",
        description="variance of one neuron's NTK", family="ntk"),
    Observable(
        "ntk_relative_variance", "normalized", 1, "diagonal", 0, 1,
        tex=r"\mathrm{Var}(\hat H_{ii;$a$a})/E[\hat H_{ii;$a$a}]^2", plain="Var(H_ii;$a$a)/E[H_ii;$a$a]^2",
        prediction=r"(A_{$a$a$a$a} + 2B_{$a$a$a$a})/(n_{\ell-1}\Theta_{$a$a}^2)",
        estimator="ntk_variance / ntk_mean^2 of the means, jackknifed",
        description="relative variance of one neuron's NTK (scale-free)", family="ntk"),
    Observable(
        "dntk_relative", "normalized", 1, "diagonal", 0, 1,
        tex=r"E[\widehat{dH}_{iii;$a$a$a}z_{i$a}]/E[\hat H_{ii;$a$a}]^2", plain="E[dH_iii;$a$a$a z_i$a]/E[H_ii;$a$a]^2",
        prediction=r"(P_{$a$a$a$a} + 2Q_{$a$a$a$a})/(n_{\ell-1}\Theta_{$a$a}^2)",
        estimator="(P_aaaa + 2 Q_aaaa)/(n_(l-1) ntk_mean^2) from the distinct-neuron estimators, jackknifed",
        description="relative size of the dNTK: the NTK's change in one gradient step per unit error, over the NTK",
        family="ntk"),
)

#: name -> :class:`Observable` of the preactivation family, in the order above (read-only)
OBSERVABLES = MappingProxyType({o.name: o for o in _TABLE})
#: name -> :class:`Observable` of the NTK family (read-only)
NTK_OBSERVABLES = MappingProxyType({o.name: o for o in _NTK_TABLE})


def get(name) -> Observable:
    """The record of ``name`` (either family); :class:`~pdlt.errors.ParameterError` listing the valid names
    otherwise."""
    obs = (OBSERVABLES.get(name) or NTK_OBSERVABLES.get(name)) if isinstance(name, str) else None
    if obs is None:
        raise ParameterError(f"unknown observable {name!r}; valid names: {', '.join(OBSERVABLES)} (preactivations), "
                             f"{', '.join(NTK_OBSERVABLES)} (NTK)", "quantity")
    return obs


def names(*kinds: str, max_order: int | None = None, family: str = "preactivation") -> tuple[str, ...]:
    """Names of the given kinds (all kinds when none is given) of one ``family``, in table order; ``max_order``
    keeps those whose leading term is at most of that order in 1/n (1: what the O(1/n) theory predicts)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown observable kind(s) {bad}; valid kinds: {', '.join(KINDS)}", "kinds")
    if family not in FAMILIES:
        raise ParameterError(f"unknown observable family {family!r}; valid families: {', '.join(FAMILIES)}", "family")
    if max_order is not None:
        from .validation import check_int

        max_order = check_int(max_order, "max_order", minimum=0)
    table = _TABLE if family == "preactivation" else _NTK_TABLE
    return tuple(o.name for o in table
                 if (not kinds or o.kind in kinds) and (max_order is None or o.order <= max_order))



@dataclass(frozen=True)
class TrainingObservable:
    """A statistic of trained networks (module docstring): ``name`` (the accessor on the Monte Carlo result and
    in :func:`pdlt.comparison.training_prediction`), LaTeX ``tex`` and ``plain`` labels, and ``what`` it is."""

    name: str
    tex: str
    plain: str
    what: str


TRAINING_OBSERVABLES = MappingProxyType({o.name: o for o in (
    TrainingObservable("trained_mean", r"\mathbb{E}\,z_{i;\delta}(t)", "E z(t)", "mean trained output at a test input"),
    TrainingObservable("feature_shift", r"\mathbb{E}[z_{\delta}(t)-z^{\mathrm{frozen}}_{\delta}(t)]", "E[z - z_frozen]",
                       "trained output minus the network's own frozen-NTK prediction (dNTK and ddNTK effect)"),
    TrainingObservable("trained_cov", r"\mathrm{Cov}[z_{\delta_1}(t),z_{\delta_2}(t)]", "Cov z(t)",
                       "covariance of trained outputs over initializations"),
    TrainingObservable("ntk_change", r"\mathbb{E}[H_{\alpha_1\alpha_2}(t)-H_{\alpha_1\alpha_2}(0)]", "E[H(t) - H(0)]",
                       "mean change of the NTK during training, on the training inputs, averaged over the outputs"),
)})

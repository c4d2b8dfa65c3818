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

Importing this module imports neither JAX nor sympy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from string import Template
from types import MappingProxyType

from .errors import ParameterError

__all__ = ["Observable", "OBSERVABLES", "get", "names", "UNDEFINED_REASON", "KINDS", "SYMMETRIES"]

KINDS = ("raw", "derived", "normalized")
#: index symmetry of one layer's entries, which decides the distinct entries a table lists
SYMMETRIES = ("pair", "pair_of_pairs", "total", "diagonal")
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
    * ``description``: one line for tables and help texts.
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
        estimator="mean over networks of t2_ab = (1/n) sum_i z_ia z_ib (linear: the plain mean)",
        description="two-point function G_ab = E[z_ia z_ib] (one neuron)"),
    Observable(
        "four_point", "raw", 4, "pair_of_pairs", 2, 1,
        tex=r"\langle z_{i$a}z_{i$b}z_{j$c}z_{j$d}\rangle_c", plain="<z_i$a z_i$b z_j$c z_j$d>_c",
        prediction=r"V_{($a$b)($c$d)}/n_{\ell-1}",
        estimator="(n E[t2_ab t2_cd] - E[m4_abcd])/(n - 1) - G_ab G_cd: all pairs i != j of each network, "
                  "jackknifed (quadratic in the means)",
        normalized="normalized_vertex", undefined_when="width1",
        description="connected four-point function of distinct neurons i != j"),
    Observable(
        "four_point_single", "raw", 4, "total", 2, 1,
        tex=r"\langle z_{$a} z_{$b} z_{$c} z_{$d}\rangle_c", plain="<z_$a z_$b z_$c z_$d>_c",
        prediction=r"(V_{($a$b)($c$d)} + V_{($a$c)($b$d)} + V_{($a$d)($b$c)})/n_{\ell-1}",
        estimator="E[m4_abcd] - G_ab G_cd - G_ac G_bd - G_ad G_bc, m4 = (1/n) sum_i z_ia z_ib z_ic z_id, jackknifed",
        normalized="kurtosis",
        description="fourth cumulant of one neuron"),
    Observable(
        "six_point_single", "raw", 1, "diagonal", 3, 2,
        tex=r"\langle z_{$a}^6\rangle_c", plain="<z_$a^6>_c",
        prediction=r"0 + O(1/n^2)",
        estimator="mu6 - 15 mu4 mu2 + 30 mu2^3 from the neuron-averaged moments of z_a (odd moments vanish by "
                  "symmetry), jackknifed (bias O(1/N^2))",
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

#: name -> :class:`Observable`, in the order above (read-only)
OBSERVABLES = MappingProxyType({o.name: o for o in _TABLE})


def get(name) -> Observable:
    """The record of ``name``; :class:`~pdlt.errors.ParameterError` listing the valid names otherwise."""
    obs = OBSERVABLES.get(name) if isinstance(name, str) else None
    if obs is None:
        raise ParameterError(f"unknown observable {name!r}; valid names: {', '.join(OBSERVABLES)}", "quantity")
    return obs


def names(*kinds: str, max_order: int | None = None) -> tuple[str, ...]:
    """Names of the given kinds (all kinds when none is given), in table order; ``max_order`` keeps those whose
    leading term is at most of that order in 1/n (1: what the O(1/n) theory predicts)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ParameterError(f"unknown observable kind(s) {bad}; valid kinds: {', '.join(KINDS)}", "kinds")
    return tuple(o.name for o in _TABLE
                 if (not kinds or o.kind in kinds) and (max_order is None or o.order <= max_order))


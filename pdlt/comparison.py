"""Theory against Monte Carlo: one row per (quantity, layer, input indices), with z-scores and verdicts.

``compare(theory, mc)`` joins a :class:`pdlt.FiniteWidth` (predictions truncated at O(1/n)) with Monte Carlo
estimates (anything with ``two_point``, ``four_point``, ``four_point_single`` :class:`Estimate` attributes,
e.g. :class:`pdlt.MCResult`). Quantities are the observables of :mod:`pdlt.observables`, looked up by the same
name on both sides (``getattr(theory, q)(l)`` against ``getattr(mc, q)``). By default (:data:`QUANTITIES`) the
raw ones the O(1/n) theory predicts (PDLT conventions, ``n = n_{l-1}``):

* ``two_point``          ``E[z_{i;a} z_{i;b}]``, theory ``K + G1/n``;
* ``four_point``         distinct neurons, connected, theory ``V_{(ab)(cd)}/n``;
* ``four_point_single``  one neuron's fourth cumulant, theory ``(V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc))/n``.

On request also ``vertex`` (``V``), ``normalized_vertex`` and ``kurtosis`` (per input, scale-free; for them the
"O(1/n) part" below is the whole value, as for the four-point functions). The six-point observables start at
order 1/n^2, beyond the truncation, and are refused.

**Same network, same inputs.** A :class:`pdlt.MCResult` records its network (activation, widths, ``C_W``,
``C_b`` per layer) and inputs in ``config``; :func:`compare` refuses (:class:`~pdlt.errors.MismatchError`) a
theory of another network or of other inputs (x compared to 1e-12 relative). Duck-typed estimates without a
``config`` (e.g. a namespace of :class:`Estimate` objects) are checked by shape only.

**Verdict.** ``z = (mc - theory)/se`` with the Monte Carlo standard error. A row is within the prediction when
``|mc - theory| <= z_max se + allowance``; ``z_excess = sign(mc - theory) max(0, |mc - theory| - allowance)/se``
is the z-score left after the allowance (a row fails when ``|z_excess| > z_max``). Verdicts:

* ``FAIL``: outside the prediction even with the allowance, at a layer where the bound c below is < 1;
* ``NOT RESOLVED``: at a layer where c >= 1 (the series is not controlled: whatever the deviation), or within
  the allowance where the allowance is larger than the row's own O(1/n) part (``|G1/n|`` for the
  two-point function, the whole value for the four-point functions): such a row cannot tell the 1/n theory from
  the infinite-width one (0 or ``K``), so it tests nothing and is never shown as a pass. It is not a failure
  either: :attr:`Comparison.ok` counts failures only and reports these rows separately (``n_unresolved``).
  The O(1/n) part, not the whole value, is the yardstick because the 1/n prediction is what the table tests;
  the leading term K is tested at infinite width elsewhere (and the two-point rows of scale-invariant networks,
  whose O(1/n) part and allowance are both 0, stay resolved: ``E z z = K`` exactly);
* ``PASS``: within, and resolved. Negative controls (``expect_reject``) read ``REJECTED (control)`` instead.

**Allowance for the truncation (derived, default ``allowance="auto"``).** The prediction stops at O(1/n); the
truth differs by the next orders. Layers l <= 2 are exact at O(1/n) for every activation (layer 1 is Gaussian;
at layer 2 the metric is an average of n_1 iid terms, so ``E z z = K`` and ``V/n_1`` are exact): allowance 0.
For l >= 3 the allowance of a quantity at layer l is ``c * max|O(1/n) term|`` (max over the layer's entries),
where ``c`` bounds (next orders)/(first order) and is expressed through the relative variance of the metric,
``s_l = V_(aa)(aa) / (n_{l-1} K_aa^2)`` (``~ nu l/n`` at criticality; the largest over inputs a):

1. *Scale-invariant class (ReLU, linear, leaky ReLU): proved, one input, any widths, any bias.* The metric is a
   Markov chain: ``K_{l+1} = C_b + A K_l``, ``E[G_{l+1}^2] = C_b^2 + 2 C_b A K_l + A^2 (1 + nu/n_l) E[G_l^2]``,
   ``E G = K`` exactly. With ``rho_l = (A K_l/K_{l+1})^2 <= 1`` the normalized four-point function obeys
   ``s' = rho (1 + nu/n) s + rho nu/n`` and its O(1/n) part ``s1' = rho (s1 + nu/n)``; the ratio of the rest to
   the first order, ``q = (s - s1)/s1``, obeys ``q' = s1 [(1 + nu/n) q + nu/n] / (s1 + nu/n)`` (rho cancels),
   increasing in ``s1`` and ``q``. Since ``s1 <= S := sum_{l'<l} nu/n_l'`` (the undiluted sum, equal to s1 at
   C_b = 0), q is at most its bias-free value ``(prod(1 + nu/n_l') - 1 - S)/S <= (e^S - 1 - S)/S`` (``1 + y <= e^y``):
   ``c = (e^S - 1 - S)/S``. S is computed from the theory itself, ``S' = S + (s' - rho s)/rho`` with
   ``rho = ((K' - C_b')/K')^2``. The two-point function has no 1/n correction at any order (G1 = G2 = 0), so its
   allowance is 0. ReLU, n = 64, l = 6, C_b = 0: S = 0.391, exact ratio 0.169, c = 0.223.
   ``derivations/truncation_allowance.py`` asserts each step (the recursions as sympy identities, the
   monotonicity, the bias-free product form) and checks the bound against the exact chain for random widths
   and biases.
2. *Every other activation: c = s e^s* (``s`` as above). For the K*=0 class at criticality (tanh, sin, erf;
   derivations/README.md section 13.3) ``s -> (2/3) l/n``, ``V1/(n V) -> -(7/15) l/n = -0.7 s`` and
   ``G2/(n G1) -> -(1/5) l/n = -0.3 s``: relative coefficients below 1 per unit of s, against 1/2 for the exact
   class above (whose ``(e^S - 1 - S)/S <= (S/2) e^S``), hence the factor 2. This is derived only at large
   depth for that class; elsewhere (off criticality, half-stable GELU) it is checked, not proved: the
   recursions of derivations/README.md §13.2 for tanh (C_W = 0.8, 1, 1.5), sin and GELU at criticality, widths
   16 and 64, l <= 60, give ``|G2/(n G1)|, |V1/(n V)| <= 0.7 c`` wherever ``c < 1`` (GELU, n = 64, l = 12:
   s = 0.52, |V1/(nV)| = 0.59, c = 0.87). A later issue computes the next order itself.

Where ``c >= 1`` the perturbative series is not controlled (``nu l/n`` of order 1) and the rows of that layer are
NOT RESOLVED: honest, not a pass. Several inputs: s is the largest diagonal value and the allowance uses the
layer's largest O(1/n) term, since off-diagonal entries can have small first-order parts but not small next
orders (a reasoned extension, not proved). A width sweep with 1/n fits (:mod:`pdlt.fits`,
:func:`pdlt.width_sweep`) needs no allowance and is the stronger test.

*With the next order computed.* For a plain MLP with a smooth or scale-invariant activation the O(1/n^2) term
``T2`` is computed: for every entry of 2 to 4 inputs (:func:`pdlt.nnlo` of all of them), otherwise for the one-input
entries (``aa``, ``aaaa``, the per-input normalized vertex and kurtosis; :func:`pdlt.nnlo` of that input alone). A
one-input entry's allowance is ``|T2| + c^2 |T1|``, the next order itself plus a bound on the rest (proved for the
bias-free scale-invariant class, checked against the all-orders closure otherwise); an entry of several inputs gets
``|T2| + c^2 s_e max(|T1|/s)`` with ``s_e`` its natural scale (prod sqrt(K_aa) over its indices), since its signs
mix (checked against the exact deep linear chain); entries without a computed next order get ``c_l max|T1|`` with c
raised to what the computed entries show (``c_l``; NOT RESOLVED where ``c_l >= 1``). The rule lives in
:func:`pdlt.theory.truncation.truncation_error` (also :meth:`pdlt.FiniteWidth.truncation_error`), the one home of
the truncation estimates; the functions above are re-exported from there.

False alarms: the standard errors come from a jackknife over B batches (default 32), so z is approximately
Student-t with B - 1 degrees of freedom, not normal: at ``z_max = 5`` a correct row fails with probability
2.1e-5 (t_31; 5.7e-7 for a normal z), so a table of 100 rows has a family-wise false-alarm rate of ~2e-3
(more batches tighten this: t_127 gives 2e-6 per row).

**Caveats.** The :class:`Comparison` carries the caveats of both inputs (``theory.caveats``, ``mc.caveats``:
truncation, incomplete run, ...) plus its own (an incomplete Monte Carlo run, rows omitted because the Monte
Carlo value is undefined) and prints them under every table (markdown, LaTeX table note, JSON ``"caveats"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import Caveat, MismatchError, ParameterError, PdltError, emit
from .latex import booktabs, escape, fmt_number, fmt_uncertainty, prose_label
from .observables import NTK_OBSERVABLES, OBSERVABLES, TRAINING_OBSERVABLES, get as _observable, names as _observable_names
from .theory.truncation import (expansion_parameter, first_order_term as _first_order_term, next_order,
                                next_order_bound, ntk_first_order_term, ntk_truncation_error,
                                truncation_estimate, undiluted_parameter)
from .validation import check_int, check_real

__all__ = ["Row", "Comparison", "compare", "QUANTITIES", "NTK_QUANTITIES", "TRAINING_QUANTITIES", "COMPARABLE", "next_order_bound",
           "expansion_parameter", "undiluted_parameter"]

#: the default quantities: the raw observables whose leading term the O(1/n) theory predicts
QUANTITIES = _observable_names("raw", max_order=1)
#: every quantity compare accepts (the six-point observables start at 1/n^2, beyond the truncation)
COMPARABLE = _observable_names(max_order=1)
#: the default NTK quantities (theory :class:`pdlt.theory.ntk.NTK`, Monte Carlo :func:`pdlt.montecarlo.sample_ntk`)
NTK_QUANTITIES = ("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")
#: the trained-ensemble quantities (theory :func:`pdlt.train_prediction`, Monte Carlo :func:`pdlt.sample_trained`;
#: :data:`pdlt.observables.TRAINING_OBSERVABLES`)
TRAINING_QUANTITIES = tuple(TRAINING_OBSERVABLES)
#: LaTeX math label of each observable, for tables
_TEX = {o.name: o.label_tex for o in (*OBSERVABLES.values(), *NTK_OBSERVABLES.values())}
_TEX.update({o.name: o.tex for o in TRAINING_OBSERVABLES.values()})

PASS, FAIL, NOT_RESOLVED, REJECTED = "PASS", "FAIL", "NOT RESOLVED", "REJECTED (control)"


@dataclass(frozen=True)
class Row:
    """One comparison: ``quantity`` at ``layer`` (1..L) for input indices ``inputs``.

    ``first_order``: the row's own O(1/n) part of the prediction (``G1/n`` entry, or the four-point value); None
    when not known (sweep rows), and then the row counts as resolved.
    """

    quantity: str
    layer: int
    inputs: tuple
    theory: float
    mc: float
    se: float
    allowance: float = 0.0
    z_max: float = 5.0
    case: str = ""
    expect_reject: bool = False  # a negative control: passes when the prediction is rejected
    first_order: float | None = None
    controlled: bool = True  # False where the layer's bound c on the next orders is >= 1 (series not controlled)

    def __post_init__(self):
        # a row is a verdict: every number it rests on must be one (a NaN allowance gave FAIL beside "z excess
        # +0.00", a negative one an excess of +101, a NaN standard error a verdict on nothing)
        for name in ("theory", "mc") + (("first_order",) if self.first_order is not None else ()):
            check_real(getattr(self, name), name)
        for name in ("se", "allowance"):
            check_real(getattr(self, name), name, minimum=0.0)
        check_real(self.z_max, "z_max", minimum=0.0, open_minimum=True)
        check_int(self.layer, "layer", minimum=1)
        if not isinstance(self.inputs, tuple) or not self.inputs:
            raise ParameterError(f"Row.inputs must be a non-empty tuple of input indices, got {self.inputs!r}",
                                 "inputs")

    @property
    def z(self) -> float:
        """``(mc - theory)/se``; 0 for exact agreement with se = 0."""
        diff = self.mc - self.theory
        if self.se > 0:
            return diff / self.se
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)

    @property
    def z_excess(self) -> float:
        """``sign(mc - theory) max(0, |mc - theory| - allowance)/se``: the z-score the allowance does not cover."""
        diff = self.mc - self.theory
        excess = max(0.0, abs(diff) - self.allowance)
        if excess == 0:
            return 0.0
        return math.copysign(excess / self.se, diff) if self.se > 0 else math.copysign(math.inf, diff)

    @property
    def within(self) -> bool:
        return bool(abs(self.mc - self.theory) <= self.z_max * self.se + self.allowance)

    @property
    def resolved(self) -> bool:
        """False when the allowance exceeds the row's O(1/n) part: the row cannot test the 1/n prediction."""
        return self.first_order is None or not self.allowance > abs(self.first_order)

    @property
    def ok(self) -> bool:
        """Not a failure (PASS, NOT RESOLVED, or a rejected control)."""
        return self.verdict != FAIL

    @property
    def verdict(self) -> str:
        if self.expect_reject:
            return REJECTED if not self.within else FAIL
        if not self.controlled:
            # the neglected orders may exceed the 1/n term itself: the row can neither confirm nor refute the
            # prediction, whatever the deviation (the bound c is itself capped there)
            return NOT_RESOLVED
        if not self.within:
            return FAIL
        return PASS if self.resolved else NOT_RESOLVED

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(inputs=list(self.inputs), z=_finite_or_none(self.z), z_excess=_finite_or_none(self.z_excess),
                 ok=self.ok, resolved=self.resolved, verdict=self.verdict)
        return d


def _finite_or_none(v: float):
    # JSON has no inf/NaN: a zero standard error with a non-zero deviation is written as null
    return float(v) if math.isfinite(v) else None


def merge_caveats(*groups) -> tuple:
    """Caveats of several sources, in order, without repeats."""
    out = []
    for g in groups:
        for c in g:
            if c not in out:
                out.append(c)
    return tuple(out)


@dataclass(frozen=True)
class Comparison:
    """Rows of :func:`compare` with an overall verdict, the caveats of the compared results, and markdown /
    LaTeX / JSON output. ``ok``: no row failed (NOT RESOLVED rows are counted in ``n_unresolved``)."""

    rows: tuple
    caveats: tuple = field(default=())

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.rows)

    @property
    def n_unresolved(self) -> int:
        return sum(r.verdict == NOT_RESOLVED for r in self.rows)

    @property
    def n_passed(self) -> int:
        return len(self.rows) - self.n_failed - self.n_unresolved

    @property
    def incomplete(self) -> bool:
        return any(c.kind == "incomplete" for c in self.caveats)

    def summary(self) -> str:
        """``"k passed, m failed, u not resolved (of N rows)"``."""
        return (f"{self.n_passed} passed, {self.n_failed} failed, {self.n_unresolved} not resolved "
                f"(of {len(self.rows)} rows)")

    def __add__(self, other: "Comparison") -> "Comparison":
        if not isinstance(other, Comparison):
            return NotImplemented
        return Comparison(self.rows + other.rows, merge_caveats(self.caveats, getattr(other, "caveats", ())))

    def to_markdown(self) -> str:
        head = "| case | quantity | l | inputs | theory | MC | se | z | allowance | z excess | verdict |"
        lines = [head, "|" + "---|" * 11]
        for r in self.rows:
            lines.append(f"| {r.case} | {r.quantity} | {r.layer} | {','.join(map(str, r.inputs))} | {r.theory:.6g} | "
                         f"{r.mc:.6g} | {r.se:.2g} | {r.z:+.2f} | {r.allowance:.2g} | {r.z_excess:+.2f} | {r.verdict} |")
        lines.append(f"\n**{self.summary()}** ({'PASS' if self.ok else 'FAIL'})")
        if self.caveats:
            lines.append("\nCaveats:")
            lines += [f"- {c.kind}: {c.message}" for c in self.caveats]
        return "\n".join(lines)

    def to_latex(self, caption: str | None = None, max_rows: int = 14) -> str:
        """The rows as a booktabs table float (caveats as a note under it), for a document whose preamble has
        :data:`pdlt.latex.PREAMBLE` (amsmath, booktabs, array, tabularx, caption); ``pdlt.latex.document(...)``
        wraps it into one that compiles as it is. More than ``max_rows`` rows continue in further floats."""
        body = []
        for r in self.rows:
            quantity = f"${_TEX[r.quantity]}$" if r.quantity in _TEX else prose_label(r.quantity.replace("_", " "))
            v = r.verdict
            verdict = r"\textbf{fail}" if v == FAIL else escape(v.lower())
            body.append([prose_label(r.case), quantity, str(r.layer),
                         ",".join(map(str, r.inputs)), fmt_number(r.theory, 6), "$" + fmt_uncertainty(r.mc, r.se) + "$",
                         _fmt_z(r.z), _fmt_z(r.z_excess), verdict])
        cap = caption or (f"Theory (order $1/n$) against Monte Carlo: {self.n_passed} passed, {self.n_failed} "
                          f"failed, {self.n_unresolved} not resolved (allowance larger than the $1/n$ part) of "
                          f"{len(self.rows)} rows ($|\\Delta| \\le z_{{\\max}}\\,\\sigma + $ allowance; "
                          r"$z_{\mathrm{exc}}$: $z$ beyond the allowance).")
        tex = booktabs(["case", "quantity", r"$\ell$", "inputs", "theory", "MC", "$z$", r"$z_{\mathrm{exc}}$",
                        "verdict"], body, align=r">{\raggedright\arraybackslash}p{2.7cm}lrlrrrrl", caption=cap,
                       max_rows=max_rows)
        if not self.caveats:
            return tex
        # the note goes inside the (last) float, below the tabular
        note = (r"\par\smallskip{\footnotesize\raggedright\textit{Caveats:} "
                + "; ".join(f"{escape(c.kind)}: {c.latex or escape(c.message)}" for c in self.caveats) + r"\par}")
        head, sep, tail = tex.rpartition(r"\end{table}")
        return head + note + "\n" + sep + tail

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "n_passed": self.n_passed, "n_failed": self.n_failed,
                           "n_unresolved": self.n_unresolved, "caveats": [c.as_dict() for c in self.caveats],
                           "rows": [r.as_dict() for r in self.rows]}, indent=2, default=float, allow_nan=False)


def _fmt_z(z: float) -> str:
    """A z-score for a table: ``+1.23``, or ``+\\infty`` (a deviation against a standard error of 0)."""
    return f"${z:+.2f}$" if math.isfinite(z) else (r"$+\infty$" if z > 0 else r"$-\infty$")


def _verdict(r: Row) -> str:
    return r.verdict


def _index_sets(quantity: str, d: int):
    return _observable(quantity).index_sets(d)


def _is_theory(obj) -> bool:
    return all(hasattr(obj, a) for a in ("K", "G1", "V", "net", "two_point", "four_point"))


def _is_mc(obj) -> bool:
    est = getattr(obj, "two_point", None)
    return hasattr(est, "mean") and hasattr(est, "stderr")


def _is_ntk_theory(obj) -> bool:
    return all(hasattr(obj, a) for a in ("Theta", "prediction", "net", "lambda_b", "lambda_W"))


def _check_arguments(theory, mc) -> None:
    if _is_mc(theory) and _is_theory(mc):
        raise ParameterError("compare(theory, mc): the first argument must be the theory (pdlt.finite_width(...)), "
                             "the second the Monte Carlo result (pdlt.sample(...)); they look swapped", "theory")
    if not _is_theory(theory):
        raise ParameterError(f"compare(theory, mc): theory must be a pdlt.FiniteWidth (pdlt.finite_width(net, x)), "
                             f"got {type(theory).__name__}", "theory")
    if not _is_mc(mc):
        raise ParameterError(f"compare(theory, mc): mc must be a Monte Carlo result (pdlt.sample(net, x, n)) or an "
                             f"object with Estimate attributes two_point, four_point, four_point_single; got "
                             f"{type(mc).__name__}", "mc")


def _fmt_vec(v) -> str:
    v = list(np.ravel(v))
    head = ", ".join(f"{float(a):.12g}" for a in v[:3])
    return f"[{head}{', ...' if len(v) > 3 else ''}]"


def _close(a, b, rtol: float = 1e-12) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return bool(np.all(np.abs(a - b) <= rtol * scale))


def check_identity(theory, mc) -> None:
    """Raise MismatchError naming the first difference between the theory's network/inputs and ``mc.config``.
    Skipped (shape checks only) for estimates without a ``config`` dict."""
    cfg = getattr(mc, "config", None)
    if not isinstance(cfg, dict):
        return
    net = theory.net
    act = cfg.get("activation")
    if act is not None and act != net.activation.name:
        raise MismatchError(f"activations differ: theory {net.activation.name!r} vs Monte Carlo {act!r}; compare the "
                            "theory and the Monte Carlo of the same network")
    expr = cfg.get("activation_expr")
    if expr is not None and hasattr(net.activation, "expr"):
        import sympy as sp  # already loaded by pdlt.activations

        if sp.srepr(net.activation.expr) != expr:
            raise MismatchError(f"activation {net.activation.name!r}: the theory's and the Monte Carlo's expressions "
                                "differ; compare the theory and the Monte Carlo of the same network")
    if "widths" in cfg and tuple(int(n) for n in cfg["widths"]) != tuple(net.widths):
        raise MismatchError(f"widths differ: theory {tuple(net.widths)} vs Monte Carlo {tuple(cfg['widths'])}")
    for name in ("C_W", "C_b"):
        if name in cfg and not _close(getattr(net, name), cfg[name]):
            raise MismatchError(f"{name} differs: theory {_fmt_vec(getattr(net, name))} vs Monte Carlo "
                                f"{_fmt_vec(cfg[name])} (per layer)")
    # a run records gamma and xi only for residual networks (plain: gamma = 0, xi = 1 per layer)
    L = len(net.widths) - 1
    for name, plain in (("gamma", 0.0), ("xi", 1.0)):
        mine = getattr(net, name, (plain,) * L)
        theirs = cfg.get(name, [plain] * L)
        if not _close(mine, theirs):
            raise MismatchError(f"{name} (residual steps) differs: theory {_fmt_vec(mine)} vs Monte Carlo "
                                f"{_fmt_vec(theirs)} (per layer)")
    if "x" in cfg:
        tx = np.atleast_2d(np.asarray(theory.x, dtype=np.float64))
        mx = np.atleast_2d(np.asarray(cfg["x"], dtype=np.float64))
        if tx.shape != mx.shape:
            raise MismatchError(f"inputs differ: theory x has shape {tx.shape} vs Monte Carlo x {mx.shape}")
        for a in range(tx.shape[0]):
            if not _close(tx[a], mx[a]):
                raise MismatchError(f"inputs differ: theory x[{a}] = {_fmt_vec(tx[a])} vs Monte Carlo "
                                    f"x[{a}] = {_fmt_vec(mx[a])}; compare the theory and the Monte Carlo of the "
                                    "same inputs")


def _incomplete(mc, stacklevel: int) -> list:
    """``[caveat]`` for an incomplete Monte Carlo run (the run's own, when it carries one), issued as a warning at
    the caller of :func:`compare`; ``[]`` for a complete one."""
    inc = incomplete_caveat(mc)
    if inc is None:
        return []
    known = [c for c in tuple(getattr(mc, "caveats", ()) or ()) if c.kind == "incomplete"]
    inc = known[0] if known else inc
    emit([inc], stacklevel=stacklevel)
    return [inc]


def _check_thresholds(z_max, allowance):
    """``(z_max, allowance)`` checked: ``z_max > 0``; ``allowance`` ``"auto"`` or a number ``>= 0``."""
    from .validation import check_real

    z_max = check_real(z_max, "z_max", minimum=0.0, open_minimum=True)
    if not (isinstance(allowance, str) and allowance == "auto"):
        if isinstance(allowance, str):
            raise ParameterError(f"allowance must be 'auto' or a number >= 0, got {allowance!r}", "allowance")
        allowance = check_real(allowance, "allowance", minimum=0.0)
    return z_max, allowance


def _shared_checks(theory, mc, quantities, z_max, allowance, layers, L: int, d: int):
    """The checks :func:`compare` makes for either family: ``z_max`` and ``allowance`` (returned checked), the
    network and inputs of both sides, one Estimate of the theory's shape per quantity, and the layers (default
    2..L)."""
    z_max, allowance = _check_thresholds(z_max, allowance)
    check_identity(theory, mc)
    for q in quantities:
        est = getattr(mc, q, None)
        if not (hasattr(est, "mean") and hasattr(est, "stderr")):
            raise ParameterError(f"mc has no Estimate {q!r}; pass quantities=... without it", "quantities")
        want = _observable(q).shape(d, L)
        if np.shape(est.mean) != want:
            raise MismatchError(f"Monte Carlo {q} has shape {np.shape(est.mean)} but the theory has {want}: same "
                                "network (depth L) and inputs (d) are needed")
    if layers is not None and np.ndim(layers) == 0:
        layers = [layers]               # (one layer)
    layers = list(range(2, L + 1)) if layers is None else [check_int(l, "layers", minimum=1, maximum=L) for l in layers]
    return z_max, allowance, layers


def incomplete_caveat(mc) -> Caveat | None:
    if getattr(mc, "complete", True) is not False:
        return None
    done = getattr(mc, "n_samples", None)
    want = (getattr(mc, "config", None) or {}).get("n_samples") if isinstance(getattr(mc, "config", None), dict) else None
    count = f" ({done} of {want} networks)" if done is not None and want is not None else ""
    return Caveat("incomplete", f"the Monte Carlo run is incomplete{count}: it was interrupted; its error bars are "
                  "honest for the networks drawn, but resume it (sample(..., resume=result) or the same checkpoint) "
                  "for the requested precision")


def compare(theory, mc, *, quantities=QUANTITIES, layers=None, z_max: float = 5.0, allowance="auto",
            case: str = "") -> Comparison:
    """Rows ``(quantity, layer, inputs, theory, mc, se, z, z_excess, verdict)`` for every distinct index set.

    ``theory``: :class:`pdlt.FiniteWidth`; ``mc``: a :class:`pdlt.MCResult` of the same network and inputs
    (refused with :class:`~pdlt.errors.MismatchError` otherwise), or duck-typed estimates with the same ``L`` and
    ``d`` (no ``config``: shapes are the only check). ``layers``: which layers (default: 2..L; layer 1 is Gaussian
    and its four-point functions vanish identically). ``allowance``: ``"auto"`` (the derived bound on the
    truncation, module docstring), a number ``c >= 0`` (relative: ``c * max|O(1/n) term|`` per layer), or ``0``.
    An incomplete Monte Carlo run gives an :class:`~pdlt.errors.IncompleteWarning` and a caveat on the result.
    """
    if _is_training_theory(theory):
        return _compare_training(theory, mc, quantities=TRAINING_QUANTITIES if quantities is QUANTITIES else quantities,
                                 z_max=z_max, allowance=allowance, case=case)
    if _is_ntk_theory(theory):
        return _compare_ntk(theory, mc, quantities=NTK_QUANTITIES if quantities is QUANTITIES else quantities,
                            layers=layers, z_max=z_max, allowance=allowance, case=case)
    _check_arguments(theory, mc)
    if isinstance(quantities, str):
        quantities = (quantities,)
    for q in quantities:
        if q not in OBSERVABLES:
            raise ParameterError(f"unknown quantity {q!r} in quantities; choose from {COMPARABLE}", "quantities")
        if q not in COMPARABLE:
            raise ParameterError(f"quantity {q!r} starts at order 1/n^{OBSERVABLES[q].order}, beyond the O(1/n) "
                                 f"theory (which predicts 0 for it); choose from {COMPARABLE}", "quantities")
    L, d = theory.K.shape[0], theory.K.shape[-1]
    z_max, allowance, layers = _shared_checks(theory, mc, quantities, z_max, allowance, layers, L, d)
    mc_caveats = tuple(getattr(mc, "caveats", ()) or ())
    own = _incomplete(mc, stacklevel=4)
    rows = []
    residual, generic = bool(getattr(theory.net, "residual", False)), 0
    for q in quantities:
        est = getattr(mc, q)
        for l in layers:
            th = getattr(theory, q)(l)
            first = _first_order_term(theory, q, l)
            computed = None
            if allowance == "auto":
                allow, factor = truncation_estimate(theory, q, l)
                controlled = factor < 1.0
                if residual:
                    computed = next_order(theory, q, l)[1]
            else:
                allow = np.full(first.shape, float(allowance) * float(np.abs(first).max()))
                controlled = True
            skipped = 0
            for idx in _index_sets(q, d):
                m, s = est.mean[(l - 1,) + idx], est.stderr[(l - 1,) + idx]
                if not (np.isfinite(m) and np.isfinite(s)):
                    skipped += 1  # e.g. a width-1 layer has no pair of distinct neurons
                    continue
                # an entry exact at this order (no O(1/n) part, no allowance: E z_a^2 = K_aa of the scale-invariant
                # class) stays tested whether or not the layer's series is controlled
                exact = float(allow[idx]) == 0.0 and float(first[idx]) == 0.0
                rows.append(Row(q, l, idx, float(th[idx]), float(m), float(s), float(allow[idx]), z_max, case,
                                first_order=float(first[idx]), controlled=controlled or exact))
                if computed is not None and float(allow[idx]) > 0 and not (controlled and computed[idx]):
                    generic += 1          # (where c >= 1 every entry gets the bound c max|T1|)
            if skipped:
                own.append(Caveat("undefined", f"{q} at layer l = {l}: the Monte Carlo value is undefined for "
                                  f"{skipped} entries (e.g. a layer of width 1 has no pair of distinct neurons); "
                                  "those rows are omitted", layer=l))
    if generic:
        own.append(Caveat("allowance", f"residual network: the O(1/n^2) allowance of {generic} row(s) is the generic "
                                       "bound s e^s (s = V/(n K^2)), not the computed next order (which covers one "
                                       "input's entries at controlled layers, where the residual chain converges), "
                                       "so a PASS of those rows that rests on the allowance is not a test of the "
                                       "O(1/n) terms"))
    caveats = merge_caveats(tuple(getattr(theory, "caveats", ()) or ()), mc_caveats, own)
    return Comparison(tuple(rows), caveats)


# ---------------------------------------------------------------------------------------------------
# the NTK family
# ---------------------------------------------------------------------------------------------------


def _check_learning_rates(theory, mc) -> None:
    cfg = getattr(mc, "config", None)
    if not isinstance(cfg, dict):
        return
    for name in ("lambda_b", "lambda_W"):
        if name in cfg and not _close(getattr(theory, name), cfg[name]):
            raise MismatchError(f"{name} differs: theory {_fmt_vec(getattr(theory, name))} vs Monte Carlo "
                                f"{_fmt_vec(cfg[name])} (per layer); compare the NTK of the same learning rates")


def _compare_ntk(theory, mc, *, quantities, layers, z_max, allowance, case) -> Comparison:
    """:func:`compare` for an NTK theory (:func:`pdlt.ntk`) and an NTK Monte Carlo run (:func:`pdlt.sample_ntk`).

    Layers 1-2 are exact at O(1/n) for every NTK statistic (layer 1 is deterministic, layer 2's sources are
    averages of iid neurons of a Gaussian layer): allowance 0. At layers >= 3 ``allowance="auto"`` takes the
    truncation error of :func:`pdlt.theory.truncation.ntk_truncation_error` where it is known, and marks the other
    rows NOT RESOLVED (a caveat says so; the test there is an NTK width sweep with 1/n fits,
    :func:`pdlt.sweeps.ntk_width_sweep`). It is known
    * for deep linear networks (shortcuts allowed), ``ntk_mean``, A, B, D, F and the NTK variance: their exact values
      (:func:`pdlt.theory.linear_residual.linear_ntk_all_orders`) give the truncation error itself, measured by the
      chain against its own O(1/n) part;
    * for bias-free ReLU networks (``C_b = 0``), the entries of one input (the diagonal of ``ntk_mean``, the NTK
      variance and relative variance, the entries ``aaaa`` of A, B, D, F), from their exact chain
      (:func:`pdlt.theory.relu_ntk.relu_ntk_all_orders`);
    * for smooth activations of plain MLPs, the same entries: the computed O(1/n^2) term
      (:func:`pdlt.theory.ntk_nnlo.ntk_nnlo`) plus a bound on the rest, where the series is controlled;
    * for the other entries of ``ntk_mean``, A, B, D, F in both cases (those of several inputs), a derived bound that
      the known entries of the layer calibrate.
    A number ``c`` gives the allowance ``c * max|O(1/n) part|`` as for the preactivations."""
    if not (hasattr(getattr(mc, "ntk_mean", None), "mean")):
        raise ParameterError("compare(ntk_theory, mc): mc must be an NTK Monte Carlo run (pdlt.montecarlo.sample_ntk), "
                             f"got {type(mc).__name__} without an ntk_mean estimate", "mc")
    if isinstance(quantities, str):
        quantities = (quantities,)
    for q in quantities:
        if q not in NTK_OBSERVABLES:
            raise ParameterError(f"unknown NTK quantity {q!r} in quantities; choose from {tuple(NTK_OBSERVABLES)}",
                                 "quantities")
    L, d = theory.Theta.shape[0], theory.Theta.shape[-1]
    _check_learning_rates(theory, mc)
    z_max, allowance, layers = _shared_checks(theory, mc, quantities, z_max, allowance, layers, L, d)
    own = _incomplete(mc, stacklevel=5)
    rows = []
    for q in quantities:
        est = getattr(mc, q)
        for l in layers:
            th = theory.prediction(q, l)
            first = ntk_first_order_term(theory, q, l)
            scale = float(np.abs(first).max())
            if l <= 2:
                allow, controlled = 0.0, True
            elif allowance == "auto":
                allow, controlled = 0.0, False
            else:
                allow, controlled = float(allowance) * scale, True
            miss, known = ntk_truncation_error(theory, q, l) if l > 2 and allowance == "auto" else (None, None)
            for idx in _observable(q).index_sets(d):
                m, se = est.mean[(l - 1,) + idx], est.stderr[(l - 1,) + idx]
                if not (np.isfinite(m) and np.isfinite(se)):
                    continue
                a_, c_ = allow, controlled
                if known is not None and known[idx]:
                    # the truncation error (an exact chain's, or the computed next order's); below round-off, the
                    # prediction is exact
                    e = float(miss[idx])
                    a_, c_ = (0.0 if e <= 1e-12 * max(abs(float(th[idx])), scale) else e * (1 + 1e-9)), True
                rows.append(Row(q, l, idx, float(th[idx]), float(m), float(se), a_, z_max, case,
                                first_order=float(first[idx]), controlled=c_))
    if allowance == "auto" and any(not r.controlled for r in rows):
        n_open = sum(not r.controlled for r in rows)
        own.append(Caveat("allowance", f"NTK statistics at layers >= 3: the O(1/n^2) remainder of {n_open} row(s) "
                                       "is not known (it is for deep linear networks, for the NTK mean, A, B, D, F "
                                       "and the NTK variance of bias-free ReLU networks and of smooth activations "
                                       "of plain MLPs, and for the dNTK's P, Q of smooth activations of plain MLPs, "
                                       "where the series is controlled; not for the ddNTKs), "
                                       "so those single-width rows are NOT RESOLVED; test them with an "
                                       "NTK width sweep (1/n fits, pdlt.sweeps.ntk_width_sweep)"))
    caveats = merge_caveats(tuple(getattr(mc, "caveats", ()) or ()), own)
    return Comparison(tuple(rows), caveats)


# ---------------------------------------------------------------------------------------------------
# trained networks
# ---------------------------------------------------------------------------------------------------


def _is_training_theory(obj) -> bool:
    return all(hasattr(obj, a) for a in ("eta_max", "mean", "cov", "x_train", "y_train", "x_test"))


def training_prediction(theory, quantity: str):
    """``(prediction, O(1/n) part or None)`` of a training quantity (:data:`TRAINING_QUANTITIES`) from a
    :class:`pdlt.TrainPrediction`, in the Monte Carlo's shapes: ``trained_mean``, ``feature_shift`` ``(N_T, n_L)``;
    ``trained_cov`` ``(N_T, N_T)`` (infinite width: its O(1/n) part is not derived, None); ``ntk_change``
    ``(N_A, N_A)`` on the training inputs (the 1/n coefficient over n)."""
    n = theory.n
    if quantity == "trained_mean":
        first = theory.mean_correction / n
        return theory.mean + first, first
    if quantity == "feature_shift":
        first = (theory.pieces["dntk"] + theory.pieces["ddntk"]) / n
        return first, first
    if quantity == "trained_cov":
        return theory.cov, None
    if quantity == "ntk_change":
        return theory.ntk_change / n, theory.ntk_change / n
    raise ParameterError(f"unknown training quantity {quantity!r}; choose from {TRAINING_QUANTITIES}", "quantities")


def _training_next_order(theory):
    """The computed O(1/n^2) term of a trained mean ``(N_T, n_L)`` (:attr:`pdlt.TrainPrediction.next_order`), None
    where it is not derived (lower layers train, more than 4 distinct inputs, a residual network)."""
    from .theory.training_nnlo import last_layer_only

    if not last_layer_only(theory.lambda_b, theory.lambda_W):
        return None
    try:
        return theory.next_order
    except PdltError:              # (its statistics refused: more than 4 inputs, collinear, out of float64's range)
        return None


def _check_training_identity(theory, mc) -> None:
    """MismatchError naming the first difference between the training problem of ``theory`` and ``mc.config``."""
    cfg = getattr(mc, "config", None)
    if not isinstance(cfg, dict):
        return
    from types import SimpleNamespace

    # the network itself (activation, widths, C_W, C_b); the inputs are compared as x_train / x_test
    check_identity(SimpleNamespace(net=theory.net), SimpleNamespace(config={k: v for k, v in cfg.items() if k != "x"}))
    for name in ("x_train", "y_train", "x_test"):
        if name in cfg and not _close(np.atleast_2d(getattr(theory, name)),
                                      np.atleast_2d(np.asarray(cfg[name], dtype=np.float64)).reshape(
                                          np.shape(getattr(theory, name)))):
            raise MismatchError(f"{name} differs between the theory and the Monte Carlo run; compare the same "
                                "training problem")
    _check_learning_rates(theory, mc)
    if cfg.get("batch_size") is not None:
        raise MismatchError(f"the Monte Carlo run used minibatch SGD (batch_size={cfg['batch_size']}); the theory is "
                            "full-batch gradient descent: compare a full-batch run (batch_size=None)")
    if theory.flow:
        raise MismatchError("the theory is gradient flow, the Monte Carlo run gradient descent: compare "
                            "pdlt.train_prediction(..., flow=False) with the run's eta and steps")
    if "eta" in cfg and not _close(theory.eta, cfg["eta"]):
        raise MismatchError(f"eta differs: theory {theory.eta:g} vs Monte Carlo {cfg['eta']:g}")
    if "steps" in cfg and (theory.steps is None or int(theory.steps) != int(cfg["steps"])):
        raise MismatchError(f"steps differ: theory {theory.steps} vs Monte Carlo {cfg['steps']}; use "
                            f"pdlt.train_prediction(..., steps={cfg['steps']}) for a run of that length")


def _compare_training(theory, mc, *, quantities, z_max, allowance, case) -> Comparison:
    """:func:`compare` for a trained ensemble: :func:`pdlt.train_prediction` against :func:`pdlt.sample_trained`
    of the same network, data, learning rates, eta and steps (full batch). Rows per test input and output
    (``trained_mean``, ``feature_shift``), test-input pair (``trained_cov``) or training-input pair
    (``ntk_change``), at layer L.

    With ``allowance="auto"`` the ``trained_mean`` rows of a network that trains its last layer only (a frozen,
    random NTK; at most 4 distinct inputs) take the computed O(1/n^2) term as their allowance
    (:attr:`pdlt.TrainPrediction.next_order`, :mod:`pdlt.theory.training_nnlo`), where it is smaller than the O(1/n)
    part. Elsewhere the O(1/n^2) remainder of the trained ensemble is not derived (lower layers training: the dNTK
    and ddNTKs at that order), and ``trained_cov`` is the infinite-width covariance: those rows are NOT RESOLVED (a
    caveat says so) and the test is a width sweep with 1/n fits (:func:`pdlt.sweeps.train_width_sweep`). A number
    ``c`` gives the allowance ``c * max|O(1/n) part|`` (``trained_cov``: ``c * max|cov|``)."""
    if not hasattr(getattr(mc, "frozen_shift", None), "mean"):
        raise ParameterError("compare(train_prediction, mc): mc must be a training run (pdlt.sample_trained), got "
                             f"{type(mc).__name__}", "mc")
    if isinstance(quantities, str):
        quantities = (quantities,)
    for q in quantities:
        if q not in TRAINING_QUANTITIES:
            raise ParameterError(f"unknown training quantity {q!r}; choose from {TRAINING_QUANTITIES}", "quantities")
    z_max, allowance = _check_thresholds(z_max, allowance)
    _check_training_identity(theory, mc)
    own = _incomplete(mc, stacklevel=5)
    L, nA = theory.net.L, theory.x_train.shape[0]
    rows = []
    for q in quantities:
        th, first = training_prediction(theory, q)
        est = getattr(mc, q)
        m, se = np.asarray(est.mean), np.asarray(est.stderr)
        if q == "ntk_change":
            m, se = m[:nA, :nA], se[:nA, :nA]
        if m.shape != th.shape:
            raise MismatchError(f"Monte Carlo {q} has shape {m.shape} but the theory has {th.shape}")
        scale = float(np.abs(first if first is not None else th).max())
        allow = np.zeros(th.shape)
        if allowance == "auto":
            nxt = _training_next_order(theory) if q == "trained_mean" else None
            # the computed next order where only the last layer trains, while it is smaller than the 1/n part
            controlled = nxt is not None and float(nxt.max()) < scale
            if controlled:
                allow = nxt
        else:
            allow, controlled = allow + float(allowance) * scale, True
        sym = q in ("trained_cov", "ntk_change")
        skipped = 0
        for idx in np.ndindex(th.shape):
            if sym and idx[0] > idx[1]:
                continue
            if not (np.isfinite(m[idx]) and np.isfinite(se[idx])):
                skipped += 1        # e.g. valid networks in one batch only: no jackknife error
                continue
            rows.append(Row(q, L, tuple(int(i) for i in idx), float(th[idx]), float(m[idx]), float(se[idx]),
                            float(allow[idx]), z_max, case, first_order=None if first is None else float(first[idx]),
                            controlled=controlled))
        if skipped:
            own.append(Caveat("undefined", f"{q}: the Monte Carlo value or its standard error is not finite for "
                              f"{skipped} entries (e.g. the valid networks fall in a single batch); those rows are "
                              "omitted"))
    if allowance == "auto" and any(not r.controlled for r in rows):
        own.append(Caveat("allowance", "trained networks: the O(1/n^2) remainder of the trained ensemble is derived "
                                       "only for the mean where only the last layer trains (a frozen NTK; at most 4 "
                                       "distinct inputs), and the covariance is the infinite-width one, so the other "
                                       "single-width rows are NOT RESOLVED; test the 1/n coefficients with a width "
                                       "sweep (pdlt.sweeps.train_width_sweep)"))
    # the theory's caveats exist once its O(1/n) mean was needed (every quantity but the infinite-width covariance)
    theirs = tuple(getattr(theory, "caveats", ()) or ()) if any(q != "trained_cov" for q in quantities) else ()
    caveats = merge_caveats(theirs, tuple(getattr(mc, "caveats", ()) or ()), own)
    return Comparison(tuple(rows), caveats)

"""Theory against Monte Carlo: one row per (quantity, layer, input indices), with z-scores and verdicts.

``compare(theory, mc)`` joins a :class:`pdlt.FiniteWidth` (predictions truncated at O(1/n)) with Monte Carlo
estimates (anything with ``two_point``, ``four_point``, ``four_point_single`` :class:`Estimate` attributes,
e.g. :class:`pdlt.MCResult`). Quantities and normalizations (PDLT conventions, ``n = n_{l-1}``):

* ``two_point``          ``E[z_{i;a} z_{i;b}]``, theory ``K + G1/n``;
* ``four_point``         distinct neurons, connected, theory ``V_{(ab)(cd)}/n``;
* ``four_point_single``  one neuron's fourth cumulant, theory ``(V_(ab)(cd) + V_(ac)(bd) + V_(ad)(bc))/n``.

**Verdict.** ``z = (mc - theory)/se`` with the Monte Carlo standard error. A row passes when
``|mc - theory| <= z_max se + allowance``. The allowance accounts for the known next order: the prediction
is truncated at O(1/n) and the truth differs by O(1/n^2). Layers l <= 2 are exact at O(1/n) (layer 1 is
Gaussian; at layer 2 the metric is an average of n_1 iid terms, so ``E z z = K`` and ``V/n_1`` are exact), so
their allowance is 0. For l >= 3 the default allowance is ``(l/n) * max|O(1/n) term|`` of that quantity and
layer: a relative next-order coefficient of at most 1 per unit of the depth-to-width ratio l/n, which holds
for the K*=0 and scale-invariant classes at criticality (formulas.md section 11: ``G2/(n G1) -> -l/(5n)``,
``V1/(n V) -> -7l/(15n)`` for tanh; ``G2 = 0`` for the scale-invariant class). Width sweeps with 1/n fits
(:mod:`pdlt.fits`, :func:`pdlt.verify.width_sweep`) need no allowance and are the stronger test.

False alarms: the standard errors come from a jackknife over B batches (default 32), so z is approximately
Student-t with B - 1 degrees of freedom, not normal: at ``z_max = 5`` a correct row fails with probability
2.1e-5 (t_31; 5.7e-7 for a normal z), so a table of 100 rows has a family-wise false-alarm rate of ~2e-3
(more batches tighten this: t_127 gives 2e-6 per row).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from .latex import booktabs, escape, fmt_number, fmt_uncertainty

__all__ = ["Row", "Comparison", "compare", "QUANTITIES"]

QUANTITIES = ("two_point", "four_point", "four_point_single")
_THEORY = {"two_point": "two_point", "four_point": "connected_four_point", "four_point_single": "connected_four_point_single"}
_TEX = {"two_point": r"E[z_a z_b]", "four_point": r"\langle z_{ia}z_{ib}z_{jc}z_{jd}\rangle_c",
        "four_point_single": r"\langle z_a z_b z_c z_d\rangle_c"}


@dataclass(frozen=True)
class Row:
    """One comparison: ``quantity`` at ``layer`` (1..L) for input indices ``inputs``."""

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

    @property
    def z(self) -> float:
        return (self.mc - self.theory) / self.se if self.se > 0 else math.copysign(math.inf, self.mc - self.theory)

    @property
    def ok(self) -> bool:
        within = bool(abs(self.mc - self.theory) <= self.z_max * self.se + self.allowance)
        return within != self.expect_reject

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(inputs=list(self.inputs), z=self.z, ok=self.ok)
        return d


@dataclass(frozen=True)
class Comparison:
    """Rows of :func:`compare` with an overall verdict and markdown / LaTeX / JSON output."""

    rows: tuple

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def n_failed(self) -> int:
        return sum(not r.ok for r in self.rows)

    def __add__(self, other: "Comparison") -> "Comparison":
        return Comparison(self.rows + other.rows)

    def to_markdown(self) -> str:
        head = "| case | quantity | l | inputs | theory | MC | se | z | allowance | verdict |"
        lines = [head, "|" + "---|" * 10]
        for r in self.rows:
            lines.append(f"| {r.case} | {r.quantity} | {r.layer} | {','.join(map(str, r.inputs))} | {r.theory:.6g} | "
                         f"{r.mc:.6g} | {r.se:.2g} | {r.z:+.2f} | {r.allowance:.2g} | {_verdict(r)} |")
        lines.append(f"\n**{len(self.rows) - self.n_failed}/{len(self.rows)} rows pass** "
                     f"({'PASS' if self.ok else 'FAIL'})")
        return "\n".join(lines)

    def to_latex(self, caption: str | None = None) -> str:
        body = []
        for r in self.rows:
            quantity = f"${_TEX[r.quantity]}$" if r.quantity in _TEX else escape(r.quantity)
            body.append([escape(r.case), quantity, str(r.layer),
                         ",".join(map(str, r.inputs)), fmt_number(r.theory, 6), "$" + fmt_uncertainty(r.mc, r.se) + "$",
                         f"${r.z:+.2f}$", _verdict(r).lower() if r.ok else r"\textbf{fail}"])
        cap = caption or (f"Theory (order $1/n$) against Monte Carlo: {len(self.rows) - self.n_failed} of "
                          f"{len(self.rows)} rows pass ($|\\Delta| \\le z_{{\\max}}\\,\\sigma + $ allowance).")
        return booktabs(["case", "quantity", r"$\ell$", "inputs", "theory", "MC", "$z$", "verdict"], body,
                        align="llrlrrrl", caption=cap)

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "rows": [r.as_dict() for r in self.rows]}, indent=2, default=float)


def _verdict(r: Row) -> str:
    if not r.ok:
        return "FAIL"
    return "REJECTED (control)" if r.expect_reject else "PASS"


def _index_sets(quantity: str, d: int):
    if quantity == "two_point":
        return list(itertools.combinations_with_replacement(range(d), 2))
    if quantity == "four_point_single":
        return list(itertools.combinations_with_replacement(range(d), 4))
    pairs = list(itertools.combinations_with_replacement(range(d), 2))
    return [p + q for p, q in itertools.combinations_with_replacement(pairs, 2)]


def _first_order_term(theory, quantity: str, l: int) -> np.ndarray:
    """The O(1/n) part of the prediction at layer l (G1/n or the four-point prediction itself)."""
    if quantity == "two_point":
        return theory.G1[l - 1] / theory.net.widths[l - 1]
    return getattr(theory, _THEORY[quantity])(l)


def compare(theory, mc, *, quantities=QUANTITIES, layers=None, z_max: float = 5.0, allowance="auto",
            case: str = "") -> Comparison:
    """Rows ``(quantity, layer, inputs, theory, mc, se, z)`` for every distinct index set.

    ``theory``: :class:`pdlt.FiniteWidth`; ``mc``: estimates with the same ``L`` and ``d`` (e.g.
    :class:`pdlt.MCResult`). ``layers``: which layers (default: 2..L; layer 1 is Gaussian and its four-point
    functions vanish identically). ``allowance``: ``"auto"`` (module docstring), a number (relative: times
    ``max|O(1/n) term|``), or ``0`` for none.
    """
    L, d = theory.K.shape[0], theory.K.shape[-1]
    for q in quantities:
        if q not in QUANTITIES:
            raise ValueError(f"unknown quantity {q!r}; choose from {QUANTITIES}")
        est = getattr(mc, q)
        want = (L,) + (d,) * (2 if q == "two_point" else 4)
        if est.mean.shape != want:
            raise ValueError(f"Monte Carlo {q} has shape {est.mean.shape} but the theory has {want}: same network "
                             "(depth L) and inputs (d) are needed")
    layers = list(range(2, L + 1)) if layers is None else list(layers)
    rows = []
    for q in quantities:
        est = getattr(mc, q)
        for l in layers:
            th = getattr(theory, _THEORY[q])(l)
            n = theory.net.widths[l - 1]
            if allowance == "auto":
                allow = 0.0 if l <= 2 else (l / n) * float(np.abs(_first_order_term(theory, q, l)).max())
            else:
                allow = float(allowance) * float(np.abs(_first_order_term(theory, q, l)).max())
            for idx in _index_sets(q, d):
                m, s = est.mean[(l - 1,) + idx], est.stderr[(l - 1,) + idx]
                if not np.isfinite(m):
                    continue  # e.g. a width-1 layer has no pair of distinct neurons
                rows.append(Row(q, l, idx, float(th[idx]), float(m), float(s), allow, z_max, case))
    return Comparison(tuple(rows))

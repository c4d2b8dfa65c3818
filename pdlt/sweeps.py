"""Width sweeps: Monte Carlo at several widths n, weighted 1/n fits, and their comparison with theory.

For an MLP with uniform hidden widths n (``widths = (n_0, n, ..., n)``) the theory does not depend on n at
fixed order: at layer l,

* ``E[z_{i;a} z_{i;b}] = K_ab + G1_ab/n + O(1/n^2)``: a fit ``a + b/n + c/n^2`` must give ``a = K`` (the
  infinite-width kernel) and ``b = G1`` (PDLT's NLO kernel);
* ``n * connected four-point (i != j) = V_(ab)(cd) + O(1/n)``: the fit's ``a`` must equal ``V``; its ``b`` is the
  next-order vertex (not predicted here).

The fit absorbs the O(1/n^2) remainder instead of hiding it in a tolerance, so these rows need no
allowance (with ``order=2``; an ``order=1`` fit neglects the c/n^2 term and is only as good as that is small).
**Negative control:** the infinite-width-only prediction ``E z z = K`` is tested against the Monte Carlo at the
smallest width; where the 1/n effect is resolvable with margin (``|G1|/n > (z_max + 3) se``) it must be rejected
(``|z| > z_max``), else the sweep could not tell the 1/n theory from none.

Rows are :class:`pdlt.comparison.Row` objects (quantity ``"two_point a"``, ``"two_point b"``, ``"vertex a"``,
``"control: K only"``), so sweeps and single-width comparisons share one table format.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .architecture import MLP, dataset
from .comparison import Comparison, Row, incomplete_caveat, merge_caveats
from .errors import ParameterError, TruncationWarning, emit
from .fits import InverseWidthFit, inverse_width_fit
from .observables import get as _observable
from .validation import check_int, check_real_array

#: the observables a sweep fits, each with the coefficients the theory predicts (``expected``)
FITTED = ("two_point", "vertex")

__all__ = ["WidthSweep", "width_sweep", "NTKWidthSweep", "ntk_width_sweep", "NTK_FITTED", "TrainWidthSweep",
           "train_width_sweep"]


@dataclass(frozen=True, eq=False)
class WidthSweep:
    """Monte Carlo results ``results[k]`` at hidden widths ``widths[k]`` and the theory (O(1/n), n-independent
    coefficients ``K``, ``G1``, ``V``) of the same architecture."""

    theory: object
    widths: tuple
    results: tuple
    case: str = ""

    def theory_at(self, k: int):
        """The O(1/n) theory of the k-th network, whose observables use its width. K, G1 and V do not depend on
        the uniform hidden width (r_l = 1 for l >= 2; r_1 multiplies V^(1) = G1^(1) = 0)."""
        return _theory_at(self, k)

    def _series(self, quantity: str, l: int, idx: tuple):
        _check_fitted(quantity)
        idx = _entry(self.theory, quantity, l, idx)
        est = [getattr(r, quantity) for r in self.results]
        m = np.array([e.mean[(l - 1,) + idx] for e in est])
        s = np.array([e.stderr[(l - 1,) + idx] for e in est])
        return m, s

    def fit(self, quantity: str, l: int, idx: tuple, order: int = 2) -> InverseWidthFit:
        """Weighted fit of the Monte Carlo ``quantity`` (``"two_point"`` or ``"vertex"``) at layer l, entry idx."""
        m, s = self._series(quantity, l, idx)
        return inverse_width_fit(self.widths, m, s, order=order)

    def expected(self, quantity: str, l: int, idx: tuple):
        """``(a, b)`` predicted for the fit: ``(K, G1)`` for the two-point function, ``(V, None)`` for the vertex."""
        _check_fitted(quantity)
        i = (l - 1,) + _entry(self.theory, quantity, l, idx)
        if quantity == "two_point":
            return float(self.theory.K[i]), float(self.theory.G1[i])
        return float(self.theory.V[i]), None

    def rows(self, layers=None, *, order: int = 2, z_max: float = 5.0, entries=None) -> Comparison:
        """Fit rows (a and b of the two-point function, a of the vertex) for ``layers`` (default: the last) and
        every distinct entry (or ``entries``: a dict ``{"two_point": [(a, b), ...], "vertex": [(a, b, c, d), ...]}``),
        plus the negative control at the smallest width for each two-point entry."""
        d = self.theory.K.shape[-1]
        layers = _layers(self.theory, layers)
        order = _rows_order(order)
        pairs = [(a, b) for a in range(d) for b in range(a, d)]
        entries = _entries(entries, FITTED) or {"two_point": pairs,
                                                "vertex": [p + q for i, p in enumerate(pairs) for q in pairs[i:]]}
        out = []
        for l in layers:
            for idx in entries.get("two_point", ()):
                f = self.fit("two_point", l, idx, order)
                K, G1 = self.expected("two_point", l, idx)
                out.append(Row("two_point a", l, idx, K, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max, self.case))
                out.append(Row("two_point b", l, idx, G1, float(f.coef[1]), float(f.stderr[1]), 0.0, z_max, self.case))
                m, s = self._series("two_point", l, idx)
                k = int(np.argmin(self.widths))
                n_min = self.widths[k]
                # resolvable with margin (expected |z| >= z_max + 3, so a chance miss is ~1e-3): then the
                # infinite-width-only prediction must be rejected
                if abs(G1) / n_min > (z_max + 3) * s[k]:
                    out.append(Row("control: K only", l, idx, K, float(m[k]), float(s[k]), 0.0, z_max,
                                   f"{self.case}, n={n_min}", expect_reject=True))
            for idx in entries.get("vertex", ()):
                f = self.fit("vertex", l, idx, order)
                V, _ = self.expected("vertex", l, idx)
                out.append(Row("vertex a", l, idx, V, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max, self.case))
        return Comparison(tuple(out), self.caveats())

    def caveats(self) -> tuple:
        """The theory's and every run's caveats, plus one per incomplete run (also issued as a warning)."""
        own = []
        for n, r in zip(self.widths, self.results):
            c = incomplete_caveat(r)
            if c is not None and not any(k.kind == "incomplete" for k in getattr(r, "caveats", ()) or ()):
                own.append(type(c)(c.kind, f"n = {n}: {c.message}"))
        emit(own)
        return merge_caveats(tuple(getattr(self.theory, "caveats", ()) or ()),
                      *(tuple(getattr(r, "caveats", ()) or ()) for r in self.results), own)


def _check_fitted(quantity) -> None:
    _observable(quantity)  # an unknown name: ParameterError listing the observables
    if quantity not in FITTED:
        raise ParameterError(f"sweeps fit {' or '.join(map(repr, FITTED))}, got quantity={quantity!r}", "quantity")


def _theory_at(sweep, k):
    """The theory of ``sweep`` for the network of its k-th width (``0 <= k < len(widths)``)."""
    k = check_int(k, "k", minimum=0, maximum=len(sweep.widths) - 1)
    th = sweep.theory
    net = MLP(th.net.activation, (th.net.n0,) + (sweep.widths[k],) * th.net.L, C_W=th.net.C_W, C_b=th.net.C_b,
              gamma=th.net.gamma, xi=th.net.xi)
    return th.with_net(net)


def _entry(theory, quantity: str, l, idx) -> tuple:
    """``idx`` checked as an entry of ``quantity`` at layer l of ``theory`` (l in 1..L; as many input indices as the
    observable's rank, each in 0..d-1): numpy would read layer 0 as layer L, and index -1 as the last input."""
    theory.net._check_layer(l)
    field = {"two_point": "K", "vertex": "V", "ntk_mean": "Theta"}.get(quantity, quantity)
    rank = 1 if quantity == "ntk_variance" else np.ndim(getattr(theory, field)[0])
    d = int(np.shape(theory.K if hasattr(theory, "K") else theory.Theta)[-1])
    return _index(idx, (d,) * rank, quantity)


def _index(idx, shape: tuple, quantity: str) -> tuple:
    """``idx`` checked as an index tuple within ``shape`` (numpy would wrap a negative one)."""
    try:
        ok = len(idx) == len(shape) and all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))
                                            and 0 <= a < m for a, m in zip(idx, shape))
    except TypeError:
        ok = False
    if not ok:
        raise ParameterError(f"an entry of {quantity} is an index tuple within its shape {shape}, got {idx!r}", "idx")
    return tuple(int(a) for a in idx)


def _layers(theory, layers) -> list:
    """``layers`` of :meth:`WidthSweep.rows` checked (None: the last; one layer or an iterable of layers)."""
    if layers is None:
        return [theory.net.L]
    layers = [layers] if isinstance(layers, (int, np.integer)) else layers
    try:
        layers = list(layers)
    except TypeError:
        raise ParameterError(f"layers must be a layer index or a list of them, got {layers!r}", "layers") from None
    for l in layers:
        theory.net._check_layer(l)
    return layers


def _rows_order(order) -> int:
    """The fits' order for rows: 1 (``a + b/n``) or more (each row reads b)."""
    return check_int(order, "order", minimum=1)


def _entries(entries, known: tuple):
    """``entries`` of ``rows`` checked: None, or a dict whose keys are fitted observables (a misspelt key gave no
    rows, silently); the entries themselves are checked where they are read."""
    if entries is None:
        return None
    if not isinstance(entries, dict) or not entries:
        raise ParameterError(f"entries must be a non-empty dict {{observable: [index tuples]}}, got {entries!r}",
                             "entries")
    unknown = [k for k in entries if k not in known]
    if unknown:
        raise ParameterError(f"entries names {unknown}; the sweep fits {known}", "entries")
    return entries


def _sweep_widths(widths, fewest: int, what: str) -> tuple:
    """``widths`` checked: an iterable of at least ``fewest`` distinct integers >= 2 (a float with a fractional part
    is refused, not truncated)."""
    try:
        ws = tuple(check_int(n, "widths") for n in widths)
    except TypeError:
        raise ParameterError(f"widths must be a list of layer widths, got {widths!r}", "widths") from None
    if len(ws) < fewest or len(set(ws)) != len(ws) or min(ws) < 2:
        raise ParameterError(f"{what} needs >= {fewest} distinct widths >= 2, got widths={ws}", "widths")
    return ws


def width_sweep(activation, x, depth: int, widths, *, C_W=1.0, C_b=0.0, gamma=0.0, xi=1.0, n_samples: int = 50_000,
                seed: int = 0, method: str = "markov", progress: bool = False, case: str = "") -> WidthSweep:
    """Monte Carlo of ``MLP(activation, (n_0,) + (n,) * depth, C_W, C_b, gamma, xi)`` for every n in ``widths`` (seed
    ``seed + k`` for the k-th width, independent runs) and its O(1/n) theory."""
    from .montecarlo import sample
    from .theory.finite_width import finite_width

    widths = _sweep_widths(widths, 2, "a width sweep")
    seed = check_int(seed, "seed", minimum=0)
    depth = check_int(depth, "depth", minimum=1)
    x = dataset(x)
    nets = [MLP(activation, (x.shape[1],) + (n,) * depth, C_W=C_W, C_b=C_b, gamma=gamma, xi=xi) for n in widths]
    with warnings.catch_warnings():
        # a sweep fits a + b/n + c/n^2 and does not rest on the truncated prediction at any one width; the
        # theory's truncation caveats (at the smallest width) still go into the sweep's tables
        warnings.simplefilter("ignore", TruncationWarning)
        theory = finite_width(nets[0], x)
    results = tuple(sample(net, x, n_samples, seed=seed + k, method=method, progress=progress)
                    for k, net in enumerate(nets))
    return WidthSweep(theory=theory, widths=widths, results=results, case=case or nets[0].activation.name)


# ---------------------------------------------------------------------------------------------------
# NTK width sweeps
# ---------------------------------------------------------------------------------------------------

#: the NTK observables a sweep fits: the mean NTK (a = Theta, b = Theta1) and the n-scaled tensors (a = A ... U)
NTK_FITTED = ("ntk_mean", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U")


@dataclass(frozen=True, eq=False)
class NTKWidthSweep:
    """NTK Monte Carlo runs (:func:`pdlt.montecarlo.sample_ntk`) ``results[k]`` at hidden widths ``widths[k]`` and
    the NTK theory (:func:`pdlt.ntk`) of the same architecture and learning rates. With uniform hidden widths the
    theory's coefficients do not depend on n:

    * ``E[H_ii;ab] = Theta_ab + Theta1_ab/n + O(1/n^2)``: the fit ``a + b/n`` (``+ c/n^2`` with four or more
      widths) must give ``a = Theta`` and ``b = Theta1`` (the multi-input Theta1 is tested here);
    * ``n * (NTK, dNTK, ddNTK statistic) = X + O(1/n)`` for X = A, B, D, F, P, Q, R, S, T, U: the fit's ``a``.

    Negative controls at the smallest width, where the 1/n effect is resolvable with margin (expected |z| >=
    z_max + 3): the frozen NTK alone (``E H = Theta``) and the frozen NTK's zero variance must be rejected."""

    theory: object
    widths: tuple
    results: tuple
    case: str = ""

    def theory_at(self, k: int):
        """The NTK theory of the k-th network (its predictions divide by its width)."""
        return _theory_at(self, k)

    def _series(self, quantity: str, l: int, idx: tuple):
        if quantity not in NTK_FITTED + ("ntk_variance",):
            raise ParameterError(f"NTK sweeps fit {NTK_FITTED}, got quantity={quantity!r}", "quantity")
        idx = _entry(self.theory, quantity, l, idx)
        est = [getattr(r, quantity) for r in self.results]
        return (np.array([e.mean[(l - 1,) + idx] for e in est]), np.array([e.stderr[(l - 1,) + idx] for e in est]))

    def fit(self, quantity: str, l: int, idx: tuple, order: int = 2) -> InverseWidthFit:
        """Weighted fit ``a + b/n (+ c/n^2)`` of the Monte Carlo ``quantity`` at layer l, entry idx."""
        m, s = self._series(quantity, l, idx)
        return inverse_width_fit(self.widths, m, s, order=order)

    def rows(self, layers=None, *, order: int = 2, z_max: float = 5.0, entries=None) -> Comparison:
        """Fit rows for ``layers`` (default: the last): ``ntk_mean a`` (Theta) and ``b`` (Theta1) per input pair,
        ``X a`` per entry of each tensor X (``entries``: ``{name: [index tuples]}``, default: every pair for
        ntk_mean and the diagonal ``(a, a, a, a)`` plus ``(0, 1, 0, 1)``-type mixed entries for the tensors), and
        the negative controls."""
        th = self.theory
        d = th.Theta.shape[-1]
        layers = _layers(th, layers)
        entries = _entries(entries, NTK_FITTED)
        if entries is None:
            pairs = [(a, b) for a in range(d) for b in range(a, d)]
            quads = [(a,) * 4 for a in range(d)] + ([(0, 1, 0, 1), (0, 0, 1, 1)] if d > 1 else [])
            entries = {"ntk_mean": pairs, **{q: quads for q in NTK_FITTED[1:]}}
        k = int(np.argmin(self.widths))
        n_min = self.widths[k]
        # keep one degree of freedom: with three widths the fits are a + b/n whatever order asks for
        order = min(_rows_order(order), len(self.widths) - 2)
        out = []
        for l in layers:
            for idx in entries.get("ntk_mean", ()):
                f = self.fit("ntk_mean", l, idx, order)
                Th, Th1 = float(th.Theta[(l - 1,) + idx]), float(th.Theta1[(l - 1,) + idx])
                out.append(Row("ntk_mean a", l, idx, Th, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max, self.case))
                out.append(Row("ntk_mean b", l, idx, Th1, float(f.coef[1]), float(f.stderr[1]), 0.0, z_max, self.case))
                m, s = self._series("ntk_mean", l, idx)
                if abs(Th1) / n_min > (z_max + 3) * s[k]:
                    out.append(Row("control: frozen NTK", l, idx, Th, float(m[k]), float(s[k]), 0.0, z_max,
                                   f"{self.case}, n={n_min}", expect_reject=True))
            for q in NTK_FITTED[1:]:
                for idx in entries.get(q, ()):
                    want = float(getattr(th, q)[(l - 1,) + idx])
                    m, s = self._series(q, l, idx)
                    if np.all(s == 0.0) and np.all(m == m[0]):
                        # the same value in every network at every width (P, R, U of the ReLU family: 0 exactly):
                        # nothing to fit, the theory must equal it
                        out.append(Row(f"{q} a", l, idx, want, float(m[0]), 0.0, 0.0, z_max, self.case))
                        continue
                    f = self.fit(q, l, idx, order)
                    out.append(Row(f"{q} a", l, idx, want, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max,
                                   self.case))
            for a in range(d):
                m, s = self._series("ntk_variance", l, (a,))
                if m[k] > (z_max + 3) * s[k]:
                    out.append(Row("control: no NTK fluctuation", l, (a,), 0.0, float(m[k]), float(s[k]), 0.0, z_max,
                                   f"{self.case}, n={n_min}", expect_reject=True))
        return Comparison(tuple(out), WidthSweep.caveats(self))

    def caveats(self) -> tuple:
        return WidthSweep.caveats(self)


def ntk_width_sweep(activation, x, depth: int, widths, *, C_W=1.0, C_b=0.0, lambda_b=1.0, lambda_W=1.0,
                    n_samples: int = 20_000, seed: int = 0, progress: bool = False, case: str = "", gamma=0.0,
                    xi=1.0) -> NTKWidthSweep:
    """NTK Monte Carlo of ``MLP(activation, (n_0,) + (n,) * depth, C_W, C_b, gamma, xi)`` for every n in ``widths``
    (seed ``seed + k`` for the k-th width) and its NTK theory with the same learning rates (residual networks:
    ``gamma``, ``xi``, one input)."""
    from .montecarlo import sample_ntk
    from .theory.ntk import ntk

    widths = _sweep_widths(widths, 3, "an NTK width sweep")
    seed = check_int(seed, "seed", minimum=0)
    depth = check_int(depth, "depth", minimum=1)
    x = dataset(x)
    nets = [MLP(activation, (x.shape[1],) + (n,) * depth, C_W=C_W, C_b=C_b, gamma=gamma, xi=xi) for n in widths]
    theory = ntk(nets[0], x, lambda_b=lambda_b, lambda_W=lambda_W)
    results = tuple(sample_ntk(net, x, n_samples, seed=seed + k, lambda_b=lambda_b, lambda_W=lambda_W,
                               progress=progress) for k, net in enumerate(nets))
    return NTKWidthSweep(theory=theory, widths=widths, results=results, case=case or nets[0].activation.name)


@dataclass(frozen=True, eq=False)
class TrainWidthSweep:
    """Training Monte Carlo runs (:func:`pdlt.sample_trained`) ``results[k]`` at hidden widths ``widths[k]`` and the
    trained-ensemble theory (:func:`pdlt.train_prediction`) of the same problem. With uniform hidden widths the
    theory's coefficients do not depend on n:

    * ``E[z_d(t)] = m_d + m1_d/n + O(1/n^2)``: the fit ``a + b/n`` (``+ c/n^2`` with four or more widths) must give
      ``a = mean`` (frozen NTK) and ``b = mean_correction``;
    * ``E[z_d(t) - zf_d(t)]`` (each network minus its own frozen-NTK prediction): ``a = 0`` and ``b`` = the dNTK +
      ddNTK part;
    * ``E[H_ii(t) - H_ii(0)]`` on the training inputs: ``a = 0`` and ``b = ntk_change``;
    * ``Cov z(t)``: ``a`` = the infinite-width covariance.

    The O(1/n^2) terms of training are large at small widths (derivations/README.md section 19: at L = 2 the NTK
    change at n = 16 is about half its 1/n value), so sweeps should reach n ~ 100 and fit ``a + b/n + c/n^2`` (four
    widths or more). Negative controls at the widest width (where the 1/n prediction of the effect is most
    accurate), where the 1/n effect is resolvable with margin (expected |z| >= z_max + 3): the frozen-NTK mean, "no
    feature learning" (shift 0) and "the NTK does not move" must be rejected."""

    theory: object
    widths: tuple
    results: tuple
    case: str = ""

    def _series(self, quantity: str, idx: tuple):
        shapes = {"mean": self.theory.mean.shape, "frozen_shift": self.theory.mean.shape, "cov": self.theory.cov.shape,
                  "ntk_change": self.theory.ntk_change.shape}
        if quantity not in shapes:
            raise ParameterError(f"training sweeps fit {tuple(shapes)}, got quantity={quantity!r}", "quantity")
        idx = _index(idx, shapes[quantity], quantity)
        est = [getattr(r, quantity) for r in self.results]
        return np.array([e.mean[idx] for e in est]), np.array([e.stderr[idx] for e in est])

    def fit(self, quantity: str, idx: tuple, order: int = 1) -> InverseWidthFit:
        """Weighted fit ``a + b/n (+ c/n^2)`` of the Monte Carlo ``quantity`` (``mean``, ``frozen_shift``, ``cov``,
        ``ntk_change``) at entry ``idx``."""
        m, s = self._series(quantity, idx)
        return inverse_width_fit(self.widths, m, s, order=order)

    def rows(self, *, order: int = 2, z_max: float = 5.0) -> Comparison:
        """Fit rows per test input and output (``trained_mean a/b``, ``feature_shift a/b``), per pair of training
        inputs (``ntk_change a/b``), per test input (``trained_cov a``, the variance), and the negative controls."""
        th = self.theory
        L = th.net.L
        shift = th.pieces["dntk"] + th.pieces["ddntk"]
        # controls at the widest width: there the O(1/n^2) terms, which make the 1/n prediction overshoot at small
        # widths (half the effect at n = 16), are smallest, so "resolvable" is judged on a reliable effect size
        k = int(np.argmax(self.widths))
        n_ctl = self.widths[k]
        order = min(_rows_order(order), len(self.widths) - 2)
        out = []
        for idx in np.ndindex(th.mean.shape):
            f = self.fit("mean", idx, order)
            out.append(Row("trained_mean a", L, idx, float(th.mean[idx]), float(f.coef[0]), float(f.stderr[0]), 0.0,
                           z_max, self.case))
            out.append(Row("trained_mean b", L, idx, float(th.mean_correction[idx]), float(f.coef[1]),
                           float(f.stderr[1]), 0.0, z_max, self.case))
            f = self.fit("frozen_shift", idx, order)
            out.append(Row("feature_shift a", L, idx, 0.0, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max, self.case))
            out.append(Row("feature_shift b", L, idx, float(shift[idx]), float(f.coef[1]), float(f.stderr[1]), 0.0,
                           z_max, self.case))
            m, s = self._series("mean", idx)
            if abs(th.mean_correction[idx]) / n_ctl > (z_max + 3) * s[k]:
                out.append(Row("control: frozen NTK", L, idx, float(th.mean[idx]), float(m[k]), float(s[k]), 0.0,
                               z_max, f"{self.case}, n={n_ctl}", expect_reject=True))
            m, s = self._series("frozen_shift", idx)
            if abs(shift[idx]) / n_ctl > (z_max + 3) * s[k]:
                out.append(Row("control: no feature learning", L, idx, 0.0, float(m[k]), float(s[k]), 0.0, z_max,
                               f"{self.case}, n={n_ctl}", expect_reject=True))
        nA = th.ntk_change.shape[0]
        for idx in ((a, b) for a in range(nA) for b in range(a, nA)):
            f = self.fit("ntk_change", idx, order)
            out.append(Row("ntk_change a", L, idx, 0.0, float(f.coef[0]), float(f.stderr[0]), 0.0, z_max, self.case))
            out.append(Row("ntk_change b", L, idx, float(th.ntk_change[idx]), float(f.coef[1]), float(f.stderr[1]), 0.0,
                           z_max, self.case))
            m, s = self._series("ntk_change", idx)
            if abs(th.ntk_change[idx]) / n_ctl > (z_max + 3) * s[k]:
                out.append(Row("control: NTK does not move", L, idx, 0.0, float(m[k]), float(s[k]), 0.0, z_max,
                               f"{self.case}, n={n_ctl}", expect_reject=True))
        for a in range(th.cov.shape[0]):
            f = self.fit("cov", (a, a), order)
            out.append(Row("trained_cov a", L, (a, a), float(th.cov[a, a]), float(f.coef[0]), float(f.stderr[0]), 0.0,
                           z_max, self.case))
        return Comparison(tuple(out), WidthSweep.caveats(self))

    def caveats(self) -> tuple:
        return WidthSweep.caveats(self)


def train_width_sweep(activation, x_train, y_train, x_test, depth: int, widths, *, C_W=1.0, C_b=0.0, lambda_b=1.0,
                      lambda_W=1.0, eta: float, steps: int, n_samples: int = 10_000, seed: int = 0,
                      progress: bool = False, case: str = "") -> TrainWidthSweep:
    """Train ``n_samples`` networks ``MLP(activation, (n_0,) + (n,) * (depth - 1) + (n_L,), C_W, C_b)`` for every
    hidden width n in ``widths`` (seed ``seed + k`` for the k-th) by ``steps`` full-batch GD steps of size ``eta``,
    and the trained-ensemble theory (:func:`pdlt.train_prediction`) of the same problem. ``n_L`` is the number of
    target columns of ``y_train``."""
    from .montecarlo.runner import sample_trained
    from .theory.training import train_prediction

    widths = _sweep_widths(widths, 3, "a training width sweep")
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 2:
        raise ParameterError(f"a training width sweep needs depth >= 2 (a hidden layer whose width is swept), got "
                             f"depth={depth!r}", "depth")
    xa = dataset(x_train, "x_train")
    y = check_real_array(y_train, "y_train")
    nL = 1 if y.ndim == 1 else y.shape[1]
    nets = [MLP(activation, (xa.shape[1],) + (n,) * (depth - 1) + (nL,), C_W=C_W, C_b=C_b) for n in widths]
    theory = train_prediction(nets[0], xa, y, x_test, lambda_b, lambda_W, eta=eta, steps=steps)
    results = tuple(sample_trained(net, xa, y, x_test, n_samples, seed=seed + k, lambda_b=lambda_b, lambda_W=lambda_W,
                                   eta=eta, steps=steps, progress=progress) for k, net in enumerate(nets))
    return TrainWidthSweep(theory=theory, widths=widths, results=results, case=case or nets[0].activation.name)

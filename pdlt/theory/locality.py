r"""Locality of influence: how far a datapoint's influence reaches, how that reach flows with depth, and screening
(derivations/README.md §20.3 with its "Depth laws", §20.4).

**Profiles.** Training particles sit on a path through input space: a circle through ``x0`` (centred at the origin,
in the plane of ``x0`` and ``x1``, radius ``|x0|``, so every input has the same norm and the kernel depends on the
angle alone) or the line through ``x0`` and ``x1``. The test particle is ``x0``; the training particles sit at
``n_train`` evenly spaced positions, offset from it by a quarter of a spacing on a circle (so that no particle sits
on the test input or opposite it; with an odd ``n_train`` no two particles are antipodal either, which the 1/n
recursions need without bias) and by half a spacing on a line. The profile is the target
response ``I_a = d m(x0) / d y_a`` (:func:`pdlt.influence`) against each particle's distance ``d_a`` from ``x0``
along the path (the angle for a circle), for the network cut at every depth ``l = 1..L`` (its outputs are layer
``l``'s preactivations, so layer ``l``'s statistics enter; at O(1/n) with ``n = n_{l-1}``).

**Influence length.** The reach of a profile is its RMS distance weighted by the squared influence,

    ell = sqrt( sum_a I_a^2 d_a^2 / sum_a I_a^2 ),

in the path's distance units. It is comparable across activations through ``ell / ell_uniform``, the same for a
profile of uniform magnitude: near 0 the influence is local, 1 means it is spread evenly over the whole dataset,
above 1 the distant particles weigh more than the near ones (a linear kernel: the antipodal particle pulls as hard
as the nearest, with opposite sign). The temperature (``noise_var``) sets which of the kernel's modes the posterior
resolves (the example ``examples/influence_locality.py`` prints the influence length against it).

**Depth laws** (:func:`locality_law`, :meth:`LocalityProfile.flow_exponent`). The part of ``1 - rho`` common to all
pairs gives an exactly uniform profile, so the profile departs from uniform only through the pair-dependent rest,
relative to ``noise_var + K (common part)``. At criticality ReLU (any ``a_+ != a_-``) first localizes and then
flattens like ``l^-3`` beyond a crossover depth ``l_* ~ 1/sqrt(noise_var)`` (``l^-1`` at zero noise): every angle
flows to ``3 pi / (2 beta l)`` and remembers where it started only at order ``l^-2``. tanh-like activations (the
K*=0 class, odd) freeze their correlations while ``K ~ 1/l`` sinks below the noise, so the profile tends to a fixed
shape like ``1/l``. In the ordered phase ``1 - ell/ell_uniform ~ exp(-l / xi_perp)`` at noise > 0
(:func:`pdlt.correlation_length`), frozen at zero noise.

**Screening.** :func:`screening` gives the influence of a source particle on the test particle as screening
particles are added one at a time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._x64 import float64
from ..architecture import MLP, checked_training_block
from ..errors import Caveat, ParameterError, PdltError, SingularKernelError, TruncationWarning, emit, truncation_caveat
from ..validation import check_int, check_real, check_real_array

__all__ = ["LocalityProfile", "locality_profile", "influence_length", "LocalityLaw", "locality_law", "Screening",
           "screening"]

_GEOMETRIES = ("circle", "line")


def influence_length(influence, distance) -> np.ndarray:
    """``sqrt(sum I^2 d^2 / sum I^2)`` over the last axis: ``influence`` ``(..., P)``, ``distance`` ``(P,)``. A profile
    that vanishes for every particle has no length: :class:`~pdlt.errors.ParameterError`."""
    w = np.asarray(influence, dtype=np.float64) ** 2
    d2 = np.asarray(distance, dtype=np.float64) ** 2
    tot = w.sum(-1)
    if np.any(tot == 0) or not np.all(np.isfinite(tot)) or d2.shape != w.shape[-1:]:
        raise ParameterError(f"influence must be finite and not vanish for every particle (then there is no length), "
                             f"with one distance per particle: shapes {w.shape}, {d2.shape}", "influence")
    return np.sqrt((w * d2).sum(-1) / tot)


@dataclass(frozen=True)
class LocalityProfile:
    """Influence profiles along a path (module docstring). ``x_train`` ``(P, n_0)``, ``x_test`` ``(n_0,)``,
    ``position`` ``(P,)``: each particle's signed position along the path (the angle from ``x0`` on a circle), its
    ``distance`` the absolute value; ``depth`` ``(k,)``: the depths profiled (all of ``1..L`` by default, when row
    ``l - 1`` is depth ``l``); ``infinite`` ``(k, P)``: ``d m(x0) / d y_a`` at infinite width for the network cut at
    each depth; ``correction`` ``(k, P)``: its 1/n coefficient (``order=1``; 0 at depth 1, layer 1 being exactly
    Gaussian), ``n`` ``(k,)`` the widths ``n_{l-1}`` that divide it; ``y`` the targets ``(P,)`` the response is taken
    at (it matters at O(1/n) only)."""

    x_train: np.ndarray
    x_test: np.ndarray
    position: np.ndarray
    infinite: np.ndarray
    n: np.ndarray
    noise_var: float
    geometry: str
    y: np.ndarray
    correction: np.ndarray | None = None
    caveats: tuple[Caveat, ...] = ()
    depth: np.ndarray | None = None

    @property
    def distance(self) -> np.ndarray:
        """``|position|`` ``(P,)``: each particle's distance from the test particle along the path."""
        return np.abs(self.position)

    def row(self, l: int) -> int:
        """The row of depth ``l`` in the ``(k, P)`` arrays; :class:`~pdlt.errors.ParameterError` if ``l`` was not
        profiled."""
        hit = np.flatnonzero(self.depth == l)
        if not hit.size:
            raise ParameterError(f"depth {l!r} was not profiled (depths {self.depth.tolist()}); pass it in depths=",
                                 "depths")
        return int(hit[0])

    @property
    def influence(self) -> np.ndarray:
        """``(k, P)`` to the order computed."""
        if self.correction is None:
            return self.infinite
        return self.infinite + self.correction / self.n[:, None]

    @property
    def length(self) -> np.ndarray:
        """The influence length ``ell`` per depth ``(k,)`` (module docstring), to the order computed."""
        return influence_length(self.influence, self.distance)

    @property
    def length_uniform(self) -> float:
        """``ell`` of a flat profile on the same particles: the fully delocalized reference."""
        return float(influence_length(np.ones_like(self.distance), self.distance))

    @property
    def locality(self) -> np.ndarray:
        """``ell / ell_uniform`` per depth ``(k,)``: near 0 local, 1 spread evenly over the particles."""
        return self.length / self.length_uniform

    def flow_exponent(self) -> np.ndarray:
        """The local exponent ``p(l) = -d ln|1 - ell/ell_uniform| / d ln l`` per depth ``(k,)`` (centred differences
        over :attr:`depth`, one-sided at the ends): where the profile flattens like ``l^-p`` it tends to ``p``
        (:func:`locality_law` gives the derived value), where it freezes to 0, and in the ordered phase it grows
        like ``l / xi_perp``. Needs two depths or more; a depth where the profile is exactly flat
        (``ell = ell_uniform``) has no exponent: :class:`~pdlt.errors.ParameterError`."""
        dev = np.abs(1.0 - self.locality)
        if dev.size < 2 or np.any(dev == 0):
            raise ParameterError("flow_exponent needs profiles at two depths or more, none of them exactly flat; "
                                 "profile more depths (depths=...)", "depths")
        return -np.gradient(np.log(dev), np.log(self.depth.astype(np.float64)))

    def __post_init__(self):
        if self.depth is None:
            object.__setattr__(self, "depth", np.arange(1, self.infinite.shape[0] + 1))


def _path(x0, x1, n_train: int, geometry: str):
    """Training inputs ``(P, n_0)`` and their signed positions along the path, ``x0`` at 0 (module docstring)."""
    # in units of the inputs' size (a power of two: exact), so that norms neither underflow (1e-200 was taken for
    # the centre) nor overflow (1e200: "parallel")
    top = float(max(np.max(np.abs(x0)), np.max(np.abs(x1))))
    if top > 0 and np.isfinite(top):
        e = int(np.frexp(top)[1])
        x, pos = _path(np.ldexp(x0, -e), np.ldexp(x1, -e), n_train, geometry) if e != 0 else (None, None)
        if x is not None:
            return np.ldexp(x, e), (pos if geometry == "circle" else np.ldexp(pos, e))
    r0 = np.linalg.norm(x0)
    if geometry == "circle":
        if r0 == 0:
            raise ParameterError("x0 = 0 is the centre of the circle: choose x0 != 0", "x0")
        e0 = x0 / r0
        u = x1 - (x1 @ e0) * e0
        if np.linalg.norm(u) <= 1e-12 * np.linalg.norm(x1):
            raise ParameterError("x1 is parallel to x0: the circle needs a second direction (x1 not along x0)", "x1")
        e1 = u / np.linalg.norm(u)
        # a quarter-spacing offset keeps every particle off x0 and off -x0 (a half offset would put one at angle pi);
        # an odd n_train keeps the particles pairwise non-antipodal (exactly anti-correlated without bias, where the
        # 1/n recursions are singular)
        theta = 2 * np.pi * (np.arange(n_train) + 0.25) / n_train
        theta = np.where(theta > np.pi, theta - 2 * np.pi, theta)
        x = r0 * (np.cos(theta)[:, None] * e0 + np.sin(theta)[:, None] * e1)
        return x, theta
    step = x1 - x0
    if np.linalg.norm(step) == 0:
        raise ParameterError("x1 = x0: the line needs two distinct points", "x1")
    t = (np.arange(n_train) - (n_train - 1) / 2.0) / max(n_train // 2, 1)
    if n_train % 2:       # keep the test point between two particles
        t = t + 0.5 / max(n_train // 2, 1)
    return x0 + t[:, None] * step, t * np.linalg.norm(step)


@float64
def locality_profile(net: MLP, x0, x1, *, n_train: int = 16, noise_var: float = 0.1, geometry: str = "circle",
                     order: int = 0, y=None, depths=None) -> LocalityProfile:
    """Influence profiles and lengths along a circle or a line through ``x0`` and ``x1`` (``(n_0,)`` each), per
    depth (module docstring). ``order=1`` adds the 1/n coefficients (one O(1/n) theory on ``n_train + 1`` inputs:
    keep ``n_train`` <= ~10); ``y`` ``(n_train,)``: the targets the response is taken at (default 0); ``depths``:
    increasing depths ``1..L`` to profile (default all; e.g. ``range(2, L + 1)`` at ``noise_var = 0``, where the
    first layer's kernel has rank ``n_0 + 1`` and cannot be conditioned on more particles).

    A ``"round-off"`` caveat (:func:`pdlt.errors.roundoff_caveat`) is issued from the first depth where the training
    block's condition number times the kernel's relative accuracy exceeds 1e-3 (deep in the ordered phase at small
    ``noise_var``, the structure of the kernel that the posterior resolves sinks toward the quadrature's accuracy).

    >>> import pdlt
    >>> prof = pdlt.locality_profile(pdlt.MLP("linear", (2, 8, 8, 1)), [1.0, 0.0], [0.0, 1.0], n_train=8)
    >>> prof.distance.round(3).tolist()[:2]      # angles from the test point: a quarter spacing, then 5/4
    [0.196, 0.982]
    """
    from ..conditioning import condition
    from .finite_width import finite_width
    from .influence import check_order, correction_ratio, target_response
    from .kernel import kernel_accuracy, kernel_flow

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    x0 = net.inputs(x0, "x0")[0]
    x1 = net.inputs(x1, "x1")[0]
    n_train = check_int(n_train, "n_train", minimum=2)
    s2 = check_real(noise_var, "noise_var", minimum=0.0)
    if geometry not in _GEOMETRIES:
        raise ParameterError(f"geometry must be one of {_GEOMETRIES}, got {geometry!r}", "geometry")
    order = check_order(order)
    xa, pos = _path(x0, x1, n_train, geometry)
    yy = np.zeros(n_train) if y is None else np.asarray(y, dtype=np.float64).reshape(-1)
    if yy.shape != (n_train,) or not np.all(np.isfinite(yy)):
        raise ParameterError(f"y must be {n_train} finite targets (one per particle), got shape {yy.shape}", "y")
    if net.residual:
        raise ParameterError("net has residual steps: the posterior (and so the influence) of pdlt assumes a dense "
                             "last layer; use gamma = 0, xi = 1", "net")
    L = net.L
    if depths is None:
        ls = np.arange(1, L + 1)
    else:
        if isinstance(depths, (str, bytes)) or not hasattr(depths, "__iter__") or np.ndim(depths) != 1:
            raise ParameterError(f"depths must be a sequence of depths 1..L = {L}, got {depths!r}", "depths")
        ls = np.array([check_int(l, "depths", minimum=1, maximum=L) for l in depths], dtype=np.int64)
        if ls.size == 0 or np.any(np.diff(ls) <= 0):
            raise ParameterError(f"depths must be increasing and not empty, got {ls.tolist()}", "depths")
    x = np.concatenate([xa, x0[None]])
    nA = n_train
    corr = np.zeros((ls.size, n_train)) if order == 1 else None
    caveats: tuple[Caveat, ...] = ()
    if order == 0:
        Ks = kernel_flow(net, x).K
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncationWarning)          # collected, issued once below
            try:
                th = finite_width(net, x)
            except SingularKernelError as err:
                if geometry != "circle" or n_train % 2:
                    raise
                raise SingularKernelError(f"{err}. On a circle an even n_train puts antipodal particles on it: use an "
                                          "odd n_train") from None
        Ks = th.K
        caveats = tuple(th.caveats)
    inf = np.empty((ls.size, n_train))
    roundoff = None
    for i, l in enumerate(ls):
        K = Ks[l - 1]
        cond = condition(K, yy[:, None], nA, s2)
        caveat = checked_training_block(cond.eigenvalues, s2, kernel_accuracy(net.activation, int(l)),
                                        "locality profile (the first depth concerned)", f"layer l = {l}", int(l))
        roundoff = roundoff if roundoff is not None else caveat
        inf[i] = cond.W[0]
        if corr is not None and l > 1:
            dm, _ = target_response(K, th.G1[l - 1], th.V[l - 1], yy[:, None], nA, s2)
            corr[i] = dm[0, 0, :, 0]
            r = correction_ratio(corr[i], inf[i], net.widths[l - 1], 1e-8)
            c = truncation_caveat(r, "locality profile: max |1/n part| / max |infinite-width part| of the "
                                  "influence", int(l), "widen the network or raise noise_var",
                                  r"locality profile: $\max|1/n\ \text{part}|/\max|\text{infinite-width part}|$ "
                                  "of the influence")
            caveats += (c,) if c is not None else ()
    caveats += (roundoff,) if roundoff is not None else ()
    emit(caveats)
    n = np.array([net.widths[l - 1] for l in ls], dtype=np.float64)
    return LocalityProfile(x_train=xa, x_test=x0, position=pos, infinite=inf, n=n, noise_var=float(s2),
                           geometry=geometry, y=yy, depth=ls, correction=corr, caveats=caveats)


@dataclass(frozen=True)
class LocalityLaw:
    """How ``1 - ell/ell_uniform`` of particles of equal norm (the circle of :func:`locality_profile`) flows with
    depth (derivations/README.md §20.3). ``law``:

    * ``"power"``: ``1 - ell/ell_uniform ~ l^-exponent``, the profile flattening (``limit = "uniform"``) for
      ``l >> crossover`` (where given); the local exponent (:meth:`LocalityProfile.flow_exponent`) approaches
      ``exponent`` with corrections ``O(ln l / l)``;
    * ``"exponential"``: ``~ exp(-l / xi)``, the profile flattening once the kernel's structure is below
      ``noise_var``;
    * ``"frozen"``: the profile tends to a fixed shape (``limit = "fixed shape"``), its departure from that shape
      falling like ``l^-exponent`` beyond ``crossover`` (``exponent`` None: exponentially fast, or exactly frozen);
    * ``"not derived"``: ``note`` says why.
    """

    law: str
    limit: str | None = None
    exponent: float | None = None
    xi: float | None = None
    crossover: float | None = None
    note: str = ""


def _not_derived(why: str) -> LocalityLaw:
    return LocalityLaw("not derived", note=why)


@float64
def locality_law(net: MLP, x0, noise_var: float) -> LocalityLaw:
    """The derived depth law of the influence length for training particles of norm ``|x0|`` around ``x0`` (the
    circle of :func:`locality_profile`), at noise variance ``noise_var`` (derivations/README.md §20.3):

    * scale-invariant activation at criticality (``C_W = 1/A_2``, ``C_b = 0``) with slopes ``a_+ != a_-``:
      every pair's angle flows to 0 like ``3 pi / (2 beta l)``, ``beta = (a_+ - a_-)^2 / (2 (a_+^2 + a_-^2))``
      (1/2 for ReLU), and the particles' own angles survive only in the next order, ``~ l^-2``; so the profile
      flattens like ``l^-3`` beyond the crossover ``l_* = (3 pi / (2 beta)) sqrt(K / (2 noise_var))`` (where
      ``K (1 - rho)`` of the common angle falls below the noise), and like ``l^-1`` at zero noise; equal slopes
      (linear) keep layer 1's profile exactly;
    * the K*=0 class at criticality with ``p_perp = 1`` (odd activations: tanh, erf, sin): the correlations
      freeze, ``K ~ 1/((-a_1) l)`` drops below the noise, and the profile tends to the shape of the frozen
      correlations like ``l^-1`` beyond ``l_* = 1/((-a_1) noise_var)`` (frozen from the start at zero noise);
    * the ordered phase with ``K* > 0``: ``1 - rho`` decays like ``exp(-l / xi_perp)`` for every pair with a
      pair-dependent amplitude, so the profile flattens like ``exp(-l / xi_perp)`` at ``noise_var > 0`` and is
      frozen at zero noise;
    * otherwise (chaotic phase, the half-stable class, depth-dependent hyperparameters, ...) ``"not derived"``.

    >>> import pdlt
    >>> law = pdlt.locality_law(pdlt.MLP("relu", (2, 8, 8, 1), C_W=2.0), [1.0, 0.0], noise_var=0.1)
    >>> law.law, law.exponent, round(law.crossover, 1)
    ('power', 3.0, 21.1)
    """
    from .criticality import correlation_length, criticality
    from .kernel import first_layer_kernel

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    if net.residual:
        raise ParameterError("net has residual steps: the locality laws are derived for plain MLPs; use gamma = 0, "
                             "xi = 1", "net")
    x0 = net.inputs(x0, "x0")
    if x0.shape[0] != 1:
        raise ParameterError(f"x0 is one input (the test particle), got {x0.shape[0]}", "x0")
    if not np.any(x0):
        raise ParameterError("x0 = 0 is the centre of the particles' circle: choose x0 != 0", "x0")
    s2 = check_real(noise_var, "noise_var", minimum=0.0)
    K = float(first_layer_kernel(x0, *net.hyper(1))[0, 0])
    if not K > 0:
        raise ParameterError("the first layer's kernel of x0 vanishes (C_W = C_b = 0 at layer 1): no signal reaches "
                             "the network; give layer 1 a positive C_W", "C_W")
    if net.L < 2:
        return _not_derived("one layer: there is no flow with depth")
    C_W, C_b = set(net.C_W[1:]), set(net.C_b[1:])
    if len(C_W) > 1 or len(C_b) > 1:
        return _not_derived("C_W or C_b varies over layers 2..L: the laws are derived for a uniform flow")
    C_W, C_b = C_W.pop(), C_b.pop()
    act = net.activation
    try:
        crit = criticality(act)
    except PdltError as err:
        return _not_derived(f"the universality class of {act.name} could not be decided ({err})")
    critical = crit.C_W is not None and math.isclose(C_W, crit.C_W, rel_tol=1e-9) and \
        math.isclose(C_b, crit.C_b, abs_tol=1e-12)
    if critical and crit.universality == "scale-invariant":
        ap, am = crit.slopes
        beta = (ap - am) ** 2 / (2.0 * (ap ** 2 + am ** 2))
        if beta == 0:
            return LocalityLaw("frozen", "fixed shape", note="equal slopes (a linear network): the kernel is the "
                               "same at every depth, and so is the profile")
        if s2 == 0:
            return LocalityLaw("power", "uniform", 1.0, note="at zero noise the particles' angles enter only "
                               "through the ratio of their l^-3 memory to the common l^-2 part")
        return LocalityLaw("power", "uniform", 3.0, crossover=3 * math.pi / (2 * beta) * math.sqrt(K / (2 * s2)),
                           note="beyond the crossover the noise dominates the common part of 1 - rho, and the "
                                "profile follows the particles' l^-3 memory of their angles")
    if critical and crit.universality == "K*=0":
        if not math.isclose(crit.exponents["p_perp"], 1.0, rel_tol=1e-9):
            return _not_derived(f"K*=0 class with p_perp = {crit.exponents['p_perp']:.4g} != 1: the correlations "
                                "flow (their law is derived only for p_perp = 1)")
        if s2 == 0:
            return LocalityLaw("frozen", "fixed shape", 1.0, note="the correlations freeze (their change per layer is "
                               "O(K^2), K ~ 1/((-a_1) l)), and at zero noise the profile depends on them alone")
        return LocalityLaw("frozen", "fixed shape", 1.0, crossover=1.0 / (-crit.a1 * s2),
                           note="the correlations freeze while K ~ 1/((-a_1) l) falls below the noise")
    if critical:
        return _not_derived(f"the {crit.universality} class: its asymptotic regime needs very deep networks "
                            "(pdlt.criticality says how deep)")
    try:
        cl = correlation_length(act, C_W, C_b, K1=K)
    except PdltError as err:
        return _not_derived(f"no attracting fixed point ({err})")
    if cl.phase == "ordered" and cl.K_star is not None and 0 < cl.K_star < math.inf:
        if s2 == 0:
            return LocalityLaw("frozen", "fixed shape", note="ordered phase at zero noise: every 1 - rho decays "
                               "like exp(-l / xi_perp), so their ratios, which set the profile, freeze")
        return LocalityLaw("exponential", "uniform", xi=cl.xi_perp, note="ordered phase: 1 - rho decays like "
                           "exp(-l / xi_perp) with a pair-dependent amplitude")
    return _not_derived(f"{cl.phase} phase (K* = {cl.K_star}): not derived")


@dataclass(frozen=True)
class Screening:
    """Influence of a source particle on the test particle with ``k`` screening particles present
    (``k = 0..K``, the first k of ``x_screen``): ``infinite`` ``(K + 1,)``, ``correction`` ``(K + 1,)`` its 1/n
    coefficient (``order=1``) and ``n``."""

    infinite: np.ndarray
    n: int
    noise_var: float
    correction: np.ndarray | None = None
    caveats: tuple[Caveat, ...] = ()

    @property
    def influence(self) -> np.ndarray:
        """``(K + 1,)`` to the order computed."""
        return self.infinite if self.correction is None else self.infinite + self.correction / self.n

    @property
    def ratio(self) -> np.ndarray:
        """The source's influence relative to its influence alone ``(K + 1,)``: below 1 it is screened. Raises
        :class:`~pdlt.errors.ParameterError` when the source alone has no influence (nothing to screen)."""
        if abs(self.influence[0]) <= 1e-12 * np.max(np.abs(self.influence)):
            raise ParameterError("the source alone has no influence on the test input (its kernel entry is 0 to "
                                 "round-off): there is nothing to screen; move x_source", "x_source")
        return self.influence / self.influence[0]


@float64
def screening(net: MLP, x_test, x_source, x_screen, *, noise_var: float = 0.1, order: int = 0, y_source: float = 0.0,
              y_screen=None) -> Screening:
    """How screening particles change a source particle's influence on the test particle: ``d m(x_test) /
    d y_source`` with the first ``k`` rows of ``x_screen`` added to the training set, ``k = 0..len(x_screen)``.
    At infinite width adding a particle can only redistribute the smoother ``K_tA (K_AA + s^2)^{-1}``; at O(1/n)
    the particles also interact through V. ``y_source``, ``y_screen``: the targets (default 0), which matter at
    O(1/n) only."""
    from .influence import check_order, influence

    if not isinstance(net, MLP):
        raise ParameterError(f"net must be a pdlt.MLP, got {type(net).__name__}", "net")
    xt = net.inputs(x_test, "x_test")
    xs = net.inputs(x_source, "x_source")
    xsc = net.inputs(x_screen, "x_screen")
    if xt.shape[0] != 1 or xs.shape[0] != 1:
        raise ParameterError("x_test and x_source are one input each", "x_test" if xt.shape[0] != 1 else "x_source")
    K = xsc.shape[0]
    ysc = np.zeros(K) if y_screen is None else check_real_array(y_screen, "y_screen").reshape(-1)
    if ysc.shape != (K,):
        raise ParameterError(f"y_screen must hold one target per screening particle ({K}), got {ysc.shape}",
                             "y_screen")
    order = check_order(order)
    inf = np.empty(K + 1)
    corr = np.empty(K + 1) if order == 1 else None
    res = None
    caveats: tuple[Caveat, ...] = ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)          # collected, issued once below
        for k in range(K + 1):
            xa = np.concatenate([xs, xsc[:k]])
            y = np.concatenate([[check_real(y_source, "y_source")], ysc[:k]])
            res = influence(net, xa, y, xt, noise_var=noise_var, order=order, wrt=("y",))
            inf[k] = res.mean_dy_infinite[0, 0]
            if corr is not None:
                corr[k] = res.mean_dy_correction[0, 0, 0, 0]
            caveats += tuple(c for c in res.caveats if c not in caveats)
    emit(caveats)
    return Screening(infinite=inf, n=res.n, noise_var=res.noise_var, correction=corr, caveats=caveats)

r"""Locality of influence: how far a datapoint's influence reaches, how that reach flows with depth, and screening
(derivations/README.md §20.3, §20.4).

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
as the nearest, with opposite sign). Depth mostly delocalizes: where the correlation of distinct inputs flows to
one value for every pair, the profile flattens. In the ordered phase the departure of ``K^(l)`` from that limit
decays like ``exp(-l / xi_perp)`` (:func:`pdlt.correlation_length`), and so does ``1 - ell / ell_uniform``
(asserted in the tests). At criticality ReLU first localizes (the minimum near l = 7) and then spreads out slowly
(``1 - ell/ell_uniform`` falls roughly like a power of l, not fitted); tanh without bias keeps its first layer's
shape, because its kernel flows to 0 and stays nearly linear in the inputs' correlation. The temperature
(``noise_var``) sets which of the kernel's modes the posterior resolves (the example
``examples/influence_locality.py`` prints the influence length against it).

**Screening.** :func:`screening` gives the influence of a source particle on the test particle as screening
particles are added one at a time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._x64 import float64
from ..architecture import MLP, not_invertible, singular_training_kernel
from ..errors import Caveat, ParameterError, SingularKernelError, TruncationWarning, emit, truncation_caveat
from ..validation import check_int, check_real, check_real_array

__all__ = ["LocalityProfile", "locality_profile", "influence_length", "Screening", "screening"]

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
    ``distance`` the absolute value; ``infinite`` ``(L, P)``: ``d m(x0) / d y_a`` at infinite width for the network
    cut at
    depth ``l`` (row ``l - 1``); ``correction`` ``(L, P)``: its 1/n coefficient (``order=1``; row 0 is 0, layer 1
    being exactly Gaussian), ``n`` ``(L,)`` the widths ``n_{l-1}`` that divide it; ``y`` the targets ``(P,)`` the
    response is taken at (it matters at O(1/n) only)."""

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

    @property
    def distance(self) -> np.ndarray:
        """``|position|`` ``(P,)``: each particle's distance from the test particle along the path."""
        return np.abs(self.position)

    @property
    def influence(self) -> np.ndarray:
        """``(L, P)`` to the order computed."""
        if self.correction is None:
            return self.infinite
        return self.infinite + self.correction / self.n[:, None]

    @property
    def length(self) -> np.ndarray:
        """The influence length ``ell`` per depth ``(L,)`` (module docstring), to the order computed."""
        return influence_length(self.influence, self.distance)

    @property
    def length_uniform(self) -> float:
        """``ell`` of a flat profile on the same particles: the fully delocalized reference."""
        return float(influence_length(np.ones_like(self.distance), self.distance))

    @property
    def locality(self) -> np.ndarray:
        """``ell / ell_uniform`` per depth ``(L,)``: near 0 local, 1 spread evenly over the particles."""
        return self.length / self.length_uniform


def _path(x0, x1, n_train: int, geometry: str):
    """Training inputs ``(P, n_0)`` and their signed positions along the path, ``x0`` at 0 (module docstring)."""
    r0 = np.linalg.norm(x0)
    if geometry == "circle":
        if r0 == 0:
            raise ParameterError("x0 = 0 is the centre of the circle: choose x0 != 0", "x0")
        e0 = x0 / r0
        u = x1 - (x1 @ e0) * e0
        if np.linalg.norm(u) <= 1e-12 * max(np.linalg.norm(x1), 1.0):
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
                     order: int = 0, y=None) -> LocalityProfile:
    """Influence profiles and lengths along a circle or a line through ``x0`` and ``x1`` (``(n_0,)`` each), per
    depth (module docstring). ``order=1`` adds the 1/n coefficients (one O(1/n) theory on ``n_train + 1`` inputs:
    keep ``n_train`` <= ~10); ``y`` ``(n_train,)``: the targets the response is taken at (default 0).

    >>> import pdlt
    >>> prof = pdlt.locality_profile(pdlt.MLP("linear", (2, 8, 8, 1)), [1.0, 0.0], [0.0, 1.0], n_train=8)
    >>> prof.distance.round(3).tolist()[:2]      # angles from the test point: a quarter spacing, then 5/4
    [0.196, 0.982]
    """
    from ..conditioning import condition
    from .finite_width import finite_width
    from .influence import check_order, correction_ratio, target_response
    from .kernel import kernel_flow

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
    x = np.concatenate([xa, x0[None]])
    nA = n_train
    corr = np.zeros((L, n_train)) if order == 1 else None
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
    inf = np.empty((L, n_train))
    for l in range(1, L + 1):
        K = Ks[l - 1]
        cond = condition(K, yy[:, None], nA, s2)
        ev = cond.eigenvalues
        if not_invertible(ev):
            raise singular_training_kernel(f"layer l = {l}, eigenvalues {ev[0]:.3g} .. {ev[-1]:.3g}", s2)
        inf[l - 1] = cond.W[0]
        if corr is not None and l > 1:
            dm, _ = target_response(K, th.G1[l - 1], th.V[l - 1], yy[:, None], nA, s2)
            corr[l - 1] = dm[0, 0, :, 0]
            r = correction_ratio(corr[l - 1], inf[l - 1], net.widths[l - 1], 1e-8)
            c = truncation_caveat(r, "locality profile: max |1/n part| / max |infinite-width part| of the "
                                  "influence", l, "widen the network or raise noise_var")
            caveats += (c,) if c is not None else ()
    emit(caveats)
    n = np.array([net.widths[l - 1] for l in range(1, L + 1)], dtype=np.float64)
    return LocalityProfile(x_train=xa, x_test=x0, position=pos, infinite=inf, n=n, noise_var=float(s2),
                           geometry=geometry, y=yy, correction=corr, caveats=caveats)


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

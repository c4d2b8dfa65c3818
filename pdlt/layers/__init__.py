"""Layer steps: each kind of layer is one object that knows every map pdlt needs for it.

A network is a sequence of steps (:attr:`pdlt.MLP.steps`): the :class:`Input` layer ``z^(1) = b + W x``, then one
step per layer ``l -> l + 1``. A step type carries, in one place,

* ``kernel_map(K, ss)``: the leading-order kernel recursion given ``ss = <sigma sigma>_K``;
* ``chi(chi_branch)``: how the step turns the branch susceptibility ``C_W <...>`` into the layer's (criticality);
* the O(1/n) maps: ``vertex_map`` / ``nlo_kernel_map`` for steps whose 1/n statistics close layer by layer
  (``local = True``), or ``network_statistics(net, K)`` for steps that need more state (residual steps carry a
  neuron's own history: ``local = False``), which computes ``(K, G1, V)`` of the whole network;
* ``markov(xp, sqrt, zt, s, C_W, C_b, eps)`` and ``weights(zt, s, C_W, C_b, Wn, bn)``: one layer of the two exact
  samplers, written once for NumPy and JAX (``xp`` is the array module);
* ``symbolic_kernel(K, g)``: the kernel recursion as a sympy expression.

The stochastic metric ``G^ = C_b + C_W s s^T / n`` (``s`` the layer's input, ``x`` for layer 1) is
:func:`metric`, the one formula behind the first-layer kernel and every sampler. New step types register with
:func:`register_step`; derivations/README.md section 1 states the conventions.
"""

from .dense import Dense, Input, metric
from .residual import Residual

__all__ = ["Input", "Dense", "Residual", "metric", "STEP_TYPES", "register_step", "step_for"]

#: step types by name (``MLP`` picks ``Dense`` or ``Residual`` per layer; users may register more)
STEP_TYPES = {"dense": Dense, "residual": Residual}


def register_step(name: str, cls) -> None:
    """Make a step type available under ``name`` (it must provide the maps listed in the module docstring)."""
    STEP_TYPES[name] = cls


def step_for(C_W: float, C_b: float, gamma: float = 0.0, xi: float = 1.0):
    """The step of a layer ``l -> l + 1``: the registered ``"dense"`` type for ``gamma = 0, xi = 1``, else the
    registered ``"residual"`` type (so a re-registered implementation is what every network uses)."""
    if gamma == 0.0 and xi == 1.0:
        return STEP_TYPES["dense"](C_W, C_b)
    return STEP_TYPES["residual"](C_W, C_b, gamma, xi)

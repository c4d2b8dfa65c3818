"""The public face: what `import pdlt` loads, what it exports, and that pdlt leaves the user's JAX alone."""

import ast
from pathlib import Path

import pytest
from background import Command, python

import pdlt

ROOT = Path(__file__).resolve().parents[1]


#: fresh interpreters, in the background while the suite runs (tests/background.py)
JOBS = {
    # theory without JAX: importing pdlt and using its theory loads no JAX
    "no_jax": Command((python(
        "import sys\n"
        "import pdlt\n"
        "assert 'jax' not in sys.modules\n"
        "net = pdlt.MLP('gelu', (2, 8, 8, 8), C_W=1.5, C_b=0.1)\n"
        "pdlt.finite_width(net, [[1.0, 0.2], [0.3, 0.9]]); pdlt.criticality('gelu'); "
        "pdlt.delta_flow(net, [1.0, 0.0], [0.0, 0.1])\n"
        "pdlt.finite_width(pdlt.MLP('relu', (2, 8, 8, 8), gamma=0.5), [1.0, 0.2])\n"
        "print('jax' in sys.modules)\n"),)),
    # a user's float32 JAX: every JAX entry point runs in a float64 scope and restores the caller's configuration
    "float32": Command((python(
        "import jax, jax.numpy as jnp, numpy as np, pdlt\n"
        "net = pdlt.MLP('tanh', (2, 4, 4, 1), C_W=1.2)\n"
        "x = np.array([[1.0, 0.0], [0.5, 0.5]])\n"
        "mc = pdlt.sample(net, x, 64, seed=0, progress=False)\n"
        "assert mc.two_point.mean.dtype == np.float64\n"
        "pdlt.posterior(net, x[:1], [0.2], x[1:], noise_var=0.1)\n"
        "pdlt.posterior_mc(net, x[:1], [0.2], x[1:], 0.1, n_samples=64)\n"
        "pdlt.langevin_posterior(net, x[:1], [0.2], x[1:], 0.1, n_chains=2, n_steps=2, burn_in=0)\n"
        "print(jax.config.jax_enable_x64, jnp.ones(2).dtype)\n"),), cost=7)}


@pytest.mark.background("no_jax")
def test_import_and_theory_without_jax(background):
    res = background("no_jax")
    assert res.codes == (0,) and res.outs[0].strip() == "False", res.show()


@pytest.mark.background("float32")
def test_user_float32_jax_stays_float32(background):
    res = background("float32")
    assert res.codes == (0,) and res.outs[0].split() == ["False", "float32"], res.show()


def test_all_names_resolve_and_are_documented():
    # a thin face: 30 names, and two for datapoints as particles (influence, locality_profile); the rest of that
    # family (screening, interactions, influence_mc) are attributes
    assert len(pdlt.__all__) <= 32
    for name in pdlt.__all__:
        obj = getattr(pdlt, name)
        assert name == "__version__" or (obj.__doc__ or "").strip(), name


def test_no_private_cross_module_imports():
    """A helper used by another module is public in its home (or moves there)."""
    found = []
    for path in sorted((ROOT / "pdlt").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found

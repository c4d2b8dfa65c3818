import pytest


@pytest.fixture(autouse=True)
def _float64_jax():
    """These tests call pdlt's JAX internals (network_fn, layer_stats, psd_sqrt, ...) directly, outside the
    float64 scope that pdlt's entry points open: run each inside the same scope (jax.enable_x64)."""
    import jax

    with jax.enable_x64(True):
        yield

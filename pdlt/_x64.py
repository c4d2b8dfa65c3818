"""float64 for JAX, switched on by pdlt's numeric entry points (not by import order)."""

import jax


def enable_x64() -> None:
    """Make JAX compute in float64. Idempotent and cheap; every numeric entry point calls it."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)

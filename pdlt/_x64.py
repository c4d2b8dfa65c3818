"""float64 for JAX, scoped to pdlt's own calls: the user's process-wide JAX configuration is never changed."""

import functools


def float64(fn):
    """Decorator: run ``fn`` with JAX in float64 (``jax.enable_x64``, a context manager) and restore the caller's
    setting afterwards, so a user's float32 JAX code stays float32 after calling pdlt. JAX is imported only when
    ``fn`` runs."""

    @functools.wraps(fn)
    def scoped(*args, **kwargs):
        import jax

        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return scoped

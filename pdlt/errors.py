"""Exceptions with messages that say what to change."""

__all__ = ["DivergentFlowError", "SingularKernelError"]


class DivergentFlowError(ValueError):
    """A recursion overflowed (e.g. a kernel flow far off criticality at large depth).

    ``layer`` is the first layer (PDLT numbering, 1..L) whose value is not finite.
    """

    def __init__(self, message: str, layer: int | None = None):
        super().__init__(message)
        self.layer = layer


class SingularKernelError(ValueError):
    """A kernel that had to be inverted is singular or nearly so (e.g. identical inputs)."""

"""``python -m pdlt``: the command line (:mod:`pdlt.cli`).

Signal handlers go in first: the imports that follow (numpy, sympy, JAX) take a second or two, and a SIGINT or
SIGTERM that lands in them must end the process with one line and the conventional exit code, not a
traceback, an exception swallowed by a garbage-collector callback, or a silent kill. Nothing has been computed
yet at that point, so there is nothing to save; once sampling starts, :func:`pdlt.sample` installs handlers of
its own that save what was accumulated, and restores these when it returns.
"""

import os
import signal
import sys


def _startup_signal(signum, frame):
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    os.write(2, f"pdlt: interrupted by {name} before any result was computed; nothing to save\n".encode())
    os._exit(128 + signum)


def run() -> int:
    """Entry point of ``python -m pdlt`` and of the ``pdlt`` console script."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _startup_signal)
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())

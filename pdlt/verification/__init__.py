"""Verification: the registry of oracle checks, the Monte Carlo suite and the report writer.

* :mod:`.checks` -- every leading-order and O(1/n) prediction against an independent oracle, each written once
  as an :class:`~.checks.OracleCheck` with one tolerance; ``pdlt verify`` and ``tests/test_checks.py`` both
  iterate over :data:`~.checks.REGISTRY`.
* :mod:`.suite` -- theory against Monte Carlo of sampled networks (width sweeps, a single-width table).
* :mod:`.report` -- plain-text and LaTeX tables, figures, provenance for ``verify.json``.

:func:`pdlt.verify.run_verify` joins them into the ``pdlt verify`` job.
"""

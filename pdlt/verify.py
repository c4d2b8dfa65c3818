"""``pdlt verify``: every prediction against an independent oracle, then against Monte Carlo, as a report.

The parts live in :mod:`pdlt.verification`: the registry of oracle checks (:mod:`~pdlt.verification.checks`,
shared with the test suite), the Monte Carlo suite (:mod:`~pdlt.verification.suite`) and the report writer
(:mod:`~pdlt.verification.report`). :func:`run_verify` runs them in turn; the names below are re-exported so
that ``from pdlt.verify import ...`` keeps working.
"""

from __future__ import annotations

import os
import time

from .theory.criticality import criticality
from .verification.checks import LITERATURE, Check, theory_checks
from .verification.report import checks_latex, checks_table, write_report
from .breakdown import breakdown_markdown
from .verification.suite import (MC_CASES, NTK_CASES, bayes_training_suite, breakdown_suite, influence_suite,
                                 mc_suite, ntk_suite, training_sweep_suite)

__all__ = ["Check", "theory_checks", "checks_table", "checks_latex", "run_verify", "mc_suite", "MC_CASES", "ntk_suite",
           "NTK_CASES", "LITERATURE"]


def _second_sections(quick: bool) -> tuple:
    """The sections that ``processes=2`` runs in the second process, ``(function, keyword arguments)``: Bayes against
    training, the NTK, breakdown and influence sections (about 82 s of a full run on 2 busy cores, against the 82 s of
    the theory checks, the width sweeps and the training sweep that stay in the first)."""
    return ((bayes_training_suite, {"quick": quick}), (ntk_suite, {"quick": quick, "sweep": not quick}),
            (breakdown_suite, {"quick": quick}), (influence_suite, {"quick": quick}))


def run_verify(out_dir: str | None = "pdlt-verify", quick: bool = False, compile_tex: bool = True,
               echo=print, monte_carlo: bool = True, processes: int | None = None) -> tuple[list[Check], dict]:
    """The main job: derive, check every prediction against an independent oracle (theory checks), then
    against Monte Carlo of sampled networks (width sweeps with 1/n fits, negative controls, a single-width
    table); print the tables; write ``verify.tex`` (+ PDF if pdflatex is present), ``verify.json`` and PNG
    plots into ``out_dir``. Returns the theory checks and a summary dict.

    ``processes``: 2 runs Bayes against training and the NTK, breakdown and influence sections in a second process
    (:mod:`pdlt.verification.second_process`) while this one runs the rest; the results and the printed report
    are the same as with 1 (each section has its own seeds). Default: 2 where the machine has two or more cores."""
    from .errors import ParameterError

    if processes is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        processes = 2 if cores >= 2 else 1
    if isinstance(processes, bool) or not isinstance(processes, int) or processes not in (1, 2):
        raise ParameterError(f"processes must be 1 or 2, got {processes!r}", "processes")
    side = None
    if monte_carlo and processes == 2:
        from .verification.second_process import start

        side = start([(f"{run.__module__}:{run.__name__}", kw) for run, kw in _second_sections(quick)])
    try:
        return _run(out_dir, quick, compile_tex, echo, monte_carlo, side)
    finally:
        if side is not None:
            side.close()


def _run(out_dir, quick, compile_tex, echo, monte_carlo, side):
    from .activations import available_activations

    t0 = time.perf_counter()
    rows = theory_checks(quick=quick)
    names = [n for n in available_activations() if n not in ("silu", "leaky_relu")] + ["leaky_relu(0.1)"]
    crits = [criticality(n) for n in names]
    echo(checks_table(rows))
    n_ok = sum(r.ok for r in rows)
    echo(f"\n{n_ok} passed, {len(rows) - n_ok} failed ({time.perf_counter() - t0:.1f} s)")
    summary = {"checks": len(rows), "passed": n_ok, "failed": len(rows) - n_ok}
    sweep_rows = single = ntk_rows = training_rows = bvt = None
    sweeps, ntk_runs, ntk_sweeps, training_sweeps, breakdown = [], [], [], [], []
    influence = None
    if monte_carlo:
        t1 = time.perf_counter()
        echo("\nTheory (order 1/n) against Monte Carlo of sampled networks:")
        sweep_rows, single, sweeps = mc_suite(quick=quick, echo=echo)
        echo("\nWidth sweeps: fits a + b/n + c/n^2 of the Monte Carlo (a: n -> infinity, b: the 1/n coefficient)")
        echo(sweep_rows.to_markdown())
        echo("\nOne width, every quantity (allowance: the O(1/n^2) remainder, see pdlt.compare):")
        echo(single.to_markdown())
        echo("\nTrained networks: Bayes against training (theory and Monte Carlo):")
        # the training sweep runs first, while a second process runs Bayes against training: its lines wait for the
        # latter's, so that the report reads the same in one process and in two
        sweep_lines = []
        training_rows, training_sweeps = training_sweep_suite(quick=quick, echo=sweep_lines.append)
        done = side.results() if side is not None else None

        def part(k):
            # the section's own lines, live here or as the second process printed them
            if done is None:
                run, kw = _second_sections(quick)[k]
                return run(echo=echo, **kw)
            value, lines = done[k]
            for line in lines:
                echo(line)
            return value

        bvt = part(0)
        for line in sweep_lines:
            echo(line)
        echo(bvt.to_markdown())
        if training_rows.rows:
            echo(training_rows.to_markdown())
        echo("\nNTK statistics against Monte Carlo (jets of sampled networks):")
        ntk_rows, ntk_runs, ntk_sweeps = part(1)
        echo(ntk_rows.to_markdown())
        echo("\nBeyond O(1/n): where each order holds (one input, a neuron's excess kurtosis against l/n):")
        breakdown, breakdown_failed = part(2)
        echo(breakdown_markdown(breakdown))
        echo("\nDatapoints as particles: the influence of each training point (theory and Monte Carlo):")
        influence = part(3)
        echo(influence.rows.to_markdown())
        mc_failed = (sweep_rows.n_failed + single.n_failed + ntk_rows.n_failed + training_rows.n_failed
                     + breakdown_failed + influence.rows.n_failed)
        summary.update(mc_rows=len(sweep_rows.rows) + len(single.rows) + len(ntk_rows.rows) + len(training_rows.rows)
                       + len(influence.rows.rows),
                       mc_failed=mc_failed,
                       mc_seconds=round(time.perf_counter() - t1, 2))
        summary["failed"] += mc_failed
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    echo(f"\nverify: {'PASS' if summary['failed'] == 0 else 'FAIL'} ({summary['failed']} failed, {summary['seconds']:.1f} s)")
    if out_dir:
        write_report(out_dir, rows=rows, crits=crits, summary=summary, sweep_rows=sweep_rows, single=single,
                     sweeps=sweeps, quick=quick, monte_carlo=monte_carlo, compile_tex=compile_tex, echo=echo,
                     ntk_rows=ntk_rows, ntk_runs=ntk_runs, ntk_sweeps=ntk_sweeps, training_rows=training_rows,
                     bvt=bvt, training_sweeps=training_sweeps, breakdown=breakdown, influence=influence)
    return rows, summary


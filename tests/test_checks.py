"""The registry of oracle checks (pdlt.verification.checks): every entry passes at its own tolerance, the same
one ``pdlt verify`` reports. Entries over about a second run in the slow tier."""
import pytest

from pdlt.verification.checks import REGISTRY, OracleCheck, selected

ENTRIES = [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in REGISTRY]


@pytest.mark.parametrize("entry", ENTRIES)
def test_oracle_check_passes(entry: OracleCheck):
    row = entry.run()
    assert row.ok, f"{entry.name}: pdlt {row.value!r} vs reference {row.reference!r}, error {row.error:.3g} > tol {row.tol:g}"


def test_registry_is_well_formed():
    """Names are unique (they are the pytest ids and the verify rows), tolerances are finite and non-negative,
    every entry runs in the quick or the full verify, and the quick run is a subset of the registry's order."""
    names = [c.name for c in REGISTRY]
    assert len(set(names)) == len(names)
    assert all(0.0 <= c.tol < 1.0 and (c.quick or c.full) for c in REGISTRY)
    assert len(selected(quick=True)) < len(selected(quick=False)) <= len(REGISTRY)


def test_a_failing_entry_reports_fail_not_pass():
    """The verdict can fail: a wrong reference, a NaN value, and an error just over tol are all FAIL."""
    bad = OracleCheck("x", "case", "method", lambda: (1.0, 1.0 + 2e-10), 1e-10)
    assert not bad.run().ok
    assert not OracleCheck("x", "case", "method", lambda: (float("nan"), 1.0), 1e-10).run().ok
    assert OracleCheck("x", "case", "method", lambda: (1.0, 1.0 + 5e-11), 1e-10).run().ok
    absolute = OracleCheck("x", "case", "method", lambda: (1e-3, 0.0), 1e-4, relative=False)
    assert not absolute.run().ok and absolute.run().error == pytest.approx(1e-3)


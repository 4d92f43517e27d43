"""The chaos suite's short form (`python -m chaos --short`) on every test run: a SIGKILLed
worker, a flushed broker, a restarted Postgres, 20% transient LLM faults and a 401 burst, each
on real processes, each ending with nothing lost and nothing doubled."""

from __future__ import annotations

import pytest

from chaos.suite import SHORT_SESSIONS, SuiteOptions, run_suite
from chaos.verify import table

pytestmark = pytest.mark.integration


@pytest.mark.timeout(280)
def test_short_chaos_suite_loses_and_doubles_nothing() -> None:
    results = run_suite(SuiteOptions(sessions=SHORT_SESSIONS, short=True))
    report = table(results)
    print(report)
    assert len(results) == 5, report
    for result in results:
        assert (result.lost, result.duplicated, result.problems) == (0, 0, []), report

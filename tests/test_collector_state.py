"""Collector cursors commit with the events they cover, or not at all (both backends)."""

from __future__ import annotations

import pytest
from support.payloads import cost_daily

from store.collectors import load_cursor, record_run, states
from store.contract import validate_events
from store.errors import ConflictError
from store.ledger import Ledger


def test_a_cursor_commits_with_its_events(ledger: Ledger) -> None:
    assert load_cursor(ledger.engine, "aws:cost") is None
    batch = validate_events([cost_daily("c-1"), cost_daily("c-2", amount=2.0)])
    ledger.append(batch, cursor=("aws:cost", {"end": "2026-10-02"}))
    assert load_cursor(ledger.engine, "aws:cost") == {"end": "2026-10-02"}
    # Re-sending the same events (a restart) is all duplicates but still moves the cursor.
    result = ledger.append(batch, cursor=("aws:cost", {"end": "2026-10-03"}))
    assert (result.accepted, result.duplicates) == (0, 2)
    assert load_cursor(ledger.engine, "aws:cost") == {"end": "2026-10-03"}
    # A cursor alone (a source with nothing new) is stored too.
    ledger.append([], cursor=("aws:cost", {"end": "2026-10-04"}))
    assert load_cursor(ledger.engine, "aws:cost") == {"end": "2026-10-04"}


def test_a_refused_append_keeps_the_old_cursor(ledger: Ledger) -> None:
    ledger.append(validate_events([cost_daily("c-1")]), cursor=("k", {"rv": "10"}))
    clash = validate_events([cost_daily("c-2"), cost_daily("c-1", amount=999.0)])
    with pytest.raises(ConflictError):
        ledger.append(clash, cursor=("k", {"rv": "11"}))
    assert load_cursor(ledger.engine, "k") == {"rv": "10"}
    assert ledger.head() == 1


def test_runs_are_counted_and_errors_kept_until_a_success(ledger: Ledger) -> None:
    record_run(ledger.engine, "prom", appended=5, error=None)
    record_run(ledger.engine, "prom", appended=0, error="HTTP 503 from prometheus")
    record_run(ledger.engine, "prom", appended=0, error="HTTP 503 from prometheus")
    (st,) = states(ledger.engine)
    assert (st.runs, st.failures, st.events_appended, st.last_run_events) == (3, 2, 5, 0)
    assert st.last_error == "HTTP 503 from prometheus" and st.cursor is None
    assert st.last_success_at_us is not None and st.last_error_at_us > st.last_success_at_us
    record_run(ledger.engine, "prom", appended=7, error=None)
    (st,) = states(ledger.engine)
    assert (st.runs, st.failures, st.events_appended) == (4, 0, 12)

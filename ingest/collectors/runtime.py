"""What every collector runs on: a sink that appends events with their cursor, and run_once."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from store.collectors import load_cursor, record_run
from store.contract import Event, validate_events
from store.ledger import Ledger
from store.timefmt import duration_seconds

log = logging.getLogger("opsledger.collectors")


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")
_SECRET_PARAMS = re.compile(
    r"(?i)\b(authorization|token|secret|password|api[_-]?key|signature|credential)(\s*[=:]\s*)"
    r"(bearer\s+)?[^\s&,;]+"
)


def redact(text: str) -> str:
    """Text with credentials in URLs and `token=…`-like values masked, safe for logs."""
    return _SECRET_PARAMS.sub(r"\1\2***", _URL_CREDENTIALS.sub("***@", text))


class Sink:
    """Where a collector writes: each call appends events and the cursor after them, atomically.

    Event ids must be stable per source item (a re-run or a restart then finds duplicates,
    never doubles), and the cursor must only move past items whose events are in the call.
    """

    def __init__(self, ledger: Ledger, name: str) -> None:
        self.ledger = ledger
        self.name = name
        self.appended = 0
        self.duplicates = 0

    def cursor(self) -> dict[str, Any] | None:
        """The cursor of the last committed call, None on the first run."""
        return load_cursor(self.ledger.engine, self.name)

    def emit(self, raws: Sequence[Mapping[str, Any]], cursor: Mapping[str, Any]) -> None:
        """Validate raw CloudEvents, then append them with `cursor` in one transaction."""
        self.emit_events(validate_events(list(raws)) if raws else [], cursor)

    def emit_events(self, events: Sequence[Event], cursor: Mapping[str, Any]) -> None:
        """Append events built by the contract's own constructors (e.g. `samples_event`)."""
        result = self.ledger.append(events, cursor=(self.name, cursor))
        self.appended += result.accepted
        self.duplicates += result.duplicates


class Collector(Protocol):
    """A source of events; `collect` resumes from `sink.cursor()` and emits in steps."""

    #: Unique and stable: it names the cursor, e.g. `kubernetes/prod` or `aws/guardduty`.
    name: str
    #: Seconds between scheduled runs.
    interval_seconds: float

    def collect(self, sink: Sink) -> None:
        """Collect everything new since the cursor."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run's outcome."""

    name: str
    appended: int
    duplicates: int
    error: str | None


def run_once(ledger: Ledger, collector: Collector) -> RunResult:
    """Run a collector once and record its health; errors are recorded, not raised."""
    sink = Sink(ledger, collector.name)
    error: str | None = None
    try:
        collector.collect(sink)
    except Exception as exc:  # a source failing must not take the scheduler down
        error = redact(f"{type(exc).__name__}: {exc}")
        log.warning("collector %s failed: %s", collector.name, error)
    record_run(ledger.engine, collector.name, appended=sink.appended, error=error)
    return RunResult(collector.name, sink.appended, sink.duplicates, error)


def parse_duration(text: str) -> float:
    """Seconds in a duration like `30s`, `5m`, `6h` or `35d` (ValueError otherwise)."""
    text = text.strip()
    try:
        return duration_seconds(text, "smhd")
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 6h or 35d") from None

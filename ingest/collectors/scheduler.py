"""Runs collectors on their intervals: one job each, never overlapping, backing off on failure."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.collectors.runtime import Collector, RunResult, run_once
from store.ledger import Ledger

log = logging.getLogger("opsledger.collectors")
#: Jitter as a share of the interval, so collectors started together do not stay in step.
JITTER: float = 0.1
#: The longest a failing collector waits before its next try.
MAX_BACKOFF_SECONDS: float = 3600.0


def backoff_seconds(interval: float, failures: int) -> float:
    """The wait after `failures` consecutive failures: the interval doubled each time, capped."""
    if failures <= 0:
        return interval
    return min(interval * 2.0 ** min(failures, 32), max(MAX_BACKOFF_SECONDS, interval))


class CollectorScheduler:
    """One APScheduler job per collector: interval, jitter, one instance, coalesced."""

    def __init__(
        self,
        ledger: Ledger,
        collectors: Sequence[Collector],
        on_appended: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.collectors = {c.name: c for c in collectors}
        self._on_appended = on_appended
        self._failures: dict[str, int] = {}
        self._scheduler = BackgroundScheduler(timezone=UTC)
        now = datetime.now(UTC)
        for c in collectors:
            self._scheduler.add_job(
                self._run,
                "interval",
                args=[c.name],
                seconds=c.interval_seconds,
                jitter=max(1, int(c.interval_seconds * JITTER)),
                id=c.name,
                name=c.name,
                max_instances=1,
                coalesce=True,
                # Spread the first runs a little too.
                next_run_time=now + timedelta(seconds=random.uniform(0, 2)),
            )

    def start(self) -> None:
        """Start running the jobs in the background."""
        self._scheduler.start()

    def stop(self) -> None:
        """Stop, waiting for running collectors to finish their current step."""
        self._scheduler.shutdown(wait=True)

    def _run(self, name: str) -> RunResult:
        collector = self.collectors[name]
        result = run_once(self.ledger, collector)
        if result.appended and self._on_appended is not None:
            self._on_appended()
        if result.error is None:
            self._failures.pop(name, None)
            return result
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = backoff_seconds(collector.interval_seconds, failures)
        job = self._scheduler.get_job(name)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC) + timedelta(seconds=delay))
        log.warning("collector %s: failure %d in a row; next try in %.0f s", name, failures, delay)
        return result

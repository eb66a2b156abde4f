"""Keeps the read model caught up inside the server: on a schedule and right after ingests."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from analytics.readmodel import ReadModel
from analytics.registry import default_projections
from analytics.runner import Runner
from store.ledger import Ledger

log = logging.getLogger("opsledger.projections")


class Projector:
    """The server's single writer of the read model."""

    def __init__(self, ledger: Ledger, path: Path, interval_seconds: float) -> None:
        self.model = ReadModel(path)
        self.runner = Runner(ledger, self.model, default_projections())
        self._scheduler = BackgroundScheduler(timezone=UTC)
        # Two instances at most: a poke during a run queues one more run, which waits for the
        # write lock, so an ingest is never left unprojected until the next interval.
        self._job = self._scheduler.add_job(
            self._run,
            "interval",
            seconds=interval_seconds,
            id="projections-catch-up",
            max_instances=2,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )

    def start(self) -> None:
        """Start catching up in the background."""
        self._scheduler.start()

    def poke(self) -> None:
        """Catch up soon: called after every successful ingest."""
        self._job.modify(next_run_time=datetime.now(UTC))

    def _run(self) -> None:
        try:
            self.runner.catch_up()
        except Exception:
            log.exception("projection catch-up failed; retrying at the next interval")

    def stop(self) -> None:
        """Stop the scheduler, wait for a running catch-up, close the read model."""
        self._scheduler.shutdown(wait=True)
        self.model.close()

"""Keeps the read model caught up inside the server: on a schedule and right after ingests."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from store.ledger import Ledger

log = logging.getLogger("opsledger.projections")


class _QueuedRunSkipped(logging.Filter):
    """Drops APScheduler's warning that a catch-up was skipped while two run: by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for "skipped: maximum number of running instances" of the catch-up job."""
        text = record.getMessage()
        return not ("Projector._run" in text and "maximum number of running instances" in text)


# Two catch-ups at most, one running and one waiting for the write lock; a third start
# (the interval firing meanwhile) is skipped, and the waiting one folds its events in.
logging.getLogger("apscheduler.scheduler").addFilter(_QueuedRunSkipped())


class Projector:
    """The server's single writer of the read model."""

    def __init__(self, ledger: Ledger, path: Path, interval_seconds: float) -> None:
        # Held until stop(): ReadModelBusy when another process (a second server) holds it.
        self.model = ReadModel(path)
        try:
            self.runner = Runner(ledger, self.model, default_projections())
        except BaseException:
            self.model.close()
            raise
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._waiting_lock = threading.Lock()
        #: Catch-up runs started but still waiting for the read model's write lock.
        self._waiting = 0
        # A fatal DuckDB error (a checkpoint on a full disk) invalidates the database until it
        # is reopened: look every two seconds, and reopen it in place when it is.
        self._scheduler.add_job(
            self.model.recover,
            "interval",
            seconds=2,
            id="read-model-watch",
            max_instances=1,
            coalesce=True,
        )
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
        with self._waiting_lock:
            # A run still waiting for the write lock reads the ledger head once it has it,
            # after this ingest committed: it folds it in. Firing another would only be
            # skipped (two instances at most) with a warning, once per ingest under load.
            if self._waiting:
                return
        self._job.modify(next_run_time=datetime.now(UTC))

    def _run(self) -> None:
        with self._waiting_lock:
            self._waiting += 1
        try:
            with self.model.write_lock:
                with self._waiting_lock:
                    self._waiting -= 1
                self.runner.catch_up()
        except Exception as exc:
            # The runner has logged each failing projection with its traceback and caught the
            # others up; each one's `last_error` is in its status.
            log.warning(
                "projection catch-up incomplete (%s: %s); retrying at the next interval",
                type(exc).__name__,
                exc,
            )

    def stop(self) -> None:
        """Stop the scheduler, wait for a running catch-up, close the read model."""
        self._scheduler.shutdown(wait=True)
        self.model.close()

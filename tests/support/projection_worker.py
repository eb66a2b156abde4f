"""Subprocess side of the projection tests: catch up the capacity projection, or hold the model.

`python projection_worker.py catch-up LEDGER_URL DUCKDB_PATH BATCH_EVENTS` prints `start <pos>`,
one `progress <name> <upto> <head>` line per committed batch and `done <applied> <pos>`.
`python projection_worker.py hold DUCKDB_PATH` opens the read model, prints `ready` and keeps
it open until its stdin is closed (so it never outlives the test that started it).
"""

from __future__ import annotations

import sys

from analytics.capacity.projection import CapacityProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.runner import Runner
from store.ledger import Ledger


def catch_up(ledger_url: str, duckdb_path: str, batch_events: int) -> None:
    """Fold the ledger into the read model, a few events per transaction, reporting each one."""
    ledger = Ledger.from_url(ledger_url)
    model = ReadModel(duckdb_path)
    projection = CapacityProjection()
    projection.batch_events = batch_events
    runner = Runner(ledger, model, [projection])
    print(f"start {runner.checkpoint(projection.name)}", flush=True)

    def progress(name: str, upto: int, head: int) -> None:
        print(f"progress {name} {upto} {head}", flush=True)

    applied = runner.catch_up(progress=progress)
    print(f"done {applied} {runner.checkpoint(projection.name)}", flush=True)
    model.close()
    ledger.engine.dispose()


def hold(duckdb_path: str) -> None:
    """Keep the read model open (as `opsledger serve` does) until stdin reaches EOF."""
    model = ReadModel(duckdb_path)
    print("ready", flush=True)
    sys.stdin.read()
    model.close()


def main(argv: list[str]) -> int:
    """Dispatch on the mode named by the first argument."""
    if argv[:1] == ["catch-up"] and len(argv) == 4:
        catch_up(argv[1], argv[2], int(argv[3]))
        return 0
    if argv[:1] == ["hold"] and len(argv) == 2:
        hold(argv[1])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

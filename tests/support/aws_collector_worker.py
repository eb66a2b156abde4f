"""Subprocess side of the AWS collector crash tests: run one collector once, reporting commits.

`python aws_collector_worker.py LEDGER_URL CONFIG_JSON NAME NOW [PAUSE_AFTER]` builds the
collectors of the `AwsConfig` in CONFIG_JSON, runs the one called NAME with its clock fixed
at NOW (Unix seconds), prints `committed <appended> <duplicates>` after each commit and
`done` at the end. With PAUSE_AFTER, it prints `paused` after that many commits and waits
for its stdin to close (the test kills it there).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.collectors.aws.collectors import AwsConfig, build
from ingest.collectors.runtime import Sink
from store.ledger import Ledger


class ReportingSink(Sink):
    """A sink that tells the test about each commit, and can stop after some."""

    def __init__(self, ledger: Ledger, name: str, pause_after: int | None) -> None:
        super().__init__(ledger, name)
        self.commits = 0
        self.pause_after = pause_after

    def emit(self, raws: Sequence[Mapping[str, Any]], cursor: Mapping[str, Any]) -> None:
        """Commit, report, and pause when told to."""
        super().emit(raws, cursor)
        self.commits += 1
        print(f"committed {self.appended} {self.duplicates}", flush=True)
        if self.pause_after is not None and self.commits >= self.pause_after:
            print("paused", flush=True)
            sys.stdin.read()


def main(argv: list[str]) -> int:
    """Run the named collector once against the ledger."""
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    url, config_json, name, now = argv[:4]
    pause_after = int(argv[4]) if len(argv) == 5 else None
    ledger = Ledger.from_url(url)
    (collector,) = [
        c for c in build(AwsConfig.model_validate_json(config_json), None) if c.name == name
    ]
    collector.clock = lambda: float(now)  # type: ignore[attr-defined]
    collector.collect(ReportingSink(ledger, name, pause_after))
    print("done", flush=True)
    ledger.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

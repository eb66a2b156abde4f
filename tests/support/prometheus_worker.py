"""Subprocess side of the Prometheus collector's crash test: one run at a fixed clock.

`python prometheus_worker.py LEDGER_URL CLUSTER CONFIG_JSON NOW` runs the collector once as
if the time were NOW (Unix seconds) and prints `committed <end>` after each committed chunk.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.collectors.prometheus.collector import PrometheusCollector, PrometheusConfig
from ingest.collectors.runtime import Sink
from store.ledger import Ledger


class ReportingSink(Sink):
    """A sink that reports each commit on stdout, so the test knows when to kill."""

    def emit(self, raws: Sequence[Mapping[str, Any]], cursor: Mapping[str, Any]) -> None:
        """Append, then report the new cursor."""
        super().emit(raws, cursor)
        print(f"committed {cursor['end']}", flush=True)


def main(argv: list[str]) -> int:
    """Run the collector once against the ledger."""
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    url, cluster, raw_config, now = argv
    ledger = Ledger.from_url(url)
    cfg = PrometheusConfig.model_validate_json(raw_config)
    collector = PrometheusCollector(cluster, cfg, clock=lambda: float(now))
    collector.collect(ReportingSink(ledger, collector.name))
    print("done", flush=True)
    ledger.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

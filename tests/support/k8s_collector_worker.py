"""Subprocess side of the Kubernetes collector's crash test: run the collector, report commits.

`python k8s_collector_worker.py LEDGER_URL KUBECONFIG RUNS WATCH_SECONDS` runs the collector
`kubernetes/prod` RUNS times against the API server the kubeconfig names. It prints
`emit <n> <rv>` after each committed step (n events; the cursor's Event resourceVersion) and
`run <i> <appended>` after each run, so that a test can SIGKILL it at a known point. With a
fifth argument `until-quiet` it stops early after a run that appended nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ingest.collectors.kubernetes.collector import KubernetesCollector, KubernetesConfig
from ingest.collectors.runtime import Sink
from store.ledger import Ledger


class PrintingSink(Sink):
    """A sink that says when each step is committed."""

    def emit(self, raws: Sequence[Mapping[str, Any]], cursor: Mapping[str, Any]) -> None:
        """Append, then report."""
        super().emit(raws, cursor)
        rv = (cursor.get("events") or {}).get("resourceVersion")
        print(f"emit {len(raws)} {rv}", flush=True)


def main(argv: list[str]) -> int:
    """Run the collector the given number of times."""
    if len(argv) not in (4, 5) or argv[4:] not in ([], ["until-quiet"]):
        print(__doc__, file=sys.stderr)
        return 2
    url, kubeconfig, runs, watch = argv[0], argv[1], int(argv[2]), float(argv[3])
    ledger = Ledger.from_url(url)
    cfg = KubernetesConfig(
        kubeconfig=kubeconfig, watch_seconds=watch, page_size=2, backoff_seconds=0.01
    )
    collector = KubernetesCollector("prod", cfg)
    for i in range(runs):
        sink = PrintingSink(ledger, collector.name)
        collector.collect(sink)
        print(f"run {i} {sink.appended}", flush=True)
        if argv[4:] and sink.appended == 0:
            break
    collector.close()
    ledger.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

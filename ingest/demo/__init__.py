"""A deterministic, realistic demo history of one EKS cluster, as contract-valid ledger events."""

# Every event is a pure function of the seed and its own time slot (an hour of samples, a day of
# container samples or of facts, a month of budget), never of `since`, `now` or what was
# generated before it, so a later run with a larger `now` only appends what is new and never
# conflicts with an earlier one. The only exceptions are the "observed at the start" facts (SLA
# policy, budget, nodes already running), whose ids carry the start date, as a collector's
# initial sync would.

from __future__ import annotations

from ingest.demo.assembly import MAX_BATCH, DemoTotals, default_since, generate, load
from ingest.demo.catalogue import CLUSTER, DEMO_SOURCE_PREFIX, HOT_POOL

__all__ = [
    "CLUSTER",
    "DEMO_SOURCE_PREFIX",
    "HOT_POOL",
    "MAX_BATCH",
    "DemoTotals",
    "default_since",
    "generate",
    "load",
]

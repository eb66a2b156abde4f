"""Decisions: what to reclaim, expand or raise, by when and at what cost."""

from typing import Final

#: What decisions read: every projection a rule looks at (catch these up before deciding).
DECISION_PROJECTIONS: Final = (
    "capacity",
    "cluster_events",
    "workloads",
    "inventory",
    "storage",
    "cost",
)

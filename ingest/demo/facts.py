"""What a day's discrete facts are made of: CloudEvents from the demo and incident triggers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ingest.demo.catalogue import CLUSTER, DEMO_SOURCE_PREFIX
from store.contract import event_to_cloudevent
from store.event_types import EventType


@dataclass(frozen=True, slots=True)
class Trigger:
    """Something that opens an incident."""

    time_us: int
    severity: str
    title: str
    kind: str
    key: int
    namespace: str | None = None
    service: str | None = None
    note: str | None = None


@dataclass
class DayPlan:
    """The discrete facts of one UTC day: CloudEvents plus the incidents they trigger."""

    raws: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)


def cloudevent(
    stream: str,
    event_id: str,
    event_type: EventType,
    time_us: int,
    data: dict[str, Any],
    cluster: bool = True,
) -> dict[str, Any]:
    """A structured CloudEvent from the demo, for validation."""
    return event_to_cloudevent(
        source=f"{DEMO_SOURCE_PREFIX}/{stream}",
        event_id=event_id,
        event_type=event_type,
        time_us=time_us,
        cluster=CLUSTER if cluster else None,
        subject=None,
        data=data,
    )

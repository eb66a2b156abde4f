"""An incident's state folded from its lifecycle events, whatever order they arrived in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from store.event_types import INCIDENT_PREFIX

SEVERITIES: Final = ("P0", "P1", "P2", "P3")
#: Tie-break for facts recorded at the same instant: the order a responder performs them in.
_RANK: Final = {
    "opened": 0,
    "severity_changed": 1,
    "acknowledged": 2,
    "mitigated": 3,
    "resolved": 4,
    "reopened": 5,
    "annotated": 6,
    "postmortem_linked": 7,
}
KINDS: Final = tuple(_RANK)


@dataclass(frozen=True, slots=True)
class Fact:
    """One lifecycle event of an incident: its kind, when it happened, and its data."""

    kind: str
    time_us: int
    data: Mapping[str, Any]
    cluster: str | None = None
    version: int = 0

    @classmethod
    def of(
        cls,
        event_type: str,
        time_us: int,
        data: Mapping[str, Any],
        cluster: str | None,
        version: int | None,
    ) -> Fact:
        """A fact from an event's type (`opsledger.incident.<kind>`) and attributes."""
        return cls(event_type.removeprefix(INCIDENT_PREFIX), time_us, data, cluster, version or 0)

    def sort_key(self) -> tuple[int, int, str]:
        """Time order, ties broken by lifecycle order and then content, never arrival."""
        detail = str(self.data.get("severity") or self.data.get("by") or self.data.get("note", ""))
        return (self.time_us, _RANK.get(self.kind, 99), detail)


def more_severe(a: str, b: str) -> str:
    """The more severe of two levels (P0 is the most severe)."""
    return a if SEVERITIES.index(a) <= SEVERITIES.index(b) else b


@dataclass(slots=True)
class IncidentState:
    """Where an incident stands; `opened_us` is None until its opening is known."""

    incident_id: str
    title: str | None = None
    severity: str | None = None
    cluster: str | None = None
    namespace: str | None = None
    service: str | None = None
    opened_us: int | None = None
    acknowledged_us: int | None = None
    mitigated_us: int | None = None
    resolved_us: int | None = None
    status: str = "unknown"
    reopens: int = 0
    postmortem_url: str | None = None
    last_us: int | None = None
    version: int = 0
    #: (time, level) from the opening on: the levels the incident held and when it took them.
    levels: list[tuple[int, str]] = field(default_factory=list)

    @property
    def severity_max(self) -> str | None:
        """The most severe level the incident ever held."""
        return self.most_severe_before(None)

    def most_severe_before(self, cutoff_us: int | None) -> str | None:
        """The most severe level held before `cutoff_us` (all levels when None)."""
        held = [lvl for t, lvl in self.levels if cutoff_us is None or t < cutoff_us]
        if not held and self.levels:
            held = [self.levels[0][1]]  # the opening level holds from the opening itself
        out: str | None = None
        for lvl in held:
            out = lvl if out is None else more_severe(out, lvl)
        return out


def fold(incident_id: str, facts: Iterable[Fact]) -> IncidentState:
    """Fold facts in time order; the opening comes first even if its time says otherwise."""
    ordered = sorted(facts, key=lambda f: (f.kind != "opened", *f.sort_key()))
    st = IncidentState(incident_id)
    for f in ordered:
        st.version = max(st.version, f.version)
        st.last_us = f.time_us if st.last_us is None else max(st.last_us, f.time_us)
        if f.kind == "opened":
            if st.opened_us is not None:
                continue  # a second opening (an imported duplicate) changes nothing
            st.opened_us = f.time_us
            st.title = f.data.get("title")
            st.severity = f.data.get("severity")
            st.namespace = f.data.get("namespace")
            st.service = f.data.get("service")
            st.cluster = f.cluster
            st.status = "open"
            if st.severity is not None:
                st.levels.append((f.time_us, st.severity))
        elif f.kind == "severity_changed":
            st.severity = f.data["severity"]
            st.levels.append((f.time_us, f.data["severity"]))
        elif f.kind == "acknowledged":
            if st.acknowledged_us is None:
                st.acknowledged_us = f.time_us
            if st.status == "open":
                st.status = "acknowledged"
        elif f.kind == "mitigated":
            if st.mitigated_us is None:
                st.mitigated_us = f.time_us
            if st.status in ("open", "acknowledged"):
                st.status = "mitigated"
        elif f.kind == "resolved":
            if st.status != "resolved":
                st.status = "resolved"
                st.resolved_us = f.time_us
        elif f.kind == "reopened":
            if st.status == "resolved":
                st.status = "open"
                st.resolved_us = None
                st.reopens += 1
        elif f.kind == "postmortem_linked":
            st.postmortem_url = f.data.get("url")
    if st.opened_us is None:
        st.status = "unknown"
    return st

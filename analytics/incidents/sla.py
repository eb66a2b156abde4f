"""SLA policies and their business calendar: when a response or a resolution is due."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from store.datamodels import SlaPolicy
from store.incident_state import IncidentState
from store.timefmt import datetime_to_us, duration_seconds, us_to_datetime

_WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Holidays are capped at 1000 a policy, so a business day always comes within this many days.
_SEARCH_DAYS: Final = 2000


@dataclass(frozen=True, slots=True)
class Policy:
    """An SLA policy ready for calendar arithmetic."""

    tz: ZoneInfo
    workdays: frozenset[int]
    start: time
    end: time
    holidays: frozenset[date]
    response: Mapping[str, str]
    resolution: Mapping[str, str]

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Policy:
        """A policy from its document (validated by the contract's model)."""
        p = SlaPolicy.model_validate(doc, strict=False)
        return cls(
            tz=ZoneInfo(p.timezone),
            workdays=frozenset(_WEEKDAYS.index(d) for d in p.business_hours.days),
            start=time.fromisoformat(p.business_hours.start),
            end=time.fromisoformat(p.business_hours.end),
            holidays=frozenset(date.fromisoformat(h) for h in p.holidays),
            response={str(k): v for k, v in p.response.items()},
            resolution={str(k): v for k, v in p.resolution.items()},
        )

    def is_business_day(self, day: date) -> bool:
        """A workday of the policy that is not one of its holidays."""
        return day.weekday() in self.workdays and day not in self.holidays

    def local_us(self, day: date, clock: time) -> int:
        """A wall-clock time of a day in the policy's zone, as UTC microseconds."""
        # zoneinfo resolves a wall time skipped by a DST change with the offset before it.
        return datetime_to_us(datetime.combine(day, clock, tzinfo=self.tz))

    def next_business_day_close(self, opened_us: int) -> int:
        """Close of the first business day whose business hours begin after `opened_us`."""
        day = us_to_datetime(opened_us).astimezone(self.tz).date()
        for _ in range(_SEARCH_DAYS):
            if self.is_business_day(day) and self.local_us(day, self.start) > opened_us:
                return self.local_us(day, self.end)
            day += timedelta(days=1)
        raise ValueError("the SLA policy has no business day within the search range")

    def due_us(self, target: str, opened_us: int) -> int:
        """When a target (`15m`, `4h`, `2d` calendar time, or `next_business_day`) falls due."""
        if target == "next_business_day":
            return self.next_business_day_close(opened_us)
        try:
            seconds = duration_seconds(target, "mhd")
        except ValueError:
            raise ValueError(f"unknown SLA target {target!r}") from None
        return opened_us + int(seconds) * 1_000_000


DEFAULT_POLICY: Final = Policy.from_document({})


class PolicyHistory:
    """The policies in force over time: each from its event's time until the next."""

    def __init__(self, entries: list[tuple[int, int, Mapping[str, Any]]]) -> None:
        # (time, position, document); a later position wins a tie in time.
        ordered = sorted(entries, key=lambda e: (e[0], e[1]))
        self._times = [t for t, _, _ in ordered]
        self._policies = [Policy.from_document(doc) for _, _, doc in ordered]

    def at(self, t_us: int) -> Policy:
        """The policy in force at `t_us` (the defaults before the first one)."""
        i = bisect.bisect_right(self._times, t_us)
        return self._policies[i - 1] if i else DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class Target:
    """One SLA target applied to an incident."""

    severity: str
    target: str
    due_us: int


def response_target(st: IncidentState, policy: Policy) -> Target | None:
    """Due = opened + the target of the most severe level held before the first ack."""
    return _target(st, policy.response, st.acknowledged_us, policy)


def resolution_target(st: IncidentState, policy: Policy) -> Target | None:
    """Like the response target, on the final resolution; None when the policy sets none."""
    return _target(st, policy.resolution, st.resolved_us, policy)


def _target(
    st: IncidentState, targets: Mapping[str, str], met_us: int | None, policy: Policy
) -> Target | None:
    if st.opened_us is None:
        return None
    level = st.most_severe_before(met_us)
    if level is None or level not in targets:
        return None
    return Target(level, targets[level], policy.due_us(targets[level], st.opened_us))


def now_us() -> int:
    """The current time in UTC microseconds."""
    return datetime_to_us(datetime.now(UTC))

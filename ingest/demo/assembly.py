"""Assembly: the window's events, validated, in time order and batches; `load` appends them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ingest.demo.containers import day_event
from ingest.demo.facts import DayPlan
from ingest.demo.findings import finding_facts
from ingest.demo.incidents import adhoc_facts, incident_raws, pvc_facts, sla_policy_raw
from ingest.demo.kubernetes import (
    crash_facts,
    flap_facts,
    hot_facts,
    launches,
    noise_facts,
    observed_nodes,
)
from ingest.demo.money import budget_raws, cost_raws
from ingest.demo.network import subnet_facts
from ingest.demo.nodepools import nodepool_facts
from ingest.demo.pods import hour_pods
from ingest.demo.samples import hour_event
from ingest.demo.units import DAY, HOUR, date_us, day_of, month_start
from ingest.demo.world import ROTATE_H, World
from store.contract import Event
from store.contract import validate_event as _validate
from store.ledger import Ledger
from store.timefmt import parse_rfc3339_us, us_to_datetime

MAX_BATCH: Final = 2000


@dataclass(frozen=True, slots=True)
class DemoTotals:
    """What a demo load did: events accepted and already present, events and samples generated."""

    accepted: int
    duplicates: int
    events: int
    samples: int


def default_since(now_us: int) -> dt.date:
    """The first day of the calendar month before `now` (UTC)."""
    today = us_to_datetime(now_us).date()
    return (month_start(today) - dt.timedelta(days=1)).replace(day=1)


def day_plan(w: World, day: int) -> DayPlan:
    """Every discrete fact whose slot is this UTC day."""
    plan = DayPlan()
    launches(w, day, plan)
    flap_facts(w, day, plan)
    hot_facts(w, day, plan)
    crash_facts(w, day, plan)
    noise_facts(w, day, plan)
    finding_facts(w, day, plan)
    pvc_facts(w, day, plan)
    adhoc_facts(w, day, plan)
    nodepool_facts(w, day, plan)
    subnet_facts(w, day, plan)
    return plan


def _start_raws(w: World, since: dt.date, start_us: int, now_us: int) -> list[dict[str, Any]]:
    """What a collector observes when it starts: the SLA policy, budgets, running nodes."""
    return [
        sla_policy_raw(since, start_us),
        *budget_raws(w.seed, since, start_us, now_us),
        *observed_nodes(w, since, start_us),
    ]


def _validated(raws: Sequence[dict[str, Any]]) -> list[Event]:
    """Validate through the contract, as any producer's events are."""
    return [_validate(raw, i) for i, raw in enumerate(raws)]


def _discrete(w: World, since: dt.date, start_us: int, now_us: int) -> list[Event]:
    """Every non-sample event in [start, now], in time order."""
    first_day = day_of(date_us(month_start(since))) - 1
    last_day = day_of(now_us)
    plans = {d: day_plan(w, d) for d in range(first_day, last_day + 1)}
    raws = _start_raws(w, since, start_us, now_us)
    for d, plan in plans.items():
        if d >= day_of(start_us):
            raws.extend(plan.raws)
            if (d + 1) * DAY <= now_us:
                raws.extend(cost_raws(w, d))
    raws.extend(incident_raws(w.seed, plans, start_us, now_us))
    kept = [r for r in raws if start_us <= _time_of(r) <= now_us]
    events = _validated(kept)
    events.sort(key=lambda e: (e.time_us, e.source, e.id))
    return events


def _time_of(raw: dict[str, Any]) -> int:
    """A raw event's time in microseconds."""
    return parse_rfc3339_us(raw["time"])


def _days(since: dt.date, now_us: int, seed: int) -> Iterator[tuple[int, int, list[list[Event]]]]:
    """(day number, days in all, the day's batches) in time order."""
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    start_us = date_us(since)
    if now_us < start_us:
        return
    # Incident numbers count from the month's start, and nodes may have launched 14 days earlier.
    first_h = (date_us(month_start(since)) - DAY) // HOUR - ROTATE_H - 24
    w = World.build(seed, first_h, now_us // DAY * 24 + 48)
    discrete = _discrete(w, since, start_us, now_us)
    days = range(day_of(start_us), day_of(now_us) + 1)
    k = 0
    for n, day in enumerate(days, start=1):
        hours = [h for h in range(day * 24, day * 24 + 24) if (h + 1) * HOUR <= now_us]
        frames = [(pods, *hour_event(w, h, pods)) for h in hours for pods in (hour_pods(w, h),)]
        events = [event for _, event, _ in frames]
        if len(hours) == 24:
            # A day's container samples are one event, sent once the day is over.
            events.append(day_event(w, day, [(pods, usage) for pods, _, usage in frames]))
        while k < len(discrete) and day_of(discrete[k].time_us) <= day:
            events.append(discrete[k])
            k += 1
        events.sort(key=lambda e: e.time_us)
        yield n, len(days), [events[i : i + MAX_BATCH] for i in range(0, len(events), MAX_BATCH)]


def generate(since: dt.date, now_us: int, seed: int = 7) -> Iterator[list[Event]]:
    """Batches (at most MAX_BATCH events) of validated demo events from `since` to `now`."""
    for _, _, batches in _days(since, now_us, seed):
        yield from batches


def load(
    ledger: Ledger,
    since: dt.date,
    now_us: int,
    seed: int = 7,
    progress: Callable[[int, int], None] | None = None,
) -> DemoTotals:
    """Append the demo history; `progress(days_done, days_total)` is called after each day."""
    accepted = duplicates = events = samples = 0
    for day, days, batches in _days(since, now_us, seed):
        for batch in batches:
            result = ledger.append(batch)
            accepted += result.accepted
            duplicates += result.duplicates
            events += len(batch)
            samples += sum(len(e.samples) for e in batch if e.samples is not None)
        if progress is not None:
            progress(day, days)
    return DemoTotals(accepted, duplicates, events, samples)

"""Incident metrics and SLA breaches against an independent oracle (issue #4).

Seeded generators write histories full of awkward cases (P3s opened on Friday evenings, at
weekends, before hours, exactly at the start of the business day and around holidays; DST
changes in the policy's time zone; severity changes before, at and after the first ack;
never-acknowledged incidents; reopens; a policy change in mid-month). The events are posted
as CloudEvents batches in a shuffled order, some twice, and every metric group and every
breach the API reports must equal what plain Python below computes from the same events.
The oracle follows docs/metrics.md's definitions and the API decisions, noted beside each rule;
it shares no code with the implementation.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support.beds import Bed, make_bed

BATCH = "application/cloudevents-batch+json"
SEVERITIES = ("P0", "P1", "P2", "P3")  # most severe first
PREFIX = "opsledger.incident."
# Events at the same instant are ordered by kind like this (arrival order never matters).
KIND_ORDER = {
    k: i
    for i, k in enumerate(
        (
            "opened",
            "severity_changed",
            "acknowledged",
            "mitigated",
            "resolved",
            "reopened",
            "annotated",
            "postmortem_linked",
        )
    )
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEED_RESPONSE = {"P0": "15m", "P1": "1h", "P2": "4h", "P3": "next_business_day"}
SRC_BOT = "//oracle.test/incident-bot"
SRC_PAGER = "//oracle.test/pager"
US = timedelta(microseconds=1)
SEEDS = (11, 2026, 4242)
GROUP_BYS = ("", "severity", "month", "cluster", "severity,month", "namespace,service")
_RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")

# -- the oracle ----------------------------------------------------------------------------------


@dataclass
class Policy:
    """An SLA policy document with the documented defaults filled in for omitted fields."""

    tz: ZoneInfo
    days: frozenset[int]
    start: time
    end: time
    holidays: frozenset[date]
    response: dict[str, str]
    resolution: dict[str, str]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Policy:
        hours = doc.get("business_hours", {})
        return cls(
            tz=ZoneInfo(doc.get("timezone", "UTC")),
            days=frozenset(WEEKDAYS.index(d) for d in hours.get("days", WEEKDAYS[:5])),
            start=time.fromisoformat(hours.get("start", "09:00")),
            end=time.fromisoformat(hours.get("end", "17:00")),
            holidays=frozenset(date.fromisoformat(h) for h in doc.get("holidays", [])),
            response=dict(doc.get("response", SEED_RESPONSE)),
            resolution=dict(doc.get("resolution", {})),
        )

    def is_business_day(self, d: date) -> bool:
        return d.weekday() in self.days and d not in self.holidays


DEFAULT_POLICY = Policy.from_doc({})


def wall(d: date, t: time, tz: ZoneInfo) -> datetime:
    """A local wall time as a UTC instant; fold=0 takes the offset before a DST change."""
    return datetime.combine(d, t, tzinfo=tz).astimezone(UTC)


def next_business_day_close(p: Policy, opened: datetime) -> datetime:
    """The close of the first business day whose hours start strictly after `opened`."""
    d = opened.astimezone(p.tz).date()
    for _ in range(4000):
        if p.is_business_day(d) and wall(d, p.start, p.tz) > opened:
            return wall(d, p.end, p.tz)
        d += timedelta(days=1)
    raise AssertionError("no business day within ten years")


def due_after(p: Policy, opened: datetime, target: str) -> datetime:
    """Opening + a target: durations are calendar (elapsed) time."""
    if target == "next_business_day":
        return next_business_day_close(p, opened)
    m = re.fullmatch(r"(\d+)([mhd])", target)
    assert m, target
    unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
    return opened + timedelta(**{unit: int(m[1])})


def most_severe(levels: Iterable[str]) -> str:
    return min(levels, key=SEVERITIES.index)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def seconds(delta: timedelta) -> float:
    return (delta // US) / 1e6


@dataclass
class Incident:
    """One incident folded from its distinct events, ordered by (time, kind)."""

    incident_id: str
    opened: datetime
    cluster: str | None
    namespace: str | None
    service: str | None
    opening_level: str
    events: list[tuple[datetime, str, dict[str, Any]]]
    changes: list[tuple[datetime, str]] = field(default_factory=list)
    first_ack: datetime | None = None
    first_mitigation: datetime | None = None
    resolved_at: datetime | None = None

    @property
    def max_level(self) -> str:
        return most_severe([self.opening_level, *(s for _, s in self.changes)])

    def levels_before(self, instant: datetime | None) -> list[str]:
        """The opening level and every level changed to strictly before `instant` (all if None)."""
        return [self.opening_level] + [s for t, s in self.changes if instant is None or t < instant]


def distinct_events(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per (source, id): an exact duplicate is a no-op."""
    return list({(e["source"], e["id"]): e for e in events}.values())


def fold(events: Iterable[dict[str, Any]]) -> dict[str, Incident]:
    per: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
    for e in distinct_events(events):
        if e["type"].startswith(PREFIX):
            kind = e["type"][len(PREFIX) :]
            per[e["data"]["incident_id"]].append((parse_time(e["time"]), kind, e))
    out: dict[str, Incident] = {}
    for iid, evs in per.items():
        evs.sort(key=lambda x: (x[0], KIND_ORDER[x[1]]))
        openings = [e for t, k, e in evs if k == "opened"]
        if not openings:
            continue  # no `opened` event: the incident is left out entirely
        assert len(openings) == 1, iid
        o = openings[0]
        inc = Incident(
            incident_id=iid,
            opened=parse_time(o["time"]),
            cluster=o.get("cluster"),
            namespace=o["data"].get("namespace"),
            service=o["data"].get("service"),
            opening_level=o["data"]["severity"],
            events=[(t, k, e["data"]) for t, k, e in evs],
        )
        resolved: datetime | None = None
        for t, k, e in evs:
            if k == "severity_changed":
                inc.changes.append((t, e["data"]["severity"]))
            elif k == "acknowledged" and inc.first_ack is None:
                inc.first_ack = t
            elif k == "mitigated" and inc.first_mitigation is None:
                inc.first_mitigation = t
            elif k == "resolved" and resolved is None:
                resolved = t
            elif k == "reopened" and resolved is not None:
                resolved = None
        inc.resolved_at = resolved
        out[iid] = inc
    return out


def policies_of(events: Iterable[dict[str, Any]]) -> list[tuple[datetime, Policy]]:
    found = [
        (parse_time(e["time"]), Policy.from_doc(e["data"]))
        for e in distinct_events(events)
        if e["type"] == "opsledger.sla.policy_set"
    ]
    return sorted(found, key=lambda x: x[0])


def policy_at(policies: list[tuple[datetime, Policy]], instant: datetime) -> Policy:
    """The policy_set with the latest time <= instant; the documented defaults before any."""
    current = DEFAULT_POLICY
    for t, p in policies:
        if t <= instant:
            current = p
    return current


def applicable_due(
    p: Policy, targets: dict[str, str], inc: Incident, met: datetime | None
) -> tuple[str, datetime] | None:
    """(level, due) for the most severe level held strictly before `met`; None without target."""
    level = most_severe(inc.levels_before(met))
    target = targets.get(level)
    if target is None:
        return None
    return level, due_after(p, inc.opened, target)


def breach_items(
    inc: Incident, policies: list[tuple[datetime, Policy]], as_of: datetime
) -> list[dict[str, Any]]:
    p = policy_at(policies, inc.opened)
    out = []
    for kind, targets, met in (
        ("response", p.response, inc.first_ack),
        ("resolution", p.resolution, inc.resolved_at),
    ):
        applied = applicable_due(p, targets, inc, met)
        if applied is None:
            continue
        level, due = applied
        if (met is not None and met > due) or (met is None and due < as_of):
            out.append(
                {
                    "incident_id": inc.incident_id,
                    "severity": level,
                    "kind": kind,
                    "due_at": due,
                    "met_at": met,
                    "overrun_seconds": seconds((met or as_of) - due),
                    "open": met is None,
                }
            )
    return out


def in_window(incidents: dict[str, Incident], lo: datetime, hi: datetime) -> list[Incident]:
    return [i for i in incidents.values() if lo <= i.opened < hi]


def expected_breaches(
    incidents: list[Incident],
    policies: list[tuple[datetime, Policy]],
    as_of: datetime,
    severity: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(summary, items) for the incidents of the window, filtered by most severe level held."""
    if severity is not None:
        incidents = [i for i in incidents if i.max_level == severity]
    items = [b for i in incidents for b in breach_items(i, policies, as_of)]
    items.sort(key=lambda b: (b["due_at"], b["incident_id"], b["kind"]))
    summary = []
    for level in SEVERITIES if severity is None else (severity,):
        mine = [i for i in incidents if i.max_level == level]
        kinds = [{b["kind"] for b in breach_items(i, policies, as_of)} for i in mine]
        n = len(mine)
        resp = sum("response" in k for k in kinds)
        summary.append(
            {
                "severity": level,
                "incidents": n,
                "response_breaches": resp,
                "resolution_breaches": sum("resolution" in k for k in kinds),
                "breach_rate": resp / n if n else None,
            }
        )
    return summary, items


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, DuckDB's quantile_cont)."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def stats(values: list[float], count: int) -> dict[str, Any]:
    if not values:
        return {"mean": None, "median": None, "p90": None, "missing": count}
    return {
        "mean": math.fsum(values) / len(values),
        "median": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "missing": count - len(values),
    }


def group_key(inc: Incident, fields: list[str]) -> dict[str, Any]:
    every = {
        "severity": inc.max_level,
        "month": inc.opened.strftime("%Y-%m"),
        "cluster": inc.cluster,
        "namespace": inc.namespace,
        "service": inc.service,
    }
    return {f: every[f] for f in fields}


def frozen(key: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(key.items()))


def expected_metrics(incidents: list[Incident], group_by: str) -> dict[tuple[Any, ...], Any]:
    fields = [f for f in group_by.split(",") if f]
    groups: dict[tuple[Any, ...], list[Incident]] = defaultdict(list)
    for inc in incidents:
        groups[frozen(group_key(inc, fields))].append(inc)
    out = {}
    for key, members in groups.items():
        since = {
            "mtta": [i.first_ack - i.opened for i in members if i.first_ack],
            "mttm": [i.first_mitigation - i.opened for i in members if i.first_mitigation],
            "mttr": [i.resolved_at - i.opened for i in members if i.resolved_at],
        }
        out[key] = {
            "key": dict(key),
            "count": len(members),
            **{m: stats([seconds(d) for d in ds], len(members)) for m, ds in since.items()},
            "members": sorted(i.incident_id for i in members),
        }
    return out


# -- comparison ------------------------------------------------------------------------------------


def close(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is want
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def describe(inc: Incident, policies: list[tuple[datetime, Policy]]) -> str:
    """An incident's events in order and its policy, for failure messages."""
    p = policy_at(policies, inc.opened)
    lines = [
        f"{inc.incident_id} opened {inc.opened.isoformat()} level {inc.opening_level} "
        f"(policy tz {p.tz.key}, {p.start}-{p.end}, holidays {sorted(map(str, p.holidays))}, "
        f"response {p.response}, resolution {p.resolution})"
    ]
    for t, k, d in inc.events:
        extra = d.get("severity", "")
        lines.append(f"  {t.isoformat()} {k} {extra}")
    return "\n".join(lines)


def check_time_format(text: str) -> datetime:
    assert _RFC3339_Z.match(text), text
    parsed = parse_time(text)
    assert ("." in text) == (parsed.microsecond != 0), text
    return parsed


def compare_metrics(
    got: dict[str, Any], incidents: list[Incident], group_by: str, ctx: str
) -> list[str]:
    want = expected_metrics(incidents, group_by)
    have: dict[tuple[Any, ...], Any] = {}
    for g in got["groups"]:
        k = frozen(g["key"])
        assert k not in have, f"{ctx}: group {g['key']} twice"
        have[k] = g
    problems = []
    for k in sorted(set(want) | set(have), key=repr):
        w, h = want.get(k), have.get(k)
        if w is None or h is None:
            problems.append(f"{ctx} key {dict(k)}: expected {w}, got {h}")
            continue
        if h["count"] != w["count"]:
            problems.append(f"{ctx} key {dict(k)}: count {h['count']} != {w['count']}")
        for m in ("mtta", "mttm", "mttr"):
            for s in ("mean", "median", "p90"):
                if not close(h[m][s], w[m][s]):
                    problems.append(
                        f"{ctx} key {dict(k)} {m}.{s}: got {h[m][s]}, expected {w[m][s]}"
                        f" (members {w['members']})"
                    )
            if h[m]["missing"] != w[m]["missing"]:
                problems.append(
                    f"{ctx} key {dict(k)} {m}.missing: got {h[m]['missing']},"
                    f" expected {w[m]['missing']}"
                )
    return problems


def normal_item(b: dict[str, Any]) -> tuple[Any, ...]:
    return (
        b["incident_id"],
        b["kind"],
        b["severity"],
        b["due_at"],
        b["met_at"],
        b["open"],
        round(b["overrun_seconds"], 6),
    )


def compare_breaches(
    got: dict[str, Any],
    incidents: dict[str, Incident],
    window: list[Incident],
    policies: list[tuple[datetime, Policy]],
    severity: str | None,
    ctx: str,
) -> list[str]:
    as_of = check_time_format(got["as_of"])
    summary, items = expected_breaches(window, policies, as_of, severity)
    problems = []
    if got["summary"] != summary:
        problems.append(f"{ctx} summary: got {got['summary']}, expected {summary}")
    have = []
    for b in got["items"]:
        b = dict(b)
        b["due_at"] = check_time_format(b["due_at"])
        if b["met_at"] is not None:
            b["met_at"] = check_time_format(b["met_at"])
        have.append(b)
    if [normal_item(b) for b in have] != [normal_item(b) for b in items]:
        got_set = {normal_item(b) for b in have}
        want_set = {normal_item(b) for b in items}
        for extra in sorted(got_set - want_set, key=repr)[:5]:
            problems.append(
                f"{ctx} unexpected item {extra}\n{describe(incidents[extra[0]], policies)}"
            )
        for lost in sorted(want_set - got_set, key=repr)[:5]:
            problems.append(f"{ctx} missing item {lost}\n{describe(incidents[lost[0]], policies)}")
        if got_set == want_set:
            problems.append(f"{ctx} items in the wrong order")
    return problems


# -- the generator -----------------------------------------------------------------------------

POLICY_EVENTS: tuple[tuple[str, dict[str, Any]], ...] = (
    # Before 2026-10-19 no policy: the documented defaults (UTC, Mon-Fri 09-17, no holidays).
    (
        "2026-10-19T00:00:00Z",
        {
            "timezone": "Europe/London",  # BST ends on Sunday 2026-10-25
            "business_hours": {"start": "08:00", "end": "18:00"},  # days omitted: Mon-Fri
            "holidays": ["2026-10-27"],
            "response": {"P0": "15m", "P1": "1h", "P2": "2h", "P3": "next_business_day"},
            "resolution": {"P0": "4h", "P1": "1d", "P3": "2d"},
        },
    ),
    (
        "2026-10-28T10:00:00-04:00",
        {
            "timezone": "America/New_York",  # EDT ends on Sunday 2026-11-01
            "holidays": ["2026-11-11", "2026-11-26", "2026-11-27"],
            "resolution": {"P0": "4h", "P1": "8h"},  # response and business_hours omitted
        },
    ),
    (
        "2026-11-16T15:30:00Z",  # the mid-month change
        {
            "timezone": "America/New_York",
            "business_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:30"},
            "holidays": ["2026-11-26", "2026-11-27"],
            "response": {"P0": "15m", "P1": "30m", "P2": "2h", "P3": "next_business_day"},
            "resolution": {"P1": "8h", "P2": "2d", "P3": "next_business_day"},
        },
    ),
)
POLICIES = [(parse_time(t), Policy.from_doc(d)) for t, d in POLICY_EVENTS]
FIRST_DAY = date(2026, 10, 16)  # a Friday, under the defaults
LAST_DAY = date(2026, 11, 25)  # the day before Thanksgiving
DAYS = [FIRST_DAY + timedelta(days=n) for n in range((LAST_DAY - FIRST_DAY).days + 1)]
DST_INSTANTS = (
    "2026-10-25T00:40:00Z",  # 01:40 BST, the first of London's two 01:40s
    "2026-10-25T01:40:00Z",  # 01:40 GMT
    "2026-10-24T21:15:00Z",  # Saturday evening before the UK change
    "2026-10-23T19:05:00Z",  # Friday 20:05 BST: due Monday 18:00 GMT
    "2026-10-30T22:10:00Z",  # Friday 18:10 EDT: due Monday 17:00 EST
    "2026-11-01T05:30:00Z",  # 01:30 EDT, the first of New York's two 01:30s
    "2026-11-01T06:30:00Z",  # 01:30 EST
    "2026-10-31T16:00:00Z",  # Saturday
)
MIN = timedelta(minutes=1)
FIXED_INCIDENTS: tuple[tuple[str, str, str, list[tuple[timedelta, str, dict[str, Any]]]], ...] = (
    # "2d" and "1d" resolution targets across London's change back to GMT: elapsed time.
    ("DST-2D", "2026-10-24T10:00:00Z", "P3", []),
    ("DST-1D", "2026-10-24T23:30:00Z", "P1", []),
    # Opened in November in UTC but on 31 October in New York: months are UTC.
    (
        "MONTH-EDGE",
        "2026-11-01T03:30:00.250000Z",
        "P2",
        [(7 * MIN, "acknowledged", {}), (180 * MIN + US, "resolved", {})],
    ),
    # An escalation at the ack's instant is not before it: the P2 target (4h) applies.
    (
        "AT-ACK",
        "2026-11-03T14:00:00Z",
        "P2",
        [(60 * MIN, "acknowledged", {}), (60 * MIN, "severity_changed", {"severity": "P0"})],
    ),
    # An escalation at the resolution's instant is not before it: P2 has no resolution target.
    (
        "AT-RESOLVE",
        "2026-11-04T14:00:00Z",
        "P2",
        [
            (10 * MIN, "acknowledged", {}),
            (360 * MIN, "severity_changed", {"severity": "P0"}),
            (360 * MIN, "resolved", {}),
        ],
    ),
    # Exactly at the mid-month policy change (and the end of the second query window).
    ("AT-POLICY", "2026-11-16T15:30:00Z", "P1", []),
    ("BEFORE-POLICY", "2026-11-16T15:29:59.999999Z", "P1", []),
)
CLUSTERS = ("prod-eks-1", "prod-eks-2", "govcloud-west")
NAMESPACES = (None, "payments", "search")
SERVICES = (None, "checkout", "api", "indexer")
OPENING_CASES = (
    ["fri_evening"] * 5
    + ["weekend"] * 5
    + ["before_hours"] * 4
    + ["at_start"] * 3
    + ["after_close"] * 3
    + ["pre_holiday"] * 3
    + ["holiday"] * 3
    + ["dst"] * 4
    + ["policy_edge_at", "policy_edge_before", "policy_edge_after"]
    + ["default_era"] * 3
)
P3_CASES = frozenset(OPENING_CASES) - {"policy_edge_at", "policy_edge_before", "policy_edge_after"}


def local(d: date, secs: int, tz: ZoneInfo) -> datetime:
    return wall(d, (datetime.min + timedelta(seconds=secs)).time(), tz)


def secs_of(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def pick_opening(rng: random.Random, case: str) -> datetime:
    def near(d: date) -> Policy:
        return policy_at(POLICIES, datetime.combine(d, time(12), UTC))

    def day(pred: Any) -> tuple[date, Policy]:
        d = rng.choice([x for x in DAYS if pred(x, near(x))])
        return d, near(d)

    if case == "fri_evening":
        d, p = day(lambda x, p: x.weekday() == 4)
        return local(d, rng.randrange(17 * 3600 + 1800, 86400), p.tz)
    if case == "weekend":
        d, p = day(lambda x, p: x.weekday() >= 5)
        return local(d, rng.randrange(86400), p.tz)
    if case == "before_hours":
        d, p = day(lambda x, p: p.is_business_day(x))
        return local(d, rng.randrange(secs_of(p.start)), p.tz)
    if case == "at_start":
        d, p = day(lambda x, p: p.is_business_day(x))
        return wall(d, p.start, p.tz)
    if case == "after_close":
        d, p = day(lambda x, p: p.is_business_day(x) and x.weekday() < 4)
        return local(d, rng.randrange(secs_of(p.end), 86400), p.tz)
    if case == "pre_holiday":
        d, p = day(lambda x, p: x + timedelta(days=1) in p.holidays)
        return local(d, rng.randrange(86400), p.tz)
    if case == "holiday":
        d, p = day(lambda x, p: x in p.holidays)
        return local(d, rng.randrange(86400), p.tz)
    if case == "dst":
        return parse_time(rng.choice(DST_INSTANTS)) + timedelta(seconds=rng.randrange(600))
    if case.startswith("policy_edge"):
        t = rng.choice(POLICIES[1:])[0]
        return t + {"at": timedelta(0), "before": -US, "after": timedelta(seconds=1)}[case[12:]]
    if case == "default_era":
        return datetime(2026, 10, 16, 17, tzinfo=UTC) + timedelta(seconds=rng.randrange(55 * 3600))
    if case == "business":
        d, p = day(lambda x, p: p.is_business_day(x))
        return local(d, rng.randrange(secs_of(p.start), secs_of(p.end)), p.tz)
    start = datetime.combine(FIRST_DAY, time(0), UTC)
    span = (LAST_DAY - FIRST_DAY).days * 86400 + 20 * 3600
    return start + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6))


def some_delay(rng: random.Random) -> timedelta:
    scale = rng.choice(["minutes", "hours", "days"])
    top = {"minutes": 180, "hours": 30, "days": 4}[scale]
    d = timedelta(**{scale: rng.uniform(0.05, top)})
    return d if rng.random() < 0.6 else timedelta(seconds=round(d.total_seconds()))


def other_level(rng: random.Random, current: str) -> str:
    return rng.choice([s for s in SEVERITIES if s != current])


def lifecycle(
    rng: random.Random,
    t0: datetime,
    s0: str,
    reveal: bool,
    ack_mode: str | None = None,
    res_mode: str | None = None,
    calm: bool = False,
) -> list[tuple[datetime, str, dict[str, Any]]]:
    """(time, kind, extra data) of one incident after its opening.

    With `reveal`, the ack mostly lands where the due time shows: none (an open breach names
    its due time), late, exactly at due (met) or 1 µs after it (a breach).
    """
    p = policy_at(POLICIES, t0)
    target = due_after(p, t0, p.response[s0]) - t0
    out: list[tuple[datetime, str, dict[str, Any]]] = []
    modes = ["none", "on_time", "late", "exact", "exact_plus_1us", "quick"]
    weights = [30, 10, 25, 15, 15, 5] if reveal else [20, 30, 25, 6, 4, 10]
    ack_mode = ack_mode or rng.choices(modes, weights)[0]
    ack: datetime | None = {
        "none": None,
        "on_time": t0 + target * rng.uniform(0.05, 0.95),
        "late": t0 + target * rng.uniform(1.02, 3.0),
        "exact": t0 + target,
        "exact_plus_1us": t0 + target + US,
        "quick": t0 + timedelta(seconds=rng.randrange(0, 120)),
    }[ack_mode]
    if ack is not None:
        if ack_mode in ("on_time", "late") and rng.random() < 0.5:
            ack = ack.replace(microsecond=0)
        out.append((ack, "acknowledged", {"by": "alice"}))
    # Only changes after the ack where the ack sits exactly on the due time.
    protected = ack_mode in ("exact", "exact_plus_1us")
    times = []
    for _ in range(0 if calm else rng.choices([0, 1, 2, 3], [40, 35, 18, 7])[0]):
        if ack is None:
            times.append(t0 + some_delay(rng) if rng.random() < 0.85 else t0)
            continue
        where = rng.choice(["after"] if protected else ["before", "before", "at_ack", "after"])
        if where == "before":
            times.append(t0 + (ack - t0) * rng.uniform(0, 1) if rng.random() < 0.8 else t0)
        elif where == "at_ack":
            times.append(ack)
        else:
            times.append(ack + some_delay(rng))
    level = s0
    for t in sorted(times):
        level = other_level(rng, level)
        out.append((t, "severity_changed", {"severity": level}))
    last = max([t0, *(t for t, _, _ in out)])
    if rng.random() < 0.55:
        m = (ack or t0) + some_delay(rng)
        out.append((m, "mitigated", {}))
        if rng.random() < 0.15:
            out.append((m + some_delay(rng), "mitigated", {}))
        last = max(last, m)
    res_mode = (
        res_mode
        or rng.choices(
            [
                "none",
                "resolved",
                "reopen_resolve",
                "reopen_open",
                "same_instant_reopen",
                "double_resolve",
                "stray_reopen",
            ],
            [16, 40, 14, 10, 6, 6, 8],
        )[0]
    )
    r1 = last + some_delay(rng)
    if res_mode == "none":
        pass
    elif res_mode == "stray_reopen":  # a reopen while open is ignored
        out.append((r1, "reopened", {}))
        out.append((r1 + some_delay(rng), "resolved", {}))
    else:
        out.append((r1, "resolved", {"by": "bob"}))
        if res_mode == "change_at_resolve":  # not strictly before the resolution
            out.append((r1, "severity_changed", {"severity": "P0"}))
        elif res_mode == "double_resolve":  # a resolve while resolved is ignored
            out.append((r1 + some_delay(rng), "resolved", {}))
        elif res_mode == "same_instant_reopen":  # resolved < reopened at one instant
            out.append((r1, "reopened", {}))
            if rng.random() < 0.5:
                out.append((r1 + some_delay(rng), "resolved", {}))
        elif res_mode in ("reopen_resolve", "reopen_open"):
            again = r1 + some_delay(rng)
            out.append((again, "reopened", {}))
            if rng.random() < 0.5:
                out.append((again + some_delay(rng), "acknowledged", {}))
            if rng.random() < 0.4:
                sev_t = again + some_delay(rng)
                out.append((sev_t, "severity_changed", {"severity": other_level(rng, level)}))
            if res_mode == "reopen_resolve":
                final = max(t for t, _, _ in out) + some_delay(rng)
                out.append((final, "resolved", {}))
    final_resolves = [t for t, k, _ in out if k == "resolved"]
    if final_resolves and not calm and rng.random() < 0.1:
        # A change at the instant of the (last) resolve is not "strictly before" it.
        out.append((max(final_resolves), "severity_changed", {"severity": "P0"}))
    end = max([t0, *(t for t, _, _ in out)])
    if rng.random() < 0.3:
        out.append((t0 + (end - t0) * rng.random(), "annotated", {"note": "looking"}))
    if rng.random() < 0.2:
        out.append((end + some_delay(rng), "postmortem_linked", {"url": "https://wiki/pm/1"}))
    return out


def fmt_time(rng: random.Random, t: datetime) -> str:
    """RFC 3339 with a random spelling of the offset (the instant is what counts)."""
    tz = rng.choice([UTC, UTC, ZoneInfo("America/New_York"), ZoneInfo("Europe/London")])
    text = t.astimezone(tz).isoformat(timespec="microseconds" if t.microsecond else "seconds")
    return text.replace("+00:00", "Z") if rng.random() < 0.7 else text


@dataclass
class History:
    events: list[dict[str, Any]]


def generate(seed: int, now: datetime) -> History:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    cut = now - timedelta(minutes=1)  # nothing from the future

    def ce(
        kind: str, iid: str, n: int, t: datetime, data: dict[str, Any], cluster: str | None
    ) -> None:
        source = SRC_PAGER if kind == "acknowledged" and rng.random() < 0.6 else SRC_BOT
        ev: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"{iid}.{n}",
            "source": source,
            "type": PREFIX + kind,
            "time": fmt_time(rng, t),
            "data": {"incident_id": iid, **data},
        }
        if cluster is not None:
            ev["cluster"] = cluster
        events.append(ev)

    for n, (t, doc) in enumerate(POLICY_EVENTS):
        events.append(
            {
                "specversion": "1.0",
                "id": f"policy-{n}",
                "source": "//oracle.test/admin",
                "type": "opsledger.sla.policy_set",
                "time": t,
                "data": doc,
            }
        )

    extra = ["business", "random"] * rng.randint(7, 14)
    plan = OPENING_CASES + extra
    rng.shuffle(plan)
    seen: Counter[str] = Counter()
    # The first few of each special opening are calm P3s whose ack shows the due time exactly;
    # the first few of the others get each awkward ending once.
    forced_acks = ["none", "exact_plus_1us", "exact"]
    forced_ends = ["same_instant_reopen", "reopen_resolve", "reopen_open", "double_resolve"]
    forced_ends += ["stray_reopen", "change_at_resolve"]
    for n, case in enumerate(plan):
        iid = f"INC-{n:03d}"
        t0 = pick_opening(rng, case)
        for _ in range(100):
            if t0 <= now - timedelta(hours=6):
                break
            t0 = pick_opening(rng, "random")
        else:
            raise AssertionError(f"the clock ({now}) is before the generated history")
        k = seen[case]
        seen[case] += 1
        ack_mode = res_mode = None
        if case.startswith("policy_edge"):
            s0 = rng.choice(["P1", "P2"])  # their targets differ on either side of each change
            ack_mode = "none"
        elif case in P3_CASES and k < len(forced_acks):
            s0, ack_mode = "P3", forced_acks[k]
        elif case in P3_CASES and rng.random() < 0.8:
            s0 = "P3"
        else:
            s0 = rng.choice(SEVERITIES)
        cluster = rng.choice(CLUSTERS)
        data: dict[str, Any] = {"title": f"incident {n}", "severity": s0}
        if ns := rng.choice(NAMESPACES):
            data["namespace"] = ns
        if svc := rng.choice(SERVICES):
            data["service"] = svc
        ce("opened", iid, 0, t0, data, cluster)
        if case in ("business", "random") and k < len(forced_ends):
            res_mode = forced_ends[k]
        steps = lifecycle(
            rng,
            t0,
            s0,
            reveal=case not in ("business", "random"),
            ack_mode=ack_mode,
            res_mode=res_mode,
            calm=ack_mode is not None,
        )
        for j, (t, kind, extra_data) in enumerate(steps, start=1):
            if t <= cut:
                ce(kind, iid, j, t, extra_data, cluster if rng.random() < 0.2 else None)

    # Fixed incidents, the same in every history: (id, opened, level, [(after, kind, data)]).
    for iid, at, s0, steps in FIXED_INCIDENTS:
        t0 = parse_time(at)
        ce("opened", iid, 0, t0, {"title": iid, "severity": s0}, "prod-eks-2")
        for j, (after, kind, extra_data) in enumerate(steps, start=1):
            ce(kind, iid, j, t0 + after, extra_data, None)

    # Recent incidents: some targets are not due yet at `as_of`, one is already breached.
    for n, (ago, s0, mode) in enumerate(
        [(10, "P0", "none"), (120, "P1", "none"), (180, "P3", "none"), (30, "P2", "quick")]
    ):
        iid = f"NOW-{n}"
        t0 = now - timedelta(minutes=ago)
        ce("opened", iid, 0, t0, {"title": "recent", "severity": s0}, "prod-eks-1")
        if mode == "quick":
            ce("acknowledged", iid, 1, t0 + timedelta(minutes=5), {}, None)

    # Orphans: incident events without an `opened` one are left out entirely.
    for n in range(2):
        iid = f"ORPHAN-{n}"
        t = datetime(2026, 11, 3, 12, tzinfo=UTC) + timedelta(hours=n)
        ce("severity_changed", iid, 1, t, {"severity": "P0"}, None)
        ce("acknowledged", iid, 2, t + timedelta(hours=2), {}, None)
        ce("resolved", iid, 3, t + timedelta(hours=3), {}, None)
    return History(events)


# -- coverage ----------------------------------------------------------------------------------


def coverage(hist: History, as_of: datetime) -> Counter[str]:
    """How many of each tricky case a history holds (judged by the oracle, not by intent)."""
    c: Counter[str] = Counter()
    incidents = fold(hist.events)
    policies = policies_of(hist.events)
    c["incidents"] = len(incidents)
    c["events"] = len(hist.events)
    c["orphans"] = sum(
        iid.startswith("ORPHAN")
        for iid in {e["data"]["incident_id"] for e in hist.events if e["type"].startswith(PREFIX)}
        - set(incidents)
    )
    for inc in incidents.values():
        p = policy_at(policies, inc.opened)
        loc = inc.opened.astimezone(p.tz)
        d = loc.date()
        if p is DEFAULT_POLICY:
            c["under_default_policy"] += 1
        if any(inc.opened == t for t, _ in policies):
            c["opened_at_policy_change"] += 1
        if any(inc.opened == t - US for t, _ in policies):
            c["opened_1us_before_policy_change"] += 1
        if inc.opening_level == "P3":
            nbd = next_business_day_close(p, inc.opened)
            if d.weekday() == 4 and loc.time() >= time(17, 30):
                c["p3_friday_evening"] += 1
            if d.weekday() >= 5:
                c["p3_weekend"] += 1
            if p.is_business_day(d) and loc.time() < p.start:
                c["p3_before_hours"] += 1
            if p.is_business_day(d) and loc.time() == p.start:
                c["p3_exactly_at_start"] += 1
            if d + timedelta(days=1) in p.holidays:
                c["p3_day_before_holiday"] += 1
            if d in p.holidays:
                c["p3_on_holiday"] += 1
            if inc.opened.astimezone(p.tz).utcoffset() != nbd.astimezone(p.tz).utcoffset():
                c["p3_due_across_dst"] += 1
        if inc.first_ack is None:
            c["never_acked_resolved" if inc.resolved_at else "never_acked_open"] += 1
        levels = [inc.opening_level]
        for t, s in inc.changes:
            c[
                "escalation"
                if SEVERITIES.index(s) < SEVERITIES.index(levels[-1])
                else "de_escalation"
            ] += 1
            levels.append(s)
            if inc.first_ack is not None:
                rel = "before" if t < inc.first_ack else "at" if t == inc.first_ack else "after"
                c[f"severity_change_{rel}_ack"] += 1
            if inc.resolved_at is not None and t == inc.resolved_at:
                c["severity_change_at_final_resolve"] += 1
        kinds = [k for _, k, _ in inc.events]
        if "mitigated" in kinds:
            c["mitigated"] += 1
        if "reopened" in kinds:
            c["reopened_and_resolved" if inc.resolved_at else "reopened_still_open"] += 1
        if any(
            k == "reopened" and (t, "resolved") in {(u, j) for u, j, _ in inc.events}
            for t, k, _ in inc.events
        ):
            c["resolve_and_reopen_same_instant"] += 1
        if kinds.count("resolved") > 1 + kinds.count("reopened"):
            c["resolve_while_resolved"] += 1
        if {"annotated", "postmortem_linked"} & set(kinds):
            c["annotated_or_linked"] += 1
        resp = applicable_due(p, p.response, inc, inc.first_ack)
        assert resp is not None
        if inc.first_ack is not None:
            delta = inc.first_ack - resp[1]
            c[
                "ack_exactly_at_due"
                if delta == timedelta(0)
                else "ack_late_by_1us"
                if delta == US
                else "ack_late"
                if delta > timedelta(0)
                else "ack_on_time"
            ] += 1
        elif resp[1] < as_of:
            c["open_response_breach"] += 1
        else:
            c["response_not_yet_due"] += 1
        res = applicable_due(p, p.resolution, inc, inc.resolved_at)
        if res is not None:
            c["resolution_target_applies"] += 1
            if p.resolution[res[0]].endswith("d") and (
                inc.opened.astimezone(p.tz).utcoffset() != res[1].astimezone(p.tz).utcoffset()
            ):
                c["days_target_across_dst"] += 1
    return c


REQUIRED_COVERAGE = (
    "under_default_policy",
    "opened_at_policy_change",
    "opened_1us_before_policy_change",
    "resolve_and_reopen_same_instant",
    "resolve_while_resolved",
    "severity_change_at_ack",
    "severity_change_at_final_resolve",
    "days_target_across_dst",
    "ack_exactly_at_due",
    "ack_late_by_1us",
    "p3_friday_evening",
    "p3_weekend",
    "p3_before_hours",
    "p3_exactly_at_start",
    "p3_day_before_holiday",
    "p3_on_holiday",
    "p3_due_across_dst",
    "never_acked_open",
    "escalation",
    "de_escalation",
    "severity_change_before_ack",
    "severity_change_after_ack",
    "mitigated",
    "reopened_and_resolved",
    "reopened_still_open",
    "ack_on_time",
    "ack_late",
    "open_response_breach",
    "response_not_yet_due",
    "resolution_target_applies",
    "orphans",
)


# -- delivery and the tests ----------------------------------------------------------------------


def deliver(
    bed: Bed, events: list[dict[str, Any]], rng: random.Random, batches: int, dups: int
) -> tuple[int, int]:
    """Post events shuffled in `batches` requests, `dups` of them twice (in another request)."""
    order = list(events)
    rng.shuffle(order)
    chunks = [order[i::batches] for i in range(batches)]
    # The first policy arrives last of all: it must still govern the incidents opened after it.
    first_policy = next(e for e in order if e["id"] == "policy-0")
    for chunk in chunks:
        if first_policy in chunk:
            chunk.remove(first_policy)
    chunks[-1].append(first_policy)
    for ev in rng.sample(order, dups):
        home = next(i for i, c in enumerate(chunks) if ev in c)
        chunks[rng.choice([i for i in range(batches) if i != home])].append(ev)
    accepted = duplicates = 0
    for chunk in chunks:
        rng.shuffle(chunk)
        r = bed.client.post(
            "/v1/events",
            content=json.dumps(chunk),
            headers={**bed.headers(), "Content-Type": BATCH},
        )
        assert r.status_code == 200, r.text
        accepted += r.json()["accepted"]
        duplicates += r.json()["duplicates"]
    return accepted, duplicates


def windows(now: datetime) -> list[tuple[str, str]]:
    return [
        ("2026-10-01T00:00:00Z", (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")),
        # From the UK's change back to GMT to the mid-month policy change; half-open, so an
        # incident opened exactly at the policy change falls outside.
        ("2026-10-25T01:00:00Z", "2026-11-16T15:30:00Z"),
        ("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"),  # no incidents: no groups
    ]


def check_everything(bed: Bed, events: list[dict[str, Any]], now: datetime) -> list[Any]:
    """Compare every metric and breach with the oracle; returns the metric answers."""
    incidents = fold(events)
    policies = policies_of(events)
    problems: list[str] = []
    answers = []
    for lo, hi in windows(now):
        window = in_window(incidents, parse_time(lo), parse_time(hi))
        for group_by in GROUP_BYS:
            r = bed.get("/v1/incidents/metrics", **{"from": lo, "to": hi, "group_by": group_by})
            assert r.status_code == 200, r.text
            answers.append(sorted(r.json()["groups"], key=lambda g: json.dumps(g["key"])))
            problems += compare_metrics(r.json(), window, group_by, f"[{lo},{hi}) {group_by!r}")
        r = bed.get("/v1/incidents/metrics", **{"from": lo, "to": hi})
        assert r.status_code == 200, r.text
        problems += compare_metrics(r.json(), window, "", f"[{lo},{hi}) no group_by")
        for severity in (None, "P3", "P0"):
            params = {"from": lo, "to": hi}
            if severity:
                params["severity"] = severity
            r = bed.get("/v1/sla/breaches", **params)
            assert r.status_code == 200, r.text
            problems += compare_breaches(
                r.json(), incidents, window, policies, severity, f"[{lo},{hi}) {severity}"
            )
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems)"
    return answers


@pytest.fixture
def bed(backend_url: str, tmp_path: Path) -> Iterator[Bed]:
    """The app on a fresh ledger of each backend."""
    with make_bed(tmp_path, backend_url, projection_interval_seconds=3600) as b:
        yield b


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_and_breaches_equal_the_oracle(bed: Bed, seed: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hist = generate(seed, now)
    distinct = distinct_events(hist.events)
    assert len(distinct) == len(hist.events)
    rng = random.Random(seed * 7 + 1)

    accepted, duplicates = deliver(bed, hist.events, rng, batches=5, dups=len(distinct) // 8)
    assert (accepted, duplicates) == (len(distinct), len(distinct) // 8)
    bed.wait_caught_up()
    first = check_everything(bed, hist.events, now)

    # Everything again, in another order: all duplicates, and no answer changes.
    head = bed.ledger.head()
    accepted, duplicates = deliver(bed, hist.events, rng, batches=3, dups=0)
    assert (accepted, duplicates) == (0, len(distinct))
    assert bed.ledger.head() == head
    bed.wait_caught_up()
    assert check_everything(bed, hist.events, now) == first


@pytest.mark.parametrize("seed", SEEDS)
def test_the_generator_covers_every_tricky_case(seed: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    cov = coverage(generate(seed, now), now)
    assert 40 <= cov["incidents"] <= 80, cov
    missing = [k for k in REQUIRED_COVERAGE if cov[k] == 0]
    assert not missing, (missing, cov)

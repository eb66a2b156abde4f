"""Incidents: the SLA policy and its calendar, what else opens incidents, and their lifecycles."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np

from ingest.demo.catalogue import PVCS
from ingest.demo.draws import T_ADHOC, T_INCIDENT, keyed_rng, text_tag
from ingest.demo.facts import DayPlan, Trigger, cloudevent
from ingest.demo.units import DAY, MIN, SEC, day_of
from ingest.demo.world import World, pvc_crossings
from store.event_types import INCIDENT_PREFIX, EventType
from store.timefmt import datetime_to_us, us_to_datetime

SLA_POLICY: Final[dict[str, Any]] = {
    "timezone": "America/New_York",
    "business_hours": {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "09:00",
        "end": "17:00",
    },
    "holidays": ["2026-11-26"],
    "response": {"P0": "15m", "P1": "1h", "P2": "4h", "P3": "next_business_day"},
    "resolution": {"P0": "4h", "P1": "8h"},
}
_NY: Final = ZoneInfo("America/New_York")
_HOLIDAYS: Final = frozenset(dt.date.fromisoformat(d) for d in SLA_POLICY["holidays"])
_SEVERITIES: Final = ("P0", "P1", "P2", "P3")
_RESPONSE_MIN: Final = {"P0": 15, "P1": 60, "P2": 240}
ONCALL: Final = (
    "maria.garcia",
    "james.chen",
    "aisha.okafor",
    "tom.kowalski",
    "priya.raman",
    "lucas.silva",
)


def sla_policy_raw(since: dt.date, start_us: int) -> dict[str, Any]:
    """The policy as a collector that starts on `since` observes it."""
    event_id = f"sla-policy/{since.isoformat()}"
    return cloudevent(
        "sla", event_id, EventType.SLA_POLICY_SET, start_us, dict(SLA_POLICY), cluster=False
    )


# -- business calendar (the SLA policy's) ---------------------------------------------------------


def _business_day(day: dt.date) -> bool:
    """A workday of the policy that is not one of its holidays."""
    return day.weekday() < 5 and day not in _HOLIDAYS


def _local_us(day: dt.date, hour: int) -> int:
    """An hour of a day in the policy's time zone, in UTC microseconds."""
    return datetime_to_us(dt.datetime(day.year, day.month, day.day, hour, tzinfo=_NY))


def _first_business_day_after(t_us: int) -> dt.date:
    """The first business day whose business hours begin after t."""
    day = us_to_datetime(t_us).astimezone(_NY).date()
    while not (_business_day(day) and _local_us(day, 9) > t_us):
        day += dt.timedelta(days=1)
    return day


def _in_business_hours(t_us: int) -> bool:
    """Whether t falls inside the policy's business hours."""
    local = us_to_datetime(t_us).astimezone(_NY)
    return _business_day(local.date()) and 9 <= local.hour < 17


def _oncall(seed: int, t_us: int) -> str:
    """The primary on-call engineer: a weekly rotation."""
    return ONCALL[(t_us // (7 * DAY) + seed) % len(ONCALL)]


# -- what else opens incidents --------------------------------------------------------------------


def pvc_facts(w: World, day: int, plan: DayPlan) -> None:
    """Storage alerts: above 85 % is a P3 (alert), above 90 % a P1 (expand now)."""
    lo, hi = day * DAY, (day + 1) * DAY
    for i, pvc in enumerate(PVCS):
        if pvc.kind != "grow":
            continue
        for threshold, sev in ((0.85, "P3"), (0.90, "P1")):
            for t in pvc_crossings(w.pvcs.params(i), threshold, lo, hi):
                title = f"PVC {pvc.namespace}/{pvc.name} above {round(threshold * 100)}% full"
                key = i * 10 + round(threshold * 100) % 10
                plan.triggers.append(Trigger(t - t % SEC, sev, title, "pvc", key, pvc.namespace))


_ADHOC: Final = (
    (
        "P3",
        "Runbook update: KEDA ScaledObject drift on orders-consumer",
        "orders",
        "orders-consumer",
    ),
    (
        "P3",
        "Right-size requests for catalog-api (p95 usage 35% of requests)",
        "catalog",
        "catalog-api",
    ),
    ("P3", "Informational: EKS add-on update available (coredns, kube-proxy)", "kube-system", None),
    ("P3", "Cost optimization: idle GPU node hours overnight", "ml-inference", "triton-server"),
    ("P3", "Istio sidecar injection missing on new namespace", "istio-system", "istiod"),
    ("P2", "checkout-api p99 latency > 1.5s", "checkout", "checkout-api"),
    ("P2", "orders-consumer Kafka lag growing", "orders", "orders-consumer"),
    ("P2", "Prometheus rule evaluation slow", "prometheus", None),
    ("P0", "payments-api production completely down (5xx > 90%)", "payments", "payments-api"),
)


def adhoc_facts(w: World, day: int, plan: DayPlan) -> None:
    """Incidents from user reports and health checks, unrelated to other facts."""
    rng = keyed_rng(w.seed, day, T_ADHOC)
    rates = {"P3": 0.25, "P2": 0.08, "P0": 0.015}
    for sev, rate in rates.items():
        options = [a for a in _ADHOC if a[0] == sev]
        for j in range(int(rng.poisson(rate))):
            _, title, ns, service = options[int(rng.integers(0, len(options)))]
            t = day * DAY + int(rng.integers(0, 86_000)) * SEC
            plan.triggers.append(Trigger(t, sev, title, f"adhoc-{sev}", j, ns, service))


# -- incidents ------------------------------------------------------------------------------------

POSTMORTEM_URL: Final = "https://wiki.ops.example.gov/postmortems/"
#: How often the first acknowledgement misses the response target, by severity.
_BREACH_P: Final = {"P0": 0.3, "P1": 0.25, "P2": 0.2, "P3": 0.2}
_NOTES: Final = {
    "node-flap": "Auto Mode replaced the instance; workloads rescheduled.",
    "az-flap": "AZ network event; pods rescheduled to the other zones.",
    "pvc": "Retention shortened and expansion requested.",
}


def _ack_time(opened: int, severity: str, breach: bool, rng: np.random.Generator) -> int:
    """First acknowledgement: mostly within the response target, sometimes well after it."""
    if severity == "P3" or (severity == "P2" and breach and not _in_business_hours(opened)):
        # Nothing pages for these: they wait for a business-day morning triage, and a neglected
        # P3 can sit in the backlog for a week.
        day = _first_business_day_after(opened)
        for _ in range(int(rng.integers(1, 7)) if breach and severity == "P3" else 0):
            day = _first_business_day_after(_local_us(day, 17))
        return _local_us(day, 9) + int(rng.integers(30, 180)) * MIN
    target = _RESPONSE_MIN[severity] * 60
    frac = rng.uniform(1.3, 3.5) if breach else rng.uniform(0.15, 0.85)
    return opened + int(target * frac) * SEC


def _lifecycle(seed: int, trig: Trigger) -> list[tuple[int, EventType, dict[str, Any]]]:
    """An incident's events from opening to postmortem: (time, type, payload)."""
    rng = keyed_rng(seed, day_of(trig.time_us), T_INCIDENT, text_tag(trig.kind), trig.key)
    opened = trig.time_us + int(rng.integers(60, 480)) * SEC
    opened_data: dict[str, Any] = {"title": trig.title, "severity": trig.severity}
    if trig.namespace is not None:
        opened_data["namespace"] = trig.namespace
    if trig.service is not None:
        opened_data["service"] = trig.service
    steps: list[tuple[int, EventType, dict[str, Any]]] = [
        (opened, EventType.INCIDENT_OPENED, opened_data)
    ]
    level = _SEVERITIES.index(trig.severity)
    draws = rng.random(8)
    escalate = level > 0 and draws[0] < 0.12
    held = _SEVERITIES[level - 1] if escalate else trig.severity
    ack = _ack_time(opened, held, draws[1] < _BREACH_P[held], rng)
    if trig.kind == "securityhub" and draws[2] < 0.35:
        # Compliance incidents raised by automation sometimes sit in the queue for days.
        ack = opened + int(rng.integers(20 * 60, 72 * 60)) * MIN
    if escalate:
        steps.append(
            (
                opened + int((ack - opened) * rng.uniform(0.2, 0.7)) // SEC * SEC,
                EventType.INCIDENT_SEVERITY_CHANGED,
                {"severity": held},
            )
        )
    steps.append((ack, EventType.INCIDENT_ACKNOWLEDGED, {"by": _oncall(seed, ack)}))
    lo_m, hi_m, lo_r, hi_r = {
        "P0": (15, 75, 20, 200),
        "P1": (30, 240, 60, 400),
        "P2": (60, 600, 120, 1440),
        "P3": (120, 2880, 60, 2880),
    }[held]
    t = ack
    if held != "P3" or draws[3] < 0.4:
        t = ack + int(rng.integers(lo_m, hi_m)) * MIN
        steps.append((t, EventType.INCIDENT_MITIGATED, {"by": _oncall(seed, t)}))
        if held in ("P0", "P1") and draws[6] < 0.1:
            lower = _SEVERITIES[_SEVERITIES.index(held) + 1]
            at = t + int(rng.integers(2, 15)) * MIN  # before the earliest resolution (20 min)
            steps.append((at, EventType.INCIDENT_SEVERITY_CHANGED, {"severity": lower}))
    resolved = t + int(rng.integers(lo_r, hi_r)) * MIN
    if draws[4] < 0.6:
        note = trig.note or _NOTES.get(trig.kind, f"Investigating: {trig.title}.")
        noted = ack + (resolved - ack) // 2 // SEC * SEC
        steps.append((noted, EventType.INCIDENT_ANNOTATED, {"note": note}))
    steps.append((resolved, EventType.INCIDENT_RESOLVED, {"by": _oncall(seed, resolved)}))
    if held != "P3" and draws[5] < 0.1:
        again = resolved + int(rng.integers(60, 720)) * MIN
        steps.append((again, EventType.INCIDENT_REOPENED, {"by": _oncall(seed, again)}))
        resolved = again + int(rng.integers(60, 300)) * MIN
        steps.append((resolved, EventType.INCIDENT_RESOLVED, {"by": _oncall(seed, resolved)}))
    if held in ("P0", "P1"):
        t = resolved + int(rng.integers(24 * 60, 4 * 24 * 60)) * MIN
        steps.append((t, EventType.INCIDENT_POSTMORTEM_LINKED, {}))
    steps.sort(key=lambda step: step[0])
    return steps


def incident_raws(seed: int, plans: dict[int, DayPlan], lo: int, hi: int) -> list[dict[str, Any]]:
    """Lifecycle events of incidents opened in [lo, hi], numbered per month of opening."""
    incidents = [_lifecycle(seed, trig) for day in sorted(plans) for trig in plans[day].triggers]
    incidents.sort(key=lambda steps: (steps[0][0], steps[0][2]["title"]))
    numbers: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for steps in incidents:
        opened = steps[0][0]
        month = us_to_datetime(opened).strftime("%Y-%m")
        numbers[month] = numbers.get(month, 0) + 1
        if not lo <= opened <= hi:
            continue
        inc_id = f"INC-{month}-{numbers[month]:03d}"
        kinds: dict[str, int] = {}
        for t, event_type, payload in steps:
            kind = event_type.removeprefix(INCIDENT_PREFIX)
            kinds[kind] = kinds.get(kind, 0) + 1
            if t > hi:
                continue
            data = {"incident_id": inc_id, **payload}
            if event_type == EventType.INCIDENT_POSTMORTEM_LINKED:
                data["url"] = f"{POSTMORTEM_URL}{inc_id}"
            event_id = f"{inc_id}/{kind}" + (f"-{kinds[kind]}" if kinds[kind] > 1 else "")
            out.append(
                cloudevent(
                    "incidents",
                    event_id,
                    event_type,
                    t,
                    data,
                    cluster=event_type == EventType.INCIDENT_OPENED,
                )
            )
    return out

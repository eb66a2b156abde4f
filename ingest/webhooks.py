"""Alertmanager and PagerDuty webhooks into contract incident events, appended idempotently."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ingest.events import BodyError
from store.contract import ContractError, Event, event_to_cloudevent, validate_events
from store.datamodels import Timestamp
from store.errors import ConflictError
from store.event_types import INCIDENT_PREFIX, EventType
from store.ledger import Ledger
from store.settings import Settings
from store.timefmt import TimeFormatError, parse_rfc3339_us

PAGERDUTY_SOURCE: Final = "pagerduty"
MAX_TITLE: Final = 4096
MAX_NAME: Final = 253
_INCIDENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: PagerDuty V3 event types that change an incident's lifecycle, and the kind each records.
PAGERDUTY_KINDS: Final = {
    "incident.triggered": "opened",
    "incident.acknowledged": "acknowledged",
    "incident.resolved": "resolved",
    "incident.reopened": "reopened",
    "incident.priority_updated": "severity_changed",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One reason a payload was refused: the alert's index (None for the envelope), field, why."""

    index: int | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The fault as the API's error item."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


class PayloadError(ValueError):
    """A webhook payload of the wrong shape; nothing from it may be written (HTTP 422)."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        self.faults = list(faults)
        first = self.faults[0]
        super().__init__(
            f"{len(self.faults)} invalid field(s); first: {first.field}: {first.reason}"
        )


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something of a delivery that was not recorded, and why."""

    index: int | None
    id: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """As the response lists it."""
        return {"index": self.index, "id": self.id, "reason": self.reason}


@dataclass(slots=True)
class Translation:
    """A delivery's contract events, each with the index of the item it came from."""

    events: list[Event] = field(default_factory=list)
    origins: list[int | None] = field(default_factory=list)
    repeats: int = 0
    ignored: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Delivered:
    """What appending a delivery did."""

    appended: int
    duplicates: int
    ignored: list[Skipped]
    incidents: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The webhook response body."""
        return {
            "appended": self.appended,
            "duplicates": self.duplicates,
            "ignored": [s.as_dict() for s in self.ignored],
            "incidents": self.incidents,
        }


@dataclass(frozen=True, slots=True)
class _Draft:
    """A CloudEvent about to be validated, its origin, and where its fields came from."""

    raw: dict[str, Any]
    index: int | None
    fields: Mapping[str, str]


class _Lax(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


# -- shared --------------------------------------------------------------------------------------


def decode_json(body: bytes) -> Any:
    """The body as JSON; BodyError (400) when it does not parse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"malformed JSON: {exc}") from None


def _parse(model: type[_Lax], doc: Any, index_of: Callable[[tuple[Any, ...]], int | None]) -> Any:
    if not isinstance(doc, dict):
        raise PayloadError([Fault(None, "", "the body must be a JSON object")])
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise PayloadError(
            [
                Fault(
                    index_of(tuple(e["loc"])),
                    _path(e["loc"]),
                    str(e["msg"]).removeprefix("Value error, "),
                )
                for e in exc.errors(include_url=False)
            ]
        ) from None


def _path(loc: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _time(value: str, index: int | None, name: str, faults: list[Fault]) -> int | None:
    try:
        return parse_rfc3339_us(value)
    except TimeFormatError as exc:
        faults.append(Fault(index, name, str(exc)))
        return None


def _text(value: str | None, limit: int) -> str | None:
    # Titles and names longer than the contract allows are cut rather than refused: a webhook
    # sender cannot fix a long summary, and refusing would lose the incident.
    value = (value or "").strip()
    return value[:limit] or None


def _lookup(mapping: Mapping[str, str], key: str | None) -> str | None:
    if key is None:
        return None
    folded = {k.casefold(): v for k, v in mapping.items()}
    return folded.get(key.casefold())


def _finish(drafts: list[_Draft], ignored: list[Skipped]) -> Translation:
    """Fold repeats within the delivery, then validate every event against the contract."""
    out = Translation(ignored=ignored)
    kept: list[_Draft] = []
    first: dict[tuple[str, str], _Draft] = {}
    for d in drafts:
        key = (d.raw["source"], d.raw["id"])
        seen = first.setdefault(key, d)
        if seen is d:
            kept.append(d)
        elif seen.raw == d.raw:
            out.repeats += 1
        else:
            out.ignored.append(
                Skipped(
                    d.index,
                    d.raw["id"],
                    f"repeats the event of item {seen.index} with different content; kept that one",
                )
            )
    try:
        out.events = validate_events([d.raw for d in kept])
    except ContractError as exc:
        raise PayloadError(
            [
                Fault(kept[p.index].index, kept[p.index].fields.get(p.field, p.field), p.reason)
                for p in exc.problems
            ]
        ) from None
    out.origins = [d.index for d in kept]
    return out


def append_delivery(ledger: Ledger, t: Translation) -> Delivered:
    """Append the events in one call; events recorded with other content are skipped, reported."""
    pending = list(zip(t.events, t.origins, strict=True))
    ignored = list(t.ignored)
    while pending:
        try:
            result = ledger.append([e for e, _ in pending])
        except ConflictError as exc:
            # Another delivery recorded these ids with other content (e.g. an alert's summary
            # changed): keep what is recorded, take the rest of this delivery.
            bad = {c.index: c.position for c in exc.conflicts}
            for i, position in bad.items():
                ev, origin = pending[i]
                ignored.append(
                    Skipped(
                        origin,
                        ev.id,
                        f"recorded at position {position} with different content; kept that one",
                    )
                )
            pending = [p for i, p in enumerate(pending) if i not in bad]
            continue
        return Delivered(
            result.accepted, result.duplicates + t.repeats, ignored, _incidents(pending)
        )
    return Delivered(0, t.repeats, ignored, [])


def _incidents(pending: Sequence[tuple[Event, int | None]]) -> list[str]:
    return list(dict.fromkeys(str(e.data["incident_id"]) for e, _ in pending if e.data))


# -- Alertmanager --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertmanagerRules:
    """How alerts become incidents: the severity map, the cluster label and the defaults."""

    severity_map: Mapping[str, str]
    default_severity: str
    cluster_label: str
    default_cluster: str

    @classmethod
    def from_settings(cls, s: Settings) -> AlertmanagerRules:
        """The rules the settings configure."""
        return cls(
            dict(s.alertmanager_severity_map),
            s.webhook_default_severity,
            s.alertmanager_cluster_label,
            s.webhook_default_cluster,
        )


class _Alert(_Lax):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: Timestamp
    # Firing alerts carry Alertmanager's zero time 0001-01-01T00:00:00Z: read only once resolved.
    endsAt: str | None = Field(None, description="RFC 3339; required when `status` is resolved.")
    fingerprint: str | None = Field(
        None,
        # It becomes part of the incident id `am-<fingerprint>-<startsAt>`, at most 128 long.
        json_schema_extra={"pattern": r"^[A-Za-z0-9._:-]{1,90}$"},
    )


class AlertmanagerPayload(_Lax):
    """Alertmanager's webhook payload (version 4); fields opsledger does not read are ignored."""

    version: Literal["4"]
    receiver: str | None = None
    externalURL: str | None = None
    alerts: list[_Alert]


def _alert_index(loc: tuple[Any, ...]) -> int | None:
    return loc[1] if len(loc) > 1 and loc[0] == "alerts" and isinstance(loc[1], int) else None


def alertmanager_source(receiver: str | None, external_url: str | None) -> str:
    """`alertmanager/<receiver>`: the same across an HA pair, so either replica's copy dedups."""
    name = (receiver or "").strip() or (external_url or "").strip()
    return f"alertmanager/{name}" if name else "alertmanager"


def alert_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable fingerprint from sorted labels, for payloads that carry none."""
    canonical = orjson.dumps(dict(sorted(labels.items())))
    return hashlib.sha256(canonical).hexdigest()[:16]


def compact_utc(us: int) -> str:
    """`20200206T001758.432911Z`: UTC without separators, microseconds only when non-zero."""
    dt = _EPOCH + timedelta(microseconds=us)
    text = dt.strftime("%Y%m%dT%H%M%S")
    return f"{text}.{dt.microsecond:06d}Z" if dt.microsecond else f"{text}Z"


def alertmanager_incident_id(fingerprint: str, starts_us: int) -> str:
    """`am-<fingerprint>-<startsAt>`: one alert's firing run is one incident."""
    return f"am-{fingerprint}-{compact_utc(starts_us)}"


def translate_alertmanager(doc: Any, rules: AlertmanagerRules) -> Translation:
    """Firing alerts open incidents; resolved ones resolve them (and open them, if unseen)."""
    payload: AlertmanagerPayload = _parse(AlertmanagerPayload, doc, _alert_index)
    source = alertmanager_source(payload.receiver, payload.externalURL)
    faults: list[Fault] = []
    drafts: list[_Draft] = []
    for i, alert in enumerate(payload.alerts):
        drafts.extend(_alert_events(i, alert, source, rules, faults))
    if faults:
        raise PayloadError(faults)
    return _finish(drafts, [])


def _alert_events(
    i: int, alert: _Alert, source: str, rules: AlertmanagerRules, faults: list[Fault]
) -> list[_Draft]:
    at = f"alerts[{i}]"
    starts = _time(alert.startsAt, i, f"{at}.startsAt", faults)
    ends: int | None = None
    if alert.status == "resolved":
        if alert.endsAt is None:
            faults.append(Fault(i, f"{at}.endsAt", "is required for a resolved alert"))
        else:
            ends = _time(alert.endsAt, i, f"{at}.endsAt", faults)
        if starts is not None and ends is not None and ends < starts:
            faults.append(Fault(i, f"{at}.endsAt", "is before startsAt"))
    fingerprint = (alert.fingerprint or "").strip() or alert_fingerprint(alert.labels)
    if starts is None or (alert.status == "resolved" and ends is None):
        return []
    incident_id = alertmanager_incident_id(fingerprint, starts)
    if not _INCIDENT_ID_RE.match(incident_id):
        faults.append(
            Fault(i, f"{at}.fingerprint", "must be letters, digits, '.', '_', ':' or '-', short")
        )
        return []
    labels = alert.labels
    title = (
        _text(alert.annotations.get("summary"), MAX_TITLE)
        or _text(labels.get("alertname"), MAX_TITLE)
        or f"alert {fingerprint}"
    )
    severity = _lookup(rules.severity_map, labels.get("severity")) or rules.default_severity
    data: dict[str, Any] = {"incident_id": incident_id, "title": title, "severity": severity}
    fields = {
        "id": f"{at}.fingerprint",
        "data.incident_id": f"{at}.fingerprint",
        "source": "receiver",
        "cluster": f"{at}.labels.{rules.cluster_label}",
        "data.namespace": f"{at}.labels.namespace",
        "data.service": f"{at}.labels.service",
    }
    if labels.get("namespace"):
        data["namespace"] = labels["namespace"]
    service = labels.get("service") or labels.get("job")
    if service:
        data["service"] = service
        if not labels.get("service"):
            fields["data.service"] = f"{at}.labels.job"
    opened = event_to_cloudevent(
        source=source,
        event_id=f"{incident_id}/opened",
        event_type=EventType.INCIDENT_OPENED,
        time_us=starts,
        cluster=labels.get(rules.cluster_label) or rules.default_cluster,
        subject=None,
        data=data,
    )
    drafts = [_Draft(opened, i, fields)]
    if ends is not None:
        resolved = event_to_cloudevent(
            source=source,
            event_id=f"{incident_id}/resolved",
            event_type=EventType.INCIDENT_RESOLVED,
            time_us=ends,
            cluster=None,
            subject=None,
            data={"incident_id": incident_id},
        )
        drafts.append(_Draft(resolved, i, fields))
    return drafts


# -- PagerDuty -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PagerDutyRules:
    """How PagerDuty incidents map: priority and urgency maps, the defaults."""

    priority_map: Mapping[str, str]
    urgency_map: Mapping[str, str]
    default_severity: str
    default_cluster: str

    @classmethod
    def from_settings(cls, s: Settings) -> PagerDutyRules:
        """The rules the settings configure."""
        return cls(
            dict(s.pagerduty_priority_map),
            dict(s.pagerduty_urgency_map),
            s.webhook_default_severity,
            s.webhook_default_cluster,
        )


class _Ref(_Lax):
    summary: str | None = None


class _Incident(_Lax):
    # The incident id becomes `pd-<id>`, at most 128 letters, digits, '.', '_', ':' or '-'.
    id: str = Field(json_schema_extra={"pattern": r"^[A-Za-z0-9._:-]{1,125}$"})
    title: str | None = None
    priority: _Ref | None = None
    urgency: str | None = None
    service: _Ref | None = None


class _PdEvent(_Lax):
    id: str
    event_type: str
    occurred_at: Timestamp
    agent: _Ref | None = None
    data: _Incident


class PagerDutyPayload(_Lax):
    """A PagerDuty V3 webhook payload; fields opsledger does not read are ignored."""

    event: _PdEvent


class _PdKind(_Lax):
    event_type: str
    id: str | None = None


class _PdEnvelope(_Lax):
    event: _PdKind


def verify_pagerduty_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when any `v1=<hex>` in the header is the HMAC-SHA256 of the body under the secret."""
    if not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    ok = False
    # Several signatures arrive while PagerDuty rotates the secret; compare every one so the
    # time taken does not depend on which (if any) matched.
    for part in header.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1":
            # As bytes: compare_digest raises TypeError on text with non-ASCII characters,
            # which a header may hold (HTTP headers arrive as Latin-1).
            given = value.strip().lower().encode("utf-8", "replace")
            ok = hmac.compare_digest(expected, given) or ok
    return ok


def _none(_loc: tuple[Any, ...]) -> int | None:
    return None


def translate_pagerduty(doc: Any, rules: PagerDutyRules) -> Translation:
    """One V3 webhook event into at most one incident event; other event types are ignored."""
    envelope: _PdEnvelope = _parse(_PdEnvelope, doc, _none)
    kind = PAGERDUTY_KINDS.get(envelope.event.event_type)
    if kind is None:
        reason = f"{envelope.event.event_type} does not change an incident's lifecycle"
        return Translation(ignored=[Skipped(None, envelope.event.id, reason)])
    payload: PagerDutyPayload = _parse(PagerDutyPayload, doc, _none)
    ev = payload.event
    faults: list[Fault] = []
    when = _time(ev.occurred_at, None, "event.occurred_at", faults)
    incident_id = f"pd-{ev.data.id}"
    if not _INCIDENT_ID_RE.match(incident_id):
        faults.append(Fault(None, "event.data.id", "must be letters, digits, '.', '_', ':' or '-'"))
    if faults or when is None:
        raise PayloadError(faults)
    data: dict[str, Any] = {"incident_id": incident_id}
    cluster = None
    by_priority = _lookup(
        rules.priority_map, ev.data.priority.summary if ev.data.priority else None
    )
    by_urgency = _lookup(rules.urgency_map, ev.data.urgency)
    if kind == "opened":
        cluster = rules.default_cluster
        data["title"] = _text(ev.data.title, MAX_TITLE) or f"PagerDuty incident {ev.data.id}"
        data["severity"] = by_priority or by_urgency or rules.default_severity
        service = _text(ev.data.service.summary if ev.data.service else None, MAX_NAME)
        if service:
            data["service"] = service
    elif kind == "severity_changed":
        # A priority the map does not know (e.g. a custom "SEV-1") says nothing we can trust
        # about severity, so the change is left out; a removed priority falls back to urgency,
        # as an opening without a priority does.
        severity = by_priority if ev.data.priority is not None else by_urgency
        if severity is None:
            what = (
                f"priority {ev.data.priority.summary!r} is not in OPSLEDGER_PAGERDUTY_PRIORITY_MAP"
                if ev.data.priority is not None
                else f"urgency {ev.data.urgency!r} is not in OPSLEDGER_PAGERDUTY_URGENCY_MAP"
            )
            return Translation(ignored=[Skipped(None, ev.id, f"{what}; severity unchanged")])
        data["severity"] = severity
    else:
        by = _text(ev.agent.summary if ev.agent else None, MAX_NAME)
        if by:
            data["by"] = by
    raw = event_to_cloudevent(
        source=PAGERDUTY_SOURCE,
        event_id=ev.id,
        event_type=f"{INCIDENT_PREFIX}{kind}",
        time_us=when,
        cluster=cluster,
        subject=None,
        data=data,
    )
    fields = {"id": "event.id", "data.incident_id": "event.data.id", "cluster": "cluster"}
    return _finish([_Draft(raw, None, fields)], [])

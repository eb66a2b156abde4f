"""Alertmanager and PagerDuty webhooks on both backends, from real payloads: events, idempotency,
mapping settings, signatures, auth and bad input."""

from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from support.payloads import webhook_fixture

from api.app import create_app
from ingest.webhooks import alert_fingerprint, alertmanager_incident_id, compact_utc
from store.keys import create_key
from store.ledger import Ledger
from store.settings import Settings
from store.timefmt import parse_rfc3339_us

AM = "/v1/webhooks/alertmanager"
PD = "/v1/webhooks/pagerduty"
SECRET = "pd-webhook-secret-do-not-log"
ZULIP_IDS = [
    "am-a1bc48475b20e73d-20200206T001758.432911Z",
    "am-c2ea85182f28cbd9-20200206T001758.432911Z",
]


def zulip() -> dict[str, Any]:
    return webhook_fixture("alertmanager/zulip-alert.json")


def pd(kind: str) -> dict[str, Any]:
    return webhook_fixture(f"pagerduty-v3/{kind}_v3.json")


def alert(**labels: str) -> dict[str, Any]:
    """A firing alert of the shape Alertmanager sends, without a fingerprint."""
    return {
        "status": "firing",
        "labels": {"alertname": "KubePodCrashLooping", **labels},
        "annotations": {},
        "startsAt": "2026-10-14T03:12:00.5Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }


def am_payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "receiver": "opsledger", "status": "firing", "alerts": list(alerts)}


def sign(body: bytes, secret: str = SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class StubProjector:
    """Counts pokes; the real one would open a DuckDB file per test."""

    def __init__(self) -> None:
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1


@dataclass
class Hook:
    """The app over a real ledger, a client, one key per scope and a poke counter."""

    client: TestClient
    ledger: Ledger
    tokens: dict[str, str]
    projector: StubProjector = field(default_factory=StubProjector)

    def post(
        self,
        path: str,
        body: Any,
        scope: str | None = "write",
        headers: dict[str, str] | None = None,
    ) -> Any:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        h = {"Content-Type": "application/json", **(headers or {})}
        if scope is not None:
            h["Authorization"] = f"Bearer {self.tokens[scope]}"
        return self.client.post(path, content=content, headers=h)

    def ok(self, path: str, body: Any, **kw: Any) -> dict[str, Any]:
        r = self.post(path, body, **kw)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def events(self) -> list[dict[str, Any]]:
        r = self.client.get("/v1/events", params={"limit": 1000}, headers=self.auth("read"))
        assert r.status_code == 200, r.text
        events: list[dict[str, Any]] = r.json()["events"]
        return events

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def state(self) -> tuple[int, int]:
        return self.ledger.head(), len(self.events())


@contextmanager
def serve(url: str, tmp_path: Path, **settings: Any) -> Iterator[Hook]:
    app = create_app(Settings(database_url=url, home=tmp_path, **settings), projections=False)
    ledger: Ledger = app.state.ledger
    tokens = {s: create_key(ledger.engine, f"test-{s}", s)[1] for s in ("read", "write", "admin")}
    with TestClient(app, raise_server_exceptions=False) as client:
        hook = Hook(client, ledger, tokens)
        app.state.projector = hook.projector
        yield hook


@pytest.fixture
def hook(backend_url: str, tmp_path: Path) -> Iterator[Hook]:
    with serve(backend_url, tmp_path) as h:
        yield h


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in events}


# -- Alertmanager ----------------------------------------------------------------------------


def test_firing_alerts_open_incidents_as_recorded(hook: Hook) -> None:
    body = hook.ok(AM, zulip())
    assert body == {"appended": 2, "duplicates": 0, "ignored": [], "incidents": ZULIP_IDS}
    events = hook.events()
    assert [e["id"] for e in events] == [f"{i}/opened" for i in ZULIP_IDS]
    for e, incident_id in zip(events, ZULIP_IDS, strict=True):
        assert e["type"] == "opsledger.incident.opened"
        assert e["source"] == "alertmanager/ops-zulip"
        # startsAt keeps microseconds (the nanoseconds are beyond the ledger's resolution).
        assert e["time"] == "2020-02-06T00:17:58.432911Z"
        assert e["cluster"] == "default"
        assert e["stream"] == f"incident/{incident_id}"
        assert e["data"] == {
            "incident_id": incident_id,
            "title": "High CPU core temperature",
            "severity": "P1",
        }
    assert hook.projector.pokes == 1


def test_redelivery_is_a_no_op(hook: Hook) -> None:
    hook.ok(AM, zulip())
    before = hook.state()
    body = hook.ok(AM, zulip())
    assert body == {"appended": 0, "duplicates": 2, "ignored": [], "incidents": ZULIP_IDS}
    assert hook.state() == before
    assert hook.projector.pokes == 1


def resolved(doc: dict[str, Any], ends_at: str = "2020-02-06T00:47:58Z") -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["status"] = "resolved"
    for a in out["alerts"]:
        a["status"] = "resolved"
        a["endsAt"] = ends_at
    return out


def test_resolved_before_firing_records_the_opening_too(hook: Hook) -> None:
    body = hook.ok(AM, resolved(zulip()))
    assert body["appended"] == 4 and body["incidents"] == ZULIP_IDS
    got = by_id(hook.events())
    opened, done = got[f"{ZULIP_IDS[0]}/opened"], got[f"{ZULIP_IDS[0]}/resolved"]
    assert opened["time"] == "2020-02-06T00:17:58.432911Z"
    assert opened["data"]["title"] == "High CPU core temperature"
    assert done["type"] == "opsledger.incident.resolved"
    assert done["time"] == "2020-02-06T00:47:58Z"
    assert done["data"] == {"incident_id": ZULIP_IDS[0]}
    # The firing notification arriving late is the same opening: nothing new.
    before = hook.state()
    assert hook.ok(AM, zulip()) == {
        "appended": 0,
        "duplicates": 2,
        "ignored": [],
        "incidents": ZULIP_IDS,
    }
    assert hook.state() == before


def test_firing_then_resolved_adds_only_the_resolution(hook: Hook) -> None:
    hook.ok(AM, zulip())
    body = hook.ok(AM, resolved(zulip()))
    assert (body["appended"], body["duplicates"]) == (2, 2)
    types = [e["type"].rsplit(".", 1)[1] for e in hook.events()]
    assert types == ["opened", "opened", "resolved", "resolved"]


def test_changed_annotations_skip_only_that_event(hook: Hook) -> None:
    hook.ok(AM, zulip())
    changed = zulip()
    changed["alerts"][0]["annotations"]["summary"] = "CPU core temperature critical"
    changed["alerts"].append(alert(namespace="payments"))
    body = hook.ok(AM, changed)
    assert (body["appended"], body["duplicates"]) == (1, 1)
    (skipped,) = body["ignored"]
    assert skipped["index"] == 0 and skipped["id"] == f"{ZULIP_IDS[0]}/opened"
    assert "position 1" in skipped["reason"] and "different content" in skipped["reason"]
    assert ZULIP_IDS[0] not in body["incidents"]
    events = hook.events()
    assert len(events) == 3
    assert by_id(events)[f"{ZULIP_IDS[0]}/opened"]["data"]["title"] == "High CPU core temperature"


def severities(hook: Hook) -> dict[str, str]:
    levels = ["critical", "warning", "info", "Critical", "page", None]
    alerts = []
    for n, level in enumerate(levels):
        labels = {"instance": f"n{n}"} | ({"severity": level} if level else {})
        alerts.append(alert(**labels))
    hook.ok(AM, am_payload(*alerts))
    got = {e["data"]["incident_id"]: e["data"]["severity"] for e in hook.events()}
    return {
        str(level): got[
            alertmanager_incident_id(
                alert_fingerprint(a["labels"]), parse_rfc3339_us(a["startsAt"])
            )
        ]
        for level, a in zip(levels, alerts, strict=True)
    }


def test_severity_default_map(hook: Hook) -> None:
    assert severities(hook) == {
        "critical": "P1",
        "warning": "P2",
        "info": "P3",
        "Critical": "P1",
        "page": "P3",
        "None": "P3",
    }


def test_severity_map_and_default_from_the_environment(
    backend_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSLEDGER_ALERTMANAGER_SEVERITY_MAP", '{"page": "P0", "critical": "P0"}')
    monkeypatch.setenv("OPSLEDGER_WEBHOOK_DEFAULT_SEVERITY", "P2")
    with serve(backend_url, tmp_path) as h:
        assert severities(h) == {
            "critical": "P0",
            "warning": "P2",
            "info": "P2",
            "Critical": "P0",
            "page": "P0",
            "None": "P2",
        }


def clusters(hook: Hook, *alerts: dict[str, Any]) -> list[str]:
    hook.ok(AM, am_payload(*alerts))
    return [e["cluster"] for e in hook.events()]


def test_cluster_from_the_label_else_the_default(hook: Hook) -> None:
    got = clusters(hook, alert(cluster="prod-eks-1"), alert(k8s_cluster="gov-eks-2"))
    assert got == ["prod-eks-1", "default"]


def test_cluster_label_and_default_are_configurable(backend_url: str, tmp_path: Path) -> None:
    settings = {"alertmanager_cluster_label": "k8s_cluster", "webhook_default_cluster": "eks-gov"}
    with serve(backend_url, tmp_path, **settings) as h:
        got = clusters(h, alert(cluster="prod-eks-1"), alert(k8s_cluster="gov-eks-2"))
        assert got == ["eks-gov", "gov-eks-2"]


def test_title_namespace_and_service(hook: Hook) -> None:
    a = alert(namespace="payments", job="kube-state-metrics", pod="api-1")
    b = alert(namespace="checkout", service="checkout-api", job="ignored", pod="api-2")
    b["annotations"]["summary"] = "Pod checkout/api-2 is crash looping"
    c = alert(pod="api-3")
    del c["labels"]["alertname"]
    hook.ok(AM, am_payload(a, b, c))
    data = [e["data"] for e in hook.events()]
    assert data[0]["title"] == "KubePodCrashLooping"
    assert (data[0]["namespace"], data[0]["service"]) == ("payments", "kube-state-metrics")
    assert data[1]["title"] == "Pod checkout/api-2 is crash looping"
    assert (data[1]["namespace"], data[1]["service"]) == ("checkout", "checkout-api")
    assert data[2]["title"].startswith("alert ")
    assert "namespace" not in data[2] and "service" not in data[2]


def test_alerts_without_fingerprint_get_a_stable_one(hook: Hook) -> None:
    a = alert(namespace="payments", pod="api-1")
    reordered = copy.deepcopy(a)
    reordered["labels"] = dict(reversed(list(a["labels"].items())))
    first = hook.ok(AM, am_payload(a))
    assert hook.ok(AM, am_payload(reordered))["duplicates"] == 1
    (incident_id,) = first["incidents"]
    assert incident_id == f"am-{alert_fingerprint(a['labels'])}-20261014T031200.500000Z"
    assert len(alert_fingerprint(a["labels"])) == 16


def test_the_same_alert_twice_in_one_delivery_is_one_event(hook: Hook) -> None:
    body = hook.ok(AM, am_payload(alert(pod="x"), alert(pod="x")))
    assert (body["appended"], body["duplicates"]) == (1, 1)


def test_compact_utc() -> None:
    assert compact_utc(0) == "19700101T000000Z"
    assert compact_utc(parse_rfc3339_us("2026-10-14T03:12:00.000250-04:00")) == (
        "20261014T071200.000250Z"
    )


# -- PagerDuty -------------------------------------------------------------------------------

PD_EXPECTED = {
    "triggered": (
        "01BZYIL05THJDFF2Y08X9SVMTU",
        "opened",
        "2021-06-04T13:35:29.781000Z",
        {
            "incident_id": "pd-PFQZPSY",
            "title": "Test Incident 3",
            "severity": "P1",  # no priority: urgency high
            "service": "pig208",
        },
    ),
    "acknowledged": (
        "01BZYK8N47N5JG55J1EEEHPEJI",
        "acknowledged",
        "2021-06-04T13:55:30.394000Z",
        {"incident_id": "pd-PQ1K5C8", "by": "PIG 208"},
    ),
    "priority_updated": (
        "01GI0KJAEAC3CFEOFSC8BIJF3O",
        "severity_changed",
        "2026-04-01T02:15:36.315000Z",
        {"incident_id": "pd-Q3B15VLMF3ASBD", "severity": "P2"},
    ),
    "resolved": (
        "01BZYH1JJY09P9LEIST8HG2PMN",
        "resolved",
        "2021-06-04T13:16:53.816000Z",
        {"incident_id": "pd-PCPZE64", "by": "PIG 208"},
    ),
    "reopened": (
        "01GI0KHLHVH4YZ44BJY1VLT6F2",
        "reopened",
        "2026-04-01T02:15:02.274000Z",
        {"incident_id": "pd-Q05XJA8GDXGOB3", "by": "Harsh Santwani"},
    ),
}


def test_pagerduty_fixtures_record_their_lifecycle_events(hook: Hook) -> None:
    for kind, (event_id, recorded, time, data) in PD_EXPECTED.items():
        body = hook.ok(PD, pd(kind))
        assert body == {
            "appended": 1,
            "duplicates": 0,
            "ignored": [],
            "incidents": [data["incident_id"]],
        }, kind
        e = hook.events()[-1]
        assert (e["id"], e["source"], e["type"]) == (
            event_id,
            "pagerduty",
            f"opsledger.incident.{recorded}",
        )
        assert e["time"] == time and e["data"] == data, kind
        assert e.get("cluster") == ("default" if recorded == "opened" else None)
    assert hook.projector.pokes == len(PD_EXPECTED)
    before = hook.state()
    for kind in PD_EXPECTED:
        assert hook.ok(PD, pd(kind))["duplicates"] == 1
    assert hook.state() == before


def test_one_incident_through_its_whole_lifecycle(hook: Hook) -> None:
    # The fixtures are five different incidents; aim them at one to read its stream in order.
    for n, kind in enumerate(PD_EXPECTED):
        doc = pd(kind)
        doc["event"]["data"]["id"] = "PLIFE01"
        doc["event"]["occurred_at"] = f"2026-04-01T02:{10 + n:02d}:00Z"
        hook.ok(PD, doc)
    stream = hook.ledger.read_stream("incident/pd-PLIFE01")
    assert [e.type.rsplit(".", 1)[1] for e in stream] == [
        "opened",
        "acknowledged",
        "severity_changed",
        "resolved",
        "reopened",
    ]
    assert [e.stream_version for e in stream] == [1, 2, 3, 4, 5]


def with_priority(kind: str, priority: str | None, urgency: str = "high") -> dict[str, Any]:
    doc = pd(kind)
    data = doc["event"]["data"]
    data["priority"] = (
        None if priority is None else {"type": "priority_reference", "summary": priority}
    )
    data["urgency"] = urgency
    doc["event"]["id"] = f"{kind}-{priority}-{urgency}"
    data["id"] = re.sub(r"[^A-Za-z0-9]", "", f"P-{kind}-{priority}-{urgency}")
    return doc


@pytest.mark.parametrize(
    ("priority", "urgency", "severity"),
    [
        ("P1", "low", "P1"),
        ("P2", "high", "P2"),
        ("P3", "high", "P3"),
        ("P4", "high", "P3"),
        ("P5", "high", "P3"),
        (None, "high", "P1"),
        (None, "low", "P3"),
        ("SEV-1", "high", "P1"),  # an unknown priority: urgency decides the opening
        (None, "whenever", "P3"),  # neither maps: the default
    ],
)
def test_pagerduty_opening_severity(
    hook: Hook, priority: str | None, urgency: str, severity: str
) -> None:
    hook.ok(PD, with_priority("triggered", priority, urgency))
    assert hook.events()[-1]["data"]["severity"] == severity


def test_priority_update_to_an_unknown_priority_is_ignored(hook: Hook) -> None:
    before = hook.state()
    body = hook.ok(PD, with_priority("priority_updated", "SEV-1"))
    assert body["appended"] == 0 and body["incidents"] == []
    (skipped,) = body["ignored"]
    assert "'SEV-1'" in skipped["reason"] and "PRIORITY_MAP" in skipped["reason"]
    assert hook.state() == before
    # A removed priority falls back to urgency, like an opening without one.
    hook.ok(PD, with_priority("priority_updated", None, "low"))
    assert hook.events()[-1]["data"]["severity"] == "P3"


def test_priority_and_urgency_maps_are_configurable(backend_url: str, tmp_path: Path) -> None:
    settings = {
        "pagerduty_priority_map": {"SEV-1": "P0", "SEV-2": "P1"},
        "pagerduty_urgency_map": {"high": "P2"},
    }
    with serve(backend_url, tmp_path, **settings) as h:
        h.ok(PD, with_priority("triggered", "SEV-1"))
        h.ok(PD, with_priority("triggered", "P1"))
        h.ok(PD, with_priority("priority_updated", "sev-2"))
        assert [e["data"]["severity"] for e in h.events()] == ["P0", "P2", "P1"]


@pytest.mark.parametrize("event_type", ["incident.escalated", "pagey.ping", "service.updated"])
def test_other_pagerduty_event_types_are_acknowledged_and_ignored(
    hook: Hook, event_type: str
) -> None:
    doc = pd("acknowledged")
    doc["event"]["event_type"] = event_type
    before = hook.state()
    body = hook.ok(PD, doc)
    assert body["appended"] == 0 and body["duplicates"] == 0 and body["incidents"] == []
    (skipped,) = body["ignored"]
    assert skipped["id"] == "01BZYK8N47N5JG55J1EEEHPEJI" and event_type in skipped["reason"]
    assert hook.state() == before
    assert hook.projector.pokes == 0


# -- signatures ------------------------------------------------------------------------------


@pytest.fixture
def signed(backend_url: str, tmp_path: Path) -> Iterator[Hook]:
    with serve(backend_url, tmp_path, pagerduty_webhook_secret=SECRET) as h:
        yield h


def test_valid_signature_is_accepted(signed: Hook) -> None:
    body = orjson.dumps(pd("triggered"))
    r = signed.post(PD, body, headers={"X-PagerDuty-Signature": sign(body)})
    assert r.status_code == 200, r.text


def test_any_of_several_signatures_may_match(signed: Hook) -> None:
    body = orjson.dumps(pd("triggered"))
    header = f"{sign(body, 'old-secret')}, {sign(body)},v0=abc"
    r = signed.post(PD, body, headers={"X-PagerDuty-Signature": header})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "header",
    [None, "", "v1=", "v1=00", "v2=SIGNATURE", "SIGNATURE", "v1=OTHER,v1=OTHER"],
    ids=["missing", "empty", "blank", "short", "scheme", "bare", "others"],
)
def test_missing_or_wrong_signature_is_401_and_writes_nothing(
    signed: Hook, header: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    body = orjson.dumps(pd("triggered"))
    good = sign(body).removeprefix("v1=")
    headers = {}
    if header is not None:
        other = sign(body, "another-secret").removeprefix("v1=")
        headers["X-PagerDuty-Signature"] = header.replace("SIGNATURE", good).replace("OTHER", other)
    before = signed.state()
    with caplog.at_level(logging.DEBUG):
        r = signed.post(PD, body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["errors"] == [] and "X-PagerDuty-Signature" in r.json()["detail"]
    assert signed.state() == before
    assert SECRET not in r.text and SECRET not in caplog.text


def test_a_signature_over_other_bytes_is_refused(signed: Hook) -> None:
    body = orjson.dumps(pd("triggered"))
    tampered = body.replace(b"Test Incident 3", b"Test Incident 4")
    r = signed.post(PD, tampered, headers={"X-PagerDuty-Signature": sign(body)})
    assert r.status_code == 401, r.text


def test_the_secret_never_shows_in_settings_output() -> None:
    s = Settings(database_url="sqlite://", pagerduty_webhook_secret=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_without_a_secret_no_signature_is_needed(hook: Hook) -> None:
    assert hook.post(PD, pd("triggered")).status_code == 200


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [AM, PD])
def test_webhooks_need_a_write_key(hook: Hook, path: str) -> None:
    body = zulip() if path == AM else pd("triggered")
    before = hook.state()
    r = hook.post(path, body, scope=None)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = hook.post(path, body, headers={"Authorization": "Bearer olk_wrong"}, scope=None)
    assert r.status_code == 401
    r = hook.post(path, body, scope="read")
    assert r.status_code == 403 and "write" in r.json()["detail"]
    assert hook.state() == before
    assert hook.post(path, body, scope="admin").status_code == 200


# -- bad input -------------------------------------------------------------------------------


def refused(hook: Hook, path: str, body: Any, status: int = 422) -> list[dict[str, Any]]:
    before = hook.state()
    r = hook.post(path, body)
    assert r.status_code == status, r.text
    out = r.json()
    assert isinstance(out["detail"], str) and out["detail"]
    assert hook.state() == before
    assert hook.projector.pokes == 0
    errors: list[dict[str, Any]] = out["errors"]
    return errors


def fields(errors: list[dict[str, Any]]) -> list[tuple[int | None, str]]:
    return [(e["index"], e["field"]) for e in errors]


@pytest.mark.parametrize("path", [AM, PD])
@pytest.mark.parametrize("body", [b"{", b"", b'{"alerts": [}', b"\xff\xfe"])
def test_malformed_json_is_400(hook: Hook, path: str, body: bytes) -> None:
    errors = refused(hook, path, body, 400)
    assert errors == []


@pytest.mark.parametrize("path", [AM, PD])
@pytest.mark.parametrize("body", [[], "alerts", 4, None])
def test_a_body_that_is_not_an_object_is_422(hook: Hook, path: str, body: Any) -> None:
    assert fields(refused(hook, path, body)) == [(None, "")]


def am_broken(edit: Any) -> dict[str, Any]:
    doc = zulip()
    edit(doc)
    return doc


AM_BAD = {
    "no-alerts": (lambda d: d.pop("alerts"), [(None, "alerts")]),
    "no-version": (lambda d: d.pop("version"), [(None, "version")]),
    "version-3": (lambda d: d.update(version="3"), [(None, "version")]),
    "alerts-object": (lambda d: d.update(alerts={}), [(None, "alerts")]),
    "bad-startsAt": (
        lambda d: d["alerts"][1].update(startsAt="2020-02-06 00:17:58"),
        [(1, "alerts[1].startsAt")],
    ),
    "zero-startsAt": (
        lambda d: d["alerts"][0].update(startsAt="0001-01-01T00:00:00Z"),
        [(0, "alerts[0].startsAt")],
    ),
    "no-startsAt": (lambda d: d["alerts"][1].pop("startsAt"), [(1, "alerts[1].startsAt")]),
    "bad-status": (lambda d: d["alerts"][1].update(status="pending"), [(1, "alerts[1].status")]),
    "label-number": (
        lambda d: d["alerts"][0]["labels"].update(host=7),
        [(0, "alerts[0].labels.host")],
    ),
    "resolved-no-endsAt": (
        lambda d: d["alerts"][1].update(status="resolved", endsAt=None),
        [(1, "alerts[1].endsAt")],
    ),
    "resolved-zero-endsAt": (
        lambda d: d["alerts"][1].update(status="resolved"),
        [(1, "alerts[1].endsAt")],
    ),
    "resolved-before-start": (
        lambda d: d["alerts"][0].update(status="resolved", endsAt="2020-02-06T00:00:00Z"),
        [(0, "alerts[0].endsAt")],
    ),
    "bad-cluster": (
        lambda d: d["alerts"][1]["labels"].update(cluster="prod eks/1"),
        [(1, "alerts[1].labels.cluster")],
    ),
    "bad-fingerprint": (
        lambda d: d["alerts"][0].update(fingerprint="a/b"),
        [(0, "alerts[0].fingerprint")],
    ),
    "long-namespace": (
        lambda d: d["alerts"][1]["labels"].update(namespace="n" * 300),
        [(1, "alerts[1].labels.namespace")],
    ),
    "several-at-once": (
        lambda d: (d.pop("version"), d["alerts"][1].update(startsAt="2020-02-06")),
        [(None, "version"), (1, "alerts[1].startsAt")],
    ),
    "bad-receiver": (lambda d: d.update(receiver="ops\nzulip"), [(0, "receiver"), (1, "receiver")]),
}


@pytest.mark.parametrize("case", list(AM_BAD), ids=list(AM_BAD))
def test_bad_alertmanager_payloads_are_422_and_write_nothing(hook: Hook, case: str) -> None:
    edit, expected = AM_BAD[case]
    errors = refused(hook, AM, am_broken(edit))
    assert fields(errors) == expected
    assert all(isinstance(e["reason"], str) and e["reason"] for e in errors)


def pd_broken(edit: Any) -> dict[str, Any]:
    doc = pd("triggered")
    edit(doc)
    return doc


PD_BAD = {
    "no-event": (lambda d: d.pop("event"), [(None, "event")]),
    "no-event-type": (lambda d: d["event"].pop("event_type"), [(None, "event.event_type")]),
    "no-id": (lambda d: d["event"].pop("id"), [(None, "event.id")]),
    "bad-time": (
        lambda d: d["event"].update(occurred_at="yesterday"),
        [(None, "event.occurred_at")],
    ),
    "no-incident-id": (lambda d: d["event"]["data"].pop("id"), [(None, "event.data.id")]),
    "bad-incident-id": (
        lambda d: d["event"]["data"].update(id="P 1"),
        [(None, "event.data.id")],
    ),
    "data-string": (lambda d: d["event"].update(data="PFQZPSY"), [(None, "event.data")]),
}


@pytest.mark.parametrize("case", list(PD_BAD), ids=list(PD_BAD))
def test_bad_pagerduty_payloads_are_422_and_write_nothing(hook: Hook, case: str) -> None:
    edit, expected = PD_BAD[case]
    assert fields(refused(hook, PD, pd_broken(edit))) == expected


def test_more_events_than_max_batch_events_is_422(backend_url: str, tmp_path: Path) -> None:
    with serve(backend_url, tmp_path, max_batch_events=3) as h:
        errors = refused(h, AM, resolved(zulip()))
        assert "max_batch_events" in errors[0]["reason"]
        assert h.post(AM, zulip()).status_code == 200


def test_a_body_over_the_limit_is_413(backend_url: str, tmp_path: Path) -> None:
    with serve(backend_url, tmp_path, max_body_bytes=1024) as h:
        refused(h, AM, zulip(), 413)

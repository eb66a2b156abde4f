"""Incident commands over HTTP and the CLI, the incidents projection, and the SLA policy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.beds import Bed, make_bed

from ingest import incidents as commands
from store.errors import StreamVersionError
from store.ledger import Ledger


def open_incident(bed: Bed, **fields: Any) -> dict[str, Any]:
    body = {"title": "API 5xx", "severity": "P2", "cluster": "prod", **fields}
    r = bed.post("/v1/incidents", body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def bed(backend_url: str, tmp_path: Path) -> Iterator[Bed]:
    """The app on a fresh ledger of each backend, with read, write and admin keys."""
    with make_bed(tmp_path, backend_url, projection_interval_seconds=3600) as b:
        yield b


@pytest.fixture
def sqlite_bed(tmp_path: Path) -> Iterator[Bed]:
    """The app on a fresh SQLite ledger."""
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        yield b


def rfc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- commands ----------------------------------------------------------------------------------


def test_a_full_lifecycle_records_one_event_per_version(bed: Bed) -> None:
    inc = open_incident(bed, namespace="payments", service="checkout", incident_id="INC-1")
    assert inc["status"] == "open" and inc["version"] == 1 and inc["severity_max"] == "P2"
    steps = [
        ("acknowledge", {"by": "alice"}, "acknowledged"),
        ("mitigate", {}, "mitigated"),
        ("resolve", {"by": "bob"}, "resolved"),
        ("reopen", None, "open"),
        ("acknowledge", None, "acknowledged"),
        ("resolve", None, "resolved"),
    ]
    for n, (action, body, status) in enumerate(steps, start=2):
        r = bed.post(f"/v1/incidents/INC-1/{action}", body, **{"If-Match": str(n - 1)})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status and r.json()["version"] == n
        assert r.headers["ETag"] == f'"{n}"'
    stream = bed.ledger.read_stream("incident/INC-1")
    assert [e.type.rsplit(".", 1)[1] for e in stream] == [
        "opened",
        "acknowledged",
        "mitigated",
        "resolved",
        "reopened",
        "acknowledged",
        "resolved",
    ]
    assert [e.stream_version for e in stream] == list(range(1, 8))
    assert stream[0].cluster == "prod" and stream[1].data == {"incident_id": "INC-1", "by": "alice"}
    final = r.json()
    assert final["reopens"] == 1
    assert final["acknowledged_at"] == stream[1].to_cloudevent()["time"]
    assert final["resolved_at"] == stream[6].to_cloudevent()["time"]


def test_invalid_transitions_answer_409_with_the_state_and_write_nothing(bed: Bed) -> None:
    open_incident(bed, incident_id="INC-2")
    bed.post("/v1/incidents/INC-2/resolve")
    head = bed.ledger.head()
    for action in ("acknowledge", "mitigate", "resolve"):
        r = bed.post(f"/v1/incidents/INC-2/{action}")
        assert r.status_code == 409, r.text
        assert r.json()["state"]["status"] == "resolved"
        assert "it is resolved" in r.json()["detail"]
    bed.post("/v1/incidents/INC-2/reopen")
    r = bed.post("/v1/incidents/INC-2/reopen")
    assert r.status_code == 409 and r.json()["state"]["status"] == "open"
    assert bed.ledger.head() == head + 1
    r = bed.post(
        "/v1/incidents",
        {"title": "again", "severity": "P1", "cluster": "prod", "incident_id": "INC-2"},
    )
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_unknown_incidents_are_404(bed: Bed) -> None:
    r = bed.post("/v1/incidents/NOPE/acknowledge")
    assert r.status_code == 404 and "NOPE" in r.json()["detail"]
    r = bed.client.patch("/v1/incidents/NOPE", json={"note": "x"}, headers=bed.headers())
    assert r.status_code == 404


def test_a_stale_if_match_is_409_with_the_current_version(bed: Bed) -> None:
    open_incident(bed, incident_id="INC-3")
    assert (
        bed.post("/v1/incidents/INC-3/acknowledge", None, **{"If-Match": '"1"'}).status_code == 200
    )
    r = bed.post("/v1/incidents/INC-3/resolve", None, **{"If-Match": "1"})
    assert r.status_code == 409 and r.json()["current_version"] == 2
    r = bed.post("/v1/incidents/INC-3/resolve", None, **{"If-Match": 'W/"2"'})
    assert r.status_code == 200 and r.json()["version"] == 3
    r = bed.post("/v1/incidents/INC-3/reopen", None, **{"If-Match": "three"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "header.If-Match"


def test_patch_changes_severity_notes_and_links_atomically(bed: Bed) -> None:
    open_incident(bed, incident_id="INC-4", severity="P3")
    r = bed.client.patch(
        "/v1/incidents/INC-4",
        json={"severity": "P1", "note": "customers affected", "postmortem_url": "https://w/pm/4"},
        headers={**bed.headers(), "If-Match": "1"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["severity"] == "P1" and body["severity_max"] == "P1" and body["version"] == 4
    assert body["postmortem_url"] == "https://w/pm/4"
    r = bed.client.patch("/v1/incidents/INC-4", json={"severity": "P1"}, headers=bed.headers())
    assert r.status_code == 409 and "already P1" in r.json()["detail"]
    r = bed.client.patch("/v1/incidents/INC-4", json={}, headers=bed.headers())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    assert bed.ledger.head() == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "severity": "P5", "cluster": "c"}, "severity"),
        ({"title": "", "severity": "P1", "cluster": "c"}, "title"),
        ({"title": "x", "severity": "P1"}, "cluster"),
        ({"title": "x", "severity": "P1", "cluster": "c", "colour": "red"}, "colour"),
        ({"title": "x", "severity": "P1", "cluster": "c", "at": "yesterday"}, "at"),
        ({"title": "x", "severity": "P1", "cluster": "c", "incident_id": "bad id"}, "incident_id"),
        ({"title": "x", "severity": "P1", "cluster": "c", "at": "2999-01-01T00:00:00Z"}, "at"),
    ],
)
def test_bad_open_bodies_are_422_naming_the_field(
    sqlite_bed: Bed, body: dict[str, Any], field: str
) -> None:
    r = sqlite_bed.post("/v1/incidents", body)
    assert r.status_code == 422, r.text
    assert any(e["field"].endswith(field) for e in r.json()["errors"]), r.json()
    assert sqlite_bed.ledger.head() == 0


def test_back_filled_commands_keep_history_in_order(sqlite_bed: Bed) -> None:
    open_incident(sqlite_bed, incident_id="INC-5", at="2026-10-01T10:00:00Z")
    r = sqlite_bed.post("/v1/incidents/INC-5/acknowledge", {"at": "2026-10-01T09:00:00Z"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "at"
    r = sqlite_bed.post("/v1/incidents/INC-5/acknowledge", {"at": "2026-10-01T10:12:00Z"})
    assert r.status_code == 200 and r.json()["acknowledged_at"] == "2026-10-01T10:12:00Z"


def test_commands_need_the_write_scope(sqlite_bed: Bed) -> None:
    r = sqlite_bed.client.post(
        "/v1/incidents",
        json={"title": "x", "severity": "P1", "cluster": "c"},
        headers=sqlite_bed.headers("read"),
    )
    assert r.status_code == 403
    assert (
        sqlite_bed.client.put("/v1/sla/policy", json={}, headers=sqlite_bed.headers()).status_code
        == 403
    )


# -- concurrency -------------------------------------------------------------------------------


def race(ledger: Ledger, inc: str, actions: list[commands.Action]) -> list[str]:
    """Run the actions at once, each pinned to version 1; each outcome is `won` or `409`."""
    outcomes: list[str] = []
    barrier = threading.Barrier(len(actions))

    def client(action: commands.Action) -> None:
        barrier.wait()
        try:
            commands.act(ledger, inc, action, expect_version=1)
            outcomes.append("won")
        except (StreamVersionError, commands.InvalidTransition):
            outcomes.append("409")

    threads = [threading.Thread(target=client, args=(a,)) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_racing_writers_one_wins_each_version(ledger: Ledger) -> None:
    """Two clients acknowledge and resolve at once, pinned to the version they saw."""
    for round_ in range(8):
        inc = f"RACE-{round_}"
        commands.open_incident(ledger, title="race", severity="P1", cluster="c", incident_id=inc)
        outcomes = race(ledger, inc, ["acknowledge", "resolve"])
        assert sorted(outcomes) == ["409", "won"], outcomes
        stream = ledger.read_stream(f"incident/{inc}")
        assert [e.stream_version for e in stream] == [1, 2]


def test_unpinned_racers_are_serialised_and_judged_again(ledger: Ledger) -> None:
    """Without If-Match, a loser retries on the new state: a second ack is then refused."""
    commands.open_incident(ledger, title="race", severity="P1", cluster="c", incident_id="R")
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def client() -> None:
        barrier.wait()
        try:
            commands.act(ledger, "R", "acknowledge")
            outcomes.append("won")
        except commands.InvalidTransition:
            outcomes.append("409")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["409", "409", "409", "won"]
    assert [e.stream_version for e in ledger.read_stream("incident/R")] == [1, 2]


def test_racing_http_clients(bed: Bed) -> None:
    open_incident(bed, incident_id="H")
    codes: list[int] = []
    barrier = threading.Barrier(2)

    def client(action: str) -> None:
        barrier.wait()
        r = bed.post(f"/v1/incidents/H/{action}", None, **{"If-Match": "1"})
        codes.append(r.status_code)

    threads = [threading.Thread(target=client, args=(a,)) for a in ("acknowledge", "resolve")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 409]
    assert [e.stream_version for e in bed.ledger.read_stream("incident/H")] == [1, 2]


# -- reads -------------------------------------------------------------------------------------


def test_the_read_model_lists_shows_and_measures(bed: Bed) -> None:
    t0 = datetime(2026, 10, 5, 14, 0, tzinfo=UTC)
    open_incident(bed, incident_id="A", severity="P1", at=rfc(t0), namespace="payments")
    bed.post("/v1/incidents/A/acknowledge", {"at": rfc(t0 + timedelta(minutes=90))})
    bed.post("/v1/incidents/A/resolve", {"at": rfc(t0 + timedelta(hours=5))})
    open_incident(bed, incident_id="B", severity="P2", at=rfc(t0 + timedelta(days=1)))
    bed.post("/v1/incidents/B/acknowledge", {"at": rfc(t0 + timedelta(days=1, minutes=30))})
    bed.wait_caught_up()

    r = bed.get("/v1/incidents", status="resolved")
    assert [i["incident_id"] for i in r.json()["items"]] == ["A"] and r.json()["total"] == 1
    r = bed.get("/v1/incidents", **{"from": "2026-10-06T00:00:00Z"})
    assert [i["incident_id"] for i in r.json()["items"]] == ["B"]
    r = bed.get("/v1/incidents/A")
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    a = r.json()
    assert a["response_due_at"] == "2026-10-05T15:00:00Z" and a["response_severity"] == "P1"
    assert [e["kind"] for e in a["events"]] == ["opened", "acknowledged", "resolved"]
    assert bed.get("/v1/incidents/ZZZ").status_code == 404

    window = {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    groups = bed.get("/v1/incidents/metrics", group_by="severity", **window).json()["groups"]
    by = {g["key"]["severity"]: g for g in groups}
    assert by["P1"]["mtta"] == {"mean": 5400.0, "median": 5400.0, "p90": 5400.0, "missing": 0}
    assert by["P2"]["mttr"]["missing"] == 1 and by["P2"]["mttr"]["mean"] is None
    r = bed.get("/v1/incidents/metrics", group_by="severity,planet", **window)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.group_by"

    body = bed.get("/v1/sla/breaches", **window).json()
    assert [(b["incident_id"], b["kind"], b["overrun_seconds"]) for b in body["items"]] == [
        ("A", "response", 1800.0)
    ]
    p1 = next(s for s in body["summary"] if s["severity"] == "P1")
    assert p1 == {
        "severity": "P1",
        "incidents": 1,
        "response_breaches": 1,
        "resolution_breaches": 0,
        "breach_rate": 1.0,
    }


def test_a_policy_set_later_rejudges_incidents_it_governs(sqlite_bed: Bed) -> None:
    bed = sqlite_bed
    t0 = datetime(2026, 10, 9, 22, 0, tzinfo=UTC)  # a Friday, 18:00 in New York
    open_incident(bed, incident_id="P3-FRI", severity="P3", at=rfc(t0))
    bed.wait_caught_up()
    assert bed.get("/v1/incidents/P3-FRI").json()["response_due_at"] == "2026-10-12T17:00:00Z"
    yaml_policy = b"""
timezone: America/New_York
business_hours: {days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}
holidays: ["2026-10-12"]
resolution: {P3: 5d}
"""
    r = bed.client.put(
        "/v1/sla/policy",
        content=yaml_policy,
        params={"effective_from": "2026-10-01T00:00:00Z"},
        headers={**bed.headers("admin"), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["policy"]["response"]["P3"] == "next_business_day"
    bed.wait_caught_up()
    inc = bed.get("/v1/incidents/P3-FRI").json()
    # Monday is a holiday: due at Tuesday's close, 17:00 EDT.
    assert inc["response_due_at"] == "2026-10-13T21:00:00Z"
    assert inc["resolution_due_at"] == "2026-10-14T22:00:00Z"
    policy = bed.get("/v1/sla/policy").json()
    assert policy["effective_from"] == "2026-10-01T00:00:00Z"
    assert policy["policy"]["timezone"] == "America/New_York"


@pytest.mark.parametrize(
    ("content", "ctype", "status", "field"),
    [
        (b'{"timezone": "Mars/Olympus"}', "application/json", 422, "data.timezone"),
        (b'{"response": {"P1": "soon"}}', "application/json", 422, "data.response.P1"),
        (
            b'{"business_hours": {"start": "18:00", "end": "09:00"}}',
            "application/json",
            422,
            "data.business_hours",
        ),
        (b'{"holidays": ["2026-02-30"]}', "application/json", 422, "data.holidays[0]"),
        (b"timezone: [unclosed", "application/yaml", 400, None),
        (b"!!python/object:os.system {}", "application/yaml", 400, None),
        (b"{}", "text/plain", 415, None),
    ],
)
def test_bad_policies_are_refused_and_write_nothing(
    sqlite_bed: Bed, content: bytes, ctype: str, status: int, field: str | None
) -> None:
    r = sqlite_bed.client.put(
        "/v1/sla/policy",
        content=content,
        headers={**sqlite_bed.headers("admin"), "Content-Type": ctype},
    )
    assert r.status_code == status, r.text
    if field:
        assert field in [e["field"] for e in r.json()["errors"]], r.json()
    assert sqlite_bed.ledger.head() == 0


@pytest.mark.slow
def test_the_demo_month_breaches_response_targets_in_several_severities(tmp_path: Path) -> None:
    import datetime as dt

    from analytics.incidents.metrics import breaches
    from analytics.incidents.projection import IncidentProjection
    from analytics.readmodel.model import ReadModel
    from analytics.readmodel.runner import Runner
    from ingest import demo
    from store.migrate import upgrade
    from store.timefmt import parse_rfc3339_us

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    wanted = ("opsledger.incident.", "opsledger.sla.")
    for batch in demo.generate(dt.date(2026, 10, 1), parse_rfc3339_us("2026-11-01T00:00:00Z")):
        mine = [e for e in batch if e.type.startswith(wanted)]
        if mine:
            ledger.append(mine)
    model = ReadModel(tmp_path / "rm.duckdb")
    try:
        Runner(ledger, model, [IncidentProjection()]).catch_up()
        body = breaches(
            model.cursor(), datetime(2026, 10, 1), datetime(2026, 11, 1), datetime(2026, 11, 1)
        )
    finally:
        model.close()
        ledger.engine.dispose()
    breached = [s["severity"] for s in body["summary"] if s["response_breaches"]]
    assert len(breached) >= 2, body["summary"]
    assert all(b["overrun_seconds"] > 0 for b in body["items"])


def test_the_timeline_merges_the_cluster_around_the_incident(sqlite_bed: Bed) -> None:
    from support.payloads import cloudevent, core_event, node

    bed = sqlite_bed
    open_incident(
        bed,
        incident_id="T-1",
        severity="P1",
        cluster="prod-eks-1",
        namespace="payments",
        at="2026-10-14T04:00:00Z",
    )
    bed.post("/v1/incidents/T-1/acknowledge", {"by": "alice", "at": "2026-10-14T04:20:00Z"})
    bed.post("/v1/incidents/T-1/resolve", {"at": "2026-10-14T05:00:00Z"})
    warning = core_event("w-in")  # payments, last seen 04:00
    elsewhere = core_event(
        "w-other",
        data={
            "metadata": {"name": "x.1", "namespace": "other", "uid": "uid-other"},
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": "other"},
        },
    )
    too_early = core_event(
        "w-early",
        data={
            "metadata": {"name": "api-1.early", "namespace": "payments", "uid": "uid-early"},
            "firstTimestamp": "2026-10-14T01:00:00Z",
            "lastTimestamp": "2026-10-14T01:00:00Z",
        },
        time="2026-10-14T01:00:00Z",
    )
    down = node("n-down", "node-a", False, "2026-10-14T04:05:00Z")
    other_cluster = cloudevent(
        "opsledger.k8s.node.status",
        {**down["data"], "node": "node-z"},
        id="n-z",
        time="2026-10-14T04:05:00Z",
        cluster="staging",
    )
    r = bed.post(
        "/v1/events",
        [warning, elsewhere, too_early, down, other_cluster],
        **{"Content-Type": "application/cloudevents-batch+json"},
    )
    assert r.status_code == 200, r.text
    bed.wait_caught_up()

    r = bed.get("/v1/incidents/T-1/timeline", before="30m", after="30m")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"]) == ("2026-10-14T03:30:00Z", "2026-10-14T05:30:00Z")
    got = [(e["t"], e["kind"]) for e in body["entries"]]
    assert got == [
        ("2026-10-14T04:00:00Z", "incident"),
        ("2026-10-14T04:00:00Z", "crash_loop"),  # BackOff restarting a container
        ("2026-10-14T04:05:00Z", "node_not_ready"),
        ("2026-10-14T04:20:00Z", "incident"),
        ("2026-10-14T05:00:00Z", "incident"),
    ]
    assert body["entries"][3]["summary"] == "acknowledged by alice"

    md = bed.get("/v1/incidents/T-1/timeline", format="markdown")
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("## Timeline") and "node-a" in md.text and "T-1" in md.text
    assert bed.get("/v1/incidents/T-1/timeline", before="9d").status_code == 422
    assert bed.get("/v1/incidents/NONE/timeline").status_code == 404


def test_malformed_json_is_400_and_zero_targets_are_refused(sqlite_bed: Bed) -> None:
    r = sqlite_bed.client.post(
        "/v1/incidents",
        content=b'{"title": "x", "severity": ',
        headers={**sqlite_bed.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    r = sqlite_bed.client.put(
        "/v1/sla/policy",
        json={"response": {"P0": "0m"}},
        headers=sqlite_bed.headers("admin"),
    )
    assert r.status_code == 422, r.text
    (err,) = r.json()["errors"]
    assert err["field"] == "data.response.P0" and err["reason"].startswith("must be a positive")
    assert sqlite_bed.ledger.head() == 0

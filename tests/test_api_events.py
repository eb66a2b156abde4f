"""`POST /v1/events` and `GET /v1/events` happy paths, health probes and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from support.beds import Bed, http_routes, make_bed
from support.payloads import (
    CLUSTER,
    SOURCE,
    clone,
    cost_daily,
    incident_milestone,
    incident_opened,
    k8s_event,
    metric_samples,
    node_status,
    pod_status,
    sample,
)

from api.app import create_app
from store.settings import Settings

CE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path) as b:
        yield b


def post_raw(bed: Bed, body: Any, content_type: str | None) -> Any:
    return bed.client.post(
        "/v1/events", content=orjson.dumps(body), headers=bed.headers("write", content_type)
    )


def all_events(bed: Bed, **params: Any) -> list[dict[str, Any]]:
    r = bed.get_events(limit=1000, **params)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


# -- POST ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "as_array"),
    [
        (CE, False),
        (BATCH, True),
        (JSON, False),
        (JSON, True),
        ("application/json; charset=utf-8", False),
        ("application/cloudevents+json; charset=UTF-8", False),
        (None, False),
    ],
)
def test_single_event_with_each_content_type(
    bed: Bed, content_type: str | None, as_array: bool
) -> None:
    ev = incident_opened()
    r = post_raw(bed, [ev] if as_array else ev, content_type)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "first_position": 1, "last_position": 1}
    (got,) = all_events(bed)
    assert got["id"] == ev["id"] and got["source"] == SOURCE and got["data"] == ev["data"]


def test_batch_positions_are_consecutive_and_reported_exactly(bed: Bed) -> None:
    batch = [incident_opened(), pod_status(), k8s_event()]
    r = post_raw(bed, batch, BATCH)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 0, "first_position": 1, "last_position": 3}
    r = post_raw(bed, [node_status(), cost_daily()], BATCH)
    assert r.json() == {"accepted": 2, "duplicates": 0, "first_position": 4, "last_position": 5}
    got = all_events(bed)
    assert [e["position"] for e in got] == [1, 2, 3, 4, 5]
    assert ids(got) == ["inc-1-opened", "pod-1", "k8s-1", "node-1", "cost-1"]


def test_resending_a_batch_is_all_duplicates(bed: Bed) -> None:
    batch = [incident_opened(), pod_status(), metric_samples()]
    assert post_raw(bed, batch, BATCH).json()["accepted"] == 3
    before = bed.state()
    r = post_raw(bed, batch, BATCH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accepted": 0,
        "duplicates": 3,
        "first_position": None,
        "last_position": None,
    }
    assert bed.state() == before


def test_resend_with_one_new_event_writes_only_the_new_one(bed: Bed) -> None:
    batch = [incident_opened(), pod_status()]
    post_raw(bed, batch, BATCH)
    r = post_raw(bed, [*batch, k8s_event()], BATCH)
    assert r.json() == {"accepted": 1, "duplicates": 2, "first_position": 3, "last_position": 3}
    assert ids(all_events(bed)) == ["inc-1-opened", "pod-1", "k8s-1"]


def test_duplicate_detection_ignores_key_order_and_offset_spelling(bed: Bed) -> None:
    ev = pod_status(time="2026-10-14T04:00:00Z")
    post_raw(bed, ev, CE)
    same = dict(reversed(list(clone(ev).items())))
    same["data"] = dict(reversed(list(same["data"].items())))
    same["time"] = "2026-10-14T00:00:00-04:00"
    r = post_raw(bed, same, CE)
    assert r.status_code == 200, r.text
    assert r.json()["duplicates"] == 1


def test_same_id_from_another_source_is_a_new_event(bed: Bed) -> None:
    post_raw(bed, pod_status(), CE)
    r = post_raw(bed, pod_status(source="//other/collector", restarts=9), CE)
    assert r.json() == {"accepted": 1, "duplicates": 0, "first_position": 2, "last_position": 2}


def test_conflict_same_source_and_id_other_content_writes_nothing(bed: Bed) -> None:
    post_raw(bed, [incident_opened(), pod_status(restarts=3)], BATCH)
    before = bed.state()
    r = post_raw(bed, pod_status(restarts=4), CE)
    assert r.status_code == 409, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and "nothing was written" in body["detail"]
    assert body["errors"] == []
    assert body["conflicts"] == [
        {"index": 0, "source": SOURCE, "id": "pod-1", "position": 2, "first_index": None}
    ]
    assert bed.state() == before
    assert all_events(bed)[1]["data"]["restarts"] == 3


def test_conflict_in_a_mixed_batch_writes_none_of_the_new_events(bed: Bed) -> None:
    post_raw(bed, [incident_opened(), pod_status(restarts=3)], BATCH)
    before = bed.state()
    batch = [k8s_event("new-a"), pod_status(restarts=5), cost_daily("new-b"), incident_opened()]
    r = post_raw(bed, batch, BATCH)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["conflicts"] == [
        {"index": 1, "source": SOURCE, "id": "pod-1", "position": 2, "first_index": None}
    ]
    assert bed.state() == before
    assert ids(all_events(bed)) == ["inc-1-opened", "pod-1"]


def test_time_with_an_offset_is_stored_and_returned_in_utc(bed: Bed) -> None:
    post_raw(
        bed,
        [
            incident_opened(time="2026-10-14T03:12:00-04:00"),
            pod_status(time="2026-10-14T03:12:00.25-04:00"),
            cost_daily(time="2026-10-14T12:42:00+05:30"),
        ],
        BATCH,
    )
    got = all_events(bed)
    assert [e["time"] for e in got] == [
        "2026-10-14T07:12:00Z",
        "2026-10-14T07:12:00.250000Z",
        "2026-10-14T07:12:00Z",
    ]
    # Filters compare instants, not strings.
    assert ids(all_events(bed, since="2026-10-14T03:12:00-04:00", until="2026-10-14T07:12:01Z"))
    assert len(all_events(bed, since="2026-10-14T07:12:00.250001Z")) == 0


def test_returned_events_carry_ledger_coordinates(bed: Bed) -> None:
    ev = k8s_event()
    post_raw(bed, ev, CE)
    (got,) = all_events(bed)
    assert got["specversion"] == "1.0"
    assert got["type"] == "opsledger.k8s.event"
    assert got["cluster"] == CLUSTER
    assert got["data"] == ev["data"]
    assert got["position"] == 1
    recorded = datetime.strptime(got["recordedat"].rstrip("Z")[:19], "%Y-%m-%dT%H:%M:%S")
    assert abs((recorded.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()) < 120
    assert "stream" not in got and "streamversion" not in got


def test_incident_events_get_stream_and_streamversion(bed: Bed) -> None:
    post_raw(
        bed,
        [
            incident_opened("o1", incident_id="INC-7", time="2026-10-14T03:00:00Z"),
            pod_status(),
            incident_milestone("acknowledged", "a1", incident_id="INC-7"),
            incident_opened("o2", incident_id="INC-8"),
            incident_milestone("resolved", "r1", incident_id="INC-7"),
        ],
        BATCH,
    )
    got = {e["id"]: e for e in all_events(bed)}
    assert (got["o1"]["stream"], got["o1"]["streamversion"]) == ("incident/INC-7", 1)
    assert (got["a1"]["stream"], got["a1"]["streamversion"]) == ("incident/INC-7", 2)
    assert (got["r1"]["stream"], got["r1"]["streamversion"]) == ("incident/INC-7", 3)
    assert (got["o2"]["stream"], got["o2"]["streamversion"]) == ("incident/INC-8", 1)
    assert "stream" not in got["pod-1"]
    # A later request continues the stream.
    post_raw(bed, incident_milestone("reopened", "re1", incident_id="INC-7"), CE)
    (re1,) = all_events(bed, after=5)
    assert (re1["stream"], re1["streamversion"]) == ("incident/INC-7", 4)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_metric_samples_round_trip(bed: Bed) -> None:
    node = {"node": "n1", "nodepool": "general", "zone": "us-gov-west-1a"}
    pvc = {"persistentvolumeclaim": "data-0", "namespace": "payments"}
    sent = [
        sample("pvc_used_bytes", pvc, 1760414400, 81604378624),
        sample("node_cpu_usage_cores", node, "2026-10-14T04:00:00Z", 5.42),
        sample("node_cpu_usage_cores", node, "2026-10-14T00:01:00-04:00", 0.1),
        sample("node_cpu_usage_cores", {**node, "node": "n2"}, 1760414460.0, -0.0),
        sample("pvc_used_bytes", dict(reversed(list(pvc.items()))), 1760414460, 1e300),
        sample("namespace_pod_count", {"namespace": "kube-system"}, 0, 12),
    ]
    r = post_raw(bed, metric_samples("prom-rt", sent), CE)
    assert r.status_code == 200, r.text
    (got,) = all_events(bed)
    assert set(got["data"]) == {"samples"}
    returned = got["data"]["samples"]
    assert all(set(s) == {"name", "labels", "ts", "value"} for s in returned)

    def key(s: dict[str, Any]) -> tuple[str, str, str, float]:
        return (s["name"], orjson.dumps(s["labels"], option=orjson.OPT_SORT_KEYS).decode(),
                s["ts"], s["value"])  # fmt: skip

    expected = [
        ("pvc_used_bytes", pvc, _utc(1760414400), 81604378624.0),
        ("node_cpu_usage_cores", node, "2026-10-14T04:00:00Z", 5.42),
        ("node_cpu_usage_cores", node, "2026-10-14T04:01:00Z", 0.1),
        ("node_cpu_usage_cores", {**node, "node": "n2"}, _utc(1760414460), 0.0),
        ("pvc_used_bytes", pvc, _utc(1760414460), 1e300),
        ("namespace_pod_count", {"namespace": "kube-system"}, "1970-01-01T00:00:00Z", 12.0),
    ]
    assert sorted(map(key, returned)) == sorted(
        key({"name": n, "labels": lb, "ts": t, "value": v}) for n, lb, t, v in expected
    )
    # Unix seconds come back as RFC 3339 UTC text, values as exact floats.
    assert all(isinstance(s["ts"], str) and s["ts"].endswith("Z") for s in returned)
    assert next(s for s in returned if s["value"] == 1e300)["value"] == 1e300


def test_fractional_unix_seconds_keep_microseconds(bed: Bed) -> None:
    labels = {"namespace": "payments"}
    sent = [sample("namespace_pod_count", labels, 1760414400.123456, 3)]
    post_raw(bed, metric_samples("prom-frac", sent), CE)
    (got,) = all_events(bed)
    assert got["data"]["samples"][0]["ts"] == "2025-10-14T04:00:00.123456Z"


# -- GET -----------------------------------------------------------------------------------


@pytest.fixture
def seven(bed: Bed) -> Bed:
    """Seven events over three days, two clusters and four types."""
    batch = [
        incident_opened("e1", incident_id="INC-1", time="2026-10-01T00:00:00Z"),
        pod_status("e2", time="2026-10-01T12:00:00Z"),
        k8s_event("e3", time="2026-10-02T00:00:00Z", cluster="dr-eks-2"),
        cost_daily("e4", time="2026-10-02T00:00:00Z"),
        pod_status("e5", time="2026-10-02T23:59:59.999999Z", cluster="dr-eks-2"),
        incident_milestone("acknowledged", "e6", incident_id="INC-1", time="2026-10-03T00:00:00Z"),
        k8s_event("e7", time="2026-10-03T00:00:00.000001Z"),
    ]
    assert post_raw(bed, batch, BATCH).status_code == 200
    return bed


def test_paging_with_after_limit_and_next_after(seven: Bed) -> None:
    seen: list[str] = []
    after = 0
    pages = []
    while True:
        r = seven.get_events(after=after, limit=3)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(ids(page["events"]))
        if not page["events"]:
            assert page["next_after"] == after
            break
        assert page["next_after"] == page["events"][-1]["position"]
        seen += ids(page["events"])
        after = page["next_after"]
    assert pages == [["e1", "e2", "e3"], ["e4", "e5", "e6"], ["e7"], []]
    assert seen == [f"e{i}" for i in range(1, 8)]
    assert ids(seven.get_events().json()["events"]) == seen  # default limit covers all 7
    assert seven.get_events(after=7).json() == {"events": [], "next_after": 7}
    assert seven.get_events(after=100).json() == {"events": [], "next_after": 100}


def test_filter_by_type_repeat_and_comma_forms(seven: Bed) -> None:
    pod, k8s = "opsledger.k8s.pod.status", "opsledger.k8s.event"
    assert ids(all_events(seven, type=pod)) == ["e2", "e5"]
    repeated = seven.client.get(
        "/v1/events", params=[("type", pod), ("type", k8s)], headers=seven.headers("read")
    )
    assert ids(repeated.json()["events"]) == ["e2", "e3", "e5", "e7"]
    assert ids(all_events(seven, type=f"{pod},{k8s}")) == ["e2", "e3", "e5", "e7"]
    mixed = seven.client.get(
        "/v1/events",
        params=[("type", f"{pod},{k8s}"), ("type", "opsledger.cost.daily")],
        headers=seven.headers("read"),
    )
    assert ids(mixed.json()["events"]) == ["e2", "e3", "e4", "e5", "e7"]


def test_filter_by_cluster(seven: Bed) -> None:
    assert ids(all_events(seven, cluster="dr-eks-2")) == ["e3", "e5"]
    assert ids(all_events(seven, cluster=CLUSTER)) == ["e1", "e2", "e7"]
    assert all_events(seven, cluster="nope") == []


def test_since_until_are_half_open(seven: Bed) -> None:
    got = all_events(seven, since="2026-10-02T00:00:00Z", until="2026-10-03T00:00:00Z")
    assert ids(got) == ["e3", "e4", "e5"]  # since inclusive, until exclusive
    assert ids(all_events(seven, since="2026-10-03T00:00:00Z")) == ["e6", "e7"]
    assert ids(all_events(seven, until="2026-10-01T12:00:00Z")) == ["e1"]
    assert ids(all_events(seven, since="2026-10-01T20:00:00-04:00", until="2026-10-02T00:00:01Z"))
    assert ids(
        all_events(seven, since="2026-10-01T20:00:00-04:00", until="2026-10-02T00:00:01Z")
    ) == ["e3", "e4"]


def test_filters_combine_with_paging(seven: Bed) -> None:
    pod = "opsledger.k8s.pod.status"
    r = seven.get_events(type=pod, limit=1)
    assert ids(r.json()["events"]) == ["e2"] and r.json()["next_after"] == 2
    r = seven.get_events(type=pod, limit=1, after=2)
    assert ids(r.json()["events"]) == ["e5"] and r.json()["next_after"] == 5
    r = seven.get_events(type=pod, cluster="dr-eks-2", since="2026-10-02T00:00:00Z")
    assert ids(r.json()["events"]) == ["e5"]


def test_default_limit_respects_a_small_max_page_size(tmp_path: Path) -> None:
    """A client that sends no `limit` must not be refused for the server's own default."""
    with make_bed(tmp_path, max_page_size=2) as small:
        post_raw(small, [pod_status("p1"), pod_status("p2"), pod_status("p3")], BATCH)
        r = small.get_events()
        assert r.status_code == 200, r.text
        assert ids(r.json()["events"]) == ["p1", "p2"]
        assert r.json()["next_after"] == 2
        assert small.get_events(limit=3).status_code == 422


# -- health and OpenAPI --------------------------------------------------------------------


def test_health_probes_need_no_key(bed: Bed) -> None:
    r = bed.client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = bed.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


def test_readyz_is_503_on_an_unmigrated_database(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable"
        assert "opsledger db upgrade" in body["detail"]


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_openapi_lists_every_route_and_examples(bed: Bed) -> None:
    r = bed.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    routes = [
        rt
        for rt in http_routes(bed.app)
        if getattr(rt, "dependant", None) is not None and rt.include_in_schema
    ]
    assert {(rt.path, m) for rt in routes for m in rt.methods} >= {
        ("/v1/events", "POST"),
        ("/v1/events", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
    }
    for route in routes:
        assert route.path in doc["paths"], route.path
        for method in route.methods - {"HEAD", "OPTIONS"}:
            op = doc["paths"][route.path].get(method.lower())
            assert op is not None, (method, route.path)
            assert op.get("summary"), (method, route.path)

    post = doc["paths"]["/v1/events"]["post"]
    content = post["requestBody"]["content"]
    assert set(content) >= {CE, BATCH, JSON}
    for media in (CE, BATCH, JSON):
        examples = content[media].get("examples") or {}
        assert examples, media
        for ex in examples.values():
            value = ex["value"]
            events = value if isinstance(value, list) else [value]
            assert events and all(e["specversion"] == "1.0" for e in events)
    ok = _resolve(doc, post["responses"]["200"]["content"][JSON]["schema"])
    assert ok.get("examples") or ok.get("example")
    for code in ("400", "401", "403", "409", "413", "415", "422"):
        assert code in post["responses"], code
    err = _resolve(doc, post["responses"]["422"]["content"][JSON]["schema"])
    assert err.get("examples") or err.get("example")


def test_openapi_request_examples_are_accepted_by_the_api(bed: Bed) -> None:
    doc = bed.client.get("/openapi.json").json()
    content = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    for media, spec in content.items():
        for ex in spec["examples"].values():
            r = post_raw(bed, ex["value"], media)
            assert r.status_code == 200, (media, r.text)

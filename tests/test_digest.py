"""The daily digest: each section against the facts appended, over HTTP and the real CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support.beds import Bed, bed_settings, make_bed, scope_keys
from support.cli import OPSLEDGER, run_cli
from support.payloads import cloudevent
from support.servers import announce_file, serve_in_thread

from api.app import create_app
from store.ledger import Ledger
from store.settings import Settings

CLUSTER = "prod-eks-1"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def at(delta: timedelta) -> str:
    """RFC 3339 of NOW + delta."""
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


H, M, D = timedelta(hours=1), timedelta(minutes=1), timedelta(days=1)


def append(bed: Bed, events: list[dict[str, Any]]) -> None:
    r = bed.post_events(events)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events), r.text


def digest(bed: Bed, **params: Any) -> httpx.Response:
    bed.catch_up()
    return bed.get("/v1/digest", **params)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        yield b


def node(i: int, name: str, ready: bool, t: str, reason: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node": name,
        "ready": ready,
        "nodepool": "general",
        "allocatable": {"cpu_cores": 4.0, "memory_bytes": 16_000_000_000, "pods": 110},
    }
    if reason:
        data["reason"] = reason
    return cloudevent("opsledger.k8s.node.status", data, id=f"node-{i}", time=t, cluster=CLUSTER)


def pod(i: int, name: str, phase: str, restarts: int, t: str, reason: str | None = None) -> Any:
    data: dict[str, Any] = {"namespace": "payments", "pod": name, "phase": phase}
    data |= {"restarts": restarts, "node": "node-a"} | ({"reason": reason} if reason else {})
    return cloudevent("opsledger.k8s.pod.status", data, id=f"pod-{i}", time=t, cluster=CLUSTER)


def finding(i: int, severity: str, status: str, first_seen: str) -> dict[str, Any]:
    data = {
        "provider": "guardduty",
        "finding_id": f"f-{i}",
        "title": f"finding {i}",
        "finding_type": "Impact:Runtime/CryptoMinerExecuted",
        "severity": severity,
        "status": status,
        "first_seen": first_seen,
        "last_seen": first_seen,
        "resource": "payments/api-1",
    }
    return cloudevent("opsledger.finding", data, id=f"finding-{i}", time=first_seen, cluster=None)


def samples(event_id: str, points: list[tuple[str, dict[str, str], datetime, float]]) -> Any:
    body = [
        {"name": n, "labels": labels, "ts": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": v}
        for n, labels, t, v in points
    ]
    t0 = min(p[2] for p in points).strftime("%Y-%m-%dT%H:%M:%SZ")
    return cloudevent(
        "opsledger.metric.samples", {"samples": body}, id=event_id, time=t0, cluster=CLUSTER
    )


def pvc(event_id: str, name: str, ratio: float, start: timedelta, n: int) -> Any:
    labels = {"namespace": "data", "persistentvolumeclaim": name}
    cap = 100 * 2**30
    points = []
    for k in range(n):
        t = NOW + start + k * 10 * M
        points += [
            ("pvc_used_bytes", labels, t, ratio * cap),
            ("pvc_capacity_bytes", labels, t, cap),
        ]
    return samples(event_id, points)


def hot_node(event_id: str, start: timedelta, profile: list[float]) -> Any:
    labels = {"node": "node-hot", "nodepool": "compute", "zone": "z1"}
    points = []
    for k, u in enumerate(profile):
        t = NOW + start + k * 5 * M
        points += [
            ("node_cpu_usage_cores", labels, t, u * 8.0),
            ("node_cpu_allocatable_cores", labels, t, 8.0),
        ]
    return samples(event_id, points)


def seed(bed: Bed) -> None:
    """One of each: a NotReady node, a crash-looping pod, a 92 % PVC, a new HIGH finding, an
    unacknowledged P1 past its hour, a node above 85 % CPU for 2 h; and what must not show."""
    append(
        bed,
        [
            node(1, "node-a", True, at(-3 * H)),
            node(2, "node-a", False, at(-70 * M), "KubeletNotReady"),
            node(3, "node-a", False, at(-40 * M), "NodeStatusUnknown"),
            node(4, "node-b", True, at(-2 * D)),
            node(5, "node-gone", False, at(-5 * D), "KubeletNotReady"),  # stale: left out
            node(6, "node-flap", False, at(-2 * H)),
            node(7, "node-flap", True, at(-1 * H)),
            pod(1, "api-1", "Running", 2, at(-30 * H)),
            pod(2, "api-1", "Running", 9, at(-20 * M), "CrashLoopBackOff"),
            pod(3, "job-1", "Pending", 0, at(-1 * H), "Unschedulable"),
            pod(4, "web-1", "Running", 0, at(-2 * H)),
            pod(5, "old-1", "Failed", 0, at(-10 * D), "Evicted"),  # stale: left out
            pod(6, "batch-1", "Running", 3, at(-2 * H)),  # first seen in the window
            pod(7, "worker-1", "Running", 4, at(-26 * H)),
            pod(8, "worker-1", "Running", 5, at(-3 * H)),
            finding(1, "HIGH", "ACTIVE", at(-2 * H)),
            finding(2, "CRITICAL", "ACTIVE", at(-3 * D)),  # not new
            finding(3, "MEDIUM", "ACTIVE", at(-1 * H)),  # not severe enough
            finding(4, "CRITICAL", "RESOLVED", at(-5 * H)),  # new, but no longer active
            pvc("pvc-full", "data-0", 0.92, -3 * H, 18),
            pvc("pvc-half", "data-1", 0.50, -3 * H, 18),
            pvc("pvc-gone", "data-old", 0.95, -5 * D, 6),  # stale: left out
            hot_node("hot", -4 * H, [0.5] * 6 + [0.9] * 25 + [0.4] * 6),
        ],
    )
    for body in (
        {"title": "checkout down", "severity": "P1", "cluster": CLUSTER, "incident_id": "INC-P1"},
        {"title": "docs", "severity": "P3", "cluster": CLUSTER, "incident_id": "INC-P3"},
        {"title": "old", "severity": "P2", "cluster": CLUSTER, "incident_id": "INC-P2"},
    ):
        opened = {"INC-P1": -3 * H, "INC-P3": -30 * M, "INC-P2": -2 * D}[body["incident_id"]]
        r = bed.client.post(
            "/v1/incidents", json=body | {"at": at(opened)}, headers=bed.headers("write")
        )
        assert r.status_code == 201, r.text
    for action, t in (("acknowledge", -2 * D + 10 * M), ("resolve", -1 * D)):
        r = bed.client.post(
            f"/v1/incidents/INC-P2/{action}", json={"at": at(t)}, headers=bed.headers("write")
        )
        assert r.status_code == 200, r.text


def test_each_section_answers_from_the_facts_appended(bed: Bed) -> None:
    seed(bed)
    r = digest(bed, since="24h")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "attention"
    assert body["window_seconds"] == 86400.0
    s = body["sections"]
    assert list(s) == ["nodes", "pods", "storage", "findings", "incidents", "capacity"]
    assert {k: v["status"] for k, v in s.items()} == dict.fromkeys(s, "attention")
    assert body["summary"] == "attention: " + ", ".join(s)

    (nr,) = s["nodes"]["not_ready"]
    assert (nr["node"], nr["reason"], nr["nodepool"]) == ("node-a", "NodeStatusUnknown", "general")
    assert nr["not_ready_since"] == at(-70 * M)  # the streak began at the first NotReady
    assert s["nodes"]["stale"] == 1
    assert s["nodes"]["summary"] == "1 node NotReady (1 last seen NotReady over 3d ago left out)"

    pods = s["pods"]
    assert [(p["pod"], p["phase"], p["reason"]) for p in pods["not_running"]] == [
        ("api-1", "Running", "CrashLoopBackOff"),
        ("job-1", "Pending", "Unschedulable"),
    ]
    assert [(p["pod"], p["restarts_in_window"], p["restarts"]) for p in pods["top_restarts"]] == [
        ("api-1", 7, 9),
        ("batch-1", 3, 3),
        ("worker-1", 1, 5),
    ]
    assert pods["restarts_in_window"] == 11 and pods["stale"] == 1
    assert pods["summary"].startswith("2 pods not running (1 CrashLoopBackOff, 1 Unschedulable)")

    (full,) = s["storage"]["pvcs"]
    assert (full["pvc"], full["status"], full["days_to_90"]) == ("data-0", "critical", 0.0)
    assert full["used_ratio"] == pytest.approx(0.92)
    assert s["storage"]["stale"] == 1
    assert s["storage"]["summary"].startswith("1 PVC over 85 % (1 over 90 %)")

    f = s["findings"]
    assert [(x["finding_id"], x["severity"], x["status"]) for x in f["new"]] == [
        ("f-4", "CRITICAL", "RESOLVED"),
        ("f-1", "HIGH", "ACTIVE"),
    ]
    assert f["active"] == 1

    inc = s["incidents"]
    assert [i["incident_id"] for i in inc["open"]] == ["INC-P1", "INC-P3"]
    assert inc["opened_in_window"] == 2
    (breach,) = inc["open_breaches"]
    assert (breach["incident_id"], breach["kind"], breach["open"]) == ("INC-P1", "response", True)
    assert breach["due_at"] == at(-2 * H)

    runs = s["capacity"]["sustained"]
    assert {(x["scope"], x["resource"]) for x in runs} == {
        ("cluster", "cpu"),
        ("nodepool", "cpu"),
        ("node", "cpu"),
    }
    node_run = next(x for x in runs if x["scope"] == "node")
    assert node_run["node"] == "node-hot"
    assert (node_run["start"], node_run["end"]) == (at(-4 * H + 30 * M), at(-4 * H + 150 * M))

    md = digest(bed, since="24h", format="markdown")
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# opsledger digest: attention")
    assert "| Nodes | attention | 1 node NotReady" in md.text
    assert "| prod-eks-1 | data | data-0 | 92.0 % | critical |" in md.text

    # A shorter window: the finding and the restarts of two hours ago are no longer new.
    short = digest(bed, since="90m").json()["sections"]
    assert [x["finding_id"] for x in short["findings"]["new"]] == []
    assert [p["pod"] for p in short["pods"]["top_restarts"]] == ["api-1"]
    assert short["capacity"]["sustained"] == []


def test_an_empty_ledger_is_ok_and_bad_parameters_are_422(bed: Bed) -> None:
    r = digest(bed)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["summary"] == "ok: nothing needs attention"
    assert {v["status"] for v in body["sections"].values()} == {"ok"}
    assert body["sections"]["nodes"]["summary"] == "every node Ready"
    for params, field in (
        ({"since": "yesterday"}, "query.since"),
        ({"since": "1m"}, "query.since"),
        ({"since": "40d"}, "query.since"),
        ({"format": "html"}, "query.format"),
    ):
        r = bed.client.get("/v1/digest", params=params, headers=bed.headers("read"))
        assert r.status_code == 422, (params, r.text)
        assert r.json()["errors"][0]["field"] == field


def test_auth(bed: Bed) -> None:
    assert bed.client.get("/v1/digest").status_code == 401
    r = bed.client.get("/v1/digest", headers={"Authorization": "Bearer olk_nope"})
    assert r.status_code == 401
    for scope in ("read", "write", "admin"):
        assert bed.client.get("/v1/digest", headers=bed.headers(scope)).status_code == 200


def _env(settings: Settings, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    return env | {
        "OPSLEDGER_HOME": str(home),
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }


@pytest.mark.slow
def test_cli_with_and_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = bed_settings(
        tmp_path,
        home=tmp_path / "home",
        read_model_path=tmp_path / "rm.duckdb",
        projection_interval_seconds=3600,
    )
    app = create_app(settings)
    ledger: Ledger = app.state.ledger
    tokens = scope_keys(ledger)
    announce = announce_file(settings, monkeypatch)
    with serve_in_thread(app, announce=announce) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            seed(Bed(settings, app, client, ledger, str(settings.database_url), None, tokens))
        # The server holds the read model: the CLI asks it (after a catch-up) for the digest.
        env = _env(settings, tmp_path / "home")

        def via_server(fmt: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(OPSLEDGER), "digest", "--format", fmt],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )

        with ThreadPoolExecutor(2) as pool:
            as_json, as_md = pool.map(via_server, ["json", "markdown"])
        assert as_json.returncode == 0, as_json.stderr
        served = orjson.loads(as_json.stdout)
        assert served["status"] == "attention"
        assert [n["node"] for n in served["sections"]["nodes"]["not_ready"]] == ["node-a"]
        assert as_md.returncode == 0, as_md.stderr
        assert as_md.stdout.startswith("# opsledger digest: attention\n")
        assert "| INC-P1 | P1 | response |" in as_md.stdout

    # No server: the CLI opens the read model itself, catching up from the ledger first.
    r = run_cli(
        ["digest", "--since", "24h", "--format", "markdown"],
        tmp_path / "cli",
        str(settings.database_url),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# opsledger digest: attention\n")
    assert "| Pods | attention | 2 pods not running" in r.stdout
    assert "## Open SLA breaches" in r.stdout and "| INC-P1 | P1 | response |" in r.stdout

    local = run_cli(["digest", "--format", "json"], tmp_path / "cli", str(settings.database_url))
    assert local.returncode == 0, local.stderr
    mine = orjson.loads(local.stdout)
    # The same answer as the server's, but for the instant it was computed at.
    for body in (mine, served):
        for key in ("as_of", "since"):
            body.pop(key)
        for item in body["sections"]["incidents"]["open"]:
            item.pop("open_seconds")
        for item in body["sections"]["incidents"]["open_breaches"]:
            item.pop("overrun_seconds")
        for item in body["sections"]["nodes"]["not_ready"]:
            item.pop("not_ready_seconds")
        for item in body["sections"]["storage"]["pvcs"]:
            item.pop("eta_90")
    assert mine == served

    table = run_cli(["digest"], tmp_path / "cli", str(settings.database_url))
    assert table.returncode == 0, table.stderr
    assert "opsledger digest: attention" in table.stdout and "NotReady nodes" in table.stdout

    for args in (["digest", "--since", "soon"], ["digest", "--format", "html"]):
        bad = run_cli(args, tmp_path / "cli", str(settings.database_url))
        assert bad.returncode == 2, (args, bad.stderr)

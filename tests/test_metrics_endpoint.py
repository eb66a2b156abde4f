"""`GET /metrics`: Prometheus figures against independent computations, labels, auth."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.beds import Bed, http_routes, make_bed
from support.payloads import cloudevent, pod_status

from analytics.readmodel.registry import default_projections
from store.collectors import record_run
from store.contract import validate_events

CLUSTER = "prod-eks-1"
NOW = datetime.now(UTC).replace(microsecond=0)
MONTH_START = NOW.replace(day=1, hour=0, minute=0, second=0)


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The figures are computed afresh on every scrape; only ingest and catch-ups move the read model.
SETTINGS = {
    "metrics_cache_seconds": 0,
    "metrics_forecast_cache_seconds": 0,
    "projection_interval_seconds": 3600,
}


def post(bed: Bed, path: str, body: Any) -> Any:
    r = bed.post(path, body)
    assert r.status_code in (200, 201), r.text
    return r.json()


def scrape(bed: Bed) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics: {sample name: {sorted labels: value}}."""
    r = bed.client.get("/metrics", headers=bed.headers("read"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, **SETTINGS) as b:
        yield b


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


# -- incidents ---------------------------------------------------------------------------------

# (id, severity at opening, opened minutes ago, ack after s, resolved after s, raised to)
INCIDENTS = [
    ("A", "P0", 300, 240, 3000, None),
    ("B", "P0", 290, 600, 7200, None),
    ("C", "P1", 280, 1200, 9000, None),
    ("D", "P1", 250, 300, None, None),
    ("E", "P2", 240, 4000, 12000, "P1"),  # raised to P1 before its ack: grouped as P1
    ("F", "P2", 230, 900, 6000, None),
    ("G", "P2", 220, None, None, None),  # no ack: left out of MTTA, counted
    ("H", "P3", 260, 7000, 14000, None),
    ("I", "P1", 180, None, None, None),  # open and unacknowledged: an open P1 breach
]


def seed_incidents(bed: Bed) -> dict[str, dict[str, list[float]]]:
    """Record the incidents through the API; the figures this month's should have."""
    expected: dict[str, dict[str, list[float]]] = {}
    for iid, sev, ago, ack, res, raised in INCIDENTS:
        opened = NOW - timedelta(minutes=ago)
        body = {"title": iid, "severity": sev, "cluster": CLUSTER, "incident_id": iid}
        post(bed, "/v1/incidents", body | {"at": rfc(opened)})
        if raised:
            bed.client.patch(
                f"/v1/incidents/{iid}",
                json={"severity": raised, "at": rfc(opened + timedelta(seconds=60))},
                headers=bed.headers("write"),
            ).raise_for_status()
        if ack is not None:
            post(
                bed,
                f"/v1/incidents/{iid}/acknowledge",
                {"at": rfc(opened + timedelta(seconds=ack))},
            )
        if res is not None:
            post(bed, f"/v1/incidents/{iid}/resolve", {"at": rfc(opened + timedelta(seconds=res))})
        if opened < MONTH_START:
            continue  # only this month's openings count (near a month's start, some may not)
        group = expected.setdefault(raised or sev, {"count": [], "mtta": [], "mttr": []})
        group["count"].append(1)
        if ack is not None:
            group["mtta"].append(float(ack))
        if res is not None:
            group["mttr"].append(float(res))
    # Opened 40 days ago and never acknowledged: not this month's, but an open breach still.
    post(
        bed,
        "/v1/incidents",
        {"title": "old", "severity": "P1", "cluster": CLUSTER, "incident_id": "OLD"}
        | {"at": rfc(NOW - timedelta(days=40))},
    )
    return expected


def test_incident_figures_equal_an_independent_computation(bed: Bed) -> None:
    expected = seed_incidents(bed)
    bed.catch_up()
    m = scrape(bed)
    for sev in ("P0", "P1", "P2", "P3"):
        group = expected.get(sev, {"count": [], "mtta": [], "mttr": []})
        assert m["opsledger_incidents_opened"][labels(severity=sev)] == len(group["count"])
        for figure in ("mtta", "mttr"):
            got = {
                stat: m[f"opsledger_incident_{figure}_seconds"].get(labels(severity=sev, stat=stat))
                for stat in ("mean", "median", "p90")
            }
            values = group[figure]
            if not values:
                assert got == dict.fromkeys(got), (sev, figure, got)  # absent, not 0
                continue
            assert got["mean"] == pytest.approx(statistics.fmean(values)), (sev, figure)
            assert got["median"] == pytest.approx(statistics.median(values)), (sev, figure)
            # p90 by linear interpolation, as quantile_cont and numpy's default.
            assert got["p90"] == pytest.approx(float(np.percentile(values, 90))), (sev, figure)
    # Open now: D (P1, acknowledged), G (P2), I (P1), OLD (P1).
    open_now = m["opsledger_incidents_open"]
    assert open_now == {
        labels(severity="P0"): 0,
        labels(severity="P1"): 3,
        labels(severity="P2"): 1,
        labels(severity="P3"): 0,
    }
    # G's 4 h target is not past yet (opened 220 min ago); I's and OLD's 1 h targets are.
    breaches = m["opsledger_sla_open_breaches"]
    assert len(breaches) == 8
    assert {k: v for k, v in breaches.items() if v} == {labels(severity="P1", kind="response"): 2}


# -- storage -----------------------------------------------------------------------------------


def pvc_samples(
    event_id: str, name: str, used: list[float], capacity: float, step_minutes: int = 10
) -> dict[str, Any]:
    pvc = {"namespace": "data", "persistentvolumeclaim": name}
    samples = []
    for k, u in enumerate(used):
        ts = rfc(NOW - timedelta(minutes=step_minutes * (len(used) - k)))
        samples += [
            {"name": "pvc_used_bytes", "labels": pvc, "ts": ts, "value": u},
            {"name": "pvc_capacity_bytes", "labels": pvc, "ts": ts, "value": capacity},
        ]
    return cloudevent(
        "opsledger.metric.samples",
        {"samples": samples},
        id=event_id,
        time=samples[0]["ts"],
        cluster=CLUSTER,
    )


def test_pvcs_by_status_and_days_to_90(bed: Bed) -> None:
    cap = 200 * 2**30
    post(
        bed,
        "/v1/events",
        [
            pvc_samples("full", "data-0", [0.92 * cap] * 12, cap),
            pvc_samples("flat", "data-1", [0.5 * cap] * 12, cap),
            # Three days of hourly samples, 50 % to 80 % on a straight line: 10 % a day.
            pvc_samples("growing", "data-2", list(np.linspace(0.5, 0.8, 73) * cap), cap, 60),
        ],
    )
    bed.catch_up()
    before = datetime.now(UTC)
    m = scrape(bed)
    after = datetime.now(UTC)
    status = {dict(k)["status"]: v for k, v in m["opsledger_pvc_forecast_status"].items()}
    assert status == {"critical": 1, "warning": 0, "forecast": 1, "ok": 0, "insufficient_data": 1}
    key = labels(cluster=CLUSTER, namespace="data", pvc="data-0")
    growing = labels(cluster=CLUSTER, namespace="data", pvc="data-2")
    days = m["opsledger_pvc_days_to_90"]
    assert set(days) == {key, growing}  # data-1 has too little history for a forecast
    assert days[key] == 0.0  # past 90 % already
    # The line reached 80 % at its last sample (NOW - 1 h, NOW being when this module was
    # imported, minutes ago in a long run) and climbs 10 % a day; the scrape forecasts from
    # its own clock, so 90 % comes (10 % - elapsed x 10 %/day) / 10 %/day after it.
    last = NOW - timedelta(hours=1)

    def expected(at: datetime) -> float:
        return (0.1 - 0.1 * (at - last).total_seconds() / 86400) / 0.1

    # The default forecast also fits a daily profile, which on three days of data moves its
    # estimate with the time of day the test runs by up to about an hour: allow 0.05 d. A wrong
    # figure (days to 85 %, growth per hour, days from the last sample) is 0.5 d or more off.
    assert expected(after) - 0.05 <= days[growing] <= expected(before) + 0.05
    assert m["opsledger_pvc_used_ratio"][key] == pytest.approx(0.92)
    assert m["opsledger_pvc_used_ratio"][
        labels(cluster=CLUSTER, namespace="data", pvc="data-1")
    ] == (pytest.approx(0.5))


# -- projections and collectors ----------------------------------------------------------------


def test_projection_lag_and_collector_health(bed: Bed) -> None:
    bed.catch_up()
    m = scrape(bed)
    lags = m["opsledger_projection_lag_events"]
    assert set(lags.values()) == {0.0} and len(lags) == len(default_projections())
    # Written around the API (no poke) and with a one-hour interval: the projections lag by 3.
    bed.ledger.append(validate_events([pod_status(f"p-{i}", restarts=i) for i in range(3)]))
    m = scrape(bed)
    assert set(m["opsledger_projection_lag_events"].values()) == {3.0}
    assert m["opsledger_ledger_head_position"][()] == bed.ledger.head()
    states = bed.client.get("/v1/projections", headers=bed.headers("read")).json()["projections"]
    assert {s["name"]: float(s["lag"]) for s in states} == {
        dict(k)["projection"]: v for k, v in m["opsledger_projection_lag_events"].items()
    }

    engine = bed.ledger.engine
    record_run(engine, "prometheus/prod", appended=5, error=None)
    record_run(engine, "prometheus/prod", appended=7, error=None)
    for _ in range(2):
        record_run(engine, "aws/guardduty", appended=0, error="EndpointConnectionError")
    m = scrape(bed)
    prom, gd = labels(collector="prometheus/prod"), labels(collector="aws/guardduty")
    assert m["opsledger_collector_up"] == {prom: 1.0, gd: 0.0}
    assert m["opsledger_collector_failures"] == {prom: 0.0, gd: 2.0}
    assert m["opsledger_collector_events_appended_total"] == {prom: 12.0, gd: 0.0}
    assert m["opsledger_collector_runs_total"] == {prom: 2.0, gd: 2.0}
    last = m["opsledger_collector_last_success_timestamp_seconds"]
    assert list(last) == [prom]  # guardduty never succeeded: no sample
    assert abs(last[prom] - datetime.now(UTC).timestamp()) < 60


# -- request metrics ---------------------------------------------------------------------------


def test_requests_are_counted_by_route_template(bed: Bed) -> None:
    before = scrape(bed).get("opsledger_http_requests_total", {})
    events_ok = labels(method="GET", route="/v1/events", status="200")
    for _ in range(3):
        assert bed.client.get("/v1/events", headers=bed.headers("read")).status_code == 200
    for iid in ("INC-SECRET-1", "INC-SECRET-2"):
        r = bed.client.get(f"/v1/incidents/{iid}", headers=bed.headers("read"))
        assert r.status_code == 404
    assert bed.client.get("/v1/no/such/route/42", headers=bed.headers("read")).status_code == 404
    assert bed.client.get("/v1/events").status_code == 401
    m = scrape(bed)
    counts = m["opsledger_http_requests_total"]
    assert counts[events_ok] - before.get(events_ok, 0.0) == 3
    by_id = labels(method="GET", route="/v1/incidents/{incident_id}", status="404")
    assert counts[by_id] == 2
    assert counts[labels(method="GET", route="unmatched", status="404")] == 1
    assert counts[labels(method="GET", route="/v1/events", status="401")] == 1
    # Bounded cardinality: every route label is a template of the app, never a raw path.
    templates = {r.path for r in http_routes(bed.client.app)} | {"unmatched"}
    routes = {dict(k)["route"] for k in counts}
    assert routes <= templates, routes - templates
    assert not any("SECRET" in r or "42" in r for r in routes)
    durations = m["opsledger_http_request_duration_seconds_count"]
    assert durations[labels(method="GET", route="/v1/events")] >= 4
    assert m["opsledger_read_model_up"][()] == 1.0


# -- access ------------------------------------------------------------------------------------


def test_a_read_key_is_needed_unless_public(bed: Bed, tmp_path: Path) -> None:
    r = bed.client.get("/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["errors"] == []
    r = bed.client.get("/metrics", headers={"Authorization": "Bearer olk_wrong"})
    assert r.status_code == 401
    for scope in ("read", "write", "admin"):
        assert bed.client.get("/metrics", headers=bed.headers(scope)).status_code == 200
    r = bed.client.get(
        "/metrics",
        headers=bed.headers("read") | {"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith(
        "application/openmetrics-text"
    )
    assert r.text.endswith("# EOF\n")

    # Public, and with the read-model figures cached for 5 minutes.
    fields = SETTINGS | {"metrics_public": True, "metrics_cache_seconds": 300}
    with make_bed(tmp_path / "public", **fields) as public:
        client = public.client
        first = client.get("/metrics")
        assert first.status_code == 200, first.text
        record_run(public.ledger.engine, "kubernetes/prod", appended=1, error=None)
        assert "kubernetes/prod" not in client.get("/metrics").text  # still the cached figures
        assert client.get("/metrics", headers={"Authorization": "Bearer junk"}).status_code == 200

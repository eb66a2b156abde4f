"""The ledger's contract, one suite run against every backend (SQLite file, PostgreSQL 15)."""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.contract import (
    KNOWN_TYPES,
    Event,
    SampleBatch,
    batch_from_columns,
    samples_event,
    validate_event,
    validate_events,
)
from store.errors import ConflictError, StreamVersionError
from store.ledger import Ledger, RecordedEvent

CLUSTER = "prod-eks-1"
SOURCE = "//opsledger.test/collector"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(dt: datetime) -> int:
    """Microseconds since the epoch, computed independently of store.timefmt."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def ce(
    event_type: str,
    data: dict[str, Any],
    *,
    id: str,
    source: str = SOURCE,
    time: str = "2026-10-01T12:00:00Z",
    cluster: str | None = CLUSTER,
    subject: str | None = None,
) -> dict[str, Any]:
    """A structured-mode CloudEvent."""
    raw: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": event_type,
        "time": time,
        "data": data,
    }
    if cluster is not None:
        raw["cluster"] = cluster
    if subject is not None:
        raw["subject"] = subject
    return raw


def node(id: str, *, source: str = SOURCE, ready: bool = True, **kw: Any) -> Event:
    """A node status event."""
    data = {
        "node": f"ip-10-0-{len(id) % 250}-1.ec2.internal",
        "ready": ready,
        "nodepool": "general",
        "zone": "us-gov-west-1a",
        "allocatable": {"cpu_cores": 3.92, "memory_bytes": 16_000_000_000, "pods": 58},
    }
    return validate_event(ce("opsledger.k8s.node.status", data, id=id, source=source, **kw))


def incident(kind: str, incident_id: str, id: str, *, source: str = SOURCE, **kw: Any) -> Event:
    """An incident lifecycle event of the given kind (opened, acknowledged, annotated, ...)."""
    data: dict[str, Any] = {"incident_id": incident_id}
    cluster: str | None = None
    if kind == "opened":
        data.update(title="API 5xx above 5%", severity="P1", namespace="payments")
        cluster = CLUSTER
    elif kind == "annotated":
        data["note"] = kw.pop("note", "rolled back deploy 42")
    elif kind == "severity_changed":
        data["severity"] = "P0"
    elif kind == "postmortem_linked":
        data["url"] = "https://wiki.example.com/pm/42"
    else:
        data["by"] = "alice"
    return validate_event(
        ce(f"opsledger.incident.{kind}", data, id=id, source=source, cluster=cluster, **kw)
    )


def one_of_each_type() -> list[dict[str, Any]]:
    """A valid CloudEvent of every type of the contract, with varied attributes."""
    k8s_event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "api-7d9.17f", "namespace": "payments", "uid": "u-1"},
        "involvedObject": {"kind": "Pod", "name": "api-7d9", "namespace": "payments"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "count": 7,
        "firstTimestamp": "2026-10-01T11:58:00Z",
    }
    raws = [
        ce(
            "opsledger.metric.samples",
            {
                "samples": [
                    {
                        "name": "pvc_used_bytes",
                        "labels": {"namespace": "db", "persistentvolumeclaim": "data-pg-0"},
                        "ts": 1790000000.5,
                        "value": 12.5,
                    },
                    {
                        "name": "node_cpu_usage_cores",
                        "labels": {"node": "n1"},
                        "ts": "2026-10-01T12:00:00Z",
                        "value": 1,
                    },
                    {
                        "name": "node_cpu_usage_cores",
                        "labels": {"node": "n1"},
                        "ts": "2026-10-01T11:59:00Z",
                        "value": -0.25,
                    },
                ]
            },
            id="samples-1",
        ),
        ce("opsledger.k8s.event", k8s_event, id="k8s-1", subject="pod/payments/api-7d9"),
        ce(
            "opsledger.k8s.node.status",
            {
                "node": "n1",
                "ready": False,
                "reason": "KubeletNotReady",
                "nodepool": "general",
                "zone": "us-gov-west-1a",
                "instance_type": "m6i.xlarge",
                "allocatable": {"cpu_cores": 3.92, "memory_bytes": 15_500_000_000, "pods": 58},
            },
            id="node-1",
        ),
        ce(
            "opsledger.k8s.pod.status",
            {
                "namespace": "payments",
                "pod": "api-7d9",
                "phase": "Running",
                "reason": "CrashLoopBackOff",
                "restarts": 7,
                "node": "n1",
                "owner": "api",
            },
            id="pod-1",
        ),
        ce(
            "opsledger.k8s.nodepool.status",
            {
                "nodepool": "general-purpose",
                "limits": {"cpu_cores": 1000, "memory_bytes": 1000 * 2**30},
                "resources": {"cpu_cores": 64.5, "memory_bytes": 256 * 2**30, "nodes": 8},
                "zones": ["us-gov-west-1a", "us-gov-west-1b"],
            },
            id="nodepool-1",
        ),
        ce(
            "opsledger.network.subnet.status",
            {
                "subnet_id": "subnet-0a1",
                "zone": "us-gov-west-1a",
                "cidr": "10.0.0.0/20",
                "available_ips": 3012,
                "total_ips": 4091,
                "vpc_id": "vpc-1",
            },
            id="subnet-1",
        ),
        ce(
            "opsledger.finding",
            {
                "provider": "guardduty",
                "finding_id": "f-1",
                "title": "Unusual API call",
                "finding_type": "Discovery:Kubernetes/SuccessfulAnonymousAccess",
                "severity": "HIGH",
                "resource": "eks/prod",
                "status": "ACTIVE",
                "first_seen": "2026-10-01T10:00:00Z",
                "last_seen": "2026-10-01T11:00:00+01:00",
            },
            id="finding-1",
            cluster=None,
        ),
        ce(
            "opsledger.incident.opened",
            {
                "incident_id": "INC-1",
                "title": "Checkout latency",
                "severity": "P2",
                "namespace": "payments",
                "service": "api",
            },
            id="inc-1-opened",
            # An offset and sub-second digits: stored as UTC microseconds.
            time="2026-10-01T08:00:00.123456-04:00",
        ),
        ce(
            "opsledger.incident.acknowledged",
            {"incident_id": "INC-1", "by": "bob"},
            id="inc-1-ack",
            time="2026-10-01T12:05:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.mitigated",
            {"incident_id": "INC-1"},
            id="inc-1-mit",
            time="2026-10-01T12:30:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.severity_changed",
            {"incident_id": "INC-1", "severity": "P1"},
            id="inc-1-sev",
            time="2026-10-01T12:31:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.annotated",
            {"incident_id": "INC-1", "note": "ünïcødé ✓ note"},
            id="inc-1-note",
            time="2026-10-01T12:32:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.resolved",
            {"incident_id": "INC-1", "by": "carol"},
            id="inc-1-res",
            time="2026-10-01T13:00:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.reopened",
            {"incident_id": "INC-1"},
            id="inc-1-reopen",
            time="2026-10-01T14:00:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.incident.postmortem_linked",
            {"incident_id": "INC-1", "url": "https://wiki.example.com/pm/INC-1"},
            id="inc-1-pm",
            time="2026-10-02T09:00:00Z",
            cluster=None,
        ),
        ce(
            "opsledger.cost.daily",
            {"date": "2026-09-30", "service": "Amazon EKS", "amount": 123.45, "currency": "USD"},
            id="cost-1",
            cluster=None,
        ),
        ce(
            "opsledger.cost.instance_type.daily",
            {
                "date": "2026-09-30",
                "instance_type": "m6i.2xlarge",
                "amount": 92.93,
                "usage_hours": 192.0,
                "currency": "USD",
            },
            id="cost-it-1",
            cluster=None,
        ),
        ce(
            "opsledger.budget.set",
            {"month": "2026-10", "amount": 5000, "currency": "USD"},
            id="budget-1",
            cluster=None,
        ),
        ce(
            "opsledger.sla.policy_set",
            {
                "timezone": "America/New_York",
                "business_hours": {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "09:00",
                    "end": "17:00",
                },
                "holidays": ["2026-11-26"],
                "response": {"P0": "15m", "P1": "1h", "P2": "4h", "P3": "next_business_day"},
                "resolution": {"P0": "4h", "P1": "8h"},
            },
            id="sla-1",
            cluster=None,
        ),
    ]
    return raws


def assert_same_samples(got: SampleBatch | None, want: SampleBatch | None) -> None:
    """Samples are equal as arrays, bit for bit."""
    assert got is not None and want is not None
    assert got.series == want.series
    assert got.series_index.dtype == np.int64 and got.ts_us.dtype == np.int64
    assert got.values.dtype == np.float64
    np.testing.assert_array_equal(got.series_index, want.series_index)
    np.testing.assert_array_equal(got.ts_us, want.ts_us)
    np.testing.assert_array_equal(got.values.view(np.int64), want.values.view(np.int64))


def assert_recorded_as(rec: RecordedEvent, ev: Event) -> None:
    """Every attribute of the appended event comes back unchanged."""
    assert (rec.source, rec.id, rec.type) == (ev.source, ev.id, ev.type)
    assert rec.time_us == ev.time_us and isinstance(rec.time_us, int)
    assert (rec.cluster, rec.subject, rec.stream) == (ev.cluster, ev.subject, ev.stream)
    if ev.samples is not None:
        assert rec.data is None
        assert_same_samples(rec.samples, ev.samples)
    else:
        assert rec.samples is None
        assert rec.data == ev.data


def read_all(ledger: Ledger) -> list[RecordedEvent]:
    return list(ledger.iter_all(0, batch=1000))


def snapshot(ledger: Ledger) -> list[tuple[Any, ...]]:
    """Everything recorded, as comparable values (sample arrays as lists)."""
    out = []
    for r in read_all(ledger):
        s = r.samples
        cols = (
            None
            if s is None
            else (s.series, s.series_index.tolist(), s.ts_us.tolist(), s.values.tolist())
        )
        out.append(
            (
                r.position,
                r.source,
                r.id,
                r.type,
                r.time_us,
                r.cluster,
                r.subject,
                r.stream,
                r.stream_version,
                r.recorded_at_us,
                r.data,
                cols,
            )
        )
    return out


def positions(recs: list[RecordedEvent]) -> list[int]:
    return [r.position for r in recs]


# -- append and read back ------------------------------------------------------------------


def test_empty_ledger(ledger: Ledger) -> None:
    assert ledger.head() == 0
    assert ledger.read(0, 10) == []
    assert ledger.read_stream("incident/none") == []
    result = ledger.append([])
    assert (result.accepted, result.duplicates, result.positions) == (0, 0, [])


def test_every_type_round_trips(ledger: Ledger) -> None:
    raws = one_of_each_type()
    batch = validate_events(raws)
    assert {e.type for e in batch} == set(KNOWN_TYPES)

    before = time.time_ns() // 1000
    result = ledger.append(batch)
    after = time.time_ns() // 1000

    n = len(batch)
    assert (result.accepted, result.duplicates) == (n, 0)
    assert (result.first_position, result.last_position) == (1, n)
    assert result.positions == list(range(1, n + 1))
    recs = ledger.read(0, 1000)
    assert positions(recs) == list(range(1, n + 1))
    for rec, ev, raw in zip(recs, batch, raws, strict=True):
        assert_recorded_as(rec, ev)
        assert before <= rec.recorded_at_us <= after
        if ev.samples is None:
            assert rec.data == raw["data"]
        # The event read back, re-validated, is the very same content (same digest).
        back = rec.to_cloudevent()
        for ext in ("position", "recordedat", "stream", "streamversion"):
            back.pop(ext, None)
        assert validate_event(back).digest == ev.digest


def test_time_is_utc_microseconds(ledger: Ledger) -> None:
    times = {
        "a": ("2026-10-01T08:00:00.123456-04:00", datetime(2026, 10, 1, 12, 0, 0, 123456, UTC)),
        "b": ("2026-10-01T12:00:00Z", datetime(2026, 10, 1, 12, tzinfo=UTC)),
        "c": ("2026-10-02T01:30:00.5+05:30", datetime(2026, 10, 1, 20, 0, 0, 500000, UTC)),
        "d": ("1970-01-01T00:00:00Z", _EPOCH),
        # The last instant the contract accepts (docs/events.md, "Time").
        "e": ("2199-12-31T23:59:59.999999Z", datetime(2199, 12, 31, 23, 59, 59, 999999, UTC)),
    }
    batch = [node(k, time=t) for k, (t, _) in times.items()]
    ledger.append(batch)
    got = {r.id: r.time_us for r in ledger.read(0, 100)}
    assert got == {k: us(dt) for k, (_, dt) in times.items()}
    assert [r.to_cloudevent()["time"] for r in ledger.read(0, 2)] == [
        "2026-10-01T12:00:00.123456Z",
        "2026-10-01T12:00:00Z",
    ]


def test_metric_samples_round_trip_as_arrays(ledger: Ledger, backend_url: str) -> None:
    rng = np.random.default_rng(7)
    series = [
        (
            "node_cpu_usage_cores",
            {"node": f"ip-10-0-0-{i}", "nodepool": "general", "zone": "us-gov-west-1a"},
        )
        for i in range(5)
    ] + [("pvc_used_bytes", {"namespace": "db", "persistentvolumeclaim": "data-pg-0"})]
    n_ts = 2000
    sidx = np.repeat(np.arange(len(series)), n_ts)
    ts = np.tile(1_790_000_000_000_000 + np.arange(n_ts, dtype=np.int64) * 15_000_000, len(series))
    values = rng.normal(0, 1e9, size=len(sidx))
    values[:4] = [0.0, -0.0, 5e-324, 1.7976931348623157e308]
    shuffled = rng.permutation(len(sidx))
    big = samples_event(
        SOURCE,
        "samples-big",
        1_790_000_000_000_000,
        CLUSTER,
        batch_from_columns(series, sidx[shuffled], ts[shuffled], values[shuffled]),
    )
    # A second event reuses some series (interned once) and adds a new one.
    small = validate_event(
        ce(
            "opsledger.metric.samples",
            {
                "samples": [
                    {
                        "name": "pvc_used_bytes",
                        "ts": 1790000100,
                        "value": 3,
                        "labels": {"persistentvolumeclaim": "data-pg-0", "namespace": "db"},
                    },
                    {
                        "name": "namespace_pod_count",
                        "labels": {"namespace": "db"},
                        "ts": "2026-10-01T12:00:00.000001Z",
                        "value": 12,
                    },
                ]
            },
            id="samples-small",
        )
    )
    ledger.append([big])
    ledger.append([small])

    recs = ledger.read(0, 10)
    assert [r.id for r in recs] == ["samples-big", "samples-small"]
    assert_recorded_as(recs[0], big)
    assert_recorded_as(recs[1], small)
    assert len(recs[0].samples or ()) == len(series) * n_ts

    # A ledger with a cold series cache (another process) decodes the same arrays.
    other = Ledger.from_url(backend_url)
    try:
        cold = other.read(0, 10)
        assert_recorded_as(cold[0], big)
        assert_recorded_as(cold[1], small)
    finally:
        other.engine.dispose()


def sample_triples(batch: SampleBatch | None) -> list[tuple[str, str, int, float]]:
    assert batch is not None
    return sorted(
        (*batch.series[i], t, v)
        for i, t, v in zip(
            batch.series_index.tolist(), batch.ts_us.tolist(), batch.values.tolist(), strict=True
        )
    )


def test_samples_read_back_in_canonical_order(ledger: Ledger) -> None:
    def samples(event_id: str, names: list[str]) -> Event:
        return validate_event(
            ce(
                "opsledger.metric.samples",
                {
                    "samples": [
                        {"name": n, "labels": {"node": "n1"}, "ts": ts, "value": float(ts)}
                        for n in names
                        for ts in (20, 10)
                    ]
                },
                id=event_id,
            )
        )

    # "z_metric" is interned first, so its series id is lower than the later "a_metric"'s.
    ledger.append([samples("first", ["z_metric"])])
    second = samples("second", ["z_metric", "a_metric"])
    ledger.append([second])
    got = ledger.read(1, 1)[0].samples
    assert got is not None
    assert sample_triples(got) == sample_triples(second.samples)
    # SampleBatch's canonical form: series sorted by key, samples sorted by (series, ts).
    assert list(got.series) == sorted(got.series)
    assert got.series_index.tolist() == sorted(got.series_index.tolist())
    assert_same_samples(got, second.samples)


def test_positions_increase_by_one(ledger: Ledger) -> None:
    sizes = [1, 3, 1, 7, 2]
    expected = 1
    for b, size in enumerate(sizes):
        result = ledger.append([node(f"{b}-{k}") for k in range(size)])
        assert result.positions == list(range(expected, expected + size))
        assert (result.first_position, result.last_position) == (expected, expected + size - 1)
        expected += size
        assert ledger.head() == expected - 1
    assert positions(read_all(ledger)) == list(range(1, sum(sizes) + 1))


# -- idempotency and conflicts ---------------------------------------------------------------


def test_same_batch_again_is_all_duplicates(ledger: Ledger) -> None:
    batch = validate_events(one_of_each_type())
    first = ledger.append(batch)
    before = snapshot(ledger)

    again = ledger.append(validate_events(one_of_each_type()))
    assert (again.accepted, again.duplicates) == (0, len(batch))
    assert (again.first_position, again.last_position) == (None, None)
    assert again.positions == first.positions
    assert ledger.head() == len(batch)
    assert snapshot(ledger) == before


def test_duplicates_are_judged_by_content_not_spelling(ledger: Ledger) -> None:
    raw = ce(
        "opsledger.cost.daily",
        {"date": "2026-09-30", "service": "EKS", "amount": 1.5, "currency": "USD"},
        id="cost-1",
        cluster=None,
    )
    samples = [
        {"name": "m", "labels": {"a": "1", "b": "2"}, "ts": 10, "value": 1.0},
        {"name": "m", "labels": {"a": "1", "b": "2"}, "ts": 5, "value": 2.0},
    ]
    raw_s = ce("opsledger.metric.samples", {"samples": samples}, id="s-1")
    ledger.append(validate_events([raw, raw_s]))

    respelled = dict(raw, data=dict(reversed(list(raw["data"].items()))))
    reordered = dict(
        raw_s,
        data={
            "samples": [
                {
                    "value": 2.0,
                    "ts": "1970-01-01T00:00:05Z",
                    "name": "m",
                    "labels": {"b": "2", "a": "1"},
                },
                {"name": "m", "labels": {"a": "1", "b": "2"}, "ts": 10, "value": 1},
            ]
        },
    )
    result = ledger.append(validate_events([respelled, reordered]))
    assert (result.accepted, result.duplicates) == (0, 2)
    assert ledger.head() == 2


def test_mixed_batch_records_only_the_new_events(ledger: Ledger) -> None:
    ledger.append([node("a"), node("b")])
    result = ledger.append([node("x"), node("a"), node("y"), node("b")])
    assert (result.accepted, result.duplicates) == (2, 2)
    assert result.positions == [3, 1, 4, 2]
    assert (result.first_position, result.last_position) == (3, 4)
    assert [r.id for r in read_all(ledger)] == ["a", "b", "x", "y"]


def test_same_id_from_another_source_is_another_event(ledger: Ledger) -> None:
    ledger.append([node("same", source="//a")])
    result = ledger.append([node("same", source="//b")])
    assert result.accepted == 1
    assert [(r.source, r.id) for r in read_all(ledger)] == [("//a", "same"), ("//b", "same")]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"data": {"incident_id": "INC-9", "note": "other"}}, id="data"),
        pytest.param({"time": "2026-10-01T12:00:00.000001Z"}, id="time"),
        pytest.param({"cluster": "other-cluster"}, id="cluster"),
        pytest.param({"subject": "something"}, id="subject"),
        pytest.param(
            {"type": "opsledger.incident.acknowledged", "data": {"incident_id": "INC-9"}}, id="type"
        ),
    ],
)
def test_conflict_writes_nothing(ledger: Ledger, change: dict[str, Any]) -> None:
    original = ce(
        "opsledger.incident.annotated",
        {"incident_id": "INC-9", "note": "n"},
        id="dup",
        cluster=None,
    )
    ledger.append([node("first"), validate_event(original)])
    before = snapshot(ledger)

    changed = validate_event({**original, **change})
    with pytest.raises(ConflictError) as info:
        ledger.append([changed])
    [conflict] = info.value.conflicts
    assert (conflict.index, conflict.source, conflict.id) == (0, SOURCE, "dup")
    assert conflict.position == 2
    assert ledger.head() == 2
    assert snapshot(ledger) == before


def test_conflict_in_a_batch_with_new_events_writes_nothing(ledger: Ledger) -> None:
    ledger.append([node("a"), node("b", ready=True)])
    before = snapshot(ledger)
    batch = [
        node("new-1"),
        node("b", ready=False),
        incident("opened", "INC-5", "new-2"),
        node("a", ready=False),
    ]
    with pytest.raises(ConflictError) as info:
        ledger.append(batch)
    assert [(c.index, c.id, c.position) for c in info.value.conflicts] == [(1, "b", 2), (3, "a", 1)]
    assert ledger.head() == 2
    assert snapshot(ledger) == before
    assert ledger.read_stream("incident/INC-5") == []

    # Nothing was reserved by the failed append: the new events still get the next positions.
    result = ledger.append([batch[0], batch[2]])
    assert result.positions == [3, 4]
    assert [r.stream_version for r in ledger.read_stream("incident/INC-5")] == [1]


# -- streams and optimistic concurrency ------------------------------------------------------


def test_incident_events_get_stream_versions(ledger: Ledger) -> None:
    ledger.append([incident("opened", "A", "a1"), node("n1"), incident("opened", "B", "b1")])
    ledger.append(
        [
            incident("acknowledged", "A", "a2"),
            incident("annotated", "A", "a3"),
            incident("acknowledged", "B", "b2"),
        ]
    )
    ledger.append([incident("resolved", "A", "a4")])

    a = ledger.read_stream("incident/A")
    assert [(r.id, r.stream, r.stream_version) for r in a] == [
        ("a1", "incident/A", 1),
        ("a2", "incident/A", 2),
        ("a3", "incident/A", 3),
        ("a4", "incident/A", 4),
    ]
    assert positions(a) == sorted(positions(a))
    assert [r.stream_version for r in ledger.read_stream("incident/B")] == [1, 2]
    assert [r.id for r in ledger.read_stream("incident/A", after_version=2)] == ["a3", "a4"]
    other = [r for r in read_all(ledger) if r.id == "n1"]
    assert [(r.stream, r.stream_version) for r in other] == [(None, None)]


def test_stale_expected_version_writes_nothing(ledger: Ledger) -> None:
    ledger.append([incident("opened", "A", "a1"), incident("acknowledged", "A", "a2")])
    before = snapshot(ledger)
    for stale in (0, 1, 3):
        with pytest.raises(StreamVersionError) as info:
            ledger.append(
                [node(f"other-{stale}"), incident("annotated", "A", f"x{stale}")],
                expected_versions={"incident/A": stale},
            )
        err = info.value
        assert (err.stream, err.expected, err.current) == ("incident/A", stale, 2)
    assert snapshot(ledger) == before

    with pytest.raises(StreamVersionError) as info:
        ledger.append([incident("opened", "NEW", "n1")], expected_versions={"incident/NEW": 1})
    assert (info.value.expected, info.value.current) == (1, 0)
    assert snapshot(ledger) == before


def test_current_expected_version_appends(ledger: Ledger) -> None:
    ledger.append([incident("opened", "A", "a1")], expected_versions={"incident/A": 0})
    ledger.append(
        [incident("acknowledged", "A", "a2"), incident("annotated", "A", "a3")],
        expected_versions={"incident/A": 1},
    )
    result = ledger.append([incident("resolved", "A", "a4")], expected_versions={"incident/A": 3})
    assert result.accepted == 1
    assert [r.stream_version for r in ledger.read_stream("incident/A")] == [1, 2, 3, 4]
    # A stream named only in expected_versions is checked too.
    ledger.append([node("n")], expected_versions={"incident/A": 4, "incident/none": 0})
    with pytest.raises(StreamVersionError):
        ledger.append([node("m")], expected_versions={"incident/A": 3})


def test_retried_append_is_a_duplicate_even_with_its_old_expected_version(ledger: Ledger) -> None:
    ledger.append([incident("opened", "A", "a1")])
    batch = [incident("acknowledged", "A", "a2")]
    first = ledger.append(batch, expected_versions={"incident/A": 1})
    retry = ledger.append(batch, expected_versions={"incident/A": 1})
    assert (retry.accepted, retry.duplicates, retry.positions) == (0, 1, first.positions)


# -- reading -----------------------------------------------------------------------------


def test_paging_after_and_limit(ledger: Ledger) -> None:
    ledger.append([node(f"e{i:02d}") for i in range(25)])
    assert positions(ledger.read(0, 10)) == list(range(1, 11))
    assert positions(ledger.read(10, 10)) == list(range(11, 21))
    assert positions(ledger.read(20, 10)) == list(range(21, 26))
    assert ledger.read(25, 10) == []
    assert positions(ledger.read(7, 1)) == [8]
    assert [r.id for r in ledger.iter_all(0, batch=7)] == [f"e{i:02d}" for i in range(25)]
    assert positions(list(ledger.iter_all(22, batch=2))) == [23, 24, 25]


def test_filters(ledger: Ledger) -> None:
    t = [datetime(2026, 10, 1, 12, tzinfo=UTC) + timedelta(minutes=m) for m in range(5)]
    stamp = [x.isoformat().replace("+00:00", "Z") for x in t]
    ledger.append(
        [
            node("n0", time=stamp[0], cluster="east"),
            incident("opened", "I", "i1", time=stamp[1]),
            node("n2", time=stamp[2], cluster="west"),
            incident("acknowledged", "I", "i3", time=stamp[3]),
            node("n4", time=stamp[4], cluster="east"),
        ]
    )

    def ids(**kw: Any) -> list[str]:
        return [r.id for r in ledger.read(kw.pop("after", 0), kw.pop("limit", 100), **kw)]

    assert ids(types=["opsledger.k8s.node.status"]) == ["n0", "n2", "n4"]
    assert ids(types=["opsledger.incident.opened", "opsledger.incident.acknowledged"]) == [
        "i1",
        "i3",
    ]
    assert ids(types=["opsledger.finding"]) == []
    assert ids(cluster="east") == ["n0", "n4"]
    assert ids(cluster=CLUSTER) == ["i1"]
    # Time windows are half-open: [since, until).
    assert ids(since_us=us(t[1]), until_us=us(t[3])) == ["i1", "n2"]
    assert ids(since_us=us(t[3])) == ["i3", "n4"]
    assert ids(until_us=us(t[1])) == ["n0"]
    assert ids(since_us=us(t[2]), until_us=us(t[2])) == []
    assert ids(since_us=us(t[2]), until_us=us(t[2]) + 1) == ["n2"]
    # Filters combine, and after/limit page through the filtered events.
    assert ids(types=["opsledger.k8s.node.status"], cluster="east", since_us=us(t[1])) == ["n4"]
    assert ids(types=["opsledger.k8s.node.status"], limit=2) == ["n0", "n2"]
    assert ids(types=["opsledger.k8s.node.status"], after=1, limit=1) == ["n2"]
    assert [r.position for r in ledger.read(0, 100, cluster="west")] == [3]


def test_read_stream_is_in_version_order(ledger: Ledger) -> None:
    # Event times deliberately disagree with the append order: version order is append order.
    ledger.append([incident("opened", "S", "s1", time="2026-10-01T12:00:00Z")])
    ledger.append([node(f"noise-{i}") for i in range(3)])
    ledger.append([incident("annotated", "S", "s2", time="2026-10-01T11:00:00Z")])
    ledger.append(
        [
            incident("opened", "T", "t1"),
            incident("resolved", "S", "s3", time="2026-10-01T10:00:00Z"),
        ]
    )
    recs = ledger.read_stream("incident/S")
    assert [(r.id, r.stream_version, r.position) for r in recs] == [
        ("s1", 1, 1),
        ("s2", 2, 5),
        ("s3", 3, 7),
    ]


# -- concurrency -------------------------------------------------------------------------


def run_threads(targets: list[Callable[[], None]], timeout: float = 120) -> None:
    """Run the targets in threads started together; re-raise the first failure."""
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guard(t), daemon=True) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout)
    assert not any(th.is_alive() for th in threads), "a thread did not finish in time"
    if errors:
        raise errors[0]


def test_concurrent_writers_never_interleave_and_a_follower_never_skips(backend_url: str) -> None:
    writers, batches = 2, 150
    ledgers = [Ledger.from_url(backend_url) for _ in range(writers + 1)]
    start = threading.Barrier(writers + 1)
    done = threading.Event()
    appended: list[tuple[int, int, list[Event], list[int]]] = []
    seen: list[int] = []
    pages: list[list[int]] = []

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(w)
            led = ledgers[w]
            start.wait()
            for b in range(batches):
                batch: list[Event] = [
                    node(f"w{w}-b{b}-{k}", source=f"//writer-{w}") for k in range(rng.randint(1, 4))
                ]
                # Both writers also extend one shared incident stream, without expectations.
                if b % 3 == 0:
                    batch.append(
                        incident("annotated", "SHARED", f"w{w}-b{b}-note", source=f"//writer-{w}")
                    )
                result = led.append(batch)
                assert result.accepted == len(batch)
                appended.append((w, b, batch, result.positions))
                # A pause lets the other writer in: SQLite's busy handler backs off long enough
                # that one writer would otherwise take most turns in a row.
                time.sleep(rng.random() / 500)

        return run

    def follower() -> None:
        led = ledgers[writers]
        start.wait()
        last = 0
        while True:
            finished = done.is_set()  # read the flag first: one more full drain after writers end
            page = led.read(after=last, limit=5)
            if page:
                pages.append(positions(page))
                seen.extend(positions(page))
                last = page[-1].position
            elif finished:
                return

    def writers_then_done() -> None:
        try:
            run_threads([writer(w) for w in range(writers)])
        finally:
            done.set()

    try:
        run_threads([writers_then_done, follower])
        head = ledgers[0].head()
        recorded = read_all(ledgers[0])
        stream = ledgers[0].read_stream("incident/SHARED")
    finally:
        for led in ledgers:
            led.engine.dispose()

    total = sum(len(batch) for _, _, batch, _ in appended)
    assert head == total == len(recorded)
    assert len(appended) == writers * batches
    # Each batch occupies one contiguous range, in batch order ...
    ranges = []
    for w, b, batch, pos in appended:
        assert pos == list(range(pos[0], pos[0] + len(batch))), (w, b, pos)
        ranges.append((pos[0], pos[-1], w, b))
        assert [recorded[p - 1].id for p in pos] == [e.id for e in batch]
    # ... and the ranges tile 1..head without overlapping or interleaving.
    ranges.sort()
    assert ranges[0][0] == 1 and ranges[-1][1] == head
    for (_, end, *_), (begin, *_) in itertools.pairwise(ranges):
        assert begin == end + 1
    # The writers really ran at the same time (their batches alternate in position order) ...
    switches = sum(a[2] != b[2] for a, b in itertools.pairwise(ranges))
    assert switches >= 2
    # ... and each writer's own batches land in the order it appended them.
    for w in range(writers):
        mine = [(first, b) for first, _, ww, b in ranges if ww == w]
        assert [b for _, b in mine] == list(range(batches))
    # The follower saw every position exactly once, in order: nothing committed late was skipped.
    assert seen == list(range(1, head + 1))
    assert all(p == list(range(p[0], p[0] + len(p))) for p in pages)
    # The shared stream has versions 1..n in position order, no gaps or repeats.
    shared = [r for r in recorded if r.stream == "incident/SHARED"]
    assert [r.stream_version for r in shared] == list(range(1, len(shared) + 1))
    assert [(r.position, r.stream_version) for r in stream] == [
        (r.position, r.stream_version) for r in shared
    ]


def test_concurrent_expected_versions_admit_one_writer_per_version(backend_url: str) -> None:
    writers, notes = 2, 25
    ledgers = [Ledger.from_url(backend_url) for _ in range(writers)]
    ledgers[0].append([incident("opened", "RACE", "opened")])
    start = threading.Barrier(writers)

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            led = ledgers[w]
            start.wait()
            for n in range(notes):
                while True:
                    version = led.read_stream("incident/RACE")[-1].stream_version
                    assert version is not None
                    ev = incident("annotated", "RACE", f"w{w}-{n}", note=f"{w}/{n}")
                    try:
                        led.append([ev], expected_versions={"incident/RACE": version})
                        break
                    except StreamVersionError as exc:
                        assert exc.current > version  # another writer got there first

        return run

    try:
        run_threads([writer(w) for w in range(writers)])
        recs = ledgers[0].read_stream("incident/RACE")
    finally:
        for led in ledgers:
            led.engine.dispose()
    assert [r.stream_version for r in recs] == list(range(1, 1 + writers * notes + 1))
    assert sorted(r.id for r in recs[1:]) == sorted(
        f"w{w}-{n}" for w in range(writers) for n in range(notes)
    )
    assert positions(recs) == sorted(positions(recs))


# -- properties ----------------------------------------------------------------------------

_POOL = 12
_batches = st.lists(
    st.lists(st.integers(0, _POOL - 1), min_size=1, max_size=6, unique=True),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=_batches, data=st.data())
def test_resends_leave_exactly_the_distinct_events(
    ledger: Ledger, batches: list[list[int]], data: st.DataObject
) -> None:
    tag = uuid.uuid4().hex  # examples share the database; their own source keeps them apart
    source = f"//prop/{tag}"
    pool = [
        node(f"n{i}", source=source)
        if i % 3
        else incident("annotated", f"P{tag}", f"n{i}", source=source, note=str(i))
        for i in range(_POOL)
    ]
    head0 = ledger.head()
    first_position: dict[int, int] = {}
    order: list[int] = []
    # Random re-sends: each batch is followed, sometimes, by a resend of an earlier batch.
    schedule: list[list[int]] = []
    for b in batches:
        schedule.append(b)
        if data.draw(st.booleans()):
            schedule.append(data.draw(st.sampled_from(schedule)))

    accepted = duplicates = 0
    for b in schedule:
        result = ledger.append([pool[i] for i in b])
        accepted += result.accepted
        duplicates += result.duplicates
        for i, pos in zip(b, result.positions, strict=True):
            if i in first_position:
                assert pos == first_position[i]
            else:
                first_position[i] = pos
                order.append(i)

    recs = [r for r in ledger.iter_all(head0) if r.source == source]
    assert [r.id for r in recs] == [f"n{i}" for i in order]
    assert positions(recs) == list(range(head0 + 1, head0 + len(order) + 1))
    assert accepted == len(order)
    assert duplicates == sum(map(len, schedule)) - len(order)
    for rec in recs:
        assert_recorded_as(rec, pool[int(rec.id[1:])])
    notes = [r for r in recs if r.stream is not None]
    assert [r.stream_version for r in notes] == list(range(1, len(notes) + 1))

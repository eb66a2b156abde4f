"""The demo history: complete, plausible, and idempotent across runs with a later `now`."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from ingest import demo
from store.contract import KNOWN_TYPES, Event
from store.ledger import Ledger, RecordedEvent
from store.migrate import upgrade
from store.timefmt import parse_rfc3339_us

NOW = parse_rfc3339_us("2026-11-26T00:00:00Z")
SINCE = dt.date(2026, 11, 21)
HOUR = 3_600_000_000
RESPONSE_US = {"P0": 15 * 60_000_000, "P1": HOUR, "P2": 4 * HOUR}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ledger, demo.DemoTotals]:
    """A SQLite ledger holding the demo's last five days before NOW."""
    path: Path = tmp_path_factory.mktemp("demo") / "ledger.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    return ledger, demo.load(ledger, SINCE, NOW)


def _all(ledger: Ledger, types: list[str] | None = None) -> list[RecordedEvent]:
    return ledger.read(0, 1_000_000, types=types)


def _series(
    events: list[RecordedEvent],
) -> Iterator[tuple[str, dict[str, str], np.ndarray, np.ndarray]]:
    """(name, labels, ts, values) of every series in every samples event."""
    for ev in events:
        batch = ev.samples
        assert batch is not None
        for j, (name, labels) in enumerate(batch.series):
            mask = batch.series_index == j
            yield name, orjson.loads(labels), batch.ts_us[mask], batch.values[mask]


def test_default_since_is_the_first_day_of_the_previous_month() -> None:
    assert demo.default_since(NOW) == dt.date(2026, 10, 1)
    assert demo.default_since(parse_rfc3339_us("2026-01-15T12:00:00Z")) == dt.date(2025, 12, 1)


def test_load_appends_every_type_and_nothing_outside_the_window(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, totals = loaded
    events = _all(ledger)
    assert totals.accepted == totals.events == len(events)
    assert totals.samples == sum(len(e.samples) for e in events if e.samples is not None)
    # A reopen is rare; this window has none (it is checked on another window below).
    assert {e.type for e in events} == set(KNOWN_TYPES) - {"opsledger.incident.reopened"}
    start = parse_rfc3339_us("2026-11-21T00:00:00Z")
    assert all(start <= e.time_us <= NOW for e in events)
    assert all(e.source.startswith(demo.DEMO_SOURCE_PREFIX + "/") for e in events)
    hours = [e for e in events if e.id.startswith("samples/")]
    assert len(hours) == 5 * 24
    # One event of container samples per finished day.
    days = [e for e in events if e.id.startswith("containers/")]
    assert [e.type for e in days] == ["opsledger.metric.samples"] * 5


def test_a_reopened_incident_appears_in_its_window() -> None:
    now = parse_rfc3339_us("2026-11-13T00:00:00Z")
    types = {e.type for batch in demo.generate(dt.date(2026, 11, 8), now) for e in batch}
    assert "opsledger.incident.reopened" in types


def test_reloading_finds_only_duplicates_and_a_later_now_only_adds(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    first = demo.load(ledger, SINCE, NOW)
    head = ledger.head()

    again = demo.load(ledger, SINCE, NOW)
    assert (again.accepted, again.duplicates) == (0, first.events)

    later = NOW + 24 * HOUR + 30 * 60_000_000  # half an hour into an unfinished hour
    seen: list[tuple[int, int]] = []
    third = demo.load(ledger, SINCE, later, progress=lambda done, total: seen.append((done, total)))
    assert third.duplicates == first.events
    assert third.accepted == third.events - first.events > 0
    assert seen[-1] == (7, 7)
    new = ledger.read(head, 1_000_000)
    assert len(new) == third.accepted
    assert all(NOW < e.time_us <= later for e in new)
    # 24 more complete hours and their day; the half hour after midnight is not emitted yet.
    assert sum(e.id.startswith("samples/") for e in new) == 24
    assert [e.id for e in new if e.id.startswith("containers/")] == [
        f"containers/{demo.CLUSTER}/2026-11-26T00:00:00Z"
    ]


def _digests(since: dt.date, now: int) -> dict[tuple[str, str], bytes]:
    events: list[Event] = [e for batch in demo.generate(since, now) for e in batch]
    return {(e.source, e.id): e.digest for e in events}


def test_content_depends_only_on_the_seed_and_the_slot() -> None:
    short = _digests(SINCE, NOW)
    wide = _digests(dt.date(2026, 11, 19), NOW + 12 * HOUR)
    shared = short.keys() & wide.keys()
    # Only the start-of-window observations (policy, budget, running nodes) are not shared.
    assert len(short) - len(shared) < 60
    assert all(short[k] == wide[k] for k in shared)
    other_seed = {(e.source, e.id): e.digest for b in demo.generate(SINCE, NOW, seed=8) for e in b}
    assert any(other_seed.get(k) != d for k, d in short.items())


def test_batches_are_bounded_and_in_time_order() -> None:
    batches = list(demo.generate(SINCE, NOW))
    assert all(0 < len(b) <= demo.MAX_BATCH for b in batches)
    times = [e.time_us for b in batches for e in b]
    assert times == sorted(times)


def test_samples_are_plausible(loaded: tuple[Ledger, demo.DemoTotals]) -> None:
    ledger, _ = loaded
    series = list(_series(_all(ledger, ["opsledger.metric.samples"])))
    by_key: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    nodes_per_hour: dict[int, set[str]] = defaultdict(set)
    for name, labels, ts, values in series:
        assert np.isfinite(values).all() and (values >= 0).all()
        key = labels.get("node") or f"{labels['namespace']}/{labels.get('persistentvolumeclaim')}"
        by_key[(name, key)].update(zip(ts.tolist(), values.tolist(), strict=True))
        if name == "node_cpu_allocatable_cores":
            nodes_per_hour[int(ts[0]) // HOUR].add(labels["node"])
    assert all(30 <= len(n) <= 60 for n in nodes_per_hour.values())
    for (name, key), points in by_key.items():
        if name.endswith("_usage_cores") and name.startswith("node"):
            alloc = by_key[("node_cpu_allocatable_cores", key)]
            assert all(v <= alloc[t] for t, v in points.items())
        if name == "node_memory_usage_bytes":
            alloc = by_key[("node_memory_allocatable_bytes", key)]
            assert all(v <= alloc[t] for t, v in points.items())
        if name == "pvc_used_bytes":
            cap = by_key[("pvc_capacity_bytes", key)]
            assert all(v <= cap[t] for t, v in points.items())


def test_a_pvc_crosses_85_percent(loaded: tuple[Ledger, demo.DemoTotals]) -> None:
    ledger, _ = loaded
    used: dict[str, dict[int, float]] = defaultdict(dict)
    cap: dict[str, dict[int, float]] = defaultdict(dict)
    for name, labels, ts, values in _series(_all(ledger, ["opsledger.metric.samples"])):
        if name.startswith("pvc_"):
            target = used if name == "pvc_used_bytes" else cap
            points = zip(ts.tolist(), values.tolist(), strict=True)
            target[labels["persistentvolumeclaim"]].update(points)
    crossing = []
    for pvc, samples in used.items():
        fill = [v / cap[pvc][t] for t, v in sorted(samples.items())]
        if min(fill[:12]) < 0.85 < max(fill[-12:]):
            crossing.append(pvc)
    assert "data-kafka-1" in crossing


def test_the_memory_pool_runs_hot_for_over_an_hour(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    usage: dict[int, float] = defaultdict(float)
    alloc: dict[int, float] = defaultdict(float)
    for name, labels, ts, values in _series(_all(ledger, ["opsledger.metric.samples"])):
        if labels.get("nodepool") == demo.HOT_POOL and name.startswith("node_cpu"):
            target = usage if name == "node_cpu_usage_cores" else alloc
            for t, v in zip(ts.tolist(), values.tolist(), strict=True):
                target[t] += v
    hot = [usage[t] / alloc[t] > 0.85 for t in sorted(usage)]
    longest = run = 0
    for flag in hot:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    assert longest >= 13  # above 85 % at 13 consecutive 5-minute samples: a full hour


def test_an_incident_breaches_its_response_target(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    opened: dict[str, tuple[int, str]] = {}
    acked: dict[str, int] = {}
    for ev in _all(ledger, ["opsledger.incident.opened", "opsledger.incident.acknowledged"]):
        assert ev.data is not None
        iid = ev.data["incident_id"]
        if ev.type.endswith("opened"):
            assert ev.cluster == demo.CLUSTER
            opened[iid] = (ev.time_us, ev.data["severity"])
        else:
            acked.setdefault(iid, ev.time_us)
    assert acked.keys() <= opened.keys()
    breaches = [
        iid
        for iid, (t, sev) in opened.items()
        if sev in RESPONSE_US and acked.get(iid, NOW) - t > RESPONSE_US[sev]
    ]
    assert breaches


# -- workloads, node pools, subnets and instance-type cost (issue 12) ---------------------------

CONTAINER_LABELS = {"namespace", "pod", "container", "workload_kind", "workload", "node"}


def _points(
    events: list[RecordedEvent], prefix: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]]:
    """{(name, sorted labels): {ts: value}} of the series whose name starts with `prefix`."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], dict[int, float]] = defaultdict(dict)
    for name, labels, ts, values in _series(events):
        if name.startswith(prefix):
            key = (name, tuple(sorted(labels.items())))
            out[key].update(zip(ts.tolist(), values.tolist(), strict=True))
    return out


def test_container_usage_adds_up_to_the_namespace_usage(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    samples = _all(ledger, ["opsledger.metric.samples"])
    containers = _points(samples, "container_")
    namespaces = _points(samples, "namespace_")
    for resource, container_name in (
        ("cpu", "container_cpu_usage_cores"),
        ("memory", "container_memory_working_set_bytes"),
    ):
        summed: dict[tuple[str, int], float] = defaultdict(float)
        # Where a NotReady node's containers report no usage, the sum is short: skip those.
        flapped: set[tuple[str, int]] = set()
        for (name, labels), points in containers.items():
            ns = dict(labels)["namespace"]
            if name == container_name:
                for t, v in points.items():
                    summed[(ns, t)] += v
            elif name == "container_cpu_requests_cores":
                used = containers.get(("container_cpu_usage_cores", labels), {})
                flapped.update((ns, t) for t in points if t not in used)
        ns_name = f"namespace_{resource}_usage_{'cores' if resource == 'cpu' else 'bytes'}"
        checked = 0
        for (name, labels), points in namespaces.items():
            if name != ns_name:
                continue
            ns = dict(labels)["namespace"]
            for t, v in points.items():
                if t % (15 * 60_000_000) == 0 and (ns, t) not in flapped:
                    assert summed[(ns, t)] == pytest.approx(v, rel=0.05), (ns, t, resource)
                    checked += 1
        # 16 namespaces, 4 quarter hours an hour, 5 days (but a node's flaps).
        assert 0.98 * 16 * 4 * 24 * 5 < checked <= 16 * 4 * 24 * 5


def test_containers_run_on_their_pools_with_steady_requests(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    samples = _all(ledger, ["opsledger.metric.samples"])
    pool_of = {
        dict(labels)["node"]: dict(labels)["nodepool"]
        for (_, labels) in _points(samples, "node_cpu_allocatable")
    }
    nodes_at: dict[int, set[str]] = defaultdict(set)
    reporting: dict[str, set[int]] = defaultdict(set)
    for (_, labels), points in _points(samples, "node_cpu_allocatable").items():
        for t in points:
            nodes_at[t].add(dict(labels)["node"])
            reporting[dict(labels)["node"]].add(t)
    containers = _points(samples, "container_")
    kinds: dict[str, set[str]] = defaultdict(set)
    exporters: dict[int, set[str]] = defaultdict(set)
    for (name, labels), points in containers.items():
        lab = dict(labels)
        assert set(lab) == CONTAINER_LABELS
        assert all(t % (15 * 60_000_000) == 0 for t in points)
        kinds[lab["workload_kind"]].add(lab["workload"])
        if lab["workload_kind"] != "DaemonSet":
            pool = {"ml-inference": "gpu", "search": "memory-optimized"}.get(lab["namespace"])
            if pool is not None:
                assert pool_of[lab["node"]] == pool
        elif name == "container_cpu_usage_cores":
            for t in points:
                exporters[t].add(lab["node"])
        if "requests" in name or "limits" in name:
            # A pod's requests change only with a deploy (a new pod, or a new StatefulSet spec).
            assert len(set(points.values())) <= 2, (name, lab)
        if name == "container_cpu_usage_cores":
            # Usage comes from the kubelet of a node that reports then.
            assert set(points) <= reporting[lab["node"]], (lab["pod"], lab["node"])
    assert set(kinds) == {"Deployment", "StatefulSet", "DaemonSet", "CronJob"}
    # The DaemonSet runs on every node that reports at the quarter hour.
    assert exporters and all(exporters[t] == nodes_at[t] for t in exporters)


def test_the_workloads_show_over_under_and_missing_requests(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    containers = _points(_all(ledger, ["opsledger.metric.samples"]), "container_")
    usage: dict[str, list[float]] = defaultdict(list)
    request: dict[str, list[float]] = defaultdict(list)
    for (name, labels), points in containers.items():
        key = dict(labels)["container"]
        if name == "container_cpu_usage_cores":
            usage[key].extend(points.values())
        elif name == "container_cpu_requests_cores":
            request[key].extend(points.values())
    # Most teams ask for about twice what they use; one consumer asks for too little.
    assert np.mean(request["payments-api"]) > 1.6 * np.percentile(usage["payments-api"], 95)
    assert np.mean(request["orders-consumer"]) < np.percentile(usage["orders-consumer"], 95)
    assert "grafana-sc-dashboard" in usage and "grafana-sc-dashboard" not in request


def _generated(since: dt.date, now: int) -> list[Event]:
    return [e for batch in demo.generate(since, now) for e in batch]


def test_nodepools_have_limits_and_the_gpu_limit_is_raised_once_a_month() -> None:
    events = _generated(dt.date(2026, 11, 14), parse_rfc3339_us("2026-11-17T00:00:00Z"))
    pools = [e for e in events if e.type == "opsledger.k8s.nodepool.status"]
    assert all(e.cluster == demo.CLUSTER and e.data is not None for e in pools)
    limits: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for e in pools:
        assert e.data is not None
        name = e.data["nodepool"]
        assert e.data["resources"]["nodes"] > 0
        if name in ("general-purpose", "system"):
            assert "limits" not in e.data  # EKS Auto Mode's built-in pools
        else:
            limits[name].append((e.time_us, e.data["limits"]["cpu_cores"]))
    assert set(limits) == {"gpu", "memory-optimized"}
    assert {v for _, v in limits["memory-optimized"]} == {96.0}
    gpu = sorted(limits["gpu"])
    raise_at = parse_rfc3339_us("2026-11-15T16:00:00Z")
    assert {v for t, v in gpu if t < raise_at} == {32.0}
    assert {v for t, v in gpu if t >= raise_at} == {40.0}


def test_subnets_drain_with_the_pods_and_one_zone_is_tight(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    subnets = [e.data for e in _all(ledger, ["opsledger.network.subnet.status"])]
    assert len(subnets) == 3 * 4 * 5 + 3  # every 6 hours, the last one at NOW
    by_zone: dict[str, list[int]] = defaultdict(list)
    for d in subnets:
        assert d is not None and 0 <= d["available_ips"] <= d["total_ips"]
        by_zone[d["zone"]].append(d["available_ips"])
    assert len(by_zone) == 3
    tight = [z for z, free in by_zone.items() if min(free) == 0]
    assert tight == ["us-gov-west-1c"]
    # The others have room, and less of it when the cluster is busy.
    assert all(
        min(free) > 500 and max(free) > min(free) for z, free in by_zone.items() if z not in tight
    )


def test_instance_type_cost_is_the_node_hours_at_their_price(
    loaded: tuple[Ledger, demo.DemoTotals],
) -> None:
    ledger, _ = loaded
    by_type = [e.data for e in _all(ledger, ["opsledger.cost.instance_type.daily"])]
    ec2 = {
        e.data["date"]: e.data["amount"]
        for e in _all(ledger, ["opsledger.cost.daily"])
        if e.data is not None and e.data["service"] == "AmazonEC2"
    }
    node_hours: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, labels, ts, _ in _series(_all(ledger, ["opsledger.metric.samples"])):
        if name == "node_cpu_allocatable_cores":
            for t in ts.tolist():
                day = dt.datetime.fromtimestamp(t / 1e6, dt.UTC).date().isoformat()
                node_hours[day].add((labels["node"], t // HOUR))
    days: dict[str, list[dict[str, object]]] = defaultdict(list)
    for d in by_type:
        assert d is not None and d["currency"] == "USD"
        days[d["date"]].append(d)
    assert sorted(days) == sorted(ec2) and len(days) == 5  # each finished day
    for day, rows in days.items():
        hours = sum(float(r["usage_hours"]) for r in rows)  # type: ignore[arg-type]
        assert hours == len(node_hours[day])
        compute = sum(float(r["amount"]) for r in rows)  # type: ignore[arg-type]
        # The EC2 line is the instances plus the EBS volumes.
        assert 0 < ec2[day] - compute < 0.1 * ec2[day]
        assert {r["instance_type"] for r in rows} >= {"g5.2xlarge", "m6i.xlarge"}

"""`GET /v1/capacity/headroom`'s requests-based fields, zone loss and NodePool limit date."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.beds import Bed, make_bed
from support.containers import GIB, Samples, append, container_labels, node_status, nodepool_status

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 5
AS_OF = "2026-10-06T00:00:00Z"
# node → (node pool, zone as labelled, cpu cores); n3's node status moves it to zone z3.
NODES = {
    "n1": ("p1", "z1", 8.0),
    "n2": ("p1", "z2", 8.0),
    "n3": ("p2", "z1", 16.0),
    "n4": ("p2", None, 2.0),
}


def at(day: int, hour: int) -> datetime:
    return T0 + timedelta(days=day, hours=hour)


def build(bed: Bed) -> None:
    """Five days of hourly node and container samples in c1; c2 has only namespace requests."""
    s = Samples()
    for day in range(DAYS):
        for hour in range(24):
            t = at(day, hour)
            for node, (pool, zone, cpu) in NODES.items():
                s.node(node, t, cpu, cpu * 4 * GIB, pool, zone)
            pods = [
                ("a-0", "n1", 2 + 0.5 * day),
                ("b-0", "n2", 3 + 0.25 * day),
                ("c-0", "n3", 4.0),
                ("d-0", "n9", 0.5),  # a node nothing describes: in the cluster, in no pool
            ]
            if hour % 4 == 0:
                pods.append(("b-extra", "n2", 1.0))
            for pod, node, cpu in pods:
                labels = container_labels("web", pod, "app", "Deployment", pod[0], node)
                s.container(labels, t, cpu_usage=cpu / 2, cpu_request=cpu, memory_request=cpu * GIB)
            # A container without requests counts in no sum.
            s.container(container_labels("web", "e-0", "app", node="n1"), t, cpu_usage=0.1)
            # The namespace's requests (the existing cluster basis), other figures on purpose.
            s.add("namespace_cpu_requests_cores", {"namespace": "web"}, t, 1.0)
            s.add("namespace_memory_requests_bytes", {"namespace": "web"}, t, GIB)
    other = Samples()
    for day in range(DAYS):
        t = at(day, 12)
        other.node("m1", t, 10.0, 40 * GIB, "general", "z1")
        other.add("namespace_cpu_requests_cores", {"namespace": "web"}, t, 2.0 + day)
    append(
        bed.ledger,
        [
            s.event("c1", "c1"),
            other.event("c2", "c2"),
            node_status("st-n3", at(0, 0), "c1", "n3", nodepool="p2", zone="z3"),
            nodepool_status(
                "np-p1", at(0, 0), "c1", "p1", limits={"cpu_cores": 20, "memory_bytes": 64 * GIB}
            ),
            nodepool_status("np-p2", at(0, 0), "c1", "p2", limits={"cpu_cores": 100}),
            nodepool_status("np-p2-gone", at(3, 12), "c1", "p2", deleted=True),
        ],
    )
    bed.caught_up()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        build(b)
        yield b


def headroom(bed: Bed, as_of: str = AS_OF, **params: Any) -> dict[tuple[Any, ...], Any]:
    r = bed.get("/v1/capacity/headroom", as_of=as_of, **params)
    assert r.status_code == 200, r.text
    return {(i["cluster"], i["nodepool"], i["resource"]): i for i in r.json()["items"]}


def trend(values: list[float]) -> tuple[float, float]:
    """(level, slope) of daily values as the conventions define them."""
    slope = float(np.polyfit(np.arange(len(values)), values, 1)[0]) if len(values) >= 3 else 0.0
    return values[-1], slope


def test_pool_commitment_by_requests(bed: Bed) -> None:
    items = headroom(bed)
    p1 = items[("c1", "p1", "cpu")]
    # Per day: a-0 + b-0 + b-extra in one timestamp of four (a mean of 0.25).
    daily = [2 + 0.5 * d + 3 + 0.25 * d + 0.25 for d in range(DAYS)]
    level, slope = trend(daily)
    assert p1["requests"] == pytest.approx(level, rel=1e-12)
    assert p1["requests_growth_per_day"] == pytest.approx(slope, rel=1e-12)
    assert p1["allocatable"] == 16.0 and p1["basis"] == "usage"
    assert p1["commitment_by_requests"] == pytest.approx(level / 16.0, rel=1e-12)
    days = (0.85 * 16 - level) / slope
    assert p1["days_to_85_by_requests"] == pytest.approx(days, rel=1e-9)
    assert p1["eta_85_by_requests"] == (datetime(2026, 10, 6) + timedelta(days=days)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert p1["days_to_85_by_requests_n_minus_1"] == 0.0  # 85 % of one 8-core node is passed
    assert p1["eta_85_by_requests_n_minus_1"] == AS_OF
    mem = items[("c1", "p1", "memory")]
    assert mem["requests"] == pytest.approx(level * GIB, rel=1e-12)
    # The cluster: every row, n9's pod too (its node is in no pool).
    cluster = items[("c1", None, "cpu")]
    assert cluster["requests"] == pytest.approx(level + 4.0 + 0.5, rel=1e-12)
    assert cluster["basis"] == "requests" and cluster["level"] == 1.0  # the namespaces'
    assert cluster["commitment_by_requests"] == pytest.approx((level + 4.5) / 34.0, rel=1e-12)
    # A cluster without container metrics: its namespace requests.
    c2 = items[("c2", None, "cpu")]
    assert c2["requests"] == c2["level"] == pytest.approx(6.0)
    assert c2["commitment_by_requests"] == c2["commitment"]
    assert c2["requests_growth_per_day"] == pytest.approx(1.0)
    assert items[("c2", "general", "cpu")]["requests"] is None
    assert items[("c2", "general", "cpu")]["days_to_85_by_requests"] is None


def test_zone_loss(bed: Bed) -> None:
    items = headroom(bed)
    p1 = items[("c1", "p1", "cpu")]["zone_loss"]
    level = 2 + 0.5 * 4 + 3 + 0.25 * 4 + 0.25
    assert p1 == {
        "zones": {"z1": 8.0, "z2": 8.0},
        "largest_zone": "z1",  # a tie goes to the first name
        "largest_zone_allocatable": 8.0,
        "allocatable_without_largest_zone": 8.0,
        "commitment_without_largest_zone": pytest.approx(level / 8.0, rel=1e-12),
        "survives": False,
    }
    whole = items[("c1", None, "cpu")]["zone_loss"]
    # n3 is in z3 by its node status (its labels say z1); n4 has no zone: never lost.
    assert whole["zones"] == {"z1": 8.0, "z2": 8.0, "z3": 16.0, "null": 2.0}
    assert whole["largest_zone"] == "z3"
    assert whole["allocatable_without_largest_zone"] == 18.0
    assert whole["commitment_without_largest_zone"] == pytest.approx(
        (level + 4.5) / 18.0, rel=1e-12
    )
    assert whole["survives"] is True
    c2 = items[("c2", "general", "cpu")]["zone_loss"]
    assert c2["allocatable_without_largest_zone"] == 0.0
    assert c2["commitment_without_largest_zone"] is None and c2["survives"] is None


def test_nodepool_limit_date(bed: Bed) -> None:
    items = headroom(bed)
    level = 2 + 0.5 * 4 + 3 + 0.25 * 4 + 0.25
    limit = items[("c1", "p1", "cpu")]["nodepool_limit"]
    days = (20 - level) / 0.75
    assert limit["limit"] == 20.0
    assert limit["days_to_limit"] == pytest.approx(days, rel=1e-9)
    assert limit["eta_limit"] == (datetime(2026, 10, 6) + timedelta(days=days)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    mem = items[("c1", "p1", "memory")]["nodepool_limit"]
    assert mem["limit"] == 64 * GIB
    assert mem["days_to_limit"] == pytest.approx((64 - level) / 0.75, rel=1e-9)
    assert items[("c1", None, "cpu")]["nodepool_limit"] is None  # clusters have none


def test_a_deleted_nodepool_has_no_limit(bed: Bed) -> None:
    # p2's NodePool was deleted on day 3 at noon: at as_of it has none.
    assert headroom(bed)[("c1", "p2", "cpu")]["nodepool_limit"] is None
    before = headroom(bed, as_of="2026-10-04T06:00:00Z")[("c1", "p2", "cpu")]
    assert before["nodepool_limit"]["limit"] == 100.0
    # p2's memory has no limit, p1's requests of 4 c-0 cores stay flat: never.
    assert before["nodepool_limit"]["days_to_limit"] is None
    assert (
        headroom(bed, as_of="2026-10-04T06:00:00Z")[("c1", "p2", "memory")]["nodepool_limit"]
        is None
    )


def test_the_cluster_filter_and_the_existing_fields(bed: Bed) -> None:
    only = headroom(bed, cluster="c2")
    assert {k[0] for k in only} == {"c2"}
    assert only == {k: v for k, v in headroom(bed).items() if k[0] == "c2"}
    p1 = headroom(bed)[("c1", "p1", "cpu")]
    for field in (
        "basis", "commitment", "utilization", "level", "allocatable", "largest_node_allocatable",
        "growth_per_day", "days_to_85", "eta_85", "days_to_85_n_minus_1", "eta_85_n_minus_1",
    ):  # fmt: skip
        assert field in p1
    assert p1["level"] == pytest.approx(8.0)  # usage: half of every node's cores

"""`GET /v1/network/ip-headroom`: days until each zone's subnets run out at the pod trend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from support.beds import Bed, make_bed
from support.containers import GIB, Samples, append, container_labels, subnet_status

T0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 5
AS_OF = "2026-10-06T00:00:00Z"


def at(day: int, hour: int = 0) -> datetime:
    return T0 + timedelta(days=day, hours=hour)


def subnet(event_id: str, t: datetime, sid: str, zone: str, available: int, **kw: object):
    return subnet_status(
        event_id, t, "c1", sid, zone=zone, cidr="10.0.0.0/24", available_ips=available,
        total_ips=4091, vpc_id="vpc-1", **kw,
    )  # fmt: skip


def build(bed: Bed) -> None:
    """z1: 10 + 2·day pods (one more at half the hours); z2: 5 pods; z3: subnets, no pods."""
    s = Samples()
    for day in range(DAYS):
        for hour in range(24):
            t = at(day, hour)
            s.node("n1", t, 8, 32 * GIB, "p1", "z1").node("n2", t, 8, 32 * GIB, "p1", "z2")
            pods = [(f"a-{k}", "n1") for k in range(10 + 2 * day)]
            pods += [(f"b-{k}", "n2") for k in range(5)]
            if hour % 2:
                pods.append(("extra", "n1"))
            for pod, node in pods:
                for container in ("app", "sidecar"):  # two containers, one pod (one IP)
                    labels = container_labels("web", pod, container, "Deployment", pod[0], node)
                    s.container(labels, t, cpu_usage=0.1, cpu_request=0.2)
            # A pod with requests but no usage sample is not counted.
            lone = container_labels("web", "pending-0", "app", node="n1")
            s.container(lone, t, cpu_request=0.1)
    append(
        bed.ledger,
        [
            s.event("c1", "c1"),
            subnet("s1-a", at(0), "subnet-1", "z1", 100),
            subnet("s2-a", at(0), "subnet-2", "z1", 300),
            subnet("s3-a", at(0), "subnet-3", "z2", 50),
            subnet("s6-a", at(0), "subnet-6", "z2", 0),
            subnet("s4-a", at(0), "subnet-4", "z3", 500),
            subnet("s5-a", at(0), "subnet-5", "z2", 1000),
            subnet_status("s5-b", at(2), "c1", "subnet-5", deleted=True),
            subnet("s1-b", at(4), "subnet-1", "z1", 80),
            subnet("s1-c", at(6), "subnet-1", "z1", 10),  # after as_of
        ],
    )
    bed.caught_up()


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    with make_bed(tmp_path, projection_interval_seconds=3600) as b:
        build(b)
        yield b


def test_days_to_exhaustion_per_zone_and_subnet(bed: Bed) -> None:
    r = bed.get("/v1/network/ip-headroom", as_of=AS_OF, cluster="c1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["as_of"] == AS_OF
    zones = {z["zone"]: z for z in body["zones"]}
    assert list(zones) == ["z1", "z2", "z3"]
    daily = [10 + 2 * d + 0.5 for d in range(DAYS)]
    slope = float(np.polyfit(np.arange(DAYS), daily, 1)[0])
    z1 = zones["z1"]
    assert z1["subnets"] == ["subnet-1", "subnet-2"]
    assert z1["available_ips"] == 380  # subnet-1's latest before as_of: 80
    assert z1["pods"] == pytest.approx(daily[-1], rel=1e-12)
    assert z1["pods_per_day"] == pytest.approx(slope, rel=1e-12)
    days = 380 / slope
    assert z1["days_to_exhaustion"] == pytest.approx(days, rel=1e-9)
    eta = (datetime(2026, 10, 6) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert z1["eta"] == eta
    # z2: a flat pod count never exhausts; subnet-5 is deleted and left out.
    assert zones["z2"]["subnets"] == ["subnet-3", "subnet-6"]
    assert zones["z2"]["pods"] == 5.0 and zones["z2"]["pods_per_day"] == pytest.approx(0.0)
    assert zones["z2"]["days_to_exhaustion"] is None and zones["z2"]["eta"] is None
    # z3: subnets but no pods.
    assert zones["z3"]["pods"] is None and zones["z3"]["pods_per_day"] is None
    assert zones["z3"]["days_to_exhaustion"] is None
    subnets = {s["subnet_id"]: s for s in body["subnets"]}
    assert set(subnets) == {"subnet-1", "subnet-2", "subnet-3", "subnet-4", "subnet-6"}
    for sid in ("subnet-1", "subnet-2"):  # a zone's subnets drain together
        assert subnets[sid]["days_to_exhaustion"] == pytest.approx(days, rel=1e-9)
        assert subnets[sid]["eta"] == eta
    assert subnets["subnet-1"]["available_ips"] == 80
    assert subnets["subnet-1"]["observed_at"] == "2026-10-05T00:00:00Z"
    assert subnets["subnet-6"]["days_to_exhaustion"] == 0.0 and subnets["subnet-6"]["eta"] == AS_OF
    assert subnets["subnet-3"]["days_to_exhaustion"] is None
    assert subnets["subnet-2"] == {
        "cluster": "c1",
        "subnet_id": "subnet-2",
        "vpc_id": "vpc-1",
        "zone": "z1",
        "cidr": "10.0.0.0/24",
        "available_ips": 300,
        "total_ips": 4091,
        "days_to_exhaustion": pytest.approx(days, rel=1e-9),
        "eta": eta,
        "observed_at": "2026-10-01T00:00:00Z",
    }


def test_a_subnet_that_disappears_and_other_clusters(bed: Bed) -> None:
    # Before subnet-5 was deleted it counts in z2.
    body = bed.get("/v1/network/ip-headroom", as_of="2026-10-02T00:00:00Z").json()
    z2 = next(z for z in body["zones"] if z["zone"] == "z2")
    assert z2["available_ips"] == 1050 and "subnet-5" in z2["subnets"]
    assert bed.get("/v1/network/ip-headroom", as_of=AS_OF, cluster="c9").json()["zones"] == []
    assert bed.get("/v1/network/ip-headroom", as_of="2026-09-01T00:00:00Z").json() == {
        "as_of": "2026-09-01T00:00:00Z",
        "zones": [],
        "subnets": [],
    }


def test_bad_input_and_keys(bed: Bed) -> None:
    r = bed.get("/v1/network/ip-headroom", as_of="yesterday")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.as_of"
    r = bed.get("/v1/network/ip-headroom", cluster="no such cluster")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.cluster"
    assert bed.client.get("/v1/network/ip-headroom").status_code == 401
    assert bed.get("/v1/network/ip-headroom", "query").status_code == 200

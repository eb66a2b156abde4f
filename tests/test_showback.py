"""Showback: a hand-made cluster through CloudEvents, its costs worked out by hand.

Cluster `prod`, two hours of 2026-10-14 (10:00 and 11:00 UTC). Nodes report every 15
minutes, containers every 30 (two container timestamps an hour: M = 2).

| node   | pool    | instance type | price (per hour)                    | cores | GiB |
|--------|---------|---------------|-------------------------------------|-------|-----|
| node-a | general | m6i.xlarge    | 0.20 Cost Explorer (the table: 0.5)  | 4     | 16  |
| node-b | memory  | r6i.large     | 0.126 price table (10:00 hour only)  | 2     | 16  |
| node-c | arm     | c7g.large     | none                                 | 2     | 4   |
| node-d | spot    | m6i.xlarge    | 0.20, but no allocatable samples     |       |     |

With weights 1 (core-hour) and 0.25 (GiB-hour): node-a s = 4 / (4 + 4) = 0.5, so 0.025 per
core-hour and 0.00625 per GiB-hour; node-b s = 2 / (2 + 4) = 1/3, so 0.021 and 0.00525.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.beds import Bed, make_bed
from support.payloads import cloudevent, sample
from support.projections import assert_rebuild_equals_catch_up

from analytics.cost.prices import UnitPrices, cluster_unit_prices, instance_prices, split
from analytics.cost.projection import CostProjection
from analytics.cost.savings import monthly_savings, priced_rightsizing
from analytics.cost.showback import showback
from store.prices import PriceTable

GIB = 2**30
CLUSTER = "prod"
T0 = datetime(2026, 10, 14, 10)
NOW = datetime(2026, 12, 1)
W = (1.0, 0.25)
TABLE = {"currency": "USD", "instance_types": {"m6i.xlarge": 0.5, "r6i.large": 0.126}}
NODES = {
    # node: (pool, instance type, cores, GiB, hours present)
    "node-a": ("general", "m6i.xlarge", 4.0, 16.0, (0, 1)),
    "node-b": ("memory", "r6i.large", 2.0, 16.0, (0,)),
    "node-c": ("arm", "c7g.large", 2.0, 4.0, (0, 1)),
    "node-d": ("spot", "m6i.xlarge", 4.0, 16.0, ()),
}
# (namespace, pod, container, kind, workload, node, cpu req, cpu use, mem req GiB, mem use GiB,
#  (hour, half-hour) slots)
CONTAINERS = [
    ("payments", "api-1", "app", "Deployment", "api", "node-a", 1.0, 0.5, 2.0, 3.0,
     ((0, 0), (0, 1), (1, 0), (1, 1))),
    ("shop", "web-0", "nginx", "StatefulSet", "web", "node-a", 2.0, None, 4.0, None, ((0, 0),)),
    ("shop", "db-0", "pg", "StatefulSet", "db", "node-b", 1.0, 0.25, 8.0, 1.0,
     ((0, 0), (0, 1))),
    ("batch", "job-x-abc", "run", "Job", "job-x", "node-c", 1.0, 1.0, 1.0, 1.0, ((0, 0),)),
    ("ghost", "ghost-pod", "main", None, None, "node-d", 0.5, 0.5, 1.0, 1.0, ((1, 0),)),
    ("orphan", "lost-1", "main", "Deployment", "lost", None, 0.5, 0.5, 1.0, 1.0, ((1, 1),)),
]  # fmt: skip

_ids = iter(range(10**6))


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_status(node: str) -> dict[str, Any]:
    pool, itype, cores, gib, _ = NODES[node]
    data = {
        "node": node,
        "ready": True,
        "nodepool": pool,
        "zone": "eu-west-1a",
        "instance_type": itype,
        "allocatable": {"cpu_cores": cores, "memory_bytes": int(gib * GIB), "pods": 110},
    }
    return cloudevent(
        "opsledger.k8s.node.status", data, id=f"ns-{next(_ids)}", time="2026-10-01T00:00:00Z",
        cluster=CLUSTER,
    )  # fmt: skip


def node_samples() -> list[dict[str, Any]]:
    out = []
    for node, (pool, _, cores, gib, hours) in NODES.items():
        labels = {"node": node, "nodepool": pool, "zone": "eu-west-1a"}
        for h in hours:
            for q in range(4):
                at = rfc(T0 + timedelta(hours=h, minutes=15 * q))
                out += [
                    sample("node_cpu_allocatable_cores", labels, at, cores),
                    sample("node_memory_allocatable_bytes", labels, at, gib * GIB),
                    sample("node_cpu_usage_cores", labels, at, cores / 2),
                ]
    return out


def container_samples() -> list[dict[str, Any]]:
    out = []
    for ns, pod, container, kind, workload, node, cr, cu, mr, mu, slots in CONTAINERS:
        labels = {"namespace": ns, "pod": pod, "container": container}
        if kind is not None:
            labels |= {"workload_kind": kind, "workload": workload}
        if node is not None:
            labels["node"] = node
        for h, half in slots:
            at = rfc(T0 + timedelta(hours=h, minutes=30 * half))
            for name, value in (
                ("container_cpu_requests_cores", cr),
                ("container_cpu_usage_cores", cu),
                ("container_memory_requests_bytes", mr * GIB),
                ("container_memory_working_set_bytes", None if mu is None else mu * GIB),
            ):
                if value is not None:
                    out.append(sample(name, labels, at, value))
    return out


def instance_day(day: str, itype: str, amount: float, hours: float) -> dict[str, Any]:
    data = {
        "date": day, "instance_type": itype, "amount": amount, "usage_hours": hours,
        "currency": "USD",
    }  # fmt: skip
    return cloudevent(
        "opsledger.cost.instance_type.daily", data, id=f"ce-{next(_ids)}", cluster=None
    )


def history() -> list[list[dict[str, Any]]]:
    """The CloudEvents, in batches posted one after the other."""
    samples = [*node_samples(), *container_samples()]
    return [
        [node_status(n) for n in NODES],
        [
            cloudevent(
                "opsledger.metric.samples",
                {"samples": samples},
                id="prom-1",
                time="2026-10-14T12:00:00Z",
                cluster=CLUSTER,
            )
        ],
        [
            # Settled days at T = 2026-11-01: Oct 1 .. Oct 30: (10 + 9.2) / (50 + 46) = 0.2.
            instance_day("2026-10-05", "m6i.xlarge", 10.0, 50.0),
            instance_day("2026-10-06", "m6i.xlarge", 50.0, 46.0),
            instance_day("2026-09-30", "m6i.xlarge", 999.0, 1.0),  # before the settled days
            instance_day("2026-10-31", "m6i.xlarge", 999.0, 1.0),  # not settled yet
            instance_day("2026-10-07", "c7g.large", 5.0, 0.0),  # no usage hours: no price
        ],
        [instance_day("2026-10-06", "m6i.xlarge", 9.2, 46.0)],  # restated: the last one wins
    ]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("showback")
    prices = tmp / "prices.json"
    prices.write_text(json.dumps(TABLE), encoding="utf-8")
    with make_bed(tmp, projection_interval_seconds=3600, price_table_file=prices) as b:
        for batch in history():
            r = b.post_events(batch)
            assert r.status_code == 200, r.text
        b.caught_up()
        yield b


def table() -> PriceTable:
    return PriceTable.model_validate(TABLE)


def run(bed: Bed, by: str, weights: tuple[float, float] = W, **kw: Any) -> dict[str, Any]:
    con = bed.app.state.projector.model.cursor()
    return showback(con, "2026-10", by, NOW, table(), *weights, **kw)  # type: ignore[arg-type]


def items(body: dict[str, Any], key: str = "namespace") -> dict[Any, dict[str, Any]]:
    return {("(idle)" if i["idle"] else i[key]): i for i in body["items"]}


# Hand-worked figures (see the module docstring): cost per (namespace) as (cpu, memory).
PAYMENTS = (2 * 0.025, 2 * 3 * 0.00625)  # 1 core and 3 GiB (usage above request), two hours
WEB = (2 / 2 * 0.025, 4 / 2 * 0.00625)  # one sample of the two in hour 10: half an hour
DB = (1 * 0.021, 8 * 0.00525)  # request above usage, the whole hour
TOTAL = 0.2 * 2 + 0.126  # node-a two hours, node-b one; node-c unpriced, node-d never present
CPU_PARTS = 0.1 * 2 + 0.042
MEM_PARTS = 0.1 * 2 + 0.084


def test_by_namespace_exact_figures_and_idle(bed: Bed) -> None:
    body = run(bed, "namespace")
    got = items(body)
    assert body["month"] == "2026-10" and body["as_of"] == "2026-11-01T00:00:00Z"
    assert body["currency"] == "USD" and body["by"] == "namespace"
    pay, shop, idle = got["payments"], got["shop"], got["(idle)"]
    assert pay["cpu_cost"] == pytest.approx(PAYMENTS[0])
    assert pay["memory_cost"] == pytest.approx(PAYMENTS[1])
    assert pay["cost"] == pytest.approx(sum(PAYMENTS)) and pay["reason"] is None
    assert shop["cpu_cost"] == pytest.approx(WEB[0] + DB[0])
    assert shop["memory_cost"] == pytest.approx(WEB[1] + DB[1])
    assert shop["cost"] == pytest.approx(0.1005)
    attributed = sum(PAYMENTS) + sum(WEB) + sum(DB)
    assert idle["idle"] is True and idle["namespace"] is None and idle["cluster"] == CLUSTER
    assert idle["cost"] == pytest.approx(TOTAL - attributed) == pytest.approx(0.338)
    assert idle["cpu_cost"] == pytest.approx(CPU_PARTS - PAYMENTS[0] - WEB[0] - DB[0])
    assert idle["memory_cost"] == pytest.approx(MEM_PARTS - PAYMENTS[1] - WEB[1] - DB[1])
    assert pay["share"] == pytest.approx(pay["cost"] / TOTAL)
    assert idle["share"] == pytest.approx(0.338 / TOTAL)
    [totals] = body["totals"]
    assert totals["cluster"] == CLUSTER and totals["currency"] == "USD"
    assert totals["cost"] == pytest.approx(TOTAL)
    assert totals["unpriced"] == [
        {
            "node": "node-c",
            "instance_type": "c7g.large",
            "reason": "no Cost Explorer usage and no price-table entry for c7g.large",
        }
    ]
    # Sorted by cost, the uncostable last.
    order = [("(idle)" if i["idle"] else i["namespace"]) for i in body["items"]]
    assert order[:3] == ["(idle)", "shop", "payments"]
    assert set(order[3:]) == {"batch", "ghost", "orphan"}


def test_items_that_cannot_be_costed_say_why(bed: Bed) -> None:
    got = items(run(bed, "namespace"))
    for ns in ("batch", "ghost", "orphan"):
        item = got[ns]
        assert item["cost"] is None and item["cpu_cost"] is None and item["memory_cost"] is None
        assert item["share"] is None
    assert "node node-c is unpriced" in got["batch"]["reason"]
    assert "no price-table entry for c7g.large" in got["batch"]["reason"]
    assert "node-d has no allocatable samples" in got["ghost"]["reason"]
    assert "without a node label" in got["orphan"]["reason"]
    assert got["batch"]["reason"].startswith("1 container sample(s) not costed: ")


def test_by_nodepool(bed: Bed) -> None:
    got = items(run(bed, "nodepool"), "nodepool")
    assert got["general"]["cost"] == pytest.approx(sum(PAYMENTS) + sum(WEB))
    assert got["memory"]["cost"] == pytest.approx(sum(DB))
    assert got["arm"]["cost"] is None and "unpriced" in got["arm"]["reason"]
    assert got["spot"]["cost"] is None
    assert got[None]["cost"] is None  # the sample without a node label has no pool
    assert got["(idle)"]["cost"] == pytest.approx(0.338)


def test_by_workload(bed: Bed) -> None:
    body = run(bed, "workload")
    got = {(i["namespace"], i["workload_kind"], i["workload"]): i for i in body["items"]}
    assert got[("payments", "Deployment", "api")]["cost"] == pytest.approx(sum(PAYMENTS))
    assert got[("shop", "StatefulSet", "web")]["cost"] == pytest.approx(sum(WEB))
    assert got[("shop", "StatefulSet", "db")]["cost"] == pytest.approx(sum(DB))
    # No owner labels: the pod is its own workload.
    assert got[("ghost", "Pod", "ghost-pod")]["cost"] is None
    assert got[(None, None, None)]["idle"] is True


def test_cluster_filter(bed: Bed) -> None:
    assert len(run(bed, "namespace", cluster=CLUSTER)["items"]) == 6
    body = run(bed, "namespace", cluster="other")
    assert body["items"] == [] and body["totals"] == []


def test_default_weights_split_like_opencost(bed: Bed) -> None:
    w_cpu, w_mem = 0.031611, 0.004237
    got = items(run(bed, "namespace", (w_cpu, w_mem)))
    cpu_a, mem_a = split(0.2, 4, 16, w_cpu, w_mem)
    assert cpu_a == pytest.approx(0.2 * (4 * w_cpu / (4 * w_cpu + 16 * w_mem)) / 4)
    assert got["payments"]["cost"] == pytest.approx(2 * (1 * cpu_a + 3 * mem_a))
    assert got["(idle)"]["cost"] + got["payments"]["cost"] + got["shop"]["cost"] == (
        pytest.approx(TOTAL)
    )


def test_cost_explorer_wins_over_the_price_table(bed: Bed) -> None:
    con = bed.app.state.projector.model.cursor()
    at = datetime(2026, 11, 1)  # showback's T for October
    got = instance_prices(con, ["m6i.xlarge", "r6i.large", "c7g.large"], at, table())
    assert got["m6i.xlarge"].hourly == pytest.approx(0.2)
    assert got["m6i.xlarge"].source == "cost_explorer"
    assert got["r6i.large"].hourly == 0.126 and got["r6i.large"].source == "price_table"
    assert got["c7g.large"].hourly is None
    # Before any settled Cost Explorer day, the table's price applies.
    early = instance_prices(con, ["m6i.xlarge"], datetime(2026, 9, 20), table())
    assert early["m6i.xlarge"].hourly == 0.5 and early["m6i.xlarge"].source == "price_table"
    # Without a table: unknown, with the reason.
    none = instance_prices(con, ["r6i.large"], at, None)["r6i.large"]
    assert none.hourly is None
    assert none.reason == "no Cost Explorer usage and no price-table entry for r6i.large"


def test_cluster_unit_prices(bed: Bed) -> None:
    con = bed.app.state.projector.model.cursor()
    start, end = datetime(2026, 10, 14), datetime(2026, 11, 1)
    got = cluster_unit_prices(con, CLUSTER, start, end, table(), *W)
    # Σ CPU parts ÷ Σ core-hours of the priced node-hours (node-a twice, node-b once).
    assert got.cpu_core_hour == pytest.approx(CPU_PARTS / (4 + 4 + 2))
    assert got.memory_gib_hour == pytest.approx(MEM_PARTS / (16 + 16 + 16))
    assert got.currency == "USD" and got.reason is None
    empty = cluster_unit_prices(con, "other", start, end, table(), *W)
    assert empty.cpu_core_hour is None and empty.reason


def test_priced_rightsizing_adds_monthly_savings(bed: Bed) -> None:
    con = bed.app.state.projector.model.cursor()
    end, span = datetime(2026, 11, 1), timedelta(days=20)
    got = priced_rightsizing(con, end, span, table=table(), w_cpu=W[0], w_mem=W[1])
    unit = cluster_unit_prices(con, CLUSTER, end - span, end, table(), *W)
    api = next(i for i in got if i["workload"] == "api")
    # CPU: request 1, p95 of usage 0.5: 0.5 cores to reclaim; memory: request 2 GiB, peak 3
    # GiB + 15 %: 1.45 GiB short (negative).
    assert api["cpu_reclaim_cores"] == pytest.approx(0.5)
    assert api["memory_reclaim_bytes"] == pytest.approx((2 - 3 * 1.15) * GIB)
    want = (0.5 * unit.cpu_core_hour - 1.45 * unit.memory_gib_hour) * 730  # type: ignore[operator]
    assert api["monthly_savings"] == pytest.approx(want) and api["currency"] == "USD"
    # Sorted by savings, the unknown last.
    known = [i["monthly_savings"] for i in got if i["monthly_savings"] is not None]
    assert known == sorted(known, reverse=True)
    assert [i["monthly_savings"] for i in got[len(known) :]] == [None] * (len(got) - len(known))
    # A null reclaim counts 0 when the other is known; unknown prices give no money.
    unknown = UnitPrices(None, None, None, "no price")
    half = {"cpu_reclaim_cores": None, "memory_reclaim_bytes": float(GIB)}
    assert monthly_savings(half, unit) == pytest.approx(unit.memory_gib_hour * 730)  # type: ignore[operator]
    assert monthly_savings(half, unknown) is None
    assert monthly_savings({"cpu_reclaim_cores": None, "memory_reclaim_bytes": None}, unit) is None


def test_the_cost_projection_folds_instance_days_alike_in_pieces(tmp_path: Path) -> None:
    raws = [ev for batch in history()[2:] for ev in batch]
    raws.append(cloudevent(
        "opsledger.cost.daily",
        {"date": "2026-10-05", "service": "Amazon EC2", "amount": 12.5, "currency": "USD"},
        id="daily-1", cluster=None,
    ))  # fmt: skip
    tables = assert_rebuild_equals_catch_up(
        tmp_path, raws, CostProjection, ("cost_instance_daily", "cost_daily")
    )
    rows = tables["cost_instance_daily"]
    assert len(rows) == 6 and len(tables["cost_daily"]) == 1
    restated = sorted(r for r in rows if str(r[0]) == "2026-10-06")
    assert [(r[2], r[3], r[4]) for r in restated] == [(9.2, 46.0, "USD"), (50.0, 46.0, "USD")]


# -- the route -------------------------------------------------------------------------------


def test_the_route(bed: Bed) -> None:
    r = bed.get("/v1/cost/showback", month="2026-10", by="namespace", cluster=CLUSTER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["month"] == "2026-10" and body["cluster"] == CLUSTER
    got = items(body)
    assert set(got) == {"payments", "shop", "batch", "ghost", "orphan", "(idle)"}
    # The bed's weights are the defaults.
    want = run(bed, "namespace", (0.031611, 0.004237), cluster=CLUSTER)
    assert body == want
    r = bed.get("/v1/cost/showback", month="2026-10")  # by defaults to namespace
    assert r.status_code == 200 and r.json()["by"] == "namespace"
    r = bed.get("/v1/cost/showback", month="2026-10", by="workload")
    assert r.status_code == 200 and "workload_kind" in r.json()["items"][0]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"month": "2026-1"}, "query.month"),
        ({}, "query.month"),
        ({"month": "2026-10", "by": "team"}, "query.by"),
        ({"month": "2026-10", "cluster": "no spaces"}, "query.cluster"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(
    bed: Bed, params: dict[str, str], field: str
) -> None:
    r = bed.get("/v1/cost/showback", **params)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_keys(bed: Bed) -> None:
    params = {"month": "2026-10"}
    assert bed.client.get("/v1/cost/showback", params=params).status_code == 401
    bogus = {"Authorization": "Bearer olk_nope"}
    assert bed.client.get("/v1/cost/showback", params=params, headers=bogus).status_code == 401
    # Every scope covers read: no key is refused with 403 here.
    for scope in ("read", "write", "admin", "query"):
        assert bed.get("/v1/cost/showback", scope, **params).status_code == 200


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "cannot read the price table"),
        ('{"currency": "USD", "instance_types": {"m6i.xlarge": -1}}', "instance_types"),
        ('{"instance_types": {}}', "currency"),
    ],
)
def test_a_bad_price_table_is_503_with_the_reason(tmp_path: Path, content: str, words: str) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(content, encoding="utf-8")
    with make_bed(tmp_path, projection_interval_seconds=3600, price_table_file=prices) as b:
        r = b.get("/v1/cost/showback", month="2026-10")
        assert r.status_code == 503, r.text
        assert words in r.json()["detail"] and str(prices) in r.json()["detail"]
        # Every route that prices anything refuses (the forecast prices its expansions);
        # the others answer.
        for path in ("/v1/cost/forecast", "/v1/decisions", "/v1/capacity/rightsizing"):
            r = b.get(path, month="2026-10") if path != "/v1/capacity/rightsizing" else b.get(path)
            assert r.status_code == 503 and str(prices) in r.json()["detail"], (path, r.text)
        assert b.get("/v1/capacity/headroom").status_code == 200
    missing = tmp_path / "missing.json"
    with make_bed(tmp_path / "m", projection_interval_seconds=3600, price_table_file=missing) as b:
        r = b.get("/v1/cost/showback", month="2026-10")
        assert r.status_code == 503 and "missing.json" in r.json()["detail"]

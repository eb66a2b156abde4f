"""Decisions: the rules on figures at their edges, the ranking, and the demo month's list over the
API, the CLI and the exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from report_fixtures import MONTH, copy_demo
from support.beds import Bed, make_bed
from support.cli import run_cli

from analytics.decisions import actions
from analytics.decisions.actions import Action, Price

AS_OF = datetime(2026, 11, 1)
KINDS = set(actions.KINDS)


def _pool(**over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "cluster": "c1",
        "nodepool": "general",
        "resource": "cpu",
        "basis": "usage",
        "level": 44.0,
        "allocatable": 63.28,
        "largest_node_allocatable": 7.91,
        "growth_per_day": 0.3,
        "days_to_85_n_minus_1": 10.2,
        "requests": None,
        "requests_growth_per_day": None,
        "days_to_85_by_requests_n_minus_1": None,
        "zone_loss": None,
        "nodepool_limit": None,
    }
    return h | over


def _priced(cluster: str, nodepool: str | None, resource: str) -> Price:
    return Price(0.484, "USD")


def _unpriced(cluster: str, nodepool: str | None, resource: str) -> Price:
    return Price(None, None, "no price-table entry for g5.2xlarge")


def test_an_expansion_is_sized_for_the_trend_30_days_on_and_priced() -> None:
    (a,) = actions.expansions([_pool()], _priced, 30, AS_OF)
    # 44 + 0.3 × 30 = 53 cores; 53 ÷ 0.85 − (63.28 − 7.91) = 6.98 → one node of 7.91.
    assert a.kind == "expand_pool" and a.figures["nodes_to_add"] == 1
    assert a.monthly_cost == pytest.approx(0.484 * 730)
    assert a.by == date(2026, 11, 11)
    assert "N-1" in a.evidence and "353" in a.evidence


def test_an_expansion_past_the_horizon_or_of_a_cluster_is_no_decision() -> None:
    assert actions.expansions([_pool(days_to_85_n_minus_1=30.01)], _priced, 30, AS_OF) == []
    assert actions.expansions([_pool(nodepool=None)], _priced, 30, AS_OF) == []
    (edge,) = actions.expansions([_pool(days_to_85_n_minus_1=30.0)], _priced, 30, AS_OF)
    assert edge.by == date(2026, 12, 1)


def test_an_expansion_already_due_is_now_and_an_unknown_price_says_why() -> None:
    (a,) = actions.expansions([_pool(days_to_85_n_minus_1=0.0)], _unpriced, 30, AS_OF)
    assert a.by is None and a.monthly_cost is None and a.currency is None
    assert "no price-table entry for g5.2xlarge" in a.evidence


def test_requests_trend_sizes_when_it_is_the_larger() -> None:
    h = _pool(
        days_to_85_n_minus_1=None,
        requests=60.0,
        requests_growth_per_day=0.5,
        days_to_85_by_requests_n_minus_1=0.0,
    )
    (a,) = actions.expansions([h], _priced, 30, AS_OF)
    # (60 + 15) ÷ 0.85 = 88.24; − 55.37 = 32.87 → ⌈4.16⌉ = 5 nodes.
    assert a.figures["nodes_to_add"] == 5 and a.by is None


def test_limits_zones_and_subnets_fire_only_inside_their_rule() -> None:
    limit = {"limit": 80.0, "days_to_limit": 12.0, "eta_limit": "2026-11-13T00:00:00Z"}
    far = {"limit": 80.0, "days_to_limit": 45.0, "eta_limit": "2026-12-16T00:00:00Z"}
    (lim,) = actions.limits([_pool(nodepool_limit=limit), _pool(nodepool_limit=far)], 30, AS_OF)
    assert lim.kind == "raise_nodepool_limit" and lim.by == date(2026, 11, 13)
    zone = {
        "largest_zone": "a",
        "allocatable_without_largest_zone": 40.0,
        "survives": False,
    }
    (z,) = actions.zones([_pool(requests=50.0, zone_loss=zone)], _priced)
    # 10 cores short: ⌈10 ÷ 7.91⌉ = 2 nodes.
    assert z.by is None and z.figures["nodes"] == 2
    assert z.monthly_cost == pytest.approx(2 * 0.484 * 730)
    ok = dict(zone, survives=True)
    unknown = dict(zone, survives=None)
    assert actions.zones([_pool(zone_loss=ok), _pool(zone_loss=unknown)], _priced) == []
    zones = [
        {"cluster": "c1", "zone": "a", "subnets": 1, "available_ips": 0, "pods_per_day": 0.0,
         "days_to_exhaustion": 0.0},
        {"cluster": "c1", "zone": "b", "subnets": 2, "available_ips": 900, "pods_per_day": 3.0,
         "days_to_exhaustion": 300.0},
    ]  # fmt: skip
    (s,) = actions.subnets(zones, 30, AS_OF)
    assert s.target == "c1/a" and s.by is None and s.monthly_cost is None


def test_a_pvc_at_90_percent_is_now_and_its_cost_needs_a_storage_price() -> None:
    pvc = {
        "cluster": "c1",
        "namespace": "db",
        "pvc": "data",
        "used_ratio": 0.93,
        "capacity_bytes": 100 * 2**30,
        "days_to_90": None,
    }
    later = dict(pvc, pvc="logs", used_ratio=0.5, days_to_90=31.0)
    (a,) = actions.pvcs([pvc, later], 0.08, "USD", 30, AS_OF)
    assert a.by is None and a.monthly_cost == pytest.approx(8.0)
    (b,) = actions.pvcs([pvc], None, None, 30, AS_OF)
    assert b.monthly_cost is None and "storage_gib_month" in b.evidence


def test_budget_fires_over_or_at_risk_only() -> None:
    fc = {
        "month": "2026-10",
        "forecast": 47000.0,
        "low": 45000.0,
        "high": 49000.0,
        "budget": 42000.0,
        "currency": "USD",
        "status": "over_budget",
    }
    (a,) = actions.budget(fc, date(2026, 10, 31))
    assert a.monthly_cost == pytest.approx(5000.0) and a.by == date(2026, 10, 31)
    assert actions.budget(dict(fc, status="within_budget"), date(2026, 10, 31)) == []


def test_ranking_puts_now_first_then_dates_then_money() -> None:
    def act(kind: Any, target: str, by: date | None, cost: float | None) -> Action:
        return Action(kind, target, by, "", "headroom", monthly_cost=cost)

    found = [
        act("expand_pool", "late", date(2026, 11, 20), 9000.0),
        act("subnet_ips", "soon-cheap", date(2026, 11, 5), None),
        act("expand_pool", "soon-dear", date(2026, 11, 5), 500.0),
        act("zone_risk", "now-cheap", None, 10.0),
        act("zone_risk", "now-dear", None, 100.0),
    ]
    ranked = actions.ranked(found)
    assert [r["target"] for r in ranked] == [
        "now-dear",
        "now-cheap",
        "soon-dear",
        "soon-cheap",
        "late",
    ]
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4, 5]
    assert ranked[0]["by"] == "now" and ranked[2]["by"] == "2026-11-05"


# -- the demo month ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    home = tmp_path_factory.mktemp("decisions")
    url, read_model = copy_demo(tmp_path_factory, home)
    with make_bed(home, url=url, read_model_path=read_model) as bed:
        r = bed.client.post("/v1/projections/catch-up", headers=bed.headers("admin"))
        assert r.status_code == 200, r.text
        yield bed


def _decisions(bed: Bed, **params: str) -> Any:
    r = bed.client.get("/v1/decisions", params=params, headers=bed.headers("read"))
    assert r.status_code == 200, r.text
    return r.json()


def test_the_demo_month_shows_every_kind_of_decision(demo: Bed) -> None:
    body = _decisions(demo, month=MONTH)
    assert body["as_of"] == "2026-11-01T00:00:00Z"
    items = body["items"]
    assert {i["kind"] for i in items} == KINDS, [i["kind"] for i in items]
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    dates = [i["by"] for i in items]
    now = [d for d in dates if d == "now"]
    assert dates[: len(now)] == now and dates[len(now) :] == sorted(dates[len(now) :])
    for i in items:
        assert i["evidence"] and i["section"] in {
            "rightsizing",
            "headroom",
            "network",
            "storage",
            "cost",
        }
        money = i["monthly_savings"] if i["kind"] == "reclaim_workload" else i["monthly_cost"]
        if i["kind"] in ("reclaim_workload", "expand_pool", "budget"):
            assert money is not None and money > 0, i
            assert i["currency"] == "USD"


def test_decisions_need_a_key_and_a_good_month(demo: Bed) -> None:
    assert demo.client.get("/v1/decisions").status_code == 401
    r = demo.client.get("/v1/decisions", params={"month": "2026-13"}, headers=demo.headers("read"))
    assert r.status_code == 422 and "month" in r.text
    bad = {"month": MONTH, "cluster": "no such/cluster"}
    assert (
        demo.client.get("/v1/decisions", params=bad, headers=demo.headers("read")).status_code
        == 422
    )


def test_a_month_without_data_has_no_decisions(demo: Bed) -> None:
    assert _decisions(demo, month="2025-01")["items"] == []


def test_the_cli_and_the_export_give_the_api_answer(
    demo: Bed, tmp_path_factory: pytest.TempPathFactory
) -> None:
    api = _decisions(demo, month=MONTH)
    r = demo.client.get(
        "/v1/export/decisions.csv",
        params={"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
        headers=demo.headers("read"),
    )
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(int(x["rank"]), x["kind"], x["target"]) for x in rows] == [
        (i["rank"], i["kind"], i["target"]) for i in api["items"]
    ]
    # The CLI on its own copy (no server holds that read model): it catches up and answers.
    home = tmp_path_factory.mktemp("decisions-cli")
    url, _ = copy_demo(tmp_path_factory, home)
    res = run_cli(["decisions", "--month", MONTH, "--json"], home, url)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["items"] == api["items"]
    res = run_cli(["decisions", "--month", MONTH, "--csv"], home, url)
    assert res.returncode == 0, res.stderr
    lines = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [x["target"] for x in lines] == [i["target"] for i in api["items"]]
    res = run_cli(["decisions", "--month", "2026-13"], home, url)
    assert res.returncode == 2 and "--month" in res.stderr

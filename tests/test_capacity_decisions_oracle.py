"""Issue 12's acceptance oracle: capacity decisions on generated clusters, against plain Python.

Seeded generators (tests/support/capacity_oracle.py) draw three clusters: node pools over three
zones, nodes that join and leave, one known only by its samples' labels, one on an instance
type priced nowhere; workloads of every kind (Deployments that scale and roll out, a
StatefulSet, a DaemonSet, a CronJob off the sampling grid, Jobs of exactly 24 h and of 23 h,
a ReplicaSet and a custom controller, bare pods, a pod without workload labels, containers
without requests); NodePools (one set twice at one instant, one deleted, one pool without);
subnets over a month (one deleted, one out of addresses); Cost Explorer rows around the settled
days (one restated) and a price table. Samples go out shuffled over several events, some
re-delivered, some corrected by a later event; every figure of /v1/capacity/rightsizing,
/v1/capacity/headroom, /v1/network/ip-headroom and /v1/cost/showback must equal the oracle's
to 1e-9 relative, instants to the second.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.beds import Bed, make_bed
from support.capacity_oracle import (
    AS_OF,
    HOUR,
    LB,
    LOOKBACK,
    MONTH,
    MONTH_START,
    Oracle,
    World,
    generate,
    iso,
)

BATCH = "application/cloudevents-batch+json"
SEEDS = (3, 1207, 90210)
RIGHTSIZING_FIELDS = (
    "pods_avg",
    "cpu_request_cores",
    "cpu_usage_p95_cores",
    "cpu_recommended_cores",
    "cpu_limit_cores",
    "memory_request_bytes",
    "memory_usage_max_bytes",
    "memory_recommended_bytes",
    "memory_limit_bytes",
    "cpu_reclaim_cores",
    "memory_reclaim_bytes",
    "monthly_savings",
    "currency",
    "status",
)
UNITS = {"cpu": "cores", "memory": "bytes"}
HEADROOM_FIELDS = (
    "allocatable",
    "largest_node_allocatable",
    "requests",
    "commitment_by_requests",
    "requests_growth_per_day",
    "days_to_85_by_requests",
    "eta_85_by_requests",
    "days_to_85_by_requests_n_minus_1",
    "eta_85_by_requests_n_minus_1",
)


# -- comparing ---------------------------------------------------------------------------------


def same(api: Any, oracle: Any) -> bool:
    """Equal, numbers to 1e-9 relative (or absolute, near 0); instants to the second."""
    if oracle is None or api is None:
        return api is None and oracle is None
    if isinstance(oracle, bool) or isinstance(api, bool):
        return api is oracle
    if isinstance(oracle, (int, float)) and isinstance(api, (int, float)):
        return math.isclose(api, oracle, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(oracle, dict) and isinstance(api, dict):
        return api.keys() == oracle.keys() and all(same(api[k], oracle[k]) for k in oracle)
    return bool(api == oracle)


class Problems(list[str]):
    """Every disagreement, named by seed, endpoint, item and field; and how many were equal."""

    compared = 0

    def check(self, where: str, field: str, api: Any, oracle: Any) -> None:
        self.compared += 1
        if not same(api, oracle):
            self.append(f"{where} {field}: api={api!r} oracle={oracle!r}")

    def fields(self, where: str, api: dict[str, Any], oracle: dict[str, Any], names) -> None:
        for name in names:
            if name not in api:
                self.append(f"{where} {name}: missing from the answer")
            else:
                self.check(where, name, api[name], oracle[name])


# -- the bed -----------------------------------------------------------------------------------


@cache
def world(seed: int) -> World:
    return generate(seed)


def events_of(w: World) -> list[dict[str, Any]]:
    return [e for batch in w.batches for e in batch]


@cache
def oracle(seed: int) -> Oracle:
    w = world(seed)
    return Oracle(events_of(w), w.price_table)


def deliver(bed: Bed, w: World) -> None:
    """Post every batch in order; re-deliveries are counted as duplicates, never written."""
    seen: set[tuple[str, str]] = set()
    for batch in w.batches:
        fresh = 0
        for ev in batch:
            ident = (ev["source"], ev["id"])
            fresh += ident not in seen
            seen.add(ident)
        r = bed.client.post(
            "/v1/events",
            content=orjson.dumps(batch),
            headers={**bed.headers(), "Content-Type": BATCH},
        )
        assert r.status_code == 200, r.text[:2000]
        assert (r.json()["accepted"], r.json()["duplicates"]) == (fresh, len(batch) - fresh)


@contextmanager
def seeded_bed(root: Path, w: World) -> Iterator[Bed]:
    """A bed with the world's price table, every event delivered and the read model caught up."""
    table = root / "prices.json"
    table.write_text(json.dumps(w.price_table), encoding="utf-8")
    with make_bed(root, price_table_file=table, projection_interval_seconds=3600) as bed:
        deliver(bed, w)
        bed.caught_up()
        yield bed


def get(bed: Bed, path: str, **params: Any) -> dict[str, Any]:
    r = bed.get(path, **params)
    assert r.status_code == 200, f"{path} {params}: {r.status_code} {r.text[:2000]}"
    body: dict[str, Any] = r.json()
    return body


# -- rightsizing -------------------------------------------------------------------------------


def rs_key(item: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        item[k] for k in ("cluster", "namespace", "workload_kind", "workload", "container")
    )


def check_rightsizing(
    bed: Bed, o: Oracle, seed: int, problems: Problems, as_of: datetime, **params: str
) -> dict[tuple[str, ...], dict[str, Any]]:
    lookback = params.get("lookback", "14d")
    span = (
        timedelta(days=int(lookback[:-1]))
        if lookback.endswith("d")
        else timedelta(hours=int(lookback[:-1]))
    )
    query = {"as_of": iso(as_of), **params}
    body = get(bed, "/v1/capacity/rightsizing", **query)
    where = f"seed {seed} rightsizing {query}"
    problems.check(where, "as_of", body.get("as_of"), iso(as_of))
    expected = o.rightsizing(
        as_of, span, params.get("cluster"), params.get("namespace"), params.get("workload")
    )
    got = {rs_key(i): i for i in body["items"]}
    for key in sorted(set(expected) - set(got)):
        problems.append(f"{where} {key}: missing from the answer")
    for key in sorted(set(got) - set(expected)):
        problems.append(f"{where} {key}: not expected ({got[key]})")
    for key in sorted(set(got) & set(expected)):
        problems.fields(f"{where} {'/'.join(key)}", got[key], expected[key], RIGHTSIZING_FIELDS)
        if expected[key]["status"] == "no_requests":
            # The reason names the request that is missing.
            reason = str(got[key].get("reason") or "").lower()
            for resource in ("cpu", "memory"):
                missing = expected[key][f"{resource}_request_{UNITS[resource]}"] is None
                if missing and resource not in reason:
                    problems.append(f"{where} {key} reason: {reason!r} names no {resource}")
    # Sorted by savings (the answer's own figures) descending, nulls last, then the names.
    order = [
        (
            i["monthly_savings"] is None,
            -(i["monthly_savings"] or 0.0),
            i["cluster"],
            i["namespace"],
            i["workload"],
            i["container"],
        )
        for i in body["items"]
    ]
    if order != sorted(order):
        problems.append(f"{where}: items not sorted by monthly_savings desc, nulls last")
    return expected


# -- headroom ----------------------------------------------------------------------------------


def check_headroom(bed: Bed, o: Oracle, seed: int, problems: Problems) -> dict[Any, Any]:
    body = get(bed, "/v1/capacity/headroom", as_of=iso(AS_OF))
    where = f"seed {seed} headroom"
    expected = o.headroom(AS_OF)
    got = {(i["cluster"], i["nodepool"], i["resource"]): i for i in body["items"]}
    for key in sorted(set(expected) - set(got), key=str):
        problems.append(f"{where} {key}: missing from the answer")
    for key in sorted(set(got) & set(expected), key=str):
        api, exp = got[key], expected[key]
        w = f"{where} {key}"
        problems.fields(w, api, exp, HEADROOM_FIELDS)
        zl, ezl = api.get("zone_loss"), exp["zone_loss"]
        if not isinstance(zl, dict):
            problems.append(f"{w} zone_loss: api={zl!r} oracle={ezl!r}")
        else:
            zones = {("null" if k is None else k): v for k, v in ezl["zones"].items()}
            problems.check(w, "zone_loss.zones", zl.get("zones"), zones)
            for name in (
                "largest_zone",
                "largest_zone_allocatable",
                "allocatable_without_largest_zone",
                "commitment_without_largest_zone",
                "survives",
            ):
                problems.check(w, f"zone_loss.{name}", zl.get(name), ezl[name])
        problems.check(w, "nodepool_limit", api.get("nodepool_limit"), exp["nodepool_limit"])
    return expected


# -- subnet IPs --------------------------------------------------------------------------------


def check_ip_headroom(bed: Bed, o: Oracle, seed: int, problems: Problems) -> None:
    body = get(bed, "/v1/network/ip-headroom", as_of=iso(AS_OF))
    where = f"seed {seed} ip-headroom"
    problems.check(where, "as_of", body.get("as_of"), iso(AS_OF))
    zones, subnets = o.ip_headroom(AS_OF)
    got_z = {(z["cluster"], z["zone"]): z for z in body["zones"]}
    got_s = {(s["cluster"], s["subnet_id"]): s for s in body["subnets"]}
    for label, exp, got in (("zone", zones, got_z), ("subnet", subnets, got_s)):
        for key in sorted(set(exp) ^ set(got)):
            side = "missing from the answer" if key in exp else "not expected"
            problems.append(f"{where} {label} {key}: {side}")
    for key in sorted(set(zones) & set(got_z)):
        z, ez = got_z[key], zones[key]
        problems.fields(
            f"{where} zone {key}",
            z,
            ez,
            ("available_ips", "pods", "pods_per_day", "days_to_exhaustion", "eta"),
        )
        ids = sorted(sid for (c, sid), s in subnets.items() if c == key[0] and s["zone"] == key[1])
        listed = z.get("subnets")
        if not (
            listed == len(ids)
            or (
                isinstance(listed, list)
                and sorted(s if isinstance(s, str) else s.get("subnet_id") for s in listed) == ids
            )
        ):
            problems.append(f"{where} zone {key} subnets: api={listed!r} oracle={ids!r}")
    for key in sorted(set(subnets) & set(got_s)):
        problems.fields(
            f"{where} subnet {key}",
            got_s[key],
            subnets[key],
            (
                "zone",
                "vpc_id",
                "cidr",
                "available_ips",
                "total_ips",
                "days_to_exhaustion",
                "eta",
                "observed_at",
            ),
        )


# -- showback ----------------------------------------------------------------------------------

KEYS = {
    "namespace": ("namespace",),
    "nodepool": ("nodepool",),
    "workload": ("namespace", "workload_kind", "workload"),
}


def check_showback(bed: Bed, o: Oracle, seed: int, problems: Problems, by: str) -> None:
    body = get(bed, "/v1/cost/showback", month=MONTH, by=by)
    where = f"seed {seed} showback by {by}"
    expected = o.showback(MONTH_START, AS_OF, by)
    got: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in body["items"]:
        key = (
            (item["cluster"], "idle")
            if item.get("idle")
            else (item["cluster"], *(item.get(k) for k in KEYS[by]))
        )
        if key in got:
            problems.append(f"{where} {key}: twice in the answer")
        got[key] = item
    for cluster, exp in expected.items():
        total = exp["total"]
        for key, e in exp["items"].items():
            k = (cluster, *key)
            item = got.pop(k, None)
            w = f"{where} {k}"
            if item is None:
                problems.append(f"{w}: missing from the answer")
                continue
            if not e["costed"]:
                for name in ("cpu_cost", "memory_cost", "cost", "share"):
                    problems.check(w, name, item.get(name), None)
                if not item.get("reason"):
                    problems.append(f"{w}: a cost left out without a reason")
                continue
            cost = e["cpu"] + e["memory"]
            problems.check(w, "cpu_cost", item.get("cpu_cost"), e["cpu"])
            problems.check(w, "memory_cost", item.get("memory_cost"), e["memory"])
            problems.check(w, "cost", item.get("cost"), cost)
            problems.check(w, "share", item.get("share"), cost / total if total else None)
        idle = got.pop((cluster, "idle"), None)
        w = f"{where} ({cluster!r}, idle)"
        if idle is None:
            # A cluster with no priced node has no idle to show; every other has its row.
            if total:
                problems.append(f"{w}: missing from the answer")
        elif total:
            problems.check(w, "cost", idle.get("cost"), exp["idle"]["cost"])
            problems.check(w, "share", idle.get("share"), exp["idle"]["cost"] / total)
            # The split of idle between CPU and memory is not defined; when given, it is the
            # node-hours' CPU (memory) price minus the rows' CPU (memory) cost.
            for name, part in (("cpu_cost", "cpu"), ("memory_cost", "memory")):
                if idle.get(name) is not None:
                    problems.check(w, name, idle[name], exp["idle"][part])
        elif idle is not None and idle.get("cost") not in (
            None,
            0,
            0.0,
        ):  # no priced node: nothing idle to price
            problems.append(f"{w} cost: api={idle.get('cost')!r} oracle=0 or null")
    for key in got:
        problems.append(f"{where} {key}: not expected ({got[key]})")
    totals = {t["cluster"]: t for t in body.get("totals", [])}
    for cluster, exp in expected.items():
        t = totals.get(cluster)
        w = f"{where} totals {cluster}"
        if t is None:
            problems.append(f"{w}: missing from the answer")
            continue
        if exp["total"] or t.get("cost") is not None:
            problems.check(w, "cost", t.get("cost"), exp["total"])
        if exp["total"]:
            problems.check(w, "currency", t.get("currency"), exp["currency"])
        unpriced = {(u.get("node"), u.get("instance_type")) for u in t.get("unpriced", [])}
        problems.check(w, "unpriced", sorted(unpriced, key=str), sorted(exp["unpriced"], key=str))
        if any(not u.get("reason") for u in t.get("unpriced", [])):
            problems.append(f"{w}: an unpriced node without a reason")
    costs = [i.get("cost") for i in body["items"]]
    order = [(c is None, -(c or 0.0)) for c in costs]
    if order != sorted(order):
        problems.append(f"{where}: items not sorted by cost desc, nulls last")


# -- the tests ---------------------------------------------------------------------------------


def check_world(bed: Bed, seed: int) -> Problems:
    o = oracle(seed)
    problems = Problems()
    check_rightsizing(bed, o, seed, problems, AS_OF)
    # A shorter look-back, one namespace; then one workload, as of mid-day (other settled days).
    check_rightsizing(bed, o, seed, problems, AS_OF, lookback="3d", namespace="shop")
    check_rightsizing(
        bed, o, seed, problems, AS_OF - 12 * HOUR, lookback="36h", workload="web", cluster="c1"
    )
    check_headroom(bed, o, seed, problems)
    check_ip_headroom(bed, o, seed, problems)
    for by in ("namespace", "nodepool", "workload"):
        check_showback(bed, o, seed, problems, by)
    return problems


def report(problems: Problems) -> str:
    return "\n".join(problems[:60]) + f"\n({len(problems)} disagreements)"


@pytest.mark.parametrize("seed", SEEDS)
def test_capacity_decisions_equal_the_oracle(tmp_path: Path, seed: int) -> None:
    with seeded_bed(tmp_path, world(seed)) as bed:
        problems = check_world(bed, seed)
    assert not problems, report(problems)


# Each example builds a world and a bed (~5 s): two draws, and no shrinking (a seed does not
# get simpler by being smaller; the failing seed is in the report).
@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_capacity_decisions_equal_the_oracle_on_drawn_seeds(seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, seeded_bed(Path(tmp), world(seed)) as bed:
        problems = check_world(bed, seed)
    assert not problems, report(problems)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_generator_covers_the_boundaries(seed: int) -> None:
    """Each world holds the cases the acceptance names, so a pass means they were compared."""
    o = oracle(seed)
    rs = o.rightsizing(AS_OF, LOOKBACK)
    statuses = {i["status"] for i in rs.values()}
    assert statuses >= {"over", "under", "ok", "no_requests", "insufficient_data"}, statuses
    # A sample exactly at as_of - look-back (in) and at as_of (out).
    stamps = {t for (_, _, _, _, t) in o.wl}
    assert LB in stamps and AS_OF in stamps
    assert any(
        i["monthly_savings"] is None and i["cpu_reclaim_cores"] is not None for i in rs.values()
    )  # c3: no prices
    head = o.headroom(AS_OF)
    gpu = head[("c1", "gpu", "cpu")]
    assert gpu["requests_growth_per_day"] == 0.0  # fewer than 3 days
    limits = [h["nodepool_limit"] for h in head.values() if h["nodepool_limit"]]
    assert {lim["days_to_limit"] is None for lim in limits} == {True, False}  # flat trend
    assert any(lim["days_to_limit"] == 0.0 for lim in limits)  # already past
    assert any(lim["days_to_limit"] for lim in limits)  # a date ahead
    assert head[("c1", "gpu", "cpu")]["nodepool_limit"] is None  # deleted
    assert head[("c1", "batch", "cpu")]["nodepool_limit"] is None  # never had one
    assert {h["zone_loss"]["survives"] for h in head.values()} == {True, False, None}
    assert None in head[("c3", None, "cpu")]["zone_loss"]["zones"]  # a node with no zone
    assert head[("c3", "reserve", "memory")]["requests"] is None  # no container there
    for h in head.values():  # no ties between zones: the largest is well defined
        sizes = list(h["zone_loss"]["zones"].values())
        assert len(set(sizes)) == len(sizes)
    zones, subnets = o.ip_headroom(AS_OF)
    days = [z["days_to_exhaustion"] for z in zones.values()]
    assert None in days and any(d for d in days)
    assert any(s["days_to_exhaustion"] == 0.0 for s in subnets.values())
    assert any(z["pods"] is None for z in zones.values())
    for z in zones.values():  # no slope that is rounding noise: its sign would decide
        assert z["pods_per_day"] is None or abs(z["pods_per_day"]) > 1e-6
    shown = o.showback(MONTH_START, AS_OF, "namespace")
    assert shown["c1"]["unpriced"] and shown["c1"]["total"] > 0
    # Not costed: on unpriced nodes only (ml), partly (kube-system), on a node no scrape
    # reports or with no node label (c2's edge); costed: c2's kube-system.
    assert not shown["c1"]["items"][("ml",)]["costed"]
    assert not shown["c1"]["items"][("kube-system",)]["costed"]
    assert not shown["c2"]["items"][("edge",)]["costed"]
    assert shown["c2"]["items"][("kube-system",)]["costed"]
    assert shown["c1"]["items"][("shop",)]["costed"]
    # Settled Cost Explorer days decide m6i.xlarge and r6i.xlarge; the table the others.
    assert o.price("m6i.2xlarge", AS_OF)[0] == 0.384
    assert o.price("c6i.large", AS_OF)[0] == 0.085
    assert o.price("p5.48xlarge", AS_OF) == (None, None)
    assert o.price("m6i.xlarge", AS_OF)[0] < 1.0
    assert o.price("r6i.xlarge", AS_OF)[0] < 1.0
    assert o.price("r6i.xlarge", AS_OF - 12 * HOUR)[0] != o.price("r6i.xlarge", AS_OF)[0]

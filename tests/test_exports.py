"""BI exports: every dataset in every format agrees, schemas are versioned, the cap, S3 layout.

A real ledger and read model behind the API (incidents through their commands, cost days,
findings, node, namespace and PVC samples); Parquet and Arrow are read back with pyarrow and
DuckDB, CSV with pandas using the types docs/bi.md documents; S3 is a moto server.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from support.beds import Bed, make_bed
from support.cli import OPSLEDGER
from support.docs import read_doc, section
from support.payloads import cloudevent, sample
from support.servers import free_port, serve_in_thread

from analytics.outputs import exports
from analytics.outputs.datasets import DATASETS, snapshot
from analytics.readmodel.runner import wait_for
from api.app import create_app
from store.keys import create_key, list_keys
from store.migrate import upgrade
from store.settings import Settings

ROOT = Path(__file__).resolve().parent
SNAPSHOT = ROOT / "export_schemas.json"
AS_OF = "2026-11-01T00:00:00Z"
FORECAST_AS_OF = "2026-10-02T00:00:00Z"
#: The parameters that make each dataset's export reproducible (judged as of a fixed time).
PARAMS: dict[str, dict[str, str]] = {
    "storage_forecast": {"as_of": FORECAST_AS_OF},
    "rightsizing": {"as_of": FORECAST_AS_OF},
    "showback": {"as_of": FORECAST_AS_OF, "from": "2026-09-01T00:00:00Z"},
    "decisions": {"as_of": FORECAST_AS_OF},
    "sla_breaches": {"as_of": AS_OF},
    "incident_metrics_monthly": {"as_of": AS_OF},
}
BATCH = "application/cloudevents-batch+json"
GIB = 2**30
NODES = {"c1": {"n1": ("general", 4.0), "n2": ("general", 8.0)}, "c2": {"m1": ("memory", 2.0)}}
NAMESPACES = {"c1": ("web", "db"), "c2": ("web",)}
#: (id, severity, cluster, opened, {action: seconds after opening})
INCIDENTS: list[tuple[str, str, str, str, dict[str, int]]] = [
    ("INC-A", "P1", "c1", "2026-09-20T10:00:00Z", {"acknowledge": 1800, "mitigate": 7200}),
    ("INC-B", "P2", "c2", "2026-10-03T08:00:00Z", {"acknowledge": 5 * 3600, "resolve": 86400}),
    ("INC-C", "P0", "c1", "2026-10-10T12:00:00Z", {"acknowledge": 600, "resolve": 3600}),
    ("INC-D", "P3", "c1", "2026-10-20T09:00:00Z", {}),
    ("INC-E", "P1", "c2", "2026-10-25T23:30:00Z", {"acknowledge": 1200}),
]
TIME_TEXT = "%Y-%m-%dT%H:%M:%S.%fZ"


def rfc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def capacity_events() -> list[dict[str, Any]]:
    """Node, namespace and PVC samples every 15 minutes over 2026-09-30 and 2026-10-01."""
    t0 = datetime(2026, 9, 30, tzinfo=UTC)
    out = []
    for cluster, nodes in NODES.items():
        for chunk in range(8):  # six hours each
            batch = []
            for i in range(chunk * 24, chunk * 24 + 24):
                t = rfc(t0 + timedelta(minutes=15 * i))
                for node, (pool, cpu_a) in nodes.items():
                    labels = {"node": node, "nodepool": pool, "zone": "us-gov-west-1a"}
                    batch += [
                        sample(
                            "node_cpu_usage_cores", labels, t, cpu_a * (0.3 + 0.5 * (i % 7) / 7)
                        ),
                        sample("node_cpu_allocatable_cores", labels, t, cpu_a),
                        sample("node_memory_usage_bytes", labels, t, (3 + i % 5) * GIB),
                        sample("node_memory_allocatable_bytes", labels, t, 16 * GIB),
                    ]
                for ns in NAMESPACES[cluster]:
                    labels = {"namespace": ns}
                    batch += [
                        sample("namespace_cpu_usage_cores", labels, t, 1.0 + 0.1 * (i % 3)),
                        sample("namespace_cpu_requests_cores", labels, t, 2.0),
                        sample("namespace_pod_count", labels, t, 10 + i % 4),
                    ]
                if cluster == "c1" and i % 4 == 0:
                    pvc = {"namespace": "db", "persistentvolumeclaim": "data-postgres-0"}
                    batch += [
                        sample("pvc_used_bytes", pvc, t, (50 + 0.25 * i) * GIB),
                        sample("pvc_capacity_bytes", pvc, t, 100 * GIB),
                    ]
            out.append(
                cloudevent(
                    "opsledger.metric.samples",
                    {"samples": batch},
                    id=f"{cluster}-{chunk}",
                    cluster=cluster,
                    time=rfc(t0 + timedelta(hours=6 * chunk + 6)),
                )
            )
    return out


def workload_events() -> list[dict[str, Any]]:
    """c1's nodes (m6i.xlarge) and a two-pod Deployment over requested on them, its EC2 price."""
    t0 = datetime(2026, 9, 30, tzinfo=UTC)
    out = [
        cloudevent(
            "opsledger.k8s.node.status",
            {
                "node": node,
                "ready": True,
                "nodepool": "general",
                "zone": "us-gov-west-1a",
                "instance_type": "m6i.xlarge",
                "allocatable": {"cpu_cores": cpu_a, "memory_bytes": 16 * GIB, "pods": 58},
            },
            id=f"status-{node}",
            cluster="c1",
            time="2026-09-29T00:00:00Z",
        )
        for node, (_, cpu_a) in NODES["c1"].items()
    ]
    samples = []
    for i in range(192):
        t = rfc(t0 + timedelta(minutes=15 * i))
        for pod, node in (("web-7d9-a", "n1"), ("web-7d9-b", "n2")):
            labels = {"namespace": "web", "pod": pod, "container": "app", "node": node,
                      "workload_kind": "Deployment", "workload": "web"}  # fmt: skip
            samples += [
                sample("container_cpu_usage_cores", labels, t, 0.2 + 0.05 * (i % 5)),
                sample("container_memory_working_set_bytes", labels, t, (1 + i % 3) * GIB),
                sample("container_cpu_requests_cores", labels, t, 1.5),
                sample("container_memory_requests_bytes", labels, t, 6 * GIB),
            ]
    out.append(
        cloudevent(
            "opsledger.metric.samples", {"samples": samples}, id="c1-containers", cluster="c1"
        )
    )
    for day in ("2026-09-28", "2026-09-29"):
        data = {"date": day, "instance_type": "m6i.xlarge", "amount": 11.616,
                "usage_hours": 48.0, "currency": "USD"}  # fmt: skip
        out.append(
            cloudevent(
                "opsledger.cost.instance_type.daily",
                data,
                id=f"ce-it-{day}",
                cluster=None,
                time=f"{day}T23:00:00Z",
            )
        )
    return out


def cost_events() -> list[dict[str, Any]]:
    out = []
    for n, day in enumerate(("2026-09-29", "2026-09-30", "2026-10-01", "2026-10-02")):
        for service, amount in (("Amazon EKS", 72.0 + n), ("Amazon EC2", 310.5 - n)):
            data = {"date": day, "service": service, "amount": amount, "currency": "USD"}
            out.append(
                cloudevent(
                    "opsledger.cost.daily",
                    data,
                    id=f"cost-{day}-{service}",
                    cluster=None,
                    time=f"{day}T23:00:00Z",
                )
            )
    # A restated day: the amount recorded last counts.
    data = {"date": "2026-10-01", "service": "Amazon EC2", "amount": 999.25, "currency": "USD"}
    out.append(
        cloudevent("opsledger.cost.daily", data, id="cost-restated", cluster=None, time=AS_OF)
    )
    return out


def finding_events() -> list[dict[str, Any]]:
    def finding(id: str, fid: str, status: str, t: str, cluster: str | None) -> dict[str, Any]:
        data = {
            "provider": "guardduty" if fid == "f1" else "securityhub",
            "finding_id": fid,
            "title": f"finding {fid}",
            "finding_type": "Impact:Runtime/CryptoMinerExecuted",
            "severity": "HIGH",
            "status": status,
            "namespace": "web",
            "first_seen": "2026-09-30T11:00:00Z",
            "last_seen": t,
        }
        return cloudevent("opsledger.finding", data, id=id, cluster=cluster, time=t)

    return [
        finding("find-1", "f1", "ACTIVE", "2026-09-30T12:00:00Z", "c1"),
        finding("find-2", "f1", "RESOLVED", "2026-10-01T08:00:00Z", "c1"),
        finding("find-3", "f2", "ACTIVE", "2026-10-01T09:00:00.250000Z", None),
    ]


def seed_incidents(bed: Bed) -> None:
    for incident_id, severity, cluster, opened, actions in INCIDENTS:
        body = {
            "title": f"{incident_id} checkout errors",
            "severity": severity,
            "cluster": cluster,
            "namespace": "web",
            "incident_id": incident_id,
            "at": opened,
        }
        r = bed.client.post("/v1/incidents", json=body, headers=bed.headers("write"))
        assert r.status_code == 201, r.text
        start = datetime.fromisoformat(opened)
        for action, seconds in actions.items():
            at = rfc(start + timedelta(seconds=seconds))
            r = bed.client.post(
                f"/v1/incidents/{incident_id}/{action}",
                json={"at": at, "by": "alice"},
                headers=bed.headers("write"),
            )
            assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    tmp = tmp_path_factory.mktemp("exports")
    # Its own home: by default the read model would be .opsledger/ under the working directory.
    with make_bed(tmp, home=tmp) as b:
        raws = capacity_events() + workload_events() + cost_events() + finding_events()
        r = b.client.post("/v1/events", content=json.dumps(raws), headers=b.headers("write", BATCH))
        assert r.status_code == 200, r.text
        seed_incidents(b)
        assert wait_for(b.app.state.projector.runner, b.ledger.head(), timeout_s=60)
        yield b


def get(bed: Bed, name: str, fmt: str, scope: str = "read", **params: Any) -> httpx.Response:
    query = {**PARAMS.get(name, {}), **params}
    return bed.client.get(f"/v1/export/{name}.{fmt}", params=query, headers=bed.headers(scope))


def jsonl(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert int(r.headers["x-opsledger-rows"]) == len(rows)
    return rows


def normal(value: Any) -> Any:
    """A value read back from Parquet, Arrow or CSV as JSON Lines writes it."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:  # a date column that pandas parsed
            assert value.time() == datetime.min.time()
            return value.date().isoformat()
        return value.astimezone(UTC).strftime(TIME_TEXT)
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return normal(value.item())
    return value


def normal_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: normal(v) for k, v in row.items()} for row in rows]


def duck_rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description or []]
    return normal_rows([dict(zip(names, row, strict=True)) for row in cur.fetchall()])


# -- the documented types -------------------------------------------------------------------


def doc_table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text`, cells without backticks."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    return rows[1:]


def documented_columns(name: str) -> list[tuple[str, str]]:
    part = section(read_doc("bi.md"), re.compile(rf"^`{re.escape(name)}`$"))
    assert part is not None, f"docs/bi.md needs a section `{name}`"
    return [(row[0], row[1]) for row in doc_table(part)]


def documented_pandas_types() -> dict[str, str]:
    part = section(read_doc("bi.md"), re.compile(r"^Types$"))
    assert part is not None, "docs/bi.md needs a Types section"
    return {row[0]: row[2] for row in doc_table(part)}


def read_csv(body: bytes, name: str) -> pd.DataFrame:
    """The CSV as docs/bi.md tells pandas users to read it."""
    pandas_types = documented_pandas_types()
    dtypes, dates = {}, []
    for column, arrow_type in documented_columns(name):
        kind = pandas_types[arrow_type]
        if kind.startswith("parse_dates"):
            dates.append(column)
        else:
            dtypes[column] = kind
    frame = pd.read_csv(io.BytesIO(body), dtype=dtypes, parse_dates=dates)
    for column, arrow_type in documented_columns(name):
        if "utc=True" in pandas_types[arrow_type]:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


# -- every dataset, every format --------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_format_holds_the_rows_of_the_json_lines(bed: Bed, name: str, tmp_path: Path) -> None:
    ds = DATASETS[name]
    rows = jsonl(get(bed, name, "jsonl"))
    assert rows, f"{name}: the seeded history should give rows"
    assert [list(r) for r in rows[:1]] == [[c.name for c in ds.columns]]

    r = get(bed, name, "parquet")
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    assert r.headers["x-opsledger-schema-version"] == str(ds.version)
    assert r.headers["content-disposition"] == f'attachment; filename="{name}.parquet"'
    table = pq.read_table(io.BytesIO(r.content))
    assert table.schema.equals(ds.schema, check_metadata=True), table.schema
    assert normal_rows(table.to_pylist()) == rows
    path = tmp_path / f"{name}.parquet"
    path.write_bytes(r.content)
    con = duckdb.connect()
    assert duck_rows(con, "SELECT * FROM read_parquet(?)", [str(path)]) == rows

    r = get(bed, name, "arrow")
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    stream = pa.ipc.open_stream(r.content)
    assert stream.schema.equals(ds.schema, check_metadata=True)
    assert normal_rows(stream.read_all().to_pylist()) == rows
    con.register("arrow_export", pa.ipc.open_stream(r.content))
    assert duck_rows(con, "SELECT * FROM arrow_export", []) == rows

    r = get(bed, name, "csv")
    assert r.headers["content-type"].startswith("text/csv")
    frame = read_csv(r.content, name)
    for column in ds.columns:
        dtype = frame[column.name].dtype
        if pa.types.is_timestamp(column.type):
            assert isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC", column
        elif pa.types.is_date(column.type):
            assert dtype.kind == "M", column
        else:
            assert str(dtype) == documented_pandas_types()[str(column.type)], column
    assert normal_rows(frame.to_dict("records")) == rows


def test_window_cluster_and_type_filters(bed: Bed) -> None:
    every = jsonl(get(bed, "incidents", "jsonl"))
    assert [r["incident_id"] for r in every] == [i[0] for i in INCIDENTS]
    october = jsonl(get(bed, "incidents", "jsonl", **{"from": "2026-10-01T00:00:00Z"}))
    assert [r["incident_id"] for r in october] == ["INC-B", "INC-C", "INC-D", "INC-E"]
    c1 = jsonl(get(bed, "incidents", "jsonl", cluster="c1", to="2026-10-15T00:00:00+02:00"))
    assert [r["incident_id"] for r in c1] == ["INC-A", "INC-C"]

    hourly = jsonl(get(bed, "capacity_hourly", "jsonl", cluster="c2"))
    assert hourly and {r["cluster"] for r in hourly} == {"c2"}
    assert len({r["bucket_start"] for r in hourly}) == 48
    daily = jsonl(get(bed, "capacity_daily", "jsonl", **{"from": "2026-10-01T00:00:00Z"}))
    assert {r["bucket_start"] for r in daily} == {"2026-10-01T00:00:00.000000Z"}
    cpu = next(
        r for r in daily if (r["cluster"], r["scope"], r["resource"]) == ("c1", "cluster", "cpu")
    )
    assert cpu["unit"] == "cores" and cpu["allocatable_avg"] == 12.0 and cpu["points"] == 96

    types = "opsledger.cost.daily,opsledger.finding"
    evs = jsonl(get(bed, "events", "jsonl", type=types, to="2026-10-01T09:00:00Z"))
    assert {e["type"] for e in evs} == set(types.split(","))
    assert [e["id"] for e in evs if e["type"] == "opsledger.finding"] == ["find-1", "find-2"]
    assert all(e["time"] < "2026-10-01T09:00:00" for e in evs)
    assert [e["position"] for e in evs] == sorted(e["position"] for e in evs)
    samples = jsonl(get(bed, "events", "jsonl", type="opsledger.metric.samples", cluster="c2"))
    assert len(samples) == 8 and json.loads(samples[0]["data"])["samples"]

    findings = jsonl(get(bed, "findings", "jsonl", **{"from": "2026-10-01T00:00:00Z"}))
    assert [(f["finding_id"], f["status"], f["cluster"]) for f in findings] == [
        ("f1", "RESOLVED", "c1"),
        ("f2", "ACTIVE", None),
    ]
    assert findings[1]["event_time"] == "2026-10-01T09:00:00.250000Z"


def test_figures_are_the_apis(bed: Bed) -> None:
    monthly = jsonl(get(bed, "incident_metrics_monthly", "jsonl"))
    r = bed.client.get(
        "/v1/incidents/metrics",
        params={"from": "2026-01-01T00:00:00Z", "to": AS_OF, "group_by": "month,severity"},
        headers=bed.headers("read"),
    )
    api = r.json()["groups"]
    assert [(m["month_start"][:7], m["severity"], m["incidents"]) for m in monthly] == [
        (g["key"]["month"], g["key"]["severity"], g["count"]) for g in api
    ]
    for m, g in zip(monthly, api, strict=True):
        for fig in ("mtta", "mttm", "mttr"):
            assert m[f"{fig}_median_s"] == g[fig]["median"]
            assert m[f"{fig}_p90_s"] == g[fig]["p90"] and m[f"{fig}_missing"] == g[fig]["missing"]
    by_key = {(m["month_start"], m["severity"]): m for m in monthly}
    p2 = by_key[("2026-10-01", "P2")]
    assert (p2["response_breaches"], p2["breach_rate"], p2["mttr_mean_s"]) == (1, 1.0, 86400.0)
    assert by_key[("2026-10-01", "P3")]["mtta_missing"] == 1
    assert {m["as_of"] for m in monthly} == {"2026-11-01T00:00:00.000000Z"}
    c2 = jsonl(get(bed, "incident_metrics_monthly", "jsonl", cluster="c2"))
    assert [(m["severity"], m["cluster"], m["incidents"]) for m in c2] == [
        ("P1", "c2", 1),
        ("P2", "c2", 1),
    ]

    items = jsonl(get(bed, "sla_breaches", "jsonl"))
    assert [(b["incident_id"], b["kind"], b["open"], b["met_at"]) for b in items] == [
        ("INC-B", "response", False, "2026-10-03T13:00:00.000000Z"),
        ("INC-D", "response", True, None),
    ]
    due = datetime.fromisoformat(items[1]["due_at"])
    assert items[1]["overrun_seconds"] == (datetime.fromisoformat(AS_OF) - due).total_seconds()
    r = bed.client.get(
        "/v1/sla/breaches",
        params={"from": "2026-01-01T00:00:00Z", "to": AS_OF},
        headers=bed.headers("read"),
    )
    api_items = r.json()["items"]
    assert [(b["incident_id"], b["kind"]) for b in api_items] == [
        (b["incident_id"], b["kind"]) for b in items
    ]
    assert [b["due_at"] for b in api_items] == [b["due_at"][:19] + "Z" for b in items]

    cost = jsonl(get(bed, "cost_daily", "jsonl"))
    assert len(cost) == 8
    restated = next(c for c in cost if (c["day"], c["service"]) == ("2026-10-01", "Amazon EC2"))
    assert restated["amount"] == 999.25
    oct1 = jsonl(
        get(
            bed,
            "cost_daily",
            "jsonl",
            **{"from": "2026-10-01T00:00:00Z"},
            to="2026-10-02T00:00:00Z",
        )
    )
    assert [c["day"] for c in oct1] == ["2026-10-01", "2026-10-01"]

    forecast = jsonl(get(bed, "storage_forecast", "jsonl"))
    r = bed.client.get(
        "/v1/storage/forecast", params={"as_of": FORECAST_AS_OF}, headers=bed.headers("read")
    )
    assert [(f["pvc"], f["days_to_90"], f["status"]) for f in forecast] == [
        (f["pvc"], f["days_to_90"], f["status"]) for f in r.json()["items"]
    ]
    assert forecast[0]["as_of"] == "2026-10-02T00:00:00.000000Z"


# -- schemas, versions, docs ------------------------------------------------------------------


def test_schemas_change_only_with_their_version() -> None:
    committed = json.loads(SNAPSHOT.read_text())
    current = snapshot()
    assert sorted(committed) == sorted(current), "a dataset was added or removed: update " + str(
        SNAPSHOT
    )
    for name, now in current.items():
        was = committed[name]
        if now["columns"] != was["columns"]:
            assert now["version"] != was["version"], (
                f"{name}'s schema changed without a version bump: raise its version in "
                "analytics/outputs/datasets.py, note the change in docs/bi.md, then update "
                f"tests/export_schemas.json to: {json.dumps(now)}"
            )
        assert now == was, (
            f"{name} is at version {now['version']}: update tests/export_schemas.json to "
            f"{json.dumps(now)}"
        )
        assert now["version"] >= 1


def test_every_schema_is_documented() -> None:
    bi = read_doc("bi.md")
    athena = {
        "string": "string",
        "int64": "bigint",
        "int32": "int",
        "double": "double",
        "bool": "boolean",
        "timestamp[us, tz=UTC]": "timestamp",
        "date32[day]": "date",
    }
    assert set(documented_pandas_types()) == set(athena)
    for ds in DATASETS.values():
        assert documented_columns(ds.name) == [(c.name, str(c.type)) for c in ds.columns]
        part = section(bi, re.compile(rf"^`{re.escape(ds.name)}`$"))
        assert part is not None and f"Schema version {ds.version}." in part
        m = re.search(
            rf"CREATE EXTERNAL TABLE opsledger\.{ds.name} \((.*?)\n\)\nPARTITIONED BY "
            r"\(`month` string\)\nSTORED AS PARQUET\n(.*?);",
            bi,
            re.DOTALL,
        )
        assert m is not None, f"docs/bi.md has no Athena DDL for {ds.name}"
        ddl = [line.strip().rstrip(",") for line in m.group(1).strip().splitlines()]
        assert ddl == [f"`{c.name}` {athena[str(c.type)]}" for c in ds.columns], ds.name
        assert f"dataset={ds.name}/month=${{month}}/" in m.group(2)
        assert f"'opsledger.schema_version' = '{ds.version}'" in m.group(2)


# -- errors, auth, the cap --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/export/nope.csv", {}, 404, "path.dataset"),
        ("/v1/export/incidents.xlsx", {}, 404, "path.format"),
        ("/v1/export/incidents", {}, 404, None),
        ("/v1/export/incidents.csv", {"from": "yesterday"}, 422, "query.from"),
        ("/v1/export/incidents.csv", {"from": AS_OF, "to": AS_OF}, 422, "query.from"),
        ("/v1/export/incidents.csv", {"as_of": AS_OF}, 422, "query.as_of"),
        ("/v1/export/incidents.csv", {"type": "opsledger.finding"}, 422, "query.type"),
        ("/v1/export/events.csv", {"type": "opsledger.nope"}, 422, "query.type"),
        ("/v1/export/storage_forecast.csv", {"to": AS_OF}, 422, "query.to"),
        ("/v1/export/sla_breaches.csv", {"as_of": "2026-13-01T00:00:00Z"}, 422, "query.as_of"),
    ],
)
def test_bad_requests_name_the_field(
    bed: Bed, path: str, params: dict[str, str], status: int, field: str | None
) -> None:
    r = bed.client.get(path, params=params, headers=bed.headers("read"))
    assert r.status_code == status, r.text
    if field is not None:
        assert [e["field"] for e in r.json()["errors"]] == [field], r.text


def test_a_read_key_is_needed(bed: Bed) -> None:
    assert bed.client.get("/v1/export/incidents.csv").status_code == 401
    r = bed.client.get("/v1/export/incidents.csv", headers={"Authorization": "Bearer olk_no"})
    assert r.status_code == 401
    assert get(bed, "incidents", "csv", scope="read").status_code == 200


def test_the_cap_refuses_up_front_and_spares_admin_keys(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = get(bed, "capacity_hourly", "csv", scope="admin").content
    monkeypatch.setattr(bed.app.state.settings, "export_max_bytes", len(whole) // 2)
    r = get(bed, "capacity_hourly", "csv")
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "OPSLEDGER_EXPORT_MAX_BYTES" in detail and f"({len(whole) // 2})" in detail
    assert get(bed, "capacity_hourly", "csv", scope="write").status_code == 413
    assert get(bed, "capacity_hourly", "csv", scope="admin").content == whole
    assert get(bed, "incidents", "csv").status_code == 200  # small ones still pass


# -- a real server: the cut stream, and the CLI delegating to it ------------------------------


def big_event(n: int) -> dict[str, Any]:
    # Quotes: stored as `\"` in the ledger's JSON, `\\\"` once that JSON is a JSON Lines string,
    # so the body is about twice what the estimate from stored bytes says.
    data = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"api.{n}", "namespace": "web"},
        "involvedObject": {"kind": "Pod", "name": "api", "namespace": "web"},
        "reason": "BackOff",
        "message": '"' * 2500,
        "type": "Warning",
    }
    return cloudevent("opsledger.k8s.event", data, id=f"big-{n}", cluster="c1")


@pytest.mark.slow
def test_a_stream_passing_the_cap_is_cut_and_the_cli_delegates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    settings = Settings(database_url=url, read_model_path=tmp_path / "rm.duckdb")
    app = create_app(settings)
    engine = app.state.ledger.engine
    _, write = create_key(engine, "w", "write")
    _, read = create_key(engine, "r", "read")
    _, admin = create_key(engine, "a", "admin")
    # Escaped text the estimate from stored bytes undercounts: the estimate passes the cap.
    raws = cost_events()[:2] + [big_event(n) for n in range(8)]
    raws += [
        cloudevent(
            "opsledger.incident.opened",
            {"incident_id": f"INC-{n}", "title": "t", "severity": "P2"},
            id=f"open-{n}",
            time=f"2026-10-0{n + 1}T00:00:00Z",
        )
        for n in range(3)
    ]
    monkeypatch.setattr(exports, "BATCH_ROWS", 2)
    with serve_in_thread(app, announce=settings.server_file, log_level="critical") as base:
        r = httpx.post(
            base + "/v1/events",
            content=json.dumps(raws),
            headers={"Authorization": f"Bearer {write}", "Content-Type": BATCH},
        )
        assert r.status_code == 200, r.text
        whole = httpx.get(
            base + "/v1/export/events.jsonl", headers={"Authorization": f"Bearer {admin}"}
        ).content
        limit = len(whole) * 3 // 4
        monkeypatch.setattr(settings, "export_max_bytes", limit)

        got = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream(
                "GET", base + "/v1/export/events.jsonl", headers={"Authorization": f"Bearer {read}"}
            ) as resp,
        ):
            assert resp.status_code == 200 and resp.headers["x-opsledger-rows"] == "13"
            for chunk in resp.iter_bytes():
                got += chunk
        assert 0 < len(got) <= limit and whole.startswith(bytes(got))

        # The CLI cannot open the read model the server holds: it asks the server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
        env |= {
            "OPSLEDGER_HOME": str(tmp_path / "home"),
            "OPSLEDGER_DATABASE_URL": url,
            "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
        }
        out = tmp_path / "incidents.jsonl"
        proc = subprocess.run(
            [str(OPSLEDGER), "export", "incidents", "-f", "jsonl", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "exported 3 rows of incidents" in proc.stderr
        r = httpx.get(
            base + "/v1/export/incidents.jsonl", headers={"Authorization": f"Bearer {read}"}
        )
        assert out.read_bytes() == r.content and len(r.content.splitlines()) == 3
        delegates = [k for k in list_keys(engine, include_revoked=True) if k.name == "cli-delegate"]
        # One to catch the server up, one for the Arrow stream; both revoked.
        assert len(delegates) == 2 and all(k.revoked_at_us for k in delegates)


# -- the CLI: month partitions on disk and in S3 ----------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="bi-exports")
    try:
        yield endpoint, client
    finally:
        server.stop()


def cli(args: list[str], home: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEDGER_", "AWS_"))}
    base |= {"OPSLEDGER_HOME": str(home), "OPSLEDGER_DATABASE_URL": url, **env}
    return subprocess.run(
        [str(OPSLEDGER), *args], capture_output=True, text=True, env=base, timeout=90, check=False
    )


def by_month(rows: list[dict[str, Any]], column: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row[column][:7], []).append(row)
    return out


@pytest.mark.slow
def test_cli_writes_month_partitions_locally_and_to_s3(
    bed: Bed, s3: tuple[str, Any], tmp_path: Path
) -> None:
    endpoint, client = s3
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "OPSLEDGER_EXPORT_S3_REGION": "us-east-1",
        "OPSLEDGER_EXPORT_S3_ENDPOINT_URL": endpoint,
    }
    # Its own home, so its own read model, caught up from the bed's ledger.
    home = tmp_path / "home"
    local = tmp_path / "exports"
    calls = [
        ["export", "incidents", "--out", "s3://bi-exports/fleet/"],
        ["export", "events", "--type", "opsledger.cost.daily", "--out", "s3://bi-exports/fleet"],
        [
            "export",
            "capacity_hourly",
            "--partition",
            "month",
            "--from",
            "2026-10-01T06:00:00Z",
            "--out",
            str(local),
        ],
        ["export", "incidents", "--format", "csv", "--partition", "month", "--out", str(local)],
        ["export", "nope", "--out", str(local)],
    ]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = list(pool.map(lambda a: cli(a, home / a[1], bed.url, **aws), calls))
    for proc in procs[:3]:
        assert proc.returncode == 0, proc.stderr
    assert procs[3].returncode == 2 and "--format parquet" in procs[3].stderr
    assert procs[4].returncode == 2 and "unknown dataset 'nope'" in procs[4].stderr

    listed = client.list_objects_v2(Bucket="bi-exports", Prefix="fleet/")["Contents"]
    assert sorted(o["Key"] for o in listed) == [
        "fleet/dataset=events/month=2026-09/part-0.parquet",
        "fleet/dataset=events/month=2026-10/part-0.parquet",
        "fleet/dataset=events/month=2026-11/part-0.parquet",
        "fleet/dataset=incidents/month=2026-09/part-0.parquet",
        "fleet/dataset=incidents/month=2026-10/part-0.parquet",
    ]
    head = client.head_object(
        Bucket="bi-exports", Key="fleet/dataset=incidents/month=2026-10/part-0.parquet"
    )
    assert head["ContentType"] == "application/vnd.apache.parquet"
    for name, column, query in (
        ("incidents", "opened_at", {}),
        ("events", "time", {"type": "opsledger.cost.daily"}),
    ):
        expected = by_month(jsonl(get(bed, name, "jsonl", **query)), column)
        for month, rows in expected.items():
            key = f"fleet/dataset={name}/month={month}/part-0.parquet"
            body = client.get_object(Bucket="bi-exports", Key=key)["Body"].read()
            table = pq.read_table(io.BytesIO(body))
            assert table.schema.equals(DATASETS[name].schema, check_metadata=True)
            assert normal_rows(table.to_pylist()) == rows, (name, month)

    # --from is moved back to the start of its month: the partition is the whole month.
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*.parquet"))
    assert files == [
        "dataset=capacity_hourly/month=2026-10/part-0.parquet",
    ]
    con = duckdb.connect()
    got = duck_rows(
        con,
        "SELECT * EXCLUDE (dataset, month) FROM read_parquet(?, hive_partitioning = true)",
        [str(local / "dataset=capacity_hourly" / "*" / "*.parquet")],
    )
    # Another read model, rebuilt by the CLI: sums may differ in the last bits (docs/analytics.md).
    expected = jsonl(get(bed, "capacity_hourly", "jsonl", **{"from": "2026-10-01T00:00:00Z"}))
    assert got == [
        {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in row.items()}
        for row in expected
    ]
    months = con.execute(
        "SELECT DISTINCT dataset, month FROM read_parquet(?, hive_partitioning = true)",
        [str(local / "*" / "*" / "*.parquet")],
    ).fetchall()
    assert months == [("capacity_hourly", "2026-10")]

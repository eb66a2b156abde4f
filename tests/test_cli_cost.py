"""`opsledger cost showback` and `opsledger cost forecast`, run as the real console script.

One node (m5.large from the price table, 0.30 an hour; 2 cores and 8 GiB) for one hour of
2026-10-14, two pods on it sampled at 10:00 and 10:30; weights 1 per core-hour and 0.25 per
GiB-hour, so s = 2 / (2 + 2) = 0.5: 0.075 per core-hour and 0.01875 per GiB-hour.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.cli import OPSLEDGER
from support.payloads import cloudevent, sample

from store.contract import validate_events
from store.ledger import Ledger
from store.migrate import upgrade

GIB = 2**30
# web: 1 core and 2 GiB → 0.075 + 0.0375; db: 0.5 core and 1 GiB → 0.0375 + 0.01875.
WEB, DB = 0.1125, 0.05625
IDLE = 0.30 - WEB - DB


def history() -> list[dict[str, Any]]:
    node = {
        "node": "n1", "ready": True, "nodepool": "general", "zone": "eu-west-1a",
        "instance_type": "m5.large",
        "allocatable": {"cpu_cores": 2.0, "memory_bytes": 8 * GIB, "pods": 110},
    }  # fmt: skip
    labels = {"node": "n1", "nodepool": "general", "zone": "eu-west-1a"}
    samples = []
    for minute in (0, 30):
        at = f"2026-10-14T10:{minute:02d}:00Z"
        samples += [
            sample("node_cpu_allocatable_cores", labels, at, 2.0),
            sample("node_memory_allocatable_bytes", labels, at, 8 * GIB),
        ]
        for ns, cpu, mem in (("web", 1.0, 2.0), ("db", 0.5, 1.0)):
            pod = {"namespace": ns, "pod": f"{ns}-0", "container": "main", "node": "n1"}
            samples += [
                sample("container_cpu_requests_cores", pod, at, cpu),
                sample("container_memory_requests_bytes", pod, at, mem * GIB),
            ]
    events = [
        cloudevent("opsledger.k8s.node.status", node, id="n1", cluster="prod"),
        cloudevent("opsledger.metric.samples", {"samples": samples}, id="s1", cluster="prod"),
    ]
    for i in range(39):  # Sep 1 .. Oct 9: 100 a day
        day = (date(2026, 9, 1) + timedelta(days=i)).isoformat()
        data = {"date": day, "service": "Amazon EC2", "amount": 100.0, "currency": "USD"}
        events.append(cloudevent("opsledger.cost.daily", data, id=f"c{i}", cluster=None))
    data = {"month": "2026-10", "amount": 3000.0, "currency": "USD"}
    events.append(cloudevent("opsledger.budget.set", data, id="b1", cluster=None))
    return events


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cost-cli")
    url = f"sqlite:///{home / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    try:
        ledger.append(validate_events(history()))
    finally:
        ledger.engine.dispose()
    (home / "prices.json").write_text(
        json.dumps({"currency": "USD", "instance_types": {"m5.large": 0.3}}), encoding="utf-8"
    )
    return home


def cli(home: Path, *args: str, prices: str = "prices.json") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(home),
        "OPSLEDGER_PRICE_TABLE_FILE": str(home / prices),
        "OPSLEDGER_COST_CPU_CORE_HOUR_WEIGHT": "1",
        "OPSLEDGER_COST_MEMORY_GIB_HOUR_WEIGHT": "0.25",
        "COLUMNS": "200",
    }
    return subprocess.run(
        [str(OPSLEDGER), "cost", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_showback_json_csv_and_table(home: Path) -> None:
    r = cli(home, "showback", "--month", "2026-10", "--by", "namespace", "--json")
    assert r.returncode == 0, r.stderr
    body = orjson.loads(r.stdout)
    got = {("(idle)" if i["idle"] else i["namespace"]): i for i in body["items"]}
    assert got["web"]["cost"] == pytest.approx(WEB)
    assert got["db"]["cost"] == pytest.approx(DB)
    assert got["(idle)"]["cost"] == pytest.approx(IDLE)
    assert body["totals"] == [
        {"cluster": "prod", "cost": pytest.approx(0.3), "currency": "USD", "unpriced": []}
    ]

    r = cli(home, "showback", "--month", "2026-10", "--by", "workload", "--cluster", "prod",
            "--csv")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert list(rows[0]) == [
        "cluster", "namespace", "workload_kind", "workload", "idle", "cpu_cost", "memory_cost",
        "cost", "share", "reason",
    ]  # fmt: skip
    names = [(row["namespace"], row["workload_kind"], row["workload"], row["idle"]) for row in rows]
    assert names == [
        ("", "", "", "true"),
        ("web", "Pod", "web-0", "false"),
        ("db", "Pod", "db-0", "false"),
    ]
    assert float(rows[1]["cost"]) == pytest.approx(WEB)
    assert float(rows[1]["share"]) == pytest.approx(WEB / 0.3)

    r = cli(home, "showback", "--month", "2026-10", "--by", "nodepool")
    assert r.returncode == 0, r.stderr
    assert "showback 2026-10 by nodepool (USD)" in r.stdout
    assert "general" in r.stdout and "(idle)" in r.stdout and "0.17" in r.stdout


def test_forecast_json_csv_and_table(home: Path) -> None:
    as_of = "2026-10-10T00:00:00Z"
    r = cli(home, "forecast", "--month", "2026-10", "--as-of", as_of, "--json")
    assert r.returncode == 0, r.stderr
    body = orjson.loads(r.stdout)
    assert body["spent_to_date"] == 900.0 and body["days_with_data"] == 9
    assert body["forecast"] == pytest.approx(3100.0) and body["budget"] == 3000.0
    assert body["status"] == "within_budget" and body["expansions"] == []

    r = cli(home, "forecast", "--month", "2026-10", "--as-of", as_of, "--csv")
    assert r.returncode == 0, r.stderr
    [row] = list(csv.DictReader(io.StringIO(r.stdout)))
    assert row["status"] == "within_budget" and float(row["forecast"]) == pytest.approx(3100)
    assert row["as_of"] == as_of and row["remaining_days"] == "22"

    r = cli(home, "forecast", "--month", "2026-10", "--as-of", as_of)
    assert r.returncode == 0, r.stderr
    assert "cost forecast 2026-10" in r.stdout and "3,100.00" in r.stdout
    assert "within_budget" in r.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("showback", "--month", "2026-13"), "--month"),
        (("showback", "--month", "2026-10", "--by", "team"), "--by"),
        (("showback", "--month", "2026-10", "--json", "--csv"), "--json and --csv"),
        (("forecast", "--month", "10/2026"), "--month"),
        (("forecast", "--month", "2026-10", "--as-of", "yesterday"), "--as-of"),
    ],
)
def test_bad_options_exit_2(home: Path, args: tuple[str, ...], words: str) -> None:
    r = cli(home, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr


def test_a_bad_price_table_is_a_clear_error(home: Path) -> None:
    (home / "bad.json").write_text('{"currency": "USD", "instance_types": []}', encoding="utf-8")
    r = cli(home, "showback", "--month", "2026-10", prices="bad.json")
    assert r.returncode == 1
    assert "bad.json: instance_types" in r.stderr and "Traceback" not in r.stderr


def test_through_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.beds import bed_settings
    from support.servers import announce_file, serve_in_thread

    from api.app import create_app

    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"currency": "USD", "instance_types": {"m5.large": 0.3}}), encoding="utf-8"
    )
    settings = bed_settings(
        tmp_path,
        projection_interval_seconds=3600,
        price_table_file=prices,
        cost_cpu_core_hour_weight=1.0,
        cost_memory_gib_hour_weight=0.25,
    )
    app = create_app(settings)
    app.state.ledger.append(validate_events(history()))
    announce = announce_file(settings, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path / "home"),
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OPSLEDGER), "cost", *args], capture_output=True, text=True, env=env, timeout=60
        )

    with serve_in_thread(app, announce=announce):
        r = run("showback", "--month", "2026-10", "--json")
        assert r.returncode == 0, r.stderr
        got = {i["namespace"]: i for i in orjson.loads(r.stdout)["items"] if not i["idle"]}
        assert got["web"]["cost"] == pytest.approx(WEB)
        r = run("forecast", "--month", "2026-10", "--as-of", "2026-10-10T00:00:00Z", "--csv")
        assert r.returncode == 0, r.stderr
        assert "within_budget" in r.stdout

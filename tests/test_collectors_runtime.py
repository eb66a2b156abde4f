"""The collector runtime: cursors, run health, the scheduler and `GET /v1/collectors`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.payloads import cost_daily

from api.app import create_app
from ingest.collectors.runtime import Sink, parse_duration, run_once
from ingest.collectors.scheduler import CollectorScheduler, backoff_seconds
from store.collectors import states
from store.keys import create_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings


@dataclass
class ListSource:
    """A source double: day-numbered cost items, two per step, failing when told to."""

    name: str = "test/cost"
    interval_seconds: float = 1.0
    items: int = 6
    fail_after: int | None = None
    calls: int = 0
    seen_cursors: list[Any] = field(default_factory=list)

    def collect(self, sink: Sink) -> None:
        self.calls += 1
        cursor = sink.cursor() or {"next": 0}
        self.seen_cursors.append(cursor)
        i = cursor["next"]
        while i < self.items:
            if self.fail_after is not None and i >= self.fail_after:
                raise ConnectionError("source unreachable at http://user:secret@x")
            batch = [
                cost_daily(f"day-{j}", amount=float(j)) for j in range(i, min(i + 2, self.items))
            ]
            i += len(batch)
            sink.emit(batch, {"next": i})


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    return Ledger.from_url(url)


def test_a_failed_run_resumes_after_the_last_committed_step(ledger: Ledger) -> None:
    source = ListSource(fail_after=3)
    r = run_once(ledger, source)
    assert r.error is not None and r.error.startswith("ConnectionError")
    assert (r.appended, ledger.head()) == (4, 4)  # two steps of two committed, the third failed
    source.fail_after = None
    r = run_once(ledger, source)
    assert r.error is None and (r.appended, r.duplicates) == (2, 0)
    assert source.seen_cursors[-1] == {"next": 4}
    assert ledger.head() == 6
    (st,) = states(ledger.engine)
    assert (st.runs, st.failures, st.events_appended, st.cursor) == (2, 0, 6, {"next": 6})


def test_durations_and_backoff() -> None:
    assert parse_duration("90s") == 90 and parse_duration("35d") == 35 * 86400
    for bad in ("", "5", "m", "1.5h", "-1m", "3w"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert backoff_seconds(60, 0) == 60
    assert [backoff_seconds(60, n) for n in (1, 2, 3)] == [120, 240, 480]
    assert backoff_seconds(60, 40) == 3600  # capped
    assert backoff_seconds(7200, 3) == 7200  # never shorter than the interval


@pytest.mark.slow
def test_the_scheduler_runs_each_source_on_its_interval(sqlite_ledger: Ledger) -> None:
    good = ListSource(name="test/good", items=2)
    pokes: list[int] = []
    scheduler = CollectorScheduler(sqlite_ledger, [good], lambda: pokes.append(1))
    scheduler.start()
    try:
        deadline = time.monotonic() + 15
        while good.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop()
    assert good.calls >= 3
    assert pokes == [1], "only the run that appended pokes the projector"


def test_a_failing_source_backs_off_exponentially(sqlite_ledger: Ledger) -> None:
    bad = ListSource(name="test/bad", interval_seconds=60, items=2, fail_after=0)
    scheduler = CollectorScheduler(sqlite_ledger, [bad])
    waits = []
    for _ in range(3):
        scheduler._run("test/bad")
        job = scheduler._scheduler.get_job("test/bad")
        waits.append(round(job.next_run_time.timestamp() - time.time()))
    assert waits == [120, 240, 480]
    bad.fail_after = None
    scheduler._run("test/bad")
    (st,) = states(sqlite_ledger.engine)
    assert (st.failures, st.runs) == (0, 4)
    assert "secret" not in (st.last_error or ""), "credentials in URLs are redacted"


def test_the_api_reports_collector_health(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    run_once(sqlite_ledger, ListSource(name="test/manual"))
    settings = Settings(
        database_url=str(sqlite_ledger.engine.url),
        home=tmp_path,
        read_model_path=tmp_path / "rm.duckdb",
    )
    source = ListSource(name="test/scheduled", interval_seconds=3600, fail_after=0)
    app = create_app(settings, projections=False, sources=[source])
    token = create_key(sqlite_ledger.engine, "t", "read")[1]
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while source.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        r = client.get("/v1/collectors", headers={"Authorization": f"Bearer {token}"})
        assert client.get("/v1/collectors").status_code == 401
    assert r.status_code == 200, r.text
    rows = {c["name"]: c for c in r.json()["collectors"]}
    manual, scheduled = rows["test/manual"], rows["test/scheduled"]
    assert manual["configured"] is False and manual["status"] == "ok"
    assert manual["events_appended"] == 6 and manual["lag_seconds"] >= 0
    assert scheduled["configured"] is True and scheduled["interval_seconds"] == 3600
    assert scheduled["status"] == "failing" and scheduled["failures"] == 1
    assert "ConnectionError" in scheduled["last_error"]


def test_the_documented_collectors_file_loads(tmp_path: Path) -> None:
    import re

    from ingest.collectors.config import load_collectors

    doc = (Path(__file__).parent.parent / "docs" / "collectors.md").read_text(encoding="utf-8")
    example = re.search(r"## The collectors file.*?```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    path = tmp_path / "collectors.yaml"
    path.write_text(example.group(1), encoding="utf-8")
    names = [c.name for c in load_collectors(path)]
    assert names == [
        "kubernetes/prod-eks-1",
        "prometheus/prod-eks-1",
        "aws/guardduty",
        "aws/securityhub",
        "aws/budget",
    ]


def test_a_bad_collectors_file_names_each_line_and_field(tmp_path: Path) -> None:
    from ingest.collectors.config import load_collectors
    from ingest.collectors.yamlfile import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(
        "clusters:\n"
        "  - name: a\n"
        "    kubernetes:\n"
        "      intervall: 1m\n"
        "  - name: a\n"
        "    prometheus:\n"
        "      url: http://p:9090\n"
        "      step: 1 minute\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_collectors(path)
    faults = {(f.line, f.field) for f in caught.value.faults}
    assert (4, "clusters[0].kubernetes.intervall") in faults
    assert (8, "clusters[1].prometheus.step") in faults
    path.write_text("clusters: [a, \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_collectors(path)

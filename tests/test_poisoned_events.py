"""Poisoned events: a projection skips what it cannot apply, says so, and nothing else stops.

Everything is real: ledgers on SQLite and PostgreSQL holding what an older release let in (an
incident opened in 9999, samples stamped 9999, a cost day that is no date, an incident without
its id), DuckDB read models, the app over HTTP and the `opsledger` console script. One
projection is the test's own (`Recorder`): a plugin of the projection protocol that records
the order it applies events in and fails on the ones it is told to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from support.capacity_tables import TABLES, assert_same_rows, values_sql
from support.cli import run_cli
from support.databases import BACKENDS, new_database_url
from support.disk import filled
from support.payloads import (
    cloudevent,
    cost_daily,
    incident_milestone,
    incident_opened,
    k8s_event,
    metric_samples,
    pod_status,
    sample,
)

from analytics.capacity.projection import CapacityProjection
from analytics.cost.projection import CostProjection
from analytics.incidents.projection import IncidentProjection
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import (
    EventOutOfRange,
    Runner,
    blames_the_event,
    outside_contract,
)
from api.app import create_app
from api.cli.common import out
from api.cli.projections import _local_states, _print_projections
from api.disk_full import is_disk_full
from store.contract import Event, SampleBatch, validate_event
from store.keys import create_key
from store.ledger import Ledger, RecordedEvent
from store.migrate import upgrade
from store.settings import Settings
from store.timefmt import MAX_US, MIN_US

#: The read model's "now" (naive UTC): October's and November's month ends are settled.
#: Every projection of the read model, in catch-up order.
NAMES = [p.name for p in default_projections()]
CLOCK = datetime(2026, 12, 7, 12, 0)
EPOCH = datetime(1970, 1, 1)
NODE = {"node": "node-a", "nodepool": "general", "zone": "z1"}
PVC = {"namespace": "data", "persistentvolumeclaim": "data-0"}
POD_STATUS = "opsledger.k8s.pod.status"


def us_of(naive_iso: str) -> int:
    """UTC microseconds of a naive ISO instant, any year datetime has (no contract bound)."""
    return (datetime.fromisoformat(naive_iso) - EPOCH) // timedelta(microseconds=1)


def legacy_time(ev: Event, naive_iso: str) -> Event:
    """The event with a time the contract now refuses, as an older release recorded it."""
    return dataclasses.replace(ev, time_us=us_of(naive_iso))


def legacy_ts(ev: Event, naive_iso: str) -> Event:
    """A samples event whose every sample is stamped with an instant the contract now refuses."""
    s = ev.samples
    assert s is not None and len(set(s.series_index.tolist())) == len(s)  # one sample a series
    ts = np.full_like(s.ts_us, us_of(naive_iso))
    return dataclasses.replace(ev, samples=SampleBatch(s.series, s.series_index, ts, s.values))


def node_scrape(n: int, t: str, id: str | None = None) -> Event:
    """A node's CPU usage and allocatable and a namespace's pod count at t (RFC 3339)."""
    rows = [
        sample("node_cpu_usage_cores", NODE, t, 1.0 + n),
        sample("node_cpu_allocatable_cores", NODE, t, 4.0),
        sample("namespace_pod_count", {"namespace": "web"}, t, 3.0 + n),
    ]
    return validate_event(metric_samples(id or f"scrape-{n}", rows, time=t))


def pvc_scrape(n: int, t: str, used: float, id: str | None = None) -> Event:
    """A PVC's used bytes and capacity at t (RFC 3339)."""
    rows = [sample("pvc_used_bytes", PVC, t, used), sample("pvc_capacity_bytes", PVC, t, 100e9)]
    return validate_event(metric_samples(id or f"pvc-{n}", rows, time=t))


def cost(id: str, day: str, service: str, amount: float) -> Event:
    """An `opsledger.cost.daily` event."""
    data = {"date": day, "service": service, "amount": amount, "currency": "USD"}
    return validate_event(cloudevent("opsledger.cost.daily", data, id=id, cluster=None))


def budget(id: str, month: str, amount: float) -> Event:
    """An `opsledger.budget.set` event."""
    data = {"month": month, "amount": amount, "currency": "USD"}
    return validate_event(cloudevent("opsledger.budget.set", data, id=id, cluster=None))


def no_incident_id(id: str) -> Event:
    """An incident opening without its incident_id (no stream: it names none)."""
    ev = validate_event(incident_opened(id, incident_id="INC-NOID"))
    return dataclasses.replace(ev, data={"title": "lost id", "severity": "P1"}, stream=None)


def bad_cost_day(id: str) -> Event:
    """A cost day on 30 February."""
    ev = validate_event(cost_daily(id))
    assert ev.data is not None
    return dataclasses.replace(ev, data={**ev.data, "date": "2026-02-30"})


#: The events an older release let in, and the projections that cannot apply each: how.
BAD: dict[str, dict[str, str]] = {
    "legacy-inc-9999": {"incidents": "EventOutOfRange"},
    "legacy-cap-9999": {
        "capacity": "EventOutOfRange",
        "workloads": "EventOutOfRange",
        "storage": "EventOutOfRange",
    },
    "legacy-pvc-9999": {
        "capacity": "EventOutOfRange",
        "workloads": "EventOutOfRange",
        "storage": "EventOutOfRange",
    },
    "legacy-cost-feb30": {"cost": "ConversionException"},
    "legacy-inc-noid": {"incidents": "KeyError"},
    "legacy-pod-9999": {"cluster_events": "EventOutOfRange"},
}


def mixed(with_bad: bool) -> list[Event]:
    """Valid events of every projection, with (or without) the bad ones in between."""
    t = "2026-10-14T04:{:02d}:00Z".format
    bad = [
        # The finding's own: it overflows the SLA's due time (P2: opened + 4 h).
        legacy_time(
            validate_event(
                incident_opened("legacy-inc-9999", incident_id="INC-9999", severity="P2")
            ),
            "9999-12-31T23:00:00",
        ),
        legacy_ts(node_scrape(99, t(0), id="legacy-cap-9999"), "9999-12-31T23:59:59"),
        legacy_ts(pvc_scrape(99, t(0), 1e9, id="legacy-pvc-9999"), "9999-12-06T00:00:00"),
        bad_cost_day("legacy-cost-feb30"),
        no_incident_id("legacy-inc-noid"),
        legacy_time(validate_event(pod_status("legacy-pod-9999")), "9999-12-31T23:00:00"),
    ]
    good: list[list[Event]] = [
        [node_scrape(0, t(0)), pvc_scrape(0, t(0), 40e9)],
        [validate_event(incident_opened("inc-1", incident_id="INC-1", severity="P2", time=t(5)))],
        [validate_event(pod_status("pod-1", time=t(6))), node_scrape(1, t(10))],
        [pvc_scrape(1, t(10), 41e9), validate_event(cost_daily("cost-1"))],
        [cost("cost-2", "2026-10-14", "Amazon S3", 7.5)],
        [
            validate_event(
                incident_milestone("acknowledged", "inc-1-ack", incident_id="INC-1", time=t(20))
            )
        ],
        [validate_event(k8s_event("k8s-1", time=t(25)))],
        [
            validate_event(incident_opened("inc-later", incident_id="INC-LATER", time=t(30))),
            node_scrape(2, t(20)),
            pvc_scrape(2, t(20), 42e9),
            budget("budget-1", "2026-10", 1000.0),
        ],
    ]
    out: list[Event] = []
    for i, group in enumerate(good):
        out += group
        if with_bad and i < len(bad):
            out.append(bad[i])
    return out


def positions_of(ledger: Ledger) -> dict[str, int]:
    """Each event id's ledger position."""
    return {ev.id: ev.position for ev in ledger.iter_all()}


def expected_poison(ledger: Ledger) -> dict[str, dict[int, str]]:
    """Per projection: the position of each bad event it must skip, and the error's type."""
    where = positions_of(ledger)
    out: dict[str, dict[int, str]] = {p.name: {} for p in default_projections()}
    for event_id, by in BAD.items():
        for name, error_type in by.items():
            out[name][where[event_id]] = error_type
    return out


def poisoned_of(runner: Runner) -> dict[str, dict[int, str]]:
    """Per projection: position and error type of each event it skipped."""
    return {s.name: {e.position: e.error_type for e in s.poisoned_events} for s in runner.status()}


# Working storage whose ids or positions depend on the ledger, not on what it says.
_SKIPPED_TABLES = frozenset(
    {"projection_checkpoints", "projection_poisoned", "projection_errors", "cap_members"}
)


def snapshot(model: ReadModel, positions: bool) -> dict[str, tuple[list[str], list[Any]]]:
    """Every table of the read model, rows sorted; capacity members named by their labels."""
    con = model.cursor()
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' ORDER BY 1"
        ).fetchall()
        if r[0] not in _SKIPPED_TABLES
    ]
    out: dict[str, tuple[list[str], list[Any]]] = {}
    for table in tables:
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                "ORDER BY column_index",
                [table],
            ).fetchall()
        ]
        source = table
        if table in ("cap_node_values", "cap_ns_values"):
            cols, source = list(TABLES[table]), f"({values_sql(table)})"
        # The Recorder's order of application differs with the pages by design.
        cols = [c for c in cols if c != "seq" and (positions or c != "position")]
        if not cols:  # cap_batches without positions: its sample counts
            cols = ["samples"]
        names = ", ".join(cols)
        rows = con.execute(f"SELECT {names} FROM {source} ORDER BY {names}").fetchall()
        out[table] = (cols, rows)
    return out


def assert_same_read_models(got: ReadModel, want: ReadModel, positions: bool) -> None:
    """The same tables with the same rows (floats to 1e-9 relative)."""
    a, b = snapshot(got, positions), snapshot(want, positions)
    assert sorted(a) == sorted(b)
    for table, (cols, rows) in a.items():
        assert cols == b[table][0], table
        assert_same_rows(table, cols, rows, b[table][1])


@pytest.fixture(params=BACKENDS)
def two_ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, Ledger]]:
    """Two fresh, migrated ledgers on each backend."""
    pair = tuple(
        Ledger.from_url(new_database_url(request.param, request, tmp_path, migrated=True))
        for _ in range(2)
    )
    try:
        yield pair[0], pair[1]
    finally:
        for led in pair:
            led.engine.dispose()


def test_bad_events_are_skipped_and_recorded_and_every_other_event_applied(
    two_ledgers: tuple[Ledger, Ledger], tmp_path: Path
) -> None:
    """The finding: events past 2199 (and others no projection can apply) in a ledger stop
    nothing; each projection ends where it would without them, and lists what it skipped."""
    ledger, clean = two_ledgers
    ledger.append(mixed(with_bad=True))
    clean.append(mixed(with_bad=False))
    path = tmp_path / "rm.duckdb"
    model = ReadModel(path)
    reference = ReadModel(":memory:")
    try:
        runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
        applied = runner.catch_up()
        head = ledger.head()
        status = runner.status()
        assert [(s.name, s.position, s.lag, s.last_error) for s in status] == [
            (p.name, head, 0, None) for p in default_projections()
        ]
        want = expected_poison(ledger)
        assert poisoned_of(runner) == want
        assert {s.name: s.poisoned for s in status} == {n: len(v) for n, v in want.items()}
        by_id = {ev.position: ev for ev in ledger.iter_all()}
        for s in status:
            for e in s.poisoned_events:
                ev = by_id[e.position]
                assert (e.type, e.id, e.source) == (ev.type, ev.id, ev.source)
                assert e.error and e.at == CLOCK
        incidents = {s.name: s for s in status}["incidents"].poisoned_events
        assert [e.error for e in incidents] == [
            "'incident_id'",
            "time 9999-12-31T23:00:00Z is outside 1970-01-01T00:00:00Z .. 2199-12-31T23:59:59Z",
        ]

        # The same figures as a read model of the ledger without the bad events.
        assert Runner(clean, reference, default_projections(), clock=lambda: CLOCK).catch_up() == (
            applied
        )
        assert_same_read_models(model, reference, positions=False)
        con = model.cursor()
        assert con.execute("SELECT incident_id, status FROM incidents ORDER BY 1").fetchall() == [
            ("INC-1", "acknowledged"),
            ("INC-LATER", "open"),
        ]

        # A restart neither tries them again nor records them twice.
        model.close()
        model = ReadModel(path)
        again = Runner(ledger, model, default_projections(), clock=lambda: CLOCK + timedelta(1))
        assert again.catch_up() == 0
        assert again.status() == status
        total = sum(len(v) for v in want.values())
        assert model.cursor().execute("SELECT count(*) FROM projection_poisoned").fetchone() == (
            total,
        )
    finally:
        model.close()
        reference.close()


def test_a_rebuild_finds_them_again_and_answers_with_the_later_events(
    two_ledgers: tuple[Ledger, Ledger], tmp_path: Path
) -> None:
    """rebuild() of a projection with poisoned events succeeds; its records are made anew."""
    ledger, _ = two_ledgers
    ledger.append(mixed(with_bad=True))
    model = ReadModel(tmp_path / "rm.duckdb")
    try:
        runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
        runner.catch_up()
        before = snapshot(model, positions=True)

        def later() -> datetime:
            return CLOCK + timedelta(hours=1)

        runner.clock = later
        assert runner.rebuild(["incidents"]) == 3
        assert poisoned_of(runner) == expected_poison(ledger)
        ats = {s.name: {e.at for e in s.poisoned_events} for s in runner.status()}
        assert ats["incidents"] == {later()}, "re-discovered, not kept"
        assert ats["cost"] == {CLOCK}, "other projections' records are untouched"
        assert snapshot(model, positions=True) == before
    finally:
        model.close()


# -- the runner's own rules --------------------------------------------------------------------


def test_only_failures_that_may_be_the_events_fault_poison_it() -> None:
    """The machine, the read model and the code are retried; the event's data is skipped."""
    full = os.strerror(errno.ENOSPC)
    not_the_event: list[BaseException] = [
        OSError(errno.ENOSPC, full),
        OSError(errno.EIO, "I/O error"),
        MemoryError(),
        duckdb.IOException(f'IO Error: Could not write file "x": {full}'),
        duckdb.TransactionException(f'Failed to commit: Could not write file "x": {full}'),
        duckdb.FatalException("database has been invalidated because of a previous fatal error"),
        duckdb.OutOfMemoryException("could not allocate block of size 256.0 KiB"),
        duckdb.CatalogException("Table with name cost_daily does not exist!"),
        duckdb.BinderException('Referenced column "nope" not found'),
        duckdb.InvalidInputException(f"No space left: {full}"),
        KeyboardInterrupt(),
    ]
    for exc in not_the_event:
        assert not blames_the_event(exc), exc
    try:  # a data error raised while handling the machine's is the machine's
        try:
            raise OSError(errno.ENOSPC, full)
        except OSError as disk:
            raise KeyError("incident_id") from disk
    except KeyError as chained:
        assert not blames_the_event(chained)
    the_event: list[BaseException] = [
        KeyError("incident_id"),
        ValueError("year 10000 is out of range"),
        OverflowError("date value out of range"),
        TypeError("'NoneType' object is not subscriptable"),
        duckdb.ConversionException('date field value out of range: "2026-02-30"'),
        duckdb.InvalidInputException("Invalid Input Error: bad value"),
        EventOutOfRange("time 9999-12-31T23:00:00Z is outside the range"),
    ]
    for exc in the_event:
        assert blames_the_event(exc), exc


def recorded(event_id: str, time_us: int, ts: Sequence[int] | None = None) -> RecordedEvent:
    """A recorded event as the ledger gives it back (metric samples when `ts` is given)."""
    samples = None
    if ts is not None:
        n = len(ts)
        samples = SampleBatch(
            (("pvc_used_bytes", "{}"),), np.zeros(n, np.int64), np.array(ts, np.int64), np.ones(n)
        )
    return RecordedEvent(1, "//t", event_id, "t", time_us, None, None, None, None, 0, {}, samples)


def test_the_contracts_range_is_checked_before_any_projection_sees_an_event() -> None:
    """Time and every sample ts within 1970 .. 2199 pass; outside, the message says which."""
    assert outside_contract(recorded("a", MIN_US, [MIN_US, MAX_US])) is None
    assert outside_contract(recorded("b", MAX_US, [])) is None
    for ev, message in (
        (recorded("c", MAX_US + 1), "time 2200-01-01T00:00:00Z is outside"),
        (recorded("d", MIN_US - 1), "time 1969-12-31T23:59:59.999999Z is outside"),
        (recorded("e", 0, [5, MAX_US + 1]), "a sample ts 2200-01-01T00:00:00Z is outside"),
        (recorded("f", 0, [-(2**62), 5]), f"a sample ts {-(2**62)} µs from the epoch is outside"),
        (recorded("g", 0, [2**62]), f"a sample ts {2**62} µs from the epoch is outside"),
    ):
        why = outside_contract(ev)
        assert isinstance(why, EventOutOfRange) and str(why).startswith(message), (ev.id, why)


def test_a_failure_no_event_is_to_blame_for_poisons_nothing_and_blocks_no_other_projection(
    sqlite_ledger: Ledger, tmp_path: Path
) -> None:
    """A table gone from the read model (cost's, where it applies; storage's, where it settles):
    nothing is skipped, both retry at each catch-up with `last_error` set, the others catch up;
    a new Runner still shows the errors, and the first catch-up that goes through clears them."""
    ledger = sqlite_ledger
    ledger.append(mixed(with_bad=False))
    path = tmp_path / "rm.duckdb"
    model = ReadModel(path)
    try:
        runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
        con = model.cursor()
        con.execute("DROP TABLE cost_daily")
        con.execute("DROP TABLE pvc_month_end")
        for _ in range(2):  # and again: the next catch-up retries, it skips nothing
            with pytest.raises(duckdb.CatalogException, match="pvc_month_end"):
                runner.catch_up()  # the first failure, raised once the others had their turn
            head = ledger.head()
            status = {s.name: s for s in runner.status()}
            assert sum(s.poisoned for s in status.values()) == 0
            assert {n: s.position for n, s in status.items()} == {
                n: 0 if n == "cost" else head for n in NAMES
            }
            errors = {n: s.last_error for n, s in status.items() if s.last_error is not None}
            assert sorted(errors) == ["cost", "storage"]
            assert (errors["cost"].stage, errors["cost"].position) == ("apply", 0)
            assert (errors["storage"].stage, errors["storage"].position) == ("settle", head)
            assert {e.error_type for e in errors.values()} == {"CatalogException"}
            assert "cost_daily" in errors["cost"].error and errors["cost"].at == CLOCK

        # Kept in the read model: `opsledger projections status` run later shows them.
        model.close()
        model = ReadModel(path)
        runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
        assert {s.name: s.last_error for s in runner.status()} == {
            s.name: s.last_error for s in status.values()
        }
        # The tables back: the next catch-up goes through and forgets the errors.
        for p in runner.projections.values():
            p.create(model.cursor())
        assert runner.catch_up() == 3  # cost's two days and its budget, and nothing else
        assert [(s.position, s.last_error, s.poisoned) for s in runner.status()] == [
            (head, None, 0)
        ] * len(NAMES)
        assert model.cursor().execute("SELECT count(*) FROM projection_errors").fetchone() == (0,)
        days = model.cursor().execute("SELECT day, service FROM cost_daily ORDER BY 1").fetchall()
        assert [str(d) for d, _ in days] == ["2026-10-13", "2026-10-14"]
        settled = "SELECT boundary FROM pvc_month_end_settled ORDER BY 1"
        assert [str(b) for (b,) in model.cursor().execute(settled).fetchall()] == [
            "2026-11-01 00:00:00",
            "2026-12-01 00:00:00",
        ]
    finally:
        model.close()


# -- property: exactly once, in order, whatever the pages ---------------------------------------


class Recorder:
    """The test's projection of pod statuses: a row per event it applies, in the order applied.

    It fails on events whose id starts with `bad-` (always) or `flaky-` (the first try only),
    after writing its rows, so a failed page must leave nothing behind.
    """

    name = "recorder"
    version = 1
    types: tuple[str, ...] = (POD_STATUS,)
    batch_events = 3

    def __init__(self) -> None:
        self.tries: Counter[int] = Counter()
        self.seq = 0

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create its table."""
        con.execute("CREATE TABLE IF NOT EXISTS rec_applied (seq BIGINT, position BIGINT)")

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop its table."""
        con.execute("DROP TABLE IF EXISTS rec_applied")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Record each event, then fail if one of them is marked to."""
        rows = []
        for ev in events:
            self.seq += 1
            self.tries[ev.position] += 1
            rows.append((self.seq, ev.position))
        con.executemany("INSERT INTO rec_applied VALUES (?, ?)", rows)
        for ev in events:
            if ev.id.startswith("bad-"):
                raise ValueError(f"cannot apply {ev.id}")
            if ev.id.startswith("flaky-") and self.tries[ev.position] == 1:
                raise RuntimeError(f"{ev.id}: a hiccup")


#: kind -> (the projection that must skip it, or None for a good event; its projection)
KINDS: dict[str, tuple[str | None, str]] = {
    "inc": (None, "incidents"),
    "inc-noid": ("incidents", "incidents"),
    "inc-9999": ("incidents", "incidents"),
    "cost": (None, "cost"),
    "cost-feb30": ("cost", "cost"),
    "scrape": (None, "capacity"),
    "scrape-9999": ("capacity", "capacity"),
    "pod": (None, "recorder"),
    "pod-bad": ("recorder", "recorder"),
    "pod-flaky": (None, "recorder"),
}
SLOTS = [f"2026-10-14T{h:02d}:{m:02d}:00Z" for h in (3, 4, 23) for m in (0, 30)]


def make(kind: str, n: int, slot: str) -> Event:
    """Event n of a kind, at a slot."""
    if kind == "inc":
        return validate_event(incident_opened(f"inc-{n}", incident_id=f"INC-{n}", time=slot))
    if kind == "inc-noid":
        return no_incident_id(f"inc-noid-{n}")
    if kind == "inc-9999":
        ev = validate_event(incident_opened(f"inc-9999-{n}", incident_id=f"INC-{n}", severity="P3"))
        return legacy_time(ev, "9999-12-31T20:00:00")
    if kind == "cost":
        return cost(f"cost-{n}", slot[:10], f"service-{n % 3}", float(n))
    if kind == "cost-feb30":
        return bad_cost_day(f"cost-feb30-{n}")
    if kind == "scrape":
        return node_scrape(n, slot)
    if kind == "scrape-9999":
        return legacy_ts(node_scrape(n, slot), "9999-12-31T23:59:59")
    prefix = {"pod": "pod", "pod-bad": "bad-pod", "pod-flaky": "flaky-pod"}[kind]
    return validate_event(pod_status(f"{prefix}-{n}", restarts=n, time=slot))


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[tuple[str, Event]], list[Any]]:
    """Events of every kind, and steps: append k, catch up (page sizes, page limit), reopen."""
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=18))
    events = [(k, make(k, n, draw(st.sampled_from(SLOTS)))) for n, k in enumerate(kinds)]
    steps: list[Any] = []
    left = len(events)
    while left:
        k = draw(st.integers(1, left))
        left -= k
        steps.append(("append", k))
        for _ in range(draw(st.integers(0, 2))):
            sizes = draw(st.lists(st.integers(1, 5), min_size=4, max_size=4))
            steps.append(("catch_up", sizes, draw(st.sampled_from([1, 2, None]))))
        if draw(st.booleans()):
            steps.append(("reopen",))
    steps.append(("catch_up", draw(st.lists(st.integers(1, 5), min_size=4, max_size=4)), None))
    return events, steps


def property_projections() -> list[Any]:
    """The projections the property runs: three real ones and the Recorder."""
    return [CapacityProjection(), IncidentProjection(), CostProjection(), Recorder()]


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite ledger, copied for each example."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_every_good_event_is_applied_exactly_once_in_order_whatever_the_pages(
    migrated_template: Path, plan: tuple[list[tuple[str, Event]], list[Any]]
) -> None:
    """Appends, catch-ups in random page sizes and page limits, restarts: each good event is
    applied once, in position order, each bad one skipped and recorded once, and the read
    model is the one a single-page rebuild of the ledger gives."""
    events, steps = plan
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(migrated_template, Path(tmp) / "ledger.db")
        ledger = Ledger.from_url(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        path = Path(tmp) / "rm.duckdb"
        projections = property_projections()
        model = ReadModel(path)
        runner = Runner(ledger, model, projections, clock=lambda: CLOCK)
        fed = 0
        try:
            for step in steps:
                if step[0] == "append":
                    ledger.append([ev for _, ev in events[fed : fed + step[1]]])
                    fed += step[1]
                elif step[0] == "catch_up":
                    for p, size in zip(projections, step[1], strict=True):
                        p.batch_events = size
                    runner.catch_up(max_batches=step[2])  # never raises: nothing but data fails
                else:
                    model.close()
                    model = ReadModel(path)
                    runner = Runner(ledger, model, projections, clock=lambda: CLOCK)
            head = ledger.head()
            where = {ev.id: ev.position for ev in ledger.iter_all()}
            good: dict[str, list[int]] = {p.name: [] for p in projections}
            bad: dict[str, dict[int, str]] = {p.name: {} for p in projections}
            for kind, ev in events:
                skipped_by, owner = KINDS[kind]
                if skipped_by is None:
                    good[owner].append(where[ev.id])
                else:
                    bad[skipped_by][where[ev.id]] = ev.id
            assert [(s.position, s.last_error) for s in runner.status()] == [(head, None)] * 4
            con = model.cursor()
            skipped = con.execute(
                "SELECT name, position, event_id FROM projection_poisoned ORDER BY 1, 2"
            ).fetchall()
            assert skipped == sorted((n, p, i) for n, b in bad.items() for p, i in b.items())
            for name, sql in (
                ("recorder", "SELECT position FROM rec_applied ORDER BY seq"),
                ("capacity", "SELECT position FROM cap_batches ORDER BY position"),
                ("incidents", "SELECT position FROM inc_events ORDER BY position"),
                ("cost", "SELECT position FROM cost_daily ORDER BY position"),
            ):
                # Sorted by the order applied, the positions of the good events: each once.
                assert [r[0] for r in con.execute(sql).fetchall()] == good[name], name

            reference = ReadModel(":memory:")
            try:
                fresh = property_projections()
                for p in fresh:
                    p.batch_events = 100_000
                Runner(ledger, reference, fresh, clock=lambda: CLOCK).catch_up()
                assert_same_read_models(model, reference, positions=True)
            finally:
                reference.close()
        finally:
            model.close()
            ledger.engine.dispose()


# -- what the API, /metrics, the digest and the CLI show ---------------------------------------


def scrape_metrics(client: TestClient, headers: dict[str, str]) -> dict[str, dict[str, float]]:
    """The projection samples of /metrics: {name: {projection: value}}."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if "projection" in s.labels:
                out.setdefault(s.name, {})[s.labels["projection"]] = s.value
    return out


def test_the_api_metrics_and_digest_report_them_and_a_rebuild_answers_200(
    backend_url: str, tmp_path: Path
) -> None:
    """GET /v1/projections lists each skipped event, /metrics counts them, the digest flags
    them, a rebuild of `incidents` answers 200 with the later incidents; a failing projection
    shows its last error in all three and the others still catch up."""
    app = create_app(
        Settings(
            database_url=backend_url,
            home=tmp_path,
            projection_interval_seconds=3600,
            metrics_cache_seconds=0,
            metrics_forecast_cache_seconds=0,
        )
    )
    ledger: Ledger = app.state.ledger
    tokens = {s: create_key(ledger.engine, f"t-{s}", s)[1] for s in ("read", "admin")}
    read = {"Authorization": f"Bearer {tokens['read']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        ledger.append(mixed(with_bad=True))  # around the API, as an older release did
        r = client.post("/v1/projections/catch-up", headers=admin)
        assert r.status_code == 200, r.text
        head, want = ledger.head(), expected_poison(ledger)
        states = client.get("/v1/projections", headers=read).json()["projections"]
        assert {s["name"]: (s["position"], s["lag"], s["last_error"]) for s in states} == {
            n: (head, 0, None) for n in want
        }
        assert {s["name"]: s["poisoned"] for s in states} == {n: len(v) for n, v in want.items()}
        assert {
            s["name"]: {e["position"]: e["error_type"] for e in s["poisoned_events"]}
            for s in states
        } == want
        cost_state = next(s for s in states if s["name"] == "cost")
        (skipped,) = cost_state["poisoned_events"]
        assert skipped | {"at": None} == {
            "position": positions_of(ledger)["legacy-cost-feb30"],
            "type": "opsledger.cost.daily",
            "id": "legacy-cost-feb30",
            "source": "//opsledger.test/collector",
            "error_type": "ConversionException",
            "error": 'Conversion Error: date field value out of range: "2026-02-30"',
            "at": None,
        }
        runner: Runner = app.state.projector.runner
        assert states == _local_states(runner), "the CLI prints the API's body"
        # The report waits for every projection to reach the head: it no longer times out.
        r = client.get("/reports/capacity/2026-10", headers=read)
        assert r.status_code == 200, r.text[:500]

        m = scrape_metrics(client, read)
        assert m["opsledger_projection_poisoned_events"] == {
            n: float(len(v)) for n, v in want.items()
        }
        assert m["opsledger_projection_failing"] == dict.fromkeys(want, 0.0)
        assert "opsledger_projection_last_error_timestamp_seconds" not in m

        digest = client.get("/v1/digest", headers=read).json()
        section = digest["sections"]["projections"]
        total = sum(len(v) for v in want.values())
        assert digest["status"] == "attention" and "projections" in digest["summary"]
        assert section["status"] == "attention"
        assert section["poisoned_in_window"] == section["poisoned_total"] == total
        assert sorted((i["projection"], i["position"]) for i in section["poisoned"]) == sorted(
            (n, p) for n, v in want.items() for p in v
        )
        assert section["summary"].startswith(f"{total} events skipped as poisoned in the window")
        md = client.get("/v1/digest", params={"format": "markdown"}, headers=read).text
        assert "## Events skipped as poisoned" in md and "| legacy-cost-feb30 |" in md

        r = client.post("/v1/projections/rebuild", params={"name": "incidents"}, headers=admin)
        assert r.status_code == 200, r.text
        rebuilt = next(s for s in r.json()["projections"] if s["name"] == "incidents")
        assert (rebuilt["position"], rebuilt["poisoned"]) == (head, 2)
        for incident in ("INC-1", "INC-LATER"):
            r = client.get(f"/v1/incidents/{incident}", headers=read)
            assert r.status_code == 200, r.text

        # A failure no event is to blame for: the read model's cost table is gone.
        with runner.model.write_lock:
            runner.model.cursor().execute("DROP TABLE cost_daily")
        ledger.append([cost("cost-3", "2026-10-15", "Amazon EC2", 3.0)])
        r = client.post("/v1/projections/catch-up", headers=admin)
        assert r.status_code == 500, r.text
        states = {
            s["name"]: s for s in client.get("/v1/projections", headers=read).json()["projections"]
        }
        assert {n: s["lag"] for n, s in states.items()} == {
            n: 1 if n == "cost" else 0 for n in NAMES
        }
        error = states["cost"]["last_error"]
        assert (error["stage"], error["error_type"]) == ("apply", "CatalogException")
        assert states["cost"]["poisoned"] == 1, "nothing more is skipped"
        m = scrape_metrics(client, read)
        assert m["opsledger_projection_failing"]["cost"] == 1.0
        assert list(m["opsledger_projection_last_error_timestamp_seconds"]) == ["cost"]
        section = client.get("/v1/digest", headers=read).json()["sections"]["projections"]
        assert [(f["projection"], f["stage"]) for f in section["failing"]] == [("cost", "apply")]
        assert section["summary"].endswith("; failing: cost (apply: CatalogException)")

        with out.capture() as printed:
            _print_projections(list(states.values()))
        text = printed.get()
        assert "cost: failing (apply at position" in text and "CatalogException: " in text
        assert "legacy-cost-feb30  ConversionException" in text

        r = client.post("/v1/projections/rebuild", params={"name": "cost"}, headers=admin)
        assert r.status_code == 200, r.text
        mended = next(s for s in r.json()["projections"] if s["name"] == "cost")
        assert (mended["lag"], mended["last_error"], mended["poisoned"]) == (0, None, 1)
        assert scrape_metrics(client, read)["opsledger_projection_failing"]["cost"] == 0.0


@pytest.mark.slow
def test_opsledger_projections_status_lists_them(tmp_path: Path) -> None:
    """`opsledger project` and `opsledger projections status` (no server) show the count per
    projection and a line per skipped event, with its position and error."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    try:
        ledger.append(mixed(with_bad=True))
        want = expected_poison(ledger)
        where = {v: k for k, v in positions_of(ledger).items()}
    finally:
        ledger.engine.dispose()
    project = run_cli(["project"], tmp_path, url)
    assert project.returncode == 0, project.stderr
    status = run_cli(["projections", "status"], tmp_path, url)
    assert status.returncode == 0, status.stderr
    for printed in (project.stdout, status.stdout):
        rows = {
            cells[0]: cells
            for line in printed.splitlines()
            if line.startswith("│")
            and (cells := [c.strip() for c in line.strip("│").split("│")])[0] in want
        }
        assert {n: int(cells[5]) for n, cells in rows.items()} == {
            n: len(v) for n, v in want.items()
        }, printed
        assert {cells[6] for cells in rows.values()} == {""}
        for name, skipped in want.items():
            if skipped:
                assert f"{name}: {len(skipped)} poisoned event(s) skipped:" in printed
            for position, error_type in skipped.items():
                line = next(
                    x for x in printed.splitlines() if x.startswith(f"  position {position} ")
                )
                assert where[position] in line and f"{error_type}: " in line, line


def test_a_full_disk_under_the_read_model_poisons_nothing(
    disk: Path,
    sqlite_ledger: Ledger,
) -> None:
    """Catch-ups on a read model whose disk is full fail without skipping an event; with
    space back (and the file reopened), every event is applied, as without the full disk."""
    ledger = sqlite_ledger
    ledger.append(mixed(with_bad=False)[:3])
    path = disk / "rm.duckdb"
    model = ReadModel(path)
    try:
        Runner(ledger, model, default_projections(), clock=lambda: CLOCK).catch_up()
        more = [node_scrape(10 + n, f"2026-10-15T{n:02d}:00:00Z") for n in range(24)]
        ledger.append(more + mixed(with_bad=False)[3:])
        with filled(disk):
            runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
            with pytest.raises(Exception) as raised:
                runner.catch_up()
            assert is_disk_full(raised.value), raised.value
            assert not blames_the_event(raised.value)
            status = runner.status() if model_usable(model) else []
            # A projection with nothing to apply (no event of its types) stays caught up.
            assert all(
                s.poisoned == 0 and (s.last_error is not None or s.lag == 0) for s in status
            ), status
            assert any(s.last_error is not None for s in status), status
        with contextlib.suppress(duckdb.Error):
            model.close()
        model = ReadModel(path)  # a fatal error invalidates the database until it is reopened
        runner = Runner(ledger, model, default_projections(), clock=lambda: CLOCK)
        runner.catch_up()
        head = ledger.head()
        assert [(s.position, s.poisoned, s.last_error) for s in runner.status()] == [
            (head, 0, None)
        ] * len(NAMES)
        reference = ReadModel(":memory:")
        try:
            Runner(ledger, reference, default_projections(), clock=lambda: CLOCK).catch_up()
            assert_same_read_models(model, reference, positions=True)
        finally:
            reference.close()
    finally:
        with contextlib.suppress(duckdb.Error):
            model.close()


def model_usable(model: ReadModel) -> bool:
    """Whether the read model still answers (a fatal error invalidates it)."""
    try:
        model.cursor().execute("SELECT 1").fetchall()
    except duckdb.Error:
        return False
    return True

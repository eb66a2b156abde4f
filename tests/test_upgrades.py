"""Upgrades keep the ledger: data written at every earlier revision reads back the same at head.

pytest-alembic (tests/test_migrations.py) checks that the revisions upgrade and downgrade on
empty databases; this file checks what they do to a ledger holding events, interned series and
API keys, and that a ledger migrated by a newer release is refused rather than half-migrated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from support.cli import OPSLEDGER, run_cli, run_cli_many
from support.payloads import (
    cost_daily,
    incident_milestone,
    incident_opened,
    k8s_event,
    metric_samples,
    node_status,
    pod_status,
    sample,
)
from support.servers import free_port

from ingest.incidents import stream_of
from store.contract import validate_events
from store.engine import make_engine
from store.keys import Scope, authenticate, create_key, revoke_key
from store.ledger import EVENT_COLUMNS, Ledger
from store.migrate import (
    NewerLedgerError,
    alembic_config,
    check_current,
    head_revision,
    upgrade,
)
from store.schema import api_keys, series

SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = SCRIPTS.get_current_head()
#: Every revision before head, oldest first: a new revision puts its predecessor here.
EARLIER = [s.revision for s in reversed(list(SCRIPTS.walk_revisions())) if s.revision != HEAD]
#: A revision id as a newer release would leave in alembic_version.
FUTURE = "0999_from_a_newer_release"
#: The ledger's tables, ordered by a key that survives an upgrade.
ORDER = {"events": "position", "series": "series_id", "api_keys": "key_id"}

NODE_A = {"node": "ip-10-0-1-1.ec2.internal", "nodepool": "general", "zone": "us-east-1a"}
NODE_B = {"node": "ip-10-0-1-2.ec2.internal", "nodepool": "gpu", "zone": "us-east-1b"}
PVC = {"namespace": "payments", "persistentvolumeclaim": "data-postgres-0"}


def _history() -> list[tuple[list[dict[str, Any]], dict[str, int] | None]]:
    """Appends as a ledger accumulates them: (events, expected stream versions)."""
    first = [
        incident_opened("h-inc1-open", incident_id="INC-1", time="2026-10-01T00:00:00Z"),
        pod_status("h-pod-1", time="2026-10-01T00:01:00.123456Z"),
        metric_samples(
            "h-prom-1",
            time="2026-10-01T00:02:00Z",
            samples=[
                sample("node_cpu_usage_cores", NODE_A, "2026-10-01T00:00:00Z", 1.25),
                sample("node_cpu_usage_cores", NODE_B, "2026-10-01T00:00:00Z", 7.5),
                sample("pvc_used_bytes", PVC, 1759276800, 81604378624),
            ],
        ),
        cost_daily("h-cost-1"),
    ]
    second = [
        incident_milestone("acknowledged", "h-inc1-ack", incident_id="INC-1"),
        incident_milestone("resolved", "h-inc1-res", incident_id="INC-1", by=None),
        # One series already interned, one new: ids are reused, not re-created.
        metric_samples(
            "h-prom-2",
            time="2026-10-01T00:03:00Z",
            samples=[
                sample("node_cpu_usage_cores", NODE_A, "2026-10-01T00:01:00Z", 1.5),
                sample("node_memory_usage_bytes", NODE_A, "2026-10-01T00:01:00Z", 2.5e9),
                sample("node_cpu_usage_cores", NODE_A, "2026-10-01T00:02:00Z", -0.0),
            ],
        ),
        node_status("h-node-1", time="2026-10-01T00:04:00Z"),
        k8s_event("h-k8s-1", time="2026-10-01T00:05:00Z"),
    ]
    third = [
        # A re-sent event is a duplicate, not a new position.
        pod_status("h-pod-1", time="2026-10-01T00:01:00.123456Z"),
        incident_opened("h-inc2-open", incident_id="INC-2", severity="P2"),
    ]
    return [
        (first, {stream_of("INC-1"): 0}),
        (second, {stream_of("INC-1"): 1}),
        (third, None),
    ]


def _columns(engine: sa.Engine) -> dict[str, set[str]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def _ledger_can_write(columns: dict[str, set[str]]) -> bool:
    """Whether this code's Ledger and keys can write the schema as it stands."""
    needs = {
        "events": set(EVENT_COLUMNS),
        "series": set(series.columns.keys()),
        "api_keys": set(api_keys.columns.keys()),
    }
    return all(need <= columns.get(table, set()) for table, need in needs.items())


@dataclass
class Written:
    """What a ledger at an earlier revision holds, as read before the upgrade."""

    cloudevents: list[dict[str, Any]]
    rows: dict[str, list[tuple[Any, ...]]]
    columns: dict[str, set[str]]
    tokens: dict[str, tuple[str, str]]  # name -> (token, key id)
    revoked: str


def _append_history(ledger: Ledger) -> dict[str, tuple[str, str]]:
    for raws, expected in _history():
        ledger.append(validate_events(raws), expected)
    tokens = {}
    scopes: tuple[tuple[str, Scope], ...] = (
        ("grafana", "read"),
        ("collector", "write"),
        ("ops", "admin"),
    )
    for name, scope in scopes:
        key, token = create_key(ledger.engine, name, scope)
        tokens[name] = (token, key.key_id)
    key, token = create_key(ledger.engine, "departed", "write")
    revoke_key(ledger.engine, key.key_id)
    tokens["departed"] = (token, key.key_id)
    return tokens


def _rows(engine: sa.Engine, columns: dict[str, set[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the ledger's tables, in the columns the earlier revision had."""
    out = {}
    with engine.connect() as conn:
        for table, key in ORDER.items():
            if table not in columns:
                continue
            names = sorted(columns[table])
            q = sa.text(f"SELECT {', '.join(names)} FROM {table} ORDER BY {key}")
            out[table] = [
                tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                for r in conn.execute(q)
            ]
    return out


def _copy_rows(source: sa.Engine, target: sa.Engine, columns: dict[str, set[str]]) -> None:
    """Raw inserts of a head ledger's rows, in the columns an earlier revision has."""
    with source.connect() as src, target.begin() as dst:
        for table, key in ORDER.items():
            names = sorted(columns.get(table, set()) & _columns(source)[table])
            if not names:
                continue
            rows = src.execute(sa.text(f"SELECT {', '.join(names)} FROM {table} ORDER BY {key}"))
            dicts = [dict(r._mapping) for r in rows]
            if dicts:
                marks = ", ".join(f":{n}" for n in names)
                dst.execute(
                    sa.text(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})"), dicts
                )


def _write_history(url: str, scratch: Path) -> Written:
    """Write the history as a ledger at the database's revision would hold it."""
    engine = make_engine(url)
    try:
        columns = _columns(engine)
        if _ledger_can_write(columns):
            ledger = Ledger(engine)
            tokens = _append_history(ledger)
            cloudevents = [e.to_cloudevent() for e in ledger.iter_all(batch=4)]
        else:
            # This code cannot write the older schema: make the rows with a ledger at head and
            # insert what the older schema has room for.
            head_url = f"sqlite:///{scratch / 'head.db'}"
            upgrade(head_url)
            head = Ledger.from_url(head_url)
            try:
                tokens = _append_history(head)
                cloudevents = [e.to_cloudevent() for e in head.iter_all(batch=4)]
                _copy_rows(head.engine, engine, columns)
            finally:
                head.engine.dispose()
        revoked = tokens.pop("departed")[0]
        return Written(cloudevents, _rows(engine, columns), columns, tokens, revoked)
    finally:
        engine.dispose()


def _read_back(url: str, written: Written) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    engine = make_engine(url)
    try:
        ledger = Ledger(engine)
        return [e.to_cloudevent() for e in ledger.iter_all(batch=4)], _rows(engine, written.columns)
    finally:
        engine.dispose()


def _assert_kept(url: str, written: Written) -> None:
    cloudevents, rows = _read_back(url, written)
    assert cloudevents == written.cloudevents
    # Positions, stream versions, recorded_at, digests, sample blobs and series ids, as stored.
    assert rows == written.rows
    positions = [e["position"] for e in cloudevents]
    assert positions == list(range(1, len(positions) + 1))
    assert [(e["id"], e["streamversion"]) for e in cloudevents if "stream" in e] == [
        ("h-inc1-open", 1),
        ("h-inc1-ack", 2),
        ("h-inc1-res", 3),
        ("h-inc2-open", 1),
    ]
    engine = make_engine(url)
    try:
        for name, (token, key_id) in written.tokens.items():
            key = authenticate(engine, token)
            assert key is not None and (key.key_id, key.name) == (key_id, name)
        assert authenticate(engine, written.revoked) is None
    finally:
        engine.dispose()


@pytest.fixture(params=EARLIER)
def revision(request: pytest.FixtureRequest) -> str:
    """Each revision before head (none when head is the only one: nothing to upgrade from)."""
    return str(request.param)


def test_there_are_earlier_revisions_to_upgrade_from() -> None:
    # Guards the parametrisation: an empty EARLIER would silently test nothing.
    assert EARLIER and HEAD not in EARLIER
    assert SCRIPTS.get_revision(EARLIER[0]).down_revision is None


def test_upgrade_keeps_every_event(empty_database_url: str, revision: str, tmp_path: Path) -> None:
    url = empty_database_url
    upgrade(url, revision)
    engine = make_engine(url)
    try:
        assert check_current(engine).state == "behind"
    finally:
        engine.dispose()
    written = _write_history(url, tmp_path)
    assert len(written.cloudevents) == 10
    assert sum(1 for e in written.cloudevents if e["type"] == "opsledger.metric.samples") == 2

    upgrade(url)

    engine = make_engine(url)
    try:
        check = check_current(engine)
        assert (check.state, check.current) == ("current", (HEAD,))
    finally:
        engine.dispose()
    _assert_kept(url, written)

    # The upgraded ledger goes on: re-sent history is all duplicates at the same positions, an
    # incident's stream continues from its version, and positions stay contiguous.
    ledger = Ledger.from_url(url)
    try:
        position_of = {e["id"]: e["position"] for e in written.cloudevents}
        for raws, _expected in _history():
            again = ledger.append(validate_events(raws))
            assert again.accepted == 0 and again.duplicates == len(raws)
            assert again.positions == [position_of[r["id"]] for r in raws]
        more = ledger.append(
            validate_events(
                [
                    incident_milestone("reopened", "h-inc1-reopen", incident_id="INC-1"),
                    metric_samples(
                        "h-prom-3",
                        samples=[sample("node_cpu_usage_cores", NODE_B, 1759277000, 3.0)],
                    ),
                ]
            ),
            {stream_of("INC-1"): 3},
        )
        assert more.positions == [11, 12]
        [reopened] = ledger.read_stream(stream_of("INC-1"), after_version=3)
        assert (reopened.position, reopened.stream_version) == (11, 4)
        [prom] = ledger.read(11, 1)
        assert prom.samples is not None and [n for n, _ in prom.samples.series] == [
            "node_cpu_usage_cores"
        ]
        with ledger.engine.connect() as conn:
            # NODE_B's series, interned before the upgrade, was found rather than added again.
            assert conn.execute(sa.select(sa.func.count()).select_from(series)).scalar_one() == 4
        assert [e.position for e in ledger.iter_all()] == list(range(1, 13))
    finally:
        ledger.engine.dispose()


def test_downgrade_then_upgrade_keeps_every_event(
    empty_database_url: str, revision: str, tmp_path: Path
) -> None:
    url = empty_database_url
    upgrade(url, revision)
    written = _write_history(url, tmp_path)
    upgrade(url)
    try:
        command.downgrade(alembic_config(url), revision)
    except NotImplementedError:
        pytest.skip(f"no downgrade path from {HEAD} to {revision}")
    _assert_kept(url, written)
    upgrade(url)
    _assert_kept(url, written)


def test_the_raw_fallback_writes_what_append_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _write_history inserts rows by hand when this code cannot write an older schema; run
    # that path on today's schema against Ledger.append, so it works when a revision needs it.
    appended_url = f"sqlite:///{tmp_path / 'appended.db'}"
    upgrade(appended_url)
    appended = _write_history(appended_url, tmp_path)
    copied_url = f"sqlite:///{tmp_path / 'copied.db'}"
    upgrade(copied_url)
    monkeypatch.setattr(sys.modules[__name__], "_ledger_can_write", lambda columns: False)
    copied = _write_history(copied_url, tmp_path)
    assert (tmp_path / "head.db").exists()  # the fallback ran

    def timeless(cloudevents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.items() if k != "recordedat"} for e in cloudevents]

    assert timeless(copied.cloudevents) == timeless(appended.cloudevents)
    assert [len(r) for r in copied.rows.values()] == [len(r) for r in appended.rows.values()]
    _assert_kept(copied_url, copied)


# -- a ledger newer than the code -------------------------------------------------------------


def _make_newer(url: str) -> None:
    """A ledger as a newer release leaves it: a table this code does not know, a later revision."""
    assert FUTURE not in {s.revision for s in SCRIPTS.walk_revisions()}
    upgrade(url)
    ledger = Ledger.from_url(url)
    try:
        ledger.append(validate_events(_history()[0][0]))
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE future_things (id INTEGER PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO future_things (id) VALUES (7)"))
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    finally:
        ledger.engine.dispose()


def _state(url: str) -> tuple[Any, ...]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            things = conn.execute(sa.text("SELECT id FROM future_things")).all()
        cloudevents = [e.to_cloudevent() for e in Ledger(engine).iter_all()]
        return version, things, _columns(engine), cloudevents
    finally:
        engine.dispose()


NEWER_MESSAGE = (
    f"error: the ledger is at revision {FUTURE}, which this opsledger (head {HEAD}) does not "
    "know: it was migrated by a newer release; upgrade opsledger instead"
)


@pytest.mark.slow
def test_db_upgrade_refuses_a_ledger_newer_than_the_code(
    empty_database_url: str, tmp_path: Path
) -> None:
    url = empty_database_url
    _make_newer(url)
    before = _state(url)
    assert before[0] == [(FUTURE,)] and len(before[3]) == 4

    engine = make_engine(url)
    try:
        check = check_current(engine)
    finally:
        engine.dispose()
    assert (check.state, check.current, check.unknown) == ("newer", (FUTURE,), (FUTURE,))
    assert check.problem == NEWER_MESSAGE.removeprefix("error: ")
    with pytest.raises(NewerLedgerError) as raised:
        upgrade(url)
    assert str(raised.value) == check.problem

    calls = [["db", "upgrade"], ["db", "upgrade", EARLIER[0]]]
    for args, r in zip(calls, run_cli_many(calls, tmp_path / "home", url=url), strict=True):
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.splitlines() == [NEWER_MESSAGE], r.stderr
        assert r.stdout == ""
    assert _state(url) == before


def test_db_upgrade_names_an_unknown_target_revision(tmp_path: Path) -> None:
    r = run_cli(["db", "upgrade", "nosuch"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "nosuch" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# -- serve refuses a ledger it cannot serve ---------------------------------------------------


def _behind(home: Path) -> None:
    upgrade(f"sqlite:///{home / 'ledger.db'}", EARLIER[-1])


def _newer(home: Path) -> None:
    _make_newer(f"sqlite:///{home / 'ledger.db'}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda home: None, "error: the ledger is not migrated: run `opsledger db upgrade`"),
        (
            _behind,
            f"error: the ledger is at revision {EARLIER[-1]}, behind this opsledger (head "
            f"{HEAD}): run `opsledger db upgrade`",
        ),
        (_newer, NEWER_MESSAGE),
    ],
    ids=["unmigrated", "behind", "newer"],
)
def test_serve_refuses_a_ledger_it_cannot_serve(prepare: Any, message: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    prepare(home)
    before = _state(f"sqlite:///{home / 'ledger.db'}") if prepare is _newer else None
    r = run_cli(["serve", "--port", str(free_port())], home)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [message], r.stderr
    assert not (home / "analytics.duckdb").exists()
    if before is not None:
        assert _state(f"sqlite:///{home / 'ledger.db'}") == before


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    upgrade(f"sqlite:///{tmp_path / 'ledger.db'}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [str(OPSLEDGER), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_starts_on_a_current_ledger(served: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = served
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            r = httpx.get(url + "/readyz", timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "opsledger serve did not answer in 30 s"
            time.sleep(0.1)
            continue
        assert r.status_code == 200, r.text
        break
    assert head_revision() == HEAD

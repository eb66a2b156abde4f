"""The `opsledger` command line, run as the real console script against a SQLite ledger."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from fastapi.testclient import TestClient
from support.cli import run_cli, run_cli_many
from support.payloads import (
    cost_daily,
    incident_milestone,
    incident_opened,
    metric_samples,
    pod_status,
)
from typer.testing import CliRunner

from api.app import create_app
from api.cli.app import app as cli_app
from store.contract import validate_events
from store.keys import list_keys
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings


class Home:
    """OPSLEDGER_HOME for the CLI, with a migrated ledger and the app over the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path / 'ledger.db'}"
        upgrade(self.url)
        self.ledger = Ledger.from_url(self.url)

    def run(self, *args: str) -> Any:
        # OPSLEDGER_HOME alone: the CLI must find the ledger at its default place under home.
        return run_cli(list(args), self.path)

    def run_many(self, *calls: list[str]) -> list[Any]:
        return run_cli_many(list(calls), self.path)

    def client(self) -> TestClient:
        return TestClient(create_app(Settings(database_url=self.url)))


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    h = Home(tmp_path)
    yield h
    h.ledger.engine.dispose()


def _created_id(stderr: str) -> str:
    m = re.search(r"created key ([0-9a-f]+)", stderr)
    assert m, stderr
    return m.group(1)


def test_keys_create_prints_only_the_token_and_it_authenticates(home: Home) -> None:
    r = home.run("keys", "create", "--name", "grafana", "--scope", "read")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    token = lines[0]
    assert r.stdout == token + "\n"
    assert re.fullmatch(r"olk_[A-Za-z0-9_-]{40,}", token), token
    assert token not in r.stderr
    key_id = _created_id(r.stderr)
    assert [(k.key_id, k.name, k.scope) for k in list_keys(home.ledger.engine)] == [
        (key_id, "grafana", "read")
    ]
    with home.client() as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/events", headers=auth).status_code == 200
        assert client.post("/v1/events", json={}, headers=auth).status_code == 403


@pytest.mark.slow
def test_keys_list_shows_the_id_not_the_token(home: Home) -> None:
    r = home.run("keys", "create", "--name", "ci", "--scope", "write")
    token, key_id = r.stdout.strip(), _created_id(r.stderr)
    r = home.run("keys", "list")
    assert r.returncode == 0, r.stderr
    assert key_id in r.stdout
    assert "write" in r.stdout
    assert token not in r.stdout + r.stderr
    assert token[4:24] not in r.stdout + r.stderr


@pytest.mark.slow
def test_keys_revoke_then_the_token_is_refused(home: Home) -> None:
    r = home.run("keys", "create", "--name", "temp", "--scope", "admin")
    token, key_id = r.stdout.strip(), _created_id(r.stderr)
    auth = {"Authorization": f"Bearer {token}"}
    with home.client() as client:
        assert client.get("/v1/events", headers=auth).status_code == 200
        r = home.run("keys", "revoke", key_id)
        assert r.returncode == 0, r.stderr
        assert client.get("/v1/events", headers=auth).status_code == 401
    active, every, again = home.run_many(
        ["keys", "list"], ["keys", "list", "--all"], ["keys", "revoke", key_id]
    )
    assert key_id not in active.stdout
    assert key_id in every.stdout
    r = again
    assert r.returncode == 1
    assert "no active key" in r.stderr


def test_keys_create_with_a_bogus_scope_fails_with_a_message(home: Home) -> None:
    r = home.run("keys", "create", "--name", "x", "--scope", "bogus")
    assert r.returncode != 0
    assert r.stdout == ""
    assert "--scope" in r.stderr and all(s in r.stderr for s in ("read", "write", "admin"))
    assert list_keys(home.ledger.engine, include_revoked=True) == []


@pytest.fixture
def filled(home: Home) -> Home:
    events = [
        incident_opened("e1", incident_id="INC-1", time="2026-10-01T00:00:00-04:00"),
        pod_status("e2", time="2026-10-01T05:00:00Z"),
        metric_samples("e3", time="2026-10-01T06:00:00Z"),
        incident_milestone("acknowledged", "e4", incident_id="INC-1", time="2026-10-01T07:00:00Z"),
        cost_daily("e5", time="2026-10-02T00:00:00Z"),
    ]
    home.ledger.append(validate_events(events))
    return home


def _jsonl(stdout: str) -> list[dict[str, Any]]:
    assert stdout.endswith("\n") or stdout == ""
    return [orjson.loads(line) for line in stdout.splitlines()]


@pytest.mark.slow
def test_events_list_json_prints_the_events_as_json_lines(filled: Home) -> None:
    r, paged, window = filled.run_many(
        ["events", "list", "--json"],
        ["events", "list", "--json", "--after", "1", "--limit", "2", "--type",
         "opsledger.k8s.pod.status,opsledger.metric.samples"],
        ["events", "list", "--json", "--since", "2026-10-01T05:00:00Z", "--until",
         "2026-10-01T07:00:00Z"],
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    printed = _jsonl(r.stdout)
    assert [e["id"] for e in printed] == ["e1", "e2", "e3", "e4", "e5"]
    assert printed == [e.to_cloudevent() for e in filled.ledger.read(0, 100)]
    assert printed[0]["time"] == "2026-10-01T04:00:00Z"
    assert printed[0]["stream"] == "incident/INC-1" and printed[3]["streamversion"] == 2
    assert len(printed[2]["data"]["samples"]) == 3
    assert [e["id"] for e in _jsonl(paged.stdout)] == ["e2", "e3"]
    assert [e["id"] for e in _jsonl(window.stdout)] == ["e2", "e3"]


def test_events_tail_json_prints_the_last_events(filled: Home) -> None:
    r = filled.run("events", "tail", "-n", "2", "--json")
    assert r.returncode == 0, r.stderr
    printed = _jsonl(r.stdout)
    assert [(e["position"], e["id"]) for e in printed] == [(4, "e4"), (5, "e5")]
    assert printed == [e.to_cloudevent() for e in filled.ledger.read(3, 2)]


@pytest.mark.slow
def test_events_list_table_and_bad_options(filled: Home) -> None:
    r, t = filled.run_many(
        ["events", "list", "--since", "yesterday"], ["events", "list", "--type", "opsledger.nope"]
    )
    assert r.returncode == 2
    assert "--since" in r.stderr
    r = t
    assert r.returncode == 2
    assert "opsledger.nope" in r.stderr and "opsledger.k8s.event" in r.stderr


# -- --help everywhere -------------------------------------------------------------------------


def _command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(cli_app)
    paths: list[tuple[str, ...]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        # Typer >= 0.2x vendors Click, so test for a group by shape, not by click.Group.
        paths.append(path)
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, (*path, name))

    walk(root, ())
    return paths


COMMAND_PATHS = _command_paths()


def test_the_command_tree_has_the_documented_commands() -> None:
    names = {" ".join(p) for p in COMMAND_PATHS}
    assert names >= {
        "",
        "db",
        "db upgrade",
        "keys",
        "keys create",
        "keys list",
        "keys revoke",
        "import",
        "events",
        "events list",
        "events tail",
        "serve",
        "demo",
    }


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=[" ".join(p) or "opsledger" for p in COMMAND_PATHS]
)
def test_every_help_exits_0_and_shows_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli_app, [*path, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output, f"`{' '.join(('opsledger', *path))} --help` has no example"


@pytest.mark.slow
def test_read_back_events_import_into_another_ledger(filled: Home, tmp_path: Path) -> None:
    exported = filled.run("events", "list", "--json")
    assert exported.returncode == 0, exported.stderr
    other = Home(tmp_path / "other")
    try:
        r = run_cli(["import", "-"], other.path, stdin=exported.stdout.encode())
        assert r.returncode == 0, r.stderr
        assert "accepted 5, duplicates 0, rejected 0" in r.stdout
        strip = ("position", "recordedat")
        mine = [
            {k: v for k, v in e.to_cloudevent().items() if k not in strip}
            for e in filled.ledger.read(0, 100)
        ]
        theirs = [
            {k: v for k, v in e.to_cloudevent().items() if k not in strip}
            for e in other.ledger.read(0, 100)
        ]
        assert theirs == mine
    finally:
        other.ledger.engine.dispose()


@pytest.mark.slow
def test_commands_before_db_upgrade_explain_in_one_line(tmp_path: Path) -> None:
    r = run_cli(["events", "list"], tmp_path / "fresh")
    assert r.returncode == 1
    assert "opsledger db upgrade" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_invalid_settings_are_one_line_errors(tmp_path: Path) -> None:
    import os
    import subprocess

    from support.cli import OPSLEDGER

    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env.update(OPSLEDGER_HOME=str(tmp_path), OPSLEDGER_MAX_BODY_BYTES="ten")
    r = subprocess.run(
        [str(OPSLEDGER), "events", "list"], capture_output=True, text=True, env=env, check=False
    )
    assert r.returncode == 2
    assert "OPSLEDGER_MAX_BODY_BYTES" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_db_upgrade_reports_the_revision_reached(tmp_path: Path) -> None:
    from store.migrate import head_revision

    r = run_cli(["db", "upgrade"], tmp_path / "new")
    assert r.returncode == 0, r.stderr
    assert f"revision {head_revision()}" in r.stderr

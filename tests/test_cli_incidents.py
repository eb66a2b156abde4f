"""`opsledger incidents …` and `opsledger sla …`, run as the real console script."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from support.cli import run_cli

from store.ledger import Ledger
from store.migrate import upgrade


@pytest.fixture
def home(tmp_path: Path) -> Path:
    upgrade(f"sqlite:///{tmp_path / 'ledger.db'}")
    return tmp_path


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    r = run_cli(list(args), home)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.slow
def test_an_incident_from_open_to_postmortem(home: Path) -> None:
    code, out, err = cli(
        home,
        "incidents", "open", "--title", "etcd latency", "--severity", "P2",
        "--cluster", "prod", "--namespace", "kube-system", "--id", "INC-9",
        "--at", "2026-10-12T14:00:00Z",
    )  # fmt: skip
    assert code == 0, err
    assert "INC-9" in out and "open" in out
    code, out, err = cli(
        home, "incidents", "ack", "INC-9", "--by", "alice", "--at", "2026-10-12T14:40:00Z"
    )
    assert code == 0 and "acknowledged" in out, err
    # Pinned to a stale version: refused with exit 3, nothing written.
    code, _, err = cli(home, "incidents", "resolve", "INC-9", "--expect-version", "1")
    assert code == 3 and "version 2" in err
    code, _, err = cli(home, "incidents", "reopen", "INC-9")
    assert code == 3 and "it is acknowledged" in err
    code, _, err = cli(home, "incidents", "ack", "NOPE")
    assert code == 4 and "NOPE" in err
    code, _, err = cli(home, "incidents", "update", "INC-9", "--severity", "P7")
    assert code == 2 and "severity" in err
    code, out, err = cli(
        home, "incidents", "update", "INC-9", "--severity", "P1",
        "--postmortem", "https://wiki/pm/9", "--expect-version", "2",
        "--at", "2026-10-12T15:00:00Z",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli(home, "incidents", "resolve", "INC-9", "--at", "2026-10-12T18:00:00Z")
    assert code == 0, err

    code, out, err = cli(home, "incidents", "show", "INC-9", "--json")
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["status"] == "resolved" and shown["severity_max"] == "P1"
    assert shown["version"] == 5 and shown["postmortem_url"] == "https://wiki/pm/9"
    # Escalated to P1 after the 14:40 ack: the P2 target (4 h) still applies.
    assert shown["response_severity"] == "P2"
    assert shown["response_due_at"] == "2026-10-12T18:00:00Z"

    code, out, err = cli(home, "incidents", "list", "--status", "resolved", "--json")
    assert code == 0 and [i["incident_id"] for i in orjson.loads(out)["items"]] == ["INC-9"]
    code, out, err = cli(
        home, "incidents", "metrics", "--from", "2026-10-01T00:00:00Z",
        "--to", "2026-11-01T00:00:00Z", "--group-by", "severity", "--json",
    )  # fmt: skip
    assert code == 0, err
    (group,) = orjson.loads(out)["groups"]
    assert group["key"] == {"severity": "P1"} and group["mtta"]["mean"] == 2400.0
    assert group["mttr"]["mean"] == 4 * 3600.0

    code, out, err = cli(home, "incidents", "timeline", "INC-9")
    assert code == 0, err
    assert out.startswith("## Timeline") and "acknowledged by alice" in out


@pytest.mark.slow
def test_sla_set_and_breaches(home: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "timezone: America/New_York\nholidays: ['2026-10-12']\nresolution: {P3: 2d}\n",
        encoding="utf-8",
    )
    code, out, err = cli(
        home, "sla", "set", str(policy), "--effective-from", "2026-10-01T00:00:00Z"
    )
    assert code == 0, err
    assert orjson.loads(out)["policy"]["response"]["P3"] == "next_business_day"
    # Friday 18:00 in New York; Monday is a holiday, so due Tuesday 17:00 EDT.
    code, _, err = cli(
        home, "incidents", "open", "--title", "disk", "--severity", "P3", "--cluster", "prod",
        "--id", "P3-1", "--at", "2026-10-09T22:00:00Z",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = cli(
        home, "sla", "breaches", "--from", "2026-10-01T00:00:00Z",
        "--to", "2026-11-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert code == 0, err
    body = orjson.loads(out)
    kinds = {(b["incident_id"], b["kind"]): b for b in body["items"]}
    assert kinds[("P3-1", "response")]["due_at"] == "2026-10-13T21:00:00Z"
    assert kinds[("P3-1", "response")]["open"] is True
    assert kinds[("P3-1", "resolution")]["due_at"] == "2026-10-11T22:00:00Z"

    bad = tmp_path / "bad.json"
    bad.write_text('{"timezone": "Mars/Base", "response": {"P1": "soon"}}', encoding="utf-8")
    code, _, err = cli(home, "sla", "set", str(bad))
    assert code == 2 and "timezone" in err and "response.P1" in err
    code, _, err = cli(home, "sla", "set", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err
    ledger = Ledger.from_url(f"sqlite:///{home / 'ledger.db'}")
    assert ledger.head() == 2
    ledger.engine.dispose()


@pytest.mark.slow
def test_sla_show_and_local_checks(home: Path, tmp_path: Path) -> None:
    code, out, err = cli(home, "sla", "show")
    assert code == 0, err
    shown = orjson.loads(out)
    assert shown["effective_from"] is None and shown["policy"]["timezone"] == "UTC"
    policy = tmp_path / "p.json"
    policy.write_text('{"timezone": "Europe/London"}', encoding="utf-8")
    assert cli(home, "sla", "set", str(policy), "--effective-from", "2026-10-01T00:00:00Z")[0] == 0
    code, out, _ = cli(home, "sla", "show", "--at", "2026-10-02T00:00:00Z")
    assert orjson.loads(out)["policy"]["timezone"] == "Europe/London"
    code, out, _ = cli(home, "sla", "show", "--at", "2026-09-30T00:00:00Z")
    assert orjson.loads(out)["policy"]["timezone"] == "UTC"
    for args in (
        ("incidents", "list", "--status", "bogus"),
        ("incidents", "list", "--severity", "P7"),
        ("incidents", "list", "--limit", "5000"),
        ("incidents", "update", "X"),
        ("incidents", "open", "--title", "t", "--severity", "P9", "--cluster", "c"),
        ("sla", "breaches", "--severity", "P5"),
    ):
        code, _, err = cli(home, *args)
        assert code == 2, (args, err)


@pytest.mark.slow
def test_reads_through_a_running_server_see_the_cli_own_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess

    from support.beds import bed_settings
    from support.cli import OPSLEDGER
    from support.servers import announce_file, serve_in_thread

    from api.app import create_app

    settings = bed_settings(tmp_path, projection_interval_seconds=3600)
    app = create_app(settings)
    announce = announce_file(settings, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path / "home"),
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OPSLEDGER), *args], capture_output=True, text=True, env=env, timeout=60
        )

    with serve_in_thread(app, announce=announce):
        opened = run("incidents", "open", "--title", "t", "--severity", "P2", "--cluster", "c",
                     "--id", "SRV-1")  # fmt: skip
        assert opened.returncode == 0, opened.stderr
        shown = run("incidents", "show", "SRV-1", "--json")
        assert shown.returncode == 0, shown.stderr
        assert orjson.loads(shown.stdout)["status"] == "open"
        missing = run("incidents", "show", "NOPE-1")
        assert missing.returncode == 4 and "NOPE-1" in missing.stderr

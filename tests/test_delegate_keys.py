"""The CLI's one-off delegate keys are short-lived: a CLI killed mid-call leaves a key that
expires by itself, and the next delegated call revokes it (issue 10, Low 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.beds import bed_settings
from support.cli import OPSLEDGER
from support.servers import announce_file, serve_in_thread

from api.app import create_app
from store.engine import make_engine
from store.keys import (
    DELEGATE_NAME,
    DELEGATE_TTL_S,
    authenticate,
    create_delegate_key,
    create_key,
    list_keys,
)
from store.migrate import upgrade

TTL_US = DELEGATE_TTL_S * 1_000_000


@pytest.mark.slow
def test_a_delegate_key_left_by_a_killed_cli_expires_and_is_revoked_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = bed_settings(tmp_path, projection_interval_seconds=3600)
    app = create_app(settings)
    engine = app.state.ledger.engine
    announce = announce_file(settings, monkeypatch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path / "home"),
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }
    cli: subprocess.Popen[bytes] | None = None
    with serve_in_thread(app, announce=announce):
        try:
            model = app.state.projector.model
            # The rebuild waits for the write lock held here: the CLI is mid-call, its key made.
            with model.write_lock:
                cli = subprocess.Popen(
                    [str(OPSLEDGER), "projections", "rebuild", "capacity"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                deadline = time.monotonic() + 30
                while not (left := [k for k in list_keys(engine) if k.name == DELEGATE_NAME]):
                    assert cli.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
                time.sleep(0.5)  # its request is in, waiting for the lock
                cli.send_signal(signal.SIGKILL)
                cli.wait(timeout=10)
            (killed,) = left
            assert killed.scope == "admin" and killed.revoked_at_us is None
            assert killed.expires_at_us == killed.created_at_us + TTL_US
            (again,) = [
                k for k in list_keys(engine, include_revoked=True) if k.name == DELEGATE_NAME
            ]
            assert again.revoked_at_us is None  # nothing revoked it: the process was killed

            # Active until its lifetime is over, then no more (a clock of our own, not a sleep).
            expiry = killed.created_at_us + TTL_US
            assert killed in list_keys(engine, now_us=expiry - 1)
            assert killed not in list_keys(engine, now_us=expiry)

            # The next delegated call, after that lifetime, revokes it; other keys are left alone.
            _, own = create_key(engine, "mine", "read")
            fresh, token = create_delegate_key(engine, "admin", now_us=expiry)
            by_id = {k.key_id: k for k in list_keys(engine, include_revoked=True)}
            assert by_id[killed.key_id].revoked_at_us == expiry
            assert by_id[fresh.key_id].revoked_at_us is None
            assert fresh.expires_at_us == expiry + TTL_US
            assert authenticate(engine, token, now_us=expiry + TTL_US - 1) is not None
            assert authenticate(engine, token, now_us=expiry + TTL_US) is None
            assert authenticate(engine, own) is not None

            # A real delegated call through the server works, and leaves no key of its own.
            status = subprocess.run(
                [str(OPSLEDGER), "projections", "status"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert status.returncode == 0, status.stderr
            delegates = [k for k in list_keys(engine, now_us=expiry) if k.name == DELEGATE_NAME]
            active = {k.key_id for k in delegates}
            assert active == {fresh.key_id}
        finally:
            if cli is not None and cli.poll() is None:
                cli.kill()
                cli.wait()


def test_delegate_keys_without_an_expiry_are_revoked_once_old(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        now = time.time_ns() // 1000
        # As a release before expiries made them, or a CLI that creates its own.
        old, _ = create_key(engine, DELEGATE_NAME, "admin", now_us=now - TTL_US - 1)
        young, _ = create_key(engine, DELEGATE_NAME, "admin", now_us=now - 1_000_000)
        create_delegate_key(engine, "admin", now_us=now)
        by_id = {k.key_id: k for k in list_keys(engine, include_revoked=True)}
        assert by_id[old.key_id].revoked_at_us == now
        assert by_id[young.key_id].revoked_at_us is None
    finally:
        engine.dispose()


def test_the_server_refuses_an_expired_key(tmp_path: Path) -> None:
    settings = bed_settings(tmp_path, projection_interval_seconds=3600)
    app = create_app(settings, projections=False)
    engine = app.state.ledger.engine
    now = time.time_ns() // 1000
    _, expired = create_key(engine, "short", "read", ttl_s=60, now_us=now - 61_000_000)
    _, valid = create_key(engine, "long", "read", ttl_s=3600)
    with TestClient(app) as client:
        r = client.get("/v1/events", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401, r.text
        r = client.get("/v1/events", headers={"Authorization": f"Bearer {valid}"})
        assert r.status_code == 200, r.text
    names = [k.name for k in list_keys(engine)]
    assert "long" in names and "short" not in names

"""`opsledger collect` and `opsledger collectors status`, run as the real console script."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import orjson
import pytest
from support.cli import OPSLEDGER

from store.ledger import Ledger
from store.migrate import upgrade


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_collect_once_then_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    config = tmp_path / "collectors.yaml"
    config.write_text(
        "aws:\n"
        "  region: us-gov-west-1\n"
        "  max_attempts: 1\n"
        f"  endpoint_url: http://127.0.0.1:{closed_port()}\n"
        "  guardduty: {}\n"
        "  budget:\n"
        "    monthly_amount: 42000\n"
        "    currency: USD\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEDGER_", "AWS_"))}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path),
        "OPSLEDGER_COLLECTORS_FILE": str(config),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "COLUMNS": "200",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(OPSLEDGER), *args], capture_output=True, text=True, env=env, timeout=120
        )

    only = run("collect", "--once", "--only", "aws/budget")
    assert only.returncode == 0, only.stderr
    assert "aws/budget" in only.stdout and "aws/guardduty" not in only.stdout
    both = run("collect", "--once")
    assert both.returncode == 1, both.stdout  # GuardDuty cannot be reached
    assert "hunter2" not in both.stdout + both.stderr
    status = run("collectors", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["name"]: r for r in orjson.loads(status.stdout)["collectors"]}
    assert rows["aws/budget"]["status"] == "ok" and rows["aws/budget"]["events_appended"] == 1
    assert rows["aws/budget"]["runs"] == 2 and rows["aws/budget"]["configured"] is True
    assert rows["aws/guardduty"]["status"] == "failing"
    assert "hunter2" not in (rows["aws/guardduty"]["last_error"] or "")
    unknown = run("collect", "--once", "--only", "aws/nothing")
    assert unknown.returncode == 2 and "aws/budget" in unknown.stderr
    ledger = Ledger.from_url(url)
    try:
        (budget,) = ledger.read(0, 100)
        assert budget.type == "opsledger.budget.set" and budget.data is not None
        assert budget.data["amount"] == 42000
    finally:
        ledger.engine.dispose()

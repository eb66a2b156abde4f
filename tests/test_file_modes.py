"""File modes: a home opsledger creates is 0700 and its SQLite ledger 0600, whatever the umask.

Real processes under a set umask: `opsledger db upgrade` makes a fresh home, `opsledger serve`
holds the ledger open so its -wal and -shm exist, and `opsledger export` writes files.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.cli import OPSLEDGER


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(args: list[str], home: Path, umask: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    cmd = f"umask {umask:03o}; exec {shlex.join([str(OPSLEDGER), *args])}"
    return subprocess.run(
        ["sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=90, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_fresh_home_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    home = tmp_path / "deep" / "home"
    proc = run(["db", "upgrade"], home, umask)
    assert proc.returncode == 0, proc.stderr
    assert mode(home) == 0o700
    assert mode(home / "ledger.db") == 0o600
    assert "open to its group or others" not in proc.stderr


@pytest.mark.slow
def test_wal_and_shm_follow_the_ledger(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(["db", "upgrade"], home, 0o000).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    cmd = f"umask 000; exec {shlex.join([str(OPSLEDGER), 'serve', '--port', str(port)])}"
    server = subprocess.Popen(
        ["sh", "-c", cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        wal, shm = home / "ledger.db-wal", home / "ledger.db-shm"
        while not (wal.exists() and shm.exists()):
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "the server never opened the ledger"
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            time.sleep(0.1)
        # The server holds them open: SQLite made them with the ledger's mode, not the umask's.
        assert (mode(wal), mode(shm)) == (0o600, 0o600)
        assert mode(home / "ledger.db") == 0o600
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
def test_existing_files_keep_their_mode_and_a_loose_ledger_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    assert run(["db", "upgrade"], home, 0o022).returncode == 0
    assert mode(home) == 0o755  # the operator's directory: not opsledger's to change
    (home / "ledger.db").chmod(0o644)  # as releases before this one made it
    proc = run(["db", "upgrade"], home, 0o022)
    assert proc.returncode == 0, proc.stderr
    assert mode(home / "ledger.db") == 0o644
    assert proc.stderr.count("open to its group or others (mode 0644)") == 1, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_export_files_follow_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    home = tmp_path / "home"
    assert run(["db", "upgrade"], home, umask).returncode == 0
    out = tmp_path / "events.csv"
    proc = run(["export", "events", "-f", "csv", "--out", str(out)], home, umask)
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == expected
    parts = tmp_path / "parts"
    proc = run(["export", "events", "--partition", "month", "--out", str(parts)], home, umask)
    assert proc.returncode == 0, proc.stderr
    assert mode(parts) == 0o777 & ~umask  # no rows, no partitions: the directory alone

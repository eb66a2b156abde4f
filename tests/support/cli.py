"""The real `opsledger` console script, run as a subprocess the way a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support import REPO

OPSLEDGER = REPO / ".venv" / "bin" / "opsledger"


def run_cli(
    args: list[str], home: Path, url: str | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `opsledger` console script with OPSLEDGER_HOME (and the ledger URL) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env["OPSLEDGER_HOME"] = str(home)
    if url is not None:
        env["OPSLEDGER_DATABASE_URL"] = url
    exe = str(OPSLEDGER) if OPSLEDGER.exists() else shutil.which("opsledger") or "opsledger"
    proc = subprocess.run(
        [exe, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def run_cli_many(
    calls: list[list[str]], home: Path, url: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI invocations concurrently (each is a ~1 s interpreter start)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda args: run_cli(args, home, url), calls))

"""A small tmpfs of a test's own, and a filler file that leaves it (almost) no free space.

Mounting needs root: CI runs as root, and there a failed mount fails the test; elsewhere the
tests that need a disk are skipped. tests/conftest.py's `disk` fixture mounts one per test.
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

DISK_SIZE = "32m"


@contextmanager
def tmpfs(size: str = DISK_SIZE) -> Iterator[Path]:
    """A tmpfs of `size` mounted on a new directory, unmounted and removed afterwards.

    Outside pytest's private temporary directory, so that PostgreSQL (running as the postgres
    user) can reach a tablespace on it.
    """
    mount = Path(tempfile.mkdtemp(prefix="opsledger-disk-", dir="/tmp"))
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "opsledger-test", mount],
            capture_output=True,
            text=True,
            check=False,
        )
        problem = (r.stderr.strip() or f"exit status {r.returncode}") if r.returncode else None
    except FileNotFoundError as exc:
        problem = str(exc)
    if problem is not None:
        mount.rmdir()
        reason = f"cannot mount a tmpfs for the full-disk tests (they need root): {problem}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)  # CI runs as root: never a silent skip there
        pytest.skip(reason)
    try:
        yield mount
    finally:
        r = subprocess.run(["umount", mount], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            subprocess.run(["umount", "--lazy", mount], check=False)
        mount.rmdir()
        assert r.returncode == 0, f"{mount} was still in use at the end of the test: {r.stderr}"


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextmanager
def filled(disk: Path, leave: int = 0) -> Iterator[Path]:
    """A filler file leaving about `leave` bytes free; deleted on exit (space returns)."""
    filler = disk / "filler"
    chunk = b"\xa5" * (1 << 20)  # written, not sparse: tmpfs allocates what is written
    try:
        with filler.open("wb") as f:
            todo = max(0, free_bytes(disk) - leave)
            try:
                while todo > 0:
                    todo -= f.write(chunk[: min(len(chunk), todo)])
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        assert free_bytes(disk) <= leave + 4096
        yield filler
    finally:
        filler.unlink(missing_ok=True)

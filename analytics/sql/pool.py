"""Query workers: child processes running user SQL one query at a time (query_worker.py)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Final

import orjson

from analytics.sql.sandbox import QueryLimits

#: How long past its time limit a worker may take to answer before it is killed; DuckDB checks
#: for interruption between chunks, and one chunk of a slow scalar can take seconds.
GRACE_S: Final = 2.0
#: Extra time for a worker that has just started (interpreter and DuckDB start-up).
STARTUP_S: Final = 10.0
#: Room in a worker's answer beyond the rows: column names and types, counters.
_ENVELOPE_BYTES: Final = 16 * 1024 * 1024
_ROOT: Final = Path(__file__).resolve().parent.parent


class QueryError(Exception):
    """A query that did not answer: `kind` says why (see docs/api.md, POST /v1/query)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def detail(self) -> str:
        """The message with what happened: refused, failed or stopped."""
        verb = {"refused": "refused", "invalid": "failed"}.get(self.kind, "stopped")
        return f"query {verb}: {self.message}"


class _Gone(Exception):
    """The worker closed its output: it exited or was killed."""


class _Overdue(Exception):
    """The worker did not answer in time."""


class _Oversized(Exception):
    """The worker's answer is larger than any answer may be."""


class Worker:
    """One worker process and its pipes."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits
        # Not the server's environment: no database URL, no secrets, no home directory.
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/nonexistent",
            "LANG": "C.UTF-8",
            "MALLOC_ARENA_MAX": "2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "analytics.sql.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            env=env,
            cwd="/",
        )
        self.fresh = True
        self.broken = False
        self._buf = bytearray()
        self._send(orjson.dumps(limits.as_dict()) + b"\n")

    @property
    def alive(self) -> bool:
        """Whether the worker can take another query."""
        return not self.broken and self.proc.poll() is None

    def _send(self, data: bytes) -> None:
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Gone from None

    def _wait(self, deadline: float) -> int:
        """The worker's output descriptor once it has something to read."""
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Overdue
        ready, _, _ = select.select([stdout], [], [], remaining)
        if not ready:
            raise _Overdue
        return stdout.fileno()

    def _exchange(self, request: bytes, deadline: float) -> tuple[dict[str, Any], bytes]:
        cap = self.limits.max_result_bytes + _ENVELOPE_BYTES
        self._send(request)
        while (end := self._buf.find(b"\n")) < 0:
            chunk = os.read(self._wait(deadline), 1 << 16)
            if not chunk:
                raise _Gone
            self._buf += chunk
            if len(self._buf) > cap:
                raise _Oversized
        header: dict[str, Any] = orjson.loads(bytes(self._buf[:end]))
        length = int(header.get("length") or 0)
        if length > cap:
            raise _Oversized
        # The body is read straight into one buffer of its size: no copies while it arrives.
        body = bytearray(length)
        view = memoryview(body)
        have = min(len(self._buf) - end - 1, length)
        view[:have] = self._buf[end + 1 : end + 1 + have]
        del self._buf[: end + 1 + have]
        while have < length:
            n = os.readv(self._wait(deadline), [view[have:]])
            if n == 0:
                raise _Gone
            have += n
        view.release()
        return header, bytes(body)

    def run(self, path: Path, sql: str, limit: int, extra: Mapping[str, Any]) -> bytes:
        """The JSON answer of one query; QueryError when refused, failed or stopped."""
        allowance = self.limits.timeout_s + GRACE_S + (STARTUP_S if self.fresh else 0.0)
        request = {"path": str(path), "sql": sql, "limit": limit, "extra": dict(extra)}
        try:
            header, body = self._exchange(
                orjson.dumps(request) + b"\n", time.monotonic() + allowance
            )
        except _Overdue:
            self.kill()
            raise QueryError(
                "timeout",
                f"the query ran longer than the {self.limits.timeout_s:g} s time limit "
                "(query_timeout_seconds) and was stopped",
            ) from None
        except _Oversized:
            self.kill()
            raise QueryError(
                "too_large", "the answer is larger than query_max_result_bytes allows"
            ) from None
        except (_Gone, orjson.JSONDecodeError, ValueError):
            self.kill()
            raise QueryError(
                "crashed",
                "the query process stopped (usually: it ran out of memory); "
                "the service itself is unaffected",
            ) from None
        self.fresh = False
        if header.get("retire"):
            self.kill()
        if not header.get("ok"):
            raise QueryError(str(header.get("kind")), str(header.get("message")))
        return body

    def kill(self) -> None:
        """Stop the process for good."""
        self.broken = True
        if self.proc.poll() is None:
            self.proc.kill()
        with suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()


class WorkerPool:
    """At most `size` workers, started on demand and reused while they stay healthy."""

    def __init__(self, limits: QueryLimits, size: int) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def worker(self, wait_s: float) -> Iterator[Worker]:
        """A worker of its own for the caller; QueryError("busy") when none frees up in time."""
        if not self._slots.acquire(timeout=wait_s):
            raise QueryError(
                "busy", "every query worker is busy (query_max_concurrent); retry shortly"
            )
        try:
            with self._lock:
                if self._closed:
                    raise QueryError("unavailable", "the query service is shutting down")
                while self._idle and not self._idle[-1].alive:
                    self._idle.pop().kill()
                worker = self._idle.pop() if self._idle else None
            if worker is None:
                try:
                    worker = Worker(self.limits)
                except (OSError, _Gone):
                    raise QueryError("unavailable", "the query worker could not start") from None
            try:
                yield worker
            finally:
                with self._lock:
                    if worker.alive and not self._closed:
                        self._idle.append(worker)
                    else:
                        worker.kill()
        finally:
            self._slots.release()

    def run(
        self, path: Path, sql: str, limit: int, extra: Mapping[str, Any] | None = None
    ) -> bytes:
        """Run one query on a free worker (waiting up to the time limit for one)."""
        with self.worker(self.limits.timeout_s) as w:
            return w.run(path, sql, limit, extra or {})

    def close(self) -> None:
        """Stop every idle worker; busy ones stop when their query ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()

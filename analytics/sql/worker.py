"""The query worker: a child process that runs user SQL, so no query can take the server down.

DuckDB's memory limit does not cover everything (a scalar such as `repeat('x', 4e9)` allocates
outside it) and some functions do not check for interruption, so user SQL runs here: under an
address-space limit, at a lower CPU priority, without the server's environment or open files,
and the server kills the process when it overruns its time limit.

Protocol (stdin/stdout): the first line is the limits as JSON; then each request is one JSON
line `{"path", "sql", "limit", "extra"}`, answered by a JSON header line
`{"ok", "kind", "message", "length", "retire"}` followed by `length` bytes of body when ok;
`retire` asks the server to replace this process once it has read the answer.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from pathlib import Path
from typing import Any, BinaryIO, Final

import duckdb
import orjson

from analytics.sql.guard import QueryInvalid, QueryRefused
from analytics.sql.sandbox import (
    QueryFailed,
    QueryLimits,
    QueryStopped,
    config,
    open_locked,
    run_query,
)

#: Above DuckDB's own memory limit: the interpreter, result conversion and allocator slack.
HEADROOM_BYTES: Final = 256 * 1024 * 1024
#: A worker whose address space grew this much past its start asks to be replaced: memory
#: kept by DuckDB and the allocator after a large query is taken from the next query's share.
RETIRE_GROWTH_BYTES: Final = HEADROOM_BYTES // 2


def _vm_size() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def confine(limits: QueryLimits) -> int | None:
    """Lower the priority and cap the address space of this process (Linux); its base size."""
    with contextlib.suppress(OSError):
        os.nice(5)  # the API, the projector and the collectors come first
    # Open and close a database once, so DuckDB's own reservations count in the baseline.
    duckdb.connect(":memory:", config=config(limits)).close()
    base = _vm_size()
    if base is not None:
        cap = base + limits.memory_bytes + 2 * limits.max_result_bytes + HEADROOM_BYTES
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return base


class _Session:
    """The open snapshot; reopened when the server names another one."""

    def __init__(self, limits: QueryLimits) -> None:
        self.limits = limits
        self.path: str | None = None
        self.con: duckdb.DuckDBPyConnection | None = None

    def connection(self, path: str) -> duckdb.DuckDBPyConnection:
        if self.con is None or self.path != path:
            if self.con is not None:
                self.con.close()
                self.con = None
            self.con = open_locked(Path(path), self.limits)
            self.path = path
        return self.con

    def serve(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes | bytearray]:
        sql = str(request["sql"])
        try:
            con = self.connection(str(request["path"]))
        except (duckdb.Error, RuntimeError, OSError) as exc:
            return {"ok": False, "kind": "unavailable", "message": type(exc).__name__}, b""
        try:
            body = run_query(con, sql, int(request["limit"]), self.limits, request.get("extra"))
        except QueryRefused as exc:
            return {"ok": False, "kind": "refused", "message": str(exc)}, b""
        except (QueryInvalid, QueryFailed) as exc:
            return {"ok": False, "kind": "invalid", "message": str(exc)}, b""
        except QueryStopped as exc:
            return {"ok": False, "kind": exc.kind, "message": str(exc)}, b""
        except MemoryError:
            return {"ok": False, "kind": "memory", "message": "out of memory"}, b""
        except Exception as exc:  # a value the JSON conversion cannot carry, and the like
            return {"ok": False, "kind": "invalid", "message": f"{type(exc).__name__}: {exc}"}, b""
        return {"ok": True, "length": len(body)}, body


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes."""
    limits = QueryLimits(**orjson.loads(stdin.readline()))
    base = confine(limits)
    session = _Session(limits)
    for line in stdin:
        header, body = session.serve(orjson.loads(line))
        size = _vm_size()
        if base is not None and size is not None and size > base + RETIRE_GROWTH_BYTES:
            header["retire"] = True
        # Two writes, not one concatenation: the body may be most of the memory allowed.
        stdout.write(orjson.dumps(header) + b"\n")
        stdout.write(body)
        stdout.flush()


def main() -> None:
    """Entry point of `python -m analytics.sql.worker`."""
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries the protocol and nothing else
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, stdout)


if __name__ == "__main__":
    main()

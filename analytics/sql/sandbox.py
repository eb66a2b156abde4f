"""The query connection: a read-only DuckDB database, external access off, configuration locked.

User SQL runs only here (inside the query worker process): the database is opened read-only
with the settings below, then the local file system is disabled and the configuration is
locked, and `open_locked` reads every setting back before returning: it fails closed.
"""

from __future__ import annotations

import base64
import contextlib
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import duckdb
import orjson

from analytics.sql.guard import check_query

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_UNITS: Final = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
#: Most rows fetched from DuckDB at a time; results stream, so a huge result is never
#: materialised.
_BATCH: Final = 1024
#: About this many bytes of rows per fetch (the first fetch is one row, to measure them).
_BATCH_BYTES: Final = 4 * 1024 * 1024
#: Strings longer than this are encoded in pieces of this many characters.
_STRING_PIECE: Final = 1 << 20
_JSON: Final = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS
# Absolute paths in DuckDB's messages, e.g. its extension or secret directory: not the
# caller's business. Paths the query itself names are left alone.
_PATH = re.compile(r"""(?:(?<=[\s'"=(])|^)/[^\s'"()]+""")


def parse_size(text: str) -> int:
    """Bytes of a DuckDB size such as `512MB` (1000-based) or `1GiB` (1024-based)."""
    m = _SIZE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size like 512MB or 1GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """What one query may use."""

    timeout_s: float
    memory_limit: str
    max_rows: int
    max_result_bytes: int

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return parse_size(self.memory_limit)

    def as_dict(self) -> dict[str, Any]:
        """The limits as JSON-ready values (sent to the worker)."""
        return asdict(self)


class QueryStopped(RuntimeError):
    """A limit stopped the query: `kind` is timeout, memory or too_large."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class QueryFailed(ValueError):
    """DuckDB refused or failed to run the query (its message, paths redacted)."""


def config(limits: QueryLimits) -> dict[str, Any]:
    """The configuration the query database opens with: in force before any SQL runs."""
    return {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
        "allow_persistent_secrets": False,
        # Otherwise DuckDB scans Python objects of the caller's frames by their variable name.
        "python_enable_replacements": False,
        "memory_limit": limits.memory_limit,
        "threads": 1,
        # Nothing spills to disk: beyond the memory limit a query fails instead.
        "temp_directory": "",
    }


#: Settings applied once the file is open (the first needs the open file; the last locks).
_AFTER_OPEN: Final = (
    "SET disabled_filesystems = 'LocalFileSystem'",
    "SET lock_configuration = true",
)
#: Read back after locking; a DuckDB that ignored one of them is refused.
_EXPECTED: Final = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
    "threads": 1,
    "temp_directory": "",
    "lock_configuration": True,
}


def open_locked(path: Path | str, limits: QueryLimits) -> duckdb.DuckDBPyConnection:
    """Open `path` read-only for user SQL, its configuration verified and locked."""
    con = duckdb.connect(str(path), read_only=True, config=config(limits))
    try:
        # Timestamps with time zone come back in UTC (without ICU there are no zones to set).
        with contextlib.suppress(duckdb.Error):
            con.execute("SET TimeZone = 'UTC'")
        for statement in _AFTER_OPEN:
            con.execute(statement)
        names = list(_EXPECTED)
        row = con.execute(
            "SELECT " + ", ".join("current_setting(?)" for _ in names), names
        ).fetchone()
        actual = dict(zip(names, row or (), strict=True))
        wrong = {k: v for k, v in actual.items() if str(v) != str(_EXPECTED[k])}
        if wrong:
            raise RuntimeError(f"the query database did not take its settings: {wrong}")
        # `disabled_filesystems` does not read back: probe it with the one file external
        # access still allows, the database itself.
        try:
            con.execute("SELECT count(*) FROM read_blob(?)", [str(Path(path).resolve())])
        except duckdb.PermissionException:
            pass
        else:
            raise RuntimeError("the query database can still read local files")
    except BaseException:
        con.close()
        raise
    return con


def redact(message: str, sql: str) -> str:
    """DuckDB's message without file paths the query did not name itself."""
    return _PATH.sub(lambda m: m.group(0) if m.group(0) in sql else "<path>", message)


def _long_string(value: str) -> orjson.Fragment:
    """A long string's JSON, encoded a piece at a time."""
    # orjson reserves several times a string's length to encode it, which a worker near its
    # address-space cap cannot spare; escaping is per character, so pieces join exactly.
    pieces = (
        orjson.dumps(value[i : i + _STRING_PIECE])[1:-1]
        for i in range(0, len(value), _STRING_PIECE)
    )
    return orjson.Fragment(b'"' + b"".join(pieces) + b'"')


def jsonable(value: Any) -> Any:
    """A DuckDB value as JSON can carry it (see docs/api.md, POST /v1/query)."""
    if isinstance(value, str) and len(value) > _STRING_PIECE:
        return _long_string(value)
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value
    if isinstance(value, dtime) and value.tzinfo is not None:
        return value.isoformat()  # TIMETZ: orjson writes only naive times
    if isinstance(value, date | dtime | UUID):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _least_size(row: tuple[Any, ...]) -> int:
    """A lower bound of a row's JSON size: its strings, and its blobs in base64."""
    n = 0
    for v in row:
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, bytes | bytearray | memoryview):
            n += len(v) * 4 // 3
    return n


def _next_batch(size: int, count: int, limits: QueryLimits) -> int:
    """Rows to fetch next: about _BATCH_BYTES of them, as large as the rows so far."""
    if count == 0:
        return 1
    room = max(1, min(_BATCH_BYTES, limits.max_result_bytes - size))
    return max(1, min(_BATCH, room * count // max(size, 1)))


def run_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    limit: int,
    limits: QueryLimits,
    extra: Mapping[str, Any] | None = None,
) -> bytearray:
    """Run one read-only query on a fresh cursor; the JSON answer of `POST /v1/query`.

    Raises QueryRefused / QueryInvalid (analytics.sql.guard), QueryFailed or QueryStopped.
    """
    check_query(con, sql)
    # A fresh cursor per query: whatever state a statement could leave behind dies with it.
    cur = con.cursor()
    started = time.monotonic()
    deadline = started + limits.timeout_s
    timer = threading.Timer(limits.timeout_s, cur.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cur.execute(sql)
        columns = [{"name": d[0], "type": str(d[1])} for d in cur.description or ()]
        # The answer is written once, row by row, into one buffer: its size is the rows' size,
        # never a multiple of it, so a result at the byte cap fits the worker's memory.
        answer = bytearray(orjson.dumps({"columns": columns})[:-1] + b',"rows":[')
        count = size = 0
        truncated = False
        while not truncated:
            batch = cur.fetchmany(min(_next_batch(size, count, limits), limit + 1 - count))
            if not batch:
                break
            for row in batch:
                if count == limit:
                    truncated = True
                    break
                # Measured before encoding too: orjson cannot fail gracefully at the memory cap.
                over = size + _least_size(row) + 1 > limits.max_result_bytes
                encoded = b"" if over else orjson.dumps([jsonable(v) for v in row], option=_JSON)
                if over or size + len(encoded) + 1 > limits.max_result_bytes:
                    if count == 0:
                        raise QueryStopped(
                            "too_large",
                            f"a single row is larger than the {limits.max_result_bytes} bytes "
                            "a result may hold (query_max_result_bytes)",
                        )
                    truncated = True
                    break
                if count:
                    answer += b","
                answer += encoded
                size += len(encoded) + 1
                count += 1
            del batch
            if time.monotonic() > deadline:
                raise duckdb.InterruptException("time limit")
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    except duckdb.InterruptException:
        raise QueryStopped(
            "timeout",
            f"the query ran longer than the {limits.timeout_s:g} s time limit "
            "(query_timeout_seconds)",
        ) from None
    except (duckdb.OutOfMemoryException, MemoryError):
        raise QueryStopped(
            "memory",
            f"the query needed more memory than the {limits.memory_limit} limit "
            "(query_memory_limit)",
        ) from None
    except duckdb.Error as exc:
        raise QueryFailed(redact(str(exc), sql)) from None
    finally:
        timer.cancel()
        timer.join()
        cur.close()
    tail = {"row_count": count, "truncated": truncated, "elapsed_ms": elapsed_ms, **(extra or {})}
    answer += b"]," + orjson.dumps(tail)[1:]
    return answer

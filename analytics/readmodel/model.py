"""The DuckDB read model: one file, one writing process, a cursor per thread.

One process at a time holds the file, for its whole life. DuckDB's own lock is a POSIX record
lock, which the kernel drops as soon as the process closes ANY descriptor of the file; so this
process opens the file a second time exactly once (`_fd`, used to copy the file for queries)
and closes that descriptor only after DuckDB's. It also holds `flock` through that descriptor:
a lock of the descriptor, not of the process, which no closing of another one releases, so
other opsledger processes stay out even while DuckDB reopens the file after a fatal error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

log = logging.getLogger("opsledger.projections")

# Extensions would be downloaded at run time, which fails air-gapped: only built-ins are used.
_LOCKED_SETTINGS: Final = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
)
#: Rows per INSERT of insert_rows.
_INSERT_CHUNK: Final = 500
#: DuckDB names the process holding its lock: `... is held in /usr/bin/python3 (PID 123) ...`.
_DUCKDB_HOLDER = re.compile(r"\(PID (\d+)\)")
#: struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (and padding).
_FLOCK: Final = "@hhqqi4x"
#: Copy this much at a time (os.copy_file_range / os.sendfile move it inside the kernel).
_COPY_CHUNK: Final = 64 * 1024 * 1024


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert rows with one multi-row VALUES statement per chunk of them."""
    # executemany plans each row on its own: about 1 ms a row, 0.3 s for 300 incidents.
    for i in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[i : i + _INSERT_CHUNK]
        row = f"({', '.join(['?'] * len(chunk[0]))})"
        con.execute(
            f"INSERT INTO {table} VALUES {', '.join([row] * len(chunk))}",
            [v for r in chunk for v in r],
        )


class ReadModelBusy(RuntimeError):
    """Another process (usually `opsledger serve`) holds the read model open for writing."""

    def __init__(self, message: str, pid: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.url = url


# A DuckDB connection error, so whatever handles those (the projection runner: never the
# event's fault) handles this too.
class ReadModelUnavailable(duckdb.ConnectionException):
    """The read model failed fatally and could not be reopened yet (it is retried)."""


def announcement_of(path: Path) -> Path:
    """Where a server holding the read model at `path` announces itself (Settings.server_file)."""
    return path.with_suffix(".server.json")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announced(path: Path) -> tuple[int, str] | None:
    """The (pid, url) a live server other than this process announced for `path`, if any."""
    try:
        info = orjson.loads(announcement_of(path).read_bytes())
        pid, url = info["pid"], info["url"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(pid, int) or not isinstance(url, str) or pid == os.getpid():
        return None
    return (pid, url) if pid_alive(pid) else None


def _posix_holder(fd: int) -> int | None:
    """The pid holding a POSIX write lock on the file open as `fd` (Linux layout), if any."""
    if sys.platform != "linux":
        return None
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    return None if kind == fcntl.F_UNLCK else int(pid)


def holder_pid(path: Path) -> int | None:
    """The pid of the process holding the read model at `path`, when it can be told."""
    # Never call it in a process holding the read model: it opens (and closes) the file.
    server = announced(path)
    if server is not None:
        return server[0]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _posix_holder(fd)
    finally:
        os.close(fd)


def busy(path: Path, pid: int | None, url: str | None = None) -> ReadModelBusy:
    """The refusal naming who holds the read model at `path` (what is known of it)."""
    if url is None and pid is not None:
        server = announced(path)
        url = server[1] if server is not None and server[0] == pid else None
    who = ", ".join([f"pid {pid}" if pid is not None else "pid unknown"] + ([url] if url else []))
    where = "elsewhere in this process" if pid == os.getpid() else f"in another process ({who})"
    return ReadModelBusy(
        f"the read model {path} is open {where}; one server per home", pid=pid, url=url
    )


def ensure_free(path: Path) -> None:
    """ReadModelBusy when another process holds the read model at `path`; nothing is held."""
    # For `opsledger serve` to refuse in one line before uvicorn starts (the lifespan refuses
    # too, with a traceback). Never call it in a process holding the read model: it opens
    # (and closes) the file.
    server = announced(path)
    if server is not None:
        raise busy(path, *server)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(path, _posix_holder(fd)) from None
        pid = _posix_holder(fd)
        if pid is not None:
            raise busy(path, pid)
    finally:
        os.close(fd)


def _hold(fd: int, path: Path, wait_s: float = 0.0) -> None:
    """Take `flock` on the read model through `fd` (ReadModelBusy when another holds it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise busy(path, _posix_holder(fd)) from None
            time.sleep(0.05)


def _private(path: Path) -> None:
    """Owner-only permissions on a file of the read model, if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)


def copy_range(src: int, dst: int, size: int) -> None:
    """Copy `size` bytes from offset 0 of descriptor `src` to `dst`, inside the kernel."""
    done = 0
    fast = True
    while done < size:
        n = min(_COPY_CHUNK, size - done)
        if fast:
            try:
                copied = os.copy_file_range(src, dst, n, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                fast = False
                continue
        else:
            os.lseek(dst, done, os.SEEK_SET)
            copied = os.sendfile(dst, src, done, n)
        if copied == 0:
            raise OSError(errno.EIO, "the read model ended while it was copied")
        done += copied


class ReadModel:
    """The read model file; DuckDB lets a single process open it for writing."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.write_lock = threading.RLock()
        # Guards swapping the connection (reopen) against handing out cursors of the old one.
        self._swap = threading.Lock()
        self._generation = 0
        self._fd: int | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        #: Why the read model is unusable (a fatal error it could not be reopened from), if so.
        self.problem: str | None = None
        if self.in_memory:
            self._con = self._connect()
            return
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if self.path.exists():
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                _hold(self._fd, self.path)
            server = announced(self.path)
            if server is not None:
                # A live server announced itself: the CLI goes through it, and a second server
                # does not start, even were the file's locks free.
                raise busy(self.path, *server)
            self._con = self._connect()
            if self._fd is None:
                # A new file: DuckDB made it, and its lock keeps any other process from holding
                # the flock for longer than its own failed open.
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                _hold(self._fd, self.path, wait_s=5.0)
            for p in (self.path, self.wal_path):
                _private(p)
        except BaseException:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._release_files()
            raise

    @property
    def in_memory(self) -> bool:
        """Whether this is a throwaway in-memory read model (tests)."""
        return str(self.path) == ":memory:"

    @property
    def wal_path(self) -> Path:
        """DuckDB's write-ahead log beside the file."""
        return self.path.with_name(self.path.name + ".wal")

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                m = _DUCKDB_HOLDER.search(str(exc))
                raise busy(self.path, int(m.group(1)) if m else None) from None
            raise
        for statement in _LOCKED_SETTINGS:
            con.execute(statement)
        return con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor: its own transaction context over the shared database."""
        local = self._local
        if getattr(local, "generation", None) == self._generation and local.cursor is not None:
            cur: duckdb.DuckDBPyConnection = local.cursor
            return cur
        with self._swap:
            if self._con is None:
                raise ReadModelUnavailable(
                    f"the read model is unavailable until it can be reopened: {self.problem}"
                )
            local.cursor, local.generation = self._con.cursor(), self._generation
        cur = local.cursor
        return cur

    def copy_to(self, target: Path) -> None:
        """Copy the file (not its WAL) to a new owner-only `target` through the held descriptor."""
        # The caller holds `write_lock` and has checkpointed: the file alone is the database.
        if self._fd is None:
            raise ReadModelUnavailable("an in-memory or closed read model has no file to copy")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            copy_range(self._fd, out, os.fstat(self._fd).st_size)
        finally:
            os.close(out)

    def healthy(self) -> bool:
        """False when DuckDB has invalidated the database (a fatal error) or it is closed."""
        with self._swap:
            con = self._con
            if con is None:
                return False
            try:
                probe = con.cursor()
            except duckdb.Error:
                return False
        try:
            probe.execute("SELECT 1").fetchall()
        except duckdb.FatalException as exc:
            self.note_fatal(exc)
            return False
        except duckdb.Error:
            return True  # anything else is the probe's problem, not the database's
        finally:
            probe.close()
        return True

    def recover(self, wait_s: float = 0.0) -> bool:
        """Reopen the file in place after a fatal DuckDB error; whether it is usable now."""
        # Under the write lock, so no catch-up runs on the old connection; DuckDB replays its
        # WAL on reopening. While a reader is still inside a call, closing is refused: a later
        # call retries (the projector calls this every two seconds).
        if self.in_memory or self.healthy():
            return True
        if not self.write_lock.acquire(timeout=wait_s):
            return False
        try:
            if self.healthy():
                return True
            return self._reopen()
        finally:
            self.write_lock.release()

    def _reopen(self) -> bool:
        with self._swap:
            old = self._con
            if old is not None:
                try:
                    old.close()
                except duckdb.Error as exc:  # ResourceInUseException: a reader is mid-call
                    log.warning("read model: waiting to reopen after a fatal error: %s", exc)
                    return False
                self._con = None
                self._generation += 1
            # Between DuckDB's close and its reopening its own lock is free; the flock, held
            # through our descriptor, keeps other opsledger processes out.
            try:
                self._con = self._connect()
            except (duckdb.Error, ReadModelBusy) as exc:
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if problem != self.problem:  # once per cause, not at every retry
                    log.error("read model: reopening failed (retrying): %s", problem)
                self.problem = problem
                return False
        for p in (self.path, self.wal_path):
            _private(p)
        log.warning("read model: reopened after a fatal error (%s)", self.problem or "invalidated")
        self.problem = None
        return True

    def note_fatal(self, exc: BaseException) -> None:
        """Remember why the database was invalidated, for the logs and /readyz."""
        # The first cause is kept: later calls only say the database is invalidated.
        if self.problem is None:
            self.problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def close(self) -> None:
        """Close the database (every cursor with it), then let go of the file and its lock."""
        with self._swap:
            if self._con is not None:
                self._con.close()
                self._con = None
            self._generation += 1
        self._release_files()

    def _release_files(self) -> None:
        # DuckDB's descriptor is closed by now: closing ours cannot drop a lock still needed;
        # it releases the flock.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One read-only transaction: the block's queries see one state, as a single query would."""
    # Outside a transaction every statement gets a new id, and a catch-up committing between two
    # of them would mix two states; inside the caller's (the report's), BEGIN would fail and
    # abort it, and its snapshot is already the one to read.
    probe = "SELECT current_transaction_id()"
    if con.execute(probe).fetchone() == con.execute(probe).fetchone():
        yield con
        return
    con.begin()
    try:
        yield con
    finally:
        con.rollback()

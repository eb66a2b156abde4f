"""Backups of the ledger: a digest of its events, online SQLite copies, and their restore.

The ledger is append-only with contiguous positions 1..head, and series ids are contiguous
1..series_head (both assigned as max + 1 under the append lock), so a digest of the events
up to a head and the series up to a series head stays valid while the ledger grows: verify a
copy against its manifest, or a live ledger against a manifest taken earlier.

The digest is BLAKE2b-256 over a canonical encoding of every stored column of every event
(position order) and of every series row (id order), streamed in pages. It is the same on
SQLite and PostgreSQL for the same rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from sqlalchemy import Connection, Engine, create_engine, func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from store.engine import SQLITE_BUSY_TIMEOUT_MS, display_url, is_sqlite, make_engine
from store.ledger import EVENT_COLUMNS
from store.migrate import current_revision
from store.schema import events, series
from store.timefmt import format_us

MANIFEST_FORMAT: Final = "opsledger-manifest"
MANIFEST_VERSION: Final = 1
DIGEST_ALGORITHM: Final = "blake2b-256"
MANIFEST_FILE: Final = "manifest.json"
LEDGER_FILE: Final = "ledger.db"
#: Suffix of the temporary directory a backup is written into before it is renamed into place.
PARTIAL_SUFFIX: Final = ".partial"
#: Rows per page of the digest (an event's data can be large: keep pages modest).
_PAGE: Final = 200
_MAGIC: Final = b"opsledger ledger digest v1\n"
_SERIES_COLUMNS: Final = ("series_id", "name", "labels")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
#: SQLite's result codes for a lock held elsewhere (the backup API reports them as progress).
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


class BackupError(Exception):
    """A backup or restore could not be done; nothing was changed."""


class NotABackup(BackupError):
    """The path is not a complete backup (missing, interrupted, unreadable manifest)."""


class BackupMismatch(BackupError):
    """A copy or a ledger does not match its manifest (damaged, tampered with, or another)."""


class TargetNotEmpty(BackupError):
    """The restore target already holds events."""


class NewerBackup(BackupError):
    """The backup's schema revision is unknown here: a newer release made it."""


class DestinationExists(BackupError):
    """A backup's directory exists already: a backup writes a new one."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a digest covers: events 1..head and series 1..series_head, and their digest."""

    head: int
    event_count: int
    series_head: int
    series_count: int
    digest: str
    algorithm: str = DIGEST_ALGORITHM

    def same_as(self, other: Manifest) -> bool:
        """Whether both describe the same events and series."""
        return (
            self.head,
            self.event_count,
            self.series_head,
            self.series_count,
            self.digest,
            self.algorithm,
        ) == (
            other.head,
            other.event_count,
            other.series_head,
            other.series_count,
            other.digest,
            other.algorithm,
        )

    def as_dict(self) -> dict[str, Any]:
        """The manifest's digest fields."""
        return {
            "head": self.head,
            "event_count": self.event_count,
            "series_head": self.series_head,
            "series_count": self.series_count,
            "digest_algorithm": self.algorithm,
            "digest": self.digest,
        }


# -- the digest ------------------------------------------------------------------------------


def _encode(value: Any) -> bytes:
    """A column value, tagged with its kind and (for text and bytes) its length."""
    if value is None:
        return b"N"
    if isinstance(value, bool):
        raise TypeError("unexpected boolean column value")
    if isinstance(value, int):
        return b"I" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"S" + len(raw).to_bytes(8, "big") + raw
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return b"B" + len(raw).to_bytes(8, "big") + raw
    raise TypeError(f"unexpected column value of type {type(value).__name__}")


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """One read transaction: a consistent snapshot while writers append."""
    with engine.connect() as conn:
        if not is_sqlite(engine):
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        # SQLite engines of make_engine begin with BEGIN DEFERRED: the snapshot starts at the
        # first read and holds until the end (WAL readers never block writers).
        with conn.begin():
            yield conn


def ledger_manifest(
    engine: Engine, head: int | None = None, series_head: int | None = None
) -> Manifest:
    """The digest of events 1..head and series 1..series_head (default: all, in one snapshot).

    A live ledger checked against a manifest taken earlier passes both of its bounds; a
    ledger holding fewer events or series than asked for gives a smaller head and differs.
    """
    h = hashlib.blake2b(digest_size=32)
    h.update(_MAGIC)
    event_cols = [events.c[name] for name in EVENT_COLUMNS]
    series_cols = [series.c[name] for name in _SERIES_COLUMNS]
    with _snapshot(engine) as conn:
        if head is None:
            head = int(
                conn.execute(select(func.coalesce(func.max(events.c.position), 0))).scalar_one()
            )
        if series_head is None:
            series_head = int(
                conn.execute(select(func.coalesce(func.max(series.c.series_id), 0))).scalar_one()
            )
        last, count = 0, 0
        while last < head:
            q = (
                select(*event_cols)
                .where(events.c.position > last, events.c.position <= head)
                .order_by(events.c.position)
                .limit(_PAGE)
            )
            rows = conn.execute(q).all()
            if not rows:
                break
            for row in rows:
                h.update(b"E" + b"".join(_encode(v) for v in row))
            last, count = int(rows[-1][0]), count + len(rows)
        h.update(b"S")
        slast, scount = 0, 0
        while slast < series_head:
            sq = (
                select(*series_cols)
                .where(series.c.series_id > slast, series.c.series_id <= series_head)
                .order_by(series.c.series_id)
                .limit(_PAGE * 10)
            )
            srows = conn.execute(sq).all()
            if not srows:
                break
            for row in srows:
                h.update(b"R" + b"".join(_encode(v) for v in row))
            slast, scount = int(srows[-1][0]), scount + len(srows)
    h.update(b"T" + b"".join(_encode(v) for v in (last, count, slast, scount)))
    return Manifest(last, count, slast, scount, h.hexdigest())


# -- manifests -------------------------------------------------------------------------------


def _opsledger_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opsledger")
    except PackageNotFoundError:
        return "unknown"


def manifest_document(
    m: Manifest, *, kind: str, source_url: str, revision: str | None
) -> dict[str, Any]:
    """The manifest as JSON: the digest fields and what they were taken from."""
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "kind": kind,
        "created_at": format_us(time.time_ns() // 1000),
        "opsledger_version": _opsledger_version(),
        "source": display_url(source_url),
        "backend": make_url(source_url).get_backend_name(),
        "alembic_revision": revision,
        **m.as_dict(),
    }


def parse_manifest(doc: Any, where: str) -> Manifest:
    """The digest fields of a manifest document; NotABackup when it is not one."""
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise NotABackup(f"{where} is not an opsledger manifest")
    if doc.get("format_version") != MANIFEST_VERSION:
        raise NotABackup(
            f"{where} has manifest format version {doc.get('format_version')!r}; this "
            f"opsledger reads version {MANIFEST_VERSION}"
        )
    if doc.get("digest_algorithm") != DIGEST_ALGORITHM:
        raise NotABackup(f"{where}: unknown digest algorithm {doc.get('digest_algorithm')!r}")
    ints = {}
    for key in ("head", "event_count", "series_head", "series_count"):
        value = doc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise NotABackup(f"{where}: {key} must be a non-negative integer")
        ints[key] = value
    digest = doc.get("digest")
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise NotABackup(f"{where}: digest must be 64 hexadecimal digits")
    return Manifest(
        ints["head"], ints["event_count"], ints["series_head"], ints["series_count"], digest
    )


def read_manifest(path: Path) -> tuple[Manifest, dict[str, Any]]:
    """A manifest file, or the manifest of a backup directory."""
    file = path / MANIFEST_FILE if path.is_dir() else path
    if path.is_dir() and not file.exists():
        raise NotABackup(
            f"incomplete backup: {path} has no {MANIFEST_FILE} (an interrupted "
            "`opsledger backup` leaves this; take a new backup)"
        )
    try:
        doc = orjson.loads(file.read_bytes())
    except OSError as exc:
        raise NotABackup(f"cannot read {file}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise NotABackup(f"{file} is not JSON (damaged or truncated manifest)") from None
    return parse_manifest(doc, str(file)), doc


# -- SQLite files ----------------------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL, or None for another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise BackupError(f"{display_url(url)} is not a SQLite file opsledger can back up")
    return Path(parsed.database).absolute()


def _connect(path: Path, mode: str, timeout_s: float) -> sqlite3.Connection:
    """A plain connection to an existing file (`mode` ro or rw: never creates it)."""
    return sqlite3.connect(
        f"{path.as_uri()}?mode={mode}", uri=True, timeout=timeout_s, isolation_level=None
    )


def _read_only_engine(path: Path) -> Engine:
    """An engine that only reads an existing file and changes nothing in it."""
    return create_engine(
        "sqlite://",
        creator=lambda: _connect(path, "ro", SQLITE_BUSY_TIMEOUT_MS / 1000),
        poolclass=NullPool,
    )


def _copy_pages(
    src: sqlite3.Connection, dst: sqlite3.Connection, lock_timeout_s: float, what: str
) -> None:
    """SQLite's online backup in one step: one read snapshot of the source, pages copied.

    In one step a concurrent writer (WAL mode) does not restart the copy; a lock held in
    exclusive mode elsewhere is waited for up to `lock_timeout_s`.
    """
    deadline = time.monotonic() + lock_timeout_s

    def progress(status: int, _remaining: int, _total: int) -> None:
        if status in (_SQLITE_BUSY, _SQLITE_LOCKED) and time.monotonic() > deadline:
            raise BackupError(f"{what} stayed locked for {lock_timeout_s:.0f} s; retry later")

    try:
        src.backup(dst, pages=-1, progress=progress)
    except sqlite3.Error as exc:
        raise BackupError(f"copying {what} failed: {exc}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_file(path: Path) -> tuple[Manifest, str | None]:
    """The manifest and Alembic revision of a SQLite ledger file nobody writes to."""
    engine = _read_only_engine(path)
    try:
        if not inspect(engine).has_table("events"):
            raise BackupError(f"{path} holds no ledger (run `opsledger db upgrade` first)")
        return ledger_manifest(engine), current_revision(engine)
    finally:
        engine.dispose()


def partial_backups(dest: Path) -> list[Path]:
    """Temporary directories that interrupted backups to `dest` left beside it."""
    parent = dest.absolute().parent
    if not parent.is_dir():
        return []
    return sorted(parent.glob(f".{glob_escape(dest.name)}.*{PARTIAL_SUFFIX}"))


def glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def backup_sqlite(
    url: str,
    dest: Path,
    *,
    lock_timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
) -> dict[str, Any]:
    """Copy the SQLite ledger at `url` to the new directory `dest` with its manifest.

    Everything is written into a temporary directory beside `dest` and renamed to `dest`
    last, so `dest` either holds a complete backup or does not exist. Returns the manifest.
    """
    src_path = sqlite_file(url)
    if src_path is None:
        raise BackupError("the ledger is not a SQLite file")
    dest = dest.absolute()
    if dest.exists() or dest.is_symlink():
        raise DestinationExists(f"{dest} already exists; a backup writes a new directory")
    if not src_path.is_file():
        raise BackupError(f"there is no ledger at {src_path}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=PARTIAL_SUFFIX, dir=dest.parent))
    try:
        copy = tmp / LEDGER_FILE
        src = _connect(src_path, "rw", lock_timeout_s)
        dst = sqlite3.connect(copy, isolation_level=None)
        try:
            _copy_pages(src, dst, lock_timeout_s, f"the ledger {src_path}")
            # A self-contained file: no -wal beside it, and it opens read-only later.
            mode = dst.execute("PRAGMA journal_mode=DELETE").fetchone()
            if mode is None or str(mode[0]).lower() != "delete":
                raise BackupError(f"could not take {copy} out of WAL mode")
        finally:
            src.close()
            dst.close()
        _fsync(copy)
        manifest, revision = describe_file(copy)
        doc = manifest_document(manifest, kind="backup", source_url=url, revision=revision)
        doc["ledger_file"] = LEDGER_FILE
        doc["ledger_file_bytes"] = copy.stat().st_size
        doc["ledger_file_sha256"] = file_sha256(copy)
        # The manifest last: without it the directory is an incomplete backup.
        manifest_path = tmp / MANIFEST_FILE
        manifest_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        _fsync(manifest_path)
        _fsync(tmp)
        os.replace(tmp, dest)
        _fsync(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return doc


def load_backup(path: Path) -> tuple[Manifest, dict[str, Any]]:
    """The manifest of a complete backup directory; NotABackup otherwise."""
    if not path.exists():
        partial = partial_backups(path)
        hint = (
            f" ({partial[-1].name} beside it is what an interrupted backup left)" if partial else ""
        )
        raise NotABackup(f"there is no backup at {path}{hint}")
    if not path.is_dir():
        raise NotABackup(f"{path} is not a backup directory")
    manifest, doc = read_manifest(path)
    if doc.get("kind") != "backup" or doc.get("ledger_file") != LEDGER_FILE:
        raise NotABackup(f"{path / MANIFEST_FILE} is not the manifest of a backup")
    if not isinstance(doc.get("ledger_file_sha256"), str):
        raise NotABackup(f"{path / MANIFEST_FILE} lacks ledger_file_sha256")
    if not (path / LEDGER_FILE).is_file():
        raise NotABackup(f"incomplete backup: {path} has no {LEDGER_FILE}")
    return manifest, doc


def check_copy(copy: Path, manifest: Manifest, doc: dict[str, Any], where: Path) -> None:
    """Refuse a ledger file whose bytes or events differ from the backup's manifest."""
    try:
        actual, _ = describe_file(copy)
    except Exception as exc:  # a damaged file may not even open as a database
        raise BackupMismatch(f"the backup at {where} is damaged: {exc}") from None
    if not actual.same_as(manifest):
        raise BackupMismatch(
            f"the backup at {where} is damaged: digest mismatch: its ledger.db holds events "
            f"1..{actual.head} with digest {actual.digest[:16]}…, the manifest says "
            f"1..{manifest.head} with {manifest.digest[:16]}…"
        )
    if file_sha256(copy) != doc["ledger_file_sha256"]:
        raise BackupMismatch(
            f"the backup at {where} is damaged: ledger.db differs from the file the backup "
            "wrote (SHA-256 mismatch), though its events match"
        )


def check_revision(doc: dict[str, Any], where: Path) -> None:
    """Refuse a backup whose schema revision this code does not ship (a newer release's)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from store.migrate import alembic_config

    revision = doc.get("alembic_revision")
    if revision is None:
        return
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        scripts.get_revision(str(revision))
    except CommandError:
        raise NewerBackup(
            f"the backup at {where} is at schema revision {revision}, which this opsledger "
            f"(head {scripts.get_current_head()}) does not know: it was made by a newer "
            "release; restore it with that release"
        ) from None


def sqlite_head(path: Path) -> int:
    """The highest position of a SQLite ledger file (0 when missing, empty or unmigrated)."""
    if not path.exists():
        return 0
    con = _connect(path, "rw", SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        found = con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if found is None:
            return 0
        row = con.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def restore_sqlite(
    path: Path,
    url: str,
    *,
    force: bool = False,
    lock_timeout_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
) -> tuple[Manifest, dict[str, Any]]:
    """Replace the SQLite ledger at `url` with the backup at `path`, verified before and after.

    The backup's file is copied beside the target and checked against the manifest (bytes and
    events); then SQLite's backup API writes it into the target in one transaction, so a
    crash leaves the old ledger and other connections never see a mix. Returns the manifest.
    """
    target = sqlite_file(url)
    if target is None:
        raise BackupError("the ledger is not a SQLite file")
    manifest, doc = load_backup(path)
    check_revision(doc, path)
    head = sqlite_head(target)
    if head and not force:
        raise TargetNotEmpty(
            f"the ledger at {target} holds events (head {head}); restore replaces all of them: "
            "pass --force to do so"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    try:
        shutil.copyfile(path / LEDGER_FILE, staged)
        _fsync(staged)
        check_copy(staged, manifest, doc, path)
        src = _connect(staged, "ro", lock_timeout_s)
        dst = sqlite3.connect(target, timeout=lock_timeout_s, isolation_level=None)
        try:
            # The ledger's own mode (make_engine), so the copy lands as one WAL transaction.
            dst.execute("PRAGMA journal_mode=WAL")
            _copy_pages(src, dst, lock_timeout_s, f"the ledger {target}")
            with contextlib.suppress(sqlite3.Error):
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            src.close()
            dst.close()
    finally:
        with contextlib.suppress(OSError):
            staged.unlink()
    engine = make_engine(url, poolclass=NullPool)
    try:
        restored = ledger_manifest(engine, manifest.head, manifest.series_head)
    finally:
        engine.dispose()
    if not restored.same_as(manifest):
        raise BackupMismatch(
            f"the restored ledger at {target} does not match the backup's manifest "
            f"(digest {restored.digest[:16]}…, expected {manifest.digest[:16]}…)"
        )
    return manifest, doc

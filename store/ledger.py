"""The ledger: append-only events with idempotent appends, stream versions and ordered reads."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from sqlalchemy import Connection, Engine, func, select, tuple_
from sqlalchemy.exc import IntegrityError

from store import samples as sample_codec
from store.collectors import save_cursor
from store.contract import Event, SampleBatch, event_to_cloudevent
from store.engine import is_sqlite, make_engine
from store.errors import Conflict, ConflictError, StreamVersionError
from store.schema import DATA_JSON, DATA_SAMPLES_V1, events, series
from store.timefmt import format_us

_CHUNK = 500
#: Distinct series sets whose canonical order is remembered (each costs its keys).
_CANONICAL_MEMO = 64
# Below SQLite's 32,766 bound parameters per statement.
_ID_CHUNK = 10_000
#: The events table's columns, in the order appends bind them.
EVENT_COLUMNS = (
    "position",
    "source",
    "id",
    "type",
    "time",
    "cluster",
    "subject",
    "stream",
    "stream_version",
    "recorded_at",
    "data_format",
    "data",
    "digest",
    "sample_count",
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: new events, duplicates, and the positions of the new ones."""

    accepted: int
    duplicates: int
    first_position: int | None
    last_position: int | None
    positions: list[int]

    def as_dict(self) -> dict[str, Any]:
        """The result as the API reports it."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "first_position": self.first_position,
            "last_position": self.last_position,
        }


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as recorded, with its position and stream version."""

    position: int
    source: str
    id: str
    type: str
    time_us: int
    cluster: str | None
    subject: str | None
    stream: str | None
    stream_version: int | None
    recorded_at_us: int
    data: Mapping[str, Any] | None
    samples: SampleBatch | None

    def to_cloudevent(self) -> dict[str, Any]:
        """The event as a structured CloudEvent with its ledger coordinates as extensions."""
        data = self.data if self.samples is None else self.samples.to_data()
        assert data is not None
        out = event_to_cloudevent(
            source=self.source,
            event_id=self.id,
            event_type=self.type,
            time_us=self.time_us,
            cluster=self.cluster,
            subject=self.subject,
            data=data,
        )
        out["position"] = self.position
        out["recordedat"] = format_us(self.recorded_at_us)
        if self.stream is not None:
            out["stream"] = self.stream
            out["streamversion"] = self.stream_version
        return out


class Ledger:
    """The append-only event store over SQLAlchemy Core (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite = is_sqlite(engine)
        self._series_ids: dict[tuple[str, str], int] = {}
        self._series_keys: dict[int, tuple[str, str]] = {}
        self._series_lock = threading.Lock()
        self._canonical_memo: dict[bytes, tuple[tuple[tuple[str, str], ...], Any]] = {}
        mark = "?" if self._sqlite else "%s"
        self._insert_sql = (
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(EVENT_COLUMNS))})"
        )

    @classmethod
    def from_url(cls, url: str) -> Ledger:
        """A ledger on a new engine for the URL."""
        return cls(make_engine(url))

    # -- writing ---------------------------------------------------------------------------

    def append(
        self,
        batch: Sequence[Event],
        expected_versions: Mapping[str, int] | None = None,
        *,
        cursor: tuple[str, Mapping[str, Any]] | None = None,
    ) -> AppendResult:
        """Append atomically: duplicates are no-ops, any conflict or stale version writes nothing.

        `expected_versions` maps a stream to the version its writer last saw (0 for a new stream).
        `cursor` (collector name, cursor) is stored in the same transaction, so a collector
        that crashes resumes exactly after what it recorded.
        """
        if not batch and cursor is None:
            return AppendResult(0, 0, None, None, [])
        new_series: dict[tuple[str, str], int] = {}
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            try:
                with conn.begin():
                    result = (
                        self._append(conn, batch, expected_versions or {}, new_series)
                        if batch
                        else AppendResult(0, 0, None, None, [])
                    )
                    if cursor is not None:
                        save_cursor(conn, *cursor)
            except IntegrityError as exc:
                mapped = self._map_integrity_error(exc, batch, expected_versions)
                if mapped is exc:
                    raise
                raise mapped from exc
        if new_series:
            with self._series_lock:
                for key, sid in new_series.items():
                    self._series_ids[key] = sid
                    self._series_keys[sid] = key
        return result

    def _append(
        self,
        conn: Connection,
        batch: Sequence[Event],
        expected: Mapping[str, int],
        new_series: dict[tuple[str, str], int],
    ) -> AppendResult:
        if not self._sqlite:
            # Positions come from max(position) + 1 under this lock, which is held to commit: no
            # transaction can commit a lower position after a higher one is visible, so a reader
            # following positions never skips an event committed late. EXCLUSIVE still lets
            # plain SELECTs run. (SQLite gets the same from BEGIN IMMEDIATE.)
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        recorded = self._find(conn, batch)
        conflicts: list[Conflict] = []
        positions: list[int] = [0] * len(batch)
        fresh: list[int] = []
        for i, ev in enumerate(batch):
            hit = recorded.get((ev.source, ev.id))
            if hit is None:
                fresh.append(i)
            elif hit[1] == ev.digest:
                positions[i] = hit[0]
            else:
                conflicts.append(Conflict(i, ev.source, ev.id, hit[0]))
        if conflicts:
            raise ConflictError(conflicts)
        if not fresh:
            return AppendResult(0, len(batch), None, None, positions)

        versions = self._stream_versions(conn, {batch[i].stream for i in fresh} | set(expected))
        for stream, want in expected.items():
            if versions.get(stream, 0) != want:
                raise StreamVersionError(stream, want, versions.get(stream, 0))
        series_ids = self._intern_series(conn, [batch[i] for i in fresh], new_series)

        head = conn.execute(select(func.coalesce(func.max(events.c.position), 0))).scalar_one()
        now = time.time_ns() // 1000
        rows: list[tuple[Any, ...]] = []
        for n, i in enumerate(fresh):
            ev = batch[i]
            pos = head + 1 + n
            positions[i] = pos
            version = None
            if ev.stream is not None:
                version = versions.get(ev.stream, 0) + 1
                versions[ev.stream] = version
            if ev.samples is not None:
                s = ev.samples
                lookup = np.array([series_ids[k] for k in s.series], dtype=np.int64)
                blob = sample_codec.encode(lookup[s.series_index], s.ts_us, s.values)
                fmt, count = DATA_SAMPLES_V1, len(s)
            else:
                blob = orjson.dumps(ev.data)
                fmt, count = DATA_JSON, 0
            rows.append(
                (
                    pos,
                    ev.source,
                    ev.id,
                    ev.type,
                    ev.time_us,
                    ev.cluster,
                    ev.subject,
                    ev.stream,
                    version,
                    now,
                    fmt,
                    blob,
                    ev.digest,
                    count,
                )
            )
        # Straight to the driver's executemany: per-row dict binding costs as much as SQLite's
        # own insert work (docs/benchmarks.md). The column order is EVENT_COLUMNS.
        conn.exec_driver_sql(self._insert_sql, rows)
        return AppendResult(
            len(fresh), len(batch) - len(fresh), head + 1, head + len(fresh), positions
        )

    def _find(
        self, conn: Connection, batch: Sequence[Event]
    ) -> dict[tuple[str, str], tuple[int, bytes]]:
        by_source: dict[str, list[str]] = defaultdict(list)
        for ev in batch:
            by_source[ev.source].append(ev.id)
        found: dict[tuple[str, str], tuple[int, bytes]] = {}
        for source, ids in by_source.items():
            for k in range(0, len(ids), _ID_CHUNK):
                q = select(events.c.id, events.c.position, events.c.digest).where(
                    events.c.source == source, events.c.id.in_(ids[k : k + _ID_CHUNK])
                )
                for row in conn.execute(q):
                    found[(source, row.id)] = (row.position, bytes(row.digest))
        return found

    def _stream_versions(self, conn: Connection, streams: set[str | None]) -> dict[str, int]:
        names = sorted(s for s in streams if s is not None)
        out: dict[str, int] = {}
        for k in range(0, len(names), _CHUNK):
            q = (
                select(events.c.stream, func.max(events.c.stream_version))
                .where(events.c.stream.in_(names[k : k + _CHUNK]))
                .group_by(events.c.stream)
            )
            for stream, version in conn.execute(q):
                out[stream] = int(version)
        return out

    def _intern_series(
        self, conn: Connection, batch: Sequence[Event], new_series: dict[tuple[str, str], int]
    ) -> dict[tuple[str, str], int]:
        wanted: set[tuple[str, str]] = set()
        for ev in batch:
            if ev.samples is not None:
                wanted.update(ev.samples.series)
        if not wanted:
            return {}
        with self._series_lock:
            ids = {k: self._series_ids[k] for k in wanted if k in self._series_ids}
        missing = sorted(wanted - ids.keys())
        for k in range(0, len(missing), _CHUNK):
            chunk = missing[k : k + _CHUNK]
            q = select(series.c.series_id, series.c.name, series.c.labels).where(
                tuple_(series.c.name, series.c.labels).in_(chunk)
            )
            for sid, name, labels in conn.execute(q):
                ids[(name, labels)] = sid
                with self._series_lock:
                    self._series_ids[(name, labels)] = sid
                    self._series_keys[sid] = (name, labels)
        absent = [k for k in missing if k not in ids]
        if absent:
            top = conn.execute(select(func.coalesce(func.max(series.c.series_id), 0))).scalar_one()
            rows = []
            for n, key in enumerate(absent):
                sid = top + 1 + n
                ids[key] = sid
                new_series[key] = sid
                rows.append({"series_id": sid, "name": key[0], "labels": key[1]})
            conn.execute(series.insert(), rows)
        return ids

    def _map_integrity_error(
        self,
        exc: IntegrityError,
        batch: Sequence[Event],
        expected_versions: Mapping[str, int] | None,
    ) -> Exception:
        """The domain error behind a unique-key violation, judged against what is recorded now.

        Only reachable if a writer bypassed the write lock; the unique keys still hold.
        """
        with self.engine.connect() as conn:
            if "stream" in str(exc.orig).lower():
                streams = {e.stream for e in batch if e.stream}
                current = self._stream_versions(conn, set(streams))
                stream = next(iter(sorted(s for s in streams if s)), "?")
                want = (expected_versions or {}).get(stream)
                return StreamVersionError(stream, want, current.get(stream, 0))
            recorded = self._find(conn, batch)
        conflicts = [
            Conflict(i, e.source, e.id, recorded[(e.source, e.id)][0])
            for i, e in enumerate(batch)
            if (e.source, e.id) in recorded and recorded[(e.source, e.id)][1] != e.digest
        ]
        if conflicts:
            return ConflictError(conflicts)
        return exc

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> int:
        """The highest recorded position (0 when empty)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.coalesce(func.max(events.c.position), 0))).scalar_one()
            )

    def read(
        self,
        after: int = 0,
        limit: int = 100,
        *,
        types: Sequence[str] | None = None,
        cluster: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        newest: bool = False,
    ) -> list[RecordedEvent]:
        """Events after a position in position order, optionally filtered; time is [since, until).

        With `newest`, the last `limit` matching events (still returned in position order).
        """
        q = select(events).where(events.c.position > after)
        if types:
            q = q.where(events.c.type.in_(list(types)))
        if cluster is not None:
            q = q.where(events.c.cluster == cluster)
        if since_us is not None:
            q = q.where(events.c.time >= since_us)
        if until_us is not None:
            q = q.where(events.c.time < until_us)
        order = events.c.position.desc() if newest else events.c.position
        q = q.order_by(order).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            return self._decode(conn, rows[::-1] if newest else rows)

    def read_stream(self, stream: str, after_version: int = 0) -> list[RecordedEvent]:
        """An aggregate stream's events in version order."""
        q = (
            select(events)
            .where(events.c.stream == stream, events.c.stream_version > after_version)
            .order_by(events.c.stream_version)
        )
        with self.engine.connect() as conn:
            return self._decode(conn, conn.execute(q).all())

    def iter_all(self, after: int = 0, batch: int = 1000) -> Iterator[RecordedEvent]:
        """Every event after a position, paging through the ledger."""
        while True:
            page = self.read(after, batch)
            if not page:
                return
            yield from page
            after = page[-1].position

    def _decode(self, conn: Connection, rows: Sequence[Any]) -> list[RecordedEvent]:
        blobs: dict[int, tuple[Any, Any, Any, Any, Any]] = {}
        needed: set[int] = set()
        for row in rows:
            if row.data_format == DATA_SAMPLES_V1:
                ids, ts, values = sample_codec.decode(bytes(row.data))
                uniq, inverse = _unique_inverse(ids)
                blobs[row.position] = (ids, ts, values, uniq, inverse)
                needed.update(uniq.tolist())
        self._load_series(conn, needed)
        out = []
        for row in rows:
            data: Mapping[str, Any] | None = None
            batch: SampleBatch | None = None
            if row.data_format == DATA_SAMPLES_V1:
                ids, ts, values, uniq, inverse = blobs[row.position]
                ordered, rank = self._canonical_series(uniq)
                batch = SampleBatch(ordered, rank[inverse], ts, values)
            else:
                data = orjson.loads(row.data)
            out.append(
                RecordedEvent(
                    position=row.position,
                    source=row.source,
                    id=row.id,
                    type=row.type,
                    time_us=row.time,
                    cluster=row.cluster,
                    subject=row.subject,
                    stream=row.stream,
                    stream_version=row.stream_version,
                    recorded_at_us=row.recorded_at,
                    data=data,
                    samples=batch,
                )
            )
        return out

    def _canonical_series(
        self, uniq: npt.NDArray[np.int64]
    ) -> tuple[tuple[tuple[str, str], ...], npt.NDArray[np.int64]]:
        """A batch's series keys in key order, and each stored id's rank among them."""
        # Collectors send the same series set batch after batch: remember its ordering.
        memo = uniq.tobytes()
        hit = self._canonical_memo.get(memo)
        if hit is not None:
            return hit
        keys = [self._series_keys[int(s)] for s in uniq]
        # Stored ids follow creation order, not key order: re-rank to the canonical form.
        order = sorted(range(len(keys)), key=keys.__getitem__)
        rank = np.empty(len(keys), dtype=np.int64)
        rank[order] = np.arange(len(keys), dtype=np.int64)
        out = (tuple(keys[i] for i in order), rank)
        with self._series_lock:
            if len(self._canonical_memo) >= _CANONICAL_MEMO:
                self._canonical_memo.clear()
            self._canonical_memo[memo] = out
        return out

    def _load_series(self, conn: Connection, ids: set[int]) -> None:
        with self._series_lock:
            missing = sorted(i for i in ids if i not in self._series_keys)
        for k in range(0, len(missing), _CHUNK):
            q = select(series.c.series_id, series.c.name, series.c.labels).where(
                series.c.series_id.in_(missing[k : k + _CHUNK])
            )
            for sid, name, labels in conn.execute(q):
                with self._series_lock:
                    self._series_keys[sid] = (name, labels)
                    self._series_ids[(name, labels)] = sid


def _unique_inverse(
    ids: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """`np.unique(ids, return_inverse=True)`, by counting when the ids span a narrow range."""
    if ids.size == 0:
        return ids, ids
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo > 4 * ids.size:
        uniq, inverse = np.unique(ids, return_inverse=True)
        return uniq, inverse.astype(np.int64)
    # A batch's series are interned together, so their ids are nearly contiguous: a lookup
    # table beats the sort inside np.unique.
    present = np.bincount(ids - lo, minlength=hi - lo + 1) > 0
    uniq = np.flatnonzero(present).astype(np.int64) + lo
    lookup = np.cumsum(present, dtype=np.int64) - 1
    return uniq, lookup[ids - lo]

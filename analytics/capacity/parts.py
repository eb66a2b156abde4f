"""Capacity samples decoded a page at a time into rows of the values tables.

A row is a member (a node or a namespace), a timestamp and a column per metric: see `Kind`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import duckdb
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from store.contract import SampleBatch
from store.ledger import RecordedEvent
from store.timefmt import us_to_naive

#: Small codes keep the per-sample data numeric, which is what makes bulk inserts fast.
METRIC_CODES: Final = {
    "node_cpu_usage_cores": 1,
    "node_cpu_allocatable_cores": 2,
    "node_memory_usage_bytes": 3,
    "node_memory_allocatable_bytes": 4,
    "namespace_cpu_usage_cores": 11,
    "namespace_cpu_requests_cores": 12,
    "namespace_memory_usage_bytes": 13,
    "namespace_memory_requests_bytes": 14,
    "namespace_pod_count": 15,
}
DAY_US: Final = 86_400_000_000

#: A (cluster, UTC day start in µs) pair.
Day = tuple[str, int]
#: A capacity series' (cluster, nodepool, node, namespace): a node's or a namespace's.
Member = tuple[str, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Kind:
    """A values table: one row per member and timestamp, one column per metric code."""

    table: str
    codes: tuple[int, ...]
    columns: tuple[str, ...]


NODE: Final = Kind("cap_node_values", (1, 2, 3, 4), ("cpu_u", "cpu_a", "mem_u", "mem_a"))
NAMESPACE: Final = Kind(
    "cap_ns_values", (11, 12, 13, 14, 15), ("cpu_u", "cpu_r", "mem_u", "mem_r", "pods")
)
KINDS: Final = (NODE, NAMESPACE)


def timestamp_literal(us: int) -> str:
    """A timestamp literal: unlike a parameter, it lets DuckDB skip row groups by their ts range."""
    return f"TIMESTAMP '{us_to_naive(us).isoformat(sep=' ')}'"


def _member(cluster: str, name: str, labels_json: str) -> Member | None:
    """(cluster, nodepool, node, namespace) of a capacity series, or None for other metrics."""
    if name not in METRIC_CODES:
        return None
    labels = orjson.loads(labels_json)
    if name.startswith("node_"):
        return (cluster, labels.get("nodepool"), labels.get("node"), None)
    return (cluster, None, None, labels.get("namespace"))


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a batch's series list means for capacity: parsed once per distinct list."""

    #: Metric code per series (0: not a capacity metric).
    codes: npt.NDArray[np.uint8]
    #: The distinct members, and each series' index among them (-1: not a capacity metric).
    members: tuple[Member, ...]
    member_of: npt.NDArray[np.int64]
    #: Per kind: its members (indices into `members`) and, per member and metric column, the
    #: series holding it (-1: none); None when two series feed one cell (then rows are merged).
    grids: tuple[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None, ...]


@functools.lru_cache(maxsize=64)
def _layout(cluster: str, series: tuple[tuple[str, str], ...]) -> _Layout:
    """Parse a series list once: a scrape repeats the same list event after event."""
    codes = np.array([METRIC_CODES.get(name, 0) for name, _ in series], np.uint8)
    index: dict[Member, int] = {}
    member_of = np.full(len(series), -1, np.int64)
    for i, (name, labels) in enumerate(series):
        m = _member(cluster, name, labels)
        if m is not None:
            member_of[i] = index.setdefault(m, len(index))
    grids = tuple(_grid(kind, codes, member_of) for kind in KINDS)
    return _Layout(codes, tuple(index), member_of, grids)


def _grid(
    kind: Kind, codes: npt.NDArray[np.uint8], member_of: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """A kind's members and the series of each (member, metric column), -1 where absent."""
    col = np.full(256, -1, np.int64)
    col[list(kind.codes)] = np.arange(len(kind.codes))
    rows = np.flatnonzero(col[codes] >= 0)
    members, local = np.unique(member_of[rows], return_inverse=True)
    grid = np.full((len(members), len(kind.codes)), -1, np.int64)
    cells = local * len(kind.codes) + col[codes[rows]]
    if len(np.unique(cells)) < len(cells):
        return None
    grid.reshape(-1)[cells] = rows
    return members, grid


@dataclass(slots=True)
class _Event:
    """One sample event of a page, with its layout and its members' ids."""

    position: int
    cluster: str
    batch: SampleBatch
    layout: _Layout
    ids: npt.NDArray[np.int32]


@dataclass(slots=True)
class Page:
    """The capacity sample events of a page, members resolved to ids."""

    events: list[_Event]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> Page | None:
        """The page's events holding capacity samples (None if none), adding new members."""
        found: list[tuple[RecordedEvent, SampleBatch, _Layout]] = []
        for ev in events:
            if ev.samples is not None:
                layout = _layout(ev.cluster or "", ev.samples.series)
                if layout.members:
                    found.append((ev, ev.samples, layout))
        if not found:
            return None
        distinct = {id(layout): layout for _, _, layout in found}
        # Ids are looked up per page, inside its transaction: no cache can outlive a rollback.
        ids = _member_ids(con, {m for lay in distinct.values() for m in lay.members})
        lookup = {
            key: np.array([ids[m] for m in lay.members], np.int32) for key, lay in distinct.items()
        }
        return cls(
            [
                _Event(ev.position, ev.cluster or "", batch, layout, lookup[id(layout)])
                for ev, batch, layout in found
            ]
        )

    def parts(self, kind: Kind) -> list[Part]:
        """The page's rows of a values table, an event at a time."""
        k = KINDS.index(kind)
        return [p for ev in self.events if (p := _wide_part(kind, k, ev)) is not None]

    def samples_table(self) -> pa.Table:
        """One row per capacity sample: member id, metric code, ts, value, ledger position."""
        parts = []
        for ev in self.events:
            b = ev.batch
            rows = ev.layout.codes[b.series_index] > 0
            idx = b.series_index[rows]
            parts.append(
                pa.table(
                    {
                        "member_id": pa.array(ev.ids[ev.layout.member_of[idx]], pa.int32()),
                        "metric": pa.array(ev.layout.codes[idx], pa.uint8()),
                        "ts": pa.array(b.ts_us[rows], pa.timestamp("us")),
                        "value": pa.array(b.values[rows], pa.float64()),
                        "position": pa.array(np.full(len(idx), ev.position, np.int64)),
                    }
                )
            )
        return pa.concat_tables(parts)


@dataclass(frozen=True, slots=True)
class Part:
    """Rows of a values table from one event; `exact` when each (member, ts) appears once."""

    table: pa.Table
    cluster: str
    #: The timestamps of the rows (dense parts: of each member's row of `values`).
    ts: npt.NDArray[np.int64]
    exact: bool
    #: Dense parts: the member ids and values[column, member, timestamp] (NaN: not reported).
    members: npt.NDArray[np.int32] | None = None
    values: npt.NDArray[np.float64] | None = None

    @property
    def lo(self) -> int:
        """The earliest timestamp."""
        return int(self.ts.min())

    @property
    def hi(self) -> int:
        """The latest timestamp."""
        return int(self.ts.max())

    def days(self) -> set[Day]:
        """The (cluster, UTC day start) pairs of the part's timestamps."""
        first, last = self.lo // DAY_US, self.hi // DAY_US
        # A scrape spans a day or two: listing the days in between is cheaper than unique().
        days = range(first, last + 1) if last - first < 3 else np.unique(self.ts // DAY_US)
        return {(self.cluster, int(d) * DAY_US) for d in days}


def _wide_part(kind: Kind, k: int, ev: _Event) -> Part | None:
    """One event's samples of a kind as values rows (member, ts, a column per metric)."""
    grid_spec = ev.layout.grids[k]
    b = ev.batch
    if grid_spec is None:
        return _sparse_part(kind, ev)
    members, grid = grid_spec
    if len(members) == 0:
        return None
    cells = grid.T  # [column, member]: the series of each cell, -1 where none
    present = cells >= 0
    series = cells[present]
    starts = np.searchsorted(b.series_index, series)
    counts = np.searchsorted(b.series_index, series, side="right") - starts
    n = int(counts[0])
    if n == 0 or (counts != n).any():
        return _sparse_part(kind, ev)
    at = starts[:, None] + np.arange(n)
    stamps = b.ts_us[at]
    if not (stamps == stamps[0]).all():
        return _sparse_part(kind, ev)
    # Every series of the kind sampled at the same timestamps: a gather, no grouping.
    if present.all():
        values = b.values[at].reshape(*cells.shape, n)
    else:
        values = np.full((cells.size, n), np.nan)
        values[present.reshape(-1)] = b.values[at]
        values = values.reshape(*cells.shape, n)
    ids = ev.ids[members]
    columns: dict[str, pa.Array] = {
        "member_id": pa.array(np.repeat(ids, n), pa.int32()),
        "ts": pa.array(np.tile(stamps[0], len(members)), pa.timestamp("us")),
    }
    for c, name in enumerate(kind.columns):
        flat = values[c].reshape(-1)
        mask = None if present[c].all() else np.isnan(flat)
        columns[name] = pa.array(flat, pa.float64(), mask=mask)
    columns["position"] = pa.array(np.full(len(members) * n, ev.position, np.int64))
    return Part(pa.table(columns), ev.cluster, stamps[0], True, ids, values)


def _sparse_part(kind: Kind, ev: _Event) -> Part | None:
    """One row per sample with only its metric's column set (merged per member and ts later)."""
    b = ev.batch
    codes = ev.layout.codes[b.series_index]
    rows = np.isin(codes, kind.codes)
    if not rows.any():
        return None
    idx = b.series_index[rows]
    codes = codes[rows]
    ts = b.ts_us[rows]
    values = b.values[rows]
    columns: dict[str, pa.Array] = {
        "member_id": pa.array(ev.ids[ev.layout.member_of[idx]], pa.int32()),
        "ts": pa.array(ts, pa.timestamp("us")),
    }
    for code, name in zip(kind.codes, kind.columns, strict=True):
        columns[name] = pa.array(values, pa.float64(), mask=codes != code)
    columns["position"] = pa.array(np.full(len(idx), ev.position, np.int64))
    return Part(pa.table(columns), ev.cluster, ts, False)


def all_exact(parts: Sequence[Part]) -> bool:
    """No (member, ts) twice among the parts: each exact, and a cluster's ts ranges disjoint."""
    if not all(p.exact for p in parts):
        return False
    spans = sorted((p.cluster, p.lo, p.hi) for p in parts)
    return all(a[0] != b[0] or a[2] < b[1] for a, b in itertools.pairwise(spans))


def _member_ids(con: duckdb.DuckDBPyConnection, members: set[Member]) -> dict[Member, int]:
    """Ids of the members, adding new ones in a stable order (inside the caller's transaction)."""
    ordered = sorted(members, key=lambda m: tuple("" if v is None else v for v in m))
    keys = pa.table(
        {
            "k": pa.array(range(len(ordered)), pa.int32()),
            "cluster": pa.array([m[0] for m in ordered], pa.string()),
            "nodepool": pa.array([m[1] for m in ordered], pa.string()),
            "node": pa.array([m[2] for m in ordered], pa.string()),
            "namespace": pa.array([m[3] for m in ordered], pa.string()),
        }
    )
    con.register("_cap_keys", keys)
    try:
        found = con.execute(
            "SELECT k.k, m.member_id FROM _cap_keys k JOIN cap_members m "
            "ON m.cluster = k.cluster AND m.nodepool IS NOT DISTINCT FROM k.nodepool "
            "AND m.node IS NOT DISTINCT FROM k.node "
            "AND m.namespace IS NOT DISTINCT FROM k.namespace"
        ).fetchall()
    finally:
        con.unregister("_cap_keys")
    ids = {ordered[k]: int(mid) for k, mid in found}
    missing = [m for m in ordered if m not in ids]
    if missing:
        [(top,)] = con.execute("SELECT coalesce(max(member_id), 0) FROM cap_members").fetchall()
        for n, m in enumerate(missing, start=1):
            ids[m] = top + n
        new = pa.table(
            {
                "member_id": pa.array([ids[m] for m in missing], pa.int32()),
                **{
                    name: pa.array([m[i] for m in missing], pa.string())
                    for i, name in enumerate(("cluster", "nodepool", "node", "namespace"))
                },
            }
        )
        con.register("_cap_new_members", new)
        try:
            con.execute("INSERT INTO cap_members SELECT * FROM _cap_new_members")
        finally:
            con.unregister("_cap_new_members")
    return ids

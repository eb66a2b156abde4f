"""Workloads: per-container usage, requests and limits at each timestamp, and node labels.

`wl_values` holds one row per (cluster, namespace, pod, container, ts) with a column per
`container_*` metric (docs/analytics.md, "Workloads"); `wl_nodes` the nodepool and zone labels
of the `node_*` series, for nodes no node status event describes. A page is decoded into
numeric columns (no Python object per sample) and pivoted by DuckDB.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa

from analytics.capacity.parts import timestamp_literal
from store.contract import METRIC_SAMPLES, SampleBatch
from store.ledger import RecordedEvent

#: The container metrics, in the order of their `wl_values` columns.
CONTAINER_METRICS: Final = (
    ("container_cpu_usage_cores", "cpu_usage"),
    ("container_memory_working_set_bytes", "memory_usage"),
    ("container_cpu_requests_cores", "cpu_request"),
    ("container_memory_requests_bytes", "memory_request"),
    ("container_cpu_limits_cores", "cpu_limit"),
    ("container_memory_limits_bytes", "memory_limit"),
)
_CODES: Final = {name: i for i, (name, _) in enumerate(CONTAINER_METRICS)}
VALUE_COLUMNS: Final = tuple(col for _, col in CONTAINER_METRICS)
#: The labels a row keeps: the latest non-null one recorded wins.
_LABELS: Final = ("workload_kind", "workload", "node")

_DDL: Final = (
    f"""CREATE TABLE IF NOT EXISTS wl_values (
        cluster VARCHAR, namespace VARCHAR, pod VARCHAR, container VARCHAR, ts TIMESTAMP,
        workload_kind VARCHAR, workload VARCHAR, node VARCHAR,
        {", ".join(f"{c} DOUBLE" for c in VALUE_COLUMNS)})""",
    """CREATE TABLE IF NOT EXISTS wl_nodes (
        cluster VARCHAR, node VARCHAR, nodepool VARCHAR, zone VARCHAR, ts TIMESTAMP)""",
)

T = TypeVar("T")
#: A (cluster, namespace, pod, container) key.
Key = tuple[str, str, str, str]
#: A node series' (cluster, node, nodepool, zone).
NodeLabels = tuple[str, str, str | None, str | None]


def _label(labels: dict[str, object], name: str) -> str | None:
    """A label's value; an empty one is absent, as in Prometheus."""
    value = labels.get(name)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a batch's series list means for workloads: parsed once per distinct list."""

    #: Per series: the metric's column (-1: not a container metric, or a key label missing).
    metric: npt.NDArray[np.int8]
    #: Per series: its key among `keys` (-1: none).
    key_of: npt.NDArray[np.int32]
    keys: tuple[Key, ...]
    #: Per series and label of _LABELS: the value among `strings` (-1: absent).
    labels: npt.NDArray[np.int32]
    strings: tuple[str, ...]
    #: Per series: its node labels among `nodes` (-1: not a node series, or no pool nor zone).
    node_of: npt.NDArray[np.int32]
    nodes: tuple[NodeLabels, ...]
    #: Per series: 1 a container's, 2 a node's with labels to keep, 0 neither.
    kind: npt.NDArray[np.int8]


@functools.lru_cache(maxsize=64)
def _layout(cluster: str, series: tuple[tuple[str, str], ...]) -> _Layout:
    """Parse a series list once: a scrape repeats the same list event after event."""
    n = len(series)
    metric = np.full(n, -1, np.int8)
    key_of = np.full(n, -1, np.int32)
    labels = np.full((n, len(_LABELS)), -1, np.int32)
    node_of = np.full(n, -1, np.int32)
    keys: dict[Key, int] = {}
    strings: dict[str, int] = {}
    nodes: dict[NodeLabels, int] = {}
    for i, (name, text) in enumerate(series):
        code = _CODES.get(name)
        if code is None and not name.startswith("node_"):
            continue
        parsed = orjson.loads(text)
        if code is None:
            node, pool, zone = (_label(parsed, k) for k in ("node", "nodepool", "zone"))
            if node is not None and (pool is not None or zone is not None):
                node_of[i] = nodes.setdefault((cluster, node, pool, zone), len(nodes))
            continue
        ns, pod, container = (_label(parsed, k) for k in ("namespace", "pod", "container"))
        if ns is None or pod is None or container is None:
            continue  # not a container's series: ignored (docs/analytics.md)
        metric[i] = code
        key_of[i] = keys.setdefault((cluster, ns, pod, container), len(keys))
        for j, label in enumerate(_LABELS):
            value = _label(parsed, label)
            if value is not None:
                labels[i, j] = strings.setdefault(value, len(strings))
    kind = np.where(metric >= 0, 1, np.where(node_of >= 0, 2, 0)).astype(np.int8)
    return _Layout(metric, key_of, tuple(keys), labels, tuple(strings), node_of, tuple(nodes), kind)


def _page_ids(table: dict[T, int], items: Sequence[T]) -> npt.NDArray[np.int32]:
    """Page-wide ids of a layout's items, adding new ones; index -1 (absent) gives -1."""
    ids = [table.setdefault(item, len(table)) for item in items]
    return np.array([*ids, -1], np.int32)


class _Page:
    """A page's series (page-wide ids) and its container samples and node sightings."""

    def __init__(self) -> None:
        self.keys: dict[Key, int] = {}
        self.strings: dict[str, int] = {}
        self.nodes: dict[NodeLabels, int] = {}
        # The page id of each layout's first series; the layout is kept so its id is not reused.
        self.offsets: dict[int, tuple[int, _Layout]] = {}
        self.series: list[dict[str, npt.NDArray[Any]]] = []
        self.count = 0
        self.samples: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        self.sightings: tuple[list[Any], list[Any]] = ([], [])

    def _offset(self, lay: _Layout) -> int:
        """The page id of the layout's first series, adding its series on first sight."""
        known = self.offsets.get(id(lay))
        if known is not None:
            return known[0]
        offset, n = self.count, len(lay.metric)
        keys = _page_ids(self.keys, lay.keys)
        strings = _page_ids(self.strings, lay.strings)
        nodes = _page_ids(self.nodes, lay.nodes)
        self.series.append(
            {
                "sid": np.arange(offset, offset + n, dtype=np.int32),
                "k": keys[lay.key_of],
                "m": lay.metric,
                **{label: strings[lay.labels[:, j]] for j, label in enumerate(_LABELS)},
                "n": nodes[lay.node_of],
            }
        )
        self.offsets[id(lay)] = (offset, lay)
        self.count += n
        return offset

    def add(self, cluster: str, b: SampleBatch) -> None:
        """Take an event's container samples and node sightings."""
        lay = _layout(cluster, b.series)
        if not lay.keys and not lay.nodes:
            return
        offset = self._offset(lay)
        kind = lay.kind[b.series_index]
        for rows, out in ((kind == 1, self.samples), (kind == 2, self.sightings)):
            if rows.any():
                out[0].append(b.series_index[rows] + offset)
                out[1].append(b.ts_us[rows])
                if len(out) == 3:
                    out[2].append(b.values[rows])

    def series_table(self) -> pa.Table:
        """sid → key, metric, labels and node label set (page ids; -1: none)."""
        cols = {name: np.concatenate([s[name] for s in self.series]) for name in self.series[0]}
        return pa.table({name: pa.array(v) for name, v in cols.items()})

    def samples_table(self) -> pa.Table | None:
        """A row per container sample: series, ts, value, and the order later ones win by."""
        sid, ts, value = self.samples
        if not sid:
            return None
        n = sum(len(a) for a in sid)
        return pa.table(
            {
                "sid": pa.array(np.concatenate(sid).astype(np.int32)),
                "ts": pa.array(np.concatenate(ts), pa.timestamp("us")),
                "value": pa.array(np.concatenate(value), pa.float64()),
                # Ledger order, then the batch's canonical order.
                "ord": pa.array(np.arange(n, dtype=np.int64)),
            }
        )

    def sightings_table(self) -> pa.Table | None:
        """A row per node sample with a node pool or zone label: series and ts."""
        sid, ts = self.sightings
        if not sid:
            return None
        return pa.table(
            {
                "sid": pa.array(np.concatenate(sid).astype(np.int32)),
                "ts": pa.array(np.concatenate(ts), pa.timestamp("us")),
            }
        )


def _keys_table(keys: dict[Key, int]) -> pa.Table:
    ordered = list(keys)
    return pa.table(
        {
            "k": pa.array(range(len(ordered)), pa.int32()),
            **{
                name: pa.array([k[i] for k in ordered], pa.string())
                for i, name in enumerate(("cluster", "namespace", "pod", "container"))
            },
        }
    )


def _strings_table(strings: dict[str, int]) -> pa.Table:
    return pa.table(
        {"s": pa.array(range(len(strings)), pa.int32()), "v": pa.array(list(strings), pa.string())}
    )


def _nodes_table(nodes: dict[NodeLabels, int]) -> pa.Table:
    ordered = list(nodes)
    return pa.table(
        {
            "n": pa.array(range(len(ordered)), pa.int32()),
            **{
                name: pa.array([k[i] for k in ordered], pa.string())
                for i, name in enumerate(("cluster", "node", "nodepool", "zone"))
            },
        }
    )


# One row per key and ts: each metric's and label's latest value among the page's samples.
_PIVOT: Final = f"""
CREATE OR REPLACE TEMP TABLE _wl_new AS
WITH x AS (
    SELECT r.k, r.m, {", ".join(f"r.{lb}" for lb in _LABELS)}, x.ts, x.value, x.ord
    FROM _wl_samples x JOIN _wl_series r ON r.sid = x.sid
),
p AS (
    SELECT k, ts,
        {", ".join(f"arg_max({lb}, ord) FILTER ({lb} >= 0) AS {lb}" for lb in _LABELS)},
        {
    ", ".join(f"arg_max(value, ord) FILTER (m = {i}) AS {c}" for i, c in enumerate(VALUE_COLUMNS))
}
    FROM x GROUP BY k, ts
)
SELECT key.cluster, key.namespace, key.pod, key.container, p.ts,
    {", ".join(f"s{j}.v AS {lb}" for j, lb in enumerate(_LABELS))},
    {", ".join(f"p.{c}" for c in VALUE_COLUMNS)}
FROM p JOIN _wl_keys key ON key.k = p.k
{" ".join(f"LEFT JOIN _wl_strings s{j} ON s{j}.s = p.{lb}" for j, lb in enumerate(_LABELS))}
"""
_ROW_KEY: Final = (
    "v.cluster = n.cluster AND v.namespace = n.namespace AND v.pod = n.pod "
    "AND v.container = n.container AND v.ts = n.ts"
)
_COLUMNS: Final = ("cluster", "namespace", "pod", "container", "ts", *_LABELS, *VALUE_COLUMNS)
# Missing owner labels: the pod is its own workload (docs/events.md, "Canonical metrics").
_INSERTED: Final = ", ".join(
    {
        "workload_kind": "coalesce(n.workload_kind, 'Pod')",
        "workload": "coalesce(n.workload, n.pod)",
    }.get(c, f"n.{c}")
    for c in _COLUMNS
)
_MERGE: Final = f"""
MERGE INTO wl_values v USING _wl_new AS n
ON {_ROW_KEY} AND v.ts >= {{lo}} AND v.ts <= {{hi}}
WHEN MATCHED THEN UPDATE SET {
    ", ".join(f"{c} = coalesce(n.{c}, v.{c})" for c in (*_LABELS, *VALUE_COLUMNS))
}
WHEN NOT MATCHED THEN INSERT ({", ".join(_COLUMNS)}) VALUES ({_INSERTED})
"""
# A node label set is kept once per timestamp it was seen at.
_NODES: Final = """
INSERT INTO wl_nodes
SELECT DISTINCT l.cluster, l.node, l.nodepool, l.zone, s.ts
FROM _wl_sightings s JOIN _wl_series r ON r.sid = s.sid JOIN _wl_node_labels l ON l.n = r.n
WHERE NOT EXISTS (
    SELECT 1 FROM wl_nodes w
    WHERE w.ts >= {lo} AND w.ts <= {hi} AND w.ts = s.ts AND w.cluster = l.cluster
      AND w.node = l.node AND w.nodepool IS NOT DISTINCT FROM l.nodepool
      AND w.zone IS NOT DISTINCT FROM l.zone
)
"""


class _Registered:
    """Arrow tables registered as views for the block's queries, unregistered after."""

    def __init__(self, con: duckdb.DuckDBPyConnection, **tables: pa.Table) -> None:
        self.con, self.tables = con, tables

    def __enter__(self) -> None:
        for name, table in self.tables.items():
            self.con.register(name, table)

    def __exit__(self, *_exc: object) -> None:
        for name in self.tables:
            self.con.unregister(name)


def _ts_bounds(table: pa.Table) -> tuple[str, str]:
    ts = table["ts"].cast(pa.int64()).to_numpy()
    return timestamp_literal(int(ts.min())), timestamp_literal(int(ts.max()))


def _store_values(
    con: duckdb.DuckDBPyConnection, page: _Page, series: pa.Table, samples: pa.Table
) -> None:
    """Pivot the page's samples into rows and merge them into wl_values."""
    lo, hi = _ts_bounds(samples)
    with _Registered(
        con,
        _wl_samples=samples,
        _wl_series=series,
        _wl_keys=_keys_table(page.keys),
        _wl_strings=_strings_table(page.strings),
    ):
        con.execute(_PIVOT)
    try:
        stored = f"SELECT count(*) FROM wl_values v WHERE v.ts >= {lo} AND v.ts <= {hi}"
        [(near,)] = con.execute(stored).fetchall()  # row group statistics answer most
        if near:
            [(near,)] = con.execute(
                f"{stored} AND EXISTS (SELECT 1 FROM _wl_new n WHERE {_ROW_KEY})"
            ).fetchall()
        if near == 0:  # the usual case: new timestamps, a plain bulk insert
            con.execute(f"INSERT INTO wl_values SELECT {_INSERTED} FROM _wl_new n")
        else:
            con.execute(_MERGE.format(lo=lo, hi=hi))
    finally:
        con.execute("DROP TABLE _wl_new")


def _store_nodes(
    con: duckdb.DuckDBPyConnection, page: _Page, series: pa.Table, sightings: pa.Table
) -> None:
    """Add the node label sets seen at timestamps wl_nodes does not have them at yet."""
    lo, hi = _ts_bounds(sightings)
    with _Registered(
        con, _wl_sightings=sightings, _wl_series=series, _wl_node_labels=_nodes_table(page.nodes)
    ):
        con.execute(_NODES.format(lo=lo, hi=hi))


class WorkloadsProjection:
    """Container samples → a row per container and timestamp; node samples → node labels."""

    name = "workloads"
    version = 1
    types: tuple[str, ...] = (METRIC_SAMPLES,)
    batch_events = 200

    def create(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the workload tables."""
        for ddl in _DDL:
            con.execute(ddl)

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop the workload tables."""
        for table in ("wl_values", "wl_nodes"):
            con.execute(f"DROP TABLE IF EXISTS {table}")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[RecordedEvent]) -> None:
        """Fold the page's container samples and node labels in; later samples win."""
        page = _Page()
        for ev in events:
            if ev.samples is not None:
                page.add(ev.cluster or "", ev.samples)
        if not page.series:
            return
        series = page.series_table()
        samples, sightings = page.samples_table(), page.sightings_table()
        if samples is not None:
            _store_values(con, page, series, samples)
        if sightings is not None:
            _store_nodes(con, page, series, sightings)

"""Node rollups in numpy: hourly and daily avg, p95 and max per node and resource.

They come from a page's dense node rows (`NodeGrid`) when the page holds all of a day's values,
else from the values stored (`stored_rollups`). Either way the figures are those DuckDB's
`avg`, `quantile_cont(…, 0.95)` and `max` give (tests/test_capacity_rollups.py checks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from analytics.capacity.parts import DAY_US, NODE, Day, Part, all_exact, timestamp_literal

_HOUR_US: Final = 3_600_000_000


@dataclass(frozen=True, slots=True)
class NodeGrid:
    """A cluster's dense node rows in a page (same members, in time order) and their days."""

    cluster: str
    members: npt.NDArray[np.int32]
    parts: tuple[Part, ...]
    days: frozenset[Day]

    def restricted(self, days: set[Day]) -> NodeGrid:
        """The same grid covering only the given days."""
        return dataclasses.replace(self, days=self.days & days)

    def rollups(self) -> list[pa.Table]:
        """Hourly and daily node rollups of the covered days (cap_rollup rows, by member id)."""
        parts = [p for p in self.parts if p.days() & self.days and p.values is not None]
        ts = np.concatenate([p.ts for p in parts])
        values = np.concatenate([p.values for p in parts if p.values is not None], axis=2)
        keep = np.isin(ts - ts % DAY_US, [d for _, d in self.days])
        if not keep.all():
            ts, values = ts[keep], values[:, :, keep]
        tables: list[pa.Table] = []
        if len(ts) == 0:  # the covered days are gaps between the page's samples
            return tables
        complete = not np.isnan(values).any()  # then no NaN test per bucket is needed
        for step, step_us in (("1h", _HOUR_US), ("1d", DAY_US)):
            bucket = ts - ts % step_us
            first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
            lengths = np.diff(np.r_[first, len(ts)])
            # Buckets of equal length are rolled up together: one numpy call for all of them
            # (and no copy at all when every bucket has the same length).
            for length in np.unique(lengths).tolist():
                at = first[lengths == length]
                if len(at) == len(first):
                    cells = values.reshape(*values.shape[:2], -1, length)
                else:
                    cells = values[:, :, at[:, None] + np.arange(length)]
                members = np.repeat(self.members, len(at))
                t = np.tile(bucket[at], len(self.members))
                for resource, (u, a) in (("cpu", (0, 1)), ("memory", (2, 3))):
                    tables.append(
                        _rollup_rows(step, resource, members, t, cells[u], cells[a], complete)
                    )
        return tables


def node_grids(parts: Sequence[Part]) -> list[NodeGrid]:
    """Per cluster whose node rows are all dense over the same members, its grid."""
    if not all_exact(parts):
        return []
    by_cluster: dict[str, list[Part]] = {}
    for p in parts:
        by_cluster.setdefault(p.cluster, []).append(p)
    grids = []
    for cluster, mine in by_cluster.items():
        first = mine[0].members
        if first is None or any(
            p.members is None or not np.array_equal(p.members, first) for p in mine
        ):
            continue
        mine = sorted(mine, key=lambda p: p.lo)
        days = frozenset(d for p in mine for d in p.days())
        grids.append(NodeGrid(cluster, first, tuple(mine), days))
    return grids


def fresh_days(con: duckdb.DuckDBPyConnection, grids: Sequence[NodeGrid]) -> set[Day]:
    """The grids' days with no node values stored yet: the page holds all of theirs."""
    days = {d for g in grids for d in g.days}
    if not days:
        return set()
    lo, hi = min(d for _, d in days), max(d for _, d in days) + DAY_US
    stored = con.execute(
        "SELECT DISTINCT m.cluster, epoch_us(date_trunc('day', v.ts)) "
        "FROM cap_node_values v JOIN cap_members m USING (member_id) "
        f"WHERE v.ts >= {timestamp_literal(lo)} AND v.ts < {timestamp_literal(hi)}"
    ).fetchall()
    return days - {(c, int(d)) for c, d in stored}


def _rollup_rows(
    step: str,
    resource: str,
    members: npt.NDArray[np.int32],
    t: npt.NDArray[np.int64],
    usage: npt.NDArray[np.float64],
    allocatable: npt.NDArray[np.float64],
    complete: bool = False,
) -> pa.Table:
    """Rollup rows from usage and allocatable values[member, bucket, timestamp].

    `complete`: no value is NaN (not reported), which spares looking for them.
    """
    no_usage = None if complete else np.isnan(usage)
    no_allocatable = None if complete else np.isnan(allocatable)
    if no_usage is None or no_allocatable is None:
        points = np.full(usage.shape[:-1], usage.shape[-1]).reshape(-1)
    else:
        points = (~(no_usage & no_allocatable)).sum(axis=-1).reshape(-1)
    with np.errstate(over="ignore"):  # as in DuckDB, a tiny allocatable may give ±inf
        if complete and (allocatable != 0).all():
            ratio, no_ratio = usage / allocatable, None
        else:
            ratio = usage / np.where(allocatable == 0, np.nan, allocatable)
            no_ratio = np.isnan(ratio)
    usage_figures = _avg_p95_max(usage, no_usage)
    ratio_figures = _avg_p95_max(ratio, no_ratio)
    allocatable_figures = _avg(allocatable, no_allocatable)
    keep = points > 0
    n = int(keep.sum())
    columns: dict[str, pa.Array] = {
        "step": pa.repeat(pa.scalar(step), n),
        "member_id": pa.array(members[keep], pa.int32()),
        "resource": pa.repeat(pa.scalar(resource), n),
        "t": pa.array(t[keep], pa.timestamp("us")),
    }
    for prefix, figures, names in (
        ("usage", usage_figures, ("avg", "p95", "max")),
        ("allocatable", allocatable_figures, ("avg",)),
        ("utilization", ratio_figures, ("avg", "p95")),
    ):
        # NULL where nothing was reported; a NaN of ±inf arithmetic stays NaN, as in DuckDB.
        none = figures[-1].reshape(-1)[keep] == 0
        for name, x in zip(names, figures, strict=False):
            columns[f"{prefix}_{name}"] = pa.array(x.reshape(-1)[keep], pa.float64(), mask=none)
    columns["points"] = pa.array(points[keep], pa.int32())
    return pa.table(columns)


def _avg(
    x: npt.NDArray[np.float64], missing: npt.NDArray[np.bool_] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Along the last axis, ignoring the missing (NaN) values (None: none): avg and count."""
    if missing is None or not missing.any():
        return x.mean(axis=-1), np.full(x.shape[:-1], x.shape[-1])
    count = x.shape[-1] - missing.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(missing, 0.0, x).sum(axis=-1) / count, count


def _avg_p95_max(
    x: npt.NDArray[np.float64], missing: npt.NDArray[np.bool_] | None
) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]
]:
    """Along the last axis, ignoring the missing (NaN) values (None: none): avg,
    quantile_cont(0.95), max and count.

    Like DuckDB: position 0.95 (n - 1), interpolated as lo (1 - d) + hi d unless d is 0.
    """
    width = x.shape[-1]
    if missing is None or not missing.any():
        pos = 0.95 * (width - 1)
        lo = int(pos)
        # One selection puts the lo-th smallest in place and the top 5 % above it.
        part = np.partition(x, lo, axis=-1)
        p95 = part[..., lo]
        if pos > lo:
            p95 = p95 * (1 - (pos - lo)) + part[..., lo + 1 :].min(axis=-1) * (pos - lo)
        count = np.full(x.shape[:-1], width)
        return x.mean(axis=-1), p95, part[..., lo:].max(axis=-1), count
    # Rows of different counts: sort (NaN goes last) and pick each row's own positions.
    count = width - missing.sum(axis=-1, keepdims=True)
    ordered = np.sort(x, axis=-1)
    last = np.maximum(count - 1, 0)
    pos = 0.95 * last
    lo = np.floor(pos).astype(np.int64)
    d = pos - lo
    at_lo = np.take_along_axis(ordered, lo, axis=-1)
    at_hi = np.take_along_axis(ordered, np.minimum(lo + 1, last), axis=-1)
    with np.errstate(invalid="ignore"):  # inf * 0 where d is 0: that row takes at_lo
        p95 = np.where(d > 0, at_lo * (1 - d) + at_hi * d, at_lo)[..., 0]
    top = np.take_along_axis(ordered, last, axis=-1)[..., 0]
    avg, _ = _avg(x, missing)
    return avg, p95, top, count[..., 0]


def stored_rollups(con: duckdb.DuckDBPyConnection, days: set[Day]) -> pa.Table | None:
    """Node rollups of days with values stored before this page, from the values table."""
    ordered = sorted(days)
    con.register(
        "_cap_stale",
        pa.table(
            {
                "cluster": pa.array([c for c, _ in ordered], pa.string()),
                "day_start": pa.array([d for _, d in ordered], pa.timestamp("us")),
            }
        ),
    )
    lo = timestamp_literal(min(d for _, d in ordered))
    hi = timestamp_literal(max(d for _, d in ordered) + DAY_US)
    try:
        rows = con.sql(
            f"SELECT v.member_id, epoch_us(v.ts) AS ts, {', '.join(NODE.columns)} "
            "FROM cap_node_values v JOIN cap_members m USING (member_id) "
            "JOIN _cap_stale s ON s.cluster = m.cluster AND s.day_start = date_trunc('day', v.ts) "
            f"WHERE v.ts >= {lo} AND v.ts < {hi} "
            "ORDER BY v.member_id, v.ts"
        ).to_arrow_table()
    finally:
        con.unregister("_cap_stale")
    if rows.num_rows == 0:
        return None
    member = rows.column("member_id").to_numpy()
    ts = rows.column("ts").to_numpy()
    values = np.stack([rows.column(c).to_numpy() for c in NODE.columns])  # null → NaN
    parts = []
    for step, step_us in (("1h", _HOUR_US), ("1d", DAY_US)):
        bucket = ts - ts % step_us
        change = (member[1:] != member[:-1]) | (bucket[1:] != bucket[:-1])
        first = np.flatnonzero(np.r_[True, change])
        for at, cells in _segments(values, first, np.diff(np.r_[first, len(ts)])):
            for resource, (u, a) in (("cpu", (0, 1)), ("memory", (2, 3))):
                parts.append(
                    _rollup_rows(step, resource, member[at], bucket[at], cells[u], cells[a])
                )
    return pa.concat_tables(parts)


def _segments(
    values: npt.NDArray[np.float64], first: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """Runs of values[:, first:first + length] as NaN-padded [column, run, i] arrays.

    Runs are taken a length at a time, or, with many lengths, by powers of two (at most half
    of each padded row is NaN).
    """
    classes = lengths
    if len(np.unique(lengths)) > 16:
        classes = 1 << np.ceil(np.log2(lengths)).astype(np.int64)
    for c in np.unique(classes).tolist():
        chosen = classes == c
        at, n = first[chosen], lengths[chosen]
        width = int(n.max())
        valid = np.arange(width) < n[:, None]
        idx = np.where(valid, at[:, None] + np.arange(width), 0)
        yield at, np.where(valid, values[:, idx], np.nan)

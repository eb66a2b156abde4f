"""The capacity projection's tables, column by column, and how two sets of their rows compare
(tests/test_projections.py, test_poisoned_events.py): equal, floats to 1e-9 relative."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from analytics.capacity.trends import POINT_FIELDS

# Every column of each table, keys first: rows are compared in this order after sorting by all.
TABLES: dict[str, tuple[str, ...]] = {
    "cap_rollup": (
        "step",
        "scope",
        "cluster",
        "nodepool",
        "node",
        "namespace",
        "resource",
        "t",
        *POINT_FIELDS,
        "points",
    ),
    "cap_points": (
        "cluster",
        "scope",
        "nodepool",
        "node",
        "namespace",
        "resource",
        "ts",
        "usage",
        "requests",
        "allocatable",
    ),
    # The latest value of each series per timestamp, members named by their labels (see
    # values_sql): what the points and rollups are recomputed from.
    "cap_node_values": ("cluster", "nodepool", "node", "ts", "cpu_u", "cpu_a", "mem_u", "mem_a"),
    "cap_ns_values": ("cluster", "namespace", "ts", "cpu_u", "cpu_r", "mem_u", "mem_r", "pods"),
    # One row per folded-in event: an event applied twice would leave the values unchanged
    # (a series keeps one value per ts) but doubles its row here, so this proves exactly-once.
    "cap_batches": ("position", "samples"),
}

#: The columns naming a member (cap_members); the values tables hold a member id instead.
NAMES = ("cluster", "nodepool", "node", "namespace")


def values_sql(table: str) -> str:
    """A values table with each member named by its labels (ids depend on arrival order)."""
    columns = ", ".join(c if c in NAMES else f"v.{c}" for c in TABLES[table])
    return f"SELECT {columns} FROM {table} v LEFT JOIN cap_members m USING (member_id)"


def same_value(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 relative."""
    if isinstance(a, float) and isinstance(b, float):
        # DuckDB's parallel sum/avg may group the same doubles differently from run to run,
        # so incremental and rebuilt sums can differ in the last bits.
        both_nan = math.isnan(a) and math.isnan(b)
        return both_nan or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    return bool(a == b)


def assert_same_rows(
    what: str, cols: Sequence[str], got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]
) -> None:
    """Two sorted row lists are equal, floats to 1e-9 relative."""
    assert len(got) == len(want), f"{what}: {len(got)} != {len(want)} rows"
    for g, w in zip(got, want, strict=True):
        bad = [(c, x, y) for c, x, y in zip(cols, g, w, strict=True) if not same_value(x, y)]
        assert not bad, f"{what}: row differs {bad}:\n got  {g}\n want {w}"

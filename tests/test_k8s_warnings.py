"""The k8s_warnings projection: Warning events per day, cluster, namespace and reason."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.payloads import cloudevent
from support.projections import assert_rebuild_equals_catch_up, fold

from analytics.cluster_events.projection import ClusterEventsProjection
from analytics.cluster_events.warnings import TABLE, WarningCountsProjection

MIDNIGHT = datetime(2026, 10, 14, tzinfo=UTC)


def warning(
    i: int,
    at: datetime,
    *,
    reason: str | None = "BackOff",
    namespace: str | None = "payments",
    kind: str = "Warning",
    cluster: str = "prod-eks-1",
    shape: str = "core",
) -> dict[str, Any]:
    """A Kubernetes Event of either API shape, observed at `at`."""
    data: dict[str, Any] = {"type": kind, "metadata": {"name": f"ev-{i}", "uid": f"uid-{i}"}}
    if reason is not None:
        data["reason"] = reason
    obj: dict[str, Any] = {"kind": "Pod", "name": f"pod-{i}"}
    if namespace is not None:
        obj["namespace"] = namespace
    if shape == "core":
        data |= {"apiVersion": "v1", "involvedObject": obj, "message": "m", "count": 2}
    else:
        data |= {"apiVersion": "events.k8s.io/v1", "regarding": obj, "note": "m"}
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return cloudevent("opsledger.k8s.event", data, id=f"w-{i}", time=stamp, cluster=cluster)


def oracle(raws: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The expected rows, counted in plain Python from the CloudEvents."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for raw in raws:
        d = raw["data"]
        if d.get("type") != "Warning":
            continue
        obj = d.get("involvedObject") or d.get("regarding") or {}
        day = datetime.fromisoformat(raw["time"]).astimezone(UTC).date()
        counts[(day, raw["cluster"], obj.get("namespace"), d.get("reason"))] += 1
    rows = [(*k, n) for k, n in counts.items()]
    return sorted(rows, key=lambda r: tuple((v is not None, str(v)) for v in r))


def test_an_empty_ledger_gives_an_empty_table(tmp_path: Path) -> None:
    assert fold(tmp_path, "empty", [], WarningCountsProjection, [TABLE]) == {TABLE: []}


def test_days_split_at_utc_midnight_and_null_keys_count_apart(tmp_path: Path) -> None:
    raws = [
        warning(1, MIDNIGHT - timedelta(microseconds=1)),
        warning(2, MIDNIGHT),
        warning(3, MIDNIGHT + timedelta(hours=23, minutes=59)),
        warning(4, MIDNIGHT, namespace=None),
        warning(5, MIDNIGHT, reason=None, shape="events"),
        warning(6, MIDNIGHT, kind="Normal"),
        warning(7, MIDNIGHT, cluster="prod-eks-2"),
    ]
    rows = assert_rebuild_equals_catch_up(tmp_path, raws, WarningCountsProjection, [TABLE])[TABLE]
    assert rows == oracle(raws)
    oct13, oct14 = date(2026, 10, 13), date(2026, 10, 14)
    assert (oct13, "prod-eks-1", "payments", "BackOff", 1) in rows
    assert (oct14, "prod-eks-1", "payments", "BackOff", 2) in rows
    assert (oct14, "prod-eks-1", None, "BackOff", 1) in rows
    assert (oct14, "prod-eks-1", "payments", None, 1) in rows
    assert not any(r[3] is None and r[2] is None for r in rows)


def test_the_counts_are_k8s_events_warning_rows_grouped(tmp_path: Path) -> None:
    # The same ledger through cluster_events: its k8s_events table, grouped, is this table.
    raws = [warning(i, MIDNIGHT + timedelta(hours=5 * i), reason=f"R{i % 3}") for i in range(20)]
    mine = fold(tmp_path, "mine", raws, WarningCountsProjection, [TABLE])[TABLE]
    url_rows = fold(tmp_path, "theirs", raws, ClusterEventsProjection, ["k8s_events"])
    grouped = Counter(
        (r[-2].date(), r[0], r[1], r[4]) for r in url_rows["k8s_events"] if r[6] == "Warning"
    )
    assert sorted(mine, key=str) == sorted(((*k, n) for k, n in grouped.items()), key=str)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * 86400 - 1),
            st.sampled_from(["BackOff", "FailedMount", None]),
            st.sampled_from(["payments", "search", None]),
            st.sampled_from(["Warning", "Normal"]),
            st.sampled_from(["core", "events"]),
        ),
        max_size=40,
    ),
    st.integers(0, 10**6),
)
def test_any_history_in_any_pieces_matches_the_oracle(
    tmp_path_factory: Any, history: list[tuple[Any, ...]], seed: int
) -> None:
    raws = [
        warning(i, MIDNIGHT + timedelta(seconds=s), reason=r, namespace=n, kind=k, shape=shape)
        for i, (s, r, n, k, shape) in enumerate(history)
    ]
    tmp = tmp_path_factory.mktemp("warnings")
    rows = assert_rebuild_equals_catch_up(tmp, raws, WarningCountsProjection, [TABLE], seed)
    assert rows[TABLE] == oracle(raws)

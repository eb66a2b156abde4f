"""Metric sample batches from the ledger as Arrow tables, without a Python object per sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pyarrow as pa

from store.ledger import RecordedEvent

_DICT = pa.dictionary(pa.int32(), pa.string())


def schema(labels: Sequence[str]) -> pa.Schema:
    """Columns: cluster, metric, the given labels, ts (UTC µs), value, position."""
    fields = [pa.field("cluster", _DICT), pa.field("metric", _DICT)]
    fields += [pa.field(name, _DICT) for name in labels]
    fields += [
        pa.field("ts", pa.timestamp("us")),
        pa.field("value", pa.float64()),
        pa.field("position", pa.int64()),
    ]
    return pa.schema(fields)


def samples_table(
    events: Sequence[RecordedEvent], metrics: frozenset[str], labels: Sequence[str]
) -> pa.Table:
    """The samples of the given metrics, one row each; labels become dictionary columns."""
    sch = schema(labels)
    batches = []
    for ev in events:
        batch = ev.samples
        if batch is None:
            continue
        keep_series = np.array([name in metrics for name, _ in batch.series], dtype=bool)
        if not keep_series.any():
            continue
        rows = keep_series[batch.series_index]
        idx = batch.series_index[rows].astype(np.int32)
        n = int(idx.shape[0])
        parsed = [orjson.loads(lab) for _, lab in batch.series]
        cols: list[pa.Array] = [
            pa.DictionaryArray.from_arrays(
                np.zeros(n, dtype=np.int32), pa.array([ev.cluster or ""], pa.string())
            ),
            pa.DictionaryArray.from_arrays(
                idx, pa.array([name for name, _ in batch.series], pa.string())
            ),
        ]
        for label in labels:
            values = pa.array([lab.get(label) for lab in parsed], pa.string())
            cols.append(pa.DictionaryArray.from_arrays(idx, values))
        cols.append(pa.array(batch.ts_us[rows], pa.timestamp("us")))
        cols.append(pa.array(batch.values[rows], pa.float64()))
        cols.append(pa.array(np.full(n, ev.position, dtype=np.int64), pa.int64()))
        batches.append(pa.RecordBatch.from_arrays(cols, schema=sch))
    return pa.Table.from_batches(batches, schema=sch)

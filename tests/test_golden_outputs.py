"""The demo month's report, digest and every export keep their exact bytes across refactors.

Two things differ between two builds of the same demo: the ledger's `recorded_at` (the wall
clock of the append), set to the epoch before hashing, and the last bits of the capacity
rollups' float averages (DuckDB sums in parallel, in no fixed order), so this test folds the
ledger into a read model of its own on one DuckDB thread. Every other byte counts.

The SHA-256 of each output is recorded in tests/golden/demo_outputs.json. A deliberate change to
an output is recorded with `OPSLEDGER_GOLDEN_WRITE=1 pytest tests/test_golden_outputs.py`, and the
commit says why the bytes changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from report_fixtures import MONTH, copy_demo

from analytics.outputs.datasets import DATASETS
from analytics.outputs.digest import digest, render_markdown
from analytics.outputs.export_files import FORMATS, encode
from analytics.outputs.exports import ExportQuery, ledger_rows, read_model_rows
from analytics.outputs.report_data import gather
from analytics.outputs.report_model import Month
from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from api.report.html import render
from ingest.demo import CLUSTER
from store.ledger import Ledger

GOLDEN = Path(__file__).parent / "golden" / "demo_outputs.json"
WRITE = os.environ.get("OPSLEDGER_GOLDEN_WRITE") == "1"
#: Instants inside and at the end of the demo month, so that every digest section has content.
DIGEST_AT = ("2026-10-14T09:00:00", "2026-10-31T23:00:00")
AS_OF = datetime(2026, 11, 1)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches with `recorded_at` at the epoch."""
    for batch in batches:
        if "recorded_at" in batch.schema.names:
            i = batch.schema.get_field_index("recorded_at")
            epoch = pa.array([0] * batch.num_rows, pa.int64()).cast(batch.schema.field(i).type)
            batch = batch.set_column(i, batch.schema.field(i), epoch)
        yield batch


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every output of the demo month, by name, as SHA-256."""
    url, read_model = copy_demo(tmp_path_factory, tmp_path_factory.mktemp("golden"))
    read_model.unlink()
    ledger = Ledger.from_url(url)
    model = ReadModel(read_model)
    model.cursor().execute("SET threads = 1")
    Runner(ledger, model, default_projections()).catch_up()
    got: dict[str, str] = {}
    try:
        con = model.cursor()
        month = Month.parse(MONTH)
        for cluster in (None, CLUSTER):
            html = render(gather(con, ledger, month, cluster))
            got[f"report/{cluster or 'all'}.html"] = _sha(html.encode())
        for at in DIGEST_AT:
            body = digest(con, datetime.fromisoformat(at), timedelta(hours=24), timedelta(hours=2))
            got[f"digest/{at}.json"] = _sha(orjson.dumps(body))
            got[f"digest/{at}.md"] = _sha(render_markdown(body).encode())
        queries = {
            "all": ExportQuery(as_of=AS_OF),
            "window": ExportQuery(
                start=datetime(2026, 10, 10),
                end=datetime(2026, 10, 20),
                cluster=CLUSTER,
                as_of=AS_OF,
            ),
        }
        for ds in DATASETS.values():
            for qname, q in queries.items():
                for fmt in FORMATS:
                    if ds.source == "ledger":
                        rows = ledger_rows(ledger, q)
                    else:
                        rows = read_model_rows(con.cursor(), ds, q)
                    try:
                        data = b"".join(encode(_canonical(rows.batches), fmt, ds.schema))  # type: ignore[arg-type]
                    finally:
                        rows.close()
                    got[f"export/{ds.name}/{qname}.{fmt}"] = _sha(data)
        yield got
    finally:
        model.close()
        ledger.engine.dispose()


def test_outputs_are_byte_identical(outputs: dict[str, str]) -> None:
    if WRITE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert sorted(outputs) == sorted(recorded)
    changed = [name for name in sorted(outputs) if outputs[name] != recorded[name]]
    assert changed == [], "\n".join(changed)

"""A projection's first test: folding the ledger at once equals catching up as it grows."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analytics.readmodel.model import ReadModel
from analytics.readmodel.projection import Projection
from analytics.readmodel.runner import Runner
from store.contract import validate_event
from store.ledger import Ledger
from store.migrate import upgrade


def table_rows(model: ReadModel, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table, sorted (NULLs first), so two folds compare as sets."""
    rows = model.cursor().execute(f"SELECT * FROM {table}").fetchall()
    return sorted(rows, key=lambda r: tuple((v is not None, str(v)) for v in r))


def fold(
    tmp_path: Path,
    name: str,
    raws: Sequence[dict[str, Any]],
    make: Callable[[], Projection],
    tables: Sequence[str],
    cuts: Sequence[int] = (),
    batch_events: int | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """The tables after appending `raws` in pieces cut at `cuts`, catching up after each."""
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / f"{name}.duckdb")
    projection = make()
    if batch_events is not None:
        projection.batch_events = batch_events
    try:
        runner = Runner(ledger, model, [projection])
        bounds = [0, *sorted(set(cuts)), len(raws)]
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                ledger.append([validate_event(raw, i) for i, raw in enumerate(raws[lo:hi])])
            runner.catch_up()
        return {t: table_rows(model, t) for t in tables}
    finally:
        model.close()
        ledger.engine.dispose()


def assert_rebuild_equals_catch_up(
    tmp_path: Path,
    raws: Sequence[dict[str, Any]],
    make: Callable[[], Projection],
    tables: Sequence[str],
    seed: int = 0,
) -> dict[str, list[tuple[Any, ...]]]:
    """Fold `raws` whole, then in random pieces and pages: equal tables, which it returns."""
    whole = fold(tmp_path, "whole", raws, make, tables)
    rng = random.Random(seed)
    cuts = rng.sample(range(1, len(raws)), min(len(raws) - 1, 5)) if len(raws) > 1 else []
    pieces = fold(tmp_path, "pieces", raws, make, tables, cuts, batch_events=rng.randint(1, 7))
    assert pieces == whole, "catching up in pieces gave other tables than one fold"
    return whole

"""The configured price table: hourly prices per instance type where Cost Explorer has none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from store.datamodels import Currency, Name

HourlyPrice = Annotated[float, Field(ge=0, le=1e6)]


class PriceTable(BaseModel):
    """`OPSLEDGER_PRICE_TABLE_FILE`: on-demand prices per instance type, and storage."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    currency: Currency
    instance_types: dict[Name, HourlyPrice] = Field(default_factory=dict)
    storage_gib_month: float | None = Field(default=None, ge=0, le=1e6)


class PriceTableError(ValueError):
    """The price table file cannot be read or does not follow the format."""


def load_price_table(path: Path | None) -> PriceTable | None:
    """The table at `path`, or None when no table is configured."""
    if path is None:
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PriceTableError(f"{path}: cannot read the price table: {exc}") from None
    try:
        return PriceTable.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise PriceTableError(f"{path}: {where}: {first['msg']}") from None

"""Contract rules that are not about storage: content identity and settings safety."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.payloads import cost_daily

from store.contract import validate_event
from store.settings import Settings


def test_numbers_are_compared_by_value_for_duplicates() -> None:
    whole = cost_daily("c1", amount=42000)
    floaty = cost_daily("c1", amount=42000.0)
    other = cost_daily("c1", amount=42000.5)
    assert validate_event(whole).digest == validate_event(floaty).digest
    assert validate_event(whole).digest != validate_event(other).digest


def test_data_is_stored_as_sent() -> None:
    ev = cost_daily("c1", amount=42000.0)
    assert validate_event(ev).data == ev["data"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"home": "relative/dir"}, "OPSLEDGER_HOME must be an absolute path"),
        ({"database_url": "sqlite:///ledger.db"}, "absolute SQLite path"),
        ({"home": "/srv/x", "max_body_bytes": 512 * 1024 * 1024}, "above 256 MiB"),
    ],
)
def test_production_refuses_unsafe_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(env="production", **kwargs)  # type: ignore[arg-type]
    Settings(env="development", **kwargs)  # type: ignore[arg-type]


def test_production_accepts_safe_values() -> None:
    s = Settings(env="production", database_url="sqlite:////srv/opsledger/ledger.db")
    assert s.ledger_url == "sqlite:////srv/opsledger/ledger.db"
    pg = Settings(env="production", database_url="postgresql+psycopg://u@db/opsledger")
    assert pg.ledger_url.startswith("postgresql+psycopg://")

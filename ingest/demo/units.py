"""Units of time and size, and the date arithmetic of hourly and daily slots."""

from __future__ import annotations

import datetime as dt
from typing import Final

from store.timefmt import datetime_to_us, format_us

SEC: Final = 1_000_000
MIN: Final = 60 * SEC
HOUR: Final = 60 * MIN
DAY: Final = 24 * HOUR
GIB: Final = 1024**3


def utc_us(text: str) -> int:
    """Microseconds of a naive ISO timestamp read as UTC."""
    return datetime_to_us(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC))


def format_seconds(us: int) -> str:
    """Kubernetes timestamps have whole seconds."""
    return format_us(us - us % SEC)


def day_of(us: int) -> int:
    """The UTC day number (days since the epoch) of an instant."""
    return us // DAY


def month_start(day: dt.date) -> dt.date:
    """The first day of the day's month."""
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    """The first day of the next month."""
    return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def date_us(day: dt.date) -> int:
    """Midnight UTC of a date, in microseconds."""
    return datetime_to_us(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))

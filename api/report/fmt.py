"""Deterministic text for the report's figures: fixed decimals, no locale, escaped."""

from __future__ import annotations

import html
import math
from datetime import date, datetime, timedelta
from typing import Final

from store.timefmt import NAIVE_EPOCH

NBSP: Final = "\u00a0"
DASH: Final = "–"
#: What an amount that cannot be a sum of real spend shows instead of a number.
OUT_OF_RANGE: Final = "out of range"
_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
# strftime's month names follow the C library's locale; these never do.
_MONTHS: Final = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute: `& < > " '` escaped."""
    return html.escape(str(value), quote=True)


def num(value: float, digits: int = 1) -> str:
    """A fixed-point number; never `-0.0`."""
    if not math.isfinite(value):
        return DASH
    text = f"{value:,.{digits}f}"
    if text.startswith("-") and not any(ch in "123456789" for ch in text):
        text = text[1:]
    return text


def coord(value: float) -> str:
    """An SVG coordinate: one decimal, no `-0.0`, no thousands separator."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def pct(ratio: float | None, digits: int = 1) -> str:
    """A ratio as a percentage (`0.853` → `85.3 %`); a dash for none."""
    if ratio is None:
        return DASH
    return f"{num(ratio * 100, digits)}{NBSP}%"


def points(delta: float | None, digits: int = 1) -> str:
    """A change of a ratio in percentage points, signed (`+1.2 pt`)."""
    if delta is None:
        return DASH
    text = num(delta * 100, digits)
    return f"{'' if text.startswith('-') or text == num(0, digits) else '+'}{text}{NBSP}pt"


def count(n: int | float | None) -> str:
    """A whole number with thousands separators."""
    return DASH if n is None else f"{round(n):,}"


def money(amount: float | None, currency: str | None) -> str:
    """An amount with no decimals and its currency code (`27,111 USD`)."""
    if amount is None:
        return DASH
    if not math.isfinite(amount):
        return OUT_OF_RANGE
    return f"{num(amount, 0)}{NBSP}{currency or ''}".rstrip()


def size(n_bytes: float | None) -> str:
    """Bytes in binary units with three significant digits at most (`205 GiB`)."""
    if n_bytes is None:
        return DASH
    value, unit = float(n_bytes), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    digits = 0 if abs(value) >= 100 or unit == 0 else 1
    return f"{num(value, digits)}{NBSP}{_UNITS[unit]}"


def duration(seconds: float | None) -> str:
    """A duration in the largest sensible unit (`45 min`, `3.2 h`, `2.5 d`)."""
    if seconds is None:
        return DASH
    if seconds < 3600:
        return f"{num(seconds / 60, 0)}{NBSP}min"
    if seconds < 2 * 86400:
        return f"{num(seconds / 3600, 1)}{NBSP}h"
    return f"{num(seconds / 86400, 1)}{NBSP}d"


def days(value: float | None) -> str:
    """A number of days (`12.3 d`; `now` for zero)."""
    if value is None:
        return DASH
    if value == 0:
        return "now"
    return f"{num(value, 1)}{NBSP}d"


def epoch_seconds(t: datetime) -> float:
    """A naive UTC instant as seconds since the Unix epoch (a chart's x)."""
    # The same float as naive_to_us(t) / 1e6 (both divide the exact microseconds once), three
    # times faster: a month's charts convert some 15,000 instants.
    return (t - NAIVE_EPOCH).total_seconds()


def epoch_to_dt(seconds: float) -> datetime:
    """Seconds since the Unix epoch as naive UTC."""
    return NAIVE_EPOCH + timedelta(seconds=seconds)


def day(t: date | None) -> str:
    """The date of an instant, or a date (`2026-11-20`)."""
    return DASH if t is None else f"{t:%Y-%m-%d}"


def minute(t: datetime | None) -> str:
    """An instant to the minute (`2026-10-07 13:00`)."""
    return DASH if t is None else f"{t:%Y-%m-%d %H:%M}"


def month_title(month: str) -> str:
    """`2026-10` as `October 2026`."""
    return f"{_MONTHS[int(month[5:7]) - 1]} {month[:4]}"


def short_date(seconds: float) -> str:
    """An axis label for a day (`8 Oct`), the same on every platform."""
    d = epoch_to_dt(seconds)
    return f"{d.day}{NBSP}{_MONTHS[d.month - 1][:3]}"

"""RFC 3339 timestamps to and from integer microseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Every instant the product accepts lies in [MIN_US, MAX_US]: 1970 through 2199 (UTC).
# Projections add horizons and look-backs (months, years) to the instants they fold; far
# below datetime's year 9999, none of them can overflow.
MIN_US = 0
MAX_US = 7258118399999999  # 2199-12-31T23:59:59.999999Z
MIN_YEAR = 1970
MAX_YEAR = 2199
RANGE_TEXT = "1970-01-01T00:00:00Z .. 2199-12-31T23:59:59Z"
#: The OpenAPI pattern of an instant: RFC 3339 with an offset, years 1970-2199.
RFC3339_PATTERN = (
    r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3])"
    r":[0-5]\d:[0-5]\d(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
#: The OpenAPI pattern of a month YYYY-MM, years 1970-2199.
MONTH_PATTERN = r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])$"
#: The OpenAPI pattern of a date YYYY-MM-DD, years 1970-2199.
DATE_PATTERN = r"^(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"


def utc_now() -> datetime:
    """The current time as naive UTC (the read model's convention)."""
    return datetime.now(UTC).replace(tzinfo=None)


class TimeFormatError(ValueError):
    """A timestamp that is not RFC 3339 with an offset, or names an impossible instant."""


def parse_rfc3339_us(text: str) -> int:
    """Parse an RFC 3339 timestamp that carries an offset into UTC microseconds."""
    m = _RFC3339.match(text)
    if m is None:
        raise TimeFormatError(
            "must be RFC 3339 with an offset, "
            "e.g. 2026-10-01T12:00:00Z or 2026-10-01T08:00:00-04:00"
        )
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6])
    try:
        naive = datetime(year, month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise TimeFormatError(f"is not a real instant: {exc}") from None
    offset = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise TimeFormatError("has an impossible UTC offset")
        offset = (oh * 60 + om) * 60 * (1 if m.group(9) == "+" else -1)
    delta = naive - datetime(1970, 1, 1)
    us = (delta.days * 86400 + delta.seconds - offset) * 1_000_000 + delta.microseconds
    if us < MIN_US or us > MAX_US:
        raise TimeFormatError(f"is outside {RANGE_TEXT}")
    return us


def rfc3339_us_or_none(value: object) -> int | None:
    """UTC microseconds of an RFC 3339 string; None for anything else (free-form API fields)."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339_us(value)
    except TimeFormatError:
        return None


def format_us(us: int) -> str:
    """Format UTC microseconds as RFC 3339 with a Z suffix (microseconds only when non-zero)."""
    dt = _EPOCH + timedelta(microseconds=us)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def us_to_datetime(us: int) -> datetime:
    """Convert UTC microseconds to an aware datetime."""
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_us(dt: datetime) -> int:
    """Convert an aware datetime to UTC microseconds; naive datetimes are refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise TimeFormatError("must carry a UTC offset")
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


#: The epoch as the read model keeps instants: naive UTC.
NAIVE_EPOCH = datetime(1970, 1, 1)


def naive_to_us(t: datetime) -> int:
    """UTC microseconds of a naive UTC datetime (the read model's convention)."""
    return (t - NAIVE_EPOCH) // timedelta(microseconds=1)


def us_to_naive(us: int) -> datetime:
    """A naive UTC datetime of UTC microseconds (what DuckDB stores as TIMESTAMP)."""
    return NAIVE_EPOCH + timedelta(microseconds=us)


def naive_iso(t: datetime | None) -> str | None:
    """A naive UTC datetime as RFC 3339 with a Z; None stays None."""
    return None if t is None else format_us(naive_to_us(t))


def z_to_naive(text: str) -> datetime:
    """An RFC 3339 UTC instant as format_us writes it (`...Z`), naive UTC."""
    # Not parse_rfc3339_us: fromisoformat is some 20 times faster, and a month's report
    # reads some 27,000 of them.
    if text[-1:] != "Z":
        raise ValueError(f"not an RFC 3339 UTC instant: {text!r}")
    return datetime.fromisoformat(text[:-1])


def z_to_naive_or_none(text: str | None) -> datetime | None:
    """z_to_naive(), or None."""
    return None if text is None else z_to_naive(text)


def to_naive_utc(t: datetime) -> datetime:
    """A datetime as naive UTC: an aware one is converted, a naive one is taken as UTC."""
    return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@functools.cache
def _duration_re(units: str, digits: int | None, decimals: int) -> re.Pattern[str]:
    count = "+" if digits is None else f"{{1,{digits}}}"
    fraction = rf"(?:\.\d{{1,{decimals}}})?" if decimals else ""
    return re.compile(rf"^(\d{count}{fraction})([{units}])$")


def duration_seconds(
    text: str, units: str = "smhdw", *, digits: int | None = None, decimals: int = 0
) -> float:
    """Seconds in a duration like `30s`, `90m`, `6h`, `7d` or `2w` (ValueError otherwise).

    Each caller names the units it accepts, how many digits, and whether a fraction may follow.
    """
    m = _duration_re(units, digits, decimals).match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]

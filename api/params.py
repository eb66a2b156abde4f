"""Parameter types the routes share: each validates, and its schema says what it accepts."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, WithJsonSchema

from store.contract import CLUSTER_PATTERN, KNOWN_TYPES
from store.timefmt import (
    MAX_YEAR,
    MIN_YEAR,
    MONTH_PATTERN,
    RANGE_TEXT,
    RFC3339_PATTERN,
    TimeFormatError,
    parse_rfc3339_us,
)

#: The largest page any listing serves (`max_page_size` may set a lower one).
PAGE_CEILING: Final = 100_000
INSTANT_NOTE: Final = f"RFC 3339 with an offset, within {RANGE_TEXT}"
_CLUSTER = re.compile(CLUSTER_PATTERN)
_MONTH = re.compile(MONTH_PATTERN)
IF_MATCH_PATTERN: Final = r'^\s*(\*|(W/)?"?[0-9]{1,9}"?)\s*$'


def one_of_list(words: tuple[str, ...] | list[str], spaces: bool = False) -> str:
    """A pattern for one word of `words`, or several separated by commas."""
    word = "|".join(re.escape(w) for w in words)
    sp = r"\s*" if spaces else ""
    return f"^{sp}({word}){sp}(,{sp}({word}){sp})*$"


def text_matching(pattern: str) -> WithJsonSchema:
    """The schema of a string the route checks against `pattern` with its own message."""
    return WithJsonSchema({"type": "string", "pattern": pattern})


def _instant(value: str) -> str:
    try:
        parse_rfc3339_us(value)
    except TimeFormatError as exc:
        raise ValueError(str(exc)) from None
    return value


def _month(value: str) -> str:
    if not _MONTH.match(value):
        raise ValueError(f"must be a month YYYY-MM from {MIN_YEAR}-01 to {MAX_YEAR}-12")
    return value


def _cluster(value: str) -> str:
    if not _CLUSTER.match(value):
        raise ValueError("must be a cluster name: 1-253 letters, digits, '.', '_' or '-'")
    return value


Instant = Annotated[
    str,
    AfterValidator(_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
Month = Annotated[
    str, AfterValidator(_month), WithJsonSchema({"type": "string", "pattern": MONTH_PATTERN})
]
ClusterName = Annotated[
    str,
    AfterValidator(_cluster),
    WithJsonSchema({"type": "string", "pattern": CLUSTER_PATTERN, "maxLength": 253}),
]
#: Event types, one per value or separated by commas (the route names an unknown one).
EventTypes = Annotated[str, text_matching(one_of_list(KNOWN_TYPES))]
#: An `If-Match` value (the route refuses a malformed one with its own message).
IfMatchValue = Annotated[str, text_matching(IF_MATCH_PATTERN)]

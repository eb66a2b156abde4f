"""Parameter types the routes share: each validates, and its schema says what it accepts."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator, WithJsonSchema

from store.contract import CLUSTER_PATTERN, KNOWN_TYPES
from store.datamodels import IsoMonth, Timestamp
from store.timefmt import RANGE_TEXT

#: The largest page any listing serves (`max_page_size` may set a lower one).
PAGE_CEILING: Final = 100_000
INSTANT_NOTE: Final = f"RFC 3339 with an offset, within {RANGE_TEXT}"
_CLUSTER = re.compile(CLUSTER_PATTERN)
IF_MATCH_PATTERN: Final = r'^\s*(\*|(W/)?"?[0-9]{1,9}"?)\s*$'


def one_of_list(words: tuple[str, ...] | list[str], spaces: bool = False) -> str:
    """A pattern for one word of `words`, or several separated by commas."""
    word = "|".join(re.escape(w) for w in words)
    sp = r"\s*" if spaces else ""
    return f"^{sp}({word}){sp}(,{sp}({word}){sp})*$"


def text_matching(pattern: str) -> WithJsonSchema:
    """The schema of a string the route checks against `pattern` with its own message."""
    return WithJsonSchema({"type": "string", "pattern": pattern})


def _cluster(value: str) -> str:
    if not _CLUSTER.match(value):
        raise ValueError("must be a cluster name: 1-253 letters, digits, '.', '_' or '-'")
    return value


#: An instant, and a month, as the contract takes them (1970 to 2199).
Instant = Timestamp
Month = IsoMonth
ClusterName = Annotated[
    str,
    AfterValidator(_cluster),
    WithJsonSchema({"type": "string", "pattern": CLUSTER_PATTERN, "maxLength": 253}),
]
#: Event types, one per value or separated by commas (the route names an unknown one).
EventTypes = Annotated[str, text_matching(one_of_list(KNOWN_TYPES))]
#: An `If-Match` value (the route refuses a malformed one with its own message).
IfMatchValue = Annotated[str, text_matching(IF_MATCH_PATTERN)]

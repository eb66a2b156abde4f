"""Reading docs/: a page, its Markdown headings, and the section under a heading."""

from __future__ import annotations

import re
from collections.abc import Iterator

from support import REPO

DOCS = REPO / "docs"
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def read_doc(name: str) -> str:
    """A page of docs/, failing clearly when it is missing."""
    path = DOCS / name
    assert path.is_file(), f"docs/{name} is missing"
    return path.read_text(encoding="utf-8")


def headings(text: str) -> Iterator[tuple[int, int, str]]:
    """(line number, level, text) of each Markdown heading outside code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = _HEADING.match(line)
        if m and not fenced:
            yield n, len(m.group(1)), m.group(2)


def section(text: str, pattern: re.Pattern[str]) -> str | None:
    """The text from the first heading matching `pattern` to the next heading of its level."""
    lines = text.splitlines()
    found = list(headings(text))
    for i, (start, level, title) in enumerate(found):
        if pattern.search(title):
            end = next((n for n, lv, _ in found[i + 1 :] if lv <= level), len(lines))
            return "\n".join(lines[start:end])
    return None

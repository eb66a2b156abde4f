"""Domain errors of the ledger, independent of the database driver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Conflict:
    """An event whose (source, id) is recorded, or earlier in its batch, with other content."""

    index: int
    source: str
    id: str
    position: int | None
    first_index: int | None = None

    @property
    def where(self) -> str:
        """Where the other content is: a ledger position or an earlier index of the batch."""
        if self.position is not None:
            return f"is recorded at position {self.position}"
        return f"is at index {self.first_index} of the same batch"


class ConflictError(Exception):
    """Some events reuse a (source, id) with different content; nothing was written."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        c = conflicts[0]
        super().__init__(
            f"{len(conflicts)} event(s) conflict; first: (source={c.source!r}, id={c.id!r}) "
            f"{c.where} with different content"
        )


class StreamVersionError(Exception):
    """An append expected a stream version that is no longer current; nothing was written."""

    def __init__(self, stream: str, expected: int | None, current: int) -> None:
        self.stream = stream
        self.expected = expected
        self.current = current
        super().__init__(f"stream {stream!r} is at version {current}, expected {expected}")


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error it wraps (a driver's `.orig`) or was raised while handling, once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        # SQLAlchemy keeps the driver's error in `.orig`; a failed rollback after a failed
        # commit hides the commit's error in `__context__`.
        orig = getattr(e, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
        todo += [e.__cause__, e.__context__]

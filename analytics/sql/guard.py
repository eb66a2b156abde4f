"""The first line of defence of read-only SQL: one statement, and only a query.

The guarantee is the query connection's configuration (analytics/sql/sandbox.py); this
guard gives clear refusals and keeps statements that would change a connection's state
(temporary tables, transactions, variables) away from it.
"""

from __future__ import annotations

from typing import Final

import duckdb

#: First keywords of the read-only forms DuckDB accepts (FROM-first, VALUES, DESCRIBE, ...).
ALLOWED_FIRST_WORDS: Final = (
    "SELECT",
    "WITH",
    "FROM",
    "VALUES",
    "TABLE",
    "EXPLAIN",
    "DESCRIBE",
    "SHOW",
    "SUMMARIZE",
    "PIVOT",
    "UNPIVOT",
)


class QueryRefused(ValueError):
    """The text is not a single read-only query."""


class QueryInvalid(ValueError):
    """DuckDB cannot parse the text (its message says why)."""


def _skip_blank(sql: str, i: int) -> int:
    """The index of the first character at or after `i` outside whitespace and comments."""
    n = len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2  # block comments nest in DuckDB's (PostgreSQL's) grammar
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return i


def _word(sql: str, i: int) -> tuple[str, int]:
    """The keyword starting at `i` (upper case, may be empty) and the index after it."""
    j = i
    while j < len(sql) and (sql[j].isalnum() or sql[j] == "_"):
        j += 1
    return sql[i:j].upper(), j


def first_word(sql: str) -> str:
    """The statement's first keyword, looking past comments and opening parentheses."""
    i = _skip_blank(sql, 0)
    while i < len(sql) and sql[i] == "(":
        i = _skip_blank(sql, i + 1)
    return _word(sql, i)[0]


def _explained(sql: str) -> str:
    """The statement an `EXPLAIN [ANALYZE] [(options)]` wraps."""
    i = _skip_blank(sql, 0)
    _, i = _word(sql, i)  # EXPLAIN
    i = _skip_blank(sql, i)
    word, j = _word(sql, i)
    if word in ("ANALYZE", "ANALYSE"):
        i = _skip_blank(sql, j)
    if i < len(sql) and sql[i] == "(" and first_word(sql[i:]) not in ALLOWED_FIRST_WORDS:
        depth = 0
        for k in range(i, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[k], 0)
            if depth == 0:
                i = k + 1
                break
    return sql[i:]


def check_query(con: duckdb.DuckDBPyConnection, sql: str, *, inner: bool = False) -> None:
    """Refuse `sql` unless it is one SELECT or EXPLAIN of one (QueryInvalid: unparsable)."""
    allowed = ", ".join(w for w in ALLOWED_FIRST_WORDS if not (inner and w == "EXPLAIN"))
    word = first_word(sql)
    if not word:
        if _skip_blank(sql, 0) >= len(sql):
            raise QueryRefused("the query is empty")
        raise QueryRefused(f"a query starts with one of {allowed}")
    if word not in ALLOWED_FIRST_WORDS or (inner and word == "EXPLAIN"):
        raise QueryRefused(f"{word} is not allowed: only read-only queries starting with {allowed}")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryInvalid(str(exc)) from None
    except ValueError:
        # A statement type the Python client cannot even name (e.g. UPDATE EXTENSIONS).
        raise QueryRefused("this kind of statement is not allowed") from None
    if len(statements) != 1:
        raise QueryRefused(f"one statement at a time, found {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN and not inner:
        check_query(con, _explained(sql), inner=True)
    elif kind == duckdb.StatementType.MULTI:
        # PIVOT without IN creates a temporary type before it selects.
        raise QueryRefused("PIVOT needs an explicit list of values: PIVOT t ON col IN ('a', 'b')")
    elif kind != duckdb.StatementType.SELECT:
        name = kind.name.replace("_", " ")
        raise QueryRefused(f"{name} statements are not allowed: only read-only queries")

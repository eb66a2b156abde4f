"""API keys: random bearer tokens of which only a SHA-256 hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, Select, and_, inspect, or_, select, update
from sqlalchemy.exc import NoSuchTableError

from store.schema import api_keys

Scope = Literal["read", "write", "admin", "query"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "write", "admin", "query")
#: What each scope covers. read ⊂ write ⊂ admin nest; `query` is read plus read-only SQL
#: (`POST /v1/query`) and is never implied: only a key created with it has it.
_GRANTS: Final[dict[str, frozenset[str]]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin"}),
    "query": frozenset({"read", "query"}),
}
TOKEN_PREFIX: Final = "olk_"
#: The name of the one-off keys the CLI makes to ask the running server (api/cli/common.py).
DELEGATE_NAME: Final = "cli-delegate"
#: A delegate key is used for one request, authenticated as it starts; this covers a slow
#: start on a busy server. A CLI killed mid-call leaves its key, which expires after this.
DELEGATE_TTL_S: Final = 600


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public record (never the token)."""

    key_id: str
    name: str
    scope: Scope
    created_at_us: int
    revoked_at_us: int | None
    expires_at_us: int | None = None

    def active(self, now_us: int) -> bool:
        """Neither revoked nor expired at `now_us`."""
        return self.revoked_at_us is None and (
            self.expires_at_us is None or now_us < self.expires_at_us
        )

    def allows(self, needed: Scope) -> bool:
        """Whether this key's scope covers `needed` (admin ⊇ write ⊇ read; query ⊇ read)."""
        return needed in _GRANTS[self.scope]


def hash_token(token: str) -> str:
    """The stored form of a token.

    Tokens carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def _row_to_key(row: object) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        scope=row.scope,  # type: ignore[attr-defined]
        created_at_us=row.created_at,  # type: ignore[attr-defined]
        revoked_at_us=row.revoked_at,  # type: ignore[attr-defined]
        expires_at_us=getattr(row, "expires_at", None),
    )


def _now_us() -> int:
    return time.time_ns() // 1000


#: The engines whose ledger has `api_keys.expires_at` (revision 0003).
_HAS_EXPIRY: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def _readable(engine: Engine) -> Select[Any]:
    """SELECT of the key columns the ledger has."""
    # A ledger below revision 0003 (downgraded, or not upgraded yet) has no expiries: its keys
    # are read all the same, and never expire.
    has = _HAS_EXPIRY.get(engine, False)
    if not has:
        try:
            names = {c["name"] for c in inspect(engine).get_columns("api_keys")}
        except NoSuchTableError:
            names = set()  # unmigrated: the query itself says so
        has = not names or "expires_at" in names
        if has:  # only this is remembered: an upgrade can add the column, nothing removes it
            _HAS_EXPIRY[engine] = True
    return select(*[c for c in api_keys.c if has or c.name != "expires_at"])


def create_key(
    engine: Engine,
    name: str,
    scope: Scope,
    replace: bool = False,
    ttl_s: float | None = None,
    now_us: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its token, which is shown once and never stored."""
    # With `replace`, active keys of the same name are revoked in the same transaction; with
    # `ttl_s`, the key expires that many seconds after `now_us` (default: now).
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not name or len(name) > 200:
        raise ValueError("name must be 1-200 characters")
    now = _now_us() if now_us is None else now_us
    expires = None if ttl_s is None else now + int(ttl_s * 1_000_000)
    with engine.begin() as conn:
        if replace:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return _insert(conn, name, scope, now, expires)


def _insert(
    conn: Connection, name: str, scope: Scope, now: int, expires: int | None
) -> tuple[ApiKey, str]:
    key_id = secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        api_keys.insert().values(
            key_id=key_id,
            name=name,
            scope=scope,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=expires,
        )
    )
    return ApiKey(key_id, name, scope, now, None, expires), token


def create_delegate_key(
    engine: Engine, scope: Scope, now_us: int | None = None
) -> tuple[ApiKey, str]:
    """A short-lived key for one delegated CLI call; stale delegate keys are revoked first."""
    # Stale: expired, or without an expiry (made before keys had one) and older than a
    # delegate key lives. A CLI killed mid-call cannot revoke its key; the next one does.
    now = _now_us() if now_us is None else now_us
    ttl_us = DELEGATE_TTL_S * 1_000_000
    stale = or_(
        api_keys.c.expires_at <= now,
        and_(api_keys.c.expires_at.is_(None), api_keys.c.created_at <= now - ttl_us),
    )
    with engine.begin() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.name == DELEGATE_NAME, api_keys.c.revoked_at.is_(None), stale)
            .values(revoked_at=now)
        )
        return _insert(conn, DELEGATE_NAME, scope, now, now + ttl_us)


def authenticate(engine: Engine, token: str, now_us: int | None = None) -> ApiKey | None:
    """The active (neither revoked nor expired) key the token belongs to, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            _readable(engine).where(api_keys.c.token_hash == hash_token(token))
        ).first()
    if row is None:
        return None
    key = _row_to_key(row)
    return key if key.active(_now_us() if now_us is None else now_us) else None


def active_key(engine: Engine, key_id: str, now_us: int | None = None) -> ApiKey | None:
    """The key with this id if it is active (a sign-in cookie names its key by id)."""
    with engine.connect() as conn:
        row = conn.execute(_readable(engine).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        return None
    key = _row_to_key(row)
    return key if key.active(_now_us() if now_us is None else now_us) else None


def list_keys(
    engine: Engine, include_revoked: bool = False, now_us: int | None = None
) -> list[ApiKey]:
    """All keys, oldest first; only the active ones unless `include_revoked`."""
    q = _readable(engine).order_by(api_keys.c.created_at)
    with engine.connect() as conn:
        keys = [_row_to_key(r) for r in conn.execute(q)]
    if include_revoked:
        return keys
    now = _now_us() if now_us is None else now_us
    return [k for k in keys if k.active(now)]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such active key."""
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now_us())
        )
    return res.rowcount == 1

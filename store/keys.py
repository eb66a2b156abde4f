"""API keys: random bearer tokens of which only a SHA-256 hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import Engine, select, update

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


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's public record (never the token)."""

    key_id: str
    name: str
    scope: Scope
    created_at_us: int
    revoked_at_us: int | None

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
    )


def create_key(
    engine: Engine, name: str, scope: Scope, replace: bool = False
) -> tuple[ApiKey, str]:
    """Create a key and return it with its token, which is shown once and never stored.

    With `replace`, active keys of the same name are revoked in the same transaction.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not name or len(name) > 200:
        raise ValueError("name must be 1-200 characters")
    key_id = secrets.token_hex(6)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time_ns() // 1000
    with engine.begin() as conn:
        if replace:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        conn.execute(
            api_keys.insert().values(
                key_id=key_id, name=name, scope=scope, token_hash=hash_token(token), created_at=now
            )
        )
    return ApiKey(key_id, name, scope, now, None), token


def authenticate(engine: Engine, token: str) -> ApiKey | None:
    """The active key the token belongs to, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(api_keys).where(api_keys.c.token_hash == hash_token(token))
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    return _row_to_key(row)


def list_keys(engine: Engine, include_revoked: bool = False) -> list[ApiKey]:
    """All keys, oldest first."""
    q = select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        q = q.where(api_keys.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return [_row_to_key(r) for r in conn.execute(q)]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke a key by id; False when there is no such active key."""
    with engine.begin() as conn:
        res = conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time_ns() // 1000)
        )
    return res.rowcount == 1

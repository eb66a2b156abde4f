"""API keys on every `/v1` route: 401 without a valid key, 403 outside the scope, the scopes."""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.beds import Bed, http_routes, make_bed
from support.payloads import seed_events

from api.app import create_app
from store.keys import SCOPES, ApiKey, create_key, revoke_key
from store.settings import Settings

# read ⊂ write ⊂ admin nest; query is read plus read-only SQL, never implied by another scope.
COVERS = {
    "read": {"read"},
    "write": {"read", "write"},
    "admin": {"read", "write", "admin"},
    "query": {"read", "query"},
}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# POSTs that write nothing, and the scope they need instead of write.
READ_ONLY_POSTS = {("POST", "/v1/query"): "query"}


def _v1_endpoints() -> list[tuple[str, str]]:
    app = create_app(Settings(database_url="sqlite://"))
    found = sorted(
        {
            (m, r.path)
            for r in http_routes(app)
            if r.path.startswith("/v1/") or r.path == "/v1"
            for m in r.methods
            if m not in {"HEAD", "OPTIONS"}
        }
    )
    assert found, "the app has no /v1 routes"
    return found


ENDPOINTS = _v1_endpoints()


def _route(app: Any, method: str, path: str) -> Any:
    for r in http_routes(app):
        if r.path == path and method in r.methods:
            return r
    raise LookupError((method, path))


def _required_scopes(dependant: Any) -> set[str]:
    """Scopes demanded by `api.deps.require(scope)` dependencies anywhere in the dependant tree."""
    scopes: set[str] = set()
    stack = [dependant]
    while stack:
        d = stack.pop()
        call = getattr(d, "call", None)
        if call is not None and getattr(call, "__qualname__", "").startswith("require."):
            scopes.add(inspect.getclosurevars(call).nonlocals["scope"])
        stack.extend(d.dependencies)
    return scopes


def _url(path: str) -> str:
    # Fill path parameters with a harmless value; auth is checked before the resource exists.
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with make_bed(tmp_path_factory.mktemp("auth")) as b:
        assert b.post_events(seed_events()).status_code == 200
        key, revoked = create_key(b.ledger.engine, "revoked-one", "admin")
        assert revoke_key(b.ledger.engine, key.key_id)
        b.tokens["revoked"] = revoked
        yield b


def call(bed: Bed, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    kw: dict[str, Any] = {"headers": headers or {}}
    if method in WRITE_METHODS:
        kw["content"] = b"{}"
        kw["headers"] = {**kw["headers"], "Content-Type": "application/json"}
    return bed.client.request(method, _url(path), **kw)


def scope_of(bed: Bed, method: str, path: str) -> str:
    scopes = _required_scopes(_route(bed.app, method, path).dependant)
    assert len(scopes) == 1, f"{method} {path} must require exactly one scope, has {scopes}"
    return scopes.pop()


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_route_declares_a_scope_and_write_methods_need_write(
    bed: Bed, method: str, path: str
) -> None:
    scope = scope_of(bed, method, path)
    if (method, path) in READ_ONLY_POSTS:
        assert scope == READ_ONLY_POSTS[method, path], (method, path, scope)
    elif method in WRITE_METHODS:
        assert scope in ("write", "admin"), (method, path, scope)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer ",
        "Bearer olk_not-a-real-token",
        "Bearer not-even-prefixed",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "olk_" + "a" * 400,
        "REVOKED",
    ],
    ids=["none", "bearer-empty", "bearer-space", "wrong", "unprefixed", "basic", "long", "revoked"],
)
def test_missing_wrong_or_revoked_key_is_401(
    bed: Bed, method: str, path: str, authorization: str | None
) -> None:
    before = bed.state()
    headers = {}
    if authorization == "REVOKED":
        headers["Authorization"] = f"Bearer {bed.tokens['revoked']}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    r = call(bed, method, path, headers)
    assert r.status_code == 401, r.text
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["errors"] == []
    assert bed.state() == before


@pytest.mark.parametrize(("method", "path"), ENDPOINTS, ids=[f"{m} {p}" for m, p in ENDPOINTS])
def test_scopes_nest_admin_write_read(bed: Bed, method: str, path: str) -> None:
    needed = scope_of(bed, method, path)
    for scope in SCOPES:
        r = call(bed, method, path, bed.headers(scope))
        if needed in COVERS[scope]:
            assert r.status_code not in (401, 403), (scope, r.status_code, r.text)
        else:
            assert r.status_code == 403, (scope, r.status_code, r.text)
            assert needed in r.json()["detail"]


def test_write_route_with_a_read_key_is_403_and_writes_nothing(bed: Bed) -> None:
    before = bed.state()
    body = seed_events()[0] | {"id": "would-be-new"}
    r = bed.client.post("/v1/events", json=body, headers=bed.headers("read"))
    assert r.status_code == 403, r.text
    assert "write" in r.json()["detail"]
    assert bed.state() == before
    r = bed.client.post("/v1/events", json=body, headers=bed.headers("admin"))
    assert r.status_code == 200, r.text


def test_the_scopes_are_the_keys_own() -> None:
    assert set(SCOPES) == set(COVERS)
    for scope, covered in COVERS.items():
        key = ApiKey("k", "n", scope, 0, None)  # type: ignore[arg-type]
        assert {s for s in SCOPES if key.allows(s)} == covered, scope


def test_query_needs_a_key_created_for_it(bed: Bed) -> None:
    body = {"query": "SELECT 1"}
    for scope in ("read", "write", "admin"):
        r = bed.client.post("/v1/query", json=body, headers=bed.headers(scope))
        assert r.status_code == 403 and "'query' scope" in r.json()["detail"], (scope, r.text)
    r = bed.client.post("/v1/query", json=body, headers=bed.headers("query"))
    assert r.status_code == 200, r.text


def test_read_route_accepts_every_scope(bed: Bed) -> None:
    for scope in SCOPES:
        r = bed.client.get("/v1/events", headers=bed.headers(scope))
        assert r.status_code == 200, (scope, r.text)


def test_scheme_is_case_insensitive(bed: Bed) -> None:
    r = bed.client.get("/v1/events", headers={"Authorization": f"bearer {bed.tokens['read']}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_need_no_key(bed: Bed, path: str) -> None:
    assert bed.client.get(path).status_code == 200
    r = bed.client.get(path, headers={"Authorization": "Bearer olk_wrong"})
    assert r.status_code == 200


def test_revoking_takes_effect_immediately(bed: Bed) -> None:
    key, token = create_key(bed.ledger.engine, "short-lived", "read")
    h = {"Authorization": f"Bearer {token}"}
    assert bed.client.get("/v1/events", headers=h).status_code == 200
    assert revoke_key(bed.ledger.engine, key.key_id)
    assert bed.client.get("/v1/events", headers=h).status_code == 401
    assert not revoke_key(bed.ledger.engine, key.key_id)


def test_tokens_are_stored_only_as_sha256(tmp_path: Path) -> None:
    with make_bed(tmp_path) as b:
        tokens = dict(b.tokens)
        assert b.client.get("/v1/events", headers=b.headers("read")).status_code == 200
        db_path = b.db_path
    b.ledger.engine.dispose()
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert raw
    for token in tokens.values():
        assert token.startswith("olk_") and len(token) >= 40
        assert token.encode() not in raw
        assert token[4:].encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest().encode() in raw

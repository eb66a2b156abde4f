"""The app test bed: a migrated ledger, `create_app` over it, a TestClient and a key per scope.

One `Bed` and one `make_bed` for every test that drives the HTTP API in-process. What differs
between modules is options: the ledger (a new SQLite file, or a database URL such as the
`backend_url` fixture's) and any `Settings` field (`projection_interval_seconds=3600` keeps the
projector's timer out of a test, so only ingest and explicit catch-ups move the read model).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from store.keys import SCOPES, create_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.schema import events
from store.settings import Settings


@dataclass
class Bed:
    """The app over a migrated ledger, a client of it and one key per scope (`tokens`)."""

    settings: Settings
    app: FastAPI
    #: A TestClient of the app; a test serving the app for real may put an httpx.Client here.
    client: httpx.Client
    ledger: Ledger
    url: str
    #: The SQLite file of the ledger; None on another database.
    db_path: Path | None
    tokens: dict[str, str]

    def headers(self, scope: str = "write", content_type: str | None = None) -> dict[str, str]:
        """Authorization (and optionally Content-Type) headers for a key of `scope`."""
        h = {"Authorization": f"Bearer {self.tokens[scope]}"}
        if content_type is not None:
            h["Content-Type"] = content_type
        return h

    def get(self, path: str, key_scope: str = "read", **params: Any) -> httpx.Response:
        """GET `path` with query parameters and a key of `key_scope`."""
        return self.client.get(path, params=params, headers=self.headers(key_scope))

    def post(
        self, path: str, body: Any = None, key_scope: str = "write", **headers: str
    ) -> httpx.Response:
        """POST a JSON body (None: no body) to `path` with a key of `key_scope`, extra headers."""
        return self.client.post(path, json=body, headers={**self.headers(key_scope), **headers})

    # -- the ledger's own routes --------------------------------------------------------------

    def post_events(self, body: Any, key_scope: str = "write", **kw: Any) -> httpx.Response:
        """POST a JSON body to /v1/events (application/json unless `headers` overrides)."""
        return self.client.post("/v1/events", json=body, headers=self.headers(key_scope), **kw)

    def get_events(self, key_scope: str = "read", **params: Any) -> httpx.Response:
        """GET /v1/events with query parameters."""
        return self.get("/v1/events", key_scope, **params)

    def rows(self) -> int:
        """The number of rows of the events table."""
        with self.ledger.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar_one())

    def state(self) -> tuple[int, int]:
        """(head position, events row count): equal before/after means nothing was written."""
        return self.ledger.head(), self.rows()

    # -- the read model -----------------------------------------------------------------------

    def catch_up(self) -> list[dict[str, Any]]:
        """POST /v1/projections/catch-up with the admin key: the projections' states after."""
        r = self.client.post("/v1/projections/catch-up", headers=self.headers("admin"))
        assert r.status_code == 200, r.text
        states: list[dict[str, Any]] = r.json()["projections"]
        return states

    def wait_caught_up(
        self, head: int | None = None, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait, asking nothing, until every projection has folded in `head` (default: the
        ledger's head now), as the projector does after each ingest; their states then."""
        head = self.ledger.head() if head is None else head
        deadline = time.monotonic() + timeout_s
        while True:
            r = self.get("/v1/projections")
            assert r.status_code == 200, r.text
            states: list[dict[str, Any]] = r.json()["projections"]
            if states and all(s["position"] >= head and s["lag"] == 0 for s in states):
                return states
            assert time.monotonic() < deadline, f"projections still behind {head}: {states}"
            time.sleep(0.05)

    def caught_up(self) -> list[dict[str, Any]]:
        """Catch the read model up (admin) and wait until every projection reports no lag."""
        self.catch_up()
        return self.wait_caught_up()


def bed_settings(tmp_path: Path, url: str | None = None, **fields: Any) -> Settings:
    """Settings for a bed in `tmp_path` (its home unless `home` is given) on the ledger at `url`,
    by default a new SQLite file `tmp_path/ledger.db` migrated to head."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if url is None:
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        upgrade(url)
    # Its own home: the read model under the default home would be shared by every bed.
    fields.setdefault("home", tmp_path)
    return Settings(database_url=url, **fields)


def scope_keys(ledger: Ledger) -> dict[str, str]:
    """A new key of every scope (named `test-<scope>`): {scope: token}."""
    return {s: create_key(ledger.engine, f"test-{s}", s)[1] for s in SCOPES}


@contextmanager
def make_bed(tmp_path: Path, url: str | None = None, **fields: Any) -> Iterator[Bed]:
    """The app (`create_app`, projections on) over a migrated ledger, started by its TestClient.

    `url`: a migrated database, e.g. the `backend_url` fixture's; default a new SQLite file in
    `tmp_path`. `fields`: Settings fields; `home` defaults to `tmp_path`. Every scope gets a key
    (`bed.tokens[scope]`, named `test-<scope>`).
    """
    from api.app import create_app

    settings = bed_settings(tmp_path, url, **fields)
    app = create_app(settings)
    ledger: Ledger = app.state.ledger
    tokens = scope_keys(ledger)
    db_url = str(settings.database_url)
    db_path = Path(db_url.removeprefix("sqlite:///")) if db_url.startswith("sqlite:///") else None
    # A crash must show up as the 500 a client would get, not as an exception in the test.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Bed(settings, app, client, ledger, db_url, db_path, tokens)


def http_routes(app: FastAPI) -> list[Any]:
    """Every HTTP route of the app with `path`, `methods` and (API routes) `dependant`.

    FastAPI >= 0.13x keeps included routers unflattened in `app.routes`; walk them when so.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    return [r for r in routes if getattr(r, "methods", None) and getattr(r, "path", None)]

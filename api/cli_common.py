"""What the CLI's commands share: consoles, the ledger, errors, and asking the running server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console

from store.keys import Scope, create_key, revoke_key
from store.ledger import Ledger
from store.settings import get_settings
from store.timefmt import TimeFormatError, parse_rfc3339_us

#: Exit codes for the server's refusals: bad input 2, conflict 3, not found 4.
_EXIT_CODES = {400: 2, 413: 2, 415: 2, 422: 2, 409: 3, 404: 4}

out = Console()
err = Console(stderr=True, soft_wrap=True)


def ledger() -> Ledger:
    """The configured ledger."""
    return Ledger.from_url(get_settings().ledger_url)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the exit to raise (2 for bad input)."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def time_option(name: str, value: str | None) -> int | None:
    """An RFC 3339 option as UTC microseconds (exit 2 when malformed)."""
    if value is None:
        return None
    try:
        return parse_rfc3339_us(value)
    except TimeFormatError as exc:
        raise fail(f"--{name} {exc}", 2) from None


def server_file() -> Path:
    """Where a running server announces that it holds the read model."""
    return get_settings().server_file


def delegate_raw(
    method: str, path: str, payload: bytes | None = None, scope: Scope = "admin"
) -> bytes:
    """Ask the running server, which holds the read model, through its API with a one-off key.

    `payload` is sent as JSON; the key has `scope` (admin covers every route but `POST /v1/query`).
    """
    import urllib.error
    import urllib.request

    try:
        info = orjson.loads(server_file().read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise fail(
            f"{get_settings().read_model} is open in another process and no server "
            "announced itself; stop that process and retry"
        ) from None
    engine = ledger().engine
    key, token = create_key(engine, "cli-delegate", scope)
    headers = {"Authorization": f"Bearer {token}"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        url = info["url"] + path
        req = urllib.request.Request(url, data=payload, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=3600) as resp:
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        try:
            refusal = orjson.loads(exc.read())
            reasons = "; ".join(e["reason"] for e in refusal.get("errors", []))
            message = reasons or refusal.get("detail", str(exc))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            message = str(exc)
        raise fail(message, _EXIT_CODES.get(exc.code, 1)) from None
    except urllib.error.URLError as exc:
        raise fail(f"the server at {info['url']} did not answer: {exc}") from None
    finally:
        revoke_key(engine, key.key_id)


def delegate(method: str, path: str) -> dict[str, Any]:
    """`delegate_raw`, decoding the JSON answer."""
    body: dict[str, Any] = orjson.loads(delegate_raw(method, path))
    return body

"""What the CLI's commands share: consoles, the ledger, errors, and asking the running server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from store.keys import Scope, create_delegate_key, revoke_key
from store.ledger import Ledger
from store.settings import get_settings
from store.timefmt import TimeFormatError, parse_rfc3339_us, us_to_naive

#: Exit codes for the server's refusals: bad input 2, conflict 3, not found 4.
_EXIT_CODES = {400: 2, 413: 2, 415: 2, 422: 2, 409: 3, 404: 4}

out = Console()
err = Console(stderr=True, soft_wrap=True)


def ledger() -> Ledger:
    """The configured ledger."""
    return Ledger.from_url(get_settings().ledger_url)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the exit to raise (2 for bad input)."""
    # The message is text, never markup: paths, URLs and errors may hold `[...]` (a bucket
    # named `[/x]` raised Rich's MarkupError instead of printing).
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
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

    from analytics.readmodel.model import announced, holder_pid

    model = get_settings().read_model
    server = announced(model)
    if server is None:
        pid = holder_pid(model)
        who = f" (pid {pid})" if pid is not None else ""
        raise fail(
            f"{model} is open in another process{who} and no server announced itself; "
            "wait for it to finish or stop it, and retry"
        )
    pid, url = server
    engine = ledger().engine
    # Short-lived: were this process killed before it revokes the key, the key would expire
    # by itself (and the next delegated call revokes it).
    key, token = create_delegate_key(engine, scope)
    headers = {"Authorization": f"Bearer {token}"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        req = urllib.request.Request(url + path, data=payload, method=method, headers=headers)
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
        raise fail(
            f"the server at {url} (pid {pid}) did not answer: {exc.reason}; "
            f"if no server runs, remove {server_file()}"
        ) from None
    finally:
        revoke_key(engine, key.key_id)


def delegate(method: str, path: str) -> dict[str, Any]:
    """`delegate_raw`, decoding the JSON answer."""
    body: dict[str, Any] = orjson.loads(delegate_raw(method, path))
    return body


def naive_option(name: str, value: str | None) -> datetime | None:
    """An RFC 3339 option as a naive UTC datetime (the read model's), or None."""
    us = time_option(name, value)
    return None if us is None else us_to_naive(us)

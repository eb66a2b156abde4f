"""Servers on loopback: a free port, the app under uvicorn in a thread, `opsledger serve` in a
subprocess, and raw sockets to talk to them byte by byte."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from store.engine import make_engine
from store.keys import create_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings
from support.cli import OPSLEDGER


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may still take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def announce_file(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where `opsledger serve` announces itself for these settings (api/cli/common.py)."""
    from store.settings import get_settings

    monkeypatch.setenv("OPSLEDGER_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("OPSLEDGER_READ_MODEL_PATH", str(settings.read_model))
    get_settings.cache_clear()
    try:
        return get_settings().server_file
    finally:
        get_settings.cache_clear()


@contextmanager
def serve_in_thread(
    app: Any, *, announce: Path | None = None, log_level: str = "warning"
) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread: its base URL.

    With `announce`, the file the CLI looks for names this server while it runs (as
    `opsledger serve` does), and is deleted afterwards. The server must stop in time.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        if announce is not None:
            announce.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        if announce is not None:
            announce.unlink(missing_ok=True)
    assert not thread.is_alive(), "uvicorn did not stop"


# -- `opsledger serve` in a subprocess --------------------------------------------------------


@dataclass
class Server:
    """A running `opsledger serve`: its port, ledger URL, a key per scope and its logs."""

    proc: subprocess.Popen[bytes]
    port: int
    url: str
    db: str
    tokens: dict[str, str]
    logs: tuple[Path, Path]

    def log(self, since: tuple[int, ...] = (0, 0)) -> str:
        """What the server wrote (access log on stdout, the rest on stderr), from `since`."""
        return "".join(
            p.read_bytes()[n:].decode("utf-8", "replace")
            for p, n in zip(self.logs, since, strict=True)
        )

    def sizes(self) -> tuple[int, ...]:
        """Where its logs end now, to read only what comes after."""
        return tuple(p.stat().st_size for p in self.logs)

    def head(self) -> int:
        """The ledger's head, read beside the server."""
        ledger = Ledger.from_url(self.db)
        try:
            return ledger.head()
        finally:
            ledger.engine.dispose()


@contextmanager
def serve(tmp: Path, db: str | None = None, **settings: str) -> Iterator[Server]:
    """`opsledger serve` on a free loopback port, with OPSLEDGER_<NAME> settings."""
    home = tmp / "home"
    home.mkdir()
    if db is None:
        db = f"sqlite:///{home / 'ledger.db'}"
        upgrade(db)
    engine = make_engine(db)
    try:
        tokens = {s: create_key(engine, f"t-{s}", s)[1] for s in ("read", "write")}
    finally:
        engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env.update({f"OPSLEDGER_{k.upper()}": v for k, v in settings.items()})
    env.update(OPSLEDGER_HOME=str(home), OPSLEDGER_DATABASE_URL=db, PYTHONUNBUFFERED="1")
    logs = (tmp / "stdout.log", tmp / "stderr.log")
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        proc = subprocess.Popen(
            [str(OPSLEDGER), "serve", "--port", str(port)], env=env, stdout=out, stderr=err
        )
    server = Server(proc, port, f"http://127.0.0.1:{port}", db, tokens, logs)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, server.log()
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"opsledger serve did not answer:\n{server.log()}"
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(server: Server) -> socket.socket:
    """A raw TCP connection to the server."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """All bytes the server sends until it closes, and the monotonic time it closed (or gave
    up after `limit` seconds: then the time is infinite)."""
    data = b""
    end = time.monotonic() + limit
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    return data, float("inf")

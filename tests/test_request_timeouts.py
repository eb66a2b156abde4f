"""Slow clients against a real `opsledger serve` on loopback: a request head or body that comes
too slowly gets 408 and loses its connection, writes nothing, and never holds others up."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from pydantic import ValidationError
from support.payloads import incident_opened
from support.servers import Server, connect, read_until_closed, serve

from store.settings import Settings

#: The limits the server under test runs with: short, so that each test takes seconds.
READ = 1.0
BODY = 3.0
#: How late a close may come on a machine shared with other work.
SLACK = 1.5


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-body: {data!r}"
        body += chunk
    assert len(body) == length, "more than one response"
    return head + b"\r\n\r\n" + body


def post_head(server: Server, length: int, path: str = "/v1/events") -> bytes:
    """The head of a POST with a write key and a declared body length."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.tokens['write']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP/1.1 response."""
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    """The body of a raw HTTP/1.1 response with a Content-Length."""
    return response.split(b"\r\n\r\n", 1)[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(
        tmp_path_factory.mktemp("timeouts"),
        request_read_timeout_seconds=str(READ),
        request_body_timeout_seconds=str(BODY),
    ) as s:
        yield s


# -- the request head ----------------------------------------------------------------------------


def test_half_a_request_line_then_silence_is_408_and_closed(server: Server) -> None:
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /heal")
        data, closed = read_until_closed(sock, READ + SLACK + 3)
    assert closed - start <= READ + SLACK, f"still open after {closed - start:.1f} s"
    assert closed - start >= READ * 0.8
    assert status_of(data) == 408 and b"connection: close" in data.lower()


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        start = time.monotonic()
        data, closed = read_until_closed(sock, READ + SLACK + 3)
    assert data == b"" and closed - start <= READ + SLACK


def test_a_head_trickled_byte_by_byte_is_cut_at_the_deadline(server: Server) -> None:
    # Bytes keep coming, faster than any idle timeout: only a deadline on the whole head helps.
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 200
    with connect(server) as sock:
        start = time.monotonic()
        closed = float("inf")
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic()
                break
            if time.monotonic() - start > READ + SLACK + 2:
                break
            time.sleep(0.05)
        if closed == float("inf"):
            _, closed = read_until_closed(sock, 3)
    assert closed - start <= READ + SLACK, f"still open after {closed - start:.1f} s"


def test_the_next_head_on_a_kept_alive_connection_has_the_same_deadline(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(read_response(sock)) == 200
        answered = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 12")
        data, closed = read_until_closed(sock, READ + SLACK + 3)
    assert status_of(data) == 408
    assert closed - answered <= READ + SLACK


# -- the request body ----------------------------------------------------------------------------


def test_a_body_that_trickles_then_stalls_is_408_and_writes_nothing(server: Server) -> None:
    body = orjson.dumps(incident_opened(id="stalled-body"))
    before = server.head()
    with connect(server) as sock:
        sock.sendall(post_head(server, len(body)) + body[:10])
        for i in range(10, 13):
            time.sleep(0.2)
            sock.sendall(body[i : i + 1])
        stalled = time.monotonic()
        data, closed = read_until_closed(sock, READ + SLACK + 3)
    assert status_of(data) == 408, data
    assert b"connection: close" in data.lower()
    assert orjson.loads(body_of(data)) == {
        "detail": f"the request body stalled for {READ:g} s "
        "(OPSLEDGER_REQUEST_READ_TIMEOUT_SECONDS); nothing was written",
        "errors": [],
    }
    assert closed - stalled <= READ + SLACK
    assert server.head() == before


@pytest.mark.slow
def test_a_body_that_trickles_past_the_body_deadline_is_408(server: Server) -> None:
    body = orjson.dumps(incident_opened(id="trickled-body"))
    before = server.head()
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(post_head(server, len(body)))
        sent, data = 0, b""
        # A byte every 0.3 s never stalls for READ, but the whole body would take ~40 s.
        while sent < len(body) and time.monotonic() - start < BODY + SLACK + 2:
            try:
                sock.sendall(body[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(0.3)
        data, closed = read_until_closed(sock, 3)
    assert sent < len(body)
    assert status_of(data) == 408, data
    assert b"OPSLEDGER_REQUEST_BODY_TIMEOUT_SECONDS" in data
    assert BODY * 0.8 <= closed - start <= BODY + SLACK + 2
    assert server.head() == before


def test_a_client_gone_mid_body_writes_nothing_and_logs_no_traceback(server: Server) -> None:
    body = orjson.dumps(incident_opened(id="abandoned-body"))
    before = server.head()
    with connect(server) as sock:
        sock.sendall(post_head(server, len(body)) + body[:20])
        time.sleep(0.2)
    time.sleep(0.5)
    assert server.head() == before
    assert "Traceback" not in server.log(), server.log()


# -- normal clients ------------------------------------------------------------------------------


def test_a_client_sending_in_pieces_within_the_limits_is_served(server: Server) -> None:
    body = orjson.dumps(incident_opened(id="pieces"))
    request = post_head(server, len(body)) + body
    with connect(server) as sock:
        for i in range(0, len(request), 40):
            sock.sendall(request[i : i + 40])
            time.sleep(0.02)
        response = read_response(sock)
    assert status_of(response) == 200, response
    assert orjson.loads(body_of(response))["accepted"] == 1


def test_a_kept_alive_connection_lives_as_long_as_it_is_used(server: Server) -> None:
    # Four requests over more than READ in all: the deadline runs from each response.
    with connect(server) as sock:
        start = time.monotonic()
        for _ in range(4):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert status_of(read_response(sock)) == 200
            time.sleep(READ * 0.5)
    assert time.monotonic() - start > READ * 1.5


def test_200_trickling_sockets_do_not_hold_up_a_normal_request(server: Server) -> None:
    slow = [connect(server) for _ in range(200)]
    open_ = set(range(len(slow)))
    start = time.monotonic()
    latencies: list[float] = []
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # Each sends another header line every 0.25 s, until the server cuts it off.
        while open_ and time.monotonic() - start < READ + SLACK + 1:
            for i in list(open_):
                try:
                    slow[i].sendall(b"X-Slow: a\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    open_.discard(i)
            t0 = time.monotonic()
            r = httpx.get(f"{server.url}/healthz", timeout=5)
            latencies.append(time.monotonic() - t0)
            assert r.status_code == 200
            time.sleep(0.25)
        # Whatever is left must have been closed by now: reading finds the end at once.
        for i in list(open_):
            _, closed = read_until_closed(slow[i], 0.5)
            if closed != float("inf"):
                open_.discard(i)
    finally:
        for sock in slow:
            sock.close()
    assert not open_, f"{len(open_)} trickling sockets still open after {READ + SLACK + 1} s"
    # Generous for a machine shared with other work; a blocked server would take seconds.
    assert max(latencies) < 2.0, latencies


def test_the_limits_are_bounded_settings() -> None:
    assert Settings().request_read_timeout_seconds == 30
    assert Settings().request_body_timeout_seconds == 120
    for bad in ({"request_read_timeout_seconds": 0}, {"request_body_timeout_seconds": -1}):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]

"""An outsider's attacks on the web surface (issue 10), each answered as documented: the report's
sign-in cookie and `next`, the webhooks' signatures and bodies, ingest bodies, hostile headers
everywhere, many connections at once, and secrets kept out of logs and error bodies.

What tests/test_report.py, test_webhooks.py, test_bad_input.py and test_auth.py already cover
(a tampered MAC, a revoked key, cross-site Origin, `//host` in `next`, wrong or missing
signatures, NaN/Infinity/1e999, a UTF-8 BOM, text/plain, deep events, 413s) is not repeated.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import logging
import selectors
import socket
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import orjson
import pytest
from fastapi.testclient import TestClient
from support.payloads import incident_opened, pod_status, webhook_fixture
from support.servers import Server, connect, read_until_closed, serve

from api.app import create_app
from api.logs import FILTER, REDACTED_TOKEN, redact
from api.routes.reports import COOKIE, COOKIE_SECONDS, cookie_key_id, issue_cookie
from store.engine import make_engine
from store.keys import authenticate, create_key, revoke_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings

PD_SECRET = "pd-secret-that-must-never-be-logged-7f3a"
SESSION_KEY = "report-session-key-that-must-never-be-logged-91c2"
SIGNING_KEY = hashlib.sha256(SESSION_KEY.encode()).digest()
MONTH = "2026-10"
REPORT = f"/reports/capacity/{MONTH}"
PD = "/v1/webhooks/pagerduty"


def mac(payload: str, key: bytes = SIGNING_KEY) -> str:
    """The cookie's signature of `payload`, as the server computes it."""
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def pd_sign(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def call(
    server: Server,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on its own connection, header bytes exactly as given: status, headers, body."""
    headers = headers or []
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Connection: close"]
    if not any(name.lower() == b"host" for name, _ in headers):
        lines.append(b"Host: 127.0.0.1")
    lines += [name + b": " + value for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    with connect(server) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data, closed = read_until_closed(sock, 30)
    assert closed != float("inf"), f"no answer to {method} {path}"
    head, _, content = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    answer = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        answer[name.strip().lower()] = value.strip()
    return int(status_line.split(b" ")[1]), answer, content


def bearer(token: str) -> tuple[bytes, bytes]:
    return b"Authorization", f"Bearer {token}".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(
        tmp_path_factory.mktemp("attack"),
        pagerduty_webhook_secret=PD_SECRET,
        report_session_key=SESSION_KEY,
    ) as s:
        yield s


def key_id(server: Server, scope: str) -> str:
    engine = make_engine(server.db)
    try:
        key = authenticate(engine, server.tokens[scope])
    finally:
        engine.dispose()
    assert key is not None
    return key.key_id


#: Where each server's logs ended when the running test began.
_MARKS: dict[int, tuple[int, ...]] = {}


@pytest.fixture(autouse=True)
def _mark_logs(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        srv: Server = request.getfixturevalue("server")
        _MARKS[srv.port] = srv.sizes()


def no_traceback(server: Server) -> None:
    """Nothing the server logged during this test is a traceback."""
    log = server.log(_MARKS.get(server.port, (0, 0)))
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


# -- the report's sign-in cookie ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    ["\xe9".encode("latin-1"), "é".encode(), "²".encode(), b"\xff" * 43],
    ids=["latin-1", "utf-8", "superscript", "ff"],
)
def test_a_non_ascii_cookie_is_401_not_500(server: Server, tail: bytes) -> None:
    cookie = f"{COOKIE}=v1.{key_id(server, 'read')}.{int(time.time()) + 600}.".encode() + tail
    status, _, body = call(server, "GET", REPORT, [(b"Cookie", cookie)])
    assert status == 401, body
    no_traceback(server)


ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _forged(server: Server) -> dict[str, str]:
    kid, now = key_id(server, "read"), int(time.time())

    def signed(kid: str, expiry: str) -> str:
        return f"v1.{kid}.{expiry}.{mac(f'v1.{kid}.{expiry}')}"

    good = signed(kid, str(now + 600))
    return {
        "wrong-mac": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "other-signing-key": f"v1.{kid}.{now + 600}.{mac(f'v1.{kid}.{now + 600}', b'x' * 32)}",
        "unknown-key-id": signed("0123456789ab", str(now + 600)),
        "expired": signed(kid, str(now - 1)),
        "far-future": signed(kid, str(now + 10 * 86_400)),
        "superscript-expiry-signed": signed(kid, "²"),
        "arabic-digits-signed": signed(kid, str(now + 600).translate(ARABIC_DIGITS)),
        "non-numeric": signed(kid, "soon"),
        "extra-dots": good + ".x",
        "dot-in-key-id": signed(kid + ".x", str(now + 600)),
        "empty-parts": "v1...",
        "empty": "",
        "v2": "v2" + good[2:],
        "padded-mac": good + "=",
        "huge": good + "A" * 6000,
        "huge-expiry": signed(kid, "9" * 5000),
    }


FORGED = [
    "wrong-mac",
    "other-signing-key",
    "unknown-key-id",
    "expired",
    "far-future",
    "superscript-expiry-signed",
    "arabic-digits-signed",
    "non-numeric",
    "extra-dots",
    "dot-in-key-id",
    "empty-parts",
    "empty",
    "v2",
    "padded-mac",
    "huge",
    "huge-expiry",
]


@pytest.mark.parametrize("case", FORGED)
def test_forged_cookies_are_401(server: Server, case: str) -> None:
    value = f"{COOKIE}={_forged(server)[case]}"
    # Headers arrive as Latin-1: "²" can reach the server as itself, "١" only as mojibake.
    raw = value.encode("latin-1") if all(ord(c) < 256 for c in value) else value.encode()
    status, _, body = call(server, "GET", REPORT, [(b"Cookie", raw)])
    assert status == 401, (case, body)
    no_traceback(server)


def test_a_cookie_signed_with_the_session_key_is_taken(server: Server) -> None:
    # The control for the forgeries above: the same construction, honestly signed.
    value = issue_cookie(SIGNING_KEY, key_id(server, "read"), time.time())
    status, _, body = call(server, "GET", REPORT, [(b"Cookie", f"{COOKIE}={value}".encode())])
    assert status == 200, body


def test_a_cookie_never_outlives_one_sign_in() -> None:
    now = time.time()
    payload = f"v1.abc.{int(now) + COOKIE_SECONDS + 3600}"
    assert cookie_key_id(SIGNING_KEY, f"{payload}.{mac(payload)}", now) is None
    assert cookie_key_id(SIGNING_KEY, issue_cookie(SIGNING_KEY, "abc", now), now) == "abc"


def test_a_nul_in_a_cookie_is_refused_by_the_server_not_the_app(server: Server) -> None:
    status, _, _ = call(server, "GET", REPORT, [(b"Cookie", f"{COOKIE}=v1.a\x00b".encode())])
    assert status == 400
    no_traceback(server)


# -- hostile header values everywhere they are read ---------------------------------------------

HOSTILE: dict[str, bytes] = {
    "latin-1": b"\xe9\xff\xfe",
    "utf-8": "é✓".encode(),
    "empty": b"",
    "huge": b"A" * 8000,
    "unicode-digits": "١٢٣".encode(),
    "nul": b"a\x00b",
}
#: Each request header the app reads, with the routes that read it.
READERS: list[Any] = [
    ("Cookie", "GET", REPORT, f"{COOKIE}=v1.abc.1.".encode()),
    ("Authorization", "GET", "/v1/events", b"Bearer olk_"),
    ("Authorization", "GET", REPORT, b""),
    ("Origin", "POST", "/reports/login", b""),
    ("Referer", "POST", "/reports/login", b"http://"),
    ("Origin", "POST", "/reports/logout", b""),
    ("Referer", "POST", "/reports/logout", b"https://["),
    ("Accept", "GET", REPORT, b"text/html"),
    # prometheus_client's choose_encoder raises TypeError on a version it cannot parse
    # (`version=x` too): /metrics answers the text format instead (it was a 500).
    ("Accept", "GET", "/metrics", b"application/openmetrics-text; version="),
    ("X-PagerDuty-Signature", "POST", PD, b"v1="),
    ("Content-Type", "POST", "/v1/events", b"application/json; charset="),
    ("Content-Type", "POST", PD, b""),
    ("If-Match", "POST", "/v1/incidents/INC-1/acknowledge", b""),
    ("X-Forwarded-Proto", "GET", "/healthz", b""),
    ("X-Forwarded-For", "GET", "/healthz", b""),
    ("Host", "POST", "/reports/login", b""),
]


@pytest.mark.parametrize(
    ("header", "method", "path", "prefix"),
    READERS,
    ids=[f"{h}-{m}-{p}" for h, m, p, _ in (getattr(r, "values", r) for r in READERS)],
)
def test_hostile_header_values_never_make_a_500(
    server: Server, header: str, method: str, path: str, prefix: bytes
) -> None:
    write = bearer(server.tokens["write"])
    body = b'{"event": {"event_type": "incident.triggered"}}' if method == "POST" else b""
    for name, value in HOSTILE.items():
        headers = [(header.encode(), prefix + value)]
        if header not in ("Authorization", "Cookie", "Origin", "Referer", "Host"):
            headers.append(write)
        if header == "Host":  # and an Origin naming it, so the same-site check compares them
            headers.append((b"Origin", b"http://" + value))
        status, _, answer = call(server, method, path, headers, body)
        assert status < 500, (header, name, status, answer)
    no_traceback(server)


@pytest.mark.parametrize(
    "signature",
    [b"v1=\xe9\xe9", "v1=é".encode(), b"v1=" + b"\xff" * 64, b"v1=" + b"a" * 8000, b"v1=,v1="],
    ids=["latin-1", "utf-8", "ff-64", "huge", "empty-values"],
)
def test_a_bad_pagerduty_signature_is_401_not_500(server: Server, signature: bytes) -> None:
    body = orjson.dumps(webhook_fixture("pagerduty-v3/triggered_v3.json"))
    before = server.head()
    status, _, answer = call(
        server,
        "POST",
        PD,
        [bearer(server.tokens["write"]), (b"X-PagerDuty-Signature", signature)],
        body,
    )
    assert status == 401, answer
    assert server.head() == before
    no_traceback(server)


def test_a_signed_pagerduty_delivery_replayed_is_a_duplicate(server: Server) -> None:
    doc = webhook_fixture("pagerduty-v3/triggered_v3.json")
    body = orjson.dumps(doc)
    headers = [
        bearer(server.tokens["write"]),
        (b"X-PagerDuty-Signature", f"v0=x, {pd_sign(body).upper().replace('V1=', 'v1=')}".encode()),
    ]
    status, _, first = call(server, "POST", PD, headers, body)
    assert status == 200, first
    head = server.head()
    status, _, again = call(server, "POST", PD, headers, body)
    assert status == 200, again
    assert orjson.loads(again)["appended"] == 0 and orjson.loads(again)["duplicates"] >= 1
    assert server.head() == head


# -- the sign-in's `next` ---------------------------------------------------------------------

#: `next` as a client sends it (after the query string's own decoding) → where sign-in goes.
NEXT: dict[str, str | None] = {
    "/reports/capacity/2026-10": "/reports/capacity/2026-10",
    "/reports/capacity/2026-10?cluster=prod-eks-1": "/reports/capacity/2026-10?cluster=prod-eks-1",
    "/reports/./capacity/../capacity/2026-10": "/reports/capacity/2026-10",
    "/reports/%2e%2e/%2e%2e/v1/events": None,
    "/reports/%2E%2E/v1/events": None,
    "/reports/.%2e/v1/events": None,
    "/reports/%252e%252e/v1/events": None,
    "/reports/x/..%2f..%2fv1/events": None,
    "/reports/..": None,
    "//evil.example/reports/": None,
    "/\\evil.example/reports/": None,
    "/reports/\\..\\..\\v1": None,
    "/reports/%5c%5cevil.example": None,
    "%2f%2fevil.example/reports/": None,
    "/%2f/evil.example/reports/": None,
    "/reports//evil.example": None,
    "https://evil.example/reports/capacity/2026-10": None,
    "javascript:alert(1)//reports/": None,
    "/reports/x\r\nSet-Cookie: a=b": None,
    "/reports/x%0d%0aSet-Cookie:%20a=b": None,
    "/reports/capacity/2026-10?cluster=%0d%0aX: y": None,
    "/reports/\x00": None,
    "/reports/é": None,
    "/reports/%c3%a9": None,
    "/reports/%ff": None,
    "/reports/" + "a" * 2000: None,
}


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    root = tmp_path_factory.mktemp("attack-app")
    url = f"sqlite:///{root / 'ledger.db'}"
    upgrade(url)
    app = create_app(Settings(database_url=url, home=root), projections=False)
    _, token = create_key(app.state.ledger.engine, "reader", "read")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token


def _as_a_browser_resolves(location: str) -> str:
    # WHATWG URL parsing treats %2e like a dot in a path segment.
    path = urlsplit(urljoin("http://testserver/reports/login", location)).path
    parts: list[str] = []
    for segment in path.split("/")[1:]:
        segment = unquote(segment) if unquote(segment) in (".", "..") else segment
        if segment == "..":
            parts = parts[:-1]
        elif segment != ".":
            parts.append(segment)
    return "/" + "/".join(parts)


@pytest.mark.parametrize("sent", list(NEXT), ids=[repr(n)[:60] for n in NEXT])
def test_next_is_normalised_and_stays_under_reports(
    app_client: tuple[TestClient, str], sent: str
) -> None:
    client, token = app_client
    client.cookies.clear()
    expected = NEXT[sent]
    r = client.post("/reports/login", data={"key": token, "next": sent}, follow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    if expected is None:
        assert location.startswith("/reports/capacity/") and location.count("/") == 3, location
    else:
        assert location == expected
    assert urlsplit(location).netloc == "" and location.startswith("/reports/")
    assert _as_a_browser_resolves(location).startswith("/reports/"), location
    form = client.get("/reports/login", params={"next": sent})
    assert form.status_code == 200
    hidden = form.text.split('name="next" value="', 1)[1].split('"', 1)[0]
    assert hidden == location


# -- cross-site posts and cookie flags -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Referer": "https://evil.example/page"}, 403),
        ({"Referer": "http://[evil"}, 403),
        ({"Referer": "http://testserver.evil.example/"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://testserver:80"}, 403),
        ({"Origin": "https://testserver"}, 403),
        ({"Origin": "https://evil.example", "Referer": "http://testserver/reports/login"}, 403),
        ({"Origin": "http://testserver"}, 303),
        ({"Referer": "http://testserver/reports/login?next=/x"}, 303),
        ({}, 303),
    ],
    ids=[
        "referer-elsewhere",
        "referer-malformed",
        "referer-lookalike",
        "origin-null",
        "origin-port",
        "origin-scheme",
        "origin-wins",
        "same-origin",
        "same-referer",
        "no-browser",
    ],
)
def test_sign_in_and_out_only_from_this_site(
    app_client: tuple[TestClient, str], headers: dict[str, str], code: int
) -> None:
    client, token = app_client
    client.cookies.clear()
    r = client.post("/reports/login", data={"key": token}, headers=headers, follow_redirects=False)
    assert r.status_code == code, r.text
    assert (COOKIE in r.headers.get("set-cookie", "")) == (code == 303)
    out = client.post("/reports/logout", headers=headers, follow_redirects=False)
    assert out.status_code == code, out.text


def test_the_cookie_is_secure_over_https_only(app_client: tuple[TestClient, str]) -> None:
    client, token = app_client
    for base, secure in (("https://testserver", True), ("http://testserver", False)):
        client.cookies.clear()
        r = client.post(f"{base}/reports/login", data={"key": token}, follow_redirects=False)
        attributes = [a.strip().lower() for a in r.headers["set-cookie"].split(";")]
        assert ("secure" in attributes) == secure, attributes
        assert {"httponly", "samesite=strict", "path=/reports"} <= set(attributes)
        out = client.post(f"{base}/reports/logout", follow_redirects=False)
        attributes = [a.strip().lower() for a in out.headers["set-cookie"].split(";")]
        assert ("secure" in attributes) == secure and "max-age=0" in attributes


def test_behind_a_tls_proxy_the_cookie_is_secure_and_the_origin_https(server: Server) -> None:
    # uvicorn trusts X-Forwarded-Proto from loopback, where a local proxy would be.
    status, headers, body = call(
        server,
        "POST",
        "/reports/login",
        [
            (b"X-Forwarded-Proto", b"https"),
            (b"Origin", b"https://127.0.0.1"),
            (b"Content-Type", b"application/x-www-form-urlencoded"),
        ],
        f"key={server.tokens['read']}&next=/reports/%2e%2e/v1/events".encode(),
    )
    assert status == 303, body
    assert b"secure" in [a.strip().lower() for a in headers[b"set-cookie"].split(b";")]
    assert headers[b"location"].startswith(b"/reports/capacity/")
    status, _, _ = call(
        server,
        "POST",
        "/reports/login",
        [(b"Origin", b"http://127.0.0.1"), (b"X-Forwarded-Proto", b"https")],
        f"key={server.tokens['read']}".encode(),
    )
    assert status == 403


def test_a_cookie_stops_working_when_its_key_is_revoked_or_it_expires(server: Server) -> None:
    engine = make_engine(server.db)
    try:
        key, _ = create_key(engine, "soon-revoked", "read")
        value = issue_cookie(SIGNING_KEY, key.key_id, time.time())
        cookie = [(b"Cookie", f"{COOKIE}={value}".encode())]
        assert call(server, "GET", REPORT, cookie)[0] == 200
        revoke_key(engine, key.key_id)
        assert call(server, "GET", REPORT, cookie)[0] == 401
    finally:
        engine.dispose()
    old = issue_cookie(SIGNING_KEY, key_id(server, "read"), time.time() - COOKIE_SECONDS - 1)
    assert call(server, "GET", REPORT, [(b"Cookie", f"{COOKIE}={old}".encode())])[0] == 401


# -- webhook and ingest bodies -----------------------------------------------------------------


def _post(server: Server, path: str, body: bytes, *extra: tuple[bytes, bytes]) -> int:
    headers = [bearer(server.tokens["write"]), *extra]
    if not any(name.lower() == b"content-type" for name, _ in extra):
        headers.append((b"Content-Type", b"application/json"))
    if path == PD:
        headers.append((b"X-PagerDuty-Signature", pd_sign(body).encode()))
    return call(server, "POST", path, headers, body)[0]


EVENT = orjson.dumps(incident_opened(id="attack-ingest"))
GZIP = (b"Content-Encoding", b"gzip")
BODIES: dict[str, tuple[str, bytes, list[tuple[bytes, bytes]], int]] = {
    "pd-deep-nesting": (PD, b"[" * 100_000 + b"]" * 100_000, [], 400),
    "am-deep-nesting": (
        "/v1/webhooks/alertmanager",
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        [],
        400,
    ),
    "pd-invalid-utf8": (PD, b'{"event": {"event_type": "incident.\xff"}}', [], 400),
    "events-invalid-utf8-string": (
        "/v1/events",
        EVENT.replace(b"attack-ingest", b"attack-\xc3("),
        [],
        400,
    ),
    "events-utf16-bom": (
        "/v1/events",
        "\ufeff".encode("utf-16-le") + EVENT.decode().encode("utf-16-le"),
        [],
        400,
    ),
    "events-utf16-charset": (
        "/v1/events",
        EVENT.decode().encode("utf-16"),
        [(b"Content-Type", b"application/json; charset=utf-16")],
        400,
    ),
    "events-utf32": ("/v1/events", EVENT.decode().encode("utf-32"), [], 400),
    "events-multipart": (
        "/v1/events",
        b'--b\r\nContent-Disposition: form-data; name="e"\r\n\r\n' + EVENT + b"\r\n--b--\r\n",
        [(b"Content-Type", b"multipart/form-data; boundary=b")],
        415,
    ),
    "events-json-in-text-plain": ("/v1/events", EVENT, [(b"Content-Type", b"text/plain")], 415),
    "events-gzip": ("/v1/events", gzip.compress(EVENT), [GZIP], 415),
    "alertmanager-gzip": ("/v1/webhooks/alertmanager", gzip.compress(b"{}"), [GZIP], 415),
    "events-1e309": (
        "/v1/events",
        orjson.dumps(pod_status(id="attack-1e309")).replace(b'"restarts":3', b'"restarts":1e309'),
        [],
        400,
    ),
    "events-nan-in-batch": (
        "/v1/events",
        b"["
        + EVENT
        + b","
        + orjson.dumps(pod_status(id="attack-nan")).replace(b'"restarts":3', b'"restarts":NaN')
        + b"]",
        [],
        400,
    ),
}


@pytest.mark.parametrize("case", list(BODIES))
def test_hostile_bodies_are_refused_and_write_nothing(server: Server, case: str) -> None:
    path, body, extra, code = BODIES[case]
    before = server.head()
    assert _post(server, path, body, *extra) == code
    assert server.head() == before
    no_traceback(server)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of `inflated` bytes of JSON whitespace, built without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = b" " * (1 << 20)
    parts = [packer.compress(b"[")]
    parts += [packer.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join([*parts, packer.compress(b"]"), packer.flush()])


def test_a_gzip_bomb_is_never_inflated(server: Server) -> None:
    bomb = gzip_bomb(200 << 20)
    assert bomb[:2] == b"\x1f\x8b" and len(bomb) < 400_000
    before, rss = server.head(), _rss_kib(server.proc.pid)
    start = time.monotonic()
    assert _post(server, "/v1/events", bomb, GZIP) == 415
    assert time.monotonic() - start < 5
    # Far below the 200 MiB it would inflate to.
    assert _rss_kib(server.proc.pid) - rss < 50_000
    assert server.head() == before


# -- many connections at once -----------------------------------------------------------------


def read_all(socks: list[socket.socket], limit: float) -> list[bytes]:
    """What each socket receives until the server closes it, all read together."""
    answers = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + limit
        while sel.get_map() and (left := end - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                chunk = sock.recv(65536)
                answers[sock] += chunk
                if not chunk:
                    sel.unregister(sock)
        assert not sel.get_map(), f"{len(sel.get_map())} answers missing after {limit} s"
    return [answers[sock] for sock in socks]


@pytest.mark.slow
def test_200_concurrent_deliveries_record_each_event_once(backend_url: str, tmp_path: Path) -> None:
    batch = orjson.dumps(
        [incident_opened(id=f"burst-{i}", incident_id=f"INC-B{i}") for i in range(5)]
    )
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Authorization: Bearer {token}\r\nContent-Type: application/cloudevents-batch+json\r\n"
        f"Content-Length: {len(batch)}\r\n\r\n"
    )
    with serve(tmp_path, db=backend_url) as srv:
        socks = [connect(srv) for _ in range(200)]
        try:
            # Every request is on the wire before any answer is read.
            for sock in socks:
                sock.sendall(head.format(token=srv.tokens["write"]).encode() + batch)
            answers = read_all(socks, 60)
        finally:
            for sock in socks:
                sock.close()
        no_traceback(srv)
    bodies = []
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        bodies.append(orjson.loads(answer.partition(b"\r\n\r\n")[2]))
    assert sum(b["accepted"] for b in bodies) == 5
    assert sum(b["duplicates"] for b in bodies) == 5 * 199
    ledger = Ledger.from_url(backend_url)
    try:
        ids = [e.id for e in ledger.read(0, 1000)]
    finally:
        ledger.engine.dispose()
    assert sorted(ids) == [f"burst-{i}" for i in range(5)]


# -- secrets in logs and error bodies ----------------------------------------------------------


def test_a_token_in_a_query_string_is_redacted_in_the_access_log(server: Server) -> None:
    token = server.tokens["read"]
    encoded = token.replace("_", "%5F")
    for target in (f"/v1/events?token={token}", f"{REPORT}?key={encoded}", f"/v1/{token}"):
        status, _, body = call(server, "GET", target)
        assert status in (401, 404)
        assert token.encode() not in body
    time.sleep(0.3)
    log = server.log()
    assert token not in log and encoded not in log and token[4:] not in log
    assert log.count(REDACTED_TOKEN) >= 3


def test_redaction_covers_messages_arguments_and_tracebacks() -> None:
    token = "olk_" + "Ab3-_x" * 7
    try:
        raise ValueError(f"bad token {token} for postgresql+psycopg://ops:hunter2pw@db/x")
    except ValueError:
        record = logging.LogRecord(
            "opsledger.api",
            logging.ERROR,
            __file__,
            1,
            "got %s and %r",
            (token, {"t": token}),
            sys.exc_info(),
        )
    FILTER.filter(record)
    text = logging.Formatter().format(record)
    assert token not in text and "hunter2pw" not in text and text.count(REDACTED_TOKEN) == 3
    assert "postgresql+psycopg://ops:***@db/x" in text
    assert redact(REDACTED_TOKEN) == REDACTED_TOKEN
    assert redact("http://127.0.0.1:8000/v1/events") == "http://127.0.0.1:8000/v1/events"


def test_create_app_puts_the_filter_on_the_handlers_in_place(tmp_path: Path) -> None:
    handler = logging.StreamHandler(stream=open(tmp_path / "log.txt", "w"))  # noqa: SIM115
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        create_app(
            Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", home=tmp_path),
            projections=False,
        )
        assert FILTER in handler.filters
        logging.getLogger("opsledger.api").error("refused olk_%s", "Zz9" * 10)
    finally:
        root.removeHandler(handler)
        handler.close()
    assert (tmp_path / "log.txt").read_text() == f"refused {REDACTED_TOKEN}\n"


def test_secrets_never_reach_the_log_or_an_error_body(server: Server) -> None:
    # Failures that touch each secret: a bad signature, a forged cookie, unknown tokens.
    bodies = [
        call(
            server,
            "POST",
            PD,
            [bearer(server.tokens["write"]), (b"X-PagerDuty-Signature", b"v1=00")],
            b"{}",
        )[2],
        call(server, "GET", REPORT, [(b"Cookie", f"{COOKIE}=v1.x.1.{mac('v1.x.1')}".encode())])[2],
        call(server, "GET", "/v1/events", [bearer(server.tokens["read"] + "x")])[2],
        call(server, "POST", "/reports/login", [], f"key={server.tokens['read']}x".encode())[2],
    ]
    time.sleep(0.3)
    log = server.log()
    secrets = [PD_SECRET, SESSION_KEY, SIGNING_KEY.hex(), *server.tokens.values()]
    for secret in secrets:
        assert secret not in log
        assert all(secret.encode() not in body for body in bodies)
    no_traceback(server)

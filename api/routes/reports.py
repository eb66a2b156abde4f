"""`/reports`: the monthly capacity report as HTML, and a browser's sign-in by cookie.

A browser cannot send `Authorization: Bearer`, and the key must never travel in a URL (it
would land in history, logs and Referer headers). So `POST /reports/login` takes the key from
a form once and answers with a short-lived cookie: `v1.<key id>.<expiry>.<HMAC-SHA256>`,
HttpOnly, SameSite=Strict, Path=/reports, 15 minutes. The cookie carries no secret: it names
the key, and every request checks the key is still active (revoking it ends the sessions).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Annotated, Final
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from analytics.decisions.gather import policy_of
from analytics.outputs.report_data import gather
from analytics.outputs.report_model import (
    Month,
    ReportError,
    UnknownCluster,
    last_complete_month,
)
from analytics.readmodel.projector import Projector
from analytics.readmodel.runner import wait_for
from api.deps import Credentials, LedgerDep, ProjectorDep, SettingsDep
from api.params import ClusterName, text_matching
from api.report.fmt import esc
from api.report.html import CSP, render
from api.schemas import ErrorResponse
from store.keys import ApiKey, active_key, authenticate
from store.ledger import Ledger
from store.prices import PriceTableError
from store.settings import Settings
from store.timefmt import MONTH_PATTERN, utc_now

router = APIRouter(prefix="/reports", tags=["reports"])

MonthText = Annotated[str, text_matching(MONTH_PATTERN)]
COOKIE: Final = "opsledger_report"
#: A sign-in lasts this long; then the browser asks for the key again.
COOKIE_SECONDS: Final = 15 * 60
COOKIE_PATH: Final = "/reports"
#: How long a report request waits for the read model to fold in the ledger's head.
CATCH_UP_SECONDS: Final = 30.0
_MAX_FORM_BYTES: Final = 4096
_NEXT: Final = re.compile(r"/reports/[A-Za-z0-9._~%/?=&-]*")
#: `v1.<key id>.<expiry, Unix seconds>.<HMAC-SHA256, base64url without padding>`, all ASCII.
_COOKIE_VALUE: Final = re.compile(r"v1\.([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")
_MAX_COOKIE_CHARS: Final = 128
_MAX_NEXT_CHARS: Final = 1024
#: Percent-decodings of `next` tried before it is refused as hiding something.
_DECODINGS: Final = 4
#: What `next` may not hold once decoded: controls (CR/LF would split a header), backslashes
#: (a browser reads `/\evil` as `//evil`), and anything outside ASCII.
_UNSAFE_IN_NEXT: Final = re.compile(r"[^\x20-\x7e]|\\")
#: How far ahead of this server's clock another replica's may run.
_CLOCK_SKEW_SECONDS: Final = 60
_PAGE_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_NO_STORE: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# -- the signed cookie ---------------------------------------------------------------------------


def _signing_key(request: Request) -> bytes:
    """The settings' key, or one drawn at random the first time this process needs it."""
    settings: Settings = request.app.state.settings
    configured = settings.report_session_key
    if configured is not None:
        return hashlib.sha256(configured.get_secret_value().encode()).digest()
    key: bytes | None = getattr(request.app.state, "report_signing_key", None)
    if key is None:
        key = request.app.state.report_signing_key = secrets.token_bytes(32)
    return key


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue_cookie(key: bytes, key_id: str, now: float) -> str:
    """A cookie value naming the key, valid for COOKIE_SECONDS from `now`."""
    payload = f"v1.{key_id}.{int(now) + COOKIE_SECONDS}"
    return f"{payload}.{_mac(key, payload)}"


def cookie_key_id(key: bytes, value: str, now: float) -> str | None:
    """The key id a cookie names, if its signature holds and it is within its 15 minutes."""
    # The shape is checked first, in ASCII: hmac.compare_digest raises on non-ASCII text, and
    # str.isdigit() admits digits int() refuses ("²") or that no cookie of ours holds ("١").
    match = _COOKIE_VALUE.fullmatch(value) if len(value) <= _MAX_COOKIE_CHARS else None
    if match is None:
        return None
    key_id, expiry, signature = match.groups()
    if not hmac.compare_digest(_mac(key, f"v1.{key_id}.{expiry}").encode(), signature.encode()):
        return None
    # Never later than a cookie issued now could say: one signed for longer is not ours.
    if not now < int(expiry) <= now + COOKIE_SECONDS + _CLOCK_SKEW_SECONDS:
        return None
    return key_id


async def report_reader(request: Request, ledger: LedgerDep, credentials: Credentials) -> ApiKey:
    """A read key from `Authorization: Bearer`, or from the sign-in cookie."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        key = await run_in_threadpool(authenticate, ledger.engine, credentials.credentials)
        if key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "unknown or revoked API key",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
    else:
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            if "text/html" in request.headers.get("accept", ""):
                # A browser: 303 to the form (the error handler keeps the Location header).
                target = quote(_request_path(request), safe="/")
                raise HTTPException(
                    status.HTTP_303_SEE_OTHER,
                    "sign in first",
                    headers={"Location": f"/reports/login?next={target}", **_NO_STORE},
                )
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing credentials: send Authorization: Bearer <token>, or sign in at "
                "/reports/login",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key_id = cookie_key_id(_signing_key(request), cookie, time.time())
        key = None if key_id is None else await run_in_threadpool(active_key, ledger.engine, key_id)
        if key is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "the sign-in has expired or its key was revoked: sign in again at /reports/login",
                headers={"WWW-Authenticate": "Bearer"},
            )
    if not key.allows("read"):  # every scope includes read today; kept for a narrower scope
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"key {key.key_id} may not read reports")
    return key


report_reader.opsledger_authenticates = True  # type: ignore[attr-defined]
ReportReader = Annotated[ApiKey, Depends(report_reader)]


def _request_path(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{request.url.path}{query}"


def _safe_next(value: str | None, default: str) -> str:
    """`value` normalised, when it is a path that stays under /reports/; else `default`."""
    if not value or len(value) > _MAX_NEXT_CHARS or not value.isascii():
        return default
    raw_path, _, query = value.partition("?")
    # A browser resolves `%2e%2e` as `..` (WHATWG URL), so the path is judged decoded, and
    # decoded again while that changes it: a `%252e` must not survive to a later decoding.
    path = raw_path
    try:
        for _ in range(_DECODINGS):
            decoded = unquote(path, errors="strict")
            if decoded == path:
                break
            path = decoded
        else:
            return default
    except UnicodeDecodeError:
        return default
    if not path.startswith("/") or "//" in path or _UNSAFE_IN_NEXT.search(path):
        return default
    path = _remove_dot_segments(path)
    if not path.startswith("/reports/"):
        return default
    target = quote(path, safe="/")
    if query:
        if _UNSAFE_IN_NEXT.search(unquote(query)):
            return default
        target += "?" + urlencode(parse_qsl(query, keep_blank_values=True), quote_via=quote)
    return target if _NEXT.fullmatch(target) else default


def _remove_dot_segments(path: str) -> str:
    """RFC 3986, 5.2.4: `/a/b/../c/./d` is `/a/c/d`; `..` never climbs above the root."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def _same_origin(request: Request) -> bool:
    """A form post from this site (or from no browser at all): no Origin or Referer elsewhere."""
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == own
    referer = request.headers.get("referer")
    if referer is not None:
        try:
            parts = urlsplit(referer)
        except ValueError:  # e.g. `http://[evil`, an unclosed IPv6 literal: no origin at all
            return False
        return f"{parts.scheme}://{parts.netloc}" == own
    return True


# -- the sign-in form ----------------------------------------------------------------------------


def _login_page(next_path: str, message: str | None, code: int) -> HTMLResponse:
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in: opsledger reports</title>
<style>
body {{ font: 14px/1.5 system-ui, sans-serif; max-width: 28rem; margin: 10vh auto;
  padding: 0 1rem; color: #1a1a1a; }}
label, input, button {{ display: block; width: 100%; }}
input {{ font: inherit; padding: .4rem; margin: .3rem 0 .8rem; }}
button {{ font: inherit; padding: .45rem; }}
.error {{ color: #a01818; font-weight: 600; }}
.note {{ color: #444; font-size: 12px; }}
</style></head><body>
<h1>opsledger reports</h1>
{error}
<form method="post" action="/reports/login">
<label for="key">API key (any scope)</label>
<input id="key" name="key" type="password" autocomplete="current-password" required
 spellcheck="false" autofocus>
<input type="hidden" name="next" value="{esc(next_path)}">
<button type="submit">Sign in</button>
</form>
<p class="note">The key is checked once; the browser then keeps a signed cookie for
{COOKIE_SECONDS // 60} minutes, sent only to /reports. Create a key with
<code>opsledger keys create --name NAME --scope read</code>.</p>
</body></html>
"""
    headers = {**_NO_STORE, "Content-Security-Policy": _PAGE_CSP, "X-Frame-Options": "DENY"}
    return HTMLResponse(body, status_code=code, headers=headers)


@router.get(
    "/login",
    response_class=HTMLResponse,
    summary="The sign-in form for reading reports in a browser",
    responses={200: {"content": {"text/html": {}}, "description": "The form."}},
)
def get_login(
    next_: Annotated[
        str | None, Query(alias="next", description="Where to go after signing in.")
    ] = None,
) -> HTMLResponse:
    """A form that posts the key to `POST /reports/login`; the key never goes in a URL."""
    default = f"/reports/capacity/{last_complete_month(utc_now())}"
    return _login_page(_safe_next(next_, default), None, 200)


@router.post(
    "/login",
    response_class=HTMLResponse,
    summary="Check an API key from the form and set the report cookie",
    status_code=303,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["key"],
                        "properties": {
                            "key": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "next": {"type": "string", "description": "A path under /reports/."},
                        },
                    }
                }
            },
        }
    },
    responses={
        303: {"description": "Signed in: the cookie is set; go to `next`."},
        400: {"content": {"text/html": {}}, "description": "No key in the form."},
        401: {"content": {"text/html": {}}, "description": "Unknown or revoked key."},
        403: {"model": ErrorResponse, "description": "The form was posted from another site."},
        413: {"model": ErrorResponse, "description": "The form is larger than 4 KiB."},
    },
)
async def post_login(request: Request, ledger: LedgerDep) -> Response:
    """`application/x-www-form-urlencoded` fields `key` and `next` (a path under /reports/)."""
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site sign-in refused")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM_BYTES:
            raise HTTPException(413, "the form is too large")
    default = f"/reports/capacity/{last_complete_month(utc_now())}"
    try:
        fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
    except ValueError:  # more fields than the form has: not a browser's post of it
        return _login_page(default, "The form has too many fields.", 400)
    next_path = _safe_next((fields.get("next") or [""])[0], default)
    token = ((fields.get("key") or [""])[0]).strip()
    if not token:
        return _login_page(next_path, "Enter an API key.", 400)
    key = await run_in_threadpool(authenticate, ledger.engine, token)
    if key is None or not key.allows("read"):
        return _login_page(next_path, "Unknown or revoked API key.", 401)
    response = RedirectResponse(next_path, status_code=303, headers=_NO_STORE)
    response.set_cookie(
        COOKIE,
        issue_cookie(_signing_key(request), key.key_id, time.time()),
        max_age=COOKIE_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post(
    "/logout",
    summary="Forget the report cookie",
    status_code=303,
    responses={
        303: {"description": "The cookie is cleared; go to the sign-in form."},
        403: {"model": ErrorResponse, "description": "The form was posted from another site."},
    },
)
def post_logout(request: Request) -> Response:
    """Clear the cookie in this browser (the key itself stays valid)."""
    if not _same_origin(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site sign-out refused")
    response = RedirectResponse("/reports/login", status_code=303, headers=_NO_STORE)
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


# -- the report ----------------------------------------------------------------------------------


def report_headers(month: str, cluster: str | None) -> dict[str, str]:
    """Headers of a served report: inert, private, and named for saving."""
    name = f"opsledger-capacity-{month}{'-' + cluster if cluster else ''}.html"
    return {
        "Content-Security-Policy": f"{CSP}; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
        "Content-Disposition": f'inline; filename="{name}"',
    }


def build_report(
    ledger: Ledger, projector: Projector, month: Month, cluster: str | None, settings: Settings
) -> str:
    """Catch the read model up to the ledger head, then gather and render (blocking)."""
    try:
        policy = policy_of(settings)
    except PriceTableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    head = ledger.head()
    projector.poke()
    if not wait_for(projector.runner, head, CATCH_UP_SECONDS):
        failing = [
            f"{s.name} ({s.last_error.error_type}: {s.last_error.error})"
            for s in projector.runner.status()
            if s.last_error is not None
        ]
        why = f"; failing: {', '.join(failing)}" if failing else ""
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the read model has not caught up with ledger position {head} yet{why}; retry shortly",
            headers={"Retry-After": "10"},
        )
    try:
        report = gather(projector.model.cursor(), ledger, month, cluster, policy=policy)
    except UnknownCluster as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return render(report)


@router.get(
    "/capacity/{month}",
    response_class=HTMLResponse,
    summary="The monthly capacity-planning report (self-contained HTML)",
    responses={
        200: {"content": {"text/html": {}}, "description": "The report."},
        303: {"description": "A browser without credentials: go to the sign-in form."},
        401: {
            "model": ErrorResponse,
            "description": "No, unknown, expired or revoked credentials.",
        },
        403: {"model": ErrorResponse, "description": "The key may not read reports."},
        404: {"model": ErrorResponse, "description": "The read model knows nothing of `cluster`."},
        422: {"model": ErrorResponse, "description": "A malformed month, or one not over yet."},
        503: {
            "model": ErrorResponse,
            "description": "The read model is not open here, or has not caught up in 30 s, or "
            "the price table file (`OPSLEDGER_PRICE_TABLE_FILE`) cannot be read.",
        },
    },
)
def get_capacity_report(
    _key: ReportReader,
    ledger: LedgerDep,
    projector: ProjectorDep,
    settings: SettingsDep,
    month: Annotated[
        MonthText, Path(description="YYYY-MM (1970-01 to 2199-12); a month that has ended.")
    ],
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster.")] = None,
) -> Response:
    """Everything as of the month's end (00:00 UTC on the 1st of the next month); the same
    ledger gives the same bytes. See docs/report.md."""
    try:
        m = Month.parse(month)
        m.check_ended(utc_now())
    except ReportError as exc:
        raise HTTPException(422, str(exc)) from None
    html = build_report(ledger, projector, m, cluster, settings)
    return HTMLResponse(html, headers=report_headers(m.name, cluster))

"""The served report in a real browser (Debian's Chromium through Playwright): sign in with the
cookie form, then every section and chart renders, the decisions open the page and link to
their sections, nothing leaves 127.0.0.1, no console error.

Artifacts (kept by CI with the workspace): `test-artifacts/report-2026-10.png`, a full-page
screenshot, and `test-artifacts/report-2026-10-a4.pdf`, the browser's print to A4.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from report_fixtures import CHARTS, MONTH, SECTIONS, copy_demo
from support.servers import free_port

from api.app import create_app
from store.keys import create_key
from store.ledger import Ledger
from store.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("report-browser")
    url, path = copy_demo(tmp_path_factory, root)
    return Settings(
        database_url=url, home=root, read_model_path=path, projection_interval_seconds=3600
    )


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[tuple[str, str]]:
    """`opsledger serve`'s app on 127.0.0.1 over the demo month: (base URL, a read token)."""
    app = create_app(settings)
    ledger: Ledger = app.state.ledger
    _, token = create_key(ledger.engine, "browser", "read")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_the_report_renders_in_chromium(server: tuple[str, str]) -> None:
    if not CHROMIUM.exists():
        # CI installs it (.ci/run); a missing browser is a broken environment, never a skip.
        pytest.fail("/usr/bin/chromium is missing: apt-get install chromium", pytrace=False)
    from playwright.sync_api import Request, Route, sync_playwright

    base, token = server
    own = urlsplit(base).netloc
    requests: list[str] = []
    blocked: list[str] = []
    problems: list[str] = []

    def guard(route: Route, request: Request) -> None:
        # Anything not for our own server is refused (and recorded) before it leaves.
        if urlsplit(request.url).netloc == own:
            route.continue_()
        else:
            blocked.append(request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 1600})
            page = context.new_page()
            page.route("**/*", guard)
            page.on("request", lambda r: requests.append(r.url))
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # No credentials: the browser is sent to the sign-in form.
            page.goto(f"{base}/reports/capacity/{MONTH}")
            assert urlsplit(page.url).path == "/reports/login"
            page.fill("#key", token)
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert urlsplit(page.url).path == f"/reports/capacity/{MONTH}", page.url
            assert token not in page.url
            (cookie,) = [c for c in context.cookies() if c["name"] == "opsledger_report"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/reports"
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read it

            for key in SECTIONS:
                box = page.locator(f'section[data-section="{key}"]').bounding_box()
                assert box and box["height"] > 20, key
            boxes = page.evaluate(
                """() => [...document.querySelectorAll('figure[data-chart]')].map(f => {
                    const s = f.querySelector('svg').getBoundingClientRect();
                    const shapes = f.querySelectorAll('svg path, svg polygon, svg rect').length;
                    return [f.dataset.chart, s.width, s.height, shapes];
                })"""
            )
            rendered = {name for name, w, h, n in boxes if w > 0 and h > 0 and n > 0}
            assert {name for name, *_ in boxes} == rendered, boxes
            assert set(CHARTS) <= rendered
            # Series, bands and bars have painted area, not only a frame.
            painted = page.evaluate(
                """() => [...document.querySelectorAll(
                    'svg path.series, svg polygon.band, svg polygon.layer, svg rect.bar')]
                    .filter(e => { const b = e.getBoundingClientRect();
                                   return b.width > 0 && b.height >= 0; }).length"""
            )
            assert painted > 50

            # The decisions open the page; each target is a link to its section.
            rows = page.locator('section[data-section="decisions"] tbody tr')
            assert rows.count() > 0
            box = rows.first.bounding_box()
            assert box and box["height"] > 10
            assert page.evaluate(
                """() => { const s = [...document.querySelectorAll('section')];
                    return s[0].id === 'decisions' && s[1].id === 'summary'; }"""
            )
            link = rows.first.locator("a")
            href = link.get_attribute("href")
            assert href and page.locator(f"section{href}").count() == 1
            link.click()
            assert page.evaluate("location.hash") == href
            top = page.evaluate(f"document.querySelector('{href}').getBoundingClientRect().top")
            assert abs(top) < 2, top

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"report-{MONTH}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")

            # Printing: light backgrounds only, and the browser makes an A4 PDF of it.
            page.emulate_media(media="print")
            dark = page.evaluate(
                """() => [...document.querySelectorAll('body, body *')].filter(e => {
                    const m = getComputedStyle(e).backgroundColor.match(/\\d+(\\.\\d+)?/g);
                    if (!m || (m.length === 4 && +m[3] === 0)) return false;
                    return (+m[0] + +m[1] + +m[2]) / 3 < 160;
                }).length"""
            )
            assert dark == 0
            pdf = ARTIFACTS / f"report-{MONTH}-a4.pdf"
            page.pdf(path=str(pdf), format="A4", print_background=True)
            assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000
            print(f"print to A4: {pdf}")
        finally:
            browser.close()

    assert not blocked, blocked
    assert all(urlsplit(u).netloc == own for u in requests), requests
    assert not problems, problems


def test_the_cli_asks_the_server_holding_the_read_model(
    server: tuple[str, str], settings: Settings, tmp_path: Path
) -> None:
    """While the server holds the read model, `opsledger report capacity` gets the same bytes
    from it (api/cli/common.py `delegate_raw`, with a one-off key)."""
    import json
    import os
    import subprocess

    import httpx
    from support.cli import OPSLEDGER

    base, token = server
    announce = settings.server_file
    announce.write_text(json.dumps({"url": base, "pid": os.getpid()}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path / "home"),
        "OPSLEDGER_DATABASE_URL": str(settings.database_url),
        "OPSLEDGER_READ_MODEL_PATH": str(settings.read_model),
    }
    out = tmp_path / "october.html"
    try:
        proc = subprocess.run(
            [str(OPSLEDGER), "report", "capacity", "--month", MONTH, "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        announce.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    served = httpx.get(
        f"{base}/reports/capacity/{MONTH}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert served.status_code == 200
    assert out.read_bytes() == served.content

"""The monthly capacity report: every section and chart, nothing external, escaping, byte-for-byte
regeneration as of the month's end, the CLI, and the route's sign-in."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from report_fixtures import (
    CHARTS,
    CLUSTER,
    DECISION_KINDS,
    HOSTILE_FINDING,
    HOSTILE_NS,
    HOSTILE_POOL,
    HOSTILE_PVC,
    HOSTILE_TITLE,
    HOSTILE_URL,
    MONTH,
    SECTIONS,
    append_raw,
    catch_up,
    copy_demo,
    decisions_ledger,
    hostile_ledger,
)
from support.cli import run_cli
from support.payloads import cloudevent

from analytics.decisions.gather import decisions, policy_of
from analytics.outputs.report_data import gather
from analytics.outputs.report_model import Month, Report, ReportError
from analytics.readmodel.model import ReadModel
from api.report.html import render
from api.routes.reports import COOKIE, cookie_key_id, issue_cookie
from ingest import demo
from store.keys import create_key, revoke_key
from store.ledger import Ledger
from store.prices import PriceTable
from store.settings import Settings
from store.timefmt import parse_rfc3339_us

#: The only elements a report may contain: no script, image, link, frame, object or form.
ALLOWED_TAGS = frozenset(
    {
        *("html", "head", "meta", "title", "style", "body", "header", "nav", "footer"),
        *("section", "div", "span", "p", "h1", "h2", "h3", "h4", "strong", "em", "code", "br"),
        *("ol", "ul", "li", "a", "table", "thead", "tbody", "tr", "th", "td"),
        *("figure", "figcaption", "svg", "g", "line", "rect", "text", "path", "polygon"),
    }
)


def report(url: str, read_model: Path, month: str = MONTH, cluster: str | None = None) -> str:
    """Gather and render the month from a read model file (caught up beforehand)."""
    return render(figures(url, read_model, month, cluster))


def figures(
    url: str,
    read_model: Path,
    month: str = MONTH,
    cluster: str | None = None,
    prices: PriceTable | None = None,
) -> Report:
    """Gather the month from a read model file, with the default policy and `prices`."""
    ledger = Ledger.from_url(url)
    model = ReadModel(read_model)
    policy = replace(policy_of(Settings.model_construct()), prices=prices)
    try:
        return gather(model.cursor(), ledger, Month.parse(month), cluster, policy=policy)
    finally:
        model.close()
        ledger.engine.dispose()


def model_budget(read_model: Path, month: str) -> float | None:
    """The budget of `month` as the read model holds it (the one recorded last)."""
    model = ReadModel(read_model)
    try:
        row = (
            model.cursor()
            .execute("SELECT arg_max(amount, position) FROM budgets WHERE month = ?", [month])
            .fetchone()
        )
    finally:
        model.close()
    return None if row is None else row[0]


def section(html: str, key: str) -> str:
    """The markup of one section of the page."""
    return html.split(f'data-section="{key}"', 1)[1].split("</section>", 1)[0]


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    p.close()
    return p


@pytest.fixture(scope="module")
def demo_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return copy_demo(tmp_path_factory, tmp_path_factory.mktemp("report-demo-copy"))


@pytest.fixture(scope="module")
def demo_html(demo_copy: tuple[str, Path]) -> str:
    return report(*demo_copy)


# -- content ------------------------------------------------------------------------------------


def test_every_section_and_chart_is_there(demo_html: str) -> None:
    doc = parse(demo_html)
    sections = [a.get("data-section") for t, a in doc.tags if t == "section"]
    assert sections == list(SECTIONS)
    charts = {a.get("data-chart") for t, a in doc.tags if t == "figure"}
    missing = [c for c in CHARTS if c not in charts]
    assert not missing, missing
    # Every figure holds an SVG chart with a viewBox (the browser test checks they render).
    for name in charts:
        block = demo_html.split(f'data-chart="{name}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in block and "viewBox=" in block, name
    # The six PVCs soonest to 90 % have a fan chart: history, median line and 80 % band.
    assert {f"pvc-{i}" for i in range(6)} <= charts
    fan = demo_html.split('data-chart="pvc-0"', 1)[1].split("</figure>", 1)[0]
    assert 'class="band"' in fan and 'stroke-dasharray="5 3"' in fan and "next review" in fan


def test_the_summary_says_what_to_expand_and_compares_months(demo_html: str) -> None:
    summary = demo_html.split('data-section="summary"', 1)[1].split("</section>", 1)[0]
    # The demo's Prometheus volume reaches 90 % in November, the GPU pool has no N-1 headroom
    # and the memory-optimized pool runs hot (ingest/demo.py builds all three in).
    assert "prometheus/prometheus-kube-prometheus-stack-prometheus-db" in summary
    assert "node pool gpu" in summary and "N-1" in summary
    assert "node pool memory-optimized" in summary and "sustained run" in summary
    assert "2026-09" in summary and "2026-10" in summary
    assert re.search(r"against a budget of [\d,]+\u00a0USD", summary)  # October's budget
    doc_text = " ".join(parse(demo_html).text)
    assert "ledger position" in doc_text and "as of 2026-11-01 00:00 UTC" in doc_text


def test_figures_are_those_of_the_analytics_functions(demo_copy: tuple[str, Path]) -> None:
    url, path = demo_copy
    ledger = Ledger.from_url(url)
    model = ReadModel(path)
    try:
        report = gather(model.cursor(), ledger, Month.parse(MONTH))
    finally:
        model.close()
        ledger.engine.dispose()
    days = [p.days_to_90 for p in report.storage.ranked if p.days_to_90 is not None]
    assert days == sorted(days)
    prev, cur = report.incidents.previous.total, report.incidents.month.total
    assert cur.incidents > 0 and prev.incidents > 0
    assert report.incidents.month.start == datetime(2026, 10, 1)
    assert report.cost.days_elapsed == 31
    budget = model_budget(path, MONTH)
    assert budget is not None and report.cost.budget == budget
    findings = report.findings.total
    assert findings.opened > 0 and findings.open > 0
    # Open breaches are judged at the month's end, never after it.
    assert all(b.due_at < datetime(2026, 11, 1) for b in report.incidents.month.breaches)


def decision_links(html: str) -> list[tuple[str, str]]:
    """(kind, link target) of every row of the decisions table, in order."""
    rows: list[tuple[str, str]] = []
    for tag, attrs in parse(section(html, "decisions")).tags:
        if tag == "tr" and attrs.get("data-kind"):
            rows.append((str(attrs["data-kind"]), ""))
        elif tag == "a" and rows:
            assert rows[-1][1] == "", "one link per row"
            rows[-1] = (rows[-1][0], str(attrs["href"]))
    return rows


def test_the_decisions_open_the_report_and_link_to_their_sections(demo_html: str) -> None:
    doc = parse(demo_html)
    sections = [a.get("data-section") for t, a in doc.tags if t == "section"]
    assert sections[:2] == ["decisions", "summary"]
    ids = {a["id"] for t, a in doc.tags if t == "section"}
    rows = decision_links(demo_html)
    # The demo's GPU pool has no N-1 headroom left: the first decision is to expand it, now.
    assert rows and rows[0] == ("expand_pool", "#headroom")
    assert all(href.startswith("#") and href[1:] in ids for _, href in rows), rows
    block = section(demo_html, "decisions")
    assert "node pool" in block.lower() and '<span class="bad">now</span>' in block
    for key in ("rightsizing", "network"):
        assert key in ids


@pytest.fixture(scope="module")
def decisions_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return decisions_ledger(tmp_path_factory.mktemp("report-decisions"))


def test_every_kind_of_decision_is_listed_with_its_money_and_section(
    decisions_copy: tuple[str, Path],
) -> None:
    url, path = decisions_copy
    table = PriceTable(currency="USD", storage_gib_month=0.1)
    data = figures(url, path, prices=table)
    html = render(data)
    rows = decision_links(html)
    assert sorted({kind for kind, _ in rows}) == sorted(DECISION_KINDS)
    section_of = {
        "reclaim_workload": "#rightsizing",
        "expand_pool": "#headroom",
        "raise_nodepool_limit": "#headroom",
        "zone_risk": "#headroom",
        "subnet_ips": "#network",
        "expand_pvc": "#storage",
        "budget": "#cost",
    }
    assert all(href == section_of[kind] for kind, href in rows), rows
    # The same list as GET /v1/decisions for the month: judged as of its end, ranked alike.
    ledger_model = ReadModel(path)
    try:
        policy = replace(policy_of(Settings.model_construct()), prices=table)
        api = decisions(ledger_model.cursor(), MONTH, datetime(2026, 11, 1), policy)
    finally:
        ledger_model.close()
    assert [(d.rank, d.kind, d.target, "now" if d.by is None else d.by.isoformat())
            for d in data.decisions.items] == [
        (d["rank"], d["kind"], d["target"], d["by"]) for d in api["items"]
    ]  # fmt: skip
    block = section(html, "decisions")
    assert block.count('<span class="bad">now</span>') == sum(
        1 for d in data.decisions.items if d.by is None
    )
    # The PVC doubles its 100 GiB at the table's 0.1 USD per GiB-month; the reclaim saves.
    assert "costs 10\u00a0USD per month" in block
    assert "saves " in block and "per month" in block
    assert "30\u00a0USD over budget" in block  # 80 USD spent against 50
    # The money column says it: the evidence does not repeat it.
    assert "/month." not in block and "Cost unknown" not in block
    plain = render(figures(url, path))  # no price table: the PVC's cost is unknown, and why
    assert "cost unknown: the price table has no storage_gib_month price" in section(
        plain, "decisions"
    )


def test_the_new_sections_show_their_figures(decisions_copy: tuple[str, Path]) -> None:
    data = figures(*decisions_copy)
    html = render(data)
    rs = section(html, "rightsizing")
    assert [r.workload for r in data.rightsizing.top] == ["web"]
    assert [r.workload for r in data.rightsizing.under] == ["db"]
    assert "shop/Deployment/web/app" in rs and "batch/StatefulSet/db/pg" in rs
    net = section(html, "network")
    assert "subnet-a" in net and "subnet-b" in net and "10.0.0.0/24" in net
    assert [(z.zone, z.available_ips) for z in data.network.zones] == [
        ("us-gov-west-1a", 0),
        ("us-gov-west-1b", 200),
    ]
    room = section(html, "headroom")
    (cpu,) = [
        h for h in data.capacity[0].headroom if h.nodepool == "general" and h.resource == "cpu"
    ]
    assert cpu.requests == pytest.approx(4.1)
    assert cpu.zone_loss is not None and cpu.zone_loss.survives is False
    assert cpu.nodepool_limit is not None and cpu.nodepool_limit.days_to_limit == 0
    assert "us-gov-west-1a: 8.0 cores" in room and '<span class="bad">no</span>' in room
    cost = section(html, "cost")
    assert "Showback by namespace" in cost and "idle (no container held it)" in cost
    shares = [r.share for r in data.showback.rows]
    assert {r.namespace for r in data.showback.rows} == {"shop", "batch", None}
    assert sum(s for s in shares if s is not None) == pytest.approx(1.0)


def test_a_month_without_decisions_says_so(tmp_path: Path) -> None:
    url, path = hostile_ledger(tmp_path)
    html = report(url, path, month="2026-09")
    assert decision_links(html) == []
    assert "No decision for 2026-09" in section(html, "decisions")


def test_nothing_is_fetched_or_linked_outside_the_page(demo_html: str) -> None:
    doc = parse(demo_html)
    assert {t for t, _ in doc.tags} <= ALLOWED_TAGS
    for tag, attrs in doc.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("src", "srcset", "action", "xlink:href", "background"), (tag, name)
            if name == "href":
                assert value is not None and value.startswith("#"), value
    csp = [a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]
    assert "url(" not in demo_html and "@import" not in demo_html
    # The only web addresses are post-mortem links, printed as text in their own cells.
    outside = re.sub(r'<span class="url">[^<]*</span>', "", demo_html)
    assert "http://" not in outside and "https://" not in outside
    assert '<span class="url">https://wiki.ops.example.gov/postmortems/' in demo_html


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    url, path = hostile_ledger(tmp_path)
    html = report(url, path)
    doc = parse(html)
    assert {t for t, _ in doc.tags} <= ALLOWED_TAGS
    assert not any(n.startswith("on") for _, a in doc.tags for n in a)
    text = "".join(doc.text)
    for name in (
        HOSTILE_POOL,
        HOSTILE_NS,
        HOSTILE_PVC,
        HOSTILE_TITLE,
        HOSTILE_URL,
        HOSTILE_FINDING,
    ):
        assert name in text, name  # shown, as text
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "&lt;script&gt;alert(&#x27;ns&#x27;)&lt;/script&gt;" in html
    # The hostile pool ran hot for three hours: it is named in the summary and its chart.
    assert html.count("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;") >= 3


# -- "as of" and byte-for-byte ------------------------------------------------------------------


def test_regeneration_is_byte_identical_and_later_events_change_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url, path = copy_demo(tmp_path_factory, tmp_path / "demo")
    first = report(url, path)
    assert report(url, path) == first
    position = re.search(r"ledger position ([\d,]+)", first)
    assert position is not None
    # Two more days: acknowledgements and resolutions of October's last incidents, November's
    # samples (one stamped 00:00:00 on the 1st), findings, cost of 31 October's next day.
    ledger = Ledger.from_url(url)
    try:
        totals = demo.load(
            ledger, datetime(2026, 11, 1).date(), parse_rfc3339_us("2026-11-03T00:00:00Z")
        )
    finally:
        ledger.engine.dispose()
    assert totals.accepted > 100
    catch_up(url, path)
    assert report(url, path) == first
    # A fact about October recorded late (a restated cost day) does change it, and says so.
    append_raw(
        url,
        [
            cloudevent(
                "opsledger.cost.daily",
                {"date": "2026-10-15", "service": "AmazonEC2", "amount": 5000.0, "currency": "USD"},
                id="late-restatement",
                time="2026-11-02T09:00:00Z",
                cluster=None,
            )
        ],
    )
    catch_up(url, path)
    later = report(url, path)
    assert later != first
    moved = re.search(r"ledger position ([\d,]+)", later)
    assert moved is not None and moved.group(1) != position.group(1)


def test_a_month_must_have_ended() -> None:
    with pytest.raises(ReportError, match="has not ended"):
        Month.parse("2026-11").check_ended(datetime(2026, 11, 30, 23, 59))
    Month.parse("2026-11").check_ended(datetime(2026, 12, 1))
    for bad in ("2026-13", "2026-1", "26-10", "2026-10-01", "<b>", "0000-01", "9999-12"):
        with pytest.raises(ReportError):
            Month.parse(bad)


def test_the_cli_writes_the_same_bytes(demo_copy: tuple[str, Path], tmp_path: Path) -> None:
    import shutil

    url, path = demo_copy
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy2(url.removeprefix("sqlite:///"), home / "ledger.db")
    shutil.copy2(path, home / "analytics.duckdb")
    out = tmp_path / "out" / "october.html"
    r = run_cli(["report", "capacity", "--month", MONTH, "--out", str(out)], home)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and MONTH in r.stderr
    assert out.read_text(encoding="utf-8") == report(
        str(f"sqlite:///{home / 'ledger.db'}"), home / "analytics.duckdb"
    )
    r = run_cli(["report", "capacity", "--month", MONTH, "--out", "-"], home)
    assert r.returncode == 0 and r.stdout == out.read_text(encoding="utf-8")
    for args, code in (
        (["--month", "2026-13"], 2),
        (["--month", "2999-01"], 2),
        (["--month", MONTH, "--cluster", "no-such-cluster"], 4),
    ):
        r = run_cli(["report", "capacity", *args, "--out", str(tmp_path / "x.html")], home)
        assert r.returncode == code, (args, r.stderr)
    assert not (tmp_path / "x.html").exists()


# -- the route and its sign-in -------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Ledger, str]]:
    from api.app import create_app

    root = tmp_path_factory.mktemp("report-route")
    url, path = hostile_ledger(root)
    settings = Settings(
        database_url=url, home=root, read_model_path=path, projection_interval_seconds=3600
    )
    app = create_app(settings)
    ledger: Ledger = app.state.ledger
    _, token = create_key(ledger.engine, "report-reader", "read")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, ledger, token


PATH = f"/reports/capacity/{MONTH}"


def test_the_route_serves_the_report_to_a_bearer_key(
    served: tuple[TestClient, Ledger, str],
) -> None:
    client, _, token = served
    r = client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "private, no-store"
    assert f'filename="opsledger-capacity-{MONTH}.html"' in r.headers["content-disposition"]
    again = client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert again.content == r.content
    only = client.get(
        PATH, params={"cluster": CLUSTER}, headers={"Authorization": f"Bearer {token}"}
    )
    assert only.status_code == 200 and f"cluster {CLUSTER}" in only.text


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/reports/capacity/2026-13", {}, 422),
        ("/reports/capacity/2999-01", {}, 422),
        (PATH, {"cluster": "nope"}, 404),
    ],
)
def test_the_route_refuses_bad_months_and_unknown_clusters(
    served: tuple[TestClient, Ledger, str], path: str, params: dict[str, str], code: int
) -> None:
    client, _, token = served
    r = client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == code, r.text


def test_no_credentials_means_401_or_the_sign_in_form(
    served: tuple[TestClient, Ledger, str],
) -> None:
    client, _, token = served
    client.cookies.clear()
    assert client.get(PATH).status_code == 401
    assert client.get(PATH, headers={"Authorization": "Bearer olk_nope"}).status_code == 401
    # A key in the URL is never taken.
    assert client.get(PATH, params={"key": token, "token": token}).status_code == 401
    r = client.get(PATH, headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/reports/login?next={PATH}"
    form = client.get(r.headers["location"])
    assert form.status_code == 200 and 'method="post"' in form.text
    assert f'name="next" value="{PATH}"' in form.text
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    # `next` stays on this site.
    evil = client.get("/reports/login", params={"next": "//evil.example/x"})
    assert 'value="/reports/capacity/' in evil.text and "evil.example" not in evil.text


def test_the_cookie_flow(served: tuple[TestClient, Ledger, str]) -> None:
    client, _, token = served
    client.cookies.clear()
    r = client.post(
        "/reports/login", data={"key": "olk_wrong", "next": PATH}, follow_redirects=False
    )
    assert (
        r.status_code == 401
        and "Unknown or revoked" in r.text
        and COOKIE not in r.headers.get("set-cookie", "")
    )
    assert client.post("/reports/login", data={"key": ""}).status_code == 400
    cross = client.post(
        "/reports/login",
        data={"key": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross.status_code == 403
    r = client.post("/reports/login", data={"key": token, "next": PATH}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == PATH
    cookie = r.headers["set-cookie"]
    for part in ("HttpOnly", "SameSite=strict", "Path=/reports", "Max-Age=900"):
        assert part.lower() in cookie.lower(), cookie
    assert token not in cookie and token not in r.headers["location"]
    page = client.get(PATH)
    assert (
        page.status_code == 200 and "<h1>Capacity-planning review: October 2026</h1>" in page.text
    )
    # A tampered cookie is refused.
    value = client.cookies[COOKIE]
    client.cookies.set(
        COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/reports"
    )
    assert client.get(PATH).status_code == 401
    # Signing out clears it; a foreign page cannot sign us out.
    client.cookies.set(COOKIE, value, path="/reports")
    assert (
        client.post("/reports/logout", headers={"Origin": "https://evil.example"}).status_code
        == 403
    )
    out = client.post("/reports/logout", follow_redirects=False)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


def test_an_expired_or_revoked_sign_in_is_refused(served: tuple[TestClient, Ledger, str]) -> None:
    client, ledger, _ = served
    client.cookies.clear()
    key, token = create_key(ledger.engine, "short-lived", "read")
    r = client.post("/reports/login", data={"key": token, "next": PATH}, follow_redirects=False)
    value = r.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    client.cookies.set(COOKIE, value, path="/reports")
    assert client.get(PATH).status_code == 200
    revoke_key(ledger.engine, key.key_id)
    assert client.get(PATH).status_code == 401
    client.cookies.clear()


def test_cookies_expire_and_name_only_their_key() -> None:
    secret = b"k" * 32
    now = time.time()
    value = issue_cookie(secret, "abc123", now)
    assert cookie_key_id(secret, value, now) == "abc123"
    assert cookie_key_id(secret, value, now + 901) is None
    assert cookie_key_id(b"other" * 7, value, now) is None
    forged = value.replace("abc123", "def456")
    assert cookie_key_id(secret, forged, now) is None
    assert cookie_key_id(secret, "v1.abc123.notanumber.sig", now) is None

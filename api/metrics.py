"""Prometheus metrics of one app: its requests, and read-model figures computed at scrape time."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics.cost.projection import month_cost
from analytics.incidents.metrics import breaches, metrics
from analytics.storage.forecast import Status
from analytics.storage.projection import forecasts
from store.collectors import states
from store.incident_state import SEVERITIES
from store.settings import Settings
from store.timefmt import NAIVE_EPOCH

log = logging.getLogger("opsledger.metrics")

#: The methods a label may name; anything else is `OTHER` (a client picks the method).
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
#: The route label of a request no route matched (404s): never the raw path.
UNMATCHED: Final = "unmatched"
STATS: Final = ("mean", "median", "p90")
FORECAST_STATUSES: Final[tuple[Status, ...]] = (
    "critical",
    "warning",
    "forecast",
    "ok",
    "insufficient_data",
)
BREACH_KINDS: Final = ("response", "resolution")
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AppMetrics:
    """One app's registry (never the process-global one) and its request instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "opsledger_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "opsledger_http_request_duration_seconds",
            "Time from request to the end of the response, by method and route template.",
            ["method", "route"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )


def route_label(scope: Scope) -> str:
    """The matched route's template (`/v1/incidents/{incident_id}`), bounding label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """ASGI middleware counting requests and timing them, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception that escapes becomes the server's 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "OTHER"
            route = route_label(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(time.perf_counter() - start)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def incident_families(con: Any, now: datetime) -> Iterator[Metric]:
    """MTTA / MTTM / MTTR of this month (UTC) per severity, open incidents and open breaches."""
    start, end = _month_bounds(now)
    groups = metrics(con, start, end, ["severity"])
    opened = _gauge(
        "opsledger_incidents_opened",
        "Incidents opened this month (UTC), by the most severe level each held.",
        ["severity"],
    )
    figures = {
        figure: _gauge(
            f"opsledger_incident_{figure}_seconds",
            f"{label} of the incidents opened this month (UTC), by the most severe level held; "
            "stat is mean, median or p90.",
            ["severity", "stat"],
        )
        for figure, label in (
            ("mtta", "Time to first acknowledgement"),
            ("mttm", "Time to first mitigation"),
            ("mttr", "Time to final resolution"),
        )
    }
    seen = {g["key"]["severity"]: g for g in groups}
    for sev in SEVERITIES:
        g = seen.get(sev)
        opened.add_metric([sev], float(g["count"]) if g else 0.0)
        for figure, family in figures.items():
            for stat in STATS:
                value = g[figure][stat] if g else None
                if value is not None:  # no incident reached the milestone: no sample
                    family.add_metric([sev, stat], float(value))
    yield opened
    yield from figures.values()

    current = dict(
        con.execute(
            "SELECT severity, count(*) FROM incidents WHERE status <> 'resolved' GROUP BY ALL"
        ).fetchall()
    )
    open_now = _gauge(
        "opsledger_incidents_open", "Incidents not resolved now, by current severity.", ["severity"]
    )
    for sev in SEVERITIES:
        open_now.add_metric([sev], float(current.get(sev, 0)))
    yield open_now

    # Every incident ever opened: an open breach can belong to one opened long ago.
    judged = breaches(con, NAIVE_EPOCH, now + timedelta(microseconds=1), now)
    tally = Tally((b["severity"], b["kind"]) for b in judged["items"] if b["open"])
    family = _gauge(
        "opsledger_sla_open_breaches",
        "SLA targets missed and still unmet now, by the severity whose target applied and kind.",
        ["severity", "kind"],
    )
    for sev in SEVERITIES:
        for kind in BREACH_KINDS:
            family.add_metric([sev, kind], float(tally[(sev, kind)]))
    yield family


def storage_families(con: Any, now: datetime) -> Iterator[Metric]:
    """PVCs by forecast status, and each PVC's used ratio and days to 90 %."""
    items = forecasts(con, now)
    by_status = _gauge("opsledger_pvc_forecast_status", "PVCs by forecast status.", ["status"])
    tally = Tally(i["status"] for i in items)
    for status in FORECAST_STATUSES:
        by_status.add_metric([status], float(tally[status]))
    labels = ["cluster", "namespace", "pvc"]
    days = _gauge(
        "opsledger_pvc_days_to_90",
        "Days until the PVC reaches 90 % of its capacity (0 when there; absent when never).",
        labels,
    )
    used = _gauge("opsledger_pvc_used_ratio", "Used ÷ capacity of the PVC now.", labels)
    for i in items:
        key = [i["cluster"], i["namespace"], i["pvc"]]
        if i["days_to_90"] is not None:
            days.add_metric(key, float(i["days_to_90"]))
        if i["used_ratio"] is not None:
            used.add_metric(key, float(i["used_ratio"]))
    yield from (by_status, days, used)


def cost_families(con: Any, today: date) -> Iterator[Metric]:
    """This month's spend, its run-rate projection and the budget; amounts out of range."""
    month = today.strftime("%Y-%m")
    c = month_cost(con, month, today)
    bad = c["out_of_range"]
    # Always there, so an alert can watch it: the figures below are left out while it is > 0.
    out_of_range = _gauge(
        "opsledger_cost_out_of_range_amounts",
        "This month's recorded cost amounts (and budget) beyond the contract's ±1e12, which "
        "leave the spend, projection and budget gauges out (docs/report.md).",
    )
    out_of_range.add_metric([], float(len(bad["amounts"]) + bad["budget"]))
    yield out_of_range
    if not c["days_elapsed"] and c["budget"] is None:
        return
    currency = [c["currency"] or ""]
    for name, doc, value in (
        ("spend", "Spend this month (UTC) to date.", c["spend_to_date"]),
        ("projected", "Spend projected to the end of this month at the run rate.", c["projected"]),
        ("budget", "This month's budget.", c["budget"]),
    ):
        if value is not None and math.isfinite(value):
            family = _gauge(f"opsledger_cost_month_{name}", doc, ["currency"])
            family.add_metric(currency, float(value))
            yield family
    if bad["amounts"] or bad["budget"]:
        return  # over or within budget is unknown
    over = _gauge(
        "opsledger_cost_over_budget", "1 when the projection exceeds the budget by over 10 %."
    )
    over.add_metric([], 1.0 if c["over_budget"] else 0.0)
    yield over


def collector_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """Each collector's health as `GET /v1/collectors` reports it."""
    up = _gauge(
        "opsledger_collector_up",
        "1 when the collector's status is ok; 0 when failing, stale or never run.",
        ["collector"],
    )
    last = _gauge(
        "opsledger_collector_last_success_timestamp_seconds",
        "Unix time of the collector's last successful run.",
        ["collector"],
    )
    failures = _gauge(
        "opsledger_collector_failures", "Failed runs in a row (0 after a success).", ["collector"]
    )
    appended = CounterMetricFamily(
        "opsledger_collector_events_appended",
        "Events the collector appended over all its runs.",
        labels=["collector"],
    )
    runs = CounterMetricFamily(
        "opsledger_collector_runs", "Runs of the collector.", labels=["collector"]
    )
    for r in rows:
        name = [r["name"]]
        up.add_metric(name, 1.0 if r["status"] == "ok" else 0.0)
        if r["last_success_us"] is not None:
            last.add_metric(name, r["last_success_us"] / 1e6)
        failures.add_metric(name, float(r["failures"]))
        appended.add_metric(name, float(r["events_appended"]))
        runs.add_metric(name, float(r["runs"]))
    yield from (up, last, failures, appended, runs)


class LedgerCollector(Collector):
    """The read model's and the ledger's figures, computed when scraped and kept for a while.

    Computing them costs queries (a forecast per PVC among them), so a scrape within
    `cache_seconds` of the last computation is answered from its result.
    """

    def __init__(self, app: FastAPI, cache_seconds: float, forecast_seconds: float) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        self.forecast_seconds = forecast_seconds
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._at = -float("inf")
        # The forecasts cost the most (one per PVC) and move slowest: kept on their own clock.
        self._forecasts: list[Metric] = []
        self._forecasts_at = -float("inf")
        self._errors = _gauge("opsledger_metrics_errors", "")

    def collect(self) -> Iterable[Metric]:
        """The figures, recomputed when older than `cache_seconds`."""
        with self._lock:
            if time.monotonic() - self._at >= self.cache_seconds or not self._cached:
                self._cached = list(self._compute())
                self._at = time.monotonic()
            return list(self._cached)

    def _part(self, name: str, make: Callable[[], Iterable[Metric]]) -> list[Metric]:
        try:
            return list(make())
        except Exception:
            # One part failing (the ledger unreachable, say) must not blank the others.
            log.exception("metrics: computing the %s figures failed", name)
            self._errors.add_metric([name], 1.0)
            return []

    def _compute(self) -> Iterator[Metric]:
        started = time.perf_counter()
        self._errors = _gauge(
            "opsledger_metrics_errors",
            "1 for each part of the figures whose computation failed at this scrape.",
            ["part"],
        )
        state = self.app.state
        now = datetime.now(UTC).replace(tzinfo=None)
        projector = getattr(state, "projector", None)
        up = _gauge("opsledger_read_model_up", "1 when this process holds the read model.")
        up.add_metric([], 1.0 if projector is not None else 0.0)
        yield up
        yield from self._part("collectors", self._collectors)
        if projector is not None:
            con = projector.model.cursor()
            yield from self._part("projections", lambda: self._projections(projector))
            yield from self._part("incidents", lambda: incident_families(con, now))
            yield from self._storage(con, now)
            yield from self._part("cost", lambda: cost_families(con, now.date()))
        yield self._errors
        took = _gauge(
            "opsledger_metrics_compute_seconds",
            "Time the last computation of these figures took (they are cached between scrapes).",
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _storage(self, con: Any, now: datetime) -> list[Metric]:
        if time.monotonic() - self._forecasts_at >= self.forecast_seconds:
            self._forecasts = self._part("storage", lambda: storage_families(con, now))
            self._forecasts_at = time.monotonic()
        return self._forecasts

    def _collectors(self) -> Iterator[Metric]:
        from api.services.collectors import status_rows

        scheduler = getattr(self.app.state, "collectors", None)
        intervals = (
            {n: c.interval_seconds for n, c in scheduler.collectors.items()} if scheduler else {}
        )
        known = states(self.app.state.ledger.engine)
        rows = status_rows(known, intervals, time.time_ns() // 1000)
        success = {s.name: s.last_success_at_us for s in known}
        yield from collector_families(
            [r | {"last_success_us": success.get(r["name"])} for r in rows]
        )

    def _projections(self, projector: Any) -> Iterator[Metric]:
        statuses = projector.runner.status()
        lag = _gauge(
            "opsledger_projection_lag_events",
            "Ledger positions the projection has not folded in yet.",
            ["projection"],
        )
        head = _gauge("opsledger_ledger_head_position", "The ledger's last position.")
        poisoned = _gauge(
            "opsledger_projection_poisoned_events",
            "Events the projection skipped because it cannot apply them (GET /v1/projections).",
            ["projection"],
        )
        failing = _gauge(
            "opsledger_projection_failing",
            "1 while the projection's catch-ups fail for a reason no event is to blame for.",
            ["projection"],
        )
        failed_at = _gauge(
            "opsledger_projection_last_error_timestamp_seconds",
            "Unix time of the failing projection's last error; absent when it is not failing.",
            ["projection"],
        )
        for s in statuses:
            lag.add_metric([s.name], float(s.lag))
            poisoned.add_metric([s.name], float(s.poisoned))
            failing.add_metric([s.name], 0.0 if s.last_error is None else 1.0)
            if s.last_error is not None:
                failed_at.add_metric([s.name], (s.last_error.at - NAIVE_EPOCH).total_seconds())
        if statuses:
            head.add_metric([], float(statuses[0].head))
        yield from (lag, head, poisoned, failing, failed_at)


def install(app: FastAPI, settings: Settings) -> AppMetrics:
    """Give the app its registry, the request middleware and the scrape-time collector."""
    app_metrics = AppMetrics()
    collector = LedgerCollector(
        app, settings.metrics_cache_seconds, settings.metrics_forecast_cache_seconds
    )
    app_metrics.registry.register(collector)
    app.add_middleware(RequestMetrics, metrics=app_metrics)
    app.state.metrics = app_metrics
    return app_metrics

"""The report's charts: the model's figures drawn as inline SVG (svg.py), with their legends."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from markupsafe import Markup

from analytics.outputs.report_model import (
    ClusterCapacity,
    Cost,
    Findings,
    Headroom,
    IncidentFigures,
    Incidents,
    Point,
    PvcFan,
    ResourceTrends,
)
from analytics.thresholds import (
    HEADROOM_TARGET,
    STORAGE_ALERT,
    STORAGE_EXPAND,
    SUSTAINED_UTILIZATION,
)
from api.report import svg
from api.report.fmt import (
    NBSP,
    day,
    epoch_seconds,
    epoch_to_dt,
    minute,
    money,
    num,
    pct,
    short_date,
)

AMBER: Final = "#B26A00"
#: The previous month's bars, beside this month's.
OTHER_BAR: Final = "#A6A6A6"
#: Single nodes' hot runs, beside their node pool's.
NODE_RUN: Final = "#F4A582"
HOUR_S: Final = 3600
#: How a resource is named in text.
RESOURCE: Final = {"cpu": "CPU", "memory": "memory"}

#: A legend's entries: a swatch and its label (plain text).
Legend = tuple[tuple[Markup, str], ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """A figure's SVG, already escaped by svg.py, and its legend (None: the figure has none)."""

    name: str
    svg: Markup
    legend: Legend | None = None


def _legend(items: Sequence[tuple[str, str]]) -> Legend:
    """Swatch SVG (escaped by svg.py) and label pairs."""
    return tuple((Markup(swatch), label) for swatch, label in items)


def _pct_axis(v: float) -> str:
    return f"{num(v * 100, 0)}{NBSP}%"


def _count_axis(v: float) -> str:
    return num(v, 0)


def _ratio_top(values: Sequence[float]) -> float:
    """A percentage axis to 100 %, or to the next 25 % above the data."""
    return svg.nice_max(max(values, default=0.0), 1.0) if values else 1.0


def _color(i: int) -> str:
    return svg.PALETTE[i % len(svg.PALETTE)]


def _xy(points: Sequence[Point]) -> list[tuple[float, float]]:
    return [(epoch_seconds(t), v) for t, v in points]


class MonthAxis:
    """The x axis of the month's charts: its range in epoch seconds and a tick a week."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.x_range = (epoch_seconds(start), epoch_seconds(end))
        self.ticks = svg.time_ticks(*self.x_range, self.x_range[0], 7, short_date)


# -- capacity -----------------------------------------------------------------------------------


def utilisation(axis: MonthAxis, ci: int, r: ResourceTrends) -> Chart:
    """A cluster's hourly utilisation and commitment of one resource."""
    lines = [
        svg.Line("utilisation", _xy(r.utilization), svg.PALETTE[0], gap=1.5 * HOUR_S),
        svg.Line("commitment", _xy(r.commitment), svg.PALETTE[1], gap=1.5 * HOUR_S),
    ]
    top = _ratio_top([p[1] for ln in lines for p in ln.points])
    name = f"cluster-{ci}-{r.resource}"
    chart = svg.line_chart(
        name=name,
        title=f"{RESOURCE[r.resource]}: cluster utilisation and commitment, hourly",
        lines=lines,
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _pct_axis),
        rules=[svg.Rule(SUSTAINED_UTILIZATION, "85 %")],
    )
    legend = [(svg.swatch(ln.color), ln.label) for ln in lines]
    legend.append((svg.swatch(svg.THRESHOLD, "6 4"), "85 % threshold"))
    return Chart(name, Markup(chart), _legend(legend))


def pools(axis: MonthAxis, ci: int, cap: ClusterCapacity, r: ResourceTrends) -> Chart:
    """Hourly utilisation per node pool, their sustained runs shaded."""
    lines = [
        svg.Line(str(p.nodepool), _xy(p.utilization), _color(i), gap=1.5 * HOUR_S)
        for i, p in enumerate(r.pools)
    ]
    colour = {str(p.nodepool): _color(i) for i, p in enumerate(r.pools)}
    shades = [
        svg.Shade(
            epoch_seconds(run.start),
            epoch_seconds(run.end),
            colour.get(str(run.nodepool), svg.THRESHOLD),
            f"{run.nodepool} above 85 % from {minute(run.start)} to "
            f"{minute(run.end)} (max {pct(run.utilization_max)})",
        )
        for run in cap.sustained.runs
        if run.scope == "nodepool" and run.resource == r.resource
    ]
    top = _ratio_top([p[1] for ln in lines for p in ln.points])
    name = f"pools-{ci}-{r.resource}"
    chart = svg.line_chart(
        name=name,
        title=f"{RESOURCE[r.resource]}: utilisation per node pool, hourly",
        lines=lines,
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _pct_axis),
        rules=[svg.Rule(SUSTAINED_UTILIZATION, "85 %")],
        shades=shades,
    )
    return Chart(name, Markup(chart), _legend([(svg.swatch(ln.color), ln.label) for ln in lines]))


def namespaces(axis: MonthAxis, ci: int, r: ResourceTrends, kind: str, title: str) -> Chart:
    """Daily namespace shares of `kind` (commitment or utilization), stacked."""
    ns = r.namespaces
    layers = ns.commitment if kind == "commitment" else ns.utilization
    totals = [sum(col) for col in zip(*(ly.values for ly in layers), strict=True)]
    top = _ratio_top(totals)
    slayers = [
        svg.Layer(ly.name, ly.values, svg.OTHER if ly.other else _color(i))
        for i, ly in enumerate(layers)
    ]
    name = f"ns-{ci}-{r.resource}-{kind}"
    chart = svg.stacked_chart(
        name=name,
        title=title,
        xs=[epoch_seconds(d) + 43200 for d in ns.days],
        layers=slayers,
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _pct_axis),
        rules=[svg.Rule(SUSTAINED_UTILIZATION, "85 %")],
        height=200.0,
    )
    legend = [(svg.swatch(ly.color, area=True), ly.label) for ly in slayers]
    return Chart(name, Markup(chart), _legend(legend))


def sustained(axis: MonthAxis, ci: int, cap: ClusterCapacity) -> Chart | None:
    """A lane per node pool (or cluster) and resource: its runs, and its nodes' runs merged."""
    lanes: dict[tuple[str, str], list[tuple[float, float, str, str]]] = {}
    for run in cap.sustained.runs:
        who = "cluster" if run.scope == "cluster" else str(run.nodepool)
        lanes.setdefault((who, run.resource), []).append(
            (
                epoch_seconds(run.start),
                epoch_seconds(run.end),
                svg.THRESHOLD,
                f"{who} {RESOURCE[run.resource]} above 85 % from "
                f"{minute(run.start)} to {minute(run.end)}, max "
                f"{pct(run.utilization_max)}",
            )
        )
    for agg in cap.sustained.node_runs:
        lanes.setdefault((agg.nodepool, agg.resource), []).extend(
            (
                epoch_seconds(a),
                epoch_seconds(b),
                NODE_RUN,
                f"nodes of {agg.nodepool} above 85 % from {minute(a)} to {minute(b)}",
            )
            for a, b in agg.intervals
        )
    if not lanes:
        return None
    rows = [
        (
            f"{who} · {RESOURCE[res]}",
            sorted(spans, key=lambda s: (s[2] == svg.THRESHOLD, s[0])),
        )
        for (who, res), spans in sorted(lanes.items())
    ]
    name = f"sustained-{ci}"
    chart = svg.timeline_chart(
        name=name,
        title="Sustained runs above 85 % per node pool and resource",
        rows=rows,
        x_range=axis.x_range,
        x_ticks=axis.ticks,
    )
    legend = [
        (svg.swatch(svg.THRESHOLD, area=True), "node pool or cluster run"),
        (svg.swatch(NODE_RUN, area=True), "node runs in the pool"),
    ]
    return Chart(name, Markup(chart), _legend(legend))


def nodes(axis: MonthAxis, ci: int, cap: ClusterCapacity) -> Chart:
    """Hourly average nodes, stacked per node pool."""
    by_pool = cap.counts.nodes_by_pool
    hours = sorted({t for s in by_pool for t, _ in s.points})
    layers = []
    for i, s in enumerate(by_pool):
        byh = dict(s.points)
        layers.append(svg.Layer(str(s.nodepool), [byh.get(h, 0.0) for h in hours], _color(i)))
    totals = [sum(col) for col in zip(*(ly.values for ly in layers), strict=True)]
    top = svg.nice_max(max(totals, default=0.0), 1.0)
    name = f"nodes-{ci}"
    chart = svg.stacked_chart(
        name=name,
        title="Nodes per node pool, hourly average, stacked",
        xs=[epoch_seconds(h) + 1800 for h in hours],
        layers=layers,
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _count_axis),
        height=200.0,
    )
    legend = [(svg.swatch(ly.color, area=True), ly.label) for ly in layers]
    return Chart(name, Markup(chart), _legend(legend))


def pods(axis: MonthAxis, ci: int, cap: ClusterCapacity) -> Chart:
    """Hourly average pods."""
    points = cap.counts.pods
    top = svg.nice_max(max((v for _, v in points), default=0.0), 1.0)
    name = f"pods-{ci}"
    chart = svg.line_chart(
        name=name,
        title="Pods, hourly average",
        lines=[svg.Line("pods", _xy(points), svg.PALETTE[2], gap=1.5 * HOUR_S)],
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _count_axis),
        height=180.0,
    )
    return Chart(name, Markup(chart))


def headroom(name: str, scope: str, h: Headroom, level: float | None) -> Chart:
    """A bullet of the level against 85 % of the allocatable, with and without the largest node."""
    alloc = h.allocatable or 0.0
    n1 = max(alloc - h.largest_node_allocatable, 0.0)
    n1_mark = HEADROOM_TARGET * n1 / alloc if alloc else 0.0
    chart = svg.bullet(
        name=name,
        title=f"{scope}, {RESOURCE[h.resource]}: {pct(level)}",
        value=level or 0.0,
        marks=[
            (HEADROOM_TARGET, svg.THRESHOLD, "85 % of allocatable"),
            (n1_mark, AMBER, "85 % of allocatable without the largest node"),
        ],
        top=max(1.0, level or 0.0),
    )
    return Chart(name, Markup(chart))


# -- storage ------------------------------------------------------------------------------------

STORAGE_LEGEND: Final = _legend(
    [
        (svg.swatch(svg.PALETTE[0]), "used ÷ capacity, 2-hour peaks"),
        (svg.swatch(svg.PALETTE[5], "5 3"), "median forecast"),
        (svg.swatch(svg.PALETTE[5], area=True), "80 % interval"),
        (svg.swatch(AMBER, "6 4"), "85 % alert"),
        (svg.swatch(svg.THRESHOLD, "6 4"), "90 % expand"),
    ]
)


def fan(i: int, p: PvcFan, as_of: datetime, review: datetime) -> Chart:
    """A PVC's last 30 days and its forecast to 90 %: the median line and the 80 % band."""
    f = p.forecast
    x_as_of = epoch_seconds(as_of)
    x0, x1 = x_as_of - 30 * svg.DAY_S, x_as_of + 45 * svg.DAY_S
    top = 1.02
    cap = f.capacity_bytes
    history = [(x, u / cap) for x, u in _xy(p.history)] if cap else []
    r0 = f.used_ratio
    # Zoomed to the data (in 10 % steps), so a slow climb is visible; 100 % stays on top.
    lowest = min([v for _, v in history] + ([r0] if r0 is not None else []), default=0.0)
    step = min(svg.nice_step((1.05 - lowest) / 4), 0.25)
    bottom = max(0.0, min(0.8, math.floor((lowest - 0.05) / step) * step))
    lines = [svg.Line("used ÷ capacity", history, svg.PALETTE[0], width=1.2, gap=3 * HOUR_S)]
    bands = []
    if r0 is not None and r0 < STORAGE_EXPAND:
        median = _projection(x_as_of, r0, f.eta_90, x1, top)
        early = _projection(x_as_of, r0, f.eta_90_low, x1, top)
        late = _projection(x_as_of, r0, f.eta_90_high, x1, top)
        if early and late is None:
            late = [(x_as_of, r0), (x1, r0)]  # the slow end never reaches 90 %: flat
        if early and late:
            bands.append(svg.Band("80 % interval", early, late, svg.PALETTE[5], 0.22))
        if median:
            lines.append(svg.Line("median forecast", median, svg.PALETTE[5], dash="5 3"))
    name = f"pvc-{i}"
    chart = svg.line_chart(
        name=name,
        title=f"{f.namespace}/{f.pvc}: used ÷ capacity and forecast",
        lines=lines,
        bands=bands,
        x_range=(x0, x1),
        y_range=(bottom, top),
        x_ticks=svg.time_ticks(x0, x1, x_as_of, 14, short_date),
        y_ticks=svg.value_ticks(1.0, _pct_axis, bottom),
        rules=[
            svg.Rule(STORAGE_ALERT, "85 %", AMBER, anchor="start"),
            svg.Rule(STORAGE_EXPAND, "90 %"),
        ],
        markers=[(x_as_of, "month end"), (epoch_seconds(review), "next review")],
        height=230.0,
        width=420.0,
    )
    return Chart(name, Markup(chart))


def _projection(
    as_of: float, r0: float, eta: datetime | None, x1: float, top: float
) -> list[tuple[float, float]] | None:
    """A straight line from (as_of, r0) through (eta, 90 %), cut at the chart's edge or top."""
    if eta is None:
        return None
    t90 = epoch_seconds(eta)
    if t90 <= as_of:
        return None
    slope = (STORAGE_EXPAND - r0) / (t90 - as_of)
    end_x = x1
    if slope > 0 and r0 + slope * (x1 - as_of) > top:
        end_x = as_of + (top - r0) / slope
    pts = [(as_of, r0), (end_x, r0 + slope * (end_x - as_of))]
    if end_x < x1:
        pts.append((x1, top))
    return pts


# -- findings, incidents, cost ------------------------------------------------------------------


def findings(f: Findings) -> Chart:
    """Findings first seen, resolved and open per severity."""
    rows = [s.counts for s in f.by_severity]
    chart = svg.bar_chart(
        name="findings",
        title="Findings per severity: first seen, resolved, open at the month's end",
        categories=[s.severity for s in f.by_severity],
        groups=[
            ("first seen", [c.opened for c in rows], svg.PALETTE[0]),
            ("resolved", [c.resolved for c in rows], svg.PALETTE[2]),
            ("open at end", [c.open for c in rows], svg.PALETTE[5]),
        ],
        y_fmt=_count_axis,
    )
    legend = [
        (svg.swatch(svg.PALETTE[0], area=True), "first seen this month"),
        (svg.swatch(svg.PALETTE[2], area=True), "resolved this month"),
        (svg.swatch(svg.PALETTE[5], area=True), "open at the month's end"),
    ]
    return Chart("findings", Markup(chart), _legend(legend))


def _hours(v: float) -> str:
    return f"{num(v, 1 if 0 < v < 10 else 0)}{NBSP}h"


def medians(inc: Incidents, figure: str, month: str, previous: str) -> Chart:
    """MTTA or MTTR (`figure`) median per severity, this month beside the previous one."""

    def hours(rows: Sequence[IncidentFigures]) -> list[float | None]:
        durations = [r.mtta if figure == "mtta" else r.mttr for r in rows]
        return [None if d is None or d.median is None else d.median / 3600 for d in durations]

    name = f"{figure}-by-severity"
    chart = svg.bar_chart(
        name=name,
        title=f"{figure.upper()} median per severity, hours: {month} against {previous}",
        categories=[str(r.severity) for r in inc.month.by_severity],
        groups=[
            (previous, hours(inc.previous.by_severity), OTHER_BAR),
            (month, hours(inc.month.by_severity), svg.PALETTE[0]),
        ],
        y_fmt=_hours,
        height=180.0,
    )
    legend = [
        (svg.swatch(OTHER_BAR, area=True), previous),
        (svg.swatch(svg.PALETTE[0], area=True), month),
    ]
    return Chart(name, Markup(chart), _legend(legend))


def cost(axis: MonthAxis, c: Cost) -> Chart | None:
    """Daily spend as bars, and the cumulative spend with its projection against the budget."""
    # Only drawn when every amount is in range: then every day has an amount.
    daily = [(epoch_seconds(_midnight(d.day)), d.amount) for d in c.daily if d.amount is not None]
    if not daily and c.budget is None:
        return None
    cur = c.currency
    x0, x1 = axis.x_range
    bars = svg.time_bars(
        name="cost-daily",
        title="Daily spend",
        bars=daily,
        width_s=svg.DAY_S,
        x_range=axis.x_range,
        x_ticks=axis.ticks,
        y_fmt=_money_axis,
        color=svg.PALETTE[0],
        label=_day_label(cur),
    )
    cumulative: list[tuple[float, float]] = []
    total = 0.0
    for x, v in daily:
        total += v
        cumulative.append((x + svg.DAY_S, total))
    lines = [svg.Line("spend to date", [(x0, 0.0), *cumulative], svg.PALETTE[0], width=2)]
    if cumulative and c.projected is not None and cumulative[-1][0] < x1:
        lines.append(
            svg.Line(
                "projection at the run rate",
                [cumulative[-1], (x1, c.projected)],
                svg.PALETTE[0],
                dash="5 3",
            )
        )
    rules = []
    if c.budget is not None:
        rules = [
            svg.Rule(c.budget, f"budget {money(c.budget, cur)}", svg.PALETTE[2], "1 0", "start"),
            svg.Rule(c.budget * 1.1, "budget + 10 %", svg.THRESHOLD),
        ]
    top = svg.nice_max(max([total, c.projected or 0.0, (c.budget or 0.0) * 1.15]), 1.0)
    line = svg.line_chart(
        name="cost-cumulative",
        title="Spend to date against the budget",
        lines=lines,
        x_range=axis.x_range,
        y_range=(0.0, top),
        x_ticks=axis.ticks,
        y_ticks=svg.value_ticks(top, _money_axis),
        rules=rules,
        height=200.0,
    )
    legend = [
        (svg.swatch(svg.PALETTE[0], area=True), "daily spend"),
        (svg.swatch(svg.PALETTE[0]), "spend to date"),
        (svg.swatch(svg.PALETTE[0], "5 3"), "projection"),
        (svg.swatch(svg.PALETTE[2]), "budget"),
        (svg.swatch(svg.THRESHOLD, "6 4"), "budget + 10 %"),
    ]
    return Chart("cost", Markup(bars + line), _legend(legend))


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def _money_axis(v: float) -> str:
    return money(v, None)


def _day_label(currency: str | None) -> Callable[[float, float], str]:
    def label(x: float, v: float) -> str:
        return f"{day(epoch_to_dt(x))}: {money(v, currency)}"

    return label

"""The monthly capacity report as one self-contained HTML page (inline CSS and SVG, no script).

`render(data)` turns `analytics.outputs.report_data.gather()`'s figures into the page. Every
text that comes from the ledger is escaped with `html.escape`; nothing refers to another document (a
post-mortem URL is printed as text, not linked), and the Content-Security-Policy meta tag
forbids fetching anything, so the file opens the same air-gapped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from api.report import svg
from api.report.fmt import (
    DASH,
    NBSP,
    OUT_OF_RANGE,
    count,
    day,
    days,
    duration,
    epoch_to_dt,
    esc,
    minute,
    money,
    month_title,
    num,
    parse_iso,
    pct,
    points,
    short_date,
    size,
)
from api.report.style import CSS
from store.datamodels import MAX_AMOUNT

#: No fetch of any kind, no script, no form, no frame: the page is inert wherever it is opened.
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
HOT: Final = 0.85
ALERT: Final = 0.85
EXPAND: Final = 0.90
AMBER: Final = "#B26A00"
#: The bound the contract puts on one amount, as the report prints it.
_LIMIT: Final = num(MAX_AMOUNT, 0)
HOUR_S: Final = 3600
_RESOURCE: Final = {"cpu": "CPU", "memory": "memory"}
_SECTIONS: Final = (
    ("summary", "Executive summary"),
    ("utilisation", "Cluster and node pool utilisation"),
    ("namespaces", "Namespaces"),
    ("sustained", "Sustained-hot windows"),
    ("counts", "Node and pod counts"),
    ("headroom", "N-1 headroom"),
    ("storage", "Storage: PVCs by days to 90 %"),
    ("findings", "Security findings"),
    ("incidents", "Incidents and SLA"),
    ("cost", "Cost against budget"),
    ("method", "How this report is made"),
)


def render(data: dict[str, Any]) -> str:
    """The whole page for the figures of one month."""
    r = _Report(data)
    return r.page()


def _e(v: object) -> str:
    return esc(v)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    """A legend: (swatch SVG, label) pairs."""
    inner = "".join(f"<li>{sw}{_e(label)}</li>" for sw, label in items)
    return f'<ul class="legend">{inner}</ul>'


def _figure(name: str, chart: str, caption: str, legend: str = "") -> str:
    return (
        f'<figure class="chart" data-chart="{_e(name)}">{chart}{legend}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _table(
    head: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]], total: bool = False
) -> str:
    """A table; head is (label, numeric) pairs, cells are escaped HTML; `total`: last row sums."""
    num_cls = ' class="n"'
    th = "".join(f"<th{num_cls if n else ''}>{label}</th>" for label, n in head)
    body = []
    for k, row in enumerate(rows):
        tds = "".join(
            f"<td{num_cls if head[i][1] else ''}>{cell}</td>" for i, cell in enumerate(row)
        )
        cls = ' class="total"' if total and k == len(rows) - 1 else ""
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pct_axis(v: float) -> str:
    return f"{num(v * 100, 0)}{NBSP}%"


def _ratio_top(values: Sequence[float]) -> float:
    """A percentage axis to 100 %, or to the next 25 % above the data."""
    return svg.nice_max(max(values, default=0.0), 1.0) if values else 1.0


def _color(i: int) -> str:
    return svg.PALETTE[i % len(svg.PALETTE)]


class _Report:
    """Renders the sections of one report."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.d = data
        self.start = parse_iso(data["start"])
        self.end = parse_iso(data["as_of"])
        self.x0 = (self.start - epoch_to_dt(0)).total_seconds()
        self.x1 = (self.end - epoch_to_dt(0)).total_seconds()
        self.month_ticks = svg.time_ticks(self.x0, self.x1, self.x0, 7, short_date)
        self.multi = len(data["clusters"]) > 1

    # -- page -----------------------------------------------------------------------------------

    def page(self) -> str:
        d = self.d
        title = f"Capacity-planning review: {month_title(d['month'])}"
        scope = f"cluster {d['cluster']}" if d["cluster"] else "all clusters"
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="opsledger report capacity">',
            f"<title>{_e(title)} ({_e(scope)})</title>",
            f"<style>{CSS}</style></head><body>",
            "<header>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{_e(scope.capitalize())}{self.cluster_list()}'
            f" · {_e(day(d['start']))} to {_e(day(d['as_of']))} (UTC) · as of "
            f"{_e(minute(d['as_of']))} UTC · ledger position {count(d['ledger_position'])} · "
            f"next review as of {_e(day(d['next_review']))}</p>",
            "</header>",
            self.nav(),
            self.summary(),
            self.utilisation(),
            self.namespaces(),
            self.sustained(),
            self.counts(),
            self.headroom(),
            self.storage(),
            self.findings(),
            self.incidents(),
            self.cost(),
            self.method(),
            "<footer>",
            f"<p>opsledger capacity report for {_e(d['month'])}"
            f"{', cluster ' + _e(d['cluster']) if d['cluster'] else ''}: the ledger up to "
            f"position {count(d['ledger_position'])}, judged as of {_e(minute(d['as_of']))} UTC. "
            f"Regenerate with <code>opsledger report capacity --month {_e(d['month'])}"
            f"{' --cluster ' + _e(d['cluster']) if d['cluster'] else ''} --out FILE.html</code>."
            "</p></footer>",
            "</body></html>",
        ]
        return "\n".join(parts) + "\n"

    def cluster_list(self) -> str:
        if self.d["cluster"] or not self.d["clusters"]:
            return ""
        return f" ({_e(', '.join(self.d['clusters']))})"

    def nav(self) -> str:
        items = "".join(
            f'<li><a class="toc" href="#{key}">{_e(label)}</a></li>' for key, label in _SECTIONS
        )
        return f'<nav aria-label="Contents"><ol>{items}</ol></nav>'

    def section(self, key: str, body: str, major: bool = True) -> str:
        label = dict(_SECTIONS)[key]
        cls = "major" if major else ""
        return (
            f'<section id="{key}" data-section="{key}" class="{cls}">'
            f"<h2>{_e(label)}</h2>{body}</section>"
        )

    def cluster_heading(self, cluster: str) -> str:
        return f"<h3>Cluster {_e(cluster)}</h3>" if self.multi else ""

    def pool_name(self, cluster: str, pool: str | None) -> str:
        name = "whole cluster" if pool is None else f"node pool {pool}"
        return f"{cluster}: {name}" if self.multi else name

    # -- executive summary ------------------------------------------------------------------------

    def summary(self) -> str:
        s = self.d["summary"]
        review = day(self.d["next_review"])
        inc, prev = s["incidents"]["month"], s["incidents"]["previous"]
        cost = s["cost"]
        cards = [
            self.card(
                "Node pools to expand",
                str(len({(e["cluster"], e["nodepool"]) for e in s["expand"]})),
                f"passing 85 % or out of N-1 headroom before {review}",
                "bad" if s["expand"] else "good",
            ),
            self.card(
                "PVCs reaching 90 %",
                str(len(s["pvcs"])),
                f"before the next review ({review}), counting the 80 % interval's early end",
                "bad" if any(p["likely"] for p in s["pvcs"]) else ("warn" if s["pvcs"] else "good"),
            ),
            self.card(
                "Incidents",
                f"{count(inc['incidents'])}",
                f"{count(prev['incidents'])} in {self.d['previous_month']}; response breaches "
                f"{count(inc['response_breaches'])} (was {count(prev['response_breaches'])})",
                "bad" if inc["response_breaches"] > prev["response_breaches"] else "",
            ),
            self.cost_card(cost),
        ]
        body = [f'<div class="cards">{"".join(cards)}</div>']
        body.append("<h3>What to expand, by when</h3>")
        if s["expand"]:
            rows = []
            for e in s["expand"]:
                basis = "commitment" if e["basis"] == "requests" else "utilisation"
                rows.append(
                    [
                        f'<span class="name">{_e(self.pool_name(e["cluster"], e["nodepool"]))}'
                        "</span>",
                        _e(_RESOURCE[e["resource"]]),
                        f"{_e(basis)} {pct(e['level'])}",
                        "; ".join(_e(self.reason(r, e)) for r in e["reasons"]),
                        f'<span class="{"bad" if e["by_days"] == 0 else "warn"}">'
                        f"{'now' if e['by_days'] == 0 else _e(day(e['by']))}</span>",
                    ]
                )
            body.append(
                _table(
                    [
                        ("Scope", False),
                        ("Resource", False),
                        ("Level", False),
                        ("Why", False),
                        ("By", False),
                    ],
                    rows,
                )
            )
        else:
            body.append(
                '<p class="empty">No node pool passes 85 %, runs hot, or runs out of N-1 '
                f"headroom before {_e(review)}.</p>"
            )
        body.append(f"<h3>PVCs reaching 90 % before {_e(review)}</h3>")
        if s["pvcs"]:
            rows = [
                [
                    f'<span class="name">{_e(p["namespace"])}/{_e(p["pvc"])}</span>'
                    + (f" ({_e(p['cluster'])})" if self.multi else ""),
                    pct(p["used_ratio"]),
                    _e(day(p["eta_90"])) if p["eta_90"] else "not forecast",
                    _e(_interval(p["eta_90_low"], p["eta_90_high"])),
                    '<span class="bad">expand</span>'
                    if p["likely"]
                    else '<span class="warn">watch</span>',
                ]
                for p in s["pvcs"]
            ]
            body.append(
                _table(
                    [
                        ("PVC", False),
                        ("Used now", True),
                        ("90 % on", True),
                        ("80 % interval", True),
                        ("Action", False),
                    ],
                    rows,
                )
            )
        else:
            body.append(
                f'<p class="empty">No PVC is forecast to reach 90 % before {_e(review)}.</p>'
            )
        body.append("<h3>Incidents, SLA and findings against the previous month</h3>")
        body.append(self.compare_table(inc, prev))
        f = s["findings"]
        body.append(
            f"<p>Security findings: {count(f['opened'])} first seen this month, "
            f"{count(f['resolved'])} resolved, {count(f['open'])} still open at the month's end "
            f"({count(f['open_critical_high'])} of them critical or high).</p>"
        )
        body.append("<h3>Cost</h3>")
        body.append(f"<p>{self.cost_sentence(cost)}</p>")
        return self.section("summary", "".join(body), major=False)

    def card(self, label: str, big: str, note: str, cls: str) -> str:
        return (
            f'<div class="card"><div class="label">{_e(label)}</div>'
            f'<div class="big {cls}">{_e(big)}</div><div>{_e(note)}</div></div>'
        )

    def reason(self, r: dict[str, Any], e: dict[str, Any]) -> str:
        basis = "commitment" if e["basis"] == "requests" else "utilisation"
        trend = (
            f" (trend {points(e['growth_per_day'], 2)}/day)"
            if e["growth_per_day"] is not None
            else ""
        )
        kind = r["kind"]
        if kind == "now":
            return f"{basis} at or above 85 %"
        if kind == "reaches":
            return f"{basis} reaches 85 % in {days(r['days'])}{trend}"
        if kind == "n1_now":
            return "N-1: without its largest node it is already above 85 %"
        if kind == "n1":
            return f"N-1 headroom runs out in {days(r['days'])}{trend}"
        return (
            f"{count(r['runs'])} sustained run(s) above 85 % this month, longest "
            f"{duration(r['longest_seconds'])}"
        )

    def compare_table(self, inc: dict[str, Any], prev: dict[str, Any]) -> str:
        def median(g: dict[str, Any] | None) -> str:
            return duration(g["median"]) if g and g["median"] is not None else DASH

        rows = [
            ["Incidents opened", count(inc["incidents"]), count(prev["incidents"])],
            [
                "Response breaches",
                count(inc["response_breaches"]),
                count(prev["response_breaches"]),
            ],
            [
                "Resolution breaches",
                count(inc["resolution_breaches"]),
                count(prev["resolution_breaches"]),
            ],
            ["Breach rate", pct(inc["breach_rate"]), pct(prev["breach_rate"])],
            ["MTTA, median", median(inc["mtta"]), median(prev["mtta"])],
            ["MTTR, median", median(inc["mttr"]), median(prev["mttr"])],
        ]
        return _table(
            [("", False), (_e(self.d["month"]), True), (_e(self.d["previous_month"]), True)],
            [[_e(r[0]), r[1], r[2]] for r in rows],
        )

    def cost_card(self, c: dict[str, Any]) -> str:
        cur = c["currency"]
        bad = c["out_of_range"]
        if bad["amounts"]:
            n = len(bad["amounts"])
            note = f"{count(n)} recorded amount{'s' if n != 1 else ''} beyond ±{_LIMIT}: see Cost"
            return self.card("Spend against budget", OUT_OF_RANGE, note, "bad")
        return self.card(
            "Spend against budget",
            pct(c["projected_vs_budget"], 0) if c["budget"] else DASH,
            f"{money(c['spend_to_date'], cur)} spent of "
            + (OUT_OF_RANGE if bad["budget"] else money(c["budget"], cur))
            + (" · over budget (> 10 %)" if c["over_budget"] else ""),
            "bad" if c["over_budget"] or bad["budget"] else "good",
        )

    def cost_sentence(self, c: dict[str, Any]) -> str:
        bad = c["out_of_range"]
        if bad["amounts"]:
            n = len(bad["amounts"])
            return f'<span class="bad">Spend {OUT_OF_RANGE}</span>: ' + _e(
                f"{count(n)} daily amount{'s' if n != 1 else ''} recorded for this month "
                f"lie beyond ±{_LIMIT} {c['currency'] or ''}, more than any real bill "
                "(the ledger took them before amounts were bounded), so the month's spend, "
                "its projection and the budget check are not computed. Record the right "
                "amount for each day and service below: the amount recorded last replaces "
                "the earlier ones."
            )
        if c["budget"] is None and not c["spend_to_date"] and not bad["budget"]:
            return "No spend and no budget recorded for this month."
        cur = c["currency"]
        text = (
            f"{money(c['spend_to_date'], cur)} spent over {count(c['days_elapsed'])} of "
            f"{count(c['days_in_month'])} days"
        )
        if c["projected"] is not None and c["days_elapsed"] < c["days_in_month"]:
            text += f", projected {money(c['projected'], cur)} at the run rate"
        if bad["budget"]:
            return (
                f"{_e(text)}; the budget set for this month is "
                f'<span class="bad">{OUT_OF_RANGE}</span> '
                + _e(f"(beyond ±{_LIMIT}): it is not checked; set it again.")
            )
        if c["budget"] is None:
            return _e(text + "; no budget set.")
        status = (
            '<span class="bad">over budget (more than 10 % above)</span>'
            if c["over_budget"]
            else '<span class="good">within budget</span>'
        )
        return (
            f"{_e(text)}, against a budget of {_e(money(c['budget'], cur))} "
            f"({_e(pct(c['projected_vs_budget']))} of it): {status}."
        )

    # -- utilisation ----------------------------------------------------------------------------

    def month_chart_range(self) -> tuple[float, float]:
        return self.x0, self.x1

    def utilisation(self) -> str:
        body = [
            "<p>Hourly averages over the month (UTC). Utilisation = usage ÷ allocatable; "
            "commitment = requests ÷ allocatable (requests are known per namespace, so only the "
            "whole cluster has a commitment). The red line is the 85 % threshold; shaded strips "
            "are the node pool's sustained runs above it (at least 1 h).</p>"
        ]
        if not self.d["capacity"]:
            body.append('<p class="empty">No capacity samples in this month.</p>')
        for ci, cap in enumerate(self.d["capacity"]):
            body.append(self.cluster_heading(cap["cluster"]))
            for res in ("cpu", "memory"):
                r = cap["resources"][res]
                label = _RESOURCE[res]
                lines = [
                    svg.Line("utilisation", r["utilization"], svg.PALETTE[0], gap=1.5 * HOUR_S),
                    svg.Line("commitment", r["commitment"], svg.PALETTE[1], gap=1.5 * HOUR_S),
                ]
                top = _ratio_top([p[1] for ln in lines for p in ln.points])
                chart = svg.line_chart(
                    name=f"cluster-{ci}-{res}",
                    title=f"{label}: cluster utilisation and commitment, hourly",
                    lines=lines,
                    x_range=self.month_chart_range(),
                    y_range=(0.0, top),
                    x_ticks=self.month_ticks,
                    y_ticks=svg.value_ticks(top, _pct_axis),
                    rules=[svg.Rule(HOT, "85 %")],
                )
                body.append(
                    _figure(
                        f"cluster-{ci}-{res}",
                        chart,
                        f"{_e(label[0].upper() + label[1:])}, whole cluster: utilisation averaged "
                        f"{pct(r['utilization_month']['mean'])} (peak hour "
                        f"{pct(r['utilization_month']['peak'])}); commitment averaged "
                        f"{pct(r['commitment_month']['mean'])}.",
                        _legend(
                            [(svg.swatch(ln.color), ln.label) for ln in lines]
                            + [(svg.swatch(svg.THRESHOLD, "6 4"), "85 % threshold")]
                        ),
                    )
                )
                body.append(self.pool_chart(ci, cap, res))
            body.append(self.pool_table(cap))
        return self.section("utilisation", "".join(body))

    def pool_chart(self, ci: int, cap: dict[str, Any], res: str) -> str:
        r = cap["resources"][res]
        label = _RESOURCE[res]
        lines = [
            svg.Line(str(p["nodepool"]), p["utilization"], _color(i), gap=1.5 * HOUR_S)
            for i, p in enumerate(r["pools"])
        ]
        colour = {str(p["nodepool"]): _color(i) for i, p in enumerate(r["pools"])}
        shades = [
            svg.Shade(
                _sec(run["start"]),
                _sec(run["end"]),
                colour.get(str(run["nodepool"]), svg.THRESHOLD),
                f"{run['nodepool']} above 85 % from {minute(run['start'])} to "
                f"{minute(run['end'])} (max {pct(run['utilization_max'])})",
            )
            for run in cap["sustained"]["runs"]
            if run["scope"] == "nodepool" and run["resource"] == res
        ]
        top = _ratio_top([p[1] for ln in lines for p in ln.points])
        name = f"pools-{ci}-{res}"
        chart = svg.line_chart(
            name=name,
            title=f"{label}: utilisation per node pool, hourly",
            lines=lines,
            x_range=self.month_chart_range(),
            y_range=(0.0, top),
            x_ticks=self.month_ticks,
            y_ticks=svg.value_ticks(top, _pct_axis),
            rules=[svg.Rule(HOT, "85 %")],
            shades=shades,
        )
        caption = (
            f"{_e(label[0].upper() + label[1:])} utilisation per node pool."
            if lines
            else f"No node pool reported {_e(label)} this month."
        )
        return _figure(
            name,
            chart,
            caption,
            _legend([(svg.swatch(ln.color), ln.label) for ln in lines]),
        )

    def pool_table(self, cap: dict[str, Any]) -> str:
        runs: dict[tuple[str, str], int] = {}
        for run in cap["sustained"]["runs"]:
            if run["scope"] == "nodepool":
                key = (str(run["nodepool"]), str(run["resource"]))
                runs[key] = runs.get(key, 0) + 1
        rows = []
        for res in ("cpu", "memory"):
            for p in cap["resources"][res]["pools"]:
                m = p["month"]
                above = m["hours_above"]
                rows.append(
                    [
                        f'<span class="name">{_e(p["nodepool"])}</span>',
                        _e(_RESOURCE[res]),
                        pct(m["mean"]),
                        pct(m["peak"]),
                        _e(minute(m["peak_at"])),
                        f'<span class="{"bad" if above else ""}">{count(above)}</span>',
                        count(runs.get((str(p["nodepool"]), res), 0)),
                    ]
                )
        if not rows:
            return ""
        return "<h4>Node pools this month</h4>" + _table(
            [
                ("Node pool", False),
                ("Resource", False),
                ("Mean", True),
                ("Peak hour", True),
                ("Peak at (UTC)", True),
                ("Hours above 85 %", True),
                ("Sustained runs", True),
            ],
            rows,
        )

    # -- namespaces -----------------------------------------------------------------------------

    def namespaces(self) -> str:
        body = [
            "<p>Daily averages, stacked: each namespace's share of the cluster's allocatable. "
            "Commitment shares (requests) add up to the cluster's commitment, so the stack's "
            f"top is the cluster; the {count(7)} biggest namespaces are drawn one by one and the "
            "rest summed.</p>"
        ]
        if not self.d["capacity"]:
            body.append('<p class="empty">No namespace samples in this month.</p>')
        for ci, cap in enumerate(self.d["capacity"]):
            body.append(self.cluster_heading(cap["cluster"]))
            for res in ("cpu", "memory"):
                ns = cap["resources"][res]["namespaces"]
                for kind, word in (("commitment", "commitment"), ("utilization", "utilisation")):
                    layers = ns[kind]
                    xs = [t + 43200 for t in ns["days"]]
                    totals = [
                        sum(col) for col in zip(*(ly["values"] for ly in layers), strict=True)
                    ]
                    top = _ratio_top(totals)
                    slayers = [
                        svg.Layer(
                            str(ly["name"]), ly["values"], svg.OTHER if ly["other"] else _color(i)
                        )
                        for i, ly in enumerate(layers)
                    ]
                    name = f"ns-{ci}-{res}-{kind}"
                    title = f"{_RESOURCE[res]}: namespace {word}, daily, stacked"
                    chart = svg.stacked_chart(
                        name=name,
                        title=title,
                        xs=xs,
                        layers=slayers,
                        x_range=self.month_chart_range(),
                        y_range=(0.0, top),
                        x_ticks=self.month_ticks,
                        y_ticks=svg.value_ticks(top, _pct_axis),
                        rules=[svg.Rule(HOT, "85 %")],
                        height=200.0,
                    )
                    body.append(
                        _figure(
                            name,
                            chart,
                            _e(title) + "." if layers else f"No namespace {word} this month.",
                            _legend(
                                [(svg.swatch(ly.color, area=True), f"{ly.label}") for ly in slayers]
                            ),
                        )
                    )
            body.append(self.namespace_table(cap))
        return self.section("namespaces", "".join(body))

    def namespace_table(self, cap: dict[str, Any]) -> str:
        keys = ("cpu_commitment", "cpu_utilization", "memory_commitment", "memory_utilization")
        rows = [
            [_name(str(n["namespace"]))] + [pct(n.get(k)) for k in keys]
            for n in cap["namespace_means"]
        ]
        if not rows:
            return ""
        return "<h4>Month averages of the daily shares of the cluster</h4>" + _table(
            [
                ("Namespace", False),
                ("CPU commitment", True),
                ("CPU utilisation", True),
                ("Memory commitment", True),
                ("Memory utilisation", True),
            ],
            rows,
        )

    # -- sustained --------------------------------------------------------------------------------

    def sustained(self) -> str:
        body = [
            "<p>A sustained run is at least one hour above 85 % CPU or memory utilisation "
            "(usage ÷ allocatable), a gap of more than 15 minutes between samples ending it. "
            "Dark bars are runs of a whole node pool or cluster; light bars are runs of "
            "single nodes of the pool (merged where they overlap).</p>"
        ]
        for ci, cap in enumerate(self.d["capacity"]):
            body.append(self.cluster_heading(cap["cluster"]))
            sus = cap["sustained"]
            lanes: dict[tuple[str, str], list[tuple[float, float, str, str]]] = {}
            for run in sus["runs"]:
                who = "cluster" if run["scope"] == "cluster" else str(run["nodepool"])
                lanes.setdefault((who, run["resource"]), []).append(
                    (
                        _sec(run["start"]),
                        _sec(run["end"]),
                        svg.THRESHOLD,
                        f"{who} {_RESOURCE[run['resource']]} above 85 % from "
                        f"{minute(run['start'])} to {minute(run['end'])}, max "
                        f"{pct(run['utilization_max'])}",
                    )
                )
            for agg in sus["node_runs"]:
                lanes.setdefault((str(agg["nodepool"]), agg["resource"]), []).extend(
                    (
                        _sec(a),
                        _sec(b),
                        "#F4A582",
                        f"nodes of {agg['nodepool']} above 85 % from {minute(a)} to {minute(b)}",
                    )
                    for a, b in agg["intervals"]
                )
            if not lanes:
                body.append('<p class="empty">No sustained run above 85 % this month.</p>')
                continue
            rows = [
                (
                    f"{who} · {_RESOURCE[res]}",
                    sorted(spans, key=lambda s: (s[2] == svg.THRESHOLD, s[0])),
                )
                for (who, res), spans in sorted(lanes.items())
            ]
            name = f"sustained-{ci}"
            chart = svg.timeline_chart(
                name=name,
                title="Sustained runs above 85 % per node pool and resource",
                rows=rows,
                x_range=self.month_chart_range(),
                x_ticks=self.month_ticks,
            )
            body.append(
                _figure(
                    name,
                    chart,
                    "When node pools and their nodes ran above 85 % for an hour or more.",
                    _legend(
                        [
                            (svg.swatch(svg.THRESHOLD, area=True), "node pool or cluster run"),
                            (svg.swatch("#F4A582", area=True), "node runs in the pool"),
                        ]
                    ),
                )
            )
            if sus["runs"]:
                body.append("<h4>Node pool and cluster runs</h4>")
                body.append(
                    _table(
                        [
                            ("Scope", False),
                            ("Resource", False),
                            ("Start (UTC)", True),
                            ("End (UTC)", True),
                            ("Duration", True),
                            ("Mean", True),
                            ("Max", True),
                        ],
                        [
                            [
                                _name(self.pool_name(cap["cluster"], run["nodepool"])),
                                _e(_RESOURCE[run["resource"]]),
                                _e(minute(run["start"])),
                                _e(minute(run["end"])),
                                duration(run["duration_seconds"]),
                                pct(run["utilization_avg"]),
                                pct(run["utilization_max"]),
                            ]
                            for run in sus["runs"]
                        ],
                    )
                )
            if sus["node_runs"]:
                body.append("<h4>Single nodes, per node pool</h4>")
                body.append(
                    _table(
                        [
                            ("Node pool", False),
                            ("Resource", False),
                            ("Runs", True),
                            ("Nodes", True),
                            ("Time above", True),
                            ("Longest", True),
                            ("Max", True),
                        ],
                        [
                            [
                                f'<span class="name">{_e(a["nodepool"])}</span>',
                                _e(_RESOURCE[a["resource"]]),
                                count(a["runs"]),
                                count(a["nodes"]),
                                duration(a["seconds"]),
                                duration(a["longest_seconds"]),
                                pct(a["peak"]),
                            ]
                            for a in sus["node_runs"]
                        ],
                    )
                )
        if not self.d["capacity"]:
            body.append('<p class="empty">No capacity samples in this month.</p>')
        return self.section("sustained", "".join(body))

    # -- node and pod counts ----------------------------------------------------------------------

    def counts(self) -> str:
        body = [
            "<p>Hourly averages: nodes reporting CPU usage, stacked per node pool, and pods "
            "(the sum of the namespaces' pod counts).</p>"
        ]
        for ci, cap in enumerate(self.d["capacity"]):
            body.append(self.cluster_heading(cap["cluster"]))
            c = cap["counts"]
            hours = sorted({int(p[0]) for s in c["nodes_by_pool"] for p in s["points"]})
            layers = []
            for i, s in enumerate(c["nodes_by_pool"]):
                byh = {int(p[0]): p[1] for p in s["points"]}
                layers.append(
                    svg.Layer(str(s["nodepool"]), [byh.get(h, 0.0) for h in hours], _color(i))
                )
            totals = [sum(col) for col in zip(*(ly.values for ly in layers), strict=True)]
            top = svg.nice_max(max(totals, default=0.0), 1.0)
            name = f"nodes-{ci}"
            body.append(
                _figure(
                    name,
                    svg.stacked_chart(
                        name=name,
                        title="Nodes per node pool, hourly average, stacked",
                        xs=[h + 1800 for h in hours],
                        layers=layers,
                        x_range=self.month_chart_range(),
                        y_range=(0.0, top),
                        x_ticks=self.month_ticks,
                        y_ticks=svg.value_ticks(top, lambda v: num(v, 0)),
                        height=200.0,
                    ),
                    self.count_caption("Nodes", c["nodes"]),
                    _legend([(svg.swatch(ly.color, area=True), ly.label) for ly in layers]),
                )
            )
            pods = c["pods"]
            top = svg.nice_max(max((p[1] for p in pods), default=0.0), 1.0)
            name = f"pods-{ci}"
            body.append(
                _figure(
                    name,
                    svg.line_chart(
                        name=name,
                        title="Pods, hourly average",
                        lines=[svg.Line("pods", pods, svg.PALETTE[2], gap=1.5 * HOUR_S)],
                        x_range=self.month_chart_range(),
                        y_range=(0.0, top),
                        x_ticks=self.month_ticks,
                        y_ticks=svg.value_ticks(top, lambda v: num(v, 0)),
                        height=180.0,
                    ),
                    self.count_caption("Pods", pods),
                )
            )
        if not self.d["capacity"]:
            body.append('<p class="empty">No capacity samples in this month.</p>')
        return self.section("counts", "".join(body))

    def count_caption(self, what: str, pts: Sequence[Sequence[float]]) -> str:
        if not pts:
            return f"{_e(what)}: no samples this month."
        values = [p[1] for p in pts]
        first, last = values[0], values[-1]
        return (
            f"{_e(what)}: {num(first, 0)} at the start of the month, {num(last, 0)} at its end "
            f"(hourly averages from {num(min(values), 0)} to {num(max(values), 0)})."
        )

    # -- headroom ---------------------------------------------------------------------------------

    def headroom(self) -> str:
        body = [
            "<p>From the last 30 daily averages before the month's end: the level now, its "
            "linear trend, and when it reaches 85 % of the allocatable (and of the allocatable "
            "without the largest node: N-1). A node pool is judged by its usage, the cluster by "
            "its requests. On the bar, the red mark is 85 % and the amber mark 85 % of the N-1 "
            "capacity.</p>"
        ]
        rows = []
        for ci, cap in enumerate(self.d["capacity"]):
            for hi, h in enumerate(cap["headroom"]):
                level = h["commitment"] if h["basis"] == "requests" else h["utilization"]
                alloc = h["allocatable"] or 0.0
                n1 = max(alloc - h["largest_node_allocatable"], 0.0)
                n1_mark = HOT * n1 / alloc if alloc else 0.0
                unit = size if h["resource"] == "memory" else (lambda v: f"{num(v, 1)} cores")
                name = f"headroom-{ci}-{hi}"
                chart = svg.bullet(
                    name=name,
                    title=f"{self.pool_name(cap['cluster'], h['nodepool'])}, "
                    f"{_RESOURCE[h['resource']]}: {pct(level)}",
                    value=level or 0.0,
                    marks=[
                        (HOT, svg.THRESHOLD, "85 % of allocatable"),
                        (n1_mark, AMBER, "85 % of allocatable without the largest node"),
                    ],
                    top=max(1.0, level or 0.0),
                )
                growth = h["growth_per_day"] / alloc if alloc else None
                rows.append(
                    [
                        _name(self.pool_name(cap["cluster"], h["nodepool"])),
                        _e(_RESOURCE[h["resource"]]),
                        f"{pct(level)}<br>"
                        f"{'commitment' if h['basis'] == 'requests' else 'utilisation'}",
                        f'<figure class="chart inline" data-chart="{name}">{chart}</figure>',
                        f"{_e(unit(alloc))}<br>largest {_e(unit(h['largest_node_allocatable']))}",
                        points(growth, 2),
                        self.days_cell(h["days_to_85"]),
                        self.days_cell(h["days_to_85_n_minus_1"]),
                    ]
                )
        if rows:
            body.append(
                _table(
                    [
                        ("Scope", False),
                        ("Resource", False),
                        ("Now", True),
                        ("Against 85 % / N-1", False),
                        ("Allocatable", True),
                        ("Trend/day", True),
                        ("To 85 %", True),
                        ("To 85 %, N-1", True),
                    ],
                    rows,
                )
            )
        else:
            body.append('<p class="empty">No daily capacity rollups before the month\'s end.</p>')
        return self.section("headroom", "".join(body))

    def days_cell(self, value: float | None) -> str:
        horizon = self.d["horizon_days"]
        if value is None:
            return '<span class="good">not rising</span>'
        cls = "bad" if value == 0 else ("warn" if value <= horizon else "")
        return f'<span class="{cls}">{_e(days(value))}</span>'

    # -- storage ----------------------------------------------------------------------------------

    def storage(self) -> str:
        st = self.d["storage"]
        review = day(self.d["next_review"])
        body = [
            "<p>Every PVC forecast as of the month's end from its samples up to then (the "
            "default robust trend, which follows the peaks of volumes that rotate or compact). "
            "Ranked by days until 90 % (the seed's expand threshold); the interval is the "
            "forecast's 80 % interval for the 90 % date.</p>"
        ]
        if not st["ranked"]:
            body.append('<p class="empty">No PVC samples before the month\'s end.</p>')
            return self.section("storage", "".join(body))
        rows = []
        for i, p in enumerate(st["ranked"], start=1):
            rows.append(
                [
                    count(i),
                    f'<span class="name">{_e(p["namespace"])}/{_e(p["pvc"])}</span>'
                    + (f" ({_e(p['cluster'])})" if self.multi else ""),
                    pct(p["used_ratio"]),
                    f"{size(p['used_bytes'])}<br>of {size(p['capacity_bytes'])}",
                    size(p["growth_bytes_per_day"]) if p["growth_bytes_per_day"] else DASH,
                    _e(days(p["days_to_85"])),
                    f"{self.days_cell(p['days_to_90'])}"
                    + (f"<br>{_e(day(p['eta_90']))}" if p["eta_90"] and p["days_to_90"] else ""),
                    _e(_interval(p["eta_90_low"], p["eta_90_high"])).replace(" to ", "<br>to ", 1),
                    _e(p["status"]),
                ]
            )
        body.append(
            _table(
                [
                    ("#", True),
                    ("PVC", False),
                    ("Used", True),
                    ("Size", True),
                    ("Growth/day", True),
                    ("To 85 %", True),
                    ("To 90 %", True),
                    ("80 % interval, 90 %", True),
                    ("Status", False),
                ],
                rows,
            )
        )
        if st["count"] > len(st["ranked"]):
            body.append(
                f"<p>{count(st['count'] - len(st['ranked']))} more PVCs, none sooner than the "
                f"ones above.</p>"
            )
        body.append(f"<h3>Forecasts, soonest first (next review {_e(review)})</h3>")
        fans = [self.fan(i, p) for i, p in enumerate(st["fans"])]
        body.append(f'<div class="grid2">{"".join(fans)}</div>')
        body.append(
            _legend(
                [
                    (svg.swatch(svg.PALETTE[0]), "used ÷ capacity, 2-hour peaks"),
                    (svg.swatch(svg.PALETTE[5], "5 3"), "median forecast"),
                    (svg.swatch(svg.PALETTE[5], area=True), "80 % interval"),
                    (svg.swatch(AMBER, "6 4"), "85 % alert"),
                    (svg.swatch(svg.THRESHOLD, "6 4"), "90 % expand"),
                ]
            )
        )
        return self.section("storage", "".join(body))

    def fan(self, i: int, p: dict[str, Any]) -> str:
        as_of = self.x1
        x0, x1 = as_of - 30 * svg.DAY_S, as_of + 45 * svg.DAY_S
        top = 1.02
        cap = p["capacity_bytes"]
        history = [[t, u / cap] for t, u in p.get("history", [])] if cap else []
        r0 = p["used_ratio"]
        # Zoomed to the data (in 10 % steps), so a slow climb is visible; 100 % stays on top.
        lowest = min([v for _, v in history] + ([r0] if r0 is not None else []), default=0.0)
        step = min(svg.nice_step((1.05 - lowest) / 4), 0.25)
        bottom = max(0.0, min(0.8, math.floor((lowest - 0.05) / step) * step))
        lines = [svg.Line("used ÷ capacity", history, svg.PALETTE[0], width=1.2, gap=3 * HOUR_S)]
        bands = []
        if r0 is not None and r0 < EXPAND:
            median = _projection(as_of, r0, p["eta_90"], x1, top)
            early = _projection(as_of, r0, p["eta_90_low"], x1, top)
            late = _projection(as_of, r0, p["eta_90_high"], x1, top)
            if early and late is None:
                late = [[as_of, r0], [x1, r0]]  # the slow end never reaches 90 %: flat
            if early and late:
                bands.append(svg.Band("80 % interval", early, late, svg.PALETTE[5], 0.22))
            if median:
                lines.append(svg.Line("median forecast", median, svg.PALETTE[5], dash="5 3"))
        review = (parse_iso(self.d["next_review"]) - epoch_to_dt(0)).total_seconds()
        name = f"pvc-{i}"
        chart = svg.line_chart(
            name=name,
            title=f"{p['namespace']}/{p['pvc']}: used ÷ capacity and forecast",
            lines=lines,
            bands=bands,
            x_range=(x0, x1),
            y_range=(bottom, top),
            x_ticks=svg.time_ticks(x0, x1, as_of, 14, short_date),
            y_ticks=svg.value_ticks(1.0, _pct_axis, bottom),
            rules=[
                svg.Rule(ALERT, "85 %", AMBER, anchor="start"),
                svg.Rule(EXPAND, "90 %"),
            ],
            markers=[(as_of, "month end"), (review, "next review")],
            height=230.0,
            width=420.0,
        )
        eta = (
            "already at 90 % or more"
            if r0 is not None and r0 >= EXPAND
            else (
                f"90 % on {day(p['eta_90'])} ({days(p['days_to_90'])}; 80 %: "
                f"{_interval(p['eta_90_low'], p['eta_90_high'])})"
                if p["eta_90"]
                else "not forecast to reach 90 %"
            )
        )
        caption = (
            f'<span class="name">{_e(p["namespace"])}/{_e(p["pvc"])}</span>'
            f"{' (' + _e(p['cluster']) + ')' if self.multi else ''}: {pct(r0)} of "
            f"{size(cap)}; {_e(eta)}."
        )
        return _figure(name, chart, caption)

    # -- findings -------------------------------------------------------------------------------

    def findings(self) -> str:
        f = self.d["findings"]
        cats = [str(r["severity"]) for r in f["by_severity"]]
        chart = svg.bar_chart(
            name="findings",
            title="Findings per severity: first seen, resolved, open at the month's end",
            categories=cats,
            groups=[
                ("first seen", [r["opened"] for r in f["by_severity"]], svg.PALETTE[0]),
                ("resolved", [r["resolved"] for r in f["by_severity"]], svg.PALETTE[2]),
                ("open at end", [r["open"] for r in f["by_severity"]], svg.PALETTE[5]),
            ],
            y_fmt=lambda v: num(v, 0),
        )
        body = [
            "<p>GuardDuty and Security Hub findings (and any other provider's), each in its "
            "latest state before the month's end. <em>First seen</em>: first seen this month; "
            "<em>resolved</em>: resolved or archived this month (active, or unseen, when the "
            "month began); <em>open</em>: active at the month's end.</p>",
            _figure(
                "findings",
                chart,
                "Findings per severity.",
                _legend(
                    [
                        (svg.swatch(svg.PALETTE[0], area=True), "first seen this month"),
                        (svg.swatch(svg.PALETTE[2], area=True), "resolved this month"),
                        (svg.swatch(svg.PALETTE[5], area=True), "open at the month's end"),
                    ]
                ),
            ),
            _table(
                [("Severity", False), ("First seen", True), ("Resolved", True), ("Open", True)],
                [
                    [_e(r["severity"]), count(r["opened"]), count(r["resolved"]), count(r["open"])]
                    for r in f["by_severity"]
                ]
                + [
                    [
                        "All",
                        count(f["total"]["opened"]),
                        count(f["total"]["resolved"]),
                        count(f["total"]["open"]),
                    ]
                ],
                total=True,
            ),
        ]
        if f["open_items"]:
            body.append(
                f"<h4>Critical and high findings open at the month's end "
                f"({count(f['open_critical_high'])})</h4>"
            )
            body.append(
                _table(
                    [
                        ("Severity", False),
                        ("Title", False),
                        ("Resource", False),
                        ("Namespace", False),
                        ("First seen", True),
                        ("Age", True),
                    ],
                    [
                        [
                            _e(x["severity"]),
                            _e(x["title"] or DASH),
                            f'<span class="name">{_e(x["resource"] or DASH)}</span>',
                            _e(x["namespace"] or DASH),
                            _e(day(x["first_seen"])),
                            _e(days(x["age_days"])),
                        ]
                        for x in f["open_items"]
                    ],
                )
            )
        return self.section("findings", "".join(body))

    # -- incidents --------------------------------------------------------------------------------

    def incidents(self) -> str:
        inc = self.d["incidents"]
        cur, prev = inc["month"], inc["previous"]
        sev = [r["severity"] for r in cur["by_severity"]]

        def med_h(rows: list[dict[str, Any]], fig: str) -> list[float | None]:
            return [
                (r[fig]["median"] / 3600 if r[fig] and r[fig]["median"] is not None else None)
                for r in rows
            ]

        body = [
            "<p>Incidents opened in each month, grouped by the most severe level they held, "
            "each month judged as of its own end: acknowledgements and resolutions after it do "
            "not count, and an incident still unacknowledged past its due time is an open "
            "breach. MTTA = first acknowledgement − opening; MTTR = final resolution − opening; "
            "incidents without the milestone are left out of the figure and counted as "
            "missing.</p>"
        ]
        for fig, word in (("mtta", "MTTA"), ("mttr", "MTTR")):
            name = f"{fig}-by-severity"
            body.append(
                _figure(
                    name,
                    svg.bar_chart(
                        name=name,
                        title=f"{word} median per severity, hours: {self.d['month']} against "
                        f"{self.d['previous_month']}",
                        categories=sev,
                        groups=[
                            (self.d["previous_month"], med_h(prev["by_severity"], fig), OTHER_BAR),
                            (self.d["month"], med_h(cur["by_severity"], fig), svg.PALETTE[0]),
                        ],
                        y_fmt=lambda v: f"{num(v, 1 if 0 < v < 10 else 0)}{NBSP}h",
                        height=180.0,
                    ),
                    f"{word} median per severity (hours).",
                    _legend(
                        [
                            (svg.swatch(OTHER_BAR, area=True), self.d["previous_month"]),
                            (svg.swatch(svg.PALETTE[0], area=True), self.d["month"]),
                        ]
                    ),
                )
            )
        body.append(self.incident_compare(cur, prev))
        body.append(self.incident_figures(cur))
        if cur.get("breaches"):
            body.append(f"<h4>SLA breaches of incidents opened in {_e(self.d['month'])}</h4>")
            body.append(
                _table(
                    [
                        ("Incident", False),
                        ("Title", False),
                        ("Severity", False),
                        ("Kind", False),
                        ("Due (UTC)", True),
                        ("Met (UTC)", True),
                        ("Over by", True),
                    ],
                    [
                        [
                            f'<span class="id">{_e(b["incident_id"])}</span>',
                            _e(b["title"] or DASH),
                            _e(b["severity"]),
                            _e(b["kind"]),
                            _e(minute(b["due_at"])),
                            "open at month end" if b["open"] else _e(minute(b["met_at"])),
                            duration(b["overrun_seconds"]),
                        ]
                        for b in cur["breaches"]
                    ],
                )
            )
        if cur.get("unresolved"):
            body.append("<h4>Unresolved at the month's end</h4>")
            body.append(
                _table(
                    [
                        ("Incident", False),
                        ("Title", False),
                        ("Severity", False),
                        ("Status", False),
                        ("Opened (UTC)", True),
                    ],
                    [
                        [
                            f'<span class="id">{_e(u["incident_id"])}</span>',
                            _e(u["title"] or DASH),
                            _e(u["severity"]),
                            _e(u["status"]),
                            _e(minute(u["opened_at"])),
                        ]
                        for u in cur["unresolved"]
                    ],
                )
            )
        if cur.get("postmortems"):
            body.append(
                "<h4>Post-mortems linked by the month's end</h4><p>Addresses are printed, not "
                "linked: the report opens nothing by itself.</p>"
            )
            body.append(
                _table(
                    [("Incident", False), ("Title", False), ("Post-mortem", False)],
                    [
                        [
                            f'<span class="id">{_e(x["incident_id"])}</span>',
                            _e(x["title"] or DASH),
                            f'<span class="url">{_e(x["url"])}</span>',
                        ]
                        for x in cur["postmortems"]
                    ],
                )
            )
        return self.section("incidents", "".join(body))

    def incident_compare(self, cur: dict[str, Any], prev: dict[str, Any]) -> str:
        """Per severity, this month beside the previous one."""
        months = (self.d["month"], self.d["previous_month"])
        figures: list[tuple[str, Any]] = [
            ("Incidents", lambda r: count(r["incidents"])),
            ("Response breaches", lambda r: count(r["response_breaches"])),
            ("Resolution breaches", lambda r: count(r["resolution_breaches"])),
            ("Breach rate", lambda r: pct(r["breach_rate"])),
            ("MTTA median", lambda r: _median(r["mtta"])),
            ("MTTR median", lambda r: _median(r["mttr"])),
        ]
        top = "".join(f'<th class="n" colspan="2">{_e(label)}</th>' for label, _ in figures)
        sub = "".join(f'<th class="n">{_e(m)}</th>' for _ in figures for m in months)
        body = []
        pairs = zip(
            [*cur["by_severity"], cur["total"]], [*prev["by_severity"], prev["total"]], strict=True
        )
        for k, (c, p) in enumerate(pairs):
            cells = "".join(
                f'<td class="n">{fn(c)}</td><td class="n">{fn(p)}</td>' for _, fn in figures
            )
            cls = ' class="total"' if k == len(cur["by_severity"]) else ""
            body.append(f"<tr{cls}><td>{_e(c.get('severity', 'All'))}</td>{cells}</tr>")
        return (
            f'<table><thead><tr><th rowspan="2">Severity</th>{top}</tr><tr>{sub}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )

    def incident_figures(self, cur: dict[str, Any]) -> str:
        """This month's MTTA and MTTR in full: mean, median, p90 and incidents left out."""
        rows = []
        for r in [*cur["by_severity"], cur["total"]]:
            row = [_e(r.get("severity", "All"))]
            for fig in ("mtta", "mttr"):
                g = r[fig]
                row += [
                    duration(g["mean"]) if g else DASH,
                    duration(g["median"]) if g else DASH,
                    duration(g["p90"]) if g else DASH,
                    count(g["missing"]) if g else DASH,
                ]
            rows.append(row)
        head = [("Severity", False)] + [
            (f"{fig} {what}", True)
            for fig in ("MTTA", "MTTR")
            for what in ("mean", "median", "p90", "missing")
        ]
        return f"<h4>{_e(self.d['month'])} in full</h4>" + _table(head, rows, total=True)

    # -- cost -------------------------------------------------------------------------------------

    def cost(self) -> str:
        c = self.d["cost"]
        cur = c["currency"]
        body = [f"<p>{self.cost_sentence(c)}</p>"]
        if self.d["cluster"]:
            body.append(
                "<p>Spend and budget are the account's (Cost Explorer reports no cluster): "
                "they are not filtered by cluster.</p>"
            )
        if c["out_of_range"]["amounts"]:
            return self.section("cost", "".join(body) + self.cost_out_of_range(c))
        daily = [(_sec(f"{x['date']}T00:00:00Z"), x["amount"]) for x in c["daily"]]
        if not daily and c["budget"] is None:
            return self.section("cost", "".join(body))
        bars = svg.time_bars(
            name="cost-daily",
            title="Daily spend",
            bars=daily,
            width_s=svg.DAY_S,
            x_range=self.month_chart_range(),
            x_ticks=self.month_ticks,
            y_fmt=lambda v: money(v, None),
            color=svg.PALETTE[0],
            label=lambda x, v: f"{day(_iso(x))}: {money(v, cur)}",
        )
        cumulative: list[list[float]] = []
        total = 0.0
        for x, v in daily:
            total += v
            cumulative.append([x + svg.DAY_S, total])
        lines = [svg.Line("spend to date", [[self.x0, 0.0], *cumulative], svg.PALETTE[0], width=2)]
        if cumulative and c["projected"] is not None and cumulative[-1][0] < self.x1:
            lines.append(
                svg.Line(
                    "projection at the run rate",
                    [cumulative[-1], [self.x1, c["projected"]]],
                    svg.PALETTE[0],
                    dash="5 3",
                )
            )
        rules = []
        if c["budget"] is not None:
            rules = [
                svg.Rule(
                    c["budget"], f"budget {money(c['budget'], cur)}", svg.PALETTE[2], "1 0", "start"
                ),
                svg.Rule(c["budget"] * 1.1, "budget + 10 %", svg.THRESHOLD),
            ]
        top = svg.nice_max(max([total, c["projected"] or 0.0, (c["budget"] or 0.0) * 1.15]), 1.0)
        line = svg.line_chart(
            name="cost-cumulative",
            title="Spend to date against the budget",
            lines=lines,
            x_range=self.month_chart_range(),
            y_range=(0.0, top),
            x_ticks=self.month_ticks,
            y_ticks=svg.value_ticks(top, lambda v: money(v, None)),
            rules=rules,
            height=200.0,
        )
        body.append(
            _figure(
                "cost",
                bars + line,
                f"Daily spend ({_e(cur or '')}) and the month's cumulative spend against the "
                "budget; over budget means the projection is more than 10 % above it.",
                _legend(
                    [
                        (svg.swatch(svg.PALETTE[0], area=True), "daily spend"),
                        (svg.swatch(svg.PALETTE[0]), "spend to date"),
                        (svg.swatch(svg.PALETTE[0], "5 3"), "projection"),
                        (svg.swatch(svg.PALETTE[2]), "budget"),
                        (svg.swatch(svg.THRESHOLD, "6 4"), "budget + 10 %"),
                    ]
                ),
            )
        )
        if c["by_service"]:
            body.append("<h4>Spend per service</h4>")
            body.append(
                _table(
                    [("Service", False), ("Spend", True), ("Share", True)],
                    [
                        [
                            _e(s["service"]),
                            _e(money(s["amount"], cur)),
                            pct(s["amount"] / c["spend_to_date"] if c["spend_to_date"] else None),
                        ]
                        for s in c["by_service"]
                    ],
                )
            )
        return self.section("cost", "".join(body))

    def cost_out_of_range(self, c: dict[str, Any]) -> str:
        """The amounts out of range, and each service's spend where it is a real sum."""
        # No charts: a bar or a cumulative line over an unknown sum would draw a made-up figure.
        cur = c["currency"]
        rows = [
            [_e(a["date"]), _e(a["service"]), OUT_OF_RANGE] for a in c["out_of_range"]["amounts"]
        ]
        body = [
            f"<h4>Amounts {OUT_OF_RANGE}</h4>",
            _table([("Day", False), ("Service", False), ("Amount", True)], rows),
        ]
        if c["by_service"]:
            body.append("<h4>Spend per service</h4>")
            body.append(
                _table(
                    [("Service", False), ("Spend", True)],
                    [
                        [
                            _e(s["service"]),
                            OUT_OF_RANGE if s["amount"] is None else _e(money(s["amount"], cur)),
                        ]
                        for s in c["by_service"]
                    ],
                )
            )
        return "".join(body)

    # -- method -----------------------------------------------------------------------------------

    def method(self) -> str:
        d = self.d
        body = (
            f"<p><strong>As of.</strong> Every figure is computed as of {_e(minute(d['as_of']))} "
            "UTC, the instant the month ends: samples by their timestamp, incident and finding "
            "events by their time, cost days by their date and the budget by its month. Facts "
            "timed after it (an acknowledgement on the 1st, a later sample) do not change this "
            "report. Facts about the month recorded late do, and then the ledger position "
            "below moves.</p>"
            f"<p><strong>Ledger position {count(d['ledger_position'])}</strong>: the newest "
            "ledger event among those timed before the month's end, and the month's cost days "
            "and budget. The same ledger gives the same file, byte for byte: nothing in it "
            "depends on when it was generated.</p>"
            "<p><strong>Thresholds</strong> (the seed's operations guide): nodes run hot above "
            "85 % CPU or memory sustained for an hour; storage alerts at 85 % and is expanded at "
            "90 %; cost alerts more than 10 % over budget. The next review is as of "
            f"{_e(day(d['next_review']))}, {num(d['horizon_days'], 0)} days on.</p>"
            "<p><strong>Definitions</strong>: docs/report.md, with docs/metrics.md (utilisation, "
            "commitment, MTTA/MTTR, SLA), docs/analytics.md (rollups, headroom, forecasts) and "
            "docs/incidents.md.</p>"
        )
        return self.section("method", body, major=False)


OTHER_BAR: Final = "#A6A6A6"


def _median(g: dict[str, Any] | None) -> str:
    return duration(g["median"]) if g and g["median"] is not None else DASH


def _name(text: str) -> str:
    """A name that may be long and unbroken (a PVC, a node pool), escaped."""
    return f'<span class="name">{_e(text)}</span>'


def _interval(low: str | None, high: str | None) -> str:
    """The 80 % interval of a 90 % date, as dates."""
    if low is None:
        return DASH
    return f"{day(low)} to {day(high) if high else 'never'}"


def _sec(text: str) -> float:
    return (parse_iso(text) - epoch_to_dt(0)).total_seconds()


def _iso(seconds: float) -> str:
    return epoch_to_dt(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def _projection(
    as_of: float, r0: float, eta: str | None, x1: float, top: float
) -> list[list[float]] | None:
    """A straight line from (as_of, r0) through (eta, 90 %), cut at the chart's edge or top."""
    if eta is None:
        return None
    t90 = _sec(eta)
    if t90 <= as_of:
        return None
    slope = (EXPAND - r0) / (t90 - as_of)
    end_x = x1
    if slope > 0 and r0 + slope * (x1 - as_of) > top:
        end_x = as_of + (top - r0) / slope
    pts = [[as_of, r0], [end_x, r0 + slope * (end_x - as_of)]]
    if end_x < x1:
        pts.append([x1, top])
    return pts


__all__ = ["CSP", "render"]

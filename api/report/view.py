"""What the report's templates read besides the model: its charts and the page's own figures."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from analytics.outputs.report_decisions import Decision, ShowbackRow, ShowbackTotal
from analytics.outputs.report_model import (
    ClusterCapacity,
    Cost,
    Headroom,
    Point,
    PoolUtilization,
    PvcFan,
    Report,
    ResourceTrends,
)
from analytics.thresholds import STORAGE_EXPAND
from api.report import charts
from api.report.charts import RESOURCE, Chart, MonthAxis
from api.report.fmt import DASH, OUT_OF_RANGE, count, day, money, month_title, num, pct
from store.datamodels import MAX_AMOUNT

#: The bound the contract puts on one amount, as the report prints it.
LIMIT: Final = num(MAX_AMOUNT, 0)


@dataclass(frozen=True, slots=True)
class Section:
    """A section of the page: its anchor, its heading, and whether print starts a page for it."""

    key: str
    label: str
    major: bool = True


SECTIONS: Final = (
    Section("decisions", "Decisions", major=False),
    Section("summary", "Executive summary", major=False),
    Section("utilisation", "Cluster and node pool utilisation"),
    Section("namespaces", "Namespaces"),
    Section("sustained", "Sustained-hot windows"),
    Section("counts", "Node and pod counts"),
    Section("headroom", "N-1 headroom"),
    Section("rightsizing", "Rightsizing: requests against usage"),
    Section("network", "Zones and subnet addresses"),
    Section("storage", "Storage: PVCs by days to 90 %"),
    Section("findings", "Security findings"),
    Section("incidents", "Incidents and SLA"),
    Section("cost", "Cost against budget"),
    Section("method", "How this report is made", major=False),
)


@dataclass(frozen=True, slots=True)
class Card:
    """A headline figure of the summary: `cls` is its verdict (bad, warn, good or none)."""

    label: str
    big: str
    note: str
    cls: str


@dataclass(frozen=True, slots=True)
class NamespaceChart:
    """The stacked daily shares of one kind (commitment or utilisation) of a resource."""

    chart: Chart
    title: str
    word: str
    empty: bool


@dataclass(frozen=True, slots=True)
class ResourceView:
    """One resource of a cluster: its trends and their charts."""

    trends: ResourceTrends
    label: str
    title: str
    whole: Chart
    pools: Chart
    namespaces: tuple[NamespaceChart, ...]


@dataclass(frozen=True, slots=True)
class PoolRow:
    """A node pool's month of one resource, and its sustained runs."""

    pool: PoolUtilization
    resource: str
    runs: int


@dataclass(frozen=True, slots=True)
class Extent:
    """A series' first and last values, and its lowest and highest."""

    first: float
    last: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One cluster's capacity and its charts, numbered `index` on the page."""

    index: int
    capacity: ClusterCapacity
    resources: tuple[ResourceView, ...]
    pool_rows: tuple[PoolRow, ...]
    sustained: Chart | None
    nodes: Chart
    node_extent: Extent | None
    pods: Chart
    pod_extent: Extent | None


@dataclass(frozen=True, slots=True)
class HeadroomRow:
    """A row of the headroom table: the level judged (commitment or utilisation) and its bar."""

    headroom: Headroom
    scope: str
    level: float | None
    chart: Chart
    allocatable: float
    #: The trend as a share of the allocatable per day.
    growth: float | None


@dataclass(frozen=True, slots=True)
class FanView:
    """A PVC's forecast chart."""

    fan: PvcFan
    chart: Chart
    #: Already at the expand threshold: nothing to forecast.
    at_90: bool


#: A decision's kind in words.
KINDS: Final = {
    "reclaim_workload": "Lower the requests",
    "expand_pool": "Expand the node pool",
    "raise_nodepool_limit": "Raise the NodePool limit",
    "zone_risk": "Survive a zone loss",
    "subnet_ips": "Add subnet addresses",
    "expand_pvc": "Expand the PVC",
    "budget": "Spend over budget",
}
# The clause analytics.decisions.actions ends a priced evidence with: the money column says it.
_MONEY_CLAUSE: Final = re.compile(r" (?:About [\d,.-]+(?: \S+)?/month|Cost unknown: .+)\.$")


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A decision as the table shows it: its kind and money in words, and its section's anchor."""

    decision: Decision
    kind: str
    money: str
    #: good (a saving), empty (unknown) or none.
    money_cls: str
    evidence: str
    #: The id of the section holding its figures; None when the page has no such section.
    section: str | None


@dataclass(frozen=True, slots=True)
class ShowbackGroup:
    """One cluster's showback rows (its idle last) and its node cost."""

    cluster: str
    rows: tuple[ShowbackRow, ...]
    total: ShowbackTotal | None


@dataclass(frozen=True, slots=True)
class ReportView:
    """The report's charts and derived figures; `multi` when it covers several clusters."""

    title: str
    scope: str
    multi: bool
    cards: tuple[Card, ...]
    clusters: tuple[ClusterView, ...]
    headroom: tuple[HeadroomRow, ...]
    fans: tuple[FanView, ...]
    findings: Chart
    #: MTTA and MTTR medians: (figure, chart).
    medians: tuple[tuple[str, Chart], ...]
    cost: Chart | None
    decisions: tuple[DecisionRow, ...]
    showback: tuple[ShowbackGroup, ...]

    def pool_name(self, cluster: str, pool: str | None) -> str:
        """pool_name() in this report."""
        return pool_name(self.multi, cluster, pool)


def pool_name(multi: bool, cluster: str, pool: str | None) -> str:
    """A node pool (None: the whole cluster), with its cluster when there are several."""
    name = "whole cluster" if pool is None else f"node pool {pool}"
    return f"{cluster}: {name}" if multi else name


def build(r: Report) -> ReportView:
    """The view of one report."""
    axis = MonthAxis(r.month.start, r.month.end)
    multi = len(r.clusters) > 1
    return ReportView(
        title=f"Capacity-planning review: {month_title(r.month.name)}",
        scope=f"cluster {r.cluster}" if r.cluster else "all clusters",
        multi=multi,
        cards=_cards(r),
        clusters=tuple(_cluster(axis, ci, cap) for ci, cap in enumerate(r.capacity)),
        headroom=tuple(
            _headroom_row(f"headroom-{ci}-{hi}", pool_name(multi, cap.cluster, h.nodepool), h)
            for ci, cap in enumerate(r.capacity)
            for hi, h in enumerate(cap.headroom)
        ),
        fans=tuple(_fan(i, p, r) for i, p in enumerate(r.storage.fans)),
        findings=charts.findings(r.findings),
        medians=tuple(
            (fig.upper(), charts.medians(r.incidents, fig, r.month.name, r.month.previous_name))
            for fig in ("mtta", "mttr")
        ),
        # An amount out of range makes every sum unknown: no chart draws a made-up figure.
        cost=None if r.cost.amounts_out_of_range else charts.cost(axis, r.cost),
        decisions=tuple(_decision(d) for d in r.decisions.items),
        showback=_showback(r),
    )


# -- decisions ----------------------------------------------------------------------------------

_SECTION_KEYS: Final = frozenset(s.key for s in SECTIONS)


def _decision(d: Decision) -> DecisionRow:
    if d.monthly_savings is not None:
        text, cls = f"saves {money(d.monthly_savings, d.currency)} per month", "good"
    elif d.monthly_cost is not None and d.kind == "budget":
        text, cls = f"{money(d.monthly_cost, d.currency)} over budget", ""
    elif d.monthly_cost is not None:
        text, cls = f"costs {money(d.monthly_cost, d.currency)} per month", ""
    elif d.cost_reason is not None:
        text, cls = f"cost unknown: {d.cost_reason}", "empty"
    else:
        text, cls = DASH, ""
    return DecisionRow(
        decision=d,
        kind=KINDS.get(d.kind, d.kind.replace("_", " ")),
        money=text,
        money_cls=cls,
        evidence=_MONEY_CLAUSE.sub("", d.evidence),
        section=d.section if d.section in _SECTION_KEYS else None,
    )


def _showback(r: Report) -> tuple[ShowbackGroup, ...]:
    totals = {t.cluster: t for t in r.showback.totals}
    clusters = sorted({row.cluster for row in r.showback.rows} | set(totals))
    return tuple(
        ShowbackGroup(c, tuple(row for row in r.showback.rows if row.cluster == c), totals.get(c))
        for c in clusters
    )


# -- the summary's cards ------------------------------------------------------------------------


def _cards(r: Report) -> tuple[Card, ...]:
    s = r.summary
    review = day(r.month.next_end)
    inc, prev = r.incidents.month.total, r.incidents.previous.total
    likely = any(p.likely for p in s.pvcs)
    return (
        Card(
            "Node pools to expand",
            str(len({(e.cluster, e.nodepool) for e in s.expand})),
            f"passing 85 % or out of N-1 headroom before {review}",
            "bad" if s.expand else "good",
        ),
        Card(
            "PVCs reaching 90 %",
            str(len(s.pvcs)),
            f"before the next review ({review}), counting the 80 % interval's early end",
            "bad" if likely else ("warn" if s.pvcs else "good"),
        ),
        Card(
            "Incidents",
            count(inc.incidents),
            f"{count(prev.incidents)} in {r.month.previous_name}; response breaches "
            f"{count(inc.response_breaches)} (was {count(prev.response_breaches)})",
            "bad" if inc.response_breaches > prev.response_breaches else "",
        ),
        _cost_card(r.cost),
    )


def _cost_card(c: Cost) -> Card:
    label = "Spend against budget"
    if c.amounts_out_of_range:
        n = len(c.amounts_out_of_range)
        note = f"{count(n)} recorded amount{'s' if n != 1 else ''} beyond ±{LIMIT}: see Cost"
        return Card(label, OUT_OF_RANGE, note, "bad")
    budget = OUT_OF_RANGE if c.budget_out_of_range else money(c.budget, c.currency)
    over = " · over budget (> 10 %)" if c.over_budget else ""
    return Card(
        label,
        pct(c.projected_vs_budget, 0) if c.budget else DASH,
        f"{money(c.spend_to_date, c.currency)} spent of {budget}{over}",
        "bad" if c.over_budget or c.budget_out_of_range else "good",
    )


# -- capacity -----------------------------------------------------------------------------------


def _cluster(axis: MonthAxis, ci: int, cap: ClusterCapacity) -> ClusterView:
    return ClusterView(
        index=ci,
        capacity=cap,
        resources=tuple(_resource(axis, ci, cap, r) for r in cap.resources),
        pool_rows=_pool_rows(cap),
        sustained=charts.sustained(axis, ci, cap),
        nodes=charts.nodes(axis, ci, cap),
        node_extent=_extent(cap.counts.nodes),
        pods=charts.pods(axis, ci, cap),
        pod_extent=_extent(cap.counts.pods),
    )


def _resource(axis: MonthAxis, ci: int, cap: ClusterCapacity, r: ResourceTrends) -> ResourceView:
    label = RESOURCE[r.resource]
    stacks = []
    for kind, word in (("commitment", "commitment"), ("utilization", "utilisation")):
        title = f"{label}: namespace {word}, daily, stacked"
        layers = r.namespaces.commitment if kind == "commitment" else r.namespaces.utilization
        chart = charts.namespaces(axis, ci, r, kind, title)
        stacks.append(NamespaceChart(chart, title, word, empty=not layers))
    return ResourceView(
        trends=r,
        label=label,
        title=label[0].upper() + label[1:],
        whole=charts.utilisation(axis, ci, r),
        pools=charts.pools(axis, ci, cap, r),
        namespaces=tuple(stacks),
    )


def _pool_rows(cap: ClusterCapacity) -> tuple[PoolRow, ...]:
    """Every node pool and resource, with the node pool's sustained runs counted."""
    runs: dict[tuple[str, str], int] = {}
    for run in cap.sustained.runs:
        if run.scope == "nodepool":
            key = (str(run.nodepool), run.resource)
            runs[key] = runs.get(key, 0) + 1
    return tuple(
        PoolRow(p, RESOURCE[r.resource], runs.get((str(p.nodepool), r.resource), 0))
        for r in cap.resources
        for p in r.pools
    )


def _extent(points: Sequence[Point]) -> Extent | None:
    if not points:
        return None
    values = [v for _, v in points]
    return Extent(values[0], values[-1], min(values), max(values))


def _headroom_row(name: str, scope: str, h: Headroom) -> HeadroomRow:
    level = h.commitment if h.basis == "requests" else h.utilization
    alloc = h.allocatable or 0.0
    return HeadroomRow(
        headroom=h,
        scope=scope,
        level=level,
        chart=charts.headroom(name, scope, h, level),
        allocatable=alloc,
        growth=h.growth_per_day / alloc if alloc else None,
    )


# -- storage ------------------------------------------------------------------------------------


def _fan(i: int, p: PvcFan, r: Report) -> FanView:
    ratio = p.forecast.used_ratio
    return FanView(
        fan=p,
        chart=charts.fan(i, p, r.month.end, r.month.next_end),
        at_90=ratio is not None and ratio >= STORAGE_EXPAND,
    )

"""The export datasets: a fixed, versioned Arrow schema each, and what every column means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

#: Instants are UTC microseconds (Parquet INT64 TIMESTAMP(MICROS, isAdjustedToUTC=true)).
TS: Final = pa.timestamp("us", tz="UTC")
STR: Final = pa.string()
F64: Final = pa.float64()
I64: Final = pa.int64()
I32: Final = pa.int32()
BOOL: Final = pa.bool_()
DATE: Final = pa.date32()

Source = Literal["read_model", "ledger"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its name, Arrow type and meaning (docs/bi.md repeats all three)."""

    name: str
    type: pa.DataType
    meaning: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """An export dataset: bump `version` whenever `columns` change in any way."""

    name: str
    version: int
    summary: str
    #: The column `from` / `to` filter and `--partition month` splits by.
    time_column: str
    #: The projection it reads (None: the ledger itself).
    projection: str | None
    columns: tuple[Column, ...]
    #: Judged as of a time (`as_of`, default now) rather than filtered by `from` / `to`
    #: alone: forecasts, and breaches that are open until met.
    uses_as_of: bool = False
    #: Other projections it reads besides `projection` (caught up with it before an export).
    also_reads: tuple[str, ...] = ()

    @property
    def projections(self) -> tuple[str, ...]:
        """Every projection the export reads (none for the ledger)."""
        return () if self.projection is None else (self.projection, *self.also_reads)

    @property
    def source(self) -> Source:
        """Where the rows come from."""
        return "ledger" if self.projection is None else "read_model"

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema, carrying the dataset name and schema version as metadata."""
        return pa.schema(
            [pa.field(c.name, c.type) for c in self.columns],
            metadata={
                "opsledger.dataset": self.name,
                "opsledger.schema_version": str(self.version),
            },
        )


def _capacity(step: str, span: str) -> tuple[Column, ...]:
    return (
        Column("bucket_start", TS, f"Start of the bucket [bucket_start, bucket_start + {span})."),
        Column("cluster", STR, "Cluster."),
        Column("scope", STR, "`cluster`, `nodepool`, `node` or `namespace`."),
        Column("resource", STR, "`cpu`, `memory`, `pods` or `nodes`."),
        Column(
            "unit",
            STR,
            "Unit of the usage, requests and allocatable figures: `cores`, "
            "`bytes`, `pods` or `nodes`.",
        ),
        Column("nodepool", STR, "Node pool (scopes `nodepool` and `node`; else null)."),
        Column("node", STR, "Node (scope `node`; else null)."),
        Column("namespace", STR, "Namespace (scope `namespace`; else null)."),
        Column("usage_avg", F64, f"Mean usage over the timestamps of the {step} bucket."),
        Column("usage_p95", F64, "95th percentile of usage (linear interpolation)."),
        Column("usage_max", F64, "Highest usage."),
        Column("requests_avg", F64, "Mean requests (namespaces and clusters only; else null)."),
        Column("allocatable_avg", F64, "Mean allocatable."),
        Column("utilization_avg", F64, "Mean of usage ÷ allocatable taken per timestamp."),
        Column("utilization_p95", F64, "95th percentile of usage ÷ allocatable."),
        Column("commitment_avg", F64, "Mean of requests ÷ allocatable taken per timestamp."),
        Column("points", I32, "Timestamps the bucket aggregates."),
    )


DATASETS: Final[dict[str, Dataset]] = {
    d.name: d
    for d in (
        Dataset(
            "capacity_hourly",
            1,
            "Hourly capacity rollups per cluster, node pool, node and namespace.",
            "bucket_start",
            "capacity",
            _capacity("hourly", "1 hour"),
        ),
        Dataset(
            "capacity_daily",
            1,
            "Daily (UTC) capacity rollups per cluster, node pool, node and namespace.",
            "bucket_start",
            "capacity",
            _capacity("daily", "1 day"),
        ),
        Dataset(
            "storage_forecast",
            1,
            "One forecast per PVC as of `as_of` (default: now): when it reaches 85, 90 and 100 %.",
            "as_of",
            "storage",
            (
                Column("as_of", TS, "The forecast's evaluation time; only samples up to it."),
                Column("cluster", STR, "Cluster."),
                Column("namespace", STR, "Namespace of the PersistentVolumeClaim."),
                Column("pvc", STR, "PersistentVolumeClaim."),
                Column("used_bytes", F64, "Used bytes at `as_of`."),
                Column(
                    "capacity_bytes",
                    F64,
                    "Capacity at `as_of` (the last one: a resize counts from when it happened).",
                ),
                Column("used_ratio", F64, "used_bytes ÷ capacity_bytes."),
                Column("growth_bytes_per_day", F64, "Growth rate of the fitted trend."),
                Column(
                    "days_to_85",
                    F64,
                    "Days from `as_of` to 85 % (0: already; null: never at the current trend).",
                ),
                Column("days_to_90", F64, "Days from `as_of` to 90 %."),
                Column("days_to_full", F64, "Days from `as_of` to 100 %."),
                Column("eta_90", TS, "When 90 % is reached."),
                Column("eta_90_low", TS, "Early bound of the 80 % interval of eta_90."),
                Column("eta_90_high", TS, "Late bound of the 80 % interval of eta_90."),
                Column("method", STR, "`robust_trend` or `predict_linear`."),
                Column(
                    "status",
                    STR,
                    "`critical` (≥ 90 %), `warning` (≥ 85 %), `forecast` (90 % "
                    "within 30 days), `ok` or `insufficient_data`.",
                ),
            ),
            uses_as_of=True,
        ),
        Dataset(
            "incidents",
            1,
            "One row per incident whose opening is recorded, judged by the SLA policy in force "
            "when it opened.",
            "opened_at",
            "incidents",
            (
                Column("incident_id", STR, "Incident id."),
                Column("title", STR, "Title."),
                Column("severity", STR, "Current severity, `P0` to `P3`."),
                Column("severity_max", STR, "Most severe level ever held (metrics group by it)."),
                Column("cluster", STR, "Cluster."),
                Column("namespace", STR, "Namespace, when given."),
                Column("service", STR, "Service, when given."),
                Column("status", STR, "`open`, `acknowledged`, `mitigated` or `resolved`."),
                Column("opened_at", TS, "Time of the `opened` event."),
                Column("acknowledged_at", TS, "First acknowledgement."),
                Column("mitigated_at", TS, "First mitigation."),
                Column("resolved_at", TS, "Final resolution (null while open or reopened)."),
                Column("reopens", I32, "Times reopened."),
                Column("postmortem_url", STR, "Linked post-mortem."),
                Column("last_event_at", TS, "Time of the latest lifecycle event."),
                Column("version", I32, "Stream version (the incident's ETag)."),
                Column("mtta_s", F64, "acknowledged_at − opened_at, seconds."),
                Column("mttm_s", F64, "mitigated_at − opened_at, seconds."),
                Column("mttr_s", F64, "resolved_at − opened_at, seconds."),
                Column("response_severity", STR, "Level whose response target applies."),
                Column("response_target", STR, "That target, e.g. `1h` or `next_business_day`."),
                Column("response_due_at", TS, "When the first acknowledgement is due."),
                Column("resolution_severity", STR, "Level whose resolution target applies."),
                Column("resolution_target", STR, "That target (null: none set)."),
                Column("resolution_due_at", TS, "When the final resolution is due."),
            ),
        ),
        Dataset(
            "incident_metrics_monthly",
            1,
            "MTTA / MTTM / MTTR and breaches per month of opening (UTC) and severity.",
            "month_start",
            "incidents",
            (
                Column("month_start", DATE, "First day of the month the incidents opened in."),
                Column("severity", STR, "Most severe level the incidents ever held."),
                Column("cluster", STR, "The `cluster` filter of the export; null: all clusters."),
                Column("incidents", I64, "Incidents opened."),
                Column("mtta_mean_s", F64, "Mean MTTA, seconds."),
                Column("mtta_median_s", F64, "Median MTTA (linear interpolation)."),
                Column("mtta_p90_s", F64, "90th percentile MTTA (linear interpolation)."),
                Column("mtta_missing", I64, "Incidents never acknowledged (left out of MTTA)."),
                Column("mttm_mean_s", F64, "Mean MTTM, seconds."),
                Column("mttm_median_s", F64, "Median MTTM."),
                Column("mttm_p90_s", F64, "90th percentile MTTM."),
                Column("mttm_missing", I64, "Incidents never mitigated."),
                Column("mttr_mean_s", F64, "Mean MTTR, seconds."),
                Column("mttr_median_s", F64, "Median MTTR."),
                Column("mttr_p90_s", F64, "90th percentile MTTR."),
                Column("mttr_missing", I64, "Incidents not resolved."),
                Column("response_breaches", I64, "Incidents with a response breach."),
                Column("resolution_breaches", I64, "Incidents with a resolution breach."),
                Column("breach_rate", F64, "response_breaches ÷ incidents."),
                Column("as_of", TS, "When breaches were judged (open breaches count up to it)."),
            ),
            uses_as_of=True,
        ),
        Dataset(
            "sla_breaches",
            1,
            "Every response and resolution breach of the incidents opened in the window.",
            "opened_at",
            "incidents",
            (
                Column("incident_id", STR, "Incident id."),
                Column("kind", STR, "`response` or `resolution`."),
                Column("severity", STR, "Level whose target applied."),
                Column("severity_max", STR, "Most severe level the incident ever held."),
                Column("cluster", STR, "Cluster."),
                Column("namespace", STR, "Namespace, when given."),
                Column("service", STR, "Service, when given."),
                Column("opened_at", TS, "When the incident opened."),
                Column("due_at", TS, "When the acknowledgement (resolution) was due."),
                Column("met_at", TS, "When it came (null: not yet, an open breach)."),
                Column("overrun_seconds", F64, "(met_at or as_of) − due_at, seconds."),
                Column("open", BOOL, "True while unmet."),
                Column("as_of", TS, "When the breaches were judged."),
            ),
            uses_as_of=True,
        ),
        Dataset(
            "findings",
            1,
            "Security findings (GuardDuty, Security Hub) as recorded: one row per observation.",
            "event_time",
            "cluster_events",
            (
                Column("event_time", TS, "Time of the `opsledger.finding` event."),
                Column("provider", STR, "`guardduty`, `securityhub`, …"),
                Column("finding_id", STR, "The provider's finding id."),
                Column("title", STR, "Title."),
                Column("finding_type", STR, "The provider's type."),
                Column("severity", STR, "`CRITICAL`, `HIGH`, `MEDIUM`, `LOW` or `INFORMATIONAL`."),
                Column("status", STR, "`ACTIVE`, `ARCHIVED` or `RESOLVED`."),
                Column("resource", STR, "Affected resource, when given."),
                Column("namespace", STR, "Namespace, when given."),
                Column("cluster", STR, "The event's cluster attribute (may be null)."),
                Column("first_seen", TS, "First seen by the provider."),
                Column("last_seen", TS, "Last seen by the provider."),
                Column(
                    "position",
                    I64,
                    "Ledger position (the latest observation of a finding has the highest).",
                ),
            ),
        ),
        Dataset(
            "cost_daily",
            1,
            "Spend per day and service: the amount recorded last for each.",
            "day",
            "cost",
            (
                Column("day", DATE, "The (UTC) day of the spend."),
                Column("service", STR, "Service, e.g. `Amazon Elastic Compute Cloud - Compute`."),
                Column("amount", F64, "Spend that day."),
                Column("currency", STR, "Currency, e.g. `USD`."),
                Column("cluster", STR, "The event's cluster attribute (usually null)."),
                Column("position", I64, "Ledger position of the amount."),
            ),
        ),
        Dataset(
            "rightsizing",
            1,
            "One row per container (cluster, namespace, workload, container) as of `as_of`: "
            "requests against usage over the configured look-back, and what to reclaim.",
            "as_of",
            "workloads",
            (
                Column("as_of", TS, "End of the look-back (exclusive)."),
                Column("lookback_days", F64, "Length of the look-back, days."),
                Column("cluster", STR, "Cluster."),
                Column("namespace", STR, "Namespace."),
                Column(
                    "workload_kind",
                    STR,
                    "Deployment, StatefulSet, DaemonSet, Job, CronJob, "
                    "ReplicaSet, Pod, or another controller's kind.",
                ),
                Column("workload", STR, "Workload name (the pod's, for a bare pod)."),
                Column("container", STR, "Container."),
                Column("pods_avg", F64, "Mean number of pods sampled per timestamp."),
                Column("cpu_request_cores", F64, "Mean CPU request per pod (null: none)."),
                Column("cpu_usage_p95_cores", F64, "95th percentile of CPU usage, all pods."),
                Column("cpu_recommended_cores", F64, "max(p95, the minimum)."),
                Column("cpu_limit_cores", F64, "Mean CPU limit per pod (null: none)."),
                Column("memory_request_bytes", F64, "Mean memory request per pod (null: none)."),
                Column("memory_usage_max_bytes", F64, "Highest working set, all pods."),
                Column("memory_recommended_bytes", F64, "max(max × (1 + buffer), the minimum)."),
                Column("memory_limit_bytes", F64, "Mean memory limit per pod (null: none)."),
                Column(
                    "cpu_reclaim_cores",
                    F64,
                    "(request − recommended) × pods_avg; < 0: under-requested.",
                ),
                Column("memory_reclaim_bytes", F64, "(request − recommended) × pods_avg."),
                Column("monthly_savings", F64, "Reclaim at the cluster's unit prices × 730 h."),
                Column("currency", STR, "Currency of monthly_savings."),
                Column(
                    "status", STR, "`over`, `under`, `ok`, `no_requests` or `insufficient_data`."
                ),
                Column("reason", STR, "The status in words."),
            ),
            uses_as_of=True,
            also_reads=("capacity", "cluster_events", "cost"),
        ),
        Dataset(
            "showback",
            1,
            "Each month's node cost allocated by max(requests, usage), by namespace, node pool "
            "and workload, with idle as its own row.",
            "month_start",
            "workloads",
            (
                Column("month_start", DATE, "First day of the month."),
                Column("as_of", TS, "The month is counted up to here (its end, or as_of)."),
                Column("by", STR, "`namespace`, `nodepool` or `workload`: the grouping."),
                Column("cluster", STR, "Cluster."),
                Column("namespace", STR, "Namespace (by namespace and workload)."),
                Column("nodepool", STR, "Node pool (by nodepool)."),
                Column("workload_kind", STR, "Workload kind (by workload)."),
                Column("workload", STR, "Workload (by workload)."),
                Column("idle", BOOL, "The cluster's unallocated node cost."),
                Column("cpu_cost", F64, "CPU part of the cost."),
                Column("memory_cost", F64, "Memory part of the cost."),
                Column("cost", F64, "cpu_cost + memory_cost (null: not costable, see reason)."),
                Column("share", F64, "Share of the cluster's node cost."),
                Column("currency", STR, "Currency."),
                Column("reason", STR, "Why the cost is null."),
            ),
            uses_as_of=True,
            also_reads=("capacity", "cluster_events", "cost"),
        ),
        Dataset(
            "decisions",
            1,
            "Each month's ranked actions (reclaim, expand, raise a limit, zone, subnet, PVC, "
            "budget), judged as of its end.",
            "month_start",
            "workloads",
            (
                Column("month_start", DATE, "First day of the month."),
                Column("as_of", TS, "When the month was judged (its end, or as_of)."),
                Column("rank", I32, "1 is the most urgent."),
                Column(
                    "kind",
                    STR,
                    "`reclaim_workload`, `expand_pool`, `raise_nodepool_limit`, "
                    "`zone_risk`, `subnet_ips`, `expand_pvc` or `budget`.",
                ),
                Column("target", STR, "What to act on."),
                Column("now", BOOL, "Due now."),
                Column("by_date", DATE, "Due by this day (null when due now)."),
                Column("evidence", STR, "The figures and the rule that fired, in words."),
                Column("monthly_savings", F64, "Money saved per month."),
                Column("monthly_cost", F64, "Money it costs per month."),
                Column("currency", STR, "Currency of the money."),
                Column("section", STR, "The report section with the figures."),
            ),
            uses_as_of=True,
            also_reads=("capacity", "cluster_events", "inventory", "storage", "cost"),
        ),
        Dataset(
            "events",
            1,
            "The ledger itself: every event in position order.",
            "time",
            None,
            (
                Column("position", I64, "Ledger position (gap-free, commit order)."),
                Column("time", TS, "When the fact happened (the event's `time`)."),
                Column("type", STR, "Event type, e.g. `opsledger.incident.opened`."),
                Column("source", STR, "CloudEvents `source`."),
                Column("id", STR, "CloudEvents `id` (unique with `source`)."),
                Column("cluster", STR, "`cluster` extension attribute."),
                Column("subject", STR, "CloudEvents `subject`."),
                Column("stream", STR, "Aggregate stream, e.g. `incident/INC-1`."),
                Column("stream_version", I64, "Version within the stream."),
                Column("recorded_at", TS, "When the ledger recorded it."),
                Column(
                    "data",
                    STR,
                    'The event\'s `data` as JSON text (samples as `{"samples": [...]}`).',
                ),
            ),
        ),
    )
}


def dataset(name: str) -> Dataset:
    """A dataset by name (KeyError naming the known ones)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def snapshot() -> dict[str, dict[str, object]]:
    """Every dataset's version and columns, as tests/export_schemas.json keeps them."""
    return {
        d.name: {"version": d.version, "columns": [[c.name, str(c.type)] for c in d.columns]}
        for d in DATASETS.values()
    }

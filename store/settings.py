"""Settings, from the environment (prefix OPSLEDGER_) through pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from store.datamodels import Severity


def _alertmanager_severities() -> dict[str, Severity]:
    return {"critical": "P1", "warning": "P2", "info": "P3"}


def _pagerduty_priorities() -> dict[str, Severity]:
    # PagerDuty's default priority scheme is P1..P5; opsledger's least severe level is P3.
    return {"P1": "P1", "P2": "P2", "P3": "P3", "P4": "P3", "P5": "P3"}


def _pagerduty_urgencies() -> dict[str, Severity]:
    return {"high": "P1", "low": "P3"}


class Settings(BaseSettings):
    """Every setting opsledger reads; each is documented in docs/settings.md."""

    model_config = SettingsConfigDict(env_prefix="OPSLEDGER_", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses unsafe values (relative ledger paths, a body limit "
        "over 256 MiB).",
    )
    home: Path = Field(
        Path(".opsledger"),
        description="Directory for the embedded ledger and the read model.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the ledger; default a SQLite file `ledger.db` under home. "
        "Use `postgresql+psycopg://user@host/db` for the shared backend.",
    )
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond)."
    )
    request_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A request head must arrive within this of the connection or of the "
        "previous response, and a body may pause no longer (408 and the connection closes).",
    )
    request_body_timeout_seconds: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="A whole request body must arrive within this of its request head (408 "
        "and the connection closes; nothing is written).",
    )
    max_batch_events: int = Field(
        10_000, ge=1, description="Most events accepted in one batch request (422 beyond)."
    )
    max_page_size: int = Field(
        1000, ge=1, le=100_000, description="Largest `limit` of `GET /v1/events`."
    )
    read_model_path: Path | None = Field(
        None,
        description="DuckDB file of the read model (projections); default `analytics.duckdb` "
        "under home. One process writes it: `opsledger serve` when running, else the CLI.",
    )
    projection_interval_seconds: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="How often `opsledger serve` catches projections up besides right after "
        "each ingest.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the service."
    )
    collectors_file: Path | None = Field(
        None,
        description="YAML file naming the clusters and sources to collect from "
        "(docs/collectors.md); `opsledger serve` runs them on their intervals. None: no "
        "collectors.",
    )
    webhook_default_cluster: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$",
        description="Cluster of incidents opened by a webhook when the payload names none "
        "(PagerDuty always; Alertmanager without the cluster label).",
    )
    webhook_default_severity: Severity = Field(
        "P3",
        description="Severity of a webhook incident whose severity label, priority or urgency "
        "is missing or not in its map.",
    )
    alertmanager_severity_map: dict[str, Severity] = Field(
        default_factory=_alertmanager_severities,
        description="Alertmanager `severity` label value → incident severity (JSON object; "
        "keys match case-insensitively).",
    )
    alertmanager_cluster_label: str = Field(
        "cluster",
        min_length=1,
        description="Alert label naming the cluster of an Alertmanager incident.",
    )
    pagerduty_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of the PagerDuty V3 webhook subscription; when set, "
        "`X-PagerDuty-Signature` must match (401 otherwise).",
    )
    pagerduty_priority_map: dict[str, Severity] = Field(
        default_factory=_pagerduty_priorities,
        description="PagerDuty priority name → incident severity (JSON object; keys match "
        "case-insensitively).",
    )
    pagerduty_urgency_map: dict[str, Severity] = Field(
        default_factory=_pagerduty_urgencies,
        description="PagerDuty urgency → incident severity, for incidents without a mapped "
        "priority (JSON object).",
    )
    query_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Time limit of one `POST /v1/query` / `opsledger query` (422 beyond).",
    )
    query_memory_limit: str = Field(
        "512MB",
        pattern=r"(?i)^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)\s*$",
        description="DuckDB memory limit of one query worker, e.g. `512MB` or `1GiB` (422 "
        "beyond); the worker's address space is capped a little above it.",
    )
    query_max_rows: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Most rows a query returns (the answer says `truncated`); the default "
        "and the ceiling of its `limit`.",
    )
    query_max_result_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Largest answer of a query as JSON rows (`truncated` beyond).",
    )
    query_snapshot_seconds: float = Field(
        10.0,
        ge=0,
        le=86_400,
        description="How far behind the read model the server's query snapshot may be; 0 "
        "copies it whenever it changed.",
    )
    query_max_concurrent: int = Field(
        2,
        ge=1,
        le=32,
        description="Queries (worker processes) at a time on the server; more wait up to the "
        "time limit, then get 429.",
    )
    export_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        description="Largest body `GET /v1/export/...` sends to read- and write-scoped keys "
        "(413 up front when the estimate passes it; the stream is cut if the real size does).",
    )
    export_s3_region: str | None = Field(
        None,
        description="AWS region of `opsledger export --out s3://...`; default boto3's own "
        "(AWS_REGION, AWS_DEFAULT_REGION, the profile).",
    )
    export_s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint of `opsledger export --out s3://...` (S3-compatible stores, "
        "tests); default AWS's for the region.",
    )
    metrics_public: bool = Field(
        False,
        description="Serve `GET /metrics` without an API key (default: a read key is needed).",
    )
    metrics_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long `GET /metrics` reuses the read-model figures it computed.",
    )
    forecast_cache_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="How long `GET /v1/storage/forecast` without `as_of` reuses a forecast it "
        "computed for the same filters (its `as_of` says when); 0 computes every time.",
    )
    metrics_forecast_cache_seconds: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="How long `GET /metrics` reuses its PVC forecasts (a forecast per PVC).",
    )
    digest_status_max_age_hours: float = Field(
        72.0,
        gt=0,
        le=8784,
        description="The digest leaves out NotReady nodes, unhealthy pods and full PVCs whose "
        "latest status or sample is older than this (the collectors record no deletions).",
    )
    report_session_key: SecretStr | None = Field(
        None,
        description="Key signing the report sign-in cookie (HMAC-SHA256); give every API "
        "replica the same value. None: a random key per process, so sign-ins end when it "
        "restarts.",
    )

    rightsizing_lookback_days: float = Field(
        14.0,
        gt=0,
        le=400,
        description="Days of container samples a rightsizing recommendation looks back over "
        "(the `lookback` query parameter's default).",
    )
    rightsizing_cpu_percentile: float = Field(
        95.0,
        gt=0,
        le=100,
        description="The CPU recommendation is this percentile (linear interpolation) of every "
        "usage sample of every pod of the container in the look-back.",
    )
    rightsizing_memory_buffer: float = Field(
        0.15,
        ge=0,
        le=10,
        description="The memory recommendation is the maximum working set × (1 + this).",
    )
    rightsizing_min_cpu_cores: float = Field(
        0.01, ge=0, le=1024, description="No CPU recommendation is below this many cores."
    )
    rightsizing_min_memory_bytes: int = Field(
        100 * 1024 * 1024,
        ge=0,
        le=2**50,
        description="No memory recommendation is below this many bytes (100 MiB).",
    )
    price_table_file: Path | None = Field(
        None,
        description="JSON price table used where Cost Explorer has no usage of an instance "
        'type: `{"currency": "USD", "instance_types": {"m6i.2xlarge": 0.384}, '
        '"storage_gib_month": 0.08}` (hourly on-demand prices; docs/cost.md).',
    )
    cost_cpu_core_hour_weight: float = Field(
        0.031611,
        gt=0,
        description="Splits a node's cost between CPU and memory in the ratio of these two "
        "weights per core-hour and per GiB-hour (OpenCost's default prices).",
    )
    cost_memory_gib_hour_weight: float = Field(
        0.004237,
        gt=0,
        description="See `cost_cpu_core_hour_weight`.",
    )
    decisions_min_monthly_savings: float = Field(
        10.0,
        ge=0,
        le=1e9,
        description="A workload is a reclaim decision only when lowering its requests saves "
        "more than this much a month (in the prices' currency).",
    )
    decisions_horizon_days: float = Field(
        30.0,
        gt=0,
        le=366,
        description="A risk (a pool at 85 %, a NodePool limit, a subnet out of addresses, a "
        "PVC at 90 %) is a decision when its trend reaches it within this many days.",
    )

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Settings:
        if self.env == "production":
            if self.database_url is None and not self.home.is_absolute():
                raise ValueError("OPSLEDGER_HOME must be an absolute path in production")
            if self.database_url is not None:
                url = make_url(self.database_url)
                db = url.database or ""
                if url.get_backend_name() == "sqlite" and not Path(db).is_absolute():
                    raise ValueError(
                        "OPSLEDGER_DATABASE_URL must name an absolute SQLite path in production"
                    )
            if self.max_body_bytes > 256 * 1024 * 1024:
                raise ValueError("OPSLEDGER_MAX_BODY_BYTES above 256 MiB is refused in production")
        return self

    @property
    def read_model(self) -> Path:
        """The read model's DuckDB file."""
        return (self.read_model_path or self.home / "analytics.duckdb").resolve()

    @property
    def server_file(self) -> Path:
        """Where a running server announces that it holds the read model (its URL and pid)."""
        return self.read_model.with_suffix(".server.json")

    @property
    def ledger_url(self) -> str:
        """The ledger's database URL, defaulting to the SQLite file under home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'ledger.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()

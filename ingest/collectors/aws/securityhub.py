"""Security Hub findings (ASFF) as `opsledger.finding` events, each update recorded once.

A run asks for the findings whose `UpdatedAt` is at or after the cursor (less `lookback`),
page by page, and commits each page with the cursor it started from; the cursor moves to the
run's start only when the last page is in. Findings are also filtered and de-duplicated here,
by id and `UpdatedAt`, since not every implementation of the API applies the filter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from pydantic import Field, field_validator

from ingest.collectors.aws.common import (
    SOURCE_PREFIX,
    ClientSettings,
    SourceConfig,
    aws_time_us,
    bounded_id,
    make_event,
    mapped,
    now_us,
    short_digest,
)
from ingest.collectors.runtime import Sink, parse_duration
from store.datamodels import FindingSeverity, FindingStatus
from store.event_types import EventType
from store.timefmt import format_us

if TYPE_CHECKING:
    from mypy_boto3_securityhub.type_defs import DateFilterTypeDef, GetFindingsRequestTypeDef

log = logging.getLogger("opsledger.collectors.aws.securityhub")

NAME: Final = "aws/securityhub"
SOURCE: Final = SOURCE_PREFIX + "securityhub"
PAGE_SIZE: Final = 100
_LABELS: Final = frozenset({"INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"})
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
#: How far past now the UpdatedAt filter reaches (a provider's clock may run ahead).
_END_SLACK_US: Final = 86_400_000_000


class SecurityHubConfig(SourceConfig):
    """Security Hub findings of the account (or the aggregated region) in the region."""

    interval: str = Field("15m", description="time between scheduled runs")
    lookback: str = Field(
        "5m", description="re-read findings updated this long before the cursor (late arrivals)"
    )

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        parse_duration(value)
        return value


def severity_of(severity: Mapping[str, Any]) -> FindingSeverity:
    """Severity.Label, else the documented bands of Severity.Normalized (0-100)."""
    label = severity.get("Label")
    if isinstance(label, str) and label in _LABELS:
        return label  # type: ignore[return-value]
    normalized = severity.get("Normalized")
    n = float(normalized) if isinstance(normalized, int | float) else 0.0
    if n >= 90:
        return "CRITICAL"
    if n >= 70:
        return "HIGH"
    if n >= 40:
        return "MEDIUM"
    if n >= 1:
        return "LOW"
    return "INFORMATIONAL"


def status_of(f: Mapping[str, Any]) -> FindingStatus:
    """ARCHIVED records are ARCHIVED; RESOLVED or SUPPRESSED workflows RESOLVED; else ACTIVE."""
    if f.get("RecordState") == "ARCHIVED":
        return "ARCHIVED"
    workflow = (f.get("Workflow") or {}).get("Status") or f.get("WorkflowState")
    if workflow in ("RESOLVED", "SUPPRESSED"):
        return "RESOLVED"
    return "ACTIVE"


def _eks_cluster(resources: list[Mapping[str, Any]]) -> str | None:
    for r in resources:
        if r.get("Type") != "AwsEksCluster":
            continue
        name = ((r.get("Details") or {}).get("AwsEksCluster") or {}).get("Name")
        if isinstance(name, str) and name:
            return name
        rid = r.get("Id")
        if isinstance(rid, str) and ":cluster/" in rid:
            return rid.rsplit(":cluster/", 1)[1].split("/")[0] or None
    return None


def _namespace(f: Mapping[str, Any], resources: list[Mapping[str, Any]]) -> str | None:
    fields = f.get("ProductFields") or {}
    for key, value in fields.items():
        k = key.lower()
        if "kubernetes" in k and k.endswith("namespace") and isinstance(value, str) and value:
            return value
    for r in resources:
        other = (r.get("Details") or {}).get("Other") or {}
        for key, value in other.items():
            if key.lower() == "namespace" and isinstance(value, str) and value:
                return value
    return None


def finding_event(
    f: Mapping[str, Any], default_cluster: str | None, source: str = SOURCE
) -> dict[str, Any] | None:
    """One ASFF finding as an `opsledger.finding` CloudEvent."""
    finding_id = str(f["Id"])
    updated = aws_time_us(f["UpdatedAt"])
    created = aws_time_us(f.get("CreatedAt", f["UpdatedAt"]))
    resources = [r for r in f.get("Resources") or [] if isinstance(r, Mapping)]
    namespace = _namespace(f, resources)
    cluster = _eks_cluster(resources)
    if cluster is None and namespace is not None:
        cluster = default_cluster
    if cluster is not None and not _CLUSTER_RE.match(cluster):
        cluster = None
    types = f.get("Types") or []
    finding_type = types[0] if types else f.get("GeneratorId") or "unknown"
    data: dict[str, Any] = {
        "provider": "securityhub",
        "finding_id": finding_id[:4096],
        "title": str(f.get("Title") or finding_type)[:4096],
        "finding_type": str(finding_type)[:4096],
        "severity": severity_of(f.get("Severity") or {}),
        "status": status_of(f),
        "first_seen": format_us(min(created, updated)),
        "last_seen": format_us(updated),
    }
    if resources and isinstance(resources[0].get("Id"), str) and resources[0]["Id"]:
        data["resource"] = resources[0]["Id"][:4096]
    if namespace is not None:
        data["namespace"] = namespace[:253]
    # Workflow changes made with BatchUpdateFindings need not move UpdatedAt: the digest of
    # what is recorded makes such a change a new event instead of a conflict.
    tail = f"{format_us(updated)}/{short_digest(data, cluster)}"
    return make_event(
        source=source,
        event_id=bounded_id(finding_id, tail),
        event_type=EventType.FINDING,
        time_us=updated,
        cluster=cluster,
        data=data,
    )


class SecurityHubCollector:
    """Collects the findings Security Hub holds in one region; see the module docstring."""

    def __init__(
        self,
        settings: ClientSettings,
        cfg: SecurityHubConfig,
        default_cluster: str | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = NAME
        self.source = SOURCE
        self.interval_seconds = parse_duration(cfg.interval)
        self.settings = settings
        self.cfg = cfg
        self.default_cluster = default_cluster
        self.lookback_us = int(parse_duration(cfg.lookback) * 1_000_000)
        self.clock = clock

    def collect(self, sink: Sink) -> None:
        """Page through the findings updated since the cursor, committing page by page."""
        cursor = sink.cursor() or {}
        since = cursor.get("updated_at_ms")
        started = now_us(self.clock)
        floor = None if since is None else max(int(since) * 1000 - self.lookback_us, 0)
        client = self.settings.client("securityhub")
        request: GetFindingsRequestTypeDef = {
            "SortCriteria": [{"Field": "UpdatedAt", "SortOrder": "asc"}],
            "MaxResults": PAGE_SIZE,
        }
        if floor is not None:
            span: DateFilterTypeDef = {
                "Start": format_us(floor),
                "End": format_us(started + _END_SLACK_US),
            }
            request["Filters"] = {"UpdatedAt": [span]}
        seen: set[str] = set()
        pages = 0
        while True:
            page = client.get_findings(**request)
            pages += 1
            raws = []
            for f in page.get("Findings", []):
                raw = mapped(self.source, f.get("Id"), partial(self._event, f, floor))
                if raw is not None and raw["id"] not in seen:
                    seen.add(raw["id"])
                    raws.append(raw)
            if raws:
                sink.emit(raws, {"updated_at_ms": since})
            token = page.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
        log.info("%s: %d finding update(s) in %d page(s)", self.name, len(seen), pages)
        sink.emit([], {"updated_at_ms": max(started // 1000, int(since or 0))})

    def _event(self, f: Mapping[str, Any], floor: int | None) -> dict[str, Any] | None:
        # Filtered here too: not every implementation of GetFindings applies the filter.
        if floor is not None and aws_time_us(f["UpdatedAt"]) < floor:
            return None
        return finding_event(f, self.default_cluster, self.source)

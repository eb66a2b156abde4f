"""GuardDuty findings as `opsledger.finding` events, each update recorded once.

A run lists the ids of the findings updated since the cursor (less `lookback`), fetches them
50 at a time and commits each batch with the cursor it started from; the cursor moves to the
run's start only when every batch is in. A run killed half-way therefore repeats its listing
next time, and what it had committed comes back as duplicates, never as second copies.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from store.datamodels import FindingSeverity
from store.event_types import EventType
from store.timefmt import format_us

if TYPE_CHECKING:
    from mypy_boto3_guardduty.client import GuardDutyClient

log = logging.getLogger("opsledger.collectors.aws.guardduty")

NAME: Final = "aws/guardduty"
SOURCE: Final = SOURCE_PREFIX + "guardduty"
#: GetFindings takes at most 50 ids.
GET_BATCH: Final = 50
#: Tags EKS and eksctl put on a cluster's nodes (EC2 findings about a node name its cluster).
_CLUSTER_TAGS: Final = ("eks:cluster-name", "aws:eks:cluster-name", "alpha.eksctl.io/cluster-name")
_OWNED_PREFIX: Final = "kubernetes.io/cluster/"
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DETECTOR_RE = re.compile(r"^[A-Za-z0-9]{1,300}$")


class GuardDutyConfig(SourceConfig):
    """GuardDuty findings of the account's detector in the region."""

    interval: str = Field("15m", description="time between scheduled runs")
    detector_id: str | None = Field(
        None, description="the detector to read; by default the region's detector (ListDetectors)"
    )
    lookback: str = Field(
        "5m", description="re-read findings updated this long before the cursor (late arrivals)"
    )

    @field_validator("detector_id")
    @classmethod
    def _detector(cls, value: str | None) -> str | None:
        if value is not None and not _DETECTOR_RE.match(value):
            raise ValueError("must be a GuardDuty detector id (letters and digits)")
        return value

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        parse_duration(value)
        return value


def severity_label(value: float) -> FindingSeverity:
    """GuardDuty's documented bands: 9.0+ CRITICAL, 7.0-8.9 HIGH, 4.0-6.9 MEDIUM, 1.0-3.9 LOW."""
    if value >= 9.0:
        return "CRITICAL"
    if value >= 7.0:
        return "HIGH"
    if value >= 4.0:
        return "MEDIUM"
    if value >= 1.0:
        return "LOW"
    return "INFORMATIONAL"


def _tag_cluster(tags: Any) -> str | None:
    if not isinstance(tags, list):
        return None
    by_key = {t.get("Key"): t.get("Value") for t in tags if isinstance(t, Mapping)}
    for key in _CLUSTER_TAGS:
        if by_key.get(key):
            return str(by_key[key])
    for tag_key in by_key:
        if isinstance(tag_key, str) and tag_key.startswith(_OWNED_PREFIX):
            return tag_key[len(_OWNED_PREFIX) :] or None
    return None


def _resource(res: Mapping[str, Any]) -> str | None:
    """The most specific name of what the finding is about: a cluster, an instance, a bucket…"""
    eks = res.get("EksClusterDetails") or {}
    instance = res.get("InstanceDetails") or {}
    ecs = res.get("EcsClusterDetails") or {}
    buckets = res.get("S3BucketDetails") or []
    rds = res.get("RdsDbInstanceDetails") or {}
    fn = res.get("LambdaDetails") or {}
    key = res.get("AccessKeyDetails") or {}
    for value in (
        eks.get("Arn"),
        eks.get("Name"),
        instance.get("InstanceId"),
        ecs.get("Arn"),
        buckets[0].get("Arn") if buckets and isinstance(buckets[0], Mapping) else None,
        rds.get("DbInstanceArn"),
        fn.get("FunctionArn"),
        key.get("UserName"),
        res.get("ResourceType"),
    ):
        if isinstance(value, str) and value:
            return value[:4096]
    return None


def finding_event(
    f: Mapping[str, Any], default_cluster: str | None, source: str = SOURCE
) -> dict[str, Any] | None:
    """One GuardDuty finding (GetFindings' shape) as an `opsledger.finding` CloudEvent."""
    finding_id = str(f["Id"])
    updated = aws_time_us(f["UpdatedAt"])
    created = aws_time_us(f.get("CreatedAt", f["UpdatedAt"]))
    res: Mapping[str, Any] = f.get("Resource") or {}
    kube: Mapping[str, Any] = res.get("KubernetesDetails") or {}
    workload: Mapping[str, Any] = kube.get("KubernetesWorkloadDetails") or {}
    eks: Mapping[str, Any] = res.get("EksClusterDetails") or {}
    namespace = workload.get("Namespace") or None
    cluster = eks.get("Name") or _tag_cluster((res.get("InstanceDetails") or {}).get("Tags"))
    if cluster is None and (kube or eks):
        # About Kubernetes but naming no cluster: the one cluster this file watches, if any.
        # Account-level findings stay without one (they show in every cluster's timeline).
        cluster = default_cluster
    if cluster is not None and not _CLUSTER_RE.match(cluster):
        cluster = None
    service: Mapping[str, Any] = f.get("Service") or {}
    data: dict[str, Any] = {
        "provider": "guardduty",
        "finding_id": finding_id,
        "title": str(f.get("Title") or f.get("Type") or finding_id)[:4096],
        "finding_type": str(f.get("Type") or "unknown")[:4096],
        "severity": severity_label(float(f.get("Severity") or 0.0)),
        "status": "ARCHIVED" if service.get("Archived") else "ACTIVE",
        "first_seen": format_us(min(created, updated)),
        "last_seen": format_us(updated),
    }
    resource = _resource(res)
    if resource is not None:
        data["resource"] = resource
    if isinstance(namespace, str):
        data["namespace"] = namespace[:253]
    # The digest covers what is recorded, so a change that does not move UpdatedAt (an
    # archive, say) is a new event rather than a conflict with the one already recorded.
    tail = f"{format_us(updated)}/{short_digest(data, cluster)}"
    return make_event(
        source=source,
        event_id=bounded_id(finding_id, tail),
        event_type=EventType.FINDING,
        time_us=updated,
        cluster=cluster,
        data=data,
    )


class GuardDutyCollector:
    """Collects the findings of one region's detector(s); see the module docstring."""

    def __init__(
        self,
        settings: ClientSettings,
        cfg: GuardDutyConfig,
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
        self.lookback_ms = int(parse_duration(cfg.lookback) * 1000)
        self.clock = clock

    def collect(self, sink: Sink) -> None:
        """List what changed since the cursor, fetch it in batches of 50, commit each batch."""
        cursor = sink.cursor() or {}
        since = cursor.get("updated_at_ms")
        started_ms = now_us(self.clock) // 1000
        client = self.settings.client("guardduty")
        floor = None if since is None else int(since) - self.lookback_ms
        seen: set[str] = set()
        for detector in self._detectors(client):
            ids = list(dict.fromkeys(self._finding_ids(client, detector, floor)))
            log.info("%s: %d finding(s) updated in detector %s", self.name, len(ids), detector)
            for batch in _chunks(ids, GET_BATCH):
                found = client.get_findings(DetectorId=detector, FindingIds=list(batch))
                raws = []
                for f in sorted(found.get("Findings", []), key=lambda f: str(f.get("UpdatedAt"))):
                    event = partial(finding_event, f, self.default_cluster, self.source)
                    raw = mapped(self.source, f.get("Id"), event)
                    if raw is not None and raw["id"] not in seen:
                        seen.add(raw["id"])
                        raws.append(raw)
                if raws:  # with the old cursor: the listing is not done, so it stays put
                    sink.emit(raws, {"updated_at_ms": since})
        # Everything updated before this run started has been listed (the lookback covers
        # findings that become visible late, and clock skew).
        sink.emit([], {"updated_at_ms": max(started_ms, int(since or 0))})

    def _detectors(self, client: GuardDutyClient) -> list[str]:
        if self.cfg.detector_id is not None:
            return [self.cfg.detector_id]
        out: list[str] = []
        for page in client.get_paginator("list_detectors").paginate():
            out.extend(page.get("DetectorIds", []))
        if not out:
            raise RuntimeError(
                f"no GuardDuty detector in {self.settings.region}: "
                "enable GuardDuty there or set guardduty.detector_id"
            )
        return out

    def _finding_ids(self, client: GuardDutyClient, detector: str, floor: int | None) -> list[str]:
        kwargs: dict[str, Any] = {
            "DetectorId": detector,
            "SortCriteria": {"AttributeName": "updatedAt", "OrderBy": "ASC"},
            "PaginationConfig": {"PageSize": 50},
        }
        if floor is not None:
            kwargs["FindingCriteria"] = {
                "Criterion": {"updatedAt": {"GreaterThanOrEqual": max(floor, 0)}}
            }
        out: list[str] = []
        for page in client.get_paginator("list_findings").paginate(**kwargs):
            out.extend(page.get("FindingIds", []))
        return out


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

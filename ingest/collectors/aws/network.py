"""A cluster's subnets and their free addresses, from EC2 `DescribeSubnets`.

Each run lists the selected subnets (explicit ids, or a tag filter: by default the
`kubernetes.io/cluster/<cluster>` tag) page by page and records one
`opsledger.network.subnet.status` event per subnet, timed at the start of the run's interval
with the id `<subnet id>/<interval start>/<digest>`: a re-run in the same interval that sees
the same figures finds duplicates, and one that sees new figures records a newer observation
instead of a conflict. The cursor holds the subnets seen; a subnet seen before and no longer
listed gets one event with `deleted: true` when a listing completes.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from ingest.collectors.aws.common import (
    SOURCE_PREFIX,
    ClientSettings,
    SourceConfig,
    make_event,
    mapped,
    now_us,
    short_digest,
)
from ingest.collectors.runtime import Sink, parse_duration
from store.contract import CLUSTER_PATTERN
from store.event_types import EventType
from store.timefmt import format_us

log = logging.getLogger("opsledger.collectors.aws.network")

NAME_PREFIX: Final = "aws/subnets/"
#: AWS keeps the first four addresses and the last one of every subnet for itself.
RESERVED_PER_SUBNET: Final = 5
#: The most values one EC2 filter takes.
MAX_SUBNET_IDS: Final = 200
_SUBNET_ID_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_CLUSTER_RE = re.compile(CLUSTER_PATTERN)


def cluster_tag(cluster: str) -> str:
    """The tag EKS tooling puts on a cluster's subnets (value `owned` or `shared`)."""
    return f"kubernetes.io/cluster/{cluster}"


class SubnetsConfig(SourceConfig):
    """One cluster's subnets: explicit ids, or the subnets carrying given tags."""

    interval: str = Field("1h", description="time between scheduled runs")
    cluster: str = Field(description="the events' `cluster`: the EKS cluster these subnets serve")
    subnet_ids: list[str] | None = Field(
        None, description="these subnets (at most 200); excludes `tags`"
    )
    tags: dict[str, str | list[str] | None] | None = Field(
        None,
        description="subnets with every one of these tags (a value, any of a list, or null for "
        "any value); default the kubernetes.io/cluster/<cluster> tag",
    )
    page_size: int = Field(1000, ge=5, le=1000, description="subnets per DescribeSubnets call")

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        if not _CLUSTER_RE.match(value):
            raise ValueError("must be 1-253 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("subnet_ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= MAX_SUBNET_IDS:
            raise ValueError(f"must name 1 to {MAX_SUBNET_IDS} subnets")
        bad = [v for v in value if not _SUBNET_ID_RE.match(v)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a subnet id like subnet-0a1b2c3d4e5f60718")
        return sorted(set(value))

    @field_validator("tags")
    @classmethod
    def _tags(
        cls, value: dict[str, str | list[str] | None] | None
    ) -> dict[str, str | list[str] | None] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must name at least one tag")
        for key, wanted in value.items():
            if not 1 <= len(key) <= 128:
                raise ValueError(f"tag key {key!r} must be 1-128 characters")
            values = [wanted] if isinstance(wanted, str) else wanted or []
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"tag {key!r}: an empty list matches nothing; use null for any")
            if any(len(v) > 256 for v in values):
                raise ValueError(f"tag {key!r}: values are at most 256 characters")
        return value

    @model_validator(mode="after")
    def _one_selection(self) -> SubnetsConfig:
        if self.subnet_ids is not None and self.tags is not None:
            raise ValueError("set either subnet_ids or tags, not both")
        return self

    def filters(self) -> list[dict[str, Any]]:
        """The DescribeSubnets filters of the selection (all of them must match)."""
        # A filter rather than SubnetIds: SubnetIds fails the whole call when one is gone.
        if self.subnet_ids is not None:
            return [{"Name": "subnet-id", "Values": list(self.subnet_ids)}]
        tags = self.tags if self.tags is not None else {cluster_tag(self.cluster): None}
        out: list[dict[str, Any]] = []
        for key, wanted in sorted(tags.items()):
            if wanted is None:
                out.append({"Name": "tag-key", "Values": [key]})
            else:
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                out.append({"Name": f"tag:{key}", "Values": values})
        return out


def total_ips(cidr: str) -> int:
    """Usable addresses of an IPv4 CIDR: its size less the 5 AWS reserves."""
    size = ipaddress.IPv4Network(cidr, strict=False).num_addresses
    return max(size - RESERVED_PER_SUBNET, 0)


def subnet_data(subnet: Mapping[str, Any]) -> dict[str, Any]:
    """The `data` of a subnet as DescribeSubnets returns it (KeyError when a field is missing)."""
    if not subnet.get("CidrBlock"):
        raise ValueError("an IPv6-only subnet (no IPv4 CidrBlock) has no address count to record")
    cidr = str(subnet["CidrBlock"])
    return {
        "subnet_id": str(subnet["SubnetId"]),
        "zone": str(subnet["AvailabilityZone"]),
        "cidr": cidr,
        "available_ips": int(subnet["AvailableIpAddressCount"]),
        "total_ips": total_ips(cidr),
        "vpc_id": str(subnet["VpcId"]),
    }


class SubnetCollector:
    """Records a cluster's subnets each interval, and each one's deletion once."""

    def __init__(
        self,
        settings: ClientSettings,
        cfg: SubnetsConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = NAME_PREFIX + cfg.cluster
        self.source = f"{SOURCE_PREFIX}subnets/{cfg.cluster}"
        self.interval_seconds = parse_duration(cfg.interval)
        self.settings = settings
        self.cfg = cfg
        self.clock = clock

    def interval_start_us(self) -> int:
        """The start of the interval now is in (intervals are counted from the epoch)."""
        step = int(self.interval_seconds * 1_000_000)
        now = now_us(self.clock)
        return now - now % step

    def collect(self, sink: Sink) -> None:
        """List the subnets page by page; the last page also records the deletions."""
        seen = set((sink.cursor() or {}).get("seen") or [])
        at = self.interval_start_us()
        listed: set[str] = set()
        gone: list[str] = []
        for subnets, last in self._pages():
            raws = []
            for subnet in subnets:
                raw = mapped(self.name, subnet.get("SubnetId"), partial(self._event, subnet, at))
                if raw is not None and raw["data"]["subnet_id"] not in listed:
                    listed.add(raw["data"]["subnet_id"])
                    raws.append(raw)
            if not last:
                # What a page records counts as seen, so a run killed before its last page
                # still reports the deletion of a subnet that page recorded.
                if raws:
                    sink.emit(raws, {"seen": sorted(seen | listed)})
                continue
            gone = sorted(seen - listed)
            raws.extend(self._deleted(subnet_id, at) for subnet_id in gone)
            sink.emit(raws, {"seen": sorted(listed)})
        log.info("%s: %d subnet(s), %d deleted", self.name, len(listed), len(gone))
        if not listed:
            # Recorded (deletions included) and then failed, so the health shows the mistake.
            raise ValueError(
                f"no IPv4 subnet matches {self.cfg.filters()} in {self.settings.region}"
            )

    def _pages(self) -> Iterator[tuple[list[Mapping[str, Any]], bool]]:
        """(subnets, is last page) for each DescribeSubnets page."""
        client = self.settings.client("ec2")
        request: dict[str, Any] = {
            "Filters": self.cfg.filters(),
            "MaxResults": self.cfg.page_size,
        }
        tokens: set[str] = set()
        while True:
            page = client.describe_subnets(**request)
            token = page.get("NextToken")
            # EC2 may answer a filtered page with no items and a token: keep going.
            last = not token or token in tokens
            yield list(page.get("Subnets") or []), last
            if last:
                return
            tokens.add(token)
            request["NextToken"] = token

    def _event(self, subnet: Mapping[str, Any], at: int) -> dict[str, Any] | None:
        data = subnet_data(subnet)
        digest = short_digest(data, self.cfg.cluster)
        return make_event(
            source=self.source,
            event_id=f"{data['subnet_id']}/{format_us(at)}/{digest}",
            event_type=EventType.SUBNET_STATUS,
            time_us=at,
            cluster=self.cfg.cluster,
            data=data,
        )

    def _deleted(self, subnet_id: str, at: int) -> dict[str, Any]:
        raw = make_event(
            source=self.source,
            event_id=f"{subnet_id}/{format_us(at)}/deleted",
            event_type=EventType.SUBNET_STATUS,
            time_us=at,
            cluster=self.cfg.cluster,
            data={"subnet_id": subnet_id, "deleted": True},
        )
        if raw is None:  # only ids the collector itself recorded reach here
            raise ValueError(f"subnet id {subnet_id!r} is not a contract name")
        return raw

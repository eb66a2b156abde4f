"""What the AWS collectors share: per-source client settings, boto3 clients, times and ids."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import boto3
import botocore.session
import orjson
from botocore.config import Config
from botocore.exceptions import UnknownRegionError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ingest.collectors.runtime import parse_duration
from store.contract import MAX_ID_LENGTH, ContractError, event_to_cloudevent, validate_event
from store.timefmt import TimeFormatError, datetime_to_us, parse_rfc3339_us

if TYPE_CHECKING:
    from mypy_boto3_budgets.client import BudgetsClient
    from mypy_boto3_ce.client import CostExplorerClient
    from mypy_boto3_guardduty.client import GuardDutyClient
    from mypy_boto3_securityhub.client import SecurityHubClient

log = logging.getLogger("opsledger.collectors.aws")

SOURCE_PREFIX: Final = "opsledger/collector/aws/"
USER_AGENT_EXTRA: Final = "opsledger"

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9_.@+=,-]{1,128}$")


def check_region(value: str) -> str:
    """A region name like `us-gov-west-1`, or ValueError."""
    if not _REGION_RE.match(value):
        raise ValueError(f"{value!r} is not an AWS region name like us-gov-west-1")
    return value


def partition_of(region: str) -> str:
    """The partition of a region from botocore's endpoint data: `aws`, `aws-us-gov`, `aws-cn`…"""
    try:
        return str(botocore.session.get_session().get_partition_for_region(region))
    except UnknownRegionError:
        raise ValueError(f"region {region!r} is in no partition botocore knows") from None


def check_endpoint_url(value: str | None) -> str | None:
    """An http(s) URL without credentials, or ValueError."""
    if value is None:
        return None
    if not re.match(r"^https?://[^/\s@]+(/\S*)?$", value):
        raise ValueError("must be an http:// or https:// URL without user info")
    return value.rstrip("/")


class SourceConfig(BaseModel):
    """Settings every AWS source has: its schedule and where its API calls go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: str = Field("15m", description="time between scheduled runs")
    region: str | None = Field(
        None, description="call this region instead of the top-level `region`"
    )
    endpoint_url: str | None = Field(
        None, description="call this URL instead of the top-level or standard endpoint"
    )
    profile: str | None = Field(
        None,
        description="a named profile of the shared AWS config file (standard chain otherwise)",
    )

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return None if value is None else check_region(value)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_endpoint_url(value)

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        if value is not None and not _PROFILE_RE.match(value):
            raise ValueError("must be a profile name (letters, digits and _.@+=,-)")
        return value


class ClientSettings:
    """How one source reaches its AWS API; clients are made on first use and then reused.

    Credentials always come from botocore's standard chain (environment, web identity for
    IRSA, the container credentials endpoint for EKS Pod Identity, a named profile, instance
    metadata), which refreshes them itself; nothing here reads or logs them.
    """

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None,
        profile: str | None,
        max_attempts: int,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.region = region
        self.partition = partition_of(region)
        self.endpoint_url = endpoint_url
        self.profile = profile
        # Adaptive mode retries throttling with backoff and also rate-limits the client
        # itself once it has been throttled (Cost Explorer and GuardDuty throttle readily).
        # `total_max_attempts` counts the first attempt too; botocore's `max_attempts` key
        # would count only the retries (and becomes total_max_attempts = N + 1).
        self.config = Config(
            region_name=region,
            retries={"mode": "adaptive", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            user_agent_extra=USER_AGENT_EXTRA,
        )
        self._clients: dict[str, Any] = {}

    @overload
    def client(self, service: Literal["guardduty"]) -> GuardDutyClient: ...
    @overload
    def client(self, service: Literal["securityhub"]) -> SecurityHubClient: ...
    @overload
    def client(self, service: Literal["ce"]) -> CostExplorerClient: ...
    @overload
    def client(self, service: Literal["budgets"]) -> BudgetsClient: ...
    # Untyped: the EC2 stubs are not among the dev dependencies, for one call (network.py).
    @overload
    def client(self, service: Literal["ec2"]) -> Any: ...
    def client(self, service: str) -> Any:
        """The boto3 client of `service` for this source (one per source, kept for its limiter)."""
        made = self._clients.get(service)
        if made is None:
            # A Session per source: sessions are not thread-safe, clients are.
            session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
            made = session.client(
                service,  # type: ignore[call-overload]
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=self.config,
            )
            self._clients[service] = made
        return made


# -- times ------------------------------------------------------------------------------------


def aws_time_us(value: Any) -> int:
    """UTC microseconds of an AWS timestamp: ISO 8601 text (naive means UTC) or a datetime."""
    if isinstance(value, datetime):
        return datetime_to_us(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    try:
        return parse_rfc3339_us(value)
    except TimeFormatError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return datetime_to_us(parsed)


def now_us(clock: Callable[[], float]) -> int:
    """The clock's now in UTC microseconds."""
    return int(clock() * 1_000_000)


# -- events -----------------------------------------------------------------------------------


def short_digest(*parts: Any) -> str:
    """12 hex digits identifying JSON-able content (stable across runs and processes)."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=6).hexdigest()


def bounded_id(head: str, tail: str) -> str:
    """`head/tail`, with `head` replaced by its hash when the whole would be too long."""
    out = f"{head}/{tail}"
    if len(out) <= MAX_ID_LENGTH:
        return out
    return f"sha256:{hashlib.sha256(head.encode()).hexdigest()[:32]}/{tail}"


def mapped(
    source: str, item_id: Any, build: Callable[[], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """`build()`, or None (logged) when a source item lacks what the mapping needs."""
    try:
        return build()
    except (KeyError, TypeError, ValueError) as exc:
        log.warning(
            "%s: skipped %s, cannot map it: %s: %s", source, item_id, type(exc).__name__, exc
        )
        return None


def make_event(
    *,
    source: str,
    event_id: str,
    event_type: str,
    time_us: int,
    cluster: str | None,
    data: Mapping[str, Any],
) -> dict[str, Any] | None:
    """A CloudEvent that passes the contract, or None (logged) when the item cannot be one.

    One malformed source item must not wedge a collector on every run, so it is skipped
    with a warning naming it, and the cursor moves on.
    """
    raw = event_to_cloudevent(
        source=source,
        event_id=event_id,
        event_type=event_type,
        time_us=time_us,
        cluster=cluster,
        subject=None,
        data=data,
    )
    try:
        validate_event(raw)
    except ContractError as exc:
        log.warning("%s: skipped %s, not a contract event: %s", source, event_id, exc)
        return None
    return raw

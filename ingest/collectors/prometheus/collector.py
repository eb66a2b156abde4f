"""The Prometheus collector: canonical metrics from `query_range`, back-filled chunk by chunk.

Each chunk [start, end) of the step grid is queried once per metric and emitted with the
cursor `{"end": end}` in one `sink.emit` call, so a crash resumes right after the last
committed chunk. Event ids name (metric, chunk, step, query hash) and the source names the
cluster, so a chunk fetched again is a duplicate, never a second copy.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.collectors.prometheus.promql import CANONICAL_LABELS, DEFAULT_QUERIES, REQUIRED_LABELS
from ingest.collectors.runtime import Collector, Sink, parse_duration
from store.contract import MAX_SAMPLES_PER_EVENT, METRIC_SAMPLES, SPECVERSION
from store.timefmt import format_us

log = logging.getLogger("opsledger.collectors.prometheus")

SOURCE_PREFIX: Final = "opsledger/collector/prometheus/"
#: Prometheus refuses a range query returning more points per series than this.
MAX_POINTS_PER_SERIES: Final = 11_000
#: Events are split below the contract's limit so that validation stays quick.
SAMPLES_PER_EVENT: Final = min(500_000, MAX_SAMPLES_PER_EVENT)
USER_AGENT: Final = "opsledger-prometheus-collector/1"

_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_METRIC_NAME_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class PrometheusError(RuntimeError):
    """Prometheus (or the proxy in front of it) refused or failed a query."""


class SigV4Config(BaseModel):
    """Sign requests with AWS SigV4 (Amazon Managed Service for Prometheus)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(description="the workspace's region, e.g. us-gov-west-1")
    service: str = Field("aps", description="the signing name; `aps` for AMP")

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION_RE.match(value):
            raise ValueError(f"{value!r} is not an AWS region name like us-gov-west-1")
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9-]{1,64}", value):
            raise ValueError("must be an AWS signing name like aps")
        return value


class PrometheusConfig(BaseModel):
    """One Prometheus-compatible endpoint feeding one cluster's canonical metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="base URL; `/api/v1/query_range` is appended (AMP: the workspace URL)"
    )
    interval: str = Field("5m", description="time between scheduled runs")
    step: str = Field("60s", description="resolution of the samples (query_range step)")
    backfill: str = Field("35d", description="how far back the first run reaches")
    chunk: str = Field("6h", description="time range of one query and one commit")
    lag: str = Field("2m", description="never query later than now minus this")
    timeout: str = Field("30s", description="HTTP timeout of one query")
    queries: dict[str, str] = Field(
        default_factory=dict,
        description="metric name → PromQL overriding a default; an empty string disables it",
    )
    bearer_token_env: str | None = Field(
        None, description="environment variable holding a bearer token"
    )
    bearer_token_file: Path | None = Field(
        None, description="file holding a bearer token, read on every run"
    )
    sigv4: SigV4Config | None = Field(None, description="sign requests with AWS SigV4")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = httpx.URL(value)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http:// or https:// URL")
        if parsed.query or parsed.fragment:
            raise ValueError("must not have a query string or fragment")
        if parsed.userinfo:
            raise ValueError("must not hold credentials; use bearer_token_env or _file")
        return value.rstrip("/")

    @field_validator("interval", "step", "chunk", "timeout")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("backfill", "lag")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("queries")
    @classmethod
    def _queries(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _METRIC_NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        return value

    @field_validator("bearer_token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.match(value):
            raise ValueError("must be the name of an environment variable")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusConfig:
        step, chunk = self.step_seconds, self.chunk_seconds
        if chunk % step:
            raise ValueError(f"chunk {self.chunk} must be a whole number of steps ({self.step})")
        if chunk // step > MAX_POINTS_PER_SERIES:
            raise ValueError(
                f"chunk {self.chunk} holds more than {MAX_POINTS_PER_SERIES} steps of "
                f"{self.step}, more than Prometheus returns per series"
            )
        auths = [self.bearer_token_env, self.bearer_token_file, self.sigv4]
        if sum(a is not None for a in auths) > 1:
            raise ValueError("set at most one of bearer_token_env, bearer_token_file, sigv4")
        if not self.effective_queries():
            raise ValueError("every query is disabled")
        return self

    @property
    def step_seconds(self) -> int:
        """The step in whole seconds."""
        return int(parse_duration(self.step))

    @property
    def chunk_seconds(self) -> int:
        """The chunk length in whole seconds."""
        return int(parse_duration(self.chunk))

    def effective_queries(self) -> dict[str, str]:
        """The defaults overlaid with `queries`, without the disabled ones, by metric name."""
        merged = {**DEFAULT_QUERIES, **self.queries}
        return {name: q.strip() for name, q in sorted(merged.items()) if q.strip()}


class PrometheusCollector:
    """Collects every configured metric of one cluster; see the module docstring."""

    def __init__(
        self, cluster: str, cfg: PrometheusConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not _CLUSTER_RE.match(cluster):
            raise ValueError(f"cluster {cluster!r} must be 1-253 letters, digits, '.', '_', '-'")
        self.cluster = cluster
        self.cfg = cfg
        self.name = f"prometheus/{cluster}"
        self.source = SOURCE_PREFIX + cluster
        self.interval_seconds = parse_duration(cfg.interval)
        self.step = cfg.step_seconds
        self.chunk = cfg.chunk_seconds
        self.lag = parse_duration(cfg.lag)
        self.backfill_steps = math.ceil(parse_duration(cfg.backfill) / self.step)
        self.queries = cfg.effective_queries()
        # The query's text is part of each event id: an edited query gets new ids, not conflicts.
        self.query_hash = {
            name: hashlib.sha256(q.encode()).hexdigest()[:12] for name, q in self.queries.items()
        }
        self._clock = clock

    def window(self, cursor: Mapping[str, Any] | None) -> tuple[int, int]:
        """[start, end) in Unix seconds on the step grid that a run at the clock's now covers."""
        step = self.step
        # The newest timestamp is the last step at or before now - lag: samples that arrive
        # late (scrape interval, remote-write batching, AMP ingestion) are in by then.
        end = (math.floor((self._clock() - self.lag) / step) + 1) * step
        oldest = end - self.backfill_steps * step
        if cursor is None:
            return oldest, end
        last = cursor.get("end")
        if type(last) is not int:
            raise PrometheusError(f"{self.name}: cursor {dict(cursor)!r} has no integer 'end'")
        # A cursor off the grid (the step was changed) moves up to the next step.
        return max(-(-last // step) * step, oldest), end

    def chunks(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """[start, end) cut at multiples of the chunk length (the same cuts on every run)."""
        lo = start
        while lo < end:
            hi = min((lo // self.chunk + 1) * self.chunk, end)
            yield lo, hi
            lo = hi

    def collect(self, sink: Sink) -> None:
        """Query each chunk from the cursor to now - lag, committing chunk by chunk."""
        cursor = sink.cursor()
        start, end = self.window(cursor)
        if start >= end:
            if cursor is None:  # nothing to back-fill: still record where the next run starts
                sink.emit([], {"end": end})
            return
        log.info(
            "%s: collecting %s to %s",
            self.name,
            format_us(start * 1_000_000),
            format_us(end * 1_000_000),
        )
        with self._client() as client:
            for lo, hi in self.chunks(start, end):
                raws: list[dict[str, Any]] = []
                for metric, query in self.queries.items():
                    result = self._query(client, metric, query, lo, hi)
                    raws.extend(self._events(metric, result, lo, hi))
                sink.emit(raws, {"end": hi})
                log.debug("%s: committed [%d, %d): %d events", self.name, lo, hi, len(raws))

    # -- HTTP ------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        auth: httpx.Auth | None = None
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.cfg.sigv4 is not None:
            auth = SigV4Auth(self.cfg.sigv4.region, self.cfg.sigv4.service)
        else:
            token = self._bearer_token()
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            timeout=parse_duration(self.cfg.timeout),
            headers=headers,
            auth=auth,
            follow_redirects=False,
            transport=httpx.HTTPTransport(retries=2),
        )

    def _bearer_token(self) -> str | None:
        """The token from the named variable or file (never logged, never in an error)."""
        if self.cfg.bearer_token_env is not None:
            token = os.environ.get(self.cfg.bearer_token_env, "").strip()
            if not token:
                raise PrometheusError(
                    f"{self.name}: environment variable {self.cfg.bearer_token_env} is not set"
                )
            return token
        if self.cfg.bearer_token_file is not None:
            try:
                # Read on every run: projected service-account tokens are rotated.
                token = self.cfg.bearer_token_file.read_text().strip()
            except OSError as exc:
                raise PrometheusError(
                    f"{self.name}: cannot read bearer_token_file: {exc.strerror}"
                ) from None
            if not token:
                raise PrometheusError(f"{self.name}: bearer_token_file is empty")
            return token
        return None

    def _query(
        self, client: httpx.Client, metric: str, query: str, lo: int, hi: int
    ) -> list[dict[str, Any]]:
        """The matrix of one range query evaluated at lo, lo + step, …, hi - step."""
        form = {
            "query": query,
            "start": str(lo),
            "end": str(hi - self.step),
            "step": str(self.step),
        }
        url = f"{self.cfg.url}/api/v1/query_range"
        try:
            # POST: long PromQL fits in a form body where a URL might be cut by a proxy.
            resp = client.post(url, data=form)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{metric}: {type(exc).__name__} for {url}: {exc}") from None
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            snippet = resp.text[:200].strip()
            raise PrometheusError(
                f"{metric}: HTTP {resp.status_code} from {url}: {snippet}"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body if not isinstance(body, dict) else body.get("error") or body
            kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
            raise PrometheusError(
                f"{metric}: HTTP {resp.status_code} from {url}: {kind}: {str(detail)[:500]}"
            )
        for warning in body.get("warnings") or ():
            log.warning("%s: %s: Prometheus warns: %s", self.name, metric, warning)
        data = body.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise PrometheusError(f"{metric}: expected a matrix, got {data.get('resultType')!r}")
        result: list[dict[str, Any]] = data["result"]
        return result

    # -- events ----------------------------------------------------------------------------

    def _events(
        self, metric: str, result: list[dict[str, Any]], lo: int, hi: int
    ) -> list[dict[str, Any]]:
        """The chunk's samples of one metric as contract events (none when it has no sample)."""
        keep = CANONICAL_LABELS.get(metric)
        required = REQUIRED_LABELS.get(metric, ())
        series: dict[tuple[tuple[str, str], ...], list[dict[str, Any]]] = {}
        seen: set[tuple[tuple[str, str], ...]] = set()
        unnamed = 0
        for item in result:
            raw_labels: dict[str, str] = item.get("metric") or {}
            if keep is None:
                labels = {k: v for k, v in raw_labels.items() if k != "__name__"}
            else:
                labels = {k: raw_labels[k] for k in keep if k in raw_labels}
            if any(k not in labels for k in required):
                unnamed += 1
                continue
            key = tuple(sorted(labels.items()))
            if key in seen:
                raise PrometheusError(
                    f"{metric}: two series reduce to the labels {labels}; aggregate the "
                    f"query by ({', '.join(keep or ())})"
                )
            seen.add(key)
            samples = []
            for ts, text in item.get("values") or ():
                value = float(text)
                # NaN and ±Inf (a division by zero, an empty denominator) are not gauges.
                if math.isfinite(value):
                    samples.append({"name": metric, "labels": labels, "ts": ts, "value": value})
            if samples:
                series[key] = samples
        if unnamed:
            log.warning(
                "%s: %s: dropped %d series without the labels %s",
                self.name,
                metric,
                unnamed,
                ", ".join(required),
            )
        parts: list[list[dict[str, Any]]] = [[]]
        for key in sorted(series):
            samples = series[key]
            if parts[-1] and len(parts[-1]) + len(samples) > SAMPLES_PER_EVENT:
                parts.append([])
            parts[-1].extend(samples)
        if not parts[0]:
            return []
        event_id = f"{metric}/{lo}-{hi}/{self.step}s/{self.query_hash[metric]}"
        return [
            {
                "specversion": SPECVERSION,
                "id": event_id if len(parts) == 1 else f"{event_id}/part{i}",
                "source": self.source,
                "type": METRIC_SAMPLES,
                # The newest instant the samples describe: the chunk's last step.
                "time": format_us((hi - self.step) * 1_000_000),
                "cluster": self.cluster,
                "datacontenttype": "application/json",
                "data": {"samples": part},
            }
            for i, part in enumerate(parts, 1)
        ]


class SigV4Auth(httpx.Auth):
    """Signs each request with AWS SigV4, credentials from botocore's standard chain.

    The chain: environment variables, the shared config and credentials files (profiles),
    web identity (EKS IRSA), container credentials (EKS Pod Identity), instance metadata.
    """

    requires_request_body = True

    def __init__(self, region: str, service: str) -> None:
        # botocore is imported here: only SigV4 users need it at run time.
        import botocore.session  # type: ignore[import-untyped, unused-ignore]

        self.region = region
        self.service = service
        credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise PrometheusError(
                "sigv4: no AWS credentials found (environment, profile, IRSA web identity, "
                "EKS Pod Identity or instance metadata)"
            )
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add Authorization, X-Amz-Date and (temporary credentials) X-Amz-Security-Token."""
        from botocore.auth import (  # type: ignore[import-untyped, unused-ignore]
            SigV4Auth as BotocoreSigV4,
        )
        from botocore.awsrequest import (  # type: ignore[import-untyped, unused-ignore]
            AWSRequest,
        )

        signed = {"Content-Type": request.headers.get("Content-Type", "")}
        if not signed["Content-Type"]:
            signed = {}
        aws = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=signed
        )
        # Frozen per request: refreshable credentials (IRSA, Pod Identity) renew themselves.
        creds = self._credentials.get_frozen_credentials()
        BotocoreSigV4(creds, self.service, self.region).add_auth(aws)
        for name, value in aws.headers.items():
            if name.lower() in ("authorization", "x-amz-date", "x-amz-security-token"):
                request.headers[name] = value
        yield request


def build(cluster: str, cfg: PrometheusConfig) -> Collector:
    """The collector `prometheus/<cluster>` for one Prometheus endpoint."""
    return PrometheusCollector(cluster, cfg)

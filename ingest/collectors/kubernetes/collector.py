"""The Kubernetes collector: Events, node, pod and NodePool status, samples of one cluster.

Each run takes a snapshot (nodes, pods and their owners, PVCs, metrics.k8s.io, the kubelets'
volume stats, NodePools) and then lists and watches Events for `watch_seconds`, resuming from
the resourceVersion in its cursor. Ids are stable per source item, so a re-run or a restart
finds duplicates, never doubles (docs/collectors.md, "Kubernetes" has the rules).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.collectors.kubernetes.api import (
    Api,
    Gone,
    KubernetesError,
    Retry,
    WatchInterrupted,
    connect,
)
from ingest.collectors.kubernetes.nodepools import nodepool_events, read_nodepools
from ingest.collectors.kubernetes.objects import (
    CORE_EVENTS,
    DEFAULT_NODEPOOL_LABELS,
    NEW_EVENTS,
    EventsApi,
    k8s_event,
    obj,
    text,
)
from ingest.collectors.kubernetes.snapshot import Snapshot, take_snapshot
from ingest.collectors.runtime import Collector, Sink, parse_duration
from store.contract import ContractError, validate_event

log = logging.getLogger("opsledger.collectors.kubernetes")

_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
#: Relists one run may do after 410 Gone before it gives up (the next run starts afresh).
MAX_RELISTS = 3


class KubernetesConfig(BaseModel):
    """How to reach one cluster's API server and what to collect from it."""

    model_config = ConfigDict(extra="forbid")

    in_cluster: bool = Field(False, description="Use the pod's ServiceAccount (in-cluster).")
    kubeconfig: str | None = Field(
        None, description="A kubeconfig file; unset: $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(None, description="The kubeconfig context; unset: its current.")
    interval: str = Field("1m", description="Time between runs (30s, 1m, 5m, …).")
    watch_seconds: float = Field(
        30.0, gt=0, description="How long each run watches Events; at most the interval."
    )
    pending_after: str = Field(
        "10m", description="A pod Pending this long gets the reason PendingTooLong."
    )
    events_api: Literal["v1", "events.k8s.io/v1"] = Field(
        "v1", description="Read core/v1 Events or events.k8s.io/v1 Events."
    )
    events_field_selector: str | None = Field(
        None, description="A field selector for Events, e.g. type=Warning."
    )
    nodepool_labels: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NODEPOOL_LABELS),
        min_length=1,
        description="Node labels naming the node pool, first match wins.",
    )
    usage: bool = Field(True, description="Read metrics.k8s.io (metrics-server) usage.")
    pvc_usage: bool = Field(
        True, description="Read PVC usage from the kubelets' stats (needs nodes/proxy)."
    )
    workloads: bool = Field(
        True, description="Send per-container samples (reads ReplicaSets and Jobs for owners)."
    )
    nodepools: bool = Field(True, description="Read karpenter.sh/v1 NodePools.")
    page_size: int = Field(500, ge=1, le=10_000, description="Items per list page.")
    request_timeout_seconds: float = Field(60.0, gt=0, description="Read timeout of a request.")
    retries: int = Field(4, ge=0, le=10, description="Retries of a throttled or failed request.")
    backoff_seconds: float = Field(0.5, gt=0, description="First back-off; doubles each retry.")
    max_backoff_seconds: float = Field(
        30.0, gt=0, description="Longest back-off, and longest Retry-After honoured."
    )

    @field_validator("interval", "pending_after")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesConfig:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("in_cluster excludes kubeconfig and context")
        if self.watch_seconds > parse_duration(self.interval):
            raise ValueError("watch_seconds must not exceed the interval")
        return self


class KubernetesCollector:
    """One cluster's collector (`kubernetes/<cluster>`)."""

    def __init__(
        self,
        cluster: str,
        cfg: KubernetesConfig,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not _CLUSTER_RE.match(cluster):
            raise ValueError(f"cluster {cluster!r}: 1-253 letters, digits, '.', '_' or '-'")
        self.cluster = cluster
        self.cfg = cfg
        self.name = f"kubernetes/{cluster}"
        self.source = f"opsledger/collector/kubernetes/{cluster}"
        self.interval_seconds = parse_duration(cfg.interval)
        self.pending_after_us = int(parse_duration(cfg.pending_after) * 1_000_000)
        self.events_api: EventsApi = CORE_EVENTS if cfg.events_api == "v1" else NEW_EVENTS
        self.clock = clock
        self.retry = Retry(cfg.retries, cfg.backoff_seconds, cfg.max_backoff_seconds, sleep)
        self._api: Api | None = None
        #: The id last recorded per node and pod: an unchanged status is not even sent again.
        self._recorded: dict[str, str] = {}

    def now_us(self) -> int:
        """The collector's clock in UTC microseconds."""
        return int(self.clock() * 1_000_000)

    def close(self) -> None:
        """Release the API client's connections."""
        if self._api is not None:
            self._api.close()
            self._api = None

    def _connect(self) -> Api:
        if self._api is None:
            try:
                api_client = connect(
                    in_cluster=self.cfg.in_cluster,
                    kubeconfig=self.cfg.kubeconfig,
                    context=self.cfg.context,
                )
            except (ConfigException, OSError) as exc:
                raise KubernetesError(f"loading the cluster's credentials: {exc}") from None
            self._api = Api(
                api_client,
                self.retry,
                request_timeout=self.cfg.request_timeout_seconds,
                page_size=self.cfg.page_size,
            )
        return self._api

    def collect(self, sink: Sink) -> None:
        """Take a snapshot, then list and watch Events for `watch_seconds`."""
        api = self._connect()
        run = _Run(self, api, sink)
        failures: list[str] = []
        try:
            for step in (run.snapshot, lambda: run.events(self.cfg.watch_seconds)):
                try:
                    step()
                except KubernetesError as exc:
                    failures.append(str(exc))
                    if exc.status == 401:  # expired credentials: load them again next run
                        self.close()
                        break
        finally:
            run.flush()
        if failures:
            raise KubernetesError("; ".join(failures))


class _Run:
    """One run's state: the cursor as committed so far and what to commit next."""

    def __init__(self, collector: KubernetesCollector, api: Api, sink: Sink) -> None:
        self.c = collector
        self.api = api
        self.sink = sink
        self.cursor: dict[str, Any] = dict(sink.cursor() or {})
        self.dirty = False

    def emit(self, raws: Sequence[Mapping[str, Any]]) -> None:
        """Append the valid events with the cursor as it stands, in one transaction."""
        good = []
        for raw in raws:
            try:
                validate_event(raw)
            except ContractError as exc:
                # One odd object must not stall the collector: skip it, loudly.
                log.warning("%s: skipped %s: %s", self.c.name, raw.get("id"), exc)
                continue
            good.append(raw)
        self.sink.emit(good, self.cursor)
        self.dirty = False

    def flush(self) -> None:
        """Commit a cursor moved by bookmarks or deletions alone."""
        if self.dirty:
            self.emit([])

    # -- snapshot: node and pod status, samples ---------------------------------------------

    def snapshot(self) -> None:
        """Nodes, pods, PVCs, usage, NodePools: changed statuses and this scrape's samples."""
        snap: Snapshot = take_snapshot(
            self.api,
            cluster=self.c.cluster,
            source=self.c.source,
            now_us=self.c.now_us(),
            pending_after_us=self.c.pending_after_us,
            nodepool_labels=self.c.cfg.nodepool_labels,
            usage=self.c.cfg.usage,
            pvc_usage=self.c.cfg.pvc_usage,
            workloads=self.c.cfg.workloads,
        )
        pools = read_nodepools(self.api) if self.c.cfg.nodepools else None
        sent = obj(self.cursor.get("nodepools"))
        pool_events: list[dict[str, Any]] = []
        if pools is not None:  # unreadable: neither changed nor gone
            pool_events, self.cursor["nodepools"] = nodepool_events(
                sent, pools, source=self.c.source, cluster=self.c.cluster, now_us=self.c.now_us()
            )
        recorded = self.c._recorded
        fresh = {k: v for k, v in snap.statuses.items() if recorded.get(k) != v["id"]}
        try:
            self.emit([*fresh.values(), *snap.samples, *pool_events])
        except BaseException:
            self.cursor["nodepools"] = dict(sent)  # not committed: not sent
            raise
        # Forget objects gone from the cluster, remember what was just recorded.
        for key in set(recorded) - set(snap.statuses):
            del recorded[key]
        recorded.update({k: v["id"] for k, v in fresh.items()})

    # -- Events: list, then watch from the list's resourceVersion ---------------------------

    def _events_fn(self) -> Callable[..., Any]:
        if self.c.events_api is CORE_EVENTS:
            return self.api.core.list_event_for_all_namespaces
        return self.api.events_v1.list_event_for_all_namespaces

    def _selector(self) -> dict[str, Any]:
        selector = self.c.cfg.events_field_selector
        return {"field_selector": selector} if selector else {}

    def _set_rv(self, rv: str | None) -> None:
        self.cursor["events"] = {"api": self.c.events_api.api_version, "resourceVersion": rv}
        self.dirty = True

    def _record(self, item: Mapping[str, Any]) -> dict[str, Any] | None:
        return k8s_event(
            item,
            self.c.events_api,
            source=self.c.source,
            cluster=self.c.cluster,
            now_us=self.c.now_us(),
        )

    def list_events(self) -> str:
        """Record every Event listed (known versions are duplicates); the list's version."""
        self._set_rv(None)  # until the last page, a crash must lead to a new list
        for attempt in range(2):
            try:
                rv: str | None = None
                for page, list_rv, last in self.api.list_pages(
                    "list events", self._events_fn(), **self._selector()
                ):
                    rv = rv or list_rv
                    if last:
                        self._set_rv(rv)
                    self.emit([e for e in map(self._record, page) if e is not None])
                if rv is None:
                    raise KubernetesError("list events: the list has no resourceVersion")
                return rv
            except Gone:  # the continue token expired mid-list: start over
                if attempt:
                    raise KubernetesError("list events: HTTP 410 Gone twice", 410) from None
        raise AssertionError("unreachable")

    def events(self, seconds: float) -> None:
        """List if the cursor has no usable version, then watch for `seconds` in all."""
        deadline = time.monotonic() + seconds
        state = obj(self.cursor.get("events"))
        rv = text(state.get("resourceVersion"))
        if state.get("api") != self.c.events_api.api_version:
            rv = None
        relists = interruptions = idle = 0
        while True:
            if rv is None:
                rv = self.list_events()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            seen = 0
            try:
                for change in self.api.watch(
                    "watch events", self._events_fn(), rv, remaining, **self._selector()
                ):
                    new_rv = text(obj(obj(change["object"]).get("metadata")).get("resourceVersion"))
                    if new_rv is None:
                        continue
                    rv = new_rv
                    self._set_rv(rv)
                    seen += 1
                    interruptions = idle = 0
                    if change.get("type") in ("ADDED", "MODIFIED"):
                        record = self._record(change["object"])
                        self.emit([record] if record is not None else [])
                    # DELETED (an Event's TTL ran out) and BOOKMARK only move the cursor.
                # A server that keeps ending empty watches early is not waited on all run.
                idle = 0 if seen else idle + 1
                if idle >= 3:
                    return
            except Gone:
                relists += 1
                if relists > MAX_RELISTS:
                    raise KubernetesError("watch events: HTTP 410 Gone after every list") from None
                log.info("%s: resourceVersion %s expired; listing again", self.c.name, rv)
                rv = None
            except WatchInterrupted as exc:
                interruptions += 1
                wait = self.c.retry.delay(interruptions - 1, None)
                if wait is None:
                    raise KubernetesError(str(exc)) from None
                log.info("%s: %s; resuming from %s", self.c.name, exc, rv)
                self.c.retry.sleep(min(wait, max(deadline - time.monotonic(), 0.0)))


def build(cluster: str, cfg: KubernetesConfig) -> Collector:
    """The collector `kubernetes/<cluster>` of one configured cluster."""
    return KubernetesCollector(cluster, cfg)

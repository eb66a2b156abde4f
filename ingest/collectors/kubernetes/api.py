"""Talking to one Kubernetes API server: raw JSON lists and watches with bounded retries."""

from __future__ import annotations

import email.utils
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("opsledger.collectors.kubernetes")

#: Statuses worth another try: throttled (429) and the server's own failures.
RETRYABLE: Final = frozenset({429, 500, 502, 503, 504})


class KubernetesError(RuntimeError):
    """A call to the API server failed for good (after its retries); the message has no secrets."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Gone(Exception):
    """HTTP 410: the resourceVersion or continue token is too old; list again from scratch."""


class WatchInterrupted(Exception):
    """A watch stream broke off (connection closed or silent) before its time was up."""


def connect(*, in_cluster: bool, kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """An API client from the pod's ServiceAccount or from a kubeconfig file and context.

    Loading never writes the kubeconfig back (tokens refreshed by exec plugins stay in memory).
    """
    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    # Retries are ours (bounded, with back-off and Retry-After); urllib3 must not add its own.
    configuration.retries = 0
    return client.ApiClient(configuration)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a Retry-After header asks for (seconds or an HTTP date), None without one."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Retry:
    """Bounded retries: exponential back-off with jitter, or the server's Retry-After."""

    retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def delay(self, attempt: int, asked: float | None) -> float | None:
        """How long to wait before try `attempt + 1`, None to give up."""
        if attempt >= self.retries:
            return None
        if asked is not None:
            # Waiting less than the server asks is rude; waiting longer than we may, pointless.
            return asked if asked <= self.max_backoff_seconds else None
        cap = min(self.max_backoff_seconds, self.backoff_seconds * 2.0**attempt)
        return random.uniform(cap / 2, cap)


def describe(exc: BaseException) -> str:
    """A short description of a failed call: the HTTP status or the transport error's kind."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".rstrip()
    return type(exc).__name__


class Api:
    """The few calls the collector makes, each returning decoded JSON as the server sent it."""

    def __init__(
        self, api_client: client.ApiClient, retry: Retry, *, request_timeout: float, page_size: int
    ) -> None:
        self.client = api_client
        self.retry = retry
        self.request_timeout = request_timeout
        self.page_size = page_size
        self.core = client.CoreV1Api(api_client)
        self.events_v1 = client.EventsV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    # -- plain requests ----------------------------------------------------------------------

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()` with the bounded retry rules; 410 raises Gone, a final failure KubernetesError."""
        attempt = 0
        while True:
            try:
                return fn()
            except ApiException as exc:
                if exc.status == 410:
                    raise Gone(what) from None
                wait = (
                    self.retry.delay(attempt, retry_after_seconds(exc.headers))
                    if exc.status in RETRYABLE
                    else None
                )
                if wait is None:
                    raise KubernetesError(f"{what}: {describe(exc)}", exc.status) from None
            except (urllib3.exceptions.HTTPError, orjson.JSONDecodeError) as exc:
                wait = self.retry.delay(attempt, None)
                if wait is None:
                    raise KubernetesError(f"{what}: {describe(exc)}") from None
            attempt += 1
            log.info("%s failed; try %d in %.2f s", what, attempt + 1, wait)
            self.retry.sleep(wait)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """The decoded JSON body of the raw response `fn()` returns, with retries."""

        def read() -> Any:
            resp = fn()
            try:
                return orjson.loads(resp.data)
            finally:
                resp.release_conn()

        return self._retrying(what, read)

    def list_pages(
        self, what: str, fn: Callable[..., Any], **kwargs: Any
    ) -> Iterator[tuple[list[dict[str, Any]], str | None, bool]]:
        """Pages of a list: (items, the list's resourceVersion, whether it is the last page).

        Pages share one snapshot; an expired continue token (410) raises Gone.
        """
        token: str | None = None
        while True:
            page = self._call(
                what,
                functools.partial(
                    fn,
                    limit=self.page_size,
                    _continue=token,
                    _preload_content=False,
                    _request_timeout=(10.0, self.request_timeout),
                    **kwargs,
                ),
            )
            meta = page.get("metadata") or {}
            found = [i for i in page.get("items") or [] if isinstance(i, dict)]
            token = meta.get("continue") or None
            yield found, meta.get("resourceVersion") or None, token is None
            if token is None:
                return

    def list_all(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a list, page by page (restarting once if a continue token expires)."""
        for attempt in range(2):
            try:
                return [i for page, _, _ in self.list_pages(what, fn, **kwargs) for i in page]
            except Gone:
                if attempt:
                    raise KubernetesError(f"{what}: HTTP 410 Gone twice", 410) from None
        raise AssertionError("unreachable")

    def get_path(self, what: str, path: str, **path_params: str) -> Any:
        """GET a path (e.g. a node proxy) through the client's auth, decoded from JSON."""

        def call() -> Any:
            params = self.client.param_serialize(
                method="GET",
                resource_path=path,
                path_params=path_params,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            resp = self.client.call_api(*params, _request_timeout=(10.0, self.request_timeout))
            if not 200 <= resp.status <= 299:
                resp.read()
                raise ApiException.from_response(http_resp=resp, body=None, data=None)
            return resp.response

        return self._call(what, call)

    def custom_list(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        """Every item of a cluster-wide list of an API group's objects (metrics, custom)."""
        return self.list_all(
            f"list {group} {plural}",
            lambda **kw: self.custom.list_cluster_custom_object(group, version, plural, **kw),
        )

    def metrics(self, plural: str) -> list[dict[str, Any]]:
        """metrics.k8s.io NodeMetrics or PodMetrics items."""
        return self.custom_list("metrics.k8s.io", "v1beta1", plural)

    # -- watches -----------------------------------------------------------------------------

    def watch(
        self,
        what: str,
        fn: Callable[..., Any],
        resource_version: str,
        seconds: float,
        **kwargs: Any,
    ) -> Iterator[dict[str, Any]]:
        """Raw watch events (ADDED, MODIFIED, DELETED, BOOKMARK) for at most `seconds`.

        Opening is retried like any request; a 410 (as a status or an ERROR event) raises Gone;
        a stream that breaks off early raises WatchInterrupted. The stream ends quietly when
        its time is up.
        """
        deadline = time.monotonic() + seconds
        # The server ends the watch after timeoutSeconds; the read timeout ends it here too
        # should the server not, and tells a silent connection from a quiet one.
        read_timeout = max(seconds, 0.05) + 5.0
        resp = self._retrying(
            what,
            lambda: fn(
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=max(1, int(seconds + 0.999)),
                _preload_content=False,
                _request_timeout=(10.0, read_timeout),
                **kwargs,
            ),
        )
        try:
            for line in iter_resp_lines(resp):
                if not line:
                    continue
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise WatchInterrupted(f"{what}: malformed watch line") from None
                if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                    continue
                if event.get("type") == "ERROR":
                    status = event["object"]
                    if status.get("code") == 410:
                        raise Gone(what)
                    # Any other error ends this watch; resuming it is the remedy.
                    code, reason = status.get("code"), status.get("reason")
                    raise WatchInterrupted(f"{what}: watch error {code} {reason}")
                yield event
                if time.monotonic() >= deadline:
                    return
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() < deadline:
                raise WatchInterrupted(f"{what}: {describe(exc)}") from None
        finally:
            # Close first: a half-read stream must not go back to the pool for reuse.
            resp.close()
            resp.release_conn()

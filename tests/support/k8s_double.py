"""A Kubernetes API server double on 127.0.0.1: recorded lists, watches, metrics, faults.

It serves the JSON of tests/k8s_fixtures in the API's own shapes (list items without kind and
apiVersion, watch objects with them), keeps an Event change log with resourceVersions for
watches, pages lists with continue tokens, and injects faults: an HTTP status (429 with
Retry-After, 500, 410), a 410 ERROR event in a watch, or a watch cut off mid-stream.
"""

from __future__ import annotations

import copy
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support import TESTS

FIXTURES = TESTS / "k8s_fixtures"
CORE_EVENTS = "/api/v1/events"
NEW_EVENTS = "/apis/events.k8s.io/v1/events"
LISTS = {
    "/api/v1/nodes": "nodes.json",
    "/api/v1/pods": "pods.json",
    "/api/v1/persistentvolumeclaims": "pvcs.json",
    "/apis/metrics.k8s.io/v1beta1/nodes": "node_metrics.json",
    "/apis/metrics.k8s.io/v1beta1/pods": "pod_metrics.json",
    # Pods' owners (ReplicaSet → Deployment, Job → CronJob) and Karpenter's NodePools (a
    # test pops the path to play a cluster without the CRD: the double then answers 404).
    "/apis/apps/v1/replicasets": "replicasets.json",
    "/apis/batch/v1/jobs": "jobs.json",
    "/apis/karpenter.sh/v1/nodepools": "nodepools.json",
}


def load(name: str) -> Any:
    """A fixture file's JSON."""
    return json.loads((FIXTURES / name).read_text())


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A meta/v1 Status object, as the API server sends with errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Fault:
    """What the next `times` matching requests get instead of a normal answer."""

    path: str
    watch: bool | None = None
    status: int | None = None
    retry_after: str | None = None
    gone_event: bool = False
    drop_after: int | None = None
    on_continue: bool = False
    times: int = 1

    def matches(self, path: str, watch: bool, has_continue: bool) -> bool:
        """Whether the fault applies to this request."""
        return (
            self.times > 0
            and path == self.path
            and (self.watch is None or self.watch == watch)
            and (not self.on_continue or has_continue)
        )


@dataclass
class EventLog:
    """One Events API's objects and every change to them, in resourceVersion order."""

    list_kind: str
    api_version: str
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Seen:
    """One request as the double saw it."""

    path: str
    query: dict[str, str]
    authorization: str | None


class FakeCluster:
    """The double's state, changed by tests between (or during) collector runs."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.rv = 5000
        self.compacted_below = 0
        self.lists: dict[str, dict[str, Any]] = {p: load(f) for p, f in LISTS.items()}
        self.summaries: dict[str, Any] = load("stats_summary.json")
        self.logs = {
            CORE_EVENTS: EventLog("EventList", "v1"),
            NEW_EVENTS: EventLog("EventList", "events.k8s.io/v1"),
        }
        for path, name in ((CORE_EVENTS, "events.json"), (NEW_EVENTS, "events_k8s_io.json")):
            for item in load(name)["items"]:
                self.put_event(item, path=path)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.snapshots: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        #: The longest a watch stays open once its backlog is sent (tests keep runs short).
        self.watch_hold = 0.1
        #: Seconds each page of an Event list takes (to kill a collector mid-list).
        self.list_delay = 0.0
        self.metrics_available = True

    # -- changes -----------------------------------------------------------------------------

    def next_rv(self) -> str:
        """A new resourceVersion (call with the lock held)."""
        self.rv += 1
        return str(self.rv)

    def put_event(self, item: dict[str, Any], *, path: str = CORE_EVENTS) -> dict[str, Any]:
        """Create or replace an Event object; returns it with its new resourceVersion."""
        log = self.logs[path]
        with self.lock:
            obj = copy.deepcopy(item)
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
            uid = obj["metadata"]["uid"]
            kind = "MODIFIED" if uid in log.objects else "ADDED"
            obj["metadata"]["resourceVersion"] = self.next_rv()
            log.objects[uid] = obj
            log.changes.append((self.rv, kind, obj))
            self.lock.notify_all()
            return copy.deepcopy(obj)

    def update_event(self, uid: str, path: str = CORE_EVENTS, **fields: Any) -> dict[str, Any]:
        """Change fields of an Event (e.g. count and lastTimestamp), as its source does."""
        with self.lock:
            obj = copy.deepcopy(self.logs[path].objects[uid])
        obj.update(fields)
        return self.put_event(obj, path=path)

    def delete_event(self, uid: str) -> None:
        """An Event's TTL runs out."""
        log = self.logs[CORE_EVENTS]
        with self.lock:
            obj = log.objects.pop(uid)
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self.next_rv()}}
            log.changes.append((self.rv, "DELETED", obj))
            self.lock.notify_all()

    def compact(self) -> None:
        """Forget the change history: a watch from any version so far gets 410 Gone."""
        with self.lock:
            self.compacted_below = int(self.next_rv())

    def versions(self, path: str = CORE_EVENTS) -> set[tuple[str, str]]:
        """Every (uid, resourceVersion) an Events API ever held."""
        with self.lock:
            return {
                (o["metadata"]["uid"], o["metadata"]["resourceVersion"])
                for _, kind, o in self.logs[path].changes
                if kind != "DELETED"
            }

    def items(self, path: str) -> list[dict[str, Any]]:
        """The (mutable) items of a recorded list: nodes, pods, PVCs, metrics."""
        items: list[dict[str, Any]] = self.lists[path]["items"]
        return items

    def find(self, path: str, name: str) -> dict[str, Any]:
        """One item of a recorded list by name."""
        return next(i for i in self.items(path) if i["metadata"]["name"] == name)

    def fail(self, fault: Fault) -> None:
        """Inject a fault."""
        with self.lock:
            self.faults.append(fault)

    def requests(self, path: str, watch: bool | None = None) -> list[Seen]:
        """The requests to a path (only watches, or only lists, if told)."""
        return [
            s
            for s in self.seen
            if s.path == path and (watch is None or (s.query.get("watch") == "true") == watch)
        ]

    def _fault(self, path: str, watch: bool, has_continue: bool) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(path, watch, has_continue):
                    fault.times -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, delayed ACKs cost 40 ms each.
    disable_nagle_algorithm = True
    cluster: FakeCluster

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `cluster.seen` instead."""

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        c = self.cluster
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        c.seen.append(Seen(url.path, query, self.headers.get("Authorization")))
        watch = query.get("watch") in ("true", "1")
        fault = c._fault(url.path, watch, "continue" in query)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            reason = {410: "Expired", 429: "TooManyRequests"}.get(fault.status, "InternalError")
            self._send(fault.status, status(fault.status, reason, "injected"), headers)
            return
        if url.path in c.logs:
            if watch:
                self._watch(c.logs[url.path], query, fault)
            else:
                self._list_events(c.logs[url.path], url.path, query)
        elif url.path in c.lists:
            if url.path.startswith("/apis/metrics.k8s.io/") and not c.metrics_available:
                self._send(503, status(503, "ServiceUnavailable", "metrics not available"))
                return
            with c.lock:
                body = copy.deepcopy(c.lists[url.path])
            self._page(url.path, body["kind"], body.get("apiVersion", "v1"), body["items"], query)
        elif url.path.startswith("/api/v1/nodes/") and url.path.endswith("/proxy/stats/summary"):
            node = url.path.split("/")[4]
            if node in c.summaries:
                self._send(200, c.summaries[node])
            else:
                self._send(503, status(503, "ServiceUnavailable", "no kubelet"))
        else:
            self._send(404, status(404, "NotFound", f"{url.path} not found"))

    def _list_events(self, log: EventLog, path: str, query: dict[str, str]) -> None:
        time.sleep(self.cluster.list_delay)
        with self.cluster.lock:
            items = sorted(log.objects.values(), key=lambda o: o["metadata"]["uid"])
            selector = query.get("fieldSelector")
            if selector and selector.startswith("type="):
                items = [i for i in items if i.get("type") == selector[5:]]
            self._page(path, log.list_kind, log.api_version, copy.deepcopy(items), query)

    def _page(
        self,
        path: str,
        kind: str,
        api_version: str,
        items: list[dict[str, Any]],
        query: dict[str, str],
    ) -> None:
        c = self.cluster
        with c.lock:
            token = query.get("continue")
            if token:
                rv, items = c.snapshots[token.split(":")[0]]
                offset = int(token.split(":")[1])
            else:
                rv, offset = str(c.rv), 0
                c.snapshots[str(len(c.snapshots))] = (rv, items)
                token = f"{len(c.snapshots) - 1}:0"
            limit = int(query.get("limit") or 0) or len(items) or 1
            page = items[offset : offset + limit]
            meta: dict[str, Any] = {"resourceVersion": rv}
            if offset + limit < len(items):
                meta["continue"] = f"{token.split(':')[0]}:{offset + limit}"
        self._send(200, {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": page})

    def _watch(self, log: EventLog, query: dict[str, str], fault: Fault | None) -> None:
        c = self.cluster
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        since = int(query.get("resourceVersion") or 0)
        hold = min(float(query.get("timeoutSeconds") or 1), c.watch_hold)
        end = time.monotonic() + hold
        if (fault is not None and fault.gone_event) or since < c.compacted_below:
            msg = f"too old resource version: {since} ({c.compacted_below})"
            gone = {"type": "ERROR", "object": status(410, "Expired", msg)}
            self._chunk(json.dumps(gone).encode() + b"\n")
            self._chunk(b"")
            return
        sent = 0
        selector = query.get("fieldSelector")
        while True:
            with c.lock:
                backlog = [(rv, k, o) for rv, k, o in log.changes if rv > since]
                if not backlog:
                    c.lock.wait(max(0.0, min(0.02, end - time.monotonic())))
            for rv, kind, obj in backlog:
                since = rv
                if selector and selector.startswith("type=") and obj.get("type") != selector[5:]:
                    continue
                full = {"kind": "Event", "apiVersion": log.api_version, **obj}
                self._chunk(json.dumps({"type": kind, "object": full}).encode() + b"\n")
                sent += 1
                if fault is not None and fault.drop_after is not None and sent >= fault.drop_after:
                    # Cut the connection mid-stream: no terminating chunk.
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
            if time.monotonic() >= end:
                break
        if query.get("allowWatchBookmarks") == "true":
            # A bookmark promises every change up to its version was sent: only the store's
            # latest version if none of this log's changes is still unsent.
            with c.lock:
                unsent = any(rv > since for rv, _, _ in log.changes)
                upto = since if unsent else max(since, c.rv)
            mark = {
                "type": "BOOKMARK",
                "object": {
                    "kind": "Event",
                    "apiVersion": log.api_version,
                    "metadata": {"resourceVersion": str(upto)},
                },
            }
            self._chunk(json.dumps(mark).encode() + b"\n")
        self._chunk(b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing their end (a watch ended early, a killed collector) are normal."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(cluster: FakeCluster) -> Iterator[str]:
    """Serve the double on a free port of 127.0.0.1; yields its base URL."""
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_kubeconfig(path: Path, server: str, token: str) -> Path:
    """A kubeconfig naming the double (plain HTTP, a bearer token), context `double`."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": server}}],
                "users": [{"name": "collector", "user": {"token": token}}],
                "contexts": [
                    {"name": "double", "context": {"cluster": "double", "user": "collector"}}
                ],
                "current-context": "double",
            }
        )
    )
    return path


def feed(
    cluster: FakeCluster, changes: list[Callable[[], object]], every: float
) -> threading.Thread:
    """Apply changes to the cluster one by one in the background, `every` seconds apart."""

    def run() -> None:
        for change in changes:
            time.sleep(every)
            change()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread

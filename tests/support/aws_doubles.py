"""What the AWS collector tests share: fake credentials, a moto server, an EC2 pager, the worker.

moto answers DescribeSubnets in one page whatever MaxResults says, so `Ec2Pager` stands in
front of it and pages DescribeSubnets answers the way EC2 does (MaxResults, NextToken); every
other call passes through unchanged. Tests kill `aws_collector_worker.py` with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from ingest.collectors.aws.collectors import AwsConfig
from support import REPO, SUPPORT

WORKER = SUPPORT / "aws_collector_worker.py"
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15"


def epoch(text: str) -> float:
    """Unix seconds of a UTC ISO timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fixed(text: str) -> Callable[[], float]:
    """A clock stopped at `text`."""
    t = epoch(text)
    return lambda: t


def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials in the environment only; no profile files, no instance metadata."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPSLEDGERTEST000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "opsledger-test-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "opsledger-test-session")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextmanager
def moto_server() -> Iterator[str]:
    """A threaded moto server on 127.0.0.1 and a free port; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def post_json(url: str, payload: Any) -> None:
    """POST a JSON body (moto's control API)."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201)


def reset_moto(url: str) -> None:
    """Forget every resource and queued result of the moto server."""
    post_json(f"{url}/moto-api/reset", {})


class Ec2Pager:
    """A proxy to moto that pages DescribeSubnets (offsets as tokens) and records each call.

    Other calls (any protocol) pass through as they are; `calls` keeps their bodies too.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[dict[str, Any]] = []
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                pager.handle(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def subnet_calls(self) -> list[dict[str, str]]:
        """The DescribeSubnets requests, as their form parameters."""
        return [c["params"] for c in self.calls if c["params"].get("Action") == "DescribeSubnets"]

    def handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        is_query = h.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        params = dict(urllib.parse.parse_qsl(body.decode())) if is_query else {}
        auth = h.headers.get("Authorization", "")
        self.calls.append({"params": dict(params), "body": body, "auth": auth})
        paging = params.get("Action") == "DescribeSubnets"
        size = int(params.pop("MaxResults", 0) or 0) if paging else 0
        start = int(params.pop("NextToken", 0) or 0) if paging else 0
        forwarded = urllib.parse.urlencode(params).encode() if paging else body
        headers = {
            k: v for k, v in h.headers.items() if k.lower() not in ("host", "content-length")
        }
        req = urllib.request.Request(self.upstream + h.path, data=forwarded, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, blob = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, blob = exc.code, exc.read()
        if paging and status == 200 and size:
            blob = self._page(blob, start, size)
        try:
            h.send_response(status)
            h.send_header("Content-Type", "text/xml")
            h.send_header("Content-Length", str(len(blob)))
            h.end_headers()
            h.wfile.write(blob)
        except OSError:
            pass  # the client was killed

    @staticmethod
    def _page(blob: bytes, start: int, size: int) -> bytes:
        ET.register_namespace("", EC2_NS)
        root = ET.fromstring(blob)
        items_node = root.find(f"{{{EC2_NS}}}subnetSet")
        assert items_node is not None
        items = list(items_node)
        for item in items:
            items_node.remove(item)
        for item in items[start : start + size]:
            items_node.append(item)
        if start + size < len(items):
            ET.SubElement(root, f"{{{EC2_NS}}}nextToken").text = str(start + size)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def start_worker(
    url: str, cfg: AwsConfig, name: str, now: str, pause_after: int | None = None
) -> subprocess.Popen[str]:
    """The crash-test worker running one collector once."""
    argv = [sys.executable, str(WORKER), url, cfg.model_dump_json(), name, str(epoch(now))]
    if pause_after is not None:
        argv.append(str(pause_after))
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
    )


def kill(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the worker and return its stderr."""
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err
    return err

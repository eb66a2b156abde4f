"""Schemathesis over the served OpenAPI: every operation and scope, no answer it does not declare.

The real `opsledger serve` runs on a loopback port over a small seeded ledger; each operation
is called with generated data (a fixed seed) and its answers must be no server error, a
declared status, a declared content type and a body matching the declared schema. The admin
key covers every route but SQL, the query key `POST /v1/query`, and read and write keys their
own routes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.cli import OPSLEDGER
from support.payloads import (
    cost_daily,
    incident_milestone,
    incident_opened,
    k8s_event,
    metric_samples,
    node_status,
    pod_status,
    sample,
)
from support.servers import free_port

from store.keys import create_key
from store.ledger import Ledger
from store.migrate import upgrade

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Generated cases per operation (and per key scope that applies to it).
EXAMPLES = 25


@dataclass(frozen=True)
class Served:
    """The running server and a token per scope."""

    url: str
    tokens: dict[str, str]


def _seed_events() -> list[dict[str, Any]]:
    node = {"node": "n1", "nodepool": "general", "zone": "us-gov-west-1a"}
    pvc = {"namespace": "payments", "persistentvolumeclaim": "data-0"}
    samples = []
    for h in range(6):
        ts = f"2026-10-14T0{h}:00:00Z"
        samples += [
            sample("node_cpu_usage_cores", node, ts, 1.0 + h),
            sample("node_cpu_allocatable_cores", node, ts, 8.0),
            sample("pvc_used_bytes", pvc, ts, 1e9 * (h + 1)),
            sample("pvc_capacity_bytes", pvc, ts, 1e10),
        ]
    return [
        metric_samples("fuzz-prom", samples, time="2026-10-14T06:00:00Z"),
        node_status("fuzz-node", time="2026-10-14T00:00:00Z"),
        pod_status("fuzz-pod", time="2026-10-14T00:05:00Z"),
        k8s_event("fuzz-k8s", time="2026-10-14T00:06:00Z"),
        cost_daily("fuzz-cost"),
        incident_opened("fuzz-inc-opened", incident_id="INC-FUZZ", time="2026-10-14T01:00:00Z"),
        incident_milestone(
            "acknowledged", "fuzz-inc-ack", incident_id="INC-FUZZ", time="2026-10-14T01:05:00Z"
        ),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("fuzz-home")
    url = f"sqlite:///{home / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    tokens = {
        s: create_key(ledger.engine, f"fuzz-{s}", s)[1] for s in ("read", "write", "admin", "query")
    }
    ledger.engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {"OPSLEDGER_HOME": str(home), "OPSLEDGER_LOG_LEVEL": "warning"}
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(OPSLEDGER), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "opsledger serve did not start"
            time.sleep(0.1)
        r = httpx.post(
            base + "/v1/events",
            json=_seed_events(),
            headers={"Authorization": f"Bearer {tokens['write']}"},
        )
        assert r.status_code == 200, r.text
        yield Served(base, tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    # A server error the checks saw would also be in the log; nothing may have crashed.
    text = (home / "server.log").read_text()
    assert "Traceback" not in text, text[-5000:]


def _operations() -> list[tuple[str, str, bool]]:
    """(METHOD, path, takes input) of every operation the app declares (as it serves it)."""
    from api.app import create_app
    from store.settings import Settings

    app = create_app(Settings(database_url="sqlite://"), projections=False)
    try:
        doc = app.openapi()
    finally:
        app.state.ledger.engine.dispose()
    return sorted(
        (m.upper(), p, bool(op.get("parameters") or op.get("requestBody")))
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
    )


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def api_schema(served: Served) -> Any:
    """The document as served, which Schemathesis generates requests from."""
    return schemathesis.openapi.from_url(served.url + "/openapi.json")


def scopes_for(method: str, path: str) -> list[str]:
    """The keys to call an operation with: its own scope's key, and admin for all but SQL."""
    if path == "/v1/query":
        return ["query"]
    own = "read" if method == "GET" else "write"
    if path.startswith(("/v1/projections/", "/v1/sla/policy")) and method != "GET":
        own = "admin"
    return sorted({"admin", own})


# Valid data, and (for operations that take any input) data that breaks the schema on purpose.
CASES = [
    (m, p, mode)
    for m, p, takes_input in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if takes_input or mode is GenerationMode.POSITIVE
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES]
)
def test_every_answer_is_declared(
    method: str, path: str, mode: GenerationMode, served: Served, api_schema: Any
) -> None:
    operation = api_schema[path][method]
    calls = {"n": 0}

    @seed(20261207)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        for scope in scopes_for(method, path):
            headers = {"Authorization": f"Bearer {served.tokens[scope]}"}
            response = case.call(base_url=served.url, headers=headers, timeout=60)
            calls["n"] += 1
            case.validate_response(response, checks=CHECKS)

    run()
    assert calls["n"] >= 1


@pytest.mark.slow
def test_the_served_document_is_the_one_tested(served: Served) -> None:
    served_paths = httpx.get(served.url + "/openapi.json").json()["paths"]
    served_operations = sorted((m.upper(), p) for p, ops in served_paths.items() for m in ops)
    assert served_operations == [(m, p) for m, p, _ in OPERATIONS]

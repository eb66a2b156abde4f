"""Queries waiting for a worker hold no server thread: liveness and other routes stay fast
while many slow queries are queued (issue 10, Medium 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from support.cli import OPSLEDGER
from support.query import demo_events
from support.servers import free_port

from analytics.readmodel.model import ReadModel
from analytics.readmodel.registry import default_projections
from analytics.readmodel.runner import Runner
from analytics.sql.pool import QueryError
from analytics.sql.service import QueryService
from store.contract import validate_events
from store.keys import create_key
from store.ledger import Ledger
from store.migrate import upgrade
from store.settings import Settings

#: Runs until the time limit stops it, in little memory (DuckDB streams a cross product).
SLOW = "SELECT count(*) FROM range(1000000) a CROSS JOIN range(1000000) b"
TIMEOUT_S = 3


@pytest.mark.slow
def test_slow_queries_queued_in_numbers_leave_the_server_responsive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    ledger.append(validate_events(demo_events()))
    _, query_token = create_key(ledger.engine, "q", "query")
    _, read_token = create_key(ledger.engine, "r", "read")
    ledger.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {
        "OPSLEDGER_HOME": str(tmp_path),
        "OPSLEDGER_QUERY_TIMEOUT_SECONDS": str(TIMEOUT_S),
        "OPSLEDGER_QUERY_MAX_CONCURRENT": "2",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(OPSLEDGER), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        query = {"Authorization": f"Bearer {query_token}"}
        read = {"Authorization": f"Bearer {read_token}"}
        # Snapshot and workers warmed up, so only the slow queries take the time below.
        assert httpx.post(base + "/v1/query", json={"query": "SELECT 1"}, headers=query).is_success

        async def scenario() -> tuple[list[tuple[int, Any, float]], list[float], float]:
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

                async def slow() -> tuple[int, Any, float]:
                    t = time.monotonic()
                    r = await client.post("/v1/query", json={"query": SLOW}, headers=query)
                    return r.status_code, r.json(), time.monotonic() - t

                started = time.monotonic()
                tasks = [asyncio.create_task(slow()) for _ in range(40)]
                await asyncio.sleep(0.5)
                probes: list[float] = []
                for _ in range(8):
                    for path, headers in (("/healthz", {}), ("/v1/sla/policy", read)):
                        t = time.monotonic()
                        r = await client.get(path, headers=headers)
                        probes.append(time.monotonic() - t)
                        assert r.status_code == 200, (path, r.text)
                    await asyncio.sleep(0.25)
                answers = await asyncio.gather(*tasks)
                return answers, probes, time.monotonic() - started

        answers, probes, elapsed = asyncio.run(scenario())
        assert max(probes) < 1.0, probes
        kinds = Counter((code, body.get("kind")) for code, body, _ in answers)
        # Two ran into the time limit; the others waited their turn, then were told to retry.
        assert set(kinds) <= {(422, "timeout"), (429, "busy")}, kinds
        assert kinds[(422, "timeout")] >= 2 and kinds[(429, "busy")] >= 1, kinds
        # Bounded: the waits and the runs overlap, none waits longer than the time limit.
        assert elapsed < 4 * TIMEOUT_S + 10, elapsed
        assert httpx.get(base + "/healthz").status_code == 200
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_a_waiting_query_holds_no_thread(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    ledger = Ledger.from_url(url)
    model = ReadModel(tmp_path / "rm.duckdb")
    Runner(ledger, model, default_projections())
    settings = Settings(
        home=tmp_path, database_url=url, query_timeout_seconds=1, query_max_concurrent=1
    )
    outcomes: list[str] = []

    async def ask(sql: str) -> None:
        try:
            await service.answer(sql, 1)
            outcomes.append("ok")
        except QueryError as exc:
            outcomes.append(exc.kind)

    async def scenario() -> None:
        default = anyio.to_thread.current_default_thread_limiter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, SLOW)
            await anyio.sleep(0.3)
            for _ in range(5):
                tg.start_soon(ask, "SELECT 1")
            await anyio.sleep(0.3)
            # One query on a thread of the query limiter, five waiting on no thread at all.
            assert default.borrowed_tokens == 0
            assert service._threads.borrowed_tokens == 1

    service = QueryService(model, settings)
    try:
        anyio.run(scenario)
    finally:
        service.close()
        model.close()
        ledger.engine.dispose()
    # The slow one ran into its limit; the others got their turn late, or were told to retry.
    assert outcomes.count("timeout") == 1 and set(outcomes) <= {"timeout", "busy", "ok"}, outcomes

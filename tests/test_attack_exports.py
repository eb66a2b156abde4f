"""Attacks on exports: size limits decided before data is built, bounded streams, traversal.

A real `opsledger serve` over a ledger of 1.2 M metric samples (~270 MB as JSON Lines) is
where memory and concurrency are the point: its peak RSS is read from /proc around a burst of
over-limit requests. Smaller cases run the app in process; the CLI runs as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from support.beds import make_bed
from support.cli import OPSLEDGER
from support.payloads import cloudevent
from support.servers import free_port

from analytics.outputs.datasets import DATASETS
from analytics.outputs.export_files import (
    Partition,
    check_bucket,
    check_endpoint,
    check_prefix,
    hive_value,
    partition_key,
    publish_local,
    split_s3_url,
)
from api.app import create_app
from store.contract import batch_from_columns, samples_event
from store.keys import create_key
from store.ledger import EVENT_COLUMNS, Ledger
from store.migrate import upgrade
from store.schema import DATA_JSON, DATA_SAMPLES_V1, events
from store.settings import Settings

MIB = 2**20
#: The served ledger: EVENTS sample events of SAMPLES each, over SERIES long-labelled series.
EVENTS, SAMPLES, SERIES = 24, 50_000, 200
LIMIT = MIB
#: What a burst of refusals may add to the server's peak RSS. Before the limit was decided from
#: aggregates, each refused request decoded a page of the ledger and encoded a 32 MiB batch:
#: hundreds of MiB each.
REFUSAL_RSS_BOUND = 64 * MIB


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def samples_ledger(url: str) -> None:
    """EVENTS hourly sample events whose JSON is ~230 bytes a sample; no projection uses them."""
    ledger = Ledger.from_url(url)
    series = [
        (
            "attack_filler_bytes",
            {
                "node": f"ip-10-0-{i // 250}-{i % 250}.us-gov-west-1.compute.internal",
                "pod": f"checkout-api-{i:05d}-7d9f8c6b5-x2k4q",
                "namespace": "payments-production",
            },
        )
        for i in range(SERIES)
    ]
    rng = np.random.default_rng(7)
    t0 = 1_790_000_000_000_000
    batch = []
    for e in range(EVENTS):
        idx = np.arange(SAMPLES) % SERIES
        ts = t0 + e * 3_600_000_000 + (np.arange(SAMPLES) // SERIES) * 1_000_000
        values = rng.random(SAMPLES) * 1e9
        b = batch_from_columns(series, idx, ts, values)
        batch.append(samples_event("//attack/filler", f"fill-{e}", int(ts[-1]), "c1", b))
    ledger.append(batch)
    ledger.engine.dispose()


@dataclass
class Served:
    base: str
    pid: int
    read: dict[str, str]
    admin: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("served-exports")
    url = f"sqlite:///{home / 'ledger.db'}"
    upgrade(url)
    samples_ledger(url)
    ledger = Ledger.from_url(url)
    _, read = create_key(ledger.engine, "attack-read", "read")
    _, admin = create_key(ledger.engine, "attack-admin", "admin")
    ledger.engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLEDGER_")}
    env |= {"OPSLEDGER_HOME": str(home), "OPSLEDGER_EXPORT_MAX_BYTES": str(LIMIT)}
    proc = subprocess.Popen(
        [str(OPSLEDGER), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "serve.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {read}"}
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()
            assert time.monotonic() < deadline, "the server did not catch up"
            try:
                r = httpx.get(base + "/v1/projections", headers=headers, timeout=5)
                if r.status_code == 200 and all(p["lag"] == 0 for p in r.json()["projections"]):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield Served(base, proc.pid, headers, {"Authorization": f"Bearer {admin}"})
    finally:
        proc.terminate()
        proc.wait(30)


def reset_peak(pid: int) -> int:
    """Start a new peak RSS (VmHWM) for `pid`; its RSS now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return kib(pid, "VmRSS")


@pytest.mark.slow
def test_over_limit_exports_are_refused_before_any_data_is_built(served: Served) -> None:
    before = reset_peak(served.pid)
    paths = [f"/v1/export/events.{fmt}" for fmt in ("jsonl", "csv", "arrow", "parquet")] * 3

    def get(path: str) -> tuple[int, str, float]:
        t0 = time.monotonic()
        r = httpx.get(served.base + path, headers=served.read, timeout=120)
        return r.status_code, r.text, time.monotonic() - t0

    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(get, paths))
    grown = kib(served.pid, "VmHWM") - before
    assert [a[0] for a in answers] == [413] * len(paths), answers[0][1]
    assert f"the export holds {EVENTS} rows" in answers[0][1]
    assert "OPSLEDGER_EXPORT_MAX_BYTES" in answers[0][1]
    assert grown < REFUSAL_RSS_BOUND, f"peak RSS grew {grown / MIB:.0f} MiB for refusals"
    # A few SQL aggregates each: seconds only because the machine is shared.
    assert max(a[2] for a in answers) < 15, answers


@pytest.mark.slow
def test_exports_take_a_slot_each_and_give_it_back_when_the_client_goes(served: Served) -> None:
    from api.routes.exports import EXPORT_SLOTS, SLOT_WAIT_SECONDS

    streams = []
    clients = []
    try:
        for _ in range(EXPORT_SLOTS):
            client = httpx.Client(timeout=60)
            clients.append(client)
            # Admin keys are not capped: ~270 MB each, held by a client that reads nothing.
            req = client.build_request("GET", served.base + "/v1/export/events.jsonl")
            req.headers.update(served.admin)
            resp = client.send(req, stream=True)
            assert resp.status_code == 200
            streams.append(resp)
        # A refusal decided from the size needs no slot: answered at once, not after a wait.
        t0 = time.monotonic()
        r = httpx.get(served.base + "/v1/export/events.csv", headers=served.read, timeout=60)
        assert r.status_code == 413 and time.monotonic() - t0 < SLOT_WAIT_SECONDS / 2
        t0 = time.monotonic()
        r = httpx.get(
            served.base + "/v1/export/events.jsonl",
            params={"type": "opsledger.incident.opened"},
            headers=served.admin,
            timeout=60,
        )
        waited = time.monotonic() - t0
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "5" and "retry" in r.json()["detail"]
        assert waited >= SLOT_WAIT_SECONDS - 0.5
    finally:
        for resp in streams:
            resp.close()
        for client in clients:
            client.close()
    # The server notices the clients are gone and gives the slots back.
    deadline = time.monotonic() + 30
    codes = []
    while time.monotonic() < deadline:
        with ThreadPoolExecutor(EXPORT_SLOTS) as pool:
            codes = list(
                pool.map(
                    lambda _: (
                        httpx.get(
                            served.base + "/v1/export/events.jsonl",
                            params={"type": "opsledger.incident.opened"},
                            headers=served.admin,
                            timeout=60,
                        ).status_code
                    ),
                    range(EXPORT_SLOTS),
                )
            )
        if codes == [200] * EXPORT_SLOTS:
            break
    assert codes == [200] * EXPORT_SLOTS


@pytest.mark.slow
def test_a_served_export_streams_in_bounded_memory(served: Served) -> None:
    before = reset_peak(served.pid)
    size = 0
    with httpx.stream(
        "GET", served.base + "/v1/export/events.jsonl", headers=served.admin, timeout=300
    ) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            size += len(chunk)
    grown = kib(served.pid, "VmHWM") - before
    assert size > 250 * MIB
    # A page of the ledger, a batch and its encoding, whatever the export's size: ~170 MiB
    # here, where decoding whole pages into 32 MiB batches escaped by orjson took ~440 MiB.
    assert grown < 256 * MIB, f"peak RSS grew {grown / MIB:.0f} MiB streaming {size / MIB:.0f}"


# -- the refusal reads no data: blobs no decoder could read --------------------------------


def corrupt_rows(url: str) -> None:
    """Rows as the ledger stores them, but whose data would raise if anything decoded it."""
    engine = Ledger.from_url(url).engine
    rows = []
    for n in range(6):
        sample = n % 2 == 0
        data = b"S1" + (50_000_000).to_bytes(4, "little") + os.urandom(4096) if sample else b"{"
        rows.append(
            dict(
                zip(
                    EVENT_COLUMNS,
                    (
                        n + 1,
                        "//attack/corrupt",
                        f"bad-{n}",
                        "opsledger.metric.samples" if sample else "opsledger.k8s.event",
                        1_790_000_000_000_000 + n,
                        "c1",
                        None,
                        None,
                        None,
                        1_790_000_000_000_000,
                        DATA_SAMPLES_V1 if sample else DATA_JSON,
                        data,
                        hashlib.blake2b(data, digest_size=16).digest(),
                        50_000_000 if sample else 0,
                    ),
                    strict=True,
                )
            )
        )
    with engine.begin() as conn:
        conn.execute(insert(events), rows)
    engine.dispose()


def test_the_refusal_never_decodes_a_blob(backend_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=backend_url,
        home=tmp_path,
        export_max_bytes=LIMIT,
        projection_interval_seconds=86_400,
    )
    app = create_app(settings)
    _, read = create_key(app.state.ledger.engine, "r", "read")
    with TestClient(app, raise_server_exceptions=False) as client:
        # Behind the projector's back (it would trip on them): only the export reads them.
        corrupt_rows(backend_url)
        for fmt in ("jsonl", "csv", "arrow", "parquet"):
            r = client.get(f"/v1/export/events.{fmt}", headers={"Authorization": f"Bearer {read}"})
            assert r.status_code == 413, r.text
            # 3 × 50 M samples at ≥ 53 bytes each: the estimate says why without reading one.
            assert "the export holds 6 rows" in r.json()["detail"]


# -- traversal in names, formats, filters and partitions ------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("traversal")
    with make_bed(tmp, home=tmp) as bed:
        cost = cloudevent(
            "opsledger.cost.daily",
            {"date": "2026-10-01", "service": "EC2", "amount": 1.0, "currency": "USD"},
            id="c",
            cluster=None,
        )
        odd = cloudevent(
            "opsledger.k8s.event",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "x", "namespace": "web"},
                "involvedObject": {"kind": "Pod", "name": "x", "namespace": "web"},
                "reason": "BackOff",
                "message": "m",
                "type": "Warning",
            },
            id="odd",
            cluster="c1",
        )
        assert bed.post_events([cost, odd]).status_code == 200
        yield bed


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/export/..%2F..%2Fetc%2Fpasswd.csv", 404),
        ("/v1/export/events.csv%2F..%2F..%2Fx", 404),
        ("/v1/export/events.%2E%2E", 404),
        ("/v1/export/..%2Fevents.jsonl", 404),
        ("/v1/export/events.jsonl%00.csv", 404),
        ("/v1/export/events.jsonl?cluster=../../etc", 422),
        ("/v1/export/events.jsonl?type=../../etc/passwd", 422),
    ],
)
def test_traversal_in_names_formats_and_filters_finds_nothing(
    small: Any, path: str, status: int
) -> None:
    r = small.client.get(path, headers=small.headers("read"))
    assert r.status_code == status, r.text
    assert "root:" not in r.text


def test_the_attachment_name_is_the_datasets_own(small: Any) -> None:
    r = small.client.get("/v1/export/events.jsonl", headers=small.headers("read"))
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="events.jsonl"'


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("../../etc", "..%2F..%2Fetc"),
        ("..", ".."),
        ("a\\..\\b", "a%5C..%5Cb"),
        ("x=y/z", "x%3Dy%2Fz"),
        ("tab\there", "tab%09here"),
        ("", "__HIVE_DEFAULT_PARTITION__"),
        ("2026-10", "2026-10"),
    ],
)
def test_a_partition_value_is_one_escaped_segment(value: str, segment: str) -> None:
    assert hive_value(value) == segment
    key = partition_key(DATASETS["events"], value)
    assert key == f"dataset=events/month={segment}/part-0.parquet"
    assert key.count("/") == 2 and ".." not in key.split("/")


def test_publishing_refuses_a_key_that_climbs_out(tmp_path: Path) -> None:
    root = tmp_path / "out"
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(b"PAR1")
    for key in ("../escaped.parquet", "dataset=x/../../escaped.parquet", "/etc/escaped"):
        with pytest.raises(ValueError, match="leaves"):
            publish_local(root, [Partition("m", key, staged, 1)])
    assert not (tmp_path / "escaped.parquet").exists()
    (root_file,) = publish_local(
        root, [Partition("m", partition_key(DATASETS["events"], "../x"), staged, 1)]
    )
    assert root_file.resolve().is_relative_to(root.resolve())


# -- S3 targets and the CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bucket",
    [
        "bad bucket name",
        "rt_bucket!",
        "..",
        "ab",
        "a" * 64,
        "Upper",
        "-lead",
        "trail-",
        "two..dots",
        "dot.-hyphen",
        "192.168.1.10",
        "xn--punycode",
        "access-s3alias",
        "b[/red]x",
    ],
)
def test_bad_bucket_names_are_refused(bucket: str) -> None:
    with pytest.raises(ValueError, match="bucket"):
        check_bucket(bucket)


@pytest.mark.parametrize("bucket", ["bi-exports", "my.bucket.example", "abc", "a" * 63])
def test_good_bucket_names_pass(bucket: str) -> None:
    check_bucket(bucket)


@pytest.mark.parametrize(
    "prefix", ["../../x", "a/../b", "a//b", "./a", "/lead", "a/\x00b", "a\\b", "x" * 1000]
)
def test_bad_key_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(prefix)


def test_s3_urls_split_and_keep_their_prefix() -> None:
    assert split_s3_url("s3://bi-exports/fleet/") == ("bi-exports", "fleet")
    assert split_s3_url("s3://bi-exports") == ("bi-exports", "")
    assert split_s3_url("s3://bi-exports/a/b.c/d") == ("bi-exports", "a/b.c/d")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://host/x",
        "http://",
        "http://user:secret@127.0.0.1:9000",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:9000/?x=1",
        "no-scheme",
    ],
)
def test_bad_endpoints_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_endpoint(url)


def run(args: list[str], home: Path, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLEDGER_", "AWS_"))}
    base |= {"OPSLEDGER_HOME": str(home), "OPSLEDGER_DATABASE_URL": url, **env}
    return subprocess.run(
        [str(OPSLEDGER), *args], capture_output=True, text=True, env=base, timeout=90, check=False
    )


@pytest.mark.slow
def test_the_cli_refuses_bad_targets_before_any_work(small: Any, tmp_path: Path) -> None:
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "OPSLEDGER_EXPORT_S3_REGION": "us-east-1",
    }
    existing = tmp_path / "a-file"
    existing.write_text("keep")
    calls: list[tuple[list[str], dict[str, str], str]] = [
        (["--out", "s3://bad bucket name/x"], {}, "not a valid S3 bucket name"),
        (["--out", "s3://rt_bucket!/x"], {}, "not a valid S3 bucket name"),
        (["--out", "s3://../x"], {}, "not a valid S3 bucket name"),
        (["--out", "s3://bi-exports/../../x"], {}, "no empty, `.` or `..` segments"),
        (
            ["--out", "s3://bi-exports/x"],
            {"OPSLEDGER_EXPORT_S3_ENDPOINT_URL": "file:///etc/passwd"},
            "must be an http:// or https:// URL",
        ),
        (
            ["--out", "s3://bi-exports/x"],
            {"OPSLEDGER_EXPORT_S3_ENDPOINT_URL": "http://k:s3cr3t@127.0.0.1:1"},
            "must not carry credentials",
        ),
        (
            ["--out", "s3://bi-exports/x"],
            {"OPSLEDGER_EXPORT_S3_REGION": "us east 1!"},
            "S3 client",
        ),
        (["--partition", "month", "--out", str(existing)], {}, "not a directory"),
        (["--out", str(tmp_path)], {}, "is a directory"),
    ]
    with ThreadPoolExecutor(4) as pool:
        procs = list(
            pool.map(
                lambda c: run(
                    ["export", "events", *c[0]], tmp_path / "home", small.url, **{**aws, **c[1]}
                ),
                calls,
            )
        )
    for (args, _, message), proc in zip(calls, procs, strict=True):
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "exported" not in proc.stderr, proc.stderr
        assert "s3cr3t" not in proc.stderr
    assert existing.read_text() == "keep"


@pytest.mark.slow
def test_markup_in_paths_and_errors_is_printed_as_text(small: Any, tmp_path: Path) -> None:
    # A path and an S3 error holding Rich markup: printed verbatim, never a MarkupError.
    out = tmp_path / "[/red]exports[bold]"
    proc = run(
        ["export", "events", "--partition", "month", "--out", str(out)],
        tmp_path / "home",
        small.url,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{out}/dataset=events/month=" in proc.stderr and "Traceback" not in proc.stderr
    assert "[/red]exports[bold]" in proc.stderr
    with socket.socket() as s:  # nothing listens there: the upload fails after the export
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run(
        ["export", "events", "--out", "s3://bi-exports/[/red]x[bold]"],
        tmp_path / "home",
        small.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        OPSLEDGER_EXPORT_S3_REGION="us-east-1",
        OPSLEDGER_EXPORT_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_MAX_ATTEMPTS="1",
    )
    assert proc.returncode == 1, proc.stderr
    assert "S3 upload to s3://bi-exports/[/red]x[bold]" in proc.stderr
    assert "Traceback" not in proc.stderr and "MarkupError" not in proc.stderr


@pytest.mark.slow
def test_a_rewritten_export_keeps_the_mode_it_was_given(small: Any, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert (
        run(["export", "events", "-f", "jsonl", "--out", str(out)], tmp_path, small.url).returncode
        == 0
    )
    out.chmod(0o600)
    assert (
        run(["export", "events", "-f", "jsonl", "--out", str(out)], tmp_path, small.url).returncode
        == 0
    )
    assert out.stat().st_mode & 0o777 == 0o600
    assert len(out.read_text().splitlines()) == 2
    parts = tmp_path / "parts"
    assert (
        run(
            ["export", "events", "--partition", "month", "--out", str(parts)], tmp_path, small.url
        ).returncode
        == 0
    )
    (part,) = parts.rglob("*.parquet")
    part.chmod(0o600)
    assert (
        run(
            ["export", "events", "--partition", "month", "--out", str(parts)], tmp_path, small.url
        ).returncode
        == 0
    )
    assert part.stat().st_mode & 0o777 == 0o600 and pq.read_table(part).num_rows == 2
    assert json.loads(out.read_text().splitlines()[0])["position"] == 1

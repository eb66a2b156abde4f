"""AWS collectors through real boto3 clients and real ledgers.

Security Hub, Cost Explorer and Budgets are served by moto in server mode; GuardDuty (which
moto does not serve findings for) by a small local server speaking its REST-JSON API with
findings in the shape GetFindings returns. Crash tests SIGKILL a worker subprocess mid-run
and run again on SQLite and PostgreSQL.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from pydantic import ValidationError
from support.aws_doubles import kill, start_worker

from ingest.collectors.aws.collectors import AwsConfig, build
from ingest.collectors.aws.cost import BudgetCollector, CostCollector
from ingest.collectors.aws.guardduty import GuardDutyCollector, severity_label
from ingest.collectors.aws.securityhub import SecurityHubCollector
from ingest.collectors.runtime import run_once
from store.collectors import load_cursor
from store.ledger import Ledger, RecordedEvent

ACCOUNT = "123456789012"
DETECTOR = "6ab2f0c1d9e84d3c8c1b7e5a4f3d2c10"
GOV = "us-gov-west-1"
CLUSTER = "enhanced-eks-cluster"
EVENT_ID = re.compile(r"^(?P<fid>.+)/(?P<updated>\d{4}-\d\d-\d\dT[\d:.]+Z)/[0-9a-f]{12}$")


def epoch(text: str) -> float:
    """Unix seconds of a UTC ISO timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fixed(text: str) -> Any:
    """A clock stopped at `text`."""
    t = epoch(text)
    return lambda: t


def events(ledger: Ledger, event_type: str) -> list[RecordedEvent]:
    """Every recorded event of a type, in ledger order."""
    return [e for e in ledger.iter_all() if e.type == event_type]


def post_json(url: str, payload: Any) -> None:
    """POST a JSON body (moto's control API)."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201)


# -- environment, servers, ledgers -----------------------------------------------------------------


@pytest.fixture(autouse=True)
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


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """One moto server (threaded, 127.0.0.1, a free port) for the module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto server's URL, with every backend reset."""
    post_json(f"{moto_server}/moto-api/reset", {})
    return moto_server


# -- a GuardDuty REST-JSON server ------------------------------------------------------------------


def gd_finding(
    n: int,
    updated: str,
    *,
    kind: str = "eks",
    severity: float = 8.0,
    archived: bool = False,
    created: str = "2026-10-13T22:10:05.204Z",
    namespace: str | None = "batch",
) -> dict[str, Any]:
    """A finding in GetFindings' wire shape (lowerCamelCase), as GuardDuty returns it."""
    fid = f"{n:04d}c6e1f4b2d95c07e3a1f6b9d4c2e8"
    resource: dict[str, Any]
    if kind == "eks":
        resource = {
            "resourceType": "EKSCluster",
            "eksClusterDetails": {
                "name": CLUSTER,
                "arn": f"arn:aws-us-gov:eks:{GOV}:{ACCOUNT}:cluster/{CLUSTER}",
                "vpcId": "vpc-0a1b2c3d4e5f60718",
                "status": "ACTIVE",
                "tags": [],
                "createdAt": 1.7e9,
            },
            "kubernetesDetails": {
                "kubernetesUserDetails": {
                    "username": "system:serviceaccount:batch:report-builder",
                    "uid": "0f3d1a2b-8c4e-4f6a-9b7d-2e1c0a9f8e7d",
                    "groups": ["system:serviceaccounts"],
                },
                "kubernetesWorkloadDetails": {
                    "name": "report-builder-5d8c7",
                    "type": "pods",
                    "uid": "7a1c2b3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
                    "namespace": namespace,
                    "hostNetwork": False,
                    "containers": [{"name": "builder", "image": "report-builder:2.4.1"}],
                },
            },
        }
        if namespace is None:
            del resource["kubernetesDetails"]["kubernetesWorkloadDetails"]["namespace"]
        ftype, title = (
            "CryptoCurrency:Runtime/BitcoinTool.B!DNS",
            "Bitcoin-related domain queried by a container",
        )
    elif kind == "k8s-no-cluster":
        resource = {
            "resourceType": "EKSCluster",
            "kubernetesDetails": {
                "kubernetesWorkloadDetails": {"name": "etl-7f9", "type": "pods", "namespace": "etl"}
            },
        }
        ftype, title = "Execution:Runtime/NewBinaryExecuted", "A new binary was executed"
    elif kind == "ec2":
        resource = {
            "resourceType": "Instance",
            "instanceDetails": {
                "instanceId": "i-0a1b2c3d4e5f60718",
                "instanceType": "m6i.2xlarge",
                "availabilityZone": f"{GOV}a",
                "tags": [
                    {"key": "eks:cluster-name", "value": CLUSTER},
                    {"key": "eks:nodegroup-name", "value": "general"},
                ],
            },
        }
        ftype, title = "Recon:EC2/PortProbeUnprotectedPort", "Unprotected port on an EC2 instance"
    else:
        resource = {
            "resourceType": "S3Bucket",
            "s3BucketDetails": [
                {"arn": "arn:aws-us-gov:s3:::opsledger-exports", "name": "opsledger-exports"}
            ],
        }
        ftype, title = "Policy:S3/BucketBlockPublicAccessDisabled", "Public access block disabled"
    return {
        "accountId": ACCOUNT,
        "arn": f"arn:aws-us-gov:guardduty:{GOV}:{ACCOUNT}:detector/{DETECTOR}/finding/{fid}",
        "confidence": 5,
        "createdAt": created,
        "description": title + ".",
        "id": fid,
        "partition": "aws-us-gov",
        "region": GOV,
        "resource": resource,
        "schemaVersion": "2.0",
        "service": {
            "archived": archived,
            "count": 3,
            "detectorId": DETECTOR,
            "eventFirstSeen": created,
            "eventLastSeen": updated,
            "resourceRole": "TARGET",
            "serviceName": "guardduty",
            "featureName": "RuntimeMonitoring" if kind == "eks" else "FlowLogs",
        },
        "severity": severity,
        "title": title,
        "type": ftype,
        "updatedAt": updated,
    }


def _ms(iso: str) -> int:
    try:
        return int(epoch(iso) * 1000)
    except ValueError:
        return 0


class FakeGuardDuty:
    """GuardDuty's ListDetectors, ListFindings (criteria, sort, NextToken) and GetFindings."""

    def __init__(self) -> None:
        self.findings: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.throttle_next = 0
        self.hold_get_after: int | None = None  # GetFindings calls after this many wait
        self.release = threading.Event()
        self.holding = threading.Event()
        self.get_calls = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.handle(self, json.loads(self.rfile.read(length) or b"{}"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, *findings: dict[str, Any]) -> None:
        """Add or replace findings."""
        for f in findings:
            self.findings[f["id"]] = f

    def close(self) -> None:
        """Stop serving (releasing any held request)."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.requests.append(
                {
                    "method": h.command,
                    "path": path,
                    "body": body,
                    "auth": h.headers["Authorization"],
                }
            )
            if self.throttle_next:
                self.throttle_next -= 1
                return self._send(
                    h, 429, {"message": "Rate exceeded"}, error="TooManyRequestsException"
                )
        if h.command == "GET" and path == "/detector":
            return self._send(h, 200, {"detectorIds": [DETECTOR]})
        m = re.fullmatch(r"/detector/([^/]+)/findings(/get)?", path)
        if m is None or m.group(1) != DETECTOR or body is None:
            return self._send(h, 404, {"message": "not found"}, error="BadRequestException")
        if m.group(2):
            with self._lock:
                self.get_calls += 1
                hold = self.hold_get_after is not None and self.get_calls > self.hold_get_after
            if hold:
                self.holding.set()
                self.release.wait(30)
            ids = body["findingIds"]
            assert len(ids) <= 50
            return self._send(h, 200, {"findings": [self.findings[i] for i in ids]})
        cond = (body.get("findingCriteria") or {}).get("criterion", {}).get("updatedAt", {})
        floor = cond.get("greaterThanOrEqual", cond.get("gte"))
        rows = sorted(self.findings.values(), key=lambda f: (_ms(f["updatedAt"]), f["id"]))
        ids = [f["id"] for f in rows if floor is None or _ms(f["updatedAt"]) >= floor]
        start = int(body.get("nextToken") or 0)
        size = int(body.get("maxResults") or 50)
        page: dict[str, Any] = {"findingIds": ids[start : start + size]}
        if start + size < len(ids):
            page["nextToken"] = str(start + size)
        return self._send(h, 200, page)

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, doc: dict[str, Any], error: str | None = None
    ) -> None:
        blob = json.dumps(doc).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(blob)))
            if error:
                h.send_header("x-amzn-ErrorType", error)
            h.end_headers()
            h.wfile.write(blob)
        except OSError:
            pass  # the client was killed while we held its request

    def calls(self, suffix: str) -> list[dict[str, Any]]:
        """The requests whose path ends with `suffix`."""
        return [r for r in self.requests if r["path"].endswith(suffix)]


@pytest.fixture
def guardduty() -> Iterator[FakeGuardDuty]:
    """A fresh GuardDuty server."""
    fake = FakeGuardDuty()
    try:
        yield fake
    finally:
        fake.close()


def gd_config(url: str, **guardduty: Any) -> AwsConfig:
    """GuardDuty in GovCloud, served by the fake."""
    return AwsConfig.model_validate(
        {"region": GOV, "endpoint_url": url, "max_attempts": 4, "guardduty": guardduty}
    )


def gd_collector(url: str, now: str, default: str | None = None, **kw: Any) -> GuardDutyCollector:
    """The GuardDuty collector with its clock stopped at `now`."""
    (c,) = build(gd_config(url, **kw), default)
    assert isinstance(c, GuardDutyCollector)
    c.clock = fixed(now)
    return c


# -- GuardDuty -------------------------------------------------------------------------------------


def test_severity_bands_are_guardduty_s() -> None:
    cases = {10.0: "CRITICAL", 9.0: "CRITICAL", 8.9: "HIGH", 7.0: "HIGH", 6.9: "MEDIUM"}
    cases |= {4.0: "MEDIUM", 3.9: "LOW", 1.0: "LOW", 0.0: "INFORMATIONAL"}
    assert {v: severity_label(v) for v in cases} == cases


@pytest.mark.slow
def test_guardduty_findings_land_as_contract_events(
    guardduty: FakeGuardDuty, sqlite_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    guardduty.put(
        gd_finding(1, "2026-10-14T06:58:03.512Z", severity=8.0),
        gd_finding(2, "2026-10-14T05:00:00.000Z", kind="ec2", severity=5.0),
        gd_finding(3, "2026-10-14T04:00:00.000Z", kind="s3", severity=2.0, archived=True),
        gd_finding(4, "2026-10-14T03:00:00.000Z", kind="k8s-no-cluster", severity=9.5),
        gd_finding(5, "yesterday"),  # unusable: skipped with a warning, not a failed run
    )
    guardduty.throttle_next = 1  # the first call is throttled; adaptive retry recovers
    with caplog.at_level("WARNING", "opsledger.collectors.aws"):
        result = run_once(
            sqlite_ledger, gd_collector(guardduty.url, "2026-10-14T07:00:00Z", "prod")
        )
    assert (result.error, result.appended) == (None, 4)
    assert f"skipped {gd_finding(5, 'x')['id']}, cannot map it" in caplog.text

    got = {e.data["finding_id"]: e for e in events(sqlite_ledger, "opsledger.finding")}
    eks = got[gd_finding(1, "x")["id"]]
    assert eks.source == "opsledger/collector/aws/guardduty"
    assert eks.cluster == CLUSTER and eks.time_us == int(epoch("2026-10-14T06:58:03.512Z") * 1e6)
    assert dict(eks.data or {}) == {
        "provider": "guardduty",
        "finding_id": gd_finding(1, "x")["id"],
        "title": "Bitcoin-related domain queried by a container",
        "finding_type": "CryptoCurrency:Runtime/BitcoinTool.B!DNS",
        "severity": "HIGH",
        "resource": f"arn:aws-us-gov:eks:{GOV}:{ACCOUNT}:cluster/{CLUSTER}",
        "namespace": "batch",
        "status": "ACTIVE",
        "first_seen": "2026-10-13T22:10:05.204000Z",
        "last_seen": "2026-10-14T06:58:03.512000Z",
    }
    m = EVENT_ID.match(eks.id)
    assert (
        m and m["fid"] == eks.data["finding_id"] and m["updated"] == "2026-10-14T06:58:03.512000Z"
    )

    ec2 = got[gd_finding(2, "x")["id"]]
    assert (ec2.cluster, ec2.data["resource"], ec2.data["severity"]) == (
        CLUSTER,  # from the node's eks:cluster-name tag
        "i-0a1b2c3d4e5f60718",
        "MEDIUM",
    )
    assert "namespace" not in (ec2.data or {})
    s3 = got[gd_finding(3, "x")["id"]]
    assert s3.cluster is None  # account-level: no cluster, not even the default
    assert (s3.data["status"], s3.data["severity"]) == ("ARCHIVED", "LOW")
    assert s3.data["resource"] == "arn:aws-us-gov:s3:::opsledger-exports"
    k8s = got[gd_finding(4, "x")["id"]]
    assert (k8s.cluster, k8s.data["namespace"], k8s.data["severity"]) == (
        "prod",  # about Kubernetes, naming no cluster: the default cluster
        "etl",
        "CRITICAL",
    )

    # Every call was signed for GovCloud's region with the environment's credentials.
    assert guardduty.calls("/detector")[0]["path"] == "/detector"
    for r in guardduty.requests:
        assert f"/{GOV}/guardduty/aws4_request" in r["auth"]
        assert "AKIAOPSLEDGERTEST000" in r["auth"]
    assert len(guardduty.calls("/detector")) == 2  # throttled once, then retried
    assert load_cursor(sqlite_ledger.engine, "aws/guardduty") == {
        "updated_at_ms": _ms("2026-10-14T07:00:00Z")
    }


@pytest.mark.slow
def test_guardduty_pages_and_records_each_update_once(
    guardduty: FakeGuardDuty, sqlite_ledger: Ledger
) -> None:
    base = epoch("2026-10-14T00:00:00Z")
    stamps = [
        datetime.fromtimestamp(base + 60 * i, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        for i in range(120)
    ]
    guardduty.put(*(gd_finding(i, stamps[i]) for i in range(120)))
    first = run_once(sqlite_ledger, gd_collector(guardduty.url, "2026-10-14T03:00:00Z"))
    assert (first.error, first.appended) == (None, 120)
    lists = guardduty.calls("/findings")
    assert [len(r["body"].get("nextToken") or "") > 0 for r in lists] == [False, True, True]
    assert all("findingCriteria" not in r["body"] for r in lists)  # the first run takes all
    assert [len(r["body"]["findingIds"]) for r in guardduty.calls("/findings/get")] == [50, 50, 20]

    # Finding 7 is archived at 03:30: the next run records that update, and only that.
    guardduty.put(gd_finding(7, "2026-10-14T03:30:00.000Z", archived=True))
    guardduty.requests.clear()
    second = run_once(sqlite_ledger, gd_collector(guardduty.url, "2026-10-14T04:00:00Z"))
    assert (second.error, second.appended, second.duplicates) == (None, 1, 0)
    (listed,) = guardduty.calls("/findings")
    criterion = listed["body"]["findingCriteria"]["criterion"]
    assert criterion == {"updatedAt": {"greaterThanOrEqual": _ms("2026-10-14T02:55:00Z")}}

    seven = [
        e
        for e in events(sqlite_ledger, "opsledger.finding")
        if e.data["finding_id"].startswith("0007")
    ]
    assert [(e.data["status"], e.data["last_seen"]) for e in seven] == [
        ("ACTIVE", "2026-10-14T00:07:00Z"),
        ("ARCHIVED", "2026-10-14T03:30:00Z"),
    ]
    # Everything listed again (a long lookback): every update is already recorded.
    again = run_once(
        sqlite_ledger, gd_collector(guardduty.url, "2026-10-14T05:00:00Z", lookback="400d")
    )
    assert (again.error, again.appended, again.duplicates) == (None, 0, 120)
    assert len(events(sqlite_ledger, "opsledger.finding")) == 121


@pytest.mark.slow
def test_guardduty_sigkill_mid_run_then_rerun_records_each_finding_once(
    guardduty: FakeGuardDuty, backend_url: str, ledger: Ledger
) -> None:
    guardduty.put(*(gd_finding(i, f"2026-10-14T01:{i % 60:02d}:00.000Z") for i in range(130)))
    guardduty.hold_get_after = 1  # the second GetFindings waits: the worker dies inside it
    proc = start_worker(
        backend_url, gd_config(guardduty.url), "aws/guardduty", "2026-10-14T03:00:00Z"
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[:2] == ["committed", "50"]
        assert guardduty.holding.wait(20)
    finally:
        kill(proc)
    guardduty.release.set()
    assert len(events(ledger, "opsledger.finding")) == 50
    assert load_cursor(ledger.engine, "aws/guardduty") == {"updated_at_ms": None}

    rerun = run_once(ledger, gd_collector(guardduty.url, "2026-10-14T03:05:00Z"))
    assert (rerun.error, rerun.appended, rerun.duplicates) == (None, 80, 50)
    recorded = Counter(e.data["finding_id"] for e in events(ledger, "opsledger.finding"))
    assert len(recorded) == 130 and set(recorded.values()) == {1}


def test_a_source_profile_selects_its_credentials(
    guardduty: FakeGuardDuty, sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile billing]\n"
        "aws_access_key_id = AKIAOPSLEDGERPROFILE\n"
        "aws_secret_access_key = opsledger-profile-secret\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    guardduty.put(gd_finding(1, "2026-10-14T06:58:03.512Z"))
    collector = gd_collector(guardduty.url, "2026-10-14T07:00:00Z", profile="billing")
    assert run_once(sqlite_ledger, collector).appended == 1
    assert all("Credential=AKIAOPSLEDGERPROFILE/" in r["auth"] for r in guardduty.requests)


# -- Security Hub (moto) ---------------------------------------------------------------------------


SH_TYPE = (
    "Software and Configuration Checks/Industry and Regulatory Standards/"
    "AWS-Foundational-Security-Best-Practices"
)


def asff(
    n: int, updated: str, *, workflow: str = "NEW", record: str = "ACTIVE", label: str = "HIGH"
) -> dict[str, Any]:
    """An ASFF finding as Security Hub's foundational best practices standard writes it."""
    standard = "aws-foundational-security-best-practices/v/1.0.0"
    arn = (
        f"arn:aws-us-gov:securityhub:{GOV}:{ACCOUNT}:subscription/{standard}/EKS.{n % 9}"
        f"/finding/{n:08d}-5c1e-4b7a-9f3d-2e1c0a9f8e7d"
    )
    cluster_arn = f"arn:aws-us-gov:eks:{GOV}:{ACCOUNT}:cluster/{CLUSTER}"
    return {
        "SchemaVersion": "2018-10-08",
        "Id": arn,
        "ProductArn": f"arn:aws-us-gov:securityhub:{GOV}::product/aws/securityhub",
        "GeneratorId": f"{standard}/EKS.{n % 9}",
        "AwsAccountId": ACCOUNT,
        "Types": [SH_TYPE],
        "FirstObservedAt": "2026-10-01T08:00:00.000Z",
        "CreatedAt": "2026-10-01T08:00:00.000Z",
        "UpdatedAt": updated,
        "Severity": {"Label": label, "Normalized": 70, "Original": label},
        "Title": f"EKS.{n % 9} EKS clusters should use encrypted Kubernetes secrets",
        "Description": "Checks whether an EKS cluster uses encrypted Kubernetes secrets.",
        "Resources": [
            {
                "Type": "AwsEksCluster",
                "Id": cluster_arn,
                "Partition": "aws-us-gov",
                "Region": GOV,
                "Details": {
                    "AwsEksCluster": {"Name": CLUSTER, "Arn": cluster_arn, "Version": "1.31"}
                },
            }
        ],
        "Compliance": {"Status": "FAILED"},
        "Workflow": {"Status": workflow},
        "WorkflowState": workflow,
        "RecordState": record,
    }


def sh_import(moto: str, findings: list[dict[str, Any]]) -> None:
    """BatchImportFindings, 100 at a time."""
    client = boto3.client("securityhub", region_name=GOV, endpoint_url=moto)
    for i in range(0, len(findings), 100):
        out = client.batch_import_findings(Findings=findings[i : i + 100])
        assert out["FailedCount"] == 0


@pytest.mark.slow
def test_securityhub_findings_pages_and_updates(moto: str, sqlite_ledger: Ledger) -> None:
    states = [
        ("NEW", "ACTIVE"),
        ("NOTIFIED", "ACTIVE"),
        ("RESOLVED", "ACTIVE"),
        ("SUPPRESSED", "ACTIVE"),
        ("NEW", "ARCHIVED"),
    ]
    findings = []
    for n in range(230):
        workflow, record = states[n % 5]
        label = ["INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL"][n % 5]
        findings.append(
            asff(
                n, f"2026-10-14T0{n % 5}:00:00.000Z", workflow=workflow, record=record, label=label
            )
        )
    sh_import(moto, findings)
    cfg = AwsConfig.model_validate({"region": GOV, "endpoint_url": moto, "securityhub": {}})
    (collector,) = build(cfg, None)
    assert isinstance(collector, SecurityHubCollector)
    collector.clock = fixed("2026-10-14T06:00:00Z")
    first = run_once(sqlite_ledger, collector)
    assert (first.error, first.appended) == (None, 230)  # 3 pages of at most 100

    got = {e.data["finding_id"]: e for e in events(sqlite_ledger, "opsledger.finding")}
    expect_status = ["ACTIVE", "ACTIVE", "RESOLVED", "RESOLVED", "ARCHIVED"]
    for n in (0, 1, 2, 3, 4, 229):
        e = got[findings[n]["Id"]]
        assert e.cluster == CLUSTER and e.source == "opsledger/collector/aws/securityhub"
        assert e.data["status"] == expect_status[n % 5], n
        assert e.data["severity"] == findings[n]["Severity"]["Label"]
        assert e.data["resource"] == f"arn:aws-us-gov:eks:{GOV}:{ACCOUNT}:cluster/{CLUSTER}"
        assert e.data["finding_type"] == findings[n]["Types"][0]
        assert e.data["first_seen"] == "2026-10-01T08:00:00Z"
        assert len(e.id) <= 256 and e.id.startswith(findings[n]["Id"] + "/")

    # One finding resolved at 06:30, one re-imported unchanged: one new event, in the next run.
    sh_import(
        moto,
        [
            asff(0, "2026-10-14T06:30:00.000Z", workflow="RESOLVED", label="INFORMATIONAL"),
            findings[1],
        ],
    )
    collector.clock = fixed("2026-10-14T07:00:00Z")
    second = run_once(sqlite_ledger, collector)
    assert (second.error, second.appended) == (None, 1)  # moto ignores the filter; we do not
    zero = [
        e
        for e in events(sqlite_ledger, "opsledger.finding")
        if e.data["finding_id"] == findings[0]["Id"]
    ]
    assert [e.data["status"] for e in zero] == ["ACTIVE", "RESOLVED"]
    assert load_cursor(sqlite_ledger.engine, "aws/securityhub") == {
        "updated_at_ms": _ms("2026-10-14T07:00:00Z")
    }


# -- Cost Explorer (moto) --------------------------------------------------------------------------

SERVICES = (
    "Amazon Elastic Compute Cloud - Compute",
    "Amazon Elastic Kubernetes Service",
    "AWS Security Hub",
)


def ce_day(day: str, amounts: dict[str, str], metric: str = "UnblendedCost") -> dict[str, Any]:
    """One day of GetCostAndUsage's ResultsByTime, grouped by SERVICE."""
    end = datetime.fromtimestamp(epoch(day + "T00:00:00Z") + 86400, UTC).strftime("%Y-%m-%d")
    return {
        "TimePeriod": {"Start": day, "End": end},
        "Total": {},
        "Groups": [
            {"Keys": [s], "Metrics": {metric: {"Amount": a, "Unit": "USD"}}}
            for s, a in amounts.items()
        ],
        "Estimated": True,
    }


def amounts_of(day: int, bump: float = 0.0) -> dict[str, str]:
    """Spend per service on 2026-10-<day>."""
    return {s: f"{(day * 100 + i * 7.25 + bump):.10f}" for i, s in enumerate(SERVICES)}


def days(first: int, last: int, bump: float = 0.0) -> list[dict[str, Any]]:
    """ResultsByTime for 2026-10-<first> .. 2026-10-<last>."""
    return [ce_day(f"2026-10-{d:02d}", amounts_of(d, bump)) for d in range(first, last + 1)]


def ce_seed(moto: str, *results: dict[str, Any]) -> None:
    """Queue GetCostAndUsage answers, in the order the requests will come."""
    post_json(f"{moto}/moto-api/static/ce/cost-and-usage-results", {"results": list(results)})


def cost_config(moto: str) -> AwsConfig:
    """Cost Explorer through moto, back-filling 10 days (spend per service only)."""
    section = {"backfill": "10d", "instance_types": False}
    return AwsConfig.model_validate(
        {"region": "us-east-1", "endpoint_url": moto, "cost_explorer": section}
    )


def cost_collector(moto: str, now: str) -> CostCollector:
    """The cost collector with its clock stopped at `now`."""
    (c,) = build(cost_config(moto), None)
    assert isinstance(c, CostCollector)
    c.clock = fixed(now)
    return c


def recorded_costs(ledger: Ledger) -> Counter[tuple[str, str]]:
    """How often each (date, service) is recorded."""
    return Counter(
        (e.data["date"], e.data["service"]) for e in events(ledger, "opsledger.cost.daily")
    )


@pytest.mark.slow
def test_cost_explorer_records_settled_days_once(moto: str, sqlite_ledger: Ledger) -> None:
    page1 = {
        "ResultsByTime": [*days(4, 7), ce_day("2026-10-08", dict(list(amounts_of(8).items())[:1]))],
        "NextPageToken": "page-2",
    }
    # The second page finishes 10-08's groups and carries 10-13, still partial at 05:00 on 10-14.
    rest = [
        ce_day("2026-10-08", dict(list(amounts_of(8).items())[1:])),
        *days(9, 12),
        ce_day("2026-10-13", amounts_of(13, -900)),
    ]
    ce_seed(moto, page1, {"ResultsByTime": rest}, {"ResultsByTime": days(13, 13)})

    first = run_once(sqlite_ledger, cost_collector(moto, "2026-10-14T05:00:00Z"))
    assert (first.error, first.appended) == (None, 27)  # 10-04 .. 10-12: settled a day ago
    assert load_cursor(sqlite_ledger.engine, "aws/cost") == {"next_date": "2026-10-13"}
    # Later the same day 10-13 is not settled yet: no call, nothing recorded.
    same_day = run_once(sqlite_ledger, cost_collector(moto, "2026-10-14T23:00:00Z"))
    assert (same_day.error, same_day.appended) == (None, 0)
    later = run_once(sqlite_ledger, cost_collector(moto, "2026-10-15T05:00:00Z"))
    assert (later.error, later.appended) == (None, 3)

    counts = recorded_costs(sqlite_ledger)
    assert len(counts) == 30 and set(counts.values()) == {1}
    by_key = {
        (e.data["date"], e.data["service"]): e
        for e in events(sqlite_ledger, "opsledger.cost.daily")
    }
    ec2 = by_key[("2026-10-08", SERVICES[0])]
    assert ec2.id == f"2026-10-08/{SERVICES[0]}" and ec2.source == "opsledger/collector/aws/cost"
    assert ec2.cluster is None and ec2.time_us == int(epoch("2026-10-09T00:00:00Z") * 1e6)
    assert dict(ec2.data or {}) == {
        "date": "2026-10-08",
        "service": SERVICES[0],
        "amount": 800.0,
        "currency": "USD",
    }
    assert by_key[("2026-10-13", SERVICES[2])].data["amount"] == pytest.approx(1314.5)


@pytest.mark.slow
def test_cost_sigkill_mid_run_then_rerun_counts_each_day_once(
    moto: str, backend_url: str, ledger: Ledger
) -> None:
    # The killed run gets 10-04 .. 10-12; the rerun (from 10-05) gets figures that restate
    # 10-04, which must neither be recorded again nor conflict.
    ce_seed(moto, {"ResultsByTime": days(4, 12)}, {"ResultsByTime": days(4, 12, bump=0.5)})
    proc = start_worker(
        backend_url, cost_config(moto), "aws/cost", "2026-10-14T05:00:00Z", pause_after=1
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["committed", "3", "0"]
        assert proc.stdout.readline().strip() == "paused"
    finally:
        kill(proc)
    assert load_cursor(ledger.engine, "aws/cost") == {"next_date": "2026-10-05"}

    rerun = run_once(ledger, cost_collector(moto, "2026-10-14T05:00:00Z"))
    assert (rerun.error, rerun.appended) == (None, 24)
    counts = recorded_costs(ledger)
    assert len(counts) == 27 and set(counts.values()) == {1}
    amounts = {
        (e.data["date"], e.data["service"]): e.data["amount"]
        for e in events(ledger, "opsledger.cost.daily")
    }
    assert amounts[("2026-10-04", SERVICES[0])] == 400.0  # as first recorded
    assert amounts[("2026-10-05", SERVICES[0])] == 500.5  # the rerun's figures


# -- budgets ---------------------------------------------------------------------------------------


def budget_collector(now: str, amount: float) -> BudgetCollector:
    """A budget from config, clock stopped at `now`."""
    cfg = AwsConfig.model_validate({"region": GOV, "budget": {"monthly_amount": amount}})
    (c,) = build(cfg, None)
    assert isinstance(c, BudgetCollector)
    c.clock = fixed(now)
    return c


@pytest.mark.slow
def test_budget_from_config_once_per_month_and_change(sqlite_ledger: Ledger) -> None:
    runs = [
        ("2026-10-14T07:00:00Z", 42000.0, 1),
        ("2026-10-15T07:00:00Z", 42000.0, 0),
        ("2026-10-20T09:30:00Z", 45000.0, 1),
        ("2026-11-01T00:10:00Z", 45000.0, 1),
    ]
    for now, amount, appended in runs:
        result = run_once(sqlite_ledger, budget_collector(now, amount))
        assert (result.error, result.appended) == (None, appended), now
    got = [
        (e.id, e.time_us, dict(e.data or {})) for e in events(sqlite_ledger, "opsledger.budget.set")
    ]
    us = lambda t: int(epoch(t) * 1e6)  # noqa: E731
    assert got == [
        (
            "2026-10/1",
            us("2026-10-01T00:00:00Z"),
            {"month": "2026-10", "amount": 42000, "currency": "USD"},
        ),
        (
            "2026-10/2",
            us("2026-10-20T09:30:00Z"),
            {"month": "2026-10", "amount": 45000, "currency": "USD"},
        ),
        (
            "2026-11/1",
            us("2026-11-01T00:00:00Z"),
            {"month": "2026-11", "amount": 45000, "currency": "USD"},
        ),
    ]


def test_budget_from_aws_budgets(moto: str, sqlite_ledger: Ledger) -> None:
    client = boto3.client("budgets", region_name="us-east-1", endpoint_url=moto)

    def create(amount: str, unit: str = "MONTHLY") -> None:
        client.create_budget(
            AccountId=ACCOUNT,
            Budget={
                "BudgetName": "eks-monthly",
                "BudgetLimit": {"Amount": amount, "Unit": "USD"},
                "TimeUnit": unit,
                "BudgetType": "COST",
            },
        )

    create("42000")
    cfg = AwsConfig.model_validate(
        {
            "region": "us-east-1",
            "endpoint_url": moto,
            "budget": {"account_id": ACCOUNT, "budget_name": "eks-monthly"},
        }
    )
    (collector,) = build(cfg, None)
    assert (
        run_once(sqlite_ledger, collector).appended,
        run_once(sqlite_ledger, collector).appended,
    ) == (1, 0)
    client.delete_budget(AccountId=ACCOUNT, BudgetName="eks-monthly")
    create("39000.50")
    changed = run_once(sqlite_ledger, collector)
    assert (changed.error, changed.appended) == (None, 1)
    month = time.strftime("%Y-%m", time.gmtime())
    got = [(e.id, e.data["amount"]) for e in events(sqlite_ledger, "opsledger.budget.set")]
    assert got == [(f"{month}/1", 42000.0), (f"{month}/2", 39000.5)]
    first_day = calendar.timegm(time.strptime(month + "-01", "%Y-%m-%d")) * 1_000_000
    assert events(sqlite_ledger, "opsledger.budget.set")[0].time_us == first_day

    client.delete_budget(AccountId=ACCOUNT, BudgetName="eks-monthly")
    create("500000", unit="ANNUALLY")
    refused = run_once(sqlite_ledger, collector)
    assert refused.error is not None and "only MONTHLY COST budgets" in refused.error


# -- configuration and GovCloud --------------------------------------------------------------------


@pytest.mark.slow
def test_govcloud_region_partition_and_billing_endpoints() -> None:
    cfg = AwsConfig.model_validate(
        {
            "region": GOV,
            "guardduty": {"detector_id": DETECTOR},
            "securityhub": {},
            "cost_explorer": {"region": "us-east-1", "profile": "commercial-billing"},
            "budget": {"monthly_amount": 42000},
        }
    )
    assert cfg.partition == "aws-us-gov"
    collectors = build(cfg, CLUSTER)
    assert [c.name for c in collectors] == [
        "aws/guardduty",
        "aws/securityhub",
        "aws/cost",
        "aws/cost-instance-types",
        "aws/budget",
    ]
    assert [c.interval_seconds for c in collectors] == [900, 900, 21600, 21600, 86400]
    gd, sh, cost, _, _ = collectors
    assert isinstance(gd, GuardDutyCollector) and isinstance(sh, SecurityHubCollector)
    assert isinstance(cost, CostCollector)
    client = gd.settings.client("guardduty")
    assert client.meta.endpoint_url == f"https://guardduty.{GOV}.amazonaws.com"
    assert client.meta.partition == "aws-us-gov" and client.meta.region_name == GOV
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 8}
    assert (
        sh.settings.client("securityhub").meta.endpoint_url
        == f"https://securityhub.{GOV}.amazonaws.com"
    )
    # Cost Explorer: the linked standard account's partition, through its own profile.
    assert (cost.settings.region, cost.settings.partition, cost.settings.profile) == (
        "us-east-1",
        "aws",
        "commercial-billing",
    )

    assert (
        AwsConfig.model_validate({"region": "us-gov-east-1", "partition": "aws-us-gov"}).partition
        == "aws-us-gov"
    )
    commercial = AwsConfig.model_validate({"region": "eu-west-1", "cost_explorer": {}})
    assert commercial.partition == "aws"
    ce, _ = build(commercial, None)
    assert isinstance(ce, CostCollector) and ce.settings.region == "us-east-1"


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ({"region": GOV, "partition": "aws"}, "does not match region"),
        ({"region": GOV, "cost_explorer": {}}, "GovCloud billing data"),
        (
            {"region": GOV, "budget": {"account_id": ACCOUNT, "budget_name": "b"}},
            "GovCloud billing data",
        ),
        ({"region": "mars-1"}, "not an AWS region"),
        ({"region": "us-east-1", "aws_access_key_id": "AKIA"}, "Extra inputs"),
        ({"region": "us-east-1", "guardduty": {"secret": "x"}}, "Extra inputs"),
        ({"region": "us-east-1", "budget": {}}, "either monthly_amount"),
        ({"region": "us-east-1", "budget": {"budget_name": "b"}}, "needs both"),
        ({"region": "us-east-1", "endpoint_url": "http://user:pw@host"}, "without user info"),
        ({"region": "us-east-1", "cost_explorer": {"metric": "UsageQuantity"}}, "metric"),
        ({"region": "us-east-1", "max_attempts": 0}, "max_attempts"),
    ],
)
def test_bad_config_is_refused(doc: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        AwsConfig.model_validate(doc)


# -- crash tests for the other two collectors ------------------------------------------------------


@pytest.mark.slow
def test_securityhub_sigkill_mid_run_then_rerun_records_each_finding_once(
    moto: str, backend_url: str, ledger: Ledger
) -> None:
    # moto keeps findings per server, so these ids must differ from the other Security Hub test.
    findings = [asff(5000 + n, f"2026-10-15T0{n % 5}:00:00.000Z") for n in range(250)]
    sh_import(moto, findings)
    cfg = AwsConfig.model_validate({"region": GOV, "endpoint_url": moto, "securityhub": {}})
    proc = start_worker(backend_url, cfg, "aws/securityhub", "2026-10-15T06:00:00Z", pause_after=1)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().split()
        assert first[0] == "committed" and int(first[1]) > 0, first
        assert proc.stdout.readline().strip() == "paused"
    finally:
        kill(proc)
    mine = {f["Id"] for f in findings}
    before = [e for e in events(ledger, "opsledger.finding") if e.data["finding_id"] in mine]
    assert 0 < len(before) < len(mine)  # killed after its first page, before the cursor moved

    (collector,) = build(cfg, None)
    assert isinstance(collector, SecurityHubCollector)
    collector.clock = fixed("2026-10-15T06:05:00Z")
    rerun = run_once(ledger, collector)
    assert rerun.error is None and rerun.duplicates >= len(before)
    recorded = Counter(
        e.data["finding_id"]
        for e in events(ledger, "opsledger.finding")
        if e.data["finding_id"] in mine
    )
    assert set(recorded) == mine and set(recorded.values()) == {1}


@pytest.mark.slow
def test_budget_sigkill_after_its_commit_then_rerun_records_it_once(
    backend_url: str, ledger: Ledger
) -> None:
    cfg = AwsConfig.model_validate({"region": GOV, "budget": {"monthly_amount": 42000}})
    proc = start_worker(backend_url, cfg, "aws/budget", "2026-10-14T07:00:00Z", pause_after=1)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["committed", "1", "0"]
        assert proc.stdout.readline().strip() == "paused"
    finally:
        kill(proc)
    rerun = run_once(ledger, budget_collector("2026-10-14T07:05:00Z", 42000.0))
    assert (rerun.error, rerun.appended) == (None, 0)
    assert len(events(ledger, "opsledger.budget.set")) == 1

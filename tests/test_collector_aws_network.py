"""The subnet collector through real boto3 clients, moto's EC2 and real ledgers.

moto serves EC2 in GovCloud's region; `Ec2Pager` in front of it pages DescribeSubnets as EC2
does. Available addresses are made with network interfaces (each takes its primary and
secondary addresses). The crash test SIGKILLs a worker between pages, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from pydantic import ValidationError
from support import REPO
from support.aws_doubles import (
    Ec2Pager,
    epoch,
    fake_aws_env,
    fixed,
    kill,
    moto_server,
    reset_moto,
    start_worker,
)

from ingest.collectors.aws.collectors import AwsConfig, build
from ingest.collectors.aws.network import SubnetCollector, total_ips
from ingest.collectors.config import load_collectors
from ingest.collectors.runtime import run_once
from store.collectors import load_cursor
from store.ledger import Ledger, RecordedEvent

GOV = "us-gov-west-1"
CLUSTER = "govcloud-prod-1"
TAG = f"kubernetes.io/cluster/{CLUSTER}"
SUBNET_TYPE = "opsledger.network.subnet.status"
EVENT_ID = re.compile(
    r"^(?P<subnet>subnet-[0-9a-f]+)/(?P<at>[\dT:-]+Z)/(?P<tail>[0-9a-f]{12}|deleted)$"
)


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_aws_env(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """One moto server for the module."""
    with moto_server() as url:
        yield url


@pytest.fixture
def ec2(moto_url: str) -> Iterator[Ec2Pager]:
    """A fresh moto (every backend reset) behind a DescribeSubnets pager."""
    reset_moto(moto_url)
    pager = Ec2Pager(moto_url)
    try:
        yield pager
    finally:
        pager.close()


class Vpc:
    """A VPC of moto's EC2 in GovCloud, and helpers to shape its subnets."""

    def __init__(self, url: str, *, ipv6: bool = False) -> None:
        self.client = boto3.client("ec2", region_name=GOV, endpoint_url=url)
        vpc = self.client.create_vpc(CidrBlock="10.0.0.0/16", AmazonProvidedIpv6CidrBlock=ipv6)
        self.vpc_id = vpc["Vpc"]["VpcId"]
        self.ipv6 = [a["Ipv6CidrBlock"] for a in vpc["Vpc"].get("Ipv6CidrBlockAssociationSet", [])]

    def subnet(self, cidr: str, zone: str, tags: dict[str, str] | None = None) -> str:
        """A subnet of the VPC; its id."""
        spec: dict[str, Any] = {}
        if tags:
            spec["TagSpecifications"] = [
                {
                    "ResourceType": "subnet",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ]
        out = self.client.create_subnet(
            VpcId=self.vpc_id, CidrBlock=cidr, AvailabilityZone=f"{GOV}{zone}", **spec
        )
        return str(out["Subnet"]["SubnetId"])

    def ipv6_only_subnet(self, tags: dict[str, str]) -> str:
        """An IPv6-only subnet (no IPv4 CIDR) of the VPC; its id."""
        out = self.client.create_subnet(
            VpcId=self.vpc_id,
            Ipv6Native=True,
            Ipv6CidrBlock=self.ipv6[0].replace("/56", "/64"),
            AvailabilityZone=f"{GOV}a",
            TagSpecifications=[
                {
                    "ResourceType": "subnet",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        )
        return str(out["Subnet"]["SubnetId"])

    def use(self, subnet_id: str, addresses: int) -> None:
        """Take `addresses` of the subnet with one network interface."""
        self.client.create_network_interface(
            SubnetId=subnet_id, SecondaryPrivateIpAddressCount=addresses - 1
        )

    def delete(self, subnet_id: str) -> None:
        """Delete a subnet (its interfaces first)."""
        enis = self.client.describe_network_interfaces(
            Filters=[{"Name": "subnet-id", "Values": [subnet_id]}]
        )["NetworkInterfaces"]
        for eni in enis:
            self.client.delete_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"])
        self.client.delete_subnet(SubnetId=subnet_id)


def config(url: str, **section: Any) -> AwsConfig:
    """The subnets of CLUSTER in GovCloud through `url`."""
    return AwsConfig.model_validate(
        {"region": GOV, "endpoint_url": url, "subnets": [{"cluster": CLUSTER, **section}]}
    )


def collector(url: str, now: str, **section: Any) -> SubnetCollector:
    """The subnet collector with its clock stopped at `now`."""
    (c,) = build(config(url, **section), None)
    assert isinstance(c, SubnetCollector)
    c.clock = fixed(now)
    return c


def recorded(ledger: Ledger) -> list[RecordedEvent]:
    """Every subnet status event, in ledger order."""
    return [e for e in ledger.iter_all() if e.type == SUBNET_TYPE]


def us(text: str) -> int:
    """UTC microseconds of an ISO instant."""
    return int(epoch(text) * 1_000_000)


def test_total_ips_leave_out_the_five_aws_reserves() -> None:
    assert [total_ips(c) for c in ("10.0.0.0/16", "10.0.1.0/24", "10.0.2.0/28")] == [
        65531,
        251,
        11,
    ]


@pytest.mark.slow
def test_cluster_tag_subnets_every_interval_and_a_deletion_once(
    ec2: Ec2Pager, moto_url: str, sqlite_ledger: Ledger
) -> None:
    vpc = Vpc(moto_url)
    a = vpc.subnet("10.0.0.0/24", "a", {TAG: "shared"})
    b = vpc.subnet("10.0.1.0/26", "b", {TAG: "owned", "Name": "private-b"})
    c = vpc.subnet("10.0.2.0/28", "c", {TAG: "shared"})
    vpc.subnet("10.0.3.0/24", "a")  # untagged
    vpc.subnet("10.0.4.0/24", "b", {"kubernetes.io/cluster/other": "shared"})
    vpc.use(a, 40)
    vpc.use(b, 3)

    first = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T07:42:10Z"))
    assert (first.error, first.appended) == (None, 3)
    got = {e.data["subnet_id"]: e for e in recorded(sqlite_ledger)}
    assert {k: dict(v.data or {}) for k, v in got.items()} == {
        a: {
            "subnet_id": a,
            "zone": f"{GOV}a",
            "cidr": "10.0.0.0/24",
            "available_ips": 211,
            "total_ips": 251,
            "vpc_id": vpc.vpc_id,
        },
        b: {
            "subnet_id": b,
            "zone": f"{GOV}b",
            "cidr": "10.0.1.0/26",
            "available_ips": 56,
            "total_ips": 59,
            "vpc_id": vpc.vpc_id,
        },
        c: {
            "subnet_id": c,
            "zone": f"{GOV}c",
            "cidr": "10.0.2.0/28",
            "available_ips": 11,
            "total_ips": 11,
            "vpc_id": vpc.vpc_id,
        },
    }
    for e in got.values():
        m = EVENT_ID.match(e.id)
        assert m is not None and m["subnet"] == e.data["subnet_id"], e.id
        assert m["at"] == "2026-10-14T07:00:00Z"  # the start of the run's (1 h) interval
        assert e.time_us == us("2026-10-14T07:00:00Z") and e.cluster == CLUSTER
        assert e.source == f"opsledger/collector/aws/subnets/{CLUSTER}"
    # One call per run: the cluster tag, whatever its value, signed for GovCloud's EC2.
    (call,) = ec2.subnet_calls()
    assert (call["Filter.1.Name"], call["Filter.1.Value.1"], call["MaxResults"]) == (
        "tag-key",
        TAG,
        "1000",
    )
    assert all(f"/{GOV}/ec2/aws4_request" in x["auth"] for x in ec2.calls)
    assert load_cursor(sqlite_ledger.engine, f"aws/subnets/{CLUSTER}") == {
        "seen": sorted([a, b, c])
    }

    # The same interval again: the same figures, duplicates only.
    again = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T07:58:00Z"))
    assert (again.error, again.appended, again.duplicates) == (None, 0, 3)
    # Still the same interval, but more addresses in use: a newer observation, not a conflict.
    vpc.use(c, 2)
    newer = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T07:59:00Z"))
    assert (newer.error, newer.appended, newer.duplicates) == (None, 1, 2)

    # Subnet c goes: the next interval records a and b, and c's deletion once.
    vpc.delete(c)
    later = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T08:05:00Z"))
    assert (later.error, later.appended) == (None, 3)
    gone = [e for e in recorded(sqlite_ledger) if e.data.get("deleted")]
    assert [(e.id, dict(e.data or {}), e.time_us) for e in gone] == [
        (
            f"{c}/2026-10-14T08:00:00Z/deleted",
            {"subnet_id": c, "deleted": True},
            us("2026-10-14T08:00:00Z"),
        )
    ]
    after = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T09:05:00Z"))
    assert (after.error, after.appended) == (None, 2)
    assert len([e for e in recorded(sqlite_ledger) if e.data.get("deleted")]) == 1
    per_subnet = Counter(e.data["subnet_id"] for e in recorded(sqlite_ledger))
    assert per_subnet == {a: 3, b: 3, c: 3}  # c: 07:00 twice (new figures) and its deletion


@pytest.mark.slow
def test_explicit_ids_and_tag_values_select_subnets(
    ec2: Ec2Pager, moto_url: str, sqlite_ledger: Ledger
) -> None:
    vpc = Vpc(moto_url)
    tagged = vpc.subnet("10.0.0.0/24", "a", {"karpenter.sh/discovery": CLUSTER})
    other = vpc.subnet("10.0.1.0/24", "b", {"karpenter.sh/discovery": "staging"})
    plain = vpc.subnet("10.0.2.0/24", "c")

    explicit = collector(ec2.url, "2026-10-14T07:00:00Z", subnet_ids=[plain, tagged])
    assert run_once(sqlite_ledger, explicit).appended == 2
    assert {e.data["subnet_id"] for e in recorded(sqlite_ledger)} == {plain, tagged}
    (call,) = ec2.subnet_calls()
    # A filter rather than SubnetIds, so a deleted id cannot fail the call.
    assert (call["Filter.1.Name"], call["Filter.1.Value.1"], call["Filter.1.Value.2"]) == (
        "subnet-id",
        *sorted([plain, tagged]),
    )
    assert "SubnetId.1" not in call
    vpc.delete(plain)
    later = run_once(
        sqlite_ledger,
        collector(ec2.url, "2026-10-14T08:00:00Z", subnet_ids=[plain, tagged]),
    )
    assert (later.error, later.appended) == (None, 2)  # tagged again, plain deleted
    assert [e.data["subnet_id"] for e in recorded(sqlite_ledger) if e.data.get("deleted")] == [
        plain
    ]

    ec2.calls.clear()
    by_value = collector(
        ec2.url, "2026-10-14T09:00:00Z", tags={"karpenter.sh/discovery": CLUSTER, "team": None}
    )
    vpc.client.create_tags(Resources=[tagged, other], Tags=[{"Key": "team", "Value": "infra"}])
    result = run_once(sqlite_ledger, by_value)
    assert result.error is None
    (call,) = ec2.subnet_calls()
    assert {
        (call["Filter.1.Name"], call["Filter.1.Value.1"]),
        (call["Filter.2.Name"], call["Filter.2.Value.1"]),
    } == {("tag:karpenter.sh/discovery", CLUSTER), ("tag-key", "team")}
    newest = [e for e in recorded(sqlite_ledger) if e.time_us == us("2026-10-14T09:00:00Z")]
    assert [e.data["subnet_id"] for e in newest] == [tagged]


@pytest.mark.slow
def test_pages_and_a_selection_that_matches_nothing(
    ec2: Ec2Pager, moto_url: str, sqlite_ledger: Ledger
) -> None:
    vpc = Vpc(moto_url)
    ids = [vpc.subnet(f"10.0.{i}.0/24", "abc"[i % 3], {TAG: "shared"}) for i in range(12)]
    paged = collector(ec2.url, "2026-10-14T07:00:00Z", page_size=5)
    result = run_once(sqlite_ledger, paged)
    assert (result.error, result.appended) == (None, 12)
    calls = ec2.subnet_calls()
    assert [(c["MaxResults"], c.get("NextToken")) for c in calls] == [
        ("5", None),
        ("5", "5"),
        ("5", "10"),
    ]
    assert {e.data["subnet_id"] for e in recorded(sqlite_ledger)} == set(ids)

    nothing = collector(ec2.url, "2026-10-14T08:00:00Z", tags={"no-such-tag": None})
    failed = run_once(sqlite_ledger, nothing)
    assert failed.error is not None and "no IPv4 subnet matches" in failed.error
    assert "no-such-tag" in failed.error
    # What it recorded first: every subnet it saw before is no longer selected.
    assert len([e for e in recorded(sqlite_ledger) if e.data.get("deleted")]) == 12


@pytest.mark.slow
def test_sigkill_between_pages_then_rerun_records_each_subnet_once(
    ec2: Ec2Pager, moto_url: str, backend_url: str, ledger: Ledger
) -> None:
    vpc = Vpc(moto_url)
    ids = [vpc.subnet(f"10.0.{i}.0/24", "abc"[i % 3], {TAG: "owned"}) for i in range(12)]
    cfg = config(ec2.url, page_size=5)
    name = f"aws/subnets/{CLUSTER}"
    proc = start_worker(backend_url, cfg, name, "2026-10-14T07:10:00Z", pause_after=1)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["committed", "5", "0"]
        assert proc.stdout.readline().strip() == "paused"
    finally:
        kill(proc)
    first_page = {e.data["subnet_id"] for e in recorded(ledger)}
    assert len(first_page) == 5
    assert load_cursor(ledger.engine, name) == {"seen": sorted(first_page)}

    # One subnet of the killed run's page is deleted before the rerun: it was seen, so the
    # rerun reports its deletion; every other subnet is recorded once.
    victim = sorted(first_page)[0]
    vpc.delete(victim)
    rerun = run_once(ledger, collector(ec2.url, "2026-10-14T07:20:00Z", page_size=5))
    assert (rerun.error, rerun.appended, rerun.duplicates) == (None, 8, 4)  # 7 new, 1 deletion
    present = Counter(e.data["subnet_id"] for e in recorded(ledger) if not e.data.get("deleted"))
    assert set(present) == set(ids) and set(present.values()) == {1}
    deleted = [e.data["subnet_id"] for e in recorded(ledger) if e.data.get("deleted")]
    assert deleted == [victim]
    assert load_cursor(ledger.engine, name) == {"seen": sorted(set(ids) - {victim})}


@pytest.mark.slow
def test_sigkill_after_the_last_page_then_rerun_appends_duplicates_only(
    ec2: Ec2Pager, moto_url: str, backend_url: str, ledger: Ledger
) -> None:
    vpc = Vpc(moto_url)
    for i in range(3):
        vpc.subnet(f"10.0.{i}.0/24", "abc"[i], {TAG: "owned"})
    cfg = config(ec2.url)
    name = f"aws/subnets/{CLUSTER}"
    proc = start_worker(backend_url, cfg, name, "2026-10-14T07:10:00Z", pause_after=1)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["committed", "3", "0"]
    finally:
        kill(proc)
    rerun = run_once(ledger, collector(ec2.url, "2026-10-14T07:10:00Z"))
    assert (rerun.error, rerun.appended, rerun.duplicates) == (None, 0, 3)
    assert len(recorded(ledger)) == 3


def test_an_ipv6_only_subnet_is_skipped_with_a_warning(
    ec2: Ec2Pager, moto_url: str, sqlite_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    vpc = Vpc(moto_url, ipv6=True)
    v4 = vpc.subnet("10.0.0.0/24", "a", {TAG: "owned"})
    v6 = vpc.ipv6_only_subnet({TAG: "owned"})
    with caplog.at_level(logging.WARNING, logger="opsledger.collectors.aws"):
        result = run_once(sqlite_ledger, collector(ec2.url, "2026-10-14T07:00:00Z"))
    assert (result.error, result.appended) == (None, 1)
    assert [e.data["subnet_id"] for e in recorded(sqlite_ledger)] == [v4]
    assert f"skipped {v6}, cannot map it: ValueError: an IPv6-only subnet" in caplog.text
    assert load_cursor(sqlite_ledger.engine, f"aws/subnets/{CLUSTER}") == {"seen": [v4]}


# -- configuration and GovCloud --------------------------------------------------------------------


def test_govcloud_partition_endpoint_and_defaults() -> None:
    cfg = AwsConfig.model_validate(
        {
            "region": GOV,
            "subnets": [
                {"cluster": CLUSTER},
                {"cluster": "govcloud-east", "region": "us-gov-east-1", "interval": "15m"},
            ],
        }
    )
    west, east = build(cfg, None)
    assert isinstance(west, SubnetCollector) and isinstance(east, SubnetCollector)
    assert (west.name, west.interval_seconds) == (f"aws/subnets/{CLUSTER}", 3600)
    assert (east.name, east.interval_seconds) == ("aws/subnets/govcloud-east", 900)
    client = west.settings.client("ec2")
    assert client.meta.endpoint_url == f"https://ec2.{GOV}.amazonaws.com"
    assert client.meta.partition == "aws-us-gov"
    assert (
        east.settings.client("ec2").meta.endpoint_url == "https://ec2.us-gov-east-1.amazonaws.com"
    )
    assert west.cfg.filters() == [{"Name": "tag-key", "Values": [TAG]}]


def test_the_collectors_file_takes_the_subnets_section(tmp_path: Path) -> None:
    path = tmp_path / "collectors.yaml"
    path.write_text(
        "clusters:\n"
        f"  - name: {CLUSTER}\n"
        "aws:\n"
        f"  region: {GOV}\n"
        "  subnets:\n"
        f"    - cluster: {CLUSTER}\n"
        "      subnet_ids: [subnet-0a1b2c3d4e5f60718, subnet-0a1b2c3d4e5f60719]\n"
    )
    (c,) = load_collectors(path)
    assert isinstance(c, SubnetCollector)
    assert c.cfg.filters() == [
        {"Name": "subnet-id", "Values": ["subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719"]}
    ]


@pytest.mark.parametrize(
    ("section", "complaint"),
    [
        ({}, "cluster"),
        ({"cluster": "a b"}, "letters, digits"),
        ({"cluster": "c", "subnet_ids": ["subnet-1"]}, "not a subnet id"),
        ({"cluster": "c", "subnet_ids": []}, "1 to 200"),
        ({"cluster": "c", "subnet_ids": ["subnet-0a1b2c3d"], "tags": {"k": None}}, "not both"),
        ({"cluster": "c", "tags": {}}, "at least one tag"),
        ({"cluster": "c", "tags": {"k": []}}, "empty list"),
        ({"cluster": "c", "page_size": 4}, "page_size"),
        ({"cluster": "c", "vpc": "vpc-1"}, "Extra inputs"),
    ],
)
def test_bad_subnets_sections_are_refused(section: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        AwsConfig.model_validate({"region": GOV, "subnets": [section]})


def test_the_documented_aws_configuration_builds() -> None:
    doc = (REPO / "docs" / "collectors.md").read_text(encoding="utf-8")
    example = re.search(r"### AWS: configuration.*?```yaml\n(.*?)```", doc, re.S)
    assert example is not None
    cfg = AwsConfig.model_validate(yaml.safe_load(example.group(1))["aws"])
    assert [c.name for c in build(cfg, None)] == [
        "aws/guardduty",
        "aws/securityhub",
        "aws/cost",
        "aws/cost-instance-types",
        "aws/budget",
        "aws/subnets/govcloud-prod-1",
        "aws/subnets/govcloud-batch-1",
        "aws/subnets/govcloud-edge-1",
    ]


def test_one_subnets_entry_per_cluster() -> None:
    with pytest.raises(ValidationError, match="one entry per cluster; repeated: c"):
        AwsConfig.model_validate(
            {"region": GOV, "subnets": [{"cluster": "c"}, {"cluster": "c", "tags": {"k": "v"}}]}
        )

"""AWS collectors through boto3: findings, Cost Explorer, budgets and a cluster's subnets.

`AwsConfig` is the `aws:` section of the collectors file; `build` turns it into the
collectors `aws/guardduty`, `aws/securityhub`, `aws/cost` (and `aws/cost-instance-types`),
`aws/budget` and `aws/subnets/<cluster>` (each only when its section is present).
Credentials come from the standard chain only (IRSA, EKS Pod Identity, the environment, a
named profile); see docs/collectors.md, "AWS".
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ingest.collectors.aws.common import (
    ClientSettings,
    SourceConfig,
    check_endpoint_url,
    check_region,
    partition_of,
)
from ingest.collectors.aws.cost import (
    BudgetCollector,
    BudgetConfig,
    CostCollector,
    CostExplorerConfig,
)
from ingest.collectors.aws.cost_instance_types import InstanceTypeCostCollector
from ingest.collectors.aws.guardduty import GuardDutyCollector, GuardDutyConfig
from ingest.collectors.aws.network import SubnetCollector, SubnetsConfig
from ingest.collectors.aws.securityhub import SecurityHubCollector, SecurityHubConfig
from ingest.collectors.runtime import Collector

__all__ = [
    "AwsConfig",
    "BudgetConfig",
    "CostExplorerConfig",
    "GuardDutyConfig",
    "SecurityHubConfig",
    "SubnetsConfig",
    "build",
]

#: Where Cost Explorer and Budgets are called in each partition unless a source names a region.
#: GovCloud has none: its billing data lives in the linked standard account (see the docs).
BILLING_REGIONS: Final = {"aws": "us-east-1", "aws-cn": "cn-northwest-1"}
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class AwsConfig(BaseModel):
    """One AWS account and region; each source is collected only when its section is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(description="the region of GuardDuty and Security Hub, e.g. us-gov-west-1")
    partition: str | None = Field(
        None, description="aws, aws-us-gov, aws-cn…; derived from `region` when left out"
    )
    endpoint_url: str | None = Field(
        None, description="send every call here (tests, or a proxy); VPC endpoints need none"
    )
    max_attempts: int = Field(
        8, ge=1, le=20, description="attempts per call, retries included (adaptive retry mode)"
    )
    guardduty: GuardDutyConfig | None = Field(None, description="GuardDuty findings")
    securityhub: SecurityHubConfig | None = Field(None, description="Security Hub findings")
    cost_explorer: CostExplorerConfig | None = Field(None, description="daily spend per service")
    budget: BudgetConfig | None = Field(None, description="the monthly budget")
    subnets: list[SubnetsConfig] = Field(
        default_factory=list, description="each cluster's subnets and their free addresses"
    )

    @model_validator(mode="before")
    @classmethod
    def _derive_partition(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("partition") is None:
            region = data.get("region")
            if isinstance(region, str):
                try:
                    return {**data, "partition": partition_of(check_region(region))}
                except ValueError:
                    pass  # the field validator says why
        return data

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        check_region(value)
        partition_of(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_endpoint_url(value)

    @model_validator(mode="after")
    def _consistent(self) -> AwsConfig:
        clusters = [s.cluster for s in self.subnets]
        twice = sorted({c for c in clusters if clusters.count(c) > 1})
        if twice:
            raise ValueError(f"subnets: one entry per cluster; repeated: {', '.join(twice)}")
        derived = partition_of(self.region)
        if self.partition != derived:
            raise ValueError(
                f"partition {self.partition!r} does not match region {self.region!r} "
                f"(which is in {derived!r})"
            )
        if derived == "aws-us-gov":
            sections: tuple[tuple[str, SourceConfig | None, bool], ...] = (
                ("cost_explorer", self.cost_explorer, True),
                ("budget", self.budget, self.budget is not None and self.budget.from_aws),
            )
            for name, section, calls_aws in sections:
                if calls_aws and section is not None and section.region is None:
                    raise ValueError(
                        f"{name}: GovCloud billing data is only in the linked standard "
                        f"account; set {name}.region (e.g. us-east-1) and {name}.profile "
                        "to credentials of that account"
                    )
        return self

    def client_settings(self, section: SourceConfig, *, billing: bool = False) -> ClientSettings:
        """How `section` reaches AWS: its own region, endpoint and profile over the defaults."""
        region = section.region
        if region is None:
            region = (
                BILLING_REGIONS.get(self.partition or "", self.region) if billing else self.region
            )
        return ClientSettings(
            region=region,
            endpoint_url=section.endpoint_url or self.endpoint_url,
            profile=section.profile,
            max_attempts=self.max_attempts,
        )


def build(cfg: AwsConfig, default_cluster: str | None) -> list[Collector]:
    """The collectors `cfg` configures; `default_cluster` names the cluster of Kubernetes
    findings that do not name one (the one cluster of the collectors file, if there is one)."""
    if default_cluster is not None and not _CLUSTER_RE.match(default_cluster):
        raise ValueError(
            f"cluster {default_cluster!r} must be 1-253 letters, digits, '.', '_', '-'"
        )
    out: list[Collector] = []
    if cfg.guardduty is not None:
        settings = cfg.client_settings(cfg.guardduty)
        out.append(GuardDutyCollector(settings, cfg.guardduty, default_cluster))
    if cfg.securityhub is not None:
        settings = cfg.client_settings(cfg.securityhub)
        out.append(SecurityHubCollector(settings, cfg.securityhub, default_cluster))
    if cfg.cost_explorer is not None:
        settings = cfg.client_settings(cfg.cost_explorer, billing=True)
        out.append(CostCollector(settings, cfg.cost_explorer))
        if cfg.cost_explorer.instance_types:
            out.append(InstanceTypeCostCollector(settings, cfg.cost_explorer))
    if cfg.budget is not None:
        settings = cfg.client_settings(cfg.budget, billing=True)
        out.append(BudgetCollector(settings, cfg.budget))
    for section in cfg.subnets:
        out.append(SubnetCollector(cfg.client_settings(section), section))
    return out

"""Daily EC2 compute spend and usage hours per instance type, from Cost Explorer.

The `cost_explorer` section's second question (on unless `instance_types: false`), asked by
its own collector with its own cursor: `GetCostAndUsage`, DAILY, the service
"Amazon Elastic Compute Cloud - Compute" (and, if set, `instance_type_regions`), grouped by
INSTANCE_TYPE, metrics the configured cost metric and `UsageQuantity` (instance hours). Days
are recorded as the spend per service is: once settled, never asked again, one
`opsledger.cost.instance_type.daily` event per type with the id `<date>/<instance type>`.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any, Final

from ingest.collectors.aws.common import SOURCE_PREFIX
from ingest.collectors.aws.cost import CostCollector, parse_amount
from store.event_types import EventType

if TYPE_CHECKING:
    from mypy_boto3_ce.type_defs import (
        ExpressionTypeDef,
        GetCostAndUsageRequestTypeDef,
        GroupTypeDef,
    )

log = logging.getLogger("opsledger.collectors.aws.cost")

NAME: Final = "aws/cost-instance-types"
SOURCE: Final = SOURCE_PREFIX + "cost-instance-types"
EC2_COMPUTE: Final = "Amazon Elastic Compute Cloud - Compute"
USAGE: Final = "UsageQuantity"
#: Cost Explorer's group for EC2 compute charges that belong to no instance type.
NO_INSTANCE_TYPE: Final = "NoInstanceType"
_HOUR_UNITS: Final = frozenset({"Hrs", "Hr", "Hours", "Hour"})


class InstanceTypeCostCollector(CostCollector):
    """Records settled days of EC2 compute spend and hours per instance type."""

    NAME = NAME
    SOURCE = SOURCE
    EVENT_TYPE = EventType.COST_INSTANCE_TYPE_DAILY

    def _request(self, start: date, end: date) -> GetCostAndUsageRequestTypeDef:
        """DAILY, EC2 compute only, the cost metric and hours, grouped by INSTANCE_TYPE."""
        service: ExpressionTypeDef = {"Dimensions": {"Key": "SERVICE", "Values": [EC2_COMPUTE]}}
        where = service
        if self.cfg.instance_type_regions is not None:
            regions: ExpressionTypeDef = {
                "Dimensions": {"Key": "REGION", "Values": list(self.cfg.instance_type_regions)}
            }
            where = {"And": [service, regions]}
        return {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Filter": where,
            "Metrics": [self.cfg.metric, USAGE],
            "GroupBy": [{"Type": "DIMENSION", "Key": "INSTANCE_TYPE"}],
        }

    def _item(self, group: GroupTypeDef) -> tuple[str, dict[str, Any]] | None:
        """An instance type's spend and hours; charges of no instance type are left out."""
        keys = group.get("Keys") or []
        metrics = group.get("Metrics") or {}
        cost, usage = metrics.get(self.cfg.metric), metrics.get(USAGE)
        if not keys or cost is None or usage is None:
            return None
        instance_type = str(keys[0])[:253]
        if not instance_type or instance_type == NO_INSTANCE_TYPE:
            return None
        unit = str(usage.get("Unit") or "")
        if unit not in _HOUR_UNITS:
            # Hours are what makes a price; a sum in another unit would make a wrong one.
            log.warning(
                "%s: skipped %s, its usage is in %r, not hours", self.name, instance_type, unit
            )
            return None
        return instance_type, {
            "instance_type": instance_type,
            "amount": parse_amount(cost.get("Amount", "0")),
            "usage_hours": max(parse_amount(usage.get("Amount", "0")), 0.0),
            "currency": str(cost.get("Unit") or "USD"),
        }

"""The VPC's private subnets, one per zone, and their free addresses every 6 hours.

Each node takes its primary ENI's addresses and, with the VPC CNI's default
`WARM_ENI_TARGET=1`, a whole spare ENI's worth, plus another ENI each time its pods fill one.
Other tenants of the VPC (endpoints, RDS, Lambda) hold the rest. us-gov-west-1c's /21 is
tight, and a Lambda-heavy service there keeps adding ENIs: it drains through the reference
month and has no address left at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ingest.demo.catalogue import ZONES
from ingest.demo.draws import T_SUBNET, keyed_rng, stable_hex
from ingest.demo.facts import DayPlan, cloudevent
from ingest.demo.pods import hour_pods
from ingest.demo.units import DAY, HOUR, utc_us
from ingest.demo.world import World
from store.event_types import EventType
from store.timefmt import format_us

#: The addresses AWS reserves in every subnet.
_RESERVED: Final = 5
_EVERY_H: Final = 6
VPC_ID: Final = "vpc-0" + stable_hex("demo", "vpc")[:16]
#: IPv4 addresses per ENI of the demo's instance types (EC2's table).
_ENI_IPS: Final = {"xlarge": 15, "2xlarge": 15, "4xlarge": 30}


#: The other tenants of the tight subnet hold this many addresses then, 4 more each day.
_DRAIN_REF_US: Final = utc_us("2026-11-01T00:00:00")


@dataclass(frozen=True, slots=True)
class Subnet:
    """A private subnet and what the VPC's other tenants hold in it (growing `drain` a day)."""

    zone: str
    cidr: str
    others: int
    drain: float = 0.0

    def others_at(self, t_us: int) -> int:
        """Addresses the other tenants hold at t."""
        grown = self.others + self.drain * (t_us - _DRAIN_REF_US) / DAY
        return int(np.clip(round(grown), 0, self.total))

    @property
    def subnet_id(self) -> str:
        """Its id, stable across seeds."""
        return "subnet-0" + stable_hex("demo", "subnet", self.cidr)[:16]

    @property
    def total(self) -> int:
        """Usable addresses: the CIDR's less the five AWS reserves."""
        return int(2 ** (32 - int(self.cidr.split("/")[1]))) - _RESERVED


SUBNETS: Final = (
    Subnet(ZONES[0], "10.40.0.0/20", 1480),
    Subnet(ZONES[1], "10.40.16.0/20", 1720),
    Subnet(ZONES[2], "10.40.32.0/21", 1740, drain=4.0),
)


def _eni_ips(itype: str) -> int:
    """Addresses per ENI of an instance type."""
    return _ENI_IPS[itype.split(".")[1]]


def zone_usage(w: World, h: int) -> dict[str, int]:
    """Addresses the cluster's nodes hold per zone in hour h (primary, pods, warm ENI)."""
    pods = hour_pods(w, h)
    per_node: dict[int, set[str]] = {}
    for name, node in zip(pods.pod, pods.node.tolist(), strict=True):
        per_node.setdefault(node, set()).add(name)
    out = dict.fromkeys(ZONES, 0)
    for i in w.alive_all(h):
        node = w.nodes[i]
        per_eni = _eni_ips(node.itype.name)
        # The primary ENI's first address is the node's own; pods fill the rest, then more
        # ENIs; one more ENI is kept warm. The CNI takes every address of an ENI it attaches.
        enis = max(1, -(-len(per_node.get(i, ())) // (per_eni - 1))) + 1
        out[node.zone] += per_eni * enis
    return out


def subnet_facts(w: World, day: int, plan: DayPlan) -> None:
    """Each subnet's free addresses every 6 hours (`DescribeSubnets`)."""
    for h in range(day * 24, day * 24 + 24, _EVERY_H):
        if not w.h0 <= h < w.h1:
            continue
        used = zone_usage(w, h)
        jitter = keyed_rng(w.seed, h, T_SUBNET).integers(-4, 5, len(SUBNETS))
        t = h * HOUR
        for s, j in zip(SUBNETS, jitter.tolist(), strict=True):
            free = int(np.clip(s.total - s.others_at(t) - j - used[s.zone], 0, s.total))
            data: dict[str, Any] = {
                "subnet_id": s.subnet_id,
                "zone": s.zone,
                "cidr": s.cidr,
                "available_ips": free,
                "total_ips": s.total,
                "vpc_id": VPC_ID,
            }
            event_id = f"subnet/{s.subnet_id}/{format_us(t)}"
            plan.raws.append(cloudevent("network", event_id, EventType.SUBNET_STATUS, t, data))

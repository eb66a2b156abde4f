"""IP headroom: days until each zone's subnets run out of addresses at the pod-count trend.

The VPC CNI gives every pod an address from its node's subnet, and Karpenter puts new nodes in
the zone's subnet with the most free addresses: a zone's subnets drain together, so each has
the zone's days left (docs/metrics.md, "Subnet exhaustion").
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import duckdb

from analytics.capacity.headroom import eta, fit, iso_z
from analytics.capacity.inventory import SUBNETS_AT
from analytics.capacity.nodes import NODE_META
from analytics.capacity.requests import window_days
from analytics.readmodel.model import snapshot

# Pods of a zone at a timestamp: the distinct pods with a CPU usage sample then on a node of
# the zone (node metadata at $at); a day's value is their mean over the day's timestamps.
_PODS: Final = f"""
WITH meta AS ({NODE_META}),
pods AS (
    SELECT DISTINCT v.cluster, m.zone, v.ts, v.namespace, v.pod
    FROM wl_values v JOIN meta m ON m.cluster = v.cluster AND m.node = v.node
    WHERE v.cpu_usage IS NOT NULL AND m.zone IS NOT NULL
      AND v.ts >= $lo AND v.ts < $hi AND ($cluster::VARCHAR IS NULL OR v.cluster = $cluster)
),
per_ts AS (SELECT cluster, zone, ts, count(*) AS pods FROM pods GROUP BY ALL)
SELECT cluster, zone, date_trunc('day', ts) AS day, fsum(pods) / count(pods) AS pods
FROM per_ts GROUP BY ALL ORDER BY cluster, zone, day
"""
_SUBNETS: Final = f"""
SELECT * FROM ({SUBNETS_AT}) WHERE $cluster::VARCHAR IS NULL OR cluster = $cluster
ORDER BY cluster, zone, subnet_id
"""


def _days_left(available: int, pods_per_day: float | None) -> float | None:
    """Days until `available` addresses are taken at `pods_per_day` new pods a day."""
    if available == 0:
        return 0.0
    if pods_per_day is not None and pods_per_day > 0:
        return available / pods_per_day
    return None


def ip_headroom(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    cluster: str | None = None,
    window: timedelta = timedelta(days=30),
) -> dict[str, Any]:
    """Per zone with subnets and per subnet: free addresses, the pod trend and days left."""
    lo, hi = window_days(as_of, window)
    with snapshot(con):
        subnets = con.execute(_SUBNETS, {"at": as_of, "cluster": cluster}).fetchall()
        # Pods only matter where there are subnets to fill.
        pod_rows = (
            con.execute(_PODS, {"at": as_of, "lo": lo, "hi": hi, "cluster": cluster}).fetchall()
            if subnets
            else []
        )
    daily: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for c, zone, day, pods in pod_rows:
        daily.setdefault((c, zone), []).append((day, float(pods)))
    by_zone: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for s in subnets:
        by_zone.setdefault((s[0], s[3]), []).append(s)
    zones, days = [], {}
    for (c, zone), members in by_zone.items():
        available = sum(int(s[5]) for s in members)
        series = daily.get((c, zone))
        pods, slope = fit(series) if series else (None, None)
        days[(c, zone)] = left = _days_left(available, slope)
        zones.append(
            {
                "cluster": c,
                "zone": zone,
                "subnets": [s[1] for s in members],
                "available_ips": available,
                "pods": pods,
                "pods_per_day": slope,
                "days_to_exhaustion": left,
                "eta": eta(as_of, left),
            }
        )
    items = []
    for c, subnet_id, vpc_id, zone, cidr, available, total, ts in subnets:
        # A subnet's share of the zone's new pods is its share of the zone's free addresses.
        left = 0.0 if available == 0 else days[(c, zone)]
        items.append(
            {
                "cluster": c,
                "subnet_id": subnet_id,
                "vpc_id": vpc_id,
                "zone": zone,
                "cidr": cidr,
                "available_ips": available,
                "total_ips": total,
                "days_to_exhaustion": left,
                "eta": eta(as_of, left),
                "observed_at": iso_z(ts),
            }
        )
    return {"as_of": iso_z(as_of), "zones": zones, "subnets": items}

"""Karpenter / EKS Auto Mode NodePools (`karpenter.sh/v1`): status events on change and deletion."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from ingest.collectors.kubernetes.api import Api, KubernetesError
from ingest.collectors.kubernetes.objects import cores, digest, items, obj, text, whole
from store.contract import event_to_cloudevent
from store.event_types import EventType

log = logging.getLogger("opsledger.collectors.kubernetes")

NODEPOOLS: Final = ("karpenter.sh", "v1", "nodepools")
ZONE_KEY: Final = "topology.kubernetes.io/zone"


def read_nodepools(api: Api) -> dict[str, dict[str, Any]] | None:
    """Each NodePool's status data by name; {} without the CRD, None when it cannot be read."""
    try:
        pools = api.custom_list(*NODEPOOLS)
    except KubernetesError as exc:
        if exc.status == 404:  # Karpenter is not installed: there are no NodePools
            return {}
        # Unknown is not "gone": leave the recorded pools as they are until the next run.
        log.warning("skipped NodePools: %s", exc)
        return None
    out = {}
    for pool in pools:
        data = nodepool_data(pool)
        if data is not None:
            out[data["nodepool"]] = data
    return out


def _figures(resources: Mapping[str, Any]) -> dict[str, Any]:
    cpu, memory = cores(resources.get("cpu")), whole(resources.get("memory"))
    out: dict[str, Any] = {}
    if cpu is not None:
        out["cpu_cores"] = max(cpu, 0.0)
    if memory is not None:
        out["memory_bytes"] = max(memory, 0)
    return out


def nodepool_data(pool: Mapping[str, Any]) -> dict[str, Any] | None:
    """A NodePool's limits, provisioned resources and zones; None without a name."""
    name = text(obj(pool.get("metadata")).get("name"))
    if name is None:
        return None
    spec, status = obj(pool.get("spec")), obj(pool.get("status"))
    data: dict[str, Any] = {"nodepool": name}
    limits = _figures(obj(spec.get("limits")))
    if limits:
        data["limits"] = limits
    provisioned = obj(status.get("resources"))
    resources = _figures(provisioned)
    nodes = whole(provisioned.get("nodes"))
    if nodes is not None:
        resources["nodes"] = max(nodes, 0)
    if resources:
        data["resources"] = resources
    requirements = items(obj(obj(spec.get("template")).get("spec")).get("requirements"))
    zones = sorted(
        {
            zone
            for r in requirements
            if r.get("key") == ZONE_KEY and r.get("operator") == "In"
            for zone in (text(v) for v in r.get("values") or [])
            if zone is not None
        }
    )
    if zones:
        data["zones"] = zones
    return data


def nodepool_events(
    recorded: Mapping[str, Any],
    current: Mapping[str, dict[str, Any]],
    *,
    source: str,
    cluster: str,
    now_us: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The events of pools that changed or disappeared since `recorded`, and the new record.

    `recorded` (the cursor's `nodepools`) maps each live pool to the data last sent for it.
    """
    changed: Sequence[dict[str, Any]] = [
        data for name, data in sorted(current.items()) if recorded.get(name) != data
    ]
    gone = [{"nodepool": name, "deleted": True} for name in sorted(set(recorded) - set(current))]
    events = [
        event_to_cloudevent(
            source=source,
            # The time is in the id: a pool that returns to an earlier state is a new event.
            event_id=f"nodepool/{data['nodepool']}/{digest([now_us, data])}",
            event_type=EventType.K8S_NODEPOOL_STATUS,
            time_us=now_us,
            cluster=cluster,
            subject=f"nodepool/{data['nodepool']}",
            data=data,
        )
        for data in [*changed, *gone]
    ]
    return events, dict(current)

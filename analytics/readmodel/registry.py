"""The projections opsledger keeps."""

from __future__ import annotations

from analytics.capacity.inventory import InventoryProjection
from analytics.capacity.projection import CapacityProjection
from analytics.capacity.workloads import WorkloadsProjection
from analytics.cluster_events.projection import ClusterEventsProjection
from analytics.cluster_events.warnings import WarningCountsProjection
from analytics.cost.projection import CostProjection
from analytics.incidents.projection import IncidentProjection
from analytics.readmodel.projection import Projection
from analytics.storage.projection import StorageProjection


def default_projections() -> list[Projection]:
    """Every projection of the read model, in catch-up order."""
    return [
        CapacityProjection(),
        WorkloadsProjection(),
        InventoryProjection(),
        StorageProjection(),
        IncidentProjection(),
        ClusterEventsProjection(),
        WarningCountsProjection(),
        CostProjection(),
    ]

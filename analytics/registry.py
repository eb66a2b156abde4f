"""The projections opsledger keeps."""

from __future__ import annotations

from analytics.capacity import CapacityProjection
from analytics.cluster_events import ClusterEventsProjection
from analytics.cost import CostProjection
from analytics.incidents import IncidentProjection
from analytics.projection import Projection
from analytics.storage import StorageProjection


def default_projections() -> list[Projection]:
    """Every projection of the read model, in catch-up order."""
    return [
        CapacityProjection(),
        StorageProjection(),
        IncidentProjection(),
        ClusterEventsProjection(),
        CostProjection(),
    ]

"""The contract's event types: one `EventType` member for each `type` the ledger accepts."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """A CloudEvents `type` of the contract (docs/events.md); members compare equal to strings."""

    METRIC_SAMPLES = "opsledger.metric.samples"
    K8S_EVENT = "opsledger.k8s.event"
    K8S_NODE_STATUS = "opsledger.k8s.node.status"
    K8S_POD_STATUS = "opsledger.k8s.pod.status"
    K8S_NODEPOOL_STATUS = "opsledger.k8s.nodepool.status"
    SUBNET_STATUS = "opsledger.network.subnet.status"
    FINDING = "opsledger.finding"
    INCIDENT_OPENED = "opsledger.incident.opened"
    INCIDENT_ACKNOWLEDGED = "opsledger.incident.acknowledged"
    INCIDENT_MITIGATED = "opsledger.incident.mitigated"
    INCIDENT_RESOLVED = "opsledger.incident.resolved"
    INCIDENT_REOPENED = "opsledger.incident.reopened"
    INCIDENT_SEVERITY_CHANGED = "opsledger.incident.severity_changed"
    INCIDENT_ANNOTATED = "opsledger.incident.annotated"
    INCIDENT_POSTMORTEM_LINKED = "opsledger.incident.postmortem_linked"
    COST_DAILY = "opsledger.cost.daily"
    COST_INSTANCE_TYPE_DAILY = "opsledger.cost.instance_type.daily"
    BUDGET_SET = "opsledger.budget.set"
    SLA_POLICY_SET = "opsledger.sla.policy_set"


#: The types of an incident's lifecycle share this prefix.
INCIDENT_PREFIX = "opsledger.incident."

"""GuardDuty and Security Hub findings on the cluster, and the incidents some of them open."""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from ingest.demo.catalogue import ACCOUNT, CLUSTER, NS_BY_NAME, REGION
from ingest.demo.draws import T_FIND, keyed_rng, stable_hex, stable_uuid
from ingest.demo.facts import DayPlan, Trigger, cloudevent
from ingest.demo.kubernetes import deployment_pod
from ingest.demo.units import DAY, SEC, format_seconds
from ingest.demo.world import World
from store.event_types import EventType

#: GuardDuty EKS / Runtime Monitoring finding types: (type, severity, namespace, weight).
_GUARDDUTY: Final = (
    ("Execution:Kubernetes/ExecInKubeSystemPod", "MEDIUM", "kube-system", 3.0),
    ("Discovery:Kubernetes/SuccessfulAnonymousAccess", "MEDIUM", None, 2.0),
    ("Policy:Kubernetes/AnonymousAccessGranted", "HIGH", None, 1.0),
    ("PrivilegeEscalation:Kubernetes/PrivilegedContainer", "MEDIUM", "data-pipeline", 2.0),
    ("Persistence:Kubernetes/ContainerWithSensitiveMount", "MEDIUM", "prometheus", 2.0),
    ("Recon:EC2/PortProbeUnprotectedPort", "LOW", None, 4.0),
    ("UnauthorizedAccess:EC2/SSHBruteForce", "LOW", None, 2.0),
    ("Execution:Runtime/NewBinaryExecuted", "MEDIUM", "catalog", 2.0),
    ("DefenseEvasion:Runtime/ProcessInjection.Ptrace", "HIGH", "web-frontend", 0.7),
    ("Impact:Runtime/CryptoMinerExecuted", "HIGH", "notifications", 0.5),
    ("AttackSequence:EKS/CompromisedCluster", "CRITICAL", None, 0.35),
)
#: Security Hub AWS Foundational Security Best Practices controls: (control, title, severity).
_SECURITYHUB: Final = (
    ("EKS.1", "EKS cluster endpoints should not be publicly accessible", "HIGH"),
    ("EKS.2", "EKS clusters should run on a supported Kubernetes version", "HIGH"),
    ("EKS.8", "EKS clusters should have audit logging enabled", "MEDIUM"),
    ("EC2.8", "EC2 instances should use Instance Metadata Service Version 2 (IMDSv2)", "HIGH"),
    (
        "EC2.18",
        "Security groups should only allow unrestricted incoming traffic for authorized ports",
        "HIGH",
    ),
    ("S3.5", "S3 general purpose buckets should require requests to use SSL", "MEDIUM"),
    ("ECR.1", "ECR private repositories should have image scanning configured", "HIGH"),
    ("IAM.6", "Hardware MFA should be enabled for the root user", "CRITICAL"),
    ("KMS.4", "AWS KMS key rotation should be enabled", "MEDIUM"),
    ("SSM.1", "EC2 instances should be managed by AWS Systems Manager", "MEDIUM"),
    ("Config.1", "AWS Config should be enabled and use the service-linked role", "INFORMATIONAL"),
    (
        "CloudWatch.16",
        "CloudWatch log groups should be retained for a specified time period",
        "LOW",
    ),
)
_SH_TYPE: Final = (
    "Software and Configuration Checks/Industry and Regulatory Standards/"
    "AWS-Foundational-Security-Best-Practices"
)
#: The resource each Security Hub control family is evaluated on.
_SH_RESOURCES: Final = {
    "EKS": f"arn:aws-us-gov:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
    "EC2": f"arn:aws-us-gov:ec2:{REGION}:{ACCOUNT}:security-group/sg-0f3c9a1d2b7e45a61",
    "S3": "arn:aws-us-gov:s3:::enhanced-eks-cluster-artifacts",
    "ECR": f"arn:aws-us-gov:ecr:{REGION}:{ACCOUNT}:repository/payments-api",
    "IAM": f"arn:aws-us-gov:iam::{ACCOUNT}:root",
    "KMS": f"arn:aws-us-gov:kms:{REGION}:{ACCOUNT}:key/5b1f0c1e-8d7a-4c3e-9a21-3f6e2d4c8b90",
    "SSM": f"arn:aws-us-gov:ec2:{REGION}:{ACCOUNT}:instance/i-0a1b2c3d4e5f60718",
    "Config": f"arn:aws-us-gov:config:{REGION}:{ACCOUNT}:config-recorder/default",
    "CloudWatch": f"arn:aws-us-gov:logs:{REGION}:{ACCOUNT}:log-group:/aws/eks/{CLUSTER}/cluster",
}
_CLUSTER_ARN: Final = f"arn:aws-us-gov:eks:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"


def _finding(
    provider: str,
    finding_id: str,
    title: str,
    finding_type: str,
    severity: str,
    status: str,
    first_us: int,
    last_us: int,
    seq: int,
    resource: str,
    namespace: str | None,
) -> dict[str, Any]:
    """An `opsledger.finding` event: one state of a finding (seq 1 is the first sighting)."""
    data: dict[str, Any] = {
        "provider": provider,
        "finding_id": finding_id,
        "title": title,
        "finding_type": finding_type,
        "severity": severity,
        "resource": resource,
        "status": status,
        "first_seen": format_seconds(first_us),
        "last_seen": format_seconds(last_us),
    }
    if namespace is not None:
        data["namespace"] = namespace
    event_id = f"finding/{stable_hex(finding_id)[:20]}/{seq}"
    return cloudevent(provider, event_id, EventType.FINDING, last_us - last_us % SEC, data)


def finding_facts(w: World, day: int, plan: DayPlan) -> None:
    """GuardDuty and Security Hub findings; many are archived or resolved days later."""
    rng = keyed_rng(w.seed, day, T_FIND)
    weights = np.array([g[3] for g in _GUARDDUTY])
    for j in range(int(rng.poisson(0.45))):
        ftype, sev, ns, _ = _GUARDDUTY[int(rng.choice(len(_GUARDDUTY), p=weights / weights.sum()))]
        t = day * DAY + int(rng.integers(0, 86_000)) * SEC
        fid = stable_hex(w.seed, "guardduty", day, j)
        resource = (
            _CLUSTER_ARN
            if ns is None
            else f"Pod/{ns}/{deployment_pod(w.seed, ns, NS_BY_NAME[ns].workloads[0], t, 'gd')[0]}"
        )
        title = f"{ftype} observed on EKS cluster {CLUSTER}."
        plan.raws.append(
            _finding("guardduty", fid, title, ftype, sev, "ACTIVE", t, t, 1, resource, ns)
        )
        close = rng.random()
        later = t + int(rng.integers(4 * 3600, 6 * 86_400)) * SEC
        if sev in ("LOW", "MEDIUM") and close < 0.4:
            plan.raws.append(
                _finding("guardduty", fid, title, ftype, sev, "ARCHIVED", t, later, 2, resource, ns)
            )
        elif sev in ("HIGH", "CRITICAL") and close < 0.8:
            plan.raws.append(
                _finding("guardduty", fid, title, ftype, sev, "RESOLVED", t, later, 2, resource, ns)
            )
        if sev == "CRITICAL":
            plan.triggers.append(
                Trigger(
                    t,
                    "P0",
                    f"GuardDuty CRITICAL: {ftype}",
                    "guardduty",
                    j,
                    ns,
                    note="Isolated workload, rotated node role credentials.",
                )
            )
        elif sev == "HIGH" and rng.random() < 0.6:
            plan.triggers.append(Trigger(t, "P1", f"GuardDuty HIGH: {ftype}", "guardduty", j, ns))
        elif sev == "MEDIUM" and rng.random() < 0.25:
            plan.triggers.append(Trigger(t, "P3", f"GuardDuty MEDIUM: {ftype}", "guardduty", j, ns))
    for j in range(int(rng.poisson(0.8))):
        control, text, sev = _SECURITYHUB[int(rng.integers(0, len(_SECURITYHUB)))]
        t = day * DAY + int(rng.integers(0, 86_000)) * SEC
        fid = (
            f"arn:aws-us-gov:securityhub:{REGION}:{ACCOUNT}:subscription/"
            f"aws-foundational-security-best-practices/v/1.0.0/{control}/finding/"
            f"{stable_uuid(w.seed, 'securityhub', day, j)}"
        )
        title = f"{control} {text}"
        resource = _SH_RESOURCES[control.split(".")[0]]
        plan.raws.append(
            _finding("securityhub", fid, title, _SH_TYPE, sev, "ACTIVE", t, t, 1, resource, None)
        )
        if rng.random() < 0.55:
            later = t + int(rng.integers(86_400, 14 * 86_400)) * SEC
            plan.raws.append(
                _finding(
                    "securityhub",
                    fid,
                    title,
                    _SH_TYPE,
                    sev,
                    "RESOLVED",
                    t,
                    later,
                    2,
                    resource,
                    None,
                )
            )
        escalate = rng.random()
        if sev in ("HIGH", "CRITICAL") and escalate < 0.3:
            plan.triggers.append(
                Trigger(t, "P2", f"Security Hub: {control} failed", "securityhub", j)
            )
        elif sev in ("MEDIUM", "LOW") and escalate < 0.25:
            plan.triggers.append(
                Trigger(t, "P3", f"Security Hub: {control} failed", "securityhub", j)
            )

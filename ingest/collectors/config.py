"""The collectors file: which clusters and sources to collect from, and how often."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.collectors.aws import collectors as aws_source
from ingest.collectors.kubernetes import collector as kubernetes_source
from ingest.collectors.prometheus import collector as prometheus_source
from ingest.collectors.runtime import Collector
from ingest.collectors.yamlfile import load_yaml
from store.datamodels import Name


class ClusterSources(BaseModel):
    """One cluster: its name (the events' `cluster`) and the sources that watch it."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    kubernetes: kubernetes_source.KubernetesConfig | None = None
    prometheus: prometheus_source.PrometheusConfig | None = None


class CollectorsFile(BaseModel):
    """The whole file (`OPSLEDGER_COLLECTORS_FILE`)."""

    model_config = ConfigDict(extra="forbid")

    clusters: list[ClusterSources] = Field(default_factory=list)
    aws: aws_source.AwsConfig | None = None

    @model_validator(mode="after")
    def _unique(self) -> CollectorsFile:
        names = [c.name for c in self.clusters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"cluster names must be unique; repeated: {', '.join(twice)}")
        return self


def build_collectors(config: CollectorsFile) -> list[Collector]:
    """The collectors a file configures, in a stable order."""
    out: list[Collector] = []
    for cluster in config.clusters:
        if cluster.kubernetes is not None:
            out.append(kubernetes_source.build(cluster.name, cluster.kubernetes))
        if cluster.prometheus is not None:
            out.append(prometheus_source.build(cluster.name, cluster.prometheus))
    if config.aws is not None:
        default = config.clusters[0].name if len(config.clusters) == 1 else None
        out.extend(aws_source.build(config.aws, default))
    return out


def load_collectors(path: Path) -> list[Collector]:
    """Read and check a collectors file (ConfigError names each bad line and field)."""
    return build_collectors(load_yaml(path, CollectorsFile))

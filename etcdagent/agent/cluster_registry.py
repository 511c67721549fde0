"""One /metrics for several clusters: each cluster's registry, every sample labelled ``cluster``.

Each cluster's loop keeps its own registry (prometheus client_python's registry-per-owner style,
as the tests use one per test), so its metrics code is the one-cluster code. The HTTP server
serves this collector instead: families of the same name are merged, each sample carrying
``cluster="<name>"`` first, so one scrape of the agent covers the main and the events etcd and
every query or alert can select or aggregate by cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

CLUSTER_LABEL = "cluster"


class ClusterLabelled(Collector):
    def __init__(self, registries: Mapping[str, CollectorRegistry]) -> None:
        self._registries = dict(registries)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for cluster, registry in self._registries.items():
            for family in registry.collect():
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                for sample in family.samples:
                    labels = {CLUSTER_LABEL: cluster, **sample.labels}
                    target.samples.append(
                        Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                    )
        return list(merged.values())


def labelled_registry(registries: Mapping[str, CollectorRegistry]) -> CollectorRegistry:
    """A registry serving every cluster's metrics with their ``cluster`` label."""
    served = CollectorRegistry(auto_describe=False)
    served.register(ClusterLabelled(registries))
    return served

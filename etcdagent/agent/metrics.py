"""The agent's own Prometheus metrics: what it sees of the cluster and what it did about it.

Every metric lives on the registry the :class:`AgentMetrics` instance was given (or made), never on
prometheus_client's global one, so tests and several agents in one process do not collide.

Conventions: the ``etcdagent_`` prefix, base units in names (``_bytes``, ``_seconds``, ``_ratio``),
``_total`` counters. Per-member series carry ``member`` (the name) and ``member_id`` (hex, as
etcdctl and etcd's own metrics print it). A value the agent does not know (a member that does not
answer, a latency without enough data, no maintenance window) is an absent series, never NaN and
never a made-up 0: alert on ``absent()`` where absence matters.

The metrics come in groups, each with the code that updates it: the cluster as seen
(:mod:`~etcdagent.agent.cluster_metrics`), the maintenance done
(:mod:`~etcdagent.agent.maintenance_metrics`), gates and windows
(:mod:`~etcdagent.agent.gate_metrics`) and the agent's own health
(:mod:`~etcdagent.agent.health_metrics`). /metrics lists them in that order.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from etcdagent.act.run_report import RunReport
from etcdagent.agent.apiserver_metrics import ApiserverMetrics
from etcdagent.agent.cluster_metrics import ClusterMetrics, MemberSignalsLike
from etcdagent.agent.doctor_metrics import DoctorMetrics
from etcdagent.agent.gate_metrics import GateMetrics
from etcdagent.agent.health_metrics import AgentHealthMetrics
from etcdagent.agent.maintenance_metrics import MaintenanceMetrics
from etcdagent.agent.metric_factory import MetricFactory
from etcdagent.decide.recovery import Unrecoverable
from etcdagent.observe.snapshot import ClusterSnapshot

PREFIX = "etcdagent_"


class MetricDoc(NamedTuple):
    """One metric as an operator sees it on /metrics (counters with their ``_total``)."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]


# Label names of the metrics AgentMetrics made, by exposed name, per registry: a labelled metric
# with no series yet shows no labels in ``registry.collect()``.
_declared: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _exposed_name(family: Metric) -> str:
    if family.type == "counter":
        return family.name + "_total"
    if family.type == "info":
        return family.name + "_info"
    return family.name


def metric_docs(registry: CollectorRegistry) -> list[MetricDoc]:
    """Name, type, help and label names of every metric on ``registry``, sorted by name."""
    declared = _declared.get(registry, {})
    docs: list[MetricDoc] = []
    for family in registry.collect():
        name = _exposed_name(family)
        labels = declared.get(name)
        if labels is None:
            seen: dict[str, None] = {}
            for sample in family.samples:
                for label in sample.labels:
                    if label not in ("le", "quantile"):
                        seen.setdefault(label)
            labels = tuple(seen)
        docs.append(MetricDoc(name, family.type, family.documentation, labels))
    return sorted(docs)


class AgentMetrics:
    """All of the agent's metrics, on one registry; the methods are what the agent loop calls."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, gates: Iterable[str] = ()
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        make = MetricFactory(self.registry, PREFIX, _declared.setdefault(self.registry, {}))
        # The order the groups are made in is the order of /metrics.
        self.cluster = ClusterMetrics(make)
        self.maintenance = MaintenanceMetrics(make)
        self.gates = GateMetrics(make, gates)
        self.health = AgentHealthMetrics(make)
        self.apiserver = ApiserverMetrics(make)
        self.doctor = DoctorMetrics(make)
        self.local_member_unmatched = make.gauge(
            "local_member_unmatched",
            "1 while --local-member (daemon.local_member) names no member of the cluster, so "
            "this replica defragments nothing; 0 when it names one or none is configured.",
        )
        self.local_member_unmatched.set(0)

    # -- the cluster ----------------------------------------------------------------------------

    def observe_snapshot(
        self,
        snapshot: ClusterSnapshot,
        signals: Mapping[int, MemberSignalsLike] | None = None,
    ) -> None:
        """Per-member gauges from one snapshot: see :meth:`ClusterMetrics.observe_snapshot`."""
        self.cluster.observe_snapshot(snapshot, signals)

    def mark_unreachable(self) -> None:
        """No endpoint answered: see :meth:`ClusterMetrics.mark_unreachable`."""
        self.cluster.mark_unreachable()

    # -- maintenance, gates and windows ---------------------------------------------------------

    def record_report(self, report: RunReport, trigger: str) -> None:
        """Count one finished run: see :meth:`MaintenanceMetrics.record_report`."""
        self.maintenance.record_report(report, trigger)

    def record_nospace(self, refused: Unrecoverable | None, *, counted: bool = True) -> None:
        """A NOSPACE recovery refused as unrecoverable, or not: see
        :meth:`MaintenanceMetrics.record_nospace`."""
        self.maintenance.record_nospace(refused, counted=counted)

    def set_gates(self, blocking: Mapping[str, str | None]) -> None:
        """Gate name -> why it blocks (None: it does not). Known gates left out read 0."""
        self.gates.set_gates(blocking)

    def set_window(self, open: bool, next_start: datetime | None) -> None:
        self.gates.set_window(open, next_start)

    # -- the loop -------------------------------------------------------------------------------

    def cycle_finished(
        self, ok: bool, duration: float, now: datetime, error_kind: str | None = None
    ) -> None:
        self.health.cycle_finished(ok, duration, now, error_kind)

    def set_local_member_unmatched(self, unmatched: bool) -> None:
        self.local_member_unmatched.set(1 if unmatched else 0)

    def scrape_error(self, member: str) -> None:
        self.health.scrape_error(member)

    def request_error(self, member: str) -> None:
        self.health.request_error(member)

"""How the agent's metric groups make their metrics: on one registry, prefixed, labels recorded.

The groups (cluster, maintenance, gates, the agent's health) each get the same
:class:`MetricFactory`, so every metric lands on the registry their :class:`AgentMetrics` was given
and carries the one prefix. The factory also notes each metric's label names: a labelled metric
with no series yet shows none in ``registry.collect()``, and the generated reference needs them.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MEMBER_LABELS = ("member", "member_id")


class OptionalGauge(Collector):
    """An unlabelled gauge that is absent until set, and again after ``clear()``."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._value: float | None = None
        self._lock = threading.Lock()
        registry.register(self)

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def clear(self) -> None:
        with self._lock:
            self._value = None

    @property
    def value(self) -> float | None:
        return self._value

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation)
        with self._lock:
            value = self._value
        if value is not None:
            family.add_metric([], value)
        return [family]


class MetricFactory:
    """Makes ``prefix``-named metrics on ``registry`` and records their label names in
    ``declared`` (exposed name -> label names). The order metrics are made in is the order
    /metrics and the generated reference list them."""

    def __init__(
        self, registry: CollectorRegistry, prefix: str, declared: dict[str, tuple[str, ...]]
    ) -> None:
        self.registry = registry
        self._prefix = prefix
        self._declared = declared

    def _declare(self, name: str, labels: Sequence[str]) -> str:
        full = self._prefix + name
        self._declared[full] = tuple(labels)
        return full

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self._declare(name, labels), doc, labels, registry=self.registry)

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        assert name.endswith("_total"), name
        return Counter(self._declare(name, labels), doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> Histogram:
        full = self._declare(name, labels)
        return Histogram(full, doc, labels, registry=self.registry, buckets=buckets)

    def optional(self, name: str, doc: str) -> OptionalGauge:
        return OptionalGauge(self._declare(name, ()), doc, self.registry)


def finite(value: float | None) -> float | None:
    """The value, or None for an unknown one (None, NaN, infinite): absent, never NaN."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def discard(metric: Gauge, *labels: str) -> None:
    """Remove one series, whether or not it exists."""
    with contextlib.suppress(KeyError):
        metric.remove(*labels)

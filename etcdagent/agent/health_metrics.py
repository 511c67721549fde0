"""The agent's own health: its cycles, their errors, failed requests and scrapes, its version."""

from __future__ import annotations

from datetime import datetime

from etcdagent import __version__
from etcdagent.agent.metric_factory import MetricFactory

# A cycle is usually one snapshot (tens of ms), sometimes a whole maintenance run.
CYCLE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800)


class AgentHealthMetrics:
    """Whether the loop runs and succeeds, and what fails in it."""

    def __init__(self, make: MetricFactory) -> None:
        self.last_success = make.optional(
            "last_successful_cycle_timestamp_seconds",
            "Unix time the agent's last successful observe/decide cycle finished; absent until "
            "the first one.",
        )
        self.cycle_duration = make.histogram(
            "cycle_duration_seconds",
            "Duration of the agent's observe/decide(/act) cycles, successful or not.",
            CYCLE_BUCKETS,
        )
        self.cycle_errors = make.counter(
            "cycle_errors_total",
            "Cycles that ended in an error, by `kind` of error.",
            ("kind",),
        )
        self.scrape_errors = make.counter(
            "scrape_errors_total",
            "Failed scrapes of a member's /metrics endpoint.",
            ("member",),
        )
        self.request_errors = make.counter(
            "request_errors_total",
            "Failed API requests (status, member list, maintenance calls) to a member.",
            ("member",),
        )
        self.build_info = make.gauge(
            "build_info",
            "Always 1; the `version` label is the running etcdagent's version.",
            ("version",),
        )
        self.build_info.labels(__version__).set(1)

    def cycle_finished(
        self, ok: bool, duration: float, now: datetime, error_kind: str | None = None
    ) -> None:
        self.cycle_duration.observe(max(0.0, duration))
        if ok:
            self.last_success.set(now.timestamp())
        else:
            self.cycle_errors.labels(error_kind or "unknown").inc()

    def scrape_error(self, member: str) -> None:
        self.scrape_errors.labels(member).inc()

    def request_error(self, member: str) -> None:
        self.request_errors.labels(member).inc()

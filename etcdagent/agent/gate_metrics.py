"""What holds maintenance back or lets it run: the safety gates and the maintenance windows."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime

from etcdagent.agent.metric_factory import MetricFactory


class GateMetrics:
    """Which gates block, whether a window is open and when the next one opens."""

    def __init__(self, make: MetricFactory, gates: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._gates: set[str] = set()
        self.gate_blocking = make.gauge(
            "gate_blocking",
            "1 while the safety gate `gate` blocks maintenance, else 0.",
            ("gate",),
        )
        self.window_open = make.gauge(
            "maintenance_window_open",
            "1 while a maintenance window is open, else 0.",
        )
        self.window_next_start = make.optional(
            "maintenance_window_next_start_timestamp_seconds",
            "Unix time the next maintenance window opens; absent when no window is configured.",
        )
        # Series that must exist before the first decision: a known gate reads 0, not absent.
        self.set_gates({gate: None for gate in gates})
        self.window_open.set(0)

    def set_gates(self, blocking: Mapping[str, str | None]) -> None:
        """Gate name -> why it blocks (None: it does not). Known gates left out read 0."""
        with self._lock:
            self._gates.update(blocking)
            for gate in self._gates:
                self.gate_blocking.labels(gate).set(0 if blocking.get(gate) is None else 1)

    def set_window(self, open: bool, next_start: datetime | None) -> None:
        self.window_open.set(1 if open else 0)
        if next_start is None:
            self.window_next_start.clear()
        else:
            self.window_next_start.set(next_start.timestamp())

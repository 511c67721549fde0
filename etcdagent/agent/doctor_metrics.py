"""The doctor's findings as the daemon exports them: ``etcdagent_doctor_finding{check,severity}``.

One series per (check, severity) a finding of this cycle has, at 1; a pair no finding has any more
is removed, so ``etcdagent_doctor_finding{severity=~"warning|critical"}`` is the alert and
``count by (severity)`` the dashboard. Per-member detail stays in `etcdagent doctor`: members as
labels would multiply the series for what one command shows better.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from etcdagent.agent.metric_factory import MetricFactory, discard
from etcdagent.decide.doctor.finding import Finding


class DoctorMetrics:
    def __init__(self, make: MetricFactory) -> None:
        self._lock = threading.Lock()
        self._present: set[tuple[str, str]] = set()
        self.finding = make.gauge(
            "doctor_finding",
            "1 while a doctor check (`etcdagent doctor`, run by the daemon every cycle) has a "
            "finding of this severity (ok, info, warning, critical); absent otherwise.",
            ("check", "severity"),
        )

    def set_findings(self, findings: Iterable[Finding]) -> None:
        pairs = {(f.check, f.severity.value) for f in findings}
        with self._lock:
            for gone in self._present - pairs:
                discard(self.finding, *gone)
            for pair in pairs:
                self.finding.labels(*pair).set(1)
            self._present = pairs

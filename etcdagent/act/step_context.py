"""What every step runner shares: the cluster, the settings, the clocks and the latest snapshot.

One context serves all the runners of a command, so that the lock's renewal thread sees the
snapshot the last step took and which member a defragmentation keeps busy, whichever runner took
or set it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from etcdagent.act.step_results import StepListener, StepResult, StepStatus
from etcdagent.decide.plan import Step
from etcdagent.errors import EtcdAgentError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings

log = structlog.get_logger()


class StepContext:
    """The cluster and the state the step runners share while a command runs."""

    def __init__(
        self,
        cluster: ClusterClient,
        settings: Settings,
        *,
        stop: threading.Event,
        listener: StepListener,
        monotonic: Callable[[], float],
        clock: Callable[[], datetime],
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.stop = stop
        self.listener = listener
        self.monotonic = monotonic
        self.clock = clock
        self.busy_member: int | None = None  # the member whose requests block right now
        self.last_snapshot: ClusterSnapshot | None = None

    def wait(self, seconds: float) -> bool:
        """Sleep that a stop request interrupts; True when interrupted."""
        return self.stop.wait(max(0.0, seconds))

    def elapsed(self, t0: float) -> float:
        """Seconds since ``t0`` on the monotonic clock: a step's duration."""
        return self.monotonic() - t0

    def observe(self, *, with_metrics: bool = True) -> ClusterSnapshot:
        """A fresh snapshot; polling loops pass ``with_metrics=False`` to spare the members."""
        snapshot = take_snapshot(self.cluster, with_metrics=with_metrics)
        self.last_snapshot = snapshot
        return snapshot

    def client_for(self, snap: MemberSnapshot) -> MemberClient:
        if snap.endpoint is None:
            raise EtcdAgentError(f"{snap.member.display_name}: no endpoint to reach it")
        return self.cluster.member(snap.endpoint, snap.member.name)

    def lock_members(self) -> list[MemberClient]:
        """Members the lock may talk to now, answering ones first, never the one being
        defragmented (its requests block until the defrag ends). Called from the lock's renewal
        thread: it reads only the last snapshot reference."""
        snapshot = self.last_snapshot
        busy = self.busy_member
        endpoints: list[str] = []
        if snapshot is not None:
            ranked = sorted(snapshot.voting, key=lambda m: not m.reachable)
            endpoints = [m.endpoint for m in ranked if m.endpoint and m.member.id != busy]
        busy_snap = snapshot.by_id(busy) if snapshot is not None and busy is not None else None
        busy_endpoint = busy_snap.endpoint if busy_snap is not None else None
        for endpoint in self.cluster.endpoints:
            if endpoint not in endpoints and endpoint != busy_endpoint:
                endpoints.append(endpoint)
        return [self.cluster.member(e) for e in endpoints]

    def result(self, step: Step, status: StepStatus, message: str, **kw: Any) -> StepResult:
        """The step's result, logged and handed to the listener: every runner ends here."""
        result = StepResult(step=step, status=status, message=message, **kw)
        event = "maintenance step " + status.value
        level = log.info if result.ok else log.warning
        # One event per step: the member, the action, why it was planned, what came of it.
        level(
            event,
            member=step.member_label,
            action=step.kind.value,
            reason=step.reason,
            message=message,
            warning=result.warning,
        )
        self.listener.finished(result)
        return result

"""Act: carry out plan steps, the only code that changes etcd.

Each step is re-checked against a fresh snapshot just before it runs (the plan was made from an
older one): gates, quorum, who the leader is now. A step that fails or is refused stops the sweep;
a stop request (SIGINT, SIGTERM) lets the current request finish and starts nothing new. A
defragmentation is never retried: a client-side timeout does not cancel it on the server, so the
member is watched until it answers again and its file size tells what happened.

The ``Executor`` here is the one door callers use: it checks the stop request and the lock, then
hands the step to the runner of its kind (compaction_step, defrag_step, cluster_steps), which all
share one ``StepContext``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from etcdagent.act.cluster_steps import DisarmStep, MoveLeaderStep, ProbeStep
from etcdagent.act.compaction_step import CompactionStep
from etcdagent.act.defrag_step import DefragStep
from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import StepListener, StepResult, StepStatus
from etcdagent.clock import utcnow
from etcdagent.decide.plan import Step, StepKind
from etcdagent.errors import EtcdAgentError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings


class StepRunner(Protocol):
    """Runs one kind of step; an etcd failure may raise, the executor turns it into a result."""

    def run(self, step: Step, started_at: datetime, t0: float) -> StepResult: ...


class Executor:
    """Runs steps against the cluster, re-checking the gates before each one."""

    def __init__(
        self,
        cluster: ClusterClient,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        listener: StepListener | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = utcnow,
        ensure_lock: Callable[[], None] = lambda: None,
    ) -> None:
        self.context = StepContext(
            cluster,
            settings,
            stop=stop or threading.Event(),
            listener=listener or StepListener(),
            monotonic=monotonic,
            clock=clock,
        )
        self._ensure_lock = ensure_lock
        self._compaction = CompactionStep(self.context)
        self._defrag = DefragStep(self.context)
        self._runners: dict[StepKind, StepRunner] = {
            StepKind.COMPACT: self._compaction,
            StepKind.DEFRAG: self._defrag,
            StepKind.MOVE_LEADER: MoveLeaderStep(self.context),
            StepKind.DISARM: DisarmStep(self.context),
            StepKind.PROBE_WRITE: ProbeStep(self.context),
        }

    # -- what the commands read and call between steps ------------------------------------------

    @property
    def deadline(self) -> datetime | None:
        """The end of the maintenance window, if any: no defrag starts that would overrun it."""
        return self._defrag.deadline

    @deadline.setter
    def deadline(self, value: datetime | None) -> None:
        self._defrag.deadline = value

    @property
    def last_snapshot(self) -> ClusterSnapshot | None:
        return self.context.last_snapshot

    def wait(self, seconds: float) -> bool:
        """Sleep that a stop request interrupts; True when interrupted."""
        return self.context.wait(seconds)

    def observe(self, *, with_metrics: bool = True) -> ClusterSnapshot:
        """A fresh snapshot, remembered as the one the lock's renewal thread reads."""
        return self.context.observe(with_metrics=with_metrics)

    def client_for(self, snap: MemberSnapshot) -> MemberClient:
        return self.context.client_for(snap)

    def lock_members(self) -> list[MemberClient]:
        """Members the lock may talk to now (see ``StepContext.lock_members``)."""
        return self.context.lock_members()

    def refresh_sizes(self, timeout: float = 5.0) -> bool:
        """Make the "in use" sizes current after a compaction, before deciding on them; False
        when they may still be stale (see ``CompactionStep.refresh_sizes``)."""
        return self._compaction.refresh_sizes(timeout)

    # -- steps ----------------------------------------------------------------------------------

    def run(self, step: Step) -> StepResult:
        """Run one step (after the lock and stop checks); never raises for an etcd failure."""
        ctx = self.context
        if ctx.stop.is_set():
            return ctx.result(step, StepStatus.NOT_STARTED, "stop requested before this step")
        try:
            self._ensure_lock()
        except EtcdAgentError as exc:
            return ctx.result(step, StepStatus.REFUSED, str(exc))
        ctx.listener.started(step)
        started_at = ctx.clock()
        t0 = ctx.monotonic()
        try:
            return self._runners[step.kind].run(step, started_at, t0)
        except EtcdAgentError as exc:
            return ctx.result(
                step,
                StepStatus.FAILED,
                str(exc),
                started_at=started_at,
                duration=ctx.elapsed(t0),
            )

"""Between cycles, a NOSPACE alarm wakes the daemon within about a second.

Under NOSPACE every write fails until the recovery is done, and the recovery's own work (compact,
one defrag per member, disarm, probe) takes about a second on a 64 MiB quota: measured, an
incident stopped writes for 13-15 s at ``--interval 5s``, most of it spent waiting for the next
cycle. So while ``emergency.nospace`` is on, the pause between cycles is cut into polls of about
a second, each one cheap request, and the first NOSPACE seen ends the pause at once.

The request is a member's status, not the alarm list: etcd answers it locally (the alarm list
goes through raft, one entry per poll, and fails without a leader), it needs no token before
etcd 3.5.28, and it is where the cycle's own snapshot reads the alarms from (observe/gather.py),
so what wakes the loop is what the cycle then decides on. One member answering is enough: every
member applies the alarms through raft. The first endpoint that answers is asked first next
time. Failures are debug-logged and only mean "not seen this poll": the watch must never cost
the loop more than its pause, or end it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog

from etcdagent.etcd.client import MemberClient
from etcdagent.models import AlarmType, MemberStatus

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
"""How often the alarms are asked between cycles: "within about a second"."""

PROBE_TIMEOUT = 2.0
"""Longest wait for one member's status; a member that does not answer by then is skipped."""


class NospaceProbe:
    """Asks one answering member whether a NOSPACE alarm is raised; None when none answered."""

    def __init__(
        self, members: Callable[[], Sequence[MemberClient]], *, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self._members = members  # read each time: a reload swaps the client
        self._timeout = timeout
        self._first: str | None = None  # the endpoint that answered last time

    def __call__(self) -> bool | None:
        members = list(self._members())
        members.sort(key=lambda m: m.endpoint != self._first)
        for member in members:
            try:
                answer = member.call(
                    "status", "/maintenance/status", {}, retry=False, timeout=self._timeout
                )
                status = MemberStatus.from_gateway(answer, endpoint=member.endpoint)
            except Exception as exc:  # any failure only means: ask the next one
                log.debug("alarm watch: status not read", endpoint=member.endpoint, error=str(exc))
                continue
            self._first = member.endpoint
            return any(a.alarm is AlarmType.NOSPACE for a in status.alarms)
        return None


class AlarmWatch:
    """The daemon's pause between cycles, ended early by a NOSPACE alarm or by ``wake``."""

    def __init__(
        self,
        probe: Callable[[], bool | None],
        *,
        wake: threading.Event,
        poll: float = POLL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if not poll > 0:
            raise ValueError(f"poll must be positive, not {poll!r}")
        self._probe = probe
        self._poll = poll
        self._monotonic = monotonic
        # ``wait(seconds)`` is True when woken (a stop or reload asked for); tests pass a fake.
        self._wait = wait if wait is not None else wake.wait

    def sleep(self, seconds: float) -> bool:
        """Pause up to ``seconds``, asking for a NOSPACE alarm about every ``poll`` seconds.

        True when the pause ended because a NOSPACE alarm is raised; False when it ran out or
        ``wake`` was set.
        """
        deadline = self._monotonic() + seconds
        while True:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            if self._wait(min(self._poll, remaining)):
                return False
            if self._monotonic() >= deadline:
                return False  # the cycle is due anyway: it looks at everything
            if self._nospace():
                log.info("NOSPACE alarm seen between cycles: starting the next cycle now")
                return True

    def _nospace(self) -> bool:
        try:
            return bool(self._probe())
        except Exception as exc:  # the pause must end on time whatever happens
            log.debug("alarm watch: probe failed", error=str(exc))
            return False

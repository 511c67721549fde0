"""What every check reads: gathered by the CLI (two snapshots) or the daemon (its history)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from etcdagent.decide.apiserver import ApiserverCompaction
from etcdagent.observe.key_counts import KeyCounts
from etcdagent.observe.known_bugs import KnownBugs
from etcdagent.observe.signals import MemberSignals
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings


@dataclass(frozen=True)
class WindowRecord:
    """One maintenance window as the daemon lived it: when it saw it open, over how many
    cycles, and the gates that blocked maintenance in every one of them."""

    opened_at: datetime
    cycles: int
    blocked_throughout: frozenset[str]


@dataclass(frozen=True)
class DoctorInput:
    """``before`` is the snapshot about a lookback before ``after`` (None: none yet, so checks
    that compare the two say "not enough data"); ``now`` the time of ``after``.

    ``agent_compacts`` is True where the caller is the agent that compacts this cluster on its
    cadence (the daemon), None where that is not known (a one-shot `doctor`).
    ``nospace_incidents`` counts the times the daemon saw a NOSPACE alarm appear (0 for `doctor`).
    """

    after: ClusterSnapshot
    settings: Settings
    now: datetime
    lookback: float
    before: ClusterSnapshot | None = None
    signals: Mapping[int, MemberSignals] = field(default_factory=dict)
    cluster_request_rate: float | None = None
    apiserver: ApiserverCompaction | None = None
    key_counts: KeyCounts | None = None
    key_counts_error: str | None = None
    known_bugs: KnownBugs | None = None
    agent_compacts: bool | None = None
    nospace_incidents: int = 0  # NOSPACE alarms the daemon saw raised since it started
    windows_seen: tuple[WindowRecord, ...] = ()  # the daemon's recent windows (none: `doctor`)

    def earlier(self, snap: MemberSnapshot) -> MemberSnapshot | None:
        """The same member in ``before``, if it was there."""
        return self.before.by_id(snap.member.id) if self.before is not None else None

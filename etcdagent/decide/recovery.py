"""NOSPACE recovery: compact, defragment every member, disarm, prove a write.

Recovery ignores windows and the worth-it thresholds (the cluster refuses writes until it is done)
but not quorum. Compaction and defragmentation only give back space that is no longer in use: when
a member's data in use alone reaches ``defrag.recover_max_quota_use`` of its quota, nothing the
agent can do makes room, so recovery is refused up front (after the compaction, on sizes taken
after it, before any defrag), saying per member how much must be deleted or how far the quota must
be raised. Disarming waits until every member's *file* (what etcd compares with the quota), not
only its data in use, is below the limit: learners' too, since a learner whose file reaches its
quota raises NOSPACE again for the whole cluster. Learners cannot be defragmented online (etcd
answers a learner only Status and serializable reads, see ``decide.defrag.LEARNER_SKIPPED``): a
learner at its quota keeps the alarm armed, and the refusal says how to fix it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from etcdagent.decide.compaction import compact_step, compacted_revision, current_revision
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.models import AlarmType
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings
from etcdagent.units import format_bytes

# -- NOSPACE recovery --------------------------------------------------------------------------

# What a leadership move costs a writer during recovery: a put forwarded to the old leader while
# it hands over is dropped, and its client waits for etcd's request timeout (6-7.6 s measured on
# 3.5.1, bench/bench_nospace_outage.py).
MOVE_STALL = 5.0


def recovery_move_leader_over(settings: Settings) -> float:
    """From how long an estimated leader defrag the recovery moves the leadership first.

    Short defrags run in place: every write fails under NOSPACE anyway, and a move would cost
    more than the defrag. A longer one is moved away from, as in maintenance, and so is one long
    enough to let the recovery's own lease (renewed only by the leader) lapse: a third of its TTL.
    """
    return min(MOVE_STALL, settings.lock.ttl / 3)


def plan_recover(
    snapshot: ClusterSnapshot, settings: Settings, *, sizes_current: bool = True
) -> Plan:
    """Compact (to the current revision), defragment every member, disarm, prove a write.

    ``sizes_current=False``: the in-use sizes may lag (etcd updates them at its next commit,
    which no write can cause under NOSPACE), so they refuse nothing up front.
    """
    nospace = [a for a in snapshot.alarms if a.alarm is AlarmType.NOSPACE]
    corrupt = [a for a in snapshot.alarms if a.alarm is AlarmType.CORRUPT]
    if corrupt:
        return Plan(
            command="recover",
            refusal="CORRUPT alarm raised: compaction and defragmentation do not fix corruption; "
            "restore the member from a healthy one",
        )
    if not nospace:
        return Plan(command="recover", notes=("nothing to recover: no NOSPACE alarm is raised",))
    current = current_revision(snapshot)
    if current is None:
        return Plan(command="recover", refusal="no member reports a revision")
    notes = [
        "retention shortened to 0 for the recovery: the cluster refuses every write until space "
        "is reclaimed; watchers whose history is dropped will relist",
        "compacts whatever compaction.mode says and whether kube-apiserver compacts: under "
        "NOSPACE etcd refuses the put of compact_rev_key's transaction, so the key is left as "
        "it is (an apiserver's next compaction to a lower revision is refused as already done)",
    ]
    steps: list[Step] = []
    compacted = compacted_revision(snapshot)
    max_use = settings.defrag.recover_max_quota_use
    if compacted is None or current > compacted:
        step, problem = compact_step(snapshot, current, "NOSPACE recovery")
        if step is None:
            return Plan(command="recover", refusal=problem)
        steps.append(step)
        notes.append(
            "decided again after the compaction, on the sizes it leaves: refused before any "
            "defrag if the data still in use fills a quota"
        )
    elif sizes_current:
        # Compacted to the current revision already: the sizes are what a defrag would keep.
        shortfalls = nospace_shortfalls(snapshot, max_use)
        if shortfalls:
            return Plan(
                command="recover",
                refusal=unrecoverable_refusal(shortfalls, max_use),
                notes=tuple(notes),
            )
    defrags = plan_defrag(
        snapshot,
        settings,
        force=True,
        command="recover",
        no_spare_ok=True,
        move_leader_over=recovery_move_leader_over(settings),
    )
    if defrags.refusal:
        return Plan(command="recover", refusal=defrags.refusal, notes=tuple(notes))
    steps.extend(defrags.steps)
    notes.extend(defrags.notes)
    raised = ", ".join(
        (owner.member.display_name if (owner := snapshot.by_id(a.member_id)) else a.member_id_hex)
        for a in nospace
    )
    steps.append(
        Step(
            kind=StepKind.DISARM,
            reason=f"space reclaimed on every member; deactivates each NOSPACE alarm listed then "
            f"(now: {raised})",
            alarm=nospace[0],
        )
    )
    steps.append(
        Step(kind=StepKind.PROBE_WRITE, reason="prove that writes work again (put and delete)")
    )
    return Plan(command="recover", steps=tuple(steps), skipped=defrags.skipped, notes=tuple(notes))


UNRECOVERABLE = "NOSPACE cannot be recovered by compaction and defragmentation"


@dataclass(frozen=True)
class Shortfall:
    """A member whose data in use alone reaches the recovery limit: what it would take to fix."""

    member_name: str
    member_id: int
    learner: bool
    in_use: int
    quota: int
    max_quota_use: float

    @property
    def limit(self) -> int:
        """The in-use size the member must get below (``recover_max_quota_use`` of the quota)."""
        return int(self.quota * self.max_quota_use)

    @property
    def to_delete(self) -> int:
        """Bytes of live data to delete so that the member ends below the limit."""
        return self.in_use - self.limit + 1

    @property
    def quota_needed(self) -> int:
        """The smallest quota whose limit is above the data in use now."""
        needed = math.floor(self.in_use / self.max_quota_use)
        while int(needed * self.max_quota_use) <= self.in_use:  # float rounding: a step or two
            needed += 1
        while needed > 1 and int((needed - 1) * self.max_quota_use) > self.in_use:
            needed -= 1
        return needed

    def describe(self) -> str:
        kind = " (learner)" if self.learner else ""
        return (
            f"{self.member_name}{kind} holds {format_bytes(self.in_use)} ({self.in_use} bytes) "
            f"in use against a {format_bytes(self.quota)} ({self.quota} bytes) quota, limit "
            f"{self.max_quota_use:.0%}: delete at least {format_bytes(self.to_delete)} "
            f"({self.to_delete} bytes) or raise --quota-backend-bytes by at least "
            f"{format_bytes(self.quota_needed - self.quota)} to "
            f"{format_bytes(self.quota_needed)} ({self.quota_needed} bytes)"
        )


def nospace_shortfalls(snapshot: ClusterSnapshot, max_quota_use: float) -> list[Shortfall]:
    """Every member (learners too) whose data in use is at least ``max_quota_use`` of its quota:
    a defrag keeps exactly what is in use, so it cannot get such a member below the limit."""
    found: list[Shortfall] = []
    for snap in snapshot.members:
        quota, in_use = snap.quota, snap.db_size_in_use
        if quota is None or in_use is None:
            continue
        if in_use >= int(quota * max_quota_use):
            found.append(
                Shortfall(
                    member_name=snap.member.display_name,
                    member_id=snap.member.id,
                    learner=snap.is_learner,
                    in_use=in_use,
                    quota=quota,
                    max_quota_use=max_quota_use,
                )
            )
    return found


def unrecoverable_refusal(shortfalls: list[Shortfall], max_quota_use: float) -> str:
    """The refusal for a cluster no defrag can help, naming each member with both remedies."""
    return (
        f"{UNRECOVERABLE}: the data still in use (after compaction) reaches "
        f"{max_quota_use:.0%} of the quota, so nothing was defragmented and the alarm stays "
        "armed; " + "; ".join(s.describe() for s in shortfalls)
    )


Fingerprint = tuple[tuple[int, int | None, int | None, int | None], ...]


def nospace_fingerprint(snapshot: ClusterSnapshot) -> Fingerprint:
    """What a refused recovery was decided on: per member, its revision, data in use and quota.

    The daemon does not try again while this stays the same: only deleting data (a delete is
    the one write etcd takes under NOSPACE: a new revision; in use shrinks after compaction) or
    raising the quota (a restart with a new --quota-backend-bytes) can change the answer.
    """
    return tuple(
        sorted(
            (m.member.id, m.status.revision if m.status else None, m.db_size_in_use, m.quota)
            for m in snapshot.members
        )
    )


@dataclass(frozen=True)
class Unrecoverable:
    """A recovery refused because the data in use fills the quota, and the sizes it was decided
    on (``nospace_fingerprint``), so the daemon can wait for them to change."""

    shortfalls: tuple[Shortfall, ...]
    fingerprint: Fingerprint


def unrecoverable(snapshot: ClusterSnapshot, max_quota_use: float) -> Unrecoverable | None:
    """The members no defrag can help, on sizes taken after compaction; None if there are none."""
    shortfalls = nospace_shortfalls(snapshot, max_quota_use)
    if not shortfalls:
        return None
    return Unrecoverable(tuple(shortfalls), nospace_fingerprint(snapshot))


def recover_disarm_problem(snapshot: ClusterSnapshot, max_quota_use: float) -> str | None:
    """Why disarming now would be pointless or blind, or None when every member has room.

    etcd compares the *file* with the quota at each write, so a member whose file stayed big (its
    defrag was skipped or failed) re-raises the alarm at once, whatever its data in use. Checked
    on every member that answers, learners included (a learner at its quota raises NOSPACE too),
    with the headroom of ``max_quota_use``; a member whose quota is unknown refuses it.
    """
    problems: list[str] = []
    for snap in snapshot.members:
        if snap.status is None:
            if not snap.is_learner:
                problems.append(f"{snap.member.display_name} does not answer: its size is unknown")
            continue
        name = snap.member.display_name + (" (learner)" if snap.is_learner else "")
        quota = snap.quota
        if quota is None:
            problems.append(
                f"{name}'s quota is unknown (its /metrics did not answer "
                "etcd_server_quota_backend_bytes): cannot tell whether it has room"
            )
            continue
        limit = int(quota * max_quota_use)
        in_use, size = snap.db_size_in_use, snap.db_size
        if in_use is not None and in_use >= limit:
            problems.append(
                f"{name} holds {format_bytes(in_use)} of live data against a "
                f"{format_bytes(quota)} quota: delete at least {format_bytes(in_use - limit + 1)} "
                f"(to get below {max_quota_use:.0%}) or raise --quota-backend-bytes"
            )
        elif size is not None and size >= limit and snap.is_learner:
            problems.append(
                f"{name}'s file is {format_bytes(size)} ({size} bytes) against a "
                f"{format_bytes(quota)} quota (limit {max_quota_use:.0%}, {limit} bytes) and "
                "etcd does not defragment a learner online: it would raise NOSPACE again at the "
                "next write. Defragment it offline (stop it, `etcdutl defrag --data-dir <its "
                "data dir>`, start it) or remove it (`etcdctl member remove`) and add it again, "
                "then run recover again"
            )
        elif size is not None and size >= limit:
            problems.append(
                f"{name}'s file is {format_bytes(size)} ({size} bytes) against a "
                f"{format_bytes(quota)} quota (limit {max_quota_use:.0%}, {limit} bytes): "
                "etcd checks the file against the quota, so the next write would raise NOSPACE "
                "again (its defrag did not shrink it)"
            )
    return "; ".join(problems) if problems else None


def unrecoverable_backoff(
    refused: Unrecoverable, snapshot: ClusterSnapshot, elapsed: float, retry_after: float
) -> str | None:
    """Why the daemon does not try a refused recovery again yet, or None when it may.

    The same sizes give the same answer, so trying again only repeats the compaction check and
    the refusal: wait until a member's data in use or quota changed (data deleted, the quota
    raised), or ``retry_after`` seconds anyway (in case the sizes were stale).
    """
    if nospace_fingerprint(snapshot) != refused.fingerprint or elapsed >= retry_after:
        return None
    names = ", ".join(s.member_name for s in refused.shortfalls)
    return (
        f"NOSPACE recovery refused {elapsed:.0f}s ago: the data in use fills the quota of "
        f"{names}; not tried again until data is deleted or a member's in-use size or quota "
        f"changes (or after {retry_after:.0f}s)"
    )

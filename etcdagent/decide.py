"""Decide: pure functions from a snapshot, the settings and the time to a plan.

Nothing here talks to etcd or reads a clock, so every rule can be tested with hand-built
snapshots, and the daemon and the one-shot commands share one copy of each rule and gate.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from etcdagent.models import AlarmType
from etcdagent.plan import Plan, Skip, Step, StepKind
from etcdagent.settings import CompactionSettings, DefragSettings, Settings
from etcdagent.snapshot import ClusterSnapshot, MemberSnapshot, Role
from etcdagent.units import format_bytes, format_duration

GIB = 1024**3


class Marker(BaseModel):
    """A timestamped key the agent wrote: the revision the store had at that time."""

    model_config = ConfigDict(frozen=True)

    time: datetime
    revision: int
    key: str | None = None  # where it is stored, for pruning


# -- gates -------------------------------------------------------------------------------------


def cluster_gate_failures(snapshot: ClusterSnapshot, settings: DefragSettings) -> list[str]:
    """Why the cluster is not safe for a disruptive step now (empty: safe).

    NOSPACE does not block: recovering from it needs exactly these steps.
    """
    reasons: list[str] = []
    for snap in snapshot.voting:
        if not snap.reachable:
            reasons.append(f"{snap.member.display_name} does not answer ({snap.error})")
    if snapshot.leader_id is None:
        reasons.append("no leader")
    for alarm in snapshot.alarms:
        if alarm.alarm is AlarmType.CORRUPT:
            owner = snapshot.by_id(alarm.member_id)
            where = owner.member.display_name if owner else alarm.member_id_hex
            reasons.append(
                f"CORRUPT alarm on {where}: the members' data may differ; investigate before "
                "any maintenance"
            )
    for snap in snapshot.voting:
        if snap.status is not None and snap.status.apply_lag > settings.max_apply_lag:
            reasons.append(
                f"{snap.member.display_name} is {snap.status.apply_lag} raft entries behind in "
                f"applying (gate: {settings.max_apply_lag})"
            )
    return reasons


def quorum_failure(snapshot: ClusterSnapshot, target: MemberSnapshot) -> str | None:
    """Why blocking ``target`` (a defrag blocks all its requests) could cost quorum, if it could.

    The members answering without it must still be a quorum: the target is the one to spare.
    """
    others = [m for m in snapshot.voting if m.reachable and m.member.id != target.member.id]
    if len(others) >= snapshot.quorum:
        return None
    voting = len(snapshot.voting)
    if voting <= 2:
        return (
            f"a {voting}-member cluster has no member to spare: while "
            f"{target.member.display_name} is defragmented, writes would stop"
        )
    return (
        f"without {target.member.display_name} only {len(others)} of {voting} voting members "
        f"would answer; quorum needs {snapshot.quorum}"
    )


# -- compaction --------------------------------------------------------------------------------


def current_revision(snapshot: ClusterSnapshot) -> int | None:
    revisions = [m.status.revision for m in snapshot.members if m.status is not None]
    return max(revisions) if revisions else None


def compacted_revision(snapshot: ClusterSnapshot) -> int | None:
    """The revision the cluster is compacted to, as far as the members' metrics tell."""
    known = [
        m.metrics.compact_revision
        for m in snapshot.members
        if m.metrics is not None and m.metrics.compact_revision is not None
    ]
    return max(known) if known else None


def newest_marker_before(markers: list[Marker], cutoff: datetime) -> Marker | None:
    older = [m for m in markers if m.time <= cutoff]
    return max(older, key=lambda m: (m.time, m.revision)) if older else None


def compaction_target(
    snapshot: ClusterSnapshot,
    settings: CompactionSettings,
    markers: list[Marker],
    now: datetime,
) -> tuple[int | None, str]:
    """The newest revision that is outside the retention, or None and why not.

    Time retention uses the agent's markers: a marker written at time T carries the revision R the
    store had then, so every revision from R on is at most ``now - T`` old. Compacting to the
    newest R with ``T <= now - retain`` keeps at least ``retain`` of history.
    """
    current = current_revision(snapshot)
    if current is None:
        return None, "no member reports a revision"
    candidates: list[tuple[int, str]] = []
    if settings.retain_revisions is not None:
        candidates.append(
            (
                current - settings.retain_revisions,
                f"keeps the last {settings.retain_revisions} revisions",
            )
        )
    if settings.retain == 0:
        candidates.append((current, "keeps no history by time (retain 0)"))
    elif settings.retain is not None:
        marker = newest_marker_before(markers, now - timedelta(seconds=settings.retain))
        if marker is None:
            return None, (
                f"no revision is known to be older than {format_duration(settings.retain)} yet "
                "(the agent's markers record revision and time on each run; a later run can "
                "compact)"
            )
        age = format_duration((now - marker.time).total_seconds())
        candidates.append(
            (
                marker.revision,
                f"keeps {format_duration(settings.retain)} of history (revision "
                f"{marker.revision} was current {age} ago)",
            )
        )
    target, why = min(candidates)
    if target <= 1:
        return None, f"the history is shorter than the retention ({why})"
    compacted = compacted_revision(snapshot)
    if compacted is not None and target <= compacted:
        return None, f"already compacted to revision {compacted}; the retention {why}"
    return target, why


def _compact_step(
    snapshot: ClusterSnapshot, target: int, reason: str
) -> tuple[Step | None, str | None]:
    """Compaction goes through raft: sent to the leader (no forwarding), or to another answering
    voting member when the leader does not answer this agent."""
    leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id is not None else None
    via = leader if leader is not None and leader.reachable else None
    if via is None:
        via = next((m for m in snapshot.voting if m.reachable and m.endpoint), None)
    if via is None or snapshot.leader_id is None:
        return None, "compaction needs a leader and an answering member"
    compacted = compacted_revision(snapshot)
    dropped = (
        f"drops revisions {compacted + 1}..{target - 1}"
        if compacted is not None and target - compacted > 1
        else f"drops the history before revision {target}"
    )
    return (
        Step(
            kind=StepKind.COMPACT,
            reason=f"{dropped}; {reason}",
            member_id=via.member.id,
            member_name=via.member.name,
            endpoint=via.endpoint,
            revision=target,
        ),
        None,
    )


def plan_compaction(
    snapshot: ClusterSnapshot, settings: Settings, markers: list[Marker], now: datetime
) -> Plan:
    voting_answering = sum(m.reachable for m in snapshot.voting)
    if voting_answering < snapshot.quorum or snapshot.leader_id is None:
        return Plan(
            command="compact",
            refusal="compaction goes through raft and needs a quorum and a leader: "
            f"{voting_answering} of {len(snapshot.voting)} voting members answer"
            + ("" if snapshot.leader_id is not None else ", no leader"),
        )
    target, why = compaction_target(snapshot, settings.compaction, markers, now)
    if target is None:
        return Plan(command="compact", notes=(f"nothing to compact: {why}",))
    step, problem = _compact_step(snapshot, target, why)
    if step is None:
        return Plan(command="compact", refusal=problem)
    return Plan(command="compact", steps=(step,))


# -- defragmentation ---------------------------------------------------------------------------


def defrag_timeout(db_size: int, settings: DefragSettings) -> float:
    """Scaled with the file: a fixed 30-60 s timeout fails on multi-GB databases."""
    scaled = settings.timeout_per_gib * db_size / GIB
    return min(settings.timeout_max, max(settings.timeout_min, scaled))


def defrag_worth(
    snap: MemberSnapshot, settings: DefragSettings, *, force_text: bool = False
) -> tuple[bool, str]:
    """Whether defragmenting this member gives back enough, with the numbers that say so
    (and, unless ``force_text``, the rule it misses)."""
    size = snap.db_size or 0
    free = snap.free or 0
    ratio = snap.fragmentation or 0.0
    # Rounded down: "45% free" must never describe a member below a 45% threshold.
    numbers = (
        f"{math.floor(ratio * 100)}% free, {format_bytes(free)} reclaimable of {format_bytes(size)}"
    )
    quota_use = snap.quota_use
    if quota_use is not None:
        numbers += f", quota {quota_use:.0%} used"
    if ratio >= settings.min_free_ratio and size >= settings.min_db_size:
        return True, numbers
    if (
        quota_use is not None
        and quota_use >= settings.quota_pressure
        and free >= settings.min_reclaimable_under_pressure
    ):
        return True, numbers + " (quota pressure)"
    rule = (
        f"needs >= {settings.min_free_ratio:.0%} free of a file >= "
        f"{format_bytes(settings.min_db_size)}, or quota use >= {settings.quota_pressure:.0%} "
        f"with >= {format_bytes(settings.min_reclaimable_under_pressure)} reclaimable"
    )
    return False, f"{numbers}: not worth it ({rule})" if not force_text else numbers


def _order(snapshot: ClusterSnapshot, members: list[MemberSnapshot]) -> list[MemberSnapshot]:
    """Followers first (largest reclaim first), the leader last."""
    leader = snapshot.leader_id
    followers = sorted(
        (m for m in members if m.member.id != leader),
        key=lambda m: (-(m.free or 0), m.member.name),
    )
    return followers + [m for m in members if m.member.id == leader]


def plan_defrag(
    snapshot: ClusterSnapshot,
    settings: Settings,
    *,
    force: bool = False,
    command: str = "defrag",
    reason_prefix: str = "",
    no_spare_ok: bool = False,
    local: str | None = None,
) -> Plan:
    """Which members to defragment, in which order, or why none.

    Refuses the whole sweep when a gate fails: a sweep that starts on an unhealthy cluster is how
    maintenance causes the outage it should prevent.
    """
    defrag = settings.defrag
    failures = cluster_gate_failures(snapshot, defrag)
    if failures:
        return Plan(command=command, refusal="cluster not healthy: " + "; ".join(failures))
    skipped: list[Skip] = []
    chosen: list[tuple[MemberSnapshot, str]] = []
    for snap in snapshot.members:
        name = snap.member.display_name
        if snap.is_learner:
            skipped.append(
                Skip(
                    member_id=snap.member.id,
                    member_name=name,
                    reason="learner: not a voting member, not defragmented by the sweep",
                )
            )
            continue
        worth, numbers = defrag_worth(snap, defrag, force_text=force)
        if not worth and not force:
            skipped.append(Skip(member_id=snap.member.id, member_name=name, reason=numbers))
            continue
        if local is not None and not is_local(snap, local):
            skipped.append(
                Skip(
                    member_id=snap.member.id,
                    member_name=name,
                    reason=f"{numbers}; left to its own replica (this one maintains {local})",
                )
            )
            continue
        problem = quorum_failure(snapshot, snap)
        if problem is not None and not no_spare_ok:
            return Plan(
                command=command,
                refusal=f"refusing to defragment {name}: {problem}",
                skipped=tuple(skipped),
            )
        chosen.append((snap, numbers + (" (forced)" if force and not worth else "")))
    if local is not None:
        chosen, waiting = _leader_waits(snapshot, chosen, defrag, force)
        skipped.extend(waiting)
    by_id = {s.member.id: why for s, why in chosen}
    ordered = _order(snapshot, [s for s, _ in chosen])
    steps: list[Step] = []
    notes: list[str] = []
    if no_spare_ok and any(quorum_failure(snapshot, s) for s, _ in chosen):
        notes.append(
            "no member to spare: each defrag blocks reads too while it runs (writes are already "
            "refused under NOSPACE)"
        )
    done: list[MemberSnapshot] = []
    for snap in ordered:
        role = snapshot.role(snap)
        if role is Role.LEADER and defrag.move_leader:
            target = _new_leader(snapshot, done)
            if target is None:
                notes.append(
                    "no other healthy voting member to take over leadership: the leader is "
                    "defragmented as the leader"
                )
            else:
                steps.append(
                    Step(
                        kind=StepKind.MOVE_LEADER,
                        reason=f"{snap.member.display_name} is the leader; "
                        f"{target.member.display_name} "
                        + ("is already defragmented" if target in done else "is healthy")
                        + " and takes over before the old leader's defrag",
                        member_id=snap.member.id,
                        member_name=snap.member.name,
                        endpoint=snap.endpoint,
                        target_id=target.member.id,
                        target_name=target.member.name,
                    )
                )
        size = snap.db_size or 0
        steps.append(
            Step(
                kind=StepKind.DEFRAG,
                reason=reason_prefix
                + by_id[snap.member.id]
                + (" [leader, last]" if role is Role.LEADER else ""),
                member_id=snap.member.id,
                member_name=snap.member.name,
                endpoint=snap.endpoint,
                timeout=defrag_timeout(size, defrag),
                db_size=size,
                reclaimable=snap.free,
                no_spare_ok=no_spare_ok,
            )
        )
        done.append(snap)
    return Plan(command=command, steps=tuple(steps), skipped=tuple(skipped), notes=tuple(notes))


def is_local(snap: MemberSnapshot, local: str) -> bool:
    """``--local-member`` matches a member by name or by one of its client URLs."""
    wanted = local.rstrip("/")
    return snap.member.name == wanted or wanted in (u.rstrip("/") for u in snap.member.client_urls)


def _leader_waits(
    snapshot: ClusterSnapshot,
    chosen: list[tuple[MemberSnapshot, str]],
    settings: DefragSettings,
    force: bool,
) -> tuple[list[tuple[MemberSnapshot, str]], list[Skip]]:
    """A replica whose member is the leader leaves it alone while a follower still needs a
    defrag: across replicas too, followers go first and the leader last."""
    leader = snapshot.leader_id
    pending = [
        m.member.display_name
        for m in snapshot.voting
        if m.member.id != leader and (force or defrag_worth(m, settings)[0])
    ]
    if not pending:
        return chosen, []
    kept: list[tuple[MemberSnapshot, str]] = []
    waiting: list[Skip] = []
    for snap, why in chosen:
        if snap.member.id == leader:
            waiting.append(
                Skip(
                    member_id=snap.member.id,
                    member_name=snap.member.display_name,
                    reason=f"{why}; the leader waits until the followers are done "
                    f"({', '.join(pending)} still to do)",
                )
            )
        else:
            kept.append((snap, why))
    return kept, waiting


def _new_leader(snapshot: ClusterSnapshot, done: list[MemberSnapshot]) -> MemberSnapshot | None:
    """Prefer a member defragmented earlier in this sweep, so leadership moves only once."""
    healthy = [
        m
        for m in snapshot.voting
        if m.reachable and m.endpoint and m.member.id != snapshot.leader_id
    ]
    for snap in reversed(done):
        if snap in healthy:
            return snap
    return healthy[0] if healthy else None


# -- NOSPACE recovery --------------------------------------------------------------------------


def plan_recover(snapshot: ClusterSnapshot, settings: Settings) -> Plan:
    """Compact (to the current revision), defragment every member, disarm, prove a write."""
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
        "is reclaimed; watchers whose history is dropped will relist"
    ]
    steps: list[Step] = []
    compacted = compacted_revision(snapshot)
    if compacted is None or current > compacted:
        step, problem = _compact_step(snapshot, current, "NOSPACE recovery")
        if step is None:
            return Plan(command="recover", refusal=problem)
        steps.append(step)
    defrags = plan_defrag(snapshot, settings, force=True, command="recover", no_spare_ok=True)
    if defrags.refusal:
        return Plan(command="recover", refusal=defrags.refusal, notes=tuple(notes))
    steps.extend(defrags.steps)
    notes.extend(defrags.notes)
    over = recover_disarm_problem(snapshot, settings.defrag.recover_max_quota_use)
    if over is not None:
        notes.append(f"the alarm may stay armed: {over} (checked again after defragmentation)")
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


def recover_disarm_problem(snapshot: ClusterSnapshot, max_quota_use: float) -> str | None:
    """Why disarming would be pointless: the data in use alone (nearly) fills the quota."""
    for snap in snapshot.voting:
        quota = snap.quota
        in_use = snap.db_size_in_use
        if quota is None or in_use is None:
            continue
        limit = int(quota * max_quota_use)
        if in_use >= limit:
            return (
                f"{snap.member.display_name} holds {format_bytes(in_use)} of live data against a "
                f"{format_bytes(quota)} quota: delete at least {format_bytes(in_use - limit + 1)} "
                f"(to get below {max_quota_use:.0%}) or raise --quota-backend-bytes"
            )
    return None

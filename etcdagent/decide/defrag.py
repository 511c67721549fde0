"""Which members to defragment, in what order, and how long each may take.

A member is worth defragmenting only when enough of its file is free (by share and by bytes);
followers go first and the leader last, leadership moves to a member already done when asked,
and a replica limited to its own member (``--local-member``) leaves the leader alone while a
follower still needs work, so the order holds across replicas too. Pure: a snapshot in, a plan out.
"""

from __future__ import annotations

import math

from etcdagent.decide.gates import cluster_gate_failures, is_local, quorum_failure
from etcdagent.decide.plan import Plan, Skip, Step, StepKind
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot, Role
from etcdagent.settings import DefragSettings, Settings
from etcdagent.units import format_bytes

GIB = 1024**3


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

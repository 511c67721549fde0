"""Which members to defragment, in what order, and how long each may take.

A member is worth defragmenting only when enough of its file is free (by share and by bytes);
followers go first and the leader last, leadership moves first to a caught-up member (one
already done if any; ``defrag.move_leader``), members over the defrag budget are skipped,
and a replica limited to its own member (``--local-member``) leaves the leader alone while a
follower still needs work, so the order holds across replicas too. Each defrag names the member
its HashKV is compared with afterwards (``consistency``), or a note says why there is none.
Pure: a snapshot in, a plan out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from etcdagent.decide.consistency import check_peer, check_unavailable
from etcdagent.decide.defrag_budget import estimate_defrag_seconds, held_back
from etcdagent.decide.fence import fence_refusal
from etcdagent.decide.gates import (
    cluster_gate_failures,
    is_local,
    local_member_unmatched,
    quorum_failure,
)
from etcdagent.decide.plan import Plan, Skip, Step, StepKind
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot, Role
from etcdagent.settings import DefragSettings, Settings
from etcdagent.units import format_bytes

GIB = 1024**3

# etcd's gRPC interceptor serves a learner only Status and serializable Range (3.4 to 3.6): a
# Defragment sent to one fails with "rpc not supported for learner". NOSPACE recovery checks the
# learners' files before disarming instead (decide.recovery.recover_disarm_problem).
LEARNER_SKIPPED = (
    'learner: etcd refuses Defragment on a learner ("rpc not supported for learner"): '
    "defragment it offline (etcdutl defrag --data-dir) or remove and add it again"
)
NO_SPARE_NOTE = (
    "no member to spare: each defrag blocks reads too while it runs (writes are already "
    "refused under NOSPACE)"
)
NO_NEW_LEADER_NOTE = (
    "no other voting member that answers and is caught up to take over leadership: the "
    "leader is defragmented as the leader"
)


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


MIB = 1024**2


def _order(snapshot: ClusterSnapshot, members: list[MemberSnapshot]) -> list[MemberSnapshot]:
    """Followers first (largest reclaim first, by the MiB: a page more or less, as the lock's
    own write makes, must not reorder what a dry run showed), the leader last."""
    leader = snapshot.leader_id
    followers = sorted(
        (m for m in members if m.member.id != leader),
        key=lambda m: (-((m.free or 0) // MIB), m.member.name),
    )
    return followers + [m for m in members if m.member.id == leader]


@dataclass
class _Selection:
    """The voting members the sweep will defragment (with why), those it leaves alone, or the
    member whose defrag would cost the quorum its spare (``refusal``)."""

    chosen: list[tuple[MemberSnapshot, str]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    refusal: str | None = None


def _skip(snap: MemberSnapshot, reason: str) -> Skip:
    return Skip(member_id=snap.member.id, member_name=snap.member.display_name, reason=reason)


def _select(
    snapshot: ClusterSnapshot,
    settings: DefragSettings,
    *,
    force: bool,
    local: str | None,
    no_spare_ok: bool,
) -> _Selection:
    """Learners are never swept; a member must be worth it (unless forced) and be this replica's
    own (with ``local``); the first one without a spare in the quorum stops the selection."""
    selection = _Selection()
    for snap in snapshot.members:
        if snap.is_learner:
            selection.skipped.append(_skip(snap, LEARNER_SKIPPED))
            continue
        worth, numbers = defrag_worth(snap, settings, force_text=force)
        if not worth and not force:
            selection.skipped.append(_skip(snap, numbers))
            continue
        if local is not None and not is_local(snapshot, snap, local):
            mine = snapshot.local(local)
            label = mine.member.display_name if mine is not None else local
            reason = f"{numbers}; left to its own replica (this one maintains {label})"
            selection.skipped.append(_skip(snap, reason))
            continue
        held = held_back(snap, snapshot.taken_at, settings)
        if held is not None and no_spare_ok:
            numbers += f" (warning: {held})"  # NOSPACE recovery: writes fail until it is done
        elif held is not None:
            selection.skipped.append(_skip(snap, f"{numbers}; {held}"))
            continue
        problem = quorum_failure(snapshot, snap)
        if problem is not None and not no_spare_ok:
            selection.refusal = f"refusing to defragment {snap.member.display_name}: {problem}"
            return selection
        selection.chosen.append((snap, numbers + (" (forced)" if force and not worth else "")))
    return selection


def plan_defrag(
    snapshot: ClusterSnapshot,
    settings: Settings,
    *,
    force: bool = False,
    command: str = "defrag",
    reason_prefix: str = "",
    no_spare_ok: bool = False,
    local: str | None = None,
    move_leader_over: float | None = None,
) -> Plan:
    """Which members to defragment, in which order, or why none.

    Refuses the whole sweep when a gate fails: a sweep that starts on an unhealthy cluster is how
    maintenance causes the outage it should prevent. ``move_leader_over``: move the leadership
    only when the leader's defrag is estimated to last at least that many seconds (recovery).
    """
    defrag = settings.defrag
    unmatched = local_member_unmatched(snapshot, local) if local is not None else None
    if unmatched is not None:
        # Said, not silently skipped: a replica whose member is no member would never defragment.
        return Plan(command=command, refusal="this replica defragments nothing: " + unmatched)
    failures = cluster_gate_failures(snapshot, defrag)
    if failures:
        return Plan(command=command, refusal="cluster not healthy: " + "; ".join(failures))
    running = fence_refusal(snapshot)
    if running is not None:
        return Plan(command=command, refusal=running)
    selection = _select(snapshot, defrag, force=force, local=local, no_spare_ok=no_spare_ok)
    chosen, skipped = selection.chosen, selection.skipped
    if selection.refusal is not None:
        return Plan(command=command, refusal=selection.refusal, skipped=tuple(skipped))
    if local is not None:
        chosen, waiting = _leader_waits(snapshot, chosen, defrag, force)
        skipped.extend(waiting)
    notes: list[str] = []
    if no_spare_ok and any(quorum_failure(snapshot, s) for s, _ in chosen):
        notes.append(NO_SPARE_NOTE)
    steps, sweep_notes = _sweep_steps(
        snapshot,
        chosen,
        defrag,
        reason_prefix=reason_prefix,
        no_spare_ok=no_spare_ok,
        move_leader_over=move_leader_over,
    )
    return Plan(
        command=command,
        steps=tuple(steps),
        skipped=tuple(skipped),
        notes=tuple(notes + sweep_notes),
    )


def _sweep_steps(
    snapshot: ClusterSnapshot,
    chosen: list[tuple[MemberSnapshot, str]],
    settings: DefragSettings,
    *,
    reason_prefix: str,
    no_spare_ok: bool,
    move_leader_over: float | None = None,
) -> tuple[list[Step], list[str]]:
    """The defrag steps in sweep order, a leadership move before the leader's when asked, each
    with the member its HashKV is compared with afterwards, and the notes of a move that found
    no target or a check that is not available."""
    why_by_id = {s.member.id: why for s, why in chosen}
    steps: list[Step] = []
    notes: list[str] = []
    done: list[MemberSnapshot] = []
    for snap in _order(snapshot, [s for s, _ in chosen]):
        leader = snapshot.role(snap) is Role.LEADER
        short = _short_leader_defrag(snap, settings, move_leader_over) if leader else None
        if short is not None:
            notes.append(short)
        elif leader and settings.move_leader:
            move = _move_leader_step(snapshot, snap, done, settings.max_apply_lag)
            if move is None:
                notes.append(NO_NEW_LEADER_NOTE)
            else:
                steps.append(move)
        reason = reason_prefix + why_by_id[snap.member.id] + (" [leader, last]" if leader else "")
        peer = check_peer(snapshot, snap, [d.member.id for d in done])
        unavailable = check_unavailable(snap, peer)
        if unavailable is not None and unavailable not in notes:
            notes.append(unavailable)
        step = _defrag_step(snap, reason, settings, no_spare_ok=no_spare_ok)
        if peer is not None and unavailable is None:
            step = step.model_copy(
                update={"check_peer_id": peer.member.id, "check_peer_name": peer.member.name}
            )
        steps.append(step)
        done.append(snap)
    return steps, notes


def _short_leader_defrag(
    snap: MemberSnapshot, settings: DefragSettings, move_leader_over: float | None
) -> str | None:
    """Why the leader is defragmented in place (a recovery, a defrag shorter than what a move
    costs), or None.

    Under NOSPACE every write already fails, so what a move saves (writes and keep-alives stalled
    for the leader's defrag) is worth less than what it costs: proposals in flight during the
    transfer are dropped, and a client whose put was forwarded then waits for etcd's request
    timeout (~6 s measured on 3.5.1, bench/bench_nospace_outage.py), against ~0.2 s for the
    leader's defrag of 64 MiB.
    """
    if move_leader_over is None or not settings.move_leader:
        return None
    seconds = estimate_defrag_seconds(snap, settings)
    if seconds >= move_leader_over:
        return None
    return (
        f"the leader {snap.member.display_name} is defragmented in place: its defrag is "
        f"estimated at {seconds:.1f}s, shorter than the write stall a leadership move costs "
        f"during recovery (moved from {move_leader_over:g}s)"
    )


def _move_leader_step(
    snapshot: ClusterSnapshot, leader: MemberSnapshot, done: list[MemberSnapshot], max_lag: int
) -> Step | None:
    """Leadership handed to another member before the leader's own defrag, or None if none can
    take it: while the leader defragments, lease keep-alives (the maintenance lock's too) fail,
    since only the leader serves them."""
    target = _new_leader(snapshot, done, max_lag)
    if target is None:
        return None
    return Step(
        kind=StepKind.MOVE_LEADER,
        reason=f"{leader.member.display_name} is the leader; "
        f"{target.member.display_name} "
        + ("is already defragmented" if target in done else "is healthy and caught up")
        + " and takes over before the old leader's defrag",
        member_id=leader.member.id,
        member_name=leader.member.name,
        endpoint=leader.endpoint,
        target_id=target.member.id,
        target_name=target.member.name,
    )


def _defrag_step(
    snap: MemberSnapshot, reason: str, settings: DefragSettings, *, no_spare_ok: bool
) -> Step:
    size = snap.db_size or 0
    return Step(
        kind=StepKind.DEFRAG,
        reason=reason,
        member_id=snap.member.id,
        member_name=snap.member.name,
        endpoint=snap.endpoint,
        timeout=defrag_timeout(size, settings),
        db_size=size,
        reclaimable=snap.free,
        no_spare_ok=no_spare_ok,
    )


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
        if m.member.id != leader
        and (force or defrag_worth(m, settings)[0])
        and held_back(m, snapshot.taken_at, settings) is None  # never done here: no waiting
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


def _caught_up(snap: MemberSnapshot, leader: MemberSnapshot | None, max_lag: int) -> bool:
    """Applied nearly all it has committed, and committed nearly all the leader has: a member
    far behind would stall writes while it catches up as the leader."""
    status = snap.status
    if status is None or status.apply_lag > max_lag:
        return False
    if leader is None or leader.status is None:
        return True
    return leader.status.raft_index - status.raft_index <= max_lag


def _new_leader(
    snapshot: ClusterSnapshot, done: list[MemberSnapshot], max_lag: int
) -> MemberSnapshot | None:
    """A voting member that answers and is caught up (within ``max_lag`` raft entries, the
    apply-lag gate's), preferring one defragmented earlier in this sweep, so leadership moves
    only once; else the most caught-up one."""
    leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id is not None else None
    healthy = [
        m
        for m in snapshot.voting
        if m.reachable
        and m.endpoint
        and m.member.id != snapshot.leader_id
        and _caught_up(m, leader, max_lag)
    ]
    for snap in reversed(done):
        if snap in healthy:
            return snap
    healthy.sort(key=lambda m: -(m.status.raft_applied_index if m.status is not None else 0))
    return healthy[0] if healthy else None

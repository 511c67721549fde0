"""Where to compact: the newest revision outside the retention, never inside it.

Retention is by revision count and by time; time comes from marker keys (revision R was current
at T), because etcd keeps no timestamp per revision. Pure: the markers and the time are passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import CompactionSettings, Settings
from etcdagent.units import format_duration


class Marker(BaseModel):
    """A timestamped key the agent wrote: the revision the store had at that time."""

    model_config = ConfigDict(frozen=True)

    time: datetime
    revision: int
    key: str | None = None  # where it is stored, for pruning


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


def compact_step(
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
        # The first silent member's error says why (down, or refusing this user its status).
        silent = next((m for m in snapshot.voting if not m.reachable and m.error), None)
        why = f" ({silent.member.display_name}: {silent.error})" if silent else ""
        return Plan(
            command="compact",
            refusal="compaction goes through raft and needs a quorum and a leader: "
            f"{voting_answering} of {len(snapshot.voting)} voting members answer"
            + ("" if snapshot.leader_id is not None else ", no leader")
            + why,
        )
    target, why = compaction_target(snapshot, settings.compaction, markers, now)
    if target is None:
        return Plan(command="compact", notes=(f"nothing to compact: {why}",))
    step, problem = compact_step(snapshot, target, why)
    if step is None:
        return Plan(command="compact", refusal=problem)
    return Plan(command="compact", steps=(step,))

"""Where to compact: the newest revision outside the retention, never inside it.

Retention is by revision count and by time. etcd keeps no timestamp per revision, so time comes
from two witnesses, both measured without any wall clock:

* the retention markers (``act.markers``): revision R and how long ago, by etcd's own lease clock,
  it was current at the latest (``Marker.age`` never exceeds R's true age);
* in the daemon, the agent's own observations: (age by its monotonic clock, revision current
  then) pairs from each cycle's snapshot.

Pure: the markers' ages and the observations are passed in; no ``now`` takes part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.plan import Plan, Step, StepKind
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import CompactionMode, CompactionSettings, Settings
from etcdagent.units import format_duration

if TYPE_CHECKING:  # decide.apiserver builds on the markers defined here
    from etcdagent.decide.apiserver import ApiserverCompaction

Observation = tuple[float, int]
"""(seconds ago by the agent's monotonic clock, the cluster's revision then)."""


class Marker(BaseModel):
    """A valid retention marker: revision ``revision`` was current at least ``age`` seconds ago
    (by etcd's lease clock; ``act.markers`` says why that bound holds)."""

    model_config = ConfigDict(frozen=True)

    revision: int
    age: float
    key: str | None = None  # where it is stored, for pruning
    lease: int = 0  # its lease, revoked to prune it


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


def in_revision_order(markers: Sequence[Marker]) -> list[Marker]:
    """The markers by revision, each aged no older than any marker with a lower revision.

    A marker written later (higher revision) cannot be older than one written before it. So the
    age that counts is the least of its own and of every lower one's: whatever made one marker
    look older than it is (a bug, a forged lease) cannot make a newer one look older still.
    """
    ordered: list[Marker] = []
    youngest = float("inf")
    for marker in sorted(markers, key=lambda m: m.revision):
        youngest = min(youngest, marker.age)
        ordered.append(marker.model_copy(update={"age": youngest}))
    return ordered


def newest_marker_older_than(markers: Sequence[Marker], retain: float) -> Marker | None:
    """The marker with the highest revision whose age, in revision order, is at least ``retain``."""
    old = [m for m in in_revision_order(markers) if m.age >= retain]
    return old[-1] if old else None


def observed_bounds(
    observations: Sequence[Observation], retain: float
) -> tuple[int | None, int | None]:
    """(M, U) from the agent's own observations.

    M: the highest revision seen at least ``retain`` ago: current then, so everything written in
    the last ``retain`` is above it, a safe target. U: the lowest revision seen less than
    ``retain`` ago: the revision current ``retain`` ago cannot be above it.
    """
    old = [rev for age, rev in observations if age >= retain]
    young = [rev for age, rev in observations if age < retain]
    return (max(old) if old else None), (min(young) if young else None)


def time_target(
    markers: Sequence[Marker], observations: Sequence[Observation], retain: float
) -> tuple[int | None, str]:
    """The revision time retention allows compacting to, or None and why not.

    The markers' target T (by etcd's clock) is checked against the agent's own observation: T
    above U contradicts it (a revision current less than ``retain`` ago is below T), and then only
    M, or nothing, is trusted. Otherwise the lower of T and M (whichever keeps more).
    """
    kept = format_duration(retain)
    marker = newest_marker_older_than(markers, retain)
    if marker is None:
        return None, (
            f"no revision is known to be older than {kept} yet (the agent's markers record "
            "revision and age by etcd's lease clock; a later run can compact)"
        )
    target = marker.revision
    seen_old, seen_young = observed_bounds(observations, retain)
    if seen_young is not None and target > seen_young:
        conflict = (
            f"the retention markers (revision {target} older than {kept}) contradict the "
            f"agent's own observation (revision {seen_young} was current less than {kept} ago)"
        )
        if seen_old is None or seen_old > seen_young:
            return None, f"nothing is compacted by time: {conflict}"
        return seen_old, (
            f"keeps {kept} of history by the agent's own observation (revision {seen_old} was "
            f"current at least {kept} ago); {conflict}"
        )
    if seen_old is not None and seen_old < target:
        return seen_old, (
            f"keeps {kept} of history (revision {seen_old} was current at least {kept} ago "
            f"by the agent's own observation; the markers allow {target})"
        )
    age = format_duration(marker.age)
    return target, (
        f"keeps {kept} of history (revision {target} was current at least {age} ago "
        "by etcd's lease clock)"
    )


def compaction_target(
    snapshot: ClusterSnapshot,
    settings: CompactionSettings,
    markers: Sequence[Marker],
    observations: Sequence[Observation] = (),
) -> tuple[int | None, str]:
    """The newest revision that is outside the retention, or None and why not.

    Time retention compacts to at most the revision ``time_target`` allows: current at least
    ``retain`` ago by etcd's lease clock and, in the daemon, by the agent's own monotonic clock.
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
        by_time, why_time = time_target(markers, observations, settings.retain)
        if by_time is None:
            return None, why_time
        candidates.append((by_time, why_time))
    target, why = min(candidates)
    if target <= 1:
        return None, f"the history is shorter than the retention ({why})"
    compacted = compacted_revision(snapshot)
    if compacted is not None and target <= compacted:
        return None, f"already compacted to revision {compacted}; the retention {why}"
    return target, why


def compact_step(
    snapshot: ClusterSnapshot, target: int, reason: str, cas_version: int | None = None
) -> tuple[Step | None, str | None]:
    """Compaction goes through raft: sent to the leader (no forwarding), or to another answering
    voting member when the leader does not answer this agent. ``cas_version``: the version of
    compact_rev_key to move first (kube-apiserver's transaction)."""
    leader = snapshot.by_id(snapshot.leader_id) if snapshot.leader_id is not None else None
    via = leader if leader is not None and leader.reachable else None
    if via is None:
        via = snapshot.answering_voter()
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
            cas_version=cas_version,
        ),
        None,
    )


def plan_compaction(
    snapshot: ClusterSnapshot,
    settings: Settings,
    markers: Sequence[Marker],
    observations: Sequence[Observation] = (),
    apiserver: ApiserverCompaction | None = None,
) -> Plan:
    """``apiserver``: the judgement on compact_rev_key (None: not read, compacts as if absent;
    the commands always read it)."""
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
    held = left_to_apiserver(settings.compaction, apiserver)
    if held is not None:
        return Plan(command="compact", notes=(f"nothing to compact: {held}",))
    target, why = compaction_target(snapshot, settings.compaction, markers, observations)
    if target is None:
        return Plan(command="compact", notes=(f"nothing to compact: {why}",))
    cas_version = None
    if apiserver is not None and apiserver.key is not None and apiserver.key.exists:
        cas_version = apiserver.key.version
        why += (
            f"; moves compact_rev_key from version {cas_version} to this revision first, as "
            "kube-apiserver does (its watch caches and compactions follow the key)"
        )
    step, problem = compact_step(snapshot, target, why, cas_version)
    if step is None:
        return Plan(command="compact", refusal=problem)
    return Plan(command="compact", steps=(step,))


def left_to_apiserver(
    settings: CompactionSettings, apiserver: ApiserverCompaction | None
) -> str | None:
    """Why the agent does not compact on its cadence (compaction.mode and compact_rev_key)."""
    if settings.mode is CompactionMode.NEVER:
        return "compaction.mode is never (a NOSPACE recovery still compacts)"
    if settings.mode is CompactionMode.ALWAYS or apiserver is None:
        return None
    if apiserver.key is None:
        return (
            f"{apiserver.describe()}: with compaction.mode auto nothing is compacted while it "
            "is unknown whether kube-apiserver compacts (with auth on, give the agent's user "
            "read and write access to compact_rev_key, or set compaction.mode always or never)"
        )
    if apiserver.leaves_compaction:
        quiet = format_duration(apiserver.horizon)
        return (
            f"{apiserver.describe()}; compaction.mode auto leaves compaction to whoever moves "
            f"compact_rev_key and takes over once it has been quiet for {quiet}"
        )
    return None

"""After a member's defrag: is its data still its peer's? HashKV of both, at one revision.

A defragmentation rewrites the member's whole database file; comparing its HashKV (etcd 3.5.10+)
with a member not being defragmented is the one check that it still holds what its peers hold.
Two hashes are comparable only when both members hashed the same revision over the same
compaction: the revision is the lower of their current ones (both have applied it, and HashKV at
an explicit revision does not move with new writes), and a compaction applied on one member but
not yet on the other makes the hashes differ legitimately, so answers whose ``compact_revision``
differ are asked again, briefly, and never reported as a mismatch. Only a mismatch under those
conditions, etcd's own corruption criterion, fails the step.
"""

from __future__ import annotations

import structlog

from etcdagent.act.step_context import StepContext
from etcdagent.act.step_results import ConsistencyCheck, ConsistencyResult
from etcdagent.decide.consistency import NO_PEER, check_peer
from etcdagent.decide.plan import Step
from etcdagent.errors import EtcdCompactedError, EtcdError
from etcdagent.etcd.client import MemberClient
from etcdagent.models import HashKV
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.settings import Settings

log = structlog.get_logger()

ATTEMPTS = 5  # a compaction being applied settles within a raft round trip or two
PAUSE = 0.2  # seconds between attempts


class ConsistencyChecker:
    """Compares a defragmented member's HashKV with a peer's; never raises for etcd."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    def check(self, step: Step, snapshot: ClusterSnapshot) -> ConsistencyCheck:
        """The comparison for ``step``'s member on ``snapshot`` (taken once it recovered)."""
        target = snapshot.by_id(step.member_id) if step.member_id is not None else None
        if target is None or target.status is None:
            return _skipped("the member did not answer after its defrag")
        found = self._check(step, snapshot, target)
        _log(target, found)
        return found

    def _check(
        self, step: Step, snapshot: ClusterSnapshot, target: MemberSnapshot
    ) -> ConsistencyCheck:
        if target.hashkv_missing is not None:
            return ConsistencyCheck(
                result=ConsistencyResult.UNAVAILABLE, message=target.hashkv_missing
            )
        peer = _peer(step, snapshot, target)
        if peer is None:
            return _skipped(NO_PEER)
        try:
            return self._compare(target, peer)
        except EtcdError as exc:
            if exc.status == 404:
                return ConsistencyCheck(
                    result=ConsistencyResult.UNAVAILABLE,
                    message=f"{exc.endpoint}: /v3/maintenance/hashkv not found (etcd < 3.5.10?)",
                )
            return _skipped(f"HashKV not compared: {exc}", peer)

    def _compare(self, target: MemberSnapshot, peer: MemberSnapshot) -> ConsistencyCheck:
        ctx = self.ctx
        ours, theirs = ctx.client_for(target), ctx.client_for(peer)
        size = max(target.db_size or 0, peer.db_size or 0)
        timeout = hash_timeout(size, ctx.settings)
        last = ""
        for _ in range(ATTEMPTS):
            revision = min(ours.status().revision, theirs.status().revision)
            answers = _hash_both(ours, theirs, revision, timeout)
            if isinstance(answers, str):
                last = answers
            elif answers[0].compact_revision != answers[1].compact_revision:
                last = (
                    f"at revision {revision} {target.member.name} had compacted to "
                    f"{answers[0].compact_revision} and {peer.member.name} to "
                    f"{answers[1].compact_revision} (a compaction not yet applied or finished "
                    "on both)"
                )
            elif any(a.hash_revision not in (0, revision) for a in answers):
                last = f"asked for revision {revision}, a member hashed another one"
            else:
                return _verdict(target, peer, revision, answers[0], answers[1])
            if ctx.wait(PAUSE):
                return _skipped("stop requested before the HashKV comparison ended", peer)
        return _skipped(f"no comparable HashKV answers in {ATTEMPTS} attempts: {last}", peer)


def hash_timeout(db_size: int, settings: Settings) -> float:
    """A HashKV reads every key up to the revision: the request timeout plus twice the time
    reading the file takes at the rate a defrag is estimated to go (a frozen peer must not
    hold the sweep for a defrag's whole timeout)."""
    rate = max(1, settings.defrag.estimated_rate)
    return settings.connection.request_timeout + 2 * db_size / rate


def _peer(step: Step, snapshot: ClusterSnapshot, target: MemberSnapshot) -> MemberSnapshot | None:
    """The planned peer while it still qualifies on ``snapshot``, else the best one now."""
    planned = snapshot.by_id(step.check_peer_id) if step.check_peer_id is not None else None
    if (
        planned is not None
        and planned.reachable
        and planned.endpoint
        and planned.hashkv_missing is None
        and planned.member.id != target.member.id
        and not planned.is_learner
    ):
        return planned
    return check_peer(snapshot, target)


def _hash_both(
    ours: MemberClient, theirs: MemberClient, revision: int, timeout: float
) -> tuple[HashKV, HashKV] | str:
    """Both members' HashKV at ``revision``, or why not this time (a compaction overtook it)."""
    try:
        return ours.hashkv(revision, timeout=timeout), theirs.hashkv(revision, timeout=timeout)
    except EtcdCompactedError:
        return f"revision {revision} was compacted meanwhile"


def _verdict(
    target: MemberSnapshot, peer: MemberSnapshot, revision: int, ours: HashKV, theirs: HashKV
) -> ConsistencyCheck:
    """Match or mismatch of two answers taken at one revision over one compaction."""
    over = f"at revision {revision} (compacted revision {ours.compact_revision})"
    if ours.hash == theirs.hash:
        result = ConsistencyResult.MATCH
        message = f"HashKV {ours.hash} matches {peer.member.display_name}'s {over}"
    else:
        result = ConsistencyResult.MISMATCH
        message = (
            f"HashKV mismatch after the defrag: {target.member.display_name} has {ours.hash}, "
            f"{peer.member.display_name} has {theirs.hash} {over}: their data differ; run "
            f"`etcdctl endpoint hashkv --rev={revision}` on every member and replace the one "
            "that disagrees with the others before any more maintenance"
        )
    return ConsistencyCheck(
        result=result,
        message=message,
        peer_id=peer.member.id,
        peer_name=peer.member.name,
        revision=revision,
        compact_revision=ours.compact_revision,
        hash=ours.hash,
        peer_hash=theirs.hash,
    )


def _skipped(message: str, peer: MemberSnapshot | None = None) -> ConsistencyCheck:
    return ConsistencyCheck(
        result=ConsistencyResult.SKIPPED,
        message=message,
        peer_id=peer.member.id if peer is not None else None,
        peer_name=peer.member.name if peer is not None else None,
    )


def _log(target: MemberSnapshot, found: ConsistencyCheck) -> None:
    level = log.error if found.result is ConsistencyResult.MISMATCH else log.info
    level(
        "consistency check",
        member=target.member.display_name,
        peer=found.peer_name,
        result=found.result.value,
        revision=found.revision,
        compact_revision=found.compact_revision,
        hash=found.hash,
        peer_hash=found.peer_hash,
        message=found.message,
    )

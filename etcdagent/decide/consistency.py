"""The consistency check after each defragmentation: which member to compare with, or why none.

After a member's defrag its HashKV at one revision is compared with a peer's: a defrag rewrites
the whole file, and this is the one moment a tool can say the member's data is still its
peers'. The peer is a healthy voting member not being defragmented; one this sweep has not
touched is preferred (an untouched copy is the better witness), the leader first among them,
else the member defragmented most recently. Pure: whether a member serves HashKV is a version
fact the snapshot carries (``MemberSnapshot.hashkv_missing``).
"""

from __future__ import annotations

from collections.abc import Sequence

from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

UNAVAILABLE = "the consistency check is not available"
NO_PEER = "no other healthy voting member serves HashKV to compare with"


def _candidates(snapshot: ClusterSnapshot, target: MemberSnapshot) -> list[MemberSnapshot]:
    return [
        m
        for m in snapshot.voting
        if m.reachable
        and m.endpoint
        and m.member.id != target.member.id
        and m.hashkv_missing is None
    ]


def check_peer(
    snapshot: ClusterSnapshot, target: MemberSnapshot, done: Sequence[int] = ()
) -> MemberSnapshot | None:
    """The member to compare ``target``'s HashKV with after its defrag (``done``: the members
    this sweep defragmented before it, oldest first); None when there is none."""
    candidates = _candidates(snapshot, target)
    untouched = [m for m in candidates if m.member.id not in done]
    if untouched:
        leader = [m for m in untouched if m.member.id == snapshot.leader_id]
        return (leader or sorted(untouched, key=lambda m: m.member.name))[0]
    by_id = {m.member.id: m for m in candidates}
    for member_id in reversed(done):
        if member_id in by_id:
            return by_id[member_id]
    return None


def check_unavailable(target: MemberSnapshot, peer: MemberSnapshot | None) -> str | None:
    """Why ``target``'s defrag goes without a consistency check, as a plan note; None if it
    has one."""
    if target.hashkv_missing is not None:
        return f"{target.hashkv_missing}: {UNAVAILABLE}"
    if peer is None:
        return f"{NO_PEER}: {UNAVAILABLE} for {target.member.display_name}"
    return None

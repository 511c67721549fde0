"""The record of each member's defragmentations, written to etcd around every defrag.

One key per member, ``/etcdagent/defrag/<member-id-hex>`` (JSON, see
``observe.snapshot.DefragRecord``), shared by every replica and CronJob run like the compaction
markers. Before the defragment request the attempt is recorded (``in_flight``); after the member
has recovered, the finished defrag replaces the last one and the attempt is cleared. So:

- the next plan estimates this member's defrag from its own last one (the rate it rewrote its
  live data at), not from a guess;
- an attempt that never finished, on a member whose etcd started after it, says that etcd was
  restarted mid-defrag (kubeadm's liveness probe does that to a defrag over ~80 s): the member
  is not tried again for a day (``decide.defrag_budget``).

Both writes go through a member other than the one defragmented (its requests block while the
defrag runs). A write that fails is the caller's to log, never a reason to skip the defrag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from etcdagent.errors import EtcdError
from etcdagent.etcd.client import MemberClient
from etcdagent.observe.defrag_records import defrag_key, parse_record
from etcdagent.observe.snapshot import DefragAttempt, DefragRecord


def _current(member: MemberClient, member_id: int) -> DefragRecord:
    value = member.get(defrag_key(member_id))
    record = parse_record(value) if value is not None else None
    return record if record is not None else DefragRecord()


def _write(member: MemberClient, member_id: int, record: DefragRecord) -> DefragRecord:
    member.put(defrag_key(member_id), record.model_dump_json())
    return record


def record_defrag_started(
    member: MemberClient,
    member_id: int,
    *,
    size: int,
    in_use: int,
    started_at: datetime,
    by: str = "",
) -> DefragRecord:
    """Record the attempt, keeping the last finished defrag (it still estimates the next)."""
    attempt = DefragAttempt(size=size, in_use=in_use, started_at=started_at, by=by)
    record = _current(member, member_id).model_copy(update={"in_flight": attempt})
    return _write(member, member_id, record)


def record_defrag_finished(
    member: MemberClient,
    member_id: int,
    *,
    size: int,
    in_use: int,
    duration: float,
    started_at: datetime,
    finished_at: datetime,
) -> DefragRecord:
    """Record a defrag the member came back from: ``size`` and ``in_use`` are the member's
    before it (``in_use`` is what the defrag rewrote), ``duration`` the defragment request's
    own (without the wait for the member to catch up). Clears the attempt."""
    record = DefragRecord(
        size=size,
        in_use=in_use,
        duration=max(0.0, duration),
        started_at=started_at,
        finished_at=finished_at,
        in_flight=None,
    )
    return _write(member, member_id, record)


def write_through(
    members: Iterable[MemberClient], write: Callable[[MemberClient], DefragRecord]
) -> str | None:
    """Make one of the record writes through the first member that takes it (pass the members
    the lock uses: never the one being defragmented); None when written, else why not, for a
    warning: a record that cannot be written never stops or fails the defrag."""
    last = "no member to write through"
    for member in members:
        try:
            write(member)
        except EtcdError as exc:
            last = str(exc)
            continue
        return None
    return f"defrag record not written: {last}"

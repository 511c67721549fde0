"""Time retention from marker keys aged by etcd's own clock: which revision was current when.

etcd keeps no timestamp per revision, so the agent writes small marker keys under
``/etcdagent/markers/`` and a later run (any replica, a CronJob) compacts no further than the
newest marker older than the retention. A marker's *age* is measured by etcd, never by the clock
of the agent that wrote it: agents' clocks may be minutes off, or jump (an NTP step, a VM
resumed), and a marker that trusted its writer's clock let one replica compact history another
wrote seconds ago (issue 11).

How a marker is written (``write_marker``):

1. put the key with no lease: its ``create_revision`` R is the store's revision at that moment;
2. grant a lease of ``marker_ttl(retain)`` seconds (2 x retain + 1 h, at least 8 days for a
   daily or weekly CronJob, at most etcd's 9e9 s; 1 day without time retention): long enough to
   outlive every decision that may need it;
3. put the same key again under that lease, with the value ``{"lease", "by", "wall"}`` (``wall``
   is the writer's clock, for humans only).

Why the age is never more than R's true age: the lease is granted after R was current, and its
expiry (grant time + TTL) is kept by the leader's lessor on Go's monotonic clock, so
``grantedTTL - TTL`` from ``/v3/lease/timetolive`` is how long ago the lease was granted, by a
clock no agent can skew and no wall-clock step moves. etcd answers the remaining TTL truncated to
whole seconds (``int64(le.Remaining().Seconds())`` in ``leaseTimeToLive``, server/etcdserver/
v3_server.go), which can make a lease look up to 1 s older: the age is ``grantedTTL - TTL - 1``.
The ages are then taken in revision order (``decide.compaction.in_revision_order``): nothing
written later can be older than something written before it.

What makes a lease look *younger* (the safe side: less is compacted, never more): a new leader's
lessor ``Promote`` sets every lease's expiry to now + its TTL + the election timeout, and a
restarted member's leases start afresh the same way. Measured on 3.4.23, 3.5.1, 3.5.30 and
3.6.14 (tests/integration/test_retention_markers.py, ``-s`` prints it): a marker aged 4 s read
-1 s right after a leadership transfer, and one aged 2 s read -1 s right after the leader was
restarted, identically on all four; never older. With lease checkpointing on
(``--experimental-enable-lease-checkpoint``, off by default; checkpoints every 5 min) the new
leader starts from the last checkpointed remaining TTL instead (from the source, not measured:
no flag shortens the interval), which is at least the true remaining TTL: younger or equal,
never older. The consequence: **a leader change delays time-based compaction by up to the
retention** (for ``retain`` after it no marker is old enough, unless the daemon's own
observation allows it), and the agent's own leader moves (before defragmenting the leader) do
this too.

Which markers count: only ``lease != 0``, ``version == 2`` (exactly the two puts above) and a
value naming that same lease. A legacy marker (named by its writer's Unix milliseconds, the old
scheme), a rewritten one, a foreign write, or a write cut short between steps 1 and 3 is ignored
for decisions (ignoring a marker can only pick an older target, or none) and deleted by pruning.
Key names carry no time: a marker is ``/etcdagent/markers/<16 random hex digits>``; who wrote it is
in the value. Someone with write access to ``/etcdagent/`` who deliberately forges a lease granted
long before the key can fool this check, as they could delete the data itself.

Reads cost one ``timetolive`` per marker, so markers are thin: a run writes one only when the
newest is at least ``marker_spacing(retain)`` old (retain / 24, at least 10 s; 1 h without time
retention), and pruning revokes (which deletes the key) every marker no decision can need.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from etcdagent.act.lock_requests import int_field, lease_not_found
from etcdagent.decide.compaction import Marker, in_revision_order
from etcdagent.errors import EtcdError
from etcdagent.etcd.client import MemberClient
from etcdagent.models import KeyValue

MARKER_PREFIX = "/etcdagent/markers/"
MAX_MARKERS = 500  # a runaway writer must not grow the keyspace
MAX_LEASE_TTL = 9_000_000_000  # etcd's lease.MaxLeaseTTL: a longer grant is refused
TTL_WITHOUT_RETENTION = 86_400.0
MIN_TTL = 8 * 86_400
SPACING_WITHOUT_RETENTION = 3_600.0
MIN_SPACING = 10.0
TRUNCATION = 1.0  # etcd truncates the remaining TTL to whole seconds


def marker_ttl(retain: float | None) -> int:
    """The lease TTL of a new marker: it must outlive every decision that may still need it.

    It is the target from when it is ``retain`` old until a newer one is, and the next run may
    be a day away (a daily CronJob compacts to the previous day's marker): 2 x retain + 1 h, at
    least ``MIN_TTL`` (8 days: a weekly CronJob too), at most what etcd grants.
    """
    if not retain:
        return int(TTL_WITHOUT_RETENTION)
    return min(max(math.ceil(2 * retain + 3600), MIN_TTL), MAX_LEASE_TTL)


def marker_spacing(retain: float | None) -> float:
    """How old the newest marker must be before a run writes another: the target is at most this
    much older than the retention needs, and a read costs one request per marker."""
    if not retain:
        return SPACING_WITHOUT_RETENTION
    return max(retain / 24, MIN_SPACING)


@dataclass(frozen=True)
class MarkerRead:
    """What is under the prefix: the valid markers, aged by etcd, and the keys that do not count."""

    markers: list[Marker] = field(default_factory=list)
    invalid: list[KeyValue] = field(default_factory=list)


def _value(kv: KeyValue) -> dict[str, Any] | None:
    try:
        value = json.loads(kv.value)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_valid(kv: KeyValue) -> bool:
    """Written by ``write_marker`` and untouched since: two puts, the second under the lease its
    value names."""
    if kv.lease == 0 or kv.version != 2:
        return False
    value = _value(kv)
    return value is not None and str(value.get("lease")) == str(kv.lease)


def lease_age(member: MemberClient, lease: int) -> float | None:
    """Seconds since the lease was granted by etcd's lessor, at most (None: gone or expiring)."""
    try:
        answer = member.call("marker lease timetolive", "/lease/timetolive", {"ID": str(lease)})
    except EtcdError as exc:
        if lease_not_found(exc):
            return None
        raise
    remaining = int_field(answer, "TTL")
    granted = int_field(answer, "grantedTTL")
    if remaining <= 0 or granted <= 0:  # expired (-1), about to be revoked
        return None
    return float(granted - remaining) - TRUNCATION


def read_markers(member: MemberClient) -> MarkerRead:
    """Every marker under the prefix, the valid ones with their age by etcd's lease clock."""
    answer = member.range_prefix(MARKER_PREFIX)
    read = MarkerRead()
    for kv in answer.kvs:
        if not is_valid(kv):
            read.invalid.append(kv)
            continue
        age = lease_age(member, kv.lease)
        if age is None:
            continue  # its lease is gone or expiring: the key goes with it
        read.markers.append(
            Marker(
                revision=kv.create_revision,
                age=age,
                key=kv.key.decode(errors="replace"),
                lease=kv.lease,
            )
        )
    read.markers.sort(key=lambda m: m.revision)
    return read


def due(markers: list[Marker], retain: float | None) -> bool:
    """Whether a run should write a marker: none yet, or the newest is at least the spacing old."""
    if not markers:
        return True
    newest = max(markers, key=lambda m: m.revision)
    return newest.age >= marker_spacing(retain)


def _revoke(member: MemberClient, lease: int) -> None:
    try:
        member.call("marker lease revoke", "/kv/lease/revoke", {"ID": str(lease)}, retry=False)
    except EtcdError as exc:
        if not lease_not_found(exc):
            raise


def _put(member: MemberClient, key: str, value: str, lease: int = 0) -> int:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    answer = member.call("marker put", "/kv/put", body, retry=False)
    header = answer.get("header") if isinstance(answer, dict) else None
    return int_field(header, "revision")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def write_marker(member: MemberClient, retain: float | None, holder: str, wall: datetime) -> Marker:
    """Record "the store was at this revision now", aged from here on by a fresh lease.

    A failure after the first put leaves an invalid key (no lease) that decisions ignore and
    pruning deletes; an orphaned lease holds no key and expires by itself.
    """
    key = f"{MARKER_PREFIX}{secrets.token_hex(8)}"
    revision = _put(member, key, json.dumps({"by": holder, "pending": True}))
    granted = member.call(
        "marker lease grant", "/lease/grant", {"TTL": str(marker_ttl(retain))}, retry=False
    )
    lease = int_field(granted, "ID")
    if lease == 0:
        raise EtcdError(
            f"marker lease grant answered without a lease ID: {granted!r}",
            operation="marker lease grant",
        )
    value = json.dumps({"lease": str(lease), "by": holder, "wall": wall.isoformat()})
    try:
        _put(member, key, value, lease)
    except EtcdError:
        with suppress(EtcdError):  # the lease expires by itself
            _revoke(member, lease)
        raise
    return Marker(revision=revision, age=0.0, key=key, lease=lease)


def doomed_markers(
    markers: list[Marker], retain: float | None, horizons: Sequence[float] = ()
) -> list[Marker]:
    """The valid markers no retention decision can need again.

    Kept: every marker younger than the retention (in revision order), and the newest older one
    (today's compaction target). With no time retention (or retain 0), only the newest. Also the
    newest older than each of ``horizons`` (how long compact_rev_key has been quiet at least).
    """
    ordered = in_revision_order(markers)
    if not ordered:
        return []
    if not retain:
        kept = ordered[-1:]
    else:
        old = [m for m in ordered if m.age >= retain]
        kept = old[-1:] + [m for m in ordered if m.age < retain]
    for horizon in horizons:
        kept += [m for m in [m for m in ordered if m.age >= horizon][-1:] if m not in kept]
    kept.sort(key=lambda m: m.revision)
    kept_keys = {m.key for m in kept}
    doomed = [m for m in ordered if m.key not in kept_keys]
    if len(kept) > MAX_MARKERS:
        doomed += kept[: len(kept) - MAX_MARKERS]
    return doomed


def doomed_invalid(read: MarkerRead) -> list[KeyValue]:
    """The invalid keys to delete: all but another writer's marker still being written (one put,
    no lease, created after the newest valid marker), which its next put completes."""
    newest = max((m.revision for m in read.markers), default=0)
    return [
        kv
        for kv in read.invalid
        if not (
            kv.version == 1
            and kv.lease == 0
            and kv.create_revision > newest
            and (_value(kv) or {}).get("pending") is True
        )
    ]


def prune_markers(
    member: MemberClient,
    read: MarkerRead,
    retain: float | None,
    written: Marker | None = None,
    horizons: Sequence[float] = (),
) -> int:
    """Revoke the markers no decision can need and delete the invalid keys; how many went.

    ``written``: the marker this run wrote after ``read`` (it counts among the markers kept, not
    in judging which invalid key is another writer's marker still being written).
    """
    count = 0
    markers = read.markers if written is None else [*read.markers, written]
    for marker in doomed_markers(markers, retain, horizons):
        _revoke(member, marker.lease)
        count += 1
    for kv in doomed_invalid(read):
        member.delete(kv.key)
        count += 1
    return count

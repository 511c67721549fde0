"""How `etcdagent status` shows a snapshot: a table for people, stable JSON for scripts.

The JSON shape is a documented interface (README, "status --output json"); add fields, never
rename or remove them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from etcdagent.observe.health import Health
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot
from etcdagent.units import format_bytes


def member_json(snapshot: ClusterSnapshot, snap: MemberSnapshot) -> dict[str, Any]:
    status = snap.status
    frag = snap.fragmentation
    quota_use = snap.quota_use
    return {
        "id": snap.member.id_hex,
        "name": snap.member.name,
        "endpoint": snap.endpoint,
        "role": snapshot.role(snap).value,
        "reachable": snap.reachable,
        "is_learner": snap.is_learner,
        "version": status.version if status else None,
        "storage_version": (status.storage_version or None) if status else None,
        "db_size": snap.db_size,
        "db_size_in_use": snap.db_size_in_use,
        "db_size_free": snap.free,
        "fragmentation": round(frag, 4) if frag is not None else None,
        "quota": snap.quota,
        "quota_use": round(quota_use, 4) if quota_use is not None else None,
        "revision": status.revision if status else None,
        "raft_term": status.raft_term if status else None,
        "raft_index": status.raft_index if status else None,
        "raft_applied_index": status.raft_applied_index if status else None,
        "alarms": [a.alarm.value for a in snapshot.alarms_of(snap)],
        "error": snap.error,
        "metrics_error": snap.metrics_error,
    }


def status_json(snapshot: ClusterSnapshot, health: Health) -> dict[str, Any]:
    leader = snapshot.leader_id
    return {
        "verdict": health.verdict.value,
        "reasons": list(health.reasons),
        "cluster_id": f"{snapshot.cluster_id:x}",
        "leader": f"{leader:x}" if leader is not None else None,
        "downgrade_target": snapshot.downgrade_target,
        "taken_at": snapshot.taken_at.isoformat(),
        "members": [member_json(snapshot, m) for m in snapshot.members],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


_HEADERS = (
    "NAME",
    "ID",
    "ENDPOINT",
    "ROLE",
    "VERSION",
    "STORAGE",
    "DB SIZE",
    "IN USE",
    "FREE",
    "FRAG",
    "QUOTA",
    "QUOTA USE",
    "REVISION",
    "RAFT INDEX",
    "APPLIED",
    "ALARMS",
)
_RIGHT = {
    "DB SIZE",
    "IN USE",
    "FREE",
    "FRAG",
    "QUOTA",
    "QUOTA USE",
    "REVISION",
    "RAFT INDEX",
    "APPLIED",
}


def _row(snapshot: ClusterSnapshot, snap: MemberSnapshot) -> tuple[str, ...]:
    status = snap.status
    alarms = ",".join(a.alarm.value for a in snapshot.alarms_of(snap)) or "-"
    return (
        snap.member.display_name,
        snap.member.id_hex,
        snap.endpoint or "-",
        snapshot.role(snap).value if snap.reachable or snap.is_learner else "unreachable",
        status.version if status else "-",
        (status.storage_version or "-") if status else "-",
        format_bytes(snap.db_size),
        format_bytes(snap.db_size_in_use),
        format_bytes(snap.free),
        _pct(snap.fragmentation),
        format_bytes(snap.quota),
        _pct(snap.quota_use),
        _num(status.revision if status else None),
        _num(status.raft_index if status else None),
        _num(status.raft_applied_index if status else None),
        alarms,
    )


def _columns(snapshot: ClusterSnapshot) -> list[int]:
    """The table's columns: STORAGE only when some member reports one (etcd 3.6 and later)."""
    has_storage = any(m.status is not None and m.status.storage_version for m in snapshot.members)
    return [i for i, h in enumerate(_HEADERS) if h != "STORAGE" or has_storage]


def render_table(snapshot: ClusterSnapshot, health: Health, notes: Sequence[str] = ()) -> str:
    """The members' table, errors, ``notes`` (one line each), and the verdict last."""
    columns = _columns(snapshot)
    full = [_HEADERS, *(_row(snapshot, m) for m in snapshot.members)]
    rows = [tuple(r[i] for i in columns) for r in full]
    headers = rows[0]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if headers[i] in _RIGHT else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    problems = [f"  {m.member.display_name}: {m.error}" for m in snapshot.members if m.error] + [
        f"  {m.member.display_name}: metrics: {m.metrics_error}"
        for m in snapshot.members
        if m.metrics_error and not m.error
    ]
    if snapshot.alarms_error:
        problems.append(f"  alarms: {snapshot.alarms_error}")
    if problems:
        lines += ["", "errors:", *problems]
    lines.append("")
    lines += notes
    verdict = f"cluster {snapshot.cluster_id:x}: {health.verdict.value}"
    if health.reasons:
        verdict += " (" + "; ".join(health.reasons) + ")"
    lines.append(verdict)
    return "\n".join(lines)

"""WAL fsync and backend commit p99 per member, against etcd's hardware guidance and etcd-mixin.

etcd's hardware guide asks for WAL fsync p99 < 10 ms and backend commit p99 < 25 ms (the tuning
guide's SLA: "etcd write latency < 10 ms"); etcd-mixin alerts at 0.5 s / 1 s (fsync) and 0.25 s
(commit). Above the guidance is a warning, at the mixin's critical level critical.
"""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.units import format_duration

_FIX = (
    "put etcd's data directory (at least its WAL, --wal-dir) on a dedicated SSD or NVMe disk, "
    "not shared with other workloads or the OS; `etcdctl check perf` measures it. The agent's "
    "wal_fsync_p99 and backend_commit_p99 gates keep maintenance off it meanwhile"
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else format_duration(seconds)


def _one(
    doc: DoctorInput, check: str, p99_field: str, count_field: str, guide: float, critical: float
) -> list[Finding]:
    findings: list[Finding] = []
    for snap in doc.after.members:
        if snap.status is None:
            continue
        sig = doc.signals.get(snap.member.id)
        p99 = getattr(sig, p99_field) if sig is not None else None
        count = getattr(sig, count_field) if sig is not None else None
        name = snap.member.display_name
        evidence: dict[str, int | float | str | bool | None] = {
            "p99_seconds": p99,
            "observations": count,
            "guidance_seconds": guide,
            "critical_seconds": critical,
        }
        if p99 is None:
            idle = count == 0
            why = (sig.not_enough_data if sig is not None else None) or "no data"
            findings.append(
                Finding(
                    check=check,
                    severity=Severity.OK if idle else Severity.INFO,
                    member=name,
                    summary="idle: no disk writes in the lookback"
                    if idle
                    else f"p99 not known: {why}",
                    evidence=evidence,
                )
            )
            continue
        severity = Severity.OK
        if p99 > critical:
            severity = Severity.CRITICAL
        elif p99 > guide:
            severity = Severity.WARNING
        text = f"p99 {_ms(p99)} over {count} operations (guidance < {_ms(guide)})"
        findings.append(
            Finding(
                check=check,
                severity=severity,
                member=name,
                summary=text + (f"; {name} has a slow disk" if severity is not Severity.OK else ""),
                action=_FIX if severity is not Severity.OK else "",
                evidence=evidence,
            )
        )
    return findings


def check_disk_latency(doc: DoctorInput) -> list[Finding]:
    settings = doc.settings.doctor
    return _one(
        doc,
        "wal_fsync",
        "wal_fsync_p99",
        "wal_fsyncs",
        settings.wal_fsync_p99_guidance,
        settings.wal_fsync_p99_critical,
    ) + _one(
        doc,
        "backend_commit",
        "backend_commit_p99",
        "backend_commits",
        settings.backend_commit_p99_guidance,
        settings.backend_commit_p99_critical,
    )

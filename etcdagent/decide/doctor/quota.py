"""The database against its quota: use now, time to reach it, and the quota itself."""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.units import format_bytes, format_duration

DEFAULT_QUOTA = 2 * 1024**3  # etcd's quota when --quota-backend-bytes is 0 (unset)

_FIX = (
    "compact and defragment (`etcdagent defrag`; the daemon's emergency.quota trigger does it "
    "at 90% or within 1h of the quota), delete data, or raise --quota-backend-bytes"
)


def check_quota(doc: DoctorInput) -> list[Finding]:
    """Per member: quota use (warning/critical levels) and the predicted time to the quota."""
    settings = doc.settings.doctor
    findings: list[Finding] = []
    for snap in doc.after.members:
        use, quota, size = snap.quota_use, snap.quota, snap.db_size
        if use is None or quota is None or size is None:
            continue
        sig = doc.signals.get(snap.member.id)
        ttq = sig.time_to_quota if sig is not None else None
        growth = sig.db_growth_rate if sig is not None else None
        severity = Severity.OK
        if use >= settings.quota_critical or (
            ttq is not None and ttq < settings.time_to_quota_critical
        ):
            severity = Severity.CRITICAL
        elif use >= settings.quota_warning or (
            ttq is not None and ttq < settings.time_to_quota_warning
        ):
            severity = Severity.WARNING
        text = f"{use:.0%} of the {format_bytes(quota)} quota used ({format_bytes(size)} file)"
        if growth:
            text += f"; growing {format_bytes(growth)}/s"
            if ttq is not None:
                text += f", quota reached in about {format_duration(ttq)}"
        elif sig is not None and sig.db_growth_rate == 0:
            text += "; not growing"
        findings.append(
            Finding(
                check="quota",
                severity=severity,
                member=snap.member.display_name,
                summary=text,
                action=_FIX if severity is not Severity.OK else "",
                evidence={
                    "db_size": size,
                    "quota": quota,
                    "quota_use": round(use, 4),
                    "growth_bytes_per_second": growth,
                    "time_to_quota_seconds": ttq,
                },
            )
        )
    return findings


def check_quota_size(doc: DoctorInput) -> list[Finding]:
    """The quota itself: above etcd's suggested maximum, or the default on a growing database."""
    settings = doc.settings.doctor
    quotas = {q for m in doc.after.members if (q := m.quota) is not None}
    if not quotas:
        return [
            Finding(
                check="quota_size",
                severity=Severity.INFO,
                summary="no member reported its quota",
                action="check that the agent can read the members' /metrics",
            )
        ]
    quota = max(quotas)
    evidence: dict[str, int | float | str | bool | None] = {"quota": quota}
    if quota > settings.max_quota:
        return [
            Finding(
                check="quota_size",
                severity=Severity.WARNING,
                summary=f"quota {format_bytes(quota)} is above etcd's suggested maximum of "
                f"{format_bytes(settings.max_quota)}",
                action="lower --quota-backend-bytes to 8 GiB at most, and keep the database "
                "small with compaction and defragmentation; a larger database makes snapshots, "
                "defrags and member recovery slower",
                evidence=evidence,
            )
        ]
    if quota == DEFAULT_QUOTA:
        soon = [
            (snap.member.display_name, ttq)
            for snap in doc.after.members
            if (sig := doc.signals.get(snap.member.id)) is not None
            and (ttq := sig.time_to_quota) is not None
            and ttq < settings.default_quota_horizon
        ]
        if soon:
            name, ttq = min(soon, key=lambda x: x[1])
            evidence["time_to_quota_seconds"] = ttq
            return [
                Finding(
                    check="quota_size",
                    severity=Severity.WARNING,
                    member=name,
                    summary=f"etcd's default 2 GiB quota (--quota-backend-bytes unset), and "
                    f"{name} reaches it in about {format_duration(ttq)} at its growth",
                    action="set --quota-backend-bytes (the tuning guide uses 8 GiB for large "
                    "clusters) and find what grows",
                    evidence=evidence,
                )
            ]
        return [
            Finding(
                check="quota_size",
                severity=Severity.OK,
                summary="etcd's default 2 GiB quota; the database is not growing toward it",
                evidence=evidence,
            )
        ]
    return [
        Finding(
            check="quota_size",
            severity=Severity.OK,
            summary=f"quota {format_bytes(quota)}",
            evidence=evidence,
        )
    ]

"""Alarms raised on the members (NOSPACE refuses writes, CORRUPT means a member's data differs)."""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.models import AlarmType

_FIX = {
    AlarmType.NOSPACE: "`etcdagent recover` (compact, defragment every member, disarm, prove a "
    "write); the daemon does it by itself (emergency.nospace)",
    AlarmType.CORRUPT: "a member's data differs from the others': stop it, restore it from a "
    "healthy member (remove it and add it back with an empty data directory)",
}


def check_alarms(doc: DoctorInput) -> list[Finding]:
    snapshot = doc.after
    if not snapshot.alarms:
        if snapshot.alarms_error:
            return [
                Finding(
                    check="alarms",
                    severity=Severity.INFO,
                    summary=f"alarms not known: {snapshot.alarms_error}",
                )
            ]
        if doc.nospace_incidents:
            return [
                Finding(
                    check="alarms",
                    severity=Severity.WARNING,
                    summary=f"no alarm raised now, but NOSPACE was raised {doc.nospace_incidents} "
                    "time(s) since the agent started: the cluster refused writes then",
                    action="find what fills the database (see quota and compaction) and keep "
                    "it below the quota: raise --quota-backend-bytes, compact, or delete data",
                    evidence={"nospace_incidents": doc.nospace_incidents},
                )
            ]
        return [Finding(check="alarms", severity=Severity.OK, summary="no alarm raised")]
    findings: list[Finding] = []
    for alarm in snapshot.alarms:
        snap = snapshot.by_id(alarm.member_id)
        findings.append(
            Finding(
                check="alarms",
                severity=Severity.CRITICAL,
                member=snap.member.display_name if snap is not None else alarm.member_id_hex,
                summary=f"{alarm.alarm.value} alarm raised"
                + (": the cluster refuses writes" if alarm.alarm is AlarmType.NOSPACE else ""),
                action=_FIX.get(alarm.alarm, ""),
                evidence={"alarm": alarm.alarm.value},
            )
        )
    return findings

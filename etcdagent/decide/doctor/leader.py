"""Leader stability: leader changes, apply lag, slow applies and failed proposals.

Leader changes come from each member's counter (the largest increase any member saw: they all
see the same elections, but a member that was down missed some). Slow applies and failed
proposals are compared between the two snapshots of the same process: since-start totals say
little about now.
"""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.units import format_duration

_LEADER_FIX = (
    "frequent elections mean heartbeats are late: a slow disk (see wal_fsync), CPU starvation "
    "or network latency between members. Keep members in one data center; raise "
    "--heartbeat-interval (default 100 ms) and --election-timeout (default 1000 ms, 10x the "
    "heartbeat) only to match a measured round trip"
)


def check_leader(doc: DoctorInput) -> list[Finding]:
    settings = doc.settings.doctor
    no_leader = [
        s.member.display_name
        for s in doc.after.voting
        if s.metrics is not None and s.metrics.has_leader is False
    ]
    changes = [s.leader_changes for s in doc.signals.values() if s.leader_changes is not None]
    since_start = [
        int(s.metrics.leader_changes)
        for s in doc.after.members
        if s.metrics is not None and s.metrics.leader_changes is not None
    ]
    evidence: dict[str, int | float | str | bool | None] = {
        "leader_changes_in_lookback": max(changes) if changes else None,
        "leader_changes_since_start": max(since_start) if since_start else None,
    }
    if no_leader or doc.after.leader_id is None:
        who = ", ".join(no_leader) or "no member"
        return [
            Finding(
                check="leader_changes",
                severity=Severity.CRITICAL,
                summary=f"no leader ({who} reports none): writes fail",
                action="check that a quorum of members runs and reaches each other "
                "(`etcdagent status`)",
                evidence=evidence,
            )
        ]
    since = f"{max(since_start)} since the members started" if since_start else "none counted"
    if not changes:
        return [
            Finding(
                check="leader_changes",
                severity=Severity.INFO,
                summary=f"leader changes in the lookback not known (one snapshot); {since}",
                evidence=evidence,
            )
        ]
    recent = max(changes)
    severity = Severity.WARNING if recent > settings.max_leader_changes else Severity.OK
    return [
        Finding(
            check="leader_changes",
            severity=severity,
            summary=f"{recent} leader change(s) in the last {format_duration(doc.lookback)}, "
            f"{since}",
            action=_LEADER_FIX if severity is not Severity.OK else "",
            evidence=evidence,
        )
    ]


def check_apply_lag(doc: DoctorInput) -> list[Finding]:
    limit = doc.settings.doctor.max_apply_lag
    findings: list[Finding] = []
    for snap in doc.after.members:
        if snap.status is None:
            continue
        lag = snap.status.apply_lag
        if lag > limit:
            findings.append(
                Finding(
                    check="apply_lag",
                    severity=Severity.WARNING,
                    member=snap.member.display_name,
                    summary=f"{lag} raft entries committed but not applied (more than {limit})",
                    action="the member cannot keep up applying: a slow disk or CPU starvation; "
                    "the agent's cluster_health gate keeps maintenance off meanwhile",
                    evidence={"apply_lag": lag},
                )
            )
    return findings


def _increase(doc: DoctorInput, field: str) -> list[tuple[str, int]]:
    grew: list[tuple[str, int]] = []
    for snap in doc.after.members:
        earlier = doc.earlier(snap)
        now = getattr(snap.metrics, field) if snap.metrics is not None else None
        then = (
            getattr(earlier.metrics, field)
            if earlier is not None and earlier.metrics is not None
            else None
        )
        if now is None or then is None or now < then:  # missing, or a restart in between
            continue
        if (
            snap.metrics is not None
            and earlier is not None
            and earlier.metrics is not None
            and snap.metrics.process_start_time != earlier.metrics.process_start_time
        ):
            continue
        if now > then:
            grew.append((snap.member.display_name, int(now - then)))
    return grew


def check_slow_apply_and_proposals(doc: DoctorInput) -> list[Finding]:
    findings: list[Finding] = []
    for field, check, what, action in (
        (
            "slow_apply",
            "slow_apply",
            "applies slower than 100 ms (etcd logs 'apply request took too long')",
            "a slow disk or CPU starvation, or expensive requests (large ranges): check "
            "wal_fsync and backend_commit, and the clients' requests",
        ),
        (
            "proposals_failed",
            "proposals_failed",
            "failed raft proposals (lost leadership or quorum while writing)",
            "elections or lost quorum while writing: see leader_changes and the members' "
            "connectivity",
        ),
    ):
        for name, increase in _increase(doc, field):
            findings.append(
                Finding(
                    check=check,
                    severity=Severity.WARNING,
                    member=name,
                    summary=f"{increase} {what} in the last {format_duration(doc.lookback)}",
                    action=action,
                    evidence={"increase": increase},
                )
            )
    return findings

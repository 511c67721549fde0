"""Membership and versions: fault tolerance, learners, upgrades in progress, known bugs."""

from __future__ import annotations

from collections import defaultdict

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput


def check_members(doc: DoctorInput) -> list[Finding]:
    snapshot = doc.after
    voting = len(snapshot.voting)
    tolerates = (voting - 1) // 2
    evidence: dict[str, int | float | str | bool | None] = {
        "voting_members": voting,
        "quorum": snapshot.quorum,
        "failures_tolerated": tolerates,
    }
    findings: list[Finding] = []
    if voting == 1:
        findings.append(
            Finding(
                check="member_count",
                severity=Severity.WARNING,
                summary="a single voting member: no fault tolerance, and no member to spare "
                "for a defragmentation",
                action="run 3 (or 5) members",
                evidence=evidence,
            )
        )
    elif voting % 2 == 0:
        findings.append(
            Finding(
                check="member_count",
                severity=Severity.WARNING,
                summary=f"{voting} voting members (an even count): quorum {snapshot.quorum}, "
                f"tolerates {tolerates} failure(s), no more than {voting - 1} members would",
                action=f"run {voting - 1} or {voting + 1} members (an odd count)",
                evidence=evidence,
            )
        )
    else:
        findings.append(
            Finding(
                check="member_count",
                severity=Severity.OK,
                summary=f"{voting} voting members: quorum {snapshot.quorum}, tolerates "
                f"{tolerates} failure(s)",
                evidence=evidence,
            )
        )
    down = [s.member.display_name for s in snapshot.voting if not s.reachable]
    if down:
        lost = voting - len(down) < snapshot.quorum
        findings.append(
            Finding(
                check="members_reachable",
                severity=Severity.CRITICAL if lost else Severity.WARNING,
                summary=f"{', '.join(down)} do(es) not answer"
                + ("; no quorum answers" if lost else ""),
                action="check those members' processes, disks and network "
                "(`etcdagent status` shows each error)",
                evidence={"unreachable": len(down)},
            )
        )
    for snap in snapshot.members:
        if snap.is_learner:
            findings.append(
                Finding(
                    check="learners",
                    severity=Severity.WARNING,
                    member=snap.member.display_name,
                    summary="a learner, not promoted: it does not vote and the agent does "
                    "not defragment it",
                    action=f"`etcdctl member promote {snap.member.id_hex}` once it has caught "
                    "up, or remove it",
                    evidence={"raft_applied_index": snap.status.raft_applied_index}
                    if snap.status
                    else {},
                )
            )
    return findings


def check_versions(doc: DoctorInput) -> list[Finding]:
    by_version: dict[str, list[str]] = defaultdict(list)
    for snap in doc.after.members:
        if snap.status is not None and snap.status.version:
            by_version[snap.status.version].append(snap.member.display_name)
    findings: list[Finding] = []
    if len(by_version) > 1:
        listed = "; ".join(f"{v}: {', '.join(names)}" for v, names in sorted(by_version.items()))
        findings.append(
            Finding(
                check="mixed_versions",
                severity=Severity.WARNING,
                summary=f"members run different versions ({listed}): an upgrade in progress",
                action="finish the upgrade one member at a time; the cluster runs at the "
                "lowest version's features meanwhile",
                evidence={"versions": len(by_version)},
            )
        )
    elif by_version:
        findings.append(
            Finding(
                check="mixed_versions",
                severity=Severity.OK,
                summary=f"every member runs {next(iter(by_version))}",
                evidence={"versions": 1},
            )
        )
    bugs = doc.known_bugs.bugs if doc.known_bugs is not None else ()
    for bug in bugs:
        hit = sorted(v for v in by_version if bug.affects(v))
        if not hit:
            continue
        names = [n for v in hit for n in by_version[v]]
        findings.append(
            Finding(
                check="known_bug",
                severity=Severity(bug.severity),
                summary=f"{', '.join(hit)} ({', '.join(names)}): {bug.summary} "
                f"(fixed in {bug.fixed_in}; {bug.source}, {bug.published})",
                action=bug.action,
                evidence={"bug": bug.id, "fixed_in": bug.fixed_in, "source": bug.source},
            )
        )
    return findings

"""Whether anything compacts: kube-apiserver, etcd's own auto-compaction, or the agent.

Evidence, strongest first: kube-apiserver's compact_rev_key moving (``decide.apiserver``); the
compacted revision (``etcd_debugging_mvcc_compact_revision``) moving between the two snapshots,
which is what any compactor leaves behind (etcd's ``--auto-compaction-*`` cannot be read back
from the server, so that is how it shows). None at all while revisions pile up is critical:
history, and the file, grow until the quota.
"""

from __future__ import annotations

from etcdagent.decide.compaction import compacted_revision, current_revision
from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.units import format_duration

_FIX = (
    "let kube-apiserver compact (--etcd-compaction-interval, default 5m), or set etcd's "
    "--auto-compaction-mode=periodic --auto-compaction-retention=5m, or run the agent "
    "(`etcdagent run` compacts every daemon.compaction_interval with compaction.retain)"
)


def check_compaction(doc: DoctorInput) -> list[Finding]:
    current = current_revision(doc.after)
    if current is None:
        return []
    compacted = compacted_revision(doc.after) or 0
    kept = max(0, current - compacted)
    before_current = current_revision(doc.before) if doc.before is not None else None
    before_compacted = compacted_revision(doc.before) if doc.before is not None else None
    written = None if before_current is None else max(0, current - before_current)
    evidence: dict[str, int | float | str | bool | None] = {
        "current_revision": current,
        "compacted_revision": compacted,
        "revisions_kept": kept,
        "revisions_written_in_lookback": written,
        "apiserver_compacting": doc.apiserver.apiserver_compacts if doc.apiserver else None,
        "compact_rev_key_value": doc.apiserver.key.value
        if doc.apiserver is not None and doc.apiserver.key is not None
        else None,
    }
    numbers = f"compacted to revision {compacted}, current {current} ({kept} revisions kept)"

    def finding(severity: Severity, text: str, action: str = "") -> list[Finding]:
        return [
            Finding(
                check="compaction",
                severity=severity,
                summary=text,
                action=action,
                evidence=evidence,
            )
        ]

    if doc.apiserver is not None and doc.apiserver.apiserver_compacts:
        return finding(Severity.OK, f"{doc.apiserver.describe()}; {numbers}")
    if before_compacted is not None and compacted > before_compacted:
        return finding(
            Severity.OK,
            f"the compacted revision moved from {before_compacted} to {compacted} in the last "
            f"{format_duration(doc.lookback)} (etcd's --auto-compaction or the agent); {numbers}",
        )
    who = doc.apiserver.describe() if doc.apiserver is not None else "compact_rev_key not read"
    if doc.agent_compacts:
        return finding(
            Severity.INFO,
            f"nothing compacted in the last {format_duration(doc.lookback)}, but this agent "
            f"compacts on its cadence (daemon.compaction_interval, with compaction.retain); "
            f"{numbers}",
        )
    if written:
        return finding(
            Severity.CRITICAL,
            f"nothing compacts: {written} revisions written in the last "
            f"{format_duration(doc.lookback)} and the compacted revision did not move; {who}; "
            f"{numbers}",
            _FIX,
        )
    if kept >= doc.settings.doctor.max_uncompacted_revisions:
        return finding(
            Severity.WARNING,
            f"no compaction seen and {kept} revisions kept (more than "
            f"{doc.settings.doctor.max_uncompacted_revisions}); {who}; {numbers}",
            _FIX,
        )
    if written is None:
        return finding(
            Severity.INFO,
            f"not enough data: one snapshot, so whether anything compacts is not known; {numbers}",
        )
    return finding(
        Severity.INFO,
        f"idle: nothing written or compacted in the last {format_duration(doc.lookback)}; {who}; "
        f"{numbers}",
    )

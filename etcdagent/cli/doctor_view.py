"""How `etcdagent doctor` shows its findings: a table for people, a stable JSON for scripts."""

from __future__ import annotations

from typing import Any

from etcdagent.decide.doctor.finding import Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.doctor.run import DoctorReport

SCHEMA_VERSION = 1


def render_text(report: DoctorReport, doc: DoctorInput, *, show_ok: bool = True) -> str:
    rows = [f for f in report.findings if show_ok or f.severity is not Severity.OK]
    head = ("SEVERITY", "CHECK", "MEMBER", "EVIDENCE")
    table = [(f.severity.value, f.check, f.member or "-", f.summary) for f in rows]
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(3)]
    lines = []
    for i, row in enumerate([head, *table]):
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )
        finding = rows[i - 1] if i else None
        if finding is not None and finding.action and finding.severity is not Severity.OK:
            lines.append(" " * (sum(widths) + 6) + f"-> {finding.action}")
    counts = report.counts()
    lines.append("")
    lines.append(
        f"cluster {doc.after.cluster_id:x}: {report.worst.value} "
        f"({counts['critical']} critical, {counts['warning']} warning, {counts['info']} info, "
        f"{counts['ok']} ok)"
    )
    return "\n".join(lines)


def report_json(report: DoctorReport, doc: DoctorInput) -> dict[str, Any]:
    bugs = doc.known_bugs
    return {
        "schema_version": SCHEMA_VERSION,
        "cluster_id": f"{doc.after.cluster_id:x}",
        "taken_at": doc.after.taken_at.isoformat(),
        "first_snapshot_at": doc.before.taken_at.isoformat() if doc.before else None,
        "lookback_seconds": doc.lookback,
        "worst": report.worst.value,
        "exit_code": report.exit_code,
        "counts": report.counts(),
        "known_bugs_reviewed": bugs.reviewed if bugs is not None else None,
        "findings": [
            {
                "check": f.check,
                "severity": f.severity.value,
                "member": f.member,
                "summary": f.summary,
                "action": f.action or None,
                "evidence": f.evidence,
            }
            for f in report.findings
        ],
    }

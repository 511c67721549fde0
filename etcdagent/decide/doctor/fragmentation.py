"""Free pages inside each member's file, and whether and when the agent would defragment it."""

from __future__ import annotations

from etcdagent.decide.defrag import defrag_worth
from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.windows import window_state


def _when(doc: DoctorInput) -> str:
    windows = doc.settings.windows
    if not windows:
        return (
            "no maintenance window is configured, so the daemon defragments it only under quota "
            "pressure: configure `windows`, or run `etcdagent defrag` (followers first, the "
            "leader last)"
        )
    state = window_state(windows, doc.now)
    if state.open:
        return "a maintenance window is open: the daemon defragments it now if the gates are open"
    when = state.next_start.isoformat() if state.next_start is not None else "the next window"
    return f"the daemon defragments it in the next maintenance window, at {when}"


def check_fragmentation(doc: DoctorInput) -> list[Finding]:
    """A warning where the agent's own rules (``defrag.*`` settings) say a defrag is worth it."""
    findings: list[Finding] = []
    for snap in doc.after.members:
        if snap.status is None or snap.is_learner:
            continue
        worth, text = defrag_worth(snap, doc.settings.defrag)
        findings.append(
            Finding(
                check="fragmentation",
                severity=Severity.WARNING if worth else Severity.OK,
                member=snap.member.display_name,
                summary=text,
                action=_when(doc) if worth else "",
                evidence={
                    "db_size": snap.db_size,
                    "db_size_in_use": snap.db_size_in_use,
                    "reclaimable": snap.free,
                    "fragmentation": round(snap.fragmentation or 0.0, 4),
                    "agent_would_defragment": worth,
                },
            )
        )
    return findings

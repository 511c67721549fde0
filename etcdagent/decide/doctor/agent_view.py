"""The agent's own view: its windows, and the gates and budget that hold maintenance back now."""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.triggers import evaluate_gates
from etcdagent.decide.windows import describe, window_state


def check_agent(doc: DoctorInput) -> list[Finding]:
    findings: list[Finding] = []
    windows = doc.settings.windows
    if windows:
        findings.append(
            Finding(
                check="windows",
                severity=Severity.OK,
                summary=f"{len(windows)} maintenance window(s): "
                f"{describe(window_state(windows, doc.now))}",
            )
        )
    else:
        findings.append(
            Finding(
                check="windows",
                severity=Severity.INFO,
                summary="no maintenance window configured: the daemon does planned "
                "defragmentation in none (emergencies still act; a `run --once` CronJob's "
                "schedule is its window)",
                action="set `windows`, e.g. [{schedule: '0 3 * * *', duration: 1h, timezone: UTC}]",
            )
        )
    if doc.before is None:
        return findings  # the latency and traffic gates need two samples
    gates = evaluate_gates(doc.after, doc.signals, doc.settings, doc.cluster_request_rate)
    for gate, reason in gates.items():
        if reason is None:
            continue
        budget = gate == "defrag_budget"
        findings.append(
            Finding(
                check="defrag_budget" if budget else "gates",
                severity=Severity.WARNING if budget else Severity.INFO,
                summary=f"gate {gate} blocks maintenance now: {reason}",
                action="the member's defrag would outlast defrag.budget (kubeadm's liveness "
                "probe restarts etcd after ~80 s): defragment it offline (`etcdutl defrag`) or "
                "raise the budget"
                if budget
                else "",
                evidence={"gate": gate},
            )
        )
    return findings

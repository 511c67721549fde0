"""The agent's own view: its windows, the gates and budget that hold maintenance back now, and
(in the daemon) a gate that blocked every window it saw for days."""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.triggers import evaluate_gates
from etcdagent.decide.windows import describe, window_state
from etcdagent.units import format_duration

_NOT_A_WINDOW_GATE = "defrag_budget"  # holds one member back, not the window: its own finding


def check_blocked_windows(doc: DoctorInput) -> list[Finding]:
    """A gate that blocked maintenance in every cycle of every window the daemon saw over
    ``doctor.blocked_windows_period``: planned defragmentation has not run for that long."""
    settings = doc.settings.doctor
    period = settings.blocked_windows_period
    recent = [w for w in doc.windows_seen if (doc.now - w.opened_at).total_seconds() <= period]
    if len(recent) < settings.blocked_windows_min:
        return []
    common = frozenset.intersection(*(w.blocked_throughout for w in recent))
    gates = sorted(common - {_NOT_A_WINDOW_GATE})
    if not gates:
        return []
    first = min(w.opened_at for w in recent)
    return [
        Finding(
            check="blocked_windows",
            severity=Severity.WARNING,
            summary=f"gate {', '.join(gates)} blocked every maintenance window of the last "
            f"{format_duration(period)} ({len(recent)} windows since "
            f"{first.strftime('%Y-%m-%d %H:%M %Z')}): no planned defragmentation ran",
            action="look at what the gate measures (latency, leader changes, traffic: "
            "`etcdagent status`, the dashboard) or its threshold (gates.*); emergencies "
            "(quota pressure, NOSPACE) still act",
            evidence={"gates": ",".join(gates), "windows": len(recent)},
        )
    ]


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

"""What the keys are: Kubernetes events and leases in the main etcd.

The tuning guide: "Separating event storage from main etcd can improve performance by isolating
high-volume event writes from critical API operations" (``--etcd-servers-overrides``).
"""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput

_EVENTS_FIX = (
    "move events to their own etcd: kube-apiserver --etcd-servers-overrides=/events#"
    "https://events-etcd:2379 (the tuning guide), or shorten --event-ttl (default 1h)"
)
_LEASES_FIX = (
    "leases are node heartbeats and leader elections (one per node and per elected "
    "component): check for controllers creating leases they never delete"
)


def check_keyspace(doc: DoctorInput) -> list[Finding]:
    counts = doc.key_counts
    if counts is None:
        why = doc.key_counts_error or "not counted yet"
        return [
            Finding(
                check="events_share",
                severity=Severity.INFO,
                summary=f"keys not counted: {why}",
                action="the count-only ranges need read access to /registry/ (with auth on)",
            )
        ]
    settings = doc.settings.doctor
    findings: list[Finding] = []
    for check, count, prefix, limit, fix in (
        (
            "events_share",
            counts.events,
            "/registry/events/",
            settings.events_share_warning,
            _EVENTS_FIX,
        ),
        (
            "leases_share",
            counts.leases,
            "/registry/leases/",
            settings.leases_share_warning,
            _LEASES_FIX,
        ),
    ):
        share = count / counts.total if counts.total else 0.0
        evidence: dict[str, int | float | str | bool | None] = {
            "keys": count,
            "total_keys": counts.total,
            "share": round(share, 4),
        }
        text = f"{count} of {counts.total} keys ({share:.0%}) under {prefix}"
        if counts.total < settings.min_keys_for_share:
            findings.append(
                Finding(
                    check=check,
                    severity=Severity.OK,
                    summary=text + f" (fewer than {settings.min_keys_for_share} keys: not judged)",
                    evidence=evidence,
                )
            )
            continue
        dominant = share >= limit
        findings.append(
            Finding(
                check=check,
                severity=Severity.WARNING if dominant else Severity.OK,
                summary=text,
                action=fix if dominant else "",
                evidence=evidence,
            )
        )
    return findings

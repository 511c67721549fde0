"""Peer round trips: etcd_network_peer_round_trip_time_seconds p99 per pair of members.

etcd's tuning guide sets --heartbeat-interval near the members' round trip and
--election-timeout at least ten times it (defaults 100 ms and 1000 ms). A round trip above the
heartbeat makes heartbeats late; one near half the election timeout makes elections likely. etcd
probes each peer every few seconds, so a 5m lookback holds about a hundred samples per pair.
"""

from __future__ import annotations

from etcdagent.decide.doctor.finding import Evidence, Finding, Severity
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.models import Histogram
from etcdagent.observe.signals import histogram_quantile
from etcdagent.units import format_duration

_FIX = (
    "keep the members in one data center or region (round trips of a few ms), off congested "
    "or shared links; if the round trip really is this long, raise --heartbeat-interval to "
    "about it and --election-timeout to at least 10x it, on every member"
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else format_duration(seconds)


def check_peer_round_trip(doc: DoctorInput) -> list[Finding]:
    """One finding per member with peers: the worst pair decides, every pair is in the evidence."""
    settings = doc.settings.doctor
    names = {f"{s.member.id:x}": s.member.display_name for s in doc.after.members}
    findings: list[Finding] = []
    for snap in doc.after.members:
        if snap.metrics is None or len(doc.after.members) < 2:
            continue
        if not snap.metrics.peer_round_trip:
            findings.append(
                Finding(
                    check="peer_round_trip",
                    severity=Severity.INFO,
                    member=snap.member.display_name,
                    summary="no round trip to a peer measured yet (etcd probes its peers every "
                    "few seconds; a member that just started has none)",
                )
            )
            continue
        earlier = doc.earlier(snap)
        before: dict[str, Histogram] = (
            dict(earlier.metrics.peer_round_trip or ()) if earlier and earlier.metrics else {}
        )
        if not before:
            # Not since the member started: the probes of its first seconds (peers still
            # starting) are no measure of the network.
            findings.append(
                Finding(
                    check="peer_round_trip",
                    severity=Severity.INFO,
                    member=snap.member.display_name,
                    summary="round trips not judged yet: they need two scrapes a lookback apart",
                )
            )
            continue
        window = f"the last {format_duration(doc.lookback)}"
        pairs: list[tuple[float, str]] = []
        evidence: Evidence = {}
        for peer, histogram in snap.metrics.peer_round_trip:
            older = before.get(peer)
            p99 = histogram_quantile(0.99, older, histogram) if older is not None else None
            name = names.get(peer, peer)
            evidence[f"p99_seconds_to_{name}"] = p99
            if p99 is not None:
                pairs.append((p99, name))
        if not pairs:
            findings.append(
                Finding(
                    check="peer_round_trip",
                    severity=Severity.INFO,
                    member=snap.member.display_name,
                    summary=f"no round trip to a peer measured in {window}",
                    evidence=evidence,
                )
            )
            continue
        worst, to = max(pairs)
        severity = Severity.OK
        if worst > settings.peer_round_trip_p99_critical:
            severity = Severity.CRITICAL
        elif worst > settings.peer_round_trip_p99_warning:
            severity = Severity.WARNING
        listed = ", ".join(f"{name} {_ms(p99)}" for p99, name in sorted(pairs, reverse=True))
        evidence["warning_seconds"] = settings.peer_round_trip_p99_warning
        evidence["critical_seconds"] = settings.peer_round_trip_p99_critical
        findings.append(
            Finding(
                check="peer_round_trip",
                severity=severity,
                member=snap.member.display_name,
                summary=f"round-trip p99 over {window}: {listed} (slowest to {to}; heartbeat "
                f"guidance < {_ms(settings.peer_round_trip_p99_warning)})",
                action=_FIX if severity is not Severity.OK else "",
                evidence=evidence,
            )
        )
    return findings

"""Every check, in the order the report lists them, and the report they make together."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.doctor.agent_view import check_agent, check_blocked_windows
from etcdagent.decide.doctor.alarms import check_alarms
from etcdagent.decide.doctor.compaction import check_compaction
from etcdagent.decide.doctor.disk import check_disk_latency
from etcdagent.decide.doctor.finding import Finding, Severity, worst
from etcdagent.decide.doctor.fragmentation import check_fragmentation
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.doctor.keyspace import check_keyspace
from etcdagent.decide.doctor.leader import (
    check_apply_lag,
    check_leader,
    check_slow_apply_and_proposals,
)
from etcdagent.decide.doctor.membership import check_members, check_versions
from etcdagent.decide.doctor.network import check_peer_round_trip
from etcdagent.decide.doctor.quota import check_quota, check_quota_size

Check = Callable[[DoctorInput], list[Finding]]

CHECKS: tuple[Check, ...] = (
    check_alarms,
    check_quota,
    check_quota_size,
    check_fragmentation,
    check_compaction,
    check_disk_latency,
    check_leader,
    check_peer_round_trip,
    check_apply_lag,
    check_slow_apply_and_proposals,
    check_members,
    check_versions,
    check_keyspace,
    check_agent,
    check_blocked_windows,
)


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Severity:
        return worst(list(self.findings))

    @property
    def exit_code(self) -> int:
        """0 when nothing is above info, 1 with a warning or worse."""
        return 1 if self.worst.rank >= Severity.WARNING.rank else 0

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for f in self.findings if f.severity is s) for s in Severity}


def run_checks(doc: DoctorInput, checks: tuple[Check, ...] = CHECKS) -> DoctorReport:
    """Every finding, worst first; within a severity in the order of ``checks``."""
    found = [f for check in checks for f in check(doc)]
    ordered = sorted(enumerate(found), key=lambda item: (-item[1].severity.rank, item[0]))
    return DoctorReport(findings=tuple(f for _, f in ordered))

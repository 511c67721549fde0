"""etcdagent_doctor_finding{check,severity}: 1 while a finding is present, gone once it is not."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from etcdagent.agent.metrics import AgentMetrics
from etcdagent.decide.doctor.finding import Finding, Severity


def _value(registry: CollectorRegistry, check: str, severity: str) -> float | None:
    return registry.get_sample_value(
        "etcdagent_doctor_finding", {"check": check, "severity": severity}
    )


def test_findings_come_and_go() -> None:
    metrics = AgentMetrics(CollectorRegistry())
    registry = metrics.registry
    frag = Finding(check="fragmentation", severity=Severity.WARNING, summary="x", member="m1")
    frag2 = frag.model_copy(update={"member": "m2"})
    ok = Finding(check="alarms", severity=Severity.OK, summary="none")
    metrics.doctor.set_findings([frag, frag2, ok])
    assert _value(registry, "fragmentation", "warning") == 1
    assert _value(registry, "alarms", "ok") == 1
    calm = frag.model_copy(update={"severity": Severity.OK})
    metrics.doctor.set_findings([calm, ok])
    assert _value(registry, "fragmentation", "warning") is None
    assert _value(registry, "fragmentation", "ok") == 1

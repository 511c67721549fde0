"""A finding: one check's verdict on the cluster or one member, with the numbers and the fix."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.OK: 0, Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}

Evidence = dict[str, int | float | str | bool | None]


class Finding(BaseModel):
    """``check`` is a stable name (a metric label); ``member`` None: the whole cluster."""

    model_config = ConfigDict(frozen=True)

    check: str
    severity: Severity
    summary: str  # the evidence in words and numbers
    action: str = ""  # the flag or setting to change, or the agent feature that handles it
    member: str | None = None
    evidence: Evidence = Field(default_factory=dict)


def worst(findings: list[Finding]) -> Severity:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.OK)


def at_least(severity: Severity, floor: Severity) -> bool:
    return severity.rank >= floor.rank

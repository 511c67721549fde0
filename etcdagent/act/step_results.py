"""What running a step gives back: its status and numbers, and the listener told as it happens.

Kept apart from the step runners so that the report types, the metrics and the views can name a
step's outcome without importing the code that changes etcd.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_serializer

from etcdagent.decide.plan import Step


class StepStatus(StrEnum):
    DONE = "done"
    ALREADY_DONE = "already-done"
    SKIPPED = "skipped"
    REFUSED = "refused"
    FAILED = "failed"
    NOT_STARTED = "not-started"


class ConsistencyResult(StrEnum):
    """How the HashKV comparison after a defrag ended."""

    MATCH = "match"  # same hash as the peer at the same revision and compacted revision
    MISMATCH = "mismatch"  # different hashes where they must agree: the step fails
    UNAVAILABLE = "unavailable"  # the member's etcd has no HashKV on its gateway (< 3.5.10)
    SKIPPED = "skipped"  # could not compare this time (no peer, an error, compaction in flight)


class ConsistencyCheck(BaseModel):
    """The comparison of a defragmented member's HashKV with a peer's at one revision."""

    model_config = ConfigDict(frozen=True)

    result: ConsistencyResult
    message: str
    peer_id: int | None = None
    peer_name: str | None = None
    revision: int | None = None  # the revision both hashed
    compact_revision: int | None = None  # the compaction both had applied (-1: none)
    hash: int | None = None  # the defragmented member's
    peer_hash: int | None = None

    @field_serializer("peer_id")
    def _hex(self, value: int | None) -> str | None:
        return None if value is None else f"{value:x}"


class StepResult(BaseModel):
    """What happened to one step: the numbers an operator checks afterwards."""

    model_config = ConfigDict(frozen=True)

    step: Step
    status: StepStatus
    started_at: datetime | None = None
    duration: float | None = None
    db_size_before: int | None = None
    db_size_after: int | None = None
    db_size_in_use_after: int | None = None
    reclaimed: int | None = None
    message: str = ""
    warning: str | None = None
    consistency: ConsistencyCheck | None = None  # defrag: the HashKV comparison after it

    @property
    def ok(self) -> bool:
        return self.status in (StepStatus.DONE, StepStatus.ALREADY_DONE, StepStatus.SKIPPED)


class StepListener:
    """Told about each step as it runs (the human output prints it live)."""

    def started(self, step: Step) -> None:  # pragma: no cover - default does nothing
        """A step begins."""

    def finished(self, result: StepResult) -> None:  # pragma: no cover
        """A step ended, whatever the outcome."""

    def note(self, text: str) -> None:  # pragma: no cover
        """Something worth telling between steps."""

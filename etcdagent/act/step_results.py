"""What running a step gives back: its status and numbers, and the listener told as it happens.

Kept apart from the step runners so that the report types, the metrics and the views can name a
step's outcome without importing the code that changes etcd.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.plan import Step


class StepStatus(StrEnum):
    DONE = "done"
    ALREADY_DONE = "already-done"
    SKIPPED = "skipped"
    REFUSED = "refused"
    FAILED = "failed"
    NOT_STARTED = "not-started"


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

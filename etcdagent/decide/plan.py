"""A maintenance plan: ordered steps, each with its reason, and the members left out with theirs.

Plans are data. The ``decide`` package makes them from a snapshot without touching etcd; the
executor (``act``) carries them out; ``--dry-run`` prints them and stops. Because the same object
flows through all three, what a dry run shows is what a real run does.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_serializer

from etcdagent.models import Alarm


class StepKind(StrEnum):
    COMPACT = "compact"
    DEFRAG = "defrag"
    MOVE_LEADER = "move-leader"
    DISARM = "disarm"
    PROBE_WRITE = "probe-write"


class Step(BaseModel):
    """One change to etcd, and why."""

    model_config = ConfigDict(frozen=True)

    kind: StepKind
    reason: str
    member_id: int | None = None
    member_name: str | None = None
    endpoint: str | None = None
    revision: int | None = None  # compact: the target revision
    cas_version: int | None = None  # compact: move compact_rev_key from this version first
    target_id: int | None = None  # move-leader: the new leader
    target_name: str | None = None
    timeout: float | None = None  # defrag: scaled with the file size
    db_size: int | None = None  # defrag: size when planned
    reclaimable: int | None = None  # defrag: file minus in use when planned
    alarm: Alarm | None = None  # disarm
    no_spare_ok: bool = False  # defrag: allowed to block a cluster with no member to spare
    check_peer_id: int | None = None  # defrag: whose HashKV this member's is compared with after
    check_peer_name: str | None = None

    @field_serializer("member_id", "target_id", "check_peer_id")
    def _hex(self, value: int | None) -> str | None:
        """IDs in hex, as etcdctl and `etcdagent status` show them."""
        return None if value is None else f"{value:x}"

    @property
    def member_label(self) -> str:
        if self.member_name:
            return self.member_name
        return f"{self.member_id:x}" if self.member_id is not None else "cluster"


class Skip(BaseModel):
    """A member the plan leaves alone, and why."""

    model_config = ConfigDict(frozen=True)

    member_id: int
    member_name: str
    reason: str

    @field_serializer("member_id")
    def _hex(self, value: int) -> str:
        return f"{value:x}"


class Plan(BaseModel):
    """What one command will do.

    ``refusal`` set means nothing will be done, for the reason it gives (exit 1). An empty plan
    without refusal means there is nothing to do (exit 0).
    """

    model_config = ConfigDict(frozen=True)

    command: str
    steps: tuple[Step, ...] = ()
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = ()
    refusal: str | None = None

    @property
    def nothing_to_do(self) -> bool:
        return self.refusal is None and not self.steps

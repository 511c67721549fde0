"""How many keys the cluster holds, under /registry/events/, /registry/leases/ and in all.

The model only (decide reads it); ``key_counts_read`` counts them on a member.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

EVENTS_PREFIX = b"/registry/events/"
LEASES_PREFIX = b"/registry/leases/"


class KeyCounts(BaseModel):
    """One reading of the counts (each from its own range, so they can differ by a few writes)."""

    model_config = ConfigDict(frozen=True)

    total: int
    events: int
    leases: int
    revision: int = 0  # store revision of the total's answer

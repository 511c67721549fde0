"""Whether kube-apiserver compacts this cluster, judged from its key ``compact_rev_key``.

The key's protocol (``observe.compact_rev_key``) works like a lease: whoever moves the key is the
compactor for the next interval, and an apiserver whose transaction lost learns the new version
and tries again one interval later. The agent follows the same rule. In ``auto`` mode it compacts
only once the key has been quiet (moved by nobody, the agent included) for two of the apiservers'
intervals, which is what their own failover allows (">5m and <10m" between compactions). An
apiserver that comes back then wins its second attempt, one interval after its first lost, and
the agent sees the key move again and stands back; the agent, moving the key at most once per two
intervals, can never keep an apiserver losing.

How long the key has been quiet is a lower bound, never a guess upward, from two witnesses:

* a retention marker with a revision above the key's mod revision was written after the key's
  last move, so the key is at least as old as that marker (``Marker.age`` never exceeds the truth);
* the daemon's own record: it has seen the key unchanged for so long by its monotonic clock.

Without either, the key counts as moving: nothing is compacted under an apiserver that may be
alive. Pure: the key, markers, the daemon's record and the settings are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from etcdagent.decide.compaction import Marker, in_revision_order
from etcdagent.observe.compact_rev_key import CompactRevKey
from etcdagent.settings import CompactionSettings
from etcdagent.units import format_duration


class KeyWitness(BaseModel):
    """What the daemon itself saw of the key (a one-shot command has none)."""

    model_config = ConfigDict(frozen=True)

    quiet_for: float  # seconds it has seen the key in its current state
    version: int = 0  # that state: a key read later in another state gets no witness
    mod_revision: int = 0
    interval: float | None = None  # the apiservers' interval, measured from the moves it saw
    moves_seen: int = 0  # moves by an apiserver it saw happen


class ApiserverCompaction(BaseModel):
    """The judgement, with what it rests on (for the plan, `status` and the metrics)."""

    model_config = ConfigDict(frozen=True)

    key: CompactRevKey | None  # None: could not be read
    error: str | None = None
    configured_interval: float  # compaction.apiserver_interval
    measured_interval: float | None = None  # from the moves the daemon saw
    quiet_for: float | None = None  # the key is at least this old (None: no witness)

    @property
    def interval(self) -> float:
        """The longer of the two: a longer interval only waits longer before taking over."""
        return max(self.configured_interval, self.measured_interval or 0.0)

    @property
    def horizon(self) -> float:
        """Quiet this long means no apiserver compacts (their failover takes under two)."""
        return 2 * self.interval

    @property
    def quiet(self) -> bool:
        """Nobody has moved the key for two intervals: the agent may take over."""
        return self.quiet_for is not None and self.quiet_for >= self.horizon

    @property
    def present(self) -> bool:
        return self.key is not None and self.key.exists

    @property
    def apiserver_compacts(self) -> bool:
        """An apiserver moved the key last and may still be compacting."""
        return self.present and self.key is not None and not self.key.by_agent and not self.quiet

    @property
    def leaves_compaction(self) -> bool:
        """``auto`` leaves compaction alone: the key moved within two intervals (or unknown)."""
        return self.key is None or (self.present and not self.quiet)

    def describe(self) -> str:
        """One line for `status` and the plan: who compacts, how often, to what, how long ago."""
        if self.key is None:
            return f"compact_rev_key not readable ({self.error})"
        key = self.key
        if not key.exists:
            return "no kube-apiserver compaction (no compact_rev_key)"
        every = (
            f"~{format_duration(self.measured_interval)}"
            if self.measured_interval is not None
            else format_duration(self.configured_interval)
        )
        to = f"revision {key.value}" if key.value is not None else "an unknown revision"
        age = (
            f"at least {format_duration(self.quiet_for)} ago"
            if self.quiet_for is not None
            else f"at revision {key.mod_revision} (how long ago is not known yet)"
        )
        who = "etcdagent" if key.by_agent else "kube-apiserver"
        if self.quiet:
            return (
                f"compact_rev_key quiet: last moved by {who} to {to}, {age} "
                f"(at least twice the {every} interval): no kube-apiserver compacts"
            )
        if key.by_agent:
            return f"etcdagent compacted last, to {to}, {age} (kube-apiserver's protocol)"
        return f"kube-apiserver compacts every {every}, last to {to}, {age}"


def quiet_by_markers(markers: Sequence[Marker], mod_revision: int) -> float | None:
    """How old the key is at least: the oldest marker written after its last move."""
    after = [m.age for m in in_revision_order(markers) if m.revision > mod_revision]
    return max(after) if after else None


def judge_apiserver(
    key: CompactRevKey | None,
    settings: CompactionSettings,
    markers: Sequence[Marker] = (),
    witness: KeyWitness | None = None,
    *,
    error: str | None = None,
) -> ApiserverCompaction:
    """The judgement on one read of the key (None, with ``error``: the read failed)."""
    measured = witness.interval if witness is not None else None
    if key is None:
        return ApiserverCompaction(
            key=None,
            error=error,
            configured_interval=settings.apiserver_interval,
            measured_interval=measured,
        )
    bounds = [quiet_by_markers(markers, key.mod_revision)]
    if witness is not None and (witness.version, witness.mod_revision) == (
        key.version,
        key.mod_revision,
    ):
        bounds.append(witness.quiet_for)
    known = [b for b in bounds if b is not None]
    return ApiserverCompaction(
        key=key,
        configured_interval=settings.apiserver_interval,
        measured_interval=measured,
        quiet_for=max(known) if known else None,
    )

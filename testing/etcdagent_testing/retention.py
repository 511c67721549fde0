"""Judge time retention from etcd itself: what was compacted when, against when it was written.

* :class:`RevisionRecorder` puts a key at a steady rate and records, per write, the test's
  ``time.monotonic()`` just before sending it and the revision etcd answered;
* :func:`compactions` reads etcd's own "compact tree index" log lines (every member logs one per
  compaction it applies, with etcd's timestamp and the revision);
* :func:`too_young` lists every write a compaction dropped (revision below the compaction's)
  although it was sent less than ``retain`` before the first member applied that compaction.

The test process's clock is never faked; etcd's log timestamps are wall-clock, so each write's
monotonic time is mapped to wall time with one offset taken when the recorder starts (etcd and
the test run on the same host clock). Sending time is the earliest a write can have happened,
so only a certain violation is reported.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from etcdagent_testing.cluster import EtcdCluster

__all__ = ["Compaction", "RevisionRecorder", "Write", "compactions", "too_young"]


@dataclass(frozen=True)
class Write:
    sent: float  # time.monotonic() just before the request
    revision: int


@dataclass(frozen=True)
class Compaction:
    applied: datetime  # the earliest member's log timestamp
    revision: int


class RevisionRecorder:
    """Puts ``key`` every ``period`` seconds from a thread, recording each acknowledged write."""

    def __init__(self, cluster: EtcdCluster, key: str = "/retention/writer", period: float = 0.1):
        self.cluster = cluster
        self.key = key
        self.period = period
        self.writes: list[Write] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="revision-recorder", daemon=True)
        self.wall_offset = time.time() - time.monotonic()

    def __enter__(self) -> RevisionRecorder:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            member = self.cluster.members[turn % len(self.cluster.members)]
            turn += 1
            sent = time.monotonic()
            try:
                revision = self.cluster.put(self.key, f"write {turn}", member=member)
            except Exception as exc:  # a member being restarted: the next one answers
                self.errors.append(f"{member.name}: {exc}")
            else:
                self.writes.append(Write(sent, revision))
            self._stop.wait(self.period)

    def sent_at(self, write: Write) -> float:
        """The write's sending time as a Unix timestamp (for etcd's log timestamps)."""
        return write.sent + self.wall_offset


def compactions(cluster: EtcdCluster) -> list[Compaction]:
    """Every compaction any member applied, by revision, at the earliest member's timestamp."""
    first: dict[int, datetime] = {}
    for member in cluster.members:
        for line in member.log_lines():
            if line.get("msg") != "compact tree index":
                continue
            raw_ts, raw_rev = line.get("ts"), line.get("revision")
            if not isinstance(raw_ts, str) or not isinstance(raw_rev, int | str):
                continue
            when = datetime.fromisoformat(raw_ts.replace("Z", "+00:00"))
            revision = int(raw_rev)
            if revision not in first or when < first[revision]:
                first[revision] = when
    return [Compaction(when, rev) for rev, when in sorted(first.items())]


def too_young(
    recorder: RevisionRecorder, found: list[Compaction], retain: float
) -> list[tuple[Compaction, Write, float]]:
    """(compaction, write, seconds between sending the write and the compaction) for every write
    a compaction dropped although it was sent less than ``retain`` before."""
    bad: list[tuple[Compaction, Write, float]] = []
    for compaction in found:
        applied = compaction.applied.timestamp()
        for write in recorder.writes:
            if write.revision >= compaction.revision:
                continue
            age = applied - recorder.sent_at(write)
            if age < retain:
                bad.append((compaction, write, age))
    return bad

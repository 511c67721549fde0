"""The daemon's own record of kube-apiserver's compact_rev_key: when it last changed, how often.

Each cycle the daemon reads the key; a change of version or mod revision is a move. Its time is
when the daemon first saw it, by the monotonic clock: later than the move itself, so the key's
quiet time (``KeyWitness.quiet_for``) is, if anything, too short, and too short only delays the
agent's compaction. A key seen unchanged since the daemon started counts as quiet since then.
The interval between two moves by an apiserver that the daemon saw happen measures the
apiservers' ``--etcd-compaction-interval`` (to within a cycle).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections import deque
from collections.abc import Callable

from etcdagent.decide.apiserver import KeyWitness
from etcdagent.observe.compact_rev_key import CompactRevKey

MOVES_KEPT = 6


class CompactRevKeyLog:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._state: tuple[int, int] | None = None
        self._since: float | None = None
        self._moves: deque[float] = deque(maxlen=MOVES_KEPT)  # apiserver moves seen happen

    def record(self, key: CompactRevKey) -> None:
        now = self._monotonic()
        state = (key.version, key.mod_revision)
        if state == self._state:
            return
        if self._state is not None and key.exists and not key.by_agent:
            self._moves.append(now)
        elif self._state is not None:
            # Deleted, or moved by the agent (no apiserver compacted): a gap measured across
            # it would be the apiservers' absence, not their interval.
            self._moves.clear()
        self._state, self._since = state, now

    def witness(self) -> KeyWitness | None:
        """None before the first read."""
        if self._since is None:
            return None
        moves = list(self._moves)
        gaps = [b - a for a, b in itertools.pairwise(moves)]
        assert self._state is not None
        return KeyWitness(
            quiet_for=self._monotonic() - self._since,
            version=self._state[0],
            mod_revision=self._state[1],
            interval=statistics.median(gaps) if gaps else None,
            moves_seen=len(moves),
        )

"""The daemon's record of compact_rev_key: quiet time and the apiservers' measured interval."""

from __future__ import annotations

from etcdagent.agent.compact_rev_key_log import CompactRevKeyLog
from etcdagent.observe.compact_rev_key import CompactRevKey


class Mono:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(version: int, mod: int, *, ours: bool = False) -> CompactRevKey:
    return CompactRevKey(
        revision=mod, version=version, mod_revision=mod, agent_revision=mod if ours else 0
    )


def test_the_daemon_measures_the_interval_from_the_moves_it_saw_happen() -> None:
    mono = Mono()
    log = CompactRevKeyLog(mono)
    assert log.witness() is None
    log.record(key(3, 100))  # seen at start: quiet since then, not a move it saw
    mono.now += 40
    witness = log.witness()
    assert witness is not None and witness.quiet_for == 40 and witness.interval is None
    for version in (4, 5, 6):
        mono.now += 300
        log.record(key(version, version * 100))
    mono.now += 30
    witness = log.witness()
    assert witness is not None
    assert witness.quiet_for == 30 and witness.interval == 300 and witness.moves_seen == 3


def test_a_gap_across_the_agents_own_move_is_not_the_apiservers_interval() -> None:
    mono = Mono()
    log = CompactRevKeyLog(mono)
    log.record(key(1, 10))
    for version in (2, 3):
        mono.now += 300
        log.record(key(version, version * 10))
    mono.now += 1200
    log.record(key(4, 40, ours=True))
    mono.now += 600
    log.record(key(5, 50))
    witness = log.witness()
    assert witness is not None and witness.interval is None and witness.quiet_for == 0

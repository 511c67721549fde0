"""What `etcdagent doctor` observes: two snapshots a lookback apart, and what goes with them.

The same reads as `run --once` and `status` (snapshots, the signals between them, kube-apiserver's
compact_rev_key with the retention markers, read-only) plus the three count-only key ranges. The
clock and the sleep are injected, so a test does not wait for a real lookback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from etcdagent.cli.compaction_status import observe_compaction
from etcdagent.clock import utcnow
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.errors import EtcdError
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.key_counts import KeyCounts
from etcdagent.observe.key_counts_read import count_keys
from etcdagent.observe.known_bugs import load_known_bugs
from etcdagent.observe.signals import SignalHistory
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings


def read_key_counts(
    cluster: ClusterClient, snapshot: ClusterSnapshot
) -> tuple[KeyCounts | None, str | None]:
    """The counts through the first voting member that answers, or why there are none."""
    via = snapshot.answering_voter()
    if via is None or via.endpoint is None:
        return None, "no voting member answers"
    try:
        return count_keys(cluster.member(via.endpoint, via.member.name)), None
    except EtcdError as exc:
        return None, str(exc)


def gather_doctor_input(
    cluster: ClusterClient,
    settings: Settings,
    lookback: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], datetime] = utcnow,
    waiting: Callable[[float], None] | None = None,
) -> DoctorInput:
    """Snapshot, wait ``lookback``, snapshot again; ``waiting`` hears how long it waits.

    The signal history spans twice the lookback so that both samples are inside its window (the
    first is a lookback older than the second, plus the time a scrape takes).
    """
    history = SignalHistory(lookback=2 * lookback)
    before = take_snapshot(cluster)
    history.observe(before)
    if waiting is not None:
        waiting(lookback)
    sleep(lookback)
    after = take_snapshot(cluster)
    history.observe(after)
    now = max(clock(), after.taken_at)
    counts, counts_error = read_key_counts(cluster, after)
    return DoctorInput(
        after=after,
        before=before,
        settings=settings,
        now=now,
        lookback=lookback,
        signals=history.signals(now),
        cluster_request_rate=history.cluster_request_rate(now),
        apiserver=observe_compaction(cluster, after, settings),
        key_counts=counts,
        key_counts_error=counts_error,
        known_bugs=load_known_bugs(),
    )

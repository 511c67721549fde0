"""A NOSPACE alarm raised between two cycles is recovered within seconds, not an interval later.

The daemon runs for real (its loop thread, its pause), with a 60 s interval and a 60 s pause
between members: before fast detection it would have noticed the alarm at its next cycle, up to
60 s later, and then paused 2 x 60 s between the three defrags. Asserted is only that writes work
again before the next cycle was even due, not how fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import wait_for

from etcdagent.agent.daemon import Daemon
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ClusterFactory = Callable[..., EtcdCluster]
INTERVAL = 60.0


@pytest.fixture
def running_daemon(etcd_cluster_factory: ClusterFactory) -> Iterator[tuple[EtcdCluster, Daemon]]:
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=16 * 1024**2)
    settings = load_settings(
        {
            "connection": {"endpoints": ",".join(cluster.endpoints)},
            "defrag": {"wait_between": "60s"},
            "daemon": {"listen": "127.0.0.1:0", "interval": f"{INTERVAL:g}s"},
        }
    )
    daemon = Daemon(lambda: settings)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield cluster, daemon
    finally:
        daemon.request_stop()
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_nospace_between_cycles_is_recovered_before_the_next_cycle_is_due(
    running_daemon: tuple[EtcdCluster, Daemon],
) -> None:
    cluster, daemon = running_daemon
    cluster.put("/known/a", "kept")
    wait_for(lambda: daemon.last_beat is not None, 30, "the daemon's first cycle")
    first_cycle_ended = time.monotonic()

    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=50, value_size=64 * 1024, rounds=20)
    assert cluster.alarms(), "the quota was not reached"

    def writes_work() -> bool:
        try:
            return not cluster.alarms() and cluster.put("/known/b", "written") > 0
        except EtcdRequestError:
            return False

    wait_for(writes_work, INTERVAL, "writes to work again")

    assert time.monotonic() < first_cycle_ended + INTERVAL  # the next cycle was not due yet
    assert cluster.get("/known/a") == b"kept"
    intervals = defrag_intervals(cluster)
    assert sorted(i.member for i in intervals) == sorted(m.name for m in cluster.members)
    assert max_concurrent_defrags(intervals) == 1  # no pause, yet never two at once

"""NOSPACE recovery slots against real etcd: one claim at a time, a dead holder's slot freed by
its lease, slots given back after the incident, and what happens when none is left.

Under NOSPACE etcd grants no lease and takes no put, so these are the only keys an agent can
exclude the others with (act/nospace_slots.py); each test fills a real cluster to its quota.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
from etcdagent_testing import EtcdCluster
from etcdagent_testing.errors import EtcdRequestError

from etcdagent.act.lock_requests import LockRequests
from etcdagent.act.nospace_slots import (
    SLOTS,
    NoSlotError,
    RecoveryClaim,
    SlotKeeper,
    read_slots,
)
from etcdagent.errors import EtcdAgentError, LockBusyError, LockLostError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ClusterFactory = Callable[..., EtcdCluster]
TTL = 2.0  # the lock's minimum: a dead holder's slot is gone within ~3 s of etcd's clock


@pytest.fixture
def full(etcd_cluster_factory: ClusterFactory) -> Iterator[tuple[EtcdCluster, ClusterClient]]:
    """A 3-member cluster whose slots a keeper made while it took writes, then NOSPACE."""
    cluster = etcd_cluster_factory(3, quota_backend_bytes=16 * 1024**2)
    config = {"connection": {"endpoints": ",".join(cluster.endpoints), "request_timeout": "2s"}}
    with ClusterClient(load_settings(config)) as client:
        keeper = SlotKeeper(members_of(client), holder="keeper-1", ttl=TTL)
        keeper.keep_once()
        keeper.start()  # renewing from now: filling the cluster may outlast the slots' TTL
        try:
            fill(cluster)
            yield cluster, client
        finally:
            keeper.stop()


def fill(cluster: EtcdCluster) -> None:
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=50, value_size=64 * 1024, rounds=20)
    assert cluster.alarms()


def members_of(client: ClusterClient) -> Callable[[], Sequence[MemberClient]]:
    return lambda: [client.member(url) for url in client.endpoints]


def view(client: ClusterClient) -> tuple[list[int], list[int]]:
    """(free slots, claimed slots) as etcd holds them now."""
    seen = read_slots(LockRequests(members_of(client), time.monotonic))
    return [s.index for s in seen.free], [s.index for s in seen.claimed]


def claim(client: ClusterClient, name: str) -> RecoveryClaim:
    return RecoveryClaim(members_of(client), holder=name, poll_interval=0.1)


def poll(check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for etcd's own lease expiry (its wall clock is the subject here)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def test_slots_are_made_while_writes_work_and_kept_alive_under_nospace(
    full: tuple[EtcdCluster, ClusterClient],
) -> None:
    _, client = full
    assert view(client) == (list(range(1, SLOTS + 1)), [])
    time.sleep(3 * TTL)  # etcd's lease clock: unrenewed, the slots would be gone by now
    assert view(client) == (list(range(1, SLOTS + 1)), [])


def test_of_agents_claiming_at_once_under_nospace_exactly_one_wins(
    full: tuple[EtcdCluster, ClusterClient],
) -> None:
    _, client = full
    claims = [claim(client, f"agent-{i}") for i in range(6)]
    outcomes: list[str] = []
    start = threading.Barrier(len(claims))

    def race(c: RecoveryClaim) -> None:
        start.wait()
        try:
            c.acquire(0)
            outcomes.append("won")
        except LockBusyError:
            outcomes.append("busy")

    threads = [threading.Thread(target=race, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["busy"] * 5 + ["won"]
    winner = next(c for c in claims if c.slot is not None)
    assert winner.slot is not None
    free, claimed = view(client)
    assert claimed == [winner.slot.index]
    time.sleep(2 * TTL)  # the holder's renewals keep it, nobody else's do
    winner.ensure_held()
    assert view(client)[1] == claimed
    with pytest.raises(LockBusyError, match="already running by another agent"):
        claim(client, "late").acquire(0.5)
    winner.release()  # still NOSPACE: the slot cannot be written back, so it goes
    assert view(client) == (free, [])


def test_a_dead_holders_slot_goes_with_its_lease_and_the_next_one_is_claimed(
    full: tuple[EtcdCluster, ClusterClient],
) -> None:
    _, client = full
    dead = claim(client, "dies")
    dead.acquire(0)
    assert dead.slot is not None and dead.slot.index == 1
    assert dead._renewal is not None
    dead._renewal.stop()  # SIGKILL: no more renewals, no release
    with pytest.raises(LockBusyError):
        claim(client, "waits").acquire(0)
    poll(lambda: view(client)[1] == [])
    survivor = claim(client, "survivor")
    survivor.acquire(0)
    assert survivor.slot is not None and survivor.slot.index == 2
    with pytest.raises(LockLostError):
        dead.ensure_held()
    survivor.release()


def test_with_every_slot_used_the_claim_says_so_and_names_the_keepers(
    full: tuple[EtcdCluster, ClusterClient],
) -> None:
    _, client = full
    for _ in range(SLOTS):
        used = claim(client, "refused-recovery")
        used.acquire(0)
        used.release()  # NOSPACE stays: each slot goes
    with pytest.raises(NoSlotError) as none_left:
        claim(client, "next").acquire(0)
    assert none_left.value.keepers == ("keeper-1",)


def test_after_the_incident_a_released_slot_is_free_again(
    full: tuple[EtcdCluster, ClusterClient],
) -> None:
    cluster, client = full
    holder = claim(client, "recovers")
    holder.acquire(0)
    _recover(cluster)
    holder.release()
    poll(lambda: view(client) == (list(range(1, SLOTS + 1)), []))


def _recover(cluster: EtcdCluster) -> None:
    """What a recovery does, by hand: compact, defragment each member, disarm."""
    revision = int(
        cluster.request(cluster.members[0], "kv/range", {"key": "eA=="})["header"]["revision"]
    )
    cluster.request(
        cluster.members[0], "kv/compaction", {"revision": str(revision), "physical": True}
    )
    for member in cluster.members:
        cluster.request(member, "maintenance/defragment", {}, timeout=60)
    for alarm in cluster.alarms():
        cluster.request(cluster.members[0], "maintenance/alarm", {"action": "DEACTIVATE", **alarm})
    assert not cluster.alarms()


def test_claims_need_no_slot_keeper_to_refuse_cleanly(etcd_cluster: EtcdCluster) -> None:
    """No daemon ever kept slots (a CronJob-only deployment): NoSlotError without keepers."""
    config = {"connection": {"endpoints": ",".join(etcd_cluster.endpoints)}}
    with ClusterClient(load_settings(config)) as client, pytest.raises(NoSlotError) as none:
        claim(client, "cronjob").acquire(0)
    assert none.value.keepers == ()
    assert isinstance(none.value, EtcdAgentError)

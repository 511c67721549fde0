"""The maintenance lock against real etcd: exclusion, waiting, expiry, renewal, failover, loss."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from etcdagent_testing import EtcdCluster

from etcdagent.act.lock import LOCK_KEY, MaintenanceLock, current_holder
from etcdagent.errors import LockBusyError, LockLostError
from etcdagent.etcd.client import ClusterClient, MemberClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ClusterFactory = Callable[..., EtcdCluster]


def make_client(cluster: EtcdCluster, **extra: object) -> ClusterClient:
    # A short request timeout: a frozen member costs one second, not five, before failover.
    config: dict[str, object] = {
        "connection": {"endpoints": ",".join(cluster.endpoints), "request_timeout": "1s"},
        **extra,
    }
    return ClusterClient(load_settings(config))


@pytest.fixture
def client(etcd_cluster: EtcdCluster) -> Iterator[ClusterClient]:
    with make_client(etcd_cluster) as cluster_client:
        yield cluster_client


def members_of(client: ClusterClient) -> Callable[[], Sequence[MemberClient]]:
    return lambda: [client.member(url) for url in client.endpoints]


def lock_value(cluster: EtcdCluster) -> tuple[str, int] | None:
    """(holder, lease id) of the lock key as etcd stores it, None when absent."""
    answer = cluster.request(
        cluster._default_member(), "kv/range", {"key": base64.b64encode(LOCK_KEY.encode()).decode()}
    )
    kvs = answer.get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0].get("lease", 0))


def holder_in_etcd(cluster: EtcdCluster) -> str | None:
    value = lock_value(cluster)
    return None if value is None else value[0]


def poll(check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Wait for etcd's own background work; returns the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
    return time.monotonic() - start


def test_acquire_release_and_busy(etcd_cluster: EtcdCluster, client: ClusterClient) -> None:
    first = MaintenanceLock(members_of(client), holder="agent A pid 1 (defrag)")
    second = MaintenanceLock(members_of(client), holder="agent B pid 2 (defrag)")

    first.acquire(timeout=0)
    assert first.held
    value = lock_value(etcd_cluster)
    assert value is not None and value[0] == "agent A pid 1 (defrag)" and value[1] > 0
    assert current_holder(client.member(etcd_cluster.endpoints[2])) == "agent A pid 1 (defrag)"

    with pytest.raises(LockBusyError, match="maintenance already running by agent A") as busy:
        second.acquire(timeout=0)
    assert busy.value.holder == "agent A pid 1 (defrag)"
    assert not second.held

    first.release()
    assert not first.held
    assert lock_value(etcd_cluster) is None  # revoked, not left to expire
    assert current_holder(client.member(etcd_cluster.endpoints[0])) is None
    first.release()  # idempotent
    with pytest.raises(LockLostError, match="not acquired"):
        first.ensure_held()

    with second:  # the context manager form (acquire_timeout defaults to 0)
        second.ensure_held()
        assert holder_in_etcd(etcd_cluster) == "agent B pid 2 (defrag)"
    assert lock_value(etcd_cluster) is None


def test_a_waiting_lock_gets_it_once_the_holder_releases(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    first = MaintenanceLock(members_of(client), holder="first")
    second = MaintenanceLock(members_of(client), holder="second", poll_interval=0.1)
    first.acquire(timeout=0)
    got: list[float] = []
    errors: list[BaseException] = []

    def wait_for_it() -> None:
        try:
            second.acquire(timeout=20)
            got.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(1.0)
    assert not got and not errors  # still waiting
    released = time.monotonic()
    first.release()
    waiter.join(timeout=10)
    assert not errors, errors
    assert got and got[0] - released < 1.0
    assert second.held
    assert holder_in_etcd(etcd_cluster) == "second"
    second.release()


def test_waiting_longer_than_the_ttl_keeps_the_waiters_lease(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    first = MaintenanceLock(members_of(client), holder="first", ttl=2)
    second = MaintenanceLock(members_of(client), holder="second", ttl=2, poll_interval=0.2)
    first.acquire(timeout=0)
    timer = threading.Timer(4.0, first.release)  # twice the TTL
    timer.start()
    try:
        second.acquire(timeout=15)
    finally:
        timer.join()
    second.ensure_held()
    assert holder_in_etcd(etcd_cluster) == "second"
    second.release()


def test_busy_after_a_timeout_names_the_holder_and_leaves_no_lease(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    first = MaintenanceLock(members_of(client), holder="first")
    second = MaintenanceLock(members_of(client), holder="second", poll_interval=0.1)
    with first:
        start = time.monotonic()
        with pytest.raises(LockBusyError, match=r"by first \(gave up after waiting 0.5s\)"):
            second.acquire(timeout=0.5)
        assert 0.4 < time.monotonic() - start < 3
    leases = etcd_cluster.request(etcd_cluster.members[0], "lease/leases", {}).get("leases") or []
    assert leases == []  # the loser revoked its lease, the winner revoked its own on release


def test_renewal_keeps_a_short_ttl_lock_held(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    lock = MaintenanceLock(members_of(client), holder="long job", ttl=2)
    with lock:
        lease = lock_value(etcd_cluster)
        deadline = time.monotonic() + 5  # 2.5 TTLs
        while time.monotonic() < deadline:
            lock.ensure_held()
            time.sleep(0.25)
        assert lock_value(etcd_cluster) == lease
    assert lock_value(etcd_cluster) is None


def test_ensure_held_raises_once_the_lease_is_revoked_behind_its_back(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    lock = MaintenanceLock(members_of(client), holder="victim", ttl=3)
    lock.acquire(timeout=0)
    value = lock_value(etcd_cluster)
    assert value is not None
    etcd_cluster.request(etcd_cluster.members[1], "kv/lease/revoke", {"ID": str(value[1])})

    # The next renewal (every TTL/3 = 1 s) hears that the lease is gone.
    took = poll(lambda: not lock.held, timeout=5)
    assert took < 2.5
    with pytest.raises(LockLostError, match="lease is gone"):
        lock.ensure_held()
    lock.release()  # the lease is already gone: still quiet


@pytest.mark.parametrize("failure", ["kill leader", "freeze follower"])
def test_failover_when_the_first_member_dies(etcd_cluster: EtcdCluster, failure: str) -> None:
    # Killed: refused at once, the worst case is the leader (an election in between). Frozen:
    # every request to it times out; a follower, because with a frozen leader nothing can renew
    # a short lease until the election (>= 0.5 s) and those timeouts are over.
    first = etcd_cluster.leader() if failure == "kill leader" else etcd_cluster.followers()[0]
    others = [m for m in etcd_cluster.members if m is not first]
    with make_client(etcd_cluster) as client:

        def members() -> list[MemberClient]:
            return [client.member(m.client_url) for m in [first, *others]]

        # TTL 4 s: an election on a loaded machine (CI) can take most of 2 s.
        lock = MaintenanceLock(members, holder="survivor", ttl=4)
        lock.acquire(timeout=0)
        first.kill() if failure == "kill leader" else first.stop()
        try:
            deadline = time.monotonic() + 8  # two TTLs: renewals must go to the other members
            while time.monotonic() < deadline:
                lock.ensure_held()
                time.sleep(0.25)
            lock.release()
            assert etcd_cluster.get(LOCK_KEY, member=others[0]) is None

            again = MaintenanceLock(members, holder="again", ttl=2)
            again.acquire(timeout=5)
            assert etcd_cluster.get(LOCK_KEY, member=others[1]) == b"again"
            again.release()
        finally:
            if first.paused:
                first.cont()


def test_auth_cluster_with_root(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=3, auth=True, root_password="s3cret-Pa55")
    auth = {"auth": {"username": "root", "password": "s3cret-Pa55"}}
    with make_client(cluster, **auth) as one, make_client(cluster, **auth) as two:
        first = MaintenanceLock(members_of(one), holder="root agent", ttl=2)
        with first:
            time.sleep(1.5)  # at least one renewal
            first.ensure_held()
            with pytest.raises(LockBusyError, match="root agent"):
                MaintenanceLock(members_of(two), holder="other").acquire(timeout=0)
            assert current_holder(two.member(cluster.endpoints[1])) == "root agent"
        assert current_holder(two.member(cluster.endpoints[1])) is None


# -- separate OS processes --------------------------------------------------------------------

_CHILD = r"""
import sys, time
from etcdagent.etcd.client import ClusterClient
from etcdagent.act.lock import MaintenanceLock, default_holder
from etcdagent.settings import load_settings

endpoints, mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
client = ClusterClient(load_settings({"connection": {"endpoints": endpoints}}))
members = lambda: [client.member(url) for url in client.endpoints]
lock = MaintenanceLock(members, holder=default_holder(mode), ttl=2, poll_interval=0.05)
if mode == "hang":
    lock.acquire(timeout=0)
    print("held", flush=True)
    time.sleep(600)
for _ in range(int(mode)):
    lock.acquire(timeout=30)
    with open(out, "a") as f:
        f.write(f"enter {time.time()!r}\n")
    time.sleep(0.2)
    lock.ensure_held()
    with open(out, "a") as f:
        f.write(f"exit {time.time()!r}\n")
    lock.release()
"""


def child(cluster: EtcdCluster, mode: str, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, ",".join(cluster.endpoints), mode, str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_never_hold_it_at_once(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    outs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [child(etcd_cluster, "5", out) for out in outs]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    intervals: list[tuple[float, float]] = []
    for out in outs:
        lines = out.read_text().split()
        times = [float(t) for t in lines[1::2]]
        assert lines[0::2] == ["enter", "exit"] * 5
        intervals += list(zip(times[0::2], times[1::2], strict=True))
    intervals.sort()
    for (_, end), (start, _) in itertools.pairwise(intervals):
        assert end <= start, intervals


def test_a_killed_holders_lock_expires(
    etcd_cluster: EtcdCluster, client: ClusterClient, tmp_path: Path
) -> None:
    proc = child(etcd_cluster, "hang", tmp_path / "unused")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # structlog's default output goes to stdout too
            if line.strip() == "held":
                break
        else:
            raise AssertionError(f"the child exited ({proc.wait()}) without taking the lock")
        with pytest.raises(LockBusyError, match=f"pid {proc.pid} \\(hang\\)"):
            MaintenanceLock(members_of(client), holder="next").acquire(timeout=0)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        nxt = MaintenanceLock(members_of(client), holder="next", poll_interval=0.1)
        nxt.acquire(timeout=10)
        # Free within the TTL (2 s) after the last renewal, i.e. at most ~2 s after the kill.
        assert time.monotonic() - killed < 3.0
        nxt.release()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_waiting_defrag_does_not_refuse_on_a_member_the_lock_holders_work_silences(
    etcd_cluster: EtcdCluster, client: ClusterClient
) -> None:
    """Another agent holds the lock while a member does not answer (as one it defragments on
    3.5.1 does not): `defrag --lock-timeout` waits for the lock and decides again, instead of
    refusing on the silent member before it waits."""
    holder = MaintenanceLock(members_of(client), holder="agent A pid 1 (defrag)")
    holder.acquire(timeout=0)
    silent = etcd_cluster.followers()[0]
    silent.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "etcdagent", "defrag", "--force", "--no-compact",
         "--endpoints", ",".join(etcd_cluster.endpoints), "--lock-timeout", "60s",
         "--output", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ETCDAGENT_DEFRAG__WAIT_BETWEEN": "100ms",
             "ETCDAGENT_CONNECTION__REQUEST_TIMEOUT": "1s",
             "ETCDAGENT_CONNECTION__RETRY_DEADLINE": "500ms"},
    )  # fmt: skip
    try:
        time.sleep(8)  # the waiter observed the silent member and waits for the lock
        assert proc.poll() is None, proc.communicate()
    finally:
        silent.cont()
        holder.release()
    out, err = proc.communicate(timeout=120)
    report = json.loads(out)
    assert proc.returncode == 0, (report, err[-2000:])
    assert report["outcome"] == "done", report
    assert any(
        f"{silent.name} does not answer" in n and "agent A pid 1 (defrag) holds" in n
        for n in report["notes"]
    ), report["notes"]

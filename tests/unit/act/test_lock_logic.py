"""MaintenanceLock logic without etcd: waiting by an injected clock, failover order, loss."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest

from etcdagent.act.lock import MaintenanceLock, default_holder
from etcdagent.errors import (
    ClusterUnavailableError,
    EtcdAuthError,
    EtcdError,
    EtcdUnreachableError,
    LockBusyError,
    LockLostError,
)
from etcdagent.etcd.client import MemberClient


class FakeEtcd:
    """Just enough of the gateway's lease and txn answers (shapes measured on 3.4/3.5)."""

    def __init__(self) -> None:
        self.leases: set[int] = set()
        self.key: tuple[str, int] | None = None  # (holder, lease)
        self.next_id = 100
        self.calls: list[tuple[str, str]] = []  # (member, path)
        self.apply_but_time_out_next_txn = False
        self.keepalives_time_out = False
        self.stale_keepalives = 0  # keepalives answered "gone" by a member behind on the lease

    def handle(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/lease/grant":
            self.next_id += 1
            self.leases.add(self.next_id)
            return {"ID": str(self.next_id), "TTL": body["TTL"]}
        if path == "/lease/keepalive":
            if self.keepalives_time_out:
                raise EtcdUnreachableError("timed out", transient=True)
            lease = int(body["ID"])
            if self.stale_keepalives:
                self.stale_keepalives -= 1
                return {"result": {"ID": body["ID"]}}
            return {"result": {"ID": body["ID"], **({"TTL": "15"} if lease in self.leases else {})}}
        if path == "/kv/range":
            if self.key is None:
                return {"header": {}}
            kv = {"value": base64.b64encode(self.key[0].encode()).decode()}
            return {"header": {}, "kvs": [{**kv, "lease": str(self.key[1])}], "count": "1"}
        if path == "/kv/lease/revoke":
            lease = int(body["ID"])
            if lease not in self.leases:
                raise EtcdError("requested lease not found", code=5, status=404)
            self.leases.discard(lease)
            if self.key is not None and self.key[1] == lease:
                self.key = None
            return {}
        if path == "/kv/txn":
            if self.key is None:
                put = body["success"][0]["request_put"]
                if int(put["lease"]) not in self.leases:
                    raise EtcdError("etcdserver: requested lease not found", code=5, status=404)
                self.key = (base64.b64decode(put["value"]).decode(), int(put["lease"]))
                if self.apply_but_time_out_next_txn:
                    self.apply_but_time_out_next_txn = False
                    raise EtcdUnreachableError("timed out", transient=True)
                return {"succeeded": True}
            kv = {"value": base64.b64encode(self.key[0].encode()).decode()}
            kv["lease"] = str(self.key[1])
            return {"responses": [{"response_range": {"kvs": [kv]}}]}
        raise AssertionError(path)


class FakeMember:
    def __init__(self, etcd: FakeEtcd, name: str, error: EtcdError | None = None) -> None:
        self.etcd = etcd
        self.endpoint = name
        self.error = error

    def call(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Any:
        self.etcd.calls.append((self.endpoint, path))
        if self.error is not None:
            raise self.error
        return self.etcd.handle(path, body)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_lock(
    members: Sequence[FakeMember], clock: FakeClock, holder: str = "me", ttl: float = 15.0
) -> MaintenanceLock:
    as_clients = cast(Sequence[MemberClient], members)
    return MaintenanceLock(
        lambda: as_clients, holder=holder, ttl=ttl, clock=clock, sleep=clock.sleep
    )


def test_busy_waits_by_the_injected_clock_then_gives_up_and_revokes() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    etcd.key = ("other pid 7 (defrag)", 1)
    lock = make_lock([FakeMember(etcd, "m1")], clock)

    with pytest.raises(LockBusyError, match="already running by other pid 7") as busy:
        lock.acquire(timeout=1.2)
    assert busy.value.holder == "other pid 7 (defrag)"
    assert clock.sleeps == [0.5, 0.5, pytest.approx(0.2)]  # never past the deadline
    assert etcd.leases == set()  # our lease did not outlive the attempt
    assert not lock.held


def test_a_waiter_whose_lease_expired_unrenewed_takes_the_lock_with_a_fresh_one() -> None:
    # Seen on 3.6.14 with a busy cluster: every renewal of the waiter's 2 s lease timed out
    # during another agent's long defrag, and its take then failed with "lease not found".
    etcd, clock = FakeEtcd(), FakeClock()
    etcd.key = ("other pid 7 (defrag)", 1)
    etcd.keepalives_time_out = True
    lock = make_lock([FakeMember(etcd, "m1")], clock, ttl=2)
    original_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        original_sleep(seconds)
        if clock.now >= 1003:  # our lease is long gone; then the other holder lets go
            etcd.leases.discard(101)
            etcd.key = None

    lock._acquirer._sleep = sleep
    lock.acquire(timeout=10)
    assert lock.held
    assert etcd.key is not None and etcd.key[0] == "me" and etcd.key[1] != 101
    lock.release()


def test_timeout_zero_tries_once() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    etcd.key = ("other", 1)
    with pytest.raises(LockBusyError):
        make_lock([FakeMember(etcd, "m1")], clock).acquire(timeout=0)
    assert clock.sleeps == []
    assert [p for _, p in etcd.calls] == ["/lease/grant", "/kv/txn", "/kv/lease/revoke"]


def test_transient_failure_moves_to_the_next_member_others_do_not() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    down = FakeMember(etcd, "m1", EtcdUnreachableError("refused", transient=True))
    lock = make_lock([down, FakeMember(etcd, "m2")], clock)
    lock.acquire(timeout=0)
    assert etcd.calls[:3] == [("m1", "/lease/grant"), ("m2", "/lease/grant"), ("m1", "/kv/txn")]
    lock.release()
    assert etcd.key is None

    denied = FakeMember(etcd, "m1", EtcdAuthError("permission denied"))
    with pytest.raises(EtcdAuthError):
        make_lock([denied, FakeMember(etcd, "m2")], clock).acquire(timeout=0)
    assert etcd.calls[-1] == ("m1", "/lease/grant")


def test_every_member_down_is_cluster_unavailable_and_release_stays_quiet() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    up = FakeMember(etcd, "m1")
    lock = make_lock([up], clock)
    lock.acquire(timeout=0)
    up.error = EtcdUnreachableError("refused", transient=True)
    lock.release()  # logs, does not raise: the lease expires by itself
    assert not lock.held

    with pytest.raises(ClusterUnavailableError, match="lock lease grant failed: refused"):
        make_lock([up], clock).acquire(timeout=0)


def test_a_txn_applied_but_unanswered_counts_as_ours() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    etcd.apply_but_time_out_next_txn = True
    lock = make_lock([FakeMember(etcd, "m1"), FakeMember(etcd, "m2")], clock)
    lock.acquire(timeout=0)  # m1 timed out after applying; m2's txn sees our own lease
    assert lock.held and etcd.key == ("me", 101)
    lock.release()


def test_lost_after_a_ttl_without_renewal_and_release_stops_the_thread_at_once() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    lock = make_lock([FakeMember(etcd, "m1")], clock, ttl=30)  # renewal thread waits 10 s
    lock.acquire(timeout=0)
    clock.now += 29.9
    lock.ensure_held()
    clock.now += 0.2
    with pytest.raises(LockLostError, match="not renewed for its whole TTL of 30s"):
        lock.ensure_held()

    started = time.monotonic()
    lock.release()
    assert time.monotonic() - started < 0.5
    assert etcd.leases == set()


def test_the_renewal_thread_gives_up_once_the_lock_is_lost() -> None:
    """Every member gone for a whole TTL: etcd dropped the lease, so the thread stops renewing
    (it no longer logs a failure every few hundred ms for the rest of the process)."""
    etcd, clock = FakeEtcd(), FakeClock()
    member = FakeMember(etcd, "m1")
    lock = make_lock([member], clock, ttl=1.5)  # the thread's first renewal after 0.5 s
    lock.acquire(timeout=0)
    member.error = EtcdUnreachableError("m1: connection refused", transient=True)
    clock.now += 2.0  # past the TTL by the lock's clock
    renewal = lock._renewal
    assert renewal is not None
    renewal._thread.join(timeout=5)
    assert not renewal._thread.is_alive()
    with pytest.raises(LockLostError):
        lock.ensure_held()


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_renewal_answered_gone_while_the_key_is_still_on_the_lease_keeps_the_lock() -> None:
    """A member behind on a just-granted lease answers its renewal with no TTL (seen on etcd
    3.5.1 under load): the quorum's read of the lock key says otherwise, so the lock stays
    held and the renewals go on."""
    etcd, clock = FakeEtcd(), FakeClock()
    lock = make_lock([FakeMember(etcd, "m1")], clock, ttl=1.5)  # a renewal every 0.5 s
    lock.acquire(timeout=0)
    etcd.stale_keepalives = 1
    wait_until(lambda: ("m1", "/kv/range") in etcd.calls, "the lock key to be read")
    renewals = [c for c in etcd.calls if c[1] == "/lease/keepalive"]
    wait_until(
        lambda: len([c for c in etcd.calls if c[1] == "/lease/keepalive"]) > len(renewals),
        "the next renewal",
    )
    lock.ensure_held()  # not lost
    lock.release()


def test_a_renewal_answered_gone_with_the_key_gone_too_loses_the_lock() -> None:
    etcd, clock = FakeEtcd(), FakeClock()
    lock = make_lock([FakeMember(etcd, "m1")], clock, ttl=1.5)
    lock.acquire(timeout=0)
    etcd.leases.clear()  # expired on the leader: its keys went with it
    etcd.key = None
    renewal = lock._renewal
    assert renewal is not None
    renewal._thread.join(timeout=5)
    assert not renewal._thread.is_alive()
    with pytest.raises(LockLostError, match="lease is gone"):
        lock.ensure_held()


def test_arguments_and_holder() -> None:
    assert default_holder("defrag").startswith("etcdagent@")
    assert default_holder("defrag").endswith(" (defrag)")
    with pytest.raises(ValueError, match="ttl"):
        make_lock([], FakeClock(), ttl=0.5)
    with pytest.raises(ValueError, match="holder"):
        make_lock([], FakeClock(), holder="")

"""The cluster-wide maintenance lock: never two defragmentations at once, from any process.

Several agents may run against one cluster (a DaemonSet replica on every control-plane node, a
CronJob, an operator's shell). Defragmenting two members at once stalls the whole cluster, so every
maintenance run first takes this lock: the key ``/etcdagent/lock`` written under a lease, by a
transaction that succeeds only if the key does not exist. The holder renews the lease from a
background thread while it works; an agent that is killed stops renewing and its lock vanishes by
itself after the lease TTL, so a crash never blocks maintenance for good.

What etcd 3.4.23 and 3.5.1 answer through the gRPC-JSON gateway (measured, identical on both):

* ``/v3/lease/grant {"TTL": "15"}`` -> ``{"header": ..., "ID": "<decimal>", "TTL": "15"}``; the TTL
  must be an integer (``"2.5"`` is a 400), and etcd may raise it to its minimum, so the granted TTL
  of the answer is what counts.
* ``/v3/kv/txn`` with ``compare [{"key", "target": "CREATE", "result": "EQUAL",
  "create_revision": "0"}]``: success answers ``"succeeded": true``; failure omits ``succeeded``
  and carries ``responses[0].response_range.kvs[0]`` with the current ``value`` and ``lease``.
* ``/v3/lease/keepalive {"ID"}`` -> ``{"result": {"ID", "TTL"}}``; for an expired or revoked lease
  the ``TTL`` is omitted (HTTP 200, not an error).
* ``/v3/kv/lease/revoke {"ID"}`` -> ``{"header"}``; an unknown lease is HTTP 404, code 5
  "requested lease not found" (treated as already released).
* With authentication on, grant and keepalive work without a token but revoke, txn and range need
  one ("user name is empty"); ``MemberClient`` authenticates before them, the root user is enough.
* Under a NOSPACE alarm, grant and the txn are refused (HTTP 429): the lock cannot be *taken* while
  the database is full, but a lock already held keeps renewing and can still be released.
"""

from __future__ import annotations

import base64
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import structlog

from etcdagent.errors import (
    ClusterUnavailableError,
    EtcdError,
    EtcdProtocolError,
    LockBusyError,
    LockLostError,
)
from etcdagent.etcd.client import MemberClient

__all__ = [
    "LOCK_KEY",
    "MaintenanceLock",
    "current_holder",
    "default_holder",
]

LOCK_KEY = "/etcdagent/lock"  # under the reserved prefix /etcdagent/

_LEASE_NOT_FOUND_CODE = 5  # gRPC NotFound: "etcdserver: requested lease not found"

log = structlog.get_logger(__name__)


def default_holder(purpose: str) -> str:
    """``etcdagent@<hostname> pid <pid> (<purpose>)``: what an operator needs to find the holder
    (which node, which process, doing what) when ``status`` says maintenance is already running."""
    base = f"etcdagent@{socket.gethostname()} pid {os.getpid()}"
    return f"{base} ({purpose})" if purpose else base


def current_holder(member: MemberClient, key: str = LOCK_KEY) -> str | None:
    """Who holds the lock now (the holder string written by the winner), None when it is free.

    For status and dry-run output only: the answer may be stale by the time it is printed.
    """
    value = member.get(key)
    return None if value is None else value.decode("utf-8", errors="replace")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _int_field(answer: Any, name: str) -> int:
    """An int64 field of a gateway answer (a JSON string; omitted when zero)."""
    raw = answer.get(name, 0) if isinstance(answer, dict) else 0
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def _lease_not_found(exc: EtcdError) -> bool:
    return exc.code == _LEASE_NOT_FOUND_CODE or "lease not found" in str(exc).lower()


@dataclass
class _Renewal:
    """State of one acquisition, shared by the caller's thread and the renewal thread.

    A fresh object per acquisition, so a renewal thread that outlives ``release()`` (stuck in a
    request to a frozen member) can never touch the state of a later acquisition.
    """

    lease_id: int
    ttl: float  # as granted by etcd
    expires_at: float  # by the lock's clock: last renewal's send time + TTL
    stop: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)  # only around field access
    lost: str | None = None  # why the lock is known to be lost
    thread: threading.Thread | None = None


class MaintenanceLock:
    """A cluster-wide mutual-exclusion lock held under an etcd lease that renews itself.

    ``members()`` returns the member clients the lock may talk to *now*, in order of preference;
    the caller leaves out the member being defragmented (its requests block for the whole
    defragmentation). It is called from the renewal thread too, so it must be thread-safe. Each
    lock request tries the members in turn until one answers: a transient failure (refused,
    timeout, no leader) moves on to the next member, any other failure is raised at once.

    Use it explicitly::

        lock = MaintenanceLock(members, holder=default_holder("defrag"))
        lock.acquire(timeout=30)        # LockBusyError if someone else still holds it
        try:
            for step in plan:
                lock.ensure_held()      # LockLostError: stop before touching another member
                step()
        finally:
            lock.release()

    or as a context manager, which waits ``acquire_timeout`` seconds (default 0: try once)::

        with MaintenanceLock(members, holder=..., acquire_timeout=30) as lock:
            ...

    ``clock`` and ``sleep`` measure and spend the acquisition wait and decide expiry (injected by
    tests); the renewal thread waits on a ``threading.Event`` so ``release()`` stops it at once.
    """

    def __init__(
        self,
        members: Callable[[], Sequence[MemberClient]],
        *,
        holder: str,
        ttl: float = 15.0,
        key: str = LOCK_KEY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.5,
        acquire_timeout: float = 0.0,
    ) -> None:
        if not holder:
            raise ValueError("holder must name who holds the lock")
        if not ttl >= 1:  # also refuses NaN; etcd leases have whole-second TTLs
            raise ValueError(f"ttl must be at least 1 second, not {ttl!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        if not acquire_timeout >= 0:
            raise ValueError(f"acquire_timeout must be >= 0, not {acquire_timeout!r}")
        self._members = members
        self.holder = holder
        self.ttl = ttl
        self.key = key
        self.acquire_timeout = acquire_timeout
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._renewal: _Renewal | None = None

    def __repr__(self) -> str:
        return f"<MaintenanceLock {self.key} holder={self.holder!r} held={self.held}>"

    # -- requests, with failover ------------------------------------------------------------

    def _call(
        self, operation: str, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """POST to the first member that answers; a transient failure moves on to the next.

        Not retried on one member: the next member is a faster way around a dead or frozen one,
        and a lock request that times out may still have been applied, which the callers handle.
        """
        return self._call_timed(operation, path, body, timeout=timeout)[0]

    def _call_timed(
        self, operation: str, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> tuple[Any, float]:
        """``_call``, plus the clock reading taken just before the request that was answered
        (a renewal counts from then, not from the first member that timed out)."""
        failures: list[str] = []
        for member in self._members():
            sent = self._clock()
            try:
                return member.call(operation, path, body, retry=False, timeout=timeout), sent
            except EtcdError as exc:
                if not exc.transient:
                    raise
                failures.append(str(exc))
        detail = "; ".join(failures) if failures else "no member to ask"
        raise ClusterUnavailableError(f"maintenance lock: {operation} failed: {detail}")

    def _grant(self) -> tuple[int, float]:
        answer = self._call("lock lease grant", "/lease/grant", {"TTL": str(math.ceil(self.ttl))})
        lease_id = _int_field(answer, "ID")
        granted = _int_field(answer, "TTL")
        if lease_id == 0 or granted <= 0:
            raise EtcdProtocolError(
                f"maintenance lock: lease grant answered without a lease ID or TTL: {answer!r}",
                operation="lock lease grant",
            )
        return lease_id, float(granted)

    def _keepalive(self, lease_id: int, timeout: float | None = None) -> tuple[int, float]:
        """Renew the lease once: the TTL etcd answered (0 when the lease is gone) and when the
        answered request was sent."""
        answer, sent = self._call_timed(
            "lock lease keepalive", "/lease/keepalive", {"ID": str(lease_id)}, timeout=timeout
        )
        result = answer.get("result") if isinstance(answer, dict) else None
        return _int_field(result, "TTL"), sent

    def _revoke(self, lease_id: int) -> None:
        try:
            self._call("lock lease revoke", "/kv/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if not _lease_not_found(exc):  # already expired or revoked: nothing to release
                raise

    def _try_take(self, lease_id: int) -> str | None:
        """One compare-and-put. None when we hold the key now, else the other holder's name."""
        key = _b64(self.key)
        txn = {
            "compare": [
                {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [
                {"request_put": {"key": key, "value": _b64(self.holder), "lease": str(lease_id)}}
            ],
            "failure": [{"request_range": {"key": key}}],
        }
        answer = self._call("lock txn", "/kv/txn", txn)
        if answer.get("succeeded"):
            return None
        responses = answer.get("responses") or [{}]
        first = responses[0] if isinstance(responses[0], dict) else {}
        kvs = (first.get("response_range") or {}).get("kvs") or []
        if not kvs or not isinstance(kvs[0], dict):
            return "an unknown holder"  # cannot happen: the txn's compare saw the key
        if _int_field(kvs[0], "lease") == lease_id:
            # Our own earlier attempt went through although its answer was lost (a timeout, and
            # the request then went to the next member): the key is ours.
            return None
        try:
            return base64.b64decode(kvs[0].get("value", "")).decode("utf-8", errors="replace")
        except (ValueError, TypeError):
            return "an unknown holder"

    # -- public API ---------------------------------------------------------------------------

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another holder to let go.

        ``timeout=0`` tries once. Raises ``LockBusyError`` naming the other holder when the time
        is up, ``ClusterUnavailableError`` when no member answers, and the ``EtcdError`` of a
        non-transient refusal (permission denied; NOSPACE: etcd refuses new leases and writes
        while the database is full). Starts the renewal thread on success.
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        if self._renewal is not None:
            raise RuntimeError(f"{self!r}: acquire() while already acquired")
        deadline = self._clock() + timeout
        sent = self._clock()
        lease_id, ttl = self._grant()
        try:
            while True:
                other = self._try_take(lease_id)
                if other is None:
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    waited = f" (gave up after waiting {timeout:g}s)" if timeout > 0 else ""
                    raise LockBusyError(
                        f"maintenance already running by {other}{waited}", holder=other
                    )
                log.debug("maintenance lock busy, waiting", key=self.key, holder=other)
                self._sleep(min(self._poll_interval, remaining))
                if self._clock() - sent >= ttl / 3:
                    # A wait longer than the TTL must not let our own lease expire under us.
                    renewed, sent = self._keepalive(lease_id)
                    if renewed <= 0:
                        sent = self._clock()
                        lease_id, ttl = self._grant()
        except BaseException:
            self._revoke_quietly(lease_id)
            raise
        renewal = _Renewal(lease_id=lease_id, ttl=ttl, expires_at=sent + ttl)
        renewal.thread = threading.Thread(
            target=self._renew_loop,
            args=(renewal,),
            name=f"etcdagent-lock-renewal-{lease_id:x}",
            daemon=True,  # a dying agent must not hang on it; its lease expires by itself
        )
        self._renewal = renewal
        renewal.thread.start()
        log.info("maintenance lock acquired", key=self.key, holder=self.holder, ttl=ttl)

    def release(self) -> None:
        """Stop renewing and revoke the lease, so the key vanishes now rather than after the TTL.

        Idempotent, and never raises: on a dead cluster it logs and lets the lease expire.
        """
        renewal, self._renewal = self._renewal, None
        if renewal is None:
            return
        renewal.stop.set()
        if renewal.thread is not None and renewal.thread is not threading.current_thread():
            # A renewal stuck on a frozen member finishes on its own; never wait a whole TTL.
            renewal.thread.join(timeout=1.0)
        self._revoke_quietly(renewal.lease_id)
        log.info("maintenance lock released", key=self.key, holder=self.holder)

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self._revoke(lease_id)
        except Exception as exc:  # cleanup path: the lease expires by itself anyway
            log.warning(
                "maintenance lock: could not revoke the lease; the lock frees itself when it "
                "expires",
                key=self.key,
                error=str(exc),
            )

    def ensure_held(self) -> None:
        """Raise ``LockLostError`` unless the lock is still ours.

        Lost means: etcd answered a renewal saying the lease is gone (revoked, or expired during a
        long stall), or no renewal succeeded for a whole TTL, after which etcd has dropped the key
        and another agent may hold it. The executor calls this before every step.
        """
        reason = self._lost_reason()
        if reason is not None:
            raise LockLostError(f"maintenance lock {self.key} lost: {reason}")

    @property
    def held(self) -> bool:
        """True while acquired and not known to be lost."""
        return self._lost_reason() is None

    def _lost_reason(self) -> str | None:
        renewal = self._renewal
        if renewal is None:
            return "not acquired (or already released)"
        with renewal.guard:
            if renewal.lost is not None:
                return renewal.lost
            overdue = self._clock() - renewal.expires_at
        if overdue >= 0:
            return (
                f"the lease was not renewed for its whole TTL of {renewal.ttl:g}s "
                "(etcd unreachable?); another agent may hold the lock now"
            )
        return None

    def __enter__(self) -> MaintenanceLock:
        self.acquire(self.acquire_timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- renewal thread -------------------------------------------------------------------------

    def _renew_loop(self, renewal: _Renewal) -> None:
        """Renew every TTL/3 until stopped, or until etcd says the lease is gone.

        Failures are only recorded: ``ensure_held`` decides from the expiry time, since a renewal
        that fails now may succeed on the next member or the next round, well within the TTL.
        After a failure the next round comes sooner. Each request gets a sixth of the TTL (at
        least 0.5 s), so a frozen first member leaves time to reach the others before expiry.
        """
        interval = renewal.ttl / 3
        timeout = max(0.5, renewal.ttl / 6)
        delay = interval
        while not renewal.stop.wait(delay):
            try:
                ttl, sent = self._keepalive(renewal.lease_id, timeout=timeout)
            except Exception as exc:  # anything: this thread must keep trying until stopped
                if renewal.stop.is_set():
                    return
                log.warning("maintenance lock: lease renewal failed", key=self.key, error=str(exc))
                delay = interval / 4
                continue
            if renewal.stop.is_set():
                return
            delay = interval
            with renewal.guard:
                if ttl > 0:
                    renewal.expires_at = max(renewal.expires_at, sent + ttl)
                    continue
                renewal.lost = "etcd says its lease is gone (revoked or expired)"
            log.error("maintenance lock lost", key=self.key, holder=self.holder)
            return

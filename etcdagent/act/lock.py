"""The cluster-wide maintenance lock: never two defragmentations at once, from any process.

Several agents may run against one cluster (a DaemonSet replica on every control-plane node, a
CronJob, an operator's shell). Defragmenting two members at once stalls the whole cluster, so every
maintenance run first takes this lock: the key ``/etcdagent/lock`` written under a lease, by a
transaction that succeeds only if the key does not exist. The holder renews the lease from a
background thread while it works; an agent that is killed stops renewing and its lock vanishes by
itself after the lease TTL, so a crash never blocks maintenance for good.

The jobs live in their own modules: ``lock_acquire`` takes the key (lease, transaction, waiting
with the holder named), ``lock_renewal`` keeps it (the renewal thread, loss detection),
``lock_holder`` names and reads the holder, and ``lock_requests`` sends every request to the first
member that answers (with what etcd answers to each). ``MaintenanceLock`` ties them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType

import structlog

from etcdagent.act.lock_acquire import LockAcquirer
from etcdagent.act.lock_holder import LOCK_KEY, current_holder, default_holder
from etcdagent.act.lock_renewal import LeaseRenewal
from etcdagent.act.lock_requests import LockRequests
from etcdagent.errors import LockLostError
from etcdagent.etcd.client import MemberClient

__all__ = [
    "LOCK_KEY",
    "MaintenanceLock",
    "current_holder",
    "default_holder",
]

log = structlog.get_logger(__name__)


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
        self.holder = holder
        self.ttl = ttl
        self.key = key
        self.acquire_timeout = acquire_timeout
        self._clock = clock
        self._requests = LockRequests(members, clock)
        self._acquirer = LockAcquirer(
            self._requests,
            key=key,
            holder=holder,
            ttl=ttl,
            clock=clock,
            sleep=sleep,
            poll_interval=poll_interval,
        )
        self._renewal: LeaseRenewal | None = None

    def __repr__(self) -> str:
        return f"<MaintenanceLock {self.key} holder={self.holder!r} held={self.held}>"

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
        taken = self._acquirer.acquire(timeout)
        renewal = LeaseRenewal(
            self._requests,
            key=self.key,
            holder=self.holder,
            lease_id=taken.lease_id,
            ttl=taken.ttl,
            expires_at=taken.sent + taken.ttl,
            clock=self._clock,
        )
        self._renewal = renewal
        renewal.start()
        log.info("maintenance lock acquired", key=self.key, holder=self.holder, ttl=taken.ttl)

    def release(self) -> None:
        """Stop renewing and revoke the lease, so the key vanishes now rather than after the TTL.

        Idempotent, and never raises: on a dead cluster it logs and lets the lease expire.
        """
        renewal, self._renewal = self._renewal, None
        if renewal is None:
            return
        renewal.stop()
        self._requests.revoke_quietly(renewal.lease_id, self.key)
        log.info("maintenance lock released", key=self.key, holder=self.holder)

    def lost_while_held(self) -> str | None:
        """Why the lock was lost since it was taken, or None; asked just before ``release()``
        (see ``LeaseRenewal.confirmed_lost_reason``)."""
        renewal = self._renewal
        return renewal.confirmed_lost_reason() if renewal is not None else None

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
        return renewal.lost_reason()

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

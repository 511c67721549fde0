"""Keeping the maintenance lock: a thread renews its lease, and the holder asks whether it is lost.

A renewal that fails is only recorded: it may succeed on the next member or the next round, well
within the TTL. The lock counts as lost once etcd says the lease is gone (revoked, or expired
during a long stall), or once no renewal has succeeded for a whole TTL, after which etcd has
dropped the key and another agent may hold it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

import structlog

from etcdagent.act.lock_requests import LockRequests

log = structlog.get_logger(__name__)


class LeaseRenewal:
    """The renewal of one acquisition, shared by the holder's thread and the renewal thread.

    A fresh object per acquisition, so a renewal thread that outlives ``stop()`` (stuck in a
    request to a frozen member) can never touch the state of a later acquisition. The renewal
    thread waits on a ``threading.Event``, so ``stop()`` ends its wait at once.
    """

    def __init__(
        self,
        requests: LockRequests,
        *,
        key: str,
        holder: str,
        lease_id: int,
        ttl: float,
        expires_at: float,
        clock: Callable[[], float],
    ) -> None:
        self._requests = requests
        self.key = key
        self.holder = holder
        self.lease_id = lease_id
        self.ttl = ttl  # as granted by etcd
        self._clock = clock
        self._expires_at = expires_at  # by the lock's clock: last renewal's send time + TTL
        self._lost: str | None = None  # why the lock is known to be lost
        # Each request gets a sixth of the TTL (at least 0.5 s), so a frozen first member leaves
        # time to reach the others before expiry.
        self._request_timeout = max(0.5, ttl / 6)
        self._stop = threading.Event()
        self._guard = threading.Lock()  # only around access to _expires_at and _lost
        self._thread = threading.Thread(  # in the taker's context: its log fields (cluster)
            target=contextvars.copy_context().run,
            args=(self._renew_loop,),
            name=f"etcdagent-lock-renewal-{lease_id:x}",
            daemon=True,  # a dying agent must not hang on it; its lease expires by itself
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; waits a moment for the thread, never a whole TTL."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            # A renewal stuck on a frozen member finishes on its own; never wait a whole TTL.
            self._thread.join(timeout=1.0)

    def lost_reason(self) -> str | None:
        """Why the lock is lost, or None while it is still ours."""
        with self._guard:
            if self._lost is not None:
                return self._lost
            overdue = self._clock() - self._expires_at
        if overdue >= 0:
            return (
                f"the lease was not renewed for its whole TTL of {self.ttl:g}s "
                "(etcd unreachable?); another agent may hold the lock now"
            )
        return None

    def confirmed_lost_reason(self) -> str | None:
        """``lost_reason()``, and when that knows of no loss, what the lock key says: a lease that
        expired before any renewal heard of it (during a run's last step) shows as its key gone
        or on another lease. Asked as the holder lets go; a failed read proves nothing."""
        reason = self.lost_reason()
        if reason is None and self._key_on_lease() is False:
            return "its key is gone from etcd or on another lease"
        return reason

    def _renew_loop(self) -> None:
        """Renew every TTL/3 until stopped, until etcd says the lease is gone, or until no
        renewal has succeeded for a whole TTL (etcd dropped it: renewing is pointless then).

        After a failure the next round comes sooner.
        """
        interval = self.ttl / 3
        timeout = self._request_timeout
        delay = interval
        while not self._stop.wait(delay):
            try:
                ttl, sent = self._requests.keepalive(self.lease_id, timeout=timeout)
            except Exception as exc:  # anything: this thread keeps trying until stopped or lost
                if self._stop.is_set():
                    return
                log.warning("maintenance lock: lease renewal failed", key=self.key, error=str(exc))
                lost = self.lost_reason()
                if lost is not None:
                    # A whole TTL without a renewal: etcd has dropped the lease, so renewing it
                    # is over (the holder sees the loss before its next step).
                    log.error("maintenance lock lost", key=self.key, holder=self.holder, why=lost)
                    return
                delay = interval / 4
                continue
            if self._stop.is_set():
                return
            delay = interval
            if ttl > 0:
                with self._guard:
                    self._expires_at = max(self._expires_at, sent + ttl)
                continue
            if self._still_on_lease():
                delay = interval / 4  # the clock bound (a whole TTL unrenewed) still holds
                continue
            with self._guard:
                self._lost = "etcd says its lease is gone (revoked or expired)"
            log.error("maintenance lock lost", key=self.key, holder=self.holder)
            return

    def _still_on_lease(self) -> bool:
        """After a renewal answered "lease gone": whether the quorum still has the lock key on
        the lease. Seen on etcd 3.5.1 with a writer and multi-second defrags: the first renewal
        of a lease granted a moment before answered TTL 0 while the key (and so the lease) was
        there; believing it lost the lock mid-sweep for nothing. A failed read proves nothing
        either way: the renewal goes on, bounded by the TTL as always."""
        held = self._key_on_lease()
        if held:
            log.warning(
                "maintenance lock: a renewal answered that the lease is gone, but the lock key "
                "is still on it; renewing again",
                key=self.key,
            )
        return held is not False

    def _key_on_lease(self) -> bool | None:
        """Whether the lock key is on this lease now (a linearizable read), None when the read
        failed."""
        try:
            return self._requests.key_on_lease(
                self.key, self.lease_id, timeout=self._request_timeout
            )
        except Exception as exc:  # unknown: the callers decide what that means
            log.warning("maintenance lock: lock key read failed", key=self.key, error=str(exc))
            return None

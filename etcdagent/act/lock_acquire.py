"""Taking the maintenance lock: a lease, then a transaction that puts the key only if it is absent.

While another holder has the key, the attempt is repeated every poll interval until the deadline,
keeping our own lease alive meanwhile (a wait may outlast its TTL); when the time is up the error
names the other holder, read from the failed transaction itself. The answer shapes relied on are
listed in ``lock_requests``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from etcdagent.act.lock_requests import LockRequests, int_field, lease_not_found
from etcdagent.errors import (
    ClusterUnavailableError,
    EtcdError,
    EtcdProtocolError,
    LockBusyError,
)

log = structlog.get_logger(__name__)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


@dataclass(frozen=True)
class Taken:
    """The lease the key was put under, its granted TTL, and when its last renewal was sent."""

    lease_id: int
    ttl: float
    sent: float


class LockAcquirer:
    """Takes ``key`` for ``holder`` under a fresh lease of ``ttl`` seconds (rounded up)."""

    def __init__(
        self,
        requests: LockRequests,
        *,
        key: str,
        holder: str,
        ttl: float,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        poll_interval: float,
    ) -> None:
        self._requests = requests
        self.key = key
        self.holder = holder
        self.ttl = ttl
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval

    def acquire(self, timeout: float) -> Taken:
        """Take the key, waiting up to ``timeout`` seconds for another holder to let go.

        ``LockBusyError`` names the other holder when the time is up; on any failure our lease is
        revoked, so it does not outlive the attempt.
        """
        deadline = self._clock() + timeout
        sent = self._clock()
        lease_id, ttl = self._grant()
        try:
            while True:
                try:
                    other = self._try_take(lease_id)
                except EtcdError as exc:
                    if not lease_not_found(exc):
                        raise
                    # Our lease expired while we waited (its renewals went unanswered during
                    # a long defrag elsewhere): a fresh one, and try again.
                    sent = self._clock()
                    lease_id, ttl = self._grant()
                    continue
                if other is None:
                    return Taken(lease_id=lease_id, ttl=ttl, sent=sent)
                remaining = deadline - self._clock()
                if remaining <= 0:
                    waited = f" (gave up after waiting {timeout:g}s)" if timeout > 0 else ""
                    raise LockBusyError(
                        f"maintenance already running by {other}{waited}", holder=other
                    )
                log.debug("maintenance lock busy, waiting", key=self.key, holder=other)
                self._sleep(min(self._poll_interval, remaining))
                if self._clock() - sent >= ttl / 3:
                    lease_id, ttl, sent = self._keep_waiting_lease(lease_id, ttl, sent)
        except BaseException:
            self._requests.revoke_quietly(lease_id, self.key)
            raise

    def _keep_waiting_lease(
        self, lease_id: int, ttl: float, sent: float
    ) -> tuple[int, float, float]:
        """A wait longer than the TTL must not let our own lease expire under us: renew it, or
        take a new one once etcd says it is gone. A renewal nobody answers (every member busy or
        slow) is not fatal to the wait: the next round, or the take itself, finds out."""
        try:
            renewed, answered_sent = self._requests.keepalive(lease_id)
        except (EtcdError, ClusterUnavailableError) as exc:
            if not exc.transient:
                raise
            log.debug("maintenance lock: renewal while waiting failed", error=str(exc))
            return lease_id, ttl, sent
        if renewed <= 0:
            new_sent = self._clock()
            new_id, new_ttl = self._grant()
            return new_id, new_ttl, new_sent
        return lease_id, ttl, answered_sent

    def _grant(self) -> tuple[int, float]:
        answer = self._requests.call(
            "lock lease grant", "/lease/grant", {"TTL": str(math.ceil(self.ttl))}
        )
        lease_id = int_field(answer, "ID")
        granted = int_field(answer, "TTL")
        if lease_id == 0 or granted <= 0:
            raise EtcdProtocolError(
                f"maintenance lock: lease grant answered without a lease ID or TTL: {answer!r}",
                operation="lock lease grant",
            )
        return lease_id, float(granted)

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
        answer = self._requests.call("lock txn", "/kv/txn", txn)
        if answer.get("succeeded"):
            return None
        responses = answer.get("responses") or [{}]
        first = responses[0] if isinstance(responses[0], dict) else {}
        kvs = (first.get("response_range") or {}).get("kvs") or []
        if not kvs or not isinstance(kvs[0], dict):
            return "an unknown holder"  # cannot happen: the txn's compare saw the key
        if int_field(kvs[0], "lease") == lease_id:
            # Our own earlier attempt went through although its answer was lost (a timeout, and
            # the request then went to the next member): the key is ours.
            return None
        try:
            return base64.b64decode(kvs[0].get("value", "")).decode("utf-8", errors="replace")
        except (ValueError, TypeError):
            return "an unknown holder"

"""The maintenance lock's requests: each sent to the first member that answers.

The lock lives under an etcd lease; this module holds the lease calls that both taking and
keeping the lock make (keepalive, revoke), and the failover that every lock request goes through.
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
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from etcdagent.errors import ClusterUnavailableError, EtcdError
from etcdagent.etcd.client import MemberClient

_LEASE_NOT_FOUND_CODE = 5  # gRPC NotFound: "etcdserver: requested lease not found"

log = structlog.get_logger(__name__)


def int_field(answer: Any, name: str) -> int:
    """An int64 field of a gateway answer (a JSON string; omitted when zero)."""
    raw = answer.get(name, 0) if isinstance(answer, dict) else 0
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0


def lease_not_found(exc: EtcdError) -> bool:
    """etcd's answer to a request naming a lease it no longer has (expired or revoked)."""
    return exc.code == _LEASE_NOT_FOUND_CODE or "lease not found" in str(exc).lower()


class LockRequests:
    """Sends the lock's requests to the members ``members()`` returns now, in that order.

    A transient failure (refused, timeout, no leader) moves on to the next member, any other
    failure is raised at once. ``clock`` stamps when the answered request was sent: a renewal
    counts from then.
    """

    def __init__(
        self,
        members: Callable[[], Sequence[MemberClient]],
        clock: Callable[[], float],
        *,
        timeout: float | None = None,
    ) -> None:
        self._members = members
        self._clock = clock
        self._timeout = timeout  # per request when the caller gives none (None: the client's)

    def call(
        self, operation: str, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """POST to the first member that answers; a transient failure moves on to the next.

        Not retried on one member: the next member is a faster way around a dead or frozen one,
        and a lock request that times out may still have been applied, which the callers handle.
        """
        return self.call_timed(operation, path, body, timeout=timeout)[0]

    def call_timed(
        self, operation: str, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> tuple[Any, float]:
        """``call``, plus the clock reading taken just before the request that was answered
        (a renewal counts from then, not from the first member that timed out)."""
        failures: list[str] = []
        timeout = self._timeout if timeout is None else timeout
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

    def keepalive(self, lease_id: int, timeout: float | None = None) -> tuple[int, float]:
        """Renew the lease once: the TTL etcd answered (0 when the lease is gone) and when the
        answered request was sent."""
        answer, sent = self.call_timed(
            "lock lease keepalive", "/lease/keepalive", {"ID": str(lease_id)}, timeout=timeout
        )
        result = answer.get("result") if isinstance(answer, dict) else None
        return int_field(result, "TTL"), sent

    def key_on_lease(self, key: str, lease_id: int, timeout: float | None = None) -> bool:
        """Whether ``key`` exists now under ``lease_id``, by a linearizable read (the quorum's
        view, not one member's): a lease that expired or was revoked has taken its keys with it
        through raft, so a key still on the lease means the lease was alive at the read."""
        answer = self.call(
            "lock key read",
            "/kv/range",
            {"key": base64.b64encode(key.encode()).decode()},
            timeout=timeout,
        )
        kvs = answer.get("kvs") if isinstance(answer, dict) else None
        if not isinstance(kvs, list) or not kvs or not isinstance(kvs[0], dict):
            return False
        return int_field(kvs[0], "lease") == lease_id

    def revoke(self, lease_id: int) -> None:
        try:
            self.call("lock lease revoke", "/kv/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if not lease_not_found(exc):  # already expired or revoked: nothing to release
                raise

    def revoke_quietly(self, lease_id: int, key: str) -> None:
        """``revoke`` on a cleanup path: a failure is logged, and the lease expires by itself."""
        try:
            self.revoke(lease_id)
        except Exception as exc:  # cleanup path: the lease expires by itself anyway
            log.warning(
                "maintenance lock: could not revoke the lease; the lock frees itself when it "
                "expires",
                key=key,
                error=str(exc),
            )

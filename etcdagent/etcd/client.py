"""The only code that speaks to etcd.

One ``MemberClient`` per member endpoint, each bound to that member's gateway, because maintenance
calls (status, defragment, move-leader) answer for, or act on, the member they are sent to.
``ClusterClient`` keeps one client per member for the process lifetime, so each keeps its HTTP
pool and auth token.

A member client is three jobs stacked: ``gateway.Gateway`` sends one request and translates its
failure, ``auth.TokenAuth`` adds the token (lazily, renewed when rejected), ``retry.RetryPolicy``
asks again under a deadline. This module holds the calls the other layers make.

Failures leave this module as ``EtcdError`` subclasses whose message names the member, what failed
and what to check. Transient ones (refused, reset, timeout, 503) are retried under a deadline;
defragment and move-leader are never retried: a client-side timeout does not cancel them on the
server, so the caller must re-check instead.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import requests

from etcdagent.clock import Clock, Sleep, utcnow
from etcdagent.errors import EtcdCompactedError, EtcdError, EtcdProtocolError
from etcdagent.etcd.auth import TokenAuth
from etcdagent.etcd.gateway import Gateway
from etcdagent.etcd.gateway_errors import connection_error
from etcdagent.etcd.metrics_text import parse_member_metrics
from etcdagent.etcd.retry import RetryPolicy
from etcdagent.models import (
    Alarm,
    AlarmList,
    AlarmType,
    HashKV,
    MemberList,
    MemberMetrics,
    MemberStatus,
    RangeAnswer,
)
from etcdagent.settings import Settings


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"  # the whole keyspace
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _header_revision(answer: dict[str, Any]) -> int:
    header = answer.get("header")
    try:
        return int(header.get("revision", 0)) if isinstance(header, dict) else 0
    except (TypeError, ValueError):
        return 0


class MemberClient:
    """Talks to one member through its gRPC-JSON gateway."""

    def __init__(
        self,
        endpoint: str,
        settings: Settings,
        *,
        metrics_url: str | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._gateway = Gateway(endpoint, settings.tls, settings.connection.request_timeout)
        self.endpoint = endpoint
        self.metrics_url = (metrics_url or endpoint).rstrip("/") + "/metrics"
        self._clock = clock
        self._session = self._gateway.session
        self._timeout = settings.connection.request_timeout
        self._retry = RetryPolicy(settings.connection.retry_deadline, sleep)
        self._auth = TokenAuth(
            self._gateway, settings.auth.username, settings.auth.resolved_password()
        )

    def close(self) -> None:
        self._gateway.close()

    def use_metrics_url(self, metrics_url: str | None) -> None:
        """Scrape ``metrics_url`` (None: the client URL) from now on: which member is the local
        one (``connection.local_metrics_url``) is known only once the member list is."""
        self.metrics_url = (metrics_url or self.endpoint).rstrip("/") + "/metrics"

    def check_credentials(self) -> bool:
        """Authenticate now if a user is configured, so a wrong password is reported up front
        rather than at the first call that needs it. False when it could not be checked (no
        leader to issue a token); a wrong password raises EtcdAuthError."""
        return self._auth.check_credentials()

    def call(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        retry: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """POST to the gateway; retried under the deadline only when ``retry`` and transient."""

        def once() -> Any:
            return self._auth.post(operation, path, body, timeout)

        return self._retry(once) if retry else once()

    # -- maintenance API --------------------------------------------------------------------
    # status and member list go without a token (versions.TOKENLESS_PATHS): no leader needed.

    def status(self, *, retry: bool = True) -> MemberStatus:
        answer = self.call("status", "/maintenance/status", {}, retry=retry)
        return MemberStatus.from_gateway(answer, endpoint=self.endpoint)

    def member_list(self, *, retry: bool = True) -> MemberList:
        answer = self.call("member list", "/cluster/member/list", {}, retry=retry)
        return MemberList.from_gateway(answer, endpoint=self.endpoint)

    def alarms(self) -> tuple[Alarm, ...]:
        answer = self.call("alarm list", "/maintenance/alarm", {"action": "GET"})
        listed = AlarmList.from_gateway(answer, endpoint=self.endpoint).alarms
        return tuple(a for a in listed if a.alarm is not AlarmType.NONE)

    def disarm(self, alarm: Alarm) -> None:
        self.call(
            "alarm disarm",
            "/maintenance/alarm",
            {"action": "DEACTIVATE", "memberID": str(alarm.member_id), "alarm": alarm.alarm.value},
        )

    def compact(
        self, revision: int, *, physical: bool = True, timeout: float | None = None
    ) -> bool:
        """Compact the keyspace (cluster-wide, through raft).

        Returns False when the revision was already compacted, which counts as done. With
        ``physical`` the member answers once it has compacted, which on a large history takes
        longer than an ordinary request: ``timeout`` (compaction.request_timeout) is its own.
        A timed-out request may still compact on the server (asked again, it answers "already
        compacted"): the caller watches the members' metrics instead of trusting the answer.
        """
        try:
            self.call(
                "compact",
                "/kv/compaction",
                {"revision": str(revision), "physical": physical},
                timeout=timeout,
            )
        except EtcdCompactedError:
            return False
        return True

    def defragment(self, timeout: float) -> None:
        """Defragment this member. Never retried: a timed-out defrag still runs on the server."""
        self.call("defragment", "/maintenance/defragment", {}, retry=False, timeout=timeout)

    def hashkv(self, revision: int, *, timeout: float | None = None) -> HashKV:
        """This member's hash of its keyspace up to ``revision`` (etcd 3.5.10+, root under auth).

        A read, so retried when transient; ``timeout`` because the member hashes every key up
        to the revision, which takes longer than a status on a large database. Raises
        EtcdCompactedError below the member's compacted revision and EtcdFutureRevisionError
        above what it has applied; versions older than ``versions.HASHKV_SINCE`` answer 404.
        """
        answer = self.call(
            "hashkv", "/maintenance/hashkv", {"revision": str(revision)}, timeout=timeout
        )
        return HashKV.from_gateway(answer, endpoint=self.endpoint)

    def move_leader(self, target_id: int) -> None:
        """Transfer leadership; must be sent to the current leader."""
        self.call(
            "move leader",
            "/maintenance/transfer-leadership",
            {"targetID": str(target_id)},
            retry=False,
        )

    # -- keys (probe writes, locks) ------------------------------------------------------------

    def put(self, key: str | bytes, value: str | bytes, *, retry: bool = False) -> int:
        """Write one key; returns the store revision after the write."""
        answer = self.call("put", "/kv/put", {"key": _b64(key), "value": _b64(value)}, retry=retry)
        return _header_revision(answer)

    def get(self, key: str | bytes) -> bytes | None:
        answer = self.call("get", "/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        try:
            return base64.b64decode(kvs[0].get("value", ""))
        except (ValueError, AttributeError, TypeError):
            raise EtcdProtocolError(
                f"{self.endpoint}: get failed: the value is not base64",
                endpoint=self.endpoint,
                operation="get",
            ) from None

    def range_prefix(self, prefix: str | bytes, *, limit: int = 0) -> RangeAnswer:
        """Every key under ``prefix`` (the gateway's range with range_end = prefix + 1)."""
        raw = prefix.encode() if isinstance(prefix, str) else prefix
        body: dict[str, Any] = {"key": _b64(raw), "range_end": _b64(_prefix_end(raw))}
        if limit:
            body["limit"] = str(limit)
        answer = self.call("range", "/kv/range", body)
        return RangeAnswer.from_gateway(answer, endpoint=self.endpoint)

    def delete(self, key: str | bytes) -> int:
        """Delete one key; returns how many keys were deleted (0 or 1)."""
        answer = self.call("delete", "/kv/deleterange", {"key": _b64(key)})
        try:
            return int(answer.get("deleted", 0))
        except (TypeError, ValueError):
            return 0

    def metrics(self) -> MemberMetrics:
        return self._retry(self._metrics_once)

    def _metrics_once(self) -> MemberMetrics:
        operation = "metrics scrape"
        try:
            # The auth token is for the gateway only; /metrics needs none. Uncompressed: gzip
            # would cost the member CPU to save ~150 KB per scrape, a bad trade for the member.
            response = self._session.get(
                self.metrics_url,
                timeout=self._timeout,
                headers={"Authorization": None, "Accept-Encoding": "identity"},
            )
        except requests.RequestException as exc:
            raise connection_error(self.metrics_url, operation, str(exc)) from None
        if response.status_code != 200:
            raise EtcdError(
                f"{self.metrics_url}: {operation} failed: HTTP {response.status_code}",
                endpoint=self.endpoint,
                operation=operation,
                status=response.status_code,
                transient=response.status_code in (502, 503, 504),
            )
        return parse_member_metrics(
            response.text, scraped_at=self._clock(), endpoint=self.metrics_url
        )


class ClusterClient:
    """Member clients for one cluster, created on demand and reused (one HTTP pool each)."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow, sleep: Sleep = time.sleep):
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self._clients: dict[str, MemberClient] = {}
        self._lock = threading.Lock()
        # The members' client URLs from the last successful discovery: asked for the member
        # list when no configured endpoint answers (the local member restarting), so that only
        # that member looks down. Set by observe, carried over a reload by the daemon.
        self.known_urls: tuple[str, ...] = ()
        # The endpoint of the member `daemon.local_member` names, once resolved: it is scraped
        # on connection.local_metrics_url.
        self.local_endpoint: str | None = None
        # Which member last answered on a `daemon.local_member` URL no member advertises: still
        # that member while the URL does not answer (its etcd restarting).
        self._answered_on: dict[str, int] = {}

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def metrics_url_for(self, endpoint: str, name: str = "") -> str | None:
        """Where the member at ``endpoint`` is scraped: its metrics_urls entry (by name or
        client URL), else local_metrics_url for the local member, else (None) its client URL."""
        connection = self.settings.connection
        urls = connection.metrics_urls
        key = endpoint.rstrip("/")
        explicit = (urls.get(name) if name else None) or urls.get(key)
        if explicit is None and key == self.local_endpoint:
            return connection.local_metrics_url
        return explicit

    def member(self, endpoint: str, name: str = "") -> MemberClient:
        """The client for the member at ``endpoint`` (one per URL for the process lifetime).

        With ``name`` (observe names every member it asks) the metrics URL is chosen again: the
        client may have been made before the member's name or locality was known.
        """
        key = endpoint.rstrip("/")
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = MemberClient(
                    key,
                    self.settings,
                    metrics_url=self.metrics_url_for(key, name),
                    clock=self.clock,
                    sleep=self.sleep,
                )
                self._clients[key] = client
            elif name:
                client.use_metrics_url(self.metrics_url_for(key, name))
            return client

    def remember_answer(self, url: str, member_id: int) -> None:
        """Member ``member_id`` answered on ``url`` (a `daemon.local_member` URL)."""
        self._answered_on[url.rstrip("/")] = member_id

    def answered_on(self, url: str) -> int | None:
        """The member that last answered on ``url``, if one did."""
        return self._answered_on.get(url.rstrip("/"))

    @property
    def endpoints(self) -> list[str]:
        return list(self.settings.connection.endpoints)

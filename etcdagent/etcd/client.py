"""The only code that speaks to etcd.

One ``MemberClient`` per member endpoint, each an etcd3gw client bound to that member, because
maintenance calls (status, defragment, move-leader) answer for, or act on, the member they are sent
to. ``ClusterClient`` finds every member from one reachable endpoint and gathers their statuses and
metrics concurrently.

Failures leave this module as ``EtcdError`` subclasses whose message names the member, what failed
and what to check. Transient ones (refused, reset, timeout, 503) are retried under a deadline;
defragment and move-leader are never retried: a client-side timeout does not cancel them on the
server, so the caller must re-check instead.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import (
    Etcd3Exception,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from etcdagent.errors import (
    EtcdAuthError,
    EtcdCompactedError,
    EtcdError,
    EtcdProtocolError,
)
from etcdagent.etcd.gateway_errors import connection_error, translate
from etcdagent.etcd.metrics_text import parse_member_metrics
from etcdagent.etcd.transport import make_session
from etcdagent.logs import register_secrets
from etcdagent.models import (
    Alarm,
    AlarmList,
    AlarmType,
    MemberList,
    MemberMetrics,
    MemberStatus,
    RangeAnswer,
)
from etcdagent.settings import Settings

T = TypeVar("T")
Clock = Callable[[], datetime]
Sleep = Callable[[float], None]

_API_PATH = "/v3/"  # etcd >= 3.4; skipping /version discovery saves a round trip per member


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def _refused_for_credentials(exc: EtcdAuthError) -> bool:
    text = str(exc).lower()
    return "authentication enabled" in text or "permission denied" in text or _stale_token(exc)


def _stale_token(exc: EtcdAuthError) -> bool:
    text = str(exc).lower()
    return exc.status == 401 or "invalid auth token" in text or "auth store is old" in text


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, EtcdError) and exc.transient


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
        try:
            parts = urlsplit(endpoint)
            port = parts.port  # raises on "host:99999" or a broken IPv6 literal
        except ValueError:
            port = None
            parts = urlsplit("")
        if not parts.hostname or port is None:
            raise EtcdProtocolError(f"{endpoint}: not a host:port endpoint", endpoint=endpoint)
        self.endpoint = endpoint
        self.metrics_url = (metrics_url or endpoint).rstrip("/") + "/metrics"
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._session = make_session(settings.tls)
        self._timeout = settings.connection.request_timeout
        self._gateway = Etcd3Client(
            host=parts.hostname,
            port=port,
            protocol=parts.scheme,
            timeout=self._timeout,
            api_path=_API_PATH,
            session=self._session,
        )
        self._username = settings.auth.username
        self._password = settings.auth.resolved_password()
        self._token: str | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._session.close()

    # -- plumbing -------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=stop_after_delay(self._settings.connection.retry_deadline),
            wait=wait_exponential(multiplier=0.05, max=1.0) + wait_random(0, 0.05),
            retry=retry_if_exception(_is_transient),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(fn)

    def _raw_post(
        self, operation: str, path: str, body: dict[str, Any], timeout: float | None
    ) -> Any:
        gateway = self._gateway
        if timeout is not None and timeout != self._timeout:
            gateway = Etcd3Client(
                host=gateway.host,
                port=gateway.port,
                protocol=gateway.protocol,
                timeout=timeout,
                api_path=_API_PATH,
                session=self._session,
            )
        try:
            answer = gateway.post(gateway.get_url(path), json=body)
        except Etcd3Exception as exc:
            raise translate(exc, self.endpoint, operation) from None
        except requests.RequestException as exc:  # anything etcd3gw did not wrap
            raise connection_error(self.endpoint, operation, str(exc)) from None
        except ValueError as exc:  # the body was not JSON
            raise EtcdProtocolError(
                f"{self.endpoint}: {operation} failed: the answer is not JSON ({exc})",
                endpoint=self.endpoint,
                operation=operation,
            ) from None
        if not isinstance(answer, dict):
            raise EtcdProtocolError(
                f"{self.endpoint}: {operation} failed: expected a JSON object",
                endpoint=self.endpoint,
                operation=operation,
            )
        return answer

    def _authenticate(self) -> None:
        assert self._username is not None
        self._session.headers.pop("Authorization", None)
        answer = self._raw_post(
            "authenticate",
            "/auth/authenticate",
            {"name": self._username, "password": self._password or ""},
            None,
        )
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError(
                f"{self.endpoint}: authenticate failed: no token in the answer "
                "(is authentication enabled on the cluster?)",
                endpoint=self.endpoint,
                operation="authenticate",
            )
        register_secrets([token])  # tokens must never reach a log line or an error message
        self._token = token
        self._session.headers["Authorization"] = token

    def _post_once(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        timeout: float | None,
        auth_optional: bool = False,
    ) -> Any:
        with self._lock:
            # Calls that etcd 3.4/3.5 answer without a token (status, member list) go without one
            # until refused: authenticating goes through raft, so it fails exactly when a member
            # without a leader should still be able to say so.
            if self._username and self._token is None and not auth_optional:
                self._authenticate()
            try:
                return self._raw_post(operation, path, body, timeout)
            except EtcdAuthError as exc:
                if not self._username:
                    raise
                if self._token is None and not _refused_for_credentials(exc):
                    raise
                if self._token is not None and not _stale_token(exc):
                    raise
                # No token yet, an expired one (TTL 300 s by default), or one issued before an
                # auth change: authenticate once, then repeat the call.
                self._token = None
                self._authenticate()
                return self._raw_post(operation, path, body, timeout)

    def check_credentials(self) -> bool:
        """Authenticate now if a user is configured, so a wrong password is reported up front
        rather than at the first call that needs it. False when it could not be checked (no
        leader to issue a token); a wrong password raises EtcdAuthError."""
        if not self._username:
            return True
        with self._lock:
            if self._token is not None:
                return True
            try:
                self._authenticate()
            except EtcdError as exc:
                if exc.transient:
                    return False
                raise
            return True

    def call(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        retry: bool = True,
        timeout: float | None = None,
        auth_optional: bool = False,
    ) -> Any:
        """POST to the gateway; retried under the deadline only when ``retry`` and transient."""

        def once() -> Any:
            return self._post_once(operation, path, body, timeout, auth_optional)

        return self._retrying(once) if retry else once()

    # -- maintenance API --------------------------------------------------------------------

    def status(self, *, retry: bool = True) -> MemberStatus:
        answer = self.call("status", "/maintenance/status", {}, retry=retry, auth_optional=True)
        return MemberStatus.from_gateway(answer, endpoint=self.endpoint)

    def member_list(self, *, retry: bool = True) -> MemberList:
        answer = self.call(
            "member list", "/cluster/member/list", {}, retry=retry, auth_optional=True
        )
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

    def compact(self, revision: int, *, physical: bool = True) -> bool:
        """Compact the keyspace (cluster-wide, through raft).

        Returns False when the revision was already compacted, which counts as done.
        """
        try:
            self.call(
                "compact", "/kv/compaction", {"revision": str(revision), "physical": physical}
            )
        except EtcdCompactedError:
            return False
        return True

    def defragment(self, timeout: float) -> None:
        """Defragment this member. Never retried: a timed-out defrag still runs on the server."""
        self.call("defragment", "/maintenance/defragment", {}, retry=False, timeout=timeout)

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
        return self._retrying(self._metrics_once)

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
        urls = self.settings.connection.metrics_urls
        return urls.get(name) or urls.get(endpoint.rstrip("/"))

    def member(self, endpoint: str, name: str = "") -> MemberClient:
        """The client for the member at ``endpoint`` (one per URL for the process lifetime)."""
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
            return client

    @property
    def endpoints(self) -> list[str]:
        return list(self.settings.connection.endpoints)

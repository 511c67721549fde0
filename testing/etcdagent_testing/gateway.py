"""The requests tests send to a cluster's gRPC gateway: raw POSTs, root auth, puts and gets,
garbage to fragment the database, alarms.

The test side's own small client, independent of etcdagent's: tests set up and check the
cluster without going through the code they test.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import requests

from etcdagent_testing.errors import EtcdHarnessError, EtcdRequestError

if TYPE_CHECKING:
    from etcdagent_testing.certs import TLSFiles
    from etcdagent_testing.member import EtcdMember

__all__ = ["GatewayRequests"]

_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
_MAX_TXN_BYTES = 1024 * 1024  # stay below --max-request-bytes (1.5 MiB default)
_TOKEN_MAX_AGE = 60.0  # simple tokens live 300 s by default; refresh well before


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


class GatewayRequests:
    """HTTP requests to the members' gateways, as methods of :class:`EtcdCluster`.

    A base class of the cluster rather than an object of its own so that tests keep writing
    ``cluster.put(...)``; it needs only ``members``, ``tls_files`` and ``root_password``.
    """

    members: list[EtcdMember]
    tls_files: TLSFiles | None
    root_password: str

    def __init__(self) -> None:
        self.auth_enabled = False
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()

    # -- HTTP ------------------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """A per-thread ``requests.Session`` carrying the cluster's TLS client cert and CA.

        ``trust_env`` is off: with it on, ``REQUESTS_CA_BUNDLE`` silently replaces
        ``session.verify``.
        """
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Ignore REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (they would override session.verify),
            # proxies and netrc: we only ever talk to 127.0.0.1.
            session.trust_env = False
            if self.tls_files is not None:
                session.verify = str(self.tls_files.ca_file)
                session.cert = (str(self.tls_files.client_cert), str(self.tls_files.client_key))
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _close_sessions(self) -> None:
        """Close every thread's session; the next request opens a new one."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def request(
        self,
        member: EtcdMember,
        path: str,
        body: dict[str, Any],
        *,
        token: str | None = None,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """POST ``body`` to ``member.client_url + "/v3/" + path`` and return the JSON answer.

        Raises :class:`EtcdRequestError` on a non-200 answer (the body is in the message).
        """
        url = f"{member.client_url}/v3/{path.lstrip('/')}"
        headers = {"Authorization": token} if token else None
        resp = self.session().post(url, json=body, headers=headers, timeout=timeout)
        if resp.status_code != 200:
            raise EtcdRequestError(url, resp.status_code, resp.text)
        result = resp.json() if resp.content else {}
        if not isinstance(result, dict):
            raise EtcdRequestError(url, resp.status_code, resp.text)
        return result

    def _default_member(self) -> EtcdMember:
        for member in self.members:
            if member.running and not member.paused:
                return member
        raise EtcdHarnessError("no member is running")

    # -- auth ------------------------------------------------------------------------------------

    def _enable_auth(self) -> None:
        member = self._default_member()
        self.request(member, "auth/role/add", {"name": "root"})
        self.request(member, "auth/user/add", {"name": "root", "password": self.root_password})
        self.request(member, "auth/user/grant", {"user": "root", "role": "root"})
        self.request(member, "auth/enable", {})
        self.auth_enabled = True

    def root_token(
        self, member: EtcdMember | None = None, *, fresh: bool = False, timeout: float = 10
    ) -> str:
        """A root token obtained from ``member`` (cached per member for a minute)."""
        member = member or self._default_member()
        now = time.monotonic()
        with self._tokens_lock:
            cached = self._tokens.get(member.name)
        if cached is not None and not fresh and now - cached[1] < _TOKEN_MAX_AGE:
            return cached[0]
        answer = self.request(
            member,
            "auth/authenticate",
            {"name": "root", "password": self.root_password},
            timeout=timeout,
        )
        token = str(answer["token"])
        with self._tokens_lock:
            self._tokens[member.name] = (token, now)
        return token

    def _authed(
        self, member: EtcdMember, path: str, body: dict[str, Any], timeout: float = 10
    ) -> dict[str, Any]:
        """``request`` with a root token when auth is on (refreshed once on a bad token)."""
        if not self.auth_enabled:
            return self.request(member, path, body, timeout=timeout)
        try:
            token = self.root_token(member, timeout=timeout)
            return self.request(member, path, body, token=token, timeout=timeout)
        except EtcdRequestError as exc:
            if exc.status != 401 and "token" not in exc.message:
                raise
        token = self.root_token(member, fresh=True, timeout=timeout)
        return self.request(member, path, body, token=token, timeout=timeout)

    def member_status(self, member: EtcdMember, timeout: float = 5) -> dict[str, Any]:
        """``/v3/maintenance/status`` of ``member``: without a token, as etcd 3.4 and 3.5.1
        answer it even with auth on (and without a leader), else with a root token (3.5.30 and
        3.6 refuse it without one: HTTP 400 "user name is empty"; a token needs a leader)."""
        try:
            return self.request(member, "maintenance/status", {}, timeout=timeout)
        except EtcdRequestError as exc:
            if not (self.auth_enabled and "user name is empty" in exc.message):
                raise
        return self._authed(member, "maintenance/status", {}, timeout=timeout)

    # -- KV helpers ------------------------------------------------------------------------------

    def put(self, key: str, value: str | bytes, member: EtcdMember | None = None) -> int:
        """Put ``key`` through the gateway; return the new revision."""
        member = member or self._default_member()
        answer = self._authed(member, "kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(answer["header"]["revision"])

    def get(self, key: str, member: EtcdMember | None = None) -> bytes | None:
        """Linearizable get of ``key``; None when absent."""
        member = member or self._default_member()
        answer = self._authed(member, "kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", ""))

    def write_garbage(
        self, n_keys: int, value_size: int, rounds: int = 1, *, txn_ops: int = _MAX_TXN_OPS
    ) -> int:
        """Write ``n_keys`` keys ``/garbage/NNNNNNNN`` of ``value_size`` random bytes, ``rounds``
        times over (old revisions become free pages after a compaction: fragmentation).

        Puts are batched into ``/v3/kv/txn`` requests of up to ``txn_ops`` puts (and ~1 MiB):
        each transaction is ONE revision. ``txn_ops=1`` sends plain puts, one revision per key
        (~400-450 puts/s on loopback, fsync-bound). Returns the last revision. Raises
        :class:`EtcdRequestError` (HTTP 429, "database space exceeded") at the quota.
        """
        if n_keys < 1 or rounds < 1 or txn_ops < 1:
            raise ValueError("n_keys, rounds and txn_ops must be >= 1")
        member = self._default_member()
        per_put = value_size * 4 // 3 + 64
        batch = max(1, min(txn_ops, _MAX_TXN_OPS, _MAX_TXN_BYTES // per_put))
        revision = 0
        for _ in range(rounds):
            for start in range(0, n_keys, batch):
                puts = [
                    {"key": _b64(f"/garbage/{i:08d}"), "value": _b64(os.urandom(value_size))}
                    for i in range(start, min(start + batch, n_keys))
                ]
                if len(puts) == 1:
                    answer = self._authed(member, "kv/put", puts[0])
                else:
                    ops = [{"requestPut": put} for put in puts]
                    answer = self._authed(member, "kv/txn", {"success": ops})
                revision = int(answer["header"]["revision"])
        return revision

    def alarms(self, member: EtcdMember | None = None) -> list[dict[str, Any]]:
        """The active alarms (``[{"memberID": "...", "alarm": "NOSPACE"}]``)."""
        member = member or self._default_member()
        answer = self._authed(member, "maintenance/alarm", {"action": "GET"})
        alarms = answer.get("alarms") or []
        return [a for a in alarms if isinstance(a, dict)]

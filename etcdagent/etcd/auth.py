"""The auth token of one member's session: taken when first needed, renewed when etcd rejects it.

etcd's gateway takes a token (from /v3/auth/authenticate) in the Authorization header. The token is
taken lazily, because authenticating goes through raft and fails exactly when a member without a
leader should still be able to answer the calls that may need none (``versions.TOKENLESS_PATHS``:
etcd 3.4 and 3.5.1 answer them without a token, 3.5.30 and 3.6 refuse). A call refused for the
lack of a token, or for an expired token or one older than an auth change, authenticates once and
is sent again. When no token can be had, or the user lacks a role, the error says so in one line:
the member answers, what it needs, what to do. A token never reaches a log line or an error
message: each one is registered as a secret the moment it is issued.
"""

from __future__ import annotations

import threading
from typing import Any

from etcdagent.errors import EtcdAuthError, EtcdError, EtcdTokenRequiredError
from etcdagent.etcd import versions
from etcdagent.etcd.gateway import Gateway
from etcdagent.logs import register_secrets

_PROBE_TIMEOUT = 2.0  # /health and /version are answered locally, even without a leader


def refused_for_credentials(exc: EtcdAuthError) -> bool:
    """A call sent without a token was refused for the lack of one."""
    return isinstance(exc, EtcdTokenRequiredError) or denied(exc) or stale_token(exc)


def stale_token(exc: EtcdAuthError) -> bool:
    """A call sent with a token was refused for that token (expired, or older than the auth
    store), not for the user's permissions."""
    text = str(exc).lower()
    return exc.status == 401 or "invalid auth token" in text or "auth store is old" in text


def denied(exc: EtcdAuthError) -> bool:
    """Refused for the user's roles: HTTP 403 code 7, or before 3.6 HTTP 500 code 2 "auth:
    permission denied" for hash, hashkv and defragment."""
    return exc.status == 403 or exc.code == 7 or "permission denied" in str(exc).lower()


def _call_name(operation: str) -> str:
    """How a message names the call: "the member list" reads better than "member list"."""
    return "the member list" if operation == "member list" else operation


class TokenAuth:
    """Sends the calls to one member's gateway, with a token when a user is configured.

    One call at a time: the token is state of the shared HTTP session (a header), replaced in
    place when renewed, so two calls must not renew it at once.
    """

    def __init__(self, gateway: Gateway, username: str | None, password: str | None) -> None:
        self._gateway = gateway
        self._username = username
        self._password = password
        self.token: str | None = None  # the one the session sends; None until needed
        self._lock = threading.Lock()

    def post(
        self, operation: str, path: str, body: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        """One call, authenticating first or once again when needed; never retried here."""
        with self._lock:
            try:
                return self._post(operation, path, body, timeout)
            except EtcdAuthError as exc:
                if self._username and denied(exc):
                    raise self._role_missing(exc, operation, path) from None
                raise

    def _post(
        self, operation: str, path: str, body: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        tokenless = self.token is None and versions.answers_without_token(path)
        if self._username and self.token is None and not tokenless:
            self._authenticate(operation)
        try:
            return self._gateway.post(operation, path, body, timeout)
        except EtcdAuthError as exc:
            if not self._username:
                raise
            if self.token is None and not refused_for_credentials(exc):
                raise
            if self.token is not None and not stale_token(exc):
                raise
            # No token yet, an expired one, or one issued before an auth change:
            # authenticate once, then repeat the call.
            self.token = None
            self._authenticate(operation, refused_without_token=tokenless)
        return self._gateway.post(operation, path, body, timeout)

    def check_credentials(self) -> bool:
        """Authenticate now if a user is configured, so a wrong password is reported up front
        rather than at the first call that needs it. False when it could not be checked (no
        leader to issue a token); a wrong password raises EtcdAuthError."""
        if not self._username:
            return True
        with self._lock:
            if self.token is not None:
                return True
            try:
                self._authenticate("credentials check")
            except EtcdError as exc:
                if exc.transient:
                    return False
                raise
            return True

    def _authenticate(self, operation: str, *, refused_without_token: bool = False) -> None:
        """Take a token for the session; ``operation`` is the call that needs it, named when
        none can be issued."""
        assert self._username is not None
        session = self._gateway.session
        session.headers.pop("Authorization", None)
        try:
            answer = self._gateway.post(
                "authenticate",
                "/auth/authenticate",
                {"name": self._username, "password": self._password or ""},
            )
        except EtcdError as exc:
            if not exc.transient:
                raise  # a wrong password: its message says so
            raise self._no_token(exc, operation, refused_without_token) from None
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError(
                f"{self._gateway.endpoint}: authenticate failed: no token in the answer "
                "(is authentication enabled on the cluster?)",
                endpoint=self._gateway.endpoint,
                operation="authenticate",
            )
        register_secrets([token])  # tokens must never reach a log line or an error message
        self.token = token
        session.headers["Authorization"] = token

    def _no_token(self, exc: EtcdError, operation: str, refused_without_token: bool) -> EtcdError:
        """Authenticating failed transiently: why, in the words of the member's /health.

        Without a leader no token can be issued however long one waits, which /health says
        (``versions.NO_TOKEN_CAN_BE_ISSUED``) while the gateway only times out."""
        endpoint = self._gateway.endpoint
        health = self._gateway.get_unauthenticated(versions.HEALTH_PATH, _PROBE_TIMEOUT)
        reason = health.get("reason") if health else None
        if reason == versions.NO_TOKEN_CAN_BE_ISSUED:
            why = f"the member has no leader ({versions.HEALTH_PATH}: {reason})"
        else:
            why = str(exc).removeprefix(f"{endpoint}: ")
        if refused_without_token:
            answer = self._gateway.get_unauthenticated(versions.VERSION_PATH, _PROBE_TIMEOUT)
            version = answer.get("etcdserver") if answer else None
            etcd = f"etcd {version}" if isinstance(version, str) else "this etcd version"
            what = (
                f"{operation} refused: the member answers, but {etcd} needs an auth token for "
                f"{_call_name(operation)} with authentication on, and none can be issued: {why}"
            )
        elif reason == versions.NO_TOKEN_CAN_BE_ISSUED:
            what = f"{operation} failed: no auth token can be issued: {why}"
        else:
            return exc
        return EtcdAuthError(
            f"{endpoint}: {what}", endpoint=endpoint, operation=operation, transient=True
        )

    def _role_missing(self, exc: EtcdAuthError, operation: str, path: str) -> EtcdAuthError:
        """A user's role does not allow the call: which role, or which keys, it needs."""
        user = self._username
        root = versions.ROOT_ONLY.get(path)
        if root is not None:
            rpc, when = root
            on = f"on {when}; " if when else ""
            what = (
                f"user {user!r} lacks the root role, which etcd requires for {rpc} "
                f"({on}etcdctl user grant-role {user} root)"
            )
        else:
            prefix = versions.AGENT_KEY_PREFIX
            what = (
                f"user {user!r} may not use this key: the agent reads and writes under {prefix} "
                f"(etcdctl role grant-permission <role> --prefix readwrite {prefix})"
            )
        return EtcdAuthError(
            f"{self._gateway.endpoint}: {operation} refused: {what}",
            endpoint=self._gateway.endpoint,
            operation=operation,
            status=exc.status,
            code=exc.code,
        )

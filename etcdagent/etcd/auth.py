"""The auth token of one member's session: taken when first needed, renewed when etcd rejects it.

etcd's gateway takes a token (from /v3/auth/authenticate) in the Authorization header. The token is
taken lazily, because authenticating goes through raft and fails exactly when a member without a
leader should still be able to answer the calls that need none (``versions.TOKENLESS_PATHS``). It
expires (``--auth-token-ttl``, 300 s by default) or goes stale after an auth change, so a call
rejected for its token authenticates once and is sent again. A token never reaches a log line or
an error message: each one is registered as a secret the moment it is issued.
"""

from __future__ import annotations

import threading
from typing import Any

from etcdagent.errors import EtcdAuthError, EtcdError
from etcdagent.etcd import versions
from etcdagent.etcd.gateway import Gateway
from etcdagent.logs import register_secrets


def refused_for_credentials(exc: EtcdAuthError) -> bool:
    """A call sent without a token was refused for the lack of one."""
    text = str(exc).lower()
    return "authentication enabled" in text or "permission denied" in text or stale_token(exc)


def stale_token(exc: EtcdAuthError) -> bool:
    """A call sent with a token was refused for that token (expired, or older than the auth
    store), not for the user's permissions."""
    text = str(exc).lower()
    return exc.status == 401 or "invalid auth token" in text or "auth store is old" in text


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
            if self._username and self.token is None and not versions.answers_without_token(path):
                self._authenticate()
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
                self._authenticate()
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
                self._authenticate()
            except EtcdError as exc:
                if exc.transient:
                    return False
                raise
            return True

    def _authenticate(self) -> None:
        assert self._username is not None
        session = self._gateway.session
        session.headers.pop("Authorization", None)
        answer = self._gateway.post(
            "authenticate",
            "/auth/authenticate",
            {"name": self._username, "password": self._password or ""},
        )
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

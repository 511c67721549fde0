"""POSTs to one member's gRPC-JSON gateway; every failure leaves as an ``EtcdError``.

One etcd3gw client per member, bound to the member's URL and to the member's HTTP session (TLS
material, connection pool, and the auth token header that ``auth.TokenAuth`` manages). Nothing
here knows about tokens or retries: one request, one answer or one translated error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from etcdagent.errors import EtcdProtocolError
from etcdagent.etcd import versions
from etcdagent.etcd.gateway_errors import connection_error, translate
from etcdagent.etcd.transport import make_session
from etcdagent.settings import TLSSettings


def split_endpoint(endpoint: str) -> tuple[SplitResult, int]:
    """The URL parts and port of a member endpoint; ``EtcdProtocolError`` unless it has both a
    host and a port."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises on "host:99999" or a broken IPv6 literal
    except ValueError:
        port = None
        parts = urlsplit("")
    if not parts.hostname or port is None:
        raise EtcdProtocolError(f"{endpoint}: not a host:port endpoint", endpoint=endpoint)
    return parts, port


class Gateway:
    """The gateway of the member at ``endpoint``, with a default per-request ``timeout``."""

    def __init__(self, endpoint: str, tls: TLSSettings, timeout: float) -> None:
        parts, port = split_endpoint(endpoint)
        assert parts.hostname is not None  # split_endpoint refuses an endpoint without one
        self.endpoint = endpoint
        self.session = make_session(tls)
        self.timeout = timeout
        self._client = self._etcd3gw(parts.hostname, port, parts.scheme, timeout)

    def _etcd3gw(self, host: str, port: int, protocol: str, timeout: float) -> Etcd3Client:
        return Etcd3Client(
            host=host,
            port=port,
            protocol=protocol,
            timeout=timeout,
            api_path=versions.API_PATH,
            session=self.session,
        )

    def close(self) -> None:
        self.session.close()

    def get_unauthenticated(self, path: str, timeout: float) -> dict[str, Any] | None:
        """GET one of the member's own endpoints beside the gateway (``/health``, ``/version``)
        without the token: the JSON object it answered, whatever the HTTP status (/health says
        why it is unhealthy in a 503), or None when there is no such answer."""
        try:
            response = self.session.get(
                self.endpoint + path, timeout=timeout, headers={"Authorization": None}
            )
            answer = response.json()
        except (requests.RequestException, ValueError):
            return None
        return answer if isinstance(answer, dict) else None

    def post(
        self, operation: str, path: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """One POST; the answer must be a JSON object. ``timeout`` overrides the default."""
        client = self._client
        if timeout is not None and timeout != self.timeout:
            client = self._etcd3gw(client.host, client.port, client.protocol, timeout)
        try:
            answer = client.post(client.get_url(path), json=body)
        except Etcd3Exception as exc:
            raise translate(exc, self.endpoint, operation, path) from None
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

"""An HTTP proxy in front of one member that keeps answering its status during a defrag.

A defragmenting etcd (3.4.23, 3.5.1, 3.5.30 and 3.6.14, measured) does not answer
``/v3/maintenance/status`` until the defrag ends, while ``/metrics`` answers at once. That is
an accidental fence: the agent's health gate refuses a member that does not answer, so a second
agent cannot start a defrag beside one a killed agent left running. The proxy removes the
accident: it forwards every request to the member but answers the status from the member's last
good reply when the member takes longer than ``status_timeout``, as a member that serves reads
during its defrag would (or a load balancer with a cache). Tests then show that the explicit
fence (``etcdagent.decide.fence``) refuses on its own.

The member must advertise the proxy's URL as its client URL (``EtcdCluster(advertise_client_urls=
...)``) so that the agent's member discovery goes through it too. Plain HTTP only.

Usage::

    proxies = [StatusProxy() for _ in range(3)]
    cluster = EtcdCluster(3, advertise_client_urls={f"m{i+1}": p.url for i, p in ...})
    with cluster:
        for proxy, member in zip(proxies, cluster.members):
            proxy.forward_to(member.client_url)
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["STATUS_PATH", "StatusProxy"]

STATUS_PATH = "/v3/maintenance/status"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
}
_FORWARD_TIMEOUT = 600.0  # a defragment request answers only when the defrag ends


class _Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class StatusProxy:
    """Forwards to one member; answers its status from the last good reply when it is slow."""

    def __init__(self, *, status_timeout: float = 0.5, port: int = 0) -> None:
        self.status_timeout = status_timeout
        self._target: tuple[str, int] | None = None
        self._last_status: _Reply | None = None
        self._lock = threading.Lock()
        self.cached_answers = 0  # status requests answered from the last good reply
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"status-proxy-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward_to(self, target_url: str) -> None:
        """Where requests go: the member's own (listen) client URL."""
        parts = urlsplit(target_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(
                f"the status proxy forwards to plain http://host:port, not {target_url}"
            )
        with self._lock:
            self._target = (parts.hostname, parts.port)
        self.refresh()

    def refresh(self) -> None:
        """Ask the member for its status now, so that a good reply is there to fall back on
        even before anyone asked through the proxy."""
        self._forward("POST", STATUS_PATH, {"Content-Type": "application/json"}, b"{}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> StatusProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- forwarding ------------------------------------------------------------------------------

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Reply:
        """One request to the member; the status with a short timeout and the cache behind it."""
        with self._lock:
            target = self._target
        if target is None:
            return _Reply(503, [("Content-Type", "text/plain")], b"status proxy: no target yet\n")
        is_status = path.split("?", 1)[0] == STATUS_PATH
        timeout = self.status_timeout if is_status else _FORWARD_TIMEOUT
        try:
            reply = _request(target, timeout, method, path, headers, body)
        except (OSError, http.client.HTTPException) as exc:  # timeout, refused, reset
            cached = self._last_status if is_status else None
            if cached is None:
                text = f"status proxy: {type(exc).__name__}: {exc}\n".encode()
                return _Reply(502, [("Content-Type", "text/plain")], text)
            with self._lock:
                self.cached_answers += 1
            return cached
        if is_status and reply.status == 200:
            self._last_status = reply
        return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                reply = proxy._forward(self.command, self.path, headers, body)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (a timed-out or killed agent)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _relay

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: tests read etcd's logs, not the proxy's

        return Handler


def _request(
    target: tuple[str, int],
    timeout: float,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> _Reply:
    conn = http.client.HTTPConnection(target[0], target[1], timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        return _Reply(response.status, kept, data)
    finally:
        conn.close()

"""The agent's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for Kubernetes probes.

A small threaded server from the standard library: each connection gets its own thread, so a
slow or stalled client never delays a scrape; every connection is one request (HTTP/1.0) with a
read timeout and a cap on the request head. It serves in a daemon thread; ``stop()`` closes the
listening socket and cuts open connections, so the port is free again at once.

``push()`` sends a registry to a Prometheus Pushgateway instead, for runs too short to scrape.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import socket
import socketserver
import sys
import threading
import urllib.error
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, push_to_gateway

from etcdagent.agent.probes import Check, Checks, as_checks, probe
from etcdagent.errors import ConfigError, EtcdAgentError

log = structlog.get_logger()

MAX_HEADER_BYTES = 16 * 1024  # the request's header lines together; Prometheus sends ~300 B
REQUEST_TIMEOUT = 10.0  # seconds a connection may take to send its request
_ALLOW = "GET, HEAD"
_LINGER_SECONDS = 1.0  # after an error answer, how long to drain the client's unread input
_LINGER_BYTES = 1024 * 1024
_PUSH_REASON_BYTES = 500


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces) to (host, port)."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"listen address {listen!r}: expected host:port, e.g. 0.0.0.0:9479")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"listen address {listen!r}: put an IPv6 address in brackets")
    return host or "0.0.0.0", int(port_text)


class _HeadTooLarge(http.client.LineTooLong):
    """Raised inside the stdlib's header parsing, which answers 431 for it."""


class _HeadBudget:
    """A view of the connection's input that allows only ``budget`` bytes of header lines."""

    def __init__(self, raw: io.BufferedIOBase, budget: int) -> None:
        self._raw = raw
        self._left = budget

    def readline(self, limit: int = -1) -> bytes:
        cap = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = self._raw.readline(cap)
        self._left -= len(line)
        if self._left < 0:
            raise _HeadTooLarge(f"request header larger than {MAX_HEADER_BYTES} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads
    timeout = REQUEST_TIMEOUT
    server_version = "etcdagent"
    sys_version = ""

    # -- request parsing and logging ------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self._unread_input = False

    def parse_request(self) -> bool:
        raw = self.rfile
        self.rfile = _HeadBudget(raw, MAX_HEADER_BYTES)  # type: ignore[assignment]
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = raw
        self._unread_input = not parsed
        return parsed

    def finish(self) -> None:
        super().finish()
        if self._unread_input:
            self._drain()

    def _drain(self) -> None:
        """Read what the client still sends before closing: closing with unread input resets
        the connection, and the client could lose the error answer it has not read yet."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_SECONDS)
            left = _LINGER_BYTES
            while left > 0:
                chunk = self.connection.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug(
            "http request",
            client=self.client_address[0],
            method=getattr(self, "command", ""),
            path=getattr(self, "path", ""),
            status=int(code) if isinstance(code, int | HTTPStatus) else code,
        )

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("http request error", client=self.client_address[0], error=format % args)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", client=self.client_address[0], message=format % args)

    # -- responses ------------------------------------------------------------------------------

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: HTTPStatus, text: str, **headers: str) -> None:
        self._send(status, (text.rstrip("\n") + "\n").encode(), headers=headers)

    def _check(self, checks: Checks) -> None:
        """``?cluster=NAME`` answers for that cluster, else for all (agent/probes.py)."""
        asked = parse_qs(urlsplit(self.path).query).get("cluster")
        answer = probe(checks, asked[-1] if asked else None)
        if not answer.known:
            self._text(HTTPStatus.NOT_FOUND, answer.text)
        else:
            self._text(HTTPStatus.OK if answer.ok else HTTPStatus.SERVICE_UNAVAILABLE, answer.text)

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.server.registry)
        except Exception as exc:
            log.warning("metrics exposition failed", error=f"{type(exc).__name__}: {exc}")
            self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "metrics exposition failed")
            return
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        self._send(HTTPStatus.OK, body, content_type, headers)

    # -- methods --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._check(self.server.healthy)
        elif path == "/readyz":
            self._check(self.server.ready)
        else:
            self._text(HTTPStatus.NOT_FOUND, "not found: try /metrics, /healthz or /readyz")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._unread_input = True  # a body we will not read
        self._text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", Allow=_ALLOW)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops SYNs in a burst; each dropped one costs the
    # client a 1 s retransmit, so a scrape arriving during the burst would wait for it.
    request_queue_size = 128
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a stalled client

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        healthy: Checks,
        ready: Checks,
    ) -> None:
        self.registry = registry
        self.healthy = healthy
        self.ready = ready
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can hang on a container's DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper hanging up mid-answer (BrokenPipe, reset) is the client's business: one line,
        # no traceback. Anything else is a bug in a handler and keeps its traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("http connection error", client=str(client_address[0]), error=repr(exc))
        else:
            log.warning("http handler error", client=str(client_address[0]), exc_info=True)


class AgentHTTPServer:
    """Serves /metrics, /healthz and /readyz on ``listen`` ("0.0.0.0:9479"; port 0: any free).

    ``healthy`` and ``ready`` return None when all is well, else the reason (answered with 503);
    left out, they always pass. Given per cluster (name -> check), they answer for all clusters,
    or for the one ``?cluster=NAME`` asks about (agent/probes.py).
    """

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        *,
        healthy: Check | Checks | None = None,
        ready: Check | Checks | None = None,
    ) -> None:
        self.listen = listen
        self._address = parse_listen(listen)
        self._registry = registry
        self._healthy = as_checks(healthy)
        self._ready = as_checks(ready)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one picked when ``listen`` asked for port 0)."""
        if self._server is None:
            raise RuntimeError("the HTTP server is not started")
        return self._server.server_port

    @property
    def host(self) -> str:
        return self._address[0]

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> AgentHTTPServer:
        if self._server is not None:
            raise RuntimeError("the HTTP server is already started")
        try:
            server = _Server(self._address, self._registry, self._healthy, self._ready)
        except OSError as exc:
            raise EtcdAgentError(f"cannot listen on {self.listen}: {exc.strerror or exc}") from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"etcdagent-http-{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        log.info("http server listening", listen=self.listen, port=server.server_port)
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and cut the connections still open."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5)
        log.debug("http server stopped", listen=self.listen)

    def __enter__(self) -> AgentHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def push(
    registry: CollectorRegistry,
    url: str,
    job: str = "etcdagent",
    timeout: float = 10,
    grouping_key: Mapping[str, str] | None = None,
) -> None:
    """Replace the ``job`` group on the Pushgateway at ``url`` with the registry's metrics."""
    try:
        push_to_gateway(
            url,
            job=job,
            registry=registry,
            grouping_key=dict(grouping_key) if grouping_key else None,
            timeout=timeout,
        )
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, urllib.error.HTTPError):  # the Pushgateway says why in the body
            with contextlib.suppress(OSError, http.client.HTTPException):
                reason += ": " + exc.read(_PUSH_REASON_BYTES).decode(errors="replace")
        reason = " ".join(reason.split())
        raise EtcdAgentError(
            f"push to Pushgateway {_without_credentials(url)} failed: {reason}"
        ) from None

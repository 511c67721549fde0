"""The agent's HTTP endpoint on a real socket (127.0.0.1, a free port)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from etcdagent.agent.http_server import AgentHTTPServer, parse_listen, push
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.errors import ConfigError, EtcdAgentError


class Checks:
    """What the agent loop would answer; tests flip them."""

    def __init__(self) -> None:
        self.health: str | None = None
        self.readiness: str | None = "etcd not reachable: no endpoint answered"

    def healthy(self) -> str | None:
        return self.health

    def ready(self) -> str | None:
        return self.readiness


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
def server(checks: Checks) -> Iterator[AgentHTTPServer]:
    metrics = AgentMetrics(CollectorRegistry())
    metrics.scrape_error("m1")
    srv = AgentHTTPServer(
        "127.0.0.1:0", metrics.registry, healthy=checks.healthy, ready=checks.ready
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def request(
    srv: AgentHTTPServer,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_metrics(server: AgentHTTPServer) -> None:
    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "# HELP etcdagent_build_info" in text
    assert 'etcdagent_scrape_errors_total{member="m1"} 1.0' in text


def test_metrics_openmetrics_and_gzip(server: AgentHTTPServer) -> None:
    status, headers, body = request(
        server,
        "/metrics",
        headers={
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "gzip",
        },
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.rstrip().endswith("# EOF")
    assert "etcdagent_scrape_errors_total" in text


def test_healthz_follows_the_check(server: AgentHTTPServer, checks: Checks) -> None:
    assert request(server, "/healthz")[::2] == (200, b"ok\n")
    checks.health = "last cycle finished 312s ago (limit 120s)"
    status, _, body = request(server, "/healthz")
    assert status == 503
    assert body == b"last cycle finished 312s ago (limit 120s)\n"


def test_readyz_follows_the_check(server: AgentHTTPServer, checks: Checks) -> None:
    status, _, body = request(server, "/readyz")
    assert status == 503
    assert b"etcd not reachable" in body
    checks.readiness = None
    assert request(server, "/readyz")[::2] == (200, b"ok\n")


def test_a_check_that_raises_answers_503(checks: Checks) -> None:
    def broken() -> str | None:
        raise RuntimeError("loop state unavailable")

    with AgentHTTPServer("127.0.0.1:0", CollectorRegistry(), healthy=broken) as srv:
        status, _, body = request(srv, "/healthz")
        assert status == 503
        assert b"RuntimeError: loop state unavailable" in body
        assert request(srv, "/readyz")[0] == 200  # no check given: passes


def test_unknown_path_and_wrong_method(server: AgentHTTPServer) -> None:
    assert request(server, "/")[0] == 404
    assert request(server, "/metricsx")[0] == 404
    assert request(server, "/metrics?name[]=x")[0] == 200
    status, headers, _ = request(server, "/metrics", method="POST", body=b"x" * 10_000)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert request(server, "/healthz", method="DELETE")[0] == 405
    status, headers, body = request(server, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


def test_a_huge_header_is_refused_and_the_server_lives_on(server: AgentHTTPServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.0 431"), answer[:100]

    # Many small headers adding up are refused the same way.
    many = "".join(f"X-H{i}: {'b' * 200}\r\n" for i in range(99))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
        assert _read_all(sock).startswith(b"HTTP/1.0 431")

    assert request(server, "/metrics")[0] == 200


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_slow_client_does_not_block_metrics(server: AgentHTTPServer) -> None:
    stalled = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
            stalled.append(sock)
        t0 = time.monotonic()
        assert request(server, "/metrics")[0] == 200
        assert time.monotonic() - t0 < 1.0
    finally:
        for sock in stalled:
            sock.close()


def test_stop_closes_promptly_and_frees_the_port() -> None:
    srv = AgentHTTPServer("127.0.0.1:0", CollectorRegistry()).start()
    port = srv.port
    assert request(srv, "/healthz")[0] == 200
    stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
    stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
    try:
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 2.0
        # The stalled connection was cut (EOF, or a reset if its request was still unread),
        # not left to time out.
        with contextlib.suppress(ConnectionResetError):
            assert stalled.recv(1) == b""
    finally:
        stalled.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The port can be listened on again right away (an agent restarting in place).
    again = AgentHTTPServer(f"127.0.0.1:{port}", CollectorRegistry()).start()
    try:
        assert again.port == port
        assert request(again, "/readyz")[0] == 200
    finally:
        again.stop()
    srv.stop()  # a second stop is harmless


def test_a_busy_port_is_a_one_line_error() -> None:
    with AgentHTTPServer("127.0.0.1:0", CollectorRegistry()) as srv:
        clash = AgentHTTPServer(f"127.0.0.1:{srv.port}", CollectorRegistry())
        with pytest.raises(EtcdAgentError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
            clash.start()


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        _ = AgentHTTPServer("127.0.0.1:0", CollectorRegistry()).port


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:9479", ("0.0.0.0", 9479)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":9479", ("0.0.0.0", 9479)),
        ("[::1]:9479", ("::1", 9479)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9479", "host:", "host:http", "::1:9479", "h:70000"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(listen)


def test_push_failure_is_one_line_naming_the_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:secret@127.0.0.1:{port}"
    with pytest.raises(EtcdAgentError) as caught:
        push(CollectorRegistry(), url, timeout=2)
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "secret" not in message
    assert "\n" not in message


def test_probes_answer_per_cluster_and_for_all() -> None:
    """Two clusters' loops: the plain probe is the worst of both and names each; ?cluster=
    asks about one; a name this process does not maintain is a 404 listing the ones it does."""
    main, events = Checks(), Checks()
    main.readiness = None
    with AgentHTTPServer(
        "127.0.0.1:0",
        CollectorRegistry(),
        healthy={"main": main.healthy, "events": events.healthy},
        ready={"main": main.ready, "events": events.ready},
    ) as srv:
        status, _, body = request(srv, "/readyz")
        assert status == 503
        assert body.decode().splitlines() == [
            "main: ok",
            "events: etcd not reachable: no endpoint answered",
        ]
        assert request(srv, "/readyz?cluster=main")[::2] == (200, b"ok\n")
        assert request(srv, "/readyz?cluster=events")[0] == 503
        assert request(srv, "/healthz")[::2] == (200, b"main: ok\nevents: ok\n")
        status, _, body = request(srv, "/readyz?cluster=nope")
        assert status == 404 and b"clusters: main, events" in body
        events.readiness = None
        assert request(srv, "/readyz")[0] == 200

"""Bad input from every side: a gateway answering garbage, hostile HTTP clients, secrets.

- A fake etcd gateway (``http.server`` on 127.0.0.1:0, in a thread) answers the member list,
  the statuses and /metrics with hypothesis-generated garbage; a real ``Daemon`` cycles against it
  and ``etcdagent status`` reads it. Neither may raise or print a traceback.
- The agent's own HTTP server keeps serving /metrics promptly under unknown paths, wrong methods,
  huge headers and 50 clients that send half a request and stay open.
- With authentication, neither the password nor the auth token appears in the logs, the CLI's
  output or /metrics, also when the password is wrong.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from etcdagent_testing import EtcdCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from etcdagent.act.maintenance import Maintenance
from etcdagent.agent.daemon import Daemon
from etcdagent.agent.http_server import AgentHTTPServer
from etcdagent.cli import cli
from etcdagent.logs import configure_logging
from etcdagent.settings import LogSettings, Settings, load_settings

ClusterFactory = Callable[..., EtcdCluster]

SELF = "{self}"  # replaced by the fake gateway's own URL when it answers


# -- the fake gateway --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    truncated: bool = False  # announce more bytes than are sent, then close


class FakeGateway:
    """Answers each path with the Answer the test set for it (404 JSON for other paths)."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                answer = gateway.answers.get(
                    path, Answer(404, b'{"error":"not found","code":5,"message":"not found"}')
                )
                body = answer.body.replace(SELF.encode(), gateway.url.encode())
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                announced = len(body) + (100 if answer.truncated else 0)
                self.send_header("Content-Length", str(announced))
                if answer.truncated:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The CLI and these tests configure structlog globally, some onto streams that close."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def gateway() -> Iterator[FakeGateway]:
    with FakeGateway() as fake:
        yield fake


# -- garbage -----------------------------------------------------------------------------------

HUGE = 2**70
weird_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-HUGE, max_value=HUGE),
    st.sampled_from([HUGE, -1, 2**64, 2**63, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["1", "-1", str(HUGE), "0x10", "1e400", "NaN"]),
)
weird = st.one_of(
    weird_scalar,
    st.lists(weird_scalar, max_size=3),
    st.dictionaries(st.text(max_size=4), weird_scalar, max_size=3),
)
member_id = st.one_of(
    st.sampled_from([1, 2, "1", "2"]), st.sampled_from([str(HUGE), HUGE, -1, "x"]), weird
)
url = st.sampled_from(
    [
        SELF,
        SELF,
        SELF + "/",
        "http://127.0.0.1:1",
        "http://127.0.0.1",
        "not a url",
        "",
        "ftp://127.0.0.1:21",
    ]
)
urls = st.one_of(st.lists(url, min_size=1, max_size=3), st.lists(url, max_size=3), weird)
header = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={"cluster_id": member_id, "member_id": member_id, "revision": weird},
    ),
    weird,
)
member = st.one_of(
    st.fixed_dictionaries(
        {"clientURLs": urls},
        optional={
            "ID": member_id,
            "name": st.one_of(st.text(max_size=8), weird),
            "peerURLs": urls,
            "isLearner": st.one_of(st.booleans(), weird),
        },
    ),
    weird,
)
member_list_json = st.fixed_dictionaries(
    {},
    optional={"header": header, "members": st.one_of(st.lists(member, max_size=3), weird)},
)
status_json = st.fixed_dictionaries(
    {},
    optional={
        "header": header,
        "version": st.one_of(st.sampled_from(["3.5.1", "3.4.23"]), weird),
        "dbSize": weird,
        "dbSizeInUse": weird,
        "leader": member_id,
        "raftIndex": weird,
        "raftTerm": weird,
        "raftAppliedIndex": weird,
        "isLearner": weird,
        "errors": st.one_of(
            st.lists(
                st.one_of(
                    st.sampled_from(["memberID:1 alarm:NOSPACE ", "memberID:x alarm:CORRUPT"]),
                    weird,
                ),
                max_size=3,
            ),
            weird,
        ),
    },
)

_FAMILIES = [
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_debugging_mvcc_current_revision",
    "process_start_time_seconds",
]
_HISTOGRAMS = ["etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"]
number = st.sampled_from(
    ["1", "0", "-5", "NaN", "+Inf", "-Inf", "1e308", str(HUGE), "abc", "", "0.5"]
)
metric_line = st.one_of(
    st.builds(lambda n, v: f"{n} {v}", st.sampled_from(_FAMILIES), number),
    st.builds(
        lambda n, le, v: f'{n}_bucket{{le="{le}"}} {v}',
        st.sampled_from(_HISTOGRAMS),
        st.sampled_from(["0.001", "0.5", "+Inf", "abc", "NaN", ""]),
        number,
    ),
    st.builds(
        lambda n, s, v: f"{n}_{s} {v}",
        st.sampled_from(_HISTOGRAMS),
        st.sampled_from(["sum", "count"]),
        number,
    ),
    st.builds(
        lambda n, t: f"# TYPE {n} {t}",
        st.sampled_from(_FAMILIES + _HISTOGRAMS),
        st.sampled_from(["gauge", "counter", "histogram", "summary", "untyped", "bogus"]),
    ),
    st.builds(
        lambda v: f'grpc_server_handled_total{{grpc_type="unary",grpc_code="OK"}} {v}', number
    ),
    st.text(max_size=40),
)
metrics_text = st.builds(
    lambda lines, cut: "\n".join(lines)[: cut if cut >= 0 else None],
    st.lists(metric_line, max_size=25),
    st.integers(min_value=-1, max_value=400),
)


def _json_answers(payload: st.SearchStrategy[Any]) -> st.SearchStrategy[Answer]:
    def dumps(value: Any) -> bytes:
        return json.dumps(value).encode()

    return st.one_of(
        st.builds(lambda v: Answer(body=dumps(v)), payload),
        st.builds(lambda v: Answer(body=dumps(v)), weird),  # a JSON scalar or list
        st.builds(  # truncated JSON text
            lambda v, cut: Answer(body=dumps(v)[:cut]), payload, st.integers(0, 60)
        ),
        st.builds(  # a body cut short on the wire
            lambda v: Answer(body=dumps(v)[:20], truncated=True), payload
        ),
        st.builds(
            lambda text: Answer(body=text.encode(), content_type="text/html"), st.text(max_size=60)
        ),
        _error_answers,
    )


_etcd_messages = st.sampled_from(
    [
        "etcdserver: mvcc: database space exceeded",
        "etcdserver: no leader",
        "etcdserver: user name is empty",
        "auth: user name is empty",
        "etcdserver: invalid auth token",
        "etcdserver: permission denied",
        "auth: permission denied",
        "etcdserver: rpc not supported for learner",
        "Not Found",
        "Method Not Allowed",
        "context canceled",
    ]
)

_error_answers = st.builds(
    lambda status, body: Answer(status=status, body=body),
    st.sampled_from([429, 500, 502, 503, 504, 401, 403, 404, 400, 301, 405, 499, 501]),
    st.one_of(
        st.builds(
            lambda err, code, msg: json.dumps(
                {"error": err, "code": code, "message": msg}
            ).encode(),
            st.one_of(_etcd_messages, weird),
            weird,
            weird,
        ),
        # 3.6 and the 3.5.30 build: no "error"; a streaming call (keepalive): {"error": {...}}
        st.builds(
            lambda code, msg: json.dumps({"code": code, "message": msg}).encode(),
            weird,
            st.one_of(_etcd_messages, weird),
        ),
        st.builds(
            lambda code, msg: json.dumps({"error": {"code": code, "message": msg}}).encode(),
            weird,
            st.one_of(_etcd_messages, weird),
        ),
        st.sampled_from([b"Not Found\n", b"Method Not Allowed\n"]),  # 3.4.23, 3.5.1
        st.binary(max_size=40),
    ),
)

metrics_answers = st.one_of(
    st.builds(lambda text: Answer(body=text.encode(), content_type="text/plain"), metrics_text),
    st.builds(
        lambda text: Answer(body=text.encode(), content_type="text/plain", truncated=True),
        metrics_text,
    ),
    _error_answers,
)

scripts = st.fixed_dictionaries(
    {
        "/v3/cluster/member/list": _json_answers(member_list_json),
        "/v3/maintenance/status": _json_answers(status_json),
        "/metrics": metrics_answers,
    }
)

# A member list that always leads to the fake: the deeper calls (status, metrics) get exercised.
good_member_list = Answer(
    body=json.dumps(
        {
            "header": {"cluster_id": "7", "member_id": "1"},
            "members": [{"ID": "1", "name": "m1", "clientURLs": [SELF], "peerURLs": [SELF]}],
        }
    ).encode()
)


_JSON_DEBUG = LogSettings.model_validate({"level": "debug", "format": "json"})


def _settings(endpoint: str, **extra: dict[str, Any]) -> Settings:
    base: dict[str, Any] = {
        "connection": {"endpoints": endpoint, "retry_deadline": "10ms", "request_timeout": "1s"},
        "daemon": {"listen": "127.0.0.1:0"},
    }
    base.update(extra)
    return load_settings(base)


def _run_cycle(endpoint: str) -> tuple[bool, str, float | None]:
    """One daemon cycle; (its result, the log text, internal cycle errors counted)."""
    logs = io.StringIO()
    configure_logging(_JSON_DEBUG, stream=logs)
    settings = _settings(endpoint)
    daemon = Daemon(lambda: settings)
    try:
        ok = daemon.cycle()
    finally:
        daemon.cluster.close()
    internal = daemon.registry.get_sample_value(
        "etcdagent_cycle_errors_total", {"kind": "internal"}
    )
    return ok, logs.getvalue(), internal


def _check_status_cli(endpoint: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "status",
            "--endpoints",
            endpoint,
            "--retry-deadline",
            "10ms",
            "--request-timeout",
            "1s",
            "--log-level",
            "error",
        ],
    )
    output = result.output
    assert result.exit_code in (0, 1), output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("etcdagent: ")]
    if errors:
        assert len(errors) == 1, output
        assert errors[0].startswith("etcdagent: error: "), output
        assert result.exit_code == 1
    else:
        assert "NAME" in output and "cluster" in output, output


def _check(gateway: FakeGateway, script: dict[str, Answer]) -> None:
    gateway.answers = dict(script)
    ok, logs, internal = _run_cycle(gateway.url)
    assert isinstance(ok, bool)
    assert "Traceback" not in logs, logs[-3000:]
    assert not internal, logs[-3000:]
    _check_status_cli(gateway.url)


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts)
def test_garbage_from_the_gateway_never_crashes(
    gateway: FakeGateway, script: dict[str, Answer]
) -> None:
    _check(gateway, script)


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=_json_answers(status_json), metrics=metrics_answers)
def test_garbage_status_and_metrics_behind_a_good_member_list(
    gateway: FakeGateway, status: Answer, metrics: Answer
) -> None:
    _check(
        gateway,
        {
            "/v3/cluster/member/list": good_member_list,
            "/v3/maintenance/status": status,
            "/metrics": metrics,
        },
    )


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    members=st.lists(
        st.fixed_dictionaries(
            {"ID": member_id, "clientURLs": st.lists(url, min_size=1, max_size=2)},
            optional={"name": st.text(max_size=6), "isLearner": st.booleans()},
        ),
        min_size=1,
        max_size=4,
    ),
    status=_json_answers(status_json),
)
def test_garbage_members_with_plausible_shapes(
    gateway: FakeGateway, members: list[dict[str, Any]], status: Answer
) -> None:
    listed = Answer(body=json.dumps({"header": {"cluster_id": "7"}, "members": members}).encode())
    metrics = Answer(body=b"etcd_server_has_leader 1\n", content_type="text/plain")
    _check(
        gateway,
        {"/v3/cluster/member/list": listed, "/v3/maintenance/status": status, "/metrics": metrics},
    )


@pytest.mark.integration
@pytest.mark.parametrize("bad_url", ["http://[::1", "http://127.0.0.1:99999"])
def test_a_malformed_advertised_url_is_that_members_error(
    gateway: FakeGateway, bad_url: str
) -> None:
    members = [
        {"ID": "1", "name": "good", "clientURLs": [SELF]},
        {"ID": "2", "name": "bad", "clientURLs": [bad_url]},
    ]
    status = {"header": {"member_id": "1", "cluster_id": "7"}, "leader": "1", "version": "3.5.1"}
    _check(
        gateway,
        {
            "/v3/cluster/member/list": Answer(
                body=json.dumps({"header": {"cluster_id": "7"}, "members": members}).encode()
            ),
            "/v3/maintenance/status": Answer(body=json.dumps(status).encode()),
        },
    )


# -- the agent's own HTTP server ---------------------------------------------------------------


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status), resp.read()


def _raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _timed_metrics(url: str) -> float:
    t0 = time.monotonic()
    status, body = _get(url + "/metrics")
    took = time.monotonic() - t0
    assert status == 200
    assert b"etcdagent_" in body
    return took


def test_metrics_stay_prompt_under_hostile_clients() -> None:
    settings = _settings("http://127.0.0.1:1")
    daemon = Daemon(lambda: settings)
    daemon.cycle()  # one failed cycle: the registry has real series
    server = AgentHTTPServer("127.0.0.1:0", daemon.registry, healthy=daemon.healthy).start()
    stalled: list[socket.socket] = []
    try:
        port, url = server.port, server.url
        for _ in range(50):  # half a request each, and they stay open
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: ")
            stalled.append(sock)
        for _ in range(5):  # connected, never a byte
            stalled.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert _timed_metrics(url) < 2.0

        for path in ("/", "/metrics/../etc/passwd", "/%00", "/" + "a" * 4000, "/healthz?x=1"):
            answer = _raw(port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.0 "), answer[:100]
        for method in ("POST", "PUT", "DELETE", "PATCH", "BREW", "TRACE"):
            answer = _raw(
                port, f"{method} /metrics HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello".encode()
            )
            assert answer.split(b" ", 2)[1] in (b"405", b"501"), answer[:100]
        huge_line = b"GET /metrics HTTP/1.0\r\nX-Big: " + b"x" * 200_000 + b"\r\n\r\n"
        many = b"GET /metrics HTTP/1.0\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"
        binary = bytes(range(256)) * 4
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda d=data: results.append(_raw(port, d)))
            for data in (huge_line, many, binary) * 5
        ]
        for thread in threads:
            thread.start()
        assert _timed_metrics(url) < 2.0
        for thread in threads:
            thread.join(10)
        assert len(results) == len(threads)
        for answer in results:
            # Refused with 400/431; the binary garbage gets the stdlib's HTTP/0.9-style page.
            assert (
                answer == b""
                or answer.startswith(b"<!DOCTYPE HTML>")
                or answer.split(b" ", 2)[1] in (b"400", b"431")
            ), answer[:100]

        for _ in range(5):
            assert _timed_metrics(url) < 2.0
        status, body = _get(url + "/healthz")
        assert status == 200 and body == b"ok\n"
    finally:
        for sock in stalled:
            sock.close()
        server.stop()
        daemon.cluster.close()


def test_a_connection_burst_does_not_delay_connects() -> None:
    server = AgentHTTPServer("127.0.0.1:0", CollectorRegistry()).start()
    opened: list[socket.socket] = []
    try:
        worst = 0.0
        for _ in range(50):
            t0 = time.monotonic()
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            worst = max(worst, time.monotonic() - t0)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            opened.append(sock)
        assert worst < 0.5, f"a connect took {worst:.2f} s"
    finally:
        for sock in opened:
            sock.close()
        server.stop()


# -- no secret in the output -------------------------------------------------------------------

PASSWORD = "s3cret-Pa55word-7f1c"
WRONG = "wr0ng-Pa55word-9a2d"


def _exposition(daemon: Daemon) -> str:
    return generate_latest(daemon.registry).decode()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_no_secret_in_logs_errors_or_metrics(
    etcd_cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three members: a one-member cluster refuses any defragmentation (no quorum to spare).
    cluster = etcd_cluster_factory(size=3, auth=True, root_password=PASSWORD)
    cluster.write_garbage(n_keys=50, value_size=4096, rounds=2)
    endpoint = cluster.endpoints[0]
    tokens: set[str] = set()

    def collect_tokens(daemon: Daemon) -> None:
        for ep in cluster.endpoints:
            token = daemon.cluster.member(ep)._auth.token
            if token:
                tokens.add(token)

    auth = {"username": "root", "password": PASSWORD}

    logs = io.StringIO()
    configure_logging(_JSON_DEBUG, stream=logs)
    settings = _settings(
        endpoint,
        auth=auth,
        defrag={"min_db_size": "1MiB", "wait_between": "100ms"},
        compaction={"retain_revisions": 0},
    )
    daemon = Daemon(lambda: settings)
    try:
        assert daemon.cycle(), logs.getvalue()[-3000:]
        collect_tokens(daemon)
        assert tokens, "the cycle authenticated (check_credentials)"
        report = Maintenance(daemon.cluster, daemon.settings).defrag(force=True)
        assert report.outcome.value == "done", report
        collect_tokens(daemon)
        assert daemon.cycle()
        collect_tokens(daemon)
        texts = {"logs": logs.getvalue(), "metrics": _exposition(daemon)}
    finally:
        daemon.cluster.close()
    assert "defragment" in texts["logs"]  # the logs did cover the maintenance

    # The CLI, right and wrong password: output and logs at debug level.
    for password, expected_exit in ((PASSWORD, 0), (WRONG, 1)):
        monkeypatch.setenv("ETCDAGENT_AUTH__PASSWORD", password)
        for args in (
            ["status"],
            ["defrag", "--force", "--no-compact"],
            ["status", "--output", "json"],
        ):
            result = CliRunner().invoke(
                cli,
                [
                    *args,
                    "--endpoints",
                    endpoint,
                    "--user",
                    "root",
                    "--log-level",
                    "debug",
                    "--log-format",
                    "json",
                ],
            )
            assert result.exit_code == expected_exit, result.output
            assert "Traceback" not in result.output
            texts[f"cli {args} {password == PASSWORD}"] = result.output
        monkeypatch.delenv("ETCDAGENT_AUTH__PASSWORD")

    # A daemon with the wrong password: its cycle fails on authentication.
    logs = io.StringIO()
    configure_logging(_JSON_DEBUG, stream=logs)
    wrong = _settings(endpoint, auth={"username": "root", "password": WRONG})
    daemon = Daemon(lambda: wrong)
    try:
        assert daemon.cycle() is False
        texts["wrong logs"] = logs.getvalue()
        texts["wrong metrics"] = _exposition(daemon)
    finally:
        daemon.cluster.close()
    assert "authentication failed" in texts["wrong logs"]
    assert any("authentication failed" in v for k, v in texts.items() if k.startswith("cli"))

    for where, text in texts.items():
        for secret in (PASSWORD, WRONG, *tokens):
            assert secret not in text, f"{secret[:4]}... leaked in {where}"

"""Gateway error answers and connection failures into the project's errors (pure functions)."""

from __future__ import annotations

import json

import pytest
from etcd3gw.exceptions import (
    ConnectionFailedError,
    ConnectionTimeoutError,
    Etcd3Exception,
    InternalServerError,
    PreconditionFailedError,
)

from etcdagent.errors import (
    EtcdAuthError,
    EtcdCompactedError,
    EtcdError,
    EtcdFutureRevisionError,
    EtcdNoSpaceError,
    EtcdTLSError,
    EtcdUnreachableError,
)
from etcdagent.etcd.gateway_errors import connection_error, http_error, translate

EP = "https://10.0.0.1:2379"
OP = "status"


def body_35(message: str, code: int) -> str:
    return json.dumps({"error": message, "code": code, "message": message})


def body_36(message: str, code: int) -> str:
    return json.dumps({"code": code, "message": message, "details": []})


BODIES = [body_35, body_36]
BODY_IDS = ["3.4/3.5", "3.6"]


def http(message: str, status: int, code: int, body: object) -> EtcdError:
    assert callable(body)
    err = http_error(EP, OP, status, body(message, code))
    assert str(err).startswith(f"{EP}: {OP} failed"), str(err)
    assert err.endpoint == EP
    assert err.operation == OP
    assert err.status == status
    assert err.code == code
    return err


@pytest.fixture(params=BODIES, ids=BODY_IDS)
def body(request: pytest.FixtureRequest) -> object:
    return request.param


def test_nospace(body: object) -> None:
    err = http("etcdserver: mvcc: database space exceeded", 429, 8, body)
    assert isinstance(err, EtcdNoSpaceError)
    assert not err.transient
    assert "NOSPACE" in str(err)
    assert "database space exceeded" in str(err)


def test_nospace_recognised_by_status_and_code_alone() -> None:
    err = http_error(EP, "put", 429, json.dumps({"code": 8, "message": "", "details": []}))
    assert isinstance(err, EtcdNoSpaceError)


def test_wrong_password(body: object) -> None:
    err = http("etcdserver: authentication failed, invalid user ID or password", 400, 3, body)
    assert isinstance(err, EtcdAuthError)
    assert not err.transient
    assert "user name or password" in str(err)
    assert "auth.username" in str(err)


def test_invalid_token(body: object) -> None:
    err = http("etcdserver: invalid auth token", 401, 16, body)
    assert isinstance(err, EtcdAuthError)
    assert err.status == 401  # the client renews the token on exactly this
    assert "token" in str(err)


def test_permission_denied(body: object) -> None:
    err = http("etcdserver: permission denied", 403, 7, body)
    assert isinstance(err, EtcdAuthError)
    assert not err.transient
    assert "permission denied" in str(err)
    assert "root role" in str(err)


def test_auth_enabled_but_no_user(body: object) -> None:
    err = http("etcdserver: user name is empty", 400, 3, body)
    assert isinstance(err, EtcdAuthError)
    assert "auth.username" in str(err)


def test_compacted(body: object) -> None:
    err = http("mvcc: required revision has been compacted", 400, 11, body)
    assert isinstance(err, EtcdCompactedError)
    assert not err.transient


def test_future_revision(body: object) -> None:
    err = http("mvcc: required revision is a future revision", 400, 11, body)
    assert isinstance(err, EtcdFutureRevisionError)
    assert not err.transient


def test_no_leader_is_transient(body: object) -> None:
    err = http("etcdserver: no leader", 503, 14, body)
    assert type(err) is EtcdError
    assert err.transient
    assert "no leader" in str(err)


def test_request_timed_out_is_transient(body: object) -> None:
    err = http("etcdserver: request timed out", 504, 4, body)
    assert err.transient


def test_not_leader_is_not_described_as_no_leader(body: object) -> None:
    # Regression: the hint is added whenever "leader" appears, so a move-leader sent to a follower
    # ("etcdserver: not leader", 3.4: HTTP 412) reads "(no leader or leader election in
    # progress?)", which sends the operator looking for an election problem that is not there.
    err = http("etcdserver: not leader", 412, 9, body)
    assert not err.transient
    assert "no leader or leader election" not in str(err)


def test_bad_request_is_not_transient(body: object) -> None:
    err = http("etcdserver: key is not provided", 400, 3, body)
    assert type(err) is EtcdError
    assert not err.transient
    assert "key is not provided" in str(err)


def test_non_json_body_is_shown_on_one_line() -> None:
    err = http_error(EP, OP, 502, "<html>\n<body>Bad   Gateway</body>\n</html>")
    assert err.transient
    assert "\n" not in str(err)
    assert "Bad Gateway" in str(err)


def test_empty_body_shows_the_http_status() -> None:
    err = http_error(EP, OP, 500, "")
    assert not err.transient
    assert "HTTP 500" in str(err)


def test_long_message_is_cut() -> None:
    err = http_error(EP, OP, 400, body_36("x" * 5000, 3))
    assert len(str(err)) < 400
    assert str(err).endswith("...")


# -- connection failures (the text requests/urllib3 produce) -------------------------------------

POOL = (
    "HTTPSConnectionPool(host='10.0.0.1', port=2379): "
    "Max retries exceeded with url: /v3/maintenance/status"
)


def conn(detail: str, endpoint: str = EP) -> EtcdError:
    err = connection_error(endpoint, OP, detail)
    assert str(err).startswith(f"{endpoint}: {OP} failed"), str(err)
    assert err.endpoint == endpoint
    assert "\n" not in str(err)
    return err


def test_connection_refused_is_transient() -> None:
    err = conn(
        f"{POOL} (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at "
        "0x7f>: Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    assert isinstance(err, EtcdUnreachableError)
    assert err.transient
    assert "refused" in str(err)


@pytest.mark.parametrize(
    "detail",
    [
        "HTTPConnectionPool(host='nope.invalid', port=2379): Max retries exceeded with url: "
        '/v3/cluster/member/list (Caused by NameResolutionError("<urllib3.connection.'
        "HTTPConnection object at 0x7f>: Failed to resolve 'nope.invalid' ([Errno -2] Name or "
        'service not known)"))',
        "HTTPConnectionPool(host='nope.invalid', port=2379): Max retries exceeded (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to "
        "establish a new connection: [Errno -2] Name or service not known'))",
        "Failed to resolve 'nope.invalid'",
    ],
)
def test_unknown_host_is_not_transient(detail: str) -> None:
    err = conn(detail, endpoint="http://nope.invalid:2379")
    assert isinstance(err, EtcdUnreachableError)
    assert not err.transient
    assert "cannot resolve" in str(err)
    assert "nope.invalid" in str(err)


def test_unknown_ca() -> None:
    err = conn(
        f"{POOL} (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED]"
        " certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)')))"
    )
    assert isinstance(err, EtcdTLSError)
    assert not err.transient
    assert "tls.ca_file" in str(err)


@pytest.mark.parametrize(
    "detail",
    [
        f'{POOL} (Caused by SSLError(SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]'
        " certificate verify failed: Hostname mismatch, certificate is not valid for "
        "'10.0.0.1'. (_ssl.c:1006)\")))",
        f'{POOL} (Caused by SSLError(SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]'
        " certificate verify failed: IP address mismatch, certificate is not valid for "
        "'10.0.0.1'. (_ssl.c:1006)\")))",
    ],
)
def test_hostname_mismatch(detail: str) -> None:
    err = conn(detail)
    assert isinstance(err, EtcdTLSError)
    assert not err.transient
    assert "server_name" in str(err)
    assert "10.0.0.1" in str(err)


def test_expired_server_certificate() -> None:
    err = conn(
        f"{POOL} (Caused by SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED]"
        " certificate verify failed: certificate has expired (_ssl.c:1006)')))"
    )
    assert isinstance(err, EtcdTLSError)
    assert "expired" in str(err)


@pytest.mark.parametrize(
    "alert",
    [
        "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
        "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate",
    ],
)
def test_client_certificate_rejected(alert: str) -> None:
    err = conn(f"{POOL} (Caused by SSLError(SSLError(1, '{alert} (_ssl.c:2580)')))")
    assert isinstance(err, EtcdTLSError)
    assert not err.transient
    assert "client certificate" in str(err)
    assert "tls.cert_file" in str(err)


def test_https_to_a_plain_http_member() -> None:
    err = conn(
        f"{POOL} (Caused by SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version "
        "number (_ssl.c:1006)')))"
    )
    assert isinstance(err, EtcdTLSError)
    assert "http://" in str(err)


@pytest.mark.parametrize(
    "detail",
    [
        "HTTPSConnectionPool(host='10.0.0.1', port=2379): Read timed out. (read timeout=5.0)",
        f"{POOL} (Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection object at "
        "0x7f>, 'Connection to 10.0.0.1 timed out. (connect timeout=5.0)'))",
    ],
)
def test_timeouts_are_transient(detail: str) -> None:
    err = conn(detail)
    assert isinstance(err, EtcdUnreachableError)
    assert err.transient
    assert "timed out" in str(err)


def test_connection_reset_is_transient() -> None:
    err = conn(
        f"{POOL} (Caused by ProtocolError('Connection aborted.', ConnectionResetError(104, "
        "'Connection reset by peer')))"
    )
    assert isinstance(err, EtcdUnreachableError)
    assert err.transient
    assert "reset" in str(err)


def test_unknown_connection_failure_keeps_the_cause() -> None:
    err = conn(f"{POOL} (Caused by SomethingNew('the gremlins'))")
    assert isinstance(err, EtcdUnreachableError)
    assert "gremlins" in str(err)


# -- _translate: what etcd3gw raises -----------------------------------------------------------


def test_translate_connection_failure() -> None:
    exc = ConnectionFailedError(
        f"{POOL} (Caused by NewConnectionError('x: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))"
    )
    err = translate(exc, EP, OP)
    assert isinstance(err, EtcdUnreachableError)
    assert err.transient
    assert str(err).startswith(EP)


def test_translate_client_timeout() -> None:
    exc = ConnectionTimeoutError(
        "HTTPSConnectionPool(host='10.0.0.1', port=2379): Read timed out. (read timeout=5.0)"
    )
    err = translate(exc, EP, OP)
    assert isinstance(err, EtcdUnreachableError)
    assert err.transient


@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
def test_translate_503_no_leader(body: object) -> None:
    assert callable(body)
    # etcd3gw raises ConnectionFailedError(resp.text, resp.reason) for an HTTP 503
    exc = ConnectionFailedError(body("etcdserver: no leader", 14), "Service Unavailable")
    err = translate(exc, EP, OP)
    assert type(err) is EtcdError
    assert err.transient
    assert err.status == 503
    assert "no leader" in str(err)


@pytest.mark.parametrize("body", BODIES, ids=BODY_IDS)
def test_translate_429_nospace(body: object) -> None:
    assert callable(body)
    exc = Etcd3Exception(body("etcdserver: mvcc: database space exceeded", 8), "Too Many Requests")
    err = translate(exc, EP, "put")
    assert isinstance(err, EtcdNoSpaceError)
    assert err.status == 429


def test_translate_504_gateway_timeout_is_transient() -> None:
    exc = ConnectionTimeoutError(body_35("etcdserver: request timed out", 4), "Gateway Timeout")
    err = translate(exc, EP, OP)
    assert err.transient
    assert err.status == 504


def test_translate_401_token() -> None:
    exc = Etcd3Exception(body_36("etcdserver: invalid auth token", 16), "Unauthorized")
    err = translate(exc, EP, OP)
    assert isinstance(err, EtcdAuthError)
    assert err.status == 401


def test_translate_412_precondition() -> None:
    exc = PreconditionFailedError(body_35("etcdserver: not leader", 9), "Precondition Failed")
    err = translate(exc, EP, "move leader")
    assert err.status == 412
    assert not err.transient
    assert str(err).startswith(f"{EP}: move leader failed")


def test_translate_500_without_body() -> None:
    err = translate(InternalServerError("", "Internal Server Error"), EP, OP)
    assert err.status == 500
    assert not err.transient
    assert "HTTP 500" in str(err)

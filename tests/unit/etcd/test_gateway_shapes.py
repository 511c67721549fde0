"""Error answers of the gateway, as each etcd version sends them, into the same one-line errors.

Every body here was recorded from the real servers (3.4.23, 3.5.1, 3.5.30, 3.6.14): the shape
changed between versions (``{"error","code","message"}``, ``{"code","message"}``, plain text,
a streaming call's ``{"error":{...}}``) and so did some statuses (a learner's refusal 503 -> 400,
an unknown method 405 -> 501), while the meaning did not. Versions are the test ids.
"""

from __future__ import annotations

import pytest
from etcd3gw.exceptions import ConnectionFailedError, Etcd3Exception, InternalServerError

from etcdagent.errors import EtcdAuthError, EtcdError, EtcdTokenRequiredError
from etcdagent.etcd.gateway_errors import http_error, translate

EP = "http://127.0.0.1:2379"

# (version, HTTP status, reason phrase as requests reports it, body) recorded per refusal.
NO_TOKEN = [
    ("3.4.23", 400, '{"error":"etcdserver: user name is empty","message":"etcdserver: user name '
     'is empty","code":3}'),
    ("3.4.23-defrag", 500, '{"error":"auth: user name is empty","message":"auth: user name is '
     'empty","code":2}'),
    ("3.5.1", 400, '{"error":"etcdserver: user name is empty","code":3,"message":"etcdserver: '
     'user name is empty"}'),
    ("3.5.30", 400, '{"code":3, "message":"etcdserver: user name is empty"}'),
    ("3.5.30-defrag", 500, '{"code":2, "message":"auth: user name is empty"}'),
    ("3.5.30-keepalive", 400, '{"error":{"code":3,"message":"etcdserver: user name is empty"}}\n'),
    ("3.6.14", 400, '{"code":3,"message":"etcdserver: user name is empty"}'),
    ("3.6.14-keepalive", 400, '{"error":{"code":3,"message":"etcdserver: user name is empty"}}\n'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body"), [c[1:] for c in NO_TOKEN], ids=[c[0] for c in NO_TOKEN]
)
def test_a_call_without_a_token_is_a_token_required_error(status: int, body: str) -> None:
    err = http_error(EP, "status", status, body)
    assert isinstance(err, EtcdTokenRequiredError)  # the client authenticates and asks again
    assert not err.transient
    assert str(err) == (
        f"{EP}: status failed: the cluster has authentication enabled; "
        "set auth.username and a password"
    )


DENIED = [
    ("3.4.23-defrag", 500, '{"error":"auth: permission denied","message":"auth: permission '
     'denied","code":2}'),
    ("3.5.1-defrag", 500, '{"error":"auth: permission denied","code":2,"message":"auth: '
     'permission denied"}'),
    ("3.5.30-defrag", 500, '{"code":2, "message":"auth: permission denied"}'),
    ("3.5.30-status", 403, '{"code":7, "message":"etcdserver: permission denied"}'),
    ("3.6.14-defrag", 403, '{"code":7,"message":"etcdserver: permission denied"}'),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body"), [c[1:] for c in DENIED], ids=[c[0] for c in DENIED])
def test_permission_denied_whatever_the_status(status: int, body: str) -> None:
    err = http_error(EP, "defragment", status, body)
    assert type(err) is EtcdAuthError
    assert not err.transient
    assert "permission denied" in str(err) and "root role" in str(err)


STALE = [
    ("3.4.23-kv", 401, '{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid '
     'auth token","code":16}'),
    ("3.4.23-defrag", 500, '{"error":"auth: invalid auth token","message":"auth: invalid auth '
     'token","code":2}'),
    ("3.5.30-defrag", 500, '{"code":2, "message":"auth: invalid auth token"}'),
    ("3.5.30-keepalive", 401, '{"error":{"code":16,"message":"etcdserver: invalid auth token"}}\n'),
    ("3.6.14", 401, '{"code":16,"message":"etcdserver: invalid auth token"}'),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body"), [c[1:] for c in STALE], ids=[c[0] for c in STALE])
def test_a_stale_token_is_named_as_such(status: int, body: str) -> None:
    err = http_error(EP, "defragment", status, body)
    assert isinstance(err, EtcdAuthError)
    assert str(err) == f"{EP}: defragment failed: auth token rejected: {_message(body)}"


def _message(body: str) -> str:
    return body.split('"message":"')[-1].split('"')[0]


LEARNER = [
    ("3.4.23", 503, "Service Unavailable", '{"error":"etcdserver: rpc not supported for learner",'
     '"message":"etcdserver: rpc not supported for learner","code":14}'),
    ("3.5.1", 503, "Service Unavailable", '{"error":"etcdserver: rpc not supported for learner",'
     '"code":14,"message":"etcdserver: rpc not supported for learner"}'),
    ("3.5.30", 503, "Service Unavailable",
     '{"code":14, "message":"etcdserver: rpc not supported for learner"}'),
    ("3.6.14", 400, "Bad Request",
     '{"code":9,"message":"etcdserver: rpc not supported for learner"}'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "reason", "body"), [c[1:] for c in LEARNER], ids=[c[0] for c in LEARNER]
)
def test_a_learner_refusal_is_the_same_error_on_every_version(
    status: int, reason: str, body: str
) -> None:
    exc_type = ConnectionFailedError if status == 503 else Etcd3Exception
    err = translate(exc_type(body, reason), EP, "put", "/kv/put")
    assert err.status == status
    assert not err.transient  # asking a learner again cannot help until it is promoted
    assert str(err) == (
        f"{EP}: put failed: etcdserver: rpc not supported for learner "
        "(this member is a learner: send the call to a voting member)"
    )


UNKNOWN_PATH = [
    ("3.4.23", "Not Found\n"),
    ("3.5.1", "Not Found\n"),
    ("3.5.30", '{"code":5, "message":"Not Found"}'),
    ("3.6.14", '{"code":5,"message":"Not Found"}'),
]


@pytest.mark.parametrize("body", [c[1] for c in UNKNOWN_PATH], ids=[c[0] for c in UNKNOWN_PATH])
def test_an_unknown_path_says_the_member_does_not_serve_it(body: str) -> None:
    err = translate(Etcd3Exception(body, "Not Found"), EP, "hashkv", "/maintenance/hashkv")
    assert err.status == 404  # what a caller checks to fall back (hashkv before 3.5.10)
    assert not err.transient
    assert str(err) == (
        f"{EP}: hashkv failed: the member does not serve this API (HTTP 404 on "
        "/v3/maintenance/hashkv): its etcd version predates the call (hashkv, for one, is "
        "served from 3.5.10 on)"
    )


@pytest.mark.parametrize(
    "body",
    [
        '{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease '
        'not found","code":5}',  # 3.4.23
        '{"code":5,"message":"etcdserver: requested lease not found"}',  # 3.6.14
    ],
    ids=["3.4.23", "3.6.14"],
)
def test_a_404_with_etcds_own_message_is_not_an_unknown_path(body: str) -> None:
    err = translate(Etcd3Exception(body, "Not Found"), EP, "lock lease revoke", "/kv/lease/revoke")
    assert str(err) == f"{EP}: lock lease revoke failed: etcdserver: requested lease not found"
    assert err.code == 5


WRONG_METHOD = [
    ("3.4.23", 405, "Method Not Allowed", "Method Not Allowed\n"),
    ("3.5.1", 405, "Method Not Allowed", "Method Not Allowed\n"),
    ("3.5.30", 501, "Not Implemented", '{"code":12, "message":"Method Not Allowed"}'),
    ("3.6.14", 501, "Not Implemented", '{"code":12,"message":"Method Not Allowed"}'),
]


@pytest.mark.parametrize(
    ("status", "reason", "body"), [c[1:] for c in WRONG_METHOD], ids=[c[0] for c in WRONG_METHOD]
)
def test_a_wrong_method_is_one_line_on_every_version(status: int, reason: str, body: str) -> None:
    err = translate(Etcd3Exception(body, reason), EP, "status", "/maintenance/status")
    assert err.status == status
    assert not err.transient
    assert (
        str(err) == f"{EP}: status failed: the gateway refused the HTTP method (Method Not Allowed)"
    )


def test_a_canceled_call_on_36_is_transient() -> None:
    # grpc-gateway v2 answers gRPC code 1 with HTTP 499, which Go names "status code 499".
    body = '{"code":1,"message":"context canceled"}'
    err = translate(Etcd3Exception(body, "status code 499"), EP, "status", "/maintenance/status")
    assert err.status == 499
    assert err.code == 1
    assert err.transient
    assert str(err).startswith(f"{EP}: status failed: context canceled (the call was canceled")


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InternalServerError("", "Internal Server Error"), 500),
        (ConnectionFailedError("", "Service Unavailable"), 503),
        (Etcd3Exception("", "Bad Request"), 400),
    ],
    ids=["500", "503", "400"],
)
def test_an_empty_error_body_names_the_http_status(exc: Etcd3Exception, status: int) -> None:
    # etcd 3.4.23 can answer an error without a body.
    err = translate(exc, EP, "status", "/maintenance/status")
    assert err.status == status
    assert str(err) == f"{EP}: status failed: HTTP {status}"
    assert err.transient is (status == 503)


def test_an_error_body_with_empty_fields_names_the_http_status() -> None:
    err = http_error(EP, "status", 503, '{"error":"","code":14,"message":""}')
    assert str(err) == f"{EP}: status failed: HTTP 503"
    assert err.transient


def test_every_message_is_one_line() -> None:
    for cases in (NO_TOKEN, DENIED, STALE):
        for _, status, body in cases:
            assert "\n" not in str(http_error(EP, "status", status, body))
    for _, status, _, body in LEARNER + WRONG_METHOD:
        assert "\n" not in str(http_error(EP, "status", status, body))
    assert isinstance(http_error(EP, "status", 404, "Not Found\n"), EtcdError)

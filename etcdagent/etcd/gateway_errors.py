"""What a failed gateway call means, in an operator's words.

etcd3gw reports failures as a few exception classes carrying the HTTP reason and the raw body;
requests reports connection failures as urllib3's nested text. This module turns both into the
project's ``EtcdError`` subclasses: the message names the member's URL, what failed and what to
check, and ``transient`` tells the retry layer whether asking again can help.

Each kind of failure is one small rule, tried in order: the first that recognises the text writes
the message. The order matters where texts overlap (a TLS failure's text often mentions a timeout
or a reset too), so a new rule goes where its text is the most specific one left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception

from etcdagent.errors import (
    EtcdAuthError,
    EtcdCompactedError,
    EtcdError,
    EtcdFutureRevisionError,
    EtcdNoSpaceError,
    EtcdTLSError,
    EtcdUnreachableError,
)
from etcdagent.etcd import versions

_STATUS_BY_REASON = {s.phrase.lower(): s.value for s in HTTPStatus}


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _root_cause(detail: str) -> str:
    """Drop urllib3's "HTTPConnectionPool(...): Max retries exceeded ... (Caused by" wrapping."""
    _, sep, cause = detail.partition("(Caused by ")
    return cause.rstrip(")") if sep else detail


# -- connection failures (no HTTP answer at all) ----------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """One connection failure being explained.

    Rules match on ``low``, the whole text lowercased (urllib3's wrapping included: some causes
    are named only there); messages quote ``detail``, the root cause alone.
    """

    endpoint: str
    operation: str
    detail: str
    low: str

    def mentions(self, *needles: str) -> bool:
        return any(needle in self.low for needle in needles)

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or self.endpoint

    def tls(self, what: str) -> EtcdTLSError:
        return EtcdTLSError(
            f"{self.endpoint}: {self.operation} failed: {what}",
            endpoint=self.endpoint,
            operation=self.operation,
        )

    def unreachable(self, what: str, *, transient: bool) -> EtcdUnreachableError:
        return EtcdUnreachableError(
            f"{self.endpoint}: {self.operation} failed: {what}",
            endpoint=self.endpoint,
            operation=self.operation,
            transient=transient,
        )


def _dns(f: _Failure) -> EtcdError | None:
    if not f.mentions(
        "nameresolution",
        "name or service not known",
        "failed to resolve",
        "temporary failure in name resolution",
        "nodename nor servname",
    ):
        return None
    return f.unreachable(
        f"cannot resolve host name {f.host!r} (check the endpoint and DNS)", transient=False
    )


def _tls_server_name(f: _Failure) -> EtcdError | None:
    if not f.mentions("doesn't match", "hostname mismatch", "ip address mismatch"):
        return None
    quoted = re.search(r"hostname '([^']+)'", f.detail)
    name = quoted.group(1) if quoted else f.host
    return f.tls(
        f"TLS: the server certificate is not valid for {name!r} "
        "(check the endpoint, or set tls.server_name to a name the certificate carries)"
    )


def _tls_server_certificate(f: _Failure) -> EtcdError | None:
    if not f.mentions("certificate_verify_failed", "certificate verify failed"):
        return None
    if f.mentions("expired"):
        return f.tls("TLS: the server certificate has expired")
    return f.tls("TLS: the server certificate is not signed by a trusted CA (check tls.ca_file)")


def _tls_not_spoken(f: _Failure) -> EtcdError | None:
    if not f.mentions("wrong_version_number", "wrong version number", "record layer failure"):
        return None
    return f.tls("TLS: the endpoint does not speak TLS (use http:// for it)")


def _tls_handshake_closed(f: _Failure) -> EtcdError | None:
    if not f.mentions("eof occurred in violation of protocol", "unexpected_eof"):
        return None
    return f.tls(
        "TLS: the member closed the connection during the handshake: it rejected "
        "the client certificate (missing, expired, or not signed by the CA it trusts: check "
        "tls.cert_file and tls.key_file), or it does not speak TLS (use http://)"
    )


def _tls_client_certificate(f: _Failure) -> EtcdError | None:
    if not f.mentions(
        "certificate required",
        "bad certificate",
        "certificate expired",
        "unknown ca",
        "certificate unknown",
    ):
        return None
    return f.tls(
        "TLS: the server rejected the client certificate (expired, not signed "
        "by the CA the server trusts, or missing: check tls.cert_file and tls.key_file)"
    )


def _tls_other(f: _Failure) -> EtcdError | None:
    if not f.mentions("sslerror", "ssl:", "[ssl"):
        return None
    return f.tls(f"TLS handshake failed: {_one_line(f.detail, 160)}")


def _timed_out(f: _Failure) -> EtcdError | None:
    if not f.mentions("timed out", "timeout"):
        return None
    return f.unreachable(
        "timed out (member overloaded, stopped, or a firewall drops packets)", transient=True
    )


def _refused(f: _Failure) -> EtcdError | None:
    if not f.mentions("refused"):
        return None
    return f.unreachable(
        "connection refused (is etcd running and listening on this address?)", transient=True
    )


def _reset(f: _Failure) -> EtcdError | None:
    if not f.mentions("reset", "aborted", "remotedisconnected", "broken pipe"):
        return None
    hint = " (if it serves TLS, use an https:// endpoint)" if f.endpoint.startswith("http:") else ""
    return f.unreachable(f"connection reset by the member{hint}", transient=True)


_CONNECTION_RULES: tuple[Callable[[_Failure], EtcdError | None], ...] = (
    _dns,
    _tls_server_name,
    _tls_server_certificate,
    _tls_not_spoken,
    _tls_handshake_closed,
    _tls_client_certificate,
    _tls_other,
    _timed_out,
    _refused,
    _reset,
)


def connection_error(endpoint: str, operation: str, detail: str) -> EtcdError:
    """Turn requests/urllib3 connection failure text into an operator's sentence."""
    failure = _Failure(endpoint, operation, detail=_root_cause(detail), low=detail.lower())
    for rule in _CONNECTION_RULES:
        error = rule(failure)
        if error is not None:
            return error
    return failure.unreachable(f"cannot connect: {_one_line(failure.detail, 160)}", transient=True)


# -- error answers (the gateway answered with an HTTP error) ----------------------------------


@dataclass(frozen=True)
class _Answer:
    """One HTTP error answer being explained: its status, and etcd's gRPC code and message."""

    endpoint: str
    operation: str
    status: int | None
    code: int | None
    message: str

    @property
    def low(self) -> str:
        return self.message.lower()

    def says(self, *needles: str) -> bool:
        return any(needle in self.low for needle in needles)

    def error(self, kind: type[EtcdError], what: str, **extra: Any) -> EtcdError:
        return kind(
            f"{self.endpoint}: {self.operation} failed: {what}",
            endpoint=self.endpoint,
            operation=self.operation,
            status=self.status,
            code=self.code,
            **extra,
        )


def _parse_error_body(status: int | None, body_text: str | None) -> tuple[int | None, str]:
    """(gRPC code, one-line message) of an error answer; the body's shape depends on the version
    (``versions.error_message``), and a body that is not JSON is the message itself."""
    code: int | None = None
    message = ""
    if body_text:
        try:
            body = json.loads(body_text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            raw_code = body.get("code")
            code = (
                raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
            )
            raw_msg = versions.error_message(body)
            message = raw_msg if isinstance(raw_msg, str) else str(raw_msg)
        else:
            message = body_text
    if not message:
        message = f"HTTP {status}" if status else "an error answer without a body"
    return code, _one_line(message)


def _revision(a: _Answer) -> EtcdError | None:
    if a.says("required revision has been compacted"):
        return a.error(EtcdCompactedError, a.message)
    if a.says("required revision is a future revision"):
        return a.error(EtcdFutureRevisionError, a.message)
    return None


def _nospace(a: _Answer) -> EtcdError | None:
    if not (a.says("database space exceeded") or (a.status == 429 and a.code == 8)):
        return None
    return a.error(
        EtcdNoSpaceError,
        f"{a.message} (NOSPACE: the database reached its quota; writes resume "
        "after compaction, defragmentation of every member and disarming the alarm)",
    )


def _wrong_password(a: _Answer) -> EtcdError | None:
    if not a.says("authentication failed", "invalid user id or password"):
        return None
    return a.error(
        EtcdAuthError,
        "authentication failed: wrong user name or password "
        "(check auth.username and auth.password)",
    )


def _token_rejected(a: _Answer) -> EtcdError | None:
    # The client renews its token on exactly this (an EtcdAuthError with status 401).
    if not (a.says("invalid auth token") or a.status == 401 or a.code == 16):
        return None
    return a.error(EtcdAuthError, f"auth token rejected: {a.message}")


def _no_user(a: _Answer) -> EtcdError | None:
    if not a.says("user name is empty", "user name not found"):
        return None
    return a.error(
        EtcdAuthError,
        "the cluster has authentication enabled; set auth.username and a password",
    )


def _permission_denied(a: _Answer) -> EtcdError | None:
    if not (a.says("permission denied") or a.status == 403 or a.code == 7):
        return None
    return a.error(
        EtcdAuthError,
        "permission denied (this call needs the root role: check the user's roles)",
    )


def _client_certificate_cn(a: _Answer) -> EtcdError | None:
    if not a.says("commonname of client sending a request against gateway"):
        return None
    return a.error(
        EtcdAuthError,
        "with authentication enabled, etcd refuses gateway requests made with a "
        "client certificate that has a CommonName; use a client certificate without a CN "
        "(or one whose CN is an etcd user, through gRPC)",
    )


def _https_expected(a: _Answer) -> EtcdError | None:
    if not a.says("http request to an https server"):
        return None
    return a.error(EtcdTLSError, "the member serves https; use an https:// endpoint")


_ANSWER_RULES: tuple[Callable[[_Answer], EtcdError | None], ...] = (
    _revision,
    _nospace,
    _wrong_password,
    _token_rejected,
    _no_user,
    _permission_denied,
    _client_certificate_cn,
    _https_expected,
)


def _other_answer(a: _Answer) -> EtcdError:
    """Any other refusal: transient when asking again may help (unavailable, timed out)."""
    transient = a.status in (502, 503, 504) or a.code in (4, 14)
    hint = ""
    if a.says("no leader", "leader changed"):
        hint = " (no leader, or a leader election in progress)"
    elif a.says("not leader"):
        hint = " (this member is not the leader: send it to the current leader)"
    return a.error(EtcdError, f"{a.message}{hint}", transient=transient)


def http_error(
    endpoint: str, operation: str, status: int | None, body_text: str | None
) -> EtcdError:
    """Map an HTTP error answer of the gateway, whichever version's body shape it has."""
    code, message = _parse_error_body(status, body_text)
    answer = _Answer(endpoint, operation, status, code, message)
    for rule in _ANSWER_RULES:
        error = rule(answer)
        if error is not None:
            return error
    return _other_answer(answer)


def translate(exc: Etcd3Exception, endpoint: str, operation: str) -> EtcdError:
    reason = str(exc.args[0]) if exc.args else None
    detail = exc.detail_text or ""
    if isinstance(exc, ConnectionFailedError | ConnectionTimeoutError) and reason is None:
        return connection_error(endpoint, operation, detail)
    status = _STATUS_BY_REASON.get(reason.lower()) if reason else None
    if status is None:
        status = {ConnectionFailedError: 503, ConnectionTimeoutError: 504}.get(type(exc))
    return http_error(endpoint, operation, status, detail)

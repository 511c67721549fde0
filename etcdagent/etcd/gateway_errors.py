"""What a failed gateway call means, in an operator's words.

etcd3gw reports failures as a few exception classes carrying the HTTP reason and the raw body;
requests reports connection failures as urllib3's nested text. This module turns both into the
project's ``EtcdError`` subclasses: the message names the member's URL, what failed and what to
check, and ``transient`` tells the retry layer whether asking again can help.
"""

from __future__ import annotations

import json
import re
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

_STATUS_BY_REASON = {s.phrase.lower(): s.value for s in HTTPStatus}


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _root_cause(detail: str) -> str:
    """Drop urllib3's "HTTPConnectionPool(...): Max retries exceeded ... (Caused by" wrapping."""
    _, sep, cause = detail.partition("(Caused by ")
    return cause.rstrip(")") if sep else detail


def connection_error(endpoint: str, operation: str, detail: str) -> EtcdError:
    """Turn requests/urllib3 connection failure text into an operator's sentence."""
    low = detail.lower()
    detail = _root_cause(detail)
    host = urlsplit(endpoint).hostname or endpoint
    prefix = f"{endpoint}: {operation} failed"
    if (
        "nameresolution" in low
        or "name or service not known" in low
        or ("failed to resolve" in low or "temporary failure in name resolution" in low)
        or "nodename nor servname" in low
    ):
        return EtcdUnreachableError(
            f"{prefix}: cannot resolve host name {host!r} (check the endpoint and DNS)",
            endpoint=endpoint,
            operation=operation,
        )
    if "doesn't match" in low or "hostname mismatch" in low or "ip address mismatch" in low:
        quoted = re.search(r"hostname '([^']+)'", detail)
        name = quoted.group(1) if quoted else host
        return EtcdTLSError(
            f"{prefix}: TLS: the server certificate is not valid for {name!r} "
            "(check the endpoint, or set tls.server_name to a name the certificate carries)",
            endpoint=endpoint,
            operation=operation,
        )
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        if "expired" in low:
            return EtcdTLSError(
                f"{prefix}: TLS: the server certificate has expired",
                endpoint=endpoint,
                operation=operation,
            )
        return EtcdTLSError(
            f"{prefix}: TLS: the server certificate is not signed by a trusted CA "
            "(check tls.ca_file)",
            endpoint=endpoint,
            operation=operation,
        )
    if (
        "wrong_version_number" in low
        or "wrong version number" in low
        or ("record layer failure" in low)
    ):
        return EtcdTLSError(
            f"{prefix}: TLS: the endpoint does not speak TLS (use http:// for it)",
            endpoint=endpoint,
            operation=operation,
        )
    if "eof occurred in violation of protocol" in low or "unexpected_eof" in low:
        return EtcdTLSError(
            f"{prefix}: TLS: the member closed the connection during the handshake: it rejected "
            "the client certificate (missing, expired, or not signed by the CA it trusts: check "
            "tls.cert_file and tls.key_file), or it does not speak TLS (use http://)",
            endpoint=endpoint,
            operation=operation,
        )
    if (
        "certificate required" in low
        or "bad certificate" in low
        or ("certificate expired" in low or "unknown ca" in low or "certificate unknown" in low)
    ):
        return EtcdTLSError(
            f"{prefix}: TLS: the server rejected the client certificate (expired, not signed "
            "by the CA the server trusts, or missing: check tls.cert_file and tls.key_file)",
            endpoint=endpoint,
            operation=operation,
        )
    if "sslerror" in low or "ssl:" in low or "[ssl" in low:
        return EtcdTLSError(
            f"{prefix}: TLS handshake failed: {_one_line(detail, 160)}",
            endpoint=endpoint,
            operation=operation,
        )
    if "timed out" in low or "timeout" in low:
        return EtcdUnreachableError(
            f"{prefix}: timed out (member overloaded, stopped, or a firewall drops packets)",
            endpoint=endpoint,
            operation=operation,
            transient=True,
        )
    if "refused" in low:
        return EtcdUnreachableError(
            f"{prefix}: connection refused (is etcd running and listening on this address?)",
            endpoint=endpoint,
            operation=operation,
            transient=True,
        )
    if "reset" in low or "aborted" in low or "remotedisconnected" in low or "broken pipe" in low:
        return EtcdUnreachableError(
            f"{prefix}: connection reset by the member"
            + (
                " (if it serves TLS, use an https:// endpoint)"
                if endpoint.startswith("http:")
                else ""
            ),
            endpoint=endpoint,
            operation=operation,
            transient=True,
        )
    return EtcdUnreachableError(
        f"{prefix}: cannot connect: {_one_line(detail, 160)}",
        endpoint=endpoint,
        operation=operation,
        transient=True,
    )


def http_error(
    endpoint: str, operation: str, status: int | None, body_text: str | None
) -> EtcdError:
    """Map an HTTP error answer of the gateway; 3.4/3.5 send {error, code, message}, 3.6 drops
    ``error``."""
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
            raw_msg = body.get("message") or body.get("error") or ""
            message = raw_msg if isinstance(raw_msg, str) else str(raw_msg)
        else:
            message = body_text
    if not message:
        message = f"HTTP {status}" if status else "an error answer without a body"
    message = _one_line(message)
    low = message.lower()
    prefix = f"{endpoint}: {operation} failed"
    common: dict[str, Any] = {
        "endpoint": endpoint,
        "operation": operation,
        "status": status,
        "code": code,
    }
    if "required revision has been compacted" in low:
        return EtcdCompactedError(f"{prefix}: {message}", **common)
    if "required revision is a future revision" in low:
        return EtcdFutureRevisionError(f"{prefix}: {message}", **common)
    if "database space exceeded" in low or (status == 429 and code == 8):
        return EtcdNoSpaceError(
            f"{prefix}: {message} (NOSPACE: the database reached its quota; writes resume "
            "after compaction, defragmentation of every member and disarming the alarm)",
            **common,
        )
    if "authentication failed" in low or "invalid user id or password" in low:
        return EtcdAuthError(
            f"{prefix}: authentication failed: wrong user name or password "
            "(check auth.username and auth.password)",
            **common,
        )
    if "invalid auth token" in low or status == 401 or code == 16:
        return EtcdAuthError(f"{prefix}: auth token rejected: {message}", **common)
    if "user name is empty" in low or "user name not found" in low:
        return EtcdAuthError(
            f"{prefix}: the cluster has authentication enabled; set auth.username and a password",
            **common,
        )
    if "permission denied" in low or status == 403 or code == 7:
        return EtcdAuthError(
            f"{prefix}: permission denied (this call needs the root role: check the user's roles)",
            **common,
        )
    if "commonname of client sending a request against gateway" in low:
        return EtcdAuthError(
            f"{prefix}: with authentication enabled, etcd refuses gateway requests made with a "
            "client certificate that has a CommonName; use a client certificate without a CN "
            "(or one whose CN is an etcd user, through gRPC)",
            **common,
        )
    if "http request to an https server" in low:
        return EtcdTLSError(
            f"{prefix}: the member serves https; use an https:// endpoint", **common
        )
    transient = status in (502, 503, 504) or code in (4, 14)
    hint = ""
    if "no leader" in low or "leader changed" in low:
        hint = " (no leader, or a leader election in progress)"
    elif "not leader" in low:
        hint = " (this member is not the leader: send it to the current leader)"
    return EtcdError(f"{prefix}: {message}{hint}", transient=transient, **common)


def translate(exc: Etcd3Exception, endpoint: str, operation: str) -> EtcdError:
    reason = str(exc.args[0]) if exc.args else None
    detail = exc.detail_text or ""
    if isinstance(exc, ConnectionFailedError | ConnectionTimeoutError) and reason is None:
        return connection_error(endpoint, operation, detail)
    status = _STATUS_BY_REASON.get(reason.lower()) if reason else None
    if status is None:
        status = {ConnectionFailedError: 503, ConnectionTimeoutError: 504}.get(type(exc))
    return http_error(endpoint, operation, status, detail)

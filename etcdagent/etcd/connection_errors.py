"""What a failed connection means, in an operator's words: no HTTP answer at all.

requests reports connection failures as urllib3's nested text. Each kind of failure is one small
rule, tried in order: the first that recognises the text writes the message. The order matters
where texts overlap (a TLS failure's text often mentions a timeout or a reset too), so a new rule
goes where its text is the most specific one left. ``gateway_errors`` does the same for the HTTP
error answers of the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from etcdagent.errors import EtcdError, EtcdTLSError, EtcdUnreachableError


def one_line(text: str, limit: int = 200) -> str:
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
    return f.tls(f"TLS handshake failed: {one_line(f.detail, 160)}")


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
    return failure.unreachable(f"cannot connect: {one_line(failure.detail, 160)}", transient=True)

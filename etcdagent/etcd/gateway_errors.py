"""What a failed gateway call means, in an operator's words.

etcd3gw reports failures as a few exception classes carrying the HTTP reason and the raw body
(connection failures, with no answer at all, are ``connection_errors``'). This module turns them
into the project's ``EtcdError`` subclasses: the message names the member's URL, what failed and
what to check, and ``transient`` tells the retry layer whether asking again can help.

Each kind of answer is one small rule, tried in order: the first that recognises it writes the
message. The shapes differ between versions (``versions.error_fields``): rules match etcd's
message first and the HTTP status or gRPC code only where the message says nothing, because
3.6 answers some refusals with another status than 3.5 did.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception

from etcdagent.errors import (
    EtcdAuthError,
    EtcdCompactedError,
    EtcdError,
    EtcdFutureRevisionError,
    EtcdNoSpaceError,
    EtcdTLSError,
    EtcdTokenRequiredError,
)
from etcdagent.etcd import versions
from etcdagent.etcd.connection_errors import connection_error, one_line

__all__ = ["connection_error", "http_error", "translate"]

_STATUS_BY_REASON = {s.phrase.lower(): s.value for s in HTTPStatus}
_UNNAMED_STATUS = re.compile(r"status code (\d{3})$")  # Go's reason for a code it has no name for


# -- error answers (the gateway answered with an HTTP error) ----------------------------------


@dataclass(frozen=True)
class _Answer:
    """One HTTP error answer being explained: its status, and etcd's gRPC code and message."""

    endpoint: str
    operation: str
    status: int | None
    code: int | None
    message: str
    path: str = ""

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
    (``versions.error_fields``), and a body that is not JSON is the message itself."""
    code: int | None = None
    message = ""
    if body_text:
        try:
            body = json.loads(body_text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            raw_code, raw_msg = versions.error_fields(body)
            code = (
                raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
            )
            message = raw_msg if isinstance(raw_msg, str) else str(raw_msg)
        else:
            message = body_text
    if not message:
        message = f"HTTP {status}" if status else "an error answer without a body"
    return code, one_line(message)


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
    # Sent without a token (HTTP 400 code 3, or 500 code 2 "auth: ..." for hash and defragment
    # before 3.6): the client authenticates and asks again when a user is configured.
    if a.says("user name is empty"):
        kind: type[EtcdAuthError] = EtcdTokenRequiredError
    elif a.says("user name not found"):  # the token's user was deleted
        kind = EtcdAuthError
    else:
        return None
    return a.error(kind, "the cluster has authentication enabled; set auth.username and a password")


def _permission_denied(a: _Answer) -> EtcdError | None:
    # HTTP 403 code 7, or HTTP 500 code 2 "auth: permission denied" (hash, hashkv, defragment
    # before 3.6). ``auth.TokenAuth`` names the user and the role the call needs.
    if not (a.says("permission denied") or a.status == 403 or a.code == 7):
        return None
    return a.error(
        EtcdAuthError,
        "permission denied (this call needs the root role: check the user's roles)",
    )


def _learner(a: _Answer) -> EtcdError | None:
    if not a.says(versions.LEARNER_REFUSAL):
        return None
    # Not transient (3.4-3.5 answer 503): a learner refuses until an operator promotes it.
    return a.error(
        EtcdError,
        f"{a.message} (this member is a learner: send the call to a voting member)",
        transient=False,
    )


def _unknown_path(a: _Answer) -> EtcdError | None:
    if a.status != 404 or a.low.strip() not in versions.UNKNOWN_PATH_MESSAGES:
        return None
    where = f" {versions.API_PATH.rstrip('/')}{a.path}" if a.path else ""
    return a.error(
        EtcdError,
        f"the member does not serve this API (HTTP 404 on{where or ' this path'}): its etcd "
        "version predates the call (hashkv, for one, is served from 3.5.10 on)",
    )


def _wrong_method(a: _Answer) -> EtcdError | None:
    # 3.4.23 and 3.5.1: HTTP 405 "Method Not Allowed"; 3.5.30 and 3.6.14: 501 code 12.
    if not (a.status == 405 or (a.status == 501 and a.says("method not allowed"))):
        return None
    return a.error(EtcdError, "the gateway refused the HTTP method (Method Not Allowed)")


def _canceled(a: _Answer) -> EtcdError | None:
    if a.status != versions.CANCELED_STATUS and a.code != 1:
        return None
    return a.error(
        EtcdError,
        f"{a.message} (the call was canceled before it finished: the member may be stopping)",
        transient=True,
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
    _learner,
    _unknown_path,
    _wrong_method,
    _canceled,
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
    endpoint: str, operation: str, status: int | None, body_text: str | None, path: str = ""
) -> EtcdError:
    """Map an HTTP error answer of the gateway, whichever version's body shape it has.

    ``path`` (under the API prefix, e.g. ``/maintenance/hashkv``) is named when the member does
    not serve it."""
    code, message = _parse_error_body(status, body_text)
    answer = _Answer(endpoint, operation, status, code, message, path)
    for rule in _ANSWER_RULES:
        error = rule(answer)
        if error is not None:
            return error
    return _other_answer(answer)


def _status_of(reason: str) -> int | None:
    """The HTTP status behind etcd3gw's reason phrase (it keeps no status code)."""
    named = _STATUS_BY_REASON.get(reason.lower())
    if named is not None:
        return named
    unnamed = _UNNAMED_STATUS.match(reason.strip().lower())
    return int(unnamed.group(1)) if unnamed else None


def translate(exc: Etcd3Exception, endpoint: str, operation: str, path: str = "") -> EtcdError:
    reason = str(exc.args[0]) if exc.args else None
    detail = exc.detail_text or ""
    if isinstance(exc, ConnectionFailedError | ConnectionTimeoutError) and reason is None:
        return connection_error(endpoint, operation, detail)
    status = _status_of(reason) if reason else None
    if status is None:
        status = {ConnectionFailedError: 503, ConnectionTimeoutError: 504}.get(type(exc))
    return http_error(endpoint, operation, status, detail, path)

"""The project's own exceptions.

Every failure that reaches an operator is one of these, carrying a message that names the member,
what failed and what to check, so the CLI can print one line instead of a traceback.
"""

from __future__ import annotations


class EtcdAgentError(Exception):
    """Base of every error etcdagent raises on purpose."""

    exit_code = 1


class ConfigError(EtcdAgentError):
    """Bad configuration or usage: refused at start, before anything talks to etcd."""

    exit_code = 2


class EtcdError(EtcdAgentError):
    """A request to one etcd member failed.

    ``endpoint`` names the member's URL; ``transient`` tells the retry layer whether asking again
    could help (connection refused, timeout, 503) or not (bad request, permission denied).
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        operation: str | None = None,
        transient: bool = False,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.operation = operation
        self.transient = transient
        self.status = status
        self.code = code


class EtcdUnreachableError(EtcdError):
    """The member did not answer at all (refused, reset, timed out, name not resolved)."""


class EtcdTLSError(EtcdError):
    """The TLS handshake failed: unknown CA, wrong server name, rejected client certificate."""


class EtcdAuthError(EtcdError):
    """Authentication or permission failed (wrong password, token rejected, role missing)."""


class EtcdTokenRequiredError(EtcdAuthError):
    """Authentication is on and the call was sent without a token ("user name is empty").

    Its own class because the client answers it by authenticating and asking again, which it
    must not do for any other refusal."""


class EtcdNoSpaceError(EtcdError):
    """A write was refused because the member's database reached its quota (NOSPACE alarm)."""


class EtcdCompactedError(EtcdError):
    """The requested revision is already compacted: a compaction to it counts as done."""


class EtcdFutureRevisionError(EtcdError):
    """The requested revision is newer than the store's current revision."""


class EtcdProtocolError(EtcdError):
    """The member answered, but with something etcdagent cannot understand."""


class ClusterUnavailableError(EtcdAgentError):
    """No configured endpoint answered: nothing can be observed, let alone maintained.

    ``transient`` is False when every endpoint failed for a reason that retrying cannot fix (a
    TLS or DNS mistake, a refused password): a configuration problem rather than an outage.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class LockBusyError(EtcdAgentError):
    """Another agent holds the maintenance lock; ``holder`` says who."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class LockLostError(EtcdAgentError):
    """The maintenance lock's lease expired while we worked: stop before the next step."""


class MaintenanceRefused(EtcdAgentError):
    """A safety gate refused a maintenance step; the message says which and why."""

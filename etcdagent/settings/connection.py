"""How the agent reaches the cluster: endpoints, TLS material and etcd authentication."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from etcdagent.settings.fields import Seconds, SettingsGroup, split_csv


def normalize_endpoint(raw: str) -> str:
    """``scheme://host:port``; a scheme-less ``host:port`` is kept without one, and Settings
    gives it http or https depending on whether TLS is configured."""
    text = raw.strip().rstrip("/")
    bare = "://" not in text
    parts = urlsplit("http://" + text if bare else text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{raw!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"{raw!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{raw!r}: invalid port") from None
    if port is None:
        raise ValueError(f"{raw!r}: no port (etcd clients listen on 2379 by default)")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"{raw!r}: an endpoint is scheme://host:port, without a path")
    if parts.username or parts.password:
        raise ValueError("an endpoint must not carry credentials; use the auth settings")
    netloc = parts.netloc.lower()
    return netloc if bare else f"{parts.scheme}://{netloc}"


def with_scheme(endpoint: str, tls: bool) -> str:
    """The scheme a bare ``host:port`` gets once it is known whether TLS is configured."""
    if "://" in endpoint:
        return endpoint
    return ("https://" if tls else "http://") + endpoint


class ConnectionSettings(SettingsGroup):
    """How to reach the cluster."""

    endpoints: Annotated[list[str], NoDecode, BeforeValidator(split_csv)] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"],
        description="Client URLs of one or more members (comma-separated in env and flags). "
        "One reachable endpoint is enough when discovery is on.",
    )
    discover: bool = Field(
        default=True,
        description="Find every member through the member list and talk to each on its own "
        "client URL. Off: only the configured endpoints are contacted.",
    )
    request_timeout: Seconds = Field(
        default=5.0, description="Timeout of one ordinary request to one member."
    )
    retry_deadline: Seconds = Field(
        default=2.0,
        description="How long transient failures (refused, reset, timeout, HTTP 503) are retried "
        "before a request counts as failed.",
    )
    metrics_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Separate metrics URLs (etcd --listen-metrics-urls), keyed by member name or "
        "client URL. Members not listed are scraped on their client URL.",
    )
    local_metrics_url: str | None = Field(
        default=None,
        description="Metrics URL of the member `daemon.local_member` names (kubeadm: "
        "http://127.0.0.1:2381), for a config shared by every node. An entry of metrics_urls "
        "for that member wins; without daemon.local_member it is not used.",
    )

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one endpoint is required")
        seen: list[str] = []
        for raw in value:
            url = normalize_endpoint(raw)
            if url not in seen:
                seen.append(url)
        return seen

    @field_validator("metrics_urls")
    @classmethod
    def _check_metrics_urls(cls, value: dict[str, str]) -> dict[str, str]:
        return {key.rstrip("/"): normalize_endpoint(url) for key, url in value.items()}

    @field_validator("local_metrics_url")
    @classmethod
    def _check_local_metrics_url(cls, value: str | None) -> str | None:
        # Scheme-less means http: a metrics listener is plain HTTP unless its URL says https.
        return None if value is None else with_scheme(normalize_endpoint(value), False)


class TLSSettings(SettingsGroup):
    """TLS towards the members' client URLs (kubeadm: /etc/kubernetes/pki/etcd)."""

    ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the members' server certificates."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Key of the client certificate (PEM).")
    server_name: str | None = Field(
        default=None,
        description="Name to verify the server certificate against (and send as SNI) instead of "
        "the endpoint's host, for certificates issued to a DNS name but reached by IP.",
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError(f"{value}: no such file")
        if not os.access(value, os.R_OK):
            raise ValueError(f"{value}: not readable by this user")
        return value

    @model_validator(mode="after")
    def _pair(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.ca_file, self.cert_file, self.server_name))


class AuthSettings(SettingsGroup):
    """etcd user authentication (the root role is needed for defragmentation)."""

    username: str | None = Field(default=None, description="etcd user name.")
    password: SecretStr | None = Field(
        default=None, description="Password of that user. Prefer password_file or the environment."
    )
    password_file: Path | None = Field(
        default=None, description="File whose first line is the password (a mounted Secret)."
    )

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if self.password_file is not None and not self.password_file.is_file():
            raise ValueError(f"password_file {self.password_file}: no such file")
        has_password = self.password is not None or self.password_file is not None
        if has_password and not self.username:
            raise ValueError("a password is set but no username")
        if self.username and not has_password:
            raise ValueError(f"username {self.username!r} is set but no password or password_file")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            lines = self.password_file.read_text().splitlines()
            return lines[0] if lines else ""
        return None

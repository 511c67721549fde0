"""Configuration: one settings model with nested groups, layered like kopf's.

Precedence, strongest first: command-line flags, environment (``ETCDAGENT_`` prefix, ``__`` between
group and field, e.g. ``ETCDAGENT_TLS__CA_FILE``), the config file (``--config``, YAML, TOML or
JSON), then the defaults below. ``ETCDAGENT_ENDPOINTS`` is accepted as a shorthand for
``ETCDAGENT_CONNECTION__ENDPOINTS`` because it is the one variable everybody sets.

Everything is validated before the agent talks to etcd: a bad value stops it with exit code 2 and a
message naming the field, never a traceback, and never echoing a secret.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from etcdagent.errors import ConfigError
from etcdagent.settings.windows import MaintenanceWindow
from etcdagent.units import parse_duration, parse_size

ENV_PREFIX = "ETCDAGENT_"

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _none_word(value: object) -> object:
    """Lets the environment and flags switch an optional setting off, as null does in a file."""
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "off"):
        return None
    return value


Nullable = BeforeValidator(_none_word)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _normalize_endpoint(raw: str) -> str:
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


def _with_scheme(endpoint: str, tls: bool) -> str:
    if "://" in endpoint:
        return endpoint
    return ("https://" if tls else "http://") + endpoint


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionSettings(_Group):
    """How to reach the cluster."""

    endpoints: Annotated[list[str], NoDecode, BeforeValidator(_split_csv)] = Field(
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

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one endpoint is required")
        seen: list[str] = []
        for raw in value:
            url = _normalize_endpoint(raw)
            if url not in seen:
                seen.append(url)
        return seen

    @field_validator("metrics_urls")
    @classmethod
    def _check_metrics_urls(cls, value: dict[str, str]) -> dict[str, str]:
        return {key.rstrip("/"): _normalize_endpoint(url) for key, url in value.items()}


class TLSSettings(_Group):
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


class AuthSettings(_Group):
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


class GateSettings(_Group):
    """Conditions checked before maintenance starts; each one blocking is reported by name.

    Defaults follow the alert thresholds of etcd-mixin (contrib/mixin in etcd-io/etcd).
    """

    wal_fsync_p99_max: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = Field(
        default=0.5,
        description="Block while any member's WAL fsync p99 over the lookback exceeds "
        "this (etcdHighFsyncDurations warns at 0.5 s).",
    )
    backend_commit_p99_max: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = Field(
        default=0.25,
        description="Block while any member's backend commit p99 exceeds "
        "this (etcdHighCommitDurations: 0.25 s).",
    )
    max_leader_changes: int = Field(
        default=3, ge=0, description="Block after more leader changes than this in the lookback."
    )
    max_request_rate: Annotated[Annotated[float, Field(ge=0)] | None, Nullable] = Field(
        default=1000.0,
        description="Traffic gate for windows: block while the cluster serves more unary gRPC "
        "requests per second than this (a window that is not actually quiet is skipped). "
        "null (or off) disables it.",
    )


class EmergencySettings(_Group):
    """Triggers that act outside maintenance windows, each switchable."""

    nospace: bool = Field(default=True, description="A NOSPACE alarm starts recovery at once.")
    quota: bool = Field(
        default=True,
        description="Quota pressure starts compaction and defragmentation outside windows, "
        "still behind the safety gates.",
    )
    quota_use: Ratio = Field(default=0.9, description="Quota pressure: file / quota at least this.")
    time_to_quota: Annotated[
        Annotated[float, BeforeValidator(parse_duration), Field(gt=0)] | None, Nullable
    ] = Field(
        default=3600.0,
        description="Quota pressure: the predicted time until the quota is reached (from the "
        "growth over the lookback) is shorter than this. Null disables it.",
    )


class DaemonSettings(_Group):
    """The long-running agent (`etcdagent run`)."""

    interval: Seconds = Field(default=15.0, description="Time between two monitoring cycles.")
    lookback: Seconds = Field(
        default=300.0,
        description="Window over which p99 latencies, leader changes, traffic and growth are "
        "computed from the members' metrics.",
    )
    listen: str = Field(
        default="0.0.0.0:9479",
        description="Address of the HTTP server for /metrics, /healthz and /readyz.",
    )
    local_member: str | None = Field(
        default=None,
        description="Defragment only this member (name or client URL): a DaemonSet replica "
        "maintains its own node's member and watches the others.",
    )
    compaction_interval: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = Field(
        default=300.0,
        description="Compact (with the retention) this often, inside or outside windows; 0 "
        "disables the periodic compaction.",
    )
    grace_period: Seconds = Field(
        default=30.0,
        description="On SIGTERM: no new step starts; the process exits at the latest after this.",
    )
    error_backoff_max: Seconds = Field(
        default=300.0, description="Longest pause after failing cycles (doubles per failure)."
    )
    pushgateway: str | None = Field(
        default=None, description="With `run --once`: push the metrics to this Pushgateway URL."
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: expected host:port, e.g. 0.0.0.0:9479")
        return value


class LogFormat(StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


Bytes = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class CompactionSettings(_Group):
    """Compaction by revision, keeping a retention so watchers (kube-apiserver) keep history."""

    retain: Annotated[
        Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] | None, Nullable
    ] = Field(
        default=300.0,
        description="Keep at least this much history by time (default 5m, what kube-apiserver's "
        "watchers need). Found from timestamped marker keys the agent writes under /etcdagent/ "
        "on each run: until a marker is older than this, nothing is compacted by time.",
    )
    retain_revisions: int | None = Field(
        default=None,
        ge=0,
        description="Keep at least this many revisions. With both set, the larger history wins.",
    )
    applied_timeout: Seconds = Field(
        default=30.0,
        description="How long to wait for every member to apply a compaction before going on.",
    )

    @model_validator(mode="after")
    def _some_retention(self) -> CompactionSettings:
        if self.retain_revisions is not None and "retain" not in self.model_fields_set:
            # Asking for a revision count alone means that count, not count-or-5-minutes.
            object.__setattr__(self, "retain", None)
        if self.retain is None and self.retain_revisions is None:
            raise ValueError("set retain (a duration) or retain_revisions (a count), or both")
        return self


class DefragSettings(_Group):
    """When a member's defragmentation is worth it, and how carefully it is done."""

    min_free_ratio: Ratio = Field(
        default=0.45, description="Defragment when at least this share of the file is free..."
    )
    min_db_size: Bytes = Field(default=100 * 1024**2, description="...and the file is this big.")
    quota_pressure: Ratio = Field(
        default=0.80, description="Or when the file uses at least this share of the quota..."
    )
    min_reclaimable_under_pressure: Bytes = Field(
        default=64 * 1024**2, description="...and at least this much can be reclaimed."
    )
    compact_first: bool = Field(
        default=True, description="Compact (with the retention) before defragmenting."
    )
    move_leader: bool = Field(
        default=False,
        description="Move leadership to an already defragmented member before the leader's turn.",
    )
    wait_between: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = Field(
        default=5.0, description="Pause between two members, after the first has caught up."
    )
    timeout_min: Seconds = Field(default=60.0, description="Defrag timeout floor.")
    timeout_per_gib: Seconds = Field(
        default=120.0,
        description="Defrag timeout added per GiB of file (large files take minutes).",
    )
    timeout_max: Seconds = Field(default=1800.0, description="Defrag timeout cap.")
    max_apply_lag: int = Field(
        default=1000,
        ge=0,
        description="Gate: raft entries a member may have committed but not applied.",
    )
    estimated_rate: Bytes = Field(
        default=50 * 1024**2,
        description="Bytes per second a defrag is assumed to rewrite, to estimate its duration: "
        "a defrag that would overrun the maintenance window's end is not started.",
    )
    recover_max_quota_use: Ratio = Field(
        default=0.9,
        description="NOSPACE recovery disarms only when the data in use is below this share of "
        "the quota; above it, the next writes would raise the alarm again.",
    )
    recovery_timeout: Seconds = Field(
        default=60.0,
        description="How long a member may take to answer and catch up after its defrag.",
    )

    @model_validator(mode="after")
    def _timeouts(self) -> DefragSettings:
        if self.timeout_min > self.timeout_max:
            raise ValueError("timeout_min must not exceed timeout_max")
        return self


class LockSettings(_Group):
    """The lease-based lock that keeps maintenance to one agent at a time, cluster-wide."""

    ttl: Seconds = Field(
        default=15.0, description="Lease TTL: how soon a killed agent's lock frees itself."
    )
    timeout: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = Field(
        default=30.0, description="How long to wait for another agent's maintenance to end."
    )


class LogSettings(_Group):
    """Structured logs on stderr."""

    level: LogLevel = Field(default=LogLevel.INFO, description="Lowest level written.")
    format: LogFormat = Field(
        default=LogFormat.AUTO,
        description="json, console, or auto: console on a terminal, JSON otherwise.",
    )


_config_file_data: ContextVar[dict[str, Any] | None] = ContextVar("_config_file_data", default=None)


# Short environment variables for settings everybody sets: variable -> (group, field).
SHORTHAND_ENV = {ENV_PREFIX + "ENDPOINTS": ("connection", "endpoints")}


class _ShorthandEnvSource(PydanticBaseSettingsSource):
    """Maps the SHORTHAND_ENV variables (ETCDAGENT_ENDPOINTS) onto their settings."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, (group, field) in SHORTHAND_ENV.items():
            value = os.environ.get(variable)
            if value is not None:
                found.setdefault(group, {})[field] = value
        return found


class Settings(BaseSettings):
    """Everything etcdagent can be told."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    compaction: CompactionSettings = Field(default_factory=CompactionSettings)
    defrag: DefragSettings = Field(default_factory=DefragSettings)
    lock: LockSettings = Field(default_factory=LockSettings)
    gates: GateSettings = Field(default_factory=GateSettings)
    emergency: EmergencySettings = Field(default_factory=EmergencySettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="Maintenance windows: planned maintenance starts only inside one. Each is "
        "a cron schedule, a duration and a timezone, e.g. {schedule: '0 2 * * *', duration: 1h, "
        "timezone: Europe/Berlin}. Emergencies do not wait for a window.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _ShorthandEnvSource(settings_cls),
            InitSettingsSource(settings_cls, init_kwargs=_config_file_data.get() or {}),
        )

    @model_validator(mode="after")
    def _resolve_schemes(self) -> Settings:
        """A bare host:port becomes https when TLS material is configured, else http; an
        explicit scheme is kept as written."""
        tls = self.tls.enabled
        resolved: list[str] = []
        for endpoint in self.connection.endpoints:
            url = _with_scheme(endpoint, tls)
            if url not in resolved:
                resolved.append(url)
        metrics = {
            key: _with_scheme(url, False) for key, url in self.connection.metrics_urls.items()
        }
        if resolved != self.connection.endpoints or metrics != self.connection.metrics_urls:
            # Frozen model: replace the group once, here, before anybody has seen it.
            object.__setattr__(
                self,
                "connection",
                self.connection.model_copy(update={"endpoints": resolved, "metrics_urls": metrics}),
            )
        return self

    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs or metrics."""
        found: list[str] = []
        if self.auth.password is not None:
            found.append(self.auth.password.get_secret_value())
        return [s for s in found if s]


def _parse_problem(exc: Exception) -> str:
    """Where and what, without the quoted source line (it may hold a password)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or exc.context or "syntax error"
        return f"{what} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split()) or type(exc).__name__


def read_config_file(path: Path) -> dict[str, Any]:
    """Load a YAML, TOML or JSON config file into a dict, with one-line errors."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first = _parse_problem(exc)
        kind = suffix.lstrip(".").upper() if suffix in (".toml", ".json") else "YAML"
        raise ConfigError(f"config file {path}: not valid {kind}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of groups")
    return data


def _secret_location(loc: tuple[str, ...]) -> bool:
    """Inputs under ``auth`` are never echoed: a password written at the wrong level would be."""
    return bool(loc) and loc[0] == "auth"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field; never the value of a secret field."""
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        name = ".".join(loc) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif (
            "input" in err
            and not _secret_location(loc)
            and err["type"] not in ("value_error", "missing")
        ):
            shown = repr(err["input"])
            if len(shown) <= 60:
                msg = f"{msg} (got {shown})"
        lines.append(f"{name}: {msg}")
    return "; ".join(lines)


def load_settings(
    overrides: Mapping[str, Any] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings from flags (``overrides``, nested dicts), environment and file."""
    file_data = read_config_file(config_file) if config_file is not None else {}
    token = _config_file_data.set(file_data)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        where = f" (config file {config_file})" if config_file is not None else ""
        raise ConfigError(
            f"invalid configuration{where}: {describe_validation_error(exc)}"
        ) from None
    finally:
        _config_file_data.reset(token)

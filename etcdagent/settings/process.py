"""The agent process itself: the long-running daemon's loop and HTTP server, and its logs."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from etcdagent.settings.fields import Seconds, SecondsOrZero, SettingsGroup


class DaemonSettings(SettingsGroup):
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
        "maintains its own node's member and watches the others. A URL no member advertises "
        "(https://127.0.0.1:2379) names the member answering there. Naming no member is an "
        "error at start (exit 2) and, while running, etcdagent_local_member_unmatched 1.",
    )
    compaction_interval: SecondsOrZero = Field(
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


class LogSettings(SettingsGroup):
    """Structured logs on stderr."""

    level: LogLevel = Field(default=LogLevel.INFO, description="Lowest level written.")
    format: LogFormat = Field(
        default=LogFormat.AUTO,
        description="json, console, or auto: console on a terminal, JSON otherwise.",
    )

"""Configuration, shared by every layer: one model, layered flags > env > file > defaults."""

from etcdagent.settings.model import (
    ENV_PREFIX,
    CompactionSettings,
    DefragSettings,
    LogFormat,
    LogLevel,
    LogSettings,
    Settings,
    TLSSettings,
    load_settings,
    read_config_file,
)

__all__ = [
    "ENV_PREFIX",
    "CompactionSettings",
    "DefragSettings",
    "LogFormat",
    "LogLevel",
    "LogSettings",
    "Settings",
    "TLSSettings",
    "load_settings",
    "read_config_file",
]

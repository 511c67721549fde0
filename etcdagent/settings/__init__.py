"""Configuration, shared by every layer: one model, layered flags > env > file > defaults."""

from etcdagent.settings.connection import TLSSettings
from etcdagent.settings.loading import load_settings, read_config_file
from etcdagent.settings.maintenance import CompactionMode, CompactionSettings, DefragSettings
from etcdagent.settings.model import Settings
from etcdagent.settings.process import LogFormat, LogLevel, LogSettings
from etcdagent.settings.sources import ENV_PREFIX

__all__ = [
    "ENV_PREFIX",
    "CompactionMode",
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

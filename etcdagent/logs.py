"""Structured logs: JSON off a terminal (for log collectors), readable lines on one.

A redaction processor runs last before rendering: values of secret-looking keys are masked and any
registered secret (the configured password, the current auth token) is cut out of every string,
so a careless ``log.info(..., error=str(exc))`` cannot leak one.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

from etcdagent.settings import LogFormat, LogSettings

_SECRET_KEYS = ("password", "token", "secret", "authorization", "private_key")
_REDACTED = "[REDACTED]"
_secrets: set[str] = set()


def register_secrets(values: Iterable[str]) -> None:
    """Remember values that must never be written; short ones would mask too much, so skip."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _REDACTED if _secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in _SECRET_KEYS)


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _REDACTED if _secret_key(key) else _scrub(event_dict[key])
    return event_dict


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    use_json = settings.format == LogFormat.JSON or (
        settings.format == LogFormat.AUTO and not out.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, settings.level.value.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )

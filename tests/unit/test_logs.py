"""Redaction: secrets never reach a log line."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from etcdagent import logs
from etcdagent.logs import configure_logging, redact, redact_processor, register_secrets
from etcdagent.settings import LogFormat, LogLevel, LogSettings

SECRET = "s3cr3t-Hunter2"
TOKEN = "QmaTbUjXyzABCDEF.42"


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(logs, "_secrets", set())
    yield
    structlog.reset_defaults()


def process(**event: Any) -> dict[str, Any]:
    return dict(redact_processor(None, "info", dict(event)))


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "auth_password",
        "token",
        "auth_token",
        "Authorization",
        "secret",
        "client_secret",
        "private_key",
    ],
)
def test_secret_keys_are_masked(key: str) -> None:
    out = process(event="login", **{key: "visible-value"})
    assert out[key] == "[REDACTED]"
    assert out["event"] == "login"


def test_ordinary_keys_are_kept() -> None:
    out = process(event="status", endpoint="http://10.0.0.1:2379", db_size=4096, user="root")
    assert out == {
        "event": "status",
        "endpoint": "http://10.0.0.1:2379",
        "db_size": 4096,
        "user": "root",
    }


def test_secret_keys_nested_in_dicts_are_masked() -> None:
    out = process(event="request", headers={"Authorization": TOKEN, "User-Agent": "etcdagent"})
    assert out["headers"] == {"Authorization": "[REDACTED]", "User-Agent": "etcdagent"}


def test_registered_secrets_are_cut_from_nested_strings() -> None:
    register_secrets([SECRET, TOKEN])
    out = process(
        event=f"failed with {SECRET}",
        error=f"http://10.0.0.1:2379: authenticate failed: body name=root password={SECRET}",
        details={"attempts": [f"token {TOKEN}", ("x", f"{SECRET}!")], "n": 3},
    )
    text = json.dumps(out)
    assert SECRET not in text
    assert TOKEN not in text
    assert out["event"] == "failed with [REDACTED]"
    assert out["details"]["attempts"][0] == "token [REDACTED]"
    assert out["details"]["attempts"][1] == ("x", "[REDACTED]!")
    assert out["details"]["n"] == 3


def test_longer_secret_is_cut_before_a_shorter_one_it_contains() -> None:
    register_secrets(["abcd", "abcdefgh"])
    assert redact("x abcdefgh y") == "x [REDACTED] y"


def test_short_and_empty_secrets_are_not_registered() -> None:
    register_secrets(["", "abc"])
    assert redact("abc and a b c") == "abc and a b c"


def test_redaction_in_rendered_json_logs() -> None:
    register_secrets([SECRET])
    stream = io.StringIO()
    configure_logging(LogSettings(level=LogLevel.DEBUG, format=LogFormat.JSON), stream)
    log = structlog.get_logger()
    log.info("authenticate failed", error=f"wrong password {SECRET}", password=SECRET)
    log.debug("dropped below level? no", token=TOKEN)
    output = stream.getvalue()
    assert SECRET not in output
    assert TOKEN not in output
    first = json.loads(output.splitlines()[0])
    assert first["event"] == "authenticate failed"
    assert first["password"] == "[REDACTED]"
    assert first["error"] == "wrong password [REDACTED]"
    assert first["level"] == "info"


def test_level_filter() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(level=LogLevel.WARNING, format=LogFormat.JSON), stream)
    log = structlog.get_logger()
    log.info("not shown")
    log.warning("shown")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["shown"]

"""The command line without etcd: configuration errors, exit codes, one-line failures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from etcdagent import __version__, logs
from etcdagent.cli import cli

PASSWORD = "s3cr3t-Hunter2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ETCDAGENT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(logs, "_secrets", set())
    yield
    structlog.reset_defaults()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def assert_one_line_error(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("etcdagent: error: ")
    assert result.stdout == ""
    return lines[0]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout
    assert "etcdagent" in result.stdout


def test_help_lists_status() -> None:
    result = run("--help")
    assert result.exit_code == 0
    assert "status" in result.stdout


def test_bad_endpoint_scheme() -> None:
    result = run("status", "--endpoints", "ftp://x:1")
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "connection.endpoints" in line
    assert "ftp://x:1" in line


def test_bad_request_timeout() -> None:
    result = run("status", "--request-timeout", "abc")
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "connection.request_timeout" in line
    assert "abc" in line


def test_bad_request_timeout_from_env() -> None:
    result = run("status", env={"ETCDAGENT_CONNECTION__REQUEST_TIMEOUT": "soon"})
    assert result.exit_code == 2
    assert "connection.request_timeout" in assert_one_line_error(result)


def test_unknown_key_in_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("connection:\n  endpoints: 10.0.0.1:2379\n  timeout: 5s\n")
    result = run("status", "--config", str(config))
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "connection.timeout" in line
    assert "unknown setting" in line
    assert str(config) in line


def test_config_file_from_env(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[connection]\nendpoints = ['ftp://x:1']\n")
    result = run("status", env={"ETCDAGENT_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "connection.endpoints" in assert_one_line_error(result)


def test_invalid_yaml_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("connection:\n  endpoints: [10.0.0.1:2379\n")
    result = run("status", "--config", str(config))
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert str(config) in line
    assert "YAML" in line


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("status", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "missing.yaml" in assert_one_line_error(result)


def test_password_without_username_is_refused_without_echoing_it() -> None:
    result = run("status", env={"ETCDAGENT_AUTH__PASSWORD": PASSWORD})
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "auth" in line
    assert "username" in line
    assert PASSWORD not in result.output


def test_user_without_password_is_refused() -> None:
    result = run("status", "--user", "root")
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "root" in line
    assert "password" in line


def test_missing_password_file(tmp_path: Path) -> None:
    result = run("status", "--user", "root", "--password-file", str(tmp_path / "pw"))
    assert result.exit_code == 2
    assert "password_file" in assert_one_line_error(result)


def test_cert_without_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    result = run("status", "--cert", str(cert))
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "cert_file" in line
    assert "key_file" in line


def test_missing_ca_file(tmp_path: Path) -> None:
    result = run("status", "--cacert", str(tmp_path / "ca.pem"))
    assert result.exit_code == 2
    assert "tls.ca_file" in assert_one_line_error(result)


def test_malformed_metrics_url_flag() -> None:
    result = run("status", "--metrics-url", "m1")
    assert result.exit_code == 2
    assert "MEMBER=URL" in result.output
    assert "Traceback" not in result.output


def test_unknown_output_format() -> None:
    result = run("status", "--output", "yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_unreachable_endpoint_is_one_line_exit_1() -> None:
    # 127.0.0.1:1 refuses at once; a short retry deadline keeps the test from waiting.
    result = run("status", "--endpoints", "127.0.0.1:1", "--retry-deadline", "10ms")
    assert result.exit_code == 1
    line = assert_one_line_error(result)
    assert "http://127.0.0.1:1" in line
    assert "refused" in line


def test_unreachable_endpoint_with_auth_never_prints_the_password() -> None:
    result = run(
        "status",
        "--endpoints",
        "127.0.0.1:1",
        "--retry-deadline",
        "10ms",
        "--user",
        "root",
        "--log-level",
        "debug",
        env={"ETCDAGENT_AUTH__PASSWORD": PASSWORD},
    )
    assert result.exit_code == 1
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("etcdagent: error: ")


def two_clusters(tmp_path: Path, events_extra: str = "") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        "clusters:\n"
        "  - name: main\n"
        "    connection: {endpoints: ['http://127.0.0.1:1']}\n"
        "  - name: events\n"
        "    connection: {endpoints: ['http://127.0.0.1:2']}\n" + events_extra
    )
    return config


@pytest.mark.parametrize("command", ["compact", "defrag", "recover"])
def test_a_command_that_changes_etcd_needs_cluster_when_several(
    tmp_path: Path, command: str
) -> None:
    result = run(command, "--dry-run", "--config", str(two_clusters(tmp_path)))
    assert result.exit_code == 2
    line = assert_one_line_error(result)
    assert "several clusters are configured (main, events)" in line and "--cluster" in line


def test_an_unknown_cluster_is_refused_naming_the_configured_ones(tmp_path: Path) -> None:
    result = run("status", "--cluster", "evnets", "--config", str(two_clusters(tmp_path)))
    assert result.exit_code == 2
    assert "--cluster 'evnets'" in assert_one_line_error(result)
    assert "(clusters: main, events)" in result.stderr
    # Without clusters: the one cluster is named default.
    assert run("status", "--cluster", "main", "--endpoints", "http://127.0.0.1:1").exit_code == 2


def test_an_unreadable_password_file_of_one_cluster_is_named(tmp_path: Path) -> None:
    extra = f"    auth: {{username: u, password_file: {tmp_path / 'missing'}}}\n"
    result = run("status", "--config", str(two_clusters(tmp_path, extra)))
    assert result.exit_code == 2
    assert "events.auth: password_file" in assert_one_line_error(result)

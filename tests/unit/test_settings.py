"""Configuration: layering, endpoint normalisation, validation errors an operator can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from etcdagent.errors import ConfigError
from etcdagent.settings import LogLevel, load_settings, read_config_file

PASSWORD = "s3cr3t-Hunter2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ETCDAGENT_"):
            monkeypatch.delenv(name)


def refused(overrides: dict[str, Any] | None = None, config_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides, config_file)
    assert info.value.exit_code == 2
    return str(info.value)


def endpoints(value: Any, **extra: Any) -> list[str]:
    settings = load_settings({"connection": {"endpoints": value}, **extra})
    return list(settings.connection.endpoints)


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN DUMMY-----\n")
        files[name] = path
    return files


# -- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.connection.endpoints == ["http://127.0.0.1:2379"]
    assert settings.connection.discover is True
    assert settings.connection.request_timeout == 5.0
    assert settings.connection.retry_deadline > 0
    assert settings.connection.metrics_urls == {}
    assert settings.tls.enabled is False
    assert settings.auth.username is None
    assert settings.auth.resolved_password() is None
    assert settings.log.level is LogLevel.INFO
    assert settings.secrets() == []


# -- precedence: flags > env > file > defaults ----------------------------------------------------


def _yaml_config(tmp_path: Path) -> Path:
    path = tmp_path / "etcdagent.yaml"
    path.write_text(
        "connection:\n"
        "  endpoints: [file-host:2379]\n"
        "  request_timeout: 7s\n"
        "  retry_deadline: 9s\n"
        "log:\n"
        "  level: debug\n"
    )
    return path


def test_config_file_overrides_defaults(tmp_path: Path) -> None:
    settings = load_settings(config_file=_yaml_config(tmp_path))
    assert settings.connection.endpoints == ["http://file-host:2379"]
    assert settings.connection.request_timeout == 7.0
    assert settings.connection.retry_deadline == 9.0
    assert settings.log.level is LogLevel.DEBUG


def test_env_overrides_file_field_by_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_CONNECTION__REQUEST_TIMEOUT", "3s")
    settings = load_settings(config_file=_yaml_config(tmp_path))
    assert settings.connection.request_timeout == 3.0
    # the rest of the file's connection group survives
    assert settings.connection.retry_deadline == 9.0
    assert settings.connection.endpoints == ["http://file-host:2379"]


def test_flags_override_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_CONNECTION__REQUEST_TIMEOUT", "3s")
    monkeypatch.setenv("ETCDAGENT_ENDPOINTS", "env-host:2379")
    settings = load_settings(
        {"connection": {"request_timeout": "1500ms", "endpoints": "flag-host:2379"}},
        _yaml_config(tmp_path),
    )
    assert settings.connection.request_timeout == 1.5
    assert settings.connection.endpoints == ["http://flag-host:2379"]
    assert settings.connection.retry_deadline == 9.0  # from the file, untouched by flags
    assert settings.log.level is LogLevel.DEBUG


def test_endpoints_shorthand_env_is_comma_separated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCDAGENT_ENDPOINTS", "10.0.0.1:2379, 10.0.0.2:2379,,10.0.0.3:2379")
    settings = load_settings(config_file=_yaml_config(tmp_path))
    assert settings.connection.endpoints == [
        "http://10.0.0.1:2379",
        "http://10.0.0.2:2379",
        "http://10.0.0.3:2379",
    ]


def test_full_env_name_beats_the_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_ENDPOINTS", "short:2379")
    monkeypatch.setenv("ETCDAGENT_CONNECTION__ENDPOINTS", "full-a:2379,full-b:2379")
    assert load_settings().connection.endpoints == ["http://full-a:2379", "http://full-b:2379"]


def test_unrelated_prefixed_env_vars_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI sets ETCDAGENT_TEST_ETCD, the CLI reads ETCDAGENT_CONFIG: neither is a setting.
    monkeypatch.setenv("ETCDAGENT_TEST_ETCD", "3.5.1")
    monkeypatch.setenv("ETCDAGENT_CONFIG", "/nonexistent.yaml")
    assert load_settings().connection.endpoints == ["http://127.0.0.1:2379"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "c.toml",
            '[connection]\nendpoints = ["10.0.0.9:2379"]\nrequest_timeout = "2m"\n'
            '[log]\nlevel = "warning"\n',
        ),
        (
            "c.json",
            json.dumps(
                {
                    "connection": {"endpoints": ["10.0.0.9:2379"], "request_timeout": 120},
                    "log": {"level": "warning"},
                }
            ),
        ),
        (
            "c.yml",
            "connection:\n  endpoints: 10.0.0.9:2379\n  request_timeout: 2m\n"
            "log:\n  level: warning\n",
        ),
    ],
)
def test_config_file_formats(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    settings = load_settings(config_file=path)
    assert settings.connection.endpoints == ["http://10.0.0.9:2379"]
    assert settings.connection.request_timeout == 120.0
    assert settings.log.level is LogLevel.WARNING


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_settings(config_file=path) == load_settings()


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("bad.yaml", "connection: [\n", "YAML"),
        ("bad.toml", "[connection\n", "TOML"),
        ("bad.json", "{connection:", "JSON"),
    ],
)
def test_unparsable_config_file_names_file_and_format(
    tmp_path: Path, name: str, text: str, kind: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    message = refused(config_file=path)
    assert str(path) in message
    assert f"not valid {kind}" in message


def test_config_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    message = refused(config_file=path)
    assert str(path) in message
    assert "mapping" in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = refused(config_file=path)
    assert str(path) in message
    assert "No such file" in message


def test_unknown_key_in_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("connection:\n  endpoint: 10.0.0.1:2379\n")
    message = refused(config_file=path)
    assert "connection.endpoint" in message
    assert "unknown setting" in message
    assert str(path) in message


def test_unknown_group_is_named() -> None:
    message = refused({"conection": {"endpoints": "h:1"}})
    assert "conection" in message
    assert "unknown setting" in message


def test_read_config_file_returns_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"log": {"level": "error"}}')
    assert read_config_file(path) == {"log": {"level": "error"}}


# -- durations ------------------------------------------------------------------------------


def test_bad_duration_in_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_CONNECTION__REQUEST_TIMEOUT", "abc")
    message = refused()
    assert "connection.request_timeout" in message
    assert "abc" in message


@pytest.mark.parametrize("value", ["0s", "-5", 0, -1])
def test_durations_must_be_positive(value: object) -> None:
    message = refused({"connection": {"retry_deadline": value}})
    assert "connection.retry_deadline" in message


def test_infinite_timeout_is_refused() -> None:
    # Regression: "inf" passed gt=0, and requests would never have timed out.
    message = refused({"connection": {"request_timeout": "inf"}})
    assert "connection.request_timeout" in message


# -- endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("10.0.0.1:2379", "http://10.0.0.1:2379"),
        ("etcd-0.etcd:2379", "http://etcd-0.etcd:2379"),
        ("http://10.0.0.1:2379/", "http://10.0.0.1:2379"),
        ("https://10.0.0.1:2379", "https://10.0.0.1:2379"),
        (" 10.0.0.1:2379 ", "http://10.0.0.1:2379"),
        ("http://[::1]:2379", "http://[::1]:2379"),
    ],
)
def test_endpoint_normalisation(raw: str, url: str) -> None:
    assert endpoints([raw]) == [url]


def test_duplicate_endpoints_are_dropped_in_order() -> None:
    assert endpoints("b:2379,a:2379,http://b:2379,b:2379/") == [
        "http://b:2379",
        "http://a:2379",
    ]


def test_scheme_case_is_normalised() -> None:
    # Regression: "HTTP://" was kept as written, so it was not deduplicated against http://.
    assert endpoints("HTTP://10.0.0.1:2379,http://10.0.0.1:2379") == ["http://10.0.0.1:2379"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("ftp://x:1", "scheme must be http or https"),
        ("localhost", "no port"),
        ("http://10.0.0.1", "no port"),
        ("http://10.0.0.1:2379/v3", "without a path"),
        ("http://10.0.0.1:2379?x=1", "without a path"),
        ("10.0.0.1:99999", "invalid port"),
        ("10.0.0.1:port", "invalid port"),
        ("http://:2379", "no host"),
    ],
)
def test_bad_endpoints_are_refused(raw: str, why: str) -> None:
    message = refused({"connection": {"endpoints": [raw]}})
    assert "connection.endpoints" in message
    assert why in message


def test_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    message = refused({"connection": {"endpoints": [f"http://root:{PASSWORD}@10.0.0.1:2379"]}})
    assert "connection.endpoints" in message
    assert "credentials" in message
    assert PASSWORD not in message


def test_no_endpoints_is_refused() -> None:
    message = refused({"connection": {"endpoints": ""}})
    assert "connection.endpoints" in message
    assert "at least one endpoint" in message


def test_metrics_urls_are_normalised() -> None:
    settings = load_settings({"connection": {"metrics_urls": {"m1": "10.0.0.1:2381"}}})
    assert settings.connection.metrics_urls == {"m1": "http://10.0.0.1:2381"}


def test_bad_metrics_url_is_named() -> None:
    message = refused({"connection": {"metrics_urls": {"m1": "ftp://10.0.0.1:2381"}}})
    assert "connection.metrics_urls" in message


# -- TLS ------------------------------------------------------------------------------------


def test_bare_endpoints_become_https_with_a_ca(pem: dict[str, Path]) -> None:
    assert endpoints("10.0.0.1:2379,https://10.0.0.2:2379", tls={"ca_file": str(pem["ca"])}) == [
        "https://10.0.0.1:2379",
        "https://10.0.0.2:2379",
    ]


def test_bare_endpoints_become_https_with_a_client_cert(pem: dict[str, Path]) -> None:
    tls = {"cert_file": str(pem["cert"]), "key_file": str(pem["key"])}
    assert endpoints("10.0.0.1:2379", tls=tls) == ["https://10.0.0.1:2379"]


def test_bare_endpoints_become_https_with_a_server_name() -> None:
    assert endpoints("10.0.0.1:2379", tls={"server_name": "etcd.example"}) == [
        "https://10.0.0.1:2379"
    ]


def test_endpoints_stay_http_without_tls() -> None:
    assert endpoints("10.0.0.1:2379") == ["http://10.0.0.1:2379"]


def test_cert_without_key_is_refused(pem: dict[str, Path]) -> None:
    message = refused({"tls": {"cert_file": str(pem["cert"])}})
    assert "tls" in message
    assert "cert_file and key_file" in message


def test_key_without_cert_is_refused(pem: dict[str, Path]) -> None:
    message = refused({"tls": {"key_file": str(pem["key"])}})
    assert "cert_file and key_file" in message


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ca.pem"
    message = refused({"tls": {"ca_file": str(missing)}})
    assert "tls.ca_file" in message
    assert str(missing) in message


def test_directory_is_not_a_ca_file(tmp_path: Path) -> None:
    message = refused({"tls": {"ca_file": str(tmp_path)}})
    assert "tls.ca_file" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file_is_named(pem: dict[str, Path]) -> None:
    pem["key"].chmod(0)
    message = refused({"tls": {"cert_file": str(pem["cert"]), "key_file": str(pem["key"])}})
    assert "tls.key_file" in message
    assert "not readable" in message


# -- auth -----------------------------------------------------------------------------------


def test_username_without_password_is_refused() -> None:
    message = refused({"auth": {"username": "root"}})
    assert "auth" in message
    assert "'root'" in message
    assert "no password" in message


def test_password_without_username_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETCDAGENT_AUTH__PASSWORD", PASSWORD)
    message = refused()
    assert "auth" in message
    assert "no username" in message
    assert PASSWORD not in message


def test_password_and_password_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    message = refused(
        {"auth": {"username": "root", "password": PASSWORD, "password_file": str(secret)}}
    )
    assert "not both" in message
    assert PASSWORD not in message


def test_missing_password_file_is_named(tmp_path: Path) -> None:
    message = refused({"auth": {"username": "root", "password_file": str(tmp_path / "pw")}})
    assert "password_file" in message
    assert str(tmp_path / "pw") in message


def test_password_from_env_with_username_from_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCDAGENT_AUTH__PASSWORD", PASSWORD)
    settings = load_settings({"auth": {"username": "root"}})
    assert settings.auth.resolved_password() == PASSWORD
    assert settings.secrets() == [PASSWORD]
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in str(settings.model_dump())


def test_password_file_first_line_is_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\nignored\n")
    settings = load_settings({"auth": {"username": "root", "password_file": str(secret)}})
    assert settings.auth.resolved_password() == PASSWORD


@pytest.mark.parametrize("bad", [12345678, [PASSWORD], {"v": PASSWORD}])
def test_wrongly_typed_password_is_not_echoed(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"auth": {"username": "root", "password": bad}}))
    message = refused(config_file=path)
    assert "auth.password" in message
    assert PASSWORD not in message
    assert "12345678" not in message


def test_password_written_at_the_wrong_level_is_not_echoed(tmp_path: Path) -> None:
    # Regression: "auth: <password>" failed as "Input should be a valid dictionary ... (got
    # '<password>')": the input of the whole group was echoed.
    path = tmp_path / "c.yaml"
    path.write_text(f"auth: {PASSWORD}\n")
    message = refused(config_file=path)
    assert "auth" in message
    assert PASSWORD not in message

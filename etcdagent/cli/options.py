"""The command-line options, which setting each one sets, and the settings they make together.

The tables below (``FLAG_TO_SETTING``, ``MAINTENANCE_FLAGS``, ``RUN_FLAGS``) are the one place
a flag is tied to its setting: :func:`settings_from_flags` applies them, and the reference docs
(:mod:`etcdagent.cli.docgen`) read them by name to show each setting's flag. Flags override the
environment, which overrides the config file (see :mod:`etcdagent.settings`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from etcdagent.errors import ConfigError
from etcdagent.logs import configure_logging, register_secrets
from etcdagent.settings import LogFormat, LogLevel, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

FLAG_TO_SETTING = {
    "endpoints": ("connection", "endpoints"),
    "discover": ("connection", "discover"),
    "request_timeout": ("connection", "request_timeout"),
    "retry_deadline": ("connection", "retry_deadline"),
    "metrics_urls": ("connection", "metrics_urls"),
    "ca_file": ("tls", "ca_file"),
    "cert_file": ("tls", "cert_file"),
    "key_file": ("tls", "key_file"),
    "server_name": ("tls", "server_name"),
    "username": ("auth", "username"),
    "password_file": ("auth", "password_file"),
    "log_level": ("log", "level"),
    "log_format": ("log", "format"),
}

MAINTENANCE_FLAGS = {
    "retain": ("compaction", "retain"),
    "retain_revisions": ("compaction", "retain_revisions"),
    "compaction_mode": ("compaction", "mode"),
    "lock_timeout": ("lock", "timeout"),
    "move_leader": ("defrag", "move_leader"),
    "wait_between": ("defrag", "wait_between"),
    "compact": ("defrag", "compact_first"),
}

RUN_FLAGS = {
    "pushgateway": ("daemon", "pushgateway"),
    "listen": ("daemon", "listen"),
    "local_member": ("daemon", "local_member"),
    "interval": ("daemon", "interval"),
}


def _apply(fn: F, options: list[Callable[[F], F]]) -> F:
    """Decorates ``fn`` so that ``--help`` lists the options in the order given."""
    for option in reversed(options):
        fn = option(fn)
    return fn


# -- connection, TLS, auth, logs: every command that talks to etcd -------------------------------


def _parse_metrics_urls(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str] | None:
    if not values:
        return None
    urls: dict[str, str] = {}
    for value in values:
        key, sep, url = value.partition("=")
        if not sep or not key or not url:
            raise click.BadParameter(
                f"{value!r}: expected MEMBER=URL, e.g. m1=http://10.0.0.1:2381"
            )
        urls[key] = url
    return urls


def _endpoint_options() -> list[Decorator[Any]]:
    return [
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            metavar="FILE",
            envvar="ETCDAGENT_CONFIG",
            help="Config file (YAML, TOML or JSON). Env: ETCDAGENT_CONFIG.",
        ),
        click.option(
            "--cluster",
            metavar="NAME",
            help="One cluster of the config's `clusters:` (status and doctor: all by default; "
            "compact, defrag, recover: required when several are configured).",
        ),
        click.option(
            "--endpoints",
            metavar="URLS",
            help="Comma-separated client URLs, e.g. "
            "https://10.0.0.1:2379. One reachable endpoint is enough.",
        ),
        click.option(
            "--discover/--no-discover",
            default=None,
            help="Find the other members through the member list (default: on).",
        ),
        click.option(
            "--request-timeout", metavar="DURATION", help="Timeout of one request (default 5s)."
        ),
        click.option(
            "--retry-deadline",
            metavar="DURATION",
            help="How long transient failures are retried (default 2s).",
        ),
    ]


def _credential_options() -> list[Decorator[Any]]:
    return [
        click.option(
            "--cacert", "ca_file", metavar="FILE", help="CA bundle that verifies the members."
        ),
        click.option("--cert", "cert_file", metavar="FILE", help="Client certificate (PEM)."),
        click.option("--key", "key_file", metavar="FILE", help="Client certificate key (PEM)."),
        click.option(
            "--server-name", metavar="NAME", help="Verify server certificates against this name."
        ),
        click.option("--user", "username", metavar="NAME", help="etcd user name."),
        click.option(
            "--password-file",
            metavar="FILE",
            help="File holding the etcd user's password. Or set ETCDAGENT_AUTH__PASSWORD.",
        ),
    ]


def _metrics_and_log_options() -> list[Decorator[Any]]:
    return [
        click.option(
            "--metrics-url",
            "metrics_urls",
            multiple=True,
            callback=_parse_metrics_urls,
            metavar="MEMBER=URL",
            help="Separate metrics URL of a member (name or client URL); repeatable.",
        ),
        click.option(
            "--log-level",
            type=click.Choice([lv.value for lv in LogLevel]),
            help="Log level (default info).",
        ),
        click.option(
            "--log-format",
            type=click.Choice([f.value for f in LogFormat]),
            help="Log format: auto (console on a terminal, else JSON), json, console.",
        ),
    ]


def connection_options(fn: F) -> F:
    """The flags every command that talks to etcd shares."""
    return _apply(fn, [*_endpoint_options(), *_credential_options(), *_metrics_and_log_options()])


# -- maintenance: the commands that change etcd ---------------------------------------------------


def maintenance_options(fn: F) -> F:
    """Flags of the commands that change etcd."""
    return _apply(
        fn,
        [
            click.option(
                "--dry-run",
                is_flag=True,
                help="Print the plan and change nothing (not even the retention marker).",
            ),
            click.option(
                "--output",
                "-o",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="text for people, json for scripts.",
            ),
        ],
    )


def lock_options(fn: F) -> F:
    """The wait for another agent's lock (compaction takes no lock: it is idempotent)."""
    return _apply(
        fn,
        [
            click.option(
                "--lock-timeout",
                metavar="DURATION",
                help="Wait this long for another agent's maintenance to end (default 30s).",
            ),
        ],
    )


def retention_options(fn: F) -> F:
    """How much history compaction keeps (compact, defrag's compaction first, run)."""
    return _apply(
        fn,
        [
            click.option(
                "--retain",
                metavar="DURATION",
                help="Keep at least this much history by time (default 5m).",
            ),
            click.option(
                "--retain-revisions",
                type=click.IntRange(min=0),
                metavar="N",
                help="Keep at least this many revisions. Unless --retain (or compaction.retain) "
                "is set too, it replaces the default time retention; with both, more history "
                "wins.",
            ),
            click.option(
                "--compaction-mode",
                type=click.Choice(["auto", "always", "never"]),
                help="auto (default): leave compaction to kube-apiserver while it compacts; "
                "always: compact whatever it does; never: do not compact.",
            ),
        ],
    )


def defrag_options(fn: F) -> F:
    """How carefully members are defragmented (defrag, recover, run)."""
    return _apply(
        fn,
        [
            click.option(
                "--move-leader/--no-move-leader",
                default=None,
                help="Move leadership to a defragmented member before the leader's turn.",
            ),
            click.option(
                "--wait-between",
                metavar="DURATION",
                help="Pause between members, after the previous one caught up (default 5s).",
            ),
        ],
    )


# -- from flags to settings -----------------------------------------------------------------------


def settings_from_flags(
    options: dict[str, Any], extra: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Pops the connection flags out of ``options`` and builds validated settings."""
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    for flag, (group, field) in FLAG_TO_SETTING.items():
        value = options.pop(flag, None)
        if value is not None:
            overrides.setdefault(group, {})[field] = value
    config_file = options.pop("config_file", None)
    settings = load_settings(overrides, config_file, command_line=True)
    register_secrets(settings.secrets())
    for name, own in settings.per_cluster().items():
        try:
            register_secrets([own.auth.resolved_password() or ""])
        except OSError as exc:
            where = "" if own is settings else f"{name}."
            raise ConfigError(
                f"{where}auth.password_file: cannot read: {exc.strerror or exc}"
            ) from None
    configure_logging(settings.log)
    return settings


def chosen_clusters(settings: Settings, name: str | None) -> dict[str, Settings]:
    """The clusters a command works on: the one ``--cluster`` names, else every one."""
    clusters = settings.per_cluster()
    if name is None:
        return clusters
    if name not in clusters:
        raise ConfigError(
            f"--cluster {name!r}: no such cluster in the configuration "
            f"(clusters: {', '.join(clusters)})"
        )
    return {name: clusters[name]}


def one_cluster(settings: Settings, name: str | None) -> Settings:
    """The one cluster a command that changes etcd works on: never several by surprise."""
    chosen = chosen_clusters(settings, name)
    if len(chosen) > 1:
        raise ConfigError(
            f"several clusters are configured ({', '.join(chosen)}): choose one with --cluster NAME"
        )
    return next(iter(chosen.values()))


def pop_setting_flags(
    options: dict[str, Any], *tables: dict[str, tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """Pops the flags of ``tables`` that were given out of ``options``, as nested overrides."""
    extra: dict[str, dict[str, Any]] = {}
    for table in tables:
        for flag, (group, field) in table.items():
            value = options.pop(flag, None)
            if value is not None:
                extra.setdefault(group, {})[field] = value
    return extra


def maintenance_settings(options: dict[str, Any]) -> Settings:
    """The settings of compact, defrag and recover: connection flags plus maintenance flags,
    for the one cluster ``--cluster`` names (or the only one)."""
    cluster = options.pop("cluster", None)
    settings = settings_from_flags(options, pop_setting_flags(options, MAINTENANCE_FLAGS))
    return one_cluster(settings, cluster)


def run_flag_settings(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The daemon and maintenance flags of `run`, popped out of ``options``."""
    return pop_setting_flags(options, RUN_FLAGS, MAINTENANCE_FLAGS)

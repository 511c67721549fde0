"""Command line: `etcdagent status` (and the maintenance commands of later issues).

Flags override the environment, which overrides the config file (see settings.py). Exit codes are
an interface: 0 healthy / done, 1 degraded, unavailable or failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import structlog

from etcdagent import __version__
from etcdagent.act.maintenance import Maintenance, RunReport
from etcdagent.cli.maintenance_view import TextListener, render_summary
from etcdagent.cli.status_view import render_table, status_json
from etcdagent.errors import ConfigError, EtcdAgentError
from etcdagent.etcd.client import ClusterClient
from etcdagent.logs import configure_logging, redact, register_secrets
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.health import Verdict, assess
from etcdagent.settings import LogFormat, LogLevel, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


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


def connection_options(fn: F) -> F:
    """The flags every command that talks to etcd shares."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            metavar="FILE",
            envvar="ETCDAGENT_CONFIG",
            help="Config file (YAML, TOML or JSON). Env: ETCDAGENT_CONFIG.",
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
    for option in reversed(options):
        fn = option(fn)
    return fn


_FLAG_TO_SETTING = {
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


def settings_from_flags(
    options: dict[str, Any], extra: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Pops the connection flags out of ``options`` and builds validated settings."""
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (extra or {}).items()}
    for flag, (group, field) in _FLAG_TO_SETTING.items():
        value = options.pop(flag, None)
        if value is not None:
            overrides.setdefault(group, {})[field] = value
    config_file = options.pop("config_file", None)
    settings = load_settings(overrides, config_file)
    register_secrets(settings.secrets())
    try:
        register_secrets([settings.auth.resolved_password() or ""])
    except OSError as exc:
        raise ConfigError(f"auth.password_file: cannot read: {exc.strerror or exc}") from None
    configure_logging(settings.log)
    return settings


def handle_errors(fn: F) -> F:
    """One line on stderr and the error's exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EtcdAgentError as exc:
            click.echo(f"etcdagent: error: {redact(str(exc))}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("etcdagent: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: still one line, with the traceback at debug level
            structlog.get_logger().debug("traceback", traceback=traceback.format_exc())
            click.echo(
                f"etcdagent: internal error: {type(exc).__name__}: {redact(str(exc))} "
                "(please report it; --log-level debug shows the traceback)",
                err=True,
            )
            sys.exit(EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="etcdagent")
def cli() -> None:
    """etcd maintenance and health agent.

    Watches every member (size against the quota, fragmentation, disk latency, leader changes,
    alarms), compacts with a retention, and defragments one member at a time.
    """


@cli.command()
@connection_options
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts (sizes in bytes).",
)
@handle_errors
def status(output: str, **options: Any) -> None:
    """Show every member and the cluster verdict.

    Exit code 0 when healthy, 1 when degraded or unavailable, 2 on bad usage or configuration.
    """
    settings = settings_from_flags(options)
    log = structlog.get_logger()
    with ClusterClient(settings) as cluster:
        snapshot = take_snapshot(cluster)
    health = assess(snapshot)
    log.debug("status observed", verdict=health.verdict.value, reasons=list(health.reasons))
    if output == "json":
        click.echo(redact(json.dumps(status_json(snapshot, health), indent=2)))
    else:
        click.echo(redact(render_table(snapshot, health)))
    sys.exit(EXIT_OK if health.verdict is Verdict.HEALTHY else EXIT_FAILED)


def maintenance_options(fn: F) -> F:
    """Flags of the commands that change etcd."""
    options = [
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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def lock_options(fn: F) -> F:
    """The wait for another agent's lock (compaction takes no lock: it is idempotent)."""
    options = [
        click.option(
            "--lock-timeout",
            metavar="DURATION",
            help="Wait this long for another agent's maintenance to end (default 30s).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def retention_options(fn: F) -> F:
    options = [
        click.option(
            "--retain",
            metavar="DURATION",
            help="Keep at least this much history by time (default 5m).",
        ),
        click.option(
            "--retain-revisions",
            type=click.IntRange(min=0),
            metavar="N",
            help="Keep at least this many revisions. Unless --retain (or compaction.retain) is "
            "set too, it replaces the default time retention; with both, more history wins.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def defrag_options(fn: F) -> F:
    options = [
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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_MAINTENANCE_FLAGS = {
    "retain": ("compaction", "retain"),
    "retain_revisions": ("compaction", "retain_revisions"),
    "lock_timeout": ("lock", "timeout"),
    "move_leader": ("defrag", "move_leader"),
    "wait_between": ("defrag", "wait_between"),
    "compact": ("defrag", "compact_first"),
}


_RUN_FLAGS = {
    "pushgateway": ("daemon", "pushgateway"),
    "listen": ("daemon", "listen"),
    "local_member": ("daemon", "local_member"),
    "interval": ("daemon", "interval"),
}


def _maintenance_settings(options: dict[str, Any]) -> Settings:
    for flag, (group, field) in _MAINTENANCE_FLAGS.items():
        value = options.pop(flag, None)
        if value is not None:
            options.setdefault("_extra", {}).setdefault(group, {})[field] = value
    extra = options.pop("_extra", {})
    return settings_from_flags(options, extra)


def _run_maintenance(
    settings: Settings, output: str, dry_run: bool, action: Callable[[Maintenance], RunReport]
) -> None:
    stop = threading.Event()
    echo = click.echo

    def request_stop(signum: int, _frame: object) -> None:
        if not stop.is_set():
            click.echo(
                f"etcdagent: {signal.Signals(signum).name}: finishing the current step, "
                "starting no new one",
                err=True,
            )
        stop.set()

    listener = TextListener(echo) if output == "text" else None
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ClusterClient(settings) as cluster:
            maintenance = Maintenance(
                cluster, settings, dry_run=dry_run, stop=stop, listener=listener
            )
            report = action(maintenance)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if output == "json":
        click.echo(redact(report.model_dump_json(indent=2)))
    else:
        for line in render_summary(report):
            click.echo(redact(line))
    sys.exit(report.exit_code)


@cli.command()
@connection_options
@retention_options
@maintenance_options
@handle_errors
def compact(dry_run: bool, output: str, **options: Any) -> None:
    """Compact the keyspace, keeping the retention.

    Cluster-wide, through one healthy member, then waits until every member applied it.
    Exit 0 done or nothing to do, 1 refused or failed, 2 bad usage or configuration.
    """
    settings = _maintenance_settings(options)
    _run_maintenance(settings, output, dry_run, lambda m: m.compact())


@cli.command()
@connection_options
@retention_options
@defrag_options
@click.option(
    "--compact/--no-compact", default=None, help="Compact (with the retention) first (default: on)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Defragment every voting member, worth it or not (the gates still apply).",
)
@maintenance_options
@lock_options
@handle_errors
def defrag(dry_run: bool, output: str, force: bool, **options: Any) -> None:
    """Defragment members one at a time: followers first, the leader last.

    Each member only while the cluster is healthy and keeps a quorum without it; waits for it to
    answer and catch up before the next. Exit 0 done or nothing to do, 1 refused or failed,
    2 bad usage or configuration.
    """
    settings = _maintenance_settings(options)
    _run_maintenance(settings, output, dry_run, lambda m: m.defrag(force=force))


@cli.command()
@connection_options
@defrag_options
@maintenance_options
@lock_options
@handle_errors
def recover(dry_run: bool, output: str, **options: Any) -> None:
    """Recover from a NOSPACE alarm: compact, defragment every member, disarm, prove a write.

    Without an alarm there is nothing to do (exit 0). Exit 1 refused or failed, 2 bad usage.
    """
    settings = _maintenance_settings(options)
    _run_maintenance(settings, output, dry_run, lambda m: m.recover())


@cli.command()
@connection_options
@retention_options
@defrag_options
@click.option(
    "--once", is_flag=True, help="CronJob mode: one full pass (watch, decide, act), exit 0 or 1."
)
@click.option(
    "--pushgateway",
    metavar="URL",
    help="With --once: push the agent's metrics to this Pushgateway before exiting.",
)
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address of /metrics, /healthz and /readyz (default 0.0.0.0:9479).",
)
@click.option(
    "--local-member",
    metavar="NAME|URL",
    help="Defragment only this member (DaemonSet mode); the others are watched.",
)
@click.option("--interval", metavar="DURATION", help="Time between cycles (default 15s).")
@handle_errors
def run(once: bool, **options: Any) -> None:
    """Run the agent: watch every member, maintain inside windows, recover from emergencies.

    Serves /metrics, /healthz and /readyz. SIGTERM: no new step starts, the running one
    finishes or times out, the lock is released, exit within the grace period. SIGHUP reloads
    the config file. Exit 2 on bad configuration at start.
    """
    extra: dict[str, dict[str, Any]] = {}
    for flag, (group, field) in {**_RUN_FLAGS, **_MAINTENANCE_FLAGS}.items():
        value = options.pop(flag, None)
        if value is not None:
            extra.setdefault(group, {})[field] = value
    snapshot_of_options = dict(options)
    settings = settings_from_flags(options, extra)

    def reload() -> Settings:
        # SIGHUP: the same flags over a fresh read of the environment and the config file.
        return settings_from_flags(dict(snapshot_of_options), extra)

    from etcdagent.agent.daemon import Daemon

    daemon = Daemon(reload, initial=settings, once=once)
    sys.exit(daemon.run_once() if once else daemon.run())


def main() -> None:
    cli(prog_name="etcdagent")

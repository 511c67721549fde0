"""The commands: `etcdagent status`, `compact`, `defrag`, `recover` and `run`.

Their options, and the settings each option sets, are in :mod:`etcdagent.cli.options`. Exit codes
are an interface: 0 healthy / done, 1 degraded, unavailable or failed, 2 bad usage or
configuration.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
import structlog

from etcdagent import __version__
from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import RunReport
from etcdagent.cli.compaction_status import compaction_json, observe_compaction
from etcdagent.cli.maintenance_view import TextListener, render_summary
from etcdagent.cli.options import (
    chosen_clusters,
    connection_options,
    defrag_options,
    lock_options,
    maintenance_options,
    maintenance_settings,
    retention_options,
    run_flag_settings,
    settings_from_flags,
)
from etcdagent.cli.status_view import render_table, status_json
from etcdagent.decide.gates import local_member_unmatched
from etcdagent.errors import ConfigError, EtcdAgentError
from etcdagent.etcd.client import ClusterClient
from etcdagent.logs import redact
from etcdagent.observe.gather import take_snapshot
from etcdagent.observe.health import Verdict, assess
from etcdagent.settings import Settings
from etcdagent.settings.clusters import DEFAULT_CLUSTER

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


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
def status(output: str, cluster: str | None, **options: Any) -> None:
    """Show every member and the cluster verdict (every configured cluster, or --cluster's).

    Exit code 0 when healthy, 1 when degraded or unavailable (any cluster), 2 on bad usage or
    configuration.
    """
    chosen = chosen_clusters(settings_from_flags(options), cluster)
    if len(chosen) == 1:
        name, settings = next(iter(chosen.items()))
        answer, text, healthy = _status_of(name, settings)
        click.echo(redact(json.dumps(answer, indent=2) if output == "json" else text))
        sys.exit(EXIT_OK if healthy else EXIT_FAILED)
    # Several clusters: one table each; a cluster that cannot be reached is one line, and the
    # others are still shown.
    answers: list[dict[str, Any]] = []
    all_healthy = True
    for name, settings in chosen.items():
        try:
            answer, text, healthy = _status_of(name, settings)
        except EtcdAgentError as exc:
            answer = {"cluster": name, "verdict": Verdict.UNAVAILABLE.value, "error": str(exc)}
            text, healthy = f"error: {exc}", False
        all_healthy = all_healthy and healthy
        answers.append(answer)
        if output != "json":
            click.echo(redact(f"cluster {name}:\n{text}\n"))
    if output == "json":
        click.echo(redact(json.dumps({"clusters": answers}, indent=2)))
    sys.exit(EXIT_OK if all_healthy else EXIT_FAILED)


def _status_of(name: str, settings: Settings) -> tuple[dict[str, Any], str, bool]:
    """One cluster's status: its JSON answer, its table, and whether it is healthy."""
    with ClusterClient(settings) as cluster:
        snapshot = take_snapshot(cluster)
        compaction = observe_compaction(cluster, snapshot, settings)
    health = assess(snapshot)
    structlog.get_logger().debug(
        "status observed", cluster=name, verdict=health.verdict.value, reasons=list(health.reasons)
    )
    answer = {"cluster": name, **status_json(snapshot, health)}
    answer["compaction"] = compaction_json(compaction, settings)
    notes = []
    if compaction is not None:
        notes.append(f"compaction ({settings.compaction.mode.value}): {compaction.describe()}")
    return answer, render_table(snapshot, health, notes), health.verdict is Verdict.HEALTHY


def check_local_member(settings: Settings, cluster_name: str | None = None) -> None:
    """Refuse to start (exit 2) when ``--local-member`` plainly names no member of the cluster,
    with the members that exist in the message: such a replica would never defragment anything.

    When the cluster does not answer, or the URL given does not answer (yet), nothing is known:
    the start goes on, and every cycle checks it again (etcdagent_local_member_unmatched).
    """
    local = settings.daemon.local_member
    if local is None:
        return
    log = structlog.get_logger()
    try:
        with ClusterClient(settings) as cluster:
            snapshot = take_snapshot(cluster, with_metrics=False)
    except EtcdAgentError as exc:
        log.warning(
            "--local-member not checked at start: the cluster did not answer",
            error=str(exc),
            cluster=cluster_name or DEFAULT_CLUSTER,
        )
        return
    problem = local_member_unmatched(snapshot, local)
    if problem is None:
        return
    if cluster_name is not None:
        problem = f"cluster {cluster_name}: {problem}"
    if snapshot.local_member_unresolved is None:
        raise ConfigError(problem)
    log.error("local member names no member: this replica defragments nothing", error=problem)


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
    settings = maintenance_settings(options)
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
    settings = maintenance_settings(options)
    check_local_member(settings)
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
    settings = maintenance_settings(options)
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
    cluster = options.pop("cluster", None)
    extra = run_flag_settings(options)
    snapshot_of_options = dict(options)
    settings = settings_from_flags(options, extra)
    chosen = chosen_clusters(settings, cluster)

    def reload() -> Settings:
        # SIGHUP: the same flags over a fresh read of the environment and the config file.
        return settings_from_flags(dict(snapshot_of_options), extra)

    from etcdagent.agent.process import build_process

    for name, own in chosen.items():
        check_local_member(own, name if len(chosen) > 1 else None)
    process = build_process(reload, initial=settings, once=once, only=cluster)
    sys.exit(process.run_once() if once else process.run())


def main() -> None:
    cli(prog_name="etcdagent")


def _register_doctor() -> None:
    from etcdagent.cli.doctor import doctor  # imports this module: registered once it is loaded

    cli.add_command(doctor)


_register_doctor()

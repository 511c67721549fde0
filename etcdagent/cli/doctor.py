"""`etcdagent doctor`: audit the cluster against the tuning guidance (read-only).

Exit codes: 0 nothing above info, 1 a warning or worse, 2 bad usage or configuration (and, as
every command, 1 when the cluster cannot be reached at all).
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from etcdagent.cli.commands import handle_errors
from etcdagent.cli.doctor_gather import gather_doctor_input
from etcdagent.cli.doctor_view import render_text, report_json
from etcdagent.cli.options import chosen_clusters, connection_options, settings_from_flags
from etcdagent.decide.doctor.inputs import DoctorInput
from etcdagent.decide.doctor.run import DoctorReport, run_checks
from etcdagent.errors import EtcdAgentError
from etcdagent.etcd.client import ClusterClient
from etcdagent.logs import redact
from etcdagent.settings import Settings
from etcdagent.units import format_duration, parse_duration


def _lookback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r}: must be a positive duration, e.g. 5m")
    return seconds


@click.command()
@connection_options
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="table for people, json for scripts (schema in README.md, `etcdagent doctor`).",
)
@click.option(
    "--lookback",
    metavar="DURATION",
    callback=_lookback,
    help="Time between the two snapshots the rates and p99s come from (default: "
    "daemon.lookback, 5m).",
)
@handle_errors
def doctor(output: str, lookback: float | None, cluster: str | None, **options: Any) -> None:
    """Audit the cluster: quota, fragmentation, compaction, disk latency, leader stability,
    membership and versions, events in the main etcd, alarms, the agent's own view.

    Takes two snapshots a lookback apart, changes nothing; every configured cluster (at the
    same time), or the one --cluster names. One row per finding (ok, info, warning, critical)
    with its evidence and what to do. Exit 0 when nothing is above info, 1 with a warning or
    worse (in any cluster), 2 on bad usage or configuration.
    """
    top = settings_from_flags(options)
    chosen = chosen_clusters(top, cluster)
    seconds = lookback if lookback is not None else top.daemon.lookback

    def audit(name: str, settings: Settings) -> tuple[DoctorReport, DoctorInput]:
        def waiting(wait: float) -> None:
            if output != "json":
                which = f"cluster {name}: " if len(chosen) > 1 else ""
                click.echo(
                    f"{which}first snapshot taken; the second in {format_duration(wait)}", err=True
                )

        with ClusterClient(settings) as client:
            doc = gather_doctor_input(client, settings, seconds, waiting=waiting)
        return run_checks(doc), doc

    if len(chosen) == 1:
        name, settings = next(iter(chosen.items()))
        report, doc = audit(name, settings)
        if output == "json":
            click.echo(redact(json.dumps({"cluster": name, **report_json(report, doc)}, indent=2)))
        else:
            click.echo(redact(render_text(report, doc)))
        sys.exit(report.exit_code)
    # Several clusters: audited side by side (the lookback is waited for once), one table each.
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        futures = {name: pool.submit(audit, name, s) for name, s in chosen.items()}
    answers: list[dict[str, Any]] = []
    code = 0
    for name, future in futures.items():
        try:
            report, doc = future.result()
        except EtcdAgentError as exc:
            answers.append({"cluster": name, "error": str(exc)})
            if output != "json":
                click.echo(redact(f"cluster {name}:\nerror: {exc}\n"))
            code = max(code, exc.exit_code)
            continue
        code = max(code, report.exit_code)
        answers.append({"cluster": name, **report_json(report, doc)})
        if output != "json":
            click.echo(redact(f"cluster {name}:\n{render_text(report, doc)}\n"))
    if output == "json":
        click.echo(redact(json.dumps({"clusters": answers}, indent=2)))
    sys.exit(code)

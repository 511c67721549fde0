"""Fault injection against the daemon (`etcdagent run`): what it does, logs and exports when etcd
misbehaves underneath it, and that it recovers by itself once etcd is back.

In-process daemons are driven cycle by cycle with an injected wall clock (and, where /readyz and
the back-off are the subject, an injected monotonic clock), so no test waits for an interval.
Real sleeps are used only where etcd's own wall clock is the subject (the auth token's TTL).
Subprocess daemons (``run --once`` and ``run``) are used where the process's own output, exit code
and signals are the subject.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.clock import FakeClock
from etcdagent_testing.scenario import (
    SMALL_DB_ENV,
    agent_command,
    assert_healthy_end,
    daemon_settings,
    fragment,
    seed_keys,
    wait_for,
)
from prometheus_client import generate_latest

import etcdagent.etcd.auth
import etcdagent.logs
from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome
from etcdagent.agent.daemon import Daemon
from etcdagent.agent.http_server import AgentHTTPServer
from etcdagent.logs import configure_logging
from etcdagent.settings import LogSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ClusterFactory = Callable[..., EtcdCluster]

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # outside the 02:00-03:00 UTC window
# A simple token as etcd issues it: 16 random letters, a dot, the raft index it was issued at.
SIMPLE_TOKEN = re.compile(r"\b[A-Za-z]{16}\.\d+\b")
WRONG_PASSWORD = "wr0ng-Pa55word-7f3e9c"  # a test value never to be printed


# -- clocks and daemons -------------------------------------------------------------------------


class FakeMonotonic:
    """The daemon's monotonic clock (heartbeat, readiness, back-off), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Clocks:
    def __init__(self, start: datetime) -> None:
        self.wall = FakeClock(start)
        self.mono = FakeMonotonic()

    def advance(self, seconds: float) -> None:
        self.wall.advance(seconds)
        self.mono.advance(seconds)


MakeDaemon = Callable[..., tuple[Daemon, Clocks]]


@pytest.fixture
def make_daemon() -> Iterator[MakeDaemon]:
    made: list[Daemon] = []

    def factory(settings: Settings, start: datetime = NOON) -> tuple[Daemon, Clocks]:
        clocks = Clocks(start)
        daemon = Daemon(lambda: settings, clock=clocks.wall, monotonic=clocks.mono)
        made.append(daemon)
        return daemon, clocks

    try:
        yield factory
    finally:
        for daemon in made:
            daemon.cluster.close()


# -- observing the daemon -----------------------------------------------------------------------


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The daemon's real log pipeline (redaction, JSON rendering) into a buffer."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    configure_logging(LogSettings.model_validate({"level": "debug", "format": "json"}), buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


def events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` (anything else, e.g. a traceback, is not an event)."""
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                found.append(entry)
    return found


def failures(text: str) -> list[str]:
    """The ``error`` of every "cycle failed" event."""
    return [
        str(e.get("error"))
        for e in events(text)
        if str(e.get("event", "")).startswith("cycle failed")
    ]


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


def member_labels(member: Any) -> dict[str, str]:
    return {"member": member.name, "member_id": f"{member.member_id():x}"}


_NON_NEGATIVE = (
    "etcdagent_member_wal_fsync_p99_seconds",
    "etcdagent_member_backend_commit_p99_seconds",
    "etcdagent_member_db_growth_bytes_per_second",
    "etcdagent_member_time_to_quota_seconds",
    "etcdagent_member_db_size_bytes",
    "etcdagent_member_db_size_in_use_bytes",
    "etcdagent_member_fragmentation_ratio",
)


def assert_sane(daemon: Daemon) -> None:
    """No NaN or infinity anywhere; derived values never negative or absurd."""
    for family in daemon.registry.collect():
        for s in family.samples:
            assert math.isfinite(s.value), (s.name, s.labels, s.value)
            assert s.value >= 0, (s.name, s.labels, s.value)
            if s.name in ("etcdagent_member_wal_fsync_p99_seconds",
                          "etcdagent_member_backend_commit_p99_seconds"):  # fmt: skip
                assert s.value <= 10, (s.name, s.labels, s.value)  # etcd's largest bucket: 8.192s
            if s.name == "etcdagent_member_fragmentation_ratio":
                assert s.value <= 1, (s.name, s.labels, s.value)
            if s.name == "etcdagent_member_db_growth_bytes_per_second":
                assert s.value < 1024**3, (s.name, s.labels, s.value)


def assert_no_secret(texts: Mapping[str, str], secrets: Sequence[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret appears in {where}"
        token = SIMPLE_TOKEN.search(text)
        assert token is None, f"something like an auth token appears in {where}: {token}"


def http_get(url: str) -> tuple[int, str]:
    resp = requests.get(url, timeout=5)
    return resp.status_code, resp.text


def run_once(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        agent_command("run", "--once", "--interval", "1s", "--log-format", "json", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **SMALL_DB_ENV, **(env or {})},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


# -- 5. members restarted one by one ------------------------------------------------------------


def test_members_restarted_one_by_one_never_yield_absurd_values(
    etcd_cluster: EtcdCluster, make_daemon: MakeDaemon
) -> None:
    cluster = etcd_cluster
    known = seed_keys(cluster)
    daemon, clocks = make_daemon(
        daemon_settings(cluster.endpoints, daemon={"compaction_interval": 0})
    )
    assert daemon.cycle()
    cluster.write_garbage(n_keys=20, value_size=256, rounds=1, txn_ops=1)  # fsyncs, commits
    clocks.advance(15)
    assert daemon.cycle()
    assert_sane(daemon)

    leader = cluster.leader()
    order = [m for m in cluster.members if m is not leader] + [leader]  # the leader last
    for member in order:
        labels = member_labels(member)
        was_leader = member is cluster.leader()
        changes_before = sample(daemon, "etcdagent_leader_changes_observed_total") or 0.0

        member.kill()
        cluster.wait_healthy()  # the two others (with a new leader if it was the leader)
        clocks.advance(15)
        assert daemon.cycle(), "a quorum answers: the cycle must succeed"
        assert sample(daemon, "etcdagent_member_up", **labels) == 0
        assert_sane(daemon)

        member.restart()
        cluster.wait_healthy()
        cluster.write_garbage(n_keys=20, value_size=256, rounds=1, txn_ops=1)
        clocks.advance(15)
        assert daemon.cycle()
        assert sample(daemon, "etcdagent_member_up", **labels) == 1
        # Its counters went back to zero: its history starts afresh, nothing derived from it yet.
        signals = daemon.history.signals(clocks.wall())[member.member_id()]
        assert signals.samples == 1 and signals.not_enough_data, signals
        for name in ("etcdagent_member_wal_fsync_p99_seconds",
                     "etcdagent_member_backend_commit_p99_seconds",
                     "etcdagent_member_db_growth_bytes_per_second"):  # fmt: skip
            assert sample(daemon, name, **labels) is None, name
        assert_sane(daemon)

        cluster.write_garbage(n_keys=20, value_size=256, rounds=1, txn_ops=1)
        clocks.advance(15)
        assert daemon.cycle()
        assert daemon.history.signals(clocks.wall())[member.member_id()].samples == 2
        assert_sane(daemon)
        changes = sample(daemon, "etcdagent_leader_changes_observed_total") or 0.0
        if was_leader:
            assert changes > changes_before, "the leader's restart was not counted"

    assert sample(daemon, "etcdagent_cycle_errors_total", kind="unreachable") is None
    assert_healthy_end(cluster, known)


# -- 6. every endpoint unreachable, then back ---------------------------------------------------


def test_all_endpoints_unreachable_then_back_recovers_without_a_restart(
    etcd_cluster: EtcdCluster, make_daemon: MakeDaemon
) -> None:
    cluster = etcd_cluster
    known = seed_keys(cluster)
    # Every member SIGSTOPped, none killed: a killed member's port is free for any other process
    # on the host to bind (another cluster's etcd, on a shared CI machine), which would answer.
    daemon, clocks = make_daemon(
        daemon_settings(
            cluster.endpoints,
            connection={"request_timeout": "1s"},
            daemon={"error_backoff_max": "8s"},
        )
    )
    server = AgentHTTPServer(
        "127.0.0.1:0", daemon.registry, healthy=daemon.healthy, ready=daemon.ready
    ).start()
    try:
        with json_logs() as logs:
            assert daemon.cycle()
            assert daemon.ready() is None
            assert http_get(server.url + "/readyz")[0] == 200
            last_success = sample(daemon, "etcdagent_last_successful_cycle_timestamp_seconds")

            for member in cluster.members:
                member.stop()  # SIGSTOP: accepts connections, answers nothing (timeouts)
            pauses: list[float] = []
            for _ in range(4):
                clocks.advance(daemon.pause())
                assert not daemon.cycle(), logs.getvalue()[-4000:]
                pauses.append(daemon.pause())
            # Doubling from the 1s interval, capped at daemon.error_backoff_max.
            assert pauses == [2.0, 4.0, 8.0, 8.0]
            assert sample(daemon, "etcdagent_cycle_errors_total", kind="unreachable") == 4
            assert (
                sample(daemon, "etcdagent_last_successful_cycle_timestamp_seconds") == last_success
            )
            # 15 s without reaching etcd (limit: 3 intervals + 10 s): not ready, and says why;
            # the loop itself is alive (its cycles keep ending).
            reason = daemon.ready()
            assert reason is not None and "etcd not reached for 15s" in reason
            assert daemon.healthy() is None
            status, body = http_get(server.url + "/readyz")
            assert (status, body.strip()) == (503, reason)
            assert http_get(server.url + "/healthz")[0] == 200

            for member in cluster.members:
                member.cont()
            cluster.wait_healthy()
            clocks.advance(daemon.pause())
            assert daemon.cycle(), "the daemon must recover without a restart"
            assert daemon.ready() is None and daemon.healthy() is None
            assert daemon.pause() == 1.0
            assert http_get(server.url + "/readyz")[0] == 200
            for member in cluster.members:
                assert sample(daemon, "etcdagent_member_up", **member_labels(member)) == 1
            assert sample(daemon, "etcdagent_cycle_errors_total", kind="unreachable") == 4
        errors = failures(logs.getvalue())
    finally:
        server.stop()
    assert len(errors) == 4
    for error in errors:
        assert error.startswith("no etcd endpoint answered"), error
        for url in cluster.endpoints:
            assert f"{url}: member list failed: timed out" in error, error
        assert "\n" not in error
    assert_healthy_end(cluster, known)


# -- 7. a host name that does not resolve -------------------------------------------------------


def test_an_unresolvable_endpoint_alone_fails_and_alongside_a_good_one_is_bypassed(
    etcd_cluster: EtcdCluster, make_daemon: MakeDaemon
) -> None:
    cluster = etcd_cluster
    known = seed_keys(cluster)
    bad = "http://nope.invalid:2379"

    with json_logs() as logs:
        alone, _ = make_daemon(daemon_settings([bad]))
        assert not alone.cycle()
    # A name that does not resolve is a configuration mistake, counted apart from an outage.
    assert sample(alone, "etcdagent_cycle_errors_total", kind="config") == 1
    assert sample(alone, "etcdagent_cycle_errors_total", kind="unreachable") is None
    assert alone.ready() == "etcd not reached yet"
    (error,) = failures(logs.getvalue())
    assert "cannot resolve host name 'nope.invalid'" in error, error

    proc = run_once("--endpoints", bad)
    code, out, err = finish(proc)
    assert code == 1
    assert "cannot resolve host name 'nope.invalid'" in err, err[-2000:]
    assert "Traceback" not in err + out

    daemon, _ = make_daemon(daemon_settings([bad, cluster.endpoints[1]]))
    assert daemon.cycle()
    assert sample(daemon, "etcdagent_cycle_errors_total", kind="unreachable") is None
    assert daemon.ready() is None
    for member in cluster.members:
        assert sample(daemon, "etcdagent_member_up", **member_labels(member)) == 1
    assert_healthy_end(cluster, known)


# -- 8. TLS mistakes ----------------------------------------------------------------------------


def test_tls_mistakes_give_one_clear_line_and_exit_1(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    cluster = etcd_cluster_factory(3, tls=True)
    known = seed_keys(cluster)
    tls = cluster.tls_files
    assert tls is not None
    endpoint = ["--endpoints", cluster.endpoints[0]]
    good_client = ["--cert", str(tls.client_cert), "--key", str(tls.client_key)]
    cases = {
        "unknown CA": (
            [*endpoint, "--cacert", str(tls.other_ca_file), *good_client],
            "the server certificate is not signed by a trusted CA (check tls.ca_file)",
        ),
        "expired client certificate": (
            [*endpoint, "--cacert", str(tls.ca_file), "--cert", str(tls.expired_client_cert),
             "--key", str(tls.expired_client_key)],
            "client certificate",
        ),
        "wrong server name": (
            [*endpoint, "--cacert", str(tls.ca_file), *good_client,
             "--server-name", "not-etcd.example"],
            "the server certificate is not valid for 'not-etcd.example'",
        ),
    }  # fmt: skip
    procs = {name: run_once(*args) for name, (args, _) in cases.items()}
    results = {name: finish(proc) for name, proc in procs.items()}

    for name, (_, expected) in cases.items():
        code, out, err = results[name]
        assert code == 1, (name, err[-2000:])
        assert "Traceback" not in err + out, (name, err[-3000:])
        errors = failures(err)
        assert len(errors) == 2, (name, err[-3000:])  # run --once: two cycles, both failed
        for error in errors:
            assert "TLS" in error and expected in error, (name, error)
            assert "\n" not in error
            assert len(error) < 600, (name, error)  # one readable line, not a wrapped dump
    # The right material works (so the failures above are the mistakes, not the cluster).
    code, _, err = finish(run_once(*endpoint, "--cacert", str(tls.ca_file), *good_client))
    assert code in (0, 1) and not failures(err), err[-3000:]
    assert_healthy_end(cluster, known)


# -- 9. auth: a wrong password, a token that expires --------------------------------------------


def test_a_wrong_password_is_named_and_never_printed(
    etcd_cluster_factory: ClusterFactory, make_daemon: MakeDaemon
) -> None:
    cluster = etcd_cluster_factory(3, auth=True)
    known = seed_keys(cluster)
    secrets = [WRONG_PASSWORD, cluster.root_password]
    expected = "authentication failed: wrong user name or password"

    proc = run_once(
        "--endpoints", cluster.endpoints[0], "--user", "root",
        env={"ETCDAGENT_AUTH__PASSWORD": WRONG_PASSWORD},
    )  # fmt: skip
    code, out, err = finish(proc)
    assert code == 1, err[-2000:]
    assert "Traceback" not in err + out
    errors = failures(err)
    assert errors and all(expected in e for e in errors), err[-3000:]

    settings = daemon_settings(
        cluster.endpoints, auth={"username": "root", "password": WRONG_PASSWORD}
    )
    with json_logs() as logs:
        daemon, _ = make_daemon(settings)
        assert not daemon.cycle()
    assert sample(daemon, "etcdagent_cycle_errors_total", kind="etcd") == 1
    (error,) = failures(logs.getvalue())
    assert expected in error
    metrics = generate_latest(daemon.registry).decode()
    assert_no_secret(
        {"stdout": out, "stderr": err, "log": logs.getvalue(), "metrics": metrics}, secrets
    )
    assert_healthy_end(cluster, known)


def test_an_expired_auth_token_is_renewed_by_the_daemon(
    etcd_cluster_factory: ClusterFactory,
    make_daemon: MakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # etcd's simple tokens expire after --auth-token-ttl seconds without use (checked each second).
    cluster = etcd_cluster_factory(3, auth=True, extra_args=["--auth-token-ttl", "1"])
    known = seed_keys(cluster)
    fragment(cluster, n_keys=50)
    issued: list[str] = []

    def record(values: Any) -> None:
        values = list(values)
        issued.extend(values)
        etcdagent.logs.register_secrets(values)

    monkeypatch.setattr(etcdagent.etcd.auth, "register_secrets", record)
    settings = daemon_settings(
        cluster.endpoints,
        auth={"username": "root", "password": cluster.root_password},
        daemon={"compaction_interval": "30s"},
    )
    with json_logs() as logs:
        daemon, clocks = make_daemon(settings)
        assert daemon.cycle()  # authenticates, compacts under the lease lock
        assert daemon.last_report is not None and daemon.last_report.outcome is Outcome.DONE
        assert issued
        first = list(issued)

        time.sleep(2.2)  # etcd's wall clock is the subject: > TTL + its 1 s expiry tick
        with pytest.raises(EtcdRequestError) as rejected:
            cluster.request(cluster.members[0], "kv/range", {"key": "eA=="}, token=first[-1])
        assert "invalid auth token" in rejected.value.message

        clocks.advance(31)  # periodic compaction due again: lock, marker, compaction
        assert daemon.cycle()
        assert daemon.last_report is not None
        assert daemon.last_report.outcome is Outcome.DONE, daemon.last_report.reason
        report = Maintenance(daemon.cluster, daemon.settings, clock=clocks.wall).defrag(force=True)
        assert report.outcome is Outcome.DONE, report.reason
        assert len(issued) > len(first), "no new token was issued after the first expired"
    assert sample(daemon, "etcdagent_cycle_errors_total", kind="etcd") is None
    metrics = generate_latest(daemon.registry).decode()
    assert_no_secret({"log": logs.getvalue(), "metrics": metrics}, [cluster.root_password, *issued])
    assert_healthy_end(cluster, known)


# -- 10. NOSPACE while the daemon runs ----------------------------------------------------------


def _alarms(cluster: EtcdCluster) -> list[dict[str, Any]] | None:
    try:
        return cluster.alarms()
    except (EtcdRequestError, requests.RequestException):
        return None  # a member busy defragmenting may not answer in time


def test_a_nospace_alarm_raised_while_the_daemon_runs_is_recovered(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(3, quota_backend_bytes=16 * 1024**2)
    known = seed_keys(cluster)
    err_path = tmp_path / "agent.stderr"
    out_path = tmp_path / "agent.stdout"
    with err_path.open("w") as err_file, out_path.open("w") as out_file:
        proc = subprocess.Popen(
            agent_command("run", "--endpoints", cluster.endpoints[0], "--listen", "127.0.0.1:0",
                          "--interval", "1s", "--log-format", "json"),
            stdout=out_file, stderr=err_file, text=True, env={**os.environ, **SMALL_DB_ENV},
        )  # fmt: skip
    try:

        def log() -> str:
            return err_path.read_text(errors="replace")

        wait_for(lambda: any(e.get("event") == "decision" for e in events(log())), 30,
                 "the daemon's first decision")  # fmt: skip

        def filled() -> bool:
            # A few keys overwritten many times: the live data stays small (so recovery can
            # disarm), the history fills the quota.
            with contextlib.suppress(EtcdRequestError, requests.RequestException):
                cluster.write_garbage(n_keys=16, value_size=256 * 1024, rounds=4)
            return bool(_alarms(cluster))

        wait_for(filled, 60, "a NOSPACE alarm")
        assert proc.poll() is None
        wait_for(lambda: _alarms(cluster) == [], 90, "the NOSPACE alarm to be gone")
        assert cluster.put("/after/nospace", "written") > 0

        def recovered() -> bool:
            return any(
                e.get("event") == "maintenance run"
                and e.get("trigger") == "emergency-nospace"
                and e.get("outcome") == "done"
                for e in events(log())
            )

        wait_for(recovered, 30, "the emergency-nospace run in the log")
        assert proc.poll() is None, "the daemon must still run"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    text = log()
    assert "Traceback" not in text + out_path.read_text()
    assert any(
        e.get("event") == "decision" and e.get("trigger") == "emergency-nospace"
        for e in events(text)
    )
    assert cluster.get("/after/nospace") == b"written"
    assert_healthy_end(cluster, known)

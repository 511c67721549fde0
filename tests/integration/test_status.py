"""`etcdagent status` against real etcd clusters (the version ETCDAGENT_TEST_ETCD selects)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from etcdagent_testing import EtcdCluster, EtcdRequestError

from etcdagent.cli import cli
from etcdagent.models import RELIABLE_STATUS_QUOTA, release

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ClusterFactory = Callable[..., EtcdCluster]


def run(*args: str, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=dict(env or {}), catch_exceptions=False)


def status_json(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = run("status", "--output", "json", *args, env=env)
    assert result.stdout, result.output
    return result.exit_code, json.loads(result.stdout)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in doc["members"]}


def settled_status_json(cluster: EtcdCluster, *args: str) -> tuple[int, dict[str, Any]]:
    """``status_json``, asked while no member's in-use size moved: a cluster just started still
    commits its first entries, and 3.4.23 once shrank a member's dbSizeInUse (20480 -> 16384)
    between the agent's status and the test's own read of it."""
    for _ in range(5):
        before = [proc.status()["dbSizeInUse"] for proc in cluster.members]
        answer = status_json(*args)
        if [proc.status()["dbSizeInUse"] for proc in cluster.members] == before:
            return answer
    raise AssertionError("the members' in-use sizes kept changing")


def test_healthy_cluster_is_discovered_from_one_endpoint(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    code, doc = settled_status_json(cluster, "--endpoints", cluster.endpoints[0])

    assert code == 0
    assert doc["verdict"] == "healthy"
    assert doc["reasons"] == []
    members = by_name(doc)
    assert sorted(members) == ["m1", "m2", "m3"]
    leader = cluster.leader()
    assert doc["leader"] == f"{leader.member_id():x}"
    for proc in cluster.members:
        row = members[proc.name]
        own = proc.status()  # what the member itself reports through the gateway
        assert row["id"] == f"{proc.member_id():x}"
        assert row["endpoint"] == proc.client_url
        assert row["role"] == ("leader" if proc is leader else "follower")
        assert row["reachable"] is True
        assert row["version"] == cluster.version
        assert row["storage_version"] == own.get("storageVersion")  # 3.6+ only
        assert row["db_size"] == int(own["dbSize"])
        assert row["db_size_in_use"] == int(own["dbSizeInUse"])
        assert row["revision"] == int(own["header"]["revision"])
        assert row["quota"] == 2 * 1024**3  # etcd's default, discovered from /metrics
        assert row["alarms"] == []
        assert row["error"] is None
        assert row["raft_applied_index"] <= row["raft_index"]


def test_table_names_every_member_and_the_verdict(etcd_cluster: EtcdCluster) -> None:
    result = run("status", "--endpoints", etcd_cluster.endpoints[1])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ID", "ENDPOINT", "ROLE"]
    for proc in etcd_cluster.members:
        row = next(line for line in lines if line.startswith(proc.name + " "))
        assert f"{proc.member_id():x}" in row
    assert sum(" leader " in line for line in lines) == 1
    assert lines[-1].endswith(": healthy")


def test_sizes_follow_writes(etcd_cluster: EtcdCluster) -> None:
    before = by_name(status_json("--endpoints", etcd_cluster.endpoints[0])[1])
    etcd_cluster.write_garbage(n_keys=200, value_size=8192, rounds=3)
    etcd_cluster.wait_healthy()
    code, doc = status_json("--endpoints", etcd_cluster.endpoints[0])

    assert code == 0
    for name, row in by_name(doc).items():
        assert row["revision"] > before[name]["revision"]
        assert row["db_size"] > before[name]["db_size"] + 1024**2


def test_killed_follower_is_unreachable_and_cluster_degraded(etcd_cluster: EtcdCluster) -> None:
    victim = etcd_cluster.followers()[0]
    victim_id = f"{victim.member_id():x}"
    victim.kill()
    alive = next(m for m in etcd_cluster.members if m is not victim)

    code, doc = status_json("--endpoints", alive.client_url)

    assert code == 1
    assert doc["verdict"] == "degraded"
    row = by_name(doc)[victim.name]
    assert row["id"] == victim_id
    assert row["reachable"] is False
    assert row["db_size"] is None
    assert "connection refused" in row["error"]
    assert victim.client_url in row["error"]
    assert any(victim.name in reason for reason in doc["reasons"])

    table = run("status", "--endpoints", alive.client_url)
    assert table.exit_code == 1
    victim_line = next(line for line in table.stdout.splitlines() if line.startswith(victim.name))
    assert "unreachable" in victim_line
    assert "degraded" in table.stdout.splitlines()[-1]


def test_two_of_three_killed_is_unavailable(etcd_cluster: EtcdCluster) -> None:
    survivor = etcd_cluster.members[2]
    for proc in etcd_cluster.members[:2]:
        proc.kill()

    code, doc = status_json("--endpoints", ",".join(etcd_cluster.endpoints))

    assert code == 1
    assert doc["verdict"] == "unavailable"
    assert any("quorum" in reason for reason in doc["reasons"])
    rows = by_name(doc)
    assert rows[survivor.name]["reachable"] is True
    assert [rows[p.name]["reachable"] for p in etcd_cluster.members[:2]] == [False, False]


def test_stopped_member_times_out_without_stalling_the_others(etcd_cluster: EtcdCluster) -> None:
    victim = etcd_cluster.followers()[0]
    victim.stop()  # SIGSTOP: the port accepts, nothing answers
    try:
        code, doc = status_json(
            "--endpoints",
            etcd_cluster.endpoints[0] if victim.name != "m1" else etcd_cluster.endpoints[1],
            "--request-timeout",
            "1s",
            "--retry-deadline",
            "500ms",
        )
    finally:
        victim.cont()
    assert code == 1
    assert doc["verdict"] == "degraded"
    rows = by_name(doc)
    assert "timed out" in rows[victim.name]["error"]
    assert sum(r["reachable"] for r in rows.values()) == 2


def test_nospace_alarm_is_shown_and_degrades(etcd_cluster_factory: ClusterFactory) -> None:
    quota = 16 * 1024**2
    cluster = etcd_cluster_factory(size=3, quota_backend_bytes=quota)
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.write_garbage(n_keys=400, value_size=64 * 1024, rounds=4)

    code, doc = status_json("--endpoints", cluster.endpoints[0])

    assert code == 1
    assert doc["verdict"] == "degraded"
    assert any("NOSPACE" in reason for reason in doc["reasons"])
    rows = list(doc["members"])
    assert any(r["alarms"] == ["NOSPACE"] for r in rows)
    for row in rows:
        assert row["quota"] == quota  # discovered from the server, never configured here
        assert row["db_size"] is not None and row["db_size"] > 0.8 * quota
    table = run("status", "--endpoints", cluster.endpoints[0])
    assert "NOSPACE" in table.stdout


def test_tls_with_client_certificates(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=3, tls=True)
    tls = cluster.tls_files
    assert tls is not None
    good = [
        "--cacert",
        str(tls.ca_file),
        "--cert",
        str(tls.client_cert),
        "--key",
        str(tls.client_key),
    ]

    code, doc = status_json("--endpoints", cluster.endpoints[0], *good)
    assert code == 0, doc
    assert doc["verdict"] == "healthy"
    assert all(m["endpoint"].startswith("https://") for m in doc["members"])

    # Reached by a name the certificate carries, with the IP as the endpoint.
    by_server_name = status_json(
        "--endpoints", cluster.endpoints[0], *good, "--server-name", "etcd.test"
    )
    assert by_server_name[0] == 0


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ("unknown-ca", "tls.ca_file"),
        ("no-client-cert", "client certificate"),
        ("expired-client-cert", "client certificate"),
        ("wrong-server-name", "server_name"),
        ("plain-http", "https"),
    ],
)
def test_tls_mistakes_are_one_line_errors(
    etcd_cluster_factory: ClusterFactory, mistake: str, expected: str
) -> None:
    cluster = etcd_cluster_factory(size=1, tls=True)
    tls = cluster.tls_files
    assert tls is not None
    endpoint = cluster.endpoints[0]
    ca, cert, key = tls.ca_file, tls.client_cert, tls.client_key
    extra: list[str] = []
    if mistake == "unknown-ca":
        ca = tls.other_ca_file
    elif mistake == "expired-client-cert":
        cert, key = tls.expired_client_cert, tls.expired_client_key
    elif mistake == "wrong-server-name":
        extra = ["--server-name", "not-etcd.example"]
    elif mistake == "plain-http":
        endpoint = endpoint.replace("https://", "http://")
    args = ["status", "--endpoints", endpoint, "--cacert", str(ca), *extra]
    if mistake != "no-client-cert":
        args += ["--cert", str(cert), "--key", str(key)]
    if mistake == "plain-http":
        args = ["status", "--endpoints", endpoint]

    result = run(*args)

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("etcdagent: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output


def test_auth_right_and_wrong_password(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=3, auth=True, root_password="s3cret-Pa55")
    endpoint = cluster.endpoints[0]

    ok = run(
        "status",
        "--endpoints",
        endpoint,
        "--user",
        "root",
        env={"ETCDAGENT_AUTH__PASSWORD": "s3cret-Pa55"},
    )
    assert ok.exit_code == 0, ok.output
    assert "s3cret-Pa55" not in ok.output

    wrong = run(
        "status",
        "--endpoints",
        endpoint,
        "--user",
        "root",
        env={"ETCDAGENT_AUTH__PASSWORD": "not-the-Pa55"},
    )
    assert wrong.exit_code == 1
    assert "authentication failed" in wrong.stderr
    assert "wrong user name or password" in wrong.stderr
    assert "not-the-Pa55" not in wrong.output
    assert len(wrong.stderr.strip().splitlines()) == 1


def test_auth_token_is_renewed_when_rejected(etcd_cluster_factory: ClusterFactory) -> None:
    from etcdagent.etcd.client import ClusterClient
    from etcdagent.settings import load_settings

    cluster = etcd_cluster_factory(size=1, auth=True, root_password="s3cret-Pa55")
    settings = load_settings(
        {
            "connection": {"endpoints": cluster.endpoints[0]},
            "auth": {"username": "root", "password": "s3cret-Pa55"},
        }
    )
    with ClusterClient(settings) as client:
        member = client.member(cluster.endpoints[0])
        member.put("/etcdagent-test/a", "1")
        # What an expired token looks like to etcd: one it does not know.
        member._session.headers["Authorization"] = "expired.token.value"
        member._auth.token = "expired.token.value"
        member.put("/etcdagent-test/b", "2")
        assert member._auth.token != "expired.token.value"
        assert member.get("/etcdagent-test/b") == b"2"


def test_auth_without_credentials_cannot_write(etcd_cluster_factory: ClusterFactory) -> None:
    from etcdagent.errors import EtcdAuthError
    from etcdagent.etcd.client import ClusterClient
    from etcdagent.settings import load_settings

    cluster = etcd_cluster_factory(size=1, auth=True)
    settings = load_settings({"connection": {"endpoints": cluster.endpoints[0]}})
    with ClusterClient(settings) as client, pytest.raises(EtcdAuthError, match=r"auth\.username"):
        client.member(cluster.endpoints[0]).put("/etcdagent-test/x", "1")


def test_no_discover_observes_only_configured_endpoints(etcd_cluster: EtcdCluster) -> None:
    code, doc = status_json("--endpoints", etcd_cluster.endpoints[0], "--no-discover")

    rows = by_name(doc)
    assert rows["m1"]["reachable"] is True
    assert rows["m2"]["reachable"] is False
    assert "discovery is off" in rows["m2"]["error"]
    assert code == 1


def test_separate_metrics_urls(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=3, separate_metrics=True)
    m1, m2 = cluster.members[0], cluster.members[1]
    assert m1.metrics_url is not None
    code, doc = status_json(
        "--endpoints",
        cluster.endpoints[0],
        "--metrics-url",
        f"m1={m1.metrics_url}",
        "--metrics-url",
        f"{m2.client_url}=http://127.0.0.1:1",
    )
    rows = by_name(doc)
    assert code == 0  # metrics are extra information: the cluster itself is healthy
    assert rows["m1"]["quota"] == 2 * 1024**3
    assert rows["m1"]["metrics_error"] is None
    # Without its /metrics, m2's quota is known only where the status carries it (3.6.6+).
    reliable = (release(cluster.version) or (0, 0, 0)) >= RELIABLE_STATUS_QUOTA
    assert rows["m2"]["quota"] == (2 * 1024**3 if reliable else None)
    assert "http://127.0.0.1:1/metrics" in rows["m2"]["metrics_error"]


def test_five_members(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(size=5)
    code, doc = status_json("--endpoints", cluster.endpoints[4])
    assert code == 0
    assert len(doc["members"]) == 5
    assert sum(m["role"] == "leader" for m in doc["members"]) == 1


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etcdagent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_unreachable_endpoints_one_line_exit_1(tmp_path: Path) -> None:
    result = _console(
        "status",
        "--endpoints",
        "127.0.0.1:1,nope.invalid:2379",
        "--retry-deadline",
        "200ms",
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no etcd endpoint answered" in lines[0]
    assert "connection refused" in lines[0]
    assert "cannot resolve host name 'nope.invalid'" in lines[0]


def test_bad_configuration_exit_2_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "etcdagent.yaml"
    config.write_text(
        "connection:\n  endpoints: [http://127.0.0.1:2379]\n  request_timeout: soon\n"
    )

    result = _console("status", "--config", str(config), cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "connection.request_timeout" in result.stderr
    assert str(config) in result.stderr


def test_tls_and_auth_together(etcd_cluster_factory: ClusterFactory) -> None:
    """kubeadm-like: client certificates and an etcd user at once."""
    cluster = etcd_cluster_factory(size=3, tls=True, auth=True, root_password="s3cret-Pa55")
    tls = cluster.tls_files
    assert tls is not None
    code, doc = status_json(
        "--endpoints", cluster.endpoints[0],
        "--cacert", str(tls.ca_file), "--cert", str(tls.client_cert), "--key", str(tls.client_key),
        "--user", "root",
        env={"ETCDAGENT_AUTH__PASSWORD": "s3cret-Pa55"},
    )  # fmt: skip
    assert code == 0, doc
    assert doc["verdict"] == "healthy"


def test_unstarted_learner_does_not_cost_quorum(etcd_cluster_factory: ClusterFactory) -> None:
    # Without this etcd refuses member changes until its peers were connected for 5 s.
    etcd_cluster = etcd_cluster_factory(size=3, extra_args=["--strict-reconfig-check=false"])
    etcd_cluster.request(
        etcd_cluster.members[0],
        "cluster/member/add",
        {"peerURLs": ["http://127.0.0.1:1"], "isLearner": True},
    )

    code, doc = status_json("--endpoints", etcd_cluster.endpoints[0])

    assert code == 1
    assert doc["verdict"] == "degraded"  # a member is missing, but writes still work
    learner = next(m for m in doc["members"] if m["is_learner"])
    assert learner["role"] == "learner"
    assert learner["reachable"] is False
    assert "has not started" in learner["error"]
    assert sum(m["role"] == "leader" for m in doc["members"]) == 1


def test_auth_cluster_without_quorum_still_shows_the_survivor(
    etcd_cluster_factory: ClusterFactory,
) -> None:
    """No leader means no token can be issued. Where etcd answers status without a token
    (3.4, 3.5.1) the survivor must still show; where it needs one (3.5.30, 3.6) nothing can be
    read, and the one line must say that the member answers and why no token can be had."""
    cluster = etcd_cluster_factory(size=3, auth=True, root_password="s3cret-Pa55")
    survivor = cluster.members[0]
    for proc in cluster.members[1:]:
        proc.kill()
    try:  # ask etcd itself which kind it is
        cluster.request(survivor, "cluster/member/list", {}, timeout=5)
        tokenless = True
    except EtcdRequestError as exc:
        assert (exc.status, "user name is empty" in exc.message) == (400, True), exc
        tokenless = False

    args = ["--endpoints", survivor.client_url, "--user", "root", "--retry-deadline", "1s"]
    env = {"ETCDAGENT_AUTH__PASSWORD": "s3cret-Pa55"}
    if tokenless:
        code, doc = status_json(*args, env=env)
        assert code == 1
        assert doc["verdict"] == "unavailable"
        assert by_name(doc)[survivor.name]["reachable"] is True
        return
    result = run("status", *args, env=env)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "etcdagent: error: no etcd endpoint could list the members: "
        f"{survivor.client_url}: member list refused: the member answers, but etcd "
        f"{cluster.version} needs an auth token for the member list with authentication on, "
        "and none can be issued: the member has no leader (/health: RAFT NO LEADER)\n"
    )
    assert "s3cret-Pa55" not in result.output

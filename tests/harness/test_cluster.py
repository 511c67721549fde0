"""The real-etcd harness itself: these fail when etcdagent_testing is wrong."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from etcdagent_testing import EtcdCluster, EtcdHarnessError, EtcdRequestError, etcd_version
from etcdagent_testing import processes as processes_module

pytestmark = pytest.mark.integration

ClusterFactory = Callable[..., EtcdCluster]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); the harness reaps, but check the state anyway
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(60)
def test_three_members_one_leader_and_version(etcd_cluster: EtcdCluster, etcd_binary: Path) -> None:
    cluster = etcd_cluster
    assert [m.name for m in cluster.members] == ["m1", "m2", "m3"]
    assert cluster.endpoints == [m.client_url for m in cluster.members]
    assert len(set(cluster.endpoints)) == 3
    assert all(url.startswith("http://127.0.0.1:") for url in cluster.endpoints)
    assert cluster.version == etcd_version(etcd_binary)

    leader_ids = {int(str(m.status()["leader"])) for m in cluster.members}
    assert len(leader_ids) == 1
    member_ids = [m.member_id() for m in cluster.members]
    assert len(set(member_ids)) == 3
    assert leader_ids <= set(member_ids)

    leader = cluster.leader()
    followers = cluster.followers()
    assert leader.member_id() in leader_ids
    assert len(followers) == 2 and leader not in followers

    for member in cluster.members:
        assert member.status()["version"] == cluster.version
        assert member.running and member.pid is not None
        assert member.metrics_url is None
        lines = member.log_lines()
        assert lines and all("msg" in line for line in lines)


@pytest.mark.timeout(60)
def test_put_get_roundtrip(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    rev1 = cluster.put("/t/a", "hello")
    rev2 = cluster.put("/t/b", b"\x00\xffbin", member=cluster.members[2])
    assert rev2 == rev1 + 1
    for member in cluster.members:
        assert cluster.get("/t/a", member=member) == b"hello"
        assert cluster.get("/t/b", member=member) == b"\x00\xffbin"
    assert cluster.get("/t/missing") is None

    start = time.monotonic()
    last = cluster.write_garbage(n_keys=500, value_size=100, rounds=2)
    assert time.monotonic() - start < 10
    assert rev2 < last <= rev2 + 1000  # batched: one revision per transaction
    assert cluster.get("/garbage/00000499") is not None

    single = cluster.write_garbage(n_keys=20, value_size=10, txn_ops=1)
    assert single == last + 20  # one revision per put


@pytest.mark.timeout(90)
def test_kill_follower_and_restart(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    leader = cluster.leader()
    victim = cluster.followers()[0]
    old_pid = victim.pid
    assert old_pid is not None

    victim.kill()
    assert not victim.running
    assert not _alive(old_pid)
    cluster.wait_healthy(timeout=10)  # the other two still agree on a leader
    assert cluster.leader() is leader

    cluster.put("/while-down", "written")
    with pytest.raises(requests.RequestException):
        cluster.request(victim, "maintenance/status", {}, timeout=2)

    victim.restart()
    assert victim.running and victim.pid != old_pid
    assert victim.member_id() == int(victim.status()["header"]["member_id"])
    assert cluster.get("/while-down", member=victim) == b"written"
    cluster.wait_healthy(timeout=10)
    # the restarted process appended to the same log
    starts = [line for line in victim.log_lines() if line.get("msg") == "starting an etcd server"]
    assert len(starts) == 2


@pytest.mark.timeout(90)
def test_sigstop_and_cont(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    victim = cluster.followers()[-1]
    victim.stop()
    assert victim.running and victim.paused
    with pytest.raises(requests.Timeout):
        cluster.request(victim, "maintenance/status", {}, timeout=0.5)
    cluster.wait_healthy(timeout=10)  # skips the paused member
    cluster.put("/while-paused", "1")

    victim.cont()
    assert not victim.paused
    cluster.wait_healthy(timeout=20)
    assert cluster.get("/while-paused", member=victim) == b"1"


@pytest.mark.timeout(60)
def test_stop_kills_everything_and_cleans_up(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(3)
    base = cluster.base_dir
    assert base.is_dir()
    cluster.members[1].stop()  # a SIGSTOPped member must die too
    pids = [m.pid for m in cluster.members]
    assert all(pid is not None and _alive(pid) for pid in pids)

    cluster.stop()
    for pid in pids:
        assert pid is not None and not _alive(pid)
    assert not base.exists()
    assert not any(m.running for m in cluster.members)
    cluster.stop()  # idempotent


@pytest.mark.timeout(60)
def test_given_base_dir_is_kept(etcd_cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    cluster = etcd_cluster_factory(1, base_dir=tmp_path / "c")
    assert cluster.members[0].data_dir.parent == tmp_path / "c"
    cluster.put("k", "v")
    cluster.stop()
    assert (tmp_path / "c" / "m1.log").is_file()


@pytest.mark.timeout(60)
def test_tls_requires_client_cert(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(3, tls=True)
    tls = cluster.tls_files
    assert tls is not None
    assert all(url.startswith("https://127.0.0.1:") for url in cluster.endpoints)
    assert all(m.peer_url.startswith("https://") for m in cluster.members)

    cluster.put("/tls", "ok")
    assert cluster.get("/tls") == b"ok"

    url = cluster.members[0].client_url + "/v3/maintenance/status"
    ok = requests.post(
        url, json={}, verify=str(tls.ca_file), cert=(str(tls.client_cert), str(tls.client_key))
    )
    assert ok.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(url, json={}, verify=str(tls.ca_file), timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(
            url,
            json={},
            verify=str(tls.ca_file),
            cert=(str(tls.expired_client_cert), str(tls.expired_client_key)),
            timeout=5,
        )
    with pytest.raises(requests.exceptions.SSLError):  # the server cert is not from "other CA"
        requests.post(
            url,
            json={},
            verify=str(tls.other_ca_file),
            cert=(str(tls.client_cert), str(tls.client_key)),
            timeout=5,
        )


@pytest.mark.timeout(60)
def test_tls_without_client_cert_auth(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(1, tls=True, client_cert_auth=False)
    assert cluster.tls_files is not None
    resp = requests.post(
        cluster.members[0].client_url + "/v3/maintenance/status",
        json={},
        verify=str(cluster.tls_files.ca_file),
        timeout=5,
    )
    assert resp.status_code == 200


@pytest.mark.timeout(60)
def test_auth_refuses_anonymous_put(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(3, auth=True, root_password="s3cret")
    member = cluster.members[0]
    body = {"key": "YQ==", "value": "Yg=="}
    with pytest.raises(EtcdRequestError) as anonymous:
        cluster.request(member, "kv/put", body)
    assert anonymous.value.status == 400
    assert "user name is empty" in anonymous.value.message
    with pytest.raises(EtcdRequestError) as bogus:
        cluster.request(member, "kv/put", body, token="not-a-token")
    assert bogus.value.status == 401
    with pytest.raises(EtcdRequestError):
        cluster.request(member, "auth/authenticate", {"name": "root", "password": "wrong"})

    answer = cluster.request(member, "auth/authenticate", {"name": "root", "password": "s3cret"})
    token = str(answer["token"])
    cluster.request(member, "kv/put", body, token=token)
    assert cluster.get("a") == b"b"
    assert cluster.put("/auth", "ok") > 0
    assert cluster.get("/auth", member=cluster.members[2]) == b"ok"


@pytest.mark.timeout(60)
def test_tls_and_auth_together(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(1, tls=True, auth=True)
    with pytest.raises(EtcdRequestError, match="user name is empty"):
        cluster.request(cluster.members[0], "kv/put", {"key": "YQ==", "value": "Yg=="})
    cluster.put("/both", "ok")
    assert cluster.get("/both") == b"ok"


@pytest.mark.timeout(60)
def test_quota_reaches_nospace(etcd_cluster_factory: ClusterFactory) -> None:
    quota = 8 * 1024 * 1024
    cluster = etcd_cluster_factory(1, quota_backend_bytes=quota)
    with pytest.raises(EtcdRequestError) as nospace:
        cluster.write_garbage(n_keys=200, value_size=64 * 1024, rounds=10)
    assert nospace.value.status == 429
    assert "database space exceeded" in nospace.value.message

    member = cluster.members[0]
    alarms = cluster.request(member, "maintenance/alarm", {"action": "GET"})["alarms"]
    assert {"memberID": str(member.member_id()), "alarm": "NOSPACE"} in alarms
    assert cluster.alarms() == alarms
    with pytest.raises(EtcdRequestError, match="database space exceeded"):
        cluster.put("/more", "x")
    assert cluster.get("/garbage/00000000") is not None  # reads still work


@pytest.mark.timeout(60)
def test_separate_metrics(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(3, separate_metrics=True)
    urls = [m.metrics_url for m in cluster.members]
    assert all(url is not None and url.startswith("http://127.0.0.1:") for url in urls)
    assert len(set(urls)) == 3
    for member in cluster.members:
        assert member.metrics_url is not None
        resp = requests.get(member.metrics_url + "/metrics", timeout=5)
        assert resp.status_code == 200
        assert "etcd_server_has_leader 1" in resp.text
        assert "etcd_mvcc_db_total_size_in_bytes" in resp.text


@pytest.mark.timeout(60)
def test_start_failure_is_reported(etcd_cluster_factory: ClusterFactory) -> None:
    with pytest.raises(EtcdHarnessError, match="exited with code"):
        etcd_cluster_factory(1, extra_args=["--no-such-flag"])


@pytest.mark.timeout(60)
def test_port_clash_is_retried(
    etcd_cluster_factory: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = int(busy.getsockname()[1])
        real_free_ports = processes_module.free_ports
        calls: list[int] = []

        def first_port_busy(count: int) -> list[int]:
            ports = real_free_ports(count)
            calls.append(count)
            if len(calls) == 1:
                ports[0] = busy_port  # m1's client port
            return ports

        monkeypatch.setattr(processes_module, "free_ports", first_port_busy)
        cluster = etcd_cluster_factory(3)
    assert len(calls) == 2
    assert f":{busy_port}" not in cluster.members[0].client_url
    assert cluster.put("/retried", "yes") > 0


@pytest.mark.timeout(60)
def test_terminate_and_restart_without_wait(etcd_cluster_factory: ClusterFactory) -> None:
    cluster = etcd_cluster_factory(1)
    member = cluster.members[0]
    cluster.put("/k", "v")
    member.terminate(timeout=10)
    assert not member.running
    member.restart(wait=False)
    assert member.running
    cluster.wait_healthy(timeout=20)
    assert cluster.get("/k") == b"v"

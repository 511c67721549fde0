"""NOSPACE with the shipped DaemonSet topology: three replicas, one per member (`--local-member`),
several incidents in a row, an operator's `etcdagent recover` and a CronJob's `run --once`
joining in.

Judged from etcd's own logs: per incident each member is defragmented at most once, never two at
once, the alarm is gone, every key written before is intact and no replica died. Before the
recovery slots (act/nospace_slots.py) every replica ran its own unlocked recovery of every member.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from etcdagent_testing import EtcdCluster
from etcdagent_testing.errors import EtcdRequestError
from etcdagent_testing.etcdlog import DefragInterval, defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import (
    SMALL_DB_ENV,
    agent_command,
    assert_healthy_end,
    seed_keys,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ClusterFactory = Callable[..., EtcdCluster]
INCIDENTS = 3
ENV = {
    **SMALL_DB_ENV,
    "ETCDAGENT_LOCK__TTL": "2s",  # its minimum: a dead holder's slot frees fast
    "ETCDAGENT_DAEMON__COMPACTION_INTERVAL": "0",  # only the NOSPACE emergency acts
}


def alarms(cluster: EtcdCluster) -> list[dict[str, Any]] | None:
    try:
        return cluster.alarms()
    except (EtcdRequestError, requests.RequestException):
        return None  # a member busy defragmenting may not answer in time


def fill(cluster: EtcdCluster) -> None:
    """A few keys overwritten many times: the history fills the quota, the live data stays small
    (so recovery can disarm)."""

    def filled() -> bool:
        with contextlib.suppress(EtcdRequestError, requests.RequestException):
            cluster.write_garbage(n_keys=16, value_size=256 * 1024, rounds=4)
        return bool(alarms(cluster))

    wait_for(filled, 60, "a NOSPACE alarm")


@contextlib.contextmanager
def replicas(cluster: EtcdCluster, tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """One daemon per member, its own member only, cycles out of step (0.7 s, 1 s, 1.3 s)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for i, (member, interval) in enumerate(
            zip(cluster.members, ("700ms", "1s", "1300ms"), strict=True)
        ):
            err = (tmp_path / f"replica-{i}.log").open("w")
            procs.append(
                subprocess.Popen(
                    agent_command(
                        "run",
                        "--endpoints",
                        ",".join(cluster.endpoints),
                        "--local-member",
                        member.name,
                        "--listen",
                        "127.0.0.1:0",
                        "--interval",
                        interval,
                        "--log-format",
                        "json",
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    text=True,
                    env={**os.environ, **ENV},
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def slots_ready(cluster: EtcdCluster) -> bool:
    prefix = "/etcdagent/nospace/slot/"
    answer = cluster.request(
        cluster.members[0],
        "kv/range",
        {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(prefix[:-1].encode() + b"0").decode(),
            "count_only": True,
        },
    )
    return int(answer.get("count", 0)) == 6  # three slots, two keys each


def defrags_since(cluster: EtcdCluster, seen: int) -> list[DefragInterval]:
    return defrag_intervals(cluster)[seen:]


def test_three_replicas_recover_each_incident_once(
    etcd_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(3, quota_backend_bytes=16 * 1024**2)
    known = seed_keys(cluster)
    with replicas(cluster, tmp_path) as procs:
        wait_for(lambda: slots_ready(cluster), 30, "the replicas to keep the recovery slots")
        seen = 0
        operator_recoveries = 0
        for incident in range(INCIDENTS):
            fill(cluster)
            joiners: list[subprocess.Popen[str]] = []
            if incident == 1:
                # An operator and a CronJob join in while the replicas recover.
                joiners = [
                    subprocess.Popen(
                        agent_command(*cmd, "--endpoints", ",".join(cluster.endpoints)),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        env={**os.environ, **ENV},
                    )
                    for cmd in (
                        ("recover", "--output", "json"),
                        ("run", "--once", "--listen", "127.0.0.1:0", "--log-format", "json"),
                    )
                ]
            wait_for(lambda: alarms(cluster) == [], 120, f"incident {incident}: the alarm gone")
            for joiner in joiners:
                out, err = joiner.communicate(timeout=120)
                assert joiner.returncode in (0, 1) and "Traceback" not in err, err[-3000:]
                if joiner is joiners[0]:  # the operator's `recover`
                    report = json.loads(out)
                    # Either a replica claimed the incident first (the operator's recover then
                    # found it busy, or nothing left once it ended), or the operator's did: it
                    # claims a recovery slot like a replica, and the replicas detect the alarm
                    # within a second, so either may win. Never both: each member is
                    # defragmented once per incident (below).
                    assert report["outcome"] in ("refused", "nothing-to-do", "done"), report
                    if report["outcome"] == "done":
                        operator_recoveries += 1
                    else:
                        assert not any(r["step"]["kind"] == "defrag" for r in report["results"])
            wait_for(lambda: slots_ready(cluster), 30, f"incident {incident}: slots given back")
            assert cluster.put(f"/after/{incident}", "written") > 0
            done = defrags_since(cluster, seen)
            per_member = Counter(i.member for i in done)
            assert all(n <= 1 for n in per_member.values()), (incident, per_member)
            assert set(per_member) == {m.name for m in cluster.members}, (incident, per_member)
            assert all(i.end is not None for i in done)
            seen += len(done)
            for proc in procs:
                assert proc.poll() is None, "a replica died"
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    for i in range(INCIDENTS):
        assert cluster.get(f"/after/{i}") == b"written"
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("replica-*.log")))
    assert "Traceback" not in logs
    assert logs.count('"nospace recovery claimed"') == INCIDENTS - operator_recoveries
    assert_healthy_end(cluster, known)

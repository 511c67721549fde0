"""The HashKV consistency check after each member's defrag, against real 3-member clusters.

On etcd 3.5.10+ a sweep under a steady writer compares every defragmented member with a peer at
one revision, and etcd itself (asked by the test, not through etcdagent) confirms the hashes the
report gives. Before 3.5.10 the plan says the check is not available and the sweep still works.
A proxy in front of one real member rewrites only its HashKV answers: the sweep stops at that
member, naming both members and the revision, in the step output, the log, the report and the
metrics.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import structlog
from etcdagent_testing import EtcdCluster, EtcdRequestError
from etcdagent_testing.etcdlog import defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import assert_intact, fragment, run_agent_json, seed_keys
from prometheus_client import CollectorRegistry

from etcdagent.act.maintenance import Maintenance
from etcdagent.act.run_report import Outcome
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.cli.maintenance_view import TextListener
from etcdagent.etcd.client import ClusterClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NOT_AVAILABLE = "has no HashKV on its gateway (3.5.10+): the consistency check is not available"


def release(cluster: EtcdCluster) -> tuple[int, ...]:
    return tuple(int(p) for p in cluster.version.split(".")[:3])


def needs_hashkv(cluster: EtcdCluster) -> None:
    if release(cluster) < (3, 5, 10):
        pytest.skip(f"etcd {cluster.version} has no HashKV on its gateway")


def hashkv(cluster: EtcdCluster, name: str, revision: int) -> dict[str, Any]:
    """The test's own HashKV request (not etcdagent's client)."""
    member = next(m for m in cluster.members if m.name == name)
    return cluster.request(member, "maintenance/hashkv", {"revision": str(revision)})


@contextmanager
def writer(cluster: EtcdCluster) -> Iterator[list[int]]:
    """Puts keys without pause while the block runs; yields the revisions the puts returned."""
    revisions: list[int] = []
    stop = threading.Event()

    def write() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            member = cluster.members[i % len(cluster.members)]
            # A member being defragmented may not answer in time: the next put goes elsewhere.
            with suppress(EtcdRequestError, requests.RequestException):
                revisions.append(cluster.put(f"/busy/{i % 50}", f"v{i}", member=member))

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield revisions
    finally:
        stop.set()
        thread.join(timeout=30)


def test_every_defrag_under_writes_is_checked_against_a_peer_at_one_revision(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    needs_hashkv(cluster)
    known = seed_keys(cluster)
    fragment(cluster)

    with writer(cluster) as revisions:
        code, report, err = run_agent_json(
            "defrag", "--endpoints", ",".join(cluster.endpoints), "--retain-revisions", "0"
        )
        after_sweep = len(revisions)

    assert code == 0, (report, err[-3000:])
    compacted = next(
        r["step"]["revision"] for r in report["results"] if r["step"]["kind"] == "compact"
    )
    defrags = [r for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert len(defrags) == 3
    planned = [s for s in report["plans"][-1]["plan"]["steps"] if s["kind"] == "defrag"]
    assert all(s["check_peer_name"] not in (None, s["member_name"]) for s in planned)
    checked: list[int] = []
    for result in defrags:
        check = result["consistency"]
        name = result["step"]["member_name"]
        assert check["result"] == "match", check
        assert check["peer_name"] not in (None, name)
        assert check["revision"] >= compacted
        # etcd itself, asked now, agrees: both members hash to the reported value there.
        for member in (name, check["peer_name"]):
            answer = hashkv(cluster, member, check["revision"])
            assert answer["hash"] == check["hash"] == check["peer_hash"], (member, answer)
        checked.append(check["revision"])
    # The writer ran throughout: it wrote after the second-to-last check, during the last
    # member's defrag. (The last check may pick a revision past the writer's final write: the
    # agent's own defrag record bumps the revision, and the writer stops with the agent.)
    assert after_sweep > 10 and revisions[-1] > sorted(checked)[-2]
    assert len(set(checked)) > 1  # each check picked its own revision on a moving store
    cluster.wait_healthy()
    assert_intact(cluster, known)


def test_before_3_5_10_the_plan_says_the_check_is_not_available_and_the_sweep_works(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    if release(cluster) >= (3, 5, 10):
        pytest.skip(f"etcd {cluster.version} serves HashKV")
    known = seed_keys(cluster)
    fragment(cluster)

    code, report, err = run_agent_json(
        "defrag", "--endpoints", cluster.endpoints[0], "--retain-revisions", "0"
    )

    assert code == 0, (report, err[-3000:])
    plan = report["plans"][-1]["plan"]
    assert f"etcd {cluster.version} {NOT_AVAILABLE}" in plan["notes"]
    assert all(s["check_peer_name"] is None for s in plan["steps"])
    defrags = [r for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert [r["status"] for r in defrags] == ["done"] * 3
    assert {r["consistency"]["result"] for r in defrags} == {"unavailable"}
    assert all(r["warning"] is None for r in defrags)
    assert_intact(cluster, known)


# -- a member whose HashKV answer is altered -----------------------------------------------------


class HashRewritingProxy:
    """An HTTP proxy in front of one real member that forwards everything unchanged except the
    hash of a /v3/maintenance/hashkv answer, which it flips."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewritten: list[int] = []  # the revisions whose hash was altered
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream = requests.request(
                    method, proxy.upstream + self.path, data=body, headers=headers, timeout=120
                )
                content = upstream.content
                if self.path == "/v3/maintenance/hashkv" and upstream.status_code == 200:
                    answer = json.loads(content)
                    answer["hash"] = (int(answer["hash"]) + 1) % 2**32
                    proxy.rewritten.append(int(json.loads(body or b"{}").get("revision", 0)))
                    content = json.dumps(answer).encode()
                self.send_response(upstream.status_code)
                kind = upstream.headers.get("Content-Type", "application/json")
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HashRewritingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_hash_that_differs_stops_the_sweep_naming_both_members_and_the_revision(
    etcd_cluster: EtcdCluster,
) -> None:
    cluster = etcd_cluster
    needs_hashkv(cluster)
    known = seed_keys(cluster)
    fragment(cluster)
    leader = cluster.leader()
    altered = cluster.followers()[0]
    with HashRewritingProxy(altered.client_url) as proxy:
        endpoints = [proxy.url if m is altered else m.client_url for m in cluster.members]
        settings = load_settings(
            {
                "connection": {"endpoints": endpoints, "discover": False},
                "compaction": {"retain_revisions": 0},
                "defrag": {"min_db_size": "1MiB", "wait_between": "200ms"},
            }
        )
        output: list[str] = []
        with ClusterClient(settings) as client, structlog.testing.capture_logs() as logs:
            report = Maintenance(client, settings, listener=TextListener(output.append)).defrag()

    assert report.outcome is Outcome.FAILED
    failed = next(r for r in report.results if not r.ok)
    check = failed.consistency
    assert check is not None and check.result.value == "mismatch"
    assert failed.step.member_name == altered.name
    assert check.revision is not None and check.revision in proxy.rewritten
    peer = check.peer_name
    assert peer is not None and peer != altered.name
    words = (f"{altered.name} has", f"{peer} has", f"at revision {check.revision}")
    assert report.reason is not None and all(w in report.reason for w in words), report.reason
    assert any(all(w in line for w in words) for line in output), output  # the step output
    mismatch = [e for e in logs if e["event"] == "consistency check" and e["result"] == "mismatch"]
    assert [(e["member"], e["peer"], e["revision"]) for e in mismatch] == [
        (altered.name, peer, check.revision)
    ]
    as_json = json.loads(report.model_dump_json())
    failed_json = next(r for r in as_json["results"] if r["status"] == "failed")
    assert failed_json["consistency"]["revision"] == check.revision
    # Nothing after the mismatch was started; the leader (defragmented last) never was.
    after = report.results[report.results.index(failed) + 1 :]
    assert after and all(r.status.value == "not-started" for r in after)
    assert leader.name not in {i.member for i in defrag_intervals(cluster)}
    assert max_concurrent_defrags(defrag_intervals(cluster)) == 1
    # The metrics the daemon would export from this run, and the alert's series.
    metrics = AgentMetrics(CollectorRegistry())
    metrics.record_report(report, "window")
    sample = metrics.registry.get_sample_value
    assert sample("etcdagent_consistency_checks_total", {"result": "mismatch"}) == 1
    labels = {"member": altered.name, "member_id": f"{failed.step.member_id:x}", "peer": peer}
    assert sample("etcdagent_consistency_mismatch_revision", labels) == check.revision
    # The data itself is fine (only the proxy lied): etcd agrees with itself there.
    assert hashkv(cluster, altered.name, check.revision)["hash"] == check.peer_hash
    assert_intact(cluster, known)

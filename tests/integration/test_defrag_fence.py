"""The defrag fence on real etcd: no defrag or leadership move starts while a member defragments.

Every member sits behind a ``StatusProxy`` that answers its status from the last good reply while
it defragments, so the accident that used to fence (a defragmenting etcd does not answer its
status, and the health gate refuses) is gone: what refuses here is the explicit fence, the
member's own ``etcd_disk_defrag_inflight``. The members hold ~400 MiB of live data, so that one
defrag lasts seconds; one cluster serves the whole module. Whether two defrags ever overlapped is
read from etcd's own log lines.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from etcdagent_testing import EtcdCluster, EtcdMember, etcd_binary
from etcdagent_testing.etcdlog import DefragInterval, defrag_intervals, max_concurrent_defrags
from etcdagent_testing.scenario import assert_intact, seed_keys, start_agent, wait_for
from etcdagent_testing.status_proxy import STATUS_PATH, StatusProxy

from etcdagent.act.executor import Executor
from etcdagent.act.step_results import StepStatus
from etcdagent.decide.defrag import plan_defrag
from etcdagent.decide.plan import StepKind
from etcdagent.etcd.client import ClusterClient
from etcdagent.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MIB = 1024**2
LIVE_MIB = 400  # ~3-5 s per defrag on this machine (3.4.23, 3.5.1, 3.5.30, 3.6.14)
FAST_RETRY = {"ETCDAGENT_DEFRAG__WAIT_BETWEEN": "200ms", "ETCDAGENT_DEFRAG__BUDGET": "off"}


@dataclass
class Proxied:
    """The cluster, and the proxies whose URLs its members advertise."""

    cluster: EtcdCluster
    proxies: list[StatusProxy]
    known: dict[str, str]

    @property
    def endpoints(self) -> str:
        return ",".join(p.url for p in self.proxies)

    def proxy_of(self, member: EtcdMember) -> StatusProxy:
        return self.proxies[self.cluster.members.index(member)]


@pytest.fixture(scope="module")
def proxied() -> Iterator[Proxied]:
    proxies = [StatusProxy() for _ in range(3)]
    cluster = EtcdCluster(
        3,
        binary=etcd_binary(),
        quota_backend_bytes=4 * 1024**3,
        advertise_client_urls={f"m{i + 1}": p.url for i, p in enumerate(proxies)},
    )
    try:
        cluster.start()
        for proxy, member in zip(proxies, cluster.members, strict=True):
            proxy.forward_to(member.client_url)
        known = seed_keys(cluster)
        value = os.urandom(MIB // 2).hex()[: MIB - 128]  # below the 1.5 MiB request limit
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: cluster.put(f"/live/{i:04d}", value), range(LIVE_MIB)))
        yield Proxied(cluster, proxies, known)
    finally:
        cluster.stop()
        for proxy in proxies:
            proxy.close()


def inflight(member: EtcdMember) -> bool:
    """The member's own gauge, read directly (not through the proxy)."""
    text = requests.get(member.client_url + "/metrics", timeout=5).text
    return "etcd_disk_defrag_inflight 1" in text.splitlines()


class Defrag:
    """A defrag of one member started by the test itself (as a killed agent would leave it)."""

    def __init__(self, member: EtcdMember) -> None:
        self.member = member
        self.answer: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        url = self.member.client_url + "/v3/maintenance/defragment"
        self.answer = requests.post(url, json={}, timeout=120).status_code

    def __enter__(self) -> Defrag:
        self._thread.start()
        wait_for(lambda: inflight(self.member), timeout=30, what=f"{self.member.name} defragments")
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=120)
        assert self.answer == 200


def since(cluster: EtcdCluster, mark: datetime) -> list[DefragInterval]:
    return [i for i in defrag_intervals(cluster) if i.start >= mark]


def run_agent(
    proxied: Proxied, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    proc = start_agent(
        *args,
        "--endpoints",
        proxied.endpoints,
        "--output",
        "json",
        env={**FAST_RETRY, **(env or {})},
    )
    out, err = proc.communicate(timeout=180)
    assert out, err[-3000:]
    return proc.returncode, json.loads(out), err


def test_the_status_answers_through_the_proxy_while_the_member_defragments(
    proxied: Proxied,
) -> None:
    """The accident is gone: without the fence, the health gate would let a defrag start.

    Asked until the proxy had to answer from its cache: etcd raises its defrag gauge a moment
    before the defrag takes the locks that hold the status back (and lowers it a moment after
    releasing them), so one status asked at the edge may still be the member's own answer
    (seen once on 3.4.23)."""
    victim = proxied.cluster.followers()[0]
    proxy = proxied.proxy_of(victim)
    before = proxy.cached_answers
    with Defrag(victim):
        while proxy.cached_answers == before and inflight(victim):
            answer = requests.post(proxy.url + STATUS_PATH, json={}, timeout=5)
            assert answer.status_code == 200
            assert int(answer.json()["header"]["member_id"]) == victim.member_id()
        assert proxy.cached_answers > before  # the member itself did not answer in time


def test_defrag_refuses_while_a_member_defragments_naming_it(proxied: Proxied) -> None:
    cluster = proxied.cluster
    mark = datetime.now(UTC)
    victim = cluster.followers()[0]
    with Defrag(victim):
        code, report, err = run_agent(proxied, "defrag", "--force", "--no-compact")

    assert code == 1, (report, err[-2000:])
    assert report["outcome"] == "refused"
    assert f"a defrag is running on {victim.name}" in report["reason"], report["reason"]
    assert "etcd_disk_defrag_inflight=1" in report["reason"]
    intervals = since(cluster, mark)
    assert [i.member for i in intervals] == [victim.name]  # ours only: the agent started none
    assert max_concurrent_defrags(intervals) == 1
    assert_intact(cluster, proxied.known)


def test_planned_steps_are_refused_right_before_acting(proxied: Proxied) -> None:
    """A plan made before the defrag started: the move of the leader and a defrag are each
    refused by the executor's own check on a fresh snapshot, and leadership stays.

    The member defragments for a second or two only (its file was defragmented before in this
    module): when its defrag ended before the executor looked, the step may run, which is
    right; then etcd's logs must show it did not overlap, and that step is tried again.
    """
    cluster = proxied.cluster
    settings = load_settings({"connection": {"endpoints": proxied.endpoints}})
    for kind in (StepKind.MOVE_LEADER, StepKind.DEFRAG):
        for _attempt in range(5):
            mark = datetime.now(UTC)
            with ClusterClient(settings) as client:
                executor = Executor(client, settings)
                plan = plan_defrag(executor.observe(), settings, force=True)
                move = next(s for s in plan.steps if s.kind is StepKind.MOVE_LEADER)
                leader = cluster.leader()
                victim = next(m for m in cluster.followers() if m.name != move.target_name)
                step = move
                if kind is StepKind.DEFRAG:
                    step = next(
                        s for s in plan.steps if s.kind is kind and s.member_name != victim.name
                    )
                with Defrag(victim):
                    result = executor.run(step)
            intervals = since(cluster, mark)
            assert max_concurrent_defrags(intervals) == 1, intervals
            if result.status is StepStatus.REFUSED:
                assert f"a defrag is running on {victim.name}" in result.message
                assert cluster.leader() is leader
                assert [i.member for i in intervals] == [victim.name]
                break
            # Not refused: then the victim's defrag had ended before the step looked.
            ours = next(i for i in intervals if i.member == victim.name)
            assert ours.end is not None
            assert all(i.start >= ours.end for i in intervals if i.member != victim.name)
            cluster.wait_healthy()
        else:
            raise AssertionError(f"{kind}: the victim's defrag always ended before the check")


def test_a_defrag_that_timed_out_on_our_side_is_waited_for_until_its_gauge_clears(
    proxied: Proxied,
) -> None:
    """Gap 5: behind the proxy a member is "caught up" at once; the next member's defrag must
    still wait until the gauge says the first one ended."""
    cluster = proxied.cluster
    mark = datetime.now(UTC)
    code, report, err = run_agent(
        proxied,
        "defrag",
        "--force",
        "--no-compact",
        env={"ETCDAGENT_DEFRAG__TIMEOUT_MIN": "200ms", "ETCDAGENT_DEFRAG__TIMEOUT_MAX": "200ms"},
    )

    assert code == 0, (report, err[-3000:])
    defrags = [r for r in report["results"] if r["step"]["kind"] == "defrag"]
    assert [r["status"] for r in defrags] == ["done"] * 3
    assert all("instead of retrying" in (r["warning"] or "") for r in defrags)
    intervals = since(cluster, mark)
    assert sorted(i.member for i in intervals) == ["m1", "m2", "m3"]
    assert all(i.end is not None for i in intervals)
    assert max_concurrent_defrags(intervals) == 1, intervals
    assert_intact(cluster, proxied.known)


def test_an_agent_killed_mid_defrag_never_leads_to_two_defrags_at_once(proxied: Proxied) -> None:
    """The killed agent's lock lease expires (TTL 2 s) while etcd still defragments; a second
    agent retrying every second is held back by the fence until that defrag ends."""
    cluster = proxied.cluster
    mark = datetime.now(UTC)
    lock = {"ETCDAGENT_LOCK__TTL": "2s"}
    first = start_agent(
        "defrag", "--force", "--no-compact", "--endpoints", proxied.endpoints,
        "--output", "json", env={**FAST_RETRY, **lock},
    )  # fmt: skip
    try:
        wait_for(lambda: bool(since(cluster, mark)), timeout=60, what="the first agent's defrag")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        killed = since(cluster, mark)[0]
        assert killed.end is None  # etcd still defragments: the agent is gone, its lease not yet
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()

    refusals: list[str] = []
    deadline = time.monotonic() + 150
    while True:
        code, report, err = run_agent(
            proxied, "defrag", "--force", "--no-compact", "--lock-timeout", "0s", env=lock
        )
        if code == 0:
            break
        refusals.append(report.get("reason") or err[-500:])
        assert time.monotonic() < deadline, refusals
        time.sleep(1)

    intervals = since(cluster, mark)
    assert max_concurrent_defrags(intervals) == 1, (intervals, refusals)
    assert all(i.end is not None for i in intervals), intervals
    assert (intervals[0].member, intervals[0].start) == (killed.member, killed.start)
    # The successful run swept every member after the killed agent's defrag ended.
    assert sorted(i.member for i in intervals[-3:]) == ["m1", "m2", "m3"], intervals
    # The killed agent's one, then the second agent's sweep; more only when a run stopped
    # part-way for another reason than the fence (under CI load, e.g. its 2 s lock lease
    # lapsing), which the run reported.
    fenced = "a defrag is running on"
    assert len(intervals) == 4 or any(fenced not in r for r in refusals), (intervals, refusals)
    assert_intact(cluster, proxied.known)
    cluster.wait_healthy()
    # What held the second agent back while the killed one's defrag ran (the lock, then the
    # fence once the lease expired), for the failure message above and the log.
    print("refusals:", json.dumps(refusals, indent=1))

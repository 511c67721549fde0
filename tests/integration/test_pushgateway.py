"""Pushing the agent's metrics to a real Prometheus Pushgateway (Debian's package).

Install it with ``apt-get install -y prometheus-pushgateway`` (binary
/usr/bin/prometheus-pushgateway), or set ETCDAGENT_TEST_PUSHGATEWAY to another binary. Each test
starts its own in-memory instance on 127.0.0.1 and a free port; a system service, if any, is left
alone.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest
from etcdagent_testing.services import free_port
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from etcdagent import __version__
from etcdagent.agent.http_server import push
from etcdagent.agent.metrics import AgentMetrics
from etcdagent.errors import EtcdAgentError
from etcdagent.models import Member, MemberStatus
from etcdagent.observe.snapshot import ClusterSnapshot, MemberSnapshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _snapshot() -> ClusterSnapshot:
    members = []
    for member_id, name in ((0xA1, "m1"), (0xB2, "m2")):
        member = Member(id=member_id, name=name, client_urls=(f"http://{name}:2379",))
        status = MemberStatus(
            member_id=member_id, db_size=4096, db_size_in_use=1024, leader=0xA1, raft_term=2
        )
        members.append(MemberSnapshot(member=member, endpoint=f"http://{name}:2379", status=status))
    return ClusterSnapshot(
        taken_at=datetime.now(UTC), cluster_id=1, discovered_via="test", members=tuple(members)
    )


def _pushed(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, text = _get(f"{url}/metrics")
    assert status == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_push_agent_metrics(pushgateway: str) -> None:
    metrics = AgentMetrics(CollectorRegistry(), gates=("quorum",))
    metrics.observe_snapshot(_snapshot(), {})
    metrics.cycle_finished(True, 0.25, datetime.now(UTC))
    metrics.scrape_error("m2")

    push(metrics.registry, pushgateway, job="etcdagent", timeout=5)

    pushed = _pushed(pushgateway)
    build = pushed["etcdagent_build_info"]
    assert build == [({"job": "etcdagent", "instance": "", "version": __version__}, 1.0)]
    db_size = {s[0]["member"]: s for s in pushed["etcdagent_member_db_size_bytes"]}
    assert db_size["m1"] == (
        {"job": "etcdagent", "instance": "", "member": "m1", "member_id": "a1"},
        4096.0,
    )
    assert pushed["etcdagent_scrape_errors_total"] == [
        ({"job": "etcdagent", "instance": "", "member": "m2"}, 1.0)
    ]
    assert pushed["etcdagent_cycle_duration_seconds_count"][0][1] == 1.0
    # The Pushgateway adds when the group was last pushed (and that the push worked).
    assert any(labels["job"] == "etcdagent" for labels, _ in pushed["push_time_seconds"])


def test_push_replaces_the_group_and_keeps_others_apart(pushgateway: str) -> None:
    first = AgentMetrics(CollectorRegistry())
    first.scrape_error("m1")
    push(first.registry, pushgateway, job="etcdagent", grouping_key={"cluster": "a"})
    second = AgentMetrics(CollectorRegistry())
    second.request_error("m3")
    push(second.registry, pushgateway, job="etcdagent", grouping_key={"cluster": "a"})
    other = AgentMetrics(CollectorRegistry())
    other.scrape_error("m9")
    push(other.registry, pushgateway, job="etcdagent", grouping_key={"cluster": "b"})

    pushed = _pushed(pushgateway)
    scrape_errors = {
        (labels["cluster"], labels["member"])
        for labels, _ in pushed["etcdagent_scrape_errors_total"]
    }
    assert scrape_errors == {("b", "m9")}  # cluster a's m1 went with the replaced push
    assert pushed["etcdagent_request_errors_total"] == [
        ({"job": "etcdagent", "instance": "", "cluster": "a", "member": "m3"}, 1.0)
    ]


def test_a_refused_push_is_an_agent_error(pushgateway: str) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    metrics.scrape_error("m1")
    push(metrics.registry, pushgateway, job="etcdagent")
    # A gauge where the other group has a counter of the same name: inconsistent, refused.
    registry = CollectorRegistry()
    Gauge("etcdagent_scrape_errors_total", "wrong type", registry=registry).set(1)
    with pytest.raises(EtcdAgentError) as caught:
        push(registry, pushgateway, job="other", timeout=5)
    message = str(caught.value)
    assert message.startswith(f"push to Pushgateway {pushgateway} failed: HTTP Error 400")
    # The Pushgateway's own reason ("... is not a COUNTER" or "GAUGE": whichever it read first).
    assert "inconsistent with existing metrics" in message
    assert "\n" not in message


def test_an_unreachable_pushgateway_is_an_agent_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EtcdAgentError, match=f"push to Pushgateway {url} failed"):
        push(CollectorRegistry(), url, timeout=2)

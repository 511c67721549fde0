"""Several clusters' registries behind one /metrics, every sample with its cluster label."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from etcdagent.agent.cluster_registry import labelled_registry


def test_each_clusters_samples_carry_its_name_and_families_are_merged() -> None:
    main, events = CollectorRegistry(), CollectorRegistry()
    for registry, size in ((main, 100.0), (events, 7.0)):
        Gauge("etcdagent_member_db_size_bytes", "DB size.", ["member"], registry=registry).labels(
            "m1"
        ).set(size)
    Counter("etcdagent_defrags", "Defrags.", registry=events).inc()
    served = labelled_registry({"main": main, "events": events})
    text = generate_latest(served).decode()
    assert text.count("# TYPE etcdagent_member_db_size_bytes gauge") == 1
    assert 'etcdagent_member_db_size_bytes{cluster="main",member="m1"} 100.0' in text
    assert 'etcdagent_member_db_size_bytes{cluster="events",member="m1"} 7.0' in text
    assert 'etcdagent_defrags_total{cluster="events"} 1.0' in text
    assert served.get_sample_value("etcdagent_defrags_total", {"cluster": "events"}) == 1.0
    assert served.get_sample_value("etcdagent_defrags_total", {"cluster": "main"}) is None

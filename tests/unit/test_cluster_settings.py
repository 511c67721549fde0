"""`clusters:` in the settings: several etcd clusters, each inheriting what it does not set."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdagent.errors import ConfigError
from etcdagent.settings import load_settings

EVENTS = {"name": "events", "connection": {"endpoints": ["https://127.0.0.1:2382"]}}


def test_without_clusters_there_is_one_named_default() -> None:
    settings = load_settings({"connection": {"endpoints": "http://127.0.0.1:2379"}})
    assert list(settings.per_cluster()) == ["default"]
    assert settings.per_cluster()["default"] is settings


def test_each_cluster_inherits_field_by_field_what_it_does_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        """
tls: {ca_file: /etc/hosts}
defrag: {budget: 60s, min_db_size: 100MiB}
windows: [{schedule: "0 3 * * *", duration: 1h}]
clusters:
  - name: main
    connection: {endpoints: ["https://127.0.0.1:2379"]}
  - name: events
    connection: {endpoints: ["127.0.0.1:2382"]}
    defrag: {min_db_size: 50MiB}
    daemon: {local_member: node1-events}
    windows: []
"""
    )
    monkeypatch.setenv("ETCDAGENT_DEFRAG__WAIT_BETWEEN", "9s")
    clusters = load_settings(None, config).per_cluster()
    assert list(clusters) == ["main", "events"]
    main, events = clusters["main"], clusters["events"]
    assert events.connection.endpoints == ["https://127.0.0.1:2382"]  # https: TLS inherited
    assert (main.defrag.min_db_size, events.defrag.min_db_size) == (100 * 2**20, 50 * 2**20)
    assert main.defrag.budget == events.defrag.budget == 60
    assert main.defrag.wait_between == events.defrag.wait_between == 9  # the environment too
    assert (main.daemon.local_member, events.daemon.local_member) == (None, "node1-events")
    assert len(main.windows) == 1 and events.windows == []
    assert main.clusters == [] and events.clusters == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "events"}, "cluster 'events' needs its own connection.endpoints"),
        ({**EVENTS, "defrag": {"min_db_size": "abc"}}, "events.defrag.min_db_size: 'abc' is not"),
        ({**EVENTS, "defrag": {"typo": 1}}, "events.defrag.typo: unknown setting"),
        ({**EVENTS, "daemon": {"listen": ":1"}}, "daemon.listen: one for the whole process"),
        ({**EVENTS, "name": "Events!"}, "clusters.0.name"),
    ],
)
def test_a_mistake_in_one_cluster_fails_at_start_naming_it(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match="invalid configuration") as caught:
        load_settings({"clusters": [entry]})
    assert message in str(caught.value)


def test_a_name_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="cluster 'events' is listed twice"):
        load_settings({"clusters": [EVENTS, EVENTS]})


def test_every_clusters_password_is_a_secret_and_never_in_an_error() -> None:
    entry = {**EVENTS, "auth": {"username": "u", "password": "ev-s3cret"}}
    settings = load_settings({"auth": {"username": "u", "password": "top"}, "clusters": [entry]})
    assert set(settings.secrets()) == {"top", "ev-s3cret"}
    bad = {**entry, "defrag": {"budget": "x"}}
    with pytest.raises(ConfigError) as caught:
        load_settings({"clusters": [bad]})
    assert "ev-s3cret" not in str(caught.value)


def test_top_level_endpoints_beside_clusters_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """They would be ignored (each cluster has its own): refused, from a file, env or a flag."""
    with pytest.raises(ConfigError, match=r"each cluster names its own connection\.endpoints"):
        load_settings({"connection": {"endpoints": "http://a:2379"}, "clusters": [EVENTS]})
    monkeypatch.setenv("ETCDAGENT_ENDPOINTS", "http://a:2379")
    with pytest.raises(ConfigError, match=r"top-level connection\.endpoints"):
        load_settings({"clusters": [EVENTS]})


def test_flags_win_over_a_clusters_own_values_too() -> None:
    """flag > environment > file holds for every cluster, not only for the top level."""
    entry = {**EVENTS, "defrag": {"wait_between": "9s"}, "daemon": {"local_member": "ev-1"}}
    flags = {"defrag": {"wait_between": "1s"}, "daemon": {"local_member": "node-1"}}
    events = load_settings({**flags, "clusters": [entry]}, command_line=True).per_cluster()
    assert events["events"].defrag.wait_between == 1
    assert events["events"].daemon.local_member == "node-1"
    # Without flags (the same values as a file's top level), the cluster's own win.
    as_file = load_settings({**flags, "clusters": [entry]}).per_cluster()["events"]
    assert as_file.defrag.wait_between == 9 and as_file.daemon.local_member == "ev-1"


def test_every_clusters_mistakes_are_named_not_only_the_first_ones() -> None:
    main = {"name": "main", "connection": {"endpoints": ["http://a:2379"]}, "lock": {"ttl": "x"}}
    bad_events = {**EVENTS, "defrag": {"typo": 1}}
    with pytest.raises(ConfigError) as caught:
        load_settings({"clusters": [main, bad_events]})
    assert "main.lock.ttl" in str(caught.value) and "events.defrag.typo" in str(caught.value)

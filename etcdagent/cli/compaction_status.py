"""For `etcdagent status`: who compacts the cluster (kube-apiserver, the agent, nobody).

Read-only: the retention markers are read (they prove how long compact_rev_key has been quiet),
never written or pruned, and the key is only read.
"""

from __future__ import annotations

from typing import Any

from etcdagent.act.markers import read_markers
from etcdagent.decide.apiserver import ApiserverCompaction, judge_apiserver
from etcdagent.errors import EtcdError
from etcdagent.etcd.client import ClusterClient
from etcdagent.observe.compact_rev_key_read import read_compact_rev_key
from etcdagent.observe.snapshot import ClusterSnapshot
from etcdagent.settings import Settings


def observe_compaction(
    cluster: ClusterClient, snapshot: ClusterSnapshot, settings: Settings
) -> ApiserverCompaction | None:
    """The judgement on compact_rev_key; None when no member answers."""
    via = snapshot.answering_voter()
    if via is None or via.endpoint is None:
        return None
    client = cluster.member(via.endpoint, via.member.name)
    try:
        key = read_compact_rev_key(client)
    except EtcdError as exc:
        return judge_apiserver(None, settings.compaction, error=str(exc))
    try:
        markers = read_markers(client).markers
    except EtcdError:
        markers = []
    return judge_apiserver(key, settings.compaction, markers)


def compaction_json(judged: ApiserverCompaction | None, settings: Settings) -> dict[str, Any]:
    key = judged.key if judged is not None else None
    return {
        "mode": settings.compaction.mode.value,
        "who": judged.describe() if judged is not None else None,
        "apiserver_compacting": judged.apiserver_compacts if judged is not None else None,
        "compact_rev_key": None
        if key is None or not key.exists
        else {
            "version": key.version,
            "value": key.value,
            "mod_revision": key.mod_revision,
            "by_etcdagent": key.by_agent,
        },
        "quiet_for_seconds": judged.quiet_for if judged is not None else None,
    }

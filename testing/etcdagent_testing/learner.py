"""A learner joining a running test cluster: `member add --learner`, then its own etcd process.

etcd refuses member changes until the peers have been connected for 5 s, unless the cluster runs
with ``--strict-reconfig-check=false`` (pass it in ``extra_args``). The learner lives beside the
others (its data dir and log under the cluster's base dir, ``l1``, ``l2``...), is appended to
``cluster.members`` (so ``stop`` kills it and etcd's logs of it are read like the others'), and
follows the cluster's flags (quota, TLS, extra args).
"""

from __future__ import annotations

from typing import Any

from etcdagent_testing import processes
from etcdagent_testing.cluster import EtcdCluster
from etcdagent_testing.member import EtcdMember
from etcdagent_testing.member_config import EtcdFlags, MemberLayout

__all__ = ["add_learner"]


def _initial_cluster(answer: dict[str, Any], name: str, peer_url: str) -> str:
    """``name=peerURL`` of every member the add answer lists; the new one has no name yet."""
    parts: list[str] = []
    for m in answer.get("members") or []:
        urls = m.get("peerURLs") or []
        member_name = m.get("name") or (name if peer_url in urls else "")
        parts.extend(f"{member_name}={url}" for url in urls)
    return ",".join(parts)


def add_learner(cluster: EtcdCluster, timeout: float = 30.0) -> EtcdMember:
    """Add a learner to ``cluster``, start it, and wait until it answers and knows the leader."""
    index = 1 + sum(m.name.startswith("l") for m in cluster.members)
    name = f"l{index}"
    client_port, peer_port = processes.free_ports(2)
    scheme = cluster.scheme
    layout = MemberLayout(
        name,
        client_url=f"{scheme}://127.0.0.1:{client_port}",
        peer_url=f"{scheme}://127.0.0.1:{peer_port}",
        metrics_url=None,
        data_dir=cluster.base_dir / f"{name}.etcd",
        log_path=cluster.base_dir / f"{name}.log",
        output_path=cluster.base_dir / f"{name}.out",
    )
    answer = cluster.request(
        cluster.leader(),
        "cluster/member/add",
        {"peerURLs": [layout.peer_url], "isLearner": True},
        token=cluster.root_token() if cluster.auth else None,
    )
    flags = EtcdFlags(
        binary=cluster.binary,
        initial_cluster_token=cluster.cluster_token,
        quota_backend_bytes=cluster.quota_backend_bytes,
        tls_files=cluster.tls_files,
        client_cert_auth=cluster.client_cert_auth,
        extra_args=cluster.extra_args,
    )
    args = flags.command_line(layout, _initial_cluster(answer, name, layout.peer_url))
    args[args.index("--initial-cluster-state") + 1] = "existing"
    learner = EtcdMember(cluster, layout)
    learner.args = args
    learner._spawn()
    cluster.members.append(learner)
    cluster.wait_healthy(timeout, members=[learner])
    learner.member_id()
    return learner

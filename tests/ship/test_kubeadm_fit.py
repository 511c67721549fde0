"""The shipped kubeadm configuration reaches the node's member on both its URLs and scrapes it on
kubeadm's metrics listener: with the DaemonSet's and the static pod's flags expanded the way the
kubelet expands them, the settings are what a control-plane node needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdagent.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODE = {"NODE_NAME": "cp-1", "NODE_IP": "10.0.0.5"}  # what the downward API gives a node
FIELD_PATHS = {"NODE_NAME": "spec.nodeName", "NODE_IP": "status.hostIP"}


def container(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / name).read_text())
    spec = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    [agent] = spec["containers"]
    result: dict[str, Any] = agent
    return result


def expanded_flags(agent: dict[str, Any]) -> dict[str, str]:
    """The flags after the kubelet's $(VAR) expansion; every variable from the downward API."""
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: NODE[m.group(1)], a) for a in agent["args"]]
    used = {v for a in agent["args"] for v in re.findall(r"\$\((\w+)\)", a)}
    assert {v: env[v] for v in used} == {v: FIELD_PATHS[v] for v in used}
    flags = {}
    for i, arg in enumerate(args):
        if arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[arg] = args[i + 1]
    return flags


def node_settings(tmp_path: Path, flags: dict[str, str]) -> Settings:
    data = yaml.safe_load(
        yaml.safe_load((DEPLOY / "configmap.yaml").read_text())["data"]["config.yaml"]
    )
    data.pop("tls")  # kubeadm's certificate files exist only on a control-plane node
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    overrides = {
        "connection": {"endpoints": flags["--endpoints"]},
        "daemon": {"local_member": flags["--local-member"]},
    }
    return load_settings(overrides, config_file=path)


@pytest.mark.parametrize("name", ["daemonset.yaml", "static-pod.yaml"])
def test_the_local_member_on_both_urls_and_its_metrics_listener(
    name: str, tmp_path: Path, clean_env: None
) -> None:
    settings = node_settings(tmp_path, expanded_flags(container(name)))
    # 127.0.0.1 and the advertised URL: while this node's etcd restarts, discovery asks the
    # members found before, and only this member looks down.
    assert settings.connection.endpoints == ["https://127.0.0.1:2379", "https://10.0.0.5:2379"]
    assert settings.connection.discover is True
    assert settings.connection.local_metrics_url == "http://127.0.0.1:2381"
    assert settings.daemon.local_member == "cp-1"  # kubeadm names each member after its node

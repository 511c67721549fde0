"""The two-cluster example in deploy/events-etcd/: kubeadm's etcd ("main") and a separate etcd
for Kubernetes events ("events") maintained by one agent per control-plane node.

Built the way a user builds it (kustomize, the Component over the default installation), the
manifests are schema-valid, differ from the default ones only where the second cluster needs
it, mount every certificate the configuration names, pass no --endpoints (refused with
``clusters:``), and the ConfigMap's config.yaml loads through the real settings loader as the
two clusters the comments describe.

kustomize: ``kustomize build`` or ``kubectl kustomize``, whichever is on PATH; without either
the build tests are skipped (the files themselves are still checked).
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdagent.decide.windows import window_state
from etcdagent.errors import ConfigError
from etcdagent.settings import Settings, load_settings
from etcdagent.settings.windows import MaintenanceWindow

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EVENTS = DEPLOY / "events-etcd"
CONFIG_PATH = "/etc/etcdagent/config.yaml"
PKI = "/etc/kubernetes/pki/"
NODE = "cp-1"
# What the comments promise: the events etcd's client and metrics listeners, and the flag that
# sends kube-apiserver's events there.
EVENTS_CLIENT = "https://127.0.0.1:2383"
EVENTS_METRICS = "http://127.0.0.1:2385"
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def load_one(path: Path) -> dict[str, Any]:
    [doc] = load_docs(path)
    return doc


def kustomize_command() -> list[str]:
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    pytest.skip("neither kustomize nor kubectl on PATH: the kustomize build is not checked")


def build(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, as ``kubectl apply -k directory`` would send them."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}


@pytest.fixture(scope="module")
def base() -> dict[tuple[str, str], dict[str, Any]]:
    return build(DEPLOY)


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """The default installation with the Component, from an overlay of a user's own beside
    the repository (kustomize refuses absolute paths; relative ones may leave the root)."""
    site = tmp_path_factory.mktemp("site")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, site)],
        "components": [os.path.relpath(EVENTS, site)],
    }
    (site / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return build(site)


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def agent(doc: dict[str, Any]) -> dict[str, Any]:
    [container] = pod_spec(doc)["containers"]
    result: dict[str, Any] = container
    return result


def daemonset(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objects[("DaemonSet", "etcdagent")]


def static_pod() -> dict[str, Any]:
    return load_one(EVENTS / "static-pod.yaml")


def config_text() -> str:
    text: str = load_one(EVENTS / "configmap.yaml")["data"]["config.yaml"]
    return text


def tls_files(config: dict[str, Any]) -> set[str]:
    """Every TLS file of the configuration: the top level's and each cluster's own."""
    groups = [config.get("tls", {})] + [c.get("tls", {}) for c in config["clusters"]]
    return {g[k] for g in groups for k in ("ca_file", "cert_file", "key_file") if k in g}


def readme_config() -> str:
    """The YAML example of README.md's "Two clusters: the events etcd"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Two clusters: the events etcd\n", 1)[1].split("\n#", 1)[0]
    blocks: list[str] = re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL)
    [block] = blocks
    return block


def load_on_node(
    tmp_path: Path, overrides: dict[str, Any] | None = None, text: str | None = None
) -> Settings:
    """The config loaded as on a control-plane node: its certificate paths exist there only,
    so they are recreated under tmp_path (empty files; the loader checks they are readable)."""
    text = config_text() if text is None else text
    for path in tls_files(yaml.safe_load(text)):
        on_node = tmp_path / path.lstrip("/")
        on_node.parent.mkdir(parents=True, exist_ok=True)
        on_node.write_text("placeholder")
    config = tmp_path / "config.yaml"
    config.write_text(text.replace(PKI, f"{tmp_path}{PKI}"))
    flags = {"daemon": {"local_member": NODE}} if overrides is None else overrides
    return load_settings(flags, config_file=config, command_line=True)


# -- the Component and what it builds ----------------------------------------------------------


def test_component_only_patches_the_default_installation() -> None:
    component = load_one(EVENTS / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    assert "resources" not in component  # it adds no object, the base's are patched
    assert [p["path"] for p in component["patches"]] == ["configmap.yaml", "daemonset-patch.yaml"]
    for patch in component["patches"]:
        assert (EVENTS / patch["path"]).is_file()
    # The default installation stays single-cluster: the Component is opt-in.
    assert "components" not in load_one(DEPLOY / "kustomization.yaml")


def test_build_has_the_default_objects_and_changes_only_two(
    base: dict[tuple[str, str], dict[str, Any]],
    two_clusters: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert two_clusters.keys() == base.keys()
    changed = {key for key in base if base[key] != two_clusters[key]}
    assert changed == {("ConfigMap", "etcdagent-config"), ("DaemonSet", "etcdagent")}
    configmap = two_clusters[("ConfigMap", "etcdagent-config")]
    assert configmap["data"] == {"config.yaml": config_text()}


def test_built_objects_are_valid_for_current_kubernetes(
    two_clusters: dict[tuple[str, str], dict[str, Any]],
) -> None:
    version = kubernetes_validate.latest_version()
    # The ServiceMonitor (a CRD) is the base's, checked by test_manifests.py.
    docs = [d for d in two_clusters.values() if d["kind"] != "ServiceMonitor"]
    docs += [static_pod(), load_one(EVENTS / "configmap.yaml")]
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {where}: {exc.message}")


def without_endpoints_flag(container: dict[str, Any]) -> None:
    """The default pods' container as the two-cluster one must be: no --endpoints and no
    NODE_IP (only --endpoints used it)."""
    args = container["args"]
    at = args.index("--endpoints")
    del args[at : at + 2]
    container["env"] = [e for e in container["env"] if e["name"] != "NODE_IP"]


def events_certificates(pod: dict[str, Any]) -> dict[str, Any]:
    """The default pod spec plus a read-only single-file mount of each events certificate."""
    container = agent({"kind": "Pod", "spec": pod})
    for path, name in [
        ("ca.crt", "etcd-events-ca"),
        ("healthcheck-client.crt", "etcd-events-client-cert"),
        ("healthcheck-client.key", "etcd-events-client-key"),
    ]:
        full = f"{PKI}etcd-events/{path}"
        container["volumeMounts"].append({"name": name, "mountPath": full, "readOnly": True})
        pod["volumes"].append({"name": name, "hostPath": {"path": full, "type": "File"}})
    return pod


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def comparable(pod: dict[str, Any]) -> dict[str, Any]:
    """Mounts and volumes keyed by name: the patch's order is kustomize's, not the base's."""
    pod = copy.deepcopy(pod)
    container = agent({"kind": "Pod", "spec": pod})
    container["volumeMounts"] = by_name(container["volumeMounts"])
    pod["volumes"] = by_name(pod["volumes"])
    return pod


def test_daemonset_is_the_default_one_without_endpoints_with_events_certificates(
    base: dict[tuple[str, str], dict[str, Any]],
    two_clusters: dict[tuple[str, str], dict[str, Any]],
) -> None:
    expected = copy.deepcopy(daemonset(base))
    without_endpoints_flag(agent(expected))
    events_certificates(pod_spec(expected))
    got = daemonset(two_clusters)
    assert comparable(pod_spec(got)) == comparable(pod_spec(expected))
    assert {k: v for k, v in got.items() if k != "spec"} == {
        k: v for k, v in expected.items() if k != "spec"
    }
    assert {k: v for k, v in got["spec"].items() if k != "template"} == {
        k: v for k, v in expected["spec"].items() if k != "template"
    }


def test_static_pod_is_the_default_one_without_endpoints_with_events_certificates() -> None:
    expected = load_one(DEPLOY / "static-pod.yaml")
    without_endpoints_flag(agent(expected))
    events_certificates(pod_spec(expected))
    got = static_pod()
    assert comparable(pod_spec(got)) == comparable(pod_spec(expected))
    assert got["metadata"] == expected["metadata"]


def pods(two_clusters: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    return [daemonset(two_clusters), static_pod()]


def test_pods_pass_the_node_name_and_no_endpoints(
    two_clusters: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for pod in pods(two_clusters):
        container = agent(pod)
        args = container["args"]
        assert args == ["run", "--config", CONFIG_PATH, "--local-member", "$(NODE_NAME)"]
        # Every $(VAR) the kubelet expands comes from the downward API.
        env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
        used = {v for a in args for v in re.findall(r"\$\((\w+)\)", a)}
        assert {v: env[v] for v in used} == {"NODE_NAME": "spec.nodeName"}
        assert env == {"NODE_NAME": "spec.nodeName"}


def test_every_certificate_of_every_cluster_is_mounted_read_only(
    two_clusters: dict[tuple[str, str], dict[str, Any]],
) -> None:
    wanted = tls_files(yaml.safe_load(config_text()))
    assert {p.rsplit("/", 2)[1] for p in wanted} == {"etcd", "etcd-events"}
    for pod in pods(two_clusters):
        spec = pod_spec(pod)
        mounts = {m["mountPath"]: m for m in agent(pod)["volumeMounts"]}
        volumes = by_name(spec["volumes"])
        for path in sorted(wanted):
            mount = mounts[path]
            assert mount["readOnly"] is True
            assert volumes[mount["name"]]["hostPath"] == {"path": path, "type": "File"}
        host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
        # Only the files the config names (and the static pod's config file), never a directory
        # of keys.
        assert set(host_paths) - wanted <= {CONFIG_PATH}
        assert not any(p.endswith(("ca.key", "server.key", "peer.key")) for p in host_paths)


# -- the configuration ------------------------------------------------------------------------


def test_config_is_two_clusters_main_and_events(tmp_path: Path, clean_env: None) -> None:
    settings = load_on_node(tmp_path)
    clusters = settings.per_cluster()
    assert list(clusters) == ["main", "events"]
    main, events = clusters["main"], clusters["events"]
    pki = f"{tmp_path}{PKI}"

    assert main.connection.endpoints == ["https://127.0.0.1:2379"]
    assert main.connection.local_metrics_url == "http://127.0.0.1:2381"
    assert (main.tls.ca_file, main.tls.cert_file, main.tls.key_file) == (
        Path(f"{pki}etcd/ca.crt"),
        Path(f"{pki}etcd/healthcheck-client.crt"),
        Path(f"{pki}etcd/healthcheck-client.key"),
    )
    assert events.connection.endpoints == [EVENTS_CLIENT]
    assert events.connection.local_metrics_url == EVENTS_METRICS
    assert (events.tls.ca_file, events.tls.cert_file, events.tls.key_file) == (
        Path(f"{pki}etcd-events/ca.crt"),
        Path(f"{pki}etcd-events/healthcheck-client.crt"),
        Path(f"{pki}etcd-events/healthcheck-client.key"),
    )
    for cluster in (main, events):
        # --local-member $(NODE_NAME) holds for both; the other members are discovered.
        assert cluster.daemon.local_member == NODE
        assert cluster.connection.discover is True
        assert cluster.compaction.mode == "auto"
        assert cluster.compaction.apiserver_interval == 300
        # kubeadm's liveness probe (and the events etcd's copy of it) allows ~80 s of defrag.
        assert cluster.defrag.budget == 60
        assert cluster.daemon.grace_period >= cluster.defrag.budget + 30
    assert main.compaction.retain == 300
    assert events.compaction.retain == 120  # events churn: less history when the agent compacts
    [main_window] = main.windows
    assert (main_window.schedule, main_window.duration) == ("0 3 * * *", 3600)
    assert [w.schedule for w in events.windows] == ["30 4,16 * * *"]
    # One process: one listener for both clusters' metrics and probes.
    assert settings.daemon.listen == "0.0.0.0:9479"


def test_pods_grace_period_outlasts_the_agents(
    tmp_path: Path, clean_env: None, two_clusters: dict[tuple[str, str], dict[str, Any]]
) -> None:
    grace = load_on_node(tmp_path).daemon.grace_period
    for pod in pods(two_clusters):
        assert pod_spec(pod)["terminationGracePeriodSeconds"] > grace


def open_minutes(windows: list[MaintenanceWindow]) -> set[datetime]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    moments = (start + timedelta(minutes=5 * i) for i in range(24 * 12))
    return {m for m in moments if window_state(windows, m).open}


def test_planned_maintenance_of_the_two_clusters_never_overlaps(
    tmp_path: Path, clean_env: None
) -> None:
    clusters = load_on_node(tmp_path).per_cluster()
    main = open_minutes(clusters["main"].windows)
    events = open_minutes(clusters["events"].windows)
    assert main and events
    assert not main & events
    assert len(events) > len(main)  # the events etcd is maintained more often


def test_config_as_written_fails_here_only_for_the_absent_certificates(
    tmp_path: Path, clean_env: None
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text())
    with pytest.raises(ConfigError) as caught:
        load_settings({"daemon": {"local_member": NODE}}, config_file=config, command_line=True)
    complaints = str(caught.value).split(": ", 1)[1].split("; ")
    assert complaints
    assert all("tls." in c and c.endswith("no such file") for c in complaints), complaints


def test_missing_events_certificates_are_named_with_the_cluster(
    tmp_path: Path, clean_env: None
) -> None:
    """A node with kubeadm's certificates but not yet the events etcd's: the agent refuses to
    start and names each missing file under the events cluster."""
    kubeadm = f"{PKI}etcd/"
    for path in tls_files(yaml.safe_load(config_text())):
        if path.startswith(kubeadm):
            on_node = tmp_path / path.lstrip("/")
            on_node.parent.mkdir(parents=True, exist_ok=True)
            on_node.write_text("placeholder")
    config = tmp_path / "config.yaml"
    config.write_text(config_text().replace(kubeadm, f"{tmp_path}{kubeadm}"))
    with pytest.raises(ConfigError) as caught:
        load_settings({"daemon": {"local_member": NODE}}, config_file=config, command_line=True)
    message = str(caught.value)
    for key, name in [
        ("ca_file", "ca.crt"),
        ("cert_file", "healthcheck-client.crt"),
        ("key_file", "healthcheck-client.key"),
    ]:
        assert f"events.tls.{key}: {PKI}etcd-events/{name}: no such file" in message
    assert "main." not in message
    assert message.count("no such file") == 3


def test_the_default_pods_endpoints_flag_is_refused(tmp_path: Path, clean_env: None) -> None:
    """Why the pods here pass no --endpoints: with `clusters:` it would be ignored, so the agent
    refuses to start with it."""
    flag = {"endpoints": "https://127.0.0.1:2379,https://10.0.0.5:2379"}
    with pytest.raises(ConfigError, match=r"clusters.*connection\.endpoints"):
        load_on_node(tmp_path, {"connection": flag, "daemon": {"local_member": NODE}})


def test_comments_name_the_ports_the_config_uses(tmp_path: Path, clean_env: None) -> None:
    """The events etcd's flags described in the comments are the ones the config expects."""
    events = load_on_node(tmp_path).per_cluster()["events"]
    for path in (EVENTS / "configmap.yaml", EVENTS / "kustomization.yaml"):
        overrides = re.findall(r"--etcd-servers-overrides=/events#([^\s)]+)", path.read_text())
        assert overrides == [EVENTS_CLIENT], path
    text = (EVENTS / "configmap.yaml").read_text()
    [clients] = re.findall(r"--listen-client-urls=(\S+)", text)
    assert events.connection.endpoints[0] in clients.split(",")
    [metrics] = re.findall(r"--listen-metrics-urls=(\S+)", text)
    assert metrics == events.connection.local_metrics_url
    assert "--listen-peer-urls=https://<node-ip>:2384" in text
    assert f"{PKI}etcd-events/" in text


def test_readme_example_is_the_shipped_configuration(tmp_path: Path, clean_env: None) -> None:
    """README's two-cluster example loads and gives each cluster what the ConfigMap gives it."""
    shipped = load_on_node(tmp_path).per_cluster()
    documented = load_on_node(tmp_path, text=readme_config()).per_cluster()
    assert list(documented) == list(shipped) == ["main", "events"]
    for name, cluster in documented.items():
        expected = shipped[name]
        assert cluster.connection.endpoints == expected.connection.endpoints, name
        assert cluster.connection.local_metrics_url == expected.connection.local_metrics_url
        assert cluster.tls == expected.tls, name
        assert cluster.windows == expected.windows, name
        assert cluster.compaction.retain == expected.compaction.retain, name

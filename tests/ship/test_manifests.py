"""The Kubernetes manifests in deploy/: schema-valid for a current Kubernetes release, and
consistent with the agent (flags, settings, ports, probes, grace period, certificate paths).

Schemas: kubernetes-validate's bundled, offline JSON schemas, the newest release it ships,
strict (unknown fields are errors). It has no schemas for CRDs or kustomize: the ServiceMonitor
is checked against a subset of the prometheus-operator CRD written below, the Kustomization by
hand.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdagent.errors import ConfigError
from etcdagent.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PORT = 9479
CONFIG_PATH = "/etc/etcdagent/config.yaml"
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
MASTER = "node-role.kubernetes.io/master"
# kubernetes-validate and jsonschema ship no type information: used through Any.
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")
jsonschema: Any = importlib.import_module("jsonschema")

KUBERNETES_MANIFESTS = [
    "configmap.yaml",
    "daemonset.yaml",
    "cronjob.yaml",
    "static-pod.yaml",
    "service.yaml",
]


def load_docs(name: str) -> list[dict[str, Any]]:
    with (DEPLOY / name).open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def load_one(name: str) -> dict[str, Any]:
    docs = load_docs(name)
    assert len(docs) == 1, f"{name}: expected one document, got {len(docs)}"
    return docs[0]


def schema_version() -> str:
    """The newest Kubernetes release whose schemas kubernetes-validate bundles."""
    version: str = kubernetes_validate.latest_version()
    return version


def pod_spec(name: str) -> dict[str, Any]:
    doc = load_one(name)
    spec: dict[str, Any]
    if doc["kind"] == "Pod":
        spec = doc["spec"]
    elif doc["kind"] == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = doc["spec"]["template"]["spec"]
    return spec


def agent_container(name: str) -> dict[str, Any]:
    containers = pod_spec(name)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def example_config() -> str:
    text: str = load_one("configmap.yaml")["data"]["config.yaml"]
    return text


def settings_without_tls(tmp_path: Path) -> Settings:
    """The ConfigMap's example config, loaded; its TLS files exist only on a control-plane
    node, so the tls section is left out here (test_example_config_loads checks that those
    files are the only complaint)."""
    data = yaml.safe_load(example_config())
    data.pop("tls")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_settings(config_file=path)


# -- schemas ----------------------------------------------------------------------------------


def test_kubernetes_validate_bundles_a_current_release() -> None:
    major, minor = (int(part) for part in schema_version().split(".")[:2])
    assert (major, minor) >= (1, 33), schema_version()


@pytest.mark.parametrize("name", KUBERNETES_MANIFESTS)
def test_manifest_is_valid_for_current_kubernetes(name: str) -> None:
    docs = load_docs(name)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, schema_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']} {where}: {exc.message}")


def test_strict_validation_rejects_unknown_fields() -> None:
    """The check above has teeth: a misspelt field is an error, not ignored."""
    doc = load_one("daemonset.yaml")
    doc["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, schema_version(), strict=True)


_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
# The fields this project uses, as the monitoring.coreos.com/v1 ServiceMonitor CRD of
# prometheus-operator (example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml)
# defines them, with unknown fields rejected so that a typo does not pass silently.
SERVICEMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {
                                                "type": "string",
                                                "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$",
                                            },
                                        },
                                        "separator": {"type": "string"},
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "replacement": {"type": "string"},
                                        "action": {
                                            "enum": [
                                                "replace",
                                                "keep",
                                                "drop",
                                                "labelmap",
                                                "labeldrop",
                                                "labelkeep",
                                            ]
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_servicemonitor_matches_the_crd_subset() -> None:
    doc = load_one("servicemonitor.yaml")
    # kubernetes-validate bundles no CRD schemas; if a future release does, use it too.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(doc, schema_version(), strict=True)
    jsonschema.validate(doc, SERVICEMONITOR_SCHEMA)


def test_servicemonitor_scrapes_the_service_port_every_30s() -> None:
    monitor = load_one("servicemonitor.yaml")
    service = load_one("service.yaml")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["interval"] == "30s"
    assert endpoint.get("path", "/metrics") == "/metrics"
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]


def test_service_selects_the_daemonset_pods() -> None:
    service = load_one("service.yaml")
    daemonset = load_one("daemonset.yaml")
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port == {"name": "metrics", "port": PORT, "targetPort": "metrics", "protocol": "TCP"}
    # Metrics must keep flowing while etcd is down (/readyz failing).
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_kustomization_ties_the_default_installation() -> None:
    kustomization = load_one("kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert resources == ["configmap.yaml", "daemonset.yaml", "service.yaml", "servicemonitor.yaml"]
    for name in resources:
        assert (DEPLOY / name).is_file(), name
        for doc in load_docs(name):
            assert doc["metadata"].get("namespace") == kustomization["namespace"], name
    image_names = {image["name"] for image in kustomization["images"]}
    assert agent_container("daemonset.yaml")["image"].split(":")[0] in image_names


def test_everything_lives_in_one_namespace() -> None:
    namespaces = {
        doc["metadata"].get("namespace")
        for path in sorted(DEPLOY.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_docs(path.name)
    }
    # kube-system: where system-node-critical pods are admitted by default.
    assert namespaces == {"kube-system"}


# -- the agent's pods -------------------------------------------------------------------------

AGENT_PODS = ["daemonset.yaml", "cronjob.yaml", "static-pod.yaml"]


@pytest.mark.parametrize("name", AGENT_PODS)
def test_runs_on_control_plane_nodes_with_the_host_network(name: str) -> None:
    spec = pod_spec(name)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    if name == "static-pod.yaml":
        return  # the kubelet runs it on the node whose manifests directory holds it
    assert spec["nodeSelector"] == {CONTROL_PLANE: ""}
    tolerated = {(t["key"], t["operator"], t["effect"]) for t in spec["tolerations"]}
    assert (CONTROL_PLANE, "Exists", "NoSchedule") in tolerated
    assert (MASTER, "Exists", "NoSchedule") in tolerated
    assert spec["automountServiceAccountToken"] is False  # the agent never calls the API


@pytest.mark.parametrize("name", AGENT_PODS)
def test_security_context(name: str) -> None:
    spec = pod_spec(name)
    sc = agent_container(name)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Root only to read kubeadm's 0600 root-owned client key, and then deliberately: the
    # manifest says why (the image's own user is 65532).
    assert sc["runAsUser"] == 0
    assert sc["runAsNonRoot"] is False
    text = (DEPLOY / name).read_text()
    assert "0600" in text


@pytest.mark.parametrize("name", AGENT_PODS)
def test_certificates_are_the_config_files_mounted_read_only(name: str) -> None:
    """Every TLS file of the example config is mounted, read-only, from the same path on the
    node, one file each (never the whole pki directory with the CA key)."""
    tls = yaml.safe_load(example_config())["tls"]
    spec = pod_spec(name)
    mounts = {m["mountPath"]: m for m in agent_container(name)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for key in ("ca_file", "cert_file", "key_file"):
        path = tls[key]
        assert path.startswith("/etc/kubernetes/pki/etcd/"), path
        mount = mounts[path]
        assert mount["readOnly"] is True
        host = volumes[mount["name"]]["hostPath"]
        assert host == {"path": path, "type": "File"}
    host_paths = [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]
    assert "/etc/kubernetes/pki/etcd" not in host_paths
    assert not any(p.endswith(("ca.key", "server.key", "peer.key")) for p in host_paths)


@pytest.mark.parametrize("name", AGENT_PODS)
def test_config_file_is_mounted_where_the_args_point(name: str) -> None:
    container = agent_container(name)
    args = container["args"]
    assert args[0] == "run"
    assert args[args.index("--config") + 1] == CONFIG_PATH
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(name)["volumes"]}
    if name == "static-pod.yaml":
        mount = mounts[CONFIG_PATH]
        assert volumes[mount["name"]]["hostPath"] == {"path": CONFIG_PATH, "type": "File"}
    else:
        mount = mounts[str(Path(CONFIG_PATH).parent)]
        assert volumes[mount["name"]]["configMap"]["name"] == "etcdagent-config"
        assert load_one("configmap.yaml")["metadata"]["name"] == "etcdagent-config"
    assert mount["readOnly"] is True


@pytest.mark.parametrize("name", ["daemonset.yaml", "static-pod.yaml"])
def test_daemon_probes_port_and_local_member(name: str, tmp_path: Path, clean_env: None) -> None:
    container = agent_container(name)
    args = container["args"]
    assert "--once" not in args
    # kubeadm names each member after its node: --local-member is the node name.
    assert args[args.index("--local-member") + 1] == "$(NODE_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}

    assert container["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    settings = settings_without_tls(tmp_path)
    assert settings.daemon.listen.rpartition(":")[2] == str(PORT)

    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    assert (live["path"], live["port"]) == ("/healthz", "metrics")
    assert (ready["path"], ready["port"]) == ("/readyz", "metrics")

    resources = container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "80Mi"}
    assert resources["limits"] == {"cpu": "500m", "memory": "192Mi"}


@pytest.mark.parametrize("name", AGENT_PODS)
def test_grace_period_outlasts_the_agents(name: str, tmp_path: Path, clean_env: None) -> None:
    settings = settings_without_tls(tmp_path)
    # A defrag started within the budget ends within the grace period, and that within the
    # pod's: SIGTERM never leaves etcd defragmenting behind an agent that exited.
    assert settings.defrag.budget == 60
    assert settings.daemon.grace_period == 90
    assert settings.daemon.grace_period >= settings.defrag.budget + 30
    assert pod_spec(name)["terminationGracePeriodSeconds"] > settings.daemon.grace_period


def test_cronjob_runs_one_pass_at_a_time(tmp_path: Path, clean_env: None) -> None:
    cronjob = load_one("cronjob.yaml")
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a failed maintenance is looked at, not retried blindly
    assert pod_spec("cronjob.yaml")["restartPolicy"] == "Never"
    # Long enough for three members at the longest defrag timeout, each then given its
    # recovery time, plus the samples, the lock and the compaction.
    defrag = settings_without_tls(tmp_path).defrag
    assert job["activeDeadlineSeconds"] >= 3 * (defrag.timeout_max + defrag.recovery_timeout)
    args = agent_container("cronjob.yaml")["args"]
    assert args[:2] == ["run", "--once"]
    assert "--local-member" not in args  # one pass maintains the whole cluster
    assert "ports" not in agent_container("cronjob.yaml")  # --once serves no HTTP


def test_cronjob_schedule_is_its_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CronJob's ETCDAGENT_WINDOWS=[] really replaces the ConfigMap's window."""
    for key in list(os.environ):
        if key.startswith("ETCDAGENT_"):
            monkeypatch.delenv(key)
    assert settings_without_tls(tmp_path).windows  # the ConfigMap has one
    env = {e["name"]: e.get("value") for e in agent_container("cronjob.yaml")["env"]}
    monkeypatch.setenv("ETCDAGENT_WINDOWS", env["ETCDAGENT_WINDOWS"])
    assert settings_without_tls(tmp_path).windows == []


# -- consistency with the agent ---------------------------------------------------------------


def etcdagent_command() -> list[str]:
    script = Path(sys.executable).parent / "etcdagent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "etcdagent"]


def test_every_flag_in_the_manifests_exists() -> None:
    result = subprocess.run(
        [*etcdagent_command(), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    used = set()
    for name in AGENT_PODS:
        container = agent_container(name)
        assert container["args"][0] == "run"
        used |= {arg.split("=")[0] for arg in container["args"] if arg.startswith("--")}
    assert used >= {"--config", "--local-member", "--once"}
    for flag in sorted(used):
        assert re.search(rf"(^|[\s,/]){re.escape(flag)}\b", result.stdout), flag


def test_every_environment_variable_names_a_setting() -> None:
    """ETCDAGENT_* names in the manifests, comments included (the optional Pushgateway), are
    real settings: ETCDAGENT_<GROUP>__<FIELD> or a top-level one."""
    names = set()
    for path in sorted(DEPLOY.glob("*.yaml")):
        names |= set(re.findall(r"\bETCDAGENT_[A-Z0-9_]+", path.read_text()))
    assert {"ETCDAGENT_WINDOWS", "ETCDAGENT_DAEMON__PUSHGATEWAY"} <= names
    for name in sorted(names):
        group, _, field = name.removeprefix("ETCDAGENT_").lower().partition("__")
        assert group in Settings.model_fields, name
        if field:
            model = Settings.model_fields[group].annotation
            assert isinstance(model, type)
            assert field in getattr(model, "model_fields", {}), name


def test_example_config_loads(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(example_config())
    # As written, it fails here only for the kubeadm certificate files, absent on this machine.
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=path)
    complaints = str(caught.value).split(": ", 1)[1].split("; ")
    assert complaints
    assert all(c.startswith("tls.") and c.endswith("no such file") for c in complaints), complaints
    # Without the tls section it loads, with the documented values.
    settings = settings_without_tls(tmp_path)
    assert settings.connection.endpoints == ["https://127.0.0.1:2379"]
    [window] = settings.windows
    assert (window.schedule, window.duration, window.timezone) == ("0 3 * * *", 3600.0, "UTC")
    assert settings.daemon.local_member is None  # the DaemonSet's flag sets it per node

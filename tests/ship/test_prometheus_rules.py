"""The shipped Prometheus rules: valid for Prometheus 2.42's promtool, unit-tested, identical as a
PrometheusRule and as a plain rules file, only about metrics the agent exports, and keeping apart
the clusters one agent maintains (every sample it exports carries ``cluster``).

promtool comes from Debian's `prometheus` package unpacked by ``bash scripts/setup --test-tools``
(``scripts/install-prometheus``) into ``.tools/prometheus``; ``ETCDAGENT_TEST_PROMETHEUS_DIR``
points elsewhere (a directory holding ``usr/bin/promtool`` or ``promtool``).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from etcdagent.agent.metrics import AgentMetrics, metric_docs

# jsonschema ships no type information: used through Any.
jsonschema: Any = importlib.import_module("jsonschema")

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OPERATOR_RULES = DEPLOY / "prometheus-rules.yaml"
PLAIN_RULES = DEPLOY / "prometheus-rules.rules.yml"
RULE_TESTS = DEPLOY / "prometheus-rules.test.yml"

EXPECTED_ALERTS = {
    "EtcdagentDown",
    "EtcdagentCycleStale",
    "EtcdagentLockHeldTooLong",
    "EtcdagentMaintenanceFailing",
    "EtcdagentGateBlockingEveryWindow",
    "EtcdagentDefragOverBudget",
    "EtcdagentLocalMemberUnmatched",
    "EtcdMemberNospace",
    "EtcdagentNospaceUnrecoverable",
    "EtcdMemberHashKVMismatch",
    "EtcdQuotaHigh",
    "EtcdagentTimeToQuotaShort",
    "EtcdagentDoctorFinding",
}
SEVERITIES = {"warning", "critical"}
METRIC_NAME = re.compile(r"\betcdagent_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
# `by (...)`, `without (...)` and `on (...)` with what follows an `on`.
GROUPING = re.compile(r"\b(by|without) \(([^)]*)\)")
MATCHING = re.compile(r"\bon \(([^)]*)\)\s*(\S*)")
SERIES_LABELS = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$")

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string"},
        "record": {"type": "string"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": DURATION.pattern},
        "keep_firing_for": {"type": "string", "pattern": DURATION.pattern},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
# The part of the Prometheus Operator's PrometheusRule CRD (monitoring.coreos.com/v1) used here,
# with no unknown field allowed.
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION.pattern},
                            "partial_response_strategy": {"type": "string"},
                            "rules": {"type": "array", "minItems": 1, "items": _RULE},
                        },
                    },
                }
            },
        },
    },
}


def prometheus_tool(name: str) -> Path:
    """``promtool`` or ``prometheus`` from .tools/prometheus (or ETCDAGENT_TEST_PROMETHEUS_DIR)."""
    configured = os.environ.get("ETCDAGENT_TEST_PROMETHEUS_DIR")
    root = Path(configured) if configured else REPO / ".tools/prometheus"
    for candidate in (root / "usr/bin" / name, root / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{name} not found under {root}: run `bash scripts/setup --test-tools` "
        "(or set ETCDAGENT_TEST_PROMETHEUS_DIR to a directory holding it)"
    )


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def plain_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = load_yaml(PLAIN_RULES)["groups"]
    return groups


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in plain_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "record" in rule]


def exported_metrics() -> set[str]:
    return {doc.name for doc in metric_docs(AgentMetrics(CollectorRegistry()).registry)}


def referenced_metrics(text: str) -> set[str]:
    """``etcdagent_*`` names in a PromQL expression (or annotation), histogram suffixes cut."""
    names = set()
    for name in METRIC_NAME.findall(text):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=90, check=False, cwd=REPO
    )


def test_promtool_check_rules_passes() -> None:
    result = run(prometheus_tool("promtool"), "check", "rules", PLAIN_RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = run(prometheus_tool("promtool"), "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_prometheus_rule_holds_exactly_the_plain_rules_file() -> None:
    operator = load_yaml(OPERATOR_RULES)
    jsonschema.validate(operator, PROMETHEUS_RULE_SCHEMA)
    assert operator["metadata"]["name"] == "etcdagent"
    # Beside the agent's Service and ServiceMonitor (deploy/servicemonitor.yaml).
    assert operator["metadata"]["namespace"] == "kube-system"
    # The plain file is what the operator would write for Prometheus from this resource.
    assert {"groups": operator["spec"]["groups"]} == load_yaml(PLAIN_RULES)


def test_the_expected_alerts_exist_with_severity_annotations_and_for() -> None:
    assert {rule["alert"] for rule in alerts()} == EXPECTED_ALERTS
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert DURATION.match(rule["for"]), name
    severities = {
        rule["labels"]["severity"]
        for rule in alerts()
        if rule["alert"] == "EtcdagentTimeToQuotaShort"
    }
    assert severities == {"warning", "critical"}


def test_group_and_rule_names_are_unique() -> None:
    names = [group["name"] for group in plain_groups()]
    assert len(names) == len(set(names))
    records = [rule["record"] for rule in recording_rules()]
    assert len(records) == len(set(records))
    assert all(record.startswith("etcdagent:") for record in records)


def test_rules_reference_only_metrics_the_agent_exports() -> None:
    exported = exported_metrics()
    for rule in all_rules():
        texts = [rule["expr"], *rule.get("annotations", {}).values()]
        for text in texts:
            unknown = referenced_metrics(text) - exported
            assert not unknown, f"{rule.get('alert') or rule.get('record')}: {sorted(unknown)}"


def test_every_rule_has_a_promtool_unit_test() -> None:
    tests = load_yaml(RULE_TESTS)["tests"]
    tested_alerts = {
        case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
    }
    assert tested_alerts == EXPECTED_ALERTS
    firing = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    assert firing == EXPECTED_ALERTS  # each one seen firing ...
    assert quiet == EXPECTED_ALERTS  # ... and not firing
    tested_records = {case["expr"] for test in tests for case in test.get("promql_expr_test", [])}
    assert tested_records == {rule["record"] for rule in recording_rules()}


def label_set(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def cluster_problems(expr: str) -> list[str]:
    """Where an expression would merge the clusters one agent exports from one job and instance:
    an aggregation `by` without ``cluster`` (or `without` it), a match of two agent metrics not
    `on` ``cluster``; `up` has no ``cluster``, so a match against it is `on (job, instance)`."""
    expr = " ".join(expr.split())
    problems = []
    for kind, labels in GROUPING.findall(expr):
        if (kind == "by") != ("cluster" in label_set(labels)):
            problems.append(f"{kind} ({labels})")
    for labels, operand in MATCHING.findall(expr):
        if operand.startswith(("up{", "(up{")):
            keeps_apart = label_set(labels) == {"job", "instance"}
        else:
            keeps_apart = "cluster" in label_set(labels)
        if not keeps_apart:
            problems.append(f"on ({labels}) {operand}")
    return problems


def test_every_rule_keeps_the_cluster_apart() -> None:
    for rule in all_rules():
        name = rule.get("alert") or rule.get("record")
        assert not cluster_problems(rule["expr"]), (name, cluster_problems(rule["expr"]))


def test_alerts_about_a_cluster_name_it() -> None:
    for rule in alerts():
        if "etcdagent_" not in rule["expr"]:
            continue  # EtcdagentDown: about the agent's scrape (`up`), which has no cluster
        annotations = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "$labels.cluster" in annotations, rule["alert"]


def test_the_cluster_check_catches_what_merges_clusters() -> None:
    good = (
        "max by (job, cluster) (etcdagent_gate_blocking) and on (job, instance, cluster)"
        ' etcdagent_maintenance_window_open == 1 and on (job, instance) up{job="etcdagent"} == 1'
    )
    assert cluster_problems(good) == []
    assert cluster_problems("max by (job, member) (etcdagent_member_up)") == ["by (job, member)"]
    assert cluster_problems("sum without (cluster) (etcdagent_member_up)") == ["without (cluster)"]
    assert cluster_problems("etcdagent_a and on (job, instance) etcdagent_b") == [
        "on (job, instance) etcdagent_b"
    ]
    assert cluster_problems('etcdagent_a and on (job, instance, cluster) up{job="x"}') == [
        'on (job, instance, cluster) up{job="x"}'
    ]


def test_the_rule_tests_feed_series_as_the_agent_exports_them() -> None:
    """Every agent series carries ``cluster``, and some test feeds two clusters from one instance
    (Kubernetes' main and events etcd maintained by one agent)."""
    two_clusters_on_one_instance = False
    for test in load_yaml(RULE_TESTS)["tests"]:
        clusters: dict[str, set[str]] = {}
        for series in test["input_series"]:
            match = SERIES_LABELS.match(series["series"])
            assert match, series["series"]
            name, matchers = match.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', matchers))
            if name.startswith("etcdagent_"):
                assert "cluster" in labels, series["series"]
                clusters.setdefault(labels.get("instance", ""), set()).add(labels["cluster"])
        two_clusters_on_one_instance |= any(len(names) > 1 for names in clusters.values())
    assert two_clusters_on_one_instance


def test_metric_reference_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(etcdagent_defrag_duration_seconds_bucket[1h])))"
        " / etcdagent:member_quota_use:ratio + etcdagent_member_up"
    )
    assert referenced_metrics(expr) == {
        "etcdagent_defrag_duration_seconds",
        "etcdagent_member_up",
    }
    assert "etcdagent_defrag_duration_seconds" in exported_metrics()

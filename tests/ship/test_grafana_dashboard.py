"""The shipped Grafana dashboard: well formed, every panel queries the `${datasource}` Prometheus,
every query is valid PromQL (promtool) about metrics the agent exports or the shipped recording
rules, keeps the clusters one agent maintains apart (`$cluster`), and the threshold lines are the
agent's defaults.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from etcdagent.agent.metrics import AgentMetrics, metric_docs
from etcdagent.settings import load_settings

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy/grafana-dashboard.json"
RULES = REPO / "deploy/prometheus-rules.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

REQUIRED_PANELS = {
    "DB size vs quota",
    "Fragmentation",
    "Quota use",
    "Time to quota",
    "WAL fsync p99",
    "Backend commit p99",
    "Leader changes (5m)",
    "Gate blocking",
    "Window open",
    "Next window",
    "Maintenance runs by trigger and result",
    "Defrag duration (p50, p99 over 1d)",
    "Bytes reclaimed by defragmentation (1d)",
    "Last successful cycle age",
    "Cycle errors and duration",
    "Scrape and request errors",
}
METRIC_NAME = re.compile(r"\betcdagent_[a-z0-9_]+")
RECORDING_RULE = re.compile(r"\betcdagent:[a-zA-Z0-9_:]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
VARIABLE = re.compile(r"\$\{?(\w+)")
# A selector of an agent metric or a recording rule, with its label matchers (if any).
SELECTOR = re.compile(r"\b(etcdagent[_:][a-zA-Z0-9_:]+)(\{[^}]*\})?")
CLUSTER_MATCHER = 'cluster=~"$cluster"'
BY_CLAUSE = re.compile(r"\bby \(([^)]*)\)")
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    with DASHBOARD.open() as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested (collapsed) panels included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def exprs(node: Any) -> Iterator[str]:
    """Every PromQL `expr` anywhere in the dashboard (targets, annotations)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from exprs(item)


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_NAME.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def recorded_names() -> set[str]:
    with RULES.open() as fh:
        groups = yaml.safe_load(fh)["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in query_panels(dashboard)}


def test_dashboard_metadata(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] == "etcdagent"
    assert dashboard["uid"] == "etcdagent"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None  # importable anywhere


def test_template_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name in ("cluster", "member"):
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["datasource"] == DATASOURCE, name
        assert re.fullmatch(
            rf"label_values\(etcdagent_member_up(\{{[^}}]*\}})?, {name}\)",
            variable["query"]["query"],
        ), name
        assert variable["definition"] == variable["query"]["query"], name
        assert variable["includeAll"] and variable["multi"], name
    # Members are those of the chosen clusters (names repeat across clusters).
    assert CLUSTER_MATCHER in variables["member"]["query"]["query"]
    order = [v["name"] for v in dashboard["templating"]["list"]]
    assert order.index("cluster") < order.index("member")
    # Every variable a query uses is defined (or one of Grafana's own).
    used = {name for expr in exprs(dashboard) for name in VARIABLE.findall(expr)}
    assert used - GRAFANA_VARIABLES <= set(variables)


def test_the_required_panels_exist(dashboard: dict[str, Any]) -> None:
    assert set(by_title(dashboard)) >= REQUIRED_PANELS


def test_every_panel_has_the_datasource_and_targets(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in query_panels(dashboard):
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], title
        assert panel.get("description"), title
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title


def cluster_problems(query: dict[str, Any]) -> list[str]:
    """Why a query (a target or an annotation) would mix up the clusters one agent exports from
    one job and instance, whose member names may repeat: an agent metric not filtered on
    ``$cluster``, a per-member aggregation without ``cluster``, or series split by cluster whose
    legend does not say which."""
    expr = query["expr"]
    selectors = SELECTOR.findall(expr)
    problems = [] if selectors else ["queries no agent metric"]
    problems += [
        f"{name} is not filtered on $cluster"
        for name, matchers in selectors
        if CLUSTER_MATCHER not in matchers
    ]
    split_by_cluster = False
    for by in BY_CLAUSE.findall(expr):
        labels = {label.strip() for label in by.split(",")}
        split_by_cluster |= "cluster" in labels
        if labels & {"member", "member_id"} and "cluster" not in labels:
            problems.append(f"by ({by}) merges the clusters' members")
    legend = query.get("legendFormat", query.get("titleFormat"))
    if split_by_cluster and legend is not None and "{{cluster}}" not in legend:
        problems.append(f"the legend {legend!r} does not name the cluster")
    return problems


def test_every_query_keeps_to_the_chosen_clusters(dashboard: dict[str, Any]) -> None:
    targets = [t for p in query_panels(dashboard) for t in p["targets"]]
    annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert annotations
    for query in [*targets, *annotations]:
        assert not cluster_problems(query), (query["expr"], cluster_problems(query))


def test_the_cluster_check_catches_what_merges_clusters() -> None:
    ok = 'max by (cluster, member) (etcdagent_member_up{job=~"$job", cluster=~"$cluster"})'
    assert cluster_problems({"expr": ok, "legendFormat": "{{cluster}} {{member}}"}) == []
    assert cluster_problems({"expr": ok, "legendFormat": "{{member}}"}) == [
        "the legend '{{member}}' does not name the cluster"
    ]
    unfiltered = 'max(etcdagent_member_up{job=~"$job"}) + etcdagent:members_up:sum'
    assert cluster_problems({"expr": unfiltered}) == [
        "etcdagent_member_up is not filtered on $cluster",
        "etcdagent:members_up:sum is not filtered on $cluster",
    ]
    merged = 'max by (member) (etcdagent_member_up{cluster=~"$cluster"})'
    assert cluster_problems({"expr": merged}) == ["by (member) merges the clusters' members"]
    assert cluster_problems({"expr": 'sum(up{job=~"$job"})'}) == ["queries no agent metric"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_queries_use_only_exported_metrics_and_shipped_recording_rules(
    dashboard: dict[str, Any],
) -> None:
    exported = {doc.name for doc in metric_docs(AgentMetrics(CollectorRegistry()).registry)}
    recorded = recorded_names()
    used_metrics: set[str] = set()
    for expr in exprs(dashboard):
        unknown = metric_names(expr) - exported
        assert not unknown, f"{expr}: not exported by the agent: {sorted(unknown)}"
        used_metrics |= metric_names(expr)
        missing = set(RECORDING_RULE.findall(expr)) - recorded
        assert not missing, f"{expr}: no such recording rule: {sorted(missing)}"
    # Everything the agent exports is on the dashboard somewhere.
    assert used_metrics == exported


def test_threshold_lines_are_the_agents_defaults(dashboard: dict[str, Any]) -> None:
    settings = load_settings({})
    assert settings.emergency.time_to_quota is not None
    expected: dict[str, float] = {
        "WAL fsync p99": settings.gates.wal_fsync_p99_max,
        "Backend commit p99": settings.gates.backend_commit_p99_max,
        "Leader changes (5m)": settings.gates.max_leader_changes,
        "Fragmentation": settings.defrag.min_free_ratio,
        "Quota use": settings.emergency.quota_use,
        "Time to quota": settings.emergency.time_to_quota,
        "Last successful cycle age": 5 * settings.daemon.interval,
    }
    panels_by_title = by_title(dashboard)
    for title, value in expected.items():
        defaults = panels_by_title[title]["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", title
        steps = [s["value"] for s in defaults["thresholds"]["steps"]]
        assert float(value) in steps, (title, steps)


def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses every query (Grafana's variables replaced by what they expand to)."""
    configured = os.environ.get("ETCDAGENT_TEST_PROMETHEUS_DIR")
    root = Path(configured) if configured else REPO / ".tools/prometheus"
    promtool = next(
        (p for p in (root / "usr/bin/promtool", root / "promtool") if p.is_file()), None
    )
    if promtool is None:
        pytest.fail(f"promtool not found under {root}: run `bash scripts/setup --test-tools`")
    substitutions = {
        "${datasource}": "x",
        "$__rate_interval": "1m",
        "$job": ".+",
        "$cluster": ".+",
        "$member": ".+",
    }
    rules = []
    for i, expr in enumerate(exprs(dashboard)):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [str(promtool), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

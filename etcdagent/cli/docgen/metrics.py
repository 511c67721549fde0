"""docs/metrics.md, from the agent's own registry: a metric added to the agent is documented."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from etcdagent.agent.metrics import PREFIX, AgentMetrics, metric_docs
from etcdagent.cli.docgen.markdown import REGENERATE, cell


def metrics_markdown() -> str:
    """docs/metrics.md: every metric the agent exposes on /metrics."""
    docs = metric_docs(AgentMetrics(CollectorRegistry()).registry)
    lines = [
        "# Metrics reference",
        "",
        f"<!-- Generated from etcdagent/agent/metrics.py by `{REGENERATE}`; do not edit by "
        "hand. -->",
        "",
        f"`etcdagent run` serves these on `/metrics` (`daemon.listen`, default `0.0.0.0:9479`); "
        "`run --once --pushgateway URL` pushes them to a Pushgateway. All are prefixed "
        f"`{PREFIX}`; per-member series carry `member` (the member's name) and `member_id` "
        "(hex, as etcdctl prints it).",
        "",
        "A value the agent does not know (a member that does not answer, a p99 without enough "
        "data, no maintenance window configured) is an absent series, never NaN and never a "
        "made-up 0: alert on `absent()` where absence matters. Counters are exposed with their "
        "`_total` suffix, histograms as `_bucket`, `_sum` and `_count`.",
        "",
        "| metric | type | labels | meaning |",
        "|---|---|---|---|",
    ]
    for doc in docs:
        labels = ", ".join(f"`{label}`" for label in doc.labels)
        lines.append(
            f"| `{doc.name}` | {doc.type} | {labels} | {cell(' '.join(doc.help.split()))} |"
        )
    lines.append("")
    return "\n".join(lines)

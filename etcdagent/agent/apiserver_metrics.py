"""Who compacts the cluster: kube-apiserver through compact_rev_key, or the agent.

Set from the daemon's judgement each cycle (``decide.apiserver``). Unknowns are absent series:
no key, no interval measured yet, or a key that could not be read.
"""

from __future__ import annotations

from etcdagent.agent.metric_factory import MetricFactory
from etcdagent.decide.apiserver import ApiserverCompaction


class ApiserverMetrics:
    """kube-apiserver's compaction as the agent sees it."""

    def __init__(self, make: MetricFactory) -> None:
        self.compacts = make.gauge(
            "apiserver_compacting",
            "1 while kube-apiserver compacts (its compact_rev_key moved within two of its "
            "intervals, last by an apiserver), else 0. With compaction.mode auto the agent does "
            "not compact on its cadence while compact_rev_key moves.",
        )
        self.compacted_revision = make.optional(
            "apiserver_compacted_revision",
            "The revision compact_rev_key says was compacted to last (by kube-apiserver or the "
            "agent); absent without the key.",
        )
        self.quiet = make.optional(
            "apiserver_compaction_key_quiet_seconds",
            "compact_rev_key has not moved for at least this long (by the agent's witnesses: "
            "its own observation and etcd's lease clock); absent when not known.",
        )
        self.interval = make.optional(
            "apiserver_compaction_interval_seconds",
            "kube-apiserver's compaction interval as measured from compact_rev_key's moves; "
            "absent until two moves were seen.",
        )
        self.compacts.set(0)

    def set(self, judged: ApiserverCompaction) -> None:
        self.compacts.set(1 if judged.apiserver_compacts else 0)
        key = judged.key
        value = key.value if key is not None and key.exists else None
        for gauge, number in (
            (self.compacted_revision, value),
            (self.quiet, judged.quiet_for if key is not None and key.exists else None),
            (self.interval, judged.measured_interval),
        ):
            if number is None:
                gauge.clear()
            else:
                gauge.set(float(number))

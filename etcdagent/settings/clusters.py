"""Several etcd clusters in one agent: ``clusters:``, each inheriting what it does not set.

The tuning guide this project grew from moves Kubernetes events to an etcd of their own: two
clusters on the same control-plane nodes, each needing its own maintenance. A ``clusters:`` list
names them; each entry sets what differs (at least its endpoints) and inherits every other value
from the top level, group by group and field by field. A config without ``clusters:`` is one
cluster named ``default``, configured by the top level, as before.

What a cluster may set: its connection, TLS and auth, retention and compaction mode, defrag,
lock, gates, emergencies, doctor thresholds, windows, and of the daemon group only what is per
cluster (``local_member``, ``compaction_interval``). The process itself (HTTP listener, cycle
interval, logs) is one for all clusters: set at the top level only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CLUSTER = "default"
GROUPS = (
    "connection",
    "tls",
    "auth",
    "compaction",
    "defrag",
    "lock",
    "gates",
    "emergency",
    "doctor",
)
PER_CLUSTER_DAEMON_FIELDS = ("local_member", "compaction_interval")


class ClusterEntry(BaseModel):
    """One entry of ``clusters:``: a name and the values that differ from the top level."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __doc_name__ = "clusters"

    name: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="The cluster's name: the `cluster` label of its metrics and `--cluster`.",
    )
    connection: dict[str, Any] = Field(
        default_factory=dict,
        description="This cluster's connection (connection.*): at least its endpoints.",
    )
    tls: dict[str, Any] = Field(
        default_factory=dict, description="This cluster's TLS material (tls.*), if it differs."
    )
    auth: dict[str, Any] = Field(
        default_factory=dict, description="This cluster's etcd user (auth.*), if it differs."
    )
    compaction: dict[str, Any] = Field(
        default_factory=dict, description="Its retention and compaction mode (compaction.*)."
    )
    defrag: dict[str, Any] = Field(
        default_factory=dict, description="Its defragmentation thresholds (defrag.*)."
    )
    lock: dict[str, Any] = Field(
        default_factory=dict,
        description="Its maintenance lock (lock.*; the lock lives in that cluster).",
    )
    gates: dict[str, Any] = Field(default_factory=dict, description="Its safety gates (gates.*).")
    emergency: dict[str, Any] = Field(
        default_factory=dict, description="Its emergencies (emergency.*)."
    )
    doctor: dict[str, Any] = Field(
        default_factory=dict, description="Its doctor thresholds (doctor.*)."
    )
    daemon: dict[str, Any] = Field(
        default_factory=dict,
        description="Of the daemon group only daemon.local_member and daemon.compaction_interval.",
    )
    windows: list[dict[str, Any]] | None = Field(
        default=None, description="Its maintenance windows; unset: the top level's."
    )

    @model_validator(mode="after")
    def _own_endpoints(self) -> ClusterEntry:
        if not self.connection.get("endpoints"):
            raise ValueError(
                f"cluster {self.name!r} needs its own connection.endpoints (inheriting the top "
                "level's would maintain the same cluster twice)"
            )
        return self

    @field_validator("daemon")
    @classmethod
    def _per_cluster_daemon(cls, value: dict[str, Any]) -> dict[str, Any]:
        shared = sorted(set(value) - set(PER_CLUSTER_DAEMON_FIELDS))
        if shared:
            allowed = " and ".join(f"daemon.{f}" for f in PER_CLUSTER_DAEMON_FIELDS)
            raise ValueError(
                f"{', '.join(f'daemon.{f}' for f in shared)}: one for the whole process, set it "
                f"at the top level (a cluster may set {allowed})"
            )
        return value


def unique_names(entries: list[ClusterEntry]) -> list[ClusterEntry]:
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ValueError(f"cluster {entry.name!r} is listed twice")
        seen.add(entry.name)
    return entries


def _set_fields(model: Any) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True) if isinstance(model, BaseModel) else {}


def merged_input(
    top: Mapping[str, Any], entry: ClusterEntry, flags: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The input of the cluster's own settings, from the top level's validated groups (``top``,
    by name): per group, the fields the top level set, then the entry's, then the command
    line's (``flags``: a flag wins over a cluster's file value too); the process-wide groups as
    they are; no ``clusters`` (each is one cluster)."""
    flags = flags or {}
    data: dict[str, Any] = {}
    for group in (*GROUPS, "daemon"):
        data[group] = {
            **_set_fields(top.get(group)),
            **getattr(entry, group),
            **_flag_fields(flags.get(group)),
        }
    data["log"] = _set_fields(top.get("log"))
    windows = top.get("windows") or []
    data["windows"] = (
        entry.windows if entry.windows is not None else [_set_fields(w) for w in windows]
    )
    data["clusters"] = []
    return data


def _flag_fields(flags: Any) -> dict[str, Any]:
    return dict(flags) if isinstance(flags, Mapping) else {}


def describe_problems(name: str, errors: list[Any]) -> str:
    """A cluster's validation errors, each naming the cluster and the field (never a value)."""
    return "; ".join(
        f"{name}.{'.'.join(str(p) for p in e['loc'])}: "
        + ("unknown setting" if e["type"] == "extra_forbidden" else e["msg"]).removeprefix(
            "Value error, "
        )
        for e in errors
    )

"""docs/configuration.md: the layering, every setting with its variable, flag, default and type,
the command-only options, and an example config."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence

from etcdagent.cli.docgen.annotations import base_type, hints, is_model
from etcdagent.cli.docgen.flags import FlagDoc, command_flags
from etcdagent.cli.docgen.markdown import REGENERATE, cell, code
from etcdagent.cli.docgen.settings_rows import SHORTHAND_ENV, SettingDoc, setting_docs
from etcdagent.settings import ENV_PREFIX, Settings

EXAMPLE_CONFIG = """\
# /etc/etcdagent/config.yaml: a kubeadm control plane, one agent replica per node
connection:
  endpoints: [https://127.0.0.1:2379]   # the local member; the others are discovered
  local_metrics_url: http://127.0.0.1:2381   # kubeadm's --listen-metrics-urls, local member
tls:
  ca_file: /etc/kubernetes/pki/etcd/ca.crt
  cert_file: /etc/kubernetes/pki/etcd/healthcheck-client.crt
  key_file: /etc/kubernetes/pki/etcd/healthcheck-client.key
compaction:
  retain: 5m                  # what kube-apiserver's watchers need
defrag:
  move_leader: true
  wait_between: 10s
daemon:
  local_member: https://127.0.0.1:2379   # the member answering there; or its name or URL
windows:
  - schedule: "0 2 * * *"     # every night at 02:00 ...
    duration: 1h
    timezone: Europe/Berlin   # ... Berlin time
  - schedule: "30 13 * * sat,sun"
    duration: 2h
"""

TWO_CLUSTERS_CONFIG = """\
# Two clusters in one agent: kubeadm's etcd and the events etcd beside it
# (kube-apiserver --etcd-servers-overrides=/events#https://127.0.0.1:2383)
tls:                          # shared: main inherits it, events sets its own
  ca_file: /etc/kubernetes/pki/etcd/ca.crt
  cert_file: /etc/kubernetes/pki/etcd/healthcheck-client.crt
  key_file: /etc/kubernetes/pki/etcd/healthcheck-client.key
compaction:
  retain: 5m
windows:
  - {schedule: "0 3 * * *", duration: 1h, timezone: UTC}
daemon:
  interval: 15s               # the process's: one for both clusters
clusters:
  - name: main
    connection:
      endpoints: [https://127.0.0.1:2379]
      local_metrics_url: http://127.0.0.1:2381
  - name: events
    connection:
      endpoints: [https://127.0.0.1:2383]
      local_metrics_url: http://127.0.0.1:2385
    tls:
      ca_file: /etc/kubernetes/pki/etcd-events/ca.crt
      cert_file: /etc/kubernetes/pki/etcd-events/healthcheck-client.crt
      key_file: /etc/kubernetes/pki/etcd-events/healthcheck-client.key
    compaction: {retain: 2m}  # events churn: less history kept
    windows:                  # its own windows instead of the top level's
      - {schedule: "30 4,16 * * *", duration: 1h, timezone: UTC}
"""

WINDOWS_TITLE = "Maintenance windows (a list; each item has the fields below)."
CLUSTERS_TITLE = (
    "Several etcd clusters in one agent process (a list; each item has the fields below). "
    "Each item inherits, field by field, every value it does not set from the top level "
    "(flags over the environment over the file, for every cluster); each cluster gets its own "
    "loop, lock, retention markers, windows, `cluster` label and `/readyz` line. With "
    "`clusters:`, a top-level `connection.endpoints` is refused (it would be ignored)."
)


def _intro_lines() -> list[str]:
    """Where settings come from, which wins, and how values are written."""
    return [
        "# Configuration reference",
        "",
        f"<!-- Generated from etcdagent/settings/ and etcdagent/cli/options.py by `{REGENERATE}`;",
        "     do not edit by hand. -->",
        "",
        "Every setting can come from four places. The strongest wins:",
        "",
        "1. a command-line flag (only some settings have one; see the table);",
        f"2. the environment: `{ENV_PREFIX}<GROUP>__<FIELD>`, e.g. `{ENV_PREFIX}TLS__CA_FILE` "
        f"(`{SHORTHAND_ENV['connection.endpoints']}` is a shorthand for "
        f"`{ENV_PREFIX}CONNECTION__ENDPOINTS`; the long form wins when both are set);",
        f"3. the config file: `--config FILE` or `{ENV_PREFIX}CONFIG=FILE`; TOML when the name "
        "ends in `.toml`, JSON when it ends in `.json`, YAML otherwise. Its top level is the "
        "groups below;",
        "4. the defaults below.",
        "",
        "Sources are merged field by field: a flag for one field leaves the others of its group "
        "to the environment, the file and the defaults. Everything is validated before etcdagent "
        "talks to etcd: a bad value exits 2 with a message naming the field (never the value of "
        "a secret).",
        "",
        "Value formats:",
        "",
        "- **duration**: `500ms`, `30s`, `10m`, `1h30m`, `1d`, or a number of seconds.",
        "- **size**: `512MiB`, `8GiB` (binary), `100MB` (decimal), or a number of bytes.",
        "- **boolean** in the environment: `true`/`false` (also `1`/`0`, `on`/`off`, `yes`/`no`).",
        "- **lists and mappings** in the environment are JSON (marked *(JSON)* below), except "
        "`connection.endpoints`: comma-separated in the environment and in `--endpoints`, a "
        "list or a comma-separated string in the file.",
        "- **null** (where a type says *or null*): `null` in YAML and JSON (TOML has none: "
        "leave the key out). The switches that null turns off (`compaction.retain`, "
        "`gates.max_request_rate`, `emergency.time_to_quota`) also take `null`, `none`, `off` "
        "or an empty value from the environment and the flags.",
        "",
    ]


def _group_of(doc: SettingDoc) -> str:
    return doc.name.split(".")[0].split("[")[0]


def _group_title(group: str) -> str:
    """The first paragraph of the group's docstring."""
    model = base_type(hints(Settings)[group])
    if group == "clusters":
        return CLUSTERS_TITLE
    if not is_model(model) or group == "windows":
        return WINDOWS_TITLE
    doc = inspect.getdoc(model) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _flags_cell(flags: Sequence[FlagDoc]) -> str:
    return "<br>".join(f"{code(flag.text)} ({', '.join(flag.commands)})" for flag in flags)


def _env_cell(doc: SettingDoc) -> str:
    return "<br>".join(
        code(e.removesuffix(" (JSON)")) + (" *(JSON)*" if e.endswith(" (JSON)") else "")
        for e in doc.env
    )


def _setting_row(doc: SettingDoc) -> str:
    parts = (
        code(doc.name),
        _env_cell(doc),
        _flags_cell(doc.flags),
        code(doc.default),
        doc.type,
        doc.description,
    )
    return "| " + " | ".join(cell(part) for part in parts) + " |"


def _settings_lines(docs: list[SettingDoc]) -> list[str]:
    """One table per group, in the model's order."""
    lines = ["## Settings", ""]
    for group, rows in itertools.groupby(docs, key=_group_of):
        lines += [
            f"### `{group}`",
            "",
            _group_title(group),
            "",
            "| setting | environment | flag | default | type | meaning |",
            "|---|---|---|---|---|---|",
            *(_setting_row(doc) for doc in rows),
            "",
        ]
    return lines


def _other_options_lines(other_flags: list[FlagDoc]) -> list[str]:
    lines = [
        "## Command-line options that are not settings",
        "",
        "| option | commands | meaning |",
        "|---|---|---|",
    ]
    for flag in other_flags:
        lines.append(
            f"| {cell(code(flag.text))} | {cell(', '.join(flag.commands))} | {cell(flag.help)} |"
        )
    return lines


def _example_lines() -> list[str]:
    return [
        "",
        "## Example",
        "",
        "```yaml",
        *EXAMPLE_CONFIG.rstrip("\n").split("\n"),
        "```",
        "",
        "The same from the environment (for a container spec), where it is not in a file:",
        "",
        "```sh",
        f"{SHORTHAND_ENV['connection.endpoints']}=https://127.0.0.1:2379",
        f"{ENV_PREFIX}TLS__CA_FILE=/etc/kubernetes/pki/etcd/ca.crt",
        f"{ENV_PREFIX}DEFRAG__MOVE_LEADER=true",
        f'{ENV_PREFIX}WINDOWS=\'[{{"schedule": "0 2 * * *", "duration": "1h", '
        '"timezone": "Europe/Berlin"}]\'',
        "```",
        "",
        "## Example: two clusters (the events etcd)",
        "",
        "```yaml",
        *TWO_CLUSTERS_CONFIG.rstrip("\n").split("\n"),
        "```",
        "",
        "`etcdagent status` then shows both clusters, one table each; `compact`, `defrag` and "
        "`recover` need `--cluster main` or `--cluster events`. The Kubernetes manifests for it "
        "are in `deploy/events-etcd/`.",
        "",
    ]


def configuration_markdown() -> str:
    """docs/configuration.md: every setting, its environment variable, flag, default, meaning."""
    _, other_flags = command_flags()
    lines = [
        *_intro_lines(),
        *_settings_lines(setting_docs()),
        *_other_options_lines(other_flags),
        *_example_lines(),
    ]
    return "\n".join(lines)

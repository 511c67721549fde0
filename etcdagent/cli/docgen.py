"""Reference documentation generated from the code: docs/configuration.md and docs/metrics.md.

The settings table comes from the settings model (every field, its description and default), the
flags from the click commands and the tables cli.py itself uses to map them, and the metrics from
an :class:`AgentMetrics` registry. So the reference cannot drift from the code: ``python -m
etcdagent.docgen`` rewrites both files, ``--check`` fails (exit 1) when a committed file is out of
date, and tests/unit/test_docs.py runs that check.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union

import click
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

from etcdagent.agent.metrics import PREFIX, AgentMetrics, metric_docs
from etcdagent.cli import commands as cli_module
from etcdagent.settings import ENV_PREFIX, Settings
from etcdagent.units import format_bytes, format_duration, parse_duration, parse_size

REGENERATE = "python -m etcdagent.cli.docgen"
CONFIGURATION_FILE = "configuration.md"
METRICS_FILE = "metrics.md"
REQUIRED = "required"

# Environment variables that settings.py accepts besides ETCDAGENT_<GROUP>__<FIELD>
# (its _ShorthandEnvSource), by dotted setting name.
SHORTHAND_ENV = {"connection.endpoints": ENV_PREFIX + "ENDPOINTS"}

EXAMPLE_CONFIG = """\
# /etc/etcdagent/config.yaml: a kubeadm control plane, one agent replica per node
connection:
  endpoints: [https://127.0.0.1:2379]   # the local member; the others are discovered
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
  local_member: https://127.0.0.1:2379   # or the member's name, e.g. from the node name
windows:
  - schedule: "0 2 * * *"     # every night at 02:00 ...
    duration: 1h
    timezone: Europe/Berlin   # ... Berlin time
  - schedule: "30 13 * * sat,sun"
    duration: 2h
"""


@dataclass(frozen=True)
class FlagDoc:
    """One command-line option: how it is written and which commands accept it."""

    text: str
    commands: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class SettingDoc:
    """One settings field as the reference shows it."""

    name: str
    env: tuple[str, ...]
    flags: tuple[FlagDoc, ...]
    default: str
    type: str
    description: str


# -- the settings model ---------------------------------------------------------------------------


def _hints(model: type[BaseModel]) -> dict[str, Any]:
    """Field annotations with their ``Annotated`` metadata, forward references resolved."""
    return typing.get_type_hints(model, include_extras=True)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    args = _union_args(annotation)
    rest = [a for a in args if a is not type(None)]
    optional = len(rest) != len(args)
    return (rest[0] if len(rest) == 1 else annotation), optional


def _metadata(annotation: Any, field: FieldInfo | None) -> list[Any]:
    """Validators and constraints of a field, from the field and from nested ``Annotated``."""
    found: list[Any] = list(field.metadata) if field is not None else []
    stack = [annotation]
    while stack:
        current = stack.pop()
        if typing.get_origin(current) is typing.Annotated:
            base, *extra = typing.get_args(current)
            for item in extra:
                if isinstance(item, FieldInfo):
                    found.extend(item.metadata)
                else:
                    found.append(item)
            stack.append(base)
        else:
            stack.extend(a for a in _union_args(current) if a is not current)
    return found


def _validators(meta: list[Any]) -> set[Callable[..., Any]]:
    return {m.func for m in meta if isinstance(m, BeforeValidator)}


def _bound(meta: list[Any], attr: str) -> Any:
    return next((getattr(m, attr) for m in meta if hasattr(m, attr)), None)


def _base_type(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    base, _ = _strip_none(annotation)
    while typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    return base


def _type_text(annotation: Any, meta: list[Any]) -> str:
    validators = _validators(meta)
    outer = annotation
    while typing.get_origin(outer) is typing.Annotated:
        outer = typing.get_args(outer)[0]
    _, optional = _strip_none(outer)
    base = _base_type(annotation)
    ge, gt, le = _bound(meta, "ge"), _bound(meta, "gt"), _bound(meta, "le")
    text: str
    if parse_duration in validators:
        text = "duration" + (" (> 0)" if gt is not None else "")
    elif parse_size in validators:
        text = "size"
    elif base is bool:
        text = "boolean"
    elif base is float and ge == 0 and le == 1:
        text = "ratio (0..1)"
    elif base is int:
        text = "integer" + (" (>= 0)" if ge == 0 else "")
    elif base is float:
        text = "number" + (" (>= 0)" if ge == 0 else "")
    elif base is SecretStr:
        text = "string (secret)"
    elif base is Path:
        text = "file path"
    elif base is str:
        text = "string"
    elif inspect.isclass(base) and issubclass(base, Enum):
        text = "one of " + ", ".join(str(member.value) for member in base)
    elif typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        item_base = _base_type(item)
        is_model = inspect.isclass(item_base) and issubclass(item_base, BaseModel)
        text = "list of windows" if is_model else "list of strings"
    elif typing.get_origin(base) is dict:
        text = "mapping of strings"
    else:  # pragma: no cover - a new kind of field: show it rather than guess
        text = getattr(base, "__name__", str(base))
    return text + (", or null" if optional else "")


def _default_text(value: Any, meta: list[Any]) -> str:
    validators = _validators(meta)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if parse_duration in validators and isinstance(value, int | float):
        return format_duration(value) if value else "0"
    if parse_size in validators and isinstance(value, int | float):
        return format_bytes(value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        factory = typing.cast(Callable[[], Any], field.default_factory)
        return factory()
    return field.default


def _is_complex(annotation: Any) -> bool:
    """Parsed from JSON when it comes from the environment (pydantic-settings' rule)."""
    base = _base_type(annotation)
    origin = typing.get_origin(base)
    if origin in (list, dict):
        # NoDecode fields (connection.endpoints) are comma-separated, not JSON.
        meta = _metadata(annotation, None)
        return not any(m is NoDecode or isinstance(m, NoDecode) for m in meta)
    return inspect.isclass(base) and issubclass(base, BaseModel)


def _env_names(dotted: str, path: Sequence[str], annotation: Any) -> tuple[str, ...]:
    name = ENV_PREFIX + "__".join(part.upper() for part in path)
    json_hint = " (JSON)" if _is_complex(annotation) else ""
    names = [name + json_hint]
    if dotted in SHORTHAND_ENV:
        names.append(SHORTHAND_ENV[dotted])
    return tuple(names)


# -- the command line -----------------------------------------------------------------------------


def _flag_tables() -> dict[str, tuple[str, str]]:
    """Click parameter name -> (group, field), from the tables cli.py maps flags with.

    ``_RUN_FLAGS`` is used when cli.py exposes it; until then the `run` command's own options are
    matched by name (see :func:`_setting_of`).
    """
    tables: dict[str, tuple[str, str]] = {}
    for name in ("_FLAG_TO_SETTING", "_MAINTENANCE_FLAGS", "_RUN_FLAGS"):
        table = getattr(cli_module, name, None)
        if isinstance(table, dict):
            tables.update(table)
    return tables


def _fields_by_name() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for group, field in Settings.model_fields.items():
        model = _base_type(field.annotation)
        if inspect.isclass(model) and issubclass(model, BaseModel):
            for name in model.model_fields:
                found.setdefault(name, []).append((group, name))
    return found


def _setting_of(
    param: click.Parameter,
    tables: dict[str, tuple[str, str]],
    by_name: dict[str, list[tuple[str, str]]],
) -> str | None:
    """The dotted setting a click parameter sets, or None for command-only options.

    The tables of cli.py first; otherwise a parameter named exactly like one settings field (and
    only one) sets it, which is how `run` maps --listen, --interval, --local-member and
    --pushgateway onto ``daemon.*``.
    """
    if param.name is None:
        return None
    if param.name in tables:
        group, field = tables[param.name]
        return f"{group}.{field}"
    matches = by_name.get(param.name, [])
    if len(matches) == 1:
        group, field = matches[0]
        return f"{group}.{field}"
    return None


def _flag_text(param: click.Parameter) -> str:
    names = ", ".join(param.opts)
    if param.secondary_opts:
        names += "/" + ", ".join(param.secondary_opts)
    if isinstance(param, click.Option):
        if param.is_flag:
            pass
        elif isinstance(param.type, click.Choice):
            names += " [" + "|".join(str(c) for c in param.type.choices) + "]"
        elif param.metavar:
            names += " " + param.metavar
        if param.multiple:
            names += " (repeatable)"
    return names


def _help(param: click.Parameter) -> str:
    return " ".join((getattr(param, "help", None) or "").split())


def command_flags() -> tuple[dict[str, list[FlagDoc]], list[FlagDoc]]:
    """Flags that set a setting (by dotted name), and the command-only options, from the CLI."""
    tables = _flag_tables()
    by_name = _fields_by_name()
    commands = cli_module.cli.commands
    seen: dict[tuple[str | None, str], tuple[str | None, click.Parameter, list[str]]] = {}
    for command_name in sorted(commands):
        for param in commands[command_name].params:
            if not isinstance(param, click.Option):
                continue
            setting = _setting_of(param, tables, by_name)
            key = (setting, _flag_text(param))
            if key not in seen:
                seen[key] = (setting, param, [])
            seen[key][2].append(command_name)
    everything = tuple(sorted(commands))
    by_setting: dict[str, list[FlagDoc]] = {}
    other: list[FlagDoc] = []
    for (setting, text), (_, param, used_by) in seen.items():
        shown = ("all commands",) if tuple(used_by) == everything else tuple(used_by)
        doc = FlagDoc(text=text, commands=shown, help=_help(param))
        if setting is None:
            other.append(doc)
        else:
            by_setting.setdefault(setting, []).append(doc)
    return by_setting, sorted(other, key=lambda d: d.text)


# -- walking the settings -------------------------------------------------------------------------


def _walk() -> Iterator[tuple[str, list[str], FieldInfo, Any]]:
    """(dotted name, path, field, annotation) of every leaf setting, groups in model order."""
    hints = _hints(Settings)
    for group, field in Settings.model_fields.items():
        annotation = hints[group]
        model = _base_type(annotation)
        if inspect.isclass(model) and issubclass(model, BaseModel):
            model.model_rebuild()
            group_hints = _hints(model)
            for name, sub in model.model_fields.items():
                yield f"{group}.{name}", [group, name], sub, group_hints[name]
        else:
            yield group, [group], field, annotation


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    base = _base_type(annotation)
    if typing.get_origin(base) is list:
        item = _base_type(typing.get_args(base)[0])
        if inspect.isclass(item) and issubclass(item, BaseModel):
            return item
    return None


def setting_docs() -> list[SettingDoc]:
    """Every setting (list items' fields as ``windows[].schedule``), in the model's order."""
    flags, _ = command_flags()
    docs: list[SettingDoc] = []
    for dotted, path, field, annotation in _walk():
        meta = _metadata(annotation, field)
        docs.append(
            SettingDoc(
                name=dotted,
                env=_env_names(dotted, path, annotation),
                flags=tuple(flags.get(dotted, [])),
                default=_default_text(_default_value(field), meta),
                type=_type_text(annotation, meta),
                description=" ".join((field.description or "").split()),
            )
        )
        item = _list_item_model(annotation)
        if item is not None:
            item_hints = _hints(item)
            for name, sub in item.model_fields.items():
                sub_meta = _metadata(item_hints[name], sub)
                default = REQUIRED if sub.is_required() else _default_text(sub.default, sub_meta)
                docs.append(
                    SettingDoc(
                        name=f"{dotted}[].{name}",
                        env=(),
                        flags=(),
                        default=default,
                        type=_type_text(item_hints[name], sub_meta),
                        description=" ".join((sub.description or "").split()),
                    )
                )
    return docs


# -- markdown -------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text and text != REQUIRED else text


def _flags_cell(flags: Sequence[FlagDoc]) -> str:
    parts = []
    for flag in flags:
        parts.append(f"{_code(flag.text)} ({', '.join(flag.commands)})")
    return "<br>".join(parts)


def _group_title(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    return " ".join(doc.split("\n\n")[0].split())


def configuration_markdown() -> str:
    """docs/configuration.md: every setting, its environment variable, flag, default, meaning."""
    docs = setting_docs()
    _, other_flags = command_flags()
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from etcdagent/settings/ and etcdagent/cli/commands.py by `{REGENERATE}`;",
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
        "## Settings",
        "",
    ]
    current_group: str | None = None
    hints = _hints(Settings)
    for doc in docs:
        group = doc.name.split(".")[0].split("[")[0]
        if group != current_group:
            current_group = group
            model = _base_type(hints[group])
            if inspect.isclass(model) and issubclass(model, BaseModel) and group != "windows":
                title = _group_title(model)
            else:
                title = "Maintenance windows (a list; each item has the fields below)."
            lines += [
                f"### `{group}`",
                "",
                title,
                "",
                "| setting | environment | flag | default | type | meaning |",
                "|---|---|---|---|---|---|",
            ]
        env = "<br>".join(
            _code(e.removesuffix(" (JSON)")) + (" *(JSON)*" if e.endswith(" (JSON)") else "")
            for e in doc.env
        )
        lines.append(
            "| "
            + " | ".join(
                _cell(part)
                for part in (
                    _code(doc.name),
                    env,
                    _flags_cell(doc.flags),
                    _code(doc.default),
                    doc.type,
                    doc.description,
                )
            )
            + " |"
        )
        next_index = docs.index(doc) + 1
        if next_index == len(docs) or docs[next_index].name.split(".")[0].split("[")[0] != group:
            lines.append("")
    lines += [
        "## Command-line options that are not settings",
        "",
        "| option | commands | meaning |",
        "|---|---|---|",
    ]
    for flag in other_flags:
        lines.append(
            f"| {_cell(_code(flag.text))} | {_cell(', '.join(flag.commands))} "
            f"| {_cell(flag.help)} |"
        )
    lines += [
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
    ]
    return "\n".join(lines)


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
            f"| `{doc.name}` | {doc.type} | {labels} | {_cell(' '.join(doc.help.split()))} |"
        )
    lines.append("")
    return "\n".join(lines)


# -- writing and checking -------------------------------------------------------------------------


def generated() -> dict[str, str]:
    """File name (inside docs/) -> its generated text."""
    return {CONFIGURATION_FILE: configuration_markdown(), METRICS_FILE: metrics_markdown()}


def default_docs_dir() -> Path:
    """docs/ of the source checkout this module lives in, else docs/ of the working directory."""
    root = Path(__file__).resolve().parent.parent
    return root / "docs" if (root / "pyproject.toml").is_file() else Path("docs")


def stale_files(docs_dir: Path) -> list[Path]:
    """The files of ``docs_dir`` that differ from what would be generated (or are missing)."""
    stale = []
    for name, text in generated().items():
        path = docs_dir / name
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m etcdagent.cli.docgen",
        description="Write docs/configuration.md and docs/metrics.md from the code.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file differs from what would be generated",
    )
    parser.add_argument(
        "--docs-dir", type=Path, default=None, help="where the files go (default: docs/)"
    )
    args = parser.parse_args(argv)
    docs_dir: Path = args.docs_dir or default_docs_dir()
    if args.check:
        stale = stale_files(docs_dir)
        for path in stale:
            print(f"{path} is out of date; regenerate it with: {REGENERATE}", file=sys.stderr)
        return 1 if stale else 0
    docs_dir.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        path = docs_dir / name
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which command-line flag sets which setting, read from the click commands themselves.

A flag is tied to its setting by the tables of :mod:`etcdagent.cli.options`; a `run` option with
no table entry (none today) would still be matched when it is named exactly like one settings
field. Everything else is a command-only option (``--output``, ``--dry-run``...) and gets a table
of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from etcdagent.cli.commands import cli
from etcdagent.cli.docgen.annotations import base_type, is_model
from etcdagent.cli.options import FLAG_TO_SETTING, MAINTENANCE_FLAGS, RUN_FLAGS
from etcdagent.settings import Settings


@dataclass(frozen=True)
class FlagDoc:
    """One command-line option: how it is written and which commands accept it."""

    text: str
    commands: tuple[str, ...]
    help: str


def _flag_tables() -> dict[str, tuple[str, str]]:
    """Click parameter name -> (group, field), from the tables the CLI maps flags with."""
    return {**FLAG_TO_SETTING, **MAINTENANCE_FLAGS, **RUN_FLAGS}


def _fields_by_name() -> dict[str, list[tuple[str, str]]]:
    """Field name -> every (group, field) of that name, to match options named like a field."""
    found: dict[str, list[tuple[str, str]]] = {}
    for group, field in Settings.model_fields.items():
        model = base_type(field.annotation)
        if is_model(model):
            for name in model.model_fields:
                found.setdefault(name, []).append((group, name))
    return found


def _setting_of(
    param: click.Parameter,
    tables: dict[str, tuple[str, str]],
    by_name: dict[str, list[tuple[str, str]]],
) -> str | None:
    """The dotted setting a click parameter sets, or None for command-only options.

    The CLI's tables first; otherwise a parameter named exactly like one settings field (and only
    one) sets it.
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
    commands = cli.commands
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

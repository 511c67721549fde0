"""One row per setting for the reference: its name, environment variables, flags, default, type.

Groups are walked in the model's order, and a list of models (``windows``) gets a row for each of
its items' fields (``windows[].schedule``), since those are what an operator writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from etcdagent.cli.docgen.annotations import (
    base_type,
    default_text,
    default_value,
    hints,
    is_complex,
    is_model,
    list_item_model,
    metadata,
    type_text,
)
from etcdagent.cli.docgen.flags import FlagDoc, command_flags
from etcdagent.cli.docgen.markdown import REQUIRED
from etcdagent.settings import ENV_PREFIX, Settings
from etcdagent.settings.sources import SHORTHAND_ENV as _SHORTHAND_BY_VARIABLE

# Environment variables that the settings accept besides ETCDAGENT_<GROUP>__<FIELD>, by dotted
# setting name.
SHORTHAND_ENV = {
    f"{group}.{field}": variable for variable, (group, field) in _SHORTHAND_BY_VARIABLE.items()
}


@dataclass(frozen=True)
class SettingDoc:
    """One settings field as the reference shows it."""

    name: str
    env: tuple[str, ...]
    flags: tuple[FlagDoc, ...]
    default: str
    type: str
    description: str


def _env_names(dotted: str, path: Sequence[str], annotation: Any) -> tuple[str, ...]:
    name = ENV_PREFIX + "__".join(part.upper() for part in path)
    json_hint = " (JSON)" if is_complex(annotation) else ""
    names = [name + json_hint]
    if dotted in SHORTHAND_ENV:
        names.append(SHORTHAND_ENV[dotted])
    return tuple(names)


def _walk() -> Iterator[tuple[str, list[str], FieldInfo, Any]]:
    """(dotted name, path, field, annotation) of every leaf setting, groups in model order."""
    settings_hints = hints(Settings)
    for group, field in Settings.model_fields.items():
        annotation = settings_hints[group]
        model = base_type(annotation)
        if is_model(model):
            model.model_rebuild()
            group_hints = hints(model)
            for name, sub in model.model_fields.items():
                yield f"{group}.{name}", [group, name], sub, group_hints[name]
        else:
            yield group, [group], field, annotation


def _description(field: FieldInfo) -> str:
    return " ".join((field.description or "").split())


def _item_rows(dotted: str, annotation: Any) -> list[SettingDoc]:
    """The fields of a list's items, as ``windows[].schedule``: no env or flag of their own."""
    item = list_item_model(annotation)
    if item is None:
        return []
    rows: list[SettingDoc] = []
    item_hints = hints(item)
    for name, sub in item.model_fields.items():
        sub_meta = metadata(item_hints[name], sub)
        default = REQUIRED if sub.is_required() else default_text(default_value(sub), sub_meta)
        rows.append(
            SettingDoc(
                name=f"{dotted}[].{name}",
                env=(),
                flags=(),
                default=default,
                type=type_text(item_hints[name], sub_meta),
                description=_description(sub),
            )
        )
    return rows


def setting_docs() -> list[SettingDoc]:
    """Every setting (list items' fields as ``windows[].schedule``), in the model's order."""
    flags, _ = command_flags()
    docs: list[SettingDoc] = []
    for dotted, path, field, annotation in _walk():
        meta = metadata(annotation, field)
        docs.append(
            SettingDoc(
                name=dotted,
                env=_env_names(dotted, path, annotation),
                flags=tuple(flags.get(dotted, [])),
                default=default_text(default_value(field), meta),
                type=type_text(annotation, meta),
                description=_description(field),
            )
        )
        docs.extend(_item_rows(dotted, annotation))
    return docs

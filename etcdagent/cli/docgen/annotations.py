"""What a settings field's annotation says, in the reference's words.

Pydantic keeps the parsing of a field in ``Annotated`` metadata
(``BeforeValidator(parse_duration)``, ``Field(ge=0)``), often nested inside an optional. These
helpers dig it out, so the reference can say "duration (> 0), or null" and show ``5m`` rather than
the JSON schema's ``number`` and ``300.0``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

from etcdagent.units import format_bytes, format_duration, parse_duration, parse_size


def hints(model: type[BaseModel]) -> dict[str, Any]:
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


def metadata(annotation: Any, field: FieldInfo | None) -> list[Any]:
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


def base_type(annotation: Any) -> Any:
    """The type under ``Annotated`` and ``| None``: ``float`` for ``Seconds | None``."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    base, _ = _strip_none(annotation)
    while typing.get_origin(base) is typing.Annotated:
        base = typing.get_args(base)[0]
    return base


def is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a list-of-models setting (``windows``), whose fields get rows of their own."""
    base = base_type(annotation)
    if typing.get_origin(base) is list:
        item = base_type(typing.get_args(base)[0])
        if is_model(item):
            return typing.cast(type[BaseModel], item)
    return None


def _plain_type_text(base: Any, meta: list[Any]) -> str:
    """The name of a type whose parsing is pydantic's own (no unit validator)."""
    ge, le = _bound(meta, "ge"), _bound(meta, "le")
    if base is bool:
        return "boolean"
    if base is float and ge == 0 and le == 1:
        return "ratio (0..1)"
    if base is int:
        return "integer" + (" (>= 0)" if ge == 0 else "")
    if base is float:
        return "number" + (" (>= 0)" if ge == 0 else "")
    named = {SecretStr: "string (secret)", Path: "file path", str: "string"}
    if base in named:
        return named[base]
    if inspect.isclass(base) and issubclass(base, Enum):
        return "one of " + ", ".join(str(member.value) for member in base)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if is_model(base_type(item)):
            return f"list of {getattr(base_type(item), '__doc_name__', 'windows')}"
        return "list of mappings" if typing.get_origin(item) is dict else "list of strings"
    if typing.get_origin(base) is dict:
        (_, value) = typing.get_args(base)
        return "mapping of strings" if value is str else "mapping (the group's settings)"
    # A new kind of field: show it rather than guess.
    return getattr(base, "__name__", str(base))  # pragma: no cover


def type_text(annotation: Any, meta: list[Any]) -> str:
    """``duration (> 0)``, ``size``, ``ratio (0..1)``..., with ``, or null`` when optional."""
    validators = _validators(meta)
    outer = annotation
    while typing.get_origin(outer) is typing.Annotated:
        outer = typing.get_args(outer)[0]
    _, optional = _strip_none(outer)
    if parse_duration in validators:
        text = "duration" + (" (> 0)" if _bound(meta, "gt") is not None else "")
    elif parse_size in validators:
        text = "size"
    else:
        text = _plain_type_text(base_type(annotation), meta)
    return text + (", or null" if optional else "")


def default_text(value: Any, meta: list[Any]) -> str:
    """A default as an operator writes it: ``5m``, ``100MiB``, ``true``."""
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


def default_value(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        factory = typing.cast(Callable[[], Any], field.default_factory)
        return factory()
    return field.default


def is_complex(annotation: Any) -> bool:
    """Parsed from JSON when it comes from the environment (pydantic-settings' rule)."""
    base = base_type(annotation)
    origin = typing.get_origin(base)
    if origin in (list, dict):
        # NoDecode fields (connection.endpoints) are comma-separated, not JSON.
        meta = metadata(annotation, None)
        return not any(m is NoDecode or isinstance(m, NoDecode) for m in meta)
    return is_model(base)

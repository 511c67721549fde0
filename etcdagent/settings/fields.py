"""Value types the settings groups share: durations, sizes, ratios, and the words that mean null.

Each is an ``Annotated`` alias so that a group's field says what it holds (``Seconds``, ``Bytes``)
and the parsing ("10m", "512MiB") lives in one place, :mod:`etcdagent.units`. The docs generator
reads these validators back to name each field's type, so a new alias must keep them visible.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from etcdagent.units import parse_duration, parse_size

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
SecondsOrZero = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Bytes = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


def _none_word(value: object) -> object:
    """Lets the environment and flags switch an optional setting off, as null does in a file."""
    if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "off"):
        return None
    return value


Nullable = BeforeValidator(_none_word)


def split_csv(value: object) -> object:
    """A comma-separated string (environment, flags) as the list a file would give."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SettingsGroup(BaseModel):
    """One group of settings (``tls``, ``defrag``...): a typo'd key is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

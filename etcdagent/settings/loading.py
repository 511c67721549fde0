"""Building the settings for one run: reading the config file, layering, and the one-line errors.

Everything is validated before the agent talks to etcd: a bad value stops it with exit code 2
(:class:`~etcdagent.errors.ConfigError`) and a message naming the field, never a traceback, and
never echoing a secret (not even the source line of a file that fails to parse).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from etcdagent.errors import ConfigError
from etcdagent.settings.model import Settings
from etcdagent.settings.sources import config_file_data, flag_data


def _parse_problem(exc: Exception) -> str:
    """Where and what, without the quoted source line (it may hold a password)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or exc.context or "syntax error"
        return f"{what} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split()) or type(exc).__name__


def read_config_file(path: Path) -> dict[str, Any]:
    """Load a YAML, TOML or JSON config file into a dict, with one-line errors."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        first = _parse_problem(exc)
        kind = suffix.lstrip(".").upper() if suffix in (".toml", ".json") else "YAML"
        raise ConfigError(f"config file {path}: not valid {kind}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of groups")
    return data


def _secret_location(loc: tuple[str, ...]) -> bool:
    """Inputs under ``auth`` are never echoed: a password written at the wrong level would be."""
    return bool(loc) and loc[0] == "auth"


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the field; never the value of a secret field."""
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        name = ".".join(loc) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        elif (
            "input" in err
            and not _secret_location(loc)
            and err["type"] not in ("value_error", "missing")
        ):
            shown = repr(err["input"])
            if len(shown) <= 60:
                msg = f"{msg} (got {shown})"
        lines.append(f"{name}: {msg}")
    return "; ".join(lines)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    *,
    command_line: bool = False,
) -> Settings:
    """Build the settings from flags (``overrides``, nested dicts), environment and file.

    ``command_line``: the overrides are flags, which also win over what a cluster of
    ``clusters:`` sets itself (flag > environment > file, for every cluster). Otherwise they
    are top-level values as a file's would be (a cluster's own values win over them)."""
    file_data = read_config_file(config_file) if config_file is not None else {}
    token = config_file_data.set(file_data)
    flags = flag_data.set(dict(overrides or {}) if command_line else None)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        where = f" (config file {config_file})" if config_file is not None else ""
        raise ConfigError(
            f"invalid configuration{where}: {describe_validation_error(exc)}"
        ) from None
    finally:
        flag_data.reset(flags)
        config_file_data.reset(token)

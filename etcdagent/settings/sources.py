"""Where settings come from besides the flags, in the order pydantic-settings layers them.

The environment is pydantic-settings' own source (``ETCDAGENT_`` prefix, ``__`` between group and
field); this module adds the shorthand variables and carries the config file's data into the model
for the duration of one :func:`~etcdagent.settings.loading.load_settings` call. A context variable
carries it because ``BaseSettings`` builds its sources from the class, not from the call, and
passing the file's data as init arguments would let it override the environment.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any

from pydantic_settings import PydanticBaseSettingsSource

ENV_PREFIX = "ETCDAGENT_"

# Short environment variables for settings everybody sets: variable -> (group, field).
SHORTHAND_ENV = {ENV_PREFIX + "ENDPOINTS": ("connection", "endpoints")}

config_file_data: ContextVar[dict[str, Any] | None] = ContextVar("_config_file_data", default=None)
# The flags of this load (nested, by group): applied to every cluster of ``clusters:`` last, so a
# flag beats a cluster's own file value as it beats the top level's (flag > env > file).
flag_data: ContextVar[dict[str, Any] | None] = ContextVar("_flag_data", default=None)


class ShorthandEnvSource(PydanticBaseSettingsSource):
    """Maps the SHORTHAND_ENV variables (ETCDAGENT_ENDPOINTS) onto their settings."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, (group, field) in SHORTHAND_ENV.items():
            value = os.environ.get(variable)
            if value is not None:
                found.setdefault(group, {})[field] = value
        return found

"""Fixtures of the shipping checks (manifests, rules, dashboard, image, wheel)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ETCDAGENT_* variable of the developer's shell leaks into load_settings."""
    for key in list(os.environ):
        if key.startswith("ETCDAGENT_"):
            monkeypatch.delenv(key)
    yield
